//! timm's `AttentionPool2d` (CLIP's ResNet head): multi-head attention over the map's tokens
//! with their mean as the query token, learned absolute positions resampled to the map's size.

use super::attention::{attention_core, AttnCfg, Hooks};
use super::mlp::linear;
use super::pos_embed::{resample_abs_pos_embed, Resample};
use super::{concat, nchw_to_tokens, reduce_mean, reshape};
use crate::error::{Error, Result};
use crate::graph::{Attr, Builder, Init, Value};

/// `AttentionPool2d(in_features, feat_size, out_features, embed_dim, qkv_separate=True)`.
#[derive(Debug, Clone, Copy)]
pub struct AttentionPool2d {
    pub in_features: usize,
    pub embed_dim: usize,
    pub head_dim: usize,
    /// `out_features`: the `proj` width; 0 is no `proj` (the pre-logits width is `embed_dim`).
    pub out_features: usize,
    /// The grid `pos_embed` was made for (timm's `feat_size`).
    pub feat_size: (usize, usize),
}

impl AttentionPool2d {
    /// The token-pooled output of the NCHW map `x` (`[N, embed_dim]`, or `[N, out_features]`
    /// through `proj` unless `pre_logits`), with the parameters of the current scope. `grid`
    /// is the map's size: the graph is built for one input size, and `pos_embed` is resampled at
    /// load as timm resamples it in forward (bicubic, antialiased) when that is not `feat_size`.
    pub fn apply(
        &self,
        b: &mut Builder,
        x: &Value,
        grid: (usize, usize),
        pre_logits: bool,
    ) -> Result<Value> {
        let (c, e) = (self.in_features, self.embed_dim);
        if self.head_dim == 0 || !e.is_multiple_of(self.head_dim) {
            return Err(Error::invalid_model(format!(
                "AttentionPool2d: embed_dim {e} is not a multiple of head_dim {}",
                self.head_dim
            )));
        }
        let tokens = nchw_to_tokens(b, x, c);
        let mean = reduce_mean(b, &tokens, &[1], true);
        let t = concat(b, &[&mean, &tokens], 1);
        let (fh, fw) = self.feat_size;
        let init = Init::TruncNormal((c as f32).powf(-0.5));
        let shape = [fh * fw + 1, c];
        let pos = if grid == self.feat_size {
            b.param("pos_embed", &shape, init)?
        } else {
            let data = b.read("pos_embed", &shape, init)?;
            let r = Resample::default();
            let data = resample_abs_pos_embed(&data, c, self.feat_size, grid, 1, &r)?;
            b.tensor("pos_embed", data, &[grid.0 * grid.1 + 1, c])?
        };
        let pos = reshape(b, &pos, &[1, -1, c as i64]);
        let t = b.op("Add", &[&t, &pos], vec![]);
        // timm's init of q, k, v and pos_embed alike: trunc_normal(std = in_features^-0.5).
        let q = linear(&mut b.scope("q"), &t, c, e, true, init)?;
        let k = linear(&mut b.scope("k"), &t, c, e, true, init)?;
        let v = linear(&mut b.scope("v"), &t, c, e, true, init)?;
        let cfg = AttnCfg::new(e, e / self.head_dim);
        let hooks = Hooks {
            bias: None,
            rope: None,
        };
        let y = attention_core(b, &q, &k, &v, &cfg, &hooks)?;
        // pool_type 'token': the mean token's row (proj is per token, so it commutes).
        let first = b.ints(&[0]);
        let y = b.op("Gather", &[&y, &first], vec![("axis", Attr::Int(1))]);
        let y = reshape(b, &y, &[0, e as i64]);
        if pre_logits || self.out_features == 0 {
            return Ok(y);
        }
        let init = Init::DefaultUniform;
        linear(&mut b.scope("proj"), &y, e, self.out_features, true, init)
    }

    /// The output width: `out_features`, or `embed_dim` for pre-logits / no `proj`.
    pub fn width(&self, pre_logits: bool) -> usize {
        if pre_logits || self.out_features == 0 {
            self.embed_dim
        } else {
            self.out_features
        }
    }
}
