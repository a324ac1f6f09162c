//! DATA encoding for the next hop (`delivery::client::encode_data`) on arbitrary bytes: the output
//! never holds a bare CR or LF, ends with the terminator (CRLF "." CRLF, or just "." CRLF for an
//! empty message, whose CRLF is the DATA command's), and the server's DATA scanner
//! (`smtp::data::DataScanner`) reads back exactly the input with its line endings (CRLF, bare LF,
//! bare CR) made CRLF and a final CRLF added: dot-stuffing round trips and no terminator is smuggled.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroot::delivery::client::encode_data;
use mailroot::smtp::data::{DataScanner, Scan};

/// The input with every line ending as CRLF and the last line terminated.
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

fuzz_target!(|data: &[u8]| {
    let mut wire = Vec::new();
    encode_data(data, &mut wire);
    for (i, b) in wire.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(wire.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
            b'\n' => assert!(i > 0 && wire[i - 1] == b'\r', "bare LF at {i}"),
            _ => {}
        }
    }
    if data.is_empty() {
        assert_eq!(wire, b".\r\n");
    } else {
        assert!(wire.ends_with(b"\r\n.\r\n"), "no terminator");
    }

    let mut s = DataScanner::new();
    let mut out = Vec::new();
    let end = s.scan(&wire, &mut |b: &[u8]| out.extend_from_slice(b));
    assert_eq!(
        end,
        Scan::End(wire.len()),
        "the data ended early or not at all"
    );
    let flaws = s.flaws();
    assert!(!flaws.bare_cr && !flaws.bare_lf, "{flaws:?}");
    assert_eq!(flaws.nul, data.contains(&0));
    assert_eq!(out, normalised(data), "not a round trip");
});
