//! The options table (src/options/table.rs) drives every place that lists options: the doc
//! comment of `timm_options_set` (and so include/timm.h), the README's table, the C++ enum
//! classes and setters (bindings/cpp/timm/options.hpp) and the Go constants and `With*`
//! helpers (bindings/go/options.go). Each is regenerated here and must equal what is
//! committed; TIMM_BLESS=1 (scripts/gen-header) rewrites them.

use std::path::{Path, PathBuf};

use timm::options::table::{Kind, OptionSpec, OPTIONS};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Compares (or with TIMM_BLESS rewrites) one generated file or region.
fn expect_file(rel: &str, fresh: &str) {
    let path = root().join(rel);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed == fresh {
        return;
    }
    if std::env::var_os("TIMM_BLESS").is_some() {
        std::fs::write(&path, fresh).unwrap();
        return;
    }
    panic!("{rel} is out of date with src/options/table.rs: run scripts/gen-header and commit the result");
}

/// `text` with the part between the line containing `begin` and the line containing `end`
/// (both kept) replaced by `body`.
fn replace_region(text: &str, begin: &str, end: &str, body: &str) -> String {
    let b = text
        .find(begin)
        .unwrap_or_else(|| panic!("marker `{begin}` missing"));
    let b = b + text[b..].find('\n').unwrap() + 1;
    let e = b + text[b..]
        .find(end)
        .unwrap_or_else(|| panic!("marker `{end}` missing"));
    let e = text[..e].rfind('\n').map_or(e, |i| i + 1);
    format!("{}{}{}", &text[..b], body, &text[e..])
}

/// Words of a key or value in CamelCase, with the acronyms Go and C++ spell in capitals.
fn camel(s: &str) -> String {
    s.split('_')
        .map(|w| match w {
            "ort" => "ORT".to_string(),
            "id" => "ID".to_string(),
            "trt" => "TRT".to_string(),
            "cuda" => "CUDA".to_string(),
            "cpu" => "CPU".to_string(),
            "cudnn" => "CuDNN".to_string(),
            "fp16" => "FP16".to_string(),
            "onnx" => "ONNX".to_string(),
            "tensorrt" => "TensorRT".to_string(),
            w => {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            }
        })
        .collect()
}

/// The C++/Go type name of an enum option, or of one element of a list option ("providers"
/// → "Provider").
fn type_name(o: &OptionSpec) -> String {
    match o.kind {
        Kind::List(_) => camel(o.key.strip_suffix('s').unwrap_or(o.key)),
        _ => camel(o.key),
    }
}

fn c_doc() -> String {
    let mut s = String::from(
        "/// Sets option `key` to `value` (NUL-terminated UTF-8 strings). The keys, generated from\n\
         /// src/options/table.rs:\n///\n",
    );
    for o in OPTIONS {
        s += &format!(
            "/// - `{}`: {}; default {}. {}.\n",
            o.key,
            o.kind.expected(),
            o.default,
            o.doc
        );
    }
    s += "///\n\
          /// Values are checked here, so a mistake surfaces at the call that made it: an unknown key\n\
          /// or a bad value is `TIMM_ERR_INVALID_ARGUMENT`, and the message lists the known keys.\n\
          /// GPU options are described in docs/GPU.md. Not thread-safe on the same options object.\n";
    s
}

fn readme_table() -> String {
    let mut s = String::from("| key | value | default | what it does |\n|---|---|---|---|\n");
    for o in OPTIONS {
        s += &format!(
            "| `{}` | {} | {} | {} |\n",
            o.key,
            o.kind.expected(),
            o.default,
            o.doc
        );
    }
    s
}

fn cpp() -> String {
    let mut enums = String::new();
    let mut setters = String::new();
    for o in OPTIONS {
        let key = o.key;
        let (param, value) = match o.kind {
            Kind::Int { max: u64::MAX, .. } => {
                ("uint64_t v".to_string(), "std::to_string(v)".to_string())
            }
            Kind::Int { .. } => ("int v".to_string(), "std::to_string(v)".to_string()),
            Kind::Bool => ("bool v".to_string(), "v ? \"true\" : \"false\"".to_string()),
            Kind::Path | Kind::Text | Kind::Url => {
                ("const std::string& v".to_string(), "v".to_string())
            }
            Kind::Enum(words) | Kind::List(words) => {
                let t = type_name(o);
                enums += &format!("// Values of option `{key}`.\nenum class {t} {{");
                for (i, w) in words.iter().enumerate() {
                    enums += &format!("{} {}", if i == 0 { "" } else { "," }, camel(w));
                }
                enums += &format!(
                    " }};\n\ninline const char* option_value({t} v) noexcept {{\n  switch (v) {{\n"
                );
                for w in words {
                    enums += &format!("    case {t}::{}: return \"{w}\";\n", camel(w));
                }
                enums += "  }\n  return \"\";\n}\n\n";
                if matches!(o.kind, Kind::List(_)) {
                    (
                        format!("const std::vector<{t}>& v"),
                        "detail::join_option_values(v)".to_string(),
                    )
                } else {
                    (format!("{t} v"), "option_value(v)".to_string())
                }
            }
        };
        setters += &format!(
            "  // {}; default {}.\n  Self& {key}({param}) & {{ return self().set(\"{key}\", {value}); }}\n  \
             Self&& {key}({param}) && {{ return std::move(self().set(\"{key}\", {value})); }}\n\n",
            o.doc,
            o.default
        );
    }
    format!(
        "// Generated from src/options/table.rs by scripts/gen-header; do not edit.\n\
         // The typed setters of timm::Options, one per option, and the enum classes of the options\n\
         // that take one of a few words. Included by timm.hpp.\n\
         #ifndef TIMM_OPTIONS_HPP\n#define TIMM_OPTIONS_HPP\n\n\
         #include <string>\n#include <utility>\n#include <vector>\n\n\
         namespace timm {{\n\n{enums}\
         namespace detail {{\n\n\
         template <class E>\ninline std::string join_option_values(const std::vector<E>& values) {{\n  \
         std::string s;\n  for (E v : values) s += (s.empty() ? \"\" : \",\") + std::string(option_value(v));\n  \
         return s;\n}}\n\n\
         // Base of timm::Options: each setter calls Self::set(key, value) and returns *this.\n\
         template <class Self>\nclass OptionSetters {{\n public:\n{setters}\
          private:\n  Self& self() {{ return static_cast<Self&>(*this); }}\n}};\n\n\
         }}  // namespace detail\n}}  // namespace timm\n\n#endif  // TIMM_OPTIONS_HPP\n"
    )
}

