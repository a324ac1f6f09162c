//! Planning a message when DATA or the first BDAT is accepted: its queue identifier and Message-ID,
//! the Received header, the size limit left, and the typed envelope with each recipient's route
//! decision, which the store turns into the Queue and Drop parts.

use super::Session;
use crate::id;
use crate::smtp::envelope::Envelope;
use crate::smtp::params::Body;
use crate::smtp::received::Trace;
use crate::time::Utc;

/// Everything the connection needs to open a message file.
#[derive(Debug, Clone)]
pub struct MessagePlan {
    /// Queue identifier (file stem).
    pub id: String,
    /// The Message-ID mailroot gives the message (`<…>`), used when the client sent none.
    pub message_id: String,
    /// The `Message-ID:` header line to insert where the message has none.
    pub message_id_line: Vec<u8>,
    /// The envelope, each recipient with its route decision (Queue or Drop).
    pub envelope: Envelope,
    /// The Received header.
    pub trace: Vec<u8>,
    /// Bytes after which the message is over a size limit (store nothing more, keep reading).
    pub limit: u64,
    /// Whether bare CR/LF/NUL are allowed (BODY=BINARYMIME over BDAT).
    pub binary: bool,
}

impl Session {
    /// Makes the plan for the message of the current transaction and remembers its identifier.
    pub(super) fn plan(&mut self) -> MessagePlan {
        let qid = id::next();
        let message_id = format!("<{}@{}>", qid, self.vs.fqdn);
        let max = self.vs.max_message_size;
        let limit = if max > 0 {
            max.min(self.session_left())
        } else {
            self.session_left()
        };
        let helo = self.helo.as_deref().unwrap_or_default();
        // RFC 3848: ESMTP, ESMTPS (TLS), ESMTPA (AUTH), ESMTPSA (both).
        let protocol = match (self.esmtp, self.tls.is_some(), self.auth_user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let trace = Trace {
            helo,
            ip: self.peer,
            by: &self.vs.fqdn,
            protocol,
            id: &qid,
            tls: self.tls.as_deref(),
            auth: self.auth_user.as_deref(),
            rdns: self.client_name.as_ref().map(|n| n.as_deref()),
            at: Utc::now(),
        }
        .header();
        let mut envelope = Envelope::default();
        let mut binary = false;
        if let Some(tx) = self.tx.as_mut() {
            envelope = tx.envelope.clone();
            tx.message_id = Some(message_id.clone());
            binary = tx.envelope.body == Some(Body::BinaryMime);
        }
        MessagePlan {
            message_id_line: format!("Message-ID: {message_id}\r\n").into_bytes(),
            id: qid,
            message_id,
            envelope,
            trace,
            limit,
            binary,
        }
    }
}
