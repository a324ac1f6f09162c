//! How the command line finds and reaches a running server: the server writes its process id to
//! `<MailRoot>/mailroot.pid` and the settings it runs with (secrets masked, as `mailroot check`
//! prints them) to `<MailRoot>/mailroot.running.ini`, at start-up and after each reload.
//! `mailroot reload` signals that process (SIGHUP; the service control manager on Windows) and
//! waits for the running settings to be rewritten; `mailroot check` compares the file it checks with
//! them and names the changed keys a reload cannot apply. Both files are plain text in the mailroot
//! folder, which only the server's account and administrators may write.
//!
//! Queue commands (`mailroot queue`, `mailroot badmail`) reach a running server through its
//! **control endpoint**: a TCP listener on 127.0.0.1 (an ephemeral port) that takes one JSON request
//! a line and answers one JSON line. Its address and a random token are in
//! `<MailRoot>/mailroot.control`, readable by its owner only (Unix 0600; on Windows the mailroot
//! folder's ACL: the service account and administrators). A request without the token is refused:
//! reading that file is the access rule. Requests are served one at a time, so two commands never
//! interleave; each is applied by the delivery service (`delivery::admin`).

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::restart;
use crate::config::{Config, VirtualServer};
use crate::delivery::admin::{Admin, LATE_WAIT, Line, Select};
use crate::delivery::scheduler::{DestState, Row};
use crate::mailroot::store::Store;
use crate::mailroot::{badmail, submit};

/// The pid file of the server whose first virtual server is `vs`.
pub fn pid_file(vs: &VirtualServer) -> PathBuf {
    vs.dirs.mailroot.join("mailroot.pid")
}

/// The running-settings file next to it.
pub fn running_file(vs: &VirtualServer) -> PathBuf {
    vs.dirs.mailroot.join("mailroot.running.ini")
}

