//! Run reports: `report.html`, one self-contained page (every chart inlined as SVG), and
//! the same charts as SVG files beside it. It shows loss and metric curves per epoch
//! (train and validation), the learning rate, the confusion matrix and per-class
//! precision and recall, the model summary and graph, and the run's data fingerprint and
//! lineage.

pub mod attribution;
pub mod chart;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use modelforge_spec::Spec;
use modelforge_train::Evaluation;
use modelforge_train::run::{EVALUATION, RunInfo, WEIGHTS, utc_stamp};
use serde_json::Value;

use chart::Series;

/// Everything that can stop a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The run folder lacks a file or holds a damaged one.
    #[error("run folder {}: {reason}", path.display())]
    Run {
        /// The run folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The run could not be found or read.
    #[error(transparent)]
    Train(#[from] modelforge_train::TrainError),
    /// The run's stored spec does not parse.
    #[error(transparent)]
    Spec(#[from] modelforge_spec::SpecError),
    /// A chart could not be drawn.
    #[error("cannot draw a chart: {0}")]
    Chart(String),
    /// The report could not be written.
    #[error("cannot write the report to {}: {source}", path.display())]
    Write {
        /// The folder.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
}

/// A written report.
#[derive(Debug, Clone)]
pub struct Report {
    /// `report.html`.
    pub html: PathBuf,
    /// The SVG files beside it.
    pub charts: Vec<PathBuf>,
}

/// One epoch's figures: the 1-based epoch and its named values.
type Epoch = (f64, BTreeMap<String, f64>);

/// Figures per epoch from `metrics.jsonl`.
fn epochs(dir: &Path) -> Result<Vec<Epoch>, ReportError> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| ReportError::Run {
        path: dir.to_path_buf(),
        reason: format!("cannot read metrics.jsonl: {e}"),
    })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let record: Value = serde_json::from_str(line).map_err(|e| ReportError::Run {
            path: dir.to_path_buf(),
            reason: format!("metrics.jsonl line {} is not JSON: {e}", n + 1),
        })?;
        if record["kind"] != "epoch" {
            continue;
        }
        let epoch = record["epoch"].as_f64().unwrap_or(0.0) + 1.0;
        let figures = record
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
            .filter(|(k, _)| !matches!(k.as_str(), "epoch" | "step"))
            .collect();
        out.push((epoch, figures));
    }
    Ok(out)
}

/// The series of the named figures that any epoch has.
fn series(epochs: &[Epoch], names: &[(&str, &str)]) -> Vec<Series> {
    names
        .iter()
        .map(|(key, name)| Series {
            name: name.to_string(),
            points: epochs
                .iter()
                .filter_map(|(e, m)| m.get(*key).map(|v| (*e, *v)))
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes the report of the run in `run_dir` into `out` (replaced whole, never half-written).
pub fn write(run_dir: &Path, out: &Path) -> Result<Report, ReportError> {
    let info = modelforge_train::run::read_info(run_dir)?;
    let spec_path = run_dir.join("spec.toml");
    let spec_text = std::fs::read_to_string(&spec_path).map_err(|e| ReportError::Run {
        path: run_dir.to_path_buf(),
        reason: format!("cannot read spec.toml: {e}"),
    })?;
    let spec = Spec::parse_stored(&spec_text, &spec_path)?;
    let per_epoch = epochs(run_dir)?;
    let evaluation: Option<Evaluation> = match std::fs::read(run_dir.join(EVALUATION)) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes).map_err(|e| ReportError::Run {
                path: run_dir.to_path_buf(),
                reason: format!("{EVALUATION} is not valid: {e}"),
            })?,
        ),
        Err(_) => None,
    };

    let mut charts: Vec<(&str, String)> = Vec::new();
    let loss = series(&per_epoch, &[("loss", "train"), ("val_loss", "validation")]);
    charts.push(("loss.svg", chart::lines("loss per epoch", "loss", &loss)?));
    let metric = if per_epoch.iter().any(|(_, m)| m.contains_key("accuracy")) {
        series(
            &per_epoch,
            &[("accuracy", "train"), ("val_accuracy", "validation")],
        )
    } else {
        series(
            &per_epoch,
            &[
                ("mae", "train MAE"),
                ("val_mae", "validation MAE"),
                ("rmse", "train RMSE"),
                ("val_rmse", "validation RMSE"),
            ],
        )
    };
    if !metric.is_empty() {
        let title = if metric[0].name == "train" {
            "accuracy per epoch"
        } else {
            "errors per epoch"
        };
        charts.push(("metrics.svg", chart::lines(title, "", &metric)?));
    }
    let lr = series(&per_epoch, &[("lr", "learning rate")]);
    if !lr.is_empty() {
        charts.push(("lr.svg", chart::lines("learning rate", "lr", &lr)?));
    }
    let labels: Vec<String> = {
        let given = &spec.model.output.get_ref().labels;
        let n = evaluation.as_ref().map_or(0, |e| e.confusion.len());
        (0..n)
            .map(|i| given.get(i).cloned().unwrap_or_else(|| i.to_string()))
            .collect()
    };
    if let Some(e) = evaluation.as_ref().filter(|e| !e.confusion.is_empty()) {
        charts.push(("confusion.svg", chart::confusion(&e.confusion, &labels)?));
    }
    charts.push(("graph.svg", modelforge_spec::drawing::to_svg(&spec)));
    let attributions = attribution::of_test_samples(&spec, &run_dir.join(WEIGHTS));
    let (note, pictures) = match attributions {
        Ok((note, pictures)) => (note, pictures),
        Err(why) => (format!("no attributions: {why}"), Vec::new()),
    };

    let html = page(
        &info,
        &spec,
        evaluation.as_ref(),
        &labels,
        &charts,
        (&note, &pictures),
    );
    let mut files: Vec<(String, Vec<u8>)> = charts
        .iter()
        .map(|(name, svg)| (name.to_string(), svg.clone().into_bytes()))
        .chain(
            pictures
                .iter()
                .map(|(name, svg)| (name.clone(), svg.clone().into_bytes())),
        )
        .collect();
    files.push(("report.html".into(), html.into_bytes()));
    write_folder(out, &files)?;
    Ok(Report {
        html: out.join("report.html"),
        charts: charts
            .iter()
            .map(|(name, _)| out.join(name))
            .chain(pictures.iter().map(|(name, _)| out.join(name)))
            .collect(),
    })
}

