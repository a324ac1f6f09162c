//! End-to-end load generator: how many messages per second the real `mailroot` binary takes in and
//! relays, and what that costs the server in CPU and memory. It needs no Postfix and no network: it
//! starts its own counting SMTP sink on 127.0.0.1, starts `mailroot serve` on a temporary mailroot
//! whose SmartHost is that sink, and then drives it:
//!
//! - `smtp`: S client sessions (threads) send M messages in total, each with a body of L bytes, one
//!   connection per message (or, with `--reuse`, one connection per session and RSET between
//!   messages). Every reply is checked. "accept" is the messages that got 250 divided by the time
//!   until the last session finished; "e2e" is those messages divided by the time from the start
//!   until the sink counted the last of them.
//! - `pickup`: N files are written into `<mailroot>/Pickup` (each as `<n>.tmp`, then renamed to
//!   `<n>.eml`, so the server never sees a half-written file). "pickup" is N divided by the time until
//!   every file has left Pickup; "e2e" is N divided by the time until the sink counted N. The server
//!   takes a file only when it has been unchanged for `PickupSettleTime`, so the generated INI sets
//!   it to its smallest value, 0.
//!
//! For each scenario it also reports, on Linux, the server's CPU time per message (utime + stime from
//! `/proc/PID/stat`), its peak and final resident memory (VmHWM, VmRSS) and its idle RSS right after
//! start-up. Each scenario prints one human-readable line and the same figures as one JSON line
//! (starting with `{`), so that documentation can be generated from the output; lines starting with
//! `#` are notes. The mailroots live under the system temp folder (`TMPDIR`), and the output names
//! its file system: the server fsyncs every message, so tmpfs and a real disk give very different
//! numbers.
//!
//! Run it with:
//!
//! ```text
//! cargo bench --bench load                       # the default set (some 15 s on 2 cores)
//! cargo bench --bench load -- --quick            # the default set with a tenth of the messages
//! cargo bench --bench load -- --scenario smtp --sessions 50 --messages 20000 --size 4096
//! cargo bench --bench load -- --sessions 20 --messages 2000 --reuse    # one connection per session
//! cargo bench --bench load -- --server 127.0.0.1:2525 --sink-port 2626   # an already running server
//! cargo bench --bench load -- --help
//! ```
//!
//! Every connect, read and wait is bounded; the server is killed and the temporary folder removed
//! when a scenario ends, also when it panics. Run without any argument at all (as `cargo test
//! --all-targets` runs bench targets) it only says how to run it, so test runs stay short.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Timeout of every connect, read and write of the client and the sink.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may take to print its `listening on` line.
const START_WAIT: Duration = Duration::from_secs(15);
/// A wait for the sink or the Pickup folder gives up when its count has not moved for this long...
const STALL: Duration = Duration::from_secs(30);
/// ...and in any case after this long (a slow but moving server gets this much time).
const WAIT_CAP: Duration = Duration::from_secs(600);
/// How often the waits look at the sink's count (an atomic: cheap).
const POLL_SINK: Duration = Duration::from_millis(10);
/// How often the pickup wait lists the folders (thousands of entries: not too often, the server
/// needs the CPU).
const POLL_FOLDERS: Duration = Duration::from_millis(50);
/// How many client errors and server warnings are printed per scenario.
const SHOWN: usize = 5;
/// Linux reports CPU time in clock ticks of USER_HZ, which is 100 on every architecture Linux runs on
/// today; asking with sysconf(_SC_CLK_TCK) would need libc, which is not a dependency.
#[cfg(target_os = "linux")]
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

const SENDER: &str = "from@example.test";
const RECIPIENT: &str = "to@example.test";
/// Body lines are 78 characters plus CRLF, the RFC 5322 recommended maximum.
const LINE_CHARS: usize = 78;

const USAGE: &str = "\
usage: cargo bench --bench load [-- OPTIONS]

End-to-end load test: SMTP client or Pickup files -> mailroot -> counting SMTP sink (all on 127.0.0.1).
Without options it runs the default set, each scenario against a fresh server and mailroot:
  smtp 1x2000x1KiB, smtp 20x5000x1KiB, smtp 10x500x100KiB (sessions x messages x size), pickup 5000x1KiB

