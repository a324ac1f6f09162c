//! The delivery side end to end: the real binary routes queued mail by DNS (a real authoritative DNS
//! server on loopback), smart hosts and remote domain sections to scriptable SMTP sinks on 127.0.0.x,
//! and the tests look at what the next hop received: envelope, content, line endings, dot-stuffing,
//! ESMTP extensions (PIPELINING, SIZE, 8BITMIME, DSN), transactions, connections and their limits.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::acceptor::Acceptor;
use common::sink::{Delivered, Sink, SinkBuilder, start_same_port};
use common::*;

const MX1: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const MX2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Test defaults (retries after 1 s, 5 s per reply of the next hop), every remote recipient going to
/// `[127.0.0.1]:<port>`.
fn via_smart_host(port: u16) -> Builder {
    Builder::new().retrying().smart_host(port)
}

/// A DNS server with `example.test MX 10 mx1 (127.0.0.2)` and `MX 20 mx2 (127.0.0.3)`.
fn two_mx_dns() -> dns::DnsServer {
    dns::DnsServer::builder()
        .mx("example.test", 10, "mx1.example.test")
        .mx("example.test", 20, "mx2.example.test")
        .a("mx1.example.test", MX1)
        .a("mx2.example.test", MX2)
        .start()
}

/// Starts mailroot on a mailroot whose Queue already holds `files` (as after a stop while the next
/// hop was down): they are delivered at start-up.
fn start_with_queue(b: Builder, files: &[String]) -> Server {
    let dir = TempDir::new("seeded");
    let q = dir.path().join("mailroot").join("Queue");
    fs::create_dir_all(&q).unwrap();
    for content in files {
        fs::write(q.join(format!("{}.eml", mailroot::id::next())), content).unwrap();
    }
    Server::start_in(dir, &b.ini())
}

/// Messages per connection number.
fn per_connection(msgs: &[Delivered]) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for d in msgs {
        *m.entry(d.connection).or_insert(0) += 1;
    }
    m
}

// ---------------------------------------------------------------------------------------------
// A raw SMTP server for what the sink cannot show: strict PIPELINING / lock-step checks and exact
// concurrency (a connection counts as open from the start of its thread until we are about to answer
// QUIT, an interval that lies inside the client's own use of the connection).
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct RawOpts {
    extensions: Vec<&'static str>,
    /// Answer MAIL and RCPT only once DATA has arrived: a client that waits for the MAIL reply
    /// before sending RCPT (no pipelining) stalls until its timeout.
    hold_replies_until_data: bool,
    /// Record a violation when a command arrives together with the next one (the client did not
    /// wait for the reply).
    lockstep: bool,
    /// Wait this long before the reply to the end of DATA.
    data_delay: Duration,
}

#[derive(Default)]
struct RawRec {
    connections: usize,
    open: usize,
    max_open: usize,
    commands: Vec<(usize, String)>,
    messages: Vec<(usize, Vec<u8>)>,
    violations: Vec<String>,
}

struct RawSmtp {
    addr: SocketAddr,
    rec: Arc<Mutex<RawRec>>,
    _acceptor: Acceptor,
}

impl RawSmtp {
    fn start(opts: RawOpts) -> RawSmtp {
        let rec: Arc<Mutex<RawRec>> = Arc::default();
        let r = rec.clone();
        let acceptor = Acceptor::start(move |n, stream| {
            let _ = stream.set_read_timeout(Some(WAIT));
            let _ = stream.set_nodelay(true);
            {
                let mut g = r.lock().unwrap();
                g.connections += 1;
                g.open += 1;
                g.max_open = g.max_open.max(g.open);
            }
            raw_session(n, stream, &r, &opts);
        });
        RawSmtp {
            addr: acceptor.addr,
            rec,
            _acceptor: acceptor,
        }
    }

    fn messages(&self) -> Vec<(usize, Vec<u8>)> {
        self.rec.lock().unwrap().messages.clone()
    }
    fn commands(&self) -> Vec<(usize, String)> {
        self.rec.lock().unwrap().commands.clone()
    }
    fn violations(&self) -> Vec<String> {
        self.rec.lock().unwrap().violations.clone()
    }
    fn max_open(&self) -> usize {
        self.rec.lock().unwrap().max_open
    }
    fn connections(&self) -> usize {
        self.rec.lock().unwrap().connections
    }
    fn wait_messages(&self, n: usize) -> usize {
        wait_until(|| self.messages().len() >= n);
        self.messages().len()
    }
}

