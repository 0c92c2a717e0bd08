//! IDX files (the MNIST format), raw or gzip-compressed.

use std::path::Path;

use crate::{DataError, read_maybe_gz};

/// The contents of one IDX file: its dimensions and values as f32.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Dimensions; the first is the number of items.
    pub dims: Vec<usize>,
    /// Values in row-major order.
    pub values: Vec<f32>,
}

/// Reads an IDX file (unsigned/signed byte, i16, i32, f32 or f64 elements).
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let bytes = read_maybe_gz(path)?;
    parse_idx(&bytes).map_err(|reason| DataError::Corrupt {
        path: path.to_path_buf(),
        reason,
    })
}

fn parse_idx(bytes: &[u8]) -> Result<IdxArray, String> {
    if bytes.len() < 4 {
        return Err(format!(
            "only {} bytes: an IDX file starts with a 4-byte magic number",
            bytes.len()
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!(
            "magic number {:02x}{:02x}{:02x}{:02x} is not IDX (expected 0000 then type and rank, e.g. 00000803)",
            bytes[0], bytes[1], bytes[2], bytes[3]
        ));
    }
    let (width, kind) = match bytes[2] {
        0x08 => (1, 0x08),
        0x09 => (1, 0x09),
        0x0B => (2, 0x0B),
        0x0C => (4, 0x0C),
        0x0D => (4, 0x0D),
        0x0E => (8, 0x0E),
        other => return Err(format!("unknown IDX element type 0x{other:02x}")),
    };
    let rank = bytes[3] as usize;
    if rank == 0 {
        return Err("IDX rank is 0".into());
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(format!(
            "truncated header: {} bytes for a rank-{rank} file",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("dimensions overflow")?;
    let body = &bytes[header..];
    let expected = count * width;
    if body.len() != expected {
        return Err(format!(
            "dimensions {dims:?} need {expected} bytes of data but the file has {} — the file is truncated or corrupt",
            body.len()
        ));
    }
    let values = match kind {
        0x08 => body.iter().map(|&b| b as f32).collect(),
        0x09 => body.iter().map(|&b| b as i8 as f32).collect(),
        0x0B => body
            .chunks_exact(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]) as f32)
            .collect(),
        0x0C => body
            .chunks_exact(4)
            .map(|c| i32::from_be_bytes(c.try_into().expect("4 bytes")) as f32)
            .collect(),
        0x0D => body
            .chunks_exact(4)
            .map(|c| f32::from_be_bytes(c.try_into().expect("4 bytes")))
            .collect(),
        _ => body
            .chunks_exact(8)
            .map(|c| f64::from_be_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
    };
    Ok(IdxArray { dims, values })
}

/// Encodes u8 values as an IDX file (used by tests and examples that make small data sets).
pub fn encode_idx_u8(dims: &[usize], values: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    out.extend_from_slice(values);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_u8() {
        let bytes = encode_idx_u8(&[2, 2], &[1, 2, 3, 255]);
        let a = parse_idx(&bytes).unwrap();
        assert_eq!(a.dims, vec![2, 2]);
        assert_eq!(a.values, vec![1.0, 2.0, 3.0, 255.0]);
    }

    #[test]
    fn truncated_and_bad_magic_are_reported() {
        let bytes = encode_idx_u8(&[2, 2], &[1, 2, 3, 4]);
        assert!(parse_idx(&bytes[..10]).unwrap_err().contains("truncated"));
        assert!(parse_idx(b"PK\x03\x04rest").unwrap_err().contains("magic"));
        assert!(parse_idx(&[0, 0]).unwrap_err().contains("2 bytes"));
    }
}
