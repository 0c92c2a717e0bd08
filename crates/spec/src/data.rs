//! The `[data]` section: where the examples come from and how they are prepared.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The `[data]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// File format of the sources.
    pub format: Spanned<DataFormat>,
    /// Training examples.
    pub train: Spanned<DataFiles>,
    /// Test examples; without it `test_fraction` of `train` is held out.
    pub test: Option<Spanned<DataFiles>>,
    /// Fraction of the training examples held out for validation.
    #[serde(default = "crate::unspanned")]
    pub validation: Spanned<f64>,
    /// Fraction held out for testing when no `test` files are given.
    #[serde(default = "default_test_fraction")]
    pub test_fraction: Spanned<f64>,
    /// Feature normalisation, fitted on the training split only.
    #[serde(default)]
    pub normalize: Normalize,
    /// Seed of the split shuffle.
    #[serde(default)]
    pub seed: u64,
    /// Use only the first N training examples (quick runs, tests).
    pub limit_train: Option<usize>,
    /// Use only the first N test examples.
    pub limit_test: Option<usize>,
    /// CSV reading options.
    #[serde(default)]
    pub csv: CsvOptions,
    /// How text is split into tokens (format `text`; default characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<Spanned<TokenizerSpec>>,
}

impl DataSpec {
    /// The tokenizer in force for text: the one given, or characters.
    pub fn tokenizer(&self) -> TokenizerSpec {
        self.tokenizer
            .as_ref()
            .map_or(TokenizerSpec::Char, |t| t.get_ref().clone())
    }
}

/// How text becomes token ids, chosen by `kind`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenizerSpec {
    /// One token per distinct character of the training split.
    #[default]
    Char,
    /// One token per byte (256 tokens; every text encodes).
    Byte,
    /// Byte-level BPE trained on the training split.
    Bpe {
        /// Tokens in the vocabulary, the 256 bytes included.
        vocab: usize,
    },
    /// An existing Hugging Face `tokenizer.json`.
    File {
        /// The file, relative to the spec's folder.
        path: PathBuf,
    },
}

impl TokenizerSpec {
    /// The name of the kind as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenizerSpec::Char => "char",
            TokenizerSpec::Byte => "byte",
            TokenizerSpec::Bpe { .. } => "bpe",
            TokenizerSpec::File { .. } => "file",
        }
    }
}

fn default_test_fraction() -> Spanned<f64> {
    Spanned::new(0..0, 0.2)
}

/// Supported source formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// IDX files (MNIST), raw or gzip-compressed.
    Idx,
    /// Comma-separated values, raw or gzip-compressed.
    Csv,
    /// UTF-8 text (raw or gzip-compressed), split into tokens, for language models.
    Text,
}

/// The files of one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFiles {
    /// IDX images file.
    pub images: Option<PathBuf>,
    /// IDX labels file.
    pub labels: Option<PathBuf>,
    /// CSV file.
    pub path: Option<PathBuf>,
}

impl DataFiles {
    /// Every file this split reads.
    pub fn files(&self) -> Vec<PathBuf> {
        [&self.images, &self.labels, &self.path]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// Feature normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// Features as read.
    #[default]
    None,
    /// Divide by the largest value the type holds (IDX) or min-max to [0, 1] (CSV).
    Scale,
    /// Subtract the mean and divide by the standard deviation, per feature.
    Zscore,
}

/// How CSV files are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Whether the first (non-skipped) line holds column names.
    #[serde(default = "yes")]
    pub header: bool,
    /// Lines to skip before the header or data.
    #[serde(default)]
    pub skip_rows: usize,
    /// The label column: its name, or its index (negative counts from the end).
    #[serde(default = "default_label")]
    pub label: LabelColumn,
    /// Columns holding text categories, one-hot encoded.
    #[serde(default)]
    pub categorical: Vec<String>,
    /// What to do with an empty cell.
    #[serde(default)]
    pub missing: Missing,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: true,
            skip_rows: 0,
            label: default_label(),
            categorical: Vec::new(),
            missing: Missing::Error,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_label() -> LabelColumn {
    LabelColumn::Index(-1)
}

/// The label column of a CSV file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LabelColumn {
    /// By header name.
    Name(String),
    /// By position; negative counts from the end.
    Index(i64),
}

/// What to do with an empty CSV cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missing {
    /// Stop with an error naming the row.
    #[default]
    Error,
    /// Drop the row.
    Drop,
    /// Fill with the column mean.
    Mean,
    /// Fill with zero.
    Zero,
}
