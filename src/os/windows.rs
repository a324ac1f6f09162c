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

pub fn hostname() -> String {
    let name = std::env::var("COMPUTERNAME").unwrap_or_default();
    match std::env::var("USERDNSDOMAIN") {
        Ok(d) if !d.is_empty() && !name.is_empty() => format!("{}.{}", name, d).to_lowercase(),
        _ => name,
    }
}
