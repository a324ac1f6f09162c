//! The Pickup folder end to end: files in the forms applications write are taken, turned into
//! messages with the right envelope, committed to Drop/Queue, and bad files go to Badmail; a file still
//! being written is not taken; a crash between claiming and committing loses nothing; files in the
//! forms System.Net.Mail writes reach the next hop with the right envelope and body.

mod common;
use common::sink::Sink;
use common::*;
use std::fs;
use std::io::Write;
use std::time::Duration;

fn server() -> Server {
    Builder::new()
        .key("PickupSettleTime", "300ms")
        .key("FullyQualifiedDomainName", "mx.local.test")
        .start()
}

fn pickup_leftovers(srv: &Server) -> Vec<String> {
    names(&srv.folder("Pickup"))
        .into_iter()
        .filter(|n| n != ".gitkeep")
        .collect()
}

#[test]
fn dotnet_framework_file_goes_to_drop_with_its_envelope() {
    let srv = server();
    // System.Net.Mail on .NET Framework: envelope lines first, display names, dot-stuffed body.
    let file = "X-Sender: \"App\" <app@contoso.test>\r\nX-Receiver: \"Boss\" <boss@local.test>\r\nX-Receiver: ops@alias.test\r\nMIME-Version: 1.0\r\nFrom: \"App\" <app@contoso.test>\r\nTo: boss@local.test\r\nDate: 5 Jan 2024 09:03:07 +0100\r\nSubject: Hello\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n..leading dot\r\nBody text\r\n";
    fs::write(
        srv.folder("Pickup")
            .join("3f2c1b7e-0000-4000-8000-000000000001.eml"),
        file,
    )
    .unwrap();
    let files = srv.wait_files("Drop", 1);
    assert_eq!(files.len(), 1, "{}", srv.log_text());
    let t = fs::read_to_string(&files[0]).unwrap();
    assert!(t.starts_with("x-sender: app@contoso.test\r\nx-receiver: boss@local.test\r\nx-receiver: ops@alias.test\r\nReceived: from mail pickup service by mx.local.test with mailroot id "), "{t}");
    assert!(
        !t.to_ascii_lowercase().contains("\r\nx-sender:") && !t.contains("X-Receiver"),
        "envelope lines removed: {t}"
    );
    assert!(
        t.contains("\r\nMessage-ID: <"),
        "a Message-ID is added: {t}"
    );
    assert!(
        t.contains("\r\n\r\n.leading dot\r\nBody text\r\n"),
        "IIS dot rule: {t}"
    );
    assert!(
        wait_until(|| pickup_leftovers(&srv).is_empty()),
        "{:?}",
        pickup_leftovers(&srv)
    );
}

#[test]
fn unix_header_only_file_with_bcc_and_no_dot_rule() {
    let srv = Builder::new()
        .key("PickupSettleTime", "300ms")
        .key("PickupUnstuffDots", "0")
        .start();
    let file = "From: script@local.test\nTo: a@local.test\nCc: Team: b@local.test, c@local.test;\nBcc: hidden@local.test\nSubject: cron\n\n.not stuffed\n";
    fs::write(srv.folder("Pickup").join("cron-job"), file).unwrap();
    let files = srv.wait_files("Drop", 1);
    assert_eq!(files.len(), 1, "{}", srv.log_text());
    let t = fs::read_to_string(&files[0]).unwrap();
    for r in [
        "a@local.test",
        "b@local.test",
        "c@local.test",
        "hidden@local.test",
    ] {
        assert!(t.contains(&format!("x-receiver: {r}\r\n")), "{r} in {t}");
    }
    assert!(t.starts_with("x-sender: script@local.test\r\n"), "{t}");
    assert!(!t.contains("Bcc:"), "Bcc removed: {t}");
    assert!(
        t.contains("\r\n\r\n.not stuffed\r\n"),
        "LF became CRLF, dots kept: {t:?}"
    );
    assert!(!t.replace("\r\n", "").contains('\n'), "no bare LF left");
}

#[test]
fn remote_recipients_go_to_queue() {
    // Delivery would try DNS: point it at a DNS server that fails temporarily for the domain, with
    // long retries, so the message stays queued where we can look at it.
    let dns = dns::DnsServer::builder().servfail("remote.test").start();
    let srv = Builder::new()
        .key("PickupSettleTime", "300ms")
        .key("DnsServers", &dns.addr.to_string())
        .key("SmtpRemoteProgressiveRetry", "60")
        .start();
    fs::write(srv.folder("Pickup").join("m.eml"), "X-Sender: app@local.test\r\nX-Receiver: far@remote.test\r\nX-Receiver: near@local.test\r\nSubject: both\r\n\r\nx\r\n").unwrap();
    let q = srv.wait_files("Queue", 1);
    let d = srv.wait_files("Drop", 1);
    assert_eq!((q.len(), d.len()), (1, 1), "{}", srv.log_text());
    let qt = fs::read_to_string(&q[0]).unwrap();
    assert!(qt.starts_with("x-sender: app@local.test\r\nx-receiver: far@remote.test\r\nReceived: from mail pickup service"), "{qt}");
    assert_eq!(
        q[0].file_name(),
        d[0].file_name(),
        "one identifier for both parts"
    );
}

