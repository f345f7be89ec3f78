//! Sequencer2D (timm's `sequencer.py`, class `Sequencer2d`): `sequencer2d_s`, `_m`, `_l`.
//!
//! A patch-embedding stem and four channels-last stages (a patch-merging conv before all but the
//! first) of `Sequencer2dBlock`s: a pre-norm `LSTM2d` token mixer (bidirectional LSTMs down the
//! columns and along the rows, concatenated or summed, then a Linear) and a pre-norm `Mlp`, both
//! residual; a final LayerNorm, a global pool and a Linear head. Each `nn.LSTM` is one ONNX
//! `LSTM` node (sequence-first layout): PyTorch's gate blocks (i, f, g, o) are reordered to
//! ONNX's (i, o, f, c) at load and `bias_ih` / `bias_hh` become ONNX's `Wb` / `Rb`.
//!
//! Feature maps: timm's `features_only` is a FeatureListNet over `stages.<i>` (no final norm),
//! channels-last; this library returns them NCHW. timm's default `out_indices` is (0, 1, 2).

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::{linear, linear_2d, mlp, MlpCfg};
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::{
    add, concat, conv2d, layer_norm, nchw_to_nhwc, nhwc_to_nchw, reshape, transpose, Conv, Pad,
};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/sequencer.json"));

pub const FAMILY: Family = Family {
    name: "sequencer",
    examples: "sequencer2d_s, sequencer2d_m, sequencer2d_l",
    matches: |arch| TABLE.get(arch).is_some(),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    // timm's stem is a PatchEmbed without img_size and LSTMs take any sequence length.
    any_size: true,
};

timm_args! {
    /// `Sequencer2d.__init__`'s keyword arguments with timm's defaults.
    struct SequencerArgs {
        in_chans: usize = 3,
        /// The stem takes any size (`PatchEmbed(img_size=None)`).
        #[allow(dead_code)]
        img_size: serde_json::Value = serde_json::Value::from(224),
        layers: Vec<usize> = vec![4, 3, 8, 3],
        patch_sizes: Vec<usize> = vec![7, 2, 2, 1],
        embed_dims: Vec<usize> = vec![192, 384, 384, 384],
        hidden_sizes: Vec<usize> = vec![48, 96, 96, 96],
        mlp_ratios: Vec<f64> = vec![3.0, 3.0, 3.0, 3.0],
        rnn_layer: String = "lstm2d".into(),
        num_rnn_layers: usize = 1,
        bidirectional: bool = true,
        union: String = "cat".into(),
        with_fc: bool = true,
        stem_norm: bool = false,
        /// Head-bias init only.
        #[allow(dead_code)]
        nlhb: bool = false,
        /// Unset: config.json's root `global_pool`.
        global_pool: Option<String> = None,
    }
}

/// Linears and convs without weights (timm: xavier / lecun; any spread serves a seeded bare model).
const INIT: Init = Init::TruncNormal(0.02);
/// `partial(nn.LayerNorm, eps=1e-6)`.
const LN_EPS: f32 = 1e-6;

/// How `LSTM2d` joins its two directions of scan (`union`), and which it runs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Union {
    Cat,
    Add,
    Vertical,
    Horizontal,
}

