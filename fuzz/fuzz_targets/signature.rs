//! A version's `model.sig` (Sigstore bundle, DSSE envelope, in-toto statement) as
//! `registry list` inspects it and `registry verify` / `serve --trust-key` check it.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use modelforge_fuzz::{fixtures, scratch, scratch_file};
use modelforge_registry::signature::{Curve, PublicKey, SigningKey, inspect_folder, verify_folder};

fuzz_target!(|data: &[u8]| {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    let key = KEY.get_or_init(|| SigningKey::generate(Curve::P256).public_key());
    fixtures(&[("signed/weights.bin", b"weights")]);
    scratch_file("signed/model.sig", data);
    let dir = scratch().join("signed");
    let _ = inspect_folder(&dir);
    let _ = verify_folder(&dir, std::slice::from_ref(key));
});
