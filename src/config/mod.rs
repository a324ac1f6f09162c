//! Configuration: one INI file (`conf/smtpsvc.ini`) with IIS metabase key names, parsed once into
//! typed [`VirtualServer`] settings. Unknown sections, unknown keys and bad values are errors that name
//! the file, line and key; the server never starts on a half-understood file.
//!
//! Sections: `[SmtpSvc]` (optional; its keys are inherited by every virtual server, as IIS inherits
//! service-level metabase values) and `[SmtpSvc/n]`, one per virtual server.

pub mod ini;
pub mod keys;
pub mod settings;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use settings::{
    Binding, Credentials, DeliverySettings, Dirs, DomainRoute, LogPeriod, LogSettings, NextHop,
    SecuritySettings, SmartHostType, TlsPolicy, VirtualServer,
};

use crate::policy::access::HostList;
use crate::policy::ipnet::IpList;
use crate::smtp::address;
use ini::{Entry, IniFile};

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

/// Where the settings came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file.
    File(PathBuf),
    /// No file: built-in IIS defaults, relative paths resolved against this folder.
    Defaults(PathBuf),
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from.
    pub source: Source,
    /// The virtual servers, by instance number.
    pub servers: Vec<Arc<VirtualServer>>,
}

impl Config {
    /// Loads `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let ini = IniFile::load(path)?;
        let base = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        Config::from_ini(&ini, &base, Source::File(path.to_path_buf()))
    }

    /// The built-in defaults (one virtual server), with relative paths resolved against `base`.
    pub fn defaults(base: &Path) -> Result<Config, ConfigError> {
        let ini = IniFile {
            path: PathBuf::from("<built-in defaults>"),
            sections: vec![ini::Section {
                name: "SmtpSvc/1".into(),
                line: 0,
                entries: vec![],
            }],
        };
        Config::from_ini(&ini, base, Source::Defaults(base.to_path_buf()))
    }

    /// Builds typed settings from a parsed file.
    pub fn from_ini(ini: &IniFile, base: &Path, source: Source) -> Result<Config, ConfigError> {
        let path = ini.path.as_path();
        let mut service: Option<&ini::Section> = None;
        let mut instances: Vec<(u32, &ini::Section)> = Vec::new();
        let mut domain_sections: Vec<(u32, String, &ini::Section)> = Vec::new();
        for s in &ini.sections {
            let lower = s.name.to_ascii_lowercase();
            if let Some((n, name)) = domain_section_name(&lower) {
                let n = n.ok_or_else(|| {
                    ConfigError::at(path, s.line, None, format!("unknown section [{}]", s.name))
                })?;
                if !(address::is_valid_domain(name.trim_start_matches("*.").as_bytes())) {
                    return Err(ConfigError::at(
                        path,
                        s.line,
                        None,
                        format!("[{}]: `{name}` is not a domain name or *.domain", s.name),
                    ));
                }
                if domain_sections
                    .iter()
                    .any(|(m, d, _)| *m == n && *d == name)
                {
                    return Err(ConfigError::at(
                        path,
                        s.line,
                        None,
                        format!("[{}] appears twice", s.name),
                    ));
                }
                domain_sections.push((n, name.to_string(), s));
            } else if lower == "smtpsvc" {
                if service.is_some() {
                    return Err(ConfigError::at(
                        path,
                        s.line,
                        None,
                        "[SmtpSvc] appears twice",
                    ));
                }
                service = Some(s);
            } else if let Some(n) = lower.strip_prefix("smtpsvc/") {
                let n: u32 = n.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    ConfigError::at(
                        path,
                        s.line,
                        None,
                        format!(
                            "unknown section [{}]: virtual servers are [SmtpSvc/1], [SmtpSvc/2], …",
                            s.name
                        ),
                    )
                })?;
                if instances.iter().any(|(m, _)| *m == n) {
                    return Err(ConfigError::at(
                        path,
                        s.line,
                        None,
                        format!("[{}] appears twice", s.name),
                    ));
                }
                instances.push((n, s));
            } else {
                return Err(ConfigError::at(
                    path,
                    s.line,
                    None,
                    format!(
                        "unknown section [{}] (expected [SmtpSvc] or [SmtpSvc/n])",
                        s.name
                    ),
                ));
            }
        }
        if instances.is_empty() {
            return Err(ConfigError::file(
                path,
                "no virtual server: add a [SmtpSvc/1] section",
            ));
        }
        for (n, _, ds) in &domain_sections {
            if !instances.iter().any(|(m, _)| m == n) {
                return Err(ConfigError::at(
                    path,
                    ds.line,
                    None,
                    format!(
                        "[{}] belongs to [SmtpSvc/{n}], which does not exist",
                        ds.name
                    ),
                ));
            }
        }
        instances.sort_by_key(|(n, _)| *n);

        let inherited = match service {
            Some(s) => collect(path, s)?,
            None => HashMap::new(),
        };
        let mut servers: Vec<Arc<VirtualServer>> = Vec::new();
        for (n, s) in instances {
            let mut keys = inherited.clone();
            keys.extend(collect(path, s)?);
            let mut vs = build(path, base, n, &keys)?;
            for (_, name, ds) in domain_sections.iter().filter(|(m, _, _)| *m == n) {
                vs.domains.push(build_domain(path, base, name, ds)?);
            }
            for b in &vs.bindings {
                for other in &servers {
                    if b.port != 0
                        && other.bindings.iter().any(|o| {
                            o.port == b.port && (o.ip == b.ip || o.ip.is_none() || b.ip.is_none())
                        })
                    {
                        let line = keys.get("serverbindings").map(|e| e.line).unwrap_or(s.line);
                        return Err(ConfigError::at(
                            path,
                            line,
                            Some("ServerBindings"),
                            format!("{b} overlaps a binding of [SmtpSvc/{}]", other.instance),
                        ));
                    }
                }
            }
            servers.push(Arc::new(vs));
        }
        Ok(Config { source, servers })
    }
}

