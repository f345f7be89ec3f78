//! `nn.Upsample` (timm models use it directly; `timm.layers` has no wrapper).

use crate::error::Result;
use crate::graph::spatial::Step;
use crate::graph::{Attr, Builder, Value};

/// `nn.Upsample(scale_factor=factor, mode='nearest')` on NCHW: output `n·factor`, source pixel
/// `floor(dst / factor)`.
pub fn upsample_nearest(b: &mut Builder, x: &Value, factor: usize, ch: usize) -> Result<Value> {
    let f = factor as f32;
    let scales = b.const_f32(vec![1.0, 1.0, f, f], &[4]);
    let none = b.none();
    let y = b.op(
        "Resize",
        &[x, &none, &scales],
        vec![
            ("mode", Attr::Str("nearest".into())),
            (
                "coordinate_transformation_mode",
                Attr::Str("asymmetric".into()),
            ),
            ("nearest_mode", Attr::Str("floor".into())),
        ],
    );
    b.set_spatial(&y, x, Step::Up { factor }, ch)?;
    Ok(y)
}
