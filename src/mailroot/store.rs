//! The one room that commits mail to disk. Every message, whether it came by SMTP or (issue 3) from
//! Pickup or as a bounce, is written the same way before anyone is told it is safe:
//!
//! 1. write `SortTemp/<id>.tmp` (created new, never overwritten),
//! 2. fsync the file,
//! 3. rename it to `Queue/<id>.eml` or `Drop/<id>.eml` (the commit point: rename is atomic),
//! 4. fsync the destination folder, so the rename itself survives a power cut,
//!
//! and only then does the session answer 250. A crash at any instant leaves the message either only
//! in SortTemp (the client got no 250; the leftover is removed at start-up) or complete in its folder.
//! Steps 2 to 4 go through the mailroot's group commit (`commit`), which shares each flush among all
//! the messages that are ready at the same time.
//!
//! Removing a delivered message is not flushed on its own: the next commit's folder flush carries it.
//! A power cut in between can bring a delivered message back, to be delivered once more; it can never
//! lose one (RFC 5321 §6.1 prefers a duplicate to a loss).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::commit::{Committer, Notify, Pending, Staged};
use crate::config::Dirs;

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

/// A failed disk operation, naming what and where.
#[derive(Debug)]
pub struct StoreError {
    /// What was being done ("create", "write", "fsync", "rename", …).
    pub op: &'static str,
    /// The file or folder.
    pub path: PathBuf,
    /// The system's error.
    pub source: io::Error,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.op,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> StoreError + 'p {
    move |source| StoreError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The mailroot folders a virtual server commits into.
#[derive(Clone)]
pub struct Store {
    sort_temp: PathBuf,
    queue: PathBuf,
    drop: PathBuf,
    badmail: PathBuf,
    /// Told about every message committed into Queue (the delivery scheduler).
    notify: Option<Notify>,
    /// The mailroot's group commit.
    committer: Committer,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("queue", &self.queue)
            .field("drop", &self.drop)
            .field("notify", &self.notify.is_some())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the folders of `dirs`, creating any that are missing.
    pub fn open(dirs: &Dirs) -> Result<Store, StoreError> {
        for d in [
            &dirs.sort_temp,
            &dirs.queue,
            &dirs.drop,
            &dirs.pickup,
            &dirs.badmail,
        ] {
            fs::create_dir_all(d).map_err(err("create folder", d))?;
        }
        let committer = Committer::new(dirs.sort_temp.clone());
        Ok(Store {
            sort_temp: dirs.sort_temp.clone(),
            queue: dirs.queue.clone(),
            drop: dirs.drop.clone(),
            badmail: dirs.badmail.clone(),
            notify: None,
            committer,
        })
    }

    /// The same store, telling `notify` the identifier and envelope block of every message committed
    /// into Queue, once it is durable.
    pub fn with_notify(mut self, notify: Notify) -> Store {
        self.notify = Some(notify);
        self
    }

    /// The Queue folder.
    pub fn queue_dir(&self) -> &Path {
        &self.queue
    }

    /// `Queue/<id>.eml`
    pub fn queue_file(&self, id: &str) -> PathBuf {
        self.queue.join(format!("{id}.eml"))
    }

