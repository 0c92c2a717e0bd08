//! SmoothGrad's Gaussian noise from a documented generator, so that another tool can draw
//! the same noise from the same seed: SplitMix64 gives uniform numbers, Box–Muller turns
//! each pair into two standard normal ones.

use modelforge_spec::seed::Rng;

/// A stream of standard normal numbers.
pub struct Gaussian {
    bits: Rng,
    spare: Option<f64>,
}

impl Gaussian {
    /// The stream of `seed`.
    pub fn new(seed: u64) -> Gaussian {
        Gaussian {
            bits: Rng::new(seed),
            spare: None,
        }
    }

    /// A uniform number in (0, 1): the top 53 bits, offset by half a unit.
    fn uniform(&mut self) -> f64 {
        ((self.bits.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// The next standard normal number: √(−2 ln u₁)·cos(2πu₂), then its sine twin.
    pub fn draw(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        self.spare = Some(r * angle.sin());
        r * angle.cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_fixed_by_its_seed_and_standard_normal() {
        let draw = |seed| {
            let mut g = Gaussian::new(seed);
            (0..20_000).map(|_| g.draw()).collect::<Vec<_>>()
        };
        let a = draw(3);
        assert_eq!(a, draw(3));
        assert_ne!(a, draw(4));
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
