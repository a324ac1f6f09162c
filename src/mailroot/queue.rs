//! The Queue folder as an administrator sees it (`mailroot queue`): each message with its envelope and
//! its delivery state, read from the files; and the changes a queue command makes to one message's
//! files (due now, hold, release, fail what is pending, remove). A change needs the message to
//! itself: it is made with the server stopped, or by delivery while it holds the message
//! (`delivery::admin`), never from two places at once. Each change is durable (the state file is
//! replaced through the store: temporary file, fsync, rename, fsync the folder) before it is reported.

use std::fs;
use std::time::SystemTime;

use super::block;
use super::error::StoreError;
use super::state::{State, Status};
use super::store::Store;
use crate::smtp::envelope::Envelope;

/// The reply recorded for recipients an administrator deletes with a report to the sender.
pub const DELETED_REPLY: &str = "550 5.3.0 deleted from the queue by the administrator";

/// One queued message as its files say.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The queue identifier.
    pub id: String,
    /// Size of `Queue/<id>.eml` in bytes.
    pub size: u64,
    /// Its envelope, or why the block does not read.
    pub envelope: Result<Envelope, String>,
    /// Its delivery state (a fresh one, every recipient pending, before the first attempt).
    pub state: State,
    /// When it arrived (from its identifier).
    pub arrival: Option<SystemTime>,
}

impl Entry {
    /// Whether an administrator holds it.
    pub fn held(&self) -> bool {
        self.state.held()
    }

    /// The addresses still pending.
    pub fn pending(&self) -> impl Iterator<Item = &str> {
        self.state
            .recipients
            .iter()
            .filter(|r| r.status == Status::Pending)
            .map(|r| r.address.as_str())
    }

    /// Whether a pending recipient is in `domain` (case-insensitive).
    pub fn pending_in(&self, domain: &str) -> bool {
        self.pending().any(|a| {
            a.rsplit_once('@')
                .is_some_and(|(_, d)| d.trim_end_matches('>').eq_ignore_ascii_case(domain))
        })
    }
}

/// The messages in Queue, in arrival order. A message that goes away while it is read (delivered)
/// is left out.
pub fn entries(store: &Store) -> Result<Vec<Entry>, StoreError> {
    let mut out = Vec::new();
    for id in store.queued_ids()? {
        if let Some(e) = entry(store, &id)? {
            out.push(e);
        }
    }
    Ok(out)
}

/// One message, `None` when it is not in Queue.
pub fn entry(store: &Store, id: &str) -> Result<Option<Entry>, StoreError> {
    if !crate::id::is_id(id) {
        return Ok(None);
    }
    let Some(envelope) = store.read_queued_envelope(id)? else {
        return Ok(None);
    };
    let envelope = envelope.map_err(|e| e.to_string());
    let size = fs::metadata(store.queue_dir().join(format!("{id}.eml")))
        .map(|m| m.len())
        .unwrap_or(0);
    let state = state_of(store, id, envelope.as_ref().ok())?;
    Ok(Some(Entry {
        id: id.to_string(),
        size,
        envelope,
        state,
        arrival: crate::id::arrival(id),
    }))
}

/// The state of `id`: its file, or a fresh one (every recipient of `envelope` pending). A state
/// file that does not parse counts as fresh, as delivery reads it.
fn state_of(store: &Store, id: &str, envelope: Option<&Envelope>) -> Result<State, StoreError> {
    let fresh = || {
        State::new(
            envelope
                .iter()
                .flat_map(|e| e.recipients.iter())
                .map(|r| r.address.as_str()),
        )
    };
    let mut st = match store.read_state(id)? {
        Some(t) => State::parse(&t).unwrap_or_else(|_| fresh()),
        None => fresh(),
    };
    // Recipients the state does not name yet are pending (as delivery sees them).
    if let Some(env) = envelope {
        for r in &env.recipients {
            if st.get(&r.address).is_none() {
                st.set(&r.address, Status::Pending, "", "");
            }
        }
    }
    Ok(st)
}

/// The whole message: its envelope and the message after the envelope block.
pub fn read(store: &Store, id: &str) -> Result<Option<(Envelope, Vec<u8>)>, StoreError> {
    if !crate::id::is_id(id) {
        return Ok(None);
    }
    let Some(file) = store.read_queued(id)? else {
        return Ok(None);
    };
    match block::read(&file) {
        Ok((env, offset)) => Ok(Some((env, file[offset..].to_vec()))),
        Err(_) => Ok(Some((Envelope::default(), file))),
    }
}

/// What a change found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Made.
    Made,
    /// Nothing to do (already so: held, not held, nothing pending).
    Unchanged,
    /// No such message in Queue.
    Missing,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads `id`'s entry, lets `f` change its state, writes it back when `f` says it changed.
fn change(
    store: &Store,
    id: &str,
    f: impl FnOnce(&mut State) -> bool,
) -> Result<Change, StoreError> {
    let Some(mut e) = entry(store, id)? else {
        return Ok(Change::Missing);
    };
    if !f(&mut e.state) {
        return Ok(Change::Unchanged);
    }
    store.write_state(id, &e.state.to_text())?;
    Ok(Change::Made)
}

/// Makes `id` due now (a held message stays held).
pub fn retry(store: &Store, id: &str) -> Result<Change, StoreError> {
    change(store, id, |st| {
        let was = st.next_attempt;
        st.next_attempt = 0;
        was != 0
    })
}

/// Holds `id`: never attempted, and not ageing toward its expiry, until released.
pub fn hold(store: &Store, id: &str) -> Result<Change, StoreError> {
    change(store, id, |st| {
        if st.held() {
            return false;
        }
        st.hold(now_secs());
        true
    })
}

/// Releases `id`: due now, its time held left out of its age.
pub fn release(store: &Store, id: &str) -> Result<Change, StoreError> {
    change(store, id, |st| {
        if !st.held() {
            return false;
        }
        st.release(now_secs());
        true
    })
}

/// Fails every pending recipient of `id` with [`DELETED_REPLY`] and makes it due now (released if
/// held): its next attempt sends the non-delivery report and removes it.
pub fn fail_pending(store: &Store, id: &str) -> Result<Change, StoreError> {
    change(store, id, |st| {
        let mut n = 0;
        for r in st
            .recipients
            .iter_mut()
            .filter(|r| r.status == Status::Pending)
        {
            r.status = Status::Failed;
            r.reply = DELETED_REPLY.to_string();
            r.remote.clear();
            n += 1;
        }
        st.release(now_secs());
        n > 0
    })
}

/// Removes `id` from Queue (its file and its state), durably.
pub fn remove(store: &Store, id: &str) -> Result<Change, StoreError> {
    if !crate::id::is_id(id) || !store.queue_dir().join(format!("{id}.eml")).exists() {
        return Ok(Change::Missing);
    }
    store.finish(id)?;
    crate::os::sync_dir(store.queue_dir())
        .map_err(|e| StoreError::new("fsync folder", store.queue_dir(), e))?;
    Ok(Change::Made)
}
