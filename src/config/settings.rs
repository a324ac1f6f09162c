//! Typed settings of one SMTP virtual server, parsed once at start-up; nothing reads INI keys later.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::hosts::HostList;
use super::ipnet::IpList;
use super::outbound::Outbound;

/// One listen endpoint from ServerBindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// `None` means every address (`:25`).
    pub ip: Option<IpAddr>,
    /// TCP port.
    pub port: u16,
}

impl Binding {
    /// The socket addresses to bind: all addresses means IPv6 `[::]` (dual-stack where the system
    /// allows it) and IPv4 `0.0.0.0`.
    pub fn socket_addrs(&self) -> Vec<SocketAddr> {
        match self.ip {
            Some(ip) => vec![SocketAddr::new(ip, self.port)],
            None => vec![
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), self.port),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), self.port),
            ],
        }
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            None => write!(f, ":{}", self.port),
            Some(IpAddr::V6(v6)) => write!(f, "[{}]:{}", v6, self.port),
            Some(IpAddr::V4(v4)) => write!(f, "{}:{}", v4, self.port),
        }
    }
}

/// The mailroot folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// MailRoot itself.
    pub mailroot: PathBuf,
    /// Where applications drop files to send.
    pub pickup: PathBuf,
    /// Accepted mail for remote domains, waiting for delivery.
    pub queue: PathBuf,
    /// Undeliverable mail.
    pub badmail: PathBuf,
    /// Mail for local domains.
    pub drop: PathBuf,
    /// Files being written; never read by anyone else.
    pub sort_temp: PathBuf,
}

impl Dirs {
    /// The standard folders under `mailroot` (what the settings give when no folder key is set).
    pub fn under(mailroot: &std::path::Path) -> Dirs {
        Dirs {
            mailroot: mailroot.to_path_buf(),
            pickup: mailroot.join("Pickup"),
            queue: mailroot.join("Queue"),
            badmail: mailroot.join("Badmail"),
            drop: mailroot.join("Drop"),
            sort_temp: mailroot.join("SortTemp"),
        }
    }
}

/// When the W3C log starts a new file (IIS LogFilePeriod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogPeriod {
    /// 0: by size (LogFileTruncateSize).
    Size,
    /// 1: daily.
    Daily,
    /// 2: weekly.
    Weekly,
    /// 3: monthly.
    Monthly,
    /// 4: hourly.
    Hourly,
}

impl LogPeriod {
    /// The IIS number.
    pub fn code(self) -> u32 {
        match self {
            LogPeriod::Size => 0,
            LogPeriod::Daily => 1,
            LogPeriod::Weekly => 2,
            LogPeriod::Monthly => 3,
            LogPeriod::Hourly => 4,
        }
    }

    /// The period an IIS number stands for.
    pub fn from_code(code: u32) -> Option<LogPeriod> {
        match code {
            0 => Some(LogPeriod::Size),
            1 => Some(LogPeriod::Daily),
            2 => Some(LogPeriod::Weekly),
            3 => Some(LogPeriod::Monthly),
            4 => Some(LogPeriod::Hourly),
            _ => None,
        }
    }
}

/// W3C protocol log settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// LogType = 1.
    pub enabled: bool,
    /// LogFileDirectory (the SMTPSVC<n> folder goes below it).
    pub directory: PathBuf,
    /// LogFilePeriod.
    pub period: LogPeriod,
    /// LogFileTruncateSize in bytes.
    pub truncate_size: u64,
    /// ServerLogFile: the diagnostic log's file (None: standard error).
    pub server_log: Option<PathBuf>,
}

