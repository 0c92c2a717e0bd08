//! Malformed serving requests over REST and gRPC against the real server: each gets a 4xx
//! (or the matching gRPC code) with a message saying what is wrong, and the next good
//! request still succeeds.

use modelforge_server::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use modelforge_server::grpc::proto::infer_parameter::ParameterChoice;
use modelforge_server::grpc::proto::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use modelforge_server::grpc::proto::{
    InferParameter, InferTensorContents, ModelConfigRequest, ModelInferRequest,
    ModelMetadataRequest, RepositoryModelLoadRequest,
};
use serde_json::{Value, json};
use tonic::Code;

use crate::serving::{Server, first_row, published_digits};

/// A V2 request body with one input tensor (fields as given).
fn v2(name: &str, datatype: &str, shape: Value, data: Value) -> String {
    json!({ "inputs": [{ "name": name, "datatype": datatype, "shape": shape, "data": data }] })
        .to_string()
}

fn floats(n: usize) -> Value {
    json!(vec![0.5; n])
}

/// A REST case: request, expected status and a fragment of the `error` message.
struct Rest {
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    expect: &'static str,
}

fn post(path: &'static str, body: impl Into<Vec<u8>>, status: u16, expect: &'static str) -> Rest {
    Rest {
        method: "POST",
        path,
        headers: Vec::new(),
        body: body.into(),
        status,
        expect,
    }
}

/// A binary-extension request: JSON header, then raw bytes.
fn binary(header: Value, header_length: Option<&str>, raw: &[u8], expect: &'static str) -> Rest {
    let header = header.to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(raw);
    let length = header_length.map_or_else(|| header.len().to_string(), str::to_string);
    Rest {
        headers: vec![("inference-header-content-length", length)],
        ..post("/v2/models/digits/infer", body, 400, expect)
    }
}

