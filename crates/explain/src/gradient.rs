//! Gradients of one output per row with respect to the point each row stands at, computed
//! in passes of as many rows as the memory budget allows.

use modelforge_model::Network;
use modelforge_model::burn::module::Module as _;
use modelforge_model::burn::tensor::{Device, Int, Tensor, TensorData};

use crate::ExplainError;

/// Where gradients are taken: at the raw input values, or at the vectors a first embedding
/// gives the ids (gradients do not flow through integers).
pub(crate) enum Space {
    /// Raw input values, `[features]` per sample.
    Raw,
    /// Embedding vectors `[len, dim]` per sample, and the ids they stand for.
    Embedded {
        /// The ids of every sample, `[batch, len]`.
        ids: Vec<i64>,
        /// Ids per sample.
        len: usize,
        /// Values per vector.
        dim: usize,
    },
}

/// Which scores of the network one row's outputs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scores {
    /// Its one output vector per sample (a classifier's or a regression's).
    Vector,
    /// A language model's logits at the last position: its scores for the next token.
    NextToken,
}

/// A network ready to give gradients: frozen (dropout off, batch norm on its running
/// statistics), its passes sized by the memory budget.
pub(crate) struct Engine {
    network: Network,
    device: Device,
    ad: Device,
    space: Space,
    scores: Scores,
    /// Values per row in the space.
    pub width: usize,
    outputs: usize,
    rows_per_pass: usize,
}

/// Floats a row may take in a pass, per float of activations it keeps: the values, their
/// gradients and the temporaries of the backward pass.
const FLOATS_PER_ACTIVATION: usize = 3;

impl Engine {
    /// The engine for `network` on `device`, and the points of the `batch` inputs in its space.
    pub fn new(
        network: &Network,
        inputs: &[f32],
        batch: usize,
        device: &Device,
        budget_bytes: usize,
    ) -> Result<(Engine, Vec<f32>), ExplainError> {
        // What a row explains, outputs per row, ids or values per sample, and the share of
        // the context a sample fills (a language model's activations grow with the prompt).
        let (scores, outputs, len, fill) = match *network.output_shape() {
            [outputs] => {
                // Checks the number of values against the input shape.
                network.input(inputs, batch, device)?;
                (Scores::Vector, outputs, network.input_len(), (1, 1))
            }
            [context, vocab] if network.embeds_ids() => {
                let len = inputs.len() / batch.max(1);
                if batch == 0 || len == 0 || len * batch != inputs.len() || len > context {
                    return Err(ExplainError::Prompt {
                        tokens: inputs.len(),
                        batch,
                        context,
                    });
                }
                (Scores::NextToken, vocab, len, (len, context))
            }
            _ => {
                return Err(ExplainError::Unsupported(format!(
                    "the model gives {} values per sample ({}); explanations cover models with \
                     one output vector per sample (classifiers and regressions) and language \
                     models (the next token)",
                    network.output_shape().iter().product::<usize>(),
                    modelforge_spec::show_shape(network.output_shape()),
                )));
            }
        };
        let network = network.clone().freeze();
        let per_row =
            network.activation_floats_per_sample() * fill.0 / fill.1 * FLOATS_PER_ACTIVATION * 4;
        let rows_per_pass = (budget_bytes / per_row.max(1)).max(1);
        let ad = device.clone().autodiff();
        let (space, points, width) = match network.embeds_ids() {
            false => (Space::Raw, inputs.to_vec(), len),
            true => {
                let ids = checked_ids(&network, inputs)?;
                let vectors = network.embed(Tensor::from_data(
                    TensorData::new(ids.clone(), [batch, len]),
                    device,
                ));
                let dim = vectors.dims()[2];
                let points = values(vectors);
                (Space::Embedded { ids, len, dim }, points, len * dim)
            }
        };
        let engine = Engine {
            network,
            device: device.clone(),
            ad,
            space,
            scores,
            width,
            outputs,
            rows_per_pass,
        };
        Ok((engine, points))
    }

    /// Outputs per sample.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Input values (raw) or ids (embedded) per sample.
    pub fn input_len(&self) -> usize {
        match &self.space {
            Space::Raw => self.width,
            Space::Embedded { len, .. } => *len,
        }
    }

    /// Points of the baseline ids (embedded), or the values as they are (raw).
    pub fn embed_baseline(&self, given: &[f32]) -> Result<Vec<f32>, ExplainError> {
        match &self.space {
            Space::Raw => Ok(given.to_vec()),
            Space::Embedded { len, .. } => {
                let ids = checked_ids(&self.network, given)?;
                let rows = ids.len() / len;
                Ok(values(self.network.embed(Tensor::from_data(
                    TensorData::new(ids, [rows, *len]),
                    &self.device,
                ))))
            }
        }
    }

