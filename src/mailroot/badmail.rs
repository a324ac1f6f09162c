//! Badmail: where a message goes when it can be neither delivered nor returned (IIS: "sent to the
//! Badmail directory, since the message cannot be sent or returned"). For each message two files:
//! `<id>.bad`, the message with its envelope block, pickup-compatible (copy it into Pickup to send it
//! again), and `<id>.bdr`, a text that says why, who sent it and to whom.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use super::block;
use super::error::{StoreError, err};
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

/// One message in Badmail.
#[derive(Debug, Clone)]
pub struct Bad {
    /// Its name without `.bad` (the queue identifier it had).
    pub id: String,
    /// Size of the `.bad` file in bytes.
    pub size: u64,
    /// When it was written to Badmail.
    pub written: Option<SystemTime>,
    /// Its envelope, or why the block does not read.
    pub envelope: Result<Envelope, String>,
    /// The first line of the reason after its heading (from the `.bdr` file), if there is one.
    pub reason: String,
}

/// The messages in Badmail, oldest first.
pub fn list(store: &Store) -> Result<Vec<Bad>, StoreError> {
    let dir = store.badmail_dir();
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(err("list", dir))? {
        let entry = entry.map_err(err("list", dir))?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".bad")) else {
            continue;
        };
        let path = entry.path();
        let Ok(bytes) = fs::read(&path) else {
            continue;
        };
        let meta = entry.metadata().ok();
        out.push(Bad {
            id: id.to_string(),
            size: bytes.len() as u64,
            written: meta.and_then(|m| m.modified().ok()),
            envelope: block::read(&bytes)
                .map(|(e, _)| e)
                .map_err(|e| e.to_string()),
            reason: fs::read_to_string(dir.join(format!("{id}.bdr")))
                .map(|t| reason_line(&t))
                .unwrap_or_default(),
        });
    }
    out.sort_by(|a, b| a.written.cmp(&b.written).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// The reason's first line in a `.bdr` text.
fn reason_line(bdr: &str) -> String {
    bdr.lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty() || l.starts_with("Unable to deliver this message"))
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

/// Why a Badmail message cannot be sent again.
#[derive(Debug)]
pub enum ResendError {
    /// No `<id>.bad` in Badmail.
    Missing(String),
    /// Its envelope block does not read (copy it into Pickup with X-Sender/X-Receiver lines).
    Unreadable(String, String),
    /// Its envelope has no recipient.
    NoRecipient(String),
    /// The disk said no.
    Store(StoreError),
}

impl std::fmt::Display for ResendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResendError::Missing(id) => write!(f, "no message {id} in Badmail"),
            ResendError::Unreadable(id, e) => write!(
                f,
                "{id}.bad has no readable envelope ({e}): add X-Sender and X-Receiver lines and copy it into Pickup"
            ),
            ResendError::NoRecipient(id) => write!(f, "{id}.bad names no recipient"),
            ResendError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ResendError {}

/// Puts Badmail's `<id>` back into Queue with its original envelope, as a new message (a new
/// identifier, so its expiry starts again), then removes it from Badmail. Returns the new
/// identifier. The new message is durable (and handed to delivery, when the store has a
/// hand-over) before the Badmail files go: a crash in between leaves it in both places, never in
/// neither.
pub fn resend(store: &Store, id: &str) -> Result<String, ResendError> {
    if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
        return Err(ResendError::Missing(id.to_string()));
    }
    let dir = store.badmail_dir();
    let bad = dir.join(format!("{id}.bad"));
    let bytes = match fs::read(&bad) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ResendError::Missing(id.to_string()));
        }
        Err(e) => return Err(ResendError::Store(StoreError::new("read", &bad, e))),
    };
    let (mut env, offset) =
        block::read(&bytes).map_err(|e| ResendError::Unreadable(id.to_string(), e.to_string()))?;
    if env.recipients.is_empty() {
        return Err(ResendError::NoRecipient(id.to_string()));
    }
    // Into Queue: delivery routes each recipient again (a local one goes to Drop from there).
    for r in &mut env.recipients {
        r.local = false;
    }
    let new_id = crate::id::next();
    store
        .commit_message(&new_id, env, b"", &bytes[offset..])
        .map_err(ResendError::Store)?;
    for ext in ["bdr", "bad"] {
        let p = dir.join(format!("{id}.{ext}"));
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ResendError::Store(StoreError::new("remove", &p, e))),
        }
    }
    crate::os::sync_dir(dir)
        .map_err(|e| ResendError::Store(StoreError::new("fsync folder", dir, e)))?;
    log::info!("Badmail {id} resent as {new_id}");
    Ok(new_id)
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
        assert_eq!(
            reason_line(&t),
            "This message is a delivery status notification that cannot be delivered."
        );
    }
}
