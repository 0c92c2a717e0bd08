//! `dropout`: zeroes activations with probability `rate` while training.

use burn::nn::{Dropout, DropoutConfig};

use super::{Activation, each_rank};

/// Dropout at `rate`.
pub(crate) fn init(rate: f64) -> Dropout {
    DropoutConfig::new(rate).init()
}

/// Drops (in training) or passes (in inference) every value.
pub(crate) fn forward(d: &Dropout, x: Activation) -> Activation {
    each_rank!(x, t => d.forward(t))
}
