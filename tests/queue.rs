//! The queue and Badmail commands (`mailroot queue …`, `mailroot badmail …`) against a running
//! server, with a dead next hop and a live one, including `retry` during an attempt and `delete`
//! of a message being delivered; and against a stopped server, whose next start finds the change.
//! The retry schedule is ten minutes everywhere, so anything delivered within the tests' bounds
//! was delivered because a command said so.

mod common;
use common::hops::{LONG, SENDER, SETTLE, dns};
use common::sink::Sink;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// A relay sending mail for remote.test, one.test and two.test to 127.0.0.1:`port` (one
/// destination), retrying only every ten minutes; reports go by DNS (sender.test's MX) to port
/// `reports`.
fn relay(port: u16, reports: u16, d: &common::dns::DnsServer) -> Builder {
    Builder::new()
        .route("remote.test", port)
        .route("one.test", port)
        .route("two.test", port)
        .key("SmtpRemoteProgressiveRetry", "10")
        .key("RemoteTimeout", "5")
        .key("RemoteConnectTimeout", "2")
        .key("DnsServers", &d.addr.to_string())
        .key("RemoteSmtpPort", &reports.to_string())
}

fn cli(srv: &Server, args: &[&str]) -> Run {
    let conf = srv.dir.path().join("smtpsvc.ini");
    let mut all: Vec<&str> = args.to_vec();
    let conf = conf.to_string_lossy().to_string();
    all.extend(["--config", &conf]);
    run_bin(&all, None, None)
}

fn json(srv: &Server, args: &[&str]) -> Value {
    let r = cli(srv, args);
    assert!(r.ok(), "{args:?}: {}", r.both());
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}\n{}", r.stdout))
}

/// The queue as `queue list --json` gives it.
fn list(srv: &Server) -> Vec<Value> {
    json(srv, &["queue", "list", "--json"])
        .as_array()
        .cloned()
        .expect("an array")
}

fn ids(srv: &Server) -> Vec<String> {
    list(srv)
        .iter()
        .map(|m| m["id"].as_str().unwrap_or("").to_string())
        .collect()
}

fn send(srv: &Server, subject: &str, to: &str) {
    srv.submit(
        SENDER,
        &[to],
        &format!("From: {SENDER}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nbody of {subject}"),
    );
}

/// Waits until every message in the Queue had an attempt (its state says so).
fn attempted(srv: &Server, n: usize) {
    assert!(
        wait_for(LONG, || {
            let l = list(srv);
            l.len() == n && l.iter().all(|m| m["attempts"].as_u64().unwrap_or(0) >= 1)
        }),
        "{n} message(s) never attempted: {:?}\n{}",
        list(srv),
        srv.log_text()
    );
}

fn id_with(srv: &Server, subject: &str) -> String {
    for id in ids(srv) {
        let r = cli(srv, &["queue", "show", &id]);
        if r.stdout.contains(&format!("Subject: {subject}")) {
            return id;
        }
    }
    panic!("no queued message with subject {subject}: {:?}", list(srv));
}

