//! The `mailroot` command: `serve` (the default), `check`, `reload`, `user`, `service`, `queue`,
//! `badmail`, `import-iis`, `sendmail` (also when invoked as `sendmail`; `mailq` lists the queue),
//! `--version`, `--help`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use mailroot::config::ConfigError;
use mailroot::config::{Config, Outbound, Source, keys};
use mailroot::logging::server::Target as LogTarget;
use mailroot::os::service::{
    self as svc, Failure, Hooks, Needs, Progress, Service, ServiceCommand, ServiceEvent,
};
use mailroot::os::{ServiceState, Signal};
use mailroot::server::{Server, control};

const USAGE: &str = "\
mailroot - an SMTP relay that replaces the IIS 6.0 SMTP Service

Usage:
  mailroot [serve] [--config PATH]   run the SMTP virtual servers
  mailroot check [--config PATH]     validate the configuration and print the effective settings
                                     (and which changed keys a running server needs a restart for)
  mailroot reload [--config PATH]    have the running server apply the configuration now, without
                                     dropping a session (SIGHUP does the same)
  mailroot reload --name NAME        the same for the Windows service NAME
  mailroot user add NAME [--config PATH]   add a user for AUTH (or change its password); the
                                           password is read from standard input
  mailroot user del NAME [--config PATH]   remove a user
  mailroot user list [--config PATH]       list the users
  mailroot sendmail [-t] [-i] [-f SENDER] [RECIPIENT...]
                                     read a message from standard input into the Pickup folder
                                     (also as `sendmail`; `mailroot sendmail --help` for more)
  mailroot --version | --help

PATH defaults to conf/smtpsvc.ini when that file exists; without any configuration file mailroot runs
on the built-in IIS defaults, with its mailroot beside the executable. RUST_LOG=debug shows protocol
detail in the diagnostic log (standard error).
";

/// The help text, with the Windows service's lines.
fn usage() -> String {
    USAGE.replacen(
        "  mailroot --version | --help\n",
        &format!(
            "{}  {}{}  mailroot --version | --help\n",
            mailroot::admin::USAGE,
            svc::USAGE,
            mailroot::import_iis::USAGE
        ),
        1,
    )
}

/// How long sessions in flight may take to finish after SIGINT/SIGTERM (or a service stop).
const GRACE: Duration = Duration::from_secs(10);

enum Cmd {
    Serve,
    Check,
    Reload,
    Service(ServiceCommand),
    User(String, Option<String>),
    /// `queue …` / `badmail …`: the group and the rest of the line (without --config).
    Admin(String, Vec<String>),
    ImportIis(mailroot::import_iis::Args),
}

