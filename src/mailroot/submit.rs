//! Writing one file into the Pickup folder so that the watcher (`pickup`) never sees it half
//! written, and so that it survives a power cut once [`write`] returns: the local submission of
//! `mailroot sendmail`, with no network and no credentials.
//!
//! 1. create `Pickup/.<id>.tmp` (new, never overwriting; the watcher skips names starting with `.`
//!    and ending in `.tmp`), made readable by the folder's reader (`os::share_with_folder`);
//! 2. write the bytes and fsync the file;
//! 3. rename it to `Pickup/<id>.eml`, which the watcher takes;
//! 4. fsync the folder. A writer that may not open the folder (the Debian package's Pickup is
//!    writable by everyone but readable by mailroot only) flushes the file system instead.
//!
//! A writer killed before step 3 leaves a `.<id>.tmp` that nobody takes: `pickup` removes such a
//! file once its identifier is [`LEFTOVER_AGE`] old ([`is_leftover`]).
//!
//! A writer also needs a few of the server's settings (where Pickup is, DefaultDomain, the limits),
//! and may not be allowed to read the configuration (the Debian package keeps it root:mailroot,
//! because it may hold passwords). So the server publishes those keys, and only those, in
//! `<MailRoot>/`[`SETTINGS_FILE`], readable by all, at start-up and at each reload
//! ([`publish_settings`]).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::error::{StoreError, err};
use crate::config::VirtualServer;
use crate::id;

/// The file, in the first virtual server's MailRoot, where the server publishes what `sendmail`
/// needs of its settings ([`publish_settings`]).
pub const SETTINGS_FILE: &str = "mailroot.submission.ini";

/// The keys published: the folders, the names a message gets (FQDN for `-bs`'s greeting and
/// Message-ID; DefaultDomain for bare names and the From), and what the submission path checks
/// (sizes, recipients, hops, the dot rule, bare LF). None names a secret or a file to open.
pub const SETTINGS_KEYS: &[&str] = &[
    "FullyQualifiedDomainName",
    "MailRoot",
    "PickupDirectory",
    "DefaultDomain",
    "MaxMessageSize",
    "MaxSessionSize",
    "MaxRecipients",
    "AllowBareLfInCommands",
    "HopCount",
    "PickupUnstuffDots",
];

/// How old a `.<id>.tmp` must be before `pickup` removes it as a crashed writer's leftover. A
/// writer has its whole message in memory before it creates the file, so it is done in seconds.
pub const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

/// Writes `content` durably into `pickup` as `<id>.eml` (see the module doc) and returns its path.
/// On failure nothing is left behind (but for a temporary file a kill leaves).
pub fn write(pickup: &Path, content: &[u8]) -> Result<PathBuf, StoreError> {
    let qid = id::next();
    let tmp = pickup.join(format!(".{qid}.tmp"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(err("create", &tmp))?;
    let written = (|| {
        // Before any byte is written: the mode, whatever the umask.
        crate::os::share_with_folder(&file, pickup).map_err(err("set the mode of", &tmp))?;
        file.write_all(content).map_err(err("write", &tmp))?;
        file.sync_all().map_err(err("fsync", &tmp))?;
        let dest = free_name(pickup, &qid);
        fs::rename(&tmp, &dest).map_err(err("rename", &tmp))?;
        Ok(dest)
    })();
    let dest = match written {
        Ok(d) => d,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    match crate::os::sync_dir(pickup) {
        Ok(()) => {}
        // Listing the folder is not ours: one flush of the volume carries the rename too.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            match crate::os::sync_volume(&file) {
                Ok(()) => {}
                Err(v) if v.kind() == io::ErrorKind::Unsupported => {}
                Err(v) => return Err(StoreError::new("flush the volume of", pickup, v)),
            }
        }
        Err(e) => return Err(StoreError::new("fsync", pickup, e)),
    }
    Ok(dest)
}

/// [`SETTINGS_KEYS`] of every virtual server as an INI file that loads as the configuration
/// (paths made absolute: the file is read from elsewhere than the server's working folder).
pub fn settings_text(servers: &[std::sync::Arc<VirtualServer>]) -> String {
    let mut out = String::from(
        "; what `mailroot sendmail` needs of this server's settings, for users who may not read its\n\
         ; configuration; written by the server at start-up and at each reload (docs/linux.md)\n",
    );
    for vs in servers {
        out.push_str(&format!("\n[SmtpSvc/{}]\n", vs.instance));
        for (key, value) in vs.effective() {
            if !SETTINGS_KEYS.contains(&key) {
                continue;
            }
            let value = match key {
                "MailRoot" | "PickupDirectory" => std::path::absolute(&value)
                    .map(|p| p.display().to_string())
                    .unwrap_or(value),
                _ => value,
            };
            out.push_str(&format!("{key} = {value}\n"));
        }
    }
    out
}

/// Writes [`settings_text`] to `<MailRoot>/`[`SETTINGS_FILE`] of the first virtual server, readable
/// by all (Unix 0644, whatever the umask), replacing the old one atomically.
pub fn publish_settings(servers: &[std::sync::Arc<VirtualServer>]) -> io::Result<()> {
    let Some(first) = servers.first() else {
        return Ok(());
    };
    let path = first.dirs.mailroot.join(SETTINGS_FILE);
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, settings_text(servers))?;
    crate::os::readable_by_all(&tmp)?;
    fs::rename(&tmp, &path)
}

