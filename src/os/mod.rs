//! Platform differences in one room: directory fsync, the machine's name, shutdown signals, the
//! system's random numbers.
//! Nothing outside this module says `cfg(unix)` or `cfg(windows)`.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

/// The Windows service in its platform-neutral part: the `mailroot service` command line, the
/// installed layout (`%ProgramData%\mailroot\smtpsvc.ini`, `C:\inetpub\mailroot`, IIS's log
/// folder), the grants to `NT SERVICE\<name>`, Event Log texts, and the [`service::Hooks`] through
/// which `main` plugs the server into the service control manager. Compiled and tested everywhere.
pub mod service;
/// The Windows side of [`service`]: the service control manager (install, uninstall, start, stop,
/// status, the dispatcher and its control handler, parameter change for reload) with the
/// `windows-service` crate, `icacls` at install, and the Event Log (source registration,
/// `ReportEventW`).
#[cfg(windows)]
mod windows_service;

/// systemd's side of a Linux service, without libsystemd: readiness notification to
/// `$NOTIFY_SOCKET` (`READY=1`, `RELOADING=1`, `STOPPING=1`) and whether standard error is the
/// journal's stream. Unix only.
#[cfg(unix)]
pub mod systemd;

use std::io;
use std::path::Path;

/// Makes a completed rename inside `dir` durable. On Unix this fsyncs the directory; on Windows,
/// where NTFS journals the rename itself, it flushes the directory handle when the system allows it.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    imp::sync_dir(dir)
}

/// Flushes everything written to the volume that holds `file` (all files, not just this one) to
/// stable storage with one device flush: `syncfs` on Linux. `Unsupported` elsewhere, where the caller
/// flushes file by file. Metadata written last may still need a folder fsync on file systems
/// without a journal (see `mailroot::commit`).
pub fn sync_volume(file: &std::fs::File) -> io::Result<()> {
    imp::sync_volume(file)
}

/// Keeps the allocator's footprint small before any thread starts: glibc gives each thread that
/// allocates an arena of its own (up to eight per core), and every arena keeps freed memory resident,
/// so sixty session and delivery threads held megabytes that one arena per core does not; and
/// buffers from 64 KiB up are mapped and unmapped, so a burst of large messages does not stay
/// resident. Elsewhere (musl, Windows) a no-op.
pub fn tune_allocator() {
    imp::tune_allocator()
}

/// A random number from the operating system's generator (getrandom, BCryptGenRandom), the one that
/// makes password salts. A system whose generator fails gives 0: callers only spread load with it.
pub fn random_u64() -> u64 {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let mut b = [0u8; 8];
    let _ = OsRng.try_fill_bytes(&mut b);
    u64::from_le_bytes(b)
}

/// The machine's host name as the system reports it (may be a bare name without a domain).
pub fn hostname() -> String {
    let h = imp::hostname();
    let h = h.trim();
    if h.is_empty() {
        "localhost".to_string()
    } else {
        h.to_string()
    }
}

/// Opens `path` for reading only if it is a plain file: not a symbolic link (the open itself
/// refuses to follow one where the system allows, so no check-then-open race) and, on Unix, with no
/// other hard links. Used for Pickup, where anyone who can write the folder could otherwise make
/// mailroot read a file outside it.
pub fn open_plain_file(path: &Path) -> io::Result<std::fs::File> {
    imp::open_plain_file(path)
}

/// Makes a file readable by its owner only (Unix 0600); a no-op on Windows, where the folder's ACL
/// decides.
pub fn restrict_to_owner(path: &Path) -> io::Result<()> {
    imp::restrict_to_owner(path)
}

/// Makes a file readable by every user (Unix 0644, whatever the umask); a no-op on Windows, where
/// the folder's ACL decides.
pub fn readable_by_all(path: &Path) -> io::Result<()> {
    imp::readable_by_all(path)
}

/// Whether users other than the owner and its group may read `path` (Unix: the "other" read bit).
/// Always false on Windows, where the file's ACL decides and the installer sets it.
pub fn readable_by_others(path: &Path) -> io::Result<bool> {
    imp::readable_by_others(path)
}

/// Lets whoever reads `folder` read `file`, a file just created in it by this process, without
/// relying on the umask (`sendmail` in the Pickup folder: the server reads what other users
/// write). Unix: mode 0640 when the file took the folder's group (a set-group-ID folder, as the
/// Debian package's Pickup is, or a writer in that group), else 0644. A no-op on Windows, where the
/// folder's inheritable ACL decides.
pub fn share_with_folder(file: &std::fs::File, folder: &Path) -> io::Result<()> {
    imp::share_with_folder(file, folder)
}

/// The login name of the user running this process (Unix: the real user id's passwd entry, else
/// `$LOGNAME`/`$USER`; Windows: `%USERNAME%`). None when neither says.
pub fn login_name() -> Option<String> {
    imp::login_name().filter(|n| !n.is_empty())
}

/// Asks process `pid` to reload its configuration (Unix: SIGHUP). `Unsupported` on Windows, where
/// a service is asked through the service control manager.
pub fn signal_reload(pid: u32) -> io::Result<()> {
    imp::signal_reload(pid)
}

/// Whether standard error goes to journald (the process runs under systemd): the server log then
/// leaves the timestamps to the journal.
pub fn under_journald() -> bool {
    imp::under_journald()
}

/// What the server tells its service manager (systemd's sd_notify; nothing elsewhere: the Windows
/// service reports through the service control manager).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    /// Every listener is bound (at start, and after a reload).
    Ready,
    /// A reload begins.
    Reloading,
    /// The shutdown begins.
    Stopping,
}

/// Tells the service manager, if one listens; errors are logged, never fatal.
pub fn service_state(state: ServiceState) {
    if let Err(e) = imp::service_state(state) {
        log::warn!("cannot notify the service manager: {e}");
    }
}

/// What the process was asked to do from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Stop: SIGINT or SIGTERM on Unix; Ctrl-C, Ctrl-Break or closing the console on Windows.
    Stop,
    /// Read the configuration again: SIGHUP on Unix.
    Reload,
}

/// Calls `f` with each request to stop or reload, on a thread of its own (never in signal
/// context). Further stop requests after the first come again; `f` must take them calmly.
pub fn on_signal<F: FnMut(Signal) + Send + 'static>(f: F) -> io::Result<()> {
    imp::on_signal(f)
}

/// Whether `path` is an absolute path written for the other family of systems (`C:\…` on Unix,
/// `/var/…` on Windows), which cannot mean what the admin intended here.
pub fn is_foreign_absolute(path: &str) -> bool {
    let b = path.as_bytes();
    let drive = b.len() >= 3
        && b[0].is_ascii_alphabetic()
        && b[1] == b':'
        && (b[2] == b'\\' || b[2] == b'/');
    if cfg!(windows) {
        path.starts_with('/') && !path.starts_with("//")
    } else {
        drive || path.starts_with("\\\\")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generator that fails gives zeros, and equal numbers would put every MX of one preference in
    /// the same order: eight draws must all differ.
    #[test]
    fn random_numbers_come_from_a_working_generator() {
        let mut a: Vec<u64> = (0..8).map(|_| random_u64()).collect();
        a.sort_unstable();
        a.dedup();
        assert_eq!(a.len(), 8);
    }
}
