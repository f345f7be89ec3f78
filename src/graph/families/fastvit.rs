//! FastViT and MobileCLIP's image towers (timm's `fastvit.py`): `fastvit_t8` .. `fastvit_ma36`,
//! `fastvit_mci0` .. `fastvit_mci4`.
//!
//! Every re-parameterisable module (MobileOne blocks, the large-kernel patch-embedding conv,
//! RepMixer, the conditional positional encoding) is read as timm stores it — its training-time
//! branches — and folded into one conv at load, as `reparameterize_model` does; folders written
//! after re-parameterisation (`reparam_conv`) load as they are. Refused with the reason:
//! `fork_feat` (the detection variant with per-stage norms).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention, AttnCfg, Hooks};
use crate::graph::layers::heads::classifier_head;
use crate::graph::layers::mlp::{conv_mlp, MlpCfg};
use crate::graph::layers::pool::PoolKind;
use crate::graph::layers::se::{rd_channels, SqueezeExcite};
use crate::graph::layers::{act, add, conv_norm_act, nchw_to_tokens, transpose, Conv, Norm};
use crate::graph::tables::Table;
use crate::graph::transforms::{fold_bn, identity_branch, sum_branches, BnStats, Branch};
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/fastvit.json"));

pub const FAMILY: Family = Family {
    name: "fastvit",
    examples:
        "fastvit_t8, fastvit_t12, fastvit_s12, fastvit_sa12..sa36, fastvit_ma36, fastvit_mci0..mci4",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

const BN_EPS: f32 = 1e-5;

timm_args! {
    /// `FastVit.__init__`'s arguments that shape the inference graph.
    struct FastVitArgs {
        layers: Vec<usize> = vec![2, 2, 6, 2],
        token_mixers: Vec<String> = vec!["repmixer".into(); 4],
        embed_dims: Vec<usize> = vec![64, 128, 256, 512],
        mlp_ratios: Vec<f64> = vec![4.0; 4],
        downsamples: Vec<bool> = vec![false, true, true, true],
        se_downsamples: Vec<bool> = vec![false; 4],
        repmixer_kernel_size: usize = 3,
        pos_embs: Json = Json::Null,
        down_patch_size: usize = 7,
        down_stride: usize = 2,
        layer_scale_init_value: Option<f32> = Some(1e-5),
        lkc_use_act: bool = false,
        stem_use_scale_branch: bool = true,
        fork_feat: bool = false,
        cls_ratio: f64 = 2.0,
        norm_layer: Json = Json::from("batchnorm2d"),
        act_layer: String = "gelu".into(),
        /// Read so config.json may carry it; the graph follows the weights (`reparam_conv`).
        #[allow(dead_code)]
        inference_mode: bool = false,
    }
}

/// `MobileOneBlock`'s shape: which branches it has besides `num_conv_branches` kxk convs.
#[derive(Debug, Clone, Copy)]
struct MobileOne {
    conv: Conv,
    num_conv_branches: usize,
    use_scale_branch: bool,
    use_se: bool,
    use_act: bool,
}

impl MobileOne {
    /// timm's defaults: one kxk branch, the 1x1 scale branch, no SE, the activation.
    fn new(in_chs: usize, out_chs: usize, k: usize, stride: usize, group_size: usize) -> Self {
        // `num_groups`: 0 is a plain conv, 1 depthwise.
        let groups = in_chs.checked_div(group_size).unwrap_or(1);
        let conv = Conv::new(in_chs, out_chs, k)
            .stride(stride)
            .groups(groups)
            .bias(true);
        MobileOne {
            conv,
            num_conv_branches: 1,
            use_scale_branch: true,
            use_se: false,
            use_act: true,
        }
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a fastvit architecture (timm's fastvit.py: {})",
            FAMILY.examples
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let r = FastVitArgs::read(&a)?;
    if r.fork_feat {
        return Err(a.unsupported(
            "fork_feat",
            "the detection variant (per-stage norms) is not implemented; use output=feature_maps",
        ));
    }
    let n = r.layers.len();
    let per_stage = [
        r.token_mixers.len(),
        r.embed_dims.len(),
        r.mlp_ratios.len(),
        r.downsamples.len(),
        r.se_downsamples.len(),
    ];
    if n == 0 || per_stage.iter().any(|&l| l < n) {
        return Err(Error::invalid_model(format!(
            "fastvit: layers has {n} stages but a per-stage argument is shorter ({per_stage:?})"
        )));
    }
    let pos_embs = pos_embs(&a, &r.pos_embs, n)?;
    let norm = norm_layer(&a, &r.norm_layer)?;
    let act_name = r.act_layer.as_str();

    // `convolutional_stem`: three MobileOne blocks, stride 4.
    let in_chs = cfg.pretrained_cfg.input_size[0];
    let e0 = r.embed_dims[0];
    let mut x = b.input();
    let stem_blocks = [
        MobileOne::new(in_chs, e0, 3, 2, 0),
        MobileOne::new(e0, e0, 3, 2, 1),
        MobileOne::new(e0, e0, 1, 1, 0),
    ];
    for (i, mut m) in stem_blocks.into_iter().enumerate() {
        m.use_scale_branch = r.stem_use_scale_branch;
        x = mobile_one_block(&mut b.scope("stem").scope(i), &x, &m, act_name)?;
    }

    let (mut prev, mut scale) = (e0, 1);
    for (i, &pos_emb) in pos_embs.iter().enumerate() {
        let dim = r.embed_dims[i];
        let downsample = r.downsamples[i] || prev != dim;
        let st = Stage {
            i,
            in_chs: prev,
            downsample,
            pos_emb,
            norm,
            act: act_name,
        };
        x = stage(&mut b.scope("stages").scope(i), &x, &a, &r, &st)?;
        prev = dim;
        if downsample {
            scale *= 2;
        }
        b.feature(&x, dim, 4 * scale, &format!("stages.{i}"));
    }
    if n > 4 {
        // `FeatureListNet`'s default: fastvit's entrypoints drop their own out_indices.
        b.default_out_indices(&[0, 1, 2, 3]);
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, prev));
    }

    // `final_conv`: a depthwise-grouped MobileOne block widening by cls_ratio, with SE.
    let num_features = (prev as f64 * r.cls_ratio) as usize;
    let mut fc = MobileOne::new(prev, num_features, 3, 1, 1);
    fc.use_se = true;
    let x = mobile_one_block(&mut b.scope("final_conv"), &x, &fc, act_name)?;
    let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or("avg"))?;
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "global_pool '' (unpooled features) is not supported by the native fastvit graph",
        ));
    }
    let features = b.output() == OutputKind::Features;
    classifier_head(
        &mut b.scope("head"),
        &x,
        num_features,
        pool,
        cfg.num_classes,
        features,
    )
}

