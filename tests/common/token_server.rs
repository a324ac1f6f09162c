//! An OAuth 2.0 token endpoint over HTTPS on 127.0.0.1 ([`TokenServer`]) and the test-only RSA key
//! that signs client assertions and service-account JWTs ([`OAuthKey`]), for the XOAUTH2 tests.
//! Plain std threads, one per connection (on the kit's [`Acceptor`]), every read bounded by a
//! timeout; dropping the server closes the listener and every connection.
//!
//! ```ignore
//! let ca = TestCa::new();
//! let key = OAuthKey::fixture();
//! let tokens = TokenServer::builder()
//!     .client_secret("app-id", "s3cret")                 // client_credentials + client_secret
//!     .client_assertion("app-id", &key)                  // client_credentials + client_assertion
//!     .service_account("sa@p.iam.test", "kid-1", &key, "relay@tenant.test") // jwt-bearer
//!     .refresh_token("app-id", None, "rt-0").rotate_refresh_tokens()        // refresh_token
//!     .expect_scope("https://outlook.office365.com/.default")
//!     .lifetime_secs(4)
//!     .start(ca.leaf());
//! // mailroot: OAuthTokenUrl = tokens.url("/tenant/oauth2/v2.0/token"), OutboundTlsCaFile = the CA
//! let sink = Sink::builder().starttls(ca.leaf()).xoauth2(tokens.validator("relay@tenant.test")).start();
//! ```
//!
//! HTTP: any path is accepted and recorded. A request is a request line, headers and a body of
//! `Content-Length` bytes (or chunked); every answer is JSON with `Cache-Control: no-store` and, by
//! default, `Connection: close` (the connection closes after one answer; with
//! [`TokenServerBuilder::keep_alive`] it serves further requests until the client closes or stays
//! silent for [`IDLE`]). Only `POST` with an `application/x-www-form-urlencoded` body is a token
//! request (percent-decoded; other methods get 405):
//!
//! - `grant_type=client_credentials` with `client_id` and `client_secret`: the secret must be the
//!   client's; with `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and
//!   `client_assertion=<JWT>` instead: header `alg` RS256, `typ` JWT, `x5t#S256` = base64url(SHA-256 of
//!   the client certificate's DER), RS256 signature by the certificate's key, claims `aud` = the URL
//!   the request was posted to ([`TokenServer::url`] of its path), `iss` = `sub` = the client id, a
//!   `jti`, `exp` in the future (at most an hour away), `nbf`/`iat` not in the future.
//! - `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with `assertion=<JWT>` (a Google
//!   service account): header `alg` RS256, `typ` JWT, `kid` = the account's key id, signature by its key,
//!   claims `iss` = its `client_email`, `sub` = the expected mailbox, `aud` = the URL posted to, `scope`,
//!   `exp` in the future and at most an hour after `iat`.
//! - `grant_type=refresh_token` with `refresh_token`, `client_id` (and `client_secret` when the client
//!   has one): the refresh token must be the current one; with
//!   [`TokenServerBuilder::rotate_refresh_tokens`] the answer carries a new `refresh_token`, and from
//!   then on only that one is accepted.
//! - With [`TokenServerBuilder::expect_scope`], the grant's scope (the `scope` form field, or the
//!   Google JWT's `scope` claim) must be that value.
//!
//! Success: `200 {"access_token": …, "token_type": "Bearer", "expires_in": <lifetime>}` with a fresh
//! random token of [`TOKEN_LEN`] characters (an Entra access token is about that long). A bad client
//! or client assertion: `401 {"error":"invalid_client"}`; a bad refresh token or Google JWT:
//! `400 {"error":"invalid_grant"}`; an unknown grant: `400 {"error":"unsupported_grant_type"}`; while
//! [`TokenServer::set_down`] is on: `503 {"error":"temporarily_unavailable"}`. Every request is
//! recorded ([`TokenServer::requests`]: path, grant, client, decoded form, status, why it was
//! refused, the token issued, when it was read and answered), and every access token with its
//! lifetime and revocation ([`TokenServer::status`], [`TokenServer::status_at`],
//! [`TokenServer::revoke_all`]), so a test can tell whether a token was current when it was used.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64ct::{Base64UrlUnpadded, Encoding};
use rcgen::{CertificateParams, DnType, KeyPair};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, RsaKeyPair, UnparsedPublicKey};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::{Value, json};

use super::acceptor::Acceptor;
use super::sink::TlsCert;

/// A connection that sends nothing for this long is closed (also the bound of every read).
pub const IDLE: Duration = Duration::from_secs(10);
/// How long dropping a [`TokenServer`] waits for its connection threads.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// The length of every access token issued (characters, base64url).
pub const TOKEN_LEN: usize = 1600;
/// The most bytes of request line and headers; the most bytes of a body.
const MAX_HEAD: u64 = 64 * 1024;
const MAX_BODY: usize = 1024 * 1024;
/// Clock skew allowed for `nbf` and `iat`, in seconds.
const SKEW: u64 = 60;

