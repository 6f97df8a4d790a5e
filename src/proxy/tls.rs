//! TLS for the proxy (tokio-rustls): the server side that terminates the devices'
//! TLS (`--tls-cert`, `--tls-key`) and the client side that re-originates it toward
//! the upstream (`--upstream-tls`, `--upstream-ca`). Loading fails with the file and
//! what was wrong with it; nothing here reads or writes a socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no {what} in PEM form", path.display())]
    Missing { path: PathBuf, what: &'static str },
    #[error("{}: {detail}", path.display())]
    Rejected { path: PathBuf, detail: String },
    #[error("system root certificates: {0}")]
    NativeRoots(std::io::Error),
    #[error("upstream {upstream:?}: {detail}")]
    ServerName { upstream: String, detail: String },
}

/// TLS toward the upstream.
#[derive(Clone)]
pub struct UpstreamTls {
    pub config: Arc<ClientConfig>,
    /// The name the upstream's certificate must carry: the host of `--upstream`.
    pub name: ServerName<'static>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpstreamTls({:?})", self.name)
    }
}

/// What the proxy does with TLS.
#[derive(Clone, Default)]
pub struct TlsSettings {
    /// Terminates the devices' TLS with this certificate and key.
    pub accept: Option<Arc<ServerConfig>>,
    /// Speaks TLS to the upstream.
    pub upstream: Option<UpstreamTls>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("accept", &self.accept.is_some())
            .field("upstream", &self.upstream)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: path.into(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: path.into(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The crypto provider, named rather than left to the process default.
fn provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// The server side: the certificate chain in `cert` (leaf first) and its key in `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs(cert)?;
    let pem = read(key)?;
    let key_der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: key.into(),
            source,
        })?
        .ok_or_else(|| TlsError::Missing {
            path: key.into(),
            what: "private key",
        })?;
    // A client that sends an IP address as SNI (not allowed by RFC 6066, yet what
    // mosquitto_pub -h 127.0.0.1 and many devices do), or no SNI at all, gets the one
    // certificate: rustls 0.23 treats an IP address as no SNI.
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rejected {
            path: cert.into(),
            detail: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::Rejected {
            path: key.into(),
            detail: e.to_string(),
        })?;
    Ok(Arc::new(config))
}

/// The client side toward `upstream` (`HOST:PORT`), trusting the certificates in
/// `ca`, or the system's roots without it.
pub fn upstream_config(upstream: &str, ca: Option<&Path>) -> Result<UpstreamTls, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for c in certs(path)? {
                roots.add(c).map_err(|e| TlsError::Rejected {
                    path: path.into(),
                    detail: e.to_string(),
                })?;
            }
        }
        None => {
            // Unparsable system certificates are skipped, as browsers do.
            for c in rustls_native_certs::load_native_certs().map_err(TlsError::NativeRoots)? {
                let _ = roots.add(c);
            }
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::ServerName {
            upstream: upstream.into(),
            detail: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = match upstream.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => upstream,
    };
    let name = ServerName::try_from(host.to_string()).map_err(|e| TlsError::ServerName {
        upstream: upstream.into(),
        detail: e.to_string(),
    })?;
    Ok(UpstreamTls {
        config: Arc::new(config),
        name,
    })
}