/// What `FastVitStage` `i` is built with beyond the model's arguments.
struct Stage<'a> {
    i: usize,
    in_chs: usize,
    downsample: bool,
    pos_emb: Option<usize>,
    norm: Norm,
    act: &'a str,
}

/// `FastVitStage`: `downsample` (a `PatchEmbed`), `pos_emb`, then the blocks.
fn stage(b: &mut Builder, x: &Value, a: &Args, r: &FastVitArgs, st: &Stage) -> Result<Value> {
    let i = st.i;
    let dim = r.embed_dims[i];
    let mut x = x.clone();
    if st.downsample {
        let pe = PatchEmbed {
            patch_size: r.down_patch_size,
            stride: r.down_stride,
            in_chs: st.in_chs,
            embed_dim: dim,
            use_se: r.se_downsamples[i],
            lkc_act: r.lkc_use_act.then_some(st.act),
        };
        x = patch_embed(&mut b.scope("downsample").scope("proj"), &x, &pe, st.act)?;
    }
    if let Some(k) = st.pos_emb {
        x = rep_cpe(&mut b.scope("pos_emb"), &x, dim, k)?;
    }
    let hidden = (dim as f64 * r.mlp_ratios[i]) as usize;
    let ls = r.layer_scale_init_value;
    let mut blocks = b.scope("blocks");
    for j in 0..r.layers[i] {
        let blk = &mut blocks.scope(j);
        x = match r.token_mixers[i].as_str() {
            "repmixer" => {
                let k = r.repmixer_kernel_size;
                let y = rep_mixer(&mut blk.scope("token_mixer"), &x, dim, k, ls)?;
                residual(blk, &y, "layer_scale", dim, ls, |b, t| {
                    conv_ffn(&mut b.scope("mlp"), t, dim, hidden, st.act)
                })?
            }
            "attention" => attention_block(blk, &x, dim, hidden, &st.norm, ls, st.act)?,
            other => {
                return Err(a.unsupported(
                    "token_mixers",
                    &format!("token mixer `{other}` (timm takes 'repmixer' or 'attention')"),
                ))
            }
        };
    }
    Ok(x)
}

