//! The acceptor: one thread waits on every binding of every virtual server with mio, applies
//! connection control and MaxConnections right there (a refused client gets its one-line answer
//! without costing a session thread), and hands the rest to the pool. A `mio::Waker` stops it.

use std::io::{self, ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::ipnet::canonical;
use crate::policy::access;
use crate::server::{Instance, Job, StartError};
use crate::smtp::reply;

const WAKE: Token = Token(usize::MAX);

/// What [`Acceptor::bind`] returns: the acceptor, the waker that stops it, the addresses bound.
pub struct Bound {
    /// Ready to run.
    pub acceptor: Acceptor,
    /// Wakes the acceptor to stop it.
    pub waker: Arc<Waker>,
    /// Each instance's bound addresses (port 0 resolved).
    pub addrs: Vec<(u32, SocketAddr)>,
}

/// Bound listeners, ready to run.
pub struct Acceptor {
    poll: Poll,
    listeners: Vec<(TcpListener, Arc<Instance>, bool)>,
}

impl Acceptor {
    /// Binds every binding of every instance. `:port` binds IPv6 `[::]` (dual-stack where the system
    /// makes it so) and IPv4 `0.0.0.0`; the IPv4 bind may then find the port taken by the dual-stack
    /// socket, which is fine.
    pub fn bind(instances: &[Arc<Instance>]) -> Result<Bound, StartError> {
        let poll = Poll::new().map_err(StartError::Io)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE).map_err(StartError::Io)?);
        let mut listeners = Vec::new();
        let mut bound = Vec::new();
        for inst in instances {
            let plain = inst.vs.bindings.iter().map(|b| (b, false));
            let secure = inst.vs.security.secure_bindings.iter().map(|b| (b, true));
            for (b, implicit) in plain.chain(secure) {
                let addrs = b.socket_addrs();
                let wildcard = b.ip.is_none();
                let mut any = false;
                let mut last_err = None;
                for (i, addr) in addrs.iter().enumerate() {
                    match TcpListener::bind(*addr) {
                        Ok(mut l) => {
                            let local = l.local_addr().map_err(StartError::Io)?;
                            let token = Token(listeners.len());
                            poll.registry()
                                .register(&mut l, token, Interest::READABLE)
                                .map_err(StartError::Io)?;
                            bound.push((inst.vs.instance, local));
                            listeners.push((l, inst.clone(), implicit));
                            any = true;
                        }
                        // The IPv4 half of `:port` when `[::]` already took it (dual-stack), or no IPv6.
                        Err(e) if wildcard && (any || i == 0) && addrs.len() > 1 => {
                            last_err = Some(e)
                        }
                        Err(source) => {
                            return Err(StartError::Bind {
                                addr: *addr,
                                source,
                            });
                        }
                    }
                }
                if !any {
                    return Err(StartError::Bind {
                        addr: addrs[0],
                        source: last_err.unwrap_or_else(|| {
                            io::Error::new(ErrorKind::AddrNotAvailable, "no address could be bound")
                        }),
                    });
                }
            }
        }
        Ok(Bound {
            acceptor: Acceptor { poll, listeners },
            waker,
            addrs: bound,
        })
    }

    /// Accepts until woken by the waker; `submit` hands a job to the pool.
    pub fn run(mut self, submit: impl Fn(Job)) {
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
                let Some((listener, inst, implicit)) = self.listeners.get(ev.token().0) else {
                    continue;
                };
                loop {
                    match listener.accept() {
                        Ok((stream, peer)) => admit(stream, peer, inst, *implicit, &submit),
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

fn admit(
    mut stream: mio::net::TcpStream,
    peer: SocketAddr,
    inst: &Arc<Instance>,
    implicit_tls: bool,
    submit: &impl Fn(Job),
) {
    let ip = canonical(peer.ip());
    let vs = &inst.vs;
    // The socket is still non-blocking: these one-line refusals never stall the acceptor.
    // With name entries in IPGrant/IPDeny the check waits for the client's name: the session thread
    // looks it up and decides (the acceptor never waits for DNS).
    if !access::needs_name(vs) && !access::may_connect(vs, ip, None) {
        log::info!(
            "SMTPSVC{}: connection from {ip} refused by connection control",
            vs.instance
        );
        let _ = stream.write(reply::ACCESS_DENIED);
        return;
    }
    if inst.active.fetch_add(1, Ordering::AcqRel) >= vs.max_connections as usize {
        inst.active.fetch_sub(1, Ordering::AcqRel);
        log::warn!(
            "SMTPSVC{}: connection from {ip} refused: MaxConnections ({}) reached",
            vs.instance,
            vs.max_connections
        );
        let _ = stream.write(reply::TOO_MANY_CONNECTIONS);
        return;
    }
    // MaxConnectionsPerIp, as Postfix's smtpd_client_connection_count_limit exempts mynetworks.
    {
        let mut m = inst.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= vs.security.max_per_ip && !access::may_relay(vs, ip) {
            drop(m);
            inst.active.fetch_sub(1, Ordering::AcqRel);
            log::warn!(
                "SMTPSVC{}: connection from {ip} refused: MaxConnectionsPerIp ({}) reached",
                vs.instance,
                vs.security.max_per_ip
            );
            let _ = stream.write(reply::TOO_MANY_FROM_IP);
            return;
        }
        *n += 1;
    }
    let std_stream: std::net::TcpStream = stream.into();
    if std_stream.set_nonblocking(false).is_err() {
        inst.active.fetch_sub(1, Ordering::AcqRel);
        if let Some(n) = inst
            .per_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&ip)
        {
            *n = n.saturating_sub(1);
        }
        return;
    }
    // From here the session's guard gives both slots back.
    submit(Job {
        stream: std_stream,
        peer,
        instance: inst.clone(),
        implicit_tls,
    });
}
