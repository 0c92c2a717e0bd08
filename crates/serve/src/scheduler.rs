//! Continuous batching for a generating version: one dedicated thread admits requests
//! between decode steps under a token budget and a cache budget, prefills long prompts a
//! bounded chunk at a time, advances every running sequence in one batched step, and lets
//! finished or cancelled ones leave at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc as events;

use modelforge_spec::explain::Explain;

use crate::explanation::{ExplainJob, Explanation};
use crate::generator::{
    Event, Explainer, GenerateRequest, Generation, Generator, SequenceId, Summary,
};
use crate::queue::{
    Failure, Health, Histogram, NOT_RELOADABLE, SECONDS, Statistics, answer, panic_message,
    rebuild, start_thread,
};
use crate::{ModelInfo, ServeError};

/// Limits of a generating version's scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Sequences generating at once (the largest decode batch).
    pub max_sequences: usize,
    /// Tokens one step runs at most: one per generating sequence plus a chunk of prompts.
    pub max_step_tokens: usize,
    /// Bytes of key/value cache the running sequences may hold together (each reserves
    /// its prompt plus `max_tokens`, up to the context). One sequence is always admitted.
    pub cache_bytes: usize,
    /// Requests that wait for room before more are refused.
    pub max_waiting: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_sequences: 32,
            max_step_tokens: 256,
            cache_bytes: 1 << 30,
            max_waiting: 256,
        }
    }
}

/// Counters of generation, beside the Triton-shaped ones.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationStatistics {
    /// Prompt tokens of admitted requests.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Generations whose client left before the end.
    pub cancelled: u64,
    /// Sequences generating now.
    pub running: usize,
    /// Requests waiting for room now.
    pub waiting: usize,
    /// Cache bytes the running sequences reserve now.
    pub cache_bytes: usize,
    /// Submission to first token, seconds.
    pub time_to_first_token: Histogram,
    /// Time per output token after the first, seconds.
    pub time_per_output_token: Histogram,
}

impl Default for GenerationStatistics {
    fn default() -> Self {
        GenerationStatistics {
            prompt_tokens: 0,
            generated_tokens: 0,
            cancelled: 0,
            running: 0,
            waiting: 0,
            cache_bytes: 0,
            time_to_first_token: Histogram::new(SECONDS),
            time_per_output_token: Histogram::new(SECONDS),
        }
    }
}

/// Events a generation holds for its client before it pauses: a client that reads slowly
/// holds back its own sequence (it skips decode steps), never the others or the memory.
pub(crate) const EVENT_BUFFER: usize = 64;

/// A request on its way to the scheduler thread.
struct Submission {
    request: GenerateRequest,
    events: events::Sender<Event>,
    submitted: Instant,
}

/// Builds a fresh generator of the same version (its files checked again), for the
/// scheduler thread to heal with after a panic.
pub type Reload = Box<dyn FnMut() -> Result<Box<dyn Generator>, String> + Send>;

/// A served generating version: submit requests, read statistics.
pub struct Scheduler {
    info: ModelInfo,
    tx: Sender<Submission>,
    /// The explanation thread's queue, when the engine explains.
    explain_tx: Option<Sender<ExplainJob<String>>>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    stats: Arc<Mutex<Statistics>>,
    health: Arc<Mutex<Health>>,
}

