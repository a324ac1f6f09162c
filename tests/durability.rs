//! The durable commit: a message is complete in Drop/Queue before its `250 2.6.0`, even if the process
//! is killed the instant the reply arrives; leftovers in SortTemp are removed at start-up; a disk that
//! refuses the message gets `452 4.3.1` and leaves nothing behind; a client that goes away in the
//! middle of a message leaves nothing behind.

mod common;
use common::*;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

const FQDN: &str = "mx.mailroot.test";
const STORAGE: &str = "452 4.3.1 Insufficient system storage";

/// A deterministic message of about `size` bytes: headers (with a Message-ID, so the server inserts
/// none), a blank line and a body of varied text lines, none starting with a dot.
fn big_message(tag: &str, size: usize) -> String {
    let mut s = format!(
        "From: sender@example.test\r\nTo: rcpt@local.test\r\nSubject: durable {tag}\r\nMessage-ID: <{tag}@client.test>\r\n\r\n"
    );
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ ";
    let mut x: u64 = tag.bytes().fold(0x9E37_79B9_7F4A_7C15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    });
    let mut n = 0u32;
    while s.len() < size {
        s.push_str(&format!("{tag} {n:07} "));
        let len = 20 + (x >> 58) as usize;
        for _ in 0..len {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            s.push(alphabet[(x >> 33) as usize % alphabet.len()] as char);
        }
        s.push_str("\r\n");
        n += 1;
    }
    s.push_str(&format!("end of {tag}"));
    s
}

/// Asserts that `path` holds exactly the message `msg` from `from` to `rcpts` as mailroot stores it:
/// the envelope block, our Received header naming the file's id, then the message and its final CRLF.
fn assert_complete(path: &Path, from: &str, rcpts: &[&str], msg: &str) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = String::from_utf8(bytes).expect("UTF-8 message file");
    let id = path.file_stem().unwrap().to_str().unwrap();
    let mut head = format!("x-sender: {from}\r\n");
    for r in rcpts {
        head.push_str(&format!("x-receiver: {r}\r\n"));
    }
    assert!(
        text.starts_with(&head),
        "{}: envelope block: {:?}",
        path.display(),
        &text[..text.len().min(300)]
    );
    let rest = &text[head.len()..];
    let received =
        format!("Received: from client.test ([127.0.0.1]) by {FQDN} with ESMTP id {id};\r\n\t ");
    assert!(
        rest.starts_with(&received),
        "{}: Received header: {:?}",
        path.display(),
        &rest[..rest.len().min(300)]
    );
    let (date, content) = rest[received.len()..]
        .split_once("\r\n")
        .expect("the Received date line");
    assert!(date.ends_with(" +0000"), "date {date:?}");
    let want = format!("{msg}\r\n");
    if content != want {
        let at = content
            .bytes()
            .zip(want.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(content.len().min(want.len()));
        panic!(
            "{}: stored message differs from the one sent: {} bytes stored, {} sent, first difference at byte {at}",
            path.display(),
            content.len(),
            want.len()
        );
    }
}

/// The file a committed message must be in.
fn committed(srv: &Server, folder: &str, id: &str) -> PathBuf {
    srv.folder(folder).join(format!("{id}.eml"))
}

#[test]
fn message_is_complete_on_disk_when_250_arrives_kill9() {
    // Local, remote and mixed recipients: one file in Drop, one in Queue, or one in each.
    for round in 0..6usize {
        let mut srv = Builder::new().start();
        let mut c = srv.connect();
        c.hello();
        let tag = format!("kill{round}");
        let msg = big_message(&tag, 200_000 + round * 37_000);
        let (local, remote): (&[&str], &[&str]) = match round % 3 {
            0 => (&["u@local.test"], &[]),
            1 => (&[], &["r@remote.test"]),
            _ => (&["u@local.test", "v@alias.test"], &["r@remote.test"]),
        };
        c.ok("MAIL FROM:<s@example.test>", 250);
        for r in local.iter().chain(remote) {
            c.ok(&format!("RCPT TO:<{r}>"), 250);
        }
        c.ok("DATA", 354);
        c.send(msg.as_bytes());
        c.send(b"\r\n.\r\n");
        let r = c.reply();
        srv.kill9(); // the instant the reply is in
        let id = queued_id(&r, FQDN);
        if local.is_empty() {
            assert!(srv.files("Drop").is_empty());
        } else {
            assert_complete(&committed(&srv, "Drop", &id), "s@example.test", local, &msg);
        }
        if remote.is_empty() {
            assert!(srv.files("Queue").is_empty());
        } else {
            assert_complete(
                &committed(&srv, "Queue", &id),
                "s@example.test",
                remote,
                &msg,
            );
        }
        // Nothing of a committed message stays behind in SortTemp.
        let left = entries(&srv.folder("SortTemp"));
        assert!(left.is_empty(), "round {round}: {left:?}");
    }
}

