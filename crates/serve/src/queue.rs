//! One version's batching queue and its dedicated compute thread.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::explanation::{ExplainJob, ExplainRequest, Explanation};
use crate::tensor::Values;
use crate::{InferRequest, Inference, ModelInfo, Runnable, ServeError};

/// Batching limits of a queue.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Largest batch one compute call takes.
    pub max_batch_size: usize,
    /// How long the first request of a batch waits for others.
    pub max_queue_delay: Duration,
    /// Requests the queue holds before refusing more.
    pub max_queue_len: usize,
    /// How long the compute thread, while lightly loaded, polls for the next request
    /// before it parks: waking a parked thread costs tens of µs (more on a VM whose idle
    /// core halts), a large share of a request at low concurrency. Zero never polls.
    pub spin: Duration,
}

/// Cumulative-bucket histogram (Prometheus semantics: `counts[i]` counts values ≤ `bounds[i]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds of the buckets, ascending (the +Inf bucket is `count`).
    pub bounds: &'static [f64],
    /// Values at or below each bound.
    pub counts: Vec<u64>,
    /// Sum of all values.
    pub sum: f64,
    /// Number of values.
    pub count: u64,
}

/// Latency buckets in seconds, 50 µs to 10 s.
pub const SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];
/// Batch-size buckets.
pub const SIZES: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

impl Histogram {
    /// An empty histogram over `bounds`.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one value.
    pub fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }
}

/// Counters in the shape of Triton's statistics extension, plus histograms for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Statistics {
    /// Successful requests.
    pub success: u64,
    /// Samples in successful requests (a request of batch 64 counts 64).
    pub inferences: u64,
    /// Failed requests.
    pub failure: u64,
    /// Total nanoseconds successful requests waited in the queue.
    pub queue_ns: u64,
    /// Total nanoseconds of compute for successful requests.
    pub compute_ns: u64,
    /// Compute calls.
    pub executions: u64,
    /// Compute calls per batch size: (count, total compute ns).
    pub batches: BTreeMap<usize, (u64, u64)>,
    /// Milliseconds since the Unix epoch of the last compute call.
    pub last_inference_ms: u64,
    /// Request latency (queue and compute), seconds.
    pub latency: Histogram,
    /// Time requests waited in the queue, seconds.
    pub queue_time: Histogram,
    /// Samples per compute call (sequences per decode step for a generating version).
    pub batch_size: Histogram,
    /// A generating version's own counters.
    pub generation: Option<crate::scheduler::GenerationStatistics>,
    /// Explanations, counted apart from inference.
    pub explanations: Explanations,
}

/// The counters of explanation requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanations {
    /// Answered requests.
    pub success: u64,
    /// Samples in answered requests.
    pub samples: u64,
    /// Failed requests.
    pub failure: u64,
    /// Total nanoseconds of compute of answered requests.
    pub compute_ns: u64,
    /// Request latency (queue and compute), seconds.
    pub latency: Histogram,
}

impl Default for Explanations {
    fn default() -> Self {
        Explanations {
            success: 0,
            samples: 0,
            failure: 0,
            compute_ns: 0,
            latency: Histogram::new(SECONDS),
        }
    }
}

impl Statistics {
    /// Records one compute call of `size` samples (sequences, for a decode step) that took
    /// `ns` nanoseconds.
    pub(crate) fn record_execution(&mut self, size: usize, ns: u64) {
        self.batch_size.observe(size as f64);
        let entry = self.batches.entry(size).or_default();
        entry.0 += 1;
        entry.1 += ns;
        self.last_inference_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
    }
}

impl Default for Statistics {
    fn default() -> Self {
        Statistics {
            success: 0,
            inferences: 0,
            failure: 0,
            queue_ns: 0,
            compute_ns: 0,
            executions: 0,
            batches: BTreeMap::new(),
            last_inference_ms: 0,
            latency: Histogram::new(SECONDS),
            queue_time: Histogram::new(SECONDS),
            batch_size: Histogram::new(SIZES),
            generation: None,
            explanations: Explanations::default(),
        }
    }
}

type Reply = oneshot::Sender<Result<Vec<Values>, ServeError>>;

