//! Resource exhaustion from one client must end in a clear reply or a close, and the server keeps
//! serving everyone else (docs/security.md, "Resource exhaustion").

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// A client that sends message data one byte at a time, never pausing long enough for the idle
/// timeout, is cut off by the data deadline (ConnectionTimeout + 1 s per 500 bytes).
#[test]
fn slow_drip_data_is_cut_off_by_a_deadline() {
    let srv = Builder::new().key("ConnectionTimeout", "2").start();
    let mut c = srv.connect();
    c.hello();
    c.ok("MAIL FROM:<a@b.test>", 250);
    c.ok("RCPT TO:<u@local.test>", 250);
    c.ok("DATA", 354);
    let until = Instant::now() + Duration::from_secs(30);
    let mut cut = false;
    while Instant::now() < until {
        if c.stream.write_all(b"x").is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        let _ = c.stream.set_nonblocking(true);
        let mut buf = [0u8; 512];
        match c.stream.read(&mut buf) {
            Ok(0) => {
                cut = true;
                break;
            }
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(text.starts_with("421 4.4.2 "), "{text}");
                cut = true;
                break;
            }
            Err(_) => {}
        }
        let _ = c.stream.set_nonblocking(false);
    }
    assert!(cut, "a client dripping bytes into DATA was never cut off");
    assert!(srv.files("Drop").is_empty());
    // Everyone else is still served.
    let mut other = srv.connect();
    other.hello();
    assert_eq!(
        other
            .send_mail("a@b.test", &["u@local.test"], &message("fine"))
            .code,
        250
    );
}

#[test]
fn noop_flood_ends_with_421() {
    let srv = Builder::new().key("MaxSmtpErrors", "5").start();
    let mut c = srv.connect();
    c.hello();
    let mut closed_with_421 = false;
    for _ in 0..200 {
        c.send(b"NOOP\r\n");
        match c.try_reply() {
            Some(r) if r.code == 250 => {}
            Some(r) if r.code == 421 => {
                closed_with_421 = true;
                break;
            }
            Some(r) => panic!("unexpected {r:?}"),
            None => break,
        }
    }
    assert!(closed_with_421, "a NOOP flood must end with 421");
}

#[test]
fn thousands_of_recipients_get_452_and_the_session_goes_on() {
    let srv = Builder::new().key("MaxRecipients", "100").start();
    let mut c = srv.connect();
    c.hello();
    c.ok("MAIL FROM:<a@b.test>", 250);
    let mut batch = String::new();
    for i in 0..3000 {
        batch.push_str(&format!("RCPT TO:<u{i}@local.test>\r\n"));
    }
    c.send(batch.as_bytes());
    let mut ok = 0;
    let mut too_many = 0;
    for _ in 0..3000 {
        match c.reply().code {
            250 => ok += 1,
            452 => too_many += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, too_many), (100, 2900));
    c.ok("DATA", 354);
    c.send(b"Subject: many\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    let f = srv.wait_files("Drop", 1);
    let text = std::fs::read_to_string(&f[0]).unwrap();
    assert_eq!(text.matches("x-receiver: ").count(), 100);
}

#[test]
fn nul_and_8bit_bytes_in_commands_get_clear_replies() {
    let srv = Builder::new().key("MaxSmtpErrors", "100").start();
    let mut c = srv.connect();
    c.hello();
    for (line, code) in [
        (&b"MA\0L FROM:<a@b.test>\r\n"[..], 500),
        (b"MAIL FROM:<a\0@b.test>\r\n", 501),
        (b"MAIL FROM:<\xc3\xa9@b.test>\r\n", 501),
        (b"EHLO \xff\xfe\r\n", 501),
        (b"\xff\xfe\xfd\r\n", 500),
        (b"RCPT TO:<\x80@local.test>\r\n", 501),
    ] {
        c.send(line);
        assert_eq!(c.reply().code, code, "{:?}", String::from_utf8_lossy(line));
    }
    c.ok("NOOP", 250);
}

#[test]
fn a_huge_header_is_limited_by_the_message_size() {
    let srv = Builder::new().key("MaxMessageSize", "100000").start();
    let mut c = srv.connect();
    c.hello();
    c.ok("MAIL FROM:<a@b.test>", 250);
    c.ok("RCPT TO:<u@local.test>", 250);
    c.ok("DATA", 354);
    let mut header = b"X-Endless: ".to_vec();
    header.extend(std::iter::repeat_n(b'a', 500_000));
    c.send(&header);
    c.send(b"\r\n\r\nbody\r\n.\r\n");
    assert_eq!(
        c.reply().last(),
        "552 5.3.4 Message size exceeds fixed maximum message size"
    );
    c.ok("NOOP", 250);
    assert!(srv.files("Drop").is_empty());
}

#[test]
fn an_overlong_auth_blob_gets_501() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.hello();
    let mut line = b"AUTH PLAIN ".to_vec();
    line.extend(std::iter::repeat_n(b'A', 20_000));
    line.extend_from_slice(b"\r\n");
    c.send(&line);
    assert_eq!(
        c.reply().last(),
        "501 5.5.2 Cannot decode the AUTH response"
    );
    c.send(&[&b"NOOP "[..], &[b'x'; 600], b"\r\n"].concat());
    assert_eq!(
        c.reply().last(),
        "500 5.5.2 Line too long",
        "other long lines are still 500"
    );
    c.ok("NOOP", 250);
}

/// A client that pipelines thousands of EHLOs without reading the replies cannot make the server
/// hold them all: they are written as they pile up, so the client's own socket fills and it is the
/// one that waits. The server answers everything in order and serves others meanwhile.
#[test]
fn pipelined_ehlo_flood_is_answered_in_order_without_hoarding() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    assert_eq!(c.reply().code, 220);
    let n = 5000;
    let flood = "EHLO a\r\n".repeat(n);
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(flood.as_bytes()).is_ok());
    // Meanwhile another client is served.
    let mut other = srv.connect();
    other.hello();
    other.ok("NOOP", 250);
    for i in 0..n {
        let r = c.reply();
        assert_eq!(r.code, 250, "reply {i}");
        assert_eq!(r.lines.last().map(String::as_str), Some("OK"));
    }
    assert!(sender.join().unwrap());
    c.ok("QUIT", 221);
}

/// Memory stays bounded when clients pipeline floods and never read: 20 sessions each send 64 KiB
/// of EHLO (1.5 MB of replies each if the server held them all).
#[cfg(target_os = "linux")]
#[test]
fn unread_reply_floods_do_not_grow_the_server() {
    let srv = Builder::new().key("ConnectionTimeout", "30").start();
    let pid = srv.pid().expect("running");
    let rss = || -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let before = rss();
    let flood = "EHLO a\r\n".repeat(8192);
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = srv.connect();
        c.stream
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let _ = c.stream.write_all(flood.as_bytes());
        clients.push(c);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let after = rss();
    assert!(
        after < before + 48 * 1024,
        "server grew from {before} kB to {after} kB holding replies nobody reads"
    );
    drop(clients);
}
