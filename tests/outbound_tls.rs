//! Outbound TLS and AUTH end to end: the real binary delivers to scriptable sinks on loopback that
//! offer STARTTLS or implicit TLS with certificates from a test CA (trusted through
//! `OutboundTlsCaFile`) or not, and AUTH LOGIN/PLAIN; plus a raw next hop that injects a reply after
//! its STARTTLS answer.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::acceptor::Acceptor;
use common::sink::{AuthAttempt, Sink, SinkBuilder, TestCa, TlsCert};
use common::*;
use rustls::{ServerConfig, ServerConnection, StreamOwned};

const USER: &str = "relay@contoso.test";
const PASS: &str = "s3cret!";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Every remote recipient to `[127.0.0.1]:<port>` with OutboundTls = `tls`.
fn to_smart_host(port: u16, tls: &str) -> Builder {
    Builder::new()
        .retrying()
        .smart_host(port)
        .key("OutboundTls", tls)
}

/// `to_smart_host` trusting the test CA.
fn trusting(ca: &TestCa, port: u16, tls: &str) -> Builder {
    to_smart_host(port, tls).key("OutboundTlsCaFile", &ca.ca_pem_path().to_string_lossy())
}

fn with_credentials(b: Builder, user: &str, pass: &str) -> Builder {
    b.key("RouteUserName", user).key("RoutePassword", pass)
}

/// Waits until `rcpt` has been tried `attempts` times and is still pending with a 4xx reason;
/// the message is still in Queue and no report was written. Returns the state file.
fn assert_stays_queued(srv: &Server, rcpt: &str, attempts: u32) -> String {
    let line = format!("rcpt: pending {rcpt} | 4");
    let enough = |s: &String| {
        s.contains(&line)
            && s.lines()
                .find_map(|l| l.strip_prefix("attempts: "))
                .and_then(|n| n.trim().parse::<u32>().ok())
                .is_some_and(|n| n >= attempts)
    };
    assert!(
        wait_until(|| srv.states().iter().any(enough)),
        "{rcpt} pending with a 4xx reason after {attempts} attempt(s): {:?}\n{}",
        srv.states(),
        srv.log_text()
    );
    assert_eq!(srv.files("Queue").len(), 1, "the message stays queued");
    assert!(
        srv.files("Drop").is_empty(),
        "no report for a temporary failure"
    );
    srv.states().into_iter().find(enough).unwrap()
}

fn no_mail_command(cmds: &[String]) -> bool {
    !cmds
        .iter()
        .any(|c| c.to_ascii_uppercase().starts_with("MAIL"))
}

fn tls12_or_13(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("TLSv1_2") | Some("TLSv1_3"))
}

// ---------------------------------------------------------------------------------------------
// OutboundTls = opportunistic
// ---------------------------------------------------------------------------------------------

#[test]
fn opportunistic_uses_starttls_even_with_an_untrusted_certificate() {
    let ca = TestCa::new();
    let sink = Sink::builder().starttls(ca.untrusted_leaf()).start();
    let srv = to_smart_host(sink.addr.port(), "opportunistic").start();
    srv.submit(
        "app@local.test",
        &["u@example.test"],
        &message("opportunistic"),
    );
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert!(got[0].tls, "encrypted: {:?}", got[0]);
    assert!(tls12_or_13(&got[0].tls_version), "{:?}", got[0].tls_version);
    assert!(
        got[0].ehlo && got[0].helo == "mx.mailroot.test",
        "EHLO again inside TLS"
    );
    assert!(srv.wait_queue_empty());
}

#[test]
fn opportunistic_is_the_default() {
    let ca = TestCa::new();
    let sink = Sink::builder().starttls(ca.untrusted_leaf()).start();
    let srv = Builder::new()
        .retrying()
        .smart_host(sink.addr.port())
        .start();
    srv.submit(
        "app@local.test",
        &["u@example.test"],
        &message("default policy"),
    );
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert!(got[0].tls);
}

#[test]
fn opportunistic_without_starttls_delivers_in_plaintext() {
    let sink = Sink::start_default();
    let srv = to_smart_host(sink.addr.port(), "opportunistic").start();
    srv.submit("app@local.test", &["u@example.test"], &message("plaintext"));
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert!(!got[0].tls);
    assert!(!sink.commands().iter().any(|c| c == "STARTTLS"));
    assert!(srv.wait_queue_empty());
}

