//! The SMTP protocol, without I/O: command framing and parsing, addresses, ESMTP parameters, the typed
//! envelope, replies, the DATA terminator scanner, the header inspector, the trace header, SASL
//! decoding, and (a room above `config` and `policy`, see docs/architecture.md) the session state
//! machine.

pub mod address;
pub mod command;
pub mod data;
pub mod envelope;
pub mod headers;
pub mod params;
pub mod received;
pub mod reply;
pub mod sasl;
pub mod session;

/// `s` as text, without checking again: every caller has checked that it is printable ASCII (debug
/// builds check once more). Validating UTF-8 a second time cost a tenth of a MAIL command's parse.
#[inline]
pub(crate) fn ascii(s: &[u8]) -> &str {
    debug_assert!(s.is_ascii());
    // SAFETY: ASCII is valid UTF-8.
    unsafe { std::str::from_utf8_unchecked(s) }
}
