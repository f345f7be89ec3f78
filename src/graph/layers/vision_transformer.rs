//! timm's `VisionTransformer` (`vision_transformer.py`) after its patch embedding, for the
//! modules that build it around their own embedding (`vision_transformer.py` / `deit.py` with
//! `PatchEmbed`, `vision_transformer_hybrid.py` with a CNN backbone): its arguments, the
//! pre-norm `Block` (with `Attention` or `DiffAttention`), `ResPostBlock`,
//! `ParallelScalingBlock`, `DiffParallelScalingBlock`, `ParallelThingsBlock`; `Mlp`, `SwiGLU`,
//! `GluMlp`, ViTamin's `GeGluMlp`; LayerNorm / RmsNorm; token / avg / max pooling or the `map` and `prr` heads.
//!
//! [`trunk`] follows timm's forward from `_pos_embed` (class / distillation / register tokens
//! and the learned position embedding, added before or after the prefix tokens per
//! `no_embed_class`), `norm_pre`, the blocks, `norm`, `global_pool_nlc`, `fc_norm` to the head.
//! Attention runs as ONNX Runtime's fused `com.microsoft.Attention` (QKV projection and
//! attention in one kernel), the MLP with a fused bias + GELU. Every block's output is a
//! feature map (`forward_intermediates` with `norm=False`, prefix tokens dropped, NCHW).

use serde_json::{Map, Value as Json};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{
    attention, attention_core, diff_attention, diff_attention_core, diff_lambda, diff_lambda_init,
    AttnCfg, Hooks,
};
use crate::graph::layers::heads::{attention_pool_latent, attention_pool_prr};
use crate::graph::layers::mlp::{
    ge_glu_mlp, glu_mlp, layer_scale, linear, linear_2d, mlp, swiglu, MlpCfg,
};
use crate::graph::layers::patch_embed;
use crate::graph::layers::pool::{global_pool_nlc, TokenPool};
use crate::graph::layers::pos_embed::{self, Interp, Resample};
use crate::graph::layers::{self, Norm};
use crate::graph::{Builder, Init, OutputKind, Value};
use crate::timm_args;

timm_args! {
    /// `VisionTransformer.__init__`'s keyword arguments with timm's defaults.
    pub struct VitArgs {
        img_size: Json = Json::Null,
        patch_size: Json = Json::from(16),
        global_pool: String = "token".into(),
        embed_dim: usize = 768,
        depth: usize = 12,
        num_heads: usize = 12,
        mlp_ratio: f64 = 4.0,
        qkv_bias: bool = true,
        qk_norm: bool = false,
        scale_attn_norm: bool = false,
        scale_mlp_norm: bool = false,
        proj_bias: bool = true,
        init_values: Option<f64> = None,
        class_token: bool = true,
        pos_embed: String = "learn".into(),
        no_embed_class: bool = false,
        reg_tokens: usize = 0,
        pre_norm: bool = false,
        final_norm: bool = true,
        fc_norm: Option<bool> = None,
        pool_include_prefix: bool = false,
        dynamic_img_size: bool = false,
        dynamic_img_pad: bool = false,
        norm_layer: Json = Json::Null,
        act_layer: Option<String> = None,
        // Layer choices, read by `norm_arg`, `mlp_arg` and `block_arg`.
        embed_norm_layer: Json = Json::Null,
        block_fn: Json = Json::Null,
        mlp_layer: Json = Json::Null,
        attn_layer: Json = Json::Null,
        use_naflex: Option<bool> = None,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// A layer argument as the table writes it: a name, or `{"partial": name, kwargs...}`.
fn layer_arg(v: &Json) -> Option<(String, Map<String, Json>)> {
    match v {
        Json::Null => None,
        Json::String(s) => Some((s.to_ascii_lowercase(), Map::new())),
        Json::Object(o) => {
            let name = o.get("partial")?.as_str()?.to_ascii_lowercase();
            let mut kw = o.clone();
            kw.remove("partial");
            Some((name, kw))
        }
        _ => Some((v.to_string(), Map::new())),
    }
}

/// Keyword arguments of a `partial` other than those `known`.
fn only_kwargs(a: &Args, key: &str, kw: &Map<String, Json>, known: &[&str]) -> Result<()> {
    match kw.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(a.unsupported(
            key,
            &format!("argument `{k}` of the layer is not supported"),
        )),
        None => Ok(()),
    }
}

/// `norm_layer` / `embed_norm_layer`: LayerNorm (eps 1e-6 unless given), RmsNorm, SimpleNorm.
fn norm_arg(a: &Args, key: &str, v: &Json) -> Result<Option<Norm>> {
    let Some((name, kw)) = layer_arg(v) else {
        return Ok(None);
    };
    only_kwargs(a, key, &kw, &["eps"])?;
    let eps = kw.get("eps").and_then(Json::as_f64).map(|e| e as f32);
    match name.as_str() {
        "layernorm" | "rmsnorm" | "simplenorm" => Ok(Some(Norm::from_timm(&name, eps)?)),
        _ => Err(a.unsupported(key, "LayerNorm, RmsNorm or SimpleNorm")),
    }
}

/// `mlp_layer`: which of timm's MLPs the blocks use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MlpKind {
    Mlp,
    /// `SwiGLU`: separate `fc1_g` / `fc1_x`.
    SwiGlu,
    /// `GluMlp` (`SwiGLUPacked` = not `gate_last`): one `fc1`, chunked.
    Glu {
        gate_last: bool,
    },
    /// ViTamin's `GeGluMlp`: a LayerNorm of its own, `w0` (gated) and `w1`, `w2`.
    GeGlu,
}

