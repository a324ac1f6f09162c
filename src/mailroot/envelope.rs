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
}
