//! Command framing and parsing on arbitrary bytes: must never panic, and a complete line never holds
//! a LF. The buffer is walked as the session loop walks it (frame, parse, move on; after a too-long
//! line, discard up to the next LF).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroot::smtp::command::{self, Line, MAX_LINE};

fuzz_target!(|data: &[u8]| {
    let _ = command::parse(data);
    let mut rest = data;
    while !rest.is_empty() {
        match command::take_line(rest) {
            Line::Complete(line, used) => {
                assert!(!line.contains(&b'\n'), "complete line contains LF");
                assert!(used >= 1 && used <= rest.len() && used <= MAX_LINE);
                assert_eq!(rest[used - 1], b'\n');
                let _ = command::parse(line);
                let _ = command::verb_of(line);
                rest = &rest[used..];
            }
            Line::Partial => {
                assert!(rest.len() < MAX_LINE);
                break;
            }
            Line::TooLong => {
                assert!(rest.len() >= MAX_LINE);
                match rest.iter().position(|b| *b == b'\n') {
                    Some(lf) => rest = &rest[lf + 1..],
                    None => break,
                }
            }
        }
    }
});
