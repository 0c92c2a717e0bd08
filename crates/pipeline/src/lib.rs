//! The modelforge pipeline: `check → data → train → evaluate → gate → publish → deploy`,
//! each stage skipped when what it depends on is unchanged since its last successful run
//! ([`ledger`]), run by [`stage::run`]; and the run folders they leave ([`runs`]).

pub mod ledger;
pub mod runs;
pub mod stage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use modelforge_data::TOKENIZER;
use modelforge_registry::{Artifact, Lineage, Manifest, Registry, RegistryError, SigningKey};
use modelforge_spec::Spec;
use modelforge_train::Evaluation;
use modelforge_train::run::{EVALUATION, RunInfo, WEIGHTS};
use serde::{Deserialize, Serialize};

pub use stage::{Observer, Outcome, Plan, Stage, StageReport, Status};

/// Everything that can stop the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The spec file is wrong.
    #[error(transparent)]
    Spec(#[from] modelforge_spec::SpecError),
    /// The data could not be read.
    #[error(transparent)]
    Data(#[from] modelforge_data::DataError),
    /// The network could not be built, loaded or run.
    #[error(transparent)]
    Model(#[from] modelforge_model::ModelError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] modelforge_train::TrainError),
    /// The registry refused the version or alias.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The stage ledger could not be read or written.
    #[error("stage ledger {}: {reason}", path.display())]
    Ledger {
        /// The ledger file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A run folder lacks a file a later stage needs.
    #[error("run folder {}: {reason}", path.display())]
    Run {
        /// The run folder.
        path: PathBuf,
        /// What is missing or damaged.
        reason: String,
    },
    /// The running server could not be told to load the new version.
    #[error(
        "published, but the server at {url} could not be told to load it: {reason} — start the server, or load it by hand: curl -X POST {url}"
    )]
    Deploy {
        /// The repository API call.
        url: String,
        /// Why it failed.
        reason: String,
    },
}

/// The gate's verdict on a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateOutcome {
    /// The metric compared.
    pub metric: String,
    /// Its value.
    pub value: f64,
    /// Whether it passed.
    pub passed: bool,
    /// The rule, e.g. `≥ 0.97`.
    pub rule: String,
}

/// The version a gate's `beat` alias points at, and its value of the gate metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The alias, e.g. `production`.
    pub alias: String,
    /// The version it points at.
    pub version: u64,
    /// Its value of the gate metric (NaN when it has none).
    pub value: f64,
}

/// A published version.
#[derive(Debug, Clone)]
pub struct Published {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// Its folder.
    pub dir: PathBuf,
    /// Aliases given to it.
    pub aliases: Vec<String>,
    /// Whether an earlier publish of the same run was reused.
    pub reused: bool,
}

/// A finished, evaluated run read back from its folder: what `publish` turns into a version.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// `run.json`, with train, validation and test figures.
    pub run: RunInfo,
    /// The run folder.
    pub dir: PathBuf,
    /// The final weights (safetensors).
    pub weights: Vec<u8>,
    /// The test-split evaluation.
    pub test: Evaluation,
    /// The `tokenizer.json` of a language model's run.
    pub tokenizer: Option<Vec<u8>>,
}

impl Candidate {
    /// Reads a finished run that has been evaluated.
    pub fn read(dir: &Path) -> Result<Candidate, PipelineError> {
        let missing = |file: &str, e: &dyn std::fmt::Display| PipelineError::Run {
            path: dir.to_path_buf(),
            reason: format!("cannot read {file} ({e}) — run the pipeline with --from train"),
        };
        let run = modelforge_train::run::read_info(dir)?;
        let weights = std::fs::read(dir.join(WEIGHTS)).map_err(|e| missing(WEIGHTS, &e))?;
        let bytes = std::fs::read(dir.join(EVALUATION)).map_err(|e| missing(EVALUATION, &e))?;
        let test = serde_json::from_slice(&bytes).map_err(|e| missing(EVALUATION, &e))?;
        let tokenizer = std::fs::read(dir.join(TOKENIZER)).ok();
        Ok(Candidate {
            run,
            dir: dir.to_path_buf(),
            weights,
            test,
            tokenizer,
        })
    }
}

/// The manifest describing a candidate.
pub fn manifest(spec: &Spec, candidate: &Candidate) -> Manifest {
    let mut metrics = candidate.run.metrics.clone();
    metrics.extend(candidate.test.metrics.clone());
    metrics.remove("lr");
    Manifest::native(
        spec,
        metrics,
        Lineage {
            spec_hash: candidate.run.spec_hash.clone(),
            data_fingerprint: candidate.run.data_fingerprint.clone(),
            run_id: candidate.run.run_id.clone(),
            created: 0,
            modelforge_version: env!("CARGO_PKG_VERSION").into(),
        },
    )
}

