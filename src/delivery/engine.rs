//! The delivery service of one Queue folder: a dispatcher thread that hands due messages to a pool of
//! delivery threads (at most MaxOutConnections), a thread that takes in the identifiers of newly
//! committed messages, and the Pickup thread. Connections per destination are limited by
//! MaxOutConnectionsPerDomain; a thread that finished a message on an open connection carries on with
//! the next due message for the same destination, up to MaxBatchedMessages.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::attempt;
use super::client::Connection;
use super::dns::Dns;
use super::route::{self, Route};
use super::scheduler::Scheduler;
use super::tls::ClientTls;
use crate::config::VirtualServer;
use crate::mailroot::envelope::Envelope;
use crate::mailroot::state::{State, Status};
use crate::mailroot::store::Store;
use crate::net::pool::Pool;

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
    slots: Mutex<HashMap<String, u32>>,
    slot_free: Condvar,
    stopping: AtomicBool,
}

/// A connection slot for one destination key, given back when dropped.
pub struct Slot<'a> {
    engine: &'a Engine,
    key: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut s = self.engine.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = s.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.remove(&self.key);
            }
        }
        self.engine.slot_free.notify_all();
    }
}

/// An open connection with its slot.
pub struct Held<'a> {
    /// Destination key.
    pub key: String,
    /// The connection.
    pub conn: Connection,
    _slot: Slot<'a>,
}

impl<'a> Held<'a> {
    /// Wraps a fresh connection and its slot.
    pub fn new(key: String, conn: Connection, slot: Slot<'a>) -> Held<'a> {
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
    pub fn slot(&self, key: &str) -> Option<Slot<'_>> {
        let max = self.vs.delivery.max_out_per_domain;
        let mut s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.stopping() {
                return None;
            }
            let n = s.entry(key.to_string()).or_insert(0);
            if *n < max {
                *n += 1;
                return Some(Slot {
                    engine: self,
                    key: key.to_string(),
                });
            }
            s = self
                .slot_free
                .wait_timeout(s, Duration::from_millis(500))
                .unwrap_or_else(|p| p.into_inner())
                .0;
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
        let mut s = self.sched.lock().unwrap_or_else(|p| p.into_inner());
        if !s.contains(id) {
            s.add(id, due, keys);
            self.wake.notify_all();
        }
    }

    /// Ends an attempt (see `Scheduler::finished`).
    pub fn finished(&self, id: &str, next: Option<(SystemTime, Vec<String>)>) {
        let mut s = self.sched.lock().unwrap_or_else(|p| p.into_inner());
        s.finished(id, next);
        self.wake.notify_all();
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
        let tls = ClientTls::new(d.ca_file.as_deref())?;
        let (tx, rx) = crossbeam_channel::unbounded::<String>();
        let store = store.with_notify(tx);
        let engine = Arc::new(Engine {
            vs: vs.clone(),
            store: store.clone(),
            dns,
            tls,
            sched: Mutex::new(Scheduler::new()),
            wake: Condvar::new(),
            slots: Mutex::new(HashMap::new()),
            slot_free: Condvar::new(),
            stopping: AtomicBool::new(false),
        });
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

        // New messages from the SMTP side, Pickup and reports.
        let e = engine.clone();
        threads.push(spawn("queue-intake", move || {
            while let Ok(id) = rx.recv() {
                if e.stopping() {
                    break;
                }
                e.enqueue(&id);
            }
        })?);

        // The dispatcher: hands due messages to the delivery threads.
        let e = engine.clone();
        threads.push(spawn("dispatcher", move || {
            let worker_engine = e.clone();
            let pool: Pool<String, ()> = Pool::new(
                "delivery",
                1,
                e.vs.delivery.max_out as usize,
                move |id: String, _: &mut ()| {
                    deliver_batch(&worker_engine, id);
                },
            );
            let mut s = e.sched.lock().unwrap_or_else(|p| p.into_inner());
            while !e.stopping() {
                let now = SystemTime::now();
                if let Some(id) = s.pop_due(now) {
                    pool.submit(id);
                    continue;
                }
                let wait = s
                    .next_due()
                    .map(|d| d.duration_since(now).unwrap_or(Duration::ZERO))
                    .unwrap_or(Duration::from_secs(60))
                    .min(Duration::from_secs(60));
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
        self.engine.slot_free.notify_all();
        for t in self.threads {
            // The intake thread ends when the last store clone (and its sender) is gone; don't wait.
            if t.thread().name() == Some("queue-intake") {
                continue;
            }
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

/// Delivers `id`, then as long as the connection it used stays open, the next due messages for the
/// same destination (MaxBatchedMessages per connection).
fn deliver_batch(engine: &Engine, id: String) {
    let mut held: Option<Held<'_>> = None;
    let mut current = Some(id);
    while let Some(id) = current.take() {
        let next = attempt::run(engine, &id, &mut held);
        engine.finished(&id, next);
        if engine.stopping() {
            break;
        }
        if let Some(h) = &held
            && h.conn.sent < engine.vs.delivery.max_batched
        {
            current = engine.next_for(&h.key);
        }
    }
    if let Some(h) = held {
        h.conn.quit();
    }
}
