//! Running as a Windows service, in its platform-neutral part: the `mailroot service …` command
//! line, where an installed service keeps its files, what it is granted on them, how its Event Log
//! entries read, and the interface between the service control manager (SCM) and the server.
//!
//! Everything here compiles and is tested on every system; the calls into the SCM, the registry,
//! the Event Log and `icacls` are in `windows_service` (Windows only), reached through
//! [`execute`], [`reload`] and [`event_log`], which say "Windows only" elsewhere.
//!
//! The `os` room uses no other room of the crate: what needs the configuration (checking it,
//! listing the folders it names) and the server itself come in as [`Hooks`] from `main`.
//!
//! The flow of a service's life:
//! - `mailroot service install` computes the [`Layout`] (name, account, config, mailroot, logs),
//!   writes the INI when there is none ([`install_ini`]), checks it with [`Hooks::inspect`], creates
//!   the service under the virtual account `NT SERVICE\<name>`, registers the Event Log source and
//!   grants the account what [`plan_grants`] lists, by `icacls` ([`icacls_grant`]).
//! - The SCM starts `mailroot service run --name NAME --config PATH`, which calls [`execute`] with
//!   [`ServiceCommand::Run`]: the dispatcher calls [`Hooks::run`] with a [`Service`] whose
//!   `events` bring [`ServiceEvent::Stop`] (SCM stop, system shutdown) and
//!   [`ServiceEvent::Reload`] (parameter change), and whose `status` tells the SCM the
//!   [`Progress`] (start pending, running, stop pending with checkpoints and wait hints).
//! - A [`Failure`] returned by the hook (a bad configuration at start) stops the service with its
//!   exit code and writes an Event Log error naming file, line and key ([`start_failure_event`]).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

/// The name of the service (and of its virtual account, Event Log source and folders) when
/// `--name` is not given.
pub const DEFAULT_NAME: &str = "mailroot";

/// The `service` lines of `mailroot --help`.
pub const USAGE: &str = "\
  mailroot service install [--config PATH] [--name NAME]
                                     install the Windows service (NAME: mailroot), with the
                                     virtual account NT SERVICE\\NAME; writes the INI if PATH
                                     (default %ProgramData%\\mailroot\\smtpsvc.ini) does not exist
  mailroot service uninstall|start|stop|status [--name NAME]
                                     remove, start, stop or show the Windows service
";

/// Exit code of a failure caused by the configuration (as `mailroot serve` exits).
pub const EXIT_CONFIG: u32 = 2;
/// Exit code of any other failure to start.
pub const EXIT_START: u32 = 1;

/// How long the SCM is told to wait for each step of the start.
pub const START_WAIT_HINT: Duration = Duration::from_secs(30);
/// How long the SCM is told to wait when a stop was asked for and the server has not yet said
/// how long its grace period is.
pub const STOP_WAIT_HINT: Duration = Duration::from_secs(30);
/// What is added to the grace left while stopping: the sessions still open are closed after it,
/// then the server stops its threads.
pub const STOP_SLACK: Duration = Duration::from_secs(5);

/// At most this many events a minute go to the Event Log from the log (the log file has them all).
pub const EVENTS_PER_MINUTE: u32 = 30;

/// A log record with this target goes to the Event Log whatever its level (e.g.
/// `log::info!(target: EVENT_LOG_TARGET, "configuration reloaded")`); warnings and errors always go.
pub const EVENT_LOG_TARGET: &str = "event-log";

// ---------------------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------------------

/// `mailroot service …`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceCommand {
    /// `service install [--config PATH] [--name NAME]`.
    Install {
        /// The service name.
        name: String,
        /// The configuration file; `None`: the default for the name ([`Layout`]).
        config: Option<PathBuf>,
    },
    /// `service uninstall [--name NAME]`.
    Uninstall {
        /// The service name.
        name: String,
    },
    /// `service start [--name NAME]`.
    Start {
        /// The service name.
        name: String,
    },
    /// `service stop [--name NAME]`.
    Stop {
        /// The service name.
        name: String,
    },
    /// `service status [--name NAME]`.
    Status {
        /// The service name.
        name: String,
    },
    /// `service run --name NAME --config PATH`: what the SCM starts (written by `install`).
    Run {
        /// The service name.
        name: String,
        /// The configuration file.
        config: PathBuf,
    },
}

impl ServiceCommand {
    /// The service the command is about.
    pub fn name(&self) -> &str {
        match self {
            ServiceCommand::Install { name, .. }
            | ServiceCommand::Uninstall { name }
            | ServiceCommand::Start { name }
            | ServiceCommand::Stop { name }
            | ServiceCommand::Status { name }
            | ServiceCommand::Run { name, .. } => name,
        }
    }
}

/// Parses the words after `mailroot service`.
pub fn parse_args(args: &[String]) -> Result<ServiceCommand, String> {
    const ACTIONS: &str = "install, uninstall, start, stop or status";
    let Some(action) = args.first() else {
        return Err(format!("service needs an action: {ACTIONS}"));
    };
    let action = action.as_str();
    if !matches!(
        action,
        "install" | "uninstall" | "start" | "stop" | "status" | "run"
    ) {
        return Err(format!(
            "service: unknown action `{action}` (expected {ACTIONS})"
        ));
    }
    let mut name: Option<String> = None;
    let mut config: Option<PathBuf> = None;
    let mut i = 1;
    while i < args.len() {
        let arg = args[i].as_str();
        let (option, inline) = match arg.split_once('=') {
            Some((o, v)) if o.starts_with("--") => (o, Some(v.to_string())),
            _ => (arg, None),
        };
        let option = match option {
            "--name" | "-n" => "--name",
            "--config" | "-c" => "--config",
            _ => return Err(format!("service {action}: unknown argument `{arg}`")),
        };
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                match args.get(i) {
                    Some(v) if !v.starts_with("--") => v.clone(),
                    _ => return Err(format!("{option} needs a value")),
                }
            }
        };
        if value.is_empty() {
            return Err(format!("{option} needs a value"));
        }
        if option == "--name" {
            if name.is_some() {
                return Err("--name given twice".into());
            }
            validate_name(&value)?;
            name = Some(value);
        } else {
            if config.is_some() {
                return Err("--config given twice".into());
            }
            if !matches!(action, "install" | "run") {
                return Err(format!(
                    "service {action} takes no --config (the service keeps the one it was \
                     installed with)"
                ));
            }
            config = Some(PathBuf::from(value));
        }
        i += 1;
    }
    let named = name.clone().unwrap_or_else(|| DEFAULT_NAME.to_string());
    Ok(match action {
        "install" => ServiceCommand::Install {
            name: named,
            config,
        },
        "uninstall" => ServiceCommand::Uninstall { name: named },
        "start" => ServiceCommand::Start { name: named },
        "stop" => ServiceCommand::Stop { name: named },
        "status" => ServiceCommand::Status { name: named },
        _ => match (name, config) {
            (Some(name), Some(config)) => ServiceCommand::Run { name, config },
            _ => {
                return Err(
                    "service run is started by the service control manager and needs \
                            --name and --config (use `mailroot serve` in a console)"
                        .into(),
                );
            }
        },
    })
}

/// A service name is also an account (`NT SERVICE\<name>`), an Event Log source and a folder
/// name: ASCII letters, digits, `-` and `_`, starting with a letter or digit, at most 64.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid service name: ASCII letters, digits, '-' and '_', starting \
             with a letter or digit, at most 64 characters"
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Where an installed service keeps its files
// ---------------------------------------------------------------------------------------------

/// The environment values the defaults come from (`%ProgramData%`, `%SystemRoot%`,
/// `%SystemDrive%`); missing ones take the usual values (`C:\ProgramData`, `C:\Windows`, `C:`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// `%ProgramData%`.
    pub program_data: Option<String>,
    /// `%SystemRoot%`.
    pub system_root: Option<String>,
    /// `%SystemDrive%`.
    pub system_drive: Option<String>,
}

