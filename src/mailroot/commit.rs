//! Group commit: many messages' commits share one flush.
//!
//! A message is durable when its file's bytes are on disk, its rename into Queue or Drop is on disk,
//! and in that order. Done one message at a time that costs two device flushes per message (fsync the
//! file, fsync the folder), and a 2-core box flushes about a thousand times a second, so twenty
//! sessions would queue behind each other's flushes. Instead every session hands its finished
//! temporary file to the one commit thread of its mailroot and waits; the thread takes whatever has
//! gathered while it was busy as one batch and, for the whole batch:
//!
//! 1. makes the files' bytes durable: each file's `fdatasync` for a small batch; for a larger one a
//!    single `syncfs` of the volume (Linux) followed by an fsync of SortTemp, so that file systems
//!    without a journal also flush the inodes `syncfs` wrote last; elsewhere each file's flush;
//! 2. renames each file into its folder, in the order its message gave (the commit point);
//! 3. fsyncs each destination folder once;
//!
//! and only then releases every waiting session to answer 250. The protocol per message is the one
//! `store` always had (write, flush, rename, flush the folder, then 250); only the flushes are shared.
//! A failure at any step fails just the messages it concerns (or, for a shared flush, falls back to
//! flushing each file), removes what they left behind, and their sessions answer 451.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use super::store::StoreError;

/// Most messages in one batch: bounds how long the first of them waits behind the others' renames.
const MAX_BATCH: usize = 256;

/// From this many files on, one volume flush is cheaper than a flush per file.
const VOLUME_FLUSH_FROM: usize = 3;

/// Told `(id, envelope block)` of each message committed into Queue, once it is durable (the
/// delivery scheduler takes it from here, without reading the file back).
pub type Notify = Arc<dyn Fn(&str, &[u8]) + Send + Sync>;

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

/// One message's commit: its files, renamed in order, and where its answer goes.
struct Job {
    files: Vec<Staged>,
    answer: Arc<Answer>,
    /// The scheduler, the identifier and the Queue envelope block, for a message with a Queue part.
    notify: Option<(Notify, String, Vec<u8>)>,
}

/// A one-shot answer slot. Plain mutex and condition variable: the waiter sleeps in the kernel
/// straight away instead of spinning, which on a 2-core box costs the flush thread its CPU.
#[derive(Default)]
struct Answer {
    slot: Mutex<Option<Result<(), StoreError>>>,
    ready: Condvar,
}

impl Answer {
    fn send(&self, r: Result<(), StoreError>) {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        self.ready.notify_one();
    }
}

/// A commit handed to the commit thread; [`Pending::wait`] blocks until it is durable or failed.
pub struct Pending {
    answer: Arc<Answer>,
    finals: Vec<PathBuf>,
}

impl Pending {
    /// Waits for the commit. `Ok` carries the final paths: the message is on disk in its folders.
    pub fn wait(self) -> Result<Vec<PathBuf>, StoreError> {
        let mut slot = self.answer.slot.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = slot.take() {
                return r.map(|()| self.finals);
            }
            slot = self
                .answer
                .ready
                .wait(slot)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// What sessions hand over and the commit thread takes: the jobs waiting for the next batch.
#[derive(Default)]
struct Queue {
    jobs: Mutex<(Vec<Job>, bool)>,
    more: Condvar,
}

/// The handle sessions commit through; the commit thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Committer {
    handle: Arc<Handle>,
}

/// Closes the queue when the last [`Committer`] clone goes, so the thread ends after its last batch.
struct Handle {
    queue: Arc<Queue>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.queue.jobs.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.queue.more.notify_one();
    }
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Committer")
    }
}

impl Committer {
    /// Starts the commit thread for the mailroot whose temporary files are in `sort_temp`.
    pub fn start(sort_temp: PathBuf) -> std::io::Result<Committer> {
        let queue = Arc::new(Queue::default());
        let q = queue.clone();
        std::thread::Builder::new()
            .name("commit".into())
            .stack_size(64 * 1024)
            .spawn(move || run(&q, &sort_temp))?;
        Ok(Committer {
            handle: Arc::new(Handle { queue }),
        })
    }

    /// Hands `files` (one message) to the commit thread; `notify` is told about it once it is durable.
    pub fn submit(&self, files: Vec<Staged>, notify: Option<(Notify, String, Vec<u8>)>) -> Pending {
        let answer = Arc::new(Answer::default());
        let finals = files.iter().map(|s| s.dest.clone()).collect();
        let q = &self.handle.queue;
        q.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .push(Job {
                files,
                answer: answer.clone(),
                notify,
            });
        q.more.notify_one();
        Pending { answer, finals }
    }
}

fn run(q: &Queue, sort_temp: &Path) {
    run_counting(q, sort_temp, &std::sync::atomic::AtomicUsize::new(0));
}

/// The commit loop; `passes` counts the batches (for the tests).
fn run_counting(q: &Queue, sort_temp: &Path, passes: &std::sync::atomic::AtomicUsize) {
    loop {
        let batch = {
            let mut jobs = q.jobs.lock().unwrap_or_else(|p| p.into_inner());
            while jobs.0.is_empty() && !jobs.1 {
                jobs = q.more.wait(jobs).unwrap_or_else(|p| p.into_inner());
            }
            if jobs.0.is_empty() {
                return; // closed, and nothing left to commit
            }
            // Everything that gathered while the last batch was being flushed is the next batch.
            let n = jobs.0.len().min(MAX_BATCH);
            jobs.0.drain(..n).collect::<Vec<_>>()
        };
        passes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        commit_batch(batch, sort_temp);
    }
}

