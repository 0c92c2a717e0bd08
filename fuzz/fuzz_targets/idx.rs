//! The IDX reader (MNIST's format, gzipped or not) on a file holding the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = modelforge_fuzz::scratch_file("input.idx", data);
    let _ = modelforge_data::idx::read_idx(&path);
});