/// Builds a fresh runnable of the same version (its files checked again), for a compute
/// thread to heal with after a panic.
pub type Reload = Box<dyn FnMut() -> Result<Box<dyn Runnable>, String> + Send>;

/// What became of a version's compute thread after panics.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Panics caught on the compute thread.
    pub(crate) crashes: u64,
    /// Set when the version could not be rebuilt after a panic: why.
    pub(crate) failed: Option<String>,
}

/// How a compute call failed, to answer each request of its batch.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The runnable returned an error.
    Compute(String),
    /// The runnable panicked: the panic's message.
    Crashed(String),
    /// An earlier panic left the version without a runnable: why.
    Unavailable(String),
}

impl Failure {
    /// The error a request of `info` gets.
    pub(crate) fn error(&self, info: &ModelInfo) -> ServeError {
        match self {
            Failure::Compute(e) => ServeError::Compute(e.clone()),
            Failure::Crashed(message) => ServeError::Crashed {
                model: info.name.clone(),
                version: info.version,
                message: message.clone(),
            },
            Failure::Unavailable(reason) => ServeError::Unavailable {
                model: info.name.clone(),
                version: info.version,
                reason: reason.clone(),
            },
        }
    }
}

/// Why a version without a reloader stays down after a panic.
pub(crate) const NOT_RELOADABLE: &str = "this version cannot be reloaded";

/// After a panic on a version's `thread` (compute or scheduler): builds its replacement
/// (a panic in that too is caught), counts the crash in `health` and, when no replacement
/// came, records why the version is down.
pub(crate) fn rebuild<T>(
    health: &Mutex<Health>,
    thread: &str,
    message: &str,
    build: impl FnOnce() -> Result<T, String>,
) -> Option<T> {
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(build)).unwrap_or_else(|p| {
        Err(format!(
            "the reload panicked too: {}",
            panic_message(p.as_ref())
        ))
    });
    let mut health = health.lock().expect("health lock");
    health.crashes += 1;
    built
        .map_err(|e| {
            health.failed = Some(format!(
                "its {thread} thread crashed ({message}) and reloading it failed: {e}"
            ))
        })
        .ok()
}

/// Starts a version's named thread running `work` inside a pool of its own, as many threads
/// as the global compute pool: the engine's parallel kernels then run on that thread and its
/// pool's peers, instead of being handed one by one to the global pool from outside it (each
/// a wake-up and a sleep, about as long as a small kernel) and waited for.
pub(crate) fn start_thread(
    name: String,
    work: impl FnOnce() + Send + 'static,
) -> Result<(), String> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(rayon::current_num_threads())
        .thread_name({
            let name = name.clone();
            move |i| format!("{name}-{i}")
        })
        .build()
        .map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name(name)
        .spawn(move || pool.install(work))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The message a panic carried.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs a runnable once on one sample of zeros and checks what it gives.
fn warm(info: &ModelInfo, runnable: &mut dyn Runnable) -> Result<(), String> {
    let zeros = crate::tensor::zeros_for(&info.manifest.inputs)?;
    let out = runnable
        .run(zeros, 1)
        .map_err(|e| format!("warm-up failed: {e}"))?;
    check_outputs(info, &out, 1).map_err(|e| format!("warm-up: {e}"))
}

/// An inference request on its way to the compute thread.
struct Job {
    inputs: Vec<Values>,
    batch: usize,
    reply: Reply,
    enqueued: Instant,
    deadline: Option<Instant>,
}

/// What the compute thread is asked to do: inference jobs are batched together, an
/// explanation (a batch of its own, of integration steps and noisy copies) runs alone.
enum Task {
    Infer(Job),
    Explain(Box<ExplainJob<(Vec<Values>, usize)>>),
}

/// A served version: submit requests, read statistics.
pub struct Queue {
    info: ModelInfo,
    tx: SyncSender<Task>,
    stats: Arc<Mutex<Statistics>>,
    health: Arc<Mutex<Health>>,
}

