//! The SMTP dialogue as a client sees it: banner, EHLO list, every command and its reply text,
//! pipelining, BDAT/CHUNKING, a real client (lettre), and what the files in Drop and Queue look like.

mod common;
use common::*;

use std::fs;
use std::path::Path;

const FQDN: &str = "mx.mailroot.test";

fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_str().unwrap().to_string()
}

/// The header section of a stored file (envelope block included), without the blank line.
fn header_section(text: &str) -> &str {
    let end = text
        .find("\r\n\r\n")
        .expect("a blank line after the headers");
    &text[..end]
}

/// Everything from the Received header on (what follows the envelope block).
fn after_envelope(text: &str) -> &str {
    let at = text.find("Received: ").expect("a Received header");
    &text[at..]
}

/// `Sun, 22 Nov 2026 07:51:25 +0000`
fn assert_rfc5322_date(s: &str) {
    let parts: Vec<&str> = s.split_whitespace().collect();
    assert_eq!(parts.len(), 6, "date {s:?}");
    assert!(
        ["Sun,", "Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,"].contains(&parts[0]),
        "weekday in {s:?}"
    );
    let day: u32 = parts[1].parse().unwrap_or(0);
    assert!((1..=31).contains(&day), "day in {s:?}");
    assert!(
        [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
        ]
        .contains(&parts[2]),
        "month in {s:?}"
    );
    assert!(
        parts[3].len() == 4 && parts[3].bytes().all(|b| b.is_ascii_digit()),
        "year in {s:?}"
    );
    let hms: Vec<&str> = parts[4].split(':').collect();
    assert!(
        hms.len() == 3
            && hms
                .iter()
                .all(|x| x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit())),
        "time in {s:?}"
    );
    assert_eq!(parts[5], "+0000", "zone in {s:?}");
}

fn server() -> Server {
    Builder::new().key("MaxSmtpErrors", "1000").start()
}

// ---------------------------------------------------------------------------------------------
// Greeting, EHLO, HELO
// ---------------------------------------------------------------------------------------------

#[test]
fn banner() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    let g = c.reply();
    assert_eq!(g.code, 220, "{g:?}");
    assert_eq!(g.lines.len(), 1, "one-line banner: {g:?}");
    let line = g.last();
    let prefix = format!(
        "220 {FQDN} mailroot ESMTP MAIL Service, Version: {} ready at ",
        env!("CARGO_PKG_VERSION")
    );
    assert!(line.starts_with(&prefix), "{line:?}");
    assert_rfc5322_date(line[prefix.len()..].trim());
}

#[test]
fn ehlo_reply_lines() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.reply();
    let r = c.ok("EHLO client.test", 250);
    assert_eq!(
        r.lines,
        [
            "mx.mailroot.test Hello [127.0.0.1]",
            "SIZE 2097152",
            "PIPELINING",
            "DSN",
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            "BINARYMIME",
            "CHUNKING",
            "VRFY",
            "HELP",
            "OK",
        ],
        "{r:?}"
    );
    assert_eq!(r.last(), "250 OK");
    // EHLO may be repeated, and is case-insensitive.
    let again = c.ok("ehlo other.test", 250);
    assert_eq!(again.lines, r.lines);
}

#[test]
fn ehlo_size_follows_max_message_size() {
    let srv = Builder::new().key("MaxMessageSize", "0").start();
    let mut c = srv.connect();
    c.reply();
    let r = c.ok("EHLO client.test", 250);
    assert_eq!(r.lines[1], "SIZE", "unlimited: bare keyword: {r:?}");

    let srv = Builder::new().key("MaxMessageSize", "12345").start();
    let mut c = srv.connect();
    c.reply();
    let r = c.ok("EHLO client.test", 250);
    assert_eq!(r.lines[1], "SIZE 12345", "{r:?}");
}

