//! Hyperparameter search over a spec's `[tune]` section: points drawn from the space
//! ([`space`]), each trained as a tracked run on its share of the cores, weak trials stopped
//! at successive-halving rungs (ASHA), the study kept on disk so an interrupted search
//! resumes without redoing finished trials, and the best trial evaluated, gated and published.

pub mod space;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use modelforge_data::Prepared;
use modelforge_pipeline::{GateOutcome, Published};
use modelforge_registry::Registry;
use modelforge_spec::Spec;
use modelforge_spec::train::higher_is_better;
use modelforge_spec::tune::TuneSpec;
use modelforge_train::parallel::Distributed;
use modelforge_train::{EpochReport, Progress, TrainOptions};
use serde::{Deserialize, Serialize};

use space::Point;

/// Everything that can stop a search.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// The spec file is wrong, or a point makes it wrong.
    #[error(transparent)]
    Spec(#[from] modelforge_spec::SpecError),
    /// The spec has no `[tune]` section.
    #[error("{} has no [tune] section — add one with a metric and a space (docs/automation.md)", .0.display())]
    NoTune(PathBuf),
    /// A point of the space does not make a valid spec.
    #[error("trial {trial} ({point}) is not a valid spec: {reason}")]
    BadPoint {
        /// The trial number.
        trial: usize,
        /// The point, in words.
        point: String,
        /// What is wrong.
        reason: String,
    },
    /// The data could not be read.
    #[error(transparent)]
    Data(#[from] modelforge_data::DataError),
    /// The study file could not be read or written.
    #[error("study {}: {reason}", path.display())]
    Study {
        /// The study file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No trial finished with the ranking metric.
    #[error("no trial finished with {0} — see `modelforge runs list --status failed`")]
    NoBest(String),
    /// Evaluating or publishing the best trial failed.
    #[error(transparent)]
    Pipeline(#[from] modelforge_pipeline::PipelineError),
    /// The network could not be loaded.
    #[error(transparent)]
    Model(#[from] modelforge_model::ModelError),
}

/// One trial of a study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// 0-based trial number.
    pub index: usize,
    /// Its point of the space.
    pub point: Point,
    /// `pending`, `completed`, `stopped_early`, `pruned` or `failed`.
    pub status: String,
    /// Its run.
    pub run_id: Option<String>,
    /// The ranking metric when it ended.
    pub value: Option<f64>,
    /// Epochs it trained.
    pub epochs: usize,
    /// The ranking metric after each epoch.
    pub history: Vec<f64>,
    /// Why it failed.
    pub error: Option<String>,
}

impl Trial {
    /// Whether the trial is over (a resumed search skips it).
    pub fn finished(&self) -> bool {
        self.status != "pending"
    }
}

/// A search: its settings' digest and its trials, kept in `<runs>/.tune/<model>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Study {
    /// Digest of the resolved spec with its `[tune]` section: a different search starts over.
    pub digest: String,
    /// The ranking metric.
    pub metric: String,
    /// Every trial.
    pub trials: Vec<Trial>,
}

/// How a search runs.
pub struct TuneOptions<'a> {
    /// The spec file with a `[tune]` section (named in errors).
    pub spec_file: &'a Path,
    /// That file, parsed and validated.
    pub spec: &'a Spec,
    /// Where trial runs and the study go.
    pub runs_dir: &'a Path,
    /// Trials trained at once.
    pub parallel: usize,
    /// Compute threads in all, shared by the trials running at once.
    pub threads: usize,
    /// Compute device.
    pub device: &'a str,
}

/// Receives trials as they end (the CLI prints them).
pub trait Observer: Send {
    /// A trial ended.
    fn trial(&mut self, trial: &Trial, of: usize);
}

/// What a search found.
pub struct Outcome {
    /// The spec without its `[tune]` section.
    pub base: Spec,
    /// The study with every trial.
    pub study: Study,
    /// The best trial's number.
    pub best: usize,
    /// The best trial's spec.
    pub best_spec: Spec,
    /// Trials skipped because an earlier, interrupted search had finished them.
    pub reused: usize,
}

/// ASHA in its stopping form: at each rung a trial goes on only if its metric is among the
/// best 1/eta of every value recorded at that rung so far (the first arrivals always go on).
struct Rungs {
    epochs: Vec<usize>,
    eta: usize,
    seen: BTreeMap<usize, Vec<f64>>,
}

impl Rungs {
    fn new(tune: &TuneSpec, max_epochs: usize) -> Rungs {
        let mut epochs = Vec::new();
        if let Some(h) = &tune.halving {
            let mut r = h.min_epochs;
            while r < max_epochs {
                epochs.push(r);
                r *= h.eta;
            }
        }
        Rungs {
            epochs,
            eta: tune.halving.as_ref().map_or(3, |h| h.eta),
            seen: BTreeMap::new(),
        }
    }

    /// Records a trial's value after `epochs` epochs; true when it should stop there.
    fn record(&mut self, epochs: usize, value: f64, higher: bool) -> bool {
        if !self.epochs.contains(&epochs) {
            return false;
        }
        let seen = self.seen.entry(epochs).or_default();
        seen.push(value);
        let mut sorted = seen.clone();
        sorted.sort_by(|a, b| match higher {
            true => b.total_cmp(a),
            false => a.total_cmp(b),
        });
        let keep = (sorted.len() / self.eta).max(1);
        let cutoff = sorted[keep - 1];
        match higher {
            true => value < cutoff,
            false => value > cutoff,
        }
    }
}

/// A trial's progress: records its metric each epoch and asks the rungs whether to go on.
struct Pruner {
    rungs: Arc<Mutex<Rungs>>,
    metric: String,
    history: Vec<f64>,
}

impl Progress for Pruner {
    fn prune(&mut self, report: &EpochReport) -> bool {
        let Some(&value) = report.metrics.get(&self.metric) else {
            return false;
        };
        self.history.push(value);
        let higher = higher_is_better(&self.metric);
        self.rungs
            .lock()
            .expect("rungs lock")
            .record(report.epoch + 1, value, higher)
    }
}

/// Runs (or resumes) the search of a spec file's `[tune]` section.
pub fn tune(options: &TuneOptions, observer: &mut dyn Observer) -> Result<Outcome, TuneError> {
    let spec = options.spec;
    let Some(tune) = spec.tune.as_ref().map(|t| t.get_ref().clone()) else {
        return Err(TuneError::NoTune(options.spec_file.to_path_buf()));
    };
    let mut base = spec.clone();
    base.tune = None;
    let resolved = serde_json::to_value(&base).expect("a spec serialises");
    let base_table: toml::Table =
        toml::from_str(&base.to_toml()).expect("a resolved spec reads back");

    // Every point must make a valid spec before anything trains.
    let points = space::points(&tune, &resolved);
    let mut specs = Vec::with_capacity(points.len());
    for (trial, point) in points.iter().enumerate() {
        let bad = |reason: String| TuneError::BadPoint {
            trial,
            point: space::describe(point),
            reason,
        };
        let mut table = base_table.clone();
        space::apply(&mut table, point).map_err(bad)?;
        let text = toml::to_string(&table).expect("a table serialises");
        let mut trial_spec = Spec::parse(&text, options.spec_file, Path::new("/"))
            .map_err(|e| bad(e.to_string()))?;
        // An interrupted trial restarts from scratch, so only its final checkpoint is kept.
        *trial_spec.train.checkpoint.get_mut() = modelforge_spec::CheckpointSpec {
            every_epochs: 0,
            every_steps: 0,
            keep: 1,
        };
        specs.push(trial_spec);
    }

    let path = options
        .runs_dir
        .join(".tune")
        .join(format!("{}.json", base.name()));
    let digest = Spec::hash_of(&spec);
    let fresh = Study {
        digest: digest.clone(),
        metric: tune.metric.clone(),
        trials: points
            .iter()
            .enumerate()
            .map(|(index, point)| Trial {
                index,
                point: point.clone(),
                status: "pending".into(),
                run_id: None,
                value: None,
                epochs: 0,
                history: Vec::new(),
                error: None,
            })
            .collect(),
    };
    let study = match read_study(&path)? {
        Some(old) if old.digest == digest && old.trials.len() == fresh.trials.len() => old,
        _ => fresh,
    };
    let reused = study.trials.iter().filter(|t| t.finished()).count();
    let max_epochs = *base.train.epochs.get_ref();
    let mut rungs = Rungs::new(&tune, max_epochs);
    // Rebuild the rungs from the trials an interrupted search finished.
    for t in study.trials.iter().filter(|t| t.finished()) {
        for (epoch, value) in t.history.iter().enumerate() {
            if rungs.epochs.contains(&(epoch + 1)) {
                rungs.seen.entry(epoch + 1).or_default().push(*value);
            }
        }
    }
    write_study(&path, &study)?;

    let data = modelforge_data::prepare(&base)?;
    let pending: Vec<usize> = study
        .trials
        .iter()
        .filter(|t| !t.finished())
        .map(|t| t.index)
        .collect();
    let parallel = options.parallel.max(1);
    let shared = Shared {
        study: Mutex::new(study),
        queue: Mutex::new(pending.into_iter()),
        rungs: Arc::new(Mutex::new(rungs)),
        observer: Mutex::new(observer),
        specs: &specs,
        data: (&data, Spec::hash_of(&base.data)),
        metric: tune.metric.clone(),
        path: path.clone(),
        threads: (options.threads / parallel).max(1),
        options,
    };
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| worker(&shared));
        }
    });
    let study = shared.study.into_inner().expect("study lock");
    write_study(&path, &study)?;
    let higher = higher_is_better(&tune.metric);
    let best = study
        .trials
        .iter()
        .filter(|t| matches!(t.status.as_str(), "completed" | "stopped_early"))
        .filter_map(|t| t.value.map(|v| (t.index, v)))
        .max_by(|a, b| match higher {
            true => a.1.total_cmp(&b.1),
            false => b.1.total_cmp(&a.1),
        })
        .map(|(i, _)| i)
        .ok_or_else(|| TuneError::NoBest(tune.metric.clone()))?;
    Ok(Outcome {
        base,
        best_spec: specs[best].clone(),
        best,
        study,
        reused,
    })
}

