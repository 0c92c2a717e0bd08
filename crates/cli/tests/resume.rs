//! Determinism: the same seed and threads give the same run; a run killed with
//! SIGKILL and resumed ends with bit-identical weights.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::common::{Sandbox, mnist_spec, tensors};

const LAYERS: &str = "{ flatten = {} }, { dense = { units = 64 } }, { relu = {} }, { dropout = { rate = 0.2 } }, { dense = { units = 10 } }";

fn spec() -> String {
    mnist_spec(
        "resume",
        LAYERS,
        3000,
        200,
        "epochs = 4\nbatch_size = 16\noptimizer = { kind = \"adamw\", lr = 1e-3 }\n\
         schedule = { kind = \"cosine\", warmup_steps = 50 }\nclip_grad_norm = 1.0\n\
         checkpoint = { every_steps = 20, every_epochs = 1, keep = 2 }\nlog_every_steps = 10",
    )
}

fn only_run(sb: &Sandbox, runs: &str) -> PathBuf {
    let entries = sb.entries(runs);
    assert_eq!(entries.len(), 1, "{entries:?}");
    sb.path().join(runs).join(&entries[0])
}

/// A run's whole checkpoints (`step-…`, not the one being written), oldest first; none
/// while it has no checkpoint folder.
fn checkpoints(run: &std::path::Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(run.join("checkpoints")) else {
        return Vec::new();
    };
    let mut whole: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("step-")
        })
        .collect();
    whole.sort();
    whole
}

/// The weights of a run's newest checkpoint.
pub fn final_weights(run: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let last = checkpoints(run).pop().expect("a checkpoint");
    tensors(&last.join("weights.safetensors"))
}

/// Waits until the first run under `runs` (a training started by the test) has a whole
/// checkpoint; returns its folder.
pub fn first_checkpointed_run(runs: &std::path::Path) -> PathBuf {
    let start = Instant::now();
    loop {
        let run = std::fs::read_dir(runs).ok().and_then(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        });
        if let Some(run) = run.filter(|run| !checkpoints(run).is_empty()) {
            return run;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared under {}",
            runs.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn killed_and_resumed_runs_end_bit_identical() {
    let sb = Sandbox::new();
    killed_and_resumed_ends_bit_identical(&sb, &spec());
}

/// The same for the attention encoder of `examples/digits/attention.toml`, with dropout on
/// its attention weights, AdamW, a cosine schedule and checkpoints every 10 steps.
#[test]
fn a_killed_and_resumed_transformer_ends_bit_identical() {
    let sb = Sandbox::new();
    crate::common::digits_spec(&sb, 0.5);
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/digits/attention.toml"),
    )
    .unwrap()
    .replace("../../data/tabular/digits.csv.gz", "data/digits.csv.gz")
    .replace("causal = false,", "causal = false, dropout = 0.1,")
    .replace("epochs = 10", "epochs = 3")
    .replace(
        "optimizer = { kind = \"adam\", lr = 3e-3 }",
        "optimizer = { kind = \"adamw\", lr = 1e-3 }\n\
         schedule = { kind = \"cosine\", warmup_steps = 20 }\nclip_grad_norm = 1.0\n\
         checkpoint = { every_steps = 10, every_epochs = 1, keep = 2 }\nlog_every_steps = 5",
    );
    assert!(
        text.contains("dropout = 0.1") && text.contains("every_steps = 10"),
        "{text}"
    );
    killed_and_resumed_ends_bit_identical(&sb, &text);
}

/// Trains `spec` twice (same metrics and weights), then kills a third run at a random
/// moment after its first checkpoint and resumes it: its weights and log must equal the first.
pub fn killed_and_resumed_ends_bit_identical(sb: &Sandbox, spec: &str) {
    sb.write("spec.toml", spec);
    sb.ok(&["train", "spec.toml", "--threads", "1", "--runs", "a"]);
    sb.ok(&["train", "spec.toml", "--threads", "1", "--runs", "b"]);
    let (a, b) = (only_run(sb, "a"), only_run(sb, "b"));
    assert_eq!(
        std::fs::read(a.join("metrics.jsonl")).unwrap(),
        std::fs::read(b.join("metrics.jsonl")).unwrap(),
        "same seed and threads give the same metrics"
    );
    let reference = final_weights(&a);
    assert_eq!(reference, final_weights(&b));

    // Kill at a pseudo-random moment after the first checkpoint.
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let delay = Duration::from_millis(u64::from(nanos % 400));
    let mut child = sb
        .command(&["train", "spec.toml", "--threads", "1", "--runs", "c"])
        .spawn()
        .unwrap();
    first_checkpointed_run(&sb.path().join("c"));
    std::thread::sleep(delay);
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let c = only_run(sb, "c");
    let run_id = c.file_name().unwrap().to_string_lossy().into_owned();
    if status.success() {
        eprintln!("the run finished before the kill; resuming a finished run must still agree");
    }
    let resume = [
        "train",
        "spec.toml",
        "--threads",
        "1",
        "--runs",
        "c",
        "--resume",
        &run_id,
    ];
    let out = sb.ok(&resume);
    assert!(out.contains(&run_id), "{out}");
    assert_eq!(
        final_weights(&c),
        reference,
        "resumed weights differ (killed {delay:?} after the first checkpoint)"
    );
    let log = |dir: &std::path::Path| std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let (resumed, straight) = (log(&c), log(&a));
    let first_difference = resumed
        .lines()
        .zip(straight.lines())
        .find(|(x, y)| x != y)
        .map(|(x, y)| format!("resumed: {x}\nstraight: {y}"));
    assert_eq!(
        first_difference, None,
        "the resumed metrics log differs (killed {delay:?} after the first checkpoint)"
    );
    assert_eq!(resumed.lines().count(), straight.lines().count());

    // Resuming with a changed spec is refused.
    sb.write("spec.toml", spec.replace("lr = 1e-3", "lr = 2e-3"));
    let out = sb.run(&resume);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("trained from a different spec"));
}
