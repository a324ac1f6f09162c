//! Sockets and threads, below any SMTP: one acceptor over every listening socket that hands each
//! connection to a callback (`listener`), a pool of threads (`pool`), a socket plain or inside TLS
//! (`stream`), all of TLS (`tls`), and the PROXY protocol header a load balancer writes first
//! (`proxy`).

pub mod listener;
pub mod pool;
pub mod proxy;
pub mod stream;
pub mod tls;
