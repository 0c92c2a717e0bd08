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

/// Writes a checkpoint and prunes older ones beyond `keep`.
pub fn save(
    run_dir: &Path,
    network: &Network,
    optimizer: &ModuleOptimizer,
    state: &LoopState,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    let root = run_dir.join(CKPT_DIR);
    fs::create_dir_all(&root).map_err(|e| TrainError::io(&root, e))?;
    let name = format!("step-{:09}", state.step);
    let tmp = root.join(format!(".tmp-{name}"));
    let dest = root.join(&name);
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    crate::run::write_atomic(
        &tmp.join("weights.safetensors"),
        &network.safetensors_bytes(BTreeMap::new()),
    )?;
    let opt = optimizer.into_bytes().map_err(|e| TrainError::Checkpoint {
        path: tmp.clone(),
        reason: format!("optimiser state does not serialise: {e:?}"),
    })?;
    crate::run::write_atomic(&tmp.join("optimizer.bpk"), &opt)?;
    crate::run::write_atomic(
        &tmp.join("state.json"),
        &serde_json::to_vec_pretty(state).expect("json"),
    )?;
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

/// Loads a checkpoint into a freshly built network and optimiser.
pub fn load(
    dir: &Path,
    network: Network,
    optimizer: ModuleOptimizer,
    device: &Device,
) -> Result<(Network, ModuleOptimizer, LoopState), TrainError> {
    let bad = |reason: String| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        reason,
    };
    let state_path = dir.join("state.json");
    let state: LoopState =
        serde_json::from_slice(&fs::read(&state_path).map_err(|e| TrainError::io(&state_path, e))?)
            .map_err(|e| bad(format!("state.json is not valid: {e}")))?;
    let network = network
        .load_safetensors(&dir.join("weights.safetensors"), device, true)
        .map_err(TrainError::Model)?;
    let opt_path = dir.join("optimizer.bpk");
    let bytes = fs::read(&opt_path).map_err(|e| TrainError::io(&opt_path, e))?;
    let optimizer = optimizer
        .from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| bad(format!("optimiser state does not load: {e:?}")))?;
    Ok((network, optimizer, state))
}
