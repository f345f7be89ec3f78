//! Normalization-free networks (timm's `nfnet.py`): NFNet-F (`nfnet_f*`, the DeepMind-compatible
//! `dm_nfnet_f*` with TF "SAME" padding, gamma in the activations and skipinit gains), the light
//! NFNet-L (`nfnet_l0`, `eca_nfnet_l*`), NF-RegNet-B (`nf_regnet_b*`), the pre-activation
//! NF-ResNets (`nf_resnet*`, `nf_seresnet*`, `nf_ecaresnet*`) and `test_nfnet`.
//!
//! Every conv is a `ScaledStdConv2d`: its weight standardisation, gain and `gamma / sqrt(fan_in)`
//! scale are done once at load. The block's `beta` (pre-activation scale), `alpha` (residual
//! scale), the attention gain and the skipinit gain stay scalar multiplies.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::heads::fc;
use crate::graph::layers::pool::{avg_pool2d_same_s1, global_pool, Pool2d, PoolKind};
use crate::graph::layers::se::{eca, eca_kernel, rd_channels, SqueezeExcite};
use crate::graph::layers::std_conv::scaled_std_conv2d;
use crate::graph::layers::{self, make_divisible, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};

static TABLE: Table = Table::new(include_str!("../tables/nfnet.json"));

pub const FAMILY: Family = Family {
    name: "nfnet",
    examples: "nfnet_f0..nfnet_f7, dm_nfnet_f0..dm_nfnet_f6, nfnet_l0, eca_nfnet_l0..l3, \
               nf_regnet_b0..b5, nf_resnet26..101, nf_seresnet*, nf_ecaresnet*, test_nfnet",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

crate::timm_args! {
    /// timm's `NfCfg` (the entrypoint's `model_cfg`, which `NormFreeNet.__init__` overlays with
    /// any other keyword argument) and the `NormFreeNet` arguments that shape the graph.
    struct NfArgs {
        depths: Vec<usize> = vec![],
        channels: Vec<usize> = vec![],
        alpha: f64 = 0.2,
        stem_type: String = "3x3".into(),
        stem_chs: Option<usize> = None,
        group_size: Option<usize> = None,
        attn_layer: Option<String> = None,
        attn_kwargs: Option<Json> = None,
        attn_gain: f64 = 2.0,
        width_factor: f64 = 1.0,
        bottle_ratio: f64 = 0.5,
        num_features: usize = 0,
        ch_div: usize = 8,
        reg: bool = false,
        extra_conv: bool = false,
        gamma_in_act: bool = false,
        same_padding: bool = false,
        std_conv_eps: f64 = 1e-5,
        skipinit: bool = false,
        zero_init_fc: bool = false,
        act_layer: String = "silu".into(),
        in_chans: Option<usize> = None,
        output_stride: usize = 32,
    }
}

/// DeepMind's activation gammas (`_nonlin_gamma`): the activations timm's NF nets accept.
const NONLIN_GAMMA: &[(&str, f64)] = &[
    ("identity", 1.0),
    ("celu", 1.270926833152771),
    ("elu", 1.2716004848480225),
    ("gelu", 1.7015043497085571),
    ("leaky_relu", 1.70590341091156),
    ("log_sigmoid", 1.9193484783172607),
    ("log_softmax", 1.0002083778381348),
    ("relu", 1.7139588594436646),
    ("relu6", 1.7131484746932983),
    ("selu", 1.0008515119552612),
    ("sigmoid", 4.803835391998291),
    ("silu", 1.7881293296813965),
    ("softsign", 2.338853120803833),
    ("softplus", 1.9203323125839233),
    ("tanh", 1.5939117670059204),
];

/// The block attention (`get_attn(attn_layer)` with `attn_kwargs`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Attn {
    None,
    /// `SEModule`: `rd_ratio`, `rd_divisor`.
    Se {
        rd_ratio: f64,
        rd_divisor: usize,
    },
    /// `EcaModule` with its kernel from the channels (`gamma`, `beta`).
    Eca {
        gamma: f64,
        beta: f64,
    },
}

