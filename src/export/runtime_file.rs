//! A native graph as the ONNX file ONNX Runtime optimises from when it writes an optimised-model
//! cache entry: the graph as it is, in ORT's opsets, with its tensors in an external data file.
//!
//! Weights reach the graph in their stored layout and type, with a `Transpose` (`nn.Linear`'s
//! weight) or a `Cast` to f32 (f16 / bf16 files) after them, which ORT folds at load. Folding
//! reads the whole tensor and keeps the result beside it, and for a transformer that is every
//! weight, read and copied once more. So these chains are written folded: each result is
//! computed while the file is written, one tensor at a time, and ORT has nothing to fold.

use std::collections::{HashMap, HashSet};

use super::onnx_writer::{self, Data, Io, Tensor, FLOAT, INT64};
use super::proto::Msg;
use crate::error::{Error, Result};
use crate::graph::{self, Attr, Graph, InitData, Node};
use crate::weights::Weights;

/// The IR version that goes with the native graph's opset 21 (onnx 1.16).
const IR_VERSION: i64 = 10;

/// A value computed from one initializer by the foldable nodes before it.
#[derive(Clone)]
struct Folded {
    /// Index into the graph's initializers.
    source: usize,
    dims: Vec<i64>,
    /// Whether a 2-D transpose comes before the result (a Cast only converts the type).
    transposed: bool,
}

/// `g` with `input` and `outputs`, ready for [`onnx_writer::write`]. Tensors borrow from `g` and
/// `weights`; folded ones are computed as they are written.
pub fn model<'a>(
    g: &'a Graph,
    weights: Option<&'a Weights>,
    input: &Io,
    outputs: &[Io],
) -> Result<onnx_writer::Model<'a>> {
    let index: HashMap<&str, usize> = g
        .initializers
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut folded: HashMap<&str, Folded> = HashMap::new();
    let mut kept_nodes: Vec<&Node> = Vec::new();
    for n in &g.nodes {
        let from = n.inputs.first().and_then(|i| {
            folded.get(i.as_str()).cloned().or_else(|| {
                index.get(i.as_str()).map(|&source| Folded {
                    source,
                    dims: g.initializers[source].dims.clone(),
                    transposed: false,
                })
            })
        });
        let from = from.filter(|f| is_float(&g.initializers[f.source].data, weights));
        match (from, foldable(n)) {
            (Some(f), Some(step)) if n.inputs.len() == 1 && n.outputs.len() == 1 => {
                let f = match step {
                    Step::ToF32 => f,
                    Step::Transpose2d if f.dims.len() == 2 && !f.transposed => Folded {
                        dims: vec![f.dims[1], f.dims[0]],
                        transposed: true,
                        ..f
                    },
                    Step::Transpose2d => {
                        kept_nodes.push(n);
                        continue;
                    }
                };
                folded.insert(n.outputs[0].as_str(), f);
            }
            _ => kept_nodes.push(n),
        }
    }
    let used: HashSet<&str> = kept_nodes
        .iter()
        .flat_map(|n| n.inputs.iter().map(String::as_str))
        .chain(outputs.iter().map(|o| o.name.as_str()))
        .collect();

    let mut graph_msg = Msg::new();
    for n in &kept_nodes {
        graph_msg.msg(1, &onnx_writer::node(n));
    }
    graph_msg.str(2, "native");
    graph_msg.msg(11, &onnx_writer::value_info(input));
    for o in outputs {
        graph_msg.msg(12, &onnx_writer::value_info(o));
    }
    let mut tensors = Vec::new();
    for init in g
        .initializers
        .iter()
        .filter(|t| used.contains(t.name.as_str()))
    {
        tensors.push(match &init.data {
            InitData::Weight(name) => super::weight_tensor(weights, name, &init.name, &init.dims)?,
            InitData::F32(v) => Tensor::new(
                &init.name,
                &init.dims,
                FLOAT,
                Data::Borrowed(graph::f32_bytes(v)),
            ),
            InitData::I64(v) => Tensor::new(
                &init.name,
                &init.dims,
                INT64,
                Data::Borrowed(graph::i64_bytes(v)),
            ),
        });
    }
    // In node order, so the file is the same from one build to the next.
    for n in &g.nodes {
        let name = match n.outputs.first() {
            Some(o) if used.contains(o.as_str()) => o.as_str(),
            _ => continue,
        };
        let Some(f) = folded.get(name) else { continue };
        let init = &g.initializers[f.source];
        let (dims, transposed) = (f.dims.clone(), f.transposed);
        let numel: usize = dims.iter().map(|&d| d as usize).product();
        let compute = move |sink: &mut dyn FnMut(&[u8]) -> Result<()>| -> Result<()> {
            let (values, release) = match &init.data {
                InitData::Weight(key) => {
                    let w = weights.ok_or_else(|| {
                        Error::internal("a native graph references weights but none were loaded")
                    })?;
                    (w.f32_values(key)?, w.get(key).map(|info| (w, info)))
                }
                InitData::F32(v) => (std::borrow::Cow::Borrowed(v.as_slice()), None),
                InitData::I64(_) => {
                    return Err(Error::internal(format!(
                        "`{}` is an integer tensor folded as a float one",
                        init.name
                    )))
                }
            };
            if values.len() != numel {
                return Err(Error::invalid_model(format!(
                    "`{}` has {} values for dims {:?}",
                    init.name,
                    values.len(),
                    init.dims
                )));
            }
            if transposed {
                transpose(&values, dims[1] as usize, dims[0] as usize, sink)?;
            } else {
                for piece in values.chunks(PIECE) {
                    sink(graph::f32_bytes(piece))?;
                }
            }
            // Written: the mapped source pages need not stay resident.
            if let Some((w, info)) = release {
                w.release_tensor(info);
            }
            Ok(())
        };
        tensors.push(Tensor::new(
            name,
            &f.dims,
            FLOAT,
            Data::Computed(numel * 4, Box::new(compute)),
        ));
    }
    let opsets = [
        ("", i64::from(graph::OPSET)),
        (graph::MS_DOMAIN, i64::from(graph::MS_OPSET)),
    ];
    Ok(onnx_writer::Model {
        head: onnx_writer::model_head_ir(IR_VERSION, &opsets, &[]),
        graph: graph_msg,
        tensors,
    })
}

