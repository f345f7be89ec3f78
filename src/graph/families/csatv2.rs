//! CSATv2 (timm `csatv2.py`): a ConvNeXt-V2-like network on a DCT frequency-domain stem, with a
//! spatial attention gate in every conv block and transformer blocks in the late stages.
//!
//! The stem (`LearnableDct2d`: de-normalise to [0, 255], RGB to YCbCr, an 8x8 block DCT-II,
//! zigzag order, the fixed frequency statistics, then per-channel 1x1 convs) is affine in the
//! input per 8x8 block, so it is folded at load into one 8x8 stride-8 conv. `Block`: depthwise
//! 7x7, LayerNorm, Linear, GELU, GRN, Linear, times `SpatialAttention` (channel mean / max,
//! adaptive 7x7 average pool, 7x7 conv, a one-channel transformer, bilinear upsampling with
//! aligned corners), optional LayerScale2d. `TransformerBlock`: conv position encoding,
//! timm's `Attention` (8 heads of 32), `Mlp`. Stages but the last end in a LayerNorm2d; the head
//! is a `NormMlpClassifierHead`.
//!
//! timm's one-channel transformer attends across the batch (its q, k, v are `[B, N]`, so
//! `q @ k.T` is `[B, B]`); the graph does the same, so results match timm for any batch.
//!
//! Feature maps: `stem_dct` (reduction 8) and `stages.0`..`3`; timm's default `out_indices` are
//! the four stages.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::adaptive_pool::adaptive_avg_pool2d;
use crate::graph::layers::attention::{attention, AttnCfg, Hooks};
use crate::graph::layers::heads::norm_mlp_head;
use crate::graph::layers::mlp::{
    global_response_norm, layer_scale, linear, linear_nobias, mlp, MlpCfg,
};
use crate::graph::layers::pool::PoolKind;
use crate::graph::layers::{self, act, add, conv2d, Conv, Norm, Pad};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/csatv2.json"));

/// The `csatv2` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "csatv2",
    examples: "csatv2, csatv2_21m",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `CSATv2.__init__`'s keyword arguments with timm's defaults.
    pub struct CsatArgs {
        in_chans: usize = 3,
        global_pool: String = "avg".into(),
        dims: Vec<usize> = vec![32, 72, 168, 386],
        depths: Vec<usize> = vec![2, 2, 8, 6],
        transformer_depths: Vec<usize> = vec![0, 0, 2, 2],
        transformer_drop_path: bool = false,
        ls_init_value: Option<f64> = None,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a CSATv2 architecture this build knows"
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = CsatArgs::read(&a)?;
    if v.in_chans != 3 {
        return Err(a.unsupported(
            "in_chans",
            "the DCT stem converts RGB to YCbCr (3 channels)",
        ));
    }
    let n = v.dims.len();
    if n == 0
        || v.depths.len() != n
        || v.transformer_depths.len() != n
        || (0..n).any(|i| v.transformer_depths[i] > v.depths[i])
        || !v.dims[0].is_multiple_of(8)
    {
        return Err(Error::invalid_model(format!(
            "CSATv2 dims {:?} (the first a multiple of 8 for the Y/Cb/Cr split), depths {:?}, transformer_depths {:?}",
            v.dims, v.depths, v.transformer_depths
        )));
    }
    let pool = PoolKind::from_timm(&v.global_pool)?;
    if pool == PoolKind::None {
        return Err(a.unsupported(
            "global_pool",
            "unpooled features ('') are not built natively",
        ));
    }
    let ls = v.ls_init_value.filter(|&x| x != 0.0).map(|x| x as f32);
    b.default_out_indices(&[1, 2, 3, 4]);

    let input = b.input();
    let mut x = dct_stem(&mut b.scope("stem_dct"), &input, v.dims[0])?;
    b.feature(&x, v.dims[0], 8, "stem_dct");
    let mut reduction = 8;
    for i in 0..n {
        let dim = v.dims[i];
        let st = format!("stages.{i}");
        let mut j = 0;
        if i > 0 {
            let c = Conv::new(v.dims[i - 1], dim, 2)
                .stride(2)
                .pad(Pad::Sym(0))
                .bias(true);
            x = conv2d(&mut b.scope(format!("{st}.0")), &x, c)?;
            reduction *= 2;
            j = 1;
        }
        for _ in 0..v.depths[i] - v.transformer_depths[i] {
            x = block(&mut b.scope(format!("{st}.{j}")), &x, dim, ls)?;
            j += 1;
        }
        for _ in 0..v.transformer_depths[i] {
            x = transformer_block(&mut b.scope(format!("{st}.{j}")), &x, dim, ls)?;
            j += 1;
        }
        if i + 1 < n {
            x = Norm::Layer { eps: 1e-6 }.apply_2d(&mut b.scope(format!("{st}.{j}")), &x, dim)?;
        }
        b.feature(&x, dim, reduction, &st);
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, v.dims[n - 1]));
    }
    let features = b.output() == OutputKind::Features;
    let h = &mut b.scope("head");
    let norm = Norm::Layer { eps: 1e-6 };
    norm_mlp_head(
        h,
        &x,
        v.dims[n - 1],
        pool,
        &norm,
        None,
        "tanh",
        cfg.num_classes,
        features,
    )
}

