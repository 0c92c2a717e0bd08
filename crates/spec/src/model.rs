//! The `[model]` section: input, output and layers.

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::layer::LayerSpec;

/// The `[model]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Registry name of the model (letters, digits, `-`, `_`, `.`).
    pub name: Spanned<String>,
    /// The input tensor.
    pub input: Spanned<InputSpec>,
    /// The output tensor and task.
    pub output: Spanned<OutputSpec>,
    /// Layers, applied in order.
    pub layers: Vec<Spanned<LayerSpec>>,
}

/// The model's input tensor (per sample, without the batch axis).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Tensor name in the serving protocols.
    #[serde(default = "default_input_name")]
    pub name: String,
    /// Element type.
    #[serde(default)]
    pub dtype: Dtype,
    /// Per-sample shape.
    pub shape: Vec<usize>,
}

fn default_input_name() -> String {
    "input".into()
}

/// Element type of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit float.
    #[default]
    F32,
    /// 64-bit integer ids (for embedding inputs).
    I64,
}

impl Dtype {
    /// The Open Inference Protocol datatype name.
    pub fn protocol_name(self) -> &'static str {
        match self {
            Dtype::F32 => "FP32",
            Dtype::I64 => "INT64",
        }
    }
}

/// The model's output tensor and what it predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Tensor name in the serving protocols.
    #[serde(default = "default_output_name")]
    pub name: String,
    /// What the output means.
    pub task: Task,
    /// Number of classes (classification only).
    pub classes: Option<usize>,
    /// Class names, one per class (classification only).
    #[serde(default)]
    pub labels: Vec<String>,
}

fn default_output_name() -> String {
    "output".into()
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// One of N classes; the output is N logits.
    Classification,
    /// Real values; the output is one value per target.
    Regression,
    /// Yes/no; the output is one logit.
    Binary,
}

impl Task {
    /// The name as written in the file.
    pub fn name(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Regression => "regression",
            Task::Binary => "binary",
        }
    }
}

impl ModelSpec {
    /// The layers without their positions in the file.
    pub fn layer_list(&self) -> Vec<LayerSpec> {
        self.layers.iter().map(|l| l.get_ref().clone()).collect()
    }
}
