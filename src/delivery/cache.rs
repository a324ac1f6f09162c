//! Outbound connections between messages: a slot per connection toward each destination
//! (MaxOutConnectionsPerDomain), and the open connections that wait a moment for the next message to
//! the same destination (a connection cache, like Postfix's scache), up to MaxBatchedMessages each.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::client::Connection;

/// How long an idle connection is kept for the next message to the same destination.
pub const IDLE_KEEP: Duration = Duration::from_secs(2);

/// Connections per destination key.
#[derive(Debug, Default)]
struct Slots {
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

/// The slots and the idle connections of one delivery service.
pub struct Cache {
    slots: Arc<Slots>,
    idle: Mutex<Vec<(Instant, Held)>>,
    /// MaxOutConnectionsPerDomain.
    per_destination: u32,
    /// MaxBatchedMessages.
    max_batched: u32,
}

impl Cache {
    /// An empty cache with these limits.
    pub fn new(per_destination: u32, max_batched: u32) -> Cache {
        Cache {
            slots: Arc::new(Slots::default()),
            idle: Mutex::new(Vec::new()),
            per_destination,
            max_batched,
        }
    }

    /// Waits for a connection slot toward `key`; `None` once `stopping()` says so.
    pub fn slot(&self, key: &str, stopping: &dyn Fn() -> bool) -> Option<Slot> {
        let max = self.per_destination;
        let mut s = self.slots.map.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if stopping() {
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
            self.close_idle(Some(key), false);
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

    /// Wakes every thread waiting for a slot (to see that delivery is stopping).
    pub fn wake_waiters(&self) {
        self.slots.free.notify_all();
    }

    /// Whether `h` may carry another message (MaxBatchedMessages not reached, still healthy).
    pub fn reusable(&self, h: &Held) -> bool {
        h.conn.sent < self.max_batched && h.conn.healthy
    }

    /// An idle open connection to `key` that may carry another message, if there is one.
    pub fn take_idle(&self, key: &str) -> Option<Held> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let pos = idle
            .iter()
            .position(|(t, h)| h.key == key && t.elapsed() < IDLE_KEEP)?;
        Some(idle.swap_remove(pos).1)
    }

    /// Keeps `h` open for the next message to the same destination, or closes it (not reusable, or
    /// `stopping`). Returns whether it is the only idle connection now (then whoever closes idle
    /// connections in time must hear of it).
    pub fn put_idle(&self, h: Held, stopping: bool) -> bool {
        if stopping || !self.reusable(&h) {
            h.conn.quit();
            return false;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.push((Instant::now(), h));
        idle.len() == 1
    }

    /// Whether any connection is waiting.
    pub fn has_idle(&self) -> bool {
        !self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Closes idle connections that waited too long, those to `key`, or all of them (`all`).
    pub fn close_idle(&self, key: Option<&str>, all: bool) {
        let expired: Vec<Held> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let (old, keep): (Vec<_>, Vec<_>) = idle.drain(..).partition(|(t, h)| {
                all || t.elapsed() >= IDLE_KEEP || key.is_some_and(|k| h.key == k)
            });
            *idle = keep;
            old.into_iter().map(|(_, h)| h).collect()
        };
        for h in expired {
            h.conn.quit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_destination_and_given_back() {
        let c = Cache::new(2, 20);
        let never = || false;
        let a1 = c.slot("a", &never).unwrap();
        let _a2 = c.slot("a", &never).unwrap();
        let _b1 = c.slot("b", &never).unwrap();
        assert_eq!(c.slots.map.lock().unwrap().get("a"), Some(&2));
        drop(a1);
        assert_eq!(c.slots.map.lock().unwrap().get("a"), Some(&1));
        let _a3 = c.slot("a", &never).unwrap();
        // A full destination waits; a stopping service gives up instead.
        assert!(c.slot("a", &|| true).is_none());
        drop(_b1);
        assert!(
            !c.slots.map.lock().unwrap().contains_key("b"),
            "no zero entries"
        );
    }
}
