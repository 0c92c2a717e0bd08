//! Points of a search space: drawn at random or enumerated as a grid, and written into a
//! spec's TOML by key path.

use std::collections::BTreeMap;

use modelforge_data::Rng;
use modelforge_spec::tune::{Distribution, PathStep, Strategy, TuneSpec, lookup, parse_path};
use serde_json::Value;

/// One point: spec key path → value.
pub type Point = BTreeMap<String, Value>;

/// The points a search tries, in order: for random search the spec's own values first (so
/// the best is never worse than the default on the ranking metric), then draws from the
/// seed; for a grid every combination, up to `trials`.
pub fn points(tune: &TuneSpec, resolved: &Value) -> Vec<Point> {
    match tune.strategy {
        Strategy::Random => {
            let n = tune.trials.unwrap_or(1);
            let mut rng = Rng::new(modelforge_data::shuffle::mix(tune.seed, 0x7475_6e65));
            let default: Point = tune
                .space
                .keys()
                .map(|path| {
                    let steps = parse_path(path).expect("validated");
                    (
                        path.clone(),
                        lookup(resolved, &steps).expect("validated").clone(),
                    )
                })
                .collect();
            let mut out = vec![default];
            while out.len() < n {
                out.push(
                    tune.space
                        .iter()
                        .map(|(path, d)| (path.clone(), draw(d.get_ref(), &mut rng)))
                        .collect(),
                );
            }
            out.truncate(n);
            out
        }
        Strategy::Grid => {
            let mut out: Vec<Point> = vec![Point::new()];
            for (path, d) in &tune.space {
                let values = grid_values(d.get_ref());
                out = out
                    .into_iter()
                    .flat_map(|p| {
                        values.iter().map(move |v| {
                            let mut p = p.clone();
                            p.insert(path.clone(), v.clone());
                            p
                        })
                    })
                    .collect();
            }
            out.truncate(tune.trials.unwrap_or(usize::MAX));
            out
        }
    }
}

/// A uniform float in `[0, 1)` from 53 random bits.
fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn draw(d: &Distribution, rng: &mut Rng) -> Value {
    match d {
        Distribution::Choice(values) => {
            let i = rng.below(values.len() as u64) as usize;
            serde_json::to_value(&values[i]).expect("toml values convert")
        }
        Distribution::Uniform([a, b]) => Value::from(a + (b - a) * unit(rng)),
        Distribution::Loguniform([a, b]) => {
            Value::from((a.ln() + (b.ln() - a.ln()) * unit(rng)).exp())
        }
        Distribution::Int([a, b]) => Value::from(a + rng.below((b - a + 1) as u64) as i64),
    }
}

fn grid_values(d: &Distribution) -> Vec<Value> {
    match d {
        Distribution::Choice(values) => values
            .iter()
            .map(|v| serde_json::to_value(v).expect("toml values convert"))
            .collect(),
        Distribution::Int([a, b]) => (*a..=*b).map(Value::from).collect(),
        Distribution::Uniform(_) | Distribution::Loguniform(_) => {
            unreachable!("validated: grids take choice and int only")
        }
    }
}

/// Writes a point into a spec's TOML table; a path whose parent exists but whose key does
/// not (an option left out) is added.
pub fn apply(table: &mut toml::Table, point: &Point) -> Result<(), String> {
    for (path, value) in point {
        let steps = parse_path(path)?;
        let new: toml::Value = serde_json::from_value(value.clone())
            .map_err(|e| format!("{path}: {value} cannot be written to TOML: {e}"))?;
        let (last, parents) = steps.split_last().ok_or("empty path")?;
        let mut here = toml::Value::Table(std::mem::take(table));
        let result = set(&mut here, parents, last, new, path);
        if let toml::Value::Table(t) = here {
            *table = t;
        }
        result?;
    }
    Ok(())
}

