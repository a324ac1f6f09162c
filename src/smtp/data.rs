//! The DATA terminator scanner: finds `<CRLF>.<CRLF>` and removes dot-stuffing while the body streams
//! through, handing out slices of the caller's buffer (zero-copy) and never buffering a line, so a
//! megabyte-long line costs no memory.
//!
//! Only CRLF "." CRLF ends the data. Bare LF, bare CR and NUL are recorded as [`Flaws`] and the data is
//! read on to the real terminator, after which the session refuses the message: a bare LF is never a
//! line ending here, so `LF.LF`, `CR.CR`, `LF.CRLF` and `CRLF.LF` cannot end one message and start
//! another (SMTP smuggling).

/// Problems seen in the data; any of them makes the message unacceptable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flaws {
    /// A LF not preceded by CR.
    pub bare_lf: bool,
    /// A CR not followed by LF.
    pub bare_cr: bool,
    /// A NUL byte.
    pub nul: bool,
}

impl Flaws {
    /// Whether anything was seen.
    pub fn any(&self) -> bool {
        self.bare_lf || self.bare_cr || self.nul
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or at the very start of the data).
    LineStart,
    /// Inside a line.
    Mid,
    /// After a CR inside a line (or an empty line's CR).
    Cr,
    /// After a '.' at the start of a line (the dot is never passed on: stuffed or terminator).
    Dot,
    /// After ".\r" at the start of a line (the CR is held back until we know it is not the end).
    DotCr,
}

/// Result of one [`DataScanner::scan`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// All input was consumed and the terminator has not been seen yet.
    NeedMore,
    /// The terminator ended at this many bytes into the input; the rest belongs to the next command.
    End(usize),
}

/// Streams DATA content; one per message.
#[derive(Debug, Clone)]
pub struct DataScanner {
    state: State,
    flaws: Flaws,
}

impl Default for DataScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl DataScanner {
    /// A scanner positioned at the start of the data (just after the DATA command's CRLF).
    pub fn new() -> DataScanner {
        DataScanner {
            state: State::LineStart,
            flaws: Flaws::default(),
        }
    }

    /// What was seen so far.
    pub fn flaws(&self) -> Flaws {
        self.flaws
    }

    /// Scans `input`, calling `out` with the message content (dot-unstuffed, terminator removed) as
    /// slices of `input` (or a static CR held back across calls).
    pub fn scan<'a>(&mut self, input: &'a [u8], out: &mut impl FnMut(&'a [u8])) -> Scan {
        let mut start = 0; // first byte not yet passed to `out`
        let mut i = 0;
        let n = input.len();
        while i < n {
            match self.state {
                State::Mid => match memchr::memchr3(b'\r', b'\n', 0, &input[i..]) {
                    None => {
                        i = n;
                    }
                    Some(off) => {
                        i += off;
                        match input[i] {
                            b'\r' => {
                                self.state = State::Cr;
                            }
                            b'\n' => self.flaws.bare_lf = true,
                            _ => self.flaws.nul = true,
                        }
                        i += 1;
                    }
                },
                State::Cr => {
                    match input[i] {
                        b'\n' => {
                            self.state = State::LineStart;
                            i += 1;
                        }
                        b'\r' => {
                            self.flaws.bare_cr = true;
                            i += 1;
                        }
                        _ => {
                            self.flaws.bare_cr = true;
                            self.state = State::Mid; // re-examine this byte as line content
                        }
                    }
                }
                State::LineStart => match input[i] {
                    b'.' => {
                        if start < i {
                            out(&input[start..i]);
                        }
                        start = i + 1;
                        i += 1;
                        self.state = State::Dot;
                    }
                    b'\r' => {
                        self.state = State::Cr;
                        i += 1;
                    }
                    _ => self.state = State::Mid,
                },
                State::Dot => {
                    if input[i] == b'\r' {
                        // Hold the CR back: ".\r\n" is the end, anything else is content.
                        if start < i {
                            out(&input[start..i]);
                        }
                        start = i + 1;
                        i += 1;
                        self.state = State::DotCr;
                    } else {
                        // A stuffed dot: it was dropped; the rest of the line is content.
                        self.state = State::Mid;
                    }
                }
                State::DotCr => {
                    if input[i] == b'\n' {
                        self.state = State::LineStart;
                        return Scan::End(i + 1);
                    }
                    // ".\r" followed by something else: the CR is content (and a bare CR).
                    out(b"\r");
                    self.state = State::Cr;
                }
            }
        }
        if start < n {
            out(&input[start..n]);
        }
        Scan::NeedMore
    }
}

/// Checks BDAT chunks (which are counted, not terminated, so need no unstuffing) for the same flaws
/// as DATA, across chunk boundaries. Not used for BODY=BINARYMIME, which may carry any octet.
#[derive(Debug, Clone, Default)]
pub struct ChunkCheck {
    after_cr: bool,
    flaws: Flaws,
}

impl ChunkCheck {
    /// Looks at the next bytes of the message.
    pub fn scan(&mut self, input: &[u8]) {
        let mut i = 0;
        while i < input.len() {
            if self.after_cr {
                self.after_cr = false;
                if input[i] == b'\n' {
                    i += 1;
                    continue;
                }
                self.flaws.bare_cr = true;
            }
            match memchr::memchr3(b'\r', b'\n', 0, &input[i..]) {
                None => break,
                Some(off) => {
                    i += off;
                    match input[i] {
                        b'\r' => self.after_cr = true,
                        b'\n' => self.flaws.bare_lf = true,
                        _ => self.flaws.nul = true,
                    }
                    i += 1;
                }
            }
        }
    }

