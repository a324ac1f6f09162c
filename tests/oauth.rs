//! Microsoft 365 and Google Workspace as smart hosts (issue 11), end to end with the real binary: SASL
//! XOAUTH2 with tokens from a real HTTPS token endpoint on loopback (client secret, client assertion,
//! Google service account, rotated refresh token); the token cache (refreshed before expiry with one
//! request per refresh and never two at once, a revoked token re-fetched once, the endpoint down →
//! mail deferred with the reason in its `.sta`, never bounced); Microsoft 365's limits (3 sessions,
//! `432 4.3.2` throttling retried within a minute); no secret or token in any log or file; sender
//! rewrite; client certificates; the presets, their overrides and masked secrets in `mailroot check`;
//! the warning about secrets files readable by others.
//!
//! The first section tests the kit parts these tests need (tests/common/token_server.rs, XOAUTH2,
//! the MAIL-time session limit and client certificates in the sink) without mailroot. Everything runs
//! on loopback with a test CA that mailroot trusts through `OutboundTlsCaFile`; every wait is bounded.
//! The two long Microsoft 365 runs take one lock (see [`serial`]): they watch token lifetimes of a few
//! seconds, which a neighbour test on a 2-core machine could stretch.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::sink::{Delivered, Script, Sink, SinkBuilder, TestCa, XOAUTH2_ERROR, xoauth2_response};
use common::token_server::{
    ASSERTION_TYPE, JWT_BEARER, Jwt, OAuthKey, TOKEN_LEN, TokenServer, TokenServerBuilder,
    TokenStatus, unix_now, write_private,
};
use common::*;
use serde_json::{Value, json};

/// The mailbox mailroot logs in as (`RouteUserName`).
const MAILBOX: &str = "relay@tenant.test";
const TENANT: &str = "tenant.test";
const CLIENT_ID: &str = "0b6c3c5e-1d2f-4a8b-9c7d-2e4f6a8b0c1d";
/// A client secret that must never show in a log or a file (it has Entra's shape).
const SECRET: &str = "Zq8Q~leak.canary-4f1c9e7a2b6d_SECRET~value";
/// Where the test points `OAuthTokenUrl` for Microsoft 365 (any path is served).
const TOKEN_PATH: &str = "/tenant.test/oauth2/v2.0/token";
const M365_SCOPE: &str = "https://outlook.office365.com/.default";
const GOOGLE_SCOPE: &str = "https://mail.google.com/";
const THROTTLE: &str = "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded";

static SERIAL: Mutex<()> = Mutex::new(());

/// One long Microsoft 365 run at a time (see the module docs).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A ureq agent (the HTTP client mailroot uses) trusting only the test CA; non-2xx answers are
/// answers, not errors.
fn agent(ca: &TestCa) -> ureq::Agent {
    let root = ureq::tls::Certificate::from_der(ca.ca_der().as_ref()).to_owned();
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![root])))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(WAIT))
        .build()
        .into()
}

/// POSTs `form` to `url`; the status and the JSON answer.
fn post(agent: &ureq::Agent, url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let mut r = agent
        .post(url)
        .send_form(form.iter().copied())
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().expect("the answer's body");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON {text:?}: {e}"));
    (status, json)
}

/// The token server of the Microsoft 365 tests: client credentials with [`SECRET`], the Microsoft
/// scope checked.
fn m365_tokens() -> TokenServerBuilder {
    TokenServer::builder()
        .client_secret(CLIENT_ID, SECRET)
        .expect_scope(M365_SCOPE)
}

/// A next hop like Exchange Online: STARTTLS required, AUTH (XOAUTH2 only) offered only inside TLS
/// and required, tokens judged by `tokens`, `432 4.3.2` to MAIL while 3 other sessions send.
fn m365_sink(ca: &TestCa, tokens: &TokenServer) -> SinkBuilder {
    Sink::builder()
        .hostname("outlook.test")
        .starttls(ca.leaf())
        .require_tls()
        .auth_only_after_tls()
        .xoauth2(tokens.validator(MAILBOX))
        .require_auth()
        .max_sessions_at_mail(3, THROTTLE)
}

/// The microsoft365 preset with the smart host overridden to `sink`, the test CA trusted, and the
/// app-only credentials of [`m365_tokens`] (secret in the INI) at `tokens`.
fn m365_server(ca: &TestCa, sink: &Sink, tokens: &TokenServer) -> Builder {
    Builder::new()
        .key("SmartHostProvider", "microsoft365")
        .key("SmartHost", &format!("[127.0.0.1]:{}", sink.addr.port()))
        .key("OutboundTlsCaFile", &ca.ca_pem_path().to_string_lossy())
        .key("OAuthTenant", TENANT)
        .key("OAuthClientId", CLIENT_ID)
        .key("OAuthClientSecret", SECRET)
        .key("OAuthTokenUrl", &tokens.url(TOKEN_PATH))
        .key("RouteUserName", MAILBOX)
        .key("RemoteTimeout", "10")
}

/// Submits messages `range` (subject `<tag>-<i>`, to `r<i>@remote.test`) over `clients` parallel
/// SMTP sessions; returns when each got its 250.
fn submit_parallel(srv: &Server, clients: usize, range: std::ops::Range<usize>, tag: &str) {
    thread::scope(|s| {
        for c in 0..clients {
            let range = range.clone();
            s.spawn(move || {
                let mut cl = srv.connect();
                cl.hello();
                for i in range.skip(c).step_by(clients) {
                    let to = format!("r{i}@remote.test");
                    let r = cl.send_mail("app@local.test", &[&to], &message(&format!("{tag}-{i}")));
                    assert!(r.last().starts_with("250"), "message {i}: {r:?}");
                }
                cl.quit();
            });
        }
    });
}

/// How often each subject arrived at the sink.
fn subjects(msgs: &[Delivered]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for d in msgs {
        *m.entry(d.subject()).or_insert(0) += 1;
    }
    m
}

