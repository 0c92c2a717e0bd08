//! Hugging Face checkpoints and GGUF files in and out, against `transformers` itself
//! (GGUF files written with the `gguf` package, read back by `transformers`' GGUF loading):
//! small random
//! `LlamaForCausalLM`, `Qwen2ForCausalLM` and `GPT2LMHeadModel` folders made by
//! `save_pretrained` import with the real binary; their logits over a batch of windows
//! match to 1e-4 of the logits' scale, greedy continuations match token for token, the
//! tokenizer gives `transformers`' ids; the exported folders load in `transformers` with
//! the same logits.

use std::path::Path;

use modelforge_model::Network;
use modelforge_model::burn::tensor::{Int, Tensor, TensorData};
use serde_json::{Value, json};

use crate::common::{Sandbox, client_report, data_dir, python};

/// The PyPI packages of these tests (PyTorch is the large one).
const PACKAGES: &[&str] = &["torch", "transformers", "safetensors", "numpy"];

const PROMPT: &str = "ROMEO:\nBut soft, what light";
const SAMPLE: &str = "Wherefore art thou Romeo? Deny thy father and refuse thy name.";
const NEW_TOKENS: usize = 24;

/// Token windows that cover the model's positions: two of 40 ids below `vocab`.
fn windows(vocab: i64) -> Vec<Vec<i64>> {
    (0..2)
        .map(|w| (0..40).map(|i| (i * 7 + w * 13 + 3) % vocab).collect())
        .collect()
}

/// Logits of the windows from the version `dir` of the registry, loaded by the library.
fn our_logits(dir: &Path, windows: &[Vec<i64>]) -> Vec<f32> {
    let text = std::fs::read_to_string(dir.join("spec.toml")).unwrap();
    let spec = modelforge_spec::Spec::parse_stored(&text, &dir.join("spec.toml")).unwrap();
    let device = modelforge_model::device("cpu").unwrap();
    let network = Network::new(&spec, &device)
        .load_safetensors(&dir.join("weights.safetensors"), &device, false)
        .unwrap();
    let (b, t) = (windows.len(), windows[0].len());
    let ids: Vec<i64> = windows.concat();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), &device);
    network
        .forward_tokens(ids, None)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

/// The largest difference between two logit sets relative to the largest logit.
fn relative_gap(ours: &[f32], theirs: &Value) -> f64 {
    let theirs: Vec<f64> = theirs
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w.as_array().unwrap())
        .flat_map(|p| p.as_array().unwrap())
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(ours.len(), theirs.len(), "logit counts differ");
    let scale = theirs.iter().fold(0f64, |m, v| m.max(v.abs()));
    let gap = ours
        .iter()
        .zip(&theirs)
        .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
    gap / scale
}

/// `transformers`' outputs for a checkpoint folder of a vocabulary of `vocab`.
fn reference(python: &str, sb: &Sandbox, folder: &Path, vocab: i64) -> Value {
    let request = sb.write(
        "request.json",
        json!({"windows": windows(vocab), "prompt": PROMPT, "new_tokens": NEW_TOKENS, "sample": SAMPLE})
            .to_string(),
    );
    client_report(
        python,
        "hf_checkpoint.py",
        &[
            "reference",
            folder.to_str().unwrap(),
            request.to_str().unwrap(),
        ],
    )
}

/// The greedy continuation of the prompt by `modelforge generate` is `transformers'` (as
/// text: the same ids decode the same), the end token included.
fn assert_greedy_matches(sb: &Sandbox, name: &str, theirs: &Value, what: &str) {
    let generated = sb.ok(&[
        "generate",
        &format!("{name}@1"),
        "--prompt",
        PROMPT,
        "--max-tokens",
        &NEW_TOKENS.to_string(),
        "--temperature",
        "0",
    ]);
    let generated = generated.strip_prefix(PROMPT).unwrap_or(&generated);
    assert_eq!(
        generated.trim_end_matches('\n'),
        theirs["greedy_text"]
            .as_str()
            .unwrap()
            .trim_end_matches('\n'),
        "{what}: greedy continuation"
    );
}

