//! A real authoritative DNS server on loopback for tests, built on hickory's protocol crate (the one
//! hickory-resolver re-exports): UDP and TCP on the same ephemeral port of 127.0.0.1, plain std threads.
//!
//! ```ignore
//! let dns = DnsServer::builder()
//!     .mx("example.test", 10, "mx1.example.test")
//!     .a("mx1.example.test", Ipv4Addr::new(127, 0, 0, 2))
//!     .start();
//! // dns.addr is the server to give the resolver.
//! ```
//!
//! Zones: the server is authoritative for the top-level label of every name it was given (`test` above).
//! Inside those zones a name with no records answers NXDOMAIN, a name that exists (or has names below it)
//! but has no record of the asked type answers NOERROR with no answer (both with the zone's SOA, as a real
//! server does); names outside answer REFUSED. `servfail` names answer SERVFAIL and `silent` names are
//! never answered, over either transport. Answers larger than the client's UDP size (512 bytes, or its
//! EDNS size) come back truncated over UDP, so the client retries over TCP. The server stops when dropped;
//! every thread polls a stop flag at least every 50 ms, so the drop is bounded.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, SOA};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

/// How often the server threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// Longest life of one TCP connection, so a client that never closes cannot pin a thread.
const TCP_CONN_LIFE: Duration = Duration::from_secs(10);
/// TTL of every answer.
const TTL: u32 = 60;

/// Lower-case, absolute (`name.`) form of a name, the key of every table here.
fn key(name: &str) -> String {
    let bare = name.trim().trim_end_matches('.').to_ascii_lowercase();
    format!("{bare}.")
}

fn name(s: &str) -> Name {
    Name::from_ascii(key(s)).expect("a valid DNS name")
}

/// The records and behaviours a [`DnsServer`] will serve; see the module docs.
#[derive(Default, Clone)]
pub struct DnsServerBuilder {
    records: Vec<(String, RData)>,
    servfail: HashSet<String>,
    silent: HashSet<String>,
}

impl DnsServerBuilder {
    /// `domain MX pref host`.
    pub fn mx(mut self, domain: &str, pref: u16, host: &str) -> Self {
        self.records
            .push((key(domain), RData::MX(MX::new(pref, name(host)))));
        self
    }

    /// `domain MX 0 .` (RFC 7505 null MX).
    pub fn null_mx(mut self, domain: &str) -> Self {
        self.records
            .push((key(domain), RData::MX(MX::new(0, Name::root()))));
        self
    }

    /// `host A ip`.
    pub fn a(mut self, host: &str, ip: Ipv4Addr) -> Self {
        self.records.push((key(host), RData::A(A(ip))));
        self
    }

    /// `host AAAA ip`.
    pub fn aaaa(mut self, host: &str, ip: Ipv6Addr) -> Self {
        self.records.push((key(host), RData::AAAA(AAAA(ip))));
        self
    }

    /// `ip PTR host` (the reverse name is derived from `ip`).
    pub fn ptr(mut self, ip: std::net::IpAddr, host: &str) -> Self {
        let rev = mailroot::delivery::dns::reverse_name(ip);
        self.records.push((
            key(&rev),
            RData::PTR(hickory_resolver::proto::rr::rdata::PTR(name(host))),
        ));
        self
    }

    /// Every question about `name` (any type) answers SERVFAIL.
    pub fn servfail(mut self, name: &str) -> Self {
        self.servfail.insert(key(name));
        self
    }

    /// Questions about `name` are never answered (to test timeouts).
    pub fn silent(mut self, name: &str) -> Self {
        self.silent.insert(key(name));
        self
    }

