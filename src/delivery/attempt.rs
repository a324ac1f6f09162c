//! One delivery attempt of one queued message: read it and its state, route each pending recipient
//! once, send each route's recipients toward it (the Drop folder or a next hop), write the outcomes to
//! the state file before going on, and when nothing is pending any more, hand over to `report`
//! (non-delivery and success reports, Badmail) and remove the message. Returns when the message is due
//! again, if it still is.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use super::cache::Held;
use super::client::{
    Connection, Failure, Login, OutMessage, Outcome, Rcpt, Settings, is_throttle_reply,
};
use super::dns::DnsError;
use super::engine::Engine;
use super::report;
use super::rewrite;
use super::route::{self, Hops, Remote, Route};
use super::scheduler::{Feedback, retry_delay};
use crate::config::OutboundAuth;
use crate::id;
use crate::mailroot::state::{State, Status};
use crate::mailroot::{badmail, block};
use crate::smtp::envelope::{Envelope, Recipient};

/// What becomes of a message after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// Settled and gone from the queue (or gone already).
    Done,
    /// Due again then, for these destinations (the first is the one it waits in).
    Again(SystemTime, Vec<String>),
    /// Throttled by its destination while other connections work: back to the front of its queue
    /// at once, neither an attempt counted nor its state touched.
    Requeue(Vec<String>),
}

/// What became of one route's recipients.
enum RouteResult {
    /// Each recipient has its outcome (delivered, failed, or deferred with a reason).
    Settled,
    /// The next hop throttled the connection while others to it were working: nothing recorded.
    Throttled,
    /// Every next hop is dead until then (the recipients' state says so).
    Dead(SystemTime),
}

