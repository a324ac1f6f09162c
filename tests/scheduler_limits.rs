//! The scheduler's limits end to end (docs/delivery.md): a SmartHost list that fails over to its
//! second host and returns to the first once its dead period is over, MaxMessagesPerMinute spacing a
//! burst without failing it, and RemoteTransactionTimeout ending a transaction whose next hop drips
//! its final reply. Real servers on loopback; every wait is bounded.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::acceptor::Acceptor;
use common::sink::{Sink, SinkBuilder};
use common::*;

const FQDN: &str = "mx.mailroot.test";
const SENDER: &str = "sender@example.test";

/// Submits one message to `to` with `subject`; returns its queue id.
fn send(srv: &Server, to: &str, subject: &str) -> String {
    let mut c = srv.connect();
    c.hello();
    let r = c.send_mail(SENDER, &[to], &message(subject));
    let id = queued_id(&r, FQDN);
    c.quit();
    id
}

/// Whether `sink` accepted a message with this subject.
fn has(sink: &Sink, subject: &str) -> bool {
    sink.messages().iter().any(|m| m.subject() == subject)
}

/// Runs `start` until the port (just released by someone else) can be bound again, for at most 5 s.
fn rebind<T>(mut start: impl FnMut() -> std::io::Result<T>) -> T {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match start() {
            Ok(t) => return t,
            Err(e) if Instant::now() > until => panic!("rebind the port: {e}"),
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn badmail_empty(srv: &Server) -> bool {
    entries(&srv.folder("Badmail")).is_empty()
}

// ---------------------------------------------------------------------------------------------
// 1. SmartHost lists
// ---------------------------------------------------------------------------------------------

#[test]
fn smart_host_list_fails_over_and_returns() {
    let p1 = Sink::start_default();
    let p2 = Sink::start_default();
    let port1 = p1.addr.port();
    let srv = Builder::new()
        .key(
            "SmartHost",
            &format!("[127.0.0.1]:{port1}; [127.0.0.1]:{}", p2.addr.port()),
        )
        .key("SmartHostType", "2")
        .key("SmtpRemoteProgressiveRetry", "2s")
        .key("RemoteTimeout", "5")
        .key("DeadDestinationFailures", "3")
        // One message per connection: every message chooses its host afresh.
        .key("MaxBatchedMessages", "1")
        .start();
    let log = |srv: &Server| srv.log_text();

    // Both up: the first host of the list takes everything.
    for i in 0..3 {
        let s = format!("primary-{i}");
        send(&srv, "a@remote.test", &s);
        assert!(
            wait_for(WAIT, || has(&p1, &s)),
            "{s} not delivered to the first host; log:\n{}",
            log(&srv)
        );
    }
    assert_eq!(
        p2.messages().len(),
        0,
        "the second host is unused while the first works"
    );

    // The first host goes away: a listener on its port that closes every connection at once.
    drop(p1);
    let hits: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let h = hits.clone();
    let closer = rebind(|| {
        let h = h.clone();
        Acceptor::bind(SocketAddr::from(([127, 0, 0, 1], port1)), move |_, s| {
            h.lock().unwrap().push(Instant::now());
            drop(s);
        })
    });
    let t0 = Instant::now();
    for i in 0..10 {
        let s = format!("failover-{i}");
        send(&srv, "a@remote.test", &s);
        assert!(
            wait_for(WAIT, || has(&p2, &s)),
            "{s} not delivered to the second host in the same attempt; log:\n{}",
            log(&srv)
        );
    }
    let phase = t0.elapsed();
    let attempts = hits.lock().unwrap().len();
    eprintln!("failover: {attempts} connection(s) to the dead first host in {phase:?}");
    assert!(
        attempts <= 3 + 2,
        "the dead first host was tried {attempts} times for 10 messages in {phase:?}; log:\n{}",
        log(&srv)
    );
    assert!(attempts >= 1, "the first host was never tried");
    assert!(
        log(&srv).contains(&format!("next hop 127.0.0.1:{port1} dead until")),
        "no 'dead until' log line; log:\n{}",
        log(&srv)
    );

    // It comes back; once its dead period (2 s after its last failure) is over it is used again.
    let last = *hits.lock().unwrap().last().unwrap();
    drop(closer);
    let p1 = rebind(|| SinkBuilder::new().port(port1).try_start());
    let wake = last + Duration::from_millis(2500);
    thread::sleep(wake.saturating_duration_since(Instant::now()));
    let mut at_p1 = Vec::new();
    for i in 0..4 {
        let s = format!("return-{i}");
        send(&srv, "a@remote.test", &s);
        assert!(
            wait_for(WAIT, || has(&p1, &s) || has(&p2, &s)),
            "{s} not delivered; log:\n{}",
            log(&srv)
        );
        at_p1.push(has(&p1, &s));
    }
    assert_eq!(
        at_p1,
        vec![true; 4],
        "after its dead period the first host takes the mail again (true = first host); log:\n{}",
        log(&srv)
    );
    assert_eq!(
        p2.messages().len(),
        10,
        "the second host got only the failover messages"
    );
    srv.assert_queue_empties(WAIT);
    assert!(badmail_empty(&srv));
}

// ---------------------------------------------------------------------------------------------
// 2. MaxMessagesPerMinute
// ---------------------------------------------------------------------------------------------

#[test]
fn max_messages_per_minute_spaces_a_burst_without_failing_it() {
    const N: usize = 60;
    let sink = Sink::start_default();
    let srv = Builder::new()
        .retrying()
        .smart_host(sink.addr.port())
        .key("MaxMessagesPerMinute", "600")
        .start();
    // 60 transactions over a few connections, as fast as the server takes them.
    for c in 0..6 {
        let mut cl = srv.connect();
        cl.hello();
        for i in 0..N / 6 {
            let r = cl.send_mail(
                SENDER,
                &["a@remote.test"],
                &message(&format!("rate-{}", c * 10 + i)),
            );
            assert_eq!(r.code, 250, "{r:?}");
        }
        cl.quit();
    }
    let mut sta_seen = Vec::new();
    let all = wait_for(Duration::from_secs(25), || {
        for p in srv.files_ext("Queue", "sta") {
            if !sta_seen.contains(&p) {
                sta_seen.push(p);
            }
        }
        sink.count() as usize >= N
    });
    assert!(
        all,
        "{} of {N} delivered within 25 s of the burst; log:\n{}",
        sink.count(),
        srv.log_text()
    );
    thread::sleep(Duration::from_millis(500));
    let got = sink.messages();
    assert_eq!(
        got.len(),
        N,
        "each message exactly once, no report among them"
    );
    assert!(
        got.iter().all(|m| m.sender_addr() == SENDER),
        "a report (null sender) arrived"
    );
    let first = got.iter().map(|m| m.at).min().unwrap();
    let last = got.iter().map(|m| m.at).max().unwrap();
    let spread = last - first;
    let per_sec = got
        .iter()
        .filter(|m| m.at < first + Duration::from_secs(1))
        .count();
    eprintln!("rate cap: {spread:?} first to last, {per_sec} in the first second");
    assert!(
        spread >= Duration::from_secs(4),
        "60 messages at 10/s (burst 10) took only {spread:?} first to last; first second: {per_sec}"
    );
    assert!(
        spread <= Duration::from_secs(15),
        "60 messages at 10/s took {spread:?} first to last"
    );
    assert!(
        per_sec <= 22,
        "{per_sec} messages in the first second (burst 10 + 10/s)"
    );
    assert!(
        sta_seen.is_empty(),
        "waiting under the cap wrote state files: {sta_seen:?}"
    );
    srv.assert_queue_empties(WAIT);
    assert!(badmail_empty(&srv));
}

// ---------------------------------------------------------------------------------------------
// 3. RemoteTransactionTimeout
// ---------------------------------------------------------------------------------------------

/// A next hop that answers everything up to the end of the data normally, then drips its final
/// reply one byte every 500 ms (for at most a minute, until the write fails). `data` is set when a
/// whole message has arrived.
fn dripping_next_hop(data: Arc<AtomicBool>) -> Acceptor {
    Acceptor::start(move |_, stream: TcpStream| {
        let _ = stream.set_read_timeout(Some(WAIT));
        let Ok(mut w) = stream.try_clone() else {
            return;
        };
        let mut r = BufReader::new(stream);
        if w.write_all(b"220 drip.test ESMTP\r\n").is_err() {
            return;
        }
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let up = line.to_ascii_uppercase();
            let reply: &[u8] = if up.starts_with("EHLO") || up.starts_with("HELO") {
                b"250 drip.test\r\n"
            } else if up.starts_with("QUIT") {
                let _ = w.write_all(b"221 bye\r\n");
                return;
            } else if up.starts_with("DATA") {
                if w.write_all(b"354 go ahead\r\n").is_err() {
                    return;
                }
                loop {
                    line.clear();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == ".\r\n" => break,
                        Ok(_) => {}
                    }
                }
                data.store(true, Ordering::SeqCst);
                let head = b"250 2.0.0 ";
                for i in 0..120 {
                    thread::sleep(Duration::from_millis(500));
                    let b = head.get(i).copied().unwrap_or(b'o');
                    if w.write_all(&[b]).is_err() {
                        return;
                    }
                }
                return;
            } else {
                b"250 OK\r\n"
            };
            if w.write_all(reply).is_err() {
                return;
            }
        }
    })
}

