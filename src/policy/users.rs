//! The users who may AUTH (`UsersFile`, default `conf/users`): one `name:hash` line each, the hash an
//! Argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) — salted and deliberately slow,
//! so the file is worthless to whoever steals it. No plaintext password is ever written. `mailroot user
//! add|del|list` edits the file; the server rereads it when it changes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Why the users file could not be used.
#[derive(Debug)]
pub struct UsersError(pub String);

impl std::fmt::Display for UsersError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsersError {}

/// Hashes `password` with a fresh random salt.
pub fn hash(password: &str) -> Result<String, UsersError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError(format!("cannot hash the password: {e}")))
}

/// Whether a user name is acceptable (printable, no colon, no spaces).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// Parses the file's text into (name, hash) pairs, with `FILE:LINE` errors.
pub fn parse(path: &Path, text: &str) -> Result<Vec<(String, String)>, UsersError> {
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (name, h) = l.split_once(':').ok_or_else(|| {
            UsersError(format!("{}:{}: expected name:hash", path.display(), i + 1))
        })?;
        if !valid_name(name) {
            return Err(UsersError(format!(
                "{}:{}: `{name}` is not a valid user name",
                path.display(),
                i + 1
            )));
        }
        PasswordHash::new(h).map_err(|e| {
            UsersError(format!(
                "{}:{}: {name}: not a password hash ({e}); use `mailroot user add`",
                path.display(),
                i + 1
            ))
        })?;
        users.push((name.to_string(), h.to_string()));
    }
    Ok(users)
}

/// Reads the file (a missing file is an empty list).
pub fn load(path: &Path) -> Result<Vec<(String, String)>, UsersError> {
    match fs::read_to_string(path) {
        Ok(t) => parse(path, &t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(UsersError(format!("{}: {e}", path.display()))),
    }
}

/// Writes the list atomically (temporary file, fsync, rename).
pub fn save(path: &Path, users: &[(String, String)]) -> Result<(), UsersError> {
    let mut text = String::from(
        "# mailroot users: name:argon2id-hash. Edit with `mailroot user add|del|list`.\n",
    );
    for (n, h) in users {
        text.push_str(&format!("{n}:{h}\n"));
    }
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        // Hashes are slow to attack, not impossible: only the owner reads the file.
        crate::os::restrict_to_owner(&tmp)?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| UsersError(format!("{}: {e}", path.display())))
}

/// (name, hash) pairs.
pub type UserList = Vec<(String, String)>;

/// The file's contents and its modification time when read.
type Cached = (Option<SystemTime>, UserList);

/// The users as the server sees them: reread when the file changes.
#[derive(Debug)]
pub struct Users {
    path: PathBuf,
    cached: Mutex<Cached>,
    /// Verified against when the user does not exist, so that a wrong name costs as long as a
    /// wrong password and the timing tells nothing. Made on first need (hashing costs memory and
    /// time that an idle server should not spend).
    dummy: std::sync::OnceLock<String>,
}

impl Users {
    /// Loads `path` (a missing file means no users yet).
    pub fn open(path: &Path) -> Result<Users, UsersError> {
        let list = load(path)?;
        let mtime = fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(Users {
            path: path.to_path_buf(),
            cached: Mutex::new((mtime, list)),
            dummy: std::sync::OnceLock::new(),
        })
    }

    /// Whether `user` with `password` is valid. Takes the same time whether or not the user exists.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let entry = {
            let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
            let mtime = fs::metadata(&self.path).and_then(|m| m.modified()).ok();
            if mtime != c.0 {
                match load(&self.path) {
                    Ok(list) => *c = (mtime, list),
                    Err(e) => log::error!("{e} (keeping the users read before)"),
                }
            }
            c.1.iter().find(|(n, _)| n == user).map(|(_, h)| h.clone())
        };
        let (h, exists) = match entry {
            Some(h) => (h, true),
            None => (
                self.dummy
                    .get_or_init(|| hash("not a real password").unwrap_or_default())
                    .clone(),
                false,
            ),
        };
        let ok = PasswordHash::new(&h).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        });
        ok && exists
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_and_reload() {
        let dir = std::env::temp_dir().join(format!("mailroot-users-{}", std::process::id()));
        let _ = fs::create_dir_all(&dir);
        let path = dir.join("users");
        let _ = fs::remove_file(&path);
        let users = Users::open(&path).unwrap();
        assert!(!users.verify("scanner", "s3cret"));
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains("s3cret"));
        save(&path, &[("scanner".into(), h)]).unwrap();
        // The file was absent when opened, so any modification time counts as a change.
        assert!(
            users.verify("scanner", "s3cret"),
            "the server rereads the file"
        );
        assert!(!users.verify("scanner", "wrong"));
        assert!(!users.verify("nobody", "s3cret"));
        assert!(parse(Path::new("u"), "x:plaintext\n").is_err());
        assert!(parse(Path::new("u"), "# c\n\n").unwrap().is_empty());
        let _ = fs::remove_dir_all(&dir);
    }
}
