//! The SMTP session state machine (RFC 5321 and its ESMTP extensions), without I/O. The connection
//! feeds it one command line at a time and it appends the reply to an output buffer and says what the
//! connection must do next ([`Next`]): go on, close, or receive a message (DATA or BDAT), whose end it
//! reports back ([`MessageEnd`]) for the verdict. Disk work (opening and committing the message) is the
//! connection's, through `mailroot::store`; the session only decides. AUTH lives in `auth`, the plan
//! of a message (identifier, trace header, envelope) in `plan`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

mod auth;
mod plan;

pub use plan::MessagePlan;

use super::address::{Mailbox, Path};
use super::command::{self, Bare, Command, ParseError};
use super::data::Flaws;
use super::envelope::{Envelope, Recipient};
use super::params::{Body, MailParams, RcptParams};
use super::reply;
use super::sasl::Step;
use crate::config::VirtualServer;
use crate::policy::auth::Limiter;
use crate::policy::relay::{self, Decision};
use crate::policy::users::Users;
use crate::time::Utc;

/// NOOP/RSET/VRFY/HELP commands a session may send before each further one counts as an error.
pub const JUNK_LIMIT: u32 = 100;

/// What the connection does after a command.
#[derive(Debug)]
pub enum Next {
    /// Read the next command.
    Continue,
    /// Flush the output and close the connection.
    Close,
    /// DATA was accepted: open the message as planned, then call [`Session::data_opened`], then
    /// stream the data until its terminator and call [`Session::message_end`].
    Data(MessagePlan),
    /// STARTTLS was accepted (220 is written): flush, drop any input buffered after the command (it
    /// came in plaintext), run the TLS handshake, then call [`Session::tls_started`].
    StartTls,
    /// BDAT: read exactly `size` bytes. With `open`, open the message first (first chunk). With
    /// `discard`, throw the bytes away and call [`Session::bdat_discarded`]; otherwise append them and
    /// call [`Session::bdat_chunk`] (not last) or [`Session::message_end`] (last).
    Bdat {
        /// Chunk size in bytes.
        size: u64,
        /// BDAT … LAST.
        last: bool,
        /// Open the message before storing this chunk.
        open: Option<MessagePlan>,
        /// The chunk is refused; read and drop it.
        discard: bool,
    },
}

/// What the connection saw while receiving a message.
#[derive(Debug, Clone, Default)]
pub struct MessageEnd {
    /// Message bytes received (after dot-unstuffing).
    pub size: u64,
    /// Bare CR, bare LF, NUL.
    pub flaws: Flaws,
    /// Received headers in the message as it arrived.
    pub hops: u32,
    /// A write to the message file failed.
    pub store_failed: bool,
}

/// The decision at the end of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Commit the message, then call [`Session::committed`].
    Commit,
    /// Refused (the reply is written); drop the message file. Close if `close`.
    Refused {
        /// The session must end (421 was written).
        close: bool,
    },
}

#[derive(Debug)]
struct Transaction {
    envelope: Envelope,
    rcpt_attempts: u32,
    /// A BDAT sequence has begun.
    bdat: bool,
    /// The message identifier once DATA/BDAT started.
    message_id: Option<String>,
}

/// One SMTP session.
#[derive(Debug)]
pub struct Session {
    vs: Arc<VirtualServer>,
    peer: IpAddr,
    /// The client's address is in RelayIpList.
    ip_may_relay: bool,
    /// TLS in use: version and cipher suite.
    tls: Option<String>,
    /// The authenticated user.
    auth_user: Option<String>,
    /// An AUTH exchange waiting for the client's next line.
    auth: Option<Step>,
    users: Option<Arc<Users>>,
    limiter: Option<Arc<Limiter>>,
    auth_failures: u32,
    penalty: Duration,
    junk: u32,
    client_name: Option<Option<String>>,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<Transaction>,
    errors: u32,
    session_bytes: u64,
    pending: Option<&'static [u8]>,
    /// RCPT TO refused for relaying since [`Session::take_relay_refusals`] last asked.
    relay_refusals: u32,
    /// The last line ended with a bare LF and was refused: up to the next CRLF, what comes is the
    /// same line to a filter that ends lines only at CRLF, and is refused too.
    bare_tail: bool,
}

impl Session {
    /// RCPT TO commands refused for relaying since the last call (for the metrics).
    pub fn take_relay_refusals(&mut self) -> u32 {
        std::mem::take(&mut self.relay_refusals)
    }

    /// A new session with a client at `peer`; `may_relay` comes from `policy::access::may_relay`.
    pub fn new(vs: Arc<VirtualServer>, peer: IpAddr, may_relay: bool) -> Session {
        Session {
            vs,
            peer,
            ip_may_relay: may_relay,
            tls: None,
            auth_user: None,
            auth: None,
            users: None,
            limiter: None,
            auth_failures: 0,
            penalty: Duration::ZERO,
            junk: 0,
            client_name: None,
            helo: None,
            esmtp: false,
            tx: None,
            errors: 0,
            session_bytes: 0,
            pending: None,
            relay_refusals: 0,
            bare_tail: false,
        }
    }

    /// Enables AUTH with these users and this brute-force limiter (when AuthFlags has Basic).
    pub fn with_auth(mut self, users: Arc<Users>, limiter: Arc<Limiter>) -> Session {
        self.users = Some(users);
        self.limiter = Some(limiter);
        self
    }

