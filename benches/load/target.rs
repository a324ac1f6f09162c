//! The server a scenario loads: one the generator starts (the tests' launcher, on a fresh temporary
//! mailroot whose SmartHost is the sink), or one already running.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::common::{Dial, Server, TempDir};
use crate::measure::status_kib;
use crate::report::{mib, opt};
use crate::{IO_TIMEOUT, SHOWN};

/// A `mailroot serve` child on a fresh temporary mailroot (the tests' [`Server`]: dropping it kills
/// the child, then the folder goes), and its resident memory right after start-up.
pub struct Own {
    pub server: Server,
    /// VmRSS right after start-up, before any load.
    pub idle_rss_kib: Option<u64>,
}

impl Own {
    /// Starts the binary relaying everything to 127.0.0.1:`sink_port`; `settle_ms` sets
    /// PickupSettleTime. Panics (after cleaning up) when it does not come up.
    pub fn start(sink_port: u16, settle_ms: Option<u64>) -> Own {
        let dir = TempDir::new("load");
        let ini = server_ini(dir.path(), sink_port, settle_ms);
        let (server, first_220, idle_rss_kib) = launch(dir, &ini);
        println!(
            "# server up: first 220 {:.1} ms after the process was started, idle rss {}",
            first_220.as_secs_f64() * 1000.0,
            opt(idle_rss_kib, mib)
        );
        Own {
            server,
            idle_rss_kib,
        }
    }
}

/// Starts `mailroot serve` with `ini` on `dir` and reads its first greeting. Returns the server,
/// the time from the start of the process to that `220`, and its VmRSS once it listened. Panics
/// (after killing it) when no 220 comes.
pub fn launch(dir: TempDir, ini: &str) -> (Server, Duration, Option<u64>) {
    // No wait for further bindings: the start-up is timed to the first 220.
    let server = Server::launch(dir, ini, Duration::ZERO);
    let rss_kib = server.pid().and_then(|p| status_kib(p, "VmRSS:"));
    match first_banner(server.addr()) {
        Ok(()) => {
            let first_220 = server.started.elapsed();
            (server, first_220, rss_kib)
        }
        Err(e) => panic!("no 220 from the server: {e}"),
    }
}

/// Connects and reads the greeting (the start-up figure: until a client would see `220`).
fn first_banner(addr: SocketAddr) -> Result<(), String> {
    let mut c = Dial::new()
        .timeout(IO_TIMEOUT)
        .nodelay()
        .plain(addr)
        .map_err(|e| format!("connect: {e}"))?;
    let greeting = c.read_reply().map_err(|e| format!("read: {e}"));
    let _ = c.try_send(b"QUIT\r\n");
    match greeting? {
        r if r.code == 220 => Ok(()),
        r => Err(format!("greeting {:?}", r.last())),
    }
}

/// The INI of the bench server (as the Postfix comparison's `run_mailroot.sh` writes it, see
/// docs/performance.md), on an ephemeral port.
pub fn server_ini(dir: &Path, sink_port: u16, settle_ms: Option<u64>) -> String {
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

/// The server a scenario loads.
pub enum Target<'a> {
    /// Started by the generator: its address, and its process for the footprint.
    Own(&'a Own),
    /// Already running; `e2e` says whether it relays to our sink.
    External { addr: SocketAddr, e2e: bool },
}

impl Target<'_> {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Target::Own(s) => s.server.addr(),
            Target::External { addr, .. } => *addr,
        }
    }

    pub fn measures_e2e(&self) -> bool {
        match self {
            Target::Own(_) => true,
            Target::External { e2e, .. } => *e2e,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        match self {
            Target::Own(s) => s.server.pid(),
            Target::External { .. } => None,
        }
    }

    pub fn idle_rss_kib(&self) -> Option<u64> {
        match self {
            Target::Own(s) => s.idle_rss_kib,
            Target::External { .. } => None,
        }
    }

    /// The first WARN and ERROR lines of the server log.
    pub fn warnings(&self) -> Vec<String> {
        match self {
            Target::Own(s) => s.server.warnings(SHOWN),
            Target::External { .. } => Vec::new(),
        }
    }
}
