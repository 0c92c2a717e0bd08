//! A sandbox folder and helpers to run the binary in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's data folder.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data")
        .canonicalize()
        .expect("data folder")
}

/// The arguments that train and publish a new version of `spec.toml` on one thread.
pub const RETRAIN: &[&str] = &[
    "run",
    "--no-serve",
    "spec.toml",
    "--threads",
    "1",
    "--from",
    "train",
];

/// A temporary working folder for one test.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file (text or bytes) relative to the sandbox.
    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// The binary, run in the sandbox with one thread.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_modelforge"));
        c.args(args)
            .current_dir(self.path())
            .env_remove("MODELFORGE_REGISTRY")
            .env_remove("MODELFORGE_RUNS");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("binary runs")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Trains and publishes a new version of `spec.toml` (`run --from train`, one thread).
    pub fn retrain(&self) -> String {
        self.ok(RETRAIN)
    }

    /// Entries of a sandbox folder (empty when it does not exist).
    pub fn entries(&self, folder: &str) -> Vec<String> {
        match std::fs::read_dir(self.path().join(folder)) {
            // Hidden entries (the stage ledger `runs/.stages`) are not runs or versions.
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| !name.starts_with('.'))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// A spec for a small MLP on a CSV file; `extra` is appended to `[train]`.
pub fn csv_spec(csv: &str, features: usize, classes: usize, train_extra: &str) -> String {
    format!(
        r#"[model]
name = "small"
input = {{ name = "x", shape = [{features}] }}
output = {{ task = "classification", classes = {classes} }}
layers = [
  {{ dense = {{ units = 16 }} }},
  {{ relu = {{}} }},
  {{ dense = {{ units = {classes} }} }},
]

[data]
format = "csv"
train = {{ path = "{csv}" }}
test_fraction = 0.25
normalize = "zscore"
csv = {{ header = false, label = -1 }}

[train]
epochs = 5
batch_size = 16
optimizer = {{ kind = "adam", lr = 0.01 }}
{train_extra}
"#
    )
}

/// A spec on the first `train` and `test` MNIST examples; `layers` and `train_extra` vary.
pub fn mnist_spec(
    name: &str,
    layers: &str,
    limit_train: usize,
    limit_test: usize,
    train_extra: &str,
) -> String {
    let d = data_dir().join("mnist");
    let d = d.display();
    format!(
        r#"[model]
name = "{name}"
input = {{ name = "image", shape = [1, 28, 28] }}
output = {{ name = "logits", task = "classification", classes = 10 }}
layers = [{layers}]

[data]
format = "idx"
train = {{ images = "{d}/train-images-idx3-ubyte.gz", labels = "{d}/train-labels-idx1-ubyte.gz" }}
test = {{ images = "{d}/t10k-images-idx3-ubyte.gz", labels = "{d}/t10k-labels-idx1-ubyte.gz" }}
normalize = "scale"
limit_train = {limit_train}
limit_test = {limit_test}

[train]
seed = 7
{train_extra}
"#
    )
}

/// The MLP layers of the reference model.
pub const MLP: &str = "{ flatten = {} }, { dense = { units = 128 } }, { relu = {} }, { dense = { units = 128 } }, { relu = {} }, { dense = { units = 10 } }";

/// Tensor bytes of a safetensors file by name (metadata ignored).
pub fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().to_vec()))
        .collect();
    out.sort();
    out
}

/// The digits spec; its data path is relative to the spec file (copied into the sandbox).
pub fn digits_spec(sb: &Sandbox, gate_min: f64) -> String {
    std::fs::create_dir_all(sb.path().join("data")).unwrap();
    std::fs::copy(
        data_dir().join("tabular/digits.csv.gz"),
        sb.path().join("data/digits.csv.gz"),
    )
    .unwrap();
    let csv = std::path::Path::new("data/digits.csv.gz");
    format!(
        r#"[model]
name = "digits"
input = {{ name = "pixels", shape = [64] }}
output = {{ name = "logits", task = "classification", classes = 10 }}
layers = [{{ dense = {{ units = 64 }} }}, {{ relu = {{}} }}, {{ dense = {{ units = 10 }} }}]

[data]
format = "csv"
train = {{ path = "{}" }}
test_fraction = 0.2
normalize = "zscore"
csv = {{ header = false, label = -1 }}

[train]
epochs = 20
batch_size = 32
optimizer = {{ kind = "adam", lr = 1e-3 }}

[deploy]
aliases = ["production"]
gate = {{ metric = "test_accuracy", min = {gate_min} }}
"#,
        csv.display()
    )
}

/// The digits spec trained for 2 epochs instead of 20: enough for tests that need a model,
/// not an accurate one.
pub fn quick_digits_spec(sb: &Sandbox, gate_min: f64) -> String {
    digits_spec(sb, gate_min).replace("epochs = 20", "epochs = 2")
}

/// The weights of a version folder, every tensor's f32 values in file order.
pub fn weights(dir: &Path) -> Vec<f32> {
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

/// Trains `spec.toml` again in one process (registry `single`) and asserts that the
/// parallel job's published weights (`models/NAME/1`) match it to 1e-5 relative.
pub fn assert_matches_one_process(sb: &Sandbox, name: &str) {
    run_into(sb, "single", 1);
    let (parallel, one) = (
        weights(&sb.path().join("models").join(name).join("1")),
        weights(&sb.path().join("single").join(name).join("1")),
    );
    let gap = relative_gap(&parallel, &one);
    assert!(gap <= 1e-5, "relative error {gap}");
}

/// Runs `spec.toml` again on one thread with `workers` local workers, publishing into the
/// registry folder `registry`.
pub fn run_into(sb: &Sandbox, registry: &str, workers: usize) {
    let workers = workers.to_string();
    sb.ok(&[
        "run",
        "--no-serve",
        "spec.toml",
        "--threads",
        "1",
        "--workers",
        &workers,
        "--registry",
        registry,
        "--force",
    ]);
}

/// The largest difference between two sets of weights, over the largest magnitude of `b`.
pub fn relative_gap(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    worst / scale
}

/// The venv python with the packages given (made by `scripts/python-env.sh`).
pub fn python(packages: &[&str]) -> String {
    python_in(".venv", packages)
}

/// The python of venv `venv` (a folder at the repository root) with the packages given.
pub fn python_in(venv: &str, packages: &[&str]) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let env = std::process::Command::new(root.join("scripts/python-env.sh"))
        .args(packages)
        .env("VENV", venv)
        .output()
        .unwrap();
    assert!(
        env.status.success(),
        "{}",
        String::from_utf8_lossy(&env.stderr)
    );
    String::from_utf8(env.stdout).unwrap().trim().to_string()
}

/// Runs a client script of `tests/clients/` with the venv python; returns the JSON line it
/// prints.
pub fn client_report(python: &str, script: &str, args: &[&str]) -> serde_json::Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(python)
        .arg(root.join("tests/clients").join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
