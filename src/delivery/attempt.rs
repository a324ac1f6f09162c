//! One delivery attempt of one queued message: read it and its state, send each pending recipient
//! toward its route, write the outcome to the state file before going on, and when nothing is pending
//! any more, send the reports (non-delivery, success) and remove the message. Returns when the message
//! is due again, if it still is.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use super::client::{Connection, OutMessage, Outcome, Rcpt, Settings};
use super::dns::DnsError;
use super::dsn::{Kind, RecipientReport, Report};
use super::engine::{Engine, Held};
use super::route::{self, Hops, Remote, Route};
use super::scheduler::retry_delay;
use crate::mailroot::envelope::{Envelope, Recipient};
use crate::mailroot::state::{State, Status};
use crate::mailroot::store::Folder;
use crate::mailroot::{badmail, id};
use crate::smtp::command::{Notify, Ret};
use crate::time::Utc;

/// Runs one attempt for `id`; `held` is an open connection the caller may pass from message to message.
pub fn run(
    engine: &Engine,
    qid: &str,
    held: &mut Option<Held>,
) -> Option<(SystemTime, Vec<String>)> {
    let store = &engine.store;
    let path = store.queue_file(qid);
    let file = match std::fs::read(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::error!("delivery: cannot read {}: {e}", path.display());
            return Some((SystemTime::now() + Duration::from_secs(60), Vec::new()));
        }
    };
    let (env, offset) = match Envelope::parse_block(&file) {
        Ok(x) => x,
        Err(e) => {
            let reason = format!("The queue file could not be read: {e}.");
            if store
                .badmail(qid, &file, &badmail::report(&Envelope::default(), &reason))
                .is_ok()
            {
                let _ = store.finish(qid);
                return None;
            }
            return Some((SystemTime::now() + Duration::from_secs(600), Vec::new()));
        }
    };
    let msg = &file[offset..];
    let mut state = match store.read_state(qid) {
        Ok(Some(t)) => State::parse(&t).unwrap_or_else(|e| {
            log::warn!("delivery: state of {qid} unreadable ({e}); every recipient not known as done is tried");
            State::new(env.recipients.iter().map(|r| r.address.as_str()))
        }),
        _ => State::new(env.recipients.iter().map(|r| r.address.as_str())),
    };
    for r in &env.recipients {
        if state.get(&r.address).is_none() {
            state.set(&r.address, Status::Pending, "", "");
        }
    }

    // Group pending recipients by route.
    let pending: Vec<&Recipient> = env
        .recipients
        .iter()
        .filter(|r| {
            state
                .get(&r.address)
                .is_some_and(|s| s.status == Status::Pending)
        })
        .collect();
    let mut local: Vec<&Recipient> = Vec::new();
    let mut remote: Vec<(Remote, Vec<&Recipient>)> = Vec::new();
    for r in pending {
        match route::route(&engine.vs, &r.address) {
            Route::Local => local.push(r),
            Route::Remote(rem) => match remote.iter_mut().find(|(k, _)| k.key == rem.key) {
                Some((_, v)) => v.push(r),
                None => remote.push((rem, vec![r])),
            },
        }
    }
    if !local.is_empty() {
        let sub = Envelope {
            recipients: local.iter().map(|r| (*r).clone()).collect(),
            ..env.clone()
        };
        let new_id = id::next();
        match store.commit_message(&new_id, vec![(Folder::Drop, sub.block(true))], b"", msg) {
            Ok(_) => {
                for r in &local {
                    state.set(
                        &r.address,
                        Status::Done,
                        "250 2.0.0 written to the Drop folder",
                        "",
                    );
                }
            }
            Err(e) => {
                log::error!("delivery of {qid} to Drop: {e}");
                for r in &local {
                    state.set(&r.address, Status::Pending, &format!("451 4.3.0 {e}"), "");
                }
            }
        }
    }
    let last = remote.len();
    for (i, (rem, rcpts)) in remote.into_iter().enumerate() {
        deliver_remote(engine, qid, &env, msg, &rem, &rcpts, &mut state, held);
        // Outcomes must be on disk before the next step (and the state file is only needed if the
        // message stays in the queue, or more groups follow).
        if i + 1 < last && !state.finished() {
            persist(engine, qid, &state);
        }
    }

    let now = SystemTime::now();
    let arrival = id::arrival(qid).unwrap_or(now);
    let age = now.duration_since(arrival).unwrap_or(Duration::ZERO);
    let d = &engine.vs.delivery;
    if !state.finished() && age >= d.ndr_expire {
        for r in state
            .recipients
            .iter_mut()
            .filter(|r| r.status == Status::Pending)
        {
            r.status = Status::Failed;
            r.reply = format!(
                "4.4.7 delivery time expired after {} minutes; last error: {}",
                d.ndr_expire.as_secs() / 60,
                if r.reply.is_empty() { "none" } else { &r.reply }
            );
        }
    }
    if state.finished() {
        report_and_remove(engine, qid, &env, msg, &state);
        return None;
    }
    state.attempts += 1;
    let next = super::scheduler::align(
        now + retry_delay(&d.retry, state.attempts),
        retry_delay(&d.retry, state.attempts),
    );
    state.next_attempt = next
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if age >= d.delay_expire && !state.delay_notified && !env.sender.is_empty() {
        notify_delay(engine, qid, &env, msg, &state);
        state.delay_notified = true;
    }
    persist(engine, qid, &state);
    let keys = engine.keys(&env, Some(&state));
    Some((next, keys))
}

