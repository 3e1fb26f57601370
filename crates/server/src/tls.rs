//! TLS termination (`https://`, `wss://`): the certificate and key from PEM files, with
//! rustls. The handshake runs before HTTP; a WebSocket then continues the session sans-IO
//! (see [`crate::ws::transport`]).

use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig as RustlsConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// The ALPN protocol id of HTTP/2.
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// Why the TLS configuration could not be loaded. Each names the file and the key.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// The certificate file is unreadable or holds no PEM certificate.
    #[error("tls.cert: cannot read a PEM certificate from {path}: {reason}")]
    Cert {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The key file is unreadable or holds no PEM private key.
    #[error("tls.key: cannot read a PEM private key from {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the pair (for example, the key does not match the certificate).
    #[error("tls: the certificate and key are not usable together: {0}")]
    Pair(rustls::Error),
}

/// A TLS acceptor for `config`, offering by ALPN HTTP/2 (many SSE streams on one connection)
/// and HTTP/1.1 (WebSocket upgrades need it), in that order of preference.
pub(crate) fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let cert_path = config.cert_path.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert_path)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert_path,
            reason: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_path).map_err(|e| TlsError::Key {
        path: config.key_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = RustlsConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Pair)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Pair)?;
    tls.alpn_protocols = vec![ALPN_H2.to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(tls)))
}
