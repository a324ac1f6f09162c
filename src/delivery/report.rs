//! What becomes of a message once its recipients are settled, or late: the reports to its sender
//! (RFC 3464, built by `dsn`) for failed recipients, delayed ones and those that asked for success
//! notices; Badmail for a report that cannot be returned (a null sender); then the message leaves the
//! queue.

use std::time::SystemTime;

use super::dsn::{Kind, RecipientReport, Report};
use super::engine::Engine;
use crate::id;
use crate::mailroot::badmail;
use crate::mailroot::state::{State, Status};
use crate::smtp::envelope::{Envelope, Recipient};
use crate::smtp::params::{Notify, Ret};
use crate::time::Utc;

fn status_of(reply: &str) -> String {
    let mut words = reply.split(' ');
    let code = words.next().unwrap_or("");
    if let Some(w) = words.next() {
        let p: Vec<&str> = w.split('.').collect();
        if p.len() == 3
            && p.iter()
                .all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
        {
            return w.to_string();
        }
    }
    // "4.4.7 …" written by ourselves, or a bare code.
    let p: Vec<&str> = code.split('.').collect();
    if p.len() == 3 {
        return code.to_string();
    }
    match code.as_bytes().first() {
        Some(b'4') => "4.0.0".into(),
        _ => "5.0.0".into(),
    }
}

/// Whether a next hop's refusal is about what the message carries (its size, its lines, its
/// content), not about the recipient: a report refused so may go again with less of the original.
fn content_refusal(reply: &str) -> bool {
    let code = reply.split(' ').next().unwrap_or("");
    let status = status_of(reply);
    let mut p = status.split('.');
    let (class, subject) = (p.next().unwrap_or(""), p.next().unwrap_or(""));
    let detail = p.next().unwrap_or("");
    if class != "5" {
        return false;
    }
    match (subject, detail) {
        // Message length exceeds a limit; too big for the system; syntax (a line too long); media.
        ("2", "3") | ("3", "4") | ("5", _) | ("6", _) => true,
        // A bare code from a next hop that sends no enhanced status.
        ("0", "0") => matches!(code, "500" | "552" | "554"),
        _ => false,
    }
}

/// A report of ours that holds the whole original message (a `message/rfc822` part), remade with
/// only the original's header section (`text/rfc822-headers`), as RET=HDRS would have made it.
/// `None` for anything else (a report that holds the headers only already, or not ours).
fn headers_only(report: &[u8]) -> Option<Vec<u8>> {
    let head = std::str::from_utf8(super::dsn::header_section(report)).ok()?;
    let b = head.find("boundary=\"9B095B5ADSN=_")? + "boundary=\"".len();
    let boundary = &head[b..b + head[b..].find('"')?];
    let part = format!("--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n");
    let start = memchr::memmem::find(report, part.as_bytes())?;
    let body = start + part.len();
    let end = memchr::memmem::rfind(report, format!("\r\n--{boundary}--").as_bytes())?;
    let original = report.get(body..end)?;
    let mut out = report[..start].to_vec();
    out.extend_from_slice(
        format!("--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n").as_bytes(),
    );
    let headers = super::dsn::header_section(original);
    out.extend_from_slice(headers);
    if !headers.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Some(out)
}

/// Success notices as IIS sends them: "delivered" (subject `(Success)`) for recipients written to the
/// Drop folder, which is final delivery here, and "relayed" (`(Relay)`) for those handed to a next
/// hop that did not take the DSN request over. A Drop delivery has no remote MTA.
fn success_kinds(done: Vec<RecipientReport>) -> Vec<(Kind, Vec<RecipientReport>)> {
    let (delivered, relayed): (Vec<_>, Vec<_>) =
        done.into_iter().partition(|r| r.remote_mta.is_none());
    [(Kind::Delivered, delivered), (Kind::Relayed, relayed)]
        .into_iter()
        .filter(|(_, r)| !r.is_empty())
        .collect()
}

fn report_of(env: &Envelope, state: &State, status: Status, bit: u8) -> Vec<RecipientReport> {
    env.recipients
        .iter()
        .filter(|r| Notify::wants(r.notify, bit))
        .filter_map(|r| {
            state
                .get(&r.address)
                // A next hop that took NOTIFY over reports success itself (RFC 3461 §5.2.2).
                .filter(|s| s.status == status && !(status == Status::Done && s.dsn_passed))
                .map(|s| (r, s))
        })
        .map(|(r, s)| RecipientReport {
            address: r.address.clone(),
            orcpt: r.orcpt.clone(),
            status: if status == Status::Done {
                "2.0.0".into()
            } else {
                status_of(&s.reply)
            },
            diagnostic: if s.reply.is_empty() {
                None
            } else {
                Some(s.reply.clone())
            },
            remote_mta: if s.remote.is_empty() {
                None
            } else {
                Some(s.remote.clone())
            },
        })
        .collect()
}