fn raw_session(n: usize, stream: TcpStream, rec: &Mutex<RawRec>, o: &RawOpts) {
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut closed = false;
    let mut close = |rec: &Mutex<RawRec>| {
        if !closed {
            closed = true;
            rec.lock().unwrap().open -= 1;
        }
    };
    let mut held: Vec<&str> = Vec::new();
    let _ = w.write_all(b"220 raw.test ESMTP\r\n");
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let cmd = line.trim_end().to_string();
        let verb = cmd
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        {
            let mut g = rec.lock().unwrap();
            g.commands.push((n, cmd.clone()));
            if o.lockstep && !r.buffer().is_empty() {
                let next = String::from_utf8_lossy(r.buffer()).to_string();
                g.violations
                    .push(format!("{cmd:?} arrived together with {next:?}"));
            }
        }
        let reply: String = match verb.as_str() {
            "EHLO" => {
                let mut lines = vec!["raw.test".to_string()];
                lines.extend(o.extensions.iter().map(|e| e.to_string()));
                let last = lines.len() - 1;
                lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
                    .collect()
            }
            "HELO" | "RSET" | "NOOP" => "250 2.0.0 Ok\r\n".into(),
            "MAIL" | "RCPT" if o.hold_replies_until_data => {
                held.push(if verb == "MAIL" {
                    "250 2.1.0 Ok\r\n"
                } else {
                    "250 2.1.5 Ok\r\n"
                });
                continue;
            }
            "MAIL" => "250 2.1.0 Ok\r\n".into(),
            "RCPT" => "250 2.1.5 Ok\r\n".into(),
            "DATA" => {
                let mut out: String = held.drain(..).collect();
                out.push_str("354 Go ahead\r\n");
                if w.write_all(out.as_bytes()).is_err() {
                    break;
                }
                let mut data = Vec::new();
                loop {
                    let mut l = Vec::new();
                    match r.read_until(b'\n', &mut l) {
                        Ok(0) | Err(_) => {
                            close(rec);
                            return;
                        }
                        Ok(_) => {}
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    let l = if l.first() == Some(&b'.') {
                        &l[1..]
                    } else {
                        &l[..]
                    };
                    data.extend_from_slice(l);
                }
                thread::sleep(o.data_delay);
                rec.lock().unwrap().messages.push((n, data));
                "250 2.0.0 Ok: queued\r\n".into()
            }
            "QUIT" => {
                close(rec);
                let _ = w.write_all(b"221 2.0.0 Bye\r\n");
                break;
            }
            _ => "500 5.5.2 What?\r\n".into(),
        };
        if w.write_all(reply.as_bytes()).is_err() {
            break;
        }
    }
    close(rec);
}

// ---------------------------------------------------------------------------------------------
// DNS routing
// ---------------------------------------------------------------------------------------------

fn two_mx_sinks(first: SinkBuilder) -> (Sink, Sink) {
    let mut sinks = start_same_port(vec![
        first.bind("127.0.0.2").hostname("mx1.example.test"),
        SinkBuilder::new()
            .bind("127.0.0.3")
            .hostname("mx2.example.test"),
    ]);
    let second = sinks.pop().unwrap();
    let first = sinks.pop().unwrap();
    (first, second)
}

fn dns_server(dns: &dns::DnsServer, port: u16) -> Builder {
    Builder::new()
        .retrying()
        .key("DnsServers", &dns.addr.to_string())
        .key("RemoteSmtpPort", &port.to_string())
}

#[test]
fn mx_with_the_lowest_preference_gets_the_mail() {
    let d = two_mx_dns();
    let (mx1, mx2) = two_mx_sinks(SinkBuilder::new());
    let srv = dns_server(&d, mx1.addr.port()).start();
    srv.submit("app@local.test", &["u@example.test"], &message("mx order"));
    let got = mx1.wait_messages(1);
    assert_eq!(got.len(), 1, "MX 10 gets it: {}", srv.log_text());
    assert_eq!(got[0].rcpt_addrs(), ["u@example.test"]);
    assert!(srv.wait_queue_empty(), "{}", srv.log_text());
    assert_eq!(mx2.connections(), 0, "MX 20 is not contacted");
}