fn mlp_arg(a: &Args, v: &Json) -> Result<MlpKind> {
    let Some((name, kw)) = layer_arg(v) else {
        return Ok(MlpKind::Mlp);
    };
    // The block passes its own act_layer, which overrides a partial's.
    only_kwargs(a, "mlp_layer", &kw, &["act_layer", "gate_last"])?;
    let gate_last = kw.get("gate_last").and_then(Json::as_bool);
    Ok(match name.as_str() {
        "mlp" if kw.is_empty() => MlpKind::Mlp,
        "swiglu" if kw.keys().all(|k| k == "act_layer") => MlpKind::SwiGlu,
        "glumlp" => MlpKind::Glu {
            gate_last: gate_last.unwrap_or(true),
        },
        "swiglupacked" => MlpKind::Glu {
            gate_last: gate_last.unwrap_or(false),
        },
        "geglumlp" if kw.keys().all(|k| k == "act_layer") => MlpKind::GeGlu,
        _ => return Err(a.unsupported("mlp_layer", "Mlp, SwiGLU, GluMlp or GeGluMlp")),
    })
}

/// `block_fn` (and `attn_layer`): timm's ViT blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BlockKind {
    /// The pre-norm `Block`; `diff` with `attn_layer='diff'` (`DiffAttention`).
    Block {
        diff: bool,
        dual_lambda: bool,
    },
    ResPost,
    ParallelScaling {
        fuse_out_proj: bool,
    },
    DiffParallelScaling {
        dual_lambda: bool,
    },
    ParallelThings {
        num_parallel: usize,
    },
}

