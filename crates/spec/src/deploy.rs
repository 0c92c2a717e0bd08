//! The `[deploy]` section: where a trained model goes (parsed and validated only).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The `[deploy]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    /// Aliases given to a published version that passes the gate.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Promotion gate on a test metric.
    pub gate: Option<Spanned<Gate>>,
    /// A running modelforge server to tell about a promoted version.
    pub server: Option<Spanned<String>>,
    /// Serve the new version after publishing (`modelforge run`).
    #[serde(default = "yes")]
    pub serve: bool,
    /// Sign what `run` publishes with this key (else `MODELFORGE_SIGNING_KEY`, if set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign: Option<Spanned<Sign>>,
}

/// `sign = { key = "private.pem" }`: how published versions are signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sign {
    /// The private key (elliptic-curve PEM), relative to the spec's folder.
    pub key: PathBuf,
}

fn yes() -> bool {
    true
}

/// A promotion gate: the metric must reach `min`, stay under `max`, and/or beat the version an
/// alias points at by `margin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// Test metric, e.g. `test_accuracy`.
    pub metric: String,
    /// Lowest passing value.
    pub min: Option<f64>,
    /// Highest passing value.
    pub max: Option<f64>,
    /// An alias (e.g. `production`) whose version the new one must beat; passes when the
    /// alias does not exist yet.
    pub beat: Option<String>,
    /// How much better than `beat` the metric must be.
    #[serde(default)]
    pub margin: f64,
}

impl Gate {
    /// Whether a smaller value of the metric is better (losses and errors).
    pub fn lower_is_better(&self) -> bool {
        !crate::train::higher_is_better(&self.metric)
    }
}
