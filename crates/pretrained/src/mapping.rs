//! Our tensors to and from a checkpoint's: each format says where each of our tensors
//! lives ([`Place`]); taking and giving then rename, transpose, split or fuse, and reorder
//! rotary rows, the same way for every format.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use modelforge_spec::RopeLayout;

use crate::architecture::Architecture;
use crate::{PretrainedError, Tensor};

/// Where one of our tensors lives in a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Place {
    /// Under this name, in our layout (`[out, in]` matrices).
    Same(String),
    /// Under this name, transposed (GPT-2's `Conv1D` stores `[in, out]`).
    Transposed(String),
    /// Part `part` of three along the output axis of a fused q/k/v projection: GPT-2's
    /// `c_attn` (stored `[in, 3·out]`, `transposed`) or GGUF's `attn_qkv` (`[3·out, in]`).
    Fused {
        /// The fused tensor.
        name: String,
        /// 0 for q, 1 for k, 2 for v.
        part: usize,
        /// Whether the fused matrix is stored `[in, 3·out]`.
        transposed: bool,
    },
    /// Nowhere: zeros on import (Qwen2's output projection has no bias).
    Absent,
}

/// The tensors a network wants, by name and shape.
pub type Wanted = [(String, Vec<usize>)];

/// The tensors of a checkpoint, read as f32.
pub trait Store {
    /// The file, for messages.
    fn origin(&self) -> &Path;
    /// Every tensor name.
    fn names(&self) -> Vec<String>;
    /// The tensor `name` as f32, which must have `shape` (`[out, in]` for matrices as the
    /// file stores them).
    fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, PretrainedError>;
}

/// Our tensors (`wanted`, with their shapes, in the family's node names) filled from a
/// store: each one found where `place` says, reshaped to our layout and checked; every
/// tensor of the store must be used, except those `is_buffer` names.
pub fn take(
    store: &dyn Store,
    place: &dyn Fn(&str) -> Option<Place>,
    wanted: &Wanted,
    is_buffer: fn(&str) -> bool,
) -> Result<Vec<Tensor>, PretrainedError> {
    let mut used = BTreeSet::new();
    let mut out = Vec::with_capacity(wanted.len());
    for (ours, shape) in wanted {
        let Some(place) = place(ours) else {
            continue;
        };
        let values = match &place {
            Place::Absent => vec![0.0; shape.iter().product()],
            Place::Same(name) => {
                used.insert(name.clone());
                store.read(name, shape)?
            }
            Place::Transposed(name) => {
                used.insert(name.clone());
                let [rows, cols] = shape[..] else {
                    unreachable!("transposed tensors are matrices")
                };
                transpose(&store.read(name, &[cols, rows])?, cols, rows)
            }
            Place::Fused {
                name,
                part,
                transposed,
            } => {
                used.insert(name.clone());
                match (&shape[..], *transposed) {
                    (&[n, input], true) => {
                        let all = store.read(name, &[input, 3 * n])?;
                        let mut values = Vec::with_capacity(n * input);
                        for o in 0..n {
                            values.extend((0..input).map(|i| all[i * 3 * n + part * n + o]));
                        }
                        values
                    }
                    (&[n, input], false) => store.read(name, &[3 * n, input])?
                        [part * n * input..(part + 1) * n * input]
                        .to_vec(),
                    (&[n], _) => store.read(name, &[3 * n])?[part * n..(part + 1) * n].to_vec(),
                    _ => unreachable!("projections are matrices and vectors"),
                }
            }
        };
        out.push(Tensor {
            name: ours.clone(),
            shape: shape.clone(),
            values,
            id: 0,
        });
    }
    let unused: Vec<String> = store
        .names()
        .into_iter()
        .filter(|n| !used.contains(n) && !is_buffer(n))
        .collect();
    if !unused.is_empty() {
        return Err(PretrainedError::UnusedTensors {
            path: store.origin().to_path_buf(),
            names: unused,
        });
    }
    Ok(out)
}

