//! Signed folders in the format of OpenSSF's model signing (`sigstore/model-transparency`,
//! PyPI `model-signing` 1.x), its "bring your own key" method: `model.sig` is a Sigstore
//! bundle (JSON, media type v0.3) whose DSSE envelope carries an in-toto statement. The
//! statement's predicate (`https://model_signing/signature/v1.0`) lists every file of the
//! folder with its SHA-256 (the "files" serialisation), and its one subject's digest is the
//! SHA-256 of those digests in order. The envelope is signed with ECDSA (P-256 with
//! SHA-256, P-384 with SHA-384, DER) over DSSE's pre-authentication encoding, and the
//! bundle's `publicKey.hint` is the SHA-256 of the public key's PEM.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{RegistryError, io, sha256_file, sha256_hex};

/// The signature's file name inside a signed folder (model-signing's default).
pub const SIGNATURE: &str = "model.sig";
const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// What model-signing leaves out of a folder besides the signature: git's files.
const GIT_PATHS: [&str; 4] = [".git", ".gitattributes", ".github", ".gitignore"];
/// The largest signature file read (a bundle lists one line per file).
const MAX_SIGNATURE_BYTES: u64 = 64 << 20;

/// An elliptic curve a signing key may be on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 (secp256r1, prime256v1), signed with SHA-256.
    P256,
    /// NIST P-384 (secp384r1), signed with SHA-384.
    P384,
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        })
    }
}

impl FromStr for Curve {
    type Err = String;

    fn from_str(s: &str) -> Result<Curve, String> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "p256" | "secp256r1" | "prime256v1" => Ok(Curve::P256),
            "p384" | "secp384r1" => Ok(Curve::P384),
            _ => Err(format!("unknown curve {s:?} — use p256 or p384")),
        }
    }
}

/// A private key that signs folders.
#[derive(Clone)]
pub enum SigningKey {
    /// On P-256.
    P256(p256::ecdsa::SigningKey),
    /// On P-384.
    P384(p384::ecdsa::SigningKey),
}

/// A public key that checks signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// On P-256.
    P256(p256::ecdsa::VerifyingKey),
    /// On P-384.
    P384(p384::ecdsa::VerifyingKey),
}

/// The PEM block of `label` in a text that may hold others (OpenSSL's `ecparam -genkey`
/// puts the curve's parameters first).
fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = text[start..].find(&end)? + start + end.len();
    Some(&text[start..stop])
}

/// Reads a key file as text, refusing one too large to be a key.
fn key_text(path: &Path) -> Result<String, RegistryError> {
    let bad = |reason: String| RegistryError::Key {
        path: path.to_path_buf(),
        reason,
    };
    let len = fs::metadata(path).map_err(io(path))?.len();
    if len > 64 << 10 {
        return Err(bad(format!("{len} bytes is too large for a PEM key")));
    }
    String::from_utf8(fs::read(path).map_err(io(path))?)
        .map_err(|_| bad("is not a PEM text file".into()))
}

impl SigningKey {
    /// A new key on `curve` from the operating system's generator.
    pub fn generate(curve: Curve) -> SigningKey {
        let mut rng = rand_core::OsRng;
        match curve {
            Curve::P256 => SigningKey::P256(p256::ecdsa::SigningKey::random(&mut rng)),
            Curve::P384 => SigningKey::P384(p384::ecdsa::SigningKey::random(&mut rng)),
        }
    }

    /// Reads a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE
    /// KEY`), unencrypted.
    pub fn read(path: &Path) -> Result<SigningKey, RegistryError> {
        let text = key_text(path)?;
        SigningKey::from_pem(&text).map_err(|reason| RegistryError::Key {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses a PEM private key.
    pub fn from_pem(text: &str) -> Result<SigningKey, String> {
        if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(
                "the key is encrypted; decrypt it first (openssl pkcs8 -in KEY -out PLAIN.pem)"
                    .into(),
            );
        }
        if let Some(block) = pem_block(text, "PRIVATE KEY") {
            if let Ok(k) = p256::SecretKey::from_pkcs8_pem(block) {
                return Ok(SigningKey::P256(k.into()));
            }
            if let Ok(k) = p384::SecretKey::from_pkcs8_pem(block) {
                return Ok(SigningKey::P384(k.into()));
            }
            return Err("the PKCS#8 key is not an elliptic-curve key on P-256 or P-384".into());
        }
        if let Some(block) = pem_block(text, "EC PRIVATE KEY") {
            if let Ok(k) = p256::SecretKey::from_sec1_pem(block) {
                return Ok(SigningKey::P256(k.into()));
            }
            if let Ok(k) = p384::SecretKey::from_sec1_pem(block) {
                return Ok(SigningKey::P384(k.into()));
            }
            return Err("the EC key is not on P-256 or P-384".into());
        }
        Err("holds no PEM private key (BEGIN PRIVATE KEY or BEGIN EC PRIVATE KEY)".into())
    }

    /// The key as unencrypted PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        let pem = match self {
            SigningKey::P256(k) => k.to_pkcs8_pem(LineEnding::LF),
            SigningKey::P384(k) => k.to_pkcs8_pem(LineEnding::LF),
        };
        pem.expect("a valid key encodes").to_string()
    }

