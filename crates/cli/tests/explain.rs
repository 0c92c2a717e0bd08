//! `modelforge explain` and the server's explain routes: attributions of trained models,
//! equal to Captum's on the PyTorch export, with their pictures and their bad inputs.

use serde_json::{Value, json};

use crate::common::{
    MLP, Sandbox, client_report, digits_spec, mnist_spec, python, quick_digits_spec,
};
use crate::serving::Server;

/// The first `n` MNIST test images, 784 raw pixel values (0–255) each.
fn mnist_images(n: usize) -> Vec<Vec<f32>> {
    use std::io::Read;
    let path = crate::common::data_dir().join("mnist/t10k-images-idx3-ubyte.gz");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    bytes[16..16 + n * 784]
        .chunks_exact(784)
        .map(|img| img.iter().map(|&p| p as f32).collect())
        .collect()
}

/// A sandbox whose registry holds `name`@1, trained for one epoch on 2,000 MNIST images.
fn mnist_model(name: &str, layers: &str, normalize: &str) -> Sandbox {
    let sb = Sandbox::new();
    let spec = mnist_spec(
        name,
        layers,
        2000,
        200,
        "epochs = 1\nbatch_size = 32\noptimizer = { kind = \"adam\", lr = 1e-3 }",
    )
    .replace(
        "normalize = \"scale\"",
        &format!("normalize = \"{normalize}\""),
    );
    sb.write("spec.toml", spec);
    sb.ok(&["run", "--no-serve", "spec.toml", "--threads", "2"]);
    sb
}

/// The LeNet layers of examples/lenet.
const LENET: &str = "{ conv2d = { filters = 6, kernel = 5, padding = \"same\" } }, { relu = {} }, { max_pool2d = { size = 2 } }, { conv2d = { filters = 16, kernel = 5 } }, { relu = {} }, { max_pool2d = { size = 2 } }, { flatten = {} }, { dense = { units = 120 } }, { relu = {} }, { dense = { units = 84 } }, { relu = {} }, { dense = { units = 10 } }";

/// `modelforge explain` of `model` for the instances in `rows.json` with `flags`; the
/// attributions.json it wrote.
fn explain(sb: &Sandbox, model: &str, input: &str, flags: &[&str]) -> Value {
    let out = format!("why-{}", flags.join("_").replace(['-', '.', '/'], ""));
    let mut args = vec![
        "explain",
        model,
        "--input",
        input,
        "-o",
        &out,
        "--threads",
        "2",
    ];
    args.extend_from_slice(flags);
    sb.ok(&args);
    serde_json::from_slice(&std::fs::read(sb.path().join(&out).join("attributions.json")).unwrap())
        .unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// One setting checked against Captum: modelforge's flags and the case Captum runs.
struct Case {
    name: &'static str,
    flags: Vec<&'static str>,
    captum: Value,
}

fn cases() -> Vec<Case> {
    let ig = |name, steps: u64, rule: &'static str, baseline: Value| Case {
        name,
        flags: Vec::new(),
        captum: json!({"method": "integrated-gradients", "steps": steps, "rule": rule, "baseline": baseline}),
    };
    let mut cases = vec![
        Case {
            name: "saliency",
            flags: vec!["--method", "saliency"],
            captum: json!({"method": "saliency"}),
        },
        Case {
            name: "input_x_gradient",
            flags: vec!["--method", "input-x-gradient"],
            captum: json!({"method": "input-x-gradient"}),
        },
        Case {
            flags: vec!["--steps", "64"],
            ..ig("ig_gauss_64", 64, "gauss-legendre", Value::Null)
        },
        Case {
            flags: vec![
                "--steps",
                "20",
                "--rule",
                "riemann-trapezoid",
                "--baseline",
                "40",
            ],
            ..ig("ig_trapezoid_const", 20, "riemann-trapezoid", json!(40.0))
        },
        Case {
            flags: vec!["--steps", "16", "--rule", "riemann-left"],
            ..ig("ig_left", 16, "riemann-left", Value::Null)
        },
        Case {
            flags: vec!["--steps", "16", "--rule", "riemann-middle"],
            ..ig("ig_middle", 16, "riemann-middle", Value::Null)
        },
        Case {
            flags: vec!["--steps", "16", "--rule", "riemann-right"],
            ..ig("ig_right", 16, "riemann-right", Value::Null)
        },
    ];
    cases.push(Case {
        name: "smoothgrad",
        flags: vec!["--method", "smoothgrad", "--samples", "4", "--stdev", "20", "--seed", "3"],
        captum: json!({"method": "saliency", "smoothing": {"samples": 4, "stdev": 20.0, "seed": 3}}),
    });
    cases.push(Case {
        name: "smoothgrad_ig",
        flags: vec![
            "--method", "smoothgrad", "--over", "integrated-gradients", "--steps", "8",
            "--samples", "3", "--stdev", "10", "--seed", "5",
        ],
        captum: json!({"method": "integrated-gradients", "steps": 8, "rule": "gauss-legendre", "baseline": null, "smoothing": {"samples": 3, "stdev": 10.0, "seed": 5}}),
    });
    cases
}

