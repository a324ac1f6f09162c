//! The client side, for outbound TLS: the rustls configurations, verified (the system's roots plus
//! OutboundTlsCaFile) for `required` and `implicit`, and unverified for `opportunistic` STARTTLS, where
//! encryption without authentication is still better than plaintext (as Postfix's `may` level); and
//! the handshake. TLS 1.2 is the minimum (rustls speaks nothing older).

use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
    StreamOwned,
};

use super::{HandshakeError, TlsError, describe, handshake, provider};
use crate::net::stream::ClientStream;

/// The two client configurations, built at the first outbound TLS connection: loading and parsing
/// the system's trust roots costs memory and start-up time that a relay to a plaintext smart host
/// never needs. The CA file is read and checked at start-up, so a bad one still stops the server.
#[derive(Debug, Clone)]
pub struct ClientTls {
    ca_certs: Arc<Vec<CertificateDer<'static>>>,
    built: Arc<OnceLock<Result<Configs, TlsError>>>,
}

#[derive(Debug)]
struct Configs {
    verified: Arc<ClientConfig>,
    unverified: Arc<ClientConfig>,
}

impl ClientTls {
    /// Reads OutboundTlsCaFile, if any; the configurations themselves are built on first use.
    pub fn new(ca_file: Option<&Path>) -> Result<ClientTls, TlsError> {
        let mut ca_certs = Vec::new();
        if let Some(path) = ca_file {
            let bad = |problem: String| TlsError::Certificates {
                setting: Some("OutboundTlsCaFile"),
                path: path.to_path_buf(),
                problem,
            };
            ca_certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if ca_certs.is_empty() {
                return Err(bad("no certificate in the file".into()));
            }
            let mut check = RootCertStore::empty();
            for c in &ca_certs {
                check.add(c.clone()).map_err(|e| bad(e.to_string()))?;
            }
        }
        Ok(ClientTls {
            ca_certs: Arc::new(ca_certs),
            built: Arc::new(OnceLock::new()),
        })
    }

    /// The configuration that verifies the server's certificate (the system's roots plus the CA file).
    pub fn verified(&self) -> Result<Arc<ClientConfig>, TlsError> {
        self.configs().map(|c| c.verified.clone())
    }

    /// The configuration that takes any certificate (opportunistic STARTTLS).
    pub fn unverified(&self) -> Result<Arc<ClientConfig>, TlsError> {
        self.configs().map(|c| c.unverified.clone())
    }

    fn configs(&self) -> Result<&Configs, TlsError> {
        self.built
            .get_or_init(|| build(&self.ca_certs))
            .as_ref()
            .map_err(Clone::clone)
    }
}

fn build(ca_certs: &[CertificateDer<'static>]) -> Result<Configs, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    for c in ca_certs {
        roots.add(c.clone()).map_err(TlsError::Config)?;
    }
    log::debug!(
        "outbound TLS: {added} system trust roots, {} from OutboundTlsCaFile",
        ca_certs.len()
    );
    let verified = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let algs = provider().signature_verification_algorithms;
    let unverified = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(algs)))
        .with_no_client_auth();
    Ok(Configs {
        verified: Arc::new(verified),
        unverified: Arc::new(unverified),
    })
}

/// Runs the client side of a TLS handshake with `host` on `tcp`, within `timeout` in all, so that
/// certificate errors show up here and not at the first command. Returns the stream and its
/// [`describe`] line; the socket's read timeout is put back as it was.
pub fn connect(
    config: Arc<ClientConfig>,
    host: &str,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<(ClientStream, String), HandshakeError> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| HandshakeError::ServerName(host.to_string()))?;
    let conn = ClientConnection::new(config, name).map_err(HandshakeError::Setup)?;
    let read_timeout = tcp.read_timeout().map_err(HandshakeError::Io)?;
    let mut s = StreamOwned::new(conn, tcp);
    handshake(&mut s.conn, &mut s.sock, timeout)?;
    s.sock
        .set_read_timeout(read_timeout)
        .map_err(HandshakeError::Io)?;
    let d = describe(&s.conn);
    Ok((ClientStream::Tls(Box::new(s)), d))
}

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
