//! The one room that commits mail to disk. Every message, whether it came by SMTP, from Pickup, as a
//! report or as a Drop copy made by delivery, is written the same way before anyone is told it is safe:
//!
//! 1. write `SortTemp/<id>.tmp` (created new, never overwritten),
//! 2. fsync the file,
//! 3. rename it to `Queue/<id>.eml` or `Drop/<id>.eml` (the commit point: rename is atomic),
//! 4. fsync the destination folder, so the rename itself survives a power cut,
//!
//! and only then does the session answer 250. A crash at any instant leaves the message either only
//! in SortTemp (the client got no 250; the leftover is removed at start-up) or complete in its folder.
//! Steps 2 to 4 go through the mailroot's group commit (`commit`), which shares each flush among all
//! the messages that are ready at the same time. Once a message with a Queue part is durable, the
//! store hands its envelope to delivery ([`Handover`]). State files and Badmail files are replaced the
//! same way, one at a time: temporary file, fsync, rename, fsync the folder.
//!
//! Removing a delivered message is not flushed on its own: the next commit's folder flush carries it.
//! A power cut in between can bring a delivered message back, to be delivered once more; it can never
//! lose one (RFC 5321 §6.1 prefers a duplicate to a loss).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::block;
use super::commit::{Committer, OnDurable, Pending, Staged};
use super::error::{StoreError, err};
use crate::config::Dirs;
use crate::smtp::envelope::Envelope;

/// Write buffer of a message being received. Small on purpose: the DATA scanner hands over large
/// segments, which go straight to the file; only header lines and short pieces are gathered.
const SPOOL_BUF: usize = 16 * 1024;

/// The folder a committed file goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    /// Mail for remote domains, waiting for delivery.
    Queue,
    /// Mail for local domains.
    Drop,
}

/// A message just committed into Queue, as the store hands it to delivery: nothing needs to read
/// back what was just written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The queue identifier (the file stem).
    pub id: String,
    /// The envelope of the Queue part (its remote recipients).
    pub envelope: Envelope,
    /// Where the message starts in `Queue/<id>.eml` (the length of its envelope block).
    pub body_offset: usize,
}

/// Delivery's side of the hand-over: told of each message committed into Queue once it is durable,
/// on the committing thread (so it must only schedule, never deliver).
pub type Handover = Arc<dyn Fn(Queued) + Send + Sync>;

/// The mailroot folders a virtual server commits into.
#[derive(Clone)]
pub struct Store {
    sort_temp: PathBuf,
    queue: PathBuf,
    drop: PathBuf,
    badmail: PathBuf,
    /// Told about every message committed into Queue (delivery).
    handover: Option<Handover>,
    /// The mailroot's group commit.
    committer: Committer,
    /// What the store counts (batches, Badmail, Pickup), read by the metrics.
    metrics: Arc<crate::metrics::Mailroot>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("queue", &self.queue)
            .field("drop", &self.drop)
            .field("handover", &self.handover.is_some())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the folders of `dirs`, creating any that are missing. `handover` is told of every
    /// message committed into Queue (none for a store that only writes, as in `mailroot check`).
    pub fn open(dirs: &Dirs, handover: Option<Handover>) -> Result<Store, StoreError> {
        for d in [
            &dirs.sort_temp,
            &dirs.queue,
            &dirs.drop,
            &dirs.pickup,
            &dirs.badmail,
        ] {
            fs::create_dir_all(d).map_err(err("create folder", d))?;
        }
        let metrics: Arc<crate::metrics::Mailroot> = Arc::default();
        let committer = Committer::with_metrics(dirs.sort_temp.clone(), metrics.clone());
        Ok(Store {
            metrics,
            sort_temp: dirs.sort_temp.clone(),
            queue: dirs.queue.clone(),
            drop: dirs.drop.clone(),
            badmail: dirs.badmail.clone(),
            handover,
            committer,
        })
    }