/// What the trial workers share.
struct Shared<'a> {
    study: Mutex<Study>,
    queue: Mutex<std::vec::IntoIter<usize>>,
    rungs: Arc<Mutex<Rungs>>,
    observer: Mutex<&'a mut dyn Observer>,
    /// Each trial's spec.
    specs: &'a [Spec],
    /// The base spec's data, and the digest of its data section.
    data: (&'a Prepared, String),
    /// The ranking metric.
    metric: String,
    /// The study file.
    path: PathBuf,
    /// Compute threads per trial.
    threads: usize,
    options: &'a TuneOptions<'a>,
}

/// Takes pending trials off the queue until it is empty, each on its own thread pool.
fn worker(shared: &Shared) {
    let threads = shared.threads;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
    loop {
        let Some(index) = shared.queue.lock().expect("queue lock").next() else {
            return;
        };
        let spec = &shared.specs[index];
        let mut pruner = Pruner {
            rungs: shared.rungs.clone(),
            metric: shared.metric.clone(),
            history: Vec::new(),
        };
        let data = (shared.data.0, shared.data.1.as_str());
        let outcome = match &pool {
            Ok(pool) => {
                pool.install(|| train_trial(spec, data, &mut pruner, threads, shared.options))
            }
            Err(e) => Err(format!("cannot start a thread pool: {e}")),
        };
        let mut study = shared.study.lock().expect("study lock");
        let trial = &mut study.trials[index];
        trial.history = pruner.history;
        trial.epochs = trial.history.len();
        match outcome {
            Ok((run_id, status, value)) => {
                trial.run_id = Some(run_id);
                trial.status = status;
                trial.value = value;
            }
            Err(reason) => {
                trial.status = "failed".into();
                trial.error = Some(reason);
            }
        }
        let done = trial.clone();
        let of = study.trials.len();
        // A study that cannot be saved only costs a resume its progress; say so once done.
        if let Err(e) = write_study(&shared.path, &study) {
            eprintln!("warning: {e}");
        }
        drop(study);
        shared
            .observer
            .lock()
            .expect("observer lock")
            .trial(&done, of);
    }
}

