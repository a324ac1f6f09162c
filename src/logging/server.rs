//! The server's own log (what an admin reads: starts, reloads, deliveries, errors), through the
//! `log` macros and env_logger (`RUST_LOG` filters it; `info` by default). Three places: standard
//! error with timestamps (a console); standard error without them and with syslog priority prefixes
//! under systemd, since journald stamps each line itself and reads `<N>` as the priority; or a file
//! named by ServerLogFile, appended to, with timestamps.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

/// Where the server log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// Standard error, timestamped.
    Stderr,
    /// Standard error read by journald: no timestamps, `<priority>` prefixes.
    Journal,
    /// A file (ServerLogFile), appended to.
    File(&'a Path),
}

/// The syslog priority journald gives a line that starts with `<N>`.
pub fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Installs the logger (once per process).
pub fn init(target: Target<'_>) -> io::Result<()> {
    let logger = build(target)?;
    let level = logger.filter();
    log::set_boxed_logger(Box::new(logger)).map_err(io::Error::other)?;
    log::set_max_level(level);
    Ok(())
}

/// The logger for `target`, not yet installed (the Windows service wraps it to copy warnings and
/// errors to the Event Log).
pub fn build(target: Target<'_>) -> io::Result<env_logger::Logger> {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match target {
        Target::Stderr => {
            b.format_timestamp_millis();
        }
        Target::Journal => {
            b.format(|buf, record| {
                // journald reads the priority per line: every line of a message carries it.
                let p = priority(record.level());
                let text = record.args().to_string();
                let mut lines = text.lines();
                writeln!(
                    buf,
                    "<{p}>{}: {}",
                    record.target(),
                    lines.next().unwrap_or("")
                )?;
                for l in lines {
                    writeln!(buf, "<{p}>{l}")?;
                }
                Ok(())
            });
        }
        Target::File(path) => {
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            b.format_timestamp_millis()
                .write_style(env_logger::WriteStyle::Never)
                .target(env_logger::Target::Pipe(Box::new(file)));
        }
    }
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journald_priorities() {
        assert_eq!(priority(log::Level::Error), 3);
        assert_eq!(priority(log::Level::Warn), 4);
        assert_eq!(priority(log::Level::Info), 6);
        assert_eq!(priority(log::Level::Debug), 7);
    }
}
