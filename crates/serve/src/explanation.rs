//! An explanation request — inference inputs plus the attribution settings — and what
//! answers it: the model's outputs, the attributions and integrated gradients' delta.

use modelforge_spec::explain::Explain;

use crate::ModelInfo;
use crate::request::{InputTensor, OutputTensor};
use crate::tensor::Values;

/// An explanation request for a resolved version, decoded by a protocol adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainRequest {
    /// The input tensors, as for inference.
    pub inputs: Vec<InputTensor>,
    /// What to compute.
    pub settings: Explain,
    /// How long the caller waits; a request still queued when it passes is not computed.
    pub timeout: Option<std::time::Duration>,
}

/// What a runnable computes for an explanation of `batch` samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    /// The model's outputs, as inference gives them.
    pub outputs: Vec<Values>,
    /// Attributions, `[batch, …shape]`.
    pub attributions: Vec<f32>,
    /// Per-sample shape of the attributions (the input's, or one per token).
    pub shape: Vec<usize>,
    /// The output explained, per sample.
    pub targets: Vec<usize>,
    /// Integrated gradients' convergence delta, per sample.
    pub delta: Option<Vec<f32>>,
}

/// The answer to an explanation request.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The version that answered.
    pub info: ModelInfo,
    /// The model's outputs.
    pub outputs: Vec<OutputTensor>,
    /// `attributions`, FP32, batch first.
    pub attributions: OutputTensor,
    /// The output explained, per sample.
    pub targets: Vec<usize>,
    /// Integrated gradients' convergence delta, per sample.
    pub delta: Option<Vec<f32>>,
}

/// The name of the attributions tensor in an answer.
pub const ATTRIBUTIONS: &str = "attributions";

impl Explanation {
    /// The answer for `batch` samples from what the runnable computed.
    pub(crate) fn new(info: ModelInfo, batch: usize, explained: Explained) -> Explanation {
        let all: Vec<usize> = (0..info.manifest.outputs.len()).collect();
        let outputs = info.output_tensors(batch, explained.outputs, &all);
        let shape = std::iter::once(batch as i64)
            .chain(explained.shape.iter().map(|&d| d as i64))
            .collect();
        Explanation {
            info,
            outputs,
            attributions: OutputTensor {
                name: ATTRIBUTIONS.into(),
                shape,
                data: Values::F32(explained.attributions),
            },
            targets: explained.targets,
            delta: explained.delta,
        }
    }
}
