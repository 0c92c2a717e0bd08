//! REST handlers: Open Inference Protocol (V2) and TensorFlow Serving v1.
//! Each extracts, calls the core, and converts back.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use modelforge_serve::{
    Core, InferRequest, Inference, ModelInfo, ModelState, Served, VersionPolicy,
};
use serde_json::{Value, json};

use crate::generation;
use crate::status::ApiError;
use crate::tfserving;
use crate::v2;

type Shared = State<Arc<Core>>;

/// The REST routes over a core.
pub fn router(core: Arc<Core>, limits: crate::Limits) -> Router {
    let max_body_bytes = limits.max_body_bytes;
    Router::new()
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(health_ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{model}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(version_metadata),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(version_ready),
        )
        .route("/v2/models/{model}/config", get(model_config))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(version_config),
        )
        .route("/v2/models/{model}/infer", post(model_infer))
        .route("/v2/models/{model}/explain", post(model_explain))
        .route(
            "/v2/models/{model}/versions/{version}/explain",
            post(version_explain),
        )
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(version_infer),
        )
        .route(
            "/v2/models/{model}/generate",
            post(generation::model_generate),
        )
        .route(
            "/v2/models/{model}/versions/{version}/generate",
            post(generation::version_generate),
        )
        .route(
            "/v2/models/{model}/generate_stream",
            post(generation::model_generate_stream),
        )
        .route(
            "/v2/models/{model}/versions/{version}/generate_stream",
            post(generation::version_generate_stream),
        )
        .merge(crate::openai::routes())
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/models/{model}/stats", get(model_stats))
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            get(version_stats),
        )
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{model}/load", post(repository_load))
        .route(
            "/v2/repository/models/{model}/unload",
            post(repository_unload),
        )
        .route("/v1/models/{*rest}", get(tf_status).post(tf_predict))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such endpoint — see docs/serving.md".into(),
            )
        })
        .method_not_allowed_fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                ApiError(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!(
                        "{method} is not allowed on {} — see docs/serving.md",
                        uri.path()
                    ),
                )
            },
        )
        .layer(axum::Extension(generation::LogRequests(
            limits.log_requests,
        )))
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let limits = limits.clone();
                async move {
                    let repository = request.uri().path().starts_with("/v2/repository/models/");
                    let headers = request.headers();
                    let authorization = headers
                        .get(axum::http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok());
                    let declared = headers
                        .get(axum::http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
                    if !limits.authorized(repository, authorization) {
                        ApiError(
                            StatusCode::UNAUTHORIZED,
                            "missing or wrong bearer token — send Authorization: Bearer <token>"
                                .into(),
                        )
                        .into_response()
                    } else if let Some(length) =
                        declared.filter(|&length| length > limits.max_body_bytes)
                    {
                        // Answered before reading a byte of the body, as the client announced it.
                        ApiError(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            too_large(length, limits.max_body_bytes),
                        )
                        .into_response()
                    } else {
                        next.run(request).await
                    }
                }
            },
        ))
        .with_state(core)
}

/// Every family: the versions' own, then the trust refusals when keys are trusted.
fn metrics_text(core: &Core) -> String {
    let stats = core.statistics();
    let mut text = crate::metrics::render(&stats);
    if !core.config().trust.is_empty() {
        let counts = core.untrusted_counts();
        let mut models: Vec<String> = stats.into_iter().map(|(m, _, _)| m).collect();
        models.extend(counts.keys().cloned());
        models.sort();
        models.dedup();
        text += &crate::metrics::untrusted(&counts, &models);
    }
    text
}

async fn metrics(State(core): Shared) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        metrics_text(&core),
    )
}

async fn health_ready(State(core): Shared) -> StatusCode {
    if core.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "modelforge",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["model_repository", "statistics"],
    }))
}

/// The V2 metadata of a version.
fn metadata(info: &ModelInfo, versions: &[u64]) -> Value {
    let m = &info.manifest;
    let tensors = |list: &[modelforge_serve::TensorInfo]| {
        list.iter()
            .map(
                |t| json!({ "name": t.name, "datatype": t.datatype, "shape": m.protocol_shape(t) }),
            )
            .collect::<Vec<_>>()
    };
    json!({
        "name": info.name,
        "versions": versions.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
        "platform": m.format,
        "inputs": tensors(&m.inputs),
        "outputs": tensors(&m.outputs),
    })
}

async fn model_metadata(
    State(core): Shared,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let served = core.served(&model, None)?;
    Ok(Json(metadata(served.info(), &core.versions(&model)?)))
}

async fn version_metadata(
    State(core): Shared,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let served = core.served(&model, Some(&version))?;
    Ok(Json(metadata(served.info(), &[served.info().version])))
}