impl Environment {
    /// This process's values.
    pub fn from_process() -> Environment {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Environment {
            program_data: var("ProgramData"),
            system_root: var("SystemRoot"),
            system_drive: var("SystemDrive"),
        }
    }

    fn program_data(&self) -> &str {
        self.program_data.as_deref().unwrap_or(r"C:\ProgramData")
    }

    fn system_root(&self) -> &str {
        self.system_root.as_deref().unwrap_or(r"C:\Windows")
    }

    fn system_drive(&self) -> &str {
        self.system_drive.as_deref().unwrap_or("C:")
    }
}

/// Joins Windows path parts with single backslashes (the same on every system, for the tests).
pub fn win_join(base: &str, parts: &[&str]) -> String {
    let mut s = base.trim_end_matches(['\\', '/']).to_string();
    for p in parts {
        s.push('\\');
        s.push_str(p.trim_matches(['\\', '/']));
    }
    s
}

/// Where an installed service keeps its files, and who it runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The service name.
    pub name: String,
    /// The name the Services console shows.
    pub display_name: String,
    /// The virtual account: `NT SERVICE\<name>`.
    pub account: String,
    /// The configuration file.
    pub config: PathBuf,
    /// Its folder (the service may read it).
    pub config_dir: PathBuf,
    /// Whether `config` is the default for the name (then its folder is mailroot's own and
    /// install closes it to everyone but SYSTEM, Administrators and the service).
    pub config_is_default: bool,
    /// MailRoot written into a new INI.
    pub mailroot: PathBuf,
    /// LogFileDirectory written into a new INI (the W3C logs go to its `SMTPSVC<n>` folders).
    pub log_dir: PathBuf,
    /// ServerLogFile written into a new INI: `<log_dir>\SMTPSVC1\mailroot.log`, beside the first
    /// virtual server's W3C logs (a service has no console for standard error).
    pub server_log: PathBuf,
}

/// The virtual account a service runs as.
pub fn account(name: &str) -> String {
    format!(r"NT SERVICE\{name}")
}

/// The Services console's name of the service.
pub fn display_name(name: &str) -> String {
    format!("mailroot SMTP relay ({name})")
}

