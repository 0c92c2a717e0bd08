//! `rms_norm`: root-mean-square normalisation over the last axis (LLaMA's `RMSNorm`).

use burn::nn::{RmsNorm, RmsNormConfig};
use burn::tensor::Device;

use super::{Activation, TensorVisitor, each_rank};

/// A scale over the last axis of `input`, starting at 1.
pub(crate) fn init(input: &[usize], epsilon: f64, device: &Device) -> RmsNorm {
    RmsNormConfig::new(*input.last().expect("rank ≥ 1"))
        .with_epsilon(epsilon)
        .init(device)
}

/// x / sqrt(mean(x²) + ε) · weight.
pub(crate) fn forward(n: &RmsNorm, x: Activation) -> Activation {
    each_rank!(x, t => n.forward(t))
}

/// `weight`.
pub(crate) fn tensors(mut n: RmsNorm, v: &mut impl TensorVisitor) -> Result<RmsNorm, String> {
    n.gamma = v.param("weight", n.gamma, false)?;
    Ok(n)
}
