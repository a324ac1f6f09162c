//! Group commit: many messages' commits share one flush.
//!
//! A message is durable when its file's bytes are on disk, its rename into Queue or Drop is on disk,
//! and in that order. Done one message at a time that costs two device flushes per message (fsync the
//! file, fsync the folder), and a 2-core box flushes a thousand or two times a second, so twenty
//! sessions would queue behind each other's flushes. Instead every session queues its finished
//! temporary file with the mailroot's [`Committer`] and waits. One waiting session at a time is the
//! *leader*: it takes everything queued as one batch and, for the whole batch:
//!
//! 1. makes the files' bytes durable: each file's `fdatasync` for a small batch; for a larger one a
//!    single `syncfs` of the volume (Linux) followed by an fsync of SortTemp, so that file systems
//!    without a journal also flush the inodes `syncfs` wrote last; elsewhere each file's flush;
//! 2. renames each file into its folder, in the order its message gave (the commit point);
//! 3. fsyncs each destination folder once;
//!
//! and only then answers every message of the batch, so each session can say 250. Whatever queued
//! while it was flushing becomes the next batch, led by one of its waiting sessions. A lone session
//! leads its own commit at once: no hand-over to another thread, whose wake-up on an idle core costs
//! more than a tenth of a commit. The protocol per message is the one `store` always had (write,
//! flush, rename, flush the folder, then 250); only the flushes are shared. A failure at any step
//! fails just the messages it concerns (or, for a shared flush, falls back to flushing each file),
//! removes what they left behind, and their sessions answer 451.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::error::StoreError;

/// Most messages in one batch: bounds how long the first of them waits behind the others' renames.
const MAX_BATCH: usize = 256;

/// From this many files on, one volume flush is cheaper than a flush per file.
const VOLUME_FLUSH_FROM: usize = 3;

/// Run once a message is durable, before its waiter hears so (the store hands a new Queue message to
/// delivery with it, so a client that hears 250 and looks at once finds it scheduled).
pub type OnDurable = Box<dyn FnOnce() + Send>;

/// One file of a message: written and flushed to the kernel, not yet durable.
#[derive(Debug)]
pub struct Staged {
    /// The temporary file in SortTemp.
    pub temp: PathBuf,
    /// Its open handle, for the per-file flush.
    pub file: File,
    /// Where it goes (`Queue/<id>.eml`, `Drop/<id>.eml`).
    pub dest: PathBuf,
}

/// Where one message's answer goes: its ticket and its waiter's wake-up.
struct Reply {
    ticket: u64,
    wake: Arc<Condvar>,
}

/// One message's commit: its files, renamed in order, and where its answer goes.
struct Job {
    files: Vec<Staged>,
    reply: Reply,
    /// What to run once the message is durable.
    on_durable: Option<OnDurable>,
}

/// Everything under the committer's one lock.
#[derive(Default)]
struct State {
    queue: Vec<Job>,
    /// A leader is committing a batch (or has been chosen and is waking up).
    leading: bool,
    /// The waiter chosen to lead next.
    next_leader: Option<u64>,
    /// Tickets whose owners are waiting in [`Pending::wait`].
    waiting: HashSet<u64>,
    /// Answers not yet collected.
    done: HashMap<u64, Result<(), StoreError>>,
    next_ticket: u64,
    /// Batches committed (for the tests and the debug log).
    batches: u64,
}

struct Shared {
    state: Mutex<State>,
    sort_temp: PathBuf,
    /// Batches and their sizes, for the metrics.
    metrics: Arc<crate::metrics::Mailroot>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The group commit of one mailroot. Clones share it.
#[derive(Clone)]
pub struct Committer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Committer")
    }
}

/// A queued commit; [`Pending::wait`] returns once it is durable or failed. Dropping it waits too, so
/// a message is never left half committed.
pub struct Pending {
    shared: Arc<Shared>,
    ticket: u64,
    wake: Arc<Condvar>,
    finals: Vec<PathBuf>,
    collected: bool,
}

impl Committer {
    /// The group commit for the mailroot whose temporary files are in `sort_temp`.
    pub fn new(sort_temp: PathBuf) -> Committer {
        Committer::with_metrics(sort_temp, Arc::default())
    }