    /// The flaws of the whole message (a CR as its very last byte is bare).
    pub fn finish(&self) -> Flaws {
        let mut f = self.flaws;
        f.bare_cr |= self.after_cr;
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `input` in pieces of `step` bytes; returns (content, consumed-at-end, flaws).
    fn run(input: &[u8], step: usize) -> (Vec<u8>, Option<usize>, Flaws) {
        let mut s = DataScanner::new();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + step).min(input.len());
            match s.scan(&input[pos..end], &mut |b| out.extend_from_slice(b)) {
                Scan::NeedMore => pos = end,
                Scan::End(k) => return (out, Some(pos + k), s.flaws()),
            }
        }
        (out, None, s.flaws())
    }

    fn all_steps(input: &[u8]) -> (Vec<u8>, Option<usize>, Flaws) {
        let first = run(input, input.len().max(1));
        for step in 1..=input.len().min(9) {
            assert_eq!(
                run(input, step),
                first,
                "step {step} on {:?}",
                String::from_utf8_lossy(input)
            );
        }
        first
    }

    #[test]
    fn plain_message() {
        let (out, end, f) = all_steps(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n");
        assert_eq!(out, b"Subject: x\r\n\r\nhello\r\n");
        assert_eq!(end, Some(24));
        assert!(!f.any());
    }

    #[test]
    fn empty_message_and_unstuffing() {
        assert_eq!(all_steps(b".\r\n").0, b"");
        assert_eq!(all_steps(b".\r\n").1, Some(3));
        let (out, end, f) = all_steps(b"..\r\n...x\r\n.a\r\nb.\r\n.\r\n");
        assert_eq!(out, b".\r\n..x\r\na\r\nb.\r\n");
        assert_eq!(end, Some(21));
        assert!(!f.any());
    }

    #[test]
    fn incomplete_terminators_are_content() {
        let (out, end, _) = all_steps(b"a\r\n.\r");
        assert_eq!((out.as_slice(), end), (&b"a\r\n"[..], None));
        let (out, end, f) = all_steps(b"a\r\n.\rb\r\n.\r\n");
        assert_eq!(out, b"a\r\n\rb\r\n");
        assert_eq!(end, Some(11));
        assert!(f.bare_cr);
    }

    #[test]
    fn smuggling_forms_never_end_the_data() {
        for (body, bare_lf, bare_cr) in [
            (&b"a\n.\nMAIL FROM:<x@y>\r\n"[..], true, false),
            (b"a\r.\rMAIL FROM:<x@y>\r\n", false, true),
            (b"a\n.\r\nMAIL FROM:<x@y>\r\n", true, false),
            (b"a\r\n.\nMAIL FROM:<x@y>\r\n", true, false),
            (b"a\r\n.\r\rMAIL FROM:<x@y>\r\n", false, true),
            (b"a\r\n\0.\r\nMAIL\r\n", false, false),
            (b"a\r\n .\r\nMAIL\r\n", false, false),
            (b"a\r\n.\0\r\nMAIL\r\n", false, false),
        ] {
            let (_, end, f) = all_steps(body);
            assert_eq!(
                end,
                None,
                "{:?} must not end the data",
                String::from_utf8_lossy(body)
            );
            assert_eq!(
                (f.bare_lf, f.bare_cr),
                (bare_lf, bare_cr),
                "{:?}",
                String::from_utf8_lossy(body)
            );
            // The real terminator afterwards still ends it.
            let mut full = body.to_vec();
            full.extend_from_slice(b".\r\n");
            assert_eq!(all_steps(&full).1, Some(full.len()));
        }
    }

    #[test]
    fn nul_is_recorded() {
        let (out, _, f) = all_steps(b"a\0b\r\n.\r\n");
        assert_eq!(out, b"a\0b\r\n");
        assert!(f.nul && !f.bare_lf && !f.bare_cr);
    }

    #[test]
    fn long_line_streams_in_pieces() {
        let mut body = vec![b'x'; 1 << 20];
        body.extend_from_slice(b"\r\n.\r\n");
        let mut s = DataScanner::new();
        let mut total = 0;
        for chunk in body.chunks(4096) {
            if let Scan::End(_) = s.scan(chunk, &mut |b| total += b.len()) {
                break;
            }
        }
        assert_eq!(total, (1 << 20) + 2);
    }

    #[test]
    fn chunk_check_across_boundaries() {
        let mut c = ChunkCheck::default();
        c.scan(b"a\r");
        c.scan(b"\nb\r\n");
        assert!(!c.finish().any());
        c.scan(b"x\r");
        assert!(c.finish().bare_cr);
        let mut c = ChunkCheck::default();
        c.scan(b"a\r");
        c.scan(b"b");
        assert!(c.finish().bare_cr);
        let mut c = ChunkCheck::default();
        c.scan(b"a\nb");
        assert!(c.finish().bare_lf);
        let mut c = ChunkCheck::default();
        c.scan(b"a\0");
        assert!(c.finish().nul);
    }
}
