//! `mailroot::delivery::dns::Dns` against a real authoritative DNS server on loopback
//! (tests/common/dns.rs): MX order, implicit MX, null MX, NXDOMAIN, SERVFAIL, timeouts, IPv6, TCP.

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use common::dns::DnsServer;
use mailroot::delivery::dns::{Dns, DnsError, Target};

/// A resolver that asks only `server`, with a short timeout and one attempt.
fn dns(server: &DnsServer) -> Dns {
    Dns::new(&[server.addr], Duration::from_millis(300), 1).expect("resolver")
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

#[test]
fn mx_hosts_come_sorted_by_preference() {
    let server = DnsServer::builder()
        .mx("example.test", 20, "mx2.example.test")
        .mx("example.test", 10, "mx1.example.test")
        .mx("example.test", 30, "mx3.example.test")
        .a("mx1.example.test", Ipv4Addr::new(127, 0, 0, 2))
        .a("mx2.example.test", Ipv4Addr::new(127, 0, 0, 3))
        .a("mx3.example.test", Ipv4Addr::new(127, 0, 0, 4))
        .start();
    let dns = dns(&server);
    let want = vec![
        (10, "mx1.example.test".to_string()),
        (20, "mx2.example.test".to_string()),
        (30, "mx3.example.test".to_string()),
    ];
    assert_eq!(dns.mx("example.test").unwrap(), want);
    // A trailing dot changes nothing.
    assert_eq!(dns.mx("example.test.").unwrap(), want);
    let targets = dns.targets("example.test").unwrap();
    assert_eq!(
        targets,
        vec![
            Target {
                host: "mx1.example.test".into(),
                preference: 10,
                addrs: vec![v4(127, 0, 0, 2)],
            },
            Target {
                host: "mx2.example.test".into(),
                preference: 20,
                addrs: vec![v4(127, 0, 0, 3)],
            },
            Target {
                host: "mx3.example.test".into(),
                preference: 30,
                addrs: vec![v4(127, 0, 0, 4)],
            },
        ]
    );
}

#[test]
fn equal_preferences_come_in_random_order() {
    let server = DnsServer::builder()
        .mx("example.test", 5, "first.example.test")
        .mx("example.test", 10, "a.example.test")
        .mx("example.test", 10, "b.example.test")
        .mx("example.test", 20, "last.example.test")
        .start();
    let dns = dns(&server);
    let mut seen = HashSet::new();
    for _ in 0..200 {
        let mx = dns.mx("example.test").unwrap();
        assert_eq!(mx.len(), 4);
        assert_eq!(mx[0], (5, "first.example.test".to_string()));
        assert_eq!(mx[3], (20, "last.example.test".to_string()));
        assert_eq!(mx[1].0, 10);
        assert_eq!(mx[2].0, 10);
        seen.insert((mx[1].1.clone(), mx[2].1.clone()));
        if seen.len() == 2 {
            break;
        }
    }
    let want: HashSet<(String, String)> = [
        ("a.example.test".into(), "b.example.test".into()),
        ("b.example.test".into(), "a.example.test".into()),
    ]
    .into();
    assert_eq!(seen, want, "both orders of the two preference-10 hosts");
}

#[test]
fn a_domain_without_mx_is_its_own_implicit_mx() {
    let server = DnsServer::builder()
        .a("nomx.test", Ipv4Addr::new(127, 0, 0, 4))
        .start();
    let dns = dns(&server);
    assert_eq!(dns.mx("nomx.test"), Err(DnsError::NoData));
    assert_eq!(
        dns.targets("nomx.test").unwrap(),
        vec![Target {
            host: "nomx.test".into(),
            preference: 0,
            addrs: vec![v4(127, 0, 0, 4)],
        }]
    );
}

#[test]
fn nxdomain_is_permanent() {
    let server = DnsServer::builder()
        .mx("example.test", 10, "mx1.example.test")
        .a("mx1.example.test", Ipv4Addr::new(127, 0, 0, 2))
        .start();
    let dns = dns(&server);
    for r in [
        dns.targets("nothere.example.test").map(|_| ()),
        dns.mx("nothere.test").map(|_| ()),
        dns.ips("nothere.example.test").map(|_| ()),
    ] {
        let e = r.unwrap_err();
        assert_eq!(e, DnsError::NxDomain);
        assert!(e.is_permanent());
    }
}

#[test]
fn null_mx_is_permanent() {
    let server = DnsServer::builder()
        .null_mx("nullmx.test")
        .a("nullmx.test", Ipv4Addr::new(127, 0, 0, 5))
        .start();
    let dns = dns(&server);
    assert_eq!(dns.mx("nullmx.test"), Err(DnsError::NullMx));
    let e = dns.targets("nullmx.test").unwrap_err();
    assert_eq!(e, DnsError::NullMx);
    assert!(e.is_permanent());
}

#[test]
fn servfail_is_temporary() {
    let server = DnsServer::builder().servfail("broken.test").start();
    let dns = dns(&server);
    for r in [
        dns.mx("broken.test").map(|_| ()),
        dns.targets("broken.test").map(|_| ()),
        dns.ips("broken.test").map(|_| ()),
    ] {
        let e = r.unwrap_err();
        assert!(matches!(e, DnsError::Temporary(_)), "{e:?}");
        assert!(!e.is_permanent());
    }
}

#[test]
fn a_silent_server_is_temporary() {
    let server = DnsServer::builder().silent("slow.test").start();
    let dns = dns(&server);
    let e = dns.targets("slow.test").unwrap_err();
    assert!(matches!(e, DnsError::Temporary(_)), "{e:?}");
    assert!(!e.is_permanent());
    assert!(server.queries() >= 1, "the question reached the server");
}

#[test]
fn threads_share_one_resolver() {
    let server = DnsServer::builder()
        .silent("slow.test")
        .mx("example.test", 10, "mx1.example.test")
        .a("mx1.example.test", Ipv4Addr::new(127, 0, 0, 2))
        .start();
    let dns = Arc::new(dns(&server));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let dns = dns.clone();
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    assert!(matches!(dns.mx("slow.test"), Err(DnsError::Temporary(_))));
                } else {
                    let t = dns.targets("example.test").unwrap();
                    assert_eq!(t[0].addrs, vec![v4(127, 0, 0, 2)]);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("lookup thread");
    }
}

