//! The server under test: a `[SmtpSvc/1]` configuration ([`Builder`]), the real `mailroot serve`
//! binary on a temporary mailroot ([`Server`]), and one-shot runs of the binary ([`run_bin`]).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::client::Client;
use super::{TempDir, WAIT, files_with_ext, list_eml, names, read_text, wait_for, wait_until};

/// The mailroot binary of this build.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mailroot")
}

/// The variables through which mailroot's HTTPS client would use a proxy.
const PROXY_VARS: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "HTTP_PROXY",
    "http_proxy",
];

/// Builds a `[SmtpSvc/1]` configuration: defaults for tests, overridable key by key.
pub struct Builder {
    keys: BTreeMap<String, String>,
    extra_sections: String,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
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

    /// Delivery that tries again after 1 s and waits 5 s for each reply of the next hop.
    pub fn retrying(self) -> Builder {
        self.key("SmtpRemoteProgressiveRetry", "1s")
            .key("RemoteTimeout", "5")
    }

    /// Every remote recipient to the smart host `[127.0.0.1]:port` (SmartHostType 2).
    pub fn smart_host(self, port: u16) -> Builder {
        self.key("SmartHost", &format!("[127.0.0.1]:{port}"))
            .key("SmartHostType", "2")
    }

    /// A remote domain section sending mail for `domain` to the smart host `[127.0.0.1]:port`. It is
    /// spelled `[smtpsvc/1/Domain/…]` (section names are case-insensitive) so that
    /// [`Server::start_in`] does not count it as a virtual server to wait for.
    pub fn route(self, domain: &str, port: u16) -> Builder {
        self.section(&format!(
            "[smtpsvc/1/Domain/{domain}]\nSmartHost = [127.0.0.1]:{port}\n"
        ))
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

/// The running binary. Dropping it kills the process; then its folder goes.
pub struct Server {
    pub child: Option<Child>,
    pub dir: TempDir,
    /// Bound addresses by instance, from the "listening on" log lines.
    pub addrs: Vec<(u32, SocketAddr)>,
    /// Every line the server wrote to stderr so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// When the process was spawned.
    pub started: Instant,
    /// The configuration it runs with (for [`Server::restart`]).
    pub ini: String,
}

/// "SMTPSVC<n>: listening on <addr>" → (n, addr).
fn listening(line: &str) -> Option<(u32, SocketAddr)> {
    let rest = line.split("SMTPSVC").nth(1)?;
    let (n, addr) = rest.split_once(": listening on ")?;
    Some((n.parse().ok()?, addr.trim().parse().ok()?))
}

impl Server {
    /// Writes `ini` to `<dir>/smtpsvc.ini`, runs `mailroot serve --config` on it and waits (at most
    /// [`WAIT`]) until every virtual server listens, and 50 ms more for the lines of their other
    /// bindings; panics (after killing it) if that does not happen.
    pub fn start_in(dir: TempDir, ini: &str) -> Server {
        Server::launch(dir, ini, Duration::from_millis(50))
    }

    /// [`Server::start_in`], waiting `settle` (not 50 ms) for the lines of further bindings after
    /// every virtual server has named one: the load generator times the start-up to the first 220,
    /// and needs only the first address of instance 1 (all bindings are bound before the first line).
    pub fn launch(dir: TempDir, ini: &str, settle: Duration) -> Server {
        let conf = dir.path().join("smtpsvc.ini");
        fs::write(&conf, ini).expect("write config");
        let started = Instant::now();
        let mut cmd = Command::new(bin());
        // The token endpoints of the tests are on loopback: a proxy of the machine must not see them.
        for v in PROXY_VARS {
            cmd.env_remove(v);
        }
        let mut child = cmd
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
        // Read for as long as the server runs, so it never blocks on a full pipe; bytes as such, so
        // that non-UTF-8 output cannot stop the draining.
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match reader.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&raw).trim_end().to_string();
                let _ = tx.send(line.clone());
                store.lock().unwrap_or_else(|e| e.into_inner()).push(line);
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
                    addrs.extend(listening(&line));
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
                        // Give the remaining "listening" lines a moment to arrive.
                        while let Ok(l) = rx.recv_timeout(settle) {
                            addrs.extend(listening(&l));
                        }
                        return Server {
                            child: Some(child),
                            dir,
                            addrs,
                            stderr: lines,
                            started,
                            ini: ini.to_string(),
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

    /// Kills the process (if it still runs) and starts the same configuration again on the same
    /// mailroot, as after a crash or a reboot.
    pub fn restart(mut self) -> Server {
        self.kill9();
        let dir = std::mem::replace(&mut self.dir, TempDir::new("restart-spare"));
        let ini = std::mem::take(&mut self.ini);
        drop(self);
        Server::start_in(dir, &ini)
    }

    /// The first address of instance 1.
    pub fn addr(&self) -> SocketAddr {
        self.addrs
            .iter()
            .find(|a| a.0 == 1)
            .map(|a| a.1)
            .expect("instance 1 bound")
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr())
    }

    // -----------------------------------------------------------------------------------------
    // Logs

    /// Everything the server wrote to stderr so far.
    pub fn log_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// The first `max` WARN or ERROR lines of the log (env_logger lines start with
    /// "[<time> <LEVEL> <target>]").
    pub fn warnings(&self, max: usize) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| {
                let level = l.split(']').next().unwrap_or("");
                level.contains(" WARN") || level.contains(" ERROR")
            })
            .take(max)
            .cloned()
            .collect()
    }

