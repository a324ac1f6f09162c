//! Pickup files: the RFC 822 files that applications (System.Net.Mail, CDOSYS, scripts) drop into the
//! Pickup folder, and the Queue and Badmail files that admins copy there to send again. [`parse`] is
//! pure: it turns the file's bytes into the [`Envelope`] and the message to relay, or says why the
//! file must go to Badmail.
//!
//! The file is read as IIS reads it (docs/mailroot.md, "Pickup"):
//!
//! - Every line ending (CRLF, bare LF, bare CR) becomes CRLF, and the last line gets one if it has
//!   none. With `unstuff_dots` (IIS behaviour: .NET Framework writes pickup files dot-stuffed) a line
//!   that starts with "." loses that dot.
//! - The header section runs from the first line to the first empty line. It must start with a
//!   header field. A later line that is neither a field nor a continuation ends it, and an empty line
//!   is put before that line in the relayed message, so that every reader downstream sees the same
//!   header section as we do.
//! - The envelope comes from `X-Sender` (one) and `X-Receiver` (any number) fields, found anywhere in
//!   the header section, in any case. Their values may be a bare address, `"Name" <addr>` (RFC 2047,
//!   folded), `<>` for the null sender, or mailroot's own Queue form `<addr> PARAM=…`. Without
//!   X-Receiver, the recipients are those of To, Cc and Bcc; without X-Sender, the sender is the first
//!   address of Sender, else of From.
//! - X-Sender, X-Receiver and Bcc fields are cut out of the relayed message; every other byte stays.
//!
//! mail-parser parses the values of address fields (display names, RFC 2047, groups, comments); the
//! header section is split here, because mail-parser is lenient about its structure (it skips lines
//! that are not fields), and because what we remove must be exactly what we read the envelope from.

use std::collections::HashSet;
use std::fmt;

use mail_parser::{HeaderValue, MessageParser};

use crate::smtp::address::{self, Path};
use crate::smtp::envelope::{Envelope, Recipient};
use crate::smtp::params::{self, MailParams, ParamError, RcptParams};

/// The largest header section accepted, in bytes after line-ending normalisation. It keeps the work
/// bounded; at about 40 bytes per `X-Receiver` line it still allows some 25,000 recipients.
pub const MAX_HEADER_SECTION: usize = 1 << 20;

/// How much of an offending value an error message quotes, in characters.
const MAX_EXCERPT: usize = 200;

/// A pickup file, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickupMessage {
    /// The sender and recipients. Every recipient has `local = false` (routing decides later) and
    /// appears once (addresses compared without regard to ASCII case; the first one is kept).
    pub envelope: Envelope,
    /// The message to relay: CRLF line endings throughout (ending with CRLF, unless the file held
    /// nothing but X-Sender, X-Receiver and Bcc fields, when it is empty), without the X-Sender,
    /// X-Receiver and Bcc header fields.
    pub message: Vec<u8>,
    /// The number of Received header fields in `message`.
    pub hops: u32,
    /// Whether `message` has a Message-ID header field (whatever its value), so that the caller knows
    /// not to add a second one.
    pub has_message_id: bool,
}

/// Why a pickup file cannot be sent. [`Display`](fmt::Display) gives the reason for the Badmail
/// `.bdr` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickupError {
    /// The file has no bytes.
    Empty,
    /// The file does not start with a header field.
    NoHeaderSection,
    /// The header section is larger than [`MAX_HEADER_SECTION`].
    HeaderTooLarge,
    /// More than one X-Sender field.
    MultipleSenders,
    /// No X-Sender field, and no address in Sender or From.
    NoSender,
    /// No X-Receiver, To, Cc or Bcc field.
    NoRecipients,
    /// No X-Receiver field, and To, Cc and Bcc hold no address (e.g. only an empty group).
    NoRecipientAddresses,
    /// A sender address that does not parse or is not a valid mailbox (or `<>` outside X-Sender).
    InvalidSender {
        /// The header field it came from, e.g. `X-Sender`.
        header: &'static str,
        /// The offending text (the address, or the whole value when no address could be found),
        /// unfolded, with control characters escaped and cut at 200 characters.
        value: String,
    },
    /// A recipient address that does not parse or is not a valid mailbox (or `<>`).
    InvalidRecipient {
        /// The header field it came from, e.g. `To`.
        header: &'static str,
        /// The offending text, as in [`PickupError::InvalidSender`].
        value: String,
    },
    /// A parameter after the address that is not allowed there (X-Sender: BODY, RET, ENVID;
    /// X-Receiver: NOTIFY, ORCPT).
    UnknownParameter {
        /// `X-Sender` or `X-Receiver`.
        header: &'static str,
        /// The parameter as written (escaped and cut as above).
        name: String,
    },
    /// A known parameter with a bad value, or one given twice.
    InvalidParameter {
        /// `X-Sender` or `X-Receiver`.
        header: &'static str,
        /// All the parameters of the field as written (escaped and cut as above).
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl fmt::Display for PickupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PickupError::Empty => f.write_str("not a message: the file is empty"),
            PickupError::NoHeaderSection => f.write_str("not a message: no header section"),
            PickupError::HeaderTooLarge => write!(
                f,
                "the header section is larger than {MAX_HEADER_SECTION} bytes"
            ),
            PickupError::MultipleSenders => f.write_str("more than one X-Sender header"),
            PickupError::NoSender => f.write_str("no sender: no X-Sender, Sender or From header"),
            PickupError::NoRecipients => {
                f.write_str("no recipients: no X-Receiver, To, Cc or Bcc header")
            }
            PickupError::NoRecipientAddresses => {
                f.write_str("no recipients: no X-Receiver header, and no address in To, Cc or Bcc")
            }
            PickupError::InvalidSender { header, value } => {
                write!(f, "invalid sender address \"{value}\" in {header}")
            }
            PickupError::InvalidRecipient { header, value } => {
                write!(f, "invalid recipient address \"{value}\" in {header}")
            }
            PickupError::UnknownParameter { header, name } => {
                let allowed = if *header == Field::XSender.name() {
                    "BODY, RET and ENVID"
                } else {
                    "NOTIFY and ORCPT"
                };
                write!(
                    f,
                    "unknown parameter \"{name}\" in {header} (only {allowed} are allowed)"
                )
            }
            PickupError::InvalidParameter {
                header,
                value,
                reason,
            } => write!(f, "invalid parameters \"{value}\" in {header}: {reason}"),
        }
    }
}

impl std::error::Error for PickupError {}

