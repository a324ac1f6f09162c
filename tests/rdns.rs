//! EnableReverseDnsLookup: the Received header names the client as IIS does, `(name [ip])` when the
//! PTR name is confirmed by its own A record, `([ip] RDNS failed)` otherwise.

mod common;
use common::*;
use std::fs;

fn received_of(srv: &Server, from: &str) -> String {
    let mut c = Client::connect_from(from, srv.addr());
    assert_eq!(c.reply().code, 220);
    c.ok("EHLO HC-VM-PC", 250);
    let r = c.send_mail("a@b.test", &["u@local.test"], &message("rdns"));
    assert_eq!(r.code, 250, "{r:?}");
    c.ok("QUIT", 221);
    let files = srv.files("Drop");
    let text = fs::read_to_string(files.last().unwrap()).unwrap();
    text.lines()
        .find(|l| l.starts_with("Received: "))
        .unwrap()
        .to_string()
}

/// The failure forms. (The confirmed form, `(name [ip])`, cannot be reached on loopback: the
/// resolver answers reverse lookups of 127.0.0.0/8 itself, as RFC 6761 asks, without asking the
/// test server; src/smtp/received.rs tests that form.)
#[test]
fn unconfirmed_and_missing_names_say_rdns_failed() {
    let dns = dns::DnsServer::builder()
        .ptr("127.0.0.2".parse().unwrap(), "liar.test")
        .a("liar.test", "127.0.0.9".parse().unwrap())
        .start();
    let srv = Builder::new()
        .key("EnableReverseDnsLookup", "1")
        .key("DnsServers", &dns.addr.to_string())
        .start();
    let r = received_of(&srv, "127.0.0.2");
    assert!(
        r.starts_with("Received: from HC-VM-PC ([127.0.0.2] RDNS failed) by "),
        "{r}"
    );
    let r = received_of(&srv, "127.0.0.3");
    assert!(
        r.starts_with("Received: from HC-VM-PC ([127.0.0.3] RDNS failed) by "),
        "no PTR: {r}"
    );
}

#[test]
fn without_the_lookup_only_the_address_is_shown() {
    let srv = Builder::new().start();
    let r = received_of(&srv, "127.0.0.1");
    assert!(
        r.starts_with("Received: from HC-VM-PC ([127.0.0.1]) by "),
        "{r}"
    );
}

/// IPGrant/IPDeny with name entries: the decision waits for the client's confirmed name (looked up
/// in the session thread, never in the acceptor); a client without a confirmed name matches only
/// the address entries.
#[test]
fn connection_control_by_name() {
    let dns = dns::DnsServer::builder()
        .a("unused.test", "127.0.0.9".parse().unwrap())
        .start();
    let srv = Builder::new()
        .key("IPGrantByDefault", "0")
        .key("IPGrant", "127.0.0.1, *.trusted.test")
        .key("DnsServers", &dns.addr.to_string())
        .start();
    let mut ok = Client::connect_from("127.0.0.1", srv.addr());
    assert_eq!(ok.reply().code, 220, "an address entry admits");
    let mut refused = Client::connect_from("127.0.0.2", srv.addr());
    assert_eq!(refused.reply().last(), "554 5.7.1 Access denied");
    assert_eq!(refused.read_to_end(), "", "then closed");
    ok.ok("EHLO c", 250);

    let srv = Builder::new()
        .key("IPDeny", "*.untrusted.test, 127.0.0.3")
        .key("DnsServers", &dns.addr.to_string())
        .start();
    let mut c = Client::connect_from("127.0.0.2", srv.addr());
    assert_eq!(
        c.reply().code,
        220,
        "no confirmed name: a name entry does not match"
    );
    let mut d = Client::connect_from("127.0.0.3", srv.addr());
    assert_eq!(d.reply().last(), "554 5.7.1 Access denied");
    let conf = srv.dir.path().join("smtpsvc.ini");
    let text = run_bin(&["check", "--config", &conf.to_string_lossy()], None, None).stdout;
    assert!(
        text.contains("IPDeny = 127.0.0.3, *.untrusted.test"),
        "{text}"
    );
}
