//! The stages of `modelforge run`, in order. Each stage's inputs (spec sections as values,
//! files and upstream artefacts as digests) are compared with its last successful run in
//! the [`Ledger`]; a stage runs only when they differ, when its recorded artefact is gone, or
//! when it is forced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use modelforge_data::Prepared;
use modelforge_model::Network;
use modelforge_registry::Registry;
use modelforge_spec::Spec;
use modelforge_train::run::{EVALUATION, WEIGHTS};
use modelforge_train::{TrainError, Trained};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::ledger::{Ledger, StageRecord};
use crate::{Candidate, GateOutcome, PipelineError, Published};

/// A pipeline stage; they run in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Parse and validate the spec; record the model's layers and parameter count.
    Check,
    /// Read, split and fingerprint the data.
    Data,
    /// Train a new run.
    Train,
    /// Evaluate the run on the test split.
    Evaluate,
    /// Judge the test metrics against `[deploy] gate`.
    Gate,
    /// Publish the run as a registry version; give it the aliases if the gate passed.
    Publish,
    /// Tell the `[deploy] server` to load the new version.
    Deploy,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 7] = [
        Stage::Check,
        Stage::Data,
        Stage::Train,
        Stage::Evaluate,
        Stage::Gate,
        Stage::Publish,
        Stage::Deploy,
    ];

    /// Whether the stage only reads and computes, so a dry run may work it out to see past it.
    pub fn is_pure(self) -> bool {
        matches!(self, Stage::Check | Stage::Data | Stage::Gate)
    }

    /// The stage's name, as `--from` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Check => "check",
            Stage::Data => "data",
            Stage::Train => "train",
            Stage::Evaluate => "evaluate",
            Stage::Gate => "gate",
            Stage::Publish => "publish",
            Stage::Deploy => "deploy",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Stage {
    type Err = String;

    fn from_str(text: &str) -> Result<Stage, String> {
        Stage::ALL
            .into_iter()
            .find(|s| s.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
                format!("unknown stage {text:?}: use one of {}", names.join(", "))
            })
    }
}

/// What happened to a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It ran.
    Ran,
    /// Its inputs matched its last run, so that run's output was used.
    Cached,
    /// `--dry-run`: it would run.
    WouldRun,
}

impl Status {
    /// How the status reads in the stage table.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ran => "ran",
            Status::Cached => "cached",
            Status::WouldRun => "would run",
        }
    }
}

/// One line of the stage table.
#[derive(Debug, Clone)]
pub struct StageReport {
    /// The stage.
    pub stage: Stage,
    /// Ran, cached or would run.
    pub status: Status,
    /// Seconds spent on it, deciding included.
    pub seconds: f64,
    /// What it produced, in words (empty when it would run).
    pub outcome: String,
    /// Why it ran (or would run).
    pub reasons: Vec<String>,
}

/// Receives the stages as they go (the CLI prints them).
pub trait Observer {
    /// A stage is about to run, for these reasons.
    fn begin(&mut self, _stage: Stage, _reasons: &[String]) {}
    /// A stage ran, was cached, or would run.
    fn end(&mut self, report: &StageReport);
}

/// Trains a spec on prepared data: the result on rank 0, `None` on the other ranks of a
/// multi-process job (which then stop).
pub type Trainer<'a> = dyn FnMut(&Spec, &Prepared) -> Result<Option<Trained>, TrainError> + 'a;

/// What `run` works on and how.
pub struct Plan<'a> {
    /// The spec, parsed and validated from its file.
    pub spec: &'a Spec,
    /// The registry versions are published to.
    pub registry: &'a Registry,
    /// Where run folders and the stage ledger go.
    pub runs_dir: &'a Path,
    /// Compute device for evaluation.
    pub device: &'a str,
    /// Run this stage and every one after it whatever the ledger says (`--from`, `--force`).
    pub from: Option<Stage>,
    /// Decide and report only: write nothing, run only the stages that just read and compute
    /// ([`Stage::is_pure`]).
    pub dry_run: bool,
    /// Use and keep the ledger; false runs every stage and records nothing (MPI ranks, which
    /// cannot share one).
    pub cache: bool,
    /// Bearer token for the deploy server's repository API.
    pub token: Option<&'a str>,
}

