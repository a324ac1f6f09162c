//! Durability of the delivery side, end to end: a SIGKILL in the middle of delivering a queue never
//! loses a recipient and sends to one at most twice; the state file records every recipient.

mod common;
use common::sink::{Sink, SinkBuilder};
use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, SystemTime};

use common::acceptor::Acceptor;

/// The bound for waits that span a restart and several deliveries.
const LONG: Duration = Duration::from_secs(90);

fn base() -> Builder {
    Builder::new().retrying().key("PickupSettleTime", "200ms")
}

// ---------------------------------------------------------------------------------------------
// A slow link: a TCP relay on loopback that holds every chunk for a while, in both directions, so
// that deliveries take long enough for a kill to land in the middle of them.
// ---------------------------------------------------------------------------------------------

struct SlowLink {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    _acceptor: Acceptor,
}

impl SlowLink {
    fn start(target: SocketAddr, delay: Duration) -> SlowLink {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let acceptor = Acceptor::start(move |_, client| {
            let Ok(server) = TcpStream::connect_timeout(&target, WAIT) else {
                return;
            };
            let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                return;
            };
            let f = flag.clone();
            let back = thread::spawn(move || pump(s2, c2, delay, &f));
            pump(client, server, delay, &flag);
            let _ = back.join();
        });
        SlowLink {
            addr: acceptor.addr,
            stop,
            _acceptor: acceptor,
        }
    }
}

/// Copies `from` to `to`, holding each chunk for `delay`; closes both when either side ends. Bounded:
/// reads time out every 100 ms to look at the stop flag.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = to.set_write_timeout(Some(WAIT));
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                thread::sleep(delay);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        // The pumps end within their 100 ms read timeout; then the acceptor stops.
        self.stop.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// kill -9 during delivery
// ---------------------------------------------------------------------------------------------

const MESSAGES: usize = 20;

