//! Linux as a service (issue 12), with the real tools and the real binary:
//!
//! - **The unit**: packaging/systemd/mailroot.service passes `systemd-analyze verify` without a
//!   word about it (a copy whose ExecStart is this build's binary, since verify wants the program to
//!   exist), says what docs/linux.md promises (Type=notify, the mailroot user, SIGHUP for reload,
//!   port 25 through CAP_NET_BIND_SERVICE only), and its hardening keeps `systemd-analyze security`'s
//!   exposure at 2.0 or below.
//! - **The package**: `cargo deb` builds it from this build's binary (the same build id); it holds
//!   the binary, the unit, the configuration as a conffile and the docs; `dpkg -i` creates the
//!   mailroot account and the folders with their owners and modes (Pickup 3733, open to every
//!   user's `sendmail`), offers `/usr/sbin/sendmail` as an alternative (or says why not, when
//!   another mail system has it), enables the unit, and the
//!   installed configuration passes `mailroot check`, also as the service's account; `dpkg --purge`
//!   removes it all but the spool and the account (postrm says why), which the test then removes
//!   when it created them.
//! - **systemd's protocols**: started with `$NOTIFY_SOCKET` on a datagram socket the test holds,
//!   the server sends `READY=1` only once every listener of every virtual server answers, brackets
//!   a SIGHUP reload with `RELOADING=1` … `READY=1`, and sends `STOPPING=1` at SIGTERM; with
//!   `$JOURNAL_STREAM` naming its standard error it writes the journal's `<priority>` lines without
//!   time stamps.
//!
//! A test skips, printing why, only when a tool cannot be had here: `systemd-analyze`, `cargo deb`,
//! `dpkg`, or root for `dpkg -i`. Under CI (`CI=true`) a missing tool fails instead: .ci/run installs
//! them.
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------

/// The repository's root (where Cargo.toml and packaging/ are).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Either skips (prints why; the caller returns) or, under CI, fails: CI installs every tool.
#[must_use]
fn unavailable(reason: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{reason}; .ci/run installs what tests/packaging.rs needs, so CI does not skip");
    }
    eprintln!("SKIPPED: {reason}");
    true
}

/// Runs `program args…` and returns its output; None when the program cannot be started.
fn run(program: &str, args: &[&str]) -> Option<Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
}

/// Runs `program args…` and panics, with both streams, unless it exits 0.
fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args).unwrap_or_else(|| panic!("cannot start {program}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{text}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(program: &str, version_arg: &str) -> bool {
    run(program, &[version_arg]).is_some_and(|o| o.status.success())
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Cargo, as the test was started by it (or the one on PATH).
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

// ---------------------------------------------------------------------------------------------
// The unit
// ---------------------------------------------------------------------------------------------

const UNIT: &str = "packaging/systemd/mailroot.service";
const EXEC_START: &str = "ExecStart=/usr/bin/mailroot serve --config /etc/mailroot/smtpsvc.ini";

/// The shipped unit, with ExecStart pointing at `program`.
fn unit_with_program(program: &str) -> String {
    let text = fs::read_to_string(repo().join(UNIT)).expect("the unit");
    assert_eq!(
        text.lines().filter(|l| *l == EXEC_START).count(),
        1,
        "{UNIT} starts the packaged binary on the packaged configuration: {EXEC_START}"
    );
    text.replace(
        EXEC_START,
        &EXEC_START.replace("/usr/bin/mailroot", program),
    )
}

#[test]
fn the_unit_verifies_and_is_hardened() {
    if !have("systemd-analyze", "--version") && unavailable("no systemd-analyze (Debian: systemd)")
    {
        return;
    }
    let dir = TempDir::new("unit");
    let path = dir.path().join("mailroot.service");
    fs::write(&path, unit_with_program(bin())).expect("write the unit");
    let p = path.to_str().expect("utf-8 path");

    // verify exits 0 even for unknown keys and bad values: any line naming the unit is a finding.
    let out = run("systemd-analyze", &["verify", p]).expect("systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify:\n{text}");
    let findings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("mailroot.service") || l.contains(p))
        .collect();
    assert!(findings.is_empty(), "systemd-analyze verify:\n{text}");

    // What docs/linux.md and the server rely on.
    let unit = fs::read_to_string(&path).expect("unit");
    for line in [
        "Type=notify",
        "User=mailroot",
        "Group=mailroot",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/spool/mailroot /var/log/mailroot",
        "ReadWritePaths=-/var/lib/mailroot",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "{UNIT} lacks `{line}`");
    }
    // SIGTERM gives sessions 10 s (README): systemd must wait longer before SIGKILL.
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec= in seconds");
    assert!(
        stop > 10,
        "TimeoutStopSec={stop}s leaves no time after the 10 s grace"
    );

    // The hardening, as systemd scores it (0 = locked down, 10 = wide open; threshold in tenths).
    let out = run(
        "systemd-analyze",
        &[
            "security",
            "--offline=true",
            "--threshold=20",
            "--no-pager",
            p,
        ],
    )
    .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("");
    assert!(
        out.status.success(),
        "exposure above 2.0: {overall}\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", overall.trim());
}

