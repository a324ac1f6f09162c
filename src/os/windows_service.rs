//! The Windows side of `os::service`: the service control manager through the `windows-service`
//! crate, `icacls` at install, the Event Log through `windows-sys`. Everything that can be decided
//! without Windows (arguments, paths, grants, texts, states) is in `service`, tested everywhere;
//! this file only carries it out.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceSidType, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

use super::service::{
    self as svc, Environment, Event, EventTee, Failure, Hooks, Level, Progress, Right, RunHook,
    ScmReport, ScmState, ScmTracker, Service, ServiceCommand, ServiceEvent, Status,
};

// Win32 error codes met here.
const ERROR_ACCESS_DENIED: i32 = 5;
const ERROR_SERVICE_ALREADY_RUNNING: i32 = 1056;
const ERROR_SERVICE_DOES_NOT_EXIST: i32 = 1060;
const ERROR_SERVICE_CANNOT_ACCEPT_CTRL: i32 = 1061;
const ERROR_SERVICE_NOT_ACTIVE: i32 = 1062;
const ERROR_FAILED_SERVICE_CONTROLLER_CONNECT: i32 = 1063;
const ERROR_SERVICE_EXISTS: i32 = 1073;
const ERROR_SERVICE_MARKED_FOR_DELETE: i32 = 1072;

/// How long `service start` waits for RUNNING (more while the service reports progress).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Exit code the service reports when the server panicked.
const EXIT_PANIC: u32 = 70;

fn os_code(e: &windows_service::Error) -> Option<i32> {
    match e {
        windows_service::Error::Winapi(io) => io.raw_os_error(),
        _ => None,
    }
}