/// Asserts that `srv` bounced nothing: no report at the sink (null sender), nothing in Drop (the
/// senders are local) or Badmail.
fn assert_nothing_bounced(srv: &Server, sink: &Sink) {
    let reports: Vec<String> = sink
        .messages()
        .iter()
        .filter(|m| m.sender_addr().is_empty())
        .map(Delivered::subject)
        .collect();
    assert!(reports.is_empty(), "reports were sent: {reports:?}");
    assert!(
        srv.files("Drop").is_empty(),
        "a report in Drop: {:?}",
        names(&srv.folder("Drop"))
    );
    let badmail: Vec<String> = names(&srv.folder("Badmail"))
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(badmail.is_empty(), "Badmail: {badmail:?}");
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for p in entries(dir) {
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// The pieces of a secret or token to look for: the whole of a short one; the first and the middle
/// 48 characters of a long one (a log that cuts a token still shows its start).
fn needles_of(secret: &str) -> Vec<String> {
    if secret.len() <= 64 {
        return vec![secret.to_string()];
    }
    let mid = (secret.len() / 2).min(secret.len() - 48);
    vec![secret[..48].to_string(), secret[mid..mid + 48].to_string()]
}

/// Asserts that none of `secrets` (client secrets, tokens), nor the base64 start of the XOAUTH2
/// response, appears in the server's log or in any file under its folder (mailroot folders, W3C logs,
/// `.sta` files) but the INI file, which holds the configured secret.
fn assert_no_leak(srv: &Server, secrets: &[String]) {
    let mut needles: Vec<(String, String)> = Vec::new();
    for (i, s) in secrets.iter().enumerate() {
        for n in needles_of(s) {
            needles.push((format!("secret #{i}"), n));
        }
    }
    // base64("user=relay@tenant.test\x01auth=Bearer "): its whole 3-byte groups encode the same in
    // every XOAUTH2 response.
    let prefix = xoauth2_response(MAILBOX, "");
    let stable = format!("user={MAILBOX}\x01auth=Bearer ").len() / 3 * 4;
    needles.push(("the XOAUTH2 response".into(), prefix[..stable].to_string()));
    assert!(needles.len() > 1, "nothing to look for");
    let log = srv.log_text();
    for (what, n) in &needles {
        assert!(!log.contains(n.as_str()), "{what} is in the server log");
    }
    let mut files = Vec::new();
    walk(srv.dir.path(), &mut files);
    let ini = srv.dir.path().join("smtpsvc.ini");
    let mut scanned = 0;
    for f in files.iter().filter(|f| **f != ini) {
        let Ok(bytes) = fs::read(f) else { continue };
        scanned += 1;
        let text = String::from_utf8_lossy(&bytes);
        for (what, n) in &needles {
            assert!(!text.contains(n.as_str()), "{what} is in {}", f.display());
        }
    }
    assert!(
        scanned > 0 && !srv.w3c_log(1).is_empty(),
        "no files or no W3C log to scan under {}",
        srv.dir.path().display()
    );
}

/// The values of header `name` (case-insensitive) in the header section of `text`.
fn header_values(text: &str, name: &str) -> Vec<String> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    text.split("\r\n")
        .take_while(|l| !l.is_empty())
        .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_string())
        .collect()
}

/// The header lines (name and value) of `text`, in order.
fn header_lines(text: &str) -> Vec<String> {
    text.split("\r\n")
        .take_while(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The last `lines` lines of the server log, for assertion messages.
fn log_tail(srv: &Server, lines: usize) -> String {
    let text = srv.log_text();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// 0. The kit: token server, XOAUTH2 and client certificates in the sink (no mailroot)
// ---------------------------------------------------------------------------------------------

#[test]
fn kit_token_server_grants_checks_and_refuses() {
    let ca = TestCa::new();
    let key = OAuthKey::fixture();
    let tokens = TokenServer::builder()
        .client_secret(CLIENT_ID, SECRET)
        .client_assertion("cert-app", &key)
        .lifetime_secs(2)
        .start(ca.leaf());
    let a = agent(&ca);
    let url = tokens.url(TOKEN_PATH);

    // The secret.
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT_ID),
        ("client_secret", SECRET),
        ("scope", M365_SCOPE),
    ];
    let (status, body) = post(&a, &url, &form);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 2);
    let t1 = body["access_token"].as_str().expect("a token").to_string();
    assert_eq!(t1.len(), TOKEN_LEN);
    assert!(tokens.is_valid(&t1));
    let (status, body) = post(
        &a,
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", "wrong"),
        ],
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    // A client assertion: good, then with a wrong thumbprint, audience and signer.
    let now = unix_now();
    let header = json!({"alg": "RS256", "typ": "JWT", "x5t#S256": key.x5t_s256()});
    let claims = json!({"aud": url, "iss": "cert-app", "sub": "cert-app", "jti": "j1",
        "nbf": now, "iat": now, "exp": now + 600});
    let assert_with = |header: &Value, claims: &Value| {
        let jwt = key.sign_jwt(header, claims);
        post(
            &a,
            &url,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "cert-app"),
                ("scope", M365_SCOPE),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &jwt),
            ],
        )
    };
    let (status, body) = assert_with(&header, &claims);
    assert_eq!(status, 200, "{body}");
    let mut wrong = header.clone();
    wrong["x5t#S256"] = json!("AAAA");
    assert_eq!(assert_with(&wrong, &claims).0, 401);
    let mut wrong = claims.clone();
    wrong["aud"] = json!("https://login.microsoftonline.com/x/oauth2/v2.0/token");
    assert_eq!(assert_with(&header, &wrong).0, 401);
    let mut wrong = claims.clone();
    wrong["exp"] = json!(now - 10);
    assert_eq!(assert_with(&header, &wrong).0, 401);
    let forged = format!("{}x", key.sign_jwt(&header, &claims));
    let (status, _) = post(
        &a,
        &url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "cert-app"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &forged),
        ],
    );
    assert_eq!(status, 401);

    // Unknown grant; GET; down.
    assert_eq!(post(&a, &url, &[("grant_type", "password")]).0, 400);
    let r = a.get(&url).call().expect("GET");
    assert_eq!(r.status().as_u16(), 405);
    tokens.set_down(true);
    let (status, body) = post(&a, &url, &form);
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
    tokens.set_down(false);

    // The record: every request, one connection each, the path, the refusals.
    let reqs = tokens.requests();
    assert_eq!(reqs.len(), 10, "{}", tokens.summary());
    assert!(reqs.iter().all(|r| r.path == TOKEN_PATH));
    let conns: std::collections::BTreeSet<usize> = reqs.iter().map(|r| r.connection).collect();
    assert_eq!(
        conns.len(),
        reqs.len(),
        "Connection: close, one request each"
    );
    assert_eq!(tokens.granted(), 2);
    assert_eq!(tokens.refused(), 7, "{}", tokens.summary());
    assert_eq!(
        reqs[0].form.get("scope").map(String::as_str),
        Some(M365_SCOPE)
    );
    assert_eq!(reqs[2].client, "cert-app");
    assert!(tokens.overlaps().is_empty());
    assert!(tokens.tls_errors().is_empty(), "{:?}", tokens.tls_errors());

    // Lifetime and revocation.
    let t2 = tokens.issued()[1].clone();
    tokens.revoke_all();
    assert_eq!(tokens.status(&t1), TokenStatus::Revoked);
    assert_eq!(tokens.status("nope"), TokenStatus::Unknown);
    let (_, body) = post(&a, &url, &form);
    let t3 = body["access_token"].as_str().expect("a token").to_string();
    assert!(tokens.is_valid(&t3) && !tokens.is_valid(&t2));
    assert!(wait_for(Duration::from_secs(5), || tokens.status(&t3)
        == TokenStatus::Expired));
    assert_eq!(tokens.current_tokens(), 0);
    assert_eq!(tokens.secrets(), vec![SECRET.to_string()]);
}

