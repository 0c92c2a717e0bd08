//! `modelforge run` as a pipeline of cached stages: what re-runs after which change, the
//! promotion gate, and deploying into a running server.

use serde_json::Value;

use crate::common::{Sandbox, digits_spec};
use crate::serving::Server;

/// The status column of each stage line (`check cached 0.00 s ...`), by stage.
fn statuses(out: &str) -> Vec<(String, String)> {
    let stages = [
        "check", "data", "train", "evaluate", "gate", "publish", "deploy",
    ];
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let stage = words.next()?;
            let status = match words.next()? {
                "would" => "would run",
                other => other,
            };
            stages
                .contains(&stage)
                .then(|| (stage.to_string(), status.to_string()))
        })
        .collect()
}

fn expect(out: &str, wanted: &[(&str, &str)]) {
    let got = statuses(out);
    let wanted: Vec<(String, String)> = wanted
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, wanted, "{out}");
}

const RUN: &[&str] = &["run", "--no-serve", "spec.toml", "--threads", "1"];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    RUN.iter().chain(extra).copied().collect()
}

#[test]
fn unchanged_stages_are_cached_and_a_change_reruns_only_what_depends_on_it() {
    let sb = Sandbox::new();
    let spec = digits_spec(&sb, 0.5).replace("epochs = 20", "epochs = 3");
    sb.write("spec.toml", &spec);
    let all_ran = [
        ("check", "ran"),
        ("data", "ran"),
        ("train", "ran"),
        ("evaluate", "ran"),
        ("gate", "ran"),
        ("publish", "ran"),
        ("deploy", "ran"),
    ];
    expect(&sb.ok(RUN), &all_ran);

    // Nothing changed: every stage is cached and no version is added.
    let started = std::time::Instant::now();
    let out = sb.ok(RUN);
    eprintln!("cached run took {:?}", started.elapsed());
    assert!(out.contains("7 stages: 0 ran, 7 cached"), "{out}");
    let mut versions = sb.entries("models/digits");
    versions.sort();
    assert_eq!(versions, ["1", "aliases.json"]);

    // A dry run names what changed, runs nothing and writes nothing.
    sb.write("spec.toml", spec.replace("lr = 1e-3", "lr = 2e-3"));
    let ledger = std::fs::read(sb.path().join("runs/.stages/digits.json")).unwrap();
    let out = sb.ok(&with(&["--dry-run"]));
    expect(
        &out,
        &[
            ("check", "cached"),
            ("data", "cached"),
            ("train", "would run"),
            ("evaluate", "would run"),
            ("gate", "would run"),
            ("publish", "would run"),
            ("deploy", "would run"),
        ],
    );
    assert!(out.contains("train.optimizer.lr: 0.001 → 0.002"), "{out}");
    assert_eq!(
        std::fs::read(sb.path().join("runs/.stages/digits.json")).unwrap(),
        ledger
    );
    assert_eq!(sb.entries("runs").len(), 1);

    // The learning rate: train and everything after it, not the data.
    let out = sb.ok(RUN);
    expect(
        &out,
        &[
            ("check", "cached"),
            ("data", "cached"),
            ("train", "ran"),
            ("evaluate", "ran"),
            ("gate", "ran"),
            ("publish", "ran"),
            ("deploy", "ran"),
        ],
    );
    assert!(out.contains("published digits version 2"), "{out}");

    // Only the gate's threshold: the gate and publish (which reuses the version); deploy
    // sees the same version and aliases.
    sb.write(
        "spec.toml",
        spec.replace("lr = 1e-3", "lr = 2e-3")
            .replace("min = 0.5", "min = 0.45"),
    );
    let out = sb.ok(RUN);
    expect(
        &out,
        &[
            ("check", "cached"),
            ("data", "cached"),
            ("train", "cached"),
            ("evaluate", "cached"),
            ("gate", "ran"),
            ("publish", "ran"),
            ("deploy", "cached"),
        ],
    );
    assert!(out.contains("already published from this run"), "{out}");
    assert_eq!(sb.entries("models/digits").len(), 3, "no new version");

    // A stage whose artefact is gone runs again, and says why.
    let ledger: Value =
        serde_json::from_slice(&std::fs::read(sb.path().join("runs/.stages/digits.json")).unwrap())
            .unwrap();
    let run = ledger["stages"]["train"]["output"]["run"].as_str().unwrap();
    std::fs::remove_file(sb.path().join("runs").join(run).join("evaluation.json")).unwrap();
    let out = sb.run(RUN);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("evaluate: running") && stderr.contains("is gone"),
        "{stderr}"
    );

    // --from forces a stage and the ones after it.
    let out = sb.ok(&with(&["--from", "gate"]));
    expect(
        &out,
        &[
            ("check", "cached"),
            ("data", "cached"),
            ("train", "cached"),
            ("evaluate", "cached"),
            ("gate", "ran"),
            ("publish", "ran"),
            ("deploy", "ran"),
        ],
    );

    // Run tracking: both runs listed, their difference named, one removed; the ledger's
    // run gone, train runs again.
    let list = sb.ok(&[
        "runs",
        "list",
        "--model",
        "digits",
        "--sort",
        "test_accuracy",
    ]);
    assert_eq!(list.lines().count(), 3, "{list}");
    let runs = sb.entries("runs");
    // An evaluation is a run too, of kind eval, with the version it evaluated.
    let eval = sb.ok(&["eval", "digits@1", "--threads", "1"]);
    let folder = eval
        .lines()
        .find_map(|l| l.strip_prefix("run folder: "))
        .unwrap();
    let info: Value =
        serde_json::from_slice(&std::fs::read(sb.path().join(folder).join("run.json")).unwrap())
            .unwrap();
    assert_eq!(info["kind"], "eval");
    assert_eq!(info["evaluated"], "digits@1");
    assert!(
        info["metrics"]["test_accuracy"].as_f64().is_some(),
        "{info}"
    );
    assert!(
        sb.ok(&["runs", "list"])
            .lines()
            .any(|l| l.contains(" eval "))
    );
    sb.ok(&["runs", "rm", folder]);
    let compare = sb.ok(&["runs", "compare", &runs[0], &runs[1]]);
    assert!(
        compare.contains("train.optimizer.lr: 0.00") && compare.contains("test_accuracy"),
        "{compare}"
    );
    for run in &runs {
        sb.ok(&["runs", "rm", run]);
    }
    assert!(sb.entries("runs").is_empty());
    let out = sb.run(RUN);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("train: running") && stderr.contains("is gone"),
        "{stderr}"
    );
}

