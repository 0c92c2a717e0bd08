//! The modelforge training loop: a [`Network`] and prepared data in, a [`Trained`]
//! network out, with metrics, checkpoints and exact resume.

pub mod checkpoint;
pub mod evaluation;
mod language_model;
pub mod optimizer;
pub mod parallel;
pub mod run;
pub mod schedule;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use modelforge_data::shuffle::mix;
use modelforge_data::{Examples, Prepared, Splits, Targets, permutation};
use modelforge_model::burn::module::Module;
use modelforge_model::burn::optim::{GradientsParams, ModuleOptimizer};
use modelforge_model::burn::tensor::Device;
use modelforge_model::{InputNorm, ModelError, Network};
use modelforge_spec::{Mode, Spec, Task};
use serde_json::json;

pub use evaluation::{Evaluation, evaluate, evaluate_test};
pub use run::{Environment, RunInfo};

use checkpoint::{LoopState, Snapshot};
use evaluation::{Tally, batch_loss};
use parallel::gradients::{self, ParamList};
use parallel::{Collective, Communicator, Distributed, Solo};

/// Everything that can stop a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A run file could not be read or written.
    #[error("{}: {source}{}", path.display(), full_disk_fix(source))]
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
    /// A collective waited longer than the timeout for its peers.
    #[error(
        "{op} at step {step} timed out after {seconds} s waiting for {waiting_for} — a rank is stopped, hung or much slower; raise train.distributed.timeout_s (--collective-timeout) if it is only slow"
    )]
    CollectiveTimeout {
        /// The collective.
        op: String,
        /// The optimiser step.
        step: u64,
        /// The timeout.
        seconds: f64,
        /// Which ranks had not arrived (`rank(s) [1]`), as far as this rank can tell.
        waiting_for: String,
    },
    /// Another rank stopped, so this one stops too.
    #[error("rank {rank} stopped ({reason}), so the job stops")]
    PeerFailed {
        /// The rank that stopped.
        rank: usize,
        /// Why it stopped.
        reason: String,
    },
    /// The ranks do not run the same job.
    #[error("{0}")]
    World(String),
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

/// The fix for a full disk or quota: room, then the run continues from its last whole
/// checkpoint (what was being written is never left half there).
fn full_disk_fix(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            " — free space on that file system (or lower `checkpoint.keep`), then continue \
             the run with `modelforge train SPEC --resume RUN`"
        }
        _ => "",
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
    /// For a loop that runs by steps (language models): the step reached and the steps in
    /// all; each evaluation is then reported as an epoch.
    pub steps: Option<(u64, u64)>,
}

/// Receives progress (the CLI draws bars; tests ignore it).
pub trait Progress {
    /// Called once before the first step, with the step to resume from.
    fn start(&mut self, _epochs: usize, _batches_per_epoch: usize, _resumed_at: u64) {}
    /// Called after every step.
    fn step(&mut self, _report: &StepReport) {}
    /// Called after every epoch.
    fn epoch(&mut self, _report: &EpochReport) {}
    /// Called on rank 0 after every epoch, before [`Progress::epoch`]: true stops the run
    /// there with status `pruned` (a tuner stopping a weak trial).
    fn prune(&mut self, _report: &EpochReport) -> bool {
        false
    }
}

/// Progress that goes nowhere.
pub struct Silent;
impl Progress for Silent {}

/// How to run a training job.
pub struct TrainOptions<'a> {
    /// Folder holding run folders (`runs/`).
    pub runs_dir: PathBuf,
    /// Compute threads in all (local workers share them).
    pub threads: usize,
    /// Data-parallel worker threads in this process.
    pub workers: usize,
    /// Bucket size and collective timeout.
    pub distributed: Distributed,
    /// Device name, e.g. `cpu`.
    pub device: String,
    /// A run to continue (id or path).
    pub resume: Option<String>,
    /// Where progress goes (only rank 0 reports).
    pub progress: &'a mut (dyn Progress + Send),
}