/// Parses a pickup file. `unstuff_dots` removes one leading dot from every line that has one, as
/// IIS does (the config setting PickupUnstuffDots, on by default); see the module documentation for
/// the rest.
pub fn parse(raw: &[u8], unstuff_dots: bool) -> Result<PickupMessage, PickupError> {
    if raw.is_empty() {
        return Err(PickupError::Empty);
    }
    let text = normalise(raw, unstuff_dots);
    let head = split_header(&text)?;

    let mut envelope = envelope_sender(&text, &head.fields)?;
    envelope.recipients = recipients(&text, &head.fields)?;

    let mut message = Vec::with_capacity(text.len() + 2);
    let mut pos = 0;
    for f in head.fields.iter().filter(|f| f.kind.is_removed()) {
        message.extend_from_slice(&text[pos..f.start]);
        pos = f.end;
    }
    message.extend_from_slice(&text[pos..head.body]);
    if head.insert_blank_line {
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(&text[head.body..]);

    let count = |kind| head.fields.iter().filter(|f| f.kind == kind).count();
    Ok(PickupMessage {
        envelope,
        message,
        hops: u32::try_from(count(Field::Received)).unwrap_or(u32::MAX),
        has_message_id: count(Field::MessageId) > 0,
    })
}

/// A message handed to `sendmail` on standard input, read as Pickup will read it (see
/// [`submission`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The message with CRLF line endings throughout (ending with CRLF unless empty), without its
    /// X-Sender and X-Receiver fields: the envelope is the caller's, written above the message.
    pub message: Vec<u8>,
    /// The addresses of To, Cc and Bcc, qualified, without duplicates (only when asked for).
    pub recipients: Vec<String>,
    /// Whether the header section has a From field.
    pub has_from: bool,
    /// Whether the header section has a Date field.
    pub has_date: bool,
}

/// Reads a message for `sendmail`: line endings made CRLF (no dot rule: the input is not
/// dot-stuffed), X-Sender and X-Receiver fields cut out (Pickup would take them for the envelope;
/// it removes them from what it sends anyway), and, with `extract` (`sendmail -t`), the addresses of
/// To, Cc and Bcc (of Resent-To, Resent-Cc and Resent-Bcc when the message has Resent- fields;
/// Resent-Bcc is then cut out), each without a domain given `@domain`. A message whose first line is not a
/// header field has no header section: nothing is cut and no field is found.
pub fn submission(raw: &[u8], domain: &str, extract: bool) -> Result<Submission, PickupError> {
    let text = normalise(raw, false);
    let head = match split_header(&text) {
        Ok(h) => h,
        Err(PickupError::NoHeaderSection) => {
            return Ok(Submission {
                message: text,
                recipients: Vec::new(),
                has_from: false,
                has_date: false,
            });
        }
        Err(e) => return Err(e),
    };
    let mut recipients = Vec::new();
    if extract {
        // A message being resent (it has Resent- fields) goes to the Resent- recipients only, as
        // with sendmail's and Postfix's -t: its To, Cc and Bcc were the first sending's.
        let resent = head.fields.iter().any(|f| {
            matches!(
                f.kind,
                Field::ResentTo | Field::ResentCc | Field::ResentBcc | Field::Resent
            )
        });
        let mut seen = HashSet::new();
        let kinds = if resent {
            [Field::ResentTo, Field::ResentCc, Field::ResentBcc]
        } else {
            [Field::To, Field::Cc, Field::Bcc]
        };
        for kind in kinds {
            for f in head.fields.iter().filter(|f| f.kind == kind) {
                for a in addresses(f.value(&text), kind, Some(domain))? {
                    let m = a.mailbox.ok_or_else(|| kind.invalid(b"<>"))?;
                    if seen.insert(m.to_ascii_lowercase()) {
                        recipients.push(m);
                    }
                }
            }
        }
    }
    let mut message = Vec::with_capacity(text.len());
    let mut pos = 0;
    // Pickup cuts Bcc itself; Resent-Bcc is cut here when it chose the recipients.
    for f in head.fields.iter().filter(|f| {
        matches!(f.kind, Field::XSender | Field::XReceiver)
            || (extract && f.kind == Field::ResentBcc)
    }) {
        message.extend_from_slice(&text[pos..f.start]);
        pos = f.end;
    }
    message.extend_from_slice(&text[pos..]);
    let has = |kind| head.fields.iter().any(|f| f.kind == kind);
    Ok(Submission {
        message,
        recipients,
        has_from: has(Field::From),
        has_date: has(Field::Date),
    })
}

/// The addresses of one recipient argument of `sendmail` (one address, or a comma-separated list
/// as in a To field), each without a domain given `@domain`.
pub fn address_list(value: &str, domain: &str) -> Result<Vec<String>, PickupError> {
    addresses(value.as_bytes(), Field::CommandLine, Some(domain))?
        .into_iter()
        .map(|a| a.mailbox.ok_or_else(|| Field::CommandLine.invalid(b"<>")))
        .collect()
}

/// CRLF line endings throughout, a final CRLF, and the dot rule.
fn normalise(raw: &[u8], unstuff_dots: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 16 + 2);
    let mut i = 0;
    while i < raw.len() {
        let rest = &raw[i..];
        let len = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
        let mut line = &rest[..len];
        if unstuff_dots && line.first() == Some(&b'.') {
            line = &line[1..];
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        let ending = match (rest.get(len), rest.get(len + 1)) {
            (Some(b'\r'), Some(b'\n')) => 2,
            (Some(_), _) => 1,
            (None, _) => 0,
        };
        i += len + ending;
    }
    out
}

/// The header fields we look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    XSender,
    XReceiver,
    Sender,
    From,
    To,
    Cc,
    Bcc,
    ResentTo,
    ResentCc,
    ResentBcc,
    /// Another `Resent-` field (Resent-From, Resent-Date …): the message is being resent.
    Resent,
    Received,
    MessageId,
    Date,
    /// A recipient argument of `sendmail` (not a header field).
    CommandLine,
    Other,
}

impl Field {
    fn of(name: &[u8]) -> Field {
        const NAMES: [(&[u8], Field); 13] = [
            (b"x-sender", Field::XSender),
            (b"x-receiver", Field::XReceiver),
            (b"sender", Field::Sender),
            (b"from", Field::From),
            (b"to", Field::To),
            (b"cc", Field::Cc),
            (b"bcc", Field::Bcc),
            (b"resent-to", Field::ResentTo),
            (b"resent-cc", Field::ResentCc),
            (b"resent-bcc", Field::ResentBcc),
            (b"received", Field::Received),
            (b"message-id", Field::MessageId),
            (b"date", Field::Date),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, f)| *f)
            .or_else(|| {
                let resent = name.get(..7)?.eq_ignore_ascii_case(b"resent-");
                resent.then_some(Field::Resent)
            })
            .unwrap_or(Field::Other)
    }

    /// The name for error messages.
    fn name(self) -> &'static str {
        match self {
            Field::XSender => "X-Sender",
            Field::XReceiver => "X-Receiver",
            Field::Sender => "Sender",
            Field::From => "From",
            Field::To => "To",
            Field::Cc => "Cc",
            Field::Bcc => "Bcc",
            Field::ResentTo => "Resent-To",
            Field::ResentCc => "Resent-Cc",
            Field::ResentBcc => "Resent-Bcc",
            Field::Resent => "Resent- header",
            Field::Received => "Received",
            Field::MessageId => "Message-ID",
            Field::Date => "Date",
            Field::CommandLine => "the command line",
            Field::Other => "header",
        }
    }

    fn is_removed(self) -> bool {
        matches!(self, Field::XSender | Field::XReceiver | Field::Bcc)
    }

    fn is_sender(self) -> bool {
        matches!(self, Field::XSender | Field::Sender | Field::From)
    }

    fn invalid(self, value: &[u8]) -> PickupError {
        let (header, value) = (self.name(), excerpt(value));
        if self.is_sender() {
            PickupError::InvalidSender { header, value }
        } else {
            PickupError::InvalidRecipient { header, value }
        }
    }
}

