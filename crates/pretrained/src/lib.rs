//! Pretrained language models in and out: Hugging Face checkpoint folders of the LLaMA and
//! GPT-2 families become registry versions (graph, weights, tokenizer, chat template), and
//! any version of those shapes — trained here or imported — goes back out as a folder that
//! `transformers` loads.

pub mod architecture;
pub mod gguf;
pub mod hf;
mod mapping;
mod safetensors;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use modelforge_model::burn::tensor::{Device, Int, Tensor as BurnTensor, TensorData};
use modelforge_model::{ModelError, NamedTensor, Network};
use modelforge_registry::{Artifact, Lineage, Manifest, Registry, RegistryError, Version};
use modelforge_spec::{Spec, SpecError};
use modelforge_text::chat::{ChatTemplate, TOKENIZER_CONFIG};
use modelforge_text::{TextError, Tokenizer};

pub use architecture::{Architecture, Family};
pub use safetensors::Checkpoint;

/// A named f32 tensor in row-major order.
pub type Tensor = NamedTensor;

/// The tokenizer file of a checkpoint and of a version.
pub const TOKENIZER: &str = "tokenizer.json";
/// The weights file of a native version.
pub const WEIGHTS: &str = "weights.safetensors";
/// The spec file of a native version.
pub const SPEC: &str = "spec.toml";

/// Why a checkpoint cannot be imported or a version exported.
#[derive(Debug, thiserror::Error)]
pub enum PretrainedError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// A field of the configuration is missing or has a value this import cannot take.
    #[error("{}: `{field}` {reason}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong with it, and what would import.
        reason: String,
    },
    /// A tensor of the weights has the wrong shape or type, or the file is not safetensors.
    #[error("{}: tensor {name:?} {reason}", path.display())]
    Tensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor the configuration calls for is not in the weights.
    #[error(
        "{}: tensor {name:?} is missing — the weights do not belong to this config.json",
        path.display()
    )]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor.
        name: String,
    },
    /// The weights hold tensors the model described by the configuration does not use.
    #[error(
        "{}: {} tensors are not used by the model config.json describes, e.g. {:?} — the config and the weights do not match, or the model has parts this import does not know",
        path.display(), names.len(), names.first().map(String::as_str).unwrap_or_default()
    )]
    UnusedTensors {
        /// The weights file.
        path: PathBuf,
        /// The tensors left over.
        names: Vec<String>,
    },
    /// The tokenizer does not fit the model.
    #[error("{}: {reason}", path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What does not fit, and the fix.
        reason: String,
    },
    /// A model of a shape the format cannot hold.
    #[error("{what} cannot be written as a Hugging Face checkpoint: {reason}")]
    Unsupported {
        /// What was asked for.
        what: String,
        /// Why not.
        reason: String,
    },
    /// The output folder is in the way.
    #[error("{} already exists — remove it or give another --out", path.display())]
    Exists {
        /// The folder.
        path: PathBuf,
    },
    /// The registry refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The engine could not build or run the model.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The spec made from the configuration is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The tokenizer or the chat template could not be read.
    #[error(transparent)]
    Text(#[from] TextError),
}

/// The error of an I/O operation on `path`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PretrainedError + '_ {
    move |source| PretrainedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `registry import` brings in from a checkpoint.
#[derive(Debug, Clone)]
pub struct Import<'a> {
    /// The checkpoint folder.
    pub source: &'a Path,
    /// The model name in the registry.
    pub name: &'a str,
}

/// A text every tokenizer of a language model must take and give back, checked at import.
const SAMPLE: &str = "The quick brown fox jumps over the lazy dog. It's 12:30, isn't it?\n";

/// The ids of a text the tokenizer must take and give back: [`SAMPLE`], or, for a
/// tokenizer without its characters (a character-level one of another text), the text of its
/// own first tokens.
fn sample(tokenizer: &Tokenizer) -> Result<Vec<u32>, TextError> {
    match tokenizer.encode(SAMPLE) {
        Err(TextError::Unencodable { .. }) => {
            let own: String = (0..tokenizer.vocab_size().min(256) as u32)
                .filter_map(|id| tokenizer.decode(&[id]).ok())
                .filter(|t| !t.contains('\u{fffd}'))
                .collect();
            tokenizer.encode(&own)
        }
        other => other,
    }
}

/// The spec stored with an imported version: the model as the configuration describes it,
/// and data and training sections to start a fine-tune from.
fn stored_spec(a: &Architecture, name: &str, source: &Path) -> String {
    format!(
        "# Imported by `modelforge registry import` from {source}.\n\
         # [data] and [train] are a starting point for fine-tuning: point data.train at your text.\n\n\
         {model}\n\
         [data]\n\
         format = \"text\"\n\
         train = {{ path = \"train.txt\" }}\n\
         tokenizer = {{ kind = \"file\", path = \"{TOKENIZER}\" }}\n\n\
         [train]\n\
         max_steps = 100\n\
         batch_size = 8\n\
         optimizer = {{ kind = \"adamw\", lr = 1e-4 }}\n",
        source = source.display(),
        model = a.model_toml(name),
    )
}

