//! Property tests for the delivery side and the files it keeps: base64 (AUTH), the Queue file's
//! envelope block, the `.sta` state file, DATA encoding for the next hop (dot-stuffing read back by
//! our own DATA scanner), and the next hop's reply parser. Case counts are kept small so the file runs
//! in a few seconds with the rest of `cargo test`; `PROPTEST_CASES` makes a run longer.
//!
//! Two bugs these properties found (`>` in ORCPT/ENVID breaking the Queue file, `|` in an address
//! breaking the state file) are pinned by regression tests at the end.

use mailroot::delivery::client::encode_data;
use mailroot::delivery::reply::{self, MAX_LINE, MAX_LINES, Parse};
use mailroot::mailroot::block;
use mailroot::mailroot::state::{State, Status};
use mailroot::smtp::address;
use mailroot::smtp::command::{self, Command};
use mailroot::smtp::data::{DataScanner, Scan};
use mailroot::smtp::envelope::{Envelope, Recipient};
use mailroot::smtp::params::{Body, Notify, Ret};
use mailroot::smtp::sasl as base64;
use proptest::prelude::*;

mod common;
use common::strategies::{bytes_or_soup, config};

// ---------------------------------------------------------------------------------------------
// base64

const BASE64_TOKENS: &[&[u8]] = &[
    b"A",
    b"Zg",
    b"Zm9v",
    b"=",
    b"==",
    b"===",
    b"+",
    b"/",
    b"AHVzZXIAcGFzcw==",
    b"*",
    b" ",
    b"\r\n",
    b"\0",
    b"\xff",
    b"-",
    b"_",
];

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn base64_round_trip(input in prop::collection::vec(any::<u8>(), 0..300)) {
        let enc = base64::encode(&input);
        prop_assert_eq!(enc.len(), input.len().div_ceil(3) * 4);
        prop_assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));
        prop_assert_eq!(base64::decode(enc.as_bytes()), Some(input));
    }

    #[test]
    fn base64_decode_never_panics(input in bytes_or_soup(BASE64_TOKENS, 40, 200)) {
        if let Some(out) = base64::decode(&input) {
            // Accepted only as padded standard alphabet, and what comes out encodes back to input
            // of the same length (unused low bits of the last group may differ).
            prop_assert!(input.len().is_multiple_of(4));
            prop_assert!(input.iter().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b)));
            let again = base64::encode(&out);
            prop_assert_eq!(again.len(), input.len());
            prop_assert_eq!(base64::decode(again.as_bytes()), Some(out));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses, xtext and the envelope block

/// Valid mailboxes (dot-atoms or quoted local parts; names or address literals), in the form the
/// envelope holds them (`Mailbox::to_string_lossless`).
fn mailbox() -> impl Strategy<Value = String> {
    let local = prop_oneof![
        4 => "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,8}(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,6}){0,2}",
        1 => "\"([ !#-\\[\\]-~]|\\\\[ -~]){0,12}\"",
    ];
    let domain = prop_oneof![
        6 => "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z]{2,6}){0,3}\\.?",
        1 => "\\[(25[0-5]|1?[0-9]{1,2})(\\.(25[0-5]|1?[0-9]{1,2})){3}\\]",
        1 => Just("[IPv6:2001:db8::1]".to_string()),
    ];
    (local, domain).prop_filter_map("not a mailbox", |(l, d)| {
        let s = format!("{l}@{d}");
        address::parse_mailbox(s.as_bytes())
            .ok()
            .map(|m| m.to_string_lossless())
    })
}

/// RFC 3461 xtext as the command parser accepts it: printable ASCII but `+` and `=`, and `+XX`
/// escapes (`>` included: it once broke the Queue file, see the regression test at the end).
fn xtext(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => "[!-*,-<>-~]",
            1 => "\\+[0-9A-F]{2}",
        ],
        1..max,
    )
    .prop_map(|v| v.concat())
}

fn notify() -> impl Strategy<Value = Option<Notify>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Notify(Notify::NEVER))),
        2 => (1u8..8).prop_map(|bits| Some(Notify(bits << 1))),
    ]
}

fn recipient() -> impl Strategy<Value = Recipient> {
    (
        mailbox(),
        notify(),
        prop::option::of(xtext(30).prop_map(|x| format!("rfc822;{x}"))),
    )
        .prop_map(|(address, notify, orcpt)| Recipient {
            address,
            local: false,
            notify,
            orcpt,
        })
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        prop_oneof![1 => Just(String::new()), 4 => mailbox()],
        prop::option::of(prop::sample::select(vec![
            Body::SevenBit,
            Body::EightBitMime,
            Body::BinaryMime,
        ])),
        prop::option::of(prop::sample::select(vec![Ret::Full, Ret::Hdrs])),
        prop::option::of(xtext(30)),
        prop::collection::vec(recipient(), 1..6),
    )
        .prop_map(|(sender, body, ret, envid, recipients)| Envelope {
            sender,
            body,
            ret,
            envid,
            recipients,
        })
}

