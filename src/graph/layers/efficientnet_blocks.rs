//! timm's `_efficientnet_blocks.py`: `ConvBnAct`, `DepthwiseSeparableConv`, `InvertedResidual`,
//! `EdgeResidual`, `UniversalInvertedResidual`, `MobileAttention` (`MultiQueryAttention2d`) and the
//! EfficientNet `SqueezeExcite`, each over the norm kind the model chose (BatchNorm folded into
//! the conv before it). Each is a method of `EfficientNetBuilder`, whose settings they share.

use super::super::args::Args;
use super::efficientnet_builder::{num_groups, split_channels, Block, EfficientNetBuilder, Kind};
use super::evo_norm::EvoNorm;
use super::se::SqueezeExcite;
use super::{self as layers, act, conv2d, norm::Norm, Conv, Pad};
use crate::error::{Error, Result};
use crate::graph::{Attr, Builder, Init, Value};

/// The model's `norm_layer` (timm's `get_norm_act_layer` of it), with the activation after.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NormKind {
    /// `BatchNorm2d`: folded into the conv before it.
    Batch(f32),
    /// `GroupNormAct(group_size=g)`: channels / g groups.
    Group { group_size: usize, eps: f32 },
    /// `LayerNormAct2d`.
    Layer(f32),
    /// `RmsNorm2d` / `RmsNormAct2d` (MobileNet-V5).
    Rms(f32),
    /// EvoNorm2d* / FilterResponseNorm*: the activation is the layer's own (`apply_act`).
    Evo(EvoNorm),
}

impl NormKind {
    /// An EfficientNet / MobileNet `norm_layer` argument (None: `BatchNorm2d(eps=bn_eps)`);
    /// `act_layer` is what an EvoNorm's own activation follows.
    pub fn from_args(
        norm_layer: Option<&serde_json::Value>,
        bn_eps: f32,
        act_layer: &str,
        args: &Args,
    ) -> Result<NormKind> {
        let Some(v) = norm_layer else {
            return Ok(NormKind::Batch(bn_eps));
        };
        let name = v
            .as_str()
            .or_else(|| v.get("partial").and_then(|p| p.as_str()))
            .unwrap_or("");
        let eps = v.get("eps").and_then(|e| e.as_f64()).map(|e| e as f32);
        let gs = v.get("group_size").and_then(|g| g.as_u64());
        if let Some(e) = EvoNorm::from_timm(name, v.as_object(), Some(act_layer)) {
            return Ok(NormKind::Evo(e?));
        }
        Ok(match (name, gs) {
            ("groupnormact", Some(g)) if g > 0 => NormKind::Group {
                group_size: g as usize,
                eps: eps.unwrap_or(1e-5),
            },
            ("layernormact2d", None) => NormKind::Layer(eps.unwrap_or(1e-5)),
            ("batchnormact2d" | "batchnorm2d" | "batchnorm", None) => {
                NormKind::Batch(eps.unwrap_or(1e-5))
            }
            _ => {
                return Err(args.unsupported(
                    "norm_layer",
                    "only BatchNorm2d, GroupNormAct(group_size), LayerNormAct2d and EvoNorm / \
                     FilterResponseNorm are built",
                ))
            }
        })
    }

    pub fn norm(self, ch: usize) -> Result<Norm> {
        Ok(match self {
            NormKind::Batch(eps) => Norm::Batch { eps },
            NormKind::Layer(eps) => Norm::Layer { eps },
            NormKind::Rms(eps) => Norm::Rms { eps },
            NormKind::Evo(e) => {
                return Err(Error::invalid_model(format!(
                    "{:?} is a norm-act layer, not a Norm",
                    e.kind
                )))
            }
            NormKind::Group { group_size, eps } => {
                if !ch.is_multiple_of(group_size) {
                    return Err(Error::invalid_model(format!(
                        "GroupNormAct(group_size={group_size}) over {ch} channels"
                    )));
                }
                Norm::Group {
                    groups: ch / group_size,
                    eps,
                }
            }
        })
    }
}

impl EfficientNetBuilder {
    /// `create_conv2d(in, out, k, stride, dilation, groups, padding=pad_type)`.
    pub fn conv(&self, in_ch: usize, out: usize, k: usize, stride: usize, groups: usize) -> Conv {
        Conv::new(in_ch, out, k)
            .stride(stride)
            .groups(groups)
            .pad(Pad::create(k, stride, 1, self.tf_same))
    }