/// The client-assertion type of RFC 7523 §2.2.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The JWT bearer grant type of RFC 7523 §2.1.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Seconds since 1970.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `n` random bytes as base64url without padding.
fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("system random numbers");
    Base64UrlUnpadded::encode_string(&bytes)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The test-only RSA key
// ---------------------------------------------------------------------------------------------

/// The test-only RSA key of tests/data/oauth (see its README) and a self-signed certificate made for
/// it at run time: what mailroot's `OAuthCertificateFile`/`OAuthKeyFile` and the Google
/// service-account file hold in the tests, and what the [`TokenServer`] verifies against.
pub struct OAuthKey {
    pkcs8_pem: String,
    pkcs1_pem: String,
    rsa: RsaKeyPair,
    cert_der: Vec<u8>,
    cert_pem: String,
}

/// Paths written by [`OAuthKey::write_files`].
#[derive(Debug, Clone)]
pub struct OAuthKeyFiles {
    /// The certificate, PEM.
    pub cert: PathBuf,
    /// The private key, PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    pub key: PathBuf,
    /// The same key, PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`).
    pub key_pkcs1: PathBuf,
}

impl OAuthKey {
    /// Reads the fixture key and self-signs a certificate for it (CN `mailroot OAuth test client`).
    pub fn fixture() -> OAuthKey {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/oauth");
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .unwrap_or_else(|e| panic!("read the fixture {}: {e}", dir.join(name).display()))
        };
        let pkcs8_pem = read("test-key.pem");
        let pkcs1_pem = read("test-key-pkcs1.pem");
        let key = KeyPair::from_pem(&pkcs8_pem).expect("the fixture is an RSA PKCS#8 key");
        let rsa = RsaKeyPair::from_pkcs8(key.serialized_der()).expect("ring reads the RSA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("certificate params");
        params
            .distinguished_name
            .push(DnType::CommonName, "mailroot OAuth test client");
        let cert = params
            .self_signed(&key)
            .expect("rcgen signs with the RSA key");
        OAuthKey {
            pkcs8_pem,
            pkcs1_pem,
            rsa,
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
        }
    }

    /// The private key, PKCS#8 PEM.
    pub fn pkcs8_pem(&self) -> &str {
        &self.pkcs8_pem
    }

    /// The private key, PKCS#1 PEM.
    pub fn pkcs1_pem(&self) -> &str {
        &self.pkcs1_pem
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The public key as PKCS#1 `RSAPublicKey` DER (what ring verifies with).
    pub fn public_key_pkcs1(&self) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        self.rsa.public_key().as_ref().to_vec()
    }

    /// The `x5t#S256` header value: base64url (no padding) of SHA-256 of the certificate DER.
    pub fn x5t_s256(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.cert_der);
        Base64UrlUnpadded::encode_string(digest.as_ref())
    }

    /// A compact JWT with `header` and `claims`, signed RS256 with this key (for the self-tests).
    pub fn sign_jwt(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            Base64UrlUnpadded::encode_string(header.to_string().as_bytes()),
            Base64UrlUnpadded::encode_string(claims.to_string().as_bytes())
        );
        let mut sig = vec![0u8; self.rsa.public().modulus_len()];
        self.rsa
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .expect("RS256 signature");
        format!("{input}.{}", Base64UrlUnpadded::encode_string(&sig))
    }

    /// Writes `oauth-cert.pem`, `oauth-key.pem` (PKCS#8) and `oauth-key-pkcs1.pem` into `dir`, the
    /// keys readable by their owner only (on Unix).
    pub fn write_files(&self, dir: &Path) -> OAuthKeyFiles {
        let files = OAuthKeyFiles {
            cert: dir.join("oauth-cert.pem"),
            key: dir.join("oauth-key.pem"),
            key_pkcs1: dir.join("oauth-key-pkcs1.pem"),
        };
        std::fs::write(&files.cert, &self.cert_pem).expect("write the OAuth certificate");
        write_private(&files.key, &self.pkcs8_pem, 0o600);
        write_private(&files.key_pkcs1, &self.pkcs1_pem, 0o600);
        files
    }

    /// A Google service-account key file (JSON) for `client_email` with this key.
    pub fn service_account_json(
        &self,
        client_email: &str,
        key_id: &str,
        token_uri: &str,
    ) -> String {
        let doc = json!({
            "type": "service_account",
            "project_id": "mailroot-test",
            "private_key_id": key_id,
            "private_key": self.pkcs8_pem,
            "client_email": client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        });
        serde_json::to_string_pretty(&doc).expect("JSON text")
    }
}

/// Writes `text` to `path` with Unix permissions `mode` (ignored elsewhere).
pub fn write_private(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }
    #[cfg(not(unix))]
    let _ = mode;
}

// ---------------------------------------------------------------------------------------------
// JWT
// ---------------------------------------------------------------------------------------------