/// The RCPT command a client would have sent for `r` (to check that the generator stays within what
/// the session accepts).
fn rcpt_line(r: &Recipient) -> String {
    let mut s = format!("RCPT TO:<{}>", r.address);
    if let Some(n) = r.notify {
        s.push_str(" NOTIFY=");
        s.push_str(&n.to_string());
    }
    if let Some(o) = &r.orcpt {
        s.push_str(" ORCPT=");
        s.push_str(o);
    }
    s
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn envelope_block_round_trip(
        env in envelope(),
        body in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        for r in &env.recipients {
            let line = rcpt_line(r);
            prop_assert!(
                matches!(command::parse(line.as_bytes()), Ok(Command::Rcpt(..))),
                "the session would not accept {}", line
            );
        }
        let mut file = block::write(&env, false);
        let n = file.len();
        file.extend_from_slice(b"Received: x\r\n\r\n");
        file.extend_from_slice(&body);
        let parsed = block::read(&file);
        prop_assert!(parsed.is_ok(), "{:?} for {:?}", parsed, String::from_utf8_lossy(&file[..n]));
        let (back, off) = parsed.unwrap_or_default();
        prop_assert_eq!(off, n);
        prop_assert_eq!(back, env);
    }
}

// ---------------------------------------------------------------------------------------------
// The state file

/// Reply and host texts: printable ASCII (with plenty of `|`), any printable Unicode, and the line
/// breaks that `State::set` must clean away.
fn free_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[ -~]{0,60}",
        2 => prop::collection::vec(
            prop::sample::select(vec!["|", " | ", " ", "250", "2.0.0", "Ok", "\r", "\n", "\r\n", "dsn", "é", "\t"]),
            0..12,
        ).prop_map(|v| v.concat()),
        1 => "\\PC{0,30}",
    ]
}

fn status() -> impl Strategy<Value = Status> {
    prop::sample::select(vec![Status::Pending, Status::Done, Status::Failed])
}

/// A state built the way delivery builds it: `State::new`, then `set` (also for new addresses) and
/// `set_dsn_passed` (addresses may hold the file's " | " separator).
fn state() -> impl Strategy<Value = State> {
    let addresses = prop::collection::vec(mailbox(), 0..6);
    let steps = prop::collection::vec(
        (
            any::<prop::sample::Index>(),
            status(),
            free_text(),
            free_text(),
            any::<bool>(),
        ),
        0..10,
    );
    (addresses, steps, any::<u32>(), any::<u64>(), any::<bool>()).prop_map(
        |(addresses, steps, attempts, next_attempt, delay_notified)| {
            let mut st = State::new(addresses.iter().map(String::as_str));
            for (pick, status, reply, remote, dsn) in steps {
                if addresses.is_empty() {
                    break;
                }
                let a = &addresses[pick.index(addresses.len())];
                st.set(a, status, &reply, &remote);
                if dsn {
                    st.set_dsn_passed(a);
                }
            }
            st.attempts = attempts;
            st.next_attempt = next_attempt;
            st.delay_notified = delay_notified;
            st
        },
    )
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn state_round_trip(st in state()) {
        for r in &st.recipients {
            prop_assert!(!r.reply.contains(['|', '\r', '\n']) && !r.remote.contains(['|', '\r', '\n']));
        }
        let text = st.to_text();
        let back = State::parse(&text);
        prop_assert!(back.is_ok(), "{:?} for {:?}", back, text);
        prop_assert_eq!(back.unwrap_or_default(), st);
    }
}

// ---------------------------------------------------------------------------------------------
// DATA on the wire to the next hop

/// The input with every line ending (CRLF, bare LF, bare CR) as CRLF and the last line terminated.
fn normalised(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 2);
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                i += if data.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

const WIRE_TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r",
    b"\n",
    b".",
    b"..",
    b"a",
    b"xyz",
    b" ",
    b"\0",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b".\r",
    b"\n\r",
    b"MAIL FROM:<x@y>\r\n",
    b"\xff",
];

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn wire_encoding_round_trips(
        data in bytes_or_soup(WIRE_TOKENS, 60, 300),
        split in any::<prop::sample::Index>(),
    ) {
        let mut wire = Vec::new();
        encode_data(&data, &mut wire);
        for (i, b) in wire.iter().enumerate() {
            match b {
                b'\r' => prop_assert_eq!(wire.get(i + 1), Some(&b'\n'), "bare CR at {}", i),
                b'\n' => prop_assert!(i > 0 && wire[i - 1] == b'\r', "bare LF at {}", i),
                _ => {}
            }
        }
        if data.is_empty() {
            // The CRLF before the dot is the DATA command's own (RFC 5321 §4.1.1.4).
            prop_assert_eq!(&wire[..], b".\r\n");
        } else {
            prop_assert!(wire.ends_with(b"\r\n.\r\n"));
        }

        // Read back in two pieces, as a server reading the socket would.
        let at = split.index(wire.len() + 1);
        let mut s = DataScanner::new();
        let mut out = Vec::new();
        let mut end = None;
        let mut offset = 0;
        for part in [&wire[..at], &wire[at..]] {
            match s.scan(part, &mut |b: &[u8]| out.extend_from_slice(b)) {
                Scan::NeedMore => offset += part.len(),
                Scan::End(k) => {
                    end = Some(offset + k);
                    break;
                }
            }
        }
        prop_assert_eq!(end, Some(wire.len()), "the data ended early or not at all");
        let flaws = s.flaws();
        prop_assert!(!flaws.bare_cr && !flaws.bare_lf, "{:?}", flaws);
        prop_assert_eq!(flaws.nul, data.contains(&0));
        prop_assert_eq!(out, normalised(&data));
    }
}

