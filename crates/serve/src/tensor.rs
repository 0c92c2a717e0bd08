//! Typed tensor values as the protocols carry them: one vector per Open Inference
//! Protocol datatype, little-endian raw bytes, concatenation along the batch axis.

use std::ops::Range;

use modelforge_registry::TensorInfo;

/// A tensor's values, row-major, in one of the datatypes the core computes with.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// `BOOL`.
    Bool(Vec<bool>),
    /// `UINT8`.
    U8(Vec<u8>),
    /// `INT32`.
    I32(Vec<i32>),
    /// `INT64`.
    I64(Vec<i64>),
    /// `FP32`.
    F32(Vec<f32>),
    /// `FP64`.
    F64(Vec<f64>),
}

/// The datatypes the core computes with, by their protocol names.
pub const DATATYPES: &[&str] = &["BOOL", "UINT8", "INT32", "INT64", "FP32", "FP64"];

/// Applies `$body` to the vector inside a [`Values`], whatever its element type.
macro_rules! each {
    ($values:expr, $v:ident => $body:expr) => {
        match $values {
            Values::Bool($v) => $body,
            Values::U8($v) => $body,
            Values::I32($v) => $body,
            Values::I64($v) => $body,
            Values::F32($v) => $body,
            Values::F64($v) => $body,
        }
    };
}

/// Builds the same-typed [`Values`] variant as `$like` from `$body`, which sees the vector.
macro_rules! map_same {
    ($like:expr, $v:ident => $body:expr) => {
        match $like {
            Values::Bool($v) => Values::Bool($body),
            Values::U8($v) => Values::U8($body),
            Values::I32($v) => Values::I32($body),
            Values::I64($v) => Values::I64($body),
            Values::F32($v) => Values::F32($body),
            Values::F64($v) => Values::F64($body),
        }
    };
}