    /// The same, counting its batches into `metrics`.
    pub fn with_metrics(sort_temp: PathBuf, metrics: Arc<crate::metrics::Mailroot>) -> Committer {
        Committer {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                sort_temp,
                metrics,
            }),
        }
    }

    /// Queues `files` (one message); `on_durable` runs once it is durable. Nothing is flushed until
    /// someone waits: a caller with several messages queues them all, then waits.
    pub fn submit(&self, files: Vec<Staged>, on_durable: Option<OnDurable>) -> Pending {
        let wake = Arc::new(Condvar::new());
        let finals = files.iter().map(|s| s.dest.clone()).collect();
        let mut st = self.shared.lock();
        st.next_ticket += 1;
        let ticket = st.next_ticket;
        st.queue.push(Job {
            files,
            reply: Reply {
                ticket,
                wake: wake.clone(),
            },
            on_durable,
        });
        drop(st);
        Pending {
            shared: self.shared.clone(),
            ticket,
            wake,
            finals,
            collected: false,
        }
    }

    /// Batches committed so far.
    pub fn batches(&self) -> u64 {
        self.shared.lock().batches
    }
}

impl Pending {
    /// Waits for the commit, leading batches when it is this waiter's turn. `Ok` carries the final
    /// paths: the message is on disk in its folders.
    pub fn wait(mut self) -> Result<Vec<PathBuf>, StoreError> {
        self.collected = true;
        let r = collect(&self.shared, self.ticket, &self.wake);
        r.map(|()| std::mem::take(&mut self.finals))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.collected {
            let _ = collect(&self.shared, self.ticket, &self.wake);
        }
    }
}

fn collect(shared: &Shared, ticket: u64, wake: &Condvar) -> Result<(), StoreError> {
    let mut st = shared.lock();
    st.waiting.insert(ticket);
    loop {
        if let Some(r) = st.done.remove(&ticket) {
            st.waiting.remove(&ticket);
            return r;
        }
        if !st.leading || st.next_leader == Some(ticket) {
            st.leading = true;
            st.next_leader = None;
            st = lead(shared, st);
            continue;
        }
        st = wake.wait(st).unwrap_or_else(|p| p.into_inner());
    }
}

/// Commits one batch of what is queued, answers it, and hands the lead to a waiter of what queued
/// meanwhile (or gives it up).
fn lead<'a>(shared: &'a Shared, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
    let n = st.queue.len().min(MAX_BATCH);
    let batch: Vec<Job> = st.queue.drain(..n).collect();
    st.batches += 1;
    drop(st);
    shared.metrics.commit_batches.observe(n as f64);
    let unwinding = Unwinding {
        shared,
        tickets: batch
            .iter()
            .map(|j| (j.reply.ticket, j.reply.wake.clone()))
            .collect(),
    };
    let answers = commit_batch(batch, &shared.sort_temp);
    std::mem::forget(unwinding);
    let mut st = shared.lock();
    for (reply, r) in answers {
        st.done.insert(reply.ticket, r);
        reply.wake.notify_one();
    }
    let next = st
        .queue
        .iter()
        .find(|j| st.waiting.contains(&j.reply.ticket))
        .map(|j| (j.reply.ticket, j.reply.wake.clone()));
    match next {
        Some((ticket, wake)) => {
            st.next_leader = Some(ticket);
            wake.notify_one();
        }
        // Nobody waits for what is queued (yet): its owner leads when it comes to wait.
        None => st.leading = false,
    }
    st
}

/// Armed while a leader commits: should the commit panic (a bug), its messages are answered with an
/// error and the lead is given up, so the sessions behind it are not left waiting for ever.
struct Unwinding<'a> {
    shared: &'a Shared,
    tickets: Vec<(u64, Arc<Condvar>)>,
}

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        for (ticket, wake) in self.tickets.drain(..) {
            st.done.insert(
                ticket,
                Err(StoreError {
                    op: "commit",
                    path: self.shared.sort_temp.clone(),
                    source: std::io::Error::other("the commit failed unexpectedly"),
                }),
            );
            wake.notify_one();
        }
        st.leading = false;
        st.next_leader = None;
        // Someone still waiting for a queued message must take the lead now.
        let waiting: Vec<Arc<Condvar>> = st
            .queue
            .iter()
            .filter(|j| st.waiting.contains(&j.reply.ticket))
            .map(|j| j.reply.wake.clone())
            .collect();
        drop(st);
        for w in waiting {
            w.notify_one();
        }
    }
}