/// `pos_embs`: per stage, `RepConditionalPosEnc`'s square kernel or none.
fn pos_embs(a: &Args, v: &Json, n: usize) -> Result<Vec<Option<usize>>> {
    let bad = || {
        a.unsupported(
            "pos_embs",
            "a list of null or RepConditionalPosEnc partials",
        )
    };
    let list = match v {
        Json::Null => return Ok(vec![None; n]),
        Json::Array(l) => l,
        _ => return Err(bad()),
    };
    let mut out = vec![None; n];
    for (slot, e) in out.iter_mut().zip(list) {
        *slot = match e {
            Json::Null => None,
            Json::Object(o) => {
                let name = o.get("partial").and_then(Json::as_str).unwrap_or("");
                if name != "repconditionalposenc" {
                    return Err(bad());
                }
                let shape = o.get("spatial_shape").cloned().unwrap_or(Json::from(7));
                let k = match &shape {
                    Json::Number(k) => k.as_u64(),
                    Json::Array(hw) if hw.len() == 2 && hw[0] == hw[1] => hw[0].as_u64(),
                    _ => None,
                };
                match k {
                    Some(k @ 1..=31) => Some(k as usize),
                    _ => {
                        return Err(a.unsupported(
                            "pos_embs",
                            "RepConditionalPosEnc with a square odd kernel up to 31 only",
                        ))
                    }
                }
            }
            _ => return Err(bad()),
        };
    }
    Ok(out)
}

/// `norm_layer` of the attention blocks: a name or a partial with `eps`.
fn norm_layer(a: &Args, v: &Json) -> Result<Norm> {
    let (name, eps) = match v {
        Json::String(s) => (s.as_str(), None),
        Json::Object(o) => (
            o.get("partial").and_then(Json::as_str).unwrap_or(""),
            o.get("eps").and_then(Json::as_f64).map(|e| e as f32),
        ),
        _ => return Err(a.unsupported("norm_layer", "a norm name or partial")),
    };
    match Norm::from_timm(name, eps)? {
        n @ (Norm::Batch { .. } | Norm::Layer { .. }) => Ok(n),
        _ => Err(a.unsupported("norm_layer", "fastvit uses BatchNorm2d or LayerNorm2d")),
    }
}

// ---------------------------------------------------------------------------------------------
// re-parameterisable convs

/// One `ConvNormAct(apply_act=False)` branch (`conv`, `bn`) with its BatchNorm folded.
fn conv_bn_branch(b: &mut Builder, c: Conv) -> Result<Branch> {
    let w = b.scope("conv").read("weight", &c.weight_shape(), c.init)?;
    let bn = BnStats::read(&mut b.scope("bn"), c.out_ch, BN_EPS)?;
    let (weight, bias) = fold_bn(w, None, &bn);
    Ok(Branch {
        weight,
        bias,
        k: c.kernel.0,
    })
}

/// `MobileOneBlock._get_kernel_bias`: the kxk branches, the 1x1 scale branch and the identity
/// BatchNorm summed into one kxk kernel and bias.
fn mobile_one_kernel(b: &mut Builder, m: &MobileOne) -> Result<(Vec<f32>, Vec<f32>)> {
    let c = m.conv;
    let mut branches = Vec::new();
    for i in 0..m.num_conv_branches {
        branches.push(conv_bn_branch(
            &mut b.scope("conv_kxk").scope(i),
            c.bias(false),
        )?);
    }
    if c.kernel.0 > 1 && m.use_scale_branch {
        let s = Conv::new(c.in_ch, c.out_ch, 1)
            .stride(c.stride)
            .groups(c.groups);
        branches.push(conv_bn_branch(&mut b.scope("conv_scale"), s)?);
    }
    if c.in_ch == c.out_ch && c.stride == 1 {
        let bn = BnStats::read(&mut b.scope("identity"), c.out_ch, BN_EPS)?;
        branches.push(identity_branch(&bn, c.in_ch / c.groups));
    }
    let in_per_group = c.weight_shape()[1];
    Ok(sum_branches(&branches, c.out_ch, in_per_group, c.kernel.0))
}

/// Emits `c` as the folded `reparam_conv` of the current scope.
fn reparam_conv(b: &mut Builder, x: &Value, c: Conv, w: Vec<f32>, bias: Vec<f32>) -> Result<Value> {
    let wv = b.tensor("reparam_conv.weight", w, &c.weight_shape())?;
    let bv = b.tensor("reparam_conv.bias", bias, &[c.out_ch])?;
    c.emit(b, x, &wv, Some(&bv))
}