#[test]
fn none_never_uses_starttls() {
    let ca = TestCa::new();
    let sink = Sink::builder().starttls(ca.leaf()).start();
    let srv = to_smart_host(sink.addr.port(), "none").start();
    srv.submit("app@local.test", &["u@example.test"], &message("no tls"));
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert!(!got[0].tls);
    assert!(!sink.commands().iter().any(|c| c == "STARTTLS"));
}

// ---------------------------------------------------------------------------------------------
// OutboundTls = required
// ---------------------------------------------------------------------------------------------

#[test]
fn required_with_a_trusted_certificate_delivers_over_tls() {
    let ca = TestCa::new();
    let sink = Sink::builder().starttls(ca.leaf()).require_tls().start();
    let srv = trusting(&ca, sink.addr.port(), "required").start();
    srv.submit("app@local.test", &["u@example.test"], &message("required"));
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert!(got[0].tls);
    assert!(tls12_or_13(&got[0].tls_version), "{:?}", got[0].tls_version);
    assert!(sink.tls_errors().is_empty(), "{:?}", sink.tls_errors());
    assert!(srv.wait_queue_empty());
}

#[test]
fn required_works_with_a_tls12_only_next_hop() {
    let ca = TestCa::new();
    let sink = Sink::builder().starttls(ca.leaf()).tls12_only().start();
    let srv = trusting(&ca, sink.addr.port(), "required").start();
    srv.submit("app@local.test", &["u@example.test"], &message("tls 1.2"));
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert_eq!(got[0].tls_version.as_deref(), Some("TLSv1_2"));
}

#[test]
fn required_verifies_the_mx_host_name() {
    let ca = TestCa::new();
    let dns = common::dns::DnsServer::builder()
        .mx("secure.test", 10, "mx1.secure.test")
        .a("mx1.secure.test", Ipv4Addr::new(127, 0, 0, 2))
        .start();
    let sink = Sink::builder()
        .bind("127.0.0.2")
        .starttls(ca.leaf_for(&["mx1.secure.test"]))
        .start();
    let srv = Builder::new()
        .retrying()
        .key("DnsServers", &dns.addr.to_string())
        .key("RemoteSmtpPort", &sink.addr.port().to_string())
        .key("OutboundTls", "required")
        .key("OutboundTlsCaFile", &ca.ca_pem_path().to_string_lossy())
        .start();
    srv.submit("app@local.test", &["u@secure.test"], &message("mx name"));
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert!(got[0].tls);
    assert_eq!(
        got[0].sni.as_deref(),
        Some("mx1.secure.test"),
        "the MX host name is the name checked"
    );
}

/// A `required` next hop that fails; the message must stay queued and nothing be sent.
fn required_fails_with(sink: SinkBuilder, ca: &TestCa) -> (Server, Sink) {
    let sink = sink.start();
    let srv = trusting(ca, sink.addr.port(), "required").start();
    srv.submit(
        "app@local.test",
        &["u@example.test"],
        &message("must be encrypted"),
    );
    assert_stays_queued(&srv, "u@example.test", 2);
    assert!(sink.messages().is_empty());
    assert!(
        no_mail_command(&sink.commands()),
        "nothing sent: {:?}",
        sink.commands()
    );
    (srv, sink)
}

#[test]
fn required_with_an_untrusted_certificate_stays_queued_then_goes_to_a_good_host() {
    let ca = TestCa::new();
    let (srv, bad) = required_fails_with(Sink::builder().starttls(ca.untrusted_leaf()), &ca);
    assert!(!bad.tls_errors().is_empty(), "the handshake was refused");
    let port = bad.addr.port();
    drop(bad);
    // The administrator fixes the certificate: the next retry delivers.
    let good = Sink::builder().port(port).starttls(ca.leaf()).start();
    let got = good.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert!(got[0].tls);
    assert!(srv.wait_queue_empty(), "{}", srv.log_text());
    assert!(srv.files("Drop").is_empty());
}

#[test]
fn required_with_a_certificate_for_another_name_stays_queued() {
    let ca = TestCa::new();
    required_fails_with(
        Sink::builder().starttls(ca.leaf_for(&["other.test", "127.0.0.9"])),
        &ca,
    );
}

#[test]
fn required_with_an_expired_certificate_stays_queued() {
    let ca = TestCa::new();
    required_fails_with(Sink::builder().starttls(ca.expired_leaf()), &ca);
}

