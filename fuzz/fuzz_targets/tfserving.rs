//! TensorFlow Serving's REST body (`instances` row form or `inputs` columnar form) against
//! a served model, then the input check.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let model = modelforge_fuzz::model();
    if let Ok((inputs, _)) = modelforge_server::tfserving::inputs(&body, &model.manifest) {
        let _ = model.check_inputs(inputs);
    }
});
