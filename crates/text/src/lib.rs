//! Text for modelforge language models: tokenizers (characters, bytes, byte-level BPE, or
//! any Hugging Face `tokenizer.json`) and token files read by memory map.
//!
//! Every tokenizer is a Hugging Face [`tokenizers::Tokenizer`], so the `tokenizer.json` a run
//! saves is read unchanged by `transformers`, `tokenizers` and llama.cpp's converters.

pub mod chat;
pub mod generation;
pub mod tokens;

use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

pub use generation::{Finish, Sampling};
pub use tokens::{TokenWidth, Tokens};

/// Everything that can be wrong with a tokenizer or a token file.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// A `tokenizer.json` does not parse.
    #[error(
        "{}: not a Hugging Face tokenizer.json ({reason}) — give the tokenizer.json a model ships, or use kind = \"char\", \"byte\" or \"bpe\"",
        path.display()
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// Training a BPE vocabulary failed.
    #[error("cannot train the BPE tokenizer: {0}")]
    Train(String),
    /// Text holds a character the tokenizer has no token for.
    #[error(
        "character {character:?} at character {position} of the text is not in the tokenizer's vocabulary — remove it, or use a tokenizer that covers it (kind = \"byte\" covers every text)"
    )]
    Unencodable {
        /// The character.
        character: char,
        /// 1-based character position.
        position: usize,
    },
    /// A chat template cannot be read or compiled.
    #[error("{}: {reason} — fix the model's chat_template, or remove it to use the plain one", path.display())]
    Chat {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A generation setting is out of range.
    #[error("{0}")]
    Settings(String),
    /// The tokenizer failed on a text or an id sequence.
    #[error("the tokenizer failed: {0}")]
    Tokenizer(String),
    /// A token file is damaged.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn failed(e: impl std::fmt::Display) -> TextError {
    TextError::Tokenizer(e.to_string())
}

/// A BPE model without merges: one token per distinct character, numbered in code-point
/// order.
fn one_token_each(mut chars: Vec<char>) -> BPE {
    chars.sort_unstable();
    chars.dedup();
    let vocab = chars
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), i as u32))
        .collect::<Vocab>();
    BPE::builder()
        .vocab_and_merges(vocab, Vec::new())
        .build()
        .expect("a vocabulary without merges builds")
}

/// A tokenizer: text to token ids and back.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer({} tokens)", self.vocab_size())
    }
}

impl Tokenizer {
    /// One token per distinct character of `text`, in code-point order (nanoGPT's
    /// character-level vocabulary).
    pub fn chars(text: &str) -> Tokenizer {
        let mut inner = tokenizers::Tokenizer::new(one_token_each(text.chars().collect()));
        inner.with_decoder(Some(Fuse::new()));
        Tokenizer { inner }
    }

    /// One token per byte: 256 tokens, every text encodes (GPT-2's byte-to-character map).
    pub fn bytes() -> Tokenizer {
        let alphabet = ByteLevel::alphabet().into_iter().collect();
        let mut inner = tokenizers::Tokenizer::new(one_token_each(alphabet));
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, false)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        Tokenizer { inner }
    }

    /// A byte-level BPE of `vocab` tokens (256 bytes and the merges) trained on `texts`,
    /// with GPT-2's pre-tokenisation.
    pub fn train_bpe<'t>(
        texts: impl Iterator<Item = &'t str> + Send,
        vocab: usize,
    ) -> Result<Tokenizer, TextError> {
        let mut inner = tokenizers::Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab)
            .min_frequency(2)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut trainer = TrainerWrapper::BpeTrainer(trainer);
        inner
            .train(&mut trainer, texts)
            .map_err(|e| TextError::Train(e.to_string()))?;
        Ok(Tokenizer { inner })
    }

    /// Reads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer, TextError> {
        let bytes = std::fs::read(path).map_err(|source| TextError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Tokenizer::from_json(&bytes, path)
    }

    /// Parses `tokenizer.json` bytes; `path` names them in errors.
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<Tokenizer, TextError> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| TextError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Tokenizer { inner })
    }

    /// The tokenizer as `tokenizer.json` text.
    pub fn to_json(&self) -> String {
        self.inner
            .to_string(true)
            .expect("a tokenizer always serialises")
    }

    /// Number of token ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The ids of a text, refusing characters the tokenizer would silently drop: the text
    /// must come back from the ids (whitespace aside, which pre-tokenizers may fold), unless
    /// the tokenizer normalises text on purpose.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TextError> {
        let encoding = self.inner.encode(text, false).map_err(failed)?;
        let ids = encoding.get_ids().to_vec();
        if self.inner.get_normalizer().is_none() {
            let back = self.decode(&ids)?;
            let mut back = back.chars().filter(|c| !c.is_whitespace());
            let lost = text
                .chars()
                .enumerate()
                .filter(|(_, c)| !c.is_whitespace())
                .find(|(_, c)| back.next() != Some(*c));
            if let Some((position, character)) = lost {
                return Err(TextError::Unencodable {
                    character,
                    position: position + 1,
                });
            }
        }
        Ok(ids)
    }

    /// The text of a sequence of ids.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TextError> {
        self.inner.decode(ids, false).map_err(failed)
    }
}

