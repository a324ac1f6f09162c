//! The outbound SMTP client: one connection to one next hop, blocking, with a deadline on every reply.
//! EHLO (HELO as a fallback), STARTTLS by policy (presenting a client certificate when the route has
//! one), AUTH PLAIN, LOGIN or XOAUTH2 (a token from `oauth`, renewed once when refused), then
//! transactions: MAIL with
//! SIZE/BODY/DSN parameters as the server offers them, RCPTs, DATA with dot-stuffing and CRLF line
//! endings enforced (a bare CR or LF is never sent), pipelined when the server offers PIPELINING.
//! Replies are read through `reply::parse`, which bounds what a hostile server can make us buffer.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;

use super::reply::{self, Reply};
use crate::config::{Credentials, PasswordMechanism, TlsPolicy};
use crate::net::stream::ClientStream as Stream;
use crate::net::tls::{self, ClientTls, HandshakeError};
use crate::oauth::{self, AccessToken, Credential};
use crate::smtp::params::{self, Body, Notify, Ret};
use crate::smtp::sasl::encode as base64;

/// What one recipient's delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The next hop accepted the message for this recipient (its final reply).
    Delivered(String),
    /// Permanently refused (5xx), or impossible (the rule that refuses 8-bit data, the size limit).
    Failed(String),
    /// Try again later (4xx, or the connection failed).
    Deferred(String),
}

/// The message as the client sends it.
#[derive(Debug, Clone, Copy)]
pub struct OutMessage<'a> {
    /// MAIL FROM (empty for `<>`), already masqueraded.
    pub sender: &'a str,
    /// BODY= of the original transaction.
    pub body: Option<Body>,
    /// RET=
    pub ret: Option<Ret>,
    /// ENVID=
    pub envid: Option<&'a str>,
    /// The message (headers and body), without our envelope block.
    pub data: &'a [u8],
    /// Whether `data` has any octet over 127.
    pub eight_bit: bool,
}

/// One recipient as the client sends it.
#[derive(Debug, Clone, Copy)]
pub struct Rcpt<'a> {
    /// The address.
    pub address: &'a str,
    /// NOTIFY=
    pub notify: Option<Notify>,
    /// ORCPT=
    pub orcpt: Option<&'a str>,
}

/// How to talk to the next hop.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Our name for EHLO.
    pub helo: String,
    /// RemoteTimeout: for the greeting and each reply.
    pub timeout: Duration,
    /// RemoteConnectTimeout: for the TCP connect.
    pub connect_timeout: Duration,
    /// RemoteTransactionTimeout: for one whole transaction (MAIL to the reply after the data).
    pub transaction_timeout: Duration,
    /// OutboundTls for this hop.
    pub tls: TlsPolicy,
    /// The rustls configurations.
    pub tls_configs: ClientTls,
    /// AUTH, if any.
    pub login: Option<Login>,
    /// OutboundAuthAllowPlaintext.
    pub auth_plaintext: bool,
    /// `432 4.3.2` to the greeting, EHLO or AUTH means throttling (the microsoft365 preset).
    pub throttle_432: bool,
    /// OutboundLineLengthLimit: longer lines are broken with CRLF SPACE (0: never).
    pub line_limit: usize,
}

/// How to log in to the next hop.
#[derive(Clone)]
pub enum Login {
    /// PLAIN or LOGIN; `only` pins the mechanism.
    Password {
        /// RouteUserName / RoutePassword.
        credentials: Credentials,
        /// OutboundAuthMechanism, when pinned.
        only: Option<PasswordMechanism>,
    },
    /// XOAUTH2 as the credential's mailbox, with its token.
    XOAuth2(Arc<Credential>),
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Login::Password { credentials, only } => f
                .debug_struct("Password")
                .field("credentials", credentials)
                .field("only", only)
                .finish(),
            Login::XOAuth2(c) => write!(f, "XOAuth2({})", c.user()),
        }
    }
}

/// What kind of failure a [`ConnectError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The next hop could not be reached or used (counts toward a dead next hop).
    Connection,
    /// No OAuth token could be had: the token endpoint failed, not the next hop.
    Token,
    /// The next hop said `432 4.3.2`: too many sessions or messages for now.
    Throttled,
}

