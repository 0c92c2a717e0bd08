//! Run tracking over the run folders: list (filtered and sorted by a metric), compare the
//! parameters and metrics of two runs, remove a run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use modelforge_spec::Spec;
use modelforge_spec::train::higher_is_better;
use modelforge_train::run::RunInfo;
use serde_json::{Value, json};

use crate::PipelineError;

/// A run folder and its `run.json`.
#[derive(Debug, Clone)]
pub struct RunEntry {
    /// The folder.
    pub dir: PathBuf,
    /// Its record.
    pub info: RunInfo,
}

/// Which runs `list` shows, in what order.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs of this model.
    pub model: Option<String>,
    /// Only runs with this status (`completed`, `failed`, …).
    pub status: Option<String>,
    /// Sort by this metric, best first (runs without it last); by start time otherwise.
    pub sort: Option<String>,
    /// At most this many runs.
    pub limit: Option<usize>,
}

/// The runs in `runs_dir` that pass the filter, newest first or best first by the sort metric.
pub fn list(runs_dir: &Path, filter: &RunFilter) -> Result<Vec<RunEntry>, PipelineError> {
    let folders = match std::fs::read_dir(runs_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(PipelineError::Run {
                path: runs_dir.to_path_buf(),
                reason: e.to_string(),
            });
        }
    };
    let mut runs = Vec::new();
    for folder in folders.flatten() {
        let dir = folder.path();
        // Folders without run.json (the stage ledger, stray files) are not runs.
        if !dir.join("run.json").is_file() {
            continue;
        }
        let info = modelforge_train::run::read_info(&dir)?;
        let keep = filter.model.as_ref().is_none_or(|m| *m == info.model)
            && filter.status.as_ref().is_none_or(|s| *s == info.status);
        if keep {
            runs.push(RunEntry { dir, info });
        }
    }
    runs.sort_by(|a, b| {
        b.info
            .started
            .cmp(&a.info.started)
            .then(b.info.run_id.cmp(&a.info.run_id))
    });
    if let Some(metric) = &filter.sort {
        let sign = if higher_is_better(metric) { -1.0 } else { 1.0 };
        // Best first; runs without the metric go last, in start order.
        let key = |r: &RunEntry| r.info.metrics.get(metric).map(|v| sign * v);
        runs.sort_by(|a, b| match (key(a), key(b)) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
    }
    if let Some(n) = filter.limit {
        runs.truncate(n);
    }
    Ok(runs)
}

/// An evaluation of a registry version, to record as a run.
pub struct EvalRecord<'a> {
    /// The spec it used (the version's, with another `[data]` if one was given).
    pub spec: &'a Spec,
    /// The data it read.
    pub data: &'a modelforge_data::Prepared,
    /// Its figures.
    pub evaluation: &'a modelforge_train::Evaluation,
    /// The version, `name@version`.
    pub evaluated: String,
    /// Unix seconds when it started.
    pub started: u64,
    /// Where it ran.
    pub environment: modelforge_train::Environment,
}

/// Records an evaluation as a run of kind `eval`: the spec it used, `run.json` with the
/// figures, `metrics.jsonl` and `evaluation.json`. Returns its folder.
pub fn record_eval(runs_dir: &Path, record: &EvalRecord) -> Result<PathBuf, PipelineError> {
    use modelforge_train::run;
    let EvalRecord {
        spec,
        data,
        evaluation,
        ..
    } = record;
    let failed = |path: &Path, e: std::io::Error| PipelineError::Run {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(runs_dir).map_err(|e| failed(runs_dir, e))?;
    let run_id = run::new_run_id(&format!("{}-eval", spec.name()), runs_dir);
    let dir = runs_dir.join(&run_id);
    // Written in a staging folder and renamed, so a failure leaves no half run.
    let staging = runs_dir.join(format!(".{run_id}.tmp"));
    std::fs::create_dir_all(&staging).map_err(|e| failed(&staging, e))?;
    run::write_atomic(&staging.join("spec.toml"), spec.to_toml().as_bytes())?;
    let mut line = serde_json::to_vec(&json!({ "kind": "eval", "metrics": evaluation.metrics }))
        .expect("metrics serialise");
    line.push(b'\n');
    run::write_atomic(&staging.join("metrics.jsonl"), &line)?;
    run::write_atomic(
        &staging.join(modelforge_train::run::EVALUATION),
        &serde_json::to_vec_pretty(evaluation).expect("an evaluation serialises"),
    )?;
    let info = RunInfo {
        run_id,
        model: spec.name().to_string(),
        status: "completed".into(),
        seed: spec.train.seed,
        spec_hash: spec.result_hash(),
        data_fingerprint: data.fingerprint.clone(),
        data_files: data.files.clone(),
        environment: record.environment.clone(),
        started: record.started,
        finished: Some(run::unix_now()),
        steps: 0,
        metrics: evaluation.metrics.clone(),
        error: None,
        kind: "eval".into(),
        evaluated: Some(record.evaluated.clone()),
    };
    run::write_info(&staging, &info)?;
    std::fs::rename(&staging, &dir).map_err(|e| failed(&dir, e))?;
    Ok(dir)
}

/// Reads one run by id or folder.
pub fn open(runs_dir: &Path, run: &str) -> Result<RunEntry, PipelineError> {
    let dir = modelforge_train::run::locate(runs_dir, run)?;
    let info = modelforge_train::run::read_info(&dir)?;
    Ok(RunEntry { dir, info })
}

/// Two runs side by side.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Spec keys that differ, as `path: a → b`.
    pub params: Vec<String>,
    /// Every metric either run has: (name, value in a, value in b).
    pub metrics: Vec<(String, Option<f64>, Option<f64>)>,
}

