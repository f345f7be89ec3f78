//! NesT (timm `nest.py`, `Nest`): nested transformers. A patch embedding, then levels that
//! each cut the channels-last map into non-overlapping square blocks (`blockify`), add a
//! position embedding per block position, run transformer layers inside each block (attention
//! never crosses a block), and put the map back together (`deblockify`); between levels the
//! block aggregation `ConvPool` (3×3 conv, LayerNorm over channels, 3×3 stride-2 max pool)
//! halves the map, so each level has a quarter of the blocks. `norm`, global pool, `head`.
//!
//! The `_jx` variants use TF "SAME" padding (`pad_type='same'`): the max pool's extra row and
//! column at the end. Feature maps are timm's `features_only=True` (`FeatureListNet` over
//! `levels.0`..`levels.<n>`).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention_core, AttnCfg, Hooks};
use crate::graph::layers::mlp::{linear, linear_2d, mlp, MlpCfg};
use crate::graph::layers::patch_embed::{patch_embed, PatchEmbedCfg};
use crate::graph::layers::pool::{global_pool, Pool2d, PoolKind};
use crate::graph::layers::{self, conv2d, Conv, Norm, Pad};
use crate::graph::spatial::Step;
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/nest.json"));

/// The `nest` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "nest",
    examples: "nest_*",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `Nest.__init__`'s keyword arguments with timm's defaults.
    pub struct NestArgs {
        img_size: Json = Json::from(224),
        patch_size: usize = 4,
        num_levels: usize = 3,
        embed_dims: Json = serde_json::json!([128, 256, 512]),
        num_heads: Json = serde_json::json!([4, 8, 16]),
        depths: Json = serde_json::json!([2, 2, 20]),
        mlp_ratio: f64 = 4.0,
        qkv_bias: bool = true,
        norm_layer: Json = Json::Null,
        act_layer: Json = Json::Null,
        pad_type: String = String::new(),
        global_pool: String = "avg".into(),
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

#[derive(Debug, Clone)]
struct Level {
    dim: usize,
    heads: usize,
    depth: usize,
    /// Blocks per side (`sqrt(num_blocks)`).
    grid: usize,
}

#[derive(Debug, Clone)]
struct Nest {
    img: usize,
    patch: usize,
    /// `block_size`: the side of every block, at every level.
    block: usize,
    levels: Vec<Level>,
    mlp_ratio: f64,
    qkv_bias: bool,
    same: bool,
    pool: PoolKind,
}

const NORM: Norm = Norm::Layer { eps: 1e-6 };

/// `to_ntuple(n)`: an int for every level, or one per level.
fn per_level(a: &Args, key: &str, v: &Json, n: usize) -> Result<Vec<usize>> {
    let one = |j: &Json| j.as_u64().filter(|&x| x <= 1 << 16).map(|x| x as usize);
    match v {
        Json::Array(xs) if xs.len() == n => xs
            .iter()
            .map(one)
            .collect::<Option<_>>()
            .ok_or_else(|| a.unsupported(key, "ints")),
        Json::Array(_) => Err(Error::invalid_model(format!(
            "`{}`: {key} needs one entry per level ({n})",
            a.arch()
        ))),
        j => one(j)
            .map(|x| vec![x; n])
            .ok_or_else(|| a.unsupported(key, "an int or one per level")),
    }
}

impl Nest {
    fn resolve(cfg: &ModelConfig) -> Result<Nest> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a NesT architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = NestArgs::read(&a)?;
        if !v.norm_layer.is_null() {
            return Err(a.unsupported("norm_layer", "only timm's LayerNorm"));
        }
        if !v.act_layer.is_null() {
            return Err(a.unsupported("act_layer", "only GELU"));
        }
        let same = match v.pad_type.as_str() {
            "" => false,
            "same" => true,
            _ => return Err(a.unsupported("pad_type", "'' or 'same'")),
        };
        let img = match &v.img_size {
            Json::Array(hw) if hw.len() == 2 && hw[0] == hw[1] => hw[0].as_u64(),
            Json::Array(_) => {
                return Err(a.unsupported("img_size", "square inputs only (timm asserts it)"))
            }
            j => j.as_u64(),
        }
        .ok_or_else(|| a.unsupported("img_size", "an int or [s, s]"))? as usize;
        let n = v.num_levels;
        if n == 0 || n > 8 {
            return Err(Error::invalid_model("NesT num_levels out of range"));
        }
        let dims = per_level(&a, "embed_dims", &v.embed_dims, n)?;
        let heads = per_level(&a, "num_heads", &v.num_heads, n)?;
        let depths = per_level(&a, "depths", &v.depths, n)?;
        let p = v.patch_size;
        let side0 = 1usize << (n - 1);
        if p == 0
            || !img.is_multiple_of(p)
            || !(img / p).is_multiple_of(side0)
            || img / p / side0 == 0
        {
            return Err(Error::invalid_model(format!(
                "`{arch}`: img_size {img}, patch {p} and {n} levels do not make whole blocks"
            )));
        }
        let levels = (0..n)
            .map(|i| Level {
                dim: dims[i],
                heads: heads[i],
                depth: depths[i],
                grid: side0 >> i,
            })
            .collect();
        Ok(Nest {
            img,
            patch: p,
            block: img / p / side0,
            levels,
            mlp_ratio: v.mlp_ratio,
            qkv_bias: v.qkv_bias,
            same,
            pool: PoolKind::from_timm(&v.global_pool)?,
        })
    }
}