#[test]
fn deploy_tells_the_server_and_a_failing_gate_keeps_production_serving() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path().join("models")).unwrap();
    let server = Server::start_with(&sb, &["--log-requests"]);
    let spec = digits_spec(&sb, 0.5).replace("epochs = 20", "epochs = 3")
        + &format!("server = \"{}\"\n", server.base);
    sb.write("spec.toml", &spec);
    let run = |token: &str| {
        sb.command(RUN)
            .env("MODELFORGE_TOKEN", token)
            .output()
            .unwrap()
    };

    // The server wants its token for the repository API: a clear error, and the next run
    // only retries the deploy.
    let out = run("wrong");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("published, but the server at") && stderr.contains("401"),
        "{stderr}"
    );
    let out = run("s3cret");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("publish   cached"), "{stdout}");
    assert!(stdout.contains("told http://"), "{stdout}");
    let loads: Vec<String> = server
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("/v2/repository/models/digits/load"))
        .cloned()
        .collect();
    assert_eq!(loads.len(), 2, "{loads:?}");
    assert!(loads[1].contains("\"status\":200"), "{loads:?}");

    // A new version that must beat production by far more than it can: published without
    // the alias, exit 3, the server not told, and production still answers.
    sb.write(
        "spec.toml",
        spec.replace("lr = 1e-3", "lr = 2e-3").replace(
            "min = 0.5 }",
            "min = 0.5, beat = \"production\", margin = 0.5 }",
        ),
    );
    let out = run("s3cret");
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAILED: test_accuracy"), "{stdout}");
    assert!(stdout.contains("> production@1"), "{stdout}");
    assert!(stdout.contains("the server was not told"), "{stdout}");
    let aliases: Value = serde_json::from_slice(
        &std::fs::read(sb.path().join("models/digits/aliases.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(aliases["production"], 1);
    let (row, _) = crate::serving::first_row();
    let body = serde_json::json!({
        "inputs": [{ "name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row }]
    })
    .to_string();
    // The server polls the registry: version 2 comes in beside production, which stays.
    let start = std::time::Instant::now();
    while server.call("GET", "/v2/models/digits", None).1["versions"]
        != serde_json::json!(["1", "2"])
    {
        assert!(start.elapsed().as_secs() < 60, "version 2 never loaded");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (status, out) = server.call(
        "POST",
        "/v2/models/digits/versions/production/infer",
        Some(&body),
    );
    assert_eq!(
        (status, &out["model_version"]),
        (200, &Value::from("1")),
        "{out}"
    );
}

#[test]
fn bad_pipeline_input_is_a_clear_error_with_nothing_written() {
    let sb = Sandbox::new();
    let spec = digits_spec(&sb, 0.9).replace("epochs = 20", "epochs = 1");
    // A gate on a metric a classifier does not produce.
    sb.write(
        "spec.toml",
        spec.replace("metric = \"test_accuracy\"", "metric = \"test_rmse\""),
    );
    let out = sb.run(RUN);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gate metric \"test_rmse\" is not one a classification model produces")
            && stderr.contains("use one of test_accuracy, test_loss"),
        "{stderr}"
    );
    // An unknown stage.
    sb.write("spec.toml", &spec);
    let out = sb.run(&with(&["--from", "fit"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use one of check, data, train"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sb.entries("runs").is_empty() && sb.entries("models").is_empty());
    // A damaged ledger names itself and the fix.
    sb.write("runs/.stages/digits.json", "{ torn");
    let out = sb.run(RUN);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("delete it to run every stage again"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sb.entries("models").is_empty());
}

/// The digits search of `examples/digits/tune.toml` over the sandbox's copy of the data.
fn tune_spec(sb: &Sandbox) -> String {
    digits_spec(sb, 0.5);
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/digits/tune.toml"),
    )
    .unwrap();
    text.replace("../../data/tabular/digits.csv.gz", "data/digits.csv.gz")
}

fn study(sb: &Sandbox, runs: &str) -> Value {
    let path = sb.path().join(runs).join(".tune/digits-mlp.json");
    serde_json::from_slice(&std::fs::read(path).unwrap_or_default()).unwrap_or(Value::Null)
}

/// (trial, run id) of the trials a study has finished.
fn finished(study: &Value) -> Vec<(u64, String)> {
    study["trials"]
        .as_array()
        .map(|trials| {
            trials
                .iter()
                .filter(|t| t["status"] != "pending")
                .map(|t| {
                    (
                        t["index"].as_u64().unwrap(),
                        t["run_id"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn tune_stops_weak_trials_beats_the_default_and_resumes_after_a_kill() {
    let sb = Sandbox::new();
    sb.write("tune.toml", tune_spec(&sb));
    let tune = ["tune", "tune.toml", "--threads", "1"];

    // Killed once it has finished two trials; the restart does not redo them.
    let mut child = sb
        .command(&tune)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while finished(&study(&sb, "runs")).len() < 2 && child.try_wait().unwrap().is_none() {
        assert!(start.elapsed().as_secs() < 120, "no trial finished");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = finished(&study(&sb, "runs"));
    assert!(before.len() >= 2, "{before:?}");
    let out = sb.ok(&tune);
    assert!(
        out.contains(&format!("({} finished by an earlier search)", before.len())),
        "{out}"
    );
    let after = study(&sb, "runs");
    let all = finished(&after);
    assert_eq!(all.len(), 12, "{out}");
    for done in &before {
        assert!(all.contains(done), "trial {done:?} was redone: {all:?}");
    }

    // Weak trials were stopped at a rung, and show so in the run list.
    let pruned = sb.ok(&["runs", "list", "--status", "pruned"]);
    assert!(pruned.lines().count() >= 2, "{pruned}");
    // Trial 1 is the spec's own values: the best is at least as good on the ranking metric.
    let trials = after["trials"].as_array().unwrap();
    let default = trials[0]["value"].as_f64().unwrap();
    assert_eq!(trials[0]["status"], "completed");
    let best = trials
        .iter()
        .filter(|t| t["status"] == "completed")
        .map(|t| t["value"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert!(best >= default, "best {best} < default {default}");
    assert!(
        out.contains("published digits-mlp version 1, aliases production"),
        "{out}"
    );
    assert!(
        sb.path()
            .join("models/digits-mlp/1/manifest.json")
            .is_file()
    );

    // Two trials at once finish the same search.
    let out = sb.ok(&[
        "tune",
        "tune.toml",
        "--threads",
        "2",
        "--parallel",
        "2",
        "--runs",
        "runs2",
        "--no-publish",
    ]);
    assert!(out.contains("12 trials"), "{out}");
    assert_eq!(finished(&study(&sb, "runs2")).len(), 12);
}

#[test]
fn a_bad_search_space_is_refused_before_anything_trains() {
    let sb = Sandbox::new();
    let spec = tune_spec(&sb);
    for (from, to, message) in [
        (
            "\"train.optimizer.lr\" =",
            "\"train.optimiser.lr\" =",
            "train has no key \"optimiser\"",
        ),
        (
            "choice = [16, 32, 64, 128]",
            "choice = []",
            "choice is empty",
        ),
        (
            "int = [16, 128]",
            "int = [128, 16]",
            "int [128, 16] is empty",
        ),
        (
            "metric = \"val_accuracy\"",
            "metric = \"val_rmse\"",
            "is not one a classification model produces",
        ),
    ] {
        sb.write("tune.toml", spec.replace(from, to));
        let out = sb.run(&["tune", "tune.toml", "--threads", "1"]);
        assert_eq!(out.status.code(), Some(2), "{to}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{to}: {stderr}");
        assert!(sb.entries("runs").is_empty() && sb.entries("models").is_empty());
    }
    sb.write("plain.toml", digits_spec(&sb, 0.5));
    let out = sb.run(&["tune", "plain.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no [tune] section"));
}

/// Pixels of a PNG close to a colour.
fn pixels_near(png_file: &std::path::Path, colour: [u8; 3]) -> usize {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_file).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks_exact(step)
        .filter(|p| {
            p[..3]
                .iter()
                .zip(colour)
                .all(|(a, b)| (*a as i32 - b as i32).abs() <= 24)
        })
        .count()
}

#[test]
fn a_report_shows_the_curves_in_a_headless_browser() {
    let sb = Sandbox::new();
    let spec = digits_spec(&sb, 0.5)
        .replace("epochs = 20", "epochs = 4")
        .replace(
            "test_fraction = 0.2",
            "test_fraction = 0.2\nvalidation = 0.2",
        );
    sb.write("spec.toml", spec);
    sb.ok(RUN);
    let run = sb.entries("runs").remove(0);
    let out = sb.ok(&["report", &run]);
    assert!(out.contains("report.html"), "{out}");
    let dir = sb.path().join("runs").join(&run).join("report");
    let mut files = sb.entries(&format!("runs/{run}/report"));
    files.sort();
    assert_eq!(
        files,
        [
            "attribution-0.svg",
            "attribution-1.svg",
            "attribution-2.svg",
            "attribution-3.svg",
            "attribution-4.svg",
            "attribution-5.svg",
            "attribution-6.svg",
            "attribution-7.svg",
            "attribution-8.svg",
            "attribution-9.svg",
            "confusion.svg",
            "graph.svg",
            "loss.svg",
            "lr.svg",
            "metrics.svg",
            "report.html"
        ]
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 15, "every chart inlined");
    for text in [
        "validation",
        "val_accuracy",
        "confusion matrix",
        "precision",
        "Total params",
        "data fingerprint",
        "integrated gradients (32 steps, gauss-legendre) from the training mean",
    ] {
        assert!(html.contains(text), "{text} missing");
    }
    // A report of a run that does not exist: exit 2, nothing written.
    let missing = sb.run(&["report", "nope"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no run \"nope\""));

    if std::env::var("MODELFORGE_BROWSER").as_deref() == Ok("0") {
        eprintln!("MODELFORGE_BROWSER=0: the report was not opened in a browser");
        return;
    }
    let shot = sb.path().join("shot.png");
    let browser = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1320,1200",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", dir.join("report.html").display()))
        .output()
        .expect("chromium is missing: scripts/system-deps.sh browser installs it (MODELFORGE_BROWSER=0 skips this check)");
    let log = String::from_utf8_lossy(&browser.stderr);
    assert!(browser.status.success(), "{log}");
    // The page has no script: any console message is an error (a broken resource, say).
    assert!(!log.contains(":CONSOLE"), "console messages: {log}");
    assert!(!log.contains("Failed to load resource"), "{log}");
    // The train (blue) and validation (orange) curves are on the screen.
    let train = pixels_near(&shot, [0x1f, 0x77, 0xb4]);
    let validation = pixels_near(&shot, [0xff, 0x7f, 0x0e]);
    assert!(
        train > 500 && validation > 500,
        "train {train}, validation {validation} pixels"
    );
}