#[test]
fn first_mx_not_listening_falls_back_to_the_second() {
    let d = two_mx_dns();
    let (mx1, mx2) = two_mx_sinks(SinkBuilder::new());
    let port = mx1.addr.port();
    drop(mx1);
    let srv = dns_server(&d, port).start();
    srv.submit("app@local.test", &["u@example.test"], &message("mx1 down"));
    let got = mx2.wait_messages(1);
    assert_eq!(got.len(), 1, "MX 20 gets it: {}", srv.log_text());
    assert_eq!(got[0].rcpt_addrs(), ["u@example.test"]);
    assert!(srv.wait_queue_empty(), "{}", srv.log_text());
}

#[test]
fn first_mx_answering_421_falls_back_to_the_second() {
    let d = two_mx_dns();
    let (mx1, mx2) = two_mx_sinks(SinkBuilder::new().on_connect("421 4.3.2 Service not available"));
    let srv = dns_server(&d, mx1.addr.port()).start();
    srv.submit("app@local.test", &["u@example.test"], &message("mx1 busy"));
    let got = mx2.wait_messages(1);
    assert_eq!(got.len(), 1, "MX 20 gets it: {}", srv.log_text());
    assert!(mx1.connections() >= 1, "MX 10 was tried first");
    assert!(mx1.messages().is_empty());
    assert!(srv.wait_queue_empty(), "{}", srv.log_text());
}

#[test]
fn a_domain_without_mx_but_with_an_a_record_is_its_own_mx() {
    let d = dns::DnsServer::builder().a("amx.test", MX1).start();
    let sink = Sink::builder().bind("127.0.0.2").start();
    let srv = dns_server(&d, sink.addr.port()).start();
    srv.submit("app@local.test", &["u@amx.test"], &message("implicit mx"));
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert_eq!(got[0].rcpt_addrs(), ["u@amx.test"]);
    assert!(srv.wait_queue_empty());
}

#[test]
fn smart_host_type_2_always_uses_the_smart_host() {
    let d = two_mx_dns();
    let (mx1, mx2) = two_mx_sinks(SinkBuilder::new());
    let smart = Sink::start_default();
    let srv = dns_server(&d, mx1.addr.port())
        .key("SmartHost", &format!("[127.0.0.1]:{}", smart.addr.port()))
        .key("SmartHostType", "2")
        .start();
    srv.submit(
        "app@local.test",
        &["u@example.test", "v@elsewhere.test"],
        &message("always smart"),
    );
    let got = smart.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    let mut r = got[0].rcpt_addrs();
    r.sort();
    assert_eq!(r, ["u@example.test", "v@elsewhere.test"], "one transaction");
    assert!(srv.wait_queue_empty());
    assert_eq!(mx1.connections() + mx2.connections(), 0, "no MX contacted");
}

#[test]
fn smart_host_type_1_uses_the_mx_when_it_answers() {
    let d = two_mx_dns();
    let (mx1, _mx2) = two_mx_sinks(SinkBuilder::new());
    let smart = Sink::start_default();
    let srv = dns_server(&d, mx1.addr.port())
        .key("SmartHost", &format!("[127.0.0.1]:{}", smart.addr.port()))
        .key("SmartHostType", "1")
        .start();
    srv.submit("app@local.test", &["u@example.test"], &message("dns first"));
    assert_eq!(mx1.wait_messages(1).len(), 1, "{}", srv.log_text());
    assert!(srv.wait_queue_empty());
    assert_eq!(smart.connections(), 0, "the smart host is only a fallback");
}

#[test]
fn smart_host_type_1_falls_back_to_the_smart_host() {
    // example.test's MX hosts do not listen; later.test fails DNS temporarily.
    let d = dns::DnsServer::builder()
        .mx("example.test", 10, "mx1.example.test")
        .a("mx1.example.test", MX1)
        .servfail("later.test")
        .start();
    let smart = Sink::start_default();
    let srv = dns_server(&d, free_port("127.0.0.2"))
        .key("SmartHost", &format!("[127.0.0.1]:{}", smart.addr.port()))
        .key("SmartHostType", "1")
        .start();
    srv.submit(
        "app@local.test",
        &["u@example.test"],
        &message("mx unreachable"),
    );
    srv.submit(
        "app@local.test",
        &["v@later.test"],
        &message("dns servfail"),
    );
    let got = smart.wait_messages(2);
    assert_eq!(got.len(), 2, "{}", srv.log_text());
    let mut r: Vec<String> = got.iter().flat_map(Delivered::rcpt_addrs).collect();
    r.sort();
    assert_eq!(r, ["u@example.test", "v@later.test"]);
    assert!(srv.wait_queue_empty(), "{}", srv.log_text());
}

