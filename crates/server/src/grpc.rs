//! gRPC handlers: `inference.GRPCInferenceService` (Open Inference Protocol plus
//! Triton's configuration, statistics, repository and streaming calls). Each
//! converts the message, calls the core, and converts back.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use modelforge_serve::{
    Core, InferRequest, Inference, InputTensor, Manifest, ModelInfo, ModelState, Values,
    VersionPolicy,
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::status::grpc_status;

/// The generated messages and service of `proto/inference.proto`.
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::GrpcInferenceService;
use proto::*;

/// The gRPC service over a core.
pub struct Grpc {
    core: Arc<Core>,
    limits: crate::Limits,
}

impl Grpc {
    /// A service answering from `core` under the surface's access rules.
    pub fn new(core: Arc<Core>, limits: crate::Limits) -> Grpc {
        Grpc { core, limits }
    }

    /// Checks the `authorization` metadata of a call.
    fn authorize<T>(&self, request: &Request<T>, repository_call: bool) -> Result<(), Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if self.limits.authorized(repository_call, authorization) {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "missing or wrong bearer token — send metadata authorization: Bearer <token>",
            ))
        }
    }
}

/// An empty version string means "the policy's choice".
fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

fn tensor_metadata(
    m: &Manifest,
    list: &[modelforge_serve::TensorInfo],
) -> Vec<model_metadata_response::TensorMetadata> {
    list.iter()
        .map(|t| model_metadata_response::TensorMetadata {
            name: t.name.clone(),
            datatype: t.datatype.clone(),
            shape: m.protocol_shape(t),
        })
        .collect()
}

/// A protocol datatype name as model_config.proto's `DataType`.
fn data_type(datatype: &str) -> i32 {
    (match datatype {
        "BOOL" => DataType::TypeBool,
        "UINT8" => DataType::TypeUint8,
        "INT32" => DataType::TypeInt32,
        "INT64" => DataType::TypeInt64,
        "FP64" => DataType::TypeFp64,
        _ => DataType::TypeFp32,
    }) as i32
}

/// Typed contents as values of the stated datatype, from the field the protocol keeps
/// that datatype in.
fn typed(datatype: &str, c: &InferTensorContents) -> Result<Values, String> {
    Ok(match datatype {
        "BOOL" => Values::Bool(c.bool_contents.clone()),
        "UINT8" => Values::U8(
            c.uint_contents
                .iter()
                .map(|&v| u8::try_from(v).map_err(|_| format!("{v} is not UINT8 data")))
                .collect::<Result<_, _>>()?,
        ),
        "INT32" => Values::I32(c.int_contents.clone()),
        "INT64" => Values::I64(c.int64_contents.clone()),
        "FP32" => Values::F32(c.fp32_contents.clone()),
        "FP64" => Values::F64(c.fp64_contents.clone()),
        other => return Err(modelforge_serve::tensor::unsupported(other)),
    })
}

/// The request's input tensors, decoded: raw bytes (`raw_input_contents`, one per input
/// in order) or typed contents.
pub fn inputs(request: &ModelInferRequest) -> Result<Vec<InputTensor>, Status> {
    let raw = &request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(Status::invalid_argument(format!(
            "{} raw_input_contents for {} inputs: send one per input, or none",
            raw.len(),
            request.inputs.len()
        )));
    }
    let mut out = Vec::with_capacity(request.inputs.len());
    for (i, input) in request.inputs.iter().enumerate() {
        let data = match (raw.get(i), &input.contents) {
            (Some(raw), _) => Values::from_le_bytes(&input.datatype, raw),
            (None, Some(c)) => typed(&input.datatype, c),
            (None, None) => {
                return Err(Status::invalid_argument(format!(
                    "input \"{}\" has no contents and there are no raw_input_contents",
                    input.name
                )));
            }
        };
        out.push(InputTensor {
            name: Some(input.name.clone()),
            datatype: input.datatype.clone(),
            shape: input.shape.clone(),
            data,
        });
    }
    Ok(out)
}

