//! Non-delivery, delay and relay reports, and Badmail. First with a real DNS server on loopback
//! deciding whether a domain fails for good (NXDOMAIN, null MX) or for now (SERVFAIL), and a local
//! sender, so that the report lands in Drop where the test can read it; then in the two-hop setup of
//! tests/common/hops.rs, where the next hop refuses or delays and every report has to travel over
//! SMTP back to the sender's domain.

mod common;
use common::hops::{self, LONG, SENDER, SETTLE};
use common::sink::{Delivered, Sink};
use common::*;
use std::fs;
use std::time::Duration;

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

/// Waits until `folder` holds no message.
fn wait_empty(srv: &Server, folder: &str) -> bool {
    wait_until(|| srv.files(folder).is_empty())
}

#[test]
fn permanent_dns_failures_bounce_at_once_to_the_sender() {
    let d = dns();
    let srv = server(&d, &[("SendNdrTo", "postmaster-copy@local.test")]);
    srv.submit_raw(
        "<app@local.test> ENVID=E42",
        &["<u@nosuch.test>", "<v@nullmx.test>"],
        "Subject: original subject\r\n\r\nsecret body\r\n",
    );
    let reports = srv.drop_texts(1);
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

#[test]
fn ret_hdrs_attaches_only_the_headers_and_notify_never_sends_nothing() {
    let d = dns();
    let srv = server(&d, &[]);
    srv.submit_raw(
        "<app@local.test> RET=HDRS",
        &["<u@nosuch.test>"],
        "Subject: keep me\r\n\r\nsecret body\r\n",
    );
    let r = &srv.drop_texts(1)[0];
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
    srv.submit_raw(
        "<>",
        &["<bounce@nosuch.test>"],
        "Subject: Delivery Status Notification (Failure)\r\n\r\nreport\r\n",
    );
    assert!(
        wait_until(|| !srv.files_ext("Badmail", "bdr").is_empty()),
        "a .bdr file"
    );
    let bdr = srv.files_ext("Badmail", "bdr").remove(0);
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
    srv.submit_raw(
        "<app@local.test>",
        &["<u@later.test>"],
        "Subject: patience\r\n\r\nbody\r\n",
    );
    // While it waits, the state file says why.
    let mut state = String::new();
    wait_until(|| {
        state = srv.state_text().unwrap_or_default();
        state.contains("attempts: 1")
    });
    assert!(
        state.contains("rcpt: pending u@later.test | 451 4.4.3 DNS lookup for later.test failed"),
        "{state}"
    );
    let reports = srv.drop_texts(2);
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

// ---------------------------------------------------------------------------------------------
// Reports over SMTP, in the two-hop setup
// ---------------------------------------------------------------------------------------------

/// Asserts the shape every report shares: null sender, multipart/report, delivery-status part.
fn assert_report(r: &Delivered, subject: &str) {
    let t = r.text();
    assert_eq!(r.sender_addr(), "", "a report has the null sender: {r:?}");
    assert!(
        t.contains("Content-Type: multipart/report; report-type=delivery-status"),
        "{t}"
    );
    assert!(t.contains("Content-Type: message/delivery-status"), "{t}");
    assert!(
        t.contains(&format!("\r\nSubject: {subject}\r\n")),
        "subject {subject}: {t}"
    );
    assert!(
        t.contains("From: postmaster@mx.mailroot.test\r\n"),
        "from the postmaster: {t}"
    );
}

#[test]
fn partial_permanent_failure_sends_one_report_for_the_failed_recipient_only() {
    let d = hops::dns();
    let reports = Sink::start_default();
    let next = Sink::builder()
        .on_rcpt("bad@", "550 5.1.1 No such user")
        .start();
    let srv = hops::config(&d, next.addr.port(), reports.addr.port()).start();
    hops::submit(
        &srv,
        SENDER,
        &[("good@dest.test", ""), ("bad@dest.test", "")],
        "partial-5xx",
    );

    assert!(
        wait_for(LONG, || !reports.messages().is_empty()),
        "no report reached the sender's domain; log:\n{}",
        srv.log_text()
    );
    srv.assert_queue_empties(LONG);
    std::thread::sleep(SETTLE);
    let got = reports.messages();
    assert_eq!(got.len(), 1, "exactly one report: {got:?}");
    let r = &got[0];
    assert_report(r, "Delivery Status Notification (Failure)");
    assert_eq!(r.rcpt_addrs(), vec![SENDER.to_string()], "to the sender");
    assert_eq!(
        r.final_recipients(),
        vec!["bad@dest.test".to_string()],
        "one block, for the failed recipient only: {}",
        r.text()
    );
    let t = r.text();
    assert!(
        t.contains("Final-Recipient: rfc822;bad@dest.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"),
        "{t}"
    );
    assert!(t.contains("550 5.1.1 No such user"), "diagnostic: {t}");
    assert!(
        !t.contains("Final-Recipient: rfc822;good@dest.test"),
        "the good recipient is not reported: {t}"
    );
    // The good recipient got the message once.
    assert_eq!(next.delivered_to("good@dest.test"), 1);
    assert_eq!(next.rcpt_commands("good@dest.test"), 1);
    assert_eq!(
        next.rcpt_commands("bad@dest.test"),
        1,
        "a 5xx is not retried"
    );
}

#[test]
fn expiry_sends_a_4_4_7_report_to_the_senders_domain() {
    let d = hops::dns();
    let reports = Sink::start_default();
    let next = Sink::builder()
        .on_mail("451 4.3.0 Temporarily unavailable")
        .start();
    let srv = hops::config(&d, next.addr.port(), reports.addr.port())
        .key("SmtpRemoteNDRExpireMinutes", "3s")
        .start();
    hops::submit(&srv, SENDER, &[("rcpt@dest.test", "")], "expiring");

    assert!(
        wait_for(LONG, || !reports.messages().is_empty()),
        "no expiry report; log:\n{}",
        srv.log_text()
    );
    srv.assert_queue_empties(LONG);
    std::thread::sleep(SETTLE);
    let got = reports.messages();
    assert_eq!(got.len(), 1, "one report: {got:?}");
    let r = &got[0];
    assert_report(r, "Delivery Status Notification (Failure)");
    assert_eq!(r.rcpt_addrs(), vec![SENDER.to_string()]);
    let t = r.text();
    assert!(
        t.contains("Final-Recipient: rfc822;rcpt@dest.test\r\nAction: failed\r\nStatus: 4.4.7\r\n"),
        "{t}"
    );
    assert!(
        next.connections() >= 1,
        "the next hop was tried before the message expired"
    );
    assert!(next.messages().is_empty(), "never accepted by the next hop");
}

#[test]
fn send_ndr_to_gets_a_copy_of_the_report() {
    let d = hops::dns();
    let reports = Sink::start_default();
    let next = Sink::builder()
        .on_rcpt("@", "550 5.1.1 No such user")
        .start();
    let srv = hops::config(&d, next.addr.port(), reports.addr.port())
        .key("SendNdrTo", "ndr-copy@copies.test")
        .start();
    hops::submit(&srv, SENDER, &[("nobody@dest.test", "")], "ndr-copy");

    let both = |s: &Sink| {
        let to: Vec<String> = s.messages().iter().flat_map(|m| m.rcpt_addrs()).collect();
        to.iter().any(|a| a == SENDER) && to.iter().any(|a| a == "ndr-copy@copies.test")
    };
    assert!(
        wait_for(LONG, || both(&reports)),
        "the report did not reach both the sender and SendNdrTo: {:?}\nlog:\n{}",
        reports.messages(),
        srv.log_text()
    );
    srv.assert_queue_empties(LONG);
    std::thread::sleep(SETTLE);
    let got = reports.messages();
    for r in &got {
        assert_report(r, "Delivery Status Notification (Failure)");
        assert_eq!(
            r.final_recipients(),
            vec!["nobody@dest.test".to_string()],
            "{}",
            r.text()
        );
    }
    for who in [SENDER, "ndr-copy@copies.test"] {
        let n = got
            .iter()
            .filter(|m| m.rcpt_addrs().iter().any(|a| a == who))
            .count();
        assert_eq!(n, 1, "{who} gets exactly one report: {got:?}");
    }
}

#[test]
fn a_failed_null_sender_message_goes_to_badmail_and_is_reported_nowhere() {
    let d = hops::dns();
    let reports = Sink::start_default();
    let next = Sink::builder()
        .on_rcpt("bounce@", "550 5.1.1 No such user")
        .start();
    let srv = hops::config(&d, next.addr.port(), reports.addr.port())
        .key("SendNdrTo", "ndr-copy@copies.test")
        .start();
    hops::submit(&srv, "", &[("bounce@dest.test", "")], "a report itself");

    assert!(
        wait_for(LONG, || !srv.files_ext("Badmail", "bdr").is_empty()),
        "no .bdr in Badmail; log:\n{}",
        srv.log_text()
    );
    let bdr = srv.files_ext("Badmail", "bdr").remove(0);
    let bad = bdr.with_extension("bad");
    assert!(bad.exists(), "{} has its .bad", bdr.display());
    let reason = fs::read_to_string(&bdr).unwrap();
    assert!(reason.contains("bounce@dest.test"), "{reason}");
    assert!(reason.contains("550 5.1.1 No such user"), "{reason}");
    assert!(reason.contains("The message sender was <>."), "{reason}");
    let bad_text = fs::read_to_string(&bad).unwrap();
    assert!(
        bad_text.starts_with("x-sender: <>\r\nx-receiver: bounce@dest.test\r\n"),
        "pickup-compatible: {bad_text}"
    );
    assert!(bad_text.contains("body of a report itself"), "{bad_text}");

    srv.assert_queue_empties(LONG);
    std::thread::sleep(SETTLE);
    assert!(
        next.transactions().is_empty(),
        "the next hop received no message: {:?}",
        next.transactions()
    );
    assert_eq!(
        reports.connections(),
        0,
        "no report went to the sender's domain nor to SendNdrTo"
    );
    assert!(srv.files("Drop").is_empty(), "no local report either");
    assert!(srv.queue_empty(), "nothing new was queued");
}

#[test]
fn notify_success_sends_a_relay_report_to_the_sender() {
    let d = hops::dns();
    let reports = Sink::start_default();
    // A next hop without DSN: relaying to it is exactly when a "relayed" notice is due (RFC 3461).
    let next = Sink::builder()
        .ehlo_extensions([
            "PIPELINING",
            "8BITMIME",
            "SIZE 10485760",
            "ENHANCEDSTATUSCODES",
        ])
        .start();
    let srv = hops::config(&d, next.addr.port(), reports.addr.port()).start();
    hops::submit(
        &srv,
        SENDER,
        &[("ok@dest.test", " NOTIFY=SUCCESS")],
        "please confirm",
    );

    assert!(
        wait_for(LONG, || !reports.messages().is_empty()),
        "no success report; log:\n{}",
        srv.log_text()
    );
    srv.assert_queue_empties(LONG);
    std::thread::sleep(SETTLE);
    assert_eq!(next.delivered_to("ok@dest.test"), 1);
    let got = reports.messages();
    assert_eq!(got.len(), 1, "one report: {got:?}");
    let r = &got[0];
    assert_report(r, "Delivery Status Notification (Relay)");
    assert_eq!(r.rcpt_addrs(), vec![SENDER.to_string()]);
    let t = r.text();
    assert!(
        t.contains("Final-Recipient: rfc822;ok@dest.test\r\nAction: relayed\r\nStatus: 2."),
        "{t}"
    );
}
