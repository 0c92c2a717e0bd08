//! Hugging Face checkpoint folders: `config.json` to an [`Architecture`] and back, and each
//! of our tensors' name and layout in `model.safetensors` (`LlamaForCausalLM` keeps ours;
//! `GPT2LMHeadModel` stores its projections `[in, out]` and fuses q, k and v).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use modelforge_spec::{GeluForm, RopeLayout};
use serde_json::{Value, json};

use crate::architecture::{Architecture, Family};
use crate::mapping::{self, Place};
use crate::safetensors::Checkpoint;
use crate::{PretrainedError, Tensor};

/// The configuration file of a checkpoint folder.
pub const CONFIG: &str = "config.json";
/// The weights of a checkpoint folder in one file.
pub const WEIGHTS: &str = "model.safetensors";
/// The map from tensor names to shard files of a sharded checkpoint.
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
/// The generation defaults (end tokens) a checkpoint may ship.
pub const GENERATION_CONFIG: &str = "generation_config.json";
/// The chat template as its own file, as recent `transformers` saves it.
pub const CHAT_TEMPLATE: &str = "chat_template.jinja";

/// Whether a path is a Hugging Face checkpoint folder.
pub fn is_folder(path: &Path) -> bool {
    path.is_dir() && path.join(CONFIG).is_file()
}

/// A field of `config.json`, read with its type checked.
struct Fields<'a> {
    config: &'a Value,
    path: &'a Path,
}

