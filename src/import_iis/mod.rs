//! `mailroot import-iis <MetaBase.xml> [--out FILE] [--force] [--instance N]`: an IIS 6 SMTP
//! Service's settings, read from its MetaBase.xml (or a backup of it), turned into mailroot's INI
//! (docs/migrate-from-iis.md).
//!
//! [`metabase`] reads the XML into the SMTP service's nodes with inheritance; [`ipseclist`] decodes
//! the binary RelayIpList and IPSecurity values; [`convert`] turns properties into keys and comments
//! and has mailroot's own loader accept the result. This module is the command: arguments, files,
//! the summary.

pub mod convert;
pub mod ipseclist;
pub mod metabase;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use convert::{Options, Summary, ValueError};
use metabase::{Metabase, MetabaseError};

/// The command line's usage lines for `import-iis`.
pub const USAGE: &str = "  mailroot import-iis METABASE.XML [--out FILE] [--force] [--instance N]
                                     turn an IIS 6 SMTP Service's MetaBase.xml into mailroot's INI
                                     (to standard output without --out; docs/migrate-from-iis.md)
";

/// What `import-iis` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The MetaBase.xml (or a backup of it).
    pub source: PathBuf,
    /// Where to write the INI; `None`: standard output.
    pub out: Option<PathBuf>,
    /// Replace an existing `out`.
    pub force: bool,
    /// Only this virtual server.
    pub instance: Option<u32>,
}

/// Reads the arguments after `import-iis`.
pub fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut source = None;
    let mut out = None;
    let mut force = false;
    let mut instance = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" | "-o" => {
                let v = it.next().ok_or("--out needs a file")?;
                out = Some(PathBuf::from(v));
            }
            "--force" => force = true,
            "--instance" => {
                let v = it.next().ok_or("--instance needs a number")?;
                let n = v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    format!("--instance: `{v}` is not a virtual server number (1, 2, …)")
                })?;
                instance = Some(n);
            }
            s if s.starts_with("--out=") => out = Some(PathBuf::from(&s["--out=".len()..])),
            s if s.starts_with('-') && s.len() > 1 => {
                return Err(format!("import-iis: unknown option `{s}`"));
            }
            s => {
                if source.is_some() {
                    return Err(format!("import-iis takes one MetaBase.xml, not also `{s}`"));
                }
                source = Some(PathBuf::from(s));
            }
        }
    }
    Ok(Args {
        source: source.ok_or("import-iis needs the MetaBase.xml to read")?,
        out,
        force,
        instance,
    })
}

/// Why an import failed.
#[derive(Debug)]
pub enum ImportError {
    /// The source cannot be read.
    Read(PathBuf, std::io::Error),
    /// The source is not a MetaBase.xml this reader takes.
    Metabase(PathBuf, MetabaseError),
    /// A property's value cannot be read (a malformed blob, a flag name IIS does not have).
    Value(PathBuf, Box<ValueError>),
    /// `--instance N` names a virtual server the metabase does not have (the ones it has).
    NoInstance(u32, Vec<u32>),
    /// The output exists and `--force` was not given.
    Exists(PathBuf),
    /// The output would replace the source.
    SameFile(PathBuf),
    /// The output cannot be written.
    Write(PathBuf, std::io::Error),
    /// mailroot's loader refuses the result even with every refused key commented out.
    Refused(String),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::Read(p, e) => write!(f, "{}: cannot read: {e}", p.display()),
            ImportError::Metabase(p, e) => match e {
                // These start with the line: FILE:LINE: …
                MetabaseError::Xml { .. } | MetabaseError::Element { .. } => {
                    write!(f, "{}:{e}", p.display())
                }
                _ => write!(f, "{}: {e}", p.display()),
            },
            ImportError::Value(p, e) => write!(f, "{}:{e}", p.display()),
            ImportError::NoInstance(n, have) => {
                let have: Vec<String> = have.iter().map(u32::to_string).collect();
                write!(
                    f,
                    "--instance {n}: the metabase has no /LM/SmtpSvc/{n} (it has {})",
                    have.join(", ")
                )
            }
            ImportError::Exists(p) => write!(
                f,
                "{} exists: not overwritten (give --force to replace it)",
                p.display()
            ),
            ImportError::SameFile(p) => {
                write!(
                    f,
                    "{}: the output would replace the metabase itself",
                    p.display()
                )
            }
            ImportError::Write(p, e) => write!(f, "{}: cannot write: {e}", p.display()),
            ImportError::Refused(e) => {
                write!(f, "mailroot refuses the imported configuration: {e}")
            }
        }
    }
}

