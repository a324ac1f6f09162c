//! The Pickup folder: applications drop RFC 822 files here (System.Net.Mail, CDOSYS, scripts) and
//! mailroot sends them. A file is taken only when it has not changed for PickupSettleTime (and on
//! Windows only when its writer has closed it, since the rename below fails while it is open). Taking
//! it means:
//!
//! 1. claim it by renaming it to `Pickup/<id>.claimed` (atomic; nobody else takes it now),
//! 2. parse it (`pickup_file`) and commit the message to Queue/Drop under the same `<id>` through
//!    `store`, exactly as SMTP mail, or write it to Badmail with the reason,
//! 3. remove the claimed file.
//!
//! Up to 64 files are claimed and queued for the group commit before Pickup waits for them, so a
//! full folder costs a few flushes per batch rather than two per file.
//!
//! After a crash, a `<id>.claimed` file whose `<id>` is already in Queue, Drop or Badmail is removed
//! (step 3 was missed); any other goes back to `Pickup/<id>.eml` (step 2 was missed). So a message is
//! never in Pickup and in Queue at once, and never nowhere. File names in the mailroot come from
//! `id::next()`, never from the dropped file; symbolic links and folders in Pickup are left alone.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::commit::Pending;
use super::pickup_file;
use super::store::Store;
use crate::config::{Live, VirtualServer};
use crate::id;
use crate::smtp::envelope::Envelope;
use crate::smtp::headers::HeaderScan;
use crate::smtp::received;
use crate::time::Utc;

/// How often an idle Pickup folder is looked at.
const POLL: Duration = Duration::from_millis(200);

/// Starts the Pickup thread of a virtual server, committing through `store`, until `stop` is set;
/// each scan reads the settings in `live` (a reload takes effect at the next scan).
pub fn start(
    live: Live,
    store: Store,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("pickup".into())
        .spawn(move || {
            run(&live, &store, &|| {
                stop.load(std::sync::atomic::Ordering::Acquire)
            })
        })
}

/// How often the Pickup folder is swept for a crashed `sendmail`'s temporary files.
const SWEEP: Duration = Duration::from_secs(600);

/// Runs the Pickup loop until `stopping()`.
pub fn run(live: &Live, store: &Store, stopping: &dyn Fn() -> bool) {
    recover(&live.get());
    let mut swept = std::time::Instant::now();
    while !stopping() {
        let n = scan_once(&live.get(), store);
        if swept.elapsed() >= SWEEP {
            sweep(&live.get());
            swept = std::time::Instant::now();
        }
        if n == 0 {
            std::thread::sleep(POLL);
        }
    }
}

