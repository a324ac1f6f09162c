//! ESMTP parameters of MAIL FROM and RCPT TO: SIZE, BODY (RFC 6152, RFC 3030), RET, ENVID, NOTIFY,
//! ORCPT (RFC 3461) and AUTH= (RFC 4954 §5). Their types, their parsing with the RFC rules (value
//! sets, xtext) and their wire form live here only: the command parser, the envelope block of a Queue
//! file, Pickup files and the outbound client all go through this module, so a parameter means the
//! same wherever it is read or written. Parsing borrows from the input and allocates nothing.

use std::fmt;

/// BODY= values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// 7BIT
    SevenBit,
    /// 8BITMIME
    EightBitMime,
    /// BINARYMIME (requires BDAT)
    BinaryMime,
}

impl Body {
    /// Parses a BODY= value (any case).
    pub fn parse(v: &[u8]) -> Result<Body, ParamError> {
        if v.eq_ignore_ascii_case(b"7BIT") {
            Ok(Body::SevenBit)
        } else if v.eq_ignore_ascii_case(b"8BITMIME") {
            Ok(Body::EightBitMime)
        } else if v.eq_ignore_ascii_case(b"BINARYMIME") {
            Ok(Body::BinaryMime)
        } else {
            Err(ParamError::BadValue(
                "BODY must be 7BIT, 8BITMIME or BINARYMIME",
            ))
        }
    }

    /// The value as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Body::SevenBit => "7BIT",
            Body::EightBitMime => "8BITMIME",
            Body::BinaryMime => "BINARYMIME",
        }
    }
}

/// RET= values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// Return the full message in a failure DSN.
    Full,
    /// Return only the headers.
    Hdrs,
}

impl Ret {
    /// Parses a RET= value (any case).
    pub fn parse(v: &[u8]) -> Result<Ret, ParamError> {
        if v.eq_ignore_ascii_case(b"FULL") {
            Ok(Ret::Full)
        } else if v.eq_ignore_ascii_case(b"HDRS") {
            Ok(Ret::Hdrs)
        } else {
            Err(ParamError::BadValue("RET must be FULL or HDRS"))
        }
    }

    /// The value as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }
}

/// NOTIFY= bits. `NEVER` is the empty set with [`Notify::NEVER`] set.
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

    /// Parses a NOTIFY= value: `NEVER`, or a comma list of SUCCESS, FAILURE, DELAY (any case).
    pub fn parse(v: &[u8]) -> Result<Notify, ParamError> {
        let mut n = 0u8;
        for item in v.split(|b| *b == b',') {
            n |= if item.eq_ignore_ascii_case(b"NEVER") {
                Notify::NEVER
            } else if item.eq_ignore_ascii_case(b"SUCCESS") {
                Notify::SUCCESS
            } else if item.eq_ignore_ascii_case(b"FAILURE") {
                Notify::FAILURE
            } else if item.eq_ignore_ascii_case(b"DELAY") {
                Notify::DELAY
            } else {
                return Err(ParamError::BadValue(
                    "NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY",
                ));
            };
        }
        if n & Notify::NEVER != 0 && n != Notify::NEVER {
            return Err(ParamError::BadValue("NOTIFY=NEVER cannot be combined"));
        }
        Ok(Notify(n))
    }

    /// Whether this NOTIFY asks for `bit`; without NOTIFY (`None`), failures and delays are
    /// reported (RFC 3461 §4.1).
    pub fn wants(notify: Option<Notify>, bit: u8) -> bool {
        match notify {
            None => bit == Notify::FAILURE || bit == Notify::DELAY,
            Some(n) => n.0 & Notify::NEVER == 0 && n.0 & bit != 0,
        }
    }
}

