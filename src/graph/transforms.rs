//! Load-time weight transforms every family can use: BatchNorm folded into the preceding conv or
//! linear, timm's re-parameterisation (`reparameterize_model`: RepVGG / MobileOne / FastViT
//! branches summed into one kernel) and `StdConv2d` / `ScaledStdConv2d` weight standardisation.
//! All arithmetic is in f64, so folded graphs stay within 1e-6 of timm's unfused ones.

use super::{Builder, Init};
use crate::error::Result;

/// A BatchNorm's eval-mode statistics.
#[derive(Debug, Clone)]
pub struct BnStats {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub eps: f32,
}

impl BnStats {
    /// Reads `weight`, `bias`, `running_mean`, `running_var` of the current scope.
    pub fn read(b: &mut Builder, ch: usize, eps: f32) -> Result<Self> {
        Self::read_init(b, ch, eps, Init::Ones)
    }

    /// [`BnStats::read`] with the weight initialised by `weight_init` when there are no weights
    /// (timm's `zero_init_last` zeroes the last BatchNorm of each residual branch).
    pub fn read_init(b: &mut Builder, ch: usize, eps: f32, weight_init: Init) -> Result<Self> {
        Ok(BnStats {
            weight: b.read("weight", &[ch], weight_init)?,
            bias: b.read("bias", &[ch], Init::Zeros)?,
            mean: b.read("running_mean", &[ch], Init::Zeros)?,
            var: b.read("running_var", &[ch], Init::Ones)?,
            eps,
        })
    }

    /// Per-channel `(scale, shift)` of `y = x * scale + shift`.
    pub fn affine(&self) -> (Vec<f64>, Vec<f64>) {
        let scale: Vec<f64> = self
            .weight
            .iter()
            .zip(&self.var)
            .map(|(&g, &v)| g as f64 / (v as f64 + self.eps as f64).sqrt())
            .collect();
        let shift = self
            .bias
            .iter()
            .zip(&self.mean)
            .zip(&scale)
            .map(|((&b, &m), &s)| b as f64 - m as f64 * s)
            .collect();
        (scale, shift)
    }
}

/// Folds `bn` into a conv or linear weight `[out, ...]` and its optional bias.
pub fn fold_bn(mut w: Vec<f32>, bias: Option<Vec<f32>>, bn: &BnStats) -> (Vec<f32>, Vec<f32>) {
    let out = bn.weight.len();
    let (scale, shift) = bn.affine();
    let per = w.len() / out.max(1);
    for (o, chunk) in w.chunks_mut(per.max(1)).enumerate().take(out) {
        for v in chunk {
            *v = (*v as f64 * scale[o]) as f32;
        }
    }
    let b = (0..out)
        .map(|o| {
            let b0 = bias.as_ref().map_or(0.0, |b| b[o] as f64);
            (b0 * scale[o] + shift[o]) as f32
        })
        .collect();
    (w, b)
}

/// A re-parameterisable branch: a conv kernel `[out, in/groups, k, k]` and bias, as one
/// branch of a RepVGG / MobileOne block contributes them.
#[derive(Debug, Clone)]
pub struct Branch {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub k: usize,
}

/// Sums branches into one `k`×`k` kernel (timm's `reparameterize`): smaller kernels are
/// zero-padded to the centre.
pub fn sum_branches(
    branches: &[Branch],
    out: usize,
    in_per_group: usize,
    k: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut w = vec![0f64; out * in_per_group * k * k];
    let mut bias = vec![0f64; out];
    for br in branches {
        let off = (k - br.k) / 2;
        for (o, bo) in bias.iter_mut().enumerate() {
            *bo += br.bias[o] as f64;
            for i in 0..in_per_group {
                for y in 0..br.k {
                    for x in 0..br.k {
                        let src = ((o * in_per_group + i) * br.k + y) * br.k + x;
                        let dst = ((o * in_per_group + i) * k + y + off) * k + x + off;
                        w[dst] += br.weight[src] as f64;
                    }
                }
            }
        }
    }
    (
        w.into_iter().map(|v| v as f32).collect(),
        bias.into_iter().map(|v| v as f32).collect(),
    )
}

