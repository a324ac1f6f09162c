//! The delivery service of one Queue folder: a pool of delivery threads (at most MaxOutConnections)
//! fed by the destination-aware `scheduler`, and a dispatcher thread that wakes when messages fall
//! due (retries, what was queued at start-up) or a dead destination may probe again. A newly
//! committed message comes from the store's hand-over ([`Inbox`]) with its typed envelope: it is
//! scheduled and handed to a delivery thread on the committing thread, with no thread in between and
//! without reading the file back. A job is one message for one destination; while its connection
//! stays open the thread takes the destination's next ready message, up to MaxBatchedMessages, and
//! leaves the connection in the `cache` for the next one. Each finished job dispatches the next.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::attempt::{self, After};
use super::cache::{Cache, Held, IDLE_KEEP};
use super::dns::Dns;
use super::endpoints::Endpoints;
use super::route::{self, Route};
use super::scheduler::{Feedback, Job, Limits, Scheduler};
use crate::config::VirtualServer;
use crate::config::{Live, Outbound};
use crate::mailroot::state::{State, Status};
use crate::mailroot::store::{Handover, Queued, Store};
use crate::net::pool::Pool;
use crate::net::tls::ClientTls;
use crate::oauth::Tokens;
use crate::smtp::envelope::Envelope;

/// Everything the delivery threads share.
pub struct Engine {
    /// The settings (the first virtual server using this Queue folder), replaced by a reload.
    live: Live,
    /// The mailroot.
    pub store: Store,
    /// The resolver.
    pub dns: Dns,
    /// Outbound TLS configurations.
    pub tls: ClientTls,
    /// The same, presenting a route's client certificate, by certificate file.
    tls_with_identity: Mutex<HashMap<PathBuf, ClientTls>>,
    /// OAuth tokens, one cache per credential.
    pub tokens: Tokens,
    /// Connection slots and open connections.
    pub cache: Cache,
    /// Which next-hop addresses are dead.
    pub endpoints: Endpoints,
    pub(super) sched: Mutex<Scheduler>,
    /// Administrators' changes to messages that were in flight when asked for, applied when
    /// their attempt ends (see `admin`). Locked after `sched`, never before.
    pub(super) late: Mutex<HashMap<String, Vec<super::admin::Late>>>,
    /// MaxOutConnectionsPerDomain and MaxMessagesPerMinute of each destination seen, by key (a
    /// domain section may set its own).
    limits: Arc<Mutex<HashMap<String, (u32, u32)>>>,
    pub(super) wake: Condvar,
    /// Messages handed over by the store and not yet attempted: their envelope and body offset.
    fresh: Mutex<HashMap<String, Queued>>,
    stopping: AtomicBool,
    /// The delivery threads (at most MaxOutConnections).
    pool: Pool<Job, ()>,
    /// What delivery counts (read by the metrics).
    pub metrics: Arc<crate::metrics::Delivery>,
}

impl Engine {
    /// The settings now (a reload takes effect at the next attempt).
    pub fn vs(&self) -> Arc<VirtualServer> {
        self.live.get()
    }

