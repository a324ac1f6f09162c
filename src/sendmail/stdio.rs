//! `sendmail -bs`: SMTP on standard input and output. Laravel (`sendmail -bs -i`), Symfony Mailer
//! (`sendmail -bs`) and other PHP libraries start the sendmail program this way and talk SMTP to it
//! through a pipe, so that each message gets a reply of its own.
//!
//! The conversation is the server's own session (`smtp::session`: the same replies, limits and
//! checks) for a local user, as with the Pickup folder and Postfix's `sendmail -bs`: no TLS to
//! offer on a pipe, no AUTH, and relaying allowed. Each accepted message becomes a Pickup file,
//! written durably (`mailroot::submit`) before its 250; the running server sends it from there.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::{SendmailError, assemble};
use crate::config::VirtualServer;
use crate::mailroot::{pickup_file, submit};
use crate::smtp::command::{self, Line};
use crate::smtp::data::{ChunkCheck, DataScanner, Flaws, Scan};
use crate::smtp::headers::HeaderScan;
use crate::smtp::params;
use crate::smtp::reply;
use crate::smtp::session::{MessageEnd, MessagePlan, Next, Session, Verdict};

/// Bytes read from standard input at a time.
const READ: usize = 16 * 1024;

/// What a `-bs` conversation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Served {
    /// The Pickup files written, one per message answered 250.
    pub files: Vec<std::path::PathBuf>,
}