/// The description the Services console shows.
pub fn description(name: &str) -> String {
    format!(
        "SMTP relay replacing the IIS 6.0 SMTP Service (instance {name}); mailroot {}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The default configuration file of a service: `%ProgramData%\mailroot\smtpsvc.ini` for
/// `mailroot`, `%ProgramData%\mailroot\<name>\smtpsvc.ini` for any other name.
pub fn default_config(name: &str, env: &Environment) -> String {
    if name.eq_ignore_ascii_case(DEFAULT_NAME) {
        win_join(env.program_data(), &["mailroot", "smtpsvc.ini"])
    } else {
        win_join(env.program_data(), &["mailroot", name, "smtpsvc.ini"])
    }
}

/// The default mailroot of a service: IIS's `%SystemDrive%\inetpub\mailroot` for `mailroot`
/// (an existing IIS mailroot is used as it is); for another name a folder beside it named after
/// the service, with `mailroot-` in front unless the name starts with `mailroot`
/// (`mailroot-2` → `C:\inetpub\mailroot-2`, `eu` → `C:\inetpub\mailroot-eu`), so that two
/// services never share a Queue.
pub fn default_mailroot(name: &str, env: &Environment) -> String {
    let lower = name.to_ascii_lowercase();
    let folder = if lower == DEFAULT_NAME {
        DEFAULT_NAME.to_string()
    } else if lower.starts_with(DEFAULT_NAME) {
        name.to_string()
    } else {
        format!("mailroot-{name}")
    };
    win_join(env.system_drive(), &["inetpub", &folder])
}

/// The default LogFileDirectory of a service: IIS's `%SystemRoot%\System32\LogFiles` for
/// `mailroot` (logs in `LogFiles\SMTPSVC1` as IIS wrote them), `LogFiles\<name>` for any other
/// (two services writing the same `SMTPSVC1\exYYMMDD.log` would mix their lines).
pub fn default_log_dir(name: &str, env: &Environment) -> String {
    if name.eq_ignore_ascii_case(DEFAULT_NAME) {
        win_join(env.system_root(), &["System32", "LogFiles"])
    } else {
        win_join(env.system_root(), &["System32", "LogFiles", name])
    }
}

/// The layout of service `name`, with the configuration file given (made absolute by the
/// caller) or the default one.
pub fn layout(name: &str, config: Option<&Path>, env: &Environment) -> Layout {
    let default = default_config(name, env);
    let (config, config_dir, config_is_default) = match config {
        Some(p) => {
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            let is_default = p.to_string_lossy().eq_ignore_ascii_case(&default);
            (p.to_path_buf(), dir, is_default)
        }
        None => {
            let dir = default
                .rsplit_once('\\')
                .map(|(d, _)| d.to_string())
                .unwrap_or_default();
            (PathBuf::from(&default), PathBuf::from(dir), true)
        }
    };
    Layout {
        name: name.to_string(),
        display_name: display_name(name),
        account: account(name),
        config,
        config_dir,
        config_is_default,
        mailroot: PathBuf::from(default_mailroot(name, env)),
        log_dir: PathBuf::from(default_log_dir(name, env)),
        server_log: PathBuf::from(win_join(
            &default_log_dir(name, env),
            &["SMTPSVC1", "mailroot.log"],
        )),
    }
}

/// The INI that `install` writes when there is none: this repository's `conf/smtpsvc.ini` (every
/// key, commented) with IIS's binding (`:25`), the layout's mailroot, log folder and server log,
/// and the default domain left to its default (the machine's name), as IIS set up a new SMTP
/// service.
pub fn install_ini(layout: &Layout) -> String {
    const TEMPLATE: &str = include_str!("../../conf/smtpsvc.ini");
    let mut out = format!(
        "; Written by `mailroot service install` for the Windows service {} (account {}).\r\n\
         ; Edit it, check it with `mailroot check --config \"{}\"`, then\r\n\
         ; `mailroot service start --name {}` (or `mailroot reload --name {}` once it runs).\r\n\
         ;\r\n",
        layout.name,
        layout.account,
        layout.config.display(),
        layout.name,
        layout.name
    );
    let server_log = format!(
        "; The server's own log (start, stop, errors, deliveries); its warnings and errors also\r\n\
         ; go to the Event Log (Windows Logs > Application, source {}).\r\n\
         ServerLogFile = {}\r\n",
        layout.name,
        layout.server_log.display()
    );
    let has_server_log = TEMPLATE.lines().any(|l| {
        l.trim_start_matches([';', ' '])
            .split_once('=')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("ServerLogFile"))
    });
    for line in TEMPLATE.lines() {
        // The template's notes about itself (it listens on loopback 2525 to run unprivileged).
        let comment = line.trim_start().starts_with(';');
        if comment && line.contains("2525") {
            out.push_str("; One address only: 192.0.2.10:25. IPv6: [::1]:25.\r\n");
            continue;
        }
        let line = match line.find("this repository") {
            Some(i) if comment => format!("{}.", line[..i].trim_end_matches([' ', ';'])),
            _ => line.to_string(),
        };
        let line = line.as_str();
        let key = line
            .split_once('=')
            .filter(|_| !line.trim_start().starts_with(';'))
            .map(|(k, _)| k.trim().to_ascii_lowercase());
        let commented_key = line
            .trim_start_matches([';', ' '])
            .split_once('=')
            .map(|(k, _)| k.trim().to_ascii_lowercase());
        if commented_key.as_deref() == Some("serverlogfile") {
            out.push_str(&server_log);
            continue;
        }
        let line = match key.as_deref() {
            Some("serverbindings") => "ServerBindings = :25".to_string(),
            Some("mailroot") => format!("MailRoot = {}", layout.mailroot.display()),
            Some("logfiledirectory") => {
                format!("LogFileDirectory = {}", layout.log_dir.display())
            }
            Some("defaultdomain") => "; DefaultDomain = example.com".to_string(),
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push_str("\r\n");
        if key.as_deref() == Some("logfiledirectory") && !has_server_log {
            out.push_str(&server_log);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// What the service account is granted
// ---------------------------------------------------------------------------------------------

/// What a configuration needs from the file system, as `main` finds it with the configuration
/// loader ([`Hooks::inspect`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// Folders the service writes in: each virtual server's mailroot and its moved folders
    /// (Pickup, Queue, Badmail, Drop), each `LogFileDirectory\SMTPSVC<n>`, the folder of a file
    /// it rewrites (OAuthRefreshTokenFile). Install creates them.
    pub write: Vec<PathBuf>,
    /// Files or folders it only reads outside the configuration's folder (a certificate's folder,
    /// a secret named by an absolute path).
    pub read: Vec<PathBuf>,
}

/// A right granted to the service account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Read, write, create and delete (icacls `M`).
    Modify,
    /// Read and traverse (icacls `RX`).
    Read,
}

/// One grant of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The file or folder.
    pub path: PathBuf,
    /// What the account may do there.
    pub right: Right,
}

/// Whether `inner` is `outer` or inside it, compared as Windows compares paths (case-insensitive,
/// either slash), on every system.
pub fn path_within(inner: &Path, outer: &Path) -> bool {
    fn norm(p: &Path) -> String {
        p.to_string_lossy()
            .replace('/', "\\")
            .trim_end_matches('\\')
            .to_lowercase()
    }
    let (i, o) = (norm(inner), norm(outer));
    i == o || (i.starts_with(&o) && i[o.len()..].starts_with('\\'))
}

/// The grants install makes: Modify on each folder written (nested ones are covered by
/// inheritance), Read on the configuration's folder and on what is read elsewhere, nothing more.
pub fn plan_grants(config_dir: &Path, needs: &Needs) -> Vec<Grant> {
    let mut write: Vec<PathBuf> = Vec::new();
    for p in &needs.write {
        if !write.iter().any(|w| path_within(p, w)) {
            write.retain(|w| !path_within(w, p));
            write.push(p.clone());
        }
    }
    let mut grants: Vec<Grant> = write
        .iter()
        .map(|p| Grant {
            path: p.clone(),
            right: Right::Modify,
        })
        .collect();
    let mut read: Vec<PathBuf> = Vec::new();
    for p in std::iter::once(config_dir).chain(needs.read.iter().map(PathBuf::as_path)) {
        let covered = write.iter().chain(read.iter()).any(|w| path_within(p, w));
        if !covered {
            read.retain(|r| !path_within(r, p));
            read.push(p.to_path_buf());
        }
    }
    grants.extend(read.into_iter().map(|path| Grant {
        path,
        right: Right::Read,
    }));
    grants
}

/// Why a folder must not be granted to a service: a drive's root, or a system folder that other
/// programs share (`%SystemRoot%`, `System32`, `System32\LogFiles` itself, `%ProgramData%`,
/// `Program Files`, `inetpub`). `None` when it may.
pub fn too_broad(path: &Path, env: &Environment) -> Option<String> {
    let s = path.to_string_lossy().replace('/', "\\");
    let t = s.trim_end_matches('\\');
    let b = t.as_bytes();
    if t.is_empty() || (b.len() == 2 && b[1] == b':') || t == "\\" {
        return Some(format!("{s} is the root of a drive"));
    }
    let drive = env.system_drive();
    let shared = [
        env.system_root().to_string(),
        win_join(env.system_root(), &["System32"]),
        win_join(env.system_root(), &["System32", "LogFiles"]),
        env.program_data().to_string(),
        win_join(drive, &["Program Files"]),
        win_join(drive, &["Program Files (x86)"]),
        win_join(drive, &["inetpub"]),
        win_join(drive, &["Users"]),
    ];
    shared
        .iter()
        .find(|f| f.eq_ignore_ascii_case(t))
        .map(|f| format!("{f} is a system folder shared with other programs"))
}

/// The service SID of `name` (`NT SERVICE\<name>`): `S-1-5-80-` and the SHA-1 of the upper-case
/// name in UTF-16LE as five little-endian numbers. It exists as soon as the service does, reads
/// the same in every language of Windows, and lets `icacls` name the account unambiguously.
pub fn service_sid(name: &str) -> String {
    let utf16: Vec<u8> = name
        .to_ascii_uppercase()
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &utf16);
    let mut sid = String::from("S-1-5-80");
    for chunk in digest.as_ref().chunks_exact(4) {
        let n = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        sid.push_str(&format!("-{n}"));
    }
    sid
}

/// `icacls` arguments that grant `right` on `path` to the account with SID `sid`: inherited by
/// files and subfolders (`(OI)(CI)`) when `path` is a folder.
pub fn icacls_grant(path: &Path, sid: &str, right: Right, is_dir: bool) -> Vec<OsString> {
    let inherit = if is_dir { "(OI)(CI)" } else { "" };
    let mask = match right {
        Right::Modify => "M",
        Right::Read => "RX",
    };
    vec![
        path.as_os_str().to_owned(),
        "/grant".into(),
        format!("*{sid}:{inherit}{mask}").into(),
        "/Q".into(),
    ]
}

/// `icacls` arguments that close a folder mailroot created for its configuration (users, TLS
/// keys, OAuth secrets live there) to everyone but SYSTEM and Administrators (full control) and
/// the service (read): `%ProgramData%`'s inherited ACL would let every local user read it.
pub fn icacls_restrict(dir: &Path, sid: &str) -> Vec<OsString> {
    vec![
        dir.as_os_str().to_owned(),
        "/inheritance:r".into(),
        "/grant:r".into(),
        "*S-1-5-18:(OI)(CI)F".into(),
        "*S-1-5-32-544:(OI)(CI)F".into(),
        format!("*{sid}:(OI)(CI)RX").into(),
        "/Q".into(),
    ]
}

/// `icacls` arguments that remove what was granted to the account with SID `sid` on `path`
/// (uninstall).
pub fn icacls_remove(path: &Path, sid: &str) -> Vec<OsString> {
    vec![
        path.as_os_str().to_owned(),
        "/remove:g".into(),
        format!("*{sid}").into(),
        "/Q".into(),
    ]
}

/// The service's command line, as install registers it (quoted as Windows parses it).
pub fn run_arguments(name: &str, config: &Path) -> Vec<OsString> {
    vec![
        "service".into(),
        "run".into(),
        "--name".into(),
        name.into(),
        "--config".into(),
        config.as_os_str().to_owned(),
    ]
}

/// Splits a Windows command line as `CommandLineToArgvW` does (quotes group, `\"` is a quote,
/// backslashes are literal elsewhere).
pub fn split_command_line(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_arg = false;
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let mut n = 1;
                while chars.peek() == Some(&'\\') {
                    chars.next();
                    n += 1;
                }
                in_arg = true;
                if chars.peek() == Some(&'"') {
                    cur.extend(std::iter::repeat_n('\\', n / 2));
                    if n % 2 == 1 {
                        chars.next();
                        cur.push('"');
                    }
                } else {
                    cur.extend(std::iter::repeat_n('\\', n));
                }
            }
            '"' => {
                in_arg = true;
                if quoted && chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = !quoted;
                }
            }
            ' ' | '\t' if !quoted => {
                if in_arg {
                    args.push(std::mem::take(&mut cur));
                    in_arg = false;
                }
            }
            c => {
                in_arg = true;
                cur.push(c);
            }
        }
    }
    if in_arg {
        args.push(cur);
    }
    args
}