    /// Its public half.
    pub fn public_key(&self) -> PublicKey {
        match self {
            SigningKey::P256(k) => PublicKey::P256(*k.verifying_key()),
            SigningKey::P384(k) => PublicKey::P384(*k.verifying_key()),
        }
    }

    /// An ECDSA signature of `message`, DER-encoded.
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            SigningKey::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(message);
                s.to_der().as_bytes().to_vec()
            }
            SigningKey::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign(message);
                s.to_der().as_bytes().to_vec()
            }
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public_key().hint())
    }
}

impl PublicKey {
    /// Reads a PEM public key (`BEGIN PUBLIC KEY`, SubjectPublicKeyInfo).
    pub fn read(path: &Path) -> Result<PublicKey, RegistryError> {
        let text = key_text(path)?;
        PublicKey::from_pem(&text).map_err(|reason| RegistryError::Key {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses a PEM public key.
    pub fn from_pem(text: &str) -> Result<PublicKey, String> {
        let Some(block) = pem_block(text, "PUBLIC KEY") else {
            return Err(match text.contains("PRIVATE KEY") {
                true => "is a private key; give the public key (BEGIN PUBLIC KEY)".into(),
                false => "holds no PEM public key (BEGIN PUBLIC KEY)".into(),
            });
        };
        if let Ok(k) = p256::PublicKey::from_public_key_pem(block) {
            return Ok(PublicKey::P256(k.into()));
        }
        if let Ok(k) = p384::PublicKey::from_public_key_pem(block) {
            return Ok(PublicKey::P384(k.into()));
        }
        Err("the public key is not an elliptic-curve key on P-256 or P-384".into())
    }

    /// The key as PEM (SubjectPublicKeyInfo, 64-column lines), as OpenSSL writes it.
    pub fn to_pem(&self) -> String {
        let pem = match self {
            PublicKey::P256(k) => k.to_public_key_pem(LineEnding::LF),
            PublicKey::P384(k) => k.to_public_key_pem(LineEnding::LF),
        };
        pem.expect("a valid key encodes")
    }

    /// The key's identifier in a bundle: the SHA-256 of its PEM, in hex.
    pub fn hint(&self) -> String {
        sha256_hex(self.to_pem().as_bytes())
    }

    /// Its curve.
    pub fn curve(&self) -> Curve {
        match self {
            PublicKey::P256(_) => Curve::P256,
            PublicKey::P384(_) => Curve::P384,
        }
    }

    /// Whether `signature` (DER) signs `message` with this key.
    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::P256(k) => p256::ecdsa::Signature::from_der(signature)
                .is_ok_and(|s| k.verify(message, &s).is_ok()),
            PublicKey::P384(k) => p384::ecdsa::Signature::from_der(signature)
                .is_ok_and(|s| k.verify(message, &s).is_ok()),
        }
    }
}

/// Writes a new key pair: the private key (PKCS#8, readable by its owner only) and the
/// public key. Refuses to replace either file.
pub fn keygen(private: &Path, public: &Path, curve: Curve) -> Result<PublicKey, RegistryError> {
    for path in [private, public] {
        if path.exists() {
            return Err(RegistryError::Key {
                path: path.to_path_buf(),
                reason:
                    "already exists; a key is never overwritten (remove it or pick another name)"
                        .into(),
            });
        }
    }
    let key = SigningKey::generate(curve);
    crate::write_private(private, key.to_pem().as_bytes())?;
    crate::write_atomic(public, key.public_key().to_pem().as_bytes())?;
    Ok(key.public_key())
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    media_type: String,
    verification_material: Material,
    dsse_envelope: Envelope,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Material {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_key: Option<KeyHint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x509_certificate_chain: Option<serde_json::Value>,
    #[serde(default)]
    tlog_entries: Vec<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct KeyHint {
    #[serde(default)]
    hint: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Serialize, Deserialize)]
struct EnvelopeSignature {
    sig: String,
    #[serde(default)]
    keyid: String,
}

#[derive(Serialize, Deserialize)]
struct Statement {
    #[serde(rename = "_type")]
    kind: String,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: Predicate,
}

#[derive(Serialize, Deserialize)]
struct Subject {
    name: String,
    digest: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct Predicate {
    resources: Vec<Resource>,
    serialization: Serialization,
}

#[derive(Serialize, Deserialize)]
struct Resource {
    algorithm: String,
    name: String,
    digest: String,
}

#[derive(Serialize, Deserialize)]
struct Serialization {
    method: String,
    hash_type: String,
    allow_symlinks: bool,
    #[serde(default)]
    ignore_paths: Vec<String>,
}

/// DSSE's pre-authentication encoding of a payload, the bytes that are signed.
fn pae(payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {PAYLOAD_TYPE} {} ",
        PAYLOAD_TYPE.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Whether the relative path `rel` lies under one of `ignored` (a path or a folder).
fn is_ignored(rel: &str, ignored: &[String]) -> bool {
    ignored.iter().any(|i| {
        let i = i.trim_end_matches('/');
        rel == i
            || rel
                .strip_prefix(i)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The files of a folder as model-signing serialises it: paths relative to the folder
/// with `/`, each with the SHA-256 of its bytes, leaving out `ignored`.
fn folder_files(
    dir: &Path,
    ignored: &[String],
    allow_symlinks: bool,
) -> Result<BTreeMap<String, String>, RegistryError> {
    let mut files = BTreeMap::new();
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((folder, prefix)) = pending.pop() {
        for entry in fs::read_dir(&folder).map_err(io(&folder))? {
            let entry = entry.map_err(io(&folder))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = format!("{prefix}{name}");
            if is_ignored(&rel, ignored) {
                continue;
            }
            let path = entry.path();
            let mut meta = fs::symlink_metadata(&path).map_err(io(&path))?;
            if meta.file_type().is_symlink() {
                if !allow_symlinks {
                    return Err(RegistryError::Tampered {
                        dir: dir.to_path_buf(),
                        problems: format!(
                            "{rel} is a symbolic link, which the signature does not allow"
                        ),
                    });
                }
                meta = fs::metadata(&path).map_err(io(&path))?;
            }
            if meta.is_dir() {
                pending.push((path, format!("{rel}/")));
            } else {
                files.insert(rel, sha256_file(&path)?);
            }
        }
    }
    Ok(files)
}

/// The signature bundle of a folder's files, signed by `key`; `name` names the model in
/// the statement's subject.
pub fn sign_folder(dir: &Path, name: &str, key: &SigningKey) -> Result<Vec<u8>, RegistryError> {
    let ignored: Vec<String> = std::iter::once(SIGNATURE)
        .chain(GIT_PATHS)
        .map(String::from)
        .collect();
    let files = folder_files(dir, &ignored, false)?;
    let mut root = Sha256::new();
    let resources = files
        .into_iter()
        .map(|(name, digest)| {
            root.update(hex::decode(&digest).expect("our own hex"));
            Resource {
                algorithm: "sha256".into(),
                name,
                digest,
            }
        })
        .collect();
    let statement = Statement {
        kind: STATEMENT_TYPE.into(),
        subject: vec![Subject {
            name: name.into(),
            digest: BTreeMap::from([("sha256".to_string(), hex::encode(root.finalize()))]),
        }],
        predicate_type: PREDICATE_TYPE.into(),
        predicate: Predicate {
            resources,
            serialization: Serialization {
                method: "files".into(),
                hash_type: "sha256".into(),
                allow_symlinks: false,
                ignore_paths: ignored,
            },
        },
    };
    let payload = serde_json::to_vec_pretty(&statement).expect("statement serialises");
    let bundle = Bundle {
        media_type: BUNDLE_MEDIA_TYPE.into(),
        verification_material: Material {
            public_key: Some(KeyHint {
                hint: Some(key.public_key().hint()),
            }),
            certificate: None,
            x509_certificate_chain: None,
            tlog_entries: Vec::new(),
        },
        dsse_envelope: Envelope {
            payload: BASE64.encode(&payload),
            payload_type: PAYLOAD_TYPE.into(),
            signatures: vec![EnvelopeSignature {
                sig: BASE64.encode(key.sign(&pae(&payload))),
                keyid: String::new(),
            }],
        },
    };
    Ok(serde_json::to_vec(&bundle).expect("bundle serialises"))
}

/// What a signature check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The hint of the key named in the bundle (the SHA-256 of its PEM), if it names one.
    pub hint: Option<String>,
    /// The SHA-256 (hex) of each file the signature covers, by its path in the folder, as
    /// the check read them.
    pub digests: BTreeMap<String, String>,
}

impl Signed {
    /// Files the signature covers.
    pub fn files(&self) -> usize {
        self.digests.len()
    }
}

/// A signature read and its statement decoded, not yet checked against a key.
struct Read {
    path: PathBuf,
    bundle: Bundle,
    payload: Vec<u8>,
    statement: Statement,
}

/// Reads `dir`'s signature: the bundle, its envelope's payload and statement, and checks
/// that the statement's subject digest agrees with its resources.
fn read(dir: &Path) -> Result<Read, RegistryError> {
    let path = dir.join(SIGNATURE);
    let bad = |reason: String| RegistryError::BadSignature {
        path: path.clone(),
        reason,
    };
    let len = match fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RegistryError::Unsigned {
                dir: dir.to_path_buf(),
            });
        }
        Err(e) => return Err(io(&path)(e)),
    };
    if len > MAX_SIGNATURE_BYTES {
        return Err(bad(format!(
            "{len} bytes is too large for a signature (at most {MAX_SIGNATURE_BYTES})"
        )));
    }
    let bytes = fs::read(&path).map_err(io(&path))?;
    let bundle: Bundle = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("is not a Sigstore bundle: {e}")))?;
    if bundle.media_type != BUNDLE_MEDIA_TYPE {
        return Err(bad(format!(
            "has media type {:?}; model signing writes {BUNDLE_MEDIA_TYPE:?}",
            bundle.media_type
        )));
    }
    let envelope = &bundle.dsse_envelope;
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(bad(format!(
            "its envelope carries {:?}, not an in-toto statement ({PAYLOAD_TYPE})",
            envelope.payload_type
        )));
    }
    let payload = BASE64
        .decode(&envelope.payload)
        .map_err(|e| bad(format!("its payload is not base64: {e}")))?;
    let statement: Statement = serde_json::from_slice(&payload).map_err(|e| {
        bad(format!(
            "its statement is not a model-signing v1.0 statement: {e} (older v0.x signatures are not read; sign the model again)"
        ))
    })?;
    if statement.kind != STATEMENT_TYPE || statement.predicate_type != PREDICATE_TYPE {
        return Err(bad(format!(
            "its statement is {:?} with predicate {:?}; model signing writes {STATEMENT_TYPE:?} with {PREDICATE_TYPE:?}",
            statement.kind, statement.predicate_type
        )));
    }
    let serialization = &statement.predicate.serialization;
    if serialization.method != "files" || serialization.hash_type != "sha256" {
        return Err(bad(format!(
            "the model was hashed by {:?} with {:?}; only the \"files\" method with sha256 is read here (sign again without --shard or another hash)",
            serialization.method, serialization.hash_type
        )));
    }
    let [subject] = statement.subject.as_slice() else {
        return Err(bad(format!(
            "its statement has {} subjects; model signing writes one",
            statement.subject.len()
        )));
    };
    let mut root = Sha256::new();
    for r in &statement.predicate.resources {
        let digest = hex::decode(&r.digest)
            .ok()
            .filter(|d| r.algorithm == "sha256" && d.len() == 32)
            .ok_or_else(|| bad(format!("resource {:?} has no SHA-256 digest", r.name)))?;
        root.update(digest);
    }
    if subject.digest.get("sha256") != Some(&hex::encode(root.finalize())) {
        return Err(bad(
            "its subject digest does not match its resources: the statement was altered".into(),
        ));
    }
    Ok(Read {
        path,
        bundle,
        payload,
        statement,
    })
}

