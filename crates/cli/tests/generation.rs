//! Language models behind `modelforge serve` on real sockets: the real `openai` client
//! (completions, chat, streaming, seeds, stop strings, errors), Triton's generate
//! extension, cancellation by disconnect, a full queue, and `run` ending in a generation.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use serde_json::{Value, json};

use crate::common::{Sandbox, client_report};
use crate::language_model::example;
use crate::serving::{Server, run_until_serving, terminate, wait_for};

/// The Shakespeare example trained for a few steps and published, then served with
/// `extra` flags.
fn served_language_model(extra: &[&str]) -> (Sandbox, Server) {
    serve(published_language_model(), extra)
}

/// The Shakespeare example trained for a few steps and published.
pub(crate) fn published_language_model() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("spec.toml", example("modelforge.toml", 30));
    sb.ok(&["run", "--no-serve", "spec.toml", "--threads", "2"]);
    sb
}

/// Serves a sandbox's registry with the test settings and `extra` flags.
fn serve(sb: Sandbox, extra: &[&str]) -> (Sandbox, Server) {
    let mut flags = vec!["--threads", "2"];
    flags.extend(extra);
    let server = Server::start_with(&sb, &flags);
    (sb, server)
}

/// A request's JSON body as the client sent it (a string body of JSON).
fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    server.call("POST", path, Some(&body.to_string()))
}

/// A streaming request on its own connection: the socket, after the response head.
fn open_stream(server: &Server, path: &str, body: &Value) -> BufReader<TcpStream> {
    let address = server.base.trim_start_matches("http://");
    let mut socket = TcpStream::connect(address).unwrap();
    let body = body.to_string();
    write!(
        socket,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    BufReader::new(socket)
}

/// The next `data:` payload of a server-sent event stream (None at its end).
fn next_event(stream: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).unwrap() == 0 {
            return None;
        }
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            return Some(data.to_string());
        }
    }
}

/// A counter of the Prometheus page for the served model.
fn metric(server: &Server, name: &str) -> f64 {
    let page = server.metrics_page();
    page.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn the_openai_client_completes_chats_and_streams_unchanged() {
    let python = crate::common::python(&["openai"]);
    let (sb, server) = served_language_model(&[]);
    let r = client_report(
        &python,
        "openai_client.py",
        &[&server.base, "shakespeare-gpt"],
    );
    assert_eq!(r["models"], json!(["shakespeare-gpt"]));

    // Greedy decoding equals `modelforge generate` token for token, whole or streamed.
    let cli = sb.ok(&[
        "generate",
        "shakespeare-gpt",
        "--prompt",
        "ROMEO:",
        "--max-tokens",
        "40",
        "--temperature",
        "0",
        "--threads",
        "2",
    ]);
    let greedy = r["greedy"]["text"].as_str().unwrap();
    assert_eq!(format!("ROMEO:{greedy}\n"), cli);
    assert_eq!(r["greedy"]["finish"], "length");
    assert_eq!(r["greedy"]["object"], "text_completion");
    let usage = json!({"prompt_tokens": 6, "completion_tokens": 40, "total_tokens": 46});
    assert_eq!(r["greedy"]["usage"], usage);
    assert_eq!(r["greedy_stream"]["text"], greedy);
    assert_eq!(r["greedy_stream"]["usage"], usage);
    assert_eq!(r["greedy_stream"]["finish"], "length");
    assert!(r["greedy_stream"]["chunks"].as_u64().unwrap() > 10, "{r}");

    // A seed gives the same text alone or batched with other requests.
    let alone = &r["seeded"]["alone"];
    let together = r["seeded"]["together"].as_array().unwrap();
    assert_eq!(alone.as_str().unwrap().chars().count(), 30);
    assert!(together[..3].iter().all(|t| t == alone), "{r}");
    assert_eq!(together[3], together[4]);
    assert_ne!(together[3], *alone);

    // A stop string ends the text before it.
    let stop = r["stopped"]["stop"].as_str().unwrap();
    let cut = alone.as_str().unwrap().find(stop).unwrap();
    assert_eq!(r["stopped"]["text"], alone.as_str().unwrap()[..cut]);
    assert_eq!(r["stopped"]["finish"], "stop");

    // Chat, through KServe's /openai prefix: one assistant message, streamed the same.
    assert_eq!(r["chat"]["role"], "assistant");
    assert_eq!(r["chat"]["object"], "chat.completion");
    assert_eq!(r["chat_stream"]["content"], r["chat"]["content"]);
    assert_eq!(r["chat_stream"]["roles"], json!(["assistant"]));
    assert_eq!(r["chat_stream"]["finish"], "length");

    // Bad requests: OpenAI-shaped errors that say what to send.
    let error = |name: &str| {
        let e = &r["errors"][name];
        let body = match e["body"]["error"].is_object() {
            true => &e["body"]["error"],
            false => &e["body"],
        };
        (e["status"].as_u64().unwrap(), body.clone())
    };
    let (status, body) = error("top_p");
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("(0, 1]"),
        "{body}"
    );
    assert_eq!(body["type"], "invalid_request_error");
    let (status, body) = error("max_tokens");
    assert_eq!((status, body["param"].as_str()), (400, Some("max_tokens")));
    let (status, body) = error("n");
    assert_eq!((status, body["param"].as_str()), (400, Some("n")));
    let (status, body) = error("model");
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("model_not_found"))
    );
    let (status, body) = error("prompt");
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not in the tokenizer's vocabulary"),
        "{body}"
    );
    // The server kept serving through all of it.
    assert_eq!(server.call("GET", "/v2/health/ready", None).0, 200);
}

