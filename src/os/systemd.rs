//! systemd's side of a service, without libsystemd (Unix only; systemd itself is Linux only, and
//! elsewhere the variables below are never set, so every call here is a harmless no-op).
//!
//! - **Readiness** (`Type=notify`, sd_notify(3)): the service manager passes the path of a datagram
//!   socket in `$NOTIFY_SOCKET` (a file system path, or `@name` in Linux's abstract namespace), and
//!   the service sends it newline-separated `KEY=value` assignments: [`READY`] once every listener
//!   is bound, [`reloading`] then [`READY`] around a reload, [`STOPPING`] when it begins to stop.
//!   [`notify`] sends one such datagram.
//! - **The journal** (systemd.exec(5), `$JOURNAL_STREAM`): when standard error is the stream
//!   journald reads, the server log leaves the time stamps to journald and prefixes each line with
//!   its `<priority>` ([`under_journald`]; the format itself is in `logging::server`).
//!
//! mailroot's unit (packaging/systemd/mailroot.service) is `Type=notify`, not `Type=notify-reload`:
//! the latter needs systemd 253 (Debian 12 and Ubuntu 22.04 have older ones), so the unit reloads
//! with `ExecReload=kill -HUP $MAINPID`, and systemd takes `RELOADING=1` … `READY=1` as the
//! reload's progress. [`reloading`] still adds `MONOTONIC_USEC=` where the clock can be read,
//! which `Type=notify-reload` requires, so that the unit can move to it unchanged on the server's
//! side.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

/// Startup (or a reload) is complete: every listener is bound.
pub const READY: &str = "READY=1";

/// The service is beginning to shut down.
pub const STOPPING: &str = "STOPPING=1";

