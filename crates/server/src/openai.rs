//! The OpenAI-compatible API over the core's language models: `/v1/completions`,
//! `/v1/chat/completions` and `/v1/models`, also under `/openai/v1` (KServe's prefix).
//! Responses, streamed chunks and errors take OpenAI's shapes, so its clients work as they
//! are.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use modelforge_serve::{Core, Event, GenerateRequest, Message, Prompt, ServeError};
use serde_json::{Map, Value, json};

use crate::generation::{
    Convert, LogRequests, ParamError, SAMPLING_KEYS, log_done, object, only_known, sampling, sse,
    start,
};
use crate::status::{ApiError, http_status};

type Shared = State<Arc<Core>>;

/// The OpenAI routes, at `/v1` and `/openai/v1`.
pub(crate) fn routes() -> Router<Arc<Core>> {
    let mut router = Router::new();
    for prefix in ["/v1", "/openai/v1"] {
        router = router
            .route(&format!("{prefix}/models"), get(models))
            .route(&format!("{prefix}/completions"), post(completions))
            .route(
                &format!("{prefix}/chat/completions"),
                post(chat_completions),
            );
    }
    router
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
pub(crate) struct OpenAiError {
    status: StatusCode,
    message: String,
    param: Option<String>,
}

impl From<ServeError> for OpenAiError {
    fn from(e: ServeError) -> Self {
        OpenAiError {
            status: http_status(&e),
            message: e.to_string(),
            param: None,
        }
    }
}

impl From<ParamError> for OpenAiError {
    fn from(e: ParamError) -> Self {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            message: e.message,
            param: Some(e.param),
        }
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        OpenAiError {
            status: e.0,
            message: e.1,
            param: None,
        }
    }
}

impl OpenAiError {
    /// The error body.
    fn body(&self) -> Value {
        let kind = match self.status.is_server_error() {
            true => "server_error",
            false => "invalid_request_error",
        };
        let code = match self.status {
            StatusCode::NOT_FOUND => Some("model_not_found"),
            _ => None,
        };
        json!({ "error": { "message": self.message, "type": kind, "param": self.param, "code": code } })
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// Seconds since the Unix epoch.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh response id with OpenAI's prefix.
fn response_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}{n:08x}", now())
}

/// `GET /v1/models`: every served language model.
async fn models(State(core): Shared) -> Json<Value> {
    let data: Vec<Value> = core
        .generators()
        .into_iter()
        .map(|(name, _)| json!({ "id": name, "object": "model", "created": 0, "owned_by": "modelforge" }))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

/// Keys both completion routes take besides the sampling parameters and their own.
const COMMON_KEYS: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "n",
    "user",
    "logprobs",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
];

/// What a completion request asks for, besides its prompt.
struct Asked {
    /// The model's name.
    model: String,
    /// Its version or alias, from `name@version`.
    version: Option<String>,
    stream: bool,
    include_usage: bool,
}