/// A trained network with its run and figures.
pub struct Trained {
    /// The network in inference mode.
    pub network: Network,
    /// The run's id.
    pub run_id: String,
    /// The run's folder.
    pub run_dir: PathBuf,
    /// Final train and validation figures.
    pub final_metrics: BTreeMap<String, f64>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Whether [`Progress::prune`] ended the run.
    pub pruned: bool,
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
        Task::Regression | Task::LanguageModel => 0,
    }
}

/// Trains a spec's model on prepared data, writing the run folder; see [`TrainOptions`].
/// With `workers > 1` the batch is split over that many threads (each with its share of
/// the compute threads) whose gradients are summed, so the result matches one worker.
pub fn train(spec: &Spec, data: &Prepared, options: TrainOptions) -> Result<Trained, TrainError> {
    let workers = options.workers.max(1);
    let trained = match workers {
        1 => run_workers(spec, data, options, vec![Solo])?,
        _ => {
            let comms = parallel::local::group(workers, options.distributed.timeout);
            run_workers(spec, data, options, comms)?
        }
    };
    Ok(trained.expect("rank 0 returns the result"))
}

/// Trains with `options.workers` threads in this process, inside an outer world of one rank
/// per process (MPI): a world of processes × workers ranks ([`parallel::nested`]). The result
/// comes back on the process that holds rank 0; the others get `None`.
pub fn train_nested<G: Communicator + Send>(
    spec: &Spec,
    data: &Prepared,
    options: TrainOptions,
    outer: G,
) -> Result<Option<Trained>, TrainError> {
    let comms = parallel::nested::group(outer, options.workers.max(1), options.distributed.timeout);
    run_workers(spec, data, options, comms)
}

/// Runs one worker thread per communicator, each on its own share of the compute threads;
/// returns rank 0's result (when it is here) or the error of the rank that failed first.
/// Even a lone worker trains inside its own pool: the engine's parallel kernels then run on
/// the calling worker (and its peers) instead of handing each operation to the global pool
/// and sleeping until it comes back.
fn run_workers<C: Communicator + Send>(
    spec: &Spec,
    data: &Prepared,
    options: TrainOptions,
    comms: Vec<C>,
) -> Result<Option<Trained>, TrainError> {
    let workers = comms.len();
    let threads = (options.threads / workers).max(1);
    let (device, distributed) = (options.device.clone(), options.distributed);
    let mut rank0 = Some(options);
    let outcomes: Vec<Result<Option<Trained>, TrainError>> = std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|mut comm| {
                let options = rank0.take();
                let device = device.clone();
                s.spawn(move || {
                    // Ranks other than 0 write nothing: only the compute settings matter.
                    let options = options.unwrap_or(TrainOptions {
                        runs_dir: PathBuf::new(),
                        threads: threads * workers,
                        workers,
                        distributed,
                        device,
                        resume: None,
                        progress: Box::leak(Box::new(Silent)),
                    });
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .map_err(|e| TrainError::Settings(format!("cannot start a worker: {e}")))?;
                    run_guarded(&mut comm, |comm| {
                        pool.install(|| train_rank(spec, data, options, comm))
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut trained = None;
    let mut failures = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(Some(t)) => trained = Some(t),
            Ok(None) => {}
            Err(e) => failures.push(e),
        }
    }
    // Report the rank that failed first, not the peers it released.
    if let Some(i) = failures
        .iter()
        .position(|e| !matches!(e, TrainError::PeerFailed { .. }))
    {
        return Err(failures.swap_remove(i));
    }
    match failures.pop() {
        Some(e) => Err(e),
        None => Ok(trained),
    }
}

/// Runs one rank's work; when it fails or panics the other ranks are told, so none waits.
pub fn run_guarded<C: Communicator, T>(
    comm: &mut C,
    work: impl FnOnce(&mut C) -> Result<T, TrainError>,
) -> Result<T, TrainError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut *comm))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            comm.abort(&e.to_string());
            Err(e)
        }
        Err(panic) => {
            comm.abort("it panicked");
            std::panic::resume_unwind(panic)
        }
    }
}

/// Serialises the use of the engine's one process-wide random generator by local workers
/// (seeding, then initialising the weights), so draws stay reproducible. Dropout masks come
/// from each worker's own stream instead ([`with_step_dropout`]).
static ENGINE_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn engine_rng() -> std::sync::MutexGuard<'static, ()> {
    ENGINE_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// One rank of a training job (the only rank with [`Solo`]). Rank 0 returns the result;