/// Checks that a compute call gave one output per manifest output, each with `batch`
/// samples of its datatype.
fn check_outputs(info: &ModelInfo, outputs: &[Values], batch: usize) -> Result<(), String> {
    let want = &info.manifest.outputs;
    if outputs.len() != want.len() {
        return Err(format!(
            "the model gave {} outputs but its manifest names {}",
            outputs.len(),
            want.len()
        ));
    }
    for (t, out) in want.iter().zip(outputs) {
        if out.datatype() != t.datatype || out.len() != batch * t.len() {
            return Err(format!(
                "the model gave {} {} values for output \"{}\" but a batch of {batch} needs {} {}",
                out.len(),
                out.datatype(),
                t.name,
                batch * t.len(),
                t.datatype
            ));
        }
    }
    Ok(())
}

/// The compute thread polls for the next request (see [`QueueConfig::spin`]) only while it
/// computes less than this share of the time and its last batch held one request: under
/// load the polling would take the cores the protocol threads need.
const SPIN_WHILE_BUSY_BELOW: f64 = 0.3;

/// The compute thread: gathers jobs into batches, runs them and answers each.
struct Worker {
    info: ModelInfo,
    runnable: Box<dyn Runnable>,
    rx: Receiver<Task>,
    stats: Arc<Mutex<Statistics>>,
    max_batch_size: usize,
    max_queue_delay: Duration,
    /// Moving average of the share of time spent computing.
    busy: f64,
    /// When the last compute call ended.
    idle_since: Instant,
    /// Requests in the last compute call.
    last_batch_jobs: usize,
    /// How long to poll before parking.
    spin: Duration,
    /// Rebuilds the runnable after a panic.
    reload: Option<Reload>,
    /// Panics caught, and whether the version survived them.
    health: Arc<Mutex<Health>>,
}

