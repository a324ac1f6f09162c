//! The W3C extended protocol log as IIS writes it for SMTPSVC: `<LogFileDirectory>/SMTPSVC<n>/exYYMMDD.log`,
//! UTC, `#Software`/`#Version`/`#Date`/`#Fields` directives, one line per command (README.md,
//! "Logs"). A dedicated thread writes; sessions hand it records over a
//! channel and never wait on the disk.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::config::{LogPeriod, LogSettings, VirtualServer};
use crate::time::Utc;

/// The field list IIS writes when every field is selected (the SMTP log format admins' tools parse).
pub const FIELDS: &str = "date time c-ip cs-username s-sitename s-computername s-ip s-port cs-method cs-uri-stem cs-uri-query sc-status sc-win32-status sc-bytes cs-bytes time-taken cs-version cs-host cs(User-Agent) cs(Cookie) cs(Referer)";

/// One log line.
#[derive(Debug, Clone)]
pub struct Record {
    /// The virtual server (SMTPSVC<n>).
    pub instance: u32,
    /// When.
    pub at: SystemTime,
    /// c-ip
    pub client_ip: IpAddr,
    /// cs-username: the HELO/EHLO name once given.
    pub username: Option<String>,
    /// s-ip
    pub server_ip: IpAddr,
    /// cs-method: the verb as typed.
    pub method: String,
    /// cs-uri-query, already in log form (see [`query`]).
    pub query: String,
    /// sc-status
    pub status: u16,
    /// sc-win32-status (QUIT: the session's duration in ms).
    pub win32: u64,
    /// sc-bytes
    pub sc_bytes: u64,
    /// cs-bytes
    pub cs_bytes: u64,
    /// time-taken in ms
    pub time_taken: u64,
}

/// IIS's cs-uri-query for a command line: what follows the verb, separator included, with spaces as
/// `+` (`MAIL FROM:<a@b>` → `+FROM:<a@b>`). Anything that is not printable ASCII becomes `?`, so a client
/// cannot forge log lines.
pub fn query(rest: &[u8]) -> String {
    if rest.is_empty() {
        return "-".into();
    }
    rest.iter()
        .map(|&b| match b {
            b' ' => '+',
            33..=126 => b as char,
            _ => '?',
        })
        .collect()
}

/// A field value without spaces or control characters (`-` when empty).
fn field(s: &str) -> String {
    if s.is_empty() {
        return "-".into();
    }
    s.bytes()
        .map(|b| match b {
            b' ' => '+',
            33..=126 => b as char,
            _ => '?',
        })
        .collect()
}

/// A handle sessions use to log; cheap to clone. Records to a server whose LogType is 0 are dropped.
#[derive(Debug, Clone)]
pub struct Logger {
    tx: Option<Sender<Record>>,
}

impl Logger {
    /// A logger that drops everything.
    pub fn disabled() -> Logger {
        Logger { tx: None }
    }

    /// Queues a record; never blocks.
    pub fn log(&self, r: Record) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(r);
        }
    }
}

/// Starts the writer thread for `servers`. The thread ends when every [`Logger`] clone is dropped,
/// after writing out what it has.
pub fn start(servers: &[Arc<VirtualServer>]) -> std::io::Result<(Logger, Option<JoinHandle<()>>)> {
    let settings: HashMap<u32, LogSettings> = servers
        .iter()
        .filter(|s| s.log.enabled)
        .map(|s| (s.instance, s.log.clone()))
        .collect();
    if settings.is_empty() {
        return Ok((Logger::disabled(), None));
    }
    let computer = crate::os::hostname()
        .split('.')
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    let (tx, rx) = crossbeam_channel::unbounded();
    let handle = std::thread::Builder::new()
        .name("w3c-log".into())
        .spawn(move || Writer::new(settings, computer).run(rx))?;
    Ok((Logger { tx: Some(tx) }, Some(handle)))
}

struct OpenLog {
    name: String,
    out: BufWriter<File>,
    size: u64,
}

struct Writer {
    settings: HashMap<u32, LogSettings>,
    computer: String,
    open: HashMap<u32, OpenLog>,
    failed: HashMap<u32, String>,
}

impl Writer {
    fn new(settings: HashMap<u32, LogSettings>, computer: String) -> Writer {
        Writer {
            settings,
            computer,
            open: HashMap::new(),
            failed: HashMap::new(),
        }
    }

