//! Text data for language models: the corpus split into contiguous train, validation and
//! test parts, a tokenizer (made or read), the splits' ids in token files read by memory
//! map, and the windows of `context` tokens that training and evaluation read.

use std::path::Path;

use modelforge_spec::{LayerSpec, Spec, TokenizerSpec};
use modelforge_text::{TokenWidth, Tokenizer, Tokens};
use sha2::{Digest, Sha256};

use crate::shuffle::{Rng, mix};
use crate::{DataError, read_maybe_gz};

/// The file a tokenizer is saved as, in token caches, runs and versions.
pub const TOKENIZER: &str = "tokenizer.json";

/// A tokenized corpus.
#[derive(Debug)]
pub struct Corpus {
    /// Text to ids and back.
    pub tokenizer: Tokenizer,
    /// The training split's ids.
    pub train: Tokens,
    /// The validation split's ids (empty when `validation = 0`).
    pub validation: Tokens,
    /// The test split's ids (empty when there is no test text).
    pub test: Tokens,
    /// Tokens per window (the model input's length).
    pub context: usize,
    /// Where the token files live; removed with the corpus when no cache folder was given.
    _scratch: Option<tempfile::TempDir>,
}

impl Corpus {
    /// The starts of the `count` training windows of optimiser step `step`: uniform over
    /// the training ids, from the data seed, so every rank and a resumed run draw the same.
    pub fn train_starts(&self, seed: u64, step: u64, count: usize) -> Vec<usize> {
        let span = (self.train.len() - self.context) as u64;
        let mut rng = Rng::new(mix(mix(seed, 0x6c6d), step));
        (0..count).map(|_| rng.below(span) as usize).collect()
    }

    /// The starts of the fixed windows an evaluation reads from `tokens`: `count` of them
    /// (fewer when the split is short), evenly spaced from its first id to its last window.
    pub fn eval_starts(&self, tokens: &Tokens, count: usize) -> Vec<usize> {
        let Some(last) = tokens.len().checked_sub(self.context + 1) else {
            return Vec::new();
        };
        let count = count.min(last + 1);
        match count {
            0 => Vec::new(),
            1 => vec![0],
            _ => (0..count).map(|i| i * last / (count - 1)).collect(),
        }
    }

    /// A prompt from the held-out text for a first generation: the first whole line of the
    /// test split (else the validation split, else the training split) within its first
    /// 64 tokens, line break included; the start of the text when no line ends there.
    pub fn sample_prompt(&self) -> Result<String, DataError> {
        let tokens = [&self.test, &self.validation, &self.train]
            .into_iter()
            .find(|t| !t.is_empty())
            .unwrap_or(&self.train);
        let ids: Vec<u32> = (0..tokens.len().min(64)).map(|i| tokens.get(i)).collect();
        let text = self.tokenizer.decode(&ids)?;
        // A split starts anywhere in a line: the line after the first break is whole.
        let line = text
            .split_inclusive('\n')
            .skip(1)
            .find(|l| l.ends_with('\n') && l.trim().len() > 1);
        Ok(match line {
            Some(line) => line.to_string(),
            None => text.chars().take(16).collect(),
        })
    }

    /// The inputs (ids from each start) and targets (the ids one later) of windows.
    pub fn batch(&self, tokens: &Tokens, starts: &[usize]) -> (Vec<i64>, Vec<i64>) {
        let mut inputs = Vec::with_capacity(starts.len() * self.context);
        let mut targets = Vec::with_capacity(starts.len() * self.context);
        for &s in starts {
            tokens.extend_window(s, self.context, &mut inputs);
            tokens.extend_window(s + 1, self.context, &mut targets);
        }
        (inputs, targets)
    }
}

