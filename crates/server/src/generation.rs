//! Generation over REST: the sampling parameters every generate route shares, and Triton's
//! generate extension (`/v2/models/{m}[/versions/{v}]/generate` and `/generate_stream`).
//! Each handler reads the request, calls the core's scheduler, and converts its events.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use modelforge_serve::{
    Core, Event, GenerateRequest, Generation, Prompt, Sampling, Scheduler, Summary,
};
use serde_json::{Map, Value, json};
use tokio_stream::wrappers::ReceiverStream;

use crate::status::ApiError;

type Shared = State<Arc<Core>>;

/// A request parameter that is wrong: which one, and what to send instead.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParamError {
    /// The parameter's name.
    pub param: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ParamError {
    pub(crate) fn new(param: &str, message: impl Into<String>) -> ParamError {
        ParamError {
            param: param.into(),
            message: message.into(),
        }
    }
}

/// The sampling parameters every generate route takes.
pub(crate) const SAMPLING_KEYS: &[&str] = &[
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
];

/// A whole number parameter within `min..=max`.
fn whole(
    obj: &Map<String, Value>,
    key: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, ParamError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(ParamError::new(
                key,
                format!("{key} must be a whole number from {min} to {max}, got {v}"),
            )),
        },
    }
}

/// A number parameter.
fn number(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>, ParamError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| ParamError::new(key, format!("{key} must be a number, got {v}"))),
    }
}

/// The sampling settings of a request's parameters (`max_tokens` under `max_tokens_key`);
/// absent ones take their defaults. Ranges are checked by the engine, which names the fix.
pub(crate) fn sampling(
    obj: &Map<String, Value>,
    max_tokens_key: &str,
    default_max_tokens: usize,
) -> Result<Sampling, ParamError> {
    let defaults = Sampling::default();
    let max_tokens =
        whole(obj, max_tokens_key, 1, 1 << 20)?.map_or(default_max_tokens, |n| n as usize);
    let top_k = match whole(obj, "top_k", -1, 1 << 20)? {
        // -1 keeps every token, as vLLM reads it.
        None | Some(-1) => 0,
        Some(k) => k as usize,
    };
    let stop = match obj.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(list)) if list.len() <= 16 => list
            .iter()
            .map(|s| match s {
                Value::String(s) => Ok(s.clone()),
                other => Err(ParamError::new(
                    "stop",
                    format!("stop must hold strings, got {other}"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ParamError::new(
                "stop",
                format!("stop must be a string or a list of at most 16 strings, got {other}"),
            ));
        }
    };
    Ok(Sampling {
        max_tokens,
        temperature: number(obj, "temperature")?.unwrap_or(defaults.temperature),
        top_k,
        top_p: number(obj, "top_p")?.unwrap_or(defaults.top_p),
        seed: whole(obj, "seed", i64::MIN, i64::MAX)?.map_or(defaults.seed, |s| s as u64),
        stop,
    })
}

/// Refuses keys outside `known`, naming the first one and those accepted.
pub(crate) fn only_known(obj: &Map<String, Value>, known: &[&str]) -> Result<(), ParamError> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ParamError::new(
            k,
            format!(
                "unknown parameter {k:?} — the parameters taken are {}",
                known.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// The request body as a JSON object.
pub(crate) fn object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, ApiError> {
    match crate::rest::parse_json(&body.map_err(crate::rest::rejected)?)? {
        Value::Object(obj) => Ok(obj),
        other => Err(ApiError::bad(format!(
            "the request body must be a JSON object, got {}",
            kind(&other)
        ))),
    }
}

/// The JSON type name of a value, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Submits a request to a generating version and waits until it is admitted: returns the
/// generation and its prompt's token count.
pub(crate) async fn start(
    scheduler: &Scheduler,
    request: GenerateRequest,
) -> Result<(Generation, usize), modelforge_serve::ServeError> {
    let mut generation = scheduler.submit(request)?;
    let prompt_tokens = generation.started().await?;
    Ok((generation, prompt_tokens))
}

/// What one generation event becomes on the wire (none, one or several events).
pub(crate) type Convert = Box<dyn FnMut(Event) -> Vec<SseEvent> + Send>;

/// A generation's remaining events as server-sent events, each converted, then `last`
/// (e.g. OpenAI's `[DONE]`) if given. A client that goes away closes the stream, which
/// drops the generation and so cancels it.
pub(crate) fn sse(
    generation: Generation,
    mut convert: Convert,
    last: Option<&'static str>,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let mut events = generation.into_events();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                _ = tx.closed() => return,
            };
            let Some(event) = event else { break };
            for out in convert(event) {
                if tx.send(Ok(out)).await.is_err() {
                    return;
                }
            }
        }
        if let Some(last) = last {
            let _ = tx.send(Ok(SseEvent::default().data(last))).await;
        }
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Keys of a Triton generate request's body besides the sampling parameters.
const GENERATE_KEYS: &[&str] = &["text_input", "parameters", "id", "stream"];

/// The prompt of a Triton generate-style body, `text_input`, if it has one.
pub(crate) fn text_input(obj: &Map<String, Value>) -> Result<Option<String>, ParamError> {
    match obj.get("text_input") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ParamError::new(
            "text_input",
            format!("text_input must be a string, got {}", kind(other)),
        )),
    }
}

