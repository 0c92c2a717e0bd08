//! The one table from inference-core errors to HTTP statuses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use modelforge_serve::ServeError;
use serde_json::json;

/// The HTTP status for a core error.
pub fn http_status(e: &ServeError) -> StatusCode {
    match e {
        ServeError::NoModel(_) | ServeError::NoVersion { .. } => StatusCode::NOT_FOUND,
        ServeError::BadRequest(_)
        | ServeError::NotAPredictor(_)
        | ServeError::NotAGenerator(_)
        | ServeError::NotExplainable { .. } => StatusCode::BAD_REQUEST,
        // As Triton answers a full queue.
        ServeError::Unavailable { .. } | ServeError::Overloaded(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ServeError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
        ServeError::Compute(_) | ServeError::Crashed { .. } | ServeError::Registry(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// The gRPC status code for a core error.
pub fn grpc_code(e: &ServeError) -> tonic::Code {
    match e {
        ServeError::NoModel(_) | ServeError::NoVersion { .. } => tonic::Code::NotFound,
        ServeError::BadRequest(_)
        | ServeError::NotAPredictor(_)
        | ServeError::NotAGenerator(_)
        | ServeError::NotExplainable { .. } => tonic::Code::InvalidArgument,
        ServeError::Unavailable { .. } | ServeError::Overloaded(_) => tonic::Code::Unavailable,
        ServeError::DeadlineExceeded(_) => tonic::Code::DeadlineExceeded,
        ServeError::Compute(_) | ServeError::Crashed { .. } | ServeError::Registry(_) => {
            tonic::Code::Internal
        }
    }
}

/// A core error as a gRPC status with the same message.
pub fn grpc_status(e: ServeError) -> tonic::Status {
    tonic::Status::new(grpc_code(&e), e.to_string())
}

/// An error response: `{"error": "..."}` with the status of the table.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        ApiError(http_status(&e), e.to_string())
    }
}

impl ApiError {
    /// A 400 with a message.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_status() {
        let cases = [
            (ServeError::NoModel("m".into()), 404),
            (
                ServeError::NoVersion {
                    model: "m".into(),
                    version: "3".into(),
                },
                404,
            ),
            (ServeError::BadRequest("x".into()), 400),
            (
                ServeError::Unavailable {
                    model: "m".into(),
                    version: 1,
                    reason: "r".into(),
                },
                503,
            ),
            (ServeError::Overloaded("m".into()), 503),
            (ServeError::NotAPredictor("m".into()), 400),
            (ServeError::NotAGenerator("m".into()), 400),
            (
                ServeError::NotExplainable {
                    model: "m".into(),
                    version: 1,
                    format: "onnx".into(),
                },
                400,
            ),
            (
                ServeError::DeadlineExceeded(std::time::Duration::from_millis(5)),
                504,
            ),
            (ServeError::Compute("c".into()), 500),
            (
                ServeError::Crashed {
                    model: "m".into(),
                    version: 1,
                    message: "index out of bounds".into(),
                },
                500,
            ),
            (
                ServeError::Registry(modelforge_registry::RegistryError::BadName("b".into())),
                500,
            ),
        ];
        for (e, code) in &cases {
            assert_eq!(http_status(e).as_u16(), *code, "{e}");
        }
        let grpc: Vec<tonic::Code> = cases.iter().map(|(e, _)| grpc_code(e)).collect();
        use tonic::Code::*;
        assert_eq!(
            grpc,
            [
                NotFound,
                NotFound,
                InvalidArgument,
                Unavailable,
                Unavailable,
                InvalidArgument,
                InvalidArgument,
                InvalidArgument,
                DeadlineExceeded,
                Internal,
                Internal,
                Internal
            ]
        );
    }
}
