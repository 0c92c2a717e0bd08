//! The binary tensor data extension: the first two bytes give the JSON header's length
//! (`Inference-Header-Content-Length`), the rest is the body, JSON header then raw tensors.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((length, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let length = usize::from(u16::from_le_bytes(*length));
    if let Ok(inputs) = modelforge_server::v2_inputs(body, Some(length)) {
        let _ = modelforge_fuzz::model().check_inputs(inputs);
    }
});
