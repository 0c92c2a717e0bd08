//! The modelforge declarative file: TOML text to a validated [`Spec`], with shape
//! inference and errors that name the file, line, column and a fix.

pub mod data;
pub mod deploy;
pub mod drawing;
mod error;
pub mod explain;
pub mod graph;
pub mod layer;
pub mod memory;
pub mod model;
pub mod seed;
pub mod train;
pub mod tune;

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::Spanned;

pub use data::{DataFiles, DataFormat, DataSpec, Missing, Normalize, TokenizerSpec};
pub use deploy::{DeploySpec, Gate};
pub use error::{SpecError, line_column};
pub use graph::{Graph, GraphProblem, Node, Source};
pub use layer::{Flow, GeluForm, LayerSpec, Padding, Rope, RopeLayout, show_shape};
pub use model::{BlockSpec, Dtype, EntryBody, InputSpec, LayerEntry, ModelSpec, OutputSpec, Task};
pub use train::{
    CheckpointSpec, DistributedSpec, EarlyStopping, Loss, Mode, OptimizerSpec, ScheduleSpec,
    TrainSpec,
};

/// A whole, validated spec file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// What the model is and computes.
    pub model: ModelSpec,
    /// Where the examples come from.
    pub data: DataSpec,
    /// How it is trained.
    pub train: TrainSpec,
    /// Where it goes afterwards.
    #[serde(default)]
    pub deploy: DeploySpec,
    /// A hyperparameter search over this spec (`modelforge tune`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tune: Option<Spanned<tune::TuneSpec>>,
}

