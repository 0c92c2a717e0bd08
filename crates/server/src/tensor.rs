//! Tensor values in JSON, as the V2 and TF-Serving REST bodies carry them.

use modelforge_serve::Values;
use serde_json::{Value, json};

/// Collects the leaves of nested JSON arrays, converting each with `convert`.
fn leaves<T>(
    value: &Value,
    datatype: &str,
    convert: &dyn Fn(&Value) -> Option<T>,
    out: &mut Vec<T>,
) -> Result<(), String> {
    match value {
        Value::Array(items) => items
            .iter()
            .try_for_each(|v| leaves(v, datatype, convert, out)),
        leaf => match convert(leaf) {
            Some(v) => {
                out.push(v);
                Ok(())
            }
            None => {
                let mut shown = leaf.to_string();
                if shown.len() > 40 {
                    // Cut at a character boundary: a byte count may fall inside one.
                    let end = (0..=40).rev().find(|&i| shown.is_char_boundary(i));
                    shown.truncate(end.unwrap_or(0));
                    shown.push('…');
                }
                Err(format!("{shown} is not {datatype} data"))
            }
        },
    }
}

/// Decodes tensor data (a flat or nested JSON array, or one value) of a datatype.
pub fn from_json(datatype: &str, value: &Value) -> Result<Values, String> {
    fn collect<T>(
        value: &Value,
        datatype: &str,
        convert: &dyn Fn(&Value) -> Option<T>,
    ) -> Result<Vec<T>, String> {
        let mut out = Vec::new();
        leaves(value, datatype, convert, &mut out)?;
        Ok(out)
    }
    let int = |v: &Value| v.as_i64();
    Ok(match datatype {
        "BOOL" => Values::Bool(collect(value, datatype, &Value::as_bool)?),
        "UINT8" => Values::U8(collect(value, datatype, &|v| {
            u8::try_from(v.as_u64()?).ok()
        })?),
        "INT32" => Values::I32(collect(value, datatype, &|v| i32::try_from(int(v)?).ok())?),
        "INT64" => Values::I64(collect(value, datatype, &int)?),
        "FP32" => Values::F32(collect(value, datatype, &|v| Some(v.as_f64()? as f32))?),
        "FP64" => Values::F64(collect(value, datatype, &Value::as_f64)?),
        other => return Err(modelforge_serve::tensor::unsupported(other)),
    })
}

/// The values as a flat JSON array.
pub fn to_json(values: &Values) -> Value {
    match values {
        Values::Bool(v) => json!(v),
        Values::U8(v) => json!(v),
        Values::I32(v) => json!(v),
        Values::I64(v) => json!(v),
        Values::F32(v) => json!(v),
        Values::F64(v) => json!(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_data_decodes_by_datatype() {
        let nested = json!([[1, 2], [3, 4]]);
        assert_eq!(
            from_json("INT64", &nested),
            Ok(Values::I64(vec![1, 2, 3, 4]))
        );
        assert_eq!(
            from_json("FP32", &json!([1.5, -2])),
            Ok(Values::F32(vec![1.5, -2.0]))
        );
        assert_eq!(
            from_json("BOOL", &json!([true, false])),
            Ok(Values::Bool(vec![true, false]))
        );
        assert_eq!(
            from_json("INT64", &json!([1.5])),
            Err("1.5 is not INT64 data".into())
        );
        assert_eq!(
            from_json("UINT8", &json!([256])),
            Err("256 is not UINT8 data".into())
        );
        assert!(from_json("FP32", &json!(["a"])).is_err());
        // A long non-ASCII leaf is shown cut at a character boundary, not a panic.
        assert_eq!(
            from_json("FP32", &json!(["é".repeat(30)])),
            Err(format!("\"{}… is not FP32 data", "é".repeat(19)))
        );
        assert!(
            from_json("BYTES", &json!(["a"]))
                .unwrap_err()
                .contains("\"BYTES\" is not supported")
        );
        assert_eq!(to_json(&Values::I32(vec![1, -1])), json!([1, -1]));
    }
}
