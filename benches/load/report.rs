//! What a scenario measured, and how it is printed: one human line, then the same figures as one JSON
//! line (starting with `{`); `#` lines elsewhere are notes.

use std::fmt::Write as _;

use crate::args::{Kind, Scenario};
use crate::measure::{Footprint, Samples};

/// What a scenario measured.
pub struct Outcome {
    pub scenario: Scenario,
    /// Messages the server took: 250 after the final dot (smtp), files gone from Pickup (pickup).
    pub accepted: u64,
    /// Seconds from the start until the last session finished (smtp) or Pickup was empty (pickup).
    pub accept_secs: f64,
    /// Failed messages: bad replies and I/O errors (smtp), files in Badmail (pickup).
    pub errors: u64,
    pub first_errors: Vec<String>,
    /// How many the sink counted and the seconds until it counted the last; None when not measured.
    pub e2e: Option<(u64, f64)>,
    /// Pickup only: seconds the writer took for all files.
    pub write_secs: Option<f64>,
    /// Pickup only: the PickupSettleTime the server ran with.
    pub settle_ms: Option<u64>,
    pub footprint: Footprint,
    pub server_warnings: Vec<String>,
}

impl Outcome {
    /// Messages the server took (250, or gone from Pickup) that the sink did not count in time.
    fn missing(&self) -> u64 {
        self.e2e.map_or(0, |(n, _)| self.accepted.saturating_sub(n))
    }

    pub fn ok(&self) -> bool {
        self.errors == 0 && self.missing() == 0 && self.accepted == self.scenario.messages
    }

    pub fn print(&self) {
        println!("{}", self.human());
        for e in &self.first_errors {
            println!("  error: {e}");
        }
        if self.errors > self.first_errors.len() as u64 {
            println!("  ... {} errors in all", self.errors);
        }
        for w in &self.server_warnings {
            println!("  server log: {w}");
        }
        println!("{}", self.json());
    }

    fn human(&self) -> String {
        let s = &self.scenario;
        let mut out = match s.kind {
            Kind::Smtp => format!(
                "smtp s={} m={} l={} {}: accept {} msg/s",
                s.sessions,
                s.messages,
                s.size,
                if s.reuse { "conn/session" } else { "conn/msg" },
                rate(self.accepted, self.accept_secs)
            ),
            Kind::Pickup => format!(
                "pickup m={} l={} settle={}ms: write {} msg/s, pickup {} msg/s",
                s.messages,
                s.size,
                self.settle_ms.unwrap_or(0),
                rate(s.messages, self.write_secs.unwrap_or(0.0)),
                rate(self.accepted, self.accept_secs)
            ),
            Kind::Backlog => unreachable!("the backlog scenario reports a BacklogOutcome"),
        };
        match self.e2e {
            None => out.push_str(", e2e n/a"),
            Some((n, secs)) if self.missing() == 0 => {
                let _ = write!(out, ", e2e {} msg/s", rate(n, secs));
            }
            Some((n, _)) => {
                let _ = write!(
                    out,
                    ", e2e timed out ({n}/{} delivered, {} missing)",
                    self.accepted,
                    self.missing()
                );
            }
        }
        let f = &self.footprint;
        let _ = write!(
            out,
            ", cpu {}, hwm {}, rss {}, idle rss {}, errors {}",
            opt(f.cpu_ms_per_msg, |v| format!("{v:.2} ms/msg")),
            opt(f.hwm_kib, mib),
            opt(f.rss_kib, mib),
            opt(f.idle_rss_kib, mib),
            self.errors
        );
        out
    }

