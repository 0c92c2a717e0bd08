//! Data for modelforge: IDX and CSV readers, splits, normalisation statistics,
//! seeded shuffling and batching.

pub mod idx;
pub mod image;
pub mod shuffle;
pub mod table;
pub mod text;

use std::io::Read;
use std::path::{Path, PathBuf};

use modelforge_spec::{
    DataFormat, DataSpec, Dtype, Normalize, Spec, Task, TokenizerSpec, show_shape,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use modelforge_text::{Tokenizer, Tokens};
pub use shuffle::{Rng, permutation};
pub use text::{Corpus, TOKENIZER};

/// Everything that can be wrong with a data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read.
    #[error("{}: cannot read: {source} — check data paths in the spec", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// A file's bytes are not what its format says.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A CSV line is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A file holds no examples.
    #[error("{}: holds no examples — give a file with data rows", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A tokenizer or token file failed.
    #[error(transparent)]
    Text(#[from] modelforge_text::TextError),
    /// The data does not fit the model or task in the spec.
    #[error("{}: {message} — {fix}", path.display())]
    Mismatch {
        /// The file the mismatch was found in.
        path: PathBuf,
        /// What does not fit.
        message: String,
        /// How to fix it.
        fix: String,
    },
}

/// Reads a file, decompressing it when it starts with the gzip magic bytes.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    match raw.starts_with(&[0x1f, 0x8b]) {
        // A few kilobytes of gzip can stand for terabytes: stop at the machine's memory.
        true => gunzip_within(
            &raw,
            path,
            modelforge_spec::memory::machine().unwrap_or(u128::MAX),
        ),
        false => Ok(raw),
    }
}

/// Decompresses a gzip file's bytes, refusing one that would grow past `limit` bytes
/// before it gets there.
fn gunzip_within(raw: &[u8], path: &Path, limit: u128) -> Result<Vec<u8>, DataError> {
    let limit = u64::try_from(limit).unwrap_or(u64::MAX);
    let corrupt = |reason: String| DataError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(raw)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| {
            corrupt(format!(
                "gzip stream is damaged ({e}) — download or copy the file again"
            ))
        })?;
    if out.len() as u64 > limit {
        return Err(corrupt(format!(
            "decompresses to more than this machine's {} of memory — unpack it and read it \
             in parts, or use a machine with more memory",
            modelforge_spec::memory::human(u128::from(limit))
        )));
    }
    Ok(out)
}

/// What each example is labelled with.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// A class index per example (classification and binary).
    Classes(Vec<u32>),
    /// `width` real values per example (regression).
    Values {
        /// Row-major values.
        values: Vec<f32>,
        /// Values per example.
        width: usize,
    },
}

impl Targets {
    fn select(&self, rows: &[usize]) -> Targets {
        match self {
            Targets::Classes(c) => Targets::Classes(rows.iter().map(|&r| c[r]).collect()),
            Targets::Values { values, width } => Targets::Values {
                values: rows
                    .iter()
                    .flat_map(|&r| values[r * width..(r + 1) * width].iter().copied())
                    .collect(),
                width: *width,
            },
        }
    }
}

/// Examples in memory: features (raw, as read) and targets.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Row-major features, `len() * sample_len()` values.
    pub features: Vec<f32>,
    /// Per-sample feature shape.
    pub sample_shape: Vec<usize>,
    /// Labels.
    pub targets: Targets,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        let n = self.sample_len();
        self.features.len().checked_div(n).unwrap_or(0)
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per example.
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// The examples at `rows`, in that order.
    pub fn select(&self, rows: &[usize]) -> Dataset {
        let n = self.sample_len();
        let mut features = Vec::with_capacity(rows.len() * n);
        for &r in rows {
            features.extend_from_slice(&self.features[r * n..(r + 1) * n]);
        }
        Dataset {
            features,
            sample_shape: self.sample_shape.clone(),
            targets: self.targets.select(rows),
        }
    }

    /// Features of the examples at `rows` copied into `out` (cleared first).
    pub fn gather_features(&self, rows: &[usize], out: &mut Vec<f32>) {
        let n = self.sample_len();
        out.clear();
        for &r in rows {
            out.extend_from_slice(&self.features[r * n..(r + 1) * n]);
        }
    }

    /// The first `n` examples.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            *self = self.select(&(0..n).collect::<Vec<_>>());
        }
    }
}

/// Per-feature affine transform `(x - shift) * scale`, fitted on the training split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalizer {
    /// Subtracted first, one per feature.
    pub shift: Vec<f32>,
    /// Multiplied after, one per feature.
    pub scale: Vec<f32>,
}

impl Normalizer {
    /// The identity for `n` features.
    pub fn identity(n: usize) -> Normalizer {
        Normalizer {
            shift: vec![0.0; n],
            scale: vec![1.0; n],
        }
    }

