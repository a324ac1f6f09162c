//! The server's TLS configuration (rustls, TLS 1.2 and 1.3 only, rustls' safe defaults) from
//! TlsCertificateFile and TlsKeyFile. Loaded when the configuration is read, so a bad file stops the
//! server at start-up and `mailroot check` reports it, naming the file.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Builds the server configuration from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: no usable private key ({e})", key.display()))?;
    let config = ServerConfig::builder_with_provider(crate::delivery::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "{}: the key does not fit the certificate or is unusable ({e})",
                cert.display()
            )
        })?;
    Ok(Arc::new(config))
}
