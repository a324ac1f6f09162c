//! The acceptor: one thread waits with mio on every listening socket and hands each accepted
//! connection, with the tag of the endpoint it came in on and the peer's address, to a callback. What
//! to do with it (admit, refuse, queue for a session thread) is the caller's business. A `mio::Waker`
//! stops it.

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

const WAKE: Token = Token(usize::MAX);

/// Why the acceptor could not be set up.
#[derive(Debug)]
pub enum ListenError {
    /// An address could not be bound.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The system's error.
        source: io::Error,
    },
    /// The poll, its waker, or a registration failed.
    Io(io::Error),
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            ListenError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ListenError {}

/// One endpoint to listen on.
#[derive(Debug, Clone)]
pub struct Endpoint<T> {
    /// Its addresses (one, or for a wildcard `:port` the IPv6 then the IPv4 one).
    pub addrs: Vec<SocketAddr>,
    /// A wildcard binding: an address after the first may fail to bind (see [`Acceptor::bind`]).
    pub wildcard: bool,
    /// What the callback gets with each connection accepted here.
    pub tag: T,
}

/// What [`Acceptor::bind`] returns: the acceptor, the waker that stops it, the addresses bound.
pub struct Bound<T> {
    /// Ready to run.
    pub acceptor: Acceptor<T>,
    /// Wakes the acceptor to stop it.
    pub waker: Arc<Waker>,
    /// Each listening socket's tag and address (port 0 resolved).
    pub addrs: Vec<(T, SocketAddr)>,
}

/// Bound listeners, ready to run.
pub struct Acceptor<T> {
    poll: Poll,
    listeners: Vec<(TcpListener, T)>,
}

impl<T: Clone> Acceptor<T> {
    /// Binds every endpoint. A wildcard `:port` comes as IPv6 `[::]` (dual-stack where the system
    /// makes it so) and IPv4 `0.0.0.0`; the IPv4 bind may then find the port taken by the dual-stack
    /// socket, which is fine.
    pub fn bind(endpoints: &[Endpoint<T>]) -> Result<Bound<T>, ListenError> {
        let poll = Poll::new().map_err(ListenError::Io)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE).map_err(ListenError::Io)?);
        let mut listeners = Vec::new();
        let mut bound = Vec::new();
        for ep in endpoints {
            let addrs = &ep.addrs;
            let Some(&first) = addrs.first() else {
                continue;
            };
            let mut any = false;
            let mut last_err = None;
            for (i, addr) in addrs.iter().enumerate() {
                match TcpListener::bind(*addr) {
                    Ok(mut l) => {
                        let local = l.local_addr().map_err(ListenError::Io)?;
                        let token = Token(listeners.len());
                        poll.registry()
                            .register(&mut l, token, Interest::READABLE)
                            .map_err(ListenError::Io)?;
                        bound.push((ep.tag.clone(), local));
                        listeners.push((l, ep.tag.clone()));
                        any = true;
                    }
                    // The IPv4 half of `:port` when `[::]` already took it (dual-stack), or no IPv6.
                    Err(e) if ep.wildcard && (any || i == 0) && addrs.len() > 1 => {
                        last_err = Some(e)
                    }
                    Err(source) => {
                        return Err(ListenError::Bind {
                            addr: *addr,
                            source,
                        });
                    }
                }
            }
            if !any {
                return Err(ListenError::Bind {
                    addr: first,
                    source: last_err.unwrap_or_else(|| {
                        io::Error::new(ErrorKind::AddrNotAvailable, "no address could be bound")
                    }),
                });
            }
        }
        Ok(Bound {
            acceptor: Acceptor { poll, listeners },
            waker,
            addrs: bound,
        })
    }

    /// Accepts until woken by the waker, handing each connection to `on_accept` with the peer's
    /// address and its endpoint's tag. The socket is still non-blocking, so that a one-line answer
    /// written there never stalls the acceptor; the callback makes it blocking if it keeps it.
    pub fn run(mut self, mut on_accept: impl FnMut(TcpStream, SocketAddr, &T)) {
        let mut events = Events::with_capacity(64);
        loop {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                log::error!("acceptor: {e}");
                return;
            }
            for ev in events.iter() {
                if ev.token() == WAKE {
                    return;
                }
                let Some((listener, tag)) = self.listeners.get(ev.token().0) else {
                    continue;
                };
                loop {
                    match listener.accept() {
                        Ok((stream, peer)) => on_accept(stream.into(), peer, tag),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning on a readable listener.
                            log::warn!("accept: {e}");
                            std::thread::sleep(Duration::from_millis(50));
                            break;
                        }
                    }
                }
            }
        }
    }
}
