//! The PROXY protocol (HAProxy's proxy-protocol.txt) on an accepted socket: a load balancer that
//! passes TCP through writes one header before the client's first byte, naming the client's address
//! and port. Version 1 is one text line (`PROXY TCP4 192.0.2.7 10.0.0.5 40000 25\r\n`, at most 107
//! bytes); version 2 is binary (a 12-byte signature, version and command, family, a length, the
//! addresses, then TLVs). The `ppp` crate parses both; this module reads exactly the header's bytes
//! off the socket (never a byte of what follows, which is the client's: a TLS ClientHello on an
//! implicit-TLS binding), within a deadline.

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The first bytes of every version 2 header.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The first bytes of every version 1 header.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest version 1 header, CRLF included (the specification's figure).
const V1_MAX: usize = 107;
/// The shortest version 1 header: `PROXY UNKNOWN\r\n`.
const V1_MIN: usize = 15;
/// The fixed part of a version 2 header: signature, version/command, family/protocol, length.
const V2_FIXED: usize = 16;

/// Whom a header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// A proxied TCP connection from this client address and port.
    Client(SocketAddr),
    /// The balancer speaks for itself: v2 `LOCAL` (a health check), v1 `UNKNOWN`, or a v2 `PROXY`
    /// for a family other than TCP over IPv4/IPv6. The connection's own address stands.
    Local,
}

/// Why no header could be read.
#[derive(Debug)]
pub enum HeaderError {
    /// The deadline passed first.
    TimedOut {
        /// Bytes received by then.
        got: usize,
    },
    /// The peer closed the connection first.
    Closed {
        /// Bytes received by then.
        got: usize,
    },
    /// The bytes are not a PROXY protocol header (or not a valid one).
    Invalid(String),
    /// The socket failed.
    Io(io::Error),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::TimedOut { got } => {
                write!(
                    f,
                    "no complete PROXY header in time ({got} byte(s) received)"
                )
            }
            HeaderError::Closed { got } => write!(
                f,
                "closed before a complete PROXY header ({got} byte(s) received)"
            ),
            HeaderError::Invalid(why) => write!(f, "not a valid PROXY header: {why}"),
            HeaderError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Whether `buf`, the first bytes a client sent, begin with a PROXY header (of either version):
/// what a peer that is not allowed to send one is refused for.
pub fn looks_like_header(buf: &[u8]) -> bool {
    buf.starts_with(V1_PREFIX) || buf.starts_with(V2_SIGNATURE)
}

/// Reads one header from `stream` (blocking) within `within`, and nothing after it. The socket's
/// read timeout is changed; the caller sets its own afterwards.
pub fn read_header(stream: &TcpStream, within: Duration) -> Result<Proxied, HeaderError> {
    let deadline = Instant::now() + within;
    let mut buf = Vec::with_capacity(V2_FIXED + 64);
    // Six bytes tell the versions apart (and garbage from both) without waiting for more.
    fill(stream, &mut buf, V1_PREFIX.len(), deadline)?;
    if buf.starts_with(V1_PREFIX) {
        fill(stream, &mut buf, V1_MIN, deadline)?;
        // The line's end is unknown: a byte at a time, so nothing past the LF is taken.
        while buf.last() != Some(&b'\n') {
            if buf.len() >= V1_MAX {
                return Err(HeaderError::Invalid(format!(
                    "a version 1 header longer than {V1_MAX} bytes"
                )));
            }
            let want = buf.len() + 1;
            fill(stream, &mut buf, want, deadline)?;
        }
        parse_v1(&buf)
    } else if buf[..] == V2_SIGNATURE[..buf.len()] {
        fill(stream, &mut buf, V2_FIXED, deadline)?;
        if buf[..V2_SIGNATURE.len()] != V2_SIGNATURE[..] {
            return Err(HeaderError::Invalid("a broken version 2 signature".into()));
        }
        let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        fill(stream, &mut buf, V2_FIXED + length, deadline)?;
        parse_v2(&buf)
    } else {
        Err(HeaderError::Invalid(format!(
            "starts with {:?}",
            String::from_utf8_lossy(&buf)
        )))
    }
}

/// Reads until `buf` holds `want` bytes (never more) or the deadline passes.
fn fill(
    stream: &TcpStream,
    buf: &mut Vec<u8>,
    want: usize,
    deadline: Instant,
) -> Result<(), HeaderError> {
    let mut reader = stream;
    while buf.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeaderError::TimedOut { got: buf.len() });
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(HeaderError::Io)?;
        let have = buf.len();
        buf.resize(want, 0);
        let r = reader.read(&mut buf[have..]);
        buf.truncate(have + *r.as_ref().unwrap_or(&0));
        match r {
            Ok(0) => return Err(HeaderError::Closed { got: have }),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(HeaderError::Io(e)),
        }
    }
    Ok(())
}

