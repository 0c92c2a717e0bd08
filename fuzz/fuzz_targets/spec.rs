//! The spec parser and everything `check` derives from a spec that parses: the summary, the
//! memory figure, the graph and the TOML written back (which must parse again).
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelforge_fuzz::{fixtures, scratch};
use modelforge_spec::Spec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The seeds name these data files; they exist so that checks past the paths run.
    fixtures(&[
        ("d.csv", b"1,2,0\n3,4,1\n"),
        ("corpus.txt", b"to be or not to be\n"),
    ]);
    let path = scratch().join("spec.toml");
    if let Ok(spec) = Spec::parse(text, &path, scratch()) {
        let _ = spec.summary();
        let _ = spec.memory_need();
        let _ = spec.graph();
        let _ = spec.parameter_count();
        let again = spec.to_toml();
        Spec::parse(&again, &path, scratch()).expect("a parsed spec's TOML parses again");
    }
});