#[test]
fn helo_reply_and_smtp_received() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.reply();
    let r = c.ok("HELO client.test", 250);
    assert_eq!(r.lines.len(), 1, "HELO gets a one-line reply: {r:?}");
    assert_eq!(r.last(), "250 mx.mailroot.test Hello [127.0.0.1]");
    let r = c.send_mail("a@b.test", &["u@local.test"], &message("helo"));
    let id = queued_id(&r, FQDN);
    c.ok("QUIT", 221);
    let files = srv.wait_files("Drop", 1);
    assert_eq!(files.len(), 1);
    let text = read_text(&files[0]);
    assert!(
        text.contains(&format!(
            "\r\nReceived: from client.test ([127.0.0.1]) by {FQDN} with SMTP id {id};\r\n"
        )),
        "HELO sessions are SMTP: {text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

#[test]
fn mail_rcpt_data_with_every_parameter() {
    let srv = server();
    let mut c = srv.connect();
    c.hello();
    c.expect(
        "MAIL FROM:<a@b.test> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=QQ314159+2B1",
        "250 2.1.0 a@b.test....Sender OK",
    );
    c.expect(
        "RCPT TO:<u@local.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u+40local.test",
        "250 2.1.5 u@local.test",
    );
    c.expect(
        "RCPT TO:<v@local.test> NOTIFY=NEVER",
        "250 2.1.5 v@local.test",
    );
    c.expect(
        "RCPT TO:<w@local.test> NOTIFY=DELAY",
        "250 2.1.5 w@local.test",
    );
    c.expect("DATA", "354 Start mail input; end with <CRLF>.<CRLF>");
    c.send(message("params").as_bytes());
    c.send(b"\r\n.\r\n");
    let r = c.reply();
    let id = queued_id(&r, FQDN);
    // Lower case verbs and parameters, the null sender, the remaining BODY and RET values.
    c.expect(
        "mail from:<> body=7bit ret=full size=10",
        "250 2.1.0 <>....Sender OK",
    );
    c.expect("rcpt to:<x@local.test>", "250 2.1.5 x@local.test");
    c.expect("data", "354 Start mail input; end with <CRLF>.<CRLF>");
    c.send(b"Subject: null sender\r\n\r\nbounce\r\n.\r\n");
    let r2 = c.reply();
    let id2 = queued_id(&r2, FQDN);
    assert_ne!(id, id2);
    c.ok("QUIT", 221);
    let files = srv.wait_files("Drop", 2);
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(stem(&files[0]), id);
    assert_eq!(stem(&files[1]), id2);
    let first = read_text(&files[0]);
    assert!(
        first.starts_with(
            "x-sender: a@b.test\r\nx-receiver: u@local.test\r\nx-receiver: v@local.test\r\nx-receiver: w@local.test\r\nReceived: "
        ),
        "{first}"
    );
    let second = read_text(&files[1]);
    assert!(
        second.starts_with("x-sender: <>\r\nx-receiver: x@local.test\r\nReceived: "),
        "{second}"
    );
    assert!(second.ends_with("\r\n\r\nbounce\r\n"), "{second:?}");
}

#[test]
fn unknown_parameters_get_555() {
    let srv = server();
    let mut c = srv.connect();
    c.hello();
    for line in [
        "MAIL FROM:<a@b.test> SMTPUTF8",
        "MAIL FROM:<a@b.test> FOO=BAR",
        "MAIL FROM:<a@b.test> SIZE=10 XYZ=1",
        "MAIL FROM:<a@b.test> NOTIFY=NEVER",
    ] {
        c.expect(line, "555 5.5.4 Unsupported parameter");
    }
    // None of them opened a transaction.
    c.expect("RCPT TO:<u@local.test>", "503 5.5.1 Need mail command");
    c.expect("MAIL FROM:<a@b.test>", "250 2.1.0 a@b.test....Sender OK");
    for line in [
        "RCPT TO:<u@local.test> SIZE=1",
        "RCPT TO:<u@local.test> FOO=BAR",
        "RCPT TO:<u@local.test> XYZ",
        "RCPT TO:<u@local.test> RET=HDRS",
    ] {
        c.expect(line, "555 5.5.4 Unsupported parameter");
    }
    c.expect("RCPT TO:<u@local.test>", "250 2.1.5 u@local.test");
}

#[test]
fn bad_parameter_values_get_501_5_5_4() {
    let srv = server();
    let mut c = srv.connect();
    c.hello();
    for (line, want) in [
        (
            "MAIL FROM:<a@b.test> SIZE=big",
            "501 5.5.4 Invalid parameter: SIZE needs a number",
        ),
        (
            "MAIL FROM:<a@b.test> BODY=9BIT",
            "501 5.5.4 Invalid parameter: BODY must be 7BIT, 8BITMIME or BINARYMIME",
        ),
        (
            "MAIL FROM:<a@b.test> RET=SOME",
            "501 5.5.4 Invalid parameter: RET must be FULL or HDRS",
        ),
        (
            "MAIL FROM:<a@b.test> ENVID=a+zz",
            "501 5.5.4 Invalid parameter: ENVID must be xtext of at most 100 characters",
        ),
        (
            "MAIL FROM:<a@b.test> SIZE=1 SIZE=2",
            "501 5.5.4 Invalid parameter: parameter given twice",
        ),
    ] {
        c.expect(line, want);
    }
    c.expect("MAIL FROM:<a@b.test>", "250 2.1.0 a@b.test....Sender OK");
    for (line, want) in [
        (
            "RCPT TO:<u@local.test> NOTIFY=SOMETIMES",
            "501 5.5.4 Invalid parameter: NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY",
        ),
        (
            "RCPT TO:<u@local.test> NOTIFY=NEVER,SUCCESS",
            "501 5.5.4 Invalid parameter: NOTIFY=NEVER cannot be combined",
        ),
        (
            "RCPT TO:<u@local.test> ORCPT=u@local.test",
            "501 5.5.4 Invalid parameter: ORCPT must be type;address",
        ),
    ] {
        c.expect(line, want);
    }
}

#[test]
fn bad_sequence_gets_503() {
    let srv = server();
    let mut c = srv.connect();
    c.reply();
    c.expect("MAIL FROM:<a@b.test>", "503 5.5.1 Send hello first");
    c.expect("RCPT TO:<u@local.test>", "503 5.5.1 Need mail command");
    c.ok("EHLO client.test", 250);
    c.expect("RCPT TO:<u@local.test>", "503 5.5.1 Need mail command");
    c.expect("DATA", "503 5.5.1 Need mail command");
    c.expect("MAIL FROM:<a@b.test>", "250 2.1.0 a@b.test....Sender OK");
    c.expect("MAIL FROM:<a@b.test>", "503 5.5.1 Sender already specified");
    c.expect("DATA", "503 5.5.1 Need rcpt command");
    // EHLO resets the transaction.
    c.ok("EHLO client.test", 250);
    c.expect("RCPT TO:<u@local.test>", "503 5.5.1 Need mail command");
    // So does a finished message.
    let r = c.send_mail("a@b.test", &["u@local.test"], &message("seq"));
    queued_id(&r, FQDN);
    c.expect("RCPT TO:<u@local.test>", "503 5.5.1 Need mail command");
    c.expect("DATA", "503 5.5.1 Need mail command");
    c.ok("QUIT", 221);
    assert_eq!(srv.wait_files("Drop", 1).len(), 1);
}

#[test]
fn bad_syntax_gets_501() {
    let srv = server();
    let mut c = srv.connect();
    c.reply();
    c.expect(
        "EHLO",
        "501 5.5.2 Syntax error: a domain name or address literal is required",
    );
    c.expect("HELO a b", "501 5.5.2 Syntax error: invalid domain name");
    c.ok("EHLO client.test", 250);
    for (line, want) in [
        (
            "MAIL TO:<a@b.test>",
            "501 5.5.2 Syntax error: expected MAIL FROM:<address>",
        ),
        (
            "MAIL",
            "501 5.5.2 Syntax error: expected MAIL FROM:<address>",
        ),
        ("MAIL FROM:<a@b.test", "501 5.1.7 Invalid address"),
        ("MAIL FROM:<a@@b.test>", "501 5.1.7 Invalid address"),
        ("MAIL FROM:<a..b@b.test>", "501 5.1.7 Invalid address"),
        ("MAIL FROM:<a@b.test>x", "501 5.1.7 Invalid address"),
        ("MAIL FROM:<\u{e9}@b.test>", "501 5.1.7 Invalid address"),
    ] {
        c.expect(line, want);
    }
    c.expect("MAIL FROM:<a@b.test>", "250 2.1.0 a@b.test....Sender OK");
    for (line, want) in [
        (
            "RCPT FROM:<u@local.test>",
            "501 5.5.2 Syntax error: expected RCPT TO:<address>",
        ),
        ("RCPT TO:<>", "501 5.1.3 Invalid address"),
        ("RCPT TO:<u>", "501 5.1.3 Invalid address"),
        ("RCPT TO:<u@local..test>", "501 5.1.3 Invalid address"),
        ("RCPT TO:<u@-local.test>", "501 5.1.3 Invalid address"),
        ("RCPT TO:<u@local.test", "501 5.1.3 Invalid address"),
        ("RCPT TO:<u@[1.2.3]>", "501 5.1.3 Invalid address"),
        (
            "DATA now",
            "501 5.5.2 Syntax error: this command takes no arguments",
        ),
        (
            "RSET all",
            "501 5.5.2 Syntax error: this command takes no arguments",
        ),
        (
            "QUIT now",
            "501 5.5.2 Syntax error: this command takes no arguments",
        ),
        (
            "VRFY",
            "501 5.5.2 Syntax error: VRFY needs a user name or address",
        ),
    ] {
        c.expect(line, want);
    }
    // The transaction survived all of that.
    c.expect("RCPT TO:<u@local.test>", "250 2.1.5 u@local.test");
}

#[test]
fn unknown_commands_get_500() {
    let srv = server();
    let mut c = srv.connect();
    c.hello();
    for line in [
        "FOO",
        "EXPN staff",
        "TURN",
        "ETRN local.test",
        "MAILX FROM:<a@b.test>",
        "GET / HTTP/1.1",
        "",
    ] {
        c.expect(line, "500 5.5.1 Unrecognized command");
    }
    // Known, but not configured here (no certificate, AuthFlags = 1): a clear answer, not 500.
    c.expect(
        "STARTTLS",
        "454 4.7.0 TLS not available due to temporary reason",
    );
    c.expect("AUTH LOGIN", "503 5.5.1 AUTH is not available");
    c.expect("NOOP", "250 2.0.0 OK");
}

#[test]
fn rset_noop_vrfy_help_quit() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.reply();
    // HELP, NOOP and VRFY need no EHLO.
    let h = c.ok("HELP", 214);
    assert_eq!(
        h.lines,
        [
            "This server supports the following commands:",
            "HELO EHLO RCPT DATA RSET MAIL QUIT HELP BDAT VRFY NOOP"
        ],
        "{h:?}"
    );
    let h2 = c.ok("HELP MAIL", 214);
    assert_eq!(h2.lines, h.lines);
    c.expect("NOOP", "250 2.0.0 OK");
    c.expect("NOOP anything at all", "250 2.0.0 OK");
    c.expect(
        "VRFY admin",
        "252 2.1.5 Cannot VRFY user, but will take message for <admin@local.test>",
    );
    c.expect(
        "VRFY <someone@remote.test>",
        "252 2.1.5 Cannot VRFY user, but will take message for <someone@remote.test>",
    );
    c.ok("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@b.test>", "250 2.1.0 a@b.test....Sender OK");
    c.expect("RCPT TO:<u@local.test>", "250 2.1.5 u@local.test");
    c.expect("RSET", "250 2.0.0 Resetting");
    // RSET dropped the transaction.
    c.expect("DATA", "503 5.5.1 Need mail command");
    c.expect("MAIL FROM:<a@b.test>", "250 2.1.0 a@b.test....Sender OK");
    c.expect("RCPT TO:<u@local.test>", "250 2.1.5 u@local.test");
    // QUIT in the middle of a transaction: nothing is written, and the server closes.
    c.expect(
        "QUIT",
        "221 2.0.0 mx.mailroot.test Service closing transmission channel",
    );
    assert_eq!(c.read_to_end(), "", "nothing after 221, then the close");
    assert!(srv.files("Drop").is_empty());
    assert!(srv.files("Queue").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Pipelining
// ---------------------------------------------------------------------------------------------

#[test]
fn pipelined_transaction_in_one_write() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    assert_eq!(c.reply().code, 220);
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nRCPT TO:<v@alias.test>\r\nDATA\r\n",
    );
    let ehlo = c.reply();
    assert_eq!(ehlo.code, 250);
    assert_eq!(ehlo.lines[0], "mx.mailroot.test Hello [127.0.0.1]");
    assert_eq!(ehlo.last(), "250 OK");
    assert_eq!(c.reply().last(), "250 2.1.0 a@b.test....Sender OK");
    assert_eq!(c.reply().last(), "250 2.1.5 u@local.test");
    assert_eq!(c.reply().last(), "250 2.1.5 v@alias.test");
    assert_eq!(
        c.reply().last(),
        "354 Start mail input; end with <CRLF>.<CRLF>"
    );

    // The data, its terminator and the next transaction, in one write.
    c.send(
        b"Subject: one\r\n\r\nfirst\r\n.\r\nMAIL FROM:<c@d.test>\r\nRCPT TO:<w@local.test>\r\nDATA\r\n",
    );
    let id1 = queued_id(&c.reply(), FQDN);
    assert_eq!(c.reply().last(), "250 2.1.0 c@d.test....Sender OK");
    assert_eq!(c.reply().last(), "250 2.1.5 w@local.test");
    assert_eq!(
        c.reply().last(),
        "354 Start mail input; end with <CRLF>.<CRLF>"
    );
    c.send(b"Subject: two\r\n\r\nsecond\r\n.\r\nQUIT\r\n");
    let id2 = queued_id(&c.reply(), FQDN);
    assert_eq!(
        c.reply().last(),
        "221 2.0.0 mx.mailroot.test Service closing transmission channel"
    );
    assert_eq!(c.read_to_end(), "");
    assert_ne!(id1, id2);

    let files = srv.wait_files("Drop", 2);
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(stem(&files[0]), id1);
    assert_eq!(stem(&files[1]), id2);
    let one = read_text(&files[0]);
    assert_eq!(x_receivers(&one), ["u@local.test", "v@alias.test"]);
    assert!(one.starts_with("x-sender: a@b.test\r\n"), "{one}");
    assert!(one.ends_with("\r\n\r\nfirst\r\n"), "{one:?}");
    assert!(!one.contains("second"));
    let two = read_text(&files[1]);
    assert_eq!(x_receivers(&two), ["w@local.test"]);
    assert!(two.starts_with("x-sender: c@d.test\r\n"), "{two}");
    assert!(two.ends_with("\r\n\r\nsecond\r\n"), "{two:?}");
}

