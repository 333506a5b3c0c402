//! Mutual TLS for the cluster's sessions, when certificates are given: every node
//! presents a certificate signed by the cluster's CA and checks the other's, so that
//! the cookie and the run protocol (task text, answers) never cross the network in
//! the clear. Without certificates, sessions are authenticated by the cookie only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::ClusterError;

/// A node's certificate files (PEM).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Its certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The cluster's CA certificate(s), which every peer's certificate must chain to.
    pub ca: PathBuf,
}

fn bad(path: &Path, what: impl std::fmt::Display) -> ClusterError {
    ClusterError::Tls(format!("{}: {what}", path.display()))
}

struct Loaded {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
}

fn load(files: &TlsFiles) -> Result<Loaded, ClusterError> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad(&files.cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&files.cert, e))?;
    if certs.is_empty() {
        return Err(bad(&files.cert, "no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad(&files.key, e))?;
    let mut roots = RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(&files.ca)
        .map_err(|e| bad(&files.ca, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&files.ca, e))?;
    let (added, _) = roots.add_parsable_certificates(cas);
    if added == 0 {
        return Err(bad(&files.ca, "no usable CA certificate in it"));
    }
    Ok(Loaded {
        certs,
        key,
        roots: Arc::new(roots),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The listening side: presents its certificate, requires the peer's.
pub(crate) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ClusterError> {
    let l = load(files)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(l.roots, provider())
        .build()
        .map_err(|e| bad(&files.ca, e))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClusterError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(l.certs, l.key)
        .map_err(|e| bad(&files.cert, e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The joining side: checks the orchestrator's certificate against the CA for
/// `host` (a name or an IP address its certificate must carry), presents its own.
pub(crate) fn connector(
    files: &TlsFiles,
    host: &str,
) -> Result<(TlsConnector, ServerName<'static>), ClusterError> {
    let l = load(files)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClusterError::Tls(e.to_string()))?
        .with_root_certificates(l.roots)
        .with_client_auth_cert(l.certs, l.key)
        .map_err(|e| bad(&files.cert, e))?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| ClusterError::Tls(format!("`{host}` is not a server name: {e}")))?;
    Ok((TlsConnector::from(Arc::new(config)), name))
}
