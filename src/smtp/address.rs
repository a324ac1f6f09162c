//! RFC 5321 paths and mailboxes, parsed without allocating: `<>`, `<local@domain>`, quoted local parts,
//! address literals, and the legacy source route `<@a,@b:local@domain>` (whose hops are dropped, as
//! RFC 5321 §3.3 allows: mail goes to the final mailbox, so that is also what the relay check sees).

use super::ascii;

/// A mailbox `local@domain`; `domain` has no trailing dot and may be an address literal `[…]`.
/// A bare `postmaster` (RFC 5321 §4.1.1.3) has an empty domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mailbox<'a> {
    /// The local part as written (quotes included when quoted).
    pub local: &'a str,
    /// The domain as written, without a trailing dot.
    pub domain: &'a str,
}

impl Mailbox<'_> {
    /// Whether the domain is an address literal such as `[192.0.2.1]`.
    pub fn is_literal(&self) -> bool {
        self.domain.starts_with('[')
    }

    /// Whether the local part carries sender-specified routing (`a%b`, `a!b`, a quoted `@`), which
    /// some mail systems downstream would follow to another domain.
    pub fn has_routing(&self) -> bool {
        self.local.bytes().any(|b| matches!(b, b'%' | b'!' | b'@'))
    }

    /// `local@domain` (or just `local` for bare postmaster).
    pub fn to_string_lossless(&self) -> String {
        if self.domain.is_empty() {
            self.local.to_string()
        } else {
            let mut s = String::with_capacity(self.local.len() + 1 + self.domain.len());
            s.push_str(self.local);
            s.push('@');
            s.push_str(self.domain);
            s
        }
    }
}

/// A reverse-path or forward-path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path<'a> {
    /// `<>`: the null reverse-path of bounces.
    Null,
    /// A mailbox.
    Mailbox(Mailbox<'a>),
}

/// Why an address did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    /// Not a path at all (brackets, characters, empty parts).
    Syntax,
    /// Bytes outside printable ASCII (mailroot does not offer SMTPUTF8).
    NonAscii,
}

/// Character classes, one table lookup per byte (as httparse does): RFC 5322 atext, and
/// letter-digit-hyphen for domain labels.
const ATEXT: u8 = 1;
const LDH: u8 = 2;
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() {
            t[b] = ATEXT | LDH;
        }
        b += 1;
    }
    t[b'-' as usize] = ATEXT | LDH;
    let specials = b"!#$%&'*+/=?^_`{|}~";
    let mut i = 0;
    while i < specials.len() {
        t[specials[i] as usize] = ATEXT;
        i += 1;
    }
    t
};

#[inline]
fn is_let_dig_hyp(b: u8) -> bool {
    CLASS[b as usize] & LDH != 0
}

/// A dot-atom local part: atext runs separated by single dots, no dot first or last.
fn is_dot_atom(s: &[u8]) -> bool {
    let mut prev_dot = true; // a dot first is as bad as two in a row
    for &b in s {
        if b == b'.' {
            if prev_dot {
                return false;
            }
            prev_dot = true;
        } else if CLASS[b as usize] & ATEXT != 0 {
            prev_dot = false;
        } else {
            return false;
        }
    }
    !prev_dot
}

/// Whether `d` is a valid domain name: dot-separated labels of letters, digits and inner hyphens.
pub fn is_valid_domain(d: &[u8]) -> bool {
    if d.is_empty() || d.len() > 255 {
        return false;
    }
    // One pass: the length of the current label and the byte before, no splitting.
    let mut label = 0usize;
    let mut prev = b'.';
    for &b in d {
        if b == b'.' {
            if label == 0 || prev == b'-' {
                return false;
            }
            label = 0;
        } else if is_let_dig_hyp(b) {
            if label == 0 && b == b'-' {
                return false;
            }
            label += 1;
            if label > 63 {
                return false;
            }
        } else {
            return false;
        }
        prev = b;
    }
    label > 0 && prev != b'-'
}

