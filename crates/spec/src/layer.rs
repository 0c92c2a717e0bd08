//! Layers of the `[model]` section and their shape rules.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One layer of the model, written `{ kind = { options } }` in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// Fully connected layer on the last axis.
    Dense {
        /// Output features.
        units: usize,
        /// Whether the layer adds a bias.
        #[serde(default = "yes")]
        bias: bool,
    },
    /// 2-D convolution over `[channels, height, width]`.
    Conv2d {
        /// Output channels.
        filters: usize,
        /// Square kernel size.
        kernel: usize,
        /// Stride in both directions.
        #[serde(default = "one")]
        stride: usize,
        /// Zero padding: a number of pixels, or `"same"` / `"valid"`.
        #[serde(default)]
        padding: Padding,
        /// Whether the layer adds a bias.
        #[serde(default = "yes")]
        bias: bool,
    },
    /// 2-D max pooling.
    MaxPool2d {
        /// Square window size.
        size: usize,
        /// Stride; defaults to the window size.
        stride: Option<usize>,
    },
    /// 2-D average pooling.
    AvgPool2d {
        /// Square window size.
        size: usize,
        /// Stride; defaults to the window size.
        stride: Option<usize>,
    },
    /// Flattens the per-sample shape to one axis.
    Flatten {},
    /// Reshapes the per-sample shape; one entry may be -1.
    Reshape {
        /// Target per-sample shape.
        shape: Vec<i64>,
    },
    /// Drops activations with probability `rate` while training.
    Dropout {
        /// Drop probability in [0, 1).
        rate: f64,
    },
    /// Batch normalisation over the channel axis (axis 0 of the per-sample shape).
    BatchNorm {
        /// Added to the variance.
        #[serde(default = "norm_epsilon")]
        epsilon: f64,
        /// Running-statistics momentum.
        #[serde(default = "bn_momentum")]
        momentum: f64,
    },
    /// Layer normalisation over the last axis.
    LayerNorm {
        /// Added to the variance.
        #[serde(default = "norm_epsilon")]
        epsilon: f64,
    },
    /// Lookup table from integer ids to vectors.
    Embedding {
        /// Number of ids.
        vocab: usize,
        /// Vector size.
        dim: usize,
    },
    /// max(x, 0).
    Relu {},
    /// x if x > 0 else slope·x.
    LeakyRelu {
        /// Slope for negative inputs.
        #[serde(default = "leaky_slope")]
        slope: f64,
    },
    /// Gaussian error linear unit.
    Gelu {
        /// The exact erf form (default) or GPT-2's tanh approximation.
        #[serde(default, skip_serializing_if = "GeluForm::is_exact")]
        approximate: GeluForm,
    },
    /// Hyperbolic tangent.
    Tanh {},
    /// Logistic sigmoid.
    Sigmoid {},
    /// Softmax over the last axis.
    Softmax {},
    /// Learned position vectors added to a `[len, dim]` sequence (GPT-2's `wpe`).
    PositionalEmbedding {
        /// Longest sequence it has positions for.
        context: usize,
    },
    /// Multi-head self-attention over a `[len, dim]` sequence, with grouped-query
    /// key/value heads, optional rotary positions, and a key/value cache when generating.
    SelfAttention {
        /// Query heads; `dim` must be a multiple.
        heads: usize,
        /// Key/value heads (grouped-query attention); `heads` must be a multiple. Defaults to `heads`.
        kv_heads: Option<usize>,
        /// Each position attends only to itself and earlier ones.
        #[serde(default = "yes")]
        causal: bool,
        /// Rotary position encoding of queries and keys.
        rope: Option<Rope>,
        /// Drop probability on the attention weights while training.
        #[serde(default)]
        dropout: f64,
        /// Whether the four projections add a bias.
        #[serde(default = "yes")]
        bias: bool,
    },
    /// Root-mean-square normalisation over the last axis (LLaMA).
    RmsNorm {
        /// Added to the mean square.
        #[serde(default = "rms_epsilon")]
        epsilon: f64,
    },
    /// x · sigmoid(x).
    Silu {},
    /// The gated feed-forward of LLaMA: down(silu(gate(x)) · up(x)).
    Swiglu {
        /// Width of the gated hidden layer.
        hidden: usize,
        /// Whether the three projections add a bias.
        #[serde(default)]
        bias: bool,
    },
    /// Logits over a vocabulary from the transposed table of an earlier embedding layer
    /// (a head tied to the token embedding, as GPT-2's is).
    TiedHead {
        /// The `name` of the embedding layer whose table it shares.
        embedding: String,
    },
    /// Element-wise sum of two or more inputs of one shape (a residual connection).
    Add {},
    /// Joins two or more inputs along one per-sample axis.
    Concat {
        /// The per-sample axis; negative counts from the last (-1, the default, is the last).
        #[serde(default = "last_axis")]
        axis: i64,
    },
}