#[test]
fn pipelined_messages_acknowledged_before_kill9_are_complete() {
    const N: usize = 8;
    for round in 0..3usize {
        let mut srv = Builder::new().start();
        let mut c = srv.connect();
        let msgs: Vec<String> = (0..N)
            .map(|k| big_message(&format!("pipe{round}-{k}"), 150_000 + k * 20_000))
            .collect();
        let mut all = b"EHLO client.test\r\n".to_vec();
        for (k, m) in msgs.iter().enumerate() {
            all.extend_from_slice(
                format!("MAIL FROM:<s{k}@example.test>\r\nRCPT TO:<u{k}@local.test>\r\nDATA\r\n")
                    .as_bytes(),
            );
            all.extend_from_slice(m.as_bytes());
            all.extend_from_slice(b"\r\n.\r\n");
        }
        // One writer streams every transaction back to back; this thread reads the replies.
        let mut w = c.stream.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&all);
        });

        let kill_after = 1 + round * 2; // after the 1st, 3rd, 5th acknowledgement
        let mut acked: Vec<(usize, String)> = Vec::new();
        assert_eq!(c.read_reply().expect("banner").code, 220);
        assert_eq!(c.read_reply().expect("EHLO reply").code, 250);
        'messages: for k in 0..N {
            for want in [250, 250, 354] {
                let Ok(r) = c.read_reply() else {
                    break 'messages;
                };
                assert_eq!(r.code, want, "message {k}: {r:?}");
            }
            let Ok(r) = c.read_reply() else {
                break;
            };
            acked.push((k, queued_id(&r, FQDN)));
            if acked.len() == kill_after {
                srv.kill9();
            }
        }
        assert!(acked.len() >= kill_after, "round {round}: {acked:?}");
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
        writer.join().unwrap();

        // Every acknowledged message is complete, under the id its 250 named.
        for (k, id) in &acked {
            let to = format!("u{k}@local.test");
            assert_complete(
                &committed(&srv, "Drop", id),
                &format!("s{k}@example.test"),
                &[to.as_str()],
                &msgs[*k],
            );
        }
        // Anything else in Drop is complete too: a commit is all or nothing.
        let drop_files = srv.files("Drop");
        for f in &drop_files {
            let text = fs::read_to_string(f).unwrap();
            let k: usize = text
                .strip_prefix("x-sender: s")
                .and_then(|r| r.split('@').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{}: {:?}", f.display(), &text[..text.len().min(200)]));
            let to = format!("u{k}@local.test");
            assert_complete(f, &format!("s{k}@example.test"), &[to.as_str()], &msgs[k]);
        }
        assert!(srv.files("Queue").is_empty());

        // Restart on the same mailroot: the messages stay, unfinished files go.
        let leftovers: Vec<PathBuf> = entries(&srv.folder("SortTemp"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
            .collect();
        let srv = srv.restart();
        assert_eq!(srv.files("Drop"), drop_files, "round {round}");
        let left = entries(&srv.folder("SortTemp"));
        assert!(left.is_empty(), "round {round}: not cleaned: {left:?}");
        let log = srv.log_text();
        if leftovers.is_empty() {
            assert!(!log.contains("unfinished"), "{log}");
        } else {
            assert!(
                log.contains(&format!("removed {} unfinished", leftovers.len())),
                "round {round}: {leftovers:?}\n{log}"
            );
        }
        // And it takes mail again.
        let mut c = srv.connect();
        c.hello();
        let r = c.send_mail("a@b.test", &["u@local.test"], &message("after restart"));
        assert!(r.last().starts_with("250 2.6.0 <"), "{r:?}");
    }
}

/// Many sessions committing at once share flushes (group commit): still, every message whose 250
/// reached its client is complete when the process is killed in the middle of the traffic, and
/// nothing else is in Drop but whole messages.
#[test]
fn concurrent_sessions_acknowledged_before_kill9_are_complete() {
    const SESSIONS: usize = 12;
    const PER_SESSION: usize = 40;
    let mut srv = Builder::new().start();
    let addr = srv.addr();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let clients: Vec<_> = (0..SESSIONS)
        .map(|s| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                let Ok(mut c) = Dial::new().plain(addr) else {
                    return;
                };
                if c.check_reply("greeting", 220).is_err()
                    || c.check("EHLO client.test", 250).is_err()
                {
                    return;
                }
                for k in 0..PER_SESSION {
                    let tag = format!("c{s}-{k}");
                    let msg = big_message(&tag, 2_000 + (s * 7 + k * 13) % 5_000);
                    let data = format!("{msg}\r\n.\r\n");
                    let ok = c
                        .check("MAIL FROM:<s@example.test>", 250)
                        .and_then(|_| c.check(&format!("RCPT TO:<{tag}@local.test>"), 250))
                        .and_then(|_| c.check("DATA", 354))
                        .and_then(|_| c.try_send(data.as_bytes()))
                        .and_then(|_| c.check_reply("end of data", 250));
                    match ok {
                        Ok(r) => acked.lock().unwrap().push((queued_id(&r, FQDN), tag)),
                        Err(_) => return, // killed
                    }
                }
            })
        })
        .collect();
    // Kill once a fair share of the traffic is acknowledged, with sessions still mid-message.
    assert!(
        wait_until(|| acked.lock().unwrap().len() >= SESSIONS * PER_SESSION / 3),
        "only {} messages acknowledged",
        acked.lock().unwrap().len()
    );
    srv.kill9();
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() < SESSIONS * PER_SESSION,
        "killed too late to mean anything"
    );
    let sizes = |tag: &str| {
        let (s, k) = tag[1..].split_once('-').unwrap();
        let (s, k): (usize, usize) = (s.parse().unwrap(), k.parse().unwrap());
        2_000 + (s * 7 + k * 13) % 5_000
    };
    for (id, tag) in &acked {
        let to = format!("{tag}@local.test");
        let msg = big_message(tag, sizes(tag));
        assert_complete(
            &committed(&srv, "Drop", id),
            "s@example.test",
            &[to.as_str()],
            &msg,
        );
    }
    for f in srv.files("Drop") {
        let text = fs::read_to_string(&f).unwrap();
        let tag = text
            .lines()
            .nth(1)
            .and_then(|l| l.strip_prefix("x-receiver: "))
            .and_then(|r| r.strip_suffix("@local.test"))
            .unwrap_or_else(|| panic!("{}: {:?}", f.display(), &text[..text.len().min(200)]))
            .to_string();
        let to = format!("{tag}@local.test");
        assert_complete(
            &f,
            "s@example.test",
            &[to.as_str()],
            &big_message(&tag, sizes(&tag)),
        );
    }
}