#[test]
fn kit_token_server_google_refresh_and_keep_alive() {
    let ca = TestCa::new();
    let key = OAuthKey::fixture();
    let tokens = TokenServer::builder()
        .service_account("sa@mailroot-test.iam.test", "kid-7", &key, MAILBOX)
        .refresh_token("web-app", Some("web-secret"), "rt-0")
        .rotate_refresh_tokens()
        .expires_in_as_string()
        .keep_alive()
        .delay(Duration::from_millis(50))
        .start(ca.leaf());
    let a = agent(&ca);
    let url = tokens.url("/token");
    let now = unix_now();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "kid-7"});
    let claims = json!({"iss": "sa@mailroot-test.iam.test", "sub": MAILBOX, "scope": GOOGLE_SCOPE,
        "aud": url, "iat": now, "exp": now + 3600});
    let grant = |header: &Value, claims: &Value| {
        let jwt = key.sign_jwt(header, claims);
        post(&a, &url, &[("grant_type", JWT_BEARER), ("assertion", &jwt)])
    };
    let (status, body) = grant(&header, &claims);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], "3600");
    let mut wrong = claims.clone();
    wrong["sub"] = json!("someone@tenant.test");
    assert_eq!(grant(&header, &wrong).0, 400);
    let mut wrong = header.clone();
    wrong["kid"] = json!("kid-8");
    assert_eq!(grant(&wrong, &claims).0, 400);
    let mut wrong = claims.clone();
    wrong["exp"] = json!(now + 7200);
    assert_eq!(grant(&header, &wrong).0, 400);

    // Refresh with rotation: only the newest refresh token works.
    let refresh = |rt: &str| {
        post(
            &a,
            &url,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", "web-app"),
                ("client_secret", "web-secret"),
            ],
        )
    };
    let (status, body) = refresh("rt-0");
    assert_eq!(status, 200, "{body}");
    let rt1 = body["refresh_token"].as_str().expect("rotated").to_string();
    assert_eq!(
        tokens.current_refresh_token().as_deref(),
        Some(rt1.as_str())
    );
    let (status, body) = refresh("rt-0");
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(refresh(&rt1).0, 200);
    assert_eq!(tokens.refresh_tokens().len(), 3);

    // Keep-alive: ureq's pool kept one connection for all of them.
    let reqs = tokens.requests();
    assert_eq!(reqs.len(), 7, "{}", tokens.summary());
    assert!(
        reqs.iter().all(|r| r.connection == reqs[0].connection),
        "{}",
        tokens.summary()
    );
    assert_eq!(reqs[0].client, "sa@mailroot-test.iam.test");
    assert_eq!(reqs[4].new_refresh_token.as_deref(), Some(rt1.as_str()));
    // Sequential requests never overlap.
    assert!(tokens.overlaps().is_empty());
}

#[test]
fn kit_sink_xoauth2_session_limit_and_client_certificates() {
    let ca = TestCa::new();
    let tokens = m365_tokens().start(ca.leaf());
    let a = agent(&ca);
    let (_, body) = post(
        &a,
        &tokens.url(TOKEN_PATH),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", M365_SCOPE),
        ],
    );
    let token = body["access_token"].as_str().expect("a token").to_string();
    let client_cert = ca.client_leaf("relay.mailroot.test");
    let sink = m365_sink(&ca, &tokens)
        .auth("basic", "pw", &["LOGIN"])
        .request_client_cert(Some(&ca))
        .start();

    // AUTH only inside TLS; XOAUTH2 after the configured mechanisms.
    let mut c = Client::connect(sink.addr);
    let ehlo = c.hello();
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "{ehlo:?}"
    );
    c.starttls(&ca.client_config_with_cert(&client_cert), "127.0.0.1")
        .expect("handshake with a client certificate");
    let ehlo = c.ehlo();
    assert!(ehlo.has("AUTH LOGIN XOAUTH2"), "{ehlo:?}");
    c.ok("MAIL FROM:<a@x.test>", 530);
    // A wrong token: the error challenge, an empty line, 535.
    let r = c.ok(
        &format!("AUTH XOAUTH2 {}", xoauth2_response(MAILBOX, "not-a-token")),
        334,
    );
    assert_eq!(r.lines[0], b64(XOAUTH2_ERROR.as_bytes()));
    assert_eq!(
        c.ok("", 535).last(),
        "535 5.7.3 Authentication unsuccessful"
    );
    // The right one, on a line of more than 2 KB.
    let line = format!("AUTH XOAUTH2 {}", xoauth2_response(MAILBOX, &token));
    assert!(line.len() > 2000, "{}", line.len());
    c.ok(&line, 235);
    assert_eq!(
        c.transaction("<a@x.test>", &["<b@y.test>"], "x\r\n").code,
        250
    );
    c.quit();
    let m = sink.wait_messages(1);
    assert_eq!(m[0].auth_user.as_deref(), Some(MAILBOX));
    assert_eq!(
        m[0].client_cert.as_deref(),
        Some(client_cert.der().as_ref())
    );
    let attempts = sink.xoauth2_attempts();
    assert_eq!(attempts.len(), 2);
    assert!(!attempts[0].success && attempts[0].ack.as_deref() == Some(""));
    assert!(attempts[1].success && attempts[1].token == token && attempts[1].tls);
    assert!(attempts.iter().all(|x| x.well_formed && x.user == MAILBOX));
    assert_eq!(sink.auth_attempts()[1].mechanism, "XOAUTH2");
    assert_eq!(sink.client_certs().len(), 1);

    // Without a client certificate (accepted), and 4 sessions: the 4th MAIL gets 432 until one
    // of the others says QUIT.
    let login = |c: &mut Client| {
        c.hello();
        c.starttls(&ca.client_config(), "127.0.0.1")
            .expect("handshake");
        c.ehlo();
        c.ok(
            &format!("AUTH XOAUTH2 {}", xoauth2_response(MAILBOX, &token)),
            235,
        );
    };
    let mut cs: Vec<Client> = (0..4).map(|_| Client::connect(sink.addr)).collect();
    for c in cs.iter_mut() {
        login(c);
    }
    assert_eq!(sink.open_sessions(), 4);
    for c in cs.iter_mut().take(3) {
        c.ok("MAIL FROM:<a@x.test>", 250);
    }
    assert_eq!(cs[3].cmd("MAIL FROM:<a@x.test>").last(), THROTTLE);
    assert_eq!(sink.refused_at_mail(), 1);
    cs.remove(0).quit();
    cs[2].ok("MAIL FROM:<a@x.test>", 250);
    assert_eq!(sink.peak_sessions(), 4);
    assert!(sink.messages()[0].client_cert.is_some());
    drop(cs);
    assert!(sink.wait_until(|s| s.open_sessions() == 0));
}

// ---------------------------------------------------------------------------------------------
// 1. Microsoft 365, app-only with a client secret
// ---------------------------------------------------------------------------------------------

/// Tokens live this long in the Microsoft 365 runs (`expires_in`).
const LIFETIME: u64 = 4;