/// timm's `_DCT_MEAN` (the stem's non-persistent buffer, per YCbCr channel and zigzag coefficient).
const DCT_MEAN: [[f64; 64]; 3] = [
    [
        932.42657, -0.0026, 0.33415, -0.0284, 3e-05, -0.02792, -0.00183, 6e-05, 0.00032, 0.03402,
        -0.00571, 0.0002, 6e-05, -0.00038, -0.00558, -0.00116, -0.0, -0.00047, -8e-05, -0.0003,
        0.00942, 0.00161, -9e-05, -6e-05, -0.00014, -0.00035, 1e-05, -0.0022, 0.00033, -2e-05,
        -3e-05, -0.0002, 7e-05, -0.0, 5e-05, 0.00293, -4e-05, 6e-05, 0.00019, 4e-05, 6e-05,
        -0.00015, -2e-05, 7e-05, 0.0001, -4e-05, 8e-05, 0.0, 8e-05, -1e-05, 0.00015, 2e-05, 7e-05,
        3e-05, 4e-05, -1e-05, 4e-05, -0.0, 2e-05, -0.0, -8e-05, -0.0, -3e-05, 3e-05,
    ],
    [
        962.34735, -0.00428, 0.09835, 0.00152, -9e-05, 0.00312, -0.00141, -1e-05, -0.00013, 0.0105,
        0.00065, 6e-05, -0.0, 3e-05, 0.00264, 0.0, 1e-05, 7e-05, -6e-05, 3e-05, 0.00341, 0.00163,
        4e-05, 3e-05, -1e-05, 8e-05, -0.0, 0.0009, 0.00018, -6e-05, -1e-05, 7e-05, -3e-05, -1e-05,
        6e-05, 0.00084, -0.0, -1e-05, 0.0, 4e-05, -1e-05, -2e-05, 0.0, 1e-05, 2e-05, 1e-05, 4e-05,
        0.00011, 0.0, -3e-05, 0.00011, -2e-05, 1e-05, 1e-05, 1e-05, 1e-05, -7e-05, -3e-05, 1e-05,
        0.0, 1e-05, 2e-05, 1e-05, 0.0,
    ],
    [
        1053.16101, -0.00213, -0.09207, 0.00186, 0.00013, 0.00034, -0.00119, 2e-05, 0.00011,
        -0.00984, 0.00046, -7e-05, -1e-05, -5e-05, 0.0018, 0.00042, 2e-05, -0.0001, 4e-05, 3e-05,
        -0.00301, 0.00125, -2e-05, -3e-05, -1e-05, -1e-05, -1e-05, 0.00056, 0.00021, 1e-05, -1e-05,
        2e-05, -1e-05, -1e-05, 5e-05, -0.0007, -2e-05, -2e-05, 5e-05, -4e-05, -0.0, 2e-05, -2e-05,
        1e-05, 0.0, -3e-05, 4e-05, 7e-05, 1e-05, 0.0, 0.00013, -0.0, 0.0, 2e-05, -0.0, -1e-05,
        -4e-05, -3e-05, 0.0, 1e-05, -1e-05, 1e-05, -0.0, 0.0,
    ],
];
/// timm's `_DCT_VAR` (the stem's non-persistent buffer, per YCbCr channel and zigzag coefficient).
const DCT_VAR: [[f64; 64]; 3] = [
    [
        270372.375, 6287.10645, 5974.94043, 1653.10889, 1463.91748, 1832.58997, 755.92468,
        692.41528, 648.57184, 641.46881, 285.79288, 301.621, 380.43405, 349.84027, 374.15891,
        190.3096, 190.76746, 221.64578, 200.82646, 145.87979, 126.92046, 62.14622, 67.75562,
        102.42001, 129.74922, 130.04631, 103.12189, 97.76417, 53.17402, 54.81048, 73.48712,
        81.04342, 69.351, 49.06024, 33.96053, 37.03279, 20.48858, 24.9483, 33.90822, 44.54912,
        47.56363, 40.0316, 30.43313, 22.63899, 26.53739, 26.57114, 21.84404, 17.41557, 15.18253,
        10.69678, 11.24111, 12.97229, 15.08971, 15.31646, 8.90409, 7.44213, 6.66096, 6.97719,
        4.17834, 3.83882, 4.51073, 2.36646, 2.41363, 1.48266,
    ],
    [
        18839.21094,
        321.70932,
        300.15259,
        77.4783,
        76.02293,
        89.04748,
        33.99642,
        34.74807,
        32.12333,
        28.19588,
        12.04675,
        14.26871,
        18.45779,
        16.59588,
        15.67892,
        7.37718,
        8.56312,
        10.28946,
        9.41013,
        6.6909,
        5.16453,
        2.55186,
        3.03073,
        4.66765,
        5.85418,
        5.74644,
        4.33702,
        3.66948,
        1.95107,
        2.26034,
        3.0638,
        3.50705,
        3.06359,
        2.19284,
        1.54454,
        1.5786,
        0.97078,
        1.13941,
        1.48653,
        1.89996,
        1.95544,
        1.6495,
        1.24754,
        0.93677,
        1.09267,
        1.09516,
        0.94163,
        0.78966,
        0.72489,
        0.50841,
        0.50909,
        0.55664,
        0.63111,
        0.64125,
        0.38847,
        0.33378,
        0.30918,
        0.33463,
        0.20875,
        0.19298,
        0.21903,
        0.1338,
        0.13444,
        0.09554,
    ],
    [
        17127.39844,
        292.81421,
        271.45209,
        66.64056,
        63.60253,
        76.35437,
        28.06587,
        27.84831,
        25.96656,
        23.6037,
        9.99173,
        11.34992,
        14.46955,
        12.92553,
        12.69353,
        5.91537,
        6.60187,
        7.90891,
        7.32825,
        5.32785,
        4.2966,
        2.13459,
        2.44135,
        3.66021,
        4.50335,
        4.38959,
        3.34888,
        2.97181,
        1.60633,
        1.7701,
        2.35118,
        2.69018,
        2.38189,
        1.74596,
        1.26014,
        1.31684,
        0.79327,
        0.92046,
        1.1767,
        1.47609,
        1.50914,
        1.28725,
        0.99898,
        0.74832,
        0.85736,
        0.858,
        0.74663,
        0.63508,
        0.58748,
        0.41098,
        0.41121,
        0.44663,
        0.50277,
        0.51519,
        0.31729,
        0.27336,
        0.25399,
        0.27241,
        0.17353,
        0.16255,
        0.1844,
        0.11602,
        0.11511,
        0.0845,
    ],
];