/// Removes the temporary files of `sendmail` writers that died before their rename
/// (`submit::is_leftover`): nothing else would ever take them.
pub fn sweep(vs: &VirtualServer) {
    let Ok(dir) = fs::read_dir(&vs.dirs.pickup) else {
        return;
    };
    let now = SystemTime::now();
    for entry in dir.flatten() {
        let name = entry.file_name();
        if name
            .to_str()
            .is_some_and(|n| super::submit::is_leftover(n, now))
        {
            match fs::remove_file(entry.path()) {
                Ok(()) => log::warn!(
                    "pickup: removed {}, left by a sendmail that did not finish",
                    entry.path().display()
                ),
                Err(e) => log::error!("pickup: cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}

/// Finishes what a crash interrupted (see the module doc), and sweeps (see [`sweep`]).
pub fn recover(vs: &VirtualServer) {
    sweep(vs);
    let Ok(dir) = fs::read_dir(&vs.dirs.pickup) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".claimed")) else {
            continue;
        };
        if !id::is_id(stem) {
            continue;
        }
        let committed = [
            vs.dirs.queue.join(format!("{stem}.eml")),
            vs.dirs.drop.join(format!("{stem}.eml")),
            vs.dirs.badmail.join(format!("{stem}.bad")),
        ]
        .iter()
        .any(|p| p.exists());
        let path = entry.path();
        if committed {
            let _ = fs::remove_file(&path);
        } else {
            let back = vs.dirs.pickup.join(format!("{stem}.eml"));
            if let Err(e) = fs::rename(&path, &back) {
                log::error!("pickup: cannot put {} back: {e}", path.display());
            }
        }
    }
}

/// Whether a directory entry is a file we may take (not hidden, not a writer's temporary file, not
/// ours, a regular file and not a link, unchanged for the settle time).
fn eligible(path: &Path, settle: Duration, now: SystemTime) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.starts_with('.') || name.starts_with('~') {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".tmp") || lower.ends_with(".claimed") || lower.ends_with(".part") {
        return false;
    }
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.file_type().is_file() {
        return false;
    }
    match meta.modified() {
        Ok(m) => now
            .duration_since(m)
            .map(|age| age >= settle)
            .unwrap_or(false),
        Err(_) => true,
    }
}

/// Messages queued for the group commit before Pickup waits for them: they share its flushes.
const IN_FLIGHT: usize = 64;

/// Takes every eligible file once. Returns how many were taken.
pub fn scan_once(vs: &VirtualServer, store: &Store) -> usize {
    let Ok(dir) = fs::read_dir(&vs.dirs.pickup) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut files: Vec<PathBuf> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| eligible(p, vs.delivery.pickup_settle, now))
        .collect();
    files.sort();
    let mut n = 0;
    let mut committing = Vec::with_capacity(IN_FLIGHT);
    for f in files {
        match take(vs, store, &f) {
            Taken::No => {}
            Taken::Done => n += 1,
            Taken::Committing(c) => {
                committing.push(c);
                if committing.len() == IN_FLIGHT {
                    n += settle(vs, store, committing.drain(..));
                }
            }
        }
    }
    n + settle(vs, store, committing.drain(..))
}

/// What became of one file.
enum Taken {
    /// Left where it was (someone else has it, or it is still being written).
    No,
    /// Dealt with (sent to Badmail).
    Done,
    /// Its message is queued for the group commit.
    Committing(Committing),
}

/// A claimed file whose message is being committed.
struct Committing {
    pending: Pending,
    claimed: PathBuf,
    original: PathBuf,
    qid: String,
}

/// Waits for the commits; removes each claimed file whose message is safe, gives the others back.
/// Returns how many were taken.
fn settle(vs: &VirtualServer, store: &Store, done: impl Iterator<Item = Committing>) -> usize {
    let mut n = 0;
    for c in done {
        match c.pending.wait() {
            Ok(paths) => {
                let _ = fs::remove_file(&c.claimed);
                n += 1;
                store.metrics().pickup.inc();
                log::info!(
                    "SMTPSVC{}: pickup {} -> {}",
                    vs.instance,
                    c.original.display(),
                    super::store::display_paths(&paths)
                );
            }
            Err(e) => {
                // Give the file back to be tried again.
                log::error!("pickup {}: {e}", c.original.display());
                let _ = fs::rename(&c.claimed, vs.dirs.pickup.join(format!("{}.eml", c.qid)));
            }
        }
    }
    n
}

/// Claims one file and queues its message for the group commit (or sends it to Badmail).
fn take(vs: &VirtualServer, store: &Store, file: &Path) -> Taken {
    let qid = id::next();
    let claimed = vs.dirs.pickup.join(format!("{qid}.claimed"));
    // Fails while a Windows writer still has the file open, or if someone else took it.
    if fs::rename(file, &claimed).is_err() {
        return Taken::No;
    }
    let raw = match read_limited(&claimed, vs) {
        Ok(r) => r,
        Err(reason) => {
            // Never follow what may be a link: a file that cannot be read plainly is recorded
            // empty, with the reason.
            let raw = crate::os::open_plain_file(&claimed)
                .and_then(|mut f| {
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut f, &mut v).map(|_| v)
                })
                .unwrap_or_default();
            to_badmail(store, &qid, &raw, &claimed, &reason, file);
            return Taken::Done;
        }
    };
    match prepare(vs, &qid, &raw) {
        Ok((envelope, trace, message)) => {
            match store.submit_message(&qid, envelope, &trace, &message) {
                Ok(pending) => Taken::Committing(Committing {
                    pending,
                    claimed,
                    original: file.to_path_buf(),
                    qid,
                }),
                Err(e) => {
                    log::error!("pickup {}: {e}", file.display());
                    let _ = fs::rename(&claimed, vs.dirs.pickup.join(format!("{qid}.eml")));
                    Taken::No
                }
            }
        }
        Err(reason) => {
            to_badmail(store, &qid, &raw, &claimed, &reason, file);
            Taken::Done
        }
    }
}

