//! How the command line finds and reaches a running server: the server writes its process id to
//! `<MailRoot>/mailroot.pid` and the settings it runs with (secrets masked, as `mailroot check`
//! prints them) to `<MailRoot>/mailroot.running.ini`, at start-up and after each reload.
//! `mailroot reload` signals that process (SIGHUP; the service control manager on Windows) and
//! waits for the running settings to be rewritten; `mailroot check` compares the file it checks with
//! them and names the changed keys a reload cannot apply. Both files are plain text in the mailroot
//! folder, which only the server's account and administrators may write.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::restart;
use crate::config::{Config, VirtualServer};

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

/// Rewrites the running-settings file (after a reload).
pub fn running(servers: &[std::sync::Arc<VirtualServer>]) -> io::Result<()> {
    match servers.first() {
        Some(first) => replace(&running_file(first), &settings_text(servers)),
        None => Ok(()),
    }
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
