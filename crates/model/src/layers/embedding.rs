//! `embedding`: a lookup table from integer ids to vectors (`torch.nn.Embedding`); and
//! `tied_head`, which reads the same table backwards: logits = x · tableᵀ.

use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::tensor::Device;

use super::{Activation, TensorVisitor};

/// `vocab` vectors of `dim` values, drawn from N(0, 0.02²) as GPT-2 and LLaMA initialise
/// theirs (a table of unit variance, `torch.nn.Embedding`'s default, makes a tied head's
/// first logits so large that the first loss is ten times ln(vocab)).
pub(crate) fn init(vocab: usize, dim: usize, device: &Device) -> Embedding {
    EmbeddingConfig::new(vocab, dim)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        })
        .init(device)
}

/// `[batch, len]` ids to `[batch, len, dim]` vectors.
pub(crate) fn forward(e: &Embedding, x: Activation) -> Activation {
    match x {
        Activation::Ids(ids) => Activation::R3(e.forward(ids)),
        other => unreachable!("embedding takes ids, got {:?}", other.dims()),
    }
}

/// `weight` `[vocab, dim]`.
pub(crate) fn tensors(mut e: Embedding, v: &mut impl TensorVisitor) -> Result<Embedding, String> {
    e.weight = v.param("weight", e.weight, false)?;
    Ok(e)
}

/// Logits over the vocabulary from `[batch, len, dim]` vectors with the table transposed.
pub(crate) fn tied(e: &Embedding, x: Activation) -> Activation {
    let table = e.weight.val();
    match x {
        Activation::R2(t) => Activation::R2(t.matmul(table.transpose())),
        // As one 2-D product with the transposed view: a batched product would copy the
        // whole transposed table on every call (28 M values for a 49,152-token vocabulary).
        Activation::R3(t) => {
            let [b, len, dim] = t.dims();
            let logits = t.reshape([b * len, dim]).matmul(table.transpose());
            let vocab = logits.dims()[1];
            Activation::R3(logits.reshape([b, len, vocab]))
        }
        other => unreachable!("a tied head takes vectors, got {:?}", other.dims()),
    }
}