/// Reads `model`, `stream` and `stream_options`, and refuses what this server does not do
/// (several choices, log-probabilities, penalties, logit biases).
fn asked(obj: &Map<String, Value>) -> Result<Asked, ParamError> {
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => {
            return Err(ParamError::new(
                "model",
                "the request needs \"model\": a served language model's name (GET /v1/models lists them), optionally name@version",
            ));
        }
    };
    let (model, version) = match model.split_once('@') {
        Some((m, v)) => (m.to_string(), Some(v.to_string())),
        None => (model, None),
    };
    let flag = |key: &str| match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ParamError::new(
            key,
            format!("{key} must be true or false, got {other}"),
        )),
    };
    let stream = flag("stream")?;
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) if stream => {
            only_known(o, &["include_usage"])?;
            flag_in(o, "include_usage")?
        }
        Some(_) => {
            return Err(ParamError::new(
                "stream_options",
                "stream_options is an object {\"include_usage\": bool} and needs \"stream\": true",
            ));
        }
    };
    if !matches!(obj.get("n"), None | Some(Value::Null)) && obj.get("n") != Some(&json!(1)) {
        return Err(ParamError::new(
            "n",
            "n must be 1: this server makes one choice per request",
        ));
    }
    if !matches!(
        obj.get("logprobs"),
        None | Some(Value::Null) | Some(Value::Bool(false))
    ) {
        return Err(ParamError::new(
            "logprobs",
            "logprobs are not returned by this server — leave logprobs out",
        ));
    }
    for key in ["presence_penalty", "frequency_penalty"] {
        if let Some(v) = obj
            .get(key)
            .filter(|v| !v.is_null() && v.as_f64() != Some(0.0))
        {
            return Err(ParamError::new(
                key,
                format!("{key} {v} is not supported — leave it out or send 0"),
            ));
        }
    }
    if let Some(v) = obj
        .get("logit_bias")
        .filter(|v| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()))
    {
        return Err(ParamError::new(
            "logit_bias",
            format!("logit_bias {v} is not supported — leave it out"),
        ));
    }
    Ok(Asked {
        model,
        version,
        stream,
        include_usage,
    })
}

/// A boolean inside an object.
fn flag_in(o: &Map<String, Value>, key: &str) -> Result<bool, ParamError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ParamError::new(
            key,
            format!("{key} must be true or false, got {other}"),
        )),
    }
}

/// The two completion routes' differences.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `/v1/completions`: `prompt` in, `text` out.
    Completions,
    /// `/v1/chat/completions`: `messages` in, a `message` (or `delta`) out.
    Chat,
}

impl Route {
    fn object(self, stream: bool) -> &'static str {
        match (self, stream) {
            (Route::Completions, _) => "text_completion",
            (Route::Chat, false) => "chat.completion",
            (Route::Chat, true) => "chat.completion.chunk",
        }
    }

    /// A choice carrying `text`.
    fn choice(self, text: &str, finish: Option<&str>, stream: bool) -> Value {
        match (self, stream) {
            (Route::Completions, _) => {
                json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": finish })
            }
            (Route::Chat, false) => json!({
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "logprobs": null,
                "finish_reason": finish,
            }),
            (Route::Chat, true) => {
                let delta = match finish {
                    Some(_) => json!({}),
                    None => json!({ "content": text }),
                };
                json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish })
            }
        }
    }
}

/// The prompt of a `/v1/completions` request: a string, or a list of one string.
fn completion_prompt(obj: &Map<String, Value>) -> Result<String, ParamError> {
    let known: Vec<&str> = COMMON_KEYS
        .iter()
        .chain(SAMPLING_KEYS)
        .chain(&["prompt", "echo", "best_of", "suffix"])
        .copied()
        .collect();
    only_known(obj, &known)?;
    if obj.get("echo").is_some_and(|v| v != &json!(false)) {
        return Err(ParamError::new(
            "echo",
            "echo is not supported — leave it out",
        ));
    }
    if obj
        .get("best_of")
        .is_some_and(|v| !v.is_null() && v != &json!(1))
    {
        return Err(ParamError::new("best_of", "best_of must be 1"));
    }
    if obj.get("suffix").is_some_and(|v| !v.is_null()) {
        return Err(ParamError::new(
            "suffix",
            "suffix is not supported — leave it out",
        ));
    }
    match obj.get("prompt") {
        Some(Value::String(p)) => Ok(p.clone()),
        Some(Value::Array(list)) if list.len() == 1 && list[0].is_string() => {
            Ok(list[0].as_str().unwrap_or_default().to_string())
        }
        _ => Err(ParamError::new(
            "prompt",
            "the request needs \"prompt\": a string (or a list of one string)",
        )),
    }
}

