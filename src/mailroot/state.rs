//! The delivery state of one queued message, `Queue/<id>.sta`: how many attempts were made, when the
//! next one is due, whether the sender was warned of the delay, and each recipient's outcome. It is
//! rewritten (atomically, through `store`) after every delivery step, so a restart never sends again to
//! a recipient that was already accepted and never forgets one that was not. Plain text, one fact a line:
//!
//! ```text
//! attempts: 2
//! next-attempt: 1763800800
//! delay-notified: 0
//! rcpt: done r@example.org | 250 2.0.0 Ok: queued | mx.example.org
//! rcpt: pending s@example.org | 451 4.3.0 Try again later | mx.example.org
//! rcpt: failed t@example.org | 550 5.1.1 No such user | mx.example.org
//! ```
//!
//! A message an administrator holds (`mailroot queue hold`) has `held-since: <unix seconds>`; the time
//! it spent held adds up in `held-total: <seconds>`, which its expiry does not count. Both lines are
//! written only when they are not zero.

use std::fmt::Write as _;

/// Where a recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not delivered yet (never tried, or a temporary failure).
    Pending,
    /// Accepted by the next hop (or written to Drop).
    Done,
    /// Permanently failed; a non-delivery report is due or was sent.
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Done => "done",
            Status::Failed => "failed",
        }
    }
}

/// One recipient's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptState {
    /// The address (as in the x-receiver line).
    pub address: String,
    /// Where it stands.
    pub status: Status,
    /// The last reply or error, one line (empty before the first attempt).
    pub reply: String,
    /// The host that gave it (empty when none).
    pub remote: String,
    /// The next hop took the DSN request over (it offered DSN and got NOTIFY/ORCPT), so no
    /// "relayed" notice is due from us (RFC 3461 §5.2.2).
    pub dsn_passed: bool,
}

/// The whole state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next_attempt: u64,
    /// Whether a delay notification was sent.
    pub delay_notified: bool,
    /// Outcomes, by address.
    pub recipients: Vec<RcptState>,
    /// Unix seconds since when an administrator holds it (0: not held). Held mail is never
    /// attempted.
    pub held_since: u64,
    /// Seconds it was held before (not counted toward its expiry).
    pub held_total: u64,
}

