//! timm's `create_classifier(..., use_conv=True)`: the global pool keeps a `[N, C, 1, 1]` map and
//! the classifier is a 1x1 conv with bias (DLA, DPN), flattened after it.

use super::pool::{global_pool_map, PoolKind};
use crate::error::{Error, Result};
use crate::graph::{Attr, Builder, Init, Value};

/// Pool, then (unless `features` or no classes) the 1x1 conv `name.weight` `[classes, C', 1, 1]`
/// and `name.bias`, flattened. `features` returns the flattened pool (timm's `pre_logits`).
/// Returns the output and its width.
#[allow(clippy::too_many_arguments)]
pub fn conv_classifier(
    b: &mut Builder,
    x: &Value,
    channels: usize,
    pool: PoolKind,
    name: &str,
    classes: usize,
    features: bool,
    init: Init,
) -> Result<(Value, usize)> {
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "global_pool '' (an unpooled 1x1-conv classifier map) is not supported by native graphs",
        ));
    }
    let map = global_pool_map(b, x, pool);
    let width = channels * pool.multiplier();
    if features || classes == 0 {
        return Ok((super::flatten(b, &map, 1), width));
    }
    let s = &mut b.scope(name);
    let w = s.param("weight", &[classes, width, 1, 1], init)?;
    let bias = s.param("bias", &[classes], Init::Zeros)?;
    let y = s.op(
        "Conv",
        &[&map, &w, &bias],
        vec![("kernel_shape", Attr::Ints(vec![1, 1]))],
    );
    Ok((super::flatten(s, &y, 1), classes))
}
