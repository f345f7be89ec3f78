//! [`Builder`]: nodes, initializers and parameters by timm's state-dict names, in scopes.
//!
//! A family asks for `"weight"` inside `b.scope("stages").scope(2).scope("conv")` and gets the
//! tensor `stages.2.conv.weight`; error messages always print the full key. The builder also
//! records where timm's `feature_info` points ([`Builder::feature`]), how each value's spatial
//! size follows from the input's ([`Spatial`]), and the model's size against the budget, so a
//! hostile `model_args` is refused before anything large is allocated.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::budget::Budget;
use super::spatial::{Fit, Spatial, Step};
use super::{rng, Attr, FeatureInfo, InitData, Initializer, Node, Request, Value};
use crate::error::{Error, Result};
use crate::weights::{DType, Weights};

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
    /// Shapes only: the dry run that measures the model against the budget. Values read for
    /// load-time transforms are zeros.
    Shapes,
}

/// One `feature_info` entry and the value that carries it.
#[derive(Debug, Clone)]
pub(crate) struct Tap {
    pub value: Value,
    pub info: FeatureInfo,
}

pub struct Builder<'w> {
    source: ParamSource<'w>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) initializers: Vec<Initializer>,
    params: HashMap<String, Value>,
    used: HashSet<String>,
    counter: usize,
    input: Value,
    input_chw: [Option<i64>; 3],
    prefix: String,
    pub(crate) taps: Vec<Tap>,
    pub(crate) default_out_indices: Option<Vec<i64>>,
    spatial: HashMap<Value, Spatial>,
    /// Every spatial chain recorded: an input one of them maps to nothing is too small.
    pub(crate) fit: Fit,
    pub(crate) budget: Budget,
    request: Request,
    /// Request fields the family read; one it never read is refused as unsupported.
    pub(crate) consumed: HashSet<&'static str>,
    /// The budget's dry run: shapes are checked and counted, no data is read or made.
    dry: bool,
    /// Set by [`Builder::fix_input_size`]: the graph takes one size even when not asked to.
    pub(crate) size_fixed_by_layer: bool,
    /// Set by [`Builder::token_output`]: the family's output is a `[N, T, D]` token sequence.
    pub(crate) token_count: Option<usize>,
}

/// A named scope: derefs to the [`Builder`]; names asked for inside it get its prefix. Dropping
/// it returns to the enclosing scope.
pub struct Scope<'a, 'w> {
    b: &'a mut Builder<'w>,
    restore: usize,
}

impl<'w> Deref for Scope<'_, 'w> {
    type Target = Builder<'w>;
    fn deref(&self) -> &Builder<'w> {
        self.b
    }
}

impl<'w> DerefMut for Scope<'_, 'w> {
    fn deref_mut(&mut self) -> &mut Builder<'w> {
        self.b
    }
}

impl Drop for Scope<'_, '_> {
    fn drop(&mut self) {
        self.b.prefix.truncate(self.restore);
    }
}

impl<'w> Builder<'w> {
    /// `input_chw`: the input size the graph declares; `None` for a free spatial dimension.
    /// `budget_hw`: the spatial size the budget is measured at (the size preprocessing feeds).
    pub fn new(
        source: ParamSource<'w>,
        input_chw: [Option<i64>; 3],
        request: Request,
        budget: Budget,
    ) -> Self {
        let input = Value(Arc::from("input"));
        let mut spatial = HashMap::new();
        spatial.insert(input.clone(), Spatial::input());
        Builder {
            source,
            nodes: Vec::new(),
            initializers: Vec::new(),
            params: HashMap::new(),
            used: Default::default(),
            counter: 0,
            input,
            input_chw,
            prefix: String::new(),
            taps: Vec::new(),
            default_out_indices: None,
            spatial,
            fit: Fit::default(),
            budget,
            request,
            consumed: HashSet::new(),
            dry: false,
            size_fixed_by_layer: false,
            token_count: None,
        }
    }

    /// A builder for the dry run: the same structure decisions (weights' shapes are visible),
    /// no tensor data read or generated.
    pub fn dry_run(mut self) -> Self {
        self.dry = true;
        self
    }

    fn is_dry(&self) -> bool {
        self.dry || matches!(self.source, ParamSource::Shapes)
    }

    // -----------------------------------------------------------------------------------------
    // scopes and names