/// Compares a folder's files with the signed resources, naming each difference; returns
/// the files' digests when they all match.
fn compare(dir: &Path, read: &Read) -> Result<BTreeMap<String, String>, RegistryError> {
    let serialization = &read.statement.predicate.serialization;
    let mut ignored: Vec<String> = serialization.ignore_paths.clone();
    ignored.extend(
        std::iter::once(SIGNATURE)
            .chain(GIT_PATHS)
            .map(String::from),
    );
    let actual = folder_files(dir, &ignored, serialization.allow_symlinks)?;
    let signed: BTreeMap<&str, &str> = read
        .statement
        .predicate
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r.digest.as_str()))
        .collect();
    let mut problems = Vec::new();
    for (name, digest) in &actual {
        match signed.get(name.as_str()) {
            None => problems.push(format!("{name} is not signed (added after signing)")),
            Some(want) if !want.eq_ignore_ascii_case(digest) => {
                problems.push(format!("{name} changed (SHA-256 {digest}, signed {want})"))
            }
            Some(_) => {}
        }
    }
    for name in signed.keys() {
        if !actual.contains_key(*name) {
            problems.push(format!("{name} is missing"));
        }
    }
    match problems.is_empty() {
        true => Ok(actual),
        false => Err(RegistryError::Tampered {
            dir: dir.to_path_buf(),
            problems: problems.join("; "),
        }),
    }
}

