//! The envelope block at the top of every Drop and Queue file: `x-sender:` and one `x-receiver:` line
//! per recipient, as IIS writes Drop files, so that any file can be read by an admin or copied into
//! Pickup to be sent again. Queue files keep the ESMTP parameters that delivery needs (DSN, BODY)
//! after the address in angle brackets: `x-receiver: <u@example.com> NOTIFY=FAILURE ORCPT=rfc822;u@example.com`.

use crate::smtp::command::{Body, Notify, Ret};

/// One accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// `local@domain`.
    pub address: String,
    /// Whether it goes to Drop (a local domain) rather than Queue.
    pub local: bool,
    /// NOTIFY=
    pub notify: Option<Notify>,
    /// ORCPT= as received (xtext).
    pub orcpt: Option<String>,
}

/// The envelope of one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// MAIL FROM; empty for the null sender `<>`.
    pub sender: String,
    /// BODY=
    pub body: Option<Body>,
    /// RET=
    pub ret: Option<Ret>,
    /// ENVID= as received (xtext).
    pub envid: Option<String>,
    /// RCPT TO, in order, without duplicates.
    pub recipients: Vec<Recipient>,
}

impl Envelope {
    /// Whether any recipient is local / remote.
    pub fn has(&self, local: bool) -> bool {
        self.recipients.iter().any(|r| r.local == local)
    }