    /// The W3C log text of instance `n` (all files concatenated).
    pub fn w3c_log(&self, n: u32) -> String {
        let dir = self.dir.path().join("logs").join(format!("SMTPSVC{n}"));
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .map(|p| fs::read_to_string(p).unwrap_or_default())
            .collect()
    }

    /// Polls instance `n`'s W3C log until `done` holds (at most [`WAIT`]); returns the text.
    pub fn wait_w3c(&self, n: u32, done: impl Fn(&str) -> bool) -> String {
        let mut text = String::new();
        let ok = wait_until(|| {
            text = self.w3c_log(n);
            done(&text)
        });
        assert!(
            ok,
            "the SMTPSVC{n} log did not get the expected lines within {WAIT:?}:\n{text}"
        );
        text
    }

    // -----------------------------------------------------------------------------------------
    // Folders

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

    /// Files of a mailroot folder with extension `ext`, sorted.
    pub fn files_ext(&self, folder: &str, ext: &str) -> Vec<PathBuf> {
        files_with_ext(&self.folder(folder), ext)
    }

    /// Waits until `folder` holds `n` messages.
    pub fn wait_files(&self, folder: &str, n: usize) -> Vec<PathBuf> {
        let mut f = Vec::new();
        wait_until(|| {
            f = self.files(folder);
            f.len() >= n
        });
        f
    }

    /// Waits for `n` messages in Drop and returns their texts.
    pub fn drop_texts(&self, n: usize) -> Vec<String> {
        self.wait_files("Drop", n)
            .iter()
            .map(|p| read_text(p))
            .collect()
    }

    /// The texts of the state files (`.sta`) in Queue, in file-name order.
    pub fn states(&self) -> Vec<String> {
        self.files_ext("Queue", "sta")
            .iter()
            .filter_map(|p| fs::read_to_string(p).ok())
            .collect()
    }

    /// The text of the first state file in Queue, if any.
    pub fn state_text(&self) -> Option<String> {
        self.states().into_iter().next()
    }

    /// Queue holds neither messages nor state files.
    pub fn queue_empty(&self) -> bool {
        self.files("Queue").is_empty() && self.files_ext("Queue", "sta").is_empty()
    }

    /// Waits (at most [`WAIT`]) until Queue holds neither messages nor state files.
    pub fn wait_queue_empty(&self) -> bool {
        wait_until(|| self.queue_empty())
    }

    /// Asserts that Queue empties within `bound`, else shows what is left and the log.
    pub fn assert_queue_empties(&self, bound: Duration) {
        assert!(
            wait_for(bound, || self.queue_empty()),
            "Queue still holds {:?}\nlog:\n{}",
            names(&self.folder("Queue")),
            self.log_text()
        );
    }

    // -----------------------------------------------------------------------------------------
    // Submitting

    /// One SMTP transaction with raw MAIL/RCPT arguments (parameters included) and `body` (no final
    /// CRLF); asserts every reply (250 at the end) and QUITs.
    pub fn submit_raw(&self, mail_arg: &str, rcpt_args: &[&str], body: &str) {
        let mut c = self.connect();
        c.hello();
        let r = c.transaction(mail_arg, rcpt_args, &format!("{body}\r\n"));
        assert_eq!(r.code, 250, "{r:?}");
        c.ok("QUIT", 221);
    }

    /// One SMTP transaction from `<from>` to `<rcpt>…`; asserts the 250.
    pub fn submit(&self, from: &str, rcpts: &[&str], body: &str) {
        let rcpts: Vec<String> = rcpts.iter().map(|r| format!("<{r}>")).collect();
        let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        self.submit_raw(&format!("<{from}>"), &rcpts, body);
    }

    // -----------------------------------------------------------------------------------------
    // Stopping

    /// Sends SIGTERM (Unix) and waits for the exit status.
    #[cfg(unix)]
    pub fn terminate(&mut self) -> ExitStatus {
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

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits (at most [`WAIT`]) for `child` to exit; kills it and panics if it does not.
pub fn wait_exit(child: &mut Child) -> ExitStatus {
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
        thread::sleep(Duration::from_millis(20));
    }
}

/// What a finished run of the binary produced.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
    /// Standard output, then standard error.
    pub fn both(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `mailroot args…` (in `cwd` when given, with `stdin` as its standard input when given) and
/// waits (bounded by [`WAIT`]) for it to exit.
pub fn run_bin(args: &[&str], cwd: Option<&Path>, stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("RUST_LOG", "info")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().expect("run mailroot");
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        let _ = input.write_all(text.as_bytes());
    }
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_exit(&mut child);
    Run {
        status,
        stdout: t_out.join().expect("stdout reader"),
        stderr: t_err.join().expect("stderr reader"),
    }
}
