//! The layer kinds, one file each: its module's `init` from the spec's options, its
//! forward, and its tensor table (the one list of PyTorch names that save and load both use).

mod activation;
mod attention;
mod batch_norm;
mod conv2d;
mod dense;
pub(crate) mod dropout;
mod embedding;
mod layer_norm;
mod merge;
mod pool;
mod positional_embedding;
mod reshape;
mod rms_norm;
mod swiglu;

pub use attention::{KeyValues, SelfAttention};
pub use positional_embedding::PositionalEmbedding;
pub use swiglu::Swiglu;

use burn::module::{Module, Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2d, MaxPool2d};
use burn::nn::{BatchNorm, Dropout, Embedding, LayerNorm, Linear, RmsNorm};
use burn::tensor::{Device, Int, Tensor};
use modelforge_spec::{LayerSpec, Node};

/// A batch flowing through the network, tagged by rank (batch axis included).
#[derive(Debug, Clone)]
pub enum Activation {
    /// Integer ids `[batch, len]`.
    Ids(Tensor<2, Int>),
    /// `[batch, features]`.
    R2(Tensor<2>),
    /// `[batch, a, b]`.
    R3(Tensor<3>),
    /// `[batch, channels, height, width]`.
    R4(Tensor<4>),
}

/// Applies a rank-polymorphic float expression to an activation of any float rank.
macro_rules! each_rank {
    ($act:expr, $t:ident => $body:expr) => {
        match $act {
            $crate::Activation::R2($t) => $crate::Activation::R2($body),
            $crate::Activation::R3($t) => $crate::Activation::R3($body),
            $crate::Activation::R4($t) => $crate::Activation::R4($body),
            $crate::Activation::Ids(_) => {
                unreachable!("the checked graph feeds float layers float tensors")
            }
        }
    };
}
pub(crate) use each_rank;

impl Activation {
    /// Dimensions, batch axis first.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Activation::Ids(t) => t.dims().to_vec(),
            Activation::R2(t) => t.dims().to_vec(),
            Activation::R3(t) => t.dims().to_vec(),
            Activation::R4(t) => t.dims().to_vec(),
        }
    }
}

/// A layer with parameters or state, as a burn module.
// One value per layer of a model, so the size of the largest variant costs nothing that
// matters, and burn's `Module` derive does not see through a `Box`.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Block {
    /// Fully connected.
    Dense(Linear),
    /// 2-D convolution.
    Conv2d(Conv2d),
    /// Max pooling.
    MaxPool2d(MaxPool2d),
    /// Average pooling.
    AvgPool2d(AvgPool2d),
    /// Dropout.
    Dropout(Dropout),
    /// Batch normalisation.
    BatchNorm(BatchNorm),
    /// Layer normalisation.
    LayerNorm(LayerNorm),
    /// Embedding table.
    Embedding(Embedding),
    /// Learned positions.
    PositionalEmbedding(PositionalEmbedding),
    /// Self-attention.
    SelfAttention(SelfAttention),
    /// RMS normalisation.
    RmsNorm(RmsNorm),
    /// Gated feed-forward.
    Swiglu(Swiglu),
}

/// Where a forward pass stands in its sequences, and the key/value caches it reads and
/// extends when generating.
pub(crate) enum Context<'a, 'c> {
    /// Every row starts at position 0 and nothing is kept (training, one-shot passes).
    Fresh,
    /// Every row continues at `offset`, with one cache for the batch (one slot per block).
    Cached {
        /// Position of the first token of this pass.
        offset: usize,
        /// Per block, the cached keys and values.
        slots: &'a mut [Option<KeyValues>],
    },
    /// Row `i` of the batch continues the sequence of `rows[i]`, at its own position.
    Rows(&'a mut [&'c mut crate::KvCache]),
}

/// Rows of a batch that stand at one position: the rows, and the position of their first
/// token in this pass.
pub(crate) type Group = (std::ops::Range<usize>, usize);

impl Context<'_, '_> {
    /// The batch of `batch` rows as groups that share a position.
    pub(crate) fn groups(&self, batch: usize) -> Vec<Group> {
        match self {
            Context::Fresh => vec![(0..batch, 0)],
            Context::Cached { offset, .. } => vec![(0..batch, *offset)],
            Context::Rows(rows) => rows
                .iter()
                .enumerate()
                .map(|(i, r)| (i..i + 1, r.len()))
                .collect(),
        }
    }