Options:
  --quick                 divide every message count by 10
  --scenario smtp|pickup  run only the scenarios of this kind
  --sessions N            smtp: concurrent client sessions (custom scenario; default 20)
  --messages M            messages in total (custom scenario; default 5000)
  --size L                body bytes per message (custom scenario; default 1024)
  --reuse                 smtp: one connection per session with RSET between messages
                          (default: one connection per message); mailroot counts every RSET after
                          the 100th of a session as a protocol error (MaxSmtpErrors), so keep
                          messages per session at 110 or fewer
  --server HOST:PORT      load this already running server (a loopback address) instead of starting
                          one; its CPU and memory are not measured and pickup is skipped
  --sink-port P           the sink listens on 127.0.0.1:P instead of an ephemeral port (point the
                          server's SmartHost there); with --server and without it, e2e is not measured
  -h, --help              this text

--sessions, --messages or --size run one custom scenario (of --scenario's kind, smtp by default)
instead of the set. Arguments starting with --bench (added by cargo bench) are ignored.
Exit status: 0 when every message was accepted and delivered, 1 on errors or missing messages,
2 on bad arguments.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        // cargo bench always passes --bench; no argument at all means cargo test (or a bare run).
        println!(
            "load: nothing to do without arguments; run `cargo bench --bench load` (see --help)"
        );
        return ExitCode::SUCCESS;
    }
    let opts = match parse_args(&args) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("load: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    run(&opts)
}

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Smtp,
    Pickup,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Smtp => "smtp",
            Kind::Pickup => "pickup",
        }
    }
}

/// One scenario: what is sent, how much, and over how many sessions.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    kind: Kind,
    /// Client sessions (smtp only; the pickup writer is one thread).
    sessions: u64,
    messages: u64,
    /// Body bytes per message.
    size: usize,
    /// One connection per session instead of one per message (smtp only).
    reuse: bool,
}

impl Scenario {
    fn smtp(sessions: u64, messages: u64, size: usize) -> Scenario {
        Scenario {
            kind: Kind::Smtp,
            sessions,
            messages,
            size,
            reuse: false,
        }
    }

    fn pickup(messages: u64, size: usize) -> Scenario {
        Scenario {
            kind: Kind::Pickup,
            sessions: 1,
            messages,
            size,
            reuse: false,
        }
    }
}

/// The default set: a single sequential client, many concurrent small messages, fewer large ones,
/// and the Pickup folder.
fn default_set() -> Vec<Scenario> {
    vec![
        Scenario::smtp(1, 2000, 1024),
        Scenario::smtp(20, 5000, 1024),
        Scenario::smtp(10, 500, 100 * 1024),
        Scenario::pickup(5000, 1024),
    ]
}

struct Options {
    scenarios: Vec<Scenario>,
    /// An already running server to load instead of starting one.
    server: Option<SocketAddr>,
    sink_port: Option<u16>,
}

enum Parsed {
    Run(Options),
    Help,
}

/// The values of the flags, before they become scenarios.
#[derive(Default)]
struct Flags {
    quick: bool,
    kind: Option<Kind>,
    sessions: Option<u64>,
    messages: Option<u64>,
    size: Option<usize>,
    reuse: bool,
    server: Option<SocketAddr>,
    sink_port: Option<u16>,
}

fn parse_args(args: &[String]) -> Result<Parsed, String> {
    let mut f = Flags::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--quick" => f.quick = true,
            "--reuse" => f.reuse = true,
            "--scenario" => f.kind = Some(parse_kind(&value()?)?),
            "--sessions" => f.sessions = Some(parse_positive(name, &value()?)?),
            "--messages" => f.messages = Some(parse_positive(name, &value()?)?),
            "--size" => f.size = Some(parse_positive(name, &value()?)? as usize),
            "--server" => f.server = Some(parse_server(&value()?)?),
            "--sink-port" => f.sink_port = Some(parse_port(&value()?)?),
            n if n.starts_with("--bench") => {}
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    build_options(f).map(Parsed::Run)
}

fn parse_kind(v: &str) -> Result<Kind, String> {
    match v {
        "smtp" => Ok(Kind::Smtp),
        "pickup" => Ok(Kind::Pickup),
        _ => Err(format!("--scenario must be smtp or pickup, not `{v}`")),
    }
}

fn parse_positive(name: &str, v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{name} needs a whole number above 0, not `{v}`")),
    }
}

fn parse_port(v: &str) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "--sink-port needs a port number (1-65535), not `{v}`"
        )),
    }
}

/// HOST:PORT, resolved; only loopback, since the sink the server must relay to is on 127.0.0.1.
fn parse_server(v: &str) -> Result<SocketAddr, String> {
    let addr = v
        .to_socket_addrs()
        .map_err(|e| format!("--server `{v}`: {e}"))?
        .next()
        .ok_or_else(|| format!("--server `{v}` resolves to no address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--server `{v}` is not a loopback address (the load stays on this machine)"
        ));
    }
    Ok(addr)
}

