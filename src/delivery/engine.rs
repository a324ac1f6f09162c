//! The delivery service of one Queue folder: a pool of delivery threads (at most MaxOutConnections),
//! a dispatcher thread that hands them messages as they fall due (retries, and what was queued at
//! start-up), and the Pickup thread. A newly committed message is scheduled and handed to a delivery
//! thread by the group commit itself, from the envelope it just wrote, with no thread in between.
//! Connections per destination are limited by MaxOutConnectionsPerDomain; a thread that finished a
//! message on an open connection carries on with the next due message for the same destination, up
//! to MaxBatchedMessages.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::attempt;
use super::client::Connection;
use super::dns::Dns;
use super::route::{self, Route};
use super::scheduler::Scheduler;
use crate::config::VirtualServer;
use crate::mailroot::envelope::Envelope;
use crate::mailroot::state::{State, Status};
use crate::mailroot::store::Store;
use crate::net::pool::Pool;
use crate::net::tls::ClientTls;

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
    sched: Mutex<Scheduler>,
    wake: Condvar,
    slots: Arc<Slots>,
    /// Open connections waiting for more mail (a connection cache, like Postfix's scache).
    idle: Mutex<Vec<(Instant, Held)>>,
    stopping: AtomicBool,
    /// The delivery threads (at most MaxOutConnections).
    pool: Pool<Vec<String>, ()>,
}

/// How long an idle connection is kept for the next message to the same destination.
const IDLE_KEEP: Duration = Duration::from_secs(2);

/// Connections per destination key (MaxOutConnectionsPerDomain).
#[derive(Debug, Default)]
pub struct Slots {
    map: Mutex<HashMap<String, u32>>,
    free: Condvar,
}

/// A connection slot for one destination key, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.slots.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = s.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.remove(&self.key);
            }
        }
        self.slots.free.notify_all();
    }
}

/// An open connection with its slot.
pub struct Held {
    /// Destination key.
    pub key: String,
    /// The connection.
    pub conn: Connection,
    _slot: Slot,
}

impl Held {
    /// Wraps a fresh connection and its slot.
    pub fn new(key: String, conn: Connection, slot: Slot) -> Held {
        Held {
            key,
            conn,
            _slot: slot,
        }
    }
}

impl Engine {
    /// Whether the service is stopping.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Waits for a connection slot toward `key` (MaxOutConnectionsPerDomain); `None` when stopping.
    pub fn slot(&self, key: &str) -> Option<Slot> {
        let max = self.vs.delivery.max_out_per_domain;
        let mut s = self.slots.map.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.stopping() {
                return None;
            }
            let n = s.entry(key.to_string()).or_insert(0);
            if *n < max {
                *n += 1;
                return Some(Slot {
                    slots: self.slots.clone(),
                    key: key.to_string(),
                });
            }
            // An idle cached connection to this destination holds a slot: free one.
            drop(s);
            self.close_idle(Some(key));
            s = self.slots.map.lock().unwrap_or_else(|p| p.into_inner());
            if s.get(key).is_some_and(|n| *n < max) {
                continue;
            }
            s = self
                .slots
                .free
                .wait_timeout(s, Duration::from_millis(500))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// An idle open connection to `key` that may carry another message, if there is one.
    pub fn take_idle(&self, key: &str) -> Option<Held> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let pos = idle
            .iter()
            .position(|(t, h)| h.key == key && t.elapsed() < IDLE_KEEP)?;
        Some(idle.swap_remove(pos).1)
    }

    /// Keeps `h` open for the next message to the same destination, or closes it (MaxBatchedMessages
    /// reached, or stopping).
    pub fn put_idle(&self, h: Held) {
        if self.stopping() || h.conn.sent >= self.vs.delivery.max_batched || !h.conn.healthy {
            h.conn.quit();
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.push((Instant::now(), h));
        // The dispatcher only needs to hear of the first: it then wakes in time to close them.
        let first = idle.len() == 1;
        drop(idle);
        if first {
            self.wake.notify_all();
        }
    }

    /// Closes idle connections that waited too long (or, with `key`, those to that destination).
    fn close_idle(&self, key: Option<&str>) {
        let expired: Vec<Held> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let (old, keep): (Vec<_>, Vec<_>) = idle.drain(..).partition(|(t, h)| {
                t.elapsed() >= IDLE_KEEP || key.is_some_and(|k| h.key == k) || self.stopping()
            });
            *idle = keep;
            old.into_iter().map(|(_, h)| h).collect()
        };
        for h in expired {
            h.conn.quit();
        }
    }

    /// The connection keys of the recipients of `envelope` still pending in `state`.
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