#[test]
fn leftovers_in_sort_temp_are_removed_at_start_up() {
    let dir = TempDir::new("leftovers");
    let sort_temp = dir.path().join("mailroot").join("SortTemp");
    let drop_dir = dir.path().join("mailroot").join("Drop");
    fs::create_dir_all(&sort_temp).unwrap();
    fs::create_dir_all(&drop_dir).unwrap();
    let ours = [
        "660D8BE84698C17BB000000.tmp",
        "660D8BE84698C17BB000001.tmp",
        "660D8BE84698C17BB000001.1.tmp",
    ];
    let theirs = [
        "notes.txt",
        "660D8BE84698C17BB00000.tmp",      // 22 digits
        "660D8BE84698C17BB0000000.tmp",    // 24 digits
        "660d8be84698c17bb000002.tmp",     // lower case
        "660D8BE84698C17BB00000G.tmp",     // not hex
        "660D8BE84698C17BB000003.tmp.bak", // not .tmp
        "660D8BE84698C17BB000004",         // no extension
    ];
    for n in ours.iter().chain(&theirs) {
        fs::write(sort_temp.join(n), b"partial").unwrap();
    }
    // A committed message is not touched either.
    let committed_file = drop_dir.join("660D8BE84698C17BB000009.eml");
    fs::write(&committed_file, b"x-sender: a@b.test\r\n").unwrap();

    let srv = Server::start_in(dir, &Builder::new().ini());
    for n in ours {
        assert!(!srv.folder("SortTemp").join(n).exists(), "{n} was kept");
    }
    for n in theirs {
        assert!(srv.folder("SortTemp").join(n).exists(), "{n} was removed");
    }
    assert_eq!(
        fs::read(srv.folder("Drop").join("660D8BE84698C17BB000009.eml")).unwrap(),
        b"x-sender: a@b.test\r\n"
    );
    let log = srv.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("removed 3 unfinished"))
        .unwrap_or_else(|| panic!("the log does not say what was removed:\n{log}"));
    assert!(line.contains("SortTemp"), "{line}");
    assert!(line.contains("SMTPSVC1"), "{line}");

    // Business as usual afterwards.
    let mut c = srv.connect();
    c.hello();
    let r = c.send_mail("a@b.test", &["u@local.test"], &message("after cleanup"));
    assert!(r.last().starts_with("250 2.6.0 <"), "{r:?}");
}

