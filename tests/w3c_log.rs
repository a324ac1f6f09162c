//! The W3C extended protocol log as IIS writes it for SMTPSVC: `logs/SMTPSVC<n>/exYYMMDD.log` (UTC),
//! the `#Software`/`#Version`/`#Date`/`#Fields` directives and one 21-field line per command. The log
//! is written by its own thread, so every check polls (bounded) until the lines are there.

mod common;
use common::*;

use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailroot::time::Utc;

const FIELDS: &str = "#Fields: date time c-ip cs-username s-sitename s-computername s-ip s-port cs-method cs-uri-stem cs-uri-query sc-status sc-win32-status sc-bytes cs-bytes time-taken cs-version cs-host cs(User-Agent) cs(Cookie) cs(Referer)";

/// (year, month, day, hour) in UTC, by mailroot's calendar (src/time.rs tests it against known dates).
fn utc(t: SystemTime) -> (i64, u32, u32, u32) {
    let u = Utc::from_system(t);
    (u.year, u.month, u.day, u.hour)
}

fn daily_name(t: SystemTime) -> String {
    let (y, m, d, _) = utc(t);
    format!("ex{:02}{:02}{:02}.log", y % 100, m, d)
}

fn hourly_name(t: SystemTime) -> String {
    let (y, m, d, h) = utc(t);
    format!("ex{:02}{:02}{:02}{:02}.log", y % 100, m, d, h)
}

fn w3c_date(t: SystemTime) -> String {
    let (y, m, d, _) = utc(t);
    format!("{y:04}-{m:02}-{d:02}")
}

#[test]
fn utc_oracle_is_right() {
    // 2009-12-02 21:56:01 UTC; 2024-02-29 00:00:00 UTC.
    let t = UNIX_EPOCH + Duration::from_secs(1_259_790_961);
    assert_eq!(utc(t), (2009, 12, 2, 21));
    assert_eq!(daily_name(t), "ex091202.log");
    assert_eq!(hourly_name(t), "ex09120221.log");
    assert_eq!(
        utc(UNIX_EPOCH + Duration::from_secs(1_709_164_800)),
        (2024, 2, 29, 0)
    );
}

fn has_quit(text: &str) -> bool {
    w3c_records(text)
        .iter()
        .any(|f| f.get(8).map(String::as_str) == Some("QUIT"))
}

/// Checks the directive block at the top of a log file.
fn assert_directives(text: &str) {
    assert!(text.ends_with("\r\n"), "lines must end with CRLF: {text:?}");
    assert_eq!(
        text.matches('\n').count(),
        text.matches("\r\n").count(),
        "bare LF in the log: {text:?}"
    );
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert!(lines.len() >= 4, "{text}");
    assert!(lines[0].starts_with("#Software: "), "{text}");
    assert!(lines[0].len() > "#Software: ".len(), "{text}");
    assert_eq!(lines[1], "#Version: 1.0", "{text}");
    let date = lines[2]
        .strip_prefix("#Date: ")
        .unwrap_or_else(|| panic!("no #Date: {text}"));
    let (d, t) = date.split_once(' ').expect("#Date: date time");
    assert_date_time(d, t);
    assert_eq!(lines[3], FIELDS, "{text}");
}

/// `YYYY-MM-DD` and `HH:MM:SS`.
fn assert_date_time(d: &str, t: &str) {
    let db = d.as_bytes();
    assert!(
        db.len() == 10
            && db[4] == b'-'
            && db[7] == b'-'
            && d.bytes()
                .enumerate()
                .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit()),
        "date {d:?}"
    );
    let tb = t.as_bytes();
    assert!(
        tb.len() == 8
            && tb[2] == b':'
            && tb[5] == b':'
            && t.bytes()
                .enumerate()
                .all(|(i, b)| i == 2 || i == 5 || b.is_ascii_digit()),
        "time {t:?}"
    );
}