fn main() -> ExitCode {
    mailroot::os::tune_allocator();
    // Callers that know only `sendmail` and `mailq` reach this binary through links of those names.
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match argv.first().map(|a| program_name(a)).as_deref() {
        Some("sendmail") => return sendmail(&argv[1..]),
        Some("mailq") => return mailq(&argv[1..]),
        _ => {}
    }
    if argv.get(1).is_some_and(|a| a == "sendmail") {
        return sendmail(&argv[2..]);
    }
    let args: Vec<String> = argv.into_iter().skip(1).collect();
    let mut cmd = None;
    let mut config: Option<PathBuf> = None;
    let mut name: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--version" | "-V" => {
                println!("mailroot {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "--help" | "-h" | "help" => {
                print!("{}", usage());
                return ExitCode::SUCCESS;
            }
            "serve" if cmd.is_none() => cmd = Some(Cmd::Serve),
            "check" if cmd.is_none() => cmd = Some(Cmd::Check),
            "reload" if cmd.is_none() => cmd = Some(Cmd::Reload),
            "service" if cmd.is_none() => match svc::parse_args(&args[i + 1..]) {
                Ok(c) => {
                    cmd = Some(Cmd::Service(c));
                    break;
                }
                Err(e) => return usage_error(&e),
            },
            "import-iis" if cmd.is_none() => match mailroot::import_iis::parse_args(&args[i + 1..])
            {
                Ok(a) => {
                    cmd = Some(Cmd::ImportIis(a));
                    break;
                }
                Err(e) => return usage_error(&e),
            },
            "--name" => {
                i += 1;
                match args.get(i) {
                    Some(n) => name = Some(n.clone()),
                    None => return usage_error("--name needs a service name"),
                }
            }
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
            group @ ("queue" | "badmail") if cmd.is_none() => {
                // The rest is the group's own, but for --config.
                let mut rest = Vec::new();
                let mut j = i + 1;
                while j < args.len() {
                    match config_arg(&args, &mut j) {
                        Some(Ok(p)) => config = Some(p),
                        Some(Err(e)) => return usage_error(e),
                        None => rest.push(args[j].clone()),
                    }
                    j += 1;
                }
                cmd = Some(Cmd::Admin(group.to_string(), rest));
                break;
            }
            a if a == "--config" || a == "-c" || a.starts_with("--config=") => {
                match config_arg(&args, &mut i) {
                    Some(Ok(p)) => config = Some(p),
                    Some(Err(e)) => return usage_error(e),
                    None => {}
                }
            }
            other => return usage_error(&format!("unknown argument `{other}`")),
        }
        i += 1;
    }
    match cmd.unwrap_or(Cmd::Serve) {
        Cmd::Serve => serve(config.as_deref()),
        Cmd::Check => check(config.as_deref()),
        Cmd::Reload => reload_command(config.as_deref(), name.as_deref()),
        Cmd::Service(c) => service(c),
        Cmd::User(action, name) => user(config.as_deref(), &action, name.as_deref()),
        Cmd::ImportIis(a) => ExitCode::from(mailroot::import_iis::command(&a)),
        Cmd::Admin(group, rest) => admin(config.as_deref(), &group, &rest),
    }
}

/// The file name of argv[0] without `.exe`, lower-case: `sendmail` for `/usr/sbin/sendmail`.
fn program_name(argv0: &str) -> String {
    let name = argv0.rsplit(['/', '\\']).next().unwrap_or(argv0);
    let lower = name.to_ascii_lowercase();
    lower.strip_suffix(".exe").unwrap_or(&lower).to_string()
}