    /// Each group with its cache slot of block `index` (`None` without a cache).
    pub(crate) fn slots(
        &mut self,
        batch: usize,
        index: usize,
    ) -> Vec<(Group, Option<&mut Option<KeyValues>>)> {
        let groups = self.groups(batch);
        match self {
            Context::Fresh => groups.into_iter().map(|g| (g, None)).collect(),
            Context::Cached { slots, .. } => {
                groups.into_iter().zip([Some(&mut slots[index])]).collect()
            }
            Context::Rows(rows) => groups
                .into_iter()
                .zip(rows.iter_mut().map(|r| Some(r.slot(index))))
                .collect(),
        }
    }
}

/// A parameter-free step of the forward pass.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stateless {
    /// Reshape each sample to this shape.
    Reshape(Vec<usize>),
    /// An element-wise or last-axis activation function.
    Activation(activation::Function),
    /// A join of several inputs.
    Merge(merge::Merge),
}

/// What a node builds into: a module with parameters or state, or a parameter-free step.
// Built once per node and moved straight into the network, as `Block` is.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Built {
    /// A burn module.
    Module(Block),
    /// A step without parameters.
    Step(Stateless),
}

/// What one node of the graph runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// `blocks[i]` of the network.
    Block(usize),
    /// Logits from the transposed table of the embedding `blocks[i]` (a tied head).
    Tied(usize),
    /// A step without parameters.
    Stateless(Stateless),
}

/// Reads or replaces a layer's tensors by their names, one at a time (saving reads each and
/// gives it back; loading gives back the stored value).
pub(crate) trait TensorVisitor {
    /// A parameter under `suffix`; `transposed` when the file holds the matrix as PyTorch's
    /// `[out, in]` and the engine as `[in, out]`.
    fn param<const D: usize>(
        &mut self,
        suffix: &str,
        p: Param<Tensor<D>>,
        transposed: bool,
    ) -> Result<Param<Tensor<D>>, String>;
    /// A buffer (running statistics) under `suffix`.
    fn running(
        &mut self,
        suffix: &str,
        r: RunningState<Tensor<1>>,
    ) -> Result<RunningState<Tensor<1>>, String>;
}

impl Block {
    /// The module for a node, or its parameter-free step.
    pub(crate) fn init(node: &Node, device: &Device) -> Built {
        let input = &node.input_shapes[0];
        Built::Module(match &node.layer {
            LayerSpec::Dense { units, bias } => {
                Block::Dense(dense::init(input, *units, *bias, device))
            }
            LayerSpec::Conv2d {
                filters,
                kernel,
                stride,
                padding,
                bias,
            } => Block::Conv2d(conv2d::init(
                input,
                conv2d::Options {
                    filters: *filters,
                    kernel: *kernel,
                    stride: *stride,
                    padding: *padding,
                    bias: *bias,
                },
                device,
            )),
            LayerSpec::MaxPool2d { size, stride } => {
                Block::MaxPool2d(pool::init_max(*size, *stride))
            }
            LayerSpec::AvgPool2d { size, stride } => {
                Block::AvgPool2d(pool::init_avg(*size, *stride))
            }
            LayerSpec::Dropout { rate } => Block::Dropout(dropout::init(*rate)),
            LayerSpec::BatchNorm { epsilon, momentum } => {
                Block::BatchNorm(batch_norm::init(input, *epsilon, *momentum, device))
            }
            LayerSpec::LayerNorm { epsilon } => {
                Block::LayerNorm(layer_norm::init(input, *epsilon, device))
            }
            LayerSpec::Embedding { vocab, dim } => {
                Block::Embedding(embedding::init(*vocab, *dim, device))
            }
            LayerSpec::PositionalEmbedding { context } => {
                Block::PositionalEmbedding(positional_embedding::init(*context, input, device))
            }
            LayerSpec::SelfAttention {
                heads,
                kv_heads,
                causal,
                rope,
                dropout,
                bias,
            } => Block::SelfAttention(attention::init(
                input,
                attention::Options {
                    heads: *heads,
                    kv_heads: kv_heads.unwrap_or(*heads),
                    causal: *causal,
                    rope: rope.clone(),
                    dropout: *dropout,
                    bias: *bias,
                },
                device,
            )),
            LayerSpec::RmsNorm { epsilon } => {
                Block::RmsNorm(rms_norm::init(input, *epsilon, device))
            }
            LayerSpec::Swiglu { hidden, bias } => {
                Block::Swiglu(swiglu::init(input, *hidden, *bias, device))
            }
            LayerSpec::TiedHead { .. } => {
                unreachable!("the network resolves tied heads to their embedding")
            }
            LayerSpec::Flatten {} | LayerSpec::Reshape { .. } => {
                return Built::Step(Stateless::Reshape(node.output_shape.clone()));
            }
            LayerSpec::Add {} => return Built::Step(Stateless::Merge(merge::Merge::Add)),
            LayerSpec::Concat { .. } => {
                return Built::Step(Stateless::Merge(merge::Merge::concat(node)));
            }
            LayerSpec::Relu {}
            | LayerSpec::LeakyRelu { .. }
            | LayerSpec::Gelu { .. }
            | LayerSpec::Tanh {}
            | LayerSpec::Sigmoid {}
            | LayerSpec::Silu {}
            | LayerSpec::Softmax {} => {
                return Built::Step(Stateless::Activation(activation::Function::of(&node.layer)));
            }
        })
    }