fn block_arg(a: &Args, block: &Json, attn: &Json) -> Result<BlockKind> {
    let (attn_name, attn_kw) = layer_arg(attn).unwrap_or_default();
    only_kwargs(a, "attn_layer", &attn_kw, &["dual_lambda"])?;
    let dual = |kw: &Map<String, Json>| kw.get("dual_lambda").and_then(Json::as_bool) == Some(true);
    let diff = match attn_name.as_str() {
        "" | "attn" | "attention" => false,
        "diff" | "diffattention" => true,
        _ => return Err(a.unsupported("attn_layer", "Attention or DiffAttention")),
    };
    let (name, kw) = layer_arg(block).unwrap_or_else(|| ("block".into(), Map::new()));
    let kind = match name.as_str() {
        "block" | "respostblock" if !kw.is_empty() => {
            return Err(a.unsupported("block_fn", "arguments of the block are not supported"))
        }
        "block" => BlockKind::Block {
            diff,
            dual_lambda: dual(&attn_kw),
        },
        "respostblock" => BlockKind::ResPost,
        "parallelscalingblock" => {
            only_kwargs(a, "block_fn", &kw, &["fuse_out_proj"])?;
            BlockKind::ParallelScaling {
                fuse_out_proj: kw.get("fuse_out_proj").and_then(Json::as_bool) == Some(true),
            }
        }
        "diffparallelscalingblock" => {
            only_kwargs(a, "block_fn", &kw, &["dual_lambda"])?;
            BlockKind::DiffParallelScaling {
                dual_lambda: dual(&kw),
            }
        }
        "parallelthingsblock" => {
            only_kwargs(a, "block_fn", &kw, &["num_parallel"])?;
            let n = kw.get("num_parallel").and_then(Json::as_u64).unwrap_or(2);
            BlockKind::ParallelThings {
                num_parallel: n.clamp(1, 64) as usize,
            }
        }
        _ => {
            return Err(a.unsupported("block_fn", "Block, ResPostBlock, ParallelScalingBlock, DiffParallelScalingBlock or ParallelThingsBlock",
            ))
        }
    };
    // The blocks that take attn_layer build Attention or DiffAttention; the parallel scaling
    // blocks ignore it, as timm does.
    if diff && matches!(kind, BlockKind::ResPost | BlockKind::ParallelThings { .. }) {
        return Err(a.unsupported("attn_layer", "DiffAttention only in the pre-norm Block"));
    }
    Ok(kind)
}

/// `global_pool`: the pooling of `global_pool_nlc` or an attention pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pool {
    Tokens(TokenPool),
    /// `map`: `AttentionPoolLatent`.
    Map,
    /// `prr`: `AttentionPoolPrr`.
    Prr,
}

/// A `VisionTransformer` as timm constructs it from its arguments.
#[derive(Debug, Clone)]
pub struct Vit {
    /// DeiT's `VisionTransformerDistilled` (class + distillation token, two heads).
    pub distilled: bool,
    pub patch: usize,
    /// `patch_embed.grid_size`: the grid the stored position embedding covers.
    pub grid: (usize, usize),
    pub dim: usize,
    pub depth: usize,
    pub attn: AttnCfg,
    pub mlp_hidden: usize,
    pub mlp_bias: bool,
    pub act: String,
    pub norm: Norm,
    /// `embed_norm_layer`: the patch embedding's `norm`.
    pub embed_norm: Option<Norm>,
    pub mlp_kind: MlpKind,
    pub block_kind: BlockKind,
    pub scale_mlp_norm: bool,
    /// `init_values` as given (`ParallelScalingBlock` keeps a layer scale for 0.0).
    pub init_values: Option<f32>,
    pub class_token: bool,
    pub reg_tokens: usize,
    pub pos_embed: bool,
    pub no_embed_class: bool,
    pub pre_norm: bool,
    pub final_norm: bool,
    pub use_fc_norm: bool,
    pub pool: Pool,
    pub pool_include_prefix: bool,
    pub dynamic_img_size: bool,
    pub dynamic_img_pad: bool,
    /// How the checkpoint filter resamples `pos_embed` for another `img_size`.
    pub load_resample: Resample,
}

/// An int or a square `[n, n]` pair (timm's `to_2tuple` arguments).
fn pair(a: &Args, key: &str, v: &Json) -> Result<(usize, usize)> {
    let one = |j: &Json| {
        j.as_u64()
            .filter(|n| (1..=crate::graph::args::MAX_INT).contains(n))
            .map(|n| n as usize)
    };
    match v {
        Json::Array(hw) if hw.len() == 2 => one(&hw[0]).zip(one(&hw[1])),
        v => one(v).map(|n| (n, n)),
    }
    .ok_or_else(|| a.unsupported(key, "expected a positive integer or an [h, w] pair"))
}