#[test]
fn triton_generate_answers_streams_and_refuses_each_bad_parameter() {
    let (_sb, server) = served_language_model(&["--log-requests"]);
    let request =
        json!({"text_input": "ROMEO:", "parameters": {"max_tokens": 12, "temperature": 0}});
    let (status, whole) = post(&server, "/v2/models/shakespeare-gpt/generate", &request);
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["model_name"], "shakespeare-gpt");
    assert_eq!(whole["model_version"], "1");
    assert_eq!(whole["finish_reason"], "length");
    assert_eq!(whole["completion_tokens"], 12);
    let text = whole["text_output"].as_str().unwrap();
    assert_eq!(text.chars().count(), 12);

    // The same streamed: one event per piece, the last with the figures.
    let mut stream = open_stream(
        &server,
        "/v2/models/shakespeare-gpt/versions/1/generate_stream",
        &request,
    );
    let mut pieces = String::new();
    let mut last = Value::Null;
    while let Some(data) = next_event(&mut stream) {
        let event: Value = serde_json::from_str(&data).unwrap();
        pieces.push_str(event["text_output"].as_str().unwrap());
        last = event;
        if last.get("finish_reason").is_some() {
            break;
        }
    }
    assert_eq!(pieces, text);
    assert_eq!(last["finish_reason"], "length");

    // The model describes itself as a generator.
    let (_, meta) = server.call("GET", "/v2/models/shakespeare-gpt", None);
    assert_eq!(meta["inputs"][0]["name"], "text_input");
    assert_eq!(meta["outputs"][0]["datatype"], "BYTES");
    let (_, config) = server.call("GET", "/v2/models/shakespeare-gpt/config", None);
    assert_eq!(config["model_transaction_policy"]["decoupled"], true);

    // Every bad parameter gets a 400 naming it; the wrong route says which to use.
    for (body, says) in [
        (json!({"parameters": {}}), "text_input"),
        (json!({"text_input": 5}), "text_input"),
        (
            json!({"text_input": "ROMEO:", "parameters": {"max_tokens": -1}}),
            "max_tokens",
        ),
        (
            json!({"text_input": "ROMEO:", "parameters": {"temperature": -0.5}}),
            "temperature",
        ),
        (
            json!({"text_input": "ROMEO:", "parameters": {"temperature": "warm"}}),
            "temperature",
        ),
        (
            json!({"text_input": "ROMEO:", "parameters": {"top_p": 1.5}}),
            "top_p",
        ),
        (
            json!({"text_input": "ROMEO:", "parameters": {"top_k": "all"}}),
            "top_k",
        ),
        (
            json!({"text_input": "ROMEO:", "parameters": {"seed": "x"}}),
            "seed",
        ),
        (
            json!({"text_input": "ROMEO:", "parameters": {"stop": [""]}}),
            "stop",
        ),
        (
            json!({"text_input": "ROMEO:", "parameters": {"beams": 4}}),
            "beams",
        ),
        (json!({"text_input": ""}), "empty"),
        (json!({"text_input": "x".repeat(65)}), "shorten the prompt"),
    ] {
        let (status, answer) = post(&server, "/v2/models/shakespeare-gpt/generate", &body);
        let message = answer["error"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(message.contains(says), "{body}: {message}");
    }
    let (status, answer) = server.call("POST", "/v2/models/shakespeare-gpt/generate", Some("{"));
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = post(
        &server,
        "/v2/models/shakespeare-gpt/infer",
        &json!({"inputs": []}),
    );
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("/generate"),
        "{answer}"
    );
    let (status, _) = post(&server, "/v2/models/nothing/generate", &request);
    assert_eq!(status, 404);
    assert_eq!(metric(&server, "modelforge_generated_tokens_total"), 24.0);
    // --log-requests: one line per generation with its figures.
    let logged: Vec<Value> = server
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["msg"] == "generation")
        .collect();
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert_eq!(logged[1]["route"], "generate_stream");
    assert_eq!(logged[1]["completion_tokens"], 12);
    assert!(logged[1]["ttft_ms"].as_f64().unwrap() > 0.0, "{logged:?}");
    assert!(logged[1]["tpot_ms"].as_f64().unwrap() > 0.0, "{logged:?}");
}

