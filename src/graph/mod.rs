//! Native graphs: ONNX graphs built in memory from a timm architecture name, its config and its
//! weights, with no export step.
//!
//! A family builder (one file per timm model family) works on a [`Builder`]: it asks for
//! parameters by timm's state-dict names ([`Builder::param`]), adds ONNX nodes, and returns the
//! output value. Parameters come from the mapped safetensors file (zero-copy where ONNX Runtime
//! allows) or, for `pretrained=false`, from a seeded timm-style initialisation; either way the
//! shape the architecture expects is checked. [`crate::runtime`] turns the finished [`Graph`]
//! into a session.

pub mod convnext;
pub mod efficientnet;
pub mod layers;
pub mod regnet;
pub mod resnet;
pub mod rng;
pub mod vit;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::weights::{DType, Weights};

/// ONNX opset of the default domain used by every native graph (LayerNormalization needs 17,
/// Gelu 20).
pub const OPSET: u32 = 21;
/// Opset of ONNX Runtime's contrib domain `com.microsoft`, for fused operators.
pub const MS_DOMAIN: &str = "com.microsoft";
pub const MS_OPSET: u32 = 1;

/// What the model returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// Classifier logits, `[N, num_classes]`.
    Logits,
    /// timm's `forward_head(pre_logits=True)`, `[N, num_features]`.
    Features,
}

/// An ONNX attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Floats(Vec<f32>),
    Str(String),
}

/// A named value in the graph (a graph input, an initializer or a node output).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Value(pub(crate) Arc<str>);

impl Value {
    pub fn name(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub op: String,
    pub domain: String,
    pub name: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: Vec<(String, Attr)>,
}

/// Where an initializer's data comes from.
#[derive(Debug, Clone)]
pub enum InitData {
    /// A tensor of the weights file, by its name there; its dtype is kept (a Cast follows when
    /// it is not f32) so the mapped bytes can be used in place.
    Weight(String),
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Debug, Clone)]
pub struct Initializer {
    pub name: String,
    pub dims: Vec<i64>,
    pub data: InitData,
}

/// A finished graph: one float input `[N, C, H, W]` and one float output `[N, D]`.
#[derive(Debug, Clone)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub initializers: Vec<Initializer>,
    pub input_name: String,
    /// `[C, H, W]`; `None` for H/W means any size is accepted.
    pub input_chw: [Option<i64>; 3],
    pub output_name: String,
    pub output_dim: usize,
}

/// How parameters a family asks for are initialised when there are no weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    /// A constant, e.g. layer-scale init values.
    Const(f32),
    Normal(f32),
    /// timm's `trunc_normal_(std)`, truncated at ±2.
    TruncNormal(f32),
    /// `kaiming_normal_(mode='fan_out', nonlinearity='relu')` for convs: std = sqrt(2 / fan_out).
    KaimingFanOut,
    /// PyTorch's default Linear/Conv init: uniform(±1/sqrt(fan_in)).
    DefaultUniform,
}

/// Where parameters come from.
pub enum ParamSource<'w> {
    Weights(&'w Weights),
    Random(rng::Rng),
}

/// Builds a [`Graph`]; family code calls it with timm's names.
pub struct Builder<'w> {
    source: ParamSource<'w>,
    nodes: Vec<Node>,
    initializers: Vec<Initializer>,
    params: HashMap<String, Value>,
    used: std::collections::HashSet<String>,
    counter: usize,
    input: Value,
    input_chw: [Option<i64>; 3],
}

impl<'w> Builder<'w> {
    /// `input_chw`: the input size the graph declares; `None` for a free spatial dimension.
    pub fn new(source: ParamSource<'w>, input_chw: [Option<i64>; 3]) -> Self {
        Builder {
            source,
            nodes: Vec::new(),
            initializers: Vec::new(),
            params: HashMap::new(),
            used: Default::default(),
            counter: 0,
            input: Value(Arc::from("input")),
            input_chw,
        }
    }

    /// The graph input, `[N, C, H, W]` float.
    pub fn input(&self) -> Value {
        self.input.clone()
    }

