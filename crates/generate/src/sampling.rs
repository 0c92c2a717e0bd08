//! Choosing the next token from logits: greedy at temperature 0, otherwise temperature,
//! top-k and top-p (nucleus) filtering and a seeded draw.

use modelforge_data::Rng;
pub use modelforge_text::Sampling;

/// Draws tokens for one generation.
pub struct Sampler {
    settings: Sampling,
    rng: Rng,
}

impl Sampler {
    /// A sampler seeded from the settings.
    pub fn new(settings: &Sampling) -> Sampler {
        Sampler {
            settings: settings.clone(),
            rng: Rng::new(settings.seed),
        }
    }

    /// The next token for one position's logits.
    pub fn sample(&mut self, logits: &[f32]) -> usize {
        let s = &self.settings;
        let greedy = || {
            logits
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                )
                .0
        };
        if s.temperature == 0.0 || s.top_k == 1 {
            return greedy();
        }
        // Most likely first; ties by id, so the order does not depend on the sort.
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if s.top_k > 0 {
            order.truncate(s.top_k);
        }
        let top = logits[order[0]] as f64;
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] as f64 - top) / s.temperature).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if s.top_p < 1.0 {
            let mut mass = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    mass += p;
                    mass >= s.top_p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            order.truncate(keep);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        // A uniform draw in [0, 1) with 53 bits.
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let mut mass = 0.0;
        for (&i, p) in order.iter().zip(&probs) {
            mass += p;
            if u < mass {
                return i;
            }
        }
        *order.last().expect("at least one token")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(f: impl FnOnce(&mut Sampling)) -> Sampler {
        let mut s = Sampling::default();
        f(&mut s);
        Sampler::new(&s)
    }

    #[test]
    fn temperature_zero_is_greedy() {
        let mut s = sampler(|s| s.temperature = 0.0);
        assert_eq!(s.sample(&[0.1, 3.0, 2.9, -1.0]), 1);
    }

    #[test]
    fn top_k_and_top_p_never_pick_outside_their_set() {
        let logits = [2.0f32, 1.9, 1.8, 0.0, -1.0, -2.0];
        let mut k = sampler(|s| s.top_k = 2);
        let mut p = sampler(|s| s.top_p = 0.5);
        for _ in 0..500 {
            assert!(k.sample(&logits) < 2);
            assert!(
                p.sample(&logits) < 2,
                "0.5 of the mass is in the two most likely"
            );
        }
    }

    #[test]
    fn draws_follow_the_softmax_and_repeat_with_the_seed() {
        let logits = [0.0f32, (3.0f32).ln()];
        let mut s = sampler(|s| s.seed = 7);
        let draws: Vec<usize> = (0..4000).map(|_| s.sample(&logits)).collect();
        let ones = draws.iter().filter(|&&d| d == 1).count() as f64 / 4000.0;
        assert!((ones - 0.75).abs() < 0.03, "{ones}");
        let mut again = sampler(|s| s.seed = 7);
        assert!(draws.iter().all(|&d| d == again.sample(&logits)));
        // A high temperature flattens the distribution.
        let mut hot = sampler(|s| s.temperature = 100.0);
        let hot_ones = (0..4000).filter(|_| hot.sample(&logits) == 1).count() as f64 / 4000.0;
        assert!((hot_ones - 0.5).abs() < 0.04, "{hot_ones}");
    }
}
