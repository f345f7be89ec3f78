//! iFormer (timm `iformer.py`): a ConvNeXt-like mobile convnet whose late stages interleave
//! groups of `RepCPE` (depthwise positional conv), `SHMABlock` (single-head modulation
//! attention over the whole map) and `FFN`.
//!
//! Every `ConvNorm` (conv + BatchNorm) is folded at load. `SHMA` is one attention head: q and k
//! from 1x1 `ConvNorm`s, a sigmoid on the `v_gate` conv split into value and gate, softmax
//! attention over all positions, the result gated and projected. The head is timm's
//! `RepVitClassifier` (BatchNorm1d + Linear, averaged with `head_dist` for the distilled models),
//! folded into one Gemm. Any input size (the attention is global).
//!
//! Feature maps: `stages.<i>` at reductions 4, 8, 16, 32 (timm's `feature_info`).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::heads::rep_vit_classifier;
use crate::graph::layers::{self, act, add, conv_bn, reduce_mean, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/iformer.json"));

/// The `iformer` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "iformer",
    examples:
        "iformer_t .. iformer_h, iformer_m_distilled, iformer_l_distilled, iformer_l2_distilled",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

/// `nn.BatchNorm2d` / `BatchNorm1d` eps.
const EPS: f32 = 1e-5;

timm_args! {
    /// `IFormer.__init__`'s keyword arguments with timm's defaults.
    pub struct IFormerArgs {
        in_chans: usize = 3,
        global_pool: String = "avg".into(),
        dims: Vec<usize> = vec![32, 64, 128, 256],
        depths: Vec<usize> = vec![2, 2, 16, 6],
        attn_groups: Vec<usize> = vec![0, 0, 3, 2],
        attn_head_dim_reduction: Vec<usize> = vec![0, 0, 2, 4],
        conv_ratio: usize = 3,
        ffn_ratio: usize = 2,
        attn_ratio: f64 = 1.0,
        layer_scale_init_value: f64 = 0.0,
        distillation: bool = false,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not an iFormer architecture this build knows"
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = IFormerArgs::read(&a)?;
    let n = v.depths.len();
    if n == 0
        || v.dims.len() != n
        || v.attn_groups.len() != n
        || v.attn_head_dim_reduction.len() != n
        || v.dims.iter().any(|&d| d < 2)
        || (0..n).any(|i| v.depths[i] < 3 * v.attn_groups[i])
        || (0..n).any(|i| v.attn_groups[i] > 0 && v.attn_head_dim_reduction[i] == 0)
    {
        return Err(Error::invalid_model(format!(
            "iFormer dims {:?}, depths {:?}, attn_groups {:?}, attn_head_dim_reduction {:?} (each attention group takes three blocks)",
            v.dims, v.depths, v.attn_groups, v.attn_head_dim_reduction
        )));
    }
    if !matches!(v.global_pool.as_str(), "avg" | "") {
        return Err(a.unsupported("global_pool", "iFormer pools with 'avg' (or '')"));
    }
    let ls = (v.layer_scale_init_value > 0.0).then_some(v.layer_scale_init_value as f32);

    let input = b.input();
    let mut x = stem(&mut b.scope("stem"), &input, v.in_chans, v.dims[0])?;
    let mut prev = v.dims[0];
    {
        let st = &mut b.scope("stages");
        for i in 0..n {
            let dim = v.dims[i];
            let s = &mut st.scope(i);
            if prev != dim {
                let c = Conv::new(prev, dim, 3).stride(2).pad(Pad::Sym(1));
                x = conv_bn(&mut s.scope("downsample"), &x, "c", "bn", c, EPS)?;
            }
            {
                let bl = &mut s.scope("blocks");
                let g = v.attn_groups[i];
                // timm's layout: all ConvBlocks, or [prefix convs, groups of (RepCPE, SHMA,
                // FFN), one suffix conv] with the convs left over.
                let num_conv = v.depths[i] - 3 * g;
                let (prefix, suffix) = match (g, num_conv) {
                    (0, _) => (v.depths[i], 0),
                    (_, 0) => (0, 0),
                    _ => (num_conv - 1, 1),
                };
                let mut j = 0;
                for _ in 0..prefix {
                    x = conv_block(&mut bl.scope(j), &x, dim, v.conv_ratio, ls)?;
                    j += 1;
                }
                for _ in 0..g {
                    let hdrr = v.attn_head_dim_reduction[i];
                    x = rep_cpe(&mut bl.scope(j), &x, dim)?;
                    x = shma_block(&mut bl.scope(j + 1), &x, dim, v.attn_ratio, hdrr, ls)?;
                    x = ffn(&mut bl.scope(j + 2), &x, dim, v.ffn_ratio, ls)?;
                    j += 3;
                }
                if suffix > 0 {
                    x = conv_block(&mut bl.scope(j), &x, dim, v.conv_ratio, ls)?;
                }
            }
            s.feature(&x, dim, 1 << (i + 2), &format!("stages.{i}"));
            prev = dim;
        }
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, prev));
    }
    if v.global_pool.is_empty() {
        return Err(a.unsupported(
            "global_pool",
            "unpooled features ('') are not built natively; use output=feature_maps",
        ));
    }
    let pooled = reduce_mean(b, &x, &[2, 3], false);
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, prev));
    }
    let h = &mut b.scope("head");
    let y = rep_vit_classifier(h, &pooled, prev, cfg.num_classes, v.distillation, EPS)?;
    Ok((y, cfg.num_classes))
}

