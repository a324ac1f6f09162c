//! Drives one SMTP session over one socket: reads into a buffer, hands complete command lines to the
//! session, streams message data through the scanner into the store, writes replies, and enforces the
//! timeouts. Replies to pipelined commands are collected and written only when the input is drained
//! (or the session needs the client to wait), so a pipelined batch costs one write.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use super::admission;
use super::intake::Intake;
use super::{Instance, Shared};
use crate::config::ipnet::canonical;
use crate::logging::w3c::{self, Record};
use crate::net::proxy;
use crate::net::stream::ServerStream as Stream;
use crate::net::tls;
use crate::policy::access;
use crate::smtp::command::{self, Line};
use crate::smtp::data::{DataScanner, Flaws, Scan};
use crate::smtp::reply;
use crate::smtp::session::{MessagePlan, Next, Session, Verdict};

/// Read buffer size; a worker keeps its buffers from one connection to the next. (32 KiB cost 75%
/// more CPU per 100 KB message on the benchmark box: twice the reads and wake-ups.)
pub const READ_BUF: usize = 64 * 1024;
/// Reply bytes held back for pipelining before they are written anyway.
const MAX_PENDING_REPLIES: usize = 64 * 1024;
/// Bytes per second a client must keep up, on average, while sending message data.
pub const MIN_DATA_RATE: u64 = 500;
/// How often a waiting read looks at the shutdown flag.
const TICK: Duration = Duration::from_millis(500);

/// A worker's reusable buffers.
pub struct Buffers {
    input: Vec<u8>,
    out: Vec<u8>,
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers {
            input: vec![0; READ_BUF],
            out: Vec::with_capacity(4096),
        }
    }
}

/// Why the session loop ended early.
enum Stop {
    /// The client closed the connection or the socket failed.
    Gone,
    /// The session wrote its last reply and wants to close.
    Close,
}

/// One BDAT command's chunk, as the session announced it.
struct Chunk {
    size: u64,
    last: bool,
    open: Option<MessagePlan>,
    discard: bool,
}

enum Fill {
    Data,
    Eof,
    Timeout,
    Stopping,
}

struct Input<'b> {
    buf: &'b mut [u8],
    start: usize,
    end: usize,
}

struct Conn<'a> {
    stream: RefCell<Stream>,
    instance: &'a Instance,
    shared: &'a Shared,
    peer: SocketAddr,
    local: SocketAddr,
    timeout: Duration,
    started: Instant,
    /// The socket's read and write timeouts as last set: a setsockopt per read and per write was
    /// a sixth of a session's system calls, and the value rarely changes.
    read_timeout: Cell<Option<Duration>>,
    write_timeout: Cell<Option<Duration>>,
}

/// A write timeout this much longer than the time left may stay: a write can overrun the reply
/// deadline by at most this.
const WRITE_SLACK: Duration = Duration::from_millis(250);