/// The stem (`create_stem`).
#[derive(Debug, Clone, PartialEq)]
struct Stem {
    /// `(out channels, stride)` of each conv.
    convs: Vec<(usize, usize, usize)>,
    /// A max pool after the convs (`*_pool`).
    pool: bool,
    /// The conv whose output is timm's stem feature, and its channels.
    feature: (usize, usize),
    stride: usize,
}

/// Everything the graph needs.
#[derive(Debug, Clone)]
struct NfNet {
    depths: Vec<usize>,
    channels: Vec<usize>,
    alpha: f64,
    stem: Stem,
    stem_chs: usize,
    group_size: Option<usize>,
    attn: Attn,
    attn_gain: f64,
    bottle_ratio: f64,
    num_features: usize,
    ch_div: usize,
    reg: bool,
    extra_conv: bool,
    skipinit: bool,
    act: &'static str,
    /// The activation's gamma: in each activation (`gamma_in_act`) or in each conv's scale.
    gamma: f64,
    gamma_in_act: bool,
    same: bool,
    eps: f32,
    in_chans: usize,
    output_stride: usize,
    pool: PoolKind,
    fc_init: Init,
}

fn attn_from(args: &Args, layer: Option<&str>, kw: Option<&Json>) -> Result<Attn> {
    let empty = serde_json::Map::new();
    let kw = match kw {
        None | Some(Json::Null) => &empty,
        Some(Json::Object(m)) => m,
        Some(_) => return Err(args.unsupported("attn_kwargs", "expected a dict")),
    };
    let num = |k: &str, d: f64| -> Result<f64> {
        match kw.get(k) {
            None => Ok(d),
            Some(v) => v
                .as_f64()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| args.unsupported("attn_kwargs", "expected positive numbers")),
        }
    };
    let only = |keys: &[&str]| -> Result<()> {
        match kw.keys().find(|k| !keys.contains(&k.as_str())) {
            Some(k) => Err(args.unsupported(
                "attn_kwargs",
                &format!("attention argument `{k}` is not implemented by the native NFNet graph"),
            )),
            None => Ok(()),
        }
    };
    Ok(match layer.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => Attn::None,
        Some("se") => {
            only(&["rd_ratio", "rd_divisor"])?;
            let rd_divisor = num("rd_divisor", 8.0)?;
            if rd_divisor.fract() != 0.0 || rd_divisor > 1024.0 {
                return Err(args.unsupported("attn_kwargs", "rd_divisor must be an integer"));
            }
            Attn::Se {
                rd_ratio: num("rd_ratio", 1.0 / 16.0)?,
                rd_divisor: rd_divisor as usize,
            }
        }
        Some("eca") => {
            only(&["gamma", "beta"])?;
            Attn::Eca {
                gamma: num("gamma", 2.0)?,
                beta: kw.get("beta").and_then(Json::as_f64).unwrap_or(1.0),
            }
        }
        Some(_) => {
            return Err(args.unsupported(
                "attn_layer",
                "the native NFNet graph implements the 'se' and 'eca' attention layers",
            ))
        }
    })
}