fn go() -> String {
    let mut imports = Vec::new();
    if OPTIONS
        .iter()
        .any(|o| matches!(o.kind, Kind::Int { .. } | Kind::Bool))
    {
        imports.push("\t\"strconv\"\n");
    }
    if OPTIONS.iter().any(|o| matches!(o.kind, Kind::List(_))) {
        imports.push("\t\"strings\"\n");
    }
    let mut s = format!(
        "// Code generated from src/options/table.rs by scripts/gen-header; DO NOT EDIT.\n\n\
         package timm\n\nimport (\n{})\n",
        imports.concat()
    );
    for o in OPTIONS {
        let name = format!("With{}", camel(o.key));
        let doc = format!(
            "// {name} sets option {}: {}; default {}.\n",
            o.key, o.doc, o.default
        );
        let key = o.key;
        match o.kind {
            Kind::Int { max: u64::MAX, .. } => {
                s += &format!("\n{doc}func {name}(v uint64) Option {{\n\treturn WithOption(\"{key}\", strconv.FormatUint(v, 10))\n}}\n")
            }
            Kind::Int { .. } => {
                s += &format!("\n{doc}func {name}(v int) Option {{\n\treturn WithOption(\"{key}\", strconv.Itoa(v))\n}}\n")
            }
            Kind::Bool => {
                s += &format!("\n{doc}func {name}(v bool) Option {{\n\treturn WithOption(\"{key}\", strconv.FormatBool(v))\n}}\n")
            }
            Kind::Path | Kind::Text | Kind::Url => {
                s += &format!("\n{doc}func {name}(v string) Option {{\n\treturn WithOption(\"{key}\", v)\n}}\n")
            }
            Kind::Enum(words) | Kind::List(words) => {
                let t = type_name(o);
                s += &format!("\n// {t} is a value of option {key}.\ntype {t} string\n\n// The values of option {key}.\nconst (\n");
                // Aligned as gofmt aligns a const block.
                let width = words.iter().map(|w| t.len() + camel(w).len()).max().unwrap_or(0);
                for w in words {
                    let name = format!("{t}{}", camel(w));
                    s += &format!("\t{name:<width$} {t} = \"{w}\"\n");
                }
                s += ")\n";
                if matches!(o.kind, Kind::List(_)) {
                    s += &format!(
                        "\n{doc}func {name}(v ...{t}) Option {{\n\tw := make([]string, len(v))\n\tfor i, p := range v {{\n\t\tw[i] = string(p)\n\t}}\n\treturn WithOption(\"{key}\", strings.Join(w, \",\"))\n}}\n"
                    );
                } else {
                    s += &format!("\n{doc}func {name}(v {t}) Option {{\n\treturn WithOption(\"{key}\", string(v))\n}}\n");
                }
            }
        }
    }
    s
}

#[test]
fn options_set_doc_comment_lists_every_option() {
    let rel = "src/ffi/options.rs";
    let text = std::fs::read_to_string(root().join(rel)).unwrap();
    let begin = text
        .find("/// Sets option")
        .expect("doc of timm_options_set");
    let end = begin + text[begin..].find("#[no_mangle]").unwrap();
    expect_file(
        rel,
        &format!("{}{}{}", &text[..begin], c_doc(), &text[end..]),
    );
}

#[test]
fn readme_options_table_lists_every_option() {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let fresh = replace_region(
        &text,
        "<!-- options table begin",
        "<!-- options table end",
        &readme_table(),
    );
    expect_file("README.md", &fresh);
}

#[test]
fn cpp_setters_and_enum_classes_match_the_table() {
    expect_file("bindings/cpp/timm/options.hpp", &cpp());
}

#[test]
fn go_helpers_and_constants_match_the_table() {
    expect_file("bindings/go/options.go", &go());
}
