//! The acceptor: one thread waits with mio on every listening socket and hands each accepted
//! connection, with the tag of the endpoint it came in on and the peer's address, to a callback. What
//! to do with it (admit, refuse, queue for a session thread) is the caller's business. A `mio::Waker`
//! wakes it to stop, or to take a new set of endpoints ([`Rebinder`]): endpoints that stay keep their
//! socket (and its port, when the configuration said port 0), new ones are bound before anything
//! changes, and removed ones stop listening while the sessions they accepted go on.

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
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
    /// Changes the endpoints while the acceptor runs.
    pub rebinder: Rebinder<T>,
}

/// One listening socket: its endpoint's configured addresses (what identifies it across a rebind)
/// and tag.
struct Listener<T> {
    socket: TcpListener,
    configured: Vec<SocketAddr>,
    tag: T,
}

/// Sockets bound for a rebind, waiting for the acceptor thread to take them.
struct Change<T> {
    /// The endpoints that stay, by configured addresses, with their new tags.
    keep: Vec<(Vec<SocketAddr>, T)>,
    /// New sockets.
    add: Vec<Listener<T>>,
}

/// Bound listeners, ready to run.
pub struct Acceptor<T> {
    poll: Poll,
    /// By token; a removed listener leaves its slot empty.
    listeners: Vec<Option<Listener<T>>>,
    pending: Arc<Mutex<Option<Change<T>>>>,
}

/// Gives a running acceptor a new set of endpoints.
pub struct Rebinder<T> {
    /// The configured addresses of what is bound now, with the bound addresses.
    current: Mutex<Vec<(Vec<SocketAddr>, Vec<SocketAddr>)>>,
    pending: Arc<Mutex<Option<Change<T>>>>,
    waker: Arc<Waker>,
}

impl<T: Clone> Rebinder<T> {
    /// Makes `endpoints` the acceptor's set: binds the new ones first (an error changes nothing),
    /// then has the acceptor thread take them and drop the listeners no longer wanted. Returns the
    /// addresses listening afterwards, by tag.
    pub fn rebind(&self, endpoints: &[Endpoint<T>]) -> Result<Vec<(T, SocketAddr)>, ListenError> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut add = Vec::new();
        let mut keep = Vec::new();
        let mut now = Vec::new();
        let mut listening = Vec::new();
        for ep in endpoints {
            if let Some((_, bound)) = current.iter().find(|(c, _)| *c == ep.addrs) {
                keep.push((ep.addrs.clone(), ep.tag.clone()));
                listening.extend(bound.iter().map(|a| (ep.tag.clone(), *a)));
                now.push((ep.addrs.clone(), bound.clone()));
                continue;
            }
            let socks = bind_endpoint(ep)?;
            let addrs: Vec<SocketAddr> = socks.iter().map(|l| l.1).collect();
            listening.extend(addrs.iter().map(|a| (ep.tag.clone(), *a)));
            now.push((ep.addrs.clone(), addrs));
            add.extend(socks.into_iter().map(|(socket, _)| Listener {
                socket,
                configured: ep.addrs.clone(),
                tag: ep.tag.clone(),
            }));
        }
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(Change { keep, add });
        *current = now;
        self.waker.wake().map_err(ListenError::Io)?;
        Ok(listening)
    }
}

