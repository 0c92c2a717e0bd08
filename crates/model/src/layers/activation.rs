//! `relu`, `leaky_relu`, `gelu`, `tanh`, `sigmoid`, `silu` and `softmax`: parameter-free functions.

use burn::tensor::activation;
use modelforge_spec::{GeluForm, LayerSpec};

use super::{Activation, each_rank};

/// An activation function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Function {
    /// max(x, 0).
    Relu,
    /// x if x > 0 else slope·x.
    LeakyRelu(f64),
    /// Gaussian error linear unit (exact, erf form).
    Gelu,
    /// Gaussian error linear unit, tanh approximation (GPT-2's).
    GeluTanh,
    /// Hyperbolic tangent.
    Tanh,
    /// Logistic sigmoid.
    Sigmoid,
    /// x · sigmoid(x).
    Silu,
    /// Softmax over the last axis.
    Softmax,
}

impl Function {
    /// The function of an activation layer.
    pub(crate) fn of(layer: &LayerSpec) -> Function {
        match layer {
            LayerSpec::Relu {} => Function::Relu,
            LayerSpec::LeakyRelu { slope } => Function::LeakyRelu(*slope),
            LayerSpec::Gelu { approximate } => match approximate {
                GeluForm::None => Function::Gelu,
                GeluForm::Tanh => Function::GeluTanh,
            },
            LayerSpec::Tanh {} => Function::Tanh,
            LayerSpec::Sigmoid {} => Function::Sigmoid,
            LayerSpec::Silu {} => Function::Silu,
            LayerSpec::Softmax {} => Function::Softmax,
            other => unreachable!("{} is not an activation function", other.kind()),
        }
    }

    /// Applies the function.
    pub(crate) fn forward(self, x: Activation) -> Activation {
        match self {
            Function::Relu => each_rank!(x, t => activation::relu(t)),
            Function::LeakyRelu(s) => each_rank!(x, t => activation::leaky_relu(t, s)),
            Function::Gelu => each_rank!(x, t => crate::kernels::gelu(t)),
            Function::GeluTanh => each_rank!(x, t => activation::gelu_approximate(t)),
            Function::Tanh => each_rank!(x, t => activation::tanh(t)),
            Function::Sigmoid => each_rank!(x, t => activation::sigmoid(t)),
            Function::Silu => each_rank!(x, t => activation::silu(t)),
            Function::Softmax => match x {
                Activation::R2(t) => Activation::R2(activation::softmax(t, 1)),
                Activation::R3(t) => Activation::R3(activation::softmax(t, 2)),
                Activation::R4(t) => Activation::R4(activation::softmax(t, 3)),
                Activation::Ids(_) => unreachable!("the checked graph feeds softmax floats"),
            },
        }
    }
}