    pub fn conv_d(&self, in_ch: usize, out: usize, k: usize, s: usize, g: usize, d: usize) -> Conv {
        self.conv(in_ch, out, k, s, g)
            .dilation(d)
            .pad(Pad::create(k, s, d, self.tf_same))
    }

    /// The model's norm (+ act) over `ch` channels in scope `bn` (no conv before it to fold into).
    pub fn norm_act(
        &self,
        b: &mut Builder,
        x: &Value,
        bn: &str,
        ch: usize,
        act_name: Option<&str>,
    ) -> Result<Value> {
        if let NormKind::Evo(e) = self.norm {
            return e.apply(&mut b.scope(bn), x, ch, act_name.is_some());
        }
        let y = self.norm.norm(ch)?.apply_2d(&mut b.scope(bn), x, ch)?;
        match act_name {
            Some(a) => act(b, a, &y),
            None => Ok(y),
        }
    }

    /// conv + norm + optional activation; a BatchNorm is folded into the conv.
    pub fn conv_bn_act(
        &self,
        b: &mut Builder,
        x: &Value,
        (conv, bn): (&str, &str),
        c: Conv,
        act_name: Option<&str>,
    ) -> Result<Value> {
        let y = match self.norm {
            NormKind::Batch(eps) => layers::conv_bn(b, x, conv, bn, c, eps)?,
            NormKind::Evo(e) => {
                let y = conv2d(&mut b.scope(conv), x, c)?;
                return e.apply(&mut b.scope(bn), &y, c.out_ch, act_name.is_some());
            }
            _ => {
                let y = conv2d(&mut b.scope(conv), x, c)?;
                self.norm
                    .norm(c.out_ch)?
                    .apply_2d(&mut b.scope(bn), &y, c.out_ch)?
            }
        };
        match act_name {
            Some(a) => act(b, a, &y),
            None => Ok(y),
        }
    }

    /// `create_conv2d` with MixNet's kernel list: `MixedConv2d` (channels split per kernel,
    /// convs `conv.0`, `conv.1`, ...; depthwise when groups == in), then the norm (+ act).
    #[allow(clippy::too_many_arguments)]
    pub fn mixed_conv_bn_act(
        &self,
        b: &mut Builder,
        x: &Value,
        (conv, bn): (&str, &str),
        (in_ch, out, ks): (usize, usize, &[usize]),
        (stride, dilation, groups): (usize, usize, usize),
        act_name: Option<&str>,
    ) -> Result<Value> {
        if let [k] = ks {
            let c = self.conv_d(in_ch, out, *k, stride, groups, dilation);
            return self.conv_bn_act(b, x, (conv, bn), c, act_name);
        }
        let depthwise = groups == in_ch;
        if !depthwise && groups != 1 {
            return Err(Error::unsupported(
                "a grouped (not depthwise) MixedConv2d is not a timm layer",
            ));
        }
        let ins = split_channels(in_ch, ks.len());
        let outs = split_channels(out, ks.len());
        let parts = layers::split(b, x, 1, &ins);
        let mut ys = Vec::with_capacity(ks.len());
        for (i, (&k, xi)) in ks.iter().zip(&parts).enumerate() {
            let g = if depthwise { ins[i] } else { 1 };
            let c = self.conv_d(ins[i], outs[i], k, stride, g, dilation);
            ys.push(conv2d(&mut b.scope(conv).scope(i), xi, c)?);
        }
        let refs: Vec<&Value> = ys.iter().collect();
        let y = layers::concat(b, &refs, 1);
        self.norm_act(b, &y, bn, out, act_name)
    }

    /// `SqueezeExcite(chs, rd_ratio, act_layer=block act, gate_layer, force_act_layer)`.
    pub fn se(
        &self,
        b: &mut Builder,
        x: &Value,
        ch: usize,
        rd: usize,
        block_act: &str,
    ) -> Result<Value> {
        let a = self.se_force_act.as_deref().unwrap_or(block_act);
        if self.se_round == super::efficientnet_builder::SeRound::GlobalContext {
            // get_attn('gc'): attention pooling, the scale branch only, the block's activation.
            let c = super::se::GlobalContextCfg {
                channels: ch,
                rd_channels: rd,
                use_attn: true,
                fuse_add: false,
                fuse_scale: true,
                act: layers::act::canonical(a)?,
            };
            return super::se::global_context(&mut b.scope("se"), x, &c);
        }
        SqueezeExcite::efficientnet(ch, rd, a, &self.se_gate).apply(&mut b.scope("se"), x)
    }

