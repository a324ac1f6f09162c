//! The SASL exchanges of AUTH (RFC 4954) that mailroot offers, PLAIN (RFC 4616) and LOGIN, as a
//! little state machine without I/O or policy: it turns the client's base64 lines into challenges or
//! a user name and password. Whether they are right, and what a failure costs, is the session's
//! business (`session::auth`).

use base64ct::{Base64, Encoding};

/// Where an exchange stands, waiting for the client's next line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// PLAIN: waiting for the response after `334 `.
    Plain,
    /// LOGIN: waiting for the user name.
    LoginUser,
    /// LOGIN: waiting for the password of this user.
    LoginPassword(String),
}

/// What a line (or the AUTH command) comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send this `334` challenge line and wait at `Step`.
    Challenge(&'static [u8], Step),
    /// The client gave a user name and a password.
    Credentials {
        /// The authentication identity.
        user: String,
        /// The password.
        password: String,
    },
    /// PLAIN named an authorization identity other than the user: refused like a wrong password.
    OtherIdentity,
    /// The client cancelled with `*`.
    Cancelled,
    /// Not base64, too long, not UTF-8, or not the mechanism's shape.
    BadInput,
    /// A mechanism that is not offered.
    UnknownMechanism,
}

/// The longest decoded response accepted.
const MAX_DECODED: usize = 1024;

/// Starts an exchange for `AUTH <mechanism> [initial-response]`.
pub fn start(mechanism: &str, initial: Option<&str>) -> Outcome {
    let plain = mechanism.eq_ignore_ascii_case("PLAIN");
    let login = mechanism.eq_ignore_ascii_case("LOGIN");
    match (plain, login, initial) {
        (true, _, None) => Outcome::Challenge(b"334 \r\n", Step::Plain),
        (true, _, Some(r)) => respond(Step::Plain, r.as_bytes()),
        (_, true, None) => Outcome::Challenge(b"334 VXNlcm5hbWU6\r\n", Step::LoginUser),
        (_, true, Some(r)) => respond(Step::LoginUser, r.as_bytes()),
        _ => Outcome::UnknownMechanism,
    }
}

/// The client's answer to a challenge at `step` (or an initial response).
pub fn respond(step: Step, line: &[u8]) -> Outcome {
    if line == b"*" {
        return Outcome::Cancelled;
    }
    // "=" is an empty initial response (RFC 4954 §4).
    let decoded = if line == b"=" {
        Some(Vec::new())
    } else {
        decode(line)
    };
    let Some(bytes) = decoded.filter(|b| b.len() <= MAX_DECODED) else {
        return Outcome::BadInput;
    };
    match step {
        Step::Plain => {
            // authzid NUL authcid NUL passwd
            let mut parts = bytes.split(|b| *b == 0);
            let (Some(authz), Some(user), Some(pass), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Outcome::BadInput;
            };
            let (Ok(authz), Ok(user), Ok(pass)) = (
                std::str::from_utf8(authz),
                std::str::from_utf8(user),
                std::str::from_utf8(pass),
            ) else {
                return Outcome::BadInput;
            };
            if !authz.is_empty() && authz != user {
                return Outcome::OtherIdentity;
            }
            Outcome::Credentials {
                user: user.to_string(),
                password: pass.to_string(),
            }
        }
        Step::LoginUser => match String::from_utf8(bytes) {
            Ok(user) => Outcome::Challenge(b"334 UGFzc3dvcmQ6\r\n", Step::LoginPassword(user)),
            Err(_) => Outcome::BadInput,
        },
        Step::LoginPassword(user) => match String::from_utf8(bytes) {
            Ok(password) => Outcome::Credentials { user, password },
            Err(_) => Outcome::BadInput,
        },
    }
}

/// Standard base64 with padding, as SASL uses it (RFC 4954 §4); `None` when malformed.
pub fn decode(s: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(s).ok()?;
    Base64::decode_vec(text).ok()
}

/// Standard base64 with padding.
pub fn encode(bytes: &[u8]) -> String {
    Base64::encode_string(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_both_ways() {
        assert_eq!(encode(b"\0u\0p"), "AHUAcA==");
        assert_eq!(decode(b"AHUAcA==").as_deref(), Some(&b"\0u\0p"[..]));
        assert_eq!(decode(b"AHUAcA"), None, "padding is required");
        assert_eq!(decode(b"AH*AcA=="), None);
        assert_eq!(decode(b""), Some(Vec::new()));
    }

    #[test]
    fn plain() {
        assert_eq!(
            start("plain", None),
            Outcome::Challenge(b"334 \r\n", Step::Plain)
        );
        let creds = Outcome::Credentials {
            user: "u".into(),
            password: "p".into(),
        };
        assert_eq!(start("PLAIN", Some(&encode(b"\0u\0p"))), creds);
        assert_eq!(respond(Step::Plain, encode(b"u\0u\0p").as_bytes()), creds);
        assert_eq!(
            respond(Step::Plain, encode(b"admin\0u\0p").as_bytes()),
            Outcome::OtherIdentity
        );
        assert_eq!(
            respond(Step::Plain, encode(b"\0u").as_bytes()),
            Outcome::BadInput
        );
        assert_eq!(
            respond(Step::Plain, encode(b"\0u\0p\0x").as_bytes()),
            Outcome::BadInput
        );
        assert_eq!(respond(Step::Plain, b"=="), Outcome::BadInput);
        assert_eq!(respond(Step::Plain, b"="), Outcome::BadInput, "empty");
        assert_eq!(respond(Step::Plain, b"*"), Outcome::Cancelled);
        let long = encode(&[b'a'; MAX_DECODED + 1]);
        assert_eq!(respond(Step::Plain, long.as_bytes()), Outcome::BadInput);
    }

    #[test]
    fn login() {
        let Outcome::Challenge(c, step) = start("LOGIN", None) else {
            panic!("a challenge")
        };
        assert_eq!(c, b"334 VXNlcm5hbWU6\r\n");
        let Outcome::Challenge(c, step) = respond(step, encode(b"u").as_bytes()) else {
            panic!("a challenge")
        };
        assert_eq!(c, b"334 UGFzc3dvcmQ6\r\n");
        assert_eq!(
            respond(step, encode(b"p").as_bytes()),
            Outcome::Credentials {
                user: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(
            respond(Step::LoginUser, encode(&[0xff]).as_bytes()),
            Outcome::BadInput
        );
        assert_eq!(start("CRAM-MD5", None), Outcome::UnknownMechanism);
    }
}