/// A fresh random checkpoint folder of `kind` made by `save_pretrained`.
fn make(python: &str, sb: &Sandbox, kind: &str) -> std::path::PathBuf {
    let folder = sb.path().join(format!("hf-{kind}"));
    let corpus = data_dir().join("text/shakespeare.txt.gz");
    client_report(
        python,
        "hf_checkpoint.py",
        &[
            "make",
            kind,
            folder.to_str().unwrap(),
            corpus.to_str().unwrap(),
        ],
    );
    folder
}

/// Imports a fresh checkpoint of `kind`, compares it with `transformers`, exports it and
/// compares the export.
fn round_trip(kind: &str) {
    let python = python(PACKAGES);
    let sb = Sandbox::new();
    let folder = make(&python, &sb, kind);
    let theirs = reference(&python, &sb, &folder, 300);
    let name = format!("tiny-{kind}");
    let out = sb.ok(&[
        "registry",
        "import",
        folder.to_str().unwrap(),
        "--name",
        &name,
    ]);
    assert!(out.contains(&format!("as {name}@1")), "{out}");
    let version = sb.path().join("models").join(&name).join("1");

    // Logits over a batch of windows.
    let gap = relative_gap(&our_logits(&version, &windows(300)), &theirs["logits"]);
    assert!(
        gap <= 1e-4,
        "{kind}: logits differ by {gap:e} of their scale"
    );
    eprintln!("{kind}: logits within {gap:.1e} of transformers' (relative to their largest)");

    // The tokenizer gives transformers' ids.
    let tokenizer = modelforge_text::Tokenizer::from_file(&version.join("tokenizer.json")).unwrap();
    let ids: Vec<u64> = tokenizer
        .encode(SAMPLE)
        .unwrap()
        .into_iter()
        .map(u64::from)
        .collect();
    let want: Vec<u64> = serde_json::from_value(theirs["sample_ids"].clone()).unwrap();
    assert_eq!(ids, want, "{kind}: token ids");

    // The greedy continuation, token for token (as text: the same ids decode the same).
    assert_greedy_matches(&sb, &name, &theirs, kind);

    // Out again: transformers loads the folder and computes the same logits.
    let exported = sb.path().join(format!("exported-{kind}"));
    sb.ok(&[
        "export",
        &format!("{name}@1"),
        "--format",
        "hf",
        "-o",
        exported.to_str().unwrap(),
    ]);
    let again = reference(&python, &sb, &exported, 300);
    let gap = relative_gap(&our_logits(&version, &windows(300)), &again["logits"]);
    assert!(gap <= 1e-4, "{kind}: exported logits differ by {gap:e}");
    assert_eq!(
        again["greedy_ids"], theirs["greedy_ids"],
        "{kind}: exported greedy"
    );
    assert_eq!(again["chat"], theirs["chat"], "{kind}: chat template");
}

#[test]
#[ignore = "installs PyTorch, about 4 GB from PyPI: scripts/test.sh runs it unless MODELFORGE_TORCH=0"]
fn llama_checkpoint_matches_transformers_both_ways() {
    round_trip("llama");
}

#[test]
#[ignore = "installs PyTorch, about 4 GB from PyPI: scripts/test.sh runs it unless MODELFORGE_TORCH=0"]
fn qwen2_checkpoint_matches_transformers_both_ways() {
    round_trip("qwen2");
}

#[test]
#[ignore = "installs PyTorch, about 4 GB from PyPI: scripts/test.sh runs it unless MODELFORGE_TORCH=0"]
fn gpt2_checkpoint_matches_transformers_both_ways() {
    round_trip("gpt2");
}