/// Speaks SMTP on `input` and `output` until QUIT or the end of the input, writing each accepted
/// message into `vs`'s Pickup folder. Fails only when the input or output fails, or ends inside a
/// message (nothing of that message is written).
pub fn serve(
    vs: &VirtualServer,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<Served, SendmailError> {
    let mut local = vs.clone();
    // A pipe from a local program: no TLS to start, nothing to log in to (the session then offers
    // neither STARTTLS nor AUTH, and requires neither).
    local.security.tls = None;
    local.security.require_tls = false;
    local.security.anonymous = true;
    local.security.basic = false;
    let vs = Arc::new(local);
    let mut session = Session::new(vs.clone(), IpAddr::V4(Ipv4Addr::LOCALHOST), true);
    let mut io = Pipe {
        input,
        output,
        buf: vec![0; READ + command::MAX_LINE],
        start: 0,
        end: 0,
        out: Vec::with_capacity(1024),
    };
    let mut served = Served::default();
    session.greeting(&mut io.out);
    // A BDAT message being received: its bytes and its line-ending check.
    let mut chunked: Option<(Message, MessagePlan)> = None;
    loop {
        let next = match command::take_line(&io.buf[io.start..io.end]) {
            Line::Partial => {
                if !io.fill()? {
                    io.flush()?;
                    return Ok(served); // the caller closed the pipe without QUIT
                }
                continue;
            }
            Line::TooLong => {
                let was_auth = io
                    .pending()
                    .get(..5)
                    .is_some_and(|h| h.eq_ignore_ascii_case(b"AUTH "));
                io.skip_line()?;
                session.line_too_long(was_auth, &mut io.out)
            }
            Line::Complete(line, n) => {
                let next = session.command(line, &mut io.out);
                io.start += n;
                next
            }
            Line::Bare(line, n, bare) => {
                let next = session.bare_line(line, bare, &mut io.out);
                io.start += n;
                next
            }
        };
        match next {
            Next::Continue => {}
            // STARTTLS is never offered here; a client that tries anyway is refused by the session.
            Next::Close | Next::StartTls => {
                io.flush()?;
                return Ok(served);
            }
            Next::Data(plan) => {
                session.data_opened(true, &mut io.out);
                io.flush()?;
                let mut message = Message::new(&plan);
                let mut scanner = DataScanner::new();
                loop {
                    let avail = &io.buf[io.start..io.end];
                    match scanner.scan(avail, &mut |seg| message.push(seg)) {
                        Scan::End(k) => {
                            io.start += k;
                            break;
                        }
                        Scan::NeedMore => {
                            io.start = io.end;
                            if !io.fill()? {
                                return Err(ended_inside());
                            }
                        }
                    }
                }
                let flaws = scanner.flaws();
                finish(
                    &vs,
                    &mut session,
                    &mut io.out,
                    message,
                    flaws,
                    &plan,
                    &mut served,
                );
            }
            Next::Bdat {
                size,
                last,
                open,
                discard,
            } => {
                let mut discard = discard;
                if let Some(plan) = open {
                    chunked = Some((Message::new(&plan), plan));
                }
                if chunked.is_none() {
                    discard = true;
                }
                let mut left = size;
                while left > 0 {
                    if io.start == io.end && !io.fill()? {
                        return Err(ended_inside());
                    }
                    let take = left.min((io.end - io.start) as u64) as usize;
                    if !discard && let Some((m, _)) = chunked.as_mut() {
                        m.push_chunk(&io.buf[io.start..io.start + take]);
                    }
                    io.start += take;
                    left -= take as u64;
                }
                if discard {
                    if let Next::Close = session.bdat_discarded(&mut io.out) {
                        io.flush()?;
                        return Ok(served);
                    }
                } else if !last {
                    session.bdat_chunk(size, &mut io.out);
                } else if let Some((message, plan)) = chunked.take() {
                    let end = Flaws::default();
                    finish(
                        &vs,
                        &mut session,
                        &mut io.out,
                        message,
                        end,
                        &plan,
                        &mut served,
                    );
                }
            }
        }
        if !session.message_open() {
            chunked = None; // RSET, EHLO or a refusal ended a BDAT message
        }
    }
}

fn ended_inside() -> SendmailError {
    SendmailError::Io("standard input ended inside a message; nothing of it was sent".into())
}

/// The end of a message: the session's verdict, then the Pickup file and the 250 (or why not).
fn finish(
    vs: &VirtualServer,
    session: &mut Session,
    out: &mut Vec<u8>,
    message: Message,
    data_flaws: Flaws,
    plan: &MessagePlan,
    served: &mut Served,
) {
    let (end, bytes, binary_flaws) = message.finish(data_flaws);
    if let Verdict::Refused { .. } = session.message_end(&end, out) {
        return; // the reply is written; a 421 closes at the next command
    }
    if binary_flaws {
        // The Pickup folder holds text: line endings are made CRLF on the way in.
        session.not_committed(reply::BINARY_NOT_TEXT, out);
        return;
    }
    match pickup_content(vs, plan, &bytes).and_then(|c| {
        submit::write(&vs.dirs.pickup, &c).map_err(|e| SendmailError::Io(e.to_string()))
    }) {
        Ok(path) => {
            served.files.push(path);
            session.committed(true, out);
        }
        Err(e) => {
            // The caller sees 452 and may try again; the reason goes where an admin looks.
            eprintln!("mailroot sendmail: {e}");
            session.committed(false, out);
        }
    }
}

/// The Pickup file for a message the session accepted: its envelope as X-Sender / X-Receiver
/// lines (with the DSN parameters), then the message as `sendmail` writes it.
fn pickup_content(
    vs: &VirtualServer,
    plan: &MessagePlan,
    message: &[u8],
) -> Result<Vec<u8>, SendmailError> {
    let env = &plan.envelope;
    let mut head = format!("X-Sender: <{}>", env.sender);
    params::write_mail(&mut head, env.body, env.ret, env.envid.as_deref());
    head.push_str("\r\n");
    for r in &env.recipients {
        head.push_str(&format!("X-Receiver: <{}>", r.address));
        params::write_rcpt(&mut head, r.notify, r.orcpt.as_deref());
        head.push_str("\r\n");
    }
    let sub = pickup_file::submission(message, &vs.default_domain, false)
        .map_err(|e| SendmailError::Data(format!("the message: {e}")))?;
    let sender = (!env.sender.is_empty()).then(|| env.sender.clone());
    assemble(vs, head.as_bytes(), &sub, sender, None)
}

/// A message being received: its bytes (up to the plan's limit; past it only counted, so the
/// session can answer 552 at the end), its Received count and its line-ending check.
struct Message {
    bytes: Vec<u8>,
    headers: HeaderScan,
    size: u64,
    limit: u64,
    binary: bool,
    chunks: ChunkCheck,
}

impl Message {
    fn new(plan: &MessagePlan) -> Message {
        Message {
            bytes: Vec::new(),
            // The Message-ID the 250 names, where the message has none (as the server does).
            headers: HeaderScan::new(plan.message_id_line.clone()),
            size: 0,
            limit: plan.limit,
            binary: plan.binary,
            chunks: ChunkCheck::default(),
        }
    }

    fn push(&mut self, seg: &[u8]) {
        self.size += seg.len() as u64;
        if self.size > self.limit {
            return;
        }
        let bytes = &mut self.bytes;
        self.headers.feed(seg, &mut |b| bytes.extend_from_slice(b));
    }

    fn push_chunk(&mut self, seg: &[u8]) {
        self.chunks.scan(seg);
        self.push(seg);
    }

    /// The session's view of the message, its bytes, and whether it is BINARYMIME content that
    /// is not text (bare CR or LF, NUL).
    fn finish(mut self, data_flaws: Flaws) -> (MessageEnd, Vec<u8>, bool) {
        if self.size <= self.limit {
            let bytes = &mut self.bytes;
            self.headers.finish(&mut |b| bytes.extend_from_slice(b));
        }
        let mut flaws = data_flaws;
        let chunk = self.chunks.finish();
        flaws.bare_lf |= chunk.bare_lf;
        flaws.bare_cr |= chunk.bare_cr;
        flaws.nul |= chunk.nul;
        let binary_flaws = self.binary && flaws.any();
        let end = MessageEnd {
            size: self.size,
            flaws,
            hops: self.headers.received(),
            store_failed: false,
        };
        (end, self.bytes, binary_flaws)
    }
}

/// Standard input with a buffer, and the replies waiting for standard output.
struct Pipe<'a> {
    input: &'a mut dyn Read,
    output: &'a mut dyn Write,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
}