// ---------------------------------------------------------------------------------------------
// The package
// ---------------------------------------------------------------------------------------------

/// `(cargo-deb's --profile, its --target)` for the build that made `bin`:
/// `<target dir>[/<triple>]/<profile dir>/mailroot`, where the profile `dev` lives in `debug`.
fn build_of(bin: &Path) -> (String, Option<String>) {
    let profile_dir = bin.parent().expect("profile dir");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(other) => other.to_string(),
        None => panic!("no profile in {}", bin.display()),
    };
    let above = profile_dir.parent().expect("target dir");
    // Cargo marks the target directory itself with CACHEDIR.TAG; a folder between is the triple.
    let triple = (!above.join("CACHEDIR.TAG").exists())
        .then(|| {
            above
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
        })
        .flatten();
    (profile, triple)
}

/// The GNU build id of an ELF file, as readelf shows it (None without readelf or the note).
fn build_id(file: &Path) -> Option<String> {
    let out = run("readelf", &["-n", file.to_str()?])?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        l.trim()
            .strip_prefix("Build ID:")
            .map(|v| v.trim().to_string())
    })
}

/// Owner name, group name and permission bits of `path`.
fn owner(path: &str) -> (String, String, u32) {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = |db: &str, id: u32| -> String {
        run_ok("getent", &[db, &id.to_string()])
            .split(':')
            .next()
            .unwrap_or("")
            .to_string()
    };
    (
        name("passwd", m.uid()),
        name("group", m.gid()),
        m.permissions().mode() & 0o7777,
    )
}

fn exists(path: &str) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// What the machine had before the test, so that the test leaves it so.
struct Installed {
    account: bool,
    spool: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        // After a failure half-way, too: never leave the package behind.
        let _ = run("dpkg", &["--purge", "mailroot"]);
        if !self.account {
            let _ = run("userdel", &["mailroot"]);
            let _ = run("groupdel", &["mailroot"]);
        }
        if !self.spool {
            let _ = fs::remove_dir_all("/var/spool/mailroot");
        }
    }
}

