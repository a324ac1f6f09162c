//! Parsing the next hop's replies (RFC 5321 §4.2): `ddd-text` continuation lines and a final `ddd text`
//! line, all with the same code, optionally with an enhanced status code (RFC 3463). A push parser over
//! the client's read buffer, like the server's command parser: it says "need more bytes" instead of
//! blocking, and bounds what it accepts so a hostile server cannot make the client buffer without end.

/// Longest reply line accepted (RFC 5321 says 512; real servers send more in banners).
pub const MAX_LINE: usize = 2048;
/// Most lines in one reply (EHLO lists are the longest in practice).
pub const MAX_LINES: usize = 64;

/// One complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The enhanced status code of the last line, e.g. `5.1.1`, when present.
    pub enhanced: Option<String>,
    /// The text of every line (code and separator removed).
    pub lines: Vec<String>,
}

impl Reply {
    /// 2xx
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
    /// 4xx (or anything unexpected): try again later.
    pub fn is_transient(&self) -> bool {
        !self.is_positive() && !self.is_permanent() && self.code != 354 && self.code != 334
    }
    /// 5xx
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// `550 5.1.1 text` on one line, for logs, DSNs and Badmail reasons (texts joined by spaces,
    /// control characters removed).
    pub fn one_line(&self) -> String {
        let mut s = format!("{}", self.code);
        for l in &self.lines {
            s.push(' ');
            s.extend(l.chars().filter(|c| !c.is_control()));
        }
        s
    }

    /// Whether an EHLO reply lists `keyword` (case-insensitive), e.g. `STARTTLS`.
    pub fn has_keyword(&self, keyword: &str) -> bool {
        self.keyword_args(keyword).is_some()
    }

    /// The arguments of an EHLO keyword, e.g. `keyword_args("AUTH")` → `Some("LOGIN PLAIN")`.
    pub fn keyword_args(&self, keyword: &str) -> Option<&str> {
        self.lines.iter().skip(1).find_map(|l| {
            let (k, rest) = l.split_once([' ', '=']).unwrap_or((l.as_str(), ""));
            k.eq_ignore_ascii_case(keyword).then_some(rest.trim())
        })
    }
}

/// The result of one [`parse`] call.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// A reply and the bytes it took from the buffer.
    Complete(Reply, usize),
    /// No complete reply yet.
    Partial,
    /// Not an SMTP reply; the connection must be dropped.
    Invalid(&'static str),
}

/// Parses the first reply in `buf`.
pub fn parse(buf: &[u8]) -> Parse {
    let mut pos = 0;
    let mut code: Option<u16> = None;
    let mut lines = Vec::new();
    loop {
        let rest = &buf[pos..];
        let Some(lf) = memchr::memchr(b'\n', &rest[..rest.len().min(MAX_LINE)]) else {
            return if rest.len() >= MAX_LINE {
                Parse::Invalid("reply line too long")
            } else {
                Parse::Partial
            };
        };
        let line = &rest[..lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += lf + 1;
        if line.len() < 3
            || !line[..3].iter().all(u8::is_ascii_digit)
            || !(b'2'..=b'5').contains(&line[0])
        {
            return Parse::Invalid("reply does not start with a reply code");
        }
        let c = line[..3]
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        if code.is_some_and(|p| p != c) {
            return Parse::Invalid("reply lines with different codes");
        }
        code = Some(c);
        let sep = line.get(3).copied();
        if !matches!(sep, None | Some(b' ') | Some(b'-')) {
            return Parse::Invalid("reply code not followed by space or hyphen");
        }
        let text = String::from_utf8_lossy(line.get(4..).unwrap_or(b"")).into_owned();
        lines.push(text);
        if sep != Some(b'-') {
            let enhanced = lines.last().and_then(|t| enhanced_code(t, c));
            return Parse::Complete(
                Reply {
                    code: c,
                    enhanced,
                    lines,
                },
                pos,
            );
        }
        if lines.len() >= MAX_LINES {
            return Parse::Invalid("too many reply lines");
        }
    }
}

/// The enhanced status code at the start of `text` when its class matches the reply's.
fn enhanced_code(text: &str, code: u16) -> Option<String> {
    let word = text.split(' ').next()?;
    let mut parts = word.split('.');
    let class = parts.next()?;
    let subject = parts.next()?;
    let detail = parts.next()?;
    let ok = parts.next().is_none()
        && class.len() == 1
        && class == (code / 100).to_string()
        && (1..=3).contains(&subject.len())
        && (1..=3).contains(&detail.len())
        && subject
            .bytes()
            .chain(detail.bytes())
            .all(|b| b.is_ascii_digit());
    ok.then(|| word.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(b: &[u8]) -> (Reply, usize) {
        match parse(b) {
            Parse::Complete(r, n) => (r, n),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn single_and_multi_line() {
        let (r, n) = complete(b"250 2.1.0 Ok\r\nNEXT");
        assert_eq!((r.code, r.enhanced.as_deref(), n), (250, Some("2.1.0"), 14));
        let (r, n) = complete(b"250-mx.test Hello\r\n250-SIZE 1000\r\n250-AUTH LOGIN PLAIN\r\n250-AUTH=LOGIN\r\n250 STARTTLS\r\n");
        assert_eq!(n, 86);
        assert_eq!(r.lines.len(), 5);
        assert!(r.has_keyword("starttls"));
        assert_eq!(r.keyword_args("SIZE"), Some("1000"));
        assert_eq!(r.keyword_args("AUTH"), Some("LOGIN PLAIN"));
        assert!(!r.has_keyword("PIPELINING"));
        let (r, _) = complete(b"220\r\n");
        assert_eq!((r.code, r.lines.clone()), (220, vec![String::new()]));
        assert_eq!(
            complete(b"550 5.1.1 No such user\r\n").0.one_line(),
            "550 5.1.1 No such user"
        );
        assert_eq!(
            complete(b"421 4.7.0 Try later\n").0.enhanced.as_deref(),
            Some("4.7.0")
        );
        assert_eq!(complete(b"550 4.1.1 class mismatch\r\n").0.enhanced, None);
    }

    #[test]
    fn partial_and_invalid() {
        assert_eq!(parse(b"250-a\r\n250 b"), Parse::Partial);
        assert_eq!(parse(b""), Parse::Partial);
        assert_eq!(
            parse(b"hello\r\n"),
            Parse::Invalid("reply does not start with a reply code")
        );
        assert_eq!(
            parse(b"250-a\r\n251 b\r\n"),
            Parse::Invalid("reply lines with different codes")
        );
        assert_eq!(
            parse(b"250xa\r\n"),
            Parse::Invalid("reply code not followed by space or hyphen")
        );
        assert_eq!(
            parse(&[b'2'; MAX_LINE]),
            Parse::Invalid("reply line too long")
        );
        assert_eq!(
            parse(b"650 x\r\n"),
            Parse::Invalid("reply does not start with a reply code")
        );
        let many: Vec<u8> = b"250-x\r\n".repeat(MAX_LINES);
        assert_eq!(parse(&many), Parse::Invalid("too many reply lines"));
    }

    #[test]
    fn classes() {
        let (r, _) = complete(b"451 4.3.0 later\r\n");
        assert!(r.is_transient() && !r.is_permanent());
        let (r, _) = complete(b"554 no\r\n");
        assert!(r.is_permanent());
    }
}
