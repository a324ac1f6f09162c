//! The trace header mailroot puts on top of every accepted message (RFC 5321 §4.4), shaped like IIS's:
//! `Received: from <helo> ([<ip>]) by <fqdn> with ESMTP id <queue id>;` and the date on a folded line.
//! A message taken from Pickup gets IIS's `from mail pickup service` form of the same line.

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
    /// TLS version and cipher, when the message came over TLS (RFC 8314 §4.3).
    pub tls: Option<&'a str>,
    /// The authenticated user, when the client logged in.
    pub auth: Option<&'a str>,
    /// EnableReverseDnsLookup: `Some(Some(name))` confirmed, `Some(None)` failed, `None` not asked.
    pub rdns: Option<Option<&'a str>>,
    /// When the message arrived.
    pub at: Utc,
}

impl Trace<'_> {
    /// The complete header, ending in CRLF.
    pub fn header(&self) -> Vec<u8> {
        let mut notes = Vec::new();
        if let Some(t) = self.tls {
            notes.push(format!("using {t}"));
        }
        if let Some(u) = self.auth {
            // The name is the client's input: keep it to printable characters without parentheses.
            let clean: String = u
                .chars()
                .filter(|c| c.is_ascii_graphic() && !matches!(c, '(' | ')' | '\\'))
                .take(64)
                .collect();
            notes.push(format!("authenticated user {clean}"));
        }
        let comment = if notes.is_empty() {
            String::new()
        } else {
            format!("\r\n\t({})", notes.join("; "))
        };
        // IIS's forms: `(name [ip])`, `([ip] RDNS failed)`, or `([ip])` without the lookup.
        let client = match self.rdns {
            Some(Some(n)) => format!("{n} [{}]", self.ip),
            Some(None) => format!("[{}] RDNS failed", self.ip),
            None => format!("[{}]", self.ip),
        };
        line(
            &format!("{} ({client})", self.helo),
            self.by,
            self.protocol,
            self.id,
            &comment,
            self.at,
        )
    }
}

/// The Received header of a message taken from the Pickup folder, by `by` with queue id `id`.
pub fn pickup(by: &str, id: &str, at: Utc) -> Vec<u8> {
    line("mail pickup service", by, "mailroot", id, "", at)
}

fn line(from: &str, by: &str, with: &str, id: &str, comment: &str, at: Utc) -> Vec<u8> {
    format!(
        "Received: from {from} by {by} with {with} id {id}{comment};\r\n\t {}\r\n",
        at.rfc5322()
    )
    .into_bytes()
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
            tls: None,
            auth: None,
            rdns: None,
            at: Utc::from_unix(1_259_790_961, 0),
        };
        assert_eq!(
            String::from_utf8(t.header()).unwrap(),
            "Received: from client.test ([127.0.0.1]) by mx.local.test with ESMTP id ABC;\r\n\t Wed, 2 Dec 2009 21:56:01 +0000\r\n"
        );
        let t = Trace {
            protocol: "ESMTPSA",
            tls: Some("TLSv1_3 TLS13_AES_256_GCM_SHA384"),
            auth: Some("scan(ner)"),
            ..t
        };
        assert_eq!(
            String::from_utf8(t.header()).unwrap(),
            "Received: from client.test ([127.0.0.1]) by mx.local.test with ESMTPSA id ABC\r\n\t(using TLSv1_3 TLS13_AES_256_GCM_SHA384; authenticated user scanner);\r\n\t Wed, 2 Dec 2009 21:56:01 +0000\r\n"
        );
    }

    #[test]
    fn pickup_form() {
        assert_eq!(
            String::from_utf8(pickup(
                "mx.local.test",
                "ABC",
                Utc::from_unix(1_259_790_961, 0)
            ))
            .unwrap(),
            "Received: from mail pickup service by mx.local.test with mailroot id ABC;\r\n\t Wed, 2 Dec 2009 21:56:01 +0000\r\n"
        );
    }

    #[test]
    fn reverse_dns_forms() {
        let base = Trace {
            helo: "HC-VM-PC",
            ip: "127.0.0.2".parse().unwrap(),
            by: "mx.local.test",
            protocol: "ESMTP",
            id: "ABC",
            tls: None,
            auth: None,
            rdns: Some(None),
            at: Utc::from_unix(1_259_790_961, 0),
        };
        assert!(
            String::from_utf8(base.header())
                .unwrap()
                .starts_with("Received: from HC-VM-PC ([127.0.0.2] RDNS failed) by ")
        );
        let named = Trace {
            rdns: Some(Some("pc.example.test")),
            ..base
        };
        assert!(
            String::from_utf8(named.header())
                .unwrap()
                .starts_with("Received: from HC-VM-PC (pc.example.test [127.0.0.2]) by ")
        );
    }
}