/// Runs one attempt for `id` as a job of destination `key`; `held` is an open connection the
/// caller may pass from message to message.
pub fn run(engine: &Engine, qid: &str, key: &str, held: &mut Option<Held>) -> After {
    let store = &engine.store;
    let fresh = engine.take_fresh(qid);
    let file = match store.read_queued(qid) {
        Ok(Some(f)) => f,
        Ok(None) => return After::Done,
        Err(e) => {
            log::error!("delivery: {e}");
            return After::Again(SystemTime::now() + Duration::from_secs(60), Vec::new());
        }
    };
    // A message handed over by the store at its commit comes with its envelope; one found in Queue
    // (a restart, a retry) is read back from its block.
    let parsed = match fresh {
        Some(q) => Ok((q.envelope, q.body_offset)),
        None => block::read(&file),
    };
    let (env, offset) = match parsed {
        Ok(x) => x,
        Err(e) => {
            let reason = format!("The queue file could not be read: {e}.");
            if store
                .badmail(qid, &file, &badmail::report(&Envelope::default(), &reason))
                .is_ok()
            {
                let _ = store.finish(qid);
                return After::Done;
            }
            return After::Again(SystemTime::now() + Duration::from_secs(600), Vec::new());
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

    let settled_before = settled(&state);
    // Route each pending recipient once, grouping them by route.
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
        match route::route(&engine.vs(), &r.address) {
            Route::Local => local.push(r),
            Route::Remote(rem) => match remote.iter_mut().find(|(k, _)| k.key == rem.key) {
                Some((_, v)) => v.push(r),
                None => remote.push((rem, vec![r])),
            },
        }
    }
    if !local.is_empty() {
        let sub = Envelope {
            recipients: local
                .iter()
                .map(|r| Recipient {
                    local: true,
                    ..(*r).clone()
                })
                .collect(),
            ..env.with_recipients(|_| false)
        };
        let new_id = id::next();
        match store.commit_message(&new_id, sub, b"", msg) {
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
    let mut dead_until: Option<SystemTime> = None;
    for (i, (rem, rcpts)) in remote.iter().enumerate() {
        match deliver_remote(engine, qid, &env, msg, rem, rcpts, &mut state, held, key) {
            RouteResult::Settled => {}
            // Only a message with this one route and nothing else done goes back untouched.
            RouteResult::Throttled if last == 1 && local.is_empty() => {
                // What was settled before the throttle (an earlier transaction) must not be sent
                // twice.
                if settled(&state) > settled_before {
                    persist(engine, qid, &state);
                }
                // Others still work with it: back to the front at once. Alone and throttled (a
                // `432` from a route that throttles so): again in a few seconds, not on the retry
                // schedule.
                if rem.out.throttles_with_432() && engine.busy(&rem.key) <= 1 {
                    return After::Again(
                        SystemTime::now() + engine.throttle_wait(&rem.key),
                        vec![rem.key.clone()],
                    );
                }
                return After::Requeue(vec![rem.key.clone()]);
            }
            RouteResult::Throttled => {
                let reply = format!("451 4.4.1 {} throttled the connection", rem.key);
                set_all(&mut state, rcpts, Status::Pending, &reply);
            }
            RouteResult::Dead(until) => {
                dead_until = Some(dead_until.map_or(until, |d| d.max(until)));
            }
        }
        // Outcomes must be on disk before the next step (and the state file is only needed if the
        // message stays in the queue, or more groups follow).
        if i + 1 < last && !state.finished() {
            persist(engine, qid, &state);
        }
    }

    let now = SystemTime::now();
    let arrival = id::arrival(qid).unwrap_or(now);
    // Time an administrator held it does not count toward its expiry.
    let held = Duration::from_secs(state.held_for(unix_secs(now)));
    let age = now
        .duration_since(arrival)
        .unwrap_or(Duration::ZERO)
        .saturating_sub(held);
    let vs = engine.vs();
    let d = &vs.delivery;
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
        report::finished(engine, qid, &env, msg, &state);
        return After::Done;
    }
    state.attempts += 1;
    let mut next = super::scheduler::align(
        now + retry_delay(&d.retry, state.attempts),
        retry_delay(&d.retry, state.attempts),
    );
    // A dead destination is tried again when its dead period ends (one message probes then).
    if let Some(until) = dead_until {
        next = until;
    }
    state.next_attempt = unix_secs(next);
    if age >= d.delay_expire && !state.delay_notified && !env.sender.is_empty() {
        report::delayed(engine, qid, &env, msg, &state);
        state.delay_notified = true;
    }
    persist(engine, qid, &state);
    engine.metrics.deferred.inc();
    // The routes of what is still pending, as decided above: the connections it waits for.
    let waiting = |rcpts: &[&Recipient]| {
        rcpts.iter().any(|r| {
            state
                .get(&r.address)
                .is_some_and(|s| s.status == Status::Pending)
        })
    };
    let mut keys = Vec::new();
    if waiting(&local) {
        keys.push("local".to_string());
    }
    for (rem, rcpts) in &remote {
        if waiting(rcpts) && !keys.contains(&rem.key) {
            keys.push(rem.key.clone());
        }
    }
    After::Again(next, keys)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Recipients no longer pending.
fn settled(state: &State) -> usize {
    state
        .recipients
        .iter()
        .filter(|r| r.status != Status::Pending)
        .count()
}

pub(super) fn persist(engine: &Engine, qid: &str, state: &State) {
    if let Err(e) = engine.store.write_state(qid, &state.to_text()) {
        log::error!("delivery: cannot record the state of {qid}: {e}");
    }
}

/// The addresses to try for `hops`, in order: (host name, address).
fn resolve(engine: &Engine, hops: &Hops) -> Result<Vec<(String, SocketAddr)>, DnsError> {
    match hops {
        // A SmartHost list: every host's addresses, in the list's order; a host whose name does
        // not resolve is passed over while another does.
        Hops::List(list) => {
            let mut all = Vec::new();
            let mut last = None;
            for h in list {
                match resolve(engine, h) {
                    Ok(t) => all.extend(t),
                    Err(e) => last = Some(e),
                }
            }
            match last {
                Some(e) if all.is_empty() => Err(e),
                _ => Ok(all),
            }
        }
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
    let vs = engine.vs();
    let d = &vs.delivery;
    Settings {
        helo: engine.vs().fqdn.clone(),
        timeout: d.remote_timeout,
        connect_timeout: d.connect_timeout,
        transaction_timeout: d.transaction_timeout,
        tls: rem.tls,
        tls_configs: engine.client_tls(&rem.out),
        login: rem.out.auth.as_ref().map(|a| match a {
            OutboundAuth::Password { credentials, only } => Login::Password {
                credentials: credentials.clone(),
                only: *only,
            },
            OutboundAuth::XOAuth2(o) => Login::XOAuth2(engine.tokens.credential(o)),
        }),
        auth_plaintext: d.auth_plaintext,
        throttle_432: rem.out.throttles_with_432(),
        line_limit: d.line_length_limit,
    }
}

/// The sender as it goes out: MasqueradeDomain replaces the domain of a local sender.
fn out_sender(engine: &Engine, sender: &str) -> String {
    match (&engine.vs().delivery.masquerade, sender.rsplit_once('@')) {
        (Some(m), Some((local, domain)))
            if engine.vs().is_local_domain(&domain.to_ascii_lowercase()) =>
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
    job_key: &str,
) -> RouteResult {
    // The route may carry mail as its own mailbox (RewriteSender); only the wire copy changes.
    let sender = rewrite::envelope_sender(&env.sender, rem.out.rewrite_sender.as_deref())
        .unwrap_or_else(|| out_sender(engine, &env.sender));
    let rewritten = match (&rem.out.rewrite_sender, rem.out.rewrite_from_header) {
        (Some(r), true) => rewrite::from_header(msg, r),
        _ => None,
    };
    let data = rewritten.as_deref().unwrap_or(msg);
    let out = OutMessage {
        sender: &sender,
        body: env.body,
        ret: env.ret,
        envid: env.envid.as_deref(),
        data,
        eight_bit: data.iter().any(|b| *b >= 0x80),
    };
    let throttle_432 = rem.out.throttles_with_432();
    // Reuse the connection we hold if it goes to the same destination.
    if held.as_ref().is_some_and(|h| h.key != rem.key)
        && let Some(h) = held.take()
    {
        engine.put_idle(h);
    }
    if held.as_ref().is_some_and(|h| !engine.cache.reusable(h))
        && let Some(h) = held.take()
    {
        h.conn.quit();
    }
    // A retry starts afresh (new lookup, new connection, maybe another host): a cached connection
    // is only for messages on their first attempt.
    if held.is_none() && state.attempts == 0 {
        *held = engine.cache.take_idle(&rem.key);
    }
    let mut rcpts: Vec<&Recipient> = rcpts.to_vec();
    if let Some(h) = held.as_mut() {
        let sent = send_all(engine, qid, h, &out, &rcpts, state, throttle_432);
        if sent.throttled {
            if let Some(h) = held.take() {
                h.conn.quit();
            }
            return throttled(engine, rem, job_key, &rcpts, state);
        }
        if sent.usable {
            // A working connection proves its next hop alive, whatever failed meanwhile.
            engine.endpoints.success(h.conn.addr);
            engine.feedback(&rem.key, Feedback::Delivered);
            return RouteResult::Settled;
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
            return RouteResult::Settled;
        }
    }
    let rcpts = &rcpts[..];
    let settings = settings(engine, rem);
    // The token first: a token endpoint that fails is no reason to open (and count against) the
    // next hop, and the destination backs off until the endpoint answers again.
    if let Some(Login::XOAuth2(cred)) = &settings.login
        && let Err(e) = cred.token()
    {
        return token_failed(
            engine,
            qid,
            rem,
            rcpts,
            state,
            &e.to_string(),
            cred.failures(),
        );
    }
    let mut last_error = String::new();
    let mut all_permanent = true;
    // Dead next hops are skipped; when every one is dead the destination is, until the earliest.
    let mut dead: Option<(SystemTime, String)> = None;
    let mut some_live = false;
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
                set_all(state, rcpts, Status::Failed, &reply);
                log::info!("delivery of {qid}: {reply}");
                return RouteResult::Settled;
            }
            Err(e) => {
                last_error = format!("451 4.4.3 DNS lookup for {} failed: {e}", domain_of(hops));
                log::info!("delivery of {qid}: {last_error}");
                all_permanent = false;
                some_live = true;
                continue;
            }
        };
        if targets.is_empty() {
            last_error = format!("451 4.4.4 no address for {}", domain_of(hops));
            all_permanent = false;
            some_live = true;
            continue;
        }
        for (host, addr) in targets {
            if let Err((until, reason)) = engine.endpoints.usable(addr, SystemTime::now()) {
                if dead.as_ref().is_none_or(|(u, _)| until < *u) {
                    dead = Some((until, reason));
                }
                continue;
            }
            // Never waits: a destination's window keeps its threads within its connections.
            let Some(slot) = engine.cache.slot(&rem.key, engine.limit(&rem.key)) else {
                return throttled(engine, rem, job_key, rcpts, state);
            };
            match Connection::open(addr, &host, &settings) {
                Ok(conn) => {
                    engine.endpoints.success(addr);
                    let mut h = Held::new(rem.key.clone(), conn, slot);
                    if let Some(tls) = &h.conn.tls {
                        log::debug!("delivery of {qid}: {host} [{}] over {tls}", addr.ip());
                    }
                    let sent = send_all(engine, qid, &mut h, &out, rcpts, state, throttle_432);
                    if sent.usable && !sent.throttled {
                        *held = Some(h);
                    } else {
                        h.conn.quit();
                    }
                    if sent.throttled {
                        return throttled(engine, rem, job_key, rcpts, state);
                    }
                    engine.feedback(&rem.key, Feedback::Delivered);
                    return RouteResult::Settled;
                }
                Err(e) if e.kind == Failure::Token => {
                    let failures = match &settings.login {
                        Some(Login::XOAuth2(c)) => c.failures(),
                        _ => 1,
                    };
                    return token_failed(engine, qid, rem, rcpts, state, &e.reason, failures);
                }
                Err(e) if e.kind == Failure::Throttled => {
                    log::info!("delivery of {qid}: {} (throttled)", e.reason);
                    return throttled(engine, rem, job_key, rcpts, state);
                }
                Err(e) => {
                    log::info!("delivery of {qid}: {}", e.reason);
                    all_permanent &= e.permanent;
                    last_error = if e.permanent {
                        format!("550 5.0.0 {}", e.reason)
                    } else {
                        format!("451 4.4.1 {}", e.reason)
                    };
                    if e.permanent {
                        some_live = true;
                        continue;
                    }
                    // Refused while other connections to it work: the window is too wide, and the
                    // next hop is not dead for it.
                    if rem.key == job_key && engine.busy(&rem.key) > 1 {
                        return throttled(engine, rem, job_key, rcpts, state);
                    }
                    match engine.endpoints.failure(addr, &e.reason, SystemTime::now()) {
                        Some(until) => {
                            if dead.as_ref().is_none_or(|(u, _)| until < *u) {
                                dead = Some((until, e.reason.clone()));
                            }
                        }
                        None => some_live = true,
                    }
                    engine.feedback(&rem.key, Feedback::Throttled);
                }
            }
        }
    }
    if !some_live && let Some((until, reason)) = dead {
        let reply = format!(
            "451 4.4.1 every next hop of {} is down until {}: {reason}",
            rem.key,
            crate::time::Utc::from_system(until).rfc5322()
        );
        set_all(state, rcpts, Status::Pending, &reply);
        engine.feedback(&rem.key, Feedback::Dead(until, reason));
        return RouteResult::Dead(until);
    }
    let status = if all_permanent && !last_error.is_empty() {
        Status::Failed
    } else {
        Status::Pending
    };
    if last_error.is_empty() {
        last_error = "451 4.4.1 no next hop could be reached".into();
    }
    set_all(state, rcpts, status, &last_error);
    RouteResult::Settled
}

/// The destination throttled a connection: its window shrinks, and the message goes back to its
/// queue if this job is the destination's (otherwise its recipients wait for the next attempt).
fn throttled(
    engine: &Engine,
    rem: &Remote,
    job_key: &str,
    rcpts: &[&Recipient],
    state: &mut State,
) -> RouteResult {
    engine.feedback(&rem.key, Feedback::Throttled);
    if rem.key == job_key {
        return RouteResult::Throttled;
    }
    let reply = format!("451 4.4.1 {} is busy", rem.key);
    set_all(state, rcpts, Status::Pending, &reply);
    RouteResult::Settled
}

/// No OAuth token: the route's recipients wait, and the destination is dead (one probe, then all)
/// until the next retry time by the number of failed token requests in a row. Never a bounce: the
/// token endpoint's trouble is not the recipient's.
fn token_failed(
    engine: &Engine,
    qid: &str,
    rem: &Remote,
    rcpts: &[&Recipient],
    state: &mut State,
    reason: &str,
    failures: u32,
) -> RouteResult {
    let until = SystemTime::now() + retry_delay(&engine.vs().delivery.retry, failures.max(1));
    let reply = format!("451 4.7.0 {reason}");
    log::warn!("delivery of {qid}: {reason}");
    set_all(state, rcpts, Status::Pending, &reply);
    engine.feedback(&rem.key, Feedback::Dead(until, reason.to_string()));
    RouteResult::Dead(until)
}

/// Records one outcome for every recipient of a route still pending (no remote host said it): one
/// delivered by an earlier transaction of the same attempt keeps its outcome.
fn set_all(state: &mut State, rcpts: &[&Recipient], status: Status, reply: &str) {
    for r in rcpts {
        if state
            .get(&r.address)
            .is_none_or(|s| s.status == Status::Pending)
        {
            state.set(&r.address, status, reply, "");
        }
    }
}

fn domain_of(h: &Hops) -> String {
    match h {
        Hops::Dns { domain, .. } => domain.clone(),
        Hops::Host { hop, .. } => hop.to_string(),
        Hops::List(list) => list.first().map(domain_of).unwrap_or_default(),
    }
}

/// What came of sending a message's recipients over one connection.
struct Sent {
    /// The connection may carry the next message.
    usable: bool,
    /// The next hop answered `432` (with the route's throttle rule): the rest waits.
    throttled: bool,
}

/// Sends to `rcpts` over `h` in transactions of at most MaxRecipients, recording every outcome.
/// With `throttle_432`, a `432` deferral stops the sending: the destination is throttling.
fn send_all(
    engine: &Engine,
    qid: &str,
    h: &mut Held,
    out: &OutMessage<'_>,
    rcpts: &[&Recipient],
    state: &mut State,
    throttle_432: bool,
) -> Sent {
    let max = engine.vs().max_recipients.max(1) as usize;
    let host = h.conn.host.clone();
    let mut todo: Vec<&Recipient> = rcpts.to_vec();
    let mut throttled = false;
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
                    if outcomes.iter().any(|o| matches!(o, Outcome::Delivered(_))) {
                        engine.metrics.bytes_out.add(out.data.len() as u64);
                    }
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
                                throttled |= throttle_432 && is_throttle_reply(&reply);
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
                    return Sent {
                        usable: false,
                        throttled: false,
                    };
                }
            }
            if throttled {
                return Sent {
                    usable: true,
                    throttled,
                };
            }
        }
        if again.is_empty() {
            break;
        }
        todo = again;
    }
    Sent {
        usable: true,
        throttled: false,
    }
}
