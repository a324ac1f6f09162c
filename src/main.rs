//! The `mailroot` command: `serve` (the default), `check`, `--version`, `--help`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use mailroot::config::{Config, Outbound, Source, keys};
use mailroot::os::Signal;
use mailroot::server::{Server, control};

const USAGE: &str = "\
mailroot - an SMTP relay that replaces the IIS 6.0 SMTP Service

Usage:
  mailroot [serve] [--config PATH]   run the SMTP virtual servers
  mailroot check [--config PATH]     validate the configuration and print the effective settings
                                     (and which changed keys a running server needs a restart for)
  mailroot reload [--config PATH]    have the running server apply the configuration now, without
                                     dropping a session (SIGHUP does the same)
  mailroot user add NAME [--config PATH]   add a user for AUTH (or change its password); the
                                           password is read from standard input
  mailroot user del NAME [--config PATH]   remove a user
  mailroot user list [--config PATH]       list the users
  mailroot --version | --help

PATH defaults to conf/smtpsvc.ini when that file exists; without any configuration file mailroot runs
on the built-in IIS defaults, with its mailroot beside the executable. RUST_LOG=debug shows protocol
detail in the diagnostic log (standard error).
";

/// How long sessions in flight may take to finish after SIGINT/SIGTERM (or a service stop).
const GRACE: Duration = Duration::from_secs(10);

enum Cmd {
    Serve,
    Check,
    Reload,
    User(String, Option<String>),
}

fn main() -> ExitCode {
    mailroot::os::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cmd = None;
    let mut config: Option<PathBuf> = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--version" | "-V" => {
                println!("mailroot {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "--help" | "-h" | "help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "serve" if cmd.is_none() => cmd = Some(Cmd::Serve),
            "check" if cmd.is_none() => cmd = Some(Cmd::Check),
            "reload" if cmd.is_none() => cmd = Some(Cmd::Reload),
            "user" if cmd.is_none() => {
                let action = args.get(i + 1).cloned().unwrap_or_default();
                let needs_name = action == "add" || action == "del";
                let name = if needs_name {
                    args.get(i + 2).cloned()
                } else {
                    None
                };
                match action.as_str() {
                    "add" | "del" if name.as_deref().is_none_or(|n| n.starts_with("--")) => {
                        return usage_error(&format!("user {action} needs a user name"));
                    }
                    "add" | "del" | "list" => {}
                    _ => return usage_error("user needs add NAME, del NAME or list"),
                }
                i += if needs_name { 2 } else { 1 };
                cmd = Some(Cmd::User(action, name));
            }
            "--config" | "-c" => {
                i += 1;
                match args.get(i) {
                    Some(p) => config = Some(PathBuf::from(p)),
                    None => return usage_error("--config needs a file"),
                }
            }
            a if a.starts_with("--config=") => {
                config = Some(PathBuf::from(&a["--config=".len()..]))
            }
            other => return usage_error(&format!("unknown argument `{other}`")),
        }
        i += 1;
    }
    match cmd.unwrap_or(Cmd::Serve) {
        Cmd::Serve => serve(config.as_deref()),
        Cmd::Check => check(config.as_deref()),
        Cmd::Reload => reload_command(config.as_deref()),
        Cmd::User(action, name) => user(config.as_deref(), &action, name.as_deref()),
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("mailroot: {msg}\n\n{USAGE}");
    ExitCode::from(2)
}

/// The configuration named on the command line, else conf/smtpsvc.ini, else the built-in defaults.
fn load(explicit: Option<&Path>) -> Result<Config, String> {
    let default = Path::new("conf").join("smtpsvc.ini");
    let path = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None if default.is_file() => Some(default),
        None => None,
    };
    match path {
        Some(p) => Config::load(&p).map_err(|e| e.to_string()),
        None => {
            let base = std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from("."));
            Config::defaults(&base).map_err(|e| e.to_string())
        }
    }
}

fn describe(source: &Source) -> String {
    match source {
        Source::File(p) => format!("configuration {}", p.display()),
        Source::Defaults(base) => format!(
            "no configuration file: running on built-in IIS defaults (relative paths under {})",
            base.display()
        ),
    }
}

