//! Export of the graph a model runs as a standard ONNX file (and a Triton model repository),
//! so the same model can be served by engines that read ONNX: Triton, TensorRT's `trtexec`,
//! OpenVINO, ONNX Runtime elsewhere.
//!
//! Native graphs are rebuilt from the model's config and weights at export time (creation keeps
//! nothing for it), rewritten to portable standard ops ([`portable`]) and written by our own
//! protobuf writer ([`onnx_writer`]). A folder's `model.onnx` is copied with its bound weights
//! embedded ([`folder`]). Every file carries timm's architecture, data config and labels in
//! `metadata_props`, so a server can preprocess and label without the folder.

pub mod folder;
pub mod onnx_writer;
pub mod portable;
pub mod proto;
pub mod runtime_file;
pub mod triton;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use self::onnx_writer::{Data, Dim, Io, Tensor, BFLOAT16, DOUBLE, FLOAT, FLOAT16, INT64};
use self::proto::Msg;
use crate::error::{Error, Result};
use crate::graph::{self, Graph, InitData, OutputKind, OutputShape, ParamSource};
use crate::model::{GraphKind, Model};
use crate::weights::{DType, Weights};

/// Metadata keys of exported files.
pub mod keys {
    pub const ARCHITECTURE: &str = "timm.architecture";
    pub const FAMILY: &str = "timm.family";
    pub const OUTPUT: &str = "timm.output";
    pub const NUM_CLASSES: &str = "timm.num_classes";
    /// JSON: input_size, mean, std, crop_pct, crop_mode, interpolation.
    pub const DATA_CONFIG: &str = "timm.data_config";
    /// JSON array of label names (null where a class has none); `[]` without labels.
    pub const LABEL_NAMES: &str = "timm.label_names";
    /// The resolved config.json.
    pub const CONFIG: &str = "timm.config";
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub input: Io,
    pub outputs: Vec<Io>,
    /// Whether the weights went to `<file>.data` beside the file.
    pub external_data: bool,
}

/// timm's name for an output kind.
pub fn output_kind_name(k: OutputKind) -> &'static str {
    match k {
        OutputKind::Logits => "logits",
        OutputKind::Features => "features",
        OutputKind::FeatureMaps => "feature_maps",
        OutputKind::Tokens => "tokens",
    }
}

/// The `metadata_props` of an export of `model`.
pub fn metadata(model: &Model) -> Vec<(String, String)> {
    let cfg = model.config();
    let dc = model.data_config();
    let data_config = serde_json::json!({
        "input_size": dc.input_size,
        "mean": dc.mean,
        "std": dc.std,
        "crop_pct": dc.crop_pct,
        "crop_mode": dc.crop_mode.as_str(),
        "interpolation": dc.interpolation.as_str(),
    });
    let labels = serde_json::Value::Array(
        cfg.label_names
            .iter()
            .map(|l| {
                l.clone()
                    .map_or(serde_json::Value::Null, serde_json::Value::String)
            })
            .collect(),
    );
    let family = graph::family_for(&cfg.architecture).map_or("", |f| f.name);
    vec![
        (keys::ARCHITECTURE.into(), cfg.architecture.clone()),
        (keys::FAMILY.into(), family.into()),
        (
            keys::OUTPUT.into(),
            output_kind_name(model.output_kind()).into(),
        ),
        (keys::NUM_CLASSES.into(), cfg.num_classes.to_string()),
        (keys::DATA_CONFIG.into(), data_config.to_string()),
        (keys::LABEL_NAMES.into(), labels.to_string()),
        (keys::CONFIG.into(), cfg.resolved_json().to_string()),
    ]
}

