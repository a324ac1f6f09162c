//! Scale-out behind a real HAProxy (Debian's `haproxy`; docs/scale-out.md): two mailroot instances,
//! each with its own mailroot and `ProxyProtocolFrom = 127.0.0.1`, behind one HAProxy frontend in
//! TCP mode that sends PROXY v2 to both (round robin, an SMTP health check). Clients connect to the
//! frontend from 127.0.0.2 to 127.0.0.5, one message per connection, and try again on any error
//! before their 250. Midway one instance is stopped gracefully (SIGTERM). Then: every 250 a client
//! got is exactly one file in one of the two Drop folders (none lost, none twice), both instances
//! took mail, and each one's Received headers and W3C log name the real clients, not HAProxy.
//!
//! The test skips, printing why, when `haproxy` is not installed; under CI (`CI=true`) it fails
//! instead: .ci/run installs the package.
#![cfg(unix)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Builder, Dial, Server, TempDir, free_port, read_text, w3c_records, wait_until};

/// Client source addresses.
const CLIENTS: [&str; 4] = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
/// Messages each client sends.
const PER_CLIENT: usize = 50;
/// Acknowledged messages after which instance B is stopped.
const STOP_AFTER: usize = 60;
/// A client's pause between messages, so that the run outlasts the stop.
const PAUSE: Duration = Duration::from_millis(10);

/// The haproxy binary, or why there is none (skip, or under CI fail).
fn haproxy() -> Option<&'static str> {
    for bin in ["haproxy", "/usr/sbin/haproxy"] {
        if Command::new(bin)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return Some(bin);
        }
    }
    let reason = "haproxy is not installed (Debian: apt-get install haproxy)";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{reason}; .ci/run installs it, so CI does not skip");
    }
    eprintln!("skipped: {reason}");
    None
}

