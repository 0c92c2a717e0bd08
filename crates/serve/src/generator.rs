//! The second kind of served model: a language model that generates text step by step.
//! The engine comes in through [`Generator`]; the [`crate::scheduler`] drives it.

use std::time::Duration;

pub use modelforge_text::chat::Message;
pub use modelforge_text::{Finish, Sampling};
use tokio::sync::mpsc;

use crate::ServeError;

/// Names one sequence within one generator.
pub type SequenceId = u64;

/// A language model the scheduler advances one step at a time, over a cache per sequence.
pub trait Generator: Send {
    /// Positions one sequence holds at most (the model's context).
    fn context(&self) -> usize;

    /// Bytes of cache one position of one sequence takes.
    fn cache_bytes_per_token(&self) -> usize;

    /// Checks a request and encodes its prompt into a new sequence `id`; returns the prompt's
    /// token count. Nothing is computed yet.
    fn admit(&mut self, id: SequenceId, request: &GenerateRequest) -> Result<usize, ServeError>;

    /// Runs up to `budget` (at least one) more prompt tokens of sequence `id` into its cache;
    /// returns how many ran.
    fn prefill(&mut self, id: SequenceId, budget: usize) -> Result<usize, ServeError>;

    /// Generates one token for each sequence (all prefilled), in one batched pass; returns
    /// per sequence the text that is now final and whether it has ended.
    fn decode(&mut self, ids: &[SequenceId]) -> Result<Vec<Token>, ServeError>;

    /// Frees a sequence's cache (it finished, failed or its client left).
    fn release(&mut self, id: SequenceId);

    /// What explains this model's prompts beside the scheduler, over the same weights;
    /// `None` where the engine has no gradients.
    fn explainer(&self) -> Option<Box<dyn Explainer>> {
        None
    }
}

/// Explains a generating version's prompts on a thread of its own, so that explanations
/// never hold up the running streams' steps.
pub trait Explainer: Send {
    /// Attributions of a prompt's tokens to the model's score of the token after them (the
    /// one it would generate first, or `settings.target`), with the tokens' text.
    fn explain(
        &mut self,
        prompt: &str,
        settings: &modelforge_spec::explain::Explain,
    ) -> Result<crate::Explained, ServeError>;
}

/// One step's output for one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// Text that is final (possibly empty: a character or a possible stop string is still
    /// incomplete).
    pub text: String,
    /// Set on the last token.
    pub finish: Option<Finish>,
}

/// What a generation continues.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Text, as it is.
    Text(String),
    /// A conversation, formatted by the model's chat template (or the plain one).
    Chat(Vec<Message>),
}

/// What a client asks a language model for.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// What to continue.
    pub prompt: Prompt,
    /// How tokens are chosen and when generation stops.
    pub sampling: Sampling,
}

/// A finished generation's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Why it ended.
    pub finish: Finish,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub tokens: usize,
    /// From submission to the first token.
    pub time_to_first_token: Duration,
    /// From submission to the end.
    pub elapsed: Duration,
}

/// What a generation sends its client, in order: `Started`, then `Text` pieces, then
/// `Done`; or `Failed` at any point.
#[derive(Debug)]
pub enum Event {
    /// The request was checked and queued for compute.
    Started {
        /// Tokens of its prompt.
        prompt_tokens: usize,
    },
    /// Generated text, final.
    Text(String),
    /// The generation ended.
    Done(Summary),
    /// The request failed.
    Failed(ServeError),
}

/// A client's end of one generation: its events as they are produced. Dropping it cancels
/// the generation within one step.
pub struct Generation {
    pub(crate) events: mpsc::Receiver<Event>,
    /// The version generating it.
    pub version: u64,
}

impl Generation {
    /// Waits for the request to be admitted; returns its prompt's token count, or why it
    /// was refused (a bad prompt or setting is refused here, before any text).
    pub async fn started(&mut self) -> Result<usize, ServeError> {
        match self.next().await {
            Event::Started { prompt_tokens } => Ok(prompt_tokens),
            Event::Failed(e) => Err(e),
            other => Err(ServeError::Compute(format!(
                "the generation sent {other:?} before it started"
            ))),
        }
    }

    /// The next event; `Failed` if the scheduler went away.
    pub async fn next(&mut self) -> Event {
        self.events.recv().await.unwrap_or_else(|| {
            Event::Failed(ServeError::Compute(
                "the generation's compute thread stopped".into(),
            ))
        })
    }

    /// The events still to come, as a channel (it closes after `Done` or `Failed`).
    pub fn into_events(self) -> mpsc::Receiver<Event> {
        self.events
    }

    /// The whole text and its summary (after [`Generation::started`]).
    pub async fn collect(mut self) -> Result<(String, Summary), ServeError> {
        let mut text = String::new();
        loop {
            match self.next().await {
                Event::Text(piece) => text.push_str(&piece),
                Event::Done(summary) => return Ok((text, summary)),
                Event::Failed(e) => return Err(e),
                Event::Started { .. } => {}
            }
        }
    }
}

/// A generating version as the inference protocols describe it (Triton's generate
/// extension): one `text_input` string in, one `text_output` string out, no batch axis.
pub(crate) fn described(mut info: crate::ModelInfo) -> crate::ModelInfo {
    let text = |name: &str| crate::TensorInfo {
        name: name.into(),
        datatype: "BYTES".into(),
        shape: vec![1],
        source: None,
    };
    info.manifest.inputs = vec![text("text_input")];
    info.manifest.outputs = vec![text("text_output")];
    info.manifest.batchable = false;
    info
}
