//! Text generation from a modelforge language model: a prompt is encoded and run through
//! the network into a key/value cache (in chunks, if the caller wants), then each new token
//! costs one position. A [`Sequence`] holds one generation's state; [`LanguageModel::step`]
//! advances many of them in one pass, each at its own position, so the server's scheduler
//! batches every running generation while the CLI streams one.

pub mod sampling;

use std::time::{Duration, Instant};

use modelforge_model::burn::tensor::{Device, Int, Tensor, TensorData};
use modelforge_model::{KvCache, Network};
use modelforge_text::{Stream, TextError, Tokenizer};

pub use modelforge_text::Finish;
pub use sampling::{Sampler, Sampling};

/// Everything that can stop a generation.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The prompt cannot be encoded.
    #[error("the prompt: {0}")]
    Prompt(TextError),
    /// The prompt is empty.
    #[error("the prompt is empty — give at least one character")]
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
    Settings(TextError),
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
/// A clone shares the weights.
#[derive(Clone)]
pub struct LanguageModel {
    network: Network,
    tokenizer: Tokenizer,
    context: usize,
    vocab: usize,
    /// Ids that end a text (a pretrained model's `eos_token_id`): generating one stops.
    end: Vec<u32>,
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
        let width = network.output_shape().last().copied().unwrap_or(0);
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
            end: Vec::new(),
            device: device.clone(),
        })
    }

    /// The model with ids that end a text: a generation that draws one stops there (finish
    /// `stop`), without the id's text.
    pub fn with_end_tokens(mut self, end: Vec<u32>) -> LanguageModel {
        self.end = end;
        self
    }

    /// Positions the model reads at most.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Bytes the key/value cache holds per position of one sequence.
    pub fn cache_bytes_per_token(&self) -> usize {
        self.network.cache_floats_per_token() * std::mem::size_of::<f32>()
    }

    /// The ids of a prompt: not empty, every character encoded, within the context.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>, GenerateError> {
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
        Ok(ids)
    }

    /// The text of each id on its own (a piece of a character cut between ids shows as
    /// U+FFFD, as the tokenizer decodes it).
    pub fn pieces(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| {
                self.tokenizer
                    .decode(&[id])
                    .unwrap_or_else(|_| format!("#{id}"))
            })
            .collect()
    }

    /// The network, in inference mode.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The device it computes on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A generation from a prompt: checks the settings and encodes the prompt; nothing runs
    /// until [`LanguageModel::prefill`].
    pub fn start(&self, prompt: &str, sampling: &Sampling) -> Result<Sequence, GenerateError> {
        sampling.check().map_err(GenerateError::Settings)?;
        let ids = self.encode(prompt)?;
        Ok(Sequence {
            sampler: Sampler::new(sampling),
            sampling: sampling.clone(),
            cache: self.network.cache(),
            prompt_tokens: ids.len(),
            ids,
            prefilled: 0,
            next_logits: Vec::new(),
            stream: Stream::default(),
            text: String::new(),
            shown: 0,
            finish: None,
            started: Instant::now(),
            first_token: None,
        })
    }

    /// Runs up to `budget` (at least one) more prompt ids of a sequence into its cache;
    /// returns how many ran. Once the whole prompt is in, the sequence can [`step`].
    ///
    /// [`step`]: LanguageModel::step
    pub fn prefill(&self, sequence: &mut Sequence, budget: usize) -> usize {
        let from = sequence.prefilled;
        let n = budget.max(1).min(sequence.prompt_tokens - from);
        if n == 0 {
            return 0;
        }
        let chunk = sequence.ids[from..from + n].to_vec();
        let logits = self.run(&chunk, &mut sequence.cache);
        sequence.prefilled += n;
        if sequence.prefilled == sequence.prompt_tokens {
            sequence.next_logits = logits;
        }
        n
    }

    /// Advances every sequence by one id: samples it, and returns per sequence the text that
    /// is now final (possibly empty; always empty for one that had already finished). The
    /// new ids of those still going then run through the network in one pass, each row at
    /// its own position. Every sequence must be prefilled.
    pub fn step(&self, sequences: &mut [&mut Sequence]) -> Result<Vec<String>, GenerateError> {
        let mut pieces = Vec::with_capacity(sequences.len());
        for sequence in sequences.iter_mut() {
            assert!(
                sequence.is_prefilled(),
                "prefill a sequence before it steps"
            );
            pieces.push(sequence.sample(&self.tokenizer, &self.end)?);
        }
        // A sequence whose cache is full restarts from the last half of the context (the
        // positions shift, as when a window slides); the rest advance together.
        let mut rows: Vec<&mut Sequence> = Vec::new();
        for sequence in sequences.iter_mut().filter(|s| s.finish.is_none()) {
            if sequence.cache.len() < self.context {
                rows.push(sequence);
                continue;
            }
            let keep = (self.context / 2).max(1);
            let tail = sequence.ids[sequence.ids.len() - keep..].to_vec();
            sequence.cache = self.network.cache();
            sequence.next_logits = self.run(&tail, &mut sequence.cache);
        }
        if !rows.is_empty() {
            let ids: Vec<i64> = rows.iter().map(|s| i64::from(s.last())).collect();
            let n = ids.len();
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [n, 1]), &self.device);
            let mut caches: Vec<&mut KvCache> = rows.iter_mut().map(|s| &mut s.cache).collect();
            let logits = self.network.forward_rows(ids, &mut caches);
            let width = logits.dims()[2];
            let all = logits
                .into_data()
                .try_into_vec::<f32>()
                .expect("f32 logits");
            for (sequence, row) in rows.iter_mut().zip(all.chunks(width)) {
                sequence.next_logits = row[..self.vocab].to_vec();
            }
        }
        Ok(pieces)
    }

    /// Runs ids through the network after the cache; returns the last position's logits
    /// over the tokenizer's vocabulary.
    fn run(&self, ids: &[u32], cache: &mut KvCache) -> Vec<f32> {
        let len = ids.len();
        let data: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(data, [1, len]), &self.device);
        let logits = self.network.forward_tokens(ids, Some(cache));
        let vocab = logits.dims()[2];
        let last = logits.slice([0..1, len - 1..len, 0..vocab]);
        let mut row = last.into_data().try_into_vec::<f32>().expect("f32 logits");
        row.truncate(self.vocab);
        row
    }

    /// Generates the whole continuation of a prompt, handing each piece of text to `on_text`
    /// as soon as it is final.
    pub fn generate(
        &self,
        prompt: &str,
        sampling: &Sampling,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generated, GenerateError> {
        let mut sequence = self.start(prompt, sampling)?;
        self.prefill(&mut sequence, usize::MAX);
        while sequence.finish.is_none() {
            for piece in self.step(&mut [&mut sequence])? {
                on_text(&piece);
            }
        }
        Ok(sequence.finished())
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

/// One generation in progress: its settings, ids, cache and text; see
/// [`LanguageModel::start`].
pub struct Sequence {
    sampler: Sampler,
    sampling: Sampling,
    cache: KvCache,
    /// Prompt and generated ids, in order.
    ids: Vec<u32>,
    prompt_tokens: usize,
    /// Prompt ids in the cache.
    prefilled: usize,
    /// Logits for the next position.
    next_logits: Vec<f32>,
    stream: Stream,
    /// Generated text so far.
    text: String,
    /// Bytes of `text` handed out.
    shown: usize,
    finish: Option<Finish>,
    started: Instant,
    first_token: Option<Duration>,
}

impl Sequence {
    /// Ids of the prompt.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// Ids generated so far.
    pub fn generated(&self) -> usize {
        self.ids.len() - self.prompt_tokens
    }

    /// Whether the whole prompt is in the cache.
    pub fn is_prefilled(&self) -> bool {
        self.prefilled == self.prompt_tokens
    }

    /// Why the generation ended, once it has.
    pub fn finish(&self) -> Option<Finish> {
        self.finish
    }

    /// The last id of the sequence.
    fn last(&self) -> u32 {
        *self.ids.last().expect("a prompt is never empty")
    }

    /// Draws the next id from the logits and returns the text that is now final; an id of
    /// `end` finishes the sequence.
    fn sample(&mut self, tokenizer: &Tokenizer, end: &[u32]) -> Result<String, GenerateError> {
        if self.finish.is_some() {
            return Ok(String::new());
        }
        let id = self.sampler.sample(&self.next_logits) as u32;
        self.ids.push(id);
        if self.first_token.is_none() {
            self.first_token = Some(self.started.elapsed());
        }
        let ended = end.contains(&id);
        if !ended
            && let Some(piece) = self
                .stream
                .push(tokenizer, id)
                .map_err(GenerateError::Decode)?
        {
            self.text.push_str(&piece);
        }
        let done = ended || self.generated() >= self.sampling.max_tokens;
        // The last ids' text, even a character cut short, once nothing more will come.
        if done
            && let Some(piece) = self
                .stream
                .flush(tokenizer)
                .map_err(GenerateError::Decode)?
        {
            self.text.push_str(&piece);
        }
        if let Some(cut) = self.stop_at() {
            self.text.truncate(cut);
            self.finish = Some(Finish::Stop);
        } else if ended {
            self.finish = Some(Finish::Stop);
        } else if done {
            self.finish = Some(Finish::Length);
        }
        Ok(self.release())
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

    /// The result; call once [`Sequence::finish`] says why it ended.
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