/// How long one notification may wait for room in the manager's socket buffer. systemd reads it
/// at once; a manager that hangs must not hang the server with it.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `state` (e.g. [`READY`], or several `KEY=value` lines) to the service manager named by
/// `$NOTIFY_SOCKET`, as sd_notify(3) does. `Ok(false)` when the variable is unset or empty (not
/// started by systemd, or by a unit that is not `Type=notify`); `Ok(true)` once the datagram is
/// sent; an error when the socket cannot be reached (the caller logs it and goes on: readiness is
/// a courtesy to the manager, never a reason to stop serving).
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` as one datagram to `socket`: an absolute path, or `@name` for the abstract
/// namespace (Linux). Other forms (systemd 253's `vsock:`) are refused with `InvalidInput`.
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    sock.set_write_timeout(Some(SEND_TIMEOUT))?;
    let bytes = socket.as_bytes();
    let sent = match bytes.first() {
        Some(b'/') => sock.send_to(state.as_bytes(), Path::new(socket))?,
        Some(b'@') => send_abstract(&sock, &bytes[1..], state.as_bytes())?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET {socket:?} is neither an absolute path nor an @name"),
            ));
        }
    };
    if sent == state.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the notification datagram was cut short",
        ))
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &[u8], data: &[u8]) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(data, &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_sock: &UnixDatagram, _name: &[u8], _data: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist on Linux only",
    ))
}

/// The notification that a reload begins: `RELOADING=1`, with `MONOTONIC_USEC=` (the time on
/// CLOCK_MONOTONIC, in µs) where it can be read. Follow it with [`READY`] when the reload is done,
/// whether it applied the new settings or kept the running ones.
pub fn reloading() -> String {
    match monotonic_usec() {
        Some(us) => format!("RELOADING=1\nMONOTONIC_USEC={us}"),
        None => "RELOADING=1".to_string(),
    }
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares reload times on. std's `Instant`
/// reads the same clock on Linux but does not show it, so this asks the C library directly (the
/// same way `os::unix` reaches `syncfs`; the layout of `struct timespec` is two 64-bit fields on
/// 64-bit Linux, glibc and musl alike). `None` elsewhere.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
pub fn monotonic_usec() -> Option<u64> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    /// Linux's CLOCK_MONOTONIC.
    const CLOCK_MONOTONIC: i32 = 1;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives across the call.
    if unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) } != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    secs.checked_mul(1_000_000)?.checked_add(nanos / 1_000)
}

/// CLOCK_MONOTONIC in microseconds: not read on this system.
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
pub fn monotonic_usec() -> Option<u64> {
    None
}

/// Whether standard error is the stream journald reads: `$JOURNAL_STREAM` (`DEVICE:INODE`, set by
/// systemd for a service whose output goes to the journal) names the device and inode of standard
/// error. A child whose standard error was redirected inherits the variable but not the stream,
/// and so gets false, as systemd.exec(5) asks.
pub fn under_journald() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stderr_identity() else {
        return false;
    };
    value
        .to_str()
        .is_some_and(|v| journal_stream_is(v, dev, ino))
}

/// The device and inode of standard error (a duplicate of the descriptor is examined and closed).
fn stderr_identity() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Whether a `$JOURNAL_STREAM` value (`DEVICE:INODE`, both decimal) names this device and inode.
fn journal_stream_is(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fresh folder for a socket, removed on drop (short: socket paths are at most 107 bytes).
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let p =
                std::env::temp_dir().join(format!("mr-sd-{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&p).expect("temp dir");
            Dir(p)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn receive(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn ready_reaches_a_socket_named_by_path() {
        let dir = Dir::new("path");
        let path = dir.0.join("notify");
        let manager = UnixDatagram::bind(&path).expect("bind");
        notify_to(path.as_os_str(), READY).expect("sent");
        assert_eq!(receive(&manager), "READY=1");
        // Several assignments travel in one datagram, newlines kept.
        notify_to(path.as_os_str(), "STATUS=reloading\nRELOADING=1").expect("sent");
        assert_eq!(receive(&manager), "STATUS=reloading\nRELOADING=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn ready_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("mailroot-test-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract name");
        let manager = UnixDatagram::bind_addr(&addr).expect("bind");
        notify_to(OsStr::new(&format!("@{name}")), READY).expect("sent");
        assert_eq!(receive(&manager), "READY=1");
    }

    #[test]
    fn a_socket_nobody_listens_on_is_an_error_not_a_hang() {
        let dir = Dir::new("gone");
        let e = notify_to(dir.0.join("absent").as_os_str(), READY).unwrap_err();
        assert_ne!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }

    #[test]
    fn other_socket_forms_are_refused() {
        for s in ["", "relative/notify", "vsock:2:1234"] {
            let e = notify_to(OsStr::new(s), READY).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{s:?}: {e}");
        }
    }

    #[test]
    fn reloading_carries_the_monotonic_clock() {
        let text = reloading();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        if cfg!(all(target_os = "linux", target_pointer_width = "64")) {
            let us: u64 = lines
                .next()
                .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("MONOTONIC_USEC in {text:?}"));
            // The clock runs forward, and it started at boot: never ahead of the time since boot
            // (CLOCK_BOOTTIME, /proc/uptime's first number, which also counts suspended time).
            let later = monotonic_usec().expect("clock");
            assert!(later >= us, "{later} < {us}");
            if let Ok(up) = std::fs::read_to_string("/proc/uptime") {
                let up: f64 = up.split(' ').next().unwrap_or("0").parse().unwrap_or(0.0);
                assert!((us as f64) / 1e6 <= up + 1.0, "{us} µs vs uptime {up} s");
            }
        }
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn journal_stream_names_device_and_inode() {
        assert!(journal_stream_is("8:12345", 8, 12345));
        assert!(journal_stream_is(
            "64769:9876543210\n",
            64769,
            9_876_543_210
        ));
        assert!(!journal_stream_is("8:12345", 8, 12346));
        assert!(!journal_stream_is("9:12345", 8, 12345));
        for bad in ["", "8", "8:", ":12345", "x:1", "8:12345:1"] {
            assert!(!journal_stream_is(bad, 8, 12345), "{bad:?}");
        }
    }

    /// The identity compared is standard error's own: a file's stat seen through another handle
    /// gives the same pair.
    #[test]
    fn stderr_identity_is_that_of_the_open_stream() {
        let (dev, ino) = stderr_identity().expect("stderr is open in tests");
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata("/proc/self/fd/2") {
            assert_eq!((m.dev(), m.ino()), (dev, ino));
        }
    }
}
