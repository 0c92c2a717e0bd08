//! Signed versions: OpenSSF model-signing's format both ways with the real `model-signing`
//! tool from PyPI, tampering named by both, and a server that serves only what a trusted
//! key signed, under load while unsigned and tampered versions are published.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::{Sandbox, python_in, quick_digits_spec};
use crate::serving::{Server, copy_dir, first_row, under_load, wait_for, wait_unavailable};

/// The python of a venv with `model-signing` (1.1.1: its CLI's flags are pinned here).
fn model_signing() -> String {
    python_in(".venv-sign", &["model-signing==1.1.1", "pyopenssl"])
}

/// Runs `python -m model_signing ARGS`; returns whether it succeeded and what it said.
fn tool(python: &str, args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(python)
        .args(["-m", "model_signing"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// A sandbox with the digits model trained for 2 epochs (one version).
fn digits() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("spec.toml", quick_digits_spec(&sb, 0.0));
    sb.ok(&["run", "--no-serve", "spec.toml", "--threads", "1"]);
    sb
}

/// The three ways a signed folder is changed, each with the file a message must name.
fn tamper(dir: &Path, how: &str) -> &'static str {
    match how {
        "change" => {
            let path = dir.join("weights.safetensors");
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[200] ^= 1;
            std::fs::write(&path, bytes).unwrap();
            "weights.safetensors"
        }
        "add" => {
            std::fs::write(dir.join("extra.bin"), b"smuggled").unwrap();
            "extra.bin"
        }
        _ => {
            std::fs::remove_file(dir.join("evaluation.json")).unwrap();
            "evaluation.json"
        }
    }
}

#[test]
fn signatures_interoperate_with_model_signing_both_ways_and_tampering_is_named() {
    let python = model_signing();
    let sb = digits();
    let version = sb.path().join("models/digits/1");
    let version_arg = version.to_str().unwrap();
    let signature = version.join("model.sig");
    let signature_arg = signature.to_str().unwrap();
    // Unsigned until signed.
    let listed = sb.ok(&["registry", "list"]);
    assert!(listed.contains("unsigned"), "{listed}");
    let made = sb.ok(&["registry", "keygen", "ours.pem"]);
    assert!(made.contains("ours.pem.pub"), "{made}");
    sb.ok(&["registry", "sign", "digits@1", "--key", "ours.pem"]);
    let listed = sb.ok(&["registry", "list", "--key", "ours.pem.pub"]);
    assert!(listed.contains(" signed "), "{listed}");

    // modelforge's signature verifies with the real tool, and with modelforge.
    let ours_pub = sb.path().join("ours.pem.pub");
    let verify_with_tool = |key: &Path| {
        tool(
            &python,
            &[
                "verify",
                "key",
                version_arg,
                "--signature",
                signature_arg,
                "--public_key",
                key.to_str().unwrap(),
            ],
            sb.path(),
        )
    };
    let (ok, said) = verify_with_tool(&ours_pub);
    assert!(ok, "model_signing refused modelforge's signature: {said}");
    let said = sb.ok(&["registry", "verify", "digits@1", "--key", "ours.pem.pub"]);
    assert!(said.contains("signature verified"), "{said}");

    // Each change makes both refuse, naming the file.
    let pristine = sb.path().join("pristine");
    copy_dir(&version, &pristine);
    for how in ["change", "add", "remove"] {
        let file = tamper(&version, how);
        let (ok, said) = verify_with_tool(&ours_pub);
        assert!(
            !ok && said.contains(file),
            "model_signing after {how}: {said}"
        );
        let out = sb.run(&["registry", "verify", "digits@1", "--key", "ours.pem.pub"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(file),
            "modelforge after {how}: {err}"
        );
        std::fs::remove_dir_all(&version).unwrap();
        copy_dir(&pristine, &version);
    }
    let listed = sb.ok(&["registry", "list"]);
    assert!(listed.contains(" signed "), "{listed}");

    // A P-384 key (SEC1 PEM, as OpenSSL writes it) made and used by the real tool.
    let made = Command::new(&python)
        .args([
            "-c",
            "from cryptography.hazmat.primitives.asymmetric import ec\n\
             from cryptography.hazmat.primitives import serialization as s\n\
             k = ec.generate_private_key(ec.SECP384R1())\n\
             open('theirs.pem', 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.TraditionalOpenSSL, s.NoEncryption()))\n\
             open('theirs.pub', 'wb').write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))",
        ])
        .current_dir(sb.path())
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::remove_file(&signature).unwrap();
    let (ok, said) = tool(
        &python,
        &[
            "sign",
            "key",
            version_arg,
            "--signature",
            signature_arg,
            "--private_key",
            "theirs.pem",
        ],
        sb.path(),
    );
    assert!(ok, "model_signing sign: {said}");
    std::fs::remove_dir_all(&pristine).unwrap();
    copy_dir(&version, &pristine);
    let said = sb.ok(&["registry", "verify", "digits@1", "--key", "theirs.pub"]);
    assert!(said.contains("P-384"), "{said}");
    // Signed by them, not by us: our key is refused.
    let out = sb.run(&["registry", "verify", "digits@1", "--key", "ours.pem.pub"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("none of the 1 trusted key"),
        "{err}"
    );
    for how in ["change", "add", "remove"] {
        let file = tamper(&version, how);
        let out = sb.run(&["registry", "verify", "digits@1", "--key", "theirs.pub"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(file),
            "after {how}: {err}"
        );
        std::fs::remove_dir_all(&version).unwrap();
        copy_dir(&pristine, &version);
    }
}

#[test]
fn bad_keys_and_unsigned_versions_get_one_clear_message() {
    let sb = digits();
    sb.write("not-a-key.pem", "hello");
    for (args, says) in [
        (
            vec!["registry", "sign", "digits@1", "--key", "not-a-key.pem"],
            "no PEM private key",
        ),
        (
            vec!["registry", "sign", "digits@1", "--key", "missing.pem"],
            "missing.pem",
        ),
        (
            vec!["registry", "verify", "digits@1", "--key", "not-a-key.pem"],
            "no PEM public key",
        ),
        (
            vec!["registry", "keygen", "k.pem", "--curve", "ed25519"],
            "unknown curve",
        ),
    ] {
        let out = sb.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    sb.ok(&["registry", "keygen", "k.pem"]);
    let out = sb.run(&["registry", "keygen", "k.pem"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("never overwritten"));
    let out = sb.run(&["registry", "verify", "digits@1", "--key", "k.pem.pub"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not signed") && err.contains("registry sign"),
        "{err}"
    );
    // A private key given where a public one is expected says so.
    let out = sb.run(&["registry", "verify", "digits@1", "--key", "k.pem"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a private key"));
    // A spec naming a key that is not there fails before training, at its line.
    let spec = std::fs::read_to_string(sb.path().join("spec.toml")).unwrap();
    sb.write(
        "bad.toml",
        spec.replace("[deploy]", "[deploy]\nsign = { key = \"nowhere.pem\" }"),
    );
    let out = sb.run(&["run", "--no-serve", "bad.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deploy.sign.key") && err.contains("keygen"),
        "{err}"
    );
}

/// Publishes a tampered copy of signed version `from` as version `to`: one weight changed
/// and the manifest and checksums rewritten to match, as someone who can write the
/// registry (but has no key) would do it.
fn publish_tampered(sb: &Sandbox, from: u64, to: u64) {
    let models = sb.path().join("models/digits");
    let staging = models.join(".tampered");
    copy_dir(&models.join(from.to_string()), &staging);
    let weights = staging.join("weights.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    bytes[300] ^= 0x40;
    std::fs::write(&weights, bytes).unwrap();
    let manifest = staging.join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["version"] = json!(to);
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let sums = std::fs::read_to_string(staging.join("checksums.sha256")).unwrap();
    let sums: String = sums
        .lines()
        .map(|line| {
            let file = line.split_once("  ").unwrap().1;
            let bytes = std::fs::read(staging.join(file)).unwrap();
            format!("{}  {file}\n", modelforge_registry::sha256_hex(&bytes))
        })
        .collect();
    std::fs::write(staging.join("checksums.sha256"), sums).unwrap();
    std::fs::rename(&staging, models.join(to.to_string())).unwrap();
}

#[test]
fn a_server_that_trusts_a_key_never_serves_an_unsigned_or_tampered_version() {
    let sb = Sandbox::new();
    sb.ok(&["registry", "keygen", "key.pem"]);
    let signed_spec =
        quick_digits_spec(&sb, 0.0).replace("[deploy]", "[deploy]\nsign = { key = \"key.pem\" }");
    sb.write("spec.toml", &signed_spec);
    // `run` signs what it publishes.
    sb.ok(&["run", "--no-serve", "spec.toml", "--threads", "1"]);
    sb.ok(&["registry", "verify", "digits@1", "--key", "key.pem.pub"]);
    let server = Server::start_with(&sb, &["--trust-key", "key.pem.pub"]);
    let (requests, served) = under_load(&server, || {
        // A signed new version takes over.
        sb.retrain();
        wait_for("version 2", || {
            server.call("GET", "/v2/models/digits", None).1["versions"] == json!(["2"])
        });
        // An unsigned one (MODELFORGE_SIGNING_KEY unset, no key in the spec) is refused.
        sb.write(
            "spec.toml",
            signed_spec.replace("sign = { key = \"key.pem\" }\n", ""),
        );
        sb.retrain();
        wait_unavailable(&server, "3", "is not signed");
        // So is a copy of version 2 with one weight changed and its checksums redone.
        publish_tampered(&sb, 2, 4);
        wait_unavailable(&server, "4", "weights.safetensors changed");
    });
    assert!(served.contains("2"), "version 2 never answered: {served:?}");
    assert!(!served.contains("3") && !served.contains("4"), "{served:?}");
    assert_eq!(
        server
            .call("GET", "/v2/models/digits/versions/4/ready", None)
            .0,
        503
    );
    let text = server.metrics_page();
    assert!(
        text.contains("modelforge_untrusted_versions_total{model=\"digits\"} 2"),
        "{text}"
    );
    let logs = server.logs.lock().unwrap().join("\n");
    assert!(
        logs.contains("version refused") && logs.contains("\"version\":4"),
        "{logs}"
    );
    eprintln!(
        "{requests} requests while an unsigned and a tampered version were published, none failed"
    );
}

/// A certificate authority made for a test.
fn authority(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// Writes `NAME.pem` and `NAME.key`: a certificate for `names` signed by `issuer`.
fn issue(
    sb: &Sandbox,
    issuer: &rcgen::CertifiedIssuer<'_, rcgen::KeyPair>,
    name: &str,
    names: &[&str],
) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    sb.write(&format!("tls/{name}.pem"), cert.pem());
    sb.write(&format!("tls/{name}.key"), key.serialize_pem());
}

#[test]
fn tls_and_mutual_tls_serve_tritonclient_and_refuse_everyone_else() {
    let python = crate::common::python(&["tritonclient[http,grpc]", "numpy"]);
    let sb = digits();
    let (ca, other) = (authority("modelforge test CA"), authority("someone else"));
    sb.write("tls/ca.pem", ca.pem());
    issue(&sb, &ca, "server", &["localhost", "127.0.0.1"]);
    issue(&sb, &ca, "client", &["client"]);
    issue(&sb, &other, "stranger", &["stranger"]);
    let server = Server::start_with(
        &sb,
        &[
            "--tls-cert",
            "tls/server.pem",
            "--tls-key",
            "tls/server.key",
            "--tls-client-ca",
            "tls/ca.pem",
            "--token-everywhere",
        ],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let port = |url: &str| url.rsplit(':').next().unwrap().to_string();
    let (row, _) = first_row();
    sb.write("row.json", serde_json::to_string(&row).unwrap());
    let file = |name: &str| sb.path().join(name).to_str().unwrap().to_string();
    let report = crate::common::client_report(
        &python,
        "triton_tls.py",
        &[
            &format!("localhost:{}", port(&server.base)),
            &format!("localhost:{}", port(&server.grpc)),
            "digits",
            &file("row.json"),
            &file("tls"),
            "s3cret",
        ],
    );
    eprintln!("{report}");
    let https = report["https"][0].as_array().unwrap();
    assert_eq!(https.len(), 10, "{report}");
    assert_eq!(report["https"], report["grpc"], "{report}");
    for refusal in [
        "no_token",
        "plain_text",
        "stranger",
        "grpc_stranger",
        "grpc_anonymous",
    ] {
        assert!(
            report[refusal].is_string(),
            "{refusal} was let in: {report}"
        );
    }
    // A plain-text request to the TLS port gets no HTTP answer; the server keeps serving.
    let plain = ureq::get(format!(
        "http://127.0.0.1:{}/v2/health/live",
        port(&server.base)
    ))
    .call();
    assert!(plain.is_err(), "plain text answered: {plain:?}");
    let logs = server.logs.lock().unwrap().join("\n");
    assert!(logs.contains("TLS handshake refused"), "{logs}");
}

#[test]
fn bad_tls_files_stop_the_server_before_it_listens() {
    let sb = digits();
    sb.write("junk.pem", "not a certificate");
    let out = sb.run(&[
        "serve",
        "--http",
        "127.0.0.1:0",
        "--grpc",
        "127.0.0.1:0",
        "--tls-cert",
        "junk.pem",
        "--tls-key",
        "junk.pem",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("junk.pem") && err.contains("no certificate"),
        "{err}"
    );
    let out = sb.run(&["serve", "--tls-cert", "junk.pem"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}