#[test]
fn a_dripping_final_reply_ends_at_the_transaction_deadline() {
    let data = Arc::new(AtomicBool::new(false));
    let drip = dripping_next_hop(data.clone());
    let ok = Sink::start_default();
    let srv = Builder::new()
        .key("RemoteTimeout", "5")
        .key("RemoteTransactionTimeout", "3")
        .route("slow.test", drip.addr.port())
        .route("ok.test", ok.addr.port())
        .start();

    let t0 = Instant::now();
    let id = send(&srv, "a@slow.test", "drip");
    let sta = srv.folder("Queue").join(format!("{id}.sta"));
    let mut text = String::new();
    let done = wait_for(Duration::from_secs(10), || {
        text = std::fs::read_to_string(&sta).unwrap_or_default();
        text.contains("took longer than")
    });
    let took = t0.elapsed();
    assert!(
        done,
        "no state saying the transaction took too long within 10 s: {text:?}\nlog:\n{}",
        srv.log_text()
    );
    assert!(data.load(Ordering::SeqCst), "the data reached the next hop");
    assert!(
        text.lines()
            .any(|l| l.starts_with("rcpt: pending a@slow.test")
                && l.contains("took longer than 3 s")),
        "the recipient is pending with the deadline's reason: {text}"
    );
    assert!(
        took >= Duration::from_millis(2500),
        "abandoned after {took:?}, before the 3 s deadline"
    );

    // The delivery threads are still at work: mail for a healthy destination goes out.
    send(&srv, "b@ok.test", "healthy");
    assert!(
        wait_for(WAIT, || has(&ok, "healthy")),
        "the healthy destination got nothing; log:\n{}",
        srv.log_text()
    );
    assert!(badmail_empty(&srv));
    assert_eq!(ok.messages().len(), 1, "one message, no report");
}
