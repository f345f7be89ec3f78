//! Global pooling: timm's `SelectAdaptivePool2d` (`avg`, `max`, `avgmax`, `catavgmax` and their
//! `fast` forms, which compute the same) and `global_pool_nlc` for token sequences.

use crate::error::{Error, Result};
use crate::graph::spatial::Step;
use crate::graph::{Attr, Builder, Value};

/// A global pool type by timm's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Avg,
    Max,
    AvgMax,
    CatAvgMax,
    /// `global_pool=''`: no pooling (features keep their map).
    None,
}

impl PoolKind {
    pub fn from_timm(name: &str) -> Result<PoolKind> {
        // timm's SelectAdaptivePool2d: `fast` alone is the fast average, `fast<kind>` that kind.
        let n = match name {
            "fast" => "avg",
            _ => name.strip_prefix("fast").unwrap_or(name),
        };
        Ok(match n {
            "avg" => PoolKind::Avg,
            "max" => PoolKind::Max,
            "avgmax" => PoolKind::AvgMax,
            "catavgmax" => PoolKind::CatAvgMax,
            "" => PoolKind::None,
            _ => {
                return Err(Error::unsupported(format!(
                    "global_pool `{name}` is not supported by native graphs (avg, max, avgmax, catavgmax, fast*)"
                )))
            }
        })
    }

    /// How many times the channel count the pooled output has.
    pub fn multiplier(self) -> usize {
        if self == PoolKind::CatAvgMax {
            2
        } else {
            1
        }
    }
}

/// `SelectAdaptivePool2d(flatten=True)`: `[N, C, H, W]` → `[N, C·multiplier]`.
pub fn global_pool(b: &mut Builder, x: &Value, kind: PoolKind) -> Value {
    if kind == PoolKind::None {
        return x.clone();
    }
    let map = global_pool_map(b, x, kind);
    super::flatten(b, &map, 1)
}

/// The pooled `[N, C', 1, 1]` map, unflattened: a 1x1-conv classifier takes it as it is, with no
/// reshape between the pool and the conv for ORT to lay out again.
pub fn global_pool_map(b: &mut Builder, x: &Value, kind: PoolKind) -> Value {
    match kind {
        PoolKind::Avg => b.op("GlobalAveragePool", &[x], vec![]),
        PoolKind::Max => b.op("GlobalMaxPool", &[x], vec![]),
        PoolKind::AvgMax | PoolKind::CatAvgMax => {
            let a = b.op("GlobalAveragePool", &[x], vec![]);
            let m = b.op("GlobalMaxPool", &[x], vec![]);
            if kind == PoolKind::AvgMax {
                super::mean2(b, &a, &m)
            } else {
                super::concat(b, &[&a, &m], 1)
            }
        }
        PoolKind::None => x.clone(),
    }
}

/// `nn.MaxPool2d` / `nn.AvgPool2d` with symmetric padding, spatial size tracked.
#[derive(Debug, Clone, Copy)]
pub struct Pool2d {
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub ceil: bool,
    /// AvgPool's `count_include_pad` (PyTorch's default true).
    pub count_include_pad: bool,
}

impl Pool2d {
    pub fn new(kernel: usize, stride: usize, pad: usize) -> Self {
        Pool2d {
            kernel,
            stride,
            pad,
            ceil: false,
            count_include_pad: true,
        }
    }
    pub fn ceil(mut self, c: bool) -> Self {
        self.ceil = c;
        self
    }
    pub fn count_include_pad(mut self, c: bool) -> Self {
        self.count_include_pad = c;
        self
    }

    fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("kernel_shape", Attr::Ints(vec![self.kernel as i64; 2])),
            ("strides", Attr::Ints(vec![self.stride as i64; 2])),
            ("pads", Attr::Ints(vec![self.pad as i64; 4])),
            ("ceil_mode", Attr::Int(self.ceil as i64)),
        ]
    }

    fn step(&self) -> Step {
        Step::Window {
            k: self.kernel,
            stride: self.stride,
            pad: 2 * self.pad,
            dilation: 1,
            ceil: self.ceil,
        }
    }

    pub fn max(&self, b: &mut Builder, x: &Value, channels: usize) -> Result<Value> {
        let y = b.op("MaxPool", &[x], self.attrs());
        b.set_spatial(&y, x, self.step(), channels)?;
        Ok(y)
    }

    pub fn avg(&self, b: &mut Builder, x: &Value, channels: usize) -> Result<Value> {
        let mut attrs = self.attrs();
        attrs.push((
            "count_include_pad",
            Attr::Int(self.count_include_pad as i64),
        ));
        let y = b.op("AveragePool", &[x], attrs);
        b.set_spatial(&y, x, self.step(), channels)?;
        Ok(y)
    }
}

