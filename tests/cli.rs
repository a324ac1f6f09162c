//! The command line: `--version`, `--help`, `check` (effective settings and configuration errors as
//! `FILE:LINE: key: message`), `serve` refusing a bad configuration, the built-in defaults without a
//! configuration file, and how paths in the file are resolved.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// `mailroot check --config <path>` from an unrelated working directory.
fn check(path: &Path) -> Run {
    let cwd = TempDir::new("cli-cwd");
    run_bin(
        &["check", "--config", path.to_str().unwrap()],
        Some(cwd.path()),
        None,
    )
}

/// Writes `text` to `<dir>/<name>` and returns the path.
fn write_ini(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&p, text).unwrap();
    p
}

/// The `Key = value` lines of `check` output, per `[SmtpSvc/n]` section.
fn settings(stdout: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut all: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in stdout.lines() {
        let t = line.trim_end();
        if t.is_empty() || t.starts_with(';') {
            continue;
        }
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = Some(name.to_string());
            all.entry(name.to_string()).or_default();
            continue;
        }
        let (k, v) = match t.split_once(" = ") {
            Some((k, v)) => (k, v),
            None => match t.strip_suffix(" =") {
                Some(k) => (k, ""),
                None => panic!("unexpected line in check output: {line:?}\n{stdout}"),
            },
        };
        let section = current
            .clone()
            .unwrap_or_else(|| panic!("key outside a section: {line:?}\n{stdout}"));
        let prev = all
            .get_mut(&section)
            .unwrap()
            .insert(k.trim().to_string(), v.trim().to_string());
        assert!(prev.is_none(), "{k} printed twice:\n{stdout}");
    }
    all
}

/// Every key of a virtual server, in the table's order (the binary must print them all).
static KEYS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    mailroot::config::keys::SERVER_KEYS
        .iter()
        .chain(mailroot::config::keys::ROUTE_KEYS)
        .map(|k| k.name)
        .collect()
});

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Asserts a failed `check` whose error starts with `prefix` and mentions `needle`.
fn assert_config_error(r: &Run, prefix: &str, needle: &str) {
    assert!(
        !r.status.success(),
        "exit {:?} for a bad configuration:\n{}",
        r.status,
        r.both()
    );
    let line = r
        .both()
        .lines()
        .find(|l| l.starts_with(prefix))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{}", r.both()));
    let message = &line[prefix.len()..];
    assert!(
        !message.trim().is_empty(),
        "the error has no message: {line:?}"
    );
    assert!(
        line.contains(needle),
        "{line:?} does not mention {needle:?}"
    );
    assert!(
        !r.stdout.contains("valid"),
        "a bad configuration is reported valid:\n{}",
        r.stdout
    );
}

#[test]
fn version_and_help() {
    let cwd = TempDir::new("cli-v");
    let v = run_bin(&["--version"], Some(cwd.path()), None);
    assert_eq!(v.status.code(), Some(0), "{}", v.both());
    assert_eq!(
        v.stdout.trim(),
        format!("mailroot {}", env!("CARGO_PKG_VERSION"))
    );
    let h = run_bin(&["--help"], Some(cwd.path()), None);
    assert_eq!(h.status.code(), Some(0), "{}", h.both());
    assert!(h.stdout.contains("Usage"), "{}", h.stdout);
    assert!(h.stdout.contains("check"), "{}", h.stdout);
    assert!(h.stdout.contains("serve"), "{}", h.stdout);
    assert!(h.stdout.contains("--config"), "{}", h.stdout);
    // Neither created anything in the working directory.
    assert_eq!(fs::read_dir(cwd.path()).unwrap().count(), 0);
}

#[test]
fn unknown_argument_is_a_usage_error() {
    let cwd = TempDir::new("cli-arg");
    let r = run_bin(&["--bogus"], Some(cwd.path()), None);
    assert!(!r.status.success(), "{}", r.both());
    assert!(r.stderr.contains("--bogus"), "{}", r.stderr);
    let r = run_bin(&["check", "--config"], Some(cwd.path()), None);
    assert!(!r.status.success(), "{}", r.both());
    assert!(r.stderr.contains("--config"), "{}", r.stderr);
}

