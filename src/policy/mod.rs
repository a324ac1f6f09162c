//! Policy, separate from mechanism: decisions made from the settings. Who may connect and who may
//! relay by address ([`access`], asked when a client connects), where a recipient may
//! go ([`relay`], asked by the session at RCPT), the AUTH brute-force brake ([`auth`]) and the users
//! who may AUTH ([`users`]). The asker gets a decision; it never reads the lists itself.

pub mod access;
pub mod auth;
pub mod relay;
pub mod users;
