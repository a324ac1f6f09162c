//! Sockets and threads, below any SMTP: one acceptor over every listening socket that hands each
//! connection to a callback (`listener`), a pool of threads (`pool`), a socket plain or inside TLS
//! (`stream`), and all of TLS (`tls`).

pub mod listener;
pub mod pool;
pub mod stream;
pub mod tls;