/// Writes `files` as the folder `out`: into a fresh folder beside it, then swapped in, so
/// that `out` is never half-written.
pub fn write_folder(out: &Path, files: &[(String, Vec<u8>)]) -> Result<(), ReportError> {
    let parent = out.parent().unwrap_or(Path::new("."));
    let io = |source| ReportError::Write {
        path: out.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(parent).map_err(io)?;
    let staging = parent.join(format!(
        ".{}.tmp-{}",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("report"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io)?;
    for (name, bytes) in files {
        std::fs::write(staging.join(name), bytes).map_err(io)?;
    }
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io)?;
    }
    std::fs::rename(&staging, out).map_err(io)
}

/// The HTML page, charts inlined.
fn page(
    info: &RunInfo,
    spec: &Spec,
    evaluation: Option<&Evaluation>,
    labels: &[String],
    charts: &[(&str, String)],
    (note, attributions): (&str, &[(String, String)]),
) -> String {
    let mut h = String::new();
    let title = format!("{} — {}", info.model, info.run_id);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>body{{font-family:sans-serif;margin:24px;max-width:1320px;color:#222}}\
         table{{border-collapse:collapse;margin:8px 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         th{{background:#f3f3f3}}td.k,th.k{{text-align:left}}.charts{{display:flex;flex-wrap:wrap;gap:12px}}\
         pre{{background:#f7f7f7;padding:8px;overflow-x:auto}}figure{{margin:0}}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let finished = info.finished.map_or("-".into(), utc_stamp);
    let seconds = info
        .finished
        .map_or("-".into(), |f| f.saturating_sub(info.started).to_string());
    let rows: Vec<(&str, String)> = vec![
        ("status", info.status.clone()),
        ("started (UTC)", utc_stamp(info.started)),
        ("finished (UTC)", finished),
        ("seconds", seconds),
        ("optimiser steps", info.steps.to_string()),
        ("seed", info.seed.to_string()),
        (
            "environment",
            format!(
                "modelforge {}, {} threads, {} ranks, {} on {} ({})",
                info.environment.modelforge_version,
                info.environment.threads,
                info.environment.ranks,
                info.environment.device,
                info.environment.host,
                info.environment.platform
            ),
        ),
    ];
    table(&mut h, "Run", &rows);
    let figures: Vec<(&str, String)> = info
        .metrics
        .iter()
        .filter(|(k, _)| k.as_str() != "lr")
        .map(|(k, v)| (k.as_str(), format!("{v:.4}")))
        .collect();
    table(&mut h, "Final figures", &figures);

    h.push_str("<h2>Curves</h2>\n<div class=\"charts\">\n");
    for (name, svg) in charts
        .iter()
        .filter(|(n, _)| matches!(*n, "loss.svg" | "metrics.svg" | "lr.svg"))
    {
        let _ = writeln!(h, "<figure id=\"{name}\">{svg}</figure>");
    }
    h.push_str("</div>\n");

    if let Some(e) = evaluation.filter(|e| !e.confusion.is_empty()) {
        let _ = writeln!(
            h,
            "<h2>Test split ({} examples)</h2>\n<div class=\"charts\">",
            e.examples
        );
        if let Some((_, svg)) = charts.iter().find(|(n, _)| *n == "confusion.svg") {
            let _ = writeln!(h, "<figure id=\"confusion.svg\">{svg}</figure>");
        }
        h.push_str("<table><tr><th class=\"k\">class</th><th>precision</th><th>recall</th><th>support</th></tr>\n");
        for (c, label) in labels.iter().enumerate() {
            let support: u64 = e.confusion[c].iter().sum();
            let _ = writeln!(
                h,
                "<tr><td class=\"k\">{}</td><td>{:.4}</td><td>{:.4}</td><td>{support}</td></tr>",
                escape(label),
                e.precision.get(c).copied().unwrap_or(f64::NAN),
                e.recall.get(c).copied().unwrap_or(f64::NAN)
            );
        }
        h.push_str("</table></div>\n");
    }

    let _ = writeln!(
        h,
        "<h2>Attributions</h2>\n<p>{}</p>\n<div class=\"charts\">",
        escape(note)
    );
    for (name, svg) in attributions {
        let _ = writeln!(h, "<figure id=\"{name}\">{svg}</figure>");
    }
    h.push_str("</div>\n");
    let _ = writeln!(h, "<h2>Model</h2>\n<pre>{}</pre>", escape(&spec.summary()));
    if let Some((_, svg)) = charts.iter().find(|(n, _)| *n == "graph.svg") {
        let _ = writeln!(h, "<figure id=\"graph.svg\">{svg}</figure>");
    }
    let files: Vec<String> = info
        .data_files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    let lineage: Vec<(&str, String)> = vec![
        (
            "data fingerprint (sha256 over the files)",
            info.data_fingerprint.clone(),
        ),
        ("data files", files.join(", ")),
        ("spec hash", info.spec_hash.clone()),
        ("run", info.run_id.clone()),
    ];
    table(&mut h, "Data and lineage", &lineage);
    h.push_str("</body></html>\n");
    h
}

/// A two-column table under a heading.
fn table(h: &mut String, heading: &str, rows: &[(&str, String)]) {
    let _ = writeln!(h, "<h2>{}</h2>\n<table>", escape(heading));
    for (k, v) in rows {
        let _ = writeln!(
            h,
            "<tr><th class=\"k\">{}</th><td class=\"k\">{}</td></tr>",
            escape(k),
            escape(v)
        );
    }
    h.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_come_from_the_epoch_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("metrics.jsonl"),
            "{\"kind\":\"step\",\"epoch\":0,\"loss\":2.0}\n\
             {\"kind\":\"epoch\",\"epoch\":0,\"step\":5,\"loss\":1.0,\"val_loss\":1.2}\n\
             {\"kind\":\"epoch\",\"epoch\":1,\"step\":10,\"loss\":0.5}\n",
        )
        .unwrap();
        let e = epochs(dir.path()).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0, 1.0);
        assert!(!e[0].1.contains_key("step"));
        let s = series(
            &e,
            &[("loss", "train"), ("val_loss", "validation"), ("mae", "x")],
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].points, [(1.0, 1.0), (2.0, 0.5)]);
        assert_eq!(s[1].points, [(1.0, 1.2)]);
        std::fs::write(dir.path().join("metrics.jsonl"), "{torn\n").unwrap();
        let err = epochs(dir.path()).unwrap_err().to_string();
        assert!(err.contains("metrics.jsonl line 1 is not JSON"), "{err}");
    }

    #[test]
    fn charts_are_svg_with_their_series() {
        let s = vec![Series {
            name: "train".into(),
            points: vec![(1.0, 0.9), (2.0, 0.5)],
        }];
        let svg = chart::lines("loss <per> epoch", "loss", &s).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("#1F77B4"), "{svg}");
        let heat = chart::confusion(&[vec![5, 1], vec![0, 4]], &["a".into(), "b".into()]).unwrap();
        let texts: Vec<&str> = heat.lines().map(str::trim).collect();
        assert!(texts.contains(&"5") && texts.contains(&"a"), "{heat}");
        assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
