//! The run directory: `runs/<run-id>/` with the resolved spec, `run.json`
//! (seed, data fingerprint, environment, status) and `metrics.jsonl`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{Evaluation, TrainError};

/// The final inference weights of a finished run, in its folder.
pub const WEIGHTS: &str = "weights.safetensors";

/// The test-split evaluation of a run, in its folder.
pub const EVALUATION: &str = "evaluation.json";

/// Where and on what a run ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// modelforge version.
    pub modelforge_version: String,
    /// Compute threads.
    pub threads: usize,
    /// Data-parallel ranks (local workers or MPI processes).
    #[serde(default = "one")]
    pub ranks: usize,
    /// Host name (of rank 0).
    pub host: String,
    /// Operating system and architecture.
    pub platform: String,
    /// Compute device.
    pub device: String,
}

impl Environment {
    /// The environment of this process.
    pub fn current(threads: usize, ranks: usize, device: &str) -> Environment {
        let host = fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".into());
        Environment {
            modelforge_version: env!("CARGO_PKG_VERSION").into(),
            threads,
            ranks,
            host,
            platform: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
            device: device.into(),
        }
    }
}

fn one() -> usize {
    1
}

/// `run.json`: what a run is and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The run's id (its folder name).
    pub run_id: String,
    /// Model name.
    pub model: String,
    /// `running`, `completed`, `stopped_early` or `failed`.
    pub status: String,
    /// Training seed.
    pub seed: u64,
    /// sha256 of the resolved spec.
    pub spec_hash: String,
    /// sha256 over the data files.
    pub data_fingerprint: String,
    /// The data files read.
    pub data_files: Vec<PathBuf>,
    /// Where it ran.
    pub environment: Environment,
    /// Unix seconds at start.
    pub started: u64,
    /// Unix seconds at the end.
    pub finished: Option<u64>,
    /// Optimiser steps taken.
    pub steps: u64,
    /// Final figures (train, validation and test).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// `train` (also tuning trials) or `eval`.
    #[serde(default = "train_kind")]
    pub kind: String,
    /// The registry version an `eval` run evaluated (`name@version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated: Option<String>,
}

fn train_kind() -> String {
    "train".into()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `YYYYmmdd-HHMMSS` in UTC for Unix seconds.
pub fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant's published algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// A new, unused run id for a model.
pub fn new_run_id(model: &str, runs_dir: &Path) -> String {
    let stamp = utc_stamp(unix_now());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut salt = (nanos ^ std::process::id()) % 0xffff;
    loop {
        let id = format!("{model}-{stamp}-{salt:04x}");
        if !runs_dir.join(&id).exists() {
            return id;
        }
        salt = (salt + 1) % 0xffff;
    }
}

/// Finds a run folder from an id or a path.
pub fn locate(runs_dir: &Path, run: &str) -> Result<PathBuf, TrainError> {
    let direct = PathBuf::from(run);
    let dir = if direct.join("run.json").is_file() {
        direct
    } else {
        runs_dir.join(run)
    };
    if dir.join("run.json").is_file() {
        Ok(dir)
    } else {
        Err(TrainError::NoRun {
            run: run.into(),
            runs_dir: runs_dir.to_path_buf(),
        })
    }
}

/// Reads `run.json`.
pub fn read_info(dir: &Path) -> Result<RunInfo, TrainError> {
    let path = dir.join("run.json");
    let bytes = fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::Checkpoint {
        path,
        reason: format!("run.json is not valid: {e}"),
    })
}

/// Writes `run.json` atomically.
pub fn write_info(dir: &Path, info: &RunInfo) -> Result<(), TrainError> {
    write_atomic(
        &dir.join("run.json"),
        &serde_json::to_vec_pretty(info).expect("run info serialises"),
    )
}

/// Records a test-split evaluation with its run: `evaluation.json`, and its figures in `run.json`.
pub fn record_evaluation(dir: &Path, evaluation: &Evaluation) -> Result<(), TrainError> {
    write_atomic(
        &dir.join(EVALUATION),
        &serde_json::to_vec_pretty(evaluation).expect("an evaluation serialises"),
    )?;
    let mut info = read_info(dir)?;
    info.metrics.extend(evaluation.metrics.clone());
    write_info(dir, &info)
}

/// Replaces a file atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = path.with_extension("tmp");
    let written = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(|e| TrainError::io(&tmp, e));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

/// Appends JSON lines to `metrics.jsonl`.
pub struct MetricsLog {
    path: PathBuf,
    file: fs::File,
}

impl MetricsLog {
    /// Opens the log, cut back to `keep_bytes` (what the checkpoint being resumed had seen).
    pub fn open(dir: &Path, keep_bytes: u64) -> Result<MetricsLog, TrainError> {
        let path = dir.join("metrics.jsonl");
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        file.set_len(keep_bytes)
            .map_err(|e| TrainError::io(&path, e))?;
        Ok(MetricsLog { path, file })
    }

    /// Appends one record.
    pub fn write(&mut self, record: &serde_json::Value) -> Result<(), TrainError> {
        let mut line = serde_json::to_vec(record).expect("json");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|e| TrainError::io(&self.path, e))
    }

    /// Bytes written so far (flushed to disk first).
    pub fn synced_len(&mut self) -> Result<u64, TrainError> {
        self.file
            .sync_data()
            .map_err(|e| TrainError::io(&self.path, e))?;
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| TrainError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(1_795_996_800), "20261130-000000");
        assert_eq!(utc_stamp(951_782_400 + 3661), "20000229-010101");
    }
}
