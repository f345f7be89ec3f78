//! timm's `layers/evo_norm.py` (EvoNorm2d B0/B1/B2, S0/S0a/S1/S1a/S2/S2a) and
//! `layers/filter_response_norm.py` (FilterResponseNormTlu2d, FilterResponseNormAct2d): the
//! norm-activation layers that replace a BatchNorm + activation pair, in eval mode (the
//! B-variants divide by their `running_var`, the S-variants by per-sample group statistics).

use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};
use crate::graph::{Builder, Init, Value};

/// Which of timm's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvoKind {
    B0,
    B1,
    B2,
    S0,
    S0a,
    S1,
    S1a,
    S2,
    S2a,
    /// `FilterResponseNormTlu2d`: FRN then `max(x, tau)`.
    FrnTlu,
    /// `FilterResponseNormAct2d`: FRN then `act_layer`.
    FrnAct,
}

/// One EvoNorm / FRN layer as timm's constructor receives it (`partial(cls, **kw)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvoNorm {
    pub kind: EvoKind,
    pub eps: f32,
    /// `groups` (timm's default 32), used when `group_size` is not given.
    pub groups: usize,
    pub group_size: Option<usize>,
    /// The activation of S1/S1a/S2/S2a (SiLU unless `act_layer` says otherwise) and of
    /// FilterResponseNormAct2d; None is `nn.Identity`.
    pub act: Option<&'static str>,
}

impl EvoNorm {
    /// The layer for a norm name (a class name `EvoNorm2dS0` or a `create_norm_act_layer` name
    /// `evonorms0`, `frn`, `frntlu`; case and underscores ignored) with the partial's keywords.
    /// None when the name is none of these. `family_act` is the `act_layer` that
    /// `get_norm_act_layer` binds to FilterResponseNormAct2d (the only one of these layers it
    /// passes an activation to).
    pub fn from_timm(
        name: &str,
        kw: Option<&Map<String, Json>>,
        family_act: Option<&str>,
    ) -> Option<Result<EvoNorm>> {
        let n = name.to_ascii_lowercase().replace('_', "");
        let n = n.split('-').next().unwrap_or_default();
        let kind = match n {
            "evonorm2db0" | "evonormb0" => EvoKind::B0,
            "evonorm2db1" | "evonormb1" => EvoKind::B1,
            "evonorm2db2" | "evonormb2" => EvoKind::B2,
            "evonorm2ds0" | "evonorms0" => EvoKind::S0,
            "evonorm2ds0a" | "evonorms0a" => EvoKind::S0a,
            "evonorm2ds1" | "evonorms1" => EvoKind::S1,
            "evonorm2ds1a" | "evonorms1a" => EvoKind::S1a,
            "evonorm2ds2" | "evonorms2" => EvoKind::S2,
            "evonorm2ds2a" | "evonorms2a" => EvoKind::S2a,
            "filterresponsenormtlu2d" | "frntlu" => EvoKind::FrnTlu,
            "filterresponsenormact2d" | "frn" => EvoKind::FrnAct,
            _ => return None,
        };
        Some(Self::with_kwargs(kind, kw, family_act))
    }