#[test]
fn smart_host_type_0_never_uses_the_smart_host() {
    let d = dns::DnsServer::builder()
        .mx("example.test", 10, "mx1.example.test")
        .a("mx1.example.test", MX1)
        .start();
    let smart = Sink::start_default();
    let srv = dns_server(&d, free_port("127.0.0.2"))
        .key("SmartHost", &format!("[127.0.0.1]:{}", smart.addr.port()))
        .key("SmartHostType", "0")
        .start();
    srv.submit("app@local.test", &["u@example.test"], &message("dns only"));
    // Wait for a second attempt: both went to the (dead) MX only.
    assert!(
        wait_until(|| srv.states().iter().any(|s| s.contains("attempts: 2"))),
        "retried: {:?}\n{}",
        srv.states(),
        srv.log_text()
    );
    let st = srv.states().join("\n");
    assert!(st.contains("rcpt: pending u@example.test | 4"), "{st}");
    assert_eq!(smart.connections(), 0, "{}", srv.log_text());
    assert_eq!(srv.files("Queue").len(), 1);
}

#[test]
fn remote_domain_section_overrides_the_server_smart_host() {
    let server_smart = Sink::start_default();
    let corp = Sink::start_default();
    let srv = via_smart_host(server_smart.addr.port())
        .section(&format!(
            // Section names are case-insensitive; this spelling keeps the harness from counting
            // the section as a second virtual server it must wait for.
            "[SMTPSVC/1/Domain/*.corp.test]\nSmartHost = [127.0.0.1]:{}\n",
            corp.addr.port()
        ))
        .start();
    srv.submit(
        "app@local.test",
        &[
            "a@eu.corp.test",
            "b@x.y.corp.test",
            "c@corp.test",
            "d@other.test",
        ],
        &message("sections"),
    );
    let got = corp.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    let mut r = got[0].rcpt_addrs();
    r.sort();
    assert_eq!(r, ["a@eu.corp.test", "b@x.y.corp.test"], "subdomains only");
    let got = server_smart.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    let mut r = got[0].rcpt_addrs();
    r.sort();
    assert_eq!(
        r,
        ["c@corp.test", "d@other.test"],
        "`*.corp.test` does not cover corp.test itself"
    );
    assert!(srv.wait_queue_empty());
}

#[test]
fn address_literal_recipient_goes_to_that_address() {
    let sink = Sink::builder().bind("127.0.0.3").start();
    let other = Sink::builder()
        .bind("127.0.0.2")
        .port(sink.addr.port())
        .try_start()
        .ok();
    let srv = Builder::new()
        .retrying()
        .key("RemoteSmtpPort", &sink.addr.port().to_string())
        .start();
    srv.submit("app@local.test", &["u@[127.0.0.3]"], &message("literal"));
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert_eq!(got[0].rcpts[0], "<u@[127.0.0.3]>");
    assert!(srv.wait_queue_empty());
    if let Some(o) = other {
        assert_eq!(o.connections(), 0);
    }
}

// ---------------------------------------------------------------------------------------------
// What the next hop receives
// ---------------------------------------------------------------------------------------------

#[test]
fn next_hop_gets_the_envelope_and_our_received_header_without_envelope_lines() {
    let sink = Sink::start_default();
    let srv = via_smart_host(sink.addr.port()).start();
    let body = "From: App <app@local.test>\r\nTo: r1@example.test\r\nSubject: content check\r\n\r\nfirst line\r\nsecond line";
    srv.submit(
        "app@local.test",
        &["r1@example.test", "r2@other.test"],
        body,
    );
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    let m = &got[0];
    assert!(
        m.ehlo && m.helo == "mx.mailroot.test",
        "EHLO with our FQDN: {m:?}"
    );
    assert!(
        m.mail_from.starts_with("<app@local.test>"),
        "{}",
        m.mail_from
    );
    assert_eq!(m.rcpt_addrs(), ["r1@example.test", "r2@other.test"]);
    let t = m.text();
    assert!(
        t.starts_with(
            "Received: from client.test ([127.0.0.1]) by mx.mailroot.test with ESMTP id "
        ),
        "{t}"
    );
    let lower = t.to_ascii_lowercase();
    assert!(
        !lower.contains("x-sender") && !lower.contains("x-receiver"),
        "no envelope lines: {t}"
    );
    assert!(
        t.ends_with("\r\n\r\nfirst line\r\nsecond line\r\n"),
        "{t:?}"
    );
    assert!(!m.bare_line_endings);
    assert!(
        m.mail_from.contains(&format!(" SIZE={}", m.data.len())),
        "SIZE= is the size of what is sent: {} vs {}",
        m.mail_from,
        m.data.len()
    );
    assert!(srv.wait_queue_empty());
}

