//! Export of a folder's own `model.onnx`: its graph is copied as is, and every initializer
//! whose data lives elsewhere (stripped and bound by name from `model.safetensors`, or ONNX
//! external data beside the file) gets its bytes written into the exported file.

use std::path::Path;

use super::onnx_writer::{self, Data, Dim, Io, Model, Tensor};
use super::proto::{self, Msg, Value};
use crate::error::{Error, Result};
use crate::onnx;
use crate::weights::{self, DType, Weights, WeightsMode};

/// The folder's graph ready for the writer, with its image input and outputs.
pub struct FolderGraph {
    pub bytes: Vec<u8>,
    pub inputs: Vec<Io>,
    pub outputs: Vec<Io>,
}

fn bad(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::invalid_model(format!(
        "{} is not a valid ONNX model ({why})",
        path.display()
    ))
}

/// Reads `path` (the folder's model.onnx).
pub fn read(path: &Path) -> Result<FolderGraph> {
    let bytes = std::fs::read(path).map_err(|e| Error::from_io(&e, "cannot read", path))?;
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    let mut inits = std::collections::HashSet::new();
    for f in proto::fields(&bytes).map_err(|w| bad(path, w))? {
        if let (7, Value::Bytes(g)) = (f.num, &f.value) {
            for gf in proto::fields(g).map_err(|w| bad(path, w))? {
                match (gf.num, gf.value) {
                    (5, Value::Bytes(t)) => {
                        inits.insert(tensor_name(t).map_err(|w| bad(path, w))?);
                    }
                    (11, Value::Bytes(v)) => inputs.push(io(v).map_err(|w| bad(path, w))?),
                    (12, Value::Bytes(v)) => outputs.push(io(v).map_err(|w| bad(path, w))?),
                    _ => {}
                }
            }
        }
    }
    // Older IR versions list initializers among the inputs too.
    inputs.retain(|i| !inits.contains(&i.name));
    Ok(FolderGraph {
        bytes,
        inputs,
        outputs,
    })
}

fn tensor_name(t: &[u8]) -> std::result::Result<String, String> {
    for f in proto::fields(t)? {
        if let (8, Value::Bytes(n)) = (f.num, f.value) {
            return Ok(String::from_utf8_lossy(n).into_owned());
        }
    }
    Ok(String::new())
}