    fn run(mut self, rx: Receiver<Record>) {
        while let Ok(r) = rx.recv() {
            self.write(&r);
            // Let the burst gather, then write it at once: a message is five or six lines, and one
            // wake-up and one write per line was a tenth of the server's CPU. Lines still reach the
            // file within a moment (IIS itself buffers far longer).
            std::thread::sleep(GATHER);
            loop {
                match rx.try_recv() {
                    Ok(r) => self.write(&r),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.flush();
                        return;
                    }
                }
            }
            self.flush();
        }
        self.flush();
    }

    fn flush(&mut self) {
        for l in self.open.values_mut() {
            let _ = l.out.flush();
        }
    }

    fn dir(&self, instance: u32) -> Option<PathBuf> {
        self.settings
            .get(&instance)
            .map(|s| s.directory.join(format!("SMTPSVC{instance}")))
    }

    /// The file name for a record at `t` (IIS names: exYYMMDD.log daily, exYYMMDDHH.log hourly,
    /// exYYMMWW.log weekly with WW the week of the month, exYYMM.log monthly, extend<n>.log by size).
    fn file_name(&self, instance: u32, t: &Utc) -> Option<String> {
        let s = self.settings.get(&instance)?;
        let yy = t.year % 100;
        Some(match s.period {
            LogPeriod::Daily => format!("ex{:02}{:02}{:02}.log", yy, t.month, t.day),
            LogPeriod::Hourly => format!("ex{:02}{:02}{:02}{:02}.log", yy, t.month, t.day, t.hour),
            LogPeriod::Weekly => format!("ex{:02}{:02}{:02}.log", yy, t.month, (t.day - 1) / 7 + 1),
            LogPeriod::Monthly => format!("ex{:02}{:02}.log", yy, t.month),
            LogPeriod::Size => {
                let current = self.open.get(&instance);
                match current {
                    Some(l) if l.size < s.truncate_size => l.name.clone(),
                    Some(l) => format!("extend{}.log", size_index(&l.name) + 1),
                    None => {
                        let dir = self.dir(instance)?;
                        let mut n = 1;
                        while dir.join(format!("extend{}.log", n + 1)).exists() {
                            n += 1;
                        }
                        format!("extend{n}.log")
                    }
                }
            }
        })
    }

    fn write(&mut self, r: &Record) {
        let t = Utc::from_system(r.at);
        let Some(name) = self.file_name(r.instance, &t) else {
            return;
        };
        if self
            .open
            .get(&r.instance)
            .map(|l| l.name != name)
            .unwrap_or(true)
        {
            if let Some(mut old) = self.open.remove(&r.instance) {
                let _ = old.out.flush();
            }
            match self.open_file(r.instance, &name, &t) {
                Ok(l) => {
                    self.failed.remove(&r.instance);
                    self.open.insert(r.instance, l);
                }
                Err(e) => {
                    // Say it once per failure, not per line; sessions go on regardless.
                    if self.failed.get(&r.instance) != Some(&e) {
                        log::warn!("protocol log for SMTPSVC{}: {}", r.instance, e);
                        self.failed.insert(r.instance, e);
                    }
                    return;
                }
            }
        }
        let line = format!(
            "{} {} {} {} SMTPSVC{} {} {} 0 {} - {} {} {} {} {} {} SMTP - - - -\r\n",
            t.w3c_date(),
            t.w3c_time(),
            r.client_ip,
            field(r.username.as_deref().unwrap_or("")),
            r.instance,
            field(&self.computer),
            r.server_ip,
            field(&r.method),
            field(&r.query),
            r.status,
            r.win32,
            r.sc_bytes,
            r.cs_bytes,
            r.time_taken,
        );
        if let Some(l) = self.open.get_mut(&r.instance)
            && l.out.write_all(line.as_bytes()).is_ok()
        {
            l.size += line.len() as u64;
        }
    }

    fn open_file(&self, instance: u32, name: &str, t: &Utc) -> Result<OpenLog, String> {
        let dir = self.dir(instance).ok_or("not configured")?;
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut out = BufWriter::new(file);
        // IIS writes the directives when it creates a file and again when the service restarts.
        let head = format!(
            "#Software: mailroot {} (Microsoft Internet Information Services 6.0 compatible)\r\n#Version: 1.0\r\n#Date: {} {}\r\n#Fields: {}\r\n",
            env!("CARGO_PKG_VERSION"),
            t.w3c_date(),
            t.w3c_time(),
            FIELDS
        );
        out.write_all(head.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(OpenLog {
            name: name.to_string(),
            out,
            size: size + head.len() as u64,
        })
    }
}

/// How long the writer lets log lines gather before writing them.
const GATHER: std::time::Duration = std::time::Duration::from_millis(50);

fn size_index(name: &str) -> u32 {
    name.trim_start_matches("extend")
        .trim_end_matches(".log")
        .parse()
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_form() {
        assert_eq!(query(b" FROM: <a@b>"), "+FROM:+<a@b>");
        assert_eq!(query(b" FROM:<a@b>"), "+FROM:<a@b>");
        assert_eq!(query(b""), "-");
        assert_eq!(query(b" x\r\ny\xff"), "+x??y?");
    }

    #[test]
    fn writes_iis_lines_and_rolls_by_size() {
        let dir = std::env::temp_dir().join(format!("mailroot-w3c-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut settings = HashMap::new();
        settings.insert(
            1,
            LogSettings {
                enabled: true,
                directory: dir.clone(),
                period: LogPeriod::Size,
                truncate_size: 600,
                server_log: None,
            },
        );
        let mut w = Writer::new(settings, "HOST".into());
        let rec = Record {
            instance: 1,
            at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_259_790_961),
            client_ip: "127.0.0.1".parse().unwrap(),
            username: Some("client".into()),
            server_ip: "127.0.0.1".parse().unwrap(),
            method: "MAIL".into(),
            query: query(b" FROM:<a@b.test>"),
            status: 250,
            win32: 0,
            sc_bytes: 34,
            cs_bytes: 22,
            time_taken: 0,
        };
        for _ in 0..4 {
            w.write(&rec);
        }
        w.flush();
        let first = fs::read_to_string(dir.join("SMTPSVC1/extend1.log")).unwrap();
        assert!(first.starts_with("#Software: mailroot "));
        assert!(first.contains(
            "\r\n#Version: 1.0\r\n#Date: 2009-12-02 21:56:01\r\n#Fields: date time c-ip cs-username"
        ));
        assert!(first.contains("2009-12-02 21:56:01 127.0.0.1 client SMTPSVC1 HOST 127.0.0.1 0 MAIL - +FROM:<a@b.test> 250 0 34 22 0 SMTP - - - -\r\n"), "{first}");
        assert!(
            dir.join("SMTPSVC1/extend2.log").exists(),
            "rolled over by size"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