#[test]
fn a_client_that_disconnects_is_cancelled_and_a_full_queue_is_refused() {
    let (_sb, server) = served_language_model(&["--max-sequences", "1", "--max-waiting", "1"]);
    let endless = json!({"text_input": "ROMEO:", "parameters": {"max_tokens": 1000000}});
    let path = "/v2/models/shakespeare-gpt/generate_stream";
    let mut running = open_stream(&server, path, &endless);
    assert!(next_event(&mut running).is_some());
    // The one slot is taken: the next request waits, the one after is refused.
    let mut waiting = open_stream(&server, path, &endless);
    wait_for("a waiting request", || {
        metric(&server, "modelforge_sequences_waiting") == 1.0
    });
    let (status, answer) = post(&server, "/v2/models/shakespeare-gpt/generate", &endless);
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("retry later"),
        "{answer}"
    );
    // The client that goes away is cancelled; the waiting one takes its place.
    drop(running);
    wait_for("the cancellation", || {
        metric(&server, "modelforge_generations_cancelled_total") == 1.0
    });
    assert!(next_event(&mut waiting).is_some());
    let mut rest = [0u8; 256];
    assert!(waiting.get_mut().read(&mut rest).unwrap() > 0);
    drop(waiting);
    wait_for("the second cancellation", || {
        metric(&server, "modelforge_sequences_running") == 0.0
    });
    assert_eq!(
        metric(&server, "modelforge_generations_cancelled_total"),
        2.0
    );
}