/// Sends a report to the original sender (and SendNdrTo for failures), committed like any message.
fn send_report(
    engine: &Engine,
    env: &Envelope,
    msg: &[u8],
    kind: Kind,
    qid: &str,
    rcpts: Vec<RecipientReport>,
) {
    let vs = &engine.vs();
    let rid = id::next();
    let report = Report {
        kind,
        reporting_mta: &vs.fqdn,
        postmaster_domain: vs.delivery.masquerade.as_deref().unwrap_or(&vs.fqdn),
        to: &env.sender,
        arrival: Utc::from_system(id::arrival(qid).unwrap_or_else(SystemTime::now)),
        envid: env.envid.as_deref(),
        recipients: rcpts,
        original: msg,
        headers_only: env.ret == Some(Ret::Hdrs),
        id: &rid,
        now: Utc::now(),
    }
    .build();
    let mut to = vec![env.sender.clone()];
    if kind == Kind::Failure
        && let Some(copy) = &vs.delivery.send_ndr_to
        && !to.iter().any(|t| t.eq_ignore_ascii_case(copy))
    {
        to.push(copy.clone());
    }
    let envelope = Envelope::report(
        to.iter()
            .map(|a| Recipient::new(a.clone(), vs.is_local_address(a)))
            .collect(),
    );
    match engine.store.commit_message(&rid, envelope, b"", &report) {
        Ok(_) => log::info!(
            "delivery of {qid}: {kind:?} report {rid} to {}",
            to.join(", ")
        ),
        Err(e) => log::error!("delivery of {qid}: cannot queue the {kind:?} report: {e}"),
    }
}

/// The message is still not delivered at DelayNotificationExpirationTime: a delay warning to the
/// sender for the recipients that asked for one.
pub fn delayed(engine: &Engine, qid: &str, env: &Envelope, msg: &[u8], state: &State) {
    let rcpts = report_of(env, state, Status::Pending, Notify::DELAY);
    if !rcpts.is_empty() {
        send_report(engine, env, msg, Kind::Delay, qid, rcpts);
    }
}

/// Every recipient is done or failed: non-delivery report (or Badmail for a report that cannot be
/// returned), success notifications, then the message leaves the queue.
pub fn finished(engine: &Engine, qid: &str, env: &Envelope, msg: &[u8], state: &State) {
    let failed: Vec<_> = state
        .recipients
        .iter()
        .filter(|r| r.status == Status::Failed)
        .collect();
    if !failed.is_empty() {
        // A report refused for what it carries (a strict next hop's size or line limit, a content
        // filter) goes once more with the original's headers only, before Badmail.
        let retry = if env.sender.is_empty() && failed.iter().all(|f| content_refusal(&f.reply)) {
            headers_only(msg)
        } else {
            None
        };
        if let Some(short) = retry {
            let rid = id::next();
            let sub = env.with_recipients(|r| failed.iter().any(|f| f.address == r.address));
            match engine.store.commit_message(&rid, sub, b"", &short) {
                Ok(_) => log::info!(
                    "delivery of {qid}: the report was refused for its content ({}); sent again as {rid} with the original's headers only",
                    failed[0].reply
                ),
                Err(e) => {
                    log::error!("delivery of {qid}: cannot queue the shorter report: {e}");
                    return;
                }
            }
        } else if env.sender.is_empty() {
            // Never a report about a report: the message goes to Badmail.
            let mut reason = String::from(
                "This message is a delivery status notification that cannot be delivered.\r\n",
            );
            for f in &failed {
                reason.push_str(&format!("{}: {}\r\n", f.address, f.reply));
            }
            let sub = Envelope {
                recipients: env
                    .recipients
                    .iter()
                    .filter(|r| failed.iter().any(|f| f.address == r.address))
                    .cloned()
                    .collect(),
                ..env.clone()
            };
            if let Err(e) = badmail::write(&engine.store, qid, &sub, msg, &reason) {
                log::error!(
                    "delivery of {qid}: cannot write to Badmail: {e}; the message stays queued"
                );
                return;
            }
        } else {
            let rcpts = report_of(env, state, Status::Failed, Notify::FAILURE);
            if !rcpts.is_empty() {
                send_report(engine, env, msg, Kind::Failure, qid, rcpts);
            }
        }
    }
    if !env.sender.is_empty() {
        let ok = report_of(env, state, Status::Done, Notify::SUCCESS);
        for (kind, rcpts) in success_kinds(ok) {
            send_report(engine, env, msg, kind, qid, rcpts);
        }
    }
    if let Err(e) = engine.store.finish(qid) {
        log::error!("delivery of {qid}: cannot remove it from the queue: {e}");
    }
    count_finished(&engine.metrics, qid, state);
}