/// A running HAProxy, killed on drop.
struct Haproxy {
    child: Child,
    _dir: TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HAProxy configuration: a TCP frontend on `front`, round robin over `backends` with PROXY v2,
/// health checks that speak SMTP (HELO, a 2xx) after a PROXY v2 LOCAL header, and a failed connect
/// retried on the other server.
fn config(front: SocketAddr, backends: &[SocketAddr]) -> String {
    let mut c = format!(
        "global\n    maxconn 500\n\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    retries 3\n    option redispatch\n\n\
         frontend smtp\n    bind {front}\n    default_backend mailroot\n\n\
         backend mailroot\n    balance roundrobin\n    option smtpchk HELO lb.mailroot.test\n"
    );
    for (i, b) in backends.iter().enumerate() {
        c.push_str(&format!(
            "    server m{i} {b} send-proxy-v2 check check-send-proxy inter 300ms fall 1 rise 2\n"
        ));
    }
    c
}

fn start_haproxy(bin: &str, front: SocketAddr, backends: &[SocketAddr]) -> Haproxy {
    let dir = TempDir::new("haproxy");
    let cfg = dir.path().join("haproxy.cfg");
    fs::write(&cfg, config(front, backends)).expect("write haproxy.cfg");
    let check = Command::new(bin)
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .expect("run haproxy -c");
    assert!(
        check.status.success(),
        "haproxy -c: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(bin)
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy");
    let h = Haproxy { child, _dir: dir };
    assert!(
        wait_until(|| TcpStream::connect(front).is_ok()),
        "haproxy does not listen on {front}"
    );
    h
}

/// One message through the frontend from `source`, on a new connection; Ok once it got its 250.
fn send_one(front: SocketAddr, source: &str, subject: &str) -> Result<(), String> {
    let mut c = Dial::new()
        .from(source)
        .timeout(Duration::from_secs(10))
        .plain(front)
        .map_err(|e| format!("connect: {e}"))?;
    c.check_reply("greeting", 220)?;
    c.check("EHLO client.test", 250)?;
    c.check("MAIL FROM:<app@example.test>", 250)?;
    c.check("RCPT TO:<u@local.test>", 250)?;
    c.check("DATA", 354)?;
    c.try_send(format!("{}\r\n.\r\n", common::message(subject)).as_bytes())?;
    c.check_reply("end of data", 250)?;
    let _ = c.check("QUIT", 221);
    Ok(())
}

/// The subjects of the messages in an instance's Drop folder, with the client address each one's
/// Received header names.
fn dropped(srv: &Server) -> Vec<(String, String)> {
    srv.files("Drop")
        .iter()
        .map(|p| {
            let text = read_text(p);
            let subject = text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or_else(|| panic!("no Subject in {text}"))
                .to_string();
            let from = text
                .split("Received: from client.test ([")
                .nth(1)
                .and_then(|r| r.split(']').next())
                .unwrap_or_else(|| panic!("no Received from client.test in {text}"))
                .to_string();
            (subject, from)
        })
        .collect()
}

#[test]
fn two_instances_behind_haproxy_lose_nothing_when_one_stops() {
    let Some(bin) = haproxy() else { return };
    let instance = || {
        Builder::new()
            .key("ProxyProtocolFrom", "127.0.0.1")
            // The clients may not relay; they only send to the local domain.
            .key("RelayIpList", "127.0.0.1")
            .start()
    };
    let a = instance();
    let mut b = instance();
    let front: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let _lb = start_haproxy(bin, front, &[a.addr(), b.addr()]);

    let acked = Arc::new(AtomicUsize::new(0));
    let subjects = Arc::new(Mutex::new(Vec::new()));
    let retries = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = CLIENTS
        .iter()
        .map(|&source| {
            let (acked, subjects, retries) = (acked.clone(), subjects.clone(), retries.clone());
            thread::spawn(move || {
                for i in 0..PER_CLIENT {
                    let subject = format!("m-{source}-{i}");
                    let until = Instant::now() + Duration::from_secs(60);
                    loop {
                        match send_one(front, source, &subject) {
                            Ok(()) => break,
                            Err(e) => {
                                assert!(
                                    Instant::now() < until,
                                    "{subject}: still failing after 60 s: {e}"
                                );
                                retries.fetch_add(1, Ordering::Relaxed);
                                thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                    subjects.lock().unwrap().push(subject);
                    acked.fetch_add(1, Ordering::AcqRel);
                    thread::sleep(PAUSE);
                }
            })
        })
        .collect();

    // Midway, B stops gracefully: it takes no new connection, finishes what it has, exits 0.
    assert!(
        common::wait_for(Duration::from_secs(60), || acked.load(Ordering::Acquire)
            >= STOP_AFTER),
        "the clients did not get {STOP_AFTER} messages through"
    );
    let at_stop = acked.load(Ordering::Acquire);
    let status = b.terminate();
    assert!(status.success(), "instance B exited with {status}");
    let at_exit = acked.load(Ordering::Acquire);

    for c in clients {
        c.join().expect("client thread");
    }
    let total = acked.load(Ordering::Acquire);
    assert_eq!(total, CLIENTS.len() * PER_CLIENT);
    assert!(
        at_exit < total,
        "B exited only after the run ({at_exit} of {total}): nothing shows A taking over"
    );

    // Every 250 is one file in one Drop folder: none lost, none twice.
    let in_a = dropped(&a);
    let in_b = dropped(&b);
    let mut seen = BTreeMap::new();
    for (s, _) in in_a.iter().chain(&in_b) {
        *seen.entry(s.clone()).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    let acked_subjects: BTreeSet<String> = subjects.lock().unwrap().iter().cloned().collect();
    let stored: BTreeSet<String> = seen.keys().cloned().collect();
    assert_eq!(
        acked_subjects, stored,
        "acknowledged and stored messages differ"
    );
    assert_eq!(in_a.len() + in_b.len(), total);
    assert!(
        !in_a.is_empty() && !in_b.is_empty(),
        "round robin sent mail to both: A {} B {}",
        in_a.len(),
        in_b.len()
    );

    // Each instance saw the real clients: in its Received headers and its W3C log.
    for (name, srv, files) in [("A", &a, &in_a), ("B", &b, &in_b)] {
        let from: BTreeSet<&str> = files.iter().map(|(_, f)| f.as_str()).collect();
        assert!(
            from.iter().all(|ip| CLIENTS.contains(ip)),
            "{name}'s Received headers name {from:?}"
        );
        let text = srv.wait_w3c(1, |t| {
            w3c_records(t)
                .iter()
                .filter(|f| f[3] == "client.test" && f[8] == "DATA")
                .count()
                >= files.len()
        });
        let ips: BTreeSet<String> = w3c_records(&text)
            .into_iter()
            .filter(|f| f[3] == "client.test")
            .map(|f| f[2].clone())
            .collect();
        assert!(
            ips.iter().all(|ip| CLIENTS.contains(&ip.as_str())),
            "{name}'s W3C log names {ips:?} for the clients"
        );
    }
    let all: BTreeSet<&str> = in_a.iter().chain(&in_b).map(|(_, f)| f.as_str()).collect();
    assert_eq!(all, CLIENTS.iter().copied().collect(), "every client seen");
    eprintln!(
        "haproxy: {total} messages, A {} B {} (B stopped after {at_stop}, gone after {at_exit}), {} retries",
        in_a.len(),
        in_b.len(),
        retries.load(Ordering::Relaxed)
    );
}
