//! The mailroot on disk: the store (the only way mail reaches the disk: the durable commit into Queue
//! and Drop, state files, Badmail), its group commit, the envelope block at the top of each file, the
//! Pickup folder (and `submit`, how `sendmail` writes into it) and Badmail reports. docs/mailroot.md describes every file.

pub mod badmail;
pub mod block;
pub mod commit;
pub mod error;
pub mod pickup;
pub mod pickup_file;
pub mod queue;
pub mod state;
pub mod store;
pub mod submit;