#[test]
fn required_without_starttls_stays_queued() {
    let ca = TestCa::new();
    let (_srv, sink) = required_fails_with(Sink::builder(), &ca);
    assert!(!sink.commands().iter().any(|c| c == "STARTTLS"));
}

#[test]
fn required_when_starttls_is_refused_stays_queued() {
    let ca = TestCa::new();
    required_fails_with(
        Sink::builder()
            .starttls(ca.leaf())
            .on_starttls("454 4.7.0 TLS not available due to temporary reason"),
        &ca,
    );
}

// ---------------------------------------------------------------------------------------------
// OutboundTls = implicit
// ---------------------------------------------------------------------------------------------

#[test]
fn implicit_tls_with_the_test_ca_delivers() {
    let ca = TestCa::new();
    let sink = Sink::builder().implicit_tls(ca.leaf()).start();
    let srv = trusting(&ca, sink.addr.port(), "implicit").start();
    srv.submit("app@local.test", &["u@example.test"], &message("implicit"));
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert!(
        got[0].tls && tls12_or_13(&got[0].tls_version),
        "{:?}",
        got[0]
    );
    assert!(!sink.commands().iter().any(|c| c == "STARTTLS"));
    assert!(srv.wait_queue_empty());
}

#[test]
fn implicit_tls_verifies_the_certificate() {
    let ca = TestCa::new();
    let sink = Sink::builder().implicit_tls(ca.untrusted_leaf()).start();
    let srv = trusting(&ca, sink.addr.port(), "implicit").start();
    srv.submit(
        "app@local.test",
        &["u@example.test"],
        &message("implicit untrusted"),
    );
    assert_stays_queued(&srv, "u@example.test", 1);
    assert!(sink.messages().is_empty());
    assert!(no_mail_command(&sink.commands()), "{:?}", sink.commands());
}

// ---------------------------------------------------------------------------------------------
// AUTH
// ---------------------------------------------------------------------------------------------

/// A next hop shaped like Microsoft 365: STARTTLS required, then AUTH LOGIN only.
fn m365(ca: &TestCa, pass: &str) -> SinkBuilder {
    Sink::builder()
        .hostname("smtp.office365.test")
        .starttls(ca.leaf())
        .require_tls()
        .auth(USER, pass, &["LOGIN"])
        .auth_only_after_tls()
        .require_auth()
}

#[test]
fn auth_login_at_a_microsoft_365_like_smart_host() {
    let ca = TestCa::new();
    let sink = m365(&ca, PASS).start();
    let srv = with_credentials(trusting(&ca, sink.addr.port(), "required"), USER, PASS).start();
    srv.submit("app@local.test", &["u@example.test"], &message("via 365"));
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert_eq!(
        sink.auth_attempts(),
        [AuthAttempt {
            mechanism: "LOGIN".into(),
            user: USER.into(),
            success: true,
            connection: got[0].connection,
        }]
    );
    assert!(got[0].tls && got[0].auth_user.as_deref() == Some(USER));
    assert!(srv.wait_queue_empty());
}

#[test]
fn auth_plain_is_used_when_offered() {
    let ca = TestCa::new();
    let sink = Sink::builder()
        .starttls(ca.leaf())
        .auth(USER, PASS, &["LOGIN", "PLAIN"])
        .require_auth()
        .start();
    let srv = with_credentials(trusting(&ca, sink.addr.port(), "required"), USER, PASS).start();
    srv.submit("app@local.test", &["u@example.test"], &message("plain"));
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    let a = sink.auth_attempts();
    assert_eq!(a.len(), 1, "{a:?}");
    assert!(a[0].mechanism == "PLAIN" && a[0].success, "{a:?}");
    assert_eq!(got[0].auth_user.as_deref(), Some(USER));
}

#[test]
fn a_wrong_password_keeps_the_mail_queued() {
    let ca = TestCa::new();
    let sink = m365(&ca, PASS).start();
    let srv = with_credentials(
        trusting(&ca, sink.addr.port(), "required"),
        USER,
        "wrong password",
    )
    .start();
    srv.submit("app@local.test", &["u@example.test"], &message("bad login"));
    assert_stays_queued(&srv, "u@example.test", 1);
    let a = sink.auth_attempts();
    assert!(!a.is_empty() && a.iter().all(|x| !x.success), "{a:?}");
    assert!(sink.messages().is_empty());
    assert!(no_mail_command(&sink.commands()), "{:?}", sink.commands());
}

