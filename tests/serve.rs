//! Serving and stopping: SIGTERM ends the process with exit code 0 after idle sessions get `421` and a
//! message being received is allowed to finish; several virtual servers run side by side, each with
//! its own port, domain rules and protocol log folder; the server log can go to a file.
#![cfg(unix)]

mod common;
use common::*;

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

const SHUTTING_DOWN: &str =
    "421 4.3.2 mx.mailroot.test Service shutting down, closing transmission channel";

/// Sends SIGTERM from another thread (`terminate()` waits for the exit) and waits until the server
/// says it is shutting down. Join the handle with [`exit_status`].
fn sigterm(srv: Server) -> JoinHandle<(ExitStatus, Server)> {
    let log = srv.stderr.clone();
    let handle = std::thread::spawn(move || {
        let mut srv = srv;
        let status = srv.terminate();
        (status, srv)
    });
    assert!(
        wait_until(|| log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("shutting down"))),
        "the server did not begin to shut down after SIGTERM"
    );
    handle
}

/// The exit status of a server stopped by [`sigterm`]; fails if it did not exit in time.
fn exit_status(handle: JoinHandle<(ExitStatus, Server)>) -> (ExitStatus, Server) {
    handle.join().unwrap_or_else(|_| {
        panic!("mailroot did not exit within {WAIT:?} of SIGTERM (it was killed)")
    })
}

/// Whether a new connection to `addr` is refused.
fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err()
}

/// A message of roughly `size` bytes with CRLF lines and no line starting with a dot.
fn big_message(subject: &str, size: usize) -> String {
    let mut s = format!(
        "From: a@b.test\r\nTo: u@local.test\r\nSubject: {subject}\r\nMessage-ID: <{subject}@client.test>\r\n\r\n"
    );
    let mut i = 0u32;
    while s.len() < size {
        s.push_str(&format!(
            "line {i:06} of {subject}: the quick brown fox jumps over the lazy dog\r\n"
        ));
        i += 1;
    }
    s.push_str("the end");
    s
}

#[test]
fn sigterm_exits_0_and_stops_accepting() {
    let srv = Builder::new().start();
    let addr = srv.addr();
    let mut c = srv.connect();
    c.hello();
    c.ok("QUIT", 221);
    assert_eq!(c.read_to_end(), "");

    let term = sigterm(srv);
    assert!(
        wait_until(|| refused(addr)),
        "{addr} still accepts after SIGTERM"
    );
    let (status, srv) = exit_status(term);
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(refused(addr), "{addr} accepts after the exit");
    let log = srv.log_text();
    assert!(log.contains("stopped"), "{log}");
}

/// The same with the protocol log off: tells a shutdown problem of the log writer from others.
#[test]
fn sigterm_exits_0_with_the_protocol_log_off() {
    let srv = Builder::new().key("LogType", "0").start();
    let addr = srv.addr();
    let mut c = srv.connect();
    c.hello();
    let term = sigterm(srv);
    let r = c.try_reply().expect("421 at shutdown");
    assert_eq!(r.last(), SHUTTING_DOWN);
    let (status, _srv) = exit_status(term);
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(refused(addr), "{addr} accepts after the exit");
}

#[test]
fn idle_sessions_get_421_at_sigterm() {
    let srv = Builder::new().start();
    // Idle after the banner, idle after EHLO, and idle in the middle of a transaction.
    let mut a = srv.connect();
    assert_eq!(a.reply().code, 220);
    let mut b = srv.connect();
    b.hello();
    let mut c = srv.connect();
    c.hello();
    c.ok("MAIL FROM:<a@b.test>", 250);
    c.ok("RCPT TO:<u@local.test>", 250);

    let term = sigterm(srv);
    for (name, cl) in [
        ("banner", &mut a),
        ("ehlo", &mut b),
        ("transaction", &mut c),
    ] {
        let r = cl
            .try_reply()
            .unwrap_or_else(|| panic!("{name}: closed without 421"));
        assert_eq!(r.last(), SHUTTING_DOWN, "{name}: {r:?}");
        assert_eq!(cl.read_to_end(), "", "{name}: closed after 421");
    }
    let (status, srv) = exit_status(term);
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(srv.files("Drop").is_empty());
    assert!(srv.files("Queue").is_empty());
}