/// A gRPC deadline (`grpc-timeout: 250m`: digits and a unit H, M, S, m, u or n).
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The shorter of the call's deadline and the request's `timeout` parameter (µs, Triton's).
fn request_timeout(request: &ModelInferRequest, deadline: Option<Duration>) -> Option<Duration> {
    let parameter = request
        .parameters
        .get("timeout")
        .and_then(|p| match p.parameter_choice {
            Some(infer_parameter::ParameterChoice::Int64Param(us)) => u64::try_from(us).ok(),
            _ => None,
        });
    match (parameter.map(Duration::from_micros), deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn infer(
    core: &Core,
    request: ModelInferRequest,
    deadline: Option<Duration>,
) -> Result<ModelInferResponse, Status> {
    // Resolved once, first: an unknown model or version is NOT_FOUND whatever the inputs.
    let queue = core
        .version(&request.model_name, version(&request.model_version))
        .map_err(grpc_status)?;
    let Inference { info, outputs, .. } = queue
        .infer(InferRequest {
            inputs: inputs(&request)?,
            outputs: request.outputs.iter().map(|o| o.name.clone()).collect(),
            timeout: request_timeout(&request, deadline),
        })
        .await
        .map_err(grpc_status)?;
    Ok(ModelInferResponse {
        model_name: info.name.clone(),
        model_version: info.version.to_string(),
        id: request.id,
        parameters: Default::default(),
        raw_output_contents: outputs.iter().map(|o| o.data.to_le_bytes()).collect(),
        outputs: outputs
            .into_iter()
            .map(|o| model_infer_response::InferOutputTensor {
                name: o.name,
                datatype: o.data.datatype().into(),
                shape: o.shape,
                parameters: Default::default(),
                contents: None,
            })
            .collect(),
    })
}

fn statistics(name: &str, version: u64, s: &modelforge_serve::Statistics) -> ModelStatistics {
    let d = |count: u64, ns: u64| Some(StatisticDuration { count, ns });
    ModelStatistics {
        name: name.to_string(),
        version: version.to_string(),
        last_inference: s.last_inference_ms,
        inference_count: s.inferences,
        execution_count: s.executions,
        inference_stats: Some(InferStatistics {
            success: d(s.success, s.queue_ns + s.compute_ns),
            fail: d(s.failure, 0),
            queue: d(s.success, s.queue_ns),
            // Input and output conversion is part of the compute time; perf_analyzer
            // needs the three compute counts equal.
            compute_input: d(s.success, 0),
            compute_infer: d(s.success, s.compute_ns),
            compute_output: d(s.success, 0),
            cache_hit: d(0, 0),
            cache_miss: d(0, 0),
        }),
        batch_stats: s
            .batches
            .iter()
            .map(|(size, (count, ns))| InferBatchStatistics {
                batch_size: *size as u64,
                compute_input: d(*count, 0),
                compute_infer: d(*count, *ns),
                compute_output: d(*count, 0),
            })
            .collect(),
    }
}

fn config(core: &Core, info: &ModelInfo) -> proto::ModelConfig {
    let c = core.config();
    let m = &info.manifest;
    proto::ModelConfig {
        name: info.name.clone(),
        platform: m.format.clone(),
        backend: "modelforge".into(),
        version_policy: Some(ModelVersionPolicy {
            policy_choice: Some(match c.policy_for(&info.name) {
                VersionPolicy::Latest(n) => {
                    model_version_policy::PolicyChoice::Latest(model_version_policy::Latest {
                        num_versions: *n as u32,
                    })
                }
                VersionPolicy::All => {
                    model_version_policy::PolicyChoice::All(model_version_policy::All {})
                }
                VersionPolicy::Specific(v) => {
                    model_version_policy::PolicyChoice::Specific(model_version_policy::Specific {
                        versions: v.iter().map(|&v| v as i64).collect(),
                    })
                }
            }),
        }),
        // Triton's convention: 0 when the model has no batch axis.
        max_batch_size: if m.batchable {
            c.max_batch_size as i32
        } else {
            0
        },
        input: m
            .inputs
            .iter()
            .map(|t| ModelInput {
                name: t.name.clone(),
                data_type: data_type(&t.datatype),
                dims: t.shape.iter().map(|&d| d as i64).collect(),
            })
            .collect(),
        output: m
            .outputs
            .iter()
            .map(|t| ModelOutput {
                name: t.name.clone(),
                data_type: data_type(&t.datatype),
                dims: t.shape.iter().map(|&d| d as i64).collect(),
            })
            .collect(),
        scheduling_choice: Some(model_config::SchedulingChoice::DynamicBatching(
            ModelDynamicBatching {
                preferred_batch_size: vec![],
                max_queue_delay_microseconds: c.max_queue_delay.as_micros() as u64,
            },
        )),
    }
}

type InferStream = Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for Grpc {
    async fn server_live(
        &self,
        r: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        self.authorize(&r, false)?;
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        r: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        self.authorize(&r, false)?;
        Ok(Response::new(ServerReadyResponse {
            ready: self.core.ready(),
        }))
    }

    async fn model_ready(
        &self,
        r: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        self.authorize(&r, false)?;
        let r = r.into_inner();
        let ready = self.core.served(&r.name, version(&r.version)).is_ok();
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        r: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        self.authorize(&r, false)?;
        Ok(Response::new(ServerMetadataResponse {
            name: "modelforge".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["model_repository".into(), "statistics".into()],
        }))
    }

    async fn model_metadata(
        &self,
        r: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        self.authorize(&r, false)?;
        let r = r.into_inner();
        let served = self
            .core
            .served(&r.name, version(&r.version))
            .map_err(grpc_status)?;
        let info = served.info();
        let versions = match version(&r.version) {
            Some(_) => vec![info.version.to_string()],
            None => self
                .core
                .versions(&r.name)
                .map_err(grpc_status)?
                .iter()
                .map(|v| v.to_string())
                .collect(),
        };
        Ok(Response::new(ModelMetadataResponse {
            name: info.name.clone(),
            versions,
            platform: info.manifest.format.clone(),
            inputs: tensor_metadata(&info.manifest, &info.manifest.inputs),
            outputs: tensor_metadata(&info.manifest, &info.manifest.outputs),
        }))
    }

    async fn model_infer(
        &self,
        r: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        self.authorize(&r, false)?;
        let deadline = grpc_timeout(r.metadata());
        Ok(Response::new(
            infer(&self.core, r.into_inner(), deadline).await?,
        ))
    }

    type ModelStreamInferStream = InferStream;

    async fn model_stream_infer(
        &self,
        r: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<InferStream>, Status> {
        self.authorize(&r, false)?;
        let deadline = grpc_timeout(r.metadata());
        let mut requests = r.into_inner();
        let core = self.core.clone();
        let log = crate::generation::LogRequests(self.limits.log_requests);
        let stream = async_stream(move |tx| async move {
            while let Some(next) = requests.next().await {
                // A language model answers decoupled: many responses, on their own task,
                // so the stream's next requests need not wait for this generation.
                if let Ok(request) = &next
                    && let Ok(scheduler) =
                        core.generator(&request.model_name, version(&request.model_version))
                {
                    let request = next.expect("checked");
                    tokio::spawn(generate(scheduler, log, request, tx.clone()));
                    continue;
                }
                let reply = match next {
                    Ok(request) => match infer(&core, request, deadline).await {
                        Ok(response) => ModelStreamInferResponse {
                            error_message: String::new(),
                            infer_response: Some(response),
                        },
                        Err(status) => ModelStreamInferResponse {
                            error_message: status.message().to_string(),
                            infer_response: None,
                        },
                    },
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn model_config(
        &self,
        r: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        self.authorize(&r, false)?;
        let r = r.into_inner();
        let served = self
            .core
            .served(&r.name, version(&r.version))
            .map_err(grpc_status)?;
        Ok(Response::new(ModelConfigResponse {
            config: Some(config(&self.core, served.info())),
        }))
    }

    async fn model_statistics(
        &self,
        r: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        self.authorize(&r, false)?;
        let r = r.into_inner();
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let model_stats = self
            .core
            .statistics_of(
                nonempty(&r.name).as_deref(),
                nonempty(&r.version).as_deref(),
            )
            .map_err(grpc_status)?
            .iter()
            .map(|(name, v, s)| statistics(name, *v, s))
            .collect();
        Ok(Response::new(ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        r: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        self.authorize(&r, false)?;
        let only_ready = r.into_inner().ready;
        let models = self
            .core
            .index()
            .map_err(grpc_status)?
            .into_iter()
            .filter(|e| !only_ready || e.state == ModelState::Ready)
            .map(|e| repository_index_response::ModelIndex {
                name: e.name,
                version: e.version.to_string(),
                state: e.state.name().into(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        r: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        self.authorize(&r, true)?;
        let name = r.into_inner().model_name;
        let core = self.core.clone();
        let n = name.clone();
        tokio::task::spawn_blocking(move || core.load_model(&n))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(grpc_status)?;
        self.core.version(&name, None).map_err(grpc_status)?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        r: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        self.authorize(&r, true)?;
        self.core
            .unload(&r.into_inner().model_name)
            .map_err(grpc_status)?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }
}

/// A stream fed by a task through a bounded channel.
/// Request parameters that belong to the protocol, not to sampling.
const RESERVED: &[&str] = &[
    "sequence_id",
    "sequence_start",
    "sequence_end",
    "priority",
    "timeout",
];

/// The sampling parameters of a generation request: its parameters (tritonclient's
/// `parameters=`, floats as doubles) and any `sampling_parameters` JSON input (the vLLM
/// backend's way), as JSON.
fn sampling_parameters(
    request: &ModelInferRequest,
    texts: &[(String, String)],
) -> Result<serde_json::Map<String, serde_json::Value>, Status> {
    use infer_parameter::ParameterChoice as P;
    let mut out = serde_json::Map::new();
    for (key, p) in &request.parameters {
        if key.starts_with("triton_") || RESERVED.contains(&key.as_str()) {
            continue;
        }
        let value = match &p.parameter_choice {
            Some(P::BoolParam(b)) => serde_json::json!(b),
            Some(P::Int64Param(i)) => serde_json::json!(i),
            Some(P::Uint64Param(u)) => serde_json::json!(u),
            Some(P::DoubleParam(d)) => serde_json::json!(d),
            Some(P::StringParam(s)) => serde_json::json!(s),
            None => serde_json::Value::Null,
        };
        out.insert(key.clone(), value);
    }
    if let Some((_, json)) = texts.iter().find(|(name, _)| name == "sampling_parameters") {
        match serde_json::from_str(json) {
            Ok(serde_json::Value::Object(more)) => out.extend(more),
            _ => {
                return Err(Status::invalid_argument(
                    "the sampling_parameters input must be one JSON object, e.g. {\"max_tokens\": 64}",
                ));
            }
        }
    }
    Ok(out)
}

/// The string inputs of a request (`BYTES` `[1]`), by name: raw contents (a 4-byte length,
/// then the bytes, as Triton serialises strings) or `bytes_contents`.
fn text_inputs(request: &ModelInferRequest) -> Result<Vec<(String, String)>, Status> {
    let bad = |name: &str, why: &str| {
        Status::invalid_argument(format!(
            "input \"{name}\" {why}: send one BYTES string of shape [1]"
        ))
    };
    let mut out = Vec::new();
    for (i, input) in request.inputs.iter().enumerate() {
        if input.datatype != "BYTES" {
            return Err(bad(&input.name, &format!("is {}", input.datatype)));
        }
        let bytes = match (request.raw_input_contents.get(i), &input.contents) {
            (Some(raw), _) => {
                let len = raw
                    .get(..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .filter(|&n| n + 4 == raw.len())
                    .ok_or_else(|| bad(&input.name, "is not one length-prefixed string"))?;
                raw[4..4 + len].to_vec()
            }
            (None, Some(c)) if c.bytes_contents.len() == 1 => c.bytes_contents[0].clone(),
            _ => return Err(bad(&input.name, "has no single string")),
        };
        let text = String::from_utf8(bytes).map_err(|_| bad(&input.name, "is not UTF-8"))?;
        out.push((input.name.clone(), text));
    }
    Ok(out)
}

/// The prompt and settings of a generation request on the stream, and whether it wants
/// its text piece by piece (a `stream` BOOL input or parameter; by default it does).
fn generation_request(
    request: &ModelInferRequest,
) -> Result<(modelforge_serve::GenerateRequest, bool), Status> {
    let texts = text_inputs(request)?;
    let Some((_, prompt)) = texts.iter().find(|(name, _)| name == "text_input") else {
        return Err(Status::invalid_argument(
            "a language model takes input \"text_input\": one BYTES string of shape [1]",
        ));
    };
    let mut params = sampling_parameters(request, &texts)?;
    let stream = match params.remove("stream") {
        None => true,
        Some(serde_json::Value::Bool(b)) => b,
        Some(other) => {
            return Err(Status::invalid_argument(format!(
                "stream must be true or false, got {other}"
            )));
        }
    };
    crate::generation::only_known(&params, crate::generation::SAMPLING_KEYS)
        .map_err(|e| Status::invalid_argument(e.message))?;
    let sampling = crate::generation::sampling(&params, "max_tokens", 256)
        .map_err(|e| Status::invalid_argument(e.message))?;
    Ok((
        modelforge_serve::GenerateRequest {
            prompt: modelforge_serve::Prompt::Text(prompt.clone()),
            sampling,
        },
        stream,
    ))
}

/// One decoupled response: a `text_output` string, flagged final on the last one.
fn text_response(
    head: &ModelInferResponse,
    text: &str,
    summary: Option<&modelforge_serve::Summary>,
) -> ModelStreamInferResponse {
    use infer_parameter::ParameterChoice as P;
    let param = |choice| InferParameter {
        parameter_choice: Some(choice),
    };
    let mut response = head.clone();
    response.parameters.insert(
        "triton_final_response".into(),
        param(P::BoolParam(summary.is_some())),
    );
    if let Some(s) = summary {
        response.parameters.insert(
            "finish_reason".into(),
            param(P::StringParam(s.finish.name().into())),
        );
        response.parameters.insert(
            "completion_tokens".into(),
            param(P::Int64Param(s.tokens as i64)),
        );
        response.parameters.insert(
            "prompt_tokens".into(),
            param(P::Int64Param(s.prompt_tokens as i64)),
        );
    }
    response.outputs = vec![model_infer_response::InferOutputTensor {
        name: "text_output".into(),
        datatype: "BYTES".into(),
        shape: vec![1],
        parameters: Default::default(),
        contents: None,
    }];
    let mut raw = (text.len() as u32).to_le_bytes().to_vec();
    raw.extend_from_slice(text.as_bytes());
    response.raw_output_contents = vec![raw];
    ModelStreamInferResponse {
        error_message: String::new(),
        infer_response: Some(response),
    }
}

/// Runs one generation of a stream and sends its responses: each piece of text (or the
/// whole text when the request does not stream), then a final response with the figures;
/// a failure as `error_message`. A stream that closes cancels the generation.
async fn generate(
    scheduler: Arc<modelforge_serve::Scheduler>,
    log: crate::generation::LogRequests,
    request: ModelInferRequest,
    tx: tokio::sync::mpsc::Sender<Result<ModelStreamInferResponse, Status>>,
) {
    let failed = |message: String| ModelStreamInferResponse {
        error_message: message,
        infer_response: None,
    };
    let (generate, stream) = match generation_request(&request) {
        Ok(r) => r,
        Err(status) => {
            let _ = tx.send(Ok(failed(status.message().to_string()))).await;
            return;
        }
    };
    let generation = match crate::generation::start(&scheduler, generate).await {
        Ok((generation, _)) => generation,
        Err(e) => {
            let _ = tx.send(Ok(failed(e.to_string()))).await;
            return;
        }
    };
    let head = ModelInferResponse {
        model_name: request.model_name.clone(),
        model_version: generation.version.to_string(),
        id: request.id.clone(),
        ..Default::default()
    };
    let served = generation.version;
    let mut events = generation.into_events();
    let mut text = String::new();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = tx.closed() => return,
        };
        let reply = match event {
            Some(modelforge_serve::Event::Text(piece)) if stream => {
                text_response(&head, &piece, None)
            }
            Some(modelforge_serve::Event::Text(piece)) => {
                text.push_str(&piece);
                continue;
            }
            Some(modelforge_serve::Event::Done(summary)) => {
                crate::generation::log_done(
                    log,
                    "ModelStreamInfer",
                    &head.model_name,
                    served,
                    &summary,
                );
                let last = match stream {
                    true => "",
                    false => text.as_str(),
                };
                let _ = tx
                    .send(Ok(text_response(&head, last, Some(&summary))))
                    .await;
                return;
            }
            Some(modelforge_serve::Event::Failed(e)) => failed(e.to_string()),
            Some(modelforge_serve::Event::Started { .. }) => continue,
            None => return,
        };
        if tx.send(Ok(reply)).await.is_err() {
            return;
        }
    }
}

fn async_stream<F, Fut>(produce: F) -> InferStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<ModelStreamInferResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_every_unit() {
        let mut m = tonic::metadata::MetadataMap::new();
        for (value, want) in [
            ("2H", Some(Duration::from_secs(7200))),
            ("3M", Some(Duration::from_secs(180))),
            ("5S", Some(Duration::from_secs(5))),
            ("250m", Some(Duration::from_millis(250))),
            ("40u", Some(Duration::from_micros(40))),
            ("9n", Some(Duration::from_nanos(9))),
            ("5x", None),
            ("m", None),
        ] {
            m.insert("grpc-timeout", value.parse().unwrap());
            assert_eq!(grpc_timeout(&m), want, "{value}");
        }
    }
}
