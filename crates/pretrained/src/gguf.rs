//! GGUF v3 files, the format llama.cpp and Ollama read: the header, metadata and tensor
//! table parsed from a memory map with every count and length checked against the file
//! before anything is allocated; tensors in F32, F16, BF16, Q8_0, Q4_0 and Q4_1
//! dequantised one at a time; the `llama` and `gpt2` architectures to an [`Architecture`]
//! and back; the byte-level BPE tokenizer of `tokenizer.ggml.*` to `tokenizer.json` and
//! back. llama.cpp keeps LLaMA's query and key rows in the adjacent-pairs rotary layout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use modelforge_spec::{GeluForm, RopeLayout};
use serde_json::{Value, json};

use crate::architecture::{Architecture, Family};
use crate::mapping::{Place, Store};
use crate::{PretrainedError, Tensor, io};

/// The first four bytes of a GGUF file.
const MAGIC: &[u8; 4] = b"GGUF";
/// The version written and read.
const VERSION: u32 = 3;
/// Where tensor data is aligned unless `general.alignment` says otherwise.
const ALIGNMENT: usize = 32;

/// Whether a path is a GGUF file (by its first bytes).
pub fn is_file(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == MAGIC
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Meta {
    /// Any unsigned integer type.
    UInt(u64),
    /// Any signed integer type.
    Int(i64),
    /// FLOAT32 or FLOAT64.
    Float(f64),
    /// BOOL.
    Bool(bool),
    /// STRING.
    Str(String),
    /// ARRAY.
    Array(Vec<Meta>),
}

impl Meta {
    fn as_u64(&self) -> Option<u64> {
        match *self {
            Meta::UInt(v) => Some(v),
            Meta::Int(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match *self {
            Meta::Float(v) => Some(v),
            Meta::UInt(v) => Some(v as f64),
            Meta::Int(v) => Some(v as f64),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Meta::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// The tensor element types read here, by their ggml numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant {
    /// 0.
    F32,
    /// 1.
    F16,
    /// 2: blocks of 32, an f16 scale and 4-bit values offset by 8.
    Q4_0,
    /// 3: blocks of 32, an f16 scale and minimum and 4-bit values.
    Q4_1,
    /// 8: blocks of 32, an f16 scale and 8-bit values.
    Q8_0,
    /// 30.
    Bf16,
}

impl Quant {
    fn of(code: u32) -> Option<Quant> {
        Some(match code {
            0 => Quant::F32,
            1 => Quant::F16,
            2 => Quant::Q4_0,
            3 => Quant::Q4_1,
            8 => Quant::Q8_0,
            30 => Quant::Bf16,
            _ => return None,
        })
    }

    fn code(self) -> u32 {
        match self {
            Quant::F32 => 0,
            Quant::F16 => 1,
            Quant::Q4_0 => 2,
            Quant::Q4_1 => 3,
            Quant::Q8_0 => 8,
            Quant::Bf16 => 30,
        }
    }

    /// Values per block and bytes per block.
    fn block(self) -> (usize, usize) {
        match self {
            Quant::F32 => (1, 4),
            Quant::F16 | Quant::Bf16 => (1, 2),
            Quant::Q4_0 => (32, 18),
            Quant::Q4_1 => (32, 20),
            Quant::Q8_0 => (32, 34),
        }
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone)]
struct Entry {
    /// Our shape: ggml's dimensions reversed (`[out, in]` for a matrix).
    shape: Vec<usize>,
    /// Its ggml type code.
    code: u32,
    /// Byte range in the file.
    start: usize,
    end: usize,
}

/// A GGUF file, mapped, with its metadata and tensor table.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    /// Every metadata key and value.
    pub metadata: BTreeMap<String, Meta>,
    tensors: BTreeMap<String, Entry>,
}

/// Reads little-endian fields from the map, refusing to run past its end.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl Cursor<'_> {
    fn bad(&self, reason: String) -> PretrainedError {
        PretrainedError::Tensor {
            path: self.path.to_path_buf(),
            name: "(header)".into(),
            reason: format!(
                "{reason} at byte {} — the file is damaged or not GGUF v3",
                self.at
            ),
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], PretrainedError> {
        if self.bytes.len() - self.at < n {
            return Err(self.bad(format!("needs {n} more bytes than the file has")));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, PretrainedError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, PretrainedError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// A count of items each at least `min` bytes long: refused if the rest of the file
    /// cannot hold them, so an absurd count allocates nothing.
    fn count(&mut self, min: usize) -> Result<usize, PretrainedError> {
        let n = self.u64()?;
        let room = (self.bytes.len() - self.at) as u64;
        if n > room / min.max(1) as u64 {
            return Err(self.bad(format!("a count of {n} does not fit in the file")));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String, PretrainedError> {
        let len = self.count(1)?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.bad("a string is not UTF-8".into()))
    }

    fn value(&mut self, kind: u32, depth: usize) -> Result<Meta, PretrainedError> {
        Ok(match kind {
            0 => Meta::UInt(self.take(1)?[0] as u64),
            1 => Meta::Int(self.take(1)?[0] as i8 as i64),
            2 => Meta::UInt(u16::from_le_bytes(self.take(2)?.try_into().expect("2")) as u64),
            3 => Meta::Int(i16::from_le_bytes(self.take(2)?.try_into().expect("2")) as i64),
            4 => Meta::UInt(self.u32()? as u64),
            5 => Meta::Int(self.u32()? as i32 as i64),
            6 => Meta::Float(f32::from_bits(self.u32()?) as f64),
            7 => Meta::Bool(self.take(1)?[0] != 0),
            8 => Meta::Str(self.string()?),
            9 if depth == 0 => {
                let inner = self.u32()?;
                let n = self.count(1)?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(inner, depth + 1)?);
                }
                Meta::Array(items)
            }
            10 => Meta::UInt(self.u64()?),
            11 => Meta::Int(self.u64()? as i64),
            12 => Meta::Float(f64::from_bits(self.u64()?)),
            other => return Err(self.bad(format!("metadata type {other} is unknown"))),
        })
    }
}

impl GgufFile {
    /// Maps and parses a GGUF file; the tensor data is only checked to lie in the file.
    pub fn open(path: &Path) -> Result<GgufFile, PretrainedError> {
        let file = std::fs::File::open(path).map_err(io(path))?;
        // SAFETY: the map is read only; a file changed underneath gives wrong values, not
        // undefined behaviour in safe code reading a byte slice.
        let map = unsafe { Mmap::map(&file) }.map_err(io(path))?;
        let mut c = Cursor {
            bytes: &map,
            at: 0,
            path,
        };
        if c.take(4)? != MAGIC {
            return Err(c.bad("the file does not start with GGUF".into()));
        }
        let version = c.u32()?;
        if version != VERSION {
            return Err(c.bad(format!("version {version} is not 3")));
        }
        // A tensor entry and a metadata entry take at least 24 and 12 bytes.
        let tensor_count = c.count(24)?;
        let kv_count = c.count(12)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = c.string()?;
            let kind = c.u32()?;
            let value = c.value(kind, 0)?;
            metadata.insert(key, value);
        }
        let mut table = Vec::with_capacity(tensor_count);
        for _ in 0..tensor_count {
            let name = c.string()?;
            let dims = c.u32()? as usize;
            if dims == 0 || dims > 4 {
                return Err(c.bad(format!("tensor {name:?} has {dims} dimensions")));
            }
            let mut shape = Vec::with_capacity(dims);
            for _ in 0..dims {
                shape.push(c.u64()? as usize);
            }
            shape.reverse();
            let code = c.u32()?;
            let offset = c.u64()? as usize;
            table.push((name, shape, code, offset));
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(Meta::as_u64)
            .map_or(ALIGNMENT, |a| a as usize)
            .max(1);
        let data = c.at.div_ceil(alignment) * alignment;
        let mut tensors = BTreeMap::new();
        for (name, shape, code, offset) in table {
            let count = shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .ok_or_else(|| c.bad(format!("tensor {name:?} is absurdly large")))?;
            let bytes = match Quant::of(code) {
                Some(q) => {
                    let (per, size) = q.block();
                    if count % per != 0 {
                        return Err(c.bad(format!(
                            "tensor {name:?} has {count} values, not whole blocks of {per}"
                        )));
                    }
                    count / per * size
                }
                None => 0,
            };
            let start = data.checked_add(offset).filter(|s| *s <= map.len());
            let Some(start) = start.filter(|s| map.len() - s >= bytes) else {
                return Err(c.bad(format!("tensor {name:?} lies beyond the end of the file")));
            };
            tensors.insert(
                name,
                Entry {
                    shape,
                    code,
                    start,
                    end: start + bytes,
                },
            );
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            metadata,
            tensors,
        })
    }

    fn field(&self, key: &str) -> Option<&Meta> {
        self.metadata.get(key)
    }

    fn bad(&self, key: &str, reason: impl Into<String>) -> PretrainedError {
        PretrainedError::Config {
            path: self.path.clone(),
            field: key.into(),
            reason: reason.into(),
        }
    }

    fn count(&self, key: &str, default: Option<usize>) -> Result<usize, PretrainedError> {
        match self.field(key) {
            None => default.ok_or_else(|| self.bad(key, "is missing")),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Ok(n as usize),
                _ => Err(self.bad(key, format!("is {v:?}, not a positive whole number"))),
            },
        }
    }

    fn number(&self, key: &str, default: f64) -> Result<f64, PretrainedError> {
        match self.field(key) {
            None => Ok(default),
            Some(v) => match v.as_f64() {
                Some(x) if x > 0.0 && x.is_finite() => Ok(x),
                _ => Err(self.bad(key, format!("is {v:?}, not a positive number"))),
            },
        }
    }

    /// The tokens of `tokenizer.ggml.tokens`.
    fn tokens(&self) -> Result<Vec<&str>, PretrainedError> {
        let key = "tokenizer.ggml.tokens";
        match self.field(key) {
            Some(Meta::Array(items)) => items
                .iter()
                .map(|t| {
                    t.as_str()
                        .ok_or_else(|| self.bad(key, "holds a non-string"))
                })
                .collect(),
            _ => Err(self.bad(key, "is missing; the file carries no tokenizer")),
        }
    }

    /// The architecture the metadata describes, and whether the file stores queries and
    /// keys in llama.cpp's adjacent-pairs layout.
    pub fn architecture(&self) -> Result<Architecture, PretrainedError> {
        let arch = self
            .field("general.architecture")
            .and_then(Meta::as_str)
            .ok_or_else(|| self.bad("general.architecture", "is missing"))?;
        let family = match arch {
            "llama" => Family::Llama,
            "gpt2" => Family::Gpt2,
            other => {
                return Err(self.bad(
                    "general.architecture",
                    format!("is {other:?}; GGUF files of \"llama\" and \"gpt2\" import"),
                ));
            }
        };
        let k = |name: &str| format!("{arch}.{name}");
        let dim = self.count(&k("embedding_length"), None)?;
        let heads = self.count(&k("attention.head_count"), None)?;
        let kv_heads = self.count(&k("attention.head_count_kv"), Some(heads))?;
        if dim % heads != 0 || heads % kv_heads != 0 {
            return Err(self.bad(
                &k("attention.head_count_kv"),
                format!(
                    "{kv_heads} key/value heads and {heads} heads do not divide the width {dim}"
                ),
            ));
        }
        if family == Family::Llama
            && let Some(rot) = self
                .field(&k("rope.dimension_count"))
                .and_then(Meta::as_u64)
            && rot as usize != dim / heads
        {
            return Err(self.bad(
                &k("rope.dimension_count"),
                format!(
                    "is {rot}; rotating part of each head (not all {} features) does not import",
                    dim / heads
                ),
            ));
        }
        // The embedding's rows: a tokenizer may cover fewer ids than the model has.
        let tokens = self.tokens()?.len();
        let vocab = self
            .tensors
            .get("token_embd.weight")
            .and_then(|e| e.shape.first().copied())
            .unwrap_or(tokens);
        let tied = !self.tensors.contains_key("output.weight");
        Ok(Architecture {
            family,
            vocab,
            dim,
            layers: self.count(&k("block_count"), None)?,
            heads,
            kv_heads,
            hidden: self.count(&k("feed_forward_length"), None)?,
            context: self.count(&k("context_length"), None)?,
            epsilon: match family {
                Family::Llama => self.number(&k("attention.layer_norm_rms_epsilon"), 1e-5)?,
                Family::Gpt2 => self.number(&k("attention.layer_norm_epsilon"), 1e-5)?,
            },
            rope_base: self.number(&k("rope.freq_base"), 10000.0)?,
            rope_layout: RopeLayout::AdjacentPairs,
            attention_bias: match family {
                Family::Llama => self.tensors.contains_key("blk.0.attn_q.bias"),
                Family::Gpt2 => true,
            },
            mlp_bias: match family {
                Family::Llama => self.tensors.contains_key("blk.0.ffn_up.bias"),
                Family::Gpt2 => true,
            },
            tied,
            gelu: GeluForm::Tanh,
        })
    }

    /// The tokenizer of `tokenizer.ggml.*` as `tokenizer.json` text: a byte-level BPE with
    /// its merges, GPT-2's pre-tokenisation and the control tokens as special tokens.
    pub fn tokenizer_json(&self) -> Result<String, PretrainedError> {
        let model = self
            .field("tokenizer.ggml.model")
            .and_then(Meta::as_str)
            .unwrap_or("(missing)");
        if model != "gpt2" {
            return Err(self.bad(
                "tokenizer.ggml.model",
                format!(
                    "is {model:?}; byte-level BPE tokenizers (\"gpt2\") import, SentencePiece ones (\"llama\") do not yet"
                ),
            ));
        }
        let pre = self
            .field("tokenizer.ggml.pre")
            .and_then(Meta::as_str)
            .unwrap_or("default");
        if !matches!(pre, "default" | "gpt-2" | "gpt2" | "smollm") {
            return Err(self.bad(
                "tokenizer.ggml.pre",
                format!(
                    "is {pre:?}; tokenizers split GPT-2's way (\"default\", \"gpt-2\", \"smollm\") import, this pre-tokenizer does not yet"
                ),
            ));
        }
        let tokens = self.tokens()?;
        let types: Vec<i64> = match self.field("tokenizer.ggml.token_type") {
            Some(Meta::Array(items)) => items
                .iter()
                .map(|t| match t {
                    Meta::Int(v) => *v,
                    Meta::UInt(v) => *v as i64,
                    _ => 1,
                })
                .collect(),
            _ => vec![1; tokens.len()],
        };
        let merges: Vec<&str> = match self.field("tokenizer.ggml.merges") {
            Some(Meta::Array(items)) => items.iter().filter_map(Meta::as_str).collect(),
            _ => Vec::new(),
        };
        let spelling = byte_alphabet();
        let vocab: serde_json::Map<String, Value> = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| {
                let spelled = match t.chars().all(|c| spelling.contains(&c)) {
                    true => t.to_string(),
                    false => t.bytes().map(|b| spelling[b as usize]).collect(),
                };
                (spelled, json!(id))
            })
            .collect();
        let added: Vec<Value> = tokens
            .iter()
            .enumerate()
            .filter(|(id, _)| matches!(types.get(*id), Some(3 | 4)))
            .map(|(id, t)| {
                json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": types[id] == 3})
            })
            .collect();
        let tokenizer = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges},
        });
        Ok(serde_json::to_string_pretty(&tokenizer).expect("JSON serialises"))
    }

    /// The chat template and end ids of the metadata, as the files a version keeps.
    pub fn companions(&self) -> (Option<Value>, Value) {
        let id = |key: &str| self.field(key).and_then(Meta::as_u64);
        let tokens = self.tokens().unwrap_or_default();
        let name = |id: Option<u64>| id.and_then(|i| tokens.get(i as usize).copied());
        let config = self
            .field("tokenizer.chat_template")
            .and_then(Meta::as_str)
            .map(|template| {
                json!({
                    "chat_template": template,
                    "bos_token": name(id("tokenizer.ggml.bos_token_id")),
                    "eos_token": name(id("tokenizer.ggml.eos_token_id")),
                    "tokenizer_class": "PreTrainedTokenizerFast",
                })
            });
        let generation = crate::hf::Special {
            bos: id("tokenizer.ggml.bos_token_id").map(|i| i as u32),
            eos: id("tokenizer.ggml.eos_token_id")
                .map(|i| i as u32)
                .into_iter()
                .collect(),
        }
        .to_json();
        (config, generation)
    }
}