/// One SMTP virtual server (`[SmtpSvc/n]`).
#[derive(Debug, Clone)]
pub struct VirtualServer {
    /// The n of SmtpSvc/n (logs go to SMTPSVC<n>).
    pub instance: u32,
    /// Listen endpoints.
    pub bindings: Vec<Binding>,
    /// FullyQualifiedDomainName.
    pub fqdn: String,
    /// Mailroot folders.
    pub dirs: Dirs,
    /// DefaultDomain, lower case.
    pub default_domain: String,
    /// LocalDomains, lower case.
    pub local_domains: Vec<String>,
    /// MaxConnections.
    pub max_connections: u32,
    /// ConnectionTimeout.
    pub connection_timeout: Duration,
    /// MaxMessageSize in bytes; 0 = unlimited.
    pub max_message_size: u64,
    /// MaxSessionSize in bytes; 0 = unlimited.
    pub max_session_size: u64,
    /// MaxRecipients.
    pub max_recipients: u32,
    /// MaxSmtpErrors.
    pub max_smtp_errors: u32,
    /// AllowBareLfInCommands: command lines may end with a bare LF (or hold a bare CR).
    pub allow_bare_lf_in_commands: bool,
    /// HopCount.
    pub hop_count: u32,
    /// RelayIpList.
    pub relay_ip_list: IpList,
    /// IPGrantByDefault.
    pub ip_grant_by_default: bool,
    /// IPDeny.
    pub ip_deny: HostList,
    /// IPGrant.
    pub ip_grant: HostList,
    /// ProxyProtocolFrom: the load balancers whose connections start with a PROXY protocol header
    /// (on every binding of the virtual server).
    pub proxy_protocol_from: IpList,
    /// Protocol log.
    pub log: LogSettings,
    /// MetricsBinding: where `/metrics` and `/status` are served (None: off).
    pub metrics_binding: Option<std::net::SocketAddr>,
    /// Delivery.
    pub delivery: DeliverySettings,
    /// TLS, AUTH and per-client limits.
    pub security: SecuritySettings,
    /// Remote domain sections, in file order.
    pub domains: Vec<DomainRoute>,
}