#[test]
fn microsoft365_app_only_300_messages() {
    let _one = serial();
    const N: usize = 300;
    let ca = TestCa::new();
    let tokens = m365_tokens()
        .lifetime_secs(LIFETIME)
        .delay(Duration::from_millis(150))
        .start(ca.leaf());
    let sink = m365_sink(&ca, &tokens).start();
    // 1800 a minute: the 300 take about 10 s, a few token lifetimes. 5 messages per connection:
    // new connections (and logins) all the time.
    let srv = m365_server(&ca, &sink, &tokens)
        .key("MaxMessagesPerMinute", "1800")
        .key("MaxBatchedMessages", "5")
        .key("SmtpRemoteProgressiveRetry", "2s,2s,2s")
        .start();
    let t0 = Instant::now();
    submit_parallel(&srv, 3, 0..N, "m365");

    // Mid-run, right after a refresh (the next one is most of a lifetime away), revoke every token.
    assert!(
        wait_for(Duration::from_secs(60), || sink.count() >= 60),
        "{} of {N} delivered; tokens:\n{}\n{}",
        sink.count(),
        tokens.summary(),
        log_tail(&srv, 30)
    );
    let granted = tokens.granted();
    assert!(
        wait_for(Duration::from_secs(LIFETIME + 10), || tokens.granted()
            > granted),
        "no token refresh within a lifetime while mail flows:\n{}",
        tokens.summary()
    );
    let revoked_at = Instant::now();
    assert!(tokens.revoke_all() >= 1);

    let all = wait_for(Duration::from_secs(90), || sink.count() as usize >= N);
    let done = Instant::now();
    assert!(
        all,
        "{} of {N} delivered; peak {} sessions, {} MAIL refused with 432\ntokens:\n{}\n{}",
        sink.count(),
        sink.peak_sessions(),
        sink.refused_at_mail(),
        tokens.summary(),
        log_tail(&srv, 40)
    );
    srv.assert_queue_empties(WAIT);

    let attempts = sink.xoauth2_attempts();
    eprintln!(
        "m365: {N} delivered in {:.1} s over {} connections, peak {} sessions, {} MAIL refused \
         with 432; {} logins, {} refused (535); {} token requests:\n{}",
        done.duration_since(t0).as_secs_f64(),
        sink.connections(),
        sink.peak_sessions(),
        sink.refused_at_mail(),
        attempts.len(),
        attempts.iter().filter(|a| !a.success).count(),
        tokens.count(),
        tokens.summary()
    );

    // All delivered exactly once, never more than 3 sessions at once.
    let msgs = sink.messages();
    let per = subjects(&msgs);
    let twice: Vec<(&String, &usize)> = per.iter().filter(|e| *e.1 > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(per.len(), N, "distinct messages delivered");
    assert!((0..N).all(|i| per.contains_key(&format!("m365-{i}"))));
    assert!(
        sink.peak_sessions() <= 3,
        "{} sessions at once ({} MAIL refused with 432)",
        sink.peak_sessions(),
        sink.refused_at_mail()
    );
    assert!(
        msgs.iter()
            .all(|m| m.tls && m.auth_user.as_deref() == Some(MAILBOX))
    );
    assert_nothing_bounced(&srv, &sink);

    // Every login: XOAUTH2 inside TLS, the mailbox, a whole token; current unless revoked.
    assert!(attempts.len() >= 10, "{} logins", attempts.len());
    assert!(
        sink.auth_attempts()
            .iter()
            .all(|a| a.mechanism == "XOAUTH2"),
        "{:?}",
        sink.auth_attempts()
    );
    let lines: Vec<usize> = sink
        .commands()
        .iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("AUTH"))
        .map(String::len)
        .collect();
    assert!(
        lines.iter().all(|n| *n > 2000),
        "AUTH lines of {lines:?} bytes: not one line with the whole token"
    );
    for a in &attempts {
        assert!(a.tls && a.well_formed && a.user == MAILBOX, "{a:?}");
        let status = tokens.status_at(&a.token, a.at);
        if a.success {
            assert_eq!(status, TokenStatus::Current);
        } else {
            assert_eq!(
                status,
                TokenStatus::Revoked,
                "a login with a token that was not current (connection {})",
                a.connection
            );
            assert_eq!(
                a.ack.as_deref(),
                Some(""),
                "the answer to the 334 error challenge is an empty line"
            );
        }
    }

    // The revoked token: one 535 per connection that used it, then the login again on the same
    // connection, with a new token.
    let mut by_conn: BTreeMap<usize, Vec<bool>> = BTreeMap::new();
    for a in &attempts {
        by_conn.entry(a.connection).or_default().push(a.success);
    }
    let hit: Vec<usize> = by_conn
        .iter()
        .filter(|(_, v)| v.contains(&false))
        .map(|(c, _)| *c)
        .collect();
    assert!(
        !hit.is_empty(),
        "no connection used the revoked token\n{}",
        tokens.summary()
    );
    for (conn, v) in &by_conn {
        assert!(
            v == &[true] || v == &[false, true],
            "connection {conn}: logins {v:?} (want one success, or one 535 then a success)"
        );
    }

    // Token requests: one per refresh, never two at once.
    let reqs = tokens.requests();
    assert_eq!(tokens.refused(), 0, "{}", tokens.summary());
    assert!(
        tokens.overlaps().is_empty(),
        "overlapping token requests {:?}:\n{}",
        tokens.overlaps(),
        tokens.summary()
    );
    for r in &reqs {
        assert_eq!(
            (r.path.as_str(), r.grant.as_str(), r.client.as_str()),
            (TOKEN_PATH, "client_credentials", CLIENT_ID)
        );
        assert_eq!(
            r.form.get("client_secret").map(String::as_str),
            Some(SECRET)
        );
    }
    let first = reqs.first().map(|r| r.started).expect("a token request");
    let elapsed = done.duration_since(first).as_secs_f64();
    let per_refresh = LIFETIME as f64 * 0.75;
    // The first token, one per 3/4 lifetime, the re-fetch after the revocation, and 2 of slack.
    let most = (elapsed / per_refresh).floor() as usize + 1 + 1 + 2;
    assert!(
        (2..=most).contains(&reqs.len()),
        "{} token requests in {elapsed:.1} s with tokens of {LIFETIME} s (at most {most}):\n{}",
        reqs.len(),
        tokens.summary()
    );
    // After the revocation: exactly one request before the new token's own refresh is due.
    let after: Vec<Instant> = reqs
        .iter()
        .map(|r| r.started)
        .filter(|t| *t >= revoked_at)
        .collect();
    let t1 = *after.first().expect("a token request after the revocation");
    let window_end = t1 + Duration::from_secs(2);
    while Instant::now() < window_end {
        thread::sleep(POLL);
    }
    let in_window = tokens
        .requests()
        .iter()
        .filter(|r| r.started >= revoked_at && r.started <= window_end)
        .count();
    assert_eq!(
        in_window,
        1,
        "token requests right after the revocation:\n{}",
        tokens.summary()
    );

    // No secret and no token in any log or file.
    let mut secrets = vec![SECRET.to_string()];
    secrets.extend(tokens.issued());
    assert_no_leak(&srv, &secrets);
}

#[test]
fn microsoft365_token_endpoint_down_defers_then_delivers() {
    let _one = serial();
    let ca = TestCa::new();
    let tokens = m365_tokens()
        .lifetime_secs(3)
        .delay(Duration::from_millis(100))
        .start(ca.leaf());
    let sink = m365_sink(&ca, &tokens).start();
    let srv = m365_server(&ca, &sink, &tokens)
        .key("SmtpRemoteProgressiveRetry", "2s,2s,2s")
        .start();

    // A first message gets the first token.
    submit_parallel(&srv, 1, 0..1, "before");
    assert!(
        sink.wait_until(|s| s.count() == 1),
        "the first message was not delivered\n{}\n{}",
        tokens.summary(),
        log_tail(&srv, 30)
    );

    // The endpoint goes down; once the token has expired and no session is left, 5 messages.
    tokens.set_down(true);
    let down_at = Instant::now();
    assert!(
        wait_until(|| tokens.current_tokens() == 0 && sink.open_sessions() == 0),
        "the token did not expire or a session stayed open"
    );
    submit_parallel(&srv, 1, 1..6, "while-down");
    let mut states = Vec::new();
    let deferred = wait_for(Duration::from_secs(30), || {
        states = srv.states();
        states.len() == 5 && states.iter().all(|s| s.contains("OAuth token"))
    });
    assert!(
        deferred,
        "5 messages deferred with the OAuth token failure in their .sta: {states:?}\ntokens:\n{}\n{}",
        tokens.summary(),
        log_tail(&srv, 30)
    );
    for s in &states {
        let line = s
            .lines()
            .find(|l| l.starts_with("rcpt: pending"))
            .unwrap_or_else(|| panic!("no pending recipient in {s:?}"));
        assert!(
            line.contains("OAuth token") && line.contains("failed"),
            "{line:?}"
        );
    }
    // Still down a while: the mail waits, nothing is bounced, the endpoint is not hammered.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(
        srv.files("Queue").len(),
        5,
        "{:?}",
        names(&srv.folder("Queue"))
    );
    assert_eq!(sink.count(), 1);
    assert_nothing_bounced(&srv, &sink);
    let failed = tokens.requests().iter().filter(|r| r.status == 503).count();
    let down_secs = down_at.elapsed().as_secs_f64();
    // The first failures of the burst, one probe per retry time (2 s), and slack.
    let most = 3 + (down_secs / 2.0).ceil() as usize + 2;
    eprintln!(
        "down: {failed} token requests failed in {down_secs:.1} s; .sta reason: {:?}",
        states[0].lines().find(|l| l.starts_with("rcpt: pending"))
    );
    assert!(
        (1..=most).contains(&failed),
        "{failed} token requests in {down_secs:.1} s while down (at most {most}):\n{}",
        tokens.summary()
    );

    // Back up: everything goes out, once.
    tokens.set_down(false);
    assert!(
        wait_for(Duration::from_secs(30), || sink.count() >= 6),
        "{} of 6 delivered after the endpoint came back\n{}\n{}",
        sink.count(),
        tokens.summary(),
        log_tail(&srv, 30)
    );
    srv.assert_queue_empties(WAIT);
    let per = subjects(&sink.messages());
    assert_eq!(per.len(), 6, "{per:?}");
    assert!(per.values().all(|n| *n == 1), "{per:?}");
    assert_nothing_bounced(&srv, &sink);
    assert!(tokens.overlaps().is_empty(), "{}", tokens.summary());
    let mut secrets = vec![SECRET.to_string()];
    secrets.extend(tokens.issued());
    assert_no_leak(&srv, &secrets);
}

