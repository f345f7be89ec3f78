//! Vision Transformers: timm's `vision_transformer.py` (`VisionTransformer` with the standard
//! pre-norm `Block`) and `deit.py` (`VisionTransformerDistilled`).
//!
//! The graph follows timm's forward: `PatchEmbed`, `_pos_embed` (class / distillation / register
//! tokens and the learned position embedding, added before or after the prefix tokens per
//! `no_embed_class`), `norm_pre`, the blocks, `norm`, `global_pool_nlc`, `fc_norm` and the head.
//! Attention runs as ONNX Runtime's fused `com.microsoft.Attention` (QKV projection and
//! attention in one kernel; on ORT 1.31 CPU it beat `MultiHeadAttention`, opset-23 `Attention`,
//! unfused MatMul/Softmax and timm's own torch.onnx export), the MLP with a fused bias + GELU.
//!
//! Feature maps are timm's `features_only=True` (`FeatureGetterNet` over `forward_intermediates`
//! with `norm=False`): every block's output, prefix tokens dropped, as an NCHW grid; by default
//! the last three blocks.
//!
//! Other input sizes: option `dynamic_img_size` resamples the position embedding in the graph for
//! each input as timm's `dynamic_img_size=True` does; a fixed input size other than `img_size`
//! resamples it once at load as timm's `img_size=` argument does (through the checkpoint filter).

use serde_json::{Map, Value as Json};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention, AttnCfg, Hooks};
use crate::graph::layers::mlp::{layer_scale, linear_2d, mlp, MlpCfg};
use crate::graph::layers::patch_embed::{patch_embed, PatchEmbedCfg};
use crate::graph::layers::pool::{global_pool_nlc, TokenPool};
use crate::graph::layers::pos_embed::{self, Interp, Resample};
use crate::graph::layers::{self, Norm};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/vit.json"));

/// The `vit` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "vit",
    examples: "vit_*, deit_*, deit3_*, flexivit_*, beit3_*, eva_large_patch14_*, test_vit",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

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
        // Accepted at timm's defaults only (see `design_gap`).
        embed_norm_layer: Json = Json::Null,
        block_fn: Json = Json::Null,
        mlp_layer: Json = Json::Null,
        attn_layer: Json = Json::Null,
        use_naflex: Option<bool> = None,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// What of timm's ViT design space an argument map asks for that this graph does not build.
fn design_gap(args: &Map<String, Json>) -> Option<String> {
    let is = |k: &str, ok: &[&str]| match args.get(k) {
        None | Some(Json::Null) => true,
        Some(Json::String(s)) => ok.contains(&s.as_str()),
        Some(_) => false,
    };
    let show = |k: &str| format!("{k} = {}", args[k]);
    if !is("global_pool", &["token", "avg", "avgmax", "max"]) {
        let why = match args["global_pool"].as_str() {
            Some("") => "no pooling; native graphs return one vector per image",
            _ => "attention pooling: map / prr heads",
        };
        return Some(format!("{} ({why})", show("global_pool")));
    }
    let layernorm = match args.get("norm_layer") {
        Some(Json::Object(o)) => o.get("partial").and_then(Json::as_str) == Some("layernorm"),
        _ => is("norm_layer", &["layernorm"]),
    };
    let checks: [(bool, &str, &str); 7] = [
        (layernorm, "norm_layer", "only LayerNorm"),
        (
            is("embed_norm_layer", &[]),
            "embed_norm_layer",
            "a patch-embedding norm",
        ),
        (
            is("block_fn", &["block"]),
            "block_fn",
            "only the pre-norm Block",
        ),
        (is("mlp_layer", &["mlp"]), "mlp_layer", "only Mlp"),
        (
            is("attn_layer", &["", "attn", "attention"]),
            "attn_layer",
            "only standard attention",
        ),
        (
            is("pos_embed", &["", "none", "learn"]),
            "pos_embed",
            "learn or none",
        ),
        (
            args.get("use_naflex") != Some(&Json::Bool(true)),
            "use_naflex",
            "NaFlexVit",
        ),
    ];
    checks
        .iter()
        .find(|(ok, _, _)| !ok)
        .map(|(_, k, why)| format!("{} ({why})", show(k)))
}

