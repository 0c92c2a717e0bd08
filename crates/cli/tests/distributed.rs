//! Training under `mpirun` (builds with the `mpi` feature): the same result as one process,
//! and no hang when a rank dies or stops.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Sandbox, assert_matches_one_process};

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

/// A 3-class iris MLP trained with SGD (linear in the gradient, so rounding stays small).
fn spec(epochs: usize) -> String {
    sgd_spec("iris", "iris.csv", 4, 3, &[16], epochs, 24)
        .replace("label = -1", "skip_rows = 1, label = -1")
}

/// A tabular MLP spec: `hidden` tanh layers on a bundled CSV, SGD with momentum.
fn sgd_spec(
    name: &str,
    file: &str,
    features: usize,
    classes: usize,
    hidden: &[usize],
    epochs: usize,
    batch: usize,
) -> String {
    let layers: String = hidden
        .iter()
        .map(|units| format!("{{ dense = {{ units = {units} }} }}, {{ tanh = {{}} }}, "))
        .collect();
    format!(
        r#"[model]
name = "{name}"
input = {{ shape = [{features}] }}
output = {{ task = "classification", classes = {classes} }}
layers = [{layers}{{ dense = {{ units = {classes} }} }}]
[data]
format = "csv"
train = {{ path = "{}" }}
normalize = "zscore"
test_fraction = 0.2
seed = 3
csv = {{ header = false, label = -1 }}
[train]
epochs = {epochs}
batch_size = {batch}
seed = 3
optimizer = {{ kind = "sgd", lr = 0.02, momentum = 0.9 }}
"#,
        crate::common::data_dir()
            .join("tabular")
            .join(file)
            .display()
    )
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
    assert_matches_one_process(&sb, "iris");
}