impl Fields<'_> {
    fn bad(&self, field: &str, reason: impl Into<String>) -> PretrainedError {
        PretrainedError::Config {
            path: self.path.to_path_buf(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A positive whole number, or `default` when absent (required when `None`).
    fn count(&self, field: &str, default: Option<usize>) -> Result<usize, PretrainedError> {
        match &self.config[field] {
            Value::Null => default.ok_or_else(|| self.bad(field, "is missing")),
            v => match v.as_u64() {
                Some(n) if n > 0 => Ok(n as usize),
                _ => Err(self.bad(field, format!("is {v}, not a positive whole number"))),
            },
        }
    }

    fn number(&self, field: &str, default: f64) -> Result<f64, PretrainedError> {
        match &self.config[field] {
            Value::Null => Ok(default),
            v => match v.as_f64() {
                Some(x) if x > 0.0 && x.is_finite() => Ok(x),
                _ => Err(self.bad(field, format!("is {v}, not a positive number"))),
            },
        }
    }

    fn flag(&self, field: &str, default: bool) -> Result<bool, PretrainedError> {
        match &self.config[field] {
            Value::Null => Ok(default),
            Value::Bool(b) => Ok(*b),
            v => Err(self.bad(field, format!("is {v}, not true or false"))),
        }
    }

    fn text(&self, field: &str) -> Option<&str> {
        self.config[field].as_str()
    }
}

/// Which `config.json` layout a LLaMA-family checkpoint came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `llama` (also SmolLM) and `mistral`: the projections as LLaMA has them.
    Llama,
    /// `qwen2`: biases on q, k and v but not on the output projection.
    Qwen2,
    /// `gpt2`.
    Gpt2,
}

/// The architecture a `config.json` describes, and its variant.
pub fn read_config(path: &Path) -> Result<(Architecture, Variant), PretrainedError> {
    let text = std::fs::read_to_string(path).map_err(|source| PretrainedError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let config: Value = serde_json::from_str(&text).map_err(|e| PretrainedError::Config {
        path: path.to_path_buf(),
        field: "(the file)".into(),
        reason: format!("is not JSON: {e}"),
    })?;
    let f = Fields {
        config: &config,
        path,
    };
    let model_type = f
        .text("model_type")
        .ok_or_else(|| f.bad("model_type", "is missing"))?;
    let variant = match model_type {
        "llama" | "mistral" => Variant::Llama,
        "qwen2" => Variant::Qwen2,
        "gpt2" => Variant::Gpt2,
        other => {
            return Err(f.bad(
                "model_type",
                format!(
                    "is {other:?}; this import takes \"llama\", \"mistral\", \"qwen2\" (LlamaForCausalLM's layout) and \"gpt2\""
                ),
            ));
        }
    };
    if let Some(arch) = config["architectures"].get(0).and_then(Value::as_str)
        && !(arch.ends_with("ForCausalLM") || arch == "GPT2LMHeadModel")
    {
        return Err(f.bad(
            "architectures",
            format!(
                "names {arch:?}; only language-model heads (…ForCausalLM, GPT2LMHeadModel) import"
            ),
        ));
    }
    let architecture = match variant {
        Variant::Gpt2 => gpt2(&f)?,
        Variant::Llama | Variant::Qwen2 => llama(&f, variant)?,
    };
    Ok((architecture, variant))
}

fn llama(f: &Fields, variant: Variant) -> Result<Architecture, PretrainedError> {
    let dim = f.count("hidden_size", None)?;
    let heads = f.count("num_attention_heads", None)?;
    let kv_heads = f.count("num_key_value_heads", Some(heads))?;
    if dim % heads != 0 {
        return Err(f.bad(
            "num_attention_heads",
            format!("{heads} does not divide hidden_size {dim}"),
        ));
    }
    if heads % kv_heads != 0 {
        return Err(f.bad(
            "num_key_value_heads",
            format!("{kv_heads} does not divide num_attention_heads {heads}"),
        ));
    }
    if let Some(hd) = f.config["head_dim"].as_u64()
        && hd as usize != dim / heads
    {
        return Err(f.bad(
            "head_dim",
            format!(
                "is {hd}, not hidden_size / num_attention_heads = {}; heads of another width do not import yet",
                dim / heads
            ),
        ));
    }
    if let Some(act) = f.text("hidden_act")
        && act != "silu"
    {
        return Err(f.bad(
            "hidden_act",
            format!("is {act:?}; a LLaMA MLP here is SiLU-gated"),
        ));
    }
    // transformers 5 writes `rope_parameters`; earlier versions `rope_theta` and `rope_scaling`.
    let rope = &f.config["rope_parameters"];
    let rope_type = rope["rope_type"]
        .as_str()
        .or_else(|| f.config["rope_scaling"]["rope_type"].as_str())
        .or_else(|| f.config["rope_scaling"]["type"].as_str());
    let scaled = match rope_type {
        None => !f.config["rope_scaling"].is_null(),
        Some(kind) => kind != "default",
    };
    if scaled {
        return Err(f.bad(
            if rope.is_null() { "rope_scaling" } else { "rope_parameters" },
            format!(
                "asks for {} rotary positions; scaled rotary positions (Llama 3.1's, YaRN, dynamic NTK) do not import yet — use a checkpoint with default rotary positions",
                rope_type.unwrap_or("scaled")
            ),
        ));
    }
    let rope_base = match rope["rope_theta"].as_f64() {
        Some(theta) if theta > 0.0 => theta,
        _ => f.number("rope_theta", 10000.0)?,
    };
    let mut context = f.count("max_position_embeddings", None)?;
    // Mistral's sliding window changes nothing within the window.
    if let Some(window) = f.config["sliding_window"].as_u64()
        && f.flag("use_sliding_window", true)?
    {
        context = context.min(window as usize);
    }
    Ok(Architecture {
        family: Family::Llama,
        vocab: f.count("vocab_size", None)?,
        dim,
        layers: f.count("num_hidden_layers", None)?,
        heads,
        kv_heads,
        hidden: f.count("intermediate_size", None)?,
        context,
        epsilon: f.number("rms_norm_eps", 1e-6)?,
        rope_base,
        rope_layout: RopeLayout::Halves,
        attention_bias: variant == Variant::Qwen2 || f.flag("attention_bias", false)?,
        mlp_bias: f.flag("mlp_bias", false)?,
        tied: f.flag("tie_word_embeddings", false)?,
        gelu: GeluForm::None,
    })
}

fn gpt2(f: &Fields) -> Result<Architecture, PretrainedError> {
    let dim = f.count("n_embd", None)?;
    let heads = f.count("n_head", None)?;
    if dim % heads != 0 {
        return Err(f.bad("n_head", format!("{heads} does not divide n_embd {dim}")));
    }
    let gelu = match f.text("activation_function").unwrap_or("gelu_new") {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => GeluForm::Tanh,
        "gelu" => GeluForm::None,
        other => {
            return Err(f.bad(
                "activation_function",
                format!("is {other:?}; GPT-2 models import with gelu_new or gelu"),
            ));
        }
    };
    if !f.flag("scale_attn_weights", true)? || f.flag("scale_attn_by_inverse_layer_idx", false)? {
        return Err(f.bad(
            "scale_attn_weights",
            "attention here is scaled by 1/√head_dim only",
        ));
    }
    let inner = f.count("n_inner", Some(4 * dim))?;
    Ok(Architecture {
        family: Family::Gpt2,
        vocab: f.count("vocab_size", None)?,
        dim,
        layers: f.count("n_layer", None)?,
        heads,
        kv_heads: heads,
        hidden: inner,
        context: f.count("n_positions", None)?,
        epsilon: f.number("layer_norm_epsilon", 1e-5)?,
        rope_base: 10000.0,
        rope_layout: RopeLayout::Halves,
        attention_bias: true,
        mlp_bias: true,
        tied: f.flag("tie_word_embeddings", true)?,
        gelu,
    })
}

/// The `config.json` of an architecture, with the token ids of its ends if known.
pub fn write_config(a: &Architecture, special: &Special) -> Result<Value, PretrainedError> {
    let mut config = match a.family {
        Family::Llama => json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": a.vocab,
            "hidden_size": a.dim,
            "intermediate_size": a.hidden,
            "num_hidden_layers": a.layers,
            "num_attention_heads": a.heads,
            "num_key_value_heads": a.kv_heads,
            "head_dim": a.dim / a.heads,
            "max_position_embeddings": a.context,
            "rms_norm_eps": a.epsilon,
            "rope_theta": a.rope_base,
            "rope_parameters": { "rope_type": "default", "rope_theta": a.rope_base },
            "hidden_act": "silu",
            "attention_bias": a.attention_bias,
            "mlp_bias": a.mlp_bias,
            "tie_word_embeddings": a.tied,
        }),
        Family::Gpt2 => {
            if a.kv_heads != a.heads {
                return Err(PretrainedError::Unsupported {
                    what: "the model".into(),
                    reason: "GPT-2 has no grouped-query attention (kv_heads must equal heads)"
                        .into(),
                });
            }
            json!({
                "architectures": ["GPT2LMHeadModel"],
                "model_type": "gpt2",
                "vocab_size": a.vocab,
                "n_embd": a.dim,
                "n_layer": a.layers,
                "n_head": a.heads,
                "n_inner": a.hidden,
                "n_positions": a.context,
                "n_ctx": a.context,
                "layer_norm_epsilon": a.epsilon,
                "activation_function": match a.gelu {
                    GeluForm::Tanh => "gelu_new",
                    GeluForm::None => "gelu",
                },
                "resid_pdrop": 0.0,
                "embd_pdrop": 0.0,
                "attn_pdrop": 0.0,
                "tie_word_embeddings": a.tied,
            })
        }
    };
    config["torch_dtype"] = json!("float32");
    config["dtype"] = json!("float32");
    // Written even when unknown: GPT-2's defaults (50256) would name ids beyond a small
    // vocabulary.
    config["bos_token_id"] = json!(special.bos);
    config["eos_token_id"] = json!(special.eos.first());
    Ok(config)
}

