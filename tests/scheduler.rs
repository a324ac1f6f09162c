//! The destination-aware delivery scheduler (docs/delivery.md), end to end against real next hops on
//! loopback: a hung next hop does not stall other destinations, a dead one is probed rather than
//! hammered and drained at once when it comes back, a smart host that allows 3 sessions gets no more
//! than it takes, connections are reused, and an MX set keeps using its live host while one is dead.
//!
//! The tests take one lock each: they measure latency, threads and CPU time, which a neighbour
//! test on a 2-core machine would disturb.

mod common;
use common::acceptor::Acceptor;
use common::sink::{Delivered, Sink, SinkBuilder, Stage, start_same_port};
use common::*;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

static SERIAL: Mutex<()> = Mutex::new(());

/// One test at a time (see the module docs).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `Threads:` line of /proc/<pid>/status.
fn threads(pid: u32) -> Option<usize> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// User + system CPU time of the whole process, in seconds (/proc/<pid>/stat, 100 ticks a second).
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Samples the process's thread count every 20 ms until dropped; keeps the largest.
struct ThreadWatch {
    peak: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl ThreadWatch {
    fn start(pid: u32) -> ThreadWatch {
        let peak = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let handle = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Some(n) = threads(pid) {
                    p.fetch_max(n, Ordering::SeqCst);
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
        ThreadWatch {
            peak,
            stop,
            handle: Some(handle),
        }
    }
    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

impl Drop for ThreadWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Writes `n` messages from `app@local.test` to `r<i>@remote.test` into `queue` as mailroot's own
/// Queue files, as if they had been accepted while the next hop was down.
fn seed_queue(queue: &Path, n: u32) {
    fs::create_dir_all(queue).unwrap();
    for i in 0..n {
        let text = format!(
            "x-sender: app@local.test\r\nx-receiver: r{i}@remote.test\r\n{}\r\n",
            message(&format!("seeded-{i}"))
        );
        fs::write(queue.join(format!("{}.eml", mailroot::id::next())), text).unwrap();
    }
}

/// Drops `n` pickup files for `rcpt(i)` into `pickup`, each written under a `.tmp` name and renamed.
fn fill_pickup(pickup: &Path, n: usize, rcpt: impl Fn(usize) -> String) {
    for i in 0..n {
        let tmp = pickup.join(format!("m{i:05}.tmp"));
        let text = format!(
            "X-Sender: app@local.test\r\nX-Receiver: {}\r\nSubject: pickup-{i}\r\n\r\nbody {i}\r\n",
            rcpt(i)
        );
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, pickup.join(format!("m{i:05}.eml"))).unwrap();
    }
}

/// Submits `n` messages to `rcpt(i)` with subject `<tag>-<i>`, over `clients` parallel SMTP
/// sessions; returns when each got its 250 (index → that instant).
fn submit_parallel(
    srv: &Server,
    clients: usize,
    n: usize,
    tag: &str,
    rcpt: impl Fn(usize) -> String + Sync,
) -> BTreeMap<usize, Instant> {
    let accepted = Mutex::new(BTreeMap::new());
    thread::scope(|s| {
        for c in 0..clients {
            let (accepted, rcpt) = (&accepted, &rcpt);
            s.spawn(move || {
                let mut cl = srv.connect();
                cl.hello();
                for i in (c..n).step_by(clients) {
                    let to = rcpt(i);
                    let r = cl.send_mail("app@local.test", &[&to], &message(&format!("{tag}-{i}")));
                    assert!(r.last().starts_with("250"), "message {i}: {r:?}");
                    accepted.lock().unwrap().insert(i, Instant::now());
                }
                cl.quit();
            });
        }
    });
    accepted.into_inner().unwrap()
}

/// Messages per connection number.
fn per_connection(msgs: &[Delivered]) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for d in msgs {
        *m.entry(d.connection).or_insert(0) += 1;
    }
    m
}

/// A next hop that accepts TCP and never says a word; it keeps each socket open until the client
/// closes it or the acceptor is dropped.
fn hung_next_hop(accepted: Arc<AtomicUsize>) -> Acceptor {
    Acceptor::start(move |_, mut s| {
        accepted.fetch_add(1, Ordering::SeqCst);
        let mut buf = [0u8; 512];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn log_tail(srv: &Server, lines: usize) -> String {
    let text = srv.log_text();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// 1. A hung next hop
// ---------------------------------------------------------------------------------------------

#[cfg(target_os = "linux")]
#[test]
fn hung_next_hop_does_not_stall_others() {
    let _one = serial();
    const SLOW: usize = 3000;
    const OK: usize = 200;
    const MAX_OUT: usize = 20;
    let hung_conns = Arc::new(AtomicUsize::new(0));
    let hung = hung_next_hop(hung_conns.clone());
    let ok = Sink::start_default();
    // RemoteTimeout stays at its default (600 s): only the scheduler can keep ok.test moving.
    let srv = Builder::new()
        .key("MaxOutConnections", &MAX_OUT.to_string())
        .key("PickupSettleTime", "200ms")
        .route("slow.test", hung.addr.port())
        .route("ok.test", ok.addr.port())
        .start();
    let pid = srv.pid().unwrap();
    let watch = ThreadWatch::start(pid);

    let t0 = Instant::now();
    fill_pickup(&srv.folder("Pickup"), SLOW, |i| format!("s{i}@slow.test"));
    let picked = wait_for(Duration::from_secs(90), || {
        srv.files("Pickup").is_empty()
            && names(&srv.folder("Pickup"))
                .iter()
                .all(|n| !n.ends_with(".tmp"))
    });
    let pickup_time = t0.elapsed();
    assert!(
        picked,
        "Pickup not emptied in 90 s: {} left\n{}",
        srv.files("Pickup").len(),
        log_tail(&srv, 30)
    );
    // Let the slow.test mail reach its destination queue and the hung host.
    thread::sleep(Duration::from_secs(1));
    let threads_before = threads(pid).unwrap_or(0);

    let accepted = submit_parallel(&srv, 1, OK, "ok", |i| format!("o{i}@ok.test"));
    let last = accepted.values().max().copied().unwrap();
    wait_for(
        Duration::from_secs(2) + Duration::from_secs(8).saturating_sub(last.elapsed()),
        || ok.count() as usize >= OK,
    );
    let got = ok.messages();
    let mut arrived: BTreeMap<usize, Instant> = BTreeMap::new();
    for m in &got {
        if let Some(i) = m.subject().strip_prefix("ok-").and_then(|n| n.parse().ok()) {
            arrived.entry(i).or_insert(m.at);
        }
    }
    let lateness: Vec<(usize, Duration)> = accepted
        .iter()
        .filter_map(|(i, a)| {
            arrived
                .get(i)
                .map(|t| (*i, t.saturating_duration_since(*a)))
        })
        .collect();
    let late: Vec<&(usize, Duration)> = lateness
        .iter()
        .filter(|(_, d)| *d > Duration::from_secs(2))
        .collect();
    let max_late = lateness.iter().map(|x| x.1).max().unwrap_or_default();
    let peak = watch.peak();
    // One inbound session at a time (the submitting client), plus the small fixed number.
    let bound = MAX_OUT + 1 + 12;
    eprintln!(
        "hung: pickup of {SLOW} took {pickup_time:?}; ok.test delivered {}/{OK}, {} later than 2 s, \
         max lateness {max_late:?}; threads before {threads_before}, peak {peak} (bound {bound}); \
         connections to the hung host {} ({} open)",
        arrived.len(),
        late.len(),
        hung_conns.load(Ordering::SeqCst),
        hung.open()
    );
    assert_eq!(
        arrived.len(),
        OK,
        "ok.test mail not delivered while slow.test hangs\n{}",
        log_tail(&srv, 30)
    );
    assert!(late.is_empty(), "delivered later than 2 s: {late:?}");
    assert!(peak <= bound, "{peak} threads (bound {bound})");
}

// ---------------------------------------------------------------------------------------------
// 2. A dead next hop
// ---------------------------------------------------------------------------------------------

#[cfg(target_os = "linux")]
#[test]
fn dead_next_hop_is_probed_not_hammered() {
    let _one = serial();
    const N: u32 = 10_000;
    const RETRY: Duration = Duration::from_secs(5);
    // Accepts and closes at once, counting connections.
    let dead = Sink::builder().drop_at(Stage::Connect).start();
    let port = dead.addr.port();
    let dir = TempDir::new("dead");
    seed_queue(&dir.path().join("mailroot").join("Queue"), N);
    let ini = Builder::new()
        .smart_host(port)
        .key("SmtpRemoteProgressiveRetry", "5s")
        .key("RemoteTimeout", "5")
        .ini();
    let srv = Server::start_in(dir, &ini);
    let pid = srv.pid().unwrap();

    // Dead: the log says so, or the connection count stands still for 1.5 s.
    let mut last = (0, Instant::now());
    let marked = wait_for(Duration::from_secs(30), || {
        let c = dead.connections();
        if c != last.0 {
            last = (c, Instant::now());
        }
        srv.log_text().contains("dead until")
            || (c > 0 && last.1.elapsed() > Duration::from_millis(1500))
    });
    let t_dead = Instant::now();
    let c_dead = dead.connections();
    let dead_unix = unix_now();
    let cpu_dead = cpu_secs(pid).unwrap();
    thread::sleep(RETRY + Duration::from_millis(500));
    let c_interval = dead.connections() - c_dead;

    // Every message deferred once (a .sta each), then nothing to do until the next probe.
    let mut sta = (0, Instant::now());
    wait_for(Duration::from_secs(60), || {
        thread::sleep(Duration::from_millis(480));
        let n = srv.files_ext("Queue", "sta").len();
        if n != sta.0 {
            sta = (n, Instant::now());
        }
        n >= N as usize || sta.1.elapsed() > Duration::from_secs(2)
    });
    let deferred_after = t_dead.elapsed();
    let state = srv.state_text().unwrap_or_default();
    let c_idle0 = dead.connections();
    let cpu0 = cpu_secs(pid).unwrap();
    let cpu_deferring = cpu0 - cpu_dead;
    thread::sleep(Duration::from_secs(4));
    let cpu = cpu_secs(pid).unwrap() - cpu0;
    let c_idle = dead.connections() - c_idle0;
    let thr = threads(pid).unwrap_or(0);
    eprintln!(
        "dead: marked dead {marked} after {c_dead} connection(s); {c_interval} more over the next \
         {RETRY:?}; {} .sta files {deferred_after:?} after ({cpu_deferring:.2} s CPU); over 4 s idle: {cpu:.2} s CPU, {c_idle} \
         connection(s), {thr} threads\nfirst .sta:\n{state}",
        sta.0
    );

    // The .sta says why (the last error) and until when.
    let next_attempt: u64 = state
        .lines()
        .find_map(|l| l.strip_prefix("next-attempt: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let pending = state
        .lines()
        .find(|l| l.starts_with("rcpt: pending "))
        .unwrap_or("");
    let why = pending.split(" | ").nth(1).unwrap_or("");

    // Back: the whole queue goes out.
    drop(dead);
    let back = Sink::builder().port(port).count_only().start();
    let t_back = Instant::now();
    let all = wait_for(Duration::from_secs(120), || back.count() >= N as u64);
    eprintln!(
        "dead: {} of {N} delivered {:?} after the next hop came back",
        back.count(),
        t_back.elapsed()
    );

    assert!(
        c_interval <= 10,
        "{c_interval} connection attempts over one retry interval after it went dead"
    );
    assert!(
        cpu < 0.5,
        "{cpu:.2} s CPU over 4 s while the destination is dead"
    );
    assert!(
        next_attempt + 1 >= dead_unix,
        "the .sta does not say until when (next-attempt {next_attempt}, dead at {dead_unix}):\n{state}"
    );
    assert!(
        why.starts_with('4') && why.len() > 10,
        "the .sta does not say why:\n{state}"
    );
    assert!(
        all,
        "{} of {N} delivered within 120 s of the next hop's return\n{}",
        back.count(),
        log_tail(&srv, 30)
    );
    srv.assert_queue_empties(Duration::from_secs(20));
}

// ---------------------------------------------------------------------------------------------
// 3. A smart host that allows 3 sessions
// ---------------------------------------------------------------------------------------------

#[test]
fn concurrency_limited_smart_host() {
    let _one = serial();
    const N: usize = 300;
    let sink = Sink::builder()
        .max_sessions(
            3,
            "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
        )
        .start();
    // The burst: all 300 queued before the server starts, so they are ready at once and the window
    // (5 to start with) meets the limit of 3. A retry after a refusal would wait a minute: all must
    // go out well before that.
    let dir = TempDir::new("limited");
    seed_queue(&dir.path().join("mailroot").join("Queue"), N as u32);
    let ini = Builder::new()
        .smart_host(sink.addr.port())
        .key("SmtpRemoteProgressiveRetry", "1m")
        .key("RemoteTimeout", "5")
        .ini();
    let t0 = Instant::now();
    let srv = Server::start_in(dir, &ini);
    let mut most_sta = 0;
    let all = wait_for(Duration::from_secs(40), || {
        most_sta = most_sta.max(srv.files_ext("Queue", "sta").len());
        sink.count() as usize >= N
    });
    let took = t0.elapsed();
    let emptied = wait_for(Duration::from_secs(5), || srv.queue_empty());
    thread::sleep(Duration::from_millis(500));
    let msgs = sink.messages();
    let bounces = msgs.iter().filter(|m| m.sender_addr().is_empty()).count();
    let drop = srv.files("Drop").len();
    let badmail = names(&srv.folder("Badmail"));
    let badmail: Vec<&String> = badmail.iter().filter(|n| *n != ".gitkeep").collect();
    eprintln!(
        "limited: {} of {N} delivered in {took:?}; {} connections, \
         {} refused with 432, peak {} open; up to {most_sta} .sta files; {bounces} bounces at the \
         sink, {drop} in Drop, Badmail {badmail:?}",
        msgs.len(),
        sink.connections(),
        sink.refused(),
        sink.peak_connections()
    );
    assert!(
        all,
        "{} of {N} delivered within 40 s\n{}",
        msgs.len(),
        log_tail(&srv, 30)
    );
    assert!(
        emptied,
        "Queue not empty: {:?}",
        names(&srv.folder("Queue"))
    );
    assert_eq!((bounces, drop), (0, 0), "a report was sent back");
    assert!(badmail.is_empty(), "Badmail: {badmail:?}");
    assert!(
        sink.refused() <= 30,
        "{} sessions refused with 432",
        sink.refused()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Connection reuse
// ---------------------------------------------------------------------------------------------

#[test]
fn connection_reuse() {
    let _one = serial();
    const N: usize = 100;
    let sink = Sink::start_default();
    let srv = Builder::new()
        .retrying()
        .smart_host(sink.addr.port())
        .key("DestinationInitialConcurrency", "5")
        .key("MaxBatchedMessages", "20")
        .start();
    submit_parallel(&srv, 4, N, "reuse", |i| format!("r{i}@remote.test"));
    let all = wait_for(Duration::from_secs(30), || sink.count() as usize >= N);
    let msgs = sink.messages();
    let per = per_connection(&msgs);
    eprintln!(
        "reuse: {} of {N} over {} connection(s), at most {} open at once; messages per connection {per:?}",
        msgs.len(),
        sink.connections(),
        sink.peak_connections()
    );
    assert!(
        all,
        "{} of {N} delivered\n{}",
        msgs.len(),
        log_tail(&srv, 30)
    );
    assert!(
        sink.connections() <= 12,
        "{} sessions for {N} messages",
        sink.connections()
    );
    assert!(
        per.values().all(|n| *n <= 20),
        "more than MaxBatchedMessages on one connection: {per:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. MX failover with one dead MX
// ---------------------------------------------------------------------------------------------

#[test]
fn mx_failover_with_one_dead_mx() {
    let _one = serial();
    const N: usize = 20;
    let d = dns::DnsServer::builder()
        .mx("example.test", 10, "mx1.example.test")
        .mx("example.test", 20, "mx2.example.test")
        .a("mx1.example.test", Ipv4Addr::new(127, 0, 0, 2))
        .a("mx2.example.test", Ipv4Addr::new(127, 0, 0, 3))
        .start();
    let mut sinks = start_same_port(vec![
        SinkBuilder::new().bind("127.0.0.2").drop_at(Stage::Connect),
        SinkBuilder::new()
            .bind("127.0.0.3")
            .hostname("mx2.example.test"),
    ]);
    let live = sinks.pop().unwrap();
    let dead = sinks.pop().unwrap();
    let srv = Builder::new()
        .key("DnsServers", &d.addr.to_string())
        .key("RemoteSmtpPort", &live.addr.port().to_string())
        .key("SmtpRemoteProgressiveRetry", "1m")
        .key("RemoteTimeout", "5")
        .start();
    let mut dead_seen = Vec::new();
    for i in 0..N {
        srv.submit(
            "app@local.test",
            &[&format!("u{i}@example.test")],
            &message(&format!("mx-{i}")),
        );
        let ok = wait_for(Duration::from_secs(10), || live.count() as usize > i);
        dead_seen.push(dead.connections());
        assert!(
            ok,
            "message {i} not delivered to the live MX within 10 s; connections to the dead MX \
             after each message: {dead_seen:?}\n{}",
            log_tail(&srv, 30)
        );
    }
    eprintln!("mx: connections to the dead MX after each message: {dead_seen:?}");
    assert_eq!(live.messages().len(), N);
    assert!(
        dead.connections() <= 3 + 1,
        "the dead MX saw {} connections: {dead_seen:?}",
        dead.connections()
    );
}