/// The effective settings of `servers` as INI text (secrets masked).
pub fn settings_text(servers: &[std::sync::Arc<VirtualServer>]) -> String {
    let mut out = String::from(
        "; the settings this mailroot process runs with (written at start-up and at each reload)\n",
    );
    for vs in servers {
        out.push_str(&format!("\n[SmtpSvc/{}]\n", vs.instance));
        for (k, v) in vs.effective() {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    out
}

/// Writes the pid and running-settings files (start-up).
pub fn started(servers: &[std::sync::Arc<VirtualServer>]) -> io::Result<()> {
    let Some(first) = servers.first() else {
        return Ok(());
    };
    replace(&pid_file(first), &format!("{}\n", std::process::id()))?;
    running(servers)
}

/// Rewrites the running-settings file and the settings published for `sendmail`
/// (`mailroot::submit::publish_settings`; at start-up and after a reload). The latter stays when
/// the server stops: mail dropped meanwhile waits in Pickup for the next start.
pub fn running(servers: &[std::sync::Arc<VirtualServer>]) -> io::Result<()> {
    let Some(first) = servers.first() else {
        return Ok(());
    };
    submit::publish_settings(servers)?;
    replace(&running_file(first), &settings_text(servers))
}

/// Removes both files (a clean stop).
pub fn stopped(servers: &[std::sync::Arc<VirtualServer>]) {
    if let Some(first) = servers.first() {
        let _ = fs::remove_file(pid_file(first));
        let _ = fs::remove_file(running_file(first));
    }
}

fn replace(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

/// The changed keys of `config` that the running server (per its running-settings file) cannot
/// take without a restart: `Key: running → in the file`. Empty when no server runs from this
/// mailroot.
pub fn restart_needed(config: &Config) -> Vec<String> {
    let Some(first) = config.servers.first() else {
        return Vec::new();
    };
    let Ok(text) = fs::read_to_string(running_file(first)) else {
        return Vec::new();
    };
    let mut section = String::new();
    let mut running: Vec<(String, String, String)> = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((k, v)) = l.split_once(" = ").or_else(|| l.split_once('=')) {
            running.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut out = Vec::new();
    for vs in &config.servers {
        let section = format!("SmtpSvc/{}", vs.instance);
        for (k, v) in vs.effective() {
            if !restart::KEYS.contains(&k) {
                continue;
            }
            if let Some((_, _, was)) = running.iter().find(|(s, rk, _)| *s == section && rk == k)
                && *was != v
            {
                out.push(format!(
                    "[{section}] {k}: running `{was}`, the file says `{v}`"
                ));
            }
        }
    }
    out
}

/// Asks the server running from `vs`'s mailroot to reload, and waits (at most `wait`) for it to
/// rewrite its running settings. Unix: SIGHUP to the pid in the pid file.
pub fn request_reload(vs: &VirtualServer, wait: Duration) -> Result<String, String> {
    let pid_path = pid_file(vs);
    let pid: u32 = fs::read_to_string(&pid_path)
        .map_err(|e| format!("no running mailroot found ({}: {e})", pid_path.display()))?
        .trim()
        .parse()
        .map_err(|_| format!("{}: not a process id", pid_path.display()))?;
    let running = running_file(vs);
    let before = fs::metadata(&running)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    crate::os::signal_reload(pid).map_err(|e| match e.kind() {
        io::ErrorKind::Unsupported => {
            "on Windows, reload the service: mailroot reload --name NAME".to_string()
        }
        _ => format!("cannot signal mailroot (pid {pid}): {e} (a stale pid file?)"),
    })?;
    let until = Instant::now() + wait;
    while Instant::now() < until {
        let now = fs::metadata(&running)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if now != before {
            return Ok(format!("mailroot (pid {pid}) reloaded its configuration"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "mailroot (pid {pid}) was asked to reload but did not confirm within {} s: its log says why (an error in the configuration keeps the running one)",
        wait.as_secs()
    ))
}

/// The control endpoint's file (address and token) of the server whose first virtual server is `vs`.
pub fn endpoint_file(vs: &VirtualServer) -> PathBuf {
    vs.dirs.mailroot.join("mailroot.control")
}

/// The longest request line taken.
const MAX_REQUEST: u64 = 64 * 1024;

/// One Queue folder the endpoint serves: by the number of the first virtual server using it.
pub struct QueueHandle {
    /// The virtual server's number.
    pub instance: u32,
    /// Its store (commits into Queue hand the message to delivery).
    pub store: Store,
    /// Its delivery service's queue commands.
    pub admin: Admin,
}

/// The running control endpoint.
pub struct Endpoint {
    addr: SocketAddr,
    file: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn token() -> String {
    (0..4)
        .map(|_| format!("{:016x}", crate::os::random_u64()))
        .collect()
}

/// Compares without stopping at the first difference (the token is a secret).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Endpoint {
    /// Listens on 127.0.0.1 (an ephemeral port) and writes `<MailRoot>/mailroot.control` for `vs`
    /// (the first virtual server).
    pub fn start(vs: &VirtualServer, queues: Vec<QueueHandle>) -> io::Result<Endpoint> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let token = token();
        let file = endpoint_file(vs);
        // Owner-only before the secret is written into it.
        let tmp = file.with_extension("control.tmp");
        let _ = fs::remove_file(&tmp);
        fs::write(&tmp, "")?;
        crate::os::restrict_to_owner(&tmp)?;
        fs::write(&tmp, format!("{addr}\n{token}\n"))?;
        fs::rename(&tmp, &file)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopping.load(Ordering::Acquire) {
                        return;
                    }
                    let Ok(mut conn) = conn else { continue };
                    let reply = match read_request(&mut conn) {
                        Ok(req) => serve(&req, &token, &queues),
                        Err(e) => json!({"ok": false, "error": e}),
                    };
                    let _ = conn.write_all(format!("{reply}\n").as_bytes());
                }
            })?;
        Ok(Endpoint {
            addr,
            file,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it and removes its file.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.file);
    }
}

fn read_request(conn: &mut TcpStream) -> Result<Value, String> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(conn.take(MAX_REQUEST))
        .read_line(&mut line)
        .map_err(|e| format!("reading the request: {e}"))?;
    serde_json::from_str(&line).map_err(|e| format!("not a JSON request: {e}"))
}

fn lines_json(lines: &[Line]) -> Value {
    Value::Array(
        lines
            .iter()
            .map(|l| json!({"id": l.id, "text": l.text, "changed": l.changed}))
            .collect(),
    )
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One row of the destination table as JSON.
pub fn row_json(r: &Row) -> Value {
    let (state, until, reason) = match &r.state {
        DestState::Ready if r.throttled => ("throttled", None, None),
        DestState::Ready => ("ready", None, None),
        DestState::Dead { until, reason } => ("dead", Some(unix(*until)), Some(reason.clone())),
        DestState::Probing { reason } => ("probing", None, Some(reason.clone())),
    };
    json!({
        "destination": r.key,
        "state": state,
        "dead_until": until,
        "reason": reason,
        "window": r.window,
        "busy": r.busy,
        "queued": r.queued,
        "retrying": r.retrying,
        "delivered": r.delivered,
        "oldest": r.oldest.map(unix),
    })
}

/// The selection a request names: `id`, `all` or `domain`.
fn select(req: &Value) -> Result<Select, String> {
    if let Some(id) = req["id"].as_str() {
        return Ok(Select::Id(id.to_string()));
    }
    if let Some(d) = req["domain"].as_str() {
        return Ok(Select::Domain(d.to_string()));
    }
    if req["all"].as_bool() == Some(true) {
        return Ok(Select::All);
    }
    Err("the request names no message (id, domain or all)".into())
}

fn serve(req: &Value, token: &str, queues: &[QueueHandle]) -> Value {
    if !req["token"].as_str().is_some_and(|t| same(t, token)) {
        log::warn!("control: a request without the right token was refused");
        return json!({"ok": false, "error": "refused: wrong token"});
    }
    let op = req["op"].as_str().unwrap_or("");
    if op == "status" {
        let qs: Vec<Value> = queues
            .iter()
            .map(|q| {
                json!({
                    "instance": q.instance,
                    "queue": q.store.queue_dir().display().to_string(),
                    "in_flight": q.admin.in_flight(),
                    "destinations": q.admin.destinations().iter().map(row_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        return json!({"ok": true, "pid": std::process::id(), "queues": qs});
    }
    let instance = req["instance"].as_u64();
    let Some(q) = queues
        .iter()
        .find(|q| instance.is_none_or(|i| u64::from(q.instance) == i))
    else {
        return json!({"ok": false, "error": format!("no Queue of virtual server {}", instance.unwrap_or(0))});
    };
    let r: Result<Vec<Line>, String> = match op {
        "retry" => select(req).and_then(|s| q.admin.retry(&s)),
        "hold" => select(req).and_then(|s| q.admin.hold(&s, LATE_WAIT)),
        "release" => select(req).and_then(|s| q.admin.release(&s)),
        "delete" => match req["id"].as_str() {
            Some(id) => q
                .admin
                .delete(id, req["ndr"].as_bool() == Some(true), LATE_WAIT)
                .map(|l| vec![l]),
            None => Err("delete needs an id".into()),
        },
        "resend" => match req["id"].as_str() {
            Some(id) => match badmail::resend(&q.store, id) {
                Ok(new) => Ok(vec![Line {
                    id: id.to_string(),
                    text: format!("back in the Queue as {new}"),
                    changed: true,
                }]),
                Err(e) => Ok(vec![Line {
                    id: id.to_string(),
                    text: e.to_string(),
                    changed: false,
                }]),
            },
            None => Err("resend needs an id".into()),
        },
        other => Err(format!("unknown operation `{other}`")),
    };
    match r {
        Ok(lines) => json!({"ok": true, "lines": lines_json(&lines)}),
        Err(e) => json!({"ok": false, "error": e}),
    }
}

/// Why a request did not reach a running server.
#[derive(Debug)]
pub enum Reach {
    /// No server runs from this mailroot (no endpoint file, or nobody listens at its address).
    NotRunning,
    /// The endpoint file cannot be read (a user who is not an administrator).
    Denied(String),
    /// The server answered with an error, or not in its protocol.
    Failed(String),
}

impl std::fmt::Display for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reach::NotRunning => write!(f, "no mailroot server is running from this mailroot"),
            Reach::Denied(m) | Reach::Failed(m) => write!(f, "{m}"),
        }
    }
}

/// Sends `req` to the server running from `vs`'s mailroot (the first virtual server) and returns
/// its answer; waits at most `wait` for it.
pub fn request(vs: &VirtualServer, mut req: Value, wait: Duration) -> Result<Value, Reach> {
    let file = endpoint_file(vs);
    let text = match fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Reach::NotRunning),
        Err(e) => {
            return Err(Reach::Denied(format!(
                "cannot read {} ({e}): queue commands need the account mailroot runs as, or an administrator",
                file.display()
            )));
        }
    };
    let mut it = text.lines();
    let (Some(addr), Some(token)) = (
        it.next().and_then(|a| a.trim().parse::<SocketAddr>().ok()),
        it.next(),
    ) else {
        return Err(Reach::Failed(format!(
            "{}: not a control endpoint file",
            file.display()
        )));
    };
    // A file left by a server that was killed: nobody listens there any more.
    let mut conn = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(Reach::NotRunning),
        Err(e) => {
            return Err(Reach::Failed(format!(
                "cannot reach mailroot at {addr}: {e}"
            )));
        }
    };
    req["token"] = Value::String(token.trim().to_string());
    let send = |c: &mut TcpStream| -> io::Result<String> {
        c.set_read_timeout(Some(wait))?;
        c.write_all(format!("{req}\n").as_bytes())?;
        let mut line = String::new();
        BufReader::new(c).read_line(&mut line)?;
        Ok(line)
    };
    let line = send(&mut conn)
        .map_err(|e| Reach::Failed(format!("no answer from mailroot at {addr}: {e}")))?;
    if line.is_empty() {
        return Err(Reach::NotRunning);
    }
    let v: Value = serde_json::from_str(&line)
        .map_err(|_| Reach::Failed(format!("{addr} is not mailroot's control endpoint")))?;
    if v["ok"].as_bool() != Some(true) {
        return Err(Reach::Failed(
            v["error"]
                .as_str()
                .unwrap_or("the server refused the request")
                .to_string(),
        ));
    }
    Ok(v)
}