/// The token ids that start and end a text, as `config.json` and `generation_config.json`
/// give them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Special {
    /// Beginning of sequence.
    pub bos: Option<u32>,
    /// End of sequence (chat models may list several).
    pub eos: Vec<u32>,
}

impl Special {
    /// The ids as `generation_config.json` writes them.
    pub fn to_json(&self) -> Value {
        let mut v = json!({});
        if let Some(bos) = self.bos {
            v["bos_token_id"] = json!(bos);
        }
        match self.eos[..] {
            [] => {}
            [one] => v["eos_token_id"] = json!(one),
            _ => v["eos_token_id"] = json!(self.eos),
        }
        v
    }

    /// The ids named by `bos_token_id` and `eos_token_id` (a number or a list) of a JSON
    /// object; `generation_config.json`'s win over `config.json`'s.
    pub fn read(files: &[PathBuf]) -> Special {
        let mut special = Special::default();
        for path in files {
            let Some(v) = std::fs::read(path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            else {
                continue;
            };
            if let Some(bos) = v["bos_token_id"].as_u64() {
                special.bos = Some(bos as u32);
            }
            let eos: Vec<u32> = match &v["eos_token_id"] {
                Value::Number(n) => n.as_u64().into_iter().map(|e| e as u32).collect(),
                Value::Array(list) => list
                    .iter()
                    .filter_map(Value::as_u64)
                    .map(|e| e as u32)
                    .collect(),
                _ => continue,
            };
            if !eos.is_empty() {
                special.eos = eos;
            }
        }
        special
    }
}

/// Where our tensor `ours` (in the family's own node names) is kept in a checkpoint of
/// `variant`; `prefix` is the checkpoint's prefix of the GPT-2 body (`transformer.` or none).
fn place(variant: Variant, ours: &str, prefix: &str) -> Option<Place> {
    if ours.starts_with("input_norm.") {
        return None;
    }
    if ours == "lm_head.weight" {
        return Some(Place::Same(ours.into()));
    }
    match variant {
        Variant::Llama | Variant::Qwen2 => {
            if variant == Variant::Qwen2 && ours.ends_with(".self_attn.o_proj.bias") {
                return Some(Place::Absent);
            }
            Some(Place::Same(format!("model.{ours}")))
        }
        Variant::Gpt2 => {
            let (layer, rest) = match ours.strip_prefix("h.") {
                Some(rest) => {
                    let (i, rest) = rest.split_once('.')?;
                    (format!("{prefix}h.{i}."), rest)
                }
                None => return Some(Place::Same(format!("{prefix}{ours}"))),
            };
            let (part, tensor) = rest.rsplit_once('.')?;
            let fused = |part: usize| Place::Fused {
                name: format!("{layer}attn.c_attn.{tensor}"),
                part,
                transposed: true,
            };
            let conv = |name: &str| match tensor {
                "weight" => Place::Transposed(format!("{layer}{name}.weight")),
                _ => Place::Same(format!("{layer}{name}.{tensor}")),
            };
            Some(match part {
                "attn.q_proj" => fused(0),
                "attn.k_proj" => fused(1),
                "attn.v_proj" => fused(2),
                "attn.o_proj" => conv("attn.c_proj"),
                "fc" => conv("mlp.c_fc"),
                "proj" => conv("mlp.c_proj"),
                _ => Place::Same(format!("{layer}{rest}")),
            })
        }
    }
}

/// Tensors a checkpoint may hold that are not weights (GPT-2's causal-mask buffers, rotary
/// caches of old LLaMA exports).
fn is_buffer(name: &str) -> bool {
    name.ends_with(".attn.bias") && !name.contains("c_attn")
        || name.ends_with(".attn.masked_bias")
        || name.ends_with(".rotary_emb.inv_freq")
        // A tied head saved beside its embedding anyway is the embedding's copy (an untied
        // head is wanted, so read).
        || name == "lm_head.weight"
}

/// Our tensors (`wanted`, with their shapes, in the family's node names) filled from a
/// checkpoint of `variant`; every weight of the checkpoint must be used.
pub fn take(
    checkpoint: &Checkpoint,
    variant: Variant,
    wanted: &mapping::Wanted,
) -> Result<Vec<Tensor>, PretrainedError> {
    let prefix = match variant {
        Variant::Gpt2 if checkpoint.has("transformer.wte.weight") => "transformer.",
        _ => "",
    };
    mapping::take(
        checkpoint,
        &|ours| place(variant, ours, prefix),
        wanted,
        is_buffer,
    )
}

/// Our tensors (in the family's node names) as the tensors of a Hugging Face checkpoint of
/// the family: renamed, transposed and fused where the family stores them so, queries and
/// keys in the halves rotary layout, with zero biases where GPT-2 has biases and the model
/// has none.
pub fn give(a: &Architecture, ours: &[Tensor]) -> BTreeMap<String, Tensor> {
    let (variant, prefix) = match a.family {
        Family::Llama => (Variant::Llama, ""),
        Family::Gpt2 => (Variant::Gpt2, "transformer."),
    };
    let mut out = mapping::give(a, ours, &|t| place(variant, t, prefix), RopeLayout::Halves);
    if a.family == Family::Gpt2 {
        zero_biases(a, &mut out, |i, name| format!("{prefix}h.{i}.{name}"));
    }
    out
}

/// GPT-2 has biases on every projection: zeros where a model has none, under the names
/// `name(layer, hf_name)` gives.
pub(crate) fn zero_biases(
    a: &Architecture,
    out: &mut BTreeMap<String, Tensor>,
    name: impl Fn(usize, &str) -> String,
) {
    for i in 0..a.layers {
        for (part, len) in [
            ("attn.c_attn.bias", 3 * a.dim),
            ("attn.c_proj.bias", a.dim),
            ("mlp.c_fc.bias", a.hidden),
            ("mlp.c_proj.bias", a.dim),
        ] {
            let name = name(i, part);
            out.entry(name.clone()).or_insert_with(|| Tensor {
                name,
                shape: vec![len],
                values: vec![0.0; len],
                id: 0,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPT-2's names: fused attention parts, transposed convolutions, the body prefix.
    #[test]
    fn gpt2_tensors_have_their_checkpoint_places() {
        let p = |ours| place(Variant::Gpt2, ours, "transformer.").unwrap();
        assert_eq!(
            p("wte.weight"),
            Place::Same("transformer.wte.weight".into())
        );
        assert_eq!(
            p("h.3.attn.k_proj.weight"),
            Place::Fused {
                name: "transformer.h.3.attn.c_attn.weight".into(),
                part: 1,
                transposed: true,
            }
        );
        assert_eq!(
            p("h.0.fc.weight"),
            Place::Transposed("transformer.h.0.mlp.c_fc.weight".into())
        );
        assert_eq!(
            p("h.0.proj.bias"),
            Place::Same("transformer.h.0.mlp.c_proj.bias".into())
        );
        assert_eq!(
            p("h.1.ln_2.bias"),
            Place::Same("transformer.h.1.ln_2.bias".into())
        );
        assert!(place(Variant::Gpt2, "input_norm.scale", "").is_none());
    }
}