fn last_axis() -> i64 {
    -1
}

fn rms_epsilon() -> f64 {
    1e-6
}

fn rope_base() -> f64 {
    10000.0
}

/// Rotary position encoding: how query and key features are paired and rotated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rope {
    /// The base of the rotation frequencies.
    #[serde(default = "rope_base")]
    pub base: f64,
    /// Which features form a rotated pair.
    #[serde(default)]
    pub layout: RopeLayout,
}

/// Which features of a head rotate together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeLayout {
    /// Feature i with feature i + head_dim/2 (GPT-NeoX, Hugging Face LLaMA).
    #[default]
    Halves,
    /// Features 2i and 2i+1 (the original RoPE, llama.cpp, GGUF).
    AdjacentPairs,
}

/// How a GELU is computed, named as PyTorch's `approximate` argument names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GeluForm {
    /// x · Φ(x) with the error function.
    #[default]
    None,
    /// ½x · (1 + tanh(√(2/π) · (x + 0.044715 x³))), as GPT-2 computes it (`gelu_new`).
    Tanh,
}

impl GeluForm {
    /// Whether this is the exact form (the default, left out when a spec is written).
    pub fn is_exact(&self) -> bool {
        *self == GeluForm::None
    }
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn norm_epsilon() -> f64 {
    1e-5
}
fn bn_momentum() -> f64 {
    0.1
}
fn leaky_slope() -> f64 {
    0.01
}

/// Convolution padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// No padding.
    #[default]
    Valid,
    /// Output keeps the input's height and width (stride 1, odd kernel).
    Same,
    /// This many zero pixels on every side.
    Pixels(usize),
}

impl Padding {
    /// Pixels of padding on each side for a kernel size.
    pub fn pixels(self, kernel: usize) -> usize {
        match self {
            Padding::Valid => 0,
            Padding::Same => kernel / 2,
            Padding::Pixels(p) => p,
        }
    }
}

