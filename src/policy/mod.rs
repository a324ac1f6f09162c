//! Policy, separate from mechanism: who may connect and who may relay, decided from the settings.
//! The session asks; it never reads the lists itself.

pub mod access;
pub mod auth;
pub mod relay;
pub mod users;
