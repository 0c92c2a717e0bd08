//! Thin protocol adapters over the modelforge inference core: REST (Open
//! Inference Protocol V2 and TensorFlow Serving v1) with graceful shutdown and
//! registry polling for hot reload.

mod metrics;
mod rest;
mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use modelforge_serve::Core;
use tokio::net::TcpListener;

pub use rest::router;
pub use status::{ApiError, http_status};

/// Serves REST on `listener` until `shutdown` resolves, polling the registry every `poll`.
pub async fn serve(
    core: Arc<Core>,
    listener: TcpListener,
    poll: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let poller = core.clone();
    let polling = tokio::spawn(async move {
        loop {
            tokio::time::sleep(poll).await;
            let c = poller.clone();
            // Loading and warming run off the async runtime.
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || c.refresh()).await {
                eprintln!("registry poll failed: {e}");
            }
        }
    });
    let result = axum::serve(listener, router(core))
        .with_graceful_shutdown(shutdown)
        .await;
    polling.abort();
    result
}
