//! Looks at the header section of a message as it streams to disk: counts Received headers (for the
//! HopCount loop check), notes the client's Message-ID, and inserts one where the message has none,
//! right before the blank line that ends the headers. Bytes pass through unchanged otherwise; only the
//! field name of each header line is held back (at most [`MAX_NAME`] bytes) until its colon is seen.

/// Longest field name looked at; a longer "name" is taken as the start of the body.
pub const MAX_NAME: usize = 76;
const MAX_ID: usize = 250;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    LineStart,
    Name,
    Value,
    Body,
}

/// Streaming header inspector; one per message.
#[derive(Debug, Clone)]
pub struct HeaderScan {
    state: State,
    name: Vec<u8>,
    received: u32,
    message_id: Option<Vec<u8>>,
    capturing_id: bool,
    insert: Vec<u8>,
}

impl HeaderScan {
    /// `message_id_line` is the complete `Message-ID: <…>\r\n` line to insert if the message has none.
    pub fn new(message_id_line: Vec<u8>) -> HeaderScan {
        HeaderScan {
            state: State::LineStart,
            name: Vec::with_capacity(32),
            received: 0,
            message_id: None,
            capturing_id: false,
            insert: message_id_line,
        }
    }

    /// Received headers counted so far.
    pub fn received(&self) -> u32 {
        self.received
    }

    /// The client's Message-ID value (trimmed), if the message had one.
    pub fn message_id(&self) -> Option<String> {
        self.message_id
            .as_ref()
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
    }

    /// Passes `seg` to `out`, inserting the Message-ID line where needed.
    pub fn feed(&mut self, seg: &[u8], out: &mut impl FnMut(&[u8])) {
        if self.state == State::Body {
            out(seg);
            return;
        }
        let mut from = 0; // first byte of `seg` not yet passed on
        let mut i = 0;
        while i < seg.len() {
            let b = seg[i];
            match self.state {
                State::Body => break,
                State::LineStart => {
                    if b == b'\r' || b == b'\n' {
                        out(&seg[from..i]);
                        from = i;
                        self.end_of_headers(out);
                        break;
                    } else if b == b' ' || b == b'\t' {
                        self.state = State::Value; // continuation of the previous field
                        i += 1;
                    } else {
                        out(&seg[from..i]);
                        from = i;
                        self.capturing_id = false;
                        self.name.clear();
                        self.state = State::Name;
                    }
                }
                State::Name => {
                    if b == b':' {
                        self.field_name_done();
                        out(&self.name);
                        from = i;
                        self.state = State::Value;
                        i += 1;
                    } else if (33..=126).contains(&b) && self.name.len() < MAX_NAME {
                        self.name.push(b);
                        i += 1;
                        from = i;
                    } else {
                        // Not a header field: the body starts here without a blank line.
                        self.end_of_headers(out);
                        out(b"\r\n");
                        out(&self.name);
                        from = i;
                        break;
                    }
                }
                State::Value => match memchr::memchr(b'\n', &seg[i..]) {
                    Some(off) => {
                        self.capture(&seg[i..i + off]);
                        i += off + 1;
                        self.state = State::LineStart;
                    }
                    None => {
                        self.capture(&seg[i..]);
                        i = seg.len();
                    }
                },
            }
        }
        if from < seg.len() && self.state != State::Name {
            out(&seg[from..]);
        }
    }

    /// Called at the end of the data: a message that never left its header section gets its
    /// Message-ID at the end.
    pub fn finish(&mut self, out: &mut impl FnMut(&[u8])) {
        match self.state {
            State::Body => {}
            State::LineStart => self.end_of_headers(out),
            State::Name => {
                out(&self.name);
                out(b"\r\n");
                self.end_of_headers(out);
            }
            State::Value => {
                out(b"\r\n");
                self.end_of_headers(out);
            }
        }
    }

    fn field_name_done(&mut self) {
        if self.name.eq_ignore_ascii_case(b"received") {
            self.received += 1;
        } else if self.name.eq_ignore_ascii_case(b"message-id") && self.message_id.is_none() {
            self.message_id = Some(Vec::new());
            self.capturing_id = true;
        }
    }

    fn capture(&mut self, bytes: &[u8]) {
        if !self.capturing_id {
            return;
        }
        if let Some(v) = self.message_id.as_mut() {
            let room = MAX_ID.saturating_sub(v.len());
            v.extend(bytes.iter().take(room).filter(|b| !b.is_ascii_control()));
        }
    }

    fn end_of_headers(&mut self, out: &mut impl FnMut(&[u8])) {
        if self.message_id.is_none() {
            out(&self.insert);
        }
        self.capturing_id = false;
        self.state = State::Body;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MID: &[u8] = b"Message-ID: <new@us>\r\n";

    fn run(input: &[u8], step: usize) -> (Vec<u8>, u32, Option<String>) {
        let mut h = HeaderScan::new(MID.to_vec());
        let mut out = Vec::new();
        for chunk in input.chunks(step.max(1)) {
            h.feed(chunk, &mut |b| out.extend_from_slice(b));
        }
        h.finish(&mut |b| out.extend_from_slice(b));
        (out, h.received(), h.message_id())
    }

    fn all_steps(input: &[u8]) -> (Vec<u8>, u32, Option<String>) {
        let first = run(input, input.len());
        for step in 1..12 {
            assert_eq!(run(input, step), first, "step {step}");
        }
        first
    }

    #[test]
    fn inserts_message_id_before_blank_line() {
        let (out, rcv, id) =
            all_steps(b"Received: a\r\nreceived: b\r\n\tmore\r\nSubject: x\r\n\r\nbody\r\n");
        assert_eq!(out, b"Received: a\r\nreceived: b\r\n\tmore\r\nSubject: x\r\nMessage-ID: <new@us>\r\n\r\nbody\r\n");
        assert_eq!((rcv, id), (2, None));
    }

    #[test]
    fn keeps_client_message_id() {
        let input = b"Subject: x\r\nMessage-Id:\r\n <abc@client>\r\n\r\nReceived: not a header\r\n";
        let (out, rcv, id) = all_steps(input);
        assert_eq!(out, input);
        assert_eq!(rcv, 0);
        assert_eq!(id.as_deref(), Some("<abc@client>"));
    }

    #[test]
    fn headers_only_message() {
        assert_eq!(
            all_steps(b"Subject: x\r\n").0,
            b"Subject: x\r\nMessage-ID: <new@us>\r\n"
        );
        assert_eq!(all_steps(b"").0, MID);
        assert_eq!(
            all_steps(b"Subject: x").0,
            b"Subject: x\r\nMessage-ID: <new@us>\r\n"
        );
    }

    #[test]
    fn body_without_blank_line() {
        let (out, _, _) = all_steps(b"Subject: x\r\nhello world\r\n");
        assert_eq!(
            out,
            b"Subject: x\r\nMessage-ID: <new@us>\r\n\r\nhello world\r\n"
        );
    }
}
