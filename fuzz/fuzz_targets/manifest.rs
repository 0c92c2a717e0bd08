//! A version's `manifest.json` as the registry opens it (its checksum right, so the
//! manifest itself is read), and the sizes a server derives from it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelforge_fuzz::{scratch, scratch_file};
use modelforge_registry::Registry;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let sum: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    scratch_file("registry/m/1/manifest.json", data);
    scratch_file(
        "registry/m/1/checksums.sha256",
        format!("{sum}  manifest.json\n").as_bytes(),
    );
    let registry = Registry::new(scratch().join("registry"));
    if let Ok(version) = registry.open("m", 1) {
        let m = &version.manifest;
        let _ = (m.input_lens(), m.output_lens());
        for t in m.inputs.iter().chain(&m.outputs) {
            let _ = m.protocol_shape(t);
        }
    }
});
