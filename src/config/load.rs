//! Loading: INI sections and keys become typed [`Config`] settings. Each key is read through the
//! [`keys`](super::keys) table (for its default) and parsed by one of the [`values`](super::values)
//! parsers; a bad value becomes a [`ConfigError`] at the key's `FILE:LINE`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::ConfigError;
use super::ini::{self, Entry, IniFile};
use super::keys;
use super::outbound::{self, Provider};
use super::settings::{
    AuthFlags, DeliverySettings, Dirs, DomainRoute, LogSettings, SecuritySettings, VirtualServer,
};
use super::values::{
    optional, parse_addr_list, parse_auth_flags, parse_bindings, parse_bool, parse_domain,
    parse_domain_list, parse_log_period, parse_mailbox_value, parse_millis, parse_minutes,
    parse_next_hops, parse_num, parse_path, parse_port, parse_retry, parse_seconds,
    parse_smart_host_type, parse_tls,
};
use super::{HostList, IpList};
use crate::smtp::address;

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

/// Reads typed values, with the key's file position for errors. A key not written takes its
/// provider preset's value (SmartHostProvider), else the table's default.
pub(super) struct Reader<'a> {
    path: &'a Path,
    section_line: usize,
    keys: &'a HashMap<String, Entry>,
    table: fn(&str) -> Option<&'static keys::KeyDef>,
    /// The section's preset, and whether the section is a virtual server's (not a domain's).
    preset: Option<(Provider, bool)>,
}

impl Reader<'_> {
    /// The raw value and its line; for a key not set, the preset's or the table's default and the
    /// section line.
    pub(super) fn raw(&self, name: &'static str) -> (String, usize) {
        match self.keys.get(&name.to_ascii_lowercase()) {
            Some(e) => (e.value.clone(), e.line),
            None => {
                let def = self
                    .preset
                    .and_then(|(p, top)| p.preset(name, top))
                    .or_else(|| (self.table)(name).map(|k| k.default))
                    .unwrap_or("");
                (def.to_string(), self.section_line)
            }
        }
    }

    pub(super) fn parse<T>(
        &self,
        name: &'static str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let (v, line) = self.raw(name);
        f(v.trim()).map_err(|m| ConfigError::at(self.path, line, Some(name), m))
    }

    /// Whether the key is written in the section.
    pub(super) fn set(&self, name: &str) -> bool {
        self.keys.contains_key(&name.to_ascii_lowercase())
    }

    /// An error at `line` for `key`.
    pub(super) fn error(&self, line: usize, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.path, line, Some(key), message)
    }

    /// The keys that take their value from the preset (not written in the section).
    pub(super) fn preset_keys(&self) -> Vec<&'static str> {
        let Some((p, top)) = self.preset else {
            return Vec::new();
        };
        keys::SERVER_KEYS
            .iter()
            .chain(keys::DOMAIN_KEYS)
            .map(|k| k.name)
            .filter(|k| p.preset(k, top).is_some() && !self.set(k))
            .fold(Vec::new(), |mut v, k| {
                if !v.contains(&k) {
                    v.push(k);
                }
                v
            })
    }
}

