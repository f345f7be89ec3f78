//! A Triton Inference Server model repository entry: `<repository>/<name>/config.pbtxt`
//! (onnxruntime backend, inputs and outputs with dims, max_batch_size, dynamic batching) and
//! `<repository>/<name>/1/model.onnx`.

use std::path::{Path, PathBuf};

use super::onnx_writer::{Dim, Io};
use super::Exported;
use crate::error::{Error, Result};
use crate::model::Model;

/// Triton's model names are folder names: no separators, not `.`/`..`, printable.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "Triton model name `{name}`: expected letters, digits, `-`, `_` or `.` (it becomes a folder name)"
        )))
    }
}

/// Writes the repository entry; returns the model folder.
pub fn export(model: &Model, repository: &Path, name: &str, max_batch: u32) -> Result<PathBuf> {
    check_name(name)?;
    let dir = repository.join(name);
    let version = dir.join("1");
    std::fs::create_dir_all(&version).map_err(|e| Error::from_io(&e, "cannot create", &version))?;
    let exported = super::export_onnx(model, &version.join("model.onnx"))?;
    let text = config_pbtxt(name, &exported, max_batch)?;
    let path = dir.join("config.pbtxt");
    std::fs::write(&path, text).map_err(|e| Error::from_io(&e, "cannot write", &path))?;
    Ok(dir)
}

/// Dims as Triton lists them: without the batch dimension when Triton batches, `-1` for free
/// dimensions.
fn dims(io: &Io, batched: bool) -> Result<String> {
    let all: Vec<i64> = io
        .dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => *v,
            Dim::Symbolic(_) => -1,
        })
        .collect();
    let shown = if batched {
        match io.dims.first() {
            Some(Dim::Symbolic(_)) => &all[1..],
            _ => {
                return Err(Error::unsupported(format!(
                    "`{}` has a fixed batch dimension {:?}; export with max_batch 0 (no batching by Triton)",
                    io.name,
                    io.dims.first()
                )))
            }
        }
    } else {
        &all[..]
    };
    Ok(shown
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", "))
}

fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The text-format `ModelConfig`.
pub fn config_pbtxt(name: &str, e: &Exported, max_batch: u32) -> Result<String> {
    let batched = max_batch > 0;
    let tensor = |io: &Io| -> Result<String> {
        Ok(format!(
            "  {{\n    name: {}\n    data_type: TYPE_FP32\n    dims: [ {} ]\n  }}",
            quoted(&io.name),
            dims(io, batched)?
        ))
    };
    let outputs = e
        .outputs
        .iter()
        .map(tensor)
        .collect::<Result<Vec<_>>>()?
        .join(",\n");
    let mut s = format!(
        "name: {}\nbackend: \"onnxruntime\"\nmax_batch_size: {max_batch}\ninput [\n{}\n]\noutput [\n{outputs}\n]\n",
        quoted(name),
        tensor(&e.input)?
    );
    if batched {
        s.push_str("dynamic_batching { }\n");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exported(batch: Dim) -> Exported {
        Exported {
            input: Io {
                name: "input".into(),
                dims: vec![
                    batch.clone(),
                    Dim::Fixed(3),
                    Dim::Symbolic("height".into()),
                    Dim::Fixed(32),
                ],
            },
            outputs: vec![Io {
                name: "output".into(),
                dims: vec![batch, Dim::Fixed(10)],
            }],
            external_data: false,
        }
    }

    #[test]
    fn batched_config_drops_the_batch_dim() {
        let s = config_pbtxt("m", &exported(Dim::Symbolic("batch".into())), 8).unwrap();
        assert!(s.contains("max_batch_size: 8"), "{s}");
        assert!(s.contains("dims: [ 3, -1, 32 ]"), "{s}");
        assert!(s.contains("dims: [ 10 ]"), "{s}");
        assert!(s.contains("dynamic_batching"), "{s}");
        let s = config_pbtxt("m", &exported(Dim::Symbolic("batch".into())), 0).unwrap();
        assert!(
            s.contains("dims: [ -1, 10 ]") && !s.contains("dynamic_batching"),
            "{s}"
        );
    }

    #[test]
    fn fixed_batch_cannot_be_batched_by_triton() {
        let e = config_pbtxt("m", &exported(Dim::Fixed(1)), 4).unwrap_err();
        assert!(e.message().contains("max_batch 0"), "{e}");
    }

    #[test]
    fn names_must_be_folder_names() {
        for bad in ["", ".", "..", "a/b", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        check_name("resnet50.a1_in1k").unwrap();
    }
}
