//! The modelforge stages wired together: a [`Trained`] model becomes a
//! [`Published`] registry version, promoted by the spec's gate.

use std::collections::BTreeMap;

use modelforge_registry::{Artifact, Lineage, Manifest, Registry, RegistryError, TensorInfo};
use modelforge_spec::Spec;
use modelforge_train::Trained;

/// Everything that can go wrong publishing.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The registry refused the version or alias.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// The gate's verdict on a version.
#[derive(Debug, Clone, PartialEq)]
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

/// A published version.
#[derive(Debug, Clone)]
pub struct Published {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// Its folder.
    pub dir: std::path::PathBuf,
    /// Aliases given to it.
    pub aliases: Vec<String>,
    /// The gate's verdict, if the spec has a gate.
    pub gate: Option<GateOutcome>,
}

/// The manifest describing a trained model.
pub fn manifest(spec: &Spec, trained: &Trained) -> Manifest {
    let input = spec.model.input.get_ref();
    let output = spec.model.output.get_ref();
    let mut metrics: BTreeMap<String, f64> = trained.final_metrics.clone();
    metrics.extend(trained.test.metrics.clone());
    metrics.remove("lr");
    Manifest {
        name: spec.name().to_string(),
        version: 0,
        format: "modelforge-native".into(),
        input: TensorInfo {
            name: input.name.clone(),
            datatype: input.dtype.protocol_name().into(),
            shape: input.shape.clone(),
        },
        output: TensorInfo {
            name: output.name.clone(),
            datatype: "FP32".into(),
            shape: spec.output_shape(),
        },
        task: output.task.name().into(),
        labels: output.labels.clone(),
        metrics,
        lineage: Lineage {
            spec_hash: trained.spec_hash.clone(),
            data_fingerprint: trained.data_fingerprint.clone(),
            run_id: trained.run_id.clone(),
            created: 0,
            modelforge_version: env!("CARGO_PKG_VERSION").into(),
        },
    }
}

/// Judges test metrics against the spec's gate (None when there is no gate).
pub fn judge(spec: &Spec, metrics: &BTreeMap<String, f64>) -> Option<GateOutcome> {
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
    Some(GateOutcome {
        metric: gate.metric.clone(),
        value,
        passed,
        rule: rules.join(" and "),
    })
}

/// Publishes a trained model as a new version; aliases from `[deploy]` are set only when the
/// gate passes (or there is none).
pub fn publish(
    spec: &Spec,
    trained: &Trained,
    registry: &Registry,
) -> Result<Published, PipelineError> {
    let manifest = manifest(spec, trained);
    let mut meta = BTreeMap::new();
    meta.insert("model".to_string(), spec.name().to_string());
    meta.insert("run_id".to_string(), trained.run_id.clone());
    let artifacts = vec![
        Artifact {
            name: "weights.safetensors".into(),
            bytes: trained.network.safetensors_bytes(meta),
        },
        Artifact {
            name: "spec.toml".into(),
            bytes: spec.to_toml().into_bytes(),
        },
        Artifact {
            name: "evaluation.json".into(),
            bytes: serde_json::to_vec_pretty(&trained.test).expect("evaluation serialises"),
        },
    ];
    let version = registry.publish(manifest, &artifacts)?;
    let gate = judge(spec, &trained.test.metrics);
    let mut aliases = Vec::new();
    if gate.as_ref().is_none_or(|g| g.passed) {
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
        gate,
    })
}