struct Cfg {
    layers: Vec<usize>,
    patch_sizes: Vec<usize>,
    dims: Vec<usize>,
    hidden: Vec<usize>,
    mlp_hidden: Vec<usize>,
    rnn_layers: usize,
    bidirectional: bool,
    union: Union,
    with_fc: bool,
    stem_norm: bool,
    pool: PoolKind,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(b, cfg)?;
    let input = b.input();
    let in_chans = cfg.pretrained_cfg.input_size[0];
    // `grid`: the last NCHW conv output, whose spatial size the channels-last `x` has.
    let (mut x, mut grid) = {
        let s = &mut b.scope("stem");
        let p = c.patch_sizes[0];
        let conv = Conv::new(in_chans, c.dims[0], p)
            .stride(p)
            .pad(Pad::Sym(0))
            .bias(true)
            .init(INIT);
        let g = conv2d(&mut s.scope("proj"), &input, conv)?;
        let x = nchw_to_nhwc(s, &g);
        let x = if c.stem_norm {
            layer_norm(&mut s.scope("norm"), &x, c.dims[0], LN_EPS)?
        } else {
            x
        };
        (x, g)
    };
    let mut prev = c.dims[0];
    let mut reduction = c.patch_sizes[0];
    {
        let st = &mut b.scope("stages");
        for i in 0..c.dims.len() {
            let s = &mut st.scope(i);
            let dim = c.dims[i];
            if i > 0 {
                // `Downsample2d`: NHWC -> NCHW, a patch conv, back.
                let p = c.patch_sizes[i];
                let conv = Conv::new(prev, dim, p)
                    .stride(p)
                    .pad(Pad::Sym(0))
                    .bias(true)
                    .init(INIT);
                let t = nhwc_to_nchw(s, &x);
                if let Some(sp) = s.spatial(&grid).cloned() {
                    s.assign_spatial(&t, sp);
                }
                grid = conv2d(&mut s.scope("downsample").scope("down"), &t, conv)?;
                x = nchw_to_nhwc(s, &grid);
                reduction *= p;
            } else if prev != dim {
                return Err(Error::invalid_model(format!(
                    "Sequencer's first stage cannot change width {prev} -> {dim}"
                )));
            }
            {
                let blocks = &mut s.scope("blocks");
                for j in 0..c.layers[i] {
                    x = block(&mut blocks.scope(j), &x, i, &c)?;
                }
            }
            let map = nhwc_to_nchw(s, &x);
            if let Some(sp) = s.spatial(&grid).cloned() {
                s.assign_spatial(&map, sp);
            }
            let module = s.path().to_string();
            s.feature(&map, dim, reduction, &module);
            prev = dim;
        }
    }
    b.default_out_indices(&[0, 1, 2]);
    let x = layer_norm(&mut b.scope("norm"), &x, prev, LN_EPS)?;
    if c.pool == PoolKind::None {
        return Err(Error::unsupported(
            "Sequencer with global_pool '' (a Linear at every position) is not built natively",
        ));
    }
    // ClassifierHead(input_fmt='NHWC'): pool over H and W.
    let map = nhwc_to_nchw(b, &x);
    if let Some(sp) = b.spatial(&grid).cloned() {
        b.assign_spatial(&map, sp);
    }
    let pooled = global_pool(b, &map, c.pool);
    let width = prev * c.pool.multiplier();
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let logits = linear_2d(
        &mut b.scope("head").scope("fc"),
        &pooled,
        width,
        cfg.num_classes,
        true,
        INIT,
    )?;
    Ok((logits, cfg.num_classes))
}

/// `Sequencer2dBlock`: `x + rnn_tokens(norm1(x))`, then `x + mlp_channels(norm2(x))`.
fn block(b: &mut Builder, x: &Value, stage: usize, c: &Cfg) -> Result<Value> {
    let dim = c.dims[stage];
    let y = layer_norm(&mut b.scope("norm1"), x, dim, LN_EPS)?;
    let y = lstm2d(&mut b.scope("rnn_tokens"), &y, dim, c.hidden[stage], c)?;
    let x = add(b, x, &y);
    let y = layer_norm(&mut b.scope("norm2"), &x, dim, LN_EPS)?;
    let m = MlpCfg {
        init: INIT,
        ..MlpCfg::new(dim, c.mlp_hidden[stage], "gelu")
    };
    let y = mlp(&mut b.scope("mlp_channels"), &y, &m)?;
    Ok(add(b, &x, &y))
}

/// `LSTM2d` on `[N, H, W, C]`: `rnn_v` scans each column (sequence H), `rnn_h` each row
/// (sequence W); their outputs are concatenated or summed, then `fc`.
fn lstm2d(b: &mut Builder, x: &Value, dim: usize, hidden: usize, c: &Cfg) -> Result<Value> {
    let out = if c.bidirectional { 2 * hidden } else { hidden };
    // `[N, H, W, C]` as `[seq, batch..., C]`, and back: `perm` puts the scanned axis first.
    let scan = |b: &mut Builder, name: &str, perm: &[i64], back: &[i64]| -> Result<Value> {
        let t = transpose(b, x, perm);
        // [S, B1, B2, C] -> [S, B1·B2, C] for the LSTM, then [S, B1, B2, out].
        let shape = b.op("Shape", &[&t], vec![("end", Attr::Int(3))]);
        let seq = reshape(b, &t, &[0, -1, dim as i64]);
        let y = lstm(&mut b.scope(name), &seq, dim, hidden, c)?;
        let last = b.ints(&[out as i64]);
        let full = b.op("Concat", &[&shape, &last], vec![("axis", Attr::Int(0))]);
        let y = b.op("Reshape", &[&y, &full], vec![]);
        Ok(transpose(b, &y, back))
    };
    let v = match c.union {
        Union::Horizontal => None,
        _ => Some(scan(b, "rnn_v", &[1, 0, 2, 3], &[1, 0, 2, 3])?),
    };
    let h = match c.union {
        Union::Vertical => None,
        _ => Some(scan(b, "rnn_h", &[2, 0, 1, 3], &[1, 2, 0, 3])?),
    };
    let (y, width) = match (v, h) {
        (Some(v), Some(h)) if c.union == Union::Cat => (concat(b, &[&v, &h], 3), 2 * out),
        (Some(v), Some(h)) => (add(b, &v, &h), out),
        (Some(v), None) => (v, out),
        (None, Some(h)) => (h, out),
        (None, None) => unreachable!("a union runs at least one direction"),
    };
    if !c.with_fc {
        return Ok(y);
    }
    linear(&mut b.scope("fc"), &y, width, dim, true, INIT)
}