    /// TLS is now in use (after STARTTLS, or from the start on an implicit TLS binding): RFC 3207
    /// says the client must start over, so everything learned before is forgotten.
    pub fn tls_started(&mut self, description: String) {
        self.tls = Some(description);
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.auth_user = None;
        self.auth = None;
    }

    /// The authenticated user, if any.
    pub fn auth_user(&self) -> Option<&str> {
        self.auth_user.as_deref()
    }

    /// Whether the next line is an answer to an AUTH challenge (a credential, not a command).
    pub fn in_auth_exchange(&self) -> bool {
        self.auth.is_some()
    }

    /// How long the connection should wait before sending the replies just written (a failed login).
    pub fn take_penalty(&mut self) -> Duration {
        std::mem::take(&mut self.penalty)
    }

    fn may_relay(&self) -> bool {
        self.ip_may_relay || (self.auth_user.is_some() && self.vs.security.relay_for_auth)
    }

    fn tls_offered(&self) -> bool {
        self.vs.security.tls.is_some() && self.tls.is_none()
    }

    fn auth_offered(&self) -> bool {
        self.vs.security.basic
            && self.users.is_some()
            && (self.tls.is_some() || self.vs.security.plaintext_auth)
    }

    /// RequireTls: 530 before STARTTLS.
    fn needs_tls(&self) -> bool {
        self.vs.security.require_tls && self.tls.is_none()
    }

    /// The 220 banner.
    pub fn greeting(&self, out: &mut Vec<u8>) {
        let now = Utc::now().rfc5322();
        reply::push(
            out,
            220,
            "",
            format_args!(
                "{} mailroot ESMTP MAIL Service, Version: {} ready at  {}",
                self.vs.fqdn,
                env!("CARGO_PKG_VERSION"),
                now
            ),
        );
    }

    /// The client's forward-confirmed reverse DNS name: `Some(None)` when the lookup was made and
    /// failed (EnableReverseDnsLookup), `None` when no lookup was made.
    pub fn set_client_name(&mut self, name: Option<Option<String>>) {
        self.client_name = name;
    }

    /// The HELO/EHLO name, once given (the W3C log's cs-username).
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// Whether a message (DATA or a BDAT sequence) is in progress; when this turns false the
    /// connection discards any open message file.
    pub fn message_open(&self) -> bool {
        self.tx.as_ref().is_some_and(|t| t.message_id.is_some())
    }

    /// Counts a protocol error; at MaxSmtpErrors writes 421 and asks to close.
    fn error(&mut self, out: &mut Vec<u8>) -> Next {
        self.errors += 1;
        if self.errors >= self.vs.max_smtp_errors {
            reply::too_many_errors(out, &self.vs.fqdn);
            Next::Close
        } else {
            Next::Continue
        }
    }

    /// NOOP, RSET, VRFY and HELP move no mail: after [`JUNK_LIMIT`] of them each one counts as an
    /// error (as Postfix's smtpd_junk_command_limit), so a flood ends with 421.
    fn junk(&mut self, out: &mut Vec<u8>) -> Next {
        self.junk += 1;
        if self.junk > JUNK_LIMIT {
            self.error(out)
        } else {
            Next::Continue
        }
    }

    /// A command line that exceeded 512 octets (already discarded by the connection).
    /// `auth_line`: the line started with `AUTH ` (an overlong initial response).
    pub fn line_too_long(&mut self, auth_line: bool, out: &mut Vec<u8>) -> Next {
        if self.auth.take().is_some() || auth_line {
            out.extend_from_slice(reply::AUTH_BAD_INPUT);
            return self.error(out);
        }
        out.extend_from_slice(reply::LINE_TOO_LONG);
        self.error(out)
    }

    /// A command line with a bare LF ending or a bare CR inside (see `command::Line::Bare`),
    /// without its line ending. Refused with `500 5.5.2` and counted as an error, unless
    /// AllowBareLfInCommands keeps the old behaviour (the line is a command like any other).
    pub fn bare_line(&mut self, line: &[u8], bare: Bare, out: &mut Vec<u8>) -> Next {
        if self.vs.allow_bare_lf_in_commands {
            return self.command(line, out);
        }
        if self.auth.take().is_some() {
            out.extend_from_slice(reply::AUTH_BAD_INPUT);
            return self.error(out);
        }
        self.bare_tail = bare == Bare::Lf;
        out.extend_from_slice(match bare {
            Bare::Lf => reply::BARE_LF_COMMAND,
            Bare::Cr => reply::BARE_CR_COMMAND,
        });
        // A refused BDAT still announced a chunk: the session cannot stay in step.
        if command::verb_of(line).eq_ignore_ascii_case(b"BDAT") {
            return Next::Close;
        }
        self.error(out)
    }

