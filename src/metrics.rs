//! The counters behind `/metrics` and `/status`: plain atomics, no locks and no I/O, so counting
//! costs the SMTP path one relaxed atomic add. Each room that counts owns its struct (the store its
//! [`Mailroot`], the delivery service its [`Delivery`], the server its [`Sessions`]); the server reads
//! them at scrape time and encodes them (`server::exporter`). Nothing here knows Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonic count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Delivery latency buckets, in seconds: from arrival to delivered (a fast relay answers in tens
/// of milliseconds; a retried message in minutes to days).
pub const LATENCY_BOUNDS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    14400.0, 86400.0,
];

/// Group-commit batch sizes, in messages (a batch holds at most `commit::MAX_BATCH`).
pub const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// A histogram with fixed bounds: one atomic per bucket, a count and a sum (kept in millionths, so
/// it stays an integer atomic).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is above every bound.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// A histogram read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds with the observations in each bucket (not cumulative: those at most the bound
    /// and above the previous one), the last bound `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records `v` (negative values count as 0).
    pub fn observe(&self, v: f64) {
        let v = v.max(0.0);
        let i = self.bounds.partition_point(|b| *b < v);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((v * 1e6) as u64, Ordering::Relaxed);
    }

    /// The buckets, count and sum now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            acc += n;
            let bound = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, n));
        }
        HistogramSnapshot {
            // The count is the buckets' total, so the two always agree in one scrape.
            count: acc,
            buckets,
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// What the store counts: the group commit, Badmail, Pickup.
#[derive(Debug)]
pub struct Mailroot {
    /// Messages per group-commit batch (its count is the number of batches).
    pub commit_batches: Histogram,
    /// Messages written to Badmail.
    pub badmail: Counter,
    /// Messages taken from the Pickup folder.
    pub pickup: Counter,
}

impl Default for Mailroot {
    fn default() -> Self {
        Mailroot {
            commit_batches: Histogram::new(BATCH_BOUNDS),
            badmail: Counter::default(),
            pickup: Counter::default(),
        }
    }
}

/// What a delivery service counts.
#[derive(Debug)]
pub struct Delivery {
    /// Messages that left the Queue with at least one recipient delivered (to a next hop or Drop).
    pub delivered: Counter,
    /// Attempts after which a message stayed in the Queue for a retry.
    pub deferred: Counter,
    /// Messages that left the Queue with failed recipients (reported to the sender, or Badmail).
    pub bounced: Counter,
    /// Recipients delivered.
    pub recipients_delivered: Counter,
    /// Recipients failed.
    pub recipients_failed: Counter,
    /// Message bytes accepted by next hops (once per transaction).
    pub bytes_out: Counter,
    /// Seconds from arrival (the queue id's time) to leaving the Queue delivered.
    pub latency: Histogram,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            delivered: Counter::default(),
            deferred: Counter::default(),
            bounced: Counter::default(),
            recipients_delivered: Counter::default(),
            recipients_failed: Counter::default(),
            bytes_out: Counter::default(),
            latency: Histogram::new(LATENCY_BOUNDS),
        }
    }
}

/// What a virtual server's sessions count.
#[derive(Debug, Default)]
pub struct Sessions {
    /// Sessions admitted.
    pub total: Counter,
    /// Sessions that started TLS (STARTTLS or implicit).
    pub tls: Counter,
    /// Messages answered 250 over SMTP.
    pub received: Counter,
    /// Bytes of those messages.
    pub bytes_in: Counter,
    /// RCPT TO refused because the client may not relay.
    pub relay_refused: Counter,
    /// Connections refused by connection control (IPGrant/IPDeny).
    pub refused_access: Counter,
    /// Connections refused at MaxConnections.
    pub refused_max_connections: Counter,
    /// Connections refused at MaxConnectionsPerIp.
    pub refused_per_ip: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_each_bucket() {
        let h = Histogram::new(&[1.0, 10.0]);
        for v in [0.5, 1.0, 3.0, 30.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(1.0, 2), (10.0, 1), (f64::INFINITY, 1)]);
        assert_eq!(s.count, 4);
        assert!((s.sum - 34.5).abs() < 1e-6);
    }
}