#[test]
fn message_in_flight_at_sigterm_completes() {
    let srv = Builder::new().start();
    let addr = srv.addr();
    let drop_dir = srv.folder("Drop");
    let pid = srv.pid().expect("running");

    let mut c = srv.connect();
    c.hello();
    c.ok("MAIL FROM:<a@b.test>", 250);
    c.ok("RCPT TO:<u@local.test>", 250);
    c.ok("DATA", 354);
    let msg = big_message("inflight", 200_000);
    let (first, second) = msg.as_bytes().split_at(msg.len() / 2);
    c.send(first);

    let term = sigterm(srv);
    // No new sessions while the message is still coming in.
    assert!(
        wait_until(|| refused(addr)),
        "{addr} still accepts during the shutdown"
    );
    assert!(
        Command::new("kill")
            .arg("-0")
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success(),
        "the server exited with a message in flight"
    );

    c.send(second);
    c.send(b"\r\n.\r\n");
    let r = c.reply();
    assert!(r.last().starts_with("250 2.6.0 <"), "{r:?}");
    // Then the session is idle, so it is closed like the others.
    let r = c.try_reply().expect("421 after the message");
    assert_eq!(r.last(), SHUTTING_DOWN);
    assert_eq!(c.read_to_end(), "");

    let files = list_eml(&drop_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let text = fs::read_to_string(&files[0]).unwrap();
    assert!(
        text.ends_with(&format!(
            "\r\n\r\n{}\r\n",
            &msg[msg.find("\r\n\r\n").unwrap() + 4..]
        )),
        "the stored message is not complete ({} bytes)",
        text.len()
    );
    assert!(text.starts_with("x-sender: a@b.test\r\nx-receiver: u@local.test\r\nReceived: "));
    let (status, _srv) = exit_status(term);
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

#[test]
fn two_virtual_servers_side_by_side() {
    let srv = Builder::new()
        .key("RelayIpList", "")
        .section(
            "\n[SmtpSvc/2]\nServerBindings = 127.0.0.1:0\nFullyQualifiedDomainName = mx2.mailroot.test\nDefaultDomain = two.test\nMailRoot = mailroot\nRelayIpList =\n",
        )
        .start();
    let one: Vec<SocketAddr> = srv.addrs.iter().filter(|a| a.0 == 1).map(|a| a.1).collect();
    let two: Vec<SocketAddr> = srv.addrs.iter().filter(|a| a.0 == 2).map(|a| a.1).collect();
    assert_eq!(one.len(), 1, "{:?}", srv.addrs);
    assert_eq!(two.len(), 1, "{:?}", srv.addrs);
    assert_ne!(one[0].port(), two[0].port());

    // Instance 1: local.test (and alias.test) are local; two.test is not.
    let mut c = Client::connect(one[0]);
    let banner = c.reply();
    assert!(
        banner.last().starts_with("220 mx.mailroot.test "),
        "{banner:?}"
    );
    c.ok("EHLO client-one.test", 250);
    c.ok("MAIL FROM:<a@b.test>", 250);
    let r = c.cmd("RCPT TO:<u@two.test>");
    assert_eq!(r.last(), "550 5.7.1 Unable to relay for u@two.test");
    c.ok("RCPT TO:<u@local.test>", 250);
    c.ok("DATA", 354);
    c.send(message("to one").as_bytes());
    c.send(b"\r\n.\r\n");
    let r = c.reply();
    assert!(
        r.last().starts_with("250 2.6.0 <") && r.last().contains("@mx.mailroot.test>"),
        "{r:?}"
    );
    c.ok("QUIT", 221);

    // Instance 2: two.test is local; local.test and alias.test are not.
    let mut c = Client::connect(two[0]);
    let banner = c.reply();
    assert!(
        banner.last().starts_with("220 mx2.mailroot.test "),
        "{banner:?}"
    );
    c.ok("EHLO client-two.test", 250);
    c.ok("MAIL FROM:<a@b.test>", 250);
    let r = c.cmd("RCPT TO:<u@local.test>");
    assert_eq!(r.last(), "550 5.7.1 Unable to relay for u@local.test");
    let r = c.cmd("RCPT TO:<u@alias.test>");
    assert_eq!(r.last(), "550 5.7.1 Unable to relay for u@alias.test");
    c.ok("RCPT TO:<v@two.test>", 250);
    // A bare local part takes this server's DefaultDomain.
    let r = c.cmd("RCPT TO:<postmaster>");
    assert_eq!(r.last(), "250 2.1.5 postmaster@two.test");
    c.ok("DATA", 354);
    c.send(message("to two").as_bytes());
    c.send(b"\r\n.\r\n");
    let r = c.reply();
    assert!(
        r.last().starts_with("250 2.6.0 <") && r.last().contains("@mx2.mailroot.test>"),
        "{r:?}"
    );
    c.ok("QUIT", 221);

    // Both in the one shared mailroot.
    let files = srv.wait_files("Drop", 2);
    assert_eq!(files.len(), 2, "{files:?}");
    let texts: Vec<String> = files
        .iter()
        .map(|f| fs::read_to_string(f).unwrap())
        .collect();
    let to_one = texts
        .iter()
        .find(|t| t.contains("Subject: to one"))
        .expect("message to instance 1");
    let to_two = texts
        .iter()
        .find(|t| t.contains("Subject: to two"))
        .expect("message to instance 2");
    assert!(
        to_one.starts_with("x-sender: a@b.test\r\nx-receiver: u@local.test\r\nReceived: from client-one.test ([127.0.0.1]) by mx.mailroot.test with ESMTP id "),
        "{to_one}"
    );
    assert!(
        to_two.starts_with("x-sender: a@b.test\r\nx-receiver: v@two.test\r\nx-receiver: postmaster@two.test\r\nReceived: from client-two.test ([127.0.0.1]) by mx2.mailroot.test with ESMTP id "),
        "{to_two}"
    );
    assert!(srv.files("Queue").is_empty());

    // Each instance logs to its own folder, under its own site name.
    let quit = |text: &str| text.lines().any(|l| l.contains(" QUIT "));
    let mut logs = (String::new(), String::new());
    assert!(
        wait_until(|| {
            logs = (srv.w3c_log(1), srv.w3c_log(2));
            quit(&logs.0) && quit(&logs.1)
        }),
        "logs: {logs:?}"
    );
    let (log1, log2) = logs;
    let lines = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    for l in lines(&log1) {
        assert!(l.contains(" SMTPSVC1 "), "{l}");
        assert!(!l.contains("client-two"), "{l}");
    }
    for l in lines(&log2) {
        assert!(l.contains(" SMTPSVC2 "), "{l}");
        assert!(!l.contains("client-one"), "{l}");
    }
    assert!(log1.contains("client-one.test"), "{log1}");
    assert!(log2.contains("client-two.test"), "{log2}");
    let logs_dir = srv.dir.path().join("logs");
    let mut names: Vec<String> = fs::read_dir(&logs_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["SMTPSVC1", "SMTPSVC2"]);
}

#[test]
fn both_virtual_servers_stop_on_sigterm() {
    let srv = Builder::new()
        .section("[SmtpSvc/2]\nServerBindings = 127.0.0.1:0\nDefaultDomain = two.test\nMailRoot = mailroot\n")
        .start();
    let addrs: Vec<SocketAddr> = srv.addrs.iter().map(|a| a.1).collect();
    assert!(srv.addrs.iter().any(|a| a.0 == 1) && srv.addrs.iter().any(|a| a.0 == 2));
    let mut idle: Vec<Client> = addrs.iter().map(|a| Client::connect(*a)).collect();
    for c in &mut idle {
        c.hello();
    }
    let term = sigterm(srv);
    for c in &mut idle {
        let r = c.try_reply().expect("421 at shutdown");
        assert_eq!(r.code, 421, "{r:?}");
    }
    for a in &addrs {
        assert!(
            wait_until(|| refused(*a)),
            "{a} still accepts after SIGTERM"
        );
    }
    let (status, _srv) = exit_status(term);
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

/// ServerLogFile: the server's own log goes to the file (timestamped, appended), not to standard
/// error; the pid file and the running settings appear beside the mailroot's folders and go at a
/// clean stop.
#[test]
fn server_log_file_and_pid_file() {
    let dir = TempDir::new("serverlog");
    let port = free_port("127.0.0.1");
    let log = dir.path().join("server.log");
    fs::write(&log, "an older line\n").expect("seed the log");
    let ini = Builder::new()
        .key("ServerBindings", &format!("127.0.0.1:{port}"))
        .key("ServerLogFile", "server.log")
        .ini();
    let conf = dir.path().join("smtpsvc.ini");
    fs::write(&conf, ini).expect("write config");
    let mut child = Command::new(bin())
        .args(["serve", "--config", &conf.display().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mailroot");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        wait_until(|| std::net::TcpStream::connect(addr).is_ok()),
        "not listening on {addr}"
    );
    // The socket accepts before the server logs "listening on" and writes its pid file: wait for
    // both (the running-settings file is written last) rather than read them at the first connection.
    let pid_file = dir.path().join("mailroot").join("mailroot.pid");
    assert!(
        wait_until(|| dir
            .path()
            .join("mailroot")
            .join("mailroot.running.ini")
            .is_file()
            && fs::read_to_string(&log).is_ok_and(|t| t.contains("listening on"))),
        "no listening line or pid file"
    );
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(text.starts_with("an older line\n"), "appended: {text}");
    let start = text
        .lines()
        .find(|l| l.contains("listening on"))
        .unwrap_or_else(|| panic!("no listening line in {text}"));
    assert!(
        start.starts_with('[') && start.contains('T'),
        "timestamped: {start}"
    );
    assert_eq!(
        fs::read_to_string(&pid_file).expect("pid file").trim(),
        child.id().to_string()
    );
    assert!(
        dir.path()
            .join("mailroot")
            .join("mailroot.running.ini")
            .is_file()
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status}");
    let mut err = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    assert!(
        !err.contains("listening on"),
        "the log went to standard error too: {err}"
    );
    assert!(!pid_file.exists(), "the pid file outlived the process");
    assert!(
        fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("stopped")
    );
}