/// The conversation of a `/v1/chat/completions` request (the model's chat template makes
/// it a prompt).
fn chat_prompt(obj: &Map<String, Value>) -> Result<Vec<Message>, ParamError> {
    let known: Vec<&str> = COMMON_KEYS
        .iter()
        .chain(SAMPLING_KEYS)
        .chain(&["messages", "max_completion_tokens"])
        .copied()
        .collect();
    only_known(obj, &known)?;
    let needs = || {
        ParamError::new(
            "messages",
            "the request needs \"messages\": a non-empty list of {\"role\": \"system\"|\"user\"|\"assistant\", \"content\": text}",
        )
    };
    let Some(Value::Array(messages)) = obj.get("messages") else {
        return Err(needs());
    };
    if messages.is_empty() {
        return Err(needs());
    }
    let mut contents = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        if !matches!(role, Some("system" | "user" | "assistant" | "developer")) {
            return Err(ParamError::new(
                "messages",
                format!(
                    "messages[{i}].role must be \"system\", \"user\" or \"assistant\", got {}",
                    m.get("role").unwrap_or(&Value::Null)
                ),
            ));
        }
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            // Content parts: their text, in order.
            Some(Value::Array(parts)) => parts
                .iter()
                .map(|p| match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => Ok(t),
                    _ => Err(ParamError::new(
                        "messages",
                        format!("messages[{i}].content parts must be {{\"type\": \"text\", \"text\": ...}} — this model reads text only"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?
                .concat(),
            _ => {
                return Err(ParamError::new(
                    "messages",
                    format!("messages[{i}].content must be a string"),
                ));
            }
        };
        contents.push(Message {
            role: role.unwrap_or_default().to_string(),
            content,
        });
    }
    Ok(contents)
}

async fn completions(
    State(core): Shared,
    Extension(log): Extension<LogRequests>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    complete(core, log, body, Route::Completions)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn chat_completions(
    State(core): Shared,
    Extension(log): Extension<LogRequests>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    complete(core, log, body, Route::Chat)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Answers a completion request, whole or as a stream of chunks ending in `[DONE]`.
async fn complete(
    core: Arc<Core>,
    log: LogRequests,
    body: Result<Bytes, BytesRejection>,
    route: Route,
) -> Result<Response, OpenAiError> {
    let obj = object(body)?;
    let asked = asked(&obj)?;
    let (prompt, max_tokens_key) = match route {
        Route::Completions => (Prompt::Text(completion_prompt(&obj)?), "max_tokens"),
        Route::Chat => {
            let key = match obj.contains_key("max_completion_tokens") {
                true => "max_completion_tokens",
                false => "max_tokens",
            };
            (Prompt::Chat(chat_prompt(&obj)?), key)
        }
    };
    // OpenAI's default for completions; chat runs on to a longer default.
    let default_max_tokens = match route {
        Route::Completions => 16,
        Route::Chat => 256,
    };
    let request = GenerateRequest {
        prompt,
        sampling: sampling(&obj, max_tokens_key, default_max_tokens)?,
    };
    let scheduler = core.generator(&asked.model, asked.version.as_deref())?;
    let (generation, prompt_tokens) = start(&scheduler, request).await?;
    let head = json!({
        "id": response_id(match route { Route::Completions => "cmpl", Route::Chat => "chatcmpl" }),
        "object": route.object(asked.stream),
        "created": now(),
        "model": asked.model,
    });
    let usage = move |tokens: usize| json!({ "prompt_tokens": prompt_tokens, "completion_tokens": tokens, "total_tokens": prompt_tokens + tokens });
    let (model, served) = (asked.model.clone(), generation.version);
    let name = match route {
        Route::Completions => "completions",
        Route::Chat => "chat/completions",
    };
    if !asked.stream {
        let (text, summary) = generation.collect().await?;
        log_done(log, name, &model, served, &summary);
        let mut out = head;
        out["choices"] = json!([route.choice(&text, Some(summary.finish.name()), false)]);
        out["usage"] = usage(summary.tokens);
        return Ok(Json(out).into_response());
    }
    let mut first = true;
    let include_usage = asked.include_usage;
    let convert: Convert = Box::new(move |event| {
        let data = |chunk: Value| SseEvent::default().data(chunk.to_string());
        let mut chunk = head.clone();
        let (mut choice, tokens) = match event {
            Event::Text(text) => (route.choice(&text, None, true), None),
            Event::Done(summary) => (
                {
                    log_done(log, name, &model, served, &summary);
                    route.choice("", Some(summary.finish.name()), true)
                },
                Some(summary.tokens),
            ),
            Event::Failed(e) => return vec![data(OpenAiError::from(e).body())],
            Event::Started { .. } => return Vec::new(),
        };
        if route == Route::Chat && std::mem::take(&mut first) {
            choice["delta"]["role"] = json!("assistant");
        }
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk["choices"] = json!([choice]);
        let mut out = vec![data(chunk)];
        // With include_usage, one more chunk: no choices, the request's usage.
        if let (Some(tokens), true) = (tokens, include_usage) {
            let mut last = head.clone();
            last["choices"] = json!([]);
            last["usage"] = usage(tokens);
            out.push(data(last));
        }
        out
    });
    Ok(sse(generation, convert, Some("[DONE]")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn errors_take_openai_shape() {
        let e = OpenAiError::from(ServeError::NoModel("gpt".into()));
        let body = e.body();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "model_not_found");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        let e = OpenAiError::from(ParamError::new("top_p", "top_p must be a number"));
        assert_eq!(e.body()["error"]["param"], "top_p");
        let e = OpenAiError::from(ServeError::Compute("x".into()));
        assert_eq!(e.body()["error"]["type"], "server_error");
    }

    #[test]
    fn what_this_server_does_not_do_is_refused_by_name() {
        for (body, param) in [
            (json!({}), "model"),
            (json!({"model": "m", "n": 2}), "n"),
            (json!({"model": "m", "logprobs": 3}), "logprobs"),
            (
                json!({"model": "m", "presence_penalty": 0.5}),
                "presence_penalty",
            ),
            (json!({"model": "m", "logit_bias": {"1": 5}}), "logit_bias"),
            (json!({"model": "m", "stream": "yes"}), "stream"),
            (
                json!({"model": "m", "stream_options": {"include_usage": true}}),
                "stream_options",
            ),
        ] {
            assert_eq!(
                asked(&obj(body.clone())).err().unwrap().param,
                param,
                "{body}"
            );
        }
        let a = asked(&obj(
            json!({"model": "shakespeare@production", "stream": true}),
        ))
        .unwrap();
        assert_eq!(
            (a.model.as_str(), a.version.as_deref(), a.stream),
            ("shakespeare", Some("production"), true)
        );
    }

    #[test]
    fn prompts_come_from_prompt_or_messages() {
        assert_eq!(
            completion_prompt(&obj(json!({"prompt": ["ROMEO:"]}))).unwrap(),
            "ROMEO:"
        );
        assert_eq!(
            completion_prompt(&obj(json!({"prompt": [1, 2]})))
                .unwrap_err()
                .param,
            "prompt"
        );
        assert_eq!(
            completion_prompt(&obj(json!({"prompt": "a", "echo": true})))
                .unwrap_err()
                .param,
            "echo"
        );
        assert_eq!(
            completion_prompt(&obj(json!({"prompt": "a", "tempreture": 1})))
                .unwrap_err()
                .param,
            "tempreture"
        );
        let chat = obj(json!({"messages": [
            {"role": "system", "content": "A play."},
            {"role": "user", "content": [{"type": "text", "text": "ROMEO:"}]}
        ]}));
        let messages = chat_prompt(&chat).unwrap();
        assert_eq!(
            (messages[0].role.as_str(), messages[1].content.as_str()),
            ("system", "ROMEO:")
        );
        for bad in [
            json!({"messages": []}),
            json!({"messages": [{"role": "cat", "content": "x"}]}),
            json!({"messages": [{"role": "user"}]}),
        ] {
            assert_eq!(chat_prompt(&obj(bad)).unwrap_err().param, "messages");
        }
    }
}
