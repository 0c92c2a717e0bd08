//! `swiglu`: LLaMA's gated feed-forward, `down(silu(gate(x)) · up(x))`.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, activation};

use super::{Activation, TensorVisitor};

/// The three projections.
#[derive(Module, Debug)]
pub struct Swiglu {
    /// `dim → hidden`, through SiLU.
    pub gate: Linear,
    /// `dim → hidden`.
    pub up: Linear,
    /// `hidden → dim`.
    pub down: Linear,
}

/// Projections from the last axis of `input` to `hidden` and back.
pub(crate) fn init(input: &[usize], hidden: usize, bias: bool, device: &Device) -> Swiglu {
    let dim = *input.last().expect("rank ≥ 1");
    let linear = |i, o| LinearConfig::new(i, o).with_bias(bias).init(device);
    Swiglu {
        gate: linear(dim, hidden),
        up: linear(dim, hidden),
        down: linear(hidden, dim),
    }
}

/// The gated feed-forward of each position.
pub(crate) fn forward(s: &Swiglu, x: Activation) -> Activation {
    match x {
        Activation::R3(t) => {
            let gated = activation::silu(s.gate.forward(t.clone())) * s.up.forward(t);
            Activation::R3(s.down.forward(gated))
        }
        other => unreachable!("swiglu takes [batch, len, dim], got {:?}", other.dims()),
    }
}

/// `gate_proj`, `up_proj` and `down_proj` (weights `[out, in]`, as Hugging Face LLaMA names them).
pub(crate) fn tensors(mut s: Swiglu, v: &mut impl TensorVisitor) -> Result<Swiglu, String> {
    s.gate = super::dense::tensors_under("gate_proj", s.gate, v)?;
    s.up = super::dense::tensors_under("up_proj", s.up, v)?;
    s.down = super::dense::tensors_under("down_proj", s.down, v)?;
    Ok(s)
}