/// Dropout masks come from each rank's own stream, not from the engine's shared generator:
/// two local workers and two MPI processes draw the same masks, and a second local run
/// repeats them bit for bit.
#[test]
fn dropout_draws_the_same_masks_in_local_workers_and_in_mpi_processes() {
    let sb = Sandbox::new();
    let spec = spec(3).replace(
        "{ tanh = {} }, ",
        "{ tanh = {} }, { dropout = { rate = 0.3 } }, ",
    );
    assert!(spec.contains("dropout"), "{spec}");
    sb.write("spec.toml", spec);
    let out = mpirun(
        &sb,
        2,
        &["run", "--no-serve", "spec.toml", "--threads", "1"],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for registry in ["local", "again"] {
        crate::common::run_into(&sb, registry, 2);
    }
    let weights =
        |registry: &str| crate::common::weights(&sb.path().join(registry).join("iris").join("1"));
    let (mpi, local) = (weights("models"), weights("local"));
    assert_eq!(local, weights("again"), "the same masks again");
    let gap = crate::common::relative_gap(&mpi, &local);
    assert!(gap <= 1e-5, "relative difference {gap}");
    // Without the same masks the weights part at once: one worker draws other ones.
    crate::common::run_into(&sb, "single", 1);
    let apart = crate::common::relative_gap(&weights("single"), &local);
    assert!(apart > 1e-3, "one worker's masks differ: {apart}");
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
fn local_workers_inside_processes_match_one_process() {
    let sb = Sandbox::new();
    sb.write("spec.toml", spec(5));
    // Two processes of two worker threads: a world of four ranks.
    let out = mpirun(
        &sb,
        2,
        &[
            "run",
            "--no-serve",
            "spec.toml",
            "--threads",
            "2",
            "--workers",
            "2",
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("MPI: 2 processes × 2 workers = 4 ranks"),
        "{stderr}"
    );
    assert_eq!(sb.entries("runs").len(), 1, "only rank 0 writes a run");
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            sb.path()
                .join("runs")
                .join(&sb.entries("runs")[0])
                .join("run.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(info["environment"]["ranks"], 4);
    assert_matches_one_process(&sb, "iris");
}

/// Hosts with their own addresses: network namespaces `<tag>h0…` on one bridge (in its own
/// namespace `<tag>sw`), with veth links of a large MTU so that headers stay negligible.
/// Dropping it kills what runs inside and removes every namespace, also after a failure.
struct Hosts {
    tag: String,
    count: usize,
}

/// Runs `ip ARGS`, panicking with its message when it fails.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {} — the netns test needs root and iproute2",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl Hosts {
    fn new(count: usize) -> Hosts {
        let hosts = Hosts {
            tag: format!("mf{}x", std::process::id()),
            count,
        };
        let sw = hosts.ns("sw");
        for name in (0..count)
            .map(|i| hosts.ns(&format!("h{i}")))
            .chain([sw.clone()])
        {
            ip(&["netns", "add", &name]);
            ip(&["-n", &name, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for i in 0..count {
            let (host, port) = (hosts.ns(&format!("h{i}")), format!("p{i}"));
            ip(&[
                "link", "add", "eth0", "netns", &host, "mtu", "65000", "type", "veth", "peer",
                "name", &port, "netns", &sw, "mtu", "65000",
            ]);
            ip(&["-n", &sw, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &sw, "link", "set", &port, "up"]);
            ip(&[
                "-n",
                &host,
                "addr",
                "add",
                &format!("{}/24", Hosts::address(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &host, "link", "set", "eth0", "up"]);
        }
        hosts
    }

    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.tag)
    }

    fn address(i: usize) -> String {
        format!("10.77.0.{}", i + 1)
    }

    /// Bytes each host has sent on its link.
    fn sent(&self) -> Vec<u64> {
        (0..self.count)
            .map(|i| {
                let stats = ip(&[
                    "-n",
                    &self.ns(&format!("h{i}")),
                    "-s",
                    "link",
                    "show",
                    "dev",
                    "eth0",
                ]);
                let mut lines = stats
                    .lines()
                    .skip_while(|l| !l.trim_start().starts_with("TX:"));
                lines.next();
                lines
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    /// mpirun's remote-shell agent: "connects" to a host by entering its namespace.
    fn agent(&self, sb: &Sandbox) -> String {
        let cases: String = (0..self.count)
            .map(|i| {
                format!(
                    "  {}) ns={} ;;\n",
                    Hosts::address(i),
                    self.ns(&format!("h{i}"))
                )
            })
            .collect();
        let script = format!(
            "#!/bin/sh\nhost=$1; shift\ncase $host in\n{cases}  *) echo \"unknown host $host\" >&2; exit 1 ;;\nesac\nexec ip netns exec \"$ns\" /bin/sh -c \"$*\"\n"
        );
        let path = sb.write("agent.sh", script);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let names = (0..self.count)
            .map(|i| self.ns(&format!("h{i}")))
            .chain([self.ns("sw")]);
        for name in names {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &name]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

/// A wide MLP (1.1 M parameters) on the digits, so each all-reduce moves megabytes.
fn wide_spec(epochs: usize) -> String {
    sgd_spec("wide", "digits.csv.gz", 64, 10, &[1024, 1024], epochs, 256)
}

#[test]
fn three_hosts_over_tcp_match_one_process_with_ring_traffic() {
    let sb = Sandbox::new();
    let hosts = Hosts::new(3);
    let agent = hosts.agent(&sb);
    let addresses: Vec<String> = (0..3).map(Hosts::address).collect();
    // Trains on the three hosts (mpirun on the first) and returns the bytes each sent.
    let train = |epochs: usize, registry: &str| -> Vec<u64> {
        sb.write("spec.toml", wide_spec(epochs));
        let before = hosts.sent();
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &hosts.ns("h0"),
                "mpirun",
                "-np",
                "3",
                "--host",
            ])
            .arg(addresses.join(","))
            .args(["--mca", "plm_rsh_agent", &agent])
            .args(["--mca", "btl", "tcp,self"])
            .args(["--mca", "btl_tcp_if_include", "10.77.0.0/24"])
            .args(["--mca", "oob_tcp_if_include", "10.77.0.0/24"])
            // Ring all-reduce for the non-blocking collectives (docs/distributed.md).
            .args(["--mca", "coll_libnbc_iallreduce_algorithm", "1"])
            .arg(env!("CARGO_BIN_EXE_modelforge"))
            .args([
                "run",
                "--no-serve",
                "spec.toml",
                "--threads",
                "1",
                "--registry",
                registry,
            ])
            .current_dir(sb.path())
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("MPI: 3 ranks"), "{stderr}");
        let after = hosts.sent();
        after.iter().zip(&before).map(|(a, b)| a - b).collect()
    };
    let short = train(1, "short");
    let long = train(3, "models");

    assert_matches_one_process(&sb, "wide");

    // Per all-reduce (two more epochs = 12 more steps; start-up traffic cancels out), each
    // rank sends what a ring needs: 2(N-1)/N of the gradient bytes.
    let gradient_bytes = 4.0 * (64 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10) as f64;
    let ring = 2.0 * 2.0 / 3.0 * gradient_bytes;
    for (rank, (l, s)) in long.iter().zip(&short).enumerate() {
        let per_step = (l - s) as f64 / 12.0;
        eprintln!(
            "rank {rank}: {per_step:.0} bytes per all-reduce, {:.4} × ring",
            per_step / ring
        );
        assert!(
            per_step <= 1.05 * ring && per_step >= 0.95 * ring,
            "rank {rank} sent {per_step:.0} bytes per all-reduce; a ring sends {ring:.0}"
        );
    }
}

#[test]
fn ranks_with_different_models_stop_before_the_first_step() {
    let sb = Sandbox::new();
    sb.write("a.toml", spec(1));
    sb.write("b.toml", spec(1).replace("units = 16", "units = 17"));
    let bin = env!("CARGO_BIN_EXE_modelforge");
    // One rank per spec (MPMD: `mpirun -np 1 A : -np 1 B`).
    let out = mpirun(&sb, 1, &["train", "a.toml", "--threads", "1"])
        .args([":", "-np", "1", bin, "train", "b.toml", "--threads", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("rank 1 has spec") && stderr.contains("but rank 0 has spec"),
        "{stderr}"
    );
    assert!(
        stderr.contains("start every rank with the same spec, data and modelforge"),
        "{stderr}"
    );
}
