//! ONNX models in the modelforge inference core, run by tract.
//!
//! [`OnnxModel::load`] reads a graph, works out its signature — input and output names,
//! datatypes and shapes, and whether the first axis is a batch axis (symbolic in the
//! file) — optimises it once, and runs it as a [`Runnable`] on the core's compute
//! threads. Import and serving load the same way, so a file that imports also serves.

pub mod export;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use modelforge_registry::{
    Artifact, Lineage, Manifest, Registry, RegistryError, TensorInfo, Version,
};
use modelforge_serve::{Engine, Loader, Runnable, Values};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid as _;

/// The manifest `format` of an ONNX version.
pub const FORMAT: &str = "onnx";
/// The graph's file name inside a registry version.
pub const FILE: &str = "model.onnx";

/// Why an ONNX model cannot be imported or served.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The file is missing, truncated or not an ONNX model.
    #[error("{path} is not a readable ONNX model: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said.
        reason: String,
    },
    /// The graph uses an operator or datatype that cannot run here.
    #[error("{path} cannot run here: {reason}")]
    Unsupported {
        /// The file.
        path: String,
        /// The operator or datatype, as the analysis named it.
        reason: String,
    },
    /// A tensor's shape is not fixed where serving needs it to be.
    #[error("{path}: {reason}")]
    Shape {
        /// The file.
        path: String,
        /// Which tensor and axis, and how to fix it.
        reason: String,
    },
    /// The labels file does not fit the model.
    #[error("{path}: {reason}")]
    Labels {
        /// The labels file.
        path: String,
        /// What does not fit.
        reason: String,
    },
    /// A trained model could not be exported.
    #[error("cannot export: {reason}")]
    Export {
        /// What is missing or wrong.
        reason: String,
    },
    /// The new version could not be written.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// What an import may say about a graph beyond what the file declares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Shapes by input name: per sample (without the batch axis) when the model is
    /// batchable, whole otherwise. Needed for inputs with dynamic non-batch axes.
    pub shapes: BTreeMap<String, Vec<usize>>,
    /// Whether the first axis is a batch axis; by default it is when every input's first
    /// axis is dynamic in the file.
    pub batchable: Option<bool>,
    /// Served names by the graph's own tensor names (inputs and outputs), for graphs whose
    /// names are not what clients should see (`gpu_0/data_0`).
    pub names: BTreeMap<String, String>,
}

/// What a graph takes and gives, as the manifest records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    /// Input tensors, in the graph's order.
    pub inputs: Vec<TensorInfo>,
    /// Output tensors, in the graph's order.
    pub outputs: Vec<TensorInfo>,
    /// Whether the first axis of every tensor is the batch axis.
    pub batchable: bool,
}

impl Signature {
    /// The overrides that load the graph with this signature again (at serve time).
    pub fn overrides(&self) -> Overrides {
        Overrides {
            shapes: self
                .inputs
                .iter()
                .map(|t| (graph_name(t).to_string(), t.shape.clone()))
                .collect(),
            batchable: Some(self.batchable),
            names: self
                .inputs
                .iter()
                .chain(&self.outputs)
                .filter_map(|t| Some((t.source.clone()?, t.name.clone())))
                .collect(),
        }
    }
}

/// A tensor's name in the graph file.
fn graph_name(t: &TensorInfo) -> &str {
    t.source.as_deref().unwrap_or(&t.name)
}

/// A tensor as served: under its new name when `names` renames it (the graph's name kept
/// as its source).
fn served(
    names: &BTreeMap<String, String>,
    graph: String,
    datatype: &str,
    shape: Vec<usize>,
) -> TensorInfo {
    let (name, source) = match names.get(&graph) {
        Some(new) => (new.clone(), Some(graph)),
        None => (graph, None),
    };
    TensorInfo {
        name,
        datatype: datatype.into(),
        shape,
        source,
    }
}

/// The protocol name of a tract datatype the core computes with.
fn protocol_name(dt: DatumType) -> Option<&'static str> {
    Some(match dt {
        DatumType::Bool => "BOOL",
        DatumType::U8 => "UINT8",
        DatumType::I32 => "INT32",
        DatumType::I64 => "INT64",
        DatumType::F32 => "FP32",
        DatumType::F64 => "FP64",
        _ => return None,
    })
}

