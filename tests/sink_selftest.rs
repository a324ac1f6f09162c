//! Tests of the scriptable SMTP sink (tests/common/sink.rs) itself, with the kit's client (trusting
//! the TestCa root for the TLS modes).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::sink::{Script, Sink, SinkBuilder, Stage, TestCa, start_same_port};
use common::*;

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn plain_transactions_are_recorded_raw_and_unstuffed() {
    let sink = Sink::start_default();
    let mut c = Client::connect(sink.addr);
    let ehlo = c.hello();
    for k in [
        "PIPELINING",
        "8BITMIME",
        "SIZE 10485760",
        "ENHANCEDSTATUSCODES",
        "DSN",
    ] {
        assert!(ehlo.has(k), "{k} missing from {ehlo:?}");
    }
    assert!(!ehlo.has("STARTTLS"));
    assert!(!ehlo.lines.iter().any(|l| l.starts_with("AUTH")));

    c.ok("MAIL FROM:<a@x.test> SIZE=100 BODY=8BITMIME", 250);
    c.ok("RCPT TO:<b@y.test> NOTIFY=SUCCESS,FAILURE", 250);
    c.ok("RCPT TO:<c@y.test>", 250);
    c.ok("DATA", 354);
    c.send(b"Subject: t\r\n\r\n..leading dot\r\nline\r\n.\r\n");
    assert_eq!(c.reply().code, 250);

    // A second transaction on the same connection, with the null sender.
    let r = c.transaction("<>", &["<d@y.test>"], "x\r\n");
    assert_eq!(r.code, 250);
    c.ok("RSET", 250);
    c.ok("NOOP", 250);
    c.ok("QUIT", 221);
    c.assert_closed();

    let m = sink.wait_messages(2);
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].mail_from, "<a@x.test> SIZE=100 BODY=8BITMIME");
    assert_eq!(m[0].sender_addr(), "a@x.test");
    assert_eq!(
        m[0].rcpts,
        vec!["<b@y.test> NOTIFY=SUCCESS,FAILURE", "<c@y.test>"]
    );
    assert_eq!(m[0].rcpt_addrs(), vec!["b@y.test", "c@y.test"]);
    assert_eq!(m[0].text(), "Subject: t\r\n\r\n.leading dot\r\nline\r\n");
    assert!(!m[0].bare_line_endings);
    assert_eq!(m[0].helo, "client.test");
    assert!(m[0].ehlo && !m[0].tls && m[0].tls_version.is_none());
    assert_eq!(m[0].auth_user, None);
    assert_eq!(m[0].connection, 0);
    assert_eq!(m[1].sender_addr(), "");
    assert_eq!(m[1].text(), "x\r\n");
    assert_eq!(sink.connections(), 1);
    assert!(!sink.injection_detected());
    let cmds = sink.commands();
    assert!(cmds.iter().any(|l| l.contains("SIZE=100")), "{cmds:?}");
    assert!(cmds.iter().any(|l| l.contains("NOTIFY=")), "{cmds:?}");
    assert_eq!(cmds.first().map(String::as_str), Some("EHLO client.test"));
    assert_eq!(cmds.last().map(String::as_str), Some("QUIT"));
}

#[test]
fn bare_line_endings_in_data_are_flagged() {
    let sink = Sink::start_default();
    let mut c = Client::connect(sink.addr);
    c.hello();
    for body in ["a\nb\r\n", "a\rb\r\n", "clean\r\n"] {
        assert_eq!(c.transaction("<a@x.test>", &["<b@y.test>"], body).code, 250);
    }
    // A terminator with a bare LF still ends the message, flagged.
    c.ok("MAIL FROM:<a@x.test>", 250);
    c.ok("RCPT TO:<b@y.test>", 250);
    c.ok("DATA", 354);
    c.send(b"z\r\n.\n");
    assert_eq!(c.reply().code, 250);
    let m = sink.wait_messages(4);
    let flags: Vec<bool> = m.iter().map(|d| d.bare_line_endings).collect();
    assert_eq!(flags, vec![true, true, false, true]);
    assert_eq!(m[2].longest_line, 5);
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let sink = Sink::builder()
        .on_rcpt("bad@", "550 5.1.1 No such user")
        .start();
    let mut c = Client::connect(sink.addr);
    c.hello();
    c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<bad@y.test>\r\nDATA\r\n");
    let codes: Vec<u16> = (0..4).map(|_| c.reply().code).collect();
    assert_eq!(codes, vec![250, 250, 550, 354]);
    c.send(b"first\r\n.\r\nMAIL FROM:<c@x.test>\r\nRCPT TO:<d@y.test>\r\nDATA\r\n");
    let codes: Vec<u16> = (0..4).map(|_| c.reply().code).collect();
    assert_eq!(codes, vec![250, 250, 250, 354]);
    c.send(b"second\r\n.\r\nQUIT\r\n");
    assert_eq!(c.reply().code, 250);
    assert_eq!(c.reply().code, 221);
    c.assert_closed();
    let m = sink.wait_messages(2);
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].rcpts, vec!["<b@y.test>"]);
    assert_eq!(m[0].rejected_rcpts, vec!["<bad@y.test>"]);
    assert_eq!(m[0].text(), "first\r\n");
    assert_eq!(m[1].text(), "second\r\n");
}

