//! Tensor values in JSON, as the V2 and TF-Serving REST bodies carry them.

use std::fmt;

use modelforge_serve::Values;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};

/// Tensor data as read from JSON (a flat or nested array, or one value): its leaves in
/// order, read in the same pass as the rest of the request and typed once the datatype
/// is known. No JSON tree is built for the numbers.
#[derive(Debug, Default)]
pub struct JsonData {
    leaves: Vec<Leaf>,
    /// How the first leaf that is no JSON scalar (a string, null, an object) reads.
    first_other: Option<String>,
}

/// One leaf of [`JsonData`].
#[derive(Debug, Clone, Copy)]
enum Leaf {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// A string, null or object: data of no datatype served.
    Other,
}

impl Leaf {
    /// The leaf as JSON shows it, in messages.
    fn shown(self, first_other: &Option<String>) -> String {
        match self {
            Leaf::Bool(b) => b.to_string(),
            Leaf::Int(i) => i.to_string(),
            Leaf::UInt(u) => u.to_string(),
            Leaf::Float(f) => json!(f).to_string(),
            Leaf::Other => first_other.clone().unwrap_or_default(),
        }
    }
    fn as_f64(self) -> Option<f64> {
        match self {
            Leaf::Int(i) => Some(i as f64),
            Leaf::UInt(u) => Some(u as f64),
            Leaf::Float(f) => Some(f),
            _ => None,
        }
    }
    fn as_i64(self) -> Option<i64> {
        match self {
            Leaf::Int(i) => Some(i),
            Leaf::UInt(u) => i64::try_from(u).ok(),
            _ => None,
        }
    }
}

impl JsonData {
    /// The leaves as values of `datatype`; the first that does not convert is named.
    pub fn values(&self, datatype: &str) -> Result<Values, String> {
        fn integer<T: TryFrom<i64>>(leaf: Leaf) -> Option<T> {
            T::try_from(leaf.as_i64()?).ok()
        }
        Ok(match datatype {
            "BOOL" => Values::Bool(self.typed(datatype, |l| match l {
                Leaf::Bool(b) => Some(b),
                _ => None,
            })?),
            "UINT8" => Values::U8(self.typed(datatype, integer::<u8>)?),
            "INT32" => Values::I32(self.typed(datatype, integer::<i32>)?),
            "INT64" => Values::I64(self.typed(datatype, Leaf::as_i64)?),
            "FP32" => Values::F32(self.typed(datatype, |l| Some(l.as_f64()? as f32))?),
            "FP64" => Values::F64(self.typed(datatype, Leaf::as_f64)?),
            other => return Err(modelforge_serve::tensor::unsupported(other)),
        })
    }

    fn typed<T>(
        &self,
        datatype: &str,
        convert: impl Fn(Leaf) -> Option<T>,
    ) -> Result<Vec<T>, String> {
        self.leaves
            .iter()
            .map(|&leaf| {
                convert(leaf).ok_or_else(|| {
                    let mut shown = leaf.shown(&self.first_other);
                    if shown.len() > 40 {
                        // Cut at a character boundary: a byte count may fall inside one.
                        let end = (0..=40).rev().find(|&i| shown.is_char_boundary(i));
                        shown.truncate(end.unwrap_or(0));
                        shown.push('…');
                    }
                    format!("{shown} is not {datatype} data")
                })
            })
            .collect()
    }
}

impl<'de> Deserialize<'de> for JsonData {
    fn deserialize<D: Deserializer<'de>>(data: D) -> Result<JsonData, D::Error> {
        let mut out = JsonData::default();
        Leaves(&mut out).deserialize(data)?;
        Ok(out)
    }
}

/// Appends the leaves of nested JSON arrays to a [`JsonData`].
struct Leaves<'a>(&'a mut JsonData);

impl Leaves<'_> {
    fn push<E>(self, leaf: Leaf) -> Result<(), E> {
        self.0.leaves.push(leaf);
        Ok(())
    }

    fn other<E>(self, shown: impl FnOnce() -> String) -> Result<(), E> {
        if self.0.first_other.is_none() {
            self.0.first_other = Some(shown());
        }
        self.push(Leaf::Other)
    }
}

impl<'de> DeserializeSeed<'de> for Leaves<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, data: D) -> Result<(), D::Error> {
        data.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Leaves<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("tensor data: a value or nested lists of values")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.push(Leaf::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.push(Leaf::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.push(Leaf::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.push(Leaf::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.other(|| json!(v).to_string())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.other(|| "null".into())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let object = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        self.other(|| object.to_string())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let data = self.0;
        while items.next_element_seed(Leaves(&mut *data))?.is_some() {}
        Ok(())
    }
}

/// Decodes tensor data held in a JSON tree (TF-Serving rows and columns).
pub fn from_json(datatype: &str, value: &Value) -> Result<Values, String> {
    JsonData::deserialize(value)
        .map_err(|e| e.to_string())?
        .values(datatype)
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

    #[test]
    fn data_read_from_text_decodes_as_data_read_from_a_tree() {
        let cases = [
            ("FP32", "[[0.1, 2], [-3, 1e-3]]"),
            ("FP64", "[0.1, 18446744073709551615]"),
            ("INT64", "[9223372036854775807, -9223372036854775808]"),
            ("INT64", "[9223372036854775808]"),
            ("INT32", "[2147483648]"),
            ("UINT8", "[[255], [-1]]"),
            ("BOOL", "[true, [false]]"),
            ("BOOL", "[1]"),
            ("FP32", "7"),
            ("FP32", "[1, null, \"a\"]"),
            ("FP32", "[{\"x\": [1, 2]}]"),
            ("INT64", "[1.5, \"a\"]"),
        ];
        for (datatype, text) in cases {
            let read: JsonData = serde_json::from_str(text).unwrap();
            let tree: Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                read.values(datatype),
                from_json(datatype, &tree),
                "{datatype} {text}"
            );
        }
        let read: JsonData = serde_json::from_str("[1, {\"x\": 1}, \"a\"]").unwrap();
        assert_eq!(
            read.values("FP32"),
            Err("{\"x\":1} is not FP32 data".into())
        );
        let read: JsonData = serde_json::from_str("[1, 2.5, \"a\"]").unwrap();
        assert_eq!(read.values("INT64"), Err("2.5 is not INT64 data".into()));
    }
}
