//! Writes an ONNX `ModelProto` to a file. Small parts (nodes, inputs, outputs, tensor headers)
//! are encoded in memory; tensor data is streamed to the file one tensor at a time, inline as
//! `raw_data` or into an external-data file beside the model, so a multi-gigabyte model is
//! never held in memory twice.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::proto::{len_prefix, varint_len, Msg};
use crate::error::{Error, Result};
use crate::graph::{Attr, Node};
use crate::weights::{TensorInfo, Weights};

/// ONNX `TensorProto.DataType` values the exporter writes.
pub const FLOAT: i32 = 1;
pub const INT64: i32 = 7;
pub const FLOAT16: i32 = 10;
pub const DOUBLE: i32 = 11;
pub const BFLOAT16: i32 = 16;

/// IR version 8 goes with opset 17 (onnx 1.12) and is read by every runtime the export targets.
pub const IR_VERSION: i64 = 8;

/// Protobuf messages cannot exceed 2 GiB; above this the tensors go to external data.
pub const INLINE_LIMIT: u64 = 2_000_000_000;
/// Tensors smaller than this stay inline even with external data (as onnx's own saver does).
const EXTERNAL_MIN_BYTES: usize = 1024;

/// A dimension of an input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    /// A free dimension by name; an empty name is an unnamed one.
    Symbolic(String),
}

/// A graph input or output: float tensor with dims.
#[derive(Debug, Clone)]
pub struct Io {
    pub name: String,
    pub dims: Vec<Dim>,
}

/// Where a tensor's bytes come from.
pub enum Data<'a> {
    Owned(Vec<u8>),
    Borrowed(&'a [u8]),
    /// A tensor of a safetensors file, written in its stored dtype.
    Weight(&'a Weights, TensorInfo),
    /// `len` bytes made when the tensor is written and handed to the sink in pieces, so no
    /// whole copy of the result is ever held.
    Computed(usize, Box<Produce<'a>>),
}

/// Makes a computed tensor's bytes, feeding them to the sink in order.
pub type Produce<'a> = dyn Fn(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> + 'a;

/// Runs a computed tensor's producer into `sink` and checks it made the planned length.
fn produce(
    len: usize,
    make: &Produce<'_>,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut made = 0usize;
    make(&mut |piece| {
        made += piece.len();
        sink(piece)
    })?;
    if made != len {
        return Err(Error::internal(format!(
            "a computed tensor has {made} bytes, {len} were planned"
        )));
    }
    Ok(())
}

impl Data<'_> {
    /// Writes the bytes to `out` (the file at `path`). A weight is streamed from its file in
    /// pieces, never held whole (in copy mode), and its mapped pages are released after it:
    /// a large model's written tensors do not add up in the resident set.
    fn write_to(&self, out: &mut impl Write, path: &Path) -> Result<()> {
        let io_err = |e: std::io::Error| Error::from_io(&e, "cannot write", path);
        match self {
            Data::Weight(w, info) => {
                let mut failed = None;
                w.for_each_chunk(info, |chunk| {
                    if failed.is_none() {
                        failed = out.write_all(chunk).err();
                    }
                })?;
                w.release_tensor(info);
                failed.map_or(Ok(()), |e| Err(io_err(e)))
            }
            Data::Computed(len, make) => produce(*len, make, &mut |piece| {
                out.write_all(piece).map_err(io_err)
            }),
            other => out.write_all(&other.bytes()?).map_err(io_err),
        }
    }

    fn len(&self) -> usize {
        match self {
            Data::Owned(v) => v.len(),
            Data::Borrowed(v) => v.len(),
            Data::Weight(_, info) => info.end - info.start,
            Data::Computed(len, _) => *len,
        }
    }

    pub(crate) fn bytes(&self) -> Result<std::borrow::Cow<'_, [u8]>> {
        match self {
            Data::Owned(v) => Ok(std::borrow::Cow::Borrowed(v)),
            Data::Borrowed(v) => Ok(std::borrow::Cow::Borrowed(v)),
            Data::Weight(w, info) => w.bytes(info),
            Data::Computed(len, make) => {
                let mut v = Vec::with_capacity(*len);
                produce(*len, make, &mut |piece| {
                    v.extend_from_slice(piece);
                    Ok(())
                })?;
                Ok(std::borrow::Cow::Owned(v))
            }
        }
    }
}