    fn json(&self) -> String {
        let s = &self.scenario;
        let f = &self.footprint;
        let (delivered, e2e_secs) = match self.e2e {
            Some((n, secs)) => (Some(n), (self.missing() == 0).then_some(secs)),
            None => (None, None),
        };
        let fields = [
            ("scenario", format!("\"{}\"", s.kind.name())),
            ("sessions", s.sessions.to_string()),
            ("messages", s.messages.to_string()),
            ("size", s.size.to_string()),
            ("reuse", s.reuse.to_string()),
            ("accepted", self.accepted.to_string()),
            ("errors", self.errors.to_string()),
            ("accept_s", format!("{:.3}", self.accept_secs)),
            ("accept_per_s", rate(self.accepted, self.accept_secs)),
            ("delivered", json_num(delivered)),
            ("missing", json_num(self.e2e.map(|_| self.missing()))),
            ("e2e_s", json_f64(e2e_secs, 3)),
            (
                "e2e_per_s",
                json_f64(e2e_secs.map(|t| per_sec(delivered.unwrap_or(0), t)), 0),
            ),
            ("write_s", json_f64(self.write_secs, 3)),
            ("pickup_settle_ms", json_num(self.settle_ms)),
            ("cpu_ms_per_msg", json_f64(f.cpu_ms_per_msg, 3)),
            ("hwm_kib", json_num(f.hwm_kib)),
            ("rss_kib", json_num(f.rss_kib)),
            ("idle_rss_kib", json_num(f.idle_rss_kib)),
        ];
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    }
}

/// Messages per second (0 for no time at all, rather than infinity).
fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// Messages per second, rounded to a whole number.
pub fn rate(n: u64, secs: f64) -> String {
    format!("{:.0}", per_sec(n, secs))
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "n/a".into(), f)
}

fn json_num(v: Option<u64>) -> String {
    v.map_or_else(|| "null".into(), |n| n.to_string())
}

fn json_f64(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "null".into(), |x| format!("{x:.decimals$}"))
}

/// What the backlog scenario measured (see `backlog`): the server with N queued and the next hop
/// down, then restarted with the next hop up until the Queue drained.
pub struct BacklogOutcome {
    pub scenario: Scenario,
    /// Seconds the bench took to write the Queue files.
    pub write_secs: f64,
    /// Next hop down: process start to the first 220, in milliseconds.
    pub down_220_ms: f64,
    /// Messages tried once (with a `.sta`) before the down phase's idle time.
    pub deferred: u64,
    /// Seconds from the process start until every message was tried once; None if not all were.
    pub defer_secs: Option<f64>,
    /// CPU per message until every message was tried once.
    pub down_cpu_ms_per_msg: Option<f64>,
    /// CPU per second of the idle time afterwards (next hop still down).
    pub idle_cpu_ms_per_s: Option<f64>,
    /// Memory and threads over the down phase; the last sample is the steady state.
    pub down: Samples,
    pub down_hwm_kib: Option<u64>,
    /// "dead until" lines in the log of the down phase (the destination going dead, again after
    /// each failed probe).
    pub dead_periods: u64,
    /// Seconds from SIGTERM to the exit.
    pub stop_secs: f64,
    /// Restart: process start to the first 220, to the first message at the sink (milliseconds).
    pub up_220_ms: f64,
    pub first_delivery_ms: Option<f64>,
    /// Messages the sink counted after the restart.
    pub delivered: u64,
    /// Seconds from the process start to the last message at the sink; None if not all came.
    pub drain_secs: Option<f64>,
    /// Seconds from the first message at the sink to the last.
    pub first_to_last_secs: Option<f64>,
    /// CPU of the restarted process per message (scan and delivery).
    pub up_cpu_ms_per_msg: Option<f64>,
    pub up: Samples,
    pub up_hwm_kib: Option<u64>,
    /// `.eml` files still in Queue after the drain.
    pub queue_left: u64,
    pub server_warnings: Vec<String>,
}

impl BacklogOutcome {
    pub fn ok(&self) -> bool {
        let n = self.scenario.messages;
        self.delivered == n && self.queue_left == 0 && self.deferred == n
    }

    pub fn print(&self) {
        println!("{}", self.human());
        for w in &self.server_warnings {
            println!("  server log: {w}");
        }
        println!("{}", self.json());
    }

