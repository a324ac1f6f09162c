//! Reply codes, enhanced status codes (RFC 3463) and the texts IIS uses, written straight into the
//! connection's output buffer. Texts are IIS's where its wording is known (README.md, "A
//! session, as in the IIS docs"); the rest follow Postfix's plain style.

use std::io::Write;

/// Appends one single-line reply `code status text\r\n`.
pub fn push(out: &mut Vec<u8>, code: u16, status: &str, text: std::fmt::Arguments<'_>) {
    // Writing to a Vec cannot fail.
    let _ = if status.is_empty() {
        write!(out, "{code} {text}\r\n")
    } else {
        write!(out, "{code} {status} {text}\r\n")
    };
}

/// The code of the last reply in `out[from..]` (for the protocol log), 0 if none.
pub fn last_code(out: &[u8], from: usize) -> u16 {
    let tail = &out[from.min(out.len())..];
    // The last line starts after the second-to-last "\r\n".
    let body = tail.strip_suffix(b"\r\n").unwrap_or(tail);
    let start = memchr::memrchr(b'\n', body).map(|i| i + 1).unwrap_or(0);
    let d = &body[start..];
    if d.len() >= 3 && d[..3].iter().all(u8::is_ascii_digit) {
        d[..3]
            .iter()
            .fold(0u16, |n, c| n * 10 + u16::from(c - b'0'))
    } else {
        0
    }
}

/// `250 2.0.0 OK` for NOOP.
pub const NOOP: &[u8] = b"250 2.0.0 OK\r\n";
/// RSET.
pub const RSET: &[u8] = b"250 2.0.0 Resetting\r\n";
/// DATA accepted.
pub const START_DATA: &[u8] = b"354 Start mail input; end with <CRLF>.<CRLF>\r\n";
/// A command line ending with a bare LF (RFC 5321 §2.3.8).
pub const BARE_LF_COMMAND: &[u8] =
    b"500 5.5.2 Syntax error: bare LF in a command line (lines end with CRLF)\r\n";
/// A command line holding a bare CR.
pub const BARE_CR_COMMAND: &[u8] =
    b"500 5.5.2 Syntax error: bare CR in a command line (lines end with CRLF)\r\n";
/// The rest of a line that began with a bare LF, up to its CRLF.
pub const BARE_LF_TAIL: &[u8] =
    b"500 5.5.2 Syntax error: the rest of a command line with a bare LF (lines end with CRLF)\r\n";
/// Command line over 512 octets.
pub const LINE_TOO_LONG: &[u8] = b"500 5.5.2 Line too long\r\n";
/// Unknown verb.
pub const UNRECOGNIZED: &[u8] = b"500 5.5.1 Unrecognized command\r\n";
/// MAIL before HELO/EHLO.
pub const SEND_HELLO_FIRST: &[u8] = b"503 5.5.1 Send hello first\r\n";
/// MAIL inside a transaction.
pub const SENDER_ALREADY: &[u8] = b"503 5.5.1 Sender already specified\r\n";
/// RCPT before MAIL.
pub const NEED_MAIL: &[u8] = b"503 5.5.1 Need mail command\r\n";
/// DATA before RCPT.
pub const NEED_RCPT: &[u8] = b"503 5.5.1 Need rcpt command\r\n";
/// DATA after every RCPT failed (RFC 2920 §3.1).
pub const NO_VALID_RCPTS: &[u8] = b"554 5.5.1 No valid recipients\r\n";
/// DATA in a BINARYMIME transaction (RFC 3030 §3).
pub const DATA_WITH_BINARYMIME: &[u8] = b"503 5.5.1 BODY=BINARYMIME requires BDAT, not DATA\r\n";
/// DATA while BDAT chunks are open.
pub const DATA_AFTER_BDAT: &[u8] = b"503 5.5.1 DATA is not allowed after BDAT\r\n";
/// Too many recipients in one message.
pub const TOO_MANY_RCPTS: &[u8] = b"452 4.5.3 Too many recipients\r\n";
/// Message over MaxMessageSize (or SIZE= over it).
pub const TOO_BIG: &[u8] = b"552 5.3.4 Message size exceeds fixed maximum message size\r\n";
/// Session over MaxSessionSize.
pub const SESSION_TOO_BIG: &[u8] = b"552 5.3.4 Session size exceeds fixed maximum session size\r\n";
/// More Received headers than HopCount.
pub const LOOP: &[u8] = b"554 5.4.6 Routing loop detected\r\n";
/// The disk refused the message.
pub const STORAGE: &[u8] = b"452 4.3.1 Insufficient system storage\r\n";
/// BINARYMIME content given to `sendmail -bs`, whose Pickup folder holds text only.
pub const BINARY_NOT_TEXT: &[u8] = b"554 5.6.1 Binary content (bare CR or LF, NUL) cannot go through the Pickup folder: send it by SMTP to the server\r\n";
/// Bare LF in DATA.
pub const BARE_LF: &[u8] =
    b"550 5.6.0 Message refused: bare LF in data; lines must end with CRLF\r\n";