/// Our tensors (in the family's node names) as a checkpoint's: renamed, transposed and
/// fused where `place` says, with query and key rows in the `rope` layout the format uses.
pub fn give(
    a: &Architecture,
    ours: &[Tensor],
    place: &dyn Fn(&str) -> Option<Place>,
    rope: RopeLayout,
) -> BTreeMap<String, Tensor> {
    let mut out: BTreeMap<String, Tensor> = BTreeMap::new();
    for t in ours {
        let Some(place) = place(&t.name) else {
            continue;
        };
        let heads = match () {
            _ if t.name.contains("q_proj.") => Some(a.heads),
            _ if t.name.contains("k_proj.") => Some(a.kv_heads),
            _ => None,
        };
        let values = match heads {
            Some(heads) if a.family == crate::Family::Llama && a.rope_layout != rope => {
                relayout(&t.values, t.shape[0], heads, a.rope_layout)
            }
            _ => t.values.clone(),
        };
        let mut put = |name: String, shape: Vec<usize>, values: Vec<f32>| {
            out.insert(
                name.clone(),
                Tensor {
                    name,
                    shape,
                    values,
                    id: 0,
                },
            );
        };
        match place {
            Place::Absent => {}
            Place::Same(name) => put(name, t.shape.clone(), values),
            Place::Transposed(name) => {
                let [rows, cols] = t.shape[..] else {
                    unreachable!("transposed tensors are matrices")
                };
                put(name, vec![cols, rows], transpose(&values, rows, cols));
            }
            Place::Fused {
                name,
                part,
                transposed,
            } => {
                let (shape, n) = match (&t.shape[..], transposed) {
                    (&[n, input], true) => (vec![input, 3 * n], n),
                    (&[n, input], false) => (vec![3 * n, input], n),
                    (&[n], _) => (vec![3 * n], n),
                    _ => unreachable!("projections are matrices and vectors"),
                };
                let fused = out.entry(name.clone()).or_insert_with(|| Tensor {
                    name,
                    values: vec![0.0; shape.iter().product()],
                    shape,
                    id: 0,
                });
                match (&t.shape[..], transposed) {
                    (&[_, input], true) => {
                        for o in 0..n {
                            for i in 0..input {
                                fused.values[i * 3 * n + part * n + o] = values[o * input + i];
                            }
                        }
                    }
                    (&[_, input], false) => fused.values[part * n * input..(part + 1) * n * input]
                        .copy_from_slice(&values),
                    _ => fused.values[part * n..(part + 1) * n].copy_from_slice(&values),
                }
            }
        }
    }
    out
}

/// A row-major `[rows, cols]` matrix as `[cols, rows]`.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// The output rows of a query or key projection (or its bias, `rows` long) moved from the
/// rotary layout `from` to the other one: in each head, row 2i of the adjacent-pairs layout
/// is row i of the halves layout and row 2i + 1 is row i + head_dim/2.
pub fn relayout(values: &[f32], rows: usize, heads: usize, from: RopeLayout) -> Vec<f32> {
    let width = values.len() / rows;
    let hd = rows / heads;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for i in 0..hd / 2 {
            for (pairs, halves) in [(2 * i, i), (2 * i + 1, i + hd / 2)] {
                let (src, dst) = match from {
                    RopeLayout::AdjacentPairs => (pairs, halves),
                    RopeLayout::Halves => (halves, pairs),
                };
                let (src, dst) = ((h * hd + src) * width, (h * hd + dst) * width);
                out[dst..dst + width].copy_from_slice(&values[src..src + width]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Swapping layouts moves whole rows, head by head, and the way back undoes it.
    #[test]
    fn relayout_moves_rows_within_heads_and_back() {
        // Two heads of four features, one input column: rows are their own indices.
        let values: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let halves = relayout(&values, 8, 2, RopeLayout::AdjacentPairs);
        assert_eq!(halves, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert_eq!(relayout(&halves, 8, 2, RopeLayout::Halves), values);
    }
}
