//! MetricsBinding: Prometheus text format at `/metrics` and a JSON summary at `/status`, on a
//! thread of its own (`metrics`). Everything is read at scrape time: the counters are atomics the
//! rooms below increment (`crate::metrics`), the Queue's depth and destinations come from each
//! delivery service's scheduler (one pass under its lock). The SMTP path never waits for a scrape.
//! HTTP is tiny_http's (its own threads read requests); the text is prometheus-client's encoder.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::Table;
use crate::delivery::engine::Monitor;
use crate::delivery::scheduler::{DestState, Row};
use crate::mailroot::store::Store;
use crate::metrics::HistogramSnapshot;

/// One delivery service (one Queue folder) as the exporter sees it.
pub struct QueueSource {
    /// The virtual server whose settings it runs with (the first one using the Queue folder).
    pub instance: u32,
    /// Its store (commit batches, Badmail, Pickup).
    pub store: Store,
    /// Its counters, depth and destinations.
    pub monitor: Monitor,
}

/// What a scrape reads.
pub struct Sources {
    /// The virtual servers (a reload replaces the table; the counters carry over).
    pub instances: Table,
    /// The delivery services.
    pub queues: Vec<QueueSource>,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field("queues", &self.queues.len())
            .finish_non_exhaustive()
    }
}

/// One virtual server's session counters, read once.
struct ServerSnap {
    instance: String,
    open: u64,
    total: u64,
    tls: u64,
    received: u64,
    bytes_in: u64,
    auth_failures: u64,
    relay_refused: u64,
    refused: [(&'static str, u64); 3],
}

/// One Queue folder's counters and state, read once.
struct QueueSnap {
    instance: String,
    pickup: u64,
    badmail: u64,
    batches: HistogramSnapshot,
    delivered: u64,
    deferred: u64,
    bounced: u64,
    recipients_delivered: u64,
    recipients_failed: u64,
    bytes_out: u64,
    latency: HistogramSnapshot,
    depth: u64,
    oldest_age: f64,
    destinations: Vec<Row>,
}

struct Snapshot {
    servers: Vec<ServerSnap>,
    queues: Vec<QueueSnap>,
}

fn name(instance: u32) -> String {
    format!("SMTPSVC{instance}")
}

fn age(t: Option<SystemTime>, now: SystemTime) -> f64 {
    t.and_then(|t| now.duration_since(t).ok())
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A destination is shown while it has work or is not plainly ready: the table keeps every
/// destination ever seen, and a relay to many domains would otherwise grow a series per domain.
fn shown(r: &Row) -> bool {
    r.queued > 0 || r.retrying > 0 || r.busy > 0 || r.throttled || r.state != DestState::Ready
}

fn state_name(r: &Row) -> &'static str {
    match r.state {
        DestState::Dead { .. } => "dead",
        DestState::Probing { .. } => "probing",
        DestState::Ready if r.throttled => "throttled",
        DestState::Ready => "ready",
    }
}

impl Sources {
    fn snapshot(&self) -> Snapshot {
        let now = SystemTime::now();
        let instances = self
            .instances
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let servers = instances
            .iter()
            .map(|i| {
                let s = &i.counts.stats;
                ServerSnap {
                    instance: name(i.vs.instance),
                    open: i.counts.active() as u64,
                    total: s.total.get(),
                    tls: s.tls.get(),
                    received: s.received.get(),
                    bytes_in: s.bytes_in.get(),
                    auth_failures: i.auth_limiter.failures(),
                    relay_refused: s.relay_refused.get(),
                    refused: [
                        ("connection_control", s.refused_access.get()),
                        ("max_connections", s.refused_max_connections.get()),
                        ("max_connections_per_ip", s.refused_per_ip.get()),
                    ],
                }
            })
            .collect();
        let queues = self
            .queues
            .iter()
            .map(|q| {
                let m = q.store.metrics();
                let d = q.monitor.metrics();
                let (depth, oldest) = q.monitor.depth();
                QueueSnap {
                    instance: name(q.instance),
                    pickup: m.pickup.get(),
                    badmail: m.badmail.get(),
                    batches: m.commit_batches.snapshot(),
                    delivered: d.delivered.get(),
                    deferred: d.deferred.get(),
                    bounced: d.bounced.get(),
                    recipients_delivered: d.recipients_delivered.get(),
                    recipients_failed: d.recipients_failed.get(),
                    bytes_out: d.bytes_out.get(),
                    latency: d.latency.snapshot(),
                    depth: depth as u64,
                    oldest_age: age(oldest, now),
                    destinations: q.monitor.destinations().into_iter().filter(shown).collect(),
                }
            })
            .collect();
        Snapshot { servers, queues }
    }
}

type Labels = Vec<(&'static str, String)>;

fn inst(i: &str) -> Labels {
    vec![("instance", i.to_string())]
}

/// One metric family: its descriptor, then a sample per label set.
fn family<V: Copy>(
    enc: &mut DescriptorEncoder,
    metric: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels, V)>,
) -> fmt::Result
where
    ConstCounter<V>: EncodeMetric,
    ConstGauge<V>: EncodeMetric,
{
    let mut m = enc.encode_descriptor(metric, help, None, kind)?;
    for (labels, v) in samples {
        let f = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(v).encode(f)?,
            _ => ConstGauge::new(v).encode(f)?,
        }
    }
    Ok(())
}

fn histogram<'a>(
    enc: &mut DescriptorEncoder,
    metric: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, &'a HistogramSnapshot)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(metric, help, None, MetricType::Histogram)?;
    for (labels, h) in samples {
        let mut f = m.encode_family(&labels)?;
        f.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
    }
    Ok(())
}

