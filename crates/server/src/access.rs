//! Structured access logs with request ids, for REST and gRPC alike: a tower layer that
//! takes the caller's `x-request-id` (or makes one), hands it to the handler and back in
//! the response, and writes one JSON line per request to stderr — every request with
//! `--log-requests`, else only those that fail.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderValue, Request, Response};
use serde_json::{Value, json};

/// The header that carries a request's id.
pub const REQUEST_ID: &str = "x-request-id";

/// Writes one log event as a JSON line (one write, so lines never interleave).
pub fn event(level: &str, message: &str, mut fields: Value) {
    use std::io::Write as _;
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    fields["ts"] = json!((ts * 1000.0).round() / 1000.0);
    fields["level"] = json!(level);
    fields["msg"] = json!(message);
    let mut line = fields.to_string();
    line.push('\n');
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// A new request id: the process id and a counter, unique within a host.
fn new_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{:x}-{:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The layer: `protocol` names the surface in the log (`rest`, `grpc`).
#[derive(Debug, Clone, Copy)]
pub struct AccessLog {
    /// `rest` or `grpc`.
    pub protocol: &'static str,
    /// Log every request, not only the failed ones.
    pub all: bool,
}

impl<S> tower::Layer<S> for AccessLog {
    type Service = Logged<S>;

    fn layer(&self, inner: S) -> Logged<S> {
        Logged { inner, log: *self }
    }
}

/// A service wrapped by [`AccessLog`].
#[derive(Debug, Clone)]
pub struct Logged<S> {
    inner: S,
    log: AccessLog,
}

impl<S, B, R> tower::Service<Request<B>> for Logged<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map_or_else(new_id, str::to_string);
        let header = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"));
        request.headers_mut().insert(REQUEST_ID, header.clone());
        let (method, path) = (
            request.method().to_string(),
            request.uri().path().to_string(),
        );
        let started = Instant::now();
        let log = self.log;
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            response.headers_mut().insert(REQUEST_ID, header);
            let status = response.status().as_u16();
            // gRPC errors come back at once with their status in the headers.
            let grpc_status = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok()?.parse::<u16>().ok());
            let failed = status >= 400 || grpc_status.is_some_and(|s| s != 0);
            if log.all || failed {
                let mut fields = json!({
                    "request_id": id,
                    "protocol": log.protocol,
                    "method": method,
                    "path": path,
                    "status": status,
                    "ms": (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
                });
                if let Some(code) = grpc_status {
                    fields["grpc_status"] = json!(code);
                }
                event(if failed { "warn" } else { "info" }, "request", fields);
            }
            Ok(response)
        })
    }
}
