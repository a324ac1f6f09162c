//! The one SMTP client of the tests and of the load generator: plain or TLS (STARTTLS, or implicit
//! from the first byte), from any loopback source address, every connect, read and write bounded.
//!
//! Two faces: the test face panics with the conversation in the message (`ok`, `cmd`, `send_mail`),
//! and the checked face (`check`, `check_reply`, `try_send`, `read_reply`) returns what went wrong, for
//! the load generator, which counts errors instead of stopping.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use socket2::{Domain, Protocol, Socket, Type};

use super::WAIT;

/// How to open a connection: from which source address, with which timeout for every connect, read
/// and write, and whether to turn Nagle's algorithm off.
#[derive(Debug, Clone)]
pub struct Dial {
    source: Option<IpAddr>,
    timeout: Duration,
    nodelay: bool,
}

impl Default for Dial {
    fn default() -> Self {
        Dial::new()
    }
}

impl Dial {
    /// The system's choice of source address, [`WAIT`] for every operation, Nagle on.
    pub fn new() -> Dial {
        Dial {
            source: None,
            timeout: WAIT,
            nodelay: false,
        }
    }

    /// Binds the socket to `ip` (a loopback address such as 127.0.0.2) before connecting; panics on
    /// a malformed address.
    pub fn from(mut self, ip: &str) -> Dial {
        self.source = Some(ip.parse().expect("a source IP address"));
        self
    }

    /// The bound of every connect, read and write.
    pub fn timeout(mut self, t: Duration) -> Dial {
        self.timeout = t;
        self
    }

    /// No Nagle: a client that writes a small command and then waits would otherwise measure 40 ms
    /// stalls (Nagle against delayed ACKs) instead of the server.
    pub fn nodelay(mut self) -> Dial {
        self.nodelay = true;
        self
    }

    /// A connected socket with the timeouts set.
    pub fn tcp(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = match self.source {
            None => TcpStream::connect_timeout(&addr, self.timeout)?,
            Some(ip) => {
                let domain = if ip.is_ipv4() {
                    Domain::IPV4
                } else {
                    Domain::IPV6
                };
                let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
                sock.bind(&SocketAddr::new(ip, 0).into())?;
                sock.connect_timeout(&addr.into(), self.timeout)?;
                let stream: TcpStream = sock.into();
                if stream.local_addr()?.ip() != ip {
                    return Err(io::Error::other(format!("not bound to {ip}")));
                }
                stream
            }
        };
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        if self.nodelay {
            stream.set_nodelay(true)?;
        }
        Ok(stream)
    }

    /// A plain SMTP connection (nothing read yet: the greeting is the first reply).
    pub fn plain(&self, addr: SocketAddr) -> io::Result<Client> {
        Client::over(Io::Plain(self.tcp(addr)?))
    }

    /// A connection to an implicit-TLS port: the handshake comes first, verifying `name` against
    /// `cfg`'s roots.
    pub fn tls(
        &self,
        addr: SocketAddr,
        cfg: &Arc<ClientConfig>,
        name: &str,
    ) -> Result<Client, String> {
        let tcp = self
            .tcp(addr)
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let tls = handshake(tcp, cfg, name)?;
        Client::over(Io::Tls(Box::new(tls))).map_err(|e| e.to_string())
    }
}

/// The client side of a TLS handshake for `name` over `tcp` (its read timeout bounds each step).
fn handshake(
    tcp: TcpStream,
    cfg: &Arc<ClientConfig>,
    name: &str,
) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
    let server_name =
        ServerName::try_from(name.to_string()).map_err(|e| format!("server name {name:?}: {e}"))?;
    let conn = ClientConnection::new(cfg.clone(), server_name).map_err(|e| e.to_string())?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
    }
    Ok(s)
}

type Io = super::io::Io<ClientConnection>;

/// One reply: its code and the text of every line (without the code and the separator).
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
    /// The full last line as sent, e.g. "250 2.1.0 a@b....Sender OK".
    pub fn last(&self) -> String {
        format!(
            "{} {}",
            self.code,
            self.lines.last().cloned().unwrap_or_default()
        )
    }
    /// A line (an EHLO keyword, say) equal to `keyword`, ASCII case-insensitive.
    pub fn has(&self, keyword: &str) -> bool {
        self.lines.iter().any(|l| l.eq_ignore_ascii_case(keyword))
    }
}

/// Why no reply could be read.
#[derive(Debug)]
pub enum ReplyError {
    /// The server closed the connection (also in the middle of a reply).
    Closed,
    /// A read failed or timed out.
    Io(io::Error),
    /// A line that is not `DDD`, `DDD text` or `DDD-text` ended by CRLF.
    Malformed(String),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Closed => write!(f, "connection closed by the server"),
            ReplyError::Io(e) => write!(f, "read reply: {e}"),
            ReplyError::Malformed(line) => write!(f, "malformed reply line {line:?}"),
        }
    }
}