fn rest_cases() -> Vec<Rest> {
    const INFER: &str = "/v2/models/digits/infer";
    let pixels = |shape: Value, data: Value| v2("pixels", "FP32", shape, data);
    let two = |a: &str, b: &str| {
        let t = |n: &str| json!({ "name": n, "datatype": "FP32", "shape": [1, 64], "data": vec![0.5; 64] });
        json!({ "inputs": [t(a), t(b)] }).to_string()
    };
    let raw_input = |size: usize, datatype: &str| json!({ "inputs": [{ "name": "pixels", "datatype": datatype, "shape": [1, 64], "parameters": { "binary_data_size": size } }] });
    vec![
        post(INFER, "{not json", 400, "not valid JSON"),
        post(INFER, vec![0xff, 0xfe, 0x00, 0x01], 400, "not valid JSON"),
        post(INFER, "", 400, "not valid JSON"),
        post(INFER, "[]", 400, "needs \"inputs\""),
        post(INFER, "{}", 400, "needs \"inputs\""),
        post(INFER, r#"{"inputs": {}}"#, 400, "needs \"inputs\""),
        post(INFER, r#"{"inputs": []}"#, 400, "the request has no input tensor; digits@1 takes one input \"pixels\" FP32 [batch, 64]"),
        post(INFER, two("pixels", "pixels"), 400, "input \"pixels\" is given twice"),
        post(INFER, two("pixels", "extra"), 400, "the request has 2 input tensors"),
        post(INFER, v2("image", "FP32", json!([1, 64]), floats(64)), 400, "digits@1 has no input \"image\""),
        post(INFER, v2("pixels", "BYTES", json!([1, 64]), floats(64)), 400, "input \"pixels\" has datatype BYTES; digits@1 takes"),
        post(INFER, v2("pixels", "INT64", json!([1, 64]), floats(64)), 400, "has datatype INT64"),
        post(INFER, v2("pixels", "", json!([1, 64]), floats(64)), 400, "input \"pixels\" has no datatype"),
        post(INFER, json!({ "inputs": [{ "name": "pixels", "datatype": "FP32", "data": [1] }] }).to_string(), 400, "\"shape\" must be a list of integers"),
        post(INFER, pixels(json!("1x64"), floats(64)), 400, "\"shape\" must be a list of integers"),
        post(INFER, pixels(json!([1.5, 64]), floats(64)), 400, "\"shape\" must be a list of integers"),
        post(INFER, pixels(json!([]), floats(64)), 400, "has an empty shape"),
        post(INFER, pixels(json!([-1, 64]), floats(64)), 400, "has a negative size in its shape [-1, 64]"),
        post(INFER, pixels(json!([1, 32]), floats(32)), 400, "input \"pixels\" has shape [1, 32]; digits@1 takes"),
        post(INFER, pixels(json!([64]), floats(64)), 400, "has shape [64]"),
        post(INFER, pixels(json!([1, 8, 8]), floats(64)), 400, "has shape [1, 8, 8]"),
        post(INFER, pixels(json!([0, 64]), json!([])), 400, "has a batch of 0 samples"),
        post(INFER, pixels(json!([1, 64]), floats(63)), 400, "has 63 values but its shape [1, 64] needs 64"),
        post(INFER, pixels(json!([2, 64]), floats(64)), 400, "has 64 values but its shape [2, 64] needs 128"),
        post(INFER, pixels(json!([4_294_967_296u64, 64]), floats(64)), 400, "needs 274877906944"),
        post(INFER, json!({ "inputs": [{ "name": "pixels", "datatype": "FP32", "shape": [1, 64] }] }).to_string(), 400, "input \"pixels\": the input has no \"data\" and no binary_data_size parameter"),
        post(INFER, pixels(json!([1, 64]), json!(vec!["a"; 64])), 400, "input \"pixels\": \"a\" is not FP32 data"),
        post(INFER, pixels(json!([1, 64]), json!([{ "x": 1 }])), 400, "{\"x\":1} is not FP32 data"),
        post(INFER, pixels(json!([1, 64]), json!(vec!["é".repeat(30); 64])), 400, "ééé… is not FP32 data"),
        post(
            INFER,
            json!({ "inputs": [{ "name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": vec![0.5; 64] }], "outputs": [{ "name": "probs" }] }).to_string(),
            400,
            "digits@1 has no output \"probs\"; its output is \"logits\"",
        ),
        binary(raw_input(256, "FP32"), Some("many"), &[0; 256], "Inference-Header-Content-Length is not a number"),
        binary(raw_input(256, "FP32"), Some("100000"), &[0; 256], "exceeds the body's"),
        binary(raw_input(256, "FP32"), None, &[0; 10], "binary_data_size 256 exceeds the 10 binary bytes sent"),
        binary(raw_input(256, "FP32"), None, &[0; 260], "4 binary bytes are not claimed by any input"),
        binary(raw_input(255, "FP32"), None, &[0; 255], "input \"pixels\": 255 bytes of FP32 data is not a whole number of 4-byte elements"),
        binary(raw_input(256, "BYTES"), None, &[0; 256], "input \"pixels\" has datatype BYTES; digits@1 takes"),
        binary(raw_input(256, "FP32"), Some("3"), &[0; 256], "not valid JSON"),
        post("/v2/models/nope/infer", pixels(json!([1, 64]), floats(64)), 404, "model \"nope\" is not in the repository"),
        post("/v2/models/digits/versions/9/infer", pixels(json!([1, 64]), floats(64)), 404, "no ready version \"9\""),
        post("/v2/models/digits/versions/staging/infer", pixels(json!([1, 64]), floats(64)), 404, "\"staging\""),
        Rest {
            method: "GET",
            ..post(INFER, "", 405, "GET")
        },
        Rest {
            method: "GET",
            ..post("/v2/nothing/here", "", 404, "no such endpoint")
        },
        Rest {
            method: "GET",
            ..post("/v2/models/nope", "", 404, "model \"nope\" is not in the repository")
        },
        post(
            INFER,
            json!({ "parameters": { "timeout": 1 }, "inputs": [{ "name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": vec![0.5; 64] }] }).to_string(),
            504,
            "deadline of",
        ),
        post(
            INFER,
            json!({ "parameters": { "timeout": "soon" }, "inputs": [{ "name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": vec![0.5; 64] }] }).to_string(),
            400,
            "parameters.timeout must be a whole number of microseconds",
        ),
        post("/v1/models/digits:predict", r#"{"rows": []}"#, 400, "the request needs \"instances\" (row format) or \"inputs\""),
        post("/v1/models/digits:predict", r#"{"instances": []}"#, 400, "no instances to predict"),
        post("/v1/models/digits:predict", json!({ "instances": [vec![0.5; 64], vec![0.5; 3]] }).to_string(), 400, "instance 1 has 3 values but instance 0 has 64"),
        post("/v1/models/digits:predict", json!({ "instances": [vec![0.5; 10]] }).to_string(), 400, "has shape [1, 10]; digits@1 takes"),
        post("/v1/models/digits:classify", json!({ "instances": [vec![0.5; 64]] }).to_string(), 404, "supports POST …:predict"),
        post("/v1/models/nope:predict", json!({ "instances": [vec![0.5; 64]] }).to_string(), 404, "not in the repository"),
        post("/v2/repository/models/digits/load", "", 401, "missing or wrong bearer token"),
        Rest {
            headers: vec![("authorization", "Bearer guess".to_string())],
            ..post("/v2/repository/models/digits/unload", "", 401, "missing or wrong bearer token")
        },
        post("/v2/repository/models/nope/load", "", 401, "bearer token"),
    ]
}

/// A good V2 request answers 200 with the right output shape.
fn assert_serving(server: &Server) {
    let (row, _) = first_row();
    let (status, out) = server.call(
        "POST",
        "/v2/models/digits/infer",
        Some(&v2("pixels", "FP32", json!([1, 64]), json!(row))),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["outputs"][0]["shape"], json!([1, 10]));
}

fn good_grpc() -> ModelInferRequest {
    let (row, _) = first_row();
    ModelInferRequest {
        model_name: "digits".into(),
        inputs: vec![InferInputTensor {
            name: "pixels".into(),
            datatype: "FP32".into(),
            shape: vec![1, 64],
            ..Default::default()
        }],
        raw_input_contents: vec![row.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect()],
        ..Default::default()
    }
}

/// gRPC cases: a change to the good request, the expected code and message fragment.
fn grpc_infer_cases() -> Vec<(ModelInferRequest, Code, &'static str)> {
    let with = |change: &dyn Fn(&mut ModelInferRequest)| {
        let mut r = good_grpc();
        change(&mut r);
        r
    };
    vec![
        (
            with(&|r| r.model_name = "nope".into()),
            Code::NotFound,
            "model \"nope\" is not in the repository",
        ),
        (
            with(&|r| r.model_version = "9".into()),
            Code::NotFound,
            "no ready version \"9\"",
        ),
        (
            with(&|r| {
                r.inputs.clear();
                r.raw_input_contents.clear();
            }),
            Code::InvalidArgument,
            "the request has no input tensor",
        ),
        (
            with(&|r| r.inputs[0].name = "image".into()),
            Code::InvalidArgument,
            "digits@1 has no input \"image\"",
        ),
        (
            with(&|r| r.inputs[0].datatype = "BYTES".into()),
            Code::InvalidArgument,
            "input \"pixels\" has datatype BYTES; digits@1 takes",
        ),
        (
            with(&|r| r.inputs[0].datatype = "INT32".into()),
            Code::InvalidArgument,
            "has datatype INT32; digits@1 takes",
        ),
        (
            with(&|r| r.inputs[0].shape = vec![1, 32]),
            Code::InvalidArgument,
            "has shape [1, 32]",
        ),
        (
            with(&|r| r.inputs[0].shape = vec![-1, 64]),
            Code::InvalidArgument,
            "negative size",
        ),
        (
            with(&|r| r.inputs[0].shape = vec![]),
            Code::InvalidArgument,
            "has an empty shape",
        ),
        (
            with(&|r| r.raw_input_contents[0].truncate(252)),
            Code::InvalidArgument,
            "has 63 values but its shape [1, 64] needs 64",
        ),
        (
            with(&|r| r.raw_input_contents[0].truncate(255)),
            Code::InvalidArgument,
            "255 bytes of FP32 data is not a whole number of 4-byte elements",
        ),
        (
            with(&|r| r.raw_input_contents.push(vec![0; 4])),
            Code::InvalidArgument,
            "2 raw_input_contents for 1 inputs",
        ),
        (
            with(&|r| r.raw_input_contents.clear()),
            Code::InvalidArgument,
            "input \"pixels\" has no contents",
        ),
        (
            with(&|r| {
                r.raw_input_contents.clear();
                r.inputs[0].contents = Some(InferTensorContents {
                    fp32_contents: vec![0.5; 10],
                    ..Default::default()
                });
            }),
            Code::InvalidArgument,
            "has 10 values but its shape [1, 64] needs 64",
        ),
        (
            with(&|r| {
                r.outputs.push(InferRequestedOutputTensor {
                    name: "probs".into(),
                    ..Default::default()
                })
            }),
            Code::InvalidArgument,
            "has no output \"probs\"",
        ),
        (
            with(&|r| {
                r.parameters.insert(
                    "timeout".into(),
                    InferParameter {
                        parameter_choice: Some(ParameterChoice::Int64Param(1)),
                    },
                );
            }),
            Code::DeadlineExceeded,
            "deadline of",
        ),
        (
            with(&|r| {
                let i = r.inputs[0].clone();
                r.inputs.push(i);
                let b = r.raw_input_contents[0].clone();
                r.raw_input_contents.push(b);
            }),
            Code::InvalidArgument,
            "input \"pixels\" is given twice",
        ),
    ]
}

#[test]
fn malformed_requests_get_clear_4xx_and_the_server_keeps_serving() {
    let (_sb, server) = published_digits(0.5, 2);
    assert_serving(&server);

    let cases = rest_cases();
    let grpc_cases = grpc_infer_cases();
    assert!(cases.len() + grpc_cases.len() + 4 >= 60, "the table shrank");
    for case in &cases {
        let headers: Vec<(&str, &str)> =
            case.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = (case.method == "POST").then_some(case.body.as_slice());
        let (status, err) = server.send(case.method, case.path, &headers, body);
        let what = format!(
            "{} {} {}",
            case.method,
            case.path,
            String::from_utf8_lossy(&case.body)
        );
        assert_eq!(status, case.status, "{what}: {err}");
        let message = err["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error in {err}"));
        assert!(
            message.contains(case.expect),
            "{what}: {message:?} lacks {:?}",
            case.expect
        );
        assert_serving(&server);
    }
    // A body announced over --max-body-mib is refused before any of it is sent.
    let (status, err) = server.head_only("/v2/models/digits/infer", 2 << 20);
    assert_eq!(status, 413, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("--max-body-mib"),
        "{err}"
    );
    assert_serving(&server);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = GrpcInferenceServiceClient::connect(format!("http://{}", server.grpc))
            .await
            .unwrap();
        let good = client.model_infer(good_grpc()).await.unwrap().into_inner();
        assert_eq!(good.outputs[0].shape, vec![1, 10]);
        for (request, code, expect) in grpc_cases {
            let what = format!("{request:?}");
            let status = client.model_infer(request).await.unwrap_err();
            assert_eq!(status.code(), code, "{what}: {}", status.message());
            assert!(
                status.message().contains(expect),
                "{what}: {:?} lacks {expect:?}",
                status.message()
            );
            client.model_infer(good_grpc()).await.unwrap();
        }
        let missing = |s: tonic::Status| (s.code(), s.message().to_string());
        let (code, message) = missing(
            client
                .model_metadata(ModelMetadataRequest {
                    name: "nope".into(),
                    version: String::new(),
                })
                .await
                .unwrap_err(),
        );
        assert_eq!(code, Code::NotFound, "{message}");
        let (code, message) = missing(
            client
                .model_config(ModelConfigRequest {
                    name: "digits".into(),
                    version: "7".into(),
                })
                .await
                .unwrap_err(),
        );
        assert_eq!(code, Code::NotFound, "{message}");
        assert!(message.contains("no ready version \"7\""), "{message}");
        let (code, message) = missing(
            client
                .repository_model_load(RepositoryModelLoadRequest {
                    model_name: "digits".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err(),
        );
        assert_eq!(code, Code::Unauthenticated, "{message}");
        let mut wrong = tonic::Request::new(RepositoryModelLoadRequest {
            model_name: "digits".into(),
            ..Default::default()
        });
        wrong
            .metadata_mut()
            .insert("authorization", "Bearer guess".parse().unwrap());
        let (code, message) = missing(client.repository_model_load(wrong).await.unwrap_err());
        assert_eq!(code, Code::Unauthenticated, "{message}");
        client.model_infer(good_grpc()).await.unwrap();
    });
    // Only the two requests past their deadline count as failed: no other reached the queue.
    let stats = server.call("GET", "/v2/models/digits/stats", None).1;
    assert_eq!(
        stats["model_stats"][0]["inference_stats"]["fail"]["count"], 2,
        "{stats}"
    );
}

/// The server's JSON log line for a request id, once it is written.
fn log_line(server: &Server, id: &str) -> Value {
    let started = std::time::Instant::now();
    loop {
        let found = server
            .logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["request_id"] == id);
        if let Some(line) = found {
            return line;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no log line for {id}: {:?}",
            server.logs.lock().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn failed_requests_are_logged_as_json_with_their_request_id() {
    let (_sb, server) = published_digits(0.5, 1);
    // REST: the caller's id comes back in the response and names the log line.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .post(format!("{}/v2/models/digits/infer", server.base))
        .header("x-request-id", "rest-42")
        .send("{not json")
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(response.headers()["x-request-id"], "rest-42");
    let line = log_line(&server, "rest-42");
    assert_eq!(
        (
            &line["level"],
            &line["protocol"],
            &line["method"],
            &line["status"]
        ),
        (&json!("warn"), &json!("rest"), &json!("POST"), &json!(400)),
        "{line}"
    );
    assert_eq!(line["path"], "/v2/models/digits/infer");
    assert!(
        line["ms"].as_f64().unwrap() >= 0.0 && line["ts"].as_f64().unwrap() > 1.7e9,
        "{line}"
    );
    // Without an id the server makes one and returns it.
    let response = agent
        .get(format!("{}/v2/models/nope", server.base))
        .call()
        .unwrap();
    let made = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(!made.is_empty());
    assert_eq!(log_line(&server, &made)["status"], 404);
    // gRPC: the id travels as metadata; the log carries the gRPC status.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client = GrpcInferenceServiceClient::connect(format!("http://{}", server.grpc))
            .await
            .unwrap();
        let mut request = tonic::Request::new(ModelInferRequest {
            model_name: "digits".into(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("x-request-id", "grpc-7".parse().unwrap());
        let status = client.model_infer(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    });
    let line = log_line(&server, "grpc-7");
    assert_eq!(
        (&line["protocol"], &line["grpc_status"]),
        (&json!("grpc"), &json!(3)),
        "{line}"
    );
    // Successful requests are not logged unless --log-requests.
    let (status, _) = server.call("GET", "/v2/health/ready", None);
    assert_eq!(status, 200);
    assert!(
        server
            .logs
            .lock()
            .unwrap()
            .iter()
            .all(|l| !l.contains("/v2/health/ready")),
        "a successful request was logged"
    );
}
