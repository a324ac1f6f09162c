//! The delivery service of one Queue folder: a pool of delivery threads (at most MaxOutConnections)
//! and a dispatcher thread that hands them messages as they fall due (retries, and what was queued at
//! start-up). A newly committed message comes from the store's hand-over ([`Inbox`]) with its typed
//! envelope: it is scheduled and handed to a delivery thread on the committing thread, with no thread
//! in between and without reading the file back. A thread that finished a message on an open
//! connection carries on with the next due message for the same destination, up to
//! MaxBatchedMessages (`cache`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::attempt;
use super::cache::{Cache, Held, IDLE_KEEP};
use super::dns::Dns;
use super::route::{self, Route};
use super::scheduler::Scheduler;
use crate::config::VirtualServer;
use crate::mailroot::state::{State, Status};
use crate::mailroot::store::{Handover, Queued, Store};
use crate::net::pool::Pool;
use crate::net::tls::ClientTls;
use crate::smtp::envelope::Envelope;

/// Everything the delivery threads share.
pub struct Engine {
    /// The settings (the first virtual server using this Queue folder).
    pub vs: Arc<VirtualServer>,
    /// The mailroot.
    pub store: Store,
    /// The resolver.
    pub dns: Dns,
    /// Outbound TLS configurations.
    pub tls: ClientTls,
    /// Connection slots and open connections.
    pub cache: Cache,
    sched: Mutex<Scheduler>,
    wake: Condvar,
    /// Messages handed over by the store and not yet attempted: their envelope and body offset.
    fresh: Mutex<HashMap<String, Queued>>,
    stopping: AtomicBool,
    /// The delivery threads (at most MaxOutConnections).
    pool: Pool<Vec<String>, ()>,
}

impl Engine {
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
            let k = match route::route(&self.vs, &r.address) {
                Route::Local => "local".to_string(),
                Route::Remote(rem) => rem.key,
            };
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        keys
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
        let mut s = self.sched.lock().unwrap_or_else(|p| p.into_inner());
        if !s.contains(&id) {
            s.add(&id, SystemTime::now(), keys);
        }
        if !self.stopping() {
            self.dispatch_due(&mut s);
        }
    }

    /// The envelope and body offset the store handed over for `id`, if it was never attempted.
    pub fn take_fresh(&self, id: &str) -> Option<Queued> {
        self.fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    /// Hands every due message to the delivery threads; those for the same destination travel
    /// together, over one connection.
    fn dispatch_due(&self, s: &mut Scheduler) {
        let batch = self.vs.delivery.max_batched as usize;
        loop {
            let ids = s.pop_due_batch(SystemTime::now(), batch);
            if ids.is_empty() {
                return;
            }
            self.pool.submit(ids);
        }
    }

    /// Puts `id` (found in Queue at start-up) in the schedule: due at its state's next attempt, or now.
    fn enqueue(&self, id: &str) {
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
            s.add(id, due, keys);
            self.wake.notify_all();
        }
    }

    /// Ends an attempt (see `Scheduler::finished`).
    pub fn finished(&self, id: &str, next: Option<(SystemTime, Vec<String>)>) {
        let again = next.is_some();
        let mut s = self.sched.lock().unwrap_or_else(|p| p.into_inner());
        s.finished(id, next);
        // A message that is done changes nothing the dispatcher waits for.
        if again {
            self.wake.notify_all();
        }
    }

    /// The next due message for an open connection to `key`.
    pub fn next_for(&self, key: &str) -> Option<String> {
        let mut s = self.sched.lock().unwrap_or_else(|p| p.into_inner());
        s.take_due_with_key(key, SystemTime::now(), 1000)
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
}

impl Service {
    /// Starts delivery from `store`'s Queue with `vs`'s settings; `inbox` is the hand-over `store`
    /// was built with.
    pub fn start(vs: Arc<VirtualServer>, store: Store, inbox: Inbox) -> Result<Service, String> {
        let d = &vs.delivery;
        let dns =
            Dns::new(&d.dns_servers, Duration::from_secs(5), 2).map_err(|e| format!("DNS: {e}"))?;
        let tls = ClientTls::new(d.ca_file.as_deref()).map_err(|e| e.to_string())?;
        let engine = Arc::new_cyclic(|me: &Weak<Engine>| {
            let worker = me.clone();
            let pool = Pool::new(
                "delivery",
                // Started with the first due message: an idle relay keeps no delivery thread.
                0,
                d.max_out as usize,
                move |ids: Vec<String>, _: &mut ()| {
                    // Gone only at shutdown: the messages stay in Queue for the next start.
                    if let Some(e) = worker.upgrade() {
                        deliver_batch(&e, ids);
                    }
                },
            );
            Engine {
                vs: vs.clone(),
                store,
                dns,
                tls,
                cache: Cache::new(d.max_out_per_domain, d.max_batched),
                sched: Mutex::new(Scheduler::new()),
                wake: Condvar::new(),
                fresh: Mutex::new(HashMap::new()),
                stopping: AtomicBool::new(false),
                pool,
            }
        });
        let _ = inbox.engine.set(Arc::downgrade(&engine));

        // Resume what is queued.
        let ids = engine.store.queued_ids().map_err(|e| e.to_string())?;
        if !ids.is_empty() {
            log::info!(
                "SMTPSVC{}: {} message(s) in {} resume delivery",
                vs.instance,
                ids.len(),
                engine.store.queue_dir().display()
            );
        }
        for id in &ids {
            engine.enqueue(id);
        }

        // The dispatcher: hands messages to the delivery threads when they fall due (retries, and
        // what was queued at start-up), and closes cached connections that waited too long.
        let e = engine.clone();
        let dispatcher = std::thread::Builder::new()
            .name("dispatcher".into())
            .spawn(move || {
                let mut s = e.sched.lock().unwrap_or_else(|p| p.into_inner());
                while !e.stopping() {
                    let now = SystemTime::now();
                    e.dispatch_due(&mut s);
                    drop(s);
                    e.cache.close_idle(None, e.stopping());
                    s = e.sched.lock().unwrap_or_else(|p| p.into_inner());
                    let wait = s
                        .next_due()
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
        Ok(Service { engine, dispatcher })
    }

    /// Stops taking new work; attempts in progress finish on their own (their results are on disk).
    pub fn stop(self) {
        self.engine.stopping.store(true, Ordering::Release);
        self.engine.wake.notify_all();
        self.engine.cache.wake_waiters();
        self.engine.cache.close_idle(None, true);
        let _ = self.dispatcher.join();
    }
}

/// Delivers `ids` (due messages for one destination) one after the other, then as long as the
/// connection stays open, the next due messages for the same destination (MaxBatchedMessages per
/// connection); the open connection then waits in the cache for the next message.
fn deliver_batch(engine: &Engine, ids: Vec<String>) {
    let mut held: Option<Held> = None;
    let mut queue: std::collections::VecDeque<String> = ids.into();
    while let Some(id) = queue.pop_front() {
        if engine.stopping() {
            engine.finished(&id, Some((SystemTime::now(), Vec::new())));
            continue;
        }
        let next = attempt::run(engine, &id, &mut held);
        engine.finished(&id, next);
        if queue.is_empty()
            && let Some(h) = &held
            && engine.cache.reusable(h)
            && let Some(n) = engine.next_for(&h.key)
        {
            queue.push_back(n);
        }
    }
    if let Some(h) = held {
        engine.put_idle(h);
    }
}