/// One header field in the normalised text.
#[derive(Debug)]
struct Span {
    kind: Field,
    /// Where the field name starts.
    start: usize,
    /// Just after the colon.
    value: usize,
    /// Just after the CRLF of its last line.
    end: usize,
}

impl Span {
    fn value<'a>(&self, text: &'a [u8]) -> &'a [u8] {
        &text[self.value..self.end]
    }
}

struct Head {
    fields: Vec<Span>,
    /// Where the body starts (after the empty line), or the end of the text.
    body: usize,
    /// The header section ended at a line that is not a header field, without an empty line.
    insert_blank_line: bool,
}

/// Splits the header section of `text`, in which every line ends with CRLF.
fn split_header(text: &[u8]) -> Result<Head, PickupError> {
    let mut fields: Vec<Span> = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        if pos > MAX_HEADER_SECTION {
            return Err(PickupError::HeaderTooLarge);
        }
        let end = memchr::memchr(b'\n', &text[pos..]).map_or(text.len(), |n| pos + n + 1);
        let line = text[pos..end]
            .strip_suffix(b"\r\n")
            .unwrap_or(&text[pos..end]);
        if line.is_empty() {
            if fields.is_empty() {
                return Err(PickupError::NoHeaderSection);
            }
            return Ok(Head {
                fields,
                body: end,
                insert_blank_line: false,
            });
        }
        if matches!(line[0], b' ' | b'\t') {
            match fields.last_mut() {
                Some(f) => f.end = end,
                None => return Err(PickupError::NoHeaderSection),
            }
        } else {
            // field-name = 1*ftext, then (obsolete syntax) optional WSP before the colon.
            let name_len = line
                .iter()
                .take_while(|b| matches!(b, 33..=57 | 59..=126))
                .count();
            let wsp = line[name_len..]
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t'))
                .count();
            if name_len == 0 || line.get(name_len + wsp) != Some(&b':') {
                if fields.is_empty() {
                    return Err(PickupError::NoHeaderSection);
                }
                return Ok(Head {
                    fields,
                    body: pos,
                    insert_blank_line: true,
                });
            }
            fields.push(Span {
                kind: Field::of(&line[..name_len]),
                start: pos,
                value: pos + name_len + wsp + 1,
                end,
            });
        }
        pos = end;
    }
    if pos > MAX_HEADER_SECTION {
        return Err(PickupError::HeaderTooLarge);
    }
    if fields.is_empty() {
        return Err(PickupError::NoHeaderSection);
    }
    Ok(Head {
        fields,
        body: text.len(),
        insert_blank_line: false,
    })
}

/// One address found in a field: `None` is the null path `<>`. `params` are the Queue-form
/// parameters after it (only ever for X-Sender and X-Receiver).
struct Found {
    mailbox: Option<String>,
    params: Vec<Vec<u8>>,
}

/// The sender (and its parameters) from X-Sender, else Sender, else From.
fn envelope_sender(text: &[u8], fields: &[Span]) -> Result<Envelope, PickupError> {
    let mut env = Envelope::default();
    let mut x_senders = fields.iter().filter(|f| f.kind == Field::XSender);
    if let Some(f) = x_senders.next() {
        if x_senders.next().is_some() {
            return Err(PickupError::MultipleSenders);
        }
        let value = f.value(text);
        let mut found = addresses(value, Field::XSender, None)?;
        if found.len() != 1 {
            return Err(Field::XSender.invalid(value));
        }
        let a = found.remove(0);
        env.sender = a.mailbox.unwrap_or_default();
        if !a.params.is_empty() {
            sender_params(&a.params, &mut env)?;
        }
        return Ok(env);
    }
    for kind in [Field::Sender, Field::From] {
        for f in fields.iter().filter(|f| f.kind == kind) {
            if let Some(a) = addresses(f.value(text), kind, None)?.into_iter().next() {
                env.sender = a.mailbox.ok_or_else(|| kind.invalid(b"<>"))?;
                return Ok(env);
            }
        }
    }
    Err(PickupError::NoSender)
}

/// The recipients from X-Receiver, else To, Cc and Bcc; without duplicates.
fn recipients(text: &[u8], fields: &[Span]) -> Result<Vec<Recipient>, PickupError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut add = |out: &mut Vec<Recipient>, r: Recipient| {
        if seen.insert(r.address.to_ascii_lowercase()) {
            out.push(r);
        }
    };
    let x_receivers = fields.iter().filter(|f| f.kind == Field::XReceiver);
    if x_receivers.clone().next().is_some() {
        for f in x_receivers {
            let value = f.value(text);
            let found = addresses(value, Field::XReceiver, None)?;
            if found.is_empty() {
                return Err(Field::XReceiver.invalid(value));
            }
            for a in found {
                let mut r = recipient(a.mailbox.ok_or_else(|| Field::XReceiver.invalid(b"<>"))?);
                if !a.params.is_empty() {
                    rcpt_params(&a.params, &mut r)?;
                }
                add(&mut out, r);
            }
        }
        return Ok(out);
    }
    let mut any_field = false;
    for kind in [Field::To, Field::Cc, Field::Bcc] {
        for f in fields.iter().filter(|f| f.kind == kind) {
            any_field = true;
            for a in addresses(f.value(text), kind, None)? {
                add(
                    &mut out,
                    recipient(a.mailbox.ok_or_else(|| kind.invalid(b"<>"))?),
                );
            }
        }
    }
    match (out.is_empty(), any_field) {
        (false, _) => Ok(out),
        (true, false) => Err(PickupError::NoRecipients),
        (true, true) => Err(PickupError::NoRecipientAddresses),
    }
}

fn recipient(address: String) -> Recipient {
    Recipient::new(address, false)
}

