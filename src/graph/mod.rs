//! Native graphs: ONNX graphs built in memory from a timm architecture name, its config and its
//! weights, with no export step.
//!
//! Layout, after timm itself: [`layers`] holds timm's building blocks (`timm.layers`: convs and
//! norms, activations, squeeze-excite, MLPs, attention, patch embedding, pooling, heads), each
//! written once; [`families`] holds one file per timm model module with that module's structure
//! and nothing else; [`builder`] gives both scoped parameter names, [`args`] the one typed
//! reader of `model_args`, [`tables`] the architecture tables generated from timm's registry and
//! [`transforms`] the load-time weight transforms (BatchNorm folding, re-parameterisation).
//! Data flows down: families use layers, layers use the builder; no family imports another.

pub mod args;
pub mod budget;
pub mod builder;
pub mod families;
pub mod layers;
pub mod rng;
pub mod spatial;
pub mod tables;
pub mod transforms;

use std::collections::HashSet;
use std::sync::Arc;

pub use builder::{Builder, Init, ParamSource, Scope};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use spatial::Spatial;

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
    /// timm's `features_only=True`: one `[N, C, H, W]` map per selected `feature_info` entry.
    FeatureMaps,
    /// The token sequence `[N, T, D]` an encoder tower's `forward` returns (the `*_enc` VLM
    /// towers, which have no `forward_head`): what a language model consumes.
    Tokens,
}

/// What the caller asked the graph to be, beyond the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub output: OutputKind,
    /// timm's `out_indices` (indices into `feature_info`, negative from the end).
    pub out_indices: Option<Vec<i64>>,
    /// timm's `output_stride` (dilated stages), where the family supports it.
    pub output_stride: Option<usize>,
    /// timm's `dynamic_img_size=True`: any input size, position embeddings resampled per call.
    pub dynamic_img_size: bool,
    /// Largest parameter count accepted (option `max_params`).
    pub max_params: u64,
    /// Declare the input at the nominal size even where the graph could take any size: ONNX
    /// Runtime then optimises a static graph (with symbolic H/W its layout transformer cannot
    /// prove that the residual Adds behind split / concat mixers see equal shapes, and leaves
    /// them unfused). [`Graph::any_size`] still says what the unfixed graph would take.
    pub fixed_size: bool,
}

impl Default for Request {
    fn default() -> Self {
        Request {
            output: OutputKind::Logits,
            out_indices: None,
            fixed_size: false,
            output_stride: None,
            dynamic_img_size: false,
            max_params: budget::DEFAULT_MAX_PARAMS,
        }
    }
}

/// timm's `feature_info` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureInfo {
    pub channels: usize,
    /// Input stride of the map (`reduction`).
    pub reduction: usize,
    /// timm's module name (`layer2`, `stages.1`, `blocks.11`).
    pub module: String,
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

/// The bytes of f32 initializer data as ONNX stores them (little-endian, the byte order of every
/// target this library builds for).
pub fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// [`f32_bytes`] for i64 data.
pub fn i64_bytes(v: &[i64]) -> &[u8] {
    bytemuck::cast_slice(v)
}

// The byte views above are ONNX's little-endian layout only on little-endian targets.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "libtimm writes tensor bytes in memory order, which ONNX reads as little-endian"
);

#[derive(Debug, Clone)]
pub struct Initializer {
    pub name: String,
    pub dims: Vec<i64>,
    pub data: InitData,
}

/// The shape of one graph output.
#[derive(Debug, Clone)]
pub enum OutputShape {
    /// `[N, D]`.
    Vector(usize),
    /// `[N, C, H, W]` with H and W following the input's as `spatial` says.
    Map { channels: usize, spatial: Spatial },
    /// `[N, T, D]`: `tokens` per image of width `dim` (families with tokens build one input
    /// size per graph, so T is fixed).
    Tokens { tokens: usize, dim: usize },
}