impl Scheduler {
    /// Starts the scheduler thread of a generator; `reload` rebuilds it after a panic.
    pub fn start(
        info: ModelInfo,
        generator: Box<dyn Generator>,
        config: SchedulerConfig,
        reload: Option<Reload>,
    ) -> Result<Scheduler, String> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Mutex::new(Statistics {
            generation: Some(GenerationStatistics::default()),
            ..Statistics::default()
        }));
        let waiting = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(Mutex::new(Health::default()));
        let one_sequence = generator.context() * generator.cache_bytes_per_token();
        let explain_tx = match generator.explainer() {
            Some(explainer) => Some(start_explaining(
                &info,
                explainer,
                stats.clone(),
                health.clone(),
            )?),
            None => None,
        };
        let worker = Worker {
            info: info.clone(),
            generator,
            reload,
            health: health.clone(),
            rx,
            stats: stats.clone(),
            waiting_count: waiting.clone(),
            max_sequences: config.max_sequences.max(1),
            max_step_tokens: config.max_step_tokens.max(config.max_sequences + 1),
            cache_budget: config.cache_bytes.max(one_sequence),
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_id: 0,
            reserved: 0,
        };
        start_thread(
            format!("generate-{}-{}", info.name, info.version),
            move || worker.run(),
        )
        .map_err(|e| format!("cannot start a scheduler thread: {e}"))?;
        Ok(Scheduler {
            info,
            tx,
            explain_tx,
            waiting,
            max_waiting: config.max_waiting,
            stats,
            health,
        })
    }

    /// Panics caught on the scheduler thread so far.
    pub fn crashes(&self) -> u64 {
        self.health.lock().expect("health lock").crashes
    }

    /// Why the version stopped generating, when a panic left it without a generator.
    pub fn failed(&self) -> Option<String> {
        self.health.lock().expect("health lock").failed.clone()
    }

    /// What this version is.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// A snapshot of the counters.
    pub fn statistics(&self) -> Statistics {
        self.stats.lock().expect("stats lock").clone()
    }

    /// Queues a request; its events arrive on the returned generation. A full queue is
    /// refused at once.
    pub fn submit(&self, request: GenerateRequest) -> Result<Generation, ServeError> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.stats.lock().expect("stats lock").failure += 1;
            return Err(ServeError::Overloaded(self.info.name.clone()));
        }
        let (events, rx) = events::channel(EVENT_BUFFER);
        let submission = Submission {
            request,
            events,
            submitted: Instant::now(),
        };
        self.tx
            .send(submission)
            .map_err(|_| ServeError::Compute("the generation's compute thread stopped".into()))?;
        Ok(Generation {
            events: rx,
            version: self.info.version,
        })
    }

    /// Explains what the model would say after `prompt`: the attributions of its tokens to
    /// the next token's score, computed on the version's explanation thread (running streams
    /// go on stepping meanwhile).
    pub async fn explain(
        &self,
        prompt: String,
        settings: Explain,
        timeout: Option<Duration>,
    ) -> Result<Explanation, ServeError> {
        let refuse = |e: ServeError| {
            self.stats.lock().expect("stats lock").explanations.failure += 1;
            Err(e)
        };
        let Some(tx) = &self.explain_tx else {
            return refuse(ServeError::NotExplainable {
                model: self.info.name.clone(),
                version: self.info.version,
                format: self.info.manifest.format.clone(),
            });
        };
        if let Some(reason) = self.failed() {
            return refuse(Failure::Unavailable(reason).error(&self.info));
        }
        let (job, rx) = ExplainJob::new(prompt, settings, timeout);
        if tx.send(job).is_err() {
            return refuse(ServeError::Compute("the explanation thread stopped".into()));
        }
        let explained = answer(rx, timeout).await?;
        Ok(Explanation::new(self.info.clone(), 1, explained))
    }
}

/// Where a sequence stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Its prompt is going into the cache.
    Prefilling,
    /// It generates a token each step.
    Decoding,
}

/// A request the thread holds.
struct Sequence {
    id: SequenceId,
    submission: Submission,
    /// Set once admitted (the prompt is encoded).
    prompt_tokens: usize,
    /// Prompt tokens in the cache.
    prefilled: usize,
    phase: Phase,
    /// Cache bytes reserved while running.
    reserved: usize,
    tokens: usize,
    first_token: Option<Duration>,
    admitted: Option<Instant>,
}

impl Sequence {
    /// Sends an event; false if the client has gone (or, for an event sent without room,
    /// if the buffer is full).
    fn send(&self, event: Event) -> bool {
        self.submission.events.try_send(event).is_ok()
    }

    /// Whether it takes the next decode step: it is generating and its client has room for
    /// a piece of text and the end.
    fn steps(&self) -> bool {
        self.phase == Phase::Decoding && self.submission.events.capacity() >= 2
    }

    fn gone(&self) -> bool {
        self.submission.events.is_closed()
    }
}

