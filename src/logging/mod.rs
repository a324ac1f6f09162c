//! Logs: the IIS W3C extended protocol log (`w3c`), and the server's own log (`server`: where the
//! `log` crate's lines go: a console, journald, or ServerLogFile).

pub mod server;
pub mod w3c;
