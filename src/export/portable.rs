//! Rewrites a native graph (ONNX opset 21 plus ONNX Runtime's `com.microsoft` fused operators)
//! into standard ONNX at [`OPSET`], the newest opset that ONNX Runtime ≥ 1.17, TensorRT 10's
//! ONNX parser and OpenVINO 2024 all read. Fused operators become their standard-op formulas
//! (runtimes fuse them back), and operators changed after opset 17 take their opset-17 form.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::graph::{Attr, Node, MS_DOMAIN};

/// The default-domain opset of exported files.
pub const OPSET: i64 = 17;

/// A constant the rewrite adds.
#[derive(Debug, Clone)]
pub enum ConstData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Debug, Clone)]
pub struct Const {
    pub name: String,
    pub dims: Vec<i64>,
    pub data: ConstData,
}

/// The rewritten nodes and the constants they need besides the graph's initializers.
#[derive(Debug, Default)]
pub struct Portable {
    pub nodes: Vec<Node>,
    pub consts: Vec<Const>,
}

/// What the rewrite needs to know about the graph's initializers: their dims, and the values
/// of small i64 ones (axes, shapes).
pub struct Known<'a> {
    pub dims: HashMap<&'a str, &'a [i64]>,
    pub ints: HashMap<&'a str, &'a [i64]>,
    /// One-element f32 initializers (exponents, epsilons).
    pub scalars: HashMap<&'a str, f32>,
}

/// Reduce operators whose `axes` became an input in opset 18 (ReduceSum did in 13).
const REDUCE_AXES_18: &[&str] = &[
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
];

/// Standard operators added after opset 17 that this rewrite has no older form for.
const NEWER_THAN_17: &[&str] = &[
    "GroupNormalization",
    "RMSNormalization",
    "Col2Im",
    "CenterCropPad",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
    "BitwiseNot",
    "AffineGrid",
    "ImageDecoder",
    "StringConcat",
    "StringSplit",
    "RegexFullMatch",
    "RotaryEmbedding",
    "TensorScatter",
    "Attention",
];

pub fn rewrite(nodes: &[Node], known: &Known) -> Result<Portable> {
    let mut names: HashSet<String> = HashSet::new();
    for n in nodes {
        names.extend(n.inputs.iter().cloned());
        names.extend(n.outputs.iter().cloned());
    }
    let mut r = Rewriter {
        out: Portable::default(),
        known,
        taken: names,
        counter: 0,
        producers: HashMap::new(),
    };
    for n in nodes {
        r.node(n)
            .map_err(|e| e.context(format!("exporting node `{}` ({})", n.name, n.op)))?;
    }
    Ok(r.out)
}

struct Rewriter<'k, 'a> {
    out: Portable,
    known: &'k Known<'a>,
    taken: HashSet<String>,
    counter: usize,
    /// Value name → the original node that produced it, to trace static dims.
    producers: HashMap<String, Node>,
}

fn attr<'n>(n: &'n Node, name: &str) -> Option<&'n Attr> {
    n.attrs.iter().find(|(k, _)| k == name).map(|(_, a)| a)
}

fn attr_int(n: &Node, name: &str) -> Option<i64> {
    match attr(n, name) {
        Some(Attr::Int(v)) => Some(*v),
        _ => None,
    }
}

fn attr_float(n: &Node, name: &str) -> Option<f32> {
    match attr(n, name) {
        Some(Attr::Float(v)) => Some(*v),
        _ => None,
    }
}

/// The `attention_bias` (input 5) of a fused attention node, the only optional input with a
/// portable form here (added to the scaled scores).
fn attention_bias(n: &Node) -> Result<Option<&str>> {
    no_inputs_after_but(n, 3, Some(5))?;
    Ok(n.inputs
        .get(5)
        .map(String::as_str)
        .filter(|s| !s.is_empty()))
}