#[test]
fn pipelined_errors_keep_their_place() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.reply();
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<>\r\nRCPT TO:<u@local.test>\r\nFOO\r\nRCPT TO:<u@local.test> BAR=1\r\nNOOP\r\nDATA\r\n",
    );
    assert_eq!(c.reply().last(), "250 OK");
    assert_eq!(c.reply().last(), "250 2.1.0 a@b.test....Sender OK");
    assert_eq!(c.reply().last(), "501 5.1.3 Invalid address");
    assert_eq!(c.reply().last(), "250 2.1.5 u@local.test");
    assert_eq!(c.reply().last(), "500 5.5.1 Unrecognized command");
    assert_eq!(c.reply().last(), "555 5.5.4 Unsupported parameter");
    assert_eq!(c.reply().last(), "250 2.0.0 OK");
    assert_eq!(
        c.reply().last(),
        "354 Start mail input; end with <CRLF>.<CRLF>"
    );
    c.send(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    queued_id(&c.reply(), FQDN);
    assert_eq!(c.reply().code, 221);
    let files = srv.wait_files("Drop", 1);
    assert_eq!(files.len(), 1);
    assert_eq!(x_receivers(&read_text(&files[0])), ["u@local.test"]);
}

// ---------------------------------------------------------------------------------------------
// BDAT (CHUNKING, BINARYMIME)
// ---------------------------------------------------------------------------------------------