/// An initializer: the encoded TensorProto fields other than its data (dims, type, name, ...)
/// and the data, which the writer places.
pub struct Tensor<'a> {
    pub header: Msg,
    pub data: Data<'a>,
}

impl<'a> Tensor<'a> {
    pub fn new(name: &str, dims: &[i64], data_type: i32, data: Data<'a>) -> Self {
        let mut header = Msg::new();
        if !dims.is_empty() {
            header.ints(1, dims);
        }
        header.int(2, i64::from(data_type)).str(8, name);
        Tensor { header, data }
    }
}

/// Everything a model file holds.
pub struct Model<'a> {
    /// Encoded ModelProto fields other than the graph (IR version, opsets, producer, metadata).
    pub head: Msg,
    /// Encoded GraphProto fields other than the initializers (nodes, name, inputs, outputs).
    pub graph: Msg,
    pub tensors: Vec<Tensor<'a>>,
}

/// The ModelProto head of an exported file.
pub fn model_head(opsets: &[(&str, i64)], metadata: &[(String, String)]) -> Msg {
    model_head_ir(IR_VERSION, opsets, metadata)
}

/// [`model_head`] stamped with another IR version (one that goes with newer opsets).
pub fn model_head_ir(
    ir_version: i64,
    opsets: &[(&str, i64)],
    metadata: &[(String, String)],
) -> Msg {
    let mut m = Msg::new();
    m.int(1, ir_version)
        .str(2, "libtimm")
        .str(3, env!("CARGO_PKG_VERSION"));
    for (domain, version) in opsets {
        let mut o = Msg::new();
        o.str(1, domain).int(2, *version);
        m.msg(8, &o);
    }
    add_metadata(&mut m, metadata);
    m
}

pub fn add_metadata(m: &mut Msg, metadata: &[(String, String)]) {
    for (k, v) in metadata {
        let mut e = Msg::new();
        e.str(1, k).str(2, v);
        m.msg(14, &e);
    }
}

pub fn node(n: &Node) -> Msg {
    let mut m = Msg::new();
    for i in &n.inputs {
        m.str(1, i);
    }
    for o in &n.outputs {
        m.str(2, o);
    }
    m.str(3, &n.name).str(4, &n.op);
    if !n.domain.is_empty() {
        m.str(7, &n.domain);
    }
    for (name, a) in &n.attrs {
        let mut am = Msg::new();
        am.str(1, name);
        // AttributeProto.type: FLOAT 1, INT 2, STRING 3, FLOATS 6, INTS 7.
        match a {
            Attr::Float(v) => am.float(2, *v).int(20, 1),
            Attr::Int(v) => am.int(3, *v).int(20, 2),
            Attr::Str(v) => am.str(4, v).int(20, 3),
            Attr::Floats(v) => am.floats(7, v).int(20, 6),
            Attr::Ints(v) => am.ints(8, v).int(20, 7),
        };
        m.msg(5, &am);
    }
    m
}

/// A ValueInfoProto of a float tensor.
pub fn value_info(io: &Io) -> Msg {
    let mut shape = Msg::new();
    for d in &io.dims {
        let mut dm = Msg::new();
        match d {
            Dim::Fixed(v) => dm.int(1, *v),
            // An unnamed free dimension: neither a value nor a name.
            Dim::Symbolic(s) if s.is_empty() => &mut dm,
            Dim::Symbolic(s) => dm.str(2, s),
        };
        shape.msg(1, &dm);
    }
    let mut tensor = Msg::new();
    tensor.int(1, i64::from(FLOAT)).msg(2, &shape);
    let mut ty = Msg::new();
    ty.msg(1, &tensor);
    let mut v = Msg::new();
    v.str(1, &io.name).msg(2, &ty);
    v
}

