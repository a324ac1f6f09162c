//! TLS and AUTH inbound (docs/security.md): STARTTLS and implicit TLS over real rustls handshakes with a
//! certificate authority made in the test (rcgen), RequireTls, AUTH LOGIN/PLAIN against a users file
//! made with the real `mailroot user` command, RelayForAuth, the trace and protocol-log records of an
//! authenticated session, the brute-force brakes, and MaxConnectionsPerIp. Every wait is bounded and
//! nothing asserts on timing.

mod common;
use common::sink::TestCa;
use common::*;

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;

/// The server's name in the test configuration, and the name in its certificate.
const HOST: &str = "mx.mailroot.test";
const USER: &str = "scanner";
/// Short on purpose: its base64 form (12 characters) fits whole in any log field.
const PASS: &str = "s3cr3t-pw";

// ---------------------------------------------------------------------------------------------
// Helpers.

/// The AUTH PLAIN response for `user` and `pass` (no authorization identity).
fn plain(user: &str, pass: &str) -> String {
    b64(format!("\0{user}\0{pass}").as_bytes())
}

fn add_user(conf: &Path, name: &str, pass: &str) {
    let o = run_bin(
        &["user", "add", name, "--config", conf.to_str().unwrap()],
        None,
        Some(&format!("{pass}\n")),
    );
    assert!(
        o.ok(),
        "user add {name} failed:\n{}\n{}",
        o.stdout,
        o.stderr
    );
}

/// Starts a server from `b` in a fresh folder: with a certificate signed by `ca` (as cert.pem and
/// key.pem) when given, and with the user USER/PASS added by `mailroot user add` when `user`.
fn start(b: Builder, ca: Option<&TestCa>, user: bool) -> Server {
    let dir = TempDir::new("tlsauth");
    let b = match ca {
        Some(ca) => {
            ca.leaf_for(&[HOST]).write_pem(dir.path());
            b.key("TlsCertificateFile", "cert.pem")
                .key("TlsKeyFile", "key.pem")
        }
        None => b,
    };
    let ini = b.ini();
    let conf = dir.path().join("smtpsvc.ini");
    fs::write(&conf, &ini).unwrap();
    if user {
        add_user(&conf, USER, PASS);
    }
    Server::start_in(dir, &ini)
}

/// The first Received header of a stored message, unfolded.
fn received(text: &str) -> String {
    let start = text
        .find("Received: ")
        .unwrap_or_else(|| panic!("no Received header in {text:?}"));
    let mut out = String::new();
    for (i, line) in text[start..].split("\r\n").enumerate() {
        if i > 0 && !line.starts_with([' ', '\t']) {
            break;
        }
        out.push_str(line.trim());
        out.push(' ');
    }
    out
}

/// The one message in `folder`, waited for.
fn one_message(srv: &Server, folder: &str) -> String {
    let f = srv.wait_files(folder, 1);
    assert_eq!(f.len(), 1, "{folder}: {f:?}\n{}", srv.log_text());
    read_text(&f[0])
}

/// Waits until the W3C log records of instance 1 satisfy `done`.
fn wait_records(srv: &Server, done: impl Fn(&[Vec<String>]) -> bool) -> Vec<Vec<String>> {
    w3c_records(&srv.wait_w3c(1, |t| done(&w3c_records(t))))
}

/// STARTTLS, answered `220 2.0.0 Ready to start TLS`, and the handshake for HOST.
fn starttls(c: &mut Client, cfg: &Arc<ClientConfig>) {
    let r = c.starttls(cfg, HOST).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.last(), "220 2.0.0 Ready to start TLS", "{r:?}");
}

/// Greeting, EHLO, STARTTLS and the new EHLO: a client inside TLS, ready for a transaction.
fn tls_session(srv: &Server, src: &str, cfg: &Arc<ClientConfig>) -> Client {
    let mut c = Client::connect_from(src, srv.addr());
    c.greeting();
    c.ehlo();
    starttls(&mut c, cfg);
    c.ehlo();
    c
}

// ---------------------------------------------------------------------------------------------
// STARTTLS.