impl VirtualServer {
    /// The effective value of every key, in table order, as INI text would write it.
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        let p = |p: &PathBuf| p.display().to_string();
        fn hops(v: &[NextHop]) -> String {
            v.iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        }
        fn minutes(d: Duration) -> String {
            if d.as_secs().is_multiple_of(60) {
                (d.as_secs() / 60).to_string()
            } else {
                format!("{}s", d.as_secs())
            }
        }
        let list = |v: &[String]| v.join(", ");
        let bindings = self
            .bindings
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut all = vec![
            ("ServerBindings", bindings),
            ("FullyQualifiedDomainName", self.fqdn.clone()),
            ("MailRoot", p(&self.dirs.mailroot)),
            ("PickupDirectory", p(&self.dirs.pickup)),
            ("QueueDirectory", p(&self.dirs.queue)),
            ("BadMailDirectory", p(&self.dirs.badmail)),
            ("DropDirectory", p(&self.dirs.drop)),
            ("DefaultDomain", self.default_domain.clone()),
            ("LocalDomains", list(&self.local_domains)),
            ("MaxConnections", self.max_connections.to_string()),
            (
                "ConnectionTimeout",
                self.connection_timeout.as_secs().to_string(),
            ),
            ("MaxMessageSize", self.max_message_size.to_string()),
            ("MaxSessionSize", self.max_session_size.to_string()),
            ("MaxRecipients", self.max_recipients.to_string()),
            ("MaxSmtpErrors", self.max_smtp_errors.to_string()),
            (
                "AllowBareLfInCommands",
                u8::from(self.allow_bare_lf_in_commands).to_string(),
            ),
            ("HopCount", self.hop_count.to_string()),
            ("RelayIpList", self.relay_ip_list.to_string()),
            (
                "IPGrantByDefault",
                u8::from(self.ip_grant_by_default).to_string(),
            ),
            ("IPDeny", self.ip_deny.to_string()),
            ("IPGrant", self.ip_grant.to_string()),
            ("ProxyProtocolFrom", self.proxy_protocol_from.to_string()),
            ("LogType", u8::from(self.log.enabled).to_string()),
            ("LogFileDirectory", p(&self.log.directory)),
            ("LogFilePeriod", self.log.period.code().to_string()),
            ("LogFileTruncateSize", self.log.truncate_size.to_string()),
            (
                "ServerLogFile",
                self.log
                    .server_log
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "MetricsBinding",
                self.metrics_binding
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
            ),
            (
                "SecureBindings",
                self.security
                    .secure_bindings
                    .iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            (
                "TlsCertificateFile",
                self.security
                    .tls_files
                    .as_ref()
                    .map(|f| p(&f.0))
                    .unwrap_or_default(),
            ),
            (
                "TlsKeyFile",
                self.security
                    .tls_files
                    .as_ref()
                    .map(|f| p(&f.1))
                    .unwrap_or_default(),
            ),
            (
                "TlsEcdsaCertificateFile",
                self.security
                    .tls_ecdsa_files
                    .as_ref()
                    .map(|f| p(&f.0))
                    .unwrap_or_default(),
            ),
            (
                "TlsEcdsaKeyFile",
                self.security
                    .tls_ecdsa_files
                    .as_ref()
                    .map(|f| p(&f.1))
                    .unwrap_or_default(),
            ),
            (
                "RequireTls",
                u8::from(self.security.require_tls).to_string(),
            ),
            ("AuthFlags", self.security.auth_flags().code().to_string()),
            (
                "AllowPlaintextAuth",
                u8::from(self.security.plaintext_auth).to_string(),
            ),
            ("UsersFile", p(&self.security.users_file)),
            (
                "RelayForAuth",
                u8::from(self.security.relay_for_auth).to_string(),
            ),
            (
                "EnableReverseDnsLookup",
                u8::from(self.security.reverse_dns).to_string(),
            ),
            ("MaxConnectionsPerIp", self.security.max_per_ip.to_string()),
            ("SmartHost", hops(&self.delivery.smart_host)),
            (
                "SmartHostType",
                self.delivery.smart_host_type.code().to_string(),
            ),
            ("RemoteSmtpPort", self.delivery.remote_port.to_string()),
            (
                "DnsServers",
                self.delivery
                    .dns_servers
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            (
                "OutboundLineLengthLimit",
                self.delivery.line_length_limit.to_string(),
            ),
            ("MaxBatchedMessages", self.delivery.max_batched.to_string()),
            (
                "RemoteTimeout",
                self.delivery.remote_timeout.as_secs().to_string(),
            ),
            ("MaxOutConnections", self.delivery.max_out.to_string()),
            (
                "MaxOutConnectionsPerDomain",
                self.delivery.max_out_per_domain.to_string(),
            ),
            (
                "DestinationInitialConcurrency",
                self.delivery.initial_concurrency.to_string(),
            ),
            (
                "DeadDestinationFailures",
                self.delivery.dead_failures.to_string(),
            ),
            (
                "RemoteConnectTimeout",
                self.delivery.connect_timeout.as_secs().to_string(),
            ),
            (
                "RemoteTransactionTimeout",
                self.delivery.transaction_timeout.as_secs().to_string(),
            ),
            (
                "MaxMessagesPerMinute",
                self.delivery.max_per_minute.to_string(),
            ),
            ("OutboundTls", self.delivery.tls.as_str().to_string()),
            (
                "OutboundTlsCaFile",
                self.delivery
                    .ca_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "OutboundAuthAllowPlaintext",
                u8::from(self.delivery.auth_plaintext).to_string(),
            ),
            ("RouteUserName", self.delivery.out.user().to_string()),
            (
                "RoutePassword",
                if self.delivery.out.credentials().is_some()
                    && self.delivery.out.password_file().is_none()
                {
                    "(set)".into()
                } else {
                    String::new()
                },
            ),
            (
                "RoutePasswordFile",
                self.delivery
                    .out
                    .password_file()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "SmtpRemoteProgressiveRetry",
                self.delivery
                    .retry
                    .iter()
                    .map(|d| minutes(*d))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "SmtpRemoteDelayExpireMinutes",
                minutes(self.delivery.delay_expire),
            ),
            (
                "SmtpRemoteNDRExpireMinutes",
                minutes(self.delivery.ndr_expire),
            ),
            (
                "MasqueradeDomain",
                self.delivery.masquerade.clone().unwrap_or_default(),
            ),
            (
                "SendNdrTo",
                self.delivery.send_ndr_to.clone().unwrap_or_default(),
            ),
            (
                "PickupUnstuffDots",
                u8::from(self.delivery.pickup_unstuff_dots).to_string(),
            ),
            (
                "PickupSettleTime",
                format!("{}ms", self.delivery.pickup_settle.as_millis()),
            ),
        ];
        all.extend(self.delivery.out.effective());
        all
    }

    /// Every route's secrets files (OAuth keys and secrets, refresh tokens, client keys), by key,
    /// with the section that names them.
    pub fn secret_files(&self) -> Vec<(String, &'static str, &std::path::Path)> {
        let mut all: Vec<(String, &'static str, &std::path::Path)> = self
            .delivery
            .out
            .secret_files()
            .map(|(k, p)| (format!("SmtpSvc/{}", self.instance), *k, p.as_path()))
            .collect();
        for d in &self.domains {
            all.extend(d.out.secret_files().map(|(k, p)| {
                (
                    format!("SmtpSvc/{}/Domain/{}", self.instance, d.pattern),
                    *k,
                    p.as_path(),
                )
            }));
        }
        all
    }

    /// The remote domain section for `domain`: an exact name wins over wildcards, the longest
    /// wildcard over shorter ones.
    pub fn domain_route(&self, domain: &str) -> Option<&DomainRoute> {
        let d = domain.to_ascii_lowercase();
        self.domains
            .iter()
            .filter(|r| r.matches(&d))
            .max_by_key(|r| {
                if r.pattern.starts_with("*.") {
                    r.pattern.len()
                } else {
                    usize::MAX
                }
            })
    }

    /// Whether `domain` (lower case, no trailing dot) is one of ours.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        domain.eq_ignore_ascii_case(&self.default_domain)
            || self
                .local_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// Whether mail for `address` stays here (its domain is one of ours: the Drop folder). An
    /// address literal never does. Pickup and delivery route by this, as the relay check does.
    pub fn is_local_address(&self, address: &str) -> bool {
        let domain = address
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('.'))
            .unwrap_or_default();
        !domain.starts_with('[') && self.is_local_domain(domain)
    }
}

/// A next hop as written in SmartHost: a name (MX/A lookup) or a bracketed IP literal (no DNS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// Port, when given. Without one, delivery uses 465 when the OutboundTls policy for the hop is
    /// `implicit`, else RemoteSmtpPort.
    pub port: Option<u16>,
    /// `[a.b.c.d]`: connect to the address itself, skip DNS.
    pub literal: bool,
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.literal {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// SmartHostType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmartHostType {
    /// 0: DNS only.
    DnsOnly,
    /// 1: DNS first; the smart host when direct delivery fails temporarily.
    DnsThenSmartHost,
    /// 2: always the smart host.
    Always,
}

impl SmartHostType {
    /// The IIS number.
    pub fn code(self) -> u32 {
        match self {
            SmartHostType::DnsOnly => 0,
            SmartHostType::DnsThenSmartHost => 1,
            SmartHostType::Always => 2,
        }
    }