impl Worker {
    /// The next job, polled for up to `spin` while the thread is mostly idle, then waited
    /// for parked; None once every sender is gone.
    fn next_job(&self) -> Option<Task> {
        let spin = match self.busy < SPIN_WHILE_BUSY_BELOW && self.last_batch_jobs == 1 {
            true => self.spin,
            false => Duration::ZERO,
        };
        let until = Instant::now() + spin;
        loop {
            match self.rx.try_recv() {
                Ok(j) => return Some(j),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) if Instant::now() < until => std::hint::spin_loop(),
                Err(TryRecvError::Empty) => return self.rx.recv().ok(),
            }
        }
    }

    fn run(mut self) {
        let mut carry: Option<Task> = None;
        loop {
            let first = match carry.take() {
                Some(t) => t,
                None => match self.next_job() {
                    Some(t) => t,
                    None => return,
                },
            };
            let first = match first {
                Task::Infer(j) => j,
                Task::Explain(e) => {
                    self.explain(*e);
                    continue;
                }
            };
            let deadline = Instant::now() + self.max_queue_delay;
            let mut size = first.batch;
            let mut jobs = vec![first];
            while size < self.max_batch_size {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(left) {
                    Ok(Task::Infer(j)) if size + j.batch <= self.max_batch_size => {
                        size += j.batch;
                        jobs.push(j);
                    }
                    Ok(other) => {
                        carry = Some(other);
                        break;
                    }
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            let started = Instant::now();
            self.last_batch_jobs = jobs.len();
            self.compute(jobs);
            let busy = started.elapsed().as_secs_f64();
            let idle = started.duration_since(self.idle_since).as_secs_f64();
            self.busy = 0.9 * self.busy + 0.1 * busy / (busy + idle).max(f64::EPSILON);
            self.idle_since = Instant::now();
        }
    }

    /// Runs `f` on the runnable, catching a panic: the request fails with the panic's
    /// message (500) and the version is rebuilt, or, when that fails, answers every later
    /// request as unavailable with the reason.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut dyn Runnable) -> T) -> Result<T, Failure> {
        if let Some(reason) = &self.health.lock().expect("health lock").failed {
            return Err(Failure::Unavailable(reason.clone()));
        }
        let runnable = self.runnable.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(runnable))) {
            Ok(v) => Ok(v),
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                self.heal(&message);
                Err(Failure::Crashed(message))
            }
        }
    }

    /// Replaces a runnable that panicked with a fresh, warmed one; or records why not.
    fn heal(&mut self, message: &str) {
        let info = &self.info;
        let reload = self.reload.as_mut();
        let fresh = rebuild(&self.health, "compute", message, || {
            let mut fresh = reload.ok_or(NOT_RELOADABLE)?()?;
            warm(info, fresh.as_mut()).map(|()| fresh)
        });
        if let Some(fresh) = fresh {
            self.runnable = fresh;
        }
    }

    /// Runs an explanation on its own, unless its caller left or its deadline passed.
    fn explain(&mut self, job: ExplainJob<(Vec<Values>, usize)>) {
        let (info, stats) = (self.info.clone(), self.stats.clone());
        job.run(&info, &stats, |(inputs, batch), settings| {
            let explained = self
                .guarded(|r| r.explain(inputs, batch, settings))
                .map_err(|failure| failure.error(&info))?;
            Ok(explained.map(|e| {
                e.and_then(|e| {
                    check_outputs(&info, &e.outputs, batch)
                        .map(|_| e)
                        .map_err(ServeError::Compute)
                })
            }))
        });
    }

    /// Drops the jobs whose callers left, answers the late ones, runs the rest as one batch.
    fn compute(&mut self, jobs: Vec<Job>) {
        // Callers that gave up, or whose deadline passed, are dropped before compute.
        // A late request counts as failed once, whether its caller stopped waiting first
        // or hears it now.
        let now = Instant::now();
        let (late, mut jobs): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .filter(|j| !j.reply.is_closed() || j.deadline.is_some_and(|d| d <= now))
            .partition(|j| j.deadline.is_some_and(|d| d <= now));
        if !late.is_empty() {
            self.stats.lock().expect("stats lock").failure += late.len() as u64;
            for j in late {
                let waited = now.duration_since(j.enqueued);
                let _ = j.reply.send(Err(ServeError::DeadlineExceeded(waited)));
            }
        }
        if jobs.is_empty() {
            return;
        }
        let size: usize = jobs.iter().map(|j| j.batch).sum();
        let inputs = match jobs.as_mut_slice() {
            // A lone request's tensors go to the model as they are.
            [only] => Ok(std::mem::take(&mut only.inputs)),
            _ => (0..self.info.manifest.inputs.len())
                .map(|i| Values::concat(&jobs.iter().map(|j| &j.inputs[i]).collect::<Vec<_>>()))
                .collect(),
        };
        let started = Instant::now();
        let result = inputs.map_err(Failure::Compute).and_then(|inputs| {
            match self.guarded(|r| r.run(inputs, size)) {
                Ok(Ok(outputs)) => check_outputs(&self.info, &outputs, size)
                    .map(|_| outputs)
                    .map_err(Failure::Compute),
                Ok(Err(e)) => Err(Failure::Compute(e)),
                Err(failure) => Err(failure),
            }
        });
        let compute_ns = started.elapsed().as_nanos() as u64;
        let mut s = self.stats.lock().expect("stats lock");
        s.executions += 1;
        s.record_execution(size, compute_ns);
        let outputs = match result {
            Ok(outputs) => outputs,
            Err(failure) => {
                for j in jobs {
                    s.failure += 1;
                    let _ = j.reply.send(Err(failure.error(&self.info)));
                }
                return;
            }
        };
        let lens = self.info.manifest.output_lens();
        let mut at = 0;
        let single = jobs.len() == 1;
        let mut outputs = Some(outputs);
        for j in jobs {
            let part = match single {
                true => outputs.take().expect("one job"),
                false => outputs
                    .as_ref()
                    .expect("outputs")
                    .iter()
                    .zip(&lens)
                    .map(|(o, len)| o.slice(at * len..(at + j.batch) * len))
                    .collect(),
            };
            at += j.batch;
            s.success += 1;
            s.inferences += j.batch as u64;
            let queued = started.duration_since(j.enqueued);
            s.queue_ns += queued.as_nanos() as u64;
            s.compute_ns += compute_ns;
            s.queue_time.observe(queued.as_secs_f64());
            s.latency.observe(j.enqueued.elapsed().as_secs_f64());
            let _ = j.reply.send(Ok(part));
        }
    }
}