/// the others return `None`.
pub fn train_rank(
    spec: &Spec,
    data: &Prepared,
    options: TrainOptions,
    comm: &mut dyn Communicator,
) -> Result<Option<Trained>, TrainError> {
    match &data.splits {
        Splits::Examples(examples) => train_examples(spec, data, examples, options, comm),
        Splits::Text(corpus) => language_model::train(spec, data, corpus, options, comm),
    }
}

/// A rank ready to take its first step: the network built (seeded) and restored from the
/// run's newest checkpoint (rank 0) or from rank 0's snapshot (the others).
pub(crate) struct Started<'a> {
    /// The network on the autodiff device.
    pub network: Network,
    /// The optimiser and its state.
    pub optim: ModuleOptimizer,
    /// Where the loop stands.
    pub state: LoopState,
    /// Rank 0's run folder and log.
    pub chronicle: Option<Chronicle>,
    /// The inference device.
    pub device: Device,
    /// The autodiff device.
    pub ad: Device,
    /// sha256 of the resolved spec.
    pub spec_hash: String,
    /// Where progress goes.
    pub progress: &'a mut (dyn Progress + Send),
}

/// Builds, opens the run (rank 0) and synchronises the ranks.
pub(crate) fn start<'a>(
    spec: &Spec,
    data: &Prepared,
    norm: Option<InputNorm>,
    options: TrainOptions<'a>,
    comm: &mut dyn Communicator,
) -> Result<Started<'a>, TrainError> {
    let (rank, world) = (comm.rank(), comm.size());
    let leader = rank == 0;
    let spec_hash = spec.result_hash();
    let device = modelforge_model::device(&options.device)?;
    let ad = device.clone().autodiff();
    // Build on the autodiff device with seeded initialisation.
    let mut network = {
        let _rng = engine_rng();
        ad.seed(spec.train.seed);
        let network = Network::new(spec, &ad);
        let network = match norm {
            Some(norm) => network.with_norm(norm),
            None => network,
        };
        // Parameters initialise lazily: draw them now, while the generator is ours.
        ParamList::of(&network);
        network
    };
    let mut optim = optimizer::build(spec.train.optimizer.get_ref());
    let mut state = fresh_state();

    // Rank 0 opens the run (new or resumed); the others start from its snapshot.
    let chronicle = match leader {
        true => {
            let (chronicle, latest) = Chronicle::open(spec, data, &options, &spec_hash, world)?;
            if let Some((dir, snapshot)) = latest {
                (network, optim, state) = snapshot.restore(&dir, network, optim, &ad)?;
            }
            Some(chronicle)
        }
        false => None,
    };
    if world > 1 {
        let identity = format!(
            "spec {}, data {}, {} parameter values",
            &spec_hash[..12],
            &data.fingerprint[..12.min(data.fingerprint.len())],
            ParamList::of(&network).values()
        );
        agree(comm, &identity)?;
        let at = Collective {
            op: "broadcast(snapshot)",
            step: state.step,
        };
        let mut bytes = match leader {
            true => Snapshot::capture(&network, &optim, &state)?.to_bytes(),
            false => Vec::new(),
        };
        comm.broadcast(&mut bytes, at)?;
        if !leader {
            (network, optim, state) = Snapshot::from_bytes(&bytes)?.restore(
                Path::new("the snapshot from rank 0"),
                network,
                optim,
                &ad,
            )?;
        }
    }
    Ok(Started {
        network,
        optim,
        state,
        chronicle,
        device,
        ad,
        spec_hash,
        progress: options.progress,
    })
}

/// How a rank's loop ended.
pub(crate) struct Ending {
    /// The trained network, or why the loop stopped.
    pub outcome: Result<Network, TrainError>,
    /// The loop state at the end.
    pub state: LoopState,
    /// The last figures.
    pub metrics: BTreeMap<String, f64>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Whether the progress receiver pruned the run.
    pub pruned: bool,
}

