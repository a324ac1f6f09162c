//! The store's error: which disk operation failed, on which file or folder, and why.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A failed disk operation, naming what and where.
#[derive(Debug)]
pub struct StoreError {
    /// What was being done ("create", "write", "fsync", "rename", …).
    pub op: &'static str,
    /// The file or folder.
    pub path: PathBuf,
    /// The system's error.
    pub source: io::Error,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.op,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl StoreError {
    /// The error of `op` on `path`.
    pub fn new(op: &'static str, path: &Path, source: io::Error) -> StoreError {
        StoreError {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// For `map_err`: the error of `op` on `path`.
pub(crate) fn err<'p>(
    op: &'static str,
    path: &'p Path,
) -> impl FnOnce(io::Error) -> StoreError + 'p {
    move |source| StoreError {
        op,
        path: path.to_path_buf(),
        source,
    }
}