/// Turns the flags into the list of scenarios to run.
fn build_options(f: Flags) -> Result<Options, String> {
    let custom = f.sessions.is_some() || f.messages.is_some() || f.size.is_some();
    let mut scenarios = if custom {
        let kind = f.kind.unwrap_or(Kind::Smtp);
        if kind == Kind::Pickup && f.sessions.is_some() {
            return Err("--sessions applies to smtp only (one thread writes Pickup files)".into());
        }
        let messages = f.messages.unwrap_or(5000);
        let size = f.size.unwrap_or(1024);
        vec![match kind {
            Kind::Smtp => Scenario::smtp(f.sessions.unwrap_or(20), messages, size),
            Kind::Pickup => Scenario::pickup(messages, size),
        }]
    } else {
        default_set()
            .into_iter()
            .filter(|s| f.kind.is_none_or(|k| k == s.kind))
            .collect()
    };
    if f.reuse && f.kind == Some(Kind::Pickup) {
        return Err("--reuse applies to smtp only".into());
    }
    if f.server.is_some() && f.kind == Some(Kind::Pickup) {
        return Err(
            "pickup needs the generator's own server (it writes into its mailroot); drop --server"
                .into(),
        );
    }
    for s in &mut scenarios {
        if f.quick {
            s.messages = (s.messages / 10).max(1);
        }
        s.reuse = f.reuse && s.kind == Kind::Smtp;
    }
    Ok(Options {
        scenarios,
        server: f.server,
        sink_port: f.sink_port,
    })
}

// ---------------------------------------------------------------------------------------------
// Running the scenarios
// ---------------------------------------------------------------------------------------------