    /// Fits the spec's normalisation to the training features.
    pub fn fit(kind: Normalize, format: DataFormat, train: &Dataset) -> Normalizer {
        let n = train.sample_len();
        let rows = train.len().max(1);
        match kind {
            Normalize::None => Normalizer::identity(n),
            Normalize::Scale if format == DataFormat::Idx => {
                let max = train.features.iter().fold(0f32, |a, &b| a.max(b.abs()));
                let unit = if max <= 255.0 { 255.0 } else { max };
                Normalizer {
                    shift: vec![0.0; n],
                    scale: vec![1.0 / unit; n],
                }
            }
            Normalize::Scale => {
                let mut lo = vec![f32::INFINITY; n];
                let mut hi = vec![f32::NEG_INFINITY; n];
                for row in train.features.chunks_exact(n) {
                    for (j, &v) in row.iter().enumerate() {
                        lo[j] = lo[j].min(v);
                        hi[j] = hi[j].max(v);
                    }
                }
                let scale = lo
                    .iter()
                    .zip(&hi)
                    .map(|(l, h)| if h > l { 1.0 / (h - l) } else { 1.0 })
                    .collect();
                Normalizer { shift: lo, scale }
            }
            Normalize::Zscore => {
                let mut mean = vec![0f64; n];
                for row in train.features.chunks_exact(n) {
                    for (j, &v) in row.iter().enumerate() {
                        mean[j] += v as f64;
                    }
                }
                mean.iter_mut().for_each(|m| *m /= rows as f64);
                let mut var = vec![0f64; n];
                for row in train.features.chunks_exact(n) {
                    for (j, &v) in row.iter().enumerate() {
                        var[j] += (v as f64 - mean[j]).powi(2);
                    }
                }
                Normalizer {
                    shift: mean.iter().map(|&m| m as f32).collect(),
                    scale: var
                        .iter()
                        .map(|&v| {
                            let sd = (v / rows as f64).sqrt();
                            if sd > 1e-12 { (1.0 / sd) as f32 } else { 1.0 }
                        })
                        .collect(),
                }
            }
        }
    }
}

/// A spec's data, prepared, with its provenance.
#[derive(Debug)]
pub struct Prepared {
    /// The splits.
    pub splits: Splits,
    /// sha256 over the bytes of every input file, in order.
    pub fingerprint: String,
    /// The files read.
    pub files: Vec<PathBuf>,
}

/// The prepared splits: examples (IDX, CSV) or a tokenized corpus (text).
// One value per prepared data set: the size of the larger variant costs nothing that matters.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Splits {
    /// Examples with targets.
    Examples(Examples),
    /// Token ids for a language model.
    Text(Corpus),
}

/// The example splits of IDX or CSV data.
#[derive(Debug, Clone)]
pub struct Examples {
    /// Training examples.
    pub train: Dataset,
    /// Validation examples (empty when `validation = 0`).
    pub validation: Dataset,
    /// Test examples.
    pub test: Dataset,
    /// Input normalisation fitted on `train`.
    pub normalizer: Normalizer,
}

/// How big each split is, in examples or tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Training examples or tokens.
    pub train: usize,
    /// Validation examples or tokens.
    pub validation: usize,
    /// Test examples or tokens.
    pub test: usize,
    /// `examples` or `tokens`.
    pub unit: &'static str,
}

impl Prepared {
    /// The example splits; `None` for text.
    pub fn examples(&self) -> Option<&Examples> {
        match &self.splits {
            Splits::Examples(e) => Some(e),
            Splits::Text(_) => None,
        }
    }

    /// The size of each split.
    pub fn sizes(&self) -> Sizes {
        match &self.splits {
            Splits::Examples(e) => Sizes {
                train: e.train.len(),
                validation: e.validation.len(),
                test: e.test.len(),
                unit: "examples",
            },
            Splits::Text(c) => Sizes {
                train: c.train.len(),
                validation: c.validation.len(),
                test: c.test.len(),
                unit: "tokens",
            },
        }
    }
}