/// The entries of a virtual server section by lower-case key.
fn collect(path: &Path, s: &ini::Section) -> Result<HashMap<String, Entry>, ConfigError> {
    collect_keys(path, s, keys::server_key)
}

/// The entries of one section by lower-case key, rejecting keys `table` does not know and repeats.
fn collect_keys(
    path: &Path,
    s: &ini::Section,
    table: fn(&str) -> Option<&'static keys::KeyDef>,
) -> Result<HashMap<String, Entry>, ConfigError> {
    let mut m: HashMap<String, Entry> = HashMap::new();
    for e in &s.entries {
        let def = table(&e.key).ok_or_else(|| {
            ConfigError::at(
                path,
                e.line,
                Some(&e.key),
                format!("unknown key in [{}]", s.name),
            )
        })?;
        let lower = def.name.to_ascii_lowercase();
        if let Some(prev) = m.get(&lower) {
            return Err(ConfigError::at(
                path,
                e.line,
                Some(&e.key),
                format!("set twice in [{}] (first on line {})", s.name, prev.line),
            ));
        }
        m.insert(lower, e.clone());
    }
    Ok(m)
}

/// Reads typed values, with the key's file position for errors.
struct Reader<'a> {
    path: &'a Path,
    section_line: usize,
    keys: &'a HashMap<String, Entry>,
    table: fn(&str) -> Option<&'static keys::KeyDef>,
}

impl Reader<'_> {
    /// The raw value (or the table default) and the line it came from.
    fn raw(&self, name: &'static str) -> (String, usize, bool) {
        match self.keys.get(&name.to_ascii_lowercase()) {
            Some(e) => (e.value.clone(), e.line, true),
            None => {
                let def = (self.table)(name).map(|k| k.default).unwrap_or("");
                (def.to_string(), self.section_line, false)
            }
        }
    }

    fn parse<T>(
        &self,
        name: &'static str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let (v, line, _) = self.raw(name);
        f(v.trim()).map_err(|m| ConfigError::at(self.path, line, Some(name), m))
    }

    fn set(&self, name: &'static str) -> bool {
        self.keys.contains_key(&name.to_ascii_lowercase())
    }
}

