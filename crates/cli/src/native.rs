//! The native engine behind the inference core: a registry version's spec and
//! safetensors weights built into a burn network.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use std::collections::HashMap;

use modelforge_explain::Attributions;
use modelforge_generate::{GenerateError, LanguageModel, Sequence};
use modelforge_model::Network;
use modelforge_model::burn::tensor::Device;
use modelforge_registry::{Manifest, Registry};
use modelforge_serve::{
    Engine, Explained, Explainer, GenerateRequest, Generator, Loader, Pieces, Prompt, Runnable,
    SequenceId, ServeError, Token, Values,
};
use modelforge_spec::{Spec, Task};

/// The version format this engine runs.
pub const FORMAT: &str = modelforge_registry::NATIVE_FORMAT;

/// The spec stored in a native version's folder.
pub fn stored_spec(dir: &Path) -> Result<Spec> {
    let spec_path = dir.join("spec.toml");
    let text = std::fs::read_to_string(&spec_path)
        .with_context(|| format!("cannot read {}", spec_path.display()))?;
    Ok(Spec::parse_stored(&text, &spec_path)?)
}

/// A loaded native version.
pub struct Native {
    /// The spec it was built from.
    pub spec: Spec,
    /// The network, in inference mode.
    pub network: Network,
    device: Device,
}

impl Native {
    /// Builds the network of the version in `dir`.
    pub fn load(manifest: &Manifest, dir: &Path, device: &Device) -> Result<Native> {
        if manifest.format != FORMAT {
            bail!(
                "{}@{} has format {:?}, which this build cannot run",
                manifest.name,
                manifest.version,
                manifest.format
            );
        }
        let spec = stored_spec(dir)?;
        let network = Network::new(&spec, device).load_safetensors(
            &dir.join(modelforge_train::run::WEIGHTS),
            device,
            false,
        )?;
        Ok(Native {
            spec,
            network,
            device: device.clone(),
        })
    }

    /// Resolves `name[@version|@alias]`, verifies its files and loads it.
    pub fn open(
        registry: &Registry,
        reference: &str,
        device: &Device,
    ) -> Result<(Manifest, Native)> {
        let (name, version) = registry.resolve(reference)?;
        let stored = registry.open(&name, version)?;
        let native = Native::load(&stored.manifest, &stored.dir, device)?;
        Ok((stored.manifest, native))
    }

    /// Resolves `name[@version|@alias]` of a language model and pairs its network with the
    /// `tokenizer.json` published beside it.
    pub fn open_language_model(
        registry: &Registry,
        reference: &str,
        device: &Device,
    ) -> Result<(Manifest, LanguageModel)> {
        let (name, version) = registry.resolve(reference)?;
        let stored = registry.open(&name, version)?;
        if stored.manifest.task != Task::LanguageModel.name() {
            bail!(
                "{name}@{version} is a {} model, not a language model — use `modelforge predict` for it",
                stored.manifest.task
            );
        }
        let model = Native::load_language_model(&stored.manifest, &stored.dir, device)?;
        Ok((stored.manifest, model))
    }

    /// The language model of the version in `dir`: its network and its `tokenizer.json`.
    pub fn load_language_model(
        manifest: &Manifest,
        dir: &Path,
        device: &Device,
    ) -> Result<LanguageModel> {
        let native = Native::load(manifest, dir, device)?;
        let tokenizer =
            modelforge_data::Tokenizer::from_file(&dir.join(modelforge_data::TOKENIZER))?;
        let special = modelforge_pretrained::hf::Special::read(&[
            dir.join(modelforge_pretrained::hf::GENERATION_CONFIG)
        ]);
        Ok(LanguageModel::new(native.network, tokenizer, device)?.with_end_tokens(special.eos))
    }
}

/// The one input of a native model as floats.
fn single_input(inputs: Vec<Values>) -> Result<Vec<f32>, String> {
    match <[Values; 1]>::try_from(inputs) {
        Ok([Values::F32(v)]) => Ok(v),
        Ok([other]) => Ok(other.to_f32()),
        Err(inputs) => Err(format!(
            "a native model takes one input, not {}",
            inputs.len()
        )),
    }
}

