//! The synchronous DNS facade used by the delivery threads: MX lookups (RFC 5321 §5.1, RFC 7505 null
//! MX), address lookups (A and AAAA) and the combined "where does mail for this domain go" answer.
//!
//! hickory-resolver 0.26 is async only, so one [`Dns`] owns a small tokio runtime (one worker thread,
//! `dns-io`) and a resolver; any plain thread calls the blocking methods, and many threads may do so at
//! once (shared in an `Arc`: one cache, one IO thread, no lock around the runtime). Both are made at
//! the first lookup: a relay whose smart host is an address never starts them, and an idle server
//! keeps neither thread nor cache. A system configuration that cannot be read shows then, as a
//! temporary DNS failure with the reason in the log and in the delivery state. Every name is made
//! absolute (a trailing dot) before the lookup, so no resolv.conf search list ever applies. Timeouts and
//! attempts come from [`Dns::new`]; a lookup against a server that never answers takes about
//! `timeout × attempts` per query (an MX lookup and the address lookups of each host are separate
//! queries), so the caller budgets delivery time with that in mind.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

/// Why a lookup gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN): permanent, 5.1.2.
    NxDomain,
    /// The domain publishes a null MX (`MX 0 .`, RFC 7505): it accepts no mail. Permanent, 5.1.10.
    NullMx,
    /// The name exists but has no record of the asked type (NOERROR with no answer). Temporary on its
    /// own; [`Dns::targets`] turns a missing MX into the implicit MX.
    NoData,
    /// Anything that may go away by itself: timeout, SERVFAIL, REFUSED, network or protocol errors.
    /// The text says what happened, for logs and DSNs.
    Temporary(String),
}

impl DnsError {
    /// True for the answers that will not change on a retry: NXDOMAIN and a null MX.
    pub fn is_permanent(&self) -> bool {
        matches!(self, DnsError::NxDomain | DnsError::NullMx)
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::NxDomain => f.write_str("domain does not exist (NXDOMAIN, permanent)"),
            DnsError::NullMx => {
                f.write_str("domain does not accept mail (null MX, RFC 7505, permanent)")
            }
            DnsError::NoData => f.write_str("no DNS record of the requested type (temporary)"),
            DnsError::Temporary(why) => write!(f, "temporary DNS failure: {why}"),
        }
    }
}

impl std::error::Error for DnsError {}

/// One place to deliver to: an MX host (or the domain itself as the implicit MX) and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host name, without the trailing dot.
    pub host: String,
    /// The MX preference (lower is tried first); 0 for the implicit MX.
    pub preference: u16,
    /// The host's IPv4 then IPv6 addresses; empty when its address lookup failed.
    pub addrs: Vec<IpAddr>,
}

/// A blocking resolver shared by all delivery threads (`Send + Sync`; put it in an `Arc`).
pub struct Dns {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    attempts: usize,
    /// The runtime and resolver, made at the first lookup (or why they could not be).
    live: std::sync::OnceLock<Result<Live, String>>,
}

struct Live {
    // Declared before `rt` so the resolver (and its handles into the runtime) is dropped first.
    resolver: TokioResolver,
    rt: tokio::runtime::Runtime,
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dns").finish_non_exhaustive()
    }
}

impl Dns {
    /// A resolver asking `servers` (each over UDP, then TCP when an answer is truncated, each on its own
    /// port), or the system configuration (resolv.conf; the registry on Windows) when `servers` is
    /// empty. `timeout` is per query and `attempts` the number of tries per server; both override the
    /// system configuration's values.
    pub fn new(servers: &[SocketAddr], timeout: Duration, attempts: usize) -> Result<Dns, String> {
        Ok(Dns {
            servers: servers.to_vec(),
            timeout,
            attempts,
            live: std::sync::OnceLock::new(),
        })
    }

    /// The runtime and resolver, made on first use.
    fn live(&self) -> Result<&Live, DnsError> {
        self.live
            .get_or_init(|| Live::start(&self.servers, self.timeout, self.attempts))
            .as_ref()
            .map_err(|e| DnsError::Temporary(e.clone()))
    }
}

impl Live {
    fn start(servers: &[SocketAddr], timeout: Duration, attempts: usize) -> Result<Live, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dns-io")
            .enable_all()
            .build()
            .map_err(|e| format!("DNS runtime: {e}"))?;
        let mut builder = if servers.is_empty() {
            Resolver::builder_tokio().map_err(|e| format!("DNS system configuration: {e}"))?
        } else {
            let name_servers = servers
                .iter()
                .map(|sa| {
                    let mut ns = NameServerConfig::udp_and_tcp(sa.ip());
                    // In 0.26 the port lives on each connection, not on the server.
                    for c in ns.connections.iter_mut() {
                        c.port = sa.port();
                    }
                    ns
                })
                .collect();
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                TokioRuntimeProvider::default(),
            )
        };
        let o = builder.options_mut();
        o.timeout = timeout;
        o.attempts = attempts.max(1);
        // `ips` queries A and AAAA itself; this only matters if someone calls lookup_ip later.
        o.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // Named servers (DnsServers) are the whole truth; the hosts file speaks only for the
        // system's own configuration.
        if !servers.is_empty() {
            o.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        }
        let resolver = builder.build().map_err(|e| format!("DNS resolver: {e}"))?;
        Ok(Live { resolver, rt })
    }
}