    /// Whether parameters come from weights (structure can be read from them).
    pub fn weights(&self) -> Option<&'w Weights> {
        match self.source {
            ParamSource::Weights(w) => Some(w),
            ParamSource::Random(_) => None,
        }
    }

    /// The shape of a weight, if the parameters come from a weights file that has it.
    pub fn weight_shape(&self, name: &str) -> Option<Vec<usize>> {
        self.weights()
            .and_then(|w| w.get(name))
            .map(|t| t.shape.clone())
    }

    pub fn has_weight(&self, name: &str) -> bool {
        self.weights().is_some_and(|w| w.contains(name))
    }

    /// A parameter by timm's state-dict name, checked against the shape the architecture needs.
    /// From weights it is used in place (a Cast to f32 is added for f16/bf16 files); without
    /// weights it is initialised with `init`.
    pub fn param(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Value> {
        if let Some(v) = self.params.get(name) {
            return Ok(v.clone());
        }
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let value = match &mut self.source {
            ParamSource::Weights(w) => {
                let info = w.get(name).ok_or_else(|| {
                    Error::invalid_model(format!(
                        "weights {} have no tensor `{name}` (shape {shape:?}) that this architecture needs",
                        w.path().display()
                    ))
                })?;
                if info.shape != shape {
                    return Err(Error::invalid_model(format!(
                        "weight `{name}` has shape {:?} but the architecture needs {shape:?}",
                        info.shape
                    )));
                }
                let dtype = info.dtype;
                let stored = Value(Arc::from(format!("w:{name}")));
                self.initializers.push(Initializer {
                    name: stored.0.to_string(),
                    dims,
                    data: InitData::Weight(name.to_string()),
                });
                self.used.insert(name.to_string());
                match dtype {
                    DType::F32 => stored,
                    DType::F16 | DType::BF16 | DType::F64 => {
                        self.op("Cast", &[&stored], vec![("to", Attr::Int(1))])
                    }
                    other => {
                        return Err(Error::invalid_model(format!(
                            "weight `{name}` has dtype {other:?}; expected a float tensor"
                        )))
                    }
                }
            }
            ParamSource::Random(rng) => {
                let data = rng.init(init, shape);
                let v = Value(Arc::from(format!("w:{name}")));
                self.initializers.push(Initializer {
                    name: v.0.to_string(),
                    dims,
                    data: InitData::F32(data),
                });
                v
            }
        };
        self.params.insert(name.to_string(), value.clone());
        Ok(value)
    }

    /// A constant f32 tensor.
    pub fn const_f32(&mut self, data: Vec<f32>, dims: &[i64]) -> Value {
        let v = self.fresh("c");
        self.initializers.push(Initializer {
            name: v.0.to_string(),
            dims: dims.to_vec(),
            data: InitData::F32(data),
        });
        v
    }

    /// A constant i64 tensor (shapes, axes).
    pub fn const_i64(&mut self, data: Vec<i64>, dims: &[i64]) -> Value {
        let v = self.fresh("c");
        self.initializers.push(Initializer {
            name: v.0.to_string(),
            dims: dims.to_vec(),
            data: InitData::I64(data),
        });
        v
    }

    /// Adds a default-domain node with one output.
    pub fn op(&mut self, op: &str, inputs: &[&Value], attrs: Vec<(&str, Attr)>) -> Value {
        self.op_n(op, "", inputs, attrs, 1).remove(0)
    }

    /// Adds a node in `domain` with `n_outputs` outputs. An empty input name is an omitted
    /// optional input.
    pub fn op_n(
        &mut self,
        op: &str,
        domain: &str,
        inputs: &[&Value],
        attrs: Vec<(&str, Attr)>,
        n_outputs: usize,
    ) -> Vec<Value> {
        let outputs: Vec<Value> = (0..n_outputs).map(|_| self.fresh(op)).collect();
        self.nodes.push(Node {
            op: op.to_string(),
            domain: domain.to_string(),
            name: format!("{}_{}", op, self.nodes.len()),
            inputs: inputs.iter().map(|v| v.0.to_string()).collect(),
            outputs: outputs.iter().map(|v| v.0.to_string()).collect(),
            attrs: attrs.into_iter().map(|(k, a)| (k.to_string(), a)).collect(),
        });
        outputs
    }

    /// An omitted optional input.
    pub fn none(&self) -> Value {
        Value(Arc::from(""))
    }

    fn fresh(&mut self, hint: &str) -> Value {
        self.counter += 1;
        Value(Arc::from(format!("{hint}_{}", self.counter)))
    }

    /// Finishes the graph with `output` (`[N, output_dim]`) as its only output.
    pub fn finish(mut self, output: Value, output_dim: usize) -> Result<Graph> {
        // Name the output `output` with an Identity so callers see a stable name.
        let out = Value(Arc::from("output"));
        self.nodes.push(Node {
            op: "Identity".into(),
            domain: String::new(),
            name: "output_identity".into(),
            inputs: vec![output.0.to_string()],
            outputs: vec![out.0.to_string()],
            attrs: vec![],
        });
        Ok(Graph {
            nodes: self.nodes,
            initializers: self.initializers,
            input_name: self.input.0.to_string(),
            input_chw: self.input_chw,
            output_name: out.0.to_string(),
            output_dim,
        })
    }

    /// Names in the weights file that the graph did not use (other than buffers timm keeps
    /// but inference ignores); a non-empty list means the architecture guess was wrong.
    pub fn unused_weights(&self) -> Vec<String> {
        let Some(w) = self.weights() else {
            return vec![];
        };
        let mut v: Vec<String> = w
            .names()
            .filter(|n| !self.used.contains(*n) && !n.ends_with("num_batches_tracked"))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }
}

