//! Training throughput of the reference MLP (784-128-128-10, Adam 1e-3) on real MNIST.
//!
//! `cargo bench -p modelforge-train --bench throughput -- --threads 2 --workers 2 --batch 64`
//! prints one line: `modelforge batch=64 threads=2 workers=2 samples_per_sec=…` (the
//! threads are shared by the data-parallel workers). The first epoch
//! warms up; the figure is the median over the next three epochs (training steps only,
//! no evaluation), so one noisy epoch on a shared machine does not decide it.
//! `bench/train_throughput.sh` runs it beside PyTorch and prints the ratios.

use std::path::Path;

use modelforge_spec::Spec;
use modelforge_train::{EpochReport, Progress, StepReport, TrainOptions};

/// The epoch-average rate at the last step of every epoch after the first.
#[derive(Default)]
struct Rates {
    current: f64,
    epochs: Vec<f64>,
}

impl Progress for Rates {
    fn step(&mut self, r: &StepReport) {
        self.current = r.samples_per_sec;
    }
    fn epoch(&mut self, r: &EpochReport) {
        if r.epoch > 0 {
            self.epochs.push(self.current);
        }
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let threads = arg("--threads", 1);
    let workers = arg("--workers", 1);
    let batch = arg("--batch", 64);
    let examples = arg("--examples", 30_000);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("thread pool");
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mnist/modelforge.toml");
    let text = std::fs::read_to_string(&example)
        .expect("example spec")
        .replace("epochs = 10", "epochs = 4")
        .replace("batch_size = 64", &format!("batch_size = {batch}"))
        .replace(
            "checkpoint = { every_epochs = 1, keep = 2 }",
            "checkpoint = { every_epochs = 0, keep = 1 }",
        )
        .replace(
            "seed = 42\n\n[train]",
            &format!("seed = 42\nlimit_train = {examples}\nlimit_test = 1000\n\n[train]"),
        );
    let spec = Spec::parse(&text, &example, example.parent().expect("folder")).expect("valid spec");
    let data = modelforge_data::prepare(&spec).expect("MNIST");
    let runs = tempfile::tempdir().expect("temp dir");
    let mut rates = Rates::default();
    modelforge_train::train(
        &spec,
        &data,
        TrainOptions {
            runs_dir: runs.path().to_path_buf(),
            threads,
            workers,
            distributed: modelforge_train::parallel::Distributed::from_spec(&Default::default()),
            device: "cpu".into(),
            resume: None,
            progress: &mut rates,
        },
    )
    .expect("training");
    rates.epochs.sort_by(f64::total_cmp);
    let median = rates.epochs[rates.epochs.len() / 2];
    println!(
        "modelforge batch={batch} threads={threads} workers={workers} samples_per_sec={median:.0}"
    );
}