/// Rank 0 writes the weights and the run's final record; the other ranks return `None`.
pub(crate) fn finish(
    spec: &Spec,
    data: &Prepared,
    chronicle: Option<Chronicle>,
    spec_hash: String,
    ending: Ending,
) -> Result<Option<Trained>, TrainError> {
    let Ending {
        outcome,
        state,
        metrics: last_metrics,
        stopped_early,
        pruned,
    } = ending;
    let Some(mut chronicle) = chronicle else {
        return outcome.map(|_| None);
    };
    let network = match outcome {
        Ok(network) => network.valid(),
        Err(e) => {
            chronicle.info.status = "failed".into();
            chronicle.info.error = Some(e.to_string());
            chronicle.info.finished = Some(run::unix_now());
            chronicle.info.steps = state.step;
            run::write_info(&chronicle.dir, &chronicle.info)?;
            return Err(e);
        }
    };
    let weights = network.safetensors_bytes(BTreeMap::from([
        ("model".to_string(), spec.name().to_string()),
        ("run_id".to_string(), chronicle.info.run_id.clone()),
    ]));
    run::write_atomic(&chronicle.dir.join(run::WEIGHTS), &weights)?;
    let info = &mut chronicle.info;
    info.status = match (pruned, stopped_early) {
        (true, _) => "pruned",
        (false, true) => "stopped_early",
        (false, false) => "completed",
    }
    .into();
    info.finished = Some(run::unix_now());
    info.steps = state.step;
    info.metrics = last_metrics.clone();
    run::write_info(&chronicle.dir, info)?;
    Ok(Some(Trained {
        network,
        run_id: chronicle.info.run_id,
        run_dir: chronicle.dir,
        final_metrics: last_metrics,
        stopped_early,
        pruned,
        spec_hash,
        data_fingerprint: data.fingerprint.clone(),
    }))
}