impl std::error::Error for ImportError {}

/// The INI text and what became of every property.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The configuration, accepted by mailroot's loader.
    pub text: String,
    /// The counts.
    pub summary: Summary,
}

/// Reads, converts and validates (relative paths against `base`, the output's folder), without
/// writing anything.
pub fn import(args: &Args, base: &Path) -> Result<Imported, ImportError> {
    let bytes =
        std::fs::read(&args.source).map_err(|e| ImportError::Read(args.source.clone(), e))?;
    let mb =
        Metabase::from_bytes(&bytes).map_err(|e| ImportError::Metabase(args.source.clone(), e))?;
    if let Some(n) = args.instance
        && !mb.servers.iter().any(|s| s.instance == n)
    {
        return Err(ImportError::NoInstance(
            n,
            mb.servers.iter().map(|s| s.instance).collect(),
        ));
    }
    let opts = Options {
        instance: args.instance,
        source: args.source.display().to_string(),
        // Whether this system takes `C:\…` paths, asked of the room that knows the platform.
        windows_paths: !crate::os::is_foreign_absolute("C:\\"),
    };
    let mut conv = convert::convert(&mb, &opts)
        .map_err(|e| ImportError::Value(args.source.clone(), Box::new(e)))?;
    conv.validate(base).map_err(ImportError::Refused)?;
    Ok(Imported {
        text: conv.text(),
        summary: conv.summary(),
    })
}

/// Runs `import-iis`; the exit code (0 done, 1 failed). With `--out` the summary goes to standard
/// output, else the INI does and the summary goes to standard error.
pub fn command(args: &Args) -> u8 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mailroot import-iis: {e}");
            1
        }
    }
}

fn run(args: &Args) -> Result<(), ImportError> {
    if let Some(out) = &args.out {
        if out.exists() && !args.force {
            return Err(ImportError::Exists(out.clone()));
        }
        if let (Ok(a), Ok(b)) = (
            std::fs::canonicalize(out),
            std::fs::canonicalize(&args.source),
        ) && a == b
        {
            return Err(ImportError::SameFile(out.clone()));
        }
    }
    let base = match args.out.as_deref().and_then(Path::parent) {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = std::path::absolute(&base).unwrap_or(base);
    let imported = import(args, &base)?;
    match &args.out {
        Some(out) => {
            write_out(out, &imported.text, args.force)
                .map_err(|e| ImportError::Write(out.clone(), e))?;
            println!("{}wrote {}", imported.summary, out.display());
            println!("next: mailroot check --config {}", out.display());
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is no error of the import's.
            let _ = stdout.write_all(imported.text.as_bytes());
            let _ = stdout.flush();
            eprint!("{}", imported.summary);
        }
    }
    Ok(())
}

/// Writes `text` to `out`: a new file only, unless `force`.
fn write_out(out: &Path, text: &str, force: bool) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .create_new(!force)
        .truncate(true)
        .open(out)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, String> {
        parse_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn arguments() {
        let a = args(&[
            "MetaBase.xml",
            "--out",
            "x.ini",
            "--instance",
            "2",
            "--force",
        ])
        .unwrap();
        assert_eq!(
            a,
            Args {
                source: "MetaBase.xml".into(),
                out: Some("x.ini".into()),
                force: true,
                instance: Some(2),
            }
        );
        assert_eq!(args(&["m.xml"]).unwrap().out, None);
        assert!(args(&[]).is_err());
        assert!(args(&["a.xml", "b.xml"]).is_err());
        assert!(args(&["a.xml", "--instance", "0"]).is_err());
        assert!(args(&["a.xml", "--instance"]).is_err());
        assert!(args(&["a.xml", "--bogus"]).is_err());
    }
}