fn set(
    root: &mut toml::Value,
    parents: &[PathStep],
    last: &PathStep,
    value: toml::Value,
    path: &str,
) -> Result<(), String> {
    let mut here = root;
    for step in parents {
        here = match (step, here) {
            (PathStep::Key(k), toml::Value::Table(t)) => t
                .get_mut(k)
                .ok_or_else(|| format!("{path}: no key {k:?} in the spec"))?,
            (PathStep::Index(i), toml::Value::Array(a)) => a
                .get_mut(*i)
                .ok_or_else(|| format!("{path}: index {i} is out of range"))?,
            _ => return Err(format!("{path} does not lead to a value in the spec")),
        };
    }
    match (last, here) {
        (PathStep::Key(k), toml::Value::Table(t)) => {
            t.insert(k.clone(), value);
        }
        (PathStep::Index(i), toml::Value::Array(a)) if *i < a.len() => a[*i] = value,
        _ => return Err(format!("{path} does not lead to a value in the spec")),
    }
    Ok(())
}

/// A point in words: `lr=0.0012, units=64`, with the last key of each path.
pub fn describe(point: &Point) -> String {
    point
        .iter()
        .map(|(path, v)| {
            let key = path.rsplit('.').next().unwrap_or(path);
            match v.as_f64() {
                Some(f) if v.is_f64() => format!("{key}={f:.4e}"),
                _ => format!("{key}={v}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tune(strategy: &str, trials: usize) -> TuneSpec {
        toml::from_str(&format!(
            r#"
strategy = "{strategy}"
trials = {trials}
seed = 3
metric = "val_accuracy"
[space]
"train.optimizer.lr" = {{ choice = [0.1, 0.01] }}
"model.layers[0].dense.units" = {{ int = [4, 6] }}
"#
        ))
        .unwrap()
    }

    #[test]
    fn random_search_starts_from_the_defaults_and_repeats_from_the_seed() {
        let resolved = json!({
            "train": { "optimizer": { "lr": 0.5 } },
            "model": { "layers": [{ "dense": { "units": 9 } }] },
        });
        let t = tune("random", 5);
        let a = points(&t, &resolved);
        assert_eq!(a.len(), 5);
        assert_eq!(a[0]["train.optimizer.lr"], json!(0.5));
        assert_eq!(a[0]["model.layers[0].dense.units"], json!(9));
        assert_eq!(a, points(&t, &resolved));
        for p in &a[1..] {
            let units = p["model.layers[0].dense.units"].as_i64().unwrap();
            assert!((4..=6).contains(&units));
        }
    }

    #[test]
    fn a_grid_is_every_combination() {
        let t = tune("grid", 100);
        let grid = points(&t, &json!({}));
        assert_eq!(grid.len(), 6);
        let mut limited = t.clone();
        limited.trials = Some(4);
        assert_eq!(points(&limited, &json!({})).len(), 4);
    }

    #[test]
    fn points_are_written_by_path() {
        let mut table: toml::Table = toml::from_str(
            "[train]\noptimizer = { kind = \"sgd\", lr = 0.1 }\n[model]\nlayers = [{ dense = { units = 3 } }]\n",
        )
        .unwrap();
        let point = Point::from([
            ("train.optimizer.lr".to_string(), json!(0.01)),
            ("model.layers[0].dense.units".to_string(), json!(7)),
            ("train.optimizer.momentum".to_string(), json!(0.9)),
        ]);
        apply(&mut table, &point).unwrap();
        assert_eq!(table["train"]["optimizer"]["lr"].as_float(), Some(0.01));
        assert_eq!(
            table["train"]["optimizer"]["momentum"].as_float(),
            Some(0.9)
        );
        assert_eq!(
            table["model"]["layers"][0]["dense"]["units"].as_integer(),
            Some(7)
        );
        let bad = Point::from([("model.layers[3].dense".to_string(), json!(1))]);
        assert!(
            apply(&mut table, &bad)
                .unwrap_err()
                .contains("out of range")
        );
        assert_eq!(describe(&point).matches('=').count(), 3);
    }
}
