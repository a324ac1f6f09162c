//! Sockets and threads: one acceptor over every binding (`listener`), a pool of session threads (`pool`).

pub mod listener;
pub mod pool;
pub mod stream;
pub mod tls;
