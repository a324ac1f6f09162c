//! The idle footprint: a server that has nothing to do keeps no DNS runtime, no delivery thread and
//! no outbound TLS configuration; they start with the first mail that needs them. What is only put
//! off is still checked at start-up: a bad OutboundTlsCaFile stops the server.

mod common;
use common::sink::Sink;
use common::*;

use std::fs;

/// The names of the server's threads (Linux: /proc/PID/task/*/comm).
#[cfg(target_os = "linux")]
fn threads(srv: &Server) -> Vec<String> {
    let pid = srv.pid().expect("running");
    let mut names: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the server's task list")
        .filter_map(|t| t.ok())
        .filter_map(|t| fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

#[cfg(target_os = "linux")]
#[test]
fn delivery_threads_and_dns_start_with_the_first_message() {
    let sink = Sink::start_default();
    let dns = dns::DnsServer::builder()
        .a("relay.example.test", std::net::Ipv4Addr::LOCALHOST)
        .start();
    let srv = Builder::new()
        .key("DnsServers", &dns.addr.to_string())
        .key(
            "SmartHost",
            &format!("relay.example.test:{}", sink.addr.port()),
        )
        .key("SmartHostType", "2")
        .start();
    let idle = threads(&srv);
    assert!(
        !idle.iter().any(|t| t == "dns-io" || t == "delivery"),
        "idle server: {idle:?}"
    );
    assert!(
        idle.len() <= 8,
        "idle server runs {} threads: {idle:?}",
        idle.len()
    );

    let mut c = srv.connect();
    c.hello();
    let r = c.send_mail("a@b.test", &["r@remote.test"], &message("first"));
    assert!(r.last().starts_with("250 2.6.0"), "{r:?}");
    assert_eq!(sink.wait_messages(1).len(), 1);
    let busy = threads(&srv);
    assert!(busy.iter().any(|t| t == "dns-io"), "{busy:?}");
    assert!(busy.iter().any(|t| t == "delivery"), "{busy:?}");
}

#[test]
fn an_outbound_ca_file_without_certificates_stops_start_up() {
    let dir = TempDir::new("ca");
    let ca = dir.path().join("ca.pem");
    fs::write(&ca, "not a certificate\n").unwrap();
    let ini = Builder::new()
        .key("OutboundTlsCaFile", &ca.to_string_lossy())
        .ini();
    let conf = dir.path().join("smtpsvc.ini");
    fs::write(&conf, ini).unwrap();
    let run = run_bin(
        &["serve", "--config", &conf.to_string_lossy()],
        Some(dir.path()),
        None,
    );
    let text = run.stderr;
    assert!(!run.status.success(), "started on a bad CA file:\n{text}");
    assert!(
        text.contains("OutboundTlsCaFile") && text.contains("no certificate"),
        "{text}"
    );
}
