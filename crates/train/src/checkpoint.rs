//! Checkpoints: weights, optimiser state and loop state, written atomically into
//! `checkpoints/step-NNNNNNNNN/`; the newest K are kept.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use modelforge_model::Network;
use modelforge_model::burn::optim::ModuleOptimizer;
use modelforge_model::burn::tensor::{Bytes, Device};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::evaluation::Tally;

/// Where the loop stands: enough to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Epoch in progress (0-based).
    pub epoch: usize,
    /// Batches of that epoch already done.
    pub position: usize,
    /// Optimiser steps taken in all.
    pub step: u64,
    /// Running sums of the epoch in progress.
    pub tally: Tally,
    /// Best early-stopping value so far.
    pub best: Option<f64>,
    /// Epochs since it improved.
    pub stale_epochs: usize,
    /// Bytes of `metrics.jsonl` written up to here.
    pub metrics_bytes: u64,
}

const CKPT_DIR: &str = "checkpoints";

/// A checkpoint in memory: the bytes of its three files. Ranks of a data-parallel job
/// start from rank 0's snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// `weights.safetensors`.
    pub weights: Vec<u8>,
    /// `optimizer.bpk`.
    pub optimizer: Vec<u8>,
    /// `state.json`.
    pub state: Vec<u8>,
}

const FILES: [&str; 3] = ["weights.safetensors", "optimizer.bpk", "state.json"];

impl Snapshot {
    /// Captures a network, its optimiser and the loop state.
    pub fn capture(
        network: &Network,
        optimizer: &ModuleOptimizer,
        state: &LoopState,
    ) -> Result<Snapshot, TrainError> {
        let optimizer = optimizer.into_bytes().map_err(|e| TrainError::Checkpoint {
            path: PathBuf::from(FILES[1]),
            reason: format!("optimiser state does not serialise: {e:?}"),
        })?;
        Ok(Snapshot {
            weights: network.safetensors_bytes(BTreeMap::new()),
            optimizer: optimizer.to_vec(),
            state: serde_json::to_vec_pretty(state).expect("json"),
        })
    }

    /// Reads a checkpoint folder.
    pub fn read(dir: &Path) -> Result<Snapshot, TrainError> {
        let [weights, optimizer, state] = FILES.map(|name| {
            let path = dir.join(name);
            fs::read(&path).map_err(|e| TrainError::io(&path, e))
        });
        Ok(Snapshot {
            weights: weights?,
            optimizer: optimizer?,
            state: state?,
        })
    }

    /// Loads the snapshot into a freshly built network and optimiser; `origin` names it in errors.
    pub fn restore(
        &self,
        origin: &Path,
        network: Network,
        optimizer: ModuleOptimizer,
        device: &Device,
    ) -> Result<(Network, ModuleOptimizer, LoopState), TrainError> {
        let bad = |reason: String| TrainError::Checkpoint {
            path: origin.to_path_buf(),
            reason,
        };
        let state: LoopState = serde_json::from_slice(&self.state)
            .map_err(|e| bad(format!("state.json is not valid: {e}")))?;
        let network = network
            .load_safetensors_bytes(&self.weights, &origin.join(FILES[0]), device, true)
            .map_err(TrainError::Model)?;
        let optimizer = optimizer
            .from_bytes(Bytes::from_bytes_vec(self.optimizer.clone()))
            .map_err(|e| bad(format!("optimiser state does not load: {e:?}")))?;
        Ok((network, optimizer, state))
    }

    /// One byte string (each part prefixed by its length), for a broadcast.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for part in [&self.weights, &self.optimizer, &self.state] {
            out.extend((part.len() as u64).to_le_bytes());
            out.extend(part);
        }
        out
    }

    /// The inverse of [`Snapshot::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Snapshot, TrainError> {
        let mut rest = bytes;
        let mut parts = Vec::with_capacity(3);
        for name in FILES {
            let cut = |rest: &[u8], n: usize| {
                (rest.len() >= n)
                    .then_some(n)
                    .ok_or(TrainError::Checkpoint {
                        path: PathBuf::from(name),
                        reason: "the snapshot from rank 0 is cut short".into(),
                    })
            };
            let n = cut(rest, 8)?;
            let len = u64::from_le_bytes(rest[..n].try_into().expect("8 bytes")) as usize;
            rest = &rest[n..];
            let len = cut(rest, len)?;
            parts.push(rest[..len].to_vec());
            rest = &rest[len..];
        }
        let [weights, optimizer, state] = <[Vec<u8>; 3]>::try_from(parts).expect("three parts");
        Ok(Snapshot {
            weights,
            optimizer,
            state,
        })
    }
}

/// Writes a checkpoint for step `step` and prunes older ones beyond `keep`.
pub fn save(
    run_dir: &Path,
    snapshot: &Snapshot,
    step: u64,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    let root = run_dir.join(CKPT_DIR);
    fs::create_dir_all(&root).map_err(|e| TrainError::io(&root, e))?;
    let name = format!("step-{step:09}");
    let tmp = root.join(format!(".tmp-{name}"));
    let dest = root.join(&name);
    let _ = fs::remove_dir_all(&tmp);
    let written = fs::create_dir_all(&tmp)
        .map_err(|e| TrainError::io(&tmp, e))
        .and_then(|()| {
            FILES
                .iter()
                .zip([&snapshot.weights, &snapshot.optimizer, &snapshot.state])
                .try_for_each(|(file, bytes)| crate::run::write_atomic(&tmp.join(file), bytes))
        });
    if written.is_err() {
        // A full disk: the half-written checkpoint would only hold the space.
        let _ = fs::remove_dir_all(&tmp);
    }
    written?;
    if dest.exists() {
        fs::remove_dir_all(&dest).map_err(|e| TrainError::io(&dest, e))?;
    }
    fs::rename(&tmp, &dest).map_err(|e| TrainError::io(&dest, e))?;
    fs::File::open(&root)
        .and_then(|d| d.sync_all())
        .map_err(|e| TrainError::io(&root, e))?;
    let all = list(run_dir)?;
    for old in all.iter().take(all.len().saturating_sub(keep)) {
        let _ = fs::remove_dir_all(old);
    }
    Ok(dest)
}

/// Complete checkpoints of a run, oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let root = run_dir.join(CKPT_DIR);
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut out: Vec<PathBuf> = fs::read_dir(&root)
        .map_err(|e| TrainError::io(&root, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-"))
        })
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_bytes_round_trip_and_refuse_truncation() {
        let snapshot = Snapshot {
            weights: vec![1, 2, 3],
            optimizer: vec![],
            state: b"{}".to_vec(),
        };
        let bytes = snapshot.to_bytes();
        assert_eq!(Snapshot::from_bytes(&bytes).unwrap(), snapshot);
        let cut = Snapshot::from_bytes(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(cut.to_string().contains("cut short"), "{cut}");
    }
}
