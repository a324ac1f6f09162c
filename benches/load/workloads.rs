//! The workloads: `smtp` (client sessions sending messages) and `pickup` (files written into the
//! Pickup folder), and the waits for the server and the sink.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::args::Scenario;
use crate::common::sink::Sink;
use crate::common::{Client, Dial};
use crate::measure::{Footprint, cpu_ticks};
use crate::report::Outcome;
use crate::target::{Own, Target};
use crate::{IO_TIMEOUT, SHOWN};

/// A wait for the sink or the Pickup folder gives up when its count has not moved for this long...
pub const STALL: Duration = Duration::from_secs(30);
/// ...and in any case after this long (a slow but moving server gets this much time).
pub const WAIT_CAP: Duration = Duration::from_secs(600);
/// How often the waits look at the sink's count (an atomic: cheap).
pub const POLL_SINK: Duration = Duration::from_millis(10);
/// How often the pickup wait lists the folders (thousands of entries: not too often, the server
/// needs the CPU).
const POLL_FOLDERS: Duration = Duration::from_millis(50);

pub const SENDER: &str = "from@example.test";
pub const RECIPIENT: &str = "to@example.test";
/// Body lines are 78 characters plus CRLF, the RFC 5322 recommended maximum.
const LINE_CHARS: usize = 78;

/// Waits until `count()` reaches `target`, looking every `poll`, giving up when it has not moved for
/// [`STALL`] or after [`WAIT_CAP`]. Returns the last count. For the last 5% it looks every
/// [`POLL_SINK`], so that a slow `poll` costs little CPU yet the end is seen on time.
pub fn wait_count(target: u64, poll: Duration, count: impl Fn() -> u64) -> u64 {
    let begin = Instant::now();
    let mut last = count();
    let mut moved = Instant::now();
    while last < target && moved.elapsed() < STALL && begin.elapsed() < WAIT_CAP {
        let near_end = target - last <= target / 20;
        thread::sleep(if near_end { POLL_SINK.min(poll) } else { poll });
        let now = count();
        if now != last {
            last = now;
            moved = Instant::now();
        }
    }
    last
}

// ---------------------------------------------------------------------------------------------
// Scenario smtp
// ---------------------------------------------------------------------------------------------

/// Counters shared by the client sessions of a scenario.
struct Tally {
    /// The next message number to send; sessions take numbers until `messages`.
    next: AtomicU64,
    messages: u64,
    accepted: AtomicU64,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl Tally {
    fn new(messages: u64) -> Tally {
        Tally {
            next: AtomicU64::new(0),
            messages,
            accepted: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_errors: Mutex::new(Vec::new()),
        }
    }

    /// Claims the next message to send; false when all are taken.
    fn take(&self) -> bool {
        self.next.fetch_add(1, Ordering::Relaxed) < self.messages
    }

    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().expect("error list lock");
        if first.len() < SHOWN {
            first.push(e);
        }
    }
}

pub fn run_smtp(sc: &Scenario, target: &Target, sink: &Sink) -> Outcome {
    let message = Arc::new(smtp_message(sc.size));
    let tally = Arc::new(Tally::new(sc.messages));
    let addr = target.addr();
    let base = sink.count();
    let cpu0 = target.pid().and_then(cpu_ticks);
    let start = Instant::now();
    let sessions: Vec<_> = (0..sc.sessions)
        .map(|_| {
            let (message, tally, reuse) = (message.clone(), tally.clone(), sc.reuse);
            thread::spawn(move || session(addr, &message, &tally, reuse))
        })
        .collect();
    for s in sessions {
        s.join().expect("a client session thread panicked");
    }
    let accept_secs = start.elapsed().as_secs_f64();
    // Wait for what the server answered 250 for: a message that got an error is not owed.
    let accepted = tally.accepted.load(Ordering::Relaxed);
    let e2e = target.measures_e2e().then(|| {
        let n = wait_count(accepted, POLL_SINK, || sink.count() - base);
        (
            n,
            sink.last_at()
                .saturating_duration_since(start)
                .as_secs_f64(),
        )
    });
    let footprint = Footprint::measure(target.pid(), cpu0, sc.messages, target.idle_rss_kib());
    let first_errors = tally.first_errors.lock().expect("error list lock").clone();
    Outcome {
        scenario: *sc,
        accepted,
        accept_secs,
        errors: tally.errors.load(Ordering::Relaxed),
        first_errors,
        e2e,
        write_secs: None,
        settle_ms: None,
        footprint,
        server_warnings: target.warnings(),
    }
}

