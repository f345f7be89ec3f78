//! A small seeded generator for `pretrained=false` models: deterministic across platforms, so a
//! seed always gives the same network.

use super::Init;

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// SplitMix64.
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        // Box-Muller; 1 - u keeps the log argument in (0, 1].
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Values for a parameter of `shape`, following timm's init for that kind of parameter;
    /// `None` when the memory cannot be had (an allocation failure must not abort the host).
    pub fn try_init(&mut self, init: Init, shape: &[usize]) -> Option<Vec<f32>> {
        let n: usize = shape.iter().product();
        let mut v = Vec::new();
        v.try_reserve_exact(n).ok()?;
        self.fill(init, shape, &mut v);
        Some(v)
    }

    /// Values for a parameter of `shape`, following timm's init for that kind of parameter.
    pub fn init(&mut self, init: Init, shape: &[usize]) -> Vec<f32> {
        let mut v = Vec::with_capacity(shape.iter().product());
        self.fill(init, shape, &mut v);
        v
    }

    fn fill(&mut self, init: Init, shape: &[usize], out: &mut Vec<f32>) {
        let n: usize = shape.iter().product();
        // PyTorch's fan computation: dim 0 is out, dim 1 is in, the rest is the receptive field.
        let receptive: usize = shape.iter().skip(2).product::<usize>().max(1);
        let fan_in = shape.get(1).copied().unwrap_or(1) * receptive;
        let fan_out = shape.first().copied().unwrap_or(1) * receptive;
        match init {
            Init::Zeros => out.resize(n, 0.0),
            Init::Ones => out.resize(n, 1.0),
            Init::Const(c) => out.resize(n, c),
            Init::Normal(std) => out.extend((0..n).map(|_| (self.normal() * std as f64) as f32)),
            Init::TruncNormal(std) => out.extend((0..n).map(|_| loop {
                let x = self.normal();
                if x.abs() <= 2.0 {
                    break (x * std as f64) as f32;
                }
            })),
            Init::KaimingFanOut => {
                let std = (2.0 / fan_out.max(1) as f64).sqrt();
                out.extend((0..n).map(|_| (self.normal() * std) as f32))
            }
            Init::DefaultUniform => {
                let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
                out.extend((0..n).map(|_| ((self.uniform() * 2.0 - 1.0) * bound) as f32))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_and_sane_scale() {
        let a = Rng::new(7).init(Init::KaimingFanOut, &[64, 3, 7, 7]);
        let b = Rng::new(7).init(Init::KaimingFanOut, &[64, 3, 7, 7]);
        let c = Rng::new(8).init(Init::KaimingFanOut, &[64, 3, 7, 7]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let var = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / a.len() as f64;
        let expected = 2.0 / (64.0 * 49.0);
        assert!((var / expected - 1.0).abs() < 0.15, "{var} vs {expected}");
        assert!(Rng::new(1)
            .init(Init::TruncNormal(0.02), &[1000])
            .iter()
            .all(|x| x.abs() <= 0.04));
    }
}
