//! The SMTP command parser: a push parser over the connection's read buffer, in the manner of
//! httparse. [`take_line`] frames one command line (or says it needs more bytes); [`parse`] turns the
//! line into a [`Command`] that borrows from the buffer. Nothing here allocates or does I/O.

use super::address::{self, AddressError, Mailbox, Path};
use super::ascii;
use super::params::{MailParams, ParamError, RcptParams, parse_decimal};

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
pub const MAX_LINE: usize = 512;

/// The result of framing one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line ended by CRLF, without it, and the bytes it took from the buffer.
    Complete(&'a [u8], usize),
    /// A line ended by a bare LF, or holding a bare CR (RFC 5321 §2.3.8 forbids both), without its
    /// line ending, and the bytes it took. A filter in front that ends lines only at CRLF would read
    /// it, and what follows up to the next CRLF, as one line: the session refuses it unless told to
    /// accept it (AllowBareLfInCommands).
    Bare(&'a [u8], usize, Bare),
    /// No line end yet; read more.
    Partial,
    /// More than [`MAX_LINE`] octets without a line end. The caller discards up to the next LF.
    TooLong,
}

/// Which forbidden line ending a [`Line::Bare`] line has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bare {
    /// It ends with a LF that no CR precedes.
    Lf,
    /// It ends with CRLF but holds a CR that no LF follows.
    Cr,
}

/// Frames the first line in `buf`: it ends at the first LF. A CRLF ending is [`Line::Complete`];
/// a bare LF ending or a bare CR inside is [`Line::Bare`].
#[inline]
pub fn take_line(buf: &[u8]) -> Line<'_> {
    let window = &buf[..buf.len().min(MAX_LINE)];
    // One scan for the first CR or LF: a well-formed line has its CR right before its LF.
    match memchr::memchr2(b'\r', b'\n', window) {
        Some(i) if window[i] == b'\n' => Line::Bare(&buf[..i], i + 1, Bare::Lf),
        Some(i) if window.get(i + 1) == Some(&b'\n') => Line::Complete(&buf[..i], i + 2),
        Some(i) if i + 1 < window.len() => match memchr::memchr(b'\n', &window[i + 1..]) {
            Some(rel) => {
                let lf = i + 1 + rel;
                if buf[lf - 1] == b'\r' {
                    Line::Bare(&buf[..lf - 1], lf + 1, Bare::Cr)
                } else {
                    Line::Bare(&buf[..lf], lf + 1, Bare::Lf)
                }
            }
            None if buf.len() >= MAX_LINE => Line::TooLong,
            None => Line::Partial,
        },
        // A CR at the end of what is here: its LF may be next.
        _ if buf.len() >= MAX_LINE => Line::TooLong,
        _ => Line::Partial,
    }
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

/// Why a line is not a valid command. The session answers each with one reply (`Session::command`
/// maps them; the texts are in `reply.rs`).
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

impl From<ParamError> for ParseError {
    fn from(e: ParamError) -> ParseError {
        match e {
            ParamError::Unknown => ParseError::UnknownParam,
            ParamError::BadValue(why) => ParseError::BadParamValue(why),
        }
    }
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
    let p = MailParams::parse(params)?;
    Ok(Command::Mail(path, p))
}

fn parse_rcpt(arg: &[u8]) -> Result<Command<'_>, ParseError> {
    let rest =
        strip_prefix_ci(arg, b"TO:").ok_or(ParseError::Syntax("expected RCPT TO:<address>"))?;
    let (path, params) = address::parse_path(rest).map_err(|_| ParseError::BadRecipient)?;
    let Path::Mailbox(mailbox) = path else {
        return Err(ParseError::BadRecipient);
    };
    let p = RcptParams::parse(params)?;
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

fn strip_prefix_ci<'a>(s: &'a [u8], p: &[u8]) -> Option<&'a [u8]> {
    let s = trim_start(s);
    if s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p) {
        Some(&s[p.len()..])
    } else {
        None
    }
}

// Command arguments are trimmed of SP and HTAB only (RFC 5321's WSP): a stray CR or FF before the
// line end is not white space here, so std's `trim_ascii` would accept what this refuses.
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

/// The verb of a line as typed, for the protocol log (at most 16 bytes, up to the first space).
pub fn verb_of(line: &[u8]) -> &[u8] {
    let end = memchr::memchr(b' ', line).unwrap_or(line.len()).min(16);
    &line[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::params::{Body, Notify, Ret};

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
        assert_eq!(take_line(b"NOOP\nQUIT"), Line::Bare(b"NOOP", 5, Bare::Lf));
        assert_eq!(take_line(b"NOO"), Line::Partial);
        assert_eq!(take_line(b"NOOP\r"), Line::Partial);
        assert_eq!(take_line(b"\r\n"), Line::Complete(b"", 2));
        assert_eq!(take_line(b"\n"), Line::Bare(b"", 1, Bare::Lf));
        // The smuggling shape: two commands joined by a bare LF are framed apart, the first as bare.
        assert_eq!(
            take_line(b"MAIL FROM:<a@b>\nRCPT TO:<c@d>\r\n"),
            Line::Bare(b"MAIL FROM:<a@b>", 16, Bare::Lf)
        );
        assert_eq!(
            take_line(b"RCPT TO:<c@d>\r\n"),
            Line::Complete(b"RCPT TO:<c@d>", 15)
        );
        // A bare CR inside a CRLF line, and one before a bare LF.
        assert_eq!(
            take_line(b"NOOP\rQUIT\r\n"),
            Line::Bare(b"NOOP\rQUIT", 11, Bare::Cr)
        );
        assert_eq!(
            take_line(b"NOOP\rQUIT\nX"),
            Line::Bare(b"NOOP\rQUIT", 10, Bare::Lf)
        );
        assert_eq!(take_line(b"NOOP\rQU"), Line::Partial);
        let long = vec![b'a'; MAX_LINE];
        assert_eq!(take_line(&long), Line::TooLong);
        let mut ok_line = vec![b'a'; MAX_LINE - 2];
        ok_line.extend_from_slice(b"\r\n");
        assert!(matches!(take_line(&ok_line), Line::Complete(_, 512)));
        // Its CR is the last byte of the window: the LF beyond makes it too long.
        let mut over = vec![b'a'; MAX_LINE - 1];
        over.extend_from_slice(b"\r\n");
        assert_eq!(take_line(&over), Line::TooLong);
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
    fn verbs_for_the_log() {
        assert_eq!(verb_of(b"MAIL FROM:<a@b>"), b"MAIL");
        assert_eq!(verb_of(b"quit"), b"quit");
        assert_eq!(verb_of(&[b'x'; 40]).len(), 16);
    }
}
