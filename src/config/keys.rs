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
        meaning: "IPs and CIDR ranges refused (when IPGrantByDefault = 1)",
    },
    KeyDef {
        name: "IPGrant",
        default: "",
        meaning: "IPs and CIDR ranges admitted (when IPGrantByDefault = 0)",
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
];

/// Looks a key up case-insensitively.
pub fn server_key(name: &str) -> Option<&'static KeyDef> {
    SERVER_KEYS
        .iter()
        .find(|k| k.name.eq_ignore_ascii_case(name))
}
