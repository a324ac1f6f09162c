//! What a scenario measured, and how it is printed: one human line, then the same figures as one JSON
//! line (starting with `{`); `#` lines elsewhere are notes.

use std::fmt::Write as _;

use crate::args::{Kind, Scenario};
use crate::measure::Footprint;

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