/// A `ConvNorm` (`c` + `bn`, folded) in the current scope.
fn conv_norm(b: &mut Builder, x: &Value, c: Conv) -> Result<Value> {
    conv_bn(b, x, "c", "bn", c, EPS)
}

/// `Residual`'s `gamma` `[1, C, 1, 1]` when layer scale is on.
fn residual(b: &mut Builder, x: &Value, y: &Value, dim: usize, ls: Option<f32>) -> Result<Value> {
    let y = match ls {
        Some(init) => {
            let g = b.param("gamma", &[1, dim, 1, 1], Init::Const(init))?;
            b.op("Mul", &[y, &g], vec![])
        }
        None => y.clone(),
    };
    Ok(add(b, x, &y))
}

/// `Stem`: two strided 5x5 `ConvNorm`s with GELU, then a 1x1 `ConvNorm`.
fn stem(b: &mut Builder, x: &Value, in_ch: usize, out: usize) -> Result<Value> {
    let half = out / 2;
    let c1 = Conv::new(in_ch, half, 5).stride(2).pad(Pad::Sym(2));
    let y = conv_norm(&mut b.scope("conv1"), x, c1)?;
    let y = act(b, "gelu", &y)?;
    let c2 = Conv::new(half, half * 4, 5).stride(2).pad(Pad::Sym(2));
    let y = conv_norm(&mut b.scope("conv2"), &y, c2)?;
    let y = act(b, "gelu", &y)?;
    conv_norm(&mut b.scope("conv3"), &y, Conv::new(half * 4, out, 1))
}

/// `ConvBlock`: depthwise 7x7, 1x1 expand, GELU, 1x1 project (`mixer.module.{0,1,3}`).
fn conv_block(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    ratio: usize,
    ls: Option<f32>,
) -> Result<Value> {
    let mid = ratio * dim;
    let dw = Conv::new(dim, dim, 7).pad(Pad::Sym(3)).depthwise();
    let y = conv_norm(&mut b.scope("mixer.module.0"), x, dw)?;
    let y = conv_norm(&mut b.scope("mixer.module.1"), &y, Conv::new(dim, mid, 1))?;
    let y = act(b, "gelu", &y)?;
    let y = conv_norm(&mut b.scope("mixer.module.3"), &y, Conv::new(mid, dim, 1))?;
    residual(&mut b.scope("mixer"), x, &y, dim, ls)
}

/// `FFN`: 1x1 expand, GELU, 1x1 project (`mixer.module.{0,2}`).
fn ffn(b: &mut Builder, x: &Value, dim: usize, ratio: usize, ls: Option<f32>) -> Result<Value> {
    let mid = ratio * dim;
    let y = conv_norm(&mut b.scope("mixer.module.0"), x, Conv::new(dim, mid, 1))?;
    let y = act(b, "gelu", &y)?;
    let y = conv_norm(&mut b.scope("mixer.module.2"), &y, Conv::new(mid, dim, 1))?;
    residual(&mut b.scope("mixer"), x, &y, dim, ls)
}