    fn with_kwargs(
        kind: EvoKind,
        kw: Option<&Map<String, Json>>,
        family_act: Option<&str>,
    ) -> Result<EvoNorm> {
        use EvoKind::*;
        // Each class's own default eps.
        let default_eps = match kind {
            B0 | S0a | S1a | S2a => 1e-3,
            _ => 1e-5,
        };
        let grouped = matches!(kind, S0 | S0a | S1 | S1a | S2 | S2a);
        let mut e = EvoNorm {
            kind,
            eps: default_eps,
            groups: 32,
            group_size: None,
            act: match kind {
                S1 | S1a | S2 | S2a => Some("silu"),
                FrnAct => family_act.map(super::act::canonical).transpose()?,
                _ => None,
            },
        };
        let bad = |k: &str, why: &str| {
            Error::unsupported(format!("{kind:?} norm layer argument `{k}`: {why}"))
        };
        for (k, v) in kw.into_iter().flatten() {
            match k.as_str() {
                "partial" => {}
                "eps" => e.eps = v.as_f64().ok_or_else(|| bad(k, "expected a number"))? as f32,
                // Training-only (the running_var update) or unused by timm's forward.
                "momentum" | "rms" | "inplace" => {}
                "groups" if grouped => {
                    e.groups = v.as_u64().ok_or_else(|| bad(k, "expected a number"))? as usize
                }
                "group_size" if grouped => {
                    e.group_size = match v {
                        Json::Null => None,
                        v => Some(v.as_u64().ok_or_else(|| bad(k, "expected a number"))? as usize),
                    }
                }
                "act_layer" if matches!(kind, S1 | S1a | S2 | S2a | FrnAct) => {
                    e.act = match v {
                        // S1/S2 take None as their SiLU default; FRN-Act as no activation.
                        Json::Null if kind != FrnAct => Some("silu"),
                        Json::Null => None,
                        Json::String(s) => Some(super::act::canonical(s)?),
                        _ => return Err(bad(k, "expected an activation name")),
                    }
                }
                _ => return Err(bad(k, "not an argument this layer takes")),
            }
        }
        Ok(e)
    }

    /// timm's group count over `ch` channels: `ch // group_size` when a group size is given,
    /// else `groups`; timm asserts the channels divide evenly.
    pub fn groups_for(&self, ch: usize) -> Result<usize> {
        let g = match self.group_size {
            Some(gs) if gs > 0 => {
                if !ch.is_multiple_of(gs) {
                    return Err(Error::invalid_model(format!(
                        "{:?}: group_size {gs} does not divide {ch} channels",
                        self.kind
                    )));
                }
                ch / gs
            }
            _ => self.groups,
        };
        if g == 0 || !ch.is_multiple_of(g) {
            return Err(Error::invalid_model(format!(
                "{:?}: {g} groups over {ch} channels",
                self.kind
            )));
        }
        Ok(g)
    }

