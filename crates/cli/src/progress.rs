//! Training progress on the terminal: a bar per epoch and a summary line per epoch.

use indicatif::{ProgressBar, ProgressStyle};
use modelforge_pipeline::{Observer, Stage, StageReport, Status};
use modelforge_train::{EpochReport, Progress, StepReport};

/// Draws an indicatif bar (when stderr is a terminal) and prints epoch summaries.
#[derive(Default)]
pub struct Bars {
    bar: Option<ProgressBar>,
    epochs: usize,
    batches: usize,
}

impl Bars {
    fn bar_for(&mut self, epoch: usize) -> &ProgressBar {
        self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(self.batches as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{}/{}", epoch + 1, self.epochs));
            bar
        })
    }
}

impl Progress for Bars {
    fn start(&mut self, epochs: usize, batches: usize, resumed_at: u64) {
        self.epochs = epochs;
        self.batches = batches;
        if resumed_at > 0 {
            eprintln!("resuming at step {resumed_at}");
        }
    }

    fn step(&mut self, r: &StepReport) {
        let bar = self.bar_for(r.epoch);
        bar.set_position(r.batch as u64);
        let acc = r
            .accuracy
            .map(|a| format!(" acc {a:.4}"))
            .unwrap_or_default();
        bar.set_message(format!(
            "step {} loss {:.4}{acc} {:.0} samples/s",
            r.step, r.loss, r.samples_per_sec
        ));
    }

    fn epoch(&mut self, r: &EpochReport) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let figures: Vec<String> = r
            .metrics
            .iter()
            .map(|(k, v)| {
                if k == "lr" {
                    format!("{k} {v:.2e}")
                } else {
                    format!("{k} {v:.4}")
                }
            })
            .collect();
        let at = match r.steps {
            Some((step, steps)) => format!("step {step}/{steps}"),
            None => format!("epoch {}/{}", r.epoch + 1, r.epochs),
        };
        eprintln!("{at} ({:.1}s): {}", r.seconds, figures.join(", "));
    }
}

/// Prints the pipeline's stage table: a line per stage, and why a stage runs.
pub struct StageTable {
    quiet: bool,
}

impl StageTable {
    /// A table; a quiet one (MPI ranks other than 0) prints nothing.
    pub fn new(quiet: bool) -> StageTable {
        StageTable { quiet }
    }

    /// The closing line: how many stages ran and were cached, and the time in all.
    pub fn total(&self, reports: &[StageReport], elapsed: std::time::Duration) {
        if self.quiet {
            return;
        }
        let count = |status| reports.iter().filter(|r| r.status == status).count();
        println!(
            "{} stages: {} ran, {} cached{} in {:.2} s",
            reports.len(),
            count(Status::Ran),
            count(Status::Cached),
            match count(Status::WouldRun) {
                0 => String::new(),
                n => format!(", {n} would run"),
            },
            elapsed.as_secs_f64()
        );
    }
}

impl Observer for StageTable {
    fn begin(&mut self, stage: Stage, reasons: &[String]) {
        if !self.quiet {
            eprintln!("{stage}: running ({})", reasons.join("; "));
        }
    }

    fn end(&mut self, r: &StageReport) {
        if self.quiet {
            return;
        }
        let detail = match r.status {
            Status::WouldRun => r.reasons.join("; "),
            _ => r.outcome.clone(),
        };
        println!(
            "{:<9} {:<9} {:>7.2} s  {detail}",
            r.stage.name(),
            r.status.name(),
            r.seconds
        );
    }
}
