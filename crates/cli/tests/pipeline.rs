//! The whole chain through the real binary: check, run, registry, predict, eval.

use crate::common::{MLP, Sandbox, data_dir, digits_spec, mnist_spec};

#[test]
fn run_publishes_versions_that_predict_and_evaluate() {
    let sb = Sandbox::new();
    sb.write("spec.toml", digits_spec(&sb, 0.9));
    let out = sb.ok(&["run", "--no-serve", "spec.toml", "--threads", "1"]);
    assert!(out.contains("4,810 parameters"), "{out}");
    assert!(out.contains("published digits version 1"), "{out}");
    assert!(out.contains("passed: test_accuracy"), "{out}");
    let out = sb.ok(&["run", "--no-serve", "spec.toml", "--threads", "1"]);
    assert!(out.contains("7 stages: 0 ran, 7 cached"), "{out}");
    assert!(out.contains("published digits version 1"), "{out}");
    let out = sb.retrain();
    assert!(out.contains("published digits version 2"), "{out}");

    let list = sb.ok(&["registry", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("digits") && l.contains(" 2 ") && l.contains("production")),
        "{list}"
    );
    let show = sb.ok(&["registry", "show", "digits@1"]);
    let manifest: serde_json::Value =
        serde_json::from_str(show.split("folder:").next().unwrap()).unwrap();
    assert_eq!(manifest["version"], 1);
    assert_eq!(manifest["inputs"][0]["shape"], serde_json::json!([64]));
    assert_eq!(manifest["batchable"], true);
    assert!(manifest["metrics"]["test_accuracy"].as_f64().unwrap() > 0.9);
    assert_eq!(manifest["lineage"]["spec_hash"].as_str().unwrap().len(), 64);

    // The first test row of the CSV, predicted through the alias.
    let row: Vec<f64> = {
        use std::io::Read;
        let mut text = String::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(data_dir().join("tabular/digits.csv.gz")).unwrap(),
        )
        .read_to_string(&mut text)
        .unwrap();
        text.lines()
            .next()
            .unwrap()
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let features = &row[..64];
    sb.write(
        "in.json",
        serde_json::json!({ "instances": [features, features] }).to_string(),
    );
    let pred: serde_json::Value =
        serde_json::from_str(&sb.ok(&["predict", "digits@production", "--input", "in.json"]))
            .unwrap();
    assert_eq!(pred["version"], 2);
    assert_eq!(pred["predictions"].as_array().unwrap().len(), 2);
    assert_eq!(
        pred["predictions"][0]["class"],
        serde_json::json!(row[64] as u64)
    );

    // The stored spec finds its data from any working directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let registry = sb.path().join("models");
    let out = sb
        .command(&[
            "eval",
            "digits@1",
            "--threads",
            "1",
            "--registry",
            registry.to_str().unwrap(),
        ])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eval = String::from_utf8(out.stdout).unwrap();
    assert!(
        eval.contains("test_accuracy")
            && eval.contains("confusion matrix")
            && eval.contains("precision"),
        "{eval}"
    );

    // Bad requests against a working registry: clear errors, registry unharmed.
    sb.write("bad.json", "{\"instances\": [[1, 2, 3]]}");
    let out = sb.run(&["predict", "digits", "--input", "bad.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "input \"pixels\" has shape [1, 3]; digits@2 takes one input \"pixels\" FP32 [batch, 64]"
    ));
    sb.write("bad.json", "{\"instances\": [[1, 2, 3]");
    let out = sb.run(&["predict", "digits", "--input", "bad.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not valid JSON"));
    let out = sb.run(&["registry", "rm", "digits@2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("aliased as production"));

    // A corrupt version is reported, never loaded; the good one still serves.
    let weights = sb.path().join("models/digits/1/weights.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&weights, bytes).unwrap();
    let out = sb.run(&["predict", "digits@1", "--input", "in.json"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "digits version 1 is corrupt: weights.safetensors does not match its checksum"
        ),
        "{err}"
    );
    assert!(sb.ok(&["registry", "list"]).contains("CORRUPT"));
    sb.ok(&["predict", "digits@2", "--input", "in.json"]);

    sb.ok(&["registry", "rm", "digits@1"]);
    sb.ok(&["registry", "alias", "digits", "production", "--rm"]);
    sb.ok(&["registry", "rm", "digits@2"]);
    let out = sb.ok(&["run", "--no-serve", "spec.toml", "--threads", "1"]);
    assert!(
        out.contains("published digits version 3"),
        "versions are never reused: {out}"
    );
}

#[test]
fn a_failing_gate_publishes_without_alias_and_exits_3() {
    let sb = Sandbox::new();
    sb.write("spec.toml", digits_spec(&sb, 0.9999));
    let out = sb.run(&["run", "--no-serve", "spec.toml", "--threads", "1"]);
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAILED: test_accuracy"), "{stdout}");
    assert!(sb.path().join("models/digits/1/manifest.json").is_file());
    assert!(!sb.path().join("models/digits/aliases.json").exists());
}

#[test]
fn check_prints_the_summary_and_draws_the_graph() {
    let sb = Sandbox::new();
    sb.write(
        "spec.toml",
        mnist_spec(
            "m",
            MLP,
            100,
            100,
            "epochs = 1\nbatch_size = 8\noptimizer = { kind = \"sgd\", lr = 0.1 }",
        ),
    );
    let out = sb.ok(&["check", "spec.toml", "--graph", "g.svg"]);
    assert!(out.contains("Total params: 118,282"), "{out}");
    let row = out.lines().find(|l| l.starts_with("layers.1 (dense)"));
    assert!(
        row.is_some_and(|r| r.contains("[128]") && r.ends_with("100,480")),
        "{out}"
    );
    let svg = std::fs::read_to_string(sb.path().join("g.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("layers.5: dense"));
    sb.ok(&["check", "spec.toml", "--graph", "g.dot"]);
    let dot = std::fs::read_to_string(sb.path().join("g.dot")).unwrap();
    assert!(dot.contains("n6 -> n7"), "{dot}");
}

#[test]
fn mnist_subset_learns_with_conv_and_mlp() {
    let sb = Sandbox::new();
    let train = "epochs = 2\nbatch_size = 32\noptimizer = { kind = \"adam\", lr = 1e-3 }\ncheckpoint = { every_epochs = 1, keep = 1 }";
    sb.write("mlp.toml", mnist_spec("mlp", MLP, 4000, 1000, train));
    let lenet = "{ conv2d = { filters = 6, kernel = 5, padding = \"same\" } }, { relu = {} }, { max_pool2d = { size = 2 } }, \
                 { conv2d = { filters = 16, kernel = 5 } }, { relu = {} }, { max_pool2d = { size = 2 } }, { flatten = {} }, \
                 { dense = { units = 84 } }, { relu = {} }, { dense = { units = 10 } }";
    sb.write("lenet.toml", mnist_spec("lenet", lenet, 4000, 1000, train));
    for (file, min) in [("mlp.toml", 0.85), ("lenet.toml", 0.85)] {
        sb.ok(&["run", "--no-serve", file, "--threads", "2"]);
        let name = file.trim_end_matches(".toml");
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(sb.path().join(format!("models/{name}/1/manifest.json"))).unwrap(),
        )
        .unwrap();
        let acc = manifest["metrics"]["test_accuracy"].as_f64().unwrap();
        assert!(acc >= min, "{name}: test accuracy {acc} < {min}");
    }
    let runs = sb.entries("runs");
    assert_eq!(runs.len(), 2);
    let run = sb.path().join("runs").join(&runs[0]);
    for f in ["spec.toml", "run.json", "metrics.jsonl", "evaluation.json"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["status"], "completed");
    assert_eq!(info["environment"]["threads"], 2);
    assert_eq!(info["data_fingerprint"].as_str().unwrap().len(), 64);
}

#[test]
fn binary_and_regression_tasks_train() {
    let sb = Sandbox::new();
    let tabular = data_dir().join("tabular");
    let spec = |name: &str, file: &str, features: usize, output: &str, units: usize, label: i64| {
        format!(
            r#"[model]
name = "{name}"
input = {{ shape = [{features}] }}
output = {output}
layers = [{{ dense = {{ units = 16 }} }}, {{ relu = {{}} }}, {{ dense = {{ units = {units} }} }}]
[data]
format = "csv"
train = {{ path = "{}" }}
normalize = "zscore"
seed = 5
csv = {{ header = false, skip_rows = 1, label = {label} }}
[train]
epochs = 40
batch_size = 16
seed = 5
optimizer = {{ kind = "adam", lr = 3e-3 }}
"#,
            tabular.join(file).display()
        )
    };
    // Breast cancer: 30 features, yes/no, one logit with binary cross-entropy.
    sb.write(
        "binary.toml",
        spec(
            "cancer",
            "breast_cancer.csv",
            30,
            "{ task = \"binary\" }",
            1,
            -1,
        ),
    );
    // Data-parallel workers take shares of every batch (three ranks for batches of 16).
    sb.ok(&[
        "run",
        "--no-serve",
        "binary.toml",
        "--threads",
        "1",
        "--workers",
        "3",
    ]);
    // Iris petal width from the other three measurements and the class (mse).
    sb.write(
        "regression.toml",
        spec("petal", "iris.csv", 4, "{ task = \"regression\" }", 1, 3),
    );
    sb.ok(&[
        "run",
        "--no-serve",
        "regression.toml",
        "--threads",
        "2",
        "--workers",
        "2",
    ]);
    let ranks: Vec<u64> = sb
        .entries("runs")
        .iter()
        .map(|run| {
            let info: serde_json::Value = serde_json::from_slice(
                &std::fs::read(sb.path().join("runs").join(run).join("run.json")).unwrap(),
            )
            .unwrap();
            info["environment"]["ranks"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(ranks.iter().sum::<u64>(), 5, "{ranks:?}");
    let metrics = |name: &str| -> serde_json::Value {
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(sb.path().join(format!("models/{name}/1/manifest.json"))).unwrap(),
        )
        .unwrap();
        m["metrics"].clone()
    };
    let cancer = metrics("cancer");
    assert!(cancer["test_accuracy"].as_f64().unwrap() > 0.93, "{cancer}");
    let petal = metrics("petal");
    assert!(petal["test_rmse"].as_f64().unwrap() < 0.35, "{petal}");
    assert!(petal["test_mae"].as_f64().unwrap() < 0.3, "{petal}");
    assert!(petal.get("test_accuracy").is_none(), "{petal}");
    sb.write("in.json", "[[5.1, 3.5, 1.4, 0], [6.7, 3.0, 5.2, 2]]");
    let pred: serde_json::Value =
        serde_json::from_str(&sb.ok(&["predict", "petal", "--input", "in.json"])).unwrap();
    let small = pred["predictions"][0]["outputs"][0].as_f64().unwrap();
    let large = pred["predictions"][1]["outputs"][0].as_f64().unwrap();
    assert!(small < 0.8 && large > 1.3, "{pred}");
}

/// `examples/digits/attention.toml`: a transformer encoder over the 8 rows of each digit
/// (grouped-query attention with rotary positions, SwiGLU, RMS norm, two blocks) trains
/// through every new layer's gradients, with two data-parallel workers.
#[test]
fn an_attention_encoder_learns_the_digits() {
    let sb = Sandbox::new();
    digits_spec(&sb, 0.5);
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/digits/attention.toml"),
    )
    .unwrap()
    .replace("../../data/tabular/digits.csv.gz", "data/digits.csv.gz");
    sb.write("spec.toml", text);
    let check = sb.ok(&["check", "spec.toml"]);
    assert!(
        check.contains("h.1.attn (self_attention) ← h.1.0"),
        "{check}"
    );
    let out = sb.ok(&["run", "--no-serve", "spec.toml", "--workers", "2"]);
    assert!(out.contains("passed: test_accuracy"), "{out}");
    assert!(
        out.contains("published digits-attention version 1"),
        "{out}"
    );
}