impl Pipe<'_> {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more input after what is buffered; `false` at its end. Replies go out first: the
    /// client may be waiting for them before it writes again (and while commands are still
    /// buffered, PIPELINING, they wait as on a socket).
    fn fill(&mut self) -> Result<bool, SendmailError> {
        self.flush()?;
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() + READ, 0);
        }
        loop {
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(SendmailError::Io(format!(
                        "cannot read standard input: {e}"
                    )));
                }
            }
        }
    }

    /// Drops the rest of an overlong line, up to and with its LF.
    fn skip_line(&mut self) -> Result<(), SendmailError> {
        loop {
            if let Some(lf) = memchr::memchr(b'\n', self.pending()) {
                self.start += lf + 1;
                return Ok(());
            }
            self.start = self.end;
            if !self.fill()? {
                return Ok(());
            }
        }
    }

    fn flush(&mut self) -> Result<(), SendmailError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = self
            .output
            .write_all(&self.out)
            .and_then(|()| self.output.flush());
        self.out.clear();
        written.map_err(|e| SendmailError::Io(format!("cannot write standard output: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A virtual server whose Pickup folder is a fresh temporary folder (removed on drop).
    struct Pickup {
        vs: VirtualServer,
    }

    impl Pickup {
        fn new(name: &str) -> Pickup {
            let mut vs = crate::testutil::test_server();
            vs.dirs.pickup =
                std::env::temp_dir().join(format!("mailroot-stdio-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&vs.dirs.pickup);
            std::fs::create_dir_all(&vs.dirs.pickup).unwrap();
            Pickup { vs }
        }

        /// Runs a conversation; the replies and the outcome.
        fn talk(&self, input: &[u8]) -> (String, Result<Served, SendmailError>) {
            let mut out = Vec::new();
            let r = serve(&self.vs, &mut &input[..], &mut out);
            (String::from_utf8(out).unwrap(), r)
        }

        fn file(&self, path: &std::path::Path) -> String {
            assert!(path.starts_with(&self.vs.dirs.pickup));
            std::fs::read_to_string(path).unwrap()
        }
    }

    impl Drop for Pickup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.vs.dirs.pickup);
        }
    }

    /// Reply codes, one per reply (continuation lines skipped).
    fn codes(replies: &str) -> Vec<&str> {
        replies
            .split("\r\n")
            .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
            .map(|l| &l[..3])
            .collect()
    }

    #[test]
    fn a_pipelined_conversation_gets_every_reply_and_a_pickup_file() {
        let p = Pickup::new("pipelined");
        let (replies, r) = p.talk(
            b"EHLO app\r\nMAIL FROM:<app@local.test> ENVID=E1\r\nRCPT TO:<x@remote.test> ORCPT=rfc822;x@remote.test\r\nDATA\r\nSubject: s\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
        );
        assert_eq!(
            codes(&replies),
            ["220", "250", "250", "250", "354", "250", "221"]
        );
        let files = r.unwrap().files;
        assert_eq!(files.len(), 1);
        let text = p.file(&files[0]);
        assert!(
            text.starts_with(
                "X-Sender: <app@local.test> ENVID=E1\r\nX-Receiver: <x@remote.test> ORCPT=rfc822;x@remote.test\r\nFrom: app@local.test\r\nDate: "
            ),
            "{text}"
        );
        // Pickup unstuffs one dot per line (PickupUnstuffDots): the data line `.dot` is written
        // `..dot`.
        assert!(text.contains("Subject: s\r\nMessage-ID: <"), "{text}");
        let id = replies
            .split("250 2.6.0 ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        assert!(
            text.contains(&format!("Message-ID: {id}\r\n\r\n..dot\r\n")),
            "{text}"
        );
    }

    #[test]
    fn binarymime_that_is_not_text_is_refused_and_text_over_bdat_is_taken() {
        let p = Pickup::new("bdat");
        let (replies, r) = p.talk(
            b"EHLO a\r\nMAIL FROM:<a@local.test> BODY=BINARYMIME\r\nRCPT TO:<x@remote.test>\r\nBDAT 11 LAST\r\nA: b\r\n\r\nx\ny\
              MAIL FROM:<a@local.test> BODY=BINARYMIME\r\nRCPT TO:<x@remote.test>\r\nBDAT 4\r\nA: bBDAT 8 LAST\r\n\r\n\r\nxy\r\n",
        );
        assert_eq!(
            codes(&replies),
            [
                "220", "250", "250", "250", "554", "250", "250", "250", "250"
            ],
            "{replies}"
        );
        assert!(replies.contains("554 5.6.1 Binary content"), "{replies}");
        let files = r.unwrap().files;
        assert_eq!(files.len(), 1, "the end of the input ends the conversation");
        assert!(
            p.file(&files[0])
                .contains("X-Sender: <a@local.test> BODY=BINARYMIME\r\n")
        );
        assert!(p.file(&files[0]).ends_with("\r\n\r\nxy\r\n"));
    }

    #[test]
    fn an_overlong_line_is_refused_and_the_conversation_goes_on() {
        let p = Pickup::new("long");
        let mut input = b"HELO a\r\nNOOP ".to_vec();
        input.extend(std::iter::repeat_n(b'x', 2000));
        input.extend_from_slice(b"\r\nNOOP\r\nQUIT\r\n");
        let (replies, r) = p.talk(&input);
        assert_eq!(
            codes(&replies),
            ["220", "250", "500", "250", "221"],
            "{replies}"
        );
        assert!(r.unwrap().files.is_empty());
    }

    #[test]
    fn input_that_ends_inside_a_message_writes_nothing() {
        let p = Pickup::new("cut");
        let (replies, r) = p
            .talk(b"HELO a\r\nMAIL FROM:<a@local.test>\r\nRCPT TO:<b@remote.test>\r\nDATA\r\nhalf");
        assert!(replies.ends_with("354 Start mail input; end with <CRLF>.<CRLF>\r\n"));
        assert!(matches!(r, Err(SendmailError::Io(m)) if m.contains("inside a message")));
        assert_eq!(std::fs::read_dir(&p.vs.dirs.pickup).unwrap().count(), 0);
    }

    #[test]
    fn starttls_and_auth_are_neither_offered_nor_required() {
        let mut p = Pickup::new("local");
        p.vs.security.require_tls = true;
        p.vs.security.anonymous = false;
        p.vs.security.basic = true;
        let (replies, _) = p.talk(
            b"EHLO a\r\nSTARTTLS\r\nMAIL FROM:<a@local.test>\r\nRCPT TO:<b@elsewhere.test>\r\nQUIT\r\n",
        );
        assert!(
            !replies.contains("STARTTLS") && !replies.contains("AUTH"),
            "{replies}"
        );
        assert_eq!(
            codes(&replies)[2..],
            ["454", "250", "250", "221"],
            "{replies}"
        );
    }
}