#[test]
fn dead_then_live_next_hop_list_summary_show_retry_hold_release() {
    let d = dns();
    let reports = Sink::start_default();
    let port = free_port("127.0.0.1");
    let srv = relay(port, reports.addr.port(), &d).start();
    send(&srv, "first", "a@remote.test");
    send(&srv, "second", "b@remote.test");
    attempted(&srv, 2);

    // list --json: each recipient pending, with the last error and the next attempt.
    let l = list(&srv);
    for m in &l {
        assert_eq!(m["sender"], SENDER);
        assert_eq!(m["held"], false);
        assert!(m["size"].as_u64().unwrap() > 50, "{m}");
        assert!(m["next_attempt"].as_u64().unwrap() > 0, "{m}");
        let r = &m["recipients"][0];
        assert_eq!(r["state"], "pending", "{m}");
        assert!(!r["reply"].as_str().unwrap().is_empty(), "last error: {m}");
    }
    let text = cli(&srv, &["queue", "list"]);
    assert!(
        text.ok() && text.stdout.contains("pending   a@remote.test"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("-- 2 message(s)"), "{}", text.stdout);

    // summary: one destination with both, its state from the running server.
    let s = json(&srv, &["queue", "summary", "--json"]);
    assert_eq!(s["running"], true);
    let dests = s["destinations"].as_array().unwrap();
    assert_eq!(dests.len(), 1, "{s}");
    assert_eq!(dests[0]["destination"], format!("host:127.0.0.1:{port}"));
    assert_eq!(dests[0]["count"], 2);
    assert!(
        ["dead", "ready", "probing", "throttled"]
            .contains(&dests[0]["state"].as_str().unwrap_or("")),
        "{s}"
    );
    assert_eq!(
        dests[0]["ages"].as_array().unwrap()[0],
        2,
        "both younger than 5 minutes"
    );
    let st = cli(&srv, &["queue", "summary"]);
    assert!(
        st.stdout.contains("DESTINATION") && st.stdout.contains("TOTAL"),
        "{}",
        st.stdout
    );

    // show: envelope, states and headers; the body only with --body.
    let first = id_with(&srv, "first");
    let second = id_with(&srv, "second");
    let sh = cli(&srv, &["queue", "show", &first]);
    assert!(
        sh.stdout.contains(&format!("Sender:     <{SENDER}>")),
        "{}",
        sh.stdout
    );
    assert!(
        sh.stdout.contains("pending   a@remote.test"),
        "{}",
        sh.stdout
    );
    assert!(!sh.stdout.contains("body of first"), "{}", sh.stdout);
    let sh = cli(&srv, &["queue", "show", &first, "--body"]);
    assert!(sh.stdout.contains("body of first"), "{}", sh.stdout);
    assert!(!cli(&srv, &["queue", "show", "0123456789abcdef0123456"]).ok());

    // The next hop comes up; nothing is due for ten minutes.
    let next = Sink::builder().port(port).start();
    std::thread::sleep(SETTLE);
    assert_eq!(next.count(), 0, "nothing due yet");

    // hold the second, then retry everything: only the first goes.
    let h = cli(&srv, &["queue", "hold", &second]);
    assert!(h.ok() && h.stdout.contains("held"), "{}", h.both());
    let held: Vec<Value> = list(&srv)
        .into_iter()
        .filter(|m| m["held"] == true)
        .collect();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0]["id"], second.as_str());
    let r = cli(&srv, &["queue", "retry", "--all"]);
    assert!(r.ok(), "{}", r.both());
    assert!(
        r.stdout.contains("1 held message(s) stay held"),
        "{}",
        r.stdout
    );
    assert_eq!(next.wait_messages(1).len(), 1);
    assert!(
        wait_for(LONG, || ids(&srv) == vec![second.clone()]),
        "{:?}",
        list(&srv)
    );
    std::thread::sleep(SETTLE);
    assert_eq!(next.count(), 1, "the held message stays");
    let rr = cli(&srv, &["queue", "retry", &second]);
    assert!(rr.stdout.contains("held: release it"), "{}", rr.both());
    assert!(!rr.ok(), "retrying a held message is refused");

    // Held survives a restart.
    let srv = srv.restart();
    std::thread::sleep(SETTLE);
    assert_eq!(next.count(), 1, "still held after a restart");
    assert_eq!(list(&srv)[0]["held"], true);

    // release: due at once.
    let rel = cli(&srv, &["queue", "release", &second]);
    assert!(
        rel.ok() && rel.stdout.contains("released"),
        "{}",
        rel.both()
    );
    let got = next.wait_messages(2);
    assert_eq!(got.len(), 2);
    assert!(got.iter().any(|m| m.subject() == "second"));
    srv.assert_queue_empties(LONG);
    std::thread::sleep(SETTLE);
    assert_eq!(next.count(), 2, "each delivered exactly once");
    assert_eq!(reports.count(), 0, "no report");
}

#[test]
fn retry_probes_a_dead_destination_at_once() {
    let d = dns();
    let reports = Sink::start_default();
    let port = free_port("127.0.0.1");
    let srv = relay(port, reports.addr.port(), &d)
        .key("DeadDestinationFailures", "1")
        .start();
    send(&srv, "dead", "a@remote.test");
    attempted(&srv, 1);
    assert!(
        wait_for(LONG, || {
            json(&srv, &["queue", "summary", "--json"])["destinations"][0]["state"] == "dead"
        }),
        "the destination is dead: {}",
        json(&srv, &["queue", "summary", "--json"])
    );
    let next = Sink::builder().port(port).start();
    let id = ids(&srv)[0].clone();
    let r = cli(&srv, &["queue", "retry", &id]);
    assert!(r.ok() && r.stdout.contains("probed now"), "{}", r.both());
    assert_eq!(next.wait_messages(1).len(), 1, "{}", srv.log_text());
    srv.assert_queue_empties(LONG);
}

