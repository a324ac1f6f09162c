//! Retries, reports and resumption on the delivery side, end to end: mailroot relays mail for
//! `dest.test` to a scriptable next hop (sink A, through the remote domain section's smart host), and
//! its reports go back to the sender's own domain `sender.test`, whose MX in a real DNS server on
//! loopback is a second sink (B). Nothing here reads Drop: every report has to travel over SMTP.

mod common;
use common::sink::{Delivered, Script, Sink};
use common::*;
use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The bound for waits that span several retries (each 1 s apart).
const LONG: Duration = Duration::from_secs(40);
/// How long to keep watching for something that must NOT happen (several retry intervals).
const SETTLE: Duration = Duration::from_millis(2500);

const SENDER: &str = "app@sender.test";

/// The sender's domain (and `copies.test`, for SendNdrTo) point at 127.0.0.1 by MX.
fn dns() -> dns::DnsServer {
    dns::DnsServer::builder()
        .mx("sender.test", 10, "mx.sender.test")
        .mx("copies.test", 10, "mx.sender.test")
        .a("mx.sender.test", Ipv4Addr::new(127, 0, 0, 1))
        .start()
}

/// Mail for dest.test goes to 127.0.0.1:`next_hop`; DNS-routed mail (the reports) to port `reports`.
fn config(dns: &dns::DnsServer, next_hop: u16, reports: u16) -> Builder {
    Builder::new()
        .key("DnsServers", &dns.addr.to_string())
        .key("RemoteSmtpPort", &reports.to_string())
        .key("SmtpRemoteProgressiveRetry", "1s")
        .key("RemoteTimeout", "5")
        .key("PickupSettleTime", "200ms")
        // Lower case on purpose: section names are case-insensitive, and the harness counts
        // `[SmtpSvc/` occurrences as virtual servers to wait for.
        .section(&format!(
            "[smtpsvc/1/Domain/dest.test]\nSmartHost = [127.0.0.1]:{next_hop}\n"
        ))
}

/// A port on 127.0.0.1 where nothing listens (for now).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().unwrap().port()
}

/// One message over SMTP; `rcpts` are (address, RCPT parameters). Asserts the 250.
fn submit(srv: &Server, from: &str, rcpts: &[(&str, &str)], subject: &str) {
    let mut c = srv.connect();
    c.hello();
    c.ok(&format!("MAIL FROM:<{from}>"), 250);
    for (r, params) in rcpts {
        c.ok(&format!("RCPT TO:<{r}>{params}"), 250);
    }
    c.ok("DATA", 354);
    let to: Vec<&str> = rcpts.iter().map(|r| r.0).collect();
    c.send(
        format!(
            "From: {from}\r\nTo: {}\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n.\r\n",
            to.join(", ")
        )
        .as_bytes(),
    );
    let r = c.reply();
    assert_eq!(r.code, 250, "{r:?}");
    c.ok("QUIT", 221);
}