#[test]
fn check_prints_every_key_with_effective_values() {
    let dir = TempDir::new("cli-check");
    let ini = write_ini(
        dir.path(),
        "smtpsvc.ini",
        "; a comment\n[SmtpSvc/1]\nServerBindings = 127.0.0.1:2525\nFullyQualifiedDomainName = MX.Example.Test\nMailRoot = spool\nLocalDomains = a.test, B.test\nMaxRecipients = 7\nConnectionTimeout = 2m\nRelayIpList = 10.0.0.0/255.0.0.0, 127.0.0.1\nIPDeny = 192.0.2.0/24\n",
    );
    let r = check(&ini);
    assert_eq!(r.status.code(), Some(0), "{}", r.both());
    assert!(r.stdout.contains("valid"), "{}", r.stdout);
    assert!(r.stdout.contains(&p(&ini)), "names the file:\n{}", r.stdout);
    let all = settings(&r.stdout);
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        ["SmtpSvc/1"],
        "{}",
        r.stdout
    );
    let s = &all["SmtpSvc/1"];
    let printed: Vec<&str> = s.keys().map(String::as_str).collect();
    let mut want: Vec<&str> = KEYS.to_vec();
    want.sort();
    assert_eq!(printed, want, "every key, once:\n{}", r.stdout);
    // In the table's order.
    let order: Vec<usize> = KEYS
        .iter()
        .map(|k| r.stdout.find(&format!("\n{k} =")).expect(k))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{}", r.stdout);

    let d = dir.path();
    let expected = [
        ("ServerBindings", "127.0.0.1:2525".to_string()),
        ("FullyQualifiedDomainName", "mx.example.test".to_string()),
        ("MailRoot", p(&d.join("spool"))),
        ("PickupDirectory", p(&d.join("spool").join("Pickup"))),
        ("QueueDirectory", p(&d.join("spool").join("Queue"))),
        ("BadMailDirectory", p(&d.join("spool").join("Badmail"))),
        ("DropDirectory", p(&d.join("spool").join("Drop"))),
        ("DefaultDomain", "mx.example.test".to_string()),
        ("LocalDomains", "a.test, b.test".to_string()),
        ("MaxConnections", "2000".to_string()),
        ("ConnectionTimeout", "120".to_string()),
        ("MaxMessageSize", "2097152".to_string()),
        ("MaxSessionSize", "10485760".to_string()),
        ("MaxRecipients", "7".to_string()),
        ("MaxSmtpErrors", "10".to_string()),
        ("HopCount", "15".to_string()),
        ("RelayIpList", "10.0.0.0/8, 127.0.0.1".to_string()),
        ("IPGrantByDefault", "1".to_string()),
        ("IPDeny", "192.0.2.0/24".to_string()),
        ("IPGrant", String::new()),
        ("LogType", "1".to_string()),
        ("LogFileDirectory", p(&d.join("logs"))),
        ("LogFilePeriod", "1".to_string()),
        ("LogFileTruncateSize", "20480000".to_string()),
    ];
    for (k, v) in expected {
        assert_eq!(s[k], v, "{k}:\n{}", r.stdout);
    }
    // `check` only reads: no mailroot or log folder appears.
    assert!(!d.join("spool").exists());
    assert!(!d.join("logs").exists());
}

#[test]
fn check_shows_inherited_values_per_virtual_server() {
    let dir = TempDir::new("cli-inherit");
    let ini = write_ini(
        dir.path(),
        "smtpsvc.ini",
        "[SmtpSvc]\nMaxRecipients = 5\nHopCount = 30\n\n[SmtpSvc/2]\nServerBindings = :2526\nDefaultDomain = two.test\n\n[SmtpSvc/1]\nServerBindings = 127.0.0.1:2525\nMaxRecipients = 9\n",
    );
    let r = check(&ini);
    assert_eq!(r.status.code(), Some(0), "{}", r.both());
    let all = settings(&r.stdout);
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        ["SmtpSvc/1", "SmtpSvc/2"],
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.find("[SmtpSvc/1]") < r.stdout.find("[SmtpSvc/2]"),
        "{}",
        r.stdout
    );
    let one = &all["SmtpSvc/1"];
    let two = &all["SmtpSvc/2"];
    assert_eq!(one["MaxRecipients"], "9");
    assert_eq!(one["HopCount"], "30");
    assert_eq!(two["MaxRecipients"], "5");
    assert_eq!(two["HopCount"], "30");
    assert_eq!(two["ServerBindings"], ":2526");
    assert_eq!(two["DefaultDomain"], "two.test");
    assert_eq!(one["MaxMessageSize"], "2097152");
    assert_eq!(two["MaxMessageSize"], "2097152");
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let dir = TempDir::new("cli-e1");
    let ini = write_ini(
        dir.path(),
        "smtpsvc.ini",
        "[SmtpSvc/1]\nServerBindings = 127.0.0.1:2525\nMaxRecipent = 5\n",
    );
    assert_config_error(
        &check(&ini),
        &format!("{}:3: MaxRecipent: ", p(&ini)),
        "unknown key",
    );
    // Keys IIS has but mailroot does not use are refused too (never silently ignored).
    let ini = write_ini(
        dir.path(),
        "b.ini",
        "[SmtpSvc/1]\n\nSmtpInboundCommandSupportOptions = 7697601\n",
    );
    assert_config_error(
        &check(&ini),
        &format!("{}:3: SmtpInboundCommandSupportOptions: ", p(&ini)),
        "unknown key",
    );
}

