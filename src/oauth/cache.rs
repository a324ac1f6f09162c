//! The token cache, one [`Credential`] per OAuth credential (token endpoint, client, mailbox, scope):
//! a token is fetched on first use and refreshed before it expires (when less than five minutes or
//! a quarter of its lifetime is left, whichever is less); one request at a time per credential, while
//! the other deliveries use the token still valid or wait for the new one. A token the next hop
//! refused is dropped and replaced once ([`Credential::renew`]). Tokens live in memory only; the one
//! thing written to disk is a rotated refresh token, durably, before the access token that came with
//! it is used.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::grant::{self, Issued};
use super::http::Http;
use crate::config::{Grant, OAuth};
use crate::net::tls::ClientTls;

/// The most a delivery waits for another thread's token request.
const WAIT: Duration = Duration::from_secs(60);

/// An access token; `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Arc<str>);

impl AccessToken {
    /// The token, for the one AUTH line that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<hidden>)")
    }
}

/// Why no token could be had: the endpoint's answer or the connection's failure, naming the
/// endpoint, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError(pub String);

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenError {}

/// Every credential of one delivery service.
pub struct Tokens {
    http: Arc<Http>,
    creds: Mutex<HashMap<String, Arc<Credential>>>,
}

impl Tokens {
    /// Token requests trust what `tls` trusts (the system's roots plus OutboundTlsCaFile).
    pub fn new(tls: ClientTls) -> Tokens {
        Tokens {
            http: Http::new(tls),
            creds: Mutex::new(HashMap::new()),
        }
    }

    /// The cache of `oauth`'s credential (routes with the same credential share it).
    pub fn credential(&self, oauth: &Arc<OAuth>) -> Arc<Credential> {
        let mut m = self.creds.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(oauth.cache_key())
            .or_insert_with(|| {
                Arc::new(Credential {
                    oauth: oauth.clone(),
                    http: self.http.clone(),
                    state: Mutex::new(State::default()),
                    done: Condvar::new(),
                })
            })
            .clone()
    }
}

#[derive(Default)]
struct State {
    token: Option<Cached>,
    /// A thread is asking the endpoint now.
    fetching: bool,
    /// Counts finished requests, so a waiter knows that the one it waited for is over.
    round: u64,
    /// The last request's failure, and its round.
    error: Option<(u64, TokenError)>,
    /// Failed requests in a row.
    failures: u32,
}

struct Cached {
    token: AccessToken,
    expires: Instant,
    lifetime: Duration,
}

impl Cached {
    /// Still good, and not yet due for a refresh.
    fn fresh(&self, now: Instant) -> bool {
        let margin = (self.lifetime / 4).min(Duration::from_secs(300));
        self.expires.saturating_duration_since(now) > margin
    }

    fn valid(&self, now: Instant) -> bool {
        self.expires > now
    }
}

/// One credential's cache.
pub struct Credential {
    oauth: Arc<OAuth>,
    http: Arc<Http>,
    state: Mutex<State>,
    done: Condvar,
}

impl Credential {
    /// The mailbox the tokens are for.
    pub fn user(&self) -> &str {
        &self.oauth.user
    }

    /// The token endpoint.
    pub fn token_url(&self) -> &str {
        &self.oauth.token_url
    }

