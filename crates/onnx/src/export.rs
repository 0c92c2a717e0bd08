//! Export of modelforge-trained models: an ONNX graph (opset 17) that onnxruntime and
//! tract run, and the weights as a PyTorch state dict in safetensors with the module
//! definition that loads it.

use std::collections::BTreeMap;

use modelforge_serve::Values;
use modelforge_spec::{Dtype, GeluForm, LayerSpec, Source, Spec};
use prost::Message as _;
use safetensors::{Dtype as StDtype, SafeTensors};
use tract_onnx::pb::{
    self, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TypeProto, ValueInfoProto,
    attribute_proto::AttributeType,
    tensor_proto::DataType,
    tensor_shape_proto::{Dimension, dimension},
};

use crate::OnnxError;

/// The opset the exported graphs use (LayerNormalization needs 17).
pub const OPSET: i64 = 17;

/// The graph being written: nodes, initializers and the weights they come from.
struct Builder<'a> {
    weights: SafeTensors<'a>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

/// An attribute of a node.
enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
}

fn attribute(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto {
        name: name.into(),
        ..Default::default()
    };
    match value {
        Attr::Int(i) => (a.r#type, a.i) = (AttributeType::Int as i32, i),
        Attr::Float(f) => (a.r#type, a.f) = (AttributeType::Float as i32, f),
        Attr::Ints(v) => (a.r#type, a.ints) = (AttributeType::Ints as i32, v),
    }
    a
}

fn export_error(reason: String) -> OnnxError {
    OnnxError::Export { reason }
}

impl Builder<'_> {
    /// A stored weight as f32 values with its shape.
    fn weight(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), OnnxError> {
        let view = self.weights.tensor(name).map_err(|e| {
            export_error(format!(
                "the weights lack {name:?} ({e}) — were they saved by this spec?"
            ))
        })?;
        match (view.dtype(), Values::from_le_bytes("FP32", view.data())) {
            (StDtype::F32, Ok(Values::F32(values))) => Ok((view.shape().to_vec(), values)),
            (dtype, _) => Err(export_error(format!("{name:?} is {dtype:?}, not F32"))),
        }
    }

    /// Adds an f32 initializer and returns its name.
    fn constant(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        self.initializers.push(TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.into()
    }

    /// Adds an int64 initializer and returns its name.
    fn constant_i64(&mut self, name: &str, values: &[i64]) -> String {
        self.initializers.push(TensorProto {
            name: name.into(),
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.into()
    }

    /// A stored weight as an initializer of the same name.
    fn stored(&mut self, name: &str) -> Result<String, OnnxError> {
        let (dims, values) = self.weight(name)?;
        Ok(self.constant(name, &dims, &values))
    }

    /// Adds a node; its one output is named after it.
    fn node<S: AsRef<str>>(
        &mut self,
        name: &str,
        op: &str,
        inputs: &[S],
        attrs: Vec<(&str, Attr)>,
    ) -> String {
        self.nodes.push(NodeProto {
            name: name.into(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.as_ref().to_string()).collect(),
            output: vec![name.into()],
            attribute: attrs.into_iter().map(|(n, v)| attribute(n, v)).collect(),
            ..Default::default()
        });
        name.into()
    }
}

/// A graph input or output with a symbolic batch axis.
fn value_info(name: &str, elem: DataType, sample: &[usize]) -> ValueInfoProto {
    let batch = Dimension {
        value: Some(dimension::Value::DimParam("batch".into())),
        ..Default::default()
    };
    let dims = sample.iter().map(|&d| Dimension {
        value: Some(dimension::Value::DimValue(d as i64)),
        ..Default::default()
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: std::iter::once(batch).chain(dims).collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The ONNX graph of a spec with its trained weights (safetensors bytes as `train` writes
/// them): the same computation as the native network in inference mode, dropout as identity.
pub fn to_onnx(spec: &Spec, weights: &[u8]) -> Result<Vec<u8>, OnnxError> {
    let weights = SafeTensors::deserialize(weights)
        .map_err(|e| export_error(format!("the weights are not safetensors: {e}")))?;
    let mut b = Builder {
        weights,
        nodes: Vec::new(),
        initializers: Vec::new(),
    };
    let input = spec.model.input.get_ref();
    let output = spec.model.output.get_ref();
    let ids = input.dtype == Dtype::I64;
    let mut x = input.name.clone();
    // The input normalisation `(x - shift) * scale`, per feature, as trained. A step that
    // changes nothing is left out, and one with the same value for every feature takes a
    // scalar, which runtimes apply with their by-scalar kernels: the same arithmetic, less
    // work (tract has no fast kernel for 784 features against a batch).
    if !ids {
        let mut dims = vec![1];
        dims.extend(&input.shape);
        for (part, op, identity) in [("shift", "Sub", 0.0), ("scale", "Mul", 1.0)] {
            let name = format!("input_norm.{part}");
            let (_, values) = b.weight(&name)?;
            if values.iter().all(|&v| v == identity) {
                continue;
            }
            let constant = match values.windows(2).all(|w| w[0] == w[1]) {
                true => b.constant(&name, &[], &values[..1]),
                false => b.constant(&name, &dims, &values),
            };
            let step = format!("input_norm.{}", op.to_lowercase());
            x = b.node(&step, op, &[&x, &constant], vec![]);
        }
    }
    let graph = spec.graph();
    let input_value = x;
    let mut values: Vec<String> = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let at = node.name.clone();
        let p = |part: &str| format!("{at}.{part}");
        let layer = &node.layer;
        let sources: Vec<String> = node
            .inputs
            .iter()
            .map(|s| match s {
                Source::Input => input_value.clone(),
                Source::Node(j) => values[*j].clone(),
            })
            .collect();
        let x = sources[0].clone();
        let value = match layer {
            LayerSpec::Dense { bias, .. } => {
                let (dims, w) = b.weight(&p("weight"))?;
                let (out, inp) = (dims[0], dims[1]);
                // PyTorch stores [out, in]; MatMul wants [in, out].
                let mut t = vec![0.0; w.len()];
                for o in 0..out {
                    for k in 0..inp {
                        t[k * out + o] = w[o * inp + k];
                    }
                }
                let wt = b.constant(&format!("{at}.weight_t"), &[inp, out], &t);
                let y = b.node(&format!("{at}.matmul"), "MatMul", &[&x, &wt], vec![]);
                match bias {
                    true => {
                        let bias = b.stored(&p("bias"))?;
                        b.node(&at, "Add", &[&y, &bias], vec![])
                    }
                    false => y,
                }
            }
            LayerSpec::Conv2d {
                kernel,
                stride,
                padding,
                bias,
                ..
            } => {
                let mut inputs = vec![x.clone(), b.stored(&p("weight"))?];
                if *bias {
                    inputs.push(b.stored(&p("bias"))?);
                }
                let pad = padding.pixels(*kernel) as i64;
                b.node(
                    &at,
                    "Conv",
                    &inputs,
                    vec![
                        ("kernel_shape", Attr::Ints(vec![*kernel as i64; 2])),
                        ("strides", Attr::Ints(vec![*stride as i64; 2])),
                        ("pads", Attr::Ints(vec![pad; 4])),
                    ],
                )
            }
            LayerSpec::MaxPool2d { size, stride } | LayerSpec::AvgPool2d { size, stride } => {
                let op = match layer {
                    LayerSpec::MaxPool2d { .. } => "MaxPool",
                    _ => "AveragePool",
                };
                let stride = stride.unwrap_or(*size) as i64;
                b.node(
                    &at,
                    op,
                    &[&x],
                    vec![
                        ("kernel_shape", Attr::Ints(vec![*size as i64; 2])),
                        ("strides", Attr::Ints(vec![stride; 2])),
                    ],
                )
            }
            LayerSpec::Flatten {} | LayerSpec::Reshape { .. } => {
                // 0 keeps the batch size.
                let mut shape = vec![0];
                shape.extend(node.output_shape.iter().map(|&d| d as i64));
                let shape = b.constant_i64(&format!("{at}.shape"), &shape);
                b.node(&at, "Reshape", &[&x, &shape], vec![])
            }
            LayerSpec::Dropout { .. } => x,
            LayerSpec::BatchNorm { epsilon, .. } => {
                let mut inputs = vec![x.clone()];
                for part in ["weight", "bias", "running_mean", "running_var"] {
                    inputs.push(b.stored(&p(part))?);
                }
                b.node(
                    &at,
                    "BatchNormalization",
                    &inputs,
                    vec![("epsilon", Attr::Float(*epsilon as f32))],
                )
            }
            LayerSpec::LayerNorm { epsilon } => {
                let w = b.stored(&p("weight"))?;
                let bias = b.stored(&p("bias"))?;
                b.node(
                    &at,
                    "LayerNormalization",
                    &[&x, &w, &bias],
                    vec![
                        ("axis", Attr::Int(-1)),
                        ("epsilon", Attr::Float(*epsilon as f32)),
                    ],
                )
            }
            LayerSpec::Embedding { .. } => {
                let w = b.stored(&p("weight"))?;
                b.node(&at, "Gather", &[&w, &x], vec![])
            }
            LayerSpec::Relu {} => b.node(&at, "Relu", &[&x], vec![]),
            LayerSpec::LeakyRelu { slope } => b.node(
                &at,
                "LeakyRelu",
                &[&x],
                vec![("alpha", Attr::Float(*slope as f32))],
            ),
            LayerSpec::Gelu { approximate } => {
                let one = b.constant(&format!("{at}.one"), &[], &[1.0]);
                let half = b.constant(&format!("{at}.half"), &[], &[0.5]);
                let inner = match approximate {
                    // The exact GELU, x · ½ · (1 + erf(x / √2)), in opset-17 operators.
                    GeluForm::None => {
                        let root2 =
                            b.constant(&format!("{at}.sqrt2"), &[], &[std::f32::consts::SQRT_2]);
                        let scaled = b.node(&format!("{at}.div"), "Div", &[&x, &root2], vec![]);
                        b.node(&format!("{at}.erf"), "Erf", &[&scaled], vec![])
                    }
                    // GPT-2's x · ½ · (1 + tanh(√(2/π) · (x + 0.044715 x³))).
                    GeluForm::Tanh => {
                        let c = b.constant(&format!("{at}.c"), &[], &[0.044715]);
                        let k = b.constant(
                            &format!("{at}.k"),
                            &[],
                            &[(2.0 / std::f32::consts::PI).sqrt()],
                        );
                        let sq = b.node(&format!("{at}.sq"), "Mul", &[&x, &x], vec![]);
                        let cube = b.node(&format!("{at}.cube"), "Mul", &[&sq, &x], vec![]);
                        let cc = b.node(&format!("{at}.cc"), "Mul", &[&cube, &c], vec![]);
                        let sum = b.node(&format!("{at}.sum"), "Add", &[&x, &cc], vec![]);
                        let arg = b.node(&format!("{at}.arg"), "Mul", &[&sum, &k], vec![]);
                        b.node(&format!("{at}.tanh"), "Tanh", &[&arg], vec![])
                    }
                };
                let plus = b.node(&format!("{at}.add"), "Add", &[&inner, &one], vec![]);
                let times = b.node(&format!("{at}.mul"), "Mul", &[&x, &plus], vec![]);
                b.node(&at, "Mul", &[&times, &half], vec![])
            }
            LayerSpec::Tanh {} => b.node(&at, "Tanh", &[&x], vec![]),
            LayerSpec::Sigmoid {} => b.node(&at, "Sigmoid", &[&x], vec![]),
            LayerSpec::Softmax {} => b.node(&at, "Softmax", &[&x], vec![("axis", Attr::Int(-1))]),
            LayerSpec::Add {} => {
                let mut sum = sources[0].clone();
                for (k, other) in sources.iter().enumerate().skip(1) {
                    let name = match k + 1 == sources.len() {
                        true => at.clone(),
                        false => format!("{at}.sum{k}"),
                    };
                    sum = b.node(&name, "Add", &[&sum, other], vec![]);
                }
                sum
            }
            LayerSpec::Concat { axis } => {
                // The batch axis comes first in the graph.
                let rank = node.input_shapes[0].len() as i64;
                let axis = if *axis < 0 { rank + axis } else { *axis } + 1;
                b.node(&at, "Concat", &sources, vec![("axis", Attr::Int(axis))])
            }
            _ => return Err(no_export(node, "ONNX")),
        };
        values.push(value);
    }
    let last = values.last().cloned().unwrap_or(input_value);
    b.node(&output.name, "Identity", &[&last], vec![]);
    let elem = if ids {
        DataType::Int64
    } else {
        DataType::Float
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "modelforge".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(GraphProto {
            name: spec.name().to_string(),
            node: b.nodes,
            initializer: b.initializers,
            input: vec![value_info(&input.name, elem, &input.shape)],
            output: vec![value_info(
                &output.name,
                DataType::Float,
                &spec.output_shape(),
            )],
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

/// The weights as a PyTorch state dict: the stored tensors (already in `torch.nn` names
/// and layouts) plus the `num_batches_tracked` counters batch norms keep.
pub fn to_state_dict(spec: &Spec, weights: &[u8]) -> Result<Vec<u8>, OnnxError> {
    let stored = SafeTensors::deserialize(weights)
        .map_err(|e| export_error(format!("the weights are not safetensors: {e}")))?;
    let mut tensors: BTreeMap<String, (StDtype, Vec<usize>, Vec<u8>)> = stored
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                (view.dtype(), view.shape().to_vec(), view.data().to_vec()),
            )
        })
        .collect();
    for node in spec.graph().nodes {
        if matches!(node.layer, LayerSpec::BatchNorm { .. }) {
            tensors.insert(
                format!("{}.num_batches_tracked", node.name),
                (StDtype::I64, vec![], 0i64.to_le_bytes().to_vec()),
            );
        }
    }
    let views = tensors
        .iter()
        .map(|(name, (dtype, shape, data))| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| export_error(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| export_error(format!("cannot write safetensors: {e}")))
}

/// A PyTorch module definition whose `load_state_dict` takes [`to_state_dict`]'s file and
/// computes what the served model does; a stack of layers (`torch.nn.ModuleList`) only.
pub fn torch_module(spec: &Spec) -> Result<String, OnnxError> {
    let input = spec.model.input.get_ref();
    let features: usize = input.shape.iter().product();
    let graph = spec.graph();
    if let Some(node) = graph.first_branch() {
        return Err(export_error(format!(
            "layer {} ({}) does not take the layer before it, and the PyTorch module is written \
             for stacks of layers only — export this graph with --format onnx",
            node.name,
            node.layer.kind()
        )));
    }
    let mut layers = Vec::new();
    for node in &graph.nodes {
        let (i, o) = (&node.input_shapes[0], &node.output_shape);
        layers.push(match &node.layer {
            LayerSpec::Dense { units, bias } => format!(
                "nn.Linear({}, {units}, bias={})",
                i.last().copied().unwrap_or(1),
                py_bool(*bias)
            ),
            LayerSpec::Conv2d {
                filters,
                kernel,
                stride,
                padding,
                bias,
            } => format!(
                "nn.Conv2d({}, {filters}, {kernel}, stride={stride}, padding={}, bias={})",
                i[0],
                padding.pixels(*kernel),
                py_bool(*bias)
            ),
            LayerSpec::MaxPool2d { size, stride } => {
                format!("nn.MaxPool2d({size}, stride={})", stride.unwrap_or(*size))
            }
            LayerSpec::AvgPool2d { size, stride } => {
                format!("nn.AvgPool2d({size}, stride={})", stride.unwrap_or(*size))
            }
            LayerSpec::Flatten {} | LayerSpec::Reshape { .. } => format!(
                "Reshape({})",
                o.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            LayerSpec::Dropout { rate } => format!("nn.Dropout({rate})"),
            LayerSpec::BatchNorm { epsilon, .. } => {
                let kind = match i.len() {
                    3 => "BatchNorm2d",
                    _ => "BatchNorm1d",
                };
                format!("nn.{kind}({}, eps={epsilon})", i[0])
            }
            LayerSpec::LayerNorm { epsilon } => format!(
                "nn.LayerNorm({}, eps={epsilon})",
                i.last().copied().unwrap_or(1)
            ),
            LayerSpec::Embedding { vocab, dim } => format!("nn.Embedding({vocab}, {dim})"),
            LayerSpec::Relu {} => "nn.ReLU()".into(),
            LayerSpec::LeakyRelu { slope } => format!("nn.LeakyReLU({slope})"),
            LayerSpec::Gelu { approximate } => match approximate {
                GeluForm::None => "nn.GELU()".into(),
                GeluForm::Tanh => "nn.GELU(approximate=\"tanh\")".into(),
            },
            LayerSpec::Tanh {} => "nn.Tanh()".into(),
            LayerSpec::Sigmoid {} => "nn.Sigmoid()".into(),
            LayerSpec::Softmax {} => "nn.Softmax(dim=-1)".into(),
            // The joins are refused above; the transformer layers have no module here yet.
            _ => return Err(no_export(node, "the PyTorch module")),
        });
    }
    let shape = input
        .shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let norm = format!("        self.input_norm = InputNorm({features})\n");
    let apply_norm = match input.dtype {
        Dtype::I64 => "",
        Dtype::F32 => {
            "        x = ((x.reshape(x.shape[0], -1) - self.input_norm.shift) * self.input_norm.scale).reshape(x.shape)\n"
        }
    };
    Ok(format!(
        "# The PyTorch module of modelforge model {name:?}, generated by `modelforge export`.\n\
         # model = Model(); model.load_state_dict(safetensors.torch.load_file(PATH)); model.eval()\n\
         import torch\n\
         from torch import nn\n\
         \n\
         \n\
         class Reshape(nn.Module):\n\
         \x20   def __init__(self, *shape):\n\
         \x20       super().__init__()\n\
         \x20       self.shape = shape\n\
         \n\
         \x20   def forward(self, x):\n\
         \x20       return x.reshape(x.shape[0], *self.shape)\n\
         \n\
         \n\
         class InputNorm(nn.Module):\n\
         \x20   def __init__(self, features):\n\
         \x20       super().__init__()\n\
         \x20       self.register_buffer(\"shift\", torch.zeros(features))\n\
         \x20       self.register_buffer(\"scale\", torch.ones(features))\n\
         \n\
         \n\
         class Model(nn.Module):\n\
         \x20   \"\"\"Input {input_name:?}: [batch, {shape}]; output {output_name:?}.\"\"\"\n\
         \n\
         \x20   def __init__(self):\n\
         \x20       super().__init__()\n\
         {norm}\
         \x20       self.layers = nn.ModuleList([\n{layers}\x20       ])\n\
         \n\
         \x20   def forward(self, x):\n\
         {apply_norm}\
         \x20       for layer in self.layers:\n\
         \x20           x = layer(x)\n\
         \x20       return x\n",
        name = spec.name(),
        input_name = input.name,
        output_name = spec.model.output.get_ref().name,
        layers = layers
            .iter()
            .map(|l| format!("            {l},\n"))
            .collect::<String>(),
    ))
}

/// A layer with no exporter to `target` yet (the transformer layers): which one, and why.
fn no_export(node: &modelforge_spec::Node, target: &str) -> OnnxError {
    export_error(format!(
        "layer {} ({}) has no export to {target} yet — transformer layers are to be exported \
         with the language-model formats (Hugging Face, GGUF)",
        node.name,
        node.layer.kind()
    ))
}

fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A one-layer model on three features, exported with the given normalisation.
    fn exported(shift: [f32; 3], scale: [f32; 3]) -> GraphProto {
        let spec = spec_with("{ dense = { units = 2 } }", 2);
        let weights = safetensors_of(&[
            ("input_norm.shift", vec![3], shift.to_vec()),
            ("input_norm.scale", vec![3], scale.to_vec()),
            ("layers.0.weight", vec![2, 3], vec![1.0; 6]),
            ("layers.0.bias", vec![2], vec![0.0; 2]),
        ]);
        let onnx = to_onnx(&spec, &weights).unwrap();
        ModelProto::decode(&onnx[..]).unwrap().graph.unwrap()
    }

    /// A classifier on three features named `x` with these layers.
    fn spec_with(layers: &str, classes: usize) -> Spec {
        let text = format!(
            "[model]\nname = \"t\"\ninput = {{ name = \"x\", shape = [3] }}\n\
             output = {{ task = \"classification\", classes = {classes} }}\nlayers = [{layers}]\n\
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

    /// Safetensors bytes of f32 tensors: name, shape, values.
    fn safetensors_of(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
        let data: Vec<Vec<u8>> = tensors
            .iter()
            .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let views = tensors.iter().zip(&data).map(|((name, shape, _), d)| {
            let view = safetensors::tensor::TensorView::new(StDtype::F32, shape.clone(), d);
            (*name, view.unwrap())
        });
        safetensors::serialize(views, None).unwrap()
    }

    /// Weights of these names and shapes, every value 1.
    fn ones(tensors: &[(&str, Vec<usize>)]) -> Vec<u8> {
        let filled: Vec<(&str, Vec<usize>, Vec<f32>)> = tensors
            .iter()
            .map(|(name, shape)| (*name, shape.clone(), vec![1.0; shape.iter().product()]))
            .collect();
        safetensors_of(&filled)
    }

    /// The normalisation steps of a graph: op and the dims of its constant.
    fn steps(graph: &GraphProto) -> Vec<(String, Vec<i64>)> {
        graph
            .node
            .iter()
            .filter(|n| n.name.starts_with("input_norm."))
            .map(|n| {
                let constant = graph.initializer.iter().find(|t| t.name == n.input[1]);
                (n.op_type.clone(), constant.unwrap().dims.clone())
            })
            .collect()
    }

    #[test]
    fn normalisation_steps_that_change_nothing_are_left_out() {
        assert!(steps(&exported([0.0; 3], [1.0; 3])).is_empty());
        let scaled = exported([0.0; 3], [0.5; 3]);
        assert_eq!(steps(&scaled), [("Mul".to_string(), vec![])]);
        assert_eq!(scaled.node[0].input[0], "x");
    }

    #[test]
    fn per_feature_normalisation_keeps_its_shape() {
        let graph = exported([0.1, 0.2, 0.3], [2.0, 2.0, 2.0]);
        assert_eq!(
            steps(&graph),
            [("Sub".to_string(), vec![1, 3]), ("Mul".to_string(), vec![])]
        );
    }

    #[test]
    fn residual_joins_export_as_add_and_concat() {
        let spec = spec_with(
            "{ dense = { units = 3 }, name = \"fc\" }, { add = {}, inputs = [\"input\", \"fc\"], name = \"sum\" }, { concat = {}, inputs = [\"sum\", \"input\"] }",
            6,
        );
        let weights = ones(&[
            ("input_norm.shift", vec![3]),
            ("input_norm.scale", vec![3]),
            ("fc.weight", vec![3, 3]),
            ("fc.bias", vec![3]),
        ]);
        let model = ModelProto::decode(to_onnx(&spec, &weights).unwrap().as_slice()).unwrap();
        let graph = model.graph.unwrap();
        let node = |name: &str| graph.node.iter().find(|n| n.name == name).unwrap();
        // Both joins take the normalised input (a shift of one; the unit scale is left out).
        assert_eq!(node("fc.matmul").input[0], "input_norm.sub");
        assert_eq!(node("sum").op_type, "Add");
        assert_eq!(node("sum").input, ["input_norm.sub", "fc"]);
        assert_eq!(node("layers.2").op_type, "Concat");
        assert_eq!(node("layers.2").input, ["sum", "input_norm.sub"]);
        assert_eq!(node("layers.2").attribute[0].i, 1);
        // The PyTorch module is written for stacks only, and says what to use instead.
        let e = torch_module(&spec).unwrap_err().to_string();
        assert!(
            e.contains("layer sum (add)") && e.contains("--format onnx"),
            "{e}"
        );
    }

    /// Both GELU forms export to operators that compute them: the graph, run by tract,
    /// gives the formulas' values.
    #[test]
    fn both_gelu_forms_compute_their_formula() {
        use modelforge_serve::Runnable as _;
        let x = [-1.5f32, 0.3, 2.0];
        for (form, want) in [
            (
                "none",
                x.map(|v| 0.5 * v * (1.0 + erf(v / std::f32::consts::SQRT_2))),
            ),
            (
                "tanh",
                x.map(|v| {
                    let k = (2.0 / std::f32::consts::PI).sqrt();
                    0.5 * v * (1.0 + (k * (v + 0.044715 * v * v * v)).tanh())
                }),
            ),
        ] {
            let spec = spec_with(&format!("{{ gelu = {{ approximate = \"{form}\" }} }}"), 3);
            let weights = safetensors_of(&[
                ("input_norm.shift", vec![3], vec![0.0; 3]),
                ("input_norm.scale", vec![3], vec![1.0; 3]),
            ]);
            let bytes = to_onnx(&spec, &weights).unwrap();
            let mut model = crate::OnnxModel::from_bytes(
                &bytes,
                Path::new("gelu.onnx"),
                &Default::default(),
                &[1],
            )
            .unwrap();
            let out = model.run(vec![Values::F32(x.to_vec())], 1).unwrap();
            let Values::F32(got) = &out[0] else {
                panic!("f32 out")
            };
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-5, "{form}: {g} vs {w}");
            }
        }
    }

    /// The error function (Abramowitz and Stegun 7.1.26 is too coarse here; this is the
    /// series, exact to f32 on the small arguments of the test).
    fn erf(x: f32) -> f32 {
        let x = x as f64;
        let mut term = x;
        let mut sum = x;
        for n in 1..40 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        (sum * 2.0 / std::f64::consts::PI.sqrt()) as f32
    }

    #[test]
    fn transformer_layers_name_themselves_when_refused() {
        let spec = spec_with("{ rms_norm = {} }, { dense = { units = 2 } }", 2);
        let weights = ones(&[("input_norm.shift", vec![3]), ("input_norm.scale", vec![3])]);
        let e = to_onnx(&spec, &weights).unwrap_err().to_string();
        assert!(
            e.contains("layer layers.0 (rms_norm) has no export to ONNX"),
            "{e}"
        );
    }
}
