//! A per-model lock file so that two publishers never take the same version.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::RegistryError;

/// Held while a model's versions or aliases change; removed on drop.
pub(crate) struct NameLock {
    path: PathBuf,
}

/// A lock older than this is taken to be left by a crashed process.
const STALE: Duration = Duration::from_secs(120);
const WAIT: Duration = Duration::from_secs(30);

impl NameLock {
    /// Takes the lock of the model folder, waiting for another holder.
    pub(crate) fn acquire(model_dir: &Path) -> Result<NameLock, RegistryError> {
        let path = model_dir.join(".lock");
        let start = Instant::now();
        loop {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Ok(NameLock { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .unwrap_or_default();
                    if age > STALE {
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    if start.elapsed() > WAIT {
                        return Err(RegistryError::Busy { path });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(source) => return Err(RegistryError::Io { path, source }),
            }
        }
    }
}

impl Drop for NameLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