/// The identity branch (a BatchNorm on the input, timm's `identity` / `rbr_skip`) as a 1×1
/// kernel: channel `o` picks input `o % in_per_group` of its group.
pub fn identity_branch(bn: &BnStats, in_per_group: usize) -> Branch {
    let out = bn.weight.len();
    let mut w = vec![0f32; out * in_per_group];
    for o in 0..out {
        w[o * in_per_group + o % in_per_group] = 1.0;
    }
    let (w, bias) = fold_bn(w, None, bn);
    Branch {
        weight: w,
        bias,
        k: 1,
    }
}

/// Weight standardisation of `StdConv2d` / `ScaledStdConv2d`: each output channel's weights
/// normalised to zero mean and unit (biased) variance, `(w - mean) / sqrt(var + eps)`, times
/// `gain[o] * scale` when given (`ScaledStdConv2d`: `scale = gamma * fan_in^-0.5`).
pub fn standardize(w: &mut [f32], out: usize, eps: f32, gain: Option<&[f32]>, scale: f64) {
    let per = w.len() / out.max(1);
    for (o, chunk) in w.chunks_mut(per.max(1)).enumerate().take(out) {
        let n = chunk.len() as f64;
        let mean = chunk.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = chunk
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let g = gain.map_or(1.0, |g| g[o] as f64) * scale;
        let inv = g / (var + eps as f64).sqrt();
        for v in chunk {
            *v = ((*v as f64 - mean) * inv) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bn(ch: usize) -> BnStats {
        BnStats {
            weight: (0..ch).map(|i| 1.0 + i as f32 * 0.1).collect(),
            bias: (0..ch).map(|i| i as f32 * 0.01).collect(),
            mean: (0..ch).map(|i| i as f32 * 0.2).collect(),
            var: (0..ch).map(|i| 0.5 + i as f32).collect(),
            eps: 1e-5,
        }
    }

    #[test]
    fn folded_conv_equals_conv_then_batchnorm() {
        // A 1x1 conv on one pixel: y = W x; BN(y) vs folded W' x + b'.
        let (out, inp) = (3, 2);
        let w: Vec<f32> = (0..out * inp).map(|i| i as f32 * 0.3 - 0.5).collect();
        let x = [0.7f32, -1.3];
        let stats = bn(out);
        let (fw, fb) = fold_bn(w.clone(), Some(vec![0.1, 0.2, 0.3]), &stats);
        for o in 0..out {
            let y: f64 = (0..inp)
                .map(|i| w[o * inp + i] as f64 * x[i] as f64)
                .sum::<f64>()
                + [0.1, 0.2, 0.3][o];
            let s = stats.weight[o] as f64 / (stats.var[o] as f64 + 1e-5).sqrt();
            let want = (y - stats.mean[o] as f64) * s + stats.bias[o] as f64;
            let got: f64 = (0..inp)
                .map(|i| fw[o * inp + i] as f64 * x[i] as f64)
                .sum::<f64>()
                + fb[o] as f64;
            assert!((want - got).abs() < 1e-6, "{want} {got}");
        }
    }

    #[test]
    fn branches_sum_into_the_centre_of_the_kernel() {
        let one = Branch {
            weight: vec![2.0],
            bias: vec![1.0],
            k: 1,
        };
        let three = Branch {
            weight: vec![1.0; 9],
            bias: vec![0.5],
            k: 3,
        };
        let (w, b) = sum_branches(&[one, three], 1, 1, 3);
        assert_eq!(w[4], 3.0);
        assert_eq!(w[0], 1.0);
        assert_eq!(b, vec![1.5]);
    }

    #[test]
    fn standardized_channels_have_zero_mean_unit_variance() {
        let mut w: Vec<f32> = (0..18).map(|i| (i * i) as f32 * 0.1).collect();
        standardize(&mut w, 2, 0.0, None, 1.0);
        for c in w.chunks(9) {
            let m: f64 = c.iter().map(|&v| v as f64).sum::<f64>() / 9.0;
            let v: f64 = c.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / 9.0;
            assert!(m.abs() < 1e-6 && (v - 1.0).abs() < 1e-5);
        }
    }
}