#[test]
fn the_debian_package_builds_installs_and_purges() {
    if !have("dpkg-deb", "--version") && unavailable("no dpkg-deb (not a Debian system)") {
        return;
    }
    if !run(&cargo(), &["deb", "--version"]).is_some_and(|o| o.status.success())
        && unavailable("no cargo-deb (cargo install cargo-deb)")
    {
        return;
    }

    // Build from this build's binary: no second (release) build, no stale one.
    let dir = TempDir::new("deb");
    let bin = Path::new(bin());
    let (profile, triple) = build_of(bin);
    let manifest = repo().join("Cargo.toml");
    let out_dir = dir.path().join("out");
    fs::create_dir_all(&out_dir).expect("out dir");
    let mut args = vec![
        "deb".to_string(),
        "--no-build".into(),
        "--fast".into(),
        // cargo-deb 3.8 warns that the dev profile is for releases only; the package is the same.
        "--profile".into(),
        profile,
        "--manifest-path".into(),
        manifest.to_string_lossy().into_owned(),
        "--output".into(),
        format!("{}/", out_dir.display()),
    ];
    if let Some(t) = triple {
        args.extend(["--target".to_string(), t]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let printed = run_ok(&cargo(), &args);
    let deb = fs::read_dir(&out_dir)
        .expect("out dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("cargo deb made no .deb:\n{printed}"));
    let deb_s = deb.to_str().expect("utf-8 path");

    // The contents.
    let listing = run_ok("dpkg-deb", &["-c", deb_s]);
    let entry = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" .{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"))
            .to_string()
    };
    assert!(entry("/usr/bin/mailroot").starts_with("-rwxr-xr-x "));
    assert!(entry("/usr/lib/systemd/system/mailroot.service").starts_with("-rw-r--r--"));
    assert!(entry("/etc/mailroot/smtpsvc.ini").starts_with("-rw-r-----"));
    for doc in ["README.md", "linux.md", "config.md", "copyright"] {
        entry(&format!("/usr/share/doc/mailroot/{doc}"));
    }
    let conffiles = run_ok("dpkg-deb", &["--info", deb_s, "conffiles"]);
    assert_eq!(conffiles.trim(), "/etc/mailroot/smtpsvc.ini");
    let control = run_ok("dpkg-deb", &["--field", deb_s]);
    for field in ["Package: mailroot", "Section: mail", "Priority: optional"] {
        assert!(control.lines().any(|l| l == field), "{field}:\n{control}");
    }
    let depends = control
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap_or("");
    assert!(
        depends.contains("adduser") && depends.contains("libc6"),
        "Depends: {depends}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let text = run_ok("dpkg-deb", &["--info", deb_s, script]);
        assert!(text.starts_with("#!/bin/sh"), "{script}:\n{text}");
    }
    let unpacked = dir.path().join("unpacked");
    run_ok(
        "dpkg-deb",
        &["-x", deb_s, unpacked.to_str().expect("utf-8")],
    );
    let packaged = unpacked.join("usr/bin/mailroot");
    if let (Some(ours), Some(theirs)) = (build_id(bin), build_id(&packaged)) {
        assert_eq!(
            ours, theirs,
            "the package holds another build than this one"
        );
    }
    assert_eq!(
        fs::read(unpacked.join("etc/mailroot/smtpsvc.ini")).expect("ini"),
        fs::read(repo().join("packaging/debian/smtpsvc.ini")).expect("ini")
    );

    // Install, as an admin would.
    if !is_root() && unavailable("not root: dpkg -i needs it") {
        return;
    }
    if run("dpkg", &["-s", "mailroot"]).is_some_and(|o| o.status.success()) {
        eprintln!(
            "note: a mailroot package was installed (left by an interrupted run?); replacing it"
        );
    }
    let _cleanup = Installed {
        account: run("getent", &["passwd", "mailroot"]).is_some_and(|o| o.status.success()),
        spool: Path::new("/var/spool/mailroot").exists(),
    };
    // Another mail system's /usr/sbin/sendmail is left alone (and then not checked below).
    let foreign_sendmail = fs::symlink_metadata("/usr/sbin/sendmail").is_ok()
        && fs::read_link("/usr/sbin/sendmail")
            .map_or(true, |t| t != Path::new("/etc/alternatives/sendmail"));
    let installed = run("dpkg", &["-i", deb_s]).expect("dpkg");
    let said = String::from_utf8_lossy(&installed.stderr).into_owned();
    assert!(installed.status.success(), "dpkg -i:\n{said}");
    if foreign_sendmail {
        assert!(
            said.contains("/usr/sbin/sendmail belongs to another mail system"),
            "postinst says why it leaves /usr/sbin/sendmail alone:\n{said}"
        );
    }

    // The account: a system user with its own group, no login, the spool as its home.
    run_ok("id", &["mailroot"]);
    let pw = run_ok("getent", &["passwd", "mailroot"]);
    let pw: Vec<&str> = pw.trim().split(':').collect();
    assert_eq!(pw.get(5), Some(&"/var/spool/mailroot"), "{pw:?}");
    assert!(pw.get(6).is_some_and(|s| s.ends_with("nologin")), "{pw:?}");
    let uid: u32 = pw[2].parse().expect("uid");
    assert!(uid < 1000, "mailroot is a system account, uid {uid}");
    run_ok("getent", &["group", "mailroot"]);

    // The files, their owners and modes.
    let want = |path: &str, user: &str, group: &str, mode: u32| {
        let (u, g, m) = owner(path);
        assert_eq!(
            (u.as_str(), g.as_str(), m),
            (user, group, mode),
            "{path}: owner, group, mode {m:o}"
        );
    };
    want("/usr/bin/mailroot", "root", "root", 0o755);
    want(
        "/usr/lib/systemd/system/mailroot.service",
        "root",
        "root",
        0o644,
    );
    want("/etc/mailroot", "root", "mailroot", 0o750);
    want("/etc/mailroot/smtpsvc.ini", "root", "mailroot", 0o640);
    // Every user may enter the spool and drop into Pickup (sendmail), none may list or read them.
    want("/var/spool/mailroot", "mailroot", "mailroot", 0o751);
    want("/var/spool/mailroot/Pickup", "mailroot", "mailroot", 0o3733);
    for d in [
        "/var/spool/mailroot/Queue",
        "/var/spool/mailroot/Badmail",
        "/var/spool/mailroot/Drop",
        "/var/spool/mailroot/SortTemp",
        "/var/log/mailroot",
        "/var/lib/mailroot",
    ] {
        want(d, "mailroot", "mailroot", 0o750);
    }
    if Path::new("/usr/bin/deb-systemd-helper").exists() {
        assert!(
            exists("/etc/systemd/system/multi-user.target.wants/mailroot.service"),
            "the unit is enabled on the first installation"
        );
    }

    // The installed binary reads the installed configuration, as root and as the service.
    let check = run_ok(
        "/usr/bin/mailroot",
        &["check", "--config", "/etc/mailroot/smtpsvc.ini"],
    );
    for line in [
        "ServerBindings = :25",
        "MailRoot = /var/spool/mailroot",
        "LogFileDirectory = /var/log/mailroot",
        "RelayIpList = 127.0.0.1, ::1",
    ] {
        assert!(check.lines().any(|l| l == line), "{line}:\n{check}");
    }
    run_ok(
        "runuser",
        &[
            "-u",
            "mailroot",
            "--",
            "/usr/bin/mailroot",
            "check",
            "--config",
            "/etc/mailroot/smtpsvc.ini",
        ],
    );

    // sendmail: the alternative (unless another mail system owns the name), and a user who may not
    // read the configuration drops into the package's Pickup a file only mailroot can read.
    if !foreign_sendmail {
        assert_eq!(
            fs::canonicalize("/usr/sbin/sendmail").ok(),
            Some(PathBuf::from("/usr/bin/mailroot")),
            "/usr/sbin/sendmail is an alternative for /usr/bin/mailroot"
        );
        let q = run_ok("update-alternatives", &["--query", "sendmail"]);
        assert!(q.contains("Value: /usr/bin/mailroot"), "{q}");
    }
    let sendmail_as_nobody = |message: &[u8]| {
        let mut child = Command::new("runuser")
            .args([
                "-u",
                "nobody",
                "--",
                "/usr/bin/mailroot",
                "sendmail",
                "-t",
                "-i",
            ])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runuser");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), message).expect("write");
        let out = child.wait_with_output().expect("sendmail");
        assert!(
            out.status.success(),
            "sendmail as nobody: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sendmail_as_nobody(b"To: root\nSubject: from nobody\n\nhello\n");
    // The service (where systemd runs) may already have taken it into Drop.
    let dropped: Vec<PathBuf> = ["Pickup", "Drop"]
        .iter()
        .flat_map(|d| list_eml(&Path::new("/var/spool/mailroot").join(d)))
        .collect();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    if dropped[0].starts_with("/var/spool/mailroot/Pickup") {
        let (u, g, m) = owner(dropped[0].to_str().expect("utf-8"));
        assert_eq!((u.as_str(), g.as_str(), m), ("nobody", "mailroot", 0o640));
        run_ok(
            "runuser",
            &[
                "-u",
                "mailroot",
                "--",
                "head",
                "-c",
                "1",
                dropped[0].to_str().expect("utf-8"),
            ],
        );
    }
    for f in &dropped {
        let _ = fs::remove_file(f);
    }

    // Once the server has published its submission settings in the spool (it does at each start
    // and reload; written here as it writes them, since the service may not run in this test),
    // a user who may not read the configuration takes DefaultDomain and the rest from them.
    let published = Path::new("/var/spool/mailroot/mailroot.submission.ini");
    fs::write(
        published,
        "[SmtpSvc/1]\nMailRoot = /var/spool/mailroot\nPickupDirectory = /var/spool/mailroot/Pickup\nDefaultDomain = published.test\n",
    )
    .expect("publish");
    fs::set_permissions(published, fs::Permissions::from_mode(0o644)).expect("chmod");
    sendmail_as_nobody(b"To: root\nSubject: published settings\n\nhello\n");
    let taken: Vec<PathBuf> = ["Pickup", "Queue", "Drop"]
        .iter()
        .flat_map(|d| list_eml(&Path::new("/var/spool/mailroot").join(d)))
        .filter(|f| read_text(f).contains("Subject: published settings"))
        .collect();
    assert_eq!(taken.len(), 1, "{taken:?}");
    let text = read_text(&taken[0]);
    assert!(text.contains("root@published.test"), "{text}");
    for f in taken.iter().map(PathBuf::as_path).chain([published]) {
        let _ = fs::remove_file(f);
    }

    // Purge: everything goes but the spool (mail may wait there) and the account that owns it.
    run_ok("dpkg", &["--purge", "mailroot"]);
    for gone in [
        "/usr/bin/mailroot",
        "/usr/lib/systemd/system/mailroot.service",
        "/etc/mailroot",
        "/var/log/mailroot",
        "/var/lib/mailroot",
        "/etc/systemd/system/multi-user.target.wants/mailroot.service",
    ] {
        assert!(!exists(gone), "{gone} is left after dpkg --purge");
    }
    if !foreign_sendmail {
        assert!(
            !exists("/usr/sbin/sendmail"),
            "the sendmail alternative goes with the package"
        );
    }
    assert!(Path::new("/var/spool/mailroot/Queue").is_dir());
    run_ok("id", &["mailroot"]);
}

// ---------------------------------------------------------------------------------------------
// systemd's protocols
// ---------------------------------------------------------------------------------------------

/// The server started as systemd starts it: `$NOTIFY_SOCKET` on a socket the test holds, standard
/// error into a file that `$JOURNAL_STREAM` names.
struct Managed {
    _dir: TempDir,
    child: Child,
    notify: UnixDatagram,
    stderr: PathBuf,
    ports: Vec<u16>,
}

impl Managed {
    /// Three listeners: two bindings of [SmtpSvc/1], one of [SmtpSvc/2].
    fn start() -> Managed {
        let dir = TempDir::new("notify");
        let ports: Vec<u16> = {
            let mut v: Vec<u16> = Vec::new();
            while v.len() < 3 {
                let p = free_port("127.0.0.1");
                if !v.contains(&p) {
                    v.push(p);
                }
            }
            v
        };
        let ini = Builder::new()
            .key(
                "ServerBindings",
                &format!("127.0.0.1:{}, 127.0.0.1:{}", ports[0], ports[1]),
            )
            .section(&format!(
                "\n[SmtpSvc/2]\nServerBindings = 127.0.0.1:{}\nMailRoot = mailroot2\nLogFileDirectory = logs\n",
                ports[2]
            ))
            .ini();
        let conf = dir.path().join("smtpsvc.ini");
        fs::write(&conf, ini).expect("config");
        let socket = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&socket).expect("notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let stderr = dir.path().join("stderr.log");
        let file = fs::File::create(&stderr).expect("stderr file");
        let m = file.metadata().expect("stat");
        let child = Command::new(bin())
            .args(["serve", "--config"])
            .arg(&conf)
            .env("NOTIFY_SOCKET", &socket)
            .env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start mailroot");
        Managed {
            _dir: dir,
            child,
            notify,
            stderr,
            ports,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The next notification, waiting at most [`WAIT`]; None when none came (or the server exited).
    fn next(&mut self) -> Option<String> {
        let until = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            match self.notify.recv(&mut buf) {
                Ok(n) => return Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => {
                    if let Ok(Some(_)) = self.child.try_wait() {
                        // A last datagram may have been sent just before the exit.
                        return self
                            .notify
                            .recv(&mut buf)
                            .ok()
                            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
                    }
                }
            }
        }
        None
    }

    /// Waits for a notification that holds the assignment `want` (e.g. `READY=1`), passing over
    /// others (STATUS= lines); panics, naming what to wire, when none comes.
    fn expect(&mut self, want: &str, after: &str) -> String {
        let mut seen = Vec::new();
        loop {
            match self.next() {
                Some(m) if m.lines().any(|l| l == want) => return m,
                Some(m) => seen.push(m),
                None => panic!(
                    "no {want} on $NOTIFY_SOCKET {after} within {WAIT:?} (seen: {seen:?}); the \
                     server sends it with mailroot::os::systemd::notify (issue 12).\nlog:\n{}",
                    self.log()
                ),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects to `port` on 127.0.0.1 and reads the 220 banner: the listener is bound and served.
fn answers(port: u16) -> Result<String, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| format!("{addr}: {e}"))?;
    if line.starts_with("220 ") {
        Ok(line)
    } else {
        Err(format!("{addr} greeted with {line:?}"))
    }
}

#[test]
fn ready_comes_once_every_listener_answers() {
    let mut srv = Managed::start();
    let ready = srv.expect("READY=1", "after start");
    // Checked at once: READY=1 promises that every listener is bound, not that it soon will be.
    for &p in &srv.ports {
        if let Err(e) = answers(p) {
            panic!(
                "READY=1 ({ready:?}) came before every listener answered: {e}\nlog:\n{}",
                srv.log()
            );
        }
    }
}

#[test]
fn reload_and_stop_are_announced() {
    let mut srv = Managed::start();
    srv.expect("READY=1", "after start");

    srv.signal("HUP");
    let reloading = srv.expect("RELOADING=1", "after SIGHUP");
    // MONOTONIC_USEC, when sent, is CLOCK_MONOTONIC in µs (Type=notify-reload compares it).
    if let Some(v) = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
    {
        assert!(v.parse::<u64>().is_ok_and(|us| us > 0), "{reloading:?}");
    }
    srv.expect("READY=1", "after the reload");
    for &p in &srv.ports {
        answers(p).expect("still serving after the reload");
    }

    srv.signal("TERM");
    srv.expect("STOPPING=1", "after SIGTERM");
    let status = wait_exit(&mut srv.child);
    assert!(status.success(), "exit after SIGTERM: {status}");
}

#[test]
fn under_journald_the_log_has_priorities_and_no_time_stamps() {
    let mut srv = Managed::start();
    // Not READY=1 (the test above owns that): the log's own word that all three listen.
    let listening = || srv.log().matches("listening on").count() >= 3;
    assert!(wait_until(listening), "no listeners:\n{}", srv.log());
    srv.signal("TERM");
    let status = wait_exit(&mut srv.child);
    assert!(status.success(), "exit after SIGTERM: {status}");
    let log = srv.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "the server logged nothing");
    for l in &lines {
        let (prio, text) = l
            .strip_prefix('<')
            .and_then(|r| r.split_once('>'))
            .and_then(|(p, t)| Some((p.parse::<u8>().ok()?, t)))
            .unwrap_or_else(|| panic!("not a journal line (`<priority>text`): {l:?}\nlog:\n{log}"));
        assert!(prio <= 7, "{l:?}");
        // journald stamps each line itself: no `[2026-12-04T12:01:09.579Z …` of env_logger's.
        let stamped = text.starts_with('[') && text[1..].starts_with(|c: char| c.is_ascii_digit());
        assert!(!stamped, "a time stamp in the journal: {l:?}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>") && l.contains("listening on")),
        "an info line for each listener:\n{log}"
    );
}