fn bdat(c: &mut Client, chunk: &[u8], last: bool) -> Reply {
    let mut raw = format!(
        "BDAT {}{}\r\n",
        chunk.len(),
        if last { " LAST" } else { "" }
    )
    .into_bytes();
    raw.extend_from_slice(chunk);
    c.send(&raw);
    c.reply()
}

#[test]
fn bdat_chunks_across_commands() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.hello();
    c.ok("MAIL FROM:<a@b.test>", 250);
    c.ok("RCPT TO:<u@local.test>", 250);
    // Chunk borders fall inside a header, between CR and LF, and inside the body. Dots are not
    // special in BDAT: nothing is unstuffed and ".\r\n" ends nothing.
    let chunks: [&[u8]; 4] = [
        b"Subject: chu",
        b"nked\r",
        b"\n\r\n..two dots stay\r\n.\r\nafter a lone dot\r",
        b"\n",
    ];
    for ch in &chunks[..3] {
        let r = bdat(&mut c, ch, false);
        assert_eq!(r.last(), format!("250 2.0.0 {} octets received", ch.len()));
    }
    let r = bdat(&mut c, chunks[3], true);
    let id = queued_id(&r, FQDN);
    // The transaction is over.
    c.expect("RCPT TO:<u@local.test>", "503 5.5.1 Need mail command");
    c.ok("QUIT", 221);
    let files = srv.wait_files("Drop", 1);
    assert_eq!(files.len(), 1);
    assert_eq!(stem(&files[0]), id);
    let text = read_text(&files[0]);
    assert!(
        text.ends_with(&format!(
            "\r\nSubject: chunked\r\nMessage-ID: <{id}@{FQDN}>\r\n\r\n..two dots stay\r\n.\r\nafter a lone dot\r\n"
        )),
        "{text:?}"
    );
}