#[test]
fn credentials_are_never_sent_without_tls() {
    let sink = Sink::builder()
        .auth(USER, PASS, &["PLAIN", "LOGIN"])
        .require_auth()
        .start();
    let srv =
        with_credentials(to_smart_host(sink.addr.port(), "opportunistic"), USER, PASS).start();
    srv.submit(
        "app@local.test",
        &["u@example.test"],
        &message("no tls no auth"),
    );
    assert_stays_queued(&srv, "u@example.test", 2);
    assert!(
        sink.auth_attempts().is_empty(),
        "{:?}",
        sink.auth_attempts()
    );
    assert!(
        !sink
            .commands()
            .iter()
            .any(|c| c.to_ascii_uppercase().starts_with("AUTH")),
        "{:?}",
        sink.commands()
    );
    assert!(sink.messages().is_empty());
}

#[test]
fn outbound_auth_allow_plaintext_sends_credentials_without_tls() {
    let sink = Sink::builder()
        .auth(USER, PASS, &["LOGIN"])
        .require_auth()
        .start();
    let srv = with_credentials(to_smart_host(sink.addr.port(), "opportunistic"), USER, PASS)
        .key("OutboundAuthAllowPlaintext", "1")
        .start();
    srv.submit(
        "app@local.test",
        &["u@example.test"],
        &message("plaintext auth"),
    );
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert!(!got[0].tls && got[0].auth_user.as_deref() == Some(USER));
    let a = sink.auth_attempts();
    assert!(
        a.len() == 1 && a[0].success && a[0].mechanism == "LOGIN",
        "{a:?}"
    );
}

#[test]
fn a_domain_section_has_its_own_credentials_and_tls_policy() {
    let ca = TestCa::new();
    let secure = m365(&ca, PASS).start();
    // The server's own smart host offers STARTTLS, but the server's policy is `none`.
    let plain = Sink::builder().starttls(ca.leaf()).start();
    let srv = to_smart_host(plain.addr.port(), "none")
        .key("OutboundTlsCaFile", &ca.ca_pem_path().to_string_lossy())
        // Section names are case-insensitive; this spelling keeps the harness from counting the
        // section as a second virtual server it must wait for.
        .section(&format!(
            "[SMTPSVC/1/Domain/secure.test]\nSmartHost = [127.0.0.1]:{}\nOutboundTls = required\nRouteUserName = {USER}\nRoutePassword = {PASS}\n",
            secure.addr.port()
        ))
        .start();
    srv.submit(
        "app@local.test",
        &["u@secure.test", "v@other.test"],
        &message("two policies"),
    );
    let got = secure.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert_eq!(got[0].rcpt_addrs(), ["u@secure.test"]);
    assert!(got[0].tls && got[0].auth_user.as_deref() == Some(USER));
    let got = plain.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert_eq!(got[0].rcpt_addrs(), ["v@other.test"]);
    assert!(!got[0].tls, "the server's policy (none) applies elsewhere");
    assert!(
        !plain
            .commands()
            .iter()
            .any(|c| c == "STARTTLS" || c.to_ascii_uppercase().starts_with("AUTH")),
        "{:?}",
        plain.commands()
    );
    assert!(plain.auth_attempts().is_empty());
    assert!(srv.wait_queue_empty());
}

// ---------------------------------------------------------------------------------------------
// STARTTLS response injection
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Injection {
    /// A well-behaved server (the control).
    None,
    /// `220 Ready` and an extra reply in the same write.
    SamePacket,
    /// The extra reply a moment after `220 Ready`.
    Later,
}

/// A raw next hop offering STARTTLS that may inject a plaintext reply after its `220`. When the
/// client goes on with a TLS handshake it gets one, and every command it sends (plain or inside
/// TLS) is recorded, so a client that did not drop the session shows up with a MAIL command.
struct Injector {
    acceptor: Acceptor,
    commands: Arc<Mutex<Vec<String>>>,
    messages: Arc<Mutex<usize>>,
}

impl Injector {
    fn start(cert: &TlsCert, mode: Injection) -> Injector {
        let config = cert.server_config(false);
        let commands: Arc<Mutex<Vec<String>>> = Arc::default();
        let messages: Arc<Mutex<usize>> = Arc::default();
        let (c, m) = (commands.clone(), messages.clone());
        let acceptor = Acceptor::start(move |_, stream| {
            let _ = stream.set_read_timeout(Some(WAIT));
            let _ = stream.set_nodelay(true);
            injector_session(stream, config.clone(), mode, &c, &m);
        });
        Injector {
            acceptor,
            commands,
            messages,
        }
    }

    fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }

    fn messages(&self) -> usize {
        *self.messages.lock().unwrap()
    }
}

enum Next {
    Close,
    StartTls,
}

/// Answers commands until QUIT, EOF or STARTTLS; records them with `prefix`.
fn serve_commands<S: Read + Write>(
    r: &mut BufReader<S>,
    prefix: &str,
    offer_starttls: bool,
    commands: &Mutex<Vec<String>>,
    messages: &Mutex<usize>,
) -> Next {
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return Next::Close,
            Ok(_) => {}
        }
        let cmd = line.trim_end().to_string();
        commands.lock().unwrap().push(format!("{prefix}{cmd}"));
        let verb = cmd
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" if offer_starttls => "250-evil.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
            "EHLO" => "250-evil.test\r\n250 PIPELINING\r\n",
            "STARTTLS" if offer_starttls => return Next::StartTls,
            "MAIL" | "RCPT" | "RSET" | "NOOP" | "HELO" => "250 2.0.0 Ok\r\n",
            "DATA" => {
                if r.get_mut().write_all(b"354 Go ahead\r\n").is_err() {
                    return Next::Close;
                }
                loop {
                    let mut l = String::new();
                    match r.read_line(&mut l) {
                        Ok(0) | Err(_) => return Next::Close,
                        Ok(_) => {}
                    }
                    if l == ".\r\n" {
                        break;
                    }
                }
                *messages.lock().unwrap() += 1;
                "250 2.0.0 Ok: queued\r\n"
            }
            "QUIT" => {
                let _ = r.get_mut().write_all(b"221 2.0.0 Bye\r\n");
                let _ = r.get_mut().flush();
                return Next::Close;
            }
            _ => "500 5.5.2 What?\r\n",
        };
        if r.get_mut().write_all(reply.as_bytes()).is_err() || r.get_mut().flush().is_err() {
            return Next::Close;
        }
    }
}

fn injector_session(
    stream: TcpStream,
    config: Arc<ServerConfig>,
    mode: Injection,
    commands: &Mutex<Vec<String>>,
    messages: &Mutex<usize>,
) {
    let mut r = BufReader::new(stream);
    if r.get_mut().write_all(b"220 evil.test ESMTP\r\n").is_err() {
        return;
    }
    if let Next::Close = serve_commands(&mut r, "", true, commands, messages) {
        return;
    }
    let mut sock = r.into_inner();
    let ok = match mode {
        Injection::None => sock.write_all(b"220 2.0.0 Ready to start TLS\r\n"),
        Injection::SamePacket => {
            sock.write_all(b"220 2.0.0 Ready to start TLS\r\n250 2.0.0 injected\r\n")
        }
        Injection::Later => sock
            .write_all(b"220 2.0.0 Ready to start TLS\r\n")
            .and_then(|_| {
                thread::sleep(Duration::from_millis(200));
                sock.write_all(b"250 2.0.0 injected\r\n")
            }),
    };
    if ok.is_err() {
        return;
    }
    // Go on with TLS if the client does: a ClientHello starts with 0x16.
    let mut first = [0u8; 1];
    match sock.peek(&mut first) {
        Ok(1) if first[0] == 0x16 => {}
        _ => {
            commands.lock().unwrap().push("(no TLS handshake)".into());
            return;
        }
    }
    let Ok(conn) = ServerConnection::new(config) else {
        return;
    };
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
            commands
                .lock()
                .unwrap()
                .push(format!("(TLS handshake failed: {e})"));
            return;
        }
    }
    let mut r = BufReader::new(tls);
    serve_commands(&mut r, "tls: ", false, commands, messages);
}

fn injection_test(mode: Injection) -> (Server, Injector) {
    let ca = TestCa::new();
    let evil = Injector::start(&ca.leaf(), mode);
    // Opportunistic: the (untrusted) certificate is not what stops the session.
    let srv = to_smart_host(evil.acceptor.addr.port(), "opportunistic").start();
    srv.submit("app@local.test", &["u@example.test"], &message("injection"));
    (srv, evil)
}

#[test]
fn starttls_server_without_injection_gets_the_mail_inside_tls() {
    // The control for the two tests below: the same raw server, well-behaved.
    let (srv, evil) = injection_test(Injection::None);
    assert!(
        wait_until(|| evil.messages() == 1),
        "{:?}\n{}",
        evil.commands(),
        srv.log_text()
    );
    assert!(
        evil.commands()
            .iter()
            .any(|c| c.starts_with("tls: MAIL FROM:<app@local.test>")),
        "{:?}",
        evil.commands()
    );
    assert!(srv.wait_queue_empty());
}