/// Why a connection could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    /// One line for logs, the state file and reports.
    pub reason: String,
    /// A 5xx greeting or EHLO: the host refuses mail for good (another host may still take it).
    pub permanent: bool,
    /// What failed.
    pub kind: Failure,
}

impl ConnectError {
    fn temp(reason: impl Into<String>) -> ConnectError {
        ConnectError {
            reason: reason.into(),
            permanent: false,
            kind: Failure::Connection,
        }
    }

    /// Refused credentials are a configuration problem, not the host's final word on mail.
    fn never_permanent(mut self) -> ConnectError {
        self.permanent = false;
        self
    }

    /// A refusal: throttling when the route says `432` is, else temporary or permanent by code.
    fn refused(reason: String, r: &Reply, settings: &Settings) -> ConnectError {
        ConnectError {
            reason,
            permanent: r.is_permanent(),
            kind: if settings.throttle_432 && is_throttle(r) {
                Failure::Throttled
            } else {
                Failure::Connection
            },
        }
    }
}

/// `432` (with `4.3.2` when an enhanced code is given): Exchange Online's "sender thread limit
/// exceeded" and its kin.
fn is_throttle(r: &Reply) -> bool {
    r.code == 432
}

/// Whether a recipient's deferral reply is a throttle (`432 …`).
pub fn is_throttle_reply(reply: &str) -> bool {
    reply.starts_with("432")
}

/// An open, greeted (and possibly encrypted and authenticated) connection.
pub struct Connection {
    stream: Stream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    caps: Option<Reply>,
    /// The host name the connection was made for (MX name, smart host, or address).
    pub host: String,
    /// The address connected to.
    pub addr: SocketAddr,
    /// The negotiated TLS version and cipher suite, when encrypted.
    pub tls: Option<String>,
    /// Messages sent on this connection.
    pub sent: u32,
    /// The last transaction did not end in a temporary refusal of the whole message (a 4xx to
    /// MAIL or DATA): only such a connection is worth keeping for the next message.
    pub healthy: bool,
    /// RemoteTimeout and RemoteTransactionTimeout.
    timeouts: (Duration, Duration),
    /// When the transaction under way must be over: a next hop that drips its replies a byte at a
    /// time answers each read within RemoteTimeout, and must still not hold the thread for ever.
    deadline: Option<Instant>,
    /// OutboundLineLengthLimit.
    line_limit: usize,
}

const BUF: usize = 16 * 1024;

/// The longest wait for the reply to QUIT.
const QUIT_WAIT: Duration = Duration::from_secs(5);