/// Runs the three steps of the module doc over `batch`; returns every job's answer.
fn commit_batch(batch: Vec<Job>, sort_temp: &Path) -> Vec<(Reply, Result<(), StoreError>)> {
    let files: usize = batch.iter().map(|j| j.files.len()).sum();
    log::debug!("commit: {} message(s), {files} file(s)", batch.len());
    let mut answers = Vec::with_capacity(batch.len());

    // 1. The bytes. A failed shared flush says nothing about which file is at fault: flush each.
    let shared = files >= VOLUME_FLUSH_FROM
        && batch
            .first()
            .and_then(|j| j.files.first())
            .is_some_and(|s| crate::os::sync_volume(&s.file).is_ok())
        && crate::os::sync_dir(sort_temp).is_ok();
    let mut live: Vec<Job> = Vec::with_capacity(batch.len());
    for job in batch {
        let flushed = if shared {
            Ok(())
        } else {
            job.files.iter().try_for_each(|s| {
                s.file.sync_data().map_err(|e| StoreError {
                    op: "fsync",
                    path: s.temp.clone(),
                    source: e,
                })
            })
        };
        match flushed {
            Ok(()) => live.push(job),
            Err(e) => answers.push(fail(job, e, 0)),
        }
    }

    // 2. The renames, each message's in its own order.
    let mut renamed: Vec<Job> = Vec::with_capacity(live.len());
    for job in live {
        match rename_all(&job.files) {
            Ok(()) => renamed.push(job),
            Err((e, done)) => answers.push(fail(job, e, done)),
        }
    }

    // 3. The folders, each once. A folder that cannot be flushed fails the messages renamed into it.
    let mut dirs: Vec<(&Path, Option<std::io::Error>)> = Vec::new();
    for s in renamed.iter().flat_map(|j| &j.files) {
        if let Some(dir) = s.dest.parent()
            && !dirs.iter().any(|(d, _)| *d == dir)
        {
            dirs.push((dir, crate::os::sync_dir(dir).err()));
        }
    }
    let mut broken_dirs = Vec::with_capacity(renamed.len());
    for job in &renamed {
        let broken = job.files.iter().find_map(|s| {
            dirs.iter()
                .find(|(d, e)| e.is_some() && Some(*d) == s.dest.parent())
                .and_then(|(d, e)| e.as_ref().map(|e| (d, e)))
        });
        broken_dirs.push(broken.map(|(d, e)| StoreError {
            op: "fsync folder",
            path: d.to_path_buf(),
            source: std::io::Error::new(e.kind(), e.to_string()),
        }));
    }
    drop(dirs);
    for (mut job, broken) in renamed.into_iter().zip(broken_dirs) {
        match broken {
            Some(e) => {
                let n = job.files.len();
                answers.push(fail(job, e, n));
            }
            None => {
                // Delivery first: a session that hears 250 and asks at once finds it queued.
                if let Some(f) = job.on_durable.take() {
                    f();
                }
                answers.push((job.reply, Ok(())));
            }
        }
    }
    answers
}

/// Renames every file of one message; on failure, how many were renamed before it.
fn rename_all(files: &[Staged]) -> Result<(), (StoreError, usize)> {
    for (i, s) in files.iter().enumerate() {
        if let Err(e) = fs::rename(&s.temp, &s.dest) {
            return Err((
                StoreError {
                    op: "rename into",
                    path: s.dest.clone(),
                    source: e,
                },
                i,
            ));
        }
    }
    Ok(())
}

/// A job's answer `e`, after removing its files: the first `renamed` from their folders (nobody was
/// told they are safe), the rest from SortTemp.
fn fail(job: Job, e: StoreError, renamed: usize) -> (Reply, Result<(), StoreError>) {
    discard(&job.files, renamed);
    (job.reply, Err(e))
}

