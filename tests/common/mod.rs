//! Shared test harness: runs the real `mailroot` binary on 127.0.0.1 with an ephemeral port and a
//! temporary mailroot, and speaks SMTP to it over real sockets. Every wait is bounded.
#![allow(dead_code)]

pub mod dns;
pub mod sink;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(15);

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

/// Builds a `[SmtpSvc/1]` configuration: defaults for tests, overridable key by key.
pub struct Builder {
    keys: BTreeMap<String, String>,
    extra_sections: String,
}

impl Builder {
    pub fn new() -> Builder {
        let mut keys = BTreeMap::new();
        for (k, v) in [
            ("ServerBindings", "127.0.0.1:0"),
            ("FullyQualifiedDomainName", "mx.mailroot.test"),
            ("DefaultDomain", "local.test"),
            ("LocalDomains", "alias.test"),
            ("MailRoot", "mailroot"),
            ("LogFileDirectory", "logs"),
            ("RelayIpList", "127.0.0.1"),
        ] {
            keys.insert(k.to_string(), v.to_string());
        }
        Builder {
            keys,
            extra_sections: String::new(),
        }
    }

    /// Sets (or replaces) a key of [SmtpSvc/1].
    pub fn key(mut self, k: &str, v: &str) -> Builder {
        self.keys.insert(k.to_string(), v.to_string());
        self
    }

    /// Removes a key so its default applies.
    pub fn unset(mut self, k: &str) -> Builder {
        self.keys.remove(k);
        self
    }

    /// Appends raw INI text after [SmtpSvc/1] (e.g. a [SmtpSvc/2] section).
    pub fn section(mut self, text: &str) -> Builder {
        self.extra_sections.push_str(text);
        self
    }

    pub fn ini(&self) -> String {
        let mut s = String::from("[SmtpSvc/1]\n");
        for (k, v) in &self.keys {
            s.push_str(&format!("{k} = {v}\n"));
        }
        s.push_str(&self.extra_sections);
        s
    }

    pub fn start(self) -> Server {
        let dir = TempDir::new("srv");
        Server::start_in(dir, &self.ini())
    }
}

/// The running binary.
pub struct Server {
    pub child: Option<Child>,
    pub dir: TempDir,
    /// Bound addresses by instance, from the "listening on" log lines.
    pub addrs: Vec<(u32, SocketAddr)>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mailroot")
}