#[test]
fn a_file_being_written_is_not_taken() {
    // A settle time ten times the writer's pauses, so that a busy machine delaying this thread
    // does not look like a finished file.
    let srv = Builder::new().key("PickupSettleTime", "1s").start();
    let path = srv.folder("Pickup").join("slow.eml");
    let mut f = fs::File::create(&path).unwrap();
    f.write_all(b"X-Sender: a@local.test\r\nX-Receiver: b@local.test\r\nSubject: slow\r\n\r\n")
        .unwrap();
    // Keep writing for well over the settle time, with pauses shorter than it.
    for i in 0..25 {
        std::thread::sleep(Duration::from_millis(100));
        f.write_all(format!("line {i}\r\n").as_bytes()).unwrap();
        f.flush().unwrap();
        assert!(
            path.exists(),
            "taken while still being written (after {i} pauses)"
        );
        assert!(srv.files("Drop").is_empty());
    }
    f.write_all(b"the end\r\n").unwrap();
    drop(f);
    let files = srv.wait_files("Drop", 1);
    assert_eq!(files.len(), 1);
    let t = fs::read_to_string(&files[0]).unwrap();
    assert!(
        t.contains("line 24\r\nthe end\r\n"),
        "the whole file was taken: {t}"
    );
}

#[test]
fn bad_files_go_to_badmail_and_do_not_jam_the_folder() {
    let srv = server();
    let pickup = srv.folder("Pickup");
    fs::write(
        pickup.join("a-norcpt.eml"),
        "From: a@local.test\r\nSubject: nobody\r\n\r\nx\r\n",
    )
    .unwrap();
    fs::write(
        pickup.join("b-badaddr.eml"),
        "X-Sender: a@local.test\r\nX-Receiver: not an address\r\n\r\nx\r\n",
    )
    .unwrap();
    fs::write(
        pickup.join("c-good.eml"),
        "X-Sender: a@local.test\r\nX-Receiver: ok@local.test\r\n\r\nfine\r\n",
    )
    .unwrap();
    assert_eq!(srv.wait_files("Drop", 1).len(), 1, "{}", srv.log_text());
    let badmail = srv.folder("Badmail");
    assert!(wait_until(|| srv.files_ext("Badmail", "bdr").len() == 2));
    let mut reasons = String::new();
    for e in fs::read_dir(&badmail).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "bdr") {
            reasons.push_str(&fs::read_to_string(&p).unwrap());
            let bad = p.with_extension("bad");
            assert!(bad.exists(), "{} has its .bad", p.display());
        }
    }
    assert!(reasons.contains("no recipients"), "{reasons}");
    assert!(reasons.contains("not an address"), "{reasons}");
    assert!(
        reasons.contains("a-norcpt.eml") && reasons.contains("b-badaddr.eml"),
        "{reasons}"
    );
    assert!(
        wait_until(|| pickup_leftovers(&srv).is_empty()),
        "{:?}",
        pickup_leftovers(&srv)
    );
}

#[test]
fn limits_apply_to_pickup_files() {
    let srv = Builder::new()
        .key("PickupSettleTime", "300ms")
        .key("MaxRecipients", "2")
        .key("HopCount", "1")
        .start();
    let pickup = srv.folder("Pickup");
    fs::write(pickup.join("many.eml"), "X-Sender: a@local.test\r\nX-Receiver: a1@local.test\r\nX-Receiver: a2@local.test\r\nX-Receiver: a3@local.test\r\n\r\nx\r\n").unwrap();
    fs::write(pickup.join("loop.eml"), "X-Sender: a@local.test\r\nX-Receiver: a1@local.test\r\nReceived: one\r\nReceived: two\r\n\r\nx\r\n").unwrap();
    assert!(
        wait_until(|| srv.files_ext("Badmail", "bdr").len() == 2),
        "{}",
        srv.log_text()
    );
    assert!(srv.files("Drop").is_empty());
}