    pub fn maybe_se(&self, b: &mut Builder, x: Value, ch: usize, k: &Block) -> Result<Value> {
        match k.se_rd {
            Some(rd) => self.se(b, &x, ch, rd, &k.act),
            None => Ok(x),
        }
    }

    /// timm's `use_aa = aa_layer is not None and stride > 1`: the conv then keeps stride 1 and
    /// [`Self::anti_alias`] strides after its norm + act.
    fn conv_stride(&self, stride: usize) -> usize {
        if self.aa.is_some() && stride > 1 {
            1
        } else {
            stride
        }
    }

    /// `create_aa(aa_layer, channels, stride)` after a strided conv's norm + act.
    fn anti_alias(&self, b: &mut Builder, y: Value, stride: usize, ch: usize) -> Result<Value> {
        match self.aa {
            Some(aa) if stride > 1 => super::resnet_parts::aa_pool(b, aa, &y, stride, ch),
            _ => Ok(y),
        }
    }

    pub fn groups(&self, k: &Block, default: usize, ch: usize) -> usize {
        num_groups(k.group_size.unwrap_or(default), ch)
    }

    /// `ConvBnAct`: conv, bn1 + act, skip.
    pub fn conv_bn_act_block(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let g = self.groups(k, 0, k.in_ch);
        let s = self.conv_stride(k.stride);
        let c = self.conv_d(k.in_ch, k.out, k.d.k[0], s, g, k.dilation);
        let y = self.conv_bn_act(b, x, ("conv", "bn1"), c, Some(&k.act))?;
        self.anti_alias(b, y, k.stride, k.out)
    }

    /// EfficientNet-X's space-to-depth start (`s2d == 1`): `conv_s2d` (2x2, stride 2, TF
    /// "SAME") and `bn_s2d` + act, to 4x the channels at half the resolution.
    fn space_to_depth(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let sd = Conv::new(k.in_ch, k.in_ch * 4, 2)
            .stride(2)
            .pad(Pad::same(2, 2, 1));
        self.conv_bn_act(b, x, ("conv_s2d", "bn_s2d"), sd, Some(&k.act))
    }

    /// A ds / ir block's depthwise conv + norm + act over `ch` channels: after a space-to-depth
    /// start its kernel is `(k + 1) / 2` (TF "SAME" when that is 2); otherwise the (MixNet
    /// mixed) kernel, anti-aliased when it strides.
    fn block_dw(
        &self,
        b: &mut Builder,
        x: &Value,
        k: &Block,
        ch: usize,
        names: (&str, &str),
    ) -> Result<Value> {
        let g = self.groups(k, 1, ch);
        if k.s2d == 1 {
            let [kernel] = k.d.k[..] else {
                return Err(Error::unsupported(
                    "space-to-depth with MixNet's kernel lists is not a timm block",
                ));
            };
            let kernel = kernel.div_ceil(2);
            let tf_same = self.tf_same || kernel == 2;
            let dw = Conv::new(ch, ch, kernel)
                .stride(k.stride)
                .dilation(k.dilation)
                .groups(g)
                .pad(Pad::create(kernel, k.stride, k.dilation, tf_same));
            return self.conv_bn_act(b, x, names, dw, Some(&k.act));
        }
        let dw = (ch, ch, &k.d.k[..]);
        let sd = (self.conv_stride(k.stride), k.dilation, g);
        let y = self.mixed_conv_bn_act(b, x, names, dw, sd, Some(&k.act))?;
        self.anti_alias(b, y, k.stride, ch)
    }