/// A GPT trained here (the Shakespeare example: no biases, exact GELU, characters) goes out
/// as a GPT-2 folder that `transformers` runs with the same logits, and comes back in.
#[test]
#[ignore = "installs PyTorch, about 4 GB from PyPI: scripts/test.sh runs it unless MODELFORGE_TORCH=0"]
fn a_gpt_trained_here_exports_to_transformers_and_imports_back() {
    let python = python(PACKAGES);
    let sb = Sandbox::new();
    sb.write(
        "spec.toml",
        crate::language_model::example("modelforge.toml", 6),
    );
    sb.ok(&["run", "--no-serve", "spec.toml", "--threads", "2"]);
    let version = sb.path().join("models/shakespeare-gpt/1");
    let exported = sb.path().join("gpt-hf");
    sb.ok(&[
        "export",
        "shakespeare-gpt@1",
        "--format",
        "hf",
        "-o",
        exported.to_str().unwrap(),
    ]);
    let config: Value =
        serde_json::from_slice(&std::fs::read(exported.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "gpt2");
    assert_eq!(config["activation_function"], "gelu");
    let theirs = reference(&python, &sb, &exported, 77);
    let ours = our_logits(&version, &windows(77));
    let gap = relative_gap(&ours, &theirs["logits"]);
    assert!(gap <= 1e-4, "trained GPT: logits differ by {gap:e}");
    sb.ok(&[
        "registry",
        "import",
        exported.to_str().unwrap(),
        "--name",
        "back",
    ]);
    let back = our_logits(&sb.path().join("models/back/1"), &windows(77));
    let gap = relative_gap(&back, &theirs["logits"]);
    assert!(gap <= 1e-4, "imported back: logits differ by {gap:e}");
}

/// GGUF files written with the `gguf` package from a random checkpoint, in each tensor type,
/// import with `transformers`' own GGUF logits (it dequantises the same blocks) and greedy
/// continuation; the first one's F32 export loads back in `transformers` with the same
/// logits.
fn gguf_round_trip(kind: &str, types: &[&str]) {
    let python = python(&[PACKAGES, &["gguf", "accelerate"]].concat());
    let sb = Sandbox::new();
    let folder = make(&python, &sb, kind);
    for quant in types {
        let file = sb.path().join(format!("{kind}-{quant}.gguf"));
        client_report(
            &python,
            "hf_checkpoint.py",
            &[
                "gguf",
                folder.to_str().unwrap(),
                file.to_str().unwrap(),
                quant,
            ],
        );
        let theirs = reference(&python, &sb, &file, 300);
        let name = format!("{kind}-{}", quant.to_lowercase().replace('_', "-"));
        sb.ok(&[
            "registry",
            "import",
            file.to_str().unwrap(),
            "--name",
            &name,
        ]);
        let version = sb.path().join("models").join(&name).join("1");
        let ours = our_logits(&version, &windows(300));
        let gap = relative_gap(&ours, &theirs["logits"]);
        eprintln!("{kind} {quant}: logits within {gap:.1e} of transformers' GGUF loading");
        assert!(gap <= 1e-4, "{kind} {quant}: logits differ by {gap:e}");
        assert_greedy_matches(&sb, &name, &theirs, &format!("{kind} {quant}"));
        // The way out once: an export's weights do not depend on the type they came in.
        if quant != &types[0] {
            continue;
        }
        let exported = sb.path().join(format!("out-{name}.gguf"));
        sb.ok(&[
            "export",
            &format!("{name}@1"),
            "--format",
            "gguf-f32",
            "-o",
            exported.to_str().unwrap(),
        ]);
        let again = reference(&python, &sb, &exported, 300);
        let gap = relative_gap(&ours, &again["logits"]);
        assert!(
            gap <= 1e-4,
            "{kind} {quant}: exported GGUF logits differ by {gap:e}"
        );
        assert_eq!(
            again["chat"], theirs["chat"],
            "{kind} {quant}: chat template"
        );
    }
}

#[test]
#[ignore = "installs PyTorch, about 4 GB from PyPI: scripts/test.sh runs it unless MODELFORGE_TORCH=0"]
fn llama_gguf_files_match_transformers_in_every_tensor_type() {
    gguf_round_trip("llama", &["F32", "F16", "Q8_0", "Q4_0", "Q4_1"]);
}

#[test]
#[ignore = "installs PyTorch, about 4 GB from PyPI: scripts/test.sh runs it unless MODELFORGE_TORCH=0"]
fn gpt2_gguf_files_match_transformers() {
    gguf_round_trip("gpt2", &["F16", "Q8_0"]);
}

/// Broken checkpoints are refused with the field or tensor named, and nothing is published.
#[test]
fn broken_checkpoints_are_refused_with_the_field_or_tensor() {
    let sb = Sandbox::new();
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64,
        "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 3, "max_position_embeddings": 32,
    });
    sb.write("ck/config.json", config.to_string());
    let run = |what: &str| {
        let out = sb.run(&["registry", "import", "ck", "--name", "broken"]);
        assert_eq!(out.status.code(), Some(2), "{what}");
        assert!(
            sb.entries("models/broken").is_empty(),
            "{what}: a version appeared"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run("kv heads");
    assert!(
        e.contains("num_key_value_heads") && e.contains("does not divide"),
        "{e}"
    );

    let mut config = config;
    config["num_key_value_heads"] = json!(2);
    config["model_type"] = json!("falcon");
    sb.write("ck/config.json", config.to_string());
    let e = run("model type");
    assert!(e.contains("model_type") && e.contains("falcon"), "{e}");

    config["model_type"] = json!("llama");
    config["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0});
    sb.write("ck/config.json", config.to_string());
    let e = run("rope scaling");
    assert!(e.contains("rope_scaling") && e.contains("llama3"), "{e}");

    config["rope_scaling"] = Value::Null;
    sb.write("ck/config.json", config.to_string());
    let e = run("no tokenizer");
    assert!(
        e.contains("tokenizer.json") && e.contains("save_pretrained"),
        "{e}"
    );

    // A tokenizer larger than the model's vocabulary.
    sb.write(
        "ck/tokenizer.json",
        modelforge_text::Tokenizer::bytes().to_json(),
    );
    let e = run("vocabulary");
    assert!(
        e.contains("256 tokens") && e.contains("vocabulary is 64"),
        "{e}"
    );

    config["vocab_size"] = json!(300);
    sb.write("ck/config.json", config.to_string());
    let e = run("no weights");
    assert!(e.contains("model.safetensors"), "{e}");

    // Weights of the wrong width, then with tensors missing.
    let weights = |dim: usize| {
        let values = vec![0u8; 300 * dim * 4];
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![300, dim], &values)
                .unwrap();
        safetensors::serialize([("model.embed_tokens.weight", view)], None).unwrap()
    };
    sb.write("ck/model.safetensors", weights(8));
    let e = run("shape");
    assert!(
        e.contains("model.embed_tokens.weight")
            && e.contains("[300, 8]")
            && e.contains("[300, 16]"),
        "{e}"
    );
    sb.write("ck/model.safetensors", weights(16));
    let e = run("missing");
    assert!(
        e.contains("model.layers.0.input_layernorm.weight") && e.contains("missing"),
        "{e}"
    );

    // GGUF files: another version, and a tensor count the file cannot hold.
    let gguf = |version: u32, tensors: u64| {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(version.to_le_bytes());
        bytes.extend(tensors.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        sb.write("bad.gguf", bytes);
        let out = sb.run(&["registry", "import", "bad.gguf", "--name", "broken"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(sb.entries("models/broken").is_empty());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = gguf(2, 0);
    assert!(
        e.contains("bad.gguf") && e.contains("version 2 is not 3"),
        "{e}"
    );
    let e = gguf(3, 1 << 40);
    assert!(e.contains("does not fit in the file"), "{e}");
    let e = gguf(3, 0);
    assert!(
        e.contains("general.architecture") && e.contains("missing"),
        "{e}"
    );
}