/// What a pipeline run produced.
pub struct Outcome {
    /// The spec it ran.
    pub spec: Spec,
    /// One report per stage, in order.
    pub reports: Vec<StageReport>,
    /// The run folder of the trained model (absent in a dry run that would train).
    pub run_dir: Option<PathBuf>,
    /// The gate's verdict, if the spec has a gate.
    pub gate: Option<GateOutcome>,
    /// The published version.
    pub published: Option<Published>,
    /// The data, when a stage of this run prepared it.
    pub data: Option<Prepared>,
}

/// Runs the pipeline of a spec file: `None` on the ranks of a multi-process job other than 0,
/// which stop after training.
pub fn run(
    plan: &Plan,
    trainer: &mut Trainer,
    observer: &mut dyn Observer,
) -> Result<Option<Outcome>, PipelineError> {
    // The caller parsed and validated the whole file (that is how every stage's inputs are
    // read); the check stage records what the model section makes.
    let spec = plan.spec;
    let ledger_path = Ledger::path(plan.runs_dir, spec.name());
    let ledger = match plan.cache {
        true => Ledger::read(&ledger_path)?,
        false => Ledger::default(),
    };
    let mut r = Runner {
        plan,
        ledger,
        ledger_path,
        observer,
        reports: Vec::new(),
        mark: Instant::now(),
    };
    let mut prepared: Option<Prepared> = None;
    let mut outcome = Outcome {
        spec: spec.clone(),
        reports: Vec::new(),
        run_dir: None,
        gate: None,
        published: None,
        data: None,
    };

    let inputs = BTreeMap::from([
        ("model".into(), json!(spec.model)),
        ("modelforge".into(), json!(env!("CARGO_PKG_VERSION"))),
    ]);
    let checked = r.step(Stage::Check, inputs, no_artefact, || {
        Ok(json!({
            "model": spec.name(),
            "layers": spec.model.layers.len(),
            "parameters": spec.parameter_count(),
        }))
    })?;
    if checked.is_none() {
        return Ok(Some(r.finish(outcome, prepared)));
    }

    let files_digest = modelforge_data::fingerprint(&modelforge_data::files(spec))?;
    let inputs = BTreeMap::from([
        ("data".into(), json!(spec.data)),
        ("data files".into(), json!(files_digest)),
    ]);
    let data_out = r.step(Stage::Data, inputs, no_artefact, || {
        let data = modelforge_data::prepare_fingerprinted(
            spec,
            files_digest.clone(),
            Some(&token_cache(plan.runs_dir)),
        )?;
        let sizes = data.sizes();
        let output = json!({
            "fingerprint": data.fingerprint,
            "section": Spec::hash_of(&spec.data),
            "train": sizes.train,
            "validation": sizes.validation,
            "test": sizes.test,
            "unit": sizes.unit,
        });
        prepared = Some(data);
        Ok(output)
    })?;
    let Some(data_out) = data_out else {
        return Ok(Some(r.finish(outcome, prepared)));
    };

    let result_spec = spec.without_execution();
    let inputs = BTreeMap::from([
        ("model".into(), json!(result_spec.model)),
        ("train".into(), json!(result_spec.train)),
        ("data".into(), data_out.clone()),
    ]);
    let mut trained: Option<Trained> = None;
    let runs_dir = plan.runs_dir;
    let train_out = r.step(
        Stage::Train,
        inputs,
        |out| weights_changed(runs_dir, out),
        || {
            let data = ensure_data(&mut prepared, spec, &files_digest, runs_dir)?;
            let Some(t) = trainer(spec, data)? else {
                return Ok(Value::Null);
            };
            let weights =
                std::fs::read(t.run_dir.join(WEIGHTS)).map_err(|e| PipelineError::Run {
                    path: t.run_dir.clone(),
                    reason: format!("cannot read {WEIGHTS}: {e}"),
                })?;
            let output = json!({
                "run": t.run_id,
                "weights": sha256(&weights),
                "metrics": t.final_metrics,
                "stopped_early": t.stopped_early,
            });
            trained = Some(t);
            Ok(output)
        },
    )?;
    let Some(train_out) = train_out else {
        return Ok(Some(r.finish(outcome, prepared)));
    };
    let Some(run_id) = train_out["run"].as_str() else {
        // Another rank of a multi-process job: rank 0 carries on alone.
        return Ok(None);
    };
    let run_dir = plan.runs_dir.join(run_id);
    outcome.run_dir = Some(run_dir.clone());

    let inputs = BTreeMap::from([
        ("weights".into(), train_out["weights"].clone()),
        ("data".into(), data_out),
    ]);
    let eval_out = r.step(
        Stage::Evaluate,
        inputs,
        |_| {
            (!run_dir.join(EVALUATION).is_file())
                .then(|| format!("{} is gone", run_dir.join(EVALUATION).display()))
        },
        || {
            let data = ensure_data(&mut prepared, spec, &files_digest, plan.runs_dir)?;
            let device = modelforge_model::device(plan.device)?;
            let network = match trained.take() {
                Some(t) => t.network,
                None => Network::new(spec, &device).load_safetensors(
                    &run_dir.join(WEIGHTS),
                    &device,
                    false,
                )?,
            };
            let test = crate::evaluate_run(spec, &network, data, &run_dir, &device)?;
            Ok(json!({ "metrics": test.metrics }))
        },
    )?;
    let Some(eval_out) = eval_out else {
        return Ok(Some(r.finish(outcome, prepared)));
    };

    let metrics: BTreeMap<String, f64> =
        serde_json::from_value(eval_out["metrics"].clone()).unwrap_or_default();
    let baseline = crate::baseline(spec, plan.registry, run_id)?;
    let inputs = BTreeMap::from([
        ("gate".into(), json!(spec.deploy.gate)),
        ("metrics".into(), eval_out["metrics"].clone()),
        ("baseline".into(), json!(baseline)),
    ]);
    let gate_out = r.step(Stage::Gate, inputs, no_artefact, || {
        Ok(json!(crate::judge(spec, &metrics, baseline.as_ref())))
    })?;
    let Some(gate_out) = gate_out else {
        return Ok(Some(r.finish(outcome, prepared)));
    };
    let gate: Option<GateOutcome> = serde_json::from_value(gate_out.clone()).ok().flatten();
    outcome.gate = gate.clone();

    let registry = plan.registry;
    let inputs = BTreeMap::from([
        ("run".into(), train_out["run"].clone()),
        ("weights".into(), train_out["weights"].clone()),
        ("gate".into(), gate_out),
        ("aliases".into(), json!(spec.deploy.aliases)),
    ]);
    let publish_out = r.step(
        Stage::Publish,
        inputs,
        |out| {
            let version = out["version"].as_u64().unwrap_or(0);
            registry
                .open(spec.name(), version)
                .err()
                .map(|e| format!("version {version} cannot be used any more: {e}"))
        },
        || {
            let candidate = Candidate::read(&run_dir)?;
            let published = crate::publish(spec, &candidate, registry, gate.as_ref())?;
            Ok(json!({
                "name": published.name,
                "version": published.version,
                "dir": published.dir,
                "aliases": published.aliases,
                "reused": published.reused,
            }))
        },
    )?;
    let Some(publish_out) = publish_out else {
        return Ok(Some(r.finish(outcome, prepared)));
    };
    let version = publish_out["version"].as_u64().unwrap_or(0);
    outcome.published = Some(Published {
        name: spec.name().to_string(),
        version,
        // Recorded by publish; the check above has just verified the version's files.
        dir: serde_json::from_value(publish_out["dir"].clone()).unwrap_or_default(),
        aliases: serde_json::from_value(publish_out["aliases"].clone()).unwrap_or_default(),
        reused: publish_out["reused"].as_bool().unwrap_or(false),
    });

    let passed = gate.as_ref().is_none_or(|g| g.passed);
    let server = spec.deploy.server.as_ref().map(|s| s.get_ref().clone());
    let inputs = BTreeMap::from([
        ("version".into(), json!(version)),
        ("aliases".into(), publish_out["aliases"].clone()),
        ("server".into(), json!(server)),
        ("passed".into(), json!(passed)),
    ]);
    r.step(Stage::Deploy, inputs, no_artefact, || {
        Ok(match (&server, passed) {
            (None, _) => json!({ "note": "no [deploy] server to tell" }),
            (Some(_), false) => json!({ "note": "the gate failed, so the server was not told" }),
            (Some(url), true) => {
                crate::notify(url, spec.name(), plan.token)?;
                json!({ "note": format!("told {url} to load {}", spec.name()) })
            }
        })
    })?;
    Ok(Some(r.finish(outcome, prepared)))
}