#[test]
fn bad_number_names_file_line_and_key() {
    let dir = TempDir::new("cli-e2");
    let ini = write_ini(
        dir.path(),
        "smtpsvc.ini",
        "[SmtpSvc/1]\n; sizes\n\nMaxMessageSize = 2MB\n",
    );
    assert_config_error(
        &check(&ini),
        &format!("{}:4: MaxMessageSize: ", p(&ini)),
        "2MB",
    );
    let ini = write_ini(dir.path(), "b.ini", "[SmtpSvc/1]\nMaxRecipients = -1\n");
    assert_config_error(
        &check(&ini),
        &format!("{}:2: MaxRecipients: ", p(&ini)),
        "-1",
    );
    let ini = write_ini(
        dir.path(),
        "c.ini",
        "[SmtpSvc/1]\nConnectionTimeout = soon\n",
    );
    assert_config_error(
        &check(&ini),
        &format!("{}:2: ConnectionTimeout: ", p(&ini)),
        "soon",
    );
    let ini = write_ini(dir.path(), "d.ini", "[SmtpSvc/1]\nLogFilePeriod = 7\n");
    assert_config_error(
        &check(&ini),
        &format!("{}:2: LogFilePeriod: ", p(&ini)),
        "7",
    );
}

#[test]
fn bad_binding_names_file_line_and_key() {
    let dir = TempDir::new("cli-e3");
    for (i, value) in [
        "127.0.0.1",
        "127.0.0.1:99999",
        "mail.example.com:25",
        "127.0.0.1:x",
    ]
    .iter()
    .enumerate()
    {
        let ini = write_ini(
            dir.path(),
            &format!("b{i}.ini"),
            &format!("[SmtpSvc/1]\nFullyQualifiedDomainName = mx.test\nServerBindings = {value}\n"),
        );
        assert_config_error(
            &check(&ini),
            &format!("{}:3: ServerBindings: ", p(&ini)),
            value,
        );
    }
}

#[test]
fn bad_ip_list_names_file_line_and_key() {
    let dir = TempDir::new("cli-e4");
    // (key, value, the part of the value the message must point at)
    for (i, (key, value, bad)) in [
        ("RelayIpList", "10.0.0.0/33", "/33"),
        ("IPDeny", "127.0.0.1, 300.1.2.3", "300.1.2.3"),
        ("IPGrant", "10.0.0.0/255.0.255.0", "255.0.255.0"),
        ("RelayIpList", "example.com", "example.com"),
    ]
    .iter()
    .enumerate()
    {
        let ini = write_ini(
            dir.path(),
            &format!("l{i}.ini"),
            &format!("[SmtpSvc/1]\n{key} = {value}\n"),
        );
        assert_config_error(&check(&ini), &format!("{}:2: {key}: ", p(&ini)), bad);
    }
}

#[test]
fn duplicate_key_names_the_second_line() {
    let dir = TempDir::new("cli-e5");
    let ini = write_ini(
        dir.path(),
        "smtpsvc.ini",
        "[SmtpSvc/1]\nHopCount = 10\nMaxRecipients = 5\nhopcount = 20\n",
    );
    assert_config_error(
        &check(&ini),
        &format!("{}:4: hopcount: ", p(&ini)),
        "line 2",
    );
}

