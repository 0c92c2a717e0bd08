//! Weights as named tensors in PyTorch names and layouts, on disk as safetensors.
//!
//! Each node of the graph stores its tensors under its name (`layers.{i}` for the i-th
//! unnamed layer), e.g. `layers.0.weight` and `layers.0.bias`, as `torch.nn.Linear`,
//! `Conv2d`, `BatchNorm*d` (plus `running_mean`, `running_var`), `LayerNorm` and
//! `Embedding` do; dense weights are `[out, in]`. Each layer file lists its tensors once
//! ([`TensorVisitor`]); saving and loading both walk that list. The input normalisation is
//! stored as `input_norm.shift` and `input_norm.scale`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::{Param, ParamId, RunningState};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype as StDtype, SafeTensors, tensor::TensorView};

use crate::layers::{Block, TensorVisitor};
use crate::{InputNorm, ModelError, Network};

/// The value of the `format` metadata key in modelforge weight files.
pub const WEIGHTS_FORMAT: &str = "modelforge-weights-1";

/// One tensor with its name, shape and f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// PyTorch-style name, e.g. `layers.0.weight`.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
    /// The burn parameter id (0 for buffers such as running statistics).
    pub id: u64,
}

fn named<const D: usize>(name: String, t: Tensor<D>, id: u64) -> NamedTensor {
    let shape = t.dims().to_vec();
    let values = t
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 tensor data");
    NamedTensor {
        name,
        shape,
        values,
        id,
    }
}

/// Replaces a parameter's value, keeping its training state, and optionally its id.
fn replace<const D: usize>(
    p: Param<Tensor<D>>,
    value: Tensor<D>,
    id: Option<u64>,
) -> Param<Tensor<D>> {
    let (old_id, old, mapper) = p.consume();
    let value = if old.is_require_grad() {
        value.require_grad()
    } else {
        value
    };
    Param::from_mapped_value(id.map_or(old_id, ParamId::from), value, mapper)
}

/// Tensors looked up by name while loading.
struct Stored<'a> {
    tensors: HashMap<&'a str, &'a NamedTensor>,
    device: &'a Device,
    keep_ids: bool,
}

impl Stored<'_> {
    /// The named tensor as a burn tensor of `shape`; with `transposed` the file holds the
    /// matrix as `[shape[1], shape[0]]` (PyTorch's dense layout) and it is transposed on the host,
    /// so the result is contiguous and computes exactly like the original.
    fn take<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        transposed: bool,
    ) -> Result<(Tensor<D>, Option<u64>), String> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| format!("tensor {name} is missing"))?;
        let mut stored = shape.to_vec();
        if transposed {
            stored.reverse();
        }
        if t.shape != stored {
            return Err(format!(
                "tensor {name} has shape {:?} but the network needs {stored:?}",
                t.shape
            ));
        }
        let values = if transposed {
            let (rows, cols) = (stored[0], stored[1]);
            (0..rows * cols)
                .map(|i| t.values[(i % rows) * cols + i / rows])
                .collect()
        } else {
            t.values.clone()
        };
        let tensor = Tensor::from_data(TensorData::new(values, shape), self.device);
        Ok((tensor, (self.keep_ids && t.id != 0).then_some(t.id)))
    }
}

/// Loading: each tensor of a block replaced by the stored one of its name.
struct Loader<'a, 'b> {
    stored: &'b Stored<'a>,
    prefix: &'b str,
}

impl TensorVisitor for Loader<'_, '_> {
    fn param<const D: usize>(
        &mut self,
        suffix: &str,
        p: Param<Tensor<D>>,
        transposed: bool,
    ) -> Result<Param<Tensor<D>>, String> {
        let name = format!("{}.{suffix}", self.prefix);
        let (t, id) = self.stored.take(&name, p.val().dims(), transposed)?;
        Ok(replace(p, t, id))
    }

    fn running(
        &mut self,
        suffix: &str,
        r: RunningState<Tensor<1>>,
    ) -> Result<RunningState<Tensor<1>>, String> {
        let name = format!("{}.{suffix}", self.prefix);
        let (t, _) = self.stored.take(&name, r.value().dims(), false)?;
        Ok(RunningState::new(t))
    }
}

/// Saving: each tensor of a block read out under its name.
struct Saver<'a> {
    prefix: &'a str,
    out: &'a mut Vec<NamedTensor>,
}

