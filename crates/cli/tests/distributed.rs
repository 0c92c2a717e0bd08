//! Training under `mpirun` (builds with the `mpi` feature): the same result as one process,
//! and no hang when a rank dies or stops.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Sandbox, tensors};

/// `mpirun -np N modelforge ARGS` in the sandbox (as root Open MPI needs its consent).
fn mpirun(sb: &Sandbox, ranks: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-np", &ranks.to_string(), "--oversubscribe"])
        .arg(env!("CARGO_BIN_EXE_modelforge"))
        .args(args)
        .current_dir(sb.path())
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("MODELFORGE_REGISTRY")
        .env_remove("MODELFORGE_RUNS");
    c
}

/// A 3-class tabular spec trained with SGD (linear in the gradient, so rounding stays small).
fn spec(epochs: usize) -> String {
    format!(
        r#"[model]
name = "iris"
input = {{ shape = [4] }}
output = {{ task = "classification", classes = 3 }}
layers = [{{ dense = {{ units = 16 }} }}, {{ tanh = {{}} }}, {{ dense = {{ units = 3 }} }}]
[data]
format = "csv"
train = {{ path = "{}" }}
normalize = "zscore"
test_fraction = 0.2
seed = 3
csv = {{ header = false, skip_rows = 1, label = -1 }}
[train]
epochs = {epochs}
batch_size = 24
seed = 3
optimizer = {{ kind = "sgd", lr = 0.05, momentum = 0.9 }}
"#,
        crate::common::data_dir().join("tabular/iris.csv").display()
    )
}

fn weights(dir: &Path) -> Vec<f32> {
    tensors(&dir.join("weights.safetensors"))
        .into_iter()
        .flat_map(|(_, bytes)| {
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn two_processes_match_one_and_only_rank_0_writes() {
    let sb = Sandbox::new();
    sb.write("spec.toml", spec(5));
    let out = mpirun(
        &sb,
        2,
        &["run", "--no-serve", "spec.toml", "--threads", "1"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("MPI: 2 ranks"), "{stderr}");
    assert_eq!(sb.entries("runs").len(), 1, "only rank 0 writes a run");
    assert!(sb.path().join("models/iris/1").is_dir());
    assert!(
        !sb.path().join("models/iris/2").exists(),
        "only rank 0 publishes"
    );
    sb.ok(&[
        "run",
        "--no-serve",
        "spec.toml",
        "--threads",
        "1",
        "--registry",
        "single",
    ]);
    let (two, one) = (
        weights(&sb.path().join("models/iris/1")),
        weights(&sb.path().join("single/iris/1")),
    );
    let scale = one.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = one
        .iter()
        .zip(&two)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst / scale <= 1e-5, "relative error {}", worst / scale);
}

/// The modelforge processes working in `dir`, oldest (lowest pid) first.
fn ranks_in(dir: &Path) -> Vec<u32> {
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_modelforge")).unwrap();
    let dir = std::fs::canonicalize(dir).unwrap();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe)
                && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c == dir)
        })
        .collect();
    pids.sort();
    pids
}

/// Starts a long job, does `act` to rank 1's process after 2 s, and returns the job's exit
/// status, its stderr and how long it took to end after the act.
fn disturb(signal: &str, timeout: &str) -> (std::process::ExitStatus, String, Duration) {
    let sb = Sandbox::new();
    sb.write("spec.toml", spec(100_000));
    let child = mpirun(
        &sb,
        2,
        &[
            "train",
            "spec.toml",
            "--threads",
            "1",
            "--collective-timeout",
            timeout,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Rank 1 is the second modelforge process started in this sandbox.
    let started = Instant::now();
    let rank1 = loop {
        let ours = ranks_in(sb.path());
        if ours.len() == 2 && started.elapsed() > Duration::from_secs(2) {
            break ours[1];
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "ranks never started: {ours:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        Command::new("kill")
            .args([signal, &rank1.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let acted = Instant::now();
    let out = child.wait_with_output().unwrap();
    let took = acted.elapsed();
    // A stopped process survives mpirun's end until killed.
    let _ = Command::new("kill")
        .args(["-KILL", &rank1.to_string()])
        .status();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        took,
    )
}

#[test]
fn a_killed_rank_ends_the_job_within_10_seconds() {
    let (status, stderr, took) = disturb("-KILL", "300");
    assert!(!status.success(), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}: {stderr}");
    assert!(stderr.contains("rank 1"), "{stderr}");
}

#[test]
fn a_stopped_rank_is_caught_by_the_watchdog() {
    let (status, stderr, took) = disturb("-STOP", "3");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("timed out after 3 s waiting for its peers"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}: {stderr}");
}

#[test]
fn local_workers_under_mpirun_are_refused_on_every_rank() {
    let sb = Sandbox::new();
    sb.write("spec.toml", spec(1));
    let out = mpirun(&sb, 2, &["train", "spec.toml", "--workers", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--workers 2 under mpirun: use one worker per process"),
        "{stderr}"
    );
    assert!(sb.entries("runs").is_empty());
}