/// A `VisionTransformer` as timm constructs it from its arguments.
#[derive(Debug, Clone)]
struct Vit {
    /// DeiT's `VisionTransformerDistilled` (class + distillation token, two heads).
    distilled: bool,
    patch: usize,
    /// `patch_embed.grid_size`: the grid the stored position embedding covers.
    grid: (usize, usize),
    dim: usize,
    depth: usize,
    attn: AttnCfg,
    mlp_hidden: usize,
    mlp_bias: bool,
    act: String,
    norm: Norm,
    scale_mlp_norm: bool,
    init_values: Option<f32>,
    class_token: bool,
    reg_tokens: usize,
    pos_embed: bool,
    no_embed_class: bool,
    pre_norm: bool,
    final_norm: bool,
    use_fc_norm: bool,
    pool: TokenPool,
    pool_include_prefix: bool,
    dynamic_img_size: bool,
    dynamic_img_pad: bool,
    /// How the checkpoint filter resamples `pos_embed` for another `img_size`.
    load_resample: Resample,
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
    fn resolve(cfg: &ModelConfig) -> Result<Vit> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a ViT architecture this build knows"
            ))
        })?;
        if let Some(why) = design_gap(&entry.args) {
            return Err(Error::unsupported(format!(
                "`{arch}` uses {why}, which the native ViT graph does not implement"
            )));
        }
        if let Some(why) = design_gap(&cfg.model_args) {
            return Err(Error::unsupported(format!(
                "`{arch}`: model_args {why} is not supported by the native ViT graph"
            )));
        }
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = VitArgs::read(&a)?;

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
        let eps = match &v.norm_layer {
            Json::Object(o) => o.get("eps").and_then(Json::as_f64).unwrap_or(1e-6),
            _ => 1e-6,
        };
        let norm = Norm::Layer { eps: eps as f32 };
        let pool = TokenPool::from_timm(&v.global_pool)?;
        let use_fc_norm = v.fc_norm.unwrap_or(pool != TokenPool::Token);
        let distilled = entry
            .config
            .pointer("/pretrained_cfg/classifier")
            .and_then(Json::as_array)
            .is_some_and(|c| c.iter().any(|n| n == "head_dist"));
        let pos_embed = !matches!(v.pos_embed.as_str(), "" | "none");
        if pool == TokenPool::Token && !v.class_token {
            return Err(Error::invalid_model(
                "global_pool 'token' needs the class token (class_token=false)",
            ));
        }
        if distilled
            && (pool != TokenPool::Token
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
            scale_mlp_norm: v.scale_mlp_norm,
            init_values: v.init_values.filter(|x| *x != 0.0).map(|x| x as f32),
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

    fn num_prefix_tokens(&self) -> usize {
        if self.distilled {
            2
        } else {
            usize::from(self.class_token) + self.reg_tokens
        }
    }

    /// The prefix tokens the position embedding covers.
    fn pos_prefix(&self) -> usize {
        if self.no_embed_class {
            0
        } else {
            self.num_prefix_tokens()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Graph

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let v = Vit::resolve(cfg)?;
    let dynamic = b.dynamic_img_size();
    let (h, w) = b.image_size();
    let p = v.patch;
    // PatchEmbed: without dynamic_img_pad the conv drops a remainder (vit_*_patch14 at 384);
    // with it, zeros after the last row / column.
    let pad = if v.dynamic_img_pad {
        if dynamic {
            return Err(Error::unsupported(
                "option dynamic_img_size with model_args dynamic_img_pad: the padding would follow each input",
            ));
        }
        ((p - h % p) % p, (p - w % p) % p)
    } else {
        if v.dynamic_img_size && (h % p != 0 || w % p != 0) {
            return Err(Error::invalid_model(format!(
                "input size {h}x{w} is not a multiple of the ViT patch size {p} (timm requires it with dynamic_img_size)"
            )));
        }
        (0, 0)
    };
    let grid = ((h + pad.0) / p, (w + pad.1) / p);
    if grid.0 == 0 || grid.1 == 0 {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is smaller than the ViT patch size {p}"
        )));
    }
    let pe = PatchEmbedCfg {
        in_ch: cfg.pretrained_cfg.input_size[0],
        dim: v.dim,
        patch: p,
        // CLIP-style pre-norm models have no patch-embed bias.
        bias: !v.pre_norm,
        pad,
        norm: None,
        flatten: false,
    };
    let input = b.input();
    let patches = patch_embed(&mut b.scope("patch_embed"), &input, &pe)?;
    let tokens = layers::nchw_to_tokens(b, &patches, v.dim);
    let mut x = pos_embed_tokens(b, &v, &tokens, &patches, grid, dynamic)?;
    if v.pre_norm {
        x = v.norm.apply_last(&mut b.scope("norm_pre"), &x, v.dim)?;
    }
    for i in 0..v.depth {
        let mut blocks = b.scope("blocks");
        let s = &mut blocks.scope(i);
        x = block(s, &v, &x)?;
        let map = token_map(s, &v, &x, &patches);
        let module = s.path().to_string();
        s.feature(&map, v.dim, p, &module);
    }
    // _create_vision_transformer's out_indices=3: the last three blocks (timm refuses fewer).
    b.default_out_indices(&[-3, -2, -1]);
    head(b, &v, cfg, x)
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

    let mut x = x.clone();
    if let (true, Some(pe)) = (v.no_embed_class, &pos) {
        // DeiT III / big_vision: the embedding covers the patches only.
        x = layers::add(b, &x, pe);
    }
    if !prefix.is_empty() {
        let refs: Vec<&Value> = prefix.iter().collect();
        let tok = layers::concat(b, &refs, 1);
        let tok = expand_batch(b, &tok, &x, v.num_prefix_tokens(), d);
        x = layers::concat(b, &[&tok, &x], 1);
    }
    if let (false, Some(pe)) = (v.no_embed_class, &pos) {
        x = layers::add(b, &x, pe);
    }
    Ok(x)
}