/// `mailroot sendmail …`, or the binary invoked as `sendmail`: the message on standard input into
/// the Pickup folder (`mailroot::sendmail`). Silent on success, as every sendmail.
fn sendmail(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help") {
        print!("{}", mailroot::sendmail::USAGE);
        return ExitCode::SUCCESS;
    }
    let result = mailroot::sendmail::args::parse(args).and_then(|inv| {
        if inv.smtp {
            let (mut input, mut output) = (std::io::stdin().lock(), std::io::stdout().lock());
            mailroot::sendmail::run_smtp(&inv, &mut input, &mut output).map(|_| ())
        } else {
            mailroot::sendmail::run(&inv, &mut std::io::stdin().lock()).map(|_| ())
        }
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailroot sendmail: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The binary invoked as `mailq`: `mailroot queue list` on the configuration `sendmail` would use.
fn mailq(args: &[String]) -> ExitCode {
    let config = match mailroot::sendmail::locate(None) {
        mailroot::sendmail::Located::File(p) => Some(p),
        _ => None,
    };
    let mut rest = vec!["list".to_string()];
    rest.extend(args.iter().cloned());
    admin(config.as_deref(), "queue", &rest)
}

/// `mailroot queue …` and `mailroot badmail …` (see `mailroot::admin`).
fn admin(explicit: Option<&Path>, group: &str, args: &[String]) -> ExitCode {
    let (cmd, instance) = match mailroot::admin::parse(group, args) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let config = match load(explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match mailroot::admin::run(&config, &cmd, instance) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("mailroot {group}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--config PATH`, `-c PATH` or `--config=PATH` at `args[*i]` (moving `i` past a separate PATH);
/// `None` when `args[*i]` is something else.
fn config_arg(args: &[String], i: &mut usize) -> Option<Result<PathBuf, &'static str>> {
    let a = args.get(*i)?;
    if let Some(p) = a.strip_prefix("--config=") {
        return Some(Ok(PathBuf::from(p)));
    }
    if a != "--config" && a != "-c" {
        return None;
    }
    *i += 1;
    Some(
        args.get(*i)
            .map(PathBuf::from)
            .ok_or("--config needs a file"),
    )
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("mailroot: {msg}\n\n{}", usage());
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
    // Written at once and without panicking when the reader goes away (`mailroot check | head`).
    let mut text = format!("; {}: valid\n", describe(&config.source));
    for k in control::restart_needed(&config) {
        text.push_str(&format!(
            "; needs a restart (a reload keeps the running value): {k}\n"
        ));
    }
    text.push_str(
        "; effective settings (defaults included); ';' comments give each key's meaning\n",
    );
    for vs in &config.servers {
        text.push_str(&format!("\n[SmtpSvc/{}]\n", vs.instance));
        print_keys(
            &mut text,
            vs.effective(),
            keys::server_key,
            &vs.delivery.out,
        );
        for d in &vs.domains {
            text.push_str(&format!(
                "\n[SmtpSvc/{}/Domain/{}]\n",
                vs.instance, d.pattern
            ));
            print_keys(&mut text, d.effective(), keys::domain_key, &d.out);
        }
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    ExitCode::SUCCESS
}

/// Prints `key = value` lines, each after a comment with the key's meaning (and the preset it
/// comes from, when it does).
fn print_keys(
    text: &mut String,
    list: Vec<(&'static str, String)>,
    table: fn(&str) -> Option<&'static keys::KeyDef>,
    out: &Outbound,
) {
    for (key, value) in list {
        let meaning = table(key).map(|k| k.meaning).unwrap_or("");
        match out.provider.filter(|_| out.from_preset.contains(&key)) {
            Some(p) => text.push_str(&format!("; {meaning} ({} preset)\n", p.as_str())),
            None => text.push_str(&format!("; {meaning}\n")),
        }
        text.push_str(&format!("{key} = {value}\n"));
    }
}

fn serve(explicit: Option<&Path>) -> ExitCode {
    let config = match load(explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let target = match config
        .servers
        .first()
        .and_then(|vs| vs.log.server_log.as_deref())
    {
        Some(file) => LogTarget::File(file),
        None if mailroot::os::under_journald() => LogTarget::Journal,
        None => LogTarget::Stderr,
    };
    if let Err(e) = mailroot::logging::server::init(target) {
        eprintln!("cannot open the server log: {e}");
        return ExitCode::from(2);
    }
    log::info!(
        "mailroot {} starting; {}",
        env!("CARGO_PKG_VERSION"),
        describe(&config.source)
    );
    // Signals are caught before anything listens: a SIGHUP right after READY=1 must reload, not
    // kill the process (SIGHUP's default). The main loop below takes them in order.
    let (tx, rx) = crossbeam_channel::bounded::<Signal>(8);
    if let Err(e) = mailroot::os::on_signal(move |s| {
        let _ = tx.try_send(s);
    }) {
        log::error!("cannot install the signal handler: {e}");
        return ExitCode::from(1);
    }
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
    mailroot::os::service_state(ServiceState::Ready);
    if let Err(e) = control::started(&settings) {
        log::warn!(
            "cannot write the pid file in the mailroot: {e} (`mailroot reload` will not find this process)"
        );
    }
    while let Ok(Signal::Reload) = rx.recv() {
        mailroot::os::service_state(ServiceState::Reloading);
        reload(&mut server, explicit);
        mailroot::os::service_state(ServiceState::Ready);
    }
    mailroot::os::service_state(ServiceState::Stopping);
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

/// `mailroot reload`: asks the running server to read its configuration again. With `--name`, the
/// Windows service of that name (through the service control manager).
fn reload_command(explicit: Option<&Path>, name: Option<&str>) -> ExitCode {
    if let Some(name) = name {
        return match svc::reload(name) {
            Ok(()) => {
                println!("asked the service {name} to reload; its log says how it went");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mailroot: {e}");
                ExitCode::FAILURE
            }
        };
    }
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

/// `mailroot service …`: the Windows service (install, uninstall, start, stop, status, and the run
/// the service control manager starts).
fn service(command: ServiceCommand) -> ExitCode {
    let hooks = Hooks {
        inspect: Box::new(service_needs),
        run: Box::new(run_service),
    };
    match svc::execute(command, hooks) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("mailroot: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_failure(e: ConfigError) -> Failure {
    Failure::config(&e.file, e.line, e.key.as_deref(), e.message)
}

/// The folders the service account must write and read for `path`'s configuration.
fn service_needs(path: &Path) -> Result<Needs, Failure> {
    let config = Config::load(path).map_err(config_failure)?;
    let mut n = Needs::default();
    let parent = |p: &Path| p.parent().map(Path::to_path_buf);
    for vs in &config.servers {
        let d = &vs.dirs;
        n.write.extend(
            [
                &d.mailroot,
                &d.pickup,
                &d.queue,
                &d.badmail,
                &d.drop,
                &d.sort_temp,
            ]
            .map(|p| p.to_path_buf()),
        );
        if vs.log.enabled {
            n.write
                .push(vs.log.directory.join(format!("SMTPSVC{}", vs.instance)));
        }
        n.write
            .extend(vs.log.server_log.as_deref().and_then(parent));
        for (cert, key) in vs
            .security
            .tls_files
            .iter()
            .chain(vs.security.tls_ecdsa_files.iter())
        {
            n.read.extend(parent(cert));
            n.read.extend(parent(key));
        }
        n.read.extend(parent(&vs.security.users_file));
        for out in std::iter::once(&vs.delivery.out).chain(vs.domains.iter().map(|d| &d.out)) {
            for (key, file) in &out.files {
                if *key == "OAuthRefreshTokenFile" {
                    n.write.extend(parent(file))
                } else {
                    n.read.extend(parent(file))
                }
            }
        }
    }
    Ok(n)
}

/// The service's run: the server log to ServerLogFile (a service has no console) with warnings and
/// errors copied to the Event Log; stop and reload come from the service control manager.
fn run_service(s: Service) -> Result<(), Failure> {
    let config = Config::load(&s.config).map_err(config_failure)?;
    let file = config
        .servers
        .first()
        .and_then(|vs| vs.log.server_log.clone());
    let target = match &file {
        Some(f) => LogTarget::File(f),
        None => LogTarget::Stderr,
    };
    let logger = mailroot::logging::server::build(target)
        .map_err(|e| Failure::start(format!("cannot open the server log: {e}")))?;
    let level = logger.filter().max(log::LevelFilter::Warn);
    log::set_boxed_logger(svc::event_log(&s.name, Box::new(logger)))
        .map_err(|e| Failure::start(e.to_string()))?;
    log::set_max_level(level);
    s.status.report(Progress::Starting);
    let mut server =
        Server::start(&config).map_err(|e| Failure::start(format!("cannot start: {e}")))?;
    if let Err(e) = control::started(&server.settings()) {
        log::warn!("cannot write the pid file in the mailroot: {e}");
    }
    s.status.report(Progress::Running);
    while let Ok(ServiceEvent::Reload) = s.events.recv() {
        reload(&mut server, Some(&s.config));
    }
    s.status.report(Progress::Stopping {
        sessions_left: server.active_sessions(),
        grace_left: GRACE,
    });
    let settings = server.settings();
    let left = server.shutdown(GRACE);
    control::stopped(&settings);
    if left > 0 {
        log::warn!(
            "{left} session(s) still open after {}s; closing them",
            GRACE.as_secs()
        );
    }
    Ok(())
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