// ---------------------------------------------------------------------------------------------
// 2. Microsoft 365 with a client assertion (certificate)
// ---------------------------------------------------------------------------------------------

#[test]
fn client_assertion_with_certificate() {
    let ca = TestCa::new();
    let key = OAuthKey::fixture();
    let tokens = TokenServer::builder()
        .client_assertion(CLIENT_ID, &key)
        .expect_scope(M365_SCOPE)
        .start(ca.leaf());
    let sink = m365_sink(&ca, &tokens).start();
    let secrets = TempDir::new("oauth-cert");
    let files = key.write_files(secrets.path());
    // The PKCS#1 form of the key (the PKCS#8 one is the service account's, below).
    let srv = m365_server(&ca, &sink, &tokens)
        .unset("OAuthClientSecret")
        .key("OAuthCertificateFile", &files.cert.to_string_lossy())
        .key("OAuthKeyFile", &files.key_pkcs1.to_string_lossy())
        .start();
    srv.submit("app@local.test", &["r@remote.test"], &message("assertion"));
    let m = sink.wait_messages(1);
    assert_eq!(
        m.len(),
        1,
        "not delivered; tokens:\n{}\n{}",
        tokens.summary(),
        log_tail(&srv, 30)
    );
    assert_eq!(m[0].auth_user.as_deref(), Some(MAILBOX));

    let reqs = tokens.requests();
    assert_eq!(reqs.len(), 1, "{}", tokens.summary());
    let r = &reqs[0];
    assert!(r.ok(), "{}", tokens.summary());
    assert_eq!(r.grant, "client_credentials");
    assert_eq!(r.form.get("client_id").map(String::as_str), Some(CLIENT_ID));
    assert_eq!(
        r.form.get("client_assertion_type").map(String::as_str),
        Some(ASSERTION_TYPE)
    );
    assert!(!r.form.contains_key("client_secret"), "{:?}", r.form.keys());
    // The server verified signature and claims; the shape, as the contract writes it.
    let jwt = Jwt::parse(&r.form["client_assertion"]).expect("a JWT");
    assert_eq!(jwt.head("x5t#S256"), Some(key.x5t_s256().as_str()));
    assert_eq!(jwt.claim("aud"), Some(tokens.url(TOKEN_PATH).as_str()));
    assert!(jwt.claim("jti").is_some_and(|j| !j.is_empty()));
    let (iat, exp) = (jwt.time("iat").expect("iat"), jwt.time("exp").expect("exp"));
    assert!(exp > iat && exp - iat <= 600 + 5, "iat {iat}, exp {exp}");
    assert_no_leak(&srv, &tokens.issued());
}

// ---------------------------------------------------------------------------------------------
// 3. Google, service account with domain-wide delegation
// ---------------------------------------------------------------------------------------------

#[test]
fn google_service_account() {
    const SA: &str = "mailroot-relay@mailroot-test.iam.gserviceaccount.com";
    const KID: &str = "3f2b9c0d1e4a5b6c7d8e9f001122334455667788";
    let ca = TestCa::new();
    let key = OAuthKey::fixture();
    let tokens = TokenServer::builder()
        .service_account(SA, KID, &key, MAILBOX)
        .expect_scope(GOOGLE_SCOPE)
        .expires_in_as_string()
        .start(ca.leaf());
    let sink = Sink::builder()
        .hostname("smtp.gmail.test")
        .starttls(ca.leaf())
        .require_tls()
        .auth_only_after_tls()
        .xoauth2(tokens.validator(MAILBOX))
        .require_auth()
        .start();
    let secrets = TempDir::new("oauth-google");
    let sa_file = secrets.path().join("service-account.json");
    write_private(
        &sa_file,
        &key.service_account_json(SA, KID, &tokens.url("/token")),
        0o600,
    );
    let srv = Builder::new()
        .key("SmartHostProvider", "google")
        .key("SmartHost", &format!("[127.0.0.1]:{}", sink.addr.port()))
        .key("OutboundTlsCaFile", &ca.ca_pem_path().to_string_lossy())
        .key("OAuthServiceAccountFile", &sa_file.to_string_lossy())
        .key("RouteUserName", MAILBOX)
        .start();
    srv.submit("app@local.test", &["r@remote.test"], &message("google"));
    let m = sink.wait_messages(1);
    assert_eq!(
        m.len(),
        1,
        "not delivered; tokens:\n{}\n{}",
        tokens.summary(),
        log_tail(&srv, 30)
    );
    let attempts = sink.xoauth2_attempts();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert!(attempts[0].success && attempts[0].user == MAILBOX && attempts[0].tls);

    let reqs = tokens.requests();
    assert_eq!(reqs.len(), 1, "{}", tokens.summary());
    let r = &reqs[0];
    assert!(r.ok(), "{}", tokens.summary());
    assert_eq!((r.path.as_str(), r.grant.as_str()), ("/token", JWT_BEARER));
    let jwt = Jwt::parse(&r.form["assertion"]).expect("a JWT");
    assert_eq!(jwt.head("kid"), Some(KID));
    assert_eq!(jwt.claim("iss"), Some(SA));
    assert_eq!(jwt.claim("sub"), Some(MAILBOX));
    assert_eq!(jwt.claim("scope"), Some(GOOGLE_SCOPE));
    assert_eq!(jwt.claim("aud"), Some(tokens.url("/token").as_str()));
    assert_no_leak(&srv, &tokens.issued());
}

// ---------------------------------------------------------------------------------------------
// 4. A delegated refresh token, rotated
// ---------------------------------------------------------------------------------------------

