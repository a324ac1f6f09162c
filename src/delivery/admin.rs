//! An administrator's queue commands, applied by a running delivery service so that they never race
//! with delivery (`mailroot queue retry | delete | hold | release`, through `server::control`).
//!
//! A change to a message's files is made only while the message is *claimed*: taken out of the
//! schedule and marked in flight, so no delivery thread can take it meanwhile
//! (`Scheduler::claim`). A message a delivery thread is working on cannot be claimed: the change
//! waits as a [`Late`] action that the thread applies when the attempt ends, before the message
//! goes back to the schedule (`Engine::after`). So a message is never delivered twice nor lost
//! because of a command: what the attempt in progress delivered stays delivered, and the command
//! applies to what is left. The caller may wait a while for a late action's result.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::attempt::After;
use super::engine::Engine;
use super::scheduler::{Claim, Retried, Row};
use crate::mailroot::queue::{self, Change};
use crate::mailroot::state::Status;

/// Which messages a command is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    /// One message.
    Id(String),
    /// Every message in the Queue.
    All,
    /// The messages with a pending recipient in this domain.
    Domain(String),
}

/// A change that waits for the attempt in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Due again as soon as the attempt ends.
    Retry,
    /// Held once the attempt ends.
    Hold,
    /// Removed once the attempt ends (with `ndr`: what is pending fails, with a report).
    Delete {
        /// Send a non-delivery report for the recipients still pending.
        ndr: bool,
    },
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Retry => "retried",
            Action::Hold => "held",
            Action::Delete { .. } => "deleted",
        }
    }
}

/// The result of a late action: filled in by the delivery thread, waited for by the command.
#[derive(Debug, Default)]
pub struct Slot {
    text: Mutex<Option<String>>,
    done: Condvar,
}

impl Slot {
    fn fill(&self, text: String) {
        *self.text.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
        self.done.notify_all();
    }