/// Writes the graph `model` runs to `path` as a standard ONNX file.
pub fn export_onnx(model: &Model, path: &Path) -> Result<Exported> {
    if path.as_os_str().is_empty() {
        return Err(Error::invalid_argument("the export path is empty"));
    }
    if path.is_dir() {
        return Err(Error::invalid_argument(format!(
            "{} is a folder; the export path names the .onnx file to write",
            path.display()
        )));
    }
    let external = model.options().export_external_data;
    let meta = metadata(model);
    match (model.graph_kind(), model.onnx_file()) {
        (GraphKind::Onnx, Some(onnx)) => {
            let g = folder::read(onnx)?;
            let input = g
                .inputs
                .first()
                .cloned()
                .ok_or_else(|| Error::invalid_model("model.onnx has no graph input"))?;
            let dir = onnx.parent().unwrap_or(Path::new("."));
            let mut opened = Vec::new();
            let m = folder::model(&g, dir, onnx, &meta, &mut opened)?;
            let external_data = onnx_writer::write(&m, path, external)?;
            Ok(Exported {
                input,
                outputs: g.outputs.clone(),
                external_data,
            })
        }
        _ => export_native(model, path, &meta, external),
    }
}

/// The graph's outputs with a symbolic batch; feature maps have symbolic H/W when the graph
/// takes any size, else the size they have at the graph's input size.
fn graph_outputs(g: &Graph) -> Vec<Io> {
    let fixed_hw = match g.input_chw {
        [_, Some(h), Some(w)] => Some((h as usize, w as usize)),
        _ => None,
    };
    g.outputs
        .iter()
        .map(|o| {
            let mut dims = vec![Dim::Symbolic("batch".into())];
            match &o.shape {
                OutputShape::Vector(d) => dims.push(Dim::Fixed(*d as i64)),
                OutputShape::Tokens { tokens, dim } => {
                    dims.push(Dim::Fixed(*tokens as i64));
                    dims.push(Dim::Fixed(*dim as i64));
                }
                OutputShape::Map { channels, spatial } => {
                    dims.push(Dim::Fixed(*channels as i64));
                    match fixed_hw.and_then(|(h, w)| Some((spatial.eval(h)?, spatial.eval(w)?))) {
                        Some((h, w)) => {
                            dims.push(Dim::Fixed(h as i64));
                            dims.push(Dim::Fixed(w as i64));
                        }
                        None => {
                            dims.push(Dim::Symbolic(format!("{}_height", o.name)));
                            dims.push(Dim::Symbolic(format!("{}_width", o.name)));
                        }
                    }
                }
            }
            Io {
                name: o.name.clone(),
                dims,
            }
        })
        .collect()
}

fn export_native(
    model: &Model,
    path: &Path,
    meta: &[(String, String)],
    external: bool,
) -> Result<Exported> {
    let cfg = model.config();
    let weights = model.native_weights();
    let opts = model.options();
    let [_, h, w] = model.input_size();
    let source = match weights {
        Some(w) => ParamSource::Weights(w),
        None => ParamSource::Random(graph::rng::Rng::new(opts.seed)),
    };
    let g = graph::build(cfg, source, &crate::model::request(opts), (h, w))?;
    let native = native_onnx(&g, weights, &cfg.architecture, model.input_size(), meta)?;
    let external_data = onnx_writer::write(&native.model, path, external)?;
    Ok(Exported {
        input: native.input,
        outputs: native.outputs,
        external_data,
    })
}

/// A native graph as a standard ONNX model, ready for the writer (to a file, or to memory for
/// engines that read ONNX bytes, such as the OpenVINO backend).
pub struct NativeOnnx<'a> {
    pub input: Io,
    pub outputs: Vec<Io>,
    pub model: onnx_writer::Model<'a>,
}

