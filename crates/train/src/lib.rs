//! The modelforge training loop: a [`Network`] and prepared data in, a [`Trained`]
//! network out, with metrics, checkpoints and exact resume.

pub mod checkpoint;
pub mod evaluation;
pub mod optimizer;
pub mod run;
pub mod schedule;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use modelforge_data::shuffle::mix;
use modelforge_data::{Prepared, Targets, permutation};
use modelforge_model::burn::module::Module;
use modelforge_model::burn::optim::GradientsParams;
use modelforge_model::{InputNorm, ModelError, Network};
use modelforge_spec::{Mode, Spec, Task};
use serde_json::json;

pub use evaluation::{Evaluation, evaluate};
pub use run::{Environment, RunInfo};

use checkpoint::LoopState;
use evaluation::{Tally, batch_loss};

/// Everything that can stop a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A run file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// The network could not run or save.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A checkpoint or run file is damaged.
    #[error("{}: {reason}", path.display())]
    Checkpoint {
        /// The checkpoint or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The run to resume does not exist.
    #[error("no run {run:?} in {} — `ls {}` shows the runs", runs_dir.display(), runs_dir.display())]
    NoRun {
        /// The run asked for.
        run: String,
        /// Where runs are kept.
        runs_dir: PathBuf,
    },
    /// The run to resume was made from a different spec or data.
    #[error(
        "run {run} was trained from a different {what} — resume with the same spec and data, or start a new run"
    )]
    ResumeMismatch {
        /// The run.
        run: String,
        /// `spec` or `data`.
        what: String,
    },
    /// The settings cannot work together with this data.
    #[error("{0}")]
    Settings(String),
    /// The loss became NaN or infinite.
    #[error(
        "the loss became {value} at step {step} — lower the learning rate or set train.clip_grad_norm"
    )]
    Diverged {
        /// The step.
        step: u64,
        /// The loss value.
        value: f64,
    },
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> TrainError {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What the loop reports after each step.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// 0-based epoch.
    pub epoch: usize,
    /// Batches done in this epoch.
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
    /// Steps taken in all.
    pub step: u64,
    /// Mean loss of the epoch so far.
    pub loss: f64,
    /// Accuracy of the epoch so far (classification).
    pub accuracy: Option<f64>,
    /// Training examples per second in this epoch.
    pub samples_per_sec: f64,
    /// Learning rate of the step.
    pub lr: f64,
}

/// What the loop reports after each epoch.
#[derive(Debug, Clone)]
pub struct EpochReport {
    /// 0-based epoch.
    pub epoch: usize,
    /// Epochs in all.
    pub epochs: usize,
    /// Train and validation figures.
    pub metrics: BTreeMap<String, f64>,
    /// Seconds the epoch took.
    pub seconds: f64,
}

/// Receives progress (the CLI draws bars; tests ignore it).
pub trait Progress {
    /// Called once before the first step, with the step to resume from.
    fn start(&mut self, _epochs: usize, _batches_per_epoch: usize, _resumed_at: u64) {}
    /// Called after every step.
    fn step(&mut self, _report: &StepReport) {}
    /// Called after every epoch.
    fn epoch(&mut self, _report: &EpochReport) {}
}

/// Progress that goes nowhere.
pub struct Silent;
impl Progress for Silent {}

/// How to run a training job.
pub struct TrainOptions<'a> {
    /// Folder holding run folders (`runs/`).
    pub runs_dir: PathBuf,
    /// Compute threads (recorded; the caller sizes the thread pool).
    pub threads: usize,
    /// Device name, e.g. `cpu`.
    pub device: String,
    /// A run to continue (id or path).
    pub resume: Option<String>,
    /// Where progress goes.
    pub progress: &'a mut dyn Progress,
}

/// A trained network with its run and figures.
pub struct Trained {
    /// The network in inference mode.
    pub network: Network,
    /// The run's id.
    pub run_id: String,
    /// The run's folder.
    pub run_dir: PathBuf,
    /// Figures on the test split (`test_` prefix).
    pub test: Evaluation,
    /// Final train and validation figures.
    pub final_metrics: BTreeMap<String, f64>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// sha256 of the resolved spec.
    pub spec_hash: String,
    /// sha256 over the data files.
    pub data_fingerprint: String,
}

/// Number of output classes the data's targets index (0 for regression).
pub fn class_count(spec: &Spec) -> usize {
    let out = spec.model.output.get_ref();
    match out.task {
        Task::Classification => out.classes.unwrap_or(0),
        Task::Binary => 2,
        Task::Regression => 0,
    }
}