    /// The type an IIS number stands for.
    pub fn from_code(code: u32) -> Option<SmartHostType> {
        match code {
            0 => Some(SmartHostType::DnsOnly),
            1 => Some(SmartHostType::DnsThenSmartHost),
            2 => Some(SmartHostType::Always),
            _ => None,
        }
    }
}

/// OutboundTls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Never STARTTLS.
    None,
    /// STARTTLS when offered, certificate not verified (as Postfix's `may`).
    Opportunistic,
    /// STARTTLS with a verified certificate, or a temporary failure.
    Required,
    /// TLS from the first byte, verified. A next hop written without a port is then reached on
    /// 465; MX hosts found through DNS still on RemoteSmtpPort.
    Implicit,
}

impl TlsPolicy {
    /// The INI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsPolicy::None => "none",
            TlsPolicy::Opportunistic => "opportunistic",
            TlsPolicy::Required => "required",
            TlsPolicy::Implicit => "implicit",
        }
    }

    /// The policy an INI spelling (any case) stands for; `0` is also `none`.
    pub fn from_keyword(keyword: &str) -> Option<TlsPolicy> {
        match keyword.to_ascii_lowercase().as_str() {
            "none" | "0" => Some(TlsPolicy::None),
            "opportunistic" => Some(TlsPolicy::Opportunistic),
            "required" => Some(TlsPolicy::Required),
            "implicit" => Some(TlsPolicy::Implicit),
            _ => None,
        }
    }
}

/// Outbound AUTH credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// RouteUserName.
    pub user: String,
    /// RoutePassword.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: <hidden> }}",
            self.user
        )
    }
}