#[test]
fn refresh_token_rotated_and_written_back() {
    const RT0: &str = "rt-initial-0.AAAAv8bD_refresh-token";
    let ca = TestCa::new();
    let tokens = TokenServer::builder()
        .refresh_token(CLIENT_ID, None, RT0)
        .rotate_refresh_tokens()
        .lifetime_secs(2)
        .start(ca.leaf());
    let sink = Sink::builder()
        .starttls(ca.leaf())
        .require_tls()
        .auth_only_after_tls()
        .xoauth2(tokens.validator(MAILBOX))
        .require_auth()
        .start();
    let secrets = TempDir::new("oauth-refresh");
    let rt_file = secrets.path().join("refresh-token");
    write_private(&rt_file, &format!("{RT0}\n"), 0o600);
    let srv = Builder::new()
        .smart_host(sink.addr.port())
        .key("OutboundTls", "required")
        .key("OutboundTlsCaFile", &ca.ca_pem_path().to_string_lossy())
        .key("OAuthRefreshTokenFile", &rt_file.to_string_lossy())
        .key("OAuthClientId", CLIENT_ID)
        .key("OAuthTokenUrl", &tokens.url("/common/oauth2/v2.0/token"))
        .key("RouteUserName", MAILBOX)
        .start();
    let file_token = || {
        fs::read_to_string(&rt_file)
            .expect("the refresh token file")
            .trim()
            .to_string()
    };

    srv.submit("app@local.test", &["r1@remote.test"], &message("first"));
    assert_eq!(
        sink.wait_messages(1).len(),
        1,
        "not delivered; tokens:\n{}\n{}",
        tokens.summary(),
        log_tail(&srv, 30)
    );
    let reqs = tokens.requests();
    assert_eq!(reqs.len(), 1, "{}", tokens.summary());
    assert_eq!(reqs[0].grant, "refresh_token");
    assert_eq!(
        reqs[0].form.get("refresh_token").map(String::as_str),
        Some(RT0)
    );
    assert_eq!(
        reqs[0].form.get("client_id").map(String::as_str),
        Some(CLIENT_ID)
    );
    let rt1 = reqs[0].new_refresh_token.clone().expect("rotated");
    assert_eq!(
        file_token(),
        rt1,
        "the rotated refresh token is written back"
    );

    // Once the access token has expired (and the session is gone), the next message refreshes
    // with the new refresh token.
    assert!(wait_until(
        || tokens.current_tokens() == 0 && sink.open_sessions() == 0
    ));
    srv.submit("app@local.test", &["r2@remote.test"], &message("second"));
    assert_eq!(
        sink.wait_messages(2).len(),
        2,
        "not delivered; tokens:\n{}\n{}",
        tokens.summary(),
        log_tail(&srv, 30)
    );
    let reqs = tokens.requests();
    assert_eq!(reqs.len(), 2, "{}", tokens.summary());
    assert!(reqs.iter().all(|r| r.ok()), "{}", tokens.summary());
    assert_eq!(
        reqs[1].form.get("refresh_token").map(String::as_str),
        Some(rt1.as_str())
    );
    let rt2 = reqs[1].new_refresh_token.clone().expect("rotated again");
    assert_eq!(file_token(), rt2);
    assert_eq!(tokens.refused(), 0);
    // Written by temporary file and rename: nothing else is left beside it.
    assert_eq!(names(secrets.path()), vec!["refresh-token".to_string()]);
    let mut leaks = tokens.issued();
    leaks.extend(tokens.refresh_tokens());
    assert_no_leak(&srv, &leaks);
}

// ---------------------------------------------------------------------------------------------
// 5. Microsoft 365's throttling
// ---------------------------------------------------------------------------------------------

#[test]
fn throttle_432_retried_within_a_minute() {
    const PASS: &str = "basic-pass-1";
    let ca = TestCa::new();
    // Like Exchange Online: AUTH LOGIN and XOAUTH2 offered; without OAuth keys the preset logs in
    // with LOGIN. The first two sessions are told the sender's thread limit is reached.
    let sink = Sink::builder()
        .hostname("outlook.test")
        .starttls(ca.leaf())
        .require_tls()
        .auth(MAILBOX, PASS, &["LOGIN"])
        .xoauth2(|_: &str, _: &str| false)
        .auth_only_after_tls()
        .require_auth()
        .answers_for_first(2, Script::new().on_mail(THROTTLE))
        .start();
    // The default retry schedule (15 minutes first) stays: throttling must not wait for it.
    let srv = Builder::new()
        .key("SmartHostProvider", "microsoft365")
        .key("SmartHost", &format!("[127.0.0.1]:{}", sink.addr.port()))
        .key("OutboundTlsCaFile", &ca.ca_pem_path().to_string_lossy())
        .key("RouteUserName", MAILBOX)
        .key("RoutePassword", PASS)
        .start();
    srv.submit("app@local.test", &["r@remote.test"], &message("throttled"));
    let delivered = wait_for(Duration::from_secs(60), || sink.count() >= 1);
    assert!(
        delivered,
        "not delivered within 60 s of two 432 replies; {} connections; .sta {:?}\n{}",
        sink.connections(),
        srv.states(),
        log_tail(&srv, 30)
    );
    let m = sink.messages();
    assert_eq!(m.len(), 1);
    assert!(m[0].connection >= 2, "connection {}", m[0].connection);
    assert_eq!(m[0].auth_user.as_deref(), Some(MAILBOX));
    assert!(
        sink.auth_attempts()
            .iter()
            .all(|a| a.mechanism == "LOGIN" && a.success),
        "{:?}",
        sink.auth_attempts()
    );
    for conn in 0..2 {
        assert!(
            sink.commands_of(conn)
                .iter()
                .any(|c| c.to_ascii_uppercase().starts_with("MAIL FROM:")),
            "connection {conn} never reached MAIL: {:?}",
            sink.commands_of(conn)
        );
    }
    srv.assert_queue_empties(WAIT);
    assert_nothing_bounced(&srv, &sink);
    assert!(!srv.log_text().contains(PASS), "the password is in the log");
}

// ---------------------------------------------------------------------------------------------
// 6. Sender rewrite
// ---------------------------------------------------------------------------------------------