/// A compact JWT taken apart: header, claims, whether its RS256 signature verifies with a key.
#[derive(Debug, Clone)]
pub struct Jwt {
    pub header: Value,
    pub claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

impl Jwt {
    /// Splits and decodes `text`; the error says what is malformed.
    pub fn parse(text: &str) -> Result<Jwt, String> {
        let parts: Vec<&str> = text.split('.').collect();
        let [h, c, s] = parts[..] else {
            return Err(format!("a JWT has 3 parts, this one {}", parts.len()));
        };
        let json_part = |p: &str, what: &str| -> Result<Value, String> {
            let raw = Base64UrlUnpadded::decode_vec(p)
                .map_err(|e| format!("JWT {what} is not base64url: {e}"))?;
            serde_json::from_slice(&raw).map_err(|e| format!("JWT {what} is not JSON: {e}"))
        };
        Ok(Jwt {
            header: json_part(h, "header")?,
            claims: json_part(c, "claims")?,
            signing_input: format!("{h}.{c}"),
            signature: Base64UrlUnpadded::decode_vec(s)
                .map_err(|e| format!("JWT signature is not base64url: {e}"))?,
        })
    }

    /// The RS256 signature verifies with `public_key_pkcs1` (an `RSAPublicKey` DER).
    pub fn verifies_with(&self, public_key_pkcs1: &[u8]) -> bool {
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public_key_pkcs1)
            .verify(self.signing_input.as_bytes(), &self.signature)
            .is_ok()
    }

