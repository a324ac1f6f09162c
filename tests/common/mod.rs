//! The test kit. It runs the real `mailroot` binary on 127.0.0.1 with an ephemeral port and a
//! temporary mailroot ([`Builder`], [`Server`]), speaks SMTP to it over plain or TLS connections from
//! any loopback address ([`Client`]), receives what it delivers ([`sink::Sink`], on the loopback
//! [`acceptor::Acceptor`] that the tests' raw next hops use too), answers its DNS questions
//! ([`dns::DnsServer`]), issues OAuth tokens over HTTPS ([`token_server::TokenServer`]), and polls,
//! lists folders and submits messages for the tests; [`hops`] is the two-hop setup of the retry and
//! report tests, [`strategies`] the proptest helpers. Every wait is bounded. benches/load includes
//! this module for the launcher, the client and the sink.
#![allow(dead_code)]

pub mod acceptor;
pub mod client;
pub mod dns;
pub mod hops;
pub mod io;
pub mod server;
pub mod sink;
pub mod strategies;
pub mod token_server;

// Not every test file uses every name.
#[allow(unused_imports)]
pub use client::{Client, Dial, Reply, ReplyError};
#[allow(unused_imports)]
pub use server::{Builder, Run, Server, bin, run_bin, wait_exit};

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use base64ct::{Base64, Encoding};

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// How often the waits below look again.
pub const POLL: Duration = Duration::from_millis(20);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh empty folder under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "mailroot-it-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------------------------

/// Looks at `cond` every `every` until it holds or `bound` has passed; whether it held.
pub fn poll_until(bound: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + bound;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        thread::sleep(every);
    }
}

/// Polls `cond` (every [`POLL`]) for at most `bound`; whether it held.
pub fn wait_for(bound: Duration, cond: impl FnMut() -> bool) -> bool {
    poll_until(bound, POLL, cond)
}

/// Polls `cond` (every [`POLL`]) for at most [`WAIT`]; whether it held.
pub fn wait_until(cond: impl FnMut() -> bool) -> bool {
    wait_for(WAIT, cond)
}

// ---------------------------------------------------------------------------------------------
// Folders and files
// ---------------------------------------------------------------------------------------------

/// Every entry of a folder (files and folders, any name), sorted; empty if it cannot be read.
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The names of the entries of a folder, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    entries(dir)
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().to_string())
        .collect()
}

/// The files of `dir` with extension `ext`, sorted.
pub fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    entries(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect()
}

/// `.eml` files in `dir`, sorted by name (= arrival order for mailroot's folders).
pub fn list_eml(dir: &Path) -> Vec<PathBuf> {
    files_with_ext(dir, "eml")
}

/// A file's text (lossy UTF-8); panics if it cannot be read.
pub fn read_text(p: &Path) -> String {
    let bytes = fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    String::from_utf8_lossy(&bytes).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Messages, replies and logs
// ---------------------------------------------------------------------------------------------

/// A plain message body (headers + body), CRLF line endings, no terminator.
pub fn message(subject: &str) -> String {
    format!(
        "From: sender@example.test\r\nTo: rcpt@local.test\r\nSubject: {subject}\r\n\r\nHello from a test."
    )
}

/// Standard base64 with padding (AUTH responses).
pub fn b64(data: &[u8]) -> String {
    Base64::encode_string(data)
}

/// The queue id named by `250 2.6.0 <id@fqdn> Queued mail for delivery`: 23 upper-case hex digits.
pub fn queued_id(r: &Reply, fqdn: &str) -> String {
    let line = r.last();
    let rest = line
        .strip_prefix("250 2.6.0 <")
        .unwrap_or_else(|| panic!("not a queued reply: {line:?}"));
    let (id, tail) = rest
        .split_once(&format!("@{fqdn}> "))
        .unwrap_or_else(|| panic!("no <id@{fqdn}> in {line:?}"));
    assert_eq!(tail, "Queued mail for delivery", "{line:?}");
    assert!(
        id.len() == 23
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
        "{line:?}"
    );
    id.to_string()
}

/// The `x-receiver` addresses of a stored file's envelope block.
pub fn x_receivers(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|l| l.starts_with("x-"))
        .filter_map(|l| l.strip_prefix("x-receiver: "))
        .collect()
}

/// W3C log data lines, split into fields.
pub fn w3c_records(text: &str) -> Vec<Vec<String>> {
    text.split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(' ').map(str::to_string).collect())
        .collect()
}

/// A port on `ip` that nothing listens on right now.
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("an ephemeral port on {ip}: {e}"))
        .port()
}