/// `<qid>.eml`, or `<qid>-<n>.eml` when another user already put a file of that name there (in a
/// sticky folder a rename onto someone else's file fails).
fn free_name(pickup: &Path, qid: &str) -> PathBuf {
    let first = pickup.join(format!("{qid}.eml"));
    if fs::symlink_metadata(&first).is_err() {
        return first;
    }
    (1..100)
        .map(|n| pickup.join(format!("{qid}-{n}.eml")))
        .find(|p| fs::symlink_metadata(p).is_err())
        .unwrap_or(first)
}

/// Whether `name` in Pickup is a temporary file of [`write`] whose writer must be gone: `.<id>.tmp`
/// with an identifier at least [`LEFTOVER_AGE`] older than `now`.
pub fn is_leftover(name: &str, now: SystemTime) -> bool {
    let Some(qid) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    id::arrival(qid)
        .and_then(|t| now.duration_since(t).ok())
        .is_some_and(|age| age >= LEFTOVER_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mailroot-submit-{tag}-{}", id::next()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn writes_an_eml_file_and_leaves_no_temporary_file() {
        let dir = temp_dir("write");
        let p = write(&dir, b"X-Sender: <a@b.test>\r\n\r\nhi\r\n").unwrap();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.ends_with(".eml") && id::is_id(&name[..23]), "{name}");
        assert_eq!(fs::read(&p).unwrap(), b"X-Sender: <a@b.test>\r\n\r\nhi\r\n");
        let names: Vec<_> = fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_the_file() {
        let dir = temp_dir("missing").join("nope");
        let e = write(&dir, b"x").unwrap_err();
        assert_eq!(e.op, "create");
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn published_settings_hold_only_their_keys_and_load_as_the_same_settings() {
        let dir = temp_dir("settings");
        let mut vs = crate::testutil::test_server();
        vs.dirs = crate::config::Dirs::under(&dir.join("mailroot"));
        vs.dirs.pickup = dir.join("elsewhere");
        vs.default_domain = "corp.test".into();
        vs.max_message_size = 12345;
        vs.delivery.pickup_unstuff_dots = false;
        let text = settings_text(&[std::sync::Arc::new(vs.clone())]);
        let keys: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
            .collect();
        assert_eq!(keys, SETTINGS_KEYS, "{text}");
        let file = dir.join(SETTINGS_FILE);
        fs::write(&file, &text).unwrap();
        let loaded = crate::config::Config::load(&file).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let back = &loaded.servers[0];
        assert_eq!(back.dirs.pickup, vs.dirs.pickup);
        assert_eq!(back.dirs.mailroot, vs.dirs.mailroot);
        assert_eq!(
            (back.fqdn.as_str(), back.default_domain.as_str()),
            ("mx.local.test", "corp.test")
        );
        assert_eq!(
            (back.max_message_size, back.max_recipients, back.hop_count),
            (12345, vs.max_recipients, vs.hop_count)
        );
        assert!(!back.delivery.pickup_unstuff_dots);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_old_temporary_files_of_ours_are_leftovers() {
        let fresh = id::next();
        // The identifier's time may run a little ahead of the clock (it never repeats).
        let now = SystemTime::now() + Duration::from_secs(1);
        assert!(!is_leftover(&format!(".{fresh}.tmp"), now));
        assert!(is_leftover(&format!(".{fresh}.tmp"), now + LEFTOVER_AGE));
        assert!(!is_leftover(&format!("{fresh}.tmp"), now + LEFTOVER_AGE));
        assert!(!is_leftover(".app-upload.tmp", now + LEFTOVER_AGE));
        assert!(!is_leftover(&format!(".{fresh}.part"), now + LEFTOVER_AGE));
    }
}
