//! Sender rewrite for a route (RewriteSender, RewriteFromHeader): Exchange Online refuses mail whose
//! sender is not the authenticated mailbox (`554 5.2.252 SendAsDenied`), so mail leaving that way
//! may carry the mailbox as its envelope sender, and in its From header, with `Reply-To:` the
//! original From so that replies still reach the writer. Only the copy on the wire changes: the
//! Queue file, the `.sta` and the W3C log keep the original sender.

/// The envelope sender toward the route: `rewrite` unless the sender is null (a report stays a
/// report: RFC 5321 §4.5.5).
pub fn envelope_sender(sender: &str, rewrite: Option<&str>) -> Option<String> {
    match rewrite {
        Some(r) if !sender.is_empty() => Some(r.to_string()),
        _ => None,
    }
}

/// One header field of the header section: where it starts and ends (past its line ending,
/// folded lines included) and where its name ends.
struct Field {
    start: usize,
    colon: usize,
    end: usize,
}

/// The header fields, up to the empty line that ends the header section.
fn fields(msg: &[u8]) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < msg.len() {
        let eol = memchr::memchr(b'\n', &msg[pos..]).map_or(msg.len(), |i| pos + i + 1);
        let line = &msg[pos..eol];
        let content = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if content.is_empty() {
            break;
        }
        if matches!(content[0], b' ' | b'\t') {
            // A folded line continues the field before it.
            if let Some(f) = out.last_mut() {
                f.end = eol;
            }
        } else if let Some(c) = memchr::memchr(b':', content) {
            out.push(Field {
                start: pos,
                colon: pos + c,
                end: eol,
            });
        } else {
            // Not a header line: the header section is over (the body started without a blank line).
            break;
        }
        pos = eol;
    }
    out
}

fn named(msg: &[u8], f: &Field, name: &str) -> bool {
    msg[f.start..f.colon]
        .trim_ascii()
        .eq_ignore_ascii_case(name.as_bytes())
}

/// The message with its first From header's address replaced by `sender` (the display name kept)
/// and, when it has no Reply-To, `Reply-To:` the original From value added after it. `None` when
/// the message has no From header (nothing to rewrite; it goes as it is).
pub fn from_header(msg: &[u8], sender: &str) -> Option<Vec<u8>> {
    let fields = fields(msg);
    let from = fields.iter().find(|f| named(msg, f, "From"))?;
    let has_reply_to = fields.iter().any(|f| named(msg, f, "Reply-To"));
    let value = &msg[from.colon + 1..from.end];
    let mut out = Vec::with_capacity(msg.len() + value.len() + sender.len() + 16);
    out.extend_from_slice(&msg[..from.colon + 1]);
    // `Name <address>`: the address inside the last angle brackets goes; a bare address (or one
    // with a comment) becomes `<sender>`.
    match value
        .iter()
        .rposition(|b| *b == b'<')
        .and_then(|lt| memchr::memchr(b'>', &value[lt..]).map(|gt| (lt, lt + gt)))
    {
        Some((lt, gt)) => {
            out.extend_from_slice(&value[..=lt]);
            out.extend_from_slice(sender.as_bytes());
            out.extend_from_slice(&value[gt..]);
        }
        None => {
            out.extend_from_slice(b" <");
            out.extend_from_slice(sender.as_bytes());
            out.extend_from_slice(b">");
            out.extend_from_slice(line_end(value));
        }
    }
    ensure_line_end(&mut out);
    if !has_reply_to {
        out.extend_from_slice(b"Reply-To:");
        out.extend_from_slice(value);
        ensure_line_end(&mut out);
    }
    out.extend_from_slice(&msg[from.end..]);
    Some(out)
}

/// The line ending at the end of `v` (CRLF, LF, or none).
fn line_end(v: &[u8]) -> &[u8] {
    if v.ends_with(b"\r\n") {
        b"\r\n"
    } else if v.ends_with(b"\n") {
        b"\n"
    } else {
        b""
    }
}

fn ensure_line_end(out: &mut Vec<u8>) {
    if !out.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(m: &str) -> String {
        String::from_utf8(from_header(m.as_bytes(), "relay@tenant.test").unwrap()).unwrap()
    }

    #[test]
    fn display_name_kept_and_reply_to_added_once() {
        assert_eq!(
            rw("Subject: hi\r\nFrom: \"App, Inc\" <app@local.test>\r\nTo: x@y\r\n\r\nbody\r\n"),
            "Subject: hi\r\nFrom: \"App, Inc\" <relay@tenant.test>\r\nReply-To: \"App, Inc\" <app@local.test>\r\nTo: x@y\r\n\r\nbody\r\n"
        );
        // A Reply-To already there stays the only one.
        assert_eq!(
            rw("From: <app@local.test>\r\nreply-to: boss@local.test\r\n\r\nb"),
            "From: <relay@tenant.test>\r\nreply-to: boss@local.test\r\n\r\nb"
        );
    }

    #[test]
    fn bare_and_folded_from() {
        assert_eq!(
            rw("From: app@local.test (The App)\r\n\r\nb"),
            "From: <relay@tenant.test>\r\nReply-To: app@local.test (The App)\r\n\r\nb"
        );
        assert_eq!(
            rw("From: =?utf-8?q?Caf=C3=A9?=\r\n <app@local.test>\r\nX: 1\r\n\r\nb"),
            "From: =?utf-8?q?Caf=C3=A9?=\r\n <relay@tenant.test>\r\nReply-To: =?utf-8?q?Caf=C3=A9?=\r\n <app@local.test>\r\nX: 1\r\n\r\nb"
        );
        // Only the header section is looked at: a From line in the body is body.
        assert!(from_header(b"Subject: x\r\n\r\nFrom: a@b\r\n", "r@t").is_none());
        // A last header without a line ending (no body).
        assert_eq!(
            rw("From: a@local.test"),
            "From: <relay@tenant.test>\r\nReply-To: a@local.test\r\n"
        );
    }

    #[test]
    fn null_sender_stays_null() {
        assert_eq!(envelope_sender("", Some("relay@t")), None);
        assert_eq!(
            envelope_sender("a@b", Some("relay@t")).as_deref(),
            Some("relay@t")
        );
        assert_eq!(envelope_sender("a@b", None), None);
    }
}