fn read_limited(path: &Path, vs: &VirtualServer) -> Result<Vec<u8>, String> {
    use std::io::Read;
    // Whatever the name now points at, only a plain file is read (a link swapped in after the
    // folder was listed is refused here, not followed).
    let mut f =
        crate::os::open_plain_file(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let len = f
        .metadata()
        .map_err(|e| format!("cannot read the file: {e}"))?
        .len();
    // The file carries X-Sender/X-Receiver lines and maybe dot-stuffing on top of the message.
    let max = vs.max_message_size;
    if max > 0 && len > max.saturating_add(64 * 1024) {
        return Err(format!(
            "The message is {len} bytes; MaxMessageSize is {max}."
        ));
    }
    let mut raw = Vec::with_capacity(len as usize);
    f.read_to_end(&mut raw)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    Ok(raw)
}

fn to_badmail(store: &Store, qid: &str, raw: &[u8], claimed: &Path, reason: &str, original: &Path) {
    let bdr = format!(
        "{}\r\n\r\nPickup file: {}\r\n",
        super::badmail::report(&Envelope::default(), reason).trim_end(),
        original.file_name().and_then(|n| n.to_str()).unwrap_or("?")
    );
    match store.badmail(qid, raw, &bdr) {
        Ok(p) => {
            let _ = fs::remove_file(claimed);
            log::warn!("pickup {}: {reason} -> {}", original.display(), p.display());
        }
        Err(e) => log::error!(
            "pickup {}: {reason}; and Badmail failed: {e}",
            original.display()
        ),
    }
}

type Prepared = (Envelope, Vec<u8>, Vec<u8>);

/// Parses the file and applies the limits of an SMTP transaction: the envelope with each recipient's
/// route decision, the Received header, and the message (with a Message-ID when it had none).
fn prepare(vs: &VirtualServer, qid: &str, raw: &[u8]) -> Result<Prepared, String> {
    let pm = pickup_file::parse(raw, vs.delivery.pickup_unstuff_dots).map_err(|e| e.to_string())?;
    let max = vs.max_message_size;
    if max > 0 && pm.message.len() as u64 > max {
        return Err(format!(
            "The message is {} bytes; MaxMessageSize is {max}.",
            pm.message.len()
        ));
    }
    if pm.envelope.recipients.len() > vs.max_recipients as usize {
        return Err(format!(
            "The message has {} recipients; MaxRecipients is {}.",
            pm.envelope.recipients.len(),
            vs.max_recipients
        ));
    }
    if pm.hops > vs.hop_count {
        return Err(format!(
            "The message has {} Received headers; HopCount is {} (a mail loop).",
            pm.hops, vs.hop_count
        ));
    }
    let mut env = pm.envelope;
    for r in env.recipients.iter_mut() {
        r.local = vs.is_local_address(&r.address);
    }
    let trace = received::pickup(&vs.fqdn, qid, Utc::now());
    let message = if pm.has_message_id {
        pm.message
    } else {
        let mut out = Vec::with_capacity(pm.message.len() + 80);
        let mut h = HeaderScan::new(format!("Message-ID: <{qid}@{}>\r\n", vs.fqdn).into_bytes());
        h.feed(&pm.message, &mut |b| out.extend_from_slice(b));
        h.finish(&mut |b| out.extend_from_slice(b));
        out
    };
    Ok((env, trace, message))
}
