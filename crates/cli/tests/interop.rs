//! ONNX: models trained here exported and imported back, served beside the original.

use serde_json::{Value, json};

use crate::common::{Sandbox, digits_spec, python, quick_digits_spec};
use crate::serving::{Server, first_row};

/// The first output of a V2 answer as numbers.
fn output(answer: &Value) -> Vec<f64> {
    answer["outputs"][0]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no output data in {answer}"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[test]
fn a_residual_graph_trains_and_exports_to_onnx_with_the_same_outputs() {
    let sb = Sandbox::new();
    let residual = r#"layers = [
  { dense = { units = 64 }, name = "fc" },
  { relu = {}, name = "act" },
  { add = {}, inputs = ["input", "act"] },
  { dense = { units = 10 } },
]"#;
    let spec = digits_spec(&sb, 0.9)
        .replace("epochs = 20", "epochs = 8")
        .replace(
            "layers = [{ dense = { units = 64 } }, { relu = {} }, { dense = { units = 10 } }]",
            residual,
        );
    assert!(
        spec.contains("name = \"act\""),
        "the spec's layers changed: {spec}"
    );
    sb.write("spec.toml", spec);
    let check = sb.ok(&["check", "spec.toml", "--graph", "g.svg"]);
    assert!(check.contains("layers.2 (add) ← input, act"), "{check}");
    let svg = std::fs::read_to_string(sb.path().join("g.svg")).unwrap();
    assert!(
        svg.contains("<path d=\"M"),
        "the residual edge is drawn as an arc"
    );
    // Two data-parallel workers train the graph; the gate asks for 0.9 test accuracy.
    let out = sb.ok(&["run", "--no-serve", "spec.toml", "--workers", "2"]);
    assert!(out.contains("passed: test_accuracy"), "{out}");
    sb.ok(&["export", "digits@1", "--format", "onnx", "-o", "g.onnx"]);
    let refused = sb.run(&[
        "export",
        "digits@1",
        "--format",
        "safetensors",
        "-o",
        "g.st",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--format onnx"));
    sb.ok(&["registry", "import", "g.onnx", "--name", "graph-onnx"]);
    predicts_like_the_native_model(&sb, "graph-onnx");
}

/// `modelforge predict` of the first digits test row: `onnx` (an imported version) answers
/// what the native `digits@1` does.
fn predicts_like_the_native_model(sb: &Sandbox, onnx: &str) -> Vec<f64> {
    let (row, _) = first_row();
    sb.write("rows.json", serde_json::to_string(&[&row]).unwrap());
    let predict = |model: &str| -> Value {
        serde_json::from_str(&sb.ok(&["predict", model, "--input", "rows.json"])).unwrap()
    };
    let native_rows: Vec<Vec<f64>> = predict("digits@1")["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_predictions_match(&predict(onnx), &native_rows, "native");
    row
}

#[test]
fn a_trained_model_exported_to_onnx_serves_the_same_outputs() {
    let sb = Sandbox::new();
    sb.write(
        "spec.toml",
        digits_spec(&sb, 0.5).replace("epochs = 20", "epochs = 3"),
    );
    sb.ok(&["run", "--no-serve", "spec.toml", "--threads", "1"]);
    sb.ok(&[
        "export",
        "digits@production",
        "--format",
        "onnx",
        "-o",
        "digits.onnx",
    ]);
    let module = sb.ok(&[
        "export",
        "digits@1",
        "--format",
        "safetensors",
        "-o",
        "digits.safetensors",
    ]);
    assert!(module.contains("class Model(nn.Module)"), "{module}");
    assert!(module.contains("nn.Linear(64, 64, bias=True)"), "{module}");
    let names: Vec<String> = crate::common::tensors(&sb.path().join("digits.safetensors"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"layers.0.weight".to_string()), "{names:?}");
    assert!(names.contains(&"input_norm.shift".to_string()), "{names:?}");

    let imported = sb.ok(&["registry", "import", "digits.onnx", "--name", "digits-onnx"]);
    assert!(
        imported.contains("imported digits.onnx as digits-onnx@1"),
        "{imported}"
    );
    assert!(imported.contains("pixels"), "{imported}");
    // `predict` runs the ONNX version offline like the native one.
    let row = predicts_like_the_native_model(&sb, "digits-onnx");
    // Importing again makes version 2 of the same graph, here with its output renamed.
    sb.ok(&[
        "registry",
        "import",
        "digits.onnx",
        "--name",
        "digits-onnx",
        "--rename",
        "logits=scores",
    ]);

    let server = Server::start(&sb);
    let (status, meta) = server.call("GET", "/v2/models/digits-onnx", None);
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["platform"], "onnx");
    assert_eq!(
        meta["inputs"][0],
        json!({ "name": "pixels", "datatype": "FP32", "shape": [-1, 64] })
    );
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, 10]));
    assert_eq!(meta["outputs"][0]["name"], "scores", "version 2 renamed it");
    let mut rows = row.clone();
    rows.extend(row.iter().map(|v| 16.0 - v));
    let body = json!({ "inputs": [{ "name": "pixels", "datatype": "FP32", "shape": [2, 64], "data": rows }] }).to_string();
    let native = server
        .call("POST", "/v2/models/digits/infer", Some(&body))
        .1;
    let (status, onnx) = server.call("POST", "/v2/models/digits-onnx/infer", Some(&body));
    assert_eq!(status, 200, "{onnx}");
    let (a, b) = (output(&native), output(&onnx));
    assert_eq!(a.len(), 20);
    assert!(allclose(&b, &a), "native {a:?}\nonnx   {b:?}");

    // TF-Serving REST and the binary extension answer for the ONNX version too.
    let (status, tf) = server.call(
        "POST",
        "/v1/models/digits-onnx:predict",
        Some(&json!({ "instances": [row] }).to_string()),
    );
    assert_eq!(status, 200, "{tf}");
    assert_eq!(tf["predictions"][0].as_array().unwrap().len(), 10);
}

