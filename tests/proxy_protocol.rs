//! ProxyProtocolFrom: a load balancer's PROXY header (v1 text, v2 binary) names the client, and the
//! client's address is the one relay rules, connection control, MaxConnectionsPerIp, the W3C log and
//! the Received header use. A balancer's connection without a valid header is closed; a peer that
//! is not a named balancer and begins with a header gets `554 5.7.0` after the banner and is closed.
//! The balancer here is the test itself, on 127.0.0.1.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{Builder, Client, Dial, Server, message, read_text, w3c_records};

const FQDN: &str = "mx.mailroot.test";

/// A v1 header for a TCP4 client `src:sport` to `dst`.
fn v1(src: &str, sport: u16, dst: SocketAddr) -> Vec<u8> {
    format!("PROXY TCP4 {src} {} {sport} {}\r\n", dst.ip(), dst.port()).into_bytes()
}

/// A v2 header (`PROXY`, TCP over IPv4) for `src:sport` to `dst`.
fn v2(src: &str, sport: u16, dst: SocketAddr) -> Vec<u8> {
    let src: Ipv4Addr = src.parse().unwrap();
    let SocketAddr::V4(dst) = dst else {
        panic!("IPv4 only")
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.ip().octets());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

/// A v2 `LOCAL` header (a balancer's health check).
fn v2_local() -> Vec<u8> {
    b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec()
}

/// A server that takes PROXY headers from 127.0.0.1 (which is also in RelayIpList).
fn proxied() -> Builder {
    Builder::new().key("ProxyProtocolFrom", "127.0.0.1")
}

/// A connection from the balancer (127.0.0.1) that sends `header` first.
fn through(srv: &Server, header: &[u8]) -> Client {
    let mut c = Dial::new()
        .from("127.0.0.1")
        .plain(srv.addr())
        .expect("connect from 127.0.0.1");
    c.send(header);
    c
}

/// The c-ip field of every W3C record of instance 1.
fn client_ips(srv: &Server) -> Vec<String> {
    w3c_records(&srv.w3c_log(1))
        .into_iter()
        .map(|f| f[2].clone())
        .collect()
}

/// One local message through `c` (after the greeting); returns the Drop file's text.
fn local_message(srv: &Server, c: &mut Client, n: usize, subject: &str) -> String {
    c.ehlo();
    let r = c.send_mail("a@example.test", &["u@local.test"], &message(subject));
    assert_eq!(r.code, 250, "{r:?}");
    c.ok("QUIT", 221);
    let files = srv.wait_files("Drop", n);
    files
        .iter()
        .map(|p| read_text(p))
        .find(|t| t.contains(subject))
        .unwrap_or_else(|| panic!("no message {subject:?} in Drop"))
}

#[test]
fn version_1_and_2_name_the_client_for_received_relay_and_the_w3c_log() {
    let srv = proxied().start();
    let addr = srv.addr();

    // v1, a client that may not relay.
    let mut c = through(&srv, &v1("192.0.2.9", 40000, addr));
    c.greeting();
    let text = local_message(&srv, &mut c, 1, "via v1");
    assert!(
        text.contains(&format!(
            "Received: from client.test ([192.0.2.9]) by {FQDN} with"
        )),
        "{text}"
    );
    let mut c = through(&srv, &v1("192.0.2.9", 40001, addr));
    c.hello();
    c.ok("MAIL FROM:<a@example.test>", 250);
    c.expect(
        "RCPT TO:<u@remote.test>",
        "550 5.7.1 Unable to relay for u@remote.test",
    );
    c.ok("QUIT", 221);

    // v2, the same.
    let mut c = through(&srv, &v2("192.0.2.10", 40002, addr));
    c.greeting();
    let text = local_message(&srv, &mut c, 2, "via v2");
    assert!(
        text.contains("Received: from client.test ([192.0.2.10]) by"),
        "{text}"
    );

    // The balancer's own address (in RelayIpList) is not what counts: the client's is. The log has
    // a writer thread of its own: wait for the last session's records.
    srv.wait_w3c(1, |t| t.contains("192.0.2.10"));
    let ips = client_ips(&srv);
    assert!(ips.iter().any(|ip| ip == "192.0.2.9"), "{ips:?}");
    assert!(ips.iter().any(|ip| ip == "192.0.2.10"), "{ips:?}");
    assert!(!ips.iter().any(|ip| ip == "127.0.0.1"), "{ips:?}");
}

#[test]
fn the_claimed_client_is_what_relay_rules_see() {
    // 127.0.0.9 may relay, 127.0.0.1 (the balancer) may not.
    let srv = proxied()
        .key("RelayIpList", "127.0.0.9")
        .route("remote.test", common::free_port("127.0.0.1"))
        .start();
    let addr = srv.addr();
    let mut c = through(&srv, &v2("127.0.0.9", 40000, addr));
    c.hello();
    c.ok("MAIL FROM:<a@example.test>", 250);
    c.ok("RCPT TO:<u@remote.test>", 250);
    c.ok("QUIT", 221);
    let mut c = through(&srv, &v1("192.0.2.11", 40000, addr));
    c.hello();
    c.ok("MAIL FROM:<a@example.test>", 250);
    c.ok("RCPT TO:<u@remote.test>", 550);
    c.ok("QUIT", 221);
}

#[test]
fn connection_control_and_the_per_address_limit_apply_to_the_claimed_client() {
    let srv = proxied()
        .key("IPDeny", "192.0.2.66")
        .key("MaxConnectionsPerIp", "1")
        .start();
    let addr = srv.addr();

    let mut c = through(&srv, &v1("192.0.2.66", 40000, addr));
    let r = c.reply();
    assert_eq!(r.last(), "554 5.7.1 Access denied", "{r:?}");
    c.assert_closed();

    // One session per client address, though all come from the balancer.
    let mut first = through(&srv, &v2("192.0.2.20", 40000, addr));
    first.greeting();
    let mut second = through(&srv, &v2("192.0.2.20", 40001, addr));
    let r = second.reply();
    assert_eq!(r.code, 421, "{r:?}");
    assert!(r.last().starts_with("421 4.7.0"), "{r:?}");
    second.assert_closed();
    let mut other = through(&srv, &v2("192.0.2.21", 40002, addr));
    other.greeting();
    other.quit();
    first.quit();
    // The first client's place is given back when it leaves.
    assert!(common::wait_until(|| {
        let mut again = through(&srv, &v1("192.0.2.20", 40003, addr));
        let ok = again.reply().code == 220;
        if ok {
            again.quit();
        }
        ok
    }));
}

#[test]
fn a_health_check_speaks_for_the_balancer() {
    let srv = proxied().start();
    let mut c = through(&srv, &v2_local());
    c.greeting();
    let text = local_message(&srv, &mut c, 1, "health");
    assert!(
        text.contains("Received: from client.test ([127.0.0.1]) by"),
        "{text}"
    );
    let mut c = through(&srv, b"PROXY UNKNOWN\r\n");
    c.greeting();
    c.quit();
    assert!(client_ips(&srv).iter().all(|ip| ip == "127.0.0.1"));
}

#[test]
fn a_balancer_connection_without_a_valid_header_is_closed() {
    let srv = proxied().key("ConnectionTimeout", "2").start();

    // A client that talks SMTP straight away: no banner, closed at once.
    let mut c = through(&srv, b"EHLO client.test\r\n");
    c.assert_closed();
    // A truncated header, then silence: closed after ConnectionTimeout, without a word.
    let t = Instant::now();
    let mut c = through(&srv, b"PROXY TCP4 192.0.2.9 ");
    c.assert_closed();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    // The server logs right after it closes: the client may see the close first.
    let logged = |needle: &str| {
        common::wait_for(Duration::from_secs(10), || srv.log_text().contains(needle))
    };
    assert!(
        logged("connection from 127.0.0.1 (ProxyProtocolFrom) closed: not a valid PROXY header"),
        "{}",
        srv.log_text()
    );
    assert!(
        logged("no complete PROXY header in time (21 byte(s) received)"),
        "{}",
        srv.log_text()
    );
    // A plain TCP health check (connect, close) is no warning.
    let before = srv.warnings(100).len();
    drop(Dial::new().from("127.0.0.1").tcp(srv.addr()).unwrap());
    let mut c = through(&srv, b"PROXY UNKNOWN\r\n");
    c.greeting();
    c.quit();
    assert_eq!(srv.warnings(100).len(), before, "{}", srv.log_text());
    // Nothing was logged as a session but the last one, the balancer's own.
    assert!(client_ips(&srv).iter().all(|ip| ip == "127.0.0.1"));
}

#[test]
fn a_header_from_a_peer_not_named_is_refused_after_the_banner() {
    let srv = proxied().start();
    let addr = srv.addr();
    for header in [v1("127.0.0.9", 40000, addr), v2("127.0.0.9", 40000, addr)] {
        let mut c = Dial::new().from("127.0.0.2").plain(addr).unwrap();
        c.send(&header);
        c.greeting();
        let r = c.reply();
        assert_eq!(
            r.last(),
            "554 5.7.0 PROXY protocol header not accepted from this address",
            "{r:?}"
        );
        assert_eq!(r.code, 554);
        c.assert_closed();
    }
    // The server logs right after it closes: the client may see the close first.
    assert!(
        common::wait_for(Duration::from_secs(10), || srv.log_text().contains(
            "127.0.0.2 sent a PROXY protocol header but is not in ProxyProtocolFrom"
        )),
        "{}",
        srv.log_text()
    );
    // Such a peer is an ordinary client otherwise, and its address stays its own.
    let mut c = Dial::new().from("127.0.0.2").plain(addr).unwrap();
    c.greeting();
    let text = local_message(&srv, &mut c, 1, "plain");
    assert!(text.contains("([127.0.0.2])"), "{text}");
    let recs = w3c_records(&srv.w3c_log(1));
    assert!(
        recs.iter()
            .filter(|f| f[8] == "PROXY")
            .all(|f| f[2] == "127.0.0.2" && f.iter().any(|x| x == "554")),
        "{recs:?}"
    );
}

#[test]
fn without_proxy_protocol_from_a_header_is_refused_from_anyone() {
    let srv = Builder::new().start();
    let addr = srv.addr();
    let mut c = Client::connect(addr);
    c.send(&v1("192.0.2.9", 1, addr));
    c.greeting();
    assert_eq!(c.reply().code, 554);
    c.assert_closed();
}

#[test]
fn on_an_implicit_tls_binding_the_header_comes_before_the_handshake() {
    let ca = common::sink::TestCa::new();
    let cfg = ca.client_config();
    let dir = common::TempDir::new("proxy-tls");
    ca.leaf_for(&[FQDN]).write_pem(dir.path());
    let ini = proxied()
        .key("SecureBindings", "127.0.0.1:0")
        .key("TlsCertificateFile", "cert.pem")
        .key("TlsKeyFile", "key.pem")
        .ini();
    let srv = Server::start_in(dir, &ini);
    let secure = srv.addrs[1].1;
    let mut c = Dial::new().from("127.0.0.1").plain(secure).unwrap();
    c.send(&v2("192.0.2.30", 40000, secure));
    c.upgrade(&cfg, FQDN).expect("handshake after the header");
    c.greeting();
    let text = local_message(&srv, &mut c, 1, "proxied tls");
    assert!(
        text.contains("Received: from client.test ([192.0.2.30]) by"),
        "{text}"
    );
}