impl Vit {
    /// The model `cfg` names, its entrypoint's arguments `defaults` (a family's table row)
    /// under config.json's `model_args`; `distilled`: DeiT's `VisionTransformerDistilled`.
    pub fn resolve(
        cfg: &ModelConfig,
        defaults: &Map<String, Json>,
        distilled: bool,
    ) -> Result<Vit> {
        let arch = cfg.architecture.as_str();
        let a = Args::new(arch, Some(defaults), &cfg.model_args);
        let v = VitArgs::read(&a)?;
        if !matches!(v.pos_embed.as_str(), "" | "none" | "learn") {
            return Err(a.unsupported("pos_embed", "learn or none"));
        }
        if v.use_naflex == Some(true) {
            return Err(a.unsupported("use_naflex", "NaFlexVit is another model"));
        }
        let norm = norm_arg(&a, "norm_layer", &v.norm_layer)?.unwrap_or(Norm::Layer { eps: 1e-6 });
        let embed_norm = norm_arg(&a, "embed_norm_layer", &v.embed_norm_layer)?;
        let mlp_kind = mlp_arg(&a, &v.mlp_layer)?;
        let block_kind = block_arg(&a, &v.block_fn, &v.attn_layer)?;

        let (ph, pw) = pair(&a, "patch_size", &v.patch_size)?;
        if ph != pw {
            return Err(a.unsupported("patch_size", "only square patches are supported"));
        }
        // timm's img_size: model_args, else the pretrained cfg's input size when it is fixed,
        // else the class default 224.
        let img = match &v.img_size {
            Json::Null if cfg.pretrained_cfg.fixed_input_size => {
                let [_, h, w] = cfg.pretrained_cfg.input_size;
                (h, w)
            }
            Json::Null => (224, 224),
            j => pair(&a, "img_size", j)?,
        };
        let (dim, heads) = (v.embed_dim, v.num_heads);
        if heads == 0 || dim == 0 || dim % heads != 0 {
            return Err(Error::invalid_model(format!(
                "embed_dim {dim} is not divisible by num_heads {heads}"
            )));
        }
        // Python's int(dim * mlp_ratio).
        let mlp_hidden = (dim as f64 * v.mlp_ratio) as usize;
        if v.depth == 0 || mlp_hidden == 0 || img.0 < ph || img.1 < ph {
            return Err(Error::invalid_model(
                "ViT depth, mlp width and the patch grid must be positive",
            ));
        }
        let pool = match v.global_pool.as_str() {
            "map" => Pool::Map,
            "prr" => Pool::Prr,
            "" => {
                return Err(a.unsupported(
                    "global_pool",
                    "no pooling; native graphs return one vector per image",
                ))
            }
            p => Pool::Tokens(TokenPool::from_timm(p)?),
        };
        let use_fc_norm = v.fc_norm.unwrap_or(matches!(
            pool,
            Pool::Tokens(TokenPool::Avg | TokenPool::AvgMax | TokenPool::Max)
        ));
        if matches!(
            block_kind,
            BlockKind::ParallelScaling { .. } | BlockKind::DiffParallelScaling { .. }
        ) && (v.scale_attn_norm || v.scale_mlp_norm)
        {
            return Err(Error::invalid_model(
                "ParallelScalingBlock does not support scale norms (timm asserts)",
            ));
        }
        let glu_odd = matches!(mlp_kind, MlpKind::Glu { .. }) && !mlp_hidden.is_multiple_of(2);
        let diff = matches!(
            block_kind,
            BlockKind::Block { diff: true, .. } | BlockKind::DiffParallelScaling { .. }
        );
        if glu_odd || (diff && !dim.is_multiple_of(2 * heads)) {
            return Err(Error::invalid_model(
                "GluMlp needs an even hidden width, differential attention an even head_dim",
            ));
        }
        let pos_embed = !matches!(v.pos_embed.as_str(), "" | "none");
        if pool == Pool::Tokens(TokenPool::Token) && !v.class_token {
            return Err(Error::invalid_model(
                "global_pool 'token' needs the class token (class_token=false)",
            ));
        }
        if distilled
            && (pool != Pool::Tokens(TokenPool::Token)
                || !v.class_token
                || v.reg_tokens > 0
                || v.no_embed_class
                || use_fc_norm
                || !pos_embed)
        {
            return Err(Error::unsupported(
                "distilled DeiT needs the class token, token pooling and a position embedding covering both tokens \
                 (no reg_tokens, no_embed_class or fc_norm)",
            ));
        }
        let mut attn = AttnCfg::new(dim, heads);
        attn.qkv_bias = v.qkv_bias;
        attn.proj_bias = v.proj_bias;
        attn.qk_norm = v.qk_norm.then_some(norm);
        attn.attn_norm = v.scale_attn_norm.then_some(norm);
        // _create_vision_transformer's checkpoint filter: FlexiViT and RADIO resample bilinear.
        let load_resample = if arch.contains("flexi") || arch.contains("radio") {
            Resample {
                mode: Interp::Bilinear,
                antialias: false,
                align_corners: ["base_patch16_radio_v3", "huge_patch16_radio_v3"]
                    .iter()
                    .any(|n| arch.contains(n)),
            }
        } else {
            Resample::default()
        };
        Ok(Vit {
            distilled,
            patch: ph,
            grid: (img.0 / ph, img.1 / ph),
            dim,
            depth: v.depth,
            attn,
            mlp_hidden,
            mlp_bias: v.proj_bias,
            act: v.act_layer.unwrap_or_else(|| "gelu".into()),
            norm,
            embed_norm,
            mlp_kind,
            block_kind,
            scale_mlp_norm: v.scale_mlp_norm,
            init_values: v.init_values.map(|x| x as f32),
            class_token: v.class_token,
            reg_tokens: v.reg_tokens,
            pos_embed,
            no_embed_class: v.no_embed_class,
            pre_norm: v.pre_norm,
            final_norm: v.final_norm,
            use_fc_norm,
            pool,
            pool_include_prefix: v.pool_include_prefix,
            dynamic_img_size: v.dynamic_img_size,
            dynamic_img_pad: v.dynamic_img_pad,
            load_resample,
        })
    }