fn persist(engine: &Engine, qid: &str, state: &State) {
    if let Err(e) = engine.store.write_state(qid, &state.to_text()) {
        log::error!("delivery: cannot record the state of {qid}: {e}");
    }
}

/// The addresses to try for `hops`, in order: (host name, address).
fn resolve(engine: &Engine, hops: &Hops) -> Result<Vec<(String, SocketAddr)>, DnsError> {
    match hops {
        Hops::Host { hop, port } => {
            if hop.literal {
                let ip = hop.host.parse().map_err(|_| {
                    DnsError::Temporary(format!("`{}` is not an address", hop.host))
                })?;
                return Ok(vec![(hop.host.clone(), SocketAddr::new(ip, *port))]);
            }
            let ips = engine.dns.ips(&hop.host)?;
            Ok(ips
                .into_iter()
                .map(|ip| (hop.host.clone(), SocketAddr::new(ip, *port)))
                .collect())
        }
        Hops::Dns { domain, port } => {
            let targets = engine.dns.targets(domain)?;
            Ok(targets
                .into_iter()
                .flat_map(|t| {
                    let host = t.host.clone();
                    t.addrs
                        .into_iter()
                        .map(move |ip| (host.clone(), SocketAddr::new(ip, *port)))
                })
                .collect())
        }
    }
}

fn settings(engine: &Engine, rem: &Remote) -> Settings {
    let d = &engine.vs.delivery;
    Settings {
        helo: engine.vs.fqdn.clone(),
        timeout: d.remote_timeout,
        tls: rem.tls,
        tls_configs: engine.tls.clone(),
        credentials: rem.credentials.clone(),
        auth_plaintext: d.auth_plaintext,
    }
}

/// The sender as it goes out: MasqueradeDomain replaces the domain of a local sender.
fn out_sender(engine: &Engine, sender: &str) -> String {
    match (&engine.vs.delivery.masquerade, sender.rsplit_once('@')) {
        (Some(m), Some((local, domain)))
            if engine.vs.is_local_domain(&domain.to_ascii_lowercase()) =>
        {
            format!("{local}@{m}")
        }
        _ => sender.to_string(),
    }
}