fn run(opts: &Options) -> ExitCode {
    let sink = Sink::start(opts.sink_port.unwrap_or(0))
        .unwrap_or_else(|e| panic!("cannot start the sink on 127.0.0.1: {e}"));
    println!("# sink on {}", sink.addr);
    if opts.server.is_none() {
        // fsync dominates the cost per message, so the file system matters: tmpfs makes it free.
        let tmp = std::env::temp_dir();
        println!(
            "# mailroots under {} (file system {}; set TMPDIR to use another)",
            tmp.display(),
            filesystem_of(&tmp).unwrap_or_else(|| "n/a".into())
        );
    }
    if let Some(addr) = opts.server {
        println!("# loading the running server at {addr}; its CPU and memory are not measured");
        if opts.sink_port.is_none() {
            println!("# no --sink-port: the server cannot relay to this sink, e2e is not measured");
        }
    }
    let mut all_ok = true;
    for sc in &opts.scenarios {
        let outcome = match (sc.kind, opts.server) {
            (Kind::Smtp, Some(addr)) => {
                let target = Target::External {
                    addr,
                    e2e: opts.sink_port.is_some(),
                };
                run_smtp(sc, &target, &sink)
            }
            (Kind::Smtp, None) => {
                let server = Server::start(sink.addr.port(), None);
                run_smtp(sc, &Target::Own(&server), &sink)
            }
            (Kind::Pickup, Some(_)) => {
                println!(
                    "# pickup: skipped (needs the generator's own server, --server was given)"
                );
                continue;
            }
            (Kind::Pickup, None) => {
                let server = Server::start(sink.addr.port(), Some(PICKUP_SETTLE));
                run_pickup(sc, &server, &sink)
            }
        };
        outcome.print();
        all_ok &= outcome.ok();
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The server a scenario loads.
enum Target<'a> {
    /// Started by the generator: its address, and its process for the footprint.
    Own(&'a Server),
    /// Already running; `e2e` says whether it relays to our sink.
    External { addr: SocketAddr, e2e: bool },
}

impl Target<'_> {
    fn addr(&self) -> SocketAddr {
        match self {
            Target::Own(s) => s.addr,
            Target::External { addr, .. } => *addr,
        }
    }

    fn measures_e2e(&self) -> bool {
        match self {
            Target::Own(_) => true,
            Target::External { e2e, .. } => *e2e,
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Target::Own(s) => Some(s.child.id()),
            Target::External { .. } => None,
        }
    }

    fn idle_rss_kib(&self) -> Option<u64> {
        match self {
            Target::Own(s) => s.idle_rss_kib,
            Target::External { .. } => None,
        }
    }

    fn warnings(&self) -> Vec<String> {
        match self {
            Target::Own(s) => s.warnings(),
            Target::External { .. } => Vec::new(),
        }
    }
}

/// What a scenario measured.
struct Outcome {
    scenario: Scenario,
    /// Messages the server took: 250 after the final dot (smtp), files gone from Pickup (pickup).
    accepted: u64,
    /// Seconds from the start until the last session finished (smtp) or Pickup was empty (pickup).
    accept_secs: f64,
    /// Failed messages: bad replies and I/O errors (smtp), files in Badmail (pickup).
    errors: u64,
    first_errors: Vec<String>,
    /// How many the sink counted and the seconds until it counted the last; None when not measured.
    e2e: Option<(u64, f64)>,
    /// Pickup only: seconds the writer took for all files.
    write_secs: Option<f64>,
    /// Pickup only: the PickupSettleTime the server ran with.
    settle_ms: Option<u64>,
    footprint: Footprint,
    server_warnings: Vec<String>,
}

impl Outcome {
    /// Messages the server took (250, or gone from Pickup) that the sink did not count in time.
    fn missing(&self) -> u64 {
        self.e2e.map_or(0, |(n, _)| self.accepted.saturating_sub(n))
    }

    fn ok(&self) -> bool {
        self.errors == 0 && self.missing() == 0 && self.accepted == self.scenario.messages
    }

    fn print(&self) {
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
fn rate(n: u64, secs: f64) -> String {
    format!("{:.0}", per_sec(n, secs))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "n/a".into(), f)
}

fn json_num(v: Option<u64>) -> String {
    v.map_or_else(|| "null".into(), |n| n.to_string())
}

fn json_f64(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "null".into(), |x| format!("{x:.decimals$}"))
}

/// Waits until `count()` reaches `target`, looking every `poll`, giving up when it has not moved for
/// [`STALL`] or after [`WAIT_CAP`]. Returns the last count. For the last 5% it looks every
/// [`POLL_SINK`], so that a slow `poll` costs little CPU yet the end is seen on time.
fn wait_count(target: u64, poll: Duration, count: impl Fn() -> u64) -> u64 {
    let begin = Instant::now();
    let mut last = count();
    let mut moved = Instant::now();
    while last < target && moved.elapsed() < STALL && begin.elapsed() < WAIT_CAP {
        let near_end = target - last <= target / 20;
        thread::sleep(if near_end { POLL_SINK.min(poll) } else { poll });
        let now = count();
        if now != last {
            last = now;
            moved = Instant::now();
        }
    }
    last
}

// ---------------------------------------------------------------------------------------------
// Scenario smtp
// ---------------------------------------------------------------------------------------------

/// Counters shared by the client sessions of a scenario.
struct Tally {
    /// The next message number to send; sessions take numbers until `messages`.
    next: AtomicU64,
    messages: u64,
    accepted: AtomicU64,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl Tally {
    fn new(messages: u64) -> Tally {
        Tally {
            next: AtomicU64::new(0),
            messages,
            accepted: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_errors: Mutex::new(Vec::new()),
        }
    }

    /// Claims the next message to send; false when all are taken.
    fn take(&self) -> bool {
        self.next.fetch_add(1, Ordering::Relaxed) < self.messages
    }

    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().expect("error list lock");
        if first.len() < SHOWN {
            first.push(e);
        }
    }
}

fn run_smtp(sc: &Scenario, target: &Target, sink: &Sink) -> Outcome {
    let message = Arc::new(smtp_message(sc.size));
    let tally = Arc::new(Tally::new(sc.messages));
    let addr = target.addr();
    let base = sink.count();
    let cpu0 = target.pid().and_then(cpu_ticks);
    let start = Instant::now();
    let sessions: Vec<_> = (0..sc.sessions)
        .map(|_| {
            let (message, tally, reuse) = (message.clone(), tally.clone(), sc.reuse);
            thread::spawn(move || session(addr, &message, &tally, reuse))
        })
        .collect();
    for s in sessions {
        s.join().expect("a client session thread panicked");
    }
    let accept_secs = start.elapsed().as_secs_f64();
    // Wait for what the server answered 250 for: a message that got an error is not owed.
    let accepted = tally.accepted.load(Ordering::Relaxed);
    let e2e = target.measures_e2e().then(|| {
        let n = wait_count(accepted, POLL_SINK, || sink.count() - base);
        (
            n,
            sink.last_at()
                .saturating_duration_since(start)
                .as_secs_f64(),
        )
    });
    let footprint = Footprint::measure(target.pid(), cpu0, sc.messages, target.idle_rss_kib());
    let first_errors = tally.first_errors.lock().expect("error list lock").clone();
    Outcome {
        scenario: *sc,
        accepted,
        accept_secs,
        errors: tally.errors.load(Ordering::Relaxed),
        first_errors,
        e2e,
        write_secs: None,
        settle_ms: None,
        footprint,
        server_warnings: target.warnings(),
    }
}

/// One client session: sends messages until the tally has none left.
fn session(addr: SocketAddr, message: &[u8], tally: &Tally, reuse: bool) {
    let mut conn: Option<Client> = None;
    while tally.take() {
        let result = if reuse {
            reused_connection(addr, message, &mut conn)
        } else {
            single_message(addr, message)
        };
        match result {
            Ok(()) => {
                tally.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tally.error(e),
        }
    }
    if let Some(mut c) = conn
        && let Err(e) = c.quit()
    {
        tally.error(e);
    }
}

/// Connect, EHLO, one transaction, QUIT. A failed QUIT fails the message too: every reply counts.
fn single_message(addr: SocketAddr, message: &[u8]) -> Result<(), String> {
    let mut c = Client::open(addr)?;
    c.transaction(message)?;
    c.quit()
}

/// One transaction on the session's connection, opened on first use; RSET before every later one.
/// After an error the connection is dropped, and the next message opens a fresh one.
fn reused_connection(
    addr: SocketAddr,
    message: &[u8],
    conn: &mut Option<Client>,
) -> Result<(), String> {
    let mut c = match conn.take() {
        Some(mut c) => {
            c.command("RSET", 250)?;
            c
        }
        None => Client::open(addr)?,
    };
    c.transaction(message)?;
    *conn = Some(c);
    Ok(())
}

/// The message as sent after DATA: a few headers, `size` bytes of body, and the final dot. No body
/// line starts with "." so no dot-stuffing is needed.
fn smtp_message(size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: mailroot load test\r\n\
         Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(&body(size));
    m.extend_from_slice(b".\r\n");
    m
}

/// `size` bytes of text: lines of 78 characters plus CRLF, the last one shorter (at least CRLF).
fn body(size: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut b = Vec::with_capacity(size + 2);
    let mut line = 0usize;
    while b.len() < size {
        let chars = (size - b.len()).saturating_sub(2).min(LINE_CHARS);
        // Shift the alphabet per line so lines differ (closer to real text than one repeated line).
        b.extend((0..chars).map(|i| ALPHABET[(i + line) % ALPHABET.len()]));
        b.extend_from_slice(b"\r\n");
        line += 1;
    }
    b
}

/// A client connection to the server, with every reply checked.
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    /// Connects, reads the 220 greeting and says EHLO.
    fn open(addr: SocketAddr) -> Result<Client, String> {
        let stream = connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
        let reader = BufReader::new(
            stream
                .try_clone()
                .map_err(|e| format!("clone the socket: {e}"))?,
        );
        let mut c = Client {
            writer: stream,
            reader,
        };
        c.expect("greeting", 220)?;
        c.command("EHLO load.example.test", 250)?;
        Ok(c)
    }

    /// MAIL, RCPT, DATA, the message, and 250 after the final dot.
    fn transaction(&mut self, message: &[u8]) -> Result<(), String> {
        self.command(&format!("MAIL FROM:<{SENDER}>"), 250)?;
        self.command(&format!("RCPT TO:<{RECIPIENT}>"), 250)?;
        self.command("DATA", 354)?;
        self.send(message)?;
        self.expect("end of data", 250)
    }

    fn quit(&mut self) -> Result<(), String> {
        self.command("QUIT", 221)
    }

    /// Sends `line` and CRLF and checks the reply code.
    fn command(&mut self, line: &str, code: u16) -> Result<(), String> {
        self.send(format!("{line}\r\n").as_bytes())?;
        let verb = line.split(':').next().unwrap_or(line);
        self.expect(verb, code)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.writer
            .write_all(bytes)
            .map_err(|e| format!("send: {e}"))
    }

    /// Reads one reply (all its lines) and checks its code.
    fn expect(&mut self, what: &str, code: u16) -> Result<(), String> {
        let (got, text) = self.reply().map_err(|e| format!("{what}: {e}"))?;
        if got == code {
            Ok(())
        } else {
            Err(format!("{what}: expected {code}, got {text}"))
        }
    }

    /// One reply: its code and its last line.
    fn reply(&mut self) -> Result<(u16, String), String> {
        let mut raw = Vec::new();
        loop {
            raw.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut raw)
                .map_err(|e| format!("read reply: {e}"))?;
            if n == 0 {
                return Err("connection closed by the server".into());
            }
            let line = String::from_utf8_lossy(&raw).trim_end().to_string();
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| format!("malformed reply line {line:?}"))?;
            // "250-..." continues the reply, "250 ..." (or a bare "250") ends it.
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, line));
            }
        }
    }
}

