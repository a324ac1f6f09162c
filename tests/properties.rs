//! Property tests for the zero-copy parsers: command framing and parsing, the DATA terminator scanner
//! (and the BDAT flaw check), and the header inspector. Case counts are kept small so the file runs
//! in a few seconds with the rest of `cargo test`.

use mailroot::smtp::command::{self, Bare, Command, Line, MAX_LINE};
use mailroot::smtp::data::{ChunkCheck, DataScanner, Flaws, Scan};
use mailroot::smtp::headers::HeaderScan;
use proptest::prelude::*;

mod common;
use common::strategies::{bytes_or_soup, config, token_soup};

/// Chunk sizes, used in turn (cyclically) to cut an input into pieces.
fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![4 => 1usize..8, 1 => 8usize..200], 1..8)
}

/// Cuts `input` into pieces of the given sizes, used cyclically (the last piece may be shorter).
fn pieces<'a>(input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut v = Vec::new();
    let mut pos = 0;
    let mut k = 0;
    while pos < input.len() {
        let end = (pos + sizes[k % sizes.len()].max(1)).min(input.len());
        v.push(&input[pos..end]);
        pos = end;
        k += 1;
    }
    v
}

// ---------------------------------------------------------------------------------------------
// (a) command framing and parsing

const COMMAND_TOKENS: &[&[u8]] = &[
    b"MAIL",
    b"mail",
    b"RCPT",
    b"DATA",
    b"BDAT",
    b"EHLO",
    b"HELO",
    b"VRFY",
    b"RSET",
    b"QUIT",
    b"NOOP",
    b"HELP",
    b" ",
    b"\t",
    b"FROM:",
    b"from:",
    b"TO:",
    b"<",
    b">",
    b"<>",
    b"@",
    b"\"",
    b"\\",
    b"[",
    b"]",
    b"IPv6:",
    b"::1",
    b"127.0.0.1",
    b":",
    b";",
    b",",
    b".",
    b"-",
    b"=",
    b"+",
    b"+4",
    b"+40",
    b"SIZE",
    b"BODY",
    b"8BITMIME",
    b"RET",
    b"HDRS",
    b"ENVID",
    b"NOTIFY",
    b"FAILURE",
    b"NEVER",
    b"ORCPT",
    b"rfc822",
    b"LAST",
    b"postmaster",
    b"user",
    b"example.com",
    b"0",
    b"1024",
    b"99999999999999999999",
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b"\xc3\xa9",
    b"\xff",
];