/// `LearnableDct2d` folded into one 8x8 stride-8 conv (`conv_y`, `conv_cb`, `conv_cr` read,
/// their outputs concatenated): weight `[out, 3, 8, 8]` and bias from the fixed affine maps.
fn dct_stem(b: &mut Builder, x: &Value, out: usize) -> Result<Value> {
    let unit = out / 8;
    let split = [6 * unit, unit, unit];
    const K: usize = 8;
    // The orthonormal DCT-II matrix `kern[n][k]`: timm saves it (`weights` = its transpose);
    // the closed form (timm's `_dct_kernel_type_2`) stands in for a graph built without weights.
    let closed = |nn: usize, k: usize| {
        let s = if k == 0 {
            (1.0 / K as f64).sqrt()
        } else {
            (2.0 / K as f64).sqrt()
        };
        s * (std::f64::consts::PI * k as f64 * (2 * nn + 1) as f64 / (2 * K) as f64).cos()
    };
    let name = "transform.transform.weights";
    let saved = match b.has_weight(name) {
        true => Some(b.read(name, &[K, K], Init::Zeros)?),
        false => None,
    };
    let mut kern = [[0f64; K]; K];
    for (nn, row) in kern.iter_mut().enumerate() {
        for (k, v) in row.iter_mut().enumerate() {
            *v = saved
                .as_ref()
                .map_or_else(|| closed(nn, k), |w| w[k * K + nn] as f64);
        }
    }
    let zigzag = zigzag(K, K);
    // RGB (0..255) to YCbCr rows, and the offsets.
    let y = [0.299, 0.587, 0.114];
    let m = [
        y,
        [-0.564 * y[0], -0.564 * y[1], 0.564 * (1.0 - y[2])],
        [0.713 * (1.0 - y[0]), -0.713 * y[1], -0.713 * y[2]],
    ];
    let off = [0.0, 128.0, 128.0];
    let (mean, std) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
    let mut weight = vec![0f32; out * 3 * K * K];
    let mut bias = vec![0f32; out];
    let names = ["conv_y", "conv_cb", "conv_cr"];
    let mut o0 = 0;
    for (ch, (&name, &oc)) in names.iter().zip(&split).enumerate() {
        let s = &mut b.scope(name);
        let w = s.read("weight", &[oc, K * K, 1, 1], Init::TruncNormal(0.02))?;
        let bv = s.read("bias", &[oc], Init::Zeros)?;
        // The constant part of this YCbCr channel for a normalised input of zero.
        let base: f64 = (0..3).map(|c| m[ch][c] * mean[c] * 255.0).sum::<f64>() + off[ch];
        for o in 0..oc {
            let mut acc_b = bv[o] as f64;
            for (p, &z) in zigzag.iter().enumerate() {
                let (u, vv) = (z / K, z % K);
                let sd = (DCT_VAR[ch][p] as f32).sqrt() as f64 + 1e-8;
                let a = w[o * K * K + p] as f64 / sd;
                let mut ksum = 0.0;
                for i in 0..K {
                    for j in 0..K {
                        let basis = kern[i][u] * kern[j][vv];
                        ksum += basis;
                        for c in 0..3 {
                            let idx = (((o0 + o) * 3 + c) * K + i) * K + j;
                            weight[idx] += (a * basis * m[ch][c] * std[c] * 255.0) as f32;
                        }
                    }
                }
                acc_b += a * (ksum * base - DCT_MEAN[ch][p]);
            }
            bias[o0 + o] = acc_b as f32;
        }
        o0 += oc;
    }
    let wv = b.tensor("weight", weight, &[out, 3, K, K])?;
    let bv = b.tensor("bias", bias, &[out])?;
    let c = Conv::new(3, out, K).stride(K).pad(Pad::Sym(0)).bias(true);
    c.emit(b, x, &wv, Some(&bv))
}

