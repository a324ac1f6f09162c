//! SMTP smuggling: only CRLF "." CRLF ends the data. Every other "end of data" a sloppy server might
//! honour is either refused with the whole message (550 5.6.0: bare LF, bare CR, NUL) or is plain
//! content; in no case does what follows it run as a second transaction.

mod common;
use common::*;

use std::fs;
use std::io::Write;

const BARE_LF: &str = "550 5.6.0 Message refused: bare LF in data; lines must end with CRLF";
const BARE_CR: &str = "550 5.6.0 Message refused: bare CR in data; lines must end with CRLF";
const NUL: &str = "550 5.6.0 Message refused: NUL character in data";

const INJECTED: &[u8] = b"MAIL FROM:<x@evil>\r\nRCPT TO:<v@local.test>\r\nDATA\r\nFrom: x@evil\r\nSubject: smuggled\r\n\r\ninjected body";

/// `(name, fake terminator, the one reply expected for the message)`; `None` = 250 (legal data).
const VARIANTS: &[(&str, &[u8], Option<&str>)] = &[
    ("LF.LF", b"\n.\n", Some(BARE_LF)),
    ("CR.CR", b"\r.\r", Some(BARE_CR)),
    ("LF.CRLF", b"\n.\r\n", Some(BARE_LF)),
    ("CRLF.LF", b"\r\n.\n", Some(BARE_LF)),
    ("CR.CRLF", b"\r.\r\n", Some(BARE_CR)),
    ("CRLF.CR", b"\r\n.\r", Some(BARE_CR)),
    ("CRLF.CRCRLF", b"\r\n.\r\r\n", Some(BARE_CR)),
    ("CRLF.LFCRLF", b"\r\n.\n\r\n", Some(BARE_LF)),
    ("LF.LF after CRLF", b"\r\n\n.\n", Some(BARE_LF)),
    ("CRLF NUL.CRLF", b"\r\n\0.\r\n", Some(NUL)),
    ("CRLF.NUL CRLF", b"\r\n.\0\r\n", Some(NUL)),
    ("CRLF SP.CRLF", b"\r\n .\r\n", None),
    ("CRLF.SP CRLF", b"\r\n. \r\n", None),
    ("CRLF TAB.CRLF", b"\r\n\t.\r\n", None),
    ("CRLF..CRLF", b"\r\n..\r\n", None),
];

/// Greeting + EHLO + MAIL + RCPT + DATA for `u@local.test`.
fn open_data(srv: &Server) -> Client {
    let mut c = srv.connect();
    c.hello();
    c.ok("MAIL FROM:<a@b.test>", 250);
    c.ok("RCPT TO:<u@local.test>", 250);
    c.ok("DATA", 354);
    c
}

fn all_files(srv: &Server) -> Vec<std::path::PathBuf> {
    let mut v = srv.files("Drop");
    v.extend(srv.files("Queue"));
    v
}

fn check_variant(srv: &Server, name: &str, fake: &[u8], want: Option<&str>, bytewise: bool) {
    let before = all_files(srv).len();
    let mut c = open_data(srv);
    let mut raw = b"From: a@b.test\r\nSubject: carrier\r\n\r\nhello".to_vec();
    raw.extend_from_slice(fake);
    raw.extend_from_slice(INJECTED);
    raw.extend_from_slice(b"\r\n.\r\n");
    if bytewise {
        c.stream.set_nodelay(true).unwrap();
        for b in &raw {
            c.stream.write_all(&[*b]).unwrap();
        }
    } else {
        c.send(&raw);
    }
    let r = c.reply();
    match want {
        Some(text) => assert_eq!(r.last(), text, "{name}: {r:?}"),
        None => assert!(
            r.last().starts_with("250 2.6.0 <"),
            "{name}: legal data is accepted: {r:?}"
        ),
    }
    // The next reply must be the NOOP's: had the injected commands run, their replies would come
    // first (250 sender, 250 recipient, 354, 250).
    let n = c.cmd("NOOP");
    assert_eq!(
        n.last(),
        "250 2.0.0 OK",
        "{name}: one reply for the message, then NOOP's"
    );
    c.ok("QUIT", 221);
    assert_eq!(c.read_to_end(), "", "{name}: nothing more after QUIT");

    let after = all_files(srv);
    let new = after.len() - before;
    let expected_new = usize::from(want.is_none());
    assert_eq!(new, expected_new, "{name}: files {after:?}");
    for p in &after {
        let text = String::from_utf8_lossy(&fs::read(p).unwrap()).into_owned();
        assert!(
            !text.contains("x-receiver: v@local.test") && !text.contains("x-sender: x@evil"),
            "{name}: the injected transaction was run: {text}"
        );
    }
    if want.is_none() {
        // Accepted: the would-be commands are part of the one message, whose only recipient is u.
        let p = after.last().unwrap();
        let text = String::from_utf8_lossy(&fs::read(p).unwrap()).into_owned();
        assert!(
            text.starts_with("x-sender: a@b.test\r\nx-receiver: u@local.test\r\nReceived: "),
            "{name}: {text}"
        );
        assert!(
            text.contains("\r\nMAIL FROM:<x@evil>\r\nRCPT TO:<v@local.test>\r\nDATA\r\n"),
            "{name}: {text}"
        );
        assert!(text.ends_with("\r\ninjected body\r\n"), "{name}: {text:?}");
    }
}

#[test]
fn fake_terminators_never_end_the_data() {
    let srv = Builder::new().start();
    for (name, fake, want) in VARIANTS {
        check_variant(&srv, name, fake, *want, false);
    }
}

#[test]
fn fake_terminators_sent_byte_by_byte() {
    let srv = Builder::new().start();
    for (name, fake, want) in VARIANTS {
        check_variant(&srv, name, fake, *want, true);
    }
}