#[test]
fn starttls_then_ehlo_then_mail() {
    let ca = TestCa::new();
    assert!(
        std::fs::read_to_string(ca.ca_pem_path())
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let sink = Sink::builder().starttls(ca.leaf()).require_tls().start();
    let mut c = Client::connect(sink.addr);
    let ehlo = c.hello();
    assert!(ehlo.has("STARTTLS"), "{ehlo:?}");
    c.ok("MAIL FROM:<a@x.test>", 530);
    c.starttls(&ca.client_config(), "127.0.0.1")
        .expect("handshake with the CA-signed leaf");
    // The session was reset: EHLO again first.
    c.ok("MAIL FROM:<a@x.test>", 503);
    let ehlo = c.ok("EHLO client.test", 250);
    assert!(!ehlo.has("STARTTLS"), "{ehlo:?}");
    c.ok("STARTTLS", 503);
    assert_eq!(
        c.transaction("<a@x.test>", &["<b@y.test>"], "secret\r\n")
            .code,
        250
    );
    c.ok("QUIT", 221);
    let m = sink.wait_messages(1);
    assert_eq!(m.len(), 1);
    assert!(m[0].tls);
    assert_eq!(m[0].tls_version.as_deref(), Some("TLSv1_3"));
    assert!(!sink.injection_detected());
    assert!(sink.tls_errors().is_empty());

    // TLS 1.2 only, verified by DNS name with SNI.
    let sink = Sink::builder().starttls(ca.leaf()).tls12_only().start();
    let mut c = Client::connect(sink.addr);
    c.hello();
    c.starttls(&ca.client_config(), "localhost")
        .expect("TLS 1.2 handshake");
    c.ok("EHLO client.test", 250);
    c.transaction("<a@x.test>", &["<b@y.test>"], "x\r\n");
    let m = sink.wait_messages(1);
    assert_eq!(m[0].tls_version.as_deref(), Some("TLSv1_2"));
    assert_eq!(m[0].sni.as_deref(), Some("localhost"));

    // A scripted STARTTLS refusal.
    let sink = Sink::builder()
        .starttls(ca.leaf())
        .on_starttls("454 4.7.0 TLS not available")
        .start();
    let mut c = Client::connect(sink.addr);
    c.hello();
    c.ok("STARTTLS", 454);
    assert_eq!(
        c.transaction("<a@x.test>", &["<b@y.test>"], "x\r\n").code,
        250
    );
    assert!(!sink.wait_messages(1)[0].tls);
}

#[test]
fn plaintext_pipelined_after_starttls_is_detected() {
    let ca = TestCa::new();
    let sink = Sink::builder().starttls(ca.leaf()).start();
    let mut c = Client::connect(sink.addr);
    c.hello();
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n");
    assert_eq!(c.reply().code, 220);
    assert!(sink.wait_until(|s| s.injection_detected()));
    let injected = sink.injected();
    assert!(
        String::from_utf8_lossy(&injected[0]).starts_with("MAIL"),
        "{injected:?}"
    );
}

#[test]
fn untrusted_expired_and_misnamed_certificates_fail_the_handshake() {
    let ca = TestCa::new();
    for (cert, expect) in [
        (ca.untrusted_leaf(), "issuer"),
        (ca.expired_leaf(), "expired"),
        (ca.leaf_for(&["other.test"]), "not valid for name"),
    ] {
        let sink = Sink::builder().starttls(cert).start();
        let mut c = Client::connect(sink.addr);
        c.hello();
        let err = c
            .starttls(&ca.client_config(), "127.0.0.1")
            .expect_err("the client must reject the certificate");
        assert!(err.to_lowercase().contains(expect), "{err}");
        assert!(sink.wait_until(|s| !s.tls_errors().is_empty()));
        assert!(sink.transactions().is_empty());
    }
}

#[test]
fn implicit_tls_from_the_first_byte() {
    let ca = TestCa::new();
    let sink = Sink::builder()
        .bind("127.0.0.2")
        .implicit_tls(ca.leaf())
        .start();
    let mut c = Client::connect_tls(sink.addr, &ca.client_config(), &sink.addr.ip().to_string());
    let ehlo = c.hello();
    assert!(!ehlo.has("STARTTLS"));
    assert_eq!(
        c.transaction("<a@x.test>", &["<b@y.test>"], "hi\r\n").code,
        250
    );
    c.ok("QUIT", 221);
    let m = sink.wait_messages(1);
    assert!(m[0].tls && m[0].tls_version.is_some());
    // A plaintext client gets no greeting (only a TLS alert record, then the close).
    let mut p = Dial::new().tcp(sink.addr).expect("connect");
    p.write_all(b"EHLO plain.test\r\n").unwrap();
    let mut got = Vec::new();
    let _ = p.read_to_end(&mut got);
    assert!(!got.starts_with(b"220"), "{got:?}");
    assert!(sink.wait_until(|s| !s.tls_errors().is_empty()));
}

#[test]
fn auth_login_and_plain_succeed_and_fail() {
    let sink = Sink::builder()
        .auth("user", "secret", &["LOGIN", "PLAIN"])
        .require_auth()
        .start();
    let b = |s: &str| b64(s.as_bytes());

    // LOGIN with prompts.
    let mut c = Client::connect(sink.addr);
    let ehlo = c.hello();
    assert!(ehlo.has("AUTH LOGIN PLAIN"), "{ehlo:?}");
    assert_eq!(
        c.ok("MAIL FROM:<a@x.test>", 530).lines[0],
        "5.7.0 Authentication required"
    );
    assert_eq!(c.ok("AUTH LOGIN", 334).lines[0], "VXNlcm5hbWU6");
    assert_eq!(c.ok(&b("user"), 334).lines[0], "UGFzc3dvcmQ6");
    c.ok(&b("secret"), 235);
    c.ok("AUTH PLAIN", 503);
    assert_eq!(
        c.transaction("<a@x.test>", &["<b@y.test>"], "1\r\n").code,
        250
    );

    // PLAIN with an initial response.
    let mut c = Client::connect(sink.addr);
    c.hello();
    c.ok(&format!("AUTH PLAIN {}", b("\0user\0secret")), 235);
    assert_eq!(
        c.transaction("<a@x.test>", &["<b@y.test>"], "2\r\n").code,
        250
    );

    // PLAIN without an initial response.
    let mut c = Client::connect(sink.addr);
    c.hello();
    c.ok("AUTH PLAIN", 334);
    c.ok(&b("\0user\0secret"), 235);
    assert_eq!(
        c.transaction("<a@x.test>", &["<b@y.test>"], "3\r\n").code,
        250
    );

    // Failures.
    let mut c = Client::connect(sink.addr);
    c.hello();
    c.ok("AUTH LOGIN", 334);
    c.ok(&b("user"), 334);
    assert_eq!(
        c.ok(&b("wrong"), 535).lines[0],
        "5.7.8 Authentication credentials invalid"
    );
    c.ok(&format!("AUTH PLAIN {}", b("\0user\0nope")), 535);
    c.ok(&format!("AUTH LOGIN {}", b("someone")), 334);
    c.ok(&b("secret"), 535);
    c.ok("AUTH CRAM-MD5", 504);
    c.ok("MAIL FROM:<a@x.test>", 530);

    let m = sink.wait_messages(3);
    assert_eq!(m.len(), 3);
    assert!(m.iter().all(|d| d.auth_user.as_deref() == Some("user")));
    let attempts = sink.auth_attempts();
    let summary: Vec<(&str, &str, bool)> = attempts
        .iter()
        .map(|a| (a.mechanism.as_str(), a.user.as_str(), a.success))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("LOGIN", "user", true),
            ("PLAIN", "user", true),
            ("PLAIN", "user", true),
            ("LOGIN", "user", false),
            ("PLAIN", "user", false),
            ("LOGIN", "someone", false),
        ]
    );
}

