//! MetricsBinding: the real binary serves `/metrics` (Prometheus text format, checked with
//! `promtool check metrics`) and `/status` (JSON) after real traffic — a message to Drop, one to a
//! live next hop, one to a dead next hop, an AUTH failure, a relay refusal and a connection-control
//! refusal — and the alert rules in contrib/ pass `promtool check rules`.
//!
//! promtool comes from Debian's `prometheus` package (.ci/run installs it). Without it the promtool
//! checks are skipped with a note, except under `CI=true`, where they fail.

mod common;

use common::sink::{Sink, Stage};
use common::*;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A plain HTTP/1.1 GET; returns the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to MetricsBinding");
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line in {head:?}"));
    // tiny_http answers Connection: close without chunking.
    (code, body.to_string())
}

/// Samples of the text format: `name{labels}` → value (labels as written).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn value(s: &HashMap<String, f64>, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in\n{s:#?}"))
}

/// Whether promtool can run; `None` (with a note) when it is missing outside CI. Under `CI=true` a
/// missing promtool fails the test.
fn promtool() -> Option<&'static str> {
    let ok = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some("promtool");
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "promtool is missing: install Debian's `prometheus` package (.ci/run does)"
    );
    eprintln!("skipped: promtool not found (apt-get install prometheus)");
    None
}