/// A complete version 1 header (CRLF included).
fn parse_v1(buf: &[u8]) -> Result<Proxied, HeaderError> {
    use ppp::v1::{Addresses, Header};
    let h = Header::try_from(buf).map_err(|e| HeaderError::Invalid(e.to_string()))?;
    if h.header.len() != buf.len() {
        return Err(HeaderError::Invalid(
            "a version 1 header must end with CRLF".into(),
        ));
    }
    Ok(match h.addresses {
        Addresses::Tcp4(a) => {
            Proxied::Client(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        Addresses::Tcp6(a) => {
            Proxied::Client(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        Addresses::Unknown => Proxied::Local,
    })
}

/// A complete version 2 header.
fn parse_v2(buf: &[u8]) -> Result<Proxied, HeaderError> {
    use ppp::v2::{Addresses, Command, Header};
    let h = Header::try_from(buf).map_err(|e| HeaderError::Invalid(e.to_string()))?;
    Ok(match (h.command, h.addresses) {
        (Command::Local, _) => Proxied::Local,
        (Command::Proxy, Addresses::IPv4(a)) => {
            Proxied::Client(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        (Command::Proxy, Addresses::IPv6(a)) => {
            Proxied::Client(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        // AF_UNSPEC or a Unix socket: the specification says to use the connection's addresses.
        (Command::Proxy, _) => Proxied::Local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// The server's end (blocking) and the client's end of a loopback connection.
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        (server, client)
    }

    /// Sends `bytes` and reads a header from them (2 s at most).
    fn read(bytes: &[u8]) -> (Result<Proxied, HeaderError>, TcpStream, TcpStream) {
        let (server, mut client) = pair();
        client.write_all(bytes).unwrap();
        let r = read_header(&server, Duration::from_secs(2));
        (r, server, client)
    }

    fn v2(command: u8, family: u8, addrs: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&((addrs.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h.extend_from_slice(tlvs);
        h
    }

    fn v2_tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, tlvs: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&src);
        a.extend_from_slice(&dst);
        a.extend_from_slice(&sport.to_be_bytes());
        a.extend_from_slice(&dport.to_be_bytes());
        v2(1, 0x11, &a, tlvs)
    }

    fn rest(server: &TcpStream) -> Vec<u8> {
        server
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut got = vec![0; 64];
        let n = (&*server).read(&mut got).unwrap_or(0);
        got.truncate(n);
        got
    }

    #[test]
    fn version_1_names_the_client_and_leaves_what_follows() {
        let (r, server, _c) = read(b"PROXY TCP4 192.0.2.9 10.0.0.5 40000 25\r\nEHLO x\r\n");
        assert_eq!(
            r.unwrap(),
            Proxied::Client("192.0.2.9:40000".parse().unwrap())
        );
        assert_eq!(rest(&server), b"EHLO x\r\n", "not a byte past the header");
        let (r, _, _c) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n");
        assert_eq!(
            r.unwrap(),
            Proxied::Client("[2001:db8::7]:40000".parse().unwrap())
        );
    }

    #[test]
    fn version_2_names_the_client_and_leaves_what_follows() {
        // With a TLV (a NOOP of three bytes), as AWS NLB and HAProxy may add.
        let mut bytes = v2_tcp4(
            [192, 0, 2, 9],
            [10, 0, 0, 5],
            40000,
            25,
            &[4, 0, 3, 1, 2, 3],
        );
        bytes.extend_from_slice(b"\x16\x03\x01");
        let (r, server, _c) = read(&bytes);
        assert_eq!(
            r.unwrap(),
            Proxied::Client("192.0.2.9:40000".parse().unwrap())
        );
        assert_eq!(rest(&server), b"\x16\x03\x01");
        let mut a = Vec::new();
        a.extend_from_slice(
            &"2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        a.extend_from_slice(
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        a.extend_from_slice(&[0x9c, 0x40, 0, 25]);
        let (r, _, _c) = read(&v2(1, 0x21, &a, &[]));
        assert_eq!(
            r.unwrap(),
            Proxied::Client("[2001:db8::7]:40000".parse().unwrap())
        );
    }

    #[test]
    fn local_and_unknown_mean_the_balancer_itself() {
        let (r, _, _c) = read(&v2(0, 0x00, &[], &[]));
        assert_eq!(r.unwrap(), Proxied::Local, "v2 LOCAL");
        // LOCAL may still carry addresses; they are ignored.
        let mut local = v2_tcp4([192, 0, 2, 9], [10, 0, 0, 5], 1, 2, &[]);
        local[12] = 0x20;
        let (r, _, _c) = read(&local);
        assert_eq!(r.unwrap(), Proxied::Local, "v2 LOCAL with addresses");
        let (r, _, _c) = read(b"PROXY UNKNOWN\r\n");
        assert_eq!(r.unwrap(), Proxied::Local, "v1 UNKNOWN");
        let (r, _, _c) = read(b"PROXY UNKNOWN ffff:: ffff:: 1 2\r\n");
        assert_eq!(r.unwrap(), Proxied::Local, "v1 UNKNOWN with addresses");
        let (r, _, _c) = read(&v2(1, 0x00, &[], &[]));
        assert_eq!(r.unwrap(), Proxied::Local, "v2 PROXY over AF_UNSPEC");
    }

    #[test]
    fn garbage_is_refused_at_once() {
        let t = Instant::now();
        for bytes in [
            &b"EHLO client.example\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01",
            b"PROXY TCP4 not-an-ip 10.0.0.5 1 2\r\n",
            b"PROXY TCP5 192.0.2.9 10.0.0.5 1 2\r\n",
            b"PROXY TCP4 192.0.2.9 10.0.0.5 1 2\n",
        ] {
            let (r, _, _c) = read(bytes);
            assert!(
                matches!(r, Err(HeaderError::Invalid(_))),
                "{:?}: {r:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        // A v2 header with a version other than 2, and one with a family its length cannot hold.
        let mut bad = v2_tcp4([192, 0, 2, 9], [10, 0, 0, 5], 1, 2, &[]);
        bad[12] = 0x31;
        let (r, _, _c) = read(&bad);
        assert!(matches!(r, Err(HeaderError::Invalid(_))), "{r:?}");
        let (r, _, _c) = read(&v2(1, 0x11, &[1, 2, 3], &[]));
        assert!(matches!(r, Err(HeaderError::Invalid(_))), "{r:?}");
        // Too long a v1 line, without waiting for its end.
        let mut long = b"PROXY TCP6 ".to_vec();
        long.extend(std::iter::repeat_n(b'1', 120));
        let (r, _, _c) = read(&long);
        assert!(matches!(r, Err(HeaderError::Invalid(_))), "{r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "no waiting on garbage"
        );
    }

    #[test]
    fn truncated_headers_end_with_the_connection() {
        let full = v2_tcp4([192, 0, 2, 9], [10, 0, 0, 5], 40000, 25, &[]);
        for bytes in [
            &b"PROXY TCP4 192.0.2.9 10.0.0.5 400"[..],
            &full[..10],
            &full[..20],
        ] {
            let (server, mut client) = pair();
            client.write_all(bytes).unwrap();
            drop(client);
            let r = read_header(&server, Duration::from_secs(2));
            assert!(
                matches!(r, Err(HeaderError::Closed { got }) if got == bytes.len()),
                "{r:?}"
            );
        }
    }

    #[test]
    fn a_header_too_slow_times_out_at_the_deadline() {
        let (server, mut client) = pair();
        client.write_all(b"PROXY TCP4 192.0.2.9").unwrap();
        let t = Instant::now();
        let r = read_header(&server, Duration::from_millis(300));
        let took = t.elapsed();
        assert!(matches!(r, Err(HeaderError::TimedOut { got: 20 })), "{r:?}");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
        // Silence, too.
        let (server, _client) = pair();
        let r = read_header(&server, Duration::from_millis(100));
        assert!(matches!(r, Err(HeaderError::TimedOut { got: 0 })), "{r:?}");
    }

    #[test]
    fn what_a_refused_peer_is_recognised_by() {
        assert!(looks_like_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"));
        assert!(looks_like_header(&v2(0, 0, &[], &[])));
        assert!(!looks_like_header(b"EHLO proxy.example\r\n"));
        assert!(!looks_like_header(b"\r\n"));
        assert!(!looks_like_header(b"PROXYING\r\n"));
    }
}
