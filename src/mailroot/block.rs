//! The envelope block at the top of every Drop and Queue file: `x-sender:` and one `x-receiver:` line
//! per recipient, as IIS writes Drop files, so that any file can be read by an admin or copied into
//! Pickup to be sent again. Queue files keep the ESMTP parameters that delivery needs (DSN, BODY)
//! after the address in angle brackets: `x-receiver: <u@example.com> NOTIFY=FAILURE ORCPT=rfc822;u@example.com`.
//! docs/mailroot.md describes the format.

use super::store::Folder;
use crate::smtp::envelope::{Envelope, Recipient};
use crate::smtp::params::{self, MailParams, RcptParams};

/// The parts a message is committed as: the Queue part (remote recipients, with parameters) first,
/// since it is the one delivery reads, then the Drop part (local recipients, IIS's plain lines). Each
/// with its envelope block; the message after the block is the same in both.
pub fn parts(env: &Envelope) -> Vec<(Folder, Vec<u8>)> {
    let mut parts = Vec::with_capacity(2);
    if env.has(false) {
        parts.push((Folder::Queue, write(env, false)));
    }
    if env.has(true) {
        parts.push((Folder::Drop, write(env, true)));
    }
    parts
}

/// The envelope block of the Drop part (`local = true`: plain IIS lines) or the Queue part
/// (`local = false`: with parameters where the message has any).
pub fn write(env: &Envelope, local: bool) -> Vec<u8> {
    let mut s = String::with_capacity(64 + 48 * env.recipients.len());
    let mut p = String::new();
    if !local {
        params::write_mail(&mut p, env.body, env.ret, env.envid.as_deref());
    }
    line(&mut s, "x-sender", &env.sender, &p);
    for r in env.recipients.iter().filter(|r| r.local == local) {
        p.clear();
        if !local {
            params::write_rcpt(&mut p, r.notify, r.orcpt.as_deref());
        }
        line(&mut s, "x-receiver", &r.address, &p);
    }
    s.into_bytes()
}

fn line(s: &mut String, name: &str, addr: &str, params: &str) {
    s.push_str(name);
    s.push_str(": ");
    if addr.is_empty() || !params.is_empty() {
        s.push('<');
        s.push_str(addr);
        s.push('>');
        s.push_str(params);
    } else {
        s.push_str(addr);
    }
    s.push_str("\r\n");
}

/// Why an envelope block could not be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockError(pub String);

impl std::fmt::Display for BlockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad envelope block: {}", self.0)
    }
}

impl std::error::Error for BlockError {}