#[test]
fn clean_start_says_nothing_about_leftovers() {
    let srv = Builder::new().start();
    let log = srv.log_text();
    assert!(!log.contains("unfinished"), "{log}");
}

#[test]
fn sort_temp_that_is_not_a_folder_gets_452() {
    let srv = Builder::new().start();
    let sort_temp = srv.folder("SortTemp");
    fs::remove_dir(&sort_temp).unwrap();
    fs::write(&sort_temp, b"not a folder").unwrap();

    let mut c = srv.connect();
    c.hello();
    c.ok("MAIL FROM:<a@b.test>", 250);
    c.ok("RCPT TO:<u@local.test>", 250);
    c.ok("RCPT TO:<r@remote.test>", 250);
    let r = c.cmd("DATA");
    assert_eq!(r.last(), STORAGE, "{r:?}");
    // The session goes on; a client that sends the data anyway gets no 250 for it.
    c.ok("NOOP", 250);
    assert!(srv.files("Drop").is_empty());
    assert!(srv.files("Queue").is_empty());
    assert_eq!(fs::read(&sort_temp).unwrap(), b"not a folder");
    assert!(
        wait_until(|| srv.log_text().contains("SortTemp")),
        "the failure is not in the log:\n{}",
        srv.log_text()
    );

    // Repaired: the next message is accepted.
    fs::remove_file(&sort_temp).unwrap();
    fs::create_dir(&sort_temp).unwrap();
    c.ok("RSET", 250);
    let msg = big_message("repaired", 10_000);
    c.ok("MAIL FROM:<a@b.test>", 250);
    c.ok("RCPT TO:<u@local.test>", 250);
    c.ok("DATA", 354);
    c.send(msg.as_bytes());
    c.send(b"\r\n.\r\n");
    let r = c.reply();
    let id = queued_id(&r, FQDN);
    c.ok("QUIT", 221);
    assert_complete(
        &committed(&srv, "Drop", &id),
        "a@b.test",
        &["u@local.test"],
        &msg,
    );
    assert_eq!(srv.files("Drop").len(), 1);
    assert!(srv.files("Queue").is_empty());
    assert!(entries(&sort_temp).is_empty());
}

