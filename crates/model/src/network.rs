//! The network: the spec's layers as burn modules, with a rank-polymorphic forward.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm,
    LayerNormConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::tensor::activation;
use burn::tensor::{Device, Int, Tensor, TensorData};
use modelforge_spec::{Dtype, LayerSpec, Spec};

use crate::ModelError;

/// A layer with parameters or state, as a burn module.
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
}

/// One step of the forward pass.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    /// Run `blocks[i]`.
    Block(usize),
    /// Reshape each sample to this shape.
    Reshape(Vec<usize>),
    Relu,
    LeakyRelu(f64),
    Gelu,
    Tanh,
    Sigmoid,
    Softmax,
}

/// Per-feature input normalisation `(x - shift) * scale`, applied before the first layer.
#[derive(Debug, Clone, PartialEq)]
pub struct InputNorm {
    /// Subtracted first.
    pub shift: Vec<f32>,
    /// Multiplied after.
    pub scale: Vec<f32>,
}

impl InputNorm {
    /// The identity for `n` features.
    pub fn identity(n: usize) -> InputNorm {
        InputNorm {
            shift: vec![0.0; n],
            scale: vec![1.0; n],
        }
    }

    /// Whether it changes nothing.
    pub fn is_identity(&self) -> bool {
        self.shift.iter().all(|&s| s == 0.0) && self.scale.iter().all(|&s| s == 1.0)
    }
}

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

macro_rules! each_rank {
    ($act:expr, $t:ident => $body:expr) => {
        match $act {
            Activation::R2($t) => Activation::R2($body),
            Activation::R3($t) => Activation::R3($body),
            Activation::R4($t) => Activation::R4($body),
            Activation::Ids(_) => unreachable!("validated specs apply float ops to float tensors"),
        }
    };
}

impl Activation {
    fn dims(&self) -> Vec<usize> {
        match self {
            Activation::Ids(t) => t.dims().to_vec(),
            Activation::R2(t) => t.dims().to_vec(),
            Activation::R3(t) => t.dims().to_vec(),
            Activation::R4(t) => t.dims().to_vec(),
        }
    }

    fn reshape(self, sample: &[usize]) -> Activation {
        let batch = self.dims()[0];
        let float = match self {
            Activation::R2(t) => t,
            Activation::R3(t) => t.reshape([batch as i64, -1]),
            Activation::R4(t) => t.reshape([batch as i64, -1]),
            Activation::Ids(_) => unreachable!("validated specs never reshape ids"),
        };
        match *sample {
            [a] => Activation::R2(float.reshape([batch, a])),
            [a, b] => Activation::R3(float.reshape([batch, a, b])),
            [a, b, c] => Activation::R4(float.reshape([batch, a, b, c])),
            _ => unreachable!("validated specs keep per-sample rank at most 3"),
        }
    }
}

/// The model: its blocks (the burn module tree) and the plan that runs them.
#[derive(Module, Debug)]
pub struct Network {
    /// Layers with parameters or state, in order.
    pub blocks: Vec<Block>,
    #[module(skip)]
    ops: Vec<Op>,
    #[module(skip)]
    input_shape: Vec<usize>,
    #[module(skip)]
    input_dtype: Dtype,
    #[module(skip)]
    norm: InputNorm,
    /// Per spec layer, the index into `blocks` (for weight names).
    #[module(skip)]
    layer_blocks: Vec<Option<usize>>,
}