impl Dns {
    /// The MX hosts of `domain`, lowest preference first and in random order among equal preferences
    /// (RFC 5321 §5.1), names without the trailing dot. A domain whose only MX is `.` (RFC 7505) gives
    /// [`DnsError::NullMx`]; a domain without MX records gives [`DnsError::NoData`].
    pub fn mx(&self, domain: &str) -> Result<Vec<(u16, String)>, DnsError> {
        let name = absolute(domain)?;
        let live = self.live()?;
        let lookup = live
            .rt
            .block_on(live.resolver.mx_lookup(name))
            .map_err(classify)?;
        let all: Vec<(u16, String)> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                _ => None,
            })
            .collect();
        if all.is_empty() {
            return Err(DnsError::NoData);
        }
        // "." can never be delivered to: alone it is a null MX; beside real hosts it is skipped.
        let mut keyed: Vec<(u16, u64, String)> = all
            .into_iter()
            .filter(|(_, host)| host != ".")
            .map(|(pref, host)| {
                let host = host.strip_suffix('.').unwrap_or(&host).to_string();
                (pref, crate::os::random_u64(), host)
            })
            .collect();
        if keyed.is_empty() {
            return Err(DnsError::NullMx);
        }
        keyed.sort_unstable();
        Ok(keyed.into_iter().map(|(p, _, h)| (p, h)).collect())
    }

    /// The PTR names of `ip`, without trailing dots.
    pub fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        let live = self.live()?;
        let lookup = live
            .rt
            .block_on(live.resolver.lookup(
                reverse_name(ip),
                hickory_resolver::proto::rr::RecordType::PTR,
            ))
            .map_err(classify)?;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(p) => Some(p.0.to_ascii().trim_end_matches('.').to_ascii_lowercase()),
                _ => None,
            })
            .collect())
    }

    /// The client's name confirmed forward (a PTR name whose A/AAAA records include `ip`), as IIS's
    /// EnableReverseDnsLookup and Postfix's reverse_client_name do; `None` when there is none.
    pub fn confirmed_name(&self, ip: IpAddr) -> Option<String> {
        let names = self.ptr(ip).ok()?;
        names
            .into_iter()
            .take(5)
            .find(|n| self.ips(n).is_ok_and(|addrs| addrs.contains(&ip)))
    }

    /// The IPv4 then IPv6 addresses of `host` (A and AAAA, asked at the same time). An IP literal is
    /// returned as is, without a lookup. When neither query gives an address: a temporary failure of
    /// either wins, then NXDOMAIN, else [`DnsError::NoData`].
    pub fn ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = absolute(host)?;
        let live = self.live()?;
        let (r4, r6) = (live.resolver.clone(), live.resolver.clone());
        let (n4, n6) = (name.clone(), name);
        let a = live.rt.spawn(async move { r4.ipv4_lookup(n4).await });
        let aaaa = live.rt.spawn(async move { r6.ipv6_lookup(n6).await });
        let (a, aaaa) = live.rt.block_on(async move { (a.await, aaaa.await) });
        let a = joined(a);
        let aaaa = joined(aaaa);
        let mut addrs: Vec<IpAddr> = Vec::new();
        for lookup in [&a, &aaaa].into_iter().flatten() {
            for r in lookup.answers() {
                let ip = match &r.data {
                    RData::A(a) => IpAddr::V4(a.0),
                    RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                    _ => continue,
                };
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
        }
        if !addrs.is_empty() {
            return Ok(addrs);
        }
        let errors = [a.err(), aaaa.err()];
        let errors = errors.into_iter().flatten();
        let mut worst = DnsError::NoData;
        for e in errors {
            worst = match (worst, e) {
                (t @ DnsError::Temporary(_), _) => t,
                (_, t @ DnsError::Temporary(_)) => t,
                (DnsError::NxDomain, _) | (_, DnsError::NxDomain) => DnsError::NxDomain,
                (w, _) => w,
            };
        }
        Err(worst)
    }

    /// Where mail for `domain` goes (RFC 5321 §5.1): its MX hosts in [`Dns::mx`] order, each with its
    /// addresses, or — when the domain has no MX record — the domain itself as the implicit MX with
    /// preference 0. NXDOMAIN and a null MX are returned as errors, as is a temporary MX failure.
    ///
    /// A host whose address lookup fails stays in the list with no addresses, so the caller can still
    /// name it; but when no host has any address and at least one lookup failed temporarily the whole
    /// answer is [`DnsError::Temporary`], so the caller retries later instead of bouncing.
    pub fn targets(&self, domain: &str) -> Result<Vec<Target>, DnsError> {
        let hosts = match self.mx(domain) {
            Ok(v) => v,
            Err(DnsError::NoData) => {
                vec![(0, domain.trim_end_matches('.').to_string())]
            }
            Err(e) => return Err(e),
        };
        let mut targets = Vec::with_capacity(hosts.len());
        let mut temporary: Option<DnsError> = None;
        for (preference, host) in hosts {
            let addrs = match self.ips(&host) {
                Ok(addrs) => addrs,
                Err(e) => {
                    if let DnsError::Temporary(why) = e {
                        temporary.get_or_insert(DnsError::Temporary(format!("{host}: {why}")));
                    }
                    Vec::new()
                }
            };
            targets.push(Target {
                host,
                preference,
                addrs,
            });
        }
        match temporary {
            Some(t) if targets.iter().all(|t| t.addrs.is_empty()) => Err(t),
            _ => Ok(targets),
        }
    }
}