/// timm's `_zigzag_permutation(rows, cols)`.
fn zigzag(rows: usize, cols: usize) -> Vec<usize> {
    let mut dia: Vec<Vec<usize>> = vec![Vec::new(); rows + cols - 1];
    for i in 0..rows {
        for j in 0..cols {
            let s = i + j;
            if s % 2 == 0 {
                dia[s].insert(0, i * cols + j);
            } else {
                dia[s].push(i * cols + j);
            }
        }
    }
    dia.concat()
}

/// `Block` on NCHW.
fn block(b: &mut Builder, x: &Value, dim: usize, ls: Option<f32>) -> Result<Value> {
    let dw = Conv::new(dim, dim, 7)
        .pad(Pad::Sym(3))
        .depthwise()
        .bias(true);
    let y = conv2d(&mut b.scope("dwconv"), x, dw)?;
    let y = layers::nchw_to_nhwc(b, &y);
    let y = Norm::Layer { eps: 1e-6 }.apply_last(&mut b.scope("norm"), &y, dim)?;
    let init = Init::TruncNormal(0.02);
    let y = linear(&mut b.scope("pwconv1"), &y, dim, 4 * dim, true, init)?;
    let y = act(b, "gelu", &y)?;
    let y = global_response_norm(&mut b.scope("grn"), &y, 4 * dim, true)?;
    let y = linear(&mut b.scope("pwconv2"), &y, 4 * dim, dim, true, init)?;
    let y = layers::nhwc_to_nchw(b, &y);
    let att = spatial_attention(&mut b.scope("attn"), &y)?;
    // F.interpolate(attn, size=x.shape[2:], mode='bilinear', align_corners=True)
    let hw = b.op(
        "Shape",
        &[&y],
        vec![("start", Attr::Int(2)), ("end", Attr::Int(4))],
    );
    let nc0 = b.op(
        "Shape",
        &[&att],
        vec![("start", Attr::Int(0)), ("end", Attr::Int(2))],
    );
    let sizes = layers::concat(b, &[&nc0, &hw], 0);
    let empty = b.none();
    let att = b.op(
        "Resize",
        &[&att, &empty, &empty, &sizes],
        vec![
            ("mode", Attr::Str("linear".into())),
            (
                "coordinate_transformation_mode",
                Attr::Str("align_corners".into()),
            ),
        ],
    );
    let mut y = layers::mul(b, &y, &att);
    if let Some(init) = ls {
        y = layers::mlp::layer_scale_2d(&mut b.scope("ls"), &y, dim, init)?;
    }
    Ok(add(b, x, &y))
}

