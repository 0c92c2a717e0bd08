//! Thin protocol adapters over the modelforge inference core: REST (Open
//! Inference Protocol V2, TensorFlow Serving v1, Prometheus metrics) and gRPC
//! (`inference.GRPCInferenceService` and `grpc.health.v1.Health`), with graceful
//! shutdown and registry polling for hot reload.

pub mod access;
mod explain;
mod generation;
pub mod grpc;
mod metrics;
mod openai;
mod rest;
mod status;
mod tensor;
pub mod tfserving;
pub mod tls;
mod v2;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use modelforge_serve::Core;
use tokio::net::TcpListener;

pub use rest::router;
pub use tls::{Tls, TlsFiles};

/// What can stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A TLS certificate, key or CA file cannot be used.
    #[error("{}: {reason} — give PEM files: the server's certificate chain, its private key, and for --tls-client-ca the CA that signs client certificates", path.display())]
    Tls {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The input tensors of a V2 inference request body as the REST route reads them: JSON, or
/// with `header_length` (binary tensor data extension) a JSON header of that many bytes
/// followed by the tensors' bytes.
pub fn v2_inputs(
    body: &[u8],
    header_length: Option<usize>,
) -> Result<Vec<modelforge_serve::InputTensor>, String> {
    let mut headers = axum::http::HeaderMap::new();
    if let Some(n) = header_length {
        headers.insert(v2::HEADER_LENGTH, n.into());
    }
    v2::decode(&headers, body)
        .map(|(request, _)| request.inputs)
        .map_err(|ApiError(_, message)| message)
}
pub use status::{ApiError, grpc_code, http_status};

/// The prompt of a language model's explanation request as the REST route reads it:
/// `text_input` (Triton's generate) or the V2 input `text_input` (one BYTES string).
pub fn explained_prompt(body: &serde_json::Value) -> Result<String, String> {
    let empty = serde_json::Map::new();
    explain::prompt(body.as_object().unwrap_or(&empty)).map_err(|ApiError(_, message)| message)
}

/// Where the server listens.
pub struct Listeners {
    /// REST.
    pub http: TcpListener,
    /// gRPC.
    pub grpc: TcpListener,
    /// TLS on both, when given.
    pub tls: Option<Tls>,
}

/// Limits and access rules of the protocol surfaces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (REST) or message (gRPC) in bytes.
    pub max_body_bytes: usize,
    /// Registry poll interval.
    pub poll: Duration,
    /// Bearer token required on the repository API (and everywhere with `token_everywhere`).
    pub token: Option<String>,
    /// Require the token on every call, not only on repository load/unload.
    pub token_everywhere: bool,
    /// Log every request (JSON lines on stderr), not only the failed ones.
    pub log_requests: bool,
}

impl Limits {
    /// Whether a call with this `authorization` value may proceed.
    pub fn authorized(&self, repository_call: bool, authorization: Option<&str>) -> bool {
        match &self.token {
            Some(token) if repository_call || self.token_everywhere => {
                authorization.and_then(|a| a.strip_prefix("Bearer ")) == Some(token.as_str())
            }
            _ => true,
        }
    }
}

/// Logs each version refused for trust since the last call.
fn log_refusals(core: &Core) {
    for r in core.take_refusals() {
        access::event(
            "warn",
            "version refused: not signed by a trusted key",
            serde_json::json!({ "model": r.model, "version": r.version, "reason": r.reason }),
        );
    }
}

/// Serves REST and gRPC until `shutdown` resolves, polling the registry every `limits.poll`.
pub async fn serve(
    core: Arc<Core>,
    listeners: Listeners,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let poll = limits.poll;
    let poller = core.clone();
    log_refusals(&core);
    let polling = tokio::spawn(async move {
        loop {
            tokio::time::sleep(poll).await;
            let c = poller.clone();
            // Loading and warming run off the async runtime.
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || c.refresh()).await {
                access::event(
                    "error",
                    "registry poll failed",
                    serde_json::json!({ "error": e.to_string() }),
                );
            }
            log_refusals(&poller);
        }
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<grpc::proto::grpc_inference_service_server::GrpcInferenceServiceServer<grpc::Grpc>>()
        .await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let inference = grpc::proto::grpc_inference_service_server::GrpcInferenceServiceServer::new(
        grpc::Grpc::new(core.clone(), limits.clone()),
    )
    .max_decoding_message_size(limits.max_body_bytes)
    .max_encoding_message_size(limits.max_body_bytes);
    // The builder's own tcp_nodelay applies only to addresses it binds itself.
    let grpc_incoming =
        tonic::transport::server::TcpIncoming::from(listeners.grpc).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &listeners.tls {
        builder = builder
            .tls_config(tls.grpc())
            .map_err(std::io::Error::other)?;
    }
    let grpc_server = builder
        .layer(access::AccessLog {
            protocol: "grpc",
            all: limits.log_requests,
        })
        .add_service(health)
        .add_service(inference)
        .serve_with_incoming_shutdown(grpc_incoming, wait(stopped.clone()));
    use axum::serve::ListenerExt;
    use std::future::IntoFuture;
    let app = router(core, limits.clone()).layer(access::AccessLog {
        protocol: "rest",
        all: limits.log_requests,
    });
    let rest_server: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> =
        match &listeners.tls {
            Some(tls) => Box::pin(
                axum::serve(tls::TlsListener::start(listeners.http, tls)?, app)
                    .with_graceful_shutdown(wait(stopped))
                    .into_future(),
            ),
            None => {
                let http = listeners.http.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                Box::pin(
                    axum::serve(http, app)
                        .with_graceful_shutdown(wait(stopped))
                        .into_future(),
                )
            }
        };
    let (rest, grpc) = tokio::join!(rest_server, grpc_server);
    polling.abort();
    rest?;
    grpc.map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_guard_the_repository_or_everything() {
        let mut l = Limits {
            max_body_bytes: 1,
            poll: Duration::from_secs(1),
            token: Some("s3cret".into()),
            token_everywhere: false,
            log_requests: false,
        };
        assert!(l.authorized(false, None));
        assert!(!l.authorized(true, None));
        assert!(!l.authorized(true, Some("Bearer nope")));
        assert!(l.authorized(true, Some("Bearer s3cret")));
        l.token_everywhere = true;
        assert!(!l.authorized(false, None));
        l.token = None;
        assert!(l.authorized(true, None));
    }
}
