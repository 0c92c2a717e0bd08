//! The `[model]` section: input, output and layers.

use std::collections::BTreeMap;

use serde::de::value::StrDeserializer;
use serde::de::{DeserializeSeed, EnumAccess, Error as _, MapAccess, VariantAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::Spanned;

use crate::layer::LayerSpec;

/// The `[model]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Registry name of the model (letters, digits, `-`, `_`, `.`).
    pub name: Spanned<String>,
    /// The input tensor.
    pub input: Spanned<InputSpec>,
    /// The output tensor and task.
    pub output: Spanned<OutputSpec>,
    /// The layers; each takes the one before it unless its `inputs` say otherwise.
    pub layers: Vec<Spanned<LayerEntry>>,
    /// Reusable blocks of layers, by name, placed with `{ block = "NAME", repeat = N }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub blocks: BTreeMap<String, Spanned<BlockSpec>>,
}

/// A block: layers defined once and placed, possibly repeated, in `layers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockSpec {
    /// The block's layers; `"input"` in their `inputs` is the block's input.
    pub layers: Vec<Spanned<LayerEntry>>,
}

/// One entry of a `layers` list: a layer or a placed block, with an optional name and inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerEntry {
    /// The name other layers' `inputs` refer to (and the prefix of its weights).
    pub name: Option<String>,
    /// Names of earlier layers (or `"input"`) it takes; by default the layer before it.
    pub inputs: Option<Vec<String>>,
    /// What the entry is.
    pub body: EntryBody,
}

/// What a `layers` entry holds.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryBody {
    /// One layer, written `{ kind = { options } }`.
    Layer(LayerSpec),
    /// A block from `[model.blocks]`, repeated in sequence.
    Block {
        /// The block's name.
        block: String,
        /// How many copies follow one another (each with its own weights).
        repeat: usize,
    },
}

impl LayerEntry {
    /// An unnamed layer that takes the one before it.
    pub fn layer(layer: LayerSpec) -> LayerEntry {
        LayerEntry {
            name: None,
            inputs: None,
            body: EntryBody::Layer(layer),
        }
    }
}

impl Serialize for LayerEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde_json::Value;
        /// Options left unset serialise as nulls, which TOML cannot hold: leave them out.
        fn without_nulls(v: Value) -> Value {
            match v {
                Value::Object(map) => Value::Object(
                    map.into_iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| (k, without_nulls(v)))
                        .collect(),
                ),
                other => other,
            }
        }
        let mut map = match &self.body {
            EntryBody::Layer(layer) => match serde_json::to_value(layer).map(without_nulls) {
                Ok(Value::Object(map)) => map,
                Ok(_) => serde_json::Map::new(),
                Err(e) => return Err(serde::ser::Error::custom(e)),
            },
            EntryBody::Block { block, repeat } => {
                let mut map = serde_json::Map::new();
                map.insert("block".into(), Value::from(block.clone()));
                map.insert("repeat".into(), Value::from(*repeat));
                map
            }
        };
        if let Some(name) = &self.name {
            map.insert("name".into(), Value::from(name.clone()));
        }
        if let Some(inputs) = &self.inputs {
            map.insert("inputs".into(), Value::from(inputs.clone()));
        }
        Value::Object(map).serialize(s)
    }
}

impl<'de> Deserialize<'de> for LayerEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EntryVisitor)
    }
}