/// Triton's model-configuration JSON for a version (a generating one is decoupled: one
/// request, many responses).
fn config(core: &Core, served: &Served) -> Value {
    let info = served.info();
    let tensors = |list: &[modelforge_serve::TensorInfo]| {
        list.iter()
            .map(|t| json!({ "name": t.name, "data_type": format!("TYPE_{}", t.datatype), "dims": t.shape }))
            .collect::<Vec<_>>()
    };
    let m = &info.manifest;
    let c = core.config();
    json!({
        "name": info.name,
        "platform": info.manifest.format,
        "backend": "modelforge",
        "version_policy": match c.policy_for(&info.name) {
            VersionPolicy::Latest(n) => json!({ "latest": { "num_versions": n } }),
            VersionPolicy::All => json!({ "all": {} }),
            VersionPolicy::Specific(v) => json!({ "specific": { "versions": v } }),
        },
        // Triton's convention: 0 when the model has no batch axis.
        "max_batch_size": if m.batchable { c.max_batch_size } else { 0 },
        "input": tensors(&m.inputs),
        "output": tensors(&m.outputs),
        "dynamic_batching": { "max_queue_delay_microseconds": c.max_queue_delay.as_micros() as u64 },
        "instance_group": [{ "count": 1, "kind": "KIND_CPU" }],
        "model_transaction_policy": { "decoupled": served.is_generator() },
    })
}

async fn model_config(
    State(core): Shared,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(config(&core, &core.served(&model, None)?)))
}

async fn version_config(
    State(core): Shared,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(config(&core, &core.served(&model, Some(&version))?)))
}

async fn model_ready(
    State(core): Shared,
    Path(model): Path<String>,
) -> Result<StatusCode, ApiError> {
    core.served(&model, None)?;
    Ok(StatusCode::OK)
}

async fn version_ready(
    State(core): Shared,
    Path((model, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    core.served(&model, Some(&version))?;
    Ok(StatusCode::OK)
}

/// A body that could not be read (too large, cut off) as an API error with its status.
pub(crate) fn rejected(r: BytesRejection) -> ApiError {
    ApiError(
        r.status(),
        format!("the request body could not be read: {}", r.body_text()),
    )
}

/// The message for a body of `length` bytes over the `limit`.
fn too_large(length: usize, limit: usize) -> String {
    format!(
        "the request body is {length} bytes, over the limit of {limit} bytes — send fewer \
         samples per request or start the server with a larger --max-body-mib"
    )
}

/// The request body as JSON, whatever its content type says.
pub(crate) fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("the request body is not valid JSON: {e}")))
}

async fn model_infer(
    State(core): Shared,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    infer(core, model, None, &headers, body).await
}

async fn version_infer(
    State(core): Shared,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    infer(core, model, Some(version), &headers, body).await
}

async fn model_explain(
    State(core): Shared,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    crate::explain::v2(core, model, None, &headers, body).await
}

async fn version_explain(
    State(core): Shared,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    crate::explain::v2(core, model, Some(version), &headers, body).await
}

async fn infer(
    core: Arc<Core>,
    model: String,
    version: Option<String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // Resolved once, before the body is read: an unknown model or version is a 404 whatever
    // the body holds.
    let queue = core.version(&model, version.as_deref())?;
    let body = body.map_err(rejected)?;
    let (request, reply) = v2::decode(headers, &body)?;
    let inference = queue.infer(request).await?;
    Ok(v2::encode(inference, &reply))
}