#[test]
fn ipv6_addresses_are_returned() {
    let v6: Ipv6Addr = "fd00::25".parse().unwrap();
    let server = DnsServer::builder()
        .mx("example.test", 10, "dual.example.test")
        .mx("example.test", 20, "v6only.example.test")
        .a("dual.example.test", Ipv4Addr::new(127, 0, 0, 2))
        .aaaa("dual.example.test", Ipv6Addr::LOCALHOST)
        .aaaa("v6only.example.test", v6)
        .start();
    let dns = dns(&server);
    assert_eq!(
        dns.ips("dual.example.test").unwrap(),
        vec![v4(127, 0, 0, 2), IpAddr::V6(Ipv6Addr::LOCALHOST)]
    );
    assert_eq!(
        dns.ips("v6only.example.test").unwrap(),
        vec![IpAddr::V6(v6)]
    );
    let t = dns.targets("example.test").unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[1].addrs, vec![IpAddr::V6(v6)]);
}

#[test]
fn an_ip_literal_needs_no_lookup() {
    let server = DnsServer::builder()
        .a("host.test", Ipv4Addr::new(127, 0, 0, 2))
        .start();
    let dns = dns(&server);
    assert_eq!(dns.ips("127.0.0.9").unwrap(), vec![v4(127, 0, 0, 9)]);
    assert_eq!(
        dns.ips("::1").unwrap(),
        vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]
    );
    assert_eq!(server.queries(), 0);
    assert_eq!(dns.ips("host.test").unwrap(), vec![v4(127, 0, 0, 2)]);
    assert!(server.queries() >= 1);
}

#[test]
fn an_mx_host_without_addresses_is_kept_with_an_empty_list() {
    let server = DnsServer::builder()
        .mx("example.test", 10, "gone.example.test") // NXDOMAIN
        .mx("example.test", 20, "mx2.example.test")
        .mx("example.test", 30, "noaddr.example.test") // exists, no A/AAAA
        .mx("noaddr.example.test", 10, "mx2.example.test")
        .a("mx2.example.test", Ipv4Addr::new(127, 0, 0, 3))
        .start();
    let dns = dns(&server);
    assert_eq!(dns.ips("noaddr.example.test"), Err(DnsError::NoData));
    let t = dns.targets("example.test").unwrap();
    let got: Vec<(&str, u16, &[IpAddr])> = t
        .iter()
        .map(|t| (t.host.as_str(), t.preference, t.addrs.as_slice()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("gone.example.test", 10, &[][..]),
            ("mx2.example.test", 20, &[v4(127, 0, 0, 3)][..]),
            ("noaddr.example.test", 30, &[][..]),
        ]
    );
}

#[test]
fn mx_hosts_that_all_fail_temporarily_are_temporary() {
    let server = DnsServer::builder()
        .mx("example.test", 10, "broken.example.test")
        .mx("example.test", 20, "slow.example.test")
        .servfail("broken.example.test")
        .silent("slow.example.test")
        .start();
    let dns = dns(&server);
    let e = dns.targets("example.test").unwrap_err();
    assert!(matches!(e, DnsError::Temporary(_)), "{e:?}");
}

#[test]
fn a_large_answer_comes_over_tcp() {
    // 60 MX records do not fit a UDP answer: the server truncates, the resolver asks again over TCP.
    let mut builder = DnsServer::builder();
    for i in 0..60u16 {
        builder = builder.mx(
            "big.test",
            i,
            &format!("a-rather-long-mail-exchanger-name-{i:02}.big.test"),
        );
    }
    let server = builder.start();
    let dns = dns(&server);
    let mx = dns.mx("big.test").unwrap();
    assert_eq!(mx.len(), 60);
    assert!(server.tcp_queries() >= 1, "the answer came over TCP");
    for (i, (pref, host)) in mx.iter().enumerate() {
        assert_eq!(usize::from(*pref), i);
        assert_eq!(
            *host,
            format!("a-rather-long-mail-exchanger-name-{i:02}.big.test")
        );
    }
}
