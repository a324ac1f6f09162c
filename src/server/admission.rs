//! Connection admission, all of it: connection control (IPGrant/IPDeny), MaxConnections and
//! MaxConnectionsPerIp, the counts behind the two limits and their one release, the one-line
//! refusals, and the PROXY protocol's place in them. The acceptor asks [`admit`] for every
//! connection, so a refused client gets its answer without costing a session thread; only what
//! needs a wait happens on the session thread: connection control by name ([`admit_by_name`], after
//! a DNS lookup; the acceptor never waits for DNS), and a connection from a ProxyProtocolFrom load
//! balancer, whose client is known only once its header has arrived. Such a connection is admitted
//! in two steps: [`admit`] takes its MaxConnections place (the balancer's address is not the
//! client's, so neither connection control nor the per-address count applies to it), and
//! [`admit_proxied`] reads the header and then decides for the client it names (connection control
//! by address, MaxConnectionsPerIp counted for that client).

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::VirtualServer;
use crate::config::ipnet::canonical;
use crate::net::proxy::{self, Proxied};
use crate::policy::access;
use crate::smtp::reply;

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Connection control (IPGrant/IPDeny) denies the client.
    Access,
    /// MaxConnections sessions are open.
    MaxConnections,
    /// MaxConnectionsPerIp sessions are open from the client's address.
    MaxPerIp,
}

impl Refusal {
    /// Counts this refusal in `stats`.
    pub fn count(self, stats: &crate::metrics::Sessions) {
        match self {
            Refusal::Access => stats.refused_access.inc(),
            Refusal::MaxConnections => stats.refused_max_connections.inc(),
            Refusal::MaxPerIp => stats.refused_per_ip.inc(),
        }
    }

    /// The one line the client gets before the connection is closed.
    pub fn reply(self) -> &'static [u8] {
        match self {
            Refusal::Access => reply::ACCESS_DENIED,
            Refusal::MaxConnections => reply::TOO_MANY_CONNECTIONS,
            Refusal::MaxPerIp => reply::TOO_MANY_FROM_IP,
        }
    }

    fn log(self, vs: &VirtualServer, ip: IpAddr) {
        match self {
            Refusal::Access => log::info!(
                "SMTPSVC{}: connection from {ip} refused by connection control",
                vs.instance
            ),
            Refusal::MaxConnections => log::warn!(
                "SMTPSVC{}: connection from {ip} refused: MaxConnections ({}) reached",
                vs.instance,
                vs.max_connections
            ),
            Refusal::MaxPerIp => log::warn!(
                "SMTPSVC{}: connection from {ip} refused: MaxConnectionsPerIp ({}) reached",
                vs.instance,
                vs.security.max_per_ip
            ),
        }
    }
}

/// A virtual server's open sessions, in all and per client address.
#[derive(Debug, Default)]
pub struct Counters {
    active: AtomicUsize,
    /// What the virtual server's sessions counted (admitted, refused, TLS, messages, bytes), for the
    /// metrics; sessions open now are [`Counters::active`].
    pub stats: crate::metrics::Sessions,
    /// Only addresses with a session open: an entry is removed when its count returns to zero.
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

impl Counters {
    /// Sessions open now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Takes a session slot for `ip` under both limits; a client for which `exempt` says yes passes
    /// MaxConnectionsPerIp (it is asked only when the limit is reached).
    fn take(
        self: &Arc<Self>,
        ip: IpAddr,
        max_connections: usize,
        max_per_ip: u32,
        exempt: impl FnOnce() -> bool,
    ) -> Result<Slot, Refusal> {
        let mut slot = self.take_session(max_connections)?;
        slot.take_ip(ip, max_per_ip, exempt)?;
        Ok(slot)
    }

    /// Takes a session slot under MaxConnections only (the per-address count is the slot's
    /// [`Slot::take_ip`]).
    fn take_session(self: &Arc<Self>, max_connections: usize) -> Result<Slot, Refusal> {
        let before = self.active.fetch_add(1, Ordering::AcqRel);
        // From here every way out gives back what the slot holds, through its one release.
        let slot = Slot {
            counters: self.clone(),
            ip: None,
            awaits_header: false,
        };
        if before >= max_connections {
            return Err(Refusal::MaxConnections);
        }
        Ok(slot)
    }