/// `[1, n, d]` tokens broadcast over the batch of `like`.
fn expand_batch(b: &mut Builder, tok: &Value, like: &Value, n: usize, d: usize) -> Value {
    let batch = b.op(
        "Shape",
        &[like],
        vec![("start", Attr::Int(0)), ("end", Attr::Int(1))],
    );
    let rest = b.ints(&[n as i64, d as i64]);
    let shape = layers::concat(b, &[&batch, &rest], 0);
    b.op("Expand", &[tok, &shape], vec![])
}

/// timm's pre-norm `Block`: `x + ls1(attn(norm1(x)))`, then `x + ls2(mlp(norm2(x)))`.
fn block(b: &mut Builder, v: &Vit, x: &Value) -> Result<Value> {
    let d = v.dim;
    let h = v.norm.apply_last(&mut b.scope("norm1"), x, d)?;
    let mut y = attention(&mut b.scope("attn"), &h, &v.attn, &Hooks::default())?;
    if let Some(init) = v.init_values {
        y = layer_scale(&mut b.scope("ls1"), &y, d, init)?;
    }
    let x = layers::add(b, x, &y);
    let h = v.norm.apply_last(&mut b.scope("norm2"), &x, d)?;
    let c = MlpCfg::new(d, v.mlp_hidden, &v.act)
        .bias(v.mlp_bias)
        .norm(v.scale_mlp_norm.then_some(v.norm));
    let mut y = mlp(&mut b.scope("mlp"), &h, &c)?;
    if let Some(init) = v.init_values {
        y = layer_scale(&mut b.scope("ls2"), &y, d, init)?;
    }
    Ok(layers::add(b, &x, &y))
}

