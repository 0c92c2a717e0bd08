//! `dropout`: zeroes activations with probability `rate` while training. The masks are
//! drawn from the calling thread's own stream ([`with_stream`]), so data-parallel workers
//! drop concurrently, each reproducibly, instead of taking turns at the engine's one
//! process-wide generator.

use std::cell::Cell;

use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Distribution, Tensor, TensorData};
use modelforge_spec::seed::Rng;

use super::{Activation, each_rank};

thread_local! {
    /// This thread's dropout stream, while [`with_stream`] runs.
    static STREAM: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's dropout masks drawn from the stream of `seed`: the same seed
/// gives the same masks in the same order, whatever other threads draw meanwhile. The
/// thread's earlier stream (if any) comes back afterwards, also after a panic.
pub fn with_stream<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<u64>);
    impl Drop for Restore {
        fn drop(&mut self) {
            STREAM.set(self.0);
        }
    }
    let _restore = Restore(STREAM.replace(Some(seed)));
    f()
}

/// Dropout at `rate`.
pub(crate) fn init(rate: f64) -> Dropout {
    DropoutConfig::new(rate).init()
}

/// Drops (in training) or passes (in inference) every value.
pub(crate) fn forward(d: &Dropout, x: Activation) -> Activation {
    each_rank!(x, t => drop(d, t))
}

/// Zeroes each value with probability `d.prob` and scales the rest by 1 / (1 − prob), on an
/// autodiff device of a module in training; passes the values otherwise.
pub(crate) fn drop<const D: usize>(d: &Dropout, input: Tensor<D>) -> Tensor<D> {
    if !d.training.is_enabled() || !input.device().is_autodiff() || d.prob == 0.0 {
        return input;
    }
    let keep = 1.0 - d.prob;
    let mask = match STREAM.get() {
        Some(state) => {
            let mut bits = Rng::new(state);
            let values = mask(&mut bits, input.shape().num_elements(), keep);
            STREAM.set(Some(bits.next_u64()));
            Tensor::from_data(TensorData::new(values, input.shape()), &input.device())
        }
        // Outside a stream (a caller that did not ask for reproducible masks): the engine's
        // generator.
        None => input.random_like(Distribution::Bernoulli(keep)) * (1.0 / keep),
    };
    input * mask
}

/// `n` values: 1 / keep with probability `keep`, else 0 (the top 53 bits of each draw
/// against `keep`).
fn mask(bits: &mut Rng, n: usize, keep: f64) -> Vec<f32> {
    let threshold = (keep * (1u64 << 53) as f64) as u64;
    let scale = (1.0 / keep) as f32;
    (0..n)
        .map(|_| match bits.next_u64() >> 11 < threshold {
            true => scale,
            false => 0.0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn dropped(seed: Option<u64>) -> Vec<f32> {
        let d = init(0.25);
        let x = Tensor::<2>::ones([64, 64], &Device::flex().autodiff());
        let run = || drop(&d, x.clone()).into_data().try_to_vec::<f32>().unwrap();
        match seed {
            Some(s) => with_stream(s, run),
            None => run(),
        }
    }

    #[test]
    fn a_stream_drops_reproducibly_at_its_rate_and_keeps_the_mean() {
        let a = dropped(Some(3));
        assert_eq!(a, dropped(Some(3)));
        assert_ne!(a, dropped(Some(4)));
        let zeros = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
        assert!((zeros - 0.25).abs() < 0.03, "{zeros}");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
        // Two calls in one stream draw different masks; the stream is gone afterwards.
        let d = init(0.5);
        let x = Tensor::<2>::ones([8, 8], &Device::flex().autodiff());
        let (first, second) = with_stream(9, || (drop(&d, x.clone()), drop(&d, x.clone())));
        assert_ne!(
            first.into_data().try_to_vec::<f32>().unwrap(),
            second.into_data().try_to_vec::<f32>().unwrap()
        );
        assert_eq!(STREAM.get(), None);
    }

    #[test]
    fn threads_draw_their_own_streams_concurrently() {
        let alone = dropped(Some(11));
        let together: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| dropped(Some(11)))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(together.iter().all(|t| *t == alone));
        // Inference passes values unchanged.
        let d = init(0.5);
        let x = Tensor::<2>::ones([4, 4], &Device::flex());
        assert_eq!(
            drop(&d, x).into_data().try_to_vec::<f32>().unwrap(),
            vec![1.0; 16]
        );
    }
}
