//! Tensor bytes shared by the protocols: little-endian raw data to f32 values.

/// Decodes little-endian tensor bytes of a protocol datatype into f32 values.
pub fn decode_binary(datatype: &str, bytes: &[u8]) -> Result<Vec<f32>, String> {
    let width = match datatype {
        "FP32" | "INT32" | "UINT32" => 4,
        "FP64" | "INT64" | "UINT64" => 8,
        "INT16" | "UINT16" => 2,
        "UINT8" | "INT8" | "BOOL" => 1,
        other => return Err(format!("datatype {other:?} is not supported; send FP32")),
    };
    if !bytes.len().is_multiple_of(width) {
        return Err(format!(
            "{} bytes of {datatype} data is not a whole number of elements",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(width)
        .map(|c| match datatype {
            "FP32" => f32::from_le_bytes(c.try_into().expect("4 bytes")),
            "INT32" => i32::from_le_bytes(c.try_into().expect("4 bytes")) as f32,
            "UINT32" => u32::from_le_bytes(c.try_into().expect("4 bytes")) as f32,
            "FP64" => f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
            "INT64" => i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
            "UINT64" => u64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
            "INT16" => i16::from_le_bytes(c.try_into().expect("2 bytes")) as f32,
            "UINT16" => u16::from_le_bytes(c.try_into().expect("2 bytes")) as f32,
            "INT8" => c[0] as i8 as f32,
            _ => c[0] as f32,
        })
        .collect())
}

/// f32 values as little-endian bytes.
pub fn encode_fp32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_tensors_decode_little_endian() {
        let fp32 = encode_fp32(&[1.5, -2.0]);
        assert_eq!(decode_binary("FP32", &fp32).ok(), Some(vec![1.5, -2.0]));
        let int64: Vec<u8> = [7i64, -3].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(decode_binary("INT64", &int64).ok(), Some(vec![7.0, -3.0]));
        assert!(decode_binary("FP32", &fp32[..5]).is_err());
        assert!(decode_binary("BYTES", &fp32).is_err());
    }
}
