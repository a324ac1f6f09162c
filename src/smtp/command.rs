//! The SMTP command parser: a push parser over the connection's read buffer, in the manner of
//! httparse. [`take_line`] frames one command line (or says it needs more bytes); [`parse`] turns the
//! line into a [`Command`] that borrows from the buffer. Nothing here allocates or does I/O.

use super::address::{self, AddressError, Mailbox, Path};

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
pub const MAX_LINE: usize = 512;

/// The result of framing one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line without its line ending, and the bytes it took from the buffer.
    Complete(&'a [u8], usize),
    /// No line end yet; read more.
    Partial,
    /// More than [`MAX_LINE`] octets without a line end. The caller discards up to the next LF.
    TooLong,
}

/// Frames the first line in `buf`. CRLF ends a line; a bare LF is accepted too (as Postfix does),
/// which carries no smuggling risk in command mode because commands are not data.
#[inline]
pub fn take_line(buf: &[u8]) -> Line<'_> {
    let window = &buf[..buf.len().min(MAX_LINE)];
    match memchr::memchr(b'\n', window) {
        Some(lf) => {
            let end = if lf > 0 && buf[lf - 1] == b'\r' {
                lf - 1
            } else {
                lf
            };
            Line::Complete(&buf[..end], lf + 1)
        }
        None if buf.len() >= MAX_LINE => Line::TooLong,
        None => Line::Partial,
    }
}

/// BODY= values (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// 7BIT
    SevenBit,
    /// 8BITMIME
    EightBitMime,
    /// BINARYMIME (requires BDAT)
    BinaryMime,
}

/// RET= (RFC 3461).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// Return the full message in a failure DSN.
    Full,
    /// Return only the headers.
    Hdrs,
}

/// NOTIFY= bits (RFC 3461). `NEVER` is the empty set with [`Notify::NEVER`] set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify(pub u8);

impl Notify {
    /// NOTIFY=NEVER
    pub const NEVER: u8 = 1;
    /// SUCCESS
    pub const SUCCESS: u8 = 2;
    /// FAILURE
    pub const FAILURE: u8 = 4;
    /// DELAY
    pub const DELAY: u8 = 8;

    /// The parameter value as written on the wire.
    pub fn as_param(self) -> String {
        if self.0 & Self::NEVER != 0 {
            return "NEVER".into();
        }
        let mut v = Vec::new();
        for (bit, name) in [
            (Self::SUCCESS, "SUCCESS"),
            (Self::FAILURE, "FAILURE"),
            (Self::DELAY, "DELAY"),
        ] {
            if self.0 & bit != 0 {
                v.push(name);
            }
        }
        v.join(",")
    }
}

/// MAIL FROM parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailParams<'a> {
    /// SIZE=
    pub size: Option<u64>,
    /// BODY=
    pub body: Option<Body>,
    /// RET=
    pub ret: Option<Ret>,
    /// ENVID= (xtext, as received)
    pub envid: Option<&'a str>,
    /// AUTH= (RFC 4954 §5: the submitter's identity, `<>` when unknown); accepted and not trusted.
    pub auth: Option<&'a str>,
}

/// RCPT TO parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RcptParams<'a> {
    /// NOTIFY=
    pub notify: Option<Notify>,
    /// ORCPT= (`addr-type;xtext`, as received)
    pub orcpt: Option<&'a str>,
}

