//! The Open Inference Protocol's (KServe V2) REST codec: a request body (JSON, or JSON
//! followed by tensors under Triton's binary tensor data extension) into the core's
//! request, and the core's answer back into a body, as the handlers in `rest.rs` send it.

use std::time::Duration;

use axum::Json;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use modelforge_serve::{InferRequest, Inference, InputTensor, OutputTensor, Values};
use serde_json::{Value, json};

use crate::status::ApiError;
use crate::tensor::{JsonData, to_json};

/// The binary tensor data extension's header naming the JSON part's length.
pub(crate) const HEADER_LENGTH: &str = "inference-header-content-length";

/// What the inputs of a V2 request must be, said when they are not.
const NEEDS_INPUTS: &str =
    "the request needs \"inputs\": a list of input tensors {name, shape, datatype, data}";

/// A V2 inference request, read in one pass: tensor data goes straight into flat leaves
/// (no JSON tree for the numbers); the other fields are checked where they are used.
#[derive(serde::Deserialize)]
struct V2Request {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    parameters: Value,
    #[serde(default)]
    inputs: Option<Vec<V2Input>>,
    #[serde(default)]
    outputs: Value,
}

/// One input tensor of a [`V2Request`].
#[derive(serde::Deserialize)]
struct V2Input {
    #[serde(default)]
    name: Value,
    #[serde(default)]
    shape: Value,
    #[serde(default)]
    datatype: Value,
    #[serde(default)]
    parameters: Value,
    #[serde(default)]
    data: Option<JsonData>,
}

/// Reads a V2 request: text that is not JSON and JSON that is no request get their own
/// messages.
fn parse_request(body: &[u8]) -> Result<V2Request, ApiError> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad(format!("{NEEDS_INPUTS} ({e})")),
        _ => ApiError::bad(format!("the request body is not valid JSON: {e}")),
    })
}

/// What the answer to a request must carry back: its id and which outputs go as binary.
pub(crate) struct Reply {
    id: Option<Value>,
    parameters: Value,
    outputs: Value,
}

impl Reply {
    /// The reply to a request that was not a V2 body: every output as JSON.
    pub(crate) fn json(id: Option<Value>, parameters: Value) -> Reply {
        Reply {
            id,
            parameters,
            outputs: Value::Null,
        }
    }

    /// The request's `parameters` (null when it had none).
    pub(crate) fn parameters(&self) -> &Value {
        &self.parameters
    }
}

/// A V2 request body (with its headers, for the binary extension) as the core's request.
pub(crate) fn decode(headers: &HeaderMap, body: &[u8]) -> Result<(InferRequest, Reply), ApiError> {
    // Binary tensor data extension: the JSON header is the first N bytes, tensors follow.
    let json_len = match headers.get(HEADER_LENGTH) {
        Some(v) => {
            let n: usize = v
                .to_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ApiError::bad("Inference-Header-Content-Length is not a number"))?;
            if n > body.len() {
                return Err(ApiError::bad(format!(
                    "Inference-Header-Content-Length {n} exceeds the body's {} bytes",
                    body.len()
                )));
            }
            n
        }
        None => body.len(),
    };
    let request = parse_request(&body[..json_len])?;
    let mut binary = &body[json_len..];
    let mut inputs = Vec::new();
    for input in request
        .inputs
        .as_ref()
        .ok_or_else(|| ApiError::bad(NEEDS_INPUTS))?
    {
        let shape: Vec<i64> = input
            .shape
            .as_array()
            .and_then(|s| s.iter().map(Value::as_i64).collect())
            .ok_or_else(|| {
                ApiError::bad("input \"shape\" must be a list of integers, batch first")
            })?;
        let datatype = input.datatype.as_str().unwrap_or_default();
        let data = match input.parameters["binary_data_size"].as_u64() {
            Some(size) => {
                let size = size as usize;
                if size > binary.len() {
                    return Err(ApiError::bad(format!(
                        "binary_data_size {size} exceeds the {} binary bytes sent",
                        binary.len()
                    )));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                Values::from_le_bytes(datatype, mine)
            }
            None => match &input.data {
                Some(data) => data.values(datatype),
                None => Err("the input has no \"data\" and no binary_data_size parameter".into()),
            },
        };
        inputs.push(InputTensor {
            name: Some(input.name.as_str().unwrap_or_default().to_string()),
            datatype: datatype.to_string(),
            shape,
            data,
        });
    }
    if !binary.is_empty() {
        return Err(ApiError::bad(format!(
            "{} binary bytes are not claimed by any input",
            binary.len()
        )));
    }
    let asked: Vec<String> = request
        .outputs
        .as_array()
        .map(|o| {
            o.iter()
                .filter_map(|o| o["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    // Triton's request parameter: microseconds the caller waits.
    let timeout = match &request.parameters["timeout"] {
        Value::Null => None,
        t => Some(Duration::from_micros(t.as_u64().ok_or_else(|| {
            ApiError::bad("parameters.timeout must be a whole number of microseconds")
        })?)),
    };
    Ok((
        InferRequest {
            inputs,
            outputs: asked,
            timeout,
        },
        Reply {
            id: request.id,
            parameters: request.parameters,
            outputs: request.outputs,
        },
    ))
}

/// The core's answer as a V2 response: JSON, or JSON then the binary outputs.
pub(crate) fn encode(inference: Inference, request: &Reply) -> Response {
    encode_with(inference, request, serde_json::Map::new())
}

/// [`encode`], with `extra` fields at the top level of the JSON.
pub(crate) fn encode_with(
    inference: Inference,
    request: &Reply,
    extra: serde_json::Map<String, Value>,
) -> Response {
    let Inference { info, outputs, .. } = inference;
    // Binary outputs: those asked for with `binary_data`, or all with `binary_data_output`.
    let all_binary = request.parameters["binary_data_output"]
        .as_bool()
        .unwrap_or(false);
    let binary_for = |name: &str| {
        request
            .outputs
            .as_array()
            .and_then(|o| o.iter().find(|o| o["name"] == name))
            .and_then(|o| o["parameters"]["binary_data"].as_bool())
            .unwrap_or(all_binary)
    };
    let (mut tail, mut any_binary) = (Vec::new(), false);
    let outputs: Vec<Value> = outputs
        .into_iter()
        .map(|OutputTensor { name, shape, data }| {
            let mut output = json!({ "name": name, "datatype": data.datatype(), "shape": shape });
            if binary_for(&name) {
                let bytes = data.to_le_bytes();
                output["parameters"] = json!({ "binary_data_size": bytes.len() });
                tail.extend(bytes);
                any_binary = true;
            } else {
                output["data"] = to_json(&data);
            }
            output
        })
        .collect();
    let mut response = json!({
        "model_name": info.name,
        "model_version": info.version.to_string(),
        "outputs": outputs,
    });
    if let Some(id) = &request.id {
        response["id"] = id.clone();
    }
    for (k, v) in extra {
        response[k] = v;
    }
    if !any_binary {
        return Json(response).into_response();
    }
    let mut bytes = serde_json::to_vec(&response).expect("json");
    let header_len = bytes.len();
    bytes.extend(tail);
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/octet-stream".to_string(),
            ),
            (
                axum::http::HeaderName::from_static(HEADER_LENGTH),
                header_len.to_string(),
            ),
        ],
        bytes,
    )
        .into_response()
}
