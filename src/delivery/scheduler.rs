//! Which queued message is tried next, and on which delivery thread. The unit of scheduling is the
//! **destination**: a smart host, a domain route, or a recipient domain's MX set (the connection key of
//! `route`). Each destination has its own ready queue and a concurrency **window**; a message is handed
//! to a delivery thread only when its destination has room in its window, so a destination that hangs
//! occupies at most its window of threads and the others are served round robin by the rest. Messages
//! not yet due (retries) wait in one heap ordered by due time.
//!
//! A destination whose next hops are all dead (`endpoints`) stops taking connections until its dead
//! period ends: the messages that reach it meanwhile are deferred once each (an attempt that connects to
//! nothing and writes why and until when into the message's state), then parked in memory; when the
//! time comes, one message probes, and the first success resumes the whole destination at once.
//! docs/delivery.md draws the states.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime};

/// How a destination's window moves (see [`Destination::window`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// DestinationInitialConcurrency.
    pub initial: u32,
    /// MaxOutConnectionsPerDomain (or the route's own).
    pub max: u32,
    /// MaxMessagesPerMinute (0: no cap).
    pub per_minute: u32,
}

/// A destination's state, for the log and the destination table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestState {
    /// Taking connections up to its window.
    Ready,
    /// Every next hop is dead: no connection until `until`.
    Dead {
        /// When one message may probe.
        until: SystemTime,
        /// The last connection error.
        reason: String,
    },
    /// The dead period is over and one message is trying.
    Probing {
        /// The last connection error.
        reason: String,
    },
}

/// One destination: its queues, its window and its state.
#[derive(Debug)]
pub struct Destination {
    /// Messages due now, in order.
    ready: VecDeque<String>,
    /// Messages deferred during the current dead period, waiting for the destination to come back.
    parked: VecDeque<String>,
    /// Messages deferred (their state written) since the destination went dead.
    deferred: HashSet<String>,
    /// A deferral job is at work.
    deferring: bool,
    /// Delivery threads working for this destination (each holds at most one connection to it).
    pub busy: u32,
    /// How many threads (and so connections) it may have at once.
    pub window: u32,
    /// Successful deliveries since the window last grew.
    credit: u32,
    /// After a throttling answer: the window may not grow past this until the time given.
    ceiling: Option<(u32, SystemTime)>,
    limits: Limits,
    /// Ready, dead or probing.
    pub state: DestState,
    /// Messages delivered (or settled) over its connections.
    pub delivered: u64,
    /// Throttling answers since the last delivery.
    throttles: u32,
    /// MaxMessagesPerMinute's token bucket: tokens, and when it was last filled.
    bucket: (f64, SystemTime),
}

impl Destination {
    fn new(limits: Limits) -> Destination {
        Destination {
            ready: VecDeque::new(),
            parked: VecDeque::new(),
            deferred: HashSet::new(),
            deferring: false,
            busy: 0,
            window: limits.initial.clamp(1, limits.max.max(1)),
            credit: 0,
            ceiling: None,
            limits,
            state: DestState::Ready,
            delivered: 0,
            throttles: 0,
            bucket: (Self::burst(limits.per_minute), SystemTime::UNIX_EPOCH),
        }
    }

    /// The bucket holds a second's worth of messages (at least one).
    fn burst(per_minute: u32) -> f64 {
        (f64::from(per_minute) / 60.0).max(1.0)
    }

    /// Whether a message may go now under MaxMessagesPerMinute (no cap: always).
    fn token(&mut self, now: SystemTime) -> bool {
        let rate = self.limits.per_minute;
        if rate == 0 {
            return true;
        }
        let (tokens, at) = self.bucket;
        let gained = now
            .duration_since(at)
            .map(|d| d.as_secs_f64() * f64::from(rate) / 60.0)
            .unwrap_or(0.0);
        self.bucket = ((tokens + gained).min(Self::burst(rate)), now);
        self.bucket.0 >= 1.0
    }

    /// Spends one token (after [`Destination::token`] said yes).
    fn spend(&mut self) {
        if self.limits.per_minute > 0 {
            self.bucket.0 -= 1.0;
        }
    }

    /// When the next token comes, for a capped destination with mail waiting and none left.
    fn next_token(&self) -> Option<SystemTime> {
        let rate = self.limits.per_minute;
        if rate == 0 || self.ready.is_empty() || self.bucket.0 >= 1.0 {
            return None;
        }
        let secs = (1.0 - self.bucket.0) * 60.0 / f64::from(rate);
        Some(self.bucket.1 + Duration::from_secs_f64(secs.max(0.001)))
    }

    /// Messages waiting for it (ready or parked).
    pub fn queued(&self) -> usize {
        self.ready.len() + self.parked.len()
    }

    fn dead_until(&self) -> Option<SystemTime> {
        match self.state {
            DestState::Dead { until, .. } => Some(until),
            _ => None,
        }
    }
}