fn build(
    path: &Path,
    base: &Path,
    instance: u32,
    keys: &HashMap<String, Entry>,
) -> Result<VirtualServer, ConfigError> {
    let r = Reader {
        path,
        section_line: 0,
        keys,
        table: keys::server_key,
    };
    let bindings = r.parse("ServerBindings", parse_bindings)?;
    let fqdn = if r.set("FullyQualifiedDomainName") {
        r.parse("FullyQualifiedDomainName", parse_domain)?
    } else {
        crate::os::hostname()
    };
    let mailroot = r.parse("MailRoot", |v| parse_path(base, v))?;
    let sub = |key: &'static str, name: &str| -> Result<PathBuf, ConfigError> {
        if r.set(key) {
            r.parse(key, |v| parse_path(base, v))
        } else {
            Ok(mailroot.join(name))
        }
    };
    let dirs = Dirs {
        pickup: sub("PickupDirectory", "Pickup")?,
        queue: sub("QueueDirectory", "Queue")?,
        badmail: sub("BadMailDirectory", "Badmail")?,
        drop: sub("DropDirectory", "Drop")?,
        sort_temp: mailroot.join("SortTemp"),
        mailroot: mailroot.clone(),
    };
    let default_domain = if r.set("DefaultDomain") {
        r.parse("DefaultDomain", parse_domain)?
    } else {
        fqdn.to_ascii_lowercase()
    };
    let local_domains = r.parse("LocalDomains", |v| {
        v.split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(parse_domain)
            .collect::<Result<Vec<_>, _>>()
    })?;
    let max_connections = r.parse("MaxConnections", |v| parse_num::<u32>(v, 1))?;
    let connection_timeout = r.parse("ConnectionTimeout", parse_seconds)?;
    let max_message_size = r.parse("MaxMessageSize", |v| parse_num::<u64>(v, 0))?;
    let max_session_size = r.parse("MaxSessionSize", |v| parse_num::<u64>(v, 0))?;
    let max_recipients = r.parse("MaxRecipients", |v| parse_num::<u32>(v, 1))?;
    let max_smtp_errors = r.parse("MaxSmtpErrors", |v| parse_num::<u32>(v, 1))?;
    let hop_count = r.parse("HopCount", |v| parse_num::<u32>(v, 1))?;
    let relay_ip_list = r.parse("RelayIpList", IpList::parse)?;
    let ip_grant_by_default = r.parse("IPGrantByDefault", parse_bool)?;
    let ip_deny = r.parse("IPDeny", HostList::parse)?;
    let ip_grant = r.parse("IPGrant", HostList::parse)?;
    let log = LogSettings {
        enabled: r.parse("LogType", parse_bool)?,
        directory: r.parse("LogFileDirectory", |v| parse_path(base, v))?,
        period: r.parse("LogFilePeriod", |v| match v {
            "0" => Ok(LogPeriod::Size),
            "1" => Ok(LogPeriod::Daily),
            "2" => Ok(LogPeriod::Weekly),
            "3" => Ok(LogPeriod::Monthly),
            "4" => Ok(LogPeriod::Hourly),
            _ => Err(format!(
                "`{v}` is not 0 (size), 1 (daily), 2 (weekly), 3 (monthly) or 4 (hourly)"
            )),
        })?,
        truncate_size: r.parse("LogFileTruncateSize", |v| parse_num::<u64>(v, 1024))?,
    };
    let delivery = DeliverySettings {
        smart_host: r.parse("SmartHost", parse_next_hop)?,
        smart_host_type: r.parse("SmartHostType", |v| match v {
            "0" => Ok(SmartHostType::DnsOnly),
            "1" => Ok(SmartHostType::DnsThenSmartHost),
            "2" => Ok(SmartHostType::Always),
            _ => Err(format!(
                "`{v}` is not 0 (DNS only), 1 (DNS, then smart host) or 2 (always smart host)"
            )),
        })?,
        remote_port: r.parse("RemoteSmtpPort", |v| {
            parse_num::<u32>(v, 1).and_then(|n| {
                u16::try_from(n).map_err(|_| format!("`{v}` is not a port from 1 to 65535"))
            })
        })?,
        dns_servers: r.parse("DnsServers", parse_addr_list)?,
        max_batched: r.parse("MaxBatchedMessages", |v| parse_num::<u32>(v, 1))?,
        remote_timeout: r.parse("RemoteTimeout", parse_seconds)?,
        max_out: r.parse("MaxOutConnections", |v| parse_num::<u32>(v, 1))?,
        max_out_per_domain: r.parse("MaxOutConnectionsPerDomain", |v| parse_num::<u32>(v, 1))?,
        tls: r.parse("OutboundTls", parse_tls)?,
        ca_file: r.parse("OutboundTlsCaFile", |v| {
            if v.is_empty() {
                Ok(None)
            } else {
                parse_path(base, v).map(Some)
            }
        })?,
        auth_plaintext: r.parse("OutboundAuthAllowPlaintext", parse_bool)?,
        credentials: credentials(&r)?,
        retry: r.parse("SmtpRemoteProgressiveRetry", |v| {
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
        })?,
        delay_expire: r.parse("SmtpRemoteDelayExpireMinutes", parse_minutes)?,
        ndr_expire: r.parse("SmtpRemoteNDRExpireMinutes", parse_minutes)?,
        masquerade: r.parse("MasqueradeDomain", |v| {
            if v.is_empty() {
                Ok(None)
            } else {
                parse_domain(v).map(Some)
            }
        })?,
        send_ndr_to: r.parse("SendNdrTo", parse_mailbox_value)?,
        pickup_unstuff_dots: r.parse("PickupUnstuffDots", parse_bool)?,
        pickup_settle: r.parse("PickupSettleTime", parse_millis)?,
    };
    let tls_files = match (
        r.raw("TlsCertificateFile").0.is_empty(),
        r.raw("TlsKeyFile").0.is_empty(),
    ) {
        (true, true) => None,
        (false, false) => Some((
            r.parse("TlsCertificateFile", |v| parse_path(base, v))?,
            r.parse("TlsKeyFile", |v| parse_path(base, v))?,
        )),
        (false, true) => {
            return Err(ConfigError::at(
                path,
                r.raw("TlsCertificateFile").1,
                Some("TlsKeyFile"),
                "TlsCertificateFile needs TlsKeyFile",
            ));
        }
        (true, false) => {
            return Err(ConfigError::at(
                path,
                r.raw("TlsKeyFile").1,
                Some("TlsCertificateFile"),
                "TlsKeyFile needs TlsCertificateFile",
            ));
        }
    };
    let tls = match &tls_files {
        Some((c, k)) => Some(crate::net::tls::server_config(c, k).map_err(|e| {
            ConfigError::at(
                path,
                r.raw("TlsCertificateFile").1,
                Some("TlsCertificateFile"),
                e.to_string(),
            )
        })?),
        None => None,
    };
    let secure_bindings = r.parse("SecureBindings", |v| {
        if v.is_empty() {
            Ok(Vec::new())
        } else {
            parse_bindings(v)
        }
    })?;
    if !secure_bindings.is_empty() && tls.is_none() {
        return Err(ConfigError::at(
            path,
            r.raw("SecureBindings").1,
            Some("SecureBindings"),
            "implicit TLS needs TlsCertificateFile and TlsKeyFile",
        ));
    }
    let require_tls = r.parse("RequireTls", parse_bool)?;
    if require_tls && tls.is_none() {
        return Err(ConfigError::at(
            path,
            r.raw("RequireTls").1,
            Some("RequireTls"),
            "RequireTls needs TlsCertificateFile and TlsKeyFile",
        ));
    }
    let flags = r.parse("AuthFlags", |v| match v {
        "1" | "2" | "3" => Ok(v.parse::<u8>().unwrap_or(1)),
        _ => Err(format!(
            "`{v}` is not 1 (anonymous), 2 (Basic: AUTH required) or 3 (both)"
        )),
    })?;
    let security = SecuritySettings {
        secure_bindings,
        tls,
        tls_files,
        require_tls,
        anonymous: flags & 1 != 0,
        basic: flags & 2 != 0,
        plaintext_auth: r.parse("AllowPlaintextAuth", parse_bool)?,
        users_file: r.parse("UsersFile", |v| parse_path(base, v))?,
        relay_for_auth: r.parse("RelayForAuth", parse_bool)?,
        max_per_ip: r.parse("MaxConnectionsPerIp", |v| parse_num::<u32>(v, 1))?,
        reverse_dns: r.parse("EnableReverseDnsLookup", parse_bool)?,
    };
    Ok(VirtualServer {
        security,
        delivery,
        domains: Vec::new(),
        instance,
        bindings,
        fqdn,
        dirs,
        default_domain,
        local_domains,
        max_connections,
        connection_timeout,
        max_message_size,
        max_session_size,
        max_recipients,
        max_smtp_errors,
        hop_count,
        relay_ip_list,
        ip_grant_by_default,
        ip_deny,
        ip_grant,
        log,
    })
}

