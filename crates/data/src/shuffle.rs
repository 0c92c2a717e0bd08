//! Seeded, platform-independent shuffling: the order of an epoch depends only on
//! the seed and the epoch number, so a resumed run sees exactly the same order.

pub use modelforge_spec::seed::{Rng, mix};

/// A permutation of `0..n` for a seed and an epoch (Fisher–Yates).
pub fn permutation(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(mix(seed, epoch));
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_reproducible_and_complete() {
        let a = permutation(7, 3, 100);
        assert_eq!(a, permutation(7, 3, 100));
        assert_ne!(a, permutation(7, 4, 100));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }
}
