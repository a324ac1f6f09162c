//! Scenario backlog: a restart with a large Queue. N messages wait in Queue while the next hop (the
//! smart host) is down; mailroot is stopped, the next hop comes back, mailroot is started again and
//! drains the Queue. The phases:
//!
//! 1. **Queue**: N files are written straight into `<mailroot>/Queue` in mailroot's own format (the
//!    `x-sender:`/`x-receiver:` block, mailroot's Received and Message-ID, the message) under fresh
//!    queue identifiers, then `sync`. This is the fastest way to a large Queue (100,000 files in
//!    seconds; through SMTP or Pickup the bench would time mailroot's intake instead), and the
//!    server reads exactly what its own commit writes.
//! 2. **Down**: mailroot starts with its SmartHost on a loopback port where nothing listens (every
//!    connect is refused). Timed: its first `220` with N never-tried messages queued, and how long
//!    until every message was tried once (has its `.sta`: the destination goes dead after
//!    DeadDestinationFailures refusals and the rest are deferred without a connection). Then it runs
//!    `--down-secs` more with the next hop still down: its memory and CPU then are the steady state
//!    of a large queue waiting for a dead next hop.
//! 3. **Stop**: SIGTERM, timed until the process has exited.
//! 4. **Up**: the counting sink starts on the next hop's port; the bench waits until every
//!    message's retry time has passed ([`RETRY_SECS`]), so that all N are due at the restart.
//! 5. **Restart**: timed from the start of the process: its first `220`, the first message at the
//!    sink, and the last (the drain rate is N over the time to the last); its peak memory and
//!    threads, and CPU per message; at the end Queue must be empty.

use std::fs;
use std::io;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::SHOWN;
use crate::args::Scenario;
use crate::common::sink::Sink;
use crate::common::{Server, TempDir, free_port};
use crate::measure::{Sampler, cpu_ticks, status_kib, ticks_to_ms};
use crate::report::{BacklogOutcome, mib, opt};
use crate::start_sink;
use crate::target::{launch, server_ini};
use crate::workloads::{POLL_SINK, RECIPIENT, SENDER, STALL, WAIT_CAP, body, count_files};

/// The retry interval of the backlog server (SmtpRemoteProgressiveRetry): short, so that the
/// messages deferred while the next hop was down are due again when the server restarts.
pub const RETRY_SECS: u64 = 2;
/// How often the memory and threads of the server are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How often Queue is listed while the server defers (N entries and as many `.sta`: not too often,
/// the server needs the CPU).
const POLL_QUEUE: Duration = Duration::from_millis(500);
/// How long the bench waits for the first delivery after the restart, and for Queue to empty after
/// the last one.
const FIRST_WAIT: Duration = Duration::from_secs(60);
/// The FullyQualifiedDomainName of the bench server (`target::server_ini`).
const FQDN: &str = "bench.mailroot.test";