/// The external-data file written beside `path`: `<file name>.data`.
pub fn external_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".data");
    path.with_file_name(name)
}

/// Writes `model` to `path`. Tensor data goes to `<path>.data` when `external` is set or the
/// file would exceed protobuf's 2 GiB limit. Returns whether external data was written.
pub fn write(model: &Model, path: &Path, external: bool) -> Result<bool> {
    let data_bytes: u64 = model.tensors.iter().map(|t| t.data.len() as u64).sum();
    let external = external || data_bytes > INLINE_LIMIT;
    let data_path = external_path(path);
    let location = data_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

    // Plan every tensor: inline ones carry raw_data; external ones carry their location.
    let mut offset = 0u64;
    let mut plans = Vec::with_capacity(model.tensors.len());
    for t in &model.tensors {
        let len = t.data.len();
        if external && len >= EXTERNAL_MIN_BYTES {
            // Page-aligned offsets for large tensors let runtimes map them in place.
            let align = if len >= 1 << 20 { 4096 } else { 64 };
            offset = offset.div_ceil(align) * align;
            let mut h = t.header.clone();
            for (k, v) in [
                ("location", location.clone()),
                ("offset", offset.to_string()),
                ("length", len.to_string()),
            ] {
                let mut e = Msg::new();
                e.str(1, k).str(2, &v);
                h.msg(13, &e);
            }
            h.int(14, 1);
            plans.push((h.buf, None, Some(offset)));
            offset += len as u64;
        } else {
            let mut h = t.header.buf.clone();
            h.extend_from_slice(&len_prefix(9, len));
            plans.push((h, Some(len), None));
        }
    }
    let tensor_len = |(h, inline, _): &(Vec<u8>, Option<usize>, Option<u64>)| -> u64 {
        (h.len() + inline.unwrap_or(0)) as u64
    };
    let graph_len: u64 = model.graph.buf.len() as u64
        + plans
            .iter()
            .map(|p| {
                let l = tensor_len(p);
                1 + varint_len(l) as u64 + l
            })
            .sum::<u64>();
    if graph_len + model.head.buf.len() as u64 > i32::MAX as u64 {
        return Err(Error::unsupported(format!(
            "the model's graph would be {graph_len} bytes, over protobuf's 2 GiB limit even with external data"
        )));
    }

    let io_err = |e: std::io::Error, p: &Path| Error::from_io(&e, "cannot write", p);
    let mut f = BufWriter::with_capacity(1 << 20, create(path)?);
    let mut data_file = if external {
        Some(BufWriter::with_capacity(1 << 20, create(&data_path)?))
    } else {
        None
    };
    let mut data_pos = 0u64;
    (|| -> std::io::Result<()> {
        f.write_all(&model.head.buf)?;
        f.write_all(&len_prefix(7, graph_len as usize))?;
        f.write_all(&model.graph.buf)?;
        Ok(())
    })()
    .map_err(|e| io_err(e, path))?;
    for (t, plan) in model.tensors.iter().zip(&plans) {
        let (h, inline, ext) = plan;
        (|| -> std::io::Result<()> {
            f.write_all(&len_prefix(5, tensor_len(plan) as usize))?;
            f.write_all(h)
        })()
        .map_err(|e| io_err(e, path))?;
        if inline.is_some() {
            t.data.write_to(&mut f, path)?;
        }
        if let (Some(at), Some(d)) = (ext, data_file.as_mut()) {
            d.write_all(&vec![0u8; (*at - data_pos) as usize])
                .map_err(|e| io_err(e, &data_path))?;
            t.data.write_to(d, &data_path)?;
            data_pos = at + t.data.len() as u64;
        }
    }
    f.flush().map_err(|e| io_err(e, path))?;
    if let Some(mut d) = data_file {
        d.flush().map_err(|e| io_err(e, &data_path))?;
    } else if data_path.is_file() {
        // A stale data file from an earlier external export would be misleading.
        let _ = std::fs::remove_file(&data_path);
    }
    Ok(external)
}

