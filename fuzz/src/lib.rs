//! What the fuzz targets share: the manifest of a served model like the MNIST one (64
//! FP32 inputs, 10 outputs), and a scratch folder for the readers that take a path.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use modelforge_serve::{Manifest, ModelInfo};

/// A version's manifest, as `modelforge run` writes it for the digits model.
pub const MANIFEST: &str = include_str!("../fixtures/manifest.json");

/// The served model the request decoders check their tensors against.
pub fn model() -> &'static ModelInfo {
    static MODEL: OnceLock<ModelInfo> = OnceLock::new();
    MODEL.get_or_init(|| {
        let manifest: Manifest = serde_json::from_str(MANIFEST).expect("the fixture parses");
        ModelInfo {
            name: manifest.name.clone(),
            version: manifest.version,
            manifest,
        }
    })
}

/// This process's scratch folder (in memory where `/dev/shm` exists), made once.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = match shm.is_dir() {
            true => shm.to_path_buf(),
            false => std::env::temp_dir(),
        };
        let dir = base.join(format!("modelforge-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    })
}

/// Writes the files a target only reads (`name`, `bytes` pairs) under the scratch folder
/// on the process's first call, not on every input (a target has one call site).
pub fn fixtures(files: &[(&str, &[u8])]) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        for (name, bytes) in files {
            scratch_file(name, bytes);
        }
    });
}

/// Writes `bytes` to `name` under the scratch folder; returns its path.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("scratch folder");
    }
    std::fs::write(&path, bytes).expect("scratch file");
    path
}