/// The configuration file in an installed service's command line (`… --config PATH`).
pub fn config_from_command_line(line: &str) -> Option<PathBuf> {
    let args = split_command_line(line);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" || a == "-c" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// A warning when the executable sits where the service account cannot read it (a user's
/// profile: Downloads, Desktop): the service would fail to start with "access denied".
pub fn exe_location_warning(exe: &Path, env: &Environment) -> Option<String> {
    let users = PathBuf::from(win_join(env.system_drive(), &["Users"]));
    path_within(exe, &users).then(|| {
        format!(
            "{} is in a user's profile, which NT SERVICE accounts cannot read: copy it to \
             {} and install from there",
            exe.display(),
            win_join(
                env.system_drive(),
                &["Program Files", "mailroot", "mailroot.exe"]
            )
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Event Log entries
// ---------------------------------------------------------------------------------------------

/// The registry key (under HKEY_LOCAL_MACHINE) that makes `name` an Event Log source of the
/// Application log.
pub fn event_source_key(name: &str) -> String {
    format!(r"SYSTEM\CurrentControlSet\Services\EventLog\Application\{name}")
}

/// The source's EventMessageFile (REG_EXPAND_SZ): `EventCreate.exe`, on every Windows, has a
/// message table whose ids 1 to 1000 are all `%1`, so an event shows its own text without a
/// message resource in mailroot.exe. With TypesSupported = 7 (error, warning, information).
pub const EVENT_MESSAGE_FILE: &str = r"%SystemRoot%\System32\EventCreate.exe";

/// An Event Log entry's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Information.
    Info,
    /// Warning.
    Warning,
    /// Error.
    Error,
}

/// Where in the configuration a problem is: displayed `file:line: key`, as `mailroot check`
/// writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The configuration file.
    pub file: PathBuf,
    /// Its 1-based line, when the problem is on one.
    pub line: Option<usize>,
    /// The key, when the problem is about one.
    pub key: Option<String>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ": {k}")?;
        }
        Ok(())
    }
}

/// An Event Log entry: its id, level and text.
///
/// Ids (all shown through `EventCreate.exe`'s message table, which takes 1 to 1000): 1
/// information, 2 warning, 3 error; 11, 12, 13 the same about the configuration file (the text
/// names file, line and key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event id.
    pub id: u32,
    /// The level.
    pub level: Level,
    /// The text (CRLF line ends; at most [`MAX_EVENT_CHARS`] characters).
    pub text: String,
}

/// ReportEvent takes strings of at most 31,839 characters.
pub const MAX_EVENT_CHARS: usize = 31_000;

