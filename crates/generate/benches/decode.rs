//! Decoding speed at batch 1 with the key/value cache, for bench/lm_generate.sh: a model
//! section (TOML) with seeded random weights, a prompt of N byte tokens, M greedy tokens.
//!
//!   decode MODEL.toml --prompt-tokens N --tokens M --threads T [--batch B]
//!
//! Prints one line: ttft_ms=… decode_tokens_per_sec=… peak_rss_mib=… parameters=…
//! With `--batch B`, B sequences (prompts of N, N+1, … tokens, so each stands at its own
//! position) are stepped together, as the server's scheduler steps them, and the
//! tokens/s are all B sequences' together.

use modelforge_generate::{LanguageModel, Sampling};
use modelforge_model::Network;
use modelforge_model::burn::tensor::Device;
use modelforge_text::Tokenizer;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a whole number"))
}

/// The process's peak resident memory (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // The work runs on a thread of its own pool, as `modelforge generate` and the server
    // run it: from outside a pool, each parallel kernel would be handed over and waited for.
    rayon::ThreadPoolBuilder::new()
        .num_threads(arg(&args, "--threads", 1))
        .build()
        .expect("one thread pool")
        .install(|| run(&args));
}

fn run(args: &[String]) {
    let file = args
        .iter()
        .skip(1)
        .find(|a| a.ends_with(".toml"))
        .expect("a model section file");
    let (prompt_tokens, tokens) = (arg(args, "--prompt-tokens", 32), arg(args, "--tokens", 64));
    let text = std::fs::read_to_string(file).expect("the model file");
    let spec: modelforge_spec::ModelSpec = toml::from_str(&text).expect("a model section");
    let graph = modelforge_spec::graph::build(&spec).expect("a checked graph");
    let device = Device::flex();
    device.seed(1);
    let network = Network::from_graph(&graph, spec.input.get_ref(), &device);
    let model = LanguageModel::new(network, Tokenizer::bytes(), &device).expect("fits");
    // Printable bytes, one token each.
    let prompt: String = (0..prompt_tokens)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let greedy = Sampling {
        max_tokens: tokens,
        temperature: 0.0,
        ..Sampling::default()
    };
    // One short warm-up, then the measured generation.
    model
        .generate(
            &prompt[..4.min(prompt.len())],
            &Sampling {
                max_tokens: 2,
                ..greedy.clone()
            },
            &mut |_| {},
        )
        .expect("warm-up");
    let batch = arg(args, "--batch", 1);
    if batch > 1 {
        let mut sequences: Vec<_> = (0..batch)
            .map(|i| {
                let p: String = (0..prompt_tokens + i)
                    .map(|j| (b'a' + (j % 26) as u8) as char)
                    .collect();
                let mut s = model.start(&p, &greedy).expect("a prompt");
                model.prefill(&mut s, usize::MAX);
                s
            })
            .collect();
        let started = std::time::Instant::now();
        let mut rows: Vec<&mut modelforge_generate::Sequence> = sequences.iter_mut().collect();
        while rows.iter().any(|s| s.finish().is_none()) {
            model.step(&mut rows).expect("a step");
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "batch={batch} decode_tokens_per_sec={:.2} step_ms={:.3} peak_rss_mib={:.0}",
            (batch * tokens) as f64 / seconds,
            seconds * 1e3 / tokens as f64,
            peak_rss_mib()
        );
        return;
    }
    let done = model
        .generate(&prompt, &greedy, &mut |_| {})
        .expect("generation");
    assert_eq!(done.tokens, tokens);
    println!(
        "ttft_ms={:.1} decode_tokens_per_sec={:.2} peak_rss_mib={:.0} parameters={}",
        done.time_to_first_token.as_secs_f64() * 1e3,
        done.decode_tokens_per_second(),
        peak_rss_mib(),
        graph.parameters()
    );
}
