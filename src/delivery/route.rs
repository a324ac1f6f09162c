//! Where a recipient's mail goes (docs/config.md, "Remote domain sections"): a local domain → Drop; else its remote domain
//! section's smart host; else the virtual server's smart host by SmartHostType (0 DNS only, 1 DNS first
//! then the smart host, 2 always the smart host); else DNS (MX, or A/AAAA as an implicit MX).

use std::sync::{Arc, LazyLock};

use crate::config::{NextHop, Outbound, SmartHostType, TlsPolicy, VirtualServer};

/// A route with nothing to add (no AUTH, no rewrite, no client certificate).
fn none() -> Arc<Outbound> {
    static NONE: LazyLock<Arc<Outbound>> = LazyLock::new(Arc::default);
    NONE.clone()
}

/// A set of next hops to try in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hops {
    /// The domain's MX hosts (or the domain itself), on `port`.
    Dns {
        /// The recipient domain.
        domain: String,
        /// RemoteSmtpPort.
        port: u16,
    },
    /// Configured hosts in order of preference (a SmartHost list): the first live one is used.
    List(Vec<Hops>),
    /// One configured host (a name looked up by A/AAAA, or a literal address), on `port`.
    Host {
        /// The host as configured.
        hop: NextHop,
        /// Its port.
        port: u16,
    },
}

/// The plan for a remote recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Recipients with the same key share a connection (and a per-destination connection limit).
    pub key: String,
    /// Where to go first.
    pub primary: Hops,
    /// SmartHostType 1: the smart host, when the primary hops fail temporarily.
    pub fallback: Option<Hops>,
    /// TLS policy toward these hops.
    pub tls: TlsPolicy,
    /// AUTH, OAuth, sender rewrite, client certificate and provider preset toward these hops.
    pub out: Arc<Outbound>,
    /// The most connections toward these hops at once (MaxOutConnectionsPerDomain, or the domain
    /// section's own).
    pub max_out: u32,
    /// The most messages a minute toward these hops (MaxMessagesPerMinute; 0: no cap).
    pub per_minute: u32,
}

/// Where a recipient goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A local domain: the Drop folder.
    Local,
    /// A next hop.
    Remote(Remote),
}

/// The domain of an address, lower case, without a trailing dot.
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default()
}

fn host_hops(vs: &VirtualServer, hop: &NextHop, tls: TlsPolicy) -> Hops {
    let default_port = if tls == TlsPolicy::Implicit {
        465
    } else {
        vs.delivery.remote_port
    };
    Hops::Host {
        port: hop.port.unwrap_or(default_port),
        hop: hop.clone(),
    }
}

/// A SmartHost list: one host, or the list in order.
fn hosts_hops(vs: &VirtualServer, hops: &[NextHop], tls: TlsPolicy) -> Hops {
    match hops {
        [one] => host_hops(vs, one, tls),
        many => Hops::List(many.iter().map(|h| host_hops(vs, h, tls)).collect()),
    }
}

fn key_of(h: &Hops) -> String {
    match h {
        Hops::Dns { domain, port } => format!("mx:{domain}:{port}"),
        Hops::Host { hop, port } => format!("host:{}:{port}", hop.host),
        Hops::List(list) => {
            let hosts: Vec<String> = list
                .iter()
                .map(|h| key_of(h).trim_start_matches("host:").to_string())
                .collect();
            format!("host:{}", hosts.join(";"))
        }
    }
}

