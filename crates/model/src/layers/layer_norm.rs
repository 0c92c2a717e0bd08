//! `layer_norm`: normalisation over the last axis (`torch.nn.LayerNorm`).

use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::Device;

use super::{Activation, TensorVisitor, each_rank};

/// A scale and shift over the last axis of `input`.
pub(crate) fn init(input: &[usize], epsilon: f64, device: &Device) -> LayerNorm {
    LayerNormConfig::new(*input.last().expect("rank ≥ 1"))
        .with_epsilon(epsilon)
        .init(device)
}

/// Normalises each position's features.
pub(crate) fn forward(n: &LayerNorm, x: Activation) -> Activation {
    each_rank!(x, t => n.forward(t))
}

/// `weight` and `bias`.
pub(crate) fn tensors(mut n: LayerNorm, v: &mut impl TensorVisitor) -> Result<LayerNorm, String> {
    n.gamma = v.param("weight", n.gamma, false)?;
    n.beta = n.beta.map(|b| v.param("bias", b, false)).transpose()?;
    Ok(n)
}