/// `nn.LSTM(batch_first=True)`'s layers on a sequence-first `[S, B, C]`: `[S, B, out]`.
fn lstm(b: &mut Builder, x: &Value, dim: usize, hidden: usize, c: &Cfg) -> Result<Value> {
    let dirs: &[&str] = if c.bidirectional {
        &["", "_reverse"]
    } else {
        &[""]
    };
    let nd = dirs.len();
    let mut x = x.clone();
    let mut in_f = dim;
    for l in 0..c.rnn_layers {
        let (mut w, mut r, mut bias) = (Vec::new(), Vec::new(), Vec::new());
        for d in dirs {
            let wi = b.read(&format!("weight_ih_l{l}{d}"), &[4 * hidden, in_f], INIT)?;
            let wh = b.read(&format!("weight_hh_l{l}{d}"), &[4 * hidden, hidden], INIT)?;
            let bi = b.read(&format!("bias_ih_l{l}{d}"), &[4 * hidden], Init::Zeros)?;
            let bh = b.read(&format!("bias_hh_l{l}{d}"), &[4 * hidden], Init::Zeros)?;
            w.extend(onnx_gates(&wi, hidden));
            r.extend(onnx_gates(&wh, hidden));
            bias.extend(onnx_gates(&bi, hidden));
            bias.extend(onnx_gates(&bh, hidden));
        }
        let wv = b.tensor(&format!("weight_ih_l{l}"), w, &[nd, 4 * hidden, in_f])?;
        let rv = b.tensor(&format!("weight_hh_l{l}"), r, &[nd, 4 * hidden, hidden])?;
        let bv = b.tensor(&format!("bias_l{l}"), bias, &[nd, 8 * hidden])?;
        let direction = if c.bidirectional {
            "bidirectional"
        } else {
            "forward"
        };
        let y = b.op(
            "LSTM",
            &[&x, &wv, &rv, &bv],
            vec![
                ("hidden_size", Attr::Int(hidden as i64)),
                ("direction", Attr::Str(direction.into())),
            ],
        );
        // Y is [S, dirs, B, hidden]; PyTorch concatenates the directions per step.
        let y = transpose(b, &y, &[0, 2, 1, 3]);
        x = reshape(b, &y, &[0, 0, (nd * hidden) as i64]);
        in_f = nd * hidden;
    }
    Ok(x)
}

/// PyTorch's gate blocks (i, f, g, o) along the first axis in ONNX's order (i, o, f, c).
fn onnx_gates(w: &[f32], hidden: usize) -> Vec<f32> {
    let n = w.len() / 4;
    debug_assert_eq!(w.len() % (4 * hidden.max(1)), 0);
    [0, 3, 1, 2]
        .iter()
        .flat_map(|&g| w[g * n..(g + 1) * n].iter().copied())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a Sequencer variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = SequencerArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    if v.rnn_layer != "lstm2d" {
        return Err(a.unsupported(
            "rnn_layer",
            "the native Sequencer builds timm's LSTM2d token mixer",
        ));
    }
    let union = match v.union.as_str() {
        "cat" => Union::Cat,
        "add" => Union::Add,
        "vertical" => Union::Vertical,
        "horizontal" => Union::Horizontal,
        _ => {
            return Err(a.unsupported(
                "union",
                "timm's LSTM2d joins by cat, add, vertical or horizontal",
            ))
        }
    };
    let (mut layers, mut dims, mut hidden, mut patch) =
        (v.layers, v.embed_dims, v.hidden_sizes, v.patch_sizes);
    let mlp_ratios = v.mlp_ratios;
    let mut mlp_hidden: Option<Vec<usize>> = None;
    if b.weights().is_some() {
        read_structure(
            b,
            &a,
            &mut layers,
            &mut dims,
            &mut hidden,
            &mut patch,
            &mut mlp_hidden,
        );
    }
    let n = layers.len();
    if n == 0
        || n > 8
        || [dims.len(), hidden.len(), patch.len(), mlp_ratios.len()] != [n; 4]
        || dims.iter().chain(&hidden).chain(&patch).any(|&d| d == 0)
        || v.num_rnn_layers == 0
        || v.num_rnn_layers > 8
    {
        return Err(Error::invalid_model(format!(
            "Sequencer layers {layers:?}, patch_sizes {patch:?}, embed_dims {dims:?}, hidden_sizes {hidden:?} \
             and mlp_ratios {mlp_ratios:?} must list the same 1..=8 stages with positive sizes"
        )));
    }
    if !v.with_fc {
        // timm: without fc the joined scans must have the block's width.
        for (d, h) in dims.iter().zip(&hidden) {
            let o = if v.bidirectional { 2 * h } else { *h };
            let joined = if union == Union::Cat { 2 * o } else { o };
            if joined != *d {
                return Err(Error::invalid_model(format!(
                    "LSTM2d without fc joins {joined} channels, the block has {d}"
                )));
            }
        }
    }
    if mlp_ratios
        .iter()
        .any(|r| !r.is_finite() || *r <= 0.0 || *r > 64.0)
    {
        return Err(Error::invalid_model(format!(
            "Sequencer mlp_ratios {mlp_ratios:?} out of range"
        )));
    }
    let mlp_hidden = match mlp_hidden {
        Some(h) => h,
        // `int(mlp_ratio * dim)`.
        None => dims
            .iter()
            .zip(&mlp_ratios)
            .map(|(&d, &r)| (r * d as f64) as usize)
            .collect(),
    };
    let pool_name = (v.global_pool.as_ref().or(cfg.global_pool.as_ref())).map_or("avg", |s| s);
    Ok(Cfg {
        layers,
        patch_sizes: patch,
        dims,
        hidden,
        mlp_hidden,
        rnn_layers: v.num_rnn_layers,
        bidirectional: v.bidirectional,
        union,
        with_fc: v.with_fc,
        stem_norm: v.stem_norm,
        pool: PoolKind::from_timm(pool_name)?,
    })
}