    /// Sums each row's `[len, dim]` attributions over `dim` (embedded), or keeps them.
    pub fn per_token(&self, attributions: Vec<f32>) -> Vec<f32> {
        match &self.space {
            Space::Raw => attributions,
            Space::Embedded { dim, .. } => attributions
                .chunks_exact(*dim)
                .map(|v| v.iter().sum())
                .collect(),
        }
    }

    /// The outputs of `rows` points (no gradients), `[rows, outputs]`; `owner(r)` is the
    /// sample row `r` belongs to.
    pub fn forward(&self, points: &[f32], owner: impl Fn(usize) -> usize) -> Vec<f32> {
        let rows = points.len() / self.width;
        let mut out = Vec::with_capacity(rows * self.outputs);
        for start in (0..rows).step_by(self.rows_per_pass) {
            let n = self.rows_per_pass.min(rows - start);
            let x = &points[start * self.width..(start + n) * self.width];
            let x =
                Tensor::<2>::from_data(TensorData::new(x.to_vec(), [n, self.width]), &self.device);
            out.extend(values(self.run(x, start, n, &owner, &self.device)));
        }
        out
    }

    /// For rows `0..rows`, whose points `fill(r, row)` writes and whose samples are
    /// `owner(r)`, the gradient of output `targets[owner(r)]` at the point; `sink(r,
    /// gradient)` receives each row's in order.
    pub fn gradients(
        &self,
        rows: usize,
        fill: impl Fn(usize, &mut [f32]),
        owner: impl Fn(usize) -> usize,
        targets: &[usize],
        mut sink: impl FnMut(usize, &[f32]),
    ) {
        let mut data = Vec::new();
        for start in (0..rows).step_by(self.rows_per_pass) {
            let n = self.rows_per_pass.min(rows - start);
            data.clear();
            data.resize(n * self.width, 0.0);
            for (i, row) in data.chunks_exact_mut(self.width).enumerate() {
                fill(start + i, row);
            }
            let x = Tensor::<2>::from_data(
                TensorData::new(std::mem::take(&mut data), [n, self.width]),
                &self.ad,
            )
            .require_grad();
            let out = self.run(x.clone(), start, n, &owner, &self.ad);
            let mut mask = vec![0f32; n * self.outputs];
            for i in 0..n {
                mask[i * self.outputs + targets[owner(start + i)]] = 1.0;
            }
            let mask = Tensor::<2>::from_data(TensorData::new(mask, [n, self.outputs]), &self.ad);
            let grads = (out * mask).sum().backward();
            let g = values(x.grad(&grads).expect("the input takes part in the pass"));
            for (i, row) in g.chunks_exact(self.width).enumerate() {
                sink(start + i, row);
            }
            data = g;
        }
    }

    /// Outputs `[n, outputs]` of `n` rows starting at `start`, given as `[n, width]` points.
    fn run(
        &self,
        x: Tensor<2>,
        start: usize,
        n: usize,
        owner: &impl Fn(usize) -> usize,
        device: &Device,
    ) -> Tensor<2> {
        match &self.space {
            Space::Raw => self.network.forward_raw(x),
            Space::Embedded { ids, len, dim } => {
                let rows: Vec<i64> = (start..start + n)
                    .flat_map(|r| {
                        let s = owner(r);
                        ids[s * len..(s + 1) * len].iter().copied()
                    })
                    .collect();
                let ids = Tensor::<2, Int>::from_data(TensorData::new(rows, [n, *len]), device);
                let x = x.reshape([n, *len, *dim]);
                match self.scores {
                    Scores::Vector => self.network.forward_embedded(ids, x),
                    Scores::NextToken => self.network.forward_embedded_last(ids, x),
                }
            }
        }
    }
}

/// Ids as the embedding takes them: whole numbers below its vocabulary.
fn checked_ids(network: &Network, given: &[f32]) -> Result<Vec<i64>, ExplainError> {
    let vocab = network.vocab().unwrap_or(usize::MAX);
    given
        .iter()
        .map(
            |&v| match v >= 0.0 && v.fract() == 0.0 && (v as usize) < vocab {
                true => Ok(v as i64),
                false => Err(ExplainError::Id { id: v, vocab }),
            },
        )
        .collect()
}

/// A tensor's values on the host.
fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float tensors hold f32")
}