impl Native {
    /// Attributions of `batch` samples to one output, with the outputs.
    pub fn explain(
        &self,
        input: &[f32],
        batch: usize,
        settings: &modelforge_explain::Explain,
    ) -> Result<modelforge_explain::Attributions, modelforge_explain::ExplainError> {
        // A z-scored model keeps the training mean as its normalisation's shift.
        let norm = self.network.norm();
        let mean = (self.spec.data.normalize == modelforge_spec::Normalize::Zscore)
            .then_some(norm.shift.as_slice());
        let setting = modelforge_explain::Setting {
            device: &self.device,
            mean,
            budget_bytes: modelforge_explain::BUDGET_BYTES,
            classifies: self.spec.model.output.get_ref().task != Task::Regression,
        };
        modelforge_explain::explain(&self.network, input, batch, settings, &setting)
    }
}

impl Runnable for Native {
    fn run(&mut self, inputs: Vec<Values>, batch: usize) -> Result<Vec<Values>, String> {
        let input = single_input(inputs)?;
        let x = self
            .network
            .input(&input, batch, &self.device)
            .map_err(|e| e.to_string())?;
        let out = self.network.forward(x).into_data().try_to_vec::<f32>();
        Ok(vec![Values::F32(out.map_err(|e| format!("{e:?}"))?)])
    }

    fn explain(
        &mut self,
        inputs: Vec<Values>,
        batch: usize,
        settings: &modelforge_explain::Explain,
    ) -> Option<Result<Explained, ServeError>> {
        let explained = single_input(inputs)
            .map_err(ServeError::BadRequest)
            .and_then(|input| {
                Native::explain(self, &input, batch, settings)
                    .map_err(|e| ServeError::BadRequest(e.to_string()))
            })
            .map(|a| explained(a, None));
        Some(explained)
    }
}

/// What the inference core answers for attributions computed here.
fn explained(a: Attributions, pieces: Option<Pieces>) -> Explained {
    Explained {
        outputs: vec![Values::F32(a.outputs)],
        attributions: a.values,
        shape: a.shape,
        targets: a.targets,
        delta: a.delta,
        pieces,
    }
}

/// A language model's prompt explained: its ids, the attributions of its tokens to the
/// next token's score, and the text of the tokens.
pub struct PromptExplanation {
    /// The prompt's token ids.
    pub ids: Vec<f32>,
    /// One attribution per token; the outputs are the next token's logits.
    pub attributions: Attributions,
    /// The text of each token and of the explained next token.
    pub pieces: Pieces,
}

/// Explains what a language model says after `prompt` (the token it would generate first,
/// or `settings.target`), as `modelforge explain` and the server's explain route answer.
pub fn explain_prompt(
    model: &LanguageModel,
    prompt: &str,
    settings: &modelforge_explain::Explain,
) -> Result<PromptExplanation, ServeError> {
    let ids = model.encode(prompt).map_err(served)?;
    let values: Vec<f32> = ids.iter().map(|&id| id as f32).collect();
    let setting = modelforge_explain::Setting {
        device: model.device(),
        mean: None,
        budget_bytes: modelforge_explain::BUDGET_BYTES,
        classifies: true,
    };
    let attributions = modelforge_explain::explain(model.network(), &values, 1, settings, &setting)
        .map_err(|e| ServeError::BadRequest(e.to_string()))?;
    let targets: Vec<u32> = attributions.targets.iter().map(|&t| t as u32).collect();
    let pieces = Pieces {
        tokens: model.pieces(&ids),
        targets: model.pieces(&targets),
    };
    Ok(PromptExplanation {
        ids: values,
        attributions,
        pieces,
    })
}

/// Loads native versions on one device for the inference core.
pub struct NativeLoader {
    /// The compute device.
    pub device: Device,
}

