//! A modelforge [`Spec`](modelforge_spec::Spec) built into a network on the burn
//! engine: forward pass, parameter count, and weights saved to and loaded from
//! safetensors with PyTorch names and layouts.

mod kernels;
mod layers;
mod network;
mod weights;

pub use burn;
pub use layers::dropout::with_stream as with_dropout_stream;
pub use layers::{Activation, Block, KeyValues, PositionalEmbedding, SelfAttention, Swiglu};
pub use network::{InputNorm, KvCache, Network};
pub use weights::{
    NamedTensor, WEIGHTS_FORMAT, encode_safetensors, f32_safetensors, parse_safetensors,
};

use burn::tensor::Device;

/// Everything that can go wrong building, running, saving or loading a network.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A weights file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// A weights file is not valid safetensors or does not match the network.
    #[error("{}: {reason}", path.display())]
    BadWeights {
        /// The file.
        path: std::path::PathBuf,
        /// What does not match.
        reason: String,
    },
    /// An input batch does not have the shape or type the model takes.
    #[error(
        "input has {got} values but a batch of {batch} needs {want} ({shape}) — send {batch} × {per_sample} values"
    )]
    BadInput {
        /// Values received.
        got: usize,
        /// Batch size implied.
        batch: usize,
        /// Values needed.
        want: usize,
        /// Values per sample.
        per_sample: usize,
        /// The per-sample shape.
        shape: String,
    },
    /// The compute device asked for is not available in this build.
    #[error("device {0:?} is not available — use \"cpu\"{DEVICE_HINT}")]
    NoDevice(String),
}

const DEVICE_HINT: &str = if cfg!(feature = "cuda") {
    " or \"cuda[:N]\""
} else {
    " (build with --features cuda for GPUs)"
};

/// The compute device for a name: `cpu` (burn flex) or, with the `cuda` feature, `cuda[:N]`.
pub fn device(name: &str) -> Result<Device, ModelError> {
    match name {
        "cpu" | "flex" => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        n if n == "cuda" || n.starts_with("cuda:") => {
            let index = n
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .unwrap_or(0);
            Ok(Device::cuda(index))
        }
        other => Err(ModelError::NoDevice(other.to_string())),
    }
}