/// Starts a version's explanation thread: it answers explanation jobs one at a time with
/// `explainer`, beside the scheduler thread, and ends with the version. A panic fails its
/// request with 500 and counts as the version's crash; the explainer holds no state a panic
/// could leave half-changed (the weights are read only), so it carries on.
fn start_explaining(
    info: &ModelInfo,
    mut explainer: Box<dyn Explainer>,
    stats: Arc<Mutex<Statistics>>,
    health: Arc<Mutex<Health>>,
) -> Result<Sender<ExplainJob<String>>, String> {
    let (tx, rx) = mpsc::channel::<ExplainJob<String>>();
    let info = info.clone();
    start_thread(
        format!("explain-{}-{}", info.name, info.version),
        move || {
            for job in rx {
                job.run(&info, &stats, |prompt, settings| {
                    let explained = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        explainer.explain(&prompt, settings)
                    }));
                    match explained {
                        Ok(result) => Ok(Some(result)),
                        Err(payload) => {
                            let message = panic_message(payload.as_ref());
                            health.lock().expect("health lock").crashes += 1;
                            Err(Failure::Crashed(message).error(&info))
                        }
                    }
                });
            }
        },
    )
    .map_err(|e| format!("cannot start an explanation thread: {e}"))?;
    Ok(tx)
}

/// Runs `f` on the generator, catching a panic: `Err` holds the panic's message.
fn guarded<T>(
    generator: &mut dyn Generator,
    f: impl FnOnce(&mut dyn Generator) -> T,
) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(generator)))
        .map_err(|p| panic_message(p.as_ref()))
}

/// The scheduler thread's state.
struct Worker {
    info: ModelInfo,
    generator: Box<dyn Generator>,
    reload: Option<Reload>,
    health: Arc<Mutex<Health>>,
    rx: Receiver<Submission>,
    stats: Arc<Mutex<Statistics>>,
    waiting_count: Arc<AtomicUsize>,
    max_sequences: usize,
    max_step_tokens: usize,
    cache_budget: usize,
    /// Admitted (prompt encoded) or not yet, in arrival order.
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    next_id: SequenceId,
    reserved: usize,
}

impl Worker {
    fn run(mut self) {
        loop {
            if !self.intake() {
                return;
            }
            if let Some(reason) = self.failed() {
                self.refuse_all(&reason);
                continue;
            }
            self.leave_cancelled();
            self.admit();
            let started = Instant::now();
            let prefilled = self.prefill();
            let decoded = self.decode();
            self.account(started, prefilled, decoded);
            if prefilled == 0 && decoded == 0 {
                self.pause();
            }
        }
    }

