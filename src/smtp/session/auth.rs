//! AUTH in the session (RFC 4954): when it is offered and allowed, the SASL exchange (`smtp::sasl`),
//! the check against the users file, and what a failure costs (a growing delay, the per-IP lockout).

use std::time::Duration;

use super::{Next, Session};
use crate::smtp::reply;
use crate::smtp::sasl::{self, Outcome, Step};

impl Session {
    pub(super) fn auth_command(
        &mut self,
        mech: &str,
        initial: Option<&str>,
        out: &mut Vec<u8>,
    ) -> Next {
        if self.helo.is_none() {
            out.extend_from_slice(reply::SEND_HELLO_FIRST);
            return self.error(out);
        }
        if self.auth_user.is_some() {
            out.extend_from_slice(reply::AUTH_ALREADY);
            return self.error(out);
        }
        if self.tx.is_some() {
            out.extend_from_slice(reply::AUTH_IN_TRANSACTION);
            return self.error(out);
        }
        if !(self.vs.security.basic && self.users.is_some()) {
            out.extend_from_slice(reply::AUTH_NOT_AVAILABLE);
            return self.error(out);
        }
        if self.tls.is_none() && !self.vs.security.plaintext_auth {
            out.extend_from_slice(reply::AUTH_NEEDS_TLS);
            return self.error(out);
        }
        if self.limiter.as_ref().is_some_and(|l| l.locked(self.peer)) {
            out.extend_from_slice(reply::AUTH_LOCKED);
            return Next::Continue;
        }
        let outcome = sasl::start(mech, initial);
        self.auth_outcome(outcome, out)
    }

    /// The client's answer to a 334 challenge.
    pub(super) fn auth_response(&mut self, step: Step, line: &[u8], out: &mut Vec<u8>) -> Next {
        let outcome = sasl::respond(step, line);
        self.auth_outcome(outcome, out)
    }

    fn auth_outcome(&mut self, outcome: Outcome, out: &mut Vec<u8>) -> Next {
        match outcome {
            Outcome::Challenge(line, step) => {
                out.extend_from_slice(line);
                self.auth = Some(step);
                Next::Continue
            }
            Outcome::Credentials { user, password } => self.auth_check(&user, &password, out),
            Outcome::OtherIdentity => self.auth_failed(out),
            Outcome::Cancelled => {
                out.extend_from_slice(reply::AUTH_CANCELLED);
                self.error(out)
            }
            Outcome::BadInput => {
                out.extend_from_slice(reply::AUTH_BAD_INPUT);
                self.error(out)
            }
            Outcome::UnknownMechanism => {
                out.extend_from_slice(reply::AUTH_UNKNOWN_MECHANISM);
                self.error(out)
            }
        }
    }

    fn auth_check(&mut self, user: &str, pass: &str, out: &mut Vec<u8>) -> Next {
        let ok = self.users.as_ref().is_some_and(|u| u.verify(user, pass));
        if ok {
            self.auth_user = Some(user.to_string());
            out.extend_from_slice(reply::AUTH_OK);
            log::info!(
                "SMTPSVC{}: {} authenticated as {user}",
                self.vs.instance,
                self.peer
            );
            Next::Continue
        } else {
            // The name tried is not logged: users sometimes type a password there.
            log::info!(
                "SMTPSVC{}: failed AUTH from {}",
                self.vs.instance,
                self.peer
            );
            self.auth_failed(out)
        }
    }

    fn auth_failed(&mut self, out: &mut Vec<u8>) -> Next {
        self.auth_failures += 1;
        if let Some(l) = &self.limiter {
            l.failure(self.peer);
        }
        // A growing delay per failure in this session: 1 s, 2 s, 4 s … at most 8 s.
        self.penalty = Duration::from_secs(1u64 << (self.auth_failures - 1).min(3));
        out.extend_from_slice(reply::AUTH_FAILED);
        self.error(out)
    }
}