#[test]
fn unknown_section_names_file_and_line() {
    let dir = TempDir::new("cli-e6");
    let ini = write_ini(
        dir.path(),
        "smtpsvc.ini",
        "[SmtpSvc/1]\nHopCount = 10\n\n[Relay]\nHopCount = 3\n",
    );
    assert_config_error(&check(&ini), &format!("{}:4: ", p(&ini)), "[Relay]");
    let ini = write_ini(dir.path(), "b.ini", "[SmtpSvc/1]\n[SmtpSvc/x]\n");
    assert_config_error(&check(&ini), &format!("{}:2: ", p(&ini)), "[SmtpSvc/x]");
}

#[test]
fn no_virtual_server_is_an_error() {
    let dir = TempDir::new("cli-e7");
    // Nothing at all, only comments, only the service section: no [SmtpSvc/1].
    for (i, text) in ["", "; just a comment\n", "[SmtpSvc]\nHopCount = 3\n"]
        .iter()
        .enumerate()
    {
        let ini = write_ini(dir.path(), &format!("n{i}.ini"), text);
        assert_config_error(&check(&ini), &format!("{}: ", p(&ini)), "[SmtpSvc/1]");
    }
    // Keys before any section header.
    let ini = write_ini(
        dir.path(),
        "k.ini",
        "; settings\nHopCount = 3\n[SmtpSvc/1]\n",
    );
    assert_config_error(
        &check(&ini),
        &format!("{}:2: HopCount: ", p(&ini)),
        "section",
    );
}

#[test]
fn missing_config_file_is_an_error() {
    let dir = TempDir::new("cli-e8");
    let ini = dir.path().join("nowhere.ini");
    assert_config_error(&check(&ini), &p(&ini), "nowhere.ini");
}

