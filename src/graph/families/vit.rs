//! Vision Transformers: timm's `vision_transformer.py` (`VisionTransformer` with the standard
//! pre-norm `Block`) and `deit.py` (`VisionTransformerDistilled`).
//!
//! The graph follows timm's forward exactly: a strided-conv patch embedding, class / distillation /
//! register tokens and the learned position embedding (added before or after the prefix tokens per
//! `no_embed_class`), optional `norm_pre`, the blocks, the final norm, pooling (`token`, `avg`,
//! `avgmax`, `max`), `fc_norm` and the head. Each block's attention is ONNX Runtime's fused
//! `com.microsoft` `Attention` (QKV projection and scaled-dot-product attention in one kernel), its
//! MLP a MatMul with a fused bias + GELU (`BiasGelu` / `FastGelu` / `QuickGelu`), its norms
//! `LayerNormalization` (ORT fuses the residual Add into `SkipLayerNormalization`).
//!
//! Why `com.microsoft.Attention`: on ORT 1.31 CPU (one thread, ViT-S attention, batch 8, thread CPU
//! time) it took 21.1-21.4 ms against 21.8-22.6 ms for `com.microsoft.MultiHeadAttention` after a
//! separate QKV MatMul and 22.5-23.5 ms for ONNX opset-23 `Attention` (which ORT 1.31 does run on
//! CPU); for all of vit_small_patch16_224 at batch 8 the native graph took 776 ms against 803 ms
//! with MultiHeadAttention, 796 ms with unfused MatMul/Softmax attention and 822 ms for timm's own
//! torch.onnx export (at batch 1 all four are within 3%).
//!
//! Structure comes from timm's arguments: the architecture's defaults (the table below, taken from
//! timm 1.0.31's model entrypoints and default pretrained cfgs) overridden by config.json's
//! `model_args`, exactly as timm applies them. Every parameter is then checked against the weights'
//! shapes, and unused weights are an error, so a config that disagrees with its weights fails with
//! the tensor named.

use serde_json::{Map, Value as Json};

use super::layers;
use super::{Attr, Builder, Init, OutputKind, Value, MS_DOMAIN};
use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// The `vit` family entry for [`super::families`].
pub const FAMILY: super::Family = super::Family {
    name: "vit",
    examples: "vit_*, deit_*, deit3_*, flexivit_*, beit3_*, eva_large_patch14_*, test_vit",
    matches,
    build: |b, cfg| super::with_output(b, cfg, build),
    default_config,
    any_size: false,
};

fn matches(arch: &str) -> bool {
    arch_row(arch).is_some() || UNSUPPORTED.iter().any(|(n, _)| *n == arch)
}

fn arch_row(arch: &str) -> Option<&'static ArchRow> {
    ARCHS.iter().find(|r| r.0 == arch)
}

// ---------------------------------------------------------------------------------------------
// Architecture arguments

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    Token,
    Avg,
    AvgMax,
    Max,
}

impl Pool {
    fn parse(s: &str) -> Result<Pool> {
        Ok(match s {
            "token" => Pool::Token,
            "avg" => Pool::Avg,
            "avgmax" => Pool::AvgMax,
            "max" => Pool::Max,
            "map" | "prr" => {
                return Err(Error::unsupported(format!(
                    "global_pool `{s}` (attention pooling) is not supported by the native ViT graph; supported: token, avg, avgmax, max"
                )))
            }
            "" => {
                return Err(Error::unsupported(
                    "global_pool '' (unpooled token output) is not supported: native graphs return one vector per image",
                ))
            }
            other => return Err(Error::invalid_model(format!("unknown ViT global_pool `{other}`"))),
        })
    }
}

/// A `VisionTransformer` as timm constructs it, after defaults, architecture and `model_args`.
#[derive(Debug, Clone)]
struct Vit {
    distilled: bool,
    in_chans: usize,
    patch: usize,
    embed: usize,
    depth: usize,
    heads: usize,
    mlp_hidden: usize,
    qkv_bias: bool,
    qk_norm: bool,
    proj_bias: bool,
    /// Layer scale (`ls1` / `ls2`) when set.
    init_values: Option<f32>,
    class_token: bool,
    reg_tokens: usize,
    pos_embed: bool,
    no_embed_class: bool,
    pre_norm: bool,
    final_norm: bool,
    use_fc_norm: bool,
    /// From model_args / the architecture: timm's loader ignores config.json's root `global_pool`.
    pool: Pool,
    pool_include_prefix: bool,
    norm_eps: f32,
    act: String,
    scale_attn_norm: bool,
    scale_mlp_norm: bool,
    dynamic_img_size: bool,
    dynamic_img_pad: bool,
    num_classes: usize,
}

/// `model_args` keys that only matter for training or for input sizes other than the fixed one.
const IGNORED_ARGS: &[&str] = &[
    "drop_rate",
    "pos_drop_rate",
    "patch_drop_rate",
    "proj_drop_rate",
    "attn_drop_rate",
    "drop_path_rate",
    "weight_init",
    "fix_init",
    "device",
    "dtype",
    // The graph is built for config.json's input size (which timm derives from img_size); there
    // the position embedding needs no resampling.
    "img_size",
    "num_classes",
    "in_chans",
];

/// `model_args` keys read by [`Vit::resolve`].
const STRUCTURE_ARGS: &[&str] = &[
    "patch_size",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "qkv_bias",
    "qk_norm",
    "proj_bias",
    "init_values",
    "class_token",
    "pos_embed",
    "no_embed_class",
    "reg_tokens",
    "pre_norm",
    "final_norm",
    "fc_norm",
    "global_pool",
    "pool_include_prefix",
    "act_layer",
    "norm_layer",
    "scale_attn_norm",
    "scale_mlp_norm",
    "dynamic_img_size",
    "dynamic_img_pad",
    // Accepted only at their defaults (checked below).
    "attn_layer",
    "use_naflex",
];

fn bad_arg(key: &str, want: &str, v: &Json) -> Error {
    Error::invalid_model(format!(
        "config.json model_args `{key}` is {v}; expected {want}"
    ))
}

struct Args<'a>(&'a Map<String, Json>);

impl Args<'_> {
    fn get(&self, key: &str) -> Option<&Json> {
        self.0.get(key).filter(|v| !v.is_null())
    }
    fn usize(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|&n| n <= 1 << 20)
                .map(|n| n as usize)
                .ok_or_else(|| bad_arg(key, "a small integer", v)),
        }
    }
    fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| bad_arg(key, "a boolean", v)),
        }
    }
    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| bad_arg(key, "a boolean", v)))
            .transpose()
    }
    fn f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| bad_arg(key, "a number", v)))
            .transpose()
    }
    fn str(&self, key: &str) -> Result<Option<&str>> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| bad_arg(key, "a string", v)))
            .transpose()
    }
}

/// `patch_size` as an int or the `[h, w]` list timm writes for a tuple (square patches only).
fn patch_size(a: &Args) -> Result<usize> {
    match a.get("patch_size") {
        Some(Json::Array(hw)) if hw.len() == 2 && hw[0] == hw[1] => {
            Args(&Map::from_iter([("patch_size".to_string(), hw[0].clone())]))
                .usize("patch_size", 16)
        }
        Some(Json::Array(hw)) => Err(Error::unsupported(format!(
            "model_args patch_size {hw:?}: only square patches are supported"
        ))),
        _ => a.usize("patch_size", 16),
    }
}

