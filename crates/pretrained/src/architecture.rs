//! The two decoder-only families that pretrained checkpoints come in — LLaMA (with its
//! Mistral, Qwen2 and SmolLM variants) and GPT-2 — as one set of hyperparameters, the spec
//! graph they stand for, and the recognition of that graph in any spec.

use modelforge_spec::{GeluForm, Graph, LayerSpec, RopeLayout};

use crate::PretrainedError;

/// Which family a model belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// RMSNorm, rotary positions, grouped-query attention, SwiGLU.
    Llama,
    /// LayerNorm, learned positions, biased attention, a GELU MLP.
    Gpt2,
}

impl Family {
    /// The family's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "LLaMA",
            Family::Gpt2 => "GPT-2",
        }
    }
}

/// The hyperparameters of a decoder-only transformer of a known family.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    /// The family.
    pub family: Family,
    /// Token ids.
    pub vocab: usize,
    /// Width of the residual stream.
    pub dim: usize,
    /// Decoder blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (LLaMA's grouped-query attention; GPT-2: `heads`).
    pub kv_heads: usize,
    /// Width inside the feed-forward layer.
    pub hidden: usize,
    /// Longest sequence: learned positions (GPT-2) or the trained context (LLaMA).
    pub context: usize,
    /// The norms' epsilon.
    pub epsilon: f64,
    /// Rotary base (LLaMA).
    pub rope_base: f64,
    /// Which query and key features rotate together (LLaMA).
    pub rope_layout: RopeLayout,
    /// Whether the attention projections have biases.
    pub attention_bias: bool,
    /// Whether the feed-forward projections have biases.
    pub mlp_bias: bool,
    /// Whether the head is the token embedding's table.
    pub tied: bool,
    /// GPT-2's activation.
    pub gelu: GeluForm,
}

/// The graph of a `[model]` section's text, or why there is none.
fn graph_of(text: &str) -> Result<Graph, String> {
    #[derive(serde::Deserialize)]
    struct Model {
        model: modelforge_spec::ModelSpec,
    }
    let model: Model = toml::from_str(text).map_err(|e| e.message().to_string())?;
    modelforge_spec::graph::build(&model.model).map_err(|p| p.message)
}

/// The names the graph gives the family's nodes, which are also its tensors' prefixes.
struct Names {
    embedding: &'static str,
    blocks: &'static str,
    norm: &'static str,
}

impl Architecture {
    fn names(&self) -> Names {
        match self.family {
            Family::Llama => Names {
                embedding: "embed_tokens",
                blocks: "layers",
                norm: "norm",
            },
            Family::Gpt2 => Names {
                embedding: "wte",
                blocks: "h",
                norm: "ln_f",
            },
        }
    }