#[test]
fn kill9_during_delivery_delivers_every_recipient_once_or_twice_and_empties_the_queue() {
    let sink = Sink::start_default();
    // Two routes through two slow links to the same sink: each message has one recipient on each,
    // so an attempt is two transactions with the state written in between.
    let link1 = SlowLink::start(sink.addr, Duration::from_millis(25));
    let link2 = SlowLink::start(sink.addr, Duration::from_millis(25));
    let b = base()
        .key("MaxOutConnectionsPerDomain", "2")
        .route("one.test", link1.addr.port())
        .route("two.test", link2.addr.port());
    let mut srv = b.start();

    // Queue every message first (each gets its 250: mailroot owns it from then on).
    let mut c = srv.connect();
    c.hello();
    for i in 0..MESSAGES {
        c.ok("MAIL FROM:<app@local.test>", 250);
        c.ok(&format!("RCPT TO:<m{i}@one.test>"), 250);
        c.ok(&format!("RCPT TO:<m{i}@two.test>"), 250);
        c.ok("DATA", 354);
        c.send(
            format!("From: app@local.test\r\nTo: m{i}@one.test, m{i}@two.test\r\nSubject: durability {i}\r\n\r\nmessage number {i}\r\n.\r\n")
                .as_bytes(),
        );
        let r = c.reply();
        assert_eq!(r.code, 250, "message {i}: {r:?}");
    }
    c.ok("QUIT", 221);

    // Kill once the next hop has seen some of them, well before all.
    assert!(
        poll_until(WAIT * 2, Duration::from_millis(5), || sink.messages().len()
            >= 6),
        "deliveries did not start; log:\n{}",
        srv.log_text()
    );
    srv.kill9();
    let at_kill = sink.messages().len();
    let left = srv.files("Queue").len();
    assert!(
        left > 0,
        "the kill must land mid-delivery for this test to mean anything (the sink had {at_kill} \
         transactions and Queue was already empty)"
    );
    eprintln!("killed with {at_kill} transactions at the sink and {left} message(s) queued");

    let srv = srv.restart();
    assert!(
        wait_for(LONG, || srv.queue_empty()),
        "Queue not emptied after the restart: {:?}\nlog:\n{}",
        names(&srv.folder("Queue")),
        srv.log_text()
    );
    // Nothing more trickles in after the queue is empty.
    thread::sleep(Duration::from_millis(1500));

    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for m in sink.messages() {
        let text = m.text();
        assert_eq!(m.sender_addr(), "app@local.test", "{m:?}");
        for r in m.rcpt_addrs() {
            let i: usize = r
                .strip_prefix('m')
                .and_then(|x| x.split('@').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected recipient {r}"));
            assert!(
                text.contains(&format!("Subject: durability {i}\r\n"))
                    && text.contains(&format!("message number {i}\r\n")),
                "{r} got the wrong message: {text}"
            );
            *count.entry(r.to_ascii_lowercase()).or_default() += 1;
        }
    }
    let twice: Vec<&String> = count.iter().filter(|e| *e.1 == 2).map(|e| e.0).collect();
    eprintln!("delivered twice (the kill fell between a 250 and its record): {twice:?}");
    let mut problems = Vec::new();
    for i in 0..MESSAGES {
        for d in ["one.test", "two.test"] {
            let r = format!("m{i}@{d}");
            let n = count.get(&r).copied().unwrap_or(0);
            if !(1..=2).contains(&n) {
                problems.push(format!("{r}: delivered {n} time(s)"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "every recipient once or twice, never zero: {problems:?}\nlog:\n{}",
        srv.log_text()
    );
    assert!(srv.files("Drop").is_empty(), "no reports");
    assert!(
        files_with_ext(&srv.folder("Badmail"), "bdr").is_empty(),
        "nothing in Badmail"
    );
    drop(link1);
    drop(link2);
}

// ---------------------------------------------------------------------------------------------
// The state file
// ---------------------------------------------------------------------------------------------

#[test]
fn state_file_after_a_temporary_failure_lists_each_recipient_with_its_reply() {
    let sink: Sink = SinkBuilder::new()
        .on_rcpt("full@", "452 4.2.2 Mailbox full")
        .on_rcpt("later@", "451 4.3.0 Try again later")
        .on_rcpt("nouser@", "550 5.1.1 No such user")
        .start();
    // A long retry interval, so the state stays as the first attempt left it.
    let srv = base()
        .key("SmtpRemoteProgressiveRetry", "60")
        .route("dest.test", sink.addr.port())
        .start();
    let mut c = srv.connect();
    c.hello();
    let rcpts = [
        "ok@dest.test",
        "full@dest.test",
        "later@dest.test",
        "nouser@dest.test",
    ];
    assert_eq!(
        c.send_mail("app@local.test", &rcpts, "Subject: state\r\n\r\nx")
            .code,
        250
    );
    c.ok("QUIT", 221);

    let queue = srv.folder("Queue");
    let mut text = String::new();
    assert!(
        wait_for(WAIT, || {
            text = files_with_ext(&queue, "sta")
                .first()
                .and_then(|p| fs::read_to_string(p).ok())
                .unwrap_or_default();
            text.contains("attempts: 1")
        }),
        "no state file after the first attempt: {:?}\nlog:\n{}",
        names(&srv.folder("Queue")),
        srv.log_text()
    );
    let eml = srv.files("Queue");
    assert_eq!(eml.len(), 1, "the message stays queued");
    assert_eq!(
        files_with_ext(&queue, "sta")[0].file_stem(),
        eml[0].file_stem(),
        "the state file is named after its message"
    );
    let lines: Vec<&str> = text.lines().collect();
    let rcpt_lines: Vec<&&str> = lines.iter().filter(|l| l.starts_with("rcpt: ")).collect();
    assert_eq!(rcpt_lines.len(), 4, "one line per recipient: {text}");
    for (status, addr, reply) in [
        ("done", "ok@dest.test", "250 "),
        ("pending", "full@dest.test", "452 4.2.2 Mailbox full"),
        ("pending", "later@dest.test", "451 4.3.0 Try again later"),
        ("failed", "nouser@dest.test", "550 5.1.1 No such user"),
    ] {
        let prefix = format!("rcpt: {status} {addr} | {reply}");
        let line = lines
            .iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{text}"));
        let remote = line.rsplit(" | ").next().unwrap_or("");
        assert!(
            !remote.trim().is_empty() && !remote.starts_with("rcpt:"),
            "the answering host is named: {line:?}"
        );
    }
    assert!(text.contains("delay-notified: 0"), "{text}");
    let next: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("next-attempt: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no next-attempt in:\n{text}"));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        next > now,
        "the next attempt is in the future ({next} vs now {now})"
    );
    assert_eq!(
        sink.messages()
            .iter()
            .flat_map(|m| m.rcpt_addrs())
            .collect::<Vec<_>>(),
        vec!["ok@dest.test".to_string()],
        "only the accepted recipient got the message"
    );
}
