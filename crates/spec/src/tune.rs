//! The `[tune]` section: a search space over spec keys, the search strategy, and
//! successive halving that stops weak trials early.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use toml::Spanned;

/// The `[tune]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneSpec {
    /// How points are drawn from the space.
    #[serde(default)]
    pub strategy: Strategy,
    /// Trials to run (random: required; grid: at most this many points, default all).
    pub trials: Option<usize>,
    /// Seed of the draws.
    #[serde(default)]
    pub seed: u64,
    /// The metric trials are ranked by, e.g. `val_accuracy` (higher is better for accuracy,
    /// lower for losses and errors).
    pub metric: String,
    /// Successive halving (ASHA): stop a trial at a rung when it is outside the best 1/eta.
    pub halving: Option<Halving>,
    /// Spec key path → distribution, e.g. `"train.optimizer.lr" = { loguniform = [1e-4, 1e-2] }`.
    pub space: BTreeMap<String, Spanned<Distribution>>,
}

/// How trials are drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Independent random draws.
    #[default]
    Random,
    /// Every combination (`choice` and `int` values; continuous ranges are refused).
    Grid,
}

/// Successive-halving rungs: `min_epochs`, `min_epochs·eta`, `min_epochs·eta²`, … epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Halving {
    /// Epochs before the first rung.
    #[serde(default = "one")]
    pub min_epochs: usize,
    /// Keep the best 1/eta at each rung.
    #[serde(default = "three")]
    pub eta: usize,
}

fn one() -> usize {
    1
}

fn three() -> usize {
    3
}

/// One key's distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// One of the listed values.
    Choice(Vec<toml::Value>),
    /// A float uniform in `[low, high)`.
    Uniform([f64; 2]),
    /// A float whose logarithm is uniform in `[ln low, ln high)`.
    Loguniform([f64; 2]),
    /// An integer uniform in `[low, high]`.
    Int([i64; 2]),
}

impl Distribution {
    /// Why the range is empty or invalid, if it is.
    pub fn problem(&self) -> Option<String> {
        match self {
            Distribution::Choice(v) if v.is_empty() => Some("choice is empty".into()),
            Distribution::Uniform([a, b]) if !(a < b && a.is_finite() && b.is_finite()) => Some(
                format!("uniform [{a}, {b}] is empty: give [low, high] with low < high"),
            ),
            Distribution::Loguniform([a, b]) if !(*a > 0.0 && a < b && b.is_finite()) => Some(
                format!("loguniform [{a}, {b}] is empty: give [low, high] with 0 < low < high"),
            ),
            Distribution::Int([a, b]) if a > b => Some(format!(
                "int [{a}, {b}] is empty: give [low, high] with low ≤ high"
            )),
            _ => None,
        }
    }
}

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    /// `key`
    Key(String),
    /// `[i]`
    Index(usize),
}

/// Parses `model.layers[0].dense.units` into steps.
pub fn parse_path(path: &str) -> Result<Vec<PathStep>, String> {
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if key.is_empty() {
            return Err(format!("{path:?} has an empty key"));
        }
        steps.push(PathStep::Key(key.to_string()));
        while let Some(inner) = rest.strip_prefix('[') {
            let Some(end) = inner.find(']') else {
                return Err(format!("{path:?} has an unclosed ["));
            };
            let index = inner[..end]
                .parse()
                .map_err(|_| format!("{path:?}: {:?} is not an index", &inner[..end]))?;
            steps.push(PathStep::Index(index));
            rest = &inner[end + 1..];
        }
        if !rest.is_empty() {
            return Err(format!("{path:?}: unexpected {rest:?}"));
        }
    }
    Ok(steps)
}

/// The value at a path of a resolved spec (as JSON), or what is there instead.
pub fn lookup<'a>(root: &'a Value, steps: &[PathStep]) -> Result<&'a Value, String> {
    let mut here = root;
    let mut walked = String::new();
    for step in steps {
        here = match (step, here) {
            (PathStep::Key(k), Value::Object(map)) => match map.get(k) {
                Some(v) => v,
                None => {
                    let keys: Vec<&str> = map.keys().map(String::as_str).collect();
                    let at = if walked.is_empty() {
                        "the spec"
                    } else {
                        &walked
                    };
                    return Err(format!(
                        "{at} has no key {k:?} (it has {})",
                        keys.join(", ")
                    ));
                }
            },
            (PathStep::Index(i), Value::Array(items)) => items.get(*i).ok_or_else(|| {
                format!(
                    "{walked} has {} entries, so [{i}] is out of range",
                    items.len()
                )
            })?,
            (PathStep::Key(k), _) => {
                return Err(format!("{walked} is not a table, so .{k} cannot follow it"));
            }
            (PathStep::Index(i), _) => {
                return Err(format!(
                    "{walked} is not an array, so [{i}] cannot follow it"
                ));
            }
        };
        match step {
            PathStep::Key(k) if walked.is_empty() => walked = k.clone(),
            PathStep::Key(k) => walked = format!("{walked}.{k}"),
            PathStep::Index(i) => walked = format!("{walked}[{i}]"),
        }
    }
    Ok(here)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_parse_and_look_up() {
        let steps = parse_path("model.layers[1].dense.units").unwrap();
        assert_eq!(
            steps,
            [
                PathStep::Key("model".into()),
                PathStep::Key("layers".into()),
                PathStep::Index(1),
                PathStep::Key("dense".into()),
                PathStep::Key("units".into()),
            ]
        );
        let spec = json!({ "model": { "layers": [{ "relu": {} }, { "dense": { "units": 64 } }] } });
        assert_eq!(lookup(&spec, &steps).unwrap(), &json!(64));
        let err = lookup(&spec, &parse_path("model.layer").unwrap()).unwrap_err();
        assert_eq!(err, "model has no key \"layer\" (it has layers)");
        let err = lookup(&spec, &parse_path("model.layers[5]").unwrap()).unwrap_err();
        assert_eq!(err, "model.layers has 2 entries, so [5] is out of range");
        assert!(parse_path("a..b").is_err());
        assert!(parse_path("a[x]").is_err());
        assert!(parse_path("a[1").is_err());
    }

    #[test]
    fn empty_ranges_are_named() {
        assert!(Distribution::Uniform([1.0, 1.0]).problem().is_some());
        assert!(Distribution::Loguniform([0.0, 1.0]).problem().is_some());
        assert!(Distribution::Int([3, 2]).problem().is_some());
        assert!(Distribution::Choice(vec![]).problem().is_some());
        assert!(Distribution::Int([2, 2]).problem().is_none());
    }
}