/// What a parsed command hands out is printable ASCII (it reaches logs and replies as text).
fn check_parsed(cmd: &Command<'_>) {
    let printable = |s: &str| s.bytes().all(|b| (32..=126).contains(&b));
    match cmd {
        Command::Helo(d) | Command::Ehlo(d) => {
            assert!(!d.is_empty() && d.bytes().all(|b| (33..=126).contains(&b)));
        }
        Command::Vrfy(s) => assert!(!s.is_empty() && printable(s)),
        Command::Mail(mailroot::smtp::address::Path::Mailbox(m), _) | Command::Rcpt(m, _) => {
            assert!(printable(m.local) && printable(m.domain));
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn command_framing_and_parsing_never_panic(
        buf in bytes_or_soup(COMMAND_TOKENS, 120, 700)
    ) {
        // Parsing the raw bytes (LF and all) must not panic either.
        let _ = command::parse(&buf);

        // Walk the buffer as the session loop does: frame a line, parse it, move on; after TooLong
        // discard up to the next LF.
        let mut rest = &buf[..];
        while !rest.is_empty() {
            match command::take_line(rest) {
                Line::Complete(line, used) => {
                    prop_assert!(!line.contains(&b'\n') && !line.contains(&b'\r'), "a complete line holds no CR or LF");
                    prop_assert!(used >= 2 && used <= rest.len() && used <= MAX_LINE);
                    prop_assert_eq!(&rest[used - 2..used], b"\r\n");
                    prop_assert_eq!(line.len(), used - 2);
                    prop_assert_eq!(line, &rest[..line.len()]);
                    if let Ok(cmd) = command::parse(line) {
                        check_parsed(&cmd);
                    }
                    let _ = command::verb_of(line);
                    rest = &rest[used..];
                }
                Line::Bare(line, used, kind) => {
                    prop_assert!(!line.contains(&b'\n'), "a bare line contains LF");
                    prop_assert!(used >= 1 && used <= rest.len() && used <= MAX_LINE);
                    prop_assert_eq!(rest[used - 1], b'\n');
                    prop_assert_eq!(line, &rest[..line.len()]);
                    match kind {
                        Bare::Lf => prop_assert!(line.len() == used - 1 && (used == 1 || rest[used - 2] != b'\r')),
                        Bare::Cr => prop_assert!(line.len() == used - 2 && line.contains(&b'\r')),
                    }
                    let _ = command::verb_of(line);
                    rest = &rest[used..];
                }
                Line::Partial => {
                    prop_assert!(rest.len() < MAX_LINE && !rest.contains(&b'\n'));
                    break;
                }
                Line::TooLong => {
                    prop_assert!(rest.len() >= MAX_LINE && !rest[..MAX_LINE].contains(&b'\n'));
                    match rest.iter().position(|b| *b == b'\n') {
                        Some(lf) => rest = &rest[lf + 1..],
                        None => break,
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// DATA scanning helpers

/// The result of scanning: content passed on, absolute end position (just past the terminator) if
/// the terminator was found, and the flaws seen.
type Scanned = (Vec<u8>, Option<usize>, Flaws);

/// Scans `input` cut into `parts`, stopping at the terminator. Checks that `Scan::End(k)` lies within
/// the piece it was returned for.
fn scan_parts(parts: &[&[u8]]) -> Scanned {
    let mut s = DataScanner::new();
    let mut out = Vec::new();
    let mut offset = 0;
    for part in parts {
        match s.scan(part, &mut |b: &[u8]| out.extend_from_slice(b)) {
            Scan::NeedMore => offset += part.len(),
            Scan::End(k) => {
                assert!(
                    k >= 1 && k <= part.len(),
                    "Scan::End({k}) outside a piece of {} bytes",
                    part.len()
                );
                return (out, Some(offset + k), s.flaws());
            }
        }
    }
    (out, None, s.flaws())
}

fn scan_whole(input: &[u8]) -> Scanned {
    scan_parts(&[input])
}

fn scan_chunked(input: &[u8], sizes: &[usize]) -> Scanned {
    scan_parts(&pieces(input, sizes))
}

/// Where the data must end: just after the first CRLF "." CRLF, or after ".\r\n" at the very start.
fn expected_end(input: &[u8]) -> Option<usize> {
    if input.starts_with(b".\r\n") {
        return Some(3);
    }
    input
        .windows(5)
        .position(|w| w == b"\r\n.\r\n")
        .map(|p| p + 5)
}

/// A byte-level model of the scanner: lines start only after CRLF, a dot at a line start is dropped
/// (stuffing or the terminator's dot), the terminator's CRLF is dropped, a CR held after a line-start
/// dot at the end of the input is not passed on yet, and the flaws are bare LF, bare CR (followed by
/// something other than LF) and NUL within what was consumed.
fn model(input: &[u8]) -> Scanned {
    let end = expected_end(input);
    let consumed = &input[..end.unwrap_or(input.len())];
    let line_start = |p: usize| p == 0 || (p >= 2 && &consumed[p - 2..p] == b"\r\n");
    let mut out = Vec::new();
    for (p, &b) in consumed.iter().enumerate() {
        if !(b == b'.' && line_start(p)) {
            out.push(b);
        }
    }
    let n = consumed.len();
    if end.is_some() {
        out.truncate(out.len() - 2);
    } else if n >= 2 && &consumed[n - 2..] == b".\r" && line_start(n - 2) {
        out.pop();
    }
    let flaws = Flaws {
        bare_lf: (0..n).any(|i| consumed[i] == b'\n' && (i == 0 || consumed[i - 1] != b'\r')),
        bare_cr: (0..n.saturating_sub(1)).any(|i| consumed[i] == b'\r' && consumed[i + 1] != b'\n'),
        nul: consumed.contains(&0),
    };
    (out, end, flaws)
}

const DATA_TOKENS: &[&[u8]] = &[
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
    b"MAIL FROM:<x@y>\r\n",
    b"\xff",
];

/// Content for the round trip: CRLF-terminated lines of any bytes but CR and LF, some starting with
/// dots.
fn message_lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    // Every byte but CR and LF, evenly (a mapping rather than a filter, so nothing is rejected).
    let no_cr_lf = (0u8..=253).prop_map(|b| match b {
        b'\r' => 254,
        b'\n' => 255,
        b => b,
    });
    let line = prop_oneof![
        2 => prop::collection::vec(no_cr_lf, 0..40),
        1 => prop::collection::vec(prop::sample::select(&b".a \0\xff"[..]), 0..6),
    ];
    prop::collection::vec(line, 0..30)
}

/// What a client may pipeline right behind the data.
const NEXT_COMMANDS: &[&[u8]] = &[b"", b"QUIT\r\n", b".\r\n", b"MAIL FROM:<a@b.c>\r\n"];

proptest! {
    #![proptest_config(config(512))]

    // (b) Dot-stuffed content plus the terminator comes back out unchanged, whatever the chunking.
    #[test]
    fn data_round_trip(
        lines in message_lines(),
        sizes in chunk_sizes(),
        next in prop::sample::select(NEXT_COMMANDS),
    ) {
        let mut content = Vec::new();
        let mut wire = Vec::new();
        for l in &lines {
            content.extend_from_slice(l);
            content.extend_from_slice(b"\r\n");
            if l.first() == Some(&b'.') {
                wire.push(b'.');
            }
            wire.extend_from_slice(l);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b".\r\n");
        let terminated = wire.len();
        // The client may pipeline its next command right behind the data.
        wire.extend_from_slice(next);

        let (out, end, flaws) = scan_chunked(&wire, &sizes);
        prop_assert_eq!(&out, &content);
        prop_assert_eq!(end, Some(terminated));
        prop_assert!(!flaws.bare_lf && !flaws.bare_cr, "{:?}", flaws);
        // NUL is the one flaw CRLF-framed content can carry, and only if a line holds one.
        prop_assert_eq!(flaws.nul, content.contains(&0));
    }

    // (c) One call or many, the scanner says the same thing, and it matches the model.
    #[test]
    fn data_chunking_does_not_matter(
        input in bytes_or_soup(DATA_TOKENS, 80, 400),
        sizes in chunk_sizes(),
    ) {
        let whole = scan_whole(&input);
        prop_assert_eq!(&scan_chunked(&input, &sizes), &whole);
        prop_assert_eq!(&scan_chunked(&input, &[1]), &whole);
        prop_assert_eq!(&model(&input), &whole);
    }

    // (d) With a bare LF in the input, the data still ends only just after CRLF "." CRLF (or an
    // initial ".\r\n"), and at the first one.
    #[test]
    fn bare_lf_never_ends_the_data(
        soup in token_soup(DATA_TOKENS, 60),
        at in any::<prop::sample::Index>(),
        sizes in chunk_sizes(),
    ) {
        let mut input = soup;
        let p = at.index(input.len() + 1);
        input.splice(p..p, b"x\n".iter().copied());
        for (out, end, flaws) in [scan_whole(&input), scan_chunked(&input, &sizes)] {
            if let Some(k) = end {
                prop_assert!(
                    input[..k].ends_with(b"\r\n.\r\n") || &input[..k] == b".\r\n",
                    "ended at {} in {:?}", k, String::from_utf8_lossy(&input)
                );
            }
            prop_assert_eq!(end, expected_end(&input));
            if end.is_none_or(|k| k > p + 1) {
                prop_assert!(flaws.bare_lf);
            }
            let _ = out;
        }
    }

    // BDAT's flaw check: chunking does not matter, and it matches a byte-level definition.
    #[test]
    fn chunk_check_matches_definition(
        input in bytes_or_soup(DATA_TOKENS, 80, 400),
        sizes in chunk_sizes(),
    ) {
        let mut whole = ChunkCheck::default();
        whole.scan(&input);
        let mut chunked = ChunkCheck::default();
        for part in pieces(&input, &sizes) {
            chunked.scan(part);
        }
        let n = input.len();
        let expected = Flaws {
            bare_lf: (0..n).any(|i| input[i] == b'\n' && (i == 0 || input[i - 1] != b'\r')),
            bare_cr: (0..n).any(|i| input[i] == b'\r' && input.get(i + 1) != Some(&b'\n')),
            nul: input.contains(&0),
        };
        prop_assert_eq!(whole.finish(), expected);
        prop_assert_eq!(chunked.finish(), expected);
    }
}

// ---------------------------------------------------------------------------------------------
// (e) the header inspector

const INSERTED: &[u8] = b"Message-ID: <inserted@mailroot.test>\r\n";

const HEADER_TOKENS: &[&[u8]] = &[
    b"Subject",
    b"Received",
    b"received",
    b"X-Long-Header-Name-That-Goes-On-And-On-And-On-And-On-And-On-And-On-And-On-And",
    b":",
    b": ",
    b"value",
    b"<id@client>",
    b" ",
    b"\t",
    b"\r\n",
    b"\r",
    b"\n",
    b"\r\n\r\n",
    b"body text",
    b".",
    b"\0",
    b"\xff",
];

const HEADER_TOKENS_WITH_ID: &[&[u8]] = &[
    b"Subject: x\r\n",
    b"Message-ID: <a@b>\r\n",
    b"message-id:",
    b"Received: y\r\n",
    b" ",
    b"\r\n",
    b"\n",
    b"body",
    b":",
];

struct HeaderRun {
    out: Vec<u8>,
    received: u32,
    message_id: Option<String>,
}

fn run_headers(parts: &[&[u8]]) -> HeaderRun {
    let mut h = HeaderScan::new(INSERTED.to_vec());
    let mut out = Vec::new();
    for part in parts {
        h.feed(part, &mut |b: &[u8]| out.extend_from_slice(b));
    }
    h.finish(&mut |b: &[u8]| out.extend_from_slice(b));
    HeaderRun {
        out,
        received: h.received(),
        message_id: h.message_id(),
    }
}

/// Case-insensitive count of `needle` in `hay`.
fn count_ci(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .filter(|w| w.eq_ignore_ascii_case(needle))
        .count()
}

/// The header section as HeaderScan sees it: everything before the first line (starting at 0 or after
/// an LF) that begins with CR or LF.
fn header_section(out: &[u8]) -> &[u8] {
    let end = (0..out.len())
        .find(|&j| (j == 0 || out[j - 1] == b'\n') && (out[j] == b'\r' || out[j] == b'\n'))
        .unwrap_or(out.len());
    &out[..end]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn headers_chunking_and_message_id(
        input in bytes_or_soup(HEADER_TOKENS, 40, 300),
        sizes in chunk_sizes(),
    ) {
        let whole = run_headers(&[&input]);
        let chunked = run_headers(&pieces(&input, &sizes));
        prop_assert_eq!(&chunked.out, &whole.out);
        prop_assert_eq!(chunked.received, whole.received);
        prop_assert_eq!(&chunked.message_id, &whole.message_id);

        if count_ci(&input, b"message-id") == 0 {
            prop_assert_eq!(&whole.message_id, &None);
            let out = &whole.out;
            prop_assert_eq!(count_ci(out, b"message-id:"), 1, "{:?}", String::from_utf8_lossy(out));
            prop_assert_eq!(count_ci(header_section(out), b"message-id:"), 1,
                "not in the header section: {:?}", String::from_utf8_lossy(out));
            // Apart from the inserted line (and the CRLF that closes an unterminated header section),
            // the bytes pass through unchanged.
            let q = memchr::memmem::find(out, INSERTED);
            prop_assert!(q.is_some(), "{:?}", String::from_utf8_lossy(out));
            let q = q.unwrap_or_default();
            let (before, after) = (&out[..q], &out[q + INSERTED.len()..]);
            let joined = [before, after].concat();
            let ok = joined == input
                || (after.starts_with(b"\r\n") && [before, &after[2..]].concat() == input)
                || (after.is_empty() && before.ends_with(b"\r\n") && before[..before.len() - 2] == input[..]);
            prop_assert!(ok, "input {:?} became {:?}", String::from_utf8_lossy(&input), String::from_utf8_lossy(out));
        }
    }

    #[test]
    fn headers_with_client_message_id(
        input in token_soup(HEADER_TOKENS_WITH_ID, 30),
        sizes in chunk_sizes(),
    ) {
        let whole = run_headers(&[&input]);
        let chunked = run_headers(&pieces(&input, &sizes));
        prop_assert_eq!(&chunked.out, &whole.out);
        prop_assert_eq!(chunked.received, whole.received);
        prop_assert_eq!(&chunked.message_id, &whole.message_id);
        // Our line goes in exactly when the client's header section had no Message-ID field.
        let inserted = count_ci(&whole.out, INSERTED);
        prop_assert!(inserted <= 1);
        prop_assert_eq!(inserted == 1, whole.message_id.is_none());
    }
}