/// A `tokenizer.json` (`path` names it) checked against the model: no larger than its
/// vocabulary, and it takes and gives back a sample, whose ids come back with it.
fn checked_tokenizer(
    bytes: Vec<u8>,
    path: &Path,
    a: &Architecture,
) -> Result<(Artifact, Vec<u32>), PretrainedError> {
    let tokenizer = Tokenizer::from_json(&bytes, path)?;
    if tokenizer.vocab_size() > a.vocab {
        return Err(PretrainedError::Tokenizer {
            path: path.to_path_buf(),
            reason: format!(
                "has {} tokens but the model's vocabulary is {}; the tokenizer belongs to another model",
                tokenizer.vocab_size(),
                a.vocab
            ),
        });
    }
    let ids = sample(&tokenizer)?;
    if ids.is_empty() {
        return Err(PretrainedError::Tokenizer {
            path: path.to_path_buf(),
            reason: format!("gives no tokens for {SAMPLE:?}"),
        });
    }
    let artifact = Artifact {
        name: TOKENIZER.into(),
        bytes,
    };
    Ok((artifact, ids))
}

/// The files of a checkpoint folder that come with its weights: the tokenizer, its
/// configuration with the chat template folded in, and the generation defaults.
fn companions(dir: &Path, a: &Architecture) -> Result<(Vec<Artifact>, Vec<u32>), PretrainedError> {
    let path = dir.join(TOKENIZER);
    if !path.is_file() {
        return Err(PretrainedError::Tokenizer {
            path,
            reason: "is missing; save the tokenizer with tokenizer.save_pretrained(folder) from a fast tokenizer (transformers' PreTrainedTokenizerFast)".into(),
        });
    }
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let (tokenizer, sample) = checked_tokenizer(bytes, &path, a)?;
    let mut files = vec![tokenizer];
    let config = dir.join(TOKENIZER_CONFIG);
    let template = dir.join(hf::CHAT_TEMPLATE);
    if config.is_file() || template.is_file() {
        let mut value: serde_json::Value = match config.is_file() {
            true => {
                let text = std::fs::read_to_string(&config).map_err(io(&config))?;
                serde_json::from_str(&text).map_err(|e| TextError::Chat {
                    path: config.clone(),
                    reason: format!("not JSON: {e}"),
                })?
            }
            false => serde_json::json!({}),
        };
        if template.is_file() {
            value["chat_template"] = std::fs::read_to_string(&template)
                .map_err(io(&template))?
                .into();
        }
        // The template compiles now, or the import stops.
        ChatTemplate::from_config_value(&value, &config)?;
        files.push(Artifact {
            name: TOKENIZER_CONFIG.into(),
            bytes: serde_json::to_vec_pretty(&value).expect("JSON serialises"),
        });
    }
    // The ids that end a text: the generation defaults, or the config's when there are none.
    let generation = dir.join(hf::GENERATION_CONFIG);
    let special = hf::Special::read(&[dir.join(hf::CONFIG), generation.clone()]);
    let bytes = match generation.is_file() {
        true => std::fs::read(&generation).map_err(io(&generation))?,
        false => serde_json::to_vec_pretty(&special.to_json()).expect("JSON serialises"),
    };
    if let Some(bad) = special
        .eos
        .iter()
        .chain(&special.bos)
        .find(|&&id| id as usize >= a.vocab)
    {
        return Err(PretrainedError::Config {
            path: generation,
            field: "eos_token_id".into(),
            reason: format!("names token {bad}, beyond the vocabulary of {}", a.vocab),
        });
    }
    files.push(Artifact {
        name: hf::GENERATION_CONFIG.into(),
        bytes,
    });
    Ok((files, sample))
}