    /// The block's forward pass; block `index` of the network, for its cache slot.
    pub(crate) fn forward(&self, x: Activation, ctx: &mut Context, index: usize) -> Activation {
        match (self, x) {
            (Block::PositionalEmbedding(p), x) => positional_embedding::forward(p, x, ctx),
            (Block::SelfAttention(a), x) => attention::forward(a, x, ctx, index),
            (Block::RmsNorm(n), x) => rms_norm::forward(n, x),
            (Block::Swiglu(s), x) => swiglu::forward(s, x),
            (Block::Dense(l), x) => dense::forward(l, x),
            (Block::Conv2d(c), x) => conv2d::forward(c, x),
            (Block::MaxPool2d(p), x) => pool::forward_max(p, x),
            (Block::AvgPool2d(p), x) => pool::forward_avg(p, x),
            (Block::Dropout(d), x) => dropout::forward(d, x),
            (Block::BatchNorm(b), x) => batch_norm::forward(b, x),
            (Block::LayerNorm(n), x) => layer_norm::forward(n, x),
            (Block::Embedding(e), x) => embedding::forward(e, x),
        }
    }

    /// Passes every tensor of the block through the visitor under its name.
    pub(crate) fn tensors(self, v: &mut impl TensorVisitor) -> Result<Block, String> {
        Ok(match self {
            Block::Dense(l) => Block::Dense(dense::tensors(l, v)?),
            Block::Conv2d(c) => Block::Conv2d(conv2d::tensors(c, v)?),
            Block::BatchNorm(n) => Block::BatchNorm(batch_norm::tensors(n, v)?),
            Block::LayerNorm(n) => Block::LayerNorm(layer_norm::tensors(n, v)?),
            Block::Embedding(e) => Block::Embedding(embedding::tensors(e, v)?),
            Block::PositionalEmbedding(p) => {
                Block::PositionalEmbedding(positional_embedding::tensors(p, v)?)
            }
            Block::SelfAttention(a) => Block::SelfAttention(attention::tensors(a, v)?),
            Block::RmsNorm(n) => Block::RmsNorm(rms_norm::tensors(n, v)?),
            Block::Swiglu(s) => Block::Swiglu(swiglu::tensors(s, v)?),
            other @ (Block::MaxPool2d(_) | Block::AvgPool2d(_) | Block::Dropout(_)) => other,
        })
    }
}

impl Stateless {
    /// Runs the step over its inputs.
    pub(crate) fn forward(&self, mut inputs: Vec<Activation>) -> Activation {
        match self {
            Stateless::Reshape(shape) => reshape::forward(inputs.remove(0), shape),
            Stateless::Activation(f) => f.forward(inputs.remove(0)),
            Stateless::Merge(m) => m.forward(inputs),
        }
    }

    /// Whether this is a trailing softmax or sigmoid that the losses fold into their logits.
    pub(crate) fn is_output_squash(&self) -> bool {
        matches!(
            self,
            Stateless::Activation(activation::Function::Softmax | activation::Function::Sigmoid)
        )
    }
}

pub(crate) use embedding::tied as tied_head;
pub(crate) use reshape::forward as reshape;