impl State {
    /// A fresh state for `addresses`, all pending.
    pub fn new<'a>(addresses: impl IntoIterator<Item = &'a str>) -> State {
        State {
            recipients: addresses
                .into_iter()
                .map(|a| RcptState {
                    address: a.to_string(),
                    status: Status::Pending,
                    reply: String::new(),
                    remote: String::new(),
                    dsn_passed: false,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// The outcome recorded for `address`.
    pub fn get(&self, address: &str) -> Option<&RcptState> {
        self.recipients.iter().find(|r| r.address == address)
    }

    /// Records an outcome.
    pub fn set(&mut self, address: &str, status: Status, reply: &str, remote: &str) {
        let clean = |s: &str| s.replace(['|', '\r', '\n'], " ");
        match self.recipients.iter_mut().find(|r| r.address == address) {
            Some(r) => {
                r.status = status;
                r.reply = clean(reply);
                r.remote = clean(remote);
            }
            None => self.recipients.push(RcptState {
                address: address.to_string(),
                status,
                reply: clean(reply),
                remote: clean(remote),
                dsn_passed: false,
            }),
        }
    }

    /// Records that the next hop took over the DSN request for `address`.
    pub fn set_dsn_passed(&mut self, address: &str) {
        if let Some(r) = self.recipients.iter_mut().find(|r| r.address == address) {
            r.dsn_passed = true;
        }
    }

    /// Whether an administrator holds it.
    pub fn held(&self) -> bool {
        self.held_since != 0
    }

    /// Holds it from `now` (unix seconds); a message already held stays held since then.
    pub fn hold(&mut self, now: u64) {
        if self.held_since == 0 {
            self.held_since = now.max(1);
        }
    }

    /// Releases it at `now`: the time held joins `held_total`, and it is due at once.
    pub fn release(&mut self, now: u64) {
        if self.held_since != 0 {
            self.held_total += now.saturating_sub(self.held_since);
            self.held_since = 0;
        }
        self.next_attempt = 0;
    }

    /// All the time it was held, up to `now` (unix seconds): its expiry leaves it out.
    pub fn held_for(&self, now: u64) -> u64 {
        let current = if self.held_since == 0 {
            0
        } else {
            now.saturating_sub(self.held_since)
        };
        self.held_total + current
    }

    /// Whether no recipient is pending.
    pub fn finished(&self) -> bool {
        self.recipients.iter().all(|r| r.status != Status::Pending)
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(128 + 80 * self.recipients.len());
        let _ = writeln!(s, "attempts: {}", self.attempts);
        let _ = writeln!(s, "next-attempt: {}", self.next_attempt);
        let _ = writeln!(s, "delay-notified: {}", u8::from(self.delay_notified));
        if self.held_since != 0 {
            let _ = writeln!(s, "held-since: {}", self.held_since);
        }
        if self.held_total != 0 {
            let _ = writeln!(s, "held-total: {}", self.held_total);
        }
        for r in &self.recipients {
            let dsn = if r.dsn_passed { " | dsn" } else { "" };
            let _ = writeln!(
                s,
                "rcpt: {} {} | {} | {}{dsn}",
                r.status.as_str(),
                escape(&r.address),
                r.reply,
                r.remote
            );
        }
        s
    }

    /// Parses the file's text; unknown lines are errors (the file is ours).
    pub fn parse(text: &str) -> Result<State, String> {
        let mut st = State::default();
        for (i, line) in text.lines().enumerate() {
            // Only the line ending goes: an empty reply or host leaves trailing separators.
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once(": ")
                .ok_or_else(|| format!("line {}: `{line}`", i + 1))?;
            match k {
                "attempts" => {
                    st.attempts = v.parse().map_err(|_| format!("line {}: attempts", i + 1))?
                }
                "next-attempt" => {
                    st.next_attempt = v
                        .parse()
                        .map_err(|_| format!("line {}: next-attempt", i + 1))?
                }
                "delay-notified" => st.delay_notified = v == "1",
                "held-since" => {
                    st.held_since = v
                        .parse()
                        .map_err(|_| format!("line {}: held-since", i + 1))?
                }
                "held-total" => {
                    st.held_total = v
                        .parse()
                        .map_err(|_| format!("line {}: held-total", i + 1))?
                }
                "rcpt" => {
                    let mut parts = v.splitn(4, " | ");
                    let head = parts.next().unwrap_or("");
                    let (status, address) = head
                        .split_once(' ')
                        .ok_or_else(|| format!("line {}: rcpt", i + 1))?;
                    let status = match status {
                        "pending" => Status::Pending,
                        "done" => Status::Done,
                        "failed" => Status::Failed,
                        _ => return Err(format!("line {}: status `{status}`", i + 1)),
                    };
                    st.recipients.push(RcptState {
                        address: unescape(address),
                        status,
                        reply: parts.next().unwrap_or("").to_string(),
                        remote: parts.next().unwrap_or("").to_string(),
                        dsn_passed: parts.next() == Some("dsn"),
                    });
                }
                _ => return Err(format!("line {}: unknown `{k}`", i + 1)),
            }
        }
        Ok(st)
    }
}

/// Addresses may hold `|` (in a quoted local part), the file's separator: `%` and `|` are written
/// as `%25` and `%7C`.
fn escape(address: &str) -> String {
    address.replace('%', "%25").replace('|', "%7C")
}

fn unescape(s: &str) -> String {
    s.replace("%7C", "|").replace("%25", "%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut s = State::new(["a@x.test", "b@x.test", "c@x.test"]);
        s.attempts = 2;
        s.next_attempt = 1_763_800_800;
        s.set(
            "a@x.test",
            Status::Done,
            "250 2.0.0 Ok | queued",
            "mx.x.test",
        );
        s.set("c@x.test", Status::Failed, "550 5.1.1 No\r\nsuch", "");
        s.set_dsn_passed("a@x.test");
        let t = s.to_text();
        assert!(
            t.contains("rcpt: done a@x.test | 250 2.0.0 Ok   queued | mx.x.test | dsn\n"),
            "{t}"
        );
        let back = State::parse(&t).unwrap();
        assert_eq!(back, s);
        assert!(!back.finished());
        assert_eq!(
            back.get("b@x.test").map(|r| r.status),
            Some(Status::Pending)
        );
        assert!(State::parse("bogus: 1\n").is_err());
    }

    #[test]
    fn held_time_is_kept_and_added_up() {
        let mut s = State::new(["a@x.test"]);
        s.next_attempt = 500;
        assert!(!s.to_text().contains("held"), "no lines while never held");
        s.hold(1000);
        s.hold(1500);
        assert!(s.held());
        let t = s.to_text();
        assert!(t.contains("held-since: 1000\n"), "{t}");
        assert_eq!(State::parse(&t).unwrap(), s);
        assert_eq!(s.held_for(1600), 600);
        s.release(1600);
        assert!(!s.held());
        assert_eq!(s.next_attempt, 0, "due at once");
        assert_eq!(s.held_for(9999), 600);
        s.hold(2000);
        s.release(2100);
        let back = State::parse(&s.to_text()).unwrap();
        assert_eq!(back.held_total, 700);
        assert!(!back.held());
    }

    #[test]
    fn addresses_with_the_separator_survive() {
        let mut st = State::new(["\"a | b%7C\"@b.test"]);
        st.set(
            "\"a | b%7C\"@b.test",
            Status::Done,
            "250 2.0.0 Ok",
            "mx.b.test",
        );
        let back = State::parse(&st.to_text()).unwrap();
        assert_eq!(back, st);
    }
}
