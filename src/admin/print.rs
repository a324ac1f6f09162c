//! What the queue and Badmail commands print: plain text for a console, JSON for scripts. No I/O
//! here but building strings.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::status_word;
use crate::config::VirtualServer;
use crate::delivery::route::{self, Route};
use crate::mailroot::badmail::Bad;
use crate::mailroot::queue::Entry;
use crate::time::Utc;

/// The age buckets of the summary's histogram, in minutes (as qshape's): a message falls in the
/// first bucket at least as old as it (the last column: older than all).
pub const BUCKETS: [u64; 9] = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn age_of(t: Option<SystemTime>) -> Duration {
    t.and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or(Duration::ZERO)
}

/// `45s`, `12m`, `2h05m`, `3d04h`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn when(t: u64) -> String {
    let u = Utc::from_unix(t as i64, 0);
    format!("{} {} UTC", u.w3c_date(), u.w3c_time())
}

/// The messages the running server is delivering now.
pub fn in_flight(status: Option<&Value>) -> HashSet<String> {
    let mut out = HashSet::new();
    for q in status
        .and_then(|s| s["queues"].as_array())
        .into_iter()
        .flatten()
    {
        for id in q["in_flight"].as_array().into_iter().flatten() {
            if let Some(id) = id.as_str() {
                out.insert(id.to_string());
            }
        }
    }
    out
}

/// The running server's destination rows, by destination key.
pub fn destinations(status: Option<&Value>) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    for q in status
        .and_then(|s| s["queues"].as_array())
        .into_iter()
        .flatten()
    {
        for d in q["destinations"].as_array().into_iter().flatten() {
            if let Some(k) = d["destination"].as_str() {
                out.insert(k.to_string(), d.clone());
            }
        }
    }
    out
}

fn sender(e: &Entry) -> String {
    match &e.envelope {
        Ok(env) => format!("<{}>", env.sender),
        Err(_) => "(unreadable envelope)".into(),
    }
}