impl fmt::Display for Notify {
    /// The value as written on the wire: `NEVER`, or `SUCCESS,FAILURE,DELAY` in that order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 & Self::NEVER != 0 {
            return f.write_str("NEVER");
        }
        let mut first = true;
        for (bit, name) in [
            (Self::SUCCESS, "SUCCESS"),
            (Self::FAILURE, "FAILURE"),
            (Self::DELAY, "DELAY"),
        ] {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Why a parameter was refused. The command parser turns these into its replies (555 for
/// [`ParamError::Unknown`], 501 5.5.4 for [`ParamError::BadValue`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamError {
    /// A parameter this side does not support.
    Unknown,
    /// A known parameter with a bad value (or given twice); the text says how.
    BadValue(&'static str),
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::Unknown => f.write_str("unknown parameter"),
            ParamError::BadValue(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ParamError {}

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
    /// AUTH= (the submitter's identity, `<>` when unknown); accepted and not trusted.
    pub auth: Option<&'a str>,
}

impl<'a> MailParams<'a> {
    /// Parses the `KEY=VALUE` list after the reverse-path.
    pub fn parse(list: &'a [u8]) -> Result<MailParams<'a>, ParamError> {
        let mut p = MailParams::default();
        for (k, v) in pairs(list) {
            p.set(k, v?)?;
        }
        Ok(p)
    }

    /// Sets one parameter from its keyword and value (printable ASCII, checked by [`pairs`]).
    pub fn set(&mut self, key: &[u8], v: &'a [u8]) -> Result<(), ParamError> {
        if key.eq_ignore_ascii_case(b"SIZE") {
            let n = parse_decimal(v).ok_or(ParamError::BadValue("SIZE needs a number"))?;
            set_once(&mut self.size, n)
        } else if key.eq_ignore_ascii_case(b"BODY") {
            set_once(&mut self.body, Body::parse(v)?)
        } else if key.eq_ignore_ascii_case(b"RET") {
            set_once(&mut self.ret, Ret::parse(v)?)
        } else if key.eq_ignore_ascii_case(b"AUTH") {
            if !(v == b"<>" || is_xtext(v)) || v.len() > 500 {
                return Err(ParamError::BadValue("AUTH must be <> or xtext"));
            }
            set_once(&mut self.auth, super::ascii(v))
        } else if key.eq_ignore_ascii_case(b"ENVID") {
            set_once(&mut self.envid, envid(v)?)
        } else {
            Err(ParamError::Unknown)
        }
    }
}

/// RCPT TO parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RcptParams<'a> {
    /// NOTIFY=
    pub notify: Option<Notify>,
    /// ORCPT= (`addr-type;xtext`, as received)
    pub orcpt: Option<&'a str>,
}

impl<'a> RcptParams<'a> {
    /// Parses the `KEY=VALUE` list after the forward-path.
    pub fn parse(list: &'a [u8]) -> Result<RcptParams<'a>, ParamError> {
        let mut p = RcptParams::default();
        for (k, v) in pairs(list) {
            p.set(k, v?)?;
        }
        Ok(p)
    }

    /// Sets one parameter from its keyword and value (printable ASCII, checked by [`pairs`]).
    pub fn set(&mut self, key: &[u8], v: &'a [u8]) -> Result<(), ParamError> {
        if key.eq_ignore_ascii_case(b"NOTIFY") {
            set_once(&mut self.notify, Notify::parse(v)?)
        } else if key.eq_ignore_ascii_case(b"ORCPT") {
            set_once(&mut self.orcpt, orcpt(v)?)
        } else {
            Err(ParamError::Unknown)
        }
    }
}

/// ENVID: xtext of at most 100 characters.
fn envid(v: &[u8]) -> Result<&str, ParamError> {
    if v.len() > 100 || !is_xtext(v) {
        return Err(ParamError::BadValue(
            "ENVID must be xtext of at most 100 characters",
        ));
    }
    Ok(super::ascii(v))
}

/// ORCPT: `addr-type;xtext`, the type an atom of letters, digits and hyphens.
fn orcpt(v: &[u8]) -> Result<&str, ParamError> {
    let semi = memchr::memchr(b';', v).ok_or(ParamError::BadValue("ORCPT must be type;address"))?;
    let (t, x) = (&v[..semi], &v[semi + 1..]);
    if t.is_empty()
        || !t.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        || x.is_empty()
        || !is_xtext(x)
        || v.len() > 500
    {
        return Err(ParamError::BadValue("ORCPT must be type;xtext"));
    }
    Ok(super::ascii(v))
}

/// Splits a parameter list into `(keyword, value)` at single spaces. A value must be printable
/// ASCII; a parameter without `=` is reported as unknown (RFC 5321 allows keyword-only parameters,
/// and none of ours is one).
pub fn pairs(list: &[u8]) -> impl Iterator<Item = (&[u8], Result<&[u8], ParamError>)> {
    list.split(|b| *b == b' ')
        .filter(|p| !p.is_empty())
        .map(|p| match memchr::memchr(b'=', p) {
            Some(i) if i > 0 => {
                let v = &p[i + 1..];
                let r = if v.is_empty() || v.iter().any(|b| !(33..=126).contains(b)) {
                    Err(ParamError::BadValue(
                        "parameter values must be printable ASCII",
                    ))
                } else {
                    Ok(v)
                };
                (&p[..i], r)
            }
            _ => (p, Err(ParamError::Unknown)),
        })
}

fn set_once<T>(slot: &mut Option<T>, v: T) -> Result<(), ParamError> {
    if slot.is_some() {
        return Err(ParamError::BadValue("parameter given twice"));
    }
    *slot = Some(v);
    Ok(())
}

/// RFC 3461 xtext: printable ASCII except '+' and '=', with `+XX` hex escapes.
pub fn is_xtext(v: &[u8]) -> bool {
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

/// A decimal number of at most 19 digits.
pub fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Appends the transaction parameters of an envelope as they follow `MAIL FROM:<…>`:
/// ` BODY=… RET=… ENVID=…`, each only when set.
pub fn write_mail(out: &mut String, body: Option<Body>, ret: Option<Ret>, envid: Option<&str>) {
    if let Some(b) = body {
        out.push_str(" BODY=");
        out.push_str(b.as_str());
    }
    if let Some(r) = ret {
        out.push_str(" RET=");
        out.push_str(r.as_str());
    }
    if let Some(e) = envid {
        out.push_str(" ENVID=");
        out.push_str(e);
    }
}

/// Appends a recipient's parameters as they follow `RCPT TO:<…>`: ` NOTIFY=… ORCPT=…`, each only
/// when set.
pub fn write_rcpt(out: &mut String, notify: Option<Notify>, orcpt: Option<&str>) {
    use std::fmt::Write;
    if let Some(n) = notify {
        let _ = write!(out, " NOTIFY={n}");
    }
    if let Some(o) = orcpt {
        out.push_str(" ORCPT=");
        out.push_str(o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_parameters() {
        let p = MailParams::parse(b"SIZE=1000 body=8bitmime RET=HDRS ENVID=QQ314159+2B1 AUTH=<>")
            .unwrap();
        assert_eq!(p.size, Some(1000));
        assert_eq!(p.body, Some(Body::EightBitMime));
        assert_eq!(p.ret, Some(Ret::Hdrs));
        assert_eq!(p.envid, Some("QQ314159+2B1"));
        assert_eq!(p.auth, Some("<>"));
        assert_eq!(MailParams::parse(b""), Ok(MailParams::default()));
        assert_eq!(MailParams::parse(b"FOO=1"), Err(ParamError::Unknown));
        assert_eq!(MailParams::parse(b"SIZE"), Err(ParamError::Unknown));
        assert_eq!(
            MailParams::parse(b"RET=FULL RET=HDRS"),
            Err(ParamError::BadValue("parameter given twice"))
        );
        assert!(MailParams::parse(b"ENVID=a=b").is_err(), "= is not xtext");
        assert!(
            MailParams::parse(b"ENVID=a+zz").is_err(),
            "+zz is no hex escape"
        );
        assert!(MailParams::parse(&[b"ENVID=".as_slice(), &[b'x'; 101]].concat()).is_err());
        assert!(MailParams::parse(b"BODY=9BIT").is_err());
        assert!(MailParams::parse(b"SIZE=12x").is_err());
    }

    #[test]
    fn rcpt_parameters() {
        let p = RcptParams::parse(b"NOTIFY=success,DELAY ORCPT=rfc822;u+40x.test").unwrap();
        assert_eq!(p.notify, Some(Notify(Notify::SUCCESS | Notify::DELAY)));
        assert_eq!(p.orcpt, Some("rfc822;u+40x.test"));
        assert!(RcptParams::parse(b"NOTIFY=NEVER,SUCCESS").is_err());
        assert!(RcptParams::parse(b"NOTIFY=SOMETIMES").is_err());
        assert!(RcptParams::parse(b"ORCPT=rfc822").is_err(), "no type");
        assert!(RcptParams::parse(b"ORCPT=rfc822;").is_err());
        assert!(RcptParams::parse(b"ORCPT=rfc 822;a").is_err());
        assert!(RcptParams::parse(b"ORCPT=rfc822;a=b").is_err());
        assert_eq!(RcptParams::parse(b"SIZE=1"), Err(ParamError::Unknown));
    }

    #[test]
    fn wire_forms_read_back() {
        assert_eq!(Notify(Notify::NEVER).to_string(), "NEVER");
        assert_eq!(
            Notify(Notify::DELAY | Notify::SUCCESS | Notify::FAILURE).to_string(),
            "SUCCESS,FAILURE,DELAY"
        );
        let mut s = String::new();
        write_mail(&mut s, Some(Body::BinaryMime), Some(Ret::Full), Some("x>y"));
        assert_eq!(s, " BODY=BINARYMIME RET=FULL ENVID=x>y");
        let back = MailParams::parse(s.as_bytes()).unwrap();
        assert_eq!(
            (back.body, back.ret, back.envid),
            (Some(Body::BinaryMime), Some(Ret::Full), Some("x>y"))
        );
        let mut s = String::new();
        write_rcpt(&mut s, Some(Notify(Notify::FAILURE)), Some("rfc822;a+2Bb"));
        assert_eq!(s, " NOTIFY=FAILURE ORCPT=rfc822;a+2Bb");
        let back = RcptParams::parse(s.as_bytes()).unwrap();
        assert_eq!(back.notify, Some(Notify(Notify::FAILURE)));
        assert_eq!(back.orcpt, Some("rfc822;a+2Bb"));
        let mut s = String::new();
        write_mail(&mut s, None, None, None);
        write_rcpt(&mut s, None, None);
        assert_eq!(s, "");
    }

    #[test]
    fn notify_rules() {
        assert!(
            Notify::wants(None, Notify::FAILURE)
                && Notify::wants(None, Notify::DELAY)
                && !Notify::wants(None, Notify::SUCCESS)
        );
        assert!(!Notify::wants(Some(Notify(Notify::NEVER)), Notify::FAILURE));
        assert!(Notify::wants(
            Some(Notify(Notify::SUCCESS)),
            Notify::SUCCESS
        ));
        assert!(!Notify::wants(
            Some(Notify(Notify::SUCCESS)),
            Notify::FAILURE
        ));
    }
}