impl Network {
    /// Builds freshly initialised weights for a validated spec on a device.
    ///
    /// Initialisation draws from the device's generator: seed it first for reproducible weights.
    pub fn new(spec: &Spec, device: &Device) -> Network {
        let mut blocks = Vec::new();
        let mut ops = Vec::new();
        let mut layer_blocks = Vec::new();
        for info in spec.layer_infos() {
            let layer = spec.model.layers[info.index].get_ref();
            let input = &info.input_shape;
            let block = match layer {
                LayerSpec::Dense { units, bias } => Some(Block::Dense(
                    LinearConfig::new(*input.last().expect("rank ≥ 1"), *units)
                        .with_bias(*bias)
                        .init(device),
                )),
                LayerSpec::Conv2d {
                    filters,
                    kernel,
                    stride,
                    padding,
                    bias,
                } => {
                    let pad = padding.pixels(*kernel);
                    Some(Block::Conv2d(
                        Conv2dConfig::new([input[0], *filters], [*kernel, *kernel])
                            .with_stride([*stride, *stride])
                            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                            .with_bias(*bias)
                            .init(device),
                    ))
                }
                LayerSpec::MaxPool2d { size, stride } => Some(Block::MaxPool2d(
                    MaxPool2dConfig::new([*size, *size])
                        .with_strides([stride.unwrap_or(*size); 2])
                        .init(),
                )),
                LayerSpec::AvgPool2d { size, stride } => Some(Block::AvgPool2d(
                    AvgPool2dConfig::new([*size, *size])
                        .with_strides([stride.unwrap_or(*size); 2])
                        .init(),
                )),
                LayerSpec::Dropout { rate } => {
                    Some(Block::Dropout(DropoutConfig::new(*rate).init()))
                }
                LayerSpec::BatchNorm { epsilon, momentum } => Some(Block::BatchNorm(
                    BatchNormConfig::new(input[0])
                        .with_epsilon(*epsilon)
                        .with_momentum(*momentum)
                        .init(device),
                )),
                LayerSpec::LayerNorm { epsilon } => Some(Block::LayerNorm(
                    LayerNormConfig::new(*input.last().expect("rank ≥ 1"))
                        .with_epsilon(*epsilon)
                        .init(device),
                )),
                LayerSpec::Embedding { vocab, dim } => Some(Block::Embedding(
                    EmbeddingConfig::new(*vocab, *dim).init(device),
                )),
                _ => None,
            };
            let op = match (block, layer) {
                (Some(b), _) => {
                    blocks.push(b);
                    Op::Block(blocks.len() - 1)
                }
                (None, LayerSpec::Flatten {} | LayerSpec::Reshape { .. }) => {
                    Op::Reshape(info.output_shape.clone())
                }
                (None, LayerSpec::Relu {}) => Op::Relu,
                (None, LayerSpec::LeakyRelu { slope }) => Op::LeakyRelu(*slope),
                (None, LayerSpec::Gelu {}) => Op::Gelu,
                (None, LayerSpec::Tanh {}) => Op::Tanh,
                (None, LayerSpec::Sigmoid {}) => Op::Sigmoid,
                (None, LayerSpec::Softmax {}) => Op::Softmax,
                (None, other) => unreachable!("{} always has a block", other.kind()),
            };
            layer_blocks.push(match op {
                Op::Block(i) => Some(i),
                _ => None,
            });
            ops.push(op);
        }
        let input = spec.model.input.get_ref();
        let features = input.shape.iter().product();
        Network {
            blocks,
            ops,
            input_shape: input.shape.clone(),
            input_dtype: input.dtype,
            norm: InputNorm::identity(features),
            layer_blocks,
        }
    }

    /// Sets the input normalisation (fitted on the training split).
    pub fn with_norm(mut self, norm: InputNorm) -> Network {
        self.norm = norm;
        self
    }

    /// The input normalisation in force.
    pub fn norm(&self) -> &InputNorm {
        &self.norm
    }

