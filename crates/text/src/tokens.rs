//! Token files: the ids of a split as little-endian `u16` (vocabularies up to 65,536) or
//! `u32`, written once and read by memory map.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::TextError;

/// How wide each id is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenWidth {
    /// Two bytes per id.
    U16,
    /// Four bytes per id.
    U32,
}

impl TokenWidth {
    /// The narrowest width that holds every id of a vocabulary.
    pub fn for_vocab(vocab: usize) -> TokenWidth {
        match vocab <= 1 << 16 {
            true => TokenWidth::U16,
            false => TokenWidth::U32,
        }
    }

    /// Bytes per id.
    pub fn bytes(self) -> usize {
        match self {
            TokenWidth::U16 => 2,
            TokenWidth::U32 => 4,
        }
    }

    /// The file extension that records the width.
    pub fn extension(self) -> &'static str {
        match self {
            TokenWidth::U16 => "u16",
            TokenWidth::U32 => "u32",
        }
    }

    fn of(path: &Path) -> Option<TokenWidth> {
        match path.extension()?.to_str()? {
            "u16" => Some(TokenWidth::U16),
            "u32" => Some(TokenWidth::U32),
            _ => None,
        }
    }
}

/// The ids of one split, memory-mapped from their file.
pub struct Tokens {
    map: Option<memmap2::Mmap>,
    width: TokenWidth,
    path: PathBuf,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({}, {} ids)", self.path.display(), self.len())
    }
}

impl Tokens {
    /// Writes ids to `stem` + `.u16`/`.u32` (atomically: a reader never sees part of it);
    /// returns the file's path, for [`Tokens::open`].
    pub fn write(stem: &Path, ids: &[u32], width: TokenWidth) -> Result<PathBuf, TextError> {
        let path = stem.with_extension(width.extension());
        let io = |source| TextError::Io {
            path: path.clone(),
            source,
        };
        let mut bytes = Vec::with_capacity(ids.len() * width.bytes());
        for &id in ids {
            match width {
                TokenWidth::U16 => {
                    let id = u16::try_from(id).map_err(|_| TextError::Corrupt {
                        path: path.clone(),
                        reason: format!("id {id} does not fit a u16 token file"),
                    })?;
                    bytes.extend_from_slice(&id.to_le_bytes());
                }
                TokenWidth::U32 => bytes.extend_from_slice(&id.to_le_bytes()),
            }
        }
        let partial = path.with_extension("partial");
        let mut file = std::fs::File::create(&partial).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&partial, &path).map_err(io)?;
        Ok(path)
    }

    /// Maps a token file written by [`Tokens::write`].
    pub fn open(path: &Path) -> Result<Tokens, TextError> {
        let corrupt = |reason: String| TextError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let width = TokenWidth::of(path)
            .ok_or_else(|| corrupt("a token file ends in .u16 or .u32".into()))?;
        let file = std::fs::File::open(path).map_err(|source| TextError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| TextError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        if !len.is_multiple_of(width.bytes() as u64) {
            return Err(corrupt(format!(
                "{len} bytes is not a whole number of {}-byte ids — delete it so it is made again",
                width.bytes()
            )));
        }
        // An empty file cannot be mapped; it simply holds no ids.
        let map = match len {
            0 => None,
            // SAFETY: the file is written once, atomically, and never modified afterwards.
            _ => Some(
                unsafe { memmap2::Mmap::map(&file) }.map_err(|source| TextError::Io {
                    path: path.to_path_buf(),
                    source,
                })?,
            ),
        };
        Ok(Tokens {
            map,
            width,
            path: path.to_path_buf(),
        })
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.map
            .as_ref()
            .map_or(0, |m| m.len() / self.width.bytes())
    }

    /// Whether there are no ids.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id at `i`.
    pub fn get(&self, i: usize) -> u32 {
        let map = self.map.as_ref().expect("an index below len()");
        match self.width {
            TokenWidth::U16 => u16::from_le_bytes([map[2 * i], map[2 * i + 1]]) as u32,
            TokenWidth::U32 => {
                u32::from_le_bytes(map[4 * i..4 * i + 4].try_into().expect("four bytes"))
            }
        }
    }

    /// Appends the `len` ids from `start` to `out`.
    pub fn extend_window(&self, start: usize, len: usize, out: &mut Vec<i64>) {
        out.extend((start..start + len).map(|i| self.get(i) as i64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_at_both_widths_and_windows_read_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<u32> = (0..1000).map(|i| (i * 37) % 500).collect();
        for (width, big) in [(TokenWidth::U16, 65_535), (TokenWidth::U32, 70_000)] {
            let mut ids = ids.clone();
            ids.push(big);
            let path = Tokens::write(&dir.path().join("train"), &ids, width).unwrap();
            assert_eq!(path.extension().unwrap(), width.extension());
            let t = Tokens::open(&path).unwrap();
            assert_eq!(t.len(), ids.len());
            assert_eq!((0..t.len()).map(|i| t.get(i)).collect::<Vec<_>>(), ids);
            let mut w = Vec::new();
            t.extend_window(10, 3, &mut w);
            assert_eq!(w, vec![370, 407, 444]);
            assert_eq!(t.get(ids.len() - 1), big);
            assert!(!dir.path().join("train.partial").exists());
        }
        assert_eq!(TokenWidth::for_vocab(65_536), TokenWidth::U16);
        assert_eq!(TokenWidth::for_vocab(65_537), TokenWidth::U32);
    }

    #[test]
    fn a_truncated_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("val.u32");
        std::fs::write(&path, [1, 0, 0]).unwrap();
        let err = Tokens::open(&path).unwrap_err().to_string();
        assert!(err.contains("not a whole number of 4-byte ids"), "{err}");
        let wide = Tokens::write(&dir.path().join("w"), &[70_000], TokenWidth::U16);
        assert!(wide.unwrap_err().to_string().contains("does not fit a u16"));
    }
}