#[test]
fn scripted_replies_for_rcpt_mail_and_data() {
    let sink = Sink::builder()
        .on_rcpt("bad@", "550 5.1.1 No such user")
        .on_rcpt("full@", "452 4.2.2 Mailbox full")
        .start();
    let mut c = Client::connect(sink.addr);
    c.hello();
    c.ok("MAIL FROM:<a@x.test>", 250);
    c.ok("RCPT TO:<good@y.test>", 250);
    let r = c.ok("RCPT TO:<BAD@y.test>", 550);
    assert_eq!(r.lines, vec!["5.1.1 No such user"]);
    c.ok("RCPT TO:<full@y.test>", 452);
    c.ok("DATA", 354);
    c.send(b"x\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    let m = sink.wait_messages(1);
    assert_eq!(m[0].rcpts, vec!["<good@y.test>"]);
    assert_eq!(m[0].rejected_rcpts, vec!["<BAD@y.test>", "<full@y.test>"]);

    // MAIL and the final reply scripted; a multi-line reply.
    let sink = Sink::builder()
        .on_data("451 4.3.0 Try later\n451 4.3.0 really")
        .start();
    let mut c = Client::connect(sink.addr);
    c.hello();
    let r = c.transaction("<a@x.test>", &["<b@y.test>"], "x\r\n");
    assert_eq!(r.code, 451);
    assert_eq!(r.lines, vec!["4.3.0 Try later", "4.3.0 really"]);
    let t = sink.wait_transactions(1);
    assert_eq!(
        t[0].reply.as_deref(),
        Some("451 4.3.0 Try later\n451 4.3.0 really")
    );
    assert!(sink.messages().is_empty());

    let sink = Sink::builder().on_mail("421 4.3.2 Shutting down").start();
    let mut c = Client::connect(sink.addr);
    c.hello();
    c.ok("MAIL FROM:<a@x.test>", 421);
    c.assert_closed();
}

#[test]
fn drop_at_data_and_at_end_of_data() {
    let sink = Sink::builder().drop_at(Stage::Data).start();
    let mut c = Client::connect(sink.addr);
    c.hello();
    c.ok("MAIL FROM:<a@x.test>", 250);
    c.ok("RCPT TO:<b@y.test>", 250);
    c.send(b"DATA\r\n");
    assert!(c.try_reply().is_none());
    assert!(sink.transactions().is_empty());

    let sink = Sink::builder().drop_at(Stage::EndOfData).start();
    let mut c = Client::connect(sink.addr);
    c.hello();
    c.ok("MAIL FROM:<a@x.test>", 250);
    c.ok("RCPT TO:<b@y.test>", 250);
    c.ok("DATA", 354);
    c.send(b"body\r\n.\r\n");
    assert!(c.try_reply().is_none());
    let t = sink.wait_transactions(1);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].reply, None);
    assert_eq!(t[0].text(), "body\r\n");
    assert!(sink.messages().is_empty());

    for stage in [Stage::Connect, Stage::Ehlo, Stage::Mail, Stage::Rcpt] {
        let sink = Sink::builder().drop_at(stage).start();
        let mut c = Client::connect(sink.addr);
        if stage == Stage::Connect {
            assert!(c.try_reply().is_none());
            continue;
        }
        assert_eq!(c.reply().code, 220);
        if stage == Stage::Ehlo {
            c.send(b"EHLO client.test\r\n");
            assert!(c.try_reply().is_none());
            continue;
        }
        c.ok("EHLO client.test", 250);
        if stage == Stage::Mail {
            c.send(b"MAIL FROM:<a@x.test>\r\n");
            assert!(c.try_reply().is_none());
            continue;
        }
        c.ok("MAIL FROM:<a@x.test>", 250);
        c.send(b"RCPT TO:<b@y.test>\r\n");
        assert!(c.try_reply().is_none());
    }
}