/// Incremental decoding for streaming generation (start one with `Stream::default()`): each
/// id costs the decoding of the few ids since the last text shown, not of the whole sequence,
/// and text is held back while a character is incomplete.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    ids: Vec<u32>,
    /// Where the ids decoded for context start (the text before them is shown).
    prefix: usize,
    /// Ids before this one are shown.
    read: usize,
}

impl Stream {
    /// Adds an id; returns the new text it completes, if any. Give every id of one stream to
    /// the same tokenizer.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<Option<String>, TextError> {
        self.ids.push(id);
        let before = tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let text = tokenizer.decode(&self.ids[self.prefix..])?;
        // A byte-level token may end inside a character: wait for the rest.
        if text.len() <= before.len() || text.ends_with('\u{fffd}') {
            return Ok(None);
        }
        let new = text[before.len()..].to_string();
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(Some(new))
    }

    /// The text of the ids still held back (a character cut short at the end of a
    /// generation decodes as U+FFFD, as `transformers` decodes it); the stream is then empty.
    pub fn flush(&mut self, tokenizer: &Tokenizer) -> Result<Option<String>, TextError> {
        if self.read == self.ids.len() {
            return Ok(None);
        }
        let before = tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let text = tokenizer.decode(&self.ids[self.prefix..])?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok((text.len() > before.len()).then(|| text[before.len()..].to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str =
        "ROMEO:\nBut soft, what light through yonder window breaks?\n\nJULIET:\nAy me!\n";

    #[test]
    fn characters_round_trip_and_are_numbered_in_code_point_order() {
        let t = Tokenizer::chars(TEXT);
        let mut distinct: Vec<char> = TEXT.chars().collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(t.vocab_size(), distinct.len());
        let ids = t.encode(TEXT).unwrap();
        assert_eq!(ids.len(), TEXT.chars().count());
        assert_eq!(ids[0] as usize, distinct.binary_search(&'R').unwrap());
        assert_eq!(t.decode(&ids).unwrap(), TEXT);
    }

    #[test]
    fn a_character_outside_the_vocabulary_is_refused_with_its_position() {
        let t = Tokenizer::chars(TEXT);
        let err = t.encode("ROMEO: zz").unwrap_err();
        assert!(matches!(
            err,
            TextError::Unencodable {
                character: 'z',
                position: 8
            }
        ));
        assert!(err.to_string().contains("kind = \"byte\""), "{err}");
    }

    #[test]
    fn bytes_cover_every_text() {
        let t = Tokenizer::bytes();
        assert_eq!(t.vocab_size(), 256);
        let text = "naïve — 東京\n";
        let ids = t.encode(text).unwrap();
        assert_eq!(ids.len(), text.len());
        assert_eq!(t.decode(&ids).unwrap(), text);
    }

    #[test]
    fn a_trained_bpe_merges_and_round_trips_through_its_json() {
        let corpus = TEXT.repeat(20);
        let t = Tokenizer::train_bpe(corpus.lines(), 300).unwrap();
        assert!(t.vocab_size() > 256 && t.vocab_size() <= 300);
        let ids = t.encode(TEXT).unwrap();
        assert!(ids.len() < TEXT.len() / 2, "{} tokens", ids.len());
        assert_eq!(t.decode(&ids).unwrap(), TEXT);
        let again = Tokenizer::from_json(t.to_json().as_bytes(), Path::new("t.json")).unwrap();
        assert_eq!(again.encode(TEXT).unwrap(), ids);
    }

    #[test]
    fn a_damaged_tokenizer_file_names_itself() {
        let err =
            Tokenizer::from_json(b"{\"model\": 3}", Path::new("x/tokenizer.json")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("x/tokenizer.json: not a Hugging Face tokenizer.json"),
            "{text}"
        );
    }

    #[test]
    fn streaming_holds_back_a_split_character() {
        let t = Tokenizer::bytes();
        let ids = t.encode("é!").unwrap();
        assert_eq!(ids.len(), 3);
        let mut s = Stream::default();
        assert_eq!(s.push(&t, ids[0]).unwrap(), None);
        assert_eq!(s.push(&t, ids[1]).unwrap().as_deref(), Some("é"));
        assert_eq!(s.push(&t, ids[2]).unwrap().as_deref(), Some("!"));
        assert_eq!(s.flush(&t).unwrap(), None);
        // A character cut short by the end of the generation comes out as U+FFFD.
        assert_eq!(s.push(&t, ids[0]).unwrap(), None);
        assert_eq!(s.flush(&t).unwrap().as_deref(), Some("\u{fffd}"));
        assert_eq!(s.flush(&t).unwrap(), None);
    }
}