/// Whether `d` is an RFC 5321 address literal: `[IPv4]`, `[IPv6:…]` or `[tag:text]`.
fn is_valid_literal(d: &[u8]) -> bool {
    let Some(inner) = d.strip_prefix(b"[").and_then(|r| r.strip_suffix(b"]")) else {
        return false;
    };
    let Ok(s) = std::str::from_utf8(inner) else {
        return false;
    };
    if let Some(v6) = s.strip_prefix("IPv6:").or_else(|| s.strip_prefix("ipv6:")) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if s.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    // General-address-literal: Standardized-tag ":" 1*dcontent
    match s.split_once(':') {
        Some((tag, text)) => {
            is_valid_domain(tag.as_bytes())
                && !text.is_empty()
                && text
                    .bytes()
                    .all(|b| (33..=126).contains(&b) && b != b'[' && b != b']' && b != b'\\')
        }
        None => false,
    }
}

/// Parses the mailbox `local@domain` that fills all of `s`.
pub fn parse_mailbox(s: &[u8]) -> Result<Mailbox<'_>, AddressError> {
    if s.iter().any(|b| !(32..=126).contains(b)) {
        return Err(AddressError::NonAscii);
    }
    // The local part ends at the first '@' outside a quoted string.
    let at = if s.first() == Some(&b'"') {
        let mut i = 1;
        loop {
            match s.get(i) {
                None => return Err(AddressError::Syntax),
                Some(b'\\') => {
                    if s.get(i + 1).is_none() {
                        return Err(AddressError::Syntax);
                    }
                    i += 2
                }
                Some(b'"') => break,
                Some(_) => i += 1,
            }
        }
        if s.get(i + 1) != Some(&b'@') {
            return Err(AddressError::Syntax);
        }
        i + 1
    } else {
        let at = match memchr::memchr(b'@', s) {
            Some(at) => at,
            None if s.eq_ignore_ascii_case(b"postmaster") => {
                return Ok(Mailbox {
                    local: ascii(s),
                    domain: "",
                });
            }
            None => return Err(AddressError::Syntax),
        };
        if !is_dot_atom(&s[..at]) {
            return Err(AddressError::Syntax);
        }
        at
    };
    let mut domain = &s[at + 1..];
    if domain.first() == Some(&b'[') {
        if !is_valid_literal(domain) {
            return Err(AddressError::Syntax);
        }
    } else {
        if let Some(d) = domain.strip_suffix(b".") {
            domain = d; // `user@example.com.` is example.com
        }
        if !is_valid_domain(domain) {
            return Err(AddressError::Syntax);
        }
    }
    Ok(Mailbox {
        local: ascii(&s[..at]),
        domain: ascii(domain),
    })
}