/// A family of timm architectures built natively.
pub struct Family {
    pub name: &'static str,
    /// timm architecture names (or prefixes) this family builds, for messages.
    pub examples: &'static str,
    pub matches: fn(&str) -> bool,
    pub build: fn(&mut Builder, &ModelConfig, OutputKind) -> Result<(Value, usize)>,
    /// timm's config for a bare architecture name (what `timm.create_model(name)` would use,
    /// in config.json form), for models created without a folder.
    pub default_config: fn(&str) -> Option<serde_json::Value>,
}

/// Every family this build knows.
pub fn families() -> &'static [Family] {
    &[
        resnet::FAMILY,
        Family {
            name: "efficientnet",
            examples: efficientnet::EXAMPLES,
            matches: efficientnet::matches,
            build: efficientnet::build,
            default_config: efficientnet::default_config,
        },
        convnext::FAMILY,
        regnet::FAMILY,
        vit::FAMILY,
    ]
}

/// The family that builds `arch`, if any.
pub fn family_for(arch: &str) -> Option<&'static Family> {
    families().iter().find(|f| (f.matches)(arch))
}

/// Lists supported families for error messages.
pub fn supported_list() -> String {
    let f = families();
    if f.is_empty() {
        return "none in this build".into();
    }
    f.iter()
        .map(|f| format!("{} ({})", f.name, f.examples))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Builds the native graph for `cfg.architecture`.
pub fn build(
    cfg: &ModelConfig,
    source: ParamSource<'_>,
    output: OutputKind,
    input_chw: [Option<i64>; 3],
) -> Result<Graph> {
    let family = family_for(&cfg.architecture).ok_or_else(|| {
        Error::unsupported(format!(
            "architecture `{}` has no native graph builder; supported families: {}",
            cfg.architecture,
            supported_list()
        ))
    })?;
    let mut b = Builder::new(source, input_chw);
    let (out, dim) = (family.build)(&mut b, cfg, output)
        .map_err(|e| e.context(format!("building `{}`", cfg.architecture)))?;
    if output == OutputKind::Logits {
        let unused = b.unused_weights();
        if !unused.is_empty() {
            let shown: Vec<_> = unused.iter().take(8).cloned().collect();
            return Err(Error::invalid_model(format!(
                "the weights hold {} tensor(s) the `{}` graph does not use ({}{}); they were probably saved from a different architecture or model_args",
                unused.len(),
                cfg.architecture,
                shown.join(", "),
                if unused.len() > shown.len() { ", ..." } else { "" }
            )));
        }
    }
    b.finish(out, dim)
}
