//! The `[deploy]` section: where a trained model goes (parsed and validated only).

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
}

fn yes() -> bool {
    true
}

/// A promotion gate: the metric must reach `min` (or stay under `max`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// Test metric, e.g. `test_accuracy`.
    pub metric: String,
    /// Lowest passing value.
    pub min: Option<f64>,
    /// Highest passing value.
    pub max: Option<f64>,
}
