//! The configuration error: it names the file and, when it can, the line and the key.

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration error, displayed as `FILE:LINE: key: what is wrong`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<built-in defaults>`).
    pub file: PathBuf,
    /// 1-based line, when the error is tied to one.
    pub line: Option<usize>,
    /// The key, when the error is about one.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about the file as a whole.
    pub fn file(path: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: None,
            message: message.into(),
        }
    }

    /// An error at a line, optionally about a key.
    pub fn at(path: &Path, line: usize, key: Option<&str>, message: impl Into<String>) -> Self {
        ConfigError {
            file: path.to_path_buf(),
            line: Some(line),
            key: key.map(str::to_string),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ": {k}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}
