//! Inference throughput of an ONNX graph through modelforge's ONNX path (tract, one thread),
//! the way the serving core calls it: the heap kept warm as `modelforge serve` keeps it, and
//! a plan for each batch size measured, as `serve --max-batch-size 256` makes them for 1
//! and 256.
//!
//!     cargo bench -p modelforge-onnx --bench throughput -- MODEL.onnx [SECONDS] [BATCH…]
//!
//! Prints one JSON line per batch size: samples per second and the median time per call.
//! `bench/onnx_throughput.sh` runs it beside onnxruntime on the same file.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use modelforge_onnx::{OnnxModel, Overrides};
use modelforge_serve::{Runnable, Values};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(file) = args.first().map(PathBuf::from) else {
        eprintln!("usage: throughput MODEL.onnx [SECONDS] [BATCH…]");
        std::process::exit(2);
    };
    let seconds: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let batches: Vec<usize> = match args.get(2..) {
        Some(rest) if !rest.is_empty() => rest
            .iter()
            .map(|b| b.parse().expect("a batch size"))
            .collect(),
        _ => vec![1, 256],
    };
    // As `modelforge serve` and `predict` do.
    modelforge_serve::heap::retain_freed_memory();
    let mut model =
        OnnxModel::load_for(&file, &Overrides::default(), &batches).unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(1);
        });
    let signature = model.signature().clone();
    for batch in batches {
        // Deterministic inputs in [0, 1).
        let inputs = || -> Vec<Values> {
            signature
                .inputs
                .iter()
                .map(|t| {
                    let n = t.len() * if signature.batchable { batch } else { 1 };
                    match t.datatype.as_str() {
                        "FP32" => Values::F32((0..n).map(|i| (i % 97) as f32 / 97.0).collect()),
                        other => Values::zeros(other, n).expect("a served datatype"),
                    }
                })
                .collect()
        };
        for _ in 0..3 {
            model.run(inputs(), batch).expect("warm-up run");
        }
        let mut times = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs_f64(seconds) {
            let x = inputs();
            let t = Instant::now();
            model.run(x, batch).expect("run");
            times.push(t.elapsed().as_secs_f64());
        }
        let total: f64 = times.iter().sum();
        times.sort_by(f64::total_cmp);
        println!(
            "{{\"engine\": \"modelforge-onnx\", \"batch\": {batch}, \"calls\": {}, \"samples_per_s\": {:.1}, \"median_ms\": {:.4}}}",
            times.len(),
            (times.len() * batch) as f64 / total,
            times[times.len() / 2] * 1e3
        );
    }
}