fn build(
    path: &Path,
    base: &Path,
    instance: u32,
    keys: &HashMap<String, Entry>,
) -> Result<VirtualServer, ConfigError> {
    let mut r = Reader {
        path,
        section_line: 0,
        keys,
        table: keys::server_key,
        preset: None,
    };
    let provider = outbound::provider(&r)?;
    r.preset = provider.map(|p| (p, true));
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
    let local_domains = r.parse("LocalDomains", parse_domain_list)?;
    let max_connections = r.parse("MaxConnections", |v| parse_num::<u32>(v, 1))?;
    let connection_timeout = r.parse("ConnectionTimeout", parse_seconds)?;
    let max_message_size = r.parse("MaxMessageSize", |v| parse_num::<u64>(v, 0))?;
    let max_session_size = r.parse("MaxSessionSize", |v| parse_num::<u64>(v, 0))?;
    let max_recipients = r.parse("MaxRecipients", |v| parse_num::<u32>(v, 1))?;
    let max_smtp_errors = r.parse("MaxSmtpErrors", |v| parse_num::<u32>(v, 1))?;
    let allow_bare_lf_in_commands = r.parse("AllowBareLfInCommands", parse_bool)?;
    let hop_count = r.parse("HopCount", |v| parse_num::<u32>(v, 1))?;
    let relay_ip_list = r.parse("RelayIpList", IpList::parse)?;
    let ip_grant_by_default = r.parse("IPGrantByDefault", parse_bool)?;
    let ip_deny = r.parse("IPDeny", HostList::parse)?;
    let ip_grant = r.parse("IPGrant", HostList::parse)?;
    let proxy_protocol_from = r.parse("ProxyProtocolFrom", IpList::parse)?;
    let log = LogSettings {
        enabled: r.parse("LogType", parse_bool)?,
        directory: r.parse("LogFileDirectory", |v| parse_path(base, v))?,
        period: r.parse("LogFilePeriod", parse_log_period)?,
        truncate_size: r.parse("LogFileTruncateSize", |v| parse_num::<u64>(v, 1024))?,
        server_log: r.parse("ServerLogFile", |v| optional(v, |v| parse_path(base, v)))?,
    };
    let metrics_binding = r.parse("MetricsBinding", |v| {
        optional(v, |v| {
            v.parse::<std::net::SocketAddr>()
                .map_err(|_| format!("`{v}` is not an IP:port (e.g. 127.0.0.1:9325)"))
        })
    })?;
    let delivery = DeliverySettings {
        smart_host: r.parse("SmartHost", parse_next_hops)?,
        smart_host_type: r.parse("SmartHostType", parse_smart_host_type)?,
        remote_port: r.parse("RemoteSmtpPort", parse_port)?,
        dns_servers: r.parse("DnsServers", parse_addr_list)?,
        max_batched: r.parse("MaxBatchedMessages", |v| parse_num::<u32>(v, 1))?,
        line_length_limit: r.parse("OutboundLineLengthLimit", |v| {
            let n: u32 = parse_num(v, 0)?;
            if n != 0 && !(64..=998).contains(&n) {
                return Err("must be 0 (never break lines) or from 64 to 998".into());
            }
            Ok(n as usize)
        })?,
        remote_timeout: r.parse("RemoteTimeout", parse_seconds)?,
        max_out: r.parse("MaxOutConnections", |v| parse_num::<u32>(v, 1))?,
        max_out_per_domain: r.parse("MaxOutConnectionsPerDomain", |v| parse_num::<u32>(v, 1))?,
        initial_concurrency: r
            .parse("DestinationInitialConcurrency", |v| parse_num::<u32>(v, 1))?,
        dead_failures: r.parse("DeadDestinationFailures", |v| parse_num::<u32>(v, 1))?,
        connect_timeout: r.parse("RemoteConnectTimeout", parse_seconds)?,
        transaction_timeout: r.parse("RemoteTransactionTimeout", parse_seconds)?,
        max_per_minute: r.parse("MaxMessagesPerMinute", |v| parse_num::<u32>(v, 0))?,
        tls: r.parse("OutboundTls", parse_tls)?,
        ca_file: r.parse("OutboundTlsCaFile", |v| {
            optional(v, |v| parse_path(base, v))
        })?,
        auth_plaintext: r.parse("OutboundAuthAllowPlaintext", parse_bool)?,
        out: Arc::new(outbound::read(&r, base, provider)?),
        retry: r.parse("SmtpRemoteProgressiveRetry", parse_retry)?,
        delay_expire: r.parse("SmtpRemoteDelayExpireMinutes", parse_minutes)?,
        ndr_expire: r.parse("SmtpRemoteNDRExpireMinutes", parse_minutes)?,
        masquerade: r.parse("MasqueradeDomain", |v| optional(v, parse_domain))?,
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
    let tls_ecdsa_files = match (
        r.raw("TlsEcdsaCertificateFile").0.is_empty(),
        r.raw("TlsEcdsaKeyFile").0.is_empty(),
    ) {
        (true, true) => None,
        (false, false) if tls_files.is_none() => {
            return Err(ConfigError::at(
                path,
                r.raw("TlsEcdsaCertificateFile").1,
                Some("TlsEcdsaCertificateFile"),
                "a second certificate needs the first: set TlsCertificateFile and TlsKeyFile (an ECDSA certificate alone goes there)",
            ));
        }
        (false, false) => Some((
            r.parse("TlsEcdsaCertificateFile", |v| parse_path(base, v))?,
            r.parse("TlsEcdsaKeyFile", |v| parse_path(base, v))?,
        )),
        (false, true) => {
            return Err(ConfigError::at(
                path,
                r.raw("TlsEcdsaCertificateFile").1,
                Some("TlsEcdsaKeyFile"),
                "TlsEcdsaCertificateFile needs TlsEcdsaKeyFile",
            ));
        }
        (true, false) => {
            return Err(ConfigError::at(
                path,
                r.raw("TlsEcdsaKeyFile").1,
                Some("TlsEcdsaCertificateFile"),
                "TlsEcdsaKeyFile needs TlsEcdsaCertificateFile",
            ));
        }
    };
    let tls = match &tls_files {
        Some((c, k)) => {
            let ecdsa = tls_ecdsa_files
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path()));
            // An error in the second pair names its own key.
            let second = |e: &crate::net::tls::TlsError| {
                tls_ecdsa_files
                    .as_ref()
                    .is_some_and(|(ec, ek)| e.file().is_some_and(|f| f == ec || f == ek))
            };
            Some(crate::net::tls::server_config(c, k, ecdsa).map_err(|e| {
                let key = if second(&e) {
                    "TlsEcdsaCertificateFile"
                } else {
                    "TlsCertificateFile"
                };
                ConfigError::at(path, r.raw(key).1, Some(key), e.to_string())
            })?)
        }
        None => None,
    };
    let secure_bindings = r.parse("SecureBindings", |v| {
        optional(v, parse_bindings).map(Option::unwrap_or_default)
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
    let AuthFlags { anonymous, basic } = r.parse("AuthFlags", parse_auth_flags)?;
    let security = SecuritySettings {
        secure_bindings,
        tls,
        tls_files,
        tls_ecdsa_files,
        require_tls,
        anonymous,
        basic,
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
        allow_bare_lf_in_commands,
        hop_count,
        relay_ip_list,
        ip_grant_by_default,
        ip_deny,
        ip_grant,
        proxy_protocol_from,
        log,
        metrics_binding,
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
    let mut r = Reader {
        path,
        section_line: s.line,
        keys: &m,
        table: keys::domain_key,
        preset: None,
    };
    let provider = outbound::provider(&r)?;
    r.preset = provider.map(|p| (p, false));
    Ok(DomainRoute {
        pattern: name.to_string(),
        relay_allowed: r.parse("RelayAllowed", parse_bool)?,
        smart_host: r.parse("SmartHost", parse_next_hops)?,
        out: Arc::new(outbound::read(&r, base, provider)?),
        tls: r.parse("OutboundTls", |v| optional(v, parse_tls))?,
        max_out: r.parse("MaxOutConnectionsPerDomain", |v| {
            optional(v, |v| parse_num::<u32>(v, 1))
        })?,
        max_per_minute: r.parse("MaxMessagesPerMinute", |v| {
            optional(v, |v| parse_num::<u32>(v, 0))
        })?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Binding, LogPeriod, NextHop, SmartHostType, TlsPolicy};
    use std::time::Duration;

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
            vec![NextHop {
                host: "127.0.0.1".into(),
                port: Some(2626),
                literal: true
            }]
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
        assert_eq!(d.out.credentials().map(|c| c.user.as_str()), Some("u"));
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
    }
}
