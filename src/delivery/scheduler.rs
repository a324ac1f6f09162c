//! The due-time queue: which queued message is tried next, in due order, without rescanning the Queue
//! folder for every send. Messages in flight are out of the heap until their attempt ends. Each entry
//! remembers the connection keys of its pending recipients (see `route`), so a worker holding an open
//! connection can ask for the next due message that the same connection can carry.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
struct Entry {
    due: SystemTime,
    /// Bumped on every (re)schedule; heap items with an older generation are stale.
    generation: u64,
    keys: Vec<String>,
}

/// The queue of due times.
#[derive(Debug, Default)]
pub struct Scheduler {
    heap: BinaryHeap<Reverse<(SystemTime, u64, String)>>,
    entries: HashMap<String, Entry>,
    in_flight: HashSet<String>,
    next_generation: u64,
}

impl Scheduler {
    /// An empty queue.
    pub fn new() -> Scheduler {
        Scheduler::default()
    }

    /// Adds (or moves) `id`, due at `due`; `keys` are its pending recipients' connection keys.
    /// A message in flight is left alone: its attempt will reschedule it.
    pub fn add(&mut self, id: &str, due: SystemTime, keys: Vec<String>) {
        if self.in_flight.contains(id) {
            return;
        }
        self.next_generation += 1;
        let g = self.next_generation;
        self.entries.insert(
            id.to_string(),
            Entry {
                due,
                generation: g,
                keys,
            },
        );
        self.heap.push(Reverse((due, g, id.to_string())));
    }

    /// Whether `id` is known (waiting or in flight).
    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id) || self.in_flight.contains(id)
    }

    fn drop_stale(&mut self) {
        while let Some(Reverse((_, g, id))) = self.heap.peek() {
            match self.entries.get(id) {
                Some(e) if e.generation == *g => break,
                _ => {
                    self.heap.pop();
                }
            }
        }
    }

    /// When the next message is due, if any is waiting.
    pub fn next_due(&mut self) -> Option<SystemTime> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((d, _, _))| *d)
    }

    /// Takes the first message due at `now`, marking it in flight.
    pub fn pop_due(&mut self, now: SystemTime) -> Option<String> {
        self.drop_stale();
        let due = self.heap.peek().is_some_and(|Reverse((d, _, _))| *d <= now);
        if !due {
            return None;
        }
        let Reverse((_, _, id)) = self.heap.pop()?;
        self.entries.remove(&id);
        self.in_flight.insert(id.clone());
        Some(id)
    }

    /// Takes the first due message and, when all its pending recipients share one connection key,
    /// up to `max - 1` more due messages for the same key (they go out over one connection).
    pub fn pop_due_batch(&mut self, now: SystemTime, max: usize) -> Vec<String> {
        self.drop_stale();
        let due = self.heap.peek().is_some_and(|Reverse((d, _, _))| *d <= now);
        if !due {
            return Vec::new();
        }
        let Some(Reverse((_, _, id))) = self.heap.pop() else {
            return Vec::new();
        };
        let keys = self.entries.remove(&id).map(|e| e.keys).unwrap_or_default();
        self.in_flight.insert(id.clone());
        let mut batch = vec![id];
        if let [key] = keys.as_slice() {
            while batch.len() < max {
                match self.take_due_with_key(key, now, usize::MAX) {
                    Some(next) => batch.push(next),
                    None => break,
                }
            }
        }
        batch
    }

    /// Takes a due message whose pending recipients all share connection `key` (for connection
    /// reuse), marking it in flight. Looks at most at `limit` due messages.
    pub fn take_due_with_key(
        &mut self,
        key: &str,
        now: SystemTime,
        limit: usize,
    ) -> Option<String> {
        let id = self
            .entries
            .iter()
            .filter(|(_, e)| e.due <= now && !e.keys.is_empty() && e.keys.iter().all(|k| k == key))
            .take(limit)
            .min_by_key(|(_, e)| e.due)
            .map(|(id, _)| id.clone())?;
        self.entries.remove(&id);
        self.in_flight.insert(id.clone());
        Some(id)
    }

    /// Ends an attempt: back in the queue at `next` (with its remaining keys), or gone.
    pub fn finished(&mut self, id: &str, next: Option<(SystemTime, Vec<String>)>) {
        self.in_flight.remove(id);
        if let Some((due, keys)) = next {
            self.add(id, due, keys);
        }
    }

    /// Messages waiting (not in flight).
    pub fn waiting(&self) -> usize {
        self.entries.len()
    }
}