/// The TLS handshake with `host`, within RemoteTimeout in all.
fn tls_wrap(
    config: Arc<ClientConfig>,
    host: &str,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<(Stream, String), ConnectError> {
    tls::client::connect(config, host, tcp, timeout).map_err(|e| {
        ConnectError::temp(match e {
            HandshakeError::ServerName(_) | HandshakeError::Setup(_) => format!("TLS: {e}"),
            HandshakeError::TimedOut | HandshakeError::Io(_) => {
                format!("TLS handshake with {host} failed: {e}")
            }
        })
    })
}

impl Connection {
    /// Connects to `addr` (named `host`), reads the greeting, says EHLO, and does STARTTLS and AUTH
    /// as `settings` require.
    pub fn open(
        addr: SocketAddr,
        host: &str,
        settings: &Settings,
    ) -> Result<Connection, ConnectError> {
        let tcp = TcpStream::connect_timeout(&addr, settings.connect_timeout).map_err(|e| {
            ConnectError::temp(format!("cannot connect to {host} [{}]: {e}", addr.ip()))
        })?;
        let _ = tcp.set_read_timeout(Some(settings.timeout));
        let _ = tcp.set_write_timeout(Some(settings.timeout));
        let _ = tcp.set_nodelay(true);
        let (stream, tls) = if settings.tls == TlsPolicy::Implicit {
            let config = settings
                .tls_configs
                .verified()
                .map_err(|e| ConnectError::temp(format!("outbound TLS: {e}")))?;
            let (s, d) = tls_wrap(config, host, tcp, settings.timeout)?;
            (s, Some(d))
        } else {
            (Stream::Plain(tcp), None)
        };
        let mut c = Connection {
            stream,
            buf: vec![0; BUF],
            start: 0,
            end: 0,
            caps: None,
            host: host.to_string(),
            addr,
            tls,
            sent: 0,
            healthy: true,
            timeouts: (settings.timeout, settings.transaction_timeout),
            deadline: None,
            line_limit: settings.line_limit,
        };
        let greeting = c.read_reply().map_err(ConnectError::temp)?;
        if greeting.code != 220 {
            return Err(ConnectError::refused(
                format!("{host} greeted with {}", greeting.one_line()),
                &greeting,
                settings,
            ));
        }
        c.hello(settings)?;
        let offers_tls = c.caps.as_ref().is_some_and(|r| r.has_keyword("STARTTLS"));
        match settings.tls {
            TlsPolicy::Opportunistic | TlsPolicy::Required if c.tls.is_none() && offers_tls => {
                let config = if settings.tls == TlsPolicy::Required {
                    settings.tls_configs.verified()
                } else {
                    settings.tls_configs.unverified()
                }
                .map_err(|e| ConnectError::temp(format!("outbound TLS: {e}")))?;
                c = c.starttls(config, settings)?;
            }
            TlsPolicy::Required if c.tls.is_none() => {
                return Err(ConnectError::temp(format!(
                    "{host} does not offer STARTTLS and OutboundTls is required"
                )));
            }
            _ => {}
        }
        match &settings.login {
            Some(Login::Password { credentials, only }) => c.auth(credentials, *only, settings)?,
            Some(Login::XOAuth2(cred)) => c.xoauth2(cred, settings)?,
            None => {}
        }
        Ok(c)
    }

    fn hello(&mut self, settings: &Settings) -> Result<(), ConnectError> {
        let r = self
            .command(&format!("EHLO {}", settings.helo))
            .map_err(ConnectError::temp)?;
        if r.code == 250 {
            self.caps = Some(r);
            return Ok(());
        }
        let h = self
            .command(&format!("HELO {}", settings.helo))
            .map_err(ConnectError::temp)?;
        if h.code == 250 {
            self.caps = None;
            return Ok(());
        }
        Err(ConnectError::refused(
            format!("{} refused HELO: {}", self.host, h.one_line()),
            &h,
            settings,
        ))
    }

    fn starttls(
        mut self,
        config: Arc<ClientConfig>,
        settings: &Settings,
    ) -> Result<Connection, ConnectError> {
        let r = self.command("STARTTLS").map_err(ConnectError::temp)?;
        if r.code != 220 {
            if settings.tls == TlsPolicy::Required {
                return Err(ConnectError::temp(format!(
                    "{} refused STARTTLS: {}",
                    self.host,
                    r.one_line()
                )));
            }
            return Ok(self);
        }
        // Anything the server sent after its 220 arrived in plaintext and would be read as if it came
        // through TLS: a response injection. Refuse to go on.
        if self.start != self.end {
            return Err(ConnectError::temp(format!(
                "{} sent data after its STARTTLS reply (response injection); connection dropped",
                self.host
            )));
        }
        let Stream::Plain(tcp) = self.stream else {
            return Err(ConnectError::temp("STARTTLS inside TLS"));
        };
        let (stream, d) = tls_wrap(config, &self.host, tcp, settings.timeout)?;
        let mut c = Connection {
            stream,
            buf: self.buf,
            start: 0,
            end: 0,
            caps: None,
            host: self.host,
            addr: self.addr,
            tls: Some(d),
            sent: 0,
            healthy: true,
            timeouts: (settings.timeout, settings.transaction_timeout),
            deadline: None,
            line_limit: settings.line_limit,
        };
        c.hello(settings)?;
        Ok(c)
    }

    /// The mechanisms the next hop offers, upper case.
    fn mechanisms(&self) -> String {
        self.caps
            .as_ref()
            .and_then(|r| r.keyword_args("AUTH"))
            .unwrap_or("")
            .to_ascii_uppercase()
    }

    fn may_send_credentials(&self, settings: &Settings) -> Result<(), ConnectError> {
        if self.tls.is_none() && !settings.auth_plaintext {
            return Err(ConnectError::temp(format!(
                "will not send credentials to {} without TLS (OutboundAuthAllowPlaintext = 0)",
                self.host
            )));
        }
        Ok(())
    }

    fn auth(
        &mut self,
        cred: &Credentials,
        only: Option<PasswordMechanism>,
        settings: &Settings,
    ) -> Result<(), ConnectError> {
        self.may_send_credentials(settings)?;
        let mechs = self.mechanisms();
        let has = |m: &str| mechs.split(' ').any(|x| x == m);
        let plain = has("PLAIN") && only != Some(PasswordMechanism::Login);
        let login = has("LOGIN") && only != Some(PasswordMechanism::Plain);
        let r = if plain {
            let token = base64(format!("\0{}\0{}", cred.user, cred.password).as_bytes());
            self.command(&format!("AUTH PLAIN {token}"))
                .map_err(ConnectError::temp)?
        } else if login {
            let r = self.command("AUTH LOGIN").map_err(ConnectError::temp)?;
            if r.code != 334 {
                return Err(ConnectError::temp(format!(
                    "AUTH LOGIN at {}: {}",
                    self.host,
                    r.one_line()
                )));
            }
            let r = self
                .command(&base64(cred.user.as_bytes()))
                .map_err(ConnectError::temp)?;
            if r.code != 334 {
                return Err(ConnectError::temp(format!(
                    "AUTH LOGIN at {}: {}",
                    self.host,
                    r.one_line()
                )));
            }
            self.command(&base64(cred.password.as_bytes()))
                .map_err(ConnectError::temp)?
        } else {
            return Err(ConnectError::temp(match only {
                Some(PasswordMechanism::Plain) => {
                    format!("{} does not offer AUTH PLAIN", self.host)
                }
                Some(PasswordMechanism::Login) => {
                    format!("{} does not offer AUTH LOGIN", self.host)
                }
                None => format!("{} offers neither AUTH PLAIN nor AUTH LOGIN", self.host),
            }));
        };
        if r.code != 235 {
            // Wrong credentials are a configuration problem: keep the mail and retry, as Postfix does.
            return Err(ConnectError::refused(
                format!(
                    "authentication as {} at {} failed: {}",
                    cred.user,
                    self.host,
                    r.one_line()
                ),
                &r,
                settings,
            )
            .never_permanent());
        }
        Ok(())
    }

    /// AUTH XOAUTH2 with the credential's token; a `535` gets one more try with a new token (the
    /// cached one may have been revoked before its time).
    fn xoauth2(&mut self, cred: &Credential, settings: &Settings) -> Result<(), ConnectError> {
        self.may_send_credentials(settings)?;
        if !self.mechanisms().split(' ').any(|m| m == "XOAUTH2") {
            return Err(ConnectError::temp(format!(
                "{} does not offer AUTH XOAUTH2",
                self.host
            )));
        }
        let token_error = |e: oauth::TokenError| ConnectError {
            reason: e.to_string(),
            permanent: false,
            kind: Failure::Token,
        };
        let mut token: AccessToken = cred.token().map_err(token_error)?;
        let mut renewed = false;
        loop {
            let line = format!("AUTH XOAUTH2 {}", oauth::xoauth2(cred.user(), &token));
            let mut r = self.command(&line).map_err(ConnectError::temp)?;
            // The server's error challenge (a base64 JSON status): an empty line ends the exchange.
            if r.code == 334 {
                r = self.command("").map_err(ConnectError::temp)?;
            }
            if r.code == 235 {
                return Ok(());
            }
            if r.code == 535 && !renewed {
                renewed = true;
                log::info!(
                    "{} refused the OAuth token for {} ({}); asking for a new one",
                    self.host,
                    cred.user(),
                    r.one_line()
                );
                token = cred.renew(&token).map_err(token_error)?;
                continue;
            }
            return Err(ConnectError::refused(
                format!(
                    "OAuth authentication as {} at {} failed: {}",
                    cred.user(),
                    self.host,
                    r.one_line()
                ),
                &r,
                settings,
            )
            .never_permanent());
        }
    }

    fn read_reply(&mut self) -> Result<Reply, String> {
        loop {
            self.within_deadline()?;
            match reply::parse(&self.buf[self.start..self.end]) {
                reply::Parse::Complete(r, n) => {
                    self.start += n;
                    if self.start == self.end {
                        self.start = 0;
                        self.end = 0;
                    }
                    return Ok(r);
                }
                reply::Parse::Invalid(why) => return Err(format!("{}: {why}", self.host)),
                reply::Parse::Partial => {}
            }
            if self.end == self.buf.len() {
                if self.start == 0 {
                    return Err(format!("{}: reply too long", self.host));
                }
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(format!("{} closed the connection", self.host)),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(format!("{} did not answer in time", self.host));
                }
                Err(e) => return Err(format!("reading from {}: {e}", self.host)),
            }
        }
    }

    /// Fails once the transaction's deadline has passed, and keeps each read within it.
    fn within_deadline(&mut self) -> Result<(), String> {
        let Some(deadline) = self.deadline else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.healthy = false;
            return Err(format!(
                "{}: the transaction took longer than {} s",
                self.host,
                self.timeouts.1.as_secs()
            ));
        }
        // Only near the end: a shorter read timeout costs a system call.
        if left < self.timeouts.0 {
            let _ = self.stream.tcp().set_read_timeout(Some(left));
        }
        Ok(())
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.within_deadline()?;
        self.stream
            .write_all(bytes)
            .and_then(|_| self.stream.flush())
            .map_err(|e| format!("writing to {}: {e}", self.host))
    }

    fn command(&mut self, line: &str) -> Result<Reply, String> {
        self.write_all(format!("{line}\r\n").as_bytes())?;
        self.read_reply()
    }

    fn cap(&self, k: &str) -> bool {
        self.caps.as_ref().is_some_and(|r| r.has_keyword(k))
    }

    /// Whether the next hop offers DSN (RFC 3461), so NOTIFY and ORCPT were passed on.
    pub fn offers_dsn(&self) -> bool {
        self.cap("DSN")
    }

    /// The next hop's SIZE limit (0 = none announced).
    pub fn size_limit(&self) -> u64 {
        self.caps
            .as_ref()
            .and_then(|r| r.keyword_args("SIZE"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Sends one message to `rcpts` (at most the caller's MaxRecipients). `Err` means the connection
    /// failed part way: the caller defers every recipient of this transaction and drops the connection.
    pub fn send(
        &mut self,
        msg: &OutMessage<'_>,
        rcpts: &[Rcpt<'_>],
    ) -> Result<Vec<Outcome>, String> {
        self.deadline = Some(Instant::now() + self.timeouts.1);
        let r = self.transaction(msg, rcpts);
        if self
            .deadline
            .take()
            .is_some_and(|d| d < Instant::now() + self.timeouts.0)
        {
            let _ = self.stream.tcp().set_read_timeout(Some(self.timeouts.0));
        }
        r
    }

    fn transaction(
        &mut self,
        msg: &OutMessage<'_>,
        rcpts: &[Rcpt<'_>],
    ) -> Result<Vec<Outcome>, String> {
        let all = |o: Outcome| vec![o; rcpts.len()];
        let limit = self.size_limit();
        if limit > 0 && msg.data.len() as u64 > limit {
            return Ok(all(Outcome::Failed(format!(
                "552 5.3.4 Message size exceeds the limit of {} ({limit} bytes)",
                self.host
            ))));
        }
        let binary = msg.body == Some(Body::BinaryMime);
        if binary && !(self.cap("BINARYMIME") && self.cap("CHUNKING")) {
            return Ok(all(Outcome::Failed(format!(
                "554 5.6.3 {} does not accept binary (BINARYMIME) messages; conversion is not supported",
                self.host
            ))));
        }
        if msg.eight_bit && !binary && !self.cap("8BITMIME") {
            return Ok(all(Outcome::Failed(format!(
                "554 5.6.3 {} does not accept 8-bit messages (no 8BITMIME); conversion is not supported",
                self.host
            ))));
        }
        let dsn = self.cap("DSN");
        let mut mail = format!("MAIL FROM:<{}>", msg.sender);
        if self.cap("SIZE") {
            mail.push_str(&format!(" SIZE={}", msg.data.len()));
        }
        // BODY says what the data is as sent (8-bit data is declared even when the client forgot);
        // DSN parameters go on only to a next hop that offers DSN (RFC 3461 §4.1).
        let body = if binary {
            Some(Body::BinaryMime)
        } else if (msg.eight_bit || msg.body == Some(Body::EightBitMime)) && self.cap("8BITMIME") {
            Some(Body::EightBitMime)
        } else {
            None
        };
        let (ret, envid) = if dsn {
            (msg.ret, msg.envid)
        } else {
            (None, None)
        };
        params::write_mail(&mut mail, body, ret, envid);
        let rcpt_lines: Vec<String> = rcpts
            .iter()
            .map(|r| {
                let mut l = format!("RCPT TO:<{}>", r.address);
                if dsn {
                    params::write_rcpt(&mut l, r.notify, r.orcpt);
                }
                l
            })
            .collect();

        let pipelining = self.cap("PIPELINING");
        let mut out = Vec::with_capacity(64 * (rcpts.len() + 2));
        let (mail_reply, rcpt_replies, data_reply) = if pipelining {
            out.extend_from_slice(mail.as_bytes());
            out.extend_from_slice(b"\r\n");
            for l in &rcpt_lines {
                out.extend_from_slice(l.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            if !binary {
                out.extend_from_slice(b"DATA\r\n");
            }
            self.write_all(&out)?;
            let m = self.read_reply()?;
            let mut rr = Vec::with_capacity(rcpts.len());
            for _ in rcpts {
                rr.push(self.read_reply()?);
            }
            let d = if binary {
                None
            } else {
                Some(self.read_reply()?)
            };
            (m, rr, d)
        } else {
            let m = self.command(&mail)?;
            let mut rr = Vec::with_capacity(rcpts.len());
            if m.is_positive() {
                for l in &rcpt_lines {
                    rr.push(self.command(l)?);
                }
            }
            let any = rr.iter().any(Reply::is_positive);
            let d = if any && !binary {
                Some(self.command("DATA")?)
            } else {
                None
            };
            (m, rr, d)
        };

        if !mail_reply.is_positive() {
            if data_reply.as_ref().is_some_and(|d| d.code == 354) {
                // Should not happen (DATA after a refused MAIL), but keep the session in step.
                self.write_all(b".\r\n")?;
                self.read_reply()?;
            }
            self.reset()?;
            self.healthy = mail_reply.is_permanent();
            return Ok(all(classify(&mail_reply)));
        }
        let mut outcomes: Vec<Option<Outcome>> = rcpt_replies
            .iter()
            .map(|r| {
                if r.is_positive() {
                    None
                } else {
                    Some(classify(r))
                }
            })
            .collect();
        outcomes.resize(rcpts.len(), None);
        let accepted = outcomes.iter().filter(|o| o.is_none()).count();
        let final_reply = if accepted == 0 {
            if data_reply.as_ref().is_some_and(|d| d.code == 354) {
                // A server that accepted DATA with no recipient: end the (empty) message.
                self.write_all(b".\r\n")?;
                self.read_reply()?;
            }
            self.reset()?;
            None
        } else if binary {
            let mut chunk = format!("BDAT {} LAST\r\n", msg.data.len()).into_bytes();
            chunk.extend_from_slice(msg.data);
            self.write_all(&chunk)?;
            Some(self.read_reply()?)
        } else {
            match data_reply {
                Some(d) if d.code == 354 => {
                    let mut wire = Vec::with_capacity(WIRE_CHUNK + WIRE_CHUNK / 8 + 8);
                    let mut enc = DataEncoder::new(self.line_limit);
                    let mut slices = wire_slices(msg.data, WIRE_CHUNK).peekable();
                    while let Some(slice) = slices.next() {
                        enc.feed(slice, &mut wire);
                        if slices.peek().is_some() {
                            self.stream
                                .write_all(&wire)
                                .map_err(|e| format!("writing to {}: {e}", self.host))?;
                            wire.clear();
                        }
                    }
                    // The terminator goes with the last slice: one write for a small message.
                    enc.finish(&mut wire);
                    self.write_all(&wire)?;
                    Some(self.read_reply()?)
                }
                Some(d) => Some(d),
                None => None,
            }
        };
        if let Some(f) = &final_reply {
            self.healthy = !f.is_transient();
        }
        if let Some(f) = final_reply {
            let o = if f.is_positive() {
                Outcome::Delivered(f.one_line())
            } else {
                classify(&f)
            };
            for slot in outcomes.iter_mut().filter(|o| o.is_none()) {
                *slot = Some(o.clone());
            }
            if f.is_positive() {
                self.sent += 1;
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Deferred("no reply".into())))
            .collect())
    }

    /// RSET, to start a new transaction after a failed one or before the next message.
    pub fn reset(&mut self) -> Result<(), String> {
        let r = self.command("RSET")?;
        if r.is_positive() {
            Ok(())
        } else {
            Err(format!("{} refused RSET: {}", self.host, r.one_line()))
        }
    }

    /// QUIT and close (errors ignored: the work is done). The reply gets a few seconds at most: a
    /// next hop still dripping the end of a failed transaction must not keep the thread.
    pub fn quit(mut self) {
        self.deadline = Some(Instant::now() + self.timeouts.0.min(QUIT_WAIT));
        let _ = self.command("QUIT");
        tls::close_notify(&mut self.stream);
    }
}

fn classify(r: &Reply) -> Outcome {
    if r.is_permanent() {
        Outcome::Failed(r.one_line())
    } else {
        Outcome::Deferred(r.one_line())
    }
}

/// The message as DATA puts it on the wire: a line starting with "." gets another ".", every line ends
/// in CRLF (a bare CR or LF becomes CRLF, so mailroot never emits one), then the terminator.
pub fn encode_data(data: &[u8], out: &mut Vec<u8>) {
    encode_data_limited(data, 0, out);
}

/// [`encode_data`], breaking lines longer than `limit` octets with CRLF SPACE (0: never).
pub fn encode_data_limited(data: &[u8], limit: usize, out: &mut Vec<u8>) {
    let mut enc = DataEncoder::new(limit);
    enc.feed(data, out);
    enc.finish(out);
}

/// Bytes of message encoded per write: the wire copy of a large message is never whole in memory.
const WIRE_CHUNK: usize = 32 * 1024;

/// [`encode_data`] piece by piece, for a message fed in slices. A slice must not end between the CR
/// and the LF of one line ending (see [`wire_slices`]). With a line length limit, a line longer than
/// it is broken by inserting CRLF SPACE (as Postfix's smtp_line_length_limit): strict next hops
/// refuse lines over 998 octets (RFC 5321 §4.5.3.1.6), and a report quoting such a message would
/// fail the same way.
#[derive(Debug)]
struct DataEncoder {
    line_start: bool,
    /// Octets of the current wire line so far (a stuffed dot included).
    col: usize,
    /// OutboundLineLengthLimit (0: never break).
    limit: usize,
}

impl DataEncoder {
    fn new(limit: usize) -> DataEncoder {
        DataEncoder {
            line_start: true,
            col: 0,
            // At least two octets a line, or a continuation line (one space) could take nothing.
            limit: if limit == 0 { 0 } else { limit.max(2) },
        }
    }

    /// Part of a line, without a line ending.
    #[inline]
    fn put(&mut self, mut seg: &[u8], out: &mut Vec<u8>) {
        if self.limit != 0 {
            while self.col + seg.len() > self.limit {
                let room = self.limit.saturating_sub(self.col);
                out.extend_from_slice(&seg[..room]);
                // The continuation starts with a space: never a dot to stuff, and a folded header
                // line stays in its header.
                out.extend_from_slice(b"\r\n ");
                self.col = 1;
                seg = &seg[room..];
            }
        }
        out.extend_from_slice(seg);
        self.col += seg.len();
    }

    fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < data.len() {
            if self.line_start && data[i] == b'.' {
                out.push(b'.');
                self.col = 1;
            }
            match memchr::memchr2(b'\r', b'\n', &data[i..]) {
                None => {
                    self.put(&data[i..], out);
                    i = data.len();
                    self.line_start = false;
                }
                Some(off) => {
                    self.put(&data[i..i + off], out);
                    let j = i + off;
                    out.extend_from_slice(b"\r\n");
                    self.col = 0;
                    i = if data[j] == b'\r' && data.get(j + 1) == Some(&b'\n') {
                        j + 2
                    } else {
                        j + 1
                    };
                    self.line_start = true;
                }
            }
        }
    }

    fn finish(self, out: &mut Vec<u8>) {
        if !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// `data` cut into slices of at most `max` bytes (`max` ≥ 2), never between a CR and its LF.
fn wire_slices(data: &[u8], max: usize) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut n = rest.len().min(max);
        if n < rest.len() && rest[n - 1] == b'\r' && rest[n] == b'\n' {
            n -= 1;
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(d: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_data(d, &mut v);
        v
    }

    #[test]
    fn data_encoded_in_slices_is_the_same_as_whole() {
        let samples: [&[u8]; 5] = [
            b".a\r\n..b\r\nc\rd\ne\r\n.\r\n",
            b"\r\n\r\n\r\n.x",
            b"no line end at all",
            b"\r\r\n\n.\r.",
            b".",
        ];
        for data in samples {
            let whole = enc(data);
            for max in 2..=data.len().max(2) + 1 {
                let mut out = Vec::new();
                let mut e = DataEncoder::new(0);
                let mut total = 0;
                for s in wire_slices(data, max) {
                    assert!(!s.is_empty() && s.len() <= max);
                    total += s.len();
                    e.feed(s, &mut out);
                }
                e.finish(&mut out);
                assert_eq!(total, data.len());
                assert_eq!(out, whole, "{data:?} in slices of {max}");
            }
        }
    }

    #[test]
    fn data_encoding() {
        assert_eq!(enc(b"a\r\nb\r\n"), b"a\r\nb\r\n.\r\n");
        assert_eq!(enc(b"a"), b"a\r\n.\r\n");
        assert_eq!(enc(b""), b".\r\n");
        assert_eq!(enc(b".\r\n..x\r\n.y"), b"..\r\n...x\r\n..y\r\n.\r\n");
        assert_eq!(
            enc(b"bare\nlf\rcr\r\n.dot"),
            b"bare\r\nlf\r\ncr\r\n..dot\r\n.\r\n"
        );
        assert_eq!(
            enc(b"a\n.\nb"),
            b"a\r\n..\r\nb\r\n.\r\n",
            "no smuggled terminator can leave"
        );
    }

    #[test]
    fn long_lines_are_broken_with_crlf_space() {
        let lim = |d: &[u8], n: usize| {
            let mut v = Vec::new();
            encode_data_limited(d, n, &mut v);
            v
        };
        assert_eq!(
            lim(b"abcdefgh\r\nab\r\n", 3),
            b"abc\r\n de\r\n fg\r\n h\r\nab\r\n.\r\n"
        );
        // A stuffed dot counts; a continuation never needs one.
        assert_eq!(lim(b".abcd", 3), b"..a\r\n bc\r\n d\r\n.\r\n");
        assert_eq!(
            lim(b"abc\r\n", 3),
            b"abc\r\n.\r\n",
            "exactly the limit stays whole"
        );
        assert_eq!(lim(b"abcdefgh", 0), enc(b"abcdefgh"));
        // 2,500 octets at 998: every wire line within it, and the content comes back without the
        // inserted CRLF SPACE.
        let long = vec![b'x'; 2500];
        let wire = lim(&long, 998);
        for line in wire.split(|b| *b == b'\n') {
            assert!(line.len() <= 999, "{}", line.len());
        }
        let text = String::from_utf8(wire).unwrap().replace("\r\n ", "");
        assert_eq!(text, format!("{}\r\n.\r\n", "x".repeat(2500)));
        // Fed in slices, the same.
        for max in [2, 7, 64, 999, 4096] {
            let mut out = Vec::new();
            let mut e = DataEncoder::new(998);
            for s in wire_slices(&long, max) {
                e.feed(s, &mut out);
            }
            e.finish(&mut out);
            assert_eq!(out, lim(&long, 998), "slices of {max}");
        }
    }
}
