//! Retries and resumption on the delivery side, end to end, in the two-hop setup of
//! tests/common/hops.rs: mail for `dest.test` goes to a scriptable next hop (sink A), reports would go
//! back to the sender's domain (sink B), which must stay silent when everything is delivered.

mod common;
use common::hops::{LONG, SENDER, SETTLE, config, dns, submit};
use common::sink::{Script, Sink};
use common::*;

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
    srv.assert_queue_empties(LONG);
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
    let port = free_port("127.0.0.1");
    let srv = config(&d, port, reports.addr.port()).start();
    submit(&srv, SENDER, &[("rcpt@dest.test", "")], "dead-hop");

    // The first failure is on disk before anything listens.
    let mut state = String::new();
    assert!(
        wait_for(WAIT, || {
            state = srv.state_text().unwrap_or_default();
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
    srv.assert_queue_empties(LONG);
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
        wait_for(LONG, || next.delivered_to("slow@dest.test") >= 1),
        "the deferred recipient was never delivered; log:\n{}",
        srv.log_text()
    );
    srv.assert_queue_empties(LONG);
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
        next.rcpt_commands("fast@dest.test"),
        1,
        "RCPT TO for the accepted recipient was sent once: {:?}",
        next.commands()
    );
    assert_eq!(next.delivered_to("slow@dest.test"), 1, "{all:?}");
    assert!(
        next.rcpt_commands("slow@dest.test") >= 2,
        "the deferred recipient was tried again"
    );
    assert_eq!(reports.connections(), 0, "no report");
}

#[test]
fn messages_queued_at_start_up_are_resumed() {
    let d = dns();
    let reports = Sink::start_default();
    let port = free_port("127.0.0.1");
    let mut srv = config(&d, port, reports.addr.port()).start();
    submit(&srv, SENDER, &[("later@dest.test", "")], "resume me");
    let mut state = String::new();
    assert!(
        wait_for(WAIT, || {
            state = srv.state_text().unwrap_or_default();
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
    let srv = srv.restart();
    assert!(
        wait_for(LONG, || !next.messages().is_empty()),
        "the queued message was not resumed; log:\n{}",
        srv.log_text()
    );
    srv.assert_queue_empties(LONG);
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
