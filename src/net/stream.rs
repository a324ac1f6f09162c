//! A socket, plain or inside TLS, behind one Read and Write: the server's sessions (STARTTLS,
//! implicit TLS) and the delivery client (STARTTLS, implicit TLS) both use it, with rustls' server
//! or client connection as `C`. `net::tls` makes the TLS ones and closes them.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::ops::{Deref, DerefMut};

use rustls::{ClientConnection, ConnectionCommon, ServerConnection, SideData, StreamOwned};

/// The socket.
pub enum Stream<C> {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<StreamOwned<C, TcpStream>>),
}

/// A session's socket, as the server accepted it.
pub type ServerStream = Stream<ServerConnection>;

/// A connection to a next hop, as the delivery client opened it.
pub type ClientStream = Stream<ClientConnection>;

impl<C> Stream<C> {
    /// The TCP socket underneath (for timeouts and shutdown).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl<C, S> Read for Stream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl<C, S> Write for Stream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}