/// The delay before retry number `attempts` (1 = the first retry) by SmtpRemoteProgressiveRetry:
/// the list gives the first, second, third … intervals; the last one repeats.
pub fn retry_delay(schedule: &[Duration], attempts: u32) -> Duration {
    let i = (attempts.max(1) as usize - 1).min(schedule.len().saturating_sub(1));
    schedule.get(i).copied().unwrap_or(Duration::from_secs(900))
}

/// Rounds a retry time up to a grid of a tenth of the delay (at least a second), so messages that
/// failed toward the same destination at about the same time are retried together, over one
/// connection, as IIS retries a destination's queue rather than each message on its own clock.
pub fn align(t: SystemTime, delay: Duration) -> SystemTime {
    let grid = (delay.as_secs() / 10).max(1);
    let since = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs.div_ceil(grid) * grid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn due_order_and_in_flight() {
        let mut s = Scheduler::new();
        s.add("b", t(20), vec!["k".into()]);
        s.add("a", t(10), vec!["k".into()]);
        s.add("c", t(30), vec!["j".into()]);
        assert_eq!(s.next_due(), Some(t(10)));
        assert_eq!(s.pop_due(t(5)), None);
        assert_eq!(s.pop_due(t(25)).as_deref(), Some("a"));
        assert_eq!(s.pop_due(t(25)).as_deref(), Some("b"));
        assert_eq!(s.pop_due(t(25)), None);
        s.add("a", t(0), vec![]);
        assert_eq!(s.pop_due(t(25)), None, "in flight: not added twice");
        s.finished("a", Some((t(40), vec!["k".into()])));
        s.finished("b", None);
        assert!(!s.contains("b"));
        assert_eq!(s.waiting(), 2);
        // Moving an entry leaves a stale heap item that is skipped.
        s.add("c", t(50), vec!["j".into()]);
        assert_eq!(s.next_due(), Some(t(40)));
        assert_eq!(s.pop_due(t(100)).as_deref(), Some("a"));
        assert_eq!(s.pop_due(t(100)).as_deref(), Some("c"));
        assert_eq!(s.pop_due(t(100)), None);
    }

    #[test]
    fn same_connection_batching() {
        let mut s = Scheduler::new();
        s.add("x", t(1), vec!["host:a".into()]);
        s.add("y", t(2), vec!["host:a".into(), "mx:b".into()]);
        s.add("z", t(3), vec!["host:a".into()]);
        s.add("w", t(99), vec!["host:a".into()]);
        assert_eq!(
            s.take_due_with_key("host:a", t(10), 100).as_deref(),
            Some("x")
        );
        assert_eq!(
            s.take_due_with_key("host:a", t(10), 100).as_deref(),
            Some("z")
        );
        assert_eq!(
            s.take_due_with_key("host:a", t(10), 100),
            None,
            "y needs two connections, w is not due"
        );
        assert_eq!(s.pop_due(t(10)).as_deref(), Some("y"));
    }

    #[test]
    fn due_messages_for_one_destination_travel_together() {
        let mut s = Scheduler::new();
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            s.add(id, t(i as u64), vec!["host:x".into()]);
        }
        s.add("e", t(1), vec!["mx:y".into()]);
        assert_eq!(s.pop_due_batch(t(10), 3), vec!["a", "b", "c"]);
        let rest = s.pop_due_batch(t(10), 3);
        assert_eq!(
            rest,
            vec!["e"],
            "the earliest due comes first: e (t=1) before d (t=3)"
        );
        assert_eq!(s.pop_due_batch(t(10), 3), vec!["d"]);
        assert!(s.pop_due_batch(t(10), 3).is_empty());
    }

    #[test]
    fn retry_times_align_on_a_grid() {
        let d = Duration::from_secs(900);
        assert_eq!(align(t(1000), d), t(1080));
        assert_eq!(align(t(1079), d), t(1080));
        assert_eq!(align(t(1080), d), t(1080));
        assert_eq!(
            align(t(5) + Duration::from_millis(300), Duration::from_secs(1)),
            t(6),
            "never earlier"
        );
    }

    #[test]
    fn iis_schedule() {
        let m = |n: u64| Duration::from_secs(n * 60);
        let sched = [m(15), m(30), m(60), m(240)];
        assert_eq!(retry_delay(&sched, 1), m(15));
        assert_eq!(retry_delay(&sched, 3), m(60));
        assert_eq!(retry_delay(&sched, 4), m(240));
        assert_eq!(retry_delay(&sched, 9), m(240));
    }
}