/// Runs the three steps of the module doc over `batch` and answers every job.
fn commit_batch(batch: Vec<Job>, sort_temp: &Path) {
    let files: usize = batch.iter().map(|j| j.files.len()).sum();
    log::debug!("commit: {} message(s), {files} file(s)", batch.len());

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
            Err(e) => fail(job, e, 0),
        }
    }

    // 2. The renames, each message's in its own order.
    let mut renamed: Vec<Job> = Vec::with_capacity(live.len());
    for job in live {
        match rename_all(&job.files) {
            Ok(()) => renamed.push(job),
            Err((e, done)) => fail(job, e, done),
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
    let mut answers = Vec::with_capacity(renamed.len());
    for job in &renamed {
        let broken = job.files.iter().find_map(|s| {
            dirs.iter()
                .find(|(d, e)| e.is_some() && Some(*d) == s.dest.parent())
                .and_then(|(d, e)| e.as_ref().map(|e| (d, e)))
        });
        answers.push(broken.map(|(d, e)| StoreError {
            op: "fsync folder",
            path: d.to_path_buf(),
            source: std::io::Error::new(e.kind(), e.to_string()),
        }));
    }
    drop(dirs);
    for (job, answer) in renamed.into_iter().zip(answers) {
        match answer {
            Some(e) => {
                let n = job.files.len();
                fail(job, e, n);
            }
            None => {
                // The scheduler first: a session that hears 250 and asks at once finds it queued.
                if let Some((notify, id, block)) = &job.notify {
                    notify(id, block);
                }
                job.answer.send(Ok(()));
            }
        }
    }
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

/// Answers a job with `e` after removing its files: the first `renamed` from their folders (nobody
/// was told they are safe), the rest from SortTemp.
fn fail(job: Job, e: StoreError, renamed: usize) {
    discard(&job.files, renamed);
    job.answer.send(Err(e));
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

    /// Jobs queued while the thread is busy are one batch: one pass, every answer, every file.
    #[test]
    fn what_gathers_is_committed_as_one_batch() {
        let d = dirs("batch");
        let q = Queue::default();
        let told = Arc::new(AtomicUsize::new(0));
        let t = told.clone();
        let notify: Notify = Arc::new(move |id: &str, block: &[u8]| {
            assert_eq!(block, b"x-sender: a\r\n");
            assert!(id.starts_with('m'));
            t.fetch_add(1, Ordering::SeqCst);
        });
        let mut answers = Vec::new();
        for i in 0..10 {
            let answer = Arc::new(Answer::default());
            answers.push(Pending {
                answer: answer.clone(),
                finals: vec![d.queue.join(format!("m{i}.eml"))],
            });
            let id = format!("m{i}");
            q.jobs.lock().unwrap().0.push(Job {
                files: vec![staged(&d, &id, &d.queue)],
                answer,
                notify: Some((notify.clone(), id, b"x-sender: a\r\n".to_vec())),
            });
        }
        q.jobs.lock().unwrap().1 = true; // closed: run() returns once the queue is empty
        let passes = AtomicUsize::new(0);
        run_counting(&q, &d.temp, &passes);
        assert_eq!(passes.load(Ordering::SeqCst), 1);
        for (i, p) in answers.into_iter().enumerate() {
            let finals = p.wait().unwrap();
            assert_eq!(fs::read(&finals[0]).unwrap(), format!("m{i}").as_bytes());
        }
        assert_eq!(told.load(Ordering::SeqCst), 10);
        assert_eq!(fs::read_dir(&d.temp).unwrap().count(), 0);
        let _ = fs::remove_dir_all(&d.root);
    }

    /// One message that cannot be renamed fails alone, and leaves nothing; the others commit.
    #[test]
    fn a_failure_fails_only_its_message() {
        let d = dirs("fail");
        let missing = d.root.join("NoSuchFolder");
        let ok = staged(&d, "good", &d.queue);
        let bad = staged(&d, "bad", &missing);
        let (a1, a2) = (Arc::new(Answer::default()), Arc::new(Answer::default()));
        let mixed = Arc::new(Answer::default());
        // A two-part message whose second part fails: its first part must not stay in Queue.
        let first = staged(&d, "part1", &d.queue);
        let second = staged(&d, "part2", &missing);
        commit_batch(
            vec![
                Job {
                    files: vec![ok],
                    answer: a1.clone(),
                    notify: None,
                },
                Job {
                    files: vec![bad],
                    answer: a2.clone(),
                    notify: None,
                },
                Job {
                    files: vec![first, second],
                    answer: mixed.clone(),
                    notify: None,
                },
            ],
            &d.temp,
        );
        let wait = |a: Arc<Answer>| {
            Pending {
                answer: a,
                finals: Vec::new(),
            }
            .wait()
        };
        assert!(wait(a1).is_ok());
        let e = wait(a2).unwrap_err();
        assert_eq!(e.op, "rename into");
        assert!(wait(mixed).is_err());
        assert!(d.queue.join("good.eml").exists());
        assert!(!d.queue.join("part1.eml").exists());
        assert_eq!(fs::read_dir(&d.temp).unwrap().count(), 0);
        let _ = fs::remove_dir_all(&d.root);
    }

    /// Commits handed over just before the last handle goes are still made, and answered.
    #[test]
    fn the_thread_finishes_its_queue_when_the_last_handle_goes() {
        let d = dirs("close");
        let c = Committer::start(d.temp.clone()).unwrap();
        let pending: Vec<Pending> = (0..5)
            .map(|i| c.submit(vec![staged(&d, &format!("c{i}"), &d.queue)], None))
            .collect();
        drop(c);
        for p in pending {
            assert!(p.wait().unwrap()[0].exists());
        }
        let _ = fs::remove_dir_all(&d.root);
    }
}