/// Compares the resolved specs and the final metrics of two runs.
pub fn compare(a: &RunEntry, b: &RunEntry) -> Result<Comparison, PipelineError> {
    let spec = |entry: &RunEntry| -> Result<Value, PipelineError> {
        let path = entry.dir.join("spec.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| PipelineError::Run {
            path: entry.dir.clone(),
            reason: format!("cannot read spec.toml: {e}"),
        })?;
        Ok(json!(Spec::parse_stored(&text, &path)?))
    };
    let (sa, sb) = (spec(a)?, spec(b)?);
    let mut params = Vec::new();
    for section in ["model", "data", "train", "deploy"] {
        crate::ledger::differences(section, &sa[section], &sb[section], &mut params);
    }
    let names: std::collections::BTreeSet<&String> =
        a.info.metrics.keys().chain(b.info.metrics.keys()).collect();
    let metrics = names
        .into_iter()
        .map(|name| {
            (
                name.clone(),
                a.info.metrics.get(name).copied(),
                b.info.metrics.get(name).copied(),
            )
        })
        .collect();
    Ok(Comparison { params, metrics })
}

/// Removes a run folder; a run still marked `running` only with `force` (it may be training).
pub fn remove(entry: &RunEntry, force: bool) -> Result<(), PipelineError> {
    if entry.info.status == "running" && !force {
        return Err(PipelineError::Run {
            path: entry.dir.clone(),
            reason: "the run is marked running — if no process trains it any more, remove it with --force".into(),
        });
    }
    std::fs::remove_dir_all(&entry.dir).map_err(|e| PipelineError::Run {
        path: entry.dir.clone(),
        reason: format!("cannot remove it: {e}"),
    })
}

/// The metrics of a run, for printing: figures without the learning rate.
pub fn figures(metrics: &BTreeMap<String, f64>) -> String {
    metrics
        .iter()
        .filter(|(k, _)| k.as_str() != "lr")
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelforge_train::Environment;

    fn write_run(root: &Path, id: &str, started: u64, status: &str, acc: Option<f64>) {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let info = RunInfo {
            run_id: id.into(),
            model: if id.starts_with('a') { "alpha" } else { "beta" }.into(),
            status: status.into(),
            seed: 1,
            spec_hash: String::new(),
            data_fingerprint: String::new(),
            data_files: Vec::new(),
            environment: Environment::current(1, 1, "cpu"),
            started,
            finished: None,
            steps: 0,
            metrics: acc
                .map(|a| BTreeMap::from([("test_accuracy".to_string(), a)]))
                .unwrap_or_default(),
            error: None,
            kind: "train".into(),
            evaluated: None,
        };
        modelforge_train::run::write_info(&dir, &info).unwrap();
    }

    #[test]
    fn lists_filter_and_sort_best_first() {
        let dir = tempfile::tempdir().unwrap();
        write_run(dir.path(), "a1", 1, "completed", Some(0.9));
        write_run(dir.path(), "a2", 2, "completed", Some(0.95));
        write_run(dir.path(), "a3", 3, "failed", None);
        write_run(dir.path(), "b1", 4, "completed", Some(0.99));
        std::fs::create_dir_all(dir.path().join(".stages")).unwrap();
        let ids = |filter: RunFilter| -> Vec<String> {
            list(dir.path(), &filter)
                .unwrap()
                .into_iter()
                .map(|r| r.info.run_id)
                .collect()
        };
        assert_eq!(ids(RunFilter::default()), ["b1", "a3", "a2", "a1"]);
        let alpha = RunFilter {
            model: Some("alpha".into()),
            sort: Some("test_accuracy".into()),
            ..Default::default()
        };
        assert_eq!(ids(alpha.clone()), ["a2", "a1", "a3"]);
        let completed = RunFilter {
            status: Some("completed".into()),
            limit: Some(2),
            ..alpha
        };
        assert_eq!(ids(completed), ["a2", "a1"]);
        assert!(
            list(&dir.path().join("none"), &RunFilter::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_running_run_is_removed_only_with_force() {
        let dir = tempfile::tempdir().unwrap();
        write_run(dir.path(), "a1", 1, "running", None);
        let entry = open(dir.path(), "a1").unwrap();
        let err = remove(&entry, false).unwrap_err().to_string();
        assert!(err.contains("remove it with --force"), "{err}");
        remove(&entry, true).unwrap();
        assert!(!dir.path().join("a1").exists());
        assert!(open(dir.path(), "a1").is_err());
    }
}