/// Reads the envelope block mailroot wrote at the top of a Queue or Drop file (see [`write`]);
/// returns it and the offset where the message starts. Recipients come back with `local = false`:
/// a Queue file holds only remote recipients, and delivery routes each again.
pub fn read(file: &[u8]) -> Result<(Envelope, usize), BlockError> {
    let mut env = Envelope::default();
    let mut pos = 0;
    let mut sender_seen = false;
    loop {
        let rest = &file[pos..];
        let Some(lf) = memchr::memchr(b'\n', rest) else {
            break;
        };
        let line = &rest[..lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr::memchr(b':', line) else {
            break;
        };
        let name = &line[..colon];
        let is_sender = name.eq_ignore_ascii_case(b"x-sender");
        if !is_sender && !name.eq_ignore_ascii_case(b"x-receiver") {
            break;
        }
        let value = std::str::from_utf8(&line[colon + 1..])
            .map_err(|_| BlockError("not ASCII".into()))?
            .trim();
        let (addr, list) = match value.strip_prefix('<') {
            Some(r) => {
                let end = closing_bracket(r)
                    .ok_or_else(|| BlockError(format!("missing '>' in `{value}`")))?;
                (&r[..end], r[end + 1..].trim())
            }
            None => (value, ""),
        };
        let bad = |e: params::ParamError| BlockError(format!("{e} in `{value}`"));
        if is_sender {
            if sender_seen {
                return Err(BlockError("two x-sender lines".into()));
            }
            sender_seen = true;
            let p = MailParams::parse(list.as_bytes()).map_err(bad)?;
            // SIZE and AUTH= belong to the SMTP transaction, never to a stored envelope.
            if p.size.is_some() || p.auth.is_some() {
                return Err(bad(params::ParamError::Unknown));
            }
            env.sender = addr.to_string();
            env.body = p.body;
            env.ret = p.ret;
            env.envid = p.envid.map(str::to_string);
        } else {
            if addr.is_empty() {
                return Err(BlockError("empty x-receiver".into()));
            }
            let p = RcptParams::parse(list.as_bytes()).map_err(bad)?;
            env.recipients.push(Recipient {
                address: addr.to_string(),
                local: false,
                notify: p.notify,
                orcpt: p.orcpt.map(str::to_string),
            });
        }
        pos += lf + 1;
    }
    if !sender_seen {
        return Err(BlockError("no x-sender line".into()));
    }
    if env.recipients.is_empty() {
        return Err(BlockError("no x-receiver line".into()));
    }
    Ok((env, pos))
}

/// The `>` that closes an address: the first one outside a quoted local part (a `>` may appear in a
/// quoted local part, and in xtext parameters after the address).
fn closing_bracket(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::params::{Body, Notify, Ret};

    fn rcpt(address: &str, local: bool, notify: Option<u8>, orcpt: Option<&str>) -> Recipient {
        Recipient {
            address: address.into(),
            local,
            notify: notify.map(Notify),
            orcpt: orcpt.map(str::to_string),
        }
    }

    #[test]
    fn blocks_read_back() {
        let e = Envelope {
            sender: "a@b.test".into(),
            body: Some(Body::EightBitMime),
            ret: Some(Ret::Hdrs),
            envid: Some("X1".into()),
            recipients: vec![
                rcpt(
                    "r@remote.test",
                    false,
                    Some(Notify::FAILURE | Notify::DELAY),
                    Some("rfc822;r@remote.test"),
                ),
                rcpt("s@remote.test", false, None, None),
            ],
        };
        let mut file = write(&e, false);
        let n = file.len();
        file.extend_from_slice(b"Received: x\r\n\r\nbody\r\n");
        let (back, off) = read(&file).unwrap();
        assert_eq!(back, e);
        assert_eq!(off, n);
        let null = Envelope::report(vec![rcpt("u@x.test", false, None, None)]);
        let (back, _) = read(&write(&null, false)).unwrap();
        assert_eq!(back.sender, "");
        assert!(read(b"Subject: x\r\n").is_err());
        assert!(read(b"x-sender: a@b\r\n\r\n").is_err());
        assert!(read(b"x-sender: <a@b> FOO=1\r\nx-receiver: c@d\r\n").is_err());
    }

    #[test]
    fn parameters_are_checked_as_in_the_command() {
        let ok = |b: &[u8]| read(b).map(|(e, _)| e);
        assert!(ok(b"x-sender: <a@b> ENVID=a+2Bb\r\nx-receiver: c@d\r\n").is_ok());
        let e = ok(b"x-sender: <a@b> ENVID=a=b\r\nx-receiver: c@d\r\n").unwrap_err();
        assert!(e.to_string().contains("ENVID must be xtext"), "{e}");
        assert!(ok(b"x-sender: <a@b> SIZE=10\r\nx-receiver: c@d\r\n").is_err());
        assert!(ok(b"x-sender: <a@b> AUTH=<>\r\nx-receiver: c@d\r\n").is_err());
        assert!(ok(b"x-sender: a@b\r\nx-receiver: <c@d> NOTIFY=NEVER,DELAY\r\n").is_err());
        assert!(ok(b"x-sender: a@b\r\nx-receiver: <c@d> ORCPT=c@d\r\n").is_err());
        assert!(ok(b"x-sender: a@b\r\nx-receiver: <c@d> BODY=7BIT\r\n").is_err());
    }

    #[test]
    fn drop_and_queue_parts() {
        let e = Envelope {
            sender: "a@b.test".into(),
            body: Some(Body::EightBitMime),
            ret: None,
            envid: Some("X1".into()),
            recipients: vec![
                rcpt("u@local.test", true, Some(Notify::NEVER), None),
                rcpt(
                    "r@remote.test",
                    false,
                    Some(Notify::FAILURE),
                    Some("rfc822;r@remote.test"),
                ),
                rcpt("s@remote.test", false, None, None),
            ],
        };
        let p = parts(&e);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0, Folder::Queue);
        assert_eq!(
            String::from_utf8(p[0].1.clone()).unwrap(),
            "x-sender: <a@b.test> BODY=8BITMIME ENVID=X1\r\nx-receiver: <r@remote.test> NOTIFY=FAILURE ORCPT=rfc822;r@remote.test\r\nx-receiver: s@remote.test\r\n"
        );
        assert_eq!(p[1].0, Folder::Drop);
        assert_eq!(
            String::from_utf8(p[1].1.clone()).unwrap(),
            "x-sender: a@b.test\r\nx-receiver: u@local.test\r\n"
        );
        let null = Envelope::report(vec![rcpt("u@local.test", true, None, None)]);
        let p = parts(&null);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].0, String::from_utf8(p[0].1.clone()).unwrap()),
            (
                Folder::Drop,
                "x-sender: <>\r\nx-receiver: u@local.test\r\n".to_string()
            )
        );
    }

    #[test]
    fn brackets_in_parameters_and_quoted_local_parts() {
        let e = Envelope {
            sender: "s@b.test".into(),
            envid: Some("x>y".into()),
            recipients: vec![rcpt("\"a>b\"@b.test", false, None, Some("rfc822;a>b"))],
            ..Default::default()
        };
        let (back, _) = read(&write(&e, false)).unwrap();
        assert_eq!(back, e);
    }
}
