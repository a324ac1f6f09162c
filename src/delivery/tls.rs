//! rustls client configurations for outbound TLS: verified (the system's roots plus
//! OutboundTlsCaFile) for `required` and `implicit`, and unverified for `opportunistic` STARTTLS, where
//! encryption without authentication is still better than plaintext (as Postfix's `may` level). TLS 1.2
//! is the minimum (rustls speaks nothing older).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The provider every configuration uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Both client configurations of a delivery engine.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// Certificates checked against the trust roots and the host name.
    pub verified: Arc<ClientConfig>,
    /// Any certificate accepted (the handshake signatures are still checked).
    pub unverified: Arc<ClientConfig>,
}

impl ClientTls {
    /// Loads the system's roots and `ca_file` (PEM, any number of certificates).
    pub fn new(ca_file: Option<&Path>) -> Result<ClientTls, String> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if let Some(path) = ca_file {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("OutboundTlsCaFile {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("OutboundTlsCaFile {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "OutboundTlsCaFile {}: no certificate in the file",
                    path.display()
                ));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("OutboundTlsCaFile {}: {e}", path.display()))?;
            }
        }
        log::debug!(
            "outbound TLS: {added} system trust roots, CA file {:?}",
            ca_file
        );
        let verified = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let algs = provider().signature_verification_algorithms;
        let unverified = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(algs)))
            .with_no_client_auth();
        Ok(ClientTls {
            verified: Arc::new(verified),
            unverified: Arc::new(unverified),
        })
    }
}

/// Accepts any certificate: opportunistic TLS only protects against passive listeners.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
