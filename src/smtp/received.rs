//! The trace header mailroot puts on top of every accepted message (RFC 5321 §4.4), shaped like IIS's:
//! `Received: from <helo> ([<ip>]) by <fqdn> with ESMTP id <queue id>;` and the date on a folded line.

use std::net::IpAddr;

use crate::time::Utc;

/// What the Received header says about the hop.
#[derive(Debug, Clone, Copy)]
pub struct Trace<'a> {
    /// The HELO/EHLO argument.
    pub helo: &'a str,
    /// The client's address.
    pub ip: IpAddr,
    /// Our FullyQualifiedDomainName.
    pub by: &'a str,
    /// `SMTP` after HELO, `ESMTP` after EHLO (RFC 3848).
    pub protocol: &'a str,
    /// The queue identifier.
    pub id: &'a str,
    /// When the message arrived.
    pub at: Utc,
}

impl Trace<'_> {
    /// The complete header, ending in CRLF.
    pub fn header(&self) -> Vec<u8> {
        format!(
            "Received: from {} ([{}]) by {} with {} id {};\r\n\t {}\r\n",
            self.helo,
            self.ip,
            self.by,
            self.protocol,
            self.id,
            self.at.rfc5322()
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let t = Trace {
            helo: "client.test",
            ip: "127.0.0.1".parse().unwrap(),
            by: "mx.local.test",
            protocol: "ESMTP",
            id: "ABC",
            at: Utc::from_unix(1_259_790_961, 0),
        };
        assert_eq!(
            String::from_utf8(t.header()).unwrap(),
            "Received: from client.test ([127.0.0.1]) by mx.local.test with ESMTP id ABC;\r\n\t Wed, 2 Dec 2009 21:56:01 +0000\r\n"
        );
    }
}