/// A `[SmtpSvc/n/Domain/<name>]` remote domain section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRoute {
    /// `example.com` or `*.example.com`, lower case.
    pub pattern: String,
    /// RelayAllowed: any client may send to this domain.
    pub relay_allowed: bool,
    /// SmartHost for this domain: next hops in order of preference (empty: none).
    pub smart_host: Vec<NextHop>,
    /// AUTH, OAuth, sender rewrite and client certificate for this domain's next hop.
    pub out: Arc<Outbound>,
    /// OutboundTls for this domain.
    pub tls: Option<TlsPolicy>,
    /// MaxOutConnectionsPerDomain for this domain's next hop.
    pub max_out: Option<u32>,
    /// MaxMessagesPerMinute for this domain's next hop (0: none).
    pub max_per_minute: Option<u32>,
}

impl DomainRoute {
    /// The effective value of every remote-domain key, in table order (secrets masked).
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        let opt = |v: Option<u32>| v.map(|n| n.to_string()).unwrap_or_default();
        let mut all = vec![
            ("RelayAllowed", u8::from(self.relay_allowed).to_string()),
            (
                "SmartHost",
                self.smart_host
                    .iter()
                    .map(|h| h.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            ("RouteUserName", self.out.user().to_string()),
            (
                "RoutePassword",
                if self.out.credentials().is_some() && self.out.password_file().is_none() {
                    "(set)".into()
                } else {
                    String::new()
                },
            ),
            (
                "RoutePasswordFile",
                self.out
                    .password_file()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "OutboundTls",
                self.tls.map(|t| t.as_str().to_string()).unwrap_or_default(),
            ),
            ("MaxOutConnectionsPerDomain", opt(self.max_out)),
            ("MaxMessagesPerMinute", opt(self.max_per_minute)),
        ];
        all.extend(self.out.effective());
        all
    }

    /// Whether `domain` (lower case) matches: exactly, or as a subdomain of a `*.` pattern.
    pub fn matches(&self, domain: &str) -> bool {
        match self.pattern.strip_prefix("*.") {
            Some(base) => {
                domain.len() > base.len() + 1
                    && domain.ends_with(base)
                    && domain.as_bytes()[domain.len() - base.len() - 1] == b'.'
            }
            None => self.pattern.eq_ignore_ascii_case(domain),
        }
    }
}

/// How mail leaves: next hops, retries, reports, pickup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// SmartHost: next hops in order of preference (empty: none). The first live one is used.
    pub smart_host: Vec<NextHop>,
    /// SmartHostType.
    pub smart_host_type: SmartHostType,
    /// RemoteSmtpPort.
    pub remote_port: u16,
    /// DnsServers (empty: the system's).
    pub dns_servers: Vec<SocketAddr>,
    /// MaxBatchedMessages.
    pub max_batched: u32,
    /// OutboundLineLengthLimit: lines longer are broken with CRLF SPACE on the wire (0: never).
    pub line_length_limit: usize,
    /// RemoteTimeout.
    pub remote_timeout: Duration,
    /// MaxOutConnections.
    pub max_out: u32,
    /// MaxOutConnectionsPerDomain: the most a destination's window grows to.
    pub max_out_per_domain: u32,
    /// DestinationInitialConcurrency: where a destination's window starts.
    pub initial_concurrency: u32,
    /// DeadDestinationFailures: consecutive connection failures that make a next-hop address dead.
    pub dead_failures: u32,
    /// RemoteConnectTimeout: the TCP connect to a next hop.
    pub connect_timeout: Duration,
    /// RemoteTransactionTimeout: one whole outbound transaction.
    pub transaction_timeout: Duration,
    /// MaxMessagesPerMinute through the smart host (0: no cap).
    pub max_per_minute: u32,
    /// OutboundTls.
    pub tls: TlsPolicy,
    /// OutboundTlsCaFile.
    pub ca_file: Option<PathBuf>,
    /// OutboundAuthAllowPlaintext.
    pub auth_plaintext: bool,
    /// AUTH, OAuth, sender rewrite and client certificate for the smart host.
    pub out: Arc<Outbound>,
    /// SmtpRemoteProgressiveRetry.
    pub retry: Vec<Duration>,
    /// SmtpRemoteDelayExpireMinutes.
    pub delay_expire: Duration,
    /// SmtpRemoteNDRExpireMinutes.
    pub ndr_expire: Duration,
    /// MasqueradeDomain.
    pub masquerade: Option<String>,
    /// SendNdrTo.
    pub send_ndr_to: Option<String>,
    /// PickupUnstuffDots.
    pub pickup_unstuff_dots: bool,
    /// PickupSettleTime.
    pub pickup_settle: Duration,
}

