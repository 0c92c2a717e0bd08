//! `dense`: a fully connected layer on the last axis (`torch.nn.Linear`).

use burn::nn::{Linear, LinearConfig};
use burn::tensor::Device;

use super::{Activation, TensorVisitor, each_rank};

/// A `[in → units]` linear map on the last axis of `input`.
pub(crate) fn init(input: &[usize], units: usize, bias: bool, device: &Device) -> Linear {
    LinearConfig::new(*input.last().expect("rank ≥ 1"), units)
        .with_bias(bias)
        .init(device)
}

/// `x · W + b` on the last axis.
pub(crate) fn forward(l: &Linear, x: Activation) -> Activation {
    each_rank!(x, t => l.forward(t))
}

/// `weight` (stored `[out, in]` as PyTorch does) and `bias`.
pub(crate) fn tensors(l: Linear, v: &mut impl TensorVisitor) -> Result<Linear, String> {
    tensors_under("", l, v)
}

/// A linear map's tensors under `{part}.weight` and `{part}.bias` (or the bare names when
/// `part` is empty): the projections inside attention and feed-forward layers.
pub(crate) fn tensors_under(
    part: &str,
    mut l: Linear,
    v: &mut impl TensorVisitor,
) -> Result<Linear, String> {
    let name = |t: &str| match part {
        "" => t.to_string(),
        _ => format!("{part}.{t}"),
    };
    l.weight = v.param(&name("weight"), l.weight, true)?;
    l.bias = l
        .bias
        .map(|b| v.param(&name("bias"), b, false))
        .transpose()?;
    Ok(l)
}