/// One parsed command, borrowing from the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// HELO domain
    Helo(&'a str),
    /// EHLO domain
    Ehlo(&'a str),
    /// MAIL FROM:<path> params
    Mail(Path<'a>, MailParams<'a>),
    /// RCPT TO:<path> params
    Rcpt(Mailbox<'a>, RcptParams<'a>),
    /// DATA
    Data,
    /// BDAT size [LAST]
    Bdat(u64, bool),
    /// RSET
    Rset,
    /// NOOP [text]
    Noop,
    /// QUIT
    Quit,
    /// VRFY string
    Vrfy(&'a str),
    /// HELP [topic]
    Help,
    /// STARTTLS (RFC 3207)
    StartTls,
    /// AUTH mechanism [initial-response] (RFC 4954); the mechanism upper-cased by the caller.
    Auth(&'a str, Option<&'a str>),
}

/// Why a line is not a valid command. Each maps to one reply (see `reply.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// 500 5.5.1: not a command we know.
    Unknown,
    /// 501 5.5.2: the command's arguments are malformed; the text says how.
    Syntax(&'static str),
    /// 501 5.1.7: the reverse-path is malformed.
    BadSender,
    /// 501 5.1.3: the forward-path is malformed.
    BadRecipient,
    /// 555 5.5.4: a parameter we do not support.
    UnknownParam,
    /// 501 5.5.4: a known parameter with a bad value.
    BadParamValue(&'static str),
}

const fn word(s: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*s)
}
const MAIL: u32 = word(b"mail");
const RCPT: u32 = word(b"rcpt");
const DATA: u32 = word(b"data");
const BDAT: u32 = word(b"bdat");
const EHLO: u32 = word(b"ehlo");
const HELO: u32 = word(b"helo");
const RSET: u32 = word(b"rset");
const NOOP: u32 = word(b"noop");
const QUIT: u32 = word(b"quit");
const VRFY: u32 = word(b"vrfy");
const HELP: u32 = word(b"help");
const AUTH: u32 = word(b"auth");

/// Parses one command line (without its line ending).
pub fn parse(line: &[u8]) -> Result<Command<'_>, ParseError> {
    let (verb, arg) = match memchr::memchr(b' ', line) {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &b""[..]),
    };
    if verb.len() == 8 && verb.eq_ignore_ascii_case(b"STARTTLS") {
        return no_arg(arg, Command::StartTls);
    }
    if verb.len() != 4 {
        return Err(ParseError::Unknown);
    }
    // Case-insensitive dispatch on the four verb letters packed into one word (ASCII letters only:
    // OR-ing 0x20 folds case, and no other byte folds onto a letter we match).
    let w = u32::from_le_bytes([verb[0], verb[1], verb[2], verb[3]]) | 0x2020_2020;
    match w {
        MAIL => parse_mail(arg),
        RCPT => parse_rcpt(arg),
        DATA => no_arg(arg, Command::Data),
        BDAT => parse_bdat(arg),
        EHLO => domain_arg(arg).map(Command::Ehlo),
        HELO => domain_arg(arg).map(Command::Helo),
        RSET => no_arg(arg, Command::Rset),
        NOOP => Ok(Command::Noop),
        QUIT => no_arg(arg, Command::Quit),
        VRFY => {
            let a = trim(arg);
            if a.is_empty() || a.iter().any(|b| !(32..=126).contains(b)) {
                Err(ParseError::Syntax("VRFY needs a user name or address"))
            } else {
                Ok(Command::Vrfy(ascii(a)))
            }
        }
        HELP => Ok(Command::Help),
        AUTH => parse_auth(arg),
        _ => Err(ParseError::Unknown),
    }
}

fn no_arg<'a>(arg: &[u8], c: Command<'a>) -> Result<Command<'a>, ParseError> {
    if trim(arg).is_empty() {
        Ok(c)
    } else {
        Err(ParseError::Syntax("this command takes no arguments"))
    }
}

fn domain_arg(arg: &[u8]) -> Result<&str, ParseError> {
    let a = trim(arg);
    if a.is_empty() {
        return Err(ParseError::Syntax(
            "a domain name or address literal is required",
        ));
    }
    // Any printable ASCII word is accepted, as IIS and Postfix accept it: clients send NetBIOS names,
    // underscores and bare IPs. Spaces, controls and 8-bit bytes are not.
    if a.iter().any(|b| !(33..=126).contains(b)) {
        return Err(ParseError::Syntax("invalid domain name"));
    }
    Ok(ascii(a))
}

