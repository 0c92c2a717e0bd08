//! The model as a checked graph: every layer a named node with its inputs, shapes and
//! parameter count, blocks expanded. The model builder, the summary, the drawings and the
//! exporters all walk this one type.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use toml::Spanned;

use crate::layer::{Flow, LayerSpec, show_shape};
use crate::model::{BlockSpec, Dtype, EntryBody, LayerEntry, ModelSpec};

/// Where a node's input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The model's input tensor.
    Input,
    /// The output of the node at this index of [`Graph::nodes`].
    Node(usize),
}

/// One layer of the graph, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Unique name, also the prefix of the node's weights: the entry's `name`, or
    /// `layers.{i}` for the i-th unnamed entry; inside a placed block `{block}.{copy}.{layer}`.
    pub name: String,
    /// The layer and its options.
    pub layer: LayerSpec,
    /// What it takes, in order.
    pub inputs: Vec<Source>,
    /// Per-sample shape of each input.
    pub input_shapes: Vec<Vec<usize>>,
    /// Per-sample output shape.
    pub output_shape: Vec<usize>,
    /// Trainable parameters.
    pub parameters: usize,
    /// The earlier node whose weights this one uses too (a tied head's embedding).
    pub shares: Option<usize>,
}

/// The whole model graph in an order where every node comes after its inputs; the last
/// node gives the model's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// Per-sample shape of the model input.
    pub input_shape: Vec<usize>,
    /// The nodes, inputs first.
    pub nodes: Vec<Node>,
}

impl Graph {
    /// Per-sample shape of the model's output.
    pub fn output_shape(&self) -> &[usize] {
        self.nodes
            .last()
            .map_or(&self.input_shape, |n| &n.output_shape)
    }

    /// Total trainable parameters.
    pub fn parameters(&self) -> usize {
        self.nodes.iter().map(|n| n.parameters).sum()
    }

    /// Whether every node takes exactly the one before it (a plain stack of layers).
    pub fn is_chain(&self) -> bool {
        self.first_branch().is_none()
    }

    /// The first node, in graph order, that is not part of a plain stack, if any.
    pub fn first_branch(&self) -> Option<&Node> {
        self.nodes.iter().enumerate().find_map(|(i, n)| {
            let before = if i == 0 {
                Source::Input
            } else {
                Source::Node(i - 1)
            };
            (n.inputs != [before]).then_some(n)
        })
    }
}

/// Why a model does not form a valid graph: where in the file, what, and the fix.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphProblem {
    /// Byte range of the entry in the file.
    pub span: Range<usize>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

/// The reserved name of a graph's (or a block's) input in `inputs`.
pub const INPUT: &str = "input";

/// What a name in `inputs` resolves to: a source with its shape and element type.
#[derive(Debug, Clone)]
struct Value {
    source: Source,
    shape: Vec<usize>,
    flow: Flow,
}

/// Builds and checks the graph of a `[model]` section.
pub fn build(model: &ModelSpec) -> Result<Graph, GraphProblem> {
    let input = model.input.get_ref();
    let mut builder = Builder {
        blocks: &model.blocks,
        nodes: Vec::new(),
    };
    let start = Value {
        source: Source::Input,
        shape: input.shape.clone(),
        flow: match input.dtype {
            Dtype::F32 => Flow::Float,
            Dtype::I64 => Flow::Ids,
        },
    };
    builder.scope(&model.layers, "layers", start, true)?;
    Ok(Graph {
        input_shape: input.shape.clone(),
        nodes: builder.nodes,
    })
}

