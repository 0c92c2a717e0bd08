//! The modelforge model store on disk.
//!
//! Layout: `<root>/<name>/<version>/` holds the version's files, `manifest.json`
//! and `checksums.sha256` (the `sha256sum` format, so `sha256sum -c` checks it
//! too); `<root>/<name>/aliases.json` maps alias names to versions and
//! `<root>/<name>/.last-version` remembers the highest version ever given, so
//! numbers are never reused. Publishing writes into a hidden staging folder and
//! renames it into place: a crash leaves either no new version or a whole one.

mod lock;
pub mod manifest;
pub mod signature;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use lock::NameLock;
pub use manifest::{Lineage, Manifest, NATIVE_FORMAT, TensorInfo};
pub use signature::{Curve, PublicKey, SIGNATURE, Signed, SigningKey};

/// The manifest file name inside a version folder.
pub const MANIFEST: &str = "manifest.json";
/// The checksum file name inside a version folder.
pub const CHECKSUMS: &str = "checksums.sha256";
const ALIASES: &str = "aliases.json";
const LAST_VERSION: &str = ".last-version";

/// Everything that can go wrong with the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A file or folder could not be read or written.
    #[error("{}: {source}{}", path.display(), full_disk_fix(source))]
    Io {
        /// The path.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// No model of that name.
    #[error("no model named {name:?} in {} — `modelforge registry list` shows what is there", root.display())]
    NoModel {
        /// The model asked for.
        name: String,
        /// The registry root.
        root: PathBuf,
    },
    /// The model has no such version or alias.
    #[error("model {name:?} has no version or alias {reference:?} (versions: {known})")]
    NoVersion {
        /// The model.
        name: String,
        /// What was asked for.
        reference: String,
        /// What exists.
        known: String,
    },
    /// A stored version failed its checks.
    #[error(
        "{name} version {version} is corrupt: {reason} — remove it with `modelforge registry rm {name}@{version}` and publish again"
    )]
    Corrupt {
        /// The model.
        name: String,
        /// The version.
        version: u64,
        /// What failed.
        reason: String,
    },
    /// A name, alias or reference is malformed.
    #[error("{0}")]
    BadName(String),
    /// Another process holds the model's lock too long.
    #[error("{}: another modelforge process is publishing this model; try again (remove the file if none is running)", path.display())]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// Removing a version that an alias points at.
    #[error(
        "{name} version {version} is aliased as {aliases} — move or remove the alias first, or pass --force"
    )]
    Aliased {
        /// The model.
        name: String,
        /// The version.
        version: u64,
        /// The aliases pointing at it.
        aliases: String,
    },
    /// A key file cannot be used.
    #[error(
        "{}: {reason} — give an elliptic-curve key (P-256 or P-384) in PEM, e.g. one that `modelforge registry keygen` makes",
        path.display()
    )]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// A version or folder carries no signature.
    #[error(
        "{} is not signed (it has no {SIGNATURE}) — sign it with `modelforge registry sign MODEL@VERSION --key private.pem`",
        dir.display()
    )]
    Unsigned {
        /// The folder.
        dir: PathBuf,
    },
    /// A signature file is malformed, or was not made by a trusted key.
    #[error("{}: {reason}", path.display())]
    BadSignature {
        /// The signature file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A folder's files differ from what was signed.
    #[error(
        "{} does not match its signature: {problems} — restore the signed files, or sign again if the change is yours",
        dir.display()
    )]
    Tampered {
        /// The folder.
        dir: PathBuf,
        /// Each difference, naming its file.
        problems: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The fix for a full disk or quota: what failed was left unchanged, so room and a rerun
/// are all it takes.
fn full_disk_fix(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            " — nothing was changed: free space on that file system (or point --registry / \
             MODELFORGE_REGISTRY at another) and run again"
        }
        _ => "",
    }
}

/// A file to publish: its name in the version folder and its bytes.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// File name (no folders).
    pub name: String,
    /// Contents.
    pub bytes: Vec<u8>,
}

/// One stored version, its checks passed.
#[derive(Debug, Clone)]
pub struct Version {
    /// The folder holding its files.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

/// Summary of one stored version for listings.
#[derive(Debug, Clone)]
pub struct VersionStatus {
    /// Version number.
    pub version: u64,
    /// Manifest when it verified, or why it did not.
    pub state: Result<Manifest, String>,
}

/// Whether a version carries a valid signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureState {
    /// It has no `model.sig`.
    Unsigned,
    /// Its signature holds.
    Signed(Signed),
    /// Its signature is malformed, made by another key, or its files changed: why.
    Invalid(String),
}

