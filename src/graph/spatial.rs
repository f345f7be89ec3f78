//! How a value's spatial size follows from the input's: the chain of strided convs and pools
//! between them, evaluated for any input size (feature-map shapes for `timm_model_output_shape`,
//! activation sizes for the budget, "input too small" before ONNX Runtime sees the graph).

use std::sync::Arc;

/// One spatial step along an axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A conv or pool window: `floor((n + pad - dilation·(k-1) - 1) / stride) + 1`, or the
    /// ceiling with `ceil` (PyTorch's `ceil_mode`).
    Window {
        k: usize,
        stride: usize,
        pad: usize,
        dilation: usize,
        ceil: bool,
    },
    /// TensorFlow "SAME": `ceil(n / stride)`.
    Same { stride: usize },
    /// Upsampling by an integer factor.
    Up { factor: usize },
}

impl Step {
    fn apply(self, n: i64) -> i64 {
        match self {
            Step::Window {
                k,
                stride,
                pad,
                dilation,
                ceil,
            } => {
                let s = stride as i64;
                let eff = n + pad as i64 - (dilation * (k - 1)) as i64 - 1;
                // PyTorch rounds toward -inf before the +1: a ceil-mode window larger than the
                // input still gives one output (AvgPool2d(2, 2, ceil_mode=True) on 1 -> 1).
                let num = if ceil { eff + s - 1 } else { eff };
                if num < 0 {
                    return 0;
                }
                let mut out = num / s + 1;
                // PyTorch: the last window must start inside the (left-padded) input.
                if ceil && (out - 1) * s >= n + (pad as i64) / 2 {
                    out -= 1;
                }
                out
            }
            Step::Same { stride } => (n + stride as i64 - 1) / stride as i64,
            Step::Up { factor } => n * factor as i64,
        }
    }
}

#[derive(Debug)]
struct Link {
    parent: Option<Arc<Link>>,
    step: Step,
}

/// A spatial size relative to the input (the same chain on both axes).
#[derive(Debug, Clone, Default)]
pub struct Spatial(Option<Arc<Link>>);

impl Spatial {
    /// The input's own size.
    pub fn input() -> Self {
        Spatial(None)
    }

    pub fn then(&self, step: Step) -> Self {
        Spatial(Some(Arc::new(Link {
            parent: self.0.clone(),
            step,
        })))
    }

    /// The size for an input of `n`; `None` when some layer's output would be empty.
    pub fn eval(&self, n: usize) -> Option<usize> {
        let mut steps = Vec::new();
        let mut cur = self.0.as_ref();
        while let Some(l) = cur {
            steps.push(l.step);
            cur = l.parent.as_ref();
        }
        let mut x = n as i64;
        for s in steps.into_iter().rev() {
            x = s.apply(x);
            if x <= 0 {
                return None;
            }
        }
        Some(x as usize)
    }

    /// The total stride (timm's `reduction`).
    pub fn reduction(&self) -> usize {
        let mut r = 1usize;
        let mut cur = self.0.as_ref();
        while let Some(l) = cur {
            match l.step {
                Step::Window { stride, .. } | Step::Same { stride } => r = r.saturating_mul(stride),
                Step::Up { factor } => r /= factor.max(1),
            }
            cur = l.parent.as_ref();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet_stem_sizes_match_pytorch() {
        let conv = Step::Window {
            k: 7,
            stride: 2,
            pad: 6,
            dilation: 1,
            ceil: false,
        };
        let pool = Step::Window {
            k: 3,
            stride: 2,
            pad: 2,
            dilation: 1,
            ceil: false,
        };
        let s = Spatial::input().then(conv).then(pool);
        assert_eq!(s.eval(224), Some(56));
        assert_eq!(s.eval(225), Some(57));
        assert_eq!(s.reduction(), 4);
        assert_eq!(
            Spatial::input().then(Step::Same { stride: 2 }).eval(225),
            Some(113)
        );
    }

    #[test]
    fn ceil_mode_drops_a_window_starting_in_the_padding() {
        // nn.AvgPool2d(2, 2, ceil_mode=True) on 7 -> 4; on 8 -> 4.
        let p = Step::Window {
            k: 2,
            stride: 2,
            pad: 0,
            dilation: 1,
            ceil: true,
        };
        assert_eq!(Spatial::input().then(p).eval(7), Some(4));
        assert_eq!(Spatial::input().then(p).eval(8), Some(4));
        assert_eq!(Spatial::input().then(p).eval(1), Some(1));
    }

    #[test]
    fn too_small_input_is_none() {
        let p = Step::Window {
            k: 16,
            stride: 16,
            pad: 0,
            dilation: 1,
            ceil: false,
        };
        assert_eq!(Spatial::input().then(p).eval(8), None);
    }
}

/// Every spatial chain a graph tracks: an input side fits when none of them maps it to nothing
/// (the shortcut and the branch of a block can shrink differently).
#[derive(Debug, Clone, Default)]
pub struct Fit(Vec<Spatial>);

impl Fit {
    pub fn push(&mut self, s: Spatial) {
        self.0.push(s);
    }

    pub fn fits(&self, n: usize) -> bool {
        self.0.iter().all(|s| s.eval(n).is_some())
    }

    /// The smallest side that fits (up to 8192).
    pub fn least(&self) -> usize {
        (1..=8192).find(|&n| self.fits(n)).unwrap_or(8192)
    }
}
