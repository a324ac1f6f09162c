//! The SMTP protocol, without I/O: command framing and parsing, addresses, replies, the session state
//! machine, the DATA terminator scanner, the header inspector and the trace header.

pub mod address;
pub mod base64;
pub mod command;
pub mod data;
pub mod headers;
pub mod received;
pub mod reply;
pub mod session;