/// An event from a level, a message and, for a problem in the configuration, where it is.
pub fn event(level: Level, message: &str, origin: Option<&Origin>) -> Event {
    let base = match level {
        Level::Info => 1,
        Level::Warning => 2,
        Level::Error => 3,
    };
    let mut text = String::new();
    let id = match origin {
        Some(o) => {
            text.push_str(&format!("{o}: {message}\r\n\r\n"));
            text.push_str(&format!("File: {}\r\n", o.file.display()));
            if let Some(l) = o.line {
                text.push_str(&format!("Line: {l}\r\n"));
            }
            if let Some(k) = &o.key {
                text.push_str(&format!("Key: {k}\r\n"));
            }
            base + 10
        }
        None => {
            text.push_str(message);
            base
        }
    };
    let text = text.trim_end().replace("\r\n", "\n").replace('\n', "\r\n");
    Event {
        id,
        level,
        text: truncate_chars(&text, MAX_EVENT_CHARS),
    }
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The error event of a service that could not start.
pub fn start_failure_event(name: &str, failure: &Failure) -> Event {
    let what = if failure.origin.is_some() {
        "its configuration has an error"
    } else {
        "an error"
    };
    let mut e = event(Level::Error, &failure.message, failure.origin.as_ref());
    e.text = truncate_chars(
        &format!(
            "The service {name} did not start (exit code {}): {what}.\r\n\r\n{}",
            failure.exit_code, e.text
        ),
        MAX_EVENT_CHARS,
    );
    e
}

/// A `log::Log` that passes every record to `inner` and also gives warnings, errors and records
/// with the target [`EVENT_LOG_TARGET`] to `sink` as [`Event`]s, at most [`EVENTS_PER_MINUTE`]
/// a minute (then one warning says how many were left to the log file).
pub struct EventTee {
    inner: Box<dyn log::Log>,
    sink: Box<dyn Fn(&Event) + Send + Sync>,
    limiter: Mutex<Limiter>,
}

impl EventTee {
    /// A tee of `inner` to `sink`.
    pub fn new(inner: Box<dyn log::Log>, sink: Box<dyn Fn(&Event) + Send + Sync>) -> EventTee {
        EventTee {
            inner,
            sink,
            limiter: Mutex::new(Limiter::default()),
        }
    }

    fn wanted(meta: &log::Metadata<'_>) -> bool {
        meta.level() <= log::Level::Warn || meta.target() == EVENT_LOG_TARGET
    }
}

impl log::Log for EventTee {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        Self::wanted(meta) || self.inner.enabled(meta)
    }

    fn log(&self, record: &log::Record<'_>) {
        if Self::wanted(record.metadata()) {
            let admit = self
                .limiter
                .lock()
                .map(|mut l| l.admit(Instant::now()))
                .unwrap_or(Admit::Send { suppressed: 0 });
            if let Admit::Send { suppressed } = admit {
                if suppressed > 0 {
                    (self.sink)(&event(
                        Level::Warning,
                        &format!(
                            "{suppressed} more warnings and errors in the last minute went to the \
                             log file only (at most {EVENTS_PER_MINUTE} a minute are written here)"
                        ),
                        None,
                    ));
                }
                let level = match record.level() {
                    log::Level::Error => Level::Error,
                    log::Level::Warn => Level::Warning,
                    _ => Level::Info,
                };
                (self.sink)(&event(level, &record.args().to_string(), None));
            }
        }
        if self.inner.enabled(record.metadata()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// What the limiter lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Write it; `suppressed` were dropped since the last one written.
    Send {
        /// How many were dropped before it.
        suppressed: u32,
    },
    /// Leave it to the log file.
    Drop,
}

/// At most [`EVENTS_PER_MINUTE`] events in each minute.
#[derive(Debug, Default)]
pub struct Limiter {
    window: Option<Instant>,
    sent: u32,
    suppressed: u32,
}

impl Limiter {
    /// Whether an event at `now` may be written.
    pub fn admit(&mut self, now: Instant) -> Admit {
        let expired = self
            .window
            .is_none_or(|w| now.saturating_duration_since(w) >= Duration::from_secs(60));
        if expired {
            self.window = Some(now);
            self.sent = 0;
        }
        if self.sent < EVENTS_PER_MINUTE {
            self.sent += 1;
            Admit::Send {
                suppressed: std::mem::take(&mut self.suppressed),
            }
        } else {
            self.suppressed += 1;
            Admit::Drop
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The interface between the SCM and the server
// ---------------------------------------------------------------------------------------------

/// What the SCM asks of a running service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceEvent {
    /// Stop (SERVICE_CONTROL_STOP, or SHUTDOWN when the system goes down): stop accepting, let
    /// sessions finish within the grace period, keep every accepted message, return.
    Stop,
    /// Read the configuration again (SERVICE_CONTROL_PARAMCHANGE: `mailroot reload --name NAME`
    /// or `sc control NAME paramchange`).
    Reload,
}

/// What the server tells the SCM while it starts and stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Still starting (configuration loaded, listeners being bound): START_PENDING, next
    /// checkpoint, [`START_WAIT_HINT`]. Report it before each step that may take seconds.
    Starting,
    /// Every listener is bound: RUNNING, accepting stop, shutdown and parameter change.
    Running,
    /// Stopping: STOP_PENDING, next checkpoint, a wait hint of `grace_left` + [`STOP_SLACK`].
    /// Report it when the stop begins and then every few seconds until the server has stopped.
    Stopping {
        /// Sessions still open.
        sessions_left: usize,
        /// What is left of the grace period.
        grace_left: Duration,
    },
}

/// Reports [`Progress`] to whoever runs the server (the SCM, or nobody in a console). Cheap to
/// clone and to send to another thread.
#[derive(Clone)]
pub struct Status(Arc<dyn Fn(Progress) + Send + Sync>);

impl Status {
    /// A status that calls `f`.
    pub fn new(f: impl Fn(Progress) + Send + Sync + 'static) -> Status {
        Status(Arc::new(f))
    }

    /// A status nobody listens to (`mailroot serve` in a console).
    pub fn none() -> Status {
        Status::new(|_| {})
    }

    /// Tells it.
    pub fn report(&self, progress: Progress) {
        (self.0)(progress)
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Status")
    }
}

/// Why the server could not run: the service stops with `exit_code` (service-specific) and an
/// Event Log error with `message`, naming `origin` when the configuration is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The service-specific exit code ([`EXIT_CONFIG`], [`EXIT_START`]).
    pub exit_code: u32,
    /// What is wrong.
    pub message: String,
    /// Where in the configuration, when it is a configuration error.
    pub origin: Option<Origin>,
}

impl Failure {
    /// A failure that is not about the configuration ([`EXIT_START`]).
    pub fn start(message: impl Into<String>) -> Failure {
        Failure {
            exit_code: EXIT_START,
            message: message.into(),
            origin: None,
        }
    }

    /// A configuration error ([`EXIT_CONFIG`]): `message` is what is wrong, without the
    /// `file:line: key` (that is `origin`).
    pub fn config(
        file: &Path,
        line: Option<usize>,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> Failure {
        Failure {
            exit_code: EXIT_CONFIG,
            message: message.into(),
            origin: Some(Origin {
                file: file.to_path_buf(),
                line,
                key: key.map(str::to_string),
            }),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(o) => write!(f, "{o}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// What [`Hooks::run`] gets: the service's name and configuration, the SCM's requests and the
/// status to report.
#[derive(Debug)]
pub struct Service {
    /// The service name (its Event Log source).
    pub name: String,
    /// The configuration file it was installed with.
    pub config: PathBuf,
    /// Stop and reload requests, in the order they came.
    pub events: Receiver<ServiceEvent>,
    /// Where to report start and stop progress.
    pub status: Status,
}

/// Runs the server as the service: start it, report [`Progress::Running`], handle the events
/// until [`ServiceEvent::Stop`], stop gracefully reporting [`Progress::Stopping`], return.
pub type RunHook = Box<dyn FnOnce(Service) -> Result<(), Failure> + Send>;

/// Loads the configuration file given and says what it needs from the file system; an error
/// names file, line and key.
pub type InspectHook = Box<dyn Fn(&Path) -> Result<Needs, Failure>>;

/// What `main` gives the service code: everything that needs the crate's other rooms.
pub struct Hooks {
    /// Used by install (the new or given INI must load), start (checked before asking the SCM)
    /// and uninstall (what to take back).
    pub inspect: InspectHook,
    /// Used by `service run`.
    pub run: RunHook,
}

/// A state to tell the SCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScmState {
    /// SERVICE_START_PENDING.
    StartPending,
    /// SERVICE_RUNNING.
    Running,
    /// SERVICE_STOP_PENDING.
    StopPending,
}

/// One SetServiceStatus call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScmReport {
    /// The state.
    pub state: ScmState,
    /// Increases during a pending state; 0 otherwise.
    pub checkpoint: u32,
    /// How long the SCM should wait for the next report; zero when not pending.
    pub wait_hint: Duration,
    /// Whether stop, shutdown and parameter change are accepted (only while running).
    pub accepts_controls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    #[default]
    Starting,
    Running,
    Stopping,
}

/// Turns [`Progress`] into the SCM's states, checkpoints and wait hints, and keeps them moving
/// one way: nothing goes back to running once a stop began.
#[derive(Debug, Default)]
pub struct ScmTracker {
    phase: Phase,
    checkpoint: u32,
}

impl ScmTracker {
    /// The report for `progress`, or `None` when it changes nothing the SCM may hear.
    pub fn update(&mut self, progress: Progress) -> Option<ScmReport> {
        match (progress, self.phase) {
            (Progress::Starting, Phase::Starting) => {
                self.checkpoint += 1;
                Some(self.pending(ScmState::StartPending, START_WAIT_HINT))
            }
            (Progress::Running, Phase::Starting) => {
                self.phase = Phase::Running;
                self.checkpoint = 0;
                Some(ScmReport {
                    state: ScmState::Running,
                    checkpoint: 0,
                    wait_hint: Duration::ZERO,
                    accepts_controls: true,
                })
            }
            (Progress::Stopping { grace_left, .. }, _) => {
                if self.phase != Phase::Stopping {
                    self.phase = Phase::Stopping;
                    self.checkpoint = 0;
                }
                self.checkpoint += 1;
                Some(self.pending(ScmState::StopPending, grace_left + STOP_SLACK))
            }
            _ => None,
        }
    }

    /// The report when the SCM asked to stop, before the server said how long it takes.
    pub fn stop_requested(&mut self) -> ScmReport {
        if self.phase != Phase::Stopping {
            self.phase = Phase::Stopping;
            self.checkpoint = 0;
        }
        self.checkpoint += 1;
        self.pending(ScmState::StopPending, STOP_WAIT_HINT)
    }

    fn pending(&self, state: ScmState, wait_hint: Duration) -> ScmReport {
        ScmReport {
            state,
            checkpoint: self.checkpoint,
            wait_hint,
            accepts_controls: false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The entry points (Windows; elsewhere they say so)
// ---------------------------------------------------------------------------------------------

#[cfg(not(windows))]
const WINDOWS_ONLY: &str = "`mailroot service` manages a Windows service; on Linux use the \
                            systemd unit (`systemctl enable --now mailroot`)";

/// Carries out a `service` command. `Ok` is the process's exit code (for `status`: 0 running,
/// 3 not running, 4 not installed; otherwise 0); `Err` is a message for standard error (exit 1).
/// Install, uninstall, start and stop print what they do on standard output.
pub fn execute(command: ServiceCommand, hooks: Hooks) -> Result<u8, String> {
    #[cfg(windows)]
    {
        super::windows_service::execute(command, hooks)
    }
    #[cfg(not(windows))]
    {
        let _ = (command, hooks);
        Err(WINDOWS_ONLY.into())
    }
}

/// Asks the running service `name` to read its configuration again
/// (SERVICE_CONTROL_PARAMCHANGE, as `sc control NAME paramchange`).
pub fn reload(name: &str) -> Result<(), String> {
    validate_name(name)?;
    #[cfg(windows)]
    {
        super::windows_service::reload(name)
    }
    #[cfg(not(windows))]
    {
        Err(WINDOWS_ONLY.into())
    }
}

/// `inner`, with warnings and errors also written to the Windows Event Log under the source
/// `name` (registered by install); `inner` itself elsewhere, or when the source cannot be opened.
pub fn event_log(name: &str, inner: Box<dyn log::Log>) -> Box<dyn log::Log> {
    #[cfg(windows)]
    {
        super::windows_service::event_log(name, inner)
    }
    #[cfg(not(windows))]
    {
        let _ = name;
        inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn env() -> Environment {
        Environment {
            program_data: Some(r"D:\PD".into()),
            system_root: Some(r"E:\Win".into()),
            system_drive: Some("F:".into()),
        }
    }

    #[test]
    fn commands_parse_with_defaults() {
        assert_eq!(
            parse_args(&args("install")).unwrap(),
            ServiceCommand::Install {
                name: "mailroot".into(),
                config: None
            }
        );
        assert_eq!(
            parse_args(&args("install --config C:\\x\\a.ini --name mailroot-2")).unwrap(),
            ServiceCommand::Install {
                name: "mailroot-2".into(),
                config: Some(PathBuf::from(r"C:\x\a.ini"))
            }
        );
        assert_eq!(
            parse_args(&args("install --name=eu -c a.ini")).unwrap(),
            ServiceCommand::Install {
                name: "eu".into(),
                config: Some(PathBuf::from("a.ini"))
            }
        );
        for (a, c) in [
            (
                "uninstall",
                ServiceCommand::Uninstall {
                    name: "mailroot".into(),
                },
            ),
            ("start --name b", ServiceCommand::Start { name: "b".into() }),
            ("stop -n b", ServiceCommand::Stop { name: "b".into() }),
            (
                "status",
                ServiceCommand::Status {
                    name: "mailroot".into(),
                },
            ),
            (
                "run --name m2 --config C:\\p\\s.ini",
                ServiceCommand::Run {
                    name: "m2".into(),
                    config: PathBuf::from(r"C:\p\s.ini"),
                },
            ),
        ] {
            assert_eq!(parse_args(&args(a)).unwrap(), c, "{a}");
            assert_eq!(parse_args(&args(a)).unwrap().name(), c.name());
        }
        // A path with spaces arrives as one argument.
        let v = vec![
            "install".to_string(),
            "--config".to_string(),
            r"C:\My Files\s.ini".to_string(),
        ];
        assert_eq!(
            parse_args(&v).unwrap(),
            ServiceCommand::Install {
                name: "mailroot".into(),
                config: Some(PathBuf::from(r"C:\My Files\s.ini"))
            }
        );
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        let err = |s: &str| parse_args(&args(s)).unwrap_err();
        assert!(err("").contains("needs an action"));
        assert!(err("restart").contains("unknown action `restart`"));
        assert!(err("install --bogus").contains("unknown argument `--bogus`"));
        assert!(err("install --name").contains("--name needs a value"));
        assert!(err("install --name --config x").contains("--name needs a value"));
        assert!(err("install --config=").contains("--config needs a value"));
        assert!(err("install --name a --name b").contains("--name given twice"));
        assert!(err("install --config a --config b").contains("--config given twice"));
        assert!(err("uninstall --config a").contains("takes no --config"));
        assert!(err("stop --config a").contains("takes no --config"));
        assert!(err("run --name a").contains("needs --name and --config"));
        assert!(err("run --config a").contains("needs --name and --config"));
        assert!(err("install --name a/b").contains("not a valid service name"));
        assert!(err("start --name -x").contains("not a valid service name"));
        assert!(err("start --name=-x").contains("not a valid service name"));
    }

    #[test]
    fn service_names_are_checked() {
        for ok in ["mailroot", "mailroot-2", "eu_1", "A", &"a".repeat(64)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "a b",
            r"a\b",
            "a/b",
            "a.b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_instance_lives_where_iis_did() {
        let l = layout("mailroot", None, &env());
        assert_eq!(l.config, PathBuf::from(r"D:\PD\mailroot\smtpsvc.ini"));
        assert_eq!(l.config_dir, PathBuf::from(r"D:\PD\mailroot"));
        assert!(l.config_is_default);
        assert_eq!(l.mailroot, PathBuf::from(r"F:\inetpub\mailroot"));
        assert_eq!(l.log_dir, PathBuf::from(r"E:\Win\System32\LogFiles"));
        assert_eq!(
            l.server_log,
            PathBuf::from(r"E:\Win\System32\LogFiles\SMTPSVC1\mailroot.log")
        );
        assert_eq!(l.account, r"NT SERVICE\mailroot");
        assert_eq!(l.display_name, "mailroot SMTP relay (mailroot)");
    }

    #[test]
    fn other_instances_get_folders_of_their_own() {
        let l = layout("mailroot-2", None, &env());
        assert_eq!(
            l.config,
            PathBuf::from(r"D:\PD\mailroot\mailroot-2\smtpsvc.ini")
        );
        assert_eq!(l.config_dir, PathBuf::from(r"D:\PD\mailroot\mailroot-2"));
        assert_eq!(l.mailroot, PathBuf::from(r"F:\inetpub\mailroot-2"));
        assert_eq!(
            l.log_dir,
            PathBuf::from(r"E:\Win\System32\LogFiles\mailroot-2")
        );
        assert_eq!(l.account, r"NT SERVICE\mailroot-2");
        assert_eq!(l.display_name, "mailroot SMTP relay (mailroot-2)");
        let l = layout("eu", None, &env());
        assert_eq!(l.mailroot, PathBuf::from(r"F:\inetpub\mailroot-eu"));
        assert_eq!(l.config, PathBuf::from(r"D:\PD\mailroot\eu\smtpsvc.ini"));
        // Names differing only in case are the same service to the SCM: the same folders.
        assert_eq!(
            layout("MailRoot", None, &env()).mailroot,
            PathBuf::from(r"F:\inetpub\mailroot")
        );
    }

    #[test]
    fn missing_environment_values_take_the_usual_ones() {
        let l = layout("mailroot", None, &Environment::default());
        assert_eq!(
            l.config,
            PathBuf::from(r"C:\ProgramData\mailroot\smtpsvc.ini")
        );
        assert_eq!(l.mailroot, PathBuf::from(r"C:\inetpub\mailroot"));
        assert_eq!(l.log_dir, PathBuf::from(r"C:\Windows\System32\LogFiles"));
        // Trailing backslashes in the environment do not double.
        let e = Environment {
            program_data: Some(r"C:\ProgramData\".into()),
            ..Environment::default()
        };
        assert_eq!(
            default_config("mailroot", &e),
            r"C:\ProgramData\mailroot\smtpsvc.ini"
        );
    }

    #[test]
    fn an_explicit_config_is_kept_and_its_folder_is_read() {
        let p = Path::new("/srv/mail/conf/smtpsvc.ini");
        let l = layout("mailroot", Some(p), &env());
        assert_eq!(l.config, p);
        assert_eq!(l.config_dir, Path::new("/srv/mail/conf"));
        assert!(!l.config_is_default);
        let l = layout(
            "mailroot",
            Some(Path::new(r"d:\pd\MAILROOT\smtpsvc.ini")),
            &env(),
        );
        assert!(l.config_is_default);
    }

    #[test]
    fn the_written_ini_uses_the_layout_and_iis_binding() {
        let l = layout("mailroot", None, &env());
        let ini = install_ini(&l);
        let lines: Vec<&str> = ini.lines().collect();
        assert!(lines.contains(&"ServerBindings = :25"));
        assert!(lines.contains(&r"MailRoot = F:\inetpub\mailroot"));
        assert!(lines.contains(&r"LogFileDirectory = E:\Win\System32\LogFiles"));
        assert!(lines.contains(&r"ServerLogFile = E:\Win\System32\LogFiles\SMTPSVC1\mailroot.log"));
        assert_eq!(ini.matches("ServerLogFile =").count(), 1);
        assert!(lines.contains(&"; DefaultDomain = example.com"));
        assert!(!ini.contains("2525"), "{ini}");
        assert!(!ini.contains("this repository"), "{ini}");
        assert!(ini.contains("IIS default `:25` (all addresses, port 25).\r\n"));
        assert!(!ini.contains("../"), "{ini}");
        assert!(ini.contains("[SmtpSvc/1]"));
        assert!(ini.contains("mailroot service start --name mailroot"));
        // CRLF throughout, for Notepad.
        assert!(!ini.replace("\r\n", "").contains('\n'));
        // Every other key and comment of the template survives.
        assert!(ini.contains("RelayIpList = 127.0.0.1, ::1"));
        assert!(ini.contains("; SmartHostProvider = microsoft365"));
    }

    /// The INI install writes must pass the configuration loader (here with paths of this system).
    #[test]
    fn the_written_ini_loads() {
        let dir = std::env::temp_dir().join(format!(
            "mailroot-svc-{}-{:x}",
            std::process::id(),
            crate::os::random_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("smtpsvc.ini");
        let mut l = layout("mailroot-2", Some(&config), &env());
        l.mailroot = dir.join("mailroot");
        l.log_dir = dir.join("logs");
        l.server_log = dir.join("logs").join("SMTPSVC1").join("mailroot.log");
        std::fs::write(&config, install_ini(&l)).unwrap();
        let loaded = crate::config::Config::load(&config);
        std::fs::remove_dir_all(&dir).unwrap();
        let c = loaded.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.servers.len(), 1);
        let vs = &c.servers[0];
        assert_eq!(vs.dirs.mailroot, dir.join("mailroot"));
        assert_eq!(vs.log.directory, dir.join("logs"));
        assert_eq!(
            vs.log.server_log.as_deref(),
            Some(dir.join("logs/SMTPSVC1/mailroot.log").as_path())
        );
        assert_eq!(vs.bindings.len(), 1);
        assert_eq!(vs.bindings[0].port, 25);
        assert!(vs.bindings[0].ip.is_none());
    }

    #[test]
    fn grants_cover_what_is_written_and_read_and_nothing_more() {
        let needs = Needs {
            write: vec![
                PathBuf::from(r"C:\inetpub\mailroot\Queue"),
                PathBuf::from(r"C:\inetpub\mailroot"),
                PathBuf::from(r"C:\inetpub\mailroot\Pickup"),
                PathBuf::from(r"D:\Drop"),
                PathBuf::from(r"C:\Windows\System32\LogFiles\SMTPSVC1"),
                PathBuf::from(r"C:\Windows\System32\LogFiles\SMTPSVC2"),
                PathBuf::from(r"c:\INETPUB\MAILROOT\Badmail"),
            ],
            read: vec![
                PathBuf::from(r"C:\ProgramData\mailroot\tls"),
                PathBuf::from(r"C:\certs"),
                PathBuf::from(r"C:\certs\mail.key"),
                PathBuf::from(r"D:\Drop\x"),
            ],
        };
        let g = plan_grants(Path::new(r"C:\ProgramData\mailroot"), &needs);
        let m = |p: &str| Grant {
            path: PathBuf::from(p),
            right: Right::Modify,
        };
        let r = |p: &str| Grant {
            path: PathBuf::from(p),
            right: Right::Read,
        };
        assert_eq!(
            g,
            vec![
                m(r"C:\inetpub\mailroot"),
                m(r"D:\Drop"),
                m(r"C:\Windows\System32\LogFiles\SMTPSVC1"),
                m(r"C:\Windows\System32\LogFiles\SMTPSVC2"),
                r(r"C:\ProgramData\mailroot"),
                r(r"C:\certs"),
            ]
        );
        // A configuration folder inside a written folder needs no grant of its own.
        let g = plan_grants(
            Path::new(r"C:\inetpub\mailroot\conf"),
            &Needs {
                write: vec![PathBuf::from(r"C:\inetpub\mailroot")],
                read: vec![],
            },
        );
        assert_eq!(g, vec![m(r"C:\inetpub\mailroot")]);
        // A sibling with a common prefix is not inside.
        assert!(!path_within(
            Path::new(r"C:\inetpub\mailroot-2"),
            Path::new(r"C:\inetpub\mailroot")
        ));
        assert!(path_within(
            Path::new(r"C:/inetpub/mailroot/"),
            Path::new(r"C:\inetpub\mailroot")
        ));
    }

    #[test]
    fn system_folders_are_never_granted() {
        let e = env();
        for p in [
            r"F:\",
            "F:",
            r"E:\Win",
            r"e:\win\system32\",
            r"E:\Win\System32\LogFiles",
            r"D:\PD",
            r"F:\Program Files",
            r"F:\inetpub",
            r"F:\Users",
        ] {
            assert!(too_broad(Path::new(p), &e).is_some(), "{p}");
        }
        for p in [
            r"F:\inetpub\mailroot",
            r"E:\Win\System32\LogFiles\SMTPSVC1",
            r"D:\PD\mailroot",
            r"G:\mail",
        ] {
            assert_eq!(too_broad(Path::new(p), &e), None, "{p}");
        }
    }

    /// `sc showsid TrustedInstaller` gives this SID on every Windows.
    #[test]
    fn service_sids_are_computed_as_windows_does() {
        assert_eq!(
            service_sid("TrustedInstaller"),
            "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"
        );
        assert_eq!(service_sid("mailroot"), service_sid("MAILROOT"));
        assert_ne!(service_sid("mailroot"), service_sid("mailroot-2"));
    }

    #[test]
    fn icacls_arguments() {
        let s = |v: Vec<OsString>| -> Vec<String> {
            v.into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let sid = "S-1-5-80-1-2-3-4-5";
        assert_eq!(
            s(icacls_grant(
                Path::new(r"C:\inetpub\mailroot"),
                sid,
                Right::Modify,
                true
            )),
            [
                r"C:\inetpub\mailroot",
                "/grant",
                "*S-1-5-80-1-2-3-4-5:(OI)(CI)M",
                "/Q"
            ]
        );
        assert_eq!(
            s(icacls_grant(
                Path::new(r"C:\ProgramData\mailroot"),
                sid,
                Right::Read,
                true
            )),
            [
                r"C:\ProgramData\mailroot",
                "/grant",
                "*S-1-5-80-1-2-3-4-5:(OI)(CI)RX",
                "/Q"
            ]
        );
        assert_eq!(
            s(icacls_grant(
                Path::new(r"C:\certs\k.pem"),
                sid,
                Right::Read,
                false
            )),
            [r"C:\certs\k.pem", "/grant", "*S-1-5-80-1-2-3-4-5:RX", "/Q"]
        );
        assert_eq!(
            s(icacls_restrict(Path::new(r"C:\ProgramData\mailroot"), sid)),
            [
                r"C:\ProgramData\mailroot",
                "/inheritance:r",
                "/grant:r",
                "*S-1-5-18:(OI)(CI)F",
                "*S-1-5-32-544:(OI)(CI)F",
                "*S-1-5-80-1-2-3-4-5:(OI)(CI)RX",
                "/Q"
            ]
        );
        assert_eq!(
            s(icacls_remove(Path::new(r"C:\inetpub\mailroot"), sid)),
            [
                r"C:\inetpub\mailroot",
                "/remove:g",
                "*S-1-5-80-1-2-3-4-5",
                "/Q"
            ]
        );
    }

    #[test]
    fn the_config_is_found_again_in_the_service_command_line() {
        let line = r#""C:\Program Files\mailroot\mailroot.exe" service run --name mailroot --config "C:\ProgramData\my conf\smtpsvc.ini""#;
        assert_eq!(
            split_command_line(line),
            [
                r"C:\Program Files\mailroot\mailroot.exe",
                "service",
                "run",
                "--name",
                "mailroot",
                "--config",
                r"C:\ProgramData\my conf\smtpsvc.ini"
            ]
        );
        assert_eq!(
            config_from_command_line(line),
            Some(PathBuf::from(r"C:\ProgramData\my conf\smtpsvc.ini"))
        );
        assert_eq!(
            config_from_command_line(r"C:\m.exe service run --config C:\a\b.ini --name x"),
            Some(PathBuf::from(r"C:\a\b.ini"))
        );
        assert_eq!(config_from_command_line(r"C:\m.exe serve"), None);
        // Quoting rules of CommandLineToArgvW: \" is a quote, \\" a backslash then a quote.
        assert_eq!(
            split_command_line(r#"a\"b "c\\" d"#),
            [r#"a"b"#, r"c\", "d"]
        );
        assert_eq!(
            run_arguments("m", Path::new(r"C:\x.ini")),
            ["service", "run", "--name", "m", "--config", r"C:\x.ini"]
                .map(OsString::from)
                .to_vec()
        );
    }

    #[test]
    fn an_executable_in_a_profile_is_warned_about() {
        let e = env();
        assert!(
            exe_location_warning(Path::new(r"F:\Users\admin\Downloads\mailroot.exe"), &e)
                .unwrap()
                .contains(r"F:\Program Files\mailroot\mailroot.exe")
        );
        assert_eq!(
            exe_location_warning(Path::new(r"F:\Program Files\mailroot\mailroot.exe"), &e),
            None
        );
    }

    #[test]
    fn the_event_source_is_registered_under_the_application_log() {
        assert_eq!(
            event_source_key("mailroot-2"),
            r"SYSTEM\CurrentControlSet\Services\EventLog\Application\mailroot-2"
        );
        assert!(EVENT_MESSAGE_FILE.ends_with(r"\System32\EventCreate.exe"));
    }

    #[test]
    fn events_by_level_and_origin() {
        assert_eq!(
            event(Level::Info, "started", None),
            Event {
                id: 1,
                level: Level::Info,
                text: "started".into()
            }
        );
        assert_eq!(event(Level::Warning, "w", None).id, 2);
        assert_eq!(event(Level::Error, "a\nb", None).text, "a\r\nb");
        let o = Origin {
            file: PathBuf::from(r"C:\ProgramData\mailroot\smtpsvc.ini"),
            line: Some(12),
            key: Some("MaxMessageSize".into()),
        };
        let e = event(Level::Error, "`2MB` is not a number", Some(&o));
        assert_eq!(e.id, 13);
        assert_eq!(
            e.text,
            "C:\\ProgramData\\mailroot\\smtpsvc.ini:12: MaxMessageSize: `2MB` is not a number\r\n\
             \r\n\
             File: C:\\ProgramData\\mailroot\\smtpsvc.ini\r\n\
             Line: 12\r\n\
             Key: MaxMessageSize"
        );
        let whole_file = Origin {
            file: PathBuf::from(r"C:\x.ini"),
            line: None,
            key: None,
        };
        let e = event(Level::Warning, "cannot read: not found", Some(&whole_file));
        assert_eq!(e.id, 12);
        assert_eq!(
            e.text,
            "C:\\x.ini: cannot read: not found\r\n\r\nFile: C:\\x.ini"
        );
        let long = "x".repeat(MAX_EVENT_CHARS + 10);
        assert_eq!(
            event(Level::Info, &long, None).text.chars().count(),
            MAX_EVENT_CHARS + 1
        );
    }

    #[test]
    fn a_failed_start_names_file_line_and_key() {
        let f = Failure::config(
            Path::new(r"C:\ProgramData\mailroot\smtpsvc.ini"),
            Some(7),
            Some("ServerBindings"),
            "`:99999` is not a port",
        );
        assert_eq!(f.exit_code, EXIT_CONFIG);
        assert_eq!(
            f.to_string(),
            r"C:\ProgramData\mailroot\smtpsvc.ini:7: ServerBindings: `:99999` is not a port"
        );
        let e = start_failure_event("mailroot", &f);
        assert_eq!(e.id, 13);
        assert_eq!(e.level, Level::Error);
        assert!(e.text.starts_with(
            "The service mailroot did not start (exit code 2): its configuration has an error.\r\n\r\n\
             C:\\ProgramData\\mailroot\\smtpsvc.ini:7: ServerBindings: `:99999` is not a port\r\n"
        ));
        assert!(e.text.contains("Line: 7\r\nKey: ServerBindings"));
        let e = start_failure_event("m2", &Failure::start("cannot bind 0.0.0.0:25: in use"));
        assert_eq!(e.id, 3);
        assert_eq!(
            e.text,
            "The service m2 did not start (exit code 1): an error.\r\n\r\n\
             cannot bind 0.0.0.0:25: in use"
        );
    }

    #[test]
    fn the_scm_hears_checkpoints_and_wait_hints() {
        let mut t = ScmTracker::default();
        let r = t.update(Progress::Starting).unwrap();
        assert_eq!(
            (r.state, r.checkpoint, r.wait_hint, r.accepts_controls),
            (ScmState::StartPending, 1, START_WAIT_HINT, false)
        );
        assert_eq!(t.update(Progress::Starting).unwrap().checkpoint, 2);
        let r = t.update(Progress::Running).unwrap();
        assert_eq!(
            (r.state, r.checkpoint, r.wait_hint, r.accepts_controls),
            (ScmState::Running, 0, Duration::ZERO, true)
        );
        assert_eq!(t.update(Progress::Running), None);
        assert_eq!(t.update(Progress::Starting), None);
        let r = t.stop_requested();
        assert_eq!(
            (r.state, r.checkpoint, r.wait_hint, r.accepts_controls),
            (ScmState::StopPending, 1, STOP_WAIT_HINT, false)
        );
        let stopping = |left| Progress::Stopping {
            sessions_left: 3,
            grace_left: Duration::from_secs(left),
        };
        let r = t.update(stopping(10)).unwrap();
        assert_eq!(
            (r.state, r.checkpoint, r.wait_hint),
            (ScmState::StopPending, 2, Duration::from_secs(15))
        );
        assert_eq!(t.update(stopping(4)).unwrap().checkpoint, 3);
        // Nothing goes back to running once a stop began.
        assert_eq!(t.update(Progress::Running), None);
        assert_eq!(t.update(Progress::Starting), None);
        // A stop before the server reported running (the SCM does not send one, but a failing
        // start may report stopping).
        let mut t = ScmTracker::default();
        t.update(Progress::Starting);
        let r = t.update(stopping(0)).unwrap();
        assert_eq!((r.checkpoint, r.wait_hint), (1, STOP_SLACK));
    }

    #[test]
    fn the_limiter_keeps_the_event_log_readable() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        for _ in 0..EVENTS_PER_MINUTE {
            assert_eq!(l.admit(t0), Admit::Send { suppressed: 0 });
        }
        assert_eq!(l.admit(t0 + Duration::from_secs(1)), Admit::Drop);
        assert_eq!(l.admit(t0 + Duration::from_secs(59)), Admit::Drop);
        assert_eq!(
            l.admit(t0 + Duration::from_secs(60)),
            Admit::Send { suppressed: 2 }
        );
        assert_eq!(
            l.admit(t0 + Duration::from_secs(61)),
            Admit::Send { suppressed: 0 }
        );
    }

    #[test]
    fn the_tee_sends_warnings_and_errors_and_passes_everything_on() {
        use log::Log;
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Count(Arc<AtomicUsize>);
        impl log::Log for Count {
            fn enabled(&self, m: &log::Metadata<'_>) -> bool {
                m.level() <= log::Level::Info
            }
            fn log(&self, r: &log::Record<'_>) {
                if self.enabled(r.metadata()) {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
            fn flush(&self) {}
        }
        let inner = Arc::new(AtomicUsize::new(0));
        let got: Arc<Mutex<Vec<Event>>> = Arc::default();
        let sink = got.clone();
        let tee = EventTee::new(
            Box::new(Count(inner.clone())),
            Box::new(move |e: &Event| sink.lock().unwrap().push(e.clone())),
        );
        let rec = |level, target: &'static str, msg: &'static str| {
            tee.log(
                &log::Record::builder()
                    .level(level)
                    .target(target)
                    .args(format_args!("{msg}"))
                    .build(),
            )
        };
        rec(log::Level::Info, "mailroot", "listening");
        rec(log::Level::Debug, "mailroot", "detail");
        rec(log::Level::Warn, "mailroot", "slow");
        rec(log::Level::Error, "mailroot", "broken");
        rec(log::Level::Info, EVENT_LOG_TARGET, "reloaded");
        let got = got.lock().unwrap();
        assert_eq!(
            got.iter()
                .map(|e| (e.id, e.text.as_str()))
                .collect::<Vec<_>>(),
            [(2, "slow"), (3, "broken"), (1, "reloaded")]
        );
        assert_eq!(inner.load(Ordering::SeqCst), 4);
        assert!(tee.enabled(&log::Metadata::builder().level(log::Level::Warn).build()));
        assert!(
            !tee.enabled(
                &log::Metadata::builder()
                    .level(log::Level::Debug)
                    .target("x")
                    .build()
            )
        );
    }

    #[test]
    fn status_reports_reach_their_listener() {
        let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
        let s = seen.clone();
        let status = Status::new(move |p| s.lock().unwrap().push(p));
        let clone = status.clone();
        std::thread::spawn(move || clone.report(Progress::Running))
            .join()
            .unwrap();
        status.report(Progress::Starting);
        Status::none().report(Progress::Running);
        assert_eq!(
            *seen.lock().unwrap(),
            [Progress::Running, Progress::Starting]
        );
    }

    #[cfg(not(windows))]
    #[test]
    fn elsewhere_the_entry_points_say_windows_only() {
        let hooks = Hooks {
            inspect: Box::new(|_| Ok(Needs::default())),
            run: Box::new(|_| Ok(())),
        };
        let e = execute(
            ServiceCommand::Status {
                name: "mailroot".into(),
            },
            hooks,
        )
        .unwrap_err();
        assert!(e.contains("systemd"), "{e}");
        assert!(reload("mailroot").unwrap_err().contains("Windows"));
        assert!(reload("a b").unwrap_err().contains("not a valid"));
    }
}
