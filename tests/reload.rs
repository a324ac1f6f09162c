//! Reload without downtime (issue 12), with the real binary: the configuration is read again on
//! SIGHUP and on `mailroot reload`, twenty times while clients send without pause, changing the relay
//! list, a limit, the bindings and the TLS certificate: no session fails, no message is lost or
//! written twice, and each change is seen by the next session. A broken file keeps the running
//! settings (the log names file and line); a key that only a restart can change keeps its running
//! value and is named by `mailroot check` and the log.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use common::sink::{TestCa, TlsCert};
use common::*;

/// The changing part of the configuration: what one reload turns on.
struct Variant<'a> {
    relay_second_ip: bool,
    size: u64,
    cert: &'a TlsCert,
    extra_port: Option<u16>,
}

fn ini(base: &str, dir: &Path, v: &Variant<'_>, port: u16) -> String {
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    // Write the key files first: the configuration names them, and a reload reads them.
    let tmp = dir.join("pem.tmp");
    fs::create_dir_all(&tmp).expect("tmp dir");
    let (tc, tk) = v.cert.write_pem(&tmp);
    fs::rename(tc, &c).expect("cert in place");
    fs::rename(tk, &k).expect("key in place");
    let bindings = match v.extra_port {
        Some(p) => format!("127.0.0.1:{port}, 127.0.0.1:{p}"),
        None => format!("127.0.0.1:{port}"),
    };
    format!(
        "{base}ServerBindings = {bindings}\nMaxMessageSize = {}\nRelayIpList = 127.0.0.1{}\nTlsCertificateFile = {}\nTlsKeyFile = {}\n",
        v.size,
        if v.relay_second_ip { ", 127.0.0.2" } else { "" },
        c.display(),
        k.display()
    )
}

fn base() -> String {
    Builder::new()
        .unset("ServerBindings")
        .unset("RelayIpList")
        .ini()
}

/// Sends messages to local recipients from `clients` threads until `stop`, each over its own
/// connection; counts successes and records every failure.
fn load(
    addr: SocketAddr,
    clients: usize,
    stop: &Arc<AtomicBool>,
    sent: &Arc<AtomicUsize>,
    errors: &Arc<std::sync::Mutex<Vec<String>>>,
) -> Vec<thread::JoinHandle<()>> {
    (0..clients)
        .map(|t| {
            let (stop, sent, errors) = (stop.clone(), sent.clone(), errors.clone());
            thread::spawn(move || {
                let mut n = 0;
                // Bounded: at most 20,000 messages per thread.
                while !stop.load(Ordering::Acquire) && n < 20_000 {
                    let subject = format!("load-{t}-{n}");
                    n += 1;
                    let r = (|| -> Result<(), String> {
                        let mut c = Dial::new().plain(addr).map_err(|e| e.to_string())?;
                        c.check_reply("greeting", 220)?;
                        c.check("EHLO load.test", 250)?;
                        c.check("MAIL FROM:<app@local.test>", 250)?;
                        c.check("RCPT TO:<user@local.test>", 250)?;
                        c.check("DATA", 354)?;
                        c.try_send(format!("{}\r\n", message(&subject)).as_bytes())?;
                        c.check(".", 250)?;
                        c.check("QUIT", 221)?;
                        Ok(())
                    })();
                    match r {
                        Ok(()) => {
                            sent.fetch_add(1, Ordering::AcqRel);
                        }
                        Err(e) => errors
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("{subject}: {e}")),
                    }
                }
            })
        })
        .collect()
}

/// `mailroot reload --config <ini>`, which must confirm.
fn reload(srv: &Server) {
    let conf = srv.dir.path().join("smtpsvc.ini");
    let r = run_bin(
        &["reload", "--config", &conf.display().to_string()],
        None,
        None,
    );
    assert!(r.ok(), "mailroot reload failed:\n{}", r.both());
}

