//! The DATA scanner on arbitrary input split at a fuzzer-chosen point: two `scan` calls must give the
//! same content, end position and flaws as one call, `Scan::End(k)` must lie within the slice it was
//! returned for, and the data may end only just after the first CRLF "." CRLF (or an initial ".\r\n").
//!
//! Input layout: the first two bytes (little-endian) choose the split point, modulo the length of
//! the rest, which is the data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroot::smtp::data::{DataScanner, Flaws, Scan};

fn scan_parts(parts: &[&[u8]]) -> (Vec<u8>, Option<usize>, Flaws) {
    let mut s = DataScanner::new();
    let mut out = Vec::new();
    let mut offset = 0;
    for part in parts {
        match s.scan(part, &mut |b: &[u8]| out.extend_from_slice(b)) {
            Scan::NeedMore => offset += part.len(),
            Scan::End(k) => {
                assert!(
                    k >= 1 && k <= part.len(),
                    "End({k}) outside {} bytes",
                    part.len()
                );
                return (out, Some(offset + k), s.flaws());
            }
        }
    }
    (out, None, s.flaws())
}

fn expected_end(input: &[u8]) -> Option<usize> {
    if input.starts_with(b".\r\n") {
        return Some(3);
    }
    input
        .windows(5)
        .position(|w| w == b"\r\n.\r\n")
        .map(|p| p + 5)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let input = &data[2..];
    let at = usize::from(u16::from_le_bytes([data[0], data[1]])) % (input.len() + 1);
    let whole = scan_parts(&[input]);
    let split = scan_parts(&[&input[..at], &input[at..]]);
    assert_eq!(split, whole, "split at {at}");
    assert_eq!(whole.1, expected_end(input));
});
