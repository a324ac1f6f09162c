//! Every key mailroot understands: its IIS metabase name, unit, default and meaning, in one table.
//! `mailroot check`, the loader and docs/config.md all follow this order.

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct KeyDef {
    /// The IIS metabase property name, spelled exactly so (matched case-insensitively).
    pub name: &'static str,
    /// The default as it would be written in the INI; empty means "none" or "derived" (see `meaning`).
    pub default: &'static str,
    /// One line for `mailroot check` and the shipped INI.
    pub meaning: &'static str,
}

/// The keys of a `[SmtpSvc/n]` virtual server section (also allowed in `[SmtpSvc]`, inherited by all).
pub const SERVER_KEYS: &[KeyDef] = &[
    KeyDef {
        name: "ServerBindings",
        default: ":25",
        meaning: "IP:port list to listen on; `:25` = all addresses, `[::1]:25` for IPv6",
    },
    KeyDef {
        name: "FullyQualifiedDomainName",
        default: "",
        meaning: "name in the banner, EHLO reply and Received headers (default: the machine's host name)",
    },
    KeyDef {
        name: "MailRoot",
        default: "mailroot",
        meaning: "folder holding Pickup, Queue, Badmail, Drop and SortTemp",
    },
    KeyDef {
        name: "PickupDirectory",
        default: "",
        meaning: "override for <MailRoot>/Pickup",
    },
    KeyDef {
        name: "QueueDirectory",
        default: "",
        meaning: "override for <MailRoot>/Queue",
    },
    KeyDef {
        name: "BadMailDirectory",
        default: "",
        meaning: "override for <MailRoot>/Badmail",
    },
    KeyDef {
        name: "DropDirectory",
        default: "",
        meaning: "override for <MailRoot>/Drop",
    },
    KeyDef {
        name: "DefaultDomain",
        default: "",
        meaning: "the local domain: its mail goes to Drop (default: FullyQualifiedDomainName)",
    },
    KeyDef {
        name: "LocalDomains",
        default: "",
        meaning: "further local or alias domains, comma-separated",
    },
    KeyDef {
        name: "MaxConnections",
        default: "2000",
        meaning: "concurrent inbound sessions (IIS: unlimited)",
    },
    KeyDef {
        name: "ConnectionTimeout",
        default: "600",
        meaning: "seconds a client may stay silent (or take for one command line)",
    },
    KeyDef {
        name: "MaxMessageSize",
        default: "2097152",
        meaning: "bytes per message, advertised in EHLO SIZE; 0 = unlimited",
    },
    KeyDef {
        name: "MaxSessionSize",
        default: "10485760",
        meaning: "bytes of message data per connection; 0 = unlimited",
    },
    KeyDef {
        name: "MaxRecipients",
        default: "100",
        meaning: "recipients per message",
    },
    KeyDef {
        name: "MaxSmtpErrors",
        default: "10",
        meaning: "protocol errors per session before 421 and close",
    },
    KeyDef {
        name: "AllowBareLfInCommands",
        default: "0",
        meaning: "1 = a command line may end with a bare LF or hold a bare CR (a legacy device that needs it); 0 = such a line is refused with 500 5.5.2 (a filter in front that ends lines only at CRLF would read it differently)",
    },
    KeyDef {
        name: "HopCount",
        default: "15",
        meaning: "most Received headers before a message is refused as a loop",
    },
    KeyDef {
        name: "RelayIpList",
        default: "127.0.0.1, ::1",
        meaning: "IPs and CIDR ranges that may relay to non-local domains",
    },
    KeyDef {
        name: "IPGrantByDefault",
        default: "1",
        meaning: "1 = all may connect except IPDeny; 0 = none except IPGrant",
    },
    KeyDef {
        name: "IPDeny",
        default: "",
        meaning: "IPs, CIDR ranges and host names (*.domain) refused (when IPGrantByDefault = 1)",
    },
    KeyDef {
        name: "IPGrant",
        default: "",
        meaning: "IPs, CIDR ranges and host names (*.domain) admitted (when IPGrantByDefault = 0)",
    },
    KeyDef {
        name: "ProxyProtocolFrom",
        default: "",
        meaning: "IPs and CIDR ranges of load balancers whose connections start with a PROXY protocol header (v1 or v2) naming the real client; empty = none",
    },
    KeyDef {
        name: "LogType",
        default: "1",
        meaning: "W3C extended protocol log: 1 = on, 0 = off",
    },
    KeyDef {
        name: "LogFileDirectory",
        default: "logs",
        meaning: "folder of the protocol log; files go to <dir>/SMTPSVC<n>/",
    },
    KeyDef {
        name: "LogFilePeriod",
        default: "1",
        meaning: "new log file: 0 = by size, 1 = daily, 2 = weekly, 3 = monthly, 4 = hourly",
    },
    KeyDef {
        name: "LogFileTruncateSize",
        default: "20480000",
        meaning: "bytes per log file when LogFilePeriod = 0",
    },
    KeyDef {
        name: "ServerLogFile",
        default: "",
        meaning: "file the server's own log (starts, errors, deliveries) is appended to; default: standard error (journald under systemd). Read from the first virtual server",
    },
    KeyDef {
        name: "MetricsBinding",
        default: "",
        meaning: "IP:port serving Prometheus metrics at /metrics and a JSON summary at /status (e.g. 127.0.0.1:9325); empty = off. Read from the first virtual server",
    },
    KeyDef {
        name: "SecureBindings",
        default: "",
        meaning: "IP:port list for implicit TLS (TLS from the first byte, RFC 8314, e.g. :465); needs a certificate",
    },
    KeyDef {
        name: "TlsCertificateFile",
        default: "",
        meaning: "PEM file with the server certificate chain; enables STARTTLS",
    },
    KeyDef {
        name: "TlsKeyFile",
        default: "",
        meaning: "PEM file with the private key (RSA, ECDSA or Ed25519) of TlsCertificateFile",
    },
    KeyDef {
        name: "TlsEcdsaCertificateFile",
        default: "",
        meaning: "a second server certificate chain (ECDSA), for clients that can use it: Windows 7 / Server 2008 R2 find no cipher with an RSA one (mailroot; needs TlsCertificateFile)",
    },
    KeyDef {
        name: "TlsEcdsaKeyFile",
        default: "",
        meaning: "PEM file with the ECDSA private key of TlsEcdsaCertificateFile",
    },
    KeyDef {
        name: "RequireTls",
        default: "0",
        meaning: "1 = MAIL, RCPT, DATA and AUTH only after STARTTLS (IIS: Requires TLS encryption)",
    },
    KeyDef {
        name: "AuthFlags",
        default: "1",
        meaning: "1 = anonymous, 2 = Basic (AUTH LOGIN and PLAIN) required, 3 = both",
    },
    KeyDef {
        name: "AllowPlaintextAuth",
        default: "0",
        meaning: "1 = offer AUTH without TLS too (passwords then travel in clear)",
    },
    KeyDef {
        name: "UsersFile",
        default: "users",
        meaning: "file of name:argon2id-hash lines for AUTH (edit with `mailroot user add|del|list`)",
    },
    KeyDef {
        name: "RelayForAuth",
        default: "1",
        meaning: "1 = an authenticated client may relay to any domain",
    },
    KeyDef {
        name: "EnableReverseDnsLookup",
        default: "0",
        meaning: "1 = look up each client's name (PTR, confirmed forward) for the Received header",
    },
    KeyDef {
        name: "MaxConnectionsPerIp",
        default: "50",
        meaning: "concurrent sessions per client address (addresses in RelayIpList are exempt)",
    },
    KeyDef {
        name: "SmartHost",
        default: "",
        meaning: "next hop for remote mail: host, host:port, [a.b.c.d] or [a.b.c.d]:port (brackets skip DNS)",
    },
    KeyDef {
        name: "SmartHostType",
        default: "0",
        meaning: "0 = DNS only (smart host unused), 1 = DNS first then the smart host on failure, 2 = always the smart host",
    },
    KeyDef {
        name: "RemoteSmtpPort",
        default: "25",
        meaning: "TCP port for DNS-routed delivery, and for a next hop written without :port",
    },
    KeyDef {
        name: "DnsServers",
        default: "",
        meaning: "DNS servers for MX lookups, ip or ip:port, comma-separated (default: the system's)",
    },
    KeyDef {
        name: "OutboundLineLengthLimit",
        default: "998",
        meaning: "octets: longer lines are broken with CRLF SPACE when sent to a next hop (as Postfix's smtp_line_length_limit); 0 = never (64 to 998)",
    },
    KeyDef {
        name: "MaxBatchedMessages",
        default: "20",
        meaning: "messages sent over one outbound connection before it is closed",
    },
    KeyDef {
        name: "RemoteTimeout",
        default: "600",
        meaning: "seconds to wait for each reply of the next hop",
    },
    KeyDef {
        name: "MaxOutConnections",
        default: "1000",
        meaning: "concurrent outbound connections",
    },
    KeyDef {
        name: "MaxOutConnectionsPerDomain",
        default: "100",
        meaning: "most concurrent outbound connections per destination (a domain's MX set, a smart host or a domain route): the ceiling of its window",
    },
    KeyDef {
        name: "DestinationInitialConcurrency",
        default: "5",
        meaning: "connections a destination's window starts with; it grows by one per delivery up to MaxOutConnectionsPerDomain and shrinks when the next hop refuses or throttles",
    },
    KeyDef {
        name: "DeadDestinationFailures",
        default: "3",
        meaning: "consecutive connection failures after which a next-hop address is dead until its next retry time",
    },
    KeyDef {
        name: "RemoteConnectTimeout",
        default: "30",
        meaning: "seconds allowed for the TCP connect to a next hop",
    },
    KeyDef {
        name: "RemoteTransactionTimeout",
        default: "1800",
        meaning: "seconds allowed for one whole outbound transaction (MAIL to the reply after the data), however the next hop drips its replies",
    },
    KeyDef {
        name: "MaxMessagesPerMinute",
        default: "0",
        meaning: "most messages a minute sent through the smart host (0 = no cap); a domain section may set its own for its route",
    },
    KeyDef {
        name: "OutboundTls",
        default: "opportunistic",
        meaning: "none, opportunistic (STARTTLS when offered), required (verified STARTTLS) or implicit (TLS from the first byte; 465 for a next hop written without :port)",
    },
    KeyDef {
        name: "OutboundTlsCaFile",
        default: "",
        meaning: "PEM file of extra trusted CA certificates for outbound TLS (besides the system's)",
    },
    KeyDef {
        name: "OutboundAuthAllowPlaintext",
        default: "0",
        meaning: "1 = send RouteUserName/RoutePassword even without TLS",
    },
    KeyDef {
        name: "RouteUserName",
        default: "",
        meaning: "user name for AUTH at the smart host; with OAuth, the mailbox mail is sent as",
    },
    KeyDef {
        name: "RoutePassword",
        default: "",
        meaning: "password for AUTH at the smart host",
    },
    KeyDef {
        name: "RoutePasswordFile",
        default: "",
        meaning: "file whose first line is RoutePassword (the INI then holds no password)",
    },
    KeyDef {
        name: "SmtpRemoteProgressiveRetry",
        default: "15,30,60,240",
        meaning: "minutes before the 1st, 2nd, 3rd and every later retry (30s, 2m, 1h also accepted)",
    },
    KeyDef {
        name: "SmtpRemoteDelayExpireMinutes",
        default: "720",
        meaning: "minutes after which the sender gets one delay notification",
    },
    KeyDef {
        name: "SmtpRemoteNDRExpireMinutes",
        default: "2880",
        meaning: "minutes after which undelivered mail is returned with a non-delivery report",
    },
    KeyDef {
        name: "MasqueradeDomain",
        default: "",
        meaning: "replaces the domain of local senders in MAIL FROM, and names the postmaster of reports",
    },
    KeyDef {
        name: "SendNdrTo",
        default: "",
        meaning: "address that gets a copy of every non-delivery report",
    },
    KeyDef {
        name: "PickupUnstuffDots",
        default: "1",
        meaning: "1 = a line starting with \".\" in a pickup file loses one dot (IIS); 0 = files are not dot-stuffed",
    },
    KeyDef {
        name: "PickupSettleTime",
        default: "1s",
        meaning: "how long a pickup file must be unchanged before it is taken (mailroot; writers should write then rename)",
    },
];