#[test]
fn first_connections_fail_then_later_ones_succeed() {
    let sink = Sink::builder()
        .answers_for_first(2, Script::new().on_connect("421 4.3.2 busy"))
        .answers_for_first(1, Script::new().on_data("451 4.3.0 later"))
        .start();
    for _ in 0..2 {
        let mut c = Client::connect(sink.addr);
        let g = c.reply();
        assert_eq!((g.code, g.lines[0].as_str()), (421, "4.3.2 busy"));
        c.assert_closed();
    }
    let mut c = Client::connect(sink.addr);
    c.hello();
    assert_eq!(
        c.transaction("<a@x.test>", &["<b@y.test>"], "x\r\n").code,
        451
    );
    // The default script again from the 4th connection on.
    let mut c = Client::connect(sink.addr);
    c.hello();
    assert_eq!(
        c.transaction("<a@x.test>", &["<b@y.test>"], "x\r\n").code,
        250
    );
    let m = sink.wait_messages(1);
    assert_eq!(m[0].connection, 3);
    assert_eq!(sink.connections(), 4);
    assert_eq!(sink.transactions().len(), 2);
    assert!(sink.commands_of(0).is_empty());
}

#[test]
fn no_ehlo_forces_helo() {
    let sink = Sink::builder().no_ehlo().start();
    let mut c = Client::connect(sink.addr);
    assert_eq!(c.reply().code, 220);
    c.ok("EHLO client.test", 502);
    c.ok("MAIL FROM:<a@x.test>", 503);
    c.ok("HELO client.test", 250);
    assert_eq!(
        c.transaction("<a@x.test>", &["<b@y.test>"], "x\r\n").code,
        250
    );
    let m = sink.wait_messages(1);
    assert!(!m[0].ehlo);
    assert_eq!(m[0].helo, "client.test");
}

