//! OAuth 2.0 toward the next hop (SASL XOAUTH2 for Microsoft 365 and Google Workspace): `grant`
//! builds each grant's token request and reads the answer (client credentials with a secret or a
//! certificate's client assertion, a Google service account's JWT bearer grant, a refresh token),
//! `jwt` signs the assertions, `http` posts to the token endpoint over rustls, and `cache` keeps one
//! token per credential, refreshed before it expires. The settings are `config::outbound`'s; the
//! SMTP exchange that spends the token is `delivery::client`'s. docs/microsoft365.md and
//! docs/google.md tell the admin's side.

pub mod cache;
pub mod grant;
pub mod http;
pub mod jwt;

pub use cache::{AccessToken, Credential, TokenError, Tokens};

/// The SASL XOAUTH2 initial response, base64: `user=<mailbox>^Aauth=Bearer <token>^A^A`.
pub fn xoauth2(user: &str, token: &AccessToken) -> String {
    let raw = format!("user={user}\x01auth=Bearer {}\x01\x01", token.expose());
    crate::smtp::sasl::encode(raw.as_bytes())
}