/// Depths, widths, LSTM and MLP hidden sizes and patch sizes from the weights where config.json
/// does not set them (a `TimmWrapper` folder has `"model_args": null`).
fn read_structure(
    b: &mut Builder,
    a: &Args,
    layers: &mut Vec<usize>,
    dims: &mut Vec<usize>,
    hidden: &mut Vec<usize>,
    patch: &mut Vec<usize>,
    mlp_hidden: &mut Option<Vec<usize>>,
) {
    let stem_patch = b.weight_shape("stem.proj.weight").map(|s| s[2]);
    let st = &mut b.scope("stages");
    let n = (0..)
        .take_while(|&i| st.scope(i).has_module("blocks"))
        .count();
    if n == 0 {
        return;
    }
    if !a.explicit("layers") {
        *layers = (0..n)
            .map(|i| {
                let mut si = st.scope(i);
                let blocks = &mut si.scope("blocks");
                (0..)
                    .take_while(|&j| blocks.scope(j).has_module("norm1"))
                    .count()
            })
            .collect();
    }
    let per_stage = |st: &mut Builder, key: &str, axis: usize| -> Option<Vec<usize>> {
        (0..n)
            .map(|i| {
                st.scope(i)
                    .scope("blocks")
                    .scope(0)
                    .weight_shape(key)
                    .map(|s| s[axis])
            })
            .collect()
    };
    if !a.explicit("embed_dims") {
        if let Some(d) = per_stage(st, "norm1.weight", 0) {
            *dims = d;
        }
    }
    if !a.explicit("hidden_sizes") {
        let h = per_stage(st, "rnn_tokens.rnn_v.weight_hh_l0", 1)
            .or_else(|| per_stage(st, "rnn_tokens.rnn_h.weight_hh_l0", 1));
        if let Some(h) = h {
            *hidden = h;
        }
    }
    if !a.explicit("mlp_ratios") {
        *mlp_hidden = per_stage(st, "mlp_channels.fc1.weight", 0);
    }
    if !a.explicit("patch_sizes") {
        let p: Option<Vec<usize>> = (0..n)
            .map(|i| {
                if i == 0 {
                    stem_patch
                } else {
                    st.scope(i)
                        .weight_shape("downsample.down.weight")
                        .map(|s| s[2])
                }
            })
            .collect();
        if let Some(p) = p {
            *patch = p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 3);
        for arch in TABLE.names() {
            assert!(
                (FAMILY.matches)(arch),
                "{arch} is not matched by the family"
            );
            let cfg = (FAMILY.default_config)(arch).unwrap();
            ModelConfig::parse(cfg.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        }
    }

    #[test]
    fn gates_are_reordered_to_onnx() {
        // i f g o -> i o f c
        let w: Vec<f32> = (0..8).map(|v| v as f32).collect();
        assert_eq!(onnx_gates(&w, 2), vec![0., 1., 6., 7., 2., 3., 4., 5.]);
    }
}