    /// Failed token requests in a row (0 after a success).
    pub fn failures(&self) -> u32 {
        self.lock().failures
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A token good now: the cached one, or a new one when none is cached or it is due for refresh.
    pub fn token(&self) -> Result<AccessToken, TokenError> {
        let mut st = self.lock();
        let deadline = Instant::now() + WAIT;
        loop {
            let now = Instant::now();
            if let Some(c) = &st.token {
                // While another thread refreshes, a token that has not expired still serves.
                if c.fresh(now) || (st.fetching && c.valid(now)) {
                    return Ok(c.token.clone());
                }
            }
            if !st.fetching {
                break;
            }
            // Another thread is asking: wait for its answer rather than ask again.
            let round = st.round;
            while st.fetching && st.round == round {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(TokenError(format!(
                        "no answer from {} within {} s",
                        self.oauth.token_url,
                        WAIT.as_secs()
                    )));
                }
                st = self
                    .done
                    .wait_timeout(st, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            if let Some((r, e)) = &st.error
                && *r == round + 1
            {
                return Err(e.clone());
            }
        }
        st.fetching = true;
        drop(st);
        let result = self.fetch();
        let mut st = self.lock();
        st.fetching = false;
        st.round += 1;
        let out = match result {
            Ok(c) => {
                let t = c.token.clone();
                st.token = Some(c);
                st.error = None;
                st.failures = 0;
                Ok(t)
            }
            Err(e) => {
                st.failures += 1;
                st.error = Some((st.round, e.clone()));
                Err(e)
            }
        };
        drop(st);
        self.done.notify_all();
        out
    }

    /// The next hop refused `used`: forget it (unless another thread already replaced it) and get
    /// a new one.
    pub fn renew(&self, used: &AccessToken) -> Result<AccessToken, TokenError> {
        {
            let mut st = self.lock();
            if st.token.as_ref().is_some_and(|c| c.token == *used) {
                st.token = None;
            }
        }
        self.token()
    }

    /// One request to the endpoint.
    fn fetch(&self) -> Result<Cached, TokenError> {
        let o = &self.oauth;
        let fail = |m: String| TokenError(format!("OAuth token from {} failed: {m}", o.token_url));
        let refresh = match &o.grant {
            Grant::RefreshToken { file, .. } => Some(
                fs::read_to_string(file)
                    .map(|s| s.trim().to_string())
                    .map_err(|e| fail(format!("{}: {e}", file.display())))?,
            ),
            _ => None,
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let jti = format!(
            "{:016x}{:016x}",
            crate::os::random_u64(),
            crate::os::random_u64()
        );
        let form = grant::form(o, refresh.as_deref(), now, &jti).map_err(fail)?;
        let started = Instant::now();
        let (status, body) = self.http.post_form(&o.token_url, &form).map_err(fail)?;
        let Issued {
            access_token,
            lifetime,
            refresh_token,
        } = grant::parse_response(status, &body).map_err(fail)?;
        // The provider rotated the refresh token: the old one may already be void, so the new one
        // must be on disk before anything relies on the answer.
        if let (Grant::RefreshToken { file, .. }, Some(rt)) = (&o.grant, &refresh_token)
            && refresh.as_deref() != Some(rt.as_str())
        {
            write_durably(file, rt)
                .map_err(|e| fail(format!("cannot write back {}: {e}", file.display())))?;
            log::info!(
                "OAuth: {} rotated the refresh token; {} updated",
                o.token_url,
                file.display()
            );
        }
        log::info!(
            "OAuth: new token for {} from {} ({}, valid {} s)",
            o.user,
            o.token_url,
            o.grant.describe(),
            lifetime.as_secs()
        );
        Ok(Cached {
            token: AccessToken(access_token.into()),
            // Lifetime counts from the request, not the answer: never later than the endpoint meant.
            expires: started + lifetime,
            lifetime,
        })
    }
}

/// Replaces `file` with `content`: a temporary file beside it, flushed, renamed over it, and the
/// folder flushed, so a crash leaves the old token or the new one, never half of either.
fn write_durably(file: &Path, content: &str) -> std::io::Result<()> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "token".into());
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", crate::os::random_u64()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        // Only the owner may read a refresh token.
        let _ = crate::os::restrict_to_owner(&tmp);
        f.write_all(content.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, file)?;
        crate::os::sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_margin_is_the_lesser_of_five_minutes_and_a_quarter() {
        let now = Instant::now();
        let c = |left: u64, life: u64| Cached {
            token: AccessToken("t".into()),
            expires: now + Duration::from_secs(left),
            lifetime: Duration::from_secs(life),
        };
        // An hour's token: refreshed in its last five minutes.
        assert!(c(301, 3600).fresh(now));
        assert!(!c(299, 3600).fresh(now));
        // An eight-second token: in its last two.
        assert!(c(3, 8).fresh(now));
        assert!(!c(2, 8).fresh(now));
        assert!(c(1, 8).valid(now));
        assert!(!c(0, 8).valid(now));
    }

    #[test]
    fn write_back_replaces_the_file() {
        let dir = std::env::temp_dir().join(format!("mr-rt-{:x}", crate::os::random_u64()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("refresh");
        fs::write(&f, "old\n").unwrap();
        write_durably(&f, "new").unwrap();
        assert_eq!(fs::read_to_string(&f).unwrap(), "new\n");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary left");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn tokens_never_print() {
        let t = AccessToken("eyJsecret".into());
        assert!(!format!("{t:?}").contains("eyJ"));
    }
}
