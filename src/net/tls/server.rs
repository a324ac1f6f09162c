//! The server side: the configuration from TlsCertificateFile and TlsKeyFile, loaded when the
//! configuration is read, so a bad file stops the server at start-up and `mailroot check` reports it,
//! naming the file; and the handshake of an implicit TLS binding or of STARTTLS.

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::{HandshakeError, TlsError, describe, handshake, provider, read_certificates, read_key};
use crate::net::stream::ServerStream;

/// Builds the server configuration from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certificates(cert, None)?;
    let key = read_key(key)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            source,
        })?;
    Ok(Arc::new(config))
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
