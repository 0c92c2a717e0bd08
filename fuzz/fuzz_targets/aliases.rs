//! A model's `aliases.json` and `.last-version` (split at the first newline), read as the
//! registry resolves `MODEL@ALIAS` and numbers the next version.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelforge_fuzz::{MANIFEST, fixtures, scratch, scratch_file};
use modelforge_registry::Registry;

fuzz_target!(|data: &[u8]| {
    let cut = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (aliases, last) = (&data[..cut], data.get(cut + 1..).unwrap_or_default());
    scratch_file("aliases/m/aliases.json", aliases);
    scratch_file("aliases/m/.last-version", last);
    fixtures(&[("aliases/m/1/manifest.json", MANIFEST.as_bytes())]);
    let registry = Registry::new(scratch().join("aliases"));
    let _ = registry.aliases("m");
    let _ = registry.resolve("m@production");
    let _ = registry.resolve("m@latest");
    let _ = registry.versions("m");
});