#[derive(Debug)]
struct Collect(Arc<Sources>);

impl Collector for Collect {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = self.0.snapshot();
        let e = &mut enc;
        let per_server = |f: fn(&ServerSnap) -> u64| {
            s.servers
                .iter()
                .map(move |v| (inst(&v.instance), f(v)))
                .collect::<Vec<_>>()
        };
        let per_queue = |f: fn(&QueueSnap) -> u64| {
            s.queues
                .iter()
                .map(move |v| (inst(&v.instance), f(v)))
                .collect::<Vec<_>>()
        };
        let received = s
            .servers
            .iter()
            .map(|v| {
                let mut l = inst(&v.instance);
                l.push(("source", "smtp".into()));
                (l, v.received)
            })
            .chain(s.queues.iter().map(|q| {
                let mut l = inst(&q.instance);
                l.push(("source", "pickup".into()));
                (l, q.pickup)
            }));
        family(
            e,
            "mailroot_messages_received",
            "Messages accepted: answered 250 over SMTP, or taken from the Pickup folder.",
            MetricType::Counter,
            received,
        )?;
        family(
            e,
            "mailroot_messages_delivered",
            "Messages that left the Queue with at least one recipient delivered (next hop or Drop).",
            MetricType::Counter,
            per_queue(|q| q.delivered),
        )?;
        family(
            e,
            "mailroot_messages_deferred",
            "Delivery attempts after which the message stayed in the Queue for a retry.",
            MetricType::Counter,
            per_queue(|q| q.deferred),
        )?;
        family(
            e,
            "mailroot_messages_bounced",
            "Messages that left the Queue with failed recipients (reported to the sender, or Badmail).",
            MetricType::Counter,
            per_queue(|q| q.bounced),
        )?;
        family(
            e,
            "mailroot_messages_badmail",
            "Messages written to the Badmail folder.",
            MetricType::Counter,
            per_queue(|q| q.badmail),
        )?;
        family(
            e,
            "mailroot_recipients_delivered",
            "Recipients delivered.",
            MetricType::Counter,
            per_queue(|q| q.recipients_delivered),
        )?;
        family(
            e,
            "mailroot_recipients_failed",
            "Recipients failed (permanently, or expired).",
            MetricType::Counter,
            per_queue(|q| q.recipients_failed),
        )?;
        family(
            e,
            "mailroot_received_bytes",
            "Bytes of the messages accepted over SMTP.",
            MetricType::Counter,
            per_server(|v| v.bytes_in),
        )?;
        family(
            e,
            "mailroot_sent_bytes",
            "Bytes of the messages accepted by next hops (once per transaction).",
            MetricType::Counter,
            per_queue(|q| q.bytes_out),
        )?;
        family(
            e,
            "mailroot_sessions_open",
            "SMTP sessions open now.",
            MetricType::Gauge,
            per_server(|v| v.open),
        )?;
        family(
            e,
            "mailroot_sessions",
            "SMTP sessions admitted.",
            MetricType::Counter,
            per_server(|v| v.total),
        )?;
        family(
            e,
            "mailroot_tls_sessions",
            "SMTP sessions that started TLS (STARTTLS or implicit TLS).",
            MetricType::Counter,
            per_server(|v| v.tls),
        )?;
        family(
            e,
            "mailroot_auth_failures",
            "Failed AUTH logins.",
            MetricType::Counter,
            per_server(|v| v.auth_failures),
        )?;
        family(
            e,
            "mailroot_relay_refusals",
            "RCPT TO refused because the client may not relay.",
            MetricType::Counter,
            per_server(|v| v.relay_refused),
        )?;
        let refused = s.servers.iter().flat_map(|v| {
            v.refused.iter().map(|(why, n)| {
                let mut l = inst(&v.instance);
                l.push(("reason", (*why).into()));
                (l, *n)
            })
        });
        family(
            e,
            "mailroot_connections_refused",
            "Connections refused at accept: connection control (IPGrant/IPDeny), MaxConnections, MaxConnectionsPerIp.",
            MetricType::Counter,
            refused,
        )?;
        family(
            e,
            "mailroot_queue_messages",
            "Messages in the Queue (waiting for a retry, ready, parked or being delivered).",
            MetricType::Gauge,
            per_queue(|q| q.depth),
        )?;
        family(
            e,
            "mailroot_queue_oldest_age_seconds",
            "Age of the oldest message in the Queue (0 when empty).",
            MetricType::Gauge,
            s.queues.iter().map(|q| (inst(&q.instance), q.oldest_age)),
        )?;
        let dest = |q: &QueueSnap, r: &Row| {
            let mut l = inst(&q.instance);
            l.push(("destination", r.key.clone()));
            l
        };
        family(
            e,
            "mailroot_destination_queued_messages",
            "Messages due for a destination (ready or parked), for destinations with work or not ready.",
            MetricType::Gauge,
            s.queues.iter().flat_map(|q| {
                q.destinations
                    .iter()
                    .map(move |r| (dest(q, r), r.queued as u64))
            }),
        )?;
        family(
            e,
            "mailroot_destination_retrying_messages",
            "Messages waiting for their retry time whose next attempt goes to a destination.",
            MetricType::Gauge,
            s.queues.iter().flat_map(|q| {
                q.destinations
                    .iter()
                    .map(move |r| (dest(q, r), r.retrying as u64))
            }),
        )?;
        family(
            e,
            "mailroot_destination_window",
            "A destination's concurrency window (connections it may have at once).",
            MetricType::Gauge,
            s.queues.iter().flat_map(|q| {
                q.destinations
                    .iter()
                    .map(move |r| (dest(q, r), u64::from(r.window)))
            }),
        )?;
        family(
            e,
            "mailroot_destination_busy",
            "Delivery threads at work for a destination.",
            MetricType::Gauge,
            s.queues.iter().flat_map(|q| {
                q.destinations
                    .iter()
                    .map(move |r| (dest(q, r), u64::from(r.busy)))
            }),
        )?;
        family(
            e,
            "mailroot_destination_state",
            "A destination's state: 1 for the one it is in (ready, throttled, dead, probing), 0 for the others.",
            MetricType::Gauge,
            s.queues.iter().flat_map(|q| {
                q.destinations.iter().flat_map(move |r| {
                    let now = state_name(r);
                    ["ready", "throttled", "dead", "probing"].map(|st| {
                        let mut l = dest(q, r);
                        l.push(("state", st.into()));
                        (l, u64::from(st == now))
                    })
                })
            }),
        )?;
        histogram(
            e,
            "mailroot_commit_batch_messages",
            "Messages per group-commit batch (its count is the number of batches, each one flush).",
            s.queues.iter().map(|q| (inst(&q.instance), &q.batches)),
        )?;
        histogram(
            e,
            "mailroot_delivery_latency_seconds",
            "Seconds from a message's arrival to its leaving the Queue delivered.",
            s.queues.iter().map(|q| (inst(&q.instance), &q.latency)),
        )?;
        Ok(())
    }
}