impl TensorVisitor for Saver<'_> {
    fn param<const D: usize>(
        &mut self,
        suffix: &str,
        p: Param<Tensor<D>>,
        transposed: bool,
    ) -> Result<Param<Tensor<D>>, String> {
        let name = format!("{}.{suffix}", self.prefix);
        let value = p.val();
        let value = if transposed { value.transpose() } else { value };
        self.out.push(named(name, value, p.id.val()));
        Ok(p)
    }

    fn running(
        &mut self,
        suffix: &str,
        r: RunningState<Tensor<1>>,
    ) -> Result<RunningState<Tensor<1>>, String> {
        let name = format!("{}.{suffix}", self.prefix);
        self.out.push(named(name, r.value(), 0));
        Ok(r)
    }
}

/// Decoupled weight decay: each matrix or kernel (rank 2 and up) scaled in place; vectors
/// (biases, norm scales) and buffers left alone.
struct Decay {
    factor: f32,
}

impl TensorVisitor for Decay {
    fn param<const D: usize>(
        &mut self,
        _suffix: &str,
        p: Param<Tensor<D>>,
        _transposed: bool,
    ) -> Result<Param<Tensor<D>>, String> {
        if D < 2 {
            return Ok(p);
        }
        let value = p.val().mul_scalar(self.factor).detach();
        Ok(replace(p, value, None))
    }

    fn running(
        &mut self,
        _suffix: &str,
        r: RunningState<Tensor<1>>,
    ) -> Result<RunningState<Tensor<1>>, String> {
        Ok(r)
    }
}

impl Network {
    /// Multiplies the weights that weight decay applies to by `factor` (AdamW's
    /// `p ← p·(1 − lr·λ)` before its update): the matrices and kernels of dense, attention,
    /// feed-forward and convolution layers; not biases, norms or embeddings.
    pub fn decay_weights(mut self, factor: f32) -> Network {
        let mut decay = Decay { factor };
        self.blocks = std::mem::take(&mut self.blocks)
            .into_iter()
            .map(|block| match block {
                b @ (Block::Embedding(_) | Block::PositionalEmbedding(_)) => b,
                b => b.tensors(&mut decay).expect("decay visits every tensor"),
            })
            .collect();
        self
    }

    /// Every weight and buffer with its PyTorch name, plus the input normalisation.
    pub fn named_tensors(&self) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        for (block, prefix) in self.blocks.iter().zip(self.block_names()) {
            let mut saver = Saver {
                prefix,
                out: &mut out,
            };
            block
                .clone()
                .tensors(&mut saver)
                .expect("saving reads every tensor");
        }
        let n = self.norm();
        for (name, v) in [
            ("input_norm.shift", &n.shift),
            ("input_norm.scale", &n.scale),
        ] {
            out.push(NamedTensor {
                name: name.into(),
                shape: vec![v.len()],
                values: v.clone(),
                id: 0,
            });
        }
        out
    }

    /// Replaces every weight from named tensors; with `keep_ids` the parameter ids are restored too
    /// (so that saved optimiser state matches).
    pub fn load_named(
        self,
        tensors: &[NamedTensor],
        device: &Device,
        keep_ids: bool,
    ) -> Result<Network, String> {
        let stored = Stored {
            tensors: tensors.iter().map(|t| (t.name.as_str(), t)).collect(),
            device,
            keep_ids,
        };
        let mut net = self;
        let names: Vec<String> = net.block_names().into_iter().map(String::from).collect();
        let blocks = std::mem::take(&mut net.blocks);
        let mut loaded = Vec::with_capacity(blocks.len());
        for (block, prefix) in blocks.into_iter().zip(&names) {
            let mut loader = Loader {
                stored: &stored,
                prefix,
            };
            loaded.push(block.tensors(&mut loader)?);
        }
        net.blocks = loaded;
        let features = net.input_len();
        let (shift, _) = stored.take::<1>("input_norm.shift", [features], false)?;
        let (scale, _) = stored.take::<1>("input_norm.scale", [features], false)?;
        let to_vec = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().expect("f32");
        Ok(net.with_norm(InputNorm {
            shift: to_vec(shift),
            scale: to_vec(scale),
        }))
    }

    /// Writes the weights as a safetensors file (written in place; callers make it atomic).
    pub fn save_safetensors(
        &self,
        path: &Path,
        metadata: BTreeMap<String, String>,
    ) -> Result<(), ModelError> {
        let bytes = self.safetensors_bytes(metadata);
        std::fs::write(path, bytes).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The weights as the bytes of a safetensors file.
    pub fn safetensors_bytes(&self, metadata: BTreeMap<String, String>) -> Vec<u8> {
        encode_safetensors(&self.named_tensors(), metadata)
    }

    /// Loads weights from a safetensors file written by [`Network::save_safetensors`].
    pub fn load_safetensors(
        self,
        path: &Path,
        device: &Device,
        keep_ids: bool,
    ) -> Result<Network, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.load_safetensors_bytes(&bytes, path, device, keep_ids)
    }

    /// Loads weights from safetensors bytes; `origin` names them in errors.
    pub fn load_safetensors_bytes(
        self,
        bytes: &[u8],
        origin: &Path,
        device: &Device,
        keep_ids: bool,
    ) -> Result<Network, ModelError> {
        let path = origin;
        let tensors = parse_safetensors(bytes, origin)?;
        self.load_named(&tensors, device, keep_ids)
            .map_err(|reason| ModelError::BadWeights {
                path: path.to_path_buf(),
                reason: format!("{reason} — the weights were saved for a different model"),
            })
    }
}