/// sha256 over the bytes of the given files, in order.
pub fn fingerprint(files: &[PathBuf]) -> Result<String, DataError> {
    let mut hasher = Sha256::new();
    for path in files {
        let mut file = std::fs::File::open(path).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
        std::io::copy(&mut file, &mut hasher).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The files a spec's data is read from, in fingerprint order (a tokenizer file last).
pub fn files(spec: &Spec) -> Vec<PathBuf> {
    let d = &spec.data;
    let mut files = d.train.get_ref().files();
    if let Some(test) = &d.test {
        files.extend(test.get_ref().files());
    }
    if let TokenizerSpec::File { path } = d.tokenizer() {
        files.push(path);
    }
    files
}

/// Reads, checks and splits the data a spec names (token files of text go to a scratch
/// folder that lives as long as the result).
pub fn prepare(spec: &Spec) -> Result<Prepared, DataError> {
    prepare_with(spec, None, None)
}

/// As [`prepare`], for a caller that already computed the [`fingerprint`] of [`files`]
/// (the pipeline keys its cache on it), so the files are not hashed again; token files of
/// text are kept under `cache` and reused when the same text and tokenizer come again.
pub fn prepare_fingerprinted(
    spec: &Spec,
    fingerprint: String,
    cache: Option<&Path>,
) -> Result<Prepared, DataError> {
    prepare_with(spec, Some(fingerprint), cache)
}

fn prepare_with(
    spec: &Spec,
    known: Option<String>,
    cache: Option<&Path>,
) -> Result<Prepared, DataError> {
    let files = files(spec);
    let fingerprint = match known {
        Some(known) => known,
        None => fingerprint(&files)?,
    };
    let splits = match *spec.data.format.get_ref() {
        DataFormat::Text => Splits::Text(text::prepare(spec, &fingerprint, cache)?),
        DataFormat::Idx | DataFormat::Csv => Splits::Examples(examples(spec, &files)?),
    };
    Ok(Prepared {
        splits,
        fingerprint,
        files,
    })
}

fn examples(spec: &Spec, files: &[PathBuf]) -> Result<Examples, DataError> {
    let d: &DataSpec = &spec.data;
    let mut train = read_split(spec, d.train.get_ref())?;
    if let Some(n) = d.limit_train {
        train.truncate(n);
    }
    let test = match &d.test {
        Some(test_files) => {
            let mut test = read_split(spec, test_files.get_ref())?;
            if let Some(n) = d.limit_test {
                test.truncate(n);
            }
            test
        }
        None => {
            let order = permutation(d.seed, u64::MAX, train.len());
            let n_test = ((train.len() as f64) * d.test_fraction.get_ref())
                .round()
                .max(1.0) as usize;
            let mut test = train.select(&order[..n_test]);
            if let Some(n) = d.limit_test {
                test.truncate(n);
            }
            train = train.select(&order[n_test..]);
            test
        }
    };
    let n_val = ((train.len() as f64) * d.validation.get_ref()).round() as usize;
    let order = permutation(d.seed, u64::MAX - 1, train.len());
    let validation = train.select(&order[..n_val]);
    if n_val > 0 {
        train = train.select(&order[n_val..]);
    }
    let first = files.first().cloned().unwrap_or_default();
    if train.is_empty() {
        return Err(DataError::Empty { path: first });
    }
    let normalizer = Normalizer::fit(d.normalize, *d.format.get_ref(), &train);
    Ok(Examples {
        train,
        validation,
        test,
        normalizer,
    })
}

/// Reads one split's files and checks them against the model's input and task.
fn read_split(spec: &Spec, files: &modelforge_spec::DataFiles) -> Result<Dataset, DataError> {
    let input = spec.model.input.get_ref();
    let output = spec.model.output.get_ref();
    let (features, width_shape, raw_labels, where_): (Vec<f32>, Vec<usize>, RawLabels, PathBuf) =
        match *spec.data.format.get_ref() {
            DataFormat::Idx => {
                let images_path = files.images.clone().expect("validated: idx has images");
                let labels_path = files.labels.clone().expect("validated: idx has labels");
                let images = idx::read_idx(&images_path)?;
                let labels = idx::read_idx(&labels_path)?;
                if labels.dims.len() != 1 && !(labels.dims.len() == 2 && labels.dims[1] == 1) {
                    return Err(DataError::Corrupt {
                        path: labels_path,
                        reason: format!(
                            "labels have dimensions {:?}; expected one label per item",
                            labels.dims
                        ),
                    });
                }
                if images.dims[0] != labels.dims[0] {
                    return Err(DataError::Mismatch {
                        path: labels_path,
                        message: format!("{} labels for {} images", labels.dims[0], images.dims[0]),
                        fix: "pair the images file with its own labels file".into(),
                    });
                }
                let lines = (1..=labels.values.len()).collect();
                (
                    images.values,
                    images.dims[1..].to_vec(),
                    RawLabels::Numbers(labels.values, lines),
                    images_path,
                )
            }
            DataFormat::Text => unreachable!("text is read by the text module"),
            DataFormat::Csv => {
                let path = files.path.clone().expect("validated: csv has path");
                let t = table::read_csv(&path, &spec.data.csv)?;
                let width = t.width();
                (
                    t.features,
                    vec![width],
                    RawLabels::Text(t.labels, t.lines),
                    path,
                )
            }
        };
    let per_sample: usize = width_shape.iter().product();
    let want: usize = input.shape.iter().product();
    if per_sample != want {
        return Err(DataError::Mismatch {
            path: where_,
            message: format!(
                "each example has {} = {per_sample} values but the model input {} has {want}",
                show_shape(&width_shape),
                show_shape(&input.shape)
            ),
            fix: format!("set model.input.shape to {}", show_shape(&width_shape)),
        });
    }
    if let Some(i) = features.iter().position(|v| !v.is_finite()) {
        return Err(DataError::Corrupt {
            path: where_,
            reason: format!(
                "example {} holds a value that is not a finite number",
                i / per_sample + 1
            ),
        });
    }
    if input.dtype == Dtype::I64
        && let Some(i) = features.iter().position(|v| v.fract() != 0.0 || *v < 0.0)
    {
        return Err(DataError::Mismatch {
            path: where_,
            message: format!(
                "example {} holds {}, not an integer id",
                i / per_sample + 1,
                features[i]
            ),
            fix: "integer-id inputs need whole numbers ≥ 0".into(),
        });
    }
    let targets = raw_labels.into_targets(output.task, output.classes, &output.labels, &where_)?;
    Ok(Dataset {
        features,
        sample_shape: input.shape.clone(),
        targets,
    })
}

/// Labels as read, before they are checked against the task.
enum RawLabels {
    /// Numbers with their line (or item) numbers.
    Numbers(Vec<f32>, Vec<usize>),
    /// Text cells with their line numbers.
    Text(Vec<String>, Vec<usize>),
}

impl RawLabels {
    fn into_targets(
        self,
        task: Task,
        classes: Option<usize>,
        names: &[String],
        path: &Path,
    ) -> Result<Targets, DataError> {
        let bad = |line: usize, message: String, fix: &str| DataError::Mismatch {
            path: path.to_path_buf(),
            message: format!("row {line}: {message}"),
            fix: fix.to_string(),
        };
        match task {
            Task::Regression => {
                let (values, _) = self.numbers(path)?;
                Ok(Targets::Values { values, width: 1 })
            }
            Task::LanguageModel => unreachable!("validated: language models read text"),
            Task::Classification | Task::Binary => {
                let n = if task == Task::Binary {
                    2
                } else {
                    classes.unwrap_or(2)
                };
                let (labels, lines): (Vec<f32>, Vec<usize>) = match self {
                    RawLabels::Text(cells, lines)
                        if !names.is_empty() && cells.iter().any(|c| c.parse::<f32>().is_err()) =>
                    {
                        let mut out = Vec::with_capacity(cells.len());
                        for (cell, &line) in cells.iter().zip(&lines) {
                            let idx = names.iter().position(|n| n == cell).ok_or_else(|| {
                                bad(
                                    line,
                                    format!("label {cell:?} is not one of the classes {names:?}"),
                                    "add it to model.output.labels or fix the row",
                                )
                            })?;
                            out.push(idx as f32);
                        }
                        (out, lines)
                    }
                    other => other.numbers(path)?,
                };
                let mut out = Vec::with_capacity(labels.len());
                for (&v, &line) in labels.iter().zip(&lines) {
                    if v.fract() != 0.0 || v < 0.0 || v as usize >= n {
                        return Err(bad(
                            line,
                            format!("label {v} is out of range for {n} classes (0..{})", n - 1),
                            "fix the label, or raise model.output.classes",
                        ));
                    }
                    out.push(v as u32);
                }
                Ok(Targets::Classes(out))
            }
        }
    }

    fn numbers(self, path: &Path) -> Result<(Vec<f32>, Vec<usize>), DataError> {
        match self {
            RawLabels::Numbers(v, lines) => Ok((v, lines)),
            RawLabels::Text(cells, lines) => {
                let mut out = Vec::with_capacity(cells.len());
                for (cell, &line) in cells.iter().zip(&lines) {
                    let v: f32 = cell.parse().ok().filter(|v: &f32| v.is_finite()).ok_or_else(|| DataError::Csv {
                        path: path.to_path_buf(),
                        line,
                        message: format!(
                            "label {cell:?} is not a number — for class names list them in model.output.labels"
                        ),
                    })?;
                    out.push(v);
                }
                Ok((out, lines))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_gzip_file_that_grows_past_the_limit_is_refused_before_it_is_held() {
        let bomb = gzip(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 2048, "{} bytes", bomb.len());
        let path = Path::new("bomb.csv.gz");
        assert_eq!(gunzip_within(&bomb, path, 1 << 20).unwrap().len(), 1 << 20);
        let err = gunzip_within(&bomb, path, (1 << 20) - 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("bomb.csv.gz: decompresses to more than") && err.contains("memory"),
            "{err}"
        );
        let damaged = gunzip_within(&bomb[..bomb.len() / 2], path, 1 << 30).unwrap_err();
        assert!(
            damaged.to_string().contains("gzip stream is damaged"),
            "{damaged}"
        );
    }
}