    /// The result, if it came within `wait`.
    pub fn wait(&self, wait: Duration) -> Option<String> {
        let until = Instant::now() + wait;
        let mut t = self.text.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(text) = t.take() {
                return Some(text);
            }
            let left = until.checked_duration_since(Instant::now())?;
            t = self
                .done
                .wait_timeout(t, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A change asked for while the message was in flight.
#[derive(Debug)]
pub struct Late {
    action: Action,
    slot: Arc<Slot>,
}

/// What one command did to one message: a line for the administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The message.
    pub id: String,
    /// What became of it.
    pub text: String,
    /// Whether it changed (false: nothing to do, or not found).
    pub changed: bool,
}

/// How long a command waits for an attempt in progress before it answers that its change will be
/// applied when the attempt ends.
pub const LATE_WAIT: Duration = Duration::from_secs(20);

/// The queue commands of one delivery service (see the module doc).
#[derive(Clone)]
pub struct Admin {
    engine: Arc<Engine>,
}

fn line(id: &str, text: impl Into<String>, changed: bool) -> Line {
    Line {
        id: id.to_string(),
        text: text.into(),
        changed,
    }
}

impl Admin {
    pub(super) fn new(engine: Arc<Engine>) -> Admin {
        Admin { engine }
    }

    /// The messages a delivery thread is working on now.
    pub fn in_flight(&self) -> Vec<String> {
        let s = self.engine.sched.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = s.in_flight().cloned().collect();
        v.sort();
        v
    }

    /// The destination table.
    pub fn destinations(&self) -> Vec<Row> {
        let s = self.engine.sched.lock().unwrap_or_else(|p| p.into_inner());
        s.table()
    }

    /// The identifiers `sel` names, from the Queue folder (held or not as `held` asks; `None`:
    /// both). A single identifier is taken as it is.
    fn ids(&self, sel: &Select, held: Option<bool>) -> Result<Vec<String>, String> {
        let keep = |e: &queue::Entry| held.is_none_or(|h| e.held() == h);
        match sel {
            Select::Id(id) => Ok(vec![id.clone()]),
            Select::All => Ok(queue::entries(&self.engine.store)
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(keep)
                .map(|e| e.id)
                .collect()),
            Select::Domain(d) => Ok(queue::entries(&self.engine.store)
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|e| keep(e) && e.pending_in(d))
                .map(|e| e.id)
                .collect()),
        }
    }

    /// Registers `action` for `id` if it is in flight (returns its slot), or claims it.
    fn claim(&self, id: &str, action: Action) -> Result<Option<Vec<String>>, Arc<Slot>> {
        let mut s = self.engine.sched.lock().unwrap_or_else(|p| p.into_inner());
        match s.claim(id) {
            Claim::InFlight => {
                let slot = Arc::new(Slot::default());
                self.engine
                    .late
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(id.to_string())
                    .or_default()
                    .push(Late {
                        action,
                        slot: slot.clone(),
                    });
                Err(slot)
            }
            Claim::Taken(keys) => Ok(keys),
        }
    }

    /// Gives a claimed message back: due at `due` for its pending recipients' destinations, or
    /// gone from the schedule (`None`).
    fn give_back(&self, id: &str, due: Option<SystemTime>) {
        let after = match due {
            None => After::Done,
            Some(t) => {
                let env = queue::entry(&self.engine.store, id).ok().flatten();
                match env {
                    Some(e) if !e.held() => {
                        let mut keys = match &e.envelope {
                            Ok(env) => self.engine.keys(env, Some(&e.state)),
                            Err(_) => Vec::new(),
                        };
                        // Nothing pending (a report is due): no connection is needed.
                        if keys.is_empty() && e.envelope.is_ok() {
                            keys.push("local".to_string());
                        }
                        After::Again(t, keys)
                    }
                    _ => After::Done,
                }
            }
        };
        let s = self.engine.sched.lock().unwrap_or_else(|p| p.into_inner());
        self.engine.settle(s, id, after);
    }

    fn waited(&self, id: &str, action: Action, slot: &Slot, wait: Duration) -> Line {
        match slot.wait(wait) {
            Some(text) => line(id, text, true),
            None => line(
                id,
                format!(
                    "being delivered now: it will be {} when this attempt ends",
                    action.verb()
                ),
                true,
            ),
        }
    }

    /// Makes the selected messages due now; the dead destinations they wait for (every dead
    /// destination, with [`Select::All`]) are probed at once.
    pub fn retry(&self, sel: &Select) -> Result<Vec<Line>, String> {
        let now = SystemTime::now();
        let e = &self.engine;
        if *sel == Select::All {
            let (n, flying) = {
                let mut s = e.sched.lock().unwrap_or_else(|p| p.into_inner());
                let n = s.retry_all(now);
                let flying: Vec<String> = s.in_flight().cloned().collect();
                let mut late = e.late.lock().unwrap_or_else(|p| p.into_inner());
                for id in &flying {
                    late.entry(id.clone()).or_default().push(Late {
                        action: Action::Retry,
                        slot: Arc::new(Slot::default()),
                    });
                }
                (n, flying)
            };
            let probes = e.endpoints.expire_dead(now);
            e.wake.notify_all();
            let mut out = vec![line(
                "",
                format!(
                    "{n} waiting message(s) due now; {probes} dead next hop(s) probed now; {} in delivery now, due again when their attempt ends",
                    flying.len()
                ),
                true,
            )];
            // Held messages stay held.
            let held = self.ids(&Select::All, Some(true))?.len();
            if held > 0 {
                out.push(line(
                    "",
                    format!("{held} held message(s) stay held (mailroot queue release)"),
                    false,
                ));
            }
            return Ok(out);
        }
        let mut out = Vec::new();
        let mut probed = false;
        for id in self.ids(sel, Some(false))? {
            let r = e
                .sched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retry_now(&id, now);
            out.push(match r {
                Retried::Due => line(&id, "due now", true),
                Retried::Probing => {
                    probed = true;
                    line(&id, "due now; its dead destination is probed now", true)
                }
                Retried::AlreadyDue => line(&id, "due already (waiting for a connection)", false),
                Retried::InFlight => match self.claim(&id, Action::Retry) {
                    Err(_) => line(
                        &id,
                        "being delivered now: due again as soon as this attempt ends",
                        true,
                    ),
                    // It ended meanwhile: claimed; give it back due now.
                    Ok(_) => {
                        self.give_back(&id, Some(now));
                        line(&id, "due now", true)
                    }
                },
                Retried::Unknown => match queue::entry(&e.store, &id).map_err(|e| e.to_string())? {
                    None => line(&id, "no such message in the Queue", false),
                    Some(x) if x.held() => line(
                        &id,
                        "held: release it to deliver it (mailroot queue release)",
                        false,
                    ),
                    // Not scheduled yet (the start-up scan has not reached it): schedule it now.
                    Some(_) => match self.claim(&id, Action::Retry) {
                        Ok(_) => {
                            self.give_back(&id, Some(now));
                            line(&id, "due now", true)
                        }
                        Err(_) => line(
                            &id,
                            "being delivered now: due again as soon as this attempt ends",
                            true,
                        ),
                    },
                },
            });
        }
        if probed {
            e.endpoints.expire_dead(now);
        }
        e.wake.notify_all();
        Ok(out)
    }

    /// Deletes `id`: removed from the Queue, or with `ndr` its pending recipients fail and the
    /// sender gets a non-delivery report. A message being delivered is deleted when its attempt
    /// ends (what that attempt delivered stays delivered); waits up to `wait` for it.
    pub fn delete(&self, id: &str, ndr: bool, wait: Duration) -> Result<Line, String> {
        let action = Action::Delete { ndr };
        match self.claim(id, action) {
            Err(slot) => Ok(self.waited(id, action, &slot, wait)),
            Ok(_) => {
                let r = self.delete_claimed(id, ndr);
                let due = match &r {
                    // With a report due: the next attempt settles it at once.
                    Ok(l) if ndr && l.changed => Some(SystemTime::now()),
                    Ok(_) if !ndr => None,
                    // Nothing was pending, or the change failed: as it was.
                    _ => Some(SystemTime::now()),
                };
                self.give_back(id, due);
                r
            }
        }
    }

    fn delete_claimed(&self, id: &str, ndr: bool) -> Result<Line, String> {
        let store = &self.engine.store;
        let r = if ndr {
            queue::fail_pending(store, id)
        } else {
            queue::remove(store, id)
        }
        .map_err(|e| e.to_string())?;
        let _ = self.engine.take_fresh(id);
        Ok(match (r, ndr) {
            (Change::Missing, _) => line(id, "no such message in the Queue", false),
            (Change::Unchanged, _) => line(id, "nothing pending: it is being settled", false),
            (Change::Made, false) => {
                log::info!("queue: {id} deleted by the administrator");
                line(id, "deleted", true)
            }
            (Change::Made, true) => {
                log::info!(
                    "queue: {id} deleted by the administrator; a non-delivery report goes to its sender"
                );
                line(
                    id,
                    "deleted; a non-delivery report goes to the sender",
                    true,
                )
            }
        })
    }

    /// Holds the selected messages: never attempted, and not ageing toward expiry, until released.
    pub fn hold(&self, sel: &Select, wait: Duration) -> Result<Vec<Line>, String> {
        let mut out = Vec::new();
        for id in self.ids(sel, Some(false))? {
            out.push(match self.claim(&id, Action::Hold) {
                Err(slot) => self.waited(&id, Action::Hold, &slot, wait),
                Ok(_) => {
                    let r = queue::hold(&self.engine.store, &id).map_err(|e| e.to_string());
                    let l = match &r {
                        Ok(Change::Made) => {
                            log::info!("queue: {id} held by the administrator");
                            line(&id, "held", true)
                        }
                        Ok(Change::Unchanged) => line(&id, "held already", false),
                        Ok(Change::Missing) => line(&id, "no such message in the Queue", false),
                        Err(e) => line(&id, format!("not held: {e}"), false),
                    };
                    // Held: out of the schedule; otherwise as before (due now).
                    let due = match r {
                        Ok(Change::Made | Change::Unchanged | Change::Missing) => None,
                        Err(_) => Some(SystemTime::now()),
                    };
                    self.give_back(&id, due);
                    l
                }
            });
        }
        Ok(out)
    }

    /// Releases the selected held messages: due now.
    pub fn release(&self, sel: &Select) -> Result<Vec<Line>, String> {
        let mut out = Vec::new();
        let ids = match sel {
            Select::Id(_) => self.ids(sel, None)?,
            _ => self.ids(sel, Some(true))?,
        };
        for id in ids {
            let Some(entry) = queue::entry(&self.engine.store, &id).map_err(|e| e.to_string())?
            else {
                out.push(line(&id, "no such message in the Queue", false));
                continue;
            };
            if !entry.held() {
                out.push(line(&id, "not held", false));
                continue;
            }
            // Held mail is not in the schedule: the claim only keeps others off it meanwhile.
            if self.claim(&id, Action::Retry).is_err() {
                out.push(line(&id, "being delivered now (it was not held)", false));
                continue;
            }
            let r = queue::release(&self.engine.store, &id).map_err(|e| e.to_string());
            self.give_back(&id, Some(SystemTime::now()));
            out.push(match r {
                Ok(Change::Made) => {
                    log::info!("queue: {id} released by the administrator");
                    line(&id, "released: due now", true)
                }
                Ok(_) => line(&id, "not held", false),
                Err(e) => line(&id, format!("not released: {e}"), false),
            });
        }
        self.engine.wake.notify_all();
        Ok(out)
    }
}

/// Applies the administrator's actions that waited for the attempt of `id`, which ended with
/// `after`; the message is still in flight (no thread can take it). Returns what becomes of it.
pub(super) fn apply_late(engine: &Engine, id: &str, late: Vec<Late>, mut after: After) -> After {
    let now = SystemTime::now();
    for Late { action, slot } in late {
        let keys = match &after {
            After::Done => {
                slot.fill(format!(
                    "the attempt that was in progress settled it (delivered or returned): nothing left to be {}",
                    action.verb()
                ));
                continue;
            }
            After::Again(_, k) | After::Requeue(k) => k.clone(),
        };
        let store = &engine.store;
        let pending = queue::entry(store, id)
            .ok()
            .flatten()
            .map(|e| {
                e.state
                    .recipients
                    .iter()
                    .filter(|r| r.status == Status::Pending)
                    .count()
            })
            .unwrap_or(0);
        match action {
            Action::Retry => {
                after = After::Again(now, keys);
                slot.fill(format!(
                    "due again now (the attempt in progress ended with {pending} recipient(s) pending)"
                ));
            }
            Action::Hold => match queue::hold(store, id) {
                Ok(_) => {
                    log::info!("queue: {id} held by the administrator");
                    after = After::Done;
                    slot.fill(format!(
                        "held (after the attempt in progress, with {pending} recipient(s) pending)"
                    ));
                }
                Err(e) => slot.fill(format!("not held: {e}")),
            },
            Action::Delete { ndr: false } => match queue::remove(store, id) {
                Ok(_) => {
                    log::info!("queue: {id} deleted by the administrator");
                    let _ = engine.take_fresh(id);
                    after = After::Done;
                    slot.fill(format!(
                        "deleted (after the attempt in progress, with {pending} recipient(s) pending)"
                    ));
                }
                Err(e) => slot.fill(format!("not deleted: {e}")),
            },
            Action::Delete { ndr: true } => match queue::fail_pending(store, id) {
                Ok(_) => {
                    log::info!(
                        "queue: {id} deleted by the administrator; a non-delivery report goes to its sender"
                    );
                    // Nothing pending: the next attempt only reports and removes it.
                    after = After::Again(now, vec!["local".to_string()]);
                    slot.fill(format!(
                        "deleted after the attempt in progress; a non-delivery report for {pending} recipient(s) goes to the sender"
                    ));
                }
                Err(e) => slot.fill(format!("not deleted: {e}")),
            },
        }
    }
    after
}
