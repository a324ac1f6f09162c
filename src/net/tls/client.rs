//! The client side, for outbound TLS: the rustls configurations, verified (the system's roots plus
//! OutboundTlsCaFile) for `required` and `implicit`, and unverified for `opportunistic` STARTTLS, where
//! encryption without authentication is still better than plaintext (as Postfix's `may` level); and
//! the handshake. TLS 1.2 is the minimum (rustls speaks nothing older).

use std::fmt;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
    StreamOwned,
};

use super::{HandshakeError, TlsError, describe, handshake, provider, read_certificates, read_key};
use crate::net::stream::ClientStream;

/// The two client configurations, built at the first outbound TLS connection: loading and parsing
/// the system's trust roots costs memory and start-up time that a relay to a plaintext smart host
/// never needs. The CA file is read and checked at start-up, so a bad one still stops the server.
#[derive(Debug, Clone)]
pub struct ClientTls {
    ca_certs: Arc<Vec<CertificateDer<'static>>>,
    roots: Arc<OnceLock<Arc<Vec<CertificateDer<'static>>>>>,
    identity: Option<Arc<ClientIdentity>>,
    built: Arc<OnceLock<Result<Configs, TlsError>>>,
}

#[derive(Debug)]
struct Configs {
    verified: Arc<ClientConfig>,
    unverified: Arc<ClientConfig>,
}

/// A client certificate chain and its key (OutboundTlsCertificateFile, OutboundTlsKeyFile), read
/// and checked when the configuration is loaded.
pub struct ClientIdentity {
    /// The certificate file, as configured.
    pub cert_file: PathBuf,
    /// The key file, as configured.
    pub key_file: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl ClientIdentity {
    /// Reads the chain and the key, and checks that rustls can present them.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<ClientIdentity, TlsError> {
        let chain = read_certificates(cert_file, Some("OutboundTlsCertificateFile"))?;
        let key = read_key(key_file)?;
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(RootCertStore::empty())
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|source| TlsError::KeyMismatch {
                cert: cert_file.to_path_buf(),
                source,
            })?;
        Ok(ClientIdentity {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            chain,
            key,
        })
    }
}

// The key never reaches a log through Debug.
impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClientIdentity {{ cert_file: {:?}, key_file: {:?} }}",
            self.cert_file, self.key_file
        )
    }
}

impl PartialEq for ClientIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.chain == other.chain && self.key_file == other.key_file
    }
}

impl Eq for ClientIdentity {}

impl ClientTls {
    /// Reads OutboundTlsCaFile, if any; the configurations themselves are built on first use.
    pub fn new(ca_file: Option<&Path>) -> Result<ClientTls, TlsError> {
        let mut ca_certs = Vec::new();
        if let Some(path) = ca_file {
            ca_certs = read_certificates(path, Some("OutboundTlsCaFile"))?;
            let mut check = RootCertStore::empty();
            for c in &ca_certs {
                check.add(c.clone()).map_err(|e| TlsError::Certificates {
                    setting: Some("OutboundTlsCaFile"),
                    path: path.to_path_buf(),
                    problem: e.to_string(),
                })?;
            }
        }
        Ok(ClientTls {
            ca_certs: Arc::new(ca_certs),
            roots: Arc::new(OnceLock::new()),
            identity: None,
            built: Arc::new(OnceLock::new()),
        })
    }

    /// The same trust, presenting `identity` to servers that ask for a client certificate.
    pub fn with_identity(&self, identity: Arc<ClientIdentity>) -> ClientTls {
        ClientTls {
            ca_certs: self.ca_certs.clone(),
            roots: self.roots.clone(),
            identity: Some(identity),
            built: Arc::new(OnceLock::new()),
        }
    }

    /// The configuration that verifies the server's certificate (the system's roots plus the CA file).
    pub fn verified(&self) -> Result<Arc<ClientConfig>, TlsError> {
        self.configs().map(|c| c.verified.clone())
    }

    /// The configuration that takes any certificate (opportunistic STARTTLS).
    pub fn unverified(&self) -> Result<Arc<ClientConfig>, TlsError> {
        self.configs().map(|c| c.unverified.clone())
    }

    /// The trusted roots: the system's plus OutboundTlsCaFile (the HTTPS client of the OAuth token
    /// endpoints trusts the same), loaded once.
    pub fn roots(&self) -> Arc<Vec<CertificateDer<'static>>> {
        self.roots
            .get_or_init(|| {
                let native = rustls_native_certs::load_native_certs();
                let mut all = native.certs;
                log::debug!(
                    "outbound TLS: {} system trust roots, {} from OutboundTlsCaFile",
                    all.len(),
                    self.ca_certs.len()
                );
                all.extend(self.ca_certs.iter().cloned());
                Arc::new(all)
            })
            .clone()
    }

    fn configs(&self) -> Result<&Configs, TlsError> {
        self.built
            .get_or_init(|| self.build())
            .as_ref()
            .map_err(Clone::clone)
    }

    fn build(&self) -> Result<Configs, TlsError> {
        let mut roots = RootCertStore::empty();
        let all = self.roots();
        let system = all.len() - self.ca_certs.len();
        roots.add_parsable_certificates(all[..system].iter().cloned());
        for c in self.ca_certs.iter() {
            roots.add(c.clone()).map_err(TlsError::Config)?;
        }
        let verified = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(roots);
        let algs = provider().signature_verification_algorithms;
        let unverified = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(algs)));
        let (verified, unverified) = match &self.identity {
            Some(id) => {
                let present =
                    |b: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>| {
                        b.with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                            .map_err(|source| TlsError::KeyMismatch {
                                cert: id.cert_file.clone(),
                                source,
                            })
                    };
                (present(verified)?, present(unverified)?)
            }
            None => (
                verified.with_no_client_auth(),
                unverified.with_no_client_auth(),
            ),
        };
        Ok(Configs {
            verified: Arc::new(verified),
            unverified: Arc::new(unverified),
        })
    }
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