/// The version the gate must beat, if the gate names an alias that exists and points at a
/// version of another run (a run is never compared with itself).
pub fn baseline(
    spec: &Spec,
    registry: &Registry,
    run_id: &str,
) -> Result<Option<Baseline>, PipelineError> {
    let Some(gate) = spec.deploy.gate.as_ref().map(|g| g.get_ref()) else {
        return Ok(None);
    };
    let Some(alias) = &gate.beat else {
        return Ok(None);
    };
    let aliases = match registry.aliases(spec.name()) {
        Ok(a) => a,
        Err(RegistryError::NoModel { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(&version) = aliases.get(alias) else {
        return Ok(None);
    };
    let manifest = registry.open(spec.name(), version)?.manifest;
    if manifest.lineage.run_id == run_id {
        return Ok(None);
    }
    Ok(Some(Baseline {
        alias: alias.clone(),
        version,
        value: manifest
            .metrics
            .get(&gate.metric)
            .copied()
            .unwrap_or(f64::NAN),
    }))
}

/// Judges test metrics against the spec's gate and the baseline it must beat (None when the
/// spec has no gate).
pub fn judge(
    spec: &Spec,
    metrics: &BTreeMap<String, f64>,
    baseline: Option<&Baseline>,
) -> Option<GateOutcome> {
    let gate = spec.deploy.gate.as_ref()?.get_ref();
    let value = metrics.get(&gate.metric).copied().unwrap_or(f64::NAN);
    let mut rules = Vec::new();
    let mut passed = value.is_finite();
    if let Some(min) = gate.min {
        passed &= value >= min;
        rules.push(format!("≥ {min}"));
    }
    if let Some(max) = gate.max {
        passed &= value <= max;
        rules.push(format!("≤ {max}"));
    }
    if let Some(b) = baseline {
        let lower = gate.lower_is_better();
        let (sign, bound) = match lower {
            true => ("<", b.value - gate.margin),
            false => (">", b.value + gate.margin),
        };
        // A baseline without the metric cannot be beaten on it, so it does not block.
        if b.value.is_finite() {
            passed &= match (lower, gate.margin > 0.0) {
                (true, true) => value <= bound,
                (true, false) => value < bound,
                (false, true) => value >= bound,
                (false, false) => value > bound,
            };
        }
        let by = match gate.margin > 0.0 {
            true => format!(" by {}", gate.margin),
            false => String::new(),
        };
        rules.push(format!(
            "{sign} {}@{} = {:.4}{by}",
            b.alias, b.version, b.value
        ));
    }
    Some(GateOutcome {
        metric: gate.metric.clone(),
        value,
        passed,
        rule: rules.join(" and "),
    })
}

/// The environment variable naming a key that signs what `run` publishes when the spec
/// names none.
pub const SIGNING_KEY_ENV: &str = "MODELFORGE_SIGNING_KEY";

/// The key that signs a spec's published versions: `[deploy] sign.key`, else the one
/// `MODELFORGE_SIGNING_KEY` names, else none.
pub fn signing_key(spec: &Spec) -> Result<Option<SigningKey>, RegistryError> {
    let path = match &spec.deploy.sign {
        Some(sign) => sign.get_ref().key.clone(),
        None => match std::env::var_os(SIGNING_KEY_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => return Ok(None),
        },
    };
    SigningKey::read(&path).map(Some)
}

/// Publishes a candidate as a version (reusing the version an earlier publish of the same run
/// made; signed with the spec's key, see [`signing_key`]), then gives it the spec's aliases
/// when the gate passed (or there is none).
pub fn publish(
    spec: &Spec,
    candidate: &Candidate,
    registry: &Registry,
    gate: Option<&GateOutcome>,
) -> Result<Published, PipelineError> {
    let earlier = match registry.status(spec.name()) {
        Ok(all) => all.into_iter().find_map(|s| {
            s.state
                .ok()
                .filter(|m| m.lineage.run_id == candidate.run.run_id)
                .map(|m| m.version)
        }),
        Err(RegistryError::NoModel { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    // The key is read before anything is written: a bad key publishes nothing.
    let signer = signing_key(spec)?;
    let version = match earlier {
        Some(version) => {
            let stored = registry.open(spec.name(), version)?;
            // An earlier publish of this run left the version unsigned: sign it now.
            if let Some(key) = &signer
                && !stored.dir.join(modelforge_registry::SIGNATURE).is_file()
            {
                registry.sign(spec.name(), version, key)?;
            }
            stored
        }
        None => {
            let mut artifacts = vec![
                Artifact {
                    name: modelforge_train::run::WEIGHTS.into(),
                    bytes: candidate.weights.clone(),
                },
                Artifact {
                    name: "spec.toml".into(),
                    bytes: spec.to_toml().into_bytes(),
                },
                Artifact {
                    name: "evaluation.json".into(),
                    bytes: serde_json::to_vec_pretty(&candidate.test)
                        .expect("an evaluation serialises"),
                },
            ];
            if let Some(tokenizer) = &candidate.tokenizer {
                artifacts.push(Artifact {
                    name: TOKENIZER.into(),
                    bytes: tokenizer.clone(),
                });
            }
            registry.publish_signed(manifest(spec, candidate), &artifacts, signer.as_ref())?
        }
    };
    let mut aliases = Vec::new();
    if gate.is_none_or(|g| g.passed) {
        for alias in &spec.deploy.aliases {
            registry.set_alias(spec.name(), alias, version.manifest.version)?;
            aliases.push(alias.clone());
        }
    }
    Ok(Published {
        name: version.manifest.name.clone(),
        version: version.manifest.version,
        dir: version.dir,
        aliases,
        reused: earlier.is_some(),
    })
}

/// Evaluates a trained network on the test split and records the result with its run.
pub fn evaluate_run(
    spec: &Spec,
    network: &modelforge_model::Network,
    data: &modelforge_data::Prepared,
    run_dir: &Path,
    device: &modelforge_model::burn::tensor::Device,
) -> Result<Evaluation, PipelineError> {
    let test = modelforge_train::evaluate_test(spec, network, data, device)?;
    modelforge_train::run::record_evaluation(run_dir, &test)?;
    Ok(test)
}

/// Tells a running modelforge server to load a model's newest versions through the repository
/// API; returns the URL it called.
pub fn notify(server: &str, model: &str, token: Option<&str>) -> Result<String, PipelineError> {
    let url = format!(
        "{}/v2/repository/models/{model}/load",
        server.trim_end_matches('/')
    );
    let mut request = ureq::post(&url).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", &format!("Bearer {token}"));
    }
    match request.send("{}") {
        Ok(_) => Ok(url),
        Err(e) => Err(PipelineError::Deploy {
            url,
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(gate: &str) -> Spec {
        let text = format!(
            r#"
[model]
name = "g"
input = {{ name = "x", shape = [2] }}
output = {{ name = "y", task = "classification", classes = 2 }}
layers = [{{ dense = {{ units = 2 }} }}]
[data]
format = "csv"
train = {{ path = "d.csv" }}
[train]
epochs = 1
batch_size = 1
optimizer = {{ kind = "sgd", lr = 0.1 }}
[deploy]
gate = {gate}
"#
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d.csv"), "a,b,y\n1,2,0\n").unwrap();
        Spec::parse(&text, Path::new("s.toml"), dir.path()).unwrap()
    }

    fn metrics(accuracy: f64) -> BTreeMap<String, f64> {
        BTreeMap::from([("test_accuracy".to_string(), accuracy)])
    }

    fn loss_of(value: f64) -> BTreeMap<String, f64> {
        BTreeMap::from([("test_loss".to_string(), value)])
    }

    #[test]
    fn a_threshold_gate_passes_at_the_threshold() {
        let s = spec(r#"{ metric = "test_accuracy", min = 0.9 }"#);
        assert!(judge(&s, &metrics(0.9), None).unwrap().passed);
        let failed = judge(&s, &metrics(0.89), None).unwrap();
        assert!(!failed.passed);
        assert_eq!(failed.rule, "≥ 0.9");
        assert!(
            !judge(&s, &BTreeMap::new(), None).unwrap().passed,
            "a missing metric fails"
        );
    }

    #[test]
    fn a_beat_gate_needs_the_margin_in_the_right_direction() {
        let base = |value| Baseline {
            alias: "production".into(),
            version: 3,
            value,
        };
        let s = spec(r#"{ metric = "test_accuracy", beat = "production", margin = 0.01 }"#);
        assert!(judge(&s, &metrics(0.95), Some(&base(0.94))).unwrap().passed);
        let close = judge(&s, &metrics(0.945), Some(&base(0.94))).unwrap();
        assert!(!close.passed);
        assert_eq!(close.rule, "> production@3 = 0.9400 by 0.01");
        assert!(
            judge(&s, &metrics(0.5), None).unwrap().passed,
            "nothing to beat yet"
        );
        let loss = spec(r#"{ metric = "test_loss", beat = "production" }"#);
        assert!(
            judge(&loss, &loss_of(0.1), Some(&base(0.2)))
                .unwrap()
                .passed
        );
        assert!(
            !judge(&loss, &loss_of(0.3), Some(&base(0.2)))
                .unwrap()
                .passed
        );
        assert!(
            !judge(&loss, &loss_of(0.2), Some(&base(0.2)))
                .unwrap()
                .passed,
            "equal loss"
        );
    }
}