impl Values {
    /// The protocol name of the datatype, e.g. `FP32`.
    pub fn datatype(&self) -> &'static str {
        match self {
            Values::Bool(_) => "BOOL",
            Values::U8(_) => "UINT8",
            Values::I32(_) => "INT32",
            Values::I64(_) => "INT64",
            Values::F32(_) => "FP32",
            Values::F64(_) => "FP64",
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per element of a supported datatype, `None` for any other name.
    pub fn width(datatype: &str) -> Option<usize> {
        Some(match datatype {
            "BOOL" | "UINT8" => 1,
            "INT32" | "FP32" => 4,
            "INT64" | "FP64" => 8,
            _ => return None,
        })
    }

    /// `len` zeros (false) of a supported datatype.
    pub fn zeros(datatype: &str, len: usize) -> Result<Values, String> {
        Ok(match datatype {
            "BOOL" => Values::Bool(vec![false; len]),
            "UINT8" => Values::U8(vec![0; len]),
            "INT32" => Values::I32(vec![0; len]),
            "INT64" => Values::I64(vec![0; len]),
            "FP32" => Values::F32(vec![0.0; len]),
            "FP64" => Values::F64(vec![0.0; len]),
            other => return Err(unsupported(other)),
        })
    }

    /// Decodes little-endian raw bytes of a datatype (the binary tensor extension and
    /// gRPC's `raw_input_contents`).
    pub fn from_le_bytes(datatype: &str, bytes: &[u8]) -> Result<Values, String> {
        let width = Values::width(datatype).ok_or_else(|| unsupported(datatype))?;
        if !bytes.len().is_multiple_of(width) {
            return Err(format!(
                "{} bytes of {datatype} data is not a whole number of {width}-byte elements",
                bytes.len()
            ));
        }
        macro_rules! decode {
            ($variant:ident, $t:ty) => {
                Values::$variant(
                    bytes
                        .chunks_exact(width)
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("width")))
                        .collect(),
                )
            };
        }
        Ok(match datatype {
            "BOOL" => Values::Bool(bytes.iter().map(|&b| b != 0).collect()),
            "UINT8" => Values::U8(bytes.to_vec()),
            "INT32" => decode!(I32, i32),
            "INT64" => decode!(I64, i64),
            "FP32" => decode!(F32, f32),
            _ => decode!(F64, f64),
        })
    }

    /// The values as little-endian raw bytes.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Values::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
            Values::U8(v) => v.clone(),
            Values::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// The elements in `range` (element indices).
    pub fn slice(&self, range: Range<usize>) -> Values {
        map_same!(self, v => v[range].to_vec())
    }

    /// The parts joined end to end (along the batch axis); all must share a datatype.
    pub fn concat(parts: &[&Values]) -> Result<Values, String> {
        let first = parts.first().ok_or("nothing to concatenate")?;
        let total = parts.iter().map(|p| p.len()).sum();
        let mut out = map_same!(first, _v => Vec::with_capacity(total));
        for part in parts {
            match (&mut out, part) {
                (Values::Bool(o), Values::Bool(p)) => o.extend_from_slice(p),
                (Values::U8(o), Values::U8(p)) => o.extend_from_slice(p),
                (Values::I32(o), Values::I32(p)) => o.extend_from_slice(p),
                (Values::I64(o), Values::I64(p)) => o.extend_from_slice(p),
                (Values::F32(o), Values::F32(p)) => o.extend_from_slice(p),
                (Values::F64(o), Values::F64(p)) => o.extend_from_slice(p),
                (o, p) => {
                    return Err(format!(
                        "cannot join {} values to {} values",
                        p.datatype(),
                        o.datatype()
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The values as f32 (what the native engine computes with).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Values::Bool(v) => v.iter().map(|&b| f32::from(u8::from(b))).collect(),
            Values::U8(v) => v.iter().map(|&x| f32::from(x)).collect(),
            Values::I32(v) => v.iter().map(|&x| x as f32).collect(),
            Values::I64(v) => v.iter().map(|&x| x as f32).collect(),
            Values::F32(v) => v.clone(),
            Values::F64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
}

/// One sample of zeros for each of `tensors` (a warm-up or trial run).
pub fn zeros_for(tensors: &[TensorInfo]) -> Result<Vec<Values>, String> {
    tensors
        .iter()
        .map(|t| Values::zeros(&t.datatype, t.len()))
        .collect()
}

/// The message for a datatype the core does not compute with.
pub fn unsupported(datatype: &str) -> String {
    format!(
        "datatype {datatype:?} is not supported; use one of {}",
        DATATYPES.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_round_trip_for_every_datatype() {
        for values in [
            Values::Bool(vec![true, false]),
            Values::U8(vec![0, 255]),
            Values::I32(vec![-7, i32::MAX]),
            Values::I64(vec![i64::MIN, 3]),
            Values::F32(vec![1.5, -2.0]),
            Values::F64(vec![f64::EPSILON, -0.25]),
        ] {
            let bytes = values.to_le_bytes();
            assert_eq!(bytes.len(), 2 * Values::width(values.datatype()).unwrap());
            assert_eq!(
                Values::from_le_bytes(values.datatype(), &bytes).unwrap(),
                values
            );
        }
    }

    #[test]
    fn bad_bytes_and_datatypes_are_named() {
        let err = Values::from_le_bytes("FP32", &[0; 5]).unwrap_err();
        assert!(err.contains("5 bytes of FP32"), "{err}");
        let err = Values::from_le_bytes("BYTES", &[0; 4]).unwrap_err();
        assert!(err.contains("\"BYTES\" is not supported"), "{err}");
        assert!(Values::zeros("FP16", 1).is_err());
    }

    #[test]
    fn parts_join_and_slice_back() {
        let a = Values::I64(vec![1, 2]);
        let b = Values::I64(vec![3]);
        let joined = Values::concat(&[&a, &b]).unwrap();
        assert_eq!(joined, Values::I64(vec![1, 2, 3]));
        assert_eq!(joined.slice(2..3), b);
        let err = Values::concat(&[&a, &Values::F32(vec![1.0])]).unwrap_err();
        assert_eq!(err, "cannot join FP32 values to INT64 values");
    }
}