    /// Nothing could run (every generating client's buffer is full): waits 50 µs for a new
    /// request instead of spinning (a millisecond here cost a fifth of one stream's
    /// throughput in `bench/lm_serve.sh`).
    fn pause(&mut self) {
        match self.rx.recv_timeout(Duration::from_micros(50)) {
            Ok(s) => self.enqueue(s),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_micros(50)),
        }
    }

    /// Takes new requests: waits for one while idle; false once every sender is gone and
    /// nothing is left to do (running streams finish first, on this version).
    fn intake(&mut self) -> bool {
        if self.running.is_empty() && self.waiting.is_empty() {
            match self.rx.recv() {
                Ok(s) => self.enqueue(s),
                Err(_) => return false,
            }
        }
        loop {
            match self.rx.try_recv() {
                Ok(s) => self.enqueue(s),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return true,
            }
        }
    }

    fn enqueue(&mut self, submission: Submission) {
        self.next_id += 1;
        self.waiting.push_back(Sequence {
            id: self.next_id,
            submission,
            prompt_tokens: 0,
            prefilled: 0,
            phase: Phase::Prefilling,
            reserved: 0,
            tokens: 0,
            first_token: None,
            admitted: None,
        });
    }

    /// Drops every sequence whose client has gone.
    fn leave_cancelled(&mut self) {
        let (gone, waiting): (Vec<_>, Vec<_>) = self.waiting.drain(..).partition(|s| s.gone());
        self.waiting = waiting.into();
        for s in gone {
            self.leave(s, Outcome::Cancelled, false);
        }
        let (gone, running): (Vec<_>, Vec<_>) = self.running.drain(..).partition(|s| s.gone());
        self.running = running;
        for s in gone {
            self.leave(s, Outcome::Cancelled, true);
        }
    }

    /// Moves waiting requests into the running set while there is room for their cache.
    fn admit(&mut self) {
        let context = self.generator.context();
        let per_token = self.generator.cache_bytes_per_token();
        while self.running.len() < self.max_sequences {
            let Some(mut s) = self.waiting.pop_front() else {
                return;
            };
            if s.admitted.is_none() {
                match guarded(self.generator.as_mut(), |g| {
                    g.admit(s.id, &s.submission.request)
                }) {
                    Ok(Ok(n)) => {
                        s.prompt_tokens = n;
                        s.admitted = Some(Instant::now());
                        s.send(Event::Started { prompt_tokens: n });
                    }
                    Ok(Err(e)) => {
                        self.leave(s, Outcome::Failed(e), false);
                        continue;
                    }
                    Err(message) => {
                        // Whatever the panic left half-admitted is in the dead generator.
                        self.heal(&message);
                        let error = Failure::Crashed(message).error(&self.info);
                        self.leave(s, Outcome::Failed(error), false);
                        return;
                    }
                }
            }
            let wanted = (s.prompt_tokens + s.submission.request.sampling.max_tokens).min(context);
            let bytes = wanted * per_token;
            if !self.running.is_empty() && self.reserved + bytes > self.cache_budget {
                self.waiting.push_front(s);
                return;
            }
            s.reserved = bytes;
            self.reserved += bytes;
            self.waiting_count.fetch_sub(1, Ordering::SeqCst);
            self.running.push(s);
        }
    }

    /// Prefills prompts in arrival order with the tokens this step has left after one per
    /// generating sequence; returns the tokens run.
    fn prefill(&mut self) -> usize {
        let decoding = self
            .running
            .iter()
            .filter(|s| s.phase == Phase::Decoding)
            .count();
        let mut budget = self.max_step_tokens - decoding;
        let mut ran = 0;
        let mut failed = Vec::new();
        let mut panicked = None;
        for (i, s) in self.running.iter_mut().enumerate() {
            if budget == 0 {
                break;
            }
            if s.phase != Phase::Prefilling {
                continue;
            }
            let left = s.prompt_tokens - s.prefilled;
            let (id, chunk) = (s.id, budget.min(left));
            let step = match guarded(self.generator.as_mut(), |g| g.prefill(id, chunk)) {
                Ok(step) => step,
                Err(message) => {
                    panicked = Some(message);
                    break;
                }
            };
            match step {
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    ran += n;
                    s.prefilled += n;
                    if s.prefilled >= s.prompt_tokens {
                        s.phase = Phase::Decoding;
                    }
                }
                Err(e) => failed.push((i, e)),
            }
        }
        for (i, e) in failed.into_iter().rev() {
            let s = self.running.remove(i);
            self.leave(s, Outcome::Failed(e), true);
        }
        if let Some(message) = panicked {
            self.heal(&message);
        }
        ran
    }

    /// One token for every generating sequence; returns how many sequences stepped.
    fn decode(&mut self) -> usize {
        let ids: Vec<SequenceId> = self
            .running
            .iter()
            .filter(|s| s.steps())
            .map(|s| s.id)
            .collect();
        if ids.is_empty() {
            return 0;
        }
        let tokens = match guarded(self.generator.as_mut(), |g| g.decode(&ids)) {
            Ok(Ok(t)) => t,
            Err(message) => {
                self.heal(&message);
                return ids.len();
            }
            Ok(Err(e)) => {
                let (failed, running): (Vec<_>, Vec<_>) =
                    self.running.drain(..).partition(|s| ids.contains(&s.id));
                self.running = running;
                for s in failed {
                    self.leave(s, Outcome::Failed(ServeError::Compute(e.to_string())), true);
                }
                return ids.len();
            }
        };
        let mut done = Vec::new();
        let mut at = 0;
        for (i, s) in self.running.iter_mut().enumerate() {
            // The sequences that stepped, in order (a client may have read meanwhile).
            if ids.get(at) != Some(&s.id) {
                continue;
            }
            let token = &tokens[at];
            at += 1;
            s.tokens += 1;
            if s.first_token.is_none() {
                s.first_token = Some(s.submission.submitted.elapsed());
            }
            if !token.text.is_empty() && !s.send(Event::Text(token.text.clone())) {
                done.push((i, None));
                continue;
            }
            if let Some(finish) = token.finish {
                done.push((i, Some(finish)));
            }
        }
        for (i, finish) in done.into_iter().rev() {
            let s = self.running.remove(i);
            let outcome = match finish {
                Some(finish) => Outcome::Finished(finish),
                None => Outcome::Cancelled,
            };
            self.leave(s, outcome, true);
        }
        ids.len()
    }

    /// Why the version stopped generating, once a panic could not be healed.
    fn failed(&self) -> Option<String> {
        self.health.lock().expect("health lock").failed.clone()
    }

    /// After a panic in the generator: every sequence with a cache in it fails with the
    /// panic's message (their caches die with it) and a freshly loaded generator takes
    /// over; when none can be built, the version is marked failed and every request from
    /// now on is refused as unavailable with the reason.
    fn heal(&mut self, message: &str) {
        let reload = self.reload.as_mut();
        let fresh = rebuild(&self.health, "scheduler", message, || {
            reload.ok_or(NOT_RELOADABLE)?()
        });
        if let Some(fresh) = fresh {
            self.generator = fresh;
        }
        // The version's health is settled before any client hears of the crash.
        let running: Vec<Sequence> = self.running.drain(..).collect();
        let (admitted, waiting): (Vec<_>, Vec<_>) =
            self.waiting.drain(..).partition(|s| s.admitted.is_some());
        self.waiting = waiting.into();
        for (mut s, was_running) in running
            .into_iter()
            .map(|s| (s, true))
            .chain(admitted.into_iter().map(|s| (s, false)))
        {
            // Nothing to release: the cache went with the generator.
            s.admitted = None;
            let error = Failure::Crashed(message.to_string()).error(&self.info);
            self.leave(s, Outcome::Failed(error), was_running);
        }
    }

    /// Refuses every request held or arriving once the version has failed.
    fn refuse_all(&mut self, reason: &str) {
        let waiting: Vec<Sequence> = self.waiting.drain(..).collect();
        for mut s in waiting {
            s.admitted = None;
            let error = Failure::Unavailable(reason.to_string()).error(&self.info);
            self.leave(s, Outcome::Failed(error), false);
        }
    }

    /// A sequence leaves: its cache is freed, its client told, the counters kept.
    fn leave(&mut self, s: Sequence, outcome: Outcome, running: bool) {
        if s.admitted.is_some() {
            self.generator.release(s.id);
        }
        if running {
            self.reserved -= s.reserved;
        } else {
            self.waiting_count.fetch_sub(1, Ordering::SeqCst);
        }
        let mut stats = self.stats.lock().expect("stats lock");
        let elapsed = s.submission.submitted.elapsed();
        match outcome {
            Outcome::Finished(finish) => {
                let first = s.first_token.unwrap_or(elapsed);
                let summary = Summary {
                    finish,
                    prompt_tokens: s.prompt_tokens,
                    tokens: s.tokens,
                    time_to_first_token: first,
                    elapsed,
                };
                stats.success += 1;
                stats.inferences += 1;
                stats.latency.observe(elapsed.as_secs_f64());
                let queued = s.admitted.map_or(elapsed, |a| a - s.submission.submitted);
                stats.queue_ns += queued.as_nanos() as u64;
                stats.queue_time.observe(queued.as_secs_f64());
                let g = stats.generation.as_mut().expect("generation counters");
                g.time_to_first_token.observe(first.as_secs_f64());
                if s.tokens > 1 {
                    let per = (elapsed - first).as_secs_f64() / (s.tokens - 1) as f64;
                    g.time_per_output_token.observe(per);
                }
                s.send(Event::Done(summary));
            }
            Outcome::Cancelled => {
                stats
                    .generation
                    .as_mut()
                    .expect("generation counters")
                    .cancelled += 1;
            }
            Outcome::Failed(e) => {
                stats.failure += 1;
                s.send(Event::Failed(e));
            }
        }
        let g = stats.generation.as_mut().expect("generation counters");
        g.prompt_tokens += s.prompt_tokens as u64;
        g.generated_tokens += s.tokens as u64;
    }

    /// Records one step in the counters.
    fn account(&mut self, started: Instant, prefilled: usize, decoded: usize) {
        let ns = started.elapsed().as_nanos() as u64;
        let mut stats = self.stats.lock().expect("stats lock");
        let g = stats.generation.as_mut().expect("generation counters");
        g.running = self.running.len();
        g.waiting = self.waiting.len();
        g.cache_bytes = self.reserved;
        if prefilled == 0 && decoded == 0 {
            return;
        }
        stats.executions += 1;
        stats.compute_ns += ns;
        if decoded > 0 {
            stats.record_execution(decoded, ns);
        }
    }
}