/// Carries the ledger, the observer and the clock from stage to stage.
struct Runner<'a> {
    plan: &'a Plan<'a>,
    ledger: Ledger,
    ledger_path: PathBuf,
    observer: &'a mut dyn Observer,
    reports: Vec<StageReport>,
    /// When the previous stage ended: a stage's time includes working out its inputs.
    mark: Instant,
}

impl Runner<'_> {
    /// Runs a stage unless its last run had the same inputs and `changed` finds its artefact
    /// intact; returns its output, or `None` in a dry run once a stage would run.
    fn step(
        &mut self,
        stage: Stage,
        inputs: BTreeMap<String, Value>,
        changed: impl FnOnce(&Value) -> Option<String>,
        work: impl FnOnce() -> Result<Value, PipelineError>,
    ) -> Result<Option<Value>, PipelineError> {
        let reasons = match (self.plan.cache, self.plan.from) {
            (false, _) => vec!["every stage runs under mpirun".to_string()],
            (true, Some(from)) if stage >= from => vec![format!("forced from {from}")],
            (true, _) => {
                let mut reasons = self.ledger.changes(stage.name(), &inputs);
                if reasons.is_empty() {
                    let output = self.ledger.stages[stage.name()].output.clone();
                    match changed(&output) {
                        None => {
                            self.report(stage, Status::Cached, &output, Vec::new());
                            return Ok(Some(output));
                        }
                        Some(why) => reasons.push(why),
                    }
                }
                reasons
            }
        };
        if self.plan.dry_run {
            // A pure stage is worked out (and nothing recorded) so the stages after it can
            // be judged on its output; the first stage with effects ends the dry run.
            let output = match stage.is_pure() {
                true => Some(work()?),
                false => None,
            };
            self.report(stage, Status::WouldRun, &Value::Null, reasons);
            return Ok(output);
        }
        self.observer.begin(stage, &reasons);
        let output = work()?;
        if self.plan.cache {
            self.ledger.stages.insert(
                stage.name().to_string(),
                StageRecord {
                    inputs,
                    output: output.clone(),
                    seconds: self.mark.elapsed().as_secs_f64(),
                    finished: modelforge_train::run::unix_now(),
                },
            );
            self.ledger.write(&self.ledger_path)?;
        }
        self.report(stage, Status::Ran, &output, reasons);
        Ok(Some(output))
    }

    fn report(&mut self, stage: Stage, status: Status, output: &Value, reasons: Vec<String>) {
        let report = StageReport {
            stage,
            status,
            seconds: self.mark.elapsed().as_secs_f64(),
            outcome: match status {
                Status::WouldRun => String::new(),
                _ => describe(stage, output),
            },
            reasons,
        };
        self.observer.end(&report);
        self.reports.push(report);
        self.mark = Instant::now();
    }

    /// Ends the run; in a dry run the stages after the one that would run are listed too.
    fn finish(mut self, mut outcome: Outcome, data: Option<Prepared>) -> Outcome {
        if let Some(last) = self.reports.last().filter(|r| r.status == Status::WouldRun) {
            let after = last.stage;
            for stage in Stage::ALL.into_iter().filter(|s| *s > after) {
                let why = vec![format!("after {after}, if its output changes")];
                self.report(stage, Status::WouldRun, &Value::Null, why);
            }
        }
        outcome.reports = self.reports;
        outcome.data = data;
        outcome
    }
}