    /// The TLS configurations toward a route: presenting its client certificate when it has one.
    pub fn client_tls(&self, out: &Outbound) -> ClientTls {
        let Some(id) = &out.identity else {
            return self.tls.clone();
        };
        self.tls_with_identity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.cert_file.clone())
            .or_insert_with(|| self.tls.with_identity(id.clone()))
            .clone()
    }

    /// How long a destination that throttled its only connection waits: 5 s, doubling with each
    /// throttle in a row, at most a minute.
    pub fn throttle_wait(&self, key: &str) -> Duration {
        let n = self
            .sched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .throttles(key);
        Duration::from_secs(5u64 << n.saturating_sub(1).min(4)).min(Duration::from_secs(60))
    }

    /// Whether the service is stopping.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Keeps `h` open for the next message to its destination (or closes it).
    pub fn put_idle(&self, h: Held) {
        // The dispatcher only needs to hear of the first: it then wakes in time to close them.
        if self.cache.put_idle(h, self.stopping()) {
            self.wake.notify_all();
        }
    }

    /// The connection keys (see `route`) of the recipients of `envelope` still pending in `state`.
    pub fn keys(&self, envelope: &Envelope, state: Option<&State>) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for r in &envelope.recipients {
            if state
                .and_then(|s| s.get(&r.address))
                .is_some_and(|s| s.status != Status::Pending)
            {
                continue;
            }
            let k = match route::route(&self.vs(), &r.address) {
                Route::Local => "local".to_string(),
                Route::Remote(rem) => {
                    self.note_limits(&rem.key, (rem.max_out, rem.per_minute));
                    rem.key
                }
            };
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        keys
    }

    /// Remembers the most connections and messages a minute toward `key` (its scheduler limits).
    pub fn note_limits(&self, key: &str, limits: (u32, u32)) {
        let mut l = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        if l.get(key) != Some(&limits) {
            l.insert(key.to_string(), limits);
        }
    }

    /// The most connections toward `key` at once.
    pub fn limit(&self, key: &str) -> u32 {
        self.limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|l| l.0)
            .unwrap_or(self.vs().delivery.max_out_per_domain)
    }

    /// A message just committed (told by the store's hand-over): due now. It goes to a delivery
    /// thread from here, without waking the dispatcher.
    fn enqueue_new(&self, q: Queued) {
        let keys = self.keys(&q.envelope, None);
        let id = q.id.clone();
        self.fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), q);
        let now = SystemTime::now();
        let mut s = self.sched.lock().unwrap_or_else(|p| p.into_inner());
        if !s.contains(&id) {
            s.add(&id, now, keys, now);
        }
        if !self.stopping() {
            self.dispatch(&mut s);
        }
    }

    /// The envelope and body offset the store handed over for `id`, if it was never attempted.
    pub fn take_fresh(&self, id: &str) -> Option<Queued> {
        self.fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    /// Hands the delivery threads every job the destinations' windows allow now.
    pub(super) fn dispatch(&self, s: &mut Scheduler) {
        while let Some(job) = s.next_job(SystemTime::now()) {
            self.pool.submit(job);
        }
    }

    /// What an attempt learned about `key`'s next hops (logged at info when its state changes).
    pub fn feedback(&self, key: &str, f: Feedback) {
        let mut s = self.sched.lock().unwrap_or_else(|p| p.into_inner());
        let dead = matches!(f, Feedback::Dead(..));
        let Some(line) = s.feedback(key, f, SystemTime::now()) else {
            return;
        };
        log::info!("SMTPSVC{}: {line}", self.vs().instance);
        // Just went dead (at first, or after a failed probe).
        if dead {
            // Parked messages old enough for a delay notice or expiry still get their attempt.
            let vs = self.vs();
            let d = &vs.delivery;
            let notice = d.delay_expire.min(d.ndr_expire);
            s.unpark_old(key, |id| {
                crate::id::arrival(id)
                    .and_then(|a| SystemTime::now().duration_since(a).ok())
                    .is_some_and(|age| age >= notice)
            });
            self.wake.notify_all();
        }
    }

    /// Threads at work for `key` now.
    pub fn busy(&self, key: &str) -> u32 {
        let s = self.sched.lock().unwrap_or_else(|p| p.into_inner());
        s.destinations()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, d)| d.busy)
            .unwrap_or(0)
    }

    /// Puts `id` (found in Queue at start-up) in the schedule: due at its state's next attempt, or now.
    pub(super) fn enqueue(&self, id: &str) {
        let envelope = match self.store.read_queued_envelope(id) {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(e) => {
                log::warn!("queue: {e}");
                return;
            }
        };
        let state = self
            .store
            .read_state(id)
            .ok()
            .flatten()
            .and_then(|t| State::parse(&t).ok());
        // Held by an administrator: never attempted until released (`admin`).
        if state.as_ref().is_some_and(State::held) {
            log::debug!("queue: {id} is held");
            return;
        }
        // A block that does not read goes to Badmail at its attempt, which is due now.
        let keys = envelope
            .map(|e| self.keys(&e, state.as_ref()))
            .unwrap_or_default();
        let due = state
            .as_ref()
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s.next_attempt))
            .unwrap_or_else(SystemTime::now);
        let mut s = self.sched.lock().unwrap_or_else(|p| p.into_inner());
        if !s.contains(id) {
            s.add(id, due, keys, SystemTime::now());
            self.wake.notify_all();
        }
    }

    /// Ends an attempt of `id` (see `Scheduler::finished`), first applying what an administrator
    /// asked for while it was in flight: the message stays in flight (no other thread takes it)
    /// until none is left.
    fn after(&self, id: &str, mut after: After) {
        loop {
            let s = self.sched.lock().unwrap_or_else(|p| p.into_inner());
            let late = self
                .late
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
            match late {
                None => return self.settle(s, id, after),
                Some(late) => {
                    drop(s);
                    after = super::admin::apply_late(self, id, late, after);
                }
            }
        }
    }

    /// Gives `id` back to the schedule as `after` says.
    pub(super) fn settle(
        &self,
        mut s: std::sync::MutexGuard<'_, Scheduler>,
        id: &str,
        after: After,
    ) {
        let now = SystemTime::now();
        match after {
            After::Done => s.finished(id, None, now),
            After::Again(due, keys) => {
                s.finished(id, Some((due, keys)), now);
                // The dispatcher sleeps until the earliest due time: it must hear of a new one.
                self.wake.notify_all();
            }
            After::Requeue(keys) => s.requeue(id, keys),
        }
    }

    /// The next ready message of `key` for a thread holding an open connection to it.
    fn take_for(&self, key: &str) -> Option<String> {
        let mut s = self.sched.lock().unwrap_or_else(|p| p.into_inner());
        s.take_for(key, SystemTime::now())
    }

    /// A job ended: its place in the window is free; the next jobs go out from here.
    fn job_done(&self, job: &Job) {
        let mut s = self.sched.lock().unwrap_or_else(|p| p.into_inner());
        s.job_done(job);
        if !self.stopping() {
            self.dispatch(&mut s);
        }
    }
}