    fn release(&self, ip: Option<IpAddr>) {
        self.active.fetch_sub(1, Ordering::AcqRel);
        let Some(ip) = ip else {
            return;
        };
        let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
}

/// One admitted session's place in its virtual server's counts, given back when dropped (however
/// the session ends, or if it never starts).
#[derive(Debug)]
pub struct Slot {
    counters: Arc<Counters>,
    /// Set once the per-address count includes this slot.
    ip: Option<IpAddr>,
    /// It came from a ProxyProtocolFrom balancer: [`admit_proxied`] has yet to read the header and
    /// admit the client it names.
    awaits_header: bool,
}

impl Slot {
    /// Whether the connection came from a ProxyProtocolFrom balancer and the session thread must
    /// call [`admit_proxied`] before anything else.
    pub fn awaits_header(&self) -> bool {
        self.awaits_header
    }

    /// Counts this slot for `ip` under MaxConnectionsPerIp (once); `exempt` is asked only when the
    /// limit is reached. Refused, the count is given back when the slot is dropped.
    fn take_ip(
        &mut self,
        ip: IpAddr,
        max_per_ip: u32,
        exempt: impl FnOnce() -> bool,
    ) -> Result<(), Refusal> {
        debug_assert!(self.ip.is_none(), "a slot counts for one address");
        let over = {
            let mut m = self
                .counters
                .per_ip
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let n = m.entry(ip).or_insert(0);
            *n += 1;
            self.ip = Some(ip);
            *n > max_per_ip
        };
        if over && !exempt() {
            return Err(Refusal::MaxPerIp);
        }
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counters.release(self.ip);
    }
}

/// Decides on a connection the acceptor just took from `ip` (canonical): connection control when
/// it needs no name, then MaxConnections, then MaxConnectionsPerIp (clients that may relay are
/// exempt, as Postfix's smtpd_client_connection_count_limit exempts mynetworks). A refused client
/// gets its one line on the still non-blocking socket (a full buffer never stalls the acceptor) and
/// `None`. An admitted client's socket is made blocking and its slot returned. A connection from a
/// ProxyProtocolFrom balancer is checked against MaxConnections only, and its slot
/// [`awaits_header`](Slot::awaits_header): the acceptor never reads it (nothing is read at all when
/// the list is empty).
pub fn admit(
    stream: &mut TcpStream,
    ip: IpAddr,
    vs: &VirtualServer,
    counts: &Arc<Counters>,
) -> Option<Slot> {
    let taken = if vs.proxy_protocol_from.contains(ip) {
        counts
            .take_session(vs.max_connections as usize)
            .map(|mut slot| {
                slot.awaits_header = true;
                slot
            })
    } else if !access::needs_name(vs) && !access::may_connect(vs, ip, None) {
        Err(Refusal::Access)
    } else {
        counts.take(
            ip,
            vs.max_connections as usize,
            vs.security.max_per_ip,
            || access::may_relay(vs, ip),
        )
    };
    match taken {
        Ok(slot) => {
            // A socket that cannot be made blocking is dropped, and the slot with it.
            stream.set_nonblocking(false).ok()?;
            counts.stats.total.inc();
            Some(slot)
        }
        Err(r) => {
            r.log(vs, ip);
            r.count(&counts.stats);
            let _ = stream.write(r.reply());
            None
        }
    }
}

/// The longest a balancer's header may take, whatever ConnectionTimeout says: a balancer writes it
/// at once, and a connection waiting for it holds a session thread.
pub const PROXY_HEADER_WAIT: Duration = Duration::from_secs(30);

/// The second step for a connection [`admit`] took from a ProxyProtocolFrom balancer (`balancer`),
/// on the session thread (`stream` blocking, with its write timeout set): reads the PROXY header
/// within ConnectionTimeout (at most [`PROXY_HEADER_WAIT`]), then decides for the client it names
/// (a `LOCAL` or `UNKNOWN` header, the balancer's health check, stands for the balancer itself):
/// connection control by address, then MaxConnectionsPerIp for that client. Returns the client's
/// address, which the session uses from then on. No valid header: the connection is closed without
/// a word (a balancer would not pass one on) and the log says why; a refused client gets its one
/// line, as from [`admit`].
pub fn admit_proxied(
    slot: &mut Slot,
    stream: &mut TcpStream,
    balancer: SocketAddr,
    vs: &VirtualServer,
) -> Option<SocketAddr> {
    debug_assert!(slot.awaits_header);
    let within = vs.connection_timeout.min(PROXY_HEADER_WAIT);
    let client = match proxy::read_header(stream, within) {
        Ok(Proxied::Client(a)) => SocketAddr::new(canonical(a.ip()), a.port()),
        Ok(Proxied::Local) => balancer,
        // Connected and closed without a byte: a balancer's plain TCP health check (an AWS NLB's,
        // HAProxy's `check` without `check-send-proxy`), not worth a warning every few seconds.
        Err(proxy::HeaderError::Closed { got: 0 }) => {
            log::debug!(
                "SMTPSVC{}: connection from {} (ProxyProtocolFrom) closed before a byte (a TCP health check?)",
                vs.instance,
                balancer.ip()
            );
            return None;
        }
        Err(e) => {
            log::warn!(
                "SMTPSVC{}: connection from {} (ProxyProtocolFrom) closed: {e}",
                vs.instance,
                balancer.ip()
            );
            return None;
        }
    };
    slot.awaits_header = false;
    let ip = client.ip();
    let taken = if !access::needs_name(vs) && !access::may_connect(vs, ip, None) {
        Err(Refusal::Access)
    } else {
        slot.take_ip(ip, vs.security.max_per_ip, || access::may_relay(vs, ip))
    };
    match taken {
        Ok(()) => {
            log::debug!(
                "SMTPSVC{}: {} connects through {}",
                vs.instance,
                client,
                balancer.ip()
            );
            Some(client)
        }
        Err(r) => {
            r.log(vs, ip);
            r.count(&slot.counters.stats);
            let _ = stream.write_all(r.reply()).and_then(|_| stream.flush());
            None
        }
    }
}

/// Connection control by name (IPGrant/IPDeny with name entries), in the session thread once the
/// client's confirmed `name` is known. Without name entries [`admit`] already decided: `Ok`.
pub fn admit_by_name(vs: &VirtualServer, ip: IpAddr, name: Option<&str>) -> Result<(), Refusal> {
    if access::needs_name(vs) && !access::may_connect(vs, ip, name) {
        Refusal::Access.log(vs, ip);
        return Err(Refusal::Access);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{Ipv4Addr, TcpListener};
    use std::time::Duration;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    fn empty(c: &Counters) -> bool {
        c.active() == 0 && c.per_ip.lock().unwrap().is_empty()
    }

    #[test]
    fn release_returns_the_counts_to_empty() {
        let c = Arc::new(Counters::default());
        let s1 = c.take(A, 10, 5, || false).unwrap();
        let s2 = c.take(A, 10, 5, || false).unwrap();
        let s3 = c.take(B, 10, 5, || false).unwrap();
        assert_eq!(c.active(), 3);
        assert_eq!(c.per_ip.lock().unwrap().get(&A), Some(&2));
        drop(s1);
        drop(s3);
        assert_eq!(c.active(), 1);
        assert_eq!(c.per_ip.lock().unwrap().len(), 1, "B's zero entry is gone");
        drop(s2);
        assert!(empty(&c));
    }

    #[test]
    fn a_refused_admission_leaves_nothing_behind() {
        let c = Arc::new(Counters::default());
        // MaxConnections.
        let s = c.take(A, 1, 5, || false).unwrap();
        assert_eq!(
            c.take(B, 1, 5, || false).unwrap_err(),
            Refusal::MaxConnections
        );
        assert_eq!(c.active(), 1);
        assert!(!c.per_ip.lock().unwrap().contains_key(&B));
        // MaxConnectionsPerIp.
        assert_eq!(c.take(A, 10, 1, || false).unwrap_err(), Refusal::MaxPerIp);
        assert_eq!(c.active(), 1);
        assert_eq!(c.per_ip.lock().unwrap().get(&A), Some(&1));
        drop(s);
        assert!(empty(&c));
        // A limit of zero refuses the first session and keeps no zero entry for its address.
        assert_eq!(c.take(B, 10, 0, || false).unwrap_err(), Refusal::MaxPerIp);
        assert!(empty(&c));
    }

    #[test]
    fn an_exempt_client_passes_the_per_address_limit() {
        let c = Arc::new(Counters::default());
        let mut asked = 0;
        let s1 = c
            .take(A, 10, 1, || {
                asked += 1;
                true
            })
            .unwrap();
        assert_eq!(asked, 0, "not asked under the limit");
        let s2 = c.take(A, 10, 1, || true).unwrap();
        assert_eq!(c.per_ip.lock().unwrap().get(&A), Some(&2));
        drop((s1, s2));
        assert!(empty(&c));
    }

    /// A loopback connection: the server's end (non-blocking, as the acceptor hands it over) and the
    /// client's.
    fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (server, client)
    }

    #[test]
    fn admit_answers_a_refused_client_and_releases_on_drop() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut vs = crate::testutil::test_server();
        vs.max_connections = 1;
        let c = Arc::new(Counters::default());
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);

