//! A model folder on disk: `config.json`, the weights file timm would pick, and an optional
//! `model.onnx`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// timm's `_PREFERRED_FILES` order; only safetensors are loaded, the others are named in errors.
const PREFERRED: [&str; 4] = [
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
];
const PICKLE_EXTS: [&str; 3] = [".pth", ".pth.tar", ".bin"];

/// What a model folder holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFolder {
    pub dir: PathBuf,
    /// The safetensors file to load, if the folder has one.
    pub weights: Option<PathBuf>,
    /// A pickled weights file timm would have used, kept only to explain why it is refused.
    pub pickle: Option<PathBuf>,
    pub onnx: Option<PathBuf>,
}

impl ModelFolder {
    /// Inspects a folder. It must exist and hold `config.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let meta = std::fs::metadata(dir).map_err(|e| Error::from_io(&e, "model folder", dir))?;
        if !meta.is_dir() {
            return Err(Error::invalid_argument(format!(
                "{} is not a folder; a `local:` spec names the folder that holds config.json",
                dir.display()
            )));
        }
        let config = dir.join("config.json");
        if !present(&config)? {
            return Err(Error::not_found(format!(
                "{} has no config.json; timm's save_for_hf / push_to_hub write it next to the weights, and preprocessing is never guessed",
                dir.display()
            )));
        }
        let onnx = Some(dir.join("model.onnx"))
            .map(|p| present(&p).map(|yes| yes.then_some(p)))
            .transpose()?
            .flatten();
        let (weights, pickle) = pick_weights(dir)?;
        Ok(ModelFolder {
            dir: dir.to_path_buf(),
            weights,
            pickle,
            onnx,
        })
    }

    /// The safetensors file, or an error that explains what the folder has instead.
    pub fn require_weights(&self) -> Result<&Path> {
        if let Some(w) = &self.weights {
            return Ok(w);
        }
        Err(match &self.pickle {
            Some(p) => Error::unsupported(format!(
                "{} holds only pickled weights ({}); this library never unpickles files. Convert them once with Python: \
                 `import torch, safetensors.torch; sd = torch.load('{}', map_location='cpu', weights_only=True); \
                 safetensors.torch.save_file(sd, '{}')` (or re-save with timm's save_for_hf(..., safe_serialization=True))",
                self.dir.display(),
                p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                p.display(),
                // Into the model folder, where this library looks, not the shell's directory.
                self.dir.join("model.safetensors").display()
            )),
            None => Error::not_found(format!("{} has no weights file (model.safetensors)", self.dir.display())),
        })
    }
}

/// Whether the folder has the file `path`: `false` only when nothing is there. Anything else
/// that stops us (no permission, a link loop, a FIFO or device where the file should be) is an
/// error saying so, never "missing".
fn present(path: &Path) -> Result<bool> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::from_io(&e, "cannot read", path)),
        Ok(_) => {
            crate::files::check_regular(path, "model file", Error::invalid_model).map(|_| true)
        }
    }
}

fn pick_weights(dir: &Path) -> Result<(Option<PathBuf>, Option<PathBuf>)> {
    for name in PREFERRED {
        let p = dir.join(name);
        if present(&p)? {
            return Ok(if name.ends_with(".safetensors") {
                (Some(p), None)
            } else {
                (None, Some(p))
            });
        }
    }
    let mut entries: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::from_io(&e, "cannot list model folder", dir))?
        .filter_map(|e| e.ok())
        // Regular files after following links: a link to a FIFO or device is not a candidate.
        .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    entries.sort();
    let open_clip = entries.iter().find(|n| n.starts_with("open_clip_"));
    if let Some(n) = open_clip {
        let p = dir.join(n);
        return Ok(if n.ends_with(".safetensors") {
            (Some(p), None)
        } else {
            (None, Some(p))
        });
    }
    if let Some(n) = entries.iter().find(|n| n.ends_with(".safetensors")) {
        return Ok((Some(dir.join(n)), None));
    }
    let pickle = entries
        .iter()
        .find(|n| PICKLE_EXTS.iter().any(|ext| n.ends_with(ext)))
        .map(|n| dir.join(n));
    Ok((None, pickle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TimmStatus;

    fn tmp(name: &str, files: &[&str]) -> PathBuf {
        let d = std::env::temp_dir().join(format!("timm-local-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        for f in files {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        d
    }

    #[test]
    fn safetensors_preferred_over_pickles() {
        let d = tmp(
            "pref",
            &[
                "config.json",
                "pytorch_model.bin",
                "model.safetensors",
                "model.onnx",
            ],
        );
        let f = ModelFolder::open(&d).unwrap();
        assert_eq!(f.weights, Some(d.join("model.safetensors")));
        assert_eq!(f.onnx, Some(d.join("model.onnx")));
    }

    #[test]
    fn pickle_only_folder_explains_conversion() {
        let d = tmp("pickle", &["config.json", "pytorch_model.bin"]);
        let f = ModelFolder::open(&d).unwrap();
        let e = f.require_weights().unwrap_err();
        assert_eq!(e.status(), TimmStatus::TIMM_ERR_UNSUPPORTED);
        assert!(
            e.message().contains("pytorch_model.bin") && e.message().contains("never unpickles"),
            "{e}"
        );
    }

    #[test]
    fn any_safetensors_is_taken_when_no_preferred_name() {
        let d = tmp(
            "anyst",
            &["config.json", "b.safetensors", "a.safetensors", "x.pth"],
        );
        assert_eq!(
            ModelFolder::open(&d).unwrap().weights,
            Some(d.join("a.safetensors"))
        );
    }

    #[test]
    fn missing_folder_and_missing_config() {
        let e = ModelFolder::open(Path::new("/nonexistent/timm/folder")).unwrap_err();
        assert_eq!(e.status(), TimmStatus::TIMM_ERR_NOT_FOUND);
        let d = tmp("noconf", &["model.safetensors"]);
        let e = ModelFolder::open(&d).unwrap_err();
        assert_eq!(e.status(), TimmStatus::TIMM_ERR_NOT_FOUND);
        assert!(e.message().contains("config.json"));
    }
}