/// One row of the destination table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The destination's key (`mx:<domain>:<port>`, `host:<host>:<port>`, …).
    pub key: String,
    /// Ready, dead until a time, or probing.
    pub state: DestState,
    /// Its window.
    pub window: u32,
    /// Threads at work for it.
    pub busy: u32,
    /// Messages due for it now (ready or parked; retries not yet due wait apart).
    pub queued: usize,
    /// When the oldest of them arrived.
    pub oldest: Option<SystemTime>,
    /// Messages delivered over its connections since the start.
    pub delivered: u64,
    /// Ready, but the next hop throttled it since its last delivery (its window shrank).
    pub throttled: bool,
    /// Messages waiting for a retry (not due yet) whose first pending destination it is.
    pub retrying: usize,
}

/// A piece of work for a delivery thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Attempt these messages, in order, over one connection to `key`; counts toward its window.
    Deliver {
        /// The destination.
        key: String,
        /// One message (more come from [`Scheduler::take_for`] while the connection lasts).
        ids: Vec<String>,
    },
    /// Attempt these messages of a dead destination: no connection is made, each one's state says
    /// why and until when. Does not count toward the window.
    Defer {
        /// The destination.
        key: String,
        /// The messages.
        ids: Vec<String>,
    },
}

/// What an attempt learned about a destination's next hops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feedback {
    /// A message went out (or was refused for itself) over a working connection.
    Delivered,
    /// The next hop refused or throttled a connection (refused, timed out, 421 or 4xx before MAIL).
    Throttled,
    /// Every next hop of the destination is dead until then.
    Dead(SystemTime, String),
}

/// What [`Scheduler::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A delivery thread is working on it: the claim was not made.
    InFlight,
    /// Claimed: out of every queue and marked in flight, so no thread takes it until
    /// [`Scheduler::finished`] gives it back. Its destinations, when the schedule knew it.
    Taken(Option<Vec<String>>),
}

/// What [`Scheduler::retry_now`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retried {
    /// It was waiting for a retry time and is due now.
    Due,
    /// It was due already; its destination (dead until now) probes at once.
    Probing,
    /// It was due already (ready, or parked while its destination probes).
    AlreadyDue,
    /// A delivery thread is working on it.
    InFlight,
    /// The schedule does not know it.
    Unknown,
}

#[derive(Debug, Clone)]
struct Waiting {
    /// Bumped on every (re)schedule; heap items with an older generation are stale.
    generation: u64,
    keys: Vec<String>,
}

/// Messages deferred at once by one deferral job.
const DEFER_CHUNK: usize = 64;

/// How long a window stays under the level a next hop throttled at.
const CEILING_HOLD: Duration = Duration::from_secs(60);

/// The schedule of one Queue folder.
pub struct Scheduler {
    heap: BinaryHeap<Reverse<(SystemTime, u64, String)>>,
    /// Messages not due yet, by identifier.
    waiting: HashMap<String, Waiting>,
    /// Messages in a destination's ready or parked queue, and their keys.
    queued: HashMap<String, Vec<String>>,
    /// Messages a thread is working on.
    in_flight: HashSet<String>,
    dests: HashMap<String, Destination>,
    /// Destinations that may have work, in round-robin order.
    ring: VecDeque<String>,
    next_generation: u64,
    limits: Box<dyn Fn(&str) -> Limits + Send>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("waiting", &self.waiting.len())
            .field("queued", &self.queued.len())
            .field("in_flight", &self.in_flight.len())
            .field("destinations", &self.dests.len())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// An empty schedule; `limits` gives each destination's window limits by key.
    pub fn new(limits: impl Fn(&str) -> Limits + Send + 'static) -> Scheduler {
        Scheduler {
            heap: BinaryHeap::new(),
            waiting: HashMap::new(),
            queued: HashMap::new(),
            in_flight: HashSet::new(),
            dests: HashMap::new(),
            ring: VecDeque::new(),
            next_generation: 0,
            limits: Box::new(limits),
        }
    }

    /// Whether `id` is known (waiting, queued or in flight).
    pub fn contains(&self, id: &str) -> bool {
        self.waiting.contains_key(id) || self.queued.contains_key(id) || self.in_flight.contains(id)
    }

    /// Adds (or moves) `id`, due at `due`; `keys` are its pending recipients' destinations, the one
    /// it is scheduled under first. A message in flight is left alone: its attempt reschedules it.
    pub fn add(&mut self, id: &str, due: SystemTime, keys: Vec<String>, now: SystemTime) {
        if self.in_flight.contains(id) || self.queued.contains_key(id) {
            return;
        }
        if due <= now {
            self.waiting.remove(id);
            self.enqueue(id.to_string(), keys, false);
            return;
        }
        self.next_generation += 1;
        let g = self.next_generation;
        self.waiting.insert(
            id.to_string(),
            Waiting {
                generation: g,
                keys,
            },
        );
        self.heap.push(Reverse((due, g, id.to_string())));
    }