fn check(explicit: Option<&Path>) -> ExitCode {
    let config = match load(explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    println!("; {}: valid", describe(&config.source));
    for k in control::restart_needed(&config) {
        println!("; needs a restart (a reload keeps the running value): {k}");
    }
    println!("; effective settings (defaults included); ';' comments give each key's meaning");
    for vs in &config.servers {
        println!("\n[SmtpSvc/{}]", vs.instance);
        print_keys(vs.effective(), keys::server_key, &vs.delivery.out);
        for d in &vs.domains {
            println!("\n[SmtpSvc/{}/Domain/{}]", vs.instance, d.pattern);
            print_keys(d.effective(), keys::domain_key, &d.out);
        }
    }
    ExitCode::SUCCESS
}

/// Prints `key = value` lines, each after a comment with the key's meaning (and the preset it
/// comes from, when it does).
fn print_keys(
    list: Vec<(&'static str, String)>,
    table: fn(&str) -> Option<&'static keys::KeyDef>,
    out: &Outbound,
) {
    for (key, value) in list {
        let meaning = table(key).map(|k| k.meaning).unwrap_or("");
        match out.provider.filter(|_| out.from_preset.contains(&key)) {
            Some(p) => println!("; {meaning} ({} preset)", p.as_str()),
            None => println!("; {meaning}"),
        }
        println!("{key} = {value}");
    }
}

fn serve(explicit: Option<&Path>) -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let config = match load(explicit) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{e}");
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    log::info!(
        "mailroot {} starting; {}",
        env!("CARGO_PKG_VERSION"),
        describe(&config.source)
    );
    let mut server = match Server::start(&config) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    for vs in &config.servers {
        log::info!(
            "SMTPSVC{}: {} (default domain {}), mailroot {}",
            vs.instance,
            vs.fqdn,
            vs.default_domain,
            vs.dirs.mailroot.display()
        );
    }
    for (instance, addr) in server.local_addrs() {
        log::info!("SMTPSVC{instance}: listening on {addr}");
    }
    let settings = server.settings();
    if let Err(e) = control::started(&settings) {
        log::warn!(
            "cannot write the pid file in the mailroot: {e} (`mailroot reload` will not find this process)"
        );
    }
    let (tx, rx) = crossbeam_channel::bounded::<Signal>(8);
    let stopper = server.stopper();
    if let Err(e) = mailroot::os::on_signal(move |s| {
        if s == Signal::Stop {
            stopper.stop();
        }
        let _ = tx.try_send(s);
    }) {
        log::error!("cannot install the signal handler: {e}");
        return ExitCode::from(1);
    }
    while let Ok(Signal::Reload) = rx.recv() {
        reload(&mut server, explicit);
    }
    log::info!(
        "shutting down: no new connections; sessions in flight get {}s to finish",
        GRACE.as_secs()
    );
    let settings = server.settings();
    let left = server.shutdown(GRACE);
    control::stopped(&settings);
    if left > 0 {
        log::warn!(
            "{left} session(s) still open after {}s; closing them",
            GRACE.as_secs()
        );
    }
    log::info!("stopped");
    ExitCode::SUCCESS
}

/// Reads the configuration again and applies it; an error keeps the running one.
fn reload(server: &mut Server, explicit: Option<&Path>) {
    let config = match load(explicit) {
        Ok(c) => c,
        Err(e) => {
            log::error!("reload refused, the running configuration stays: {e}");
            return;
        }
    };
    match server.reload(&config) {
        Ok(restart) => {
            for k in &restart {
                log::warn!(
                    "reload: {k} changed, but only a restart applies it; the running value stays"
                );
            }
            log::info!("reloaded {}", describe(&config.source));
            if let Err(e) = control::running(&server.settings()) {
                log::warn!("cannot record the running settings: {e}");
            }
        }
        Err(e) => log::error!("reload refused, the running configuration stays: {e}"),
    }
}

/// `mailroot reload`: asks the running server to read its configuration again.
fn reload_command(explicit: Option<&Path>) -> ExitCode {
    let config = match load(explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\nnot reloading: the running server would refuse this configuration");
            return ExitCode::FAILURE;
        }
    };
    let Some(vs) = config.servers.first() else {
        return ExitCode::FAILURE;
    };
    for k in control::restart_needed(&config) {
        println!("needs a restart (a reload keeps the running value): {k}");
    }
    match control::request_reload(vs, Duration::from_secs(10)) {
        Ok(m) => {
            println!("{m}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `mailroot user add|del|list`: edits the first virtual server's UsersFile.
fn user(explicit: Option<&Path>, action: &str, name: Option<&str>) -> ExitCode {
    use mailroot::policy::users;
    let config = match load(explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(vs) = config.servers.first() else {
        return ExitCode::FAILURE;
    };
    let path = &vs.security.users_file;
    let mut list = match users::load(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match (action, name) {
        ("list", _) => {
            for (n, _) in &list {
                println!("{n}");
            }
            return ExitCode::SUCCESS;
        }
        ("del", Some(n)) => {
            let before = list.len();
            list.retain(|(u, _)| u != n);
            if list.len() == before {
                eprintln!("{}: no user {n}", path.display());
                return ExitCode::FAILURE;
            }
            users::save(path, &list)
        }
        ("add", Some(n)) => {
            if !users::valid_name(n) {
                eprintln!(
                    "`{n}` is not a valid user name (printable characters, no colon or space)"
                );
                return ExitCode::FAILURE;
            }
            let password = match read_password(n) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            match users::hash(&password) {
                Ok(h) => {
                    list.retain(|(u, _)| u != n);
                    list.push((n.to_string(), h));
                    users::save(path, &list)
                }
                Err(e) => Err(e),
            }
        }
        _ => return usage_error("user needs add NAME, del NAME or list"),
    };
    match result {
        Ok(()) => {
            println!("{}: {action} {}: done", path.display(), name.unwrap_or(""));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The password: the first line of standard input, or typed twice at a prompt on a terminal.
fn read_password(name: &str) -> Result<String, String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let read_line = || -> Result<String, String> {
        let mut s = String::new();
        stdin
            .lock()
            .read_line(&mut s)
            .map_err(|e| format!("cannot read the password: {e}"))?;
        Ok(s.trim_end_matches(['\r', '\n']).to_string())
    };
    let password = if stdin.is_terminal() {
        eprint!("Password for {name} (shown as you type): ");
        let _ = std::io::stderr().flush();
        let a = read_line()?;
        eprint!("Again: ");
        let _ = std::io::stderr().flush();
        if read_line()? != a {
            return Err("the passwords differ".into());
        }
        a
    } else {
        read_line()?
    };
    if password.is_empty() {
        return Err("an empty password is not allowed".into());
    }
    Ok(password)
}