#[test]
fn sender_rewrite() {
    const REWRITTEN: &str = "relay@tenant.test";
    let sink = Sink::builder()
        .on_rcpt("bad@", "550 5.1.1 No such user")
        .on_rcpt("later@", "451 4.3.0 Try again later")
        .start();
    let srv = Builder::new()
        .smart_host(sink.addr.port())
        .key("SmtpRemoteProgressiveRetry", "10m")
        .key("RemoteTimeout", "5")
        .key("RewriteSender", REWRITTEN)
        .key("RewriteFromHeader", "1")
        .start();
    let from = "\"App\" <app@local.test>";
    // a) no Reply-To; b) one already; c) the null sender; d) a bounce to a remote sender, through
    // the same route; e) a message that stays queued.
    srv.submit(
        "app@local.test",
        &["a@remote.test"],
        &format!("From: {from}\r\nTo: a@remote.test\r\nSubject: plain\r\n\r\nbody a"),
    );
    srv.submit(
        "app@local.test",
        &["b@remote.test"],
        &format!(
            "From: {from}\r\nReply-To: <replies@local.test>\r\nTo: b@remote.test\r\nSubject: has-reply-to\r\n\r\nbody b"
        ),
    );
    srv.submit_raw(
        "<>",
        &["<c@remote.test>"],
        "From: \"Mailer\" <mailer-daemon@local.test>\r\nTo: c@remote.test\r\nSubject: null-sender\r\n\r\nbody c",
    );
    srv.submit(
        "app@sender.test",
        &["bad@remote.test"],
        "From: <app@sender.test>\r\nTo: bad@remote.test\r\nSubject: to-bounce\r\n\r\nbody d",
    );
    srv.submit(
        "app@local.test",
        &["later@remote.test"],
        &format!("From: {from}\r\nTo: later@remote.test\r\nSubject: stays\r\n\r\nbody e"),
    );
    let msgs = sink.wait_messages(4);
    let by = |subject: &str| -> Delivered {
        msgs.iter()
            .find(|m| m.subject() == subject)
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "{subject:?} not delivered: {:?}\n{}",
                    msgs.iter().map(Delivered::subject).collect::<Vec<_>>(),
                    log_tail(&srv, 30)
                )
            })
    };

    let a = by("plain");
    assert_eq!(a.sender_addr(), REWRITTEN);
    let text = a.text();
    assert_eq!(
        header_values(&text, "From"),
        vec![format!("\"App\" <{REWRITTEN}>")]
    );
    assert_eq!(header_values(&text, "Reply-To"), vec![from.to_string()]);
    let lines = header_lines(&text);
    let at = lines
        .iter()
        .position(|l| l.to_ascii_lowercase().starts_with("from:"))
        .expect("a From line");
    assert!(
        lines
            .get(at + 1)
            .is_some_and(|l| l.to_ascii_lowercase().starts_with("reply-to:")),
        "Reply-To is not right after From:\n{text}"
    );

    let b = by("has-reply-to");
    assert_eq!(b.sender_addr(), REWRITTEN);
    let text = b.text();
    assert_eq!(
        header_values(&text, "From"),
        vec![format!("\"App\" <{REWRITTEN}>")]
    );
    assert_eq!(
        header_values(&text, "Reply-To"),
        vec!["<replies@local.test>".to_string()]
    );

    let c = by("null-sender");
    assert_eq!(c.mail_from.split_whitespace().next(), Some("<>"));
    let report = msgs
        .iter()
        .find(|m| m.rcpt_addrs() == vec!["app@sender.test".to_string()])
        .unwrap_or_else(|| panic!("no report to app@sender.test at the sink"));
    assert_eq!(
        report.mail_from.split_whitespace().next(),
        Some("<>"),
        "a report keeps the null sender"
    );
    assert!(
        report
            .final_recipients()
            .iter()
            .any(|r| r == "bad@remote.test"),
        "{}",
        report.text()
    );

    // The message that waits: its Queue copy, its .sta and the W3C log keep the original sender.
    let mut states = Vec::new();
    assert!(
        wait_until(|| {
            states = srv.states();
            states.iter().any(|s| s.contains("later@remote.test"))
        }),
        "no .sta for later@remote.test: {states:?}"
    );
    assert!(
        sink.commands().iter().any(
            |c| c.eq_ignore_ascii_case(&format!("MAIL FROM:<{REWRITTEN}>"))
                || c.to_ascii_uppercase()
                    .starts_with(&format!("MAIL FROM:<{}> ", REWRITTEN.to_ascii_uppercase()))
        ),
        "{:?}",
        sink.commands()
    );
    let queued = srv.files("Queue");
    assert_eq!(queued.len(), 1, "{:?}", names(&srv.folder("Queue")));
    let q = read_text(&queued[0]);
    assert!(q.starts_with("x-sender: app@local.test\r\n"), "{q}");
    let head = q
        .split_once("\r\n\r\n")
        .map(|(head, _)| head.to_string())
        .unwrap_or_default();
    assert!(head.contains(&format!("From: {from}")), "{q}");
    assert!(!q.contains(REWRITTEN), "the Queue copy was rewritten:\n{q}");
    assert!(!q.to_ascii_lowercase().contains("reply-to"), "{q}");
    assert!(states.iter().all(|s| !s.contains(REWRITTEN)), "{states:?}");
    let w3c = srv.wait_w3c(1, |t| t.contains("+FROM:<app@local.test>"));
    assert!(!w3c.contains(REWRITTEN), "{w3c}");
}

// ---------------------------------------------------------------------------------------------
// 7. A client certificate toward the next hop
// ---------------------------------------------------------------------------------------------