/// The bytes of a graph file.
fn read(path: &Path) -> Result<Vec<u8>, OnnxError> {
    std::fs::read(path).map_err(|e| OnnxError::Parse {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// A loaded, optimised ONNX graph.
pub struct OnnxModel {
    signature: Signature,
    /// The plan for any batch size (the batch axis symbolic).
    general: TypedSimpleState,
    /// Plans specialised for single batch sizes: 1, the common case at low load, and the
    /// batcher's largest batch, the common case under load. With every size known the
    /// optimiser can pick the matrix kernel that suits the shape.
    fixed: Vec<(usize, TypedSimpleState)>,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

/// Why a graph (or a graph inside one of its nodes, as `If` and `Loop` hold, which may also
/// read what `outer` produces) cannot be read: an output that no node, input or
/// initializer produces. tract's reader assumes every output is produced and stops the
/// process on a file that breaks it (found by fuzzing the import), so the import checks
/// first.
fn unproduced_output(
    graph: &tract_onnx::pb::GraphProto,
    outer: &std::collections::HashSet<&str>,
) -> Option<String> {
    let mut produced = outer.clone();
    produced.extend(
        graph
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str))
            .chain(graph.input.iter().map(|i| i.name.as_str()))
            .chain(graph.initializer.iter().map(|t| t.name.as_str())),
    );
    let missing = graph
        .output
        .iter()
        .find(|o| !produced.contains(o.name.as_str()))
        .map(|o| {
            format!(
                "graph {:?} names output {:?}, which no node, input or initializer produces — export the model again, or check it with onnx.checker.check_model",
                graph.name, o.name
            )
        });
    missing.or_else(|| {
        graph
            .node
            .iter()
            .flat_map(|n| &n.attribute)
            .flat_map(|a| a.g.iter().chain(&a.graphs))
            .find_map(|g| unproduced_output(g, &produced))
    })
}

impl OnnxModel {
    /// Loads, checks and optimises the graph in `path`, with a plan for batch 1.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<OnnxModel, OnnxError> {
        OnnxModel::load_for(path, overrides, &[1])
    }

    /// Loads the graph in `path` with plans specialised for the given batch sizes (ignored
    /// when the graph is not batchable); other sizes run the general plan.
    pub fn load_for(
        path: &Path,
        overrides: &Overrides,
        batches: &[usize],
    ) -> Result<OnnxModel, OnnxError> {
        OnnxModel::from_bytes(&read(path)?, path, overrides, batches)
    }

    /// Loads, checks and optimises a graph held in memory (`path` names it in errors),
    /// as [`OnnxModel::load_for`] does.
    pub fn from_bytes(
        bytes: &[u8],
        path: &Path,
        overrides: &Overrides,
        batches: &[usize],
    ) -> Result<OnnxModel, OnnxError> {
        let shown = path.display().to_string();
        let parse = |e: TractError| OnnxError::Parse {
            path: shown.clone(),
            reason: format!("{e:#}"),
        };
        let unsupported = |e: TractError| OnnxError::Unsupported {
            path: shown.clone(),
            reason: format!("{e:#}"),
        };
        let shape = |reason: String| OnnxError::Shape {
            path: shown.clone(),
            reason,
        };
        let onnx = tract_onnx::onnx();
        let proto = onnx.proto_model_for_read(&mut &bytes[..]).map_err(parse)?;
        if let Some(reason) = (proto.graph.as_ref())
            .and_then(|g| unproduced_output(g, &std::collections::HashSet::new()))
        {
            return Err(OnnxError::Parse {
                path: shown,
                reason,
            });
        }
        let mut model = onnx.model_for_proto_model(&proto).map_err(parse)?;
        let batch = model.symbols.sym("batch");
        // A batch holds at least one sample. Knowing so lets the optimiser prove sizes
        // such as 784·batch ≥ 32 and pick its vectorised element-wise kernels, which
        // it otherwise leaves out for a symbolic batch.
        model
            .symbols
            .add_assertion("batch >= 1")
            .map_err(unsupported)?;
        let input_names: Vec<String> = model
            .input_outlets()
            .map_err(parse)?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        if let Some(unknown) = overrides.shapes.keys().find(|k| !input_names.contains(k)) {
            return Err(shape(format!(
                "the graph has no input {unknown:?}; its inputs are {}",
                input_names.join(", ")
            )));
        }
        // What the file declares: each input's datatype and dims (None where dynamic).
        let mut declared = Vec::new();
        for (i, name) in input_names.iter().enumerate() {
            let fact = model.input_fact(i).map_err(parse)?;
            let dt = fact
                .datum_type
                .concretize()
                .ok_or_else(|| shape(format!("input {name:?} declares no datatype")))?;
            let datatype = protocol_name(dt).ok_or_else(|| OnnxError::Unsupported {
                path: shown.clone(),
                reason: format!(
                    "input {name:?} is {dt:?}, and only BOOL, UINT8, INT32, INT64, FP32 and FP64 are served"
                ),
            })?;
            let dims: Option<Vec<Option<usize>>> = (!fact.shape.is_open()).then(|| {
                fact.shape
                    .dims()
                    .map(|d| {
                        d.concretize()
                            .and_then(|d| d.to_i64().ok())
                            .map(|d| d as usize)
                    })
                    .collect()
            });
            declared.push((dt, datatype, dims));
        }
        let batchable = overrides.batchable.unwrap_or_else(|| {
            !declared.is_empty()
                && declared
                    .iter()
                    .all(|(_, _, dims)| matches!(dims.as_deref(), Some([None, ..])))
        });
        let mut inputs = Vec::new();
        for (i, (name, (dt, datatype, dims))) in input_names.iter().zip(declared).enumerate() {
            let dims = match (overrides.shapes.get(name), dims) {
                (Some(given), _) => given.clone(),
                (None, None) => {
                    return Err(shape(format!(
                        "input {name:?} declares no shape; give it at import with --shape {name}=D1,D2,…"
                    )));
                }
                (None, Some(dims)) => {
                    let sample = if batchable {
                        dims.get(1..).unwrap_or(&[])
                    } else {
                        &dims[..]
                    };
                    let offset = usize::from(batchable);
                    if let Some(axis) = sample.iter().position(Option::is_none) {
                        return Err(shape(format!(
                            "input {name:?} has a dynamic size on axis {} and only the first \
                             (batch) axis may be dynamic; give its shape at import with \
                             --shape {name}=D1,D2,… ({})",
                            axis + offset,
                            if batchable {
                                "without the batch axis"
                            } else {
                                "the whole shape"
                            }
                        )));
                    }
                    sample.iter().map(|d| d.expect("checked")).collect()
                }
            };
            let mut fact_dims: TVec<TDim> = dims.iter().map(|&d| d.to_dim()).collect();
            if batchable {
                fact_dims.insert(0, batch.to_dim());
            }
            model
                .set_input_fact(i, InferenceFact::dt_shape(dt, fact_dims))
                .map_err(unsupported)?;
            inputs.push(served(&overrides.names, name.clone(), datatype, dims));
        }
        let output_outlets = model.output_outlets().map_err(parse)?.to_vec();
        let output_names: Vec<String> = output_outlets
            .iter()
            .map(|&o| {
                model
                    .outlet_label(o)
                    .map(str::to_string)
                    .unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect();
        // Output shapes are worked out from the inputs; what the file says of them may
        // name its own batch symbol.
        for i in 0..output_outlets.len() {
            model
                .set_output_fact(i, InferenceFact::default())
                .map_err(unsupported)?;
        }
        let typed = model.into_typed().map_err(unsupported)?;
        let mut outputs = Vec::new();
        for (i, name) in output_names.into_iter().enumerate() {
            let fact = typed.output_fact(i).map_err(unsupported)?;
            let datatype = protocol_name(fact.datum_type).ok_or_else(|| OnnxError::Unsupported {
                path: shown.clone(),
                reason: format!(
                    "output {name:?} is {:?}, and only BOOL, UINT8, INT32, INT64, FP32 and FP64 are served",
                    fact.datum_type
                ),
            })?;
            let dims = fact.shape.dims();
            let sample = match (batchable, dims.first()) {
                (true, Some(first)) if *first == batch.to_dim() => &dims[1..],
                (true, _) => {
                    return Err(shape(format!(
                        "output {name:?} has shape {:?}, whose first axis is not the batch axis; \
                         import the model with --no-batch",
                        fact.shape
                    )));
                }
                (false, _) => dims,
            };
            let shape_of: Option<Vec<usize>> = sample
                .iter()
                .map(|d| d.to_i64().ok().map(|d| d as usize))
                .collect();
            let dims = shape_of.ok_or_else(|| {
                shape(format!(
                    "output {name:?} has shape {:?}, which depends on more than the batch size",
                    fact.shape
                ))
            })?;
            outputs.push(served(&overrides.names, name, datatype, dims));
        }
        // Renames must name graph tensors and leave every served name distinct.
        let graph_names: Vec<&str> = inputs.iter().chain(&outputs).map(graph_name).collect();
        if let Some(unknown) = overrides
            .names
            .keys()
            .find(|k| !graph_names.contains(&k.as_str()))
        {
            return Err(shape(format!(
                "--rename names {unknown:?}, which is no input or output of the graph; it has {}",
                graph_names.join(", ")
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(twice) = inputs
            .iter()
            .chain(&outputs)
            .find(|t| !seen.insert(t.name.as_str()))
        {
            return Err(shape(format!(
                "two tensors would be served as {:?}; give each its own name",
                twice.name
            )));
        }
        let plan = |model: TypedModel| -> Result<TypedSimpleState, OnnxError> {
            model
                .into_optimized()
                .and_then(|m| m.into_runnable())
                .and_then(|p| p.spawn())
                .map_err(unsupported)
        };
        let mut fixed = Vec::new();
        if batchable {
            let mut sizes = batches.to_vec();
            sizes.sort_unstable();
            sizes.dedup();
            for size in sizes.into_iter().filter(|&n| n > 0) {
                let concrete = HashMap::from([(batch.clone(), size.to_dim())]);
                fixed.push((
                    size,
                    plan(typed.set_symbols(&concrete).map_err(unsupported)?)?,
                ));
            }
        }
        Ok(OnnxModel {
            signature: Signature {
                inputs,
                outputs,
                batchable,
            },
            general: plan(typed)?,
            fixed,
        })
    }

    /// What the graph takes and gives.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }
}

/// Values of `shape` as a tract tensor.
fn tensor(values: Values, shape: &[usize]) -> TractResult<TValue> {
    let t = match values {
        Values::Bool(v) => Tensor::from_shape(shape, &v),
        Values::U8(v) => Tensor::from_shape(shape, &v),
        Values::I32(v) => Tensor::from_shape(shape, &v),
        Values::I64(v) => Tensor::from_shape(shape, &v),
        Values::F32(v) => Tensor::from_shape(shape, &v),
        Values::F64(v) => Tensor::from_shape(shape, &v),
    }?;
    Ok(t.into_tvalue())
}

/// A tract tensor's values.
fn values(t: &Tensor) -> TractResult<Values> {
    let plain = t.try_as_plain_ram()?;
    Ok(match t.datum_type() {
        DatumType::Bool => Values::Bool(plain.as_slice::<bool>()?.to_vec()),
        DatumType::U8 => Values::U8(plain.as_slice::<u8>()?.to_vec()),
        DatumType::I32 => Values::I32(plain.as_slice::<i32>()?.to_vec()),
        DatumType::I64 => Values::I64(plain.as_slice::<i64>()?.to_vec()),
        DatumType::F32 => Values::F32(plain.as_slice::<f32>()?.to_vec()),
        DatumType::F64 => Values::F64(plain.as_slice::<f64>()?.to_vec()),
        other => {
            return Err(TractError::msg(format!(
                "the graph gave a {other:?} tensor"
            )));
        }
    })
}

impl Runnable for OnnxModel {
    fn run(&mut self, inputs: Vec<Values>, batch: usize) -> Result<Vec<Values>, String> {
        let sig = &self.signature;
        let run = || -> TractResult<Vec<Values>> {
            let tensors = inputs
                .into_iter()
                .zip(&sig.inputs)
                .map(|(v, t)| {
                    let mut shape = t.shape.clone();
                    if sig.batchable {
                        shape.insert(0, batch);
                    }
                    tensor(v, &shape)
                })
                .collect::<TractResult<TVec<_>>>()?;
            let state = match self.fixed.iter_mut().find(|(n, _)| *n == batch) {
                Some((_, fixed)) => fixed,
                None => &mut self.general,
            };
            state.run(tensors)?.iter().map(|t| values(t)).collect()
        };
        run().map_err(|e| format!("{e:#}"))
    }
}

/// Loads ONNX versions for the inference core, with the shapes their manifests record.
#[derive(Debug, Clone, Copy)]
pub struct OnnxLoader {
    /// The largest batch the batcher forms: each batchable graph gets a plan for it
    /// beside the batch-1 plan.
    pub max_batch_size: usize,
}

impl Loader for OnnxLoader {
    fn load(&self, manifest: &Manifest, dir: &Path) -> Result<Engine, String> {
        let signature = Signature {
            inputs: manifest.inputs.clone(),
            outputs: manifest.outputs.clone(),
            batchable: manifest.batchable,
        };
        let model = OnnxModel::load_for(
            &dir.join(FILE),
            &signature.overrides(),
            &[1, self.max_batch_size],
        )
        .map_err(|e| e.to_string())?;
        if model.signature != signature {
            return Err(format!(
                "the graph's signature {:?} differs from its manifest's {:?}",
                model.signature, signature
            ));
        }
        Ok(Engine::Predictor(Box::new(model)))
    }
}

/// What `registry import` brings in.
#[derive(Debug, Clone)]
pub struct Import<'a> {
    /// The ONNX file.
    pub file: &'a Path,
    /// The model name in the registry.
    pub name: &'a str,
    /// Class names, one per value of the first output's sample (makes it a classifier).
    pub labels: Option<&'a Path>,
    /// Shapes and batching beyond what the file declares.
    pub overrides: Overrides,
}

/// Checks that the graph loads and runs, then publishes it as the model's next version
/// with a manifest computed from the graph; nothing is written when any step fails.
pub fn import(registry: &Registry, import: &Import) -> Result<Version, OnnxError> {
    modelforge_registry::check_name(import.name)?;
    // The bytes checked are the bytes published.
    let bytes = read(import.file)?;
    let mut model = OnnxModel::from_bytes(&bytes, import.file, &import.overrides, &[1])?;
    let signature = model.signature.clone();
    // One run on zeros, as the server warms a version: a graph that loads but cannot run
    // (a shape error deep inside) is refused now rather than when it serves.
    let zeros = modelforge_serve::tensor::zeros_for(&signature.inputs).map_err(|reason| {
        OnnxError::Unsupported {
            path: import.file.display().to_string(),
            reason,
        }
    })?;
    model
        .run(zeros, 1)
        .map_err(|reason| OnnxError::Unsupported {
            path: import.file.display().to_string(),
            reason: format!("a trial run on zeros failed: {reason}"),
        })?;
    let labels = match import.labels {
        None => Vec::new(),
        Some(path) => {
            let bad = |reason: String| OnnxError::Labels {
                path: path.display().to_string(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
            let labels: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            let classes = signature.outputs[0].len();
            if labels.len() != classes {
                return Err(bad(format!(
                    "it has {} labels but output {:?} gives {classes} values per sample; \
                     give one label per line, one per value",
                    labels.len(),
                    signature.outputs[0].name
                )));
            }
            labels
        }
    };
    let digest = modelforge_registry::sha256_hex(&bytes);
    let manifest = Manifest {
        name: import.name.to_string(),
        version: 0,
        format: FORMAT.into(),
        inputs: signature.inputs,
        outputs: signature.outputs,
        batchable: signature.batchable,
        task: if labels.is_empty() {
            "regression"
        } else {
            "classification"
        }
        .into(),
        labels,
        metrics: Default::default(),
        lineage: Lineage {
            spec_hash: String::new(),
            data_fingerprint: String::new(),
            run_id: format!("import:{digest}"),
            created: 0,
            modelforge_version: env!("CARGO_PKG_VERSION").into(),
        },
    };
    Ok(registry.publish(
        manifest,
        &[Artifact {
            name: FILE.into(),
            bytes,
        }],
    )?)
}