    /// Per spec layer, the block it runs (None for parameter-free layers).
    pub(crate) fn layer_blocks(&self) -> &[Option<usize>] {
        &self.layer_blocks
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// Values per input sample.
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// Turns raw (un-normalised) host values of `batch` samples into the input tensor.
    pub fn input(
        &self,
        values: &[f32],
        batch: usize,
        device: &Device,
    ) -> Result<Activation, ModelError> {
        let per_sample = self.input_len();
        if values.len() != batch * per_sample || batch == 0 {
            return Err(ModelError::BadInput {
                got: values.len(),
                batch,
                want: batch * per_sample,
                per_sample,
                shape: modelforge_spec::show_shape(&self.input_shape),
            });
        }
        if self.input_dtype == Dtype::I64 {
            let ids: Vec<i64> = values.iter().map(|&v| v as i64).collect();
            return Ok(Activation::Ids(Tensor::from_data(
                TensorData::new(ids, [batch, per_sample]),
                device,
            )));
        }
        let data = if self.norm.is_identity() {
            values.to_vec()
        } else {
            values
                .chunks_exact(per_sample)
                .flat_map(|row| {
                    row.iter()
                        .zip(self.norm.shift.iter().zip(&self.norm.scale))
                        .map(|(x, (s, k))| (x - s) * k)
                })
                .collect()
        };
        let flat = Tensor::<2>::from_data(TensorData::new(data, [batch, per_sample]), device);
        Ok(Activation::R2(flat).reshape(&self.input_shape))
    }

    /// Output `[batch, outputs]` for an input, through every layer.
    pub fn forward(&self, input: Activation) -> Tensor<2> {
        self.run(input, self.ops.len())
    }

    /// Output before a trailing softmax or sigmoid: the logits the losses take.
    pub fn forward_logits(&self, input: Activation) -> Tensor<2> {
        let end = match self.ops.last() {
            Some(Op::Softmax | Op::Sigmoid) => self.ops.len() - 1,
            _ => self.ops.len(),
        };
        self.run(input, end)
    }

    fn run(&self, mut x: Activation, end: usize) -> Tensor<2> {
        for op in &self.ops[..end] {
            x = match op {
                Op::Block(i) => self.run_block(&self.blocks[*i], x),
                Op::Reshape(shape) => x.reshape(shape),
                Op::Relu => each_rank!(x, t => activation::relu(t)),
                Op::LeakyRelu(s) => each_rank!(x, t => activation::leaky_relu(t, *s)),
                Op::Gelu => each_rank!(x, t => activation::gelu(t)),
                Op::Tanh => each_rank!(x, t => activation::tanh(t)),
                Op::Sigmoid => each_rank!(x, t => activation::sigmoid(t)),
                Op::Softmax => match x {
                    Activation::R2(t) => Activation::R2(activation::softmax(t, 1)),
                    Activation::R3(t) => Activation::R3(activation::softmax(t, 2)),
                    Activation::R4(t) => Activation::R4(activation::softmax(t, 3)),
                    Activation::Ids(_) => unreachable!("validated"),
                },
            };
        }
        match x {
            Activation::R2(t) => t,
            other => unreachable!(
                "validated specs end in rank 1 per sample, got {:?}",
                other.dims()
            ),
        }
    }

    fn run_block(&self, block: &Block, x: Activation) -> Activation {
        match (block, x) {
            (Block::Dense(l), x) => each_rank!(x, t => l.forward(t)),
            (Block::Conv2d(c), Activation::R4(t)) => Activation::R4(c.forward(t)),
            (Block::MaxPool2d(p), Activation::R4(t)) => Activation::R4(p.forward(t)),
            (Block::AvgPool2d(p), Activation::R4(t)) => Activation::R4(p.forward(t)),
            (Block::Dropout(d), x) => each_rank!(x, t => d.forward(t)),
            (Block::BatchNorm(b), x) => each_rank!(x, t => b.forward(t)),
            (Block::LayerNorm(n), x) => each_rank!(x, t => n.forward(t)),
            (Block::Embedding(e), Activation::Ids(ids)) => Activation::R3(e.forward(ids)),
            (b, x) => unreachable!(
                "validated specs route shapes correctly: {b:?} on {:?}",
                x.dims()
            ),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;

    pub(crate) fn spec(layers: &str, input: &str, classes: usize) -> Spec {
        let text = format!(
            "[model]\nname = \"t\"\ninput = {input}\noutput = {{ task = \"classification\", classes = {classes} }}\nlayers = [{layers}]\n\
             [data]\nformat = \"csv\"\ntrain = {{ path = \"Cargo.toml\" }}\n\
             [train]\nepochs = 1\nbatch_size = 2\noptimizer = {{ kind = \"sgd\", lr = 0.1 }}\n"
        );
        Spec::parse(
            &text,
            Path::new("t.toml"),
            Path::new(env!("CARGO_MANIFEST_DIR")),
        )
        .unwrap()
    }

    #[test]
    fn parameter_count_matches_the_spec() {
        let s = spec(
            "{ conv2d = { filters = 4, kernel = 3, padding = \"same\" } }, { batch_norm = {} }, { relu = {} }, { max_pool2d = { size = 2 } }, { flatten = {} }, { dropout = { rate = 0.5 } }, { dense = { units = 3 } }, { layer_norm = {} }",
            "{ shape = [1, 6, 6] }",
            3,
        );
        let device = Device::flex();
        let net = Network::new(&s, &device);
        // burn also counts batch_norm's running mean and variance (2 × 4 channels).
        assert_eq!(net.num_params(), s.parameter_count() + 8);
        let x = net.input(&vec![0.5; 2 * 36], 2, &device).unwrap();
        assert_eq!(net.forward(x).dims(), [2, 3]);
    }

    #[test]
    fn embedding_takes_ids() {
        let s = spec(
            "{ embedding = { vocab = 10, dim = 4 } }, { flatten = {} }, { dense = { units = 2 } }, { softmax = {} }",
            "{ shape = [3], dtype = \"i64\" }",
            2,
        );
        let device = Device::flex();
        let net = Network::new(&s, &device);
        let out = net.forward(net.input(&[1.0, 2.0, 9.0], 1, &device).unwrap());
        let probs: Vec<f32> = out.into_data().try_to_vec::<f32>().unwrap();
        assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn wrong_input_size_is_an_error() {
        let s = spec("{ dense = { units = 2 } }", "{ shape = [3] }", 2);
        let device = Device::flex();
        let net = Network::new(&s, &device);
        assert!(matches!(
            net.input(&[1.0; 5], 2, &device),
            Err(ModelError::BadInput { .. })
        ));
    }
}