fn assert_session_dropped(srv: &Server, evil: &Injector) {
    assert_stays_queued(srv, "u@example.test", 1);
    let cmds = evil.commands();
    assert!(
        no_mail_command(&cmds) && !cmds.iter().any(|c| c.starts_with("tls: MAIL")),
        "the session went on after the injection: {cmds:?}\n{}",
        srv.log_text()
    );
    assert_eq!(evil.messages(), 0);
}

#[test]
fn starttls_response_injection_in_the_same_packet_ends_the_session() {
    let (srv, evil) = injection_test(Injection::SamePacket);
    assert_session_dropped(&srv, &evil);
}

#[test]
fn starttls_response_injection_after_the_reply_ends_the_session() {
    let (srv, evil) = injection_test(Injection::Later);
    assert_session_dropped(&srv, &evil);
}

/// RoutePasswordFile: the password is the file's first line, so the INI holds none. The login works as with RoutePassword; `mailroot check`
/// shows the file, not "(set)"; the INI gets no "holds passwords" warning, the file does when
/// others can read it; both keys at once, or an empty file, are errors naming file, line and key.
#[cfg(unix)]
#[test]
fn route_password_file_keeps_the_password_out_of_the_ini() {
    use std::os::unix::fs::PermissionsExt;
    let ca = TestCa::new();
    let sink = m365(&ca, PASS).start();
    let secrets = TempDir::new("route-password");
    let file = secrets.path().join("relay-password.txt");
    std::fs::write(
        &file,
        format!("{PASS}\n# anything after the first line is ignored\n"),
    )
    .expect("password file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let srv = trusting(&ca, sink.addr.port(), "required")
        .key("RouteUserName", USER)
        .key("RoutePasswordFile", &file.to_string_lossy())
        .start();
    srv.submit(
        "app@local.test",
        &["u@example.test"],
        &message("from a file"),
    );
    let got = sink.wait_messages(1);
    assert_eq!(got.len(), 1, "{}", srv.log_text());
    assert_eq!(got[0].auth_user.as_deref(), Some(USER));
    let log = srv.log_text();
    assert!(
        log.lines().any(|l| l.contains("RoutePasswordFile")
            && l.contains(&file.display().to_string())
            && l.contains("readable by other users")),
        "a 0644 password file is warned about:\n{log}"
    );
    assert!(
        !log.contains("holds passwords"),
        "the INI holds no password:\n{log}"
    );
    assert!(!log.contains(PASS), "the password is in the log");

    let ini = srv.dir.path().join("smtpsvc.ini");
    let check = run_bin(&["check", "--config", &ini.to_string_lossy()], None, None);
    assert!(check.ok(), "{}", check.both());
    let shown = check.both();
    assert!(
        shown.contains(&file.display().to_string()) && !shown.contains(PASS),
        "{shown}"
    );

    // Both keys, then an empty file: errors that name the file, the line and the key.
    let dir = TempDir::new("route-password-bad");
    let both = dir.path().join("both.ini");
    let text = format!(
        "[SmtpSvc/1]\nSmartHost = [127.0.0.1]:2626\nRouteUserName = {USER}\nRoutePassword = {PASS}\nRoutePasswordFile = {}\n",
        file.display()
    );
    std::fs::write(&both, &text).expect("ini");
    let r = run_bin(&["check", "--config", &both.to_string_lossy()], None, None);
    let want = format!("{}:5: RoutePasswordFile", both.display());
    assert!(
        !r.ok() && r.both().contains(&want) && r.both().contains("not both"),
        "{want}:\n{}",
        r.both()
    );
    let empty_file = dir.path().join("empty.txt");
    std::fs::write(&empty_file, "\n").expect("empty");
    let empty = dir.path().join("empty.ini");
    std::fs::write(
        &empty,
        format!(
            "[SmtpSvc/1]\nRouteUserName = {USER}\nRoutePasswordFile = {}\n",
            empty_file.display()
        ),
    )
    .expect("ini");
    let r = run_bin(&["check", "--config", &empty.to_string_lossy()], None, None);
    let want = format!("{}:3: RoutePasswordFile", empty.display());
    assert!(
        !r.ok() && r.both().contains(&want) && r.both().contains("empty"),
        "{want}:\n{}",
        r.both()
    );
}