impl Loader for NativeLoader {
    fn load(&self, manifest: &Manifest, dir: &Path) -> Result<Engine, String> {
        let engine = match manifest.task == Task::LanguageModel.name() {
            true => Native::load_language_model(manifest, dir, &self.device).and_then(|model| {
                let config = dir.join(modelforge_text::chat::TOKENIZER_CONFIG);
                let chat = modelforge_text::chat::ChatTemplate::from_config(&config)?;
                Ok(Engine::Generator(Box::new(NativeGenerator {
                    model,
                    chat,
                    sequences: HashMap::new(),
                })))
            }),
            false => {
                Native::load(manifest, dir, &self.device).map(|n| Engine::Predictor(Box::new(n)))
            }
        };
        engine.map_err(|e| format!("{e:#}"))
    }
}

/// A native language model driven by the server's scheduler: one [`Sequence`] per request.
struct NativeGenerator {
    model: LanguageModel,
    /// The version's chat template (`tokenizer_config.json`), if it has one.
    chat: Option<modelforge_text::chat::ChatTemplate>,
    sequences: HashMap<SequenceId, Sequence>,
}

/// The scheduler asked for a sequence the generator does not hold.
fn unknown(id: SequenceId) -> ServeError {
    ServeError::Compute(format!("no sequence {id}"))
}

/// A generation error as the server reports it: the request's fault or the engine's.
fn served(e: GenerateError) -> ServeError {
    match e {
        GenerateError::Decode(_) | GenerateError::Mismatch { .. } => {
            ServeError::Compute(e.to_string())
        }
        GenerateError::Prompt(_)
        | GenerateError::EmptyPrompt
        | GenerateError::PromptTooLong { .. }
        | GenerateError::Settings(_) => ServeError::BadRequest(e.to_string()),
    }
}

impl Generator for NativeGenerator {
    fn context(&self) -> usize {
        self.model.context()
    }

    fn cache_bytes_per_token(&self) -> usize {
        self.model.cache_bytes_per_token()
    }

    fn admit(&mut self, id: SequenceId, request: &GenerateRequest) -> Result<usize, ServeError> {
        let chat;
        let prompt = match &request.prompt {
            Prompt::Text(text) => text,
            Prompt::Chat(messages) => {
                chat = match &self.chat {
                    Some(template) => template
                        .render(messages)
                        .map_err(|e| ServeError::BadRequest(e.to_string()))?,
                    None => modelforge_text::chat::plain(messages),
                };
                &chat
            }
        };
        let sequence = self
            .model
            .start(prompt, &request.sampling)
            .map_err(served)?;
        let tokens = sequence.prompt_tokens();
        self.sequences.insert(id, sequence);
        Ok(tokens)
    }

    fn prefill(&mut self, id: SequenceId, budget: usize) -> Result<usize, ServeError> {
        let model = &self.model;
        let sequence = self.sequences.get_mut(&id).ok_or_else(|| unknown(id))?;
        Ok(model.prefill(sequence, budget))
    }

    fn decode(&mut self, ids: &[SequenceId]) -> Result<Vec<Token>, ServeError> {
        if let Some(&id) = ids.iter().find(|id| !self.sequences.contains_key(id)) {
            return Err(unknown(id));
        }
        let mut taken: Vec<(SequenceId, Sequence)> = ids
            .iter()
            .map(|&id| (id, self.sequences.remove(&id).expect("checked")))
            .collect();
        let mut batch: Vec<&mut Sequence> = taken.iter_mut().map(|(_, s)| s).collect();
        let pieces = self.model.step(&mut batch);
        let tokens = pieces.map(|pieces| {
            pieces
                .into_iter()
                .zip(&batch)
                .map(|(text, s)| Token {
                    text,
                    finish: s.finish(),
                })
                .collect()
        });
        self.sequences.extend(taken);
        tokens.map_err(served)
    }

    fn release(&mut self, id: SequenceId) {
        self.sequences.remove(&id);
    }

    fn explainer(&self) -> Option<Box<dyn Explainer>> {
        Some(Box::new(NativeExplainer(self.model.clone())))
    }
}

/// A native language model's prompts explained beside its scheduler, over the same weights.
struct NativeExplainer(LanguageModel);

impl Explainer for NativeExplainer {
    fn explain(
        &mut self,
        prompt: &str,
        settings: &modelforge_explain::Explain,
    ) -> Result<Explained, ServeError> {
        explain_prompt(&self.0, prompt, settings).map(|p| explained(p.attributions, Some(p.pieces)))
    }
}