/// The keys of a `[SmtpSvc/n/Domain/<name>]` remote domain section.
pub const DOMAIN_KEYS: &[KeyDef] = &[
    KeyDef {
        name: "RelayAllowed",
        default: "0",
        meaning: "1 = any client may send mail to this domain (IIS: allow incoming mail to be relayed to this domain)",
    },
    KeyDef {
        name: "SmartHost",
        default: "",
        meaning: "route all mail for this domain to this host (same forms as the server's SmartHost)",
    },
    KeyDef {
        name: "RouteUserName",
        default: "",
        meaning: "user name for AUTH at this domain's next hop",
    },
    KeyDef {
        name: "RoutePassword",
        default: "",
        meaning: "password for AUTH at this domain's next hop",
    },
    KeyDef {
        name: "RoutePasswordFile",
        default: "",
        meaning: "file whose first line is this domain's RoutePassword",
    },
    KeyDef {
        name: "OutboundTls",
        default: "",
        meaning: "TLS policy for this domain (default: the server's OutboundTls)",
    },
    KeyDef {
        name: "MaxOutConnectionsPerDomain",
        default: "",
        meaning: "most concurrent connections toward this domain's next hop (default: the server's MaxOutConnectionsPerDomain)",
    },
    KeyDef {
        name: "MaxMessagesPerMinute",
        default: "",
        meaning: "most messages a minute sent toward this domain's next hop (0 = no cap; default: the server's, when the route is its smart host)",
    },
];