fn status_json(s: &Snapshot) -> serde_json::Value {
    use serde_json::json;
    let servers: Vec<_> = s
        .servers
        .iter()
        .map(|v| {
            json!({
                "instance": v.instance,
                "sessions_open": v.open,
                "sessions_total": v.total,
                "tls_sessions_total": v.tls,
                "messages_received_total": v.received,
                "received_bytes_total": v.bytes_in,
                "auth_failures_total": v.auth_failures,
                "relay_refusals_total": v.relay_refused,
                "connections_refused_total": v.refused.iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    let queues: Vec<_> = s
        .queues
        .iter()
        .map(|q| {
            let dests: Vec<_> = q
                .destinations
                .iter()
                .map(|r| {
                    json!({
                        "destination": r.key,
                        "state": state_name(r),
                        "queued": r.queued,
                        "retrying": r.retrying,
                        "window": r.window,
                        "busy": r.busy,
                        "delivered": r.delivered,
                    })
                })
                .collect();
            json!({
                "instance": q.instance,
                "queue_messages": q.depth,
                "queue_oldest_age_seconds": q.oldest_age,
                "messages_received_pickup_total": q.pickup,
                "messages_delivered_total": q.delivered,
                "messages_deferred_total": q.deferred,
                "messages_bounced_total": q.bounced,
                "messages_badmail_total": q.badmail,
                "recipients_delivered_total": q.recipients_delivered,
                "recipients_failed_total": q.recipients_failed,
                "sent_bytes_total": q.bytes_out,
                "commit_batches_total": q.batches.count,
                "commit_batch_messages_sum": q.batches.sum,
                "delivery_latency_seconds_count": q.latency.count,
                "delivery_latency_seconds_sum": q.latency.sum,
                "destinations": dests,
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "servers": servers,
        "queues": queues,
    })
}

/// The running exporter.
pub struct Exporter {
    http: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Exporter {
    /// Binds `addr` and serves `/metrics` and `/status` from `sources` on the `metrics` thread.
    pub fn start(addr: SocketAddr, sources: Sources) -> std::io::Result<Exporter> {
        let http = tiny_http::Server::http(addr)
            .map_err(|e| std::io::Error::other(format!("MetricsBinding {addr}: {e}")))?;
        let addr = http.server_addr().to_ip().unwrap_or(addr);
        let http = Arc::new(http);
        let sources = Arc::new(sources);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collect(sources.clone())));
        let server = http.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for req in server.incoming_requests() {
                    respond(req, &registry, &sources);
                }
            })?;
        log::info!("metrics at http://{addr}/metrics and http://{addr}/status");
        Ok(Exporter {
            http,
            thread: Some(thread),
            addr,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the thread.
    pub fn stop(mut self) {
        self.http.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

fn respond(req: tiny_http::Request, registry: &Registry, sources: &Sources) {
    let path = req.url().split('?').next().unwrap_or("");
    let get = matches!(
        req.method(),
        tiny_http::Method::Get | tiny_http::Method::Head
    );
    let resp = match (get, path) {
        (true, "/metrics") => {
            let mut body = String::new();
            match prometheus_client::encoding::prometheus_text::encode(&mut body, registry) {
                Ok(()) => tiny_http::Response::from_string(body).with_header(header(
                    "Content-Type",
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                )),
                Err(_) => {
                    tiny_http::Response::from_string("encoding failed\n").with_status_code(500)
                }
            }
        }
        (true, "/status") => {
            let body = status_json(&sources.snapshot()).to_string();
            tiny_http::Response::from_string(body)
                .with_header(header("Content-Type", "application/json"))
        }
        (false, "/metrics" | "/status") => {
            tiny_http::Response::from_string("method not allowed\n").with_status_code(405)
        }
        _ => tiny_http::Response::from_string("not found: try /metrics or /status\n")
            .with_status_code(404),
    };
    let _ = req.respond(resp);
}
