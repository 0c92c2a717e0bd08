//! The stage ledger: what each stage of a model's pipeline last ran on and produced, kept in
//! `<runs>/.stages/<model>.json`, so a stage whose inputs did not change is skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::PipelineError;

/// The last successful run of one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// What the stage depended on: spec sections as values, files and artefacts as digests.
    pub inputs: BTreeMap<String, Value>,
    /// What it produced (read by the stages after it).
    pub output: Value,
    /// Seconds it took.
    pub seconds: f64,
    /// Unix seconds when it finished.
    pub finished: u64,
}

/// Every stage's last successful run for one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// Records by stage name.
    pub stages: BTreeMap<String, StageRecord>,
}

impl Ledger {
    /// The ledger file of a model.
    pub fn path(runs_dir: &Path, model: &str) -> PathBuf {
        runs_dir.join(".stages").join(format!("{model}.json"))
    }

    /// Reads a ledger; a missing file is an empty ledger.
    pub fn read(path: &Path) -> Result<Ledger, PipelineError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| PipelineError::Ledger {
                path: path.to_path_buf(),
                reason: format!(
                    "it is not a valid stage ledger ({e}) — delete it to run every stage again"
                ),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ledger::default()),
            Err(e) => Err(PipelineError::Ledger {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        }
    }

    /// Writes the ledger atomically.
    pub fn write(&self, path: &Path) -> Result<(), PipelineError> {
        let failed = |e: std::io::Error| PipelineError::Ledger {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let bytes = serde_json::to_vec_pretty(self).expect("a ledger serialises");
        modelforge_registry::write_atomic(path, &bytes).map_err(|e| PipelineError::Ledger {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Why a stage must run with these inputs: empty when its record matches them.
    pub fn changes(&self, stage: &str, inputs: &BTreeMap<String, Value>) -> Vec<String> {
        let Some(record) = self.stages.get(stage) else {
            return vec!["no earlier run".into()];
        };
        let mut reasons = Vec::new();
        let names: std::collections::BTreeSet<&String> =
            record.inputs.keys().chain(inputs.keys()).collect();
        for name in names {
            let null = Value::Null;
            let old = record.inputs.get(name).unwrap_or(&null);
            let new = inputs.get(name).unwrap_or(&null);
            differences(name, old, new, &mut reasons);
        }
        reasons
    }
}

/// Lists where two JSON values differ, by path (`train.optimizer.lr: 0.001 → 0.002`).
pub(crate) fn differences(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let null = Value::Null;
                differences(
                    &format!("{path}.{key}"),
                    a.get(key).unwrap_or(&null),
                    b.get(key).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(&format!("{path}[{i}]"), x, y, out);
            }
        }
        _ => {
            let (a, b) = (short(old), short(new));
            match a.len() + b.len() <= 160 {
                true => out.push(format!("{path}: {a} → {b}")),
                false => out.push(format!("{path} changed")),
            }
        }
    }
}

/// A value as it reads in a reason; digests and missing values say so.
fn short(value: &Value) -> String {
    match value {
        Value::Null => "(none)".into(),
        Value::String(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("{}…", &s[..8])
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inputs(value: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_matching_record_means_no_changes() {
        let mut ledger = Ledger::default();
        let given = inputs(json!({ "train": { "optimizer": { "lr": 0.001 } }, "data": "ab" }));
        assert_eq!(ledger.changes("train", &given), ["no earlier run"]);
        ledger.stages.insert(
            "train".into(),
            StageRecord {
                inputs: given.clone(),
                output: Value::Null,
                seconds: 1.0,
                finished: 0,
            },
        );
        assert!(ledger.changes("train", &given).is_empty());
    }

    #[test]
    fn changes_name_the_path_that_changed() {
        let mut ledger = Ledger::default();
        let old = inputs(json!({
            "train": { "optimizer": { "lr": 0.001 }, "epochs": 2 },
            "model": { "layers": [{ "dense": { "units": 128 } }] },
            "weights": "a".repeat(64),
        }));
        ledger.stages.insert(
            "train".into(),
            StageRecord {
                inputs: old,
                output: Value::Null,
                seconds: 1.0,
                finished: 0,
            },
        );
        let new = inputs(json!({
            "train": { "optimizer": { "lr": 0.002 }, "epochs": 2 },
            "model": { "layers": [{ "dense": { "units": 64 } }] },
            "weights": "b".repeat(64),
            "gate": { "min": 0.9 },
        }));
        assert_eq!(
            ledger.changes("train", &new),
            [
                "gate: (none) → {\"min\":0.9}",
                "model.layers[0].dense.units: 128 → 64",
                "train.optimizer.lr: 0.001 → 0.002",
                "weights: aaaaaaaa… → bbbbbbbb…",
            ]
        );
    }

    #[test]
    fn a_damaged_ledger_is_a_clear_error_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = Ledger::path(dir.path(), "m");
        assert_eq!(Ledger::read(&path).unwrap(), Ledger::default());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{ not json").unwrap();
        let err = Ledger::read(&path).unwrap_err().to_string();
        assert!(err.contains("delete it to run every stage again"), "{err}");
        let mut ledger = Ledger::default();
        ledger.stages.insert(
            "check".into(),
            StageRecord {
                inputs: BTreeMap::new(),
                output: json!({ "model": "m" }),
                seconds: 0.0,
                finished: 1,
            },
        );
        ledger.write(&path).unwrap();
        assert_eq!(Ledger::read(&path).unwrap(), ledger);
    }
}