#[test]
fn claimed_leftovers_are_finished_after_a_crash() {
    let dir = TempDir::new("pickup-crash");
    let root = dir.path().join("mailroot");
    for f in ["Pickup", "Queue", "Drop", "Badmail", "SortTemp"] {
        fs::create_dir_all(root.join(f)).unwrap();
    }
    // A claim whose commit never happened: it must be taken again.
    let id1 = "0006300000000000100000A";
    fs::write(
        root.join("Pickup").join(format!("{id1}.claimed")),
        "X-Sender: a@local.test\r\nX-Receiver: again@local.test\r\n\r\nx\r\n",
    )
    .unwrap();
    // A claim whose commit happened (the crash came before the removal): it must just go.
    let id2 = "0006300000000000100000B";
    fs::write(
        root.join("Pickup").join(format!("{id2}.claimed")),
        "X-Sender: a@local.test\r\nX-Receiver: once@local.test\r\n\r\nx\r\n",
    )
    .unwrap();
    fs::write(
        root.join("Drop").join(format!("{id2}.eml")),
        "x-sender: a@local.test\r\nx-receiver: once@local.test\r\n\r\nx\r\n",
    )
    .unwrap();
    let b = Builder::new().key("PickupSettleTime", "0");
    let srv = Server::start_in(dir, &b.ini());
    let files = srv.wait_files("Drop", 2);
    assert_eq!(files.len(), 2, "{}", srv.log_text());
    let all: String = files
        .iter()
        .map(|f| fs::read_to_string(f).unwrap())
        .collect();
    assert_eq!(
        all.matches("x-receiver: once@local.test").count(),
        1,
        "not twice"
    );
    assert_eq!(
        all.matches("x-receiver: again@local.test").count(),
        1,
        "not lost"
    );
    assert!(
        wait_until(|| pickup_leftovers(&srv).is_empty()),
        "{:?}",
        pickup_leftovers(&srv)
    );
}

#[test]
fn links_and_folders_in_pickup_are_left_alone() {
    let srv = server();
    let pickup = srv.folder("Pickup");
    fs::create_dir(pickup.join("sub.eml")).unwrap();
    let outside = srv.dir.path().join("outside.eml");
    fs::write(
        &outside,
        "X-Sender: a@local.test\r\nX-Receiver: b@local.test\r\n\r\nsecret\r\n",
    )
    .unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&outside, pickup.join("link.eml")).unwrap();
    fs::write(
        pickup.join("real.eml"),
        "X-Sender: a@local.test\r\nX-Receiver: b@local.test\r\n\r\nreal\r\n",
    )
    .unwrap();
    assert_eq!(srv.wait_files("Drop", 1).len(), 1);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(srv.files("Drop").len(), 1, "only the regular file is taken");
    assert!(outside.exists());
    assert!(pickup.join("sub.eml").is_dir());
}

/// A hard link in Pickup to a file elsewhere is not read: its content could be anything the writer
/// of the folder should not see sent (the same check refuses a link swapped in after listing).
#[cfg(unix)]
#[test]
fn hard_links_in_pickup_are_refused() {
    let srv = server();
    let outside = srv.dir.path().join("secret.eml");
    fs::write(
        &outside,
        "X-Sender: a@local.test\r\nX-Receiver: b@local.test\r\n\r\nsecret\r\n",
    )
    .unwrap();
    fs::hard_link(&outside, srv.folder("Pickup").join("linked.eml")).unwrap();
    assert!(wait_until(|| !srv.files_ext("Badmail", "bdr").is_empty()));
    let bdr = srv.files_ext("Badmail", "bdr").remove(0);
    let text = fs::read_to_string(&bdr).unwrap();
    assert!(text.contains("hard links"), "{text}");
    let bad = fs::read(bdr.with_extension("bad")).unwrap();
    assert!(
        !String::from_utf8_lossy(&bad).contains("secret"),
        "the linked content is not copied"
    );
    assert!(srv.files("Drop").is_empty());
    assert!(outside.exists(), "the outside file is untouched");
}

// ---------------------------------------------------------------------------------------------
// Pickup files delivered to the next hop
// ---------------------------------------------------------------------------------------------

#[test]
fn pickup_file_reaches_the_next_hop_without_envelope_headers() {
    let sink = Sink::start_default();
    let srv = Builder::new()
        .retrying()
        .smart_host(sink.addr.port())
        .key("PickupSettleTime", "300ms")
        .start();
    fs::write(
        srv.folder("Pickup").join("app.eml"),
        "X-Sender: app@local.test\r\nX-Receiver: u@example.test\r\nFrom: app@local.test\r\nTo: u@example.test\r\nBcc: hidden@example.test\r\nSubject: from pickup\r\n\r\nbody\r\n",
    )
    .unwrap();
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    let m = &got[0];
    assert_eq!(m.sender_addr(), "app@local.test");
    assert_eq!(m.rcpt_addrs(), ["u@example.test"]);
    let t = m.text();
    assert!(
        t.starts_with("Received: from mail pickup service by mx.mailroot.test with mailroot id "),
        "{t}"
    );
    let lower = t.to_ascii_lowercase();
    assert!(
        !lower.contains("x-sender") && !lower.contains("x-receiver") && !lower.contains("bcc:"),
        "{t}"
    );
    assert!(!m.bare_line_endings);
}