/// timm's `AvgPool2dSame` at stride 1 (the pool of a dilated stage's avg-down shortcut): TF "SAME"
/// zero padding, the extra pixel at the end, and the padded zeros counted in each mean — ONNX
/// `AveragePool` with explicit pads and `count_include_pad`. The size is kept.
pub fn avg_pool2d_same_s1(
    b: &mut Builder,
    x: &Value,
    kernel: usize,
    channels: usize,
) -> Result<Value> {
    let (lo, hi) = ((kernel - 1) / 2, kernel - 1 - (kernel - 1) / 2);
    let y = b.op(
        "AveragePool",
        &[x],
        vec![
            ("kernel_shape", Attr::Ints(vec![kernel as i64; 2])),
            ("strides", Attr::Ints(vec![1, 1])),
            (
                "pads",
                Attr::Ints(vec![lo as i64, lo as i64, hi as i64, hi as i64]),
            ),
            ("count_include_pad", Attr::Int(1)),
        ],
    );
    let step = Step::Window {
        k: kernel,
        stride: 1,
        pad: kernel - 1,
        dilation: 1,
        ceil: false,
    };
    b.set_spatial(&y, x, step, channels)?;
    Ok(y)
}

/// Token pooling of `global_pool_nlc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPool {
    /// The class token (`token`).
    Token,
    Avg,
    Max,
    AvgMax,
    /// No pooling (`''`).
    None,
}

impl TokenPool {
    pub fn from_timm(name: &str) -> Result<TokenPool> {
        Ok(match name {
            "token" => TokenPool::Token,
            "avg" => TokenPool::Avg,
            "max" => TokenPool::Max,
            "avgmax" => TokenPool::AvgMax,
            "" => TokenPool::None,
            other => {
                return Err(Error::unsupported(format!(
                    "global_pool `{other}` is not supported for token sequences (token, avg, max, avgmax)"
                )))
            }
        })
    }
}

/// timm's `global_pool_nlc` on `[N, L, D]`: prefix tokens dropped for the averaging pools
/// unless `include_prefix`.
pub fn global_pool_nlc(
    b: &mut Builder,
    x: &Value,
    kind: TokenPool,
    num_prefix: usize,
    include_prefix: bool,
) -> Value {
    if kind == TokenPool::Token {
        return super::token_at(b, x, 0);
    }
    if kind == TokenPool::None {
        return x.clone();
    }
    let x = if num_prefix > 0 && !include_prefix {
        super::slice(b, x, 1, num_prefix as i64, i64::MAX)
    } else {
        x.clone()
    };
    let axes = b.ints(&[1]);
    let keep = vec![("keepdims", Attr::Int(0))];
    match kind {
        TokenPool::Avg => b.op("ReduceMean", &[&x, &axes], keep),
        TokenPool::Max => b.op("ReduceMax", &[&x, &axes], keep),
        _ => {
            let mx = b.op("ReduceMax", &[&x, &axes], keep.clone());
            let mean = b.op("ReduceMean", &[&x, &axes], keep);
            super::mean2(b, &mx, &mean)
        }
    }
}