fn wait_for(bound: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + bound;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn files_with_ext(dir: &std::path::Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The text of the (first) state file in Queue, if any.
fn state_text(srv: &Server) -> Option<String> {
    files_with_ext(&srv.folder("Queue"), "sta")
        .first()
        .and_then(|p| fs::read_to_string(p).ok())
}

/// No `.eml` and no `.sta` left in Queue.
fn queue_empty(srv: &Server) -> bool {
    let q = srv.folder("Queue");
    files_with_ext(&q, "eml").is_empty() && files_with_ext(&q, "sta").is_empty()
}

fn wait_queue_empty(srv: &Server) {
    assert!(
        wait_for(LONG, || queue_empty(srv)),
        "Queue still holds {:?}\nlog:\n{}",
        fs::read_dir(srv.folder("Queue"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            .unwrap_or_default(),
        srv.log_text()
    );
}

/// How often `addr` was among the accepted recipients of an accepted transaction.
fn delivered_to(sink: &Sink, addr: &str) -> usize {
    sink.messages()
        .iter()
        .filter(|m| m.rcpt_addrs().iter().any(|r| r.eq_ignore_ascii_case(addr)))
        .count()
}

/// How often `RCPT TO:<addr>` was sent to `sink`.
fn rcpt_commands(sink: &Sink, addr: &str) -> usize {
    let needle = format!("rcpt to:<{}>", addr.to_ascii_lowercase());
    sink.commands()
        .iter()
        .filter(|c| c.to_ascii_lowercase().starts_with(&needle))
        .count()
}

/// The `Final-Recipient` addresses of a report.
fn final_recipients(report: &Delivered) -> Vec<String> {
    report
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("Final-Recipient: rfc822;"))
        .map(|a| a.trim().to_string())
        .collect()
}

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
fn retry_after_a_4xx_then_delivered_exactly_once() {
    let d = dns();
    let reports = Sink::start_default();
    let next = Sink::builder()
        .answers_for_first(2, Script::new().on_mail("451 4.3.0 later"))
        .start();
    let srv = config(&d, next.addr.port(), reports.addr.port()).start();
    submit(&srv, SENDER, &[("rcpt@dest.test", "")], "retry-4xx");

    assert!(
        wait_for(LONG, || !next.messages().is_empty()),
        "never delivered; log:\n{}",
        srv.log_text()
    );
    wait_queue_empty(&srv);
    std::thread::sleep(SETTLE);
    let got = next.messages();
    assert_eq!(got.len(), 1, "delivered exactly once: {got:?}");
    assert!(
        next.connections() >= 3,
        "two refused attempts before the delivery: {} connection(s)",
        next.connections()
    );
    let mails = next
        .commands()
        .iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("MAIL FROM:"))
        .count();
    assert!(mails >= 3, "MAIL was tried again after each 451: {mails}");
    assert_eq!(got[0].sender_addr(), SENDER);
    assert_eq!(got[0].rcpt_addrs(), vec!["rcpt@dest.test".to_string()]);
    assert!(got[0].text().contains("body of retry-4xx"), "{got:?}");
    assert_eq!(
        reports.connections(),
        0,
        "no report for a message that was delivered"
    );
}

#[test]
fn retry_after_a_dead_next_hop_then_delivered_once() {
    let d = dns();
    let reports = Sink::start_default();
    let port = free_port();
    let srv = config(&d, port, reports.addr.port()).start();
    submit(&srv, SENDER, &[("rcpt@dest.test", "")], "dead-hop");

    // The first failure is on disk before anything listens.
    let mut state = String::new();
    assert!(
        wait_for(WAIT, || {
            state = state_text(&srv).unwrap_or_default();
            state.contains("rcpt: pending rcpt@dest.test | 451 ")
        }),
        "no state file recording the failed attempt: {state:?}\nlog:\n{}",
        srv.log_text()
    );
    assert!(state.contains("attempts: "), "{state}");

    let next = Sink::builder().port(port).start();
    assert!(
        wait_for(LONG, || !next.messages().is_empty()),
        "not delivered once the next hop came up; log:\n{}",
        srv.log_text()
    );
    wait_queue_empty(&srv);
    std::thread::sleep(SETTLE);
    let got = next.messages();
    assert_eq!(got.len(), 1, "delivered once: {got:?}");
    assert_eq!(got[0].sender_addr(), SENDER);
    assert_eq!(got[0].rcpt_addrs(), vec!["rcpt@dest.test".to_string()]);
    assert_eq!(reports.connections(), 0, "no report");
}

#[test]
fn a_recipient_accepted_before_a_retry_is_not_sent_again() {
    let d = dns();
    let reports = Sink::start_default();
    let next = Sink::builder()
        .answers_for_first(
            1,
            Script::new().on_rcpt("slow@", "451 4.2.1 Mailbox busy, try later"),
        )
        .start();
    let srv = config(&d, next.addr.port(), reports.addr.port()).start();
    submit(
        &srv,
        SENDER,
        &[("fast@dest.test", ""), ("slow@dest.test", "")],
        "partial-4xx",
    );

    assert!(
        wait_for(LONG, || delivered_to(&next, "slow@dest.test") >= 1),
        "the deferred recipient was never delivered; log:\n{}",
        srv.log_text()
    );
    wait_queue_empty(&srv);
    std::thread::sleep(SETTLE);
    let all = next.transactions();
    let fast_in_transactions = all
        .iter()
        .filter(|t| t.rcpt_addrs().iter().any(|r| r == "fast@dest.test"))
        .count();
    assert_eq!(
        fast_in_transactions, 1,
        "the recipient that got 250 is in exactly one transaction: {all:?}"
    );
    assert_eq!(
        rcpt_commands(&next, "fast@dest.test"),
        1,
        "RCPT TO for the accepted recipient was sent once: {:?}",
        next.commands()
    );
    assert_eq!(delivered_to(&next, "slow@dest.test"), 1, "{all:?}");
    assert!(
        rcpt_commands(&next, "slow@dest.test") >= 2,
        "the deferred recipient was tried again"
    );
    assert_eq!(reports.connections(), 0, "no report");
}

#[test]
fn partial_permanent_failure_sends_one_report_for_the_failed_recipient_only() {
    let d = dns();
    let reports = Sink::start_default();
    let next = Sink::builder()
        .on_rcpt("bad@", "550 5.1.1 No such user")
        .start();
    let srv = config(&d, next.addr.port(), reports.addr.port()).start();
    submit(
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
    wait_queue_empty(&srv);
    std::thread::sleep(SETTLE);
    let got = reports.messages();
    assert_eq!(got.len(), 1, "exactly one report: {got:?}");
    let r = &got[0];
    assert_report(r, "Delivery Status Notification (Failure)");
    assert_eq!(r.rcpt_addrs(), vec![SENDER.to_string()], "to the sender");
    assert_eq!(
        final_recipients(r),
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
    assert_eq!(delivered_to(&next, "good@dest.test"), 1);
    assert_eq!(rcpt_commands(&next, "good@dest.test"), 1);
    assert_eq!(
        rcpt_commands(&next, "bad@dest.test"),
        1,
        "a 5xx is not retried"
    );
}

#[test]
fn expiry_sends_a_4_4_7_report_to_the_senders_domain() {
    let d = dns();
    let reports = Sink::start_default();
    let next = Sink::builder()
        .on_mail("451 4.3.0 Temporarily unavailable")
        .start();
    let srv = config(&d, next.addr.port(), reports.addr.port())
        .key("SmtpRemoteNDRExpireMinutes", "3s")
        .start();
    submit(&srv, SENDER, &[("rcpt@dest.test", "")], "expiring");

    assert!(
        wait_for(LONG, || !reports.messages().is_empty()),
        "no expiry report; log:\n{}",
        srv.log_text()
    );
    wait_queue_empty(&srv);
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
    let d = dns();
    let reports = Sink::start_default();
    let next = Sink::builder()
        .on_rcpt("@", "550 5.1.1 No such user")
        .start();
    let srv = config(&d, next.addr.port(), reports.addr.port())
        .key("SendNdrTo", "ndr-copy@copies.test")
        .start();
    submit(&srv, SENDER, &[("nobody@dest.test", "")], "ndr-copy");

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
    wait_queue_empty(&srv);
    std::thread::sleep(SETTLE);
    let got = reports.messages();
    for r in &got {
        assert_report(r, "Delivery Status Notification (Failure)");
        assert_eq!(
            final_recipients(r),
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
    let d = dns();
    let reports = Sink::start_default();
    let next = Sink::builder()
        .on_rcpt("bounce@", "550 5.1.1 No such user")
        .start();
    let srv = config(&d, next.addr.port(), reports.addr.port())
        .key("SendNdrTo", "ndr-copy@copies.test")
        .start();
    submit(&srv, "", &[("bounce@dest.test", "")], "a report itself");

    let badmail = srv.folder("Badmail");
    assert!(
        wait_for(LONG, || !files_with_ext(&badmail, "bdr").is_empty()),
        "no .bdr in Badmail; log:\n{}",
        srv.log_text()
    );
    let bdr = files_with_ext(&badmail, "bdr").remove(0);
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

    wait_queue_empty(&srv);
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
    assert!(queue_empty(&srv), "nothing new was queued");
}

#[test]
fn notify_success_sends_a_relay_report_to_the_sender() {
    let d = dns();
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
    let srv = config(&d, next.addr.port(), reports.addr.port()).start();
    submit(
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
    wait_queue_empty(&srv);
    std::thread::sleep(SETTLE);
    assert_eq!(delivered_to(&next, "ok@dest.test"), 1);
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

#[test]
fn messages_queued_at_start_up_are_resumed() {
    let d = dns();
    let reports = Sink::start_default();
    let port = free_port();
    let b = config(&d, port, reports.addr.port());
    let ini = b.ini();
    let mut srv = b.start();
    submit(&srv, SENDER, &[("later@dest.test", "")], "resume me");
    let mut state = String::new();
    assert!(
        wait_for(WAIT, || {
            state = state_text(&srv).unwrap_or_default();
            state.contains("rcpt: pending later@dest.test | 451 ")
        }),
        "no failed attempt recorded: {state:?}\nlog:\n{}",
        srv.log_text()
    );
    srv.kill9();
    assert_eq!(
        srv.files("Queue").len(),
        1,
        "the message is still queued after the kill"
    );

    let next = Sink::builder().port(port).start();
    let dir = std::mem::replace(&mut srv.dir, TempDir::new("retry-placeholder"));
    drop(srv);
    let srv = Server::start_in(dir, &ini);
    assert!(
        wait_for(LONG, || !next.messages().is_empty()),
        "the queued message was not resumed; log:\n{}",
        srv.log_text()
    );
    wait_queue_empty(&srv);
    std::thread::sleep(SETTLE);
    let got = next.messages();
    assert_eq!(got.len(), 1, "delivered once: {got:?}");
    assert_eq!(got[0].sender_addr(), SENDER);
    assert_eq!(got[0].rcpt_addrs(), vec!["later@dest.test".to_string()]);
    assert!(got[0].text().contains("body of resume me"));
    assert!(
        srv.log_text().contains("resume delivery"),
        "the start-up log names the resumed messages:\n{}",
        srv.log_text()
    );
    assert_eq!(reports.connections(), 0, "no report");
}