/// Serves one accepted connection to the end. A connection from a ProxyProtocolFrom balancer
/// (its `slot` awaits the header) is admitted first ([`admission::admit_proxied`]), and `peer`
/// becomes the client its header names.
pub fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
    instance: &Instance,
    shared: &Shared,
    bufs: &mut Buffers,
    slot: &mut admission::Slot,
) {
    let local = stream.local_addr().unwrap_or(peer);
    let vs = instance.vs.clone();
    let timeout = vs.connection_timeout;
    let _ = stream.set_write_timeout(Some(timeout));
    let _ = stream.set_nodelay(true);
    let peer = if slot.awaits_header() {
        match admission::admit_proxied(slot, &mut stream, peer, &vs) {
            Some(client) => client,
            None => return,
        }
    } else {
        peer
    };
    let peer_ip = canonical(peer.ip());
    let mut tls = None;
    let stream = match (implicit_tls, &vs.security.tls) {
        (true, Some(config)) => match tls::server::accept(stream, config.clone(), timeout) {
            Ok((s, d)) => {
                tls = Some(d);
                instance.counts.stats.tls.inc();
                s
            }
            Err(e) => {
                log::info!(
                    "SMTPSVC{}: TLS handshake with {} failed: {e}",
                    vs.instance,
                    peer.ip()
                );
                return;
            }
        },
        _ => Stream::Plain(stream),
    };
    let conn = Conn {
        stream: RefCell::new(stream),
        instance,
        shared,
        peer: SocketAddr::new(peer_ip, peer.port()),
        local: SocketAddr::new(canonical(local.ip()), local.port()),
        timeout,
        started: Instant::now(),
        read_timeout: Cell::new(None),
        write_timeout: Cell::new(Some(timeout)),
    };
    let mut session = Session::new(vs.clone(), peer_ip, access::may_relay(&vs, peer_ip));
    if vs.security.basic {
        session = session.with_auth(instance.users.clone(), instance.auth_limiter.clone());
    }
    if let Some(d) = tls {
        session.tls_started(d);
    }
    let name = instance.dns.as_ref().map(|dns| dns.confirmed_name(peer_ip));
    if let Err(refusal) =
        admission::admit_by_name(&vs, peer_ip, name.as_ref().and_then(|n| n.as_deref()))
    {
        refusal.count(&instance.counts.stats);
        let mut s = conn.stream.borrow_mut();
        let _ = s.write_all(refusal.reply()).and_then(|_| s.flush());
        tls::close(&mut *s);
        return;
    }
    if vs.security.reverse_dns {
        session.set_client_name(name);
    }
    let Buffers { input, out } = bufs;
    out.clear();
    let mut input = Input {
        buf: input.as_mut_slice(),
        start: 0,
        end: 0,
    };
    log::debug!("SMTPSVC{}: session from {}", vs.instance, conn.peer);
    match conn.run(&mut session, &mut input, out) {
        Ok(()) | Err(Stop::Close) | Err(Stop::Gone) => {}
    }
    let _ = conn.flush(out);
    // The thread keeps its buffers for the next session, but not a flood's worth of them.
    out.shrink_to(16 * 1024);
    tls::close(&mut *conn.stream.borrow_mut());
}