/// One client session: sends messages until the tally has none left.
fn session(addr: SocketAddr, message: &[u8], tally: &Tally, reuse: bool) {
    let mut conn: Option<Client> = None;
    while tally.take() {
        let result = if reuse {
            reused_connection(addr, message, &mut conn)
        } else {
            single_message(addr, message)
        };
        match result {
            Ok(()) => {
                tally.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tally.error(e),
        }
    }
    if let Some(mut c) = conn
        && let Err(e) = quit(&mut c)
    {
        tally.error(e);
    }
}

/// Connect, EHLO, one transaction, QUIT. A failed QUIT fails the message too: every reply counts.
fn single_message(addr: SocketAddr, message: &[u8]) -> Result<(), String> {
    let mut c = open(addr)?;
    transaction(&mut c, message)?;
    quit(&mut c)
}

/// One transaction on the session's connection, opened on first use; RSET before every later one.
/// After an error the connection is dropped, and the next message opens a fresh one.
fn reused_connection(
    addr: SocketAddr,
    message: &[u8],
    conn: &mut Option<Client>,
) -> Result<(), String> {
    let mut c = match conn.take() {
        Some(mut c) => {
            c.check("RSET", 250)?;
            c
        }
        None => open(addr)?,
    };
    transaction(&mut c, message)?;
    *conn = Some(c);
    Ok(())
}

/// The message as sent after DATA: a few headers, `size` bytes of body, and the final dot. No body
/// line starts with "." so no dot-stuffing is needed.
fn smtp_message(size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: mailroot load test\r\n\
         Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(&body(size));
    m.extend_from_slice(b".\r\n");
    m
}

/// `size` bytes of text: lines of 78 characters plus CRLF, the last one shorter (at least CRLF).
pub fn body(size: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut b = Vec::with_capacity(size + 2);
    let mut line = 0usize;
    while b.len() < size {
        let chars = (size - b.len()).saturating_sub(2).min(LINE_CHARS);
        // Shift the alphabet per line so lines differ (closer to real text than one repeated line).
        b.extend((0..chars).map(|i| ALPHABET[(i + line) % ALPHABET.len()]));
        b.extend_from_slice(b"\r\n");
        line += 1;
    }
    b
}

/// Connects (every operation bounded, without Nagle: the client writes small commands and then waits,
/// and Nagle's algorithm against delayed ACKs would measure 40 ms stalls instead of the server),
/// reads the 220 greeting and says EHLO.
fn open(addr: SocketAddr) -> Result<Client, String> {
    let mut c = Dial::new()
        .timeout(IO_TIMEOUT)
        .nodelay()
        .plain(addr)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    c.check_reply("greeting", 220)?;
    c.check("EHLO load.example.test", 250)?;
    Ok(c)
}

/// MAIL, RCPT, DATA, the message, and 250 after the final dot.
fn transaction(c: &mut Client, message: &[u8]) -> Result<(), String> {
    c.check(&format!("MAIL FROM:<{SENDER}>"), 250)?;
    c.check(&format!("RCPT TO:<{RECIPIENT}>"), 250)?;
    c.check("DATA", 354)?;
    c.try_send(message)?;
    c.check_reply("end of data", 250).map(drop)
}

fn quit(c: &mut Client) -> Result<(), String> {
    c.check("QUIT", 221).map(drop)
}

// ---------------------------------------------------------------------------------------------
// Scenario pickup
// ---------------------------------------------------------------------------------------------

/// The PickupSettleTime of the pickup scenario, in milliseconds: the smallest allowed. The files are
/// renamed into place complete, so the server need not wait for them to settle.
pub const PICKUP_SETTLE: u64 = 0;

pub fn run_pickup(sc: &Scenario, own: &Own, sink: &Sink) -> Outcome {
    let server = &own.server;
    let pickup = server.folder("Pickup");
    fs::create_dir_all(&pickup).expect("create the Pickup folder");
    let file = pickup_file(sc.size);
    let n = sc.messages;
    let base = sink.count();
    let pid = server.pid();
    let cpu0 = pid.and_then(cpu_ticks);
    let start = Instant::now();
    for i in 0..n {
        drop_file(&pickup, i, &file);
    }
    let write_secs = start.elapsed().as_secs_f64();
    let queue = server.folder("Queue");
    let badmail = server.folder("Badmail");
    // A message has left Pickup when no .eml or .claimed file of it is there: the claimed file is
    // removed only after the message was committed to Queue (or Badmail). The second term checks
    // that they really arrived there (or were already delivered).
    let left = || {
        let gone = n.saturating_sub(count_files(&pickup, &["eml", "claimed"]));
        let arrived =
            count_files(&queue, &["eml"]) + count_files(&badmail, &["bad"]) + sink.count() - base;
        gone.min(arrived)
    };
    let accepted = wait_count(n, POLL_FOLDERS, left);
    let accept_secs = start.elapsed().as_secs_f64();
    let delivered = wait_count(n, POLL_SINK, || sink.count() - base);
    let e2e_secs = sink
        .last_at()
        .saturating_duration_since(start)
        .as_secs_f64();
    let footprint = Footprint::measure(pid, cpu0, n, own.idle_rss_kib);
    let bad = count_files(&badmail, &["bad"]);
    Outcome {
        scenario: *sc,
        accepted: accepted.saturating_sub(bad),
        accept_secs,
        errors: bad,
        first_errors: if bad > 0 {
            vec![format!("{bad} pickup files went to Badmail")]
        } else {
            Vec::new()
        },
        e2e: Some((delivered, e2e_secs)),
        write_secs: Some(write_secs),
        settle_ms: Some(PICKUP_SETTLE),
        footprint,
        server_warnings: server.warnings(SHOWN),
    }
}

/// A pickup file: the server takes the envelope from the headers (sender from From, recipients
/// from To), as IIS does.
fn pickup_file(size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: mailroot load test (pickup)\r\n\
         Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(&body(size));
    m
}

/// Writes file `i` under a name the server skips (`.tmp`), then renames it into place, so the
/// server never reads a half-written file.
fn drop_file(pickup: &Path, i: u64, contents: &[u8]) {
    let tmp = pickup.join(format!("load-{i:07}.tmp"));
    let eml = pickup.join(format!("load-{i:07}.eml"));
    fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, &eml).unwrap_or_else(|e| panic!("rename {}: {e}", tmp.display()));
}

/// Files in `dir` whose extension is one of `exts` (0 when the folder cannot be read).
pub fn count_files(dir: &Path, exts: &[&str]) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.path()
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| exts.contains(&x))
        })
        .count() as u64
}
