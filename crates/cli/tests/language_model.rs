//! Language models end to end: the Shakespeare example at a reduced step count trains (its
//! loss falls), publishes its tokenizer, and generates; two workers match one; a killed run
//! resumes bit-identically; bad text, tokenizers and prompts are refused with exit 2.

use crate::common::{Sandbox, assert_matches_one_process, data_dir};

/// `examples/shakespeare/FILE` with `steps` steps, evaluations every `steps / 2`,
/// 32 evaluation windows and checkpoints every 10 steps.
fn shakespeare(steps: u64) -> String {
    example("modelforge.toml", steps)
}

pub(crate) fn example(file: &str, steps: u64) -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/shakespeare")
            .join(file),
    )
    .unwrap();
    let corpus = data_dir().join("text/shakespeare.txt.gz");
    let out = text
        .replace(
            "../../data/text/shakespeare.txt.gz",
            corpus.to_str().unwrap(),
        )
        .replace("max_steps = 2000", &format!("max_steps = {steps}"))
        .replace(
            "eval_every_steps = 250",
            &format!("eval_every_steps = {}", steps / 2),
        )
        .replace("eval_windows = 240", "eval_windows = 32")
        .replace("log_every_steps = 50", "log_every_steps = 5")
        .replace(
            "checkpoint = { every_steps = 500 }",
            "checkpoint = { every_steps = 10, keep = 2 }",
        );
    assert!(
        out.contains("every_steps = 10,") && out.contains("eval_windows = 32"),
        "{out}"
    );
    out
}

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_shakespeare_example_trains_publishes_and_generates() {
    let sb = Sandbox::new();
    sb.write("spec.toml", shakespeare(60));
    let out = sb.ok(&["run", "--no-serve", "spec.toml", "--threads", "2"]);
    assert!(
        out.contains("modelforge generate shakespeare-gpt@1"),
        "{out}"
    );
    let version = sb.path().join("models/shakespeare-gpt/1");
    // The loss falls from about ln(77) = 4.34 at the first steps.
    let run = sb.path().join("runs").join(&sb.entries("runs")[0]);
    let log = lines(&run.join("metrics.jsonl"));
    let first = log.iter().find(|l| l["kind"] == "step").unwrap()["loss"]
        .as_f64()
        .unwrap();
    let evals: Vec<f64> = log
        .iter()
        .filter(|l| l["kind"] == "epoch")
        .map(|l| l["val_loss"].as_f64().unwrap())
        .collect();
    assert_eq!(evals.len(), 2, "{log:?}");
    assert!(first > 3.8, "first logged loss {first}");
    assert!(
        evals[1] < evals[0] && evals[1] < 3.3,
        "validation losses {evals:?}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(version.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["task"], "language_model");
    assert!(
        manifest["metrics"]["test_perplexity"].as_f64().unwrap() < 30.0,
        "{manifest}"
    );
    // The published tokenizer is the run's, in Hugging Face's format.
    let tokenizer = std::fs::read_to_string(version.join("tokenizer.json")).unwrap();
    assert_eq!(
        tokenizer,
        std::fs::read_to_string(run.join("tokenizer.json")).unwrap()
    );
    let parsed: serde_json::Value = serde_json::from_str(&tokenizer).unwrap();
    assert_eq!(parsed["model"]["type"], "BPE");
    assert_eq!(parsed["model"]["vocab"].as_object().unwrap().len(), 77);

    // Sampling repeats with its seed; the continuation is streamed after the prompt.
    let generate = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "shakespeare-gpt@production",
            "--prompt",
            "ROMEO:",
        ];
        args.extend(extra);
        sb.run(&args)
    };
    let sampled = [
        "--max-tokens",
        "40",
        "--temperature",
        "0.8",
        "--top-k",
        "40",
        "--seed",
        "1",
    ];
    let a = generate(&sampled);
    let b = generate(&sampled);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    let text = String::from_utf8(a.stdout).unwrap();
    assert!(
        text.starts_with("ROMEO:") && text.chars().count() == 6 + 40 + 1,
        "{text:?}"
    );
    let figures = String::from_utf8_lossy(&a.stderr);
    assert!(
        figures.contains("6 prompt + 40 generated tokens (length)"),
        "{figures}"
    );
    assert!(figures.contains("tokens/s"), "{figures}");
    // Greedy decoding past the context (64) slides the window.
    let greedy = generate(&["--max-tokens", "100", "--temperature", "0"]);
    assert!(
        greedy.status.success(),
        "{}",
        String::from_utf8_lossy(&greedy.stderr)
    );

    // Prompts the model cannot take.
    for (prompt, message) in [
        (
            "ROMEO: naïve",
            "character 'ï' at character 10 of the text is not in the tokenizer's vocabulary",
        ),
        (
            &"a".repeat(65)[..],
            "the prompt is 65 tokens but the model reads at most 64",
        ),
    ] {
        let out = sb.run(&["generate", "shakespeare-gpt", "--prompt", prompt]);
        assert_eq!(out.status.code(), Some(2), "{prompt}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A language model is not served through the tensor APIs yet: loading says what to use.
    let out = sb.run(&["predict", "shakespeare-gpt", "--input", "spec.toml"]);
    assert_ne!(out.status.code(), Some(0));
}

/// The BPE variant: its tokenizer is trained on the training split, published, and decodes
/// the byte-level tokens that `generate` streams.
#[test]
fn the_bpe_example_trains_its_tokenizer_and_generates() {
    let sb = Sandbox::new();
    sb.write("spec.toml", example("bpe.toml", 4));
    sb.ok(&["run", "--no-serve", "spec.toml", "--threads", "2"]);
    let version = sb.path().join("models/shakespeare-bpe/1");
    let tokenizer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(version.join("tokenizer.json")).unwrap()).unwrap();
    assert_eq!(tokenizer["model"]["vocab"].as_object().unwrap().len(), 4096);
    assert_eq!(tokenizer["pre_tokenizer"]["type"], "ByteLevel");
    // Hugging Face's own `tokenizers` reads the published file and encodes the start of the
    // corpus to exactly the ids training read (all but the last few, where the cut at 3,000
    // characters may split a word differently).
    let python = crate::common::python(&["tokenizers"]);
    let script = "import gzip, sys\n\
from tokenizers import Tokenizer\n\
t = Tokenizer.from_file(sys.argv[1])\n\
text = gzip.open(sys.argv[2], 'rt', encoding='utf-8').read()[:3000]\n\
print(t.get_vocab_size(), *t.encode(text).ids)\n";
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(version.join("tokenizer.json"))
        .arg(data_dir().join("text/shakespeare.txt.gz"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<u32> = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(theirs[0], 4096);
    let cache = sb.path().join("runs/.tokens");
    let key = std::fs::read_dir(&cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let ours: Vec<u32> = std::fs::read(key.join("train.u16"))
        .unwrap()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
        .collect();
    let n = theirs.len() - 1 - 5;
    assert!(n > 500, "{n} ids");
    assert_eq!(&theirs[1..=n], &ours[..n]);
    let out = sb.run(&[
        "generate",
        "shakespeare-bpe",
        "--prompt",
        "ROMEO: naïve",
        "--max-tokens",
        "20",
        "--seed",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("ROMEO: naïve"), "{text:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("20 generated tokens"));
}

#[test]
fn two_workers_train_a_language_model_as_one_does() {
    let sb = Sandbox::new();
    sb.write("spec.toml", shakespeare(20));
    sb.ok(&[
        "run",
        "--no-serve",
        "spec.toml",
        "--threads",
        "2",
        "--workers",
        "2",
    ]);
    assert_matches_one_process(&sb, "shakespeare-gpt");
}

#[test]
fn a_killed_and_resumed_language_model_ends_bit_identical() {
    let sb = Sandbox::new();
    crate::resume::killed_and_resumed_ends_bit_identical(&sb, &shakespeare(40));
}

#[test]
fn bad_text_and_tokenizers_are_refused_before_training() {
    let sb = Sandbox::new();
    let spec = shakespeare(4);
    let corpus = data_dir().join("text/shakespeare.txt.gz");
    sb.write("short.txt", "ROMEO:\nBut soft!\n".repeat(3));
    sb.write("broken.json", "{ \"model\": ");
    let cases = [
        (
            spec.replace(corpus.to_str().unwrap(), "short.txt"),
            "the training text is 45 tokens, too few for one window of 64 tokens",
        ),
        (
            spec.replace(
                "tokenizer = { kind = \"char\" }",
                "tokenizer = { kind = \"file\", path = \"broken.json\" }",
            ),
            "broken.json: not a Hugging Face tokenizer.json",
        ),
        (
            spec.replace("vocab = 77", "vocab = 70"),
            "the tokenizer has 77 tokens but the model's embedding wte holds 70",
        ),
        (spec.replace("heads = 4", "heads = 3"), "heads"),
        (
            spec.replace("max_steps = 4", "max_steps = 0"),
            "max_steps is 0",
        ),
        (
            spec.replace("format = \"text\"", "format = \"csv\""),
            "a language model trains on text",
        ),
        (
            spec.replace(
                "tokenizer = { kind = \"char\" }",
                "tokenizer = { kind = \"bpe\", vocab = 100 }",
            ),
            "no room for merges",
        ),
    ];
    for (text, message) in cases {
        sb.write("spec.toml", &text);
        let out = sb.run(&["run", "--no-serve", "spec.toml", "--threads", "1"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{message}: {err}");
        assert!(err.contains(message), "wanted {message:?} in {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(sb.entries("models").is_empty(), "nothing is published");
    }
}
