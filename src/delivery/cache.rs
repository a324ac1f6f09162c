//! Outbound connections between messages: a slot per connection toward each destination
//! (MaxOutConnectionsPerDomain), and the open connections that wait a moment for the next message to
//! the same destination (a connection cache, like Postfix's scache), up to MaxBatchedMessages each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::Connection;

/// How long an idle connection is kept for the next message to the same destination.
pub const IDLE_KEEP: Duration = Duration::from_secs(2);

/// Connections per destination key.
#[derive(Debug, Default)]
struct Slots {
    map: Mutex<HashMap<String, u32>>,
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
    /// MaxBatchedMessages.
    max_batched: u32,
}

impl Cache {
    /// An empty cache; a connection carries at most `max_batched` messages.
    pub fn new(max_batched: u32) -> Cache {
        Cache {
            slots: Arc::new(Slots::default()),
            idle: Mutex::new(Vec::new()),
            max_batched,
        }
    }

    /// A connection slot toward `key` if fewer than `max` connections to it are open (idle ones
    /// count; one is closed to make room). Never waits: the scheduler's window keeps threads from
    /// asking for more than a destination allows.
    pub fn slot(&self, key: &str, max: u32) -> Option<Slot> {
        for _ in 0..2 {
            {
                let mut s = self.slots.map.lock().unwrap_or_else(|p| p.into_inner());
                let n = s.entry(key.to_string()).or_insert(0);
                if *n < max.max(1) {
                    *n += 1;
                    return Some(Slot {
                        slots: self.slots.clone(),
                        key: key.to_string(),
                    });
                }
            }
            // An idle cached connection to this destination holds a slot: free one.
            self.close_idle(Some(key), false);
        }
        None
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
        let c = Cache::new(20);
        let a1 = c.slot("a", 2).unwrap();
        let _a2 = c.slot("a", 2).unwrap();
        let b1 = c.slot("b", 2).unwrap();
        assert_eq!(c.slots.map.lock().unwrap().get("a"), Some(&2));
        assert!(c.slot("a", 2).is_none(), "full: no waiting");
        drop(a1);
        assert_eq!(c.slots.map.lock().unwrap().get("a"), Some(&1));
        let _a3 = c.slot("a", 2).unwrap();
        drop(b1);
        assert!(
            !c.slots.map.lock().unwrap().contains_key("b"),
            "no zero entries"
        );
    }
}