#[test]
fn starttls_is_not_offered_without_a_certificate() {
    let srv = start(Builder::new(), None, false);
    let mut c = Client::connect(srv.addr());
    c.greeting();
    let ext = c.ehlo();
    assert!(!ext.has("STARTTLS"), "no certificate, no STARTTLS: {ext:?}");
    let r = c.cmd("STARTTLS");
    assert_ne!(
        r.code, 220,
        "STARTTLS accepted without a certificate: {r:?}"
    );
    // The session goes on in plaintext.
    c.ok("NOOP", 250);
    c.quit();
}

#[test]
fn starttls_restarts_the_session_and_the_message_records_tls() {
    let ca = TestCa::new();
    let cfg = ca.client_config();
    let srv = start(Builder::new(), Some(&ca), false);
    let mut c = Client::connect(srv.addr());
    c.greeting();
    let ext = c.ehlo();
    assert!(ext.has("STARTTLS"), "certificate loaded: {ext:?}");
    let help = c.ok("HELP", 214).text();
    assert!(
        help.contains("STARTTLS"),
        "HELP lists STARTTLS before TLS: {help}"
    );
    // A transaction begun in plaintext does not survive the handshake.
    c.ok("MAIL FROM:<before@example.test>", 250);
    starttls(&mut c, &cfg);
    c.expect_prefix("MAIL FROM:<a@example.test>", "503 ");
    let ext = c.ehlo();
    assert!(!ext.has("STARTTLS"), "STARTTLS offered inside TLS: {ext:?}");
    let help = c.ok("HELP", 214).text();
    assert!(
        !help.contains("STARTTLS"),
        "HELP lists STARTTLS inside TLS: {help}"
    );
    assert!(help.contains("EHLO"), "{help}");
    c.expect_prefix("RCPT TO:<rcpt@local.test>", "503 5.5.1 Need mail command");
    c.ok("STARTTLS", 503);
    let (version, cipher) = c.tls_info();
    assert!(
        version == "TLSv1_3" || version == "TLSv1_2",
        "negotiated {version}"
    );
    let r = c.send_mail(
        "sender@example.test",
        &["rcpt@local.test"],
        &message("over starttls"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
    let text = one_message(&srv, "Drop");
    assert!(text.contains("Subject: over starttls"), "{text}");
    let rcv = received(&text);
    assert!(rcv.contains(" with ESMTPS id "), "{rcv}");
    assert!(rcv.contains(&version), "TLS version {version} in {rcv}");
    assert!(rcv.contains(&cipher), "cipher suite {cipher} in {rcv}");
    assert!(
        !text.contains("before@example.test"),
        "the plaintext transaction leaked into the message: {text}"
    );
}

#[test]
fn commands_pipelined_after_starttls_are_discarded() {
    let ca = TestCa::new();
    let cfg = ca.client_config();
    let srv = start(Builder::new(), Some(&ca), false);
    let mut c = Client::connect(srv.addr());
    c.greeting();
    c.ehlo();
    // CVE-2011-0411: the MAIL travels in plaintext with STARTTLS, in one segment.
    c.send(b"STARTTLS\r\nMAIL FROM:<x@evil.test>\r\n");
    let r = c.reply();
    assert_eq!(r.last(), "220 2.0.0 Ready to start TLS", "{r:?}");
    c.upgrade(&cfg, HOST).unwrap_or_else(|e| panic!("{e}"));
    // If the injected MAIL had run inside TLS, its reply would come before the EHLO's.
    let ext = c.ehlo();
    assert!(
        ext.lines[0].starts_with(HOST),
        "first reply inside TLS is not the EHLO's: {ext:?}"
    );
    c.expect_prefix("RCPT TO:<rcpt@local.test>", "503 5.5.1 Need mail command");
    // The session is sound: a fresh transaction works.
    let r = c.send_mail("ok@example.test", &["rcpt@local.test"], &message("clean"));
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
    let text = one_message(&srv, "Drop");
    assert!(!text.contains("evil.test"), "{text}");
    assert!(text.starts_with("x-sender: ok@example.test\r\n"), "{text}");
}

#[test]
fn implicit_tls_on_secure_bindings() {
    let ca = TestCa::new();
    let cfg = ca.client_config();
    let srv = start(
        Builder::new().key("SecureBindings", "127.0.0.1:0"),
        Some(&ca),
        false,
    );
    assert_eq!(
        srv.addrs.len(),
        2,
        "one plain and one secure binding: {:?}",
        srv.addrs
    );
    assert!(srv.addrs.iter().all(|a| a.0 == 1), "{:?}", srv.addrs);
    let secure = srv.addrs[1].1;
    assert_ne!(secure, srv.addr());

    // TLS from the first byte: the greeting comes inside TLS.
    let mut c = Client::connect_tls(secure, &cfg, HOST);
    c.greeting();
    let ext = c.ehlo();
    assert!(!ext.has("STARTTLS"), "already in TLS: {ext:?}");
    let (version, _) = c.tls_info();
    let r = c.send_mail(
        "sender@example.test",
        &["rcpt@local.test"],
        &message("implicit tls"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
    let text = one_message(&srv, "Drop");
    let rcv = received(&text);
    assert!(rcv.contains(" with ESMTPS id "), "{rcv}");
    assert!(rcv.contains(&version), "{rcv}");

    // A plaintext client on the secure port never gets a plaintext greeting.
    let mut raw = Dial::new().tcp(secure).expect("connect");
    raw.write_all(b"EHLO plain.test\r\n").unwrap();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("220 "),
        "plaintext SMTP on the implicit TLS port: {:?}",
        String::from_utf8_lossy(&got)
    );

    // The plain binding still offers STARTTLS.
    let mut p = Client::connect(srv.addr());
    p.greeting();
    assert!(p.ehlo().has("STARTTLS"));
    p.quit();
}

// ---------------------------------------------------------------------------------------------
// Configuration errors.

/// Writes `ini` into `dir` and asserts that `check` and `serve` both fail, saying `needle`.
fn refused(dir: &TempDir, ini: &str, needle: &str) {
    let conf = dir.path().join("smtpsvc.ini");
    fs::write(&conf, ini).unwrap();
    let conf = conf.to_str().unwrap();
    let check = run_bin(&["check", "--config", conf], None, Some(""));
    assert!(
        !check.ok(),
        "check accepted a configuration that must fail ({needle}):\n{}",
        check.stdout
    );
    assert!(
        check.stderr.contains(needle),
        "check must name {needle}: {}",
        check.stderr
    );
    let serve = run_bin(&["serve", "--config", conf], None, Some(""));
    assert!(!serve.ok(), "serve started with {needle}: {}", serve.stderr);
    assert!(
        serve.stderr.contains(needle),
        "serve must name {needle}: {}",
        serve.stderr
    );
    assert!(
        !serve.stderr.contains("listening on"),
        "serve listened: {}",
        serve.stderr
    );
}

#[test]
fn bad_certificate_or_key_files_are_start_up_errors() {
    let ca = TestCa::new();
    let dir = TempDir::new("badcert");
    ca.leaf_for(&[HOST]).write_pem(dir.path());
    let other = ca.leaf_for(&[HOST]);
    fs::write(dir.path().join("other-key.pem"), &other.key_pem).unwrap();
    fs::write(dir.path().join("garbage-key.pem"), "this is not a key\n").unwrap();
    let with = |cert: &str, key: &str| {
        Builder::new()
            .key("TlsCertificateFile", cert)
            .key("TlsKeyFile", key)
            .ini()
    };

    // The control: the matching pair is accepted.
    let conf = dir.path().join("smtpsvc.ini");
    fs::write(&conf, with("cert.pem", "key.pem")).unwrap();
    let good = run_bin(
        &["check", "--config", conf.to_str().unwrap()],
        None,
        Some(""),
    );
    assert!(good.ok(), "a good certificate refused: {}", good.stderr);

    refused(
        &dir,
        &with("missing-cert.pem", "key.pem"),
        "missing-cert.pem",
    );
    refused(
        &dir,
        &with("cert.pem", "missing-key.pem"),
        "missing-key.pem",
    );
    refused(
        &dir,
        &with("cert.pem", "garbage-key.pem"),
        "garbage-key.pem",
    );
    // A key that does not belong to the certificate: one of the two files is named.
    let ini = with("cert.pem", "other-key.pem");
    fs::write(&conf, &ini).unwrap();
    let check = run_bin(
        &["check", "--config", conf.to_str().unwrap()],
        None,
        Some(""),
    );
    assert!(!check.ok(), "a key that does not match was accepted");
    assert!(
        check.stderr.contains("other-key.pem") || check.stderr.contains("cert.pem"),
        "{}",
        check.stderr
    );
    let serve = run_bin(
        &["serve", "--config", conf.to_str().unwrap()],
        None,
        Some(""),
    );
    assert!(!serve.ok(), "serve started with a key that does not match");
}

#[test]
fn secure_bindings_or_require_tls_without_a_certificate_are_config_errors() {
    let dir = TempDir::new("nocert");
    refused(
        &dir,
        &Builder::new().key("SecureBindings", "127.0.0.1:0").ini(),
        "SecureBindings",
    );
    refused(
        &dir,
        &Builder::new().key("RequireTls", "1").ini(),
        "RequireTls",
    );
}

// ---------------------------------------------------------------------------------------------
// RequireTls.

#[test]
fn require_tls_refuses_mail_rcpt_data_and_auth_before_starttls() {
    let ca = TestCa::new();
    let cfg = ca.client_config();
    let srv = start(
        Builder::new().key("RequireTls", "1").key("AuthFlags", "3"),
        Some(&ca),
        true,
    );
    let must = "530 5.7.0 Must issue a STARTTLS command first";
    let mut c = Client::connect(srv.addr());
    c.greeting();
    assert!(c.ehlo().has("STARTTLS"));
    c.expect_prefix("MAIL FROM:<a@example.test>", must);
    c.expect_prefix("RCPT TO:<rcpt@local.test>", must);
    c.expect_prefix("DATA", must);
    c.expect_prefix(&format!("AUTH PLAIN {}", plain(USER, PASS)), must);
    c.expect_prefix("AUTH LOGIN", must);
    starttls(&mut c, &cfg);
    c.ehlo();
    c.expect_prefix(
        &format!("AUTH PLAIN {}", plain(USER, PASS)),
        "235 2.7.0 Authentication successful",
    );
    let r = c.send_mail(
        "a@example.test",
        &["rcpt@local.test"],
        &message("required tls"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
    let text = one_message(&srv, "Drop");
    assert!(text.contains("Subject: required tls"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Users.

#[test]
fn user_command_keeps_hashes_and_the_server_follows_the_file() {
    let dir = TempDir::new("users");
    let ini = Builder::new()
        .key("AuthFlags", "3")
        .key("AllowPlaintextAuth", "1")
        .ini();
    let conf = dir.path().join("smtpsvc.ini");
    fs::write(&conf, &ini).unwrap();
    let c = conf.to_str().unwrap().to_string();
    add_user(&conf, USER, PASS);
    add_user(&conf, "printer", "another-Pass-7");

    let list = run_bin(&["user", "list", "--config", &c], None, Some(""));
    assert!(list.ok(), "{}", list.stderr);
    let names: Vec<&str> = list.stdout.lines().map(str::trim).collect();
    assert!(names.contains(&USER), "{names:?}");
    assert!(names.contains(&"printer"), "{names:?}");

    // Default UsersFile: `users` beside the configuration.
    let users = dir.path().join("users");
    let text = fs::read_to_string(&users).expect("the users file");
    let line = text
        .lines()
        .find(|l| l.starts_with("scanner:"))
        .unwrap_or_else(|| panic!("no scanner line: {text}"));
    assert!(line.starts_with("scanner:$argon2id$"), "{line}");
    assert!(!text.contains(PASS), "plaintext password on disk: {text}");
    assert!(!text.contains(&b64(PASS.as_bytes())), "{text}");
    assert!(!text.contains("another-Pass-7"), "{text}");

    let srv = Server::start_in(dir, &ini);
    let auth = |want: &str| {
        let mut s = Client::connect(srv.addr());
        s.greeting();
        s.ehlo();
        s.expect_prefix(&format!("AUTH PLAIN {}", plain(USER, PASS)), want);
        s.quit();
    };
    auth("235 2.7.0 Authentication successful");

    let del = run_bin(&["user", "del", USER, "--config", &c], None, Some(""));
    assert!(del.ok(), "{}", del.stderr);
    let list = run_bin(&["user", "list", "--config", &c], None, Some(""));
    let names: Vec<&str> = list.stdout.lines().map(str::trim).collect();
    assert!(!names.contains(&USER), "{names:?}");
    assert!(names.contains(&"printer"), "{names:?}");
    let text = fs::read_to_string(&users).unwrap();
    assert!(!text.contains("scanner"), "{text}");
    // The running server follows the file: the deleted user can no longer log in.
    auth("535 5.7.8 Authentication credentials invalid");

    let again = run_bin(&["user", "del", USER, "--config", &c], None, Some(""));
    assert!(!again.ok(), "deleting a user that is not there must fail");
}

// ---------------------------------------------------------------------------------------------
// AUTH.

#[test]
fn auth_is_offered_only_inside_tls() {
    let ca = TestCa::new();
    let cfg = ca.client_config();
    let srv = start(Builder::new().key("AuthFlags", "3"), Some(&ca), true);
    let mut c = Client::connect(srv.addr());
    c.greeting();
    let ext = c.ehlo();
    assert!(
        !ext.lines
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with("AUTH")),
        "AUTH offered in plaintext: {ext:?}"
    );
    c.expect_prefix(&format!("AUTH PLAIN {}", plain(USER, PASS)), "538 5.7.11");
    starttls(&mut c, &cfg);
    let ext = c.ehlo();
    assert!(ext.has("AUTH LOGIN PLAIN"), "{ext:?}");
    c.expect_prefix(
        &format!("AUTH PLAIN {}", plain(USER, PASS)),
        "235 2.7.0 Authentication successful",
    );
    c.quit();
}

#[test]
fn allow_plaintext_auth_offers_auth_before_tls() {
    let ca = TestCa::new();
    let srv = start(
        Builder::new()
            .key("AuthFlags", "3")
            .key("AllowPlaintextAuth", "1"),
        Some(&ca),
        true,
    );
    let mut c = Client::connect(srv.addr());
    c.greeting();
    let ext = c.ehlo();
    assert!(ext.has("STARTTLS"), "{ext:?}");
    assert!(ext.has("AUTH LOGIN PLAIN"), "{ext:?}");
    c.expect_prefix(
        &format!("AUTH PLAIN {}", plain(USER, PASS)),
        "235 2.7.0 Authentication successful",
    );
    c.quit();
}

#[test]
fn auth_plain_and_login_inside_tls() {
    let ca = TestCa::new();
    let cfg = ca.client_config();
    let srv = start(Builder::new().key("AuthFlags", "3"), Some(&ca), true);
    let ok = "235 2.7.0 Authentication successful";
    let bad = "535 5.7.8 Authentication credentials invalid";

    // PLAIN with an initial response; then a second AUTH is out of sequence.
    let mut c = tls_session(&srv, "127.0.0.1", &cfg);
    c.expect_prefix(&format!("AUTH PLAIN {}", plain(USER, PASS)), ok);
    let r = c.cmd(&format!("AUTH PLAIN {}", plain(USER, PASS)));
    assert_eq!(r.code, 503, "second AUTH: {r:?}");
    c.quit();

    // PLAIN, challenge form.
    let mut c = tls_session(&srv, "127.0.0.1", &cfg);
    let r = c.cmd("AUTH PLAIN");
    assert_eq!(r.code, 334, "{r:?}");
    assert_eq!(r.lines, vec![String::new()], "an empty challenge: {r:?}");
    c.expect_prefix(&plain(USER, PASS), ok);
    c.quit();

    // LOGIN.
    let mut c = tls_session(&srv, "127.0.0.1", &cfg);
    c.expect_prefix("AUTH LOGIN", "334 VXNlcm5hbWU6");
    c.expect_prefix(&b64(USER.as_bytes()), "334 UGFzc3dvcmQ6");
    c.expect_prefix(&b64(PASS.as_bytes()), ok);
    c.quit();

    // A wrong password and an unknown user get the same answer.
    let mut c = tls_session(&srv, "127.0.0.1", &cfg);
    let wrong = c.cmd(&format!("AUTH PLAIN {}", plain(USER, "wrong-password")));
    assert_eq!(wrong.last(), bad, "{wrong:?}");
    c.quit();
    let mut c = tls_session(&srv, "127.0.0.1", &cfg);
    let unknown = c.cmd(&format!("AUTH PLAIN {}", plain("nobody", PASS)));
    assert_eq!(unknown.last(), bad, "{unknown:?}");
    c.quit();
    let mut c = tls_session(&srv, "127.0.0.1", &cfg);
    c.expect_prefix("AUTH LOGIN", "334 VXNlcm5hbWU6");
    c.expect_prefix(&b64(b"nobody"), "334 UGFzc3dvcmQ6");
    c.expect_prefix(&b64(PASS.as_bytes()), bad);
    c.quit();

    // `*` cancels, bad base64 is refused, and the session can still log in afterwards.
    let mut c = tls_session(&srv, "127.0.0.1", &cfg);
    c.expect_prefix("AUTH LOGIN", "334 ");
    let r = c.cmd("*");
    assert_eq!(r.code, 501, "cancel: {r:?}");
    c.expect_prefix("AUTH PLAIN", "334");
    let r = c.cmd("*");
    assert_eq!(r.code, 501, "cancel: {r:?}");
    c.expect_prefix("AUTH PLAIN !!!not-base64!!!", "501 5.5.2");
    c.expect_prefix("AUTH LOGIN", "334 VXNlcm5hbWU6");
    c.expect_prefix("@@@@", "501 5.5.2");
    c.expect_prefix(&format!("AUTH PLAIN {}", plain(USER, PASS)), ok);
    c.quit();
}

#[test]
fn relay_for_authenticated_users() {
    let ca = TestCa::new();
    let cfg = ca.client_config();
    let keys = |b: Builder| {
        b.key("AuthFlags", "3")
            .key("DnsServers", "127.0.0.1:9")
            .key("SmtpRemoteProgressiveRetry", "60")
    };
    let srv = start(keys(Builder::new()), Some(&ca), true);

    // Not in RelayIpList and not logged in: no relay.
    let mut c = tls_session(&srv, "127.0.0.2", &cfg);
    c.ok("MAIL FROM:<scan@local.test>", 250);
    c.expect_prefix("RCPT TO:<far@remote.example>", "550 5.7.1 Unable to relay");
    c.ok("RSET", 250);
    c.expect_prefix(
        &format!("AUTH PLAIN {}", plain(USER, PASS)),
        "235 2.7.0 Authentication successful",
    );
    let r = c.send_mail(
        "scan@local.test",
        &["far@remote.example"],
        &message("relayed for scanner"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
    let text = one_message(&srv, "Queue");
    assert!(text.contains("far@remote.example"), "{text}");
    assert!(text.contains("Subject: relayed for scanner"), "{text}");
    assert!(srv.files("Drop").is_empty());

    // RelayForAuth = 0: logging in does not open the relay.
    let srv = start(
        keys(Builder::new()).key("RelayForAuth", "0"),
        Some(&ca),
        true,
    );
    let mut c = tls_session(&srv, "127.0.0.2", &cfg);
    c.expect_prefix(
        &format!("AUTH PLAIN {}", plain(USER, PASS)),
        "235 2.7.0 Authentication successful",
    );
    c.ok("MAIL FROM:<scan@local.test>", 250);
    c.expect_prefix("RCPT TO:<far@remote.example>", "550 5.7.1 Unable to relay");
    // Local mail still goes.
    c.ok("RCPT TO:<rcpt@local.test>", 250);
    c.quit();
    assert!(srv.files("Queue").is_empty());
}

#[test]
fn auth_flags_2_requires_authentication() {
    let ca = TestCa::new();
    let cfg = ca.client_config();
    let srv = start(Builder::new().key("AuthFlags", "2"), Some(&ca), true);
    let mut c = tls_session(&srv, "127.0.0.1", &cfg);
    c.expect_prefix(
        "MAIL FROM:<a@example.test>",
        "530 5.7.0 Authentication required",
    );
    c.expect_prefix(
        &format!("AUTH PLAIN {}", plain(USER, PASS)),
        "235 2.7.0 Authentication successful",
    );
    let r = c.send_mail(
        "a@example.test",
        &["rcpt@local.test"],
        &message("after auth"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
    one_message(&srv, "Drop");
}

#[test]
fn authenticated_message_trace_and_protocol_log() {
    let ca = TestCa::new();
    let cfg = ca.client_config();
    let srv = start(Builder::new().key("AuthFlags", "3"), Some(&ca), true);
    let mut c = Client::connect(srv.addr());
    c.greeting();
    c.ehlo();
    starttls(&mut c, &cfg);
    c.ehlo();
    c.expect_prefix(
        &format!("AUTH PLAIN {}", plain(USER, PASS)),
        "235 2.7.0 Authentication successful",
    );
    let r = c.send_mail("a@example.test", &["rcpt@local.test"], &message("traced"));
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();
    let text = one_message(&srv, "Drop");
    let rcv = received(&text);
    assert!(rcv.contains(" with ESMTPSA id "), "{rcv}");
    assert!(rcv.contains("authenticated user scanner"), "{rcv}");

    let recs = wait_records(&srv, |r| r.iter().any(|f| f.len() > 8 && f[8] == "QUIT"));
    let first = &recs[0];
    assert_eq!(first[8], "EHLO", "{first:?}");
    assert_eq!(
        first[3], "client.test",
        "before AUTH: the HELO name: {first:?}"
    );
    let auth = recs
        .iter()
        .position(|f| f[8] == "AUTH" && f.get(11).is_some_and(|s| s == "235"))
        .unwrap_or_else(|| panic!("no successful AUTH line: {recs:?}"));
    let after = &recs[auth + 1..];
    for m in ["MAIL", "RCPT", "DATA", "QUIT"] {
        assert!(
            after.iter().any(|f| f[8] == m),
            "no {m} line after AUTH: {recs:?}"
        );
    }
    for f in after {
        assert_eq!(f[3], USER, "cs-username after AUTH: {f:?}");
    }
}

#[test]
fn credentials_never_reach_the_logs() {
    let ca = TestCa::new();
    let cfg = ca.client_config();
    let srv = start(Builder::new().key("AuthFlags", "3"), Some(&ca), true);
    let mut c = tls_session(&srv, "127.0.0.1", &cfg);
    c.expect_prefix(&format!("AUTH PLAIN {}", plain(USER, PASS)), "235");
    c.quit();
    let mut c = tls_session(&srv, "127.0.0.1", &cfg);
    c.expect_prefix("AUTH LOGIN", "334");
    c.expect_prefix(&b64(USER.as_bytes()), "334");
    c.expect_prefix(&b64(PASS.as_bytes()), "235");
    c.quit();
    let recs = wait_records(&srv, |r| {
        r.iter().filter(|f| f.len() > 8 && f[8] == "QUIT").count() >= 2
    });
    let log = srv.w3c_log(1);
    let diag = srv.log_text();
    for (what, secret) in [
        ("the password", PASS.to_string()),
        ("the base64 password", b64(PASS.as_bytes())),
        ("the base64 PLAIN response", plain(USER, PASS)),
    ] {
        assert!(
            !log.contains(&secret),
            "the W3C log holds {what} ({secret}):\n{log}"
        );
        assert!(
            !diag.contains(&secret),
            "the diagnostic log holds {what} ({secret}):\n{diag}"
        );
    }
    assert!(recs.iter().any(|f| f[8] == "AUTH"));
}

// ---------------------------------------------------------------------------------------------
// Brute force.

#[test]
fn failed_logins_end_the_session_at_max_smtp_errors() {
    let srv = start(
        Builder::new()
            .key("AuthFlags", "3")
            .key("AllowPlaintextAuth", "1")
            .key("MaxSmtpErrors", "3"),
        None,
        true,
    );
    let bad = "535 5.7.8 Authentication credentials invalid";
    let mut c = Client::connect(srv.addr());
    c.greeting();
    c.ehlo();
    let mut took = Vec::new();
    for i in 0..3 {
        let t0 = Instant::now();
        let r = c.cmd(&format!("AUTH PLAIN {}", plain(USER, &format!("wrong{i}"))));
        took.push(t0.elapsed());
        assert_eq!(r.last(), bad, "failure {i}: {r:?}");
    }
    // Not asserted (no timing assertions); shown for the record.
    eprintln!("failed AUTH replies took {took:?}");
    let r = c.reply();
    assert!(r.last().starts_with("421 4.7.0 "), "{r:?}");
    c.assert_closed();

    // The next session is a fresh start (the address is far from the per-minute limit).
    let mut c = Client::connect(srv.addr());
    c.greeting();
    c.ehlo();
    c.expect_prefix(
        &format!("AUTH PLAIN {}", plain(USER, PASS)),
        "235 2.7.0 Authentication successful",
    );
    c.quit();
}

#[test]
fn too_many_failures_from_one_address_lock_it_out() {
    let srv = start(
        Builder::new()
            .key("AuthFlags", "3")
            .key("AllowPlaintextAuth", "1")
            .key("MaxSmtpErrors", "100"),
        None,
        true,
    );
    let addr = srv.addr();
    let bad = "535 5.7.8 Authentication credentials invalid";
    // Ten failures from 127.0.0.2 in five sessions side by side: not yet over the limit.
    let workers: Vec<_> = (0..5)
        .map(|w| {
            std::thread::spawn(move || {
                let mut c = Client::connect_from("127.0.0.2", addr);
                c.greeting();
                c.ehlo();
                for i in 0..2 {
                    let r = c.cmd(&format!(
                        "AUTH PLAIN {}",
                        plain(USER, &format!("guess{w}{i}"))
                    ));
                    assert_eq!(r.last(), bad, "session {w}, failure {i}: {r:?}");
                }
                c.quit();
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a guessing session");
    }
    // The eleventh failure is still answered 535; from then on the address is locked out.
    let mut c = Client::connect_from("127.0.0.2", addr);
    c.greeting();
    c.ehlo();
    c.expect_prefix(&format!("AUTH PLAIN {}", plain(USER, "guess-11")), bad);
    c.expect_prefix(&format!("AUTH PLAIN {}", plain(USER, PASS)), "454 4.7.0");
    c.quit();
    let mut c = Client::connect_from("127.0.0.2", addr);
    c.greeting();
    c.ehlo();
    c.expect_prefix(&format!("AUTH PLAIN {}", plain(USER, PASS)), "454 4.7.0");
    c.expect_prefix("AUTH LOGIN", "454 4.7.0");
    c.quit();
    // Other addresses are not affected.
    for src in ["127.0.0.3", "127.0.0.1"] {
        let mut c = Client::connect_from(src, addr);
        c.greeting();
        c.ehlo();
        c.expect_prefix(
            &format!("AUTH PLAIN {}", plain(USER, PASS)),
            "235 2.7.0 Authentication successful",
        );
        c.quit();
    }
}

// ---------------------------------------------------------------------------------------------
// MaxConnectionsPerIp.

#[test]
fn max_connections_per_ip() {
    let srv = start(Builder::new().key("MaxConnectionsPerIp", "2"), None, false);
    let addr = srv.addr();
    let mut a = Client::connect_from("127.0.0.2", addr);
    a.greeting();
    let mut b = Client::connect_from("127.0.0.2", addr);
    b.greeting();
    let mut third = Client::connect_from("127.0.0.2", addr);
    let r = third.reply();
    assert!(
        r.last()
            .starts_with("421 4.7.0 Too many connections from your address"),
        "{r:?}"
    );
    third.assert_closed();

    // Another address is not affected, and RelayIpList (127.0.0.1) is exempt.
    let mut other = Client::connect_from("127.0.0.3", addr);
    other.greeting();
    let mut locals: Vec<Client> = (0..3)
        .map(|_| {
            let mut l = Client::connect(addr);
            l.greeting();
            l
        })
        .collect();
    for l in &mut locals {
        l.ok("NOOP", 250);
    }
    // The two sessions from 127.0.0.2 still work.
    a.ok("EHLO a.test", 250);
    b.ok("EHLO b.test", 250);

    // Once one of them ends, 127.0.0.2 may connect again.
    a.quit();
    let until = Instant::now() + WAIT;
    let mut again = loop {
        let mut c = Client::connect_from("127.0.0.2", addr);
        let r = c.reply();
        if r.code == 220 {
            break c;
        }
        assert_eq!(r.code, 421, "{r:?}");
        assert!(
            Instant::now() < until,
            "127.0.0.2 still refused after one of its sessions ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    again.ok("EHLO again.test", 250);
    again.quit();
    b.quit();
    other.quit();
    for l in locals {
        l.quit();
    }
}