    /// Enters `name` (a module name or a block index): `b.scope("blocks").scope(3)`.
    pub fn scope(&mut self, name: impl Display) -> Scope<'_, 'w> {
        let restore = self.prefix.len();
        let name = name.to_string();
        if !name.is_empty() {
            if !self.prefix.is_empty() {
                self.prefix.push('.');
            }
            self.prefix.push_str(&name);
        }
        Scope { b: self, restore }
    }

    /// The full timm key of `name` in the current scope.
    pub fn key(&self, name: &str) -> String {
        match (self.prefix.is_empty(), name.is_empty()) {
            (true, _) => name.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}.{name}", self.prefix),
        }
    }

    /// The current scope's own name (timm's module path), for `feature_info`.
    pub fn path(&self) -> &str {
        &self.prefix
    }

    // -----------------------------------------------------------------------------------------
    // what was asked for

    /// The graph input, `[N, C, H, W]` float.
    pub fn input(&self) -> Value {
        self.input.clone()
    }

    /// `[C, H, W]` the graph declares (`None`: any size).
    pub fn input_chw(&self) -> [Option<i64>; 3] {
        self.input_chw
    }

    /// Declares the graph's input at the size it is built for, for a layer sized at build time
    /// (relative-position tables, fixed reshapes) inside a family that otherwise takes any size:
    /// another size is then refused when the model is run, never a failure inside the runtime.
    pub fn fix_input_size(&mut self) {
        self.size_fixed_by_layer = true;
        let (h, w) = self.nominal_hw();
        self.input_chw[1].get_or_insert(h as i64);
        self.input_chw[2].get_or_insert(w as i64);
    }

    /// The spatial size the model is measured at: the fixed input size, or the size
    /// preprocessing produces when the graph takes any size.
    pub fn nominal_hw(&self) -> (usize, usize) {
        self.budget.hw
    }

    pub fn output(&self) -> super::OutputKind {
        self.request.output
    }

    /// Declares the value the family returns to be a sequence of `tokens` tokens per image
    /// (option `output=tokens`). The graph is then built for one input size.
    pub fn token_output(&mut self, tokens: usize) {
        self.token_count = Some(tokens);
        self.fix_input_size();
    }

    /// Requested `output_stride`; reading it tells the builder the family implements it.
    pub fn output_stride(&mut self) -> Option<usize> {
        self.consumed.insert("output_stride");
        self.request.output_stride
    }

    /// Whether timm's `dynamic_img_size` was asked for; reading it marks it implemented.
    pub fn dynamic_img_size(&mut self) -> bool {
        self.consumed.insert("dynamic_img_size");
        self.request.dynamic_img_size
    }

    /// The input size to build a fixed-size transformer at (`input_size` option or config).
    pub fn image_size(&self) -> (usize, usize) {
        self.budget.hw
    }

    // -----------------------------------------------------------------------------------------
    // weights

    /// Whether parameters come from weights (structure can be read from them).
    pub fn weights(&self) -> Option<&'w Weights> {
        match self.source {
            ParamSource::Weights(w) => Some(w),
            _ => None,
        }
    }

    /// The shape of `name` (in the current scope) in the weights file, if there is one.
    pub fn weight_shape(&self, name: &str) -> Option<Vec<usize>> {
        let key = self.key(name);
        self.weights()
            .and_then(|w| w.get(&key))
            .map(|t| t.shape.clone())
    }

    /// Whether the weights file holds `name` (in the current scope).
    pub fn has_weight(&self, name: &str) -> bool {
        let key = self.key(name);
        self.weights().is_some_and(|w| w.contains(&key))
    }

    /// Whether any tensor of the weights file starts with this scope's `name.` prefix.
    pub fn has_module(&self, name: &str) -> bool {
        let key = format!("{}.", self.key(name));
        self.weights()
            .is_some_and(|w| w.names().any(|n| n.starts_with(&key)))
    }

    /// A parameter by its name in the current scope, checked against the shape the architecture
    /// needs. From weights it is used in place (a Cast to f32 follows for f16/bf16 files);
    /// without weights it is initialised with `init`.
    pub fn param(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Value> {
        let key = self.key(name);
        if let Some(v) = self.params.get(&key) {
            return Ok(v.clone());
        }
        let dims = self.budget.param(&key, shape)?;
        let stored = Value(Arc::from(format!("w:{key}")));
        let dry = self.is_dry();
        let value = match &mut self.source {
            ParamSource::Weights(w) => {
                let dtype = check_weight(w, &key, shape)?;
                self.initializers.push(Initializer {
                    name: stored.0.to_string(),
                    dims,
                    data: InitData::Weight(key.clone()),
                });
                self.used.insert(key.clone());
                if dtype == DType::F32 {
                    stored
                } else {
                    self.op("Cast", &[&stored], vec![("to", Attr::Int(1))])
                }
            }
            ParamSource::Random(rng) if !dry => {
                let data = rng
                    .try_init(init, shape)
                    .ok_or_else(|| no_memory(&key, shape))?;
                self.initializers.push(Initializer {
                    name: stored.0.to_string(),
                    dims,
                    data: InitData::F32(data),
                });
                stored
            }
            ParamSource::Random(_) | ParamSource::Shapes => {
                self.initializers.push(Initializer {
                    name: stored.0.to_string(),
                    dims,
                    data: InitData::F32(Vec::new()),
                });
                stored
            }
        };
        self.params.insert(key, value.clone());
        Ok(value)
    }

    /// The values of a parameter, for load-time transforms (BatchNorm folding, re-parameterised
    /// branches, weight standardisation). The tensor counts as used; the caller adds the
    /// transformed result with [`Builder::tensor`].
    pub fn read(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Vec<f32>> {
        let key = self.key(name);
        self.budget.param(&key, shape)?;
        let dry = self.is_dry();
        match &mut self.source {
            ParamSource::Weights(w) => {
                check_weight(w, &key, shape)?;
                self.used.insert(key.clone());
                if dry {
                    Ok(vec![0.0; shape.iter().product()])
                } else {
                    // The copy and its conversion must not abort the host when memory is short.
                    let n: usize = shape.iter().product();
                    let mut probe: Vec<f32> = Vec::new();
                    probe
                        .try_reserve_exact(n.saturating_mul(2))
                        .map_err(|_| no_memory(&key, shape))?;
                    drop(probe);
                    w.to_f32(&key)
                }
            }
            ParamSource::Random(rng) if !dry => rng
                .try_init(init, shape)
                .ok_or_else(|| no_memory(&key, shape)),
            ParamSource::Random(_) | ParamSource::Shapes => Ok(vec![0.0; shape.iter().product()]),
        }
    }

    /// Like [`Builder::read`] for a parameter that may be absent from the weights (an optional
    /// bias): `None` when the file lacks it; with random weights, `present` decides.
    pub fn read_opt(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        present: bool,
    ) -> Result<Option<Vec<f32>>> {
        let exists = match self.source {
            ParamSource::Weights(_) => self.has_weight(name),
            _ => present,
        };
        if exists {
            self.read(name, shape, init).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A computed f32 tensor (a transformed weight): named after its key in this scope.
    pub fn tensor(&mut self, name: &str, data: Vec<f32>, shape: &[usize]) -> Result<Value> {
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let v = self.fresh(&format!("t:{}", self.key(name)));
        let data = if self.is_dry() { Vec::new() } else { data };
        self.initializers.push(Initializer {
            name: v.0.to_string(),
            dims,
            data: InitData::F32(data),
        });
        Ok(v)
    }

    /// The dims of `v` when it is an initializer (a weight or a constant computed at load);
    /// `None` for a value computed by the graph.
    pub fn initializer_dims(&self, v: &Value) -> Option<&[i64]> {
        self.initializers
            .iter()
            .rev()
            .find(|i| i.name == v.name())
            .map(|i| i.dims.as_slice())
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

    /// A scalar f32 constant.
    pub fn scalar(&mut self, x: f32) -> Value {
        self.const_f32(vec![x], &[])
    }

    /// A constant i64 tensor (shapes, axes, indices).
    pub fn const_i64(&mut self, data: Vec<i64>, dims: &[i64]) -> Value {
        let v = self.fresh("c");
        self.initializers.push(Initializer {
            name: v.0.to_string(),
            dims: dims.to_vec(),
            data: InitData::I64(data),
        });
        v
    }

    /// A 1-D i64 constant.
    pub fn ints(&mut self, data: &[i64]) -> Value {
        self.const_i64(data.to_vec(), &[data.len() as i64])
    }

    // -----------------------------------------------------------------------------------------
    // nodes

    /// Adds a default-domain node with one output.
    pub fn op(&mut self, op: &str, inputs: &[&Value], attrs: Vec<(&str, Attr)>) -> Value {
        self.op_n(op, "", inputs, attrs, 1).remove(0)
    }

    /// Adds a node of ONNX Runtime's `com.microsoft` domain with one output.
    pub fn ms_op(&mut self, op: &str, inputs: &[&Value], attrs: Vec<(&str, Attr)>) -> Value {
        self.op_n(op, super::MS_DOMAIN, inputs, attrs, 1).remove(0)
    }

    /// Adds a node in `domain` with `n_outputs` outputs. An empty input name is an omitted
    /// optional input. Outputs inherit the first input's spatial size; layers that change it
    /// say so with [`Builder::set_spatial`].
    pub fn op_n(
        &mut self,
        op: &str,
        domain: &str,
        inputs: &[&Value],
        attrs: Vec<(&str, Attr)>,
        n_outputs: usize,
    ) -> Vec<Value> {
        self.budget.node();
        let outputs: Vec<Value> = (0..n_outputs).map(|_| self.fresh(op)).collect();
        if let Some(s) = inputs.first().and_then(|x| self.spatial.get(*x)).cloned() {
            for o in &outputs {
                self.spatial.insert(o.clone(), s.clone());
            }
        }
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

    // -----------------------------------------------------------------------------------------
    // spatial sizes, activations and feature maps

    /// The spatial size of `x` relative to the input, if known.
    pub fn spatial(&self, x: &Value) -> Option<&Spatial> {
        self.spatial.get(x)
    }

    /// Records that `y` is `x` after a spatial `step` (a conv or pool), and measures the
    /// activation `[N, channels, H', W']` against the budget at the nominal input size.
    pub fn set_spatial(&mut self, y: &Value, x: &Value, step: Step, channels: usize) -> Result<()> {
        let Some(s) = self.spatial.get(x).cloned() else {
            return Ok(());
        };
        let s = s.then(step);
        let (h, w) = self.budget.hw;
        match (s.eval(h), s.eval(w)) {
            (Some(oh), Some(ow)) => self.budget.activation(&[channels, oh, ow])?,
            _ => {
                return Err(Error::invalid_argument(format!(
                    "input {h}x{w} is too small for this model: a layer's output would be empty"
                )))
            }
        }
        self.fit.push(s.clone());
        self.spatial.insert(y.clone(), s);
        Ok(())
    }

    /// Gives `y` an explicit spatial size (a token grid reshaped back to NCHW).
    pub fn assign_spatial(&mut self, y: &Value, s: Spatial) {
        self.spatial.insert(y.clone(), s);
    }

    /// Measures an activation of `shape` (per image) against the budget.
    pub fn activation(&mut self, shape: &[usize]) -> Result<()> {
        self.budget.activation(shape)
    }

    /// Records a timm `feature_info` entry: `x` (NCHW) is the feature map of `module`, with
    /// `channels` channels at `reduction` × the input stride. Call in timm's order.
    pub fn feature(&mut self, x: &Value, channels: usize, reduction: usize, module: &str) {
        self.taps.push(Tap {
            value: x.clone(),
            info: FeatureInfo {
                channels,
                reduction,
                module: module.to_string(),
            },
        });
    }

    /// Number of feature maps recorded so far.
    pub fn feature_count(&self) -> usize {
        self.taps.len()
    }

    /// timm's default `out_indices` for this architecture when it is not every feature.
    pub fn default_out_indices(&mut self, indices: &[i64]) {
        self.default_out_indices = Some(indices.to_vec());
    }

    /// Names in the weights file that the graph did not use (other than buffers timm keeps but
    /// inference ignores); a non-empty list means the architecture guess was wrong.
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

    /// Marks weights timm keeps but this graph computes at load (index buffers, masks).
    pub fn ignore_weight(&mut self, name: &str) {
        let key = self.key(name);
        self.used.insert(key);
    }
}

fn no_memory(key: &str, shape: &[usize]) -> Error {
    Error::runtime(format!(
        "cannot allocate memory for parameter `{key}` {shape:?}: the process is out of memory (or under an address-space limit)"
    ))
}

fn check_weight(w: &Weights, key: &str, shape: &[usize]) -> Result<DType> {
    let info = w.get(key).ok_or_else(|| {
        Error::invalid_model(format!(
            "weights {} have no tensor `{key}` (shape {shape:?}) that this architecture needs",
            w.path().display()
        ))
    })?;
    if info.shape != shape {
        return Err(Error::invalid_model(format!(
            "weight `{key}` has shape {:?} but the architecture needs {shape:?}",
            info.shape
        )));
    }
    match info.dtype {
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => Ok(info.dtype),
        other => Err(Error::invalid_model(format!(
            "weight `{key}` has dtype {other:?}; expected a float tensor"
        ))),
    }
}