    /// What this mailroot counted (commit batches, Badmail, Pickup).
    pub fn metrics(&self) -> &Arc<crate::metrics::Mailroot> {
        &self.metrics
    }

    /// The Queue folder.
    pub fn queue_dir(&self) -> &Path {
        &self.queue
    }

    /// The Badmail folder.
    pub fn badmail_dir(&self) -> &Path {
        &self.badmail
    }

    fn queue_file(&self, id: &str) -> PathBuf {
        self.queue.join(format!("{id}.eml"))
    }

    /// Commits a complete message held in memory (Pickup files, reports, Drop copies) the same way as
    /// SMTP mail, and waits until it is durable.
    pub fn commit_message(
        &self,
        id: &str,
        envelope: Envelope,
        trace: &[u8],
        message: &[u8],
    ) -> Result<Vec<PathBuf>, StoreError> {
        self.submit_message(id, envelope, trace, message)?.wait()
    }

    /// Like [`Store::commit_message`], without waiting: one thread can have several messages in one
    /// group commit (Pickup). The message is safe only once [`Pending::wait`] says so.
    pub fn submit_message(
        &self,
        id: &str,
        envelope: Envelope,
        trace: &[u8],
        message: &[u8],
    ) -> Result<Pending, StoreError> {
        let mut spool = self.begin(id, envelope, trace)?;
        spool.write(message);
        spool.submit()
    }