impl Queue {
    /// Warms the runnable with one sample of zeros, then starts its compute thread, which
    /// heals with `reload` after a panic.
    pub fn start(
        info: ModelInfo,
        mut runnable: Box<dyn Runnable>,
        config: QueueConfig,
        reload: Option<Reload>,
    ) -> Result<Queue, String> {
        warm(&info, runnable.as_mut())?;
        let (tx, rx) = mpsc::sync_channel::<Task>(config.max_queue_len);
        let stats = Arc::new(Mutex::new(Statistics::default()));
        let health = Arc::new(Mutex::new(Health::default()));
        let worker = Worker {
            info: info.clone(),
            runnable,
            rx,
            stats: stats.clone(),
            // A model without a batch axis runs each request alone.
            max_batch_size: match info.manifest.batchable {
                true => config.max_batch_size,
                false => 1,
            },
            max_queue_delay: config.max_queue_delay,
            busy: 0.0,
            idle_since: Instant::now(),
            last_batch_jobs: 1,
            spin: config.spin,
            reload,
            health: health.clone(),
        };
        start_thread(
            format!("compute-{}-{}", info.name, info.version),
            move || worker.run(),
        )
        .map_err(|e| format!("cannot start a compute thread: {e}"))?;
        Ok(Queue {
            info,
            tx,
            stats,
            health,
        })
    }

    /// Panics caught on this version's compute thread so far.
    pub fn crashes(&self) -> u64 {
        self.health.lock().expect("health lock").crashes
    }

    /// Why the version stopped answering, when a panic left it without a runnable.
    pub fn failed(&self) -> Option<String> {
        self.health.lock().expect("health lock").failed.clone()
    }

    /// What this version computes.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// A snapshot of the counters.
    pub fn statistics(&self) -> Statistics {
        self.stats.lock().expect("stats lock").clone()
    }

    /// Checks a request's inputs (and the names of the outputs it asks for) against this
    /// version and runs them, batched with concurrent requests, within its deadline.
    pub async fn infer(&self, request: InferRequest) -> Result<Inference, ServeError> {
        let info = self.info.clone();
        let wanted = info.check_outputs(&request.outputs)?;
        let (batch, inputs) = info.check_inputs(request.inputs)?;
        let deadline = request.timeout.map(|t| Instant::now() + t);
        let reply = self.submit(inputs, batch, deadline)?;
        let values = answer(reply, request.timeout).await?;
        let outputs = info.output_tensors(batch, values, &wanted);
        Ok(Inference { info, outputs })
    }

    /// Checks an explanation request's inputs against this version and runs it on the
    /// compute thread, between inference batches, within its deadline.
    pub async fn explain(&self, request: ExplainRequest) -> Result<Explanation, ServeError> {
        let info = self.info.clone();
        let (batch, inputs) = info.check_inputs(request.inputs)?;
        let (job, rx) = ExplainJob::new((inputs, batch), request.settings, request.timeout);
        self.send(Task::Explain(Box::new(job)), |s| {
            s.explanations.failure += 1
        })?;
        let explained = answer(rx, request.timeout).await?;
        Ok(Explanation::new(info, batch, explained))
    }

    /// Enqueues a request's checked inputs (skipped if still queued at `deadline`); the
    /// outputs arrive on the returned channel.
    pub fn submit(
        &self,
        inputs: Vec<Values>,
        batch: usize,
        deadline: Option<Instant>,
    ) -> Result<oneshot::Receiver<Result<Vec<Values>, ServeError>>, ServeError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            inputs,
            batch,
            reply,
            enqueued: Instant::now(),
            deadline,
        };
        self.send(Task::Infer(job), |s| s.failure += 1)?;
        Ok(rx)
    }

    /// Hands a task to the compute thread; a full queue counts as a failure (`count`) and
    /// refuses it.
    fn send(&self, task: Task, count: impl FnOnce(&mut Statistics)) -> Result<(), ServeError> {
        match self.tx.try_send(task) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                count(&mut self.stats.lock().expect("stats lock"));
                Err(ServeError::Overloaded(self.info.name.clone()))
            }
            Err(TrySendError::Disconnected(_)) => {
                Err(ServeError::Compute("the compute thread stopped".into()))
            }
        }
    }
}

