//! A socket that may have moved into TLS (after STARTTLS, or from the first byte): what the client and
//! the sink read from and write to.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use rustls::StreamOwned;

/// Plain, or TLS over the socket (`C` is rustls' client or server connection).
pub enum Io<C> {
    Plain(TcpStream),
    Tls(Box<StreamOwned<C, TcpStream>>),
    /// Between the plaintext and the TLS part, or after a failed handshake.
    Gone,
}

impl<C> Read for Io<C>
where
    StreamOwned<C, TcpStream>: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            Io::Tls(s) => s.read(buf),
            Io::Gone => Ok(0),
        }
    }
}

impl<C> Write for Io<C>
where
    StreamOwned<C, TcpStream>: Write,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.write(buf),
            Io::Tls(s) => s.write(buf),
            Io::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            Io::Tls(s) => s.flush(),
            Io::Gone => Ok(()),
        }
    }
}