fn werr(e: windows_service::Error) -> String {
    match e {
        windows_service::Error::Winapi(io) if io.raw_os_error() == Some(ERROR_ACCESS_DENIED) => {
            format!("{io}: run it from an elevated prompt (Run as administrator)")
        }
        windows_service::Error::Winapi(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// Carries out a `service` command (see `service::execute`).
pub fn execute(command: ServiceCommand, hooks: Hooks) -> Result<u8, String> {
    match command {
        ServiceCommand::Install { name, config } => install(&name, config.as_deref(), &hooks),
        ServiceCommand::Uninstall { name } => uninstall(&name, &hooks),
        ServiceCommand::Start { name } => start(&name, &hooks),
        ServiceCommand::Stop { name } => stop(&name),
        ServiceCommand::Status { name } => status(&name),
        ServiceCommand::Run { name, config } => run(name, config, hooks.run),
    }
    .map(|code| code as u8)
}

fn manager(access: ServiceManagerAccess) -> Result<ServiceManager, String> {
    ServiceManager::local_computer(None::<&str>, access)
        .map_err(|e| format!("cannot open the service control manager: {}", werr(e)))
}

fn open(
    manager: &ServiceManager,
    name: &str,
    access: ServiceAccess,
) -> Result<windows_service::service::Service, String> {
    manager.open_service(name, access).map_err(|e| {
        if os_code(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) {
            format!(
                "there is no service named {name} (install it with `mailroot service install \
                 --name {name}`)"
            )
        } else {
            format!("cannot open the service {name}: {}", werr(e))
        }
    })
}

// ---------------------------------------------------------------------------------------------
// install, uninstall
// ---------------------------------------------------------------------------------------------

fn install(name: &str, config: Option<&Path>, hooks: &Hooks) -> Result<u32, String> {
    let env = Environment::from_process();
    let config = match config {
        Some(p) => Some(std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    let layout = svc::layout(name, config.as_deref(), &env);
    let sid = svc::service_sid(name);
    let exe = std::env::current_exe().map_err(|e| format!("cannot find mailroot.exe: {e}"))?;
    if let Some(w) = svc::exe_location_warning(&exe, &env) {
        println!("warning: {w}");
    }
    let manager = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
    if manager
        .open_service(name, ServiceAccess::QUERY_STATUS)
        .is_ok()
    {
        return Err(format!(
            "a service named {name} already exists: `mailroot service uninstall --name {name}` \
             first, or choose another --name"
        ));
    }
    warn_about_iis(&manager);

    // The configuration: written with the installed layout when there is none, and checked.
    let config_dir_existed = layout.config_dir.is_dir();
    if layout.config.exists() {
        println!("configuration {} (kept as it is)", layout.config.display());
    } else {
        fs::create_dir_all(&layout.config_dir)
            .map_err(|e| format!("cannot create {}: {e}", layout.config_dir.display()))?;
        fs::write(&layout.config, svc::install_ini(&layout))
            .map_err(|e| format!("cannot write {}: {e}", layout.config.display()))?;
        println!(
            "wrote {} (IIS defaults: port 25, mailroot {}, logs {})",
            layout.config.display(),
            layout.mailroot.display(),
            layout.log_dir.display()
        );
    }
    let needs = (hooks.inspect)(&layout.config).map_err(|f| {
        format!("{f}\nthe service was not installed: fix the configuration and run install again")
    })?;
    let grants = svc::plan_grants(&layout.config_dir, &needs);
    for g in &grants {
        if let Some(why) = svc::too_broad(&g.path, &env) {
            return Err(format!(
                "will not grant NT SERVICE\\{name} access to {}: {why}; give it a folder of its \
                 own in {}",
                g.path.display(),
                layout.config.display()
            ));
        }
    }
    // The folders it writes: an existing one (an IIS mailroot) is used as it is.
    let mut write: Vec<&PathBuf> = Vec::new();
    for dir in &needs.write {
        if !write
            .iter()
            .any(|w| svc::path_within(dir, w) && svc::path_within(w, dir))
        {
            write.push(dir);
        }
    }
    for dir in &write {
        let top = !write
            .iter()
            .any(|w| w != dir && svc::path_within(dir, w) && !svc::path_within(w, dir));
        if dir.is_dir() {
            if top {
                println!("using the existing folder {}", dir.display());
            }
        } else {
            fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            if top {
                println!("created {}", dir.display());
            }
        }
    }

    // The service, under its virtual account, without a password.
    let info = ServiceInfo {
        name: OsString::from(name),
        display_name: OsString::from(&layout.display_name),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe.clone(),
        launch_arguments: svc::run_arguments(name, &layout.config),
        dependencies: vec![],
        account_name: Some(OsString::from(&layout.account)),
        account_password: None,
    };
    let service = manager
        .create_service(
            &info,
            ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_STATUS | ServiceAccess::DELETE,
        )
        .map_err(|e| match os_code(&e) {
            Some(ERROR_SERVICE_EXISTS) => format!("a service named {name} already exists"),
            Some(ERROR_SERVICE_MARKED_FOR_DELETE) => format!(
                "the service {name} is being deleted: close the Services console (and any \
                 other program holding it) and try again"
            ),
            _ => format!("cannot create the service {name}: {}", werr(e)),
        })?;
    let restrict_config = layout.config_is_default || !config_dir_existed;
    // What only makes the service nicer to run is a warning when the system refuses it.
    let optional = |what: &str, r: windows_service::Result<()>| {
        if let Err(e) = r {
            println!("warning: cannot set the service's {what}: {}", werr(e));
        }
    };
    optional(
        "description",
        service.set_description(svc::description(name)),
    );
    optional(
        "SID type",
        service.set_config_service_sid_info(ServiceSidType::Unrestricted),
    );
    // Restart after a crash (not after a clean stop with an exit code, such as a bad
    // configuration, which a restart would not mend).
    let restart = |secs| ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(secs),
    };
    optional(
        "restart on failure",
        service
            .update_failure_actions(ServiceFailureActions {
                reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
                reboot_msg: None,
                command: None,
                actions: Some(vec![restart(10), restart(60), restart(300)]),
            })
            .and_then(|()| service.set_failure_actions_on_non_crash_failures(false)),
    );
    let finish = || -> Result<(), String> {
        register_event_source(name)?;
        println!("registered the Event Log source {name} (Windows Logs > Application)");
        if restrict_config {
            icacls(&svc::icacls_restrict(&layout.config_dir, &sid))?;
            println!(
                "{}: SYSTEM and Administrators full control, {} read, nobody else",
                layout.config_dir.display(),
                layout.account
            );
        }
        for g in &grants {
            if restrict_config && g.right == Right::Read && g.path == layout.config_dir {
                continue;
            }
            icacls(&svc::icacls_grant(&g.path, &sid, g.right, g.path.is_dir()))?;
            let right = match g.right {
                Right::Modify => "modify",
                Right::Read => "read",
            };
            println!("{}: {} may {right}", g.path.display(), layout.account);
        }
        Ok(())
    };
    if let Err(e) = finish() {
        let _ = service.delete();
        let _ = unregister_event_source(name);
        return Err(format!("{e}\nthe service was not installed"));
    }
    println!(
        "installed the service {name} ({}), account {} (no password), starts automatically\n\
         next: edit {}, then `mailroot service start --name {name}`",
        layout.display_name,
        layout.account,
        layout.config.display()
    );
    Ok(0)
}

/// The IIS SMTP Service would want the same port and the same mailroot.
fn warn_about_iis(manager: &ServiceManager) {
    let Ok(iis) = manager.open_service("SMTPSVC", ServiceAccess::QUERY_STATUS) else {
        return;
    };
    match iis.query_status() {
        Ok(s) if s.current_state != ServiceState::Stopped => println!(
            "warning: the IIS SMTP Service (SMTPSVC) is running; it listens on port 25 and \
             uses the same mailroot: stop and disable it before starting mailroot \
             (`sc stop SMTPSVC` and `sc config SMTPSVC start= disabled`)"
        ),
        Ok(_) => println!(
            "note: the IIS SMTP Service (SMTPSVC) is installed; keep it stopped and disabled"
        ),
        Err(_) => {}
    }
}

fn uninstall(name: &str, hooks: &Hooks) -> Result<u32, String> {
    let manager = manager(ServiceManagerAccess::CONNECT)?;
    let service = open(
        &manager,
        name,
        ServiceAccess::STOP
            | ServiceAccess::QUERY_STATUS
            | ServiceAccess::QUERY_CONFIG
            | ServiceAccess::DELETE,
    )?;
    let state = service.query_status().map_err(werr)?.current_state;
    if state != ServiceState::Stopped {
        if state != ServiceState::StopPending {
            service
                .stop()
                .map_err(|e| format!("cannot stop {name}: {}", werr(e)))?;
        }
        println!("stopping {name}");
        wait_for_stop(&service, name)?;
    }
    // Take back what install granted, while the account still exists.
    let config = service
        .query_config()
        .ok()
        .and_then(|c| svc::config_from_command_line(&c.executable_path.to_string_lossy()));
    let sid = svc::service_sid(name);
    if let Some(config) = &config {
        let dir = config.parent().unwrap_or(Path::new("."));
        match (hooks.inspect)(config) {
            Ok(needs) => {
                for g in svc::plan_grants(dir, &needs) {
                    if g.path.exists()
                        && let Err(e) = icacls(&svc::icacls_remove(&g.path, &sid))
                    {
                        println!("warning: {e}");
                    }
                }
            }
            Err(f) => println!(
                "warning: {f}\nthe grants to NT SERVICE\\{name} on its folders stay (harmless \
                 without the service; `icacls FOLDER /remove:g *{sid}` removes them)"
            ),
        }
    }
    service
        .delete()
        .map_err(|e| format!("cannot delete the service {name}: {}", werr(e)))?;
    if let Err(e) = unregister_event_source(name) {
        println!("warning: {e}");
    }
    println!(
        "removed the service {name} and its Event Log source; kept {}, the mailroot and the logs",
        config
            .as_deref()
            .map(|c| c.display().to_string())
            .unwrap_or_else(|| "its configuration".into())
    );
    Ok(0)
}

/// Runs `icacls` (from System32, not from PATH).
fn icacls(args: &[OsString]) -> Result<(), String> {
    let root = std::env::var_os("SystemRoot").unwrap_or_else(|| OsString::from(r"C:\Windows"));
    let exe = PathBuf::from(root).join("System32").join("icacls.exe");
    let shown = args
        .iter()
        .map(|a| {
            let a = a.to_string_lossy();
            if a.contains(' ') {
                format!("\"{a}\"")
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(&exe)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Err(format!("icacls {shown} failed: {}", text.trim()))
    }
}

// ---------------------------------------------------------------------------------------------
// start, stop, status, reload
// ---------------------------------------------------------------------------------------------

fn start(name: &str, hooks: &Hooks) -> Result<u32, String> {
    let manager = manager(ServiceManagerAccess::CONNECT)?;
    let service = open(
        &manager,
        name,
        ServiceAccess::START | ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
    )?;
    if service.query_status().map_err(werr)?.current_state == ServiceState::Running {
        println!("{name} is already running");
        return Ok(0);
    }
    // A configuration error is shown here, with file, line and key, rather than as an exit code.
    if let Some(config) = service
        .query_config()
        .ok()
        .and_then(|c| svc::config_from_command_line(&c.executable_path.to_string_lossy()))
    {
        (hooks.inspect)(&config).map_err(|f| {
            format!("{f}\nthe service {name} was not started: fix the configuration first")
        })?;
    }
    match service.start(&[] as &[&OsStr]) {
        Ok(()) => {}
        Err(e) if os_code(&e) == Some(ERROR_SERVICE_ALREADY_RUNNING) => {}
        Err(e) => return Err(format!("cannot start {name}: {}", werr(e))),
    }
    let mut deadline = Instant::now() + START_TIMEOUT;
    let mut checkpoint = 0;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let s = service.query_status().map_err(werr)?;
        match s.current_state {
            ServiceState::Running => {
                println!("{name} is running{}", pid(&s));
                return Ok(0);
            }
            ServiceState::Stopped => return Err(stopped_early(name, &s)),
            _ if s.checkpoint != checkpoint => {
                checkpoint = s.checkpoint;
                deadline = Instant::now() + s.wait_hint.max(START_TIMEOUT);
            }
            _ if Instant::now() > deadline => {
                return Err(format!(
                    "{name} did not report running in time (state {:?}); see the Event Log \
                     (Windows Logs > Application, source {name})",
                    s.current_state
                ));
            }
            _ => {}
        }
    }
}

fn pid(s: &ServiceStatus) -> String {
    s.process_id
        .filter(|p| *p != 0)
        .map(|p| format!(" (pid {p})"))
        .unwrap_or_default()
}

fn exit_meaning(code: u32) -> &'static str {
    match code {
        svc::EXIT_CONFIG => "a configuration error",
        svc::EXIT_START => "it could not start",
        EXIT_PANIC => "an internal error",
        _ => "an error",
    }
}

fn stopped_early(name: &str, s: &ServiceStatus) -> String {
    match s.exit_code {
        ServiceExitCode::ServiceSpecific(n) => format!(
            "{name} stopped while starting, exit code {n} ({}): the Event Log (Windows Logs > \
             Application, source {name}) says why",
            exit_meaning(n)
        ),
        ServiceExitCode::Win32(0) => format!("{name} stopped while starting"),
        ServiceExitCode::Win32(e) => format!(
            "{name} stopped while starting: {}",
            io::Error::from_raw_os_error(e as i32)
        ),
    }
}

fn stop(name: &str) -> Result<u32, String> {
    let manager = manager(ServiceManagerAccess::CONNECT)?;
    let service = open(
        &manager,
        name,
        ServiceAccess::STOP | ServiceAccess::QUERY_STATUS,
    )?;
    let state = service.query_status().map_err(werr)?.current_state;
    if state == ServiceState::Stopped {
        println!("{name} is not running");
        return Ok(0);
    }
    if state != ServiceState::StopPending {
        match service.stop() {
            Ok(_) => {}
            Err(e) if os_code(&e) == Some(ERROR_SERVICE_NOT_ACTIVE) => {
                println!("{name} is not running");
                return Ok(0);
            }
            Err(e) if os_code(&e) == Some(ERROR_SERVICE_CANNOT_ACCEPT_CTRL) => {
                return Err(format!(
                    "{name} cannot be stopped right now (it is starting); try again in a moment"
                ));
            }
            Err(e) => return Err(format!("cannot stop {name}: {}", werr(e))),
        }
    }
    println!("stopping {name}: no new connections; sessions in flight may finish");
    wait_for_stop(&service, name)?;
    Ok(0)
}

/// Waits for STOPPED while the service keeps reporting progress within its wait hints.
fn wait_for_stop(service: &windows_service::service::Service, name: &str) -> Result<(), String> {
    let mut checkpoint = u32::MAX;
    let mut deadline = Instant::now() + svc::STOP_WAIT_HINT;
    loop {
        let s = service.query_status().map_err(werr)?;
        if s.current_state == ServiceState::Stopped {
            println!("{name} stopped");
            return Ok(());
        }
        if s.checkpoint != checkpoint {
            checkpoint = s.checkpoint;
            deadline = Instant::now() + s.wait_hint.max(Duration::from_secs(5));
        } else if Instant::now() > deadline {
            return Err(format!(
                "{name} did not stop in time (state {:?}, checkpoint {})",
                s.current_state, s.checkpoint
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn status(name: &str) -> Result<u32, String> {
    let manager = manager(ServiceManagerAccess::CONNECT)?;
    let service = match manager.open_service(
        name,
        ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
    ) {
        Ok(s) => s,
        Err(e) if os_code(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) => {
            println!("{name}: not installed");
            return Ok(4);
        }
        Err(e) => return Err(format!("cannot open the service {name}: {}", werr(e))),
    };
    let s = service.query_status().map_err(werr)?;
    let state = match s.current_state {
        ServiceState::Running => "running",
        ServiceState::Stopped => "stopped",
        ServiceState::StartPending => "starting",
        ServiceState::StopPending => "stopping",
        ServiceState::Paused => "paused",
        ServiceState::PausePending => "pausing",
        ServiceState::ContinuePending => "continuing",
    };
    println!("{name}: {state}{}", pid(&s));
    if s.current_state == ServiceState::Stopped
        && let ServiceExitCode::ServiceSpecific(n) = s.exit_code
    {
        println!(
            "  last exit: code {n} ({}); see the Event Log (Application, source {name})",
            exit_meaning(n)
        );
    }
    if let Ok(c) = service.query_config() {
        println!("  display name: {}", c.display_name.to_string_lossy());
        if let Some(a) = &c.account_name {
            println!("  account: {}", a.to_string_lossy());
        }
        let start = match c.start_type {
            ServiceStartType::AutoStart => "automatic",
            ServiceStartType::OnDemand => "manual",
            ServiceStartType::Disabled => "disabled",
            _ => "at boot",
        };
        println!("  start: {start}");
        let line = c.executable_path.to_string_lossy();
        if let Some(config) = svc::config_from_command_line(&line) {
            println!("  configuration: {}", config.display());
        }
        println!("  command: {line}");
    }
    Ok(if s.current_state == ServiceState::Running {
        0
    } else {
        3
    })
}

/// Sends SERVICE_CONTROL_PARAMCHANGE to the running service `name`.
pub fn reload(name: &str) -> Result<(), String> {
    use windows_sys::Win32::System::Services::{
        ControlService, SERVICE_CONTROL_PARAMCHANGE, SERVICE_STATUS,
    };
    let manager = manager(ServiceManagerAccess::CONNECT)?;
    let service = open(
        &manager,
        name,
        ServiceAccess::PAUSE_CONTINUE | ServiceAccess::QUERY_STATUS,
    )?;
    // SAFETY: SERVICE_STATUS is plain data; zero is a valid value to be overwritten.
    let mut st: SERVICE_STATUS = unsafe { std::mem::zeroed() };
    // SAFETY: the handle is open for the lifetime of `service`; `st` outlives the call.
    let ok = unsafe { ControlService(service.raw_handle(), SERVICE_CONTROL_PARAMCHANGE, &mut st) };
    if ok != 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    Err(match e.raw_os_error() {
        Some(ERROR_SERVICE_NOT_ACTIVE) => format!("{name} is not running"),
        Some(ERROR_SERVICE_CANNOT_ACCEPT_CTRL) => {
            format!("{name} cannot reload right now (it is starting or stopping)")
        }
        Some(ERROR_ACCESS_DENIED) => {
            format!("{name}: {e}: run it from an elevated prompt (Run as administrator)")
        }
        _ => format!("cannot ask {name} to reload: {e}"),
    })
}

// ---------------------------------------------------------------------------------------------
// service run: the dispatcher and the service's main
// ---------------------------------------------------------------------------------------------

struct Pending {
    name: String,
    config: PathBuf,
    run: RunHook,
}

/// What the service's main takes: the dispatcher calls it on a thread of its own, with no way to
/// pass it anything but the service's start arguments.
static PENDING: Mutex<Option<Pending>> = Mutex::new(None);

define_windows_service!(ffi_service_main, service_main);

fn run(name: String, config: PathBuf, hook: RunHook) -> Result<u32, String> {
    *PENDING.lock().unwrap_or_else(|e| e.into_inner()) = Some(Pending {
        name: name.clone(),
        config,
        run: hook,
    });
    match service_dispatcher::start(&name, ffi_service_main) {
        Ok(()) => Ok(0),
        Err(e) if os_code(&e) == Some(ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) => Err(
            "`mailroot service run` is what the service control manager starts; start the \
             service with `mailroot service start`, or run in this console with \
             `mailroot serve --config PATH`"
                .into(),
        ),
        Err(e) => Err(format!(
            "cannot connect to the service control manager: {}",
            werr(e)
        )),
    }
}

fn service_main(_arguments: Vec<OsString>) {
    let Some(pending) = PENDING.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let source = EventSource::open(&pending.name).map(Arc::new);
    let name = pending.name.clone();
    if let Err(e) = run_service(pending, source.clone())
        && let Some(s) = &source
    {
        s.write(&svc::event(
            Level::Error,
            &format!("The service {name} could not run: {e}"),
            None,
        ));
    }
}

/// The SCM's side of the status: one tracker, one handle, reports in order.
struct Scm {
    handle: OnceLock<ServiceStatusHandle>,
    tracker: Mutex<ScmTracker>,
    was_running: AtomicBool,
    /// Where "running" is announced: the Event Log source and the text.
    announce: Option<(Arc<EventSource>, String)>,
}

impl Scm {
    fn report(&self, progress: Progress) {
        let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = t.update(progress) {
            self.set(r);
            if r.state == ScmState::Running
                && !self.was_running.swap(true, Ordering::SeqCst)
                && let Some((source, text)) = &self.announce
            {
                source.write(&svc::event(Level::Info, text, None));
            }
        }
    }

    fn stop_requested(&self) {
        let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        let r = t.stop_requested();
        self.set(r);
    }

    fn set(&self, r: ScmReport) {
        let current_state = match r.state {
            ScmState::StartPending => ServiceState::StartPending,
            ScmState::Running => ServiceState::Running,
            ScmState::StopPending => ServiceState::StopPending,
        };
        let controls_accepted = if r.accepts_controls {
            ServiceControlAccept::STOP
                | ServiceControlAccept::SHUTDOWN
                | ServiceControlAccept::PARAM_CHANGE
        } else {
            ServiceControlAccept::empty()
        };
        self.send(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state,
            controls_accepted,
            exit_code: ServiceExitCode::NO_ERROR,
            checkpoint: r.checkpoint,
            wait_hint: r.wait_hint.min(Duration::from_secs(600)),
            process_id: None,
        });
    }

    fn stopped(&self, exit_code: ServiceExitCode) {
        let _t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        self.send(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: ServiceState::Stopped,
            controls_accepted: ServiceControlAccept::empty(),
            exit_code,
            checkpoint: 0,
            wait_hint: Duration::ZERO,
            process_id: None,
        });
    }

    fn send(&self, status: ServiceStatus) {
        if let Some(h) = self.handle.get()
            && let Err(e) = h.set_service_status(status)
        {
            log::warn!("cannot report the service's status: {}", werr(e));
        }
    }
}

fn run_service(pending: Pending, source: Option<Arc<EventSource>>) -> Result<(), String> {
    let Pending { name, config, run } = pending;
    let (tx, rx) = crossbeam_channel::unbounded::<ServiceEvent>();
    let announce = source.clone().map(|s| {
        let text = format!(
            "The service {name} is running (mailroot {}, configuration {}).",
            env!("CARGO_PKG_VERSION"),
            config.display()
        );
        (s, text)
    });
    let scm = Arc::new(Scm {
        handle: OnceLock::new(),
        tracker: Mutex::new(ScmTracker::default()),
        was_running: AtomicBool::new(false),
        announce,
    });
    let in_handler = scm.clone();
    let handler = move |control: ServiceControl| -> ServiceControlHandlerResult {
        match control {
            ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
                in_handler.stop_requested();
                let _ = tx.send(ServiceEvent::Stop);
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::ParamChange => {
                let _ = tx.send(ServiceEvent::Reload);
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        }
    };
    let handle = service_control_handler::register(&name, handler).map_err(werr)?;
    let _ = scm.handle.set(handle);
    scm.report(Progress::Starting);

    let in_status = scm.clone();
    let status = Status::new(move |p| in_status.report(p));
    let service = Service {
        name: name.clone(),
        config: config.clone(),
        events: rx,
        status,
    };
    let write = |e: &Event| {
        if let Some(s) = &source {
            s.write(e);
        }
    };
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(move || run(service)));
    let exit = match outcome {
        Ok(Ok(())) => {
            write(&svc::event(
                Level::Info,
                &format!("The service {name} stopped."),
                None,
            ));
            ServiceExitCode::NO_ERROR
        }
        Ok(Err(failure)) => {
            write(&failure_event(
                &name,
                &failure,
                scm.was_running.load(Ordering::SeqCst),
            ));
            ServiceExitCode::ServiceSpecific(failure.exit_code)
        }
        Err(_) => {
            write(&svc::event(
                Level::Error,
                &format!(
                    "The service {name} stopped: an internal error (a panic; the log file has it)."
                ),
                None,
            ));
            ServiceExitCode::ServiceSpecific(EXIT_PANIC)
        }
    };
    scm.stopped(exit);
    Ok(())
}

fn failure_event(name: &str, failure: &Failure, was_running: bool) -> Event {
    if !was_running {
        return svc::start_failure_event(name, failure);
    }
    let mut e = svc::event(Level::Error, &failure.message, failure.origin.as_ref());
    e.text = format!(
        "The service {name} stopped on an error (exit code {}).\r\n\r\n{}",
        failure.exit_code, e.text
    );
    e
}

// ---------------------------------------------------------------------------------------------
// The Event Log
// ---------------------------------------------------------------------------------------------

fn wide(s: &str) -> Vec<u16> {
    OsStr::new(s).encode_wide().chain(Some(0)).collect()
}

fn register_event_source(name: &str) -> Result<(), String> {
    use windows_sys::Win32::System::Registry::{
        HKEY, HKEY_LOCAL_MACHINE, KEY_WRITE, REG_DWORD, REG_EXPAND_SZ, REG_OPTION_NON_VOLATILE,
        RegCloseKey, RegCreateKeyExW, RegSetValueExW,
    };
    let key = svc::event_source_key(name);
    let mut hkey: HKEY = std::ptr::null_mut();
    // SAFETY: the key name is NUL-terminated and outlives the call; `hkey` receives the handle.
    let rc = unsafe {
        RegCreateKeyExW(
            HKEY_LOCAL_MACHINE,
            wide(&key).as_ptr(),
            0,
            std::ptr::null(),
            REG_OPTION_NON_VOLATILE,
            KEY_WRITE,
            std::ptr::null(),
            &mut hkey,
            std::ptr::null_mut(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "cannot register the Event Log source (HKLM\\{key}): {}",
            io::Error::from_raw_os_error(rc as i32)
        ));
    }
    let file = wide(svc::EVENT_MESSAGE_FILE);
    let types: u32 = 7;
    // SAFETY: `hkey` is open; each value's data pointer and byte length describe live buffers
    // (the string's with its NUL).
    let results = unsafe {
        [
            RegSetValueExW(
                hkey,
                wide("EventMessageFile").as_ptr(),
                0,
                REG_EXPAND_SZ,
                file.as_ptr().cast(),
                (file.len() * 2) as u32,
            ),
            RegSetValueExW(
                hkey,
                wide("TypesSupported").as_ptr(),
                0,
                REG_DWORD,
                (&types as *const u32).cast(),
                4,
            ),
        ]
    };
    // SAFETY: closes the handle opened above, once.
    unsafe { RegCloseKey(hkey) };
    match results.iter().find(|&&rc| rc != 0) {
        Some(&rc) => Err(format!(
            "cannot register the Event Log source (HKLM\\{key}): {}",
            io::Error::from_raw_os_error(rc as i32)
        )),
        None => Ok(()),
    }
}

fn unregister_event_source(name: &str) -> Result<(), String> {
    use windows_sys::Win32::System::Registry::{HKEY_LOCAL_MACHINE, RegDeleteTreeW};
    const ERROR_FILE_NOT_FOUND: u32 = 2;
    let key = svc::event_source_key(name);
    // SAFETY: the key name is NUL-terminated and outlives the call.
    let rc = unsafe { RegDeleteTreeW(HKEY_LOCAL_MACHINE, wide(&key).as_ptr()) };
    if rc == 0 || rc == ERROR_FILE_NOT_FOUND {
        Ok(())
    } else {
        Err(format!(
            "cannot remove the Event Log source (HKLM\\{key}): {}",
            io::Error::from_raw_os_error(rc as i32)
        ))
    }
}

/// An open Event Log source (RegisterEventSourceW), closed when dropped.
struct EventSource(usize);

impl EventSource {
    fn open(name: &str) -> Option<EventSource> {
        use windows_sys::Win32::System::EventLog::RegisterEventSourceW;
        // SAFETY: the source name is NUL-terminated and outlives the call.
        let h = unsafe { RegisterEventSourceW(std::ptr::null(), wide(name).as_ptr()) };
        (!h.is_null()).then_some(EventSource(h as usize))
    }

    fn write(&self, e: &Event) {
        use windows_sys::Win32::System::EventLog::{
            EVENTLOG_ERROR_TYPE, EVENTLOG_INFORMATION_TYPE, EVENTLOG_WARNING_TYPE, ReportEventW,
        };
        let kind = match e.level {
            Level::Info => EVENTLOG_INFORMATION_TYPE,
            Level::Warning => EVENTLOG_WARNING_TYPE,
            Level::Error => EVENTLOG_ERROR_TYPE,
        };
        let text = wide(&e.text);
        let strings = [text.as_ptr()];
        // SAFETY: the handle is open while `self` lives; one NUL-terminated string, no raw data.
        unsafe {
            ReportEventW(
                self.0 as _,
                kind,
                0,
                e.id,
                std::ptr::null_mut(),
                1,
                0,
                strings.as_ptr(),
                std::ptr::null(),
            );
        }
    }
}

impl Drop for EventSource {
    fn drop(&mut self) {
        use windows_sys::Win32::System::EventLog::DeregisterEventSource;
        // SAFETY: the handle came from RegisterEventSourceW and is closed once.
        unsafe { DeregisterEventSource(self.0 as _) };
    }
}

/// `inner`, with warnings and errors also in the Event Log (see `service::event_log`).
pub fn event_log(name: &str, inner: Box<dyn log::Log>) -> Box<dyn log::Log> {
    match EventSource::open(name) {
        Some(source) => Box::new(EventTee::new(inner, Box::new(move |e| source.write(e)))),
        None => inner,
    }
}
