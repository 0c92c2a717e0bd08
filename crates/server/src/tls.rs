//! TLS on both sockets (rustls with the ring provider): REST connections are accepted here
//! and their handshakes completed off the accept loop; gRPC goes through tonic's acceptor
//! over the same certificate. With a client CA, both demand a client certificate it
//! signed (mutual TLS).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use crate::ServerError;

/// How long a client may take to complete its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// The PEM files TLS is made of.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// Client certificates must be signed by this CA (mutual TLS), when given.
    pub client_ca: Option<PathBuf>,
}

/// TLS settings loaded and checked, for both listeners.
#[derive(Clone)]
pub struct Tls {
    rest: Arc<rustls::ServerConfig>,
    grpc: tonic::transport::ServerTlsConfig,
}

/// Reads a PEM file.
fn read(path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|e| ServerError::Tls {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The certificates of a PEM file, at least one.
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let bad = |reason: String| ServerError::Tls {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("is not a PEM certificate file: {e}")))?;
    match certs.is_empty() {
        true => Err(bad("holds no certificate (BEGIN CERTIFICATE)".into())),
        false => Ok(certs),
    }
}

impl Tls {
    /// Loads the certificate, key and client CA, and checks that they make a server.
    pub fn load(files: &TlsFiles) -> Result<Tls, ServerError> {
        let (cert_pem, key_pem) = (read(&files.cert)?, read(&files.key)?);
        let certs = certificates(&files.cert, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| ServerError::Tls {
            path: files.key.clone(),
            reason: format!("holds no usable private key: {e}"),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions");
        let mut grpc = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&cert_pem, &key_pem));
        let builder = match &files.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let ca_pem = read(path)?;
                let mut roots = rustls::RootCertStore::empty();
                for ca in certificates(path, &ca_pem)? {
                    roots.add(ca).map_err(|e| ServerError::Tls {
                        path: path.clone(),
                        reason: format!("is not a usable CA certificate: {e}"),
                    })?;
                }
                grpc = grpc.client_ca_root(tonic::transport::Certificate::from_pem(&ca_pem));
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| ServerError::Tls {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut rest = builder
            .with_single_cert(certs, key)
            .map_err(|e| ServerError::Tls {
                path: files.key.clone(),
                reason: format!(
                    "does not match the certificate {}: {e}",
                    files.cert.display()
                ),
            })?;
        rest.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            rest: Arc::new(rest),
            grpc,
        })
    }

    /// tonic's settings for the gRPC listener.
    pub(crate) fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        self.grpc.clone()
    }
}

/// The REST listener's connections after their handshake: TCP connections are accepted
/// in a task of their own and each handshake runs in its own task, so a slow or failing
/// client never holds up the others.
pub(crate) struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` with `tls`.
    pub(crate) fn start(tcp: TcpListener, tls: &Tls) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.rest.clone());
        let (done, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(_) => {
                        // Out of descriptors and the like: try again shortly.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, handed) = (acceptor.clone(), done.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = handed.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => crate::access::event(
                            "warn",
                            "TLS handshake refused",
                            serde_json::json!({ "peer": peer.to_string(), "error": e.to_string() }),
                        ),
                        Err(_) => crate::access::event(
                            "warn",
                            "TLS handshake timed out",
                            serde_json::json!({ "peer": peer.to_string() }),
                        ),
                    }
                });
                if done.is_closed() {
                    return;
                }
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ended: no connection comes any more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_name_the_file_and_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let files = |cert: PathBuf, key: PathBuf| TlsFiles {
            cert,
            key,
            client_ca: None,
        };
        let junk = write("junk.pem", "hello");
        let e = Tls::load(&files(junk.clone(), junk.clone()))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("junk.pem") && e.contains("no certificate"),
            "{e}"
        );
        let e = Tls::load(&files(dir.path().join("none.pem"), junk))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("none.pem"), "{e}");
    }
}