/// The depths and widths a checkpoint holds: timm's entrypoints fix `embed_dims` and `depths`,
/// so a folder's config.json need not name them.
fn from_weights(b: &Builder, m: &mut Nest) -> Result<()> {
    if b.weights().is_none() {
        return Ok(());
    }
    for (i, l) in m.levels.iter_mut().enumerate() {
        if let Some(s) = b.weight_shape(&format!("levels.{i}.pos_embed")) {
            l.dim = s[3];
        }
        let mut depth = 0;
        while b.has_module(&format!("levels.{i}.transformer_encoder.{depth}")) {
            depth += 1;
        }
        l.depth = depth;
    }
    Ok(())
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let mut m = Nest::resolve(cfg)?;
    from_weights(b, &mut m)?;
    for l in &m.levels {
        if l.heads == 0 || l.dim == 0 || l.dim % l.heads != 0 {
            return Err(Error::invalid_model(format!(
                "NesT level of {} channels and {} heads",
                l.dim, l.heads
            )));
        }
    }
    let hw = b.image_size();
    // PatchEmbed asserts img_size; the position embeddings cover its blocks only.
    if hw != (m.img, m.img) {
        return Err(Error::unsupported(format!(
            "NesT at input {}x{}: the model takes {}x{} only (timm asserts it)",
            hw.0, hw.1, m.img, m.img
        )));
    }
    let pe = PatchEmbedCfg {
        in_ch: cfg.pretrained_cfg.input_size[0],
        dim: m.levels[0].dim,
        patch: m.patch,
        bias: true,
        pad: (0, 0),
        norm: None,
        flatten: false,
    };
    let input = b.input();
    let mut x = patch_embed(&mut b.scope("patch_embed"), &input, &pe)?;
    let mut stride = 4;
    for i in 0..m.levels.len() {
        let prev = (i > 0).then(|| m.levels[i - 1].dim);
        x = nest_level(&mut b.scope(format!("levels.{i}")), &m, i, prev, &x)?;
        b.feature(&x, m.levels[i].dim, stride, &format!("levels.{i}"));
        stride *= 2;
    }
    let c = m.levels.last().unwrap().dim;
    let x = layers::layer_norm_2d(&mut b.scope("norm"), &x, c, 1e-6)?;
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

/// `ConvPool`: `conv` (3×3), `norm` over channels, 3×3 stride-2 max pool (symmetric padding 1,
/// or TF "SAME" with the extra pixel at the end).
fn conv_pool(b: &mut Builder, m: &Nest, x: &Value, cin: usize, cout: usize) -> Result<Value> {
    let c = Conv::new(cin, cout, 3)
        .pad(Pad::Sym(1))
        .bias(true)
        .init(Init::TruncNormal(0.02));
    let y = conv2d(&mut b.scope("conv"), x, c)?;
    let y = layers::layer_norm_2d(&mut b.scope("norm"), &y, cout, 1e-6)?;
    if !m.same {
        return Pool2d::new(3, 2, 1).max(b, &y, cout);
    }
    let p = b.op(
        "MaxPool",
        &[&y],
        vec![
            ("kernel_shape", Attr::Ints(vec![3, 3])),
            ("strides", Attr::Ints(vec![2, 2])),
            ("auto_pad", Attr::Str("SAME_UPPER".into())),
        ],
    );
    b.set_spatial(&p, &y, Step::Same { stride: 2 }, cout)?;
    Ok(p)
}

/// `NestLevel`: pool (after the first level), channels last, `blockify`, `pos_embed`, the
/// transformer layers inside each block, `deblockify`, back to NCHW.
fn nest_level(
    b: &mut Builder,
    m: &Nest,
    i: usize,
    prev: Option<usize>,
    x: &Value,
) -> Result<Value> {
    let l = &m.levels[i];
    let (d, bs, g) = (l.dim as i64, m.block as i64, l.grid as i64);
    let x = match prev {
        Some(cin) => conv_pool(&mut b.scope("pool"), m, x, cin, l.dim)?,
        None => x.clone(),
    };
    let t = layers::nchw_to_nhwc(b, &x);
    // blockify: [B, g·bs, g·bs, C] -> [B, g, bs, g, bs, C] -> [B, g, g, bs, bs, C] -> [B, T, N, C]
    let t = layers::reshape(b, &t, &[0, g, bs, g, bs, d]);
    let t = layers::transpose(b, &t, &[0, 1, 3, 2, 4, 5]);
    let t = layers::reshape(b, &t, &[0, g * g, bs * bs, d]);
    let shape = [1, l.grid * l.grid, m.block * m.block, l.dim];
    let pos = b.param("pos_embed", &shape, Init::TruncNormal(0.02))?;
    let mut t = layers::add(b, &t, &pos);
    for j in 0..l.depth {
        t = transformer_layer(&mut b.scope(format!("transformer_encoder.{j}")), m, l, &t)?;
    }
    // deblockify: the inverse.
    let t = layers::reshape(b, &t, &[0, g, g, bs, bs, d]);
    let t = layers::transpose(b, &t, &[0, 1, 3, 2, 4, 5]);
    let t = layers::reshape(b, &t, &[0, g * bs, g * bs, d]);
    Ok(layers::nhwc_to_nchw(b, &t))
}

/// NesT's `Attention` on `[B·T, N, C]`: timm's, except that the heads' outputs are laid out
/// `(head_dim, heads)` before `proj` (`permute(0, 2, 3, 4, 1)`), not `(heads, head_dim)`.
fn attention(b: &mut Builder, m: &Nest, l: &Level, x: &Value) -> Result<Value> {
    let (d, h) = (l.dim, l.heads);
    let init = Init::TruncNormal(0.02);
    let qkv = linear(&mut b.scope("qkv"), x, d, 3 * d, m.qkv_bias, init)?;
    let p = layers::split(b, &qkv, -1, &[d; 3]);
    let c = AttnCfg::new(d, h);
    let y = attention_core(b, &p[0], &p[1], &p[2], &c, &Hooks::default())?;
    proj_of_head_major(&mut b.scope("proj"), &y, d, h, init)
}

/// `proj` on the heads' outputs as attention leaves them, `(heads, head_dim)`: its weight's input
/// columns are permuted at load from timm's `(head_dim, heads)` order. The same sums as timm's,
/// without transposing the activations on inner axes of 3-12 values, which cost ONNX Runtime
/// about a sixth of nest_tiny's time.
fn proj_of_head_major(b: &mut Builder, y: &Value, d: usize, h: usize, init: Init) -> Result<Value> {
    let hd = d / h;
    let w = b.read("weight", &[d, d], init)?;
    // The MatMul's [in, out] matrix, its rows in (head, head_dim) order:
    // wt[(j·hd + c), o] = weight[o, c·h + j].
    let mut wt = vec![0f32; w.len()];
    for o in 0..d {
        for c in 0..hd {
            for j in 0..h {
                wt[(j * hd + c) * d + o] = w[o * d + c * h + j];
            }
        }
    }
    let wt = b.tensor("weight", wt, &[d, d])?;
    let y = b.op("MatMul", &[y, &wt], vec![]);
    let bias = b.param("bias", &[d], Init::Zeros)?;
    Ok(b.op("Add", &[&y, &bias], vec![]))
}

/// `TransformerLayer` on `[B, T, N, C]`: attention within each block (blocks folded into the
/// batch), then the MLP.
fn transformer_layer(b: &mut Builder, m: &Nest, l: &Level, x: &Value) -> Result<Value> {
    let d = l.dim;
    let (t, n) = ((l.grid * l.grid) as i64, (m.block * m.block) as i64);
    let h = NORM.apply_last(&mut b.scope("norm1"), x, d)?;
    let h = layers::reshape(b, &h, &[-1, n, d as i64]);
    // attention never crosses a block: the blocks go into the batch.
    let y = attention(&mut b.scope("attn"), m, l, &h)?;
    let y = layers::reshape(b, &y, &[-1, t, n, d as i64]);
    let x = layers::add(b, x, &y);
    let h = NORM.apply_last(&mut b.scope("norm2"), &x, d)?;
    let hidden = (d as f64 * m.mlp_ratio) as usize;
    let y = mlp(&mut b.scope("mlp"), &h, &MlpCfg::new(d, hidden, "gelu"))?;
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
            let m = Nest::resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.num_features, Some(m.levels[2].dim), "{name}");
            assert_eq!((m.block, m.levels[0].grid), (14, 4), "{name}");
            assert_eq!(m.same, name.ends_with("_jx"), "{name}");
        }
        assert_eq!(TABLE.names().len(), 6);
    }
}
