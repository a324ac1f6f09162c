use std::fs::File;
use std::io;
use std::path::Path;

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(target_os = "linux")]
pub fn sync_volume(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    unsafe extern "C" {
        // glibc and musl both have it (Linux 2.6.39+); errors of writeback are reported since 5.8.
        fn syncfs(fd: i32) -> i32;
    }
    // SAFETY: syncfs only reads the descriptor number, which `file` keeps open for the call.
    if unsafe { syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub fn sync_volume(_file: &File) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_allocator() {
    unsafe extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    /// glibc's M_ARENA_MAX and M_MMAP_THRESHOLD.
    const M_ARENA_MAX: i32 = -8;
    const M_MMAP_THRESHOLD: i32 = -3;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // SAFETY: mallopt only sets tunables of the allocator; called before other threads exist.
    unsafe {
        mallopt(M_ARENA_MAX, i32::try_from(cores).unwrap_or(i32::MAX));
        // A large message read for delivery goes back to the system when it is sent, instead of
        // staying in an arena (glibc would otherwise raise this threshold past every size it frees).
        mallopt(M_MMAP_THRESHOLD, 64 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

/// O_NOFOLLOW: a symbolic link as the last component makes open fail (Linux value; other Unixes
/// fall back to the checks on the opened handle).
#[cfg(target_os = "linux")]
const O_NOFOLLOW: i32 = 0o400000;
#[cfg(not(target_os = "linux"))]
const O_NOFOLLOW: i32 = 0;

pub fn open_plain_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW)
        .open(path)?;
    let m = f.metadata()?;
    if !m.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if m.nlink() > 1 {
        return Err(io::Error::other("the file has other hard links"));
    }
    Ok(f)
}

pub fn readable_by_others(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o004 != 0)
}

pub fn readable_by_all(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

pub fn restrict_to_owner(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

pub fn share_with_folder(file: &File, folder: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let group = std::fs::metadata(folder)?.gid();
    let mode = if file.metadata()?.gid() == group {
        0o640
    } else {
        0o644
    };
    // fchmod, unlike the mode given to open, is not narrowed by the umask.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// The first field of `struct passwd`, the only one read (its place is the same on every Unix).
#[repr(C)]
struct Passwd {
    pw_name: *const std::ffi::c_char,
}

pub fn login_name() -> Option<String> {
    unsafe extern "C" {
        fn getuid() -> u32;
        fn getpwuid(uid: u32) -> *const Passwd;
    }
    // SAFETY: getuid cannot fail; getpwuid returns null or a pointer to a static entry whose name is
    // a NUL-terminated string, copied out at once (this process looks up no other entry meanwhile).
    let from_passwd = unsafe {
        let pw = getpwuid(getuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            None
        } else {
            Some(
                std::ffi::CStr::from_ptr((*pw).pw_name)
                    .to_string_lossy()
                    .into_owned(),
            )
        }
    };
    from_passwd
        .or_else(|| std::env::var("LOGNAME").ok())
        .or_else(|| std::env::var("USER").ok())
}

pub fn on_signal<F: FnMut(crate::os::Signal) + Send + 'static>(mut f: F) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for s in signals.forever() {
                f(if s == SIGHUP {
                    crate::os::Signal::Reload
                } else {
                    crate::os::Signal::Stop
                });
            }
        })?;
    Ok(())
}

pub fn signal_reload(pid: u32) -> io::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::NotFound, "no such process"))
    }
}

pub fn under_journald() -> bool {
    crate::os::systemd::under_journald()
}

pub fn service_state(state: crate::os::ServiceState) -> io::Result<()> {
    use crate::os::{ServiceState, systemd};
    let text = match state {
        ServiceState::Ready => systemd::READY.to_string(),
        ServiceState::Reloading => systemd::reloading(),
        ServiceState::Stopping => systemd::STOPPING.to_string(),
    };
    systemd::notify(&text).map(|_| ())
}