/// An SMTP client connection.
pub struct Client {
    /// A second handle of the socket, for what goes around the SMTP conversation on a plain
    /// connection: raw writes, non-blocking reads, socket options, shutdown.
    pub stream: TcpStream,
    reader: BufReader<Io>,
}

impl Client {
    fn over(io: Io) -> io::Result<Client> {
        let stream = match &io {
            Io::Plain(s) => s.try_clone()?,
            Io::Tls(s) => s.sock.try_clone()?,
            Io::Gone => return Err(io::ErrorKind::NotConnected.into()),
        };
        Ok(Client {
            stream,
            reader: BufReader::new(io),
        })
    }

    /// A plain connection to `addr`; panics if it cannot be made.
    pub fn connect(addr: SocketAddr) -> Client {
        Dial::new()
            .plain(addr)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// A plain connection whose socket is bound to `source` (a loopback address) first.
    pub fn connect_from(source: &str, addr: SocketAddr) -> Client {
        Dial::new()
            .from(source)
            .plain(addr)
            .unwrap_or_else(|e| panic!("connect from {source} to {addr}: {e}"))
    }

    /// A connection to an implicit-TLS port, verifying `name` against `cfg`'s roots.
    pub fn connect_tls(addr: SocketAddr, cfg: &Arc<ClientConfig>, name: &str) -> Client {
        Dial::new()
            .tls(addr, cfg, name)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Wraps a connected socket, setting its read and write timeouts to [`WAIT`].
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        stream.set_write_timeout(Some(WAIT)).expect("write timeout");
        Client::over(Io::Plain(stream)).expect("clone the socket")
    }

    // -----------------------------------------------------------------------------------------
    // Replies

    /// Reads one (possibly multi-line) reply.
    pub fn read_reply(&mut self) -> Result<Reply, ReplyError> {
        let mut lines = Vec::new();
        loop {
            let mut raw = Vec::new();
            let n = self
                .reader
                .read_until(b'\n', &mut raw)
                .map_err(ReplyError::Io)?;
            if n == 0 {
                return Err(ReplyError::Closed);
            }
            let text = String::from_utf8_lossy(&raw);
            let Some(line) = text.strip_suffix("\r\n") else {
                return Err(ReplyError::Malformed(text.into_owned()));
            };
            let Some(code) = line
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse::<u16>().ok())
            else {
                return Err(ReplyError::Malformed(line.to_string()));
            };
            let sep = line.as_bytes().get(3).copied();
            if !matches!(sep, None | Some(b' ') | Some(b'-')) {
                return Err(ReplyError::Malformed(line.to_string()));
            }
            lines.push(line.get(4..).unwrap_or("").to_string());
            if sep != Some(b'-') {
                return Ok(Reply { code, lines });
            }
        }
    }

    /// Reads one reply, or None once the connection is closed (or a read fails); panics on a
    /// malformed reply.
    pub fn try_reply(&mut self) -> Option<Reply> {
        match self.read_reply() {
            Ok(r) => Some(r),
            Err(ReplyError::Closed) | Err(ReplyError::Io(_)) => None,
            Err(e) => panic!("{e}"),
        }
    }

    /// Reads one reply; panics on timeout, EOF or a malformed reply.
    pub fn reply(&mut self) -> Reply {
        self.read_reply().unwrap_or_else(|e| panic!("a reply: {e}"))
    }

    /// Reads until the server closes; returns what arrived.
    pub fn read_to_end(&mut self) -> String {
        let mut s = Vec::new();
        let _ = self.reader.read_to_end(&mut s);
        String::from_utf8_lossy(&s).to_string()
    }