#[test]
fn bdat_pipelined_with_zero_last() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.reply();
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nBDAT 12\r\nSubject: p\r\nBDAT 8\r\n\r\nbody\r\nBDAT 0 LAST\r\nNOOP\r\n",
    );
    assert_eq!(c.reply().last(), "250 OK");
    assert_eq!(c.reply().last(), "250 2.1.0 a@b.test....Sender OK");
    assert_eq!(c.reply().last(), "250 2.1.5 u@local.test");
    assert_eq!(c.reply().last(), "250 2.0.0 12 octets received");
    assert_eq!(c.reply().last(), "250 2.0.0 8 octets received");
    let id = queued_id(&c.reply(), FQDN);
    assert_eq!(c.reply().last(), "250 2.0.0 OK");
    // A one-chunk message in the same session.
    c.ok("MAIL FROM:<a@b.test>", 250);
    c.ok("RCPT TO:<v@local.test>", 250);
    let id2 = queued_id(&bdat(&mut c, b"Subject: q\r\n\r\nsingle\r\n", true), FQDN);
    c.ok("QUIT", 221);
    let files = srv.wait_files("Drop", 2);
    assert_eq!(files.len(), 2);
    assert_eq!(stem(&files[0]), id);
    assert_eq!(stem(&files[1]), id2);
    assert!(read_text(&files[0]).ends_with("\r\n\r\nbody\r\n"));
    assert!(read_text(&files[1]).ends_with("\r\n\r\nsingle\r\n"));
}