/// `smtpsvc/<n>/domain/<name>` → (n, name); `None` when the section is not a domain section.
fn domain_section_name(lower: &str) -> Option<(Option<u32>, &str)> {
    let rest = lower.strip_prefix("smtpsvc/")?;
    let (n, rest) = rest.split_once('/')?;
    let name = rest.strip_prefix("domain/")?;
    Some((n.parse().ok().filter(|n| *n >= 1), name))
}

fn build_domain(
    path: &Path,
    base: &Path,
    name: &str,
    s: &ini::Section,
) -> Result<DomainRoute, ConfigError> {
    let m = collect_keys(path, s, keys::domain_key)?;
    let r = Reader {
        path,
        section_line: s.line,
        keys: &m,
        table: keys::domain_key,
    };
    let _ = base;
    Ok(DomainRoute {
        pattern: name.to_string(),
        relay_allowed: r.parse("RelayAllowed", parse_bool)?,
        smart_host: r.parse("SmartHost", parse_next_hop)?,
        credentials: credentials(&r)?,
        tls: r.parse("OutboundTls", |v| {
            if v.is_empty() {
                Ok(None)
            } else {
                parse_tls(v).map(Some)
            }
        })?,
    })
}

fn credentials(r: &Reader<'_>) -> Result<Option<Credentials>, ConfigError> {
    let user = r.raw("RouteUserName").0;
    let (password, pline, _) = r.raw("RoutePassword");
    match (user.is_empty(), password.is_empty()) {
        (true, true) => Ok(None),
        (false, _) => Ok(Some(Credentials { user, password })),
        (true, false) => Err(ConfigError::at(
            r.path,
            pline,
            Some("RoutePassword"),
            "RoutePassword without RouteUserName",
        )),
    }
}