impl Server {
    /// Writes `ini` to `<dir>/smtpsvc.ini` and runs `mailroot serve --config` on it.
    pub fn start_in(dir: TempDir, ini: &str) -> Server {
        let conf = dir.path().join("smtpsvc.ini");
        fs::write(&conf, ini).expect("write config");
        let mut child = Command::new(bin())
            .arg("serve")
            .arg("--config")
            .arg(&conf)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mailroot");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let store = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line.clone());
                store.lock().unwrap().push(line);
            }
        });
        let mut addrs = Vec::new();
        let until = Instant::now() + WAIT;
        let mut seen = Vec::new();
        // Virtual servers are `[SmtpSvc/<n>]` sections (any case); `[SmtpSvc/<n>/Domain/…]` are not.
        let expected = ini
            .lines()
            .filter(|l| {
                let l = l.trim().to_ascii_lowercase();
                l.strip_prefix("[smtpsvc/")
                    .and_then(|r| r.strip_suffix(']'))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .count();
        while Instant::now() < until {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(rest) = line.split("SMTPSVC").nth(1)
                        && let Some((n, addr)) = rest.split_once(": listening on ")
                    {
                        addrs.push((n.parse().unwrap(), addr.trim().parse().unwrap()));
                    }
                    let ready = line.contains(": listening on ");
                    seen.push(line);
                    if ready
                        && addrs
                            .iter()
                            .map(|a| a.0)
                            .collect::<std::collections::BTreeSet<_>>()
                            .len()
                            >= expected
                    {
                        // Give the remaining "listening" lines of this instance a moment to arrive.
                        while let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
                            if let Some(rest) = l.split("SMTPSVC").nth(1)
                                && let Some((n, addr)) = rest.split_once(": listening on ")
                            {
                                addrs.push((n.parse().unwrap(), addr.trim().parse().unwrap()));
                            }
                        }
                        return Server {
                            child: Some(child),
                            dir,
                            addrs,
                            stderr: lines,
                        };
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!(
                            "mailroot exited with {status} before listening:\n{}",
                            seen.join("\n")
                        );
                    }
                }
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "mailroot did not start listening within {WAIT:?}:\n{}",
            seen.join("\n")
        );
    }

    /// The first address of instance 1.
    pub fn addr(&self) -> SocketAddr {
        self.addrs
            .iter()
            .find(|a| a.0 == 1)
            .map(|a| a.1)
            .expect("instance 1 bound")
    }

    pub fn mailroot(&self) -> PathBuf {
        self.dir.path().join("mailroot")
    }

    pub fn folder(&self, name: &str) -> PathBuf {
        self.mailroot().join(name)
    }

    /// `.eml` files in a mailroot folder, sorted by name (= arrival order).
    pub fn files(&self, folder: &str) -> Vec<PathBuf> {
        list_eml(&self.folder(folder))
    }

    /// Waits until `folder` holds `n` messages.
    pub fn wait_files(&self, folder: &str, n: usize) -> Vec<PathBuf> {
        let until = Instant::now() + WAIT;
        loop {
            let f = self.files(folder);
            if f.len() >= n || Instant::now() > until {
                return f;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr())
    }

    /// Everything the server wrote to stderr so far.
    pub fn log_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The W3C log text of instance `n` (all files concatenated).
    pub fn w3c_log(&self, n: u32) -> String {
        let dir = self.dir.path().join("logs").join(format!("SMTPSVC{n}"));
        let mut names: Vec<PathBuf> = fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .map(|p| fs::read_to_string(p).unwrap_or_default())
            .collect()
    }

    /// Sends SIGTERM (Unix) and waits for the exit status.
    #[cfg(unix)]
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        wait_exit(&mut child)
    }

    /// SIGKILL, immediately.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let until = Instant::now() + WAIT;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn list_eml(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A raw SMTP client over a real socket.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

/// One reply: code and the text of every line (without the code and separator).
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
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    /// Reads one (possibly multi-line) reply; panics on timeout or EOF.
    pub fn reply(&mut self) -> Reply {
        self.try_reply().expect("a reply")
    }

    /// Reads one reply, or None at EOF.
    pub fn try_reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut raw = Vec::new();
            let n = self.reader.read_until(b'\n', &mut raw).ok()?;
            if n == 0 {
                return None;
            }
            let line = String::from_utf8_lossy(&raw).to_string();
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let line = line.trim_end_matches("\r\n");
            assert!(line.len() >= 3, "short reply line {line:?}");
            let code: u16 = line[..3].parse().expect("reply code");
            let sep = line.as_bytes().get(3).copied().unwrap_or(b' ');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if sep != b'-' {
                return Some(Reply { code, lines });
            }
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).expect("send");
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

    /// Reads until the server closes; returns what arrived.
    pub fn read_to_end(&mut self) -> String {
        let mut s = Vec::new();
        let _ = self.reader.read_to_end(&mut s);
        String::from_utf8_lossy(&s).to_string()
    }

    /// Greeting + EHLO.
    pub fn hello(&mut self) {
        let g = self.reply();
        assert_eq!(g.code, 220, "{g:?}");
        self.ok("EHLO client.test", 250);
    }

    /// A whole transaction with DATA; returns the final reply.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> Reply {
        self.ok(&format!("MAIL FROM:<{from}>"), 250);
        for t in to {
            self.ok(&format!("RCPT TO:<{t}>"), 250);
        }
        self.ok("DATA", 354);
        self.send(body.as_bytes());
        self.send(b"\r\n.\r\n");
        self.reply()
    }
}

/// A plain message body (headers + body), CRLF line endings, no terminator.
pub fn message(subject: &str) -> String {
    format!(
        "From: sender@example.test\r\nTo: rcpt@local.test\r\nSubject: {subject}\r\n\r\nHello from a test."
    )
}