/// The store's hand-over to a delivery service that is not started yet: build the store with
/// [`Inbox::handover`], then start the [`Service`] with the inbox. Nothing is committed into Queue
/// in between.
#[derive(Clone, Default)]
pub struct Inbox {
    engine: Arc<OnceLock<Weak<Engine>>>,
}

impl Inbox {
    /// An inbox whose service is not started yet.
    pub fn new() -> Inbox {
        Inbox::default()
    }

    /// What the store calls for each message committed into Queue.
    pub fn handover(&self) -> Handover {
        let cell = self.engine.clone();
        // A weak reference: the engine holds the store, which holds this.
        Arc::new(move |q: Queued| {
            if let Some(e) = cell.get().and_then(Weak::upgrade) {
                e.enqueue_new(q);
            }
        })
    }
}

/// A running delivery service.
pub struct Service {
    engine: Arc<Engine>,
    dispatcher: JoinHandle<()>,
    scan: JoinHandle<()>,
}

impl Service {
    /// Starts delivery from `store`'s Queue with `vs`'s settings; `inbox` is the hand-over `store`
    /// was built with.
    pub fn start(live: Live, store: Store, inbox: Inbox) -> Result<Service, String> {
        let vs = live.get();
        let d = &vs.delivery;
        let dns =
            Dns::new(&d.dns_servers, Duration::from_secs(5), 2).map_err(|e| format!("DNS: {e}"))?;
        let tls = ClientTls::new(d.ca_file.as_deref()).map_err(|e| e.to_string())?;
        let limits: Arc<Mutex<HashMap<String, (u32, u32)>>> = Arc::default();
        let (initial, default_max, local_max) =
            (d.initial_concurrency, d.max_out_per_domain, d.max_out);
        let by_key = limits.clone();
        // A destination's window: from DestinationInitialConcurrency up to its MaxOutConnections-
        // PerDomain. Drop deliveries ("local") and unreadable files ("") connect to nothing.
        let scheduler = Scheduler::new(move |key: &str| {
            if !(key.starts_with("mx:") || key.starts_with("host:")) {
                return Limits {
                    initial: local_max,
                    max: local_max,
                    per_minute: 0,
                };
            }
            let (max, per_minute) = by_key
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(key)
                .copied()
                .unwrap_or((default_max, 0));
            Limits {
                initial,
                max,
                per_minute,
            }
        });
        let engine = Arc::new_cyclic(|me: &Weak<Engine>| {
            let worker = me.clone();
            let pool = Pool::new(
                "delivery",
                // Started with the first due message: an idle relay keeps no delivery thread.
                0,
                d.max_out as usize,
                move |job: Job, _: &mut ()| {
                    // Gone only at shutdown: the messages stay in Queue for the next start.
                    if let Some(e) = worker.upgrade() {
                        run_job(&e, &job);
                        e.job_done(&job);
                    }
                },
            );
            Engine {
                live: live.clone(),
                store,
                dns,
                tokens: Tokens::new(tls.clone()),
                tls,
                tls_with_identity: Mutex::new(HashMap::new()),
                cache: Cache::new(d.max_batched),
                endpoints: Endpoints::new(d.dead_failures, d.retry.clone()),
                sched: Mutex::new(scheduler),
                limits,
                late: Mutex::new(HashMap::new()),
                wake: Condvar::new(),
                fresh: Mutex::new(HashMap::new()),
                stopping: AtomicBool::new(false),
                pool,
                metrics: Arc::default(),
            }
        });
        let _ = inbox.engine.set(Arc::downgrade(&engine));

        // Resume what is queued, in the background: a large Queue must not delay the listeners,
        // and delivery starts with the first messages read (in arrival order).
        let e = engine.clone();
        let scan = std::thread::Builder::new()
            .name("queue-scan".into())
            .spawn(move || {
                let ids = match e.store.queued_ids() {
                    Ok(ids) => ids,
                    Err(err) => {
                        log::error!("SMTPSVC{}: {err}", e.vs().instance);
                        return;
                    }
                };
                if !ids.is_empty() {
                    log::info!(
                        "SMTPSVC{}: {} message(s) in {} resume delivery",
                        e.vs().instance,
                        ids.len(),
                        e.store.queue_dir().display()
                    );
                }
                for id in &ids {
                    if e.stopping() {
                        return;
                    }
                    e.enqueue(id);
                }
            })
            .map_err(|e| format!("cannot start the queue-scan thread: {e}"))?;

        // The dispatcher: hands messages to the delivery threads when they fall due (retries, and
        // what was queued at start-up), and closes cached connections that waited too long.
        let e = engine.clone();
        let dispatcher = std::thread::Builder::new()
            .name("dispatcher".into())
            .spawn(move || {
                let mut s = e.sched.lock().unwrap_or_else(|p| p.into_inner());
                while !e.stopping() {
                    let now = SystemTime::now();
                    e.dispatch(&mut s);
                    drop(s);
                    e.cache.close_idle(None, e.stopping());
                    s = e.sched.lock().unwrap_or_else(|p| p.into_inner());
                    let wait = s
                        .next_wake()
                        .map(|d| d.duration_since(now).unwrap_or(Duration::ZERO))
                        .unwrap_or(Duration::from_secs(60))
                        .min(if e.cache.has_idle() {
                            IDLE_KEEP
                        } else {
                            Duration::from_secs(60)
                        });
                    s = e
                        .wake
                        .wait_timeout(s, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            })
            .map_err(|e| format!("cannot start the dispatcher thread: {e}"))?;
        Ok(Service {
            engine,
            dispatcher,
            scan,
        })
    }

    /// Stops taking new work; attempts in progress finish on their own (their results are on disk).
    pub fn stop(self) {
        self.engine.stopping.store(true, Ordering::Release);
        self.engine.wake.notify_all();
        self.engine.cache.close_idle(None, true);
        let _ = self.scan.join();
        let _ = self.dispatcher.join();
    }

    /// A handle through which an administrator's queue commands reach this service.
    pub fn admin(&self) -> super::admin::Admin {
        super::admin::Admin::new(self.engine.clone())
    }

    /// A handle that reads the service's counters, depth and destinations (for the metrics).
    pub fn monitor(&self) -> Monitor {
        Monitor {
            engine: self.engine.clone(),
        }
    }

    /// The destination table: what waits for each destination, in what state (for the log, and
    /// for queue commands and metrics).
    pub fn destinations(&self) -> Vec<super::scheduler::Row> {
        let s = self.engine.sched.lock().unwrap_or_else(|p| p.into_inner());
        s.table()
    }
}

/// Reads a delivery service's state for the metrics: its counters (atomics), and under the
/// scheduler's lock for one pass each, the Queue's depth and the destination table.
#[derive(Clone)]
pub struct Monitor {
    engine: Arc<Engine>,
}

impl Monitor {
    /// What this service counted.
    pub fn metrics(&self) -> &crate::metrics::Delivery {
        &self.engine.metrics
    }

    /// Messages in the Queue's schedule (waiting for a retry, ready, parked or in flight) and when
    /// the oldest of them arrived.
    pub fn depth(&self) -> (usize, Option<SystemTime>) {
        let s = self.engine.sched.lock().unwrap_or_else(|p| p.into_inner());
        s.depth()
    }

    /// The destination table (see [`Service::destinations`]).
    pub fn destinations(&self) -> Vec<super::scheduler::Row> {
        let s = self.engine.sched.lock().unwrap_or_else(|p| p.into_inner());
        s.table()
    }
}

/// Runs one job. A delivery takes its message, then as long as the connection stays open, the
/// destination's next ready messages (MaxBatchedMessages per connection); the open connection then
/// waits in the cache for the next message. A deferral attempts each message of a dead destination
/// (no connection is made: the state says why and until when).
fn run_job(engine: &Engine, job: &Job) {
    match job {
        Job::Deliver { key, ids } => {
            let mut held: Option<Held> = None;
            let mut queue: std::collections::VecDeque<String> = ids.iter().cloned().collect();
            while let Some(id) = queue.pop_front() {
                if engine.stopping() {
                    engine.after(&id, After::Again(SystemTime::now(), Vec::new()));
                    continue;
                }
                let after = attempt::run(engine, &id, key, &mut held);
                engine.after(&id, after);
                if queue.is_empty()
                    && let Some(h) = &held
                    && engine.cache.reusable(h)
                    && let Some(n) = engine.take_for(&h.key)
                {
                    queue.push_back(n);
                }
            }
            if let Some(h) = held {
                engine.put_idle(h);
            }
        }
        Job::Defer { key, ids } => {
            for id in ids {
                let after = if engine.stopping() {
                    After::Again(SystemTime::now(), Vec::new())
                } else {
                    attempt::run(engine, id, key, &mut None)
                };
                engine.after(id, after);
            }
        }
    }
}
