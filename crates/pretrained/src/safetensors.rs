//! The weights of a checkpoint folder: one `model.safetensors` or the shards that
//! `model.safetensors.index.json` lists, read by memory map and converted to f32 one tensor
//! at a time (F32, F16, BF16, F64), so a check never holds a second copy of the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors, tensor::Metadata};

use crate::mapping::Store;
use crate::{PretrainedError, io};

/// One mapped file with its parsed header.
struct Shard {
    path: PathBuf,
    map: Mmap,
    /// Where the tensor data starts: after the length and the header.
    start: usize,
    header: Metadata,
}

/// The tensors of a checkpoint, by name, across its shards.
pub struct Checkpoint {
    origin: PathBuf,
    shards: Vec<Shard>,
    /// Each tensor's shard.
    names: BTreeMap<String, usize>,
}

impl Checkpoint {
    /// Maps `model.safetensors` of a folder, or every shard its index names.
    pub fn open(dir: &Path) -> Result<Checkpoint, PretrainedError> {
        let single = dir.join(crate::hf::WEIGHTS);
        let index = dir.join(crate::hf::WEIGHTS_INDEX);
        let files: Vec<PathBuf> = if single.is_file() {
            vec![single.clone()]
        } else if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(io(&index))?;
            let bad = |reason: String| PretrainedError::Tensor {
                path: index.clone(),
                name: "weight_map".into(),
                reason,
            };
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
            let map = v["weight_map"]
                .as_object()
                .ok_or_else(|| bad("is missing".into()))?;
            let mut files: Vec<PathBuf> = map
                .values()
                .map(|f| {
                    f.as_str()
                        .filter(|f| !f.contains('/') && !f.contains('\\'))
                        .map(|f| dir.join(f))
                        .ok_or_else(|| bad(format!("names {f}, not a file in the folder")))
                })
                .collect::<Result<_, _>>()?;
            files.sort();
            files.dedup();
            files
        } else {
            return Err(PretrainedError::Io {
                path: single,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no model.safetensors or model.safetensors.index.json in the folder \
                     (save the model with safe_serialization=True, the default of save_pretrained)",
                ),
            });
        };
        let origin = match files.len() {
            1 => files[0].clone(),
            _ => index,
        };
        let mut shards = Vec::with_capacity(files.len());
        let mut names = BTreeMap::new();
        for path in files {
            let file = std::fs::File::open(&path).map_err(io(&path))?;
            // SAFETY: the map is read only; a file changed underneath while it is read gives
            // wrong values, not undefined behaviour in safe code reading a byte slice.
            let map = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
            let (header_len, header) =
                SafeTensors::read_metadata(&map).map_err(|e| PretrainedError::Tensor {
                    path: path.clone(),
                    name: "(header)".into(),
                    reason: format!("not a safetensors file: {e}"),
                })?;
            for name in header.tensors().keys() {
                if names.insert(name.clone(), shards.len()).is_some() {
                    return Err(PretrainedError::Tensor {
                        path: path.clone(),
                        name: name.clone(),
                        reason: "is stored in two shards".into(),
                    });
                }
            }
            shards.push(Shard {
                path,
                map,
                start: 8 + header_len,
                header,
            });
        }
        Ok(Checkpoint {
            origin,
            shards,
            names,
        })
    }

    /// Whether the checkpoint holds a tensor of this name.
    pub fn has(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }
}

impl Store for Checkpoint {
    fn origin(&self) -> &Path {
        &self.origin
    }

    fn names(&self) -> Vec<String> {
        self.names.keys().cloned().collect()
    }

    fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, PretrainedError> {
        let Some(&shard) = self.names.get(name) else {
            return Err(PretrainedError::MissingTensor {
                path: self.origin.clone(),
                name: name.into(),
            });
        };
        let shard = &self.shards[shard];
        let bad = |reason: String| PretrainedError::Tensor {
            path: shard.path.clone(),
            name: name.into(),
            reason,
        };
        let info = shard.header.info(name).expect("names come from the header");
        if info.shape != shape {
            return Err(bad(format!(
                "has shape {:?} where the config makes it {shape:?}",
                info.shape
            )));
        }
        let (from, to) = info.data_offsets;
        let bytes = &shard.map[shard.start + from..shard.start + to];
        let values = match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
            other => {
                return Err(bad(format!(
                    "is {other:?}; weights import from F32, F16, BF16 or F64"
                )));
            }
        };
        Ok(values)
    }
}