impl Store for GgufFile {
    fn origin(&self) -> &Path {
        &self.path
    }

    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, PretrainedError> {
        let Some(entry) = self.tensors.get(name) else {
            return Err(PretrainedError::MissingTensor {
                path: self.path.clone(),
                name: name.into(),
            });
        };
        let bad = |reason: String| PretrainedError::Tensor {
            path: self.path.clone(),
            name: name.into(),
            reason,
        };
        if entry.shape != shape {
            return Err(bad(format!(
                "has shape {:?} where the metadata makes it {shape:?}",
                entry.shape
            )));
        }
        let Some(quant) = Quant::of(entry.code) else {
            return Err(bad(format!(
                "has ggml type {}; tensors import from F32, F16, BF16, Q8_0, Q4_0 and Q4_1",
                entry.code
            )));
        };
        Ok(dequantize(quant, &self.map[entry.start..entry.end]))
    }
}

/// The values of a tensor's bytes.
fn dequantize(quant: Quant, bytes: &[u8]) -> Vec<f32> {
    let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    match quant {
        Quant::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Quant::F16 => bytes.chunks_exact(2).map(f16).collect(),
        Quant::Bf16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Quant::Q8_0 => bytes
            .chunks_exact(34)
            .flat_map(|b| {
                let d = f16(b);
                b[2..].iter().map(move |&q| q as i8 as f32 * d)
            })
            .collect(),
        Quant::Q4_0 | Quant::Q4_1 => {
            let size = quant.block().1;
            let mut out = Vec::with_capacity(bytes.len() / size * 32);
            for b in bytes.chunks_exact(size) {
                let d = f16(b);
                let (m, qs) = match quant {
                    Quant::Q4_1 => (f16(&b[2..]), &b[4..]),
                    _ => (-8.0 * d, &b[2..]),
                };
                out.extend(qs.iter().map(|&q| (q & 0x0f) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
            out
        }
    }
}

/// GPT-2's printable stand-ins for the 256 bytes (byte-level BPE spells tokens in them).
fn byte_alphabet() -> Vec<char> {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut next = 256;
    (0..256u32)
        .map(|b| match printable(b) {
            true => char::from_u32(b).expect("a byte is a char"),
            false => {
                let c = char::from_u32(next).expect("below 512");
                next += 1;
                c
            }
        })
        .collect()
}

/// Where our tensor `ours` (in the family's node names) is kept in a GGUF file.
pub fn place(family: Family, ours: &str) -> Option<Place> {
    if ours.starts_with("input_norm.") {
        return None;
    }
    let same = |n: String| Some(Place::Same(n));
    let (global, block) = match family {
        Family::Llama => (
            [
                ("embed_tokens", "token_embd"),
                ("norm", "output_norm"),
                ("lm_head", "output"),
            ],
            "layers.",
        ),
        Family::Gpt2 => (
            [
                ("wte", "token_embd"),
                ("wpe", "position_embd"),
                ("ln_f", "output_norm"),
            ],
            "h.",
        ),
    };
    let (node, tensor) = ours.rsplit_once('.')?;
    if let Some((_, theirs)) = global.iter().find(|(o, _)| *o == node) {
        return same(format!("{theirs}.{tensor}"));
    }
    if family == Family::Gpt2 && node == "lm_head" {
        return same(format!("output.{tensor}"));
    }
    let rest = node.strip_prefix(block)?;
    let (i, part) = rest.split_once('.')?;
    let name = |n: &str| format!("blk.{i}.{n}.{tensor}");
    let theirs = match (family, part) {
        (Family::Llama, "input_layernorm") => "attn_norm",
        (Family::Llama, "self_attn.q_proj") => "attn_q",
        (Family::Llama, "self_attn.k_proj") => "attn_k",
        (Family::Llama, "self_attn.v_proj") => "attn_v",
        (Family::Llama, "self_attn.o_proj") => "attn_output",
        (Family::Llama, "post_attention_layernorm") => "ffn_norm",
        (Family::Llama, "mlp.gate_proj") => "ffn_gate",
        (Family::Llama, "mlp.up_proj") => "ffn_up",
        (Family::Llama, "mlp.down_proj") => "ffn_down",
        (Family::Gpt2, "ln_1") => "attn_norm",
        (Family::Gpt2, "attn.o_proj") => "attn_output",
        (Family::Gpt2, "ln_2") => "ffn_norm",
        (Family::Gpt2, "fc") => "ffn_up",
        (Family::Gpt2, "proj") => "ffn_down",
        (Family::Gpt2, qkv) => {
            let part = match qkv {
                "attn.q_proj" => 0,
                "attn.k_proj" => 1,
                "attn.v_proj" => 2,
                _ => return None,
            };
            return Some(Place::Fused {
                name: name("attn_qkv"),
                part,
                transposed: false,
            });
        }
        _ => return None,
    };
    same(name(theirs))
}

/// Tensors a GGUF file may hold that are not weights (llama.cpp's precomputed rotary
/// frequencies).
pub fn is_buffer(name: &str) -> bool {
    name == "rope_freqs.weight"
}

/// How `export --format gguf` stores the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Every tensor F32.
    F32,
    /// Matrices F16, vectors (norms, biases) F32, as llama.cpp's converter writes them.
    F16,
}

/// Bytes of a GGUF metadata or tensor-table section.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend(v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend(v.to_le_bytes());
    }
    fn string(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend(s.as_bytes());
    }
    fn meta(&mut self, value: &Meta) {
        match value {
            Meta::UInt(v) => {
                self.u32(4);
                self.u32(*v as u32);
            }
            Meta::Int(v) => {
                self.u32(5);
                self.u32(*v as i32 as u32);
            }
            Meta::Float(v) => {
                self.u32(6);
                self.u32((*v as f32).to_bits());
            }
            Meta::Bool(b) => {
                self.u32(7);
                self.0.push(*b as u8);
            }
            Meta::Str(s) => {
                self.u32(8);
                self.string(s);
            }
            Meta::Array(items) => {
                self.u32(9);
                let kind = match items.first() {
                    Some(Meta::Int(_)) => 5,
                    _ => 8,
                };
                self.u32(kind);
                self.u64(items.len() as u64);
                for item in items {
                    match item {
                        Meta::Int(v) => self.u32(*v as i32 as u32),
                        Meta::Str(s) => self.string(s),
                        _ => unreachable!("arrays written here hold ints or strings"),
                    }
                }
            }
        }
    }
}