/// Whether an initializer holds floats, which is all the folded steps convert.
fn is_float(data: &InitData, weights: Option<&Weights>) -> bool {
    match data {
        InitData::Weight(key) => weights
            .and_then(|w| w.get(key))
            .is_some_and(|info| info.dtype.is_float()),
        InitData::F32(_) => true,
        InitData::I64(_) => false,
    }
}

enum Step {
    ToF32,
    Transpose2d,
}

/// What a node does to a constant input, if it is one of the steps written folded.
fn foldable(n: &Node) -> Option<Step> {
    if !n.domain.is_empty() {
        return None;
    }
    let attr = |k: &str| n.attrs.iter().find(|(name, _)| name == k).map(|(_, a)| a);
    match n.op.as_str() {
        "Cast" => match attr("to") {
            Some(Attr::Int(1)) => Some(Step::ToF32),
            _ => None,
        },
        "Transpose" => match attr("perm") {
            Some(Attr::Ints(p)) if p == &[1, 0] => Some(Step::Transpose2d),
            _ => None,
        },
        _ => None,
    }
}

/// Values handed to the writer at a time (1 MiB), so a folded tensor needs no second copy.
const PIECE: usize = 1 << 18;

/// The transpose of a row-major `rows` x `cols` matrix, fed to `sink` a band of output rows at a
/// time: each band reads a few columns of every input row, which stay in cache.
fn transpose(
    v: &[f32],
    rows: usize,
    cols: usize,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    const BAND: usize = 32;
    let mut band = vec![0f32; BAND * rows];
    for c0 in (0..cols).step_by(BAND) {
        let n = BAND.min(cols - c0);
        for r in 0..rows {
            let src = &v[r * cols + c0..r * cols + c0 + n];
            for (i, &x) in src.iter().enumerate() {
                band[i * rows + r] = x;
            }
        }
        sink(graph::f32_bytes(&band[..n * rows]))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::onnx_writer::Dim;
    use crate::graph::{Initializer, OutputShape};

    #[test]
    fn transpose_swaps_rows_and_columns_across_tiles() {
        let (rows, cols) = (37, 70);
        let v: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        let mut t = Vec::new();
        transpose(&v, rows, cols, &mut |piece| {
            t.extend_from_slice(piece);
            Ok(())
        })
        .unwrap();
        let t: Vec<f32> = bytemuck::pod_collect_to_vec(&t);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(t[c * rows + r], v[r * cols + c]);
            }
        }
    }

    fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<(String, Attr)>) -> Node {
        Node {
            op: op.into(),
            domain: String::new(),
            name: output.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![output.into()],
            attrs,
        }
    }

    /// An f16 `nn.Linear` weight [3, 2] read through Cast and Transpose, as the layer library
    /// builds it, plus an integer tensor that is cast and must stay as it is.
    fn linear_graph() -> (Graph, Weights) {
        let w: Vec<u8> = (0..6)
            .flat_map(|i| half::f16::from_f32(i as f32 + 0.5).to_le_bytes())
            .collect();
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![3, 2], &w).unwrap();
        let bytes = safetensors::tensor::serialize([("fc.weight", view)], None).unwrap();
        let weights = Weights::from_bytes("test.safetensors", &bytes).unwrap();
        let to_f32 = vec![("to".to_string(), Attr::Int(1))];
        let g = Graph {
            nodes: vec![
                node("Cast", &["w:fc.weight"], "cast", to_f32.clone()),
                node(
                    "Transpose",
                    &["cast"],
                    "wt",
                    vec![("perm".into(), Attr::Ints(vec![1, 0]))],
                ),
                node("MatMul", &["x", "wt"], "mm", vec![]),
                node("Cast", &["idx"], "idx_f", to_f32),
                node("Add", &["mm", "idx_f"], "y", vec![]),
            ],
            initializers: vec![
                Initializer {
                    name: "w:fc.weight".into(),
                    dims: vec![3, 2],
                    data: InitData::Weight("fc.weight".into()),
                },
                Initializer {
                    name: "idx".into(),
                    dims: vec![3],
                    data: InitData::I64(vec![1, 2, 3]),
                },
            ],
            input_name: "x".into(),
            input_chw: [Some(1), Some(1), Some(2)],
            outputs: vec![crate::graph::GraphOutput {
                name: "y".into(),
                shape: OutputShape::Vector(3),
            }],
            feature_info: Vec::new(),
            params: 0,
            min_input: Default::default(),
            any_size: false,
        };
        (g, weights)
    }

    #[test]
    fn a_cast_and_transposed_weight_is_written_folded_and_an_integer_cast_is_kept() {
        let (g, weights) = linear_graph();
        let io = |name: &str| Io {
            name: name.into(),
            dims: vec![Dim::Symbolic("batch".into()), Dim::Fixed(2)],
        };
        let m = model(&g, Some(&weights), &io("x"), &[io("y")]).unwrap();
        let names: Vec<&str> = m
            .tensors
            .iter()
            .map(|t| tensor_name(&t.header.buf))
            .collect();
        // The weight itself is no longer read by any node: only its folded form is written.
        assert_eq!(names, ["idx", "wt"]);
        let wt = &m.tensors[1];
        let values: Vec<f32> = wt
            .data
            .bytes()
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        // [[0.5, 1.5], [2.5, 3.5], [4.5, 5.5]] transposed.
        assert_eq!(values, [0.5, 2.5, 4.5, 1.5, 3.5, 5.5]);
        let graph = String::from_utf8_lossy(&m.graph.buf);
        assert!(
            !graph.contains("Transpose"),
            "the folded Transpose is still a node"
        );
        assert!(graph.contains("MatMul") && graph.contains("idx_f"));
    }

    /// The name field (8) of an encoded TensorProto header.
    fn tensor_name(buf: &[u8]) -> &str {
        let fields = crate::export::proto::fields(buf).unwrap();
        fields
            .iter()
            .find_map(|f| match (f.num, &f.value) {
                (8, crate::export::proto::Value::Bytes(b)) => std::str::from_utf8(b).ok(),
                _ => None,
            })
            .unwrap()
    }
}
