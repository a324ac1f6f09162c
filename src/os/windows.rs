use std::fs::OpenOptions;
use std::io;
use std::os::windows::fs::OpenOptionsExt;
use std::path::Path;

/// FILE_FLAG_BACKUP_SEMANTICS: needed to open a directory handle at all.
const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    // NTFS commits the rename in its journal; FlushFileBuffers on the directory pushes it to disk where
    // the file system supports it. Failure to open the handle (e.g. on FAT or network shares) is not an
    // error worth refusing mail for: the file itself was already flushed before the rename.
    match OpenOptions::new()
        .write(true)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(dir)
    {
        Ok(f) => {
            let _ = f.sync_all();
            Ok(())
        }
        Err(_) => Ok(()),
    }
}

/// Flushing a whole volume needs administrator rights on Windows (FlushFileBuffers on the volume
/// handle): the group commit flushes file by file instead.
pub fn sync_volume(_file: &std::fs::File) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// The Windows heap has no per-thread arenas to limit.
pub fn tune_allocator() {}

pub fn hostname() -> String {
    let name = std::env::var("COMPUTERNAME").unwrap_or_default();
    match std::env::var("USERDNSDOMAIN") {
        Ok(d) if !d.is_empty() && !name.is_empty() => format!("{}.{}", name, d).to_lowercase(),
        _ => name,
    }
}

/// FILE_FLAG_OPEN_REPARSE_POINT: open a link itself rather than its target.
const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;

pub fn open_plain_file(path: &Path) -> io::Result<std::fs::File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)?;
    let m = f.metadata()?;
    if !m.file_type().is_file() || m.file_type().is_symlink() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(f)
}

pub fn readable_by_others(_path: &Path) -> io::Result<bool> {
    Ok(false)
}

pub fn readable_by_all(_path: &Path) -> io::Result<()> {
    // The folder's inherited ACL decides who reads it, as for every file in the mailroot.
    Ok(())
}

pub fn restrict_to_owner(_path: &Path) -> io::Result<()> {
    // Windows grants by ACL: the folder's inherited ACL decides; document it instead.
    Ok(())
}

pub fn share_with_folder(_file: &std::fs::File, _folder: &Path) -> io::Result<()> {
    Ok(())
}

pub fn login_name() -> Option<String> {
    std::env::var("USERNAME").ok()
}

pub fn on_signal<F: FnMut(crate::os::Signal) + Send + 'static>(mut f: F) -> io::Result<()> {
    ctrlc::set_handler(move || f(crate::os::Signal::Stop)).map_err(io::Error::other)
}

pub fn signal_reload(_pid: u32) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

pub fn under_journald() -> bool {
    false
}

pub fn service_state(_state: crate::os::ServiceState) -> io::Result<()> {
    Ok(())
}
