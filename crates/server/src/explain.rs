//! Explanation requests over REST: the V2 inference body plus `parameters` (method, steps,
//! target, baseline, …) at `/v2/models/{m}[/versions/{v}]/explain`, and TF-Serving's
//! `instances` at `/v1/models/{m}:explain`, both answered by the core's one `explain`; a
//! language model's prompt (`text_input`) at the V2 route, answered by its scheduler.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::Response;
use modelforge_serve::{Core, ExplainRequest, Explanation, Inference, Scheduler, Served};
use modelforge_spec::explain::{Asked, Baseline, Explain};
use serde_json::{Map, Value, json};

use crate::rest::{parse_json, rejected};
use crate::status::ApiError;
use crate::{tfserving, v2};

/// A whole number parameter, if given.
fn count(parameters: &Value, field: &str) -> Result<Option<u64>, ApiError> {
    match &parameters[field] {
        Value::Null => Ok(None),
        v => v.as_u64().map(Some).ok_or_else(|| {
            ApiError::bad(format!(
                "parameters.{field} must be a whole number of 0 or more, not {v}"
            ))
        }),
    }
}

/// A name parameter, if given.
fn name(parameters: &Value, field: &str) -> Result<Option<String>, ApiError> {
    match &parameters[field] {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        v => Err(ApiError::bad(format!(
            "parameters.{field} must be a string, not {v}"
        ))),
    }
}

/// The explanation settings of a request's `parameters` (other keys, such as Triton's
/// `timeout`, are left to the inference codec).
pub(crate) fn settings(parameters: &Value) -> Result<Explain, ApiError> {
    let baseline = match &parameters["baseline"] {
        Value::Null => None,
        Value::String(s) => Some(
            s.parse::<Baseline>()
                .map_err(|e| ApiError::bad(e.to_string()))?,
        ),
        Value::Number(n) => Some(Baseline::Constant(n.as_f64().unwrap_or_default() as f32)),
        Value::Array(_) => {
            let mut flat = Vec::new();
            flatten(&parameters["baseline"], &mut flat)?;
            Some(Baseline::Values(flat))
        }
        v => {
            return Err(ApiError::bad(format!(
                "parameters.baseline must be \"zeros\", \"mean\", a number or a list of numbers, not {v}"
            )));
        }
    };
    let stdev =
        match &parameters["stdev"] {
            Value::Null => None,
            v => Some(v.as_f64().ok_or_else(|| {
                ApiError::bad(format!("parameters.stdev must be a number, not {v}"))
            })?),
        };
    Asked {
        method: name(parameters, "method")?,
        over: name(parameters, "over")?,
        steps: count(parameters, "steps")?,
        rule: name(parameters, "rule")?,
        baseline,
        target: count(parameters, "target")?,
        samples: count(parameters, "samples")?,
        stdev,
        seed: count(parameters, "seed")?,
    }
    .check()
    .map_err(|e| ApiError::bad(format!("parameters.{e}")))
}

/// The numbers of a nested list, row-major.
fn flatten(v: &Value, out: &mut Vec<f32>) -> Result<(), ApiError> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
        Value::Number(n) => {
            out.push(n.as_f64().unwrap_or_default() as f32);
            Ok(())
        }
        other => Err(ApiError::bad(format!(
            "parameters.baseline holds {other}, which is not a number"
        ))),
    }
}

/// The fields an explanation adds to an answer: the output explained and integrated
/// gradients' convergence delta, per sample.
fn fields(e: &Explanation) -> Map<String, Value> {
    let mut extra = Map::new();
    extra.insert("targets".into(), json!(e.targets));
    if let Some(delta) = &e.delta {
        extra.insert("convergence_delta".into(), json!(delta));
    }
    if let Some(pieces) = &e.pieces {
        extra.insert("tokens".into(), json!(pieces.tokens));
        extra.insert("target_tokens".into(), json!(pieces.targets));
    }
    extra
}

/// An explanation as a V2 answer: the outputs, then `attributions`, and the fields.
fn v2_answer(explanation: Explanation, reply: &v2::Reply) -> Response {
    let extra = fields(&explanation);
    let Explanation {
        info,
        mut outputs,
        attributions,
        ..
    } = explanation;
    outputs.push(attributions);
    v2::encode_with(Inference { info, outputs }, reply, extra)
}

/// A language model's prompt: `text_input` as Triton's generate takes it, or the V2 input
/// tensor of that name (one BYTES string).
pub(crate) fn prompt(body: &Map<String, Value>) -> Result<String, ApiError> {
    if let Some(text) = crate::generation::text_input(body).map_err(|e| ApiError::bad(e.message))? {
        return Ok(text);
    }
    let tensor = body
        .get("inputs")
        .and_then(Value::as_array)
        .and_then(|inputs| inputs.iter().find(|i| i["name"] == "text_input"));
    match tensor.map(|t| (&t["datatype"], &t["data"])) {
        Some((Value::String(d), Value::Array(data))) if d == "BYTES" && data.len() == 1 => data[0]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ApiError::bad("input \"text_input\" must hold one string, the prompt")),
        _ => Err(ApiError::bad(
            "a language model explains a prompt, and the request needs \"text_input\": send {\"text_input\": \"…\", \"parameters\": {…}} or the V2 input \"text_input\" (BYTES, shape [1], one string)",
        )),
    }
}