/// Binds the addresses of one endpoint. A wildcard `:port` comes as IPv6 `[::]` (dual-stack where
/// the system makes it so) and IPv4 `0.0.0.0`; the IPv4 bind may then find the port taken by the
/// dual-stack socket, which is fine.
fn bind_endpoint<T>(ep: &Endpoint<T>) -> Result<Vec<(TcpListener, SocketAddr)>, ListenError> {
    let addrs = &ep.addrs;
    let Some(&first) = addrs.first() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut last_err = None;
    for (i, addr) in addrs.iter().enumerate() {
        match TcpListener::bind(*addr) {
            Ok(l) => {
                let local = l.local_addr().map_err(ListenError::Io)?;
                out.push((l, local));
            }
            // The IPv4 half of `:port` when `[::]` already took it (dual-stack), or no IPv6.
            Err(e) if ep.wildcard && (!out.is_empty() || i == 0) && addrs.len() > 1 => {
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
    if out.is_empty() {
        return Err(ListenError::Bind {
            addr: first,
            source: last_err.unwrap_or_else(|| {
                io::Error::new(ErrorKind::AddrNotAvailable, "no address could be bound")
            }),
        });
    }
    Ok(out)
}

impl<T: Clone> Acceptor<T> {
    /// Binds every endpoint (see [`bind_endpoint`]).
    pub fn bind(endpoints: &[Endpoint<T>]) -> Result<Bound<T>, ListenError> {
        let poll = Poll::new().map_err(ListenError::Io)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE).map_err(ListenError::Io)?);
        let mut listeners = Vec::new();
        let mut bound = Vec::new();
        let mut current = Vec::new();
        for ep in endpoints {
            let socks = bind_endpoint(ep)?;
            current.push((ep.addrs.clone(), socks.iter().map(|s| s.1).collect()));
            for (mut l, local) in socks {
                let token = Token(listeners.len());
                poll.registry()
                    .register(&mut l, token, Interest::READABLE)
                    .map_err(ListenError::Io)?;
                bound.push((ep.tag.clone(), local));
                listeners.push(Some(Listener {
                    socket: l,
                    configured: ep.addrs.clone(),
                    tag: ep.tag.clone(),
                }));
            }
        }
        let pending = Arc::new(Mutex::new(None));
        Ok(Bound {
            acceptor: Acceptor {
                poll,
                listeners,
                pending: pending.clone(),
            },
            rebinder: Rebinder {
                current: Mutex::new(current),
                pending,
                waker: waker.clone(),
            },
            waker,
            addrs: bound,
        })
    }

    /// Takes a rebind: retags the listeners that stay, drops the others, registers the new ones.
    fn apply(&mut self, change: Change<T>) {
        for slot in self.listeners.iter_mut() {
            let Some(l) = slot else { continue };
            match change.keep.iter().find(|(c, _)| *c == l.configured) {
                Some((_, tag)) => l.tag = tag.clone(),
                None => {
                    let _ = self.poll.registry().deregister(&mut l.socket);
                    if let Ok(a) = l.socket.local_addr() {
                        log::info!("no longer listening on {a}");
                    }
                    *slot = None;
                }
            }
        }
        for mut l in change.add {
            let token = Token(self.listeners.len());
            match self
                .poll
                .registry()
                .register(&mut l.socket, token, Interest::READABLE)
            {
                Ok(()) => {
                    if let Ok(a) = l.socket.local_addr() {
                        log::info!("listening on {a}");
                    }
                    self.listeners.push(Some(l));
                }
                Err(e) => log::error!("acceptor: cannot watch a new listener: {e}"),
            }
        }
    }

    /// Accepts until woken by the waker with `stopping()` true, handing each connection to
    /// `on_accept` with the peer's address and its endpoint's tag. The socket is still non-blocking,
    /// so that a one-line answer written there never stalls the acceptor; the callback makes it
    /// blocking if it keeps it. A wake without `stopping()` takes a pending rebind.
    pub fn run(
        mut self,
        stopping: impl Fn() -> bool,
        mut on_accept: impl FnMut(TcpStream, SocketAddr, &T),
    ) {
        let mut events = Events::with_capacity(64);
        loop {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                log::error!("acceptor: {e}");
                return;
            }
            let mut woken = false;
            for ev in events.iter() {
                if ev.token() == WAKE {
                    woken = true;
                    continue;
                }
                let Some(Some(Listener {
                    socket: listener,
                    tag,
                    ..
                })) = self.listeners.get(ev.token().0)
                else {
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
            if woken {
                if stopping() {
                    return;
                }
                let change = self
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                if let Some(c) = change {
                    self.apply(c);
                }
            }
        }
    }
}