    fn key_of(keys: &[String]) -> String {
        keys.first().cloned().unwrap_or_default()
    }

    fn dest(&mut self, key: &str) -> &mut Destination {
        if !self.dests.contains_key(key) {
            let limits = (self.limits)(key);
            self.dests.insert(key.to_string(), Destination::new(limits));
        }
        self.dests
            .get_mut(key)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// Puts `id` in its destination's ready queue (at the front for a message that was throttled).
    fn enqueue(&mut self, id: String, keys: Vec<String>, front: bool) {
        let key = Self::key_of(&keys);
        self.queued.insert(id.clone(), keys);
        let d = self.dest(&key);
        // Already deferred in this dead period: parked, so that the ready queue of a dead
        // destination only ever holds what is still to be deferred.
        if matches!(d.state, DestState::Dead { .. }) && d.deferred.contains(&id) {
            d.parked.push_back(id);
            return;
        }
        if front {
            d.ready.push_front(id);
        } else {
            d.ready.push_back(id);
        }
        if !self.ring.contains(&key) {
            self.ring.push_back(key);
        }
    }

    /// Moves messages that fell due into their destinations' ready queues.
    fn promote(&mut self, now: SystemTime) {
        while let Some(Reverse((due, g, id))) = self.heap.peek() {
            if *due > now {
                break;
            }
            let (g, id) = (*g, id.clone());
            self.heap.pop();
            if self.waiting.get(&id).is_some_and(|w| w.generation == g)
                && let Some(w) = self.waiting.remove(&id)
            {
                self.enqueue(id, w.keys, false);
            }
        }
        // Dead periods that ended: the destination probes.
        for (key, d) in self.dests.iter_mut() {
            if let DestState::Dead { until, reason } = &d.state
                && *until <= now
            {
                d.state = DestState::Probing {
                    reason: reason.clone(),
                };
                if d.queued() > 0 && !self.ring.contains(key) {
                    self.ring.push_back(key.clone());
                }
            }
        }
    }

    /// When the next message falls due or a dead period ends, if anything waits for a time.
    pub fn next_wake(&mut self) -> Option<SystemTime> {
        while let Some(Reverse((_, g, id))) = self.heap.peek() {
            if self.waiting.get(id).is_some_and(|w| w.generation == *g) {
                break;
            }
            self.heap.pop();
        }
        let due = self.heap.peek().map(|Reverse((d, _, _))| *d);
        let dead = self
            .dests
            .values()
            .filter_map(|d| d.dead_until().or_else(|| d.next_token()))
            .min();
        match (due, dead) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next piece of work at `now`, taking destinations round robin; `None` when every
    /// destination with mail is at its window (or dead, or probing already).
    pub fn next_job(&mut self, now: SystemTime) -> Option<Job> {
        self.promote(now);
        for _ in 0..self.ring.len() {
            let key = self.ring.pop_front()?;
            let job = {
                let Some(d) = self.dests.get_mut(&key) else {
                    continue;
                };
                match &d.state {
                    DestState::Dead { .. } => {
                        // Its ready queue holds only what is still to be deferred (see `enqueue`):
                        // one deferral job at a time.
                        if d.ready.is_empty() || d.deferring {
                            None
                        } else {
                            d.deferring = true;
                            let n = d.ready.len().min(DEFER_CHUNK);
                            let ids: Vec<String> = d.ready.drain(..n).collect();
                            d.deferred.extend(ids.iter().cloned());
                            Some(Job::Defer {
                                key: key.clone(),
                                ids,
                            })
                        }
                    }
                    DestState::Probing { .. } => {
                        if d.busy > 0 || !d.token(now) {
                            None
                        } else {
                            let id = d.ready.pop_front().or_else(|| d.parked.pop_front());
                            id.map(|id| {
                                d.busy += 1;
                                d.spend();
                                Job::Deliver {
                                    key: key.clone(),
                                    ids: vec![id],
                                }
                            })
                        }
                    }
                    DestState::Ready => {
                        // Another connection only while more messages wait than connections work
                        // (each working one takes the next ready message when it is done), and
                        // never past the window.
                        if d.busy >= d.window || d.ready.len() <= d.busy as usize || !d.token(now) {
                            None
                        } else {
                            d.ready.pop_front().map(|id| {
                                d.busy += 1;
                                d.spend();
                                Job::Deliver {
                                    key: key.clone(),
                                    ids: vec![id],
                                }
                            })
                        }
                    }
                }
            };
            let more = self.dests.get(&key).is_some_and(|d| {
                !d.ready.is_empty()
                    || matches!(d.state, DestState::Probing { .. }) && d.queued() > 0
            });
            if more {
                self.ring.push_back(key);
            }
            if let Some(job) = job {
                let ids = match &job {
                    Job::Deliver { ids, .. } | Job::Defer { ids, .. } => ids,
                };
                for id in ids {
                    self.queued.remove(id);
                    self.in_flight.insert(id.clone());
                }
                return Some(job);
            }
        }
        None
    }

    /// The next ready message of `key` for a thread that holds an open connection to it (the thread
    /// is already counted in the window).
    pub fn take_for(&mut self, key: &str, now: SystemTime) -> Option<String> {
        let d = self.dests.get_mut(key)?;
        if d.state != DestState::Ready || d.ready.is_empty() || !d.token(now) {
            return None;
        }
        d.spend();
        let id = d.ready.pop_front()?;
        self.queued.remove(&id);
        self.in_flight.insert(id.clone());
        Some(id)
    }

    /// A job for `key` ended (its thread is free again).
    pub fn job_done(&mut self, job: &Job) {
        match job {
            Job::Deliver { key, .. } => {
                if let Some(d) = self.dests.get_mut(key) {
                    d.busy = d.busy.saturating_sub(1);
                    if !d.ready.is_empty() && !self.ring.contains(key) {
                        self.ring.push_back(key.clone());
                    }
                }
            }
            Job::Defer { key, .. } => {
                if let Some(d) = self.dests.get_mut(key) {
                    d.deferring = false;
                    if !d.ready.is_empty() && !self.ring.contains(key) {
                        self.ring.push_back(key.clone());
                    }
                }
            }
        }
    }

    /// Ends an attempt of `id`: due again at `next` (with its remaining destinations), or gone. A
    /// message deferred for a dead destination is parked until the destination comes back.
    pub fn finished(&mut self, id: &str, next: Option<(SystemTime, Vec<String>)>, now: SystemTime) {
        self.in_flight.remove(id);
        let Some((due, keys)) = next else {
            return;
        };
        let key = Self::key_of(&keys);
        if let Some(d) = self.dests.get_mut(&key)
            && d.deferred.contains(id)
            && matches!(d.state, DestState::Dead { .. } | DestState::Probing { .. })
        {
            d.parked.push_back(id.to_string());
            self.queued.insert(id.to_string(), keys);
            return;
        }
        self.add(id, due, keys, now);
    }

    /// Takes `id` out of the schedule for an administrator's change (see [`Claim`]).
    pub fn claim(&mut self, id: &str) -> Claim {
        if self.in_flight.contains(id) {
            return Claim::InFlight;
        }
        let keys = if let Some(w) = self.waiting.remove(id) {
            // Its heap entry is now stale (no waiting entry of its generation).
            Some(w.keys)
        } else if let Some(keys) = self.queued.remove(id) {
            if let Some(d) = self.dests.get_mut(&Self::key_of(&keys)) {
                d.ready.retain(|x| x != id);
                d.parked.retain(|x| x != id);
                d.deferred.remove(id);
            }
            Some(keys)
        } else {
            None
        };
        self.in_flight.insert(id.to_string());
        Claim::Taken(keys)
    }

    /// Ends `key`'s dead period now: one message probes it at once.
    pub fn probe_now(&mut self, key: &str) -> bool {
        let Some(d) = self.dests.get_mut(key) else {
            return false;
        };
        let DestState::Dead { reason, .. } = &d.state else {
            return false;
        };
        d.state = DestState::Probing {
            reason: reason.clone(),
        };
        if d.queued() > 0 && !self.ring.iter().any(|k| k == key) {
            self.ring.push_back(key.to_string());
        }
        true
    }

    /// Makes `id` due now; a dead destination it waits for probes at once.
    pub fn retry_now(&mut self, id: &str, now: SystemTime) -> Retried {
        if self.in_flight.contains(id) {
            return Retried::InFlight;
        }
        if let Some(w) = self.waiting.remove(id) {
            let key = Self::key_of(&w.keys);
            let probing = self.probe_now(&key);
            self.add(id, now, w.keys, now);
            return if probing {
                Retried::Probing
            } else {
                Retried::Due
            };
        }
        match self.queued.get(id) {
            Some(keys) => {
                let key = Self::key_of(keys);
                if self.probe_now(&key) {
                    Retried::Probing
                } else {
                    Retried::AlreadyDue
                }
            }
            None => Retried::Unknown,
        }
    }

    /// Makes everything waiting for a retry due now and ends every dead period (each dead
    /// destination probes at once). Returns how many messages were waiting.
    pub fn retry_all(&mut self, now: SystemTime) -> usize {
        let ids: Vec<String> = self.waiting.keys().cloned().collect();
        let n = ids.len();
        let dead: Vec<String> = self
            .dests
            .iter()
            .filter(|(_, d)| matches!(d.state, DestState::Dead { .. }))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &dead {
            self.probe_now(k);
        }
        for id in ids {
            if let Some(w) = self.waiting.remove(&id) {
                self.add(&id, now, w.keys, now);
            }
        }
        n
    }

    /// The messages delivery threads (or an administrator's change) are working on now.
    pub fn in_flight(&self) -> impl Iterator<Item = &String> {
        self.in_flight.iter()
    }

    /// Puts a throttled message back at the front of its destination's queue, due now.
    pub fn requeue(&mut self, id: &str, keys: Vec<String>) {
        self.in_flight.remove(id);
        self.enqueue(id.to_string(), keys, true);
    }

    /// Throttling answers from `key` since its last delivery.
    pub fn throttles(&self, key: &str) -> u32 {
        self.dests.get(key).map_or(0, |d| d.throttles)
    }

    /// What an attempt learned about `key`'s next hops; returns a line for the log when the
    /// destination's state changed.
    pub fn feedback(&mut self, key: &str, f: Feedback, now: SystemTime) -> Option<String> {
        let d = self.dest(key);
        match f {
            Feedback::Delivered => {
                d.delivered += 1;
                d.throttles = 0;
                let resumed = !matches!(d.state, DestState::Ready);
                if resumed {
                    d.state = DestState::Ready;
                    d.window = d.window.max(d.limits.initial.min(d.limits.max)).max(1);
                    let parked: Vec<String> = d.parked.drain(..).collect();
                    d.ready.extend(parked);
                    d.deferred.clear();
                }
                // One more connection for every window's worth of deliveries (Postfix's positive
                // feedback of 1/concurrency), up to the limit and any ceiling still in force.
                d.credit += 1;
                let cap = match d.ceiling {
                    Some((c, until)) if until > now => c,
                    _ => {
                        d.ceiling = None;
                        d.limits.max
                    }
                }
                .min(d.limits.max);
                if d.credit >= d.window && d.window < cap {
                    d.window += 1;
                    d.credit = 0;
                    log::debug!("delivery: {key}: window {}", d.window);
                }
                if !d.ready.is_empty() && !self.ring.contains(&key.to_string()) {
                    self.ring.push_back(key.to_string());
                }
                resumed.then(|| format!("delivery: {key} resumed"))
            }
            Feedback::Throttled => {
                d.throttles = d.throttles.saturating_add(1);
                // Refused while others worked: below that concurrency, and held there a while. A
                // lone connection that failed only takes one off.
                let at = d.busy;
                let w = if at > 1 {
                    d.window.min(at - 1).max(1)
                } else {
                    d.window.saturating_sub(1).max(1)
                };
                let changed = w != d.window;
                d.window = w;
                d.credit = 0;
                if at > 1 {
                    d.ceiling = Some((w, now + CEILING_HOLD));
                }
                if changed {
                    log::debug!("delivery: {key}: window {w} (throttled)");
                    Some(format!(
                        "delivery: {key} throttled at {at} connection(s); window {w}"
                    ))
                } else {
                    None
                }
            }
            Feedback::Dead(until, reason) => {
                let was_dead = matches!(d.state, DestState::Dead { .. });
                if was_dead {
                    // Another deferral found it dead: nothing changes but the last word.
                    if let DestState::Dead {
                        until: u,
                        reason: r,
                    } = &mut d.state
                    {
                        *u = (*u).max(until);
                        *r = reason;
                    }
                    return None;
                }
                d.state = DestState::Dead {
                    until,
                    reason: reason.clone(),
                };
                d.window = 1;
                d.credit = 0;
                // Messages already deferred in this dead period stay parked; the rest are deferred.
                let (again, fresh): (Vec<String>, Vec<String>) =
                    d.ready.drain(..).partition(|id| d.deferred.contains(id));
                d.parked.extend(again);
                d.ready.extend(fresh);
                if !d.ready.is_empty() && !self.ring.contains(&key.to_string()) {
                    self.ring.push_back(key.to_string());
                }
                (!was_dead).then(|| {
                    format!(
                        "delivery: {key} dead until {}: {reason}",
                        crate::time::Utc::from_system(until).rfc5322()
                    )
                })
            }
        }
    }

    /// Releases parked messages for which `old` holds (messages old enough for a delay notice or
    /// expiry), so that an attempt can settle them while their destination stays dead.
    pub fn unpark_old(&mut self, key: &str, old: impl Fn(&str) -> bool) {
        let Some(d) = self.dests.get_mut(key) else {
            return;
        };
        let (go, stay): (Vec<String>, Vec<String>) = d.parked.drain(..).partition(|id| old(id));
        d.parked.extend(stay);
        for id in &go {
            d.deferred.remove(id);
        }
        d.ready.extend(go);
        if !d.ready.is_empty() && !self.ring.iter().any(|k| k == key) {
            self.ring.push_back(key.to_string());
        }
    }

    /// Messages not yet due, and messages ready or parked.
    pub fn waiting(&self) -> usize {
        self.waiting.len() + self.queued.len()
    }

    /// Every message known (not due yet, ready, parked, in flight) and the arrival of the oldest
    /// (identifiers sort by arrival: one pass over the identifiers, no file read).
    pub fn depth(&self) -> (usize, Option<SystemTime>) {
        let n = self.waiting.len() + self.queued.len() + self.in_flight.len();
        let oldest = self
            .waiting
            .keys()
            .chain(self.queued.keys())
            .chain(self.in_flight.iter())
            .min()
            .and_then(|id| crate::id::arrival(id));
        (n, oldest)
    }

    /// The destinations with their state.
    pub fn destinations(&self) -> impl Iterator<Item = (&String, &Destination)> {
        self.dests.iter()
    }

    /// The destination table, sorted by key: one row each, for the log, queue commands and metrics.
    pub fn table(&self) -> Vec<Row> {
        let mut retrying: HashMap<&str, usize> = HashMap::new();
        for w in self.waiting.values() {
            if let Some(k) = w.keys.first() {
                *retrying.entry(k.as_str()).or_default() += 1;
            }
        }
        let mut rows: Vec<Row> = self
            .dests
            .iter()
            .map(|(key, d)| Row {
                key: key.clone(),
                state: d.state.clone(),
                window: d.window,
                busy: d.busy,
                queued: d.queued(),
                // Identifiers sort by arrival time.
                oldest: d
                    .ready
                    .iter()
                    .chain(d.parked.iter())
                    .min()
                    .and_then(|id| crate::id::arrival(id)),
                delivered: d.delivered,
                throttled: d.throttles > 0,
                retrying: retrying.get(key.as_str()).copied().unwrap_or(0),
            })
            .collect();
        rows.sort_by(|a, b| a.key.cmp(&b.key));
        rows
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

    fn sched(initial: u32, max: u32) -> Scheduler {
        Scheduler::new(move |_| Limits {
            initial,
            max,
            per_minute: 0,
        })
    }

    fn keys(k: &str) -> Vec<String> {
        vec![k.to_string()]
    }

    fn deliver(j: Option<Job>) -> (String, Vec<String>) {
        match j {
            Some(Job::Deliver { key, ids }) => (key, ids),
            other => panic!("expected a delivery job, got {other:?}"),
        }
    }

    #[test]
    fn due_order_and_in_flight() {
        let mut s = sched(5, 100);
        s.add("b", t(20), keys("k"), t(0));
        s.add("a", t(10), keys("k"), t(0));
        assert_eq!(s.next_wake(), Some(t(10)));
        assert_eq!(s.next_job(t(5)), None);
        assert_eq!(deliver(s.next_job(t(25))).1, vec!["a"]);
        assert_eq!(s.next_job(t(25)), None, "b waits for a's connection");
        assert_eq!(s.take_for("k", t(25)).as_deref(), Some("b"));
        s.add("a", t(0), keys("k"), t(25));
        assert!(s.contains("a"));
        s.finished("a", Some((t(40), keys("k"))), t(25));
        s.finished("b", None, t(25));
        assert!(!s.contains("b"));
        assert_eq!(s.waiting(), 1);
        assert_eq!(s.next_wake(), Some(t(40)));
    }

    #[test]
    fn a_destination_never_exceeds_its_window_and_others_go_round_robin() {
        let mut s = sched(2, 100);
        for i in 0..10 {
            s.add(&format!("slow{i}"), t(0), keys("slow"), t(0));
        }
        s.add("ok1", t(0), keys("ok"), t(0));
        s.add("ok2", t(0), keys("ok"), t(0));
        let mut got = Vec::new();
        while let Some(j) = s.next_job(t(1)) {
            got.push(deliver(Some(j)));
        }
        let slow = got.iter().filter(|(k, _)| k == "slow").count();
        let ok = got.iter().filter(|(k, _)| k == "ok").count();
        assert_eq!(
            (slow, ok),
            (2, 1),
            "slow: its window; ok: one connection for two messages {got:?}"
        );
        assert_eq!(s.take_for("ok", t(1)).as_deref(), Some("ok2"));
        // A thread with an open connection takes the next ready message of its destination.
        assert_eq!(s.take_for("slow", t(1)).as_deref(), Some("slow2"));
        // A finished job frees a place in the window.
        s.job_done(&Job::Deliver {
            key: "slow".into(),
            ids: vec![],
        });
        assert_eq!(deliver(s.next_job(t(1))).0, "slow");
        assert_eq!(s.next_job(t(1)), None);
    }

    #[test]
    fn the_window_grows_with_deliveries_and_shrinks_when_throttled() {
        let mut s = sched(2, 4);
        s.add("m", t(0), keys("k"), t(0));
        assert_eq!(s.dests["k"].window, 2);
        for _ in 0..2 {
            s.feedback("k", Feedback::Delivered, t(1));
        }
        assert_eq!(s.dests["k"].window, 3, "one more after a window's worth");
        for _ in 0..20 {
            s.feedback("k", Feedback::Delivered, t(1));
        }
        assert_eq!(s.dests["k"].window, 4, "never past the limit");
        // Four threads at work and the next hop refuses one: three, and no more for a while.
        s.dest("k").busy = 4;
        assert!(s.feedback("k", Feedback::Throttled, t(2)).is_some());
        assert_eq!(s.dests["k"].window, 3);
        for _ in 0..20 {
            s.feedback("k", Feedback::Delivered, t(3));
        }
        assert_eq!(s.dests["k"].window, 3, "held under the refused level");
        for _ in 0..20 {
            s.feedback("k", Feedback::Delivered, t(2) + CEILING_HOLD);
        }
        assert_eq!(s.dests["k"].window, 4, "grows back after the hold");
        // A lone connection that fails takes one off, with no hold; never below one.
        s.dest("k").busy = 1;
        s.feedback("k", Feedback::Throttled, t(200));
        assert_eq!(s.dests["k"].window, 3);
        assert_eq!(s.dests["k"].ceiling, None, "no hold for a lone failure");
        for _ in 0..5 {
            s.feedback("k", Feedback::Throttled, t(201));
        }
        assert_eq!(s.dests["k"].window, 1, "never below one");
    }

    #[test]
    fn a_dead_destination_defers_once_parks_and_probes_with_one_message() {
        let mut s = sched(5, 100);
        for i in 0..100 {
            s.add(&format!("m{i:03}"), t(0), keys("dead"), t(0));
        }
        s.add("x", t(0), keys("ok"), t(0));
        // The first attempt finds every next hop dead until t(100).
        let (_, first) = deliver(s.next_job(t(1)));
        assert!(
            s.feedback("dead", Feedback::Dead(t(100), "refused".into()), t(1))
                .is_some()
        );
        s.job_done(&Job::Deliver {
            key: "dead".into(),
            ids: vec![],
        });
        s.finished(&first[0], Some((t(100), keys("dead"))), t(1));
        // The others are deferred in chunks, one deferral job at a time, never as deliveries.
        let mut deferred = 0;
        let mut other = Vec::new();
        while let Some(j) = s.next_job(t(2)) {
            match j {
                Job::Defer { key, ids } => {
                    assert_eq!(key, "dead");
                    deferred += ids.len();
                    for id in &ids {
                        s.finished(id, Some((t(100), keys("dead"))), t(2));
                    }
                    s.job_done(&Job::Defer { key, ids });
                }
                Job::Deliver { key, ids } => other.push((key, ids)),
            }
        }
        assert_eq!(deferred, 99);
        assert_eq!(other, vec![("ok".to_string(), vec!["x".to_string()])]);
        assert_eq!(s.next_wake(), Some(t(100)));
        // Nothing happens for it until the dead period ends; then exactly one message probes.
        assert_eq!(s.next_job(t(50)), None);
        let (key, probe) = deliver(s.next_job(t(100)));
        assert_eq!((key.as_str(), probe.len()), ("dead", 1));
        assert_eq!(s.next_job(t(100)), None, "one probe at a time");
        // The probe fails: dead again, nothing deferred twice.
        s.feedback("dead", Feedback::Dead(t(200), "refused".into()), t(101));
        s.job_done(&Job::Deliver {
            key: "dead".into(),
            ids: vec![],
        });
        s.finished(&probe[0], Some((t(200), keys("dead"))), t(101));
        assert_eq!(s.next_job(t(150)), None);
        // The next probe succeeds: everything is ready at once, up to the window.
        let (_, probe) = deliver(s.next_job(t(200)));
        assert!(
            s.feedback("dead", Feedback::Delivered, t(201))
                .is_some_and(|l| l.contains("resumed"))
        );
        s.finished(&probe[0], None, t(201));
        let mut n = 0;
        while let Some(j) = s.next_job(t(201)) {
            deliver(Some(j));
            n += 1;
        }
        assert_eq!(n, 4, "the window (5) less the probe's thread");
        assert_eq!(s.dests["dead"].queued(), 95);
        let rows = s.table();
        let dead = rows.iter().find(|r| r.key == "dead").expect("a row");
        assert_eq!(
            (dead.state.clone(), dead.window, dead.busy, dead.queued),
            (DestState::Ready, 5, 5, 95)
        );
        assert_eq!(dead.delivered, 1);
    }

    #[test]
    fn old_parked_messages_are_released_for_their_notices() {
        let mut s = sched(5, 100);
        s.add("a", t(0), keys("d"), t(0));
        s.add("b", t(0), keys("d"), t(0));
        s.feedback("d", Feedback::Dead(t(100), "x".into()), t(0));
        let Some(Job::Defer { key, ids }) = s.next_job(t(1)) else {
            panic!("a deferral")
        };
        for id in &ids {
            s.finished(id, Some((t(100), keys("d"))), t(1));
        }
        s.job_done(&Job::Defer { key, ids });
        assert_eq!(s.next_job(t(2)), None);
        s.unpark_old("d", |id| id == "a");
        let Some(Job::Defer { ids, .. }) = s.next_job(t(3)) else {
            panic!("a deferral")
        };
        assert_eq!(ids, vec!["a"]);
    }

    #[test]
    fn a_throttled_message_goes_back_to_the_front() {
        let mut s = sched(5, 100);
        s.add("a", t(0), keys("k"), t(0));
        s.add("b", t(0), keys("k"), t(0));
        let (_, a) = deliver(s.next_job(t(0)));
        s.requeue(&a[0], keys("k"));
        assert_eq!(s.take_for("k", t(25)).as_deref(), Some("a"));
    }

    #[test]
    fn a_rate_cap_spaces_messages_without_failing_them() {
        let mut s = Scheduler::new(|_| Limits {
            initial: 100,
            max: 100,
            per_minute: 120,
        });
        for i in 0..10 {
            s.add(&format!("m{i}"), t(0), keys("k"), t(0));
        }
        // Two a second: the bucket holds two, then one comes every half second.
        let start = t(1000);
        let mut sent = 0;
        while s.next_job(start).is_some() {
            sent += 1;
        }
        assert_eq!(sent, 2);
        assert_eq!(s.take_for("k", start), None, "an open connection waits too");
        let next = s.next_wake().expect("a wake-up for the next token");
        assert_eq!(next, start + Duration::from_millis(500));
        assert!(s.take_for("k", next).is_some());
        assert_eq!(s.take_for("k", next), None);
        // Nothing was failed or dropped: the rest still wait their turn.
        assert_eq!(s.dests["k"].queued(), 7);
    }

    #[test]
    fn a_claimed_message_is_out_of_every_queue_until_given_back() {
        let mut s = sched(2, 4);
        s.add("a", t(100), keys("k"), t(0));
        s.add("b", t(0), keys("k"), t(0));
        assert_eq!(s.claim("a"), Claim::Taken(Some(keys("k"))));
        assert_eq!(s.claim("b"), Claim::Taken(Some(keys("k"))));
        assert_eq!(
            s.claim("zz"),
            Claim::Taken(None),
            "unknown: claimed all the same"
        );
        // Neither is handed out, even when due.
        assert_eq!(s.next_job(t(200)), None);
        assert_eq!(s.claim("a"), Claim::InFlight, "a second claim waits");
        s.finished("a", Some((t(0), keys("k"))), t(200));
        assert_eq!(deliver(s.next_job(t(200))), ("k".into(), vec!["a".into()]));
        assert_eq!(
            s.claim("a"),
            Claim::InFlight,
            "now a delivery thread has it"
        );
    }

    #[test]
    fn retry_now_makes_due_and_probes_a_dead_destination() {
        let mut s = sched(1, 4);
        s.add("a", t(1000), keys("k"), t(0));
        assert_eq!(s.next_job(t(1)), None);
        assert_eq!(s.retry_now("a", t(1)), Retried::Due);
        assert_eq!(s.retry_now("a", t(1)), Retried::AlreadyDue);
        assert_eq!(s.retry_now("nope", t(1)), Retried::Unknown);
        let (k, ids) = deliver(s.next_job(t(1)));
        assert_eq!((k.as_str(), ids), ("k", vec!["a".to_string()]));
        assert_eq!(s.retry_now("a", t(1)), Retried::InFlight);
        // The destination dies; the message waits for the end of the dead period.
        s.feedback("k", Feedback::Dead(t(5000), "refused".into()), t(2));
        s.finished("a", Some((t(5000), keys("k"))), t(2));
        s.job_done(&Job::Deliver {
            key: "k".into(),
            ids: vec!["a".into()],
        });
        assert_eq!(s.next_job(t(3)), None);
        assert_eq!(s.retry_now("a", t(3)), Retried::Probing);
        assert!(matches!(s.table()[0].state, DestState::Probing { .. }));
        assert_eq!(deliver(s.next_job(t(3))), ("k".into(), vec!["a".into()]));
    }

    #[test]
    fn retry_all_ends_every_wait() {
        let mut s = sched(4, 4);
        s.add("a", t(1000), keys("k"), t(0));
        s.add("b", t(2000), keys("j"), t(0));
        s.feedback("j", Feedback::Dead(t(9000), "refused".into()), t(0));
        assert_eq!(s.retry_all(t(1)), 2);
        let mut got = vec![deliver(s.next_job(t(1))).1, deliver(s.next_job(t(1))).1];
        got.sort();
        assert_eq!(got, vec![vec!["a".to_string()], vec!["b".to_string()]]);
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
