//! The Open Inference Protocol (V2) JSON request decoder, then the check against a served
//! model's inputs that every REST and gRPC request goes through.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(inputs) = modelforge_server::v2_inputs(data, None) {
        let _ = modelforge_fuzz::model().check_inputs(inputs);
    }
});
