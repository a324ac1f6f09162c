//! A session's socket, plain or inside TLS (STARTTLS or an implicit TLS binding), behind one Read and
//! Write so the connection loop does not care which.

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// A session's socket, plain or TLS.
pub type Stream = crate::net::stream::Stream<ServerConnection>;

impl crate::net::stream::Stream<ServerConnection> {
    /// Runs the server side of a TLS handshake on `tcp`, with `timeout` for the whole of it.
    /// Returns the stream and "version cipher" for the Received header.
    pub fn accept_tls(
        tcp: TcpStream,
        config: Arc<ServerConfig>,
        timeout: Duration,
    ) -> io::Result<(Stream, String)> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        let mut s = StreamOwned::new(conn, tcp);
        let deadline = std::time::Instant::now() + timeout;
        while s.conn.is_handshaking() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ));
            }
            s.sock.set_read_timeout(Some(left))?;
            s.conn.complete_io(&mut s.sock)?;
        }
        let version = s
            .conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        let cipher = s
            .conn
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default();
        Ok((
            Stream::Tls(Box::new(s)),
            format!("{version} {cipher}").trim().to_string(),
        ))
    }

    /// Sends TLS close_notify (when in TLS), then shuts the socket down.
    pub fn close(&mut self) {
        if let Stream::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        let _ = self.tcp().shutdown(std::net::Shutdown::Both);
    }
}
