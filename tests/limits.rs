//! The limits of a virtual server: MaxMessageSize, MaxSessionSize, MaxRecipients, MaxSmtpErrors,
//! HopCount, the 512-octet command line, ConnectionTimeout and MaxConnections.

mod common;
use common::*;

use std::fs;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const TOO_BIG: &str = "552 5.3.4 Message size exceeds fixed maximum message size";

/// A message of exactly `size` octets as the SIZE extension counts them (CRLF line endings, the
/// terminating ".\r\n" excluded), as `send_mail` sends it (it appends "\r\n.\r\n").
fn body_of_size(size: usize) -> String {
    let head = "Subject: sized\r\n\r\n";
    assert!(size >= head.len() + 2);
    let mut s = String::from(head);
    let mut left = size - head.len() - 2; // send_mail adds the final CRLF
    while left > 0 {
        if left > 80 {
            s.push_str(&"y".repeat(78));
            s.push_str("\r\n");
            left -= 80;
        } else {
            s.push_str(&"z".repeat(left));
            left = 0;
        }
    }
    assert_eq!(s.len() + 2, size);
    s
}

/// Reads replies until the server closes; returns them.
fn replies_until_close(c: &mut Client) -> Vec<Reply> {
    let mut v = Vec::new();
    while let Some(r) = c.try_reply() {
        v.push(r);
        assert!(v.len() < 100, "the server does not close: {v:?}");
    }
    v
}

#[test]
fn size_parameter_over_the_limit_is_refused_at_mail() {
    let srv = Builder::new().key("MaxMessageSize", "1000").start();
    let mut c = srv.connect();
    c.reply();
    let ehlo = c.ok("EHLO client.test", 250);
    assert!(ehlo.lines.contains(&"SIZE 1000".to_string()), "{ehlo:?}");
    c.expect("MAIL FROM:<a@b.test> SIZE=1001", TOO_BIG);
    c.expect("MAIL FROM:<a@b.test> SIZE=99999999999", TOO_BIG);
    // No transaction was opened.
    c.expect("RCPT TO:<u@local.test>", "503 5.5.1 Need mail command");
    c.expect(
        "MAIL FROM:<a@b.test> SIZE=1000",
        "250 2.1.0 a@b.test....Sender OK",
    );
    c.ok("QUIT", 221);
}

#[test]
fn message_over_the_limit_is_refused_after_the_data() {
    let srv = Builder::new().key("MaxMessageSize", "1000").start();
    let mut c = srv.connect();
    c.hello();
    let r = c.send_mail("a@b.test", &["u@local.test"], &body_of_size(5000));
    assert_eq!(r.last(), TOO_BIG);
    // The session is still in step.
    c.expect("RSET", "250 2.0.0 Resetting");
    c.expect("NOOP", "250 2.0.0 OK");
    let r = c.send_mail("a@b.test", &["small@local.test"], &message("small"));
    assert_eq!(r.code, 250, "{r:?}");
    c.ok("QUIT", 221);
    let d = srv.wait_files("Drop", 1);
    assert_eq!(d.len(), 1, "{d:?}");
    let text = fs::read_to_string(&d[0]).unwrap();
    assert!(text.contains("x-receiver: small@local.test\r\n"), "{text}");
    assert!(!text.contains("yyyy"), "{text}");
    assert!(
        fs::read_dir(srv.folder("SortTemp"))
            .unwrap()
            .next()
            .is_none(),
        "the refused message left nothing in SortTemp"
    );
}

#[test]
fn message_size_limit_is_inclusive() {
    let srv = Builder::new().key("MaxMessageSize", "1000").start();
    let mut c = srv.connect();
    c.hello();
    let r = c.send_mail("a@b.test", &["u@local.test"], &body_of_size(1000));
    assert_eq!(r.code, 250, "exactly MaxMessageSize octets: {r:?}");
    let r = c.send_mail("a@b.test", &["u@local.test"], &body_of_size(1001));
    assert_eq!(r.last(), TOO_BIG);
    c.ok("QUIT", 221);
    assert_eq!(srv.wait_files("Drop", 1).len(), 1);
}

