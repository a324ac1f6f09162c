//! The server's footprint, read from Linux /proc: CPU time, peak and current resident memory (RSS and
//! PSS, also sampled over a run), threads, and the file system the mailroots live on. Elsewhere
//! every figure is "n/a".

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Linux reports CPU time in clock ticks of USER_HZ, which is 100 on every architecture Linux runs on
/// today; asking with sysconf(_SC_CLK_TCK) would need libc, which is not a dependency.
#[cfg(target_os = "linux")]
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// The server's CPU and memory over a scenario; None where not measurable.
pub struct Footprint {
    pub cpu_ms_per_msg: Option<f64>,
    pub hwm_kib: Option<u64>,
    pub rss_kib: Option<u64>,
    pub idle_rss_kib: Option<u64>,
}

impl Footprint {
    /// Reads the end values for `pid`; `cpu0` is its CPU time in ticks before the load.
    pub fn measure(
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
pub fn cpu_ticks(pid: u32) -> Option<u64> {
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
pub fn cpu_ticks(_pid: u32) -> Option<u64> {
    None
}

#[cfg(target_os = "linux")]
pub fn ticks_to_ms(ticks: u64) -> f64 {
    ticks as f64 * 1000.0 / CLOCK_TICKS_PER_SEC
}

#[cfg(not(target_os = "linux"))]
pub fn ticks_to_ms(_ticks: u64) -> f64 {
    0.0
}

/// The type of the file system holding `path` (the longest mount point above it in /proc/mounts).
#[cfg(target_os = "linux")]
pub fn filesystem_of(path: &Path) -> Option<String> {
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
pub fn filesystem_of(_path: &Path) -> Option<String> {
    None
}

/// A `kB` value of /proc/PID/status, e.g. `VmHWM:`.
#[cfg(target_os = "linux")]
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(not(target_os = "linux"))]
pub fn status_kib(_pid: u32, _key: &str) -> Option<u64> {
    None
}

/// Proportional set size of `pid` in KiB (`Pss:` of /proc/PID/smaps_rollup): the resident memory
/// with shared pages (the C library, the binary's own file pages) divided among their users.
#[cfg(target_os = "linux")]
pub fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
    line["Pss:".len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(not(target_os = "linux"))]
pub fn pss_kib(_pid: u32) -> Option<u64> {
    None
}

/// The server's memory and threads, sampled by a thread of its own (VmHWM gives the peak RSS
/// exactly; PSS and the thread count have no kernel peak, so they are sampled).
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Samples>>,
}

/// What a [`Sampler`] saw: the highest and the last values (None where not readable).
#[derive(Clone, Copy, Debug, Default)]
pub struct Samples {
    pub peak_rss_kib: Option<u64>,
    pub peak_pss_kib: Option<u64>,
    pub peak_threads: Option<u64>,
    pub rss_kib: Option<u64>,
    pub pss_kib: Option<u64>,
    pub threads: Option<u64>,
}

impl Samples {
    fn take(&mut self, pid: u32) {
        let rss = status_kib(pid, "VmRSS:");
        let pss = pss_kib(pid);
        let threads = status_kib(pid, "Threads:");
        let max = |a: Option<u64>, b: Option<u64>| a.max(b);
        self.peak_rss_kib = max(self.peak_rss_kib, rss);
        self.peak_pss_kib = max(self.peak_pss_kib, pss);
        self.peak_threads = max(self.peak_threads, threads);
        (self.rss_kib, self.pss_kib, self.threads) = (rss, pss, threads);
    }
}

impl Sampler {
    /// Samples `pid` every `every` until [`Sampler::finish`].
    pub fn start(pid: Option<u32>, every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut s = Samples::default();
            let Some(pid) = pid else {
                return s;
            };
            while !flag.load(Ordering::Relaxed) {
                s.take(pid);
                std::thread::sleep(every);
            }
            s.take(pid);
            s
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Takes a last sample and returns what was seen.
    pub fn finish(mut self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