/// A loopback connection with every operation bounded, and without Nagle: the client writes small
/// commands and then waits, and Nagle's algorithm against delayed ACKs would measure 40 ms stalls
/// instead of the server.
fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// Scenario pickup
// ---------------------------------------------------------------------------------------------

/// The PickupSettleTime of the pickup scenario, in milliseconds: the smallest allowed. The files are
/// renamed into place complete, so the server need not wait for them to settle.
const PICKUP_SETTLE: u64 = 0;

fn run_pickup(sc: &Scenario, server: &Server, sink: &Sink) -> Outcome {
    let pickup = server.folder("Pickup");
    fs::create_dir_all(&pickup).expect("create the Pickup folder");
    let file = pickup_file(sc.size);
    let n = sc.messages;
    let base = sink.count();
    let pid = Some(server.child.id());
    let cpu0 = pid.and_then(cpu_ticks);
    let start = Instant::now();
    for i in 0..n {
        drop_file(&pickup, i, &file);
    }
    let write_secs = start.elapsed().as_secs_f64();
    let queue = server.folder("Queue");
    let badmail = server.folder("Badmail");
    // A message has left Pickup when no .eml or .claimed file of it is there: the claimed file is
    // removed only after the message was committed to Queue (or Badmail). The second term checks
    // that they really arrived there (or were already delivered).
    let left = || {
        let gone = n.saturating_sub(count_files(&pickup, &["eml", "claimed"]));
        let arrived =
            count_files(&queue, &["eml"]) + count_files(&badmail, &["bad"]) + sink.count() - base;
        gone.min(arrived)
    };
    let accepted = wait_count(n, POLL_FOLDERS, left);
    let accept_secs = start.elapsed().as_secs_f64();
    let delivered = wait_count(n, POLL_SINK, || sink.count() - base);
    let e2e_secs = sink
        .last_at()
        .saturating_duration_since(start)
        .as_secs_f64();
    let footprint = Footprint::measure(pid, cpu0, n, server.idle_rss_kib);
    let bad = count_files(&badmail, &["bad"]);
    Outcome {
        scenario: *sc,
        accepted: accepted.saturating_sub(bad),
        accept_secs,
        errors: bad,
        first_errors: if bad > 0 {
            vec![format!("{bad} pickup files went to Badmail")]
        } else {
            Vec::new()
        },
        e2e: Some((delivered, e2e_secs)),
        write_secs: Some(write_secs),
        settle_ms: Some(PICKUP_SETTLE),
        footprint,
        server_warnings: server.warnings(),
    }
}

