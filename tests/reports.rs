//! Non-delivery, delay and relay reports, and Badmail, with a real DNS server on loopback deciding
//! whether a domain fails for good (NXDOMAIN, null MX) or for now (SERVFAIL). The sender is local, so
//! the report lands in Drop where the test can read it.

mod common;
use common::*;
use std::fs;
use std::time::{Duration, Instant};

fn dns() -> dns::DnsServer {
    dns::DnsServer::builder()
        .a("exists.test", "127.0.0.9".parse().unwrap())
        .null_mx("nullmx.test")
        .servfail("later.test")
        .start()
}

fn server(dns: &dns::DnsServer, extra: &[(&str, &str)]) -> Server {
    let mut b = Builder::new()
        .key("FullyQualifiedDomainName", "mx.local.test")
        .key("DnsServers", &dns.addr.to_string())
        .key("SmtpRemoteProgressiveRetry", "1s");
    for (k, v) in extra {
        b = b.key(k, v);
    }
    b.start()
}

fn send(srv: &Server, from: &str, rcpts: &[&str], params: &str, body: &str) {
    let mut c = srv.connect();
    c.hello();
    c.ok(&format!("MAIL FROM:<{from}>{params}"), 250);
    for r in rcpts {
        c.ok(&format!("RCPT TO:<{r}>"), 250);
    }
    c.ok("DATA", 354);
    c.send(body.as_bytes());
    c.send(b"\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    c.ok("QUIT", 221);
}

fn drop_texts(srv: &Server, n: usize) -> Vec<String> {
    srv.wait_files("Drop", n)
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .collect()
}

#[test]
fn permanent_dns_failures_bounce_at_once_to_the_sender() {
    let d = dns();
    let srv = server(&d, &[("SendNdrTo", "postmaster-copy@local.test")]);
    send(
        &srv,
        "app@local.test",
        &["u@nosuch.test", "v@nullmx.test"],
        " ENVID=E42",
        "Subject: original subject\r\n\r\nsecret body\r\n",
    );
    let reports = drop_texts(&srv, 1);
    assert_eq!(reports.len(), 1, "{}", srv.log_text());
    let r = &reports[0];
    assert!(r.starts_with("x-sender: <>\r\nx-receiver: app@local.test\r\nx-receiver: postmaster-copy@local.test\r\n"), "to the sender and SendNdrTo: {r}");
    assert!(r.contains("\r\nFrom: postmaster@mx.local.test\r\n"), "{r}");
    assert!(
        r.contains("\r\nSubject: Delivery Status Notification (Failure)\r\n"),
        "{r}"
    );
    assert!(r.contains("report-type=delivery-status"), "{r}");
    assert!(r.contains("Original-Envelope-Id: E42\r\n"), "{r}");
    assert!(
        r.contains("Final-Recipient: rfc822;u@nosuch.test\r\nAction: failed\r\nStatus: 5.1.2\r\n"),
        "{r}"
    );
    assert!(
        r.contains("Final-Recipient: rfc822;v@nullmx.test\r\nAction: failed\r\nStatus: 5.1.10\r\n"),
        "{r}"
    );
    assert!(
        r.contains("Content-Type: message/rfc822\r\n\r\n") && r.contains("secret body"),
        "the original is attached: {r}"
    );
    assert!(
        srv.wait_files("Queue", 0).is_empty() || wait_empty(&srv, "Queue"),
        "the original left the queue"
    );
}

fn wait_empty(srv: &Server, folder: &str) -> bool {
    let until = Instant::now() + WAIT;
    while Instant::now() < until {
        if srv.files(folder).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn ret_hdrs_attaches_only_the_headers_and_notify_never_sends_nothing() {
    let d = dns();
    let srv = server(&d, &[]);
    send(
        &srv,
        "app@local.test",
        &["u@nosuch.test"],
        " RET=HDRS",
        "Subject: keep me\r\n\r\nsecret body\r\n",
    );
    let r = &drop_texts(&srv, 1)[0];
    assert!(
        r.contains("Content-Type: text/rfc822-headers\r\n") && r.contains("Subject: keep me"),
        "{r}"
    );
    assert!(!r.contains("secret body"), "{r}");

    let srv2 = server(&d, &[]);
    let mut c = srv2.connect();
    c.hello();
    c.ok("MAIL FROM:<app@local.test>", 250);
    c.ok("RCPT TO:<u@nosuch.test> NOTIFY=NEVER", 250);
    c.ok("DATA", 354);
    c.send(b"Subject: x\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    assert!(wait_empty(&srv2, "Queue"), "the message is dealt with");
    std::thread::sleep(Duration::from_millis(500));
    assert!(srv2.files("Drop").is_empty(), "NOTIFY=NEVER: no report");
}

#[test]
fn a_failed_report_goes_to_badmail_never_to_another_report() {
    let d = dns();
    let srv = server(&d, &[]);
    send(
        &srv,
        "",
        &["bounce@nosuch.test"],
        "",
        "Subject: Delivery Status Notification (Failure)\r\n\r\nreport\r\n",
    );
    let badmail = srv.folder("Badmail");
    let until = Instant::now() + WAIT;
    let mut bdr = None;
    while Instant::now() < until && bdr.is_none() {
        bdr = fs::read_dir(&badmail)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "bdr"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let bdr = bdr.expect("a .bdr file");
    let text = fs::read_to_string(&bdr).unwrap();
    assert!(
        text.contains("This message is a delivery status notification that cannot be delivered."),
        "{text}"
    );
    assert!(text.contains("bounce@nosuch.test"), "{text}");
    assert!(text.contains("The message sender was <>."), "{text}");
    let bad = fs::read_to_string(bdr.with_extension("bad")).unwrap();
    assert!(
        bad.starts_with("x-sender: <>\r\nx-receiver: bounce@nosuch.test\r\n"),
        "pickup-compatible: {bad}"
    );
    assert!(bad.contains("\r\nreport\r\n"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        srv.files("Drop").is_empty() && srv.files("Queue").is_empty(),
        "no report about a report"
    );
}

#[test]
fn temporary_failures_are_retried_then_delayed_then_expired() {
    let d = dns();
    let srv = server(
        &d,
        &[
            ("SmtpRemoteDelayExpireMinutes", "1s"),
            ("SmtpRemoteNDRExpireMinutes", "4s"),
        ],
    );
    send(
        &srv,
        "app@local.test",
        &["u@later.test"],
        "",
        "Subject: patience\r\n\r\nbody\r\n",
    );
    // While it waits, the state file says why.
    let until = Instant::now() + WAIT;
    let mut state = String::new();
    while Instant::now() < until {
        if let Some(p) = fs::read_dir(srv.folder("Queue"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "sta"))
        {
            state = fs::read_to_string(p).unwrap_or_default();
            if state.contains("attempts: 1") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        state.contains("rcpt: pending u@later.test | 451 4.4.3 DNS lookup for later.test failed"),
        "{state}"
    );
    let reports = drop_texts(&srv, 2);
    assert_eq!(
        reports.len(),
        2,
        "a delay notice, then the failure: {}",
        srv.log_text()
    );
    let (delay, failure) = (&reports[0], &reports[1]);
    assert!(
        delay.contains("Subject: Delivery Status Notification (Delay)"),
        "{delay}"
    );
    assert!(delay.contains("THIS IS A WARNING MESSAGE ONLY."), "{delay}");
    assert!(delay.contains("Action: delayed\r\n"), "{delay}");
    assert!(
        failure.contains("Subject: Delivery Status Notification (Failure)"),
        "{failure}"
    );
    assert!(
        failure.contains("Action: failed\r\nStatus: 4.4.7\r\n"),
        "{failure}"
    );
    assert!(wait_empty(&srv, "Queue"), "message and state removed");
    let log = srv.log_text();
    assert!(
        log.matches("DNS lookup for later.test failed").count() >= 2,
        "retried: {log}"
    );
}