/// Checks a checkpoint — a Hugging Face folder or a GGUF file: the configuration against
/// the family's graph, every tensor present, shaped and used, the tokenizer against a sample
/// and the model's vocabulary, the chat template compiled, one forward pass finite — and
/// publishes it as the model's next version; nothing is written when any check fails.
pub fn import(registry: &Registry, import: &Import) -> Result<Version, PretrainedError> {
    modelforge_registry::check_name(import.name)?;
    let source = import.source;
    if gguf::is_file(source) {
        let file = gguf::GgufFile::open(source)?;
        let architecture = file.architecture()?;
        let tokenizer = file.tokenizer_json()?.into_bytes();
        let (tokenizer, sample) = checked_tokenizer(
            tokenizer,
            &source.with_extension("gguf (tokenizer.ggml)"),
            &architecture,
        )?;
        let mut files = vec![tokenizer];
        let (chat, generation) = file.companions();
        if let Some(config) = chat {
            ChatTemplate::from_config_value(&config, source)?;
            files.push(Artifact {
                name: TOKENIZER_CONFIG.into(),
                bytes: serde_json::to_vec_pretty(&config).expect("JSON serialises"),
            });
        }
        files.push(Artifact {
            name: hf::GENERATION_CONFIG.into(),
            bytes: serde_json::to_vec_pretty(&generation).expect("JSON serialises"),
        });
        let family = architecture.family;
        let take = |wanted: &mapping::Wanted| {
            mapping::take(&file, &|o| gguf::place(family, o), wanted, gguf::is_buffer)
        };
        return publish_checked(registry, import, &architecture, (files, sample), &take);
    }
    let config_path = source.join(hf::CONFIG);
    let (architecture, variant) = hf::read_config(&config_path)?;
    let companions = companions(source, &architecture)?;
    let checkpoint = Checkpoint::open(source)?;
    let take = |wanted: &mapping::Wanted| hf::take(&checkpoint, variant, wanted);
    publish_checked(registry, import, &architecture, companions, &take)
}

/// Builds the architecture's network, fills it with the tensors `take` reads, runs it once
/// over the tokenizer's sample ids and publishes it with `files`.
fn publish_checked(
    registry: &Registry,
    import: &Import,
    architecture: &Architecture,
    (files, sample): (Vec<Artifact>, Vec<u32>),
    take: &dyn Fn(&mapping::Wanted) -> Result<Vec<Tensor>, PretrainedError>,
) -> Result<Version, PretrainedError> {
    let spec_text = stored_spec(architecture, import.name, import.source);
    let spec = Spec::parse_stored(&spec_text, import.source)?;
    let device = modelforge_model::device("cpu")?;
    let network = Network::new(&spec, &device);
    let mut tensors = network.named_tensors();
    let wanted: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let taken = take(&wanted)?;
    // The input normalisation (identity for token ids) is ours, not the checkpoint's.
    tensors.retain(|t| t.name.starts_with("input_norm."));
    tensors.extend(taken);
    let network = network
        .load_named(&tensors, &device, false)
        .map_err(|reason| PretrainedError::Tensor {
            path: import.source.to_path_buf(),
            name: "(weights)".into(),
            reason,
        })?;
    drop(tensors);
    trial(&network, &sample, import.source, &device)?;
    let weights = network.safetensors_bytes(BTreeMap::new());
    drop(network);
    let mut digest = modelforge_registry::sha256_hex(&weights);
    digest.truncate(16);
    let manifest = Manifest::native(
        &spec,
        BTreeMap::new(),
        Lineage {
            spec_hash: spec.result_hash(),
            data_fingerprint: String::new(),
            run_id: format!("import:{digest}"),
            created: 0,
            modelforge_version: env!("CARGO_PKG_VERSION").into(),
        },
    );
    let mut artifacts = vec![
        Artifact {
            name: WEIGHTS.into(),
            bytes: weights,
        },
        Artifact {
            name: SPEC.into(),
            bytes: spec_text.into_bytes(),
        },
    ];
    artifacts.extend(files);
    Ok(registry.publish(manifest, &artifacts)?)
}

/// One forward pass over the sample's ids: the logits must be finite.
fn trial(
    network: &Network,
    sample: &[u32],
    source: &Path,
    device: &Device,
) -> Result<(), PretrainedError> {
    let ids: Vec<i64> = sample.iter().map(|&i| i64::from(i)).collect();
    let len = ids.len().min(network.input_shape()[0]);
    let input =
        BurnTensor::<2, Int>::from_data(TensorData::new(ids[..len].to_vec(), [1, len]), device);
    let logits = network
        .forward_tokens(input, None)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 logits");
    if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
        return Err(PretrainedError::Tensor {
            path: source.to_path_buf(),
            name: "(forward pass)".into(),
            reason: format!(
                "gives a non-finite logit ({}) at position {} on a sample text; the weights are damaged",
                logits[i],
                i / network.output_shape().last().copied().unwrap_or(1)
            ),
        });
    }
    Ok(())
}

/// A version of a LLaMA- or GPT-2-shaped model, read for export: its hyperparameters, its
/// tensors in the family's node names, its tokenizer and its end ids.
struct Exported {
    architecture: Architecture,
    tensors: Vec<Tensor>,
    tokenizer: PathBuf,
    special: hf::Special,
}