impl OutputShape {
    /// The output's dims for an input of `h` x `w` and batch `n`; `None` if the input is too
    /// small for it.
    pub fn dims(&self, n: usize, h: usize, w: usize) -> Option<Vec<usize>> {
        match self {
            OutputShape::Vector(d) => Some(vec![n, *d]),
            OutputShape::Map { channels, spatial } => {
                Some(vec![n, *channels, spatial.eval(h)?, spatial.eval(w)?])
            }
            OutputShape::Tokens { tokens, dim } => Some(vec![n, *tokens, *dim]),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GraphOutput {
    pub name: String,
    pub shape: OutputShape,
}

/// A finished graph: one float input `[N, C, H, W]` and one or more float outputs.
#[derive(Debug, Clone)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub initializers: Vec<Initializer>,
    pub input_name: String,
    /// `[C, H, W]`; `None` for H/W means any size is accepted.
    pub input_chw: [Option<i64>; 3],
    pub outputs: Vec<GraphOutput>,
    /// `feature_info` of each output for feature maps (empty otherwise).
    pub feature_info: Vec<FeatureInfo>,
    /// Parameters in the graph (the budget's count).
    pub params: u64,
    /// The spatial chains the graph tracks, to refuse inputs that are too small.
    pub min_input: spatial::Fit,
    /// Whether the graph built without [`Request::fixed_size`] takes any input size.
    pub any_size: bool,
}

/// A family of timm architectures built natively: one per timm model module.
pub struct Family {
    pub name: &'static str,
    /// timm architecture names (or prefixes) this family builds, for messages.
    pub examples: &'static str,
    pub matches: fn(&str) -> bool,
    /// Builds the trunk (recording feature maps with [`Builder::feature`]) and the head for
    /// logits or features; returns the head's output and its width.
    pub build: fn(&mut Builder, &ModelConfig) -> Result<(Value, usize)>,
    /// timm's config for a bare architecture name (what `timm.create_model(name)` would use,
    /// in config.json form), for models created without a folder.
    pub default_config: fn(&str) -> Option<serde_json::Value>,
    /// Whether the graph takes any input size without `dynamic_img_size` (convnets).
    pub any_size: bool,
}

/// The family that builds `arch`, if any.
pub fn family_for(arch: &str) -> Option<&'static Family> {
    families::ALL.iter().copied().find(|f| (f.matches)(arch))
}

/// Lists supported families for error messages.
pub fn supported_list() -> String {
    families::ALL
        .iter()
        .map(|f| format!("{} ({})", f.name, f.examples))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Builds the native graph for `cfg.architecture`: first a dry run that measures the model
/// against the budget without allocating weights, then the graph itself.
pub fn build(
    cfg: &ModelConfig,
    source: ParamSource<'_>,
    request: &Request,
    nominal_hw: (usize, usize),
) -> Result<Graph> {
    let (family, input_chw) = resolve(cfg, request, nominal_hw)?;
    let context = |e: Error| e.context(format!("building `{}`", cfg.architecture));
    let dry_source = match &source {
        ParamSource::Weights(w) => ParamSource::Weights(w),
        _ => ParamSource::Shapes,
    };
    build_with(
        family, cfg, dry_source, true, request, input_chw, nominal_hw,
    )
    .map_err(context)?;
    build_with(family, cfg, source, false, request, input_chw, nominal_hw).map_err(context)
}

/// The graph [`build`] makes, without any weight data: its nodes, outputs, feature maps and
/// smallest input (what a session loaded from the optimised-model cache still needs), checked
/// against the budget. Reads only the weights' shapes.
pub fn build_shapes(
    cfg: &ModelConfig,
    source: ParamSource<'_>,
    request: &Request,
    nominal_hw: (usize, usize),
) -> Result<Graph> {
    let (family, input_chw) = resolve(cfg, request, nominal_hw)?;
    let dry_source = match &source {
        ParamSource::Weights(w) => ParamSource::Weights(w),
        _ => ParamSource::Shapes,
    };
    build_with(
        family, cfg, dry_source, true, request, input_chw, nominal_hw,
    )
    .map_err(|e| e.context(format!("building `{}`", cfg.architecture)))
}

/// The family building `cfg.architecture` and the graph's input `[C, H, W]` (free H, W for
/// families that take any size).
fn resolve(
    cfg: &ModelConfig,
    request: &Request,
    nominal_hw: (usize, usize),
) -> Result<(&'static Family, [Option<i64>; 3])> {
    let family = family_for(&cfg.architecture).ok_or_else(|| {
        Error::unsupported(format!(
            "architecture `{}` has no native graph builder; supported families: {}",
            cfg.architecture,
            supported_list()
        ))
    })?;
    let in_c = cfg.pretrained_cfg.input_size[0] as i64;
    let fixed = request.fixed_size || !(family.any_size || request.dynamic_img_size);
    let input_chw = if fixed {
        [
            Some(in_c),
            Some(nominal_hw.0 as i64),
            Some(nominal_hw.1 as i64),
        ]
    } else {
        [Some(in_c), None, None]
    };
    Ok((family, input_chw))
}

fn build_with(
    family: &Family,
    cfg: &ModelConfig,
    source: ParamSource<'_>,
    dry: bool,
    request: &Request,
    input_chw: [Option<i64>; 3],
    nominal_hw: (usize, usize),
) -> Result<Graph> {
    let budget = budget::Budget::new(request.max_params, nominal_hw);
    let mut b = Builder::new(source, input_chw, request.clone(), budget);
    if dry {
        b = b.dry_run();
    }
    let (out, dim) = (family.build)(&mut b, cfg)?;
    b.budget.check()?;
    if request.output_stride.is_some_and(|s| s != 32) && !b.consumed.contains("output_stride") {
        return Err(Error::unsupported(format!(
            "option output_stride: the {} family does not implement dilated stages (output_stride 32 only)",
            family.name
        )));
    }
    if request.dynamic_img_size && !b.consumed.contains("dynamic_img_size") && !family.any_size {
        return Err(Error::unsupported(format!(
            "option dynamic_img_size: the {} family does not implement it",
            family.name
        )));
    }
    // A graph that ends where timm's forward does uses every saved tensor.
    if matches!(request.output, OutputKind::Logits | OutputKind::Tokens) && b.weights().is_some() {
        check_unused(&b, &cfg.architecture)?;
    }
    let (outputs, feature_info) = match request.output {
        OutputKind::Logits | OutputKind::Features => {
            (vec![(out, OutputShape::Vector(dim))], Vec::new())
        }
        OutputKind::Tokens => {
            let tokens = b.token_count.ok_or_else(|| {
                Error::unsupported(format!(
                    "option output=tokens: `{}` returns one vector per image; token sequences are the forward of encoder towers (qwen3_vit_*_enc, deepseek_vit_*_enc, gemma4_vit_*_enc)",
                    cfg.architecture
                ))
            })?;
            (vec![(out, OutputShape::Tokens { tokens, dim })], Vec::new())
        }
        OutputKind::FeatureMaps => select_features(&b, request.out_indices.as_deref())?,
    };
    let any_size = (family.any_size || request.dynamic_img_size) && !b.size_fixed_by_layer;
    let mut g = finish(b, outputs, feature_info);
    g.any_size = any_size;
    Ok(g)
}

fn check_unused(b: &Builder, arch: &str) -> Result<()> {
    let unused = b.unused_weights();
    if unused.is_empty() {
        return Ok(());
    }
    let shown: Vec<_> = unused.iter().take(8).cloned().collect();
    Err(Error::invalid_model(format!(
        "the weights hold {} tensor(s) the `{arch}` graph does not use ({}{}); they were probably saved from a different architecture or model_args",
        unused.len(),
        shown.join(", "),
        if unused.len() > shown.len() { ", ..." } else { "" }
    )))
}

type Selected = (Vec<(Value, OutputShape)>, Vec<FeatureInfo>);

/// timm's `out_indices` over the recorded `feature_info`.
fn select_features(b: &Builder, out_indices: Option<&[i64]>) -> Result<Selected> {
    let n = b.taps.len() as i64;
    if n == 0 {
        return Err(Error::unsupported(
            "option output=feature_maps: this architecture records no feature maps",
        ));
    }
    let all: Vec<i64> = (0..n).collect();
    let wanted = out_indices
        .or(b.default_out_indices.as_deref())
        .unwrap_or(&all);
    let mut seen = HashSet::new();
    let mut outputs = Vec::new();
    let mut infos = Vec::new();
    for &i in wanted {
        let j = if i < 0 { n + i } else { i };
        if !(0..n).contains(&j) {
            return Err(Error::invalid_argument(format!(
                "option out_indices: index {i} is out of range; this model has {n} feature maps (indices 0..={} or -{n}..=-1): {}",
                n - 1,
                b.taps
                    .iter()
                    .map(|t| format!("{} ({} ch, stride {})", t.info.module, t.info.channels, t.info.reduction))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if !seen.insert(j) {
            return Err(Error::invalid_argument(format!(
                "option out_indices: index {i} names feature map {j} twice"
            )));
        }
        let tap = &b.taps[j as usize];
        let spatial = b.spatial(&tap.value).cloned().ok_or_else(|| {
            Error::internal(format!(
                "feature map {} has no spatial size",
                tap.info.module
            ))
        })?;
        outputs.push((
            tap.value.clone(),
            OutputShape::Map {
                channels: tap.info.channels,
                spatial,
            },
        ));
        infos.push(tap.info.clone());
    }
    Ok((outputs, infos))
}

/// Names the outputs (`output`, or `feature_<i>`), drops every node and initializer the outputs
/// do not need (the head of a feature-map graph, unused taps) and returns the graph.
fn finish(b: Builder, outputs: Vec<(Value, OutputShape)>, feature_info: Vec<FeatureInfo>) -> Graph {
    let single = outputs.len() == 1 && feature_info.is_empty();
    let input_name = b.input().name().to_string();
    let input_chw = b.input_chw();
    let any_size = input_chw[1].is_none() && input_chw[2].is_none();
    let params = b.budget.params;
    let min_input = b.fit.clone();
    let mut nodes = b.nodes;
    let mut graph_outputs = Vec::new();
    for (i, (v, shape)) in outputs.into_iter().enumerate() {
        let name = if single {
            "output".to_string()
        } else {
            format!("feature_{i}")
        };
        nodes.push(Node {
            op: "Identity".into(),
            domain: String::new(),
            name: format!("{name}_identity"),
            inputs: vec![v.0.to_string()],
            outputs: vec![name.clone()],
            attrs: vec![],
        });
        graph_outputs.push(GraphOutput { name, shape });
    }
    // Walk back from the outputs.
    let mut needed: HashSet<String> = graph_outputs.iter().map(|o| o.name.clone()).collect();
    let mut keep = vec![false; nodes.len()];
    for (i, node) in nodes.iter().enumerate().rev() {
        if node.outputs.iter().any(|o| needed.contains(o)) {
            keep[i] = true;
            needed.extend(node.inputs.iter().filter(|s| !s.is_empty()).cloned());
        }
    }
    let mut k = keep.into_iter();
    nodes.retain(|_| k.next().unwrap_or(false));
    let initializers = b
        .initializers
        .into_iter()
        .filter(|i| needed.contains(&i.name))
        .collect();
    Graph {
        nodes,
        initializers,
        input_name,
        input_chw,
        outputs: graph_outputs,
        feature_info,
        params,
        min_input,
        any_size,
    }
}
