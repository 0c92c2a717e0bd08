//! TensorFlow Serving's predict request and answer, decoded against a model's manifest
//! (REST's `/v1/models/…:predict` and `modelforge predict` read the same format).

use modelforge_serve::{InputTensor, Manifest, OutputTensor, Values};
use serde_json::{Value, json};

use crate::tensor::{from_json, to_json};

/// The input tensors of a predict request (`instances` or `inputs`) for a model, and
/// whether it was columnar.
pub fn inputs(request: &Value, manifest: &Manifest) -> Result<(Vec<InputTensor>, bool), String> {
    let names: Vec<&str> = manifest.inputs.iter().map(|t| t.name.as_str()).collect();
    let (columns, columnar) = tf_columns(request, &names)?;
    let inputs = manifest
        .inputs
        .iter()
        .zip(columns)
        .map(|(want, rows)| tf_input(want, manifest.batchable, &rows))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((inputs, columnar))
}

/// Each output split into its rows (along the first axis).
pub fn rows(o: &OutputTensor) -> Vec<Value> {
    let n = o.shape.first().map_or(1, |&n| n.max(1) as usize);
    let width = o.data.len() / n;
    (0..n)
        .map(|r| to_json(&o.data.slice(r * width..(r + 1) * width)))
        .collect()
}

/// The answer to a predict request: one output bare, several by name; rows under
/// `predictions`, or columns under `outputs` for a columnar request.
pub fn answer(outputs: &[OutputTensor], columnar: bool) -> Value {
    match outputs {
        [one] if columnar => json!({ "outputs": rows(one) }),
        [one] => json!({ "predictions": rows(one) }),
        many if columnar => {
            json!({ "outputs": many.iter().map(|o| (o.name.clone(), Value::Array(rows(o)))).collect::<serde_json::Map<_, _>>() })
        }
        many => {
            let per_output: Vec<Vec<Value>> = many.iter().map(rows).collect();
            let n = per_output.first().map_or(0, Vec::len);
            json!({ "predictions": (0..n).map(|r| many.iter().zip(&per_output).map(|(o, rows)| (o.name.clone(), rows[r].clone())).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>() })
        }
    }
}

/// The rows of each model input (in `names` order) of a TF-Serving request, and whether
/// it was columnar. Row format: `instances`, each a value (one-input models) or an object
/// by input name; columnar: `inputs`, a value (one input) or an object by input name.
fn tf_columns(request: &Value, names: &[&str]) -> Result<(Vec<Vec<Value>>, bool), String> {
    let by_name = |map: &serde_json::Map<String, Value>, what: &str| {
        names
            .iter()
            .map(|name| match map.get(*name) {
                Some(v) => Ok(v.clone()),
                None if names.len() == 1 && map.len() == 1 => {
                    Ok(map.values().next().cloned().unwrap_or_default())
                }
                None => Err(format!(
                    "{what} lacks input \"{name}\"; the model takes {}",
                    names.join(", ")
                )),
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let as_rows = |v: Value, name: &str| match v {
        Value::Array(rows) if !rows.is_empty() => Ok(rows),
        _ => Err(format!(
            "input \"{name}\" needs a non-empty list of instances"
        )),
    };
    match (request.get("instances"), request.get("inputs")) {
        (Some(Value::Array(instances)), None) => {
            if instances.is_empty() {
                return Err("no instances to predict".into());
            }
            let mut columns = vec![Vec::with_capacity(instances.len()); names.len()];
            for (i, instance) in instances.iter().enumerate() {
                let values = match instance {
                    Value::Object(map) => by_name(map, &format!("instance {i}"))?,
                    other if names.len() == 1 => vec![other.clone()],
                    _ => {
                        return Err(format!(
                            "instance {i} must be an object naming the inputs {}",
                            names.join(", ")
                        ));
                    }
                };
                for (column, value) in columns.iter_mut().zip(values) {
                    column.push(value);
                }
            }
            Ok((columns, false))
        }
        (None, Some(inputs)) => {
            let values = match inputs {
                Value::Object(map) => by_name(map, "\"inputs\"")?,
                other if names.len() == 1 => vec![other.clone()],
                _ => {
                    return Err(format!(
                        "\"inputs\" must be an object naming the inputs {}",
                        names.join(", ")
                    ));
                }
            };
            let columns = names
                .iter()
                .zip(values)
                .map(|(name, v)| as_rows(v, name))
                .collect::<Result<_, _>>()?;
            Ok((columns, true))
        }
        _ => Err(
            "the request needs \"instances\" (row format) or \"inputs\" (columnar format)".into(),
        ),
    }
}

/// One input of a TF-Serving request from its rows. Rows carry no shape: each is one
/// sample of the model's shape when its values fill it (nested or flat), else `[count]`
/// and the core says what is wrong. JSON numbers carry no datatype: they are the model's.
fn tf_input(
    want: &modelforge_serve::TensorInfo,
    batchable: bool,
    rows: &[Value],
) -> Result<InputTensor, String> {
    let sample = if batchable {
        &want.shape[..]
    } else {
        want.shape.get(1..).unwrap_or(&[])
    };
    let mut parts = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let part = from_json(&want.datatype, row)
            .map_err(|e| format!("instance {i} of input \"{}\": {e}", want.name))?;
        if let Some(first) = parts.first().map(Values::len).filter(|&n| n != part.len()) {
            return Err(format!(
                "instance {i} has {} values but instance 0 has {first}",
                part.len()
            ));
        }
        parts.push(part);
    }
    let count = parts[0].len();
    let mut shape = vec![rows.len() as i64];
    if count == sample.iter().product::<usize>() {
        shape.extend(sample.iter().map(|&d| d as i64));
    } else {
        shape.push(count as i64);
    }
    Ok(InputTensor {
        name: Some(want.name.clone()),
        datatype: want.datatype.clone(),
        shape,
        data: Values::concat(&parts.iter().collect::<Vec<_>>()),
    })
}