    /// Asserts that the server closes the connection (EOF or reset, also without TLS close_notify)
    /// with nothing more to say.
    pub fn assert_closed(&mut self) {
        let mut rest = Vec::new();
        let end = self.reader.read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "expected the server to close; it sent {:?}",
            String::from_utf8_lossy(&rest)
        );
        if let Err(e) = end {
            assert!(
                !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ),
                "the server did not close the connection in time"
            );
        }
    }

    // -----------------------------------------------------------------------------------------
    // Commands, test face

    /// Writes `raw` as it is (inside TLS once the connection is in TLS).
    pub fn send(&mut self, raw: &[u8]) {
        self.try_send(raw).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Sends `line` + CRLF and reads the reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends and asserts the reply code.
    pub fn ok(&mut self, line: &str, code: u16) -> Reply {
        let r = self.cmd(line);
        assert_eq!(r.code, code, "{line} -> {r:?}");
        r
    }

    /// Sends `line` and asserts the complete last reply line.
    pub fn expect(&mut self, line: &str, want: &str) -> Reply {
        let r = self.cmd(line);
        assert_eq!(r.last(), want, "{line:?} -> {r:?}");
        r
    }

    /// Sends `line` and asserts that the last reply line starts with `want`.
    pub fn expect_prefix(&mut self, line: &str, want: &str) -> Reply {
        let r = self.cmd(line);
        assert!(r.last().starts_with(want), "{line} -> {r:?}, want {want:?}");
        r
    }

    /// Reads the greeting and asserts 220.
    pub fn greeting(&mut self) -> Reply {
        let g = self.reply();
        assert_eq!(g.code, 220, "{g:?}");
        g
    }

    /// `EHLO client.test`; returns the reply (its lines are the extensions).
    pub fn ehlo(&mut self) -> Reply {
        self.ok("EHLO client.test", 250)
    }

    /// Greeting + EHLO; returns the EHLO reply.
    pub fn hello(&mut self) -> Reply {
        self.greeting();
        self.ehlo()
    }

    /// MAIL, RCPT (arguments as written after `FROM:` and `TO:`, parameters included), DATA, then
    /// `data` as it is (it ends with CRLF) and the final dot; returns the reply to the dot.
    pub fn transaction(&mut self, mail_arg: &str, rcpt_args: &[&str], data: &str) -> Reply {
        self.ok(&format!("MAIL FROM:{mail_arg}"), 250);
        for r in rcpt_args {
            self.ok(&format!("RCPT TO:{r}"), 250);
        }
        self.ok("DATA", 354);
        self.send(data.as_bytes());
        self.send(b".\r\n");
        self.reply()
    }

    /// A whole transaction from `<from>` to `<to>…` with `body` (no final CRLF); returns the reply to
    /// the end of data.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> Reply {
        let to: Vec<String> = to.iter().map(|t| format!("<{t}>")).collect();
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        self.transaction(&format!("<{from}>"), &to, &format!("{body}\r\n"))
    }

    /// QUIT, asserting 221.
    pub fn quit(mut self) {
        self.ok("QUIT", 221);
    }

    // -----------------------------------------------------------------------------------------
    // Commands, checked face

    /// Writes `raw` (and flushes it, for TLS).
    pub fn try_send(&mut self, raw: &[u8]) -> Result<(), String> {
        let io = self.reader.get_mut();
        io.write_all(raw)
            .and_then(|_| io.flush())
            .map_err(|e| format!("send: {e}"))
    }

    /// Reads a reply and checks its code; the error says `what` was answered how.
    pub fn check_reply(&mut self, what: &str, code: u16) -> Result<Reply, String> {
        let r = self.read_reply().map_err(|e| format!("{what}: {e}"))?;
        if r.code == code {
            Ok(r)
        } else {
            Err(format!("{what}: expected {code}, got {}", r.last()))
        }
    }

    /// Sends `line` + CRLF and checks the reply code; the error names the verb (`MAIL FROM`).
    pub fn check(&mut self, line: &str, code: u16) -> Result<Reply, String> {
        self.try_send(format!("{line}\r\n").as_bytes())?;
        let verb = line.split(':').next().unwrap_or(line);
        self.check_reply(verb, code)
    }

    // -----------------------------------------------------------------------------------------
    // TLS

    /// STARTTLS, which must be answered 220, then the handshake verifying `name` against `cfg`'s
    /// roots; returns the 220 reply, or why the handshake failed.
    pub fn starttls(&mut self, cfg: &Arc<ClientConfig>, name: &str) -> Result<Reply, String> {
        let r = self.ok("STARTTLS", 220);
        self.upgrade(cfg, name)?;
        Ok(r)
    }

    /// Moves the connection into TLS (after a 220 to STARTTLS): asserts that the server sent
    /// nothing more in plaintext, then does the handshake.
    pub fn upgrade(&mut self, cfg: &Arc<ClientConfig>, name: &str) -> Result<(), String> {
        assert!(
            self.reader.buffer().is_empty(),
            "the server sent plaintext after its 220: {:?}",
            String::from_utf8_lossy(self.reader.buffer())
        );
        let Io::Plain(tcp) = std::mem::replace(self.reader.get_mut(), Io::Gone) else {
            panic!("not a plain connection");
        };
        let tls = handshake(tcp, cfg, name)?;
        *self.reader.get_mut() = Io::Tls(Box::new(tls));
        Ok(())
    }

    /// Inside TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.reader.get_ref(), Io::Tls(_))
    }

    /// The server's certificate (DER), inside TLS.
    pub fn peer_certificate(&self) -> Vec<u8> {
        let Io::Tls(s) = self.reader.get_ref() else {
            panic!("not in TLS")
        };
        s.conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .expect("a server certificate")
    }

    /// The negotiated TLS version and cipher suite, as rustls names them.
    pub fn tls_info(&self) -> (String, String) {
        let Io::Tls(s) = self.reader.get_ref() else {
            panic!("not in TLS")
        };
        (
            format!("{:?}", s.conn.protocol_version().expect("a version")),
            format!(
                "{:?}",
                s.conn.negotiated_cipher_suite().expect("a suite").suite()
            ),
        )
    }
}
