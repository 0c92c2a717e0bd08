//! `add` and `concat`: joins of several inputs (residual connections and branches).

use burn::tensor::Tensor;
use modelforge_spec::{LayerSpec, Node};

use super::Activation;

/// How the inputs are joined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Merge {
    /// Element-wise sum.
    Add,
    /// Joined along this axis of the batched tensor (batch axis is 0).
    Concat(usize),
}

impl Merge {
    /// The concat of a node, its per-sample axis resolved and shifted past the batch axis.
    pub(crate) fn concat(node: &Node) -> Merge {
        let LayerSpec::Concat { axis } = node.layer else {
            unreachable!("a concat node")
        };
        let rank = node.input_shapes[0].len() as i64;
        let at = if axis < 0 { rank + axis } else { axis };
        Merge::Concat(at as usize + 1)
    }

    /// Joins the inputs (all of one rank, as the checked graph guarantees).
    pub(crate) fn forward(self, inputs: Vec<Activation>) -> Activation {
        macro_rules! join {
            ($variant:ident) => {{
                let ts: Vec<_> = inputs
                    .into_iter()
                    .map(|a| match a {
                        Activation::$variant(t) => t,
                        other => unreachable!("mixed ranks at a join: {:?}", other.dims()),
                    })
                    .collect();
                Activation::$variant(match self {
                    Merge::Add => ts
                        .into_iter()
                        .reduce(|a, b| a + b)
                        .expect("two or more inputs"),
                    Merge::Concat(axis) => Tensor::cat(ts, axis),
                })
            }};
        }
        match &inputs[0] {
            Activation::R2(_) => join!(R2),
            Activation::R3(_) => join!(R3),
            Activation::R4(_) => join!(R4),
            Activation::Ids(_) => unreachable!("the checked graph joins floats only"),
        }
    }
}