/// Checks a folder's signature against its files only: the statement is whole and every
/// file matches it. Says nothing about who signed (see [`verify_folder`]).
pub fn inspect_folder(dir: &Path) -> Result<Signed, RegistryError> {
    let read = read(dir)?;
    let digests = compare(dir, &read)?;
    Ok(Signed {
        hint: read
            .bundle
            .verification_material
            .public_key
            .and_then(|k| k.hint),
        digests,
    })
}

/// Checks a folder's signature: made by one of `keys`, over a statement that matches
/// every file of the folder. Returns the key that signed.
pub fn verify_folder(dir: &Path, keys: &[PublicKey]) -> Result<(Signed, PublicKey), RegistryError> {
    let read = read(dir)?;
    let bad = |reason: String| RegistryError::BadSignature {
        path: read.path.clone(),
        reason,
    };
    let material = &read.bundle.verification_material;
    let hint = material.public_key.as_ref().and_then(|k| k.hint.clone());
    if material.public_key.is_none() {
        let how = match material.certificate.is_some() || material.x509_certificate_chain.is_some()
        {
            true => "a certificate (model_signing sign certificate or sigstore)",
            false => "no key",
        };
        return Err(bad(format!(
            "was signed with {how}; only signatures made with a key (model_signing sign key, modelforge registry sign) are checked here"
        )));
    }
    let candidates: Vec<&PublicKey> = keys
        .iter()
        .filter(|k| hint.as_ref().is_none_or(|h| *h == k.hint()))
        .collect();
    if candidates.is_empty() {
        return Err(bad(format!(
            "was signed by key {}, which is none of the {} trusted key(s) ({})",
            hint.as_deref().unwrap_or("?"),
            keys.len(),
            keys.iter()
                .map(|k| k.hint()[..12].to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let message = pae(&read.payload);
    let signatures: Vec<Vec<u8>> = read
        .bundle
        .dsse_envelope
        .signatures
        .iter()
        .filter_map(|s| BASE64.decode(&s.sig).ok())
        .collect();
    let signer = candidates
        .into_iter()
        .find(|k| signatures.iter().any(|s| k.verifies(&message, s)))
        .ok_or_else(|| {
            bad("its signature does not verify with the trusted key: the statement or the signature was altered, or another key signed it".into())
        })?;
    let digests = compare(dir, &read)?;
    Ok((Signed { hint, digests }, signer.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("weights.bin"), b"weights").unwrap();
        fs::write(dir.path().join("manifest.json"), b"{}").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/tokenizer.json"), b"{}").unwrap();
        dir
    }

    fn signed(key: &SigningKey) -> tempfile::TempDir {
        let dir = folder();
        let bundle = sign_folder(dir.path(), "m@1", key).unwrap();
        fs::write(dir.path().join(SIGNATURE), bundle).unwrap();
        dir
    }

    #[test]
    fn a_signed_folder_verifies_with_its_key_on_either_curve() {
        for curve in [Curve::P256, Curve::P384] {
            let key = SigningKey::generate(curve);
            let dir = signed(&key);
            let (s, by) = verify_folder(dir.path(), &[key.public_key()]).unwrap();
            assert_eq!(s.files(), 3);
            assert_eq!(by.curve(), curve);
            assert_eq!(s.hint, Some(key.public_key().hint()));
            assert_eq!(inspect_folder(dir.path()).unwrap().files(), 3);
        }
    }

    #[test]
    fn every_change_to_the_files_is_named() {
        let key = SigningKey::generate(Curve::P256);
        let keys = [key.public_key()];
        let dir = signed(&key);
        fs::write(dir.path().join("weights.bin"), b"weightz").unwrap();
        let e = verify_folder(dir.path(), &keys).unwrap_err().to_string();
        assert!(e.contains("weights.bin changed"), "{e}");
        let dir = signed(&key);
        fs::write(dir.path().join("extra.bin"), b"x").unwrap();
        let e = verify_folder(dir.path(), &keys).unwrap_err().to_string();
        assert!(e.contains("extra.bin is not signed"), "{e}");
        let dir = signed(&key);
        fs::remove_file(dir.path().join("sub/tokenizer.json")).unwrap();
        let e = inspect_folder(dir.path()).unwrap_err().to_string();
        assert!(e.contains("sub/tokenizer.json is missing"), "{e}");
        // Git's files and the signature itself are not part of the model.
        let dir = signed(&key);
        fs::write(dir.path().join(".gitattributes"), b"*").unwrap();
        verify_folder(dir.path(), &keys).unwrap();
    }

    #[test]
    fn another_key_or_an_altered_statement_is_refused() {
        let key = SigningKey::generate(Curve::P256);
        let other = SigningKey::generate(Curve::P256);
        let dir = signed(&key);
        let e = verify_folder(dir.path(), &[other.public_key()]).unwrap_err();
        assert!(e.to_string().contains("none of the 1 trusted key"), "{e}");
        // A statement rewritten to match changed files no longer carries a valid signature.
        let path = dir.path().join(SIGNATURE);
        fs::write(dir.path().join("weights.bin"), b"evil").unwrap();
        let forged = sign_folder(dir.path(), "m@1", &other).unwrap();
        let mut bundle: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let forged: serde_json::Value = serde_json::from_slice(&forged).unwrap();
        bundle["dsseEnvelope"]["payload"] = forged["dsseEnvelope"]["payload"].clone();
        fs::write(&path, serde_json::to_vec(&bundle).unwrap()).unwrap();
        let e = verify_folder(dir.path(), &[key.public_key()]).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        fs::write(&path, b"{").unwrap();
        let e = verify_folder(dir.path(), &[key.public_key()]).unwrap_err();
        assert!(e.to_string().contains("is not a Sigstore bundle"), "{e}");
        fs::remove_file(&path).unwrap();
        assert!(matches!(
            verify_folder(dir.path(), &[key.public_key()]),
            Err(RegistryError::Unsigned { .. })
        ));
    }

    #[test]
    fn keys_round_trip_through_pem_and_bad_keys_say_why() {
        for curve in [Curve::P256, Curve::P384] {
            let key = SigningKey::generate(curve);
            let again = SigningKey::from_pem(&key.to_pem()).unwrap();
            assert_eq!(again.public_key(), key.public_key());
            let public = PublicKey::from_pem(&key.public_key().to_pem()).unwrap();
            assert_eq!(public, key.public_key());
            assert!(
                key.public_key()
                    .to_pem()
                    .starts_with("-----BEGIN PUBLIC KEY-----\n")
            );
        }
        let private = SigningKey::generate(Curve::P256).to_pem();
        assert!(
            PublicKey::from_pem(&private)
                .unwrap_err()
                .contains("private key")
        );
        assert!(
            SigningKey::from_pem("hello")
                .unwrap_err()
                .contains("no PEM private key")
        );
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAA==\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(
            SigningKey::from_pem(encrypted)
                .unwrap_err()
                .contains("encrypted")
        );
        assert_eq!("prime256v1".parse::<Curve>(), Ok(Curve::P256));
        assert!("ed25519".parse::<Curve>().is_err());
    }

    #[test]
    fn keygen_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("k.pem"), dir.path().join("k.pub"));
        let made = keygen(&private, &public, Curve::P256).unwrap();
        assert_eq!(PublicKey::read(&public).unwrap(), made);
        assert_eq!(SigningKey::read(&private).unwrap().public_key(), made);
        assert!(keygen(&private, &dir.path().join("other.pub"), Curve::P256).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&private).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
    }
}
