//! The typed envelope of one message: the sender with its transaction parameters and each recipient
//! with its own and the route decision made for it at RCPT (a local domain goes to Drop, every other
//! to Queue). The session builds it, the store writes it (as the envelope block, see
//! `mailroot::block`) and hands the same value to delivery; Pickup files and Queue files read back
//! into it.

use super::params::{Body, Notify, Ret};

/// One accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// `local@domain`.
    pub address: String,
    /// The route decision: a local domain (the Drop folder) rather than a remote one (Queue).
    pub local: bool,
    /// NOTIFY=
    pub notify: Option<Notify>,
    /// ORCPT= as received (xtext).
    pub orcpt: Option<String>,
}

impl Recipient {
    /// A recipient without parameters.
    pub fn new(address: String, local: bool) -> Recipient {
        Recipient {
            address,
            local,
            notify: None,
            orcpt: None,
        }
    }
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
    /// Whether any recipient is local (`true`) / remote (`false`).
    pub fn has(&self, local: bool) -> bool {
        self.recipients.iter().any(|r| r.local == local)
    }

    /// The same envelope with only the recipients for which `keep` holds.
    pub fn with_recipients(&self, keep: impl Fn(&Recipient) -> bool) -> Envelope {
        Envelope {
            sender: self.sender.clone(),
            body: self.body,
            ret: self.ret,
            envid: self.envid.clone(),
            recipients: self
                .recipients
                .iter()
                .filter(|r| keep(r))
                .cloned()
                .collect(),
        }
    }

    /// A report's envelope: the null sender (RFC 3461 §6: a report is never reported on) and `to`.
    pub fn report(to: Vec<Recipient>) -> Envelope {
        Envelope {
            recipients: to,
            ..Envelope::default()
        }
    }
}
