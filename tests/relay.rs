//! Who may relay: clients in RelayIpList (127.0.0.1 in the test configuration) may send to any
//! domain; a client connecting from 127.0.0.2 may only send to the local domains (local.test and
//! alias.test), and none of the classic relay tricks gets a remote address past that.

mod common;
use common::*;

/// Greeting + EHLO from 127.0.0.2, checking that the server sees that address.
fn outsider(srv: &Server) -> Client {
    let mut c = Client::connect_from("127.0.0.2", srv.addr());
    assert_eq!(c.reply().code, 220);
    let r = c.ok("EHLO outside.test", 250);
    assert_eq!(r.lines[0], "mx.mailroot.test Hello [127.0.0.2]", "{r:?}");
    c
}

/// Ends the session and asserts that neither Drop nor Queue holds anything.
fn assert_nothing_written(srv: &Server, mut c: Client) {
    c.ok("QUIT", 221);
    c.read_to_end();
    assert!(srv.files("Drop").is_empty(), "{:?}", srv.files("Drop"));
    assert!(srv.files("Queue").is_empty(), "{:?}", srv.files("Queue"));
}

#[test]
fn relay_allowed_from_relay_ip_list() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.hello();
    c.expect("MAIL FROM:<a@b.test>", "250 2.1.0 a@b.test....Sender OK");
    c.expect("RCPT TO:<u@remote.test>", "250 2.1.5 u@remote.test");
    c.expect("RCPT TO:<v@[192.0.2.1]>", "250 2.1.5 v@[192.0.2.1]");
    c.ok("DATA", 354);
    c.send(message("relayed").as_bytes());
    c.send(b"\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    c.ok("QUIT", 221);
    let q = srv.wait_files("Queue", 1);
    assert_eq!(q.len(), 1);
    assert!(srv.files("Drop").is_empty());
    let text = read_text(&q[0]);
    assert!(text.starts_with("x-sender: a@b.test\r\n"), "{text}");
    assert_eq!(x_receivers(&text), ["u@remote.test", "v@[192.0.2.1]"]);
}

#[test]
fn relay_denied_from_outside_relay_ip_list() {
    let srv = Builder::new().start();
    let mut c = outsider(&srv);
    c.expect("MAIL FROM:<a@b.test>", "250 2.1.0 a@b.test....Sender OK");
    c.expect(
        "RCPT TO:<u@remote.test>",
        "550 5.7.1 Unable to relay for u@remote.test",
    );
    c.expect(
        "RCPT TO:<Someone@Example.COM>",
        "550 5.7.1 Unable to relay for Someone@Example.COM",
    );
    c.expect("DATA", "554 5.5.1 No valid recipients");
    c.expect("NOOP", "250 2.0.0 OK");
    assert_nothing_written(&srv, c);
}