fn size_of(addr: SocketAddr) -> u64 {
    let mut c = Client::connect(addr);
    c.greeting();
    let ehlo = c.ehlo().text();
    c.quit();
    ehlo.lines()
        .find_map(|l| l.trim().strip_prefix("SIZE "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no SIZE in {ehlo}"))
}

fn relays_from_second_ip(addr: SocketAddr) -> bool {
    let mut c = Client::connect_from("127.0.0.2", addr);
    c.greeting();
    c.ehlo();
    c.ok("MAIL FROM:<app@local.test>", 250);
    let r = c.cmd("RCPT TO:<someone@remote.test>");
    c.quit();
    match r.code {
        250 => true,
        550 => false,
        _ => panic!("RCPT from 127.0.0.2: {}", r.text()),
    }
}

fn tls_trusted(addr: SocketAddr, ca: &TestCa) -> bool {
    let mut c = Client::connect(addr);
    c.greeting();
    c.ehlo();
    c.starttls(&ca.client_config(), "localhost").is_ok()
}

#[test]
fn reload_twenty_times_under_load_loses_nothing_and_each_change_takes_effect() {
    let (ca_a, ca_b) = (TestCa::new(), TestCa::new());
    let (cert_a, cert_b) = (ca_a.leaf(), ca_b.leaf());
    let dir = TempDir::new("reload");
    let port = free_port("127.0.0.1");
    let first = Variant {
        relay_second_ip: false,
        size: 100_000,
        cert: &cert_a,
        extra_port: None,
    };
    let text = ini(&base(), dir.path(), &first, port);
    let srv = Server::start_in(dir, &text);
    let addr = srv.addr();
    assert!(!relays_from_second_ip(addr));

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients = load(addr, 4, &stop, &sent, &errors);

    let conf = srv.dir.path().join("smtpsvc.ini");
    let mut extra_seen = 0;
    for i in 0..20u16 {
        let v = Variant {
            relay_second_ip: i % 2 == 0,
            size: 100_000 + u64::from(i),
            cert: if i % 2 == 0 { &cert_b } else { &cert_a },
            extra_port: (i % 4 == 0).then(|| free_port("127.0.0.1")),
        };
        let text = ini(&base(), srv.dir.path(), &v, port);
        fs::write(&conf, &text).expect("write the configuration");
        if i == 7 {
            // The signal itself, as systemd's ExecReload sends it.
            let pid = srv.pid().expect("pid");
            let before = fs::metadata(srv.mailroot().join("mailroot.running.ini"))
                .and_then(|m| m.modified())
                .expect("running settings");
            let st = std::process::Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .expect("kill");
            assert!(st.success());
            assert!(
                wait_until(|| fs::metadata(srv.mailroot().join("mailroot.running.ini"))
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t != before)),
                "no reload after SIGHUP"
            );
        } else {
            reload(&srv);
        }
        // Each change is what the next session sees.
        assert_eq!(size_of(addr), v.size, "reload {i}: MaxMessageSize");
        assert_eq!(
            relays_from_second_ip(addr),
            v.relay_second_ip,
            "reload {i}: RelayIpList"
        );
        let ca = if i % 2 == 0 { &ca_b } else { &ca_a };
        let other = if i % 2 == 0 { &ca_a } else { &ca_b };
        assert!(tls_trusted(addr, ca), "reload {i}: the new certificate");
        assert!(
            !tls_trusted(addr, other),
            "reload {i}: still the old certificate"
        );
        // A new binding listens at once; it is gone after the next reload.
        if let Some(p) = v.extra_port {
            let extra = SocketAddr::from(([127, 0, 0, 1], p));
            assert_eq!(size_of(extra), v.size, "reload {i}: the new binding");
            extra_seen += 1;
        }
    }
    assert_eq!(extra_seen, 5);
    stop.store(true, Ordering::Release);
    for c in clients {
        c.join().expect("client thread");
    }
    let errs = errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(errs.is_empty(), "sessions failed during reloads: {errs:?}");
    let n = sent.load(Ordering::Acquire);
    assert!(n >= 20, "only {n} messages sent during 20 reloads");
    // Every accepted message is in Drop, once.
    let texts = srv.drop_texts(n);
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for t in &texts {
        let subject = t
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or("")
            .to_string();
        *per.entry(subject).or_default() += 1;
    }
    assert_eq!(texts.len(), n, "accepted {n}, in Drop {}", texts.len());
    assert!(per.values().all(|c| *c == 1), "a message written twice");
    assert!(
        srv.log_text().matches("reloaded configuration").count() >= 20,
        "{}",
        srv.log_text()
    );
}

#[test]
fn removed_binding_stops_listening_and_its_sessions_finish() {
    let ca = TestCa::new();
    let cert = ca.leaf();
    let dir = TempDir::new("reload-bind");
    let (port, extra) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let v = Variant {
        relay_second_ip: false,
        size: 5000,
        cert: &cert,
        extra_port: Some(extra),
    };
    let text = ini(&base(), dir.path(), &v, port);
    let srv = Server::start_in(dir, &text);
    let extra_addr = SocketAddr::from(([127, 0, 0, 1], extra));
    // A session on the binding about to go.
    let mut open = Client::connect(extra_addr);
    open.greeting();
    open.ehlo();
    open.ok("MAIL FROM:<app@local.test>", 250);
    let v2 = Variant {
        extra_port: None,
        ..v
    };
    fs::write(
        srv.dir.path().join("smtpsvc.ini"),
        ini(&base(), srv.dir.path(), &v2, port),
    )
    .expect("write");
    reload(&srv);
    assert!(
        wait_until(|| std::net::TcpStream::connect_timeout(&extra_addr, POLL).is_err()),
        "still listening on the removed binding"
    );
    // The session that came in on it goes on to the end.
    open.ok("RCPT TO:<user@local.test>", 250);
    open.ok("DATA", 354);
    open.send(format!("{}\r\n", message("after-unbind")).as_bytes());
    open.ok(".", 250);
    open.quit();
    assert_eq!(srv.drop_texts(1).len(), 1);
}

#[test]
fn broken_configuration_keeps_the_running_one() {
    let ca = TestCa::new();
    let cert = ca.leaf();
    let dir = TempDir::new("reload-broken");
    let port = free_port("127.0.0.1");
    let v = Variant {
        relay_second_ip: false,
        size: 7777,
        cert: &cert,
        extra_port: None,
    };
    let good = ini(&base(), dir.path(), &v, port);
    let srv = Server::start_in(dir, &good);
    let conf = srv.dir.path().join("smtpsvc.ini");
    let broken = good.replace("MaxMessageSize = 7777", "MaxMessageSize = lots");
    let line = broken
        .lines()
        .position(|l| l.starts_with("MaxMessageSize"))
        .expect("the key")
        + 1;
    fs::write(&conf, &broken).expect("write");

    // `mailroot reload` checks first and does not ask the server.
    let r = run_bin(
        &["reload", "--config", &conf.display().to_string()],
        None,
        None,
    );
    assert!(!r.ok());
    assert!(
        r.both()
            .contains(&format!("smtpsvc.ini:{line}: MaxMessageSize")),
        "{}",
        r.both()
    );
    // SIGHUP: the server logs file and line and keeps serving the old settings.
    let pid = srv.pid().expect("pid");
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let want = format!("smtpsvc.ini:{line}: MaxMessageSize");
    assert!(
        wait_until(|| srv.log_text().contains(&want)),
        "the log does not name the file and line:\n{}",
        srv.log_text()
    );
    assert!(srv.log_text().contains("the running configuration stays"));
    assert_eq!(size_of(srv.addr()), 7777);
    let mut c = srv.connect();
    c.greeting();
    c.ehlo();
    c.send_mail(
        "app@local.test",
        &["user@local.test"],
        &message("still-serving"),
    );
    c.quit();
    assert_eq!(srv.drop_texts(1).len(), 1);
}

#[test]
fn restart_keys_keep_their_running_value_and_check_names_them() {
    let ca = TestCa::new();
    let cert = ca.leaf();
    let dir = TempDir::new("reload-restart");
    let port = free_port("127.0.0.1");
    let v = Variant {
        relay_second_ip: false,
        size: 4242,
        cert: &cert,
        extra_port: None,
    };
    let good = ini(&base(), dir.path(), &v, port);
    let srv = Server::start_in(dir, &good);
    let conf = srv.dir.path().join("smtpsvc.ini");
    let changed = format!("{good}MaxOutConnections = 7\n")
        .replace("MaxMessageSize = 4242", "MaxMessageSize = 4343");
    fs::write(&conf, &changed).expect("write");
    let check = run_bin(
        &["check", "--config", &conf.display().to_string()],
        None,
        None,
    );
    assert!(check.ok(), "{}", check.both());
    assert!(
        check
            .both()
            .contains("needs a restart (a reload keeps the running value): [SmtpSvc/1] MaxOutConnections: running `1000`, the file says `7`"),
        "{}",
        check.both()
    );
    assert!(!check.both().contains(
        "needs a restart (a reload keeps the running value): [SmtpSvc/1] MaxMessageSize"
    ));
    reload(&srv);
    assert_eq!(size_of(srv.addr()), 4343, "the live key took effect");
    assert!(
        wait_until(|| srv
            .log_text()
            .contains("[SmtpSvc/1] MaxOutConnections changed, but only a restart applies it")),
        "{}",
        srv.log_text()
    );
}