fn discard(files: &[Staged], renamed: usize) {
    for (i, s) in files.iter().enumerate() {
        let _ = fs::remove_file(if i < renamed { &s.dest } else { &s.temp });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    struct Dirs {
        root: PathBuf,
        temp: PathBuf,
        queue: PathBuf,
    }

    fn dirs(name: &str) -> Dirs {
        let root =
            std::env::temp_dir().join(format!("mailroot-commit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let d = Dirs {
            temp: root.join("SortTemp"),
            queue: root.join("Queue"),
            root,
        };
        fs::create_dir_all(&d.temp).unwrap();
        fs::create_dir_all(&d.queue).unwrap();
        d
    }

    fn staged(d: &Dirs, name: &str, dest_dir: &Path) -> Staged {
        let temp = d.temp.join(format!("{name}.tmp"));
        let mut file = File::create(&temp).unwrap();
        file.write_all(name.as_bytes()).unwrap();
        Staged {
            temp,
            file,
            dest: dest_dir.join(format!("{name}.eml")),
        }
    }

    /// Runs `f` on a thread and fails the test if it takes longer than a (generous) bound, so a lost
    /// wake-up shows as a failure rather than a hung test run.
    fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the commits did not finish within 30 s")
    }

    /// Messages queued before anyone waits are one batch: the first waiter leads it, the others find
    /// their answers ready; the scheduler hears of each.
    #[test]
    fn what_gathers_is_committed_as_one_batch() {
        let d = dirs("batch");
        let c = Committer::new(d.temp.clone());
        let told = Arc::new(AtomicUsize::new(0));
        let pending: Vec<Pending> = (0..10)
            .map(|i| {
                let id = format!("m{i}");
                let files = vec![staged(&d, &id, &d.queue)];
                let (t, dest) = (told.clone(), files[0].dest.clone());
                let on_durable: OnDurable = Box::new(move || {
                    assert!(dest.exists(), "renamed before delivery hears of it");
                    t.fetch_add(1, Ordering::SeqCst);
                });
                c.submit(files, Some(on_durable))
            })
            .collect();
        for (i, p) in pending.into_iter().enumerate() {
            let finals = p.wait().unwrap();
            assert_eq!(fs::read(&finals[0]).unwrap(), format!("m{i}").as_bytes());
        }
        assert_eq!(c.batches(), 1);
        assert_eq!(told.load(Ordering::SeqCst), 10);
        assert_eq!(fs::read_dir(&d.temp).unwrap().count(), 0);
        let _ = fs::remove_dir_all(&d.root);
    }

    /// Many threads committing at once: every one is answered and on disk, and the lead passes
    /// from waiter to waiter without a lost wake-up.
    #[test]
    fn concurrent_waiters_are_all_answered() {
        let d = dirs("concurrent");
        let c = Committer::new(d.temp.clone());
        let (temp, queue) = (d.temp.clone(), d.queue.clone());
        let c2 = c.clone();
        let n = bounded(move || {
            let dd = Dirs {
                root: PathBuf::new(),
                temp,
                queue,
            };
            std::thread::scope(|s| {
                for t in 0..8 {
                    let (c, dd) = (&c2, &dd);
                    s.spawn(move || {
                        for k in 0..25 {
                            let f = staged(dd, &format!("t{t}-{k}"), &dd.queue);
                            let got = c.submit(vec![f], None).wait().unwrap();
                            assert!(got[0].exists());
                        }
                    });
                }
            });
            fs::read_dir(&dd.queue).unwrap().count()
        });
        assert_eq!(n, 200);
        assert!(c.batches() <= 200);
        let _ = fs::remove_dir_all(&d.root);
    }

    /// A leader that panics (a notify that fails, say) answers its batch with an error and gives up
    /// the lead: the next message still commits.
    #[test]
    fn a_panicking_leader_leaves_no_one_waiting() {
        let d = dirs("panic");
        let c = Committer::new(d.temp.clone());
        let on_durable: OnDurable = Box::new(|| panic!("a bug in the scheduler"));
        let (c2, f) = (c.clone(), staged(&d, "boom", &d.queue));
        let joined =
            std::thread::spawn(move || c2.submit(vec![f], Some(on_durable)).wait().map(|_| ()))
                .join();
        assert!(joined.is_err(), "the leader's thread panicked");
        let next = staged(&d, "after", &d.queue);
        let c3 = c.clone();
        let r = bounded(move || c3.submit(vec![next], None).wait().map(|p| p[0].exists()));
        assert!(r.unwrap());
        let _ = fs::remove_dir_all(&d.root);
    }

    /// A queued commit whose handle is dropped without waiting is still made.
    #[test]
    fn a_dropped_pending_still_commits() {
        let d = dirs("dropped");
        let c = Committer::new(d.temp.clone());
        drop(c.submit(vec![staged(&d, "x", &d.queue)], None));
        assert!(d.queue.join("x.eml").exists());
        let _ = fs::remove_dir_all(&d.root);
    }

    /// One message that cannot be renamed fails alone, and leaves nothing; the others commit.
    #[test]
    fn a_failure_fails_only_its_message() {
        let d = dirs("fail");
        let missing = d.root.join("NoSuchFolder");
        let c = Committer::new(d.temp.clone());
        let good = c.submit(vec![staged(&d, "good", &d.queue)], None);
        let bad = c.submit(vec![staged(&d, "bad", &missing)], None);
        // A two-part message whose second part fails: its first part must not stay in Queue.
        let mixed = c.submit(
            vec![staged(&d, "part1", &d.queue), staged(&d, "part2", &missing)],
            None,
        );
        assert!(good.wait().is_ok());
        let e = bad.wait().unwrap_err();
        assert_eq!(e.op, "rename into");
        assert!(mixed.wait().is_err());
        assert_eq!(c.batches(), 1);
        assert!(d.queue.join("good.eml").exists());
        assert!(!d.queue.join("part1.eml").exists());
        assert_eq!(fs::read_dir(&d.temp).unwrap().count(), 0);
        let _ = fs::remove_dir_all(&d.root);
    }
}