/// What one line must say; `None` where the test does not care.
struct Want<'a> {
    user: &'a str,
    method: &'a str,
    query: &'a str,
    status: &'a str,
}

/// Checks every field of one record that IIS fixes.
fn assert_record(f: &[String], w: &Want<'_>, site: &str, dates: &[String]) {
    let line = f.join(" ");
    assert_eq!(f.len(), 21, "21 fields: {line}");
    assert!(
        dates.contains(&f[0]),
        "date {} not in {dates:?}: {line}",
        f[0]
    );
    assert_date_time(&f[0], &f[1]);
    assert_eq!(f[2], "127.0.0.1", "c-ip: {line}");
    assert_eq!(f[3], w.user, "cs-username: {line}");
    assert_eq!(f[4], site, "s-sitename: {line}");
    assert!(!f[5].is_empty() && f[5] != "-", "s-computername: {line}");
    assert_eq!(f[6], "127.0.0.1", "s-ip: {line}");
    assert_eq!(f[7], "0", "s-port: {line}");
    assert_eq!(f[8], w.method, "cs-method: {line}");
    assert_eq!(f[9], "-", "cs-uri-stem: {line}");
    assert_eq!(f[10], w.query, "cs-uri-query: {line}");
    assert_eq!(f[11], w.status, "sc-status: {line}");
    for (i, name) in [
        (12, "sc-win32-status"),
        (13, "sc-bytes"),
        (14, "cs-bytes"),
        (15, "time-taken"),
    ] {
        assert!(
            !f[i].is_empty() && f[i].bytes().all(|b| b.is_ascii_digit()),
            "{name} is not a number: {line}"
        );
    }
    assert_eq!(f[16], "SMTP", "cs-version: {line}");
    assert_eq!(&f[17..], ["-", "-", "-", "-"], "{line}");
}

/// The queue id and Message-ID named by `250 2.6.0 <id@fqdn> Queued mail for delivery`.
fn queued_message_id(r: &Reply) -> String {
    let l = r.last();
    let rest = l
        .strip_prefix("250 2.6.0 ")
        .unwrap_or_else(|| panic!("not queued: {l:?}"));
    let (id, _) = rest.split_once(' ').expect("message id");
    assert!(
        id.starts_with('<') && id.ends_with("@mx.mailroot.test>"),
        "{l:?}"
    );
    id.to_string()
}

#[test]
fn session_lines_follow_iis_field_rules() {
    let before = SystemTime::now();
    let srv = Builder::new().start();
    let mut c = srv.connect();
    assert_eq!(c.reply().code, 220);
    c.ok("Xyzzy now please", 500);
    c.ok("EHLO client.test", 250);
    c.ok("MAIL FROM: <a@b.test>", 250);
    c.ok("rcpt TO:<u@local.test>", 250);
    c.ok("DATA", 354);
    c.send(b"From: a@b.test\r\nSubject: logged\r\n\r\nbody\r\n.\r\n");
    let r = c.reply();
    let message_id = queued_message_id(&r);
    c.ok("QUIT", 221);
    assert_eq!(c.read_to_end(), "");

    let text = srv.wait_w3c(1, has_quit);
    let after = SystemTime::now();

    // One file, named after the UTC date.
    let dir = srv.dir.path().join("logs").join("SMTPSVC1");
    let files = entries(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name == daily_name(before) || name == daily_name(after),
        "{name} is not {} (UTC date)",
        daily_name(after)
    );
    assert_directives(&text);
    let dates = vec![w3c_date(before), w3c_date(after)];

    let recs = w3c_records(&text);
    let want = [
        Want {
            user: "-",
            method: "Xyzzy",
            query: "+now+please",
            status: "500",
        },
        Want {
            user: "client.test",
            method: "EHLO",
            query: "+client.test",
            status: "250",
        },
        Want {
            user: "client.test",
            method: "MAIL",
            query: "+FROM:+<a@b.test>",
            status: "250",
        },
        Want {
            user: "client.test",
            method: "rcpt",
            query: "+TO:<u@local.test>",
            status: "250",
        },
        Want {
            user: "client.test",
            method: "DATA",
            query: &message_id,
            status: "250",
        },
        Want {
            user: "client.test",
            method: "QUIT",
            query: "client.test",
            status: "240",
        },
    ];
    assert_eq!(recs.len(), want.len(), "one line per command:\n{text}");
    for (f, w) in recs.iter().zip(&want) {
        assert_record(f, w, "SMTPSVC1", &dates);
    }
    // The directives come once, before the lines.
    assert_eq!(text.matches("#Fields: ").count(), 1, "{text}");
}

