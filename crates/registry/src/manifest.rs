//! `manifest.json`: what a published version is, computes and came from.

use std::collections::BTreeMap;

use modelforge_spec::Spec;
use serde::{Deserialize, Serialize};

/// The description stored beside every version's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Model name.
    pub name: String,
    /// Version number (filled in by the registry at publish time).
    pub version: u64,
    /// How the model is stored: `modelforge-native` (safetensors + spec) or `onnx`.
    pub format: String,
    /// The input tensors, in the order the model takes them (a manifest written before
    /// models had several may name one `input`).
    #[serde(alias = "input", deserialize_with = "one_or_many")]
    pub inputs: Vec<TensorInfo>,
    /// The output tensors, in the order the model gives them (or one `output`).
    #[serde(alias = "output", deserialize_with = "one_or_many")]
    pub outputs: Vec<TensorInfo>,
    /// Whether the first axis is a batch axis that requests may size and the server may
    /// batch along; when false, tensor shapes are whole and requests are run one by one.
    #[serde(default = "batchable")]
    pub batchable: bool,
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

/// The format of versions built from a spec and its safetensors weights.
pub const NATIVE_FORMAT: &str = "modelforge-native";

impl Manifest {
    /// The manifest of a native version built from `spec`: its input and output tensors,
    /// task and labels; the registry fills in the version and the time.
    pub fn native(spec: &Spec, metrics: BTreeMap<String, f64>, lineage: Lineage) -> Manifest {
        let input = spec.model.input.get_ref();
        let output = spec.model.output.get_ref();
        Manifest {
            name: spec.name().to_string(),
            version: 0,
            format: NATIVE_FORMAT.into(),
            inputs: vec![TensorInfo {
                name: input.name.clone(),
                datatype: input.dtype.protocol_name().into(),
                shape: input.shape.clone(),
                source: None,
            }],
            outputs: vec![TensorInfo {
                name: output.name.clone(),
                datatype: "FP32".into(),
                shape: spec.output_shape(),
                source: None,
            }],
            batchable: true,
            task: output.task.name().into(),
            labels: output.labels.clone(),
            metrics,
            lineage,
        }
    }
}

/// Models are batchable unless their manifest says otherwise.
fn batchable() -> bool {
    true
}

/// One tensor description or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<TensorInfo>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(TensorInfo),
        Many(Vec<TensorInfo>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(t) => vec![t],
        OneOrMany::Many(t) => t,
    })
}

impl Manifest {
    /// Values per sample of each input (of the whole tensor when not batchable).
    pub fn input_lens(&self) -> Vec<usize> {
        self.inputs.iter().map(TensorInfo::len).collect()
    }

    /// Values per sample of each output (of the whole tensor when not batchable).
    pub fn output_lens(&self) -> Vec<usize> {
        self.outputs.iter().map(TensorInfo::len).collect()
    }

    /// A tensor's shape as the serving protocols state it: batch first as -1 when the
    /// model is batchable.
    pub fn protocol_shape(&self, t: &TensorInfo) -> Vec<i64> {
        let batch = self.batchable.then_some(-1);
        batch
            .into_iter()
            .chain(t.shape.iter().map(|&d| d as i64))
            .collect()
    }
}

impl TensorInfo {
    /// Values in one sample (the product of the shape).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether a sample holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Name, datatype and shape of a tensor: per sample (without the batch axis) when the
/// model is batchable, whole otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorInfo {
    /// Tensor name in the serving protocols.
    pub name: String,
    /// Open Inference Protocol datatype, e.g. `FP32`.
    pub datatype: String,
    /// Shape: per sample, without the batch axis, when the model is batchable.
    pub shape: Vec<usize>,
    /// The tensor's name inside the model file, when it is served under another name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_with_one_input_and_output_still_read() {
        let old = r#"{"name": "m", "version": 1, "format": "modelforge-native",
            "input": {"name": "x", "datatype": "FP32", "shape": [4]},
            "output": {"name": "y", "datatype": "FP32", "shape": [3]},
            "task": "classification",
            "lineage": {"spec_hash": "", "data_fingerprint": "", "run_id": "", "created": 0,
                        "modelforge_version": "0.1.0"}}"#;
        let m: Manifest = serde_json::from_str(old).unwrap();
        assert_eq!((m.inputs.len(), m.outputs.len(), m.batchable), (1, 1, true));
        assert_eq!(m.inputs[0].name, "x");
        assert_eq!(m.protocol_shape(&m.outputs[0]), vec![-1, 3]);
        assert_eq!(m.input_lens(), vec![4]);
        let again: Manifest = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(again, m);
    }
}