    fn human(&self) -> String {
        let s = &self.scenario;
        let n = s.messages;
        let (d, u) = (&self.down, &self.up);
        let mut out = format!(
            "backlog m={n} l={}: next hop down: first 220 {:.1} ms, all tried once {}, then \
             rss {} pss {} threads {} idle cpu {}; stop {:.2} s; restart: first 220 {:.1} ms, \
             first delivery {}, ",
            s.size,
            self.down_220_ms,
            opt(self.defer_secs, |t| format!("after {t:.1} s")),
            opt(d.rss_kib, mib),
            opt(d.pss_kib, mib),
            opt(d.threads, |t| t.to_string()),
            opt(self.idle_cpu_ms_per_s, |c| format!("{c:.1} ms/s")),
            self.stop_secs,
            self.up_220_ms,
            opt(self.first_delivery_ms, |t| format!("{t:.0} ms")),
        );
        match self.drain_secs {
            Some(t) => {
                let _ = write!(out, "drain {} msg/s (all in {t:.1} s)", rate(n, t));
            }
            None => {
                let _ = write!(out, "drain timed out ({}/{n} delivered)", self.delivered);
            }
        }
        let _ = write!(
            out,
            ", peak rss {} pss {} threads {}, cpu {}, queue left {}",
            opt(self.up_hwm_kib, mib),
            opt(u.peak_pss_kib, mib),
            opt(u.peak_threads, |t| t.to_string()),
            opt(self.up_cpu_ms_per_msg, |c| format!("{c:.2} ms/msg")),
            self.queue_left
        );
        out
    }

    fn json(&self) -> String {
        let s = &self.scenario;
        let (d, u) = (&self.down, &self.up);
        let fields = [
            ("scenario", format!("\"{}\"", s.kind.name())),
            ("messages", s.messages.to_string()),
            ("size", s.size.to_string()),
            ("write_s", format!("{:.3}", self.write_secs)),
            ("down_first_220_ms", format!("{:.1}", self.down_220_ms)),
            ("deferred", self.deferred.to_string()),
            ("defer_s", json_f64(self.defer_secs, 3)),
            ("down_cpu_ms_per_msg", json_f64(self.down_cpu_ms_per_msg, 3)),
            ("down_idle_s", s.down_secs.to_string()),
            (
                "down_idle_cpu_ms_per_s",
                json_f64(self.idle_cpu_ms_per_s, 1),
            ),
            ("down_rss_kib", json_num(d.rss_kib)),
            ("down_pss_kib", json_num(d.pss_kib)),
            ("down_threads", json_num(d.threads)),
            ("down_hwm_kib", json_num(self.down_hwm_kib)),
            ("down_peak_pss_kib", json_num(d.peak_pss_kib)),
            ("down_peak_threads", json_num(d.peak_threads)),
            ("dead_periods", self.dead_periods.to_string()),
            ("stop_s", format!("{:.3}", self.stop_secs)),
            ("up_first_220_ms", format!("{:.1}", self.up_220_ms)),
            ("first_delivery_ms", json_f64(self.first_delivery_ms, 1)),
            ("delivered", self.delivered.to_string()),
            ("drain_s", json_f64(self.drain_secs, 3)),
            (
                "drain_per_s",
                json_f64(self.drain_secs.map(|t| per_sec(s.messages, t)), 0),
            ),
            ("first_to_last_s", json_f64(self.first_to_last_secs, 3)),
            ("up_cpu_ms_per_msg", json_f64(self.up_cpu_ms_per_msg, 3)),
            ("up_hwm_kib", json_num(self.up_hwm_kib)),
            ("up_peak_pss_kib", json_num(u.peak_pss_kib)),
            ("up_peak_threads", json_num(u.peak_threads)),
            ("queue_left", self.queue_left.to_string()),
        ];
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    }
}