/// Counts a message that left the Queue: its recipients, and from its arrival (the queue id's time)
/// to now when one of them was delivered.
fn count_finished(m: &crate::metrics::Delivery, qid: &str, state: &State) {
    let done = state
        .recipients
        .iter()
        .filter(|r| r.status == Status::Done)
        .count() as u64;
    let failed = state
        .recipients
        .iter()
        .filter(|r| r.status == Status::Failed)
        .count() as u64;
    m.recipients_delivered.add(done);
    m.recipients_failed.add(failed);
    if failed > 0 {
        m.bounced.inc();
    }
    if done > 0 {
        m.delivered.inc();
        if let Some(age) =
            crate::id::arrival(qid).and_then(|a| SystemTime::now().duration_since(a).ok())
        {
            m.latency.observe(age.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_deliveries_are_delivered_and_next_hops_relayed() {
        let r = |a: &str, remote: Option<&str>| RecipientReport {
            address: a.into(),
            orcpt: None,
            status: "2.0.0".into(),
            diagnostic: None,
            remote_mta: remote.map(str::to_string),
        };
        let kinds = success_kinds(vec![
            r("l@local.test", None),
            r("r@remote.test", Some("mx.remote.test")),
        ]);
        assert_eq!(
            kinds
                .iter()
                .map(|(k, v)| (*k, v.iter().map(|r| r.address.as_str()).collect()))
                .collect::<Vec<(Kind, Vec<&str>)>>(),
            vec![
                (Kind::Delivered, vec!["l@local.test"]),
                (Kind::Relayed, vec!["r@remote.test"])
            ]
        );
        assert_eq!(success_kinds(vec![r("r@x.test", Some("mx"))]).len(), 1);
        assert!(success_kinds(Vec::new()).is_empty());
    }

    #[test]
    fn content_refusals() {
        assert!(content_refusal("500 Line too long"));
        assert!(content_refusal(
            "552 5.3.4 Message size exceeds fixed limit"
        ));
        assert!(content_refusal("554 5.6.0 Message content refused"));
        assert!(content_refusal("550 5.5.2 Syntax error"));
        assert!(content_refusal("554 Transaction failed"));
        assert!(!content_refusal("550 5.1.1 No such user"));
        assert!(!content_refusal("550 5.7.1 Relaying denied"));
        assert!(!content_refusal("452 4.3.4 too big for now"));
        assert!(!content_refusal("550 Mailbox unavailable"));
    }

    #[test]
    fn a_report_is_remade_with_the_headers_only() {
        let original = b"Subject: big\r\nFrom: a@b.test\r\n\r\nthe body\r\n";
        let r = Report {
            kind: Kind::Failure,
            reporting_mta: "mx.local.test",
            postmaster_domain: "local.test",
            to: "a@b.test",
            arrival: Utc::from_unix(1_700_000_000, 0),
            envid: None,
            recipients: vec![RecipientReport {
                address: "x@y.test".into(),
                orcpt: None,
                status: "5.1.1".into(),
                diagnostic: None,
                remote_mta: None,
            }],
            original,
            headers_only: false,
            id: "0123456789ABCDEF0123456",
            now: Utc::from_unix(1_700_000_100, 0),
        };
        let full = r.build();
        let short = headers_only(&full).expect("ours, with the whole original");
        let hdrs = Report {
            headers_only: true,
            ..r
        }
        .build();
        assert_eq!(
            String::from_utf8(short.clone()).unwrap(),
            String::from_utf8(hdrs).unwrap()
        );
        assert!(headers_only(&short).is_none(), "only once");
        assert!(headers_only(original).is_none(), "not a report");
    }

    #[test]
    fn status_codes() {
        assert_eq!(status_of("550 5.1.1 No such user"), "5.1.1");
        assert_eq!(status_of("554 no"), "5.0.0");
        assert_eq!(status_of("451 temporary"), "4.0.0");
        assert_eq!(status_of("4.4.7 delivery time expired"), "4.4.7");
    }
}
