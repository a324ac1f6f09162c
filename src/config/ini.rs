//! A line-oriented INI reader that keeps the file and line of every section and key, so that every
//! configuration error can say `FILE:LINE: key: what is wrong`. (rust-ini drops positions, which is why
//! mailroot reads its one small file itself.) Values are taken literally: backslashes are not escapes,
//! so `C:\inetpub\mailroot` means what it says; quotes around a whole value are removed.

use std::path::{Path, PathBuf};

use super::ConfigError;

/// One `key = value` line.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key as written.
    pub key: String,
    /// The value with surrounding blanks (and one pair of surrounding quotes) removed.
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

/// One `[name]` section and its entries in file order.
#[derive(Debug, Clone)]
pub struct Section {
    /// The name between the brackets, as written.
    pub name: String,
    /// 1-based line number of the header.
    pub line: usize,
    /// Entries in file order.
    pub entries: Vec<Entry>,
}

/// A parsed INI file.
#[derive(Debug, Clone)]
pub struct IniFile {
    /// Where it was read from (for error messages).
    pub path: PathBuf,
    /// Sections in file order.
    pub sections: Vec<Section>,
}

impl IniFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<IniFile, ConfigError> {
        let bytes = std::fs::read(path)
            .map_err(|e| ConfigError::file(path, format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|e| ConfigError::file(path, format!("not UTF-8 text: {e}")))?;
        IniFile::parse(path, &text)
    }

    /// Parses `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<IniFile, ConfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text); // Notepad's UTF-8 BOM
        let mut sections: Vec<Section> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let t = raw.trim();
            if t.is_empty() || t.starts_with(';') || t.starts_with('#') {
                continue;
            }
            if let Some(rest) = t.strip_prefix('[') {
                let name = rest.strip_suffix(']').ok_or_else(|| {
                    ConfigError::at(path, line, None, "section header must end with ']'")
                })?;
                let name = name.trim();
                if name.is_empty() {
                    return Err(ConfigError::at(path, line, None, "empty section name"));
                }
                sections.push(Section {
                    name: name.to_string(),
                    line,
                    entries: Vec::new(),
                });
                continue;
            }
            let (k, v) = t.split_once('=').ok_or_else(|| {
                ConfigError::at(path, line, None, "expected `Key = value` or `[Section]`")
            })?;
            let key = k.trim();
            if key.is_empty() {
                return Err(ConfigError::at(path, line, None, "missing key before '='"));
            }
            let mut value = v.trim();
            if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
                value = &value[1..value.len() - 1];
            }
            let section = sections.last_mut().ok_or_else(|| {
                ConfigError::at(
                    path,
                    line,
                    Some(key),
                    "key outside any section (start with [SmtpSvc/1])",
                )
            })?;
            section.entries.push(Entry {
                key: key.to_string(),
                value: value.to_string(),
                line,
            });
        }
        Ok(IniFile {
            path: path.to_path_buf(),
            sections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions_and_literal_backslashes() {
        let f = IniFile::parse(
            Path::new("x.ini"),
            "\u{feff}; comment\n[SmtpSvc/1]\n  MailRoot = C:\\inetpub\\mailroot \n# c\nA=\"q v\"\n",
        )
        .unwrap();
        assert_eq!(f.sections.len(), 1);
        let s = &f.sections[0];
        assert_eq!((s.name.as_str(), s.line), ("SmtpSvc/1", 2));
        assert_eq!(s.entries[0].value, "C:\\inetpub\\mailroot");
        assert_eq!(s.entries[0].line, 3);
        assert_eq!(s.entries[1].value, "q v");
    }

    #[test]
    fn errors_name_the_line() {
        let e = IniFile::parse(Path::new("x.ini"), "[a]\nnonsense\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.ini:2: expected `Key = value` or `[Section]`"
        );
        let e = IniFile::parse(Path::new("x.ini"), "K = v\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("x.ini:1: K: key outside any section")
        );
        let e = IniFile::parse(Path::new("x.ini"), "[a\n").unwrap_err();
        assert!(e.to_string().starts_with("x.ini:1: section header"));
    }
}