#[test]
fn a_file_that_is_not_onnx_is_refused_and_the_registry_is_unchanged() {
    let sb = Sandbox::new();
    sb.write("bad.onnx", b"\x08\x07garbage that is not a protobuf model");
    let out = sb.run(&["registry", "import", "bad.onnx", "--name", "bad"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.onnx is not a readable ONNX model"),
        "{err}"
    );
    assert!(sb.entries("models").is_empty(), "nothing half-imported");
    let out = sb.run(&["registry", "import", "bad.onnx", "--name", "../escape"]);
    assert_eq!(out.status.code(), Some(2));
    let out = sb.run(&["export", "nothing@1", "--format", "onnx", "-o", "x.onnx"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!sb.path().join("x.onnx").exists());
}

/// Runs `tests/clients/onnx_interop.py` with `args`; returns stdout.
fn interop(python: &str, args: &[&str]) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/clients/onnx_interop.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "onnx_interop.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn onnx_graphs_serve_what_onnxruntime_computes_over_rest_and_grpc() {
    let python = python(&["onnx", "onnxruntime", "numpy", "tritonclient[http,grpc]"]);
    let sb = Sandbox::new();
    let dir = sb.path().join("graphs");
    let listing = interop(&python, &["make", dir.to_str().unwrap()]);
    sb.write("graphs/listing.json", &listing);
    let listing: Vec<Value> = serde_json::from_str(&listing).unwrap();
    assert!(
        listing.len() >= 10,
        "multi and the nine light graphs: {listing:?}"
    );
    for entry in &listing {
        let file = format!("graphs/{}", entry["file"].as_str().unwrap());
        sb.ok(&[
            "registry",
            "import",
            &file,
            "--name",
            entry["name"].as_str().unwrap(),
        ]);
    }
    // The light graphs' 224×224 images are 2 MB as JSON.
    let server = Server::start_with(&sb, &["--max-body-mib", "16"]);
    let (_, meta) = server.call("GET", "/v2/models/multi", None);
    assert_eq!(
        meta["inputs"][1],
        json!({ "name": "b", "datatype": "INT64", "shape": [-1, 2] })
    );
    assert_eq!(meta["outputs"][2]["datatype"], "BOOL");
    let (_, config) = server.call("GET", "/v2/models/light-resnet50/config", None);
    assert_eq!(
        config["max_batch_size"], 0,
        "fixed shapes are not batched: {config}"
    );
    assert_eq!(config["input"][0]["dims"], json!([1, 3, 224, 224]));
    let report = interop(
        &python,
        &[
            "check",
            server.base.trim_start_matches("http://"),
            &server.grpc,
            dir.to_str().unwrap(),
        ],
    );
    let lines: Vec<Value> = report
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), listing.len(), "{report}");
    for line in &lines {
        assert_eq!(line["ok"], true, "outside tolerance: {line}");
    }
    println!("{report}");
}

/// Whether `got` equals `want` within numpy's `allclose` bound at 1e-5 absolute and
/// relative: both sides sum in f32, in orders that may differ, so logits near 50 differ
/// by a few units in the last place.
fn allclose(got: &[f64], want: &[f64]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(a, b)| (a - b).abs() <= 1e-5 + 1e-5 * b.abs())
}