// ---------------------------------------------------------------------------------------------
// The next hop's replies

const REPLY_TOKENS: &[&[u8]] = &[
    b"250",
    b"220",
    b"354",
    b"421",
    b"550",
    b"199",
    b"600",
    b"25",
    b"-",
    b" ",
    b"\r\n",
    b"\n",
    b"\r",
    b"2.0.0",
    b"5.1.1",
    b"4.",
    b"Ok",
    b"STARTTLS",
    b"AUTH LOGIN",
    b"=",
    b"\0",
    b"\xff",
    b"\xc3\xa9",
];

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn reply_parse_never_panics(buf in bytes_or_soup(REPLY_TOKENS, 80, 600)) {
        match reply::parse(&buf) {
            Parse::Complete(r, n) => {
                prop_assert!(n >= 1 && n <= buf.len());
                prop_assert_eq!(buf[n - 1], b'\n');
                prop_assert!((200..=599).contains(&r.code), "code {}", r.code);
                prop_assert!(!r.lines.is_empty() && r.lines.len() <= MAX_LINES);
                prop_assert_eq!(reply::parse(&buf[..n]), Parse::Complete(r.clone(), n));
                let _ = (r.one_line(), r.keyword_args("AUTH"), r.is_transient());
            }
            Parse::Partial => {
                let tail = buf.rsplit(|b| *b == b'\n').next().unwrap_or(&buf);
                prop_assert!(tail.len() < MAX_LINE);
            }
            Parse::Invalid(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions: two bugs these properties found (fixed).

/// The session accepts `ORCPT=rfc822;a>b` (`>` is xtext), but `Envelope::parse_block` looks for the
/// address's closing bracket with `rfind('>')`, so it finds the one inside the parameter and the
/// Queue file can no longer be read (delivery moves it to Badmail). The same holds for ENVID.
#[test]
fn orcpt_with_gt_keeps_the_queue_file_readable() {
    assert!(matches!(
        command::parse(b"RCPT TO:<a@b.test> ORCPT=rfc822;a>b"),
        Ok(Command::Rcpt(..))
    ));
    let env = Envelope {
        sender: "s@b.test".into(),
        recipients: vec![Recipient {
            address: "a@b.test".into(),
            local: false,
            notify: None,
            orcpt: Some("rfc822;a>b".into()),
        }],
        ..Default::default()
    };
    let block = block::write(&env, false);
    assert_eq!(
        block::read(&block).map(|(e, _)| e),
        Ok(env),
        "{}",
        String::from_utf8_lossy(&block)
    );
    // The sender's ENVID goes the same way.
    assert!(matches!(
        command::parse(b"MAIL FROM:<s@b.test> ENVID=a>b"),
        Ok(Command::Mail(..))
    ));
    let env = Envelope {
        sender: "s@b.test".into(),
        envid: Some("a>b".into()),
        recipients: vec![Recipient {
            address: "a@b.test".into(),
            local: false,
            notify: None,
            orcpt: None,
        }],
        ..Default::default()
    };
    assert_eq!(
        block::read(&block::write(&env, false)).map(|(e, _)| e),
        Ok(env)
    );
}

/// A quoted local part may hold " | " (`RCPT TO:<"a | b"@b.test>` is accepted), but the state file
/// uses " | " as its separator, so the address comes back as `"a` and the recipient's outcome is
/// lost: on the next attempt it is pending again (a recipient already done is sent to twice).
#[test]
fn state_keeps_an_address_holding_the_separator() {
    assert!(matches!(
        command::parse(b"RCPT TO:<\"a | b\"@b.test>"),
        Ok(Command::Rcpt(..))
    ));
    let mut st = State::new(["\"a | b\"@b.test"]);
    st.set(
        "\"a | b\"@b.test",
        Status::Done,
        "250 2.0.0 Ok",
        "mx.b.test",
    );
    assert_eq!(State::parse(&st.to_text()), Ok(st));
}
