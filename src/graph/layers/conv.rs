//! Convolutions with every padding timm uses, and `ConvNormAct` with its BatchNorm folded into
//! the conv weights at load.

use super::norm::Norm;
use crate::error::{Error, Result};
use crate::graph::spatial::Step;
use crate::graph::{transforms, Attr, Builder, Init, Value};

/// Convolution padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pad {
    /// PyTorch's symmetric `padding=p` on both spatial axes.
    Sym(usize),
    /// Explicit (top, left, bottom, right).
    Explicit(usize, usize, usize, usize),
    /// TensorFlow "SAME" (timm's `Conv2dSame` / `padding='same'` where it cannot be static):
    /// total padding from the input size, the extra pixel at the end — ONNX `SAME_UPPER`.
    TfSame,
}

impl Pad {
    /// timm's `get_padding(k, stride, dilation)`: symmetric "same-ish" padding.
    /// Saturating, so a zero kernel or stride from a hostile config reaches [`Conv::emit`]'s
    /// check instead of overflowing here.
    pub fn timm(k: usize, stride: usize, dilation: usize) -> Pad {
        let span = dilation.saturating_mul(k.saturating_sub(1));
        Pad::Sym(stride.saturating_sub(1).saturating_add(span) / 2)
    }

    /// timm's `get_padding_value('same', k, stride, dilation)`: static when it can be
    /// (`stride == 1` and `dilation·(k-1)` even), else dynamic TF "SAME".
    pub fn same(k: usize, stride: usize, dilation: usize) -> Pad {
        let span = dilation.saturating_mul(k.saturating_sub(1));
        if stride == 1 && span.is_multiple_of(2) {
            Pad::Sym(span / 2)
        } else {
            Pad::TfSame
        }
    }

    /// `create_conv2d`'s padding for a model built with TF padding (`tf_*`) or not.
    pub fn create(k: usize, stride: usize, dilation: usize, tf_same: bool) -> Pad {
        if tf_same {
            Pad::same(k, stride, dilation)
        } else {
            Pad::timm(k, stride, dilation)
        }
    }
}

/// A 2-D convolution: `weight` (and `bias` when `bias`) in the current scope.
#[derive(Debug, Clone, Copy)]
pub struct Conv {
    pub in_ch: usize,
    pub out_ch: usize,
    pub kernel: (usize, usize),
    pub stride: usize,
    pub pad: Pad,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
    /// Initialisation without weights (timm's `_init_weights` of the family).
    pub init: Init,
}

impl Conv {
    /// A `k`×`k` conv with timm's default symmetric padding, no bias.
    pub fn new(in_ch: usize, out_ch: usize, k: usize) -> Self {
        Conv {
            in_ch,
            out_ch,
            kernel: (k, k),
            stride: 1,
            pad: Pad::timm(k, 1, 1),
            dilation: 1,
            groups: 1,
            bias: false,
            init: Init::KaimingFanOut,
        }
    }
    /// Sets the stride and the padding `get_padding` gives for it.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = s;
        if let Pad::Sym(_) = self.pad {
            self.pad = Pad::timm(self.kernel.0, s, self.dilation);
        }
        self
    }
    pub fn pad(mut self, p: Pad) -> Self {
        self.pad = p;
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    pub fn depthwise(self) -> Self {
        let c = self.in_ch;
        self.groups(c)
    }
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = d;
        if let Pad::Sym(_) = self.pad {
            self.pad = Pad::timm(self.kernel.0, self.stride, d);
        }
        self
    }
    pub fn bias(mut self, b: bool) -> Self {
        self.bias = b;
        self
    }
    pub fn init(mut self, i: Init) -> Self {
        self.init = i;
        self
    }
    pub fn kernel2(mut self, kh: usize, kw: usize) -> Self {
        self.kernel = (kh, kw);
        self
    }

    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_ch,
            self.in_ch / self.groups.max(1),
            self.kernel.0,
            self.kernel.1,
        ]
    }

    fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let mut attrs = vec![
            (
                "kernel_shape",
                Attr::Ints(vec![self.kernel.0 as i64, self.kernel.1 as i64]),
            ),
            ("strides", Attr::Ints(vec![self.stride as i64; 2])),
            ("dilations", Attr::Ints(vec![self.dilation as i64; 2])),
            ("group", Attr::Int(self.groups as i64)),
        ];
        match self.pad {
            Pad::Sym(p) => attrs.push(("pads", Attr::Ints(vec![p as i64; 4]))),
            Pad::Explicit(t, l, bo, r) => attrs.push((
                "pads",
                Attr::Ints(vec![t as i64, l as i64, bo as i64, r as i64]),
            )),
            Pad::TfSame => attrs.push(("auto_pad", Attr::Str("SAME_UPPER".into()))),
        }
        attrs
    }

    /// The spatial step this conv makes (height axis; timm's convs are square in stride).
    pub fn step(&self) -> Step {
        match self.pad {
            Pad::TfSame => Step::Same {
                stride: self.stride,
            },
            Pad::Sym(p) => Step::Window {
                k: self.kernel.0,
                stride: self.stride,
                pad: 2 * p,
                dilation: self.dilation,
                ceil: false,
            },
            Pad::Explicit(t, _, bo, _) => Step::Window {
                k: self.kernel.0,
                stride: self.stride,
                pad: t + bo,
                dilation: self.dilation,
                ceil: false,
            },
        }
    }

    /// Emits the Conv node over `w` (and `bias`) and records its spatial step.
    pub fn emit(
        &self,
        b: &mut Builder,
        x: &Value,
        w: &Value,
        bias: Option<&Value>,
    ) -> Result<Value> {
        let (kh, kw) = self.kernel;
        if [kh, kw, self.stride, self.dilation, self.groups].contains(&0) {
            return Err(Error::invalid_model(format!(
                "a convolution with kernel {kh}x{kw}, stride {}, dilation {} and {} groups: \
                 each must be at least 1",
                self.stride, self.dilation, self.groups
            )));
        }
        if !self.in_ch.is_multiple_of(self.groups) || !self.out_ch.is_multiple_of(self.groups) {
            return Err(Error::invalid_model(format!(
                "a convolution of {} to {} channels in {} groups: the groups must divide both",
                self.in_ch, self.out_ch, self.groups
            )));
        }
        let y = match bias {
            Some(bb) => b.op("Conv", &[x, w, bb], self.attrs()),
            None => b.op("Conv", &[x, w], self.attrs()),
        };
        b.set_spatial(&y, x, self.step(), self.out_ch)?;
        Ok(y)
    }
}