/// How a sequence left.
enum Outcome {
    Finished(crate::generator::Finish),
    Cancelled,
    Failed(ServeError),
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::generator::{Finish, Prompt, Sampling, Token};

    /// What the fake engine saw.
    #[derive(Default)]
    struct Log {
        prefills: Vec<usize>,
        batches: Vec<usize>,
        released: Vec<SequenceId>,
        /// Tokens decoded per sequence.
        decoded: HashMap<SequenceId, usize>,
    }

    /// Each prompt character is a token; each step emits the sequence's next letter of
    /// "abcdef…" and ends after `max_tokens`. A prompt of "bad" is refused; a decode step
    /// with a sequence whose prompt is "panic" panics. Every step takes a millisecond, so
    /// that concurrent clients overlap.
    struct Letters {
        log: Arc<Mutex<Log>>,
        sequences: HashMap<SequenceId, (usize, usize)>,
        doomed: Vec<SequenceId>,
    }

    impl Generator for Letters {
        fn context(&self) -> usize {
            64
        }
        fn cache_bytes_per_token(&self) -> usize {
            10
        }
        fn admit(&mut self, id: SequenceId, r: &GenerateRequest) -> Result<usize, ServeError> {
            let Prompt::Text(prompt) = &r.prompt else {
                return Err(ServeError::BadRequest("text prompts only".into()));
            };
            if prompt == "bad" {
                return Err(ServeError::BadRequest("a bad prompt".into()));
            }
            if prompt == "panic" {
                self.doomed.push(id);
            }
            self.sequences.insert(id, (0, r.sampling.max_tokens));
            Ok(prompt.chars().count())
        }
        fn prefill(&mut self, _: SequenceId, budget: usize) -> Result<usize, ServeError> {
            self.log.lock().unwrap().prefills.push(budget);
            Ok(budget)
        }
        fn decode(&mut self, ids: &[SequenceId]) -> Result<Vec<Token>, ServeError> {
            std::thread::sleep(Duration::from_millis(1));
            assert!(
                !ids.iter().any(|id| self.doomed.contains(id)),
                "index out of bounds in the key/value cache"
            );
            let mut log = self.log.lock().unwrap();
            log.batches.push(ids.len());
            Ok(ids
                .iter()
                .map(|id| {
                    *log.decoded.entry(*id).or_default() += 1;
                    let (done, max) = self.sequences.get_mut(id).expect("admitted");
                    let letter = letter(*done);
                    *done += 1;
                    Token {
                        text: letter.to_string(),
                        finish: (*done == *max).then_some(Finish::Length),
                    }
                })
                .collect())
        }
        fn release(&mut self, id: SequenceId) {
            self.sequences.remove(&id).expect("released once");
            self.log.lock().unwrap().released.push(id);
        }
        fn explainer(&self) -> Option<Box<dyn Explainer>> {
            Some(Box::new(Counting(self.log.clone())))
        }
    }