/// A ValueInfoProto's name and tensor dims.
fn io(v: &[u8]) -> std::result::Result<Io, String> {
    let mut out = Io {
        name: String::new(),
        dims: vec![],
    };
    let sub = |b: &[u8], num: u32| -> std::result::Result<Vec<Vec<u8>>, String> {
        Ok(proto::fields(b)?
            .into_iter()
            .filter(|f| f.num == num)
            .filter_map(|f| match f.value {
                Value::Bytes(x) => Some(x.to_vec()),
                _ => None,
            })
            .collect())
    };
    for f in proto::fields(v)? {
        match (f.num, f.value) {
            (1, Value::Bytes(n)) => out.name = String::from_utf8_lossy(n).into_owned(),
            (2, Value::Bytes(ty)) => {
                for tensor in sub(ty, 1)? {
                    for shape in sub(&tensor, 2)? {
                        for dim in sub(&shape, 1)? {
                            let mut d = Dim::Symbolic(String::new());
                            for df in proto::fields(&dim)? {
                                match (df.num, df.value) {
                                    (1, Value::Varint(x)) => d = Dim::Fixed(x as i64),
                                    (2, Value::Bytes(s)) => {
                                        d = Dim::Symbolic(String::from_utf8_lossy(s).into_owned())
                                    }
                                    _ => {}
                                }
                            }
                            out.dims.push(d);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Weights files opened for binding, by file name.
type Opened = Vec<(String, Weights)>;

/// Builds the writer's model from the folder's file: every ModelProto and GraphProto field is
/// kept except metadata entries the export sets, and initializer data is resolved.
pub fn model<'a>(
    g: &'a FolderGraph,
    dir: &Path,
    path: &Path,
    metadata: &[(String, String)],
    opened: &'a mut Opened,
) -> Result<Model<'a>> {
    let mut head = Msg::new();
    let mut graph = Msg::new();
    let mut raw_tensors: Vec<&'a [u8]> = Vec::new();
    for f in proto::fields(&g.bytes).map_err(|w| bad(path, w))? {
        match (f.num, &f.value) {
            (7, Value::Bytes(gb)) => {
                for gf in proto::fields(gb).map_err(|w| bad(path, w))? {
                    match (gf.num, gf.value) {
                        (5, Value::Bytes(t)) => raw_tensors.push(t),
                        _ => graph.buf.extend_from_slice(gf.raw),
                    }
                }
            }
            (14, Value::Bytes(kv)) => {
                let key = proto::fields(kv)
                    .ok()
                    .and_then(|fs| fs.into_iter().find(|x| x.num == 1))
                    .and_then(|x| match x.value {
                        Value::Bytes(k) => Some(String::from_utf8_lossy(k).into_owned()),
                        _ => None,
                    })
                    .unwrap_or_default();
                if !metadata.iter().any(|(k, _)| *k == key) {
                    head.buf.extend_from_slice(f.raw);
                }
            }
            _ => head.buf.extend_from_slice(f.raw),
        }
    }
    onnx_writer::add_metadata(&mut head, metadata);
    // Open every weights file first: tensors borrow from them.
    let mut plans = Vec::with_capacity(raw_tensors.len());
    for t in &raw_tensors {
        let p = plan(t).map_err(|w| bad(path, w))?;
        if let Source::Safetensors(loc) = &p.source {
            if !opened.iter().any(|(n, _)| n == loc) {
                let w = Weights::open(&dir.join(loc), WeightsMode::Copy)?;
                opened.push((loc.clone(), w));
            }
        }
        plans.push(p);
    }
    let opened: &'a Opened = opened;
    let mut tensors = Vec::with_capacity(plans.len());
    for p in plans {
        let data = match p.source {
            Source::Inline(d) => d,
            Source::Safetensors(loc) => {
                let w = &opened.iter().find(|(n, _)| *n == loc).expect("opened").1;
                bound(w, &p.info)?
            }
            Source::File {
                location,
                offset,
                length,
            } => {
                let file = dir.join(&location);
                let all = std::fs::read(&file)
                    .map_err(|e| Error::from_io(&e, "cannot read external data", &file))?;
                let end = length.map(|l| offset + l).unwrap_or(all.len());
                let slice = all.get(offset..end).ok_or_else(|| {
                    Error::invalid_model(format!(
                        "initializer `{}` reads bytes {offset}..{end} of {}, which has {}",
                        p.info.name,
                        file.display(),
                        all.len()
                    ))
                })?;
                Data::Owned(slice.to_vec())
            }
        };
        tensors.push(Tensor {
            header: p.header,
            data,
        });
    }
    Ok(Model {
        head,
        graph,
        tensors,
    })
}

enum Source<'a> {
    Inline(Data<'a>),
    Safetensors(String),
    File {
        location: String,
        offset: usize,
        length: Option<usize>,
    },
}

struct Plan<'a> {
    header: Msg,
    info: onnx::Initializer,
    source: Source<'a>,
}

/// Splits a TensorProto into its header (every field but the data and its location) and where
/// its data is.
fn plan<'a>(t: &'a [u8]) -> std::result::Result<Plan<'a>, String> {
    let mut header = Msg::new();
    let mut info = onnx::Initializer::default();
    let mut raw: Option<&'a [u8]> = None;
    let mut ext: Vec<(String, String)> = Vec::new();
    for f in proto::fields(t)? {
        match (f.num, &f.value) {
            (9, Value::Bytes(b)) => raw = Some(b),
            (13, Value::Bytes(kv)) => {
                let mut k = String::new();
                let mut v = String::new();
                for x in proto::fields(kv)? {
                    match (x.num, x.value) {
                        (1, Value::Bytes(s)) => k = String::from_utf8_lossy(s).into_owned(),
                        (2, Value::Bytes(s)) => v = String::from_utf8_lossy(s).into_owned(),
                        _ => {}
                    }
                }
                ext.push((k, v));
            }
            (14, Value::Varint(v)) => info.external = *v == 1,
            _ => {
                match (f.num, &f.value) {
                    (1, Value::Varint(d)) => info.dims.push(*d as i64),
                    (1, Value::Bytes(packed)) => {
                        let mut pos = 0;
                        while pos < packed.len() {
                            let mut v = 0u64;
                            let mut shift = 0;
                            loop {
                                let b = *packed.get(pos).ok_or("truncated dims")?;
                                pos += 1;
                                v |= u64::from(b & 0x7f) << shift;
                                shift += 7;
                                if b & 0x80 == 0 || shift >= 64 {
                                    break;
                                }
                            }
                            info.dims.push(v as i64);
                        }
                    }
                    (2, Value::Varint(v)) => info.data_type = *v as i32,
                    (8, Value::Bytes(n)) => info.name = String::from_utf8_lossy(n).into_owned(),
                    _ => {}
                }
                header.buf.extend_from_slice(f.raw);
            }
        }
    }
    let source = if !info.external {
        // Typed fields (float_data, ...) stayed in the header; raw_data is placed by the writer.
        Source::Inline(Data::Borrowed(raw.unwrap_or(&[])))
    } else {
        let get = |k: &str| ext.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
        let location = get("location").ok_or_else(|| {
            format!(
                "initializer `{}` is external but names no location",
                info.name
            )
        })?;
        let plain = Path::new(&location)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain || location.is_empty() {
            return Err(format!(
                "initializer `{}` points at `{location}`, outside the model folder",
                info.name
            ));
        }
        if location.ends_with(".safetensors") {
            Source::Safetensors(location)
        } else {
            let num = |k: &str| -> std::result::Result<Option<usize>, String> {
                get(k)
                    .map(|v| {
                        v.parse()
                            .map_err(|_| format!("external data {k} `{v}` is not a number"))
                    })
                    .transpose()
            };
            Source::File {
                offset: num("offset")?.unwrap_or(0),
                length: num("length")?,
                location,
            }
        }
    };
    Ok(Plan {
        header,
        info,
        source,
    })
}

/// The bytes of a stripped initializer from the weights file, in the type model.onnx declares.
fn bound<'a>(w: &'a Weights, init: &onnx::Initializer) -> Result<Data<'a>> {
    let info = w.get(&init.name).ok_or_else(|| {
        Error::invalid_model(format!(
            "model.onnx needs initializer `{}` from {}, which has no such tensor",
            init.name,
            w.path().display()
        ))
    })?;
    let dims: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
    if dims != init.dims {
        return Err(Error::invalid_model(format!(
            "weight `{}` has shape {:?} in {} but model.onnx declares {:?}",
            init.name,
            info.shape,
            w.path().display(),
            init.dims
        )));
    }
    match (init.data_type, info.dtype) {
        (onnx::FLOAT, DType::F32) | (onnx::FLOAT16, DType::F16) | (onnx::BFLOAT16, DType::BF16) => {
            Ok(Data::Weight(w, info.clone()))
        }
        (onnx::FLOAT, d) if d.is_float() || d == DType::F64 => {
            let raw = w.bytes(info)?;
            let f = weights::to_f32(&raw, d).ok_or_else(|| Error::internal("float conversion"))?;
            Ok(Data::Owned(
                f.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ))
        }
        (t, d) => Err(Error::invalid_model(format!(
            "weight `{}` is {d:?} in the safetensors file but model.onnx declares ONNX type {t}",
            init.name
        ))),
    }
}