    pub fn num_prefix_tokens(&self) -> usize {
        if self.distilled {
            2
        } else {
            usize::from(self.class_token) + self.reg_tokens
        }
    }

    /// The prefix tokens the position embedding covers.
    pub fn pos_prefix(&self) -> usize {
        if self.no_embed_class {
            0
        } else {
            self.num_prefix_tokens()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Graph

/// The `VisionTransformer` after its patch embedding: `_pos_embed` on the patch `tokens`
/// (`[N, gh·gw, D]` of the NCHW `patches`, on `grid`), `norm_pre`, the blocks (each a feature
/// map, the last three by default), `norm`, pooling, `fc_norm` and the head.
pub fn trunk(
    b: &mut Builder,
    v: &Vit,
    cfg: &ModelConfig,
    tokens: &Value,
    patches: &Value,
    grid: (usize, usize),
    dynamic: bool,
) -> Result<(Value, usize)> {
    let p = v.patch;
    let mut x = pos_embed_tokens(b, v, tokens, patches, grid, dynamic)?;
    if v.pre_norm {
        x = v.norm.apply_last(&mut b.scope("norm_pre"), &x, v.dim)?;
    }
    for i in 0..v.depth {
        let mut blocks = b.scope("blocks");
        let s = &mut blocks.scope(i);
        x = match v.block_kind {
            BlockKind::Block { diff, dual_lambda } => block(s, v, &x, i, diff, dual_lambda)?,
            BlockKind::ResPost => res_post_block(s, v, &x)?,
            BlockKind::ParallelScaling { fuse_out_proj } => {
                parallel_scaling_block(s, v, &x, fuse_out_proj, None)?
            }
            BlockKind::DiffParallelScaling { dual_lambda } => {
                parallel_scaling_block(s, v, &x, true, Some((i, dual_lambda)))?
            }
            BlockKind::ParallelThings { num_parallel } => {
                parallel_things_block(s, v, &x, num_parallel)?
            }
        };
        let map = patch_embed::token_map(s, &x, v.num_prefix_tokens(), patches);
        let module = s.path().to_string();
        s.feature(&map, v.dim, p, &module);
    }
    // _create_vision_transformer's out_indices=3: the last three blocks (timm refuses fewer).
    b.default_out_indices(&[-3, -2, -1]);
    head(b, v, cfg, x)
}

/// `_pos_embed`: prefix tokens (class, distillation or register) and the position embedding,
/// resampled to the input's grid when it is not the stored one.
fn pos_embed_tokens(
    b: &mut Builder,
    v: &Vit,
    x: &Value,
    patches: &Value,
    grid: (usize, usize),
    dynamic: bool,
) -> Result<Value> {
    let d = v.dim;
    let mut prefix = Vec::new();
    if v.class_token {
        prefix.push(b.param("cls_token", &[1, 1, d], Init::Normal(1e-6))?);
    }
    if v.distilled {
        prefix.push(b.param("dist_token", &[1, 1, d], Init::TruncNormal(0.02))?);
    } else if v.reg_tokens > 0 {
        prefix.push(b.param("reg_token", &[1, v.reg_tokens, d], Init::Normal(1e-6))?);
    }
    let pos = if v.pos_embed {
        let n_pre = v.pos_prefix();
        let shape = [1, n_pre + v.grid.0 * v.grid.1, d];
        let init = Init::TruncNormal(0.02);
        Some(if dynamic {
            let stored = b.param("pos_embed", &shape, init)?;
            pos_embed::resample_abs_pos_embed_dynamic(b, &stored, d, v.grid, n_pre, patches)
        } else if grid != v.grid {
            // A fixed other size: timm's img_size= resamples through the checkpoint filter, or
            // in forward with the class's defaults when the model has dynamic_img_size.
            let r = if v.dynamic_img_size {
                Resample::default()
            } else {
                v.load_resample
            };
            let data = b.read("pos_embed", &shape, init)?;
            let data = pos_embed::resample_abs_pos_embed(&data, d, v.grid, grid, n_pre, &r)?;
            b.tensor("pos_embed", data, &[1, n_pre + grid.0 * grid.1, d])?
        } else {
            b.param("pos_embed", &shape, init)?
        })
    } else {
        None
    };

    // DeiT III / big_vision (`no_embed_class`): the embedding covers the patches only.
    Ok(patch_embed::prefix_and_pos(
        b,
        x,
        &prefix,
        v.num_prefix_tokens(),
        pos.as_ref(),
        v.no_embed_class,
        d,
    ))
}

/// The `Mlp` / `SwiGLU` / `GluMlp` of a block (`mlp_layer`) in the current scope.
fn block_mlp(b: &mut Builder, v: &Vit, x: &Value) -> Result<Value> {
    let c = MlpCfg::new(v.dim, v.mlp_hidden, &v.act)
        .bias(v.mlp_bias)
        .norm(v.scale_mlp_norm.then_some(v.norm));
    match v.mlp_kind {
        MlpKind::Mlp => mlp(b, x, &c),
        MlpKind::SwiGlu => swiglu(b, x, &c),
        MlpKind::Glu { gate_last } => glu_mlp(b, x, &c, gate_last),
        // GeGluMlp rebinds eps=1e-6 on whatever norm the block passes (scale_mlp_norm).
        MlpKind::GeGlu => ge_glu_mlp(b, x, &c.norm(v.scale_mlp_norm.then_some(eps_1e6(v.norm)))),
    }
}

/// `norm` with eps 1e-6 (`partial(get_norm_layer(norm), eps=1e-6)`).
fn eps_1e6(norm: Norm) -> Norm {
    match norm {
        Norm::Layer { .. } => Norm::Layer { eps: 1e-6 },
        Norm::Rms { .. } => Norm::Rms { eps: 1e-6 },
        Norm::Simple { .. } => Norm::Simple { eps: 1e-6 },
        n => n,
    }
}

/// `LayerScale` when `init_values` is truthy (the blocks' `if init_values`).
fn maybe_ls(b: &mut Builder, v: &Vit, name: &str, y: Value) -> Result<Value> {
    match v.init_values.filter(|x| *x != 0.0) {
        Some(init) => layer_scale(&mut b.scope(name), &y, v.dim, init),
        None => Ok(y),
    }
}

/// The block's attention (`Attention`, or `DiffAttention` with `attn_layer='diff'`).
fn block_attn(
    b: &mut Builder,
    v: &Vit,
    x: &Value,
    depth: usize,
    diff: bool,
    dual: bool,
) -> Result<Value> {
    if diff {
        diff_attention(b, x, &v.attn, depth, dual)
    } else {
        attention(b, x, &v.attn, &Hooks::default())
    }
}

/// timm's pre-norm `Block`: `x + ls1(attn(norm1(x)))`, then `x + ls2(mlp(norm2(x)))`.
fn block(
    b: &mut Builder,
    v: &Vit,
    x: &Value,
    depth: usize,
    diff: bool,
    dual: bool,
) -> Result<Value> {
    let d = v.dim;
    let h = v.norm.apply_last(&mut b.scope("norm1"), x, d)?;
    let y = block_attn(&mut b.scope("attn"), v, &h, depth, diff, dual)?;
    let y = maybe_ls(b, v, "ls1", y)?;
    let x = layers::add(b, x, &y);
    let h = v.norm.apply_last(&mut b.scope("norm2"), &x, d)?;
    let y = block_mlp(&mut b.scope("mlp"), v, &h)?;
    let y = maybe_ls(b, v, "ls2", y)?;
    Ok(layers::add(b, &x, &y))
}

/// timm's `ResPostBlock` (post-norm): `x + norm1(attn(x))`, then `x + norm2(mlp(x))`.
fn res_post_block(b: &mut Builder, v: &Vit, x: &Value) -> Result<Value> {
    let d = v.dim;
    let y = attention(&mut b.scope("attn"), x, &v.attn, &Hooks::default())?;
    let y = v.norm.apply_last(&mut b.scope("norm1"), &y, d)?;
    let x = layers::add(b, x, &y);
    let y = block_mlp(&mut b.scope("mlp"), v, &x)?;
    let y = v.norm.apply_last(&mut b.scope("norm2"), &y, d)?;
    Ok(layers::add(b, &x, &y))
}

/// timm's `ParallelScalingBlock` (ViT-22B) and, with `diff = Some((depth, dual_lambda))`,
/// `DiffParallelScalingBlock`: one `in_proj` for the MLP's fc1 and q, k, v after `in_norm`,
/// attention and MLP in parallel, `out_proj` over both (or `attn_out_proj` + `mlp_out_proj`),
/// `x + ls(y)`.
fn parallel_scaling_block(
    b: &mut Builder,
    v: &Vit,
    x: &Value,
    fuse_out_proj: bool,
    diff: Option<(usize, bool)>,
) -> Result<Value> {
    let (d, hidden) = (v.dim, v.mlp_hidden);
    let init = v.attn.init;
    let y = v.norm.apply_last(&mut b.scope("in_norm"), x, d)?;
    let y = linear(
        &mut b.scope("in_proj"),
        &y,
        d,
        hidden + 3 * d,
        v.attn.qkv_bias,
        init,
    )?;
    let parts = layers::split(b, &y, -1, &[hidden, d, d, d]);
    let mut x_mlp = parts[0].clone();
    if !v.attn.qkv_bias {
        let bias = b.param("mlp_bias", &[hidden], Init::Zeros)?;
        x_mlp = layers::add(b, &x_mlp, &bias);
    }
    let x_attn = match diff {
        Some((depth, dual)) => {
            let hd = d / v.attn.heads / 2;
            let lambda_init = diff_lambda_init(depth);
            let lambda = diff_lambda(b, hd, dual, lambda_init)?;
            let qk_norm = v.attn.qk_norm;
            let heads = v.attn.heads;
            diff_attention_core(
                b,
                &parts[1],
                &parts[2],
                &parts[3],
                heads,
                hd,
                qk_norm,
                lambda,
                lambda_init,
            )?
        }
        None => attention_core(
            b,
            &parts[1],
            &parts[2],
            &parts[3],
            &v.attn,
            &Hooks::default(),
        )?,
    };
    let x_mlp = layers::act(b, &v.act, &x_mlp)?;
    let bias = v.attn.proj_bias;
    let y = if fuse_out_proj {
        let cat = layers::concat(b, &[&x_attn, &x_mlp], -1);
        linear(&mut b.scope("out_proj"), &cat, d + hidden, d, bias, init)?
    } else {
        let ya = linear(&mut b.scope("attn_out_proj"), &x_attn, d, d, bias, init)?;
        let ym = linear(&mut b.scope("mlp_out_proj"), &x_mlp, hidden, d, bias, init)?;
        layers::add(b, &ya, &ym)
    };
    // `LayerScale if init_values is not None`.
    let y = match v.init_values {
        Some(g) => layer_scale(&mut b.scope("ls"), &y, d, g)?,
        None => y,
    };
    Ok(layers::add(b, x, &y))
}

/// timm's `ParallelThingsBlock`: `x + Σ attns[j](x)`, then `x + Σ ffns[j](x)`, each branch
/// `norm`, `attn` / `mlp`, `ls`.
fn parallel_things_block(b: &mut Builder, v: &Vit, x: &Value, n: usize) -> Result<Value> {
    let d = v.dim;
    let mut x = x.clone();
    for (group, is_attn) in [("attns", true), ("ffns", false)] {
        let mut sum: Option<Value> = None;
        for j in 0..n {
            let mut g = b.scope(group);
            let s = &mut g.scope(j);
            let h = v.norm.apply_last(&mut s.scope("norm"), &x, d)?;
            let y = if is_attn {
                attention(&mut s.scope("attn"), &h, &v.attn, &Hooks::default())?
            } else {
                block_mlp(&mut s.scope("mlp"), v, &h)?
            };
            let y = maybe_ls(s, v, "ls", y)?;
            sum = Some(match sum {
                Some(acc) => layers::add(s, &acc, &y),
                None => y,
            });
        }
        x = layers::add(b, &x, &sum.expect("num_parallel >= 1"));
    }
    Ok(x)
}

/// `norm`, pooling, `fc_norm` and the head (DeiT: both heads, averaged).
fn head(b: &mut Builder, v: &Vit, cfg: &ModelConfig, x: Value) -> Result<(Value, usize)> {
    let d = v.dim;
    let classes = cfg.num_classes;
    let features = b.output() == OutputKind::Features || classes == 0;
    let fc = |b: &mut Builder, x: &Value, name: &str| {
        linear_2d(
            &mut b.scope(name),
            x,
            d,
            classes,
            true,
            Init::TruncNormal(0.02),
        )
    };
    let mut x = x;
    if v.final_norm && !v.use_fc_norm {
        x = v.norm.apply_last(&mut b.scope("norm"), &x, d)?;
    }
    if v.distilled {
        let cls = layers::token_at(b, &x, 0);
        let dist = layers::token_at(b, &x, 1);
        if features {
            // forward_head(pre_logits=True): the mean of both tokens.
            return Ok((layers::mean2(b, &cls, &dist), d));
        }
        let y = fc(b, &cls, "head")?;
        let y_dist = fc(b, &dist, "head_dist")?;
        return Ok((layers::mean2(b, &y, &y_dist), classes));
    }
    let n_pre = v.num_prefix_tokens();
    let include_prefix = v.pool_include_prefix || v.pool == Pool::Prr;
    let mut x = match v.pool {
        Pool::Tokens(p) => global_pool_nlc(b, &x, p, n_pre, include_prefix),
        Pool::Map | Pool::Prr => {
            let t = if n_pre > 0 && !include_prefix {
                layers::slice(b, &x, 1, n_pre as i64, i64::MAX)
            } else {
                x
            };
            if v.pool == Pool::Map {
                let s = &mut b.scope("attn_pool");
                let (heads, act) = (v.attn.heads, v.act.as_str());
                attention_pool_latent(s, &t, d, heads, v.mlp_hidden, &v.norm, act, true)?
            } else {
                attention_pool_prr(b, &t, d, v.attn.heads, v.class_token)?
            }
        }
    };
    if v.final_norm && v.use_fc_norm {
        x = v.norm.apply_last(&mut b.scope("fc_norm"), &x, d)?;
    }
    if features {
        return Ok((x, d));
    }
    Ok((fc(b, &x, "head")?, classes))
}