/// Explains `rows` of `model` with every case, runs Captum on the PyTorch export with the
/// same settings and targets, and checks that every attribution agrees to 1e-4 of the
/// attribution scale (the largest |a| of the sample). Returns the largest relative gap
/// and the integrated-gradients deltas relative to |f(x) − f(b)| (64 Gauss steps).
fn agrees_with_captum(sb: &Sandbox, model: &str, rows: &[Vec<f32>], shape: &[usize]) -> Vec<f64> {
    let python = python(&["torch", "safetensors", "numpy", "captum"]);
    let module = sb.ok(&[
        "export",
        model,
        "--format",
        "safetensors",
        "-o",
        "model.safetensors",
    ]);
    sb.write("module.py", module);
    sb.write("rows.json", serde_json::to_string(&rows).unwrap());
    let mut ours = Vec::new();
    let mut captum_cases = Vec::new();
    for case in cases() {
        let got = explain(sb, model, "rows.json", &case.flags);
        let targets: Vec<u64> = got["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["target"].as_u64().unwrap())
            .collect();
        let mut captum = case.captum.clone();
        captum["name"] = json!(case.name);
        captum["targets"] = json!(targets);
        captum_cases.push(captum);
        ours.push((case.name, got));
    }
    sb.write(
        "cases.json",
        serde_json::to_string(&json!({"shape": shape, "inputs": rows, "cases": captum_cases}))
            .unwrap(),
    );
    let file = |name: &str| sb.path().join(name).to_str().unwrap().to_string();
    let reference = client_report(
        &python,
        "captum_parity.py",
        &[
            &file("module.py"),
            &file("model.safetensors"),
            &file("cases.json"),
        ],
    );
    let mut deltas = Vec::new();
    let mut largest = 0f64;
    for (name, got) in &ours {
        let want = &reference[*name];
        for (s, sample) in got["samples"].as_array().unwrap().iter().enumerate() {
            let a = floats(&sample["attributions"]);
            let b = floats(&want["attributions"][s]);
            assert_eq!(a.len(), b.len(), "{model} {name}");
            let scale = b.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            largest = largest.max(worst / scale);
            assert!(
                worst <= 1e-4 * scale,
                "{model} {name} sample {s}: |modelforge − Captum| up to {worst:.3e} of scale {scale:.3e}"
            );
            if let Some(delta) = sample["convergence_delta"].as_f64() {
                // Both sides report the same delta, to float precision of the sums.
                let theirs = want["delta"][s].as_f64().unwrap();
                let gap = sample["output_change"].as_f64().unwrap().abs();
                assert!(
                    (delta - theirs).abs() <= 1e-3 * gap.max(1e-6),
                    "{name}: delta {delta} against Captum's {theirs}"
                );
                if *name == "ig_gauss_64" {
                    deltas.push(delta.abs() / gap);
                }
            }
        }
    }
    eprintln!(
        "{model}: {} settings, largest |modelforge − Captum| {largest:.2e} of the attribution scale",
        ours.len()
    );
    deltas
}

#[test]
#[ignore = "installs PyTorch and Captum from PyPI: scripts/test.sh runs it unless MODELFORGE_TORCH=0"]
fn attributions_equal_captums_for_an_mlp_a_conv_net_and_a_tabular_model() {
    let images = mnist_images(3);
    for (name, layers, normalize) in [("mnist-mlp", MLP, "scale"), ("lenet", LENET, "zscore")] {
        let sb = mnist_model(name, layers, normalize);
        let deltas = agrees_with_captum(&sb, &format!("{name}@1"), &images, &[1, 28, 28]);
        assert_eq!(deltas.len(), 3);
        let shown: Vec<String> = deltas.iter().map(|d| format!("{d:.2e}")).collect();
        eprintln!("{name}: integrated-gradients deltas (64 steps) {shown:?} of |f(x) − f(b)|");
        for d in deltas {
            assert!(
                d < 0.01,
                "{name}: integrated gradients with 64 steps leave a delta of {:.3} %",
                100.0 * d
            );
        }
    }
    let sb = Sandbox::new();
    sb.write(
        "spec.toml",
        digits_spec(&sb, 0.5).replace("epochs = 20", "epochs = 3"),
    );
    sb.ok(&["run", "--no-serve", "spec.toml", "--threads", "2"]);
    let rows: Vec<Vec<f32>> = crate::serving::digit_rows(3)
        .into_iter()
        .map(|(r, _)| r.into_iter().map(|v| v as f32).collect())
        .collect();
    agrees_with_captum(&sb, "digits@1", &rows, &[64]);
}

/// A PNG of an MNIST image, grey, 28 × 28.
fn png(pixels: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, 28, 28);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let bytes: Vec<u8> = pixels.iter().map(|&p| p as u8).collect();
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&bytes)
        .unwrap();
    out
}