/// Trains a spec's model on prepared data, writing the run folder; see [`TrainOptions`].
pub fn train(spec: &Spec, data: &Prepared, options: TrainOptions) -> Result<Trained, TrainError> {
    let t = &spec.train;
    let seed = t.seed;
    let epochs = *t.epochs.get_ref();
    let batch_size = *t.batch_size.get_ref();
    let loss_kind = spec.loss();
    let classes = class_count(spec);
    let has_classes = matches!(data.train.targets, Targets::Classes(_));
    if let Some(es) = &t.early_stopping
        && es.get_ref().metric.starts_with("val_")
        && data.validation.is_empty()
    {
        return Err(TrainError::Settings(format!(
            "early stopping watches {} but there is no validation split — set data.validation = 0.1",
            es.get_ref().metric
        )));
    }
    let spec_hash = Spec::hash_of(spec);
    let device = modelforge_model::device(&options.device)?;
    let ad = device.clone().autodiff();

    // Build on the autodiff device with seeded initialisation.
    ad.seed(seed);
    let norm = InputNorm {
        shift: data.normalizer.shift.clone(),
        scale: data.normalizer.scale.clone(),
    };
    let mut network = Network::new(spec, &ad).with_norm(norm);
    let mut optim = optimizer::build(t.optimizer.get_ref());

    let (run_id, run_dir, mut state, mut info) = match &options.resume {
        Some(run) => {
            let dir = run::locate(&options.runs_dir, run)?;
            let info = run::read_info(&dir)?;
            if info.spec_hash != spec_hash {
                return Err(TrainError::ResumeMismatch {
                    run: info.run_id,
                    what: "spec".into(),
                });
            }
            if info.data_fingerprint != data.fingerprint {
                return Err(TrainError::ResumeMismatch {
                    run: info.run_id,
                    what: "data".into(),
                });
            }
            let state = match checkpoint::list(&dir)?.last() {
                Some(latest) => {
                    let (n, o, s) = checkpoint::load(latest, network, optim, &ad)?;
                    network = n;
                    optim = o;
                    s
                }
                None => fresh_state(),
            };
            (info.run_id.clone(), dir, state, info)
        }
        None => {
            std::fs::create_dir_all(&options.runs_dir)
                .map_err(|e| TrainError::io(&options.runs_dir, e))?;
            let run_id = run::new_run_id(spec.name(), &options.runs_dir);
            let dir = options.runs_dir.join(&run_id);
            std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
            run::write_atomic(&dir.join("spec.toml"), spec.to_toml().as_bytes())?;
            let info = RunInfo {
                run_id: run_id.clone(),
                model: spec.name().into(),
                status: "running".into(),
                seed,
                spec_hash: spec_hash.clone(),
                data_fingerprint: data.fingerprint.clone(),
                data_files: data.files.clone(),
                environment: Environment::current(options.threads, &options.device),
                started: run::unix_now(),
                finished: None,
                steps: 0,
                metrics: BTreeMap::new(),
                error: None,
            };
            run::write_info(&dir, &info)?;
            (run_id, dir, fresh_state(), info)
        }
    };
    let mut log = run::MetricsLog::open(&run_dir, state.metrics_bytes)?;
    let n = data.train.len();
    let batches = n.div_ceil(batch_size);
    let total_steps = batches * epochs;
    let base_lr = t.optimizer.get_ref().lr();
    let ckpt = t.checkpoint.get_ref().clone();
    let progress = options.progress;
    progress.start(epochs, batches, state.step);

    let mut buf = Vec::with_capacity(batch_size * data.train.sample_len());
    let mut last_metrics = BTreeMap::new();
    let mut stopped_early = false;
    let outcome: Result<Network, TrainError> = (|| {
        while state.epoch < epochs {
            let epoch = state.epoch;
            let started = Instant::now();
            let done_before = state.position;
            let order = permutation(seed, epoch as u64, n);
            for (b, rows) in order.chunks(batch_size).enumerate().skip(state.position) {
                // Dropout draws from the device generator: reseed per step so a resumed run
                // draws exactly what the uninterrupted one did.
                ad.seed(mix(seed, state.step));
                data.train.gather_features(rows, &mut buf);
                let x = network.input(&buf, rows.len(), &ad)?;
                let logits = network.forward_logits(x);
                let width = logits.dims()[1];
                let loss = batch_loss(loss_kind, logits.clone(), &data.train.targets, rows, &ad);
                let loss_value: f64 = loss.clone().into_scalar::<f32>() as f64;
                if !loss_value.is_finite() {
                    return Err(TrainError::Diverged {
                        step: state.step,
                        value: loss_value,
                    });
                }
                let outputs: Vec<f32> = logits.into_data().try_to_vec::<f32>().expect("f32 logits");
                let mut grads = GradientsParams::from_grads(loss.backward(), &network);
                if let Some(max) = &t.clip_grad_norm {
                    optimizer::clip_global_norm(&network, &mut grads, *max.get_ref());
                }
                let lr = schedule::learning_rate(
                    t.schedule.get_ref(),
                    base_lr,
                    state.step as usize,
                    batches,
                    total_steps,
                );
                network = optim.step(lr, network, grads);
                state
                    .tally
                    .add(loss_value, &outputs, width, &data.train.targets, rows, None);
                state.step += 1;
                state.position = b + 1;
                let seen = (state.position - done_before).max(1) as f64;
                let elapsed = started.elapsed().as_secs_f64().max(1e-9);
                let report = StepReport {
                    epoch,
                    batch: state.position,
                    batches,
                    step: state.step,
                    loss: state.tally.loss_sum / state.tally.count.max(1) as f64,
                    accuracy: has_classes
                        .then(|| state.tally.correct as f64 / state.tally.count.max(1) as f64),
                    samples_per_sec: seen * batch_size as f64 / elapsed,
                    lr,
                };
                if t.log_every_steps > 0 && state.step.is_multiple_of(t.log_every_steps as u64) {
                    log.write(&json!({
                        "kind": "step", "epoch": epoch, "step": state.step, "loss": report.loss,
                        "accuracy": report.accuracy, "lr": lr,
                    }))?;
                }
                progress.step(&report);
                if ckpt.every_steps > 0
                    && state.step.is_multiple_of(ckpt.every_steps as u64)
                    && state.position < batches
                {
                    state.metrics_bytes = log.synced_len()?;
                    checkpoint::save(&run_dir, &network, &optim, &state, ckpt.keep)?;
                }
            }
            // End of epoch: figures on train (running) and validation.
            let mut metrics = state.tally.metrics("", has_classes);
            if !data.validation.is_empty() {
                let eval = evaluate(
                    &network.valid(),
                    &data.validation,
                    loss_kind,
                    classes,
                    "val_",
                    &device,
                )?;
                metrics.extend(eval.metrics);
            }
            metrics.insert(
                "lr".into(),
                schedule::learning_rate(
                    t.schedule.get_ref(),
                    base_lr,
                    state.step.saturating_sub(1) as usize,
                    batches,
                    total_steps,
                ),
            );
            let seconds = started.elapsed().as_secs_f64();
            let mut line = json!({ "kind": "epoch", "epoch": epoch, "step": state.step });
            for (k, v) in &metrics {
                line[k] = json!(v);
            }
            log.write(&line)?;
            progress.epoch(&EpochReport {
                epoch,
                epochs,
                metrics: metrics.clone(),
                seconds,
            });
            if let Some(es) = &t.early_stopping {
                let es = es.get_ref();
                let value = metrics.get(&es.metric).copied().ok_or_else(|| {
                    TrainError::Settings(format!(
                        "early stopping metric {} is not computed for this task",
                        es.metric
                    ))
                })?;
                let mode = es.mode.unwrap_or(if es.metric.ends_with("accuracy") {
                    Mode::Max
                } else {
                    Mode::Min
                });
                let improved = match (state.best, mode) {
                    (None, _) => true,
                    (Some(b), Mode::Min) => value < b - es.min_delta,
                    (Some(b), Mode::Max) => value > b + es.min_delta,
                };
                if improved {
                    state.best = Some(value);
                    state.stale_epochs = 0;
                } else {
                    state.stale_epochs += 1;
                }
                stopped_early = state.stale_epochs >= es.patience;
            }
            last_metrics = metrics;
            state.epoch += 1;
            state.position = 0;
            state.tally = Tally::default();
            if stopped_early {
                state.epoch = epochs;
            }
            if (ckpt.every_epochs > 0 && state.epoch.is_multiple_of(ckpt.every_epochs))
                || state.epoch >= epochs
            {
                state.metrics_bytes = log.synced_len()?;
                checkpoint::save(&run_dir, &network, &optim, &state, ckpt.keep)?;
            }
        }
        Ok(network)
    })();
    let network = match outcome {
        Ok(network) => network.valid(),
        Err(e) => {
            info.status = "failed".into();
            info.error = Some(e.to_string());
            info.finished = Some(run::unix_now());
            info.steps = state.step;
            run::write_info(&run_dir, &info)?;
            return Err(e);
        }
    };
    let test = evaluate(&network, &data.test, loss_kind, classes, "test_", &device)?;
    let mut all = last_metrics.clone();
    all.extend(test.metrics.clone());
    info.status = if stopped_early {
        "stopped_early"
    } else {
        "completed"
    }
    .into();
    info.finished = Some(run::unix_now());
    info.steps = state.step;
    info.metrics = all;
    run::write_info(&run_dir, &info)?;
    run::write_atomic(
        &run_dir.join("evaluation.json"),
        &serde_json::to_vec_pretty(&test).expect("json"),
    )?;
    Ok(Trained {
        network,
        run_id,
        run_dir,
        test,
        final_metrics: last_metrics,
        stopped_early,
        spec_hash,
        data_fingerprint: data.fingerprint.clone(),
    })
}

fn fresh_state() -> LoopState {
    LoopState {
        epoch: 0,
        position: 0,
        step: 0,
        tally: Tally::default(),
        best: None,
        stale_epochs: 0,
        metrics_bytes: 0,
    }
}