/// The `tokenizer.ggml.*` metadata of a `tokenizer.json`: a byte-level BPE's tokens and
/// merges, or a character vocabulary spelled in GPT-2's byte alphabet (one byte each).
fn tokenizer_metadata(
    tokenizer: &Value,
    path: &Path,
) -> Result<Vec<(String, Meta)>, PretrainedError> {
    let bad = |reason: String| PretrainedError::Tokenizer {
        path: path.to_path_buf(),
        reason,
    };
    let model = &tokenizer["model"];
    if model["type"] != "BPE" {
        return Err(bad(format!(
            "is a {} tokenizer; GGUF export writes byte-level BPE and character vocabularies",
            model["type"]
        )));
    }
    let byte_level = tokenizer["pre_tokenizer"]["type"] == "ByteLevel";
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("has no vocabulary".into()))?;
    let mut tokens: Vec<Option<String>> = Vec::new();
    let spelling = byte_alphabet();
    for (token, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad(format!("token {token:?} has no id")))? as usize;
        let spelled = match byte_level {
            true => token.clone(),
            false => {
                let bytes = token.as_bytes();
                if bytes.len() != 1 {
                    return Err(bad(format!(
                        "token {token:?} is not one byte; a character vocabulary exports to GGUF when every character is ASCII"
                    )));
                }
                spelling[bytes[0] as usize].to_string()
            }
        };
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
        }
        tokens[id] = Some(spelled);
    }
    let mut types = vec![1i64; tokens.len()];
    for added in tokenizer["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) {
            let id = id as usize;
            if tokens.len() <= id {
                tokens.resize(id + 1, None);
                types.resize(id + 1, 1);
            }
            tokens[id] = Some(content.to_string());
            types[id] = if added["special"] == true { 3 } else { 4 };
        }
    }
    let tokens: Vec<Meta> = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| Meta::Str(t.unwrap_or_else(|| format!("[PAD{id}]"))))
        .collect();
    let merges: Vec<Meta> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Value::String(s) => Some(s.clone()),
            Value::Array(pair) => Some(format!(
                "{} {}",
                pair.first()?.as_str()?,
                pair.get(1)?.as_str()?
            )),
            _ => None,
        })
        .map(Meta::Str)
        .collect();
    Ok(vec![
        ("tokenizer.ggml.model".into(), Meta::Str("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Meta::Str("default".into())),
        ("tokenizer.ggml.tokens".into(), Meta::Array(tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Meta::Array(types.into_iter().map(Meta::Int).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Meta::Array(merges)),
    ])
}

/// What a GGUF file is written from.
pub struct Export<'a> {
    /// The model's hyperparameters.
    pub architecture: &'a Architecture,
    /// Its tensors in the family's node names.
    pub tensors: &'a [Tensor],
    /// Its `tokenizer.json`.
    pub tokenizer: &'a Value,
    /// Where the tokenizer came from, for messages.
    pub tokenizer_path: &'a Path,
    /// The chat template, if any.
    pub chat_template: Option<String>,
    /// End and start ids.
    pub special: &'a crate::hf::Special,
    /// The model's name.
    pub name: &'a str,
    /// Tensor precision.
    pub precision: Precision,
}

/// The bytes of a GGUF v3 file of a model.
pub fn write(e: &Export) -> Result<Vec<u8>, PretrainedError> {
    let a = e.architecture;
    let arch = match a.family {
        Family::Llama => "llama",
        Family::Gpt2 => "gpt2",
    };
    if a.family == Family::Gpt2 && a.gelu != GeluForm::Tanh {
        return Err(PretrainedError::Unsupported {
            what: e.name.into(),
            reason: "llama.cpp's GPT-2 computes the tanh GELU; this model uses the exact one (export it with --format hf)".into(),
        });
    }
    let k = |name: &str| format!("{arch}.{name}");
    let mut meta: Vec<(String, Meta)> = vec![
        ("general.architecture".into(), Meta::Str(arch.into())),
        ("general.name".into(), Meta::Str(e.name.into())),
        (k("context_length"), Meta::UInt(a.context as u64)),
        (k("embedding_length"), Meta::UInt(a.dim as u64)),
        (k("block_count"), Meta::UInt(a.layers as u64)),
        (k("feed_forward_length"), Meta::UInt(a.hidden as u64)),
        (k("attention.head_count"), Meta::UInt(a.heads as u64)),
        (k("attention.head_count_kv"), Meta::UInt(a.kv_heads as u64)),
    ];
    match a.family {
        Family::Llama => meta.extend([
            (
                k("attention.layer_norm_rms_epsilon"),
                Meta::Float(a.epsilon),
            ),
            (k("rope.freq_base"), Meta::Float(a.rope_base)),
            (
                k("rope.dimension_count"),
                Meta::UInt((a.dim / a.heads) as u64),
            ),
        ]),
        Family::Gpt2 => meta.push((k("attention.layer_norm_epsilon"), Meta::Float(a.epsilon))),
    }
    meta.extend(tokenizer_metadata(e.tokenizer, e.tokenizer_path)?);
    if let Some(bos) = e.special.bos {
        meta.push(("tokenizer.ggml.bos_token_id".into(), Meta::UInt(bos as u64)));
    }
    if let Some(eos) = e.special.eos.first() {
        meta.push((
            "tokenizer.ggml.eos_token_id".into(),
            Meta::UInt(*eos as u64),
        ));
    }
    if let Some(template) = &e.chat_template {
        meta.push((
            "tokenizer.chat_template".into(),
            Meta::Str(template.clone()),
        ));
    }
    let mut tensors = crate::mapping::give(
        a,
        e.tensors,
        &|t| place(a.family, t),
        RopeLayout::AdjacentPairs,
    );
    if a.family == Family::Gpt2 {
        // llama.cpp's GPT-2 has biases everywhere: zeros where the model has none.
        crate::hf::zero_biases(a, &mut tensors, |i, name| {
            let name = match name {
                "attn.c_attn.bias" => "attn_qkv.bias",
                "attn.c_proj.bias" => "attn_output.bias",
                "mlp.c_fc.bias" => "ffn_up.bias",
                _ => "ffn_down.bias",
            };
            format!("blk.{i}.{name}")
        });
    }
    let mut head = Writer::default();
    head.0.extend(MAGIC);
    head.u32(VERSION);
    head.u64(tensors.len() as u64);
    head.u64(meta.len() as u64);
    for (key, value) in &meta {
        head.string(key);
        head.meta(value);
    }
    let mut data: Vec<u8> = Vec::new();
    for t in tensors.values() {
        let quant = match (e.precision, t.shape.len()) {
            (Precision::F16, 2) => Quant::F16,
            _ => Quant::F32,
        };
        head.string(&t.name);
        head.u32(t.shape.len() as u32);
        for d in t.shape.iter().rev() {
            head.u64(*d as u64);
        }
        head.u32(quant.code());
        head.u64(data.len() as u64);
        match quant {
            Quant::F16 => data.extend(
                t.values
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes()),
            ),
            _ => data.extend(t.values.iter().flat_map(|v| v.to_le_bytes())),
        }
        data.resize(data.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
    }
    let mut out = head.0;
    out.resize(out.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
    out.extend(data);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each block type dequantises to its formula: Q8_0 `d·q`, Q4_0 `d·(q − 8)`, Q4_1
    /// `d·q + m`, low nibbles first.
    #[test]
    fn blocks_dequantise_to_their_formulas() {
        let d = half::f16::from_f32(0.5).to_le_bytes();
        let m = half::f16::from_f32(-1.0).to_le_bytes();
        let mut q8 = d.to_vec();
        q8.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let v = dequantize(Quant::Q8_0, &q8);
        assert_eq!(v[0], -8.0);
        assert_eq!(v[31], 7.5);
        let mut q4 = d.to_vec();
        q4.extend((0..16).map(|i| (i as u8) | (15 - i as u8) << 4));
        let v = dequantize(Quant::Q4_0, &q4);
        assert_eq!((v[0], v[15], v[16], v[31]), (-4.0, 3.5, 3.5, -4.0));
        let mut q41 = d.to_vec();
        q41.extend(m);
        q41.extend((0..16).map(|i| i as u8));
        let v = dequantize(Quant::Q4_1, &q41);
        assert_eq!((v[0], v[15], v[16]), (-1.0, 6.5, -1.0));
    }

    /// A file that claims more tensors than it could hold is refused before any allocation.
    #[test]
    fn an_absurd_count_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gguf");
        let mut bytes = MAGIC.to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(u64::MAX.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
        let e = GgufFile::open(&path).err().unwrap().to_string();
        assert!(e.contains("does not fit in the file"), "{e}");
    }

    /// The byte alphabet is GPT-2's: printable bytes stand for themselves, space is Ġ.
    #[test]
    fn the_byte_alphabet_is_gpt2s() {
        let a = byte_alphabet();
        assert_eq!(a[b'a' as usize], 'a');
        assert_eq!(a[b' ' as usize], 'Ġ');
        assert_eq!(a[b'\n' as usize], 'Ċ');
    }
}