/// Reads an entry key by key, so that an error inside a layer's options keeps the file
/// position of the value it is about.
struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = LayerEntry;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a layer such as { dense = { units = 10 }, name = \"fc\" } or a block { block = \"NAME\", repeat = N }")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LayerEntry, A::Error> {
        let (mut name, mut inputs, mut block, mut repeat) = (None, None, None, None);
        let mut layers: Vec<(String, LayerSpec)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "name" => name = Some(map.next_value::<String>()?),
                "inputs" => inputs = Some(map.next_value::<Vec<String>>()?),
                "block" => block = Some(map.next_value::<String>()?),
                "repeat" => repeat = Some(map.next_value::<usize>()?),
                _ => {
                    let layer = map.next_value_seed(KindSeed(&key))?;
                    layers.push((key, layer));
                }
            }
        }
        let body = match (block, layers.len()) {
            (Some(block), 0) => EntryBody::Block {
                block,
                repeat: repeat.unwrap_or(1),
            },
            (Some(_), _) => {
                return Err(A::Error::custom(format!(
                    "an entry is a layer or a block, and this one holds both block and {}",
                    layers[0].0
                )));
            }
            (None, 1) if repeat.is_none() => EntryBody::Layer(layers.remove(0).1),
            (None, 1) => {
                return Err(A::Error::custom(
                    "`repeat` goes with `block`: repeat a block from [model.blocks], or list the layer again",
                ));
            }
            (None, n) => {
                let kinds: Vec<&str> = layers.iter().map(|(k, _)| k.as_str()).collect();
                return Err(A::Error::custom(format!(
                    "a layer entry holds one layer kind besides `name` and `inputs`, found {n}{} — write e.g. {{ dense = {{ units = 10 }}, name = \"fc\" }}",
                    if n == 0 {
                        String::new()
                    } else {
                        format!(" ({})", kinds.join(", "))
                    }
                )));
            }
        };
        Ok(LayerEntry { name, inputs, body })
    }
}

/// The options of layer kind `.0`, read straight from the file's value.
struct KindSeed<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KindSeed<'_> {
    type Value = LayerSpec;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<LayerSpec, D::Error> {
        LayerSpec::deserialize(OneVariant {
            kind: self.0,
            value: d,
        })
    }
}

/// Presents `kind = value` to the layer enum as its externally tagged form.
struct OneVariant<'k, D> {
    kind: &'k str,
    value: D,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for OneVariant<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, D::Error> {
        Err(D::Error::custom(
            "a layer is written { kind = { options } }",
        ))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

impl<'de, D: Deserializer<'de>> EnumAccess<'de> for OneVariant<'_, D> {
    type Error = D::Error;
    type Variant = KindOptions<D>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, KindOptions<D>), D::Error> {
        let kind = seed.deserialize(StrDeserializer::<D::Error>::new(self.kind))?;
        Ok((kind, KindOptions(self.value)))
    }
}

/// The options table of one layer kind.
struct KindOptions<D>(D);

impl<'de, D: Deserializer<'de>> VariantAccess<'de> for KindOptions<D> {
    type Error = D::Error;

    fn unit_variant(self) -> Result<(), D::Error> {
        serde::de::IgnoredAny::deserialize(self.0).map(|_| ())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, D::Error> {
        seed.deserialize(self.0)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct("", fields, visitor)
    }
}

/// The model's input tensor (per sample, without the batch axis).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Tensor name in the serving protocols.
    #[serde(default = "default_input_name")]
    pub name: String,
    /// Element type.
    #[serde(default)]
    pub dtype: Dtype,
    /// Per-sample shape.
    pub shape: Vec<usize>,
}

fn default_input_name() -> String {
    "input".into()
}

/// Element type of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit float.
    #[default]
    F32,
    /// 64-bit integer ids (for embedding inputs).
    I64,
}

impl Dtype {
    /// The Open Inference Protocol datatype name.
    pub fn protocol_name(self) -> &'static str {
        match self {
            Dtype::F32 => "FP32",
            Dtype::I64 => "INT64",
        }
    }
}

/// The model's output tensor and what it predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Tensor name in the serving protocols.
    #[serde(default = "default_output_name")]
    pub name: String,
    /// What the output means.
    pub task: Task,
    /// Number of classes (classification only).
    pub classes: Option<usize>,
    /// Class names, one per class (classification only).
    #[serde(default)]
    pub labels: Vec<String>,
}

fn default_output_name() -> String {
    "output".into()
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// One of N classes; the output is N logits.
    Classification,
    /// Real values; the output is one value per target.
    Regression,
    /// Yes/no; the output is one logit.
    Binary,
    /// The next token at every position; the output is `[context, vocab]` logits.
    #[serde(rename = "language_model")]
    LanguageModel,
}

impl Task {
    /// The name as written in the file.
    pub fn name(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Regression => "regression",
            Task::Binary => "binary",
            Task::LanguageModel => "language_model",
        }
    }
}