fn parse_mail(arg: &[u8]) -> Result<Command<'_>, ParseError> {
    let rest =
        strip_prefix_ci(arg, b"FROM:").ok_or(ParseError::Syntax("expected MAIL FROM:<address>"))?;
    let (path, params) = address::parse_path(rest).map_err(|e| match e {
        AddressError::Syntax | AddressError::NonAscii => ParseError::BadSender,
    })?;
    let mut p = MailParams::default();
    for (k, v) in params_iter(params) {
        let v = v?;
        if k.eq_ignore_ascii_case(b"SIZE") {
            let n = parse_decimal(v).ok_or(ParseError::BadParamValue("SIZE needs a number"))?;
            set_once(&mut p.size, n)?;
        } else if k.eq_ignore_ascii_case(b"BODY") {
            let b = if v.eq_ignore_ascii_case(b"7BIT") {
                Body::SevenBit
            } else if v.eq_ignore_ascii_case(b"8BITMIME") {
                Body::EightBitMime
            } else if v.eq_ignore_ascii_case(b"BINARYMIME") {
                Body::BinaryMime
            } else {
                return Err(ParseError::BadParamValue(
                    "BODY must be 7BIT, 8BITMIME or BINARYMIME",
                ));
            };
            set_once(&mut p.body, b)?;
        } else if k.eq_ignore_ascii_case(b"RET") {
            let r = if v.eq_ignore_ascii_case(b"FULL") {
                Ret::Full
            } else if v.eq_ignore_ascii_case(b"HDRS") {
                Ret::Hdrs
            } else {
                return Err(ParseError::BadParamValue("RET must be FULL or HDRS"));
            };
            set_once(&mut p.ret, r)?;
        } else if k.eq_ignore_ascii_case(b"AUTH") {
            if !(v == b"<>" || is_xtext(v)) || v.len() > 500 {
                return Err(ParseError::BadParamValue("AUTH must be <> or xtext"));
            }
            set_once(&mut p.auth, ascii(v))?;
        } else if k.eq_ignore_ascii_case(b"ENVID") {
            if v.len() > 100 || !is_xtext(v) {
                return Err(ParseError::BadParamValue(
                    "ENVID must be xtext of at most 100 characters",
                ));
            }
            set_once(&mut p.envid, ascii(v))?;
        } else {
            return Err(ParseError::UnknownParam);
        }
    }
    Ok(Command::Mail(path, p))
}

fn parse_rcpt(arg: &[u8]) -> Result<Command<'_>, ParseError> {
    let rest =
        strip_prefix_ci(arg, b"TO:").ok_or(ParseError::Syntax("expected RCPT TO:<address>"))?;
    let (path, params) = address::parse_path(rest).map_err(|_| ParseError::BadRecipient)?;
    let Path::Mailbox(mailbox) = path else {
        return Err(ParseError::BadRecipient);
    };
    let mut p = RcptParams::default();
    for (k, v) in params_iter(params) {
        let v = v?;
        if k.eq_ignore_ascii_case(b"NOTIFY") {
            let mut n = 0u8;
            for item in v.split(|b| *b == b',') {
                let bit = if item.eq_ignore_ascii_case(b"NEVER") {
                    Notify::NEVER
                } else if item.eq_ignore_ascii_case(b"SUCCESS") {
                    Notify::SUCCESS
                } else if item.eq_ignore_ascii_case(b"FAILURE") {
                    Notify::FAILURE
                } else if item.eq_ignore_ascii_case(b"DELAY") {
                    Notify::DELAY
                } else {
                    return Err(ParseError::BadParamValue(
                        "NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY",
                    ));
                };
                n |= bit;
            }
            if n & Notify::NEVER != 0 && n != Notify::NEVER {
                return Err(ParseError::BadParamValue("NOTIFY=NEVER cannot be combined"));
            }
            set_once(&mut p.notify, Notify(n))?;
        } else if k.eq_ignore_ascii_case(b"ORCPT") {
            let semi = memchr::memchr(b';', v)
                .ok_or(ParseError::BadParamValue("ORCPT must be type;address"))?;
            let (t, x) = (&v[..semi], &v[semi + 1..]);
            if t.is_empty()
                || !t.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                || x.is_empty()
                || !is_xtext(x)
                || v.len() > 500
            {
                return Err(ParseError::BadParamValue("ORCPT must be type;xtext"));
            }
            set_once(&mut p.orcpt, ascii(v))?;
        } else {
            return Err(ParseError::UnknownParam);
        }
    }
    Ok(Command::Rcpt(mailbox, p))
}

