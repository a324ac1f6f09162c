//! Badmail: where a message goes when it can be neither delivered nor returned (IIS: "sent to the
//! Badmail directory, since the message cannot be sent or returned"). For each message two files:
//! `<id>.bad`, the message with its envelope block, pickup-compatible (copy it into Pickup to send it
//! again), and `<id>.bdr`, a text that says why, who sent it and to whom.

use std::path::PathBuf;

use super::block;
use super::error::StoreError;
use super::store::Store;
use crate::smtp::envelope::Envelope;
use crate::time::Utc;

/// Writes the two files for `id`. `message` is the message without envelope block; `reason` one or
/// more lines of explanation.
pub fn write(
    store: &Store,
    id: &str,
    envelope: &Envelope,
    message: &[u8],
    reason: &str,
) -> Result<PathBuf, StoreError> {
    let mut bad = block::write(envelope, false);
    bad.extend_from_slice(message);
    let store_result = store.badmail(id, &bad, &report(envelope, reason));
    if let Ok(p) = &store_result {
        log::warn!(
            "message {id} moved to Badmail ({}): {}",
            p.display(),
            reason.lines().next().unwrap_or("")
        );
    }
    store_result
}

/// The `.bdr` text.
pub fn report(envelope: &Envelope, reason: &str) -> String {
    let sender = if envelope.sender.is_empty() {
        "<>"
    } else {
        &envelope.sender
    };
    let mut s = format!(
        "Unable to deliver this message because the following error was encountered:\r\n\r\n{}\r\n\r\nThe message sender was {}.\r\n\r\nThe message was intended for the following recipients.\r\n",
        reason.replace('\n', "\r\n").replace("\r\r\n", "\r\n"),
        sender
    );
    for r in &envelope.recipients {
        s.push_str("       ");
        s.push_str(&r.address);
        s.push_str("\r\n");
    }
    s.push_str(&format!(
        "\r\nWritten by mailroot at {}.\r\n",
        Utc::now().rfc5322()
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::envelope::Recipient;

    #[test]
    fn report_names_reason_sender_and_recipients() {
        let e = Envelope {
            recipients: vec![Recipient::new("a@x.test".into(), false)],
            ..Default::default()
        };
        let t = report(
            &e,
            "This message is a delivery status notification that cannot be delivered.",
        );
        assert!(t.starts_with("Unable to deliver this message because the following error was encountered:\r\n\r\nThis message is a delivery status notification"));
        assert!(t.contains("The message sender was <>.\r\n"));
        assert!(t.contains("recipients.\r\n       a@x.test\r\n"));
    }
}