    /// The layer on an NCHW map in the current scope (`weight`, `bias`, and `v`, `tau` or
    /// `running_var` as the layer has them); `apply_act` false is timm's `apply_act=False`.
    pub fn apply(&self, b: &mut Builder, x: &Value, ch: usize, apply_act: bool) -> Result<Value> {
        use EvoKind::*;
        let w = b.param("weight", &[ch], Init::Ones)?;
        let bias = b.param("bias", &[ch], Init::Zeros)?;
        let y = match self.kind {
            B0 | B1 | B2 if !apply_act => {
                // The buffer exists whatever apply_act; only the activation reads it.
                b.ignore_weight("running_var");
                x.clone()
            }
            B0 | B1 | B2 => {
                let var = b.param("running_var", &[ch], Init::Ones)?;
                let eps = b.scalar(self.eps);
                let left = b.op("Add", &[&var, &eps], vec![]);
                let left = b.op("Sqrt", &[&left], vec![]);
                let left = super::per_channel(b, &left, ch);
                let right = match self.kind {
                    B0 => {
                        let v = b.param("v", &[ch], Init::Ones)?;
                        let v = super::per_channel(b, &v, ch);
                        let xv = b.op("Mul", &[x, &v], vec![]);
                        let s = instance_stat(b, x, self.eps, true);
                        b.op("Add", &[&xv, &s], vec![])
                    }
                    B1 => {
                        let one = b.scalar(1.0);
                        let x1 = b.op("Add", &[x, &one], vec![]);
                        let r = instance_stat(b, x, self.eps, false);
                        b.op("Mul", &[&x1, &r], vec![])
                    }
                    _ => {
                        let r = instance_stat(b, x, self.eps, false);
                        b.op("Sub", &[&r, x], vec![])
                    }
                };
                let d = b.op("Max", &[&right, &left], vec![]);
                b.op("Div", &[x, &d], vec![])
            }
            S0 | S0a | S1 | S1a | S2 | S2a => {
                let groups = self.groups_for(ch)?;
                // S0, S1 and S2 are the plain affine without their activation; the `a` forms
                // divide by the group statistic whatever apply_act.
                let normalise = apply_act || matches!(self.kind, S0a | S1a | S2a);
                let num = match self.kind {
                    S0 | S0a if apply_act => {
                        let v = b.param("v", &[ch], Init::Ones)?;
                        let v = super::per_channel(b, &v, ch);
                        let xv = b.op("Mul", &[x, &v], vec![]);
                        let s = b.op("Sigmoid", &[&xv], vec![]);
                        b.op("Mul", &[x, &s], vec![])
                    }
                    S1 | S1a | S2 | S2a if apply_act => match self.act {
                        Some(a) => super::act(b, a, x)?,
                        None => x.clone(),
                    },
                    _ => x.clone(),
                };
                if normalise {
                    let std = matches!(self.kind, S0 | S0a | S1 | S1a);
                    group_divide(b, &num, x, groups, self.eps, std)
                } else {
                    num
                }
            }
            FrnTlu | FrnAct => {
                // x * rsqrt(mean(x², HW) + eps)
                let r = instance_stat(b, x, self.eps, false);
                b.op("Div", &[x, &r], vec![])
            }
        };
        let wc = super::per_channel(b, &w, ch);
        let y = b.op("Mul", &[&y, &wc], vec![]);
        let bc = super::per_channel(b, &bias, ch);
        let mut y = b.op("Add", &[&y, &bc], vec![]);
        match self.kind {
            FrnTlu if apply_act => {
                let tau = b.param("tau", &[ch], Init::Zeros)?;
                let tau = super::per_channel(b, &tau, ch);
                y = b.op("Max", &[&y, &tau], vec![]);
            }
            FrnAct if apply_act => {
                if let Some(a) = self.act {
                    y = super::act(b, a, &y)?;
                }
            }
            _ => {}
        }
        if let Some(s) = b.spatial(x).cloned() {
            b.assign_spatial(&y, s);
        }
        Ok(y)
    }
}

/// Per sample and channel over H, W: `sqrt(var + eps)` (`instance_std`, biased variance) or
/// `sqrt(mean(x²) + eps)` (`instance_rms`), shaped `[N, C, 1, 1]`.
fn instance_stat(b: &mut Builder, x: &Value, eps: f32, centred: bool) -> Value {
    stat(b, x, &[2, 3], eps, centred)
}

/// `sqrt(stat + eps)` over `axes` (kept), where stat is the biased variance or the mean square.
fn stat(b: &mut Builder, x: &Value, axes: &[i64], eps: f32, centred: bool) -> Value {
    let d = if centred {
        let m = super::reduce_mean(b, x, axes, true);
        b.op("Sub", &[x, &m], vec![])
    } else {
        x.clone()
    };
    let sq = b.op("Mul", &[&d, &d], vec![]);
    let var = super::reduce_mean(b, &sq, axes, true);
    let e = b.scalar(eps);
    let v = b.op("Add", &[&var, &e], vec![]);
    b.op("Sqrt", &[&v], vec![])
}

/// `num / group_std(x)` (or `group_rms`): the statistic of `x` over each sample's groups of
/// `C / groups` channels and all positions, broadcast back over the group.
fn group_divide(
    b: &mut Builder,
    num: &Value,
    x: &Value,
    groups: usize,
    eps: f32,
    centred: bool,
) -> Value {
    let shape = b.op("Shape", &[x], vec![]);
    let g = super::reshape(b, x, &[0, groups as i64, -1]);
    let s = stat(b, &g, &[2], eps, centred);
    let n = super::reshape(b, num, &[0, groups as i64, -1]);
    let y = b.op("Div", &[&n, &s], vec![]);
    b.op("Reshape", &[&y, &shape], vec![])
}