fn parse_auth(arg: &[u8]) -> Result<Command<'_>, ParseError> {
    let a = trim(arg);
    let (mech, rest) = match memchr::memchr(b' ', a) {
        Some(i) => (&a[..i], trim(&a[i + 1..])),
        None => (a, &b""[..]),
    };
    if mech.is_empty()
        || mech.len() > 20
        || !mech
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    {
        return Err(ParseError::Syntax(
            "expected AUTH <mechanism> [initial-response]",
        ));
    }
    if memchr::memchr(b' ', rest).is_some() || rest.iter().any(|b| !(33..=126).contains(b)) {
        return Err(ParseError::Syntax(
            "expected AUTH <mechanism> [initial-response]",
        ));
    }
    Ok(Command::Auth(
        ascii(mech),
        if rest.is_empty() {
            None
        } else {
            Some(ascii(rest))
        },
    ))
}

fn parse_bdat(arg: &[u8]) -> Result<Command<'_>, ParseError> {
    let a = trim(arg);
    let (size, last) = match memchr::memchr(b' ', a) {
        Some(i) => (&a[..i], trim(&a[i + 1..])),
        None => (a, &b""[..]),
    };
    let n = parse_decimal(size).ok_or(ParseError::Syntax("BDAT needs a chunk size"))?;
    if last.is_empty() {
        Ok(Command::Bdat(n, false))
    } else if last.eq_ignore_ascii_case(b"LAST") {
        Ok(Command::Bdat(n, true))
    } else {
        Err(ParseError::Syntax("expected BDAT <size> [LAST]"))
    }
}

/// Iterates `KEY=VALUE` parameters separated by spaces. A parameter without `=` yields an empty value
/// (RFC 5321 allows keyword-only parameters; none of ours is one, so it is reported as unknown).
fn params_iter(s: &[u8]) -> impl Iterator<Item = (&[u8], Result<&[u8], ParseError>)> {
    s.split(|b| *b == b' ')
        .filter(|p| !p.is_empty())
        .map(|p| match memchr::memchr(b'=', p) {
            Some(i) if i > 0 => {
                let v = &p[i + 1..];
                let r = if v.is_empty() || v.iter().any(|b| !(33..=126).contains(b)) {
                    Err(ParseError::BadParamValue(
                        "parameter values must be printable ASCII",
                    ))
                } else {
                    Ok(v)
                };
                (&p[..i], r)
            }
            _ => (p, Err(ParseError::UnknownParam)),
        })
}

fn set_once<T>(slot: &mut Option<T>, v: T) -> Result<(), ParseError> {
    if slot.is_some() {
        return Err(ParseError::BadParamValue("parameter given twice"));
    }
    *slot = Some(v);
    Ok(())
}

/// RFC 3461 xtext: printable ASCII except '+' and '=', with `+XX` hex escapes.
fn is_xtext(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'+' => {
                let ok = v.get(i + 1..i + 3).is_some_and(|h| {
                    h.iter()
                        .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c))
                });
                if !ok {
                    return false;
                }
                i += 3;
            }
            b'=' => return false,
            33..=126 => i += 1,
            _ => return false,
        }
    }
    true
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn strip_prefix_ci<'a>(s: &'a [u8], p: &[u8]) -> Option<&'a [u8]> {
    let s = trim_start(s);
    if s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p) {
        Some(&s[p.len()..])
    } else {
        None
    }
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
    &s[n..]
}

fn trim(s: &[u8]) -> &[u8] {
    let s = trim_start(s);
    let n = s
        .iter()
        .rev()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count();
    &s[..s.len() - n]
}