    /// Handles one command line (without its line ending).
    pub fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Next {
        if std::mem::take(&mut self.bare_tail) {
            out.extend_from_slice(reply::BARE_LF_TAIL);
            if command::verb_of(line).eq_ignore_ascii_case(b"BDAT") {
                return Next::Close;
            }
            return self.error(out);
        }
        if let Some(step) = self.auth.take() {
            return self.auth_response(step, line, out);
        }
        let cmd = match command::parse(line) {
            Ok(c) => c,
            Err(e) => {
                match e {
                    ParseError::Unknown => out.extend_from_slice(reply::UNRECOGNIZED),
                    ParseError::Syntax(t) => reply::syntax(out, t),
                    ParseError::BadSender => {
                        reply::push(out, 501, "5.1.7", format_args!("Invalid address"))
                    }
                    ParseError::BadRecipient => {
                        reply::push(out, 501, "5.1.3", format_args!("Invalid address"))
                    }
                    ParseError::UnknownParam => {
                        reply::push(out, 555, "5.5.4", format_args!("Unsupported parameter"))
                    }
                    ParseError::BadParamValue(t) => {
                        reply::push(out, 501, "5.5.4", format_args!("Invalid parameter: {t}"))
                    }
                }
                // A malformed BDAT still announced a chunk we cannot size: the session cannot stay in
                // step, so it ends (RFC 3030 §4 leaves this to the server).
                if command::verb_of(line).eq_ignore_ascii_case(b"BDAT") {
                    return Next::Close;
                }
                return self.error(out);
            }
        };
        match cmd {
            Command::Ehlo(name) | Command::Helo(name) => {
                let ehlo = matches!(cmd, Command::Ehlo(_));
                self.tx = None;
                self.helo = Some(name.to_string());
                self.esmtp = ehlo;
                if ehlo {
                    self.ehlo_reply(out);
                } else {
                    reply::push(
                        out,
                        250,
                        "",
                        format_args!("{} Hello [{}]", self.vs.fqdn, self.peer),
                    );
                }
                Next::Continue
            }
            Command::Mail(..) | Command::Rcpt(..) | Command::Data | Command::Auth(..)
                if self.needs_tls() =>
            {
                out.extend_from_slice(reply::MUST_STARTTLS);
                self.error(out)
            }
            Command::Bdat(size, last) if self.needs_tls() => {
                self.pending = Some(reply::MUST_STARTTLS);
                Next::Bdat {
                    size,
                    last,
                    open: None,
                    discard: true,
                }
            }
            Command::StartTls => {
                if self.tls.is_some() {
                    out.extend_from_slice(reply::TLS_ACTIVE);
                    return self.error(out);
                }
                if !self.tls_offered() {
                    out.extend_from_slice(reply::TLS_UNAVAILABLE);
                    return Next::Continue;
                }
                out.extend_from_slice(reply::START_TLS);
                Next::StartTls
            }
            Command::Auth(mech, initial) => self.auth_command(mech, initial, out),
            Command::Mail(path, params) => self.mail(path, params, out),
            Command::Rcpt(to, params) => self.rcpt(to, params, out),
            Command::Data => self.data(out),
            Command::Bdat(size, last) => self.bdat(size, last),
            Command::Rset => {
                self.tx = None;
                out.extend_from_slice(reply::RSET);
                self.junk(out)
            }
            Command::Noop => {
                out.extend_from_slice(reply::NOOP);
                self.junk(out)
            }
            Command::Quit => {
                reply::closing(out, &self.vs.fqdn);
                Next::Close
            }
            Command::Vrfy(who) => {
                if who.contains('@') {
                    reply::vrfy(out, who.trim_matches(|c| c == '<' || c == '>'));
                } else {
                    reply::vrfy(out, &format!("{}@{}", who, self.vs.default_domain));
                }
                self.junk(out)
            }
            Command::Help => {
                // IIS's list, with STARTTLS and AUTH where this server offers them.
                out.extend_from_slice(
                    b"214-This server supports the following commands:\r\n214 HELO EHLO ",
                );
                // Not inside TLS: STARTTLS is refused there (RFC 3207 §4.2), as in EHLO.
                if self.vs.security.tls.is_some() && self.tls.is_none() {
                    out.extend_from_slice(b"STARTTLS ");
                }
                out.extend_from_slice(b"RCPT DATA RSET MAIL QUIT HELP ");
                if self.vs.security.basic {
                    out.extend_from_slice(b"AUTH ");
                }
                out.extend_from_slice(b"BDAT VRFY NOOP\r\n");
                self.junk(out)
            }
        }
    }

    fn ehlo_reply(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing to a Vec cannot fail.
        let _ = write!(out, "250-{} Hello [{}]\r\n", self.vs.fqdn, self.peer);
        match self.vs.max_message_size {
            0 => out.extend_from_slice(b"250-SIZE\r\n"),
            n => {
                let _ = write!(out, "250-SIZE {n}\r\n");
            }
        }
        out.extend_from_slice(
            b"250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n250-VRFY\r\n",
        );
        if self.tls_offered() {
            out.extend_from_slice(b"250-STARTTLS\r\n");
        }
        if self.auth_offered() {
            out.extend_from_slice(b"250-AUTH LOGIN PLAIN\r\n");
        }
        out.extend_from_slice(b"250-HELP\r\n250 OK\r\n");
    }

    fn mail(&mut self, path: Path<'_>, params: MailParams<'_>, out: &mut Vec<u8>) -> Next {
        if self.helo.is_none() {
            out.extend_from_slice(reply::SEND_HELLO_FIRST);
            return self.error(out);
        }
        if self.tx.is_some() {
            out.extend_from_slice(reply::SENDER_ALREADY);
            return self.error(out);
        }
        if !self.vs.security.anonymous && self.auth_user.is_none() {
            out.extend_from_slice(reply::AUTH_REQUIRED);
            return self.error(out);
        }
        if let Some(size) = params.size {
            let max = self.vs.max_message_size;
            let session_left = self.session_left();
            if (max > 0 && size > max) || size > session_left {
                out.extend_from_slice(reply::TOO_BIG);
                return Next::Continue;
            }
        }
        let sender = match path {
            Path::Null => String::new(),
            Path::Mailbox(m) => m.to_string_lossless(),
        };
        reply::sender_ok(out, &sender);
        self.tx = Some(Transaction {
            envelope: Envelope {
                sender,
                body: params.body,
                ret: params.ret,
                envid: params.envid.map(str::to_string),
                recipients: Vec::new(),
            },
            rcpt_attempts: 0,
            bdat: false,
            message_id: None,
        });
        Next::Continue
    }

