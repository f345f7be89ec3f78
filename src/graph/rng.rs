//! A small seeded generator for `pretrained=false` models: deterministic across platforms, so a
//! seed always gives the same network.

use super::Init;

pub struct Rng {
    state: u64,
    /// The second value of the last polar-method pair.
    spare: Option<f64>,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            spare: None,
        }
    }

    /// SplitMix64.
    #[inline(always)]
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    #[inline(always)]
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Marsaglia's polar method, both values of each pair used: one log and one square root per
    /// two values and no trigonometry. Drawing the weights is most of a bare model's build time.
    #[inline(always)]
    fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        loop {
            let u = self.uniform() * 2.0 - 1.0;
            let v = self.uniform() * 2.0 - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let f = (-2.0 * s.ln() / s).sqrt();
                self.spare = Some(v * f);
                return u * f;
            }
        }
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

    // Plain loops over a filled slice: iterator adaptors cost a call per value in the
    // unoptimised builds the test suite runs.
    fn fill(&mut self, init: Init, shape: &[usize], out: &mut Vec<f32>) {
        let n: usize = shape.iter().product();
        // PyTorch's fan computation: dim 0 is out, dim 1 is in, the rest is the receptive field.
        let receptive: usize = shape.iter().skip(2).product::<usize>().max(1);
        let fan_in = shape.get(1).copied().unwrap_or(1) * receptive;
        let fan_out = shape.first().copied().unwrap_or(1) * receptive;
        let fill = match init {
            Init::Zeros => 0.0,
            Init::Ones => 1.0,
            Init::Const(c) => c,
            _ => 0.0,
        };
        out.resize(n, fill);
        match init {
            Init::Zeros | Init::Ones | Init::Const(_) => {}
            Init::Normal(std) => {
                let std = std as f64;
                for x in out.iter_mut() {
                    *x = (self.normal() * std) as f32;
                }
            }
            Init::TruncNormal(std) => {
                let std = std as f64;
                for x in out.iter_mut() {
                    let mut z = self.normal();
                    while z.abs() > 2.0 {
                        z = self.normal();
                    }
                    *x = (z * std) as f32;
                }
            }
            Init::KaimingFanOut => {
                let std = (2.0 / fan_out.max(1) as f64).sqrt();
                for x in out.iter_mut() {
                    *x = (self.normal() * std) as f32;
                }
            }
            Init::DefaultUniform => {
                let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
                for x in out.iter_mut() {
                    *x = ((self.uniform() * 2.0 - 1.0) * bound) as f32;
                }
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
