//! The network: the spec's checked graph as burn modules, run node by node.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use modelforge_spec::{Dtype, Graph, InputSpec, Source, Spec};

use crate::ModelError;
use crate::layers::{self, Activation, Block, Built, Context, KeyValues, Op};

/// The keys and values a generating model has seen, per attention layer, for a batch of
/// sequences that stand at one position: each pass appends its tokens.
#[derive(Debug, Clone)]
pub struct KvCache {
    slots: Vec<Option<KeyValues>>,
    len: usize,
}

impl KvCache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is held yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The keys and values of block `index`.
    pub(crate) fn slot(&mut self, index: usize) -> &mut Option<KeyValues> {
        &mut self.slots[index]
    }
}

/// One node of the graph as the network runs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    /// The node's name (the prefix of its weights).
    pub name: String,
    /// What it runs.
    pub op: Op,
    /// Where its inputs come from.
    pub inputs: Vec<Source>,
    /// How many later steps (or the output) still read its value.
    readers: usize,
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

/// The model: its blocks (the burn module tree) and the graph steps that run them.
#[derive(Module, Debug)]
pub struct Network {
    /// Layers with parameters or state, in graph order.
    pub blocks: Vec<Block>,
    #[module(skip)]
    steps: Vec<Step>,
    #[module(skip)]
    input_shape: Vec<usize>,
    #[module(skip)]
    output_shape: Vec<usize>,
    #[module(skip)]
    input_dtype: Dtype,
    #[module(skip)]
    norm: InputNorm,
    /// Floats every node's output holds, per sample.
    #[module(skip)]
    activations: usize,
}

impl Network {
    /// Builds freshly initialised weights for a validated spec on a device.
    ///
    /// Initialisation draws from the device's generator: seed it first for reproducible weights.
    pub fn new(spec: &Spec, device: &Device) -> Network {
        Network::from_graph(&spec.graph(), spec.model.input.get_ref(), device)
    }