/// A Triton generate request: `text_input`, and sampling parameters under `parameters` or
/// beside `text_input`.
fn generate_request(obj: &Map<String, Value>) -> Result<GenerateRequest, ParamError> {
    let known: Vec<&str> = GENERATE_KEYS.iter().chain(SAMPLING_KEYS).copied().collect();
    only_known(obj, &known)?;
    let Some(prompt) = text_input(obj)? else {
        return Err(ParamError::new(
            "text_input",
            "the request needs \"text_input\": the prompt, a string",
        ));
    };
    let mut params = match obj.get("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(other) => {
            return Err(ParamError::new(
                "parameters",
                format!("parameters must be an object, got {}", kind(other)),
            ));
        }
    };
    only_known(&params, &[SAMPLING_KEYS, &["stream"]].concat())?;
    for key in SAMPLING_KEYS {
        if let Some(v) = obj.get(*key) {
            params.insert(key.to_string(), v.clone());
        }
    }
    Ok(GenerateRequest {
        prompt: Prompt::Text(prompt),
        sampling: sampling(&params, "max_tokens", 256)?,
    })
}

/// Whether every generation is logged (`serve --log-requests`), for the handlers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogRequests(pub bool);

/// Logs a finished generation as one JSON line with its figures, when asked to.
pub(crate) fn log_done(log: LogRequests, route: &str, model: &str, version: u64, s: &Summary) {
    if !log.0 {
        return;
    }
    let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    let per_token = match s.tokens {
        0 | 1 => 0.0,
        n => ms(s.elapsed - s.time_to_first_token) / (n - 1) as f64,
    };
    crate::access::event(
        "info",
        "generation",
        json!({
            "route": route,
            "model": model,
            "version": version.to_string(),
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.tokens,
            "finish_reason": s.finish.name(),
            "ttft_ms": ms(s.time_to_first_token),
            "tpot_ms": (per_token * 1000.0).round() / 1000.0,
            "ms": ms(s.elapsed),
        }),
    );
}

/// The figures of a finished generation, as extra fields of Triton's last response.
fn figures(s: &Summary) -> Value {
    json!({
        "finish_reason": s.finish.name(),
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.tokens,
    })
}

/// Answers a generate request, whole or streamed.
async fn generate(
    core: Arc<Core>,
    log: LogRequests,
    model: String,
    version: Option<String>,
    body: Result<Bytes, BytesRejection>,
    stream: bool,
) -> Result<Response, ApiError> {
    // An unknown model is a 404 whatever the body holds.
    let scheduler = core.generator(&model, version.as_deref())?;
    let obj = object(body)?;
    let request = generate_request(&obj).map_err(|e| ApiError::bad(e.message))?;
    let (generation, _) = start(&scheduler, request).await?;
    let head = json!({ "model_name": model, "model_version": generation.version.to_string() });
    let served = generation.version;
    let route = match stream {
        true => "generate_stream",
        false => "generate",
    };
    if !stream {
        let (text, summary) = generation.collect().await?;
        log_done(log, route, &model, served, &summary);
        let mut out = head;
        out["text_output"] = json!(text);
        merge(&mut out, figures(&summary));
        return Ok(Json(out).into_response());
    }
    let convert: Convert = Box::new(move |event| {
        let mut out = head.clone();
        match event {
            Event::Text(text) => out["text_output"] = json!(text),
            Event::Done(summary) => {
                log_done(log, route, &model, served, &summary);
                out["text_output"] = json!("");
                merge(&mut out, figures(&summary));
            }
            Event::Failed(e) => out = json!({ "error": e.to_string() }),
            Event::Started { .. } => return Vec::new(),
        }
        vec![SseEvent::default().data(out.to_string())]
    });
    Ok(sse(generation, convert, None))
}

