//! `manifest.json`: what a published version is, computes and came from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The description stored beside every version's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Model name.
    pub name: String,
    /// Version number (filled in by the registry at publish time).
    pub version: u64,
    /// How the weights are stored: `modelforge-native` (safetensors + spec).
    pub format: String,
    /// The input tensor.
    pub input: TensorInfo,
    /// The output tensor.
    pub output: TensorInfo,
    /// `classification`, `regression` or `binary`.
    pub task: String,
    /// Class names, one per output (classification).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Evaluation figures, e.g. `test_accuracy`.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Where the version came from.
    pub lineage: Lineage,
}

/// Name, datatype and per-sample shape of a tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorInfo {
    /// Tensor name in the serving protocols.
    pub name: String,
    /// Open Inference Protocol datatype, e.g. `FP32`.
    pub datatype: String,
    /// Per-sample shape, without the batch axis.
    pub shape: Vec<usize>,
}

/// Provenance of a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// sha256 of the resolved spec.
    pub spec_hash: String,
    /// sha256 over the training data files.
    pub data_fingerprint: String,
    /// The training run that produced it.
    pub run_id: String,
    /// Seconds since the Unix epoch when it was published (filled in by the registry).
    pub created: u64,
    /// The modelforge version that published it.
    pub modelforge_version: String,
}