/// Rewrites native graph `g` (built at `chw`) to portable opset-17 ONNX; weight tensors borrow
/// from `weights` and are written in their stored type.
pub fn native_onnx<'a>(
    g: &Graph,
    weights: Option<&'a Weights>,
    architecture: &str,
    chw: [usize; 3],
    meta: &[(String, String)],
) -> Result<NativeOnnx<'a>> {
    let [c, h, w] = chw.map(|d| d as i64);
    let spatial = |v: i64, name: &str| {
        if g.input_chw[1].is_none() {
            Dim::Symbolic(name.into())
        } else {
            Dim::Fixed(v)
        }
    };
    let input = Io {
        name: g.input_name.clone(),
        dims: vec![
            Dim::Symbolic("batch".into()),
            Dim::Fixed(c),
            spatial(h, "height"),
            spatial(w, "width"),
        ],
    };
    let outputs = graph_outputs(g);

    let known = portable::Known {
        dims: g
            .initializers
            .iter()
            .map(|i| (i.name.as_str(), i.dims.as_slice()))
            .collect(),
        ints: g
            .initializers
            .iter()
            .filter_map(|i| match &i.data {
                InitData::I64(v) => Some((i.name.as_str(), v.as_slice())),
                _ => None,
            })
            .collect::<HashMap<_, _>>(),
        scalars: g
            .initializers
            .iter()
            .filter_map(|i| match &i.data {
                InitData::F32(v) if v.len() == 1 => Some((i.name.as_str(), v[0])),
                _ => None,
            })
            .collect(),
    };
    let p = portable::rewrite(&g.nodes, &known)?;
    // Constants the rewrite made unused (reduce axes now attributes) are left out.
    let used: HashSet<&str> = p
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().map(String::as_str))
        .collect();

    let mut graph_msg = Msg::new();
    for n in &p.nodes {
        graph_msg.msg(1, &onnx_writer::node(n));
    }
    graph_msg.str(2, architecture);
    graph_msg.msg(11, &onnx_writer::value_info(&input));
    for o in &outputs {
        graph_msg.msg(12, &onnx_writer::value_info(o));
    }
    let mut tensors = Vec::with_capacity(g.initializers.len() + p.consts.len());
    for init in g
        .initializers
        .iter()
        .filter(|i| used.contains(i.name.as_str()))
    {
        tensors.push(match &init.data {
            InitData::Weight(name) => weight_tensor(weights, name, &init.name, &init.dims)?,
            InitData::F32(v) => Tensor::new(
                &init.name,
                &init.dims,
                FLOAT,
                Data::Owned(graph::f32_bytes(v).to_vec()),
            ),
            InitData::I64(v) => Tensor::new(
                &init.name,
                &init.dims,
                INT64,
                Data::Owned(graph::i64_bytes(v).to_vec()),
            ),
        });
    }
    for k in p.consts.iter().filter(|k| used.contains(k.name.as_str())) {
        let (ty, bytes) = match &k.data {
            portable::ConstData::F32(v) => (FLOAT, graph::f32_bytes(v).to_vec()),
            portable::ConstData::I64(v) => (INT64, graph::i64_bytes(v).to_vec()),
        };
        tensors.push(Tensor::new(&k.name, &k.dims, ty, Data::Owned(bytes)));
    }
    let model = onnx_writer::Model {
        head: onnx_writer::model_head(&[("", portable::OPSET)], meta),
        graph: graph_msg,
        tensors,
    };
    Ok(NativeOnnx {
        input,
        outputs,
        model,
    })
}

/// A weights-file tensor in its stored type (the graph casts non-f32 ones itself).
pub(crate) fn weight_tensor<'a>(
    weights: Option<&'a Weights>,
    name: &str,
    init_name: &str,
    dims: &[i64],
) -> Result<Tensor<'a>> {
    let w = weights
        .ok_or_else(|| Error::internal("a native graph references weights but none were loaded"))?;
    let info = w
        .get(name)
        .ok_or_else(|| Error::invalid_model(format!("weights have no tensor `{name}`")))?;
    let ty = match info.dtype {
        DType::F32 => FLOAT,
        DType::F16 => FLOAT16,
        DType::BF16 => BFLOAT16,
        DType::F64 => DOUBLE,
        other => {
            return Err(Error::invalid_model(format!(
                "weight `{name}` has dtype {other:?}; expected float"
            )))
        }
    };
    Ok(Tensor::new(
        init_name,
        dims,
        ty,
        Data::Weight(w, info.clone()),
    ))
}
