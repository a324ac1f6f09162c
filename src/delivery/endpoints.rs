//! The next-hop addresses ("endpoints") of every destination, and which of them are dead. After
//! DeadDestinationFailures consecutive connection-level failures (refused, timed out, closed without
//! a greeting, a 4xx or 421 greeting, a TLS failure where TLS is required) an address is dead until
//! its next retry time (SmtpRemoteProgressiveRetry, counted in dead periods); then one connection
//! may probe it, and its first success makes it live again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::scheduler::retry_delay;

#[derive(Debug, Default)]
struct Endpoint {
    /// Consecutive connection-level failures.
    failures: u32,
    /// Dead until then (a probe may go once it has passed).
    dead_until: Option<SystemTime>,
    /// A connection is probing it now.
    probing: bool,
    /// Dead periods in a row (the retry schedule's position).
    deaths: u32,
    /// The last failure.
    reason: String,
}

/// The endpoints of one delivery service.
#[derive(Debug)]
pub struct Endpoints {
    map: Mutex<HashMap<SocketAddr, Endpoint>>,
    /// DeadDestinationFailures.
    threshold: u32,
    /// SmtpRemoteProgressiveRetry.
    retry: Vec<Duration>,
}

impl Endpoints {
    /// An empty table: `threshold` failures make an address dead for the `retry` schedule's time.
    pub fn new(threshold: u32, retry: Vec<Duration>) -> Endpoints {
        Endpoints {
            map: Mutex::new(HashMap::new()),
            threshold: threshold.max(1),
            retry,
        }
    }

    /// Whether a connection may be made to `addr` now: `Err((until, reason))` while it is dead or
    /// another connection is probing it. A dead address whose time has come is claimed for one probe.
    pub fn usable(&self, addr: SocketAddr, now: SystemTime) -> Result<(), (SystemTime, String)> {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let Some(e) = m.get_mut(&addr) else {
            return Ok(());
        };
        match e.dead_until {
            None => Ok(()),
            Some(until) if until > now => Err((until, e.reason.clone())),
            Some(_) if e.probing => Err((now + Duration::from_secs(1), e.reason.clone())),
            Some(_) => {
                e.probing = true;
                Ok(())
            }
        }
    }

    /// Ends every dead period now (an administrator's retry): each dead address may be probed by
    /// one connection at once. How many dead periods in a row it had is kept.
    pub fn expire_dead(&self, now: SystemTime) -> usize {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for e in m.values_mut() {
            if let Some(until) = e.dead_until
                && until > now
            {
                e.dead_until = Some(now);
                n += 1;
            }
        }
        n
    }

    /// A connection to `addr` worked (greeted and said hello).
    pub fn success(&self, addr: SocketAddr) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = m.remove(&addr)
            && e.dead_until.is_some()
        {
            log::info!("delivery: next hop {addr} is back");
        }
    }

    /// A connection to `addr` failed at the connection level; returns the time it is dead until
    /// when this failure made (or kept) it dead.
    pub fn failure(&self, addr: SocketAddr, reason: &str, now: SystemTime) -> Option<SystemTime> {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(addr).or_default();
        e.failures += 1;
        e.probing = false;
        e.reason = reason.to_string();
        if e.failures < self.threshold {
            return None;
        }
        e.deaths += 1;
        let until = now + retry_delay(&self.retry, e.deaths);
        e.dead_until = Some(until);
        log::info!(
            "delivery: next hop {addr} dead until {} after {} failure(s): {reason}",
            crate::time::Utc::from_system(until).rfc5322(),
            e.failures
        );
        Some(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn dead_after_the_threshold_probed_once_then_back() {
        let a: SocketAddr = "127.0.0.1:25".parse().unwrap();
        let e = Endpoints::new(3, vec![Duration::from_secs(10), Duration::from_secs(20)]);
        assert_eq!(e.failure(a, "refused", t(0)), None);
        assert_eq!(e.failure(a, "refused", t(1)), None);
        assert!(e.usable(a, t(1)).is_ok(), "two failures: still live");
        assert_eq!(e.failure(a, "refused", t(2)), Some(t(12)));
        assert_eq!(e.usable(a, t(5)), Err((t(12), "refused".into())));
        // The time has come: one probe, the others wait for it.
        assert!(e.usable(a, t(12)).is_ok());
        assert!(e.usable(a, t(12)).is_err());
        // The probe fails: dead for the schedule's next interval.
        assert_eq!(e.failure(a, "refused", t(13)), Some(t(33)));
        assert!(e.usable(a, t(30)).is_err());
        assert!(e.usable(a, t(33)).is_ok());
        e.success(a);
        assert!(e.usable(a, t(34)).is_ok());
        // An administrator's retry ends a dead period at once.
        let b: SocketAddr = "127.0.0.1:26".parse().unwrap();
        for i in 0..3 {
            e.failure(b, "refused", t(40 + i));
        }
        assert!(e.usable(b, t(43)).is_err());
        assert_eq!(e.expire_dead(t(43)), 1);
        assert!(e.usable(b, t(43)).is_ok(), "one probe now");
        assert!(e.usable(b, t(43)).is_err(), "and only one");
        assert_eq!(e.failure(a, "x", t(35)), None, "the count starts again");
    }
}