    /// Attributes 1 to each prompt character (the target is their count), after waiting
    /// 100 ms; a prompt of "panic" panics. Records the decode steps it saw meanwhile.
    struct Counting(Arc<Mutex<Log>>);

    impl Explainer for Counting {
        fn explain(&mut self, prompt: &str, _: &Explain) -> Result<crate::Explained, ServeError> {
            assert_ne!(prompt, "panic", "the gradients overflowed");
            let before = self.0.lock().unwrap().batches.len();
            std::thread::sleep(Duration::from_millis(100));
            let during = self.0.lock().unwrap().batches.len() - before;
            let n = prompt.chars().count();
            Ok(crate::Explained {
                outputs: vec![crate::Values::F32(vec![during as f32; 4])],
                attributions: vec![1.0; n],
                shape: vec![n],
                targets: vec![n],
                delta: None,
                pieces: Some(crate::Pieces {
                    tokens: prompt.chars().map(String::from).collect(),
                    targets: vec![letter(n).to_string()],
                }),
            })
        }
    }

    /// The `i`-th letter of the alphabet, round and round.
    fn letter(i: usize) -> char {
        (b'a' + (i % 26) as u8) as char
    }

    fn letters(log: &Arc<Mutex<Log>>) -> Box<dyn Generator> {
        Box::new(Letters {
            log: log.clone(),
            sequences: HashMap::new(),
            doomed: Vec::new(),
        })
    }

    fn scheduler(config: SchedulerConfig) -> (Scheduler, Arc<Mutex<Log>>) {
        scheduler_with(config, None)
    }

    fn scheduler_with(
        config: SchedulerConfig,
        reload: Option<Reload>,
    ) -> (Scheduler, Arc<Mutex<Log>>) {
        let log = Arc::new(Mutex::new(Log::default()));
        let info = crate::queue::tests::info();
        let s = Scheduler::start(info, letters(&log), config, reload);
        (s.unwrap(), log)
    }

