//! `max_pool2d` and `avg_pool2d`: square-window pooling (`torch.nn.MaxPool2d`, `AvgPool2d`).

use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};

use super::Activation;

/// Max pooling; the stride defaults to the window.
pub(crate) fn init_max(size: usize, stride: Option<usize>) -> MaxPool2d {
    MaxPool2dConfig::new([size, size])
        .with_strides([stride.unwrap_or(size); 2])
        .init()
}

/// Average pooling; the stride defaults to the window.
pub(crate) fn init_avg(size: usize, stride: Option<usize>) -> AvgPool2d {
    AvgPool2dConfig::new([size, size])
        .with_strides([stride.unwrap_or(size); 2])
        .init()
}

/// Max pooling of a `[batch, c, h, w]` batch.
pub(crate) fn forward_max(p: &MaxPool2d, x: Activation) -> Activation {
    match x {
        Activation::R4(t) => Activation::R4(p.forward(t)),
        other => unreachable!("pooling takes rank 4, got {:?}", other.dims()),
    }
}

/// Average pooling of a `[batch, c, h, w]` batch.
pub(crate) fn forward_avg(p: &AvgPool2d, x: Activation) -> Activation {
    match x {
        Activation::R4(t) => Activation::R4(p.forward(t)),
        other => unreachable!("pooling takes rank 4, got {:?}", other.dims()),
    }
}