/// `nn.Conv2d` (or timm's `create_conv2d`): `weight` and optional `bias` in the current scope.
pub fn conv2d(b: &mut Builder, x: &Value, c: Conv) -> Result<Value> {
    let w = b.param("weight", &c.weight_shape(), c.init)?;
    let bias = if c.bias {
        Some(b.param("bias", &[c.out_ch], Init::Zeros)?)
    } else {
        None
    };
    c.emit(b, x, &w, bias.as_ref())
}

/// A conv followed by a BatchNorm (`conv` and `bn` name their scopes), folded into one conv at
/// load: ONNX Runtime then has nothing to fuse and makes no copy of the weights.
pub fn conv_bn(
    b: &mut Builder,
    x: &Value,
    conv: &str,
    bn: &str,
    c: Conv,
    eps: f32,
) -> Result<Value> {
    conv_bn_init(b, x, conv, bn, c, eps, Init::Ones)
}

/// [`conv_bn`] whose BatchNorm weight starts at `bn_weight_init` when there are no weights:
/// timm's `zero_init_last` (the last BatchNorm of a residual branch zeroed, so a freshly made
/// network starts as its shortcuts).
pub fn conv_bn_init(
    b: &mut Builder,
    x: &Value,
    conv: &str,
    bn: &str,
    c: Conv,
    eps: f32,
    bn_weight_init: Init,
) -> Result<Value> {
    let shape = c.weight_shape();
    let (w, bias) = {
        let s = &mut b.scope(conv);
        let w = s.read("weight", &shape, c.init)?;
        let bias = s.read_opt("bias", &[c.out_ch], Init::Zeros, c.bias)?;
        (w, bias)
    };
    let stats = transforms::BnStats::read_init(&mut b.scope(bn), c.out_ch, eps, bn_weight_init)?;
    let (w, bias) = transforms::fold_bn(w, bias, &stats);
    let wv = b.tensor(&format!("{conv}.weight"), w, &shape)?;
    let bv = b.tensor(&format!("{conv}.bias"), bias, &[c.out_ch])?;
    c.emit(b, x, &wv, Some(&bv))
}

/// timm's `ConvNormAct`: `conv` + `bn` (folded) + activation, or another norm after the conv.
pub fn conv_norm_act(
    b: &mut Builder,
    x: &Value,
    c: Conv,
    norm: &Norm,
    act: Option<&str>,
) -> Result<Value> {
    let y = match norm {
        Norm::Batch { eps } => conv_bn(b, x, "conv", "bn", c, *eps)?,
        other => {
            let y = conv2d(&mut b.scope("conv"), x, c)?;
            other.apply_2d(&mut b.scope("bn"), &y, c.out_ch)?
        }
    };
    match act {
        Some(a) => super::act(b, a, &y),
        None => Ok(y),
    }
}

/// timm's `StdConv2d(eps)`: a conv whose weight is standardised per output channel at every
/// forward, done once here at load (`transforms::standardize`); `weight` (and `bias`) in the
/// current scope. With `bn` (a BatchNorm after it: its scope beside the conv's, and eps), that
/// is folded in as well.
pub fn std_conv_bn(
    b: &mut Builder,
    x: &Value,
    conv: &str,
    bn: Option<(&str, f32)>,
    c: Conv,
    eps: f32,
) -> Result<Value> {
    let shape = c.weight_shape();
    let (mut w, bias) = {
        let s = &mut b.scope(conv);
        let w = s.read("weight", &shape, c.init)?;
        (w, s.read_opt("bias", &[c.out_ch], Init::Zeros, c.bias)?)
    };
    transforms::standardize(&mut w, c.out_ch, eps, None, 1.0);
    let (w, bias) = match bn {
        Some((scope, bn_eps)) => {
            let stats = transforms::BnStats::read(&mut b.scope(scope), c.out_ch, bn_eps)?;
            let (w, bias) = transforms::fold_bn(w, bias, &stats);
            (w, Some(bias))
        }
        None => (w, bias),
    };
    let wv = b.tensor(&format!("{conv}.weight"), w, &shape)?;
    let bv = match bias {
        Some(bias) => Some(b.tensor(&format!("{conv}.bias"), bias, &[c.out_ch])?),
        None => None,
    };
    c.emit(b, x, &wv, bv.as_ref())
}
