//! The pickup-file parser on arbitrary bytes, with and without dot unstuffing: must never panic, and
//! a file it accepts gives a message with CRLF line endings only (no bare CR or LF) and recipients
//! that are each a valid mailbox (`smtp::address::parse_mailbox`), as is the sender unless it is the
//! null sender.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroot::mailroot::pickup_file;
use mailroot::smtp::address;

fn check(data: &[u8], unstuff_dots: bool) {
    let Ok(p) = pickup_file::parse(data, unstuff_dots) else {
        return;
    };
    let m = &p.message;
    for (i, b) in m.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(m.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
            b'\n' => assert!(i > 0 && m[i - 1] == b'\r', "bare LF at {i}"),
            _ => {}
        }
    }
    assert!(
        m.is_empty() || m.ends_with(b"\r\n"),
        "message not ending in CRLF"
    );
    assert!(
        !p.envelope.recipients.is_empty(),
        "accepted without recipients"
    );
    for r in &p.envelope.recipients {
        assert!(
            address::parse_mailbox(r.address.as_bytes()).is_ok(),
            "invalid recipient {:?}",
            r.address
        );
        assert!(!r.local);
    }
    if !p.envelope.sender.is_empty() {
        let s = address::parse_mailbox(p.envelope.sender.as_bytes());
        assert!(
            s.is_ok_and(|m| !m.domain.is_empty()),
            "invalid sender {:?}",
            p.envelope.sender
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, true);
    check(data, false);
});