    /// Binds UDP and TCP on one ephemeral port of 127.0.0.1 and starts serving.
    pub fn start(self) -> DnsServer {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().expect("udp local addr");
        let zone = Arc::new(Zone::new(self));
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let mut threads = Vec::new();
        {
            let (zone, stop, queries) = (zone.clone(), stop.clone(), queries.clone());
            threads.push(
                thread::Builder::new()
                    .name("test-dns-udp".into())
                    .spawn(move || serve_udp(udp, &zone, &stop, &queries))
                    .expect("spawn udp thread"),
            );
        }
        {
            let counters = (queries.clone(), tcp_queries.clone());
            let (zone, stop, conns) = (zone.clone(), stop.clone(), conns.clone());
            threads.push(
                thread::Builder::new()
                    .name("test-dns-tcp".into())
                    .spawn(move || serve_tcp(tcp, zone, stop, counters, conns))
                    .expect("spawn tcp thread"),
            );
        }
        DnsServer {
            addr,
            stop,
            queries,
            tcp_queries,
            threads,
            conns,
        }
    }
}

/// A running test DNS server; stops (and joins its threads) when dropped.
pub struct DnsServer {
    /// Where it listens, over UDP and TCP.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl DnsServer {
    /// An empty configuration to fill in.
    pub fn builder() -> DnsServerBuilder {
        DnsServerBuilder::default()
    }

    /// How many well-formed questions arrived so far (UDP and TCP, answered or not).
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// How many of those came over TCP.
    pub fn tcp_queries(&self) -> usize {
        self.tcp_queries.load(Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let conns: Vec<_> = self
            .conns
            .lock()
            .map(|mut v| v.drain(..).collect())
            .unwrap_or_default();
        for t in conns {
            let _ = t.join();
        }
    }
}

/// UDP and TCP bound to the same ephemeral port (retrying when TCP finds the port taken).
fn bind_pair() -> (UdpSocket, TcpListener) {
    let mut last = None;
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp on 127.0.0.1");
        let port = udp.local_addr().expect("udp local addr").port();
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(tcp) => {
                udp.set_read_timeout(Some(POLL)).expect("udp read timeout");
                tcp.set_nonblocking(true).expect("nonblocking listener");
                return (udp, tcp);
            }
            Err(e) => last = Some(e),
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1: {last:?}");
}

/// The data, looked up by lower-case absolute names.
struct Zone {
    records: Vec<(String, RData)>,
    servfail: HashSet<String>,
    silent: HashSet<String>,
    /// The top-level labels (`test.`) the server is authoritative for.
    apexes: HashSet<String>,
}

impl Zone {
    fn new(b: DnsServerBuilder) -> Zone {
        let apexes = b
            .records
            .iter()
            .map(|(n, _)| n)
            .chain(b.servfail.iter())
            .chain(b.silent.iter())
            .filter_map(|n| n.trim_end_matches('.').rsplit('.').next())
            .filter(|tld| !tld.is_empty())
            .map(|tld| format!("{tld}."))
            .collect();
        Zone {
            records: b.records,
            servfail: b.servfail,
            silent: b.silent,
            apexes,
        }
    }

    fn apex_of(&self, qname: &str) -> Option<&String> {
        self.apexes
            .iter()
            .find(|apex| qname == apex.as_str() || qname.ends_with(&format!(".{apex}")))
    }

    /// The name exists if it owns a record or has a name below it (an empty non-terminal).
    fn exists(&self, qname: &str) -> bool {
        let below = format!(".{qname}");
        self.records
            .iter()
            .map(|(n, _)| n)
            .chain(self.servfail.iter())
            .chain(self.silent.iter())
            .any(|n| n == qname || n.ends_with(&below))
            || self.apexes.contains(qname)
    }