impl Vit {
    fn resolve(cfg: &ModelConfig) -> Result<Vit> {
        let arch = cfg.architecture.as_str();
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(n, _)| *n == arch) {
            return Err(Error::unsupported(format!(
                "`{arch}` uses {why}, which the native ViT graph does not implement"
            )));
        }
        let row = arch_row(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a ViT architecture this build knows"
            ))
        })?;

        // Reject what would change the network in ways this builder does not follow.
        let unknown: Vec<&str> = cfg
            .model_args
            .keys()
            .map(String::as_str)
            .filter(|k| !IGNORED_ARGS.contains(k) && !STRUCTURE_ARGS.contains(k))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::unsupported(format!(
                "config.json model_args {unknown:?} are not supported by the native ViT graph (known: {})",
                STRUCTURE_ARGS.join(", ")
            )));
        }
        let user = Args(&cfg.model_args);
        if let Some(a) = user.str("attn_layer")? {
            if !matches!(a, "" | "attn") {
                return Err(Error::unsupported(format!(
                    "model_args attn_layer `{a}` is not supported (only standard attention)"
                )));
            }
        }
        if user.bool("use_naflex", false)? {
            return Err(Error::unsupported(
                "model_args use_naflex=true (NaFlexVit) is not supported by the native ViT graph",
            ));
        }
        if let Some(p) = user.str("pos_embed")? {
            if !matches!(p, "" | "none" | "learn") {
                return Err(Error::unsupported(format!(
                    "model_args pos_embed `{p}` is not supported (learn or none)"
                )));
            }
        }

        // timm: kwargs from config.json override the entrypoint's model_args.
        let mut merged: Map<String, Json> = serde_json::from_str(row.2)
            .map_err(|e| Error::internal(format!("ViT table for {arch}: {e}")))?;
        let mut norm_eps = merged
            .remove("norm_eps")
            .and_then(|v| v.as_f64())
            .unwrap_or(1e-6);
        for (k, v) in &cfg.model_args {
            merged.insert(k.clone(), v.clone());
        }
        let a = Args(&merged);
        match a.str("norm_layer")? {
            None => {}
            // timm's LayerNorm (the ViT default), eps 1e-6.
            Some("layernorm") => norm_eps = 1e-6,
            Some(other) => {
                return Err(Error::unsupported(format!(
                    "model_args norm_layer `{other}` is not supported (only layernorm)"
                )))
            }
        }
        let act = a.str("act_layer")?.unwrap_or("gelu").to_string();

        let embed = a.usize("embed_dim", 768)?;
        let heads = a.usize("num_heads", 12)?;
        if heads == 0 || embed == 0 || embed % heads != 0 {
            return Err(Error::invalid_model(format!(
                "embed_dim {embed} is not divisible by num_heads {heads}"
            )));
        }
        let mlp_ratio = a.f64("mlp_ratio")?.unwrap_or(4.0);
        // Python's int(dim * mlp_ratio): truncation of the same double product.
        let mlp_hidden = (embed as f64 * mlp_ratio) as usize;
        let init_values = a
            .f64("init_values")?
            .filter(|v| *v != 0.0)
            .map(|v| v as f32);
        let init_pool = a.str("global_pool")?.unwrap_or("token").to_string();
        let use_fc_norm = match a.opt_bool("fc_norm")? {
            Some(f) => f,
            None => matches!(init_pool.as_str(), "avg" | "avgmax" | "max"),
        };
        let pos_embed = !matches!(a.str("pos_embed")?, Some("" | "none"));
        let v = Vit {
            distilled: row.1,
            in_chans: cfg.pretrained_cfg.input_size[0],
            patch: patch_size(&a)?,
            embed,
            depth: a.usize("depth", 12)?,
            heads,
            mlp_hidden,
            qkv_bias: a.bool("qkv_bias", true)?,
            qk_norm: a.bool("qk_norm", false)?,
            proj_bias: a.bool("proj_bias", true)?,
            init_values,
            class_token: a.bool("class_token", true)?,
            reg_tokens: a.usize("reg_tokens", 0)?,
            pos_embed,
            no_embed_class: a.bool("no_embed_class", false)?,
            pre_norm: a.bool("pre_norm", false)?,
            final_norm: a.bool("final_norm", true)?,
            use_fc_norm,
            pool: Pool::parse(&init_pool)?,
            pool_include_prefix: a.bool("pool_include_prefix", false)?,
            norm_eps: norm_eps as f32,
            act,
            scale_attn_norm: a.bool("scale_attn_norm", false)?,
            scale_mlp_norm: a.bool("scale_mlp_norm", false)?,
            dynamic_img_size: a.bool("dynamic_img_size", false)?,
            dynamic_img_pad: a.bool("dynamic_img_pad", false)?,
            num_classes: cfg.num_classes,
        };
        if v.patch == 0 || v.depth == 0 || v.mlp_hidden == 0 {
            return Err(Error::invalid_model(
                "ViT patch_size, depth and mlp width must be positive",
            ));
        }
        if v.pool == Pool::Token && !v.class_token {
            return Err(Error::invalid_model(
                "global_pool 'token' needs the class token (class_token=false)",
            ));
        }
        if v.distilled {
            // VisionTransformerDistilled reads the class and distillation tokens with its own head;
            // other layouts either fail in timm or leave weights unused.
            if v.pool != Pool::Token
                || !v.class_token
                || v.reg_tokens > 0
                || v.no_embed_class
                || v.use_fc_norm
                || !v.pos_embed
            {
                return Err(Error::unsupported(
                    "distilled DeiT needs the class token, token pooling and a position embedding covering both tokens \
                     (no reg_tokens, no_embed_class or fc_norm)",
                ));
            }
        }
        Ok(v)
    }

    fn prefix_tokens(&self) -> usize {
        if self.distilled {
            2
        } else {
            usize::from(self.class_token) + self.reg_tokens
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Graph

fn build(b: &mut Builder, cfg: &ModelConfig, output: OutputKind) -> Result<(Value, usize)> {
    let v = Vit::resolve(cfg)?;
    let [c, h, w] = cfg.pretrained_cfg.input_size;
    if c != v.in_chans {
        return Err(Error::invalid_model(format!(
            "input_size has {c} channels but the model takes {}",
            v.in_chans
        )));
    }
    // PatchEmbed: at the model's own size the conv drops a remainder (vit_*_patch14 at 384);
    // dynamic_img_pad pads it instead; dynamic_img_size alone asserts there is none.
    let (pad_h, pad_w) = (
        (v.patch - h % v.patch) % v.patch,
        (v.patch - w % v.patch) % v.patch,
    );
    if (pad_h, pad_w) != (0, 0) && v.dynamic_img_size && !v.dynamic_img_pad {
        return Err(Error::invalid_model(format!(
            "input size {h}x{w} is not a multiple of the ViT patch size {} (timm requires it with dynamic_img_size)",
            v.patch
        )));
    }
    let pad = if v.dynamic_img_pad {
        (pad_h, pad_w)
    } else {
        (0, 0)
    };
    let d = v.embed;
    let num_patches = ((h + pad.0) / v.patch) * ((w + pad.1) / v.patch);

    let x = patch_embed(b, &v, c, pad)?;
    let mut x = tokens(b, &v, x, num_patches)?;
    if v.pre_norm {
        x = layers::layer_norm(b, &x, "norm_pre", d, v.norm_eps, -1)?;
    }
    for i in 0..v.depth {
        x = block(b, &v, &x, i)?;
    }
    if v.final_norm && !v.use_fc_norm {
        x = layers::layer_norm(b, &x, "norm", d, v.norm_eps, -1)?;
    }

    if v.distilled {
        let cls = token_at(b, &x, 0);
        let dist = token_at(b, &x, 1);
        if output == OutputKind::Features || v.num_classes == 0 {
            // forward_head(pre_logits=True): the mean of the two tokens (identity heads give the same).
            return Ok((mean2(b, &cls, &dist), d));
        }
        let y = head(b, &cls, "head", d, v.num_classes)?;
        let y_dist = head(b, &dist, "head_dist", d, v.num_classes)?;
        return Ok((mean2(b, &y, &y_dist), v.num_classes));
    }

    let mut x = pool(b, &v, &x);
    if v.final_norm && v.use_fc_norm {
        x = layers::layer_norm(b, &x, "fc_norm", d, v.norm_eps, -1)?;
    }
    if output == OutputKind::Features || v.num_classes == 0 {
        return Ok((x, d));
    }
    Ok((head(b, &x, "head", d, v.num_classes)?, v.num_classes))
}

/// `PatchEmbed`: a conv with kernel = stride = patch, flattened to `[N, L, D]`.
fn patch_embed(b: &mut Builder, v: &Vit, c: usize, pad: (usize, usize)) -> Result<Value> {
    let (d, p) = (v.embed, v.patch);
    // PyTorch's default conv init: timm's ViT init does not touch the patch embedding.
    let w = b.param(
        "patch_embed.proj.weight",
        &[d, c, p, p],
        Init::DefaultUniform,
    )?;
    let attrs = vec![
        ("kernel_shape", Attr::Ints(vec![p as i64; 2])),
        ("strides", Attr::Ints(vec![p as i64; 2])),
        // dynamic_img_pad's F.pad(x, (0, pad_w, 0, pad_h)): zeros after the last row / column.
        ("pads", Attr::Ints(vec![0, 0, pad.0 as i64, pad.1 as i64])),
    ];
    let input = b.input();
    // CLIP-style pre-norm models have no patch-embed bias.
    let y = if v.pre_norm {
        b.op("Conv", &[&input, &w], attrs)
    } else {
        let bias = b.param("patch_embed.proj.bias", &[d], Init::Zeros)?;
        b.op("Conv", &[&input, &w, &bias], attrs)
    };
    let shape = b.const_i64(vec![0, d as i64, -1], &[3]);
    let y = b.op("Reshape", &[&y, &shape], vec![]);
    Ok(b.op(
        "Transpose",
        &[&y],
        vec![("perm", Attr::Ints(vec![0, 2, 1]))],
    ))
}

/// `_pos_embed`: prefix tokens (class, distillation or register) and the position embedding.
fn tokens(b: &mut Builder, v: &Vit, x: Value, num_patches: usize) -> Result<Value> {
    let d = v.embed;
    let mut prefix = Vec::new();
    if v.class_token {
        prefix.push(b.param("cls_token", &[1, 1, d], Init::Normal(1e-6))?);
    }
    if v.distilled {
        prefix.push(b.param("dist_token", &[1, 1, d], Init::TruncNormal(0.02))?);
    } else if v.reg_tokens > 0 {
        prefix.push(b.param("reg_token", &[1, v.reg_tokens, d], Init::Normal(1e-6))?);
    }
    let n_prefix = v.prefix_tokens();
    let pos = if v.pos_embed {
        let len = if v.no_embed_class {
            num_patches
        } else {
            num_patches + n_prefix
        };
        Some(b.param("pos_embed", &[1, len, d], Init::TruncNormal(0.02))?)
    } else {
        None
    };

    let mut x = x;
    if v.no_embed_class {
        // deit3 / big_vision: the position embedding covers the patches only.
        if let Some(p) = &pos {
            x = layers::add(b, &x, p);
        }
    }
    if !prefix.is_empty() {
        let tok = if prefix.len() == 1 {
            prefix.remove(0)
        } else {
            let refs: Vec<&Value> = prefix.iter().collect();
            b.op("Concat", &refs, vec![("axis", Attr::Int(1))])
        };
        // Broadcast the [1, P, D] tokens over the batch.
        let batch = b.op(
            "Shape",
            &[&x],
            vec![("start", Attr::Int(0)), ("end", Attr::Int(1))],
        );
        let rest = b.const_i64(vec![n_prefix as i64, d as i64], &[2]);
        let shape = b.op("Concat", &[&batch, &rest], vec![("axis", Attr::Int(0))]);
        let tok = b.op("Expand", &[&tok, &shape], vec![]);
        x = b.op("Concat", &[&tok, &x], vec![("axis", Attr::Int(1))]);
    }
    if !v.no_embed_class {
        if let Some(p) = &pos {
            x = layers::add(b, &x, p);
        }
    }
    Ok(x)
}

/// timm's pre-norm `Block`: `x + ls1(attn(norm1(x)))`, then `x + ls2(mlp(norm2(x)))`.
fn block(b: &mut Builder, v: &Vit, x: &Value, i: usize) -> Result<Value> {
    let d = v.embed;
    let p = format!("blocks.{i}");
    let h = layers::layer_norm(b, x, &format!("{p}.norm1"), d, v.norm_eps, -1)?;
    let mut y = attention(b, v, &h, &format!("{p}.attn"))?;
    if let Some(init) = v.init_values {
        let g = b.param(&format!("{p}.ls1.gamma"), &[d], Init::Const(init))?;
        y = layers::mul(b, &y, &g);
    }
    let x = layers::add(b, x, &y);
    let h = layers::layer_norm(b, &x, &format!("{p}.norm2"), d, v.norm_eps, -1)?;
    let mut y = mlp(b, v, &h, &format!("{p}.mlp"))?;
    if let Some(init) = v.init_values {
        let g = b.param(&format!("{p}.ls2.gamma"), &[d], Init::Const(init))?;
        y = layers::mul(b, &y, &g);
    }
    Ok(layers::add(b, &x, &y))
}

/// timm's `Attention`. Without q/k norms the QKV projection and the attention run as one fused
/// `com.microsoft.Attention` node: its weight is `qkv.weight` transposed (`[D, 3D]`, columns
/// ordered q | k | v with heads contiguous — the same order as timm's reshape to `(3, H, hd)`).
/// With q/k norms the projection is explicit and `MultiHeadAttention` does the rest.
fn attention(b: &mut Builder, v: &Vit, x: &Value, p: &str) -> Result<Value> {
    let d = v.embed;
    let heads = Attr::Int(v.heads as i64);
    let w = b.param(
        &format!("{p}.qkv.weight"),
        &[3 * d, d],
        Init::TruncNormal(0.02),
    )?;
    let wt = b.op("Transpose", &[&w], vec![("perm", Attr::Ints(vec![1, 0]))]);
    let bias = if v.qkv_bias {
        Some(b.param(&format!("{p}.qkv.bias"), &[3 * d], Init::Zeros)?)
    } else {
        None
    };
    let mut y = if !v.qk_norm {
        let bias = match bias {
            Some(bb) => bb,
            None => b.const_f32(vec![0.0; 3 * d], &[3 * d as i64]),
        };
        b.op_n(
            "Attention",
            MS_DOMAIN,
            &[x, &wt, &bias],
            vec![("num_heads", heads)],
            1,
        )
        .remove(0)
    } else {
        let mut qkv = b.op("MatMul", &[x, &wt], vec![]);
        if let Some(bb) = &bias {
            qkv = layers::add(b, &qkv, bb);
        }
        let split = b.const_i64(vec![d as i64; 3], &[3]);
        let parts = b.op_n(
            "Split",
            "",
            &[&qkv, &split],
            vec![("axis", Attr::Int(-1))],
            3,
        );
        let hd = d / v.heads;
        let per_head = b.const_i64(vec![0, 0, v.heads as i64, hd as i64], &[4]);
        let flat = b.const_i64(vec![0, 0, d as i64], &[3]);
        let norm = |b: &mut Builder, t: &Value, name: &str| -> Result<Value> {
            let t = b.op("Reshape", &[t, &per_head], vec![]);
            let t = layers::layer_norm(b, &t, &format!("{p}.{name}"), hd, v.norm_eps, -1)?;
            Ok(b.op("Reshape", &[&t, &flat], vec![]))
        };
        let q = norm(b, &parts[0], "q_norm")?;
        let k = norm(b, &parts[1], "k_norm")?;
        b.op_n(
            "MultiHeadAttention",
            MS_DOMAIN,
            &[&q, &k, &parts[2]],
            vec![("num_heads", heads)],
            1,
        )
        .remove(0)
    };
    if v.scale_attn_norm {
        y = layers::layer_norm(b, &y, &format!("{p}.norm"), d, v.norm_eps, -1)?;
    }
    layers::linear(
        b,
        &y,
        &format!("{p}.proj"),
        d,
        d,
        v.proj_bias,
        Init::TruncNormal(0.02),
    )
}

/// timm's `Mlp`: fc1, activation (fused with fc1's bias where ORT has a kernel for it), optional
/// norm, fc2.
fn mlp(b: &mut Builder, v: &Vit, x: &Value, p: &str) -> Result<Value> {
    let (d, hid) = (v.embed, v.mlp_hidden);
    let w = b.param(
        &format!("{p}.fc1.weight"),
        &[hid, d],
        Init::TruncNormal(0.02),
    )?;
    let wt = b.op("Transpose", &[&w], vec![("perm", Attr::Ints(vec![1, 0]))]);
    let y = b.op("MatMul", &[x, &wt], vec![]);
    let bias = if v.proj_bias {
        Some(b.param(&format!("{p}.fc1.bias"), &[hid], Init::Zeros)?)
    } else {
        None
    };
    let mut y = match (v.act.as_str(), &bias) {
        ("gelu", Some(bb)) => b
            .op_n("BiasGelu", MS_DOMAIN, &[&y, bb], vec![], 1)
            .remove(0),
        // FastGelu is the tanh approximation, the same formula as torch's gelu(approximate='tanh').
        ("gelu_tanh", Some(bb)) => b
            .op_n("FastGelu", MS_DOMAIN, &[&y, bb], vec![], 1)
            .remove(0),
        (act, _) => {
            let y = match &bias {
                Some(bb) => layers::add(b, &y, bb),
                None => y,
            };
            match act {
                // CLIP's x * sigmoid(1.702 x).
                "quick_gelu" => b
                    .op_n(
                        "QuickGelu",
                        MS_DOMAIN,
                        &[&y],
                        vec![("alpha", Attr::Float(1.702))],
                        1,
                    )
                    .remove(0),
                other => layers::act(b, other, &y)?,
            }
        }
    };
    if v.scale_mlp_norm {
        y = layers::layer_norm(b, &y, &format!("{p}.norm"), hid, v.norm_eps, -1)?;
    }
    layers::linear(
        b,
        &y,
        &format!("{p}.fc2"),
        hid,
        d,
        v.proj_bias,
        Init::TruncNormal(0.02),
    )
}

/// Token `i` of `[N, L, D]` as `[N, D]`.
fn token_at(b: &mut Builder, x: &Value, i: i64) -> Value {
    let idx = b.const_i64(vec![i], &[]);
    b.op("Gather", &[x, &idx], vec![("axis", Attr::Int(1))])
}

fn mean2(b: &mut Builder, x: &Value, y: &Value) -> Value {
    let s = layers::add(b, x, y);
    // Halving is exact in floating point, so this equals timm's `(x + y) / 2`.
    let half = b.const_f32(vec![0.5], &[]);
    layers::mul(b, &s, &half)
}

/// `global_pool_nlc`.
fn pool(b: &mut Builder, v: &Vit, x: &Value) -> Value {
    if v.pool == Pool::Token {
        return token_at(b, x, 0);
    }
    let n_prefix = v.prefix_tokens();
    let x = if n_prefix > 0 && !v.pool_include_prefix {
        let starts = b.const_i64(vec![n_prefix as i64], &[1]);
        let ends = b.const_i64(vec![i64::MAX], &[1]);
        let axes = b.const_i64(vec![1], &[1]);
        b.op("Slice", &[x, &starts, &ends, &axes], vec![])
    } else {
        x.clone()
    };
    let axes = b.const_i64(vec![1], &[1]);
    let keep = vec![("keepdims", Attr::Int(0))];
    match v.pool {
        Pool::Avg => b.op("ReduceMean", &[&x, &axes], keep),
        Pool::Max => b.op("ReduceMax", &[&x, &axes], keep),
        Pool::AvgMax => {
            let mx = b.op("ReduceMax", &[&x, &axes], keep.clone());
            let mean = b.op("ReduceMean", &[&x, &axes], keep);
            // timm: 0.5 * (amax + mean).
            let s = layers::add(b, &mx, &mean);
            let half = b.const_f32(vec![0.5], &[]);
            layers::mul(b, &half, &s)
        }
        Pool::Token => unreachable!("handled above"),
    }
}

fn head(b: &mut Builder, x: &Value, name: &str, d: usize, classes: usize) -> Result<Value> {
    layers::linear_2d(b, x, name, d, classes, true, Init::TruncNormal(0.02))
}

// ---------------------------------------------------------------------------------------------
// Default configs

/// config.json as timm writes it for a bare architecture name with default arguments.
fn default_config(arch: &str) -> Option<Json> {
    if UNSUPPORTED.iter().any(|(n, _)| *n == arch) {
        // Enough for the builder to run and say what this architecture needs.
        return Some(
            serde_json::json!({"architecture": arch, "num_classes": 1000, "pretrained_cfg": {}}),
        );
    }
    let row = arch_row(arch)?;
    let &(
        name,
        distilled,
        args,
        size,
        interpolation,
        crop_pct,
        crop_mode,
        (mean, std),
        num_classes,
        tag,
        license,
    ) = row;
    let args: Map<String, Json> = serde_json::from_str(args).ok()?;
    let embed = args.get("embed_dim").and_then(Json::as_u64).unwrap_or(768);
    let pool = args
        .get("global_pool")
        .and_then(Json::as_str)
        .unwrap_or("token");
    let classifier = if distilled {
        serde_json::json!(["head", "head_dist"])
    } else {
        serde_json::json!("head")
    };
    Some(serde_json::json!({
        "architecture": name,
        "num_classes": num_classes,
        "num_features": embed,
        "global_pool": pool,
        "pretrained_cfg": {
            "tag": tag,
            "custom_load": false,
            "input_size": [3, size, size],
            // timm's test_vit* default to dynamic_img_size; every other entry here has a fixed size.
            "fixed_input_size": !name.starts_with("test_vit"),
            "interpolation": interpolation,
            "crop_pct": crop_pct,
            "crop_mode": crop_mode,
            "mean": mean,
            "std": std,
            "num_classes": num_classes,
            "pool_size": null,
            "first_conv": "patch_embed.proj",
            "classifier": classifier,
            "license": if license.is_empty() { Json::Null } else { Json::from(license) },
        }
    }))
}

// ---------------------------------------------------------------------------------------------
// Tables (timm 1.0.31)

type Norm = ([f64; 3], [f64; 3]);
const IMAGENET: Norm = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
const INCEPTION: Norm = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]);
const CLIP: Norm = (
    [0.48145466, 0.4578275, 0.40821073],
    [0.26862954, 0.26130258, 0.27577711],
);
const ZERO_ONE: Norm = ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]);