#[test]
fn session_size_limit_ends_the_session() {
    let srv = Builder::new().key("MaxSessionSize", "3000").start();
    let mut c = srv.connect();
    c.hello();
    let r = c.send_mail("a@b.test", &["u@local.test"], &body_of_size(2000));
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.send_mail("a@b.test", &["v@local.test"], &body_of_size(2000));
    assert_eq!(
        r.last(),
        "552 5.3.4 Session size exceeds fixed maximum session size"
    );
    let rest = replies_until_close(&mut c);
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(
        rest[0].last(),
        "421 4.3.2 mx.mailroot.test Session size limit reached, closing transmission channel"
    );
    let d = srv.wait_files("Drop", 1);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        fs::read_to_string(&d[0])
            .unwrap()
            .contains("x-receiver: u@local.test\r\n")
    );
}

#[test]
fn max_recipients() {
    let srv = Builder::new().key("MaxRecipients", "3").start();
    let mut c = srv.connect();
    c.hello();
    c.ok("MAIL FROM:<a@b.test>", 250);
    for r in ["r1@local.test", "r2@local.test", "r3@local.test"] {
        c.expect(&format!("RCPT TO:<{r}>"), &format!("250 2.1.5 {r}"));
    }
    c.expect("RCPT TO:<r4@local.test>", "452 4.5.3 Too many recipients");
    c.expect("RCPT TO:<r5@remote.test>", "452 4.5.3 Too many recipients");
    c.ok("DATA", 354);
    c.send(message("three").as_bytes());
    c.send(b"\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    c.ok("QUIT", 221);
    let d = srv.wait_files("Drop", 1);
    assert_eq!(d.len(), 1);
    assert!(srv.files("Queue").is_empty());
    let text = fs::read_to_string(&d[0]).unwrap();
    assert!(
        text.starts_with(
            "x-sender: a@b.test\r\nx-receiver: r1@local.test\r\nx-receiver: r2@local.test\r\nx-receiver: r3@local.test\r\nReceived: "
        ),
        "{text}"
    );
}

#[test]
fn max_smtp_errors_closes_the_session() {
    let srv = Builder::new().key("MaxSmtpErrors", "3").start();
    let mut c = srv.connect();
    c.hello();
    c.expect("BOGUS", "500 5.5.1 Unrecognized command");
    c.expect("NOOP", "250 2.0.0 OK");
    c.expect("RCPT TO:<u@local.test>", "503 5.5.1 Need mail command");
    c.send(b"ALSO BOGUS\r\n");
    let rest = replies_until_close(&mut c);
    let lines: Vec<String> = rest.iter().map(Reply::last).collect();
    assert_eq!(
        lines,
        [
            "500 5.5.1 Unrecognized command",
            "421 4.7.0 mx.mailroot.test Too many errors, closing transmission channel"
        ]
    );
}

#[test]
fn hop_count() {
    let srv = Builder::new().key("HopCount", "2").start();
    let mut c = srv.connect();
    c.hello();
    let hop = |n: usize| -> String {
        let mut s = String::new();
        for i in 0..n {
            s.push_str(&format!(
                "Received: from h{i}.test by h{}.test; Mon, 1 Jan 2024 00:00:0{i} +0000\r\n",
                i + 1
            ));
        }
        s.push_str("Subject: hops\r\n\r\nbody");
        s
    };
    let r = c.send_mail("a@b.test", &["u@local.test"], &hop(3));
    assert_eq!(r.last(), "554 5.4.6 Routing loop detected");
    assert!(srv.files("Drop").is_empty());
    let r = c.send_mail("a@b.test", &["u@local.test"], &hop(2));
    assert_eq!(r.code, 250, "{r:?}");
    c.ok("QUIT", 221);
    let d = srv.wait_files("Drop", 1);
    assert_eq!(d.len(), 1);
    let text = fs::read_to_string(&d[0]).unwrap();
    assert_eq!(text.matches("Received: ").count(), 3, "ours + 2: {text}");
}

#[test]
fn command_line_over_512_octets() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.hello();
    // 512 octets with the CRLF: the most a command line may have.
    let max = format!("NOOP {}", "x".repeat(512 - 2 - 5));
    assert_eq!(max.len() + 2, 512);
    c.expect(&max, "250 2.0.0 OK");
    let over = format!("NOOP {}", "x".repeat(512 - 2 - 5 + 1));
    c.expect(&over, "500 5.5.2 Line too long");
    // A long line that ends with what looks like a command: it is all one line and all dropped.
    let trick = format!("NOOP {}QUIT", "x".repeat(2000));
    c.expect(&trick, "500 5.5.2 Line too long");
    c.expect("NOOP", "250 2.0.0 OK");
    c.ok("MAIL FROM:<a@b.test>", 250);
    let long_rcpt = format!("RCPT TO:<{}@local.test>", "u".repeat(600));
    c.expect(&long_rcpt, "500 5.5.2 Line too long");
    c.expect("RCPT TO:<u@local.test>", "250 2.1.5 u@local.test");
    c.ok("DATA", 354);
    c.send(message("after long lines").as_bytes());
    c.send(b"\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    c.ok("QUIT", 221);
    assert_eq!(srv.wait_files("Drop", 1).len(), 1);
}

#[test]
fn one_megabyte_line_in_data_is_stored_unchanged() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.hello();
    let line: String = (0..(1 << 20))
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let body = format!("Subject: long line\r\n\r\n{line}");
    let r = c.send_mail("a@b.test", &["u@local.test"], &body);
    assert_eq!(r.code, 250, "{r:?}");
    c.ok("QUIT", 221);
    let d = srv.wait_files("Drop", 1);
    assert_eq!(d.len(), 1);
    let text = fs::read_to_string(&d[0]).unwrap();
    assert!(
        text.ends_with(&format!("\r\n\r\n{line}\r\n")),
        "the line is stored whole ({} bytes in the file)",
        text.len()
    );
}

