//! `flatten` and `reshape`: a new per-sample shape for the same values.

use super::Activation;

/// Reshapes each sample of the batch to `sample` (rank 1 to 3).
pub(crate) fn forward(x: Activation, sample: &[usize]) -> Activation {
    let batch = x.dims()[0];
    let float = match x {
        Activation::R2(t) => t,
        Activation::R3(t) => t.reshape([batch as i64, -1]),
        Activation::R4(t) => t.reshape([batch as i64, -1]),
        Activation::Ids(_) => unreachable!("the checked graph never reshapes ids"),
    };
    match *sample {
        [a] => Activation::R2(float.reshape([batch, a])),
        [a, b] => Activation::R3(float.reshape([batch, a, b])),
        [a, b, c] => Activation::R4(float.reshape([batch, a, b, c])),
        _ => unreachable!("the checked graph keeps per-sample rank at most 3"),
    }
}