/// The epoch loop over examples.
fn train_examples(
    spec: &Spec,
    data: &Prepared,
    examples: &Examples,
    options: TrainOptions,
    comm: &mut dyn Communicator,
) -> Result<Option<Trained>, TrainError> {
    let (rank, world) = (comm.rank(), comm.size());
    let leader = rank == 0;
    let t = &spec.train;
    let seed = t.seed;
    let epochs = *t.epochs.get_ref();
    let batch_size = *t.batch_size.get_ref();
    let loss_kind = spec.loss();
    let classes = class_count(spec);
    let has_classes = matches!(examples.train.targets, Targets::Classes(_));
    if let Some(es) = &t.early_stopping
        && es.get_ref().metric.starts_with("val_")
        && examples.validation.is_empty()
    {
        return Err(TrainError::Settings(format!(
            "early stopping watches {} but there is no validation split — set data.validation = 0.1",
            es.get_ref().metric
        )));
    }
    let norm = InputNorm {
        shift: examples.normalizer.shift.clone(),
        scale: examples.normalizer.scale.clone(),
    };
    let distributed = options.distributed;
    let Started {
        mut network,
        mut optim,
        mut state,
        mut chronicle,
        device,
        ad,
        spec_hash,
        progress,
    } = start(spec, data, Some(norm), options, comm)?;
    let n = examples.train.len();
    let batches = n.div_ceil(batch_size);
    let total_steps = batches * epochs;
    let update = Update::new(spec, &network, distributed, batches, total_steps, &device);
    let ckpt = t.checkpoint.get_ref().clone();
    if leader {
        progress.start(epochs, batches, state.step);
    }

    let mut buf = Vec::with_capacity(batch_size * examples.train.sample_len());
    let mut last_metrics = BTreeMap::new();
    let mut stopped_early = false;
    let mut pruned = false;
    let outcome: Result<Network, TrainError> = (|| {
        while state.epoch < epochs {
            let epoch = state.epoch;
            let started = Instant::now();
            let done_before = state.position;
            let order = permutation(seed, epoch as u64, n);
            for (b, rows) in order.chunks(batch_size).enumerate().skip(state.position) {
                let mine = parallel::shard(rows, rank, world);
                let mut step = Tally::default();
                let mut grads = GradientsParams::new();
                if !mine.is_empty() {
                    examples.train.gather_features(mine, &mut buf);
                    let x = network.input(&buf, mine.len(), &ad)?;
                    let logits = with_step_dropout(seed, state.step, rank, world, || {
                        network.forward_logits(x)
                    });
                    let width = logits.dims()[1];
                    let loss = batch_loss(
                        loss_kind,
                        logits.clone(),
                        &examples.train.targets,
                        mine,
                        &ad,
                    );
                    let loss_value: f64 = loss.clone().into_scalar::<f32>() as f64;
                    let outputs: Vec<f32> =
                        logits.into_data().try_to_vec::<f32>().expect("f32 logits");
                    step.add(
                        loss_value,
                        &outputs,
                        width,
                        &examples.train.targets,
                        mine,
                        None,
                    );
                    // Each rank's share of the batch mean, so that the sum over ranks is it.
                    let share = loss.mul_scalar(mine.len() as f32 / rows.len() as f32);
                    grads = GradientsParams::from_grads(share.backward(), &network);
                }
                let step = reduce_tally(comm, step, state.step)?;
                let lr;
                (network, lr) = update.apply(network, &mut optim, grads, comm, state.step)?;
                state.tally.merge(&step);
                state.step += 1;
                state.position = b + 1;
                let Some(chronicle) = chronicle.as_mut() else {
                    continue;
                };
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
                    chronicle.log.write(&json!({
                        "kind": "step", "epoch": epoch, "step": state.step, "loss": report.loss,
                        "accuracy": report.accuracy, "lr": lr,
                    }))?;
                }
                progress.step(&report);
                if ckpt.every_steps > 0
                    && state.step.is_multiple_of(ckpt.every_steps as u64)
                    && state.position < batches
                {
                    chronicle.checkpoint(&network, &optim, &mut state, ckpt.keep)?;
                }
            }
            // End of epoch: figures on train (running, the same on every rank) and
            // validation (rank 0), handed to every rank so all decide alike.
            let mut metrics = BTreeMap::new();
            if leader {
                metrics = state.tally.metrics("", has_classes);
                if !examples.validation.is_empty() {
                    let eval = evaluate(
                        &network.valid(),
                        &examples.validation,
                        loss_kind,
                        classes,
                        "val_",
                        &device,
                    )?;
                    metrics.extend(eval.metrics);
                }
                metrics.insert("lr".into(), update.lr(state.step.saturating_sub(1)));
            }
            let report = |metrics: &BTreeMap<String, f64>| EpochReport {
                epoch,
                epochs,
                metrics: metrics.clone(),
                seconds: started.elapsed().as_secs_f64(),
                steps: None,
            };
            pruned = leader && progress.prune(&report(&metrics));
            if world > 1 {
                let mut bytes = serde_json::to_vec(&(&metrics, pruned)).expect("metrics serialise");
                let at = Collective {
                    op: "broadcast(epoch metrics)",
                    step: state.step,
                };
                comm.broadcast(&mut bytes, at)?;
                (metrics, pruned) = serde_json::from_slice(&bytes).expect("rank 0 sent metrics");
            }
            if let Some(chronicle) = chronicle.as_mut() {
                let mut line = json!({ "kind": "epoch", "epoch": epoch, "step": state.step });
                for (k, v) in &metrics {
                    line[k] = json!(v);
                }
                chronicle.log.write(&line)?;
                progress.epoch(&report(&metrics));
            }
            if let Some(es) = &t.early_stopping {
                let es = es.get_ref();
                let value = metrics.get(&es.metric).copied().ok_or_else(|| {
                    TrainError::Settings(format!(
                        "early stopping metric {} is not computed for this task",
                        es.metric
                    ))
                })?;
                let mode =
                    es.mode
                        .unwrap_or(if modelforge_spec::train::higher_is_better(&es.metric) {
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
            if stopped_early || pruned {
                state.epoch = epochs;
            }
            if let Some(chronicle) = chronicle.as_mut()
                && ((ckpt.every_epochs > 0 && state.epoch.is_multiple_of(ckpt.every_epochs))
                    || state.epoch >= epochs)
            {
                chronicle.checkpoint(&network, &optim, &mut state, ckpt.keep)?;
            }
        }
        Ok(network)
    })();
    finish(
        spec,
        data,
        chronicle,
        spec_hash,
        Ending {
            outcome,
            state,
            metrics: last_metrics,
            stopped_early,
            pruned,
        },
    )
}

/// Runs a training forward pass with its dropout masks drawn from the stream of this step
/// and rank: a resumed run draws exactly what the uninterrupted one did, and workers draw
/// concurrently, each from its own stream (the same ones in local workers and over MPI).
pub(crate) fn with_step_dropout<T>(
    seed: u64,
    step: u64,
    rank: usize,
    world: usize,
    forward: impl FnOnce() -> T,
) -> T {
    let stream = match world {
        1 => mix(seed, step),
        _ => mix(mix(seed, step), rank as u64),
    };
    modelforge_model::with_dropout_stream(stream, forward)
}

/// A step's figures summed over the ranks; a loss that is not finite stops the run.
pub(crate) fn reduce_tally(
    comm: &mut dyn Communicator,
    mut step: Tally,
    at_step: u64,
) -> Result<Tally, TrainError> {
    if comm.size() > 1 {
        let mut sums = step.to_sums();
        let at = Collective {
            op: "all-reduce(metrics)",
            step: at_step,
        };
        comm.all_reduce_f64(&mut sums, at)?;
        step = Tally::from_sums(sums);
    }
    let loss = step.loss_sum / step.count.max(1) as f64;
    if !loss.is_finite() {
        return Err(TrainError::Diverged {
            step: at_step,
            value: loss,
        });
    }
    Ok(step)
}

/// The optimiser step every loop takes: gradients summed over the ranks, clipped, the
/// learning rate of the schedule, AdamW's decay on the weights it covers, the update.
pub(crate) struct Update {
    /// The parameters, in the order the ranks all-reduce them (rank 0's ids).
    params: ParamList,
    bucket_floats: usize,
    clip: Option<f64>,
    decay: f64,
    schedule: modelforge_spec::ScheduleSpec,
    base_lr: f64,
    steps_per_epoch: usize,
    total_steps: usize,
    device: Device,
}

impl Update {
    /// For a network after the ranks have synchronised (they carry rank 0's parameter ids).
    pub(crate) fn new(
        spec: &Spec,
        network: &Network,
        distributed: Distributed,
        steps_per_epoch: usize,
        total_steps: usize,
        device: &Device,
    ) -> Update {
        let t = &spec.train;
        Update {
            params: ParamList::of(network),
            bucket_floats: distributed.bucket_floats,
            clip: t.clip_grad_norm.as_ref().map(|c| *c.get_ref()),
            decay: optimizer::decoupled_decay(t.optimizer.get_ref()),
            schedule: t.schedule.get_ref().clone(),
            base_lr: t.optimizer.get_ref().lr(),
            steps_per_epoch,
            total_steps,
            device: device.clone(),
        }
    }

    /// The learning rate at a 0-based step.
    pub(crate) fn lr(&self, step: u64) -> f64 {
        schedule::learning_rate(
            &self.schedule,
            self.base_lr,
            step as usize,
            self.steps_per_epoch,
            self.total_steps,
        )
    }

    /// Takes optimiser step `step` with this rank's gradients; returns the network and the
    /// learning rate used.
    pub(crate) fn apply(
        &self,
        mut network: Network,
        optim: &mut ModuleOptimizer,
        mut grads: GradientsParams,
        comm: &mut dyn Communicator,
        step: u64,
    ) -> Result<(Network, f64), TrainError> {
        if comm.size() > 1 {
            let (params, bucket) = (&self.params, self.bucket_floats);
            gradients::all_reduce(params, &mut grads, comm, bucket, step, &self.device)?;
        }
        if let Some(max) = self.clip {
            optimizer::clip_global_norm(&network, &mut grads, max);
        }
        let lr = self.lr(step);
        if self.decay > 0.0 {
            network = network.decay_weights((1.0 - lr * self.decay) as f32);
        }
        Ok((optim.step(lr, network, grads), lr))
    }
}

/// Stops every rank before any step when the ranks do not run the same model on the same
/// data. The first rank that differs reports what it has and what rank 0 has; the others
/// wait for it to stop the job.
fn agree(comm: &mut dyn Communicator, identity: &str) -> Result<(), TrainError> {
    let at = Collective {
        op: "broadcast(identity)",
        step: 0,
    };
    let mut theirs = identity.as_bytes().to_vec();
    comm.broadcast(&mut theirs, at)?;
    let mut differ = vec![0.0; comm.size()];
    differ[comm.rank()] = f64::from(u8::from(theirs != identity.as_bytes()));
    comm.all_reduce_f64(&mut differ, at)?;
    let Some(first) = differ.iter().position(|&d| d > 0.0) else {
        return Ok(());
    };
    let message = format!(
        "rank {first} has {identity} but rank 0 has {} — start every rank with the same spec, data and modelforge",
        String::from_utf8_lossy(&theirs)
    );
    if first != comm.rank() {
        comm.barrier(at)?;
    }
    Err(TrainError::World(message))
}

/// Rank 0's record of a run: its folder, `run.json` and `metrics.jsonl`.
pub(crate) struct Chronicle {
    /// The run folder.
    pub dir: PathBuf,
    /// `run.json`.
    pub info: RunInfo,
    /// `metrics.jsonl`.
    pub log: run::MetricsLog,
}

impl Chronicle {
    /// Creates a run folder, or opens the one to resume with its newest checkpoint.
    fn open(
        spec: &Spec,
        data: &Prepared,
        options: &TrainOptions,
        spec_hash: &str,
        ranks: usize,
    ) -> Result<(Chronicle, Option<(PathBuf, Snapshot)>), TrainError> {
        let (dir, info, latest) = match &options.resume {
            Some(run) => {
                let dir = run::locate(&options.runs_dir, run)?;
                let info = run::read_info(&dir)?;
                for (what, ours, theirs) in [
                    ("spec", spec_hash, &info.spec_hash),
                    ("data", &data.fingerprint, &info.data_fingerprint),
                ] {
                    if ours != theirs {
                        return Err(TrainError::ResumeMismatch {
                            run: info.run_id,
                            what: what.into(),
                        });
                    }
                }
                let latest = checkpoint::list(&dir)?.pop();
                (dir, info, latest)
            }
            None => {
                std::fs::create_dir_all(&options.runs_dir)
                    .map_err(|e| TrainError::io(&options.runs_dir, e))?;
                let run_id = run::new_run_id(spec.name(), &options.runs_dir);
                let dir = options.runs_dir.join(&run_id);
                std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
                run::write_atomic(&dir.join("spec.toml"), spec.to_toml().as_bytes())?;
                let info = RunInfo {
                    run_id,
                    model: spec.name().into(),
                    status: "running".into(),
                    seed: spec.train.seed,
                    spec_hash: spec_hash.into(),
                    data_fingerprint: data.fingerprint.clone(),
                    data_files: data.files.clone(),
                    environment: Environment::current(options.threads, ranks, &options.device),
                    started: run::unix_now(),
                    finished: None,
                    steps: 0,
                    metrics: BTreeMap::new(),
                    error: None,
                    kind: "train".into(),
                    evaluated: None,
                };
                run::write_info(&dir, &info)?;
                (dir, info, None)
            }
        };
        // The newest checkpoint, read once: its loop state says how much of the log stays.
        let latest = latest
            .map(|dir| Snapshot::read(&dir).map(|snapshot| (dir, snapshot)))
            .transpose()?;
        let metrics_bytes = latest
            .as_ref()
            .and_then(|(_, snapshot)| serde_json::from_slice::<LoopState>(&snapshot.state).ok())
            .map_or(0, |s| s.metrics_bytes);
        let log = run::MetricsLog::open(&dir, metrics_bytes)?;
        Ok((Chronicle { dir, info, log }, latest))
    }

    /// Writes a checkpoint of the loop as it stands.
    pub(crate) fn checkpoint(
        &mut self,
        network: &Network,
        optim: &modelforge_model::burn::optim::ModuleOptimizer,
        state: &mut LoopState,
        keep: usize,
    ) -> Result<(), TrainError> {
        state.metrics_bytes = self.log.synced_len()?;
        let snapshot = Snapshot::capture(network, optim, state)?;
        checkpoint::save(&self.dir, &snapshot, state.step, keep)?;
        Ok(())
    }
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
