//! Integrated gradients on a native version, the way `modelforge explain` and the server
//! run them: explanations per second at each batch size, on the rayon pool's threads.
//!
//!     cargo bench -p modelforge-explain --bench integrated -- VERSION_DIR IMAGES.json THREADS [SECONDS] [STEPS] [BATCH…]
//!
//! VERSION_DIR holds a registry version (spec.toml, weights.safetensors); IMAGES.json a list
//! of samples (raw values). Prints one JSON line per batch size.
//! `bench/explain_throughput.sh` runs it beside Captum on the same weights and images.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use modelforge_explain::{BUDGET_BYTES, Explain, Setting};
use modelforge_model::Network;
use modelforge_model::burn::tensor::Device;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.len() < 3 {
        eprintln!("usage: integrated VERSION_DIR IMAGES.json THREADS [SECONDS] [STEPS] [BATCH…]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[0]);
    let images: Vec<Vec<f32>> =
        serde_json::from_slice(&std::fs::read(&args[1]).expect("images file"))
            .expect("a list of samples");
    let threads: usize = args[2].parse().expect("a thread count");
    let seconds: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let steps: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(64);
    let batches: Vec<usize> = match args.get(5..) {
        Some(rest) if !rest.is_empty() => rest
            .iter()
            .map(|b| b.parse().expect("a batch size"))
            .collect(),
        _ => vec![1, 32],
    };
    // On a thread of its own pool, as the command and the server run it.
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("the thread pool")
        .install(|| run(&dir, &images, seconds, steps, &batches));
}

/// Explanations per second at each batch size, one JSON line each.
fn run(dir: &std::path::Path, images: &[Vec<f32>], seconds: f64, steps: usize, batches: &[usize]) {
    let spec_path = dir.join("spec.toml");
    let spec = modelforge_spec::Spec::parse_stored(
        &std::fs::read_to_string(&spec_path).expect("spec.toml"),
        &spec_path,
    )
    .expect("a stored spec");
    let device = Device::flex();
    let network = Network::new(&spec, &device)
        .load_safetensors(&dir.join("weights.safetensors"), &device, false)
        .expect("the weights");
    let settings = Explain {
        steps,
        ..Explain::default()
    };
    let setting = Setting {
        device: &device,
        mean: None,
        budget_bytes: BUDGET_BYTES,
        classifies: true,
    };
    let threads = rayon::current_num_threads();
    for &batch in batches {
        let inputs: Vec<f32> = images
            .iter()
            .cycle()
            .take(batch)
            .flatten()
            .copied()
            .collect();
        for _ in 0..2 {
            modelforge_explain::explain(&network, &inputs, batch, &settings, &setting)
                .expect("warm-up");
        }
        let mut times = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs_f64(seconds) || times.len() < 3 {
            let t = Instant::now();
            modelforge_explain::explain(&network, &inputs, batch, &settings, &setting)
                .expect("explain");
            times.push(t.elapsed().as_secs_f64());
        }
        let total: f64 = times.iter().sum();
        times.sort_by(f64::total_cmp);
        println!(
            "{{\"batch\": {batch}, \"threads\": {threads}, \"explanations_per_s\": {:.3}, \"median_ms\": {:.3}}}",
            (times.len() * batch) as f64 / total,
            times[times.len() / 2] * 1e3
        );
    }
}