    /// The envelope block for the Drop file (`local = true`: plain IIS lines) or the Queue file
    /// (`local = false`: with parameters where the message has any).
    pub fn block(&self, local: bool) -> Vec<u8> {
        let mut s = String::with_capacity(64 + 48 * self.recipients.len());
        let mut params = String::new();
        if !local {
            if let Some(b) = self.body {
                params.push_str(match b {
                    Body::SevenBit => " BODY=7BIT",
                    Body::EightBitMime => " BODY=8BITMIME",
                    Body::BinaryMime => " BODY=BINARYMIME",
                });
            }
            if let Some(r) = self.ret {
                params.push_str(match r {
                    Ret::Full => " RET=FULL",
                    Ret::Hdrs => " RET=HDRS",
                });
            }
            if let Some(e) = &self.envid {
                params.push_str(" ENVID=");
                params.push_str(e);
            }
        }
        line(&mut s, "x-sender", &self.sender, &params);
        for r in self.recipients.iter().filter(|r| r.local == local) {
            params.clear();
            if !local {
                if let Some(n) = r.notify {
                    params.push_str(" NOTIFY=");
                    params.push_str(&n.as_param());
                }
                if let Some(o) = &r.orcpt {
                    params.push_str(" ORCPT=");
                    params.push_str(o);
                }
            }
            line(&mut s, "x-receiver", &r.address, &params);
        }
        s.into_bytes()
    }
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

impl Envelope {
    /// Reads the envelope block mailroot wrote at the top of a Queue or Drop file (see [`Envelope::block`]);
    /// returns it and the offset where the message starts. Recipients come back with `local = false`:
    /// routing decides again at delivery.
    pub fn parse_block(file: &[u8]) -> Result<(Envelope, usize), BlockError> {
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
            let (addr, params) = match value.strip_prefix('<') {
                Some(r) => {
                    let end = closing_bracket(r)
                        .ok_or_else(|| BlockError(format!("missing '>' in `{value}`")))?;
                    (&r[..end], r[end + 1..].trim())
                }
                None => (value, ""),
            };
            if is_sender {
                if sender_seen {
                    return Err(BlockError("two x-sender lines".into()));
                }
                sender_seen = true;
                env.sender = addr.to_string();
                for p in params.split(' ').filter(|p| !p.is_empty()) {
                    let (k, v) = p
                        .split_once('=')
                        .ok_or_else(|| BlockError(format!("bad parameter `{p}`")))?;
                    match k.to_ascii_uppercase().as_str() {
                        "BODY" => {
                            env.body = Some(match v.to_ascii_uppercase().as_str() {
                                "7BIT" => Body::SevenBit,
                                "8BITMIME" => Body::EightBitMime,
                                "BINARYMIME" => Body::BinaryMime,
                                _ => return Err(BlockError(format!("bad BODY `{v}`"))),
                            })
                        }
                        "RET" => {
                            env.ret = Some(match v.to_ascii_uppercase().as_str() {
                                "FULL" => Ret::Full,
                                "HDRS" => Ret::Hdrs,
                                _ => return Err(BlockError(format!("bad RET `{v}`"))),
                            })
                        }
                        "ENVID" => env.envid = Some(v.to_string()),
                        _ => return Err(BlockError(format!("unknown parameter `{k}`"))),
                    }
                }
            } else {
                if addr.is_empty() {
                    return Err(BlockError("empty x-receiver".into()));
                }
                let mut r = Recipient {
                    address: addr.to_string(),
                    local: false,
                    notify: None,
                    orcpt: None,
                };
                for p in params.split(' ').filter(|p| !p.is_empty()) {
                    let (k, v) = p
                        .split_once('=')
                        .ok_or_else(|| BlockError(format!("bad parameter `{p}`")))?;
                    match k.to_ascii_uppercase().as_str() {
                        "NOTIFY" => {
                            let mut n = 0;
                            for item in v.split(',') {
                                n |= match item.to_ascii_uppercase().as_str() {
                                    "NEVER" => Notify::NEVER,
                                    "SUCCESS" => Notify::SUCCESS,
                                    "FAILURE" => Notify::FAILURE,
                                    "DELAY" => Notify::DELAY,
                                    _ => return Err(BlockError(format!("bad NOTIFY `{v}`"))),
                                };
                            }
                            r.notify = Some(Notify(n));
                        }
                        "ORCPT" => r.orcpt = Some(v.to_string()),
                        _ => return Err(BlockError(format!("unknown parameter `{k}`"))),
                    }
                }
                env.recipients.push(r);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_read_back() {
        let e = Envelope {
            sender: "a@b.test".into(),
            body: Some(Body::EightBitMime),
            ret: Some(Ret::Hdrs),
            envid: Some("X1".into()),
            recipients: vec![
                Recipient {
                    address: "r@remote.test".into(),
                    local: false,
                    notify: Some(Notify(Notify::FAILURE | Notify::DELAY)),
                    orcpt: Some("rfc822;r@remote.test".into()),
                },
                Recipient {
                    address: "s@remote.test".into(),
                    local: false,
                    notify: None,
                    orcpt: None,
                },
            ],
        };
        let mut file = e.block(false);
        let n = file.len();
        file.extend_from_slice(b"Received: x\r\n\r\nbody\r\n");
        let (back, off) = Envelope::parse_block(&file).unwrap();
        assert_eq!(back, e);
        assert_eq!(off, n);
        let null = Envelope {
            recipients: vec![Recipient {
                address: "u@x.test".into(),
                local: false,
                notify: None,
                orcpt: None,
            }],
            ..Default::default()
        };
        let (back, _) = Envelope::parse_block(&null.block(false)).unwrap();
        assert_eq!(back.sender, "");
        assert!(Envelope::parse_block(b"Subject: x\r\n").is_err());
        assert!(Envelope::parse_block(b"x-sender: a@b\r\n\r\n").is_err());
        assert!(Envelope::parse_block(b"x-sender: <a@b> FOO=1\r\nx-receiver: c@d\r\n").is_err());
    }

    #[test]
    fn drop_and_queue_blocks() {
        let e = Envelope {
            sender: "a@b.test".into(),
            body: Some(Body::EightBitMime),
            ret: None,
            envid: Some("X1".into()),
            recipients: vec![
                Recipient {
                    address: "u@local.test".into(),
                    local: true,
                    notify: Some(Notify(Notify::NEVER)),
                    orcpt: None,
                },
                Recipient {
                    address: "r@remote.test".into(),
                    local: false,
                    notify: Some(Notify(Notify::FAILURE)),
                    orcpt: Some("rfc822;r@remote.test".into()),
                },
                Recipient {
                    address: "s@remote.test".into(),
                    local: false,
                    notify: None,
                    orcpt: None,
                },
            ],
        };
        assert_eq!(
            String::from_utf8(e.block(true)).unwrap(),
            "x-sender: a@b.test\r\nx-receiver: u@local.test\r\n"
        );
        assert_eq!(
            String::from_utf8(e.block(false)).unwrap(),
            "x-sender: <a@b.test> BODY=8BITMIME ENVID=X1\r\nx-receiver: <r@remote.test> NOTIFY=FAILURE ORCPT=rfc822;r@remote.test\r\nx-receiver: s@remote.test\r\n"
        );
        let null = Envelope {
            recipients: vec![Recipient {
                address: "u@local.test".into(),
                local: true,
                notify: None,
                orcpt: None,
            }],
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(null.block(true)).unwrap(),
            "x-sender: <>\r\nx-receiver: u@local.test\r\n"
        );
    }

    #[test]
    fn brackets_in_parameters_and_quoted_local_parts() {
        let e = Envelope {
            sender: "s@b.test".into(),
            envid: Some("x>y".into()),
            recipients: vec![Recipient {
                address: "\"a>b\"@b.test".into(),
                local: false,
                notify: None,
                orcpt: Some("rfc822;a>b".into()),
            }],
            ..Default::default()
        };
        let (back, _) = Envelope::parse_block(&e.block(false)).unwrap();
        assert_eq!(back, e);
    }
}