        let (mut s1, _c1) = pair(&l);
        let slot = admit(&mut s1, ip, &vs, &c).expect("admitted");
        assert!(c.active() == 1);

        let (mut s2, mut c2) = pair(&l);
        assert!(admit(&mut s2, ip, &vs, &c).is_none());
        drop(s2);
        let mut got = Vec::new();
        c2.read_to_end(&mut got).unwrap();
        assert_eq!(got, reply::TOO_MANY_CONNECTIONS);
        assert_eq!(c.active(), 1);

        drop(slot);
        assert!(empty(&c));
    }

    #[test]
    fn a_balancer_is_admitted_in_two_steps() {
        use std::io::Write as _;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut vs = crate::testutil::test_server();
        vs.proxy_protocol_from = crate::config::IpList::parse("127.0.0.1").unwrap();
        vs.security.max_per_ip = 1;
        let c = Arc::new(Counters::default());
        let lb = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let balancer = SocketAddr::new(lb, 40000);

        // Step one, in the acceptor: a MaxConnections place, nothing per address, nothing read.
        let (mut s1, mut c1) = pair(&l);
        let mut slot = admit(&mut s1, lb, &vs, &c).expect("admitted");
        assert!(slot.awaits_header());
        assert_eq!(c.active(), 1);
        assert!(c.per_ip.lock().unwrap().is_empty());

        // Step two, on the session thread: the header's client is counted.
        c1.write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 25\r\n")
            .unwrap();
        let client = admit_proxied(&mut slot, &mut s1, balancer, &vs);
        assert_eq!(client, Some("192.0.2.1:1000".parse().unwrap()));
        assert!(!slot.awaits_header());
        assert_eq!(c.per_ip.lock().unwrap().get(&A), Some(&1));

        // The same client again, through the same balancer: over its MaxConnectionsPerIp.
        let (mut s2, mut c2) = pair(&l);
        let mut slot2 = admit(&mut s2, lb, &vs, &c).expect("admitted");
        c2.write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 1001 25\r\n")
            .unwrap();
        assert_eq!(admit_proxied(&mut slot2, &mut s2, balancer, &vs), None);
        drop((s2, slot2));
        let mut got = Vec::new();
        c2.read_to_end(&mut got).unwrap();
        assert_eq!(got, reply::TOO_MANY_FROM_IP);

        // No header: refused, and the place given back.
        let (mut s3, c3) = pair(&l);
        let mut slot3 = admit(&mut s3, lb, &vs, &c).expect("admitted");
        drop(c3);
        assert_eq!(admit_proxied(&mut slot3, &mut s3, balancer, &vs), None);
        drop(slot3);

        drop(slot);
        assert!(empty(&c));
    }
}