#[test]
fn serve_refuses_a_bad_configuration() {
    let dir = TempDir::new("cli-serve");
    let ini = write_ini(
        dir.path(),
        "smtpsvc.ini",
        "[SmtpSvc/1]\nServerBindings = 127.0.0.1:0\nMaxRecipients = lots\nMailRoot = mailroot\n",
    );
    let r = run_bin(
        &["serve", "--config", ini.to_str().unwrap()],
        Some(dir.path()),
        None,
    );
    assert!(
        !r.status.success(),
        "serve started on a bad file:\n{}",
        r.both()
    );
    let prefix = format!("{}:3: MaxRecipients: ", p(&ini));
    assert!(
        r.stderr.lines().any(|l| l.contains(&prefix)),
        "stderr does not name {prefix:?}:\n{}",
        r.stderr
    );
    assert!(!r.stderr.contains("listening on"), "{}", r.stderr);
    assert!(
        !dir.path().join("mailroot").exists(),
        "no mailroot may be created"
    );

    // `serve` is the default command, and a Windows path is refused the same way.
    let ini = write_ini(
        dir.path(),
        "win.ini",
        "[SmtpSvc/1]\nServerBindings = 127.0.0.1:0\nMailRoot = C:\\inetpub\\mailroot\n",
    );
    let r = run_bin(&["--config", ini.to_str().unwrap()], Some(dir.path()), None);
    assert!(!r.status.success(), "{}", r.both());
    if cfg!(unix) {
        assert!(
            r.stderr.contains(&format!("{}:3: MailRoot: ", p(&ini))),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn no_config_file_runs_on_built_in_defaults() {
    let cwd = TempDir::new("cli-nofile");
    let r = run_bin(&["check"], Some(cwd.path()), None);
    assert_eq!(r.status.code(), Some(0), "{}", r.both());
    let lower = r.stdout.to_lowercase();
    assert!(
        lower.contains("built-in") && lower.contains("default"),
        "does not say it runs on built-in defaults:\n{}",
        r.stdout
    );
    let all = settings(&r.stdout);
    let s = &all["SmtpSvc/1"];
    assert_eq!(s["ServerBindings"], ":25", "{}", r.stdout);
    assert_eq!(s["MaxMessageSize"], "2097152");
    assert_eq!(s["HopCount"], "15");
    assert_eq!(s["RelayIpList"], "127.0.0.1, ::1");
    assert_eq!(s["LogType"], "1");
    // Relative paths are resolved beside the executable.
    let exe_dir = fs::canonicalize(Path::new(bin()).parent().unwrap()).unwrap();
    assert_eq!(s["MailRoot"], p(&exe_dir.join("mailroot")), "{}", r.stdout);
    assert_eq!(
        s["DropDirectory"],
        p(&exe_dir.join("mailroot").join("Drop"))
    );
    assert_eq!(s["LogFileDirectory"], p(&exe_dir.join("logs")));
    assert_eq!(
        fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "check wrote into the working directory"
    );
}

#[test]
fn conf_smtpsvc_ini_in_the_working_directory_is_the_default() {
    let dir = TempDir::new("cli-default-file");
    write_ini(
        dir.path(),
        "conf/smtpsvc.ini",
        "[SmtpSvc/1]\nServerBindings = 127.0.0.1:2600\nHopCount = 4\n",
    );
    let r = run_bin(&["check"], Some(dir.path()), None);
    assert_eq!(r.status.code(), Some(0), "{}", r.both());
    assert!(
        !r.stdout.to_lowercase().contains("built-in"),
        "{}",
        r.stdout
    );
    let all = settings(&r.stdout);
    assert_eq!(all["SmtpSvc/1"]["ServerBindings"], "127.0.0.1:2600");
    assert_eq!(all["SmtpSvc/1"]["HopCount"], "4");
}

#[cfg(unix)]
#[test]
fn windows_paths_are_errors_naming_the_line() {
    let dir = TempDir::new("cli-win");
    let ini = write_ini(
        dir.path(),
        "smtpsvc.ini",
        "[SmtpSvc/1]\nServerBindings = 127.0.0.1:2525\nMailRoot = C:\\inetpub\\mailroot\n",
    );
    assert_config_error(
        &check(&ini),
        &format!("{}:3: MailRoot: ", p(&ini)),
        "C:\\inetpub\\mailroot",
    );
    let ini = write_ini(
        dir.path(),
        "b.ini",
        "[SmtpSvc/1]\n\n\nDropDirectory = \\\\server\\share\\Drop\n",
    );
    assert_config_error(
        &check(&ini),
        &format!("{}:4: DropDirectory: ", p(&ini)),
        "\\\\server\\share\\Drop",
    );
    let ini = write_ini(
        dir.path(),
        "c.ini",
        "[SmtpSvc/1]\nLogFileDirectory = D:/logs\n",
    );
    assert_config_error(
        &check(&ini),
        &format!("{}:2: LogFileDirectory: ", p(&ini)),
        "D:/logs",
    );
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let dir = TempDir::new("cli-rel");
    let text = "[SmtpSvc/1]\nServerBindings = 127.0.0.1:2525\nMailRoot = ../spool\nQueueDirectory = queue2\nLogFileDirectory = ../w3c/./logs\nPickupDirectory = /var/tmp/mailroot-pickup\n";
    let ini = write_ini(dir.path(), "conf/smtpsvc.ini", text);

    let expect = |base: &Path, r: &Run| {
        assert_eq!(r.status.code(), Some(0), "{}", r.both());
        let all = settings(&r.stdout);
        let s = &all["SmtpSvc/1"];
        assert_eq!(s["MailRoot"], p(&base.join("spool")), "{}", r.stdout);
        assert_eq!(s["DropDirectory"], p(&base.join("spool").join("Drop")));
        assert_eq!(
            s["BadMailDirectory"],
            p(&base.join("spool").join("Badmail"))
        );
        assert_eq!(s["QueueDirectory"], p(&base.join("conf").join("queue2")));
        assert_eq!(s["LogFileDirectory"], p(&base.join("w3c").join("logs")));
        assert_eq!(s["PickupDirectory"], "/var/tmp/mailroot-pickup");
    };

    // An absolute --config, run from somewhere else.
    expect(dir.path(), &check(&ini));

    // A relative --config: resolved against the working directory, then the file's folder.
    let canonical = fs::canonicalize(dir.path()).unwrap();
    let r = run_bin(
        &["check", "--config", "conf/smtpsvc.ini"],
        Some(dir.path()),
        None,
    );
    expect(&canonical, &r);
    let r = run_bin(
        &["check", "--config=smtpsvc.ini"],
        Some(&dir.path().join("conf")),
        None,
    );
    expect(&canonical, &r);
}