#[test]
fn explain_writes_attributions_and_pictures_for_images_and_tables() {
    let sb = mnist_model("mnist-mlp", MLP, "scale");
    let image = &mnist_images(1)[0];
    sb.write("digit.png", png(image));
    let out = sb.ok(&[
        "explain",
        "mnist-mlp@1",
        "--input",
        "digit.png",
        "--steps",
        "64",
        "-o",
        "why",
        "--threads",
        "2",
    ]);
    assert!(
        out.contains("integrated gradients (64 steps, gauss-legendre)"),
        "{out}"
    );
    assert!(out.contains("convergence delta"), "{out}");
    let doc: Value =
        serde_json::from_slice(&std::fs::read(sb.path().join("why/attributions.json")).unwrap())
            .unwrap();
    assert_eq!(doc["shape"], json!([1, 28, 28]));
    let sample = &doc["samples"][0];
    assert_eq!(floats(&sample["attributions"]).len(), 784);
    // The test image is a 7, and the model predicts it; the delta is tiny.
    assert_eq!(sample["target"], 7, "{sample}");
    let delta = sample["convergence_delta"].as_f64().unwrap();
    let change = sample["output_change"].as_f64().unwrap();
    assert!(delta.abs() < 0.01 * change.abs(), "{delta} of {change}");
    let svg = std::fs::read_to_string(sb.path().join("why/attributions.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("#d62728"),
        "a heat map with positive pixels"
    );
    // The same image as a request gives the same numbers; a second target too.
    sb.write(
        "digit.json",
        serde_json::to_string(&json!({"instances": [image]})).unwrap(),
    );
    let again = explain(&sb, "mnist-mlp@1", "digit.json", &["--steps", "64"]);
    assert_eq!(again["samples"][0]["attributions"], sample["attributions"]);
    let three = explain(
        &sb,
        "mnist-mlp@1",
        "digit.json",
        &["--target", "3", "--method", "saliency"],
    );
    assert_eq!(three["samples"][0]["target"], 3);

    // A table: CSV rows in the training file's layout; bars by feature.
    let tabular = Sandbox::new();
    tabular.write("spec.toml", quick_digits_spec(&tabular, 0.5));
    tabular.ok(&["run", "--no-serve", "spec.toml", "--threads", "2"]);
    let rows: Vec<String> = crate::serving::digit_rows(2)
        .into_iter()
        .map(|(r, label)| {
            let mut cells: Vec<String> = r.iter().map(|v| v.to_string()).collect();
            cells.push(label.to_string());
            cells.join(",")
        })
        .collect();
    tabular.write("rows.csv", rows.join("\n") + "\n");
    let doc = explain(&tabular, "digits@1", "rows.csv", &["--baseline", "mean"]);
    assert_eq!(doc["samples"].as_array().unwrap().len(), 2);
    let bars = std::fs::read_to_string(tabular.path().join("why-baseline_mean/attributions-1.svg"))
        .unwrap();
    assert!(bars.contains(">c"), "bars named by column: {bars}");
}

#[test]
fn bad_explanations_exit_2_with_the_field_and_the_fix() {
    let sb = mnist_model("mnist-mlp", MLP, "scale");
    let image = &mnist_images(1)[0];
    sb.write(
        "digit.json",
        serde_json::to_string(&json!({"instances": [image]})).unwrap(),
    );
    sb.write("short.json", "[[0.0, 1.0]]");
    sb.write("small.png", {
        let mut out = Vec::new();
        let mut e = png::Encoder::new(&mut out, 2, 2);
        e.set_color(png::ColorType::Grayscale);
        e.write_header()
            .unwrap()
            .write_image_data(&[0, 1, 2, 3])
            .unwrap();
        out
    });
    let cases: [(&[&str], &str); 9] = [
        (&["--method", "lime"], "unknown method \"lime\""),
        (&["--steps", "0"], "use 1 to 1024 steps"),
        (&["--steps", "100000"], "use 1 to 1024 steps"),
        (&["--target", "10"], "use 0 to 9"),
        (
            &["--baseline", "short.json"],
            "baseline has 2 values but the input has 784",
        ),
        (&["--baseline", "mean"], "needs the training mean"),
        (
            &["--method", "saliency", "--steps", "5"],
            "steps applies to integrated gradients",
        ),
        (&["--rule", "simpson"], "unknown rule"),
        (&["--method", "smoothgrad", "--stdev=-1"], "stdev"),
    ];
    for (flags, message) in cases {
        let mut args = vec![
            "explain",
            "mnist-mlp@1",
            "--input",
            "digit.json",
            "-o",
            "bad",
        ];
        args.extend_from_slice(flags);
        let out = sb.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
        assert!(
            !sb.path().join("bad").exists(),
            "nothing written for {flags:?}"
        );
    }
    let out = sb.run(&["explain", "mnist-mlp@1", "--input", "small.png"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("resize it to 28×28"));
    let out = sb.run(&["explain", "mnist-mlp@1", "--prompt", "ROMEO:"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a language model"));
    // An ONNX version has no gradients here.
    sb.ok(&["export", "mnist-mlp@1", "--format", "onnx", "-o", "m.onnx"]);
    sb.ok(&["registry", "import", "m.onnx", "--name", "onnx-mlp"]);
    let out = sb.run(&["explain", "onnx-mlp", "--input", "digit.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("explanations need gradients"));
}

#[test]
fn the_server_explains_beside_inference_and_keeps_serving() {
    let sb = mnist_model("mnist-mlp", MLP, "scale");
    sb.ok(&["export", "mnist-mlp@1", "--format", "onnx", "-o", "m.onnx"]);
    sb.ok(&["registry", "import", "m.onnx", "--name", "onnx-mlp"]);
    let server = Server::start(&sb);
    let image = &mnist_images(1)[0];
    let tensor =
        json!({"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": image});
    let body =
        json!({"inputs": [tensor], "parameters": {"method": "integrated-gradients", "steps": 32}});
    let (status, answer) = server.call(
        "POST",
        "/v2/models/mnist-mlp/explain",
        Some(&body.to_string()),
    );
    assert_eq!(status, 200, "{answer}");
    let outputs = answer["outputs"].as_array().unwrap();
    assert_eq!(outputs[0]["name"], "logits");
    assert_eq!(outputs[1]["name"], "attributions");
    assert_eq!(outputs[1]["shape"], json!([1, 1, 28, 28]));
    assert_eq!(outputs[1]["datatype"], "FP32");
    assert_eq!(answer["targets"], json!([7]));
    let delta = answer["convergence_delta"][0].as_f64().unwrap();
    // The CLI computes the same numbers.
    sb.write(
        "digit.json",
        serde_json::to_string(&json!({"instances": [image]})).unwrap(),
    );
    let cli = explain(&sb, "mnist-mlp@1", "digit.json", &["--steps", "32"]);
    let (rest, ours) = (
        floats(&outputs[1]["data"]),
        floats(&cli["samples"][0]["attributions"]),
    );
    assert!(
        rest.iter()
            .zip(&ours)
            .all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1.0))
    );
    assert!((delta - cli["samples"][0]["convergence_delta"].as_f64().unwrap()).abs() < 1e-5);
    // TF-Serving's instances at KServe V1's verb, on a version path.
    let v1 = json!({"instances": [image], "parameters": {"method": "saliency", "target": 2}});
    let (status, answer) = server.call(
        "POST",
        "/v1/models/mnist-mlp/versions/1:explain",
        Some(&v1.to_string()),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["targets"], json!([2]));
    assert_eq!(answer["attributions"][0].as_array().unwrap().len(), 784);
    assert!(answer["predictions"][0].as_array().unwrap().len() == 10);
    // Bad requests: 400 with the field; the server answers on.
    for (parameters, message) in [
        (json!({"method": "occlusion"}), "parameters.method"),
        (json!({"steps": 0}), "parameters.steps"),
        (json!({"target": 12}), "use 0 to 9"),
        (json!({"baseline": [1, 2, 3]}), "baseline has 3 values"),
    ] {
        let body = json!({"inputs": [tensor], "parameters": parameters});
        let (status, answer) = server.call(
            "POST",
            "/v2/models/mnist-mlp/versions/1/explain",
            Some(&body.to_string()),
        );
        assert_eq!(status, 400, "{parameters}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(message),
            "{parameters}: {answer}"
        );
    }
    let (status, answer) = server.call(
        "POST",
        "/v2/models/mnist-mlp/explain",
        Some("{\"parameters\": {}}"),
    );
    assert_eq!(status, 400, "{answer}");
    let onnx = json!({"inputs": [tensor]});
    let (status, answer) = server.call(
        "POST",
        "/v2/models/onnx-mlp/explain",
        Some(&onnx.to_string()),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("explanations need gradients"),
        "{answer}"
    );
    let (status, _) = server.call(
        "POST",
        "/v2/models/mnist-mlp/infer",
        Some(&onnx.to_string()),
    );
    assert_eq!(status, 200, "inference goes on");
    // Counted apart from inference, in the statistics and in Prometheus.
    let (_, stats) = server.call("GET", "/v2/models/mnist-mlp/stats", None);
    let entry = &stats["model_stats"][0];
    assert_eq!(entry["explain_stats"]["success"]["count"], 2, "{entry}");
    assert_eq!(entry["explain_stats"]["fail"]["count"], 2, "{entry}");
    assert_eq!(entry["inference_stats"]["success"]["count"], 1, "{entry}");
    let metrics = server.metrics_page();
    assert!(
        metrics.contains(
            "modelforge_explanations_total{model=\"mnist-mlp\",version=\"1\",outcome=\"success\"} 2"
        ),
        "{metrics}"
    );
}

#[test]
fn a_language_model_explains_its_next_token_from_the_cli_and_the_server() {
    let sb = crate::generation::published_language_model();
    // The CLI: which characters of the prompt made the model say what it says next.
    sb.ok(&[
        "explain",
        "shakespeare-gpt",
        "--prompt",
        "ROMEO:",
        "--steps",
        "64",
        "-o",
        "why",
        "--threads",
        "2",
    ]);
    let doc: Value =
        serde_json::from_slice(&std::fs::read(sb.path().join("why/attributions.json")).unwrap())
            .unwrap();
    let sample = &doc["samples"][0];
    assert_eq!(doc["shape"], json!([6]), "{doc}");
    let cli = floats(&sample["attributions"]);
    assert_eq!(cli.len(), 6, "one attribution per character");
    let logits = floats(&sample["outputs"]);
    assert_eq!(logits.len(), 77, "the next token's scores");
    let target = sample["target"].as_u64().unwrap() as usize;
    let best = (0..77)
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap();
    assert_eq!(target, best, "the token it would generate first");
    // That is the character greedy generation writes after the prompt.
    let out = sb.run(&[
        "generate",
        "shakespeare-gpt",
        "--prompt",
        "ROMEO:",
        "--max-tokens",
        "1",
        "--temperature",
        "0",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let next: String = text["ROMEO:".len()..].chars().take(1).collect();
    assert_eq!(sample["label"], json!(next), "{text:?}");
    let (delta, change) = (
        sample["convergence_delta"].as_f64().unwrap(),
        sample["output_change"].as_f64().unwrap(),
    );
    assert!(delta.abs() < 0.01 * change.abs(), "{delta} of {change}");
    let svg = std::fs::read_to_string(sb.path().join("why/attributions.svg")).unwrap();
    assert!(
        svg.contains(">R<") && svg.contains(">:<"),
        "the tokens are drawn"
    );
    // A prompt file gives the same; a prompt past the context, or characters the
    // tokenizer lacks, exit 2 with the fix.
    sb.write("prompt.txt", "ROMEO:");
    sb.write("request.json", "{\"inputs\": []}");
    let again = explain(&sb, "shakespeare-gpt", "prompt.txt", &["--steps", "64"]);
    assert_eq!(again["samples"][0]["attributions"], sample["attributions"]);
    for (flags, message) in [
        (&["--prompt", &"a".repeat(65)][..], "shorten the prompt"),
        (&["--prompt", "ROMEO: ✓"][..], "the prompt"),
        (&["--prompt", "ROMEO:", "--target", "77"][..], "use 0 to 76"),
        (&["--input", "request.json"][..], "needs \"text_input\""),
    ] {
        let mut args = vec!["explain", "shakespeare-gpt", "-o", "bad"];
        args.extend_from_slice(flags);
        let out = sb.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
        assert!(!sb.path().join("bad").exists());
    }

    // The server: the prompt as Triton's generate takes it, or as a V2 BYTES input,
    // explained on the version's scheduler thread between generation steps.
    let server = Server::start_with(&sb, &["--threads", "2"]);
    let path = "/v2/models/shakespeare-gpt/explain";
    let body = json!({"text_input": "ROMEO:", "parameters": {"steps": 64}});
    let (status, answer) = server.call("POST", path, Some(&body.to_string()));
    assert_eq!(status, 200, "{answer}");
    let outputs = answer["outputs"].as_array().unwrap();
    assert_eq!(outputs[0]["name"], "logits");
    assert_eq!(outputs[0]["shape"], json!([1, 77]));
    assert_eq!(outputs[1]["name"], "attributions");
    assert_eq!(outputs[1]["shape"], json!([1, 6]));
    let rest = floats(&outputs[1]["data"]);
    assert!(
        rest.iter()
            .zip(&cli)
            .all(|(a, b)| (a - b).abs() <= 1e-5 * b.abs().max(1.0)),
        "{rest:?} against {cli:?}"
    );
    assert_eq!(answer["targets"], json!([target]));
    assert_eq!(answer["tokens"], json!(["R", "O", "M", "E", "O", ":"]));
    assert_eq!(answer["target_tokens"], json!([next]));
    assert!(answer["convergence_delta"][0].is_number());
    let v2 = json!({
        "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["ROMEO:"]}],
        "parameters": {"method": "saliency", "target": 3},
    });
    let (status, answer) = server.call(
        "POST",
        "/v2/models/shakespeare-gpt/versions/1/explain",
        Some(&v2.to_string()),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["targets"], json!([3]));
    assert!(answer.get("convergence_delta").is_none());
    for (body, message) in [
        (json!({"text_input": "a".repeat(65)}), "shorten the prompt"),
        (json!({"text_input": 5}), "text_input must be a string"),
        (json!({"parameters": {}}), "explains a prompt"),
        (
            json!({"text_input": "ROMEO:", "parameters": {"target": 500}}),
            "use 0 to 76",
        ),
        (
            json!({"text_input": "ROMEO:", "parameters": {"method": "lime"}}),
            "parameters.method",
        ),
    ] {
        let (status, answer) = server.call("POST", path, Some(&body.to_string()));
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(message),
            "{body}: {answer}"
        );
    }
    // Generation goes on, and explanations are counted apart.
    let generate =
        json!({"text_input": "ROMEO:", "parameters": {"max_tokens": 4, "temperature": 0}});
    let (status, answer) = server.call(
        "POST",
        "/v2/models/shakespeare-gpt/generate",
        Some(&generate.to_string()),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer["text_output"].as_str().unwrap().starts_with(&next));
    let (_, stats) = server.call("GET", "/v2/models/shakespeare-gpt/stats", None);
    let entry = &stats["model_stats"][0];
    assert_eq!(entry["explain_stats"]["success"]["count"], 2, "{entry}");
    assert_eq!(entry["explain_stats"]["fail"]["count"], 2, "{entry}");
}

#[test]
#[ignore = "installs PyTorch, transformers and Captum from PyPI: scripts/test.sh runs it unless MODELFORGE_TORCH=0"]
fn a_language_models_attributions_equal_captums_on_its_hugging_face_export() {
    // The same weights in `transformers`, explained by Captum at the token embedding's
    // output, as modelforge explains them.
    let python = python(&["torch", "transformers", "safetensors", "numpy", "captum"]);
    let sb = crate::generation::published_language_model();
    sb.write("prompt.txt", "ROMEO:");
    sb.ok(&[
        "export",
        "shakespeare-gpt",
        "--format",
        "hf",
        "-o",
        "gpt-hf",
    ]);
    let lm_cases: [(&str, &[&str], Value); 4] = [
        (
            "ig",
            &["--steps", "64"],
            json!({"method": "integrated-gradients", "steps": 64, "rule": "gauss-legendre", "baseline": null}),
        ),
        (
            "trapezoid",
            &[
                "--steps",
                "20",
                "--rule",
                "riemann-trapezoid",
                "--baseline",
                "0.5",
                "--target",
                "3",
            ],
            json!({"method": "integrated-gradients", "steps": 20, "rule": "riemann-trapezoid", "baseline": 0.5, "target": 3}),
        ),
        (
            "saliency",
            &["--method", "saliency", "--target", "3"],
            json!({"method": "saliency", "target": 3}),
        ),
        (
            "ixg",
            &["--method", "input-x-gradient"],
            json!({"method": "input-x-gradient"}),
        ),
    ];
    let mut ours = Vec::new();
    let mut cases = Vec::new();
    for (name, flags, mut captum) in lm_cases {
        let got = explain(&sb, "shakespeare-gpt", "prompt.txt", flags);
        captum["name"] = json!(name);
        captum["target"] = got["samples"][0]["target"].clone();
        cases.push(captum);
        ours.push(got);
    }
    let tokenizer: Value = serde_json::from_slice(
        &std::fs::read(sb.path().join("models/shakespeare-gpt/1/tokenizer.json")).unwrap(),
    )
    .unwrap();
    let ids: Vec<u64> = "ROMEO:"
        .chars()
        .map(|c| tokenizer["model"]["vocab"][c.to_string()].as_u64().unwrap())
        .collect();
    sb.write(
        "lm-cases.json",
        json!({"ids": ids, "cases": cases}).to_string(),
    );
    let hf = sb.path().join("gpt-hf");
    let cases_path = sb.path().join("lm-cases.json");
    let reference = client_report(
        &python,
        "captum_lm_parity.py",
        &[hf.to_str().unwrap(), cases_path.to_str().unwrap()],
    );
    for (name, got) in ["ig", "trapezoid", "saliency", "ixg"].iter().zip(&ours) {
        let want = floats(&reference[*name]["attributions"]);
        let have = floats(&got["samples"][0]["attributions"]);
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let gap = want
            .iter()
            .zip(&have)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        println!(
            "{name}: largest gap {:.2e} of the attribution scale",
            gap / scale
        );
        assert!(
            gap <= 1e-4 * scale,
            "{name}: {have:?} against Captum's {want:?}"
        );
        if let Some(delta) = reference[*name]["delta"].as_f64() {
            let ours = got["samples"][0]["convergence_delta"].as_f64().unwrap();
            assert!(
                (delta - ours).abs() <= 1e-3 * scale,
                "{name}: delta {ours} against {delta}"
            );
        }
    }
}