/// A model registry rooted at a folder.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

/// Checks a model name: letters, digits, `-`, `_`, `.`, not starting with `.`.
pub fn check_name(name: &str) -> Result<(), RegistryError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::BadName(format!(
            "{name:?} is not a valid model name — use letters, digits, '-', '_' and '.'"
        )))
    }
}

/// Checks an alias name: letters, digits, `-`, `_`, not only digits.
pub fn check_alias(alias: &str) -> Result<(), RegistryError> {
    let ok = !alias.is_empty()
        && !alias.chars().all(|c| c.is_ascii_digit())
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::BadName(format!(
            "{alias:?} is not a valid alias — use letters, digits, '-' and '_', not only digits"
        )))
    }
}

/// Splits `name[@version|@alias]`.
pub fn split_reference(reference: &str) -> (&str, Option<&str>) {
    match reference.split_once('@') {
        Some((name, rest)) => (name, Some(rest)),
        None => (reference, None),
    }
}

/// The sha256 digest of bytes, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn sha256_file(path: &Path) -> Result<String, RegistryError> {
    let mut file = fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io(path))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Writes a file and flushes it to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Replaces a file atomically: temp file, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    // A bare file name's parent is "", the current folder.
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let written = write_synced(&tmp, bytes).and_then(|()| fs::rename(&tmp, path).map_err(io(path)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// Writes a new file that only its owner may read (a private key): a temp file made with
/// that mode, then renamed into place; an existing file is never replaced.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
        std::process::id()
    ));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(io(&tmp))
        .and_then(|()| fs::hard_link(&tmp, path).map_err(io(path)));
    let _ = fs::remove_file(&tmp);
    written
}