/// A pickup file: the server takes the envelope from the headers (sender from From, recipients
/// from To), as IIS does.
fn pickup_file(size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: mailroot load test (pickup)\r\n\
         Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(&body(size));
    m
}

/// Writes file `i` under a name the server skips (`.tmp`), then renames it into place, so the
/// server never reads a half-written file.
fn drop_file(pickup: &Path, i: u64, contents: &[u8]) {
    let tmp = pickup.join(format!("load-{i:07}.tmp"));
    let eml = pickup.join(format!("load-{i:07}.eml"));
    fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, &eml).unwrap_or_else(|e| panic!("rename {}: {e}", tmp.display()));
}

/// Files in `dir` whose extension is one of `exts` (0 when the folder cannot be read).
fn count_files(dir: &Path, exts: &[&str]) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.path()
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| exts.contains(&x))
        })
        .count() as u64
}

// ---------------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------------

/// A `mailroot serve` child on a fresh temporary mailroot. Dropping it kills the child, then the
/// temporary folder goes (field `dir` is dropped after `drop` ran).
struct Server {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
    /// VmRSS right after start-up, before any load.
    idle_rss_kib: Option<u64>,
    /// WARN and ERROR lines of the server log (the first few).
    warnings: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the binary relaying everything to 127.0.0.1:`sink_port`; `settle_ms` sets
    /// PickupSettleTime. Panics (after cleaning up) when it does not come up.
    fn start(sink_port: u16, settle_ms: Option<u64>) -> Server {
        let dir = TempDir::new();
        let ini = dir.0.join("smtpsvc.ini");
        fs::write(&ini, server_ini(&dir.0, sink_port, settle_ms)).expect("write the server INI");
        let spawned = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mailroot"))
            .arg("serve")
            .arg("--config")
            .arg(&ini)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the mailroot binary");
        let stderr = child.stderr.take().expect("the server's piped stderr");
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let lines = drain_log(stderr, warnings.clone());
        let mut server = Server {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            dir,
            idle_rss_kib: None,
            warnings,
        };
        // On failure `server` is dropped here, which kills the child and removes the folder.
        server.addr = server
            .wait_listening(&lines)
            .unwrap_or_else(|e| panic!("{e}"));
        server.idle_rss_kib = status_kib(server.child.id(), "VmRSS:");
        match first_banner(server.addr) {
            Ok(()) => println!(
                "# server up: first 220 {:.1} ms after the process was started, idle rss {}",
                spawned.elapsed().as_secs_f64() * 1000.0,
                opt(server.idle_rss_kib, mib)
            ),
            Err(e) => panic!("no 220 from the fresh server: {e}"),
        }
        server
    }