#[test]
fn data_line_carries_the_client_message_id() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    assert_eq!(c.reply().code, 220);
    c.ok("HELO sender.example", 250);
    c.ok("MAIL FROM:<a@b.test>", 250);
    c.ok("RCPT TO:<u@local.test>", 250);
    c.ok("DATA", 354);
    c.send(
        b"From: a@b.test\r\nMessage-ID: <abc.123@sender.example>\r\nSubject: id\r\n\r\nbody\r\n.\r\n",
    );
    let r = c.reply();
    assert_eq!(r.code, 250, "{r:?}");
    c.ok("QUIT", 221);

    let text = srv.wait_w3c(1, has_quit);
    assert_directives(&text);
    let recs = w3c_records(&text);
    let methods: Vec<&str> = recs.iter().map(|f| f[8].as_str()).collect();
    assert_eq!(methods, ["HELO", "MAIL", "RCPT", "DATA", "QUIT"], "{text}");
    let data = &recs[3];
    assert_eq!(data.len(), 21, "{text}");
    assert_eq!(data[3], "sender.example", "{text}");
    assert_eq!(data[10], "+<abc.123@sender.example>", "{text}");
    assert_eq!(data[11], "250", "{text}");
    assert_eq!(recs[0][3], "sender.example", "HELO line: {text}");
    assert_eq!(recs[0][10], "+sender.example", "HELO line: {text}");
    assert_eq!(recs[4][10], "sender.example", "QUIT line: {text}");
    assert_eq!(recs[4][11], "240", "QUIT line: {text}");
}

