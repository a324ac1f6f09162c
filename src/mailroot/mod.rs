//! The mailroot on disk: identifiers, the envelope block at the top of each file, and the durable
//! commit into Queue and Drop. docs/mailroot.md describes every file.

pub mod badmail;
pub mod commit;
pub mod envelope;
pub mod id;
pub mod pickup;
pub mod pickup_file;
pub mod state;
pub mod store;