#[test]
fn silent_client_times_out() {
    let srv = Builder::new().key("ConnectionTimeout", "1").start();
    let mut c = srv.connect();
    assert_eq!(c.reply().code, 220);
    let rest = replies_until_close(&mut c);
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(
        rest[0].last(),
        "421 4.4.2 mx.mailroot.test Timeout waiting for client input, closing transmission channel"
    );
}

/// Stops the drip writer however the test ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[test]
fn slow_drip_client_times_out() {
    let srv = Builder::new().key("ConnectionTimeout", "1").start();
    let mut c = srv.connect();
    c.hello();
    let stop = Arc::new(AtomicBool::new(false));
    let _guard = StopOnDrop(stop.clone());
    let mut w = c.stream.try_clone().unwrap();
    w.set_nodelay(true).unwrap();
    let flag = stop.clone();
    // One byte every 300 ms, never a line end: each read is quick, the line never completes. The
    // writer gives up after 2 × WAIT, well after the reader below has given up.
    let writer = std::thread::spawn(move || {
        let until = Instant::now() + 2 * WAIT;
        let text = b"NOOP ".iter().chain(std::iter::repeat(&b'x'));
        for b in text {
            if flag.load(Ordering::Acquire) || Instant::now() > until {
                break;
            }
            if w.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let r = c.try_reply();
    stop.store(true, Ordering::Release);
    let r = r.expect("the server must cut a command line that never ends");
    assert_eq!(
        r.last(),
        "421 4.4.2 mx.mailroot.test Timeout waiting for client input, closing transmission channel"
    );
    assert!(c.try_reply().is_none(), "the server closes after 421");
    writer.join().unwrap();
}

#[test]
fn max_connections() {
    let srv = Builder::new().key("MaxConnections", "2").start();
    let mut a = srv.connect();
    let mut b = srv.connect();
    assert_eq!(a.reply().code, 220);
    assert_eq!(b.reply().code, 220);
    let mut third = srv.connect();
    let rest = replies_until_close(&mut third);
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(
        rest[0].last(),
        "421 4.3.2 Too many connections, try again later"
    );
    // The first two are unaffected.
    a.expect("NOOP", "250 2.0.0 OK");
    b.expect("NOOP", "250 2.0.0 OK");
    // When one leaves, its slot is free again (the slot is given back just after the close, so
    // allow a few attempts).
    a.ok("QUIT", 221);
    a.read_to_end();
    let until = Instant::now() + WAIT;
    loop {
        let mut n = srv.connect();
        let r = n.reply();
        if r.code == 220 {
            n.expect("NOOP", "250 2.0.0 OK");
            break;
        }
        assert_eq!(r.last(), "421 4.3.2 Too many connections, try again later");
        assert!(Instant::now() < until, "the slot was never given back");
        std::thread::sleep(Duration::from_millis(50));
    }
}