pub fn run_backlog(sc: &Scenario) -> BacklogOutcome {
    let n = sc.messages;
    let dir = TempDir::new("load-backlog");
    // Nothing listens there now; the sink takes the port when the next hop comes back.
    let hop = free_port("127.0.0.1");
    let mut ini = server_ini(dir.path(), hop, None);
    ini.push_str(&format!("SmtpRemoteProgressiveRetry = {RETRY_SECS}s\n"));

    // 1. The Queue.
    let queue = dir.path().join("mailroot").join("Queue");
    fs::create_dir_all(&queue).expect("create the Queue folder");
    let t = Instant::now();
    let bytes = write_queue(&queue, n, sc.size)
        .unwrap_or_else(|e| panic!("write the Queue files into {}: {e}", queue.display()));
    let write_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    // Flush what was written now, so that the server's first fsync does not pay for it.
    let _ = Command::new("sync").status();
    println!(
        "# backlog: wrote {n} Queue files ({}) in {write_secs:.1} s, sync {:.1} s; next hop \
         127.0.0.1:{hop} down (refuses)",
        mib(bytes / 1024),
        t.elapsed().as_secs_f64()
    );

    // 2. The next hop is down.
    let (mut server, down_220, _) = launch(dir, &ini);
    assert_ne!(
        server.addr().port(),
        hop,
        "the server took the next hop's port for itself; run again"
    );
    let pid = server.pid();
    let sampler = Sampler::start(pid, SAMPLE_EVERY);
    let deferred = wait_moving(n, POLL_QUEUE, || count_files(&queue, &["sta"]));
    let defer_secs = (deferred >= n).then(|| server.started.elapsed().as_secs_f64());
    let down_cpu = pid.and_then(cpu_ticks);
    println!(
        "# backlog: next hop down: first 220 {}, {deferred} of {n} tried once (have a .sta) {}; \
         {} s more with the next hop down",
        ms(down_220),
        opt(defer_secs, |s| format!("after {s:.1} s")),
        sc.down_secs
    );
    thread::sleep(Duration::from_secs(sc.down_secs));
    let idle_cpu = pid.and_then(cpu_ticks);
    let down = sampler.finish();
    let down_hwm = pid.and_then(|p| status_kib(p, "VmHWM:"));
    let dead_periods = log_lines(&server, " dead until ");
    let mut warnings = server.warnings(SHOWN);

    // 3. Stop.
    let t = Instant::now();
    stop(&mut server);
    let stop_secs = t.elapsed().as_secs_f64();
    let dir = std::mem::replace(&mut server.dir, TempDir::new("load-spare"));
    drop(server);

    // 4. The next hop comes back; every retry time passes.
    let sink = start_sink(hop).unwrap_or_else(|e| panic!("start the sink on port {hop}: {e}"));
    thread::sleep(Duration::from_secs(RETRY_SECS + 2));
    println!(
        "# backlog: stopped in {stop_secs:.2} s; next hop up on {}; restart",
        sink.addr
    );

    // 5. Restart and drain.
    let (server, up_220, _) = launch(dir, &ini);
    let started = server.started;
    let pid = server.pid();
    let sampler = Sampler::start(pid, SAMPLE_EVERY);
    let first = wait_first(&sink).map(|at| at.saturating_duration_since(started));
    let delivered = wait_count_sink(n, &sink);
    let last = sink.last_at().saturating_duration_since(started);
    let up_cpu = pid.and_then(cpu_ticks);
    let up_hwm = pid.and_then(|p| status_kib(p, "VmHWM:"));
    let up = sampler.finish();
    let queue = server.folder("Queue");
    let emptied = crate::common::wait_for(FIRST_WAIT, || count_files(&queue, &["eml"]) == 0);
    let queue_left = if emptied {
        0
    } else {
        count_files(&queue, &["eml"])
    };
    for w in server.warnings(SHOWN) {
        if warnings.len() < SHOWN {
            warnings.push(w);
        }
    }
    BacklogOutcome {
        scenario: *sc,
        write_secs,
        down_220_ms: ms_f(down_220),
        deferred,
        defer_secs,
        down_cpu_ms_per_msg: down_cpu.map(|c| ticks_to_ms(c) / n as f64),
        idle_cpu_ms_per_s: match (down_cpu, idle_cpu) {
            (Some(a), Some(b)) if sc.down_secs > 0 => {
                Some(ticks_to_ms(b - a) / sc.down_secs as f64)
            }
            _ => None,
        },
        down,
        down_hwm_kib: down_hwm,
        dead_periods,
        stop_secs,
        up_220_ms: ms_f(up_220),
        first_delivery_ms: first.map(ms_f),
        delivered,
        drain_secs: (delivered >= n).then_some(last.as_secs_f64()),
        first_to_last_secs: first
            .filter(|_| delivered >= n)
            .map(|f| last.saturating_sub(f).as_secs_f64()),
        up_cpu_ms_per_msg: up_cpu.map(|c| ticks_to_ms(c) / n as f64),
        up,
        up_hwm_kib: up_hwm,
        queue_left,
        server_warnings: warnings,
    }
}

/// Writes `n` Queue files of a body of `size` bytes each, named by fresh queue identifiers in
/// arrival order (13 hex digits of microseconds, slightly in the past; 4 of this process id; 6 of
/// a counter: src/id.rs). Returns the bytes written.
fn write_queue(queue: &Path, n: u64, size: usize) -> io::Result<u64> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let first = now.saturating_sub(n);
    let pid = std::process::id() & 0xFFFF;
    let body = body(size);
    let mut bytes = 0;
    for i in 0..n {
        let id = format!("{:013X}{pid:04X}{:06X}", first + i, i & 0xFF_FFFF);
        let mut file = format!(
            "x-sender: {SENDER}\r\nx-receiver: {RECIPIENT}\r\n\
             Received: from load.example.test ([127.0.0.1]) by {FQDN} with ESMTP id {id};\r\n\
             \t Thu, 1 Jan 2026 00:00:00 +0000\r\n\
             From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: mailroot load test (backlog)\r\n\
             Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <{id}@{FQDN}>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        )
        .into_bytes();
        file.extend_from_slice(&body);
        fs::write(queue.join(format!("{id}.eml")), &file)?;
        bytes += file.len() as u64;
    }
    Ok(bytes)
}

/// Waits until `count()` reaches `target`, looking every `poll`, giving up when it has not moved
/// for [`STALL`] or after [`WAIT_CAP`]; the last count.
fn wait_moving(target: u64, poll: Duration, count: impl Fn() -> u64) -> u64 {
    let begin = Instant::now();
    let mut last = count();
    let mut moved = Instant::now();
    while last < target && moved.elapsed() < STALL && begin.elapsed() < WAIT_CAP {
        thread::sleep(poll);
        let now = count();
        if now != last {
            last = now;
            moved = Instant::now();
        }
    }
    last
}

/// When the sink took its first message (within a millisecond), if it did within [`FIRST_WAIT`].
fn wait_first(sink: &Sink) -> Option<Instant> {
    let poll = Duration::from_millis(1);
    crate::common::poll_until(FIRST_WAIT, poll, || sink.count() > 0).then(|| sink.last_at())
}

/// Waits until the sink counted `n` (or stopped moving); the count.
fn wait_count_sink(n: u64, sink: &Sink) -> u64 {
    wait_moving(n, POLL_SINK, || sink.count())
}

/// Stops the server as an admin would: SIGTERM, and the wait for its exit.
#[cfg(unix)]
fn stop(server: &mut Server) {
    let _ = server.terminate();
}

#[cfg(not(unix))]
fn stop(server: &mut Server) {
    server.kill9();
}

/// Lines of the server's log that contain `needle`.
fn log_lines(server: &Server, needle: &str) -> u64 {
    server
        .stderr
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|l| l.contains(needle))
        .count() as u64
}

fn ms_f(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", ms_f(d))
}