impl Conn<'_> {
    /// Writes the pending replies within one ConnectionTimeout in all: a client that reads a byte
    /// now and then cannot hold the session by keeping each single write alive.
    fn flush(&self, out: &mut Vec<u8>) -> Result<(), Stop> {
        if out.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.timeout;
        let mut s = self.stream.borrow_mut();
        let mut done = 0;
        let result = loop {
            if done == out.len() {
                break s.flush();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(io::Error::new(io::ErrorKind::TimedOut, "write deadline"));
            }
            let keep = self
                .write_timeout
                .get()
                .is_some_and(|t| t >= left && t - left <= WRITE_SLACK);
            if !keep {
                if let Err(e) = s.tcp().set_write_timeout(Some(left)) {
                    break Err(e);
                }
                self.write_timeout.set(Some(left));
            }
            match s.write(&out[done..]) {
                Ok(0) => break Err(io::Error::new(io::ErrorKind::WriteZero, "closed")),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        out.clear();
        result.map_err(|_| Stop::Gone)
    }

    /// Writes pending replies, then waits for more input until `deadline`. With `may_stop`, a
    /// shutdown in progress ends the wait (only between commands, never inside a message).
    fn fill(
        &self,
        input: &mut Input<'_>,
        out: &mut Vec<u8>,
        deadline: Instant,
        may_stop: bool,
    ) -> Result<Fill, Stop> {
        self.flush(out)?;
        if input.start == input.end {
            input.start = 0;
            input.end = 0;
        } else if input.end == input.buf.len() {
            input.buf.copy_within(input.start..input.end, 0);
            input.end -= input.start;
            input.start = 0;
        }
        loop {
            if may_stop && self.shared.stopping() {
                return Ok(Fill::Stopping);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Fill::Timeout);
            }
            let wait = (deadline - now).min(TICK).max(Duration::from_millis(1));
            let mut s = self.stream.borrow_mut();
            if self.read_timeout.get() != Some(wait) {
                s.tcp()
                    .set_read_timeout(Some(wait))
                    .map_err(|_| Stop::Gone)?;
                self.read_timeout.set(Some(wait));
            }
            match s.read(&mut input.buf[input.end..]) {
                Ok(0) => return Ok(Fill::Eof),
                Ok(n) => {
                    input.end += n;
                    return Ok(Fill::Data);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Err(Stop::Gone),
            }
        }
    }

    /// Like `fill`, but a timeout or the end of the stream ends the session (with 421 on timeout).
    fn need(
        &self,
        input: &mut Input<'_>,
        out: &mut Vec<u8>,
        deadline: Instant,
        may_stop: bool,
    ) -> Result<(), Stop> {
        match self.fill(input, out, deadline, may_stop)? {
            Fill::Data => Ok(()),
            Fill::Eof => Err(Stop::Gone),
            Fill::Timeout => {
                log::info!(
                    "SMTPSVC{}: {} timed out",
                    self.instance.vs.instance,
                    self.peer
                );
                reply::timeout(out, &self.instance.vs.fqdn);
                let _ = self.flush(out);
                Err(Stop::Close)
            }
            Fill::Stopping => {
                reply::shutting_down(out, &self.instance.vs.fqdn);
                let _ = self.flush(out);
                Err(Stop::Close)
            }
        }
    }

    /// Queues one protocol-log line; `reply` is what was answered (its code is the status).
    fn log(
        &self,
        session: &Session,
        method: &[u8],
        query: String,
        reply: &[u8],
        cs: u64,
        taken: Duration,
    ) {
        self.shared.logger.log(Record {
            instance: self.instance.vs.instance,
            at: SystemTime::now(),
            client_ip: self.peer.ip(),
            username: session.auth_user().or(session.helo()).map(str::to_string),
            server_ip: self.local.ip(),
            method: String::from_utf8_lossy(method).into_owned(),
            query,
            status: reply::last_code(reply, 0),
            win32: 0,
            sc_bytes: reply.len() as u64,
            cs_bytes: cs,
            time_taken: taken.as_millis() as u64,
        });
    }

    fn run(
        &self,
        session: &mut Session,
        input: &mut Input<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), Stop> {
        session.greeting(out);
        // A BDAT message in progress spans several commands.
        let mut chunked: Option<(Intake, MessagePlan)> = None;
        let mut deadline = Instant::now() + self.timeout;
        // The first line is looked at for a PROXY header from a peer not in ProxyProtocolFrom.
        let mut first = true;
        loop {
            if first && input.start < input.end {
                first = false;
                if proxy::looks_like_header(&input.buf[input.start..input.end]) {
                    return Err(self.refuse_proxy_header(session, out));
                }
            }
            let (next, n) = match command::take_line(&input.buf[input.start..input.end]) {
                Line::Partial => {
                    let idle = input.start == input.end;
                    self.need(input, out, deadline, idle)?;
                    continue;
                }
                Line::TooLong => {
                    // Drop the rest of the line, then answer once (the session wants to know
                    // whether it was an AUTH line: an overlong credential gets 501).
                    let head = &input.buf[input.start..input.end];
                    let was_auth = head.len() >= 5 && head[..5].eq_ignore_ascii_case(b"AUTH ");
                    loop {
                        let avail = &input.buf[input.start..input.end];
                        if let Some(lf) = memchr::memchr(b'\n', avail) {
                            input.start += lf + 1;
                            break;
                        }
                        input.start = input.end;
                        self.need(input, out, deadline, false)?;
                    }
                    let before = out.len();
                    let next = session.line_too_long(was_auth, out);
                    self.log(
                        session,
                        b"-",
                        "-".into(),
                        &out[before..],
                        command::MAX_LINE as u64,
                        Duration::ZERO,
                    );
                    deadline = Instant::now() + self.timeout;
                    if let Next::Close = next {
                        return Err(Stop::Close);
                    }
                    continue;
                }
                framed @ (Line::Complete(..) | Line::Bare(..)) => {
                    let (line, n, bare) = match framed {
                        Line::Bare(line, n, bare) => (line, n, Some(bare)),
                        Line::Complete(line, n) => (line, n, None),
                        Line::Partial | Line::TooLong => unreachable!("matched above"),
                    };
                    let t0 = Instant::now();
                    let before = out.len();
                    // A line answering an AUTH challenge carries credentials: it is not a
                    // command and is never logged.
                    let secret = session.in_auth_exchange();
                    let next = match bare {
                        None => session.command(line, out),
                        Some(bare) => session.bare_line(line, bare, out),
                    };
                    let refused = session.take_relay_refusals();
                    if refused > 0 {
                        let stats = &self.instance.counts.stats;
                        stats.relay_refused.add(u64::from(refused));
                    }
                    // A failed login is answered late (growing with each failure in the session).
                    let penalty = session.take_penalty();
                    if !penalty.is_zero() {
                        std::thread::sleep(penalty);
                    }
                    let verb = if secret {
                        &b"-"[..]
                    } else {
                        command::verb_of(line)
                    };
                    let is_quit = verb.eq_ignore_ascii_case(b"QUIT")
                        && matches!(next, Next::Close)
                        && out[before..].starts_with(b"221");
                    let deferred = matches!(next, Next::Data(_) | Next::Bdat { .. });
                    if !deferred {
                        if is_quit {
                            let helo = session.helo().map(w3c_plain).unwrap_or_else(|| "-".into());
                            self.shared.logger.log(Record {
                                instance: self.instance.vs.instance,
                                at: SystemTime::now(),
                                client_ip: self.peer.ip(),
                                username: session
                                    .auth_user()
                                    .or(session.helo())
                                    .map(str::to_string),
                                server_ip: self.local.ip(),
                                method: String::from_utf8_lossy(verb).into_owned(),
                                query: helo,
                                status: 240,
                                win32: self.started.elapsed().as_millis() as u64,
                                sc_bytes: (out.len() - before) as u64,
                                cs_bytes: n as u64,
                                time_taken: 0,
                            });
                        } else if !secret {
                            let q = if verb.eq_ignore_ascii_case(b"AUTH") {
                                // The mechanism only: an initial response is a credential.
                                let mech = line[verb.len()..]
                                    .split(|b| *b == b' ')
                                    .find(|w| !w.is_empty())
                                    .unwrap_or(b"");
                                w3c::query(&[&b" "[..], mech].concat())
                            } else {
                                w3c::query(&line[verb.len()..])
                            };
                            self.log(session, verb, q, &out[before..], n as u64, t0.elapsed());
                        }
                    }
                    let bdat_query = if deferred && !secret {
                        w3c::query(&line[verb.len()..])
                    } else {
                        String::new()
                    };
                    let verb = verb.to_vec();
                    ((next, bdat_query, verb), n)
                }
            };
            input.start += n;
            deadline = Instant::now() + self.timeout;
            // Replies wait for the input to drain, but not without bound: a client that pipelines
            // thousands of EHLOs and never reads gets them written now (and blocks, not us).
            if out.len() > MAX_PENDING_REPLIES {
                self.flush(out)?;
            }
            let (next, query, verb) = next;
            match next {
                Next::Continue => {}
                Next::Close => return Err(Stop::Close),
                Next::StartTls => self.start_tls(session, input, out)?,
                Next::Data(plan) => self.data(session, input, out, plan, &verb)?,
                Next::Bdat {
                    size,
                    last,
                    open,
                    discard,
                } => {
                    let chunk = Chunk {
                        size,
                        last,
                        open,
                        discard,
                    };
                    self.bdat(session, input, out, &mut chunked, chunk, &verb, query)?
                }
            }
            if !session.message_open() {
                chunked = None; // RSET, EHLO or a refusal ended the message: its file goes
            }
        }
    }

    /// A peer not in ProxyProtocolFrom began with a PROXY header: a balancer that the settings do
    /// not name (or a client pretending to be one). Its header is not believed, and the session is
    /// not worth having: one line, logged, and the connection closes.
    fn refuse_proxy_header(&self, session: &Session, out: &mut Vec<u8>) -> Stop {
        log::warn!(
            "SMTPSVC{}: {} sent a PROXY protocol header but is not in ProxyProtocolFrom; closed",
            self.instance.vs.instance,
            self.peer.ip()
        );
        let before = out.len();
        out.extend_from_slice(reply::PROXY_NOT_ALLOWED);
        self.log(
            session,
            b"PROXY",
            "-".into(),
            &out[before..],
            0,
            Duration::ZERO,
        );
        let _ = self.flush(out);
        Stop::Close
    }

    /// The deadline for the next bytes of message data: ConnectionTimeout of silence at most, and
    /// for the data as a whole ConnectionTimeout plus one second per [`MIN_DATA_RATE`] bytes
    /// received (as Postfix's smtpd_min_data_rate), so a client that drips a byte at a time is cut
    /// off by the clock, not kept alive by each byte (RFC 5321 §4.5.3.2 timeouts as deadlines).
    fn data_deadline(&self, started: Instant, received: u64) -> Instant {
        let idle = Instant::now() + self.timeout;
        let whole = started + self.timeout + Duration::from_secs(received / MIN_DATA_RATE);
        idle.min(whole)
    }

    /// After `220 Ready to start TLS`: whatever the client sent after STARTTLS came in plaintext and
    /// is thrown away, never executed inside TLS (CVE-2011-0411); then the handshake.
    fn start_tls(
        &self,
        session: &mut Session,
        input: &mut Input<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), Stop> {
        self.flush(out)?;
        if input.start != input.end {
            log::warn!(
                "SMTPSVC{}: {} sent {} byte(s) after STARTTLS before the handshake; discarded",
                self.instance.vs.instance,
                self.peer.ip(),
                input.end - input.start
            );
        }
        input.start = 0;
        input.end = 0;
        let Some(config) = self.instance.vs.security.tls.clone() else {
            return Err(Stop::Close);
        };
        let mut cell = self.stream.borrow_mut();
        let Stream::Plain(tcp) = &*cell else {
            return Err(Stop::Close);
        };
        let tcp = tcp.try_clone().map_err(|_| Stop::Gone)?;
        match tls::server::accept(tcp, config, self.timeout) {
            Ok((tls, d)) => {
                // The handshake set the socket's read timeout itself.
                self.read_timeout.set(None);
                *cell = tls;
                session.tls_started(d);
                self.instance.counts.stats.tls.inc();
                Ok(())
            }
            Err(e) => {
                log::info!(
                    "SMTPSVC{}: STARTTLS handshake with {} failed: {e}",
                    self.instance.vs.instance,
                    self.peer.ip()
                );
                Err(Stop::Gone)
            }
        }
    }

    fn data(
        &self,
        session: &mut Session,
        input: &mut Input<'_>,
        out: &mut Vec<u8>,
        plan: MessagePlan,
        verb: &[u8],
    ) -> Result<(), Stop> {
        let t0 = Instant::now();
        let intake = match Intake::open(&self.instance.store, &plan) {
            Ok(i) => Some(i),
            Err(e) => {
                log::error!("SMTPSVC{}: {e}", self.instance.vs.instance);
                None
            }
        };
        let before = out.len();
        session.data_opened(intake.is_some(), out);
        let Some(mut intake) = intake else {
            self.log(session, verb, "-".into(), &out[before..], 6, Duration::ZERO);
            return Ok(());
        };
        let mut scanner = DataScanner::new();
        let mut received = 0u64;
        loop {
            let avail = &input.buf[input.start..input.end];
            match scanner.scan(avail, &mut |seg| intake.push(seg)) {
                Scan::End(k) => {
                    input.start += k;
                    break;
                }
                Scan::NeedMore => {
                    received += avail.len() as u64;
                    input.start = input.end;
                    let deadline = self.data_deadline(t0, received);
                    self.need(input, out, deadline, false)?;
                }
            }
        }
        self.finish_message(session, out, intake, scanner.flaws(), verb, &plan, t0)
    }

    #[allow(clippy::too_many_arguments)]
    fn bdat(
        &self,
        session: &mut Session,
        input: &mut Input<'_>,
        out: &mut Vec<u8>,
        chunked: &mut Option<(Intake, MessagePlan)>,
        chunk: Chunk,
        verb: &[u8],
        query: String,
    ) -> Result<(), Stop> {
        let t0 = Instant::now();
        let Chunk {
            size,
            last,
            open,
            mut discard,
        } = chunk;
        if let Some(plan) = open {
            match Intake::open(&self.instance.store, &plan) {
                Ok(i) => *chunked = Some((i, plan)),
                Err(e) => {
                    log::error!("SMTPSVC{}: {e}", self.instance.vs.instance);
                    discard = true;
                }
            }
        }
        let mut left = size;
        let mut received = 0u64;
        loop {
            let take = (left.min((input.end - input.start) as u64)) as usize;
            if !discard && let Some((i, _)) = chunked.as_mut() {
                i.push_chunk(&input.buf[input.start..input.start + take]);
            }
            input.start += take;
            left -= take as u64;
            received += take as u64;
            if left == 0 {
                break;
            }
            let deadline = self.data_deadline(t0, received);
            self.need(input, out, deadline, false)?;
        }
        let before = out.len();
        if discard {
            let next = session.bdat_discarded(out);
            self.log(session, verb, query, &out[before..], size, t0.elapsed());
            if let Next::Close = next {
                return Err(Stop::Close);
            }
            return Ok(());
        }
        if !last {
            session.bdat_chunk(size, out);
            self.log(session, verb, query, &out[before..], size, t0.elapsed());
            return Ok(());
        }
        match chunked.take() {
            Some((intake, plan)) => {
                self.finish_message(session, out, intake, Flaws::default(), verb, &plan, t0)
            }
            None => Ok(()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_message(
        &self,
        session: &mut Session,
        out: &mut Vec<u8>,
        mut intake: Intake,
        flaws: Flaws,
        verb: &[u8],
        plan: &MessagePlan,
        t0: Instant,
    ) -> Result<(), Stop> {
        let end = intake.finish(flaws);
        let before = out.len();
        let client_id = intake.client_message_id();
        let verdict = session.message_end(&end, out);
        let mut close = false;
        match verdict {
            Verdict::Commit => {
                let envelope = session.envelope().cloned();
                match intake.commit() {
                    Ok(paths) => {
                        session.committed(true, out);
                        let stats = &self.instance.counts.stats;
                        stats.received.inc();
                        stats.bytes_in.add(end.size);
                        if let Some(e) = envelope {
                            log::info!(
                                "SMTPSVC{}: {} from <{}> to {} recipient(s), {} bytes, from {} -> {}",
                                self.instance.vs.instance,
                                plan.id,
                                e.sender,
                                e.recipients.len(),
                                end.size,
                                self.peer.ip(),
                                crate::mailroot::store::display_paths(&paths)
                            );
                        }
                    }
                    Err(e) => {
                        log::error!("SMTPSVC{}: {e}", self.instance.vs.instance);
                        session.committed(false, out);
                    }
                }
            }
            Verdict::Refused { close: c } => {
                close = c;
                log::info!(
                    "SMTPSVC{}: message from {} refused: {}",
                    self.instance.vs.instance,
                    self.peer.ip(),
                    String::from_utf8_lossy(&out[before..])
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim_end()
                );
            }
        }
        // IIS logs the message on the DATA line: its Message-ID (`+<id>` when the client supplied it).
        let q = match client_id {
            Some(id) => w3c::query(format!(" {id}").as_bytes()),
            None => plan.message_id.clone(),
        };
        self.log(session, verb, q, &out[before..], end.size, t0.elapsed());
        if close {
            return Err(Stop::Close);
        }
        Ok(())
    }
}

fn w3c_plain(s: &str) -> String {
    w3c::query(s.as_bytes())
}