/// `forward_intermediates`' NCHW map of a block's output: prefix tokens dropped, the patch
/// tokens laid out on the patch grid (`patches`' `[N, D, gh, gw]`), spatial size tracked.
fn token_map(b: &mut Builder, v: &Vit, x: &Value, patches: &Value) -> Value {
    let n_pre = v.num_prefix_tokens();
    let t = if n_pre > 0 {
        layers::slice(b, x, 1, n_pre as i64, i64::MAX)
    } else {
        x.clone()
    };
    let t = layers::transpose(b, &t, &[0, 2, 1]);
    let hw = b.op(
        "Shape",
        &[patches],
        vec![("start", Attr::Int(2)), ("end", Attr::Int(4))],
    );
    let nd = b.ints(&[0, 0]);
    let shape = layers::concat(b, &[&nd, &hw], 0);
    let map = b.op("Reshape", &[&t, &shape], vec![]);
    if let Some(s) = b.spatial(patches).cloned() {
        b.assign_spatial(&map, s);
    }
    map
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
    let mut x = global_pool_nlc(b, &x, v.pool, n_pre, v.pool_include_prefix);
    if v.final_norm && v.use_fc_norm {
        x = v.norm.apply_last(&mut b.scope("fc_norm"), &x, d)?;
    }
    if features {
        return Ok((x, d));
    }
    Ok((fc(b, &x, "head")?, classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &Json) -> ModelConfig {
        ModelConfig::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn every_table_entry_resolves_or_is_unsupported_naming_what() {
        let mut built = 0;
        for name in TABLE.names() {
            let cfg = parse(&TABLE.get(name).unwrap().config);
            match Vit::resolve(&cfg) {
                Ok(v) => {
                    built += 1;
                    assert_eq!(cfg.num_features, Some(v.dim), "{name}");
                    assert_eq!(v.distilled, name.contains("distilled"), "{name}");
                    let [_, h, w] = cfg.pretrained_cfg.input_size;
                    assert_eq!(v.grid, (h / v.patch, w / v.patch), "{name}");
                }
                Err(e) => {
                    assert_eq!(
                        e.status(),
                        crate::TimmStatus::TIMM_ERR_UNSUPPORTED,
                        "{name}: {e}"
                    );
                    assert!(e.message().contains(" = "), "{name}: {e}");
                }
            }
        }
        // timm 1.0.31: 135 of the 179 entrypoints use the standard block.
        assert_eq!(built, 135);
    }

    #[test]
    fn model_args_override_the_architecture_like_timm() {
        let mut json = TABLE.get("vit_base_patch16_224").unwrap().config.clone();
        json["model_args"] = serde_json::json!({"embed_dim": 64, "num_heads": 4, "mlp_ratio": 3.7362, "global_pool": "avg", "drop_path_rate": 0.1, "img_size": 224});
        let v = Vit::resolve(&parse(&json)).unwrap();
        assert_eq!((v.dim, v.mlp_hidden, v.depth), (64, 239, 12));
        // model_args' pool (and the fc_norm it implies), not config.json's root global_pool.
        assert!(v.use_fc_norm);
        assert_eq!(v.pool, TokenPool::Avg);

        json["model_args"] = serde_json::json!({"mlp_layer": "swiglu"});
        let e = Vit::resolve(&parse(&json)).unwrap_err();
        assert!(e.message().contains("mlp_layer"), "{e}");

        json["model_args"] = serde_json::json!({"use_magic": 1});
        let e = Vit::resolve(&parse(&json)).unwrap_err();
        assert!(e.message().contains("use_magic = 1"), "{e}");

        json["model_args"] = serde_json::json!({"patch_size": [32, 32], "img_size": [224, 160]});
        let v = Vit::resolve(&parse(&json)).unwrap();
        assert_eq!((v.patch, v.grid), (32, (7, 5)));
    }

    #[test]
    fn flexivit_and_radio_resample_bilinear_at_load_like_timms_filter() {
        let r = |a: &str| Vit::resolve(&parse(&TABLE.get(a).unwrap().config)).unwrap();
        assert_eq!(r("vit_base_patch16_224").load_resample, Resample::default());
        assert_eq!(r("flexivit_small").load_resample.mode, Interp::Bilinear);
        assert!(r("vit_base_patch16_radio_v3").load_resample.align_corners);
    }
}
