//! The running SMTP virtual servers: binds, starts the acceptor, the session pool and the protocol
//! log, and stops them in order. `connection` drives one session; `intake` is a message's body pipeline.

pub mod connection;
pub mod intake;
pub mod stream;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{Config, VirtualServer};
use crate::delivery::engine::{Inbox, Service};
use crate::logging::w3c::{self, Logger};
use crate::mailroot::error::StoreError;
use crate::mailroot::pickup;
use crate::mailroot::store::Store;
use crate::net::listener::{Acceptor, Bound};
use crate::net::pool::Pool;
use crate::policy::auth::Limiter;
use crate::policy::users::Users;

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    /// A mailroot folder could not be created or cleaned.
    Store(StoreError),
    /// A binding could not be bound.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The system's error.
        source: std::io::Error,
    },
    /// Anything else at start-up (poll, threads).
    Io(std::io::Error),
    /// The delivery side could not start (DNS configuration, TLS trust roots).
    Delivery(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Store(e) => write!(f, "{e}"),
            StartError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            StartError::Io(e) => write!(f, "{e}"),
            StartError::Delivery(e) => write!(f, "delivery: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// One virtual server at run time: its settings, its store and its session count.
#[derive(Debug)]
pub struct Instance {
    /// Settings.
    pub vs: Arc<VirtualServer>,
    /// Where its mail is committed.
    pub store: Store,
    /// Sessions open now (MaxConnections).
    pub active: AtomicUsize,
    /// Sessions open now per client address (MaxConnectionsPerIp).
    pub per_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>,
    /// Who may AUTH.
    pub users: Arc<Users>,
    /// Failed-login brakes.
    pub auth_limiter: Arc<Limiter>,
    /// The resolver for client names (EnableReverseDnsLookup).
    pub dns: Option<Arc<crate::delivery::dns::Dns>>,
}

/// State every session sees.
#[derive(Debug)]
pub struct Shared {
    stopping: Arc<AtomicBool>,
    /// The protocol log.
    pub logger: Logger,
}

impl Shared {
    /// Whether a shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// A connection handed from the acceptor to a session thread.
pub struct Job {
    /// The client socket, blocking.
    pub stream: std::net::TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// The virtual server it connected to.
    pub instance: Arc<Instance>,
    /// It came in on a SecureBindings endpoint: TLS from the first byte.
    pub implicit_tls: bool,
}

/// Gives the session slot back however the session ends.
struct ActiveGuard(Arc<Instance>, std::net::IpAddr);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        let mut m = self.0.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Stops a running server from another thread (a signal handler). It holds only the flag and the
/// waker, so a handler that outlives the server keeps nothing else (such as the log writer) alive.
#[derive(Clone)]
pub struct Stopper {
    stopping: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
}

impl Stopper {
    /// Begins the shutdown: no new connections; idle sessions get 421.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

/// The running server.
pub struct Server {
    shared: Arc<Shared>,
    instances: Vec<Arc<Instance>>,
    stopper: Stopper,
    acceptor: Option<JoinHandle<()>>,
    log_thread: Option<JoinHandle<()>>,
    bound: Vec<(u32, SocketAddr)>,
    services: Vec<Service>,
    /// The Pickup threads, one per delivery service, and what stops them.
    pickups: Vec<JoinHandle<()>>,
    pickup_stop: Arc<AtomicBool>,
}

impl Server {
    /// Opens the mailroots (cleaning SortTemp), starts the protocol log, binds and starts accepting.
    pub fn start(config: &Config) -> Result<Server, StartError> {
        let mut instances = Vec::new();
        let mut services: Vec<(std::path::PathBuf, Store, Service)> = Vec::new();
        let pickup_stop = Arc::new(AtomicBool::new(false));
        let mut pickups = Vec::new();
        for vs in &config.servers {
            // One delivery service per Queue folder; virtual servers sharing a mailroot share it (the
            // first one's delivery settings apply) and its store, which hands Queue mail to it.
            let shared = services
                .iter()
                .find(|(q, _, _)| *q == vs.dirs.queue)
                .map(|(_, s, _)| s.clone());
            let inbox = Inbox::new();
            let handover = shared.is_none().then(|| inbox.handover());
            let store = Store::open(&vs.dirs, handover).map_err(StartError::Store)?;
            let cleaned = store.clean_sort_temp().map_err(StartError::Store)?;
            if cleaned > 0 {
                log::warn!(
                    "SMTPSVC{}: removed {cleaned} unfinished file(s) from {} (messages that were never acknowledged)",
                    vs.instance,
                    vs.dirs.sort_temp.display()
                );
            }
            let store = match shared {
                Some(s) => s,
                None => {
                    let service = Service::start(vs.clone(), store.clone(), inbox)
                        .map_err(StartError::Delivery)?;
                    pickups.push(
                        pickup::start(vs.clone(), store.clone(), pickup_stop.clone())
                            .map_err(StartError::Io)?,
                    );
                    services.push((vs.dirs.queue.clone(), store.clone(), service));
                    store
                }
            };
            let users = Users::open(&vs.security.users_file)
                .map_err(|e| StartError::Delivery(e.to_string()))?;
            instances.push(Arc::new(Instance {
                vs: vs.clone(),
                store,
                active: AtomicUsize::new(0),
                per_ip: std::sync::Mutex::new(std::collections::HashMap::new()),
                users: Arc::new(users),
                auth_limiter: Arc::new(Limiter::new()),
                dns: if vs.security.reverse_dns || crate::policy::access::needs_name(vs) {
                    let d = crate::delivery::dns::Dns::new(
                        &vs.delivery.dns_servers,
                        Duration::from_secs(3),
                        1,
                    )
                    .map_err(|e| StartError::Delivery(format!("DNS for client names: {e}")))?;
                    Some(Arc::new(d))
                } else {
                    None
                },
            }));
        }
        let (logger, log_thread) = w3c::start(&config.servers).map_err(StartError::Io)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            stopping: stopping.clone(),
            logger,
        });
        let Bound {
            acceptor,
            waker,
            addrs: bound,
        } = Acceptor::bind(&instances)?;
        let max_threads: usize = instances
            .iter()
            .map(|i| i.vs.max_connections as usize)
            .sum();
        let pool_shared = shared.clone();
        let pool = Pool::<Job, connection::Buffers>::new(
            "smtp-session",
            // One thread waits from the start; more start as connections come (and stay a minute).
            1,
            max_threads,
            move |job: Job, bufs: &mut connection::Buffers| {
                let guard = ActiveGuard(
                    job.instance.clone(),
                    crate::config::ipnet::canonical(job.peer.ip()),
                );
                connection::serve(
                    job.stream,
                    job.peer,
                    job.implicit_tls,
                    &guard.0,
                    &pool_shared,
                    bufs,
                );
            },
        );
        let handle = std::thread::Builder::new()
            .name("acceptor".into())
            .spawn(move || {
                acceptor.run(|job| pool.submit(job));
                // Dropping the pool here lets idle session threads end; busy ones finish first.
            })
            .map_err(StartError::Io)?;
        Ok(Server {
            stopper: Stopper { stopping, waker },
            shared,
            instances,
            acceptor: Some(handle),
            log_thread,
            bound,
            services: services.into_iter().map(|(_, _, s)| s).collect(),
            pickups,
            pickup_stop,
        })
    }

    /// The addresses actually bound, by instance (port 0 in the config becomes the real port here).
    pub fn local_addrs(&self) -> &[(u32, SocketAddr)] {
        &self.bound
    }

    /// A handle that can stop the server from another thread.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Sessions open now, over all instances.
    pub fn active_sessions(&self) -> usize {
        self.instances
            .iter()
            .map(|i| i.active.load(Ordering::Acquire))
            .sum()
    }

    /// Stops accepting, gives sessions in flight up to `grace` to finish, then stops the log writer.
    /// Returns the number of sessions still open when the grace period ended.
    pub fn shutdown(mut self, grace: Duration) -> usize {
        self.stopper.stop();
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        let until = Instant::now() + grace;
        while self.active_sessions() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = self.active_sessions();
        self.pickup_stop.store(true, Ordering::Release);
        for p in self.pickups.drain(..) {
            let _ = p.join();
        }
        for s in self.services.drain(..) {
            s.stop();
        }
        // The log thread ends when the last Logger clone is gone; sessions still open hold one, so
        // only wait for it when they are all done.
        let shared = self.shared;
        drop(shared);
        if left == 0
            && let Some(h) = self.log_thread.take()
        {
            let _ = h.join();
        }
        left
    }
}