#[test]
fn retry_by_domain_takes_only_that_domain() {
    let d = dns();
    let reports = Sink::start_default();
    let port = free_port("127.0.0.1");
    let srv = relay(port, reports.addr.port(), &d).start();
    send(&srv, "one", "a@one.test");
    send(&srv, "two", "b@two.test");
    attempted(&srv, 2);
    let next = Sink::builder().port(port).start();
    let r = cli(&srv, &["queue", "retry", "--domain", "two.test"]);
    assert!(r.ok(), "{}", r.both());
    let got = next.wait_messages(1);
    assert_eq!(got[0].subject(), "two");
    std::thread::sleep(SETTLE);
    assert_eq!(next.count(), 1, "one.test waits for its time");
    assert_eq!(list(&srv).len(), 1);
}

#[test]
fn delete_and_delete_with_a_report() {
    let d = dns();
    let reports = Sink::start_default();
    let port = free_port("127.0.0.1");
    let srv = relay(port, reports.addr.port(), &d).start();
    send(&srv, "gone", "a@remote.test");
    send(&srv, "returned", "b@remote.test");
    attempted(&srv, 2);
    let gone = id_with(&srv, "gone");
    let returned = id_with(&srv, "returned");

    let r = cli(&srv, &["queue", "delete", &gone]);
    assert!(r.ok() && r.stdout.contains("deleted"), "{}", r.both());
    assert!(!ids(&srv).contains(&gone));
    let r = cli(&srv, &["queue", "delete", &returned, "--ndr"]);
    assert!(
        r.ok() && r.stdout.contains("non-delivery report"),
        "{}",
        r.both()
    );
    let got = reports.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert_eq!(got[0].rcpt_addrs(), vec![SENDER.to_string()]);
    assert!(
        got[0]
            .text()
            .contains("deleted from the queue by the administrator"),
        "{}",
        got[0].text()
    );
    srv.assert_queue_empties(LONG);
    let again = cli(&srv, &["queue", "delete", &gone]);
    assert!(
        !again.ok() && again.stdout.contains("no such message"),
        "{}",
        again.both()
    );
    std::thread::sleep(SETTLE);
    assert_eq!(reports.count(), 1, "one report, for the --ndr one only");
}

/// A next hop that holds each message at its final dot until the test says how to answer.
struct Gate {
    addr: SocketAddr,
    delivered: Arc<AtomicUsize>,
    at_dot: Receiver<()>,
    answer: Sender<&'static str>,
}

fn gate() -> Gate {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let delivered = Arc::new(AtomicUsize::new(0));
    let (dot_tx, at_dot) = channel();
    let (answer, answers) = channel::<&'static str>();
    let answers = Arc::new(Mutex::new(answers));
    let count = delivered.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().take(50) {
            let Ok(conn) = conn else { continue };
            let (dot_tx, answers, count) = (dot_tx.clone(), answers.clone(), count.clone());
            std::thread::spawn(move || serve_gate(conn, dot_tx, answers, count));
        }
    });
    Gate {
        addr,
        delivered,
        at_dot,
        answer,
    }
}

fn serve_gate(
    conn: TcpStream,
    at_dot: Sender<()>,
    answers: Arc<Mutex<Receiver<&'static str>>>,
    count: Arc<AtomicUsize>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let _ = w.write_all(b"220 gate ESMTP\r\n");
    let mut line = String::new();
    for _ in 0..1000 {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.to_ascii_uppercase();
        let reply: String = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
            "250 gate\r\n".into()
        } else if cmd.starts_with("DATA") {
            let _ = w.write_all(b"354 go on\r\n");
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" {
                    break;
                }
            }
            let _ = at_dot.send(());
            let a = answers
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or("451 4.3.0 no answer");
            if a.starts_with("250") {
                count.fetch_add(1, Ordering::SeqCst);
            }
            format!("{a}\r\n")
        } else if cmd.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else {
            "250 ok\r\n".into()
        };
        let _ = w.write_all(reply.as_bytes());
    }
}

