//! Next-ViT (timm `nextvit.py`, `NextViT`): stages of Next Convolution Blocks (NCB: patch
//! embedding, multi-head convolutional attention, ConvMlp) and Next Transformer Blocks (NTB:
//! efficient self-attention with average-pooled keys / values, then convolutional attention on a
//! projected slice, concatenated, ConvMlp).
//!
//! Every BatchNorm is folded at load: into the conv before it (stem, patch embeddings,
//! convolutional attention) or, as timm's `reparameterize` does, into the 1×1 conv / linear after
//! it (`norm` / `norm2` into `mlp.fc1`, `norm1` into `q`, `norm1` and the pooled keys'
//! `e_mhsa.norm` into `k` and `v`); a checkpoint saved after timm's fusion (no pre-norm weights)
//! loads as it is. The stage widths are fixed by timm's constructor; a checkpoint's own are read
//! from its weights. Convolutional with no position embedding: any input size.
//!
//! Feature maps: timm's `features_only` taps `stages.<i>` (NCHW, before the final norm).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention_core, AttnCfg, Hooks};
use crate::graph::layers::heads::classifier_head;
use crate::graph::layers::mlp::linear;
use crate::graph::layers::pool::{Pool2d, PoolKind};
use crate::graph::layers::{self, act, batch_norm, conv2d, conv_bn, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::transforms::BnStats;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/nextvit.json"));

/// The `nextvit` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "nextvit",
    examples: "nextvit_small, nextvit_base, nextvit_large",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

/// `nn.BatchNorm2d` / `nn.BatchNorm1d`.
const BN_EPS: f32 = 1e-5;

timm_args! {
    /// `NextViT.__init__`'s keyword arguments with timm's defaults.
    pub struct NextVitArgs {
        in_chans: usize = 3,
        global_pool: String = "avg".into(),
        stem_chs: Vec<usize> = vec![64, 32, 64],
        depths: Vec<usize> = vec![3, 4, 10, 3],
        strides: Vec<usize> = vec![1, 2, 2, 2],
        sr_ratios: Vec<usize> = vec![8, 4, 2, 1],
        head_dim: usize = 32,
        mix_block_ratio: f64 = 0.75,
        norm_layer: String = "batchnorm2d".into(),
        act_layer: Option<String> = None,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

#[derive(Debug, Clone)]
struct Block {
    /// NTB (else NCB).
    ntb: bool,
    in_chs: usize,
    out: usize,
    /// NTB: the attention branch's width (the rest is the conv-attention branch).
    mhsa: usize,
    hidden: usize,
    stride: usize,
}

#[derive(Debug, Clone)]
struct Stage {
    blocks: Vec<Block>,
    sr: usize,
}

#[derive(Debug, Clone)]
struct Cfg {
    in_chans: usize,
    stem: [usize; 3],
    stages: Vec<Stage>,
    head_dim: usize,
    act: String,
    pool: PoolKind,
}

/// Next-ViT's own `_make_divisible` (the min value is the divisor).
fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut n = (((v + d / 2.0) as i64 / divisor as i64) as usize * divisor).max(divisor);
    if (n as f64) < 0.9 * v {
        n += divisor;
    }
    n
}

/// timm's `stage_out_chs` and `stage_block_types` for `depths` (NTB = true).
fn default_layout(depths: &[usize]) -> Vec<Vec<(usize, bool)>> {
    let tail = |d: usize, w: usize, last: usize| {
        let mut v = vec![(w, false); d.saturating_sub(1)];
        if d > 0 {
            v.push((last, true));
        }
        v
    };
    let mut s2 = Vec::new();
    for _ in 0..depths[2] / 5 {
        s2.extend([(384, false); 4]);
        s2.push((512, true));
    }
    vec![
        vec![(96, false); depths[0]],
        tail(depths[1], 192, 256),
        s2,
        tail(depths[3], 768, 1024),
    ]
}

fn resolve(b: &Builder, cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a Next-ViT architecture this build knows"
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = NextVitArgs::read(&a)?;
    if v.norm_layer.to_ascii_lowercase().replace('_', "") != "batchnorm2d" {
        return Err(a.unsupported("norm_layer", "only BatchNorm2d is built natively"));
    }
    let act = match &v.act_layer {
        None => "relu".to_string(),
        Some(s) => layers::act::canonical(s)
            .map_err(|_| a.unsupported("act_layer", "not an activation native graphs build"))?
            .to_string(),
    };
    let pool = PoolKind::from_timm(&v.global_pool)?;
    if pool == PoolKind::None {
        return Err(a.unsupported(
            "global_pool",
            "native graphs return one pooled vector per image",
        ));
    }
    if v.in_chans != cfg.pretrained_cfg.input_size[0] {
        return Err(Error::invalid_model(format!(
            "model_args in_chans {} but the pretrained cfg's input has {} channels",
            v.in_chans, cfg.pretrained_cfg.input_size[0]
        )));
    }
    if v.depths.len() != 4
        || v.strides.len() != 4
        || v.sr_ratios.len() != 4
        || v.stem_chs.len() != 3
    {
        return Err(Error::invalid_model(
            "Next-ViT has four stages (depths, strides, sr_ratios) and three stem widths",
        ));
    }
    if v.head_dim == 0 || v.strides.iter().any(|&s| s != 1 && s != 2) || v.sr_ratios.contains(&0) {
        return Err(Error::invalid_model(format!(
            "Next-ViT head_dim {}, strides {:?}, sr_ratios {:?}",
            v.head_dim, v.strides, v.sr_ratios
        )));
    }
    let layout = default_layout(&v.depths);
    let weights = b.weights().is_some();
    let shape = |k: &str| b.weight_shape(k).map(|s| s[0]);
    let mut stem = [v.stem_chs[0], v.stem_chs[1], v.stem_chs[2]];
    if weights {
        for (i, c) in stem.iter_mut().enumerate() {
            if let Some(w) = shape(&format!("stem.{i}.conv.weight")) {
                *c = w;
            }
        }
    }
    let mut in_chs = stem[2];
    let mut stages = Vec::with_capacity(4);
    for (i, plan) in layout.iter().enumerate() {
        // A checkpoint's blocks and widths are its own.
        let plan: Vec<(usize, bool)> = if weights {
            let key = |j: usize, k: &str| format!("stages.{i}.blocks.{j}.{k}");
            (0..)
                .take_while(|&j| b.has_module(&format!("stages.{i}.blocks.{j}")))
                .map(|j| {
                    let out = shape(&key(j, "mlp.fc2.weight")).unwrap_or(0);
                    (out, b.has_module(&key(j, "e_mhsa")))
                })
                .collect()
        } else {
            plan.clone()
        };
        if plan.is_empty() {
            return Err(Error::invalid_model(format!(
                "Next-ViT stage {i} has no blocks"
            )));
        }
        let mut blocks = Vec::with_capacity(plan.len());
        for (j, &(out, ntb)) in plan.iter().enumerate() {
            let key = |k: &str| format!("stages.{i}.blocks.{j}.{k}");
            let mut mhsa = if ntb {
                make_divisible((out as f64 * v.mix_block_ratio).trunc(), 32)
            } else {
                out
            };
            let ratio = if ntb { 2.0 } else { 3.0 };
            let mut hidden = (out as f64 * ratio) as usize;
            if weights {
                if ntb {
                    mhsa = shape(&key("e_mhsa.q.weight")).unwrap_or(0);
                }
                hidden = shape(&key("mlp.fc1.weight")).unwrap_or(0);
            }
            let conv_part = if ntb {
                out.checked_sub(mhsa)
            } else {
                Some(out)
            };
            let ok = out > 0
                && hidden > 0
                && mhsa > 0
                && mhsa.is_multiple_of(v.head_dim)
                && conv_part.is_some_and(|c| c > 0 && c.is_multiple_of(v.head_dim));
            if !ok {
                return Err(Error::invalid_model(format!(
                    "Next-ViT stage {i} block {j}: width {out} (attention part {mhsa}) and head_dim {}",
                    v.head_dim
                )));
            }
            blocks.push(Block {
                ntb,
                in_chs,
                out,
                mhsa,
                hidden,
                stride: if j == 0 { v.strides[i] } else { 1 },
            });
            in_chs = out;
        }
        stages.push(Stage {
            blocks,
            sr: v.sr_ratios[i],
        });
    }
    Ok(Cfg {
        in_chans: v.in_chans,
        stem,
        stages,
        head_dim: v.head_dim,
        act,
        pool,
    })
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(b, cfg)?;
    let mut x = b.input();
    {
        let mut s = b.scope("stem");
        let chs = [c.in_chans, c.stem[0], c.stem[1], c.stem[2], c.stem[2]];
        for (i, stride) in [2, 1, 1, 2].into_iter().enumerate() {
            let conv = Conv::new(chs[i], chs[i + 1], 3)
                .stride(stride)
                .pad(Pad::Sym(1));
            let mut l = s.scope(i);
            let y = conv_bn(&mut l, &x, "conv", "norm", conv, BN_EPS)?;
            x = act(&mut l, &c.act, &y)?;
        }
    }
    let mut ch = c.stem[2];
    for (i, st) in c.stages.iter().enumerate() {
        let mut ss = b.scope("stages");
        let mut s = ss.scope(i);
        for (j, blk) in st.blocks.iter().enumerate() {
            let mut bs = s.scope("blocks");
            let l = &mut bs.scope(j);
            x = if blk.ntb {
                ntb(l, &x, blk, st.sr, &c)?
            } else {
                ncb(l, &x, blk, &c)?
            };
            ch = blk.out;
        }
        // timm's reduction 2^(i + 2), whatever the strides.
        s.feature(&x, ch, 4 << i, &format!("stages.{i}"));
    }
    let x = batch_norm(&mut b.scope("norm"), &x, ch, BN_EPS)?;
    let features = b.output() == OutputKind::Features;
    classifier_head(
        &mut b.scope("head"),
        &x,
        ch,
        c.pool,
        cfg.num_classes,
        features,
    )
}

/// `PatchEmbed`: a 2×2 average pool (ceil mode, padding not counted) when strided, a 1×1 conv
/// and BatchNorm (folded) when the width changes or it strides, else nothing.
fn patch_embed(
    b: &mut Builder,
    x: &Value,
    in_chs: usize,
    out: usize,
    stride: usize,
) -> Result<Value> {
    let mut x = x.clone();
    if stride == 2 {
        x = Pool2d::new(2, 2, 0)
            .ceil(true)
            .count_include_pad(false)
            .avg(b, &x, in_chs)?;
    } else if in_chs == out {
        return Ok(x);
    }
    let conv = Conv::new(in_chs, out, 1).pad(Pad::Sym(0));
    conv_bn(b, &x, "conv", "norm", conv, BN_EPS)
}

/// `ConvAttention`: grouped 3×3 (`head_dim` channels a group) + BatchNorm (folded), act,
/// 1×1 `projection`.
fn conv_attention(b: &mut Builder, x: &Value, ch: usize, c: &Cfg) -> Result<Value> {
    let g = Conv::new(ch, ch, 3)
        .groups(ch / c.head_dim)
        .pad(Pad::Sym(1));
    let y = conv_bn(b, x, "group_conv3x3", "norm", g, BN_EPS)?;
    let y = act(b, &c.act, &y)?;
    conv2d(
        &mut b.scope("projection"),
        &y,
        Conv::new(ch, ch, 1).pad(Pad::Sym(0)),
    )
}

/// The BatchNorms in `norms` (scopes, applied in order) as one per-channel affine, for folding
/// into what follows; a norm the weights lack (a fused checkpoint) is the identity.
fn pre_affine(b: &mut Builder, norms: &[&str], ch: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut s, mut t) = (vec![1.0f64; ch], vec![0.0f64; ch]);
    for n in norms {
        let mut sc = b.scope(*n);
        if sc.weights().is_some() && !sc.has_weight("running_var") {
            continue;
        }
        let (s2, t2) = BnStats::read(&mut sc, ch, BN_EPS)?.affine();
        for k in 0..ch {
            s[k] *= s2[k];
            t[k] = t[k] * s2[k] + t2[k];
        }
    }
    Ok((s, t))
}

/// A 1×1 conv (`conv`) or linear over `[in]` with a per-input-channel affine folded in
/// (timm's `merge_pre_bn`): `W·diag(s)` and `b + W·t`.
fn fused_fc(
    b: &mut Builder,
    x: &Value,
    in_f: usize,
    out: usize,
    affine: &(Vec<f64>, Vec<f64>),
    conv: bool,
) -> Result<Value> {
    let shape: Vec<usize> = if conv {
        vec![out, in_f, 1, 1]
    } else {
        vec![out, in_f]
    };
    let w = b.read("weight", &shape, Init::TruncNormal(0.02))?;
    let bias = b.read_opt("bias", &[out], Init::Zeros, true)?;
    let (s, t) = affine;
    let mut fw = vec![0.0f32; out * in_f];
    let mut fb = vec![0.0f32; out];
    for o in 0..out {
        let row = &w[o * in_f..(o + 1) * in_f];
        let mut acc = bias.as_ref().map_or(0.0, |v| v[o] as f64);
        for i in 0..in_f {
            acc += row[i] as f64 * t[i];
            fw[o * in_f + i] = (row[i] as f64 * s[i]) as f32;
        }
        fb[o] = acc as f32;
    }
    let bv = b.tensor("bias", fb, &[out])?;
    if conv {
        let wv = b.tensor("weight", fw, &shape)?;
        return Conv::new(in_f, out, 1)
            .pad(Pad::Sym(0))
            .bias(true)
            .emit(b, x, &wv, Some(&bv));
    }
    // [in, out] for the MatMul.
    let mut wt = vec![0.0f32; out * in_f];
    for o in 0..out {
        for i in 0..in_f {
            wt[i * out + o] = fw[o * in_f + i];
        }
    }
    let wv = b.tensor("weight", wt, &[in_f, out])?;
    let y = b.op("MatMul", &[x, &wv], vec![]);
    Ok(b.op("Add", &[&y, &bv], vec![]))
}

/// `ConvMlp` with the block's pre-norm (`norm`) folded into `fc1`: fc1, act, fc2.
fn conv_mlp(
    b: &mut Builder,
    x: &Value,
    norm: &str,
    ch: usize,
    hidden: usize,
    c: &Cfg,
) -> Result<Value> {
    let aff = pre_affine(b, &[norm], ch)?;
    let y = fused_fc(&mut b.scope("mlp").scope("fc1"), x, ch, hidden, &aff, true)?;
    let y = act(b, &c.act, &y)?;
    let fc2 = Conv::new(hidden, ch, 1).pad(Pad::Sym(0)).bias(true);
    conv2d(&mut b.scope("mlp").scope("fc2"), &y, fc2)
}

/// `NextConvBlock`: patch embedding, `x + mhca(x)`, `x + mlp(norm(x))`.
fn ncb(b: &mut Builder, x: &Value, blk: &Block, c: &Cfg) -> Result<Value> {
    let x = patch_embed(
        &mut b.scope("patch_embed"),
        x,
        blk.in_chs,
        blk.out,
        blk.stride,
    )?;
    let y = conv_attention(&mut b.scope("mhca"), &x, blk.out, c)?;
    let x = layers::add(b, &x, &y);
    let y = conv_mlp(b, &x, "norm", blk.out, blk.hidden, c)?;
    Ok(layers::add(b, &x, &y))
}

/// `NextTransformerBlock`: patch embedding to the attention width, `x + e_mhsa(norm1(x))`,
/// the conv-attention branch on its `projection`, both concatenated, `x + mlp(norm2(x))`.
fn ntb(b: &mut Builder, x: &Value, blk: &Block, sr: usize, c: &Cfg) -> Result<Value> {
    let d = blk.mhsa;
    let x = patch_embed(&mut b.scope("patch_embed"), x, blk.in_chs, d, blk.stride)?;
    // Tokens [N, L, d] of the raw map; norm1 is folded into q, k and v.
    let t = layers::nchw_to_tokens(b, &x, d);
    let q_aff = pre_affine(b, &["norm1"], d)?;
    let kv_aff = if sr > 1 {
        pre_affine(b, &["norm1", "e_mhsa.norm"], d)?
    } else {
        q_aff.clone()
    };
    let y = {
        let mut sc = b.scope("e_mhsa");
        let s = &mut sc;
        let q = fused_fc(&mut s.scope("q"), &t, d, d, &q_aff, false)?;
        let kv_in = if sr > 1 {
            // AvgPool1d over runs of sr² consecutive tokens (a per-channel affine commutes with
            // it, so both norms fold into k and v).
            let r = (sr * sr) as i64;
            let cl = layers::reshape(s, &x, &[0, d as i64, -1]);
            let p = s.op(
                "AveragePool",
                &[&cl],
                vec![
                    ("kernel_shape", Attr::Ints(vec![r])),
                    ("strides", Attr::Ints(vec![r])),
                ],
            );
            layers::transpose(s, &p, &[0, 2, 1])
        } else {
            t.clone()
        };
        let k = fused_fc(&mut s.scope("k"), &kv_in, d, d, &kv_aff, false)?;
        let v = fused_fc(&mut s.scope("v"), &kv_in, d, d, &kv_aff, false)?;
        let ac = AttnCfg::new(d, d / c.head_dim);
        let y = attention_core(s, &q, &k, &v, &ac, &Hooks::default())?;
        let y = linear(
            &mut s.scope("proj"),
            &y,
            d,
            d,
            true,
            Init::TruncNormal(0.02),
        )?;
        y
    };
    let y = layers::transpose(b, &y, &[0, 2, 1]);
    let shape = b.op("Shape", &[&x], vec![]);
    let y = b.op("Reshape", &[&y, &shape], vec![]);
    let x = layers::add(b, &x, &y);
    let conv_ch = blk.out - d;
    let p = patch_embed(&mut b.scope("projection"), &x, d, conv_ch, 1)?;
    let m = conv_attention(&mut b.scope("mhca"), &p, conv_ch, c)?;
    let p = layers::add(b, &p, &m);
    let x = layers::concat(b, &[&x, &p], 1);
    let y = conv_mlp(b, &x, "norm2", blk.out, blk.hidden, c)?;
    Ok(layers::add(b, &x, &y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_architecture_builds_its_shapes() {
        // The dry run (shapes only, no weight data) of every table entry at its own input size:
        // its pre-logits width is timm's num_features.
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