#[test]
fn dot_stuffing_round_trips() {
    let sink = Sink::start_default();
    let srv = via_smart_host(sink.addr.port()).start();
    // On the wire from the test: `..x` = `.x`, `...` = `..`, `..` = `.` (a lone dot line).
    let mut c = srv.connect();
    c.hello();
    c.ok("MAIL FROM:<app@local.test>", 250);
    c.ok("RCPT TO:<u@example.test>", 250);
    c.ok("DATA", 354);
    c.send(b"Subject: dots\r\n\r\n..x\r\n...\r\n..\r\nend\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    c.ok("QUIT", 221);
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    let t = got[0].text();
    assert!(
        t.contains("\r\nSubject: dots\r\n") && t.ends_with("\r\n\r\n.x\r\n..\r\n.\r\nend\r\n"),
        "content arrives unchanged: {t:?}"
    );
    assert!(!got[0].bare_line_endings);
}

#[test]
fn bare_line_endings_in_a_queue_file_never_reach_the_wire() {
    let sink = Sink::start_default();
    let file = "x-sender: app@local.test\r\nx-receiver: u@example.test\r\nSubject: bare\r\n\r\nline1\nline2\rline3\r\n.\nafter\n.x\rend";
    let srv = start_with_queue(via_smart_host(sink.addr.port()), &[file.to_string()]);
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert!(!got[0].bare_line_endings, "{:?}", got[0].text());
    assert_eq!(
        got[0].text(),
        "Subject: bare\r\n\r\nline1\r\nline2\r\nline3\r\n.\r\nafter\r\n.x\r\nend\r\n",
        "every line ends in CRLF; a lone dot is stuffed, not a terminator"
    );
    assert!(srv.wait_queue_empty());
}

#[test]
fn pipelining_sends_mail_rcpt_and_data_without_waiting() {
    // This server answers MAIL and RCPT only after DATA arrived: only a pipelining client gets
    // through (a lock-step one waits for the MAIL reply until RemoteTimeout).
    let raw = RawSmtp::start(RawOpts {
        extensions: vec!["PIPELINING", "8BITMIME", "SIZE 10485760"],
        hold_replies_until_data: true,
        ..Default::default()
    });
    let srv = via_smart_host(raw.addr.port()).start();
    srv.submit(
        "app@local.test",
        &["a@example.test", "b@example.test"],
        &message("pipelined"),
    );
    assert_eq!(raw.wait_messages(1), 1, "{}", srv.log_text());
    let cmds: Vec<String> = raw.commands().into_iter().map(|c| c.1).collect();
    let from_mail: Vec<&str> = cmds
        .iter()
        .map(String::as_str)
        .skip_while(|c| !c.starts_with("MAIL"))
        .take(4)
        .collect();
    assert!(
        from_mail[0].starts_with("MAIL FROM:<app@local.test>")
            && from_mail[1] == "RCPT TO:<a@example.test>"
            && from_mail[2] == "RCPT TO:<b@example.test>"
            && from_mail[3] == "DATA",
        "{cmds:?}"
    );
    assert_eq!(raw.connections(), 1, "delivered at the first attempt");
    assert!(srv.wait_queue_empty());
}

#[test]
fn without_pipelining_each_command_waits_for_its_reply() {
    let raw = RawSmtp::start(RawOpts {
        extensions: vec!["8BITMIME", "SIZE 10485760"],
        lockstep: true,
        ..Default::default()
    });
    let srv = via_smart_host(raw.addr.port()).start();
    srv.submit(
        "app@local.test",
        &["a@example.test", "b@example.test"],
        &message("lock-step"),
    );
    assert_eq!(raw.wait_messages(1), 1, "{}", srv.log_text());
    assert!(srv.wait_queue_empty());
    assert!(raw.violations().is_empty(), "{:?}", raw.violations());
    // The connection waits a moment in mailroot's connection cache before its QUIT.
    wait_until(|| raw.commands().iter().any(|c| c.1.starts_with("QUIT")));
    let verbs: Vec<String> = raw
        .commands()
        .into_iter()
        .map(|c| c.1.split([' ', ':']).next().unwrap_or("").to_string())
        .collect();
    assert_eq!(verbs, ["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]);
}

#[test]
fn helo_fallback_when_ehlo_is_refused() {
    let sink = Sink::builder().no_ehlo().start();
    let srv = via_smart_host(sink.addr.port()).start();
    srv.submit(
        "app@local.test",
        &["u@example.test"],
        &message("old server"),
    );
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert!(
        !got[0].ehlo && got[0].helo == "mx.mailroot.test",
        "{:?}",
        got[0]
    );
    let cmds = sink.commands();
    assert!(
        cmds.iter().any(|c| c == "EHLO mx.mailroot.test")
            && cmds.iter().any(|c| c == "HELO mx.mailroot.test"),
        "{cmds:?}"
    );
    // No ESMTP parameters to a server that did not say EHLO.
    assert_eq!(got[0].mail_from, "<app@local.test>");
    assert!(srv.wait_queue_empty());
}

// ---------------------------------------------------------------------------------------------
// SIZE, 8BITMIME, DSN
// ---------------------------------------------------------------------------------------------

#[test]
fn message_over_the_next_hops_size_is_not_sent_and_bounces_with_5_3_4() {
    let sink = Sink::builder()
        .ehlo_extensions(["PIPELINING", "8BITMIME", "SIZE 1000", "ENHANCEDSTATUSCODES"])
        .start();
    let srv = via_smart_host(sink.addr.port()).start();
    let big = format!(
        "Subject: big\r\n\r\n{}",
        format!("{}\r\n", "x".repeat(70)).repeat(40)
    );
    srv.submit("app@local.test", &["u@example.test"], &big);
    let reports = srv.drop_texts(1);
    assert_eq!(reports.len(), 1, "{}", srv.log_text());
    let r = &reports[0];
    assert!(
        r.starts_with("x-sender: <>\r\nx-receiver: app@local.test\r\n"),
        "{r}"
    );
    assert!(
        r.contains("Final-Recipient: rfc822;u@example.test\r\nAction: failed\r\nStatus: 5.3.4\r\n"),
        "{r}"
    );
    assert!(srv.wait_queue_empty());
    assert!(
        !sink.commands().iter().any(|c| c.starts_with("MAIL")),
        "nothing sent: {:?}",
        sink.commands()
    );
    assert!(sink.transactions().is_empty());

    // A message under the limit goes through, announcing its size.
    srv.submit("app@local.test", &["u@example.test"], &message("small"));
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert!(got[0].mail_from.contains(" SIZE="), "{}", got[0].mail_from);
}

#[test]
fn eight_bit_body_to_a_server_without_8bitmime_bounces_with_5_6_3() {
    let sink = Sink::builder()
        .ehlo_extensions(["PIPELINING", "SIZE 10485760", "ENHANCEDSTATUSCODES", "DSN"])
        .start();
    let srv = via_smart_host(sink.addr.port()).start();
    srv.submit_raw("<app@local.test> BODY=8BITMIME", &["<u@example.test>"], "Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncafé crème");
    let reports = srv.drop_texts(1);
    assert_eq!(reports.len(), 1, "{}", srv.log_text());
    assert!(
        reports[0].contains(
            "Final-Recipient: rfc822;u@example.test\r\nAction: failed\r\nStatus: 5.6.3\r\n"
        ),
        "{}",
        reports[0]
    );
    assert!(srv.wait_queue_empty());
    assert!(
        !sink.commands().iter().any(|c| c.starts_with("MAIL")),
        "nothing sent: {:?}",
        sink.commands()
    );
}

#[test]
fn eight_bit_body_to_a_server_with_8bitmime_goes_with_body_8bitmime() {
    let sink = Sink::start_default();
    let srv = via_smart_host(sink.addr.port()).start();
    srv.submit_raw("<app@local.test> BODY=8BITMIME", &["<u@example.test>"], "Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncafé crème");
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert!(
        got[0].mail_from.contains(" BODY=8BITMIME"),
        "{}",
        got[0].mail_from
    );
    assert!(
        got[0].data.ends_with("\r\n\r\ncafé crème\r\n".as_bytes()),
        "8-bit octets unchanged: {:?}",
        got[0].text()
    );
    assert!(srv.wait_queue_empty());
}

#[test]
fn dsn_parameters_are_passed_on_when_the_next_hop_offers_dsn() {
    let sink = Sink::start_default();
    let srv = via_smart_host(sink.addr.port()).start();
    srv.submit_raw(
        "<app@local.test> RET=HDRS ENVID=QQ314159",
        &[
            "<u@example.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;u@example.test",
            "<v@example.test>",
        ],
        &message("dsn"),
    );
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    let m = &got[0];
    assert!(
        m.mail_from.contains(" RET=HDRS") && m.mail_from.contains(" ENVID=QQ314159"),
        "{}",
        m.mail_from
    );
    let u = m.rcpts.iter().find(|r| r.starts_with("<u@")).unwrap();
    assert!(
        u.contains(" NOTIFY=FAILURE,DELAY") && u.contains(" ORCPT=rfc822;u@example.test"),
        "{u}"
    );
    let v = m.rcpts.iter().find(|r| r.starts_with("<v@")).unwrap();
    assert_eq!(
        v, "<v@example.test>",
        "no parameters the client did not give"
    );
    assert!(srv.wait_queue_empty());
}

#[test]
fn dsn_parameters_are_not_sent_to_a_next_hop_without_dsn() {
    let sink = Sink::builder()
        .ehlo_extensions([
            "PIPELINING",
            "8BITMIME",
            "SIZE 10485760",
            "ENHANCEDSTATUSCODES",
        ])
        .start();
    let srv = via_smart_host(sink.addr.port()).start();
    srv.submit_raw(
        "<app@local.test> RET=HDRS ENVID=QQ314159",
        &["<u@example.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;u@example.test"],
        &message("no dsn"),
    );
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    for c in sink.commands() {
        for p in ["NOTIFY=", "ORCPT=", "RET=", "ENVID="] {
            assert!(!c.contains(p), "{p} sent without DSN: {c}");
        }
    }
    assert!(srv.wait_queue_empty());
}

// ---------------------------------------------------------------------------------------------
// Transactions and connections
// ---------------------------------------------------------------------------------------------

#[test]
fn max_recipients_splits_five_recipients_into_three_transactions() {
    let sink = Sink::start_default();
    let mut file = String::from("x-sender: app@local.test\r\n");
    for i in 1..=5 {
        file.push_str(&format!("x-receiver: r{i}@example.test\r\n"));
    }
    file.push_str("Subject: many\r\n\r\nbody\r\n");
    let srv = start_with_queue(
        via_smart_host(sink.addr.port()).key("MaxRecipients", "2"),
        &[file],
    );
    let got = sink.wait_messages(3);
    assert!(srv.wait_queue_empty(), "{}", srv.log_text());
    assert_eq!(got.len(), 3, "{got:?}\n{}", srv.log_text());
    let mut sizes: Vec<usize> = got.iter().map(|d| d.rcpts.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [1, 2, 2]);
    let mut all: Vec<String> = got.iter().flat_map(Delivered::rcpt_addrs).collect();
    all.sort();
    assert_eq!(
        all,
        (1..=5)
            .map(|i| format!("r{i}@example.test"))
            .collect::<Vec<_>>(),
        "each recipient exactly once"
    );
}

/// Five messages queued while the smart host is down (nothing listens on its port), then the
/// smart host comes up; returns the server and the sink once all five arrived.
fn five_queued_then_next_hop_up(extra: &[(&str, &str)]) -> (Server, Sink) {
    let port = free_port("127.0.0.1");
    let mut b = via_smart_host(port);
    for (k, v) in extra {
        b = b.key(k, v);
    }
    let srv = b.start();
    let mut c = srv.connect();
    c.hello();
    for i in 0..5 {
        let r = c.send_mail(
            "app@local.test",
            &["u@example.test"],
            &message(&format!("batch {i}")),
        );
        assert_eq!(r.code, 250, "{r:?}");
    }
    c.ok("QUIT", 221);
    assert!(
        wait_until(|| srv.states().len() == 5),
        "each message tried once and queued: {:?}\n{}",
        srv.states(),
        srv.log_text()
    );
    let sink = Sink::builder().port(port).start();
    let got = sink.wait_messages(5);
    assert_eq!(got.len(), 5, "{}", srv.log_text());
    assert!(srv.wait_queue_empty(), "{}", srv.log_text());
    assert!(sink.wait_idle());
    (srv, sink)
}

#[test]
fn queued_messages_for_one_next_hop_share_a_connection() {
    let (srv, sink) = five_queued_then_next_hop_up(&[]);
    let per = per_connection(&sink.messages());
    assert!(
        sink.connections() < 5 && per.values().any(|n| *n >= 2),
        "5 queued messages for one host went over {} connections (messages per connection {per:?})\n{}",
        sink.connections(),
        srv.log_text()
    );
}

#[test]
fn messages_resumed_at_start_up_share_a_connection() {
    // Five messages for one smart host, all due at once when mailroot starts.
    let sink = Sink::start_default();
    let files: Vec<String> = (0..5)
        .map(|i| {
            format!(
                "x-sender: app@local.test\r\nx-receiver: u@example.test\r\nSubject: resumed {i}\r\n\r\nbody\r\n"
            )
        })
        .collect();
    let srv = start_with_queue(via_smart_host(sink.addr.port()), &files);
    assert_eq!(sink.wait_messages(5).len(), 5, "{}", srv.log_text());
    assert!(srv.wait_queue_empty());
    assert!(sink.wait_idle());
    let per = per_connection(&sink.messages());
    assert!(
        sink.connections() < 5 && per.values().any(|n| *n >= 2),
        "5 due messages for one host went over {} connections (messages per connection {per:?})\n{}",
        sink.connections(),
        srv.log_text()
    );
}

#[test]
fn max_batched_messages_limits_messages_per_connection() {
    let (srv, sink) = five_queued_then_next_hop_up(&[("MaxBatchedMessages", "2")]);
    let per = per_connection(&sink.messages());
    assert!(
        per.values().all(|n| *n <= 2),
        "at most 2 per connection: {per:?}"
    );
    assert!(
        per.values().any(|n| *n == 2),
        "connections are reused up to the limit: {per:?} over {} connections\n{}",
        sink.connections(),
        srv.log_text()
    );
}

#[test]
fn max_out_connections_per_domain_is_never_exceeded() {
    // A slow next hop (300 ms per message) so that deliveries would overlap without the limit.
    let raw = RawSmtp::start(RawOpts {
        extensions: vec!["PIPELINING", "8BITMIME", "SIZE 10485760"],
        data_delay: Duration::from_millis(300),
        ..Default::default()
    });
    let srv = via_smart_host(raw.addr.port())
        .key("MaxOutConnectionsPerDomain", "1")
        .start();
    let mut c = srv.connect();
    c.hello();
    for i in 0..10 {
        let r = c.send_mail(
            "app@local.test",
            &["u@example.test"],
            &message(&format!("limit {i}")),
        );
        assert_eq!(r.code, 250);
    }
    c.ok("QUIT", 221);
    assert_eq!(raw.wait_messages(10), 10, "{}", srv.log_text());
    assert!(srv.wait_queue_empty());
    assert_eq!(
        raw.max_open(),
        1,
        "connections open at once (over {} connections)",
        raw.connections()
    );
}

#[test]
fn masquerade_domain_rewrites_local_senders_only() {
    let sink = Sink::start_default();
    let srv = via_smart_host(sink.addr.port())
        .key("MasqueradeDomain", "masq.test")
        .start();
    for (from, subject) in [
        ("app@local.test", "local"),
        ("ops@alias.test", "alias"),
        ("someone@remote.test", "remote"),
    ] {
        let body = format!("From: {from}\r\nSubject: {subject}\r\n\r\nx\r\n");
        srv.submit(from, &["u@example.test"], &body);
    }
    let got = sink.wait_messages(3);
    assert_eq!(got.len(), 3, "{}", srv.log_text());
    let by: BTreeMap<String, &Delivered> = got.iter().map(|d| (d.subject(), d)).collect();
    assert_eq!(by["local"].sender_addr(), "app@masq.test");
    assert_eq!(by["alias"].sender_addr(), "ops@masq.test");
    assert_eq!(by["remote"].sender_addr(), "someone@remote.test");
    assert!(
        by["local"].text().contains("\r\nFrom: app@local.test\r\n"),
        "only the envelope changes"
    );
    assert!(srv.wait_queue_empty());
}