    /// The block input, after `conv_s2d` / `bn_s2d` when the block starts a space-to-depth
    /// region, and its width.
    fn block_input(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<(Value, usize)> {
        if k.s2d == 1 {
            Ok((self.space_to_depth(b, x, k)?, k.in_ch * 4))
        } else {
            Ok((x.clone(), k.in_ch))
        }
    }

    /// `DepthwiseSeparableConv`: conv_dw, bn1 + act, SE, conv_pw, bn2 (+ act for `dsa`).
    pub fn depthwise_separable(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let (x, ch) = self.block_input(b, x, k)?;
        let y = self.block_dw(b, &x, k, ch, ("conv_dw", "bn1"))?;
        let y = self.maybe_se(b, y, ch, k)?;
        let pw_act = k.d.pw_act.then_some(k.act.as_str());
        let pw = (ch, k.out, &k.d.pw_k[..]);
        self.mixed_conv_bn_act(b, &y, ("conv_pw", "bn2"), pw, (1, 1, 1), pw_act)
    }

    /// `InvertedResidual`: conv_pw, bn1 + act, conv_dw, bn2 + act, SE, conv_pwl, bn3.
    pub fn inverted_residual(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        if k.d.experts > 0 {
            return self.cond_conv_residual(b, x, k);
        }
        let a = Some(k.act.as_str());
        let (x, ch) = self.block_input(b, x, k)?;
        let pw = (ch, k.mid, &k.d.exp_k[..]);
        let y = self.mixed_conv_bn_act(b, &x, ("conv_pw", "bn1"), pw, (1, 1, 1), a)?;
        let y = self.block_dw(b, &y, k, k.mid, ("conv_dw", "bn2"))?;
        let y = self.maybe_se(b, y, k.mid, k)?;
        let pwl = (k.mid, k.out, &k.d.pw_k[..]);
        self.mixed_conv_bn_act(b, &y, ("conv_pwl", "bn3"), pwl, (1, 1, 1), None)
    }

    /// `CondConvResidual`: the InvertedResidual whose three convs are `CondConv2d`s mixing
    /// `experts` kernels by per-image routing weights, `sigmoid(routing_fn(avg_pool(x)))`.
    pub fn cond_conv_residual(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        if k.s2d > 0 || [&k.d.k, &k.d.exp_k, &k.d.pw_k].iter().any(|v| v.len() != 1) {
            return Err(Error::unsupported(
                "CondConv with space-to-depth or MixNet kernel lists is not a timm block",
            ));
        }
        let e = k.d.experts;
        let pooled = layers::pool::global_pool(b, x, layers::pool::PoolKind::Avg);
        let r = {
            let rf = &mut b.scope("routing_fn");
            layers::mlp::linear_2d(rf, &pooled, k.in_ch, e, true, Init::DefaultUniform)?
        };
        let r = act(b, "sigmoid", &r)?;
        // [B, E] -> [B, 1, E, 1, 1]: one weight per image and expert, over (group, out, pixels).
        let r = layers::reshape(b, &r, &[0, 1, e as i64, 1, 1]);
        let a = Some(k.act.as_str());
        let pw = self.conv(k.in_ch, k.mid, k.d.exp_k[0], 1, 1);
        let y = self.cond_conv_bn_act(b, x, ("conv_pw", "bn1"), pw, (&r, e), a)?;
        let g = self.groups(k, 1, k.mid);
        let s = self.conv_stride(k.stride);
        let dw = self.conv_d(k.mid, k.mid, k.d.k[0], s, g, k.dilation);
        let y = self.cond_conv_bn_act(b, &y, ("conv_dw", "bn2"), dw, (&r, e), a)?;
        let y = self.anti_alias(b, y, k.stride, k.mid)?;
        let y = self.maybe_se(b, y, k.mid, k)?;
        let pwl = self.conv(k.mid, k.out, k.d.pw_k[0], 1, 1);
        self.cond_conv_bn_act(b, &y, ("conv_pwl", "bn3"), pwl, (&r, e), None)
    }

    /// `CondConv2d` (weight `[E, out · in/groups · k · k]`, no bias) and the norm (+ act). The
    /// mixed kernel `Σ r_e W_e` convolves as `Σ r_e (W_e * x)`: one conv over every expert's
    /// kernel (ordered group, expert, channel so that `groups` still splits the input), then
    /// the routing-weighted sum over the experts.
    fn cond_conv_bn_act(
        &self,
        b: &mut Builder,
        x: &Value,
        (conv, bn): (&str, &str),
        c: Conv,
        (routing, e): (&Value, usize),
        act_name: Option<&str>,
    ) -> Result<Value> {
        let (g, opg, ipg) = (
            c.groups.max(1),
            c.out_ch / c.groups.max(1),
            c.in_ch / c.groups.max(1),
        );
        let (kh, kw) = c.kernel;
        let fan_out = (kh * kw * c.out_ch / g).max(1);
        let init = Init::Normal((2.0 / fan_out as f64).sqrt() as f32);
        let w = b
            .scope(conv)
            .param("weight", &[e, c.out_ch * ipg * kh * kw], init)?;
        let dims = [e, g, opg, ipg, kh, kw].map(|d| d as i64);
        let w = layers::reshape(b, &w, &dims);
        let w = layers::transpose(b, &w, &[1, 0, 2, 3, 4, 5]);
        let w = layers::reshape(
            b,
            &w,
            &[(g * e * opg) as i64, ipg as i64, kh as i64, kw as i64],
        );
        let all = Conv {
            out_ch: g * e * opg,
            ..c
        };
        let y = all.emit(b, x, &w, None)?;
        // [B, g·E·opg, H, W] -> [B, g, E, opg, H·W], weighted, summed over E.
        let shape = b.op("Shape", &[&y], vec![]);
        let y5 = layers::reshape(b, &y, &[0, g as i64, e as i64, opg as i64, -1]);
        let y5 = layers::mul(b, &y5, routing);
        let axes = b.ints(&[2]);
        let summed = b.op("ReduceSum", &[&y5, &axes], vec![("keepdims", Attr::Int(0))]);
        let n = layers::slice(b, &shape, 0, 0, 1);
        let hw = layers::slice(b, &shape, 0, 2, 4);
        let ch = b.ints(&[c.out_ch as i64]);
        let target = layers::concat(b, &[&n, &ch, &hw], 0);
        let y = b.op("Reshape", &[&summed, &target], vec![]);
        self.norm_act(b, &y, bn, c.out_ch, act_name)
    }

    /// `EdgeResidual` (fused MBConv): conv_exp (full k×k), bn1 + act, SE, conv_pwl, bn2.
    pub fn edge_residual(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let g = self.groups(k, 0, k.mid);
        let s = self.conv_stride(k.stride);
        let c = self.conv_d(k.in_ch, k.mid, k.d.k[0], s, g, k.dilation);
        let y = self.conv_bn_act(b, x, ("conv_exp", "bn1"), c, Some(&k.act))?;
        let y = self.anti_alias(b, y, k.stride, k.mid)?;
        let y = self.maybe_se(b, y, k.mid, k)?;
        let pwl = (k.mid, k.out, &k.d.pw_k[..]);
        self.mixed_conv_bn_act(b, &y, ("conv_pwl", "bn2"), pwl, (1, 1, 1), None)
    }

    /// `UniversalInvertedResidual`: optional dw_start, pw_exp + act, optional dw_mid + act, SE,
    /// pw_proj, optional dw_end, layer scale. Each is a `ConvNormAct` (`conv`, `bn`).
    pub fn universal_inverted_residual(
        &self,
        b: &mut Builder,
        x: &Value,
        k: &Block,
    ) -> Result<Value> {
        let (start, mid_k, end) = (k.d.exp_k[0], k.d.k[0], k.d.pw_k[0]);
        let cna = ("conv", "bn");
        let mut y = x.clone();
        if start > 0 {
            let s = if mid_k > 0 { 1 } else { k.stride };
            let g = self.groups(k, 1, k.in_ch);
            let c = self.conv_d(k.in_ch, k.in_ch, start, self.conv_stride(s), g, k.dilation);
            y = self.conv_bn_act(&mut b.scope("dw_start"), &y, cna, c, None)?;
            y = self.anti_alias(b, y, s, k.in_ch)?;
        }
        let c = self.conv(k.in_ch, k.mid, 1, 1, 1);
        y = self.conv_bn_act(&mut b.scope("pw_exp"), &y, cna, c, Some(&k.act))?;
        if mid_k > 0 {
            let g = self.groups(k, 1, k.mid);
            let s = self.conv_stride(k.stride);
            let c = self.conv_d(k.mid, k.mid, mid_k, s, g, k.dilation);
            y = self.conv_bn_act(&mut b.scope("dw_mid"), &y, cna, c, Some(&k.act))?;
            y = self.anti_alias(b, y, k.stride, k.mid)?;
        }
        y = self.maybe_se(b, y, k.mid, k)?;
        let c = self.conv(k.mid, k.out, 1, 1, 1);
        y = self.conv_bn_act(&mut b.scope("pw_proj"), &y, cna, c, None)?;
        if end > 0 {
            let s = if start == 0 && mid_k == 0 {
                k.stride
            } else {
                1
            };
            let g = self.groups(k, 1, k.out);
            let c = self.conv_d(k.out, k.out, end, s, g, k.dilation);
            y = self.conv_bn_act(&mut b.scope("dw_end"), &y, cna, c, None)?;
        }
        self.layer_scale(b, y, k.out)
    }

    pub fn layer_scale(&self, b: &mut Builder, y: Value, ch: usize) -> Result<Value> {
        match self.layer_scale {
            Some(init) => layers::mlp::layer_scale_2d(&mut b.scope("layer_scale"), &y, ch, init),
            None => Ok(y),
        }
    }

    /// `MobileAttention(use_multi_query=True)`: norm, `MultiQueryAttention2d`, layer scale.
    /// timm uses the block's stride only to drop the skip (the attention keeps the resolution).
    pub fn mobile_attention(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let y = self.norm_act(b, x, "norm", k.in_ch, None)?;
        let y = self.multi_query_attention(&mut b.scope("attn"), &y, k)?;
        self.layer_scale(b, y, k.out)
    }

    /// timm's `MultiQueryAttention2d` (no query stride): per-head queries, one key and value
    /// (after a strided depthwise conv + norm when `kv_stride` > 1), softmax attention, `output.proj`.
    pub fn multi_query_attention(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let (dim, heads, kd) = (k.in_ch, k.d.heads, k.d.kv_dim);
        if heads == 0 || kd == 0 {
            return Err(Error::invalid_model("mqa block without heads / key dim"));
        }
        let q = conv2d(
            &mut b.scope("query").scope("proj"),
            x,
            Conv::new(dim, heads * kd, 1).init(Init::DefaultUniform),
        )?;
        let mut kv = Vec::new();
        for name in ["key", "value"] {
            let s = &mut b.scope(name);
            let mut t = x.clone();
            if k.d.kv_stride > 1 {
                let c = self
                    .conv_d(dim, dim, k.d.k[0], k.d.kv_stride, dim, k.dilation)
                    .init(Init::DefaultUniform);
                t = self.conv_bn_act(s, &t, ("down_conv", "norm"), c, None)?;
            }
            let pad = if name == "key" { self.tf_same } else { false };
            let c = Conv::new(dim, kd, 1)
                .pad(Pad::create(1, 1, 1, pad))
                .init(Init::DefaultUniform);
            let t = conv2d(&mut s.scope("proj"), &t, c)?;
            // [B, kd, P] → [B, 1, P, kd]
            let t = layers::reshape(s, &t, &[0, 1, kd as i64, -1]);
            kv.push(layers::transpose(s, &t, &[0, 1, 3, 2]));
        }
        // [B, h·kd, H, W] → [B, h, HW, kd]
        let q4 = layers::reshape(b, &q, &[0, heads as i64, kd as i64, -1]);
        let q4 = layers::transpose(b, &q4, &[0, 1, 3, 2]);
        let q4 = layers::scale(b, &q4, (kd as f32).powf(-0.5));
        let kt = layers::transpose(b, &kv[0], &[0, 1, 3, 2]);
        let attn = b.op("MatMul", &[&q4, &kt], vec![]);
        let attn = b.op("Softmax", &[&attn], vec![("axis", Attr::Int(-1))]);
        let o = b.op("MatMul", &[&attn, &kv[1]], vec![]);
        // [B, h, HW, vd] → [B, h·vd, H, W] (channel = head·vd + i, as timm's reshape gives).
        let o = layers::transpose(b, &o, &[0, 1, 3, 2]);
        let hv = (heads * kd) as i64;
        let shape = b.op("Shape", &[x], vec![]);
        let n = layers::slice(b, &shape, 0, 0, 1);
        let hw = layers::slice(b, &shape, 0, 2, 4);
        let c = b.ints(&[hv]);
        let target = layers::concat(b, &[&n, &c, &hw], 0);
        let o = b.op("Reshape", &[&o, &target], vec![]);
        if let Some(s) = b.spatial(x).cloned() {
            b.assign_spatial(&o, s);
        }
        let c = Conv::new(heads * kd, k.out, 1).init(Init::DefaultUniform);
        conv2d(&mut b.scope("output").scope("proj"), &o, c)
    }

    pub fn block(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let y = match k.d.kind {
            Kind::Cn => self.conv_bn_act_block(b, x, k)?,
            Kind::Ds => self.depthwise_separable(b, x, k)?,
            Kind::Ir => self.inverted_residual(b, x, k)?,
            Kind::Er => self.edge_residual(b, x, k)?,
            Kind::Uir => self.universal_inverted_residual(b, x, k)?,
            Kind::Mqa => self.mobile_attention(b, x, k)?,
        };
        Ok(if k.skip { layers::add(b, &y, x) } else { y })
    }
}