/// Trains one trial; returns its run id, status and final ranking metric.
fn train_trial(
    spec: &Spec,
    data: (&Prepared, &str),
    pruner: &mut Pruner,
    threads: usize,
    options: &TuneOptions,
) -> Result<(String, String, Option<f64>), String> {
    // A trial that searches data keys reads its own data.
    let own;
    let data = match Spec::hash_of(&spec.data) == data.1 {
        true => data.0,
        false => {
            own = modelforge_data::prepare(spec).map_err(|e| e.to_string())?;
            &own
        }
    };
    let trained = modelforge_train::train(
        spec,
        data,
        TrainOptions {
            runs_dir: options.runs_dir.to_path_buf(),
            threads,
            workers: 1,
            distributed: Distributed::from_spec(spec.train.distributed.get_ref()),
            device: options.device.to_string(),
            resume: None,
            progress: pruner,
        },
    )
    .map_err(|e| e.to_string())?;
    let status = match (trained.pruned, trained.stopped_early) {
        (true, _) => "pruned",
        (false, true) => "stopped_early",
        (false, false) => "completed",
    };
    let value = trained.final_metrics.get(&pruner.metric).copied();
    Ok((trained.run_id, status.into(), value))
}

fn read_study(path: &Path) -> Result<Option<Study>, TuneError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| TuneError::Study {
                path: path.to_path_buf(),
                reason: format!(
                    "it is not a valid study ({e}) — delete it to start the search over"
                ),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TuneError::Study {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn write_study(path: &Path, study: &Study) -> Result<(), TuneError> {
    let failed = |reason: String| TuneError::Study {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
    }
    let bytes = serde_json::to_vec_pretty(study).expect("a study serialises");
    modelforge_registry::write_atomic(path, &bytes).map_err(|e| failed(e.to_string()))
}

/// Evaluates the best trial on the test split, judges it by the spec's gate and publishes it
/// (with the spec's aliases only when the gate passes).
pub fn publish_best(
    outcome: &Outcome,
    runs_dir: &Path,
    registry: &Registry,
    device: &str,
) -> Result<(Published, Option<GateOutcome>), TuneError> {
    let trial = &outcome.study.trials[outcome.best];
    let run_dir = runs_dir.join(trial.run_id.as_deref().expect("the best trial has a run"));
    let spec = &outcome.best_spec;
    let device = modelforge_model::device(device)?;
    let network = modelforge_model::Network::new(spec, &device).load_safetensors(
        &run_dir.join(modelforge_train::run::WEIGHTS),
        &device,
        false,
    )?;
    let data = modelforge_data::prepare(spec)?;
    modelforge_pipeline::evaluate_run(spec, &network, &data, &run_dir, &device)?;
    let candidate = modelforge_pipeline::Candidate::read(&run_dir)?;
    let baseline = modelforge_pipeline::baseline(spec, registry, &candidate.run.run_id)?;
    let gate = modelforge_pipeline::judge(spec, &candidate.test.metrics, baseline.as_ref());
    let published = modelforge_pipeline::publish(spec, &candidate, registry, gate.as_ref())?;
    Ok((published, gate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rungs(eta: usize) -> Rungs {
        Rungs {
            epochs: vec![1, 3],
            eta,
            seen: BTreeMap::new(),
        }
    }

    #[test]
    fn a_rung_keeps_the_best_third() {
        let mut r = rungs(3);
        assert!(!r.record(2, 0.1, true), "not a rung");
        assert!(!r.record(1, 0.5, true), "the first arrival goes on");
        assert!(r.record(1, 0.4, true), "below the best of two");
        assert!(!r.record(1, 0.9, true), "the new best");
        assert!(r.record(1, 0.6, true), "not in the best 1/3 of four");
        let mut loss = rungs(2);
        assert!(!loss.record(3, 0.5, false));
        assert!(!loss.record(3, 0.2, false), "lower loss is better");
        assert!(loss.record(3, 0.6, false));
    }
}