    /// Schedules a message just committed (told by the group commit, with its envelope block): due now.
    /// It goes to a delivery thread from here, without waking the dispatcher.
    fn enqueue_new(&self, id: &str, block: &[u8]) {
        let keys = Envelope::parse_block(block)
            .map(|(e, _)| self.keys(&e, None))
            .unwrap_or_default();
        let mut s = self.sched.lock().unwrap_or_else(|p| p.into_inner());
        if !s.contains(id) {
            s.add(id, SystemTime::now(), keys);
        }
        if !self.stopping() {
            self.dispatch_due(&mut s);
        }
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

    fn schedule(&self, id: &str, due: SystemTime, keys: Vec<String>) {
        let mut s = self.sched.lock().unwrap_or_else(|p| p.into_inner());
        if !s.contains(id) {
            s.add(id, due, keys);
            self.wake.notify_all();
        }
    }

    /// Puts `id` in the schedule: due at its state's next attempt, or now.
    fn enqueue(&self, id: &str) {
        let path = self.store.queue_file(id);
        let head = match read_head(&path) {
            Ok(h) => h,
            Err(e) => {
                log::warn!("queue: cannot read {}: {e}", path.display());
                return;
            }
        };
        let state = self
            .store
            .read_state(id)
            .ok()
            .flatten()
            .and_then(|t| State::parse(&t).ok());
        let keys = Envelope::parse_block(&head)
            .map(|(e, _)| self.keys(&e, state.as_ref()))
            .unwrap_or_default();
        let due = state
            .as_ref()
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s.next_attempt))
            .unwrap_or_else(SystemTime::now);
        self.schedule(id, due, keys);
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

/// Reads the start of a queue file: enough for the envelope block of any message mailroot writes.
fn read_head(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0; 64 * 1024];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    buf.truncate(n);
    // A block with thousands of recipients may be longer: read it all then.
    if n == buf.capacity() {
        return std::fs::read(path);
    }
    Ok(buf)
}

/// A running delivery service.
pub struct Service {
    engine: Arc<Engine>,
    threads: Vec<JoinHandle<()>>,
}

impl Service {
    /// Starts delivery for `vs`'s Queue (and Pickup). Returns the service and the store to commit
    /// through (it tells the scheduler about new Queue files).
    pub fn start(vs: Arc<VirtualServer>, store: Store) -> Result<(Service, Store), String> {
        let d = &vs.delivery;
        let dns =
            Dns::new(&d.dns_servers, Duration::from_secs(5), 2).map_err(|e| format!("DNS: {e}"))?;
        let tls = ClientTls::new(d.ca_file.as_deref()).map_err(|e| e.to_string())?;
        // The store tells the engine about new Queue files; a weak reference, so that the engine
        // (which holds the store) is not kept alive by its own store.
        let engine = Arc::new_cyclic(|me: &Weak<Engine>| {
            let worker = me.clone();
            let pool = Pool::new(
                "delivery",
                // Started with the first due message: an idle relay keeps no delivery thread.
                0,
                vs.delivery.max_out as usize,
                move |ids: Vec<String>, _: &mut ()| {
                    // Gone only at shutdown: the messages stay in Queue for the next start.
                    if let Some(e) = worker.upgrade() {
                        deliver_batch(&e, ids);
                    }
                },
            );
            let me = me.clone();
            let store = store.with_notify(Arc::new(move |id: &str, block: &[u8]| {
                if let Some(e) = me.upgrade() {
                    e.enqueue_new(id, block);
                }
            }));
            Engine {
                vs: vs.clone(),
                store,
                dns,
                tls,
                sched: Mutex::new(Scheduler::new()),
                wake: Condvar::new(),
                slots: Arc::new(Slots::default()),
                idle: Mutex::new(Vec::new()),
                stopping: AtomicBool::new(false),
                pool,
            }
        });
        let store = engine.store.clone();
        let mut threads = Vec::new();

        // Resume what is queued.
        let ids = store.queued_ids().map_err(|e| e.to_string())?;
        if !ids.is_empty() {
            log::info!(
                "SMTPSVC{}: {} message(s) in {} resume delivery",
                vs.instance,
                ids.len(),
                store.queue_dir().display()
            );
        }
        for id in &ids {
            engine.enqueue(id);
        }

        // The dispatcher: hands messages to the delivery threads when they fall due (retries, and
        // what was queued at start-up), and closes cached connections that waited too long.
        let e = engine.clone();
        threads.push(spawn("dispatcher", move || {
            let mut s = e.sched.lock().unwrap_or_else(|p| p.into_inner());
            while !e.stopping() {
                let now = SystemTime::now();
                e.dispatch_due(&mut s);
                drop(s);
                e.close_idle(None);
                s = e.sched.lock().unwrap_or_else(|p| p.into_inner());
                let idle_open = !e.idle.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
                let wait = s
                    .next_due()
                    .map(|d| d.duration_since(now).unwrap_or(Duration::ZERO))
                    .unwrap_or(Duration::from_secs(60))
                    .min(if idle_open {
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
        })?);

        // Pickup.
        let e = engine.clone();
        threads.push(spawn("pickup", move || {
            crate::mailroot::pickup::run(&e.vs, &e.store, &|| e.stopping())
        })?);

        Ok((Service { engine, threads }, store))
    }

    /// Stops taking new work; attempts in progress finish on their own (their results are on disk).
    pub fn stop(self) {
        self.engine.stopping.store(true, Ordering::Release);
        self.engine.wake.notify_all();
        self.engine.slots.free.notify_all();
        self.engine.close_idle(None);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| format!("cannot start the {name} thread: {e}"))
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
            && h.conn.sent < engine.vs.delivery.max_batched
            && h.conn.healthy
            && let Some(n) = engine.next_for(&h.key)
        {
            queue.push_back(n);
        }
    }
    if let Some(h) = held {
        engine.put_idle(h);
    }
}
