//! Logs: the IIS W3C extended protocol log (`w3c`). Diagnostics go through the `log` crate.

pub mod w3c;