#[test]
fn bdat_refused_chunk_is_consumed() {
    let srv = server();
    let mut c = srv.connect();
    c.hello();
    // The chunk looks like a command; it must be eaten as data, then refused.
    let r = bdat(&mut c, b"QUIT\r\n", false);
    assert_eq!(r.last(), "503 5.5.1 Need mail command");
    c.expect("NOOP", "250 2.0.0 OK");
    let r = bdat(&mut c, b"RSET\r\nQUIT\r\n", true);
    assert_eq!(r.last(), "503 5.5.1 Need mail command");
    c.expect("NOOP", "250 2.0.0 OK");
    // Before any RCPT.
    c.ok("MAIL FROM:<a@b.test>", 250);
    let r = bdat(&mut c, b"QUIT\r\n", false);
    assert_eq!(r.last(), "503 5.5.1 Need rcpt command");
    c.expect("NOOP", "250 2.0.0 OK");
    // The transaction is still open and goes on normally.
    c.ok("RCPT TO:<u@local.test>", 250);
    let id = queued_id(&bdat(&mut c, b"Subject: ok\r\n\r\nfine\r\n", true), FQDN);
    c.ok("QUIT", 221);
    let files = srv.wait_files("Drop", 1);
    assert_eq!(files.len(), 1);
    assert_eq!(stem(&files[0]), id);
    assert!(!read_text(&files[0]).contains("QUIT"));
}

#[test]
fn bdat_abandoned_by_rset_writes_nothing() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.hello();
    c.ok("MAIL FROM:<a@b.test>", 250);
    c.ok("RCPT TO:<u@local.test>", 250);
    let r = bdat(&mut c, b"Subject: gone\r\n\r\n", false);
    assert_eq!(r.last(), "250 2.0.0 17 octets received");
    c.expect("DATA", "503 5.5.1 DATA is not allowed after BDAT");
    c.expect("RSET", "250 2.0.0 Resetting");
    let r = c.send_mail("a@b.test", &["v@local.test"], &message("after rset"));
    let id = queued_id(&r, FQDN);
    c.ok("QUIT", 221);
    let files = srv.wait_files("Drop", 1);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(stem(&files[0]), id);
    let text = read_text(&files[0]);
    assert!(!text.contains("gone"), "{text}");
    assert_eq!(x_receivers(&text), ["v@local.test"]);
}

#[test]
fn binarymime_needs_bdat_and_carries_any_octet() {
    let srv = server();
    let mut c = srv.connect();
    c.hello();
    c.ok("MAIL FROM:<a@b.test> BODY=BINARYMIME", 250);
    c.ok("RCPT TO:<u@local.test>", 250);
    c.expect("DATA", "503 5.5.1 BODY=BINARYMIME requires BDAT, not DATA");
    let body: &[u8] = b"line one\nline two\0nul\rbare cr\r\n\xff\xfe binary\n";
    let mut msg = b"Subject: binary\r\n\r\n".to_vec();
    msg.extend_from_slice(body);
    let (a, b) = msg.split_at(25);
    assert_eq!(
        bdat(&mut c, a, false).last(),
        "250 2.0.0 25 octets received"
    );
    let id = queued_id(&bdat(&mut c, b, true), FQDN);
    c.ok("QUIT", 221);
    let files = srv.wait_files("Drop", 1);
    assert_eq!(files.len(), 1);
    assert_eq!(stem(&files[0]), id);
    let raw = fs::read(&files[0]).unwrap();
    let mut want = format!("Subject: binary\r\nMessage-ID: <{id}@{FQDN}>\r\n\r\n").into_bytes();
    want.extend_from_slice(body);
    assert!(raw.ends_with(&want), "{:?}", String::from_utf8_lossy(&raw));
}

