//! `positional_embedding`: a learned vector per position, added to a `[len, dim]`
//! sequence (GPT-2's `wpe`).

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

use super::{Activation, Context, TensorVisitor};

/// The position table.
#[derive(Module, Debug)]
pub struct PositionalEmbedding {
    /// `[context, dim]`.
    pub weight: Param<Tensor<2>>,
}

/// A `[context, dim]` table drawn from N(0, 0.02), as GPT-2 starts its positions.
pub(crate) fn init(context: usize, input: &[usize], device: &Device) -> PositionalEmbedding {
    let dim = *input.last().expect("a [len, dim] sequence");
    PositionalEmbedding {
        weight: Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        }
        .init([context, dim], device),
    }
}

/// Adds to each sequence the vectors of its positions (`offset..offset + len`, where each
/// row's offset comes from the context).
pub(crate) fn forward(p: &PositionalEmbedding, x: Activation, ctx: &Context) -> Activation {
    match x {
        Activation::R3(t) => {
            let [batch, len, _] = t.dims();
            let table = |offset| p.weight.val().narrow(0, offset, len).unsqueeze::<3>();
            let positions = match ctx.groups(batch).as_slice() {
                [(_, offset)] => table(*offset),
                rows => Tensor::cat(rows.iter().map(|(_, offset)| table(*offset)).collect(), 0),
            };
            Activation::R3(t + positions)
        }
        other => unreachable!(
            "positional_embedding takes [batch, len, dim], got {:?}",
            other.dims()
        ),
    }
}

/// `weight` `[context, dim]`.
pub(crate) fn tensors(
    mut p: PositionalEmbedding,
    v: &mut impl TensorVisitor,
) -> Result<PositionalEmbedding, String> {
    p.weight = v.param("weight", p.weight, false)?;
    Ok(p)
}