    fn rcpt(&mut self, to: Mailbox<'_>, params: RcptParams<'_>, out: &mut Vec<u8>) -> Next {
        let may_relay = self.may_relay();
        let Some(tx) = self.tx.as_mut() else {
            out.extend_from_slice(reply::NEED_MAIL);
            return self.error(out);
        };
        if tx.message_id.is_some() {
            out.extend_from_slice(reply::NEED_MAIL);
            return self.error(out);
        }
        tx.rcpt_attempts += 1;
        let address = if to.domain.is_empty() {
            format!("{}@{}", to.local, self.vs.default_domain)
        } else {
            to.to_string_lossless()
        };
        let local = match relay::decide(&self.vs, may_relay, &to) {
            Decision::Denied => {
                self.relay_refusals += 1;
                reply::unable_to_relay(out, &address);
                return self.error(out);
            }
            Decision::Local => true,
            Decision::Relay => false,
        };
        if tx
            .envelope
            .recipients
            .iter()
            .any(|r| r.address.eq_ignore_ascii_case(&address))
        {
            reply::recipient_ok(out, &address);
            return Next::Continue;
        }
        if tx.envelope.recipients.len() >= self.vs.max_recipients as usize {
            out.extend_from_slice(reply::TOO_MANY_RCPTS);
            return Next::Continue;
        }
        reply::recipient_ok(out, &address);
        tx.envelope.recipients.push(Recipient {
            address,
            local,
            notify: params.notify,
            orcpt: params.orcpt.map(str::to_string),
        });
        Next::Continue
    }