#[test]
fn bdat_without_binarymime_refuses_bare_lf() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.hello();
    c.ok("MAIL FROM:<a@b.test>", 250);
    c.ok("RCPT TO:<u@local.test>", 250);
    let r = bdat(&mut c, b"Subject: x\r\n\r\nbare\nlf\r\n", true);
    assert_eq!(
        r.last(),
        "550 5.6.0 Message refused: bare LF in data; lines must end with CRLF"
    );
    c.expect("NOOP", "250 2.0.0 OK");
    c.ok("QUIT", 221);
    assert!(srv.files("Drop").is_empty());
    assert!(srv.files("Queue").is_empty());
}

// ---------------------------------------------------------------------------------------------
// A real client
// ---------------------------------------------------------------------------------------------

#[test]
fn lettre_sends_to_two_local_recipients() {
    use lettre::{Message, SmtpTransport, Transport};

    let srv = Builder::new().start();
    let email = Message::builder()
        .from("App <app@example.test>".parse().unwrap())
        .to("First <a@local.test>".parse().unwrap())
        .to("b@alias.test".parse().unwrap())
        .subject("from lettre")
        .body(String::from("Hello from lettre."))
        .unwrap();
    let mailer = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(srv.addr().port())
        .timeout(Some(WAIT))
        .build();
    let resp = mailer.send(&email).expect("lettre send");
    assert!(resp.is_positive(), "{resp:?}");
    let line = resp.first_line().unwrap_or_default().to_string();
    assert!(
        line.starts_with("2.6.0 <")
            && line.ends_with(&format!("@{FQDN}> Queued mail for delivery")),
        "{line:?}"
    );
    let files = srv.wait_files("Drop", 1);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(srv.files("Queue").is_empty());
    let id = stem(&files[0]);
    assert!(line.contains(&format!("<{id}@{FQDN}>")), "{line} vs {id}");
    let text = read_text(&files[0]);
    assert!(text.starts_with("x-sender: app@example.test\r\n"), "{text}");
    assert_eq!(x_receivers(&text), ["a@local.test", "b@alias.test"]);
    assert_eq!(text.matches("x-receiver: ").count(), 2, "{text}");
    assert!(
        text.contains(&format!(
            "\r\nReceived: from [127.0.0.1] ([127.0.0.1]) by {FQDN} with ESMTP id {id};\r\n"
        )),
        "{text}"
    );
    let head = header_section(&text);
    assert!(head.contains("\r\nSubject: from lettre\r\n"), "{head}");
    assert!(
        head.ends_with(&format!("\r\nMessage-ID: <{id}@{FQDN}>")),
        "lettre sends no Message-ID, so one is added: {head}"
    );
    assert!(text.ends_with("\r\n\r\nHello from lettre.\r\n"), "{text:?}");
}

// ---------------------------------------------------------------------------------------------
// What is stored
// ---------------------------------------------------------------------------------------------

#[test]
fn message_id_is_added_when_missing() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.hello();
    let r = c.send_mail(
        "a@b.test",
        &["u@local.test"],
        "From: a@b.test\r\nSubject: no id\r\n\r\nbody text\r\nMessage-ID: <in-body@x> is not a header",
    );
    let id = queued_id(&r, FQDN);
    c.ok("QUIT", 221);
    let files = srv.wait_files("Drop", 1);
    assert_eq!(files.len(), 1);
    assert_eq!(stem(&files[0]), id);
    let text = read_text(&files[0]);
    let head = header_section(&text);
    assert!(
        head.ends_with(&format!("\r\nSubject: no id\r\nMessage-ID: <{id}@{FQDN}>")),
        "{head}"
    );
    assert_eq!(
        head.to_ascii_lowercase().matches("message-id:").count(),
        1,
        "{head}"
    );
    assert!(
        text.ends_with("\r\n\r\nbody text\r\nMessage-ID: <in-body@x> is not a header\r\n"),
        "{text:?}"
    );
}

#[test]
fn message_id_is_kept_when_present() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.hello();
    for hdr in [
        "Message-ID: <abc.123@client.test>",
        "message-id: <lower.case@client.test>",
    ] {
        let body = format!("From: a@b.test\r\n{hdr}\r\nSubject: has id\r\n\r\nbody");
        let r = c.send_mail("a@b.test", &["u@local.test"], &body);
        let id = queued_id(&r, FQDN);
        let path = srv.folder("Drop").join(format!("{id}.eml"));
        let text = read_text(&path);
        let head = header_section(&text);
        assert_eq!(
            head.to_ascii_lowercase().matches("message-id:").count(),
            1,
            "{head}"
        );
        assert!(
            text.ends_with(&format!("\r\n{body}\r\n")),
            "the message is stored unchanged: {text:?}"
        );
        assert!(!text.contains(&format!("@{FQDN}>\r\n")), "{text}");
    }
    c.ok("QUIT", 221);
}