/// `RepCPE`: `x + ConvNorm(depthwise 3x3)(x)` (`cpe.module`), never layer-scaled.
fn rep_cpe(b: &mut Builder, x: &Value, dim: usize) -> Result<Value> {
    let dw = Conv::new(dim, dim, 3).pad(Pad::Sym(1)).depthwise();
    let y = conv_norm(&mut b.scope("cpe.module"), x, dw)?;
    Ok(add(b, x, &y))
}

/// `SHMABlock`: `x + gamma · SHMA(x)` (`mixer.module`, `mixer.gamma`).
fn shma_block(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    ratio: f64,
    hdrr: usize,
    ls: Option<f32>,
) -> Result<Value> {
    let y = shma(&mut b.scope("mixer.module"), x, dim, ratio, hdrr)?;
    residual(&mut b.scope("mixer"), x, &y, dim, ls)
}

/// `SHMA` on an NCHW map: one head of `dim / hdrr` channels for q and k over all positions, a
/// sigmoid `v_gate` split into value and gate (`mid = int(dim · ratio)` each).
fn shma(b: &mut Builder, x: &Value, dim: usize, ratio: f64, hdrr: usize) -> Result<Value> {
    let mid = (dim as f64 * ratio) as usize;
    let da = dim / hdrr;
    if da == 0 || mid == 0 {
        return Err(Error::invalid_model(format!(
            "iFormer SHMA: dim {dim}, attn_ratio {ratio}, head_dim_reduction {hdrr}"
        )));
    }
    let q = conv_norm(&mut b.scope("q"), x, Conv::new(dim, da, 1))?;
    let k = conv_norm(&mut b.scope("k"), x, Conv::new(dim, da, 1))?;
    let vg = conv_norm(&mut b.scope("v_gate"), x, Conv::new(dim, 2 * mid, 1))?;
    let vg = b.op("Sigmoid", &[&vg], vec![]);
    let parts = layers::split(b, &vg, 1, &[mid, mid]);
    let (v, gate) = (&parts[0], &parts[1]);
    // [N, C, H, W] -> [N, HW, C]
    let tokens = |b: &mut Builder, t: &Value, c: usize| {
        let t = layers::reshape(b, t, &[0, c as i64, -1]);
        layers::transpose(b, &t, &[0, 2, 1])
    };
    let qt = tokens(b, &q, da);
    let kt = layers::reshape(b, &k, &[0, da as i64, -1]);
    let vt = tokens(b, v, mid);
    let qt = layers::scale(b, &qt, (da as f32).powf(-0.5));
    let logits = b.op("MatMul", &[&qt, &kt], vec![]);
    let p = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
    let y = b.op("MatMul", &[&p, &vt], vec![]);
    // [N, HW, mid] -> [N, mid, H, W], the gate's shape.
    let y = layers::transpose(b, &y, &[0, 2, 1]);
    let shape = b.op("Shape", &[gate], vec![]);
    let y = b.op("Reshape", &[&y, &shape], vec![]);
    let y = layers::mul(b, gate, &y);
    conv_norm(&mut b.scope("proj"), &y, Conv::new(mid, dim, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_architecture_builds_its_shapes() {
        // The dry run (shapes only) of every table entry: its pre-logits width is timm's
        // num_features.
        for name in TABLE.names() {
            let cfg =
                ModelConfig::parse(TABLE.get(name).unwrap().config.to_string().as_bytes()).unwrap();
            let [_, h, w] = cfg.pretrained_cfg.input_size;
            let g = crate::graph::build_shapes(
                &cfg,
                crate::graph::ParamSource::Shapes,
                &crate::graph::Request {
                    output: OutputKind::Features,
                    ..Default::default()
                },
                (h, w),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            let dim = match g.outputs[0].shape {
                crate::graph::OutputShape::Vector(d) => d,
                _ => 0,
            };
            assert_eq!(Some(dim), cfg.num_features, "{name}");
        }
    }
}