#[test]
fn run_serves_a_language_model_and_answers_one_generation() {
    let sb = Sandbox::new();
    sb.write("spec.toml", example("modelforge.toml", 10));
    let (child, _, text) = run_until_serving(&sb);

    assert!(text.contains("generated from the held-out line"), "{text}");
    assert!(
        text.contains("try: curl -N -X POST http://127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("/generate_stream -d @"), "{text}");
    terminate(child);
}

#[test]
fn a_new_version_takes_new_requests_while_running_streams_finish_on_the_old_one() {
    let (sb, server) = served_language_model(&[]);
    let path = "/v2/models/shakespeare-gpt/generate_stream";
    let long = json!({"text_input": "ROMEO:", "parameters": {"max_tokens": 100000}});
    let mut old = open_stream(&server, path, &long);
    let version = |stream: &mut BufReader<TcpStream>| -> Value {
        let event: Value = serde_json::from_str(&next_event(stream).unwrap()).unwrap();
        event["model_version"].clone()
    };
    assert_eq!(version(&mut old), "1");
    sb.retrain();
    wait_for("version 2", || {
        server.call("GET", "/v2/models/shakespeare-gpt", None).1["versions"] == json!(["2"])
    });
    let short = json!({"text_input": "ROMEO:", "parameters": {"max_tokens": 5}});
    let (status, new) = post(&server, "/v2/models/shakespeare-gpt/generate", &short);
    assert_eq!((status, &new["model_version"]), (200, &json!("2")), "{new}");
    // The stream that started on version 1 goes on there.
    for _ in 0..20 {
        assert_eq!(version(&mut old), "1");
    }
}

#[test]
fn tritonclient_grpc_streams_a_generation_in_decoupled_mode() {
    let python = crate::common::python(&["tritonclient[http,grpc]", "numpy"]);
    let (_sb, server) = served_language_model(&[]);
    let r = client_report(
        &python,
        "triton_generate.py",
        &[&server.grpc, "shakespeare-gpt"],
    );
    let request =
        json!({"text_input": "ROMEO:", "parameters": {"max_tokens": 12, "temperature": 0}});
    let (_, rest) = post(&server, "/v2/models/shakespeare-gpt/generate", &request);
    let want = rest["text_output"].as_str().unwrap();
    // Streamed: the pieces make the text REST gives; only the last response is final.
    let streamed = r["streamed"].as_array().unwrap();
    let text: String = streamed
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, want);
    assert!(streamed.len() > 2, "{r}");
    let (last, rest_of) = streamed.split_last().unwrap();
    assert!(
        rest_of
            .iter()
            .all(|p| p["params"]["triton_final_response"] == false)
    );
    assert_eq!(last["params"]["triton_final_response"], true);
    assert_eq!(last["params"]["finish_reason"], "length");
    assert_eq!(last["params"]["completion_tokens"], 12);
    assert_eq!(last["version"], "1");
    // Not streamed: one final response with the whole text.
    assert_eq!(r["whole"].as_array().unwrap().len(), 1);
    assert_eq!(r["whole"][0]["text"], want);
    assert!(r["bad_setting"].as_str().unwrap().contains("(0, 1]"), "{r}");
    assert!(
        r["bad_parameter"].as_str().unwrap().contains("beams"),
        "{r}"
    );
}

#[test]
fn a_chat_template_in_the_version_formats_the_conversation() {
    let sb = published_language_model();
    // A tokenizer_config.json as Hugging Face models ship it, listed in the checksums.
    let version = sb.path().join("models/shakespeare-gpt/1");
    let template = "{% for message in messages %}{{ message['role'] | upper }}:\n{{ message['content'] }}\n{% endfor %}";
    let config = json!({ "chat_template": template }).to_string();
    std::fs::write(version.join("tokenizer_config.json"), &config).unwrap();
    let sum = std::process::Command::new("sha256sum")
        .arg(version.join("tokenizer_config.json"))
        .output()
        .unwrap();
    let sum = String::from_utf8(sum.stdout).unwrap();
    let mut sums = std::fs::read_to_string(version.join("checksums.sha256")).unwrap();
    sums.push_str(&format!(
        "{}  tokenizer_config.json\n",
        sum.split_whitespace().next().unwrap()
    ));
    std::fs::write(version.join("checksums.sha256"), sums).unwrap();
    let (_sb, server) = serve(sb, &[]);
    let chat = json!({
        "model": "shakespeare-gpt", "max_tokens": 10, "temperature": 0,
        "messages": [{"role": "user", "content": "ROMEO"}],
    });
    let (status, answer) = post(&server, "/v1/chat/completions", &chat);
    assert_eq!(status, 200, "{answer}");
    // The same as completing the rendered prompt.
    let plain = json!({"model": "shakespeare-gpt", "max_tokens": 10, "temperature": 0, "prompt": "USER:\nROMEO\n"});
    let (_, completion) = post(&server, "/v1/completions", &plain);
    assert_eq!(answer["usage"]["prompt_tokens"], 12);
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        completion["choices"][0]["text"]
    );
}