#[test]
fn retry_during_an_attempt_is_applied_when_it_ends() {
    let d = dns();
    let reports = Sink::start_default();
    let g = gate();
    let srv = relay(g.addr.port(), reports.addr.port(), &d).start();
    send(&srv, "during", "a@remote.test");
    g.at_dot
        .recv_timeout(LONG)
        .expect("the attempt reaches the dot");
    let id = ids(&srv)[0].clone();
    let r = cli(&srv, &["queue", "retry", &id]);
    assert!(
        r.ok() && r.stdout.contains("being delivered now"),
        "{}",
        r.both()
    );
    let l = list(&srv);
    assert_eq!(l[0]["in_delivery"], true, "{l:?}");
    // This attempt fails; the retry asked for during it makes it due at once, not in ten minutes.
    g.answer.send("451 4.3.0 try later").unwrap();
    g.at_dot
        .recv_timeout(LONG)
        .expect("attempted again at once");
    g.answer.send("250 2.0.0 ok").unwrap();
    srv.assert_queue_empties(LONG);
    std::thread::sleep(SETTLE);
    assert_eq!(g.delivered.load(Ordering::SeqCst), 1, "delivered once");
}

/// `mailroot queue delete ID` on a thread of its own (it waits for the attempt in progress).
fn delete_in_background(srv: &Server, id: &str) -> std::thread::JoinHandle<Run> {
    let (conf, id) = (srv.dir.path().join("smtpsvc.ini"), id.to_string());
    std::thread::spawn(move || {
        run_bin(
            &["queue", "delete", &id, "--config", &conf.to_string_lossy()],
            None,
            None,
        )
    })
}

#[test]
fn delete_of_a_message_being_delivered() {
    let d = dns();
    let reports = Sink::start_default();
    let g = gate();
    let srv = relay(g.addr.port(), reports.addr.port(), &d).start();

    // The attempt in progress fails: the deletion applies when it ends.
    send(&srv, "deleted", "a@remote.test");
    g.at_dot.recv_timeout(LONG).expect("at the dot");
    let cmd = delete_in_background(&srv, &ids(&srv)[0]);
    std::thread::sleep(Duration::from_millis(500));
    g.answer.send("451 4.3.0 try later").unwrap();
    let r = cmd.join().unwrap();
    assert!(
        r.ok() && r.stdout.contains("deleted (after the attempt in progress"),
        "{}",
        r.both()
    );
    assert!(srv.queue_empty(), "{:?}", list(&srv));

    // The attempt in progress delivers it: nothing is left to delete, nothing is sent twice.
    send(&srv, "delivered", "b@remote.test");
    g.at_dot.recv_timeout(LONG).expect("at the dot");
    let cmd = delete_in_background(&srv, &ids(&srv)[0]);
    std::thread::sleep(Duration::from_millis(500));
    g.answer.send("250 2.0.0 ok").unwrap();
    let r = cmd.join().unwrap();
    assert!(r.stdout.contains("settled it"), "{}", r.both());
    srv.assert_queue_empties(LONG);
    std::thread::sleep(SETTLE);
    assert_eq!(g.delivered.load(Ordering::SeqCst), 1);
    assert!(
        g.at_dot.try_recv().is_err(),
        "no attempt after the deletion"
    );
    assert_eq!(reports.count(), 0);
}

