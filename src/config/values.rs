//! Value parsers: one INI value (already trimmed) to one typed value, or a message saying what is
//! wrong with it. The loader adds the file, line and key. Durations follow IIS units (seconds or
//! minutes, as the key says) and also take `30s`, `2m`, `1h`, `1d`. A relative path is resolved
//! against the configuration's folder with `.` and `..` removed; a path for the other operating
//! system (`C:\inetpub` on Linux, `/srv` on Windows) is an error.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::settings::{AuthFlags, Binding, LogPeriod, NextHop, SmartHostType, TlsPolicy};
use crate::smtp::address;

/// `IP:port`, `:port`, `[IPv6]:port`, comma-separated; IIS's trailing `:hostname` part is accepted.
pub fn parse_bindings(v: &str) -> Result<Vec<Binding>, String> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (host, rest) = if let Some(r) = part.strip_prefix('[') {
            let (h, rest) = r
                .split_once(']')
                .ok_or_else(|| format!("`{part}`: missing ']'"))?;
            (
                h,
                rest.strip_prefix(':')
                    .ok_or_else(|| format!("`{part}`: missing :port"))?,
            )
        } else {
            part.split_once(':')
                .ok_or_else(|| format!("`{part}` is not IP:port (use :25 for all addresses)"))?
        };
        // IIS writes `IP:port:hostname`; the host-header part means nothing for SMTP.
        let port = rest.split(':').next().unwrap_or("");
        // Port 0 asks the system for a free port (the log says which): for tests and tools.
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{part}`: `{port}` is not a port from 1 to 65535"))?;
        let ip = if host.is_empty() {
            None
        } else {
            Some(
                host.parse()
                    .map_err(|_| format!("`{part}`: `{host}` is not an IP address"))?,
            )
        };
        let b = Binding { ip, port };
        if !out.contains(&b) {
            out.push(b);
        }
    }
    if out.is_empty() {
        return Err("at least one binding is required".into());
    }
    Ok(out)
}

/// SmartHost: one next hop, or several separated by `;` in order of preference
/// (`a.example; [192.0.2.5]:587; b.example`).
pub fn parse_next_hops(v: &str) -> Result<Vec<NextHop>, String> {
    let mut hops = Vec::new();
    for part in v.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        hops.extend(parse_next_hop(part)?);
    }
    Ok(hops)
}

/// One next hop: `host`, `host:port`, `[a.b.c.d]`, `[a.b.c.d]:port`, `[IPv6]:port`; empty = none.
pub fn parse_next_hop(v: &str) -> Result<Option<NextHop>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let (host, port, literal) = if let Some(r) = v.strip_prefix('[') {
        let (h, rest) = r
            .split_once(']')
            .ok_or_else(|| format!("`{v}`: missing ']'"))?;
        let h = h.strip_prefix("IPv6:").unwrap_or(h);
        h.parse::<std::net::IpAddr>()
            .map_err(|_| format!("`{v}`: `{h}` is not an IP address"))?;
        let port = match rest {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("`{v}`: expected :port after ']'"))?,
            ),
        };
        (h, port, true)
    } else {
        match v.rsplit_once(':') {
            Some((h, p)) => (h, Some(p), false),
            None => (v, None, false),
        }
    };
    if !literal && !address::is_valid_domain(host.trim_end_matches('.').as_bytes()) {
        return Err(format!(
            "`{host}` is not a host name (write an IP address in brackets: [192.0.2.1])"
        ));
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{p}` is not a port from 1 to 65535"))?,
        ),
    };
    Ok(Some(NextHop {
        host: host.trim_end_matches('.').to_ascii_lowercase(),
        port,
        literal,
    }))
}

