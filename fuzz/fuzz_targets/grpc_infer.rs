//! A gRPC `ModelInferRequest` from protobuf bytes, converted to input tensors (raw or typed
//! contents), then the input check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelforge_server::grpc::{inputs, proto::ModelInferRequest};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = ModelInferRequest::decode(data) else {
        return;
    };
    if let Ok(tensors) = inputs(&request) {
        let _ = modelforge_fuzz::model().check_inputs(tensors);
    }
});