/// Reads a spec's text, makes or reads its tokenizer and writes the splits' token files
/// under `cache` (reused when the same text and tokenizer come again) or a scratch folder.
pub(crate) fn prepare(
    spec: &Spec,
    fingerprint: &str,
    cache: Option<&Path>,
) -> Result<Corpus, DataError> {
    let d = &spec.data;
    let context = spec.model.input.get_ref().shape[0];
    let train_path = d
        .train
        .get_ref()
        .path
        .clone()
        .expect("validated: text has path");
    let key = hex::encode(Sha256::digest(
        serde_json::to_vec(&(fingerprint, d.tokenizer(), &d.validation, &d.test_fraction))
            .expect("the data section serialises"),
    ));
    let (dir, scratch) = match cache {
        Some(cache) => (cache.join(&key[..16]), None),
        None => {
            let scratch = tempfile::tempdir().map_err(|source| DataError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
            (scratch.path().join("tokens"), Some(scratch))
        }
    };
    let (tokenizer, [train, validation, test]) = match open_cached(&dir) {
        Some(cached) => cached,
        None => {
            let tokenizer = tokenize(spec, &train_path, &dir)?;
            let tokens = open_tokens(&dir, &tokenizer)?;
            (tokenizer, tokens)
        }
    };
    let corpus = Corpus {
        tokenizer,
        train,
        validation,
        test,
        context,
        _scratch: scratch,
    };
    check(spec, &corpus, &train_path)?;
    Ok(corpus)
}

/// The tokenizer and token files of an earlier preparation, when all are there and sound.
fn open_cached(dir: &Path) -> Option<(Tokenizer, [Tokens; 3])> {
    let tokenizer = Tokenizer::from_file(&dir.join(TOKENIZER)).ok()?;
    let tokens = open_tokens(dir, &tokenizer).ok()?;
    Some((tokenizer, tokens))
}

/// Maps the train, validation and test token files in `dir`.
fn open_tokens(dir: &Path, tokenizer: &Tokenizer) -> Result<[Tokens; 3], DataError> {
    let width = TokenWidth::for_vocab(tokenizer.vocab_size());
    let open = |name: &str| Tokens::open(&dir.join(name).with_extension(width.extension()));
    Ok([open("train")?, open("validation")?, open("test")?])
}

/// Splits the text, makes the tokenizer and writes it and the token files to `dir` (made
/// whole, then renamed into place, so a half-written cache is never read).
fn tokenize(spec: &Spec, train_path: &Path, dir: &Path) -> Result<Tokenizer, DataError> {
    let d = &spec.data;
    let text = read_text(train_path)?;
    let chars = text.chars().count();
    let (held_test, test_fraction) = match &d.test {
        Some(test) => {
            let path = test
                .get_ref()
                .path
                .clone()
                .expect("validated: text has path");
            (Some(read_text(&path)?), 0.0)
        }
        None => (None, *d.test_fraction.get_ref()),
    };
    // Cut at characters as nanoGPT does: train = the first ⌊n·(1 − v − t)⌋ characters.
    let train_end = (chars as f64 * (1.0 - d.validation.get_ref() - test_fraction)) as usize;
    let validation_end = match test_fraction {
        0.0 => chars,
        _ => (chars as f64 * (1.0 - test_fraction)) as usize,
    };
    let byte_at = |c: usize| text.char_indices().nth(c).map_or(text.len(), |(b, _)| b);
    let (a, b) = (byte_at(train_end), byte_at(validation_end));
    let parts = [
        &text[..a],
        &text[a..b],
        held_test.as_deref().unwrap_or(&text[b..]),
    ];
    let mismatch = |message: String, fix: &str| DataError::Mismatch {
        path: train_path.to_path_buf(),
        message,
        fix: fix.into(),
    };
    let tokenizer = match d.tokenizer() {
        // Every character of the corpus, as nanoGPT's character model numbers them.
        TokenizerSpec::Char => {
            Tokenizer::chars(&[text.as_str(), held_test.as_deref().unwrap_or("")].concat())
        }
        TokenizerSpec::Byte => Tokenizer::bytes(),
        TokenizerSpec::Bpe { vocab } => Tokenizer::train_bpe(parts[0].lines(), vocab)
            .map_err(|e| mismatch(e.to_string(), "check the text, or use kind = \"char\""))?,
        TokenizerSpec::File { path } => Tokenizer::from_file(&path)?,
    };
    let width = TokenWidth::for_vocab(tokenizer.vocab_size());
    let partial = dir.with_extension("partial");
    let io = |path: &Path, source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| io(&partial, e))?;
    for (name, part) in ["train", "validation", "test"].into_iter().zip(parts) {
        let ids = tokenizer.encode(part).map_err(|e| {
            mismatch(
                format!("the {name} text: {e}"),
                "choose a tokenizer that covers the corpus",
            )
        })?;
        Tokens::write(&partial.join(name), &ids, width)?;
    }
    std::fs::write(partial.join(TOKENIZER), tokenizer.to_json())
        .map_err(|e| io(&partial.join(TOKENIZER), e))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&partial, dir).map_err(|e| io(dir, e))?;
    Ok(tokenizer)
}

/// Reads a UTF-8 text file (raw or gzip).
fn read_text(path: &Path) -> Result<String, DataError> {
    let bytes = read_maybe_gz(path)?;
    String::from_utf8(bytes).map_err(|e| DataError::Corrupt {
        path: path.to_path_buf(),
        reason: format!(
            "byte {} is not UTF-8 — convert the file with `iconv -t UTF-8`",
            e.utf8_error().valid_up_to()
        ),
    })
}

/// The corpus must fill a window in each split it has, and the model must hold every id.
fn check(spec: &Spec, corpus: &Corpus, path: &Path) -> Result<(), DataError> {
    let context = corpus.context;
    for (name, tokens) in [
        ("training", &corpus.train),
        ("validation", &corpus.validation),
        ("test", &corpus.test),
    ] {
        if (name == "training" || !tokens.is_empty()) && tokens.len() <= context {
            return Err(DataError::Mismatch {
                path: path.to_path_buf(),
                message: format!(
                    "the {name} text is {} tokens, too few for one window of {context} tokens and its next token",
                    tokens.len()
                ),
                fix: "use a longer text, a smaller held-out fraction, or a shorter context".into(),
            });
        }
    }
    let vocab = corpus.tokenizer.vocab_size();
    let graph = spec.graph();
    let mut holders: Vec<(String, usize)> = graph
        .nodes
        .iter()
        .filter_map(|n| match n.layer {
            LayerSpec::Embedding { vocab, .. } => Some((format!("embedding {}", n.name), vocab)),
            _ => None,
        })
        .collect();
    holders.push(("output".into(), graph.output_shape()[1]));
    if let Some((what, size)) = holders.into_iter().find(|(_, size)| *size < vocab) {
        return Err(DataError::Mismatch {
            path: path.to_path_buf(),
            message: format!(
                "the tokenizer has {vocab} tokens but the model's {what} holds {size}"
            ),
            fix: format!("set the embedding's vocab and the head's units to {vocab} (or more)"),
        });
    }
    Ok(())
}