struct Builder<'a> {
    blocks: &'a BTreeMap<String, Spanned<BlockSpec>>,
    nodes: Vec<Node>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Builder<'_> {
    /// Adds the entries of one scope (the model's layers, or one copy of a block) and returns
    /// the value of its last entry. Unnamed entry `i` is named `{prefix}.{i}`.
    fn scope(
        &mut self,
        entries: &[Spanned<LayerEntry>],
        prefix: &str,
        input: Value,
        top: bool,
    ) -> Result<Value, GraphProblem> {
        let mut names: HashMap<String, Value> = HashMap::new();
        // Names listed later in this scope, so a forward reference gets its own message.
        let later: HashMap<&str, usize> = entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.get_ref().name.as_deref().map(|n| (n, i)))
            .collect();
        let mut last = input.clone();
        for (i, spanned) in entries.iter().enumerate() {
            let entry = spanned.get_ref();
            let span = spanned.span();
            let what = match &entry.body {
                EntryBody::Layer(l) => l.kind().to_string(),
                EntryBody::Block { block, .. } => format!("block {block:?}"),
            };
            let fail = |message: String, fix: &str| GraphProblem {
                span: span.clone(),
                message: format!("layer {} ({what}): {message}", i + 1),
                fix: fix.to_string(),
            };
            if let Some(name) = &entry.name {
                if !valid_name(name) {
                    return Err(fail(
                        format!("name {name:?} is not a valid layer name"),
                        "use letters, digits and '_', starting with a letter, e.g. name = \"attn\"",
                    ));
                }
                if name == INPUT {
                    return Err(fail(
                        "the name \"input\" is reserved for the graph's input".into(),
                        "give the layer another name",
                    ));
                }
                if names.contains_key(name) {
                    return Err(fail(
                        format!("the name {name:?} is used twice"),
                        "give every layer of one list its own name",
                    ));
                }
            }
            let inputs: Vec<Value> = match &entry.inputs {
                None => vec![last.clone()],
                Some(list) if list.is_empty() => {
                    return Err(fail(
                        "`inputs` is empty".into(),
                        "list the layers it takes, or leave `inputs` out to take the layer before",
                    ));
                }
                Some(list) => list
                    .iter()
                    .map(|n| {
                        if n == INPUT {
                            return Ok(input.clone());
                        }
                        if let Some(v) = names.get(n) {
                            return Ok(v.clone());
                        }
                        Err(match later.get(n.as_str()) {
                            Some(&j) if j >= i => fail(
                                format!(
                                    "input {n:?} is layer {}, which comes at or after this one",
                                    j + 1
                                ),
                                "a layer takes only earlier layers (a graph has no cycles): move it after its inputs",
                            ),
                            _ => {
                                let mut known: Vec<&str> =
                                    names.keys().map(String::as_str).collect();
                                known.sort();
                                known.insert(0, INPUT);
                                fail(
                                    format!("input {n:?} names no earlier layer"),
                                    &format!(
                                        "use one of {} (give a layer a `name` to refer to it)",
                                        known.join(", ")
                                    ),
                                )
                            }
                        })
                    })
                    .collect::<Result<_, _>>()?,
            };
            let node_name = match &entry.name {
                Some(n) if top => n.clone(),
                Some(n) => format!("{prefix}.{n}"),
                None => format!("{prefix}.{i}"),
            };
            let value = match &entry.body {
                EntryBody::Layer(layer) => {
                    let shares = match layer {
                        LayerSpec::TiedHead { embedding } => Some(
                            self.embedding(names.get(embedding), embedding)
                                .map_err(|p| fail(p.0, &p.1))?,
                        ),
                        _ => None,
                    };
                    self.layer(layer, node_name, inputs, shares)
                        .map_err(|p| fail(p.0, &p.1))?
                }
                EntryBody::Block { block, repeat } => {
                    if !top {
                        return Err(fail(
                            "a block cannot place another block".into(),
                            "list the inner block's layers in this block, or place both blocks in [model] layers",
                        ));
                    }
                    let Some(def) = self.blocks.get(block) else {
                        let known: Vec<&str> = self.blocks.keys().map(String::as_str).collect();
                        return Err(fail(
                            format!("no block named {block:?} in [model.blocks]"),
                            &if known.is_empty() {
                                format!("define it as [model.blocks.{block}] with layers = [...]")
                            } else {
                                format!("use one of {}", known.join(", "))
                            },
                        ));
                    };
                    if def.get_ref().layers.is_empty() {
                        return Err(GraphProblem {
                            span: def.span(),
                            message: format!("block {block:?} has no layers"),
                            fix: "give it at least one layer".into(),
                        });
                    }
                    if *repeat == 0 {
                        return Err(fail(
                            "`repeat` is 0".into(),
                            "repeat a block 1 or more times",
                        ));
                    }
                    let [one] = inputs.as_slice() else {
                        return Err(fail(
                            format!("a block takes one input, {} are listed", inputs.len()),
                            "list one layer in `inputs`, or join them first with add or concat",
                        ));
                    };
                    let mut value = one.clone();
                    for copy in 0..*repeat {
                        let inner = format!("{node_name}.{copy}");
                        value = self.scope(&def.get_ref().layers, &inner, value, false)?;
                    }
                    value
                }
            };
            if let Some(name) = &entry.name {
                names.insert(name.clone(), value.clone());
            }
            last = value;
        }
        Ok(last)
    }

    /// The node of the embedding layer a tied head names.
    fn embedding(&self, value: Option<&Value>, name: &str) -> Result<usize, (String, String)> {
        match value.map(|v| v.source) {
            Some(Source::Node(j)) if matches!(self.nodes[j].layer, LayerSpec::Embedding { .. }) => {
                Ok(j)
            }
            Some(_) => Err((
                format!("{name:?} is not an embedding layer"),
                "name the embedding layer whose table the head shares".into(),
            )),
            None => Err((
                format!("no earlier layer is named {name:?}"),
                "give the token embedding a name, e.g. { embedding = { vocab = 65, dim = 128 }, name = \"tok\" }, and use it here".into(),
            )),
        }
    }

    /// Checks one layer against its inputs and appends it as a node.
    fn layer(
        &mut self,
        layer: &LayerSpec,
        name: String,
        inputs: Vec<Value>,
        shares: Option<usize>,
    ) -> Result<Value, (String, String)> {
        layer.check_options().map_err(|p| (p.message, p.fix))?;
        let flow = layer.input_flow();
        if let Some(wrong) = inputs.iter().find(|v| v.flow != flow) {
            let (message, fix) = match wrong.flow {
                Flow::Ids => (
                    "its input holds integer ids but this layer needs floats",
                    "make the first layer `{ embedding = { vocab = N, dim = D } }`, or set dtype = \"f32\"",
                ),
                Flow::Float => (
                    "embedding needs integer ids but its input is floats",
                    "make embedding the first layer and set the input dtype = \"i64\"",
                ),
            };
            return Err((message.into(), fix.into()));
        }
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|v| v.shape.clone()).collect();
        let output = if let Some(j) = shares {
            let LayerSpec::Embedding { vocab, dim } = self.nodes[j].layer else {
                unreachable!("shares names an embedding")
            };
            match shapes.as_slice() {
                [one] if one.last() == Some(&dim) => {
                    let mut out = one.clone();
                    *out.last_mut().expect("rank ≥ 1") = vocab;
                    Ok(out)
                }
                _ => Err(crate::layer::ShapeProblem {
                    message: format!(
                        "its input is {} but the tied embedding's vectors have {dim} values",
                        shapes
                            .iter()
                            .map(|s| show_shape(s))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    fix: format!("give it one input whose last axis is {dim}"),
                }),
            }
        } else if layer.merges() {
            layer.merged_shape(&shapes)
        } else if let [one] = shapes.as_slice() {
            layer.output_shape(one)
        } else {
            return Err((
                format!(
                    "{} takes one input, {} are listed",
                    layer.kind(),
                    shapes.len()
                ),
                "list one layer in `inputs`, or join them first with add or concat".into(),
            ));
        }
        .map_err(|p| (p.message, p.fix))?;
        if output.len() > 3 {
            return Err((
                format!(
                    "its output {} has rank {} per sample",
                    show_shape(&output),
                    output.len()
                ),
                "keep per-sample shapes at rank 3 or less (e.g. [channels, height, width])".into(),
            ));
        }
        let parameters = layer.parameters(&shapes[0]);
        self.nodes.push(Node {
            name,
            layer: layer.clone(),
            inputs: inputs.iter().map(|v| v.source).collect(),
            input_shapes: shapes,
            output_shape: output.clone(),
            parameters,
            shares,
        });
        Ok(Value {
            source: Source::Node(self.nodes.len() - 1),
            shape: output,
            flow: Flow::Float,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{Spec, SpecError};
    use std::path::Path;

    /// A sequence classifier: token and position embeddings, a repeated pre-norm block with
    /// two residual joins, then a dense head over the flattened sequence.
    fn spec(model: &str) -> Result<Spec, SpecError> {
        let text = format!(
            "[model]\nname = \"t\"\ninput = {{ shape = [8], dtype = \"i64\" }}\n\
             output = {{ task = \"classification\", classes = 2 }}\n{model}\n\
             [data]\nformat = \"csv\"\ntrain = {{ path = \"Cargo.toml\" }}\n\
             [train]\nepochs = 1\nbatch_size = 2\noptimizer = {{ kind = \"adam\", lr = 0.01 }}\n"
        );
        Spec::parse(
            &text,
            Path::new("t.toml"),
            Path::new(env!("CARGO_MANIFEST_DIR")),
        )
    }

    const BLOCK: &str = r#"
[model.blocks.decoder]
layers = [
  { layer_norm = {} },
  { self_attention = { heads = 4 }, name = "attn" },
  { add = {}, inputs = ["input", "attn"], name = "mid" },
  { layer_norm = {} },
  { dense = { units = 64 } },
  { gelu = {} },
  { dense = { units = 16 }, name = "ff" },
  { add = {}, inputs = ["mid", "ff"] },
]
"#;

    fn model(layers: &str) -> String {
        format!("layers = [\n{layers}\n]\n{BLOCK}")
    }

    const GOOD: &str = r#"
  { embedding = { vocab = 50, dim = 16 }, name = "tok" },
  { positional_embedding = { context = 8 } },
  { block = "decoder", repeat = 3, name = "h" },
  { layer_norm = {} },
  { flatten = {} },
  { dense = { units = 2 } },
"#;

    fn message(e: SpecError) -> String {
        e.to_string()
    }

    #[test]
    fn repeated_blocks_expand_with_their_own_weights() {
        let s = spec(&model(GOOD)).unwrap();
        let g = s.graph();
        let d = 16;
        let block = 2 * 2 * d + (4 * d * d + 4 * d) + (d * 64 + 64) + (64 * d + d);
        let want = 50 * d + 8 * d + 3 * block + 2 * d + (8 * d * 2 + 2);
        assert_eq!(g.parameters(), want);
        assert_eq!(g.nodes.len(), 2 + 3 * 8 + 3);
        assert!(!g.is_chain());
        let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
        assert!(names.contains(&"h.2.attn"), "{names:?}");
        assert!(names.contains(&"h.0.4"), "{names:?}");
        assert!(names.contains(&"layers.5"), "{names:?}");
        // The second copy's first join takes the first copy's output and its own attention.
        let join = g.nodes.iter().position(|n| n.name == "h.1.mid").unwrap();
        let first_out = g.nodes.iter().position(|n| n.name == "h.0.7").unwrap();
        assert_eq!(g.nodes[join].inputs[0], super::Source::Node(first_out));
        let summary = s.summary();
        assert!(
            summary.contains("h.1.mid (add) ← h.0.7, h.1.attn"),
            "{summary}"
        );
    }

    #[test]
    fn a_graph_survives_the_stored_spec() {
        let s = spec(&model(GOOD)).unwrap();
        let stored = Spec::parse_stored(&s.to_toml(), Path::new("stored.toml")).unwrap();
        assert_eq!(stored.graph(), s.graph());
        assert_eq!(stored.result_hash(), s.result_hash());
    }

    #[test]
    fn names_that_do_not_resolve_say_which_exist() {
        let bad = GOOD.replace(
            "{ layer_norm = {} },\n  { flatten",
            "{ layer_norm = {}, inputs = [\"tokens\"] },\n  { flatten",
        );
        let e = message(spec(&model(&bad)).unwrap_err());
        assert!(e.contains("t.toml:10:3: layer 4 (layer_norm)"), "{e}");
        assert!(e.contains("input \"tokens\" names no earlier layer"), "{e}");
        assert!(e.contains("use one of input, h, tok"), "{e}");
    }

    #[test]
    fn a_forward_reference_is_a_cycle() {
        let bad = GOOD.replace(
            "{ positional_embedding = { context = 8 } },",
            "{ positional_embedding = { context = 8 }, inputs = [\"h\"] },",
        );
        let e = message(spec(&model(&bad)).unwrap_err());
        assert!(e.contains("comes at or after this one"), "{e}");
        assert!(e.contains("no cycles"), "{e}");
    }

    #[test]
    fn joins_of_other_shapes_are_refused() {
        let bad = BLOCK.replace(
            "{ dense = { units = 16 }, name = \"ff\" }",
            "{ dense = { units = 12 }, name = \"ff\" }",
        );
        let e = message(spec(&format!("layers = [{GOOD}]\n{bad}")).unwrap_err());
        assert!(
            e.contains("shapes [8, 16] and [8, 12] do not meet at add"),
            "{e}"
        );
    }

    #[test]
    fn heads_must_divide_the_width() {
        let bad = BLOCK.replace("heads = 4", "heads = 5");
        let e = message(spec(&format!("layers = [{GOOD}]\n{bad}")).unwrap_err());
        assert!(e.contains("width 16 does not split into 5 heads"), "{e}");
        let bad = BLOCK.replace("heads = 4", "heads = 4, kv_heads = 3");
        let e = message(spec(&format!("layers = [{GOOD}]\n{bad}")).unwrap_err());
        assert!(e.contains("4 heads do not split into groups of 3"), "{e}");
    }

    #[test]
    fn a_context_longer_than_the_position_table_is_refused() {
        let bad = GOOD.replace("context = 8", "context = 4");
        let e = message(spec(&model(&bad)).unwrap_err());
        assert!(
            e.contains("the sequence has 8 positions but the table holds 4"),
            "{e}"
        );
        assert!(e.contains("set context = 8 or more"), "{e}");
    }

    #[test]
    fn unknown_blocks_and_tied_heads_say_what_exists() {
        let bad = GOOD.replace("block = \"decoder\"", "block = \"encoder\"");
        let e = message(spec(&model(&bad)).unwrap_err());
        assert!(
            e.contains("no block named \"encoder\"") && e.contains("use one of decoder"),
            "{e}"
        );
        let bad = GOOD.replace(
            "{ flatten = {} },\n  { dense = { units = 2 } },",
            "{ tied_head = { embedding = \"emb\" } },",
        );
        let e = message(spec(&model(&bad)).unwrap_err());
        assert!(e.contains("no earlier layer is named \"emb\""), "{e}");
    }

    #[test]
    fn a_layer_entry_holds_one_kind() {
        let bad = GOOD.replace("{ flatten = {} },", "{ flatten = {}, relu = {} },");
        let e = message(spec(&model(&bad)).unwrap_err());
        assert!(e.contains("holds one layer kind"), "{e}");
    }
}
