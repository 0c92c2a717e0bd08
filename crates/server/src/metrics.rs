//! `GET /metrics` in the Prometheus text format.

use std::fmt::Write as _;

use modelforge_serve::{GenerationStatistics, Histogram, Statistics};

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    for (bound, count) in h.bounds.iter().zip(&h.counts) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// Renders per-model, per-version counters and histograms.
pub fn render(stats: &[(String, u64, Statistics)]) -> String {
    let mut out = String::new();
    let families: [(&str, &str, &str); 5] = [
        (
            "modelforge_requests_total",
            "counter",
            "Inference requests by outcome.",
        ),
        (
            "modelforge_executions_total",
            "counter",
            "Compute calls (batches).",
        ),
        (
            "modelforge_request_duration_seconds",
            "histogram",
            "Request latency: queue and compute.",
        ),
        (
            "modelforge_queue_duration_seconds",
            "histogram",
            "Time requests waited to be batched.",
        ),
        (
            "modelforge_batch_size",
            "histogram",
            "Samples per compute call.",
        ),
    ];
    for (name, kind, help) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (model, version, s) in stats {
            let labels = format!("model=\"{model}\",version=\"{version}\"");
            match name {
                "modelforge_requests_total" => {
                    let _ = writeln!(out, "{name}{{{labels},outcome=\"success\"}} {}", s.success);
                    let _ = writeln!(out, "{name}{{{labels},outcome=\"failure\"}} {}", s.failure);
                }
                "modelforge_executions_total" => {
                    let _ = writeln!(out, "{name}{{{labels}}} {}", s.executions);
                }
                "modelforge_request_duration_seconds" => {
                    histogram(&mut out, name, &labels, &s.latency)
                }
                "modelforge_queue_duration_seconds" => {
                    histogram(&mut out, name, &labels, &s.queue_time)
                }
                _ => histogram(&mut out, name, &labels, &s.batch_size),
            }
        }
    }
    generation(&mut out, stats);
    explanations(&mut out, stats);
    out
}

/// The families of explanation requests, apart from inference: requests by outcome,
/// samples explained and latency.
fn explanations(out: &mut String, stats: &[(String, u64, Statistics)]) {
    let name = "modelforge_explanations_total";
    let _ = writeln!(
        out,
        "# HELP {name} Explanation requests by outcome.\n# TYPE {name} counter"
    );
    for (m, v, s) in stats {
        let e = &s.explanations;
        let labels = format!("model=\"{m}\",version=\"{v}\"");
        let _ = writeln!(out, "{name}{{{labels},outcome=\"success\"}} {}", e.success);
        let _ = writeln!(out, "{name}{{{labels},outcome=\"failure\"}} {}", e.failure);
    }
    let name = "modelforge_explained_samples_total";
    let _ = writeln!(
        out,
        "# HELP {name} Samples in answered explanation requests.\n# TYPE {name} counter"
    );
    for (m, v, s) in stats {
        let labels = format!("model=\"{m}\",version=\"{v}\"");
        let _ = writeln!(out, "{name}{{{labels}}} {}", s.explanations.samples);
    }
    let name = "modelforge_explanation_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Explanation latency: queue and compute.\n# TYPE {name} histogram"
    );
    for (m, v, s) in stats {
        let labels = format!("model=\"{m}\",version=\"{v}\"");
        histogram(out, name, &labels, &s.explanations.latency);
    }
}

/// The families of generating versions: tokens, sequences, cache, cancellations, time to
/// first token and time per output token.
fn generation(out: &mut String, stats: &[(String, u64, Statistics)]) {
    let generating: Vec<_> = stats
        .iter()
        .filter_map(|(m, v, s)| {
            s.generation
                .as_ref()
                .map(|g| (format!("model=\"{m}\",version=\"{v}\""), g))
        })
        .collect();
    if generating.is_empty() {
        return;
    }
    type Read = fn(&GenerationStatistics) -> String;
    let scalars: [(&str, &str, &str, Read); 6] = [
        (
            "modelforge_prompt_tokens_total",
            "counter",
            "Prompt tokens of admitted generations.",
            |g| g.prompt_tokens.to_string(),
        ),
        (
            "modelforge_generated_tokens_total",
            "counter",
            "Tokens generated.",
            |g| g.generated_tokens.to_string(),
        ),
        (
            "modelforge_generations_cancelled_total",
            "counter",
            "Generations whose client left before the end.",
            |g| g.cancelled.to_string(),
        ),
        (
            "modelforge_sequences_running",
            "gauge",
            "Sequences generating now.",
            |g| g.running.to_string(),
        ),
        (
            "modelforge_sequences_waiting",
            "gauge",
            "Generation requests waiting for room.",
            |g| g.waiting.to_string(),
        ),
        (
            "modelforge_kv_cache_bytes",
            "gauge",
            "Key/value cache the running sequences reserve.",
            |g| g.cache_bytes.to_string(),
        ),
    ];
    for (name, kind, help, read) in scalars {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, g) in &generating {
            let _ = writeln!(out, "{name}{{{labels}}} {}", read(g));
        }
    }
    type Pick = fn(&GenerationStatistics) -> &Histogram;
    let histograms: [(&str, &str, Pick); 2] = [
        (
            "modelforge_time_to_first_token_seconds",
            "Submission to the first generated token.",
            |g| &g.time_to_first_token,
        ),
        (
            "modelforge_time_per_output_token_seconds",
            "Time per generated token after the first.",
            |g| &g.time_per_output_token,
        ),
    ];
    for (name, help, pick) in histograms {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (labels, g) in &generating {
            histogram(out, name, labels, pick(g));
        }
    }
}