    /// Reads the log until `SMTPSVC1: listening on ADDR`, within [`START_WAIT`].
    fn wait_listening(&mut self, lines: &mpsc::Receiver<String>) -> Result<SocketAddr, String> {
        let until = Instant::now() + START_WAIT;
        let mut seen = Vec::new();
        while Instant::now() < until {
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some((_, addr)) = line.split_once("SMTPSVC1: listening on ") {
                        return addr
                            .trim()
                            .parse()
                            .map_err(|e| format!("bad address in {line:?}: {e}"));
                    }
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "mailroot exited with {status} before listening:\n{}",
                    seen.join("\n")
                ));
            }
        }
        Err(format!(
            "mailroot did not print `listening on` within {START_WAIT:?}:\n{}",
            seen.join("\n")
        ))
    }

    fn folder(&self, name: &str) -> PathBuf {
        self.dir.0.join("mailroot").join(name)
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.lock().expect("server log lock").clone()
    }
}

/// Connects and reads the greeting (the start-up figure: until a client would see `220`).
fn first_banner(addr: SocketAddr) -> Result<(), String> {
    let stream = connect(addr).map_err(|e| format!("connect: {e}"))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    let mut w = &stream;
    let _ = w.write_all(b"QUIT\r\n");
    if line.starts_with("220 ") {
        Ok(())
    } else {
        Err(format!("greeting {line:?}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGKILL: the mailroot is thrown away, so there is nothing to shut down cleanly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The INI of the bench server (as ../shared/bench/run_mailroot.sh writes it for the Postfix
/// comparison), on an ephemeral port.
fn server_ini(dir: &Path, sink_port: u16, settle_ms: Option<u64>) -> String {
    let mut ini = format!(
        "[SmtpSvc/1]\n\
         ServerBindings = 127.0.0.1:0\n\
         FullyQualifiedDomainName = bench.mailroot.test\n\
         MailRoot = {}\n\
         LogFileDirectory = {}\n\
         DefaultDomain = bench.mailroot.test\n\
         RelayIpList = 127.0.0.0/8\n\
         MaxConnections = 2000\n\
         SmartHost = [127.0.0.1]:{sink_port}\n\
         SmartHostType = 2\n",
        dir.join("mailroot").display(),
        dir.join("logs").display(),
    );
    if let Some(ms) = settle_ms {
        let _ = writeln!(ini, "PickupSettleTime = {ms}ms");
    }
    ini
}

/// Reads the server's stderr for as long as it runs, so it never blocks on a full pipe. Lines go to
/// the returned channel (read until the server listens; later sends fail quietly) and WARN or ERROR
/// lines also to `warnings`. Bytes are read as such, so non-UTF-8 output cannot stop the draining.
fn drain_log(
    stderr: impl Read + Send + 'static,
    warnings: Arc<Mutex<Vec<String>>>,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&raw).trim_end().to_string();
            // env_logger lines start with "[<time> <LEVEL> <target>]".
            let level = line.split(']').next().unwrap_or("");
            if level.contains(" WARN") || level.contains(" ERROR") {
                let mut w = warnings.lock().expect("server log lock");
                if w.len() < SHOWN {
                    w.push(line.clone());
                }
            }
            let _ = tx.send(line);
        }
    });
    rx
}

/// A fresh empty folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "mailroot-load-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        // A folder left by an earlier run with the same process id would mix old mail in.
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Server footprint (Linux /proc)
// ---------------------------------------------------------------------------------------------

/// The server's CPU and memory over a scenario; None where not measurable.
struct Footprint {
    cpu_ms_per_msg: Option<f64>,
    hwm_kib: Option<u64>,
    rss_kib: Option<u64>,
    idle_rss_kib: Option<u64>,
}

impl Footprint {
    /// Reads the end values for `pid`; `cpu0` is its CPU time in ticks before the load.
    fn measure(
        pid: Option<u32>,
        cpu0: Option<u64>,
        messages: u64,
        idle_rss_kib: Option<u64>,
    ) -> Footprint {
        let cpu1 = pid.and_then(cpu_ticks);
        Footprint {
            cpu_ms_per_msg: match (cpu0, cpu1) {
                (Some(a), Some(b)) if messages > 0 => Some(ticks_to_ms(b - a) / messages as f64),
                _ => None,
            },
            hwm_kib: pid.and_then(|p| status_kib(p, "VmHWM:")),
            rss_kib: pid.and_then(|p| status_kib(p, "VmRSS:")),
            idle_rss_kib,
        }
    }
}

/// User plus system CPU time of the whole process (all threads), in clock ticks.
#[cfg(target_os = "linux")]
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces; count fields after it.
    // Field 3 is the first after ")"; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(not(target_os = "linux"))]