/// timm's `BlurPool2d(channels, filt_size, stride, pad_mode)`: padding `get_padding(filt_size,
/// stride)` (`reflect` or `constant`), then a depthwise conv with the fixed binomial filter timm
/// computes at init (`C(n-1, k) / 2^(n-1)`, outer product) — a buffer timm does not save.
pub fn blur_pool2d(
    b: &mut Builder,
    x: &Value,
    channels: usize,
    filt_size: usize,
    stride: usize,
    reflect: bool,
) -> Result<Value> {
    if filt_size < 2 || stride == 0 {
        return Err(Error::invalid_model(format!(
            "BlurPool2d needs filt_size > 1 and stride > 0 (got {filt_size}, {stride})"
        )));
    }
    let n = filt_size - 1;
    let coeffs: Vec<f64> = (0..filt_size)
        .map(|k| binomial(n, k) / f64::powi(2.0, n as i32))
        .collect();
    let filt: Vec<f32> = (0..channels)
        .flat_map(|_| {
            coeffs
                .iter()
                .flat_map(|a| coeffs.iter().map(move |c| (a * c) as f32))
        })
        .collect();
    let k = filt_size as i64;
    let w = b.const_f32(filt, &[channels as i64, 1, k, k]);
    let p = (stride - 1 + n) / 2;
    let pi = p as i64;
    let pads = b.ints(&[0, 0, pi, pi, 0, 0, pi, pi]);
    let mode = if reflect { "reflect" } else { "constant" };
    let padded = b.op("Pad", &[x, &pads], vec![("mode", Attr::Str(mode.into()))]);
    let y = b.op(
        "Conv",
        &[&padded, &w],
        vec![
            ("kernel_shape", Attr::Ints(vec![k, k])),
            ("strides", Attr::Ints(vec![stride as i64; 2])),
            ("group", Attr::Int(channels as i64)),
        ],
    );
    let step = Step::Window {
        k: filt_size,
        stride,
        pad: 2 * p,
        dilation: 1,
        ceil: false,
    };
    b.set_spatial(&y, x, step, channels)?;
    Ok(y)
}

/// `math.comb(n, k)`.
fn binomial(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// timm's `MaxPool2dSame` (`create_pool2d('max', k, stride, padding='same')`): TF "SAME"
/// padding from the input size with -inf, the extra pixel at the end — ONNX `MaxPool` with
/// `auto_pad = SAME_UPPER` (pads never win a max).
pub fn max_pool2d_same(
    b: &mut Builder,
    x: &Value,
    kernel: usize,
    stride: usize,
    channels: usize,
) -> Result<Value> {
    let y = b.op(
        "MaxPool",
        &[x],
        vec![
            ("kernel_shape", Attr::Ints(vec![kernel as i64; 2])),
            ("strides", Attr::Ints(vec![stride as i64; 2])),
            ("auto_pad", Attr::Str("SAME_UPPER".into())),
        ],
    );
    b.set_spatial(&y, x, Step::Same { stride }, channels)?;
    Ok(y)
}

/// timm's `create_pool2d('max' | 'avg', kernel, stride, padding=.., count_include_pad=..)` with
/// `padding='same'` (`tf_same`) or `''`. Static padding where timm's is static (`''`: symmetric
/// `get_padding`; `'same'` at stride 1 with an odd kernel); otherwise timm's `MaxPool2dSame` /
/// `AvgPool2dSame`: TF "SAME" (the extra pixel at the end), and the average then counts the padded
/// zeros whatever `count_include_pad` says, since timm pads before pooling.
#[allow(clippy::too_many_arguments)]
pub fn create_pool2d(
    b: &mut Builder,
    x: &Value,
    max: bool,
    kernel: usize,
    stride: usize,
    count_include_pad: bool,
    tf_same: bool,
    channels: usize,
) -> Result<Value> {
    let dynamic = tf_same && (stride != 1 || kernel.is_multiple_of(2));
    if !dynamic {
        let pad = if tf_same {
            (kernel - 1) / 2
        } else {
            ((stride - 1) + (kernel - 1)) / 2
        };
        let p = Pool2d::new(kernel, stride, pad).count_include_pad(count_include_pad);
        return if max {
            p.max(b, x, channels)
        } else {
            p.avg(b, x, channels)
        };
    }
    let mut attrs = vec![
        ("kernel_shape", Attr::Ints(vec![kernel as i64; 2])),
        ("strides", Attr::Ints(vec![stride as i64; 2])),
        ("auto_pad", Attr::Str("SAME_UPPER".into())),
    ];
    let y = if max {
        b.op("MaxPool", &[x], attrs)
    } else {
        attrs.push(("count_include_pad", Attr::Int(1)));
        b.op("AveragePool", &[x], attrs)
    };
    b.set_spatial(&y, x, Step::Same { stride }, channels)?;
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_pools_are_timms() {
        assert_eq!(PoolKind::from_timm("fast").unwrap(), PoolKind::Avg);
        assert_eq!(PoolKind::from_timm("fastavg").unwrap(), PoolKind::Avg);
        assert_eq!(PoolKind::from_timm("fastmax").unwrap(), PoolKind::Max);
        assert_eq!(
            PoolKind::from_timm("fastcatavgmax").unwrap(),
            PoolKind::CatAvgMax
        );
        assert_eq!(PoolKind::from_timm("").unwrap(), PoolKind::None);
        assert!(PoolKind::from_timm("fastest").is_err());
    }
}