#[test]
fn failed_commit_gets_452_and_leaves_nothing() {
    // Drop turns into a file while the message comes in: the rename into Queue succeeds, the one
    // into Drop fails, and the Queue copy must go again (nobody was told the message is safe).
    let srv = Builder::new().start();
    let drop_dir = srv.folder("Drop");
    let mut c = srv.connect();
    c.hello();
    c.ok("MAIL FROM:<a@b.test>", 250);
    c.ok("RCPT TO:<r@remote.test>", 250);
    c.ok("RCPT TO:<u@local.test>", 250);
    c.ok("DATA", 354);
    let msg = big_message("commitfail", 100_000);
    c.send(msg.as_bytes());
    fs::remove_dir(&drop_dir).unwrap();
    fs::write(&drop_dir, b"not a folder").unwrap();
    c.send(b"\r\n.\r\n");
    let r = c.reply();
    assert_eq!(r.last(), STORAGE, "{r:?}");
    assert!(
        srv.files("Queue").is_empty(),
        "{:?}",
        entries(&srv.folder("Queue"))
    );
    assert!(
        entries(&srv.folder("Queue")).is_empty(),
        "{:?}",
        entries(&srv.folder("Queue"))
    );
    assert!(
        entries(&srv.folder("SortTemp")).is_empty(),
        "{:?}",
        entries(&srv.folder("SortTemp"))
    );

    // Repaired: the same client sends it again.
    fs::remove_file(&drop_dir).unwrap();
    fs::create_dir(&drop_dir).unwrap();
    c.ok("RSET", 250);
    c.ok("MAIL FROM:<a@b.test>", 250);
    c.ok("RCPT TO:<r@remote.test>", 250);
    c.ok("RCPT TO:<u@local.test>", 250);
    c.ok("DATA", 354);
    c.send(msg.as_bytes());
    c.send(b"\r\n.\r\n");
    let id = queued_id(&c.reply(), FQDN);
    assert_complete(
        &committed(&srv, "Queue", &id),
        "a@b.test",
        &["r@remote.test"],
        &msg,
    );
    assert_complete(
        &committed(&srv, "Drop", &id),
        "a@b.test",
        &["u@local.test"],
        &msg,
    );
    // Delivery of the Queue copy may be writing its state file (`<id>.sta.tmp`) right now; no part
    // of the message itself is left behind.
    let left: Vec<PathBuf> = entries(&srv.folder("SortTemp"))
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".sta.tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// How a client leaves in the middle of a message.
#[derive(Debug, Clone, Copy)]
enum Leave {
    /// Half the body, then a normal close.
    HalfBody,
    /// Half the body, then a reset (SO_LINGER 0).
    Reset,
    /// The whole body and "\r\n." but not the final CRLF of the terminator.
    AlmostTerminated,
    /// A BDAT chunk cut short.
    BdatChunk,
}

#[test]
fn client_leaving_mid_message_leaves_nothing() {
    let srv = Builder::new().start();
    let sort_temp = srv.folder("SortTemp");
    let msg = big_message("leaver", 300_000);
    for how in [
        Leave::HalfBody,
        Leave::Reset,
        Leave::AlmostTerminated,
        Leave::BdatChunk,
    ] {
        let mut c = srv.connect();
        c.hello();
        c.ok("MAIL FROM:<a@b.test>", 250);
        c.ok("RCPT TO:<u@local.test>", 250);
        c.ok("RCPT TO:<r@remote.test>", 250);
        match how {
            Leave::BdatChunk => {
                c.send(format!("BDAT {}\r\n", msg.len()).as_bytes());
                c.send(&msg.as_bytes()[..msg.len() / 2]);
            }
            Leave::AlmostTerminated => {
                c.ok("DATA", 354);
                c.send(msg.as_bytes());
                c.send(b"\r\n.");
            }
            Leave::HalfBody | Leave::Reset => {
                c.ok("DATA", 354);
                c.send(&msg.as_bytes()[..msg.len() / 2]);
            }
        }
        // The message file is open in SortTemp now.
        assert!(
            wait_until(|| !entries(&sort_temp).is_empty()),
            "{how:?}: no file in SortTemp while the message is coming in"
        );
        if let Leave::Reset = how {
            socket2::SockRef::from(&c.stream)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
        drop(c);
        assert!(
            wait_until(|| entries(&sort_temp).is_empty()),
            "{how:?}: left behind in SortTemp: {:?}",
            entries(&sort_temp)
        );
        assert!(srv.files("Drop").is_empty(), "{how:?}");
        assert!(srv.files("Queue").is_empty(), "{how:?}");
    }
    // The server is unharmed.
    let mut c = srv.connect();
    c.hello();
    let r = c.send_mail("a@b.test", &["u@local.test"], &message("still here"));
    assert!(r.last().starts_with("250 2.6.0 <"), "{r:?}");
    assert_eq!(srv.wait_files("Drop", 1).len(), 1);
    assert!(entries(&sort_temp).is_empty());
}
