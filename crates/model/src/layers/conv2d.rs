//! `conv2d`: 2-D convolution over `[channels, height, width]` (`torch.nn.Conv2d`).

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::Device;
use modelforge_spec::Padding;

use super::{Activation, TensorVisitor};

/// The options of a convolution, as written in the spec.
pub(crate) struct Options {
    /// Output channels.
    pub filters: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride in both directions.
    pub stride: usize,
    /// Zero padding.
    pub padding: Padding,
    /// Whether it adds a bias.
    pub bias: bool,
}

/// A convolution from `input[0]` channels.
pub(crate) fn init(input: &[usize], o: Options, device: &Device) -> Conv2d {
    let pad = o.padding.pixels(o.kernel);
    Conv2dConfig::new([input[0], o.filters], [o.kernel, o.kernel])
        .with_stride([o.stride, o.stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(o.bias)
        .init(device)
}

/// The convolution of a `[batch, c, h, w]` batch.
pub(crate) fn forward(c: &Conv2d, x: Activation) -> Activation {
    match x {
        Activation::R4(t) => Activation::R4(c.forward(t)),
        other => unreachable!("conv2d takes rank 4, got {:?}", other.dims()),
    }
}

/// `weight` `[out, in, k, k]` and `bias`.
pub(crate) fn tensors(mut c: Conv2d, v: &mut impl TensorVisitor) -> Result<Conv2d, String> {
    c.weight = v.param("weight", c.weight, false)?;
    c.bias = c.bias.map(|b| v.param("bias", b, false)).transpose()?;
    Ok(c)
}