/// The module's own `reparam_conv` when the folder was saved re-parameterised.
fn saved_reparam(b: &mut Builder, c: Conv) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
    if !b.has_weight("reparam_conv.weight") {
        return Ok(None);
    }
    let w = b.read("reparam_conv.weight", &c.weight_shape(), c.init)?;
    let bias = b.read("reparam_conv.bias", &[c.out_ch], Init::Zeros)?;
    Ok(Some((w, bias)))
}

/// `MobileOneBlock`: the folded branches, SE (`se`, `rd_divisor=1`), activation.
fn mobile_one_block(b: &mut Builder, x: &Value, m: &MobileOne, act_name: &str) -> Result<Value> {
    let (w, bias) = match saved_reparam(b, m.conv)? {
        Some(wb) => wb,
        None => mobile_one_kernel(b, m)?,
    };
    let mut y = reparam_conv(b, x, m.conv, w, bias)?;
    if m.use_se {
        let ch = m.conv.out_ch;
        y = SqueezeExcite::se_module(ch, rd_channels(ch, 1.0 / 16.0, 1))
            .apply(&mut b.scope("se"), &y)?;
    }
    if m.use_act {
        y = act(b, act_name, &y)?;
    }
    Ok(y)
}

/// `PatchEmbed`'s arguments.
struct PatchEmbed<'a> {
    patch_size: usize,
    stride: usize,
    in_chs: usize,
    embed_dim: usize,
    use_se: bool,
    /// `lkc_use_act`: the large-kernel conv's activation (MobileCLIP).
    lkc_act: Option<&'a str>,
}

/// `PatchEmbed.proj`: `ReparamLargeKernelConv` (`0`), then a 1x1 MobileOne block (`1`).
fn patch_embed(b: &mut Builder, x: &Value, p: &PatchEmbed, act_name: &str) -> Result<Value> {
    let y = large_kernel_conv(&mut b.scope(0), x, p)?;
    let m = MobileOne::new(p.embed_dim, p.embed_dim, 1, 1, 0);
    mobile_one_block(&mut b.scope(1), &y, &m, act_name)
}

/// `ReparamLargeKernelConv`: `large_conv` + the 3x3 `small_conv` folded, SE (`rd_ratio=0.25`),
/// the optional activation.
fn large_kernel_conv(b: &mut Builder, x: &Value, p: &PatchEmbed) -> Result<Value> {
    let c = Conv::new(p.in_chs, p.embed_dim, p.patch_size)
        .stride(p.stride)
        .groups(p.in_chs)
        .bias(true);
    let (w, bias) = match saved_reparam(b, c)? {
        Some(wb) => wb,
        None => {
            let large = conv_bn_branch(&mut b.scope("large_conv"), c.bias(false))?;
            let small = Conv::new(p.in_chs, p.embed_dim, 3)
                .stride(p.stride)
                .groups(p.in_chs);
            let small = conv_bn_branch(&mut b.scope("small_conv"), small)?;
            sum_branches(&[large, small], c.out_ch, c.weight_shape()[1], c.kernel.0)
        }
    };
    let mut y = reparam_conv(b, x, c, w, bias)?;
    if p.use_se {
        let ch = p.embed_dim;
        y = SqueezeExcite::se_module(ch, rd_channels(ch, 0.25, 8)).apply(&mut b.scope("se"), &y)?;
    }
    match p.lkc_act {
        Some(a) => act(b, a, &y),
        None => Ok(y),
    }
}

/// The depthwise kxk identity kernel (`id_tensor` of a depthwise block).
fn add_identity(w: &mut [f32], ch: usize, k: usize) {
    let centre = (k / 2) * k + k / 2;
    for c in 0..ch {
        w[c * k * k + centre] += 1.0;
    }
}

/// `RepMixer`: `x + layer_scale * (mixer(x) - norm(x))`, both depthwise MobileOne blocks,
/// folded into one depthwise conv (timm's `RepMixer.reparameterize`).
fn rep_mixer(b: &mut Builder, x: &Value, dim: usize, k: usize, ls: Option<f32>) -> Result<Value> {
    let c = Conv::new(dim, dim, k).groups(dim).bias(true);
    let (w, bias) = match saved_reparam(b, c)? {
        Some(wb) => wb,
        None => {
            let mixer = MobileOne {
                use_act: false,
                ..MobileOne::new(dim, dim, k, 1, 1)
            };
            let (wm, bm) = mobile_one_kernel(&mut b.scope("mixer"), &mixer)?;
            let norm = MobileOne {
                num_conv_branches: 0,
                use_scale_branch: false,
                ..mixer
            };
            let (wn, bn) = mobile_one_kernel(&mut b.scope("norm"), &norm)?;
            let gamma = match ls {
                Some(init) => b.read("layer_scale.gamma", &[dim, 1, 1], Init::Const(init))?,
                None => vec![1.0; dim],
            };
            let per = k * k;
            let mut w: Vec<f32> = (0..dim * per)
                .map(|i| (gamma[i / per] as f64 * (wm[i] as f64 - wn[i] as f64)) as f32)
                .collect();
            add_identity(&mut w, dim, k);
            let bias = (0..dim)
                .map(|o| (gamma[o] as f64 * (bm[o] as f64 - bn[o] as f64)) as f32)
                .collect();
            (w, bias)
        }
    };
    reparam_conv(b, x, c, w, bias)
}

