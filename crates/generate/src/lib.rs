//! Text generation from a modelforge language model: a prompt is encoded and run once
//! through the network into a key/value cache, then each new token costs one position.
//! A [`Session`] advances one token per call, so a scheduler can interleave many (the
//! server's batching loop) and the CLI can stream them.

pub mod sampling;

use std::time::{Duration, Instant};

use modelforge_model::burn::tensor::{Device, Int, Tensor, TensorData};
use modelforge_model::{KvCache, Network};
use modelforge_text::{TextError, Tokenizer};

pub use sampling::{Sampler, Sampling};

/// Everything that can stop a generation.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The prompt cannot be encoded.
    #[error("the prompt: {0}")]
    Prompt(TextError),
    /// The prompt is empty.
    #[error("the prompt is empty — give at least one character with --prompt")]
    EmptyPrompt,
    /// The prompt is longer than the model's context.
    #[error(
        "the prompt is {tokens} tokens but the model reads at most {context} — shorten the prompt"
    )]
    PromptTooLong {
        /// Tokens in the prompt.
        tokens: usize,
        /// The model's context.
        context: usize,
    },
    /// A sampling setting is out of range.
    #[error("{0}")]
    Settings(String),
    /// The tokenizer does not fit the network.
    #[error(
        "the tokenizer has {tokenizer} tokens but the network's output has {network} — publish the model with the tokenizer it was trained with"
    )]
    Mismatch {
        /// Tokens of the tokenizer.
        tokenizer: usize,
        /// Logits per position.
        network: usize,
    },
    /// Decoding the generated ids failed.
    #[error("decoding: {0}")]
    Decode(TextError),
}

/// A language model ready to generate: its network (inference mode), tokenizer and context.
pub struct LanguageModel {
    network: Network,
    tokenizer: Tokenizer,
    context: usize,
    vocab: usize,
    device: Device,
}

impl LanguageModel {
    /// Pairs a network over windows of `context` ids with its tokenizer.
    pub fn new(
        network: Network,
        tokenizer: Tokenizer,
        device: &Device,
    ) -> Result<LanguageModel, GenerateError> {
        let context = network.input_shape()[0];
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![0i64], [1, 1]), device);
        let width = network.forward_tokens(ids, None).dims()[2];
        let vocab = tokenizer.vocab_size();
        if vocab > width {
            return Err(GenerateError::Mismatch {
                tokenizer: vocab,
                network: width,
            });
        }
        Ok(LanguageModel {
            network,
            tokenizer,
            context,
            vocab,
            device: device.clone(),
        })
    }

    /// Starts generating from a prompt: encodes it and runs it through the network once.
    pub fn start(&self, prompt: &str, sampling: &Sampling) -> Result<Session<'_>, GenerateError> {
        sampling.check()?;
        let ids = self
            .tokenizer
            .encode(prompt)
            .map_err(GenerateError::Prompt)?;
        if ids.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        if ids.len() > self.context {
            return Err(GenerateError::PromptTooLong {
                tokens: ids.len(),
                context: self.context,
            });
        }
        let started = Instant::now();
        let mut session = Session {
            model: self,
            sampler: Sampler::new(sampling),
            sampling: sampling.clone(),
            cache: self.network.cache(),
            ids: ids.clone(),
            prompt_tokens: ids.len(),
            next_logits: Vec::new(),
            stream: self.tokenizer.stream(),
            text: String::new(),
            shown: 0,
            finish: None,
            started,
            first_token: None,
        };
        session.next_logits = session.run(&ids);
        Ok(session)
    }

    /// Generates the whole continuation of a prompt, handing each piece of text to `on_text`
    /// as soon as it is final.
    pub fn generate(
        &self,
        prompt: &str,
        sampling: &Sampling,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generated, GenerateError> {
        let mut session = self.start(prompt, sampling)?;
        while let Some(piece) = session.step()? {
            on_text(&piece);
        }
        Ok(session.finished())
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// `max_tokens` were generated.
    Length,
    /// A stop string was generated (it is not part of the text).
    Stop,
}

impl Finish {
    /// The OpenAI `finish_reason` name.
    pub fn name(self) -> &'static str {
        match self {
            Finish::Length => "length",
            Finish::Stop => "stop",
        }
    }
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The continuation (without the prompt, cut before a stop string).
    pub text: String,
    /// Ids generated.
    pub tokens: usize,
    /// Ids of the prompt.
    pub prompt_tokens: usize,
    /// Why it ended.
    pub finish: Finish,
    /// From the start to the first generated id (the prompt's pass included).
    pub time_to_first_token: Duration,
    /// From the start to the end.
    pub elapsed: Duration,
}