fn stem_from(args: &Args, stem_type: &str, out: usize) -> Result<Stem> {
    const TYPES: &[&str] = &[
        "",
        "deep",
        "deep_tiered",
        "deep_quad",
        "3x3",
        "7x7",
        "deep_pool",
        "3x3_pool",
        "7x7_pool",
    ];
    if !TYPES.contains(&stem_type) {
        return Err(args.unsupported(
            "stem_type",
            "timm's NFNet stems are '', deep, deep_tiered, deep_quad, 3x3, 7x7 and their _pool forms",
        ));
    }
    let pool = stem_type.contains("pool");
    let (convs, feature, mut stride) = if stem_type.contains("deep") {
        if stem_type.contains("quad") {
            let c = [
                (out / 8, 3, 2),
                (out / 4, 3, 1),
                (out / 2, 3, 1),
                (out, 3, 2),
            ];
            (c.to_vec(), (2, out / 2), 4)
        } else {
            let c0 = if stem_type.contains("tiered") {
                3 * out / 8
            } else {
                out / 2
            };
            let c = [(c0, 3, 2), (out / 2, 3, 1), (out, 3, 1)];
            (c.to_vec(), (1, out / 2), 2)
        }
    } else if stem_type.contains("3x3") {
        (vec![(out, 3, 2)], (0, out), 2)
    } else {
        (vec![(out, 7, 2)], (0, out), 2)
    };
    if pool {
        stride = 4;
    }
    if convs.iter().any(|c| c.0 == 0) {
        return Err(Error::invalid_model(format!(
            "`{}`: stem width {out} is too narrow for stem_type '{stem_type}'",
            args.arch()
        )));
    }
    Ok(Stem {
        convs,
        pool,
        feature,
        stride,
    })
}

impl NfNet {
    fn from_config(cfg: &ModelConfig, requested_os: Option<usize>) -> Result<NfNet> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not an nfnet architecture this build knows"
            ))
        })?;
        let args = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let a = NfArgs::read(&args)?;
        let _ = a.zero_init_fc;
        let act_name = a.act_layer.as_str();
        let gamma = NONLIN_GAMMA
            .iter()
            .find(|(n, _)| *n == act_name)
            .map(|g| g.1)
            .ok_or_else(|| {
                args.unsupported(
                    "act_layer",
                    "timm's NFNets take the activations of `_nonlin_gamma`",
                )
            })?;
        let act = layers::act::canonical(act_name)?;
        let n = a.depths.len();
        if n == 0 || a.channels.len() != n {
            return Err(Error::invalid_model(format!(
                "`{arch}`: depths {:?} and channels {:?} must have the same, non-zero length",
                a.depths, a.channels
            )));
        }
        if a.ch_div == 0
            || a.width_factor.is_nan()
            || a.width_factor <= 0.0
            || a.bottle_ratio.is_nan()
            || a.bottle_ratio <= 0.0
            || a.group_size == Some(0)
        {
            return Err(Error::invalid_model(format!(
                "`{arch}`: ch_div, width_factor, bottle_ratio and group_size must be positive"
            )));
        }
        let output_stride = requested_os.unwrap_or(a.output_stride);
        if ![8, 16, 32].contains(&output_stride) {
            return Err(Error::invalid_argument(format!(
                "output_stride {output_stride} is not one timm's NormFreeNet builds (8, 16 or 32)"
            )));
        }
        let input_chans = cfg.pretrained_cfg.input_size[0];
        let in_chans = a.in_chans.unwrap_or(input_chans);
        if in_chans != input_chans {
            return Err(Error::invalid_model(format!(
                "`{arch}`: model_args in_chans {in_chans} disagrees with input_size {:?}",
                cfg.pretrained_cfg.input_size
            )));
        }
        let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or("avg"))?;
        if pool == PoolKind::None {
            return Err(Error::unsupported(format!(
                "`{arch}`: global_pool '' is not supported by the native NFNet graph"
            )));
        }
        let wf = a.width_factor;
        let stem_chs = make_divisible(
            a.stem_chs.unwrap_or(a.channels[0]) as f64 * wf,
            a.ch_div,
            0.9,
        );
        let stem = stem_from(&args, &a.stem_type, stem_chs)?;
        let attn = attn_from(&args, a.attn_layer.as_deref(), a.attn_kwargs.as_ref())?;
        Ok(NfNet {
            channels: a
                .channels
                .iter()
                .map(|&c| make_divisible(c as f64 * wf, a.ch_div, 0.9))
                .collect(),
            depths: a.depths,
            alpha: a.alpha,
            stem,
            stem_chs,
            group_size: a.group_size,
            attn,
            attn_gain: a.attn_gain,
            bottle_ratio: a.bottle_ratio,
            num_features: if a.num_features > 0 {
                make_divisible(wf * a.num_features as f64, a.ch_div, 0.9)
            } else {
                0
            },
            ch_div: a.ch_div,
            reg: a.reg,
            extra_conv: a.extra_conv,
            skipinit: a.skipinit,
            act,
            gamma,
            gamma_in_act: a.gamma_in_act,
            same: a.same_padding,
            eps: a.std_conv_eps as f32,
            in_chans,
            output_stride,
            pool,
            fc_init: if a.zero_init_fc {
                Init::Zeros
            } else {
                Init::Normal(0.01)
            },
        })
    }

    /// A `ScaledStdConv2d` (or `ScaledStdConv2dSame`) `k`×`k` conv in scope `name`.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &self,
        b: &mut Builder,
        x: &Value,
        name: &str,
        (in_ch, out_ch, k): (usize, usize, usize),
        stride: usize,
        dilation: usize,
        groups: usize,
        gain_init: f32,
    ) -> Result<Value> {
        let pad = if self.same {
            Pad::same(k, stride, dilation)
        } else {
            Pad::timm(k, stride, dilation)
        };
        let fan_in = in_ch / groups.max(1) * k * k;
        let c = Conv::new(in_ch, out_ch, k)
            .stride(stride)
            .dilation(dilation)
            .groups(groups)
            .pad(pad)
            .bias(true)
            .init(Init::Normal((1.0 / fan_in.max(1) as f64).sqrt() as f32));
        // With the gamma in the activations the convs keep timm's default gamma of 1.
        let gamma = if self.gamma_in_act { 1.0 } else { self.gamma };
        scaled_std_conv2d(&mut b.scope(name), x, c, gamma, self.eps, gain_init)
    }

    /// The activation (`GammaAct` when `gamma_in_act`), times `scale`.
    fn act(&self, b: &mut Builder, x: &Value, scale: f64) -> Result<Value> {
        let y = layers::act(b, self.act, x)?;
        let s = if self.gamma_in_act {
            self.gamma * scale
        } else {
            scale
        };
        Ok(scaled(b, &y, s))
    }
}

