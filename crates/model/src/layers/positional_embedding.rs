//! `positional_embedding`: a learned vector per position, added to a `[len, dim]`
//! sequence (GPT-2's `wpe`).

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Int, Tensor, TensorData};

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
            let [batch, len, dim] = t.dims();
            let positions = match ctx.groups(batch).as_slice() {
                [(_, offset)] => p.weight.val().narrow(0, *offset, len).unsqueeze::<3>(),
                // Rows at their own positions: one gather of every row's positions.
                rows => {
                    let ids: Vec<i64> = rows
                        .iter()
                        .flat_map(|(_, offset)| (*offset..offset + len).map(|p| p as i64))
                        .collect();
                    let ids = Tensor::<1, Int>::from_data(
                        TensorData::new(ids, [batch * len]),
                        &t.device(),
                    );
                    p.weight.val().select(0, ids).reshape([batch, len, dim])
                }
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