impl Serialize for Padding {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Padding::Valid => s.serialize_str("valid"),
            Padding::Same => s.serialize_str("same"),
            Padding::Pixels(p) => s.serialize_u64(*p as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Padding {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Padding;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of pixels (0 or more), \"same\" or \"valid\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Padding, E> {
                usize::try_from(v)
                    .map(Padding::Pixels)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Padding, E> {
                Ok(Padding::Pixels(v as usize))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Padding, E> {
                match v {
                    "same" => Ok(Padding::Same),
                    "valid" => Ok(Padding::Valid),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The element type a layer needs at its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Floating-point activations.
    Float,
    /// Integer ids (only embedding takes them).
    Ids,
}

/// A shape error of one layer: what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeProblem {
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

fn problem(message: impl Into<String>, fix: impl Into<String>) -> ShapeProblem {
    ShapeProblem {
        message: message.into(),
        fix: fix.into(),
    }
}

/// Formats a per-sample shape as `[a, b, c]`.
pub fn show_shape(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

impl LayerSpec {
    /// The name of the layer kind as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Dense { .. } => "dense",
            LayerSpec::Conv2d { .. } => "conv2d",
            LayerSpec::MaxPool2d { .. } => "max_pool2d",
            LayerSpec::AvgPool2d { .. } => "avg_pool2d",
            LayerSpec::Flatten {} => "flatten",
            LayerSpec::Reshape { .. } => "reshape",
            LayerSpec::Dropout { .. } => "dropout",
            LayerSpec::BatchNorm { .. } => "batch_norm",
            LayerSpec::LayerNorm { .. } => "layer_norm",
            LayerSpec::Embedding { .. } => "embedding",
            LayerSpec::Relu {} => "relu",
            LayerSpec::LeakyRelu { .. } => "leaky_relu",
            LayerSpec::Gelu { .. } => "gelu",
            LayerSpec::Tanh {} => "tanh",
            LayerSpec::Sigmoid {} => "sigmoid",
            LayerSpec::Softmax {} => "softmax",
            LayerSpec::PositionalEmbedding { .. } => "positional_embedding",
            LayerSpec::SelfAttention { .. } => "self_attention",
            LayerSpec::RmsNorm { .. } => "rms_norm",
            LayerSpec::Silu {} => "silu",
            LayerSpec::Swiglu { .. } => "swiglu",
            LayerSpec::TiedHead { .. } => "tied_head",
            LayerSpec::Add {} => "add",
            LayerSpec::Concat { .. } => "concat",
        }
    }

    /// Checks the layer's own options (sizes, rates) independent of its input.
    pub fn check_options(&self) -> Result<(), ShapeProblem> {
        let positive = |name: &str, v: usize| {
            if v == 0 {
                Err(problem(
                    format!("`{name}` is 0"),
                    format!("give `{name}` a value of 1 or more"),
                ))
            } else {
                Ok(())
            }
        };
        match self {
            LayerSpec::Dense { units, .. } => positive("units", *units),
            LayerSpec::Conv2d {
                filters,
                kernel,
                stride,
                ..
            } => {
                positive("filters", *filters)?;
                positive("kernel", *kernel)?;
                positive("stride", *stride)
            }
            LayerSpec::MaxPool2d { size, stride } | LayerSpec::AvgPool2d { size, stride } => {
                positive("size", *size)?;
                positive("stride", stride.unwrap_or(1))
            }
            LayerSpec::Reshape { shape } => {
                if shape.is_empty() {
                    return Err(problem(
                        "`shape` is empty",
                        "list the target sizes, e.g. [1, 28, 28]",
                    ));
                }
                if shape.iter().filter(|&&d| d == -1).count() > 1 {
                    return Err(problem(
                        "`shape` has more than one -1",
                        "leave at most one size as -1",
                    ));
                }
                if let Some(d) = shape.iter().find(|&&d| d == 0 || d < -1) {
                    return Err(problem(
                        format!("`shape` holds {d}"),
                        "sizes are 1 or more, or -1 for the one size inferred",
                    ));
                }
                Ok(())
            }
            LayerSpec::Dropout { rate } => {
                if !(0.0..1.0).contains(rate) {
                    Err(problem(
                        format!("`rate` is {rate}"),
                        "give a drop rate in [0, 1), e.g. 0.5",
                    ))
                } else {
                    Ok(())
                }
            }
            LayerSpec::BatchNorm { epsilon, momentum } => {
                positive_f("epsilon", *epsilon)?;
                if !(0.0..=1.0).contains(momentum) {
                    return Err(problem(
                        format!("`momentum` is {momentum}"),
                        "give a momentum in [0, 1], e.g. 0.1",
                    ));
                }
                Ok(())
            }
            LayerSpec::LayerNorm { epsilon } | LayerSpec::RmsNorm { epsilon } => {
                positive_f("epsilon", *epsilon)
            }
            LayerSpec::PositionalEmbedding { context } => positive("context", *context),
            LayerSpec::Swiglu { hidden, .. } => positive("hidden", *hidden),
            LayerSpec::SelfAttention {
                heads,
                kv_heads,
                rope,
                dropout,
                ..
            } => {
                positive("heads", *heads)?;
                let kv = kv_heads.unwrap_or(*heads);
                positive("kv_heads", kv)?;
                if heads % kv != 0 {
                    return Err(problem(
                        format!("{heads} heads do not split into groups of {kv} key/value heads"),
                        format!("give kv_heads a divisor of {heads}, e.g. 1 or {heads}"),
                    ));
                }
                if !(0.0..1.0).contains(dropout) {
                    return Err(problem(
                        format!("`dropout` is {dropout}"),
                        "give a drop rate in [0, 1), e.g. 0.1",
                    ));
                }
                match rope {
                    Some(r) if !(r.base > 1.0 && r.base.is_finite()) => Err(problem(
                        format!("rope `base` is {}", r.base),
                        "give a base above 1, e.g. 10000",
                    )),
                    _ => Ok(()),
                }
            }
            LayerSpec::Embedding { vocab, dim } => {
                positive("vocab", *vocab)?;
                positive("dim", *dim)
            }
            LayerSpec::LeakyRelu { slope } => {
                if slope.is_finite() {
                    Ok(())
                } else {
                    Err(problem(
                        "`slope` is not a finite number",
                        "give a slope such as 0.01",
                    ))
                }
            }
            _ => Ok(()),
        }
    }

    /// The element type this layer takes.
    pub fn input_flow(&self) -> Flow {
        match self {
            LayerSpec::Embedding { .. } => Flow::Ids,
            _ => Flow::Float,
        }
    }

    /// Output per-sample shape for an input per-sample shape, or why it does not fit.
    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ShapeProblem> {
        let shown = show_shape(input);
        let sequence = |kind: &str| match input {
            [len, dim] => Ok((*len, *dim)),
            _ => Err(problem(
                format!("its input is {shown} but {kind} needs a sequence [len, dim]"),
                "place it after an embedding layer (input dtype = \"i64\", shape = [len])",
            )),
        };
        match self {
            LayerSpec::PositionalEmbedding { context } => {
                let (len, _) = sequence(self.kind())?;
                if len > *context {
                    return Err(problem(
                        format!("the sequence has {len} positions but the table holds {context}"),
                        format!("set context = {len} or more, or shorten the model input"),
                    ));
                }
                Ok(input.to_vec())
            }
            LayerSpec::SelfAttention { heads, rope, .. } => {
                let (_, dim) = sequence(self.kind())?;
                if dim % heads != 0 {
                    return Err(problem(
                        format!("width {dim} does not split into {heads} heads"),
                        format!("give heads a divisor of {dim}, or change the width"),
                    ));
                }
                let head_dim = dim / heads;
                if rope.is_some() && head_dim % 2 != 0 {
                    return Err(problem(
                        format!(
                            "rotary positions need an even head width, and {dim} / {heads} = {head_dim}"
                        ),
                        "choose heads so that dim / heads is even",
                    ));
                }
                Ok(input.to_vec())
            }
            LayerSpec::Swiglu { .. } => {
                sequence(self.kind())?;
                Ok(input.to_vec())
            }
            LayerSpec::TiedHead { .. } => Err(problem(
                "a tied head needs its embedding's vocabulary",
                "the graph resolves tied heads; this is a bug if you see it",
            )),
            LayerSpec::Dense { units, .. } => match input.len() {
                1 | 2 => {
                    let mut out = input.to_vec();
                    *out.last_mut().expect("rank checked") = *units;
                    Ok(out)
                }
                _ => Err(problem(
                    format!("its input is {shown} but dense needs rank 1 (or 2 for sequences)"),
                    "add `{ flatten = {} }` before it",
                )),
            },
            LayerSpec::Conv2d {
                filters,
                kernel,
                stride,
                padding,
                ..
            } => {
                let [_, h, w] = rank3(input, "conv2d")?;
                let pad = padding.pixels(*kernel);
                if *padding == Padding::Same && (*stride != 1 || kernel % 2 == 0) {
                    return Err(problem(
                        "padding \"same\" needs stride 1 and an odd kernel",
                        "set stride = 1 and an odd kernel, or give padding as a number of pixels",
                    ));
                }
                let out = |x: usize| (x + 2 * pad).checked_sub(*kernel).map(|v| v / stride + 1);
                match (out(h), out(w)) {
                    (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok(vec![*filters, oh, ow]),
                    _ => Err(problem(
                        format!("its input {shown} is smaller than the {kernel}×{kernel} kernel"),
                        "use a smaller kernel, add padding, or remove a pooling layer before it",
                    )),
                }
            }
            LayerSpec::MaxPool2d { size, stride } | LayerSpec::AvgPool2d { size, stride } => {
                let [c, h, w] = rank3(input, self.kind())?;
                let stride = stride.unwrap_or(*size);
                if h < *size || w < *size {
                    return Err(problem(
                        format!("its input {shown} is smaller than the {size}×{size} window"),
                        "use a smaller window or remove an earlier pooling layer",
                    ));
                }
                Ok(vec![c, (h - size) / stride + 1, (w - size) / stride + 1])
            }
            LayerSpec::Flatten {} => Ok(vec![values(input)?]),
            LayerSpec::Reshape { shape } => {
                let total = values(input)?;
                let sizes: Vec<usize> = shape
                    .iter()
                    .filter(|&&d| d > 0)
                    .map(|&d| d as usize)
                    .collect();
                let known = values(&sizes)?;
                let inferred = shape.contains(&-1);
                let fits = if inferred {
                    known > 0 && total.is_multiple_of(known)
                } else {
                    known == total
                };
                if !fits {
                    return Err(problem(
                        format!("its input {shown} has {total} values, which do not fit {shape:?}"),
                        format!("give a shape whose sizes multiply to {total}"),
                    ));
                }
                Ok(shape
                    .iter()
                    .map(|&d| if d == -1 { total / known } else { d as usize })
                    .collect())
            }
            LayerSpec::BatchNorm { .. } => match input.len() {
                1..=3 => Ok(input.to_vec()),
                _ => Err(problem(
                    format!("its input is {shown} but batch_norm needs rank 1 to 3"),
                    "place it after a dense or conv2d layer",
                )),
            },
            LayerSpec::Embedding { dim, .. } => match input {
                [len] => Ok(vec![*len, *dim]),
                _ => Err(problem(
                    format!("its input is {shown} but embedding needs a sequence of ids (rank 1)"),
                    "make the model input a rank-1 shape of integer ids, e.g. shape = [16], dtype = \"i64\"",
                )),
            },
            LayerSpec::Dropout { .. }
            | LayerSpec::LayerNorm { .. }
            | LayerSpec::RmsNorm { .. }
            | LayerSpec::Silu {}
            | LayerSpec::Relu {}
            | LayerSpec::LeakyRelu { .. }
            | LayerSpec::Gelu { .. }
            | LayerSpec::Tanh {}
            | LayerSpec::Sigmoid {}
            | LayerSpec::Softmax {} => Ok(input.to_vec()),
            LayerSpec::Add {} | LayerSpec::Concat { .. } => self.merged_shape(&[input.to_vec()]),
        }
    }

    /// Whether the layer joins several inputs (`add`, `concat`) rather than taking one.
    pub fn merges(&self) -> bool {
        matches!(self, LayerSpec::Add {} | LayerSpec::Concat { .. })
    }

    /// Output per-sample shape of a merge layer for its inputs' shapes, or why they do not meet.
    pub fn merged_shape(&self, inputs: &[Vec<usize>]) -> Result<Vec<usize>, ShapeProblem> {
        let kind = self.kind();
        let [first, rest @ ..] = inputs else {
            return Err(problem(
                format!("{kind} has no inputs"),
                "list two or more in `inputs`",
            ));
        };
        if rest.is_empty() {
            return Err(problem(
                format!("{kind} has one input but joins two or more"),
                "list the layers it joins, e.g. inputs = [\"input\", \"attn\"]",
            ));
        }
        match self {
            LayerSpec::Concat { axis } => {
                let rank = first.len() as i64;
                let at = if *axis < 0 { rank + axis } else { *axis };
                if !(0..rank).contains(&at) {
                    return Err(problem(
                        format!("axis {axis} is outside the inputs' rank {rank}"),
                        format!("give an axis from {} to {}", -rank, rank - 1),
                    ));
                }
                let at = at as usize;
                let mut out = first.clone();
                for shape in rest {
                    let fits = shape.len() == first.len()
                        && shape
                            .iter()
                            .zip(first)
                            .enumerate()
                            .all(|(i, (a, b))| i == at || a == b);
                    if !fits {
                        return Err(problem(
                            format!(
                                "shapes {} and {} do not meet at concat along axis {axis}",
                                show_shape(first),
                                show_shape(shape)
                            ),
                            "the inputs must agree on every axis but the joined one",
                        ));
                    }
                    out[at] += shape[at];
                }
                Ok(out)
            }
            _ => match rest.iter().find(|s| *s != first) {
                Some(other) => Err(problem(
                    format!(
                        "shapes {} and {} do not meet at {kind}",
                        show_shape(first),
                        show_shape(other)
                    ),
                    "give the joined layers the same output shape (e.g. the same dense units)",
                )),
                None => Ok(first.clone()),
            },
        }
    }

    /// Trainable parameter count for an input per-sample shape (already checked to fit);
    /// a count past `usize::MAX` (an absurd size in a file) saturates, for the memory
    /// check to refuse.
    pub fn parameters(&self, input: &[usize]) -> usize {
        let n = |v: usize| v as u128;
        let last = n(input.last().copied().unwrap_or(0));
        let first = n(input.first().copied().unwrap_or(0));
        let count: u128 = match self {
            LayerSpec::Dense { units, bias } => {
                last * n(*units) + if *bias { n(*units) } else { 0 }
            }
            LayerSpec::Conv2d {
                filters,
                kernel,
                bias,
                ..
            } => {
                first * n(*filters) * n(*kernel) * n(*kernel) + if *bias { n(*filters) } else { 0 }
            }
            LayerSpec::BatchNorm { .. } => 2 * first,
            LayerSpec::LayerNorm { .. } => 2 * last,
            LayerSpec::Embedding { vocab, dim } => n(*vocab) * n(*dim),
            LayerSpec::PositionalEmbedding { context } => n(*context) * last,
            LayerSpec::RmsNorm { .. } => last,
            LayerSpec::SelfAttention {
                heads,
                kv_heads,
                bias,
                ..
            } => {
                let kv_dim = last / n(*heads).max(1) * n(kv_heads.unwrap_or(*heads));
                let weights = 2 * last * last + 2 * last * kv_dim;
                weights + if *bias { 2 * last + 2 * kv_dim } else { 0 }
            }
            LayerSpec::Swiglu { hidden, bias } => {
                3 * last * n(*hidden) + if *bias { 2 * n(*hidden) + last } else { 0 }
            }
            _ => 0,
        };
        count.min(usize::MAX as u128) as usize
    }
}

/// The number of values in a shape, refused when it cannot even be counted.
pub(crate) fn values(shape: &[usize]) -> Result<usize, ShapeProblem> {
    shape
        .iter()
        .try_fold(1usize, |total, &d| total.checked_mul(d))
        .ok_or_else(|| {
            problem(
                format!(
                    "{} holds more values than any machine can address",
                    show_shape(shape)
                ),
                "use sizes a machine can hold (a few million values per sample at most)",
            )
        })
}

fn positive_f(name: &str, v: f64) -> Result<(), ShapeProblem> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(problem(
            format!("`{name}` is {v}"),
            format!("give `{name}` a small positive value, e.g. 1e-5"),
        ))
    }
}

fn rank3(input: &[usize], kind: &str) -> Result<[usize; 3], ShapeProblem> {
    match input {
        [c, h, w] => Ok([*c, *h, *w]),
        [n] => Err(problem(
            format!(
                "its input is {} but {kind} needs [channels, height, width]",
                show_shape(input)
            ),
            format!(
                "set the input shape to [channels, height, width], or add `{{ reshape = {{ shape = [1, H, W] }} }}` before it (H·W = {n})"
            ),
        )),
        _ => Err(problem(
            format!(
                "its input is {} but {kind} needs [channels, height, width]",
                show_shape(input)
            ),
            "give the model input a rank-3 shape such as [1, 28, 28]",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_on_rank3_suggests_flatten() {
        let l = LayerSpec::Dense {
            units: 10,
            bias: true,
        };
        let e = l.output_shape(&[32, 13, 13]).unwrap_err();
        assert!(e.message.contains("[32, 13, 13]"), "{}", e.message);
        assert!(e.fix.contains("flatten"));
    }

    #[test]
    fn conv_and_pool_shapes() {
        let conv = LayerSpec::Conv2d {
            filters: 6,
            kernel: 5,
            stride: 1,
            padding: Padding::Same,
            bias: true,
        };
        assert_eq!(conv.output_shape(&[1, 28, 28]).unwrap(), vec![6, 28, 28]);
        assert_eq!(conv.parameters(&[1, 28, 28]), 6 * 25 + 6);
        let pool = LayerSpec::MaxPool2d {
            size: 2,
            stride: None,
        };
        assert_eq!(pool.output_shape(&[6, 28, 28]).unwrap(), vec![6, 14, 14]);
    }

    #[test]
    fn reshape_infers_one_axis() {
        let r = LayerSpec::Reshape {
            shape: vec![1, -1, 28],
        };
        assert_eq!(r.output_shape(&[784]).unwrap(), vec![1, 28, 28]);
        assert!(
            LayerSpec::Reshape { shape: vec![3, 3] }
                .output_shape(&[784])
                .is_err()
        );
    }

    #[test]
    fn padding_parses_numbers_and_words() {
        #[derive(Deserialize)]
        struct P {
            p: Padding,
        }
        assert_eq!(toml::from_str::<P>("p = 2").unwrap().p, Padding::Pixels(2));
        assert_eq!(
            toml::from_str::<P>("p = \"same\"").unwrap().p,
            Padding::Same
        );
        assert!(toml::from_str::<P>("p = -1").is_err());
        assert!(toml::from_str::<P>("p = \"full\"").is_err());
    }
}
