//! Interop edges found with real clients and next hops: lines over 998 octets on the way out
//! (OutboundLineLengthLimit), and a report that a next hop refuses for its own content, which goes
//! again with the original's headers only instead of ending in Badmail.

mod common;
use common::hops::{self, LONG, SENDER, SETTLE};
use common::sink::Sink;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A body with one 2,500-octet line between two short ones.
fn long_body() -> (String, String) {
    let long: String = (0..2500).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    (
        format!("Subject: long line\r\n\r\nfirst\r\n{long}\r\nlast\r\n"),
        long,
    )
}

#[test]
fn long_lines_are_broken_for_the_next_hop() {
    let next = Sink::start_default();
    let srv = Builder::new().smart_host(next.addr.port()).start();
    let (body, long) = long_body();
    srv.submit("a@b.test", &["u@remote.test"], &body);
    let got = next.wait_messages(1);
    assert_eq!(got.len(), 1);
    assert!(got[0].longest_line <= 998, "{}", got[0].longest_line);
    let text = got[0].text();
    // The content comes back when the inserted CRLF SPACE is taken out.
    assert!(text.replace("\r\n ", "").contains(&long), "{text}");
    assert!(
        text.contains("\r\nfirst\r\n") && text.contains("\r\nlast\r\n"),
        "{text}"
    );
}

#[test]
fn outbound_line_length_limit_0_sends_lines_unchanged() {
    let next = Sink::start_default();
    let srv = Builder::new()
        .smart_host(next.addr.port())
        .key("OutboundLineLengthLimit", "0")
        .start();
    let (body, long) = long_body();
    srv.submit("a@b.test", &["u@remote.test"], &body);
    let got = next.wait_messages(1);
    assert_eq!(got[0].longest_line, 2500);
    assert!(got[0].text().contains(&format!("\r\n{long}\r\n")));
}

#[test]
fn a_bad_outbound_line_length_limit_names_the_key() {
    let dir = TempDir::new("linelimit");
    let ini = dir.path().join("smtpsvc.ini");
    std::fs::write(&ini, "[SmtpSvc/1]\nOutboundLineLengthLimit = 12\n").unwrap();
    let r = run_bin(&["check", "--config", &ini.to_string_lossy()], None, None);
    assert!(!r.ok());
    assert!(
        r.both().contains(":2: OutboundLineLengthLimit") && r.both().contains("64 to 998"),
        "{}",
        r.both()
    );
}

/// A next hop with a content filter: a message holding a `message/rfc822` part is refused after
/// its data with `554 5.6.0`; any other is taken. Returns its address and what it took.
fn content_filter() -> (
    std::net::SocketAddr,
    Arc<Mutex<Vec<String>>>,
    Arc<AtomicUsize>,
) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let taken: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let (t, r) = (taken.clone(), refused.clone());
    std::thread::spawn(move || {
        for conn in l.incoming().take(20) {
            let Ok(conn) = conn else { continue };
            let (t, r) = (t.clone(), r.clone());
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                let mut w = conn.try_clone().unwrap();
                let mut rd = BufReader::new(conn);
                let _ = w.write_all(b"220 filter ESMTP\r\n");
                let mut line = String::new();
                for _ in 0..200 {
                    line.clear();
                    if rd.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let up = line.to_ascii_uppercase();
                    let reply = if up.starts_with("DATA") {
                        let _ = w.write_all(b"354 go on\r\n");
                        let mut data = String::new();
                        loop {
                            line.clear();
                            if rd.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == ".\r\n" {
                                break;
                            }
                            data.push_str(&line);
                        }
                        if data.contains("message/rfc822") {
                            r.fetch_add(1, Ordering::SeqCst);
                            "554 5.6.0 Message content refused\r\n"
                        } else {
                            t.lock().unwrap().push(data);
                            "250 2.0.0 taken\r\n"
                        }
                    } else if up.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n");
                        return;
                    } else {
                        "250 ok\r\n"
                    };
                    let _ = w.write_all(reply.as_bytes());
                }
            });
        }
    });
    (addr, taken, refused)
}

#[test]
fn a_report_refused_for_its_content_goes_again_with_headers_only() {
    let d = hops::dns();
    let (filter, taken, refused) = content_filter();
    let next = Sink::builder()
        .on_rcpt("nobody", "550 5.1.1 No such user")
        .start();
    // The sender's domain is behind the content filter.
    let srv = hops::config(&d, next.addr.port(), filter.port()).start();
    hops::submit(
        &srv,
        SENDER,
        &[("nobody@dest.test", "")],
        "returned in part",
    );
    assert!(
        wait_for(LONG, || !taken.lock().unwrap().is_empty()),
        "{}",
        srv.log_text()
    );
    let text = taken.lock().unwrap()[0].clone();
    assert!(text.contains("Content-Type: text/rfc822-headers"), "{text}");
    assert!(text.contains("Subject: returned in part"), "{text}");
    assert!(
        !text.contains("body of returned in part"),
        "headers only: {text}"
    );
    assert!(
        text.contains("Final-Recipient: rfc822;nobody@dest.test"),
        "{text}"
    );
    assert_eq!(
        refused.load(Ordering::SeqCst),
        1,
        "the whole report was refused once"
    );
    srv.assert_queue_empties(LONG);
    std::thread::sleep(SETTLE);
    assert!(
        srv.files("Badmail").is_empty(),
        "{:?}",
        srv.files("Badmail")
    );
    assert_eq!(taken.lock().unwrap().len(), 1);
}
