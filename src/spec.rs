//! Model specs: `local:<path>`, `local-dir:<path>`, `hf-hub:org/name[@revision]`, or a bare
//! timm name such as `resnet50` or `resnet50.a1_in1k`.
//!
//! Follows timm 1.0.31 `parse_model_name`: the text before the first `:` is a scheme only if it
//! looks like one (`[a-zA-Z][a-zA-Z0-9+.\-_]+`, two or more characters, so `C:\models` is not);
//! everything after it is an opaque path, never URL-decoded.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// A folder on disk (`local:` or timm's `local-dir:`).
    Local(PathBuf),
    /// A Hugging Face Hub repository, resolved through the local cache.
    HfHub {
        repo: String,
        revision: Option<String>,
    },
    /// A bare timm architecture name, optionally with a pretrained tag (`arch.tag`).
    Name { arch: String, tag: Option<String> },
}

pub const VALID_PREFIXES: &str = "`local:`, `local-dir:`, `hf-hub:` (alias `hf_hub:`)";

fn looks_like_scheme(prefix: &str) -> bool {
    let mut chars = prefix.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    let rest = chars.as_str();
    !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-' | '_'))
}

/// Parses a model spec.
pub fn parse(spec: &str) -> Result<Spec> {
    if spec.trim().is_empty() {
        return Err(Error::invalid_argument(format!(
            "empty model spec: give a timm name (e.g. `resnet50`) or a prefix {VALID_PREFIXES}"
        )));
    }
    if let Some((prefix, rest)) = spec.split_once(':') {
        if looks_like_scheme(prefix) {
            return match prefix {
                "local" | "local-dir" => {
                    if rest.is_empty() {
                        Err(Error::invalid_argument(format!(
                            "model spec `{spec}` has an empty path after `{prefix}:`; expected e.g. `local:/models/resnet50`"
                        )))
                    } else {
                        Ok(Spec::Local(PathBuf::from(rest)))
                    }
                }
                "hf-hub" | "hf_hub" => parse_hub(spec, rest),
                _ => Err(Error::invalid_argument(format!(
                    "model spec `{spec}` has an unknown prefix `{prefix}:`; valid prefixes are {VALID_PREFIXES}"
                ))),
            };
        }
    }
    if looks_like_path(spec) {
        return Err(Error::invalid_argument(format!(
            "model spec `{spec}` looks like a path but has no prefix: write `local:{spec}` for a folder on disk"
        )));
    }
    if spec.contains(['/', '\\', ':']) {
        return Err(Error::invalid_argument(format!(
            "model spec `{spec}` looks like a path or a repository but has no prefix: \
             write `local:{spec}` for a folder on disk or `hf-hub:{spec}` for a Hugging Face repository"
        )));
    }
    parse_name(spec)
}

/// A spec no Hugging Face repository can be: absolute, home- or dot-relative, a Windows path, or
/// more than `org/name`. Only `local:` is suggested for it.
fn looks_like_path(spec: &str) -> bool {
    spec.starts_with(['/', '~', '.', '\\'])
        || spec.contains('\\')
        || spec.as_bytes().get(1) == Some(&b':')
        || spec.matches('/').count() > 1
}

fn parse_hub(spec: &str, rest: &str) -> Result<Spec> {
    if rest.is_empty() {
        return Err(Error::invalid_argument(format!(
            "model spec `{spec}` has an empty repository after the prefix; expected `hf-hub:org/name[@revision]`; valid prefixes are {VALID_PREFIXES}"
        )));
    }
    let (repo, revision) = match rest.split_once('@') {
        Some((repo, rev)) => {
            if rev.is_empty() {
                return Err(Error::invalid_argument(format!(
                    "model spec `{spec}` has an empty revision after `@`"
                )));
            }
            (repo, Some(rev.to_string()))
        }
        None => (rest, None),
    };
    validate_repo_id(spec, repo)?;
    Ok(Spec::HfHub {
        repo: repo.to_string(),
        revision,
    })
}

/// Hugging Face repo ids: `name` or `namespace/name`, letters, digits, `-`, `_`, `.`, at most 96
/// characters, no `--` or `..`, not starting or ending with `-` or `.`.
fn validate_repo_id(spec: &str, repo: &str) -> Result<()> {
    let bad = |why: &str| {
        Error::invalid_argument(format!(
            "model spec `{spec}`: `{repo}` is not a valid Hugging Face repository id ({why}); expected `hf-hub:org/name[@revision]`"
        ))
    };
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 2 {
        return Err(bad("more than one `/`"));
    }
    for part in &parts {
        if part.is_empty() {
            return Err(bad("empty part"));
        }
        if part.len() > 96 {
            return Err(bad("longer than 96 characters"));
        }
        if !part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(bad("only letters, digits, `-`, `_` and `.` are allowed"));
        }
        if part.contains("--") || part.contains("..") {
            return Err(bad("`--` and `..` are not allowed"));
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
            return Err(bad("cannot start or end with `-` or `.`"));
        }
    }
    Ok(())
}

