//! Visformer (timm `visformer.py`, `Visformer`): a conv stem, then three stages on NCHW maps,
//! each opened by a non-overlapping `PatchEmbed` (optionally BatchNorm'd) plus a learned
//! position map. A `Block` is `x + attn(norm1(x))` (self-attention with 1×1-conv q/k/v and
//! projection, left out where `attn_stage` says `0`) and `x + mlp(norm2(x))` (`SpatialMlp`:
//! 1×1 conv, GELU, an optional grouped 3×3 conv + GELU, 1×1 conv). `norm`, global pool, `head`.
//!
//! Feature maps are timm's `features_only=True` (`FeatureGetterNet` over
//! `forward_intermediates` with `norm=False`): the output of `stage1`..`stage3`.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention_core, AttnCfg, Hooks};
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::patch_embed::{patch_embed, token_map, PatchEmbedCfg};
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::{self, conv2d, conv_bn, py_round, Conv, Norm, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/visformer.json"));

/// The `visformer` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "visformer",
    examples: "visformer_*",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `Visformer.__init__`'s keyword arguments with timm's defaults.
    pub struct VisformerArgs {
        img_size: Json = Json::from(224),
        patch_size: usize = 16,
        init_channels: Option<usize> = Some(32),
        embed_dim: usize = 384,
        depth: Json = Json::from(12),
        num_heads: usize = 6,
        mlp_ratio: f64 = 4.0,
        norm_layer: String = "layernorm2d".into(),
        attn_stage: String = "111".into(),
        use_pos_embed: bool = true,
        spatial_conv: String = "111".into(),
        vit_stem: bool = false,
        group: usize = 8,
        global_pool: String = "avg".into(),
        // Weight init only.
        conv_init: bool = false,
        embed_norm: Option<String> = None,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// One stage: its patch embedding (patch size, widths) and blocks.
#[derive(Debug, Clone)]
struct Stage {
    patch: usize,
    in_ch: usize,
    dim: usize,
    depth: usize,
    attn: bool,
    spatial_conv: bool,
    head_dim: usize,
    /// Grid after the patch embedding (what the position map covers).
    grid: (usize, usize),
    reduction: usize,
}

#[derive(Debug, Clone)]
struct Visformer {
    img: (usize, usize),
    /// The conv stem's width (`init_channels`), or none.
    stem: Option<usize>,
    stages: Vec<Stage>,
    heads: usize,
    mlp_ratio: f64,
    group: usize,
    norm: Norm,
    embed_norm: Option<Norm>,
    pos_embed: bool,
    pool: PoolKind,
}

fn flags(a: &Args, key: &str, s: &str) -> Result<[bool; 3]> {
    let c: Vec<char> = s.chars().collect();
    if c.len() != 3 {
        return Err(a.unsupported(key, "three '0'/'1' flags, one per stage"));
    }
    // timm tests `== '0'` for attn_stage and `== '1'` for spatial_conv.
    Ok(if key == "attn_stage" {
        [c[0] != '0', c[1] != '0', c[2] != '0']
    } else {
        [c[0] == '1', c[1] == '1', c[2] == '1']
    })
}

impl Visformer {
    fn resolve(cfg: &ModelConfig) -> Result<Visformer> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a Visformer architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = VisformerArgs::read(&a)?;
        if v.vit_stem {
            // timm's stage1 keeps embed_dim // 2 channels while the ViT stem makes embed_dim:
            // the model cannot run.
            return Err(a.unsupported(
                "vit_stem",
                "timm's stage1 width (embed_dim // 2) does not match its ViT stem (embed_dim)",
            ));
        }
        let norm = match v.norm_layer.as_str() {
            "batchnorm2d" | "layernorm2d" => Norm::from_timm(&v.norm_layer, None)?,
            _ => return Err(a.unsupported("norm_layer", "BatchNorm2d or LayerNorm2d")),
        };
        let embed_norm = match v.embed_norm.as_deref() {
            None => None,
            Some("batchnorm2d") => Some(Norm::Batch { eps: 1e-5 }),
            Some(_) => return Err(a.unsupported("embed_norm", "None or BatchNorm2d")),
        };
        let img = match &v.img_size {
            Json::Array(hw) if hw.len() == 2 => match (hw[0].as_u64(), hw[1].as_u64()) {
                (Some(h), Some(w)) => (h as usize, w as usize),
                _ => return Err(a.unsupported("img_size", "expected an int or [h, w]")),
            },
            j => match j.as_u64() {
                Some(n) => (n as usize, n as usize),
                None => return Err(a.unsupported("img_size", "expected an int or [h, w]")),
            },
        };
        let depths: [usize; 3] = match &v.depth {
            Json::Array(d) if d.len() == 3 => {
                let n: Option<Vec<usize>> =
                    d.iter().map(|x| x.as_u64().map(|n| n as usize)).collect();
                match n {
                    Some(n) => [n[0], n[1], n[2]],
                    None => return Err(a.unsupported("depth", "an int or three ints")),
                }
            }
            j => match j.as_u64() {
                Some(n) => {
                    let n = n as usize;
                    [n / 3, n - 2 * (n / 3), n / 3]
                }
                None => return Err(a.unsupported("depth", "an int or three ints")),
            },
        };
        if depths.iter().any(|&d| d > 1 << 12) {
            return Err(Error::invalid_model("Visformer depth out of range"));
        }
        let attn = flags(&a, "attn_stage", &v.attn_stage)?;
        let sconv = flags(&a, "spatial_conv", &v.spatial_conv)?;
        let (p, d, heads) = (v.patch_size, v.embed_dim, v.num_heads);
        let first = match v.init_channels {
            Some(_) => p / 4,
            None => p / 2,
        };
        if p < 8 || heads == 0 || d < 2 || v.group == 0 || first == 0 {
            return Err(Error::invalid_model(format!(
                "`{arch}`: patch_size {p}, embed_dim {d}, {heads} heads do not make a Visformer"
            )));
        }
        let widths = [d / 2, d, 2 * d];
        let patches = [first, p / 8, p / 8];
        let ratios = [0.5, 1.0, 1.0];
        let (mut h, mut w) = img;
        let mut reduction = 1;
        let mut in_ch = v.init_channels.unwrap_or(cfg.pretrained_cfg.input_size[0]);
        if v.init_channels.is_some() {
            // The stem's stride-2 conv; timm's PatchEmbed sizes follow `x // 2`.
            (h, w) = (h / 2, w / 2);
            reduction = 2;
        }
        let mut stages = Vec::new();
        for i in 0..3 {
            let pi = patches[i];
            (h, w) = (h / pi, w / pi);
            reduction *= pi;
            let dim = widths[i];
            let head_dim = py_round((dim / heads) as f64 * ratios[i]) as usize;
            let hidden_ok = (dim as f64 * v.mlp_ratio) as usize > 0;
            if h == 0 || w == 0 || (attn[i] && head_dim == 0) || !hidden_ok {
                return Err(Error::invalid_model(format!(
                    "`{arch}`: stage {} of a {}x{} input is empty (or has no head width)",
                    i + 1,
                    img.0,
                    img.1
                )));
            }
            if sconv[i] && v.group >= 2 && (2 * dim) % v.group != 0 {
                return Err(Error::invalid_model(format!(
                    "`{arch}`: group {} does not divide stage {}'s {} hidden channels",
                    v.group,
                    i + 1,
                    2 * dim
                )));
            }
            stages.push(Stage {
                patch: pi,
                in_ch,
                dim,
                depth: depths[i],
                attn: attn[i],
                spatial_conv: sconv[i],
                head_dim,
                grid: (h, w),
                reduction,
            });
            in_ch = dim;
        }
        Ok(Visformer {
            img,
            stem: v.init_channels,
            stages,
            heads,
            mlp_ratio: v.mlp_ratio,
            group: v.group,
            norm,
            embed_norm,
            pos_embed: v.use_pos_embed,
            pool: PoolKind::from_timm(&v.global_pool)?,
        })
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let m = Visformer::resolve(cfg)?;
    let hw = b.image_size();
    // PatchEmbed asserts its img_size; the position maps are that grid.
    if hw != m.img {
        return Err(Error::unsupported(format!(
            "Visformer at input {}x{}: the model takes {}x{} only (timm asserts it)",
            hw.0, hw.1, m.img.0, m.img.1
        )));
    }
    let mut x = b.input();
    if let Some(c) = m.stem {
        let in_ch = cfg.pretrained_cfg.input_size[0];
        let conv = Conv::new(in_ch, c, 7).stride(2).pad(Pad::Sym(3));
        x = conv_bn(&mut b.scope("stem"), &x, "0", "1", conv, 1e-5)?;
        x = layers::act(b, "relu", &x)?;
    }
    for (i, st) in m.stages.iter().enumerate() {
        let n = i + 1;
        let pe = PatchEmbedCfg {
            in_ch: st.in_ch,
            dim: st.dim,
            patch: st.patch,
            bias: true,
            pad: (0, 0),
            norm: m.embed_norm,
            flatten: false,
        };
        x = patch_embed(&mut b.scope(format!("patch_embed{n}")), &x, &pe)?;
        if m.pos_embed {
            let shape = [1, st.dim, st.grid.0, st.grid.1];
            let pos = b.param(&format!("pos_embed{n}"), &shape, Init::TruncNormal(0.02))?;
            x = layers::add(b, &x, &pos);
        }
        let name = format!("stage{n}");
        for j in 0..st.depth {
            x = block(&mut b.scope(format!("{name}.{j}")), &m, st, &x)?;
        }
        b.feature(&x, st.dim, st.reduction, &name);
    }
    let c = m.stages[2].dim;
    let x = m.norm.apply_2d(&mut b.scope("norm"), &x, c)?;
    let pooled = global_pool(b, &x, m.pool);
    let width = c * m.pool.multiplier();
    let classes = cfg.num_classes;
    if b.output() == OutputKind::Features || classes == 0 || m.pool == PoolKind::None {
        return Ok((pooled, width));
    }
    let y = linear_2d(
        &mut b.scope("head"),
        &pooled,
        width,
        classes,
        true,
        Init::TruncNormal(0.02),
    )?;
    Ok((y, classes))
}

/// A bias-free 1×1 conv (current scope's `name`).
fn conv1x1(b: &mut Builder, name: &str, x: &Value, cin: usize, cout: usize) -> Result<Value> {
    let c = Conv::new(cin, cout, 1)
        .pad(Pad::Sym(0))
        .init(Init::TruncNormal(0.02));
    conv2d(&mut b.scope(name), x, c)
}

/// `Attention`: `qkv` (1×1 conv to 3·heads·head_dim, laid out as q | k | v, heads, head dim),
/// softmax attention over the H·W positions, back to a map, `proj`.
fn attention(b: &mut Builder, m: &Visformer, st: &Stage, x: &Value) -> Result<Value> {
    let inner = m.heads * st.head_dim;
    let qkv = conv1x1(b, "qkv", x, st.dim, 3 * inner)?;
    let t = layers::nchw_to_tokens(b, &qkv, 3 * inner);
    let parts = layers::split(b, &t, -1, &[inner; 3]);
    let mut c = AttnCfg::new(st.dim, m.heads);
    c.inner = Some(inner);
    let y = attention_core(b, &parts[0], &parts[1], &parts[2], &c, &Hooks::default())?;
    let y = token_map(b, &y, 0, x);
    conv1x1(b, "proj", &y, inner, st.dim)
}

/// `SpatialMlp`: `conv1`, GELU, (`conv2` grouped 3×3, GELU), `conv3`; all bias-free.
fn spatial_mlp(b: &mut Builder, m: &Visformer, st: &Stage, x: &Value) -> Result<Value> {
    let d = st.dim;
    let hidden = if !st.spatial_conv {
        (d as f64 * m.mlp_ratio) as usize
    } else if m.group < 2 {
        d * 5 / 6
    } else {
        d * 2
    };
    let y = conv1x1(b, "conv1", x, d, hidden)?;
    let mut y = layers::act(b, "gelu", &y)?;
    if st.spatial_conv {
        let c = Conv::new(hidden, hidden, 3)
            .groups(m.group)
            .init(Init::TruncNormal(0.02));
        y = conv2d(&mut b.scope("conv2"), &y, c)?;
        y = layers::act(b, "gelu", &y)?;
    }
    conv1x1(b, "conv3", &y, hidden, d)
}

/// `Block`: optional `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.
fn block(b: &mut Builder, m: &Visformer, st: &Stage, x: &Value) -> Result<Value> {
    let d = st.dim;
    let mut x = x.clone();
    if st.attn {
        let h = m.norm.apply_2d(&mut b.scope("norm1"), &x, d)?;
        let y = attention(&mut b.scope("attn"), m, st, &h)?;
        x = layers::add(b, &x, &y);
    }
    let h = m.norm.apply_2d(&mut b.scope("norm2"), &x, d)?;
    let y = spatial_mlp(&mut b.scope("mlp"), m, st, &h)?;
    Ok(layers::add(b, &x, &y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_entry_resolves_with_timms_width() {
        for name in TABLE.names() {
            let json = &TABLE.get(name).unwrap().config;
            let cfg = ModelConfig::parse(json.to_string().as_bytes()).unwrap();
            let m = Visformer::resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.num_features, Some(m.stages[2].dim), "{name}");
            let red: Vec<usize> = m.stages.iter().map(|s| s.reduction).collect();
            assert_eq!(red, [8, 16, 32], "{name}");
            assert_eq!(m.stages[0].grid, (28, 28), "{name}");
        }
        assert_eq!(TABLE.names().len(), 2);
    }
}
