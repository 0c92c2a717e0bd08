//! An explanation request — inference inputs, or a language model's prompt, plus the
//! attribution settings — and what answers it: the model's outputs, the attributions and
//! integrated gradients' delta. A predicting version explains on its compute thread,
//! between batches; a generating one on an explanation thread beside its scheduler.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use modelforge_spec::explain::Explain;
use tokio::sync::oneshot;

use crate::queue::Statistics;
use crate::request::{InputTensor, OutputTensor};
use crate::tensor::Values;
use crate::{ModelInfo, ServeError};

/// An explanation request for a resolved version, decoded by a protocol adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainRequest {
    /// The input tensors, as for inference.
    pub inputs: Vec<InputTensor>,
    /// What to compute.
    pub settings: Explain,
    /// How long the caller waits; a request still queued when it passes is not computed.
    pub timeout: Option<std::time::Duration>,
}

/// What a runnable computes for an explanation of `batch` samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    /// The model's outputs, as inference gives them.
    pub outputs: Vec<Values>,
    /// Attributions, `[batch, …shape]`.
    pub attributions: Vec<f32>,
    /// Per-sample shape of the attributions (the input's, or one per token).
    pub shape: Vec<usize>,
    /// The output explained, per sample.
    pub targets: Vec<usize>,
    /// Integrated gradients' convergence delta, per sample.
    pub delta: Option<Vec<f32>>,
    /// The text of the tokens, for a language model's prompt.
    pub pieces: Option<Pieces>,
}

/// The text behind a language model's explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Pieces {
    /// Each prompt token's text, in order.
    pub tokens: Vec<String>,
    /// The explained next token's text, per sample.
    pub targets: Vec<String>,
}

/// The answer to an explanation request.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The version that answered.
    pub info: ModelInfo,
    /// The model's outputs.
    pub outputs: Vec<OutputTensor>,
    /// `attributions`, FP32, batch first.
    pub attributions: OutputTensor,
    /// The output explained, per sample.
    pub targets: Vec<usize>,
    /// Integrated gradients' convergence delta, per sample.
    pub delta: Option<Vec<f32>>,
    /// The text of the tokens, for a language model's prompt.
    pub pieces: Option<Pieces>,
}

/// The name of the attributions tensor in an answer.
pub const ATTRIBUTIONS: &str = "attributions";

/// The name of a language model's output in an explanation: its scores for the next token.
pub const NEXT_TOKEN_LOGITS: &str = "logits";

impl Explanation {
    /// The answer for `batch` samples from what the runnable computed.
    pub(crate) fn new(info: ModelInfo, batch: usize, explained: Explained) -> Explanation {
        let outputs = match &explained.pieces {
            None => {
                let all: Vec<usize> = (0..info.manifest.outputs.len()).collect();
                info.output_tensors(batch, explained.outputs, &all)
            }
            // A generator's described output is its text; an explanation answers with the
            // next token's scores instead.
            Some(_) => explained
                .outputs
                .into_iter()
                .map(|data| OutputTensor {
                    name: NEXT_TOKEN_LOGITS.into(),
                    shape: vec![batch as i64, (data.len() / batch.max(1)) as i64],
                    data,
                })
                .collect(),
        };
        let shape = std::iter::once(batch as i64)
            .chain(explained.shape.iter().map(|&d| d as i64))
            .collect();
        Explanation {
            info,
            outputs,
            attributions: OutputTensor {
                name: ATTRIBUTIONS.into(),
                shape,
                data: Values::F32(explained.attributions),
            },
            targets: explained.targets,
            delta: explained.delta,
            pieces: explained.pieces,
        }
    }
}

/// What an engine's explanation gives: the explanation, `None` where the engine has no
/// gradients, or why it failed.
pub(crate) type Computed = Result<Option<Result<Explained, ServeError>>, ServeError>;

/// An explanation on its way to the thread that owns a version's engine; `input` is what
/// that engine explains (checked inputs and their batch size, or a prompt).
pub(crate) struct ExplainJob<I> {
    input: I,
    settings: Explain,
    reply: oneshot::Sender<Result<Explained, ServeError>>,
    enqueued: Instant,
    deadline: Option<Instant>,
}

impl<I> ExplainJob<I> {
    /// A job that its caller waits for at most `timeout`, and the receiver of its answer.
    pub(crate) fn new(
        input: I,
        settings: Explain,
        timeout: Option<Duration>,
    ) -> (
        ExplainJob<I>,
        oneshot::Receiver<Result<Explained, ServeError>>,
    ) {
        let (reply, rx) = oneshot::channel();
        let enqueued = Instant::now();
        let job = ExplainJob {
            input,
            settings,
            reply,
            enqueued,
            deadline: timeout.map(|t| enqueued + t),
        };
        (job, rx)
    }

    /// Runs the job with `compute` unless its caller left or its deadline passed, counts it
    /// in `stats` (apart from inference) and answers the caller.
    pub(crate) fn run(
        self,
        info: &ModelInfo,
        stats: &Mutex<Statistics>,
        compute: impl FnOnce(I, &Explain) -> Computed,
    ) {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| d <= now) {
            stats.lock().expect("stats lock").explanations.failure += 1;
            let waited = now.duration_since(self.enqueued);
            let _ = self.reply.send(Err(ServeError::DeadlineExceeded(waited)));
            return;
        }
        if self.reply.is_closed() {
            return;
        }
        let started = Instant::now();
        let result = match compute(self.input, &self.settings) {
            Err(e) | Ok(Some(Err(e))) => Err(e),
            Ok(None) => Err(ServeError::NotExplainable {
                model: info.name.clone(),
                version: info.version,
                format: info.manifest.format.clone(),
            }),
            Ok(Some(Ok(e))) => Ok(e),
        };
        let compute_ns = started.elapsed().as_nanos() as u64;
        let mut s = stats.lock().expect("stats lock");
        let counts = &mut s.explanations;
        match &result {
            Ok(e) => {
                counts.success += 1;
                counts.samples += e.targets.len() as u64;
                counts.compute_ns += compute_ns;
                counts
                    .latency
                    .observe(self.enqueued.elapsed().as_secs_f64());
            }
            Err(_) => counts.failure += 1,
        }
        let _ = self.reply.send(result);
    }
}