/// The inputs of `n` after `from` must be absent (empty names) for the rewrite to be exact.
fn no_inputs_after(n: &Node, from: usize) -> Result<()> {
    no_inputs_after_but(n, from, None)
}

/// [`no_inputs_after`], input `kept` excepted.
fn no_inputs_after_but(n: &Node, from: usize, kept: Option<usize>) -> Result<()> {
    let mut present = n.inputs.iter().enumerate().skip(from);
    match present
        .find(|(j, i)| Some(*j) != kept && !i.is_empty())
        .map(|(_, i)| i)
    {
        Some(i) => Err(Error::unsupported(format!(
            "{} input `{i}` (masks, past state, extra biases) has no portable form in the export",
            n.op
        ))),
        None => Ok(()),
    }
}

impl Rewriter<'_, '_> {
    fn fresh(&mut self, hint: &str) -> String {
        loop {
            self.counter += 1;
            let name = format!("export:{hint}_{}", self.counter);
            if self.taken.insert(name.clone()) {
                return name;
            }
        }
    }

    fn emit(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>, out: &str) {
        let name = self.fresh(op);
        self.out.nodes.push(Node {
            op: op.into(),
            domain: String::new(),
            name,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![out.to_string()],
            attrs: attrs.into_iter().map(|(k, a)| (k.to_string(), a)).collect(),
        });
    }