#[allow(clippy::too_many_arguments)]
fn deliver_remote(
    engine: &Engine,
    qid: &str,
    env: &Envelope,
    msg: &[u8],
    rem: &Remote,
    rcpts: &[&Recipient],
    state: &mut State,
    held: &mut Option<Held>,
) {
    let sender = out_sender(engine, &env.sender);
    let out = OutMessage {
        sender: &sender,
        body: env.body,
        ret: env.ret,
        envid: env.envid.as_deref(),
        data: msg,
        eight_bit: msg.iter().any(|b| *b >= 0x80),
    };
    // Reuse the connection we hold if it goes to the same destination.
    if held.as_ref().is_some_and(|h| h.key != rem.key)
        && let Some(h) = held.take()
    {
        engine.put_idle(h);
    }
    if held
        .as_ref()
        .is_some_and(|h| h.conn.sent >= engine.vs.delivery.max_batched || !h.conn.healthy)
        && let Some(h) = held.take()
    {
        h.conn.quit();
    }
    // A retry starts afresh (new lookup, new connection, maybe another host): a cached connection
    // is only for messages on their first attempt.
    if held.is_none() && state.attempts == 0 {
        *held = engine.take_idle(&rem.key);
    }
    let mut rcpts: Vec<&Recipient> = rcpts.to_vec();
    if let Some(h) = held.as_mut() {
        if send_all(engine, qid, h, &out, &rcpts, state) {
            return;
        }
        // The reused connection failed (the server may have closed it while idle): what is still
        // pending goes over a new connection.
        *held = None;
        rcpts.retain(|r| {
            state
                .get(&r.address)
                .is_some_and(|s| s.status == Status::Pending)
        });
        if rcpts.is_empty() {
            return;
        }
    }
    let rcpts = &rcpts[..];
    let settings = settings(engine, rem);
    let mut last_error = String::new();
    let mut all_permanent = true;
    let mut hop_sets = vec![&rem.primary];
    if let Some(f) = &rem.fallback {
        hop_sets.push(f);
    }
    for hops in hop_sets {
        let targets = match resolve(engine, hops) {
            Ok(t) => t,
            Err(e) if e.is_permanent() && rem.fallback.is_none() => {
                let reply = match e {
                    DnsError::NullMx => format!(
                        "556 5.1.10 {}: the domain accepts no mail (null MX)",
                        domain_of(hops)
                    ),
                    _ => format!("550 5.1.2 {}: no such domain ({e})", domain_of(hops)),
                };
                for r in rcpts {
                    state.set(&r.address, Status::Failed, &reply, "");
                }
                log::info!("delivery of {qid}: {reply}");
                return;
            }
            Err(e) => {
                last_error = format!("451 4.4.3 DNS lookup for {} failed: {e}", domain_of(hops));
                log::info!("delivery of {qid}: {last_error}");
                all_permanent = false;
                continue;
            }
        };
        if targets.is_empty() {
            last_error = format!("451 4.4.4 no address for {}", domain_of(hops));
            all_permanent = false;
            continue;
        }
        let Some(slot) = engine.slot(&rem.key) else {
            last_error = "451 4.3.2 delivery stopping".into();
            all_permanent = false;
            break;
        };
        let mut slot = Some(slot);
        for (host, addr) in targets {
            match Connection::open(addr, &host, &settings) {
                Ok(conn) => {
                    let Some(s) = slot.take() else { break };
                    let mut h = Held::new(rem.key.clone(), conn, s);
                    if let Some(tls) = &h.conn.tls {
                        log::debug!("delivery of {qid}: {host} [{}] over {tls}", addr.ip());
                    }
                    if send_all(engine, qid, &mut h, &out, rcpts, state) {
                        *held = Some(h);
                    } else {
                        h.conn.quit();
                    }
                    return;
                }
                Err(e) => {
                    log::info!("delivery of {qid}: {}", e.reason);
                    all_permanent &= e.permanent;
                    last_error = if e.permanent {
                        format!("550 5.0.0 {}", e.reason)
                    } else {
                        format!("451 4.4.1 {}", e.reason)
                    };
                }
            }
        }
    }
    let status = if all_permanent && !last_error.is_empty() {
        Status::Failed
    } else {
        Status::Pending
    };
    if last_error.is_empty() {
        last_error = "451 4.4.1 no next hop could be reached".into();
    }
    for r in rcpts {
        state.set(&r.address, status, &last_error, "");
    }
}

fn domain_of(h: &Hops) -> String {
    match h {
        Hops::Dns { domain, .. } => domain.clone(),
        Hops::Host { hop, .. } => hop.to_string(),
    }
}

/// Sends to `rcpts` over `h` in transactions of at most MaxRecipients, recording every outcome.
/// Returns whether the connection is still usable.
fn send_all(
    engine: &Engine,
    qid: &str,
    h: &mut Held,
    out: &OutMessage<'_>,
    rcpts: &[&Recipient],
    state: &mut State,
) -> bool {
    let max = engine.vs.max_recipients.max(1) as usize;
    let host = h.conn.host.clone();
    let mut todo: Vec<&Recipient> = rcpts.to_vec();
    // One extra round for recipients the server deferred with 452 (too many recipients): IIS opens
    // a new transaction at once for the rest.
    for round in 0..2 {
        let mut again = Vec::new();
        for (n, chunk) in todo.chunks(max).enumerate() {
            // Outcomes of the previous transaction go to disk before the next one starts.
            if n > 0 {
                persist(engine, qid, state);
            }
            let list: Vec<Rcpt<'_>> = chunk
                .iter()
                .map(|r| Rcpt {
                    address: &r.address,
                    notify: r.notify,
                    orcpt: r.orcpt.as_deref(),
                })
                .collect();
            match h.conn.send(out, &list) {
                Ok(outcomes) => {
                    for (r, o) in chunk.iter().zip(outcomes) {
                        match o {
                            Outcome::Delivered(reply) => {
                                log::info!("delivery of {qid} to {}: {host}: {reply}", r.address);
                                state.set(&r.address, Status::Done, &reply, &host);
                                if h.conn.offers_dsn() && (r.notify.is_some() || r.orcpt.is_some())
                                {
                                    state.set_dsn_passed(&r.address);
                                }
                            }
                            Outcome::Failed(reply) => {
                                log::info!(
                                    "delivery of {qid} to {} failed: {host}: {reply}",
                                    r.address
                                );
                                state.set(&r.address, Status::Failed, &reply, &host);
                            }
                            Outcome::Deferred(reply) => {
                                log::info!(
                                    "delivery of {qid} to {} deferred: {host}: {reply}",
                                    r.address
                                );
                                if round == 0 && reply.starts_with("452") {
                                    again.push(*r);
                                }
                                state.set(&r.address, Status::Pending, &reply, &host);
                            }
                        }
                    }
                }
                Err(e) => {
                    log::info!("delivery of {qid}: connection to {host} failed: {e}");
                    for r in chunk {
                        if state
                            .get(&r.address)
                            .is_some_and(|s| s.status == Status::Pending)
                        {
                            state.set(
                                &r.address,
                                Status::Pending,
                                &format!("451 4.4.2 connection to {host} failed: {e}"),
                                &host,
                            );
                        }
                    }
                    return false;
                }
            }
        }
        if again.is_empty() {
            break;
        }
        todo = again;
    }
    true
}