#[test]
fn client_certificate_presented() {
    let ca = TestCa::new();
    let server_cert = ca.client_leaf("relay.mailroot.test");
    let route_cert = ca.client_leaf("route.mailroot.test");
    let smart = Sink::builder()
        .starttls(ca.leaf())
        .require_tls()
        .request_client_cert(Some(&ca))
        .start();
    let routed = Sink::builder()
        .starttls(ca.leaf())
        .require_tls()
        .request_client_cert(None)
        .start();
    let dir = TempDir::new("client-cert");
    fs::create_dir_all(dir.path().join("server")).expect("mkdir");
    fs::create_dir_all(dir.path().join("route")).expect("mkdir");
    let (cert, key) = server_cert.write_pem(&dir.path().join("server"));
    let (rcert, rkey) = route_cert.write_pem(&dir.path().join("route"));
    let srv = Builder::new()
        .smart_host(smart.addr.port())
        .key("OutboundTls", "required")
        .key("OutboundTlsCaFile", &ca.ca_pem_path().to_string_lossy())
        .key("OutboundTlsCertificateFile", &cert.to_string_lossy())
        .key("OutboundTlsKeyFile", &key.to_string_lossy())
        .section(&format!(
            "[SmtpSvc/1/Domain/certified.test]\nSmartHost = [127.0.0.1]:{}\nOutboundTlsCertificateFile = {}\nOutboundTlsKeyFile = {}\n",
            routed.addr.port(),
            rcert.display(),
            rkey.display()
        ))
        .start();
    srv.submit("app@local.test", &["r@remote.test"], &message("smart"));
    srv.submit("app@local.test", &["r@certified.test"], &message("routed"));
    let m = smart.wait_messages(1);
    assert_eq!(
        m.len(),
        1,
        "not delivered: {:?}\n{}",
        smart.tls_errors(),
        log_tail(&srv, 30)
    );
    assert!(m[0].tls);
    assert_eq!(
        m[0].client_cert.as_deref(),
        Some(server_cert.der().as_ref()),
        "the smart host did not see OutboundTlsCertificateFile"
    );
    let m = routed.wait_messages(1);
    assert_eq!(m.len(), 1, "not delivered: {:?}", routed.tls_errors());
    assert_eq!(
        m[0].client_cert.as_deref(),
        Some(route_cert.der().as_ref()),
        "the domain route did not present its own certificate"
    );
    assert!(smart.tls_errors().is_empty() && routed.tls_errors().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 8. `mailroot check`
// ---------------------------------------------------------------------------------------------

/// One printed setting: its value and the comment line printed before it.
#[derive(Debug, Clone)]
struct Printed {
    value: String,
    comment: String,
}

/// `check` output per section: `[name]` → key → what was printed.
fn printed(stdout: &str) -> BTreeMap<String, BTreeMap<String, Printed>> {
    let mut all: BTreeMap<String, BTreeMap<String, Printed>> = BTreeMap::new();
    let mut section = String::new();
    let mut comment = String::new();
    for line in stdout.lines() {
        let t = line.trim_end();
        if let Some(c) = t.strip_prefix(';') {
            comment = c.trim().to_string();
            continue;
        }
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            section = name.to_string();
            all.entry(section.clone()).or_default();
            continue;
        }
        let kv = t
            .split_once(" = ")
            .or_else(|| t.strip_suffix(" =").map(|k| (k, "")));
        if let Some((k, v)) = kv
            && !section.is_empty()
        {
            all.entry(section.clone()).or_default().insert(
                k.trim().to_string(),
                Printed {
                    value: v.trim().to_string(),
                    comment: std::mem::take(&mut comment),
                },
            );
        }
    }
    all
}

#[test]
fn check_prints_presets_and_masks_secrets() {
    const PASSWORD: &str = "partner-pw-never-printed";
    let dir = TempDir::new("oauth-check");
    let key = OAuthKey::fixture();
    let sa = dir.path().join("sa.json");
    write_private(
        &sa,
        &key.service_account_json(
            "relay@mailroot-test.iam.gserviceaccount.com",
            "kid-1",
            "https://oauth2.googleapis.com/token",
        ),
        0o600,
    );
    let ini = dir.path().join("smtpsvc.ini");
    fs::write(
        &ini,
        format!(
            "[SmtpSvc/1]\n\
             ServerBindings = 127.0.0.1:2525\n\
             MailRoot = mailroot\n\
             SmartHostProvider = microsoft365\n\
             OAuthTenant = {TENANT}\n\
             OAuthClientId = {CLIENT_ID}\n\
             OAuthClientSecret = {SECRET}\n\
             RouteUserName = {MAILBOX}\n\
             MaxMessagesPerMinute = 10\n\
             \n\
             [SmtpSvc/1/Domain/gmail-route.test]\n\
             SmartHostProvider = google\n\
             OAuthServiceAccountFile = {}\n\
             RouteUserName = relay@gmail-route.test\n\
             \n\
             [SmtpSvc/1/Domain/partner.test]\n\
             SmartHost = [127.0.0.1]:2526\n\
             RouteUserName = partner-user\n\
             RoutePassword = {PASSWORD}\n",
            sa.display()
        ),
    )
    .expect("write the INI");
    let cwd = TempDir::new("oauth-check-cwd");
    let r = run_bin(
        &["check", "--config", &ini.to_string_lossy()],
        Some(cwd.path()),
        None,
    );
    assert!(r.ok(), "check failed:\n{}", r.both());
    for secret in [SECRET, PASSWORD] {
        assert!(
            !r.both().contains(secret),
            "a secret is printed:\n{}",
            r.both()
        );
    }
    assert!(
        !r.both().contains("PRIVATE KEY"),
        "a file's contents are printed"
    );
    let all = printed(&r.stdout);
    let top = all
        .get("SmtpSvc/1")
        .unwrap_or_else(|| panic!("no [SmtpSvc/1]:\n{}", r.stdout));
    let get = |s: &BTreeMap<String, Printed>, k: &str| -> Printed {
        s.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{k} not printed:\n{}", r.stdout))
    };
    for (k, v) in [
        ("SmartHost", "smtp.office365.com:587"),
        ("SmartHostType", "2"),
        ("OutboundTls", "required"),
        ("MaxOutConnectionsPerDomain", "3"),
    ] {
        let p = get(top, k);
        assert_eq!(p.value, v, "{k}:\n{}", r.stdout);
        assert!(
            p.comment.ends_with("(microsoft365 preset)"),
            "{k}'s comment {:?} does not name the preset",
            p.comment
        );
    }
    assert_eq!(get(top, "SmartHostProvider").value, "microsoft365");
    assert_eq!(get(top, "OutboundAuthMechanism").value, "xoauth2");
    let rate = get(top, "MaxMessagesPerMinute");
    assert_eq!(
        rate.value, "10",
        "the explicit value wins over the preset's 30"
    );
    assert!(
        !rate.comment.ends_with("preset)"),
        "an explicit value marked as the preset's: {:?}",
        rate.comment
    );
    assert_eq!(get(top, "OAuthClientSecret").value, "(set)");
    assert_eq!(get(top, "OAuthTenant").value, TENANT);
    assert_eq!(get(top, "OAuthClientId").value, CLIENT_ID);

    let google = all
        .get("SmtpSvc/1/Domain/gmail-route.test")
        .unwrap_or_else(|| panic!("no domain block:\n{}", r.stdout));
    let p = get(google, "SmartHost");
    assert_eq!(p.value, "smtp.gmail.com:587");
    assert!(p.comment.ends_with("(google preset)"), "{:?}", p.comment);
    assert_eq!(get(google, "OutboundTls").value, "required");
    assert_eq!(get(google, "OutboundAuthMechanism").value, "xoauth2");
    assert_eq!(
        get(google, "OAuthServiceAccountFile").value,
        sa.display().to_string()
    );
    let partner = all
        .get("SmtpSvc/1/Domain/partner.test")
        .unwrap_or_else(|| panic!("no partner.test block:\n{}", r.stdout));
    assert_eq!(get(partner, "RoutePassword").value, "(set)");

    // A missing key file is an error naming the file, the line and the key.
    let files = key.write_files(dir.path());
    let bad = dir.path().join("bad.ini");
    let text = format!(
        "[SmtpSvc/1]\nSmartHostProvider = microsoft365\nOAuthTenant = {TENANT}\nOAuthClientId = {CLIENT_ID}\nOAuthCertificateFile = {}\nOAuthKeyFile = {}\nRouteUserName = {MAILBOX}\n",
        files.cert.display(),
        dir.path().join("missing-key.pem").display()
    );
    fs::write(&bad, &text).expect("write the INI");
    let line = text
        .lines()
        .position(|l| l.starts_with("OAuthKeyFile"))
        .expect("the line")
        + 1;
    let r = run_bin(
        &["check", "--config", &bad.to_string_lossy()],
        Some(cwd.path()),
        None,
    );
    assert!(!r.ok(), "a missing OAuthKeyFile is valid:\n{}", r.both());
    let want = format!("{}:{line}: OAuthKeyFile", bad.display());
    assert!(
        r.both().lines().any(|l| l.starts_with(&want)),
        "no line starting with {want:?}:\n{}",
        r.both()
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Secrets files readable by others
// ---------------------------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn secrets_file_readable_by_others_warns() {
    let ca = TestCa::new();
    for (mode, warns) in [(0o644, true), (0o600, false)] {
        let secrets = TempDir::new("oauth-mode");
        let file = secrets.path().join("client-secret.txt");
        write_private(&file, &format!("{SECRET}\n"), mode);
        let srv = Builder::new()
            .key("SmartHostProvider", "microsoft365")
            .key("OutboundTlsCaFile", &ca.ca_pem_path().to_string_lossy())
            .key("OAuthTenant", TENANT)
            .key("OAuthClientId", CLIENT_ID)
            .key("OAuthClientSecretFile", &file.to_string_lossy())
            .key("RouteUserName", MAILBOX)
            .start();
        let path = file.display().to_string();
        let warned = |srv: &Server| {
            srv.log_text().lines().any(|l| {
                l.contains("readable by other users")
                    && l.contains(&path)
                    && l.contains("OAuthClientSecretFile")
            })
        };
        if warns {
            assert!(
                wait_until(|| warned(&srv)),
                "no warning for a {mode:o} secrets file:\n{}",
                srv.log_text()
            );
        } else {
            // Start-up is over once the server listens; give the log a moment.
            thread::sleep(Duration::from_millis(300));
            assert!(
                !srv.log_text().contains("readable by other users"),
                "a warning for a {mode:o} secrets file:\n{}",
                srv.log_text()
            );
        }
        assert!(!srv.log_text().contains(SECRET), "the secret is in the log");
    }
}