    /// A new node with a fresh output; returns the output.
    fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.fresh(op);
        self.emit(op, inputs, attrs, &out);
        out
    }

    fn scalar(&mut self, v: f32) -> String {
        let name = self.fresh("c");
        self.out.consts.push(Const {
            name: name.clone(),
            dims: vec![],
            data: ConstData::F32(vec![v]),
        });
        name
    }

    fn ints(&mut self, v: Vec<i64>) -> String {
        let name = self.fresh("c");
        self.out.consts.push(Const {
            name: name.clone(),
            dims: vec![v.len() as i64],
            data: ConstData::I64(v),
        });
        name
    }

    fn node(&mut self, n: &Node) -> Result<()> {
        for o in &n.outputs {
            self.producers.insert(o.clone(), n.clone());
        }
        if n.domain == MS_DOMAIN {
            return self.contrib(n);
        }
        if !n.domain.is_empty() && n.domain != "ai.onnx" {
            return Err(Error::unsupported(format!(
                "operator domain `{}` has no portable form",
                n.domain
            )));
        }
        let op = n.op.as_str();
        match op {
            "Gelu" => {
                let tanh = matches!(attr(n, "approximate"), Some(Attr::Str(s)) if s == "tanh");
                if tanh {
                    self.gelu_tanh(&n.inputs[0], &n.outputs[0]);
                } else {
                    self.gelu_erf(&n.inputs[0], &n.outputs[0]);
                }
            }
            "Mish" => {
                let sp = self.op("Softplus", &[&n.inputs[0]], vec![]);
                let t = self.op("Tanh", &[&sp], vec![]);
                self.emit("Mul", &[&n.inputs[0], &t], vec![], &n.outputs[0]);
            }
            _ if REDUCE_AXES_18.contains(&op) => self.reduce(n)?,
            // x² as x·x (bit-identical): OpenVINO 2024's CPU plugin fuses the Pow form of RMS
            // norm into a kernel that crashes on [N, C] inputs.
            "Pow" if self.known.scalars.get(n.inputs[1].as_str()) == Some(&2.0) => {
                self.emit("Mul", &[&n.inputs[0], &n.inputs[0]], vec![], &n.outputs[0]);
            }
            "Split" => {
                let mut m = n.clone();
                // Opset 13 splits evenly into the outputs when `split` is absent.
                m.attrs.retain(|(k, _)| k != "num_outputs");
                self.out.nodes.push(m);
            }
            _ if NEWER_THAN_17.contains(&op) => {
                return Err(Error::unsupported(format!(
                    "operator {op} is newer than opset {OPSET} and has no older form in the export"
                )))
            }
            _ => self.out.nodes.push(n.clone()),
        }
        Ok(())
    }

    /// Opset 18's `Reduce*(x, axes)` as opset 17's `Reduce*(x)` with an `axes` attribute.
    fn reduce(&mut self, n: &Node) -> Result<()> {
        let mut m = n.clone();
        let noop_empty = attr_int(n, "noop_with_empty_axes").unwrap_or(0);
        m.attrs.retain(|(k, _)| k != "noop_with_empty_axes");
        if let Some(axes) = n.inputs.get(1).filter(|a| !a.is_empty()) {
            let values = self.known.ints.get(axes.as_str()).ok_or_else(|| {
                Error::unsupported(format!(
                    "{} takes its axes from `{axes}`, which is not a constant",
                    n.op
                ))
            })?;
            m.inputs.truncate(1);
            m.attrs.push(("axes".into(), Attr::Ints(values.to_vec())));
        } else if noop_empty == 1 {
            // Reducing over no axes is the identity.
            self.emit("Identity", &[&n.inputs[0]], vec![], &n.outputs[0]);
            return Ok(());
        }
        self.out.nodes.push(m);
        Ok(())
    }

    fn contrib(&mut self, n: &Node) -> Result<()> {
        let input = |i: usize| -> Result<&str> {
            n.inputs
                .get(i)
                .map(String::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Error::internal(format!("{} lacks input {i}", n.op)))
        };
        let out = n.outputs[0].as_str();
        match n.op.as_str() {
            "Gelu" => self.gelu_erf(input(0)?, out),
            "BiasGelu" => {
                let t = self.op("Add", &[input(0)?, input(1)?], vec![]);
                self.gelu_erf(&t, out);
            }
            "FastGelu" => {
                let x = match n.inputs.get(1).filter(|s| !s.is_empty()) {
                    Some(b) => self.op("Add", &[input(0)?, b], vec![]),
                    None => input(0)?.to_string(),
                };
                self.gelu_tanh(&x, out);
            }
            "QuickGelu" => {
                let alpha = attr_float(n, "alpha").unwrap_or(1.702);
                let a = self.scalar(alpha);
                let ax = self.op("Mul", &[input(0)?, &a], vec![]);
                let s = self.op("Sigmoid", &[&ax], vec![]);
                self.emit("Mul", &[input(0)?, &s], vec![], out);
            }
            "Attention" => {
                let bias = attention_bias(n)?;
                if attr_int(n, "unidirectional").unwrap_or(0) != 0 {
                    return Err(Error::unsupported(
                        "causal (unidirectional) Attention has no portable form in the export",
                    ));
                }
                if attr(n, "qkv_hidden_sizes").is_some() {
                    return Err(Error::unsupported(
                        "Attention with qkv_hidden_sizes has no portable form in the export",
                    ));
                }
                let heads = self.heads(n)?;
                let mut qkv = self.op("MatMul", &[input(0)?, input(1)?], vec![]);
                if let Some(b) = n.inputs.get(2).filter(|s| !s.is_empty()) {
                    qkv = self.op("Add", &[&qkv, b], vec![]);
                }
                // The hidden size is a third of the packed weights' last dim.
                let hidden = self.last_dim(input(1)?).map(|d| d / 3);
                let scale = attr_float(n, "scale");
                // timm's own form: [N, L, 3, H, hd] permuted to [3, N, H, L, hd] and split on
                // the leading axis, which OpenVINO splits in place (a split of the last axis it
                // copies with a reference kernel).
                let shape = self.ints(vec![0, 0, 3, heads, -1]);
                let qkv = self.op("Reshape", &[&qkv, &shape], vec![]);
                let perm = Attr::Ints(vec![2, 0, 3, 1, 4]);
                let qkv = self.op("Transpose", &[&qkv], vec![("perm", perm)]);
                let parts = [self.fresh("q"), self.fresh("k"), self.fresh("v")];
                let split = self.fresh("Split");
                self.out.nodes.push(Node {
                    op: "Split".into(),
                    domain: String::new(),
                    name: split,
                    inputs: vec![qkv],
                    outputs: parts.to_vec(),
                    attrs: vec![("axis".into(), Attr::Int(0))],
                });
                let axis = self.ints(vec![0]);
                let [q, k, v] = parts.map(|t| self.op("Squeeze", &[&t, &axis], vec![]));
                self.attention_heads(&q, &k, &v, heads, hidden, scale, bias, out);
            }
            "MultiHeadAttention" => {
                let bias = attention_bias(n)?;
                let heads = self.heads(n)?;
                let (q, k, v) = (input(0)?, input(1)?, input(2)?);
                let hidden = self.last_dim(q);
                let scale = attr_float(n, "scale");
                self.attention(q, k, v, heads, hidden, scale, bias, out);
            }
            "RotaryEmbedding" => self.rotary(n, out)?,
            other => {
                return Err(Error::unsupported(format!(
                    "ONNX Runtime operator com.microsoft.{other} has no portable form in the export"
                )))
            }
        }
        Ok(())
    }

    /// ONNX Runtime's `RotaryEmbedding` as the formula it computes on each rotated pair
    /// `(x1, x2)` (adjacent, or half the head apart): `(x1·cos − x2·sin, x2·cos + x1·sin)`. Only the
    /// form this library writes: position offset 0, caches `[S, head_dim / 2]` covering the
    /// sequence, the whole head rotated.
    fn rotary(&mut self, n: &Node, out: &str) -> Result<()> {
        no_inputs_after(n, 4)?;
        let unsupported = |what: &str| {
            Err(Error::unsupported(format!(
                "RotaryEmbedding {what} has no portable form in the export"
            )))
        };
        if self.known.ints.get(n.inputs[1].as_str()) != Some(&&[0i64][..]) {
            return unsupported("with position ids other than the constant offset 0");
        }
        if attr_int(n, "rotary_embedding_dim").unwrap_or(0) != 0 {
            return unsupported("over part of the head");
        }
        let (x, cos, sin) = (&n.inputs[0], &n.inputs[2], &n.inputs[3]);
        let Some(&half) = self.known.dims.get(cos.as_str()).and_then(|d| d.last()) else {
            return unsupported("with caches the graph computes");
        };
        let interleaved = attr_int(n, "interleaved").unwrap_or(0) != 0;
        let heads = attr_int(n, "num_heads").unwrap_or(0);
        let unsqueeze = |r: &mut Self, t: &str, axis: i64| {
            let axes = r.ints(vec![axis]);
            r.op("Unsqueeze", &[t, &axes], vec![])
        };
        // The token layout [N, S, H·d] is viewed as [N, S, H, d], its caches as [S, 1, d / 2].
        let (mut x, mut c, mut s) = (x.clone(), cos.clone(), sin.clone());
        if heads > 0 {
            let shape = self.ints(vec![0, 0, heads, -1]);
            x = self.op("Reshape", &[&x, &shape], vec![]);
            c = unsqueeze(self, &c, 1);
            s = unsqueeze(self, &s, 1);
        }
        if interleaved {
            let shape = self.ints(vec![0, 0, 0, half, 2]);
            x = self.op("Reshape", &[&x, &shape], vec![]);
            c = unsqueeze(self, &c, -1);
            s = unsqueeze(self, &s, -1);
        }
        // Each rotated pair's members: one element apart on the last axis, or half a head apart.
        let w = if interleaved { 1 } else { half };
        let slice = |r: &mut Self, t: &str, from: i64| {
            let (b, e, a) = (r.ints(vec![from]), r.ints(vec![from + w]), r.ints(vec![-1]));
            r.op("Slice", &[t, &b, &e, &a], vec![])
        };
        let x1 = slice(self, &x, 0);
        let x2 = slice(self, &x, w);
        let (x1c, x2s) = (
            self.op("Mul", &[&x1, &c], vec![]),
            self.op("Mul", &[&x2, &s], vec![]),
        );
        let (x2c, x1s) = (
            self.op("Mul", &[&x2, &c], vec![]),
            self.op("Mul", &[&x1, &s], vec![]),
        );
        let r1 = self.op("Sub", &[&x1c, &x2s], vec![]);
        let r2 = self.op("Add", &[&x2c, &x1s], vec![]);
        let y = self.op("Concat", &[&r1, &r2], vec![("axis", Attr::Int(-1))]);
        let back = match (interleaved, heads > 0) {
            (false, false) => {
                self.emit("Identity", &[&y], vec![], out);
                return Ok(());
            }
            // [N, S, H, d] or [N, S, H, d / 2, 2] back to [N, S, H·d]
            (_, true) => vec![0, 0, -1],
            // [N, H, S, d / 2, 2] back to [N, H, S, d]
            (true, false) => vec![0, 0, 0, -1],
        };
        let shape = self.ints(back);
        self.emit("Reshape", &[&y, &shape], vec![], out);
        Ok(())
    }

    fn heads(&self, n: &Node) -> Result<i64> {
        attr_int(n, "num_heads")
            .filter(|&h| h > 0)
            .ok_or_else(|| Error::internal(format!("{} without num_heads", n.op)))
    }

    /// The last dimension of a value when the graph fixes it: an initializer (through
    /// Transpose/Cast/Identity) or a Reshape to a constant shape.
    fn last_dim(&self, value: &str) -> Option<i64> {
        if let Some(d) = self.known.dims.get(value) {
            return d.last().copied();
        }
        let p = self.producers.get(value)?;
        match p.op.as_str() {
            "Cast" | "Identity" => self.last_dim(&p.inputs[0]),
            "Transpose" => {
                let dims = self.known.dims.get(p.inputs[0].as_str())?;
                let perm: Vec<i64> = match attr(p, "perm") {
                    Some(Attr::Ints(v)) => v.clone(),
                    _ => (0..dims.len() as i64).rev().collect(),
                };
                dims.get(usize::try_from(*perm.last()?).ok()?).copied()
            }
            "Reshape" => self
                .known
                .ints
                .get(p.inputs.get(1)?.as_str())
                .and_then(|s| s.last().copied())
                .filter(|&d| d > 0),
            _ => None,
        }
    }

    /// Scaled dot-product attention of `[N, L, D]` q/k/v with `heads` heads, as standard ops.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &mut self,
        q: &str,
        k: &str,
        v: &str,
        heads: i64,
        hidden: Option<i64>,
        scale: Option<f32>,
        bias: Option<&str>,
        out: &str,
    ) {
        let per_head = self.ints(vec![0, 0, heads, -1]);
        let split = |r: &mut Self, t: &str| {
            let t = r.op("Reshape", &[t, &per_head], vec![]);
            r.op(
                "Transpose",
                &[&t],
                vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))],
            )
        };
        let (qh, kh, vh) = (split(self, q), split(self, k), split(self, v));
        self.attention_heads(&qh, &kh, &vh, heads, hidden, scale, bias, out);
    }

    /// [`Self::attention`] of q, k, v already in the head layout `[N, H, L, hd]`.
    #[allow(clippy::too_many_arguments)]
    fn attention_heads(
        &mut self,
        qh: &str,
        kh: &str,
        vh: &str,
        heads: i64,
        hidden: Option<i64>,
        scale: Option<f32>,
        bias: Option<&str>,
        out: &str,
    ) {
        let kt = self.op(
            "Transpose",
            &[kh],
            vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))],
        );
        let scores = self.op("MatMul", &[qh, &kt], vec![]);
        let scale = match (scale, hidden) {
            (Some(s), _) => self.scalar(s),
            (None, Some(d)) => self.scalar(((d / heads) as f64).powf(-0.5) as f32),
            (None, None) => {
                // 1/sqrt(head_dim) from the runtime shape of q's per-head view.
                let shape = self.op("Shape", &[qh], vec![]);
                let last = self.ints(vec![3]);
                let hd = self.op("Gather", &[&shape, &last], vec![("axis", Attr::Int(0))]);
                let hd = self.op("Cast", &[&hd], vec![("to", Attr::Int(1))]);
                let root = self.op("Sqrt", &[&hd], vec![]);
                self.op("Reciprocal", &[&root], vec![])
            }
        };
        let mut scaled = self.op("Mul", &[&scores, &scale], vec![]);
        if let Some(bias) = bias {
            scaled = self.op("Add", &[&scaled, bias], vec![]);
        }
        let probs = self.op("Softmax", &[&scaled], vec![("axis", Attr::Int(-1))]);
        let ctx = self.op("MatMul", &[&probs, vh], vec![]);
        let ctx = self.op(
            "Transpose",
            &[&ctx],
            vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        );
        let merged = self.ints(vec![0, 0, -1]);
        self.emit("Reshape", &[&ctx, &merged], vec![], out);
    }

    /// PyTorch's exact GELU: `0.5 x (1 + erf(x / sqrt 2))`.
    fn gelu_erf(&mut self, x: &str, out: &str) {
        let r = self.scalar(std::f32::consts::FRAC_1_SQRT_2);
        let xs = self.op("Mul", &[x, &r], vec![]);
        let e = self.op("Erf", &[&xs], vec![]);
        self.half_x_one_plus(x, &e, out);
    }

    /// GELU's tanh form: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    fn gelu_tanh(&mut self, x: &str, out: &str) {
        let x2 = self.op("Mul", &[x, x], vec![]);
        let x3 = self.op("Mul", &[&x2, x], vec![]);
        let c = self.scalar(0.044715);
        let cx3 = self.op("Mul", &[&x3, &c], vec![]);
        let inner = self.op("Add", &[x, &cx3], vec![]);
        let k = self.scalar((2.0f64 / std::f64::consts::PI).sqrt() as f32);
        let scaled = self.op("Mul", &[&inner, &k], vec![]);
        let t = self.op("Tanh", &[&scaled], vec![]);
        self.half_x_one_plus(x, &t, out);
    }

    /// `0.5 * x * (1 + t)`.
    fn half_x_one_plus(&mut self, x: &str, t: &str, out: &str) {
        let one = self.scalar(1.0);
        let half = self.scalar(0.5);
        let p = self.op("Add", &[t, &one], vec![]);
        let xp = self.op("Mul", &[x, &p], vec![]);
        self.emit("Mul", &[&xp, &half], vec![], out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, domain: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> Node {
        Node {
            op: op.into(),
            domain: domain.into(),
            name: format!("{op}_0"),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec!["y".into()],
            attrs: attrs.into_iter().map(|(k, a)| (k.into(), a)).collect(),
        }
    }

    fn empty() -> Known<'static> {
        Known {
            dims: HashMap::new(),
            ints: HashMap::new(),
            scalars: HashMap::new(),
        }
    }

    #[test]
    fn no_contrib_op_or_opset_20_gelu_survives() {
        let nodes = vec![
            node("BiasGelu", MS_DOMAIN, &["x", "b"], vec![]),
            node(
                "Gelu",
                "",
                &["x"],
                vec![("approximate", Attr::Str("tanh".into()))],
            ),
            node(
                "QuickGelu",
                MS_DOMAIN,
                &["x"],
                vec![("alpha", Attr::Float(1.702))],
            ),
            node(
                "MultiHeadAttention",
                MS_DOMAIN,
                &["q", "k", "v"],
                vec![("num_heads", Attr::Int(2))],
            ),
        ];
        let p = rewrite(&nodes, &empty()).unwrap();
        for n in &p.nodes {
            assert!(n.domain.is_empty(), "{n:?}");
            assert!(
                !["Gelu", "BiasGelu", "QuickGelu", "MultiHeadAttention"].contains(&n.op.as_str())
            );
        }
        // Every rewritten op still writes the original output.
        assert_eq!(p.nodes.iter().filter(|n| n.outputs == ["y"]).count(), 4);
    }

    #[test]
    fn rotary_embedding_and_attention_bias_become_standard_ops() {
        let (zero, cache) = ([0i64], [8i64, 4]);
        let known = Known {
            dims: HashMap::from([("cos", &cache[..]), ("sin", &cache[..])]),
            ints: HashMap::from([("pos", &zero[..])]),
            scalars: HashMap::new(),
        };
        let rope = |interleaved: i64| {
            node(
                "RotaryEmbedding",
                MS_DOMAIN,
                &["q", "pos", "cos", "sin"],
                vec![
                    ("interleaved", Attr::Int(interleaved)),
                    ("num_heads", Attr::Int(2)),
                ],
            )
        };
        let attn = node(
            "MultiHeadAttention",
            MS_DOMAIN,
            &["q", "k", "v", "", "", "bias"],
            vec![("num_heads", Attr::Int(2))],
        );
        let p = rewrite(&[rope(0), rope(1), attn], &known).unwrap();
        assert!(p.nodes.iter().all(|n| n.domain.is_empty()), "{:?}", p.nodes);
        assert!(p
            .nodes
            .iter()
            .any(|n| n.op == "Add" && n.inputs.contains(&"bias".to_string())));
        assert_eq!(p.nodes.iter().filter(|n| n.outputs == ["y"]).count(), 3);

        // Position ids the graph computes have no fixed cache rows to take.
        let mut moving = rope(0);
        moving.inputs[1] = "ids".into();
        let e = rewrite(&[moving], &known).unwrap_err();
        assert!(e.message().contains("position ids"), "{}", e.message());
        // A key-padding mask beside the bias still has no portable form.
        let masked = node(
            "MultiHeadAttention",
            MS_DOMAIN,
            &["q", "k", "v", "", "mask", "bias"],
            vec![("num_heads", Attr::Int(2))],
        );
        let e = rewrite(&[masked], &known).unwrap_err();
        assert!(e.message().contains("`mask`"), "{}", e.message());
    }

    #[test]
    fn reduce_axes_input_becomes_attribute() {
        let axes = [2i64, 3];
        let known = Known {
            dims: HashMap::new(),
            ints: HashMap::from([("axes", &axes[..])]),
            scalars: HashMap::new(),
        };
        let p = rewrite(&[node("ReduceMean", "", &["x", "axes"], vec![])], &known).unwrap();
        assert_eq!(p.nodes[0].inputs, ["x"]);
        assert!(matches!(attr(&p.nodes[0], "axes"), Some(Attr::Ints(v)) if v == &[2, 3]));
        let e = rewrite(
            &[node("ReduceMean", "", &["x", "dynamic"], vec![])],
            &empty(),
        )
        .unwrap_err();
        assert!(e.message().contains("not a constant"), "{e}");
    }

    #[test]
    fn unknown_contrib_op_is_a_clear_error() {
        let e = rewrite(
            &[node("SkipLayerNormalization", MS_DOMAIN, &["x"], vec![])],
            &empty(),
        )
        .unwrap_err();
        assert!(
            e.message().contains("com.microsoft.SkipLayerNormalization"),
            "{e}"
        );
        let e = rewrite(
            &[node(
                "MultiHeadAttention",
                MS_DOMAIN,
                &["q", "k", "v", "bias"],
                vec![("num_heads", Attr::Int(2))],
            )],
            &empty(),
        )
        .unwrap_err();
        assert!(e.message().contains("no portable form"), "{e}");
    }
}