/// The keys of one route, allowed in a virtual server section (for the route through its SmartHost)
/// and in a remote domain section (for that domain's route); `mailroot check` prints them after the
/// section's other keys. docs/microsoft365.md and docs/google.md show them at work.
pub const ROUTE_KEYS: &[KeyDef] = &[
    KeyDef {
        name: "SmartHostProvider",
        default: "",
        meaning: "microsoft365 or google: a preset for SmartHost, SmartHostType, OutboundTls and the limits (any key written explicitly wins)",
    },
    KeyDef {
        name: "OutboundAuthMechanism",
        default: "auto",
        meaning: "auto (XOAUTH2 with OAuth keys, else PLAIN or LOGIN), plain, login or xoauth2",
    },
    KeyDef {
        name: "OAuthTenant",
        default: "",
        meaning: "Microsoft Entra ID tenant (id or domain): the token endpoint https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token",
    },
    KeyDef {
        name: "OAuthClientId",
        default: "",
        meaning: "OAuth application (client) id",
    },
    KeyDef {
        name: "OAuthClientSecret",
        default: "",
        meaning: "OAuth client secret (prefer OAuthClientSecretFile)",
    },
    KeyDef {
        name: "OAuthClientSecretFile",
        default: "",
        meaning: "file whose first line is the OAuth client secret",
    },
    KeyDef {
        name: "OAuthCertificateFile",
        default: "",
        meaning: "PEM certificate registered with the app: tokens are requested with a signed client assertion instead of a secret",
    },
    KeyDef {
        name: "OAuthKeyFile",
        default: "",
        meaning: "PEM RSA private key of OAuthCertificateFile",
    },
    KeyDef {
        name: "OAuthServiceAccountFile",
        default: "",
        meaning: "Google service-account JSON key (domain-wide delegation): tokens for the mailbox RouteUserName",
    },
    KeyDef {
        name: "OAuthRefreshTokenFile",
        default: "",
        meaning: "file holding a delegated refresh token (with OAuthClientId); a rotated token is written back",
    },
    KeyDef {
        name: "OAuthTokenUrl",
        default: "",
        meaning: "token endpoint override (sovereign clouds, other providers)",
    },
    KeyDef {
        name: "OAuthScope",
        default: "",
        meaning: "scope override (default https://outlook.office365.com/.default; google: https://mail.google.com/)",
    },
    KeyDef {
        name: "RewriteSender",
        default: "",
        meaning: "envelope sender of mail leaving this way (a null sender stays null); the Queue, .sta and W3C log keep the original",
    },
    KeyDef {
        name: "RewriteFromHeader",
        default: "0",
        meaning: "1 = the From header's address becomes RewriteSender too, with Reply-To: <original From> added when there is none",
    },
    KeyDef {
        name: "OutboundTlsCertificateFile",
        default: "",
        meaning: "PEM client certificate chain presented in outbound TLS (certificate-based connectors)",
    },
    KeyDef {
        name: "OutboundTlsKeyFile",
        default: "",
        meaning: "PEM private key of OutboundTlsCertificateFile",
    },
];

/// Looks a virtual server key (its own or a route key) up case-insensitively.
pub fn server_key(name: &str) -> Option<&'static KeyDef> {
    SERVER_KEYS
        .iter()
        .chain(ROUTE_KEYS)
        .find(|k| k.name.eq_ignore_ascii_case(name))
}

/// Looks a remote-domain key (its own or a route key) up case-insensitively.
pub fn domain_key(name: &str) -> Option<&'static KeyDef> {
    DOMAIN_KEYS
        .iter()
        .chain(ROUTE_KEYS)
        .find(|k| k.name.eq_ignore_ascii_case(name))
}