/// Bare CR in DATA.
pub const BARE_CR: &[u8] =
    b"550 5.6.0 Message refused: bare CR in data; lines must end with CRLF\r\n";
/// NUL in DATA.
pub const NUL: &[u8] = b"550 5.6.0 Message refused: NUL character in data\r\n";
/// Connection beyond MaxConnections.
pub const TOO_MANY_CONNECTIONS: &[u8] = b"421 4.3.2 Too many connections, try again later\r\n";
/// MaxConnectionsPerIp reached.
pub const TOO_MANY_FROM_IP: &[u8] =
    b"421 4.7.0 Too many connections from your address, try again later\r\n";
/// Connection control denied the client.
pub const ACCESS_DENIED: &[u8] = b"554 5.7.1 Access denied\r\n";
/// A peer not in ProxyProtocolFrom began with a PROXY protocol header (then the connection closes).
pub const PROXY_NOT_ALLOWED: &[u8] =
    b"554 5.7.0 PROXY protocol header not accepted from this address\r\n";

/// STARTTLS accepted.
pub const START_TLS: &[u8] = b"220 2.0.0 Ready to start TLS\r\n";
/// STARTTLS inside TLS.
pub const TLS_ACTIVE: &[u8] = b"503 5.5.1 TLS already active\r\n";
/// STARTTLS without a certificate.
pub const TLS_UNAVAILABLE: &[u8] = b"454 4.7.0 TLS not available due to temporary reason\r\n";
/// RequireTls before STARTTLS.
pub const MUST_STARTTLS: &[u8] = b"530 5.7.0 Must issue a STARTTLS command first\r\n";
/// AuthFlags without anonymous, MAIL before AUTH.
pub const AUTH_REQUIRED: &[u8] = b"530 5.7.0 Authentication required\r\n";
/// AUTH succeeded.
pub const AUTH_OK: &[u8] = b"235 2.7.0 Authentication successful\r\n";
/// AUTH failed (whatever was wrong: the user or the password).
pub const AUTH_FAILED: &[u8] = b"535 5.7.8 Authentication credentials invalid\r\n";
/// Bad base64 or overlong AUTH input.
pub const AUTH_BAD_INPUT: &[u8] = b"501 5.5.2 Cannot decode the AUTH response\r\n";
/// `*` from the client.
pub const AUTH_CANCELLED: &[u8] = b"501 5.7.0 Authentication cancelled\r\n";
/// A second AUTH.
pub const AUTH_ALREADY: &[u8] = b"503 5.5.1 Already authenticated\r\n";
/// AUTH inside a transaction.
pub const AUTH_IN_TRANSACTION: &[u8] =
    b"503 5.5.1 AUTH is not allowed during a mail transaction\r\n";
/// AUTH not enabled.
pub const AUTH_NOT_AVAILABLE: &[u8] = b"503 5.5.1 AUTH is not available\r\n";
/// AUTH without TLS when AllowPlaintextAuth is off.
pub const AUTH_NEEDS_TLS: &[u8] =
    b"538 5.7.11 Encryption required for requested authentication mechanism\r\n";