    /// Commits a complete message held in memory (pickup files, reports) the same way as SMTP mail.
    pub fn commit_message(
        &self,
        id: &str,
        parts: Vec<(Folder, Vec<u8>)>,
        trace: &[u8],
        message: &[u8],
    ) -> Result<Vec<PathBuf>, StoreError> {
        let mut spool = self.begin(id, parts, trace)?;
        spool.write(message);
        spool.commit()
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
                && super::id::is_id(stem)
            {
                ids.push(stem.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Reads `Queue/<id>.sta`, if there is one.
    pub fn read_state(&self, id: &str) -> Result<Option<String>, StoreError> {
        let p = self.queue.join(format!("{id}.sta"));
        match fs::read_to_string(&p) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError {
                op: "read",
                path: p,
                source: e,
            }),
        }
    }

    /// Replaces `Queue/<id>.sta` durably (temporary file, fsync, rename, fsync the folder).
    pub fn write_state(&self, id: &str, text: &str) -> Result<(), StoreError> {
        let temp = self.sort_temp.join(format!("{id}.sta.tmp"));
        write_synced(&temp, text.as_bytes())?;
        let dest = self.queue.join(format!("{id}.sta"));
        if let Err(e) = fs::rename(&temp, &dest) {
            let _ = fs::remove_file(&temp);
            return Err(StoreError {
                op: "rename into",
                path: dest,
                source: e,
            });
        }
        crate::os::sync_dir(&self.queue).map_err(err("fsync folder", &self.queue))
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
                    return Err(StoreError {
                        op: "remove",
                        path: p,
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }

    /// Writes `Badmail/<id>.bad` (the message) and `Badmail/<id>.bdr` (the reason) durably.
    pub fn badmail(&self, id: &str, bad: &[u8], bdr: &str) -> Result<PathBuf, StoreError> {
        let mut done = Vec::new();
        // The message first, the reason last: a .bdr in Badmail means its .bad is there too.
        for (ext, bytes) in [("bad", bad), ("bdr", bdr.as_bytes())] {
            let temp = self.sort_temp.join(format!("{id}.{ext}.tmp"));
            write_synced(&temp, bytes)?;
            let dest = self.badmail.join(format!("{id}.{ext}"));
            if let Err(e) = fs::rename(&temp, &dest) {
                let _ = fs::remove_file(&temp);
                return Err(StoreError {
                    op: "rename into",
                    path: dest,
                    source: e,
                });
            }
            done.push(dest);
        }
        crate::os::sync_dir(&self.badmail).map_err(err("fsync folder", &self.badmail))?;
        Ok(done.into_iter().next().unwrap_or_default())
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
                .map(|stem| super::id::is_id(stem.split('.').next().unwrap_or("")))
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
    /// trace header. `parts` names each destination with its envelope block; the body written to the
    /// returned [`Spool`] is shared by all of them.
    pub fn begin(
        &self,
        id: &str,
        parts: Vec<(Folder, Vec<u8>)>,
        trace: &[u8],
    ) -> Result<Spool, StoreError> {
        let temp = self.sort_temp.join(format!("{id}.tmp"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(err("create", &temp))?;
        let head_len = parts.first().map(|p| p.1.len() as u64).unwrap_or(0);
        let mut spool = Spool {
            store: self.clone(),
            id: id.to_string(),
            file: Some(BufWriter::with_capacity(SPOOL_BUF, file)),
            temp,
            parts,
            head_len,
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
    error: Option<StoreError>,
    /// Temporary files of further parts and final paths already renamed (removed on failure).
    written: Vec<PathBuf>,
}

impl Spool {
    /// The queue identifier (the file stem).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Appends message bytes. The first error is kept and later writes are skipped; the commit then
    /// fails with it.
    pub fn write(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Some(f) = self.file.as_mut()
            && let Err(e) = f.write_all(bytes)
        {
            self.error = Some(StoreError {
                op: "write",
                path: self.temp.clone(),
                source: e,
            });
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
            .ok_or_else(|| StoreError {
                op: "commit",
                path: temp.clone(),
                source: io::Error::other("already committed"),
            })?
            .into_inner()
            .map_err(|e| StoreError {
                op: "write",
                path: temp.clone(),
                source: e.into_error(),
            })?;
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
        let notify = match (
            &self.store.notify,
            self.parts.iter().find(|(f, _)| *f == Folder::Queue),
        ) {
            (Some(n), Some((_, block))) => Some((n.clone(), self.id.clone(), block.clone())),
            _ => None,
        };
        Ok(self.store.committer.submit(files, notify))
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
        return Err(StoreError {
            op: "write",
            path: path.to_path_buf(),
            source: e,
        });
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

    fn dirs(root: &Path) -> Dirs {
        Dirs::under(root)
    }

    fn tempdir(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("mailroot-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn commit_one_and_two_parts() {
        let root = tempdir("commit");
        let store = Store::open(&dirs(&root)).unwrap();
        let id = crate::mailroot::id::next();
        let mut s = store
            .begin(
                &id,
                vec![
                    (Folder::Queue, b"x-sender: a\r\nx-receiver: r\r\n".to_vec()),
                    (Folder::Drop, b"x-sender: a\r\nx-receiver: l\r\n".to_vec()),
                ],
                b"Received: x\r\n",
            )
            .unwrap();
        s.write(b"Subject: hi\r\n\r\nbody\r\n");
        let paths = s.commit().unwrap();
        assert_eq!(paths.len(), 2);
        assert_eq!(
            fs::read(root.join("Queue").join(format!("{id}.eml"))).unwrap(),
            b"x-sender: a\r\nx-receiver: r\r\nReceived: x\r\nSubject: hi\r\n\r\nbody\r\n"
        );
        assert_eq!(
            fs::read(root.join("Drop").join(format!("{id}.eml"))).unwrap(),
            b"x-sender: a\r\nx-receiver: l\r\nReceived: x\r\nSubject: hi\r\n\r\nbody\r\n"
        );
        assert_eq!(fs::read_dir(root.join("SortTemp")).unwrap().count(), 0);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn abandoned_spool_leaves_nothing_and_leftovers_are_cleaned() {
        let root = tempdir("abandon");
        let store = Store::open(&dirs(&root)).unwrap();
        let s = store
            .begin(
                &crate::mailroot::id::next(),
                vec![(Folder::Drop, b"x\r\n".to_vec())],
                b"",
            )
            .unwrap();
        drop(s);
        assert_eq!(fs::read_dir(root.join("SortTemp")).unwrap().count(), 0);
        let left = root
            .join("SortTemp")
            .join(format!("{}.tmp", crate::mailroot::id::next()));
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
        let store = Store::open(&dirs(&root)).unwrap();
        fs::remove_dir(root.join("SortTemp")).unwrap();
        fs::write(root.join("SortTemp"), b"not a folder").unwrap();
        let e = store
            .begin("X", vec![(Folder::Drop, Vec::new())], b"")
            .err()
            .unwrap();
        assert_eq!(e.op, "create");
        let _ = fs::remove_dir_all(&root);
    }
}