/// The addresses in one field value (as in the file: folded, ending with CRLF), each checked with
/// [`address::parse_mailbox`]. An empty value gives none. With `qualify`, an address without a
/// domain (`root`, as cron writes it) gets `@qualify`, as a sendmail appends its own domain.
fn addresses(value: &[u8], kind: Field, qualify: Option<&str>) -> Result<Vec<Found>, PickupError> {
    // Unfold (every line break in a field is CRLF followed by WSP) and make all WSP a space.
    let unfolded: Vec<u8> = value
        .iter()
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .map(|b| if *b == b'\t' { b' ' } else { *b })
        .collect();
    let v = unfolded.trim_ascii();
    if v.is_empty() {
        return Ok(Vec::new());
    }

    // `<>`, `<addr>`, and mailroot's Queue form `<addr> KEY=VALUE …` (X-Sender and X-Receiver only).
    if v[0] == b'<'
        && let Ok((path, rest)) = address::parse_path(v)
    {
        let tokens: Vec<&[u8]> = rest
            .split(|b| *b == b' ')
            .filter(|t| !t.is_empty())
            .collect();
        let queue_form = matches!(kind, Field::XSender | Field::XReceiver)
            && tokens.iter().any(|t| looks_like_param(t));
        if tokens.is_empty() || queue_form {
            let mailbox = match path {
                Path::Null => None,
                Path::Mailbox(m) => Some(qualified(mailbox_string(m, kind, v)?, qualify)),
            };
            return Ok(vec![Found {
                mailbox,
                params: tokens.iter().map(|t| t.to_vec()).collect(),
            }]);
        }
        // Something else follows the address (a comment, more addresses): mail-parser's business.
    }

    // A bare `local@domain`. mail-parser would mangle a quoted local part here (`"a b"@c` comes
    // back as name "a b", address "@c"), so a lone address is checked directly.
    if let Ok(m) = address::parse_mailbox(v) {
        return Ok(vec![Found {
            mailbox: Some(qualified(mailbox_string(m, kind, v)?, qualify)),
            params: Vec::new(),
        }]);
    }
    if let Some(m) = qualify.and_then(|d| local_only(v, d)) {
        return Ok(vec![Found {
            mailbox: Some(m),
            params: Vec::new(),
        }]);
    }

    // Display names, RFC 2047, comments, lists and groups. The value is parsed as a To field: once a
    // custom parser is registered for any header (`header_address("X-Receiver")`), mail-parser
    // parses every other field as raw text, so one fixed name with the default parser is simpler.
    let mut field = Vec::with_capacity(v.len() + 7);
    field.extend_from_slice(b"To: ");
    field.extend_from_slice(v);
    field.extend_from_slice(b"\r\n\r\n");
    let parsed = MessageParser::default().parse_headers(&field[..]);
    let list = match parsed
        .as_ref()
        .and_then(|m| m.headers().first())
        .map(|h| &h.value)
    {
        Some(HeaderValue::Address(list)) => list,
        Some(HeaderValue::Empty) => return Ok(Vec::new()),
        _ => return Err(kind.invalid(v)),
    };
    let mut out = Vec::new();
    for a in list.iter() {
        // mail-parser reads a bare word in a list (`a@b, root`) as a name without an address.
        let bare_word = || a.name().filter(|_| qualify.is_some()).map(str::trim);
        let Some(text) = a
            .address()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .or_else(bare_word)
        else {
            return Err(kind.invalid(v));
        };
        if let Some(m) = qualify.and_then(|d| local_only(text.as_bytes(), d)) {
            out.push(Found {
                mailbox: Some(m),
                params: Vec::new(),
            });
            continue;
        }
        let m =
            address::parse_mailbox(text.as_bytes()).map_err(|_| kind.invalid(text.as_bytes()))?;
        out.push(Found {
            mailbox: Some(qualified(
                mailbox_string(m, kind, text.as_bytes())?,
                qualify,
            )),
            params: Vec::new(),
        });
    }
    Ok(out)
}

/// `local@domain` for a bare local part (a dot-atom without `@`), when that is a valid mailbox.
fn local_only(text: &[u8], domain: &str) -> Option<String> {
    if text.is_empty() || text.contains(&b'@') || text.contains(&b'"') {
        return None;
    }
    let full = [text, b"@", domain.as_bytes()].concat();
    address::parse_mailbox(&full)
        .ok()
        .map(|m| m.to_string_lossless())
}

/// A domainless mailbox (`postmaster`) qualified with `qualify`, when given.
fn qualified(mailbox: String, qualify: Option<&str>) -> String {
    match qualify {
        Some(d) if !mailbox.contains('@') => format!("{mailbox}@{d}"),
        _ => mailbox,
    }
}

/// A mailbox as the envelope holds it. A domainless `postmaster` is a valid recipient (RFC 5321
/// §4.1.1.3) but not a valid sender.
fn mailbox_string(
    m: address::Mailbox<'_>,
    kind: Field,
    text: &[u8],
) -> Result<String, PickupError> {
    if m.domain.is_empty() && kind.is_sender() {
        return Err(kind.invalid(text));
    }
    Ok(m.to_string_lossless())
}