#[test]
fn sinks_on_several_loopback_ips_share_one_port() {
    let sinks = start_same_port(vec![
        SinkBuilder::new().bind("127.0.0.2").hostname("mx2.test"),
        SinkBuilder::new()
            .bind("127.0.0.3")
            .hostname("mx3.test")
            .ehlo_extensions(vec!["8BITMIME"]),
    ]);
    assert_eq!(sinks.len(), 2);
    assert_eq!(sinks[0].addr.port(), sinks[1].addr.port());
    assert_eq!(sinks[0].addr.ip().to_string(), "127.0.0.2");
    assert_eq!(sinks[1].addr.ip().to_string(), "127.0.0.3");
    let mut c = Client::connect(sinks[1].addr);
    let g = c.reply();
    assert!(g.lines[0].starts_with("mx3.test"), "{g:?}");
    let ehlo = c.ok("EHLO client.test", 250);
    assert_eq!(ehlo.lines[1..], ["8BITMIME".to_string()]);
    assert_eq!(sinks[0].connections(), 0);
    assert_eq!(sinks[1].connections(), 1);
}

#[test]
fn dropping_the_sink_closes_open_connections() {
    let sink = Sink::start_default();
    let addr = sink.addr;
    let mut c = Client::connect(addr);
    c.hello();
    assert_eq!(sink.wait_connections(1), 1);
    drop(sink);
    c.assert_closed();
    // The listener is gone too.
    assert!(TcpStream::connect_timeout(&addr, WAIT).is_err());
}

#[test]
fn count_only_keeps_the_count_and_the_time_and_nothing_else() {
    let sink = Sink::builder()
        .hostname("sink.load.test")
        .ehlo_extensions(["PIPELINING", "8BITMIME", "SIZE 104857600"])
        .count_only()
        .start();
    let before = std::time::Instant::now();
    let mut c = Client::connect(sink.addr);
    let ehlo = c.hello();
    assert!(ehlo.has("SIZE 104857600"), "{ehlo:?}");
    // Pipelined, two transactions: the replies come in order.
    c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
    let codes: Vec<u16> = (0..3).map(|_| c.reply().code).collect();
    assert_eq!(codes, vec![250, 250, 354]);
    c.send(b"one\r\n..two\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    assert_eq!(
        c.transaction("<a@x.test>", &["<b@y.test>"], "second\r\n")
            .code,
        250
    );
    c.ok("QUIT", 221);
    assert!(sink.wait_until(|s| s.count() == 2));
    assert!(sink.last_at() >= before, "the time of the last message");
    assert!(sink.transactions().is_empty() && sink.commands().is_empty());
    assert_eq!(sink.connections(), 1);
}
