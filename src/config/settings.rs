//! Typed settings of one SMTP virtual server, parsed once at start-up; nothing reads INI keys later.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::policy::ipnet::IpList;

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
    /// HopCount.
    pub hop_count: u32,
    /// RelayIpList.
    pub relay_ip_list: IpList,
    /// IPGrantByDefault.
    pub ip_grant_by_default: bool,
    /// IPDeny.
    pub ip_deny: IpList,
    /// IPGrant.
    pub ip_grant: IpList,
    /// Protocol log.
    pub log: LogSettings,
}

impl VirtualServer {
    /// The effective value of every key, in table order, as INI text would write it.
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        let p = |p: &PathBuf| p.display().to_string();
        let list = |v: &[String]| v.join(", ");
        let bindings = self
            .bindings
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        vec![
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
            ("HopCount", self.hop_count.to_string()),
            ("RelayIpList", self.relay_ip_list.to_string()),
            (
                "IPGrantByDefault",
                u8::from(self.ip_grant_by_default).to_string(),
            ),
            ("IPDeny", self.ip_deny.to_string()),
            ("IPGrant", self.ip_grant.to_string()),
            ("LogType", u8::from(self.log.enabled).to_string()),
            ("LogFileDirectory", p(&self.log.directory)),
            ("LogFilePeriod", self.log.period.code().to_string()),
            ("LogFileTruncateSize", self.log.truncate_size.to_string()),
        ]
    }

    /// Whether `domain` (lower case, no trailing dot) is one of ours.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        domain.eq_ignore_ascii_case(&self.default_domain)
            || self
                .local_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
    }
}