/// The V2 explain route of a language model: the attributions of the prompt's tokens to
/// the next token's score, with the next token's `logits` and the text of the tokens.
async fn next_token(
    scheduler: &Scheduler,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = crate::generation::object(body)?;
    let prompt = prompt(&body)?;
    let parameters = body.get("parameters").cloned().unwrap_or(Value::Null);
    let settings = settings(&parameters)?;
    let explanation = scheduler.explain(prompt, settings, None).await?;
    let reply = v2::Reply::json(body.get("id").cloned(), parameters);
    Ok(v2_answer(explanation, &reply))
}

/// `POST /v2/models/{m}[/versions/{v}]/explain`.
pub(crate) async fn v2(
    core: Arc<Core>,
    model: String,
    version: Option<String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let queue = match core.served(&model, version.as_deref())? {
        Served::Predictor(queue) => queue,
        Served::Generator(scheduler) => return next_token(&scheduler, body).await,
    };
    let body = body.map_err(rejected)?;
    let (request, reply) = v2::decode(headers, &body)?;
    let settings = settings(reply.parameters())?;
    let explanation = queue
        .explain(ExplainRequest {
            inputs: request.inputs,
            settings,
            timeout: request.timeout,
        })
        .await?;
    Ok(v2_answer(explanation, &reply))
}

/// `POST /v1/models/{m}[/versions/{v}|/labels/{l}]:explain`: `instances` (or `inputs`)
/// and `parameters`; the answer holds `predictions`, `attributions` and the fields.
pub(crate) async fn tf(
    core: Arc<Core>,
    model: String,
    version: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request = parse_json(&body.map_err(rejected)?)?;
    let queue = core.version(&model, version.as_deref())?;
    let (inputs, columnar) =
        tfserving::inputs(&request, &queue.info().manifest).map_err(ApiError::bad)?;
    let settings = settings(&request["parameters"])?;
    let explanation = queue
        .explain(ExplainRequest {
            inputs,
            settings,
            timeout: None,
        })
        .await?;
    let mut answer = tfserving::answer(&explanation.outputs, columnar);
    answer["attributions"] = Value::Array(tfserving::rows(&explanation.attributions));
    for (k, v) in fields(&explanation) {
        answer[k] = v;
    }
    Ok(Json(answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelforge_spec::explain::{Method, Rule, Smoothing, Target};

    #[test]
    fn parameters_become_settings() {
        let e = settings(&json!({
            "method": "integrated-gradients", "steps": 16, "rule": "riemann_trapezoid",
            "baseline": [[0.5, 1], [2, 3]], "target": 2, "timeout": 5000
        }))
        .unwrap();
        assert_eq!(e.method, Method::IntegratedGradients);
        assert_eq!((e.steps, e.rule), (16, Rule::RiemannTrapezoid));
        assert_eq!(e.baseline, Baseline::Values(vec![0.5, 1.0, 2.0, 3.0]));
        assert_eq!(e.target, Target::Index(2));
        let s = settings(&json!({"method": "smoothgrad", "samples": 4, "stdev": 0.3, "seed": 9}))
            .unwrap();
        assert_eq!(
            s.smoothing,
            Some(Smoothing {
                samples: 4,
                stdev: Some(0.3),
                seed: 9
            })
        );
        assert_eq!(settings(&Value::Null).unwrap(), Explain::default());
    }

    #[test]
    fn bad_parameters_name_the_field_and_the_fix() {
        for (parameters, field) in [
            (json!({"method": "lime"}), "parameters.method"),
            (json!({"steps": 0}), "parameters.steps"),
            (json!({"steps": -3}), "parameters.steps"),
            (json!({"steps": "many"}), "parameters.steps"),
            (json!({"target": 1.5}), "parameters.target"),
            (json!({"baseline": {"a": 1}}), "parameters.baseline"),
            (json!({"baseline": ["x"]}), "parameters.baseline"),
            (
                json!({"method": "saliency", "steps": 8}),
                "parameters.steps",
            ),
            (
                json!({"method": "smoothgrad", "stdev": "big"}),
                "parameters.stdev",
            ),
        ] {
            let ApiError(status, message) = settings(&parameters).unwrap_err();
            assert_eq!(status, 400, "{parameters}");
            assert!(message.starts_with(field), "{parameters}: {message}");
        }
    }
}
