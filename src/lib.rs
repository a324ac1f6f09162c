//! mailroot: a small, fast, single-binary SMTP relay that replaces the IIS 6.0 SMTP Service.
//!
//! A message's walk through the crate (docs/architecture.md draws the rooms, their layers and this
//! walk in full):
//!
//! socket → [`net::listener`] (accept) → [`server::admission`] (connection control, MaxConnections)
//! → [`net::pool`] (a session thread) → [`server::connection`] (bytes in and out, timeouts) ⇄
//! [`smtp::session`] (commands and replies; asks [`policy`] who may relay; builds the typed
//! [`smtp::envelope`]) → [`smtp::data`] (the CRLF.CRLF scanner) → [`server::intake`] (size limit,
//! [`smtp::headers`]) → [`mailroot::store`] (write the file; [`mailroot::commit`] makes it durable,
//! shared with every message ready at the same moment, and the store hands the envelope to
//! [`delivery::engine`]) → 250. Then [`delivery::attempt`] → [`delivery::route`] →
//! [`delivery::client`] (the next hop), or [`delivery::report`] (reports, Badmail). Settings come from
//! [`config`], parsed once; the protocol log is [`logging::w3c`]; platform differences live in [`os`].
//! An administrator's queue commands are [`admin`]'s; [`sendmail`] is the local programs' way in
//! (standard input into the Pickup folder).
//! [`import_iis`] turns an IIS 6 MetaBase.xml into that configuration (`mailroot import-iis`).

#![warn(missing_docs)]

pub mod admin;
pub mod config;
pub mod delivery;
pub mod id;
pub mod import_iis;
pub mod logging;
pub mod mailroot;
pub mod metrics;
pub mod net;
pub mod oauth;
pub mod os;
pub mod policy;
pub mod sendmail;
pub mod server;
pub mod smtp;
pub mod time;

#[cfg(test)]
pub(crate) mod testutil {
    use crate::config::IpList;
    use crate::config::{
        Binding, DeliverySettings, Dirs, LogPeriod, LogSettings, SmartHostType, TlsPolicy,
        VirtualServer,
    };
    use std::path::PathBuf;
    use std::time::Duration;

    /// A virtual server for unit tests: local.test (+ alias.test) is local, 127.0.0.1 may relay.
    pub fn test_server() -> VirtualServer {
        let root = PathBuf::from("/nonexistent/mailroot");
        VirtualServer {
            instance: 1,
            bindings: vec![Binding { ip: None, port: 25 }],
            fqdn: "mx.local.test".into(),
            dirs: Dirs::under(&root),
            default_domain: "local.test".into(),
            local_domains: vec!["alias.test".into()],
            max_connections: 2000,
            connection_timeout: Duration::from_secs(600),
            max_message_size: 2_097_152,
            max_session_size: 10_485_760,
            max_recipients: 100,
            max_smtp_errors: 10,
            allow_bare_lf_in_commands: false,
            hop_count: 15,
            relay_ip_list: IpList::parse("127.0.0.1, ::1").unwrap(),
            ip_grant_by_default: true,
            metrics_binding: None,
            ip_deny: crate::config::HostList::default(),
            ip_grant: crate::config::HostList::default(),
            proxy_protocol_from: IpList::default(),
            log: LogSettings {
                enabled: false,
                directory: PathBuf::from("logs"),
                period: LogPeriod::Daily,
                truncate_size: 20_480_000,
                server_log: None,
            },
            delivery: DeliverySettings {
                smart_host: Vec::new(),
                smart_host_type: SmartHostType::DnsOnly,
                remote_port: 25,
                dns_servers: Vec::new(),
                max_batched: 20,
                line_length_limit: 998,
                remote_timeout: Duration::from_secs(600),
                max_out: 1000,
                max_out_per_domain: 100,
                initial_concurrency: 5,
                dead_failures: 3,
                connect_timeout: Duration::from_secs(30),
                transaction_timeout: Duration::from_secs(1800),
                max_per_minute: 0,
                tls: TlsPolicy::Opportunistic,
                ca_file: None,
                auth_plaintext: false,
                out: Default::default(),
                retry: vec![
                    Duration::from_secs(900),
                    Duration::from_secs(1800),
                    Duration::from_secs(3600),
                    Duration::from_secs(14400),
                ],
                delay_expire: Duration::from_secs(720 * 60),
                ndr_expire: Duration::from_secs(2880 * 60),
                masquerade: None,
                send_ndr_to: None,
                pickup_unstuff_dots: true,
                pickup_settle: Duration::from_secs(1),
            },
            domains: Vec::new(),
            security: crate::config::SecuritySettings {
                secure_bindings: Vec::new(),
                tls: None,
                tls_files: None,
                tls_ecdsa_files: None,
                require_tls: false,
                anonymous: true,
                basic: false,
                plaintext_auth: false,
                users_file: PathBuf::from("users"),
                relay_for_auth: true,
                max_per_ip: 50,
                reverse_dns: false,
            },
        }
    }
}