/// Adds the fields of `extra` (an object) to `out`.
fn merge(out: &mut Value, extra: Value) {
    if let (Some(out), Value::Object(extra)) = (out.as_object_mut(), extra) {
        out.extend(extra);
    }
}

/// `POST /v2/models/{m}/generate`.
pub(crate) async fn model_generate(
    State(core): Shared,
    Extension(log): Extension<LogRequests>,
    Path(model): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    generate(core, log, model, None, body, false).await
}

/// `POST /v2/models/{m}/versions/{v}/generate`.
pub(crate) async fn version_generate(
    State(core): Shared,
    Extension(log): Extension<LogRequests>,
    Path((model, version)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    generate(core, log, model, Some(version), body, false).await
}

/// `POST /v2/models/{m}/generate_stream`.
pub(crate) async fn model_generate_stream(
    State(core): Shared,
    Extension(log): Extension<LogRequests>,
    Path(model): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    generate(core, log, model, None, body, true).await
}

/// `POST /v2/models/{m}/versions/{v}/generate_stream`.
pub(crate) async fn version_generate_stream(
    State(core): Shared,
    Extension(log): Extension<LogRequests>,
    Path((model, version)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    generate(core, log, model, Some(version), body, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn sampling_parameters_are_read_with_their_defaults() {
        let s = sampling(
            &obj(json!({"max_tokens": 5, "temperature": 0, "top_k": -1, "seed": 7, "stop": "\n"})),
            "max_tokens",
            16,
        )
        .unwrap();
        assert_eq!(
            (s.max_tokens, s.temperature, s.top_k, s.seed, s.stop),
            (5, 0.0, 0, 7, vec!["\n".to_string()])
        );
        assert_eq!(
            sampling(&Map::new(), "max_tokens", 16).unwrap().max_tokens,
            16
        );
    }

    #[test]
    fn every_wrong_parameter_is_named() {
        for (body, param) in [
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_tokens": "5"}), "max_tokens"),
            (json!({"max_tokens": 2.5}), "max_tokens"),
            (json!({"temperature": "hot"}), "temperature"),
            (json!({"top_p": [1]}), "top_p"),
            (json!({"top_k": -2}), "top_k"),
            (json!({"seed": 1.5}), "seed"),
            (json!({"stop": 3}), "stop"),
            (json!({"stop": ["a", 1]}), "stop"),
        ] {
            let e = sampling(&obj(body.clone()), "max_tokens", 16).unwrap_err();
            assert_eq!(e.param, param, "{body}");
            assert!(e.message.contains(param), "{}", e.message);
        }
    }

    #[test]
    fn a_triton_generate_request_takes_parameters_in_either_place() {
        let r = generate_request(&obj(json!({
            "text_input": "ROMEO:", "max_tokens": 4, "parameters": {"temperature": 0}
        })))
        .unwrap();
        assert_eq!(
            (&r.prompt, r.sampling.max_tokens),
            (&Prompt::Text("ROMEO:".into()), 4)
        );
        assert_eq!(r.sampling.temperature, 0.0);
        for (body, param) in [
            (json!({}), "text_input"),
            (json!({"text_input": 3}), "text_input"),
            (json!({"text_input": "a", "parameters": 1}), "parameters"),
            (json!({"text_input": "a", "temprature": 1}), "temprature"),
            (
                json!({"text_input": "a", "parameters": {"beam": 2}}),
                "beam",
            ),
        ] {
            assert_eq!(
                generate_request(&obj(body.clone())).unwrap_err().param,
                param,
                "{body}"
            );
        }
    }
}