/// `queue list --json`: one object per message.
pub fn list_json(entries: &[(u32, Entry)], flying: &HashSet<String>) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|(instance, e)| {
                let st = &e.state;
                json!({
                    "id": e.id,
                    "instance": instance,
                    "arrival": e.arrival.map(unix),
                    "age_seconds": age_of(e.arrival).as_secs(),
                    "size": e.size,
                    "sender": e.envelope.as_ref().ok().map(|env| env.sender.clone()),
                    "error": e.envelope.as_ref().err(),
                    "held": e.held(),
                    "held_since": (st.held_since != 0).then_some(st.held_since),
                    "in_delivery": flying.contains(&e.id),
                    "attempts": st.attempts,
                    "next_attempt": (st.next_attempt != 0 && !e.held()).then_some(st.next_attempt),
                    "recipients": st.recipients.iter().map(|r| json!({
                        "address": r.address,
                        "state": status_word(r.status),
                        "reply": r.reply,
                        "remote": r.remote,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// `queue list`: a paragraph per message.
pub fn list_text(entries: &[(u32, Entry)], flying: &HashSet<String>, running: bool) -> String {
    let mut s = String::new();
    let mut bytes = 0;
    let mut held = 0;
    for (_, e) in entries {
        bytes += e.size;
        let mut flags = String::new();
        if e.held() {
            held += 1;
            flags.push_str("  HELD");
        }
        if flying.contains(&e.id) {
            flags.push_str("  in delivery now");
        }
        let _ = writeln!(
            s,
            "{}  {:>6}  {:>8} bytes  from {}{flags}",
            e.id,
            age(age_of(e.arrival)),
            e.size,
            sender(e)
        );
        let next = if e.held() || e.state.next_attempt == 0 {
            String::new()
        } else {
            format!("; next attempt {}", when(e.state.next_attempt))
        };
        let _ = writeln!(s, "    attempts: {}{next}", e.state.attempts);
        for r in &e.state.recipients {
            let mut detail = r.reply.clone();
            if !r.remote.is_empty() {
                let _ = write!(detail, " ({})", r.remote);
            }
            let _ = writeln!(
                s,
                "    {:<9} {}{}",
                status_word(r.status),
                r.address,
                if detail.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", detail.trim())
                }
            );
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "-- {} message(s), {} bytes, {held} held{}",
        entries.len(),
        bytes,
        if running {
            ""
        } else {
            " (no mailroot server is running)"
        }
    );
    s
}

/// One message's place in the summary: its destination, arrival and whether it is held.
pub struct Placed {
    key: String,
    arrival: Option<SystemTime>,
    held: bool,
}

/// Where each message waits: the destination of each of its pending recipients (a message counts
/// once per destination), as delivery routes them.
pub fn summarize(vs: &VirtualServer, entries: &[Entry]) -> Vec<Placed> {
    let mut out = Vec::new();
    for e in entries {
        let mut keys: Vec<String> = Vec::new();
        match &e.envelope {
            Ok(_) => {
                for a in e.pending() {
                    let k = match route::route(vs, a) {
                        Route::Local => "local".to_string(),
                        Route::Remote(r) => r.key,
                    };
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
                if keys.is_empty() {
                    keys.push("(settling)".into());
                }
            }
            Err(_) => keys.push("(unreadable)".into()),
        }
        for key in keys {
            out.push(Placed {
                key,
                arrival: e.arrival,
                held: e.held(),
            });
        }
    }
    out
}

struct Sum {
    count: usize,
    held: usize,
    oldest: Option<SystemTime>,
    hist: [usize; BUCKETS.len() + 1],
}

fn bucket(age: Duration) -> usize {
    let m = age.as_secs() / 60;
    BUCKETS.iter().position(|b| m < *b).unwrap_or(BUCKETS.len())
}

fn sums(rows: &[Placed]) -> BTreeMap<String, Sum> {
    let mut m: BTreeMap<String, Sum> = BTreeMap::new();
    for p in rows {
        let s = m.entry(p.key.clone()).or_insert(Sum {
            count: 0,
            held: 0,
            oldest: None,
            hist: [0; BUCKETS.len() + 1],
        });
        s.count += 1;
        s.held += usize::from(p.held);
        s.oldest = match (s.oldest, p.arrival) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        s.hist[bucket(age_of(p.arrival))] += 1;
    }
    m
}

fn state_text(d: Option<&Value>, running: bool) -> (String, String) {
    let Some(d) = d else {
        // Known to the server only once a message for it was scheduled.
        return (
            if running { "waiting" } else { "-" }.to_string(),
            "-".into(),
        );
    };
    let state = match d["state"].as_str().unwrap_or("") {
        "dead" => format!(
            "dead until {}",
            d["dead_until"].as_u64().map(when).unwrap_or_default()
        ),
        other => other.to_string(),
    };
    (state, d["window"].to_string())
}

/// `queue summary --json`.
pub fn summary_json(rows: &[Placed], dests: &HashMap<String, Value>, running: bool) -> Value {
    let out: Vec<Value> = sums(rows)
        .iter()
        .map(|(k, s)| {
            let d = dests.get(k);
            json!({
                "destination": k,
                "count": s.count,
                "held": s.held,
                "oldest": s.oldest.map(unix),
                "oldest_age_seconds": s.oldest.map(|o| age_of(Some(o)).as_secs()),
                "state": d.map(|d| d["state"].clone()).unwrap_or(Value::Null),
                "dead_until": d.map(|d| d["dead_until"].clone()).unwrap_or(Value::Null),
                "reason": d.map(|d| d["reason"].clone()).unwrap_or(Value::Null),
                "window": d.map(|d| d["window"].clone()).unwrap_or(Value::Null),
                "busy": d.map(|d| d["busy"].clone()).unwrap_or(Value::Null),
                "ages": s.hist.to_vec(),
            })
        })
        .collect();
    json!({
        "running": running,
        "age_buckets_minutes": BUCKETS.to_vec(),
        "destinations": out,
    })
}

/// `queue summary`: a table of destinations, then the age histogram (qshape's shape: minutes).
pub fn summary_text(rows: &[Placed], dests: &HashMap<String, Value>, running: bool) -> String {
    let sums = sums(rows);
    let w = sums.keys().map(|k| k.len()).max().unwrap_or(0).max(11);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<w$}  {:>6}  {:>5}  {:>7}  {:>6}  STATE",
        "DESTINATION", "COUNT", "HELD", "OLDEST", "WINDOW"
    );
    for (k, v) in &sums {
        let (state, window) = state_text(dests.get(k), running);
        let _ = writeln!(
            s,
            "{k:<w$}  {:>6}  {:>5}  {:>7}  {window:>6}  {state}",
            v.count,
            v.held,
            age(age_of(v.oldest)),
        );
    }
    if !running {
        s.push_str("(no mailroot server is running: destination states are not known)\n");
    }
    // The histogram.
    s.push('\n');
    let _ = write!(s, "{:<w$}  {:>6}", "AGE (minutes)", "T");
    for b in BUCKETS {
        let _ = write!(s, " {b:>5}");
    }
    let _ = writeln!(s, " {:>5}", format!("{}+", BUCKETS[BUCKETS.len() - 1]));
    let mut total = [0usize; BUCKETS.len() + 1];
    for v in sums.values() {
        for (t, h) in total.iter_mut().zip(v.hist) {
            *t += h;
        }
    }
    let mut row = |name: &str, hist: &[usize]| {
        let _ = write!(s, "{name:<w$}  {:>6}", hist.iter().sum::<usize>());
        for h in hist {
            let _ = write!(s, " {h:>5}");
        }
        s.push('\n');
    };
    row("TOTAL", &total);
    for (k, v) in &sums {
        row(k, &v.hist);
    }
    s
}

/// `queue show`: envelope, states, headers (and the body).
pub fn show(e: &Entry, message: &[u8], body: bool, in_delivery: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Queue ID:   {}", e.id);
    if let Some(a) = e.arrival {
        let _ = writeln!(
            s,
            "Arrived:    {} ({} ago)",
            when(unix(a)),
            age(age_of(Some(a)))
        );
    }
    let _ = writeln!(s, "Size:       {} bytes", e.size);
    match &e.envelope {
        Ok(env) => {
            let _ = writeln!(s, "Sender:     <{}>", env.sender);
            if let Some(r) = env.ret {
                let _ = writeln!(s, "RET:        {r:?}");
            }
            if let Some(id) = &env.envid {
                let _ = writeln!(s, "ENVID:      {id}");
            }
        }
        Err(err) => {
            let _ = writeln!(s, "Envelope:   unreadable ({err})");
        }
    }
    let st = &e.state;
    let state = match (e.held(), in_delivery) {
        (true, _) => format!("held since {}", when(st.held_since)),
        (false, true) => "in delivery now".into(),
        (false, false) if st.next_attempt == 0 => "due".into(),
        (false, false) => format!("next attempt {}", when(st.next_attempt)),
    };
    let _ = writeln!(s, "State:      {state}; {} attempt(s)", st.attempts);
    if st.held_total > 0 {
        let _ = writeln!(
            s,
            "Held for:   {} before",
            age(Duration::from_secs(st.held_total))
        );
    }
    s.push_str("Recipients:\n");
    for r in &st.recipients {
        let _ = write!(s, "  {:<9} {}", status_word(r.status), r.address);
        if !r.reply.is_empty() {
            let _ = write!(s, ": {}", r.reply);
        }
        if !r.remote.is_empty() {
            let _ = write!(s, " ({})", r.remote);
        }
        s.push('\n');
    }
    let text = String::from_utf8_lossy(message);
    let (head, rest) = match text.find("\r\n\r\n") {
        Some(i) => (&text[..i + 2], &text[i + 4..]),
        None => match text.find("\n\n") {
            Some(i) => (&text[..i + 1], &text[i + 2..]),
            None => (&text[..], ""),
        },
    };
    s.push('\n');
    s.push_str(&head.replace("\r\n", "\n"));
    if body {
        s.push('\n');
        s.push_str(&rest.replace("\r\n", "\n"));
        if !s.ends_with('\n') {
            s.push('\n');
        }
    }
    s
}

/// `badmail list --json`.
pub fn badmail_json(list: &[(u32, Bad)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(instance, b)| {
                json!({
                    "id": b.id,
                    "instance": instance,
                    "size": b.size,
                    "written": b.written.map(unix),
                    "sender": b.envelope.as_ref().ok().map(|e| e.sender.clone()),
                    "recipients": b.envelope.as_ref().ok().map(|e| e.recipients.iter().map(|r| r.address.clone()).collect::<Vec<_>>()),
                    "reason": b.reason,
                })
            })
            .collect(),
    )
}

/// `badmail list`.
pub fn badmail_text(list: &[(u32, Bad)]) -> String {
    let mut s = String::new();
    for (_, b) in list {
        let (from, to) = match &b.envelope {
            Ok(e) => (
                format!("<{}>", e.sender),
                e.recipients
                    .iter()
                    .map(|r| r.address.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Err(_) => ("(no envelope)".into(), String::new()),
        };
        let _ = writeln!(
            s,
            "{}  {:>6}  {:>8} bytes  from {from} to {to}",
            b.id,
            age(age_of(b.written)),
            b.size
        );
        if !b.reason.is_empty() {
            let _ = writeln!(s, "    {}", b.reason);
        }
    }
    let _ = writeln!(s, "-- {} message(s) in Badmail", list.len());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_buckets() {
        assert_eq!(age(Duration::from_secs(45)), "45s");
        assert_eq!(age(Duration::from_secs(125)), "2m");
        assert_eq!(age(Duration::from_secs(7500)), "2h05m");
        assert_eq!(age(Duration::from_secs(3 * 86400 + 4 * 3600)), "3d04h");
        assert_eq!(bucket(Duration::from_secs(0)), 0);
        assert_eq!(bucket(Duration::from_secs(5 * 60)), 1);
        assert_eq!(bucket(Duration::from_secs(100 * 60)), 5);
        assert_eq!(bucket(Duration::from_secs(5000 * 60)), BUCKETS.len());
    }
}