/// Too many failures from this address.
pub const AUTH_LOCKED: &[u8] = b"454 4.7.0 Temporary authentication failure, try again later\r\n";
/// A mechanism other than LOGIN and PLAIN.
pub const AUTH_UNKNOWN_MECHANISM: &[u8] = b"504 5.5.4 Unrecognized authentication type\r\n";

/// `250 2.1.0 addr....Sender OK`
pub fn sender_ok(out: &mut Vec<u8>, addr: &str) {
    let shown = if addr.is_empty() { "<>" } else { addr };
    push(out, 250, "2.1.0", format_args!("{shown}....Sender OK"));
}

/// `250 2.1.5 addr`
pub fn recipient_ok(out: &mut Vec<u8>, addr: &str) {
    push(out, 250, "2.1.5", format_args!("{addr}"));
}

/// `550 5.7.1 Unable to relay for addr`
pub fn unable_to_relay(out: &mut Vec<u8>, addr: &str) {
    push(
        out,
        550,
        "5.7.1",
        format_args!("Unable to relay for {addr}"),
    );
}

/// `250 2.6.0 <id> Queued mail for delivery`
pub fn queued(out: &mut Vec<u8>, message_id: &str) {
    push(
        out,
        250,
        "2.6.0",
        format_args!("{message_id} Queued mail for delivery"),
    );
}

/// `250 2.0.0 n octets received` after a BDAT chunk that is not the last.
pub fn chunk_ok(out: &mut Vec<u8>, n: u64) {
    push(out, 250, "2.0.0", format_args!("{n} octets received"));
}

/// `221 2.0.0 fqdn Service closing transmission channel`
pub fn closing(out: &mut Vec<u8>, fqdn: &str) {
    push(
        out,
        221,
        "2.0.0",
        format_args!("{fqdn} Service closing transmission channel"),
    );
}

/// `252 2.1.5 Cannot VRFY user, but will take message for <user@domain>`
pub fn vrfy(out: &mut Vec<u8>, who: &str) {
    push(
        out,
        252,
        "2.1.5",
        format_args!("Cannot VRFY user, but will take message for <{who}>"),
    );
}

/// `501 5.5.2 text` for malformed arguments.
pub fn syntax(out: &mut Vec<u8>, text: &str) {
    push(out, 501, "5.5.2", format_args!("Syntax error: {text}"));
}

/// `421 4.7.0 fqdn Too many errors, closing connection`
pub fn too_many_errors(out: &mut Vec<u8>, fqdn: &str) {
    push(
        out,
        421,
        "4.7.0",
        format_args!("{fqdn} Too many errors, closing transmission channel"),
    );
}

/// `421 4.4.2 fqdn Timeout, closing connection`
pub fn timeout(out: &mut Vec<u8>, fqdn: &str) {
    push(
        out,
        421,
        "4.4.2",
        format_args!("{fqdn} Timeout waiting for client input, closing transmission channel"),
    );
}

/// `421 4.3.2 fqdn Service shutting down`
pub fn shutting_down(out: &mut Vec<u8>, fqdn: &str) {
    push(
        out,
        421,
        "4.3.2",
        format_args!("{fqdn} Service shutting down, closing transmission channel"),
    );
}

/// `421 4.3.2 fqdn Session size limit reached` after SESSION_TOO_BIG.
pub fn session_closed(out: &mut Vec<u8>, fqdn: &str) {
    push(
        out,
        421,
        "4.3.2",
        format_args!("{fqdn} Session size limit reached, closing transmission channel"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        let mut o = Vec::new();
        sender_ok(&mut o, "a@b.test");
        sender_ok(&mut o, "");
        unable_to_relay(&mut o, "x@y.test");
        assert_eq!(o, b"250 2.1.0 a@b.test....Sender OK\r\n250 2.1.0 <>....Sender OK\r\n550 5.7.1 Unable to relay for x@y.test\r\n");
        assert_eq!(last_code(&o, 0), 550);
        assert_eq!(last_code(b"214-a\r\n214 b\r\n", 0), 214);
        assert_eq!(last_code(b"", 0), 0);
    }
}