fn parse_tls(v: &str) -> Result<TlsPolicy, String> {
    match v.to_ascii_lowercase().as_str() {
        "none" | "0" => Ok(TlsPolicy::None),
        "opportunistic" => Ok(TlsPolicy::Opportunistic),
        "required" => Ok(TlsPolicy::Required),
        "implicit" => Ok(TlsPolicy::Implicit),
        _ => Err(format!(
            "`{v}` is not none, opportunistic, required or implicit"
        )),
    }
}

/// `host`, `host:port`, `[a.b.c.d]`, `[a.b.c.d]:port`, `[IPv6]:port`; empty = none.
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

fn parse_addr_list(v: &str) -> Result<Vec<SocketAddr>, String> {
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

fn parse_mailbox_value(v: &str) -> Result<Option<String>, String> {
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

fn parse_num<T: std::str::FromStr + PartialOrd + fmt::Display + From<u32>>(
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

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "-1" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(format!("`{v}` is not 0 or 1")),
    }
}

/// Milliseconds or a number with a unit (`500ms`, `1s`, `2m`); 0 is allowed.
fn parse_millis(v: &str) -> Result<Duration, String> {
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

fn parse_domain(v: &str) -> Result<String, String> {
    let d = v.trim_end_matches('.');
    if address::is_valid_domain(d.as_bytes()) {
        Ok(d.to_ascii_lowercase())
    } else {
        Err(format!("`{v}` is not a valid domain name"))
    }
}

fn parse_path(base: &Path, v: &str) -> Result<PathBuf, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let ini = IniFile::parse(Path::new("t.ini"), text)?;
        Config::from_ini(&ini, Path::new("/srv"), Source::File("t.ini".into()))
    }

    #[test]
    fn defaults_are_iis_setup_values() {
        let c = load("[SmtpSvc/1]\nFullyQualifiedDomainName = mail.example.com\n").unwrap();
        let vs = &c.servers[0];
        assert_eq!(vs.bindings, vec![Binding { ip: None, port: 25 }]);
        assert_eq!(vs.max_message_size, 2_097_152);
        assert_eq!(vs.max_session_size, 10_485_760);
        assert_eq!(vs.max_recipients, 100);
        assert_eq!(vs.hop_count, 15);
        assert_eq!(vs.max_connections, 2000);
        assert_eq!(vs.connection_timeout, Duration::from_secs(600));
        assert_eq!(vs.default_domain, "mail.example.com");
        assert_eq!(vs.dirs.queue, Path::new("/srv/mailroot/Queue"));
        let c = load("[SmtpSvc/1]\nMailRoot = ../spool/./mailroot\n").unwrap();
        assert_eq!(c.servers[0].dirs.drop, Path::new("/spool/mailroot/Drop"));
        assert!(vs.relay_ip_list.contains("127.0.0.1".parse().unwrap()));
        assert!(vs.relay_ip_list.contains("::1".parse().unwrap()));
        assert!(vs.ip_grant_by_default);
        assert_eq!(vs.log.period, LogPeriod::Daily);
    }

    #[test]
    fn service_section_is_inherited_and_overridden() {
        let c = load("[SmtpSvc]\nMaxRecipients = 5\n[smtpsvc/2]\nServerBindings=:2526\n[SmtpSvc/1]\nmaxrecipients=7\nServerBindings = 127.0.0.1:2525, [::1]:2525\n").unwrap();
        assert_eq!(c.servers[0].instance, 1);
        assert_eq!(c.servers[0].max_recipients, 7);
        assert_eq!(c.servers[1].max_recipients, 5);
        assert_eq!(c.servers[0].bindings.len(), 2);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = load("[SmtpSvc/1]\n\nMaxRecipients = lots\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.ini:3: MaxRecipients: `lots` is not a whole number"
        );
        let e = load("[SmtpSvc/1]\nMaxRecipent = 5\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.ini:2: MaxRecipent: unknown key in [SmtpSvc/1]"
        );
        let e = load("[SmtpSvc/1]\n[Relay]\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t.ini:2: unknown section [Relay]")
        );
        let e = load("[SmtpSvc/1]\nHopCount=1\nhopcount=2\n").unwrap_err();
        assert!(e.to_string().starts_with("t.ini:3: hopcount: set twice"));
        let e = load("[SmtpSvc/1]\nServerBindings = 127.0.0.1\n").unwrap_err();
        assert!(e.to_string().starts_with("t.ini:2: ServerBindings: "));
        let e = load("[SmtpSvc/1]\nRelayIpList = 10.0.0.0/40\n").unwrap_err();
        assert!(e.to_string().starts_with("t.ini:2: RelayIpList: "));
        let e = load("[SmtpSvc/1]\nServerBindings=:25\n[SmtpSvc/2]\nServerBindings=127.0.0.1:25\n")
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t.ini:4: ServerBindings: 127.0.0.1:25 overlaps")
        );
        assert!(load("").is_err());
    }

    #[test]
    fn delivery_keys_and_domain_sections() {
        let c = load("[SmtpSvc/1]\nSmartHost = [127.0.0.1]:2626\nSmartHostType = 2\nSmtpRemoteProgressiveRetry = 1s,2s,1\nRouteUserName = u\nRoutePassword = p\n[SmtpSvc/1/Domain/*.Corp.test]\nSmartHost = relay.corp.test:587\nRelayAllowed = 1\n[SmtpSvc/1/Domain/x.corp.test]\nOutboundTls = required\n").unwrap();
        let vs = &c.servers[0];
        let d = &vs.delivery;
        assert_eq!(
            d.smart_host,
            Some(NextHop {
                host: "127.0.0.1".into(),
                port: Some(2626),
                literal: true
            })
        );
        assert_eq!(d.smart_host_type, SmartHostType::Always);
        assert_eq!(
            d.retry,
            vec![
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(60)
            ]
        );
        assert_eq!(d.ndr_expire, Duration::from_secs(2880 * 60));
        assert_eq!(d.tls, TlsPolicy::Opportunistic);
        assert_eq!(d.credentials.as_ref().map(|c| c.user.as_str()), Some("u"));
        assert_eq!(
            vs.domain_route("x.corp.test").map(|r| r.tls),
            Some(Some(TlsPolicy::Required))
        );
        assert_eq!(
            vs.domain_route("y.corp.test").map(|r| r.relay_allowed),
            Some(true)
        );
        assert!(vs.domain_route("corp.test").is_none());
        assert!(vs.domain_route("evilcorp.test").is_none());
        let e = load("[SmtpSvc/1]\n[SmtpSvc/1/Domain/a.test]\nSmartHostType = 1\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t.ini:3: SmartHostType: unknown key in [SmtpSvc/1/Domain/a.test]"),
            "{e}"
        );
        let e = load("[SmtpSvc/1]\n[SmtpSvc/2/Domain/a.test]\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t.ini:2: [SmtpSvc/2/Domain/a.test] belongs to [SmtpSvc/2]"),
            "{e}"
        );
        let e = load("[SmtpSvc/1]\nSmartHost = mail_relay:25\n").unwrap_err();
        assert!(e.to_string().starts_with("t.ini:2: SmartHost: "), "{e}");
        let e = load("[SmtpSvc/1]\nOutboundTls = sometimes\n").unwrap_err();
        assert!(e.to_string().starts_with("t.ini:2: OutboundTls: "), "{e}");
        assert_eq!(
            parse_next_hop("smtp.office365.com:587")
                .unwrap()
                .unwrap()
                .port,
            Some(587)
        );
        assert!(parse_next_hop("[::1]:25").unwrap().unwrap().literal);
    }

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
    fn durations_take_units() {
        assert_eq!(parse_seconds("600").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_seconds("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("soon").is_err());
    }
}