/// `x * s`, nothing for `s == 1`.
fn scaled(b: &mut Builder, x: &Value, s: f64) -> Value {
    if s == 1.0 {
        x.clone()
    } else {
        layers::scale(b, x, s as f32)
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let net = NfNet::from_config(cfg, b.output_stride())?;
    let mut x = b.input();

    // `create_stem`: the convs with an activation between each, then the optional max pool.
    {
        let s = &mut b.scope("stem");
        let mut prev = net.in_chans;
        let last = net.stem.convs.len() - 1;
        for (i, &(c, k, stride)) in net.stem.convs.iter().enumerate() {
            let name = if last == 0 {
                "conv".to_string()
            } else {
                format!("conv{}", i + 1)
            };
            x = net.conv(s, &x, &name, (prev, c, k), stride, 1, 1, 1.0)?;
            if i == net.stem.feature.0 {
                let module = format!("stem.{name}");
                s.feature(&x, net.stem.feature.1, 2, &module);
            }
            if i != last {
                x = net.act(s, &x, 1.0)?;
            }
            prev = c;
        }
        if net.stem.pool {
            x = Pool2d::new(3, 2, 1).max(s, &x, prev)?;
        }
    }

    let mut prev = net.stem_chs;
    let mut net_stride = net.stem.stride;
    let mut dilation = 1;
    let mut expected_var = 1.0f64;
    let n_stages = net.depths.len();
    for (s, (&depth, &out_chs)) in net.depths.iter().zip(&net.channels).enumerate() {
        let mut stride = if s == 0 && net.stem.stride > 2 { 1 } else { 2 };
        if net_stride >= net.output_stride && stride > 1 {
            dilation *= stride;
            stride = 1;
        }
        net_stride *= stride;
        let mut first_dilation = if dilation == 1 || dilation == 2 { 1 } else { 2 };
        for i in 0..depth {
            let first_block = i == 0 && s == 0;
            let blk = Geom {
                in_chs: prev,
                out_chs,
                stride: if i == 0 { stride } else { 1 },
                dilation,
                first_dilation,
                beta: 1.0 / expected_var.sqrt(),
                bottle_ratio: if net.reg && first_block {
                    1.0
                } else {
                    net.bottle_ratio
                },
            };
            let stages = &mut b.scope("stages");
            let stage = &mut stages.scope(s);
            x = block(&mut stage.scope(i), &net, &x, &blk)?;
            if i == 0 {
                expected_var = 1.0;
            }
            expected_var += net.alpha * net.alpha;
            first_dilation = dilation;
            prev = out_chs;
        }
        if !(s == n_stages - 1 && net.num_features > 0) {
            b.feature(&x, prev, net_stride, &format!("stages.{s}"));
        }
    }

    let width = if net.num_features > 0 {
        x = net.conv(
            b,
            &x,
            "final_conv",
            (prev, net.num_features, 1),
            1,
            1,
            1,
            1.0,
        )?;
        b.feature(&x, net.num_features, net_stride, "final_conv");
        net.num_features
    } else {
        prev
    };
    let out = b.output();
    if out == OutputKind::FeatureMaps {
        return Ok((x, width));
    }
    let x = net.act(b, &x, 1.0)?;
    // ClassifierHead: pool, then the linear `head.fc`.
    let pooled = global_pool(b, &x, net.pool);
    let width = width * net.pool.multiplier();
    if out == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let classes = cfg.num_classes;
    let logits = fc(&mut b.scope("head"), &pooled, width, classes, net.fc_init)?;
    Ok((logits, classes))
}

/// One block's place in the network.
struct Geom {
    in_chs: usize,
    out_chs: usize,
    stride: usize,
    dilation: usize,
    first_dilation: usize,
    beta: f64,
    bottle_ratio: f64,
}

/// `NormFreeBlock`: `act1(x) * beta` feeds the shortcut's `DownsampleAvg` and the residual branch
/// (1x1, grouped 3x3, the extra grouped 3x3, attention, 1x1), which is scaled by the skipinit gain
/// and `alpha` and added to the shortcut.
fn block(b: &mut Builder, n: &NfNet, x: &Value, g: &Geom) -> Result<Value> {
    let base = if n.reg { g.in_chs } else { g.out_chs };
    let mut mid = make_divisible(base as f64 * g.bottle_ratio, n.ch_div, 0.9);
    let groups = match n.group_size {
        None => 1,
        Some(gs) => {
            let groups = mid / gs;
            if gs.is_multiple_of(n.ch_div) {
                mid = gs * groups;
            }
            if groups == 0 || !mid.is_multiple_of(groups) {
                return Err(Error::invalid_model(format!(
                    "`{}`: group_size {gs} does not divide the {mid} bottleneck channels",
                    b.path()
                )));
            }
            groups
        }
    };

    let out = n.act(b, x, g.beta)?;
    let needs_ds = g.in_chs != g.out_chs || g.stride != 1 || g.dilation != g.first_dilation;
    let shortcut = if needs_ds {
        downsample(&mut b.scope("downsample"), n, &out, g)?
    } else {
        x.clone()
    };

    let y = n.conv(b, &out, "conv1", (g.in_chs, mid, 1), 1, 1, 1, 1.0)?;
    let y = n.act(b, &y, 1.0)?;
    let mut y = n.conv(
        b,
        &y,
        "conv2",
        (mid, mid, 3),
        g.stride,
        g.first_dilation,
        groups,
        1.0,
    )?;
    if n.extra_conv {
        let t = n.act(b, &y, 1.0)?;
        y = n.conv(b, &t, "conv2b", (mid, mid, 3), 1, g.dilation, groups, 1.0)?;
    }
    if n.reg {
        y = attention(&mut b.scope("attn"), n, &y, mid)?;
    }
    let t = n.act(b, &y, 1.0)?;
    let gain3 = if n.skipinit { 1.0 } else { 0.0 };
    let mut y = n.conv(b, &t, "conv3", (mid, g.out_chs, 1), 1, 1, 1, gain3)?;
    if !n.reg {
        y = attention(&mut b.scope("attn_last"), n, &y, g.out_chs)?;
    }
    // `out.mul_(skipinit_gain)` then `out * alpha`: one scalar.
    let mut s = n.alpha;
    if n.skipinit {
        let gain = b.read("skipinit_gain", &[], Init::Zeros)?;
        s *= gain.first().copied().unwrap_or(0.0) as f64;
    }
    let y = scaled(b, &y, s);
    Ok(layers::add(b, &y, &shortcut))
}

/// The block's attention (`attn` / `attn_last`) times `attn_gain`, or `x` without one.
fn attention(b: &mut Builder, n: &NfNet, x: &Value, ch: usize) -> Result<Value> {
    let y = match n.attn {
        Attn::None => return Ok(x.clone()),
        Attn::Se {
            rd_ratio,
            rd_divisor,
        } => {
            let rd = rd_channels(ch, rd_ratio, rd_divisor);
            SqueezeExcite::se_module(ch, rd).apply(b, x)?
        }
        Attn::Eca { gamma, beta } => eca(b, x, eca_kernel(ch, gamma, beta), false, "sigmoid")?,
    };
    Ok(scaled(b, &y, n.attn_gain))
}

/// `DownsampleAvg`: a 2x2 average pool when strided (`AvgPool2dSame` at stride 1 in a dilated
/// stage), then a 1x1 conv.
fn downsample(b: &mut Builder, n: &NfNet, x: &Value, g: &Geom) -> Result<Value> {
    let x = if g.dilation > 1 {
        avg_pool2d_same_s1(b, x, 2, g.in_chs)?
    } else if g.stride > 1 {
        Pool2d::new(2, g.stride, 0)
            .ceil(true)
            .count_include_pad(false)
            .avg(b, x, g.in_chs)?
    } else {
        x.clone()
    };
    n.conv(b, &x, "conv", (g.in_chs, g.out_chs, 1), 1, 1, 1, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_architecture_resolves() {
        assert_eq!(TABLE.validate(), Ok(TABLE.names().len()));
        for arch in TABLE.names() {
            let cfg = (FAMILY.default_config)(arch).unwrap();
            let cfg = ModelConfig::parse(cfg.to_string().as_bytes()).unwrap();
            let net = NfNet::from_config(&cfg, None).unwrap_or_else(|e| panic!("{arch}: {e:?}"));
            assert_eq!(net.depths.len(), 4, "{arch}");
        }
    }

    #[test]
    fn dm_nfnet_f0_is_deepminds_configuration() {
        let cfg = (FAMILY.default_config)("dm_nfnet_f0").unwrap();
        let cfg = ModelConfig::parse(cfg.to_string().as_bytes()).unwrap();
        let n = NfNet::from_config(&cfg, None).unwrap();
        assert!(n.same && n.gamma_in_act && n.skipinit && n.extra_conv);
        assert_eq!(n.stem.stride, 4);
        assert_eq!(n.stem.feature, (2, 64));
        assert_eq!(n.num_features, 3072);
        assert_eq!(n.act, "gelu");
        assert_eq!(
            n.attn,
            Attn::Se {
                rd_ratio: 0.5,
                rd_divisor: 8
            }
        );
    }
}