#[test]
fn commands_on_a_stopped_server_take_effect_at_its_next_start() {
    let d = dns();
    let reports = Sink::start_default();
    let port = free_port("127.0.0.1");
    let mut srv = relay(port, reports.addr.port(), &d).start();
    send(&srv, "kept", "a@remote.test");
    send(&srv, "held", "b@remote.test");
    send(&srv, "dropped", "c@remote.test");
    attempted(&srv, 3);
    let (kept, held, dropped) = (
        id_with(&srv, "kept"),
        id_with(&srv, "held"),
        id_with(&srv, "dropped"),
    );
    srv.terminate();
    assert!(!srv.mailroot().join("mailroot.control").exists());

    // No server: the commands work on the files.
    let r = cli(&srv, &["queue", "list"]);
    assert!(
        r.ok() && r.stdout.contains("no mailroot server is running"),
        "{}",
        r.both()
    );
    assert!(cli(&srv, &["queue", "hold", &held]).ok());
    assert!(cli(&srv, &["queue", "delete", &dropped]).ok());
    let r = cli(&srv, &["queue", "retry", &kept]);
    assert!(
        r.ok() && r.stdout.contains("as soon as mailroot starts"),
        "{}",
        r.both()
    );
    assert_eq!(ids(&srv).len(), 2);

    // A Badmail message, resent while stopped, is in the Queue at the next start.
    let bad = srv.folder("Badmail");
    std::fs::write(
        bad.join("0123456789abcdef0123456.bad"),
        format!("x-sender: {SENDER}\r\nx-receiver: d@remote.test\r\nSubject: from badmail\r\n\r\nbody\r\n"),
    )
    .unwrap();
    std::fs::write(
        bad.join("0123456789abcdef0123456.bdr"),
        "Unable to deliver this message because the following error was encountered:\r\n\r\nThe next hop refused it.\r\n",
    )
    .unwrap();
    let b = json(&srv, &["badmail", "list", "--json"]);
    assert_eq!(b[0]["id"], "0123456789abcdef0123456");
    assert_eq!(b[0]["reason"], "The next hop refused it.");
    assert_eq!(b[0]["recipients"][0], "d@remote.test");
    let r = cli(&srv, &["badmail", "resend", "0123456789abcdef0123456"]);
    assert!(
        r.ok() && r.stdout.contains("back in the Queue"),
        "{}",
        r.both()
    );
    assert!(common::files_with_ext(&bad, "bad").is_empty());
    assert_eq!(ids(&srv).len(), 3);

    let next = Sink::builder().port(port).start();
    let srv = srv.restart();
    let got = next.wait_messages(2);
    let mut subjects: Vec<String> = got.iter().map(|m| m.subject()).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        vec!["from badmail".to_string(), "kept".to_string()]
    );
    std::thread::sleep(SETTLE);
    assert_eq!(
        next.count(),
        2,
        "the held one stays, the deleted one is gone"
    );
    assert_eq!(ids(&srv), vec![held]);
}

#[test]
fn badmail_resend_to_a_running_server_is_delivered() {
    let d = dns();
    let reports = Sink::start_default();
    let next = Sink::start_default();
    let srv = relay(next.addr.port(), reports.addr.port(), &d).start();
    let bad = srv.folder("Badmail");
    std::fs::write(
        bad.join("0123456789abcdef0123457.bad"),
        format!(
            "x-sender: {SENDER}\r\nx-receiver: <e@remote.test>\r\nSubject: again\r\n\r\nbody\r\n"
        ),
    )
    .unwrap();
    let r = cli(&srv, &["badmail", "list"]);
    assert!(
        r.ok() && r.stdout.contains("0123456789abcdef0123457"),
        "{}",
        r.both()
    );
    let r = cli(&srv, &["badmail", "resend", "0123456789abcdef0123457"]);
    assert!(r.ok(), "{}", r.both());
    let got = next.wait_messages(1);
    assert_eq!(got[0].rcpt_addrs(), vec!["e@remote.test".to_string()]);
    assert_eq!(got[0].sender_addr(), SENDER);
    let r = cli(&srv, &["badmail", "resend", "0123456789abcdef0123457"]);
    assert!(
        !r.ok() && r.stdout.contains("no such message in Badmail"),
        "{}",
        r.both()
    );
}

#[test]
fn the_control_endpoint_needs_its_token() {
    let srv = Builder::new().start();
    let file = srv.mailroot().join("mailroot.control");
    let text = std::fs::read_to_string(&file).expect("the endpoint file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "owner only: {mode:o}");
    }
    let addr: SocketAddr = text.lines().next().unwrap().parse().unwrap();
    assert!(addr.ip().is_loopback());
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"{\"op\":\"status\",\"token\":\"guess\"}\n")
        .unwrap();
    let mut answer = String::new();
    BufReader::new(c).read_line(&mut answer).unwrap();
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["ok"], false, "{answer}");
    assert!(answer.contains("wrong token"), "{answer}");
    // With it (as the command line reads it), the status comes.
    let s = json(&srv, &["queue", "summary", "--json"]);
    assert_eq!(s["running"], true);
}
