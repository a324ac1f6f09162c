//! The running SMTP virtual servers: starts delivery, binds, starts the acceptor, the session pool
//! and the protocol log, and stops them in order. `admission` decides who gets a session,
//! `connection` drives one session, `intake` is a message's body pipeline.

pub mod admission;
pub mod connection;
pub mod control;
pub mod exporter;
pub mod intake;
pub mod restart;

use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::ipnet::canonical;
use crate::config::{Config, Live, VirtualServer};
use crate::delivery::dns::Dns;
use crate::delivery::engine::{Inbox, Service};
use crate::logging::w3c::{self, Logger};
use crate::mailroot::error::StoreError;
use crate::mailroot::pickup;
use crate::mailroot::store::Store;
use crate::net::listener::{Acceptor, Bound, Endpoint, ListenError, Rebinder};
use crate::net::pool::Pool;
use crate::policy::access;
use crate::policy::auth::Limiter;
use crate::policy::users::{Users, UsersError};
use admission::{Counters, Slot};

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    /// A mailroot folder could not be created or cleaned.
    Store(StoreError),
    /// A binding could not be bound, or the acceptor not set up.
    Listen(ListenError),
    /// Anything else at start-up (the protocol log, threads).
    Io(std::io::Error),
    /// The delivery side could not start (its DNS resolver, OutboundTlsCaFile).
    Delivery(String),
    /// UsersFile could not be read.
    Users(UsersError),
    /// The resolver for client names (EnableReverseDnsLookup, names in IPGrant/IPDeny) could not be
    /// made.
    ClientResolver(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Store(e) => write!(f, "{e}"),
            StartError::Listen(e) => write!(f, "{e}"),
            StartError::Io(e) => write!(f, "{e}"),
            StartError::Delivery(e) => write!(f, "delivery: {e}"),
            // The error names the file (and the line).
            StartError::Users(e) => write!(f, "UsersFile {e}"),
            StartError::ClientResolver(e) => write!(f, "DNS resolver for client names: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// One virtual server at run time: its settings, its store and its session counts.
#[derive(Debug)]
pub struct Instance {
    /// Settings.
    pub vs: Arc<VirtualServer>,
    /// Where its mail is committed.
    pub store: Store,
    /// Sessions open now, in all and per client address (MaxConnections, MaxConnectionsPerIp).
    pub counts: Arc<Counters>,
    /// Who may AUTH.
    pub users: Arc<Users>,
    /// Failed-login brakes.
    pub auth_limiter: Arc<Limiter>,
    /// The resolver for client names (EnableReverseDnsLookup, names in IPGrant/IPDeny).
    pub dns: Option<Arc<Dns>>,
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

/// The instances sessions start with, by position; a reload replaces them (sessions in flight keep
/// the one they started with).
pub(crate) type Table = Arc<RwLock<Vec<Arc<Instance>>>>;

/// An admitted connection, handed from the acceptor to a session thread.
struct Job {
    /// The client socket, blocking.
    stream: TcpStream,
    /// The peer's address (a ProxyProtocolFrom balancer's, until its header names the client).
    peer: SocketAddr,
    /// The virtual server it connected to.
    instance: Arc<Instance>,
    /// It came in on a SecureBindings endpoint: TLS from the first byte.
    implicit_tls: bool,
    /// Its place in the instance's counts, given back when the job is dropped.
    slot: Slot,
}

/// Every binding of every virtual server, tagged with the server's position and whether it is a
/// SecureBindings one (TLS from the first byte).
fn endpoints(servers: &[Arc<VirtualServer>]) -> Vec<Endpoint<(usize, bool)>> {
    let mut all = Vec::new();
    for (i, vs) in servers.iter().enumerate() {
        let plain = vs.bindings.iter().map(|b| (b, false));
        let secure = vs.security.secure_bindings.iter().map(|b| (b, true));
        for (b, implicit) in plain.chain(secure) {
            all.push(Endpoint {
                addrs: b.socket_addrs(),
                wildcard: b.ip.is_none(),
                tag: (i, implicit),
            });
        }
    }
    all
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
    instances: Table,
    /// Each virtual server's settings as delivery and Pickup read them.
    lives: Vec<Live>,
    rebinder: Rebinder<(usize, bool)>,
    stopper: Stopper,
    acceptor: Option<JoinHandle<()>>,
    log_thread: Option<JoinHandle<()>>,
    bound: Vec<(u32, SocketAddr)>,
    services: Vec<Service>,
    /// The Pickup threads, one per delivery service, and what stops them.
    pickups: Vec<JoinHandle<()>>,
    pickup_stop: Arc<AtomicBool>,
    /// `/metrics` and `/status` (MetricsBinding).
    exporter: Option<exporter::Exporter>,
    /// The queue commands' endpoint (`control`).
    control: Option<control::Endpoint>,
}

/// A file of secrets that other users of the machine can read is a leak waiting to happen: say so
/// (the server still starts; the admin decides).
fn warn_readable_secrets(vs: &VirtualServer) {
    for (section, key, path) in vs.secret_files() {
        if crate::os::readable_by_others(path).unwrap_or(false) {
            log::warn!(
                "[{section}] {key} {} is readable by other users: make it readable by mailroot's account only (chmod 600)",
                path.display()
            );
        }
    }
}

/// The resolver for client names, when the settings need one (kept from `was` when it serves the
/// same DNS servers).
fn client_resolver(
    vs: &VirtualServer,
    was: Option<&Instance>,
) -> Result<Option<Arc<Dns>>, StartError> {
    if !(vs.security.reverse_dns || access::needs_name(vs)) {
        return Ok(None);
    }
    if let Some(i) = was
        && i.vs.delivery.dns_servers == vs.delivery.dns_servers
        && let Some(d) = &i.dns
    {
        return Ok(Some(d.clone()));
    }
    let d = Dns::new(&vs.delivery.dns_servers, Duration::from_secs(3), 1)
        .map_err(StartError::ClientResolver)?;
    Ok(Some(Arc::new(d)))
}

/// Why a reload was refused (the running settings stay).
#[derive(Debug)]
pub enum ReloadError {
    /// A new binding could not be bound.
    Listen(ListenError),
    /// The new UsersFile could not be read.
    Users(UsersError),
    /// The change needs a restart.
    Restart(String),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Listen(e) => write!(f, "{e}"),
            ReloadError::Users(e) => write!(f, "UsersFile {e}"),
            ReloadError::Restart(m) => write!(f, "{m}: restart mailroot to apply it"),
        }
    }
}

impl std::error::Error for ReloadError {}

impl Server {
    /// Opens the mailroots (cleaning SortTemp), starts delivery for each Queue folder, reads each
    /// UsersFile, starts the protocol log, binds and starts accepting.
    pub fn start(config: &Config) -> Result<Server, StartError> {
        let mut instances = Vec::new();
        let mut lives = Vec::new();
        let mut services: Vec<(std::path::PathBuf, Store, Service, u32)> = Vec::new();
        let pickup_stop = Arc::new(AtomicBool::new(false));
        let mut pickups = Vec::new();
        if let crate::config::Source::File(ini) = &config.source
            && config.servers.iter().any(|vs| {
                vs.delivery.out.inline_secret() || vs.domains.iter().any(|d| d.out.inline_secret())
            })
            && crate::os::readable_by_others(ini).unwrap_or(false)
        {
            log::warn!(
                "{} holds passwords or client secrets and is readable by other users: chmod 600 it, or move the secrets to RoutePasswordFile / OAuthClientSecretFile",
                ini.display()
            );
        }
        for vs in &config.servers {
            warn_readable_secrets(vs);
            let live = Live::new(vs.clone());
            lives.push(live.clone());
            // One delivery service per Queue folder; virtual servers sharing a mailroot share it (the
            // first one's delivery settings apply) and its store, which hands Queue mail to it.
            let shared = services
                .iter()
                .find(|(q, _, _, _)| *q == vs.dirs.queue)
                .map(|(_, s, _, _)| s.clone());
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
                    let service = Service::start(live.clone(), store.clone(), inbox)
                        .map_err(StartError::Delivery)?;
                    pickups.push(
                        pickup::start(live, store.clone(), pickup_stop.clone())
                            .map_err(StartError::Io)?,
                    );
                    services.push((vs.dirs.queue.clone(), store.clone(), service, vs.instance));
                    store
                }
            };
            let users = Users::open(&vs.security.users_file).map_err(StartError::Users)?;
            instances.push(Arc::new(Instance {
                vs: vs.clone(),
                store,
                counts: Arc::new(Counters::default()),
                users: Arc::new(users),
                auth_limiter: Arc::new(Limiter::new()),
                dns: client_resolver(vs, None)?,
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
            rebinder,
        } = Acceptor::bind(&endpoints(&config.servers)).map_err(StartError::Listen)?;
        let bound = bound
            .into_iter()
            .map(|((i, _), addr)| (config.servers[i].instance, addr))
            .collect();
        let max_threads: usize = instances
            .iter()
            .map(|i| i.vs.max_connections as usize)
            .sum();
        let instances: Table = Arc::new(RwLock::new(instances));
        let exporter = match config.servers.first().and_then(|vs| vs.metrics_binding) {
            Some(addr) => Some(
                exporter::Exporter::start(
                    addr,
                    exporter::Sources {
                        instances: instances.clone(),
                        queues: services
                            .iter()
                            .map(|(_, store, service, instance)| exporter::QueueSource {
                                instance: *instance,
                                store: store.clone(),
                                monitor: service.monitor(),
                            })
                            .collect(),
                    },
                )
                .map_err(StartError::Io)?,
            ),
            None => None,
        };
        let control = match config.servers.first() {
            Some(first) => Some(
                control::Endpoint::start(
                    first,
                    services
                        .iter()
                        .map(|(_, store, service, instance)| control::QueueHandle {
                            instance: *instance,
                            store: store.clone(),
                            admin: service.admin(),
                        })
                        .collect(),
                )
                .map_err(StartError::Io)?,
            ),
            None => None,
        };
        let table = instances.clone();
        let accept_stopping = stopping.clone();
        let pool_shared = shared.clone();
        let pool = Pool::<Job, connection::Buffers>::new(
            "smtp-session",
            // One thread waits from the start; more start as connections come (and stay a minute).
            1,
            max_threads,
            move |job: Job, bufs: &mut connection::Buffers| {
                let Job {
                    stream,
                    peer,
                    instance,
                    implicit_tls,
                    mut slot,
                } = job;
                connection::serve(
                    stream,
                    peer,
                    implicit_tls,
                    &instance,
                    &pool_shared,
                    bufs,
                    &mut slot,
                );
                drop(slot);
            },
        );
        let handle = std::thread::Builder::new()
            .name("acceptor".into())
            .spawn(move || {
                let stopping = move || accept_stopping.load(Ordering::Acquire);
                acceptor.run(stopping, |mut stream, peer, (index, implicit_tls)| {
                    let Some(instance) = table
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(*index)
                        .cloned()
                    else {
                        return;
                    };
                    let ip = canonical(peer.ip());
                    if let Some(slot) =
                        admission::admit(&mut stream, ip, &instance.vs, &instance.counts)
                    {
                        pool.submit(Job {
                            stream,
                            peer,
                            instance: instance.clone(),
                            implicit_tls: *implicit_tls,
                            slot,
                        });
                    }
                });
                // Dropping the pool here lets idle session threads end; busy ones finish first.
            })
            .map_err(StartError::Io)?;
        Ok(Server {
            stopper: Stopper { stopping, waker },
            shared,
            instances,
            lives,
            rebinder,
            acceptor: Some(handle),
            log_thread,
            bound,
            services: services.into_iter().map(|(_, _, s, _)| s).collect(),
            pickups,
            pickup_stop,
            exporter,
            control,
        })
    }

    /// The addresses actually bound, by instance (port 0 in the config becomes the real port here).
    pub fn local_addrs(&self) -> &[(u32, SocketAddr)] {
        &self.bound
    }

    /// Where `/metrics` and `/status` are served (MetricsBinding), if they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.exporter.as_ref().map(|e| e.local_addr())
    }

    /// A handle that can stop the server from another thread.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// The settings running now, by virtual server.
    pub fn settings(&self) -> Vec<Arc<VirtualServer>> {
        self.instances
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|i| i.vs.clone())
            .collect()
    }

    /// Sessions open now, over all instances.
    pub fn active_sessions(&self) -> usize {
        self.instances
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|i| i.counts.active())
            .sum()
    }

    /// Applies `config` without dropping a session: new bindings are opened (an address that
    /// cannot be bound refuses the whole reload) and removed ones closed; new sessions, Pickup
    /// scans and delivery attempts use the new settings (limits, relay lists, connection control,
    /// routes, smart hosts, retries, the users file, the TLS certificate). Sessions in flight
    /// finish with the settings they started with. Keys that only a restart can change keep
    /// their running values and are named in the returned list.
    pub fn reload(&mut self, config: &Config) -> Result<Vec<String>, ReloadError> {
        let current = self
            .instances
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let old: Vec<Arc<VirtualServer>> = current.iter().map(|i| i.vs.clone()).collect();
        if old
            .iter()
            .map(|v| v.instance)
            .ne(config.servers.iter().map(|v| v.instance))
        {
            return Err(ReloadError::Restart(
                "virtual servers were added or removed".into(),
            ));
        }
        // What cannot change live keeps its running value; the rest is the new file's.
        let mut restart = Vec::new();
        let mut servers = Vec::new();
        for (was, new) in old.iter().zip(&config.servers) {
            let (vs, keys) = restart::keep_running(was, new);
            for k in keys {
                restart.push(format!("[SmtpSvc/{}] {k}", vs.instance));
            }
            servers.push(Arc::new(vs));
        }
        let bound = self
            .rebinder
            .rebind(&endpoints(&servers))
            .map_err(ReloadError::Listen)?;
        let mut fresh = Vec::new();
        for (inst, vs) in current.iter().zip(&servers) {
            let users = if vs.security.users_file == inst.vs.security.users_file {
                inst.users.clone()
            } else {
                Arc::new(Users::open(&vs.security.users_file).map_err(ReloadError::Users)?)
            };
            fresh.push(Arc::new(Instance {
                vs: vs.clone(),
                store: inst.store.clone(),
                counts: inst.counts.clone(),
                users,
                auth_limiter: inst.auth_limiter.clone(),
                dns: client_resolver(vs, Some(inst)).map_err(|e| match e {
                    StartError::ClientResolver(m) => ReloadError::Restart(m),
                    other => ReloadError::Restart(other.to_string()),
                })?,
            }));
        }
        for (live, vs) in self.lives.iter().zip(&servers) {
            live.set(vs.clone());
        }
        *self.instances.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        self.bound = bound
            .into_iter()
            .map(|((i, _), addr)| (servers[i].instance, addr))
            .collect();
        Ok(restart)
    }

    /// Stops accepting, gives sessions in flight up to `grace` to finish, then stops the log writer.
    /// Returns the number of sessions still open when the grace period ended.
    pub fn shutdown(mut self, grace: Duration) -> usize {
        self.stopper.stop();
        if let Some(e) = self.exporter.take() {
            e.stop();
        }

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
        // Last: until the process ends, a queue command must not take it for stopped and change
        // the files under a delivery that may still be finishing.
        if let Some(c) = self.control.take() {
            c.stop();
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
