//! `batch_norm`: batch normalisation over the channel axis (`torch.nn.BatchNorm*d`).

use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::Device;

use super::{Activation, TensorVisitor, each_rank};

/// Statistics over `input[0]` channels.
pub(crate) fn init(input: &[usize], epsilon: f64, momentum: f64, device: &Device) -> BatchNorm {
    BatchNormConfig::new(input[0])
        .with_epsilon(epsilon)
        .with_momentum(momentum)
        .init(device)
}

/// Normalises with batch statistics (training) or the running ones (inference).
pub(crate) fn forward(b: &BatchNorm, x: Activation) -> Activation {
    each_rank!(x, t => b.forward(t))
}

/// `weight`, `bias`, `running_mean` and `running_var`, as PyTorch names them.
pub(crate) fn tensors(mut n: BatchNorm, v: &mut impl TensorVisitor) -> Result<BatchNorm, String> {
    n.gamma = v.param("weight", n.gamma, false)?;
    n.beta = v.param("bias", n.beta, false)?;
    n.running_mean = v.running("running_mean", n.running_mean)?;
    n.running_var = v.running("running_var", n.running_var)?;
    Ok(n)
}