#[test]
fn refused_commands_are_logged_with_their_codes() {
    let srv = Builder::new().key("RelayIpList", "").start();
    let mut c = srv.connect();
    assert_eq!(c.reply().code, 220);
    c.ok("MAIL FROM:<a@b.test>", 503);
    c.ok("EHLO client.test", 250);
    c.ok("MAIL FROM:<a@b.test>", 250);
    c.ok("RCPT TO:<x@remote.test>", 550);
    c.ok("NOOP", 250);
    c.ok("QUIT", 221);
    let text = srv.wait_w3c(1, has_quit);
    let got: Vec<(String, String, String)> = w3c_records(&text)
        .iter()
        .map(|f| {
            assert_eq!(f.len(), 21, "{text}");
            (f[3].clone(), f[8].clone(), f[11].clone())
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("-", "MAIL", "503"),
        ("client.test", "EHLO", "250"),
        ("client.test", "MAIL", "250"),
        ("client.test", "RCPT", "550"),
        ("client.test", "NOOP", "250"),
        ("client.test", "QUIT", "240"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want, "{text}");
    let noop = &w3c_records(&text)[4];
    assert_eq!(noop[10], "-", "no argument: {text}");
}

#[test]
fn client_cannot_forge_log_lines() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    assert_eq!(c.reply().code, 220);
    c.ok("EHLO client.test", 250);
    // A CR inside the command line (refused: a bare CR) and a multi-word argument: logged all the
    // same, without the CR.
    c.ok("NOOP a\rb c", 500);
    c.ok("QUIT", 221);
    let text = srv.wait_w3c(1, has_quit);
    let recs = w3c_records(&text);
    let methods: Vec<&str> = recs.iter().map(|f| f[8].as_str()).collect();
    assert_eq!(methods, ["EHLO", "NOOP", "QUIT"], "{text:?}");
    for f in &recs {
        assert_eq!(f.len(), 21, "{text:?}");
    }
    assert_eq!(
        text.matches('\r').count(),
        text.matches("\r\n").count(),
        "a bare CR reached the log: {text:?}"
    );
    let q = &recs[1][10];
    assert!(q.starts_with("+a") && q.ends_with("b+c"), "{text:?}");
}

#[test]
fn log_type_0_writes_no_log() {
    // Instance 1 logs nothing; instance 2 (same log folder) logs. The writer handles records in
    // order, so once instance 2's later QUIT is on disk, anything instance 1 logged would be too.
    let srv = Builder::new()
        .key("LogType", "0")
        .section("[SmtpSvc/2]\nServerBindings = 127.0.0.1:0\nFullyQualifiedDomainName = mx2.mailroot.test\nDefaultDomain = two.test\nMailRoot = mailroot\nLogFileDirectory = logs\n")
        .start();
    let one = srv.addr();
    let two = srv
        .addrs
        .iter()
        .find(|a| a.0 == 2)
        .map(|a| a.1)
        .expect("instance 2 bound");

    let mut c = Client::connect(one);
    c.hello();
    let r = c.send_mail("a@b.test", &["u@local.test"], &message("one"));
    assert_eq!(r.code, 250, "{r:?}");
    c.ok("QUIT", 221);
    assert_eq!(c.read_to_end(), "");

    let mut c = Client::connect(two);
    c.hello();
    c.ok("QUIT", 221);
    srv.wait_w3c(2, has_quit);

    let logs = srv.dir.path().join("logs");
    assert!(
        !logs.join("SMTPSVC1").exists(),
        "LogType = 0 must not create a log folder"
    );
    let names: Vec<String> = fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["SMTPSVC2"]);
    assert!(!srv.w3c_log(2).contains("SMTPSVC1"));
}

#[cfg(unix)]
#[test]
fn log_type_0_alone_creates_no_log_folder() {
    let mut srv = Builder::new().key("LogType", "0").start();
    let mut c = srv.connect();
    c.hello();
    let r = c.send_mail("a@b.test", &["u@local.test"], &message("quiet"));
    assert_eq!(r.code, 250, "{r:?}");
    c.ok("QUIT", 221);
    assert_eq!(c.read_to_end(), "");
    // A clean stop waits for the log writer, so whatever would be logged is on disk now.
    let status = srv.terminate();
    assert_eq!(status.code(), Some(0));
    assert_eq!(srv.files("Drop").len(), 1);
    assert!(
        !srv.dir.path().join("logs").exists(),
        "LogType = 0 must not create a log folder"
    );
}

#[test]
fn log_file_period_4_is_hourly() {
    let before = SystemTime::now();
    let srv = Builder::new().key("LogFilePeriod", "4").start();
    let mut c = srv.connect();
    c.hello();
    c.ok("QUIT", 221);
    let text = srv.wait_w3c(1, has_quit);
    let after = SystemTime::now();
    assert_directives(&text);
    let files = entries(&srv.dir.path().join("logs").join("SMTPSVC1"));
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name == hourly_name(before) || name == hourly_name(after),
        "{name} is not {} (exYYMMDDHH.log, UTC)",
        hourly_name(after)
    );
}

#[test]
fn log_file_directory_is_honoured() {
    let srv = Builder::new()
        .key("LogFileDirectory", "w3c/protocol")
        .start();
    let mut c = srv.connect();
    c.hello();
    c.ok("QUIT", 221);
    let dir = srv.dir.path().join("w3c").join("protocol").join("SMTPSVC1");
    let mut text = String::new();
    let found = wait_until(|| {
        text = entries(&dir)
            .iter()
            .map(|p| fs::read_to_string(p).unwrap_or_default())
            .collect();
        has_quit(&text)
    });
    assert!(found, "no log in {}", dir.display());
    assert_directives(&text);
    assert!(!srv.dir.path().join("logs").exists());
}