/// The compute thread's answer, waited for at most `timeout`: dropping the channel on
/// timeout tells the compute thread to skip the request.
pub(crate) async fn answer<T>(
    reply: oneshot::Receiver<Result<T, ServeError>>,
    timeout: Option<Duration>,
) -> Result<T, ServeError> {
    let answer = match timeout {
        Some(t) => tokio::time::timeout(t, reply)
            .await
            .map_err(|_| ServeError::DeadlineExceeded(t))?,
        None => reply.await,
    };
    answer.map_err(|_| ServeError::Compute("the compute thread stopped".into()))?
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::explanation::Explained;
    use modelforge_registry::{Lineage, Manifest, TensorInfo};

    /// Doubles its input and counts calls.
    struct Double(Arc<Mutex<Vec<usize>>>);

    impl Runnable for Double {
        fn run(&mut self, inputs: Vec<Values>, batch: usize) -> Result<Vec<Values>, String> {
            self.0.lock().unwrap().push(batch);
            Ok(vec![Values::F32(
                inputs[0].to_f32().iter().map(|v| v * 2.0).collect(),
            )])
        }
    }

    pub(crate) fn info() -> ModelInfo {
        let t = |n: &str| TensorInfo {
            name: n.into(),
            datatype: "FP32".into(),
            shape: vec![2],
            source: None,
        };
        ModelInfo {
            name: "m".into(),
            version: 1,
            manifest: Manifest {
                name: "m".into(),
                version: 1,
                format: "test".into(),
                inputs: vec![t("x")],
                outputs: vec![t("y")],
                batchable: true,
                task: "regression".into(),
                labels: vec![],
                metrics: Default::default(),
                lineage: Lineage {
                    spec_hash: String::new(),
                    data_fingerprint: String::new(),
                    run_id: String::new(),
                    created: 0,
                    modelforge_version: String::new(),
                },
            },
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_are_batched_and_split_back() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let config = QueueConfig {
            max_batch_size: 8,
            max_queue_delay: Duration::from_millis(200),
            max_queue_len: 16,
            spin: Duration::ZERO,
        };
        let q =
            Arc::new(Queue::start(info(), Box::new(Double(calls.clone())), config, None).unwrap());
        let mut handles = Vec::new();
        for i in 0..4 {
            let q = q.clone();
            handles.push(tokio::spawn(async move {
                let v = i as f32;
                q.submit(vec![Values::F32(vec![v, v + 0.5])], 1, None)
                    .unwrap()
                    .await
                    .unwrap()
                    .unwrap()
            }));
        }
        for (i, h) in handles.into_iter().enumerate() {
            let v = i as f32;
            assert_eq!(
                h.await.unwrap(),
                vec![Values::F32(vec![2.0 * v, 2.0 * v + 1.0])]
            );
        }
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls[0], 1, "warm-up runs one sample");
        assert!(
            calls.len() < 5,
            "four requests within the delay share compute calls: {calls:?}"
        );
        let s = q.statistics();
        assert_eq!(s.success, 4);
        assert_eq!(s.batches.values().map(|b| b.0).sum::<u64>(), s.executions);
        assert_eq!(s.latency.count, 4);
        assert_eq!(s.batch_size.count, s.executions);
    }

    /// Doubles its input, and panics on an input value of 13.
    pub(crate) struct Fragile;

    impl Runnable for Fragile {
        fn run(&mut self, inputs: Vec<Values>, _batch: usize) -> Result<Vec<Values>, String> {
            let x = inputs[0].to_f32();
            if x.contains(&13.0) {
                panic!("thirteen");
            }
            Ok(vec![Values::F32(x.iter().map(|v| v * 2.0).collect())])
        }
    }

    fn one_at_a_time() -> QueueConfig {
        QueueConfig {
            max_batch_size: 1,
            max_queue_delay: Duration::ZERO,
            max_queue_len: 16,
            spin: Duration::ZERO,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_fails_its_request_and_the_version_heals() {
        let reloads = Arc::new(Mutex::new(0));
        let counter = reloads.clone();
        let reload: Reload = Box::new(move || {
            *counter.lock().unwrap() += 1;
            Ok(Box::new(Fragile) as Box<dyn Runnable>)
        });
        let q = Queue::start(info(), Box::new(Fragile), one_at_a_time(), Some(reload)).unwrap();
        let ask = |v: f32| q.submit(vec![Values::F32(vec![v, 1.0])], 1, None).unwrap();
        let e = ask(13.0).await.unwrap().unwrap_err();
        assert!(
            matches!(&e, ServeError::Crashed { message, .. } if message == "thirteen"),
            "{e}"
        );
        assert_eq!(
            ask(2.0).await.unwrap().unwrap(),
            vec![Values::F32(vec![4.0, 2.0])]
        );
        assert_eq!((q.crashes(), *reloads.lock().unwrap()), (1, 1));
        assert_eq!(q.failed(), None);
        let s = q.statistics();
        assert_eq!((s.success, s.failure), (1, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_that_cannot_be_rebuilt_answers_unavailable_with_the_reason() {
        let reload: Reload = Box::new(|| Err("weights.safetensors is missing".into()));
        let q = Queue::start(info(), Box::new(Fragile), one_at_a_time(), Some(reload)).unwrap();
        let ask = |v: f32| q.submit(vec![Values::F32(vec![v, 1.0])], 1, None).unwrap();
        let crashed = ask(13.0).await.unwrap().unwrap_err();
        assert!(matches!(crashed, ServeError::Crashed { .. }), "{crashed}");
        let later = ask(2.0).await.unwrap().unwrap_err();
        let reason = q.failed().expect("failed");
        assert!(
            reason.contains("thirteen") && reason.contains("weights.safetensors is missing"),
            "{reason}"
        );
        assert!(
            matches!(&later, ServeError::Unavailable { reason: r, .. } if *r == reason),
            "{later}"
        );
    }

    /// Takes 300 ms per call after warm-up and records the batch sizes it saw.
    struct Slow(Arc<Mutex<Vec<usize>>>);

    impl Runnable for Slow {
        fn run(&mut self, inputs: Vec<Values>, batch: usize) -> Result<Vec<Values>, String> {
            let mut calls = self.0.lock().unwrap();
            if !calls.is_empty() {
                std::thread::sleep(Duration::from_millis(300));
            }
            calls.push(batch);
            Ok(inputs)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_past_its_deadline_is_never_computed() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let config = QueueConfig {
            max_batch_size: 1,
            max_queue_delay: Duration::from_micros(10),
            max_queue_len: 16,
            spin: Duration::ZERO,
        };
        let q = Queue::start(info(), Box::new(Slow(calls.clone())), config, None).unwrap();
        // The first request occupies the compute thread for 300 ms; the second may wait 50.
        let f32s = |v: &[f32]| vec![Values::F32(v.to_vec())];
        let first = q.submit(f32s(&[1.0, 2.0]), 1, None).unwrap();
        let deadline = Instant::now() + Duration::from_millis(50);
        let second = q.submit(f32s(&[3.0, 4.0]), 1, Some(deadline)).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), f32s(&[1.0, 2.0]));
        let late = second.await.unwrap().unwrap_err();
        assert!(matches!(late, ServeError::DeadlineExceeded(_)), "{late}");
        assert_eq!(
            calls.lock().unwrap().len(),
            2,
            "warm-up and the first request only"
        );
        let s = q.statistics();
        assert_eq!((s.success, s.failure), (1, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_polling_compute_thread_answers_and_ends_with_its_queue() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let config = QueueConfig {
            max_batch_size: 8,
            max_queue_delay: Duration::ZERO,
            max_queue_len: 16,
            spin: Duration::from_millis(5),
        };
        let q = Queue::start(info(), Box::new(Double(calls.clone())), config, None).unwrap();
        for i in 0..20 {
            let v = i as f32;
            let answer = q
                .submit(vec![Values::F32(vec![v, 1.0])], 1, None)
                .unwrap()
                .await
                .unwrap()
                .unwrap();
            assert_eq!(answer, vec![Values::F32(vec![2.0 * v, 2.0])]);
        }
        // Dropping the queue ends the thread, polling or parked, and frees the model.
        drop(q);
        for _ in 0..1000 {
            if Arc::strong_count(&calls) == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the compute thread outlived its queue");
    }

    /// Doubles its input; explains by returning the input as its attributions.
    struct Explains;

    impl Runnable for Explains {
        fn run(&mut self, inputs: Vec<Values>, _batch: usize) -> Result<Vec<Values>, String> {
            Ok(vec![Values::F32(
                inputs[0].to_f32().iter().map(|v| v * 2.0).collect(),
            )])
        }

        fn explain(
            &mut self,
            inputs: Vec<Values>,
            batch: usize,
            settings: &modelforge_spec::explain::Explain,
        ) -> Option<Result<Explained, ServeError>> {
            let x = inputs[0].to_f32();
            if settings.target == modelforge_spec::explain::Target::Index(9) {
                return Some(Err(ServeError::BadRequest("target 9".into())));
            }
            Some(Ok(Explained {
                outputs: self.run(inputs, batch).unwrap(),
                attributions: x,
                shape: vec![2],
                targets: vec![0; batch],
                delta: None,
                pieces: None,
            }))
        }
    }

    fn explain_request(x: &[f32], target: Option<usize>) -> ExplainRequest {
        ExplainRequest {
            inputs: vec![crate::InputTensor {
                name: Some("x".into()),
                datatype: "FP32".into(),
                shape: vec![(x.len() / 2) as i64, 2],
                data: Ok(Values::F32(x.to_vec())),
            }],
            settings: modelforge_spec::explain::Explain {
                target: target.map_or(modelforge_spec::explain::Target::Predicted, |t| {
                    modelforge_spec::explain::Target::Index(t)
                }),
                ..Default::default()
            },
            timeout: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn explanations_run_between_inference_batches_and_count_apart() {
        let config = QueueConfig {
            max_batch_size: 8,
            max_queue_delay: Duration::from_millis(20),
            max_queue_len: 16,
            spin: Duration::ZERO,
        };
        let q = Arc::new(Queue::start(info(), Box::new(Explains), config, None).unwrap());
        let inferring = {
            let q = q.clone();
            tokio::spawn(async move {
                q.submit(vec![Values::F32(vec![1.0, 2.0])], 1, None)
                    .unwrap()
                    .await
            })
        };
        let e = q
            .explain(explain_request(&[3.0, 4.0, 5.0, 6.0], None))
            .await
            .unwrap();
        assert_eq!(e.attributions.shape, vec![2, 2]);
        assert_eq!(e.attributions.data, Values::F32(vec![3.0, 4.0, 5.0, 6.0]));
        assert_eq!(e.outputs[0].data, Values::F32(vec![6.0, 8.0, 10.0, 12.0]));
        assert_eq!(
            inferring.await.unwrap().unwrap().unwrap(),
            vec![Values::F32(vec![2.0, 4.0])]
        );
        let refused = q
            .explain(explain_request(&[1.0, 1.0], Some(9)))
            .await
            .unwrap_err();
        assert!(matches!(refused, ServeError::BadRequest(_)), "{refused}");
        // A malformed request is refused before the queue and counts nowhere.
        let mut bad = explain_request(&[1.0, 1.0], None);
        bad.inputs[0].shape = vec![1, 3];
        assert!(q.explain(bad).await.is_err());
        let s = q.statistics();
        assert_eq!((s.success, s.inferences), (1, 1));
        let e = &s.explanations;
        assert_eq!(
            (e.success, e.samples, e.failure, e.latency.count),
            (1, 2, 1, 1)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_engine_without_gradients_says_so() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let config = QueueConfig {
            max_batch_size: 8,
            max_queue_delay: Duration::ZERO,
            max_queue_len: 16,
            spin: Duration::ZERO,
        };
        let q = Queue::start(info(), Box::new(Double(calls)), config, None).unwrap();
        let e = q
            .explain(explain_request(&[1.0, 2.0], None))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ServeError::NotExplainable { ref format, .. } if format == "test"),
            "{e}"
        );
        assert!(e.to_string().contains("explanations need gradients"));
        assert_eq!(q.statistics().explanations.failure, 1);
    }

    #[test]
    fn histograms_are_cumulative() {
        let mut h = Histogram::new(SIZES);
        h.observe(3.0);
        h.observe(64.0);
        assert_eq!(&h.counts[..4], &[0, 0, 1, 1]);
        assert_eq!(h.counts[6], 2);
        assert_eq!((h.count, h.sum), (2, 67.0));
    }
}