/// Inbound TLS, AUTH and per-client limits.
#[derive(Debug, Clone)]
pub struct SecuritySettings {
    /// SecureBindings: implicit TLS endpoints.
    pub secure_bindings: Vec<Binding>,
    /// TlsCertificateFile / TlsKeyFile, loaded and checked.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// The two files, for `check`.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// TlsEcdsaCertificateFile / TlsEcdsaKeyFile: the second (ECDSA) certificate, for `check`.
    pub tls_ecdsa_files: Option<(PathBuf, PathBuf)>,
    /// RequireTls.
    pub require_tls: bool,
    /// AuthFlags bit 1: sessions without AUTH may send.
    pub anonymous: bool,
    /// AuthFlags bit 2: AUTH LOGIN and PLAIN are offered.
    pub basic: bool,
    /// AllowPlaintextAuth.
    pub plaintext_auth: bool,
    /// UsersFile.
    pub users_file: PathBuf,
    /// RelayForAuth.
    pub relay_for_auth: bool,
    /// MaxConnectionsPerIp.
    pub max_per_ip: u32,
    /// EnableReverseDnsLookup.
    pub reverse_dns: bool,
}

impl SecuritySettings {
    /// The AuthFlags value these settings came from.
    pub fn auth_flags(&self) -> AuthFlags {
        AuthFlags {
            anonymous: self.anonymous,
            basic: self.basic,
        }
    }
}

/// AuthFlags: which kinds of client may send. IIS's NTLM bit (4) is not supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFlags {
    /// Bit 1: sessions without AUTH may send.
    pub anonymous: bool,
    /// Bit 2: Basic (AUTH LOGIN and PLAIN) is offered.
    pub basic: bool,
}

impl AuthFlags {
    /// The IIS number: the sum of the bits.
    pub fn code(self) -> u32 {
        u32::from(self.anonymous) | (u32::from(self.basic) << 1)
    }

    /// The flags an IIS number stands for: 1, 2 or 3 (some way to send is always on).
    pub fn from_code(code: u32) -> Option<AuthFlags> {
        match code {
            1..=3 => Some(AuthFlags {
                anonymous: code & 1 != 0,
                basic: code & 2 != 0,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_period_codes() {
        for code in 0..=4 {
            assert_eq!(LogPeriod::from_code(code).map(LogPeriod::code), Some(code));
        }
        assert_eq!(LogPeriod::from_code(1), Some(LogPeriod::Daily));
        assert_eq!(LogPeriod::from_code(5), None);
    }

    #[test]
    fn smart_host_type_codes() {
        for code in 0..=2 {
            assert_eq!(
                SmartHostType::from_code(code).map(SmartHostType::code),
                Some(code)
            );
        }
        assert_eq!(SmartHostType::from_code(2), Some(SmartHostType::Always));
        assert_eq!(SmartHostType::from_code(3), None);
    }

    #[test]
    fn tls_policy_keywords() {
        for p in [
            TlsPolicy::None,
            TlsPolicy::Opportunistic,
            TlsPolicy::Required,
            TlsPolicy::Implicit,
        ] {
            assert_eq!(TlsPolicy::from_keyword(p.as_str()), Some(p));
        }
        assert_eq!(
            TlsPolicy::from_keyword("IMPLICIT"),
            Some(TlsPolicy::Implicit)
        );
        assert_eq!(TlsPolicy::from_keyword("0"), Some(TlsPolicy::None));
        assert_eq!(TlsPolicy::from_keyword("starttls"), None);
    }

    #[test]
    fn auth_flags_codes() {
        for code in 1..=3 {
            assert_eq!(AuthFlags::from_code(code).map(AuthFlags::code), Some(code));
        }
        let f = AuthFlags::from_code(2).unwrap();
        assert!(f.basic && !f.anonymous);
        assert_eq!(AuthFlags::from_code(0), None);
        assert_eq!(AuthFlags::from_code(4), None, "NTLM is not supported");
    }
}
