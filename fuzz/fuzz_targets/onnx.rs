//! The ONNX import check: parse, type, and plan a graph for batch 1, as `import onnx` and
//! the ONNX loader do before a version is published or served.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use modelforge_onnx::{OnnxModel, Overrides};

fuzz_target!(|data: &[u8]| {
    let _ = OnnxModel::from_bytes(data, Path::new("fuzz.onnx"), &Overrides::default(), &[1]);
});
