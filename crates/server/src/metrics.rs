//! `GET /metrics` in the Prometheus text format.

use std::fmt::Write as _;

use modelforge_serve::{Histogram, Statistics};

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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