/// One timm architecture: name, distilled (DeiT's `VisionTransformerDistilled`), the entrypoint's
/// model_args as JSON (`norm_eps` stands for `norm_layer=partial(LayerNorm, eps=...)`), then the
/// default pretrained cfg: input side, interpolation, crop_pct, crop_mode, mean/std, num_classes,
/// tag, license.
#[rustfmt::skip]
type ArchRow = (&'static str, bool, &'static str, usize, &'static str, f64, &'static str, Norm, usize, &'static str, &'static str);

/// Every `vision_transformer.py` / `deit.py` entrypoint built from the standard block.
#[rustfmt::skip]
static ARCHS: &[ArchRow] = &[
    ("beit3_base_patch16_224", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12,"mlp_ratio":4,"scale_attn_norm":true,"scale_mlp_norm":true,"class_token":true,"global_pool":"avg","norm_eps":1e-05}"#, 224, "bicubic", 1.0, "center", IMAGENET, 1000, "in22k_ft_in1k", "apache-2.0"),
    ("beit3_giant_patch14_224", false, r#"{"patch_size":14,"embed_dim":1408,"depth":40,"num_heads":16,"mlp_ratio":4.3637,"scale_attn_norm":true,"scale_mlp_norm":true,"class_token":true,"global_pool":"avg","norm_eps":1e-05}"#, 224, "bicubic", 1.0, "center", IMAGENET, 1000, "untrained", "apache-2.0"),
    ("beit3_giant_patch14_336", false, r#"{"patch_size":14,"embed_dim":1408,"depth":40,"num_heads":16,"mlp_ratio":4.3637,"scale_attn_norm":true,"scale_mlp_norm":true,"class_token":true,"global_pool":"avg","norm_eps":1e-05}"#, 336, "bicubic", 1.0, "center", IMAGENET, 1000, "untrained", "apache-2.0"),
    ("beit3_large_patch16_224", false, r#"{"patch_size":16,"embed_dim":1024,"depth":24,"num_heads":16,"mlp_ratio":4,"scale_attn_norm":true,"scale_mlp_norm":true,"class_token":true,"global_pool":"avg","norm_eps":1e-05}"#, 224, "bicubic", 1.0, "center", IMAGENET, 1000, "in22k_ft_in1k", "apache-2.0"),
    ("deit3_base_patch16_224", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12,"no_embed_class":true,"init_values":1e-06}"#, 224, "bicubic", 0.9, "center", IMAGENET, 1000, "fb_in1k", "apache-2.0"),
    ("deit3_base_patch16_384", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12,"no_embed_class":true,"init_values":1e-06}"#, 384, "bicubic", 1.0, "center", IMAGENET, 1000, "fb_in1k", "apache-2.0"),
    ("deit3_huge_patch14_224", false, r#"{"patch_size":14,"embed_dim":1280,"depth":32,"num_heads":16,"no_embed_class":true,"init_values":1e-06}"#, 224, "bicubic", 0.9, "center", IMAGENET, 1000, "fb_in1k", "apache-2.0"),
    ("deit3_large_patch16_224", false, r#"{"patch_size":16,"embed_dim":1024,"depth":24,"num_heads":16,"no_embed_class":true,"init_values":1e-06}"#, 224, "bicubic", 0.9, "center", IMAGENET, 1000, "fb_in1k", "apache-2.0"),
    ("deit3_large_patch16_384", false, r#"{"patch_size":16,"embed_dim":1024,"depth":24,"num_heads":16,"no_embed_class":true,"init_values":1e-06}"#, 384, "bicubic", 1.0, "center", IMAGENET, 1000, "fb_in1k", "apache-2.0"),
    ("deit3_medium_patch16_224", false, r#"{"patch_size":16,"embed_dim":512,"depth":12,"num_heads":8,"no_embed_class":true,"init_values":1e-06}"#, 224, "bicubic", 0.9, "center", IMAGENET, 1000, "fb_in1k", "apache-2.0"),
    ("deit3_small_patch16_224", false, r#"{"patch_size":16,"embed_dim":384,"depth":12,"num_heads":6,"no_embed_class":true,"init_values":1e-06}"#, 224, "bicubic", 0.9, "center", IMAGENET, 1000, "fb_in1k", "apache-2.0"),
    ("deit3_small_patch16_384", false, r#"{"patch_size":16,"embed_dim":384,"depth":12,"num_heads":6,"no_embed_class":true,"init_values":1e-06}"#, 384, "bicubic", 1.0, "center", IMAGENET, 1000, "fb_in1k", "apache-2.0"),
    ("deit_base_distilled_patch16_224", true, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12}"#, 224, "bicubic", 0.9, "center", IMAGENET, 1000, "fb_in1k", "apache-2.0"),
    ("deit_base_distilled_patch16_384", true, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12}"#, 384, "bicubic", 1.0, "center", IMAGENET, 1000, "fb_in1k", "apache-2.0"),
    ("deit_base_patch16_224", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12}"#, 224, "bicubic", 0.9, "center", IMAGENET, 1000, "fb_in1k", "apache-2.0"),
    ("deit_base_patch16_384", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12}"#, 384, "bicubic", 1.0, "center", IMAGENET, 1000, "fb_in1k", "apache-2.0"),
    ("deit_small_distilled_patch16_224", true, r#"{"patch_size":16,"embed_dim":384,"depth":12,"num_heads":6}"#, 224, "bicubic", 0.9, "center", IMAGENET, 1000, "fb_in1k", "apache-2.0"),
    ("deit_small_patch16_224", false, r#"{"patch_size":16,"embed_dim":384,"depth":12,"num_heads":6}"#, 224, "bicubic", 0.9, "center", IMAGENET, 1000, "fb_in1k", "apache-2.0"),
    ("deit_tiny_distilled_patch16_224", true, r#"{"patch_size":16,"embed_dim":192,"depth":12,"num_heads":3}"#, 224, "bicubic", 0.9, "center", IMAGENET, 1000, "fb_in1k", "apache-2.0"),
    ("deit_tiny_patch16_224", false, r#"{"patch_size":16,"embed_dim":192,"depth":12,"num_heads":3}"#, 224, "bicubic", 0.9, "center", IMAGENET, 1000, "fb_in1k", "apache-2.0"),
    ("eva_large_patch14_196", false, r#"{"patch_size":14,"embed_dim":1024,"depth":24,"num_heads":16,"global_pool":"avg"}"#, 196, "bicubic", 1.0, "center", CLIP, 1000, "in22k_ft_in22k_in1k", "mit"),
    ("eva_large_patch14_336", false, r#"{"patch_size":14,"embed_dim":1024,"depth":24,"num_heads":16,"global_pool":"avg"}"#, 336, "bicubic", 1.0, "squash", CLIP, 1000, "in22k_ft_in22k_in1k", "mit"),
    ("flexivit_base", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12,"no_embed_class":true}"#, 240, "bicubic", 0.95, "center", INCEPTION, 1000, "1200ep_in1k", "apache-2.0"),
    ("flexivit_large", false, r#"{"patch_size":16,"embed_dim":1024,"depth":24,"num_heads":16,"no_embed_class":true}"#, 240, "bicubic", 0.95, "center", INCEPTION, 1000, "1200ep_in1k", "apache-2.0"),
    ("flexivit_small", false, r#"{"patch_size":16,"embed_dim":384,"depth":12,"num_heads":6,"no_embed_class":true}"#, 240, "bicubic", 0.95, "center", INCEPTION, 1000, "1200ep_in1k", "apache-2.0"),
    ("test_vit", false, r#"{"patch_size":16,"embed_dim":64,"depth":6,"num_heads":2,"mlp_ratio":3}"#, 160, "bicubic", 0.95, "center", INCEPTION, 1000, "r160_in1k", "apache-2.0"),
    ("test_vit2", false, r#"{"patch_size":16,"embed_dim":64,"depth":8,"num_heads":2,"mlp_ratio":3,"class_token":false,"reg_tokens":1,"global_pool":"avg","init_values":1e-05}"#, 160, "bicubic", 0.95, "center", INCEPTION, 1000, "r160_in1k", "apache-2.0"),
    ("vit_base_patch14_dinov2", false, r#"{"patch_size":14,"embed_dim":768,"depth":12,"num_heads":12,"init_values":1e-05}"#, 518, "bicubic", 1.0, "center", IMAGENET, 0, "lvd142m", "apache-2.0"),
    ("vit_base_patch14_reg1_tipsv2", false, r#"{"patch_size":14,"embed_dim":768,"depth":12,"num_heads":12,"init_values":1.0,"reg_tokens":1,"no_embed_class":true}"#, 448, "bicubic", 1.0, "center", ZERO_ONE, 0, "webli", "apache-2.0"),
    ("vit_base_patch14_reg4_dinov2", false, r#"{"patch_size":14,"embed_dim":768,"depth":12,"num_heads":12,"init_values":1e-05,"reg_tokens":4,"no_embed_class":true}"#, 518, "bicubic", 1.0, "center", IMAGENET, 0, "lvd142m", "apache-2.0"),
    ("vit_base_patch16_224", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12}"#, 224, "bicubic", 0.9, "center", INCEPTION, 1000, "augreg2_in21k_ft_in1k", "apache-2.0"),
    ("vit_base_patch16_224_miil", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12,"qkv_bias":false}"#, 224, "bilinear", 0.875, "center", ZERO_ONE, 11221, "in21k", "apache-2.0"),
    ("vit_base_patch16_384", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12}"#, 384, "bicubic", 1.0, "center", INCEPTION, 1000, "augreg_in21k_ft_in1k", "apache-2.0"),
    ("vit_base_patch16_clip_224", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12,"pre_norm":true,"norm_eps":1e-05}"#, 224, "bicubic", 0.95, "center", CLIP, 1000, "laion2b_ft_in12k_in1k", "apache-2.0"),
    ("vit_base_patch16_clip_384", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12,"pre_norm":true,"norm_eps":1e-05}"#, 384, "bicubic", 1.0, "squash", CLIP, 1000, "laion2b_ft_in12k_in1k", "apache-2.0"),
    ("vit_base_patch16_clip_quickgelu_224", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12,"pre_norm":true,"norm_eps":1e-05,"act_layer":"quick_gelu"}"#, 224, "bicubic", 1.0, "center", CLIP, 512, "metaclip_2pt5b", "cc-by-nc-4.0"),
    ("vit_base_patch16_gap_224", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":16,"class_token":false,"global_pool":"avg","fc_norm":false}"#, 224, "bicubic", 0.9, "center", INCEPTION, 1000, "untrained", "apache-2.0"),
    ("vit_base_patch16_plus_240", false, r#"{"patch_size":16,"embed_dim":896,"depth":12,"num_heads":14,"init_values":1e-05}"#, 240, "bicubic", 0.95, "center", INCEPTION, 1000, "untrained", "apache-2.0"),
    ("vit_base_patch16_plus_clip_240", false, r#"{"patch_size":16,"embed_dim":896,"depth":12,"num_heads":14,"pre_norm":true,"norm_eps":1e-05}"#, 240, "bicubic", 1.0, "center", CLIP, 640, "laion400m_e32", "mit"),
    ("vit_base_patch16_radio_v3", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12,"init_values":1e-05,"reg_tokens":7,"no_embed_class":true,"final_norm":false}"#, 512, "bicubic", 1.0, "center", CLIP, 0, "c_radio", "nvidia-open-model-license"),
    ("vit_base_patch16_reg4_gap_256", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12,"class_token":false,"no_embed_class":true,"global_pool":"avg","reg_tokens":4}"#, 256, "bicubic", 0.9, "center", INCEPTION, 1000, "untrained", "apache-2.0"),
    ("vit_base_patch16_siglip_gap_224", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12,"class_token":false,"global_pool":"avg","fc_norm":false}"#, 224, "bicubic", 0.9, "center", INCEPTION, 0, "v2_webli", "apache-2.0"),
    ("vit_base_patch16_siglip_gap_256", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12,"class_token":false,"global_pool":"avg","fc_norm":false}"#, 256, "bicubic", 0.9, "center", INCEPTION, 0, "v2_webli", "apache-2.0"),
    ("vit_base_patch16_siglip_gap_384", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12,"class_token":false,"global_pool":"avg","fc_norm":false}"#, 384, "bicubic", 0.9, "center", INCEPTION, 0, "v2_webli", "apache-2.0"),
    ("vit_base_patch16_siglip_gap_512", false, r#"{"patch_size":16,"embed_dim":768,"depth":12,"num_heads":12,"class_token":false,"global_pool":"avg","fc_norm":false}"#, 512, "bicubic", 0.9, "center", INCEPTION, 0, "v2_webli", "apache-2.0"),
    ("vit_base_patch32_224", false, r#"{"patch_size":32,"embed_dim":768,"depth":12,"num_heads":12}"#, 224, "bicubic", 0.9, "center", INCEPTION, 1000, "augreg_in21k_ft_in1k", "apache-2.0"),
    ("vit_base_patch32_384", false, r#"{"patch_size":32,"embed_dim":768,"depth":12,"num_heads":12}"#, 384, "bicubic", 1.0, "center", INCEPTION, 1000, "augreg_in21k_ft_in1k", "apache-2.0"),
    ("vit_base_patch32_clip_224", false, r#"{"patch_size":32,"embed_dim":768,"depth":12,"num_heads":12,"pre_norm":true,"norm_eps":1e-05}"#, 224, "bicubic", 0.9, "center", CLIP, 1000, "laion2b_ft_in12k_in1k", "apache-2.0"),
    ("vit_base_patch32_clip_256", false, r#"{"patch_size":32,"embed_dim":768,"depth":12,"num_heads":12,"pre_norm":true,"norm_eps":1e-05}"#, 256, "bicubic", 1.0, "center", CLIP, 512, "datacompxl", "apache-2.0"),
    ("vit_base_patch32_clip_384", false, r#"{"patch_size":32,"embed_dim":768,"depth":12,"num_heads":12,"pre_norm":true,"norm_eps":1e-05}"#, 384, "bicubic", 1.0, "center", CLIP, 1000, "laion2b_ft_in12k_in1k", "apache-2.0"),
    ("vit_base_patch32_clip_448", false, r#"{"patch_size":32,"embed_dim":768,"depth":12,"num_heads":12,"pre_norm":true,"norm_eps":1e-05}"#, 448, "bicubic", 1.0, "center", CLIP, 1000, "laion2b_ft_in12k_in1k", "apache-2.0"),
    ("vit_base_patch32_clip_quickgelu_224", false, r#"{"patch_size":32,"embed_dim":768,"depth":12,"num_heads":12,"pre_norm":true,"norm_eps":1e-05,"act_layer":"quick_gelu"}"#, 224, "bicubic", 0.9, "center", CLIP, 512, "laion400m_e32", "mit"),
    ("vit_base_patch32_plus_256", false, r#"{"patch_size":32,"embed_dim":896,"depth":12,"num_heads":14,"init_values":1e-05}"#, 256, "bicubic", 0.95, "center", INCEPTION, 1000, "untrained", "apache-2.0"),
    ("vit_base_patch32_siglip_gap_256", false, r#"{"patch_size":32,"embed_dim":768,"depth":12,"num_heads":12,"class_token":false,"global_pool":"avg","fc_norm":false,"act_layer":"gelu_tanh"}"#, 256, "bicubic", 0.9, "center", INCEPTION, 0, "v2_webli", "apache-2.0"),
    ("vit_base_patch8_224", false, r#"{"patch_size":8,"embed_dim":768,"depth":12,"num_heads":12}"#, 224, "bicubic", 0.9, "center", INCEPTION, 1000, "augreg2_in21k_ft_in1k", "apache-2.0"),
    ("vit_betwixt_patch16_gap_256", false, r#"{"patch_size":16,"embed_dim":640,"depth":12,"num_heads":10,"class_token":false,"global_pool":"avg","qkv_bias":false,"init_values":1e-06,"fc_norm":false}"#, 256, "bicubic", 0.95, "center", INCEPTION, 1000, "untrained", "apache-2.0"),
    ("vit_betwixt_patch16_reg1_gap_256", false, r#"{"patch_size":16,"embed_dim":640,"depth":12,"num_heads":10,"init_values":1e-05,"class_token":false,"no_embed_class":true,"reg_tokens":1,"global_pool":"avg"}"#, 256, "bicubic", 0.95, "center", INCEPTION, 1000, "sbb_in1k", "apache-2.0"),
    ("vit_betwixt_patch16_reg4_gap_256", false, r#"{"patch_size":16,"embed_dim":640,"depth":12,"num_heads":10,"init_values":1e-05,"class_token":false,"no_embed_class":true,"reg_tokens":4,"global_pool":"avg"}"#, 256, "bicubic", 0.95, "center", INCEPTION, 1000, "sbb2_e200_in12k_ft_in1k", "apache-2.0"),
    ("vit_betwixt_patch16_reg4_gap_384", false, r#"{"patch_size":16,"embed_dim":640,"depth":12,"num_heads":10,"init_values":1e-05,"class_token":false,"no_embed_class":true,"reg_tokens":4,"global_pool":"avg"}"#, 384, "bicubic", 1.0, "center", INCEPTION, 1000, "sbb2_e200_in12k_ft_in1k", "apache-2.0"),
    ("vit_betwixt_patch32_clip_224", false, r#"{"patch_size":32,"embed_dim":640,"depth":12,"num_heads":10,"pre_norm":true,"norm_eps":1e-05}"#, 224, "bicubic", 0.9, "center", CLIP, 512, "tinyclip_laion400m", "mit"),
    ("vit_giant_patch14_224", false, r#"{"patch_size":14,"embed_dim":1408,"mlp_ratio":4.363636363636363,"depth":40,"num_heads":16}"#, 224, "bicubic", 0.9, "center", INCEPTION, 1000, "untrained", "apache-2.0"),
    ("vit_giant_patch14_clip_224", false, r#"{"patch_size":14,"embed_dim":1408,"mlp_ratio":4.363636363636363,"depth":40,"num_heads":16,"pre_norm":true,"norm_eps":1e-05}"#, 224, "bicubic", 1.0, "center", CLIP, 1024, "laion2b", "apache-2.0"),
    ("vit_giant_patch16_gap_224", false, r#"{"patch_size":16,"embed_dim":1408,"depth":40,"num_heads":16,"mlp_ratio":4.363636363636363,"class_token":false,"global_pool":"avg","fc_norm":false}"#, 224, "bicubic", 0.9, "center", IMAGENET, 0, "in22k_ijepa", "cc-by-nc-4.0"),
    ("vit_giant_patch16_radio_v3", false, r#"{"patch_size":16,"embed_dim":1536,"depth":40,"num_heads":24,"reg_tokens":7,"no_embed_class":true,"final_norm":false}"#, 512, "bicubic", 1.0, "center", CLIP, 0, "c_radio", "nvidia-open-model-license"),
    ("vit_giantopt_patch16_siglip_gap_256", false, r#"{"patch_size":16,"embed_dim":1536,"depth":40,"num_heads":16,"class_token":false,"global_pool":"avg","fc_norm":false,"act_layer":"gelu_tanh"}"#, 256, "bicubic", 0.9, "center", INCEPTION, 0, "v2_webli", "apache-2.0"),
    ("vit_giantopt_patch16_siglip_gap_384", false, r#"{"patch_size":16,"embed_dim":1536,"depth":40,"num_heads":16,"class_token":false,"global_pool":"avg","fc_norm":false,"act_layer":"gelu_tanh"}"#, 384, "bicubic", 0.9, "center", INCEPTION, 0, "v2_webli", "apache-2.0"),
    ("vit_gigantic_patch14_224", false, r#"{"patch_size":14,"embed_dim":1664,"mlp_ratio":4.923076923076923,"depth":48,"num_heads":16}"#, 224, "bicubic", 0.9, "center", INCEPTION, 1000, "untrained", "apache-2.0"),
    ("vit_gigantic_patch14_clip_224", false, r#"{"patch_size":14,"embed_dim":1664,"mlp_ratio":4.923076923076923,"depth":48,"num_heads":16,"pre_norm":true,"norm_eps":1e-05}"#, 224, "bicubic", 1.0, "center", CLIP, 1280, "laion2b", "apache-2.0"),
    ("vit_gigantic_patch14_clip_378", false, r#"{"patch_size":14,"embed_dim":1664,"mlp_ratio":4.923076923076923,"depth":48,"num_heads":16,"pre_norm":true,"norm_eps":1e-05}"#, 378, "bicubic", 1.0, "squash", CLIP, 1280, "metaclip2_worldwide", "cc-by-nc-4.0"),
    ("vit_gigantic_patch14_clip_quickgelu_224", false, r#"{"patch_size":14,"embed_dim":1664,"mlp_ratio":4.923076923076923,"depth":48,"num_heads":16,"pre_norm":true,"norm_eps":1e-05,"act_layer":"quick_gelu"}"#, 224, "bicubic", 1.0, "center", CLIP, 1280, "metaclip_2pt5b", "cc-by-nc-4.0"),
    ("vit_huge_patch14_224", false, r#"{"patch_size":14,"embed_dim":1280,"depth":32,"num_heads":16}"#, 224, "bicubic", 0.9, "center", INCEPTION, 0, "orig_in21k", "apache-2.0"),
    ("vit_huge_patch14_clip_224", false, r#"{"patch_size":14,"embed_dim":1280,"depth":32,"num_heads":16,"pre_norm":true,"norm_eps":1e-05}"#, 224, "bicubic", 1.0, "center", CLIP, 1000, "laion2b_ft_in12k_in1k", "apache-2.0"),
    ("vit_huge_patch14_clip_336", false, r#"{"patch_size":14,"embed_dim":1280,"depth":32,"num_heads":16,"pre_norm":true,"norm_eps":1e-05}"#, 336, "bicubic", 1.0, "squash", CLIP, 1000, "laion2b_ft_in12k_in1k", "apache-2.0"),
    ("vit_huge_patch14_clip_378", false, r#"{"patch_size":14,"embed_dim":1280,"depth":32,"num_heads":16,"pre_norm":true,"norm_eps":1e-05}"#, 378, "bicubic", 1.0, "center", CLIP, 1024, "dfn5b", "apple-ascl"),
    ("vit_huge_patch14_clip_quickgelu_224", false, r#"{"patch_size":14,"embed_dim":1280,"depth":32,"num_heads":16,"pre_norm":true,"norm_eps":1e-05,"act_layer":"quick_gelu"}"#, 224, "bicubic", 1.0, "center", CLIP, 1024, "dfn5b", "apple-ascl"),
    ("vit_huge_patch14_clip_quickgelu_378", false, r#"{"patch_size":14,"embed_dim":1280,"depth":32,"num_heads":16,"pre_norm":true,"norm_eps":1e-05,"act_layer":"quick_gelu"}"#, 378, "bicubic", 1.0, "center", CLIP, 1024, "dfn5b", "apple-ascl"),
    ("vit_huge_patch14_gap_224", false, r#"{"patch_size":14,"embed_dim":1280,"depth":32,"num_heads":16,"class_token":false,"global_pool":"avg","fc_norm":false}"#, 224, "bicubic", 0.9, "center", IMAGENET, 0, "in1k_ijepa", "cc-by-nc-4.0"),
    ("vit_huge_patch16_gap_448", false, r#"{"patch_size":16,"embed_dim":1280,"depth":32,"num_heads":16,"class_token":false,"global_pool":"avg","fc_norm":false}"#, 448, "bicubic", 1.0, "center", IMAGENET, 0, "in1k_ijepa", "cc-by-nc-4.0"),
    ("vit_huge_patch16_radio_v3", false, r#"{"patch_size":16,"embed_dim":1280,"depth":32,"num_heads":16,"reg_tokens":7,"no_embed_class":true,"final_norm":false}"#, 512, "bicubic", 1.0, "center", CLIP, 0, "c_radio", "nvidia-open-model-license"),
    ("vit_huge_patch16_radio_v4", false, r#"{"patch_size":16,"embed_dim":1280,"depth":32,"num_heads":16,"reg_tokens":9,"no_embed_class":true,"final_norm":false}"#, 512, "bicubic", 1.0, "center", CLIP, 0, "c_radio", "nvidia-open-model-license"),
    ("vit_intern300m_patch14_448", false, r#"{"patch_size":14,"embed_dim":1024,"depth":24,"num_heads":16,"init_values":0.1,"final_norm":false}"#, 448, "bicubic", 1.0, "center", IMAGENET, 0, "ogvl_dist", "mit"),
    ("vit_large_patch14_224", false, r#"{"patch_size":14,"embed_dim":1024,"depth":24,"num_heads":16}"#, 224, "bicubic", 0.9, "center", INCEPTION, 1000, "untrained", "apache-2.0"),
    ("vit_large_patch14_clip_224", false, r#"{"patch_size":14,"embed_dim":1024,"depth":24,"num_heads":16,"pre_norm":true,"norm_eps":1e-05}"#, 224, "bicubic", 1.0, "center", INCEPTION, 1000, "laion2b_ft_in12k_in1k", "apache-2.0"),
    ("vit_large_patch14_clip_336", false, r#"{"patch_size":14,"embed_dim":1024,"depth":24,"num_heads":16,"pre_norm":true,"norm_eps":1e-05}"#, 336, "bicubic", 1.0, "squash", INCEPTION, 1000, "laion2b_ft_in12k_in1k", "apache-2.0"),
    ("vit_large_patch14_clip_quickgelu_224", false, r#"{"patch_size":14,"embed_dim":1024,"depth":24,"num_heads":16,"pre_norm":true,"norm_eps":1e-05,"act_layer":"quick_gelu"}"#, 224, "bicubic", 1.0, "center", CLIP, 768, "dfn2b", "apple-ascl"),
    ("vit_large_patch14_clip_quickgelu_336", false, r#"{"patch_size":14,"embed_dim":1024,"depth":24,"num_heads":16,"pre_norm":true,"norm_eps":1e-05,"act_layer":"quick_gelu"}"#, 336, "bicubic", 1.0, "center", CLIP, 768, "openai", "apache-2.0"),
    ("vit_large_patch14_dinov2", false, r#"{"patch_size":14,"embed_dim":1024,"depth":24,"num_heads":16,"init_values":1e-05}"#, 518, "bicubic", 1.0, "center", IMAGENET, 0, "lvd142m", "apache-2.0"),
    ("vit_large_patch14_reg1_tipsv2", false, r#"{"patch_size":14,"embed_dim":1024,"depth":24,"num_heads":16,"init_values":1.0,"reg_tokens":1,"no_embed_class":true}"#, 448, "bicubic", 1.0, "center", ZERO_ONE, 0, "webli", "apache-2.0"),
    ("vit_large_patch14_reg4_dinov2", false, r#"{"patch_size":14,"embed_dim":1024,"depth":24,"num_heads":16,"init_values":1e-05,"reg_tokens":4,"no_embed_class":true}"#, 518, "bicubic", 1.0, "center", IMAGENET, 0, "lvd142m", "apache-2.0"),
    ("vit_large_patch16_224", false, r#"{"patch_size":16,"embed_dim":1024,"depth":24,"num_heads":16}"#, 224, "bicubic", 0.9, "center", INCEPTION, 1000, "augreg_in21k_ft_in1k", "apache-2.0"),
    ("vit_large_patch16_384", false, r#"{"patch_size":16,"embed_dim":1024,"depth":24,"num_heads":16}"#, 384, "bicubic", 1.0, "center", INCEPTION, 1000, "augreg_in21k_ft_in1k", "apache-2.0"),
    ("vit_large_patch16_radio_v3", false, r#"{"patch_size":16,"embed_dim":1024,"depth":24,"num_heads":16,"init_values":1e-05,"reg_tokens":7,"no_embed_class":true,"final_norm":false}"#, 512, "bicubic", 1.0, "center", CLIP, 0, "c_radio", "nvidia-open-model-license"),
    ("vit_large_patch16_siglip_gap_256", false, r#"{"patch_size":16,"embed_dim":1024,"depth":24,"num_heads":16,"class_token":false,"global_pool":"avg","fc_norm":false}"#, 256, "bicubic", 0.9, "center", INCEPTION, 0, "v2_webli", "apache-2.0"),
    ("vit_large_patch16_siglip_gap_384", false, r#"{"patch_size":16,"embed_dim":1024,"depth":24,"num_heads":16,"class_token":false,"global_pool":"avg","fc_norm":false}"#, 384, "bicubic", 0.9, "center", INCEPTION, 0, "v2_webli", "apache-2.0"),
    ("vit_large_patch16_siglip_gap_512", false, r#"{"patch_size":16,"embed_dim":1024,"depth":24,"num_heads":16,"class_token":false,"global_pool":"avg","fc_norm":false,"act_layer":"gelu_tanh"}"#, 512, "bicubic", 0.9, "center", INCEPTION, 0, "v2_webli", "apache-2.0"),
    ("vit_large_patch32_224", false, r#"{"patch_size":32,"embed_dim":1024,"depth":24,"num_heads":16}"#, 224, "bicubic", 0.9, "center", INCEPTION, 0, "orig_in21k", "apache-2.0"),
    ("vit_large_patch32_384", false, r#"{"patch_size":32,"embed_dim":1024,"depth":24,"num_heads":16}"#, 384, "bicubic", 1.0, "center", INCEPTION, 1000, "orig_in21k_ft_in1k", "apache-2.0"),
    ("vit_little_patch16_reg1_gap_256", false, r#"{"patch_size":16,"embed_dim":320,"depth":14,"num_heads":5,"init_values":1e-05,"mlp_ratio":5.6,"class_token":false,"no_embed_class":true,"reg_tokens":1,"global_pool":"avg"}"#, 256, "bicubic", 0.95, "center", INCEPTION, 1000, "sbb_in12k_ft_in1k", "apache-2.0"),
    ("vit_little_patch16_reg4_gap_256", false, r#"{"patch_size":16,"embed_dim":320,"depth":14,"num_heads":5,"init_values":1e-05,"mlp_ratio":5.6,"class_token":false,"no_embed_class":true,"reg_tokens":4,"global_pool":"avg"}"#, 256, "bicubic", 0.95, "center", INCEPTION, 1000, "sbb_in1k", "apache-2.0"),
    ("vit_medium_patch16_clip_224", false, r#"{"embed_dim":512,"depth":12,"num_heads":8,"pre_norm":true,"norm_eps":1e-05}"#, 224, "bicubic", 0.9, "center", CLIP, 512, "tinyclip_yfcc15m", "mit"),
    ("vit_medium_patch16_gap_240", false, r#"{"patch_size":16,"embed_dim":512,"depth":12,"num_heads":8,"class_token":false,"global_pool":"avg","qkv_bias":false,"init_values":1e-06,"fc_norm":false}"#, 240, "bicubic", 0.95, "center", INCEPTION, 11821, "sw_in12k", "apache-2.0"),
    ("vit_medium_patch16_gap_256", false, r#"{"patch_size":16,"embed_dim":512,"depth":12,"num_heads":8,"class_token":false,"global_pool":"avg","qkv_bias":false,"init_values":1e-06,"fc_norm":false}"#, 256, "bicubic", 0.95, "center", INCEPTION, 1000, "sw_in12k_ft_in1k", "apache-2.0"),
    ("vit_medium_patch16_gap_384", false, r#"{"patch_size":16,"embed_dim":512,"depth":12,"num_heads":8,"class_token":false,"global_pool":"avg","qkv_bias":false,"init_values":1e-06,"fc_norm":false}"#, 384, "bicubic", 0.95, "squash", INCEPTION, 1000, "sw_in12k_ft_in1k", "apache-2.0"),
    ("vit_medium_patch16_reg1_gap_256", false, r#"{"patch_size":16,"embed_dim":512,"depth":12,"num_heads":8,"init_values":1e-05,"class_token":false,"no_embed_class":true,"reg_tokens":1,"global_pool":"avg"}"#, 256, "bicubic", 0.95, "center", INCEPTION, 1000, "sbb_in1k", "apache-2.0"),
    ("vit_medium_patch16_reg4_gap_256", false, r#"{"patch_size":16,"embed_dim":512,"depth":12,"num_heads":8,"init_values":1e-05,"class_token":false,"no_embed_class":true,"reg_tokens":4,"global_pool":"avg"}"#, 256, "bicubic", 0.95, "center", INCEPTION, 1000, "sbb_in12k_ft_in1k", "apache-2.0"),
    ("vit_medium_patch32_clip_224", false, r#"{"patch_size":32,"embed_dim":512,"depth":12,"num_heads":8,"pre_norm":true,"norm_eps":1e-05}"#, 224, "bicubic", 0.9, "center", CLIP, 512, "tinyclip_laion400m", "mit"),
    ("vit_mediumd_patch16_reg4_gap_256", false, r#"{"patch_size":16,"embed_dim":512,"depth":20,"num_heads":8,"init_values":1e-05,"class_token":false,"no_embed_class":true,"reg_tokens":4,"global_pool":"avg"}"#, 256, "bicubic", 0.95, "center", INCEPTION, 1000, "sbb2_e200_in12k_ft_in1k", "apache-2.0"),
    ("vit_mediumd_patch16_reg4_gap_384", false, r#"{"patch_size":16,"embed_dim":512,"depth":20,"num_heads":8,"init_values":1e-05,"class_token":false,"no_embed_class":true,"reg_tokens":4,"global_pool":"avg"}"#, 384, "bicubic", 1.0, "center", INCEPTION, 1000, "sbb2_e200_in12k_ft_in1k", "apache-2.0"),
    ("vit_small_patch14_dinov2", false, r#"{"patch_size":14,"embed_dim":384,"depth":12,"num_heads":6,"init_values":1e-05}"#, 518, "bicubic", 1.0, "center", IMAGENET, 0, "lvd142m", "apache-2.0"),
    ("vit_small_patch14_reg4_dinov2", false, r#"{"patch_size":14,"embed_dim":384,"depth":12,"num_heads":6,"init_values":1e-05,"reg_tokens":4,"no_embed_class":true}"#, 518, "bicubic", 1.0, "center", IMAGENET, 0, "lvd142m", "apache-2.0"),
    ("vit_small_patch16_224", false, r#"{"patch_size":16,"embed_dim":384,"depth":12,"num_heads":6}"#, 224, "bicubic", 0.9, "center", INCEPTION, 1000, "augreg_in21k_ft_in1k", "apache-2.0"),
    ("vit_small_patch16_36x1_224", false, r#"{"patch_size":16,"embed_dim":384,"depth":36,"num_heads":6,"init_values":1e-05}"#, 224, "bicubic", 0.9, "center", INCEPTION, 1000, "untrained", "apache-2.0"),
    ("vit_small_patch16_384", false, r#"{"patch_size":16,"embed_dim":384,"depth":12,"num_heads":6}"#, 384, "bicubic", 1.0, "center", INCEPTION, 1000, "augreg_in21k_ft_in1k", "apache-2.0"),
    ("vit_small_patch32_224", false, r#"{"patch_size":32,"embed_dim":384,"depth":12,"num_heads":6}"#, 224, "bicubic", 0.9, "center", INCEPTION, 1000, "augreg_in21k_ft_in1k", "apache-2.0"),
    ("vit_small_patch32_384", false, r#"{"patch_size":32,"embed_dim":384,"depth":12,"num_heads":6}"#, 384, "bicubic", 1.0, "center", INCEPTION, 1000, "augreg_in21k_ft_in1k", "apache-2.0"),
    ("vit_small_patch8_224", false, r#"{"patch_size":8,"embed_dim":384,"depth":12,"num_heads":6}"#, 224, "bicubic", 0.9, "center", IMAGENET, 0, "dino", "apache-2.0"),
    ("vit_so150m2_patch16_reg1_gap_256", false, r#"{"patch_size":16,"embed_dim":832,"depth":21,"num_heads":13,"mlp_ratio":2.6153846153846154,"init_values":1e-05,"qkv_bias":false,"class_token":false,"reg_tokens":1,"global_pool":"avg"}"#, 256, "bicubic", 1.0, "center", INCEPTION, 1000, "sbb_e200_in12k_ft_in1k", "apache-2.0"),
    ("vit_so150m2_patch16_reg1_gap_384", false, r#"{"patch_size":16,"embed_dim":832,"depth":21,"num_heads":13,"mlp_ratio":2.6153846153846154,"init_values":1e-05,"qkv_bias":false,"class_token":false,"reg_tokens":1,"global_pool":"avg"}"#, 384, "bicubic", 1.0, "center", INCEPTION, 1000, "sbb_e200_in12k_ft_in1k", "apache-2.0"),
    ("vit_so150m2_patch16_reg1_gap_448", false, r#"{"patch_size":16,"embed_dim":832,"depth":21,"num_heads":13,"mlp_ratio":2.6153846153846154,"init_values":1e-05,"qkv_bias":false,"class_token":false,"reg_tokens":1,"global_pool":"avg"}"#, 448, "bicubic", 1.0, "squash", INCEPTION, 1000, "sbb_e200_in12k_ft_in1k", "apache-2.0"),
    ("vit_so150m_patch16_reg4_gap_256", false, r#"{"patch_size":16,"embed_dim":896,"depth":18,"num_heads":14,"mlp_ratio":2.572,"class_token":false,"reg_tokens":4,"global_pool":"avg","fc_norm":false}"#, 256, "bicubic", 0.95, "center", INCEPTION, 1000, "sbb_e250_in12k_ft_in1k", "apache-2.0"),
    ("vit_so150m_patch16_reg4_gap_384", false, r#"{"patch_size":16,"embed_dim":896,"depth":18,"num_heads":14,"mlp_ratio":2.572,"class_token":false,"reg_tokens":4,"global_pool":"avg","fc_norm":false}"#, 384, "bicubic", 1.0, "center", INCEPTION, 1000, "sbb_e250_in12k_ft_in1k", "apache-2.0"),
    ("vit_so400m_patch14_reg1_tipsv2", false, r#"{"patch_size":14,"embed_dim":1152,"depth":27,"num_heads":16,"init_values":1.0,"mlp_ratio":3.736111111111111,"reg_tokens":1,"no_embed_class":true}"#, 448, "bicubic", 1.0, "center", ZERO_ONE, 0, "webli", "apache-2.0"),
    ("vit_so400m_patch14_siglip_gap_224", false, r#"{"patch_size":14,"embed_dim":1152,"depth":27,"num_heads":16,"mlp_ratio":3.7362,"class_token":false,"global_pool":"avg","fc_norm":false}"#, 224, "bicubic", 0.9, "center", INCEPTION, 0, "v2_webli", "apache-2.0"),
    ("vit_so400m_patch14_siglip_gap_378", false, r#"{"patch_size":14,"embed_dim":1152,"depth":27,"num_heads":16,"mlp_ratio":3.7362,"class_token":false,"global_pool":"avg","fc_norm":false}"#, 378, "bicubic", 0.9, "center", INCEPTION, 0, "v2_webli", "apache-2.0"),
    ("vit_so400m_patch14_siglip_gap_384", false, r#"{"patch_size":14,"embed_dim":1152,"depth":27,"num_heads":16,"mlp_ratio":3.7362,"class_token":false,"global_pool":"avg","fc_norm":false}"#, 384, "bicubic", 1.0, "center", INCEPTION, 0, "webli", "apache-2.0"),
    ("vit_so400m_patch14_siglip_gap_448", false, r#"{"patch_size":14,"embed_dim":1152,"depth":27,"num_heads":16,"mlp_ratio":3.7362,"class_token":false,"global_pool":"avg","fc_norm":false}"#, 448, "bicubic", 1.0, "center", INCEPTION, 0, "pali_mix", "apache-2.0"),
    ("vit_so400m_patch14_siglip_gap_896", false, r#"{"patch_size":14,"embed_dim":1152,"depth":27,"num_heads":16,"mlp_ratio":3.7362,"class_token":false,"global_pool":"avg","fc_norm":false}"#, 896, "bicubic", 1.0, "center", INCEPTION, 0, "pali_pt", "apache-2.0"),
    ("vit_so400m_patch16_radio_v4", false, r#"{"patch_size":16,"embed_dim":1152,"depth":27,"num_heads":16,"mlp_ratio":3.736111111111111,"reg_tokens":9,"no_embed_class":true,"final_norm":false}"#, 512, "bicubic", 1.0, "center", CLIP, 0, "c_radio", "nvidia-open-model-license"),
    ("vit_so400m_patch16_siglip_gap_256", false, r#"{"patch_size":16,"embed_dim":1152,"depth":27,"num_heads":16,"mlp_ratio":3.7362,"class_token":false,"global_pool":"avg","fc_norm":false,"act_layer":"gelu_tanh"}"#, 256, "bicubic", 0.9, "center", INCEPTION, 0, "v2_webli", "apache-2.0"),
    ("vit_so400m_patch16_siglip_gap_384", false, r#"{"patch_size":16,"embed_dim":1152,"depth":27,"num_heads":16,"mlp_ratio":3.7362,"class_token":false,"global_pool":"avg","fc_norm":false,"act_layer":"gelu_tanh"}"#, 384, "bicubic", 0.9, "center", INCEPTION, 0, "v2_webli", "apache-2.0"),
    ("vit_so400m_patch16_siglip_gap_512", false, r#"{"patch_size":16,"embed_dim":1152,"depth":27,"num_heads":16,"mlp_ratio":3.7362,"class_token":false,"global_pool":"avg","fc_norm":false,"act_layer":"gelu_tanh"}"#, 512, "bicubic", 0.9, "center", INCEPTION, 0, "v2_webli", "apache-2.0"),
    ("vit_tiny_patch16_224", false, r#"{"patch_size":16,"embed_dim":192,"depth":12,"num_heads":3}"#, 224, "bicubic", 0.9, "center", INCEPTION, 1000, "augreg_in21k_ft_in1k", "apache-2.0"),
    ("vit_tiny_patch16_384", false, r#"{"patch_size":16,"embed_dim":192,"depth":12,"num_heads":3}"#, 384, "bicubic", 1.0, "center", INCEPTION, 1000, "augreg_in21k_ft_in1k", "apache-2.0"),
    ("vit_wee_patch16_reg1_gap_256", false, r#"{"patch_size":16,"embed_dim":256,"depth":14,"num_heads":4,"init_values":1e-05,"mlp_ratio":5,"class_token":false,"no_embed_class":true,"reg_tokens":1,"global_pool":"avg"}"#, 256, "bicubic", 0.95, "center", INCEPTION, 1000, "sbb_in1k", "apache-2.0"),
    ("vit_xsmall_patch16_clip_224", false, r#"{"embed_dim":256,"depth":10,"num_heads":4,"pre_norm":true,"norm_eps":1e-05}"#, 224, "bicubic", 0.9, "center", CLIP, 512, "tinyclip_yfcc15m", "mit"),
];

/// timm ViT entrypoints this builder recognises but cannot build, with what they need.
#[rustfmt::skip]
static UNSUPPORTED: &[(&str, &str)] = &[
    ("aimv2_1b_patch14_224", "RmsNorm, SwiGLU MLP"),
    ("aimv2_1b_patch14_336", "RmsNorm, SwiGLU MLP"),
    ("aimv2_1b_patch14_448", "RmsNorm, SwiGLU MLP"),
    ("aimv2_3b_patch14_224", "RmsNorm, SwiGLU MLP"),
    ("aimv2_3b_patch14_336", "RmsNorm, SwiGLU MLP"),
    ("aimv2_3b_patch14_448", "RmsNorm, SwiGLU MLP"),
    ("aimv2_huge_patch14_224", "RmsNorm, SwiGLU MLP"),
    ("aimv2_huge_patch14_336", "RmsNorm, SwiGLU MLP"),
    ("aimv2_huge_patch14_448", "RmsNorm, SwiGLU MLP"),
    ("aimv2_large_patch14_224", "RmsNorm, SwiGLU MLP"),
    ("aimv2_large_patch14_336", "RmsNorm, SwiGLU MLP"),
    ("aimv2_large_patch14_448", "RmsNorm, SwiGLU MLP"),
    ("test_vit3", "attention pooling (global_pool='map')"),
    ("test_vit4", "RmsNorm"),
    ("vit_base_patch16_18x2_224", "parallel blocks"),
    ("vit_base_patch16_rpn_224", "post-norm blocks"),
    ("vit_base_patch16_siglip_224", "attention pooling (global_pool='map')"),
    ("vit_base_patch16_siglip_256", "attention pooling (global_pool='map')"),
    ("vit_base_patch16_siglip_384", "attention pooling (global_pool='map')"),
    ("vit_base_patch16_siglip_512", "attention pooling (global_pool='map')"),
    ("vit_base_patch16_xp_224", "RmsNorm, parallel blocks"),
    ("vit_base_patch32_siglip_256", "attention pooling (global_pool='map')"),
    ("vit_dlittle_patch16_reg1_gap_256", "differential attention"),
    ("vit_dpwee_patch16_reg1_gap_256", "parallel blocks"),
    ("vit_dwee_patch16_reg1_gap_256", "differential attention"),
    ("vit_giant_patch14_dinov2", "SwiGLU MLP"),
    ("vit_giant_patch14_reg1_tipsv2", "SwiGLU MLP"),
    ("vit_giant_patch14_reg4_dinov2", "SwiGLU MLP"),
    ("vit_giantopt_patch16_siglip_256", "attention pooling (global_pool='map')"),
    ("vit_giantopt_patch16_siglip_384", "attention pooling (global_pool='map')"),
    ("vit_huge_patch14_xp_224", "RmsNorm, parallel blocks"),
    ("vit_large_patch14_xp_224", "RmsNorm, parallel blocks"),
    ("vit_large_patch16_siglip_256", "attention pooling (global_pool='map')"),
    ("vit_large_patch16_siglip_384", "attention pooling (global_pool='map')"),
    ("vit_large_patch16_siglip_512", "attention pooling (global_pool='map')"),
    ("vit_pwee_patch16_reg1_gap_256", "parallel blocks"),
    ("vit_small_patch16_18x2_224", "parallel blocks"),
    ("vit_so150m_patch16_reg4_map_256", "attention pooling (global_pool='map')"),
    ("vit_so400m_patch14_siglip_224", "attention pooling (global_pool='map')"),
    ("vit_so400m_patch14_siglip_378", "attention pooling (global_pool='map')"),
    ("vit_so400m_patch14_siglip_384", "attention pooling (global_pool='map')"),
    ("vit_so400m_patch16_siglip_256", "attention pooling (global_pool='map')"),
    ("vit_so400m_patch16_siglip_384", "attention pooling (global_pool='map')"),
    ("vit_so400m_patch16_siglip_512", "attention pooling (global_pool='map')"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_entry_has_a_default_config_the_builder_accepts() {
        for row in ARCHS {
            let json = default_config(row.0).unwrap();
            let cfg = ModelConfig::parse(json.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{}: {e}", row.0));
            let v = Vit::resolve(&cfg).unwrap_or_else(|e| panic!("{}: {e}", row.0));
            assert_eq!(cfg.num_features, Some(v.embed), "{}", row.0);
            assert_eq!(v.distilled, row.0.contains("distilled"), "{}", row.0);
        }
        for (name, _) in UNSUPPORTED {
            assert!(arch_row(name).is_none(), "{name} is both supported and not");
            let cfg =
                ModelConfig::parse(default_config(name).unwrap().to_string().as_bytes()).unwrap();
            assert_eq!(
                Vit::resolve(&cfg).unwrap_err().status(),
                crate::TimmStatus::TIMM_ERR_UNSUPPORTED,
                "{name}"
            );
        }
    }

    #[test]
    fn model_args_override_the_architecture_like_timm() {
        let mut json = default_config("vit_base_patch16_224").unwrap();
        json["model_args"] = serde_json::json!({"embed_dim": 64, "num_heads": 4, "mlp_ratio": 3.7362, "global_pool": "avg", "drop_path_rate": 0.1});
        let v = Vit::resolve(&ModelConfig::parse(json.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!((v.embed, v.mlp_hidden, v.depth), (64, 239, 12));
        // As timm's loader: model_args' pool (and the fc_norm it implies), not the root global_pool.
        assert!(v.use_fc_norm);
        assert_eq!(v.pool, Pool::Avg);

        json["model_args"] = serde_json::json!({"mlp_layer": "swiglu"});
        let e =
            Vit::resolve(&ModelConfig::parse(json.to_string().as_bytes()).unwrap()).unwrap_err();
        assert!(e.message().contains("mlp_layer"), "{e}");

        json["model_args"] = serde_json::json!({"patch_size": [32, 32]});
        let v = Vit::resolve(&ModelConfig::parse(json.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(v.patch, 32);
    }
}