fn run_promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    {
        let mut i = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            i.write_all(text.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn poll<T>(bound: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + bound;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn metrics_and_status_after_traffic() {
    let live = Sink::start_default();
    // Accepts and closes at once: every connection fails, so the destination goes dead.
    let dead = Sink::builder().drop_at(Stage::Connect).start();
    // Port 0: the exporter says in the log where it listens (a port picked here beforehand could be
    // taken by another test's server meanwhile).
    let srv = Builder::new()
        .retrying()
        .key("MetricsBinding", "127.0.0.1:0")
        .key("DeadDestinationFailures", "1")
        .key("AuthFlags", "3")
        .key("AllowPlaintextAuth", "1")
        .key("IPDeny", "127.0.0.3")
        .key("PickupSettleTime", "200ms")
        .route("live.test", live.addr.port())
        .route("dead.test", dead.addr.port())
        .start();
    let metrics: SocketAddr = srv
        .log_text()
        .split("metrics at http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{}", srv.log_text()));
    assert_ne!(metrics.port(), 0);

    // Three messages: to Drop, to the live next hop, to the dead one.
    srv.submit(
        "app@local.test",
        &["admin@local.test"],
        "Subject: drop\r\n\r\nx",
    );
    srv.submit(
        "app@local.test",
        &["u@live.test"],
        "Subject: live\r\n\r\nhello",
    );
    srv.submit(
        "app@local.test",
        &["u@dead.test"],
        "Subject: dead\r\n\r\nlater",
    );
    // And one through the Pickup folder.
    std::fs::write(
        srv.folder("Pickup").join("app.eml"),
        "X-Sender: app@local.test\r\nX-Receiver: ops@local.test\r\nSubject: pickup\r\n\r\nfrom a file\r\n",
    )
    .unwrap();
    // An AUTH failure (nobody is in the users file).
    let mut c = srv.connect();
    c.hello();
    c.expect_prefix("AUTH PLAIN AG5vYm9keQB3cm9uZw==", "535");
    c.quit();
    // A relay refusal: 127.0.0.2 is not in RelayIpList.
    let mut c = Client::connect_from("127.0.0.2", srv.addr());
    c.hello();
    c.ok("MAIL FROM:<x@elsewhere.test>", 250);
    c.expect_prefix("RCPT TO:<u@live.test>", "550 5.7.1");
    c.quit();
    // A connection-control refusal.
    let mut c = Client::connect_from("127.0.0.3", srv.addr());
    let r = c.reply();
    assert_eq!(r.code, 554, "{r:?}");

    live.wait_messages(1);
    // The dead destination shows as dead once its first attempt failed.
    let dead_key = format!(
        "mailroot_destination_state{{instance=\"SMTPSVC1\",destination=\"host:127.0.0.1:{}\",state=\"dead\"}}",
        dead.addr.port()
    );
    let text = poll(WAIT, || {
        let (code, body) = get(metrics, "/metrics");
        assert_eq!(code, 200, "{body}");
        let s = samples(&body);
        (s.get(&dead_key) == Some(&1.0)
            && s.get("mailroot_messages_delivered_total{instance=\"SMTPSVC1\"}") == Some(&1.0)
            && s.get("mailroot_messages_received_total{instance=\"SMTPSVC1\",source=\"pickup\"}")
                == Some(&1.0))
        .then_some(body)
    })
    .unwrap_or_else(|| {
        panic!(
            "no dead destination, one delivery and one Pickup message in\n{}",
            get(metrics, "/metrics").1
        )
    });
    let s = samples(&text);
    let i = "instance=\"SMTPSVC1\"";
    assert_eq!(
        value(
            &s,
            &format!("mailroot_messages_received_total{{{i},source=\"smtp\"}}")
        ),
        3.0
    );
    assert_eq!(
        value(
            &s,
            &format!("mailroot_messages_received_total{{{i},source=\"pickup\"}}")
        ),
        1.0
    );
    assert!(value(&s, &format!("mailroot_received_bytes_total{{{i}}}")) > 0.0);
    assert!(value(&s, &format!("mailroot_sent_bytes_total{{{i}}}")) > 0.0);
    assert_eq!(
        value(&s, &format!("mailroot_recipients_delivered_total{{{i}}}")),
        1.0
    );
    assert!(value(&s, &format!("mailroot_messages_deferred_total{{{i}}}")) >= 1.0);
    assert_eq!(
        value(&s, &format!("mailroot_messages_bounced_total{{{i}}}")),
        0.0
    );
    assert_eq!(
        value(&s, &format!("mailroot_messages_badmail_total{{{i}}}")),
        0.0
    );
    assert_eq!(
        value(&s, &format!("mailroot_auth_failures_total{{{i}}}")),
        1.0
    );
    assert_eq!(
        value(&s, &format!("mailroot_relay_refusals_total{{{i}}}")),
        1.0
    );
    assert_eq!(
        value(
            &s,
            &format!("mailroot_connections_refused_total{{{i},reason=\"connection_control\"}}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            &format!("mailroot_connections_refused_total{{{i},reason=\"max_connections\"}}")
        ),
        0.0
    );
    // Five admitted sessions (three submits, the AUTH and the relay attempt).
    assert_eq!(value(&s, &format!("mailroot_sessions_total{{{i}}}")), 5.0);
    assert_eq!(
        value(&s, &format!("mailroot_tls_sessions_total{{{i}}}")),
        0.0
    );
    // The scrape's own connection is not an SMTP session; the refused one may still be closing.
    assert!(value(&s, &format!("mailroot_sessions_open{{{i}}}")) <= 1.0);
    // The dead destination's message waits.
    assert_eq!(value(&s, &format!("mailroot_queue_messages{{{i}}}")), 1.0);
    assert!(value(&s, &format!("mailroot_queue_oldest_age_seconds{{{i}}}")) > 0.0);
    let dest = format!("{i},destination=\"host:127.0.0.1:{}\"", dead.addr.port());
    assert_eq!(
        value(
            &s,
            &format!("mailroot_destination_state{{{dest},state=\"ready\"}}")
        ),
        0.0
    );
    // Deferred once, it waits for the end of the dead period (a retry, not due yet).
    assert_eq!(
        value(
            &s,
            &format!("mailroot_destination_queued_messages{{{dest}}}")
        ) + value(
            &s,
            &format!("mailroot_destination_retrying_messages{{{dest}}}")
        ),
        1.0
    );
    assert!(value(&s, &format!("mailroot_destination_window{{{dest}}}")) >= 1.0);
    // One delivered message in the latency histogram; one commit batch at least per message.
    assert_eq!(
        value(
            &s,
            &format!("mailroot_delivery_latency_seconds_count{{{i}}}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            &format!("mailroot_delivery_latency_seconds_bucket{{{i},le=\"+Inf\"}}")
        ),
        1.0
    );
    assert!(value(&s, &format!("mailroot_commit_batch_messages_count{{{i}}}")) >= 1.0);
    assert!(value(&s, &format!("mailroot_commit_batch_messages_sum{{{i}}}")) >= 3.0);

    if let Some(tool) = promtool() {
        let (ok, out) = run_promtool(&["check", "metrics"], Some(&text));
        assert!(ok, "{tool} check metrics:\n{out}\non\n{text}");
    }

    // /status: the same, as JSON.
    let (code, body) = get(metrics, "/status");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let server = &v["servers"][0];
    assert_eq!(server["instance"], "SMTPSVC1");
    assert_eq!(server["messages_received_total"], 3);
    assert_eq!(server["auth_failures_total"], 1);
    assert_eq!(server["relay_refusals_total"], 1);
    assert_eq!(server["connections_refused_total"]["connection_control"], 1);
    let queue = &v["queues"][0];
    assert_eq!(queue["messages_delivered_total"], 1);
    assert_eq!(queue["queue_messages"], 1);
    let dests = queue["destinations"].as_array().expect("destinations");
    assert!(
        dests.iter().any(|d| d["state"] == "dead"
            && d["queued"].as_u64().unwrap() + d["retrying"].as_u64().unwrap() == 1),
        "{body}"
    );

    // Anything else is 404.
    assert_eq!(get(metrics, "/nothing").0, 404);
}

#[test]
fn alert_rules_pass_promtool() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus/mailroot-rules.yml");
    assert!(rules.exists(), "{}", rules.display());
    if promtool().is_none() {
        return;
    }
    let (ok, out) = run_promtool(&["check", "rules", rules.to_str().unwrap()], None);
    assert!(ok, "promtool check rules:\n{out}");
}

#[test]
fn dashboard_is_json_with_panels() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/grafana/mailroot.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let panels = v["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6, "{} panels", panels.len());
    // Every query names a metric the server exports.
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(expr.contains("mailroot_"), "{expr}");
        }
    }
}