/// Whether a recipient's NOTIFY asks for `bit` (no NOTIFY: failures and delays, as RFC 3461 §4.1).
fn wants(notify: Option<Notify>, bit: u8) -> bool {
    match notify {
        None => bit == Notify::FAILURE || bit == Notify::DELAY,
        Some(n) => n.0 & Notify::NEVER == 0 && n.0 & bit != 0,
    }
}

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

fn report_of(env: &Envelope, state: &State, status: Status, bit: u8) -> Vec<RecipientReport> {
    env.recipients
        .iter()
        .filter(|r| wants(r.notify, bit))
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
    let vs = &engine.vs;
    let rid = id::next();
    let report = Report {
        kind,
        reporting_mta: &vs.fqdn,
        postmaster_domain: vs.delivery.masquerade.as_deref().unwrap_or(&vs.fqdn),
        to: &env.sender,
        received_from: None,
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
    let mut parts = Vec::new();
    for local in [false, true] {
        let recipients: Vec<Recipient> = to
            .iter()
            .filter(|a| matches!(route::route(vs, a), Route::Local) == local)
            .map(|a| Recipient {
                address: a.clone(),
                local,
                notify: None,
                orcpt: None,
            })
            .collect();
        if !recipients.is_empty() {
            let e = Envelope {
                sender: String::new(),
                recipients,
                ..Default::default()
            };
            parts.push((
                if local { Folder::Drop } else { Folder::Queue },
                e.block(local),
            ));
        }
    }
    match engine.store.commit_message(&rid, parts, b"", &report) {
        Ok(_) => log::info!(
            "delivery of {qid}: {kind:?} report {rid} to {}",
            to.join(", ")
        ),
        Err(e) => log::error!("delivery of {qid}: cannot queue the {kind:?} report: {e}"),
    }
}

fn notify_delay(engine: &Engine, qid: &str, env: &Envelope, msg: &[u8], state: &State) {
    let rcpts = report_of(env, state, Status::Pending, Notify::DELAY);
    if !rcpts.is_empty() {
        send_report(engine, env, msg, Kind::Delay, qid, rcpts);
    }
}

/// Every recipient is done or failed: non-delivery report (or Badmail for a report that cannot be
/// returned), success notifications, then the message leaves the queue.
fn report_and_remove(engine: &Engine, qid: &str, env: &Envelope, msg: &[u8], state: &State) {
    let failed: Vec<_> = state
        .recipients
        .iter()
        .filter(|r| r.status == Status::Failed)
        .collect();
    if !failed.is_empty() {
        if env.sender.is_empty() {
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
        if !ok.is_empty() {
            send_report(engine, env, msg, Kind::Relayed, qid, ok);
        }
    }
    if let Err(e) = engine.store.finish(qid) {
        log::error!("delivery of {qid}: cannot remove it from the queue: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_rules() {
        assert!(
            wants(None, Notify::FAILURE)
                && wants(None, Notify::DELAY)
                && !wants(None, Notify::SUCCESS)
        );
        assert!(!wants(Some(Notify(Notify::NEVER)), Notify::FAILURE));
        assert!(wants(Some(Notify(Notify::SUCCESS)), Notify::SUCCESS));
        assert!(!wants(Some(Notify(Notify::SUCCESS)), Notify::FAILURE));
    }

    #[test]
    fn status_codes() {
        assert_eq!(status_of("550 5.1.1 No such user"), "5.1.1");
        assert_eq!(status_of("554 no"), "5.0.0");
        assert_eq!(status_of("451 temporary"), "4.0.0");
        assert_eq!(status_of("4.4.7 delivery time expired"), "4.4.7");
    }
}