    /// A header field as a string.
    pub fn head(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    /// A claim as a string.
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A claim as a number of seconds.
    pub fn time(&self, name: &str) -> Option<u64> {
        self.claims.get(name).and_then(Value::as_u64)
    }

    /// Header `alg` RS256, `typ` JWT, and the signature verifies with `key`.
    fn check_rs256(&self, key: &[u8]) -> Result<(), String> {
        if self.head("alg") != Some("RS256") {
            return Err(format!(
                "header alg {:?}, not RS256",
                self.header.get("alg")
            ));
        }
        if self.head("typ") != Some("JWT") {
            return Err(format!("header typ {:?}, not JWT", self.header.get("typ")));
        }
        if !self.verifies_with(key) {
            return Err("the RS256 signature does not verify".into());
        }
        Ok(())
    }

    /// `aud` is `url`, `exp` in the future and at most `max_life` s after `iat` (or now), `iat` and
    /// `nbf` (when present) not in the future.
    fn check_times(&self, url: &str, max_life: u64) -> Result<(), String> {
        let now = unix_now();
        if self.claim("aud") != Some(url) {
            return Err(format!("aud {:?}, not {url:?}", self.claims.get("aud")));
        }
        let exp = self.time("exp").ok_or("no numeric exp")?;
        if exp <= now {
            return Err(format!("exp {exp} is not after now ({now})"));
        }
        let iat = self.time("iat").ok_or("no numeric iat")?;
        if iat > now + SKEW {
            return Err(format!("iat {iat} is in the future (now {now})"));
        }
        if exp > iat.max(now) + max_life {
            return Err(format!(
                "exp {exp} is more than {max_life} s after iat {iat}"
            ));
        }
        if let Some(nbf) = self.claims.get("nbf") {
            let nbf = nbf.as_u64().ok_or("nbf is not a number")?;
            if nbf > now + SKEW {
                return Err(format!("nbf {nbf} is in the future (now {now})"));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
enum Credential {
    Secret {
        client_id: String,
        secret: String,
    },
    Assertion {
        client_id: String,
        x5t: String,
        public_key: Vec<u8>,
    },
    ServiceAccount {
        client_email: String,
        key_id: String,
        public_key: Vec<u8>,
        subject: String,
    },
    Refresh {
        client_id: String,
        secret: Option<String>,
    },
}

/// Options of a [`TokenServer`]; see the module docs.
#[derive(Clone)]
pub struct TokenServerBuilder {
    credentials: Vec<Credential>,
    refresh_token: Option<String>,
    rotate: bool,
    scope: Option<String>,
    lifetime: u64,
    expires_in_as_string: bool,
    delay: Duration,
    keep_alive: bool,
}

impl TokenServerBuilder {
    fn new() -> TokenServerBuilder {
        TokenServerBuilder {
            credentials: Vec::new(),
            refresh_token: None,
            rotate: false,
            scope: None,
            lifetime: 3600,
            expires_in_as_string: false,
            delay: Duration::ZERO,
            keep_alive: false,
        }
    }

    /// Client credentials with a secret.
    pub fn client_secret(mut self, client_id: &str, secret: &str) -> TokenServerBuilder {
        self.credentials.push(Credential::Secret {
            client_id: client_id.into(),
            secret: secret.into(),
        });
        self
    }

    /// Client credentials with a client assertion signed by `key` (its certificate's thumbprint in
    /// `x5t#S256`).
    pub fn client_assertion(mut self, client_id: &str, key: &OAuthKey) -> TokenServerBuilder {
        self.credentials.push(Credential::Assertion {
            client_id: client_id.into(),
            x5t: key.x5t_s256(),
            public_key: key.public_key_pkcs1(),
        });
        self
    }

    /// A Google service account `client_email` whose JWTs carry `kid` = `key_id`, are signed by
    /// `key` and ask for the mailbox `subject` (`sub`).
    pub fn service_account(
        mut self,
        client_email: &str,
        key_id: &str,
        key: &OAuthKey,
        subject: &str,
    ) -> TokenServerBuilder {
        self.credentials.push(Credential::ServiceAccount {
            client_email: client_email.into(),
            key_id: key_id.into(),
            public_key: key.public_key_pkcs1(),
            subject: subject.into(),
        });
        self
    }

    /// The refresh-token grant for `client_id` (with `secret`, when given, checked too), starting
    /// with `initial` as the one valid refresh token.
    pub fn refresh_token(
        mut self,
        client_id: &str,
        secret: Option<&str>,
        initial: &str,
    ) -> TokenServerBuilder {
        self.credentials.push(Credential::Refresh {
            client_id: client_id.into(),
            secret: secret.map(str::to_string),
        });
        self.refresh_token = Some(initial.into());
        self
    }

    /// Every refresh grant answers with a new refresh token, which replaces the old one.
    pub fn rotate_refresh_tokens(mut self) -> TokenServerBuilder {
        self.rotate = true;
        self
    }

    /// The scope every grant must ask for (default: not checked).
    pub fn expect_scope(mut self, scope: &str) -> TokenServerBuilder {
        self.scope = Some(scope.into());
        self
    }

    /// The lifetime of access tokens, `expires_in` (default 3600 s).
    pub fn lifetime_secs(mut self, secs: u64) -> TokenServerBuilder {
        self.lifetime = secs;
        self
    }

    /// `expires_in` as a JSON string (`"4"`), as Entra's v1 endpoint writes it.
    pub fn expires_in_as_string(mut self) -> TokenServerBuilder {
        self.expires_in_as_string = true;
        self
    }

    /// Waits this long before answering each request (so that overlapping requests show).
    pub fn delay(mut self, d: Duration) -> TokenServerBuilder {
        self.delay = d;
        self
    }

    /// Keeps connections open for further requests (default: `Connection: close`, one request per
    /// connection).
    pub fn keep_alive(mut self) -> TokenServerBuilder {
        self.keep_alive = true;
        self
    }

    /// Listens on 127.0.0.1 (an ephemeral port) with TLS presenting `cert` (e.g. `TestCa::leaf()`);
    /// panics on failure.
    pub fn start(self, cert: TlsCert) -> TokenServer {
        let tls = cert.server_config(false);
        let shared = Arc::new(Shared {
            cfg: self,
            port: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            state: Mutex::new(State::default()),
        });
        {
            let mut st = lock(&shared.state);
            st.refresh_token = shared.cfg.refresh_token.clone();
            st.refresh_tokens.extend(shared.cfg.refresh_token.clone());
        }
        let sh = shared.clone();
        let acceptor = Acceptor::bind(SocketAddr::from(([127, 0, 0, 1], 0)), move |n, stream| {
            connection(&sh, &tls, n, stream)
        })
        .expect("the token server listens on 127.0.0.1");
        shared
            .port
            .store(usize::from(acceptor.addr.port()), Ordering::SeqCst);
        TokenServer {
            addr: acceptor.addr,
            shared,
            acceptor: Some(acceptor),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What the server records
// ---------------------------------------------------------------------------------------------

/// One HTTP request.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// Connection number, from 0 in accept order.
    pub connection: usize,
    pub method: String,
    pub path: String,
    /// The `grant_type` ("" without one).
    pub grant: String,
    /// Who asked: `client_id`, or a service account's `iss` ("" when unknown).
    pub client: String,
    /// The decoded form (secrets included: for assertions, never print it in a log).
    pub form: BTreeMap<String, String>,
    /// The HTTP status answered.
    pub status: u16,
    /// The `error` answered (None on success).
    pub error: Option<String>,
    /// Why the request was refused, in words (None on success).
    pub why: Option<String>,
    /// The access token issued.
    pub token: Option<String>,
    /// The refresh token issued (rotation).
    pub new_refresh_token: Option<String>,
    /// When the whole request had been read.
    pub started: Instant,
    /// When the answer was ready to go out (after [`TokenServerBuilder::delay`]).
    pub ended: Instant,
}

impl TokenRequest {
    /// Answered 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Where an access token stands at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    /// Issued, not expired, not revoked.
    Current,
    Expired,
    Revoked,
    /// Never issued (by then).
    Unknown,
}

#[derive(Debug, Clone)]
struct Issued {
    token: String,
    at: Instant,
    expires: Instant,
    revoked: Option<Instant>,
}

#[derive(Default)]
struct State {
    requests: Vec<TokenRequest>,
    issued: Vec<Issued>,
    /// The refresh token accepted now.
    refresh_token: Option<String>,
    /// Every refresh token ever valid, in order.
    refresh_tokens: Vec<String>,
    tls_errors: Vec<String>,
}

struct Shared {
    cfg: TokenServerBuilder,
    port: AtomicUsize,
    down: AtomicBool,
    active: AtomicUsize,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn url(&self, path: &str) -> String {
        format!(
            "https://127.0.0.1:{}{path}",
            self.port.load(Ordering::SeqCst)
        )
    }

    fn status_at(&self, token: &str, t: Instant) -> TokenStatus {
        let st = self.state();
        match st.issued.iter().find(|i| i.token == token) {
            None => TokenStatus::Unknown,
            Some(i) if i.at > t => TokenStatus::Unknown,
            Some(i) if i.revoked.is_some_and(|r| r <= t) => TokenStatus::Revoked,
            Some(i) if i.expires <= t => TokenStatus::Expired,
            Some(_) => TokenStatus::Current,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The running server
// ---------------------------------------------------------------------------------------------

/// A running token endpoint; see the module docs. Stops on drop (bounded).
pub struct TokenServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<Acceptor>,
}

impl TokenServer {
    pub fn builder() -> TokenServerBuilder {
        TokenServerBuilder::new()
    }

    /// `https://127.0.0.1:<port><path>` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        self.shared.url(path)
    }

    /// The lifetime of the tokens it issues.
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.shared.cfg.lifetime)
    }

    /// Every request so far, in the order they were answered (each is recorded before its answer
    /// is written).
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared.state().requests.clone()
    }

    /// How many requests were answered so far.
    pub fn count(&self) -> usize {
        self.shared.state().requests.len()
    }

    /// How many requests got a token.
    pub fn granted(&self) -> usize {
        self.shared
            .state()
            .requests
            .iter()
            .filter(|r| r.ok())
            .count()
    }

    /// How many requests were refused for their credentials or grant (4xx; not the 503s of
    /// [`TokenServer::set_down`]).
    pub fn refused(&self) -> usize {
        self.shared
            .state()
            .requests
            .iter()
            .filter(|r| (400..500).contains(&r.status))
            .count()
    }

    /// Pairs of requests (indexes into [`TokenServer::requests`]) from the same client whose
    /// handling overlapped in time (from the end of one's reading to its answer).
    pub fn overlaps(&self) -> Vec<(usize, usize)> {
        let r = self.requests();
        let mut out = Vec::new();
        for i in 0..r.len() {
            for j in i + 1..r.len() {
                if r[i].client == r[j].client
                    && r[i].started < r[j].ended
                    && r[j].started < r[i].ended
                {
                    out.push((i, j));
                }
            }
        }
        out
    }

    /// Every access token issued so far, in order.
    pub fn issued(&self) -> Vec<String> {
        self.shared
            .state()
            .issued
            .iter()
            .map(|i| i.token.clone())
            .collect()
    }

    /// Every refresh token that was ever valid (the initial one first).
    pub fn refresh_tokens(&self) -> Vec<String> {
        self.shared.state().refresh_tokens.clone()
    }

    /// The refresh token accepted now.
    pub fn current_refresh_token(&self) -> Option<String> {
        self.shared.state().refresh_token.clone()
    }

    /// The client secrets it knows (for a scan of what must never be logged).
    pub fn secrets(&self) -> Vec<String> {
        self.shared
            .cfg
            .credentials
            .iter()
            .filter_map(|c| match c {
                Credential::Secret { secret, .. } => Some(secret.clone()),
                Credential::Refresh { secret, .. } => secret.clone(),
                _ => None,
            })
            .collect()
    }

    /// Where `token` stands now.
    pub fn status(&self, token: &str) -> TokenStatus {
        self.shared.status_at(token, Instant::now())
    }

    /// Where `token` stood at `t`.
    pub fn status_at(&self, token: &str, t: Instant) -> TokenStatus {
        self.shared.status_at(token, t)
    }

    /// `token` was issued here and is current now.
    pub fn is_valid(&self, token: &str) -> bool {
        self.status(token) == TokenStatus::Current
    }

    /// How many issued tokens are current now.
    pub fn current_tokens(&self) -> usize {
        let now = Instant::now();
        self.shared
            .state()
            .issued
            .iter()
            .filter(|i| i.revoked.is_none() && i.expires > now)
            .count()
    }

    /// Revokes every access token issued so far; returns how many were still current.
    pub fn revoke_all(&self) -> usize {
        let now = Instant::now();
        let mut st = self.shared.state();
        let mut n = 0;
        for i in st.issued.iter_mut().filter(|i| i.revoked.is_none()) {
            if i.expires > now {
                n += 1;
            }
            i.revoked = Some(now);
        }
        n
    }

    /// While `down`, every request gets `503 {"error":"temporarily_unavailable"}`.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// A validator for [`super::sink::SinkBuilder::xoauth2`]: the user is `mailbox` (ASCII
    /// case-insensitive) and the token is current.
    pub fn validator(&self, mailbox: &str) -> impl Fn(&str, &str) -> bool + Send + Sync + 'static {
        let shared = self.shared.clone();
        let mailbox = mailbox.to_string();
        move |user: &str, token: &str| {
            user.eq_ignore_ascii_case(&mailbox)
                && shared.status_at(token, Instant::now()) == TokenStatus::Current
        }
    }

    /// TLS handshakes that failed (e.g. a client that does not trust the certificate).
    pub fn tls_errors(&self) -> Vec<String> {
        self.shared.state().tls_errors.clone()
    }

    /// A one-line summary of every request (grant, client, status, error, when), for assertion
    /// messages; no secrets or tokens.
    pub fn summary(&self) -> String {
        let r = self.requests();
        let t0 = r.first().map(|x| x.started);
        r.iter()
            .map(|x| {
                let at = t0.map(|t| x.started.duration_since(t)).unwrap_or_default();
                format!(
                    "+{:.2}s..{:.2}s conn {} {} {} {} -> {} {}",
                    at.as_secs_f64(),
                    (at + x.ended.duration_since(x.started)).as_secs_f64(),
                    x.connection,
                    x.path,
                    x.grant,
                    x.client,
                    x.status,
                    x.why.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        drop(self.acceptor.take());
        let until = Instant::now() + STOP_WAIT;
        while self.shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

/// One parsed HTTP request.
struct Request {
    method: String,
    path: String,
    /// Names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One connection, on its own thread: the handshake, then requests until close.
fn connection(shared: &Arc<Shared>, tls: &Arc<ServerConfig>, n: usize, sock: TcpStream) {
    shared.active.fetch_add(1, Ordering::SeqCst);
    let _guard = ActiveGuard(shared.clone());
    let _ = sock.set_read_timeout(Some(IDLE));
    let _ = sock.set_write_timeout(Some(IDLE));
    let _ = sock.set_nodelay(true);
    let conn = match ServerConnection::new(tls.clone()) {
        Ok(c) => c,
        Err(e) => {
            shared.state().tls_errors.push(e.to_string());
            return;
        }
    };
    let mut stream = StreamOwned::new(conn, sock);
    while stream.conn.is_handshaking() {
        if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
            shared.state().tls_errors.push(e.to_string());
            return;
        }
    }
    let mut r = BufReader::new(stream);
    loop {
        let req = match read_request(&mut r) {
            Ok(Some(req)) => req,
            Ok(None) => break,
            Err(e) => {
                let body = json!({"error": "invalid_request", "error_description": e}).to_string();
                let _ = write_response(r.get_mut(), 400, &body, true);
                break;
            }
        };
        let started = Instant::now();
        let close = !shared.cfg.keep_alive
            || req
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let mut rec = answer(shared, &req);
        if !shared.cfg.delay.is_zero() {
            thread::sleep(shared.cfg.delay);
        }
        let body = rec.1.to_string();
        let status = rec.0.status;
        rec.0.connection = n;
        rec.0.started = started;
        rec.0.ended = Instant::now();
        // Recorded before the answer goes out: a client that has its answer finds it recorded.
        shared.state().requests.push(rec.0);
        let written = write_response(r.get_mut(), status, &body, close);
        if close || written.is_err() {
            break;
        }
    }
    let s = r.get_mut();
    s.conn.send_close_notify();
    let _ = s.flush();
}

/// A line up to LF (at most `limit` bytes), without CRLF; None at EOF before any byte.
fn read_line(r: &mut BufReader<Tls>, limit: &mut u64) -> Result<Option<String>, String> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(*limit)
        .read_until(b'\n', &mut buf)
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Ok(None);
    }
    *limit = limit.saturating_sub(n as u64);
    if buf.last() != Some(&b'\n') {
        return Err("request head too long or cut off".into());
    }
    let text = String::from_utf8(buf).map_err(|_| "request head is not UTF-8".to_string())?;
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()))
}

/// The next request; None when the client closed (or went silent) between requests.
fn read_request(r: &mut BufReader<Tls>) -> Result<Option<Request>, String> {
    let mut limit = MAX_HEAD;
    let line = match read_line(r, &mut limit) {
        Ok(Some(l)) => l,
        // EOF, a reset or the idle timeout between requests: the client is done.
        Ok(None) | Err(_) => return Ok(None),
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("malformed request line {line:?}"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not HTTP/1.x: {line:?}"));
    }
    let mut headers = Vec::new();
    loop {
        let h = read_line(r, &mut limit)?.ok_or("connection closed inside the head")?;
        if h.is_empty() {
            break;
        }
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("malformed header {h:?}"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path: target.to_string(),
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        req.body = read_chunked(r)?;
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?}"))?;
        if len > MAX_BODY {
            return Err(format!("body of {len} bytes is too large"));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)
            .map_err(|e| format!("read the body: {e}"))?;
        req.body = body;
    }
    Ok(Some(req))
}

/// A chunked body (RFC 9112 §7.1), trailers ignored.
fn read_chunked(r: &mut BufReader<Tls>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let mut limit = MAX_HEAD;
        let line = read_line(r, &mut limit)?.ok_or("connection closed inside a chunked body")?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {line:?}"))?;
        if size == 0 {
            // Trailers up to the empty line.
            while !read_line(r, &mut limit)?
                .ok_or("connection closed in the trailers")?
                .is_empty()
            {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err("chunked body too large".into());
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])
            .map_err(|e| format!("read a chunk: {e}"))?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)
            .map_err(|e| format!("read a chunk's end: {e}"))?;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_response(s: &mut Tls, status: u16, body: &str, close: bool) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nPragma: no-cache\r\nConnection: {}\r\n\r\n",
        reason(status),
        body.len(),
        if close { "close" } else { "keep-alive" }
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    s.flush()
}

/// `application/x-www-form-urlencoded` → name/value pairs (`+` is a space, `%XX` a byte).
pub fn parse_form(body: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Percent-decodes a form field (`+` is a space); a malformed `%` stays as it is.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of one hex digit.
fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

// ---------------------------------------------------------------------------------------------
// Grants
// ---------------------------------------------------------------------------------------------

/// A refusal: status, `error`, why.
type Refusal = (u16, &'static str, String);

fn invalid_client(why: impl Into<String>) -> Refusal {
    (401, "invalid_client", why.into())
}

fn invalid_grant(why: impl Into<String>) -> Refusal {
    (400, "invalid_grant", why.into())
}

/// The answer to one request: the record (connection and times filled in by the caller) and the JSON.
fn answer(shared: &Shared, req: &Request) -> (TokenRequest, Value) {
    let form = parse_form(&req.body);
    let now = Instant::now();
    let mut rec = TokenRequest {
        connection: 0,
        method: req.method.clone(),
        path: req.path.clone(),
        grant: form.get("grant_type").cloned().unwrap_or_default(),
        client: form.get("client_id").cloned().unwrap_or_default(),
        form: form.clone(),
        status: 200,
        error: None,
        why: None,
        token: None,
        new_refresh_token: None,
        started: now,
        ended: now,
    };
    let refuse = |rec: &mut TokenRequest, (status, error, why): Refusal| {
        rec.status = status;
        rec.error = Some(error.to_string());
        rec.why = Some(why.clone());
        json!({"error": error, "error_description": why})
    };
    if !req.method.eq_ignore_ascii_case("POST") {
        let body = refuse(
            &mut rec,
            (405, "invalid_request", format!("method {}", req.method)),
        );
        return (rec, body);
    }
    if shared.down.load(Ordering::SeqCst) {
        let body = refuse(
            &mut rec,
            (503, "temporarily_unavailable", "the server is down".into()),
        );
        return (rec, body);
    }
    if !req
        .header("content-type")
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
    {
        let body = refuse(
            &mut rec,
            (
                400,
                "invalid_request",
                format!("Content-Type {:?}", req.header("content-type")),
            ),
        );
        return (rec, body);
    }
    let url = shared.url(&req.path);
    let checked = match rec.grant.as_str() {
        "client_credentials" => client_credentials(shared, &form, &url),
        JWT_BEARER => jwt_bearer(shared, &form, &url).map(|iss| {
            rec.client = iss;
        }),
        "refresh_token" => refresh(shared, &form).map(|new| {
            rec.new_refresh_token = new;
        }),
        other => Err((
            400,
            "unsupported_grant_type",
            format!("grant_type {other:?}"),
        )),
    };
    if let Err(refusal) = checked {
        let body = refuse(&mut rec, refusal);
        return (rec, body);
    }
    let token = random_b64(TOKEN_LEN * 3 / 4);
    let lifetime = shared.cfg.lifetime;
    shared.state().issued.push(Issued {
        token: token.clone(),
        at: now,
        expires: now + Duration::from_secs(lifetime),
        revoked: None,
    });
    let mut body = json!({
        "token_type": "Bearer",
        "expires_in": if shared.cfg.expires_in_as_string { json!(lifetime.to_string()) } else { json!(lifetime) },
        "ext_expires_in": lifetime,
        "access_token": token,
    });
    if let Some(rt) = &rec.new_refresh_token {
        body["refresh_token"] = json!(rt);
    }
    rec.token = Some(token);
    (rec, body)
}

fn field<'f>(form: &'f BTreeMap<String, String>, name: &str) -> Option<&'f str> {
    form.get(name).map(String::as_str)
}

/// The form's `scope` against [`TokenServerBuilder::expect_scope`].
fn check_scope(shared: &Shared, got: Option<&str>) -> Result<(), Refusal> {
    match &shared.cfg.scope {
        Some(want) if got != Some(want.as_str()) => {
            Err((400, "invalid_scope", format!("scope {got:?}, not {want:?}")))
        }
        _ => Ok(()),
    }
}

fn client_credentials(
    shared: &Shared,
    form: &BTreeMap<String, String>,
    url: &str,
) -> Result<(), Refusal> {
    let client_id = field(form, "client_id").ok_or_else(|| invalid_client("no client_id"))?;
    if let Some(assertion) = field(form, "client_assertion") {
        if field(form, "client_assertion_type") != Some(ASSERTION_TYPE) {
            return Err(invalid_client(format!(
                "client_assertion_type {:?}",
                form.get("client_assertion_type")
            )));
        }
        let Some((x5t, key)) = shared.cfg.credentials.iter().find_map(|c| match c {
            Credential::Assertion {
                client_id: id,
                x5t,
                public_key,
            } if id == client_id => Some((x5t, public_key)),
            _ => None,
        }) else {
            return Err(invalid_client(format!(
                "no certificate for client {client_id}"
            )));
        };
        let jwt = Jwt::parse(assertion).map_err(invalid_client)?;
        if jwt.head("x5t#S256") != Some(x5t.as_str()) {
            return Err(invalid_client(format!(
                "x5t#S256 {:?} is not the certificate's {x5t}",
                jwt.header.get("x5t#S256")
            )));
        }
        jwt.check_rs256(key).map_err(invalid_client)?;
        jwt.check_times(url, 3600).map_err(invalid_client)?;
        for claim in ["iss", "sub"] {
            if jwt.claim(claim) != Some(client_id) {
                return Err(invalid_client(format!(
                    "{claim} {:?}, not {client_id}",
                    jwt.claims.get(claim)
                )));
            }
        }
        if jwt.claim("jti").is_none_or(str::is_empty) {
            return Err(invalid_client("no jti"));
        }
    } else {
        let secret = field(form, "client_secret").ok_or_else(|| invalid_client("no secret"))?;
        let known = shared.cfg.credentials.iter().any(|c| {
            matches!(c, Credential::Secret { client_id: id, secret: s } if id == client_id && s == secret)
        });
        if !known {
            return Err(invalid_client(format!(
                "wrong client_id or client_secret for {client_id}"
            )));
        }
    }
    check_scope(shared, field(form, "scope"))
}

/// The Google grant; the service account's email on success.
fn jwt_bearer(
    shared: &Shared,
    form: &BTreeMap<String, String>,
    url: &str,
) -> Result<String, Refusal> {
    let assertion = field(form, "assertion").ok_or_else(|| invalid_grant("no assertion"))?;
    let jwt = Jwt::parse(assertion).map_err(invalid_grant)?;
    let iss = jwt.claim("iss").unwrap_or_default().to_string();
    let Some((key_id, key, subject)) = shared.cfg.credentials.iter().find_map(|c| match c {
        Credential::ServiceAccount {
            client_email,
            key_id,
            public_key,
            subject,
        } if *client_email == iss => Some((key_id, public_key, subject)),
        _ => None,
    }) else {
        return Err(invalid_client(format!("no service account {iss:?}")));
    };
    if jwt.head("kid") != Some(key_id.as_str()) {
        return Err(invalid_grant(format!(
            "kid {:?}, not {key_id}",
            jwt.header.get("kid")
        )));
    }
    jwt.check_rs256(key).map_err(invalid_grant)?;
    jwt.check_times(url, 3600).map_err(invalid_grant)?;
    if jwt.claim("sub") != Some(subject.as_str()) {
        return Err(invalid_grant(format!(
            "sub {:?}, not {subject}",
            jwt.claims.get("sub")
        )));
    }
    if jwt.claim("scope").is_none_or(str::is_empty) {
        return Err((400, "invalid_scope", "no scope claim".into()));
    }
    check_scope(shared, jwt.claim("scope"))?;
    Ok(iss)
}

/// The refresh grant; the new refresh token when rotating.
fn refresh(shared: &Shared, form: &BTreeMap<String, String>) -> Result<Option<String>, Refusal> {
    let client_id = field(form, "client_id").ok_or_else(|| invalid_client("no client_id"))?;
    let Some(secret) = shared.cfg.credentials.iter().find_map(|c| match c {
        Credential::Refresh {
            client_id: id,
            secret,
        } if id == client_id => Some(secret),
        _ => None,
    }) else {
        return Err(invalid_client(format!("unknown client {client_id}")));
    };
    if let Some(s) = secret
        && field(form, "client_secret") != Some(s.as_str())
    {
        return Err(invalid_client("wrong client_secret"));
    }
    if shared.cfg.scope.is_some() {
        check_scope(shared, field(form, "scope"))?;
    }
    let got = field(form, "refresh_token").ok_or_else(|| invalid_grant("no refresh_token"))?;
    let mut st = shared.state();
    if st.refresh_token.as_deref() != Some(got) {
        let old = st.refresh_tokens.iter().any(|t| t == got);
        return Err(invalid_grant(if old {
            "a refresh token that was replaced"
        } else {
            "an unknown refresh token"
        }));
    }
    if !shared.cfg.rotate {
        return Ok(None);
    }
    let new = format!("rt-{}", random_b64(48));
    st.refresh_token = Some(new.clone());
    st.refresh_tokens.push(new.clone());
    Ok(Some(new))
}