/// Routes one recipient address.
pub fn route(vs: &VirtualServer, address: &str) -> Route {
    if vs.is_local_address(address) {
        return Route::Local;
    }
    let domain = domain_of(address);
    let d = &vs.delivery;
    let section = vs.domain_route(&domain);
    let max_out = section
        .and_then(|s| s.max_out)
        .unwrap_or(d.max_out_per_domain);
    let own_rate = section.and_then(|s| s.max_per_minute);
    let tls = section.and_then(|s| s.tls).unwrap_or(d.tls);
    // An address literal goes to that address.
    if let Some(lit) = domain.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let hop = NextHop {
            host: lit.trim_start_matches("ipv6:").to_string(),
            port: None,
            literal: true,
        };
        let primary = host_hops(vs, &hop, tls);
        return Route::Remote(Remote {
            key: key_of(&primary),
            primary,
            fallback: None,
            tls,
            out: none(),
            max_out,
            per_minute: 0,
        });
    }
    if let Some(s) = section
        && !s.smart_host.is_empty()
    {
        let primary = hosts_hops(vs, &s.smart_host, tls);
        return Route::Remote(Remote {
            key: key_of(&primary),
            primary,
            fallback: None,
            tls,
            out: s.out.clone(),
            max_out,
            per_minute: own_rate.unwrap_or(0),
        });
    }
    let dns = Hops::Dns {
        domain: domain.clone(),
        port: d.remote_port,
    };
    let section_out = section.map(|s| s.out.clone()).filter(|o| !o.is_empty());
    let sh = &d.smart_host;
    // The server's MaxMessagesPerMinute is the smart host's.
    let always = !sh.is_empty() && d.smart_host_type == SmartHostType::Always;
    let per_minute = own_rate.unwrap_or(if always { d.max_per_minute } else { 0 });
    let (primary, fallback, out) = match d.smart_host_type {
        _ if sh.is_empty() => (dns, None, section_out.unwrap_or_else(none)),
        SmartHostType::Always => (hosts_hops(vs, sh, tls), None, d.out.clone()),
        SmartHostType::DnsThenSmartHost => (
            dns,
            Some(hosts_hops(vs, sh, tls)),
            section_out.unwrap_or_else(|| d.out.clone()),
        ),
        SmartHostType::DnsOnly => (dns, None, section_out.unwrap_or_else(none)),
    };
    Route::Remote(Remote {
        key: key_of(&primary),
        primary,
        fallback,
        tls,
        out,
        max_out,
        per_minute,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DomainRoute, parse_next_hops};
    use crate::testutil::test_server;

    #[test]
    fn local_dns_and_smart_hosts() {
        let mut vs = test_server();
        assert_eq!(route(&vs, "u@LOCAL.test"), Route::Local);
        let Route::Remote(r) = route(&vs, "u@Remote.test") else {
            panic!()
        };
        assert_eq!(
            r.primary,
            Hops::Dns {
                domain: "remote.test".into(),
                port: 25
            }
        );
        assert_eq!(r.key, "mx:remote.test:25");
        assert_eq!(r.fallback, None);

        vs.delivery.smart_host = parse_next_hops("[127.0.0.1]:2626").unwrap();
        vs.delivery.smart_host_type = SmartHostType::Always;
        let Route::Remote(r) = route(&vs, "u@remote.test") else {
            panic!()
        };
        assert_eq!(r.key, "host:127.0.0.1:2626");
        let Route::Remote(r2) = route(&vs, "v@other.test") else {
            panic!()
        };
        assert_eq!(
            r.key, r2.key,
            "every domain shares the smart host's connections"
        );

        vs.delivery.smart_host_type = SmartHostType::DnsThenSmartHost;
        let Route::Remote(r) = route(&vs, "u@remote.test") else {
            panic!()
        };
        assert!(matches!(r.primary, Hops::Dns { .. }));
        assert!(matches!(r.fallback, Some(Hops::Host { port: 2626, .. })));

        vs.delivery.smart_host_type = SmartHostType::DnsOnly;
        let Route::Remote(r) = route(&vs, "u@remote.test") else {
            panic!()
        };
        assert!(r.fallback.is_none() && matches!(r.primary, Hops::Dns { .. }));
    }

    #[test]
    fn domain_sections_override() {
        let mut vs = test_server();
        vs.delivery.smart_host = parse_next_hops("smart.test").unwrap();
        vs.delivery.smart_host_type = SmartHostType::Always;
        vs.domains.push(DomainRoute {
            pattern: "*.corp.test".into(),
            relay_allowed: false,
            smart_host: parse_next_hops("relay.corp.test:587").unwrap(),
            out: Arc::new(Outbound {
                auth: Some(crate::config::OutboundAuth::Password {
                    credentials: crate::config::Credentials {
                        user: "u".into(),
                        password: "p".into(),
                    },
                    only: None,
                }),
                ..Outbound::default()
            }),
            tls: Some(TlsPolicy::Required),
            max_out: Some(3),
            max_per_minute: Some(60),
        });
        let Route::Remote(r) = route(&vs, "x@a.corp.test") else {
            panic!()
        };
        assert_eq!(
            r.primary,
            Hops::Host {
                hop: NextHop {
                    host: "relay.corp.test".into(),
                    port: Some(587),
                    literal: false
                },
                port: 587
            }
        );
        assert_eq!(r.tls, TlsPolicy::Required);
        assert_eq!(r.out.user(), "u");
        assert_eq!(r.max_out, 3, "the section's MaxOutConnectionsPerDomain");
        assert_eq!(r.per_minute, 60, "the section's MaxMessagesPerMinute");
        let Route::Remote(r) = route(&vs, "x@[127.0.0.9]") else {
            panic!()
        };
        assert_eq!(
            r.primary,
            Hops::Host {
                hop: NextHop {
                    host: "127.0.0.9".into(),
                    port: None,
                    literal: true
                },
                port: 25
            }
        );
    }
}