/// Encodes `model` in memory with every tensor inline (for engines that take model bytes).
/// Fails above protobuf's 2 GiB limit, where only a file with external data can hold it.
pub fn to_bytes(model: &Model) -> Result<Vec<u8>> {
    let mut headers = Vec::with_capacity(model.tensors.len());
    let mut graph_len = model.graph.buf.len();
    for t in &model.tensors {
        let mut h = t.header.buf.clone();
        h.extend_from_slice(&len_prefix(9, t.data.len()));
        let l = h.len() + t.data.len();
        graph_len += 1 + varint_len(l as u64) + l;
        headers.push(h);
    }
    let total = model.head.buf.len() + 1 + varint_len(graph_len as u64) + graph_len;
    if total as u64 > i32::MAX as u64 {
        return Err(Error::unsupported(format!(
            "the model is {total} bytes as one ONNX message, over protobuf's 2 GiB limit"
        )));
    }
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&model.head.buf);
    out.extend_from_slice(&len_prefix(7, graph_len));
    out.extend_from_slice(&model.graph.buf);
    for (t, h) in model.tensors.iter().zip(&headers) {
        out.extend_from_slice(&len_prefix(5, h.len() + t.data.len()));
        out.extend_from_slice(h);
        out.extend_from_slice(&t.data.bytes()?);
    }
    Ok(out)
}

fn create(path: &Path) -> Result<File> {
    File::create(path).map_err(|e| Error::from_io(&e, "cannot create", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_encoding_equals_the_inline_file() {
        let mut graph = Msg::new();
        graph.str(2, "g");
        let model = Model {
            head: model_head(&[("", 17)], &[]),
            graph,
            tensors: vec![
                Tensor::new("a", &[3], FLOAT, Data::Owned(vec![7u8; 12])),
                Tensor::new(
                    "b",
                    &[300],
                    FLOAT,
                    Data::Owned((0..1200).map(|i| i as u8).collect()),
                ),
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.onnx");
        write(&model, &p, false).unwrap();
        assert_eq!(to_bytes(&model).unwrap(), std::fs::read(&p).unwrap());
    }

    #[test]
    fn inline_model_is_scanned_back() {
        let mut graph = Msg::new();
        graph.str(2, "g");
        graph.msg(
            11,
            &value_info(&Io {
                name: "input".into(),
                dims: vec![Dim::Symbolic("batch".into()), Dim::Fixed(3)],
            }),
        );
        let model = Model {
            head: model_head(&[("", 17)], &[("k".into(), "v".into())]),
            graph,
            tensors: vec![Tensor::new("w", &[2], FLOAT, Data::Owned(vec![0u8; 8]))],
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.onnx");
        assert!(!write(&model, &p, false).unwrap());
        let info = crate::onnx::scan(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(info.ir_version, IR_VERSION);
        assert_eq!(info.inputs, ["input"]);
        assert_eq!(info.initializers[0].name, "w");
        assert_eq!(info.initializers[0].dims, [2]);
        assert!(!info.initializers[0].external);
    }

    #[test]
    fn external_data_is_aligned_and_located() {
        let model = Model {
            head: model_head(&[("", 17)], &[]),
            graph: Msg::new(),
            tensors: vec![
                Tensor::new("small", &[1], FLOAT, Data::Owned(vec![1u8; 4])),
                Tensor::new("a", &[300], FLOAT, Data::Owned(vec![2u8; 1200])),
                Tensor::new("b", &[300], FLOAT, Data::Owned(vec![3u8; 1200])),
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.onnx");
        assert!(write(&model, &p, true).unwrap());
        let info = crate::onnx::scan(&std::fs::read(&p).unwrap()).unwrap();
        assert!(!info.initializers[0].external);
        assert!(info.initializers[1].external && info.initializers[2].external);
        assert_eq!(
            info.initializers[1].location.as_deref(),
            Some("m.onnx.data")
        );
        let data = std::fs::read(dir.path().join("m.onnx.data")).unwrap();
        // b starts at the next 64-byte boundary after a.
        assert_eq!(data.len(), 1216 + 1200);
        assert!(data[1216..].iter().all(|&b| b == 3));
    }
}