/// `KEY=…` with an esmtp-keyword before the `=`.
fn looks_like_param(t: &[u8]) -> bool {
    match memchr::memchr(b'=', t) {
        Some(i) if i > 0 => {
            t[0].is_ascii_alphanumeric()
                && t[..i]
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

/// Checks every parameter name against `allowed`, then each value with the rules of MAIL FROM and
/// RCPT TO (`smtp::params`), so that a Queue file's parameters mean exactly what they meant there.
fn check_params<'a>(
    header: Field,
    list: &'a [Vec<u8>],
    allowed: &[&str],
    mut set: impl FnMut(&[u8], &'a [u8]) -> Result<(), ParamError>,
) -> Result<(), PickupError> {
    for p in list {
        let key = p.split(|b| *b == b'=').next().unwrap_or(p);
        if !allowed
            .iter()
            .any(|a| a.as_bytes().eq_ignore_ascii_case(key))
        {
            return Err(PickupError::UnknownParameter {
                header: header.name(),
                name: excerpt(key),
            });
        }
    }
    let invalid = |e: ParamError| PickupError::InvalidParameter {
        header: header.name(),
        value: excerpt(&list.join(&b' ')),
        reason: match e {
            ParamError::BadValue(reason) => reason,
            ParamError::Unknown => "malformed parameters",
        },
    };
    for p in list {
        for (k, v) in params::pairs(p) {
            set(k, v.map_err(invalid)?).map_err(invalid)?;
        }
    }
    Ok(())
}

/// BODY, RET and ENVID after the X-Sender address.
fn sender_params(list: &[Vec<u8>], env: &mut Envelope) -> Result<(), PickupError> {
    let mut p = MailParams::default();
    check_params(Field::XSender, list, &["BODY", "RET", "ENVID"], |k, v| {
        p.set(k, v)
    })?;
    env.body = p.body;
    env.ret = p.ret;
    env.envid = p.envid.map(str::to_string);
    Ok(())
}

/// NOTIFY and ORCPT after an X-Receiver address.
fn rcpt_params(list: &[Vec<u8>], r: &mut Recipient) -> Result<(), PickupError> {
    let mut p = RcptParams::default();
    check_params(Field::XReceiver, list, &["NOTIFY", "ORCPT"], |k, v| {
        p.set(k, v)
    })?;
    r.notify = p.notify;
    r.orcpt = p.orcpt.map(str::to_string);
    Ok(())
}

/// `bytes` for an error message: unfolded, trimmed, lossy UTF-8, control characters escaped, and at
/// most [`MAX_EXCERPT`] characters.
fn excerpt(bytes: &[u8]) -> String {
    let unfolded: Vec<u8> = bytes
        .iter()
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .copied()
        .take(MAX_EXCERPT * 4)
        .collect();
    let text = String::from_utf8_lossy(unfolded.trim_ascii());
    let mut out = String::with_capacity(text.len().min(MAX_EXCERPT + 8));
    for (n, c) in text.chars().enumerate() {
        if n == MAX_EXCERPT {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::params::{Body, Notify, Ret};

    fn ok(raw: &str, unstuff: bool) -> PickupMessage {
        match parse(raw.as_bytes(), unstuff) {
            Ok(m) => m,
            Err(e) => panic!("{e}\n--- input:\n{raw}"),
        }
    }

    fn err(raw: &[u8]) -> PickupError {
        match parse(raw, true) {
            Ok(m) => panic!(
                "expected an error, got {m:?}\n--- input:\n{}",
                String::from_utf8_lossy(raw)
            ),
            Err(e) => e,
        }
    }

    fn rcpts(m: &PickupMessage) -> Vec<&str> {
        m.envelope
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect()
    }

    fn text(m: &PickupMessage) -> &str {
        std::str::from_utf8(&m.message).unwrap()
    }

    #[test]
    fn net_framework_form_is_dot_stuffed() {
        let raw = "X-Sender: \"App\" <app@contoso.com>\r\n\
                   X-Receiver: to@example.com\r\n\
                   X-Receiver: cc@example.com\r\n\
                   X-Receiver: hidden@example.com\r\n\
                   MIME-Version: 1.0\r\n\
                   From: \"App\" <app@contoso.com>\r\n\
                   To: to@example.com\r\n\
                   Cc: cc@example.com\r\n\
                   Date: 5 Jan 2024 09:03:07 +0100\r\n\
                   Subject: Hello\r\n\
                   Content-Type: text/plain; charset=us-ascii\r\n\
                   Content-Transfer-Encoding: quoted-printable\r\n\
                   \r\n\
                   Body text\r\n\
                   ..leading dot\r\n\
                   ..\r\n\
                   end\r\n";
        let m = ok(raw, true);
        assert_eq!(m.envelope.sender, "app@contoso.com");
        assert_eq!(
            rcpts(&m),
            ["to@example.com", "cc@example.com", "hidden@example.com"]
        );
        assert!(
            m.envelope
                .recipients
                .iter()
                .all(|r| !r.local && r.notify.is_none() && r.orcpt.is_none())
        );
        assert_eq!(
            (m.envelope.body, m.envelope.ret, m.envelope.envid.as_deref()),
            (None, None, None)
        );
        assert_eq!(
            text(&m),
            "MIME-Version: 1.0\r\n\
             From: \"App\" <app@contoso.com>\r\n\
             To: to@example.com\r\n\
             Cc: cc@example.com\r\n\
             Date: 5 Jan 2024 09:03:07 +0100\r\n\
             Subject: Hello\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\
             \r\n\
             Body text\r\n\
             .leading dot\r\n\
             .\r\n\
             end\r\n"
        );
        assert_eq!(m.hops, 0);
        assert!(!m.has_message_id);
    }

    #[test]
    fn net5_form_is_not_dot_stuffed() {
        let raw = "X-Sender: app@contoso.com\r\n\
                   X-Receiver: to@example.com\r\n\
                   MIME-Version: 1.0\r\n\
                   From: app@contoso.com\r\n\
                   To: to@example.com\r\n\
                   Subject: dots\r\n\
                   \r\n\
                   .one dot\r\n\
                   ..two dots\r\n\
                   .\r\n\
                   last\r\n";
        let kept = ok(raw, false);
        assert!(
            text(&kept).ends_with("\r\n\r\n.one dot\r\n..two dots\r\n.\r\nlast\r\n"),
            "{}",
            text(&kept)
        );
        assert_eq!(kept.envelope.sender, "app@contoso.com");
        assert_eq!(rcpts(&kept), ["to@example.com"]);
        // IIS-faithful mode eats one dot, as real IIS would.
        let eaten = ok(raw, true);
        assert!(
            text(&eaten).ends_with("\r\n\r\none dot\r\n.two dots\r\n\r\nlast\r\n"),
            "{}",
            text(&eaten)
        );
    }

    #[test]
    fn rfc2047_folded_x_receiver() {
        let raw = "X-Sender: =?utf-8?Q?Caf=C3=A9?= <cafe@example.com>\r\n\
                   X-Receiver: \"=?utf-8?B?w4lsw6huZQ==?=\"\r\n <elene@example.org>\r\n\
                   X-Receiver: plain@example.org\r\n\
                   From: cafe@example.com\r\n\
                   Subject: x\r\n\
                   \r\n\
                   body\r\n";
        let m = ok(raw, true);
        assert_eq!(m.envelope.sender, "cafe@example.com");
        assert_eq!(rcpts(&m), ["elene@example.org", "plain@example.org"]);
        assert_eq!(
            text(&m),
            "From: cafe@example.com\r\nSubject: x\r\n\r\nbody\r\n"
        );
        // Folded with a tab, the address on its own line, in lower case.
        let m = ok(
            "x-receiver: \"Some Long Display Name, Jr.\"\r\n\t<jr@example.org>\r\nfrom: a@b.example\r\n\r\n",
            true,
        );
        assert_eq!(rcpts(&m), ["jr@example.org"]);
        assert_eq!(text(&m), "from: a@b.example\r\n\r\n");
    }

    #[test]
    fn cdosys_header_only_with_group_and_bcc() {
        let raw = "From: \"Sender, Name\" <sender@example.com>\r\n\
                   To: a@example.com, Undisclosed: c@x, d@y;\r\n\
                   Cc: \"Bee\" <b@example.com>\r\n\
                   Bcc: hidden@example.com,\r\n secret@example.com\r\n\
                   Subject: header only";
        let m = ok(raw, true);
        assert_eq!(m.envelope.sender, "sender@example.com");
        assert_eq!(
            rcpts(&m),
            [
                "a@example.com",
                "c@x",
                "d@y",
                "b@example.com",
                "hidden@example.com",
                "secret@example.com"
            ]
        );
        assert_eq!(
            text(&m),
            "From: \"Sender, Name\" <sender@example.com>\r\n\
             To: a@example.com, Undisclosed: c@x, d@y;\r\n\
             Cc: \"Bee\" <b@example.com>\r\n\
             Subject: header only\r\n"
        );
    }

    #[test]
    fn empty_group_and_empty_fields_are_skipped() {
        let m = ok(
            "From: a@b.example\r\nTo: undisclosed-recipients:;\r\nCc:\r\nBcc: z@b.example\r\n\r\nx",
            true,
        );
        assert_eq!(rcpts(&m), ["z@b.example"]);
        assert_eq!(
            text(&m),
            "From: a@b.example\r\nTo: undisclosed-recipients:;\r\nCc:\r\n\r\nx\r\n"
        );
    }

    #[test]
    fn sender_is_preferred_over_from() {
        let raw = "From: \"Author\" <author@example.com>\r\n\
                   Sender: \"Secretary\" <secretary@example.com>\r\n\
                   To: to@example.com\r\n\
                   \r\n\
                   x\r\n";
        let m = ok(raw, true);
        assert_eq!(m.envelope.sender, "secretary@example.com");
        // The message keeps both.
        assert_eq!(text(&m), raw);
        // An empty Sender counts as none.
        let m = ok(
            "Sender:\r\nFrom: a@b.example, c@d.example\r\nTo: t@b.example\r\n",
            true,
        );
        assert_eq!(m.envelope.sender, "a@b.example");
        // X-Sender beats both.
        let m = ok(
            "X-Sender: x@b.example\r\nSender: s@b.example\r\nFrom: f@b.example\r\nTo: t@b.example\r\n",
            true,
        );
        assert_eq!(m.envelope.sender, "x@b.example");
    }

    #[test]
    fn bcc_is_stripped_in_both_modes() {
        // With X-Receiver, the envelope comes from it alone; Bcc is removed all the same.
        let with = ok(
            "X-Sender: a@b.example\r\nX-Receiver: r@b.example\r\nTo: t@b.example\r\nBCC: leak@b.example,\r\n\tleak2@b.example\r\nSubject: s\r\n\r\nbody\r\n",
            true,
        );
        assert_eq!(rcpts(&with), ["r@b.example"]);
        assert_eq!(text(&with), "To: t@b.example\r\nSubject: s\r\n\r\nbody\r\n");
        // Without X-Receiver, Bcc recipients are recipients, and the field is removed.
        let without = ok(
            "From: a@b.example\r\nbcc: hidden@b.example\r\nTo: t@b.example\r\nBcc: second@b.example\r\n\r\nbody\r\n",
            true,
        );
        assert_eq!(
            rcpts(&without),
            ["t@b.example", "hidden@b.example", "second@b.example"]
        );
        assert_eq!(
            text(&without),
            "From: a@b.example\r\nTo: t@b.example\r\n\r\nbody\r\n"
        );
        // A Bcc line in the body is body.
        let body = ok(
            "From: a@b.example\r\nTo: t@b.example\r\n\r\nBcc: x@b.example\r\n",
            true,
        );
        assert_eq!(rcpts(&body), ["t@b.example"]);
        assert!(text(&body).ends_with("\r\n\r\nBcc: x@b.example\r\n"));
    }

    #[test]
    fn unix_file_with_bare_lf() {
        let m = ok(
            "X-Sender: a@b.example\nX-Receiver: \"R\"\n <r@b.example>\nSubject: unix\n\nline 1\n..dot\n",
            true,
        );
        assert_eq!(m.envelope.sender, "a@b.example");
        assert_eq!(rcpts(&m), ["r@b.example"]);
        assert_eq!(text(&m), "Subject: unix\r\n\r\nline 1\r\n.dot\r\n");
    }

    #[test]
    fn bare_cr_becomes_crlf() {
        let m = ok(
            "From: a@b.example\r\nTo: t@b.example\r\nSubject: cr\r\n\r\nbefore\rafter\r\nold mac\r",
            true,
        );
        assert_eq!(
            text(&m),
            "From: a@b.example\r\nTo: t@b.example\r\nSubject: cr\r\n\r\nbefore\r\nafter\r\nold mac\r\n"
        );
        // A stray CR inside the header section ends a line there too.
        let m = ok("From: a@b.example\rTo: t@b.example\r\n\r\n", true);
        assert_eq!(rcpts(&m), ["t@b.example"]);
        assert_eq!(text(&m), "From: a@b.example\r\nTo: t@b.example\r\n\r\n");
    }

    #[test]
    fn last_line_gets_crlf_and_lone_dot_is_empty_line() {
        let m = ok(
            "From: a@b.example\r\nTo: t@b.example\r\n\r\nno newline",
            true,
        );
        assert!(text(&m).ends_with("\r\n\r\nno newline\r\n"));
        let m = ok(
            "From: a@b.example\r\nTo: t@b.example\r\n\r\na\r\n.\r\nb",
            true,
        );
        assert!(text(&m).ends_with("\r\n\r\na\r\n\r\nb\r\n"));
        let m = ok(
            "From: a@b.example\r\nTo: t@b.example\r\n\r\na\r\n.\r\nb",
            false,
        );
        assert!(text(&m).ends_with("\r\n\r\na\r\n.\r\nb\r\n"));
    }

    #[test]
    fn queue_file_copied_into_pickup() {
        let original = Envelope {
            sender: "bounce@example.com".into(),
            body: Some(Body::EightBitMime),
            ret: Some(Ret::Hdrs),
            envid: Some("QQ314159".into()),
            recipients: vec![
                Recipient {
                    address: "r@remote.example".into(),
                    local: false,
                    notify: Some(Notify(Notify::FAILURE | Notify::DELAY)),
                    orcpt: Some("rfc822;r@remote.example".into()),
                },
                Recipient {
                    address: "s@remote.example".into(),
                    local: false,
                    notify: Some(Notify(Notify::NEVER)),
                    orcpt: None,
                },
                recipient("plain@remote.example".into()),
            ],
        };
        let stored = "Received: from client.example ([192.0.2.10]) by mx.local.test with Microsoft SMTPSVC(6.0.3790.3959);\r\n\t 5 Jan 2024 09:03:07 +0100\r\n\
                      Received: from a by b; 5 Jan 2024 09:03:06 +0100\r\n\
                      Message-ID: <1@example.com>\r\n\
                      From: bounce@example.com\r\n\
                      To: r@remote.example\r\n\
                      \r\n\
                      body\r\n";
        let mut raw = crate::mailroot::block::write(&original, false);
        assert!(raw.starts_with(
            b"x-sender: <bounce@example.com> BODY=8BITMIME RET=HDRS ENVID=QQ314159\r\n"
        ));
        raw.extend_from_slice(stored.as_bytes());
        let m = parse(&raw, true).unwrap();
        assert_eq!(m.envelope, original);
        assert_eq!(text(&m), stored);
        assert_eq!(m.hops, 2);
        assert!(m.has_message_id);

        // The literal form from the brief, parameters in any case.
        let m = ok(
            "x-sender: <a@b.example> body=7bit\r\nx-receiver: <r@d.example> notify=success ORCPT=rfc822;r+40x@d.example\r\n\r\n",
            true,
        );
        assert_eq!(m.envelope.body, Some(Body::SevenBit));
        assert_eq!(
            m.envelope.recipients[0].notify,
            Some(Notify(Notify::SUCCESS))
        );
        assert_eq!(
            m.envelope.recipients[0].orcpt.as_deref(),
            Some("rfc822;r+40x@d.example")
        );
        assert_eq!(m.message, b"\r\n");
    }

    #[test]
    fn drop_file_form_and_null_sender() {
        let m = ok(
            "x-sender: <>\r\nx-receiver: user@local.example\r\nReceived: from mail pickup service by mx with Microsoft SMTPSVC;\r\n\t 2 Feb 2010 17:19:44 -0800\r\nFrom: postmaster@mx.example\r\nTo: user@local.example\r\n\r\nDSN\r\n",
            true,
        );
        assert_eq!(m.envelope.sender, "");
        assert_eq!(rcpts(&m), ["user@local.example"]);
        assert_eq!(m.hops, 1);
        assert!(text(&m).starts_with("Received: from mail pickup service"));
        // `< >` and `<>` with params are the null sender too.
        let m = ok(
            "X-Sender: <> RET=FULL\r\nX-Receiver: <u@x.example>\r\n",
            true,
        );
        assert_eq!(
            (m.envelope.sender.as_str(), m.envelope.ret),
            ("", Some(Ret::Full))
        );
    }

    #[test]
    fn duplicates_are_removed_case_insensitively() {
        let m = ok(
            "X-Sender: a@b.example\r\nX-Receiver: Dup@Example.com\r\nX-Receiver: other@example.com, dup@example.COM\r\nX-Receiver: <DUP@EXAMPLE.COM> NOTIFY=NEVER\r\n\r\n",
            true,
        );
        assert_eq!(rcpts(&m), ["Dup@Example.com", "other@example.com"]);
        assert_eq!(
            m.envelope.recipients[0].notify, None,
            "the first one is kept"
        );
        let m = ok(
            "From: a@b.example\r\nTo: x@y.example, X@Y.example\r\nCc: \"Again\" <x@y.example.>\r\nBcc: x@y.example\r\n",
            true,
        );
        assert_eq!(rcpts(&m), ["x@y.example"]);
    }

    #[test]
    fn odd_but_valid_forms() {
        // Quoted local parts (which mail-parser would mangle on its own), an address literal,
        // comments, WSP before the colon, a source route.
        let m = ok(
            "X-Sender : \"john doe\"@example.com\r\nX-Receiver: <\"a b\"@example.com>\r\nX-Receiver: u@[192.0.2.1]\r\nX-Receiver: (comment) c@example.com (more)\r\nX-Receiver: <@relay.example:routed@example.com>\r\nX-Receiver: postmaster\r\n\r\n",
            true,
        );
        assert_eq!(m.envelope.sender, "\"john doe\"@example.com");
        assert_eq!(
            rcpts(&m),
            [
                "\"a b\"@example.com",
                "u@[192.0.2.1]",
                "c@example.com",
                "routed@example.com",
                "postmaster"
            ]
        );
        assert_eq!(m.message, b"\r\n");
    }

    #[test]
    fn envelope_fields_anywhere_and_address_lists() {
        let m = ok(
            "Subject: s\r\nX-RECEIVER: <a@x.example>, <b@x.example>\r\nFrom: f@x.example\r\nx-Sender: <s@x.example> (comment)\r\nX-Receiver: <c@x.example> , d@x.example\r\n\r\nbody\r\n",
            true,
        );
        assert_eq!(m.envelope.sender, "s@x.example");
        assert_eq!(
            rcpts(&m),
            ["a@x.example", "b@x.example", "c@x.example", "d@x.example"]
        );
        assert_eq!(text(&m), "Subject: s\r\nFrom: f@x.example\r\n\r\nbody\r\n");
        // A file of nothing but the envelope gives an empty message.
        let m = ok("X-Sender: a@x.example\r\nX-Receiver: b@x.example", true);
        assert_eq!(rcpts(&m), ["b@x.example"]);
        assert!(m.message.is_empty());
    }

    #[test]
    fn hops_and_message_id() {
        let m = ok(
            "received: a\r\nReceived: b\r\n c\r\nRECEIVED: d\r\nmessage-id: <x@y>\r\nFrom: a@b.example\r\nTo: t@b.example\r\n\r\nReceived: in body\r\n",
            true,
        );
        assert_eq!(m.hops, 3);
        assert!(m.has_message_id);
    }

    #[test]
    fn non_field_line_ends_the_header_section() {
        let m = ok(
            "From: a@b.example\r\nTo: t@b.example\r\nthis is the body\r\nBcc: not@a.header\r\n",
            true,
        );
        assert_eq!(rcpts(&m), ["t@b.example"]);
        assert_eq!(
            text(&m),
            "From: a@b.example\r\nTo: t@b.example\r\n\r\nthis is the body\r\nBcc: not@a.header\r\n"
        );
    }

    #[test]
    fn errors() {
        assert_eq!(err(b""), PickupError::Empty);
        for raw in [
            &b"\r\n"[..],
            b"\r\nFrom: a@b.example\r\nTo: t@b.example\r\n",
            b" From: a@b.example\r\nTo: t@b.example\r\n",
            b"Hello world\r\nTo: t@b.example\r\n",
            b"From a@b.example Mon Jan  1 00:00:00 2024\nTo: t@b.example\n",
            b": no name\r\n",
            b"\0\xff\xfe",
        ] {
            assert_eq!(err(raw), PickupError::NoHeaderSection);
        }
        assert_eq!(
            err(b"Subject: nothing\r\nFrom: a@b.example\r\n\r\nTo: t@b.example\r\n"),
            PickupError::NoRecipients
        );
        assert_eq!(
            err(b"From: a@b.example\r\nTo: undisclosed-recipients:;\r\nCc: \r\n\r\n"),
            PickupError::NoRecipientAddresses
        );
        assert_eq!(
            err(b"Subject: x\r\nTo: t@b.example\r\nFrom:\r\n"),
            PickupError::NoSender
        );
        assert_eq!(
            err(b"X-Sender: a@b.example\r\nX-Sender: c@b.example\r\nX-Receiver: t@b.example\r\n"),
            PickupError::MultipleSenders
        );
        let e = |header, value: &str, sender| {
            if sender {
                PickupError::InvalidSender {
                    header,
                    value: value.into(),
                }
            } else {
                PickupError::InvalidRecipient {
                    header,
                    value: value.into(),
                }
            }
        };
        for (raw, expected) in [
            (
                &b"X-Sender: not an address\r\nX-Receiver: t@b.example\r\n"[..],
                e("X-Sender", "not an address", true),
            ),
            (
                b"X-Sender: a@b.example, c@b.example\r\nX-Receiver: t@b.example\r\n",
                e("X-Sender", "a@b.example, c@b.example", true),
            ),
            (
                b"X-Sender: postmaster\r\nX-Receiver: t@b.example\r\n",
                e("X-Sender", "postmaster", true),
            ),
            (
                b"X-Sender:\r\nX-Receiver: t@b.example\r\n",
                e("X-Sender", "", true),
            ),
            (
                b"From: <>\r\nTo: t@b.example\r\n",
                e("From", "<>", true),
            ),
            (
                b"Sender: Joe Bloggs\r\nFrom: a@b.example\r\nTo: t@b.example\r\n",
                e("Sender", "Joe Bloggs", true),
            ),
            (
                b"X-Sender: a@b.example\r\nX-Receiver: <>\r\n",
                e("X-Receiver", "<>", false),
            ),
            (
                b"X-Sender: a@b.example\r\nX-Receiver: \r\n",
                e("X-Receiver", "", false),
            ),
            (
                b"X-Sender: a@b.example\r\nX-Receiver: \"Name\" <a@@b>\r\n",
                e("X-Receiver", "a@@b", false),
            ),
            (
                b"X-Sender: a@b.example\r\nX-Receiver: undisclosed:;\r\n",
                e("X-Receiver", "undisclosed:;", false),
            ),
            (
                b"From: a@b.example\r\nTo: ok@b.example, bad@exa_mple.com\r\n",
                e("To", "bad@exa_mple.com", false),
            ),
            (
                b"From: a@b.example\r\nCc: \"\xc3\x89l\xc3\xa8ne\" <\xc3\xa9l\xc3\xa8ne@example.org>\r\n",
                e("Cc", "\u{e9}l\u{e8}ne@example.org", false),
            ),
            (
                b"From: a@b.example\r\nBcc: a\0b@example.org\r\n",
                e("Bcc", "a\\u{0}b@example.org", false),
            ),
            (
                b"From: a@b.example\r\nTo: <>\r\n",
                e("To", "<>", false),
            ),
        ] {
            assert_eq!(err(raw), expected, "{}", String::from_utf8_lossy(raw));
        }

        assert_eq!(
            err(b"X-Sender: <a@b.example> SIZE=10\r\nX-Receiver: t@b.example\r\n"),
            PickupError::UnknownParameter {
                header: "X-Sender",
                name: "SIZE".into()
            }
        );
        assert_eq!(
            err(b"X-Sender: <a@b.example>\r\nX-Receiver: <t@b.example> NOTIFY=FAILURE BODY=7BIT\r\n"),
            PickupError::UnknownParameter {
                header: "X-Receiver",
                name: "BODY".into()
            }
        );
        assert_eq!(
            err(b"X-Sender: <a@b.example>\r\nX-Receiver: <t@b.example> NOTIFY=SOMETIMES\r\n"),
            PickupError::InvalidParameter {
                header: "X-Receiver",
                value: "NOTIFY=SOMETIMES".into(),
                reason: "NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY"
            }
        );
        assert_eq!(
            err(b"X-Sender: <a@b.example> RET=FULL RET=HDRS\r\nX-Receiver: t@b.example\r\n"),
            PickupError::InvalidParameter {
                header: "X-Sender",
                value: "RET=FULL RET=HDRS".into(),
                reason: "parameter given twice"
            }
        );
        assert_eq!(
            err(b"X-Sender: <a@b.example> ENVID=\r\nX-Receiver: t@b.example\r\n"),
            PickupError::InvalidParameter {
                header: "X-Sender",
                value: "ENVID=".into(),
                reason: "parameter values must be printable ASCII"
            }
        );

        let mut huge = b"From: a@b.example\r\nTo: t@b.example\r\n".to_vec();
        while huge.len() <= MAX_HEADER_SECTION {
            huge.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        assert_eq!(err(&huge), PickupError::HeaderTooLarge);
        huge.extend_from_slice(b"\r\nbody\r\n");
        assert_eq!(err(&huge), PickupError::HeaderTooLarge);
        // A big body is no problem.
        let mut big = b"From: a@b.example\r\nTo: t@b.example\r\n\r\n".to_vec();
        big.resize(3 * MAX_HEADER_SECTION, b'x');
        assert_eq!(parse(&big, true).unwrap().message.len(), big.len() + 2);
    }

    #[test]
    fn error_messages_for_badmail() {
        let s = |e: PickupError| e.to_string();
        assert_eq!(
            s(PickupError::NoRecipients),
            "no recipients: no X-Receiver, To, Cc or Bcc header"
        );
        assert_eq!(
            s(PickupError::NoHeaderSection),
            "not a message: no header section"
        );
        assert_eq!(
            s(err(
                b"X-Sender: \"App\" <app@@contoso.com>\r\nX-Receiver: t@b.example\r\n"
            )),
            "invalid sender address \"app@@contoso.com\" in X-Sender"
        );
        assert_eq!(
            s(err(
                b"From: a@b.example\r\nTo: \"Bad\"\r\n  <bad\tx@y.example>\r\n"
            )),
            "invalid recipient address \"bad x@y.example\" in To"
        );
        assert_eq!(
            s(err(
                b"X-Sender: <a@b.example> FOO=1\r\nX-Receiver: t@b.example\r\n"
            )),
            "unknown parameter \"FOO\" in X-Sender (only BODY, RET and ENVID are allowed)"
        );
        assert_eq!(
            s(err(
                b"X-Sender: a@b.example\r\nX-Receiver: <t@b.example> ORCPT=x\r\n"
            )),
            "invalid parameters \"ORCPT=x\" in X-Receiver: ORCPT must be type;address"
        );
        // Long values are cut, control characters escaped.
        let mut raw = b"From: a@b.example\r\nTo: ".to_vec();
        raw.extend(std::iter::repeat_n(b'\x07', 1000));
        let msg = s(err(&raw));
        assert!(msg.len() < 1300, "{}", msg.len());
        assert!(msg.contains("\\u{7}") && msg.contains('…'), "{msg}");
    }

    /// A deterministic xorshift generator, so that a failure can be reproduced.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        const PIECES: &[&[u8]] = &[
            b"X-Sender:",
            b"x-receiver: ",
            b"From: ",
            b"To:",
            b"Cc: ",
            b"Bcc:",
            b"Sender:",
            b"Received: ",
            b"Message-ID: ",
            b"Subject: ",
            b"a@b.example",
            b"<",
            b">",
            b"<>",
            b"\"",
            b"\\",
            b"(",
            b")",
            b",",
            b";",
            b":",
            b"@",
            b"=?utf-8?B?w4lsw6huZQ==?=",
            b"=?",
            b"?=",
            b" NOTIFY=",
            b" ORCPT=rfc822;",
            b" BODY=8BITMIME",
            b" ENVID=",
            b"\r\n",
            b"\n",
            b"\r",
            b"\r\n ",
            b"\r\n\t",
            b"\r\n\r\n",
            b".",
            b"..",
            b" ",
            b"\0",
            b"\xff",
            b"\xc3\xa9",
            b"[1.2.3.4]",
            b"postmaster",
        ];
        const NAMES: &[&[u8]] = &[
            b"X-Sender: ",
            b"X-Receiver: ",
            b"x-receiver:",
            b"From: ",
            b"Sender: ",
            b"To: ",
            b"Cc: ",
            b"BCC: ",
            b"Received: ",
            b"Message-ID: ",
            b"Subject: ",
            b"X-Other : ",
        ];
        const GOOD: &[&[u8]] = &[
            b"a@b.example",
            b"<c@d.example>",
            b"\"Name\" <e@f.example>",
            b"\"=?utf-8?B?w4lsw6huZQ==?=\"\r\n <g@h.example>",
            b"G: i@j.example, k@l.example;",
            b"<m@n.example> NOTIFY=FAILURE ORCPT=rfc822;m@n.example",
            b"<>",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut ok_count = 0;
        for case in 0..900 {
            let mut raw = Vec::new();
            let soup = |rng: &mut Rng, raw: &mut Vec<u8>, max: usize| {
                for _ in 0..rng.below(max) {
                    if rng.below(4) == 0 {
                        raw.push(rng.next() as u8);
                    } else {
                        raw.extend_from_slice(PIECES[rng.below(PIECES.len())]);
                    }
                }
            };
            match case % 3 {
                // Bytes and fragments.
                0 => soup(&mut rng, &mut raw, 60),
                // A plausible start, then fragments.
                1 => {
                    raw.extend_from_slice(b"X-Sender: a@b.example\r\nX-Receiver: ");
                    soup(&mut rng, &mut raw, 60);
                }
                // Header fields with mostly good values, some damaged, then a body.
                _ => {
                    for _ in 0..1 + rng.below(8) {
                        raw.extend_from_slice(NAMES[rng.below(NAMES.len())]);
                        if rng.below(5) == 0 {
                            soup(&mut rng, &mut raw, 6);
                        } else {
                            raw.extend_from_slice(GOOD[rng.below(GOOD.len())]);
                        }
                        raw.extend_from_slice(b"\r\n");
                    }
                    if rng.below(2) == 0 {
                        raw.extend_from_slice(b"\r\n");
                    }
                    soup(&mut rng, &mut raw, 30);
                }
            }
            for unstuff in [true, false] {
                match parse(&raw, unstuff) {
                    Ok(m) => {
                        ok_count += 1;
                        assert!(!m.envelope.recipients.is_empty());
                        for r in &m.envelope.recipients {
                            assert!(address::parse_mailbox(r.address.as_bytes()).is_ok());
                            assert!(!r.local);
                        }
                        assert!(m.message.is_empty() || m.message.ends_with(b"\r\n"));
                        for (i, b) in m.message.iter().enumerate() {
                            match b {
                                b'\r' => assert_eq!(m.message.get(i + 1), Some(&b'\n')),
                                b'\n' => assert!(i > 0 && m.message[i - 1] == b'\r'),
                                _ => {}
                            }
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        assert!(!msg.is_empty() && msg.len() < 2000);
                    }
                }
            }
        }
        // Enough files get through for the checks on success to mean something.
        assert!(ok_count > 100, "{ok_count}");
    }
}