    /// Why a message cannot start now, if it cannot.
    fn refuse_message(&self) -> Option<&'static [u8]> {
        match &self.tx {
            None => Some(reply::NEED_MAIL),
            Some(tx) if tx.envelope.recipients.is_empty() && tx.rcpt_attempts > 0 => {
                Some(reply::NO_VALID_RCPTS)
            }
            Some(tx) if tx.envelope.recipients.is_empty() => Some(reply::NEED_RCPT),
            Some(_) => None,
        }
    }

    fn data(&mut self, out: &mut Vec<u8>) -> Next {
        if let Some(r) = self.refuse_message() {
            out.extend_from_slice(r);
            return self.error(out);
        }
        let Some(tx) = self.tx.as_ref() else {
            return Next::Continue;
        };
        if tx.bdat {
            out.extend_from_slice(reply::DATA_AFTER_BDAT);
            return self.error(out);
        }
        if tx.envelope.body == Some(Body::BinaryMime) {
            out.extend_from_slice(reply::DATA_WITH_BINARYMIME);
            return self.error(out);
        }
        Next::Data(self.plan())
    }

    /// BDAT writes no reply of its own here: the connection reads the chunk first.
    fn bdat(&mut self, size: u64, last: bool) -> Next {
        if let Some(r) = self.refuse_message() {
            self.pending = Some(r);
            return Next::Bdat {
                size,
                last,
                open: None,
                discard: true,
            };
        }
        let first = self.tx.as_ref().is_some_and(|t| !t.bdat);
        let open = if first {
            if let Some(t) = self.tx.as_mut() {
                t.bdat = true;
            }
            Some(self.plan())
        } else {
            None
        };
        Next::Bdat {
            size,
            last,
            open,
            discard: false,
        }
    }

    fn session_left(&self) -> u64 {
        match self.vs.max_session_size {
            0 => u64::MAX,
            max => max.saturating_sub(self.session_bytes),
        }
    }

    /// After [`Next::Data`]: the message file is open (`ok`) or could not be created.
    pub fn data_opened(&mut self, ok: bool, out: &mut Vec<u8>) {
        if ok {
            out.extend_from_slice(reply::START_DATA);
        } else {
            out.extend_from_slice(reply::STORAGE);
            self.tx = None;
        }
    }

    /// After a refused BDAT chunk was read and dropped: writes the reply that refuses it.
    pub fn bdat_discarded(&mut self, out: &mut Vec<u8>) -> Next {
        match self.pending.take() {
            Some(r) => {
                out.extend_from_slice(r);
                self.error(out)
            }
            None => {
                // The message file could not be opened or written.
                out.extend_from_slice(reply::STORAGE);
                self.tx = None;
                Next::Continue
            }
        }
    }

    /// After a BDAT chunk that is not the last was stored.
    pub fn bdat_chunk(&mut self, size: u64, out: &mut Vec<u8>) {
        reply::chunk_ok(out, size);
    }

    /// At the end of a message (DATA terminator or BDAT LAST): the verdict. The transaction ends
    /// whatever it is, except that on [`Verdict::Commit`] the session waits for [`Session::committed`].
    pub fn message_end(&mut self, end: &MessageEnd, out: &mut Vec<u8>) -> Verdict {
        self.session_bytes = self.session_bytes.saturating_add(end.size);
        let binary = self
            .tx
            .as_ref()
            .is_some_and(|t| t.envelope.body == Some(Body::BinaryMime));
        let refuse: Option<&'static [u8]> =
            if self.vs.max_session_size > 0 && self.session_bytes > self.vs.max_session_size {
                out.extend_from_slice(reply::SESSION_TOO_BIG);
                reply::session_closed(out, &self.vs.fqdn);
                self.tx = None;
                return Verdict::Refused { close: true };
            } else if self.vs.max_message_size > 0 && end.size > self.vs.max_message_size {
                Some(reply::TOO_BIG)
            } else if !binary && end.flaws.bare_lf {
                Some(reply::BARE_LF)
            } else if !binary && end.flaws.bare_cr {
                Some(reply::BARE_CR)
            } else if !binary && end.flaws.nul {
                Some(reply::NUL)
            } else if end.hops > self.vs.hop_count {
                Some(reply::LOOP)
            } else if end.store_failed {
                Some(reply::STORAGE)
            } else {
                None
            };
        match refuse {
            Some(r) => {
                out.extend_from_slice(r);
                self.tx = None;
                Verdict::Refused { close: false }
            }
            None => Verdict::Commit,
        }
    }

    /// After [`Verdict::Commit`]: whether the commit succeeded. Writes 250 or 452 and ends the
    /// transaction.
    pub fn committed(&mut self, ok: bool, out: &mut Vec<u8>) {
        let tx = self.tx.take();
        if ok {
            // Mail moved: the junk count starts again (as Postfix's), so a client that reuses its
            // connection with RSET before each message is never cut off for it.
            self.junk = 0;
            let id = tx.and_then(|t| t.message_id).unwrap_or_default();
            reply::queued(out, &id);
        } else {
            out.extend_from_slice(reply::STORAGE);
        }
    }

    /// After [`Verdict::Commit`]: the message cannot be kept in the form it came in after all
    /// (`sendmail -bs` cannot put binary content into the Pickup folder). Writes `reply` and ends
    /// the transaction.
    pub fn not_committed(&mut self, reply: &[u8], out: &mut Vec<u8>) {
        self.tx = None;
        out.extend_from_slice(reply);
    }

    /// The envelope of the current transaction (for logging after a commit).
    pub fn envelope(&self) -> Option<&Envelope> {
        self.tx.as_ref().map(|t| &t.envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::test_server;

    struct T {
        s: Session,
        out: Vec<u8>,
    }

    impl T {
        fn new(relay: bool) -> T {
            T {
                s: Session::new(Arc::new(test_server()), "127.0.0.1".parse().unwrap(), relay),
                out: Vec::new(),
            }
        }
        fn cmd(&mut self, line: &str) -> (String, Next) {
            self.out.clear();
            let n = self.s.command(line.as_bytes(), &mut self.out);
            (String::from_utf8(self.out.clone()).unwrap(), n)
        }
        fn reply(&mut self, line: &str) -> String {
            self.cmd(line).0
        }
        /// Frames raw bytes as the connection does and hands each line to the session.
        fn feed(&mut self, mut bytes: &[u8]) -> Vec<String> {
            let mut replies = Vec::new();
            loop {
                let mut out = Vec::new();
                let n = match command::take_line(bytes) {
                    command::Line::Complete(line, n) => {
                        self.s.command(line, &mut out);
                        n
                    }
                    command::Line::Bare(line, n, bare) => {
                        self.s.bare_line(line, bare, &mut out);
                        n
                    }
                    _ => return replies,
                };
                replies.push(String::from_utf8(out).unwrap());
                bytes = &bytes[n..];
            }
        }
    }

    #[test]
    fn bare_line_endings_in_commands_are_refused_with_what_follows_them() {
        let mut t = T::new(true);
        let r = t.feed(b"EHLO x\r\nMAIL FROM:<a@b.test>\nRCPT TO:<c@remote.test>\r\nNOOP\r\n");
        assert_eq!(r.len(), 4, "{r:?}");
        assert!(r[1].starts_with("500 5.5.2 Syntax error: bare LF"), "{r:?}");
        assert!(
            r[2].starts_with("500 5.5.2 Syntax error: the rest of"),
            "{r:?}"
        );
        assert!(
            r[3].starts_with("250"),
            "back in step after the CRLF: {r:?}"
        );
        // Nothing of the refused line took effect: no transaction is open.
        assert!(t.reply("DATA").starts_with("503"));
        let r = t.feed(b"NOOP\rRSET\r\n");
        assert!(r[0].starts_with("500 5.5.2 Syntax error: bare CR"), "{r:?}");
        // Each refusal is an error: a client that sends nothing but bare LFs is cut off.
        let mut t = T::new(true);
        let r = t.feed(&b"NOOP\n".repeat(12));
        assert!(r.iter().all(|l| l.starts_with("500 5.5.2")), "{r:?}");
        assert!(
            r[9].contains("\r\n421 4.7.0"),
            "MaxSmtpErrors (10) ends it: {r:?}"
        );
    }

    #[test]
    fn allow_bare_lf_in_commands_keeps_the_old_behaviour() {
        let mut vs = test_server();
        vs.allow_bare_lf_in_commands = true;
        let mut t = T {
            s: Session::new(Arc::new(vs), "127.0.0.1".parse().unwrap(), true),
            out: Vec::new(),
        };
        let r = t.feed(b"EHLO x\nMAIL FROM:<a@b.test>\nRCPT TO:<c@remote.test>\r\n");
        assert!(r[0].starts_with("250-"), "{r:?}");
        assert!(r[1].starts_with("250"), "{r:?}");
        assert!(r[2].starts_with("250"), "{r:?}");
    }

    #[test]
    fn greeting_and_ehlo() {
        let t = T::new(false);
        let mut out = Vec::new();
        t.s.greeting(&mut out);
        let g = String::from_utf8(out).unwrap();
        assert!(
            g.starts_with("220 mx.local.test mailroot ESMTP MAIL Service, Version: "),
            "{g}"
        );
        assert!(g.ends_with("\r\n"));
        let mut t = T::new(false);
        let r = t.reply("EHLO client.test");
        assert_eq!(
            r,
            "250-mx.local.test Hello [127.0.0.1]\r\n250-SIZE 2097152\r\n250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n250-VRFY\r\n250-HELP\r\n250 OK\r\n"
        );
        assert_eq!(
            t.reply("HELO client.test"),
            "250 mx.local.test Hello [127.0.0.1]\r\n"
        );
        assert_eq!(t.s.helo(), Some("client.test"));
    }

    #[test]
    fn unlimited_size_is_a_bare_keyword() {
        let mut vs = test_server();
        vs.max_message_size = 0;
        let mut s = Session::new(Arc::new(vs), "127.0.0.1".parse().unwrap(), false);
        let mut out = Vec::new();
        s.command(b"EHLO x", &mut out);
        assert!(String::from_utf8(out).unwrap().contains("250-SIZE\r\n"));
    }

    #[test]
    fn sequence_errors() {
        let mut vs = test_server();
        vs.max_smtp_errors = 100;
        let mut t = T {
            s: Session::new(Arc::new(vs), "127.0.0.1".parse().unwrap(), false),
            out: Vec::new(),
        };
        assert_eq!(
            t.reply("MAIL FROM:<a@b.test>"),
            "503 5.5.1 Send hello first\r\n"
        );
        t.reply("EHLO c");
        assert_eq!(
            t.reply("RCPT TO:<u@local.test>"),
            "503 5.5.1 Need mail command\r\n"
        );
        assert_eq!(t.reply("DATA"), "503 5.5.1 Need mail command\r\n");
        assert_eq!(
            t.reply("MAIL FROM:<a@b.test>"),
            "250 2.1.0 a@b.test....Sender OK\r\n"
        );
        assert_eq!(
            t.reply("MAIL FROM:<a@b.test>"),
            "503 5.5.1 Sender already specified\r\n"
        );
        assert_eq!(t.reply("DATA"), "503 5.5.1 Need rcpt command\r\n");
        assert_eq!(
            t.reply("RCPT TO:<u@remote.test>"),
            "550 5.7.1 Unable to relay for u@remote.test\r\n"
        );
        assert_eq!(t.reply("DATA"), "554 5.5.1 No valid recipients\r\n");
        assert_eq!(t.reply("RSET"), "250 2.0.0 Resetting\r\n");
        assert_eq!(t.reply("NOOP"), "250 2.0.0 OK\r\n");
        assert_eq!(t.reply("FOO"), "500 5.5.1 Unrecognized command\r\n");
        assert_eq!(
            t.reply("MAIL FROM:<a@b.test> X=1"),
            "555 5.5.4 Unsupported parameter\r\n"
        );
        assert_eq!(t.reply("MAIL FROM:<a@@b>"), "501 5.1.7 Invalid address\r\n");
        assert_eq!(
            t.reply("MAIL FROM:<a@b.test> SIZE=x"),
            "501 5.5.4 Invalid parameter: SIZE needs a number\r\n"
        );
        assert!(t.reply("VRFY admin").starts_with(
            "252 2.1.5 Cannot VRFY user, but will take message for <admin@local.test>"
        ));
        assert!(t.reply("HELP").starts_with("214-"));
        assert_eq!(
            t.reply("QUIT"),
            "221 2.0.0 mx.local.test Service closing transmission channel\r\n"
        );
    }

    #[test]
    fn too_many_errors_closes() {
        let mut t = T::new(false);
        for _ in 0..9 {
            assert!(matches!(t.cmd("BOGUS").1, Next::Continue));
        }
        let (r, n) = t.cmd("BOGUS");
        assert!(
            r.ends_with(
                "421 4.7.0 mx.local.test Too many errors, closing transmission channel\r\n"
            ),
            "{r}"
        );
        assert!(matches!(n, Next::Close));
    }

    #[test]
    fn recipients_relay_and_limits() {
        let mut t = T::new(false);
        t.reply("EHLO c");
        t.reply("MAIL FROM:<>");
        assert_eq!(
            t.reply("RCPT TO:<u@local.test>"),
            "250 2.1.5 u@local.test\r\n"
        );
        assert_eq!(
            t.reply("RCPT TO:<Postmaster>"),
            "250 2.1.5 Postmaster@local.test\r\n"
        );
        assert_eq!(
            t.reply("RCPT TO:<u%remote.test@local.test>"),
            "550 5.7.1 Unable to relay for u%remote.test@local.test\r\n"
        );
        for i in 2..100 {
            assert!(
                t.reply(&format!("RCPT TO:<u{i}@local.test>"))
                    .starts_with("250 ")
            );
        }
        assert_eq!(
            t.reply("RCPT TO:<last@local.test>"),
            "452 4.5.3 Too many recipients\r\n"
        );
        assert_eq!(t.s.envelope().unwrap().recipients.len(), 100);

        let mut r = T::new(true);
        r.reply("EHLO c");
        r.reply("MAIL FROM:<a@b.test> SIZE=2097153");
        assert_eq!(r.out, reply::TOO_BIG);
        r.reply("MAIL FROM:<a@b.test> SIZE=100 RET=HDRS");
        assert_eq!(
            r.reply("RCPT TO:<x@remote.test> NOTIFY=FAILURE"),
            "250 2.1.5 x@remote.test\r\n"
        );
        assert_eq!(
            r.reply("RCPT TO:<u@local.test>"),
            "250 2.1.5 u@local.test\r\n"
        );
        let Next::Data(plan) = r.cmd("DATA").1 else {
            panic!("DATA must start")
        };
        // The route decision made at RCPT travels with each recipient.
        let e = &plan.envelope;
        assert_eq!(e.sender, "a@b.test");
        assert_eq!(e.ret, Some(crate::smtp::params::Ret::Hdrs));
        assert_eq!(
            e.recipients
                .iter()
                .map(|r| (r.address.as_str(), r.local, r.notify))
                .collect::<Vec<_>>(),
            vec![
                (
                    "x@remote.test",
                    false,
                    Some(crate::smtp::params::Notify(
                        crate::smtp::params::Notify::FAILURE
                    ))
                ),
                ("u@local.test", true, None)
            ]
        );
        assert!(
            String::from_utf8_lossy(&plan.trace)
                .starts_with("Received: from c ([127.0.0.1]) by mx.local.test with ESMTP id ")
        );
        assert_eq!(plan.limit, 2_097_152);
        assert!(r.s.message_open());
    }

    fn ready(t: &mut T) -> MessagePlan {
        t.reply("EHLO c");
        t.reply("MAIL FROM:<a@b.test>");
        t.reply("RCPT TO:<u@local.test>");
        match t.cmd("DATA").1 {
            Next::Data(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn message_verdicts() {
        let mut t = T::new(false);
        let plan = ready(&mut t);
        t.out.clear();
        t.s.data_opened(true, &mut t.out);
        assert_eq!(t.out, reply::START_DATA);
        t.out.clear();
        assert_eq!(
            t.s.message_end(
                &MessageEnd {
                    size: 10,
                    ..Default::default()
                },
                &mut t.out
            ),
            Verdict::Commit
        );
        t.s.committed(true, &mut t.out);
        assert_eq!(
            String::from_utf8(t.out.clone()).unwrap(),
            format!("250 2.6.0 {} Queued mail for delivery\r\n", plan.message_id)
        );
        assert!(!t.s.message_open());

        for (end, want) in [
            (
                MessageEnd {
                    size: 2_097_153,
                    ..Default::default()
                },
                reply::TOO_BIG,
            ),
            (
                MessageEnd {
                    flaws: Flaws {
                        bare_lf: true,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                reply::BARE_LF,
            ),
            (
                MessageEnd {
                    flaws: Flaws {
                        bare_cr: true,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                reply::BARE_CR,
            ),
            (
                MessageEnd {
                    flaws: Flaws {
                        nul: true,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                reply::NUL,
            ),
            (
                MessageEnd {
                    hops: 16,
                    ..Default::default()
                },
                reply::LOOP,
            ),
            (
                MessageEnd {
                    store_failed: true,
                    ..Default::default()
                },
                reply::STORAGE,
            ),
        ] {
            let mut t = T::new(false);
            ready(&mut t);
            t.out.clear();
            assert_eq!(
                t.s.message_end(&end, &mut t.out),
                Verdict::Refused { close: false }
            );
            assert_eq!(t.out, want);
            assert!(!t.s.message_open());
        }
        let mut t = T::new(false);
        ready(&mut t);
        t.out.clear();
        assert_eq!(
            t.s.message_end(
                &MessageEnd {
                    hops: 15,
                    ..Default::default()
                },
                &mut t.out
            ),
            Verdict::Commit
        );
    }

    #[test]
    fn session_size_closes() {
        let mut t = T::new(false);
        ready(&mut t);
        t.out.clear();
        assert_eq!(
            t.s.message_end(
                &MessageEnd {
                    size: 10_485_761,
                    ..Default::default()
                },
                &mut t.out
            ),
            Verdict::Refused { close: true }
        );
        let r = String::from_utf8(t.out.clone()).unwrap();
        assert!(
            r.starts_with("552 5.3.4 Session size") && r.contains("\r\n421 4.3.2 "),
            "{r}"
        );
    }

    #[test]
    fn bdat_flow() {
        let mut t = T::new(false);
        t.reply("EHLO c");
        // Refused chunk: read, dropped, then the reply.
        match t.cmd("BDAT 5").1 {
            Next::Bdat {
                size: 5,
                discard: true,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        t.out.clear();
        t.s.bdat_discarded(&mut t.out);
        assert_eq!(t.out, reply::NEED_MAIL);
        t.reply("MAIL FROM:<a@b.test> BODY=BINARYMIME");
        t.reply("RCPT TO:<u@local.test>");
        assert_eq!(
            t.reply("DATA"),
            String::from_utf8_lossy(reply::DATA_WITH_BINARYMIME)
        );
        match t.cmd("BDAT 3").1 {
            Next::Bdat {
                size: 3,
                last: false,
                open: Some(p),
                discard: false,
            } => assert!(p.binary),
            other => panic!("{other:?}"),
        }
        t.out.clear();
        t.s.bdat_chunk(3, &mut t.out);
        assert_eq!(t.out, b"250 2.0.0 3 octets received\r\n");
        match t.cmd("BDAT 0 LAST").1 {
            Next::Bdat {
                size: 0,
                last: true,
                open: None,
                discard: false,
            } => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(
            t.reply("DATA"),
            String::from_utf8_lossy(reply::DATA_AFTER_BDAT)
        );
        let mut m = T::new(false);
        m.reply("EHLO c");
        let (r, n) = m.cmd("BDAT 6 FIRST");
        assert!(r.starts_with("501 5.5.2 "), "{r}");
        assert!(
            matches!(n, Next::Close),
            "a malformed BDAT cannot be skipped: close"
        );
        t.out.clear();
        let end = MessageEnd {
            size: 3,
            flaws: Flaws {
                bare_lf: true,
                nul: true,
                bare_cr: false,
            },
            ..Default::default()
        };
        assert_eq!(
            t.s.message_end(&end, &mut t.out),
            Verdict::Commit,
            "BINARYMIME carries any octet"
        );
    }

    fn auth_session() -> (T, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "mailroot-session-auth-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("users");
        crate::policy::users::save(
            &path,
            &[(
                "scanner".into(),
                crate::policy::users::hash("s3cret").unwrap(),
            )],
        )
        .unwrap();
        let mut vs = test_server();
        vs.security.basic = true;
        vs.security.plaintext_auth = true;
        vs.max_smtp_errors = 100;
        let users = Arc::new(Users::open(&path).unwrap());
        let s = Session::new(Arc::new(vs), "127.0.0.2".parse().unwrap(), false)
            .with_auth(users, Arc::new(Limiter::new()));
        (T { s, out: Vec::new() }, dir)
    }

    #[test]
    fn auth_exchanges_penalties_and_relay() {
        let (mut t, dir) = auth_session();
        assert!(t.reply("EHLO c").contains("250-AUTH LOGIN PLAIN\r\n"));
        // Wrong password: 535 and a growing penalty.
        let bad = crate::smtp::sasl::encode(b"\0scanner\0wrong");
        for want in [1, 2, 4, 8, 8] {
            assert_eq!(
                t.reply(&format!("AUTH PLAIN {bad}")),
                "535 5.7.8 Authentication credentials invalid\r\n"
            );
            assert_eq!(t.s.take_penalty(), Duration::from_secs(want));
            assert_eq!(t.s.take_penalty(), Duration::ZERO, "taken once");
        }
        // LOGIN: the exchange lines are credentials, not commands.
        assert_eq!(t.reply("AUTH LOGIN"), "334 VXNlcm5hbWU6\r\n");
        assert!(t.s.in_auth_exchange());
        assert_eq!(
            t.reply(&crate::smtp::sasl::encode(b"scanner")),
            "334 UGFzc3dvcmQ6\r\n"
        );
        assert_eq!(
            t.reply(&crate::smtp::sasl::encode(b"s3cret")),
            "235 2.7.0 Authentication successful\r\n"
        );
        assert!(!t.s.in_auth_exchange());
        assert_eq!(t.s.auth_user(), Some("scanner"));
        // RelayForAuth: the client (not in RelayIpList) may now relay.
        t.reply("MAIL FROM:<a@b.test>");
        assert_eq!(
            t.reply("RCPT TO:<x@remote.test>"),
            "250 2.1.5 x@remote.test\r\n"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn auth_input_errors() {
        let (mut t, dir) = auth_session();
        t.reply("EHLO c");
        assert_eq!(t.reply("AUTH PLAIN"), "334 \r\n");
        assert_eq!(t.reply("*"), "501 5.7.0 Authentication cancelled\r\n");
        assert_eq!(
            t.reply("AUTH PLAIN ###"),
            "501 5.5.2 Cannot decode the AUTH response\r\n"
        );
        assert_eq!(
            t.reply("AUTH CRAM-MD5"),
            "504 5.5.4 Unrecognized authentication type\r\n"
        );
        // An authzid other than the user is refused.
        let other = crate::smtp::sasl::encode(b"admin\0scanner\0s3cret");
        assert!(t.reply(&format!("AUTH PLAIN {other}")).starts_with("535 "));
        // An AUTH line too long to be a command ends the exchange with 501.
        t.reply("AUTH LOGIN");
        t.out.clear();
        t.s.line_too_long(false, &mut t.out);
        assert_eq!(t.out, reply::AUTH_BAD_INPUT);
        assert!(!t.s.in_auth_exchange());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn delivered_mail_resets_the_junk_count() {
        let mut t = T::new(false);
        for round in 0..3 {
            for _ in 0..JUNK_LIMIT {
                assert_eq!(t.reply("RSET"), "250 2.0.0 Resetting\r\n", "round {round}");
            }
            ready(&mut t);
            t.out.clear();
            t.s.data_opened(true, &mut t.out);
            let end = MessageEnd {
                size: 10,
                ..Default::default()
            };
            assert_eq!(t.s.message_end(&end, &mut t.out), Verdict::Commit);
            t.s.committed(true, &mut t.out);
        }
        // Without mail in between, the limit still holds.
        for _ in 0..JUNK_LIMIT {
            t.reply("RSET");
        }
        assert!(
            t.reply("RSET").starts_with("250"),
            "the first past the limit is one error"
        );
        assert_eq!(t.s.errors, 1);
    }

    #[test]
    fn noop_flood_ends_in_421() {
        let mut t = T::new(false);
        t.reply("EHLO c");
        for _ in 0..JUNK_LIMIT {
            assert!(matches!(t.cmd("NOOP").1, Next::Continue));
        }
        let mut closed = false;
        for _ in 0..20 {
            if let (r, Next::Close) = t.cmd("NOOP") {
                assert!(
                    r.ends_with(
                        "421 4.7.0 mx.local.test Too many errors, closing transmission channel\r\n"
                    ),
                    "{r}"
                );
                closed = true;
                break;
            }
        }
        assert!(
            closed,
            "MaxSmtpErrors junk commands past the limit close the session"
        );
    }
}