/// Encodes named tensors (f32) as safetensors bytes, with their parameter ids in the metadata.
pub fn encode_safetensors(
    tensors: &[NamedTensor],
    mut metadata: BTreeMap<String, String>,
) -> Vec<u8> {
    let ids: BTreeMap<&str, u64> = tensors
        .iter()
        .filter(|t| t.id != 0)
        .map(|t| (t.name.as_str(), t.id))
        .collect();
    metadata.insert("format".into(), WEIGHTS_FORMAT.into());
    metadata.insert(
        "param_ids".into(),
        serde_json::to_string(&ids).expect("ids serialise"),
    );
    f32_safetensors(tensors, metadata)
}

/// Named tensors as the bytes of a safetensors file of F32 values with exactly the metadata
/// given (e.g. `format: pt` for a Hugging Face checkpoint).
pub fn f32_safetensors<'t>(
    tensors: impl IntoIterator<Item = &'t NamedTensor> + Clone,
    metadata: BTreeMap<String, String>,
) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors
        .clone()
        .into_iter()
        .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .into_iter()
        .zip(&bytes)
        .map(|(t, b)| {
            let view =
                TensorView::new(StDtype::F32, t.shape.clone(), b).expect("shape matches data");
            (t.name.clone(), view)
        })
        .collect();
    safetensors::serialize(views, Some(metadata.into_iter().collect()))
        .expect("valid f32 tensors serialise")
}

/// Parses every tensor of safetensors bytes as f32 with the ids stored in their metadata;
/// `path` names them in errors.
pub fn parse_safetensors(bytes: &[u8], path: &Path) -> Result<Vec<NamedTensor>, ModelError> {
    let bad = |reason: String| ModelError::BadWeights {
        path: path.to_path_buf(),
        reason,
    };
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let ids: HashMap<String, u64> = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("param_ids"))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != StDtype::F32 {
            return Err(bad(format!(
                "tensor {name} is {:?}; modelforge weights are F32",
                view.dtype()
            )));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        out.push(NamedTensor {
            id: ids.get(&name).copied().unwrap_or(0),
            name,
            shape: view.shape().to_vec(),
            values,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::tests::spec;

    #[test]
    fn safetensors_round_trip_gives_the_same_outputs() {
        let s = spec(
            "{ conv2d = { filters = 2, kernel = 3 } }, { batch_norm = {} }, { flatten = {} }, { dense = { units = 3 } }",
            "{ shape = [1, 5, 5] }",
            3,
        );
        let device = Device::flex();
        let net = Network::new(&s, &device).with_norm(InputNorm {
            shift: vec![0.5; 25],
            scale: vec![2.0; 25],
        });
        let dir = std::env::temp_dir().join(format!("mf-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.safetensors");
        net.save_safetensors(&path, BTreeMap::new()).unwrap();
        let fresh = Network::new(&s, &device)
            .load_safetensors(&path, &device, true)
            .unwrap();
        let x: Vec<f32> = (0..50).map(|i| i as f32 / 10.0).collect();
        let a: Vec<f32> = net
            .forward(net.input(&x, 2, &device).unwrap())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let b: Vec<f32> = fresh
            .forward(fresh.input(&x, 2, &device).unwrap())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(a, b);
        let names: Vec<String> = parse_safetensors(&std::fs::read(&path).unwrap(), &path)
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert!(names.contains(&"layers.3.weight".to_string()));
        let other = spec(
            "{ flatten = {} }, { dense = { units = 3 } }",
            "{ shape = [1, 5, 5] }",
            3,
        );
        let err = Network::new(&other, &device)
            .load_safetensors(&path, &device, false)
            .unwrap_err();
        assert!(err.to_string().contains("different model"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