/// `SpatialAttention`: `[mean, max]` over channels, adaptive 7x7 average pool, 7x7 conv to one
/// channel, the one-channel `SpatialTransformerBlock`.
fn spatial_attention(b: &mut Builder, x: &Value) -> Result<Value> {
    let axes = b.ints(&[1]);
    let keep = vec![("keepdims", Attr::Int(1))];
    let avg = b.op("ReduceMean", &[x, &axes], keep.clone());
    let mx = b.op("ReduceMax", &[x, &axes], keep);
    let t = layers::concat(b, &[&avg, &mx], 1);
    let t = adaptive_avg_pool2d(b, &t, (7, 7));
    let t = conv2d(
        &mut b.scope("conv"),
        &t,
        Conv::new(2, 1, 7).pad(Pad::Sym(3)).bias(true),
    )?;
    spatial_transformer(&mut b.scope("attn"), &t)
}

/// `SpatialTransformerBlock` on `[B, 1, 7, 7]`.
fn spatial_transformer(b: &mut Builder, x: &Value) -> Result<Value> {
    let tokens = |b: &mut Builder, t: &Value| layers::reshape(b, t, &[0, 49, 1]);
    let t = tokens(b, x);
    let t = Norm::Layer { eps: 1e-5 }.apply_last(&mut b.scope("norm1"), &t, 1)?;
    let t = pos_conv(&mut b.scope("pos_embed"), &t, 1, (7, 7))?;
    let qkv = linear_nobias(&mut b.scope("qkv"), &t, 1, 3, Init::TruncNormal(0.02))?;
    // unbind(-1): q, k, v [B, 49]; timm's `q @ k.T` is then [B, B] (across the batch).
    let qkv = layers::reshape(b, &qkv, &[0, 49, 3]);
    let qkv = layers::transpose(b, &qkv, &[2, 0, 1]);
    let part = |b: &mut Builder, i: i64| {
        let idx = b.const_i64(vec![i], &[]);
        b.op("Gather", &[&qkv, &idx], vec![("axis", Attr::Int(0))])
    };
    let (q, k, v) = (part(b, 0), part(b, 1), part(b, 2));
    let kt = layers::transpose(b, &k, &[1, 0]);
    let logits = b.op("MatMul", &[&q, &kt], vec![]);
    let p = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
    let y = b.op("MatMul", &[&p, &v], vec![]);
    let y = layers::reshape(b, &y, &[0, 1, 7, 7]);
    let x = add(b, x, &y);
    let t = tokens(b, &x);
    let t = Norm::Layer { eps: 1e-5 }.apply_last(&mut b.scope("norm2"), &t, 1)?;
    let t = mlp(&mut b.scope("mlp"), &t, &MlpCfg::new(1, 4, "gelu"))?;
    let t = layers::reshape(b, &t, &[0, 1, 7, 7]);
    Ok(add(b, &x, &t))
}