fn parse_name(spec: &str) -> Result<Spec> {
    let (arch, tag) = match spec.split_once('.') {
        Some((arch, tag)) => (arch, Some(tag)),
        None => (spec, None),
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if !ok(arch) || tag.is_some_and(|t| !ok(t)) {
        return Err(Error::invalid_argument(format!(
            "model spec `{spec}` is not a timm model name (letters, digits, `_`, `-`, optionally `.tag`); \
             for a folder or repository use a prefix: {VALID_PREFIXES}"
        )));
    }
    Ok(Spec::Name {
        arch: arch.to_string(),
        tag: tag.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TimmStatus;

    #[test]
    fn bare_paths_suggest_only_local() {
        for spec in [
            "/abs/path",
            "./rel",
            "../up/m",
            "~/models/m",
            "a/b/c",
            "C:\\x",
        ] {
            let e = parse(spec).unwrap_err();
            assert!(e.message().contains(&format!("local:{spec}")), "{e}");
            assert!(!e.message().contains("hf-hub:"), "{e}");
        }
        let e = parse("timm/resnet50").unwrap_err();
        assert!(e.message().contains("hf-hub:timm/resnet50"), "{e}");
    }

    #[test]
    fn local_and_local_dir_are_the_same_source() {
        assert_eq!(parse("local:/m/r50").unwrap(), Spec::Local("/m/r50".into()));
        assert_eq!(
            parse("local-dir:/m/r50").unwrap(),
            Spec::Local("/m/r50".into())
        );
    }

    #[test]
    fn path_after_prefix_is_opaque() {
        let p = "local:/m/a b#frag?q=1@x:y";
        assert_eq!(parse(p).unwrap(), Spec::Local("/m/a b#frag?q=1@x:y".into()));
        assert_eq!(
            parse("local:relative/dir").unwrap(),
            Spec::Local("relative/dir".into())
        );
    }

    #[test]
    fn hub_specs_split_revision_on_at() {
        assert_eq!(
            parse("hf-hub:timm/resnet50.a1_in1k").unwrap(),
            Spec::HfHub {
                repo: "timm/resnet50.a1_in1k".into(),
                revision: None
            }
        );
        assert_eq!(
            parse("hf_hub:timm/vit@v1.0").unwrap(),
            Spec::HfHub {
                repo: "timm/vit".into(),
                revision: Some("v1.0".into())
            }
        );
        assert!(parse("hf-hub:timm/vit@").is_err());
        assert!(parse("hf-hub:").is_err());
        assert!(parse("hf-hub:a/b/c").is_err());
        assert!(parse("hf-hub:a/../b").is_err());
    }

    #[test]
    fn single_letter_prefix_is_not_a_scheme() {
        let e = parse("C:\\models\\r50").unwrap_err();
        assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT);
        assert!(e.message().contains("local:"), "{e}");
    }

    #[test]
    fn unknown_prefix_names_valid_ones() {
        let e = parse("s3://bucket/model").unwrap_err();
        assert!(e.message().contains("unknown prefix `s3:`"), "{e}");
        assert!(e.message().contains("hf-hub:"), "{e}");
        assert!(parse("http://x")
            .unwrap_err()
            .message()
            .contains("unknown prefix"));
    }

    #[test]
    fn empty_path_and_empty_spec_are_errors() {
        assert!(parse("local:")
            .unwrap_err()
            .message()
            .contains("empty path"));
        assert!(parse("")
            .unwrap_err()
            .message()
            .contains("empty model spec"));
        assert!(parse("   ").is_err());
    }

    #[test]
    fn bare_names_with_separators_suggest_prefixes() {
        for s in ["timm/resnet50", "org/name.tag"] {
            let e = parse(s).unwrap_err();
            assert!(
                e.message().contains("local:") && e.message().contains("hf-hub:"),
                "{e}"
            );
        }
    }

    #[test]
    fn bare_names_split_tag() {
        assert_eq!(
            parse("resnet50").unwrap(),
            Spec::Name {
                arch: "resnet50".into(),
                tag: None
            }
        );
        assert_eq!(
            parse("resnet50.a1_in1k").unwrap(),
            Spec::Name {
                arch: "resnet50".into(),
                tag: Some("a1_in1k".into())
            }
        );
        assert!(parse("res net").is_err());
    }
}
