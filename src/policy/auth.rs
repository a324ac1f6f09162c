//! Brute-force brakes for AUTH: a per-address count of failed logins; an address with more than
//! [`MAX_FAILURES`] failures within a minute gets `454 4.7.0` to every AUTH for [`LOCKOUT`], even
//! with the right password.
//! (Within one session, each failure also costs a growing delay; see the session.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Failed logins per address per minute before the lockout.
pub const MAX_FAILURES: u32 = 10;
/// How long a locked-out address gets 454.
pub const LOCKOUT: Duration = Duration::from_secs(300);
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

/// Shared by all sessions of a virtual server.
#[derive(Debug, Default)]
pub struct Limiter {
    map: Mutex<HashMap<IpAddr, Entry>>,
    /// Failed logins since the start (for the metrics).
    failures: AtomicU64,
}

impl Limiter {
    /// A limiter with no history.
    pub fn new() -> Limiter {
        Limiter::default()
    }

    /// Whether `ip` is locked out now.
    pub fn locked(&self, ip: IpAddr) -> bool {
        self.locked_at(ip, Instant::now())
    }

    fn locked_at(&self, ip: IpAddr, now: Instant) -> bool {
        let m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&ip)
            .and_then(|e| e.locked_until)
            .is_some_and(|t| now < t)
    }

    /// Failed logins recorded since the start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Records a failed login from `ip`.
    pub fn failure(&self, ip: IpAddr) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.failure_at(ip, Instant::now());
    }

    fn failure_at(&self, ip: IpAddr, now: Instant) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Forget addresses that have been quiet, so the map cannot grow without end.
        if m.len() > 10_000 {
            m.retain(|_, e| {
                now.duration_since(e.window_start) < WINDOW
                    || e.locked_until.is_some_and(|t| now < t)
            });
        }
        let e = m.entry(ip).or_insert(Entry {
            window_start: now,
            failures: 0,
            locked_until: None,
        });
        if now.duration_since(e.window_start) >= WINDOW {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures += 1;
        if e.failures > MAX_FAILURES {
            e.locked_until = Some(now + LOCKOUT);
            log::warn!(
                "AUTH: {ip} failed more than {MAX_FAILURES} times in a minute; locked out for {}s",
                LOCKOUT.as_secs()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_too_many_failures_then_forgives() {
        let l = Limiter::new();
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let other: IpAddr = "127.0.0.3".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert!(!l.locked_at(ip, t0), "not yet after {i}");
            l.failure_at(ip, t0);
        }
        assert!(!l.locked_at(ip, t0));
        l.failure_at(ip, t0);
        assert!(l.locked_at(ip, t0));
        assert!(!l.locked_at(other, t0), "per address");
        assert!(!l.locked_at(ip, t0 + LOCKOUT + Duration::from_secs(1)));
        // Failures spread over more than a minute do not add up.
        let l = Limiter::new();
        for i in 0..30u64 {
            l.failure_at(ip, t0 + Duration::from_secs(i * 10));
        }
        assert!(!l.locked_at(ip, t0 + Duration::from_secs(300)));
    }
}