/// For stages whose output is all in the ledger: nothing on disk can go stale.
fn no_artefact(_: &Value) -> Option<String> {
    None
}

/// Why a recorded training run can no longer be used: its weights are gone or changed.
fn weights_changed(runs_dir: &Path, output: &Value) -> Option<String> {
    let run = output["run"].as_str()?;
    let path = runs_dir.join(run).join(WEIGHTS);
    match std::fs::read(&path) {
        Ok(bytes) if json!(sha256(&bytes)) == output["weights"] => None,
        Ok(_) => Some(format!("{} changed", path.display())),
        Err(_) => Some(format!("{} is gone", path.display())),
    }
}

/// The prepared data, read now when the data stage was cached; `files_digest` is the
/// fingerprint the stage was keyed on, so the files are not hashed again.
fn ensure_data<'d>(
    prepared: &'d mut Option<Prepared>,
    spec: &Spec,
    files_digest: &str,
    runs_dir: &Path,
) -> Result<&'d Prepared, PipelineError> {
    if prepared.is_none() {
        *prepared = Some(modelforge_data::prepare_fingerprinted(
            spec,
            files_digest.to_string(),
            Some(&token_cache(runs_dir)),
        )?);
    }
    Ok(prepared.as_ref().expect("just prepared"))
}