    /// The `[model]` section (with its block) of a model of this shape named `name`.
    pub fn model_toml(&self, name: &str) -> String {
        let n = self.names();
        let a = self;
        let head = match a.tied {
            true => format!("{{ tied_head = {{ embedding = \"{}\" }} }}", n.embedding),
            false => format!(
                "{{ dense = {{ units = {}, bias = false }}, name = \"lm_head\" }}",
                a.vocab
            ),
        };
        let (positions, block) = match a.family {
            Family::Llama => (
                String::new(),
                format!(
                    "  {{ rms_norm = {{ epsilon = {eps:e} }}, name = \"input_layernorm\" }},\n  \
                     {{ self_attention = {{ heads = {h}, kv_heads = {kv}, bias = {ab}, rope = {{ base = {base:?}, layout = \"{layout}\" }} }}, name = \"self_attn\" }},\n  \
                     {{ add = {{}}, inputs = [\"input\", \"self_attn\"], name = \"mid\" }},\n  \
                     {{ rms_norm = {{ epsilon = {eps:e} }}, name = \"post_attention_layernorm\" }},\n  \
                     {{ swiglu = {{ hidden = {hidden}, bias = {mb} }}, name = \"mlp\" }},\n  \
                     {{ add = {{}}, inputs = [\"mid\", \"mlp\"] }},\n",
                    eps = a.epsilon,
                    h = a.heads,
                    kv = a.kv_heads,
                    ab = a.attention_bias,
                    base = a.rope_base,
                    layout = match a.rope_layout {
                        RopeLayout::Halves => "halves",
                        RopeLayout::AdjacentPairs => "adjacent_pairs",
                    },
                    hidden = a.hidden,
                    mb = a.mlp_bias,
                ),
            ),
            Family::Gpt2 => (
                format!(
                    "  {{ positional_embedding = {{ context = {} }}, name = \"wpe\" }},\n",
                    a.context
                ),
                format!(
                    "  {{ layer_norm = {{ epsilon = {eps:e} }}, name = \"ln_1\" }},\n  \
                     {{ self_attention = {{ heads = {h}, bias = {ab} }}, name = \"attn\" }},\n  \
                     {{ add = {{}}, inputs = [\"input\", \"attn\"], name = \"mid\" }},\n  \
                     {{ layer_norm = {{ epsilon = {eps:e} }}, name = \"ln_2\" }},\n  \
                     {{ dense = {{ units = {hidden}, bias = {mb} }}, name = \"fc\" }},\n  \
                     {{ gelu = {{ approximate = \"{gelu}\" }} }},\n  \
                     {{ dense = {{ units = {dim}, bias = {mb} }}, name = \"proj\" }},\n  \
                     {{ add = {{}}, inputs = [\"mid\", \"proj\"] }},\n",
                    eps = a.epsilon,
                    h = a.heads,
                    ab = a.attention_bias,
                    hidden = a.hidden,
                    mb = a.mlp_bias,
                    dim = a.dim,
                    gelu = match a.gelu {
                        GeluForm::None => "none",
                        GeluForm::Tanh => "tanh",
                    },
                ),
            ),
        };
        let norm = match a.family {
            Family::Llama => "rms_norm",
            Family::Gpt2 => "layer_norm",
        };
        format!(
            "[model]\n\
             name = \"{name}\"\n\
             input = {{ name = \"tokens\", shape = [{context}], dtype = \"i64\" }}\n\
             output = {{ name = \"logits\", task = \"language_model\" }}\n\
             layers = [\n  \
             {{ embedding = {{ vocab = {vocab}, dim = {dim} }}, name = \"{emb}\" }},\n\
             {positions}  \
             {{ block = \"decoder\", repeat = {layers}, name = \"{blocks}\" }},\n  \
             {{ {norm} = {{ epsilon = {eps:e} }}, name = \"{final_norm}\" }},\n  \
             {head},\n\
             ]\n\n\
             [model.blocks.decoder]\n\
             layers = [\n{block}]\n",
            context = a.context,
            vocab = a.vocab,
            dim = a.dim,
            emb = n.embedding,
            layers = a.layers,
            blocks = n.blocks,
            eps = a.epsilon,
            final_norm = n.norm,
        )
    }

    /// The graph of a model of this shape.
    pub fn graph(&self) -> Result<Graph, PretrainedError> {
        graph_of(&self.model_toml("m")).map_err(|reason| PretrainedError::Unsupported {
            what: "the model".into(),
            reason: format!("its hyperparameters make no valid graph: {reason}"),
        })
    }

    /// The architecture of a graph that has exactly the layers, options and wiring of one
    /// of the families (node names aside), with the renaming of its nodes to the family's
    /// names; otherwise why not, naming the first node that differs.
    pub fn recognise(graph: &Graph) -> Result<(Architecture, Vec<(String, String)>), String> {
        let candidate = Architecture::read(graph)?;
        let canonical = candidate.graph().map_err(|e| e.to_string())?;
        if canonical.input_shape != graph.input_shape {
            return Err(format!(
                "its input is {:?} where a {} model takes [{}] token ids",
                graph.input_shape,
                candidate.family.name(),
                candidate.context
            ));
        }
        if canonical.nodes.len() != graph.nodes.len() {
            return Err(format!(
                "it has {} nodes where a {} model of its size has {}",
                graph.nodes.len(),
                candidate.family.name(),
                canonical.nodes.len()
            ));
        }
        let mut renames = Vec::new();
        for (ours, theirs) in graph.nodes.iter().zip(&canonical.nodes) {
            if ours.layer != theirs.layer
                || ours.inputs != theirs.inputs
                || ours.output_shape != theirs.output_shape
            {
                return Err(format!(
                    "node {} ({}) is not what a {} model has there ({} {:?})",
                    ours.name,
                    ours.layer.kind(),
                    candidate.family.name(),
                    theirs.layer.kind(),
                    theirs.name
                ));
            }
            renames.push((ours.name.clone(), theirs.name.clone()));
        }
        Ok((candidate, renames))
    }