fn stats_json(
    core: &Core,
    model: Option<&str>,
    version: Option<&str>,
) -> Result<Json<Value>, ApiError> {
    let count_ns = |count: u64, ns: u64| json!({ "count": count, "ns": ns });
    let stats: Vec<Value> = core
        .statistics_of(model, version)?
        .into_iter()
        .map(|(model, version, s)| {
            json!({
                "name": model,
                "version": version.to_string(),
                "last_inference": s.last_inference_ms,
                "inference_count": s.inferences,
                "execution_count": s.executions,
                "inference_stats": {
                    "success": count_ns(s.success, s.queue_ns + s.compute_ns),
                    "fail": count_ns(s.failure, 0),
                    "queue": count_ns(s.success, s.queue_ns),
                    // Input and output conversion is part of the compute time; Triton's
                    // clients (perf_analyzer) need the three compute counts equal.
                    "compute_input": count_ns(s.success, 0),
                    "compute_infer": count_ns(s.success, s.compute_ns),
                    "compute_output": count_ns(s.success, 0),
                    "cache_hit": count_ns(0, 0),
                    "cache_miss": count_ns(0, 0),
                },
                // Not Triton's: explanations, counted apart from inference.
                "explain_stats": {
                    "success": count_ns(s.explanations.success, s.explanations.compute_ns),
                    "fail": count_ns(s.explanations.failure, 0),
                    "samples": s.explanations.samples,
                },
                "batch_stats": s.batches.iter().map(|(size, (count, ns))| json!({
                    "batch_size": size,
                    "compute_input": count_ns(*count, 0),
                    "compute_infer": count_ns(*count, *ns),
                    "compute_output": count_ns(*count, 0),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "model_stats": stats })))
}

async fn model_stats(
    State(core): Shared,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    stats_json(&core, Some(&model), None)
}

async fn version_stats(
    State(core): Shared,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    stats_json(&core, Some(&model), Some(&version))
}

async fn all_stats(State(core): Shared) -> Result<Json<Value>, ApiError> {
    stats_json(&core, None, None)
}

async fn repository_index(State(core): Shared) -> Result<Json<Value>, ApiError> {
    let index = core.index()?;
    Ok(Json(Value::Array(
        index
            .into_iter()
            .map(|e| json!({ "name": e.name, "version": e.version.to_string(), "state": e.state.name(), "reason": e.reason }))
            .collect(),
    )))
}

async fn repository_load(
    State(core): Shared,
    Path(model): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = model.clone();
    let c = core.clone();
    tokio::task::spawn_blocking(move || c.load_model(&name))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    core.version(&model, None)?;
    Ok(StatusCode::OK)
}

async fn repository_unload(
    State(core): Shared,
    Path(model): Path<String>,
) -> Result<StatusCode, ApiError> {
    core.unload(&model)?;
    Ok(StatusCode::OK)
}

/// The verb at the end of a TF-Serving path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    /// No verb: a status or metadata path.
    None,
    /// `:predict`.
    Predict,
    /// `:explain` (KServe V1's verb).
    Explain,
}

/// Splits `name[/versions/N|/labels/L][:predict|:explain]`.
fn tf_target(rest: &str) -> (String, Option<String>, Verb) {
    let (path, verb) = match (rest.strip_suffix(":predict"), rest.strip_suffix(":explain")) {
        (Some(p), _) => (p, Verb::Predict),
        (_, Some(p)) => (p, Verb::Explain),
        _ => (rest, Verb::None),
    };
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        [name, "versions" | "labels", v, ..] => (name.to_string(), Some(v.to_string()), verb),
        [name, ..] => (name.to_string(), None, verb),
        [] => (String::new(), None, verb),
    }
}

async fn tf_status(State(core): Shared, Path(rest): Path<String>) -> Result<Response, ApiError> {
    let (name, version, _) = tf_target(&rest);
    if rest.ends_with("/metadata") {
        let q = core.version(&name, version.as_deref())?;
        return Ok(Json(json!({
            "model_spec": { "name": name, "version": q.info().version.to_string() },
            "metadata": { "signature_def": { "signature_def": { "serving_default": metadata(q.info(), &[q.info().version]) } } },
        }))
        .into_response());
    }
    let index = core.index()?;
    let statuses: Vec<Value> = index
        .iter()
        .filter(|e| e.name == name && version.as_deref().is_none_or(|v| v == e.version.to_string()))
        .map(|e| {
            let ok = e.state == ModelState::Ready;
            json!({
                "version": e.version.to_string(),
                "state": if ok { "AVAILABLE" } else { "UNAVAILABLE" },
                "status": { "error_code": if ok { "OK" } else { "UNAVAILABLE" }, "error_message": e.reason },
            })
        })
        .collect();
    if statuses.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("model {name:?} is not in the repository"),
        ));
    }
    Ok(Json(json!({ "model_version_status": statuses })).into_response())
}

async fn tf_predict(
    State(core): Shared,
    Path(rest): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let (name, version, verb) = tf_target(&rest);
    match verb {
        Verb::Predict => {}
        Verb::Explain => return crate::explain::tf(core, name, version, body).await,
        Verb::None => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                "TF-Serving REST supports POST …:predict and …:explain".into(),
            ));
        }
    }
    let request = parse_json(&body.map_err(rejected)?)?;
    let queue = core.version(&name, version.as_deref())?;
    let (inputs, columnar) =
        tfserving::inputs(&request, &queue.info().manifest).map_err(ApiError::bad)?;
    let Inference { outputs, .. } = queue
        .infer(InferRequest {
            inputs,
            outputs: Vec::new(),
            timeout: None,
        })
        .await?;
    Ok(Json(tfserving::answer(&outputs, columnar)))
}

#[cfg(test)]
mod tests {
    use super::{Verb, tf_target};

    #[test]
    fn tf_paths_split_into_name_version_and_verb() {
        assert_eq!(tf_target("m:predict"), ("m".into(), None, Verb::Predict));
        assert_eq!(
            tf_target("m/versions/3:predict"),
            ("m".into(), Some("3".into()), Verb::Predict)
        );
        assert_eq!(
            tf_target("m/labels/production:explain"),
            ("m".into(), Some("production".into()), Verb::Explain)
        );
        assert_eq!(
            tf_target("m/versions/2/metadata"),
            ("m".into(), Some("2".into()), Verb::None)
        );
    }
}