/// The spec's data, prepared as the data stage prepares it (text's token files reused from
/// the runs folder's cache).
pub fn prepare_data(spec: &Spec, runs_dir: &Path) -> Result<Prepared, PipelineError> {
    let digest = modelforge_data::fingerprint(&modelforge_data::files(spec))?;
    let mut prepared = None;
    ensure_data(&mut prepared, spec, &digest, runs_dir)?;
    Ok(prepared.expect("just prepared"))
}

/// Where tokenized text is kept between runs: `<runs>/.tokens/` (hidden: it is not a run).
pub fn token_cache(runs_dir: &Path) -> PathBuf {
    runs_dir.join(".tokens")
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A stage's output in words.
fn describe(stage: Stage, out: &Value) -> String {
    let figures = |metrics: &Value| -> String {
        crate::runs::figures(&serde_json::from_value(metrics.clone()).unwrap_or_default())
    };
    match stage {
        Stage::Check => format!(
            "{}: {} layers, {} parameters",
            out["model"].as_str().unwrap_or("?"),
            out["layers"],
            modelforge_spec::group_thousands(out["parameters"].as_u64().unwrap_or(0) as usize)
        ),
        Stage::Data => format!(
            "{} train, {} validation, {} test {} (fingerprint {:.12})",
            out["train"],
            out["validation"],
            out["test"],
            out["unit"].as_str().unwrap_or("examples"),
            out["fingerprint"].as_str().unwrap_or("?")
        ),
        Stage::Train => format!(
            "run {}{}: {}",
            out["run"].as_str().unwrap_or("?"),
            match out["stopped_early"].as_bool() {
                Some(true) => " (stopped early)",
                _ => "",
            },
            figures(&out["metrics"])
        ),
        Stage::Evaluate => figures(&out["metrics"]),
        Stage::Gate => match serde_json::from_value::<Option<GateOutcome>>(out.clone()) {
            Ok(Some(g)) => format!(
                "{}: {} = {:.4} (needs {})",
                if g.passed { "passed" } else { "FAILED" },
                g.metric,
                g.value,
                g.rule
            ),
            _ => "no gate: every model is promoted".into(),
        },
        Stage::Publish => {
            let aliases: Vec<String> =
                serde_json::from_value(out["aliases"].clone()).unwrap_or_default();
            format!(
                "{} version {}{}, {}",
                out["name"].as_str().unwrap_or("?"),
                out["version"],
                match out["reused"].as_bool() {
                    Some(true) => " (already published from this run)",
                    _ => "",
                },
                match aliases.is_empty() {
                    true => "no aliases".to_string(),
                    false => format!("aliases {}", aliases.join(", ")),
                }
            )
        }
        Stage::Deploy => out["note"].as_str().unwrap_or("").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_parse_by_name_and_unknown_ones_list_the_choices() {
        for stage in Stage::ALL {
            assert_eq!(stage.name().parse::<Stage>(), Ok(stage));
        }
        let err = "fit".parse::<Stage>().unwrap_err();
        assert_eq!(
            err,
            "unknown stage \"fit\": use one of check, data, train, evaluate, gate, publish, deploy"
        );
        assert!(Stage::Train < Stage::Publish);
    }

    #[test]
    fn outcomes_read_as_words() {
        let gate =
            json!({ "metric": "test_accuracy", "value": 0.95, "passed": false, "rule": "≥ 0.97" });
        assert_eq!(
            describe(Stage::Gate, &gate),
            "FAILED: test_accuracy = 0.9500 (needs ≥ 0.97)"
        );
        assert_eq!(
            describe(Stage::Gate, &Value::Null),
            "no gate: every model is promoted"
        );
        let published = json!({ "name": "m", "version": 2, "aliases": [], "reused": true });
        assert_eq!(
            describe(Stage::Publish, &published),
            "m version 2 (already published from this run), no aliases"
        );
    }
}