/// `modelforge predict`'s outputs match another runtime's rows (`allclose`).
fn assert_predictions_match(predicted: &Value, rows: &[Vec<f64>], runtime: &str) {
    assert!(!rows.is_empty());
    for (i, want) in rows.iter().enumerate() {
        let got: Vec<f64> = predicted["predictions"][i]["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(
            allclose(&got, want),
            "row {i}: modelforge {got:?}\n{runtime} {want:?}"
        );
    }
}

/// A sandbox with digits@1 trained for 2 epochs and exported in `format` to `file`;
/// returns the export's stdout and `modelforge predict`'s answer for `rows.json` (two rows).
fn exported(format: &str, file: &str) -> (Sandbox, String, Value) {
    let sb = Sandbox::new();
    sb.write("spec.toml", quick_digits_spec(&sb, 0.5));
    sb.ok(&["run", "--no-serve", "spec.toml", "--threads", "1"]);
    let stdout = sb.ok(&["export", "digits@1", "--format", format, "-o", file]);
    let (row, _) = first_row();
    let rows = vec![
        row.clone(),
        row.iter().map(|v| 16.0 - v).collect::<Vec<_>>(),
    ];
    sb.write("rows.json", serde_json::to_string(&rows).unwrap());
    let predicted = serde_json::from_str(&sb.ok(&[
        "predict",
        "digits@1",
        "--input",
        "rows.json",
        "--threads",
        "1",
    ]))
    .unwrap();
    (sb, stdout, predicted)
}

#[test]
fn exported_onnx_runs_in_onnxruntime_like_modelforge() {
    let python = python(&["onnx", "onnxruntime", "numpy"]);
    let (sb, _, predicted) = exported("onnx", "digits.onnx");
    let file = |name: &str| sb.path().join(name).to_str().unwrap().to_string();
    let ort: Vec<Vec<f64>> = serde_json::from_str(&interop(
        &python,
        &["ort", &file("digits.onnx"), "pixels", &file("rows.json")],
    ))
    .unwrap();
    assert_predictions_match(&predicted, &ort, "onnxruntime");
}

#[test]
#[ignore = "installs PyTorch, about 4 GB from PyPI: scripts/test.sh runs it unless MODELFORGE_TORCH=0"]
fn safetensors_export_loads_into_the_generated_pytorch_module() {
    let python = python(&["torch", "safetensors", "numpy"]);
    let (sb, module, predicted) = exported("safetensors", "digits.safetensors");
    sb.write("module.py", module);
    let file = |name: &str| sb.path().join(name).to_str().unwrap().to_string();
    let torch: Vec<Vec<f64>> = serde_json::from_str(&interop(
        &python,
        &[
            "torch",
            &file("module.py"),
            &file("digits.safetensors"),
            &file("rows.json"),
        ],
    ))
    .unwrap();
    assert_predictions_match(&predicted, &torch, "PyTorch");
}

#[test]
#[ignore = "installs PyTorch, about 4 GB from PyPI: scripts/test.sh runs it unless MODELFORGE_TORCH=0"]
fn a_transformer_exported_by_torch_with_dynamic_axes_serves_what_onnxruntime_computes() {
    let python = python(&["torch", "onnx", "onnxruntime", "numpy"]);
    let sb = Sandbox::new();
    let dir = sb.path().join("torch");
    let printed = interop(&python, &["transformer", dir.to_str().unwrap(), "12"]);
    let reference: Value = serde_json::from_str(printed.lines().last().unwrap()).unwrap();
    // Batch and sequence axes are dynamic in the file: the import asks for the length,
    // then folds the shapes the graph computes from it (Shape → Gather → Concat → Reshape).
    let out = sb.run(&[
        "registry",
        "import",
        "torch/transformer.onnx",
        "--name",
        "tiny-lm",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shape ids="));
    sb.ok(&[
        "registry",
        "import",
        "torch/transformer.onnx",
        "--name",
        "tiny-lm",
        "--shape",
        "ids=12",
    ]);
    let server = Server::start(&sb);
    let ids: Vec<i64> = reference["ids"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()))
        .collect();
    let body =
        json!({"inputs": [{"name": "ids", "datatype": "INT64", "shape": [2, 12], "data": ids}]});
    let (status, answer) = server.call("POST", "/v2/models/tiny-lm/infer", Some(&body.to_string()));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][0]["shape"], json!([2, 12, 40]));
    let got = output(&answer);
    let want: Vec<f64> = reference["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        allclose(&got, &want),
        "{got:?} against onnxruntime's {want:?}"
    );
}