    /// Identifiers of the messages in Queue (files `<id>.eml`), sorted (= arrival order).
    pub fn queued_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.queue).map_err(err("list", &self.queue))? {
            let entry = entry.map_err(err("list", &self.queue))?;
            if let Some(stem) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".eml"))
                && crate::id::is_id(stem)
            {
                ids.push(stem.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Reads `Queue/<id>.eml` whole (envelope block and message); `None` when it is gone.
    pub fn read_queued(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let p = self.queue_file(id);
        match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::new("read", &p, e)),
        }
    }

    /// Reads the start of `Queue/<id>.eml` and its envelope block (to schedule a message found at
    /// start-up); `None` when it is gone.
    pub fn read_queued_envelope(
        &self,
        id: &str,
    ) -> Result<Option<Result<Envelope, block::BlockError>>, StoreError> {
        let p = self.queue_file(id);
        let mut f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::new("read", &p, e)),
        };
        // Enough for the block of any message mailroot writes; a block with thousands of
        // recipients may be longer, and is then read whole.
        let mut head = Vec::with_capacity(64 * 1024);
        (&mut f)
            .take(64 * 1024)
            .read_to_end(&mut head)
            .map_err(err("read", &p))?;
        if head.len() == 64 * 1024 {
            f.read_to_end(&mut head).map_err(err("read", &p))?;
        }
        Ok(Some(block::read(&head).map(|(e, _)| e)))
    }

    /// Reads `Queue/<id>.sta`, if there is one.
    pub fn read_state(&self, id: &str) -> Result<Option<String>, StoreError> {
        let p = self.queue.join(format!("{id}.sta"));
        match fs::read_to_string(&p) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::new("read", &p, e)),
        }
    }

    /// Replaces `Queue/<id>.sta` durably.
    pub fn write_state(&self, id: &str, text: &str) -> Result<(), StoreError> {
        let name = format!("{id}.sta");
        self.replace(&name, &self.queue, text.as_bytes())?;
        crate::os::sync_dir(&self.queue).map_err(err("fsync folder", &self.queue))
    }

    /// Writes `dir/<name>` in place of any file of that name, so that a crash leaves the old
    /// file or the new one, whole: a temporary file in SortTemp, fsync, rename. The caller flushes
    /// the folder (once for several files).
    fn replace(&self, name: &str, dir: &Path, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let temp = self.sort_temp.join(format!("{name}.tmp"));
        write_synced(&temp, bytes)?;
        let dest = dir.join(name);
        if let Err(e) = fs::rename(&temp, &dest) {
            let _ = fs::remove_file(&temp);
            return Err(StoreError::new("rename into", &dest, e));
        }
        Ok(dest)
    }

    /// Removes a message that is completely dealt with from Queue (its file and its state). Not
    /// flushed here: the next commit's folder flush makes it durable (see the module doc).
    pub fn finish(&self, id: &str) -> Result<(), StoreError> {
        for ext in ["eml", "sta"] {
            let p = self.queue.join(format!("{id}.{ext}"));
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::new("remove", &p, e));
                }
            }
        }
        Ok(())
    }

    /// Writes `Badmail/<id>.bad` (the message) and `Badmail/<id>.bdr` (the reason) durably;
    /// returns the path of the `.bad` file.
    pub fn badmail(&self, id: &str, bad: &[u8], bdr: &str) -> Result<PathBuf, StoreError> {
        // The message first, the reason last: a .bdr in Badmail means its .bad is there too.
        let path = self.replace(&format!("{id}.bad"), &self.badmail, bad)?;
        self.replace(&format!("{id}.bdr"), &self.badmail, bdr.as_bytes())?;
        crate::os::sync_dir(&self.badmail).map_err(err("fsync folder", &self.badmail))?;
        self.metrics.badmail.inc();
        Ok(path)
    }

    /// Removes what a crash left in SortTemp (files that never got their 250). Returns how many.
    pub fn clean_sort_temp(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for entry in fs::read_dir(&self.sort_temp).map_err(err("list", &self.sort_temp))? {
            let entry = entry.map_err(err("list", &self.sort_temp))?;
            let name = entry.file_name();
            let is_ours = name
                .to_str()
                .and_then(|s| s.strip_suffix(".tmp"))
                .map(|stem| crate::id::is_id(stem.split('.').next().unwrap_or("")))
                .unwrap_or(false);
            if is_ours {
                let p = entry.path();
                fs::remove_file(&p).map_err(err("remove", &p))?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn folder(&self, f: Folder) -> &Path {
        match f {
            Folder::Queue => &self.queue,
            Folder::Drop => &self.drop,
        }
    }

    /// Starts a message: creates its temporary file and writes the first part's envelope block and the
    /// trace header. The envelope's route decisions give the parts (see `block::parts`); the body
    /// written to the returned [`Spool`] is shared by all of them.
    pub fn begin(&self, id: &str, envelope: Envelope, trace: &[u8]) -> Result<Spool, StoreError> {
        let temp = self.sort_temp.join(format!("{id}.tmp"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(err("create", &temp))?;
        let parts = block::parts(&envelope);
        let head_len = parts.first().map(|p| p.1.len()).unwrap_or(0);
        // Delivery gets the Queue part's envelope (the Queue part is first when there is one).
        let queued = match (&self.handover, parts.first()) {
            (Some(_), Some((Folder::Queue, _))) => Some(Queued {
                id: id.to_string(),
                envelope: if envelope.has(true) {
                    envelope.with_recipients(|r| !r.local)
                } else {
                    envelope
                },
                body_offset: head_len,
            }),
            _ => None,
        };
        let mut spool = Spool {
            store: self.clone(),
            id: id.to_string(),
            file: Some(BufWriter::with_capacity(SPOOL_BUF, file)),
            temp,
            parts,
            head_len: head_len as u64,
            queued,
            error: None,
            written: Vec::new(),
        };
        let head = spool.parts.first().map(|p| p.1.clone()).unwrap_or_default();
        spool.write(&head);
        spool.write(trace);
        match spool.error.take() {
            Some(e) => Err(e),
            None => Ok(spool),
        }
    }
}

/// `paths` as a log shows them: `a, b`.
pub fn display_paths(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// A message being written. Dropping it without [`Spool::commit`] removes its temporary files.
pub struct Spool {
    store: Store,
    id: String,
    file: Option<BufWriter<File>>,
    temp: PathBuf,
    parts: Vec<(Folder, Vec<u8>)>,
    head_len: u64,
    /// What delivery is told once the message is durable (a message with a Queue part).
    queued: Option<Queued>,
    error: Option<StoreError>,
    /// Temporary files of further parts and final paths already renamed (removed on failure).
    written: Vec<PathBuf>,
}

impl Spool {
    /// Appends message bytes. The first error is kept and later writes are skipped; the commit then
    /// fails with it.
    pub fn write(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Some(f) = self.file.as_mut()
            && let Err(e) = f.write_all(bytes)
        {
            self.error = Some(StoreError::new("write", &self.temp, e));
        }
    }

    /// Whether a write has failed.
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// Makes the message durable in its folders (see the module doc). On error nothing is left behind.
    pub fn commit(self) -> Result<Vec<PathBuf>, StoreError> {
        self.submit()?.wait()
    }

    /// Queues the finished message for the group commit without waiting, so that one thread can have
    /// several messages in one flush (Pickup). The message is safe only once [`Pending::wait`] says so.
    pub fn submit(mut self) -> Result<Pending, StoreError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let temp = self.temp.clone();
        let file = self
            .file
            .take()
            .ok_or_else(|| StoreError::new("commit", &temp, io::Error::other("already committed")))?
            .into_inner()
            .map_err(|e| StoreError::new("write", &temp, e.into_error()))?;
        let dest = |folder: Folder| self.store.folder(folder).join(format!("{}.eml", self.id));
        let mut files = Vec::with_capacity(self.parts.len());
        if let Some((folder, _)) = self.parts.first() {
            files.push(Staged {
                temp: temp.clone(),
                file,
                dest: dest(*folder),
            });
        }
        // Further parts (a message with both local and remote recipients): same content after the
        // first part's envelope block, under their own block.
        for (i, (folder, block)) in self.parts.iter().enumerate().skip(1) {
            let t = self.store.sort_temp.join(format!("{}.{}.tmp", self.id, i));
            self.written.push(t.clone());
            let file = copy_part(&temp, self.head_len, block, &t)?;
            files.push(Staged {
                temp: t,
                file,
                dest: dest(*folder),
            });
        }
        // From here on the group commit owns the files (and removes them if the commit fails).
        self.written.clear();
        self.temp = PathBuf::new();
        let on_durable = match (&self.store.handover, self.queued.take()) {
            (Some(h), Some(q)) => {
                let h = h.clone();
                Some(Box::new(move || h(q)) as OnDurable)
            }
            _ => None,
        };
        Ok(self.store.committer.submit(files, on_durable))
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(err("create", path))?;
    let r = f.write_all(bytes).and_then(|_| f.sync_data());
    if let Err(e) = r {
        let _ = fs::remove_file(path);
        return Err(StoreError::new("write", path, e));
    }
    Ok(())
}

/// Writes `block` and then `src` from offset `from` to the new file `to`; returns it, not flushed.
fn copy_part(src: &Path, from: u64, block: &[u8], to: &Path) -> Result<File, StoreError> {
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(err("create", to))?;
    out.write_all(block).map_err(err("write", to))?;
    let mut reader = File::open(src).map_err(err("read", src))?;
    reader
        .seek(SeekFrom::Start(from))
        .map_err(err("read", src))?;
    io::copy(&mut reader, &mut out).map_err(err("write", to))?;
    Ok(out)
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Not committed (or the commit failed half way): nobody was told the message is safe.
        self.file.take();
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
        for p in self.written.drain(..) {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::envelope::Recipient;

    fn dirs(root: &Path) -> Dirs {
        Dirs::under(root)
    }

    fn tempdir(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("mailroot-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    fn envelope() -> Envelope {
        Envelope {
            sender: "a@b.test".into(),
            recipients: vec![
                Recipient::new("r@remote.test".into(), false),
                Recipient::new("l@local.test".into(), true),
            ],
            ..Envelope::default()
        }
    }

    #[test]
    fn commit_one_and_two_parts() {
        let root = tempdir("commit");
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let t = told.clone();
        let handover: Handover = Arc::new(move |q: Queued| t.lock().unwrap().push(q));
        let store = Store::open(&dirs(&root), Some(handover)).unwrap();
        let id = crate::id::next();
        let mut s = store.begin(&id, envelope(), b"Received: x\r\n").unwrap();
        s.write(b"Subject: hi\r\n\r\nbody\r\n");
        let paths = s.commit().unwrap();
        assert_eq!(paths.len(), 2);
        let queued = fs::read(root.join("Queue").join(format!("{id}.eml"))).unwrap();
        let block = b"x-sender: a@b.test\r\nx-receiver: r@remote.test\r\n";
        assert_eq!(
            queued,
            [&block[..], b"Received: x\r\nSubject: hi\r\n\r\nbody\r\n"].concat()
        );
        assert_eq!(
            fs::read(root.join("Drop").join(format!("{id}.eml"))).unwrap(),
            b"x-sender: a@b.test\r\nx-receiver: l@local.test\r\nReceived: x\r\nSubject: hi\r\n\r\nbody\r\n"
        );
        assert_eq!(fs::read_dir(root.join("SortTemp")).unwrap().count(), 0);
        // Delivery was handed the Queue part as written, without reading it back.
        let told = told.lock().unwrap();
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].id, id);
        assert_eq!(told[0].body_offset, block.len());
        assert_eq!(told[0].envelope, envelope().with_recipients(|r| !r.local));
        assert_eq!(
            block::read(&queued).unwrap(),
            (told[0].envelope.clone(), block.len())
        );
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn state_and_badmail_replace_durably() {
        let root = tempdir("replace");
        let store = Store::open(&dirs(&root), None).unwrap();
        assert_eq!(store.read_state("X").unwrap(), None);
        store.write_state("X", "one").unwrap();
        store.write_state("X", "two").unwrap();
        assert_eq!(store.read_state("X").unwrap().as_deref(), Some("two"));
        let bad = store.badmail("Y", b"message", "reason").unwrap();
        assert_eq!(bad, root.join("Badmail").join("Y.bad"));
        assert_eq!(fs::read(&bad).unwrap(), b"message");
        assert_eq!(
            fs::read(root.join("Badmail").join("Y.bdr")).unwrap(),
            b"reason"
        );
        assert_eq!(fs::read_dir(root.join("SortTemp")).unwrap().count(), 0);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn abandoned_spool_leaves_nothing_and_leftovers_are_cleaned() {
        let root = tempdir("abandon");
        let store = Store::open(&dirs(&root), None).unwrap();
        let s = store.begin(&crate::id::next(), envelope(), b"").unwrap();
        drop(s);
        assert_eq!(fs::read_dir(root.join("SortTemp")).unwrap().count(), 0);
        let left = root
            .join("SortTemp")
            .join(format!("{}.tmp", crate::id::next()));
        fs::write(&left, b"half").unwrap();
        fs::write(root.join("SortTemp").join("keep.txt"), b"admin's").unwrap();
        assert_eq!(store.clean_sort_temp().unwrap(), 1);
        assert!(!left.exists());
        assert!(root.join("SortTemp").join("keep.txt").exists());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn unwritable_sort_temp_is_an_error() {
        let root = tempdir("broken");
        let store = Store::open(&dirs(&root), None).unwrap();
        fs::remove_dir(root.join("SortTemp")).unwrap();
        fs::write(root.join("SortTemp"), b"not a folder").unwrap();
        let e = store.begin("X", envelope(), b"").err().unwrap();
        assert_eq!(e.op, "create");
        let _ = fs::remove_dir_all(&root);
    }
}
