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
//! - `backlog` (only when asked for): a restart with a large Queue. N messages are written into
//!   Queue while the next hop is down; the server starts, tries each once and waits; it is stopped,
//!   the next hop (the sink) comes back, and the restarted server drains the Queue. It reports the
//!   time to the first 220 and to the first delivery, the drain rate, and the memory and threads
//!   with the Queue waiting and while draining (see `backlog.rs`).
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
//! cargo bench --bench load -- --scenario backlog                     # restart with 10,000 queued
//! cargo bench --bench load -- --scenario backlog --messages 100000   # ... with 100,000 (minutes)
//! cargo bench --bench load -- --help
//! ```
//!
//! Every connect, read and wait is bounded; the server is killed and the temporary folder removed
//! when a scenario ends, also when it panics. Run without any argument at all (as `cargo test
//! --all-targets` runs bench targets) it only says how to run it, so test runs stay short.
//!
//! The launcher of the server, the SMTP client and the sink are the integration tests' own
//! (tests/common); this program adds the workloads, the measurements and the report.

#[path = "../../tests/common/mod.rs"]
mod common;

mod args;
mod backlog;
mod measure;
mod report;
mod target;
mod workloads;

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use args::{Kind, Options, Parsed, parse_args};
use backlog::run_backlog;
use common::sink::Sink;
use measure::filesystem_of;
use target::{Own, Target};
use workloads::{PICKUP_SETTLE, run_pickup, run_smtp};

/// Timeout of every connect, read and write of the client.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How many client errors and server warnings are printed per scenario.
const SHOWN: usize = 5;

const USAGE: &str = "\
usage: cargo bench --bench load [-- OPTIONS]

End-to-end load test: SMTP client or Pickup files -> mailroot -> counting SMTP sink (all on 127.0.0.1).
Without options it runs the default set, each scenario against a fresh server and mailroot:
  smtp 1x2000x1KiB, smtp 20x5000x1KiB, smtp 10x500x100KiB (sessions x messages x size), pickup 5000x1KiB
With --scenario backlog it runs a restart with a large Queue instead: --messages files are written
into Queue while the next hop is down, the server starts and tries each once, is stopped, the next
hop comes back, and the restarted server drains the Queue (first 220, first delivery, drain rate,
memory and threads; default 10000 messages, --messages 100000 for the figures of
docs/performance.md: minutes, see there).

Options:
  --quick                 divide every message count by 10
  --scenario smtp|pickup|backlog
                          run only the scenarios of this kind
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
  --down-secs S           backlog: seconds the server waits with the next hop down after it tried
                          every message once, before its steady-state memory is read (default
                          10)
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

/// The counting sink on 127.0.0.1:`port` (0: ephemeral). It answers pipelined commands together and
/// takes any number of transactions per connection, since mailroot's delivery client reuses them.
fn start_sink(port: u16) -> io::Result<Sink> {
    Sink::builder()
        .port(port)
        .hostname("sink.load.test")
        .ehlo_extensions(["PIPELINING", "8BITMIME", "SIZE 104857600"])
        .count_only()
        .try_start()
}

fn run(opts: &Options) -> ExitCode {
    // The backlog scenario starts a sink of its own, late, on the port of its dead next hop.
    let shared_sink = opts.scenarios.iter().any(|s| s.kind != Kind::Backlog);
    let sink = shared_sink.then(|| {
        let sink = start_sink(opts.sink_port.unwrap_or(0))
            .unwrap_or_else(|e| panic!("cannot start the sink on 127.0.0.1: {e}"));
        println!("# sink on {}", sink.addr);
        sink
    });
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
        let Some(sink) = sink.as_ref().filter(|_| sc.kind != Kind::Backlog) else {
            let outcome = run_backlog(sc);
            outcome.print();
            all_ok &= outcome.ok();
            continue;
        };
        let outcome = match (sc.kind, opts.server) {
            (Kind::Smtp, Some(addr)) => {
                let target = Target::External {
                    addr,
                    e2e: opts.sink_port.is_some(),
                };
                run_smtp(sc, &target, sink)
            }
            (Kind::Smtp, None) => {
                let server = Own::start(sink.addr.port(), None);
                run_smtp(sc, &Target::Own(&server), sink)
            }
            (Kind::Pickup, Some(_)) => {
                println!(
                    "# pickup: skipped (needs the generator's own server, --server was given)"
                );
                continue;
            }
            (Kind::Pickup, None) => {
                let server = Own::start(sink.addr.port(), Some(PICKUP_SETTLE));
                run_pickup(sc, &server, sink)
            }
            (Kind::Backlog, _) => unreachable!("run above"),
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