/// Seconds, or a number with a unit: `30s`, `2m`, `1h`, `1d`.
pub fn parse_seconds(v: &str) -> Result<Duration, String> {
    let (num, mult) = match v.char_indices().last() {
        Some((i, 's')) => (&v[..i], 1),
        Some((i, 'm')) => (&v[..i], 60),
        Some((i, 'h')) => (&v[..i], 3600),
        Some((i, 'd')) => (&v[..i], 86_400),
        _ => (v, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{v}` is not a number of seconds (or 30s, 2m, 1h)"))?;
    if n == 0 {
        return Err("must be more than 0".into());
    }
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

/// Minutes (IIS), or a number with a unit: `30s`, `2m`, `1h`, `1d`.
pub fn parse_minutes(v: &str) -> Result<Duration, String> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = v.parse().map_err(|_| format!("`{v}` is too large"))?;
        if n == 0 {
            return Err("must be more than 0".into());
        }
        return Ok(Duration::from_secs(n.saturating_mul(60)));
    }
    parse_seconds(v).map_err(|_| format!("`{v}` is not a number of minutes (or 30s, 2m, 1h)"))
}

/// `500ms`, `0`, or seconds as [`parse_seconds`] reads them (`1`, `1s`, `2m`): a bare number
/// other than 0 is seconds, not milliseconds.
pub(super) fn parse_millis(v: &str) -> Result<Duration, String> {
    if let Some(ms) = v.strip_suffix("ms") {
        return ms
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("`{v}` is not a duration (500ms, 1s)"));
    }
    if v == "0" {
        return Ok(Duration::ZERO);
    }
    parse_seconds(v)
}

/// A whole number of at least `min`.
pub(super) fn parse_num<T: std::str::FromStr + PartialOrd + fmt::Display + From<u32>>(
    v: &str,
    min: u32,
) -> Result<T, String> {
    let n: T = v
        .parse()
        .map_err(|_| format!("`{v}` is not a whole number"))?;
    if n < T::from(min) {
        return Err(format!("must be at least {min}"));
    }
    Ok(n)
}

/// `1`/`0` as IIS writes them; `true`/`false`, `yes`/`no` and `-1` also do.
pub(super) fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "-1" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(format!("`{v}` is not 0 or 1")),
    }
}

/// A domain name, lower case, without a trailing dot.
pub(super) fn parse_domain(v: &str) -> Result<String, String> {
    let d = v.trim_end_matches('.');
    if address::is_valid_domain(d.as_bytes()) {
        Ok(d.to_ascii_lowercase())
    } else {
        Err(format!("`{v}` is not a valid domain name"))
    }
}

/// An email address with a domain; empty = none.
pub(super) fn parse_mailbox_value(v: &str) -> Result<Option<String>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let m = address::parse_mailbox(v.as_bytes())
        .map_err(|_| format!("`{v}` is not an email address"))?;
    if m.domain.is_empty() {
        return Err(format!("`{v}` needs a domain"));
    }
    Ok(Some(m.to_string_lossless()))
}

/// Comma-separated `ip` or `ip:port` (port 53 when not given).
pub(super) fn parse_addr_list(v: &str) -> Result<Vec<SocketAddr>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<SocketAddr>()
                .or_else(|_| {
                    p.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| format!("`{p}` is not ip or ip:port"))
        })
        .collect()
}

/// A folder or file; a relative path is taken against `base` (the configuration's folder).
pub(super) fn parse_path(base: &Path, v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        return Err("a folder is required".into());
    }
    if crate::os::is_foreign_absolute(v) {
        return Err(format!("`{v}` is a path for another operating system"));
    }
    let p = Path::new(v);
    Ok(normalize(&if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }))
}

/// Removes `.` and `..` components lexically, so `conf/../mailroot` prints as `mailroot`.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// An empty value is `None`; anything else goes through `f`.
pub(super) fn optional<T>(
    v: &str,
    f: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    if v.is_empty() {
        Ok(None)
    } else {
        f(v).map(Some)
    }
}

/// A comma-separated list of domain names, lower case; empty entries are skipped.
pub(super) fn parse_domain_list(v: &str) -> Result<Vec<String>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(parse_domain)
        .collect()
}

/// A TCP port from 1 to 65535.
pub(super) fn parse_port(v: &str) -> Result<u16, String> {
    parse_num::<u32>(v, 1)
        .and_then(|n| u16::try_from(n).map_err(|_| format!("`{v}` is not a port from 1 to 65535")))
}

/// SmtpRemoteProgressiveRetry: comma-separated minutes (or `30s`, `2m`, …), at least one.
pub(super) fn parse_retry(v: &str) -> Result<Vec<Duration>, String> {
    let list = v
        .split(',')
        .map(str::trim)
        .map(parse_minutes)
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() {
        Err("at least one interval is required".to_string())
    } else {
        Ok(list)
    }
}

/// An IIS number code as IIS writes it: `1`, not `01` or `+1`.
fn code(v: &str) -> Option<u32> {
    v.parse::<u32>().ok().filter(|n| n.to_string() == v)
}

/// LogFilePeriod.
pub(super) fn parse_log_period(v: &str) -> Result<LogPeriod, String> {
    code(v).and_then(LogPeriod::from_code).ok_or_else(|| {
        format!("`{v}` is not 0 (size), 1 (daily), 2 (weekly), 3 (monthly) or 4 (hourly)")
    })
}

/// SmartHostType.
pub(super) fn parse_smart_host_type(v: &str) -> Result<SmartHostType, String> {
    code(v).and_then(SmartHostType::from_code).ok_or_else(|| {
        format!("`{v}` is not 0 (DNS only), 1 (DNS, then smart host) or 2 (always smart host)")
    })
}

/// AuthFlags.
pub(super) fn parse_auth_flags(v: &str) -> Result<AuthFlags, String> {
    code(v)
        .and_then(AuthFlags::from_code)
        .ok_or_else(|| format!("`{v}` is not 1 (anonymous), 2 (Basic: AUTH required) or 3 (both)"))
}

/// OutboundTls.
pub(super) fn parse_tls(v: &str) -> Result<TlsPolicy, String> {
    TlsPolicy::from_keyword(v)
        .ok_or_else(|| format!("`{v}` is not none, opportunistic, required or implicit"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_forms() {
        let b = parse_bindings(":25:, 127.0.0.1:2525, [::1]:2525").unwrap();
        assert_eq!(b[0], Binding { ip: None, port: 25 });
        assert_eq!(b[1].to_string(), "127.0.0.1:2525");
        assert_eq!(b[2].to_string(), "[::1]:2525");
        assert_eq!(parse_bindings("127.0.0.1:0").unwrap()[0].port, 0);
        assert!(parse_bindings("127.0.0.1:x").is_err());
        assert!(parse_bindings("host:25").is_err());
    }

    #[test]
    fn next_hop_forms() {
        assert_eq!(
            parse_next_hop("smtp.office365.com:587")
                .unwrap()
                .unwrap()
                .port,
            Some(587)
        );
        assert!(parse_next_hop("[::1]:25").unwrap().unwrap().literal);
        let list = parse_next_hops("a.example; [192.0.2.5]:587;b.example ;").unwrap();
        assert_eq!(
            list.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
            vec!["a.example", "[192.0.2.5]:587", "b.example"]
        );
        assert!(parse_next_hops("").unwrap().is_empty());
        assert!(parse_next_hops("a.example; b..example").is_err());
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_seconds("600").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_seconds("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("soon").is_err());
    }

    #[test]
    fn codes_are_written_as_iis_writes_them() {
        assert_eq!(parse_log_period("4"), Ok(LogPeriod::Hourly));
        assert_eq!(
            parse_smart_host_type("1"),
            Ok(SmartHostType::DnsThenSmartHost)
        );
        assert_eq!(parse_tls("Required"), Ok(TlsPolicy::Required));
        assert!(parse_auth_flags("3").is_ok());
        for bad in ["01", "+1", " 1", "", "5", "x"] {
            assert!(parse_log_period(bad).is_err(), "{bad:?}");
            assert!(parse_smart_host_type(bad).is_err(), "{bad:?}");
            assert!(parse_auth_flags(bad).is_err(), "{bad:?}");
        }
    }
}
