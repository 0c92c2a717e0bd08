//! Data-parallel local workers: the same parameters as one worker with the whole batch.
//!
//! SGD with momentum: its update is linear in the gradient, so rounding differences stay
//! rounding-sized. (Adam divides by the gradient's magnitude, which turns a 1e-9 gradient
//! of either sign into a full step: any engine-level rounding difference, such as a
//! reduction split differently over threads, shows up there, with or without workers.)

use std::path::Path;
use std::time::Duration;

use modelforge_spec::Spec;
use modelforge_train::parallel::Distributed;
use modelforge_train::{Silent, TrainError, TrainOptions, Trained, train};

/// A separable 3-class problem of `n` rows and 6 features, as CSV.
fn write_data(dir: &Path, n: usize) {
    let mut text = String::new();
    let mut x = 0x9e37_79b9u64;
    for i in 0..n {
        let class = i % 3;
        let mut row = Vec::new();
        for j in 0..6 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = (x % 1000) as f64 / 1000.0 - 0.5;
            let centre = if j % 3 == class { 1.5 } else { 0.0 };
            row.push(format!("{:.4}", centre + noise));
        }
        row.push(class.to_string());
        text += &(row.join(",") + "\n");
    }
    std::fs::write(dir.join("data.csv"), text).unwrap();
}

fn spec(dir: &Path, extra: &str) -> Spec {
    let text = format!(
        r#"
[model]
name = "par"
input = {{ name = "x", shape = [6] }}
output = {{ name = "y", task = "classification", classes = 3 }}
layers = [{{ dense = {{ units = 16 }} }}, {{ tanh = {{}} }}, {{ dense = {{ units = 3 }} }}]

[data]
format = "csv"
train = {{ path = "data.csv" }}
test_fraction = 0.25
csv = {{ header = false, label = -1 }}
normalize = "zscore"

[train]
epochs = 2
batch_size = 12
seed = 5
optimizer = {{ kind = "sgd", lr = 0.05, momentum = 0.9 }}
{extra}
"#
    );
    std::fs::write(dir.join("spec.toml"), text).unwrap();
    Spec::load(&dir.join("spec.toml")).unwrap()
}

fn run(
    spec: &Spec,
    dir: &Path,
    workers: usize,
    resume: Option<String>,
) -> Result<Trained, TrainError> {
    let data = modelforge_data::prepare(spec).unwrap();
    train(
        spec,
        &data,
        TrainOptions {
            runs_dir: dir.join("runs"),
            threads: workers,
            workers,
            distributed: Distributed {
                bucket_floats: 40,
                timeout: Duration::from_secs(60),
            },
            device: "cpu".into(),
            resume,
            progress: &mut Silent,
        },
    )
}

fn weights(t: &Trained) -> Vec<f32> {
    t.network
        .named_tensors()
        .into_iter()
        .flat_map(|t| t.values)
        .collect()
}

/// Largest |a - b| relative to the largest |a|.
fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let worst = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs() as f64));
    worst / scale
}

#[test]
fn workers_match_one_worker_with_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    // 72 train rows: 6 batches of 12 per epoch; 3 workers take 4 rows each.
    write_data(dir.path(), 96);
    let spec = spec(dir.path(), "");
    let one = run(&spec, dir.path(), 1, None).unwrap();
    for workers in [2, 3] {
        let many = run(&spec, dir.path(), workers, None).unwrap();
        let error = relative_error(&weights(&one), &weights(&many));
        assert!(error <= 1e-5, "{workers} workers: relative error {error}");
        assert_eq!(
            one.final_metrics["accuracy"], many.final_metrics["accuracy"],
            "{workers} workers"
        );
    }
}

#[test]
fn a_batch_that_does_not_divide_leaves_no_row_out() {
    let dir = tempfile::tempdir().unwrap();
    // 75 train rows with batch 12: the last batch has 3 rows for 2 or 4 workers (one idle).
    write_data(dir.path(), 100);
    let spec = spec(dir.path(), "");
    let one = run(&spec, dir.path(), 1, None).unwrap();
    for workers in [2, 4] {
        let many = run(&spec, dir.path(), workers, None).unwrap();
        let error = relative_error(&weights(&one), &weights(&many));
        assert!(error <= 1e-5, "{workers} workers: relative error {error}");
        let (a, b) = (one.final_metrics["loss"], many.final_metrics["loss"]);
        assert!(
            (a - b).abs() <= 1e-6 * a,
            "{workers} workers: loss {a} vs {b}"
        );
    }
}

#[test]
fn a_run_checkpointed_with_two_workers_resumes_with_one_or_three() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path(), 96);
    // Checkpoints every 4 steps: step 4 is mid-epoch (6 batches per epoch).
    let spec = spec(
        dir.path(),
        "checkpoint = { every_steps = 4, every_epochs = 0, keep = 5 }",
    );
    let whole = run(&spec, dir.path(), 1, None).unwrap();
    for resumed_with in [1, 3] {
        let first = run(&spec, dir.path(), 2, None).unwrap();
        // Back to step 4, as if the job had stopped there.
        let checkpoints = first.run_dir.join("checkpoints");
        for entry in std::fs::read_dir(&checkpoints).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() != "step-000000004" {
                std::fs::remove_dir_all(path).unwrap();
            }
        }
        let resumed = run(&spec, dir.path(), resumed_with, Some(first.run_id.clone())).unwrap();
        let error = relative_error(&weights(&whole), &weights(&resumed));
        assert!(
            error <= 1e-5,
            "resumed with {resumed_with}: relative error {error}"
        );
    }
}
