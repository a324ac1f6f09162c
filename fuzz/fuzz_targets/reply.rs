//! The outbound client's reply parser on arbitrary bytes (what a hostile next hop may send): must
//! never panic; `Complete(reply, n)` has `1 <= n <= len`, a code in 200..=599, at least one and at
//! most `MAX_LINES` lines, and parsing just the `n` consumed bytes again gives the same reply. A
//! `Partial` answer means no line of `MAX_LINE` bytes or more is waiting without its LF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroot::delivery::reply::{self, MAX_LINE, MAX_LINES, Parse};

fuzz_target!(|data: &[u8]| {
    match reply::parse(data) {
        Parse::Complete(r, n) => {
            assert!(n >= 1 && n <= data.len(), "consumed {n} of {}", data.len());
            assert_eq!(data[n - 1], b'\n', "reply does not end with a LF");
            assert!((200..=599).contains(&r.code), "code {}", r.code);
            assert!(!r.lines.is_empty() && r.lines.len() <= MAX_LINES);
            assert!(r.lines.iter().all(|l| !l.contains('\n')));
            assert_eq!(reply::parse(&data[..n]), Parse::Complete(r.clone(), n));
            let _ = r.one_line();
            let _ = r.keyword_args("AUTH");
            let _ = (r.is_positive(), r.is_transient(), r.is_permanent());
        }
        Parse::Partial => {
            let last_line = data.rsplit(|b| *b == b'\n').next().unwrap_or(data);
            assert!(
                last_line.len() < MAX_LINE,
                "partial with a {}-byte line",
                last_line.len()
            );
        }
        Parse::Invalid(_) => {}
    }
});