fn cpu_ticks(_pid: u32) -> Option<u64> {
    None
}

#[cfg(target_os = "linux")]
fn ticks_to_ms(ticks: u64) -> f64 {
    ticks as f64 * 1000.0 / CLOCK_TICKS_PER_SEC
}

#[cfg(not(target_os = "linux"))]
fn ticks_to_ms(_ticks: u64) -> f64 {
    0.0
}

/// The type of the file system holding `path` (the longest mount point above it in /proc/mounts).
#[cfg(target_os = "linux")]
fn filesystem_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_device, point, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(point)
                .then(|| (point.len(), kind.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
}

#[cfg(not(target_os = "linux"))]
fn filesystem_of(_path: &Path) -> Option<String> {
    None
}

/// A `kB` value of /proc/PID/status, e.g. `VmHWM:`.
#[cfg(target_os = "linux")]
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(not(target_os = "linux"))]
fn status_kib(_pid: u32, _key: &str) -> Option<u64> {
    None
}

// ---------------------------------------------------------------------------------------------
// The counting sink
// ---------------------------------------------------------------------------------------------

/// A receiving SMTP server on 127.0.0.1 that counts the messages it is given, one thread per
/// connection. It answers commands in order from a buffer, so pipelined commands work, and takes
/// any number of transactions per connection, since mailroot's delivery client reuses connections.
struct Sink {
    addr: SocketAddr,
    state: Arc<SinkState>,
}

struct SinkState {
    count: AtomicU64,
    /// When the last message was counted, in nanoseconds since `epoch`: e2e time does not depend on
    /// how often the generator looks at the count.
    last_ns: AtomicU64,
    epoch: Instant,
}

impl Sink {
    fn start(port: u16) -> io::Result<Sink> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(SinkState {
            count: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let shared = state.clone();
        // The accept thread lives as long as the process; the generator exits when it is done.
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = shared.clone();
                thread::spawn(move || {
                    // A broken connection is the server's business (it retries); nothing to count.
                    let _ = sink_session(stream, &state);
                });
            }
        });
        Ok(Sink { addr, state })
    }

    fn count(&self) -> u64 {
        self.state.count.load(Ordering::SeqCst)
    }

    /// When the last message so far was counted.
    fn last_at(&self) -> Instant {
        self.state.epoch + Duration::from_nanos(self.state.last_ns.load(Ordering::SeqCst))
    }
}

impl SinkState {
    fn counted(&self) {
        let ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // Time first, so that whoever sees the new count sees a time at least this late.
        self.last_ns.fetch_max(ns, Ordering::SeqCst);
        self.count.fetch_add(1, Ordering::SeqCst);
    }
}

/// One connection to the sink.
fn sink_session(stream: TcpStream, state: &SinkState) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
    let mut out = BufWriter::new(stream);
    out.write_all(b"220 sink.load.test ESMTP ready\r\n")?;
    let mut line = Vec::new();
    let mut recipients = 0u32;
    loop {
        // Replies to pipelined commands go out together, once no whole command is left to answer.
        if !reader.buffer().contains(&b'\n') {
            out.flush()?;
        }
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let verb = line
            .get(..4)
            .map(|v| v.to_ascii_uppercase())
            .unwrap_or_default();
        let reply: &[u8] = match verb.as_slice() {
            b"EHLO" => {
                b"250-sink.load.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 104857600\r\n"
            }
            b"HELO" => b"250 sink.load.test\r\n",
            b"MAIL" => {
                recipients = 0;
                b"250 2.1.0 OK\r\n"
            }
            b"RCPT" => {
                recipients += 1;
                b"250 2.1.5 OK\r\n"
            }
            b"DATA" if recipients == 0 => b"503 5.5.1 No recipients\r\n",
            b"DATA" => {
                // The client waits for 354 before it sends the message.
                out.write_all(b"354 Go ahead\r\n")?;
                out.flush()?;
                read_data(&mut reader)?;
                state.counted();
                recipients = 0;
                b"250 2.0.0 OK counted\r\n"
            }
            b"RSET" => {
                recipients = 0;
                b"250 2.0.0 OK\r\n"
            }
            b"NOOP" => b"250 2.0.0 OK\r\n",
            b"QUIT" => {
                out.write_all(b"221 2.0.0 Bye\r\n")?;
                return out.flush();
            }
            _ => b"500 5.5.2 Command not recognised\r\n",
        };
        out.write_all(reply)?;
    }
}

/// Reads message data up to and including the CRLF.CRLF terminator (a line holding only ".").
fn read_data(reader: &mut impl BufRead) -> io::Result<()> {
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside DATA",
            ));
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(());
        }
    }
}