#[test]
fn fake_terminators_split_across_writes() {
    // The fake terminator arrives in its own write, and the injection in the next one.
    let srv = Builder::new().start();
    for (name, fake, want) in VARIANTS {
        let before = all_files(&srv).len();
        let mut c = open_data(&srv);
        c.stream.set_nodelay(true).unwrap();
        c.send(b"Subject: carrier\r\n\r\nhello");
        c.send(fake);
        c.send(INJECTED);
        c.send(b"\r\n.\r\nNOOP\r\n");
        let r = c.reply();
        match want {
            Some(text) => assert_eq!(r.last(), *text, "{name}: {r:?}"),
            None => assert_eq!(r.code, 250, "{name}: {r:?}"),
        }
        assert_eq!(c.reply().last(), "250 2.0.0 OK", "{name}");
        c.ok("QUIT", 221);
        c.read_to_end();
        assert_eq!(
            all_files(&srv).len() - before,
            usize::from(want.is_none()),
            "{name}"
        );
    }
}

#[test]
fn bare_lf_cr_and_nul_inside_data_are_refused() {
    let srv = Builder::new().start();
    for (name, body, want) in [
        (
            "bare LF",
            &b"Subject: x\r\n\r\nline one\nline two"[..],
            BARE_LF,
        ),
        (
            "bare LF in a header",
            b"Subject: x\nTo: y\r\n\r\nbody",
            BARE_LF,
        ),
        ("bare CR", b"Subject: x\r\n\r\nline one\rline two", BARE_CR),
        (
            "CR at line end before CRLF",
            b"Subject: x\r\n\r\nline one\r\r\nline two",
            BARE_CR,
        ),
        ("NUL", b"Subject: x\r\n\r\nnul \0 here", NUL),
    ] {
        let mut c = open_data(&srv);
        c.send(body);
        c.send(b"\r\n.\r\n");
        let r = c.reply();
        assert_eq!(r.last(), want, "{name}: {r:?}");
        // The transaction is over, the session goes on.
        let n = c.cmd("RCPT TO:<u@local.test>");
        assert_eq!(n.last(), "503 5.5.1 Need mail command", "{name}");
        c.ok("NOOP", 250);
        c.ok("QUIT", 221);
        c.read_to_end();
        assert!(all_files(&srv).is_empty(), "{name}: {:?}", all_files(&srv));
        assert!(
            fs::read_dir(srv.folder("SortTemp"))
                .unwrap()
                .next()
                .is_none(),
            "{name}: SortTemp is clean"
        );
    }
}

#[test]
fn dot_unstuffing() {
    let srv = Builder::new().start();
    let mut c = open_data(&srv);
    c.send(b"Subject: dots\r\n\r\n..x\r\n...y\r\n..\r\n.z\r\nmid.dle\r\n.\r\n");
    let r = c.reply();
    assert_eq!(r.code, 250, "{r:?}");
    c.ok("QUIT", 221);
    let d = srv.wait_files("Drop", 1);
    assert_eq!(d.len(), 1);
    let text = fs::read_to_string(&d[0]).unwrap();
    assert!(
        text.ends_with("\r\n\r\n.x\r\n..y\r\n.\r\nz\r\nmid.dle\r\n"),
        "{text:?}"
    );
}

#[test]
fn empty_message_and_terminator_only() {
    // ".\r\n" right after DATA: an empty message, still accepted and given its headers.
    let srv = Builder::new().start();
    let mut c = open_data(&srv);
    c.send(b".\r\nNOOP\r\n");
    let r = c.reply();
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.reply().last(), "250 2.0.0 OK");
    c.ok("QUIT", 221);
    assert_eq!(srv.wait_files("Drop", 1).len(), 1);
}

/// The command-line cousin: `MAIL FROM:<a@b>\nRCPT TO:<c@d>\r\n` is one line to a filter in front
/// that ends lines only at CRLF, two commands to a server that ends them at a bare LF. mailroot
/// refuses the bare-LF line and the rest of that CRLF line, so neither reading takes effect.
#[test]
fn bare_lf_in_command_lines_is_refused_with_the_rest_of_the_line() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.hello();
    c.send(b"MAIL FROM:<a@b.test>\nRCPT TO:<u@local.test>\r\n");
    let r = c.reply();
    assert_eq!(r.code, 500, "{r:?}");
    assert!(
        r.text().contains("5.5.2") && r.text().contains("bare LF"),
        "{r:?}"
    );
    let r = c.reply();
    assert_eq!(r.code, 500, "the rest of the line: {r:?}");
    c.expect_prefix("DATA", "503");
    c.send(b"NOOP\rRSET\r\n");
    let r = c.reply();
    assert!(r.code == 500 && r.text().contains("bare CR"), "{r:?}");
    // Back in step: a well-formed transaction goes through.
    let r = c.send_mail("a@b.test", &["u@local.test"], "Subject: ok\r\n\r\nok\r\n");
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
    assert_eq!(srv.wait_files("Drop", 1).len(), 1);
}

#[test]
fn allow_bare_lf_in_commands_serves_a_legacy_device() {
    let srv = Builder::new().key("AllowBareLfInCommands", "1").start();
    let mut c = srv.connect();
    c.greeting();
    c.send(b"HELO scanner\nMAIL FROM:<scan@b.test>\nRCPT TO:<u@local.test>\nDATA\n");
    for want in [250, 250, 250, 354] {
        assert_eq!(c.reply().code, want);
    }
    c.send(b"Subject: scan\r\n\r\npage\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    c.quit();
    assert_eq!(srv.wait_files("Drop", 1).len(), 1);
}