/// `RepConditionalPosEnc`: `pos_enc(x) + x` (a depthwise kxk conv) folded into one conv.
fn rep_cpe(b: &mut Builder, x: &Value, dim: usize, k: usize) -> Result<Value> {
    let c = Conv::new(dim, dim, k).groups(dim).bias(true);
    let (w, bias) = match saved_reparam(b, c)? {
        Some(wb) => wb,
        None => {
            let s = &mut b.scope("pos_enc");
            let mut w = s.read("weight", &c.weight_shape(), c.init)?;
            let bias = s.read("bias", &[dim], Init::Zeros)?;
            add_identity(&mut w, dim, k);
            (w, bias)
        }
    };
    reparam_conv(b, x, c, w, bias)
}

// ---------------------------------------------------------------------------------------------
// blocks

/// fastvit's `LayerScale2d` (`gamma` `[C, 1, 1]`), or nothing without `layer_scale_init_value`.
fn layer_scale(b: &mut Builder, x: &Value, dim: usize, init: Option<f32>) -> Result<Value> {
    match init {
        Some(v) => {
            let g = b.param("gamma", &[dim, 1, 1], Init::Const(v))?;
            Ok(b.op("Mul", &[x, &g], vec![]))
        }
        None => Ok(x.clone()),
    }
}

/// `x + layer_scale(f(x))` with the layer scale in module `ls`.
fn residual(
    b: &mut Builder,
    x: &Value,
    ls: &str,
    dim: usize,
    init: Option<f32>,
    f: impl FnOnce(&mut Builder, &Value) -> Result<Value>,
) -> Result<Value> {
    let y = f(b, x)?;
    let y = layer_scale(&mut b.scope(ls), &y, dim, init)?;
    Ok(add(b, x, &y))
}

/// fastvit's `ConvMlp`: a depthwise 7x7 `ConvNormAct` (`conv`), then `fc1`, act, `fc2`.
fn conv_ffn(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    hidden: usize,
    act_name: &str,
) -> Result<Value> {
    let dw = Conv::new(dim, dim, 7).depthwise();
    let y = conv_norm_act(
        &mut b.scope("conv"),
        x,
        dw,
        &Norm::Batch { eps: BN_EPS },
        None,
    )?;
    conv_mlp(b, &y, &MlpCfg::new(dim, hidden, act_name))
}

/// `AttentionBlock`: `x + ls1(attn(norm(x)))`, `x + ls2(mlp(x))`; attention over the H·W tokens
/// with 32-wide heads and no qkv bias.
fn attention_block(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    hidden: usize,
    norm: &Norm,
    ls: Option<f32>,
    act_name: &str,
) -> Result<Value> {
    const HEAD_DIM: usize = 32;
    if !dim.is_multiple_of(HEAD_DIM) {
        return Err(Error::invalid_model(format!(
            "fastvit attention stage of {dim} channels: not a multiple of the head dim {HEAD_DIM}"
        )));
    }
    let x = residual(b, x, "layer_scale_1", dim, ls, |b, t| {
        let y = norm.apply_2d(&mut b.scope("norm"), t, dim)?;
        let spatial = b.spatial(&y).cloned();
        let shape = b.op("Shape", &[&y], vec![]);
        let tokens = nchw_to_tokens(b, &y, dim);
        let cfg = AttnCfg {
            qkv_bias: false,
            ..AttnCfg::new(dim, dim / HEAD_DIM)
        };
        let o = attention(
            &mut b.scope("token_mixer"),
            &tokens,
            &cfg,
            &Hooks::default(),
        )?;
        let o = transpose(b, &o, &[0, 2, 1]);
        let o = b.op("Reshape", &[&o, &shape], vec![]);
        if let Some(s) = spatial {
            b.assign_spatial(&o, s);
        }
        Ok(o)
    })?;
    residual(b, &x, "layer_scale_2", dim, ls, |b, t| {
        conv_ffn(&mut b.scope("mlp"), t, dim, hidden, act_name)
    })
}
