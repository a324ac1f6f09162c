//! All of mailroot's TLS, on rustls with the ring provider (TLS 1.2 and 1.3 only, rustls' safe
//! defaults): the server configuration from TlsCertificateFile and TlsKeyFile and the server side of a
//! handshake (`server`), the outbound client configurations and the client side (`client`), and what
//! both sides share: the handshake under a deadline, the "version cipher" description for the
//! Received header and the logs, and the close.

pub mod client;
pub mod server;

use std::fmt;
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ConnectionCommon, SideData};

pub use client::{ClientIdentity, ClientTls};
pub use server::server_config;

use super::stream::Stream;

/// The provider every configuration uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM file of certificates (a chain, or CA certificates); `setting` names the key that
/// points at it, for the error.
pub fn read_certificates(
    path: &Path,
    setting: Option<&'static str>,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |problem: String| TlsError::Certificates {
        setting,
        path: path.to_path_buf(),
        problem,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })
}

/// Why a TLS configuration could not be built.
#[derive(Debug, Clone)]
pub enum TlsError {
    /// A file of certificates could not be read or parsed, or holds none.
    Certificates {
        /// The setting that names the file, when the message should say it.
        setting: Option<&'static str>,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The key file holds no usable private key.
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The key does not fit the certificate, or rustls cannot use it.
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// rustls refused the configuration.
    Config(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Certificates {
                setting: Some(s),
                path,
                problem,
            } => write!(f, "{s} {}: {problem}", path.display()),
            TlsError::Certificates {
                setting: None,
                path,
                problem,
            } => write!(f, "{}: {problem}", path.display()),
            TlsError::Key { path, problem } => {
                write!(f, "{}: no usable private key ({problem})", path.display())
            }
            TlsError::KeyMismatch { cert, source } => write!(
                f,
                "{}: the key does not fit the certificate or is unusable ({source})",
                cert.display()
            ),
            TlsError::Config(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl TlsError {
    /// The file the error is about, if it is about one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            TlsError::Certificates { path, .. } | TlsError::Key { path, .. } => Some(path),
            TlsError::KeyMismatch { cert, .. } => Some(cert),
            TlsError::Config(_) => None,
        }
    }
}

/// Why a handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// The host name cannot be a TLS server name (client side).
    ServerName(String),
    /// rustls could not start the connection.
    Setup(rustls::Error),
    /// The deadline passed before the handshake was done.
    TimedOut,
    /// The peer or the socket failed (a certificate refused, an alert, a reset).
    Io(io::Error),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::ServerName(h) => write!(f, "`{h}` is not a valid server name"),
            HandshakeError::Setup(e) => write!(f, "{e}"),
            HandshakeError::TimedOut => f.write_str("TLS handshake timed out"),
            HandshakeError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Drives a handshake to its end within `timeout` in all: a peer that sends a byte now and then
/// cannot hold the thread by keeping each single read alive. Leaves the socket's read timeout at
/// whatever was left of the deadline.
fn handshake<C, S>(
    conn: &mut C,
    sock: &mut TcpStream,
    timeout: Duration,
) -> Result<(), HandshakeError>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    let deadline = Instant::now() + timeout;
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HandshakeError::TimedOut);
        }
        sock.set_read_timeout(Some(left))
            .map_err(HandshakeError::Io)?;
        conn.complete_io(sock).map_err(HandshakeError::Io)?;
    }
    Ok(())
}

/// The negotiated version and cipher suite, as "TLSv1_3 TLS13_AES_256_GCM_SHA384", for the
/// Received header and the logs.
pub fn describe<S: SideData>(conn: &ConnectionCommon<S>) -> String {
    let version = conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|c| format!("{:?}", c.suite()))
        .unwrap_or_default();
    format!("{version} {cipher}").trim().to_string()
}

/// Sends TLS close_notify when the stream is in TLS (errors ignored: the peer may be gone).
pub fn close_notify<C, S>(stream: &mut Stream<C>)
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    if let Stream::Tls(s) = stream {
        s.conn.send_close_notify();
        let _ = s.flush();
    }
}

/// Sends TLS close_notify (when in TLS), then shuts the socket down.
pub fn close<C, S>(stream: &mut Stream<C>)
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    close_notify(stream);
    let _ = stream.tcp().shutdown(Shutdown::Both);
}