/// The family of versions refused because no trusted key signed them, per model (every
/// model, with 0 where none was, once the server trusts keys).
pub fn untrusted(counts: &std::collections::BTreeMap<String, u64>, models: &[String]) -> String {
    let name = "modelforge_untrusted_versions_total";
    let mut out = format!(
        "# HELP {name} Versions refused: unsigned, signed by an untrusted key, or changed since signing.\n# TYPE {name} counter\n"
    );
    for model in models {
        let n = counts.get(model).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}{{model=\"{model}\"}} {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_versions_are_counted_per_model() {
        let counts = std::collections::BTreeMap::from([("m".to_string(), 2)]);
        let text = untrusted(&counts, &["m".into(), "n".into()]);
        assert!(text.contains("# TYPE modelforge_untrusted_versions_total counter"));
        assert!(text.contains("modelforge_untrusted_versions_total{model=\"m\"} 2"));
        assert!(text.contains("modelforge_untrusted_versions_total{model=\"n\"} 0"));
    }

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let mut s = Statistics {
            success: 3,
            ..Default::default()
        };
        s.batch_size.observe(2.0);
        let text = render(&[("m".into(), 1, s)]);
        assert!(text.contains(
            "modelforge_requests_total{model=\"m\",version=\"1\",outcome=\"success\"} 3"
        ));
        assert!(
            text.contains("modelforge_batch_size_bucket{model=\"m\",version=\"1\",le=\"1\"} 0")
        );
        assert!(
            text.contains("modelforge_batch_size_bucket{model=\"m\",version=\"1\",le=\"2\"} 1")
        );
        assert!(text.contains("modelforge_batch_size_count{model=\"m\",version=\"1\"} 1"));
        assert!(text.contains("# TYPE modelforge_request_duration_seconds histogram"));
        assert!(!text.contains("modelforge_generated_tokens_total"));
        assert!(text.contains(
            "modelforge_explanations_total{model=\"m\",version=\"1\",outcome=\"failure\"} 0"
        ));
    }

    #[test]
    fn explanations_are_counted_apart_from_inference() {
        let mut s = Statistics::default();
        s.explanations.success = 2;
        s.explanations.samples = 5;
        s.explanations.latency.observe(0.02);
        let text = render(&[("m".into(), 3, s)]);
        for line in [
            "modelforge_requests_total{model=\"m\",version=\"3\",outcome=\"success\"} 0",
            "modelforge_explanations_total{model=\"m\",version=\"3\",outcome=\"success\"} 2",
            "modelforge_explained_samples_total{model=\"m\",version=\"3\"} 5",
            "modelforge_explanation_duration_seconds_bucket{model=\"m\",version=\"3\",le=\"0.025\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn generating_versions_report_tokens_sequences_and_latencies() {
        let mut g = GenerationStatistics {
            generated_tokens: 40,
            cancelled: 1,
            running: 2,
            ..Default::default()
        };
        g.time_to_first_token.observe(0.003);
        let s = Statistics {
            generation: Some(g),
            ..Default::default()
        };
        let text = render(&[("lm".into(), 2, s)]);
        for line in [
            "modelforge_generated_tokens_total{model=\"lm\",version=\"2\"} 40",
            "modelforge_generations_cancelled_total{model=\"lm\",version=\"2\"} 1",
            "modelforge_sequences_running{model=\"lm\",version=\"2\"} 2",
            "modelforge_time_to_first_token_seconds_bucket{model=\"lm\",version=\"2\",le=\"0.005\"} 1",
            "# TYPE modelforge_kv_cache_bytes gauge",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