/// `PosConv` on tokens `[B, N, C]` of an `hw` grid: `x + dw3x3(x)`.
fn pos_conv(b: &mut Builder, t: &Value, c: usize, hw: (usize, usize)) -> Result<Value> {
    let m = layers::transpose(b, t, &[0, 2, 1]);
    let m = layers::reshape(b, &m, &[0, c as i64, hw.0 as i64, hw.1 as i64]);
    let dw = Conv::new(c, c, 3).pad(Pad::Sym(1)).depthwise().bias(true);
    let y = conv2d(&mut b.scope("proj"), &m, dw)?;
    let y = add(b, &y, &m);
    let y = layers::reshape(b, &y, &[0, c as i64, -1]);
    Ok(layers::transpose(b, &y, &[0, 2, 1]))
}

/// `TransformerBlock` (no downsample) on NCHW.
fn transformer_block(b: &mut Builder, x: &Value, dim: usize, ls: Option<f32>) -> Result<Value> {
    let d = dim as i64;
    let t = layers::reshape(b, x, &[0, d, -1]);
    let t = layers::transpose(b, &t, &[0, 2, 1]);
    let t = Norm::Layer { eps: 1e-5 }.apply_last(&mut b.scope("norm1"), &t, dim)?;
    // PosConv on the map's own (dynamic) grid.
    let m = layers::transpose(b, &t, &[0, 2, 1]);
    let shape = b.op("Shape", &[x], vec![]);
    let m = b.op("Reshape", &[&m, &shape], vec![]);
    let dw = Conv::new(dim, dim, 3)
        .pad(Pad::Sym(1))
        .depthwise()
        .bias(true);
    let pe = conv2d(&mut b.scope("pos_embed.proj"), &m, dw)?;
    let m = add(b, &pe, &m);
    let t = layers::reshape(b, &m, &[0, d, -1]);
    let t = layers::transpose(b, &t, &[0, 2, 1]);
    let mut ac = AttnCfg::new(dim, 8);
    ac.inner = Some(8 * 32);
    ac.qkv_bias = false;
    let mut y = attention(&mut b.scope("attn"), &t, &ac, &Hooks::default())?;
    if let Some(init) = ls {
        y = layer_scale(&mut b.scope("ls1"), &y, dim, init)?;
    }
    let tx = layers::reshape(b, x, &[0, d, -1]);
    let tx = layers::transpose(b, &tx, &[0, 2, 1]);
    let t = add(b, &tx, &y);
    let h = Norm::Layer { eps: 1e-5 }.apply_last(&mut b.scope("norm2"), &t, dim)?;
    let mut h = mlp(&mut b.scope("mlp"), &h, &MlpCfg::new(dim, 4 * dim, "gelu"))?;
    if let Some(init) = ls {
        h = layer_scale(&mut b.scope("ls2"), &h, dim, init)?;
    }
    let t = add(b, &t, &h);
    let t = layers::transpose(b, &t, &[0, 2, 1]);
    let y = b.op("Reshape", &[&t, &shape], vec![]);
    // The map keeps x's spatial size.
    if let Some(s) = b.spatial(x).cloned() {
        b.assign_spatial(&y, s);
    }
    Ok(y)
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

    #[test]
    fn zigzag_is_timms_order() {
        // timm's _zigzag_permutation(3, 3).
        assert_eq!(zigzag(3, 3), vec![0, 1, 3, 6, 4, 2, 5, 7, 8]);
    }
}
