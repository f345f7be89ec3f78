//! `nn.Upsample` (timm models use it directly; `timm.layers` has no wrapper).

use crate::error::Result;
use crate::graph::spatial::Step;
use crate::graph::{Attr, Builder, Value};

/// ONNX Resize's attributes for PyTorch's `mode='nearest'`: source pixel `floor(dst · in / out)`.
fn nearest() -> Vec<(&'static str, Attr)> {
    vec![
        ("mode", Attr::Str("nearest".into())),
        (
            "coordinate_transformation_mode",
            Attr::Str("asymmetric".into()),
        ),
        ("nearest_mode", Attr::Str("floor".into())),
    ]
}

/// `F.interpolate(x, size=..., mode='nearest')` with `sizes` the whole NCHW output shape (an
/// int64 vector of four, e.g. another value's `Shape`).
pub fn resize_nearest_to(b: &mut Builder, x: &Value, sizes: &Value) -> Value {
    let none = b.none();
    b.op("Resize", &[x, &none, &none, sizes], nearest())
}

/// `nn.Upsample(scale_factor=factor, mode='nearest')` on NCHW: output `n·factor`, source pixel
/// `floor(dst / factor)`.
pub fn upsample_nearest(b: &mut Builder, x: &Value, factor: usize, ch: usize) -> Result<Value> {
    let f = factor as f32;
    let scales = b.const_f32(vec![1.0, 1.0, f, f], &[4]);
    let none = b.none();
    let y = b.op("Resize", &[x, &none, &scales], nearest());
    b.set_spatial(&y, x, Step::Up { factor }, ch)?;
    Ok(y)
}
