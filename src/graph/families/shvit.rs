//! SHViT (timm's `shvit.py`): `shvit_s1` .. `shvit_s4`.
//!
//! A stride-16 stem of four 3×3 stride-2 `Conv2dNorm`s with ReLUs, then three stages of
//! `BasicBlock`s: a residual 3×3 depthwise `Conv2dNorm`, for type `s` a residual single-head
//! self-attention over the first `partial_dim` channels (GroupNorm1, one `qkv` Conv2dNorm, the
//! rest of the channels passed through, ReLU + `Conv2dNorm` projection over all of them), and a
//! residual 1×1 FFN. A stage that widens starts with a residual depthwise conv, a residual FFN,
//! `PatchMerging` (1×1, stride-2 depthwise, SqueezeExcite, 1×1) and the same two residuals.
//! Every `Conv2dNorm`'s BatchNorm is folded at load. Head: global pool and `NormLinear`
//! (BatchNorm1d + Linear).
//!
//! Nothing is sized for one resolution, so the graph takes any input size. Feature maps:
//! `stages.{i}` (timm's `FeatureListNet`).

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::conv::conv_bn_init;
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::se::{rd_channels, SqueezeExcite};
use crate::graph::layers::{self, act, batch_norm, group_norm, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;
use serde_json::Value as Json;

static TABLE: Table = Table::new(include_str!("../tables/shvit.json"));

/// The `shvit` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "shvit",
    examples: "shvit_s1, shvit_s2, shvit_s3, shvit_s4",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `SHViT.__init__`'s keyword arguments with timm's defaults.
    pub struct ShvitArgs {
        in_chans: usize = 3,
        /// Unset: config.json's root `global_pool`.
        global_pool: Option<String> = None,
        embed_dim: Vec<usize> = vec![128, 256, 384],
        partial_dim: Vec<usize> = vec![32, 64, 96],
        qk_dim: Vec<usize> = vec![16, 16, 16],
        depth: Vec<usize> = vec![1, 2, 3],
        types: Vec<String> = vec!["s".into(), "s".into(), "s".into()],
        norm_layer: String = "groupnorm1".into(),
        act_layer: String = "relu".into(),
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// `nn.BatchNorm2d` / `BatchNorm1d` and `GroupNorm1` eps.
const EPS: f32 = 1e-5;

#[derive(Debug, Clone)]
struct Stage {
    dim: usize,
    pdim: usize,
    qk_dim: usize,
    depth: usize,
    attn: bool,
}

fn resolve(cfg: &ModelConfig) -> Result<(Vec<Stage>, PoolKind)> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not an SHViT architecture this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = ShvitArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    // timm calls these classes (a string in config.json would not construct in timm either).
    if v.act_layer != "relu" {
        return Err(a.unsupported("act_layer", "only timm's default (ReLU) is built"));
    }
    if !v.norm_layer.eq_ignore_ascii_case("groupnorm1") {
        return Err(a.unsupported("norm_layer", "only timm's default (GroupNorm1) is built"));
    }
    let n = v.embed_dim.len();
    let short = [
        v.partial_dim.len(),
        v.qk_dim.len(),
        v.depth.len(),
        v.types.len(),
    ]
    .iter()
    .any(|&l| l < n);
    if n == 0 || n > 8 || short || v.embed_dim[0] < 8 {
        return Err(Error::invalid_model(format!(
            "SHViT embed_dim {:?}: 1..=8 stages (the first at least 8 wide), partial_dim, qk_dim, depth and types for each",
            v.embed_dim
        )));
    }
    let mut stages = Vec::with_capacity(n);
    for i in 0..n {
        let attn = match v.types[i].as_str() {
            "s" => true,
            "i" => false,
            _ => return Err(a.unsupported("types", "timm's block types are 's' and 'i'")),
        };
        let (dim, pdim, qk) = (v.embed_dim[i], v.partial_dim[i], v.qk_dim[i]);
        if attn && (pdim == 0 || pdim > dim || qk == 0) {
            return Err(Error::invalid_model(format!(
                "SHViT stage {i}: partial_dim {pdim} must be in 1..={dim} and qk_dim {qk} positive"
            )));
        }
        stages.push(Stage {
            dim,
            pdim,
            qk_dim: qk,
            depth: v.depth[i],
            attn,
        });
    }
    let pool_name = v
        .global_pool
        .as_ref()
        .or(cfg.global_pool.as_ref())
        .map_or("avg", |s| s);
    let pool = PoolKind::from_timm(pool_name)?;
    if pool.multiplier() != 1 {
        return Err(a.unsupported("global_pool", "timm asserts a pool that keeps the width"));
    }
    Ok((stages, pool))
}

// ---------------------------------------------------------------------------------------------
// Graph

/// `Conv2dNorm` (`c` without bias, `bn`) folded; `bn_weight_init` as timm's for fresh weights.
fn conv2d_norm(b: &mut Builder, x: &Value, c: Conv, bn_weight_init: Init) -> Result<Value> {
    conv_bn_init(
        b,
        x,
        "c",
        "bn",
        c.init(Init::DefaultUniform),
        EPS,
        bn_weight_init,
    )
}

fn k3(i: usize, o: usize, stride: usize) -> Conv {
    Conv::new(i, o, 3).stride(stride).pad(Pad::Sym(1))
}

fn pw(i: usize, o: usize) -> Conv {
    Conv::new(i, o, 1).pad(Pad::Sym(0))
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let (stages, pool) = resolve(cfg)?;
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    let stem = stages[0].dim;
    let mut x = {
        let s = &mut b.scope("patch_embed");
        let widths = [in_ch, stem / 8, stem / 4, stem / 2, stem];
        let mut x = input;
        for i in 0..4 {
            let c = k3(widths[i], widths[i + 1], 2);
            x = conv2d_norm(&mut s.scope(2 * i), &x, c, Init::Ones)?;
            if i < 3 {
                x = act(s, "relu", &x)?;
            }
        }
        x
    };
    let mut prev = stem;
    for (i, st) in stages.iter().enumerate() {
        let mut ss = b.scope("stages");
        let s = &mut ss.scope(i);
        if prev != st.dim {
            let mut d = s.scope("downsample");
            x = dw_residual(&mut d.scope(0), &x, prev, Init::Ones)?;
            x = ffn_residual(&mut d.scope(1), &x, prev)?;
            x = patch_merging(&mut d.scope(2), &x, prev, st.dim)?;
            x = dw_residual(&mut d.scope(3), &x, st.dim, Init::Ones)?;
            x = ffn_residual(&mut d.scope(4), &x, st.dim)?;
        }
        for j in 0..st.depth {
            let mut blocks = s.scope("blocks");
            let bb = &mut blocks.scope(j);
            x = dw_residual(&mut bb.scope("conv"), &x, st.dim, Init::Zeros)?;
            if st.attn {
                let m = &mut bb.scope("mixer");
                let y = shsa(&mut m.scope("m"), &x, st)?;
                x = layers::add(m, &x, &y);
            }
            x = ffn_residual(&mut bb.scope("ffn"), &x, st.dim)?;
        }
        s.feature(&x, st.dim, 1 << (i + 4), &format!("stages.{i}"));
        prev = st.dim;
    }
    if pool == PoolKind::None && b.output() != OutputKind::FeatureMaps {
        // Feature maps need no pool (timm's features_only takes global_pool '' too).
        return Err(Error::unsupported(
            "SHViT with global_pool '' (a classifier per position) is not built natively",
        ));
    }
    let pooled = global_pool(b, &x, pool);
    if b.output() == OutputKind::Features || cfg.num_classes == 0 || pool == PoolKind::None {
        return Ok((pooled, prev));
    }
    let h = &mut b.scope("head");
    let y = batch_norm(&mut h.scope("bn"), &pooled, prev, EPS)?;
    let k = cfg.num_classes;
    let y = linear_2d(
        &mut h.scope("l"),
        &y,
        prev,
        k,
        true,
        Init::TruncNormal(0.02),
    )?;
    Ok((y, k))
}

/// `Residual(Conv2dNorm(dim, dim, 3, 1, 1, groups=dim))`.
fn dw_residual(b: &mut Builder, x: &Value, dim: usize, bn_init: Init) -> Result<Value> {
    let y = conv2d_norm(&mut b.scope("m"), x, k3(dim, dim, 1).depthwise(), bn_init)?;
    Ok(layers::add(b, x, &y))
}

/// `Residual(FFN(dim, 2·dim))`: `pw1`, ReLU, `pw2`.
fn ffn_residual(b: &mut Builder, x: &Value, dim: usize) -> Result<Value> {
    let y = {
        let m = &mut b.scope("m");
        let y = conv2d_norm(&mut m.scope("pw1"), x, pw(dim, 2 * dim), Init::Ones)?;
        let y = act(m, "relu", &y)?;
        let y = conv2d_norm(&mut m.scope("pw2"), &y, pw(2 * dim, dim), Init::Zeros)?;
        y
    };
    Ok(layers::add(b, x, &y))
}

/// `PatchMerging`: 1×1 to `4·dim`, ReLU, stride-2 depthwise 3×3, ReLU, SqueezeExcite(0.25), 1×1.
fn patch_merging(b: &mut Builder, x: &Value, dim: usize, out: usize) -> Result<Value> {
    let hid = 4 * dim;
    let y = conv2d_norm(&mut b.scope("conv1"), x, pw(dim, hid), Init::Ones)?;
    let y = act(b, "relu", &y)?;
    let y = conv2d_norm(
        &mut b.scope("conv2"),
        &y,
        k3(hid, hid, 2).depthwise(),
        Init::Ones,
    )?;
    let y = act(b, "relu", &y)?;
    let se = SqueezeExcite::se_module(hid, rd_channels(hid, 0.25, 8));
    let y = se.apply(&mut b.scope("se"), &y)?;
    conv2d_norm(&mut b.scope("conv3"), &y, pw(hid, out), Init::Ones)
}

/// `SHSA`: single-head attention over the first `pdim` channels (GroupNorm1, `qkv`), the rest
/// passed through, then ReLU and the `proj` Conv2dNorm over all channels.
fn shsa(b: &mut Builder, x: &Value, st: &Stage) -> Result<Value> {
    let (dim, pdim, qk) = (st.dim, st.pdim, st.qk_dim);
    let (x1, x2) = if pdim < dim {
        let p = layers::split(b, x, 1, &[pdim, dim - pdim]);
        (p[0].clone(), Some(p[1].clone()))
    } else {
        (x.clone(), None)
    };
    let shape = b.op("Shape", &[&x1], vec![]);
    let y = group_norm(&mut b.scope("pre_norm"), &x1, 1, pdim, EPS)?;
    let qkv = conv2d_norm(&mut b.scope("qkv"), &y, pw(pdim, 2 * qk + pdim), Init::Ones)?;
    let p = layers::split(b, &qkv, 1, &[qk, qk, pdim]);
    let flat = |b: &mut Builder, t: &Value, c: usize| layers::reshape(b, t, &[0, c as i64, -1]);
    let q = flat(b, &p[0], qk);
    let k = flat(b, &p[1], qk);
    let v = flat(b, &p[2], pdim);
    // (qᵀ k) · scale, softmax over keys, then v attnᵀ.
    let qt = layers::transpose(b, &q, &[0, 2, 1]);
    let attn = b.op("MatMul", &[&qt, &k], vec![]);
    let attn = layers::scale(b, &attn, (qk as f32).powf(-0.5));
    let attn = b.op("Softmax", &[&attn], vec![("axis", Attr::Int(-1))]);
    let at = layers::transpose(b, &attn, &[0, 2, 1]);
    let y = b.op("MatMul", &[&v, &at], vec![]);
    let y = b.op("Reshape", &[&y, &shape], vec![]);
    let y = match x2 {
        Some(x2) => layers::concat(b, &[&y, &x2], 1),
        None => y,
    };
    let mut s = b.scope("proj");
    let y = act(&mut s, "relu", &y)?;
    let y = conv2d_norm(&mut s.scope(1), &y, pw(dim, dim), Init::Zeros)?;
    Ok(y)
}