fn exported(version: &Version) -> Result<Exported, PretrainedError> {
    let what = || format!("{}@{}", version.manifest.name, version.manifest.version);
    let spec_path = version.dir.join(SPEC);
    let text = std::fs::read_to_string(&spec_path).map_err(io(&spec_path))?;
    let spec = Spec::parse_stored(&text, &spec_path)?;
    let graph = spec.graph();
    let (architecture, renames) =
        Architecture::recognise(&graph).map_err(|reason| PretrainedError::Unsupported {
            what: what(),
            reason: format!("it is not LLaMA- or GPT-2-shaped: {reason}"),
        })?;
    let weights_path = version.dir.join(WEIGHTS);
    let bytes = std::fs::read(&weights_path).map_err(io(&weights_path))?;
    let mut tensors = modelforge_model::parse_safetensors(&bytes, &weights_path)?;
    drop(bytes);
    for t in &mut tensors {
        if let Some((ours, theirs)) = renames
            .iter()
            .find(|(ours, _)| t.name.starts_with(&format!("{ours}.")))
        {
            t.name = format!("{theirs}{}", &t.name[ours.len()..]);
        }
    }
    let tokenizer = version.dir.join(TOKENIZER);
    if !tokenizer.is_file() {
        return Err(PretrainedError::Tokenizer {
            path: tokenizer,
            reason: "is missing from the version; a language model's version carries it".into(),
        });
    }
    let special = hf::Special::read(&[version.dir.join(hf::GENERATION_CONFIG)]);
    Ok(Exported {
        architecture,
        tensors,
        tokenizer,
        special,
    })
}

/// Writes a version of a LLaMA- or GPT-2-shaped model as a GGUF v3 file `out` (tensors in
/// F32, or matrices in F16), with its tokenizer, end ids and chat template; the file appears
/// whole or not at all.
pub fn export_gguf(
    version: &Version,
    out: &Path,
    precision: gguf::Precision,
) -> Result<(), PretrainedError> {
    let e = exported(version)?;
    let text = std::fs::read(&e.tokenizer).map_err(io(&e.tokenizer))?;
    let tokenizer: serde_json::Value =
        serde_json::from_slice(&text).map_err(|err| PretrainedError::Tokenizer {
            path: e.tokenizer.clone(),
            reason: format!("is not JSON: {err}"),
        })?;
    let chat_template = ChatTemplate::from_config(&version.dir.join(TOKENIZER_CONFIG))?
        .map(|t| t.source().to_string());
    let bytes = gguf::write(&gguf::Export {
        architecture: &e.architecture,
        tensors: &e.tensors,
        tokenizer: &tokenizer,
        tokenizer_path: &e.tokenizer,
        chat_template,
        special: &e.special,
        name: &version.manifest.name,
        precision,
    })?;
    modelforge_registry::write_atomic(out, &bytes)?;
    Ok(())
}

/// Writes a version of a LLaMA- or GPT-2-shaped model as a Hugging Face checkpoint folder
/// `out` (config, F32 safetensors, tokenizer, tokenizer configuration with the chat
/// template, generation defaults); the folder appears whole or not at all.
pub fn export_hf(version: &Version, out: &Path) -> Result<(), PretrainedError> {
    let Exported {
        architecture,
        tensors,
        tokenizer: tokenizer_path,
        special,
    } = exported(version)?;
    let hf_tensors = hf::give(&architecture, &tensors);
    drop(tensors);
    let generation = version.dir.join(hf::GENERATION_CONFIG);
    let config = hf::write_config(&architecture, &special)?;
    if out.exists() {
        return Err(PretrainedError::Exists {
            path: out.to_path_buf(),
        });
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let staging = parent.join(format!(
        ".{}.partial-{}",
        out.file_name()
            .map_or("export".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    let write = |name: &str, bytes: &[u8]| {
        let path = staging.join(name);
        std::fs::write(&path, bytes).map_err(io(&path))
    };
    let result = (|| {
        write(
            hf::CONFIG,
            &serde_json::to_vec_pretty(&config).expect("JSON serialises"),
        )?;
        let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        write(
            hf::WEIGHTS,
            &modelforge_model::f32_safetensors(hf_tensors.values(), metadata),
        )?;
        std::fs::copy(&tokenizer_path, staging.join(TOKENIZER)).map_err(io(&tokenizer_path))?;
        let tokenizer_config = version.dir.join(TOKENIZER_CONFIG);
        let mut value: serde_json::Value = std::fs::read(&tokenizer_config)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| serde_json::json!({}));
        if value.get("tokenizer_class").is_none() {
            value["tokenizer_class"] = "PreTrainedTokenizerFast".into();
        }
        if value.get("model_max_length").is_none() {
            value["model_max_length"] = architecture.context.into();
        }
        write(
            TOKENIZER_CONFIG,
            &serde_json::to_vec_pretty(&value).expect("JSON serialises"),
        )?;
        if generation.is_file() {
            std::fs::copy(&generation, staging.join(hf::GENERATION_CONFIG))
                .map_err(io(&generation))?;
        }
        std::fs::rename(&staging, out).map_err(io(out))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}