    /// The hyperparameters a graph would have if it were of a family: read from its first
    /// embedding, attention, norm and feed-forward nodes.
    fn read(graph: &Graph) -> Result<Architecture, String> {
        let find = |kind: &str| graph.nodes.iter().find(|n| n.layer.kind() == kind);
        let Some(embedding) = find("embedding") else {
            return Err("it has no token embedding".into());
        };
        let LayerSpec::Embedding { vocab, dim } = embedding.layer else {
            unreachable!("an embedding node holds an embedding layer")
        };
        let Some(attention) = find("self_attention") else {
            return Err("it has no self-attention".into());
        };
        let LayerSpec::SelfAttention {
            heads,
            kv_heads,
            rope,
            bias: attention_bias,
            ..
        } = &attention.layer
        else {
            unreachable!("an attention node holds an attention layer")
        };
        let layers = graph
            .nodes
            .iter()
            .filter(|n| n.layer.kind() == "self_attention")
            .count();
        let tied = graph.nodes.last().map(|n| n.layer.kind()) == Some("tied_head");
        let context = *graph.input_shape.first().unwrap_or(&0);
        let family = match rope {
            Some(_) => Family::Llama,
            None => Family::Gpt2,
        };
        let (epsilon, hidden, mlp_bias, gelu) = match family {
            Family::Llama => {
                let Some(LayerSpec::RmsNorm { epsilon }) = find("rms_norm").map(|n| &n.layer)
                else {
                    return Err("it has rotary positions but no RMS norm".into());
                };
                let Some(LayerSpec::Swiglu { hidden, bias }) = find("swiglu").map(|n| &n.layer)
                else {
                    return Err("it has rotary positions but no SwiGLU feed-forward".into());
                };
                (*epsilon, *hidden, *bias, GeluForm::None)
            }
            Family::Gpt2 => {
                let Some(LayerSpec::LayerNorm { epsilon }) = find("layer_norm").map(|n| &n.layer)
                else {
                    return Err("it has no layer norm".into());
                };
                let Some(LayerSpec::Dense { units, bias }) = find("dense").map(|n| &n.layer) else {
                    return Err("it has no dense feed-forward".into());
                };
                let Some(LayerSpec::Gelu { approximate }) = find("gelu").map(|n| &n.layer) else {
                    return Err("its feed-forward has no GELU".into());
                };
                (*epsilon, *units, *bias, *approximate)
            }
        };
        Ok(Architecture {
            family,
            vocab,
            dim,
            layers,
            heads: *heads,
            kv_heads: kv_heads.unwrap_or(*heads),
            hidden,
            context,
            epsilon,
            rope_base: rope.as_ref().map_or(10000.0, |r| r.base),
            rope_layout: rope.as_ref().map_or(RopeLayout::Halves, |r| r.layout),
            attention_bias: *attention_bias,
            mlp_bias,
            tied,
            gelu,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama() -> Architecture {
        Architecture {
            family: Family::Llama,
            vocab: 96,
            dim: 32,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            hidden: 48,
            context: 64,
            epsilon: 1e-5,
            rope_base: 10000.0,
            rope_layout: RopeLayout::Halves,
            attention_bias: false,
            mlp_bias: false,
            tied: false,
            gelu: GeluForm::None,
        }
    }

    /// Each family's graph is recognised as itself, with its own names.
    #[test]
    fn a_familys_graph_is_recognised_as_itself() {
        let gpt2 = Architecture {
            family: Family::Gpt2,
            kv_heads: 4,
            attention_bias: true,
            mlp_bias: true,
            tied: true,
            gelu: GeluForm::Tanh,
            ..llama()
        };
        for a in [llama(), gpt2] {
            let graph = a.graph().unwrap();
            let (back, renames) = Architecture::recognise(&graph).unwrap();
            assert_eq!(back, a);
            assert!(renames.iter().all(|(ours, theirs)| ours == theirs));
        }
    }

    /// A graph with one more layer in its block is not a LLaMA model, and the message
    /// says where it differs.
    #[test]
    fn a_different_graph_is_refused_with_the_node() {
        let text = llama().model_toml("m").replace(
            "  { add = {}, inputs = [\"mid\", \"mlp\"] },\n",
            "  { add = {}, inputs = [\"mid\", \"mlp\"] },\n  { relu = {} },\n",
        );
        let graph = graph_of(&text).unwrap();
        let e = Architecture::recognise(&graph).unwrap_err();
        assert!(e.contains("nodes where a LLaMA model"), "{e}");
    }
}