impl Generated {
    /// Generated ids per second after the first one (decode speed).
    pub fn decode_tokens_per_second(&self) -> f64 {
        let decoding = (self.elapsed - self.time_to_first_token).as_secs_f64();
        match self.tokens {
            0 | 1 => 0.0,
            n => (n - 1) as f64 / decoding.max(1e-9),
        }
    }
}

/// One generation in progress; see [`LanguageModel::start`].
pub struct Session<'m> {
    model: &'m LanguageModel,
    sampler: Sampler,
    sampling: Sampling,
    cache: KvCache,
    /// Prompt and generated ids, in order.
    ids: Vec<u32>,
    prompt_tokens: usize,
    /// Logits for the next position.
    next_logits: Vec<f32>,
    stream: modelforge_text::Stream<'m>,
    /// Generated text so far.
    text: String,
    /// Bytes of `text` handed out.
    shown: usize,
    finish: Option<Finish>,
    started: Instant,
    first_token: Option<Duration>,
}

impl Session<'_> {
    /// Runs ids through the network after the cache; returns the last position's logits
    /// over the tokenizer's vocabulary. A full cache first restarts from the last half of
    /// the context (the positions shift, as when a window slides).
    fn run(&mut self, ids: &[u32]) -> Vec<f32> {
        let context = self.model.context;
        let fresh = if self.cache.len() + ids.len() > context {
            self.cache = self.model.network.cache();
            let keep = (context / 2).max(1);
            self.ids[self.ids.len() - keep..].to_vec()
        } else {
            ids.to_vec()
        };
        let len = fresh.len();
        let data: Vec<i64> = fresh.into_iter().map(i64::from).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(data, [1, len]), &self.model.device);
        let logits = self
            .model
            .network
            .forward_tokens(ids, Some(&mut self.cache));
        let vocab = logits.dims()[2];
        let last = logits.slice([0..1, len - 1..len, 0..vocab]);
        let mut row = last.into_data().try_to_vec::<f32>().expect("f32 logits");
        row.truncate(self.model.vocab);
        row
    }

    /// Generates the next id; returns the text that is now final (possibly empty), or
    /// `None` once the generation has ended.
    pub fn step(&mut self) -> Result<Option<String>, GenerateError> {
        if self.finish.is_some() {
            return Ok(None);
        }
        let id = self.sampler.sample(&self.next_logits) as u32;
        self.ids.push(id);
        if self.first_token.is_none() {
            self.first_token = Some(self.started.elapsed());
        }
        if let Some(piece) = self.stream.push(id).map_err(GenerateError::Decode)? {
            self.text.push_str(&piece);
        }
        let generated = self.ids.len() - self.prompt_tokens;
        if let Some(cut) = self.stop_at() {
            self.text.truncate(cut);
            self.finish = Some(Finish::Stop);
        } else if generated >= self.sampling.max_tokens {
            self.finish = Some(Finish::Length);
        } else {
            self.next_logits = self.run(&[id]);
        }
        Ok(Some(self.release()))
    }

    /// Where the first stop string starts in the text, if one has appeared.
    fn stop_at(&self) -> Option<usize> {
        self.sampling
            .stop
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
    }

    /// The text that can be handed out: all of it once finished, otherwise all but a tail
    /// that could still grow into a stop string.
    fn release(&mut self) -> String {
        let end = match self.finish {
            Some(_) => self.text.len(),
            None => {
                let held = self
                    .sampling
                    .stop
                    .iter()
                    .flat_map(|stop| {
                        (1..stop.len()).filter(|&n| {
                            stop.is_char_boundary(n) && self.text.ends_with(&stop[..n])
                        })
                    })
                    .max()
                    .unwrap_or(0);
                self.text.len() - held
            }
        };
        let piece = self.text[self.shown..end.max(self.shown)].to_string();
        self.shown = end.max(self.shown);
        piece
    }

    /// The result; call after [`Session::step`] returned `None`.
    pub fn finished(self) -> Generated {
        let elapsed = self.started.elapsed();
        Generated {
            tokens: self.ids.len() - self.prompt_tokens,
            prompt_tokens: self.prompt_tokens,
            finish: self.finish.unwrap_or(Finish::Length),
            time_to_first_token: self.first_token.unwrap_or(elapsed),
            elapsed,
            text: self.text,
        }
    }
}

#[cfg(test)]
mod tests;