fn sync_dir(dir: &Path) -> Result<(), RegistryError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Replaces a model's `aliases.json` atomically.
fn write_aliases(model_dir: &Path, aliases: &BTreeMap<String, u64>) -> Result<(), RegistryError> {
    write_atomic(
        &model_dir.join(ALIASES),
        &serde_json::to_vec_pretty(aliases).expect("json"),
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Registry {
    /// A registry at `root` (created on first publish).
    pub fn new(root: impl Into<PathBuf>) -> Registry {
        Registry { root: root.into() }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn model_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Model names, sorted.
    pub fn models(&self) -> Result<Vec<String>, RegistryError> {
        if !self.root.exists() {
            return Ok(Vec::new());
        }
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io(&self.root))? {
            let entry = entry.map_err(io(&self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && check_name(&name).is_ok() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Version numbers of a model, ascending.
    pub fn versions(&self, name: &str) -> Result<Vec<u64>, RegistryError> {
        check_name(name)?;
        let dir = self.model_dir(name);
        if !dir.is_dir() {
            return Err(RegistryError::NoModel {
                name: name.into(),
                root: self.root.clone(),
            });
        }
        let mut versions: Vec<u64> = fs::read_dir(&dir)
            .map_err(io(&dir))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// Alias → version for a model.
    pub fn aliases(&self, name: &str) -> Result<BTreeMap<String, u64>, RegistryError> {
        let path = self.model_dir(name).join(ALIASES);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RegistryError::Corrupt {
                name: name.into(),
                version: 0,
                reason: format!("{} is not valid JSON: {e}", path.display()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Resolves `name`, `name@3` or `name@alias` to a model name and version (latest when bare).
    pub fn resolve(&self, reference: &str) -> Result<(String, u64), RegistryError> {
        let (name, which) = split_reference(reference);
        let versions = self.versions(name)?;
        let known = || {
            let mut parts: Vec<String> = versions.iter().map(|v| v.to_string()).collect();
            if let Ok(aliases) = self.aliases(name) {
                parts.extend(aliases.keys().cloned());
            }
            if parts.is_empty() {
                "none".into()
            } else {
                parts.join(", ")
            }
        };
        let missing = |r: &str| RegistryError::NoVersion {
            name: name.into(),
            reference: r.into(),
            known: known(),
        };
        let version = match which {
            None | Some("latest") => *versions.last().ok_or_else(|| missing("latest"))?,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if versions.contains(&n) => n,
                Ok(_) => return Err(missing(v)),
                Err(_) => *self.aliases(name)?.get(v).ok_or_else(|| missing(v))?,
            },
        };
        Ok((name.to_string(), version))
    }

    /// Opens a version after checking every file against `checksums.sha256`.
    pub fn open(&self, name: &str, version: u64) -> Result<Version, RegistryError> {
        self.open_with(name, version, &BTreeMap::new())
    }

    /// A version's folder, which must exist.
    fn version_dir(&self, name: &str, version: u64) -> Result<PathBuf, RegistryError> {
        let dir = self.model_dir(name).join(version.to_string());
        match dir.is_dir() {
            true => Ok(dir),
            false => Err(RegistryError::NoVersion {
                name: name.into(),
                reference: version.to_string(),
                known: format!("{:?}", self.versions(name)?),
            }),
        }
    }

    /// [`Registry::open`], taking the SHA-256 of the files in `known` (just read by a
    /// signature check) instead of reading them again.
    fn open_with(
        &self,
        name: &str,
        version: u64,
        known: &BTreeMap<String, String>,
    ) -> Result<Version, RegistryError> {
        let dir = self.version_dir(name, version)?;
        let corrupt = |reason: String| RegistryError::Corrupt {
            name: name.into(),
            version,
            reason,
        };
        let sums = fs::read_to_string(dir.join(CHECKSUMS))
            .map_err(|e| corrupt(format!("{CHECKSUMS}: {e}")))?;
        let mut listed = Vec::new();
        for line in sums.lines().filter(|l| !l.trim().is_empty()) {
            let (sum, file) = line
                .split_once("  ")
                .ok_or_else(|| corrupt(format!("{CHECKSUMS} has a malformed line {line:?}")))?;
            if file.contains('/') || file.starts_with('.') {
                return Err(corrupt(format!(
                    "{CHECKSUMS} names {file:?}, outside the version folder"
                )));
            }
            let path = dir.join(file);
            if !path.is_file() {
                return Err(corrupt(format!("{file} is missing")));
            }
            let actual = match known.get(file) {
                Some(digest) => digest.clone(),
                None => sha256_file(&path)?,
            };
            if actual != sum {
                return Err(corrupt(format!("{file} does not match its checksum")));
            }
            listed.push(file.to_string());
        }
        if !listed.iter().any(|f| f == MANIFEST) {
            return Err(corrupt(format!("{CHECKSUMS} does not cover {MANIFEST}")));
        }
        let bytes = fs::read(dir.join(MANIFEST)).map_err(io(&dir.join(MANIFEST)))?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(format!("{MANIFEST} is not a valid manifest: {e}")))?;
        if manifest.name != name || manifest.version != version {
            return Err(corrupt(format!(
                "{MANIFEST} says {}@{}, not {name}@{version}",
                manifest.name, manifest.version
            )));
        }
        Ok(Version { dir, manifest })
    }

    /// Signs a stored version (its checksums checked first): writes its `model.sig`,
    /// replacing an earlier signature, and returns its path.
    pub fn sign(
        &self,
        name: &str,
        version: u64,
        key: &SigningKey,
    ) -> Result<PathBuf, RegistryError> {
        let stored = self.open(name, version)?;
        let _lock = NameLock::acquire(&self.model_dir(name))?;
        let bundle = signature::sign_folder(&stored.dir, &format!("{name}@{version}"), key)?;
        let path = stored.dir.join(SIGNATURE);
        write_atomic(&path, &bundle)?;
        Ok(path)
    }

    /// Opens a version whose signature verifies against one of `keys` and matches every
    /// file; returns it with what the check found and the key that signed. Each file is
    /// read once: its checksum is checked against the digest the signature check took.
    pub fn verify(
        &self,
        name: &str,
        version: u64,
        keys: &[PublicKey],
    ) -> Result<(Version, Signed, PublicKey), RegistryError> {
        let dir = self.version_dir(name, version)?;
        let (signed, key) = signature::verify_folder(&dir, keys)?;
        let stored = self.open_with(name, version, &signed.digests)?;
        Ok((stored, signed, key))
    }

    /// Whether a stored version is signed: checked against `keys`, or, with none given,
    /// only against its own files (whole and unchanged, whoever signed).
    pub fn signature_state(&self, name: &str, version: u64, keys: &[PublicKey]) -> SignatureState {
        let dir = self.model_dir(name).join(version.to_string());
        let checked = match keys.is_empty() {
            true => signature::inspect_folder(&dir),
            false => signature::verify_folder(&dir, keys).map(|(s, _)| s),
        };
        match checked {
            Ok(s) => SignatureState::Signed(s),
            Err(RegistryError::Unsigned { .. }) => SignatureState::Unsigned,
            Err(e) => SignatureState::Invalid(e.to_string()),
        }
    }

    /// Every version of a model with its check result.
    pub fn status(&self, name: &str) -> Result<Vec<VersionStatus>, RegistryError> {
        self.versions(name)?
            .into_iter()
            .map(|version| {
                let state = match self.open(name, version) {
                    Ok(v) => Ok(v.manifest),
                    Err(RegistryError::Corrupt { reason, .. }) => Err(reason),
                    Err(e) => return Err(e),
                };
                Ok(VersionStatus { version, state })
            })
            .collect()
    }

    /// Publishes a new version atomically and returns it; the manifest's version and
    /// creation time are filled in here.
    pub fn publish(
        &self,
        manifest: Manifest,
        artifacts: &[Artifact],
    ) -> Result<Version, RegistryError> {
        self.publish_signed(manifest, artifacts, None)
    }

    /// [`Registry::publish`], signing the version with `signer` before it becomes visible.
    pub fn publish_signed(
        &self,
        mut manifest: Manifest,
        artifacts: &[Artifact],
        signer: Option<&SigningKey>,
    ) -> Result<Version, RegistryError> {
        let name = manifest.name.clone();
        check_name(&name)?;
        for a in artifacts {
            if a.name.contains('/')
                || a.name.starts_with('.')
                || a.name == MANIFEST
                || a.name == CHECKSUMS
            {
                return Err(RegistryError::BadName(format!(
                    "artifact name {:?} is not allowed",
                    a.name
                )));
            }
        }
        let model_dir = self.model_dir(&name);
        fs::create_dir_all(&model_dir).map_err(io(&model_dir))?;
        let _lock = NameLock::acquire(&model_dir)?;
        self.sweep_staging(&model_dir);
        let last: u64 = fs::read_to_string(model_dir.join(LAST_VERSION))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let version = last.max(self.versions(&name)?.last().copied().unwrap_or(0)) + 1;
        manifest.version = version;
        manifest.lineage.created = now();
        let staging = model_dir.join(format!(".staging-{}-{version}", std::process::id()));
        let result = (|| {
            fs::create_dir_all(&staging).map_err(io(&staging))?;
            let mut sums = String::new();
            let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
            let all = artifacts
                .iter()
                .map(|a| (a.name.as_str(), a.bytes.as_slice()));
            for (file, bytes) in all.chain(std::iter::once((MANIFEST, manifest_bytes.as_slice()))) {
                write_synced(&staging.join(file), bytes)?;
                sums += &format!("{}  {file}\n", sha256_hex(bytes));
            }
            write_synced(&staging.join(CHECKSUMS), sums.as_bytes())?;
            if let Some(key) = signer {
                let bundle = signature::sign_folder(&staging, &format!("{name}@{version}"), key)?;
                write_synced(&staging.join(SIGNATURE), &bundle)?;
            }
            sync_dir(&staging)?;
            write_atomic(
                &model_dir.join(LAST_VERSION),
                version.to_string().as_bytes(),
            )?;
            let dest = model_dir.join(version.to_string());
            fs::rename(&staging, &dest).map_err(io(&dest))?;
            sync_dir(&model_dir)?;
            Ok(dest)
        })();
        match result {
            Ok(dir) => Ok(Version { dir, manifest }),
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                Err(e)
            }
        }
    }

    /// Removes staging folders that crashed publishes left behind.
    fn sweep_staging(&self, model_dir: &Path) {
        if let Ok(entries) = fs::read_dir(model_dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".staging-") {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// Fails with `NoVersion` unless the model has this version.
    fn require_version(&self, name: &str, version: u64) -> Result<(), RegistryError> {
        let versions = self.versions(name)?;
        if versions.contains(&version) {
            Ok(())
        } else {
            Err(RegistryError::NoVersion {
                name: name.into(),
                reference: version.to_string(),
                known: format!("{versions:?}"),
            })
        }
    }

    /// Points an alias at a version (atomically).
    pub fn set_alias(&self, name: &str, alias: &str, version: u64) -> Result<(), RegistryError> {
        check_alias(alias)?;
        self.require_version(name, version)?;
        let model_dir = self.model_dir(name);
        let _lock = NameLock::acquire(&model_dir)?;
        let mut aliases = self.aliases(name)?;
        aliases.insert(alias.to_string(), version);
        write_aliases(&model_dir, &aliases)
    }

    /// Removes an alias; returns whether it existed.
    pub fn remove_alias(&self, name: &str, alias: &str) -> Result<bool, RegistryError> {
        self.versions(name)?;
        let model_dir = self.model_dir(name);
        let _lock = NameLock::acquire(&model_dir)?;
        let mut aliases = self.aliases(name)?;
        let existed = aliases.remove(alias).is_some();
        write_aliases(&model_dir, &aliases)?;
        Ok(existed)
    }

    /// Removes a version (refused while an alias points at it, unless `force`, which drops those aliases).
    pub fn remove_version(
        &self,
        name: &str,
        version: u64,
        force: bool,
    ) -> Result<(), RegistryError> {
        self.require_version(name, version)?;
        let model_dir = self.model_dir(name);
        let _lock = NameLock::acquire(&model_dir)?;
        let mut aliases = self.aliases(name)?;
        let pointing: Vec<String> = aliases
            .iter()
            .filter(|(_, v)| **v == version)
            .map(|(a, _)| a.clone())
            .collect();
        if !pointing.is_empty() {
            if !force {
                return Err(RegistryError::Aliased {
                    name: name.into(),
                    version,
                    aliases: pointing.join(", "),
                });
            }
            aliases.retain(|_, v| *v != version);
            write_aliases(&model_dir, &aliases)?;
        }
        // Rename out of sight first so a crash never leaves a half-deleted visible version.
        let dir = model_dir.join(version.to_string());
        let doomed = model_dir.join(format!(".staging-rm-{version}"));
        fs::rename(&dir, &doomed).map_err(io(&dir))?;
        sync_dir(&model_dir)?;
        fs::remove_dir_all(&doomed).map_err(io(&doomed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn manifest(name: &str) -> Manifest {
        Manifest {
            name: name.into(),
            version: 0,
            format: "modelforge-native".into(),
            inputs: vec![TensorInfo {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![4],
                source: None,
            }],
            outputs: vec![TensorInfo {
                name: "y".into(),
                datatype: "FP32".into(),
                shape: vec![3],
                source: None,
            }],
            batchable: true,
            task: "classification".into(),
            labels: vec![],
            metrics: BTreeMap::new(),
            lineage: Lineage {
                spec_hash: "s".into(),
                data_fingerprint: "d".into(),
                run_id: "r".into(),
                created: 0,
                modelforge_version: "0".into(),
            },
        }
    }

    fn weights() -> Vec<Artifact> {
        vec![Artifact {
            name: "weights.safetensors".into(),
            bytes: vec![1, 2, 3],
        }]
    }

    #[test]
    fn versions_increase_and_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(dir.path());
        assert_eq!(
            reg.publish(manifest("m"), &weights())
                .unwrap()
                .manifest
                .version,
            1
        );
        assert_eq!(
            reg.publish(manifest("m"), &weights())
                .unwrap()
                .manifest
                .version,
            2
        );
        reg.remove_version("m", 2, false).unwrap();
        assert_eq!(
            reg.publish(manifest("m"), &weights())
                .unwrap()
                .manifest
                .version,
            3
        );
        assert_eq!(reg.versions("m").unwrap(), vec![1, 3]);
        assert_eq!(reg.resolve("m").unwrap().1, 3);
    }

    #[test]
    fn aliases_resolve_and_protect_versions() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(dir.path());
        reg.publish(manifest("m"), &weights()).unwrap();
        reg.set_alias("m", "production", 1).unwrap();
        assert_eq!(reg.resolve("m@production").unwrap(), ("m".into(), 1));
        assert!(matches!(
            reg.remove_version("m", 1, false),
            Err(RegistryError::Aliased { .. })
        ));
        assert!(matches!(
            reg.resolve("m@staging"),
            Err(RegistryError::NoVersion { .. })
        ));
        assert!(reg.set_alias("m", "123", 1).is_err());
        assert!(reg.set_alias("m", "x", 9).is_err());
    }

    #[test]
    fn tampered_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(dir.path());
        let v = reg.publish(manifest("m"), &weights()).unwrap();
        reg.open("m", 1).unwrap();
        fs::write(v.dir.join("weights.safetensors"), b"evil").unwrap();
        let err = reg.open("m", 1).unwrap_err().to_string();
        assert!(
            err.contains("weights.safetensors does not match its checksum"),
            "{err}"
        );
        assert!(reg.status("m").unwrap()[0].state.is_err());
    }

    #[test]
    fn crashed_staging_is_invisible_and_swept() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(dir.path());
        fs::create_dir_all(dir.path().join("m/.staging-999-1")).unwrap();
        assert!(reg.versions("m").unwrap().is_empty());
        reg.publish(manifest("m"), &weights()).unwrap();
        assert!(!dir.path().join("m/.staging-999-1").exists());
    }
}