/// `s` was checked to be printable ASCII (every caller checks first; debug builds check again).
#[inline]
fn ascii(s: &[u8]) -> &str {
    debug_assert!(s.is_ascii());
    // SAFETY: ASCII is valid UTF-8. Validating again cost a tenth of a MAIL command's parse.
    unsafe { std::str::from_utf8_unchecked(s) }
}

/// The verb of a line as typed, for the protocol log (at most 16 bytes, up to the first space).
pub fn verb_of(line: &[u8]) -> &[u8] {
    let end = memchr::memchr(b' ', line).unwrap_or(line.len()).min(16);
    &line[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Command<'_> {
        parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }
    fn err(s: &str) -> ParseError {
        parse(s.as_bytes()).unwrap_err()
    }
    fn mb<'a>(local: &'a str, domain: &'a str) -> Mailbox<'a> {
        Mailbox { local, domain }
    }

    #[test]
    fn framing() {
        assert_eq!(take_line(b"NOOP\r\nQUIT\r\n"), Line::Complete(b"NOOP", 6));
        assert_eq!(take_line(b"NOOP\nQUIT"), Line::Complete(b"NOOP", 5));
        assert_eq!(take_line(b"NOO"), Line::Partial);
        assert_eq!(take_line(b"NOOP\r"), Line::Partial);
        assert_eq!(take_line(b"\r\n"), Line::Complete(b"", 2));
        let long = vec![b'a'; MAX_LINE];
        assert_eq!(take_line(&long), Line::TooLong);
        let mut ok_line = vec![b'a'; MAX_LINE - 1];
        ok_line.push(b'\n');
        assert!(matches!(take_line(&ok_line), Line::Complete(_, 512)));
    }

    #[test]
    fn simple_commands() {
        assert_eq!(ok("EHLO client.example"), Command::Ehlo("client.example"));
        assert_eq!(ok("helo [127.0.0.1]"), Command::Helo("[127.0.0.1]"));
        assert_eq!(ok("HeLo  NETBIOS_NAME "), Command::Helo("NETBIOS_NAME"));
        assert_eq!(ok("DATA"), Command::Data);
        assert_eq!(ok("data "), Command::Data);
        assert_eq!(ok("RSET"), Command::Rset);
        assert_eq!(ok("NOOP anything"), Command::Noop);
        assert_eq!(ok("QUIT"), Command::Quit);
        assert_eq!(ok("HELP"), Command::Help);
        assert_eq!(ok("HELP mail"), Command::Help);
        assert_eq!(ok("VRFY admin"), Command::Vrfy("admin"));
        assert_eq!(ok("BDAT 100"), Command::Bdat(100, false));
        assert_eq!(ok("bdat 0 last"), Command::Bdat(0, true));
        assert_eq!(ok("STARTTLS"), Command::StartTls);
        assert_eq!(ok("starttls "), Command::StartTls);
        assert_eq!(ok("AUTH LOGIN"), Command::Auth("LOGIN", None));
        assert_eq!(
            ok("auth plain AHVAcA=="),
            Command::Auth("plain", Some("AHVAcA=="))
        );
        assert_eq!(ok("AUTH PLAIN ="), Command::Auth("PLAIN", Some("=")));
    }

    #[test]
    fn bad_commands() {
        assert_eq!(
            err("EHLO"),
            ParseError::Syntax("a domain name or address literal is required")
        );
        assert_eq!(err("EHLO a b"), ParseError::Syntax("invalid domain name"));
        assert_eq!(
            err("EHLO caf\u{e9}"),
            ParseError::Syntax("invalid domain name")
        );
        assert_eq!(err("HELO a\0b"), ParseError::Syntax("invalid domain name"));
        assert_eq!(
            err("DATA now"),
            ParseError::Syntax("this command takes no arguments")
        );
        assert_eq!(
            err("QUIT x"),
            ParseError::Syntax("this command takes no arguments")
        );
        assert_eq!(err("BDAT"), ParseError::Syntax("BDAT needs a chunk size"));
        assert_eq!(
            err("BDAT -1"),
            ParseError::Syntax("BDAT needs a chunk size")
        );
        assert_eq!(
            err("BDAT 10 FIRST"),
            ParseError::Syntax("expected BDAT <size> [LAST]")
        );
        assert_eq!(
            err("BDAT 99999999999999999999"),
            ParseError::Syntax("BDAT needs a chunk size")
        );
        assert_eq!(
            err("VRFY"),
            ParseError::Syntax("VRFY needs a user name or address")
        );
        assert_eq!(err("GET / HTTP/1.1"), ParseError::Unknown);
        assert_eq!(
            err("STARTTLS now"),
            ParseError::Syntax("this command takes no arguments")
        );
        assert_eq!(
            err("AUTH"),
            ParseError::Syntax("expected AUTH <mechanism> [initial-response]")
        );
        assert_eq!(
            err("AUTH PLAIN a b"),
            ParseError::Syntax("expected AUTH <mechanism> [initial-response]")
        );
        assert_eq!(
            err("AUTH P\u{e9}"),
            ParseError::Syntax("expected AUTH <mechanism> [initial-response]")
        );
        assert_eq!(err("MAILX FROM:<a@b>"), ParseError::Unknown);
        assert_eq!(err(""), ParseError::Unknown);
        assert_eq!(err("\u{ff}\u{fe}ab"), ParseError::Unknown);
        assert_eq!(err("EXPN list"), ParseError::Unknown);
    }

    #[test]
    fn mail_from() {
        assert_eq!(
            ok("MAIL FROM:<a@b.test>"),
            Command::Mail(Path::Mailbox(mb("a", "b.test")), MailParams::default())
        );
        assert_eq!(
            ok("mail from: <a@b.test>"),
            Command::Mail(Path::Mailbox(mb("a", "b.test")), MailParams::default())
        );
        assert_eq!(
            ok("MAIL FROM:<>"),
            Command::Mail(Path::Null, MailParams::default())
        );
        let c = ok("MAIL FROM:<a@b.test> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ314159+2B1");
        assert_eq!(
            c,
            Command::Mail(
                Path::Mailbox(mb("a", "b.test")),
                MailParams {
                    size: Some(1000),
                    body: Some(Body::EightBitMime),
                    ret: Some(Ret::Hdrs),
                    envid: Some("QQ314159+2B1"),
                    auth: None,
                }
            )
        );
        assert_eq!(
            ok("MAIL FROM:<> body=binarymime ret=full"),
            Command::Mail(
                Path::Null,
                MailParams {
                    body: Some(Body::BinaryMime),
                    ret: Some(Ret::Full),
                    ..Default::default()
                }
            )
        );
        assert_eq!(
            ok("MAIL FROM:<a@b.test> AUTH=<>"),
            Command::Mail(
                Path::Mailbox(mb("a", "b.test")),
                MailParams {
                    auth: Some("<>"),
                    ..Default::default()
                }
            )
        );
        assert_eq!(
            ok("MAIL FROM:<> BODY=7BIT"),
            Command::Mail(
                Path::Null,
                MailParams {
                    body: Some(Body::SevenBit),
                    ..Default::default()
                }
            )
        );
    }

    #[test]
    fn mail_from_errors() {
        assert_eq!(
            err("MAIL TO:<a@b>"),
            ParseError::Syntax("expected MAIL FROM:<address>")
        );
        assert_eq!(
            err("MAIL"),
            ParseError::Syntax("expected MAIL FROM:<address>")
        );
        assert_eq!(err("MAIL FROM:<a@b"), ParseError::BadSender);
        assert_eq!(err("MAIL FROM:<a@@b>"), ParseError::BadSender);
        assert_eq!(err("MAIL FROM:<\u{e9}@b.test>"), ParseError::BadSender);
        assert_eq!(
            err("MAIL FROM:<a@b.test> FOO=BAR"),
            ParseError::UnknownParam
        );
        assert_eq!(
            err("MAIL FROM:<a@b.test> SMTPUTF8"),
            ParseError::UnknownParam
        );
        assert_eq!(
            err("MAIL FROM:<a@b.test> SIZE=big"),
            ParseError::BadParamValue("SIZE needs a number")
        );
        assert_eq!(
            err("MAIL FROM:<a@b.test> SIZE="),
            ParseError::BadParamValue("parameter values must be printable ASCII")
        );
        assert_eq!(
            err("MAIL FROM:<a@b.test> SIZE=1 SIZE=2"),
            ParseError::BadParamValue("parameter given twice")
        );
        assert_eq!(
            err("MAIL FROM:<a@b.test> BODY=9BIT"),
            ParseError::BadParamValue("BODY must be 7BIT, 8BITMIME or BINARYMIME")
        );
        assert_eq!(
            err("MAIL FROM:<a@b.test> RET=SOME"),
            ParseError::BadParamValue("RET must be FULL or HDRS")
        );
        assert_eq!(
            err("MAIL FROM:<a@b.test> ENVID=a=b"),
            ParseError::BadParamValue("ENVID must be xtext of at most 100 characters")
        );
        assert_eq!(
            err("MAIL FROM:<a@b.test> ENVID=a+zz"),
            ParseError::BadParamValue("ENVID must be xtext of at most 100 characters")
        );
    }

    #[test]
    fn rcpt_to() {
        assert_eq!(
            ok("RCPT TO:<u@local.test>"),
            Command::Rcpt(mb("u", "local.test"), RcptParams::default())
        );
        assert_eq!(
            ok("RCPT TO:<Postmaster>"),
            Command::Rcpt(mb("Postmaster", ""), RcptParams::default())
        );
        assert_eq!(
            ok("RCPT TO:<u@x.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;u+40x.test"),
            Command::Rcpt(
                mb("u", "x.test"),
                RcptParams {
                    notify: Some(Notify(Notify::SUCCESS | Notify::DELAY)),
                    orcpt: Some("rfc822;u+40x.test")
                }
            )
        );
        assert_eq!(
            ok("RCPT TO:<u@x.test> NOTIFY=never").clone(),
            Command::Rcpt(
                mb("u", "x.test"),
                RcptParams {
                    notify: Some(Notify(Notify::NEVER)),
                    orcpt: None
                }
            )
        );
        assert_eq!(err("RCPT TO:<>"), ParseError::BadRecipient);
        assert_eq!(
            err("RCPT FROM:<u@x.test>"),
            ParseError::Syntax("expected RCPT TO:<address>")
        );
        assert_eq!(
            err("RCPT TO:<u@x.test> NOTIFY=NEVER,SUCCESS"),
            ParseError::BadParamValue("NOTIFY=NEVER cannot be combined")
        );
        assert_eq!(
            err("RCPT TO:<u@x.test> NOTIFY=SOMETIMES"),
            ParseError::BadParamValue("NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY")
        );
        assert_eq!(
            err("RCPT TO:<u@x.test> ORCPT=u@x.test"),
            ParseError::BadParamValue("ORCPT must be type;address")
        );
        assert_eq!(
            err("RCPT TO:<u@x.test> ORCPT=;u"),
            ParseError::BadParamValue("ORCPT must be type;xtext")
        );
        assert_eq!(err("RCPT TO:<u@x.test> SIZE=1"), ParseError::UnknownParam);
        assert_eq!(err("RCPT TO:<u@x.test> XYZ"), ParseError::UnknownParam);
    }

    #[test]
    fn notify_round_trip() {
        assert_eq!(Notify(Notify::NEVER).as_param(), "NEVER");
        assert_eq!(
            Notify(Notify::SUCCESS | Notify::FAILURE).as_param(),
            "SUCCESS,FAILURE"
        );
    }

    #[test]
    fn verbs_for_the_log() {
        assert_eq!(verb_of(b"MAIL FROM:<a@b>"), b"MAIL");
        assert_eq!(verb_of(b"quit"), b"quit");
        assert_eq!(verb_of(&[b'x'; 40]).len(), 16);
    }
}
