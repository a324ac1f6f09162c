//! The server side: the configuration from TlsCertificateFile and TlsKeyFile (and, optionally, a
//! second ECDSA certificate from TlsEcdsaCertificateFile and TlsEcdsaKeyFile), loaded when the
//! configuration is read, so a bad file stops the server at start-up and `mailroot check` reports it,
//! naming the file; and the handshake of an implicit TLS binding or of STARTTLS.
//!
//! Why two certificates: rustls offers only ECDHE key exchange with AEAD ciphers. Schannel on Windows
//! 7 / Server 2008 R2 has those only with ECDSA certificates (TLS_ECDHE_ECDSA_WITH_AES_*_GCM), so an
//! application there finds no common cipher with an RSA certificate. With both, each client gets the
//! one its hello can use, as Postfix's smtpd_tls_eccert_file does (docs/security.md, "TLS for old
//! Windows clients").

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, ServerConfig, ServerConnection, SignatureAlgorithm, StreamOwned};

use super::{HandshakeError, TlsError, describe, handshake, provider, read_certificates, read_key};
use crate::net::stream::ServerStream;

/// Builds the server configuration from a PEM certificate chain and a PEM private key, and with
/// `ecdsa` a second chain and key (ECDSA) for the clients that can use it.
pub fn server_config(
    cert: &Path,
    key: &Path,
    ecdsa: Option<(&Path, &Path)>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth();
    let mut config = match ecdsa {
        None => builder
            .with_single_cert(read_certificates(cert, None)?, read_key(key)?)
            .map_err(|source| TlsError::KeyMismatch {
                cert: cert.to_path_buf(),
                source,
            })?,
        Some((ecdsa_cert, ecdsa_key)) => {
            let main = certified(cert, key, &provider)?;
            let second = certified(ecdsa_cert, ecdsa_key, &provider)?;
            if second.key.algorithm() != SignatureAlgorithm::ECDSA {
                return Err(TlsError::Key {
                    path: ecdsa_key.to_path_buf(),
                    problem: "not an ECDSA key (TlsEcdsaKeyFile takes a P-256 or P-384 key)".into(),
                });
            }
            builder.with_cert_resolver(Arc::new(ByClientHello {
                main,
                ecdsa: second,
            }))
        }
    };
    // Our order of cipher suites, not the client's: the strongest both sides have.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// A chain and its key, checked to belong together.
fn certified(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let ck = CertifiedKey::from_der(read_certificates(cert, None)?, read_key(key)?, provider)
        .map_err(|source| TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            source,
        })?;
    Ok(Arc::new(ck))
}

/// Two certificates: the ECDSA one for a client whose hello can use it, the main one otherwise.
#[derive(Debug)]
struct ByClientHello {
    main: Arc<CertifiedKey>,
    ecdsa: Arc<CertifiedKey>,
}

impl ResolvesServerCert for ByClientHello {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let fits = self
            .ecdsa
            .key
            .choose_scheme(hello.signature_schemes())
            .is_some()
            && ecdsa_suites(hello.cipher_suites());
        Some(if fits { &self.ecdsa } else { &self.main }.clone())
    }
}

/// Whether the client offers a suite rustls has that an ECDSA certificate can serve: any TLS 1.3
/// suite, or a TLS 1.2 ECDHE_ECDSA one.
pub fn ecdsa_suites(offered: &[CipherSuite]) -> bool {
    offered.iter().any(|s| {
        matches!(
            s,
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS13_AES_256_GCM_SHA384
                | CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        )
    })
}

/// Runs the server side of a TLS handshake on `tcp`, with `timeout` for the whole of it. Returns the
/// stream and its [`describe`] line. The socket's read timeout is left at what was left of `timeout`.
pub fn accept(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    timeout: Duration,
) -> Result<(ServerStream, String), HandshakeError> {
    let conn = ServerConnection::new(config).map_err(HandshakeError::Setup)?;
    let mut s = StreamOwned::new(conn, tcp);
    handshake(&mut s.conn, &mut s.sock, timeout)?;
    let d = describe(&s.conn);
    Ok((ServerStream::Tls(Box::new(s)), d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_suites_an_ecdsa_certificate_serves() {
        // Windows 7's Schannel: ECDSA with GCM, RSA only with CBC (which rustls does not have).
        assert!(ecdsa_suites(&[
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ]));
        assert!(ecdsa_suites(&[CipherSuite::TLS13_AES_128_GCM_SHA256]));
        assert!(!ecdsa_suites(&[
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            CipherSuite::TLS_RSA_WITH_AES_128_CBC_SHA,
        ]));
        assert!(!ecdsa_suites(&[]));
    }
}
