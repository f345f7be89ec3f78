//! timm's building blocks (`timm.layers`), each written once. Every function works in the
//! builder's current scope: it asks for `"weight"`, `"bias"`, `"fc1.weight"`, … as timm names
//! them inside the module, so a family calls `conv2d(&mut b.scope("conv1"), &x, c)`.

pub mod act;
pub mod adaptive_pool;
pub mod attention;
pub mod attention_bias;
pub mod attention_pool;
pub mod bottleneck_attn;
pub mod classifier;
pub mod conv;
pub mod efficientnet_blocks;
pub mod efficientnet_builder;
pub mod encoder_tower;
pub mod evo_norm;
pub mod ghost;
pub mod grid_window;
pub mod halo_attn;
pub mod heads;
pub mod lambda_layer;
pub mod mlp;
pub mod nas_cell;
pub mod non_local_attn;
pub mod norm;
pub mod ops;
pub mod patch_embed;
pub mod pool;
pub mod pos_embed;
pub mod pos_embed_rel;
pub mod reparam;
pub mod resnet_parts;
pub mod resnetv2_parts;
pub mod rope;
pub mod se;
pub mod selective_kernel;
pub mod split_attn;
pub mod sr_attention;
pub mod std_conv;
pub mod upsample;
pub mod vision_transformer;
pub mod window;

pub use act::act;
pub use conv::{conv2d, conv_bn, conv_norm_act, Conv, Pad};
pub use norm::{batch_norm, group_norm, layer_norm, layer_norm_2d, rms_norm, rms_norm_2d, Norm};
pub use ops::*;

/// timm's `make_divisible(v, divisor, min_value=None, round_limit=.9)`.
pub fn make_divisible(v: f64, divisor: usize, round_limit: f64) -> usize {
    let d = divisor as f64;
    let mut n = (((v + d / 2.0) / d).floor() * d).max(d);
    if n < round_limit * v {
        n += d;
    }
    n as usize
}

/// Python's `round()`: halves to even.
pub fn py_round(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// timm's normalisation constants (`timm.data.constants`).
pub mod constants {
    pub const IMAGENET_DEFAULT_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
    pub const IMAGENET_DEFAULT_STD: [f64; 3] = [0.229, 0.224, 0.225];
    pub const IMAGENET_INCEPTION_MEAN: [f64; 3] = [0.5, 0.5, 0.5];
    pub const IMAGENET_INCEPTION_STD: [f64; 3] = [0.5, 0.5, 0.5];
    pub const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
    pub const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_divisible_matches_timm() {
        // timm: make_divisible(32 * 0.25, 8) == 8; (24 * 1.1) -> 24+? : 26.4 -> 24 < 0.9*26.4=23.76? no -> 24
        assert_eq!(make_divisible(8.0, 8, 0.9), 8);
        assert_eq!(make_divisible(26.4, 8, 0.9), 24);
        assert_eq!(make_divisible(20.0, 8, 0.9), 24);
        assert_eq!(make_divisible(3.0, 8, 0.9), 8);
        // round_limit 0 (SE rd channels): never bumped.
        assert_eq!(make_divisible(100.0, 8, 0.0), 104);
    }

    #[test]
    fn py_round_halves_to_even() {
        assert_eq!(py_round(2.5), 2.0);
        assert_eq!(py_round(3.5), 4.0);
        assert_eq!(py_round(-2.5), -2.0);
        assert_eq!(py_round(2.4), 2.0);
    }
}