/// The body both forms must arrive with, line by line (a lone "." included).
const BODY: &str =
    "Body text\r\n.leading dot\r\n..two dots\r\n.\r\nafter a lone dot\r\nthe end\r\n";

fn pickup_headers() -> &'static str {
    // What System.Net.Mail writes: envelope lines first (display-name form, To then Cc then Bcc
    // recipients), then the headers. A Bcc header is added to check it never leaves.
    "X-Sender: \"App\" <app@contoso.test>\r\n\
     X-Receiver: to@dest.test\r\n\
     X-Receiver: \"Copy Person\" <cc@dest.test>\r\n\
     X-Receiver: hidden@dest.test\r\n\
     MIME-Version: 1.0\r\n\
     From: \"App\" <app@contoso.test>\r\n\
     To: to@dest.test\r\n\
     Cc: \"Copy Person\" <cc@dest.test>\r\n\
     Bcc: hidden@dest.test\r\n\
     Date: 5 Jan 2024 09:03:07 +0100\r\n\
     Subject: Hello from pickup\r\n\
     Content-Type: text/plain; charset=us-ascii\r\n\
     Content-Transfer-Encoding: quoted-printable\r\n\
     \r\n"
}

fn pickup_to_sink(unstuff: &str, file_body: &str) {
    let sink = Sink::start_default();
    let srv = Builder::new()
        .retrying()
        .key("PickupSettleTime", "200ms")
        .key("PickupUnstuffDots", unstuff)
        .route("dest.test", sink.addr.port())
        .start();
    fs::write(
        srv.folder("Pickup")
            .join("3f2c1b7e-0000-4000-8000-000000000001.eml"),
        format!("{}{file_body}", pickup_headers()),
    )
    .unwrap();
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "log:\n{}", srv.log_text());
    assert!(srv.wait_queue_empty(), "{:?}", names(&srv.folder("Queue")));
    std::thread::sleep(Duration::from_millis(500));
    let got = sink.messages();
    assert_eq!(got.len(), 1, "one transaction for all three: {got:?}");
    let m = &got[0];
    assert_eq!(m.sender_addr(), "app@contoso.test", "MAIL FROM");
    assert_eq!(
        m.rcpt_addrs(),
        vec!["to@dest.test", "cc@dest.test", "hidden@dest.test"],
        "RCPT TO, in X-Receiver order"
    );
    let text = m.text();
    assert!(!m.bare_line_endings, "CRLF only: {text:?}");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header/body separator: {text:?}"));
    for line in head.split("\r\n") {
        let l = line.to_ascii_lowercase();
        assert!(
            !l.starts_with("x-sender:") && !l.starts_with("x-receiver:") && !l.starts_with("bcc:"),
            "envelope and Bcc lines must not leave: {line:?} in\n{head}"
        );
    }
    assert!(
        !text.contains("hidden@dest.test"),
        "the Bcc recipient is not disclosed: {text}"
    );
    assert!(
        head.starts_with("Received: from mail pickup service by mx.mailroot.test"),
        "{head}"
    );
    for h in [
        "\r\nFrom: \"App\" <app@contoso.test>\r\n",
        "\r\nTo: to@dest.test\r\n",
        "\r\nCc: \"Copy Person\" <cc@dest.test>\r\n",
        "\r\nSubject: Hello from pickup\r\n",
        "\r\nContent-Transfer-Encoding: quoted-printable",
    ] {
        assert!(format!("{head}\r\n").contains(h), "{h:?} kept in\n{head}");
    }
    assert_eq!(
        body, BODY,
        "the body lines arrive as the application wrote them"
    );
    assert!(
        wait_until(|| pickup_leftovers(&srv).is_empty()),
        "Pickup emptied: {:?}",
        pickup_leftovers(&srv)
    );
}

#[test]
fn pickup_file_from_dotnet5_unstuffed_reaches_the_next_hop_intact() {
    // .NET Core 3.0+ / .NET 5+ write the body as is (no dot-stuffing): PickupUnstuffDots = 0.
    pickup_to_sink("0", BODY);
}

#[test]
fn pickup_file_from_dotnet_framework_dot_stuffed_reaches_the_next_hop_intact() {
    // .NET Framework writes the pickup file as if on the wire: every line starting with "." has
    // one more. The default (IIS) rule removes it again.
    let stuffed =
        "Body text\r\n..leading dot\r\n...two dots\r\n..\r\nafter a lone dot\r\nthe end\r\n";
    pickup_to_sink("1", stuffed);
}