impl Spec {
    /// Reads, parses and validates a spec file; relative data paths are resolved against its folder.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let bytes = std::fs::read(path).map_err(|source| SpecError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| SpecError::NotUtf8 {
            path: path.to_path_buf(),
            offset: e.utf8_error().valid_up_to(),
        })?;
        // Anchor relative data paths to an absolute folder, so the resolved spec stored with
        // runs and versions still finds the data from any working directory.
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let base = parent
            .canonicalize()
            .unwrap_or_else(|_| parent.to_path_buf());
        Spec::parse(&text, path, &base)
    }

    /// Parses and validates spec text; `path` names it in errors, `base` anchors relative paths.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Spec, SpecError> {
        Spec::parse_checked(text, path, base, true)
    }

    /// Parses a resolved spec stored with a run or model version: the same checks, except that
    /// the data files it names need not exist any more.
    pub fn parse_stored(text: &str, path: &Path) -> Result<Spec, SpecError> {
        Spec::parse_checked(text, path, Path::new("/"), false)
    }

    fn parse_checked(
        text: &str,
        path: &Path,
        base: &Path,
        data_must_exist: bool,
    ) -> Result<Spec, SpecError> {
        if text.trim().is_empty() {
            return Err(SpecError::Invalid {
                path: path.to_path_buf(),
                line: 1,
                column: 1,
                message: "the spec file is empty".into(),
                fix: "start from examples/mnist/modelforge.toml: it needs [model], [data] and [train]"
                    .into(),
            });
        }
        let mut spec: Spec = toml::from_str(text).map_err(|e| {
            let (line, column) = line_column(text, e.span().map_or(0, |s| s.start));
            SpecError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let at = Locator {
            text,
            path,
            data_must_exist,
        };
        spec.resolve_paths(base);
        spec.validate(&at)?;
        Ok(spec)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut Option<PathBuf>| {
            if let Some(p) = p
                && p.is_relative()
            {
                *p = base.join(&*p);
            }
        };
        for files in std::iter::once(self.data.train.get_mut())
            .chain(self.data.test.as_mut().map(|t| t.get_mut()))
        {
            resolve(&mut files.images);
            resolve(&mut files.labels);
            resolve(&mut files.path);
        }
        if let Some(TokenizerSpec::File { path }) =
            self.data.tokenizer.as_mut().map(|t| t.get_mut())
            && path.is_relative()
        {
            *path = base.join(&*path);
        }
        if let Some(sign) = self.deploy.sign.as_mut().map(|s| s.get_mut())
            && sign.key.is_relative()
        {
            sign.key = base.join(&sign.key);
        }
    }

    /// The model as a checked graph: every node with its inputs, shapes and parameters.
    pub fn graph(&self) -> Graph {
        graph::build(&self.model).expect("a validated spec forms a graph")
    }

    /// Total trainable parameters.
    pub fn parameter_count(&self) -> usize {
        self.graph().parameters()
    }

    /// The per-sample output shape.
    pub fn output_shape(&self) -> Vec<usize> {
        self.graph().output_shape().to_vec()
    }

    /// The loss in force: the one given, or the task's natural one.
    pub fn loss(&self) -> Loss {
        self.train.loss.as_ref().map_or_else(
            || match self.model.output.get_ref().task {
                Task::Classification | Task::LanguageModel => Loss::CrossEntropy,
                Task::Regression => Loss::Mse,
                Task::Binary => Loss::BinaryCrossEntropy,
            },
            |l| *l.get_ref(),
        )
    }

    /// The model name.
    pub fn name(&self) -> &str {
        self.model.name.get_ref()
    }

    /// The resolved spec as TOML text (paths absolute, defaults filled in).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a spec always serialises")
    }

    /// sha256 of what decides a training result: the spec without how it is executed
    /// (threads, workers, distributed settings), so a run resumes under another split.
    pub fn result_hash(&self) -> String {
        Spec::hash_of(&self.without_execution())
    }

    /// The spec without how training is executed (threads, workers, distributed settings):
    /// what decides the result.
    pub fn without_execution(&self) -> Spec {
        let mut spec = self.clone();
        spec.train.threads = None;
        spec.train.workers = None;
        spec.train.distributed = crate::unspanned();
        spec
    }

    /// sha256 of the canonical JSON form of any part of the spec.
    pub fn hash_of<T: Serialize>(part: &T) -> String {
        let json = serde_json::to_vec(part).expect("spec parts serialise");
        hex::encode(Sha256::digest(json))
    }

    /// Keras-style summary table.
    pub fn summary(&self) -> String {
        let input = self.model.input.get_ref();
        let mut rows = vec![(
            format!("input ({})", input.name),
            show_shape(&input.shape),
            "0".to_string(),
        )];
        let graph = self.graph();
        let chain = graph.is_chain();
        for node in &graph.nodes {
            let mut title = format!("{} ({})", node.name, node.layer.kind());
            if !chain {
                let from: Vec<&str> = node
                    .inputs
                    .iter()
                    .map(|s| match s {
                        Source::Input => graph::INPUT,
                        Source::Node(i) => graph.nodes[*i].name.as_str(),
                    })
                    .collect();
                title += &format!(" ← {}", from.join(", "));
            }
            rows.push((
                title,
                show_shape(&node.output_shape),
                group_thousands(node.parameters),
            ));
        }
        let width = |s: &String| s.chars().count();
        let w0 = rows.iter().map(|r| width(&r.0)).max().unwrap_or(0).max(5);
        let w1 = rows.iter().map(|r| width(&r.1)).max().unwrap_or(0).max(12);
        let w2 = rows.iter().map(|r| width(&r.2)).max().unwrap_or(0).max(7);
        let rule = "─".repeat(w0 + w1 + w2 + 6);
        let mut out = format!("Model: {}\n{rule}\n", self.name());
        out += &format!(
            "{:<w0$}   {:<w1$}   {:>w2$}\n{rule}\n",
            "Layer", "Output shape", "Param #"
        );
        for (a, b, c) in rows {
            out += &format!("{a:<w0$}   {b:<w1$}   {c:>w2$}\n");
        }
        let output = self.model.output.get_ref();
        let need = self.memory_need();
        out += &format!(
            "{rule}\nTotal params: {}\nOutput: {} ({}), loss {}\nMemory to train at batch {}: {} (weights {}, gradients {}, optimiser state {}, activations {})\n",
            group_thousands(graph.parameters()),
            output.name,
            output.task.name(),
            self.loss().name(),
            self.train.batch_size.get_ref(),
            memory::human(need.total()),
            memory::human(need.parameters),
            memory::human(need.gradients),
            memory::human(need.optimizer),
            memory::human(need.activations),
        );
        out
    }

    /// What training this model needs in memory at its batch size.
    pub fn memory_need(&self) -> memory::Need {
        memory::need(
            &self.graph(),
            self.train.optimizer.get_ref(),
            *self.train.batch_size.get_ref(),
        )
    }

    fn validate(&self, at: &Locator) -> Result<(), SpecError> {
        self.validate_model(at)?;
        self.validate_data(at)?;
        self.validate_train(at)?;
        self.validate_deploy(at)?;
        self.validate_tune(at)?;
        self.validate_memory(at)
    }

    /// Refuses a model whose training cannot fit in this machine's memory, before any of
    /// it is allocated (a spec stored with a version is not checked again).
    fn validate_memory(&self, at: &Locator) -> Result<(), SpecError> {
        let Some(machine) = memory::machine().filter(|_| at.data_must_exist) else {
            return Ok(());
        };
        let need = self.memory_need();
        if need.total() <= machine {
            return Ok(());
        }
        // Point at the entry holding the most: a top-level layer by index or name, or the
        // block placement its name starts with.
        let m = &self.model;
        let span = need
            .largest
            .as_deref()
            .and_then(|node| {
                let index = node
                    .strip_prefix("layers.")
                    .and_then(|i| i.parse::<usize>().ok());
                m.layers.iter().enumerate().find_map(|(i, entry)| {
                    let name = entry.get_ref().name.as_deref();
                    let named =
                        name.is_some_and(|n| node == n || node.starts_with(&format!("{n}.")));
                    (index == Some(i) || named).then(|| entry.span())
                })
            })
            .unwrap_or_else(|| m.input.span());
        Err(at.invalid(
            span,
            format!(
                "training this model needs {} (weights {}, gradients {}, optimiser state {}, activations {} at batch {}), more than this machine's {}",
                memory::human(need.total()),
                memory::human(need.parameters),
                memory::human(need.gradients),
                memory::human(need.optimizer),
                memory::human(need.activations),
                self.train.batch_size.get_ref(),
                memory::human(machine),
            ),
            &format!(
                "shrink the largest layer ({}), the input or the batch size",
                need.largest.as_deref().unwrap_or("the model")
            ),
        ))
    }

    fn validate_tune(&self, at: &Locator) -> Result<(), SpecError> {
        let Some(tune) = &self.tune else {
            return Ok(());
        };
        let t = tune.get_ref();
        let produced: &[&str] = match self.model.output.get_ref().task {
            Task::Classification | Task::Binary => {
                &["val_accuracy", "val_loss", "accuracy", "loss"]
            }
            Task::Regression => &["val_loss", "val_mae", "val_rmse", "loss", "mae", "rmse"],
            Task::LanguageModel => &["val_loss", "val_perplexity", "loss", "perplexity"],
        };
        if !produced.contains(&t.metric.as_str()) {
            return Err(at.invalid(
                tune.span(),
                format!(
                    "tune metric {:?} is not one a {} model produces",
                    t.metric,
                    self.model.output.get_ref().task.name()
                ),
                &format!("use one of {}", produced.join(", ")),
            ));
        }
        if t.metric.starts_with("val_") && *self.data.validation.get_ref() <= 0.0 {
            return Err(at.invalid(
                tune.span(),
                format!("tune metric {} needs a validation split", t.metric),
                "set data.validation = 0.2 (trials are ranked on held-out data, never on the test split)",
            ));
        }
        if t.space.is_empty() {
            return Err(at.invalid(
                tune.span(),
                "tune.space is empty".into(),
                "add a key to search, e.g. \"train.optimizer.lr\" = { loguniform = [1e-4, 1e-2] }",
            ));
        }
        match (t.strategy, t.trials) {
            (tune::Strategy::Random, None | Some(0)) => {
                return Err(at.invalid(
                    tune.span(),
                    "random search needs trials = N (1 or more)".into(),
                    "add trials = 12",
                ));
            }
            (tune::Strategy::Grid, Some(0)) => {
                return Err(at.invalid(
                    tune.span(),
                    "trials is 0".into(),
                    "use 1 or more trials, or leave it out for the whole grid",
                ));
            }
            _ => {}
        }
        if let Some(h) = &t.halving
            && (h.eta < 2 || h.min_epochs == 0 || h.min_epochs >= *self.train.epochs.get_ref())
        {
            return Err(at.invalid(
                tune.span(),
                format!(
                    "halving {{ min_epochs = {}, eta = {} }} cannot stop anything with train.epochs = {}",
                    h.min_epochs,
                    h.eta,
                    self.train.epochs.get_ref()
                ),
                "use eta ≥ 2 and 1 ≤ min_epochs < train.epochs",
            ));
        }
        let resolved = serde_json::to_value(self).expect("a spec serialises");
        for (path, distribution) in &t.space {
            let problem = tune::parse_path(path)
                .and_then(|steps| {
                    match steps.first() {
                        Some(tune::PathStep::Key(k))
                            if ["model", "data", "train"].contains(&k.as_str()) => {}
                        _ => return Err("only model, data and train keys can be searched".into()),
                    }
                    tune::lookup(&resolved, &steps).map(|_| ())
                })
                .err()
                .or_else(|| distribution.get_ref().problem())
                .or_else(|| match (t.strategy, distribution.get_ref()) {
                    (
                        tune::Strategy::Grid,
                        tune::Distribution::Uniform(_) | tune::Distribution::Loguniform(_),
                    ) => Some("a grid takes choice and int ranges only".into()),
                    _ => None,
                });
            if let Some(problem) = problem {
                return Err(at.invalid(
                    distribution.span(),
                    format!("tune.space {path:?}: {problem}"),
                    "give a spec key path such as \"train.optimizer.lr\" or \"model.layers[0].dense.units\" with a non-empty range",
                ));
            }
        }
        Ok(())
    }

    fn validate_model(&self, at: &Locator) -> Result<(), SpecError> {
        let m = &self.model;
        let name = m.name.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || name.starts_with('.')
        {
            return Err(at.invalid(
                m.name.span(),
                format!("model name {name:?} is not a valid registry name"),
                "use letters, digits, '-', '_' and '.', e.g. \"mnist-mlp\"",
            ));
        }
        let input = m.input.get_ref();
        if input.shape.is_empty() || input.shape.contains(&0) {
            return Err(at.invalid(
                m.input.span(),
                format!("input shape {:?} has no size or a size of 0", input.shape),
                "give the per-sample shape without the batch axis, e.g. shape = [1, 28, 28]",
            ));
        }
        if m.layers.is_empty() {
            return Err(at.invalid(
                m.name.span(),
                "the model has no layers".into(),
                "add `layers = [ { flatten = {} }, { dense = { units = 10 } } ]` to [model]",
            ));
        }
        let graph = graph::build(m).map_err(|p| at.invalid(p.span, p.message, &p.fix))?;
        let shape = graph.output_shape().to_vec();
        self.validate_output(at, &shape)
    }

    fn validate_output(&self, at: &Locator, shape: &[usize]) -> Result<(), SpecError> {
        let out = &self.model.output;
        let o = out.get_ref();
        let shown = show_shape(shape);
        match o.task {
            Task::Classification => {
                let Some(classes) = o.classes else {
                    return Err(at.invalid(
                        out.span(),
                        "a classification output needs `classes`".into(),
                        "add classes = N to the output table",
                    ));
                };
                if classes < 2 {
                    return Err(at.invalid(
                        out.span(),
                        format!("classification with {classes} class(es)"),
                        "give classes = 2 or more, or use task = \"binary\" for yes/no",
                    ));
                }
                if shape != [classes] {
                    return Err(at.invalid(
                        out.span(),
                        format!(
                            "the last layer gives {shown} but the output has {classes} classes"
                        ),
                        &format!("end the layers with `{{ dense = {{ units = {classes} }} }}`"),
                    ));
                }
                if !o.labels.is_empty() && o.labels.len() != classes {
                    return Err(at.invalid(
                        out.span(),
                        format!("{} labels for {classes} classes", o.labels.len()),
                        "give one label per class, in class order",
                    ));
                }
            }
            Task::Binary => {
                if shape != [1] {
                    return Err(at.invalid(
                        out.span(),
                        format!("a binary output needs shape [1] but the last layer gives {shown}"),
                        "end the layers with `{ dense = { units = 1 } }`",
                    ));
                }
            }
            Task::LanguageModel => {
                let input = self.model.input.get_ref();
                let context = input.shape.first().copied().unwrap_or(0);
                if input.dtype != Dtype::I64 || input.shape.len() != 1 {
                    return Err(at.invalid(
                        self.model.input.span(),
                        format!(
                            "a language model reads a window of token ids, but the input is {} {}",
                            input.dtype.protocol_name(),
                            show_shape(&input.shape)
                        ),
                        "use input = { name = \"tokens\", shape = [CONTEXT], dtype = \"i64\" }",
                    ));
                }
                if shape.len() != 2 || shape[0] != context || shape[1] < 2 {
                    return Err(at.invalid(
                        out.span(),
                        format!(
                            "a language model gives [{context}, vocab] logits (one row per position) but the last layer gives {shown}"
                        ),
                        "end the layers with a head over the vocabulary: `{ dense = { units = VOCAB } }` or `{ tied_head = { embedding = \"NAME\" } }`",
                    ));
                }
            }
            Task::Regression => {
                if shape.len() != 1 {
                    return Err(at.invalid(
                        out.span(),
                        format!(
                            "a regression output needs rank 1 but the last layer gives {shown}"
                        ),
                        "end the layers with `{ dense = { units = K } }` for K targets",
                    ));
                }
            }
        }
        if o.task != Task::Classification && (o.classes.is_some() || !o.labels.is_empty()) {
            return Err(at.invalid(
                out.span(),
                format!(
                    "`classes` and `labels` are for classification, not {}",
                    o.task.name()
                ),
                "remove them, or set task = \"classification\"",
            ));
        }
        Ok(())
    }

    fn validate_data(&self, at: &Locator) -> Result<(), SpecError> {
        let d = &self.data;
        let splits =
            std::iter::once(("train", &d.train)).chain(d.test.as_ref().map(|t| ("test", t)));
        for (split, files) in splits {
            let f = files.get_ref();
            let (needed, stray): (&[FileKey], &[FileKey]) = match *d.format.get_ref() {
                DataFormat::Idx => (
                    &[("images", &f.images), ("labels", &f.labels)],
                    &[("path", &f.path)],
                ),
                DataFormat::Csv | DataFormat::Text => (
                    &[("path", &f.path)],
                    &[("images", &f.images), ("labels", &f.labels)],
                ),
            };
            for (key, value) in needed {
                match value {
                    None => {
                        return Err(at.invalid(
                            files.span(),
                            format!("data.{split} has no `{key}` for this format"),
                            &format!("add {key} = \"FILE\" to data.{split}"),
                        ));
                    }
                    Some(p) if at.data_must_exist && !p.is_file() => {
                        return Err(at.invalid(
                            files.span(),
                            format!("data.{split}.{key}: {} does not exist", p.display()),
                            "give a path relative to the spec file's folder",
                        ));
                    }
                    Some(_) => {}
                }
            }
            if let Some((key, _)) = stray.iter().find(|(_, v)| v.is_some()) {
                return Err(at.invalid(
                    files.span(),
                    format!(
                        "data.{split}.{key} does not belong to format {:?}",
                        d.format.get_ref()
                    ),
                    "IDX takes `images` and `labels`; CSV and text take `path`",
                ));
            }
        }
        fraction(at, &d.validation, "data.validation")?;
        let text = *d.format.get_ref() == DataFormat::Text;
        let language_model = self.model.output.get_ref().task == Task::LanguageModel;
        if text != language_model {
            return Err(at.invalid(
                d.format.span(),
                match text {
                    true => format!(
                        "text data trains a language model, but the output task is {}",
                        self.model.output.get_ref().task.name()
                    ),
                    false => {
                        "a language model trains on text, but data.format is not \"text\"".into()
                    }
                },
                "use format = \"text\" with task = \"language_model\" (or neither)",
            ));
        }
        if text {
            return self.validate_text(at);
        }
        if let Some(tokenizer) = &d.tokenizer {
            return Err(at.invalid(
                tokenizer.span(),
                "data.tokenizer is for text data".into(),
                "remove it, or set format = \"text\"",
            ));
        }
        if d.test.is_none() {
            fraction(at, &d.test_fraction, "data.test_fraction")?;
            if *d.test_fraction.get_ref() == 0.0 {
                return Err(at.invalid(
                    d.test_fraction.span(),
                    "no test files and test_fraction = 0 leave nothing to test on".into(),
                    "give data.test files or a test_fraction such as 0.2",
                ));
            }
        }
        if *d.validation.get_ref()
            + if d.test.is_none() {
                *d.test_fraction.get_ref()
            } else {
                0.0
            }
            >= 1.0
        {
            return Err(at.invalid(
                d.validation.span(),
                "validation and test fractions leave no training examples".into(),
                "make validation + test_fraction less than 1",
            ));
        }
        if d.limit_train == Some(0) || d.limit_test == Some(0) {
            return Err(at.invalid(
                d.format.span(),
                "limit_train or limit_test is 0".into(),
                "remove the limit, or give 1 or more",
            ));
        }
        Ok(())
    }

    /// Text data: contiguous splits (train, then validation, then test), a tokenizer, and
    /// somewhere to measure the model on.
    fn validate_text(&self, at: &Locator) -> Result<(), SpecError> {
        let d = &self.data;
        if d.test.is_none() {
            fraction(at, &d.test_fraction, "data.test_fraction")?;
        }
        let test = match d.test {
            Some(_) => 0.0,
            None => *d.test_fraction.get_ref(),
        };
        if *d.validation.get_ref() + test >= 1.0 {
            return Err(at.invalid(
                d.validation.span(),
                "validation and test fractions leave no training text".into(),
                "make validation + test_fraction less than 1, e.g. validation = 0.1",
            ));
        }
        if *d.validation.get_ref() == 0.0 && test == 0.0 && d.test.is_none() {
            return Err(at.invalid(
                d.validation.span(),
                "no validation or test text leaves nothing to measure the model on".into(),
                "hold out text with validation = 0.1",
            ));
        }
        if d.normalize != Normalize::None || d.limit_train.is_some() || d.limit_test.is_some() {
            return Err(at.invalid(
                d.format.span(),
                "normalize, limit_train and limit_test are for examples, not text".into(),
                "remove them; cut the text file down for quick runs",
            ));
        }
        let span = d.tokenizer.as_ref().map_or(d.format.span(), |t| t.span());
        match d.tokenizer() {
            TokenizerSpec::Bpe { vocab } if vocab <= 256 || vocab > u32::MAX as usize => {
                return Err(at.invalid(
                    span,
                    format!("a BPE of {vocab} tokens has no room for merges beyond the 256 bytes"),
                    "use vocab = 4096 or another size above 256",
                ));
            }
            TokenizerSpec::File { path } if at.data_must_exist && !path.is_file() => {
                return Err(at.invalid(
                    span,
                    format!("data.tokenizer.path: {} does not exist", path.display()),
                    "give a tokenizer.json relative to the spec file's folder",
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn validate_train(&self, at: &Locator) -> Result<(), SpecError> {
        let t = &self.train;
        if *t.epochs.get_ref() == 0 {
            return Err(at.invalid(
                t.epochs.span(),
                "epochs is 0".into(),
                "train for 1 or more epochs",
            ));
        }
        let language_model = self.model.output.get_ref().task == Task::LanguageModel;
        match (&t.max_steps, language_model) {
            (None, true) => {
                return Err(at.invalid(
                    t.batch_size.span(),
                    "a language model trains for a number of steps, and [train] has no max_steps"
                        .into(),
                    "add max_steps = 2000 to [train]",
                ));
            }
            (Some(steps), false) => {
                return Err(at.invalid(
                    steps.span(),
                    "max_steps is for language models; this model trains by epochs".into(),
                    "remove max_steps and set epochs",
                ));
            }
            (Some(steps), true) if *steps.get_ref() == 0 => {
                return Err(at.invalid(
                    steps.span(),
                    "max_steps is 0".into(),
                    "train for 1 or more steps",
                ));
            }
            _ => {}
        }
        if let Some(es) = t.early_stopping.as_ref().filter(|_| language_model) {
            return Err(at.invalid(
                es.span(),
                "early stopping watches epochs; a language model trains for max_steps".into(),
                "remove early_stopping and choose max_steps",
            ));
        }
        for (name, value) in [
            ("accumulate", &t.accumulate),
            ("eval_windows", &t.eval_windows),
        ] {
            if *value.get_ref() == 0 {
                return Err(at.invalid(
                    value.span(),
                    format!("{name} is 0"),
                    &format!("use 1 or more for {name}"),
                ));
            }
        }
        if *t.batch_size.get_ref() == 0 {
            return Err(at.invalid(
                t.batch_size.span(),
                "batch_size is 0".into(),
                "use a batch size such as 64",
            ));
        }
        let opt = t.optimizer.get_ref();
        let lr = opt.lr();
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(at.invalid(
                t.optimizer.span(),
                format!("learning rate {lr} is not positive"),
                "give lr a positive value such as 1e-3",
            ));
        }
        let bad = match opt {
            OptimizerSpec::Sgd {
                momentum,
                weight_decay,
                nesterov,
                ..
            } => {
                if !(0.0..1.0).contains(momentum) {
                    Some(format!("momentum {momentum} is outside [0, 1)"))
                } else if *nesterov && *momentum == 0.0 {
                    Some("nesterov needs a momentum above 0".to_string())
                } else {
                    non_negative(*weight_decay, "weight_decay")
                }
            }
            OptimizerSpec::Adam {
                beta1,
                beta2,
                epsilon,
                weight_decay,
                ..
            }
            | OptimizerSpec::Adamw {
                beta1,
                beta2,
                epsilon,
                weight_decay,
                ..
            } => {
                if !(0.0..1.0).contains(beta1) || !(0.0..1.0).contains(beta2) {
                    Some(format!("betas ({beta1}, {beta2}) must lie in [0, 1)"))
                } else if *epsilon <= 0.0 {
                    Some(format!("epsilon {epsilon} is not positive"))
                } else {
                    non_negative(*weight_decay, "weight_decay")
                }
            }
        };
        if let Some(message) = bad {
            return Err(at.invalid(
                t.optimizer.span(),
                message,
                "see docs/spec.md#trainoptimizer for the valid ranges",
            ));
        }
        match t.schedule.get_ref() {
            ScheduleSpec::Step {
                every_epochs: 0, ..
            } => {
                return Err(at.invalid(
                    t.schedule.span(),
                    "step schedule with every_epochs = 0".into(),
                    "decay every 1 or more epochs",
                ));
            }
            ScheduleSpec::Step { gamma, .. } if !(*gamma > 0.0 && *gamma <= 1.0) => {
                return Err(at.invalid(
                    t.schedule.span(),
                    format!("gamma {gamma} is outside (0, 1]"),
                    "use e.g. gamma = 0.1",
                ));
            }
            ScheduleSpec::Cosine { min_lr, .. } if !(*min_lr >= 0.0 && *min_lr < lr) => {
                return Err(at.invalid(
                    t.schedule.span(),
                    format!("min_lr {min_lr} must be at least 0 and below lr {lr}"),
                    "lower min_lr",
                ));
            }
            _ => {}
        }
        if let Some(clip) = &t.clip_grad_norm
            && !(*clip.get_ref() > 0.0 && clip.get_ref().is_finite())
        {
            return Err(at.invalid(
                clip.span(),
                format!("clip_grad_norm {} is not positive", clip.get_ref()),
                "use e.g. 1.0",
            ));
        }
        if let Some(es) = &t.early_stopping {
            let metric = &es.get_ref().metric;
            if !train::metric_names().contains(&metric.as_str()) {
                return Err(at.invalid(
                    es.span(),
                    format!("unknown metric {metric:?} for early stopping"),
                    &format!("use one of {}", train::metric_names().join(", ")),
                ));
            }
            if es.get_ref().patience == 0 {
                return Err(at.invalid(es.span(), "patience is 0".into(), "wait 1 or more epochs"));
            }
        }
        if t.checkpoint.get_ref().keep == 0 {
            return Err(at.invalid(
                t.checkpoint.span(),
                "checkpoint.keep is 0".into(),
                "keep 1 or more checkpoints",
            ));
        }
        for (name, count) in [("threads", &t.threads), ("workers", &t.workers)] {
            if let Some(count) = count
                && *count.get_ref() == 0
            {
                return Err(at.invalid(
                    count.span(),
                    format!("{name} is 0"),
                    &format!("use 1 or more {name}"),
                ));
            }
        }
        let d = t.distributed.get_ref();
        if !(d.bucket_mb > 0.0 && d.bucket_mb.is_finite()) {
            return Err(at.invalid(
                t.distributed.span(),
                format!("distributed.bucket_mb is {}", d.bucket_mb),
                "use a positive size in MiB, e.g. 25",
            ));
        }
        if !(d.timeout_s > 0.0 && d.timeout_s.is_finite()) {
            return Err(at.invalid(
                t.distributed.span(),
                format!("distributed.timeout_s is {}", d.timeout_s),
                "use a positive number of seconds, e.g. 300",
            ));
        }
        let loss = self.loss();
        let task = self.model.output.get_ref().task;
        let fits = matches!(
            (task, loss),
            (
                Task::Classification | Task::LanguageModel,
                Loss::CrossEntropy
            ) | (Task::Regression, Loss::Mse)
                | (Task::Binary, Loss::BinaryCrossEntropy)
        );
        if !fits {
            let span = t.loss.as_ref().map_or(0..0, |l| l.span());
            return Err(at.invalid(
                span,
                format!("loss {} does not fit a {} output", loss.name(), task.name()),
                "remove `loss` to use the task's natural loss",
            ));
        }
        Ok(())
    }

    fn validate_deploy(&self, at: &Locator) -> Result<(), SpecError> {
        let d = &self.deploy;
        if let Some(sign) = &d.sign
            && at.data_must_exist
            && !sign.get_ref().key.is_file()
        {
            return Err(at.invalid(
                sign.span(),
                format!(
                    "deploy.sign.key: {} does not exist",
                    sign.get_ref().key.display()
                ),
                "give a private key PEM relative to the spec file's folder (`modelforge registry keygen KEY.pem` makes one)",
            ));
        }
        if let Some(gate) = &d.gate {
            let g = gate.get_ref();
            let known: &[&str] = match self.model.output.get_ref().task {
                Task::Classification | Task::Binary => &["test_accuracy", "test_loss"],
                Task::Regression => &["test_loss", "test_mae", "test_rmse"],
                Task::LanguageModel => &["test_loss", "test_perplexity"],
            };
            if !known.contains(&g.metric.as_str()) {
                return Err(at.invalid(
                    gate.span(),
                    format!(
                        "gate metric {:?} is not one a {} model produces",
                        g.metric,
                        self.model.output.get_ref().task.name()
                    ),
                    &format!("use one of {}", known.join(", ")),
                ));
            }
            if g.min.is_none() && g.max.is_none() && g.beat.is_none() {
                return Err(at.invalid(
                    gate.span(),
                    "the gate has no threshold".into(),
                    "add min = X, max = X or beat = \"production\"",
                ));
            }
            if !(g.margin >= 0.0 && g.margin.is_finite()) {
                return Err(at.invalid(
                    gate.span(),
                    format!("gate margin is {}", g.margin),
                    "use a margin of 0 or more, e.g. margin = 0.002",
                ));
            }
            if let Some(alias) = &g.beat {
                check_alias(alias).map_err(|fix| {
                    at.invalid(
                        gate.span(),
                        format!("gate beat = {alias:?} is not an alias name"),
                        fix,
                    )
                })?;
            }
        }
        if let Some(server) = &d.server
            && !(server.get_ref().starts_with("http://")
                || server.get_ref().starts_with("https://"))
        {
            return Err(at.invalid(
                server.span(),
                format!("server {:?} is not an http(s) URL", server.get_ref()),
                "give e.g. \"http://127.0.0.1:8000\"",
            ));
        }
        for alias in &d.aliases {
            check_alias(alias).map_err(|fix| {
                at.invalid(
                    0..0,
                    format!("alias {alias:?} is not a valid alias name"),
                    fix,
                )
            })?;
        }
        Ok(())
    }
}

/// Checks an alias name; the error is the fix.
fn check_alias(alias: &str) -> Result<(), &'static str> {
    let valid = !alias.is_empty()
        && !alias.chars().all(|c| c.is_ascii_digit())
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    match valid {
        true => Ok(()),
        false => Err("use letters, digits, '-' and '_' (not only digits), e.g. \"production\""),
    }
}

/// A data-file key and its value.
type FileKey<'a> = (&'a str, &'a Option<PathBuf>);

fn fraction(at: &Locator, value: &Spanned<f64>, key: &str) -> Result<(), SpecError> {
    let v = *value.get_ref();
    if !(0.0..1.0).contains(&v) {
        return Err(at.invalid(
            value.span(),
            format!("{key} is {v}"),
            "give a fraction in [0, 1), e.g. 0.1",
        ));
    }
    Ok(())
}

fn non_negative(v: f64, key: &str) -> Option<String> {
    (!(v >= 0.0 && v.is_finite())).then(|| format!("{key} {v} is negative"))
}

/// A default value with no position in the file (for keys left out).
fn unspanned<T: Default>() -> Spanned<T> {
    Spanned::new(0..0, T::default())
}

/// Formats 101770 as "101,770".
pub fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Turns byte spans into positioned errors.
struct Locator<'a> {
    text: &'a str,
    path: &'a Path,
    data_must_exist: bool,
}

impl Locator<'_> {
    fn invalid(&self, span: Range<usize>, message: String, fix: &str) -> SpecError {
        let (line, column) = line_column(self.text, span.start);
        SpecError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            message,
            fix: fix.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MLP: &str = r#"
[model]
name = "tiny"
input = { name = "x", shape = [4] }
output = { task = "classification", classes = 3 }
layers = [
  { dense = { units = 8 } },
  { relu = {} },
  { dense = { units = 3 } },
]

[data]
format = "csv"
train = { path = "Cargo.toml" }

[train]
epochs = 2
batch_size = 4
optimizer = { kind = "adam", lr = 0.01 }
"#;

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::parse(
            text,
            Path::new("t.toml"),
            Path::new(env!("CARGO_MANIFEST_DIR")),
        )
    }

    #[test]
    fn parses_and_counts_parameters() {
        let spec = parse(MLP).unwrap();
        assert_eq!(spec.parameter_count(), 4 * 8 + 8 + 8 * 3 + 3);
        assert_eq!(spec.output_shape(), vec![3]);
        assert_eq!(spec.loss(), Loss::CrossEntropy);
        assert!(spec.summary().contains("Total params: 67"));
    }

    #[test]
    fn shape_errors_name_line_and_fix() {
        let text = MLP.replace("shape = [4]", "shape = [2, 2, 2]");
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.starts_with("t.toml:7:3: layer 1 (dense): its input is [2, 2, 2]"),
            "{err}"
        );
        assert!(err.contains("flatten"), "{err}");
    }

    #[test]
    fn unknown_keys_are_syntax_errors_with_position() {
        let text = MLP.replace("lr = 0.01", "lr = 0.01, beta3 = 1");
        let err = parse(&text).unwrap_err();
        match err {
            SpecError::Syntax { line, message, .. } => {
                assert_eq!(line, 19);
                assert!(message.contains("beta3"), "{message}");
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn resolved_spec_round_trips() {
        let spec = parse(MLP).unwrap();
        let again: Spec = toml::from_str(&spec.to_toml()).unwrap();
        assert_eq!(Spec::hash_of(&again.model), Spec::hash_of(&spec.model));
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(101_770), "101,770");
        assert_eq!(group_thousands(12), "12");
        assert_eq!(group_thousands(1_000_000), "1,000,000");
    }
}