#[test]
fn received_header_follows_the_envelope_block() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.hello();
    let r = c.send_mail(
        "sender@example.test",
        &["one@local.test", "two@local.test"],
        &message("trace"),
    );
    let id = queued_id(&r, FQDN);
    c.ok("QUIT", 221);
    let files = srv.wait_files("Drop", 1);
    assert_eq!(files.len(), 1);
    let text = read_text(&files[0]);
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(lines[0], "x-sender: sender@example.test");
    assert_eq!(lines[1], "x-receiver: one@local.test");
    assert_eq!(lines[2], "x-receiver: two@local.test");
    assert_eq!(
        lines[3],
        format!("Received: from client.test ([127.0.0.1]) by {FQDN} with ESMTP id {id};")
    );
    let date = lines[4]
        .strip_prefix("\t ")
        .unwrap_or_else(|| panic!("folded date line: {:?}", lines[4]));
    assert_rfc5322_date(date);
    assert_eq!(
        lines[5], "From: sender@example.test",
        "the client's first header follows"
    );
    assert_eq!(text.matches("Received: ").count(), 1);
}

#[test]
fn mixed_local_and_remote_recipients_split_into_drop_and_queue() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.hello();
    c.expect(
        "MAIL FROM:<a@b.test> RET=HDRS ENVID=QQ314159+2B1",
        "250 2.1.0 a@b.test....Sender OK",
    );
    c.expect("RCPT TO:<u@local.test>", "250 2.1.5 u@local.test");
    c.expect(
        "RCPT TO:<x@remote.test> NOTIFY=FAILURE ORCPT=rfc822;x+40remote.test",
        "250 2.1.5 x@remote.test",
    );
    c.expect(
        "RCPT TO:<v@alias.test> NOTIFY=SUCCESS,DELAY",
        "250 2.1.5 v@alias.test",
    );
    c.expect("RCPT TO:<y@other.test>", "250 2.1.5 y@other.test");
    c.ok("DATA", 354);
    c.send(message("mixed").as_bytes());
    c.send(b"\r\n.\r\n");
    let id = queued_id(&c.reply(), FQDN);
    c.ok("QUIT", 221);

    let drop = srv.wait_files("Drop", 1);
    let queue = srv.wait_files("Queue", 1);
    assert_eq!(drop.len(), 1, "{drop:?}");
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(stem(&drop[0]), id);
    assert_eq!(stem(&queue[0]), id);
    let d = read_text(&drop[0]);
    let q = read_text(&queue[0]);
    assert!(
        d.starts_with("x-sender: a@b.test\r\nx-receiver: u@local.test\r\nx-receiver: v@alias.test\r\nReceived: "),
        "Drop: local recipients only, plain IIS lines: {d}"
    );
    assert!(
        q.starts_with(
            "x-sender: <a@b.test> RET=HDRS ENVID=QQ314159+2B1\r\nx-receiver: <x@remote.test> NOTIFY=FAILURE ORCPT=rfc822;x+40remote.test\r\nx-receiver: y@other.test\r\nReceived: "
        ),
        "Queue: remote recipients only, with DSN parameters: {q}"
    );
    assert_eq!(
        after_envelope(&d),
        after_envelope(&q),
        "same message in both"
    );
    assert!(d.ends_with("\r\n\r\nHello from a test.\r\n"), "{d:?}");
}

#[test]
fn queue_file_keeps_body_type() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.hello();
    c.ok("MAIL FROM:<a@b.test> BODY=8BITMIME", 250);
    c.ok("RCPT TO:<r@remote.test>", 250);
    c.ok("DATA", 354);
    c.send("Subject: 8bit\r\n\r\nd\u{e9}j\u{e0} vu\r\n.\r\n".as_bytes());
    let id = queued_id(&c.reply(), FQDN);
    c.ok("QUIT", 221);
    let queue = srv.wait_files("Queue", 1);
    assert_eq!(queue.len(), 1);
    assert_eq!(stem(&queue[0]), id);
    assert!(srv.files("Drop").is_empty());
    let q = read_text(&queue[0]);
    assert!(
        q.starts_with(
            "x-sender: <a@b.test> BODY=8BITMIME\r\nx-receiver: r@remote.test\r\nReceived: "
        ),
        "{q}"
    );
    assert!(
        q.ends_with("\r\n\r\nd\u{e9}j\u{e0} vu\r\n"),
        "8-bit bytes kept: {q:?}"
    );
}