/// `name` with exactly one trailing dot, so that no search list applies; rejects empty names.
fn absolute(name: &str) -> Result<String, DnsError> {
    let bare = name.trim().trim_end_matches('.');
    if bare.is_empty() {
        return Err(DnsError::Temporary(format!("invalid domain name {name:?}")));
    }
    Ok(format!("{bare}."))
}

/// The reverse-lookup name of `ip`: `4.3.2.1.in-addr.arpa.` or the nibble form under `ip6.arpa.`.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa.");
            s
        }
    }
}

/// Maps hickory's error to ours: NXDOMAIN, "no records" (NOERROR, empty), or temporary.
fn classify(e: NetError) -> DnsError {
    if e.is_nx_domain() {
        DnsError::NxDomain
    } else if e.is_no_records_found() {
        DnsError::NoData
    } else {
        DnsError::Temporary(e.to_string())
    }
}

/// The result of a lookup spawned on the runtime (a panic or cancellation counts as temporary).
fn joined(r: Result<Result<Lookup, NetError>, tokio::task::JoinError>) -> Result<Lookup, DnsError> {
    match r {
        Ok(inner) => inner.map_err(classify),
        Err(e) => Err(DnsError::Temporary(format!("DNS task failed: {e}"))),
    }
}

#[cfg(test)]
mod reverse_tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("192.0.2.10".parse().unwrap()),
            "10.2.0.192.in-addr.arpa."
        );
        assert_eq!(
            reverse_name("2001:db8::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Dns>();
    }

    #[test]
    fn permanence_and_display() {
        assert!(DnsError::NxDomain.is_permanent());
        assert!(DnsError::NullMx.is_permanent());
        assert!(!DnsError::NoData.is_permanent());
        assert!(!DnsError::Temporary("timeout".into()).is_permanent());
        assert!(DnsError::NullMx.to_string().contains("null MX"));
        assert!(DnsError::Temporary("x".into()).to_string().contains("x"));
    }

    #[test]
    fn names_are_made_absolute() {
        assert_eq!(absolute("example.test").unwrap(), "example.test.");
        assert_eq!(absolute("example.test.").unwrap(), "example.test.");
        assert_eq!(absolute("example.test..").unwrap(), "example.test.");
        assert!(absolute("").is_err());
        assert!(absolute(".").is_err());
    }

    #[test]
    fn ip_literals_need_no_lookup() {
        // A server that is never asked: port 9 on loopback (discard), attempts 1.
        let dns = Dns::new(
            &["127.0.0.1:9".parse().unwrap()],
            Duration::from_millis(200),
            1,
        )
        .unwrap();
        assert_eq!(
            dns.ips("192.0.2.7").unwrap(),
            vec![IpAddr::from([192, 0, 2, 7])]
        );
        assert_eq!(
            dns.ips("2001:db8::1").unwrap(),
            vec!["2001:db8::1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn system_configuration_builds() {
        // Builds the runtime and the resolver from resolv.conf (or the registry); sends nothing. A
        // machine without any configured name server may refuse: a temporary error that names the
        // system configuration (mail waits in Queue), never a panic.
        let dns = Dns::new(&[], Duration::from_secs(1), 1).unwrap();
        match dns.live() {
            Ok(_) => {}
            Err(DnsError::Temporary(why)) => {
                assert!(why.starts_with("DNS "), "{why}")
            }
            Err(e) => panic!("not a temporary error: {e:?}"),
        }
    }
}