/// Parses a path at the start of `s` (after `FROM:` or `TO:`), returning it and the rest of the line
/// (the ESMTP parameters). Angle brackets are expected; a bare address up to the first space is
/// tolerated, as IIS and Postfix tolerate it.
pub fn parse_path(s: &[u8]) -> Result<(Path<'_>, &[u8]), AddressError> {
    let s = trim_start(s);
    let (inner, rest) = if let Some(r) = s.strip_prefix(b"<") {
        // The closing bracket is the first '>' outside a quoted string. Most paths have no quote:
        // one search finds the bracket then.
        let mut i = 0;
        let mut quoted = false;
        if let Some(k) = memchr::memchr2(b'>', b'"', r)
            && r[k] == b'>'
        {
            i = k;
        }
        loop {
            match r.get(i) {
                None => return Err(AddressError::Syntax),
                Some(b'\\') if quoted => i += 2,
                Some(b'"') => {
                    quoted = !quoted;
                    i += 1
                }
                Some(b'>') if !quoted => break,
                Some(_) => i += 1,
            }
        }
        (&r[..i], &r[i + 1..])
    } else {
        let end = memchr::memchr(b' ', s).unwrap_or(s.len());
        if end == 0 {
            return Err(AddressError::Syntax);
        }
        (&s[..end], &s[end..])
    };
    if !rest.is_empty() && rest[0] != b' ' {
        return Err(AddressError::Syntax);
    }
    if inner.is_empty() {
        return Ok((Path::Null, rest));
    }
    // Source route: `@a,@b:mailbox`.
    let mailbox = if inner[0] == b'@' {
        let colon = memchr::memchr(b':', inner).ok_or(AddressError::Syntax)?;
        for hop in inner[..colon].split(|b| *b == b',') {
            let h = hop.strip_prefix(b"@").ok_or(AddressError::Syntax)?;
            if !(is_valid_domain(h) || is_valid_literal(h)) {
                return Err(AddressError::Syntax);
            }
        }
        &inner[colon + 1..]
    } else {
        inner
    };
    Ok((Path::Mailbox(parse_mailbox(mailbox)?), rest))
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| **b == b' ').count();
    &s[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(s: &str) -> Mailbox<'_> {
        parse_mailbox(s.as_bytes()).unwrap()
    }

    #[test]
    fn domains_and_local_parts_by_the_byte() {
        let l63 = "a".repeat(63);
        let l64 = "a".repeat(64);
        for ok in ["a", "example.com", "x-1.y2", "1.2.3", &format!("{l63}.com")] {
            assert!(is_valid_domain(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "-a.b",
            "a-.b",
            "a.b-",
            "a_b.c",
            "a b",
            &l64,
            &format!("{l64}.com"),
        ] {
            assert!(!is_valid_domain(bad.as_bytes()), "{bad:?}");
        }
        assert!(!is_valid_domain("a.".repeat(128).as_bytes()));
        for ok in ["a", "a.b", "o'neil", "x+tag", "#!$%&'*+-/=?^_`{|}~"] {
            assert!(is_dot_atom(ok.as_bytes()), "{ok}");
        }
        for bad in ["", ".", ".a", "a.", "a..b", "a b", "a\"b", "a@b", "(x)"] {
            assert!(!is_dot_atom(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn mailboxes() {
        assert_eq!(
            mb("a.b+c@Example.COM"),
            Mailbox {
                local: "a.b+c",
                domain: "Example.COM"
            }
        );
        assert_eq!(mb("\"john doe\"@x.test").local, "\"john doe\"");
        assert_eq!(mb("\"a@b\"@local.test").domain, "local.test");
        assert!(mb("\"a@b\"@local.test").has_routing());
        assert!(mb("a%b@local.test").has_routing());
        assert!(mb("a!b@local.test").has_routing());
        assert!(!mb("ab@local.test").has_routing());
        assert_eq!(mb("u@example.com.").domain, "example.com");
        assert!(mb("u@[127.0.0.1]").is_literal());
        assert!(mb("u@[IPv6:::1]").is_literal());
        assert_eq!(mb("Postmaster").domain, "");
        for bad in [
            "",
            "@x",
            "a@",
            "a@b..c",
            ".a@b",
            "a.@b",
            "a..b@c",
            "a@-b.c",
            "a@b-.c",
            "a@[1.2.3]",
            "a@[x",
            "a b@c",
            "\"a@b",
            "a@b@c",
            "a@b_c.d",
        ] {
            assert!(
                parse_mailbox(bad.as_bytes()).is_err(),
                "{bad} must not parse"
            );
        }
        assert_eq!(
            parse_mailbox("é@x.test".as_bytes()),
            Err(AddressError::NonAscii)
        );
        assert_eq!(parse_mailbox(b"a\0@x.test"), Err(AddressError::NonAscii));
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path(b"<>").unwrap(), (Path::Null, &b""[..]));
        let (p, rest) = parse_path(b"<a@b.c> SIZE=10").unwrap();
        assert_eq!(
            p,
            Path::Mailbox(Mailbox {
                local: "a",
                domain: "b.c"
            })
        );
        assert_eq!(rest, b" SIZE=10");
        let (p, _) = parse_path(b" <@relay.test,@[10.0.0.1]:u@final.test>").unwrap();
        assert_eq!(
            p,
            Path::Mailbox(Mailbox {
                local: "u",
                domain: "final.test"
            })
        );
        let (p, rest) = parse_path(b"a@b.c BODY=8BITMIME").unwrap();
        assert_eq!(
            p,
            Path::Mailbox(Mailbox {
                local: "a",
                domain: "b.c"
            })
        );
        assert_eq!(rest, b" BODY=8BITMIME");
        let (p, _) = parse_path(b"<\"x>y\"@b.c>").unwrap();
        assert_eq!(
            p,
            Path::Mailbox(Mailbox {
                local: "\"x>y\"",
                domain: "b.c"
            })
        );
        for bad in [
            &b"<a@b.c"[..],
            b"<a@b.c>x",
            b"",
            b"<@a:>",
            b"<@a,b:u@c>",
            b"<a@b.c>>",
        ] {
            assert!(
                parse_path(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