#[test]
fn relay_ip_list_decides() {
    // The same client is trusted once the list covers it.
    // The next hop refuses connections, so the message stays queued (deferred): with DNS the
    // attempt could fail at once and its report join the Queue while the test counts.
    let srv = Builder::new()
        .key("RelayIpList", "127.0.0.0/30")
        .key("SmartHost", "[127.0.0.1]:1")
        .key("SmartHostType", "2")
        .start();
    let mut c = outsider(&srv);
    c.ok("MAIL FROM:<a@b.test>", 250);
    c.expect("RCPT TO:<u@remote.test>", "250 2.1.5 u@remote.test");
    c.ok("DATA", 354);
    c.send(message("trusted").as_bytes());
    c.send(b"\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    c.ok("QUIT", 221);
    assert_eq!(srv.wait_files("Queue", 1).len(), 1);
}

#[test]
fn local_domains_accepted_from_outside() {
    let srv = Builder::new().start();
    let mut c = outsider(&srv);
    c.ok("MAIL FROM:<a@b.test>", 250);
    for (rcpt, shown) in [
        ("a@local.test", "a@local.test"),
        ("b@alias.test", "b@alias.test"),
        ("C@LOCAL.TEST", "C@LOCAL.TEST"),
        ("d@Alias.Test", "d@Alias.Test"),
        ("e@local.test.", "e@local.test"),
        ("Postmaster", "Postmaster@local.test"),
    ] {
        c.expect(&format!("RCPT TO:<{rcpt}>"), &format!("250 2.1.5 {shown}"));
    }
    c.ok("DATA", 354);
    c.send(message("local").as_bytes());
    c.send(b"\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    c.ok("QUIT", 221);
    let d = srv.wait_files("Drop", 1);
    assert_eq!(d.len(), 1);
    assert!(srv.files("Queue").is_empty());
    let text = read_text(&d[0]);
    assert_eq!(
        x_receivers(&text),
        [
            "a@local.test",
            "b@alias.test",
            "C@LOCAL.TEST",
            "d@Alias.Test",
            "e@local.test",
            "Postmaster@local.test"
        ]
    );
    assert!(
        text.contains(
            "\r\nReceived: from outside.test ([127.0.0.2]) by mx.mailroot.test with ESMTP id "
        ),
        "{text}"
    );
}

#[test]
fn relay_tricks_refused_from_outside() {
    let srv = Builder::new().key("MaxSmtpErrors", "1000").start();
    let mut c = outsider(&srv);
    c.ok("MAIL FROM:<a@b.test>", 250);
    for (rcpt, shown) in [
        ("u%remote.test@local.test", "u%remote.test@local.test"),
        ("U%REMOTE.TEST@LOCAL.TEST", "U%REMOTE.TEST@LOCAL.TEST"),
        ("u%remote.test@alias.test", "u%remote.test@alias.test"),
        ("u%remote.test@local.test.", "u%remote.test@local.test"),
        ("remote.test!u@local.test", "remote.test!u@local.test"),
        (
            "\"u@remote.test\"@local.test",
            "\"u@remote.test\"@local.test",
        ),
        (
            "\"u%remote.test\"@local.test",
            "\"u%remote.test\"@local.test",
        ),
        (
            "\"remote.test!u\"@alias.test",
            "\"remote.test!u\"@alias.test",
        ),
        ("@local.test:u@remote.test", "u@remote.test"),
        ("@local.test,@alias.test:u@remote.test", "u@remote.test"),
        ("@[127.0.0.1]:u@remote.test", "u@remote.test"),
        ("u@[127.0.0.1]", "u@[127.0.0.1]"),
        ("u@[127.0.0.2]", "u@[127.0.0.2]"),
        ("u@[IPv6:::1]", "u@[IPv6:::1]"),
        ("u@local.test.remote.test", "u@local.test.remote.test"),
        ("u@xlocal.test", "u@xlocal.test"),
        ("u@local.testx", "u@local.testx"),
        ("u@remote-local.test", "u@remote-local.test"),
        ("u@sub.local.test", "u@sub.local.test"),
        ("u@remote.test.", "u@remote.test"),
    ] {
        c.expect(
            &format!("RCPT TO:<{rcpt}>"),
            &format!("550 5.7.1 Unable to relay for {shown}"),
        );
    }
    // Without angle brackets too.
    c.expect(
        "RCPT TO:u%remote.test@local.test",
        "550 5.7.1 Unable to relay for u%remote.test@local.test",
    );
    c.expect("DATA", "554 5.5.1 No valid recipients");
    // None of them slipped into the envelope: a message with one real recipient carries only it.
    c.expect("RCPT TO:<ok@local.test>", "250 2.1.5 ok@local.test");
    c.ok("DATA", 354);
    c.send(message("after tricks").as_bytes());
    c.send(b"\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    c.ok("QUIT", 221);
    let d = srv.wait_files("Drop", 1);
    assert_eq!(d.len(), 1);
    assert!(srv.files("Queue").is_empty(), "{:?}", srv.files("Queue"));
    let text = read_text(&d[0]);
    assert_eq!(x_receivers(&text), ["ok@local.test"], "{text}");
}

#[test]
fn relay_test_battery_with_local_and_null_senders() {
    let srv = Builder::new().key("MaxSmtpErrors", "1000").start();
    let mut c = outsider(&srv);
    const DENIED: &str = "550 5.7.1 Unable to relay for ";
    const INVALID: &str = "501 5.1.3 Invalid address";
    let battery: &[(&str, &str)] = &[
        ("<relaytest@remote.test>", DENIED),
        ("<relaytest%remote.test@local.test>", DENIED),
        ("<relaytest%remote.test@[127.0.0.1]>", DENIED),
        ("<relaytest%remote.test@[127.0.0.2]>", DENIED),
        ("<\"relaytest@remote.test\">", INVALID),
        ("<\"relaytest%remote.test\">", INVALID),
        ("<relaytest%remote.test>", INVALID),
        ("<relaytest@remote.test@local.test>", INVALID),
        ("<relaytest@local.test@remote.test>", INVALID),
        ("<\"relaytest@remote.test\"@local.test>", DENIED),
        ("<\"relaytest@remote.test\"@[127.0.0.1]>", DENIED),
        ("<relaytest@remote.test@[127.0.0.1]>", INVALID),
        ("<@local.test:relaytest@remote.test>", DENIED),
        ("<@[127.0.0.1]:relaytest@remote.test>", DENIED),
        ("<remote.test!relaytest>", INVALID),
        ("<remote.test!relaytest@local.test>", DENIED),
        ("<remote.test!relaytest@[127.0.0.1]>", DENIED),
        ("<relaytest@[127.0.0.2]>", DENIED),
        ("<relaytest@remote.test.>", DENIED),
        ("<relaytest@local.test.remote.test>", DENIED),
    ];
    for sender in [
        "<>",
        "<spamtest@local.test>",
        "<postmaster@local.test>",
        "<Postmaster>",
        "<u@alias.test>",
        "<u@[127.0.0.2]>",
    ] {
        let r = c.cmd(&format!("MAIL FROM:{sender}"));
        assert_eq!(r.code, 250, "MAIL FROM:{sender} -> {r:?}");
        for (rcpt, want) in battery {
            let r = c.cmd(&format!("RCPT TO:{rcpt}"));
            assert!(
                r.last().starts_with(want),
                "MAIL FROM:{sender} RCPT TO:{rcpt} -> {r:?}, want {want}"
            );
        }
        c.expect("DATA", "554 5.5.1 No valid recipients");
        c.expect("RSET", "250 2.0.0 Resetting");
    }
    assert_nothing_written(&srv, c);
}

/// A client that claims to be us, or a local host, in HELO/EHLO gains nothing: relay is decided on
/// the client's address (and AUTH), never on what it says its name is.
#[test]
fn helo_claiming_to_be_us_does_not_open_the_relay() {
    let srv = Builder::new().key("MaxSmtpErrors", "1000").start();
    for name in ["mx.mailroot.test", "localhost", "[127.0.0.1]", "local.test"] {
        let mut c = Client::connect_from("127.0.0.2", srv.addr());
        assert_eq!(c.reply().code, 220);
        c.ok(&format!("EHLO {name}"), 250);
        c.ok("MAIL FROM:<postmaster@local.test>", 250);
        c.expect(
            "RCPT TO:<victim@remote.test>",
            "550 5.7.1 Unable to relay for victim@remote.test",
        );
        c.ok(&format!("HELO {name}"), 250);
        c.ok("MAIL FROM:<>", 250);
        c.expect(
            "RCPT TO:<victim@remote.test>",
            "550 5.7.1 Unable to relay for victim@remote.test",
        );
        assert_nothing_written(&srv, c);
    }
}