    fn request(prompt: &str, max_tokens: usize) -> GenerateRequest {
        GenerateRequest {
            prompt: Prompt::Text(prompt.into()),
            sampling: Sampling {
                max_tokens,
                ..Sampling::default()
            },
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn concurrent_generations_share_decode_steps_and_each_gets_its_own_text() {
        let (s, log) = scheduler(SchedulerConfig::default());
        let rt = runtime();
        let lengths = [30, 5, 17, 1];
        let gens: Vec<Generation> = lengths
            .iter()
            .map(|&n| s.submit(request("hi", n)).unwrap())
            .collect();
        let results = rt.block_on(async {
            let mut out = Vec::new();
            for mut g in gens {
                assert_eq!(g.started().await.unwrap(), 2);
                out.push(g.collect().await.unwrap());
            }
            out
        });
        for ((text, summary), n) in results.iter().zip(lengths) {
            let want: String = (0..n).map(letter).collect();
            assert_eq!(text, &want);
            assert_eq!((summary.tokens, summary.finish), (n, Finish::Length));
        }
        let log = log.lock().unwrap();
        assert!(log.batches.iter().any(|&b| b > 1), "{:?}", log.batches);
        assert_eq!(log.released.len(), 4);
        let stats = s.statistics();
        assert_eq!(stats.success, 4);
        let g = stats.generation.unwrap();
        assert_eq!((g.generated_tokens, g.prompt_tokens), (53, 8));
        assert_eq!(g.time_to_first_token.count, 4);
    }

    #[test]
    fn a_client_that_leaves_frees_its_sequence_and_others_carry_on() {
        let (s, log) = scheduler(SchedulerConfig::default());
        let rt = runtime();
        let mut long = s.submit(request("x", 10_000)).unwrap();
        let short = s.submit(request("y", 20)).unwrap();
        rt.block_on(async {
            long.started().await.unwrap();
            match long.next().await {
                Event::Text(t) => assert_eq!(t, "a"),
                other => panic!("{other:?}"),
            }
        });
        drop(long);
        let (text, _) = rt.block_on(short.collect()).unwrap();
        assert_eq!(text.len(), 20);
        // The long one leaves within a step or so of its client.
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.statistics().generation.unwrap().cancelled == 0 {
            assert!(Instant::now() < deadline, "never cancelled");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(log.lock().unwrap().released.len(), 2);
        assert!(log.lock().unwrap().batches.iter().sum::<usize>() < 1000);
    }

    #[test]
    fn a_client_that_does_not_read_holds_back_only_its_own_generation() {
        let (s, log) = scheduler(SchedulerConfig::default());
        let rt = runtime();
        let mut slow = s.submit(request("x", 100_000)).unwrap();
        let fast = s.submit(request("y", 300)).unwrap();
        let (text, _) = rt.block_on(fast.collect()).unwrap();
        assert_eq!(text.len(), 300);
        // The unread generation stopped once its buffer was full, and goes on when read.
        let held = log.lock().unwrap().decoded[&1];
        assert!(
            held < EVENT_BUFFER,
            "{held} tokens decoded for a client that read none"
        );
        rt.block_on(async {
            for _ in 0..3 * EVENT_BUFFER {
                slow.next().await;
            }
        });
        assert!(log.lock().unwrap().decoded[&1] > 2 * EVENT_BUFFER);
    }

    #[test]
    fn a_bad_request_fails_before_it_starts_and_a_full_queue_is_refused() {
        let (s, _) = scheduler(SchedulerConfig {
            max_waiting: 0,
            ..SchedulerConfig::default()
        });
        assert!(matches!(
            s.submit(request("hi", 3)),
            Err(ServeError::Overloaded(_))
        ));
        let (s, _) = scheduler(SchedulerConfig::default());
        let mut bad = s.submit(request("bad", 3)).unwrap();
        let err = runtime().block_on(bad.started()).err().unwrap();
        assert!(err.to_string().contains("a bad prompt"), "{err}");
        assert_eq!(s.statistics().failure, 1);
    }

    #[test]
    fn a_long_prompt_is_prefilled_in_bounded_chunks_and_the_cache_budget_queues_the_rest() {
        // Room for one sequence of 64 positions: the second waits for the first to finish.
        let (s, log) = scheduler(SchedulerConfig {
            max_step_tokens: 8,
            max_sequences: 4,
            cache_bytes: 640,
            ..SchedulerConfig::default()
        });
        let rt = runtime();
        let a = s.submit(request(&"p".repeat(20), 40)).unwrap();
        let b = s.submit(request(&"q".repeat(20), 40)).unwrap();
        rt.block_on(async {
            a.collect().await.unwrap();
            b.collect().await.unwrap();
        });
        let log = log.lock().unwrap();
        assert!(log.prefills.iter().all(|&n| n <= 8), "{:?}", log.prefills);
        assert_eq!(log.prefills.iter().sum::<usize>(), 40);
        assert!(log.batches.iter().all(|&b| b == 1), "{:?}", log.batches);
    }

    #[test]
    fn a_panic_in_a_decode_step_fails_its_batch_and_a_reloaded_generator_carries_on() {
        let reloads = Arc::new(Mutex::new(0));
        let (log, counted) = (Arc::new(Mutex::new(Log::default())), reloads.clone());
        let reload: Reload = Box::new(move || {
            *counted.lock().unwrap() += 1;
            Ok(letters(&log))
        });
        let (s, _) = scheduler_with(SchedulerConfig::default(), Some(reload));
        let rt = runtime();
        let doomed = s.submit(request("panic", 5)).unwrap();
        let beside = s.submit(request("hi", 10_000)).unwrap();
        for generation in [doomed, beside] {
            match rt.block_on(generation.collect()) {
                Err(ServeError::Crashed { message, .. }) => {
                    assert!(message.contains("key/value cache"), "{message}")
                }
                other => panic!("{other:?}"),
            }
        }
        let (text, _) = rt
            .block_on(s.submit(request("ok", 3)).unwrap().collect())
            .unwrap();
        assert_eq!(text, "abc");
        assert_eq!((s.crashes(), *reloads.lock().unwrap()), (1, 1));
        assert_eq!(s.failed(), None);
        assert_eq!(s.statistics().failure, 2);
    }

    #[test]
    fn explanations_run_beside_the_steps_count_apart_and_a_panic_in_one_fails_only_it() {
        let (s, _) = scheduler(SchedulerConfig::default());
        let rt = runtime();
        let running = s.submit(request("hi", 1000)).unwrap();
        let e = rt
            .block_on(s.explain("abc".into(), Explain::default(), None))
            .unwrap();
        assert_eq!(e.attributions.shape, vec![1, 3]);
        assert_eq!(e.outputs[0].name, crate::explanation::NEXT_TOKEN_LOGITS);
        assert_eq!(e.outputs[0].shape, vec![1, 4]);
        assert_eq!(e.pieces.unwrap().tokens, vec!["a", "b", "c"]);
        // The stream beside it kept stepping while it ran (a step takes a millisecond).
        let steps_meanwhile = e.outputs[0].data.to_f32()[0];
        assert!(steps_meanwhile >= 1.0, "{steps_meanwhile} steps");
        // A panic while explaining fails that request; the stream and later explanations
        // go on.
        let crashed = rt.block_on(s.explain("panic".into(), Explain::default(), None));
        assert!(
            matches!(&crashed, Err(ServeError::Crashed { message, .. }) if message.contains("overflowed")),
            "{crashed:?}"
        );
        assert_eq!(s.crashes(), 1);
        assert!(
            rt.block_on(s.explain("ok".into(), Explain::default(), None))
                .is_ok()
        );
        let (text, _) = rt.block_on(running.collect()).unwrap();
        assert_eq!(text.len(), 1000);
        let stats = s.statistics().explanations;
        assert_eq!((stats.success, stats.samples, stats.failure), (2, 2, 1));
    }

    #[test]
    fn a_generator_that_cannot_be_reloaded_refuses_later_requests_with_the_reason() {
        let reload: Reload = Box::new(|| Err("weights.safetensors is missing".into()));
        let (s, _) = scheduler_with(SchedulerConfig::default(), Some(reload));
        let rt = runtime();
        let crashed = rt.block_on(s.submit(request("panic", 5)).unwrap().collect());
        assert!(
            matches!(crashed, Err(ServeError::Crashed { .. })),
            "{crashed:?}"
        );
        let reason = s.failed().expect("marked failed");
        assert!(
            reason.contains("weights.safetensors is missing"),
            "{reason}"
        );
        match rt.block_on(s.submit(request("ok", 3)).unwrap().collect()) {
            Err(ServeError::Unavailable { reason, .. }) => {
                assert!(reason.contains("crashed"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
}
