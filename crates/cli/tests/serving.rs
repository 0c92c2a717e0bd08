//! `modelforge serve` on a real socket (port 0), spoken to by a real HTTP client.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Sandbox, client_report, digits_spec};

/// A running server; killed on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
    pub(crate) grpc: String,
    /// What the server wrote to stderr so far (its JSON log lines).
    pub(crate) logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    pub(crate) fn start(sb: &Sandbox) -> Server {
        Server::start_with(sb, &[])
    }

    /// Starts `modelforge serve` with the test settings and `extra` flags (which replace
    /// the settings they name).
    pub(crate) fn start_with(sb: &Sandbox, extra: &[&str]) -> Server {
        let defaults = [
            ("--http", "127.0.0.1:0"),
            ("--grpc", "127.0.0.1:0"),
            ("--threads", "1"),
            ("--poll", "0.2"),
            ("--max-queue-delay-us", "2000"),
            ("--max-body-mib", "1"),
            ("--token", "s3cret"),
        ];
        let mut child = sb
            .command(&["serve"])
            .args(
                defaults
                    .iter()
                    .filter(|(flag, _)| !extra.contains(flag))
                    .flat_map(|(flag, value)| [flag, value]),
            )
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut base = String::new();
        let grpc = loop {
            let line = lines.next().expect("server printed its addresses").unwrap();
            if let Some(rest) = line.strip_prefix("REST on ") {
                base = rest.split_whitespace().next().unwrap().to_string();
            }
            if let Some(rest) = line.strip_prefix("gRPC on ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            base,
            grpc,
            logs,
        }
    }

    /// The Prometheus page, as text.
    pub(crate) fn metrics_page(&self) -> String {
        ureq::get(format!("{}/metrics", self.base))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    pub(crate) fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        self.call_as(method, path, body, None)
    }

    fn call_as(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}")).unwrap_or_default();
        self.send(
            method,
            path,
            &[("authorization", auth.as_str())],
            body.map(str::as_bytes),
        )
    }

    /// Sends a request with extra headers and any body bytes; returns status and JSON body.
    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}{path}", self.base);
        let mut response = match (method, body) {
            ("GET", _) => headers
                .iter()
                .fold(agent.get(&url), |r, (k, v)| r.header(*k, *v))
                .call(),
            (_, Some(b)) => headers
                .iter()
                .fold(agent.post(&url), |r, (k, v)| r.header(*k, *v))
                .send(b),
            _ => headers
                .iter()
                .fold(agent.post(&url), |r, (k, v)| r.header(*k, *v))
                .send_empty(),
        }
        .unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sends only the head of a POST announcing `length` body bytes and reads the answer.
    pub(crate) fn head_only(&self, path: &str, length: usize) -> (u16, Value) {
        use std::io::{Read, Write};
        let address = self.base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
             content-length: {length}\r\n\r\n"
        )
        .unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        let (head_end, body_length) = loop {
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "the server closed without answering");
            answer.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_string)
                    })
                    .expect("the answer has a content-length")
                    .parse::<usize>()
                    .unwrap();
                break (end + 4, length);
            }
        };
        while answer.len() < head_end + body_length {
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "the server closed mid-answer");
            answer.extend_from_slice(&chunk[..n]);
        }
        let status = String::from_utf8_lossy(&answer[9..12]).parse().unwrap();
        (
            status,
            serde_json::from_slice(&answer[head_end..]).unwrap_or(Value::Null),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn first_row() -> (Vec<f64>, u64) {
    digit_rows(1).remove(0)
}

/// The first `n` digits rows: 64 pixel values and the label.
pub(crate) fn digit_rows(n: usize) -> Vec<(Vec<f64>, u64)> {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(crate::common::data_dir().join("tabular/digits.csv.gz")).unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    text.lines()
        .take(n)
        .map(|line| {
            let row: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
            (row[..64].to_vec(), row[64] as u64)
        })
        .collect()
}

/// A sandbox whose registry holds the digits model trained for `epochs` (gate at
/// `gate_min`), and a server on it.
pub(crate) fn published_digits(gate_min: f64, epochs: usize) -> (Sandbox, Server) {
    let sb = Sandbox::new();
    sb.write(
        "spec.toml",
        digits_spec(&sb, gate_min).replace("epochs = 20", &format!("epochs = {epochs}")),
    );
    sb.ok(&["run", "--no-serve", "spec.toml", "--threads", "1"]);
    let server = Server::start(&sb);
    (sb, server)
}

pub(crate) fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rest_protocols_statistics_metrics_and_repository() {
    let (_sb, server) = published_digits(0.9, 8);

    assert_eq!(server.call("GET", "/v2/health/live", None).0, 200);
    assert_eq!(server.call("GET", "/v2/health/ready", None).0, 200);
    let (status, meta) = server.call("GET", "/v2/models/digits", None);
    assert_eq!(status, 200);
    assert_eq!(
        meta["inputs"][0],
        json!({ "name": "pixels", "datatype": "FP32", "shape": [-1, 64] })
    );
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, 10]));
    assert_eq!(
        server
            .call("GET", "/v2/models/digits/versions/1/ready", None)
            .0,
        200
    );
    assert_eq!(
        server
            .call("GET", "/v2/models/digits/versions/production/ready", None)
            .0,
        200
    );

    // Concurrent V2 requests are answered correctly (and batched by the queue).
    let (row, label) = first_row();
    let body = json!({ "id": "r1", "inputs": [{ "name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row }] }).to_string();
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| server.call("POST", "/v2/models/digits/infer", Some(&body))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, out) in &answers {
        assert_eq!(*status, 200, "{out}");
        assert_eq!(out["id"], "r1");
        assert_eq!(out["outputs"][0]["shape"], json!([1, 10]));
        let logits: Vec<f64> = out["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let best = (0..10)
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap();
        assert_eq!(best as u64, label);
    }
    assert_eq!(
        answers[0].1, answers[5].1,
        "every caller gets the same answer"
    );

    // The binary tensor data extension (what tritonclient's HTTP client sends by default).
    let header = json!({
        "inputs": [{ "name": "pixels", "shape": [1, 64], "datatype": "FP32", "parameters": { "binary_data_size": 256 } }],
        "outputs": [{ "name": "logits", "parameters": { "binary_data": true } }],
    })
    .to_string();
    let mut request = header.clone().into_bytes();
    request.extend(row.iter().flat_map(|v| (*v as f32).to_le_bytes()));
    let mut response = ureq::post(format!("{}/v2/models/digits/infer", server.base))
        .header("Inference-Header-Content-Length", header.len().to_string())
        .content_type("application/octet-stream")
        .send(&request[..])
        .unwrap();
    let json_len: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.body_mut().read_to_vec().unwrap();
    let head: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 40);
    let binary: Vec<f64> = bytes[json_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    let json_logits: Vec<f64> = answers[0].1["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(binary, json_logits, "binary and JSON outputs agree");

    // TF-Serving REST, row and columnar.
    let (status, tf) = server.call(
        "POST",
        "/v1/models/digits:predict",
        Some(&json!({ "instances": [row, row] }).to_string()),
    );
    assert_eq!(status, 200, "{tf}");
    assert_eq!(tf["predictions"].as_array().unwrap().len(), 2);
    let (status, tf) = server.call(
        "POST",
        "/v1/models/digits/labels/production:predict",
        Some(&json!({ "inputs": [row] }).to_string()),
    );
    assert_eq!(status, 200, "{tf}");
    assert_eq!(tf["outputs"][0].as_array().unwrap().len(), 10);
    let (status, tf) = server.call("GET", "/v1/models/digits", None);
    assert_eq!(
        (status, tf["model_version_status"][0]["state"].clone()),
        (200, json!("AVAILABLE"))
    );

    // Statistics of one version (by number or alias), of one model, of all.
    let (status, one) = server.call("GET", "/v2/models/digits/versions/production/stats", None);
    assert_eq!(
        (status, one["model_stats"][0]["version"].clone()),
        (200, json!("1")),
        "{one}"
    );
    assert_eq!(
        server
            .call("GET", "/v2/models/digits/versions/9/stats", None)
            .0,
        404
    );
    let all = server.call("GET", "/v2/models/stats", None).1;
    assert_eq!(all["model_stats"].as_array().unwrap().len(), 1, "{all}");
    let stats = server.call("GET", "/v2/models/digits/stats", None).1;
    // Seven V2 requests of one sample and two TF-Serving requests (2 and 1 samples).
    assert_eq!(stats["model_stats"][0]["inference_count"], 10, "{stats}");
    assert_eq!(
        stats["model_stats"][0]["inference_stats"]["success"]["count"], 9,
        "{stats}"
    );

    // Prometheus metrics count the same requests.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(format!("{}/metrics", server.base))
        .call()
        .unwrap();
    let metrics = response.body_mut().read_to_string().unwrap();
    assert!(
        metrics.contains(
            "modelforge_requests_total{model=\"digits\",version=\"1\",outcome=\"success\"} 9"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "modelforge_request_duration_seconds_count{model=\"digits\",version=\"1\"} 9"
        ),
        "{metrics}"
    );

    // Repository API: load/unload need the bearer token; unload, then load again.
    let (status, err) = server.call("POST", "/v2/repository/models/digits/unload", None);
    assert_eq!(status, 401, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("bearer token"),
        "{err}"
    );
    let wrong = server.call_as(
        "POST",
        "/v2/repository/models/digits/unload",
        None,
        Some("guess"),
    );
    assert_eq!(wrong.0, 401);
    let unload = server.call_as(
        "POST",
        "/v2/repository/models/digits/unload",
        None,
        Some("s3cret"),
    );
    assert_eq!(unload.0, 200);
    assert_eq!(server.call("GET", "/v2/models/digits/ready", None).0, 404);
    let load = server.call_as(
        "POST",
        "/v2/repository/models/digits/load",
        None,
        Some("s3cret"),
    );
    assert_eq!(load.0, 200);
    assert_eq!(server.call("GET", "/v2/models/digits/ready", None).0, 200);
}

pub(crate) fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Starts `modelforge run spec.toml` on free ports and reads what it prints until it
/// serves: the process, its REST base URL and the lines it printed.
pub(crate) fn run_until_serving(sb: &Sandbox) -> (Child, String, String) {
    let mut child = sb
        .command(&[
            "run",
            "spec.toml",
            "--threads",
            "2",
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut base = String::new();
    while let Some(Ok(line)) = lines.next() {
        if let Some(rest) = line.strip_prefix("REST on ") {
            base = rest.split_whitespace().next().unwrap().to_string();
        }
        let done = line.starts_with("serving until");
        seen.push(line);
        if done {
            break;
        }
    }
    (child, base, seen.join("\n"))
}

/// SIGTERM stops a serving process cleanly.
pub(crate) fn terminate(mut child: Child) {
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn run_ends_by_serving_and_answering_one_prediction() {
    let sb = Sandbox::new();
    sb.write(
        "spec.toml",
        digits_spec(&sb, 0.5).replace("epochs = 20", "epochs = 3"),
    );
    let (child, base, text) = run_until_serving(&sb);
    assert!(text.contains("published digits version 1"), "{text}");
    assert!(
        text.contains("prediction for the first test example: class"),
        "{text}"
    );
    assert!(
        text.contains("try: curl -X POST http://127.0.0.1:"),
        "{text}"
    );
    // The printed curl line's request file really works against the running server.
    let request = sb
        .entries("runs")
        .into_iter()
        .next()
        .map(|r| sb.path().join("runs").join(r).join("request.json"))
        .unwrap();
    let body = std::fs::read_to_string(request).unwrap();
    let mut answer = ureq::post(format!("{base}/v2/models/digits/infer"))
        .send(&body)
        .unwrap();
    let answer: Value = serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(answer["model_version"], "1");
    terminate(child);
}

#[test]
fn perf_analyzer_runs_unchanged_over_http_and_grpc() {
    if std::env::var("MODELFORGE_PERF").as_deref() == Ok("0") {
        eprintln!("MODELFORGE_PERF=0: perf_analyzer was not run");
        return;
    }
    // perf_analyzer ships in the tritonclient 2.48 wheel; it links to the CUDA runtime
    // (from its wheel) even against a CPU server, and to libb64 (scripts/system-deps.sh perf).
    let python = crate::common::python_in(
        ".venv-perf",
        &[
            "tritonclient[http,grpc]==2.48.0",
            "nvidia-cuda-runtime-cu12",
        ],
    );
    let bin = std::path::Path::new(&python).with_file_name("perf_analyzer");
    let cudart = std::process::Command::new(&python)
        .args([
            "-c",
            "import nvidia.cuda_runtime as m; print(list(m.__path__)[0] + '/lib')",
        ])
        .output()
        .unwrap();
    let cudart = String::from_utf8(cudart.stdout).unwrap().trim().to_string();
    let (_sb, server) = published_digits(0.5, 2);
    for (protocol, url) in [
        (
            "http",
            server.base.trim_start_matches("http://").to_string(),
        ),
        ("grpc", server.grpc.clone()),
    ] {
        let out = std::process::Command::new(&bin)
            .args(["-m", "digits", "-u", &url, "-i", protocol])
            .args([
                "--concurrency-range",
                "2:2",
                "--measurement-mode",
                "count_windows",
            ])
            .args([
                "--measurement-request-count",
                "300",
                "-s",
                "99",
                "--max-trials",
                "4",
            ])
            .env("LD_LIBRARY_PATH", &cudart)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "perf_analyzer over {protocol}:\n{text}"
        );
        // It read the server's statistics (their compute counts agree) and measured.
        assert!(
            text.contains("Server:") && text.contains("compute infer"),
            "{text}"
        );
        assert!(text.contains("Concurrency: 2, throughput:"), "{text}");
    }
}

#[test]
fn tritonclient_http_works_unchanged() {
    let python = crate::common::python(&["tritonclient[http,grpc]", "numpy"]);

    let (sb, server) = published_digits(0.5, 3);
    let (row, _) = first_row();
    sb.write("row.json", serde_json::to_string(&row).unwrap());
    let body = json!({ "inputs": [{ "name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row }] }).to_string();
    let expected = server
        .call("POST", "/v2/models/digits/infer", Some(&body))
        .1["outputs"][0]["data"]
        .clone();

    let row_file = sb.path().join("row.json");
    let client = |script: &str, addr: &str| -> Value {
        let report = client_report(
            &python,
            script,
            &[addr, "digits", row_file.to_str().unwrap()],
        );
        let flags = [&report["live"], &report["ready"], &report["model_ready"]];
        assert_eq!(flags, [&json!(true); 3], "{script}: {report}");
        report
    };
    let want = floats(&expected);
    let report = client("triton_http.py", server.base.trim_start_matches("http://"));
    assert_eq!(report["metadata"]["inputs"][0]["shape"], json!([-1, 64]));
    assert_eq!(report["max_batch_size"], 64);
    for kind in ["binary", "json"] {
        assert_close(&floats(&report["outputs"][kind][0]), &want, kind);
    }
    assert_eq!(report["inference_count"], 3);

    // The same through tritonclient.grpc: raw tensors, typed errors, streaming, health.
    let report = client("triton_grpc.py", &server.grpc);
    assert_eq!(report["metadata_shape"], json!([-1, 64]));
    assert_eq!(report["config"]["max_batch_size"], 64);
    assert_eq!(report["config"]["input_dims"], json!([64]));
    assert_eq!(report["config"]["input_type"], "TYPE_FP32");
    assert_eq!(report["health"], "SERVING");
    assert_eq!(report["missing_model_code"], "StatusCode.NOT_FOUND");
    assert_eq!(report["bad_shape_code"], "StatusCode.INVALID_ARGUMENT");
    for kind in ["unary", "stream"] {
        assert_close(&floats(&report[kind][0]), &want, kind);
    }
    assert!(
        report["index"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "digits:1:READY"),
        "{report}"
    );
}

/// The numbers of a JSON array.
fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

/// Same length and equal within 1e-6 (relative).
fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-6 * w.abs().max(1.0),
            "{what}: {got:?} vs {want:?}"
        );
    }
}

#[test]
fn batched_results_equal_unbatched_results_exactly() {
    let (_sb, server) = published_digits(0.5, 2);
    let infer = |row: &[f64]| {
        let body = json!({ "inputs": [{ "name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row }] });
        let (status, out) = server.call("POST", "/v2/models/digits/infer", Some(&body.to_string()));
        assert_eq!(status, 200, "{out}");
        out["outputs"][0]["data"].clone()
    };
    let rows = digit_rows(24);
    // One at a time: every request is a batch of one.
    let alone: Vec<Value> = rows.iter().map(|(row, _)| infer(row)).collect();
    // All at once, several times: the queue batches them.
    for _ in 0..3 {
        let together: Vec<Value> = std::thread::scope(|s| {
            let handles: Vec<_> = rows.iter().map(|(row, _)| s.spawn(|| infer(row))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            together, alone,
            "batched outputs differ from unbatched ones"
        );
    }
    let stats = server.call("GET", "/v2/models/digits/stats", None).1;
    let largest = stats["model_stats"][0]["batch_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["batch_size"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(largest > 1, "no batch formed: {stats}");
}

/// Publishes a broken copy of version `from` as version `to` (one weight byte flipped), the
/// way a half-written or tampered upload would look.
fn publish_broken(sb: &Sandbox, from: u64, to: u64) {
    let models = sb.path().join("models/digits");
    copy_dir(&models.join(from.to_string()), &models.join(".broken"));
    let weights = models.join(".broken/weights.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&weights, bytes).unwrap();
    std::fs::rename(models.join(".broken"), models.join(to.to_string())).unwrap();
}

/// Four clients ask the digits model for `row` over V2 REST while `meanwhile` runs, and half
/// a second after; asserts that no request failed and returns how many there were and the
/// versions that answered.
pub fn under_load(
    server: &Server,
    meanwhile: impl FnOnce(),
) -> (usize, std::collections::BTreeSet<String>) {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (row, _) = first_row();
    let body = json!({ "inputs": [{ "name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row }] }).to_string();
    let stop = AtomicBool::new(false);
    let answers: Mutex<Vec<(u16, Value)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let (status, out) = server.call("POST", "/v2/models/digits/infer", Some(&body));
                    answers
                        .lock()
                        .unwrap()
                        .push((status, out["model_version"].clone()));
                }
            });
        }
        meanwhile();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
    });
    let answers = answers.into_inner().unwrap();
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        answers.len()
    );
    let served = answers
        .iter()
        .map(|(_, v)| v.as_str().unwrap().to_string())
        .collect();
    (answers.len(), served)
}

/// Waits until the repository index lists `version` as UNAVAILABLE with a reason that
/// contains `says`.
pub fn wait_unavailable(server: &Server, version: &str, says: &str) {
    wait_for(&format!("version {version} unavailable"), || {
        let index = server.call("POST", "/v2/repository/index", None).1;
        index.as_array().unwrap().iter().any(|e| {
            e["version"] == version
                && e["state"] == "UNAVAILABLE"
                && e["reason"].as_str().unwrap().contains(says)
        })
    })
}

#[test]
fn hot_swap_under_load_loses_no_request_and_never_serves_a_broken_version() {
    let (sb, server) = published_digits(0.5, 2);
    let (requests, served) = under_load(&server, || {
        // New versions published while the clients run: each is loaded, warmed and takes
        // over; the one it replaces finishes what it has in flight.
        for version in 2..=4 {
            sb.retrain();
            wait_for(&format!("version {version}"), || {
                server.call("GET", "/v2/models/digits", None).1["versions"]
                    == json!([version.to_string()])
            });
        }
        // A broken newer version is listed UNAVAILABLE with its reason; 4 keeps serving.
        publish_broken(&sb, 4, 5);
        wait_unavailable(&server, "5", "checksum");
    });
    assert!(served.contains("4"), "version 4 never answered: {served:?}");
    assert!(!served.contains("5"), "the broken version answered");
    // Listed but not ready: 503, as Triton answers for an UNAVAILABLE version.
    assert_eq!(
        server
            .call("GET", "/v2/models/digits/versions/5/ready", None)
            .0,
        503
    );
    eprintln!("{requests} requests across three swaps and a broken publish, none failed");
}

#[test]
fn version_policies_serve_all_or_specific_versions() {
    let (sb, _) = published_digits(0.5, 1);
    for _ in 0..2 {
        sb.retrain();
    }
    let all = Server::start_with(&sb, &["--version-policy", "all"]);
    assert_eq!(
        all.call("GET", "/v2/models/digits", None).1["versions"],
        json!(["1", "2", "3"])
    );
    assert_eq!(
        all.call("GET", "/v2/models/digits/config", None).1["version_policy"],
        json!({ "all": {} })
    );
    // A per-model policy naming a version that does not exist lists it as unavailable.
    let specific = Server::start_with(&sb, &["--version-policy", "digits=specific:1,3,7"]);
    assert_eq!(
        specific.call("GET", "/v2/models/digits", None).1["versions"],
        json!(["1", "3"])
    );
    assert_eq!(
        specific
            .call("GET", "/v2/models/digits/versions/2/ready", None)
            .0,
        404
    );
    let index = specific.call("POST", "/v2/repository/index", None).1;
    let seven = index
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["version"] == "7")
        .unwrap()
        .clone();
    assert_eq!(seven["state"], "UNAVAILABLE", "{seven}");
    assert!(
        seven["reason"]
            .as_str()
            .unwrap()
            .contains("not in the registry"),
        "{seven}"
    );
    assert_eq!(
        specific.call("GET", "/v2/models/digits/config", None).1["version_policy"],
        json!({ "specific": { "versions": [1, 3, 7] } })
    );
    // A policy that does not parse stops the server before it starts.
    let out = sb.run(&["serve", "--version-policy", "newest"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use latest:N, all or specific:1,3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