    /// The answer to one request, or None to stay silent.
    fn answer(&self, req: &Message) -> Option<Message> {
        if req.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.metadata.checking_disabled = req.metadata.checking_disabled;
        if req.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            resp.set_edns(edns);
        }
        resp.add_queries(req.queries.iter().cloned());
        if req.metadata.op_code != OpCode::Query {
            resp.metadata.response_code = ResponseCode::NotImp;
            return Some(resp);
        }
        let [q] = req.queries.as_slice() else {
            resp.metadata.response_code = ResponseCode::FormErr;
            return Some(resp);
        };
        let qname = key(&q.name.to_ascii());
        if self.silent.contains(&qname) {
            return None;
        }
        if self.servfail.contains(&qname) {
            resp.metadata.response_code = ResponseCode::ServFail;
            return Some(resp);
        }
        let Some(apex) = self.apex_of(&qname) else {
            resp.metadata.response_code = ResponseCode::Refused;
            return Some(resp);
        };
        resp.metadata.authoritative = true;
        for (owner, rdata) in &self.records {
            if *owner == qname
                && (rdata.record_type() == q.query_type || q.query_type == RecordType::ANY)
            {
                resp.add_answer(Record::from_rdata(q.name.clone(), TTL, rdata.clone()));
            }
        }
        if resp.answers.is_empty() {
            if !self.exists(&qname) {
                resp.metadata.response_code = ResponseCode::NXDomain;
            }
            let soa = SOA::new(
                name(&format!("ns.{apex}")),
                name(&format!("hostmaster.{apex}")),
                1,
                3600,
                600,
                86400,
                1,
            );
            resp.add_authority(Record::from_rdata(name(apex), 1, RData::SOA(soa)));
        }
        Some(resp)
    }
}

/// Parses, counts and answers one wire-format request; None = no reply.
fn handle(zone: &Zone, queries: &AtomicUsize, bytes: &[u8]) -> Option<(Message, Message)> {
    let req = Message::from_vec(bytes).ok()?;
    queries.fetch_add(1, Ordering::SeqCst);
    let resp = zone.answer(&req)?;
    Some((req, resp))
}

fn serve_udp(sock: UdpSocket, zone: &Zone, stop: &AtomicBool, queries: &AtomicUsize) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if is_timeout(&e) => continue,
            Err(_) => continue, // e.g. ICMP port unreachable reported on Windows
        };
        let Some((req, resp)) = handle(zone, queries, &buf[..n]) else {
            continue;
        };
        let limit = req
            .edns
            .as_ref()
            .map(|e| e.max_payload())
            .unwrap_or(512)
            .max(512) as usize;
        let Ok(mut wire) = resp.to_vec() else {
            continue;
        };
        if wire.len() > limit {
            match resp.truncate().to_vec() {
                Ok(w) => wire = w,
                Err(_) => continue,
            }
        }
        let _ = sock.send_to(&wire, peer);
    }
}

fn serve_tcp(
    listener: TcpListener,
    zone: Arc<Zone>,
    stop: Arc<AtomicBool>,
    (queries, tcp_queries): (Arc<AtomicUsize>, Arc<AtomicUsize>),
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (zone, stop) = (zone.clone(), stop.clone());
                let counters = (queries.clone(), tcp_queries.clone());
                let t = thread::Builder::new()
                    .name("test-dns-tcp-conn".into())
                    .spawn(move || serve_tcp_conn(stream, &zone, &stop, &counters));
                if let (Ok(t), Ok(mut v)) = (t, conns.lock()) {
                    v.push(t);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5))
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// One TCP connection: any number of length-prefixed requests (RFC 1035 §4.2.2, RFC 7766).
fn serve_tcp_conn(
    mut stream: TcpStream,
    zone: &Zone,
    stop: &AtomicBool,
    (queries, tcp_queries): &(Arc<AtomicUsize>, Arc<AtomicUsize>),
) {
    let deadline = Instant::now() + TCP_CONN_LIFE;
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => continue,
            Err(_) => return,
        }
        while pending.len() >= 2 {
            let len = u16::from_be_bytes([pending[0], pending[1]]) as usize;
            if pending.len() < 2 + len {
                break;
            }
            let msg: Vec<u8> = pending.drain(..2 + len).skip(2).collect();
            if Message::from_vec(&msg).is_ok() {
                tcp_queries.fetch_add(1, Ordering::SeqCst);
            }
            let Some((_, resp)) = handle(zone, queries, &msg) else {
                continue;
            };
            let Ok(wire) = resp.to_vec() else {
                continue;
            };
            let Ok(wire_len) = u16::try_from(wire.len()) else {
                continue;
            };
            let mut out = wire_len.to_be_bytes().to_vec();
            out.extend_from_slice(&wire);
            if stream.write_all(&out).is_err() {
                return;
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