    /// Builds freshly initialised weights for a checked graph and its input.
    pub fn from_graph(graph: &Graph, input: &InputSpec, device: &Device) -> Network {
        let mut blocks = Vec::new();
        let mut steps: Vec<Step> = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let op = match node.shares.map(|j| &steps[j].op) {
                Some(Op::Block(b)) => Op::Tied(*b),
                Some(_) => unreachable!("a tied head shares an embedding block"),
                None => match Block::init(node, device) {
                    Built::Module(block) => {
                        blocks.push(block);
                        Op::Block(blocks.len() - 1)
                    }
                    Built::Step(stateless) => Op::Stateless(stateless),
                },
            };
            for source in &node.inputs {
                if let Source::Node(i) = source {
                    steps[*i].readers += 1;
                }
            }
            steps.push(Step {
                name: node.name.clone(),
                op,
                inputs: node.inputs.clone(),
                readers: 0,
            });
        }
        if let Some(last) = steps.last_mut() {
            last.readers += 1;
        }
        let features = input.shape.iter().product();
        let activations = graph
            .nodes
            .iter()
            .map(|n| n.output_shape.iter().product::<usize>())
            .sum();
        Network {
            blocks,
            steps,
            input_shape: input.shape.clone(),
            output_shape: graph.output_shape().to_vec(),
            input_dtype: input.dtype,
            norm: InputNorm::identity(features),
            activations,
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

    /// Per block, the name of the node that runs it (the prefix of its weights).
    pub(crate) fn block_names(&self) -> Vec<&str> {
        let mut names = vec![""; self.blocks.len()];
        for step in &self.steps {
            if let Op::Block(i) = step.op {
                names[i] = &step.name;
            }
        }
        names
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// Per-sample output shape (`[context, vocab]` for a language model).
    pub fn output_shape(&self) -> &[usize] {
        &self.output_shape
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
        Ok(layers::reshape(Activation::R2(flat), &self.input_shape))
    }

    /// Output `[batch, outputs]` for an input, through every layer.
    pub fn forward(&self, input: Activation) -> Tensor<2> {
        rank2(self.run(input, None, false, &mut Context::Fresh))
    }

    /// Output before a trailing softmax or sigmoid: the logits the losses take.
    pub fn forward_logits(&self, input: Activation) -> Tensor<2> {
        rank2(self.run(input, None, true, &mut Context::Fresh))
    }

    /// Floats the outputs of every node hold for one sample: what one row of a pass keeps
    /// for its backward pass, to size batches by memory.
    pub fn activation_floats_per_sample(&self) -> usize {
        self.activations + self.input_len()
    }

    /// Output `[batch, outputs]` for raw (un-normalised) inputs `[batch, features]` already
    /// on the device: the normalisation runs as tensor operations, so gradients reach `x`.
    pub fn forward_raw(&self, x: Tensor<2>) -> Tensor<2> {
        let x = match self.norm.is_identity() {
            true => x,
            false => {
                let device = x.device();
                let n = self.norm.shift.len();
                let row = |v: &[f32]| {
                    Tensor::<2>::from_data(TensorData::new(v.to_vec(), [1, n]), &device)
                };
                (x - row(&self.norm.shift)) * row(&self.norm.scale)
            }
        };
        let input = layers::reshape(Activation::R2(x), &self.input_shape);
        rank2(self.run(input, None, false, &mut Context::Fresh))
    }

    /// Whether the network takes token ids into an embedding first: its gradients are then
    /// taken at the embedding's output ([`Network::embed`], [`Network::forward_embedded`]).
    pub fn embeds_ids(&self) -> bool {
        self.input_dtype == Dtype::I64
            && matches!(self.steps.first().map(|s| &s.op), Some(Op::Block(b)) if matches!(self.blocks[*b], Block::Embedding(_)))
    }

    /// The first embedding's vectors `[batch, len, dim]` for ids `[batch, len]`.
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let Some(Op::Block(b)) = self.steps.first().map(|s| &s.op) else {
            unreachable!("embed is called on networks that embed their ids")
        };
        rank3(self.blocks[*b].forward(Activation::Ids(ids), &mut Context::Fresh, *b))
    }

    /// Output `[batch, outputs]` with the first embedding's output replaced by `embedded`
    /// (`[batch, len, dim]`); later layers that read the ids get `ids`.
    pub fn forward_embedded(&self, ids: Tensor<2, Int>, embedded: Tensor<3>) -> Tensor<2> {
        rank2(self.run(
            Activation::Ids(ids),
            Some(Activation::R3(embedded)),
            false,
            &mut Context::Fresh,
        ))
    }

    /// Logits `[batch, outputs]` at the last position of a sequence model, with the first
    /// embedding's output replaced by `embedded` (`[batch, len, dim]`): what the model says
    /// of the token after the ids.
    pub fn forward_embedded_last(&self, ids: Tensor<2, Int>, embedded: Tensor<3>) -> Tensor<2> {
        let out = rank3(self.run(
            Activation::Ids(ids),
            Some(Activation::R3(embedded)),
            true,
            &mut Context::Fresh,
        ));
        let [batch, len, outputs] = out.dims();
        out.slice([0..batch, len - 1..len, 0..outputs])
            .reshape([batch, outputs])
    }

    /// Ids the first embedding takes (its table's rows), for a network that embeds ids.
    pub fn vocab(&self) -> Option<usize> {
        match self.steps.first().map(|s| &s.op) {
            Some(Op::Block(b)) if self.embeds_ids() => match &self.blocks[*b] {
                Block::Embedding(e) => Some(e.weight.dims()[0]),
                _ => None,
            },
            _ => None,
        }
    }

    /// Floats the key/value cache holds per position of one sequence (keys and values of
    /// every attention layer).
    pub fn cache_floats_per_token(&self) -> usize {
        self.blocks
            .iter()
            .map(|b| match b {
                Block::SelfAttention(a) => a.cache_floats_per_token(),
                _ => 0,
            })
            .sum()
    }

    /// An empty key/value cache for this network.
    pub fn cache(&self) -> KvCache {
        KvCache {
            slots: vec![None; self.blocks.len()],
            len: 0,
        }
    }

    /// Logits `[batch, len, outputs]` of a sequence model for token ids `[batch, len]`. With a
    /// cache the ids continue the sequences it holds (positions from `cache.len()` on), attend
    /// to every earlier position and are appended to it; without one they start at position 0.
    pub fn forward_tokens(&self, ids: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        let len = ids.dims()[1];
        match cache {
            Some(cache) => {
                let mut ctx = Context::Cached {
                    offset: cache.len,
                    slots: &mut cache.slots,
                };
                let out = self.run(Activation::Ids(ids), None, true, &mut ctx);
                cache.len += len;
                rank3(out)
            }
            None => rank3(self.run(Activation::Ids(ids), None, true, &mut Context::Fresh)),
        }
    }

    /// Logits `[rows, len, outputs]` where row `i` of the ids (`[rows, len]`) continues the
    /// sequence of `caches[i]`, each at its own position: many generations advance in one
    /// pass (the dense layers see the whole batch; attention reads each row's own cache).
    pub fn forward_rows(&self, ids: Tensor<2, Int>, caches: &mut [&mut KvCache]) -> Tensor<3> {
        let [rows, len] = ids.dims();
        assert_eq!(rows, caches.len(), "one cache per row of ids");
        let out = self.run(Activation::Ids(ids), None, true, &mut Context::Rows(caches));
        for cache in caches.iter_mut() {
            cache.len += len;
        }
        rank3(out)
    }

    /// Runs every step on `input`; `first`, when given, is the first step's output instead.
    fn run(
        &self,
        input: Activation,
        first: Option<Activation>,
        logits: bool,
        ctx: &mut Context,
    ) -> Activation {
        let last = self.steps.len() - 1;
        let mut values: Vec<Option<Activation>> = vec![None; self.steps.len()];
        let mut readers: Vec<usize> = self.steps.iter().map(|s| s.readers).collect();
        let skip = first.is_some() as usize;
        values[0] = first;
        for (i, step) in self.steps.iter().enumerate().skip(skip) {
            let inputs: Vec<Activation> = step
                .inputs
                .iter()
                .map(|source| match source {
                    Source::Input => input.clone(),
                    Source::Node(j) => {
                        readers[*j] -= 1;
                        // The last reader takes the value; earlier ones share it.
                        if readers[*j] == 0 {
                            values[*j].take().expect("computed before its readers")
                        } else {
                            values[*j].clone().expect("computed before its readers")
                        }
                    }
                })
                .collect();
            values[i] = Some(match &step.op {
                Op::Stateless(s) if logits && i == last && s.is_output_squash() => {
                    inputs.into_iter().next().expect("one input")
                }
                Op::Block(b) => {
                    let x = inputs.into_iter().next().expect("one input");
                    self.blocks[*b].forward(x, ctx, *b)
                }
                Op::Tied(b) => {
                    let Block::Embedding(e) = &self.blocks[*b] else {
                        unreachable!("a tied head shares an embedding")
                    };
                    layers::tied_head(e, inputs.into_iter().next().expect("one input"))
                }
                Op::Stateless(s) => s.forward(inputs),
            });
        }
        values[last].take().expect("the last step ran")
    }
}

/// The `[batch, len, outputs]` tensor of a sequence model.
fn rank3(out: Activation) -> Tensor<3> {
    match out {
        Activation::R3(t) => t,
        other => unreachable!(
            "a sequence model gives [batch, len, outputs], got {:?}",
            other.dims()
        ),
    }
}

/// The `[batch, outputs]` tensor of a model with rank-1 outputs.
fn rank2(out: Activation) -> Tensor<2> {
    match out {
        Activation::R2(t) => t,
        other => unreachable!(
            "validated specs end in rank 1 per sample, got {:?}",
            other.dims()
        ),
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

    /// A network for a `[model]` section alone (no data or training sections), its graph
    /// checked; weights drawn from a seeded generator.
    pub(crate) fn sequence_model(model: &str) -> Network {
        let spec: modelforge_spec::ModelSpec = toml::from_str(model).unwrap();
        let graph = modelforge_spec::graph::build(&spec).unwrap();
        Device::flex().seed(7);
        Network::from_graph(&graph, spec.input.get_ref(), &Device::flex())
    }

    fn ids(values: &[i64], batch: usize) -> Tensor<2, Int> {
        let len = values.len() / batch;
        Tensor::from_data(
            TensorData::new(values.to_vec(), [batch, len]),
            &Device::flex(),
        )
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn assert_close(a: &[f32], b: &[f32], tolerance: f32) {
        assert_eq!(a.len(), b.len());
        let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tolerance * scale,
                "value {i}: {x} against {y} (scale {scale})"
            );
        }
    }

    /// A GPT-2-shaped model: learned positions, pre-norm blocks, GELU MLP, tied head.
    pub(crate) const GPT: &str = r#"
name = "gpt"
input = { shape = [8], dtype = "i64" }
output = { task = "classification", classes = 2 }
layers = [
  { embedding = { vocab = 11, dim = 16 }, name = "tok" },
  { positional_embedding = { context = 8 } },
  { block = "decoder", repeat = 2, name = "h" },
  { layer_norm = {} },
  { tied_head = { embedding = "tok" } },
]
[blocks.decoder]
layers = [
  { layer_norm = {} },
  { self_attention = { heads = 4 }, name = "attn" },
  { add = {}, inputs = ["input", "attn"], name = "mid" },
  { layer_norm = {} },
  { dense = { units = 32 } },
  { gelu = {} },
  { dense = { units = 16 }, name = "ff" },
  { add = {}, inputs = ["mid", "ff"] },
]
"#;

    /// A LLaMA-shaped model: RMS norm, rotary positions, grouped-query attention, SwiGLU.
    fn llama(layout: &str) -> String {
        format!(
            r#"
name = "llama"
input = {{ shape = [8], dtype = "i64" }}
output = {{ task = "classification", classes = 2 }}
layers = [
  {{ embedding = {{ vocab = 13, dim = 16 }} }},
  {{ block = "decoder", repeat = 2 }},
  {{ rms_norm = {{}} }},
  {{ dense = {{ units = 13, bias = false }} }},
]
[blocks.decoder]
layers = [
  {{ rms_norm = {{}}, name = "norm1" }},
  {{ self_attention = {{ heads = 4, kv_heads = 2, bias = false, rope = {{ layout = "{layout}" }} }}, name = "attn" }},
  {{ add = {{}}, inputs = ["input", "attn"], name = "mid" }},
  {{ rms_norm = {{}} }},
  {{ swiglu = {{ hidden = 24 }}, name = "mlp" }},
  {{ add = {{}}, inputs = ["mid", "mlp"] }},
]
"#
        )
    }

    /// Decoding one token at a time over the cache gives the logits of one full pass.
    fn cached_decoding_matches_the_full_pass(net: &Network) {
        let tokens = [1i64, 5, 3, 9, 0, 2, 7, 4, 8, 6, 1, 3, 2, 5, 9, 0];
        let full = values(net.forward_tokens(ids(&tokens, 2), None));
        let vocab = full.len() / 16;
        let mut cache = net.cache();
        // A prompt of three, then one token a step.
        let prompt: Vec<i64> = [&tokens[0..3], &tokens[8..11]].concat();
        let mut got = [Vec::new(), Vec::new()];
        let first = values(net.forward_tokens(ids(&prompt, 2), Some(&mut cache)));
        for (b, row) in first.chunks(3 * vocab).enumerate() {
            got[b].extend_from_slice(row);
        }
        for p in 3..8 {
            let step = [tokens[p], tokens[8 + p]];
            let out = values(net.forward_tokens(ids(&step, 2), Some(&mut cache)));
            for (b, row) in out.chunks(vocab).enumerate() {
                got[b].extend_from_slice(row);
            }
        }
        assert_eq!(cache.len(), 8);
        assert_close(&got.concat(), &full, 1e-4);
        rows_at_their_own_positions_match_the_full_pass(net, &tokens, &full);
    }

    /// Two sequences with prompts of different lengths, each prefilled into its own cache,
    /// then advanced together one id a pass: each row's logits are its full pass's.
    fn rows_at_their_own_positions_match_the_full_pass(
        net: &Network,
        tokens: &[i64],
        full: &[f32],
    ) {
        let vocab = full.len() / 16;
        let (a, b) = (&tokens[..8], &tokens[8..]);
        let (mut ca, mut cb) = (net.cache(), net.cache());
        let mut got = [
            values(net.forward_tokens(ids(&a[..2], 1), Some(&mut ca))),
            values(net.forward_tokens(ids(&b[..5], 1), Some(&mut cb))),
        ];
        for p in 0..3 {
            let step = [a[2 + p], b[5 + p]];
            let out = values(net.forward_rows(ids(&step, 2), &mut [&mut ca, &mut cb]));
            for (row, logits) in out.chunks(vocab).enumerate() {
                got[row].extend_from_slice(logits);
            }
        }
        assert_eq!((ca.len(), cb.len()), (5, 8));
        assert_close(&got[0], &full[..5 * vocab], 1e-4);
        assert_close(&got[1], &full[8 * vocab..], 1e-4);
    }

    #[test]
    fn gpt_decoding_with_the_cache_equals_the_full_pass() {
        let net = sequence_model(GPT);
        cached_decoding_matches_the_full_pass(&net);
        // The tied head adds no weights of its own; block copies are named by position.
        let names: Vec<String> = net.named_tensors().into_iter().map(|t| t.name).collect();
        assert!(
            names.contains(&"h.0.attn.q_proj.weight".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"h.1.4.weight".to_string()), "{names:?}");
        assert!(names.contains(&"h.1.ff.bias".to_string()), "{names:?}");
        assert!(
            !names.iter().any(|n| n.starts_with("layers.4")),
            "{names:?}"
        );
    }

    #[test]
    fn llama_decoding_with_the_cache_equals_the_full_pass_in_both_rope_layouts() {
        for layout in ["halves", "adjacent_pairs"] {
            cached_decoding_matches_the_full_pass(&sequence_model(&llama(layout)));
        }
    }

    #[test]
    fn causal_attention_does_not_look_ahead() {
        let net = sequence_model(&llama("halves"));
        let a = values(net.forward_tokens(ids(&[1, 2, 3, 4, 5, 6, 7, 8], 1), None));
        let b = values(net.forward_tokens(ids(&[1, 2, 3, 4, 12, 0, 0, 0], 1), None));
        // The first four positions see the same prefix; the fifth does not.
        assert_close(&a[..4 * 13], &b[..4 * 13], 1e-6);
        assert!(a[4 * 13..5 * 13] != b[4 * 13..5 * 13]);
    }

    #[test]
    fn transformer_weights_round_trip_through_safetensors() {
        let net = sequence_model(&llama("adjacent_pairs"));
        let bytes = net.safetensors_bytes(Default::default());
        let fresh = {
            Device::flex().seed(99);
            let spec: modelforge_spec::ModelSpec =
                toml::from_str(&llama("adjacent_pairs")).unwrap();
            let graph = modelforge_spec::graph::build(&spec).unwrap();
            Network::from_graph(&graph, spec.input.get_ref(), &Device::flex())
        };
        let tokens = ids(&[3, 1, 4, 1, 5, 9, 2, 6], 1);
        let before = values(fresh.forward_tokens(tokens.clone(), None));
        let loaded = fresh
            .load_safetensors_bytes(&bytes, Path::new("w"), &Device::flex(), false)
            .unwrap();
        let want = values(net.forward_tokens(tokens.clone(), None));
        assert_ne!(before, want);
        assert_eq!(values(loaded.forward_tokens(tokens, None)), want);
    }

    #[test]
    fn a_residual_adds_the_input_back() {
        let net = sequence_model(
            r#"
name = "res"
input = { shape = [3] }
output = { task = "regression" }
layers = [
  { dense = { units = 3 }, name = "fc" },
  { add = {}, inputs = ["input", "fc"], name = "sum" },
  { concat = {}, inputs = ["input", "sum"] },
]
"#,
        );
        let device = Device::flex();
        let x = [0.5f32, -1.0, 2.0];
        let out = values(net.forward(net.input(&x, 1, &device).unwrap()));
        let t = net.named_tensors();
        let w = &t.iter().find(|t| t.name == "fc.weight").unwrap().values;
        let b = &t.iter().find(|t| t.name == "fc.bias").unwrap().values;
        let mut want = x.to_vec();
        for o in 0..3 {
            let dense: f32 = (0..3).map(|i| w[o * 3 + i] * x[i]).sum::<f32>() + b[o];
            want.push(x[o] + dense);
        }
        assert_close(&out, &want, 1e-6);
    }
}
