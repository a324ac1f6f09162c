//! A scriptable receiving SMTP server ("sink") on loopback for delivery tests: plain std threads, one
//! per connection, every wait bounded.
//!
//! ```ignore
//! let ca = TestCa::new();
//! let sink = Sink::builder()
//!     .bind("127.0.0.2")
//!     .starttls(ca.leaf())
//!     .on_rcpt("bad@", "550 5.1.1 No such user")
//!     .answers_for_first(1, Script::new().on_connect("421 4.3.2 busy"))
//!     .start();
//! // point mailroot at sink.addr (OutboundTlsCaFile = ca.ca_pem_path()), then:
//! let got = sink.wait_messages(1);
//! assert!(got[0].tls && !got[0].bare_line_endings);
//! ```
//!
//! Behaviour: greeting, EHLO (with the configured extensions, plus STARTTLS / AUTH when configured),
//! HELO, STARTTLS, AUTH LOGIN/PLAIN/XOAUTH2, MAIL, RCPT, DATA (dot-unstuffed), RSET, NOOP, VRFY, HELP,
//! QUIT, any number of transactions per connection. Commands are read from a buffer and answered one by one
//! in order, so pipelined input is handled; the replies to pipelined commands go out together, once no
//! whole command is left to answer. A scripted reply starting with `421` closes the connection after it
//! is sent, as RFC 5321 prescribes. Connections are numbered from 0 in accept order; a [`Script`]
//! chooses the answers of each connection (see [`SinkBuilder::answers_for_first`]).
//!
//! With [`SinkBuilder::count_only`] the sink records nothing but how many messages it accepted and when
//! the last one came ([`Sink::count`], [`Sink::last_at`]): the load generator's sink (benches/load).
//!
//! Like Microsoft 365 and Google: [`SinkBuilder::xoauth2`] accepts `AUTH XOAUTH2` with bearer tokens
//! that a validator of the test's judges (e.g. [`super::token_server::TokenServer::validator`]);
//! [`SinkBuilder::max_sessions_at_mail`] answers MAIL with `432 4.3.2` while more sessions than allowed
//! are sending; [`SinkBuilder::request_client_cert`] asks for a TLS client certificate and records it
//! ([`Delivered::client_cert`]).

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64ct::{Base64, Base64Unpadded, Encoding};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    ServerConnection, SignatureScheme, StreamOwned,
};

use super::acceptor::Acceptor;
use super::{TempDir, WAIT};

/// A connection idle this long is closed with 421 (so no thread can be pinned for ever).
const IDLE: Duration = Duration::from_secs(60);
/// How long dropping a [`Sink`] waits for its connection threads.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The names every leaf certificate of [`TestCa`] is valid for.
pub const LEAF_NAMES: [&str; 6] = [
    "localhost",
    "127.0.0.1",
    "127.0.0.2",
    "127.0.0.3",
    "127.0.0.4",
    "127.0.0.5",
];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A server certificate (leaf, CA:FALSE) and its private key.
#[derive(Clone)]
pub struct TlsCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM.
    pub key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

fn leaf_params(names: &[&str]) -> CertificateParams {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("valid subject alt names");
    params.is_ca = IsCa::ExplicitNoCa;
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("sink"));
    params.use_authority_key_identifier_extension = true;
    params.key_usages.push(KeyUsagePurpose::DigitalSignature);
    params
        .extended_key_usages
        .push(ExtendedKeyUsagePurpose::ServerAuth);
    params
}

impl TlsCert {
    fn from_parts(cert: rcgen::Certificate, key: KeyPair) -> TlsCert {
        TlsCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A self-signed leaf (CA:FALSE) for `names`, signed by no CA a client trusts.
    pub fn self_signed(names: &[&str]) -> TlsCert {
        let key = KeyPair::generate().expect("key");
        let cert = leaf_params(names).self_signed(&key).expect("self-signed");
        TlsCert::from_parts(cert, key)
    }

    /// The certificate, DER.
    pub fn der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// Writes `cert.pem` and `key.pem` into `dir`; returns (cert path, key path).
    pub fn write_pem(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let c = dir.join("cert.pem");
        let k = dir.join("key.pem");
        std::fs::write(&c, &self.cert_pem).expect("write cert.pem");
        std::fs::write(&k, &self.key_pem).expect("write key.pem");
        (c, k)
    }

    /// A rustls server configuration presenting this certificate (TLS 1.2 and 1.3, or 1.2 only).
    pub fn server_config(&self, tls12_only: bool) -> Arc<ServerConfig> {
        self.server_config_with(tls12_only, None)
    }

    /// [`TlsCert::server_config`] that asks the client for a certificate, judged by `clients`
    /// (None: it does not ask).
    fn server_config_with(
        &self,
        tls12_only: bool,
        clients: Option<Arc<dyn ClientCertVerifier>>,
    ) -> Arc<ServerConfig> {
        let builder = ServerConfig::builder_with_provider(provider());
        let builder = if tls12_only {
            builder.with_protocol_versions(&[&rustls::version::TLS12])
        } else {
            builder.with_safe_default_protocol_versions()
        }
        .expect("protocol versions");
        let builder = match clients {
            None => builder.with_no_client_auth(),
            Some(v) => builder.with_client_cert_verifier(v),
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        Arc::new(
            builder
                .with_single_cert(vec![self.cert_der.clone()], key)
                .expect("server certificate"),
        )
    }
}

/// A test certificate authority made with rcgen, and a leaf it signed for [`LEAF_NAMES`].
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    leaf: TlsCert,
    dir: TempDir,
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "mailroot test CA");
        params.key_usages.push(KeyUsagePurpose::DigitalSignature);
        params.key_usages.push(KeyUsagePurpose::KeyCertSign);
        params.key_usages.push(KeyUsagePurpose::CrlSign);
        let key = KeyPair::generate().expect("CA key");
        let ca = params.self_signed(&key).expect("CA certificate");
        let issuer = Issuer::new(params, key);
        let mut this = TestCa {
            issuer,
            ca_der: ca.der().clone(),
            ca_pem: ca.pem(),
            leaf: TlsCert::self_signed(&["placeholder"]),
            dir: TempDir::new("ca"),
        };
        this.leaf = this.leaf_for(&LEAF_NAMES);
        this
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_der.clone()
    }

    /// Writes the CA certificate as PEM into this CA's temp dir (removed with the `TestCa`) and
    /// returns the path, e.g. for `OutboundTlsCaFile`.
    pub fn ca_pem_path(&self) -> PathBuf {
        let p = self.dir.path().join("ca.pem");
        std::fs::write(&p, &self.ca_pem).expect("write ca.pem");
        p
    }

    /// The leaf signed by this CA for `localhost` and 127.0.0.1 … 127.0.0.5.
    pub fn leaf(&self) -> TlsCert {
        self.leaf.clone()
    }

    /// A leaf signed by this CA for other names (e.g. for name-mismatch tests).
    pub fn leaf_for(&self, names: &[&str]) -> TlsCert {
        let key = KeyPair::generate().expect("leaf key");
        let cert = leaf_params(names)
            .signed_by(&key, &self.issuer)
            .expect("signed leaf");
        TlsCert::from_parts(cert, key)
    }

    /// A leaf with an RSA key (the test RSA key of tests/data/oauth) signed by this CA for `names`:
    /// the other leaves are ECDSA P-256.
    pub fn rsa_leaf_for(&self, names: &[&str]) -> TlsCert {
        let pem = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/oauth/test-key.pem"),
        )
        .expect("the test RSA key");
        let key = KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).expect("RSA key");
        let cert = leaf_params(names)
            .signed_by(&key, &self.issuer)
            .expect("signed RSA leaf");
        TlsCert::from_parts(cert, key)
    }

    /// A client certificate (leaf, CA:FALSE, extended key usage clientAuth) signed by this CA for
    /// `name`, e.g. for `OutboundTlsCertificateFile`.
    pub fn client_leaf(&self, name: &str) -> TlsCert {
        let mut params = CertificateParams::new(vec![name.to_string()]).expect("a DNS name");
        params.is_ca = IsCa::ExplicitNoCa;
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages.push(KeyUsagePurpose::DigitalSignature);
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
        let key = KeyPair::generate().expect("client key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signed client leaf");
        TlsCert::from_parts(cert, key)
    }

    /// A leaf signed by this CA for [`LEAF_NAMES`] that expired in 2001.
    pub fn expired_leaf(&self) -> TlsCert {
        let mut params = leaf_params(&LEAF_NAMES);
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed leaf");
        TlsCert::from_parts(cert, key)
    }

    /// A self-signed leaf for [`LEAF_NAMES`] that this CA did NOT sign (untrusted by clients that
    /// trust only this CA).
    pub fn untrusted_leaf(&self) -> TlsCert {
        TlsCert::self_signed(&LEAF_NAMES)
    }

    /// A rustls client configuration trusting only this CA.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("CA root");
        Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// A rustls client configuration trusting only this CA that presents `cert` (e.g.
    /// [`TestCa::client_leaf`]) when the server asks for a client certificate.
    pub fn client_config_with_cert(&self, cert: &TlsCert) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("CA root");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone()));
        Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(roots)
                .with_client_auth_cert(vec![cert.der()], key)
                .expect("client certificate"),
        )
    }
}

/// Which client certificates the sink's TLS asks for (see [`SinkBuilder::request_client_cert`]).
#[derive(Clone)]
enum ClientCerts {
    /// Any certificate (or none) is taken and recorded, unverified.
    Any,
    /// A certificate must chain to this CA root and be meant for client authentication; a client
    /// without one is still accepted.
    TrustedBy(CertificateDer<'static>),
}

impl ClientCerts {
    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        match self {
            ClientCerts::Any => Arc::new(AnyClientCert(provider())),
            ClientCerts::TrustedBy(root) => {
                let mut roots = RootCertStore::empty();
                roots.add(root.clone()).expect("CA root");
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .allow_unauthenticated()
                    .build()
                    .expect("client certificate verifier")
            }
        }
    }
}

/// Asks for a client certificate and takes any, or none: the sink only records it. The handshake
/// signature is still checked (the client holds the certificate's key).
#[derive(Debug)]
struct AnyClientCert(Arc<rustls::crypto::CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------------
// Base64 (AUTH)
// ---------------------------------------------------------------------------------------------

/// Standard base64, padding optional; None if malformed.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    Base64::decode_vec(text)
        .or_else(|_| Base64Unpadded::decode_vec(text))
        .ok()
}

/// The error challenge of a refused XOAUTH2 login, before base64 (as Microsoft 365 sends it).
pub const XOAUTH2_ERROR: &str =
    r#"{"status":"401","schemes":"bearer","scope":"https://outlook.office.com/.default"}"#;

/// `user=<mailbox>\x01auth=Bearer <token>\x01\x01` → (mailbox, token, whether it had exactly that form).
pub fn parse_xoauth2(raw: &[u8]) -> (String, String, bool) {
    let text = String::from_utf8_lossy(raw);
    let mut user = None;
    let mut token = None;
    let body = text.strip_suffix("\x01\x01");
    for part in body.unwrap_or(&text).split('\x01') {
        if let Some(u) = part.strip_prefix("user=") {
            user = Some(u.to_string());
        } else if let Some(t) = part.strip_prefix("auth=Bearer ") {
            token = Some(t.to_string());
        } else if !part.is_empty() {
            return (user.unwrap_or_default(), token.unwrap_or_default(), false);
        }
    }
    let well_formed = body.is_some_and(|b| b.split('\x01').count() == 2)
        && user.as_deref().is_some_and(|u| !u.is_empty())
        && token.as_deref().is_some_and(|t| !t.is_empty());
    (
        user.unwrap_or_default(),
        token.unwrap_or_default(),
        well_formed,
    )
}

/// The client's half of XOAUTH2: `base64("user=" mailbox "\x01auth=Bearer " token "\x01\x01")`.
pub fn xoauth2_response(user: &str, token: &str) -> String {
    Base64::encode_string(format!("user={user}\x01auth=Bearer {token}\x01\x01").as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Scripts
// ---------------------------------------------------------------------------------------------

/// A point of the SMTP dialogue where [`Script::drop_at`] closes the socket without answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Right after accept: no greeting (and, for implicit TLS, no handshake).
    Connect,
    /// On EHLO or HELO.
    Ehlo,
    /// On MAIL.
    Mail,
    /// On the first RCPT.
    Rcpt,
    /// On the DATA command (before 354).
    Data,
    /// After the final dot has been read (the message is recorded with `reply: None`).
    EndOfData,
}

/// The answers of one connection. Replies are full reply lines such as `"550 5.1.1 No such user"`;
/// a reply with several `\n`-separated lines is sent as a multi-line reply.
#[derive(Debug, Clone, Default)]
pub struct Script {
    on_connect: Option<String>,
    on_starttls: Option<String>,
    on_mail: Option<String>,
    on_rcpt: Vec<(String, String)>,
    on_data_command: Option<String>,
    on_data: Option<String>,
    drops: HashSet<Stage>,
}

impl Script {
    pub fn new() -> Script {
        Script::default()
    }
    /// The greeting instead of `220 …`. `421 …` closes right after; any other non-2xx greeting
    /// answers every later command but QUIT with 503.
    pub fn on_connect(mut self, reply: &str) -> Script {
        self.on_connect = Some(reply.to_string());
        self
    }
    /// The answer to STARTTLS instead of `220` + handshake (e.g. `454 4.7.0 TLS not available`).
    pub fn on_starttls(mut self, reply: &str) -> Script {
        self.on_starttls = Some(reply.to_string());
        self
    }
    /// The answer to every MAIL command.
    pub fn on_mail(mut self, reply: &str) -> Script {
        self.on_mail = Some(reply.to_string());
        self
    }
    /// The answer to RCPT commands whose argument contains `address_substring` (ASCII
    /// case-insensitive); the first matching rule wins, others get 250.
    pub fn on_rcpt(mut self, address_substring: &str, reply: &str) -> Script {
        self.on_rcpt
            .push((address_substring.to_ascii_lowercase(), reply.to_string()));
        self
    }
    /// The answer to the DATA command instead of 354.
    pub fn on_data_command(mut self, reply: &str) -> Script {
        self.on_data_command = Some(reply.to_string());
        self
    }
    /// The answer after the final dot.
    pub fn on_data(mut self, reply: &str) -> Script {
        self.on_data = Some(reply.to_string());
        self
    }
    /// Close the socket without answering at `stage` (may be given several times).
    pub fn drop_at(mut self, stage: Stage) -> Script {
        self.drops.insert(stage);
        self
    }
    fn drops(&self, stage: Stage) -> bool {
        self.drops.contains(&stage)
    }
    fn rcpt_reply(&self, arg: &str) -> Option<&str> {
        let lower = arg.to_ascii_lowercase();
        self.on_rcpt
            .iter()
            .find(|(sub, _)| lower.contains(sub.as_str()))
            .map(|(_, r)| r.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// What the sink records
// ---------------------------------------------------------------------------------------------

/// One transaction that reached the end of DATA.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The EHLO/HELO argument of the session.
    pub helo: String,
    /// The session greeted with EHLO (false: HELO).
    pub ehlo: bool,
    pub tls: bool,
    /// e.g. `"TLSv1_3"`.
    pub tls_version: Option<String>,
    /// The SNI the client sent, if any.
    pub sni: Option<String>,
    /// The DER of the certificate the client presented in TLS (only with
    /// [`SinkBuilder::request_client_cert`]).
    pub client_cert: Option<Vec<u8>>,
    pub auth_user: Option<String>,
    /// Everything after `MAIL FROM:`, e.g. `"<a@b.test> SIZE=123 BODY=8BITMIME"`.
    pub mail_from: String,
    /// Accepted recipients, everything after `RCPT TO:` (with parameters).
    pub rcpts: Vec<String>,
    /// Recipients that got a non-2xx reply, same form.
    pub rejected_rcpts: Vec<String>,
    /// The content, dot-unstuffed, line endings as received, without the final dot line.
    pub data: Vec<u8>,
    /// A bare LF or bare CR was seen in DATA (including the terminator).
    pub bare_line_endings: bool,
    /// Longest DATA line in bytes, without its line ending, before unstuffing.
    pub longest_line: usize,
    /// The reply sent after the final dot; None when dropped at [`Stage::EndOfData`].
    pub reply: Option<String>,
    /// Connection number, from 0 in accept order.
    pub connection: usize,
    /// When the final dot was read (before the reply went out).
    pub at: Instant,
}

/// The address inside `<…>` of a MAIL/RCPT argument.
pub fn path_of(arg: &str) -> String {
    match (arg.find('<'), arg.find('>')) {
        (Some(a), Some(b)) if a < b => arg[a + 1..b].to_string(),
        _ => arg.split_whitespace().next().unwrap_or("").to_string(),
    }
}

impl Delivered {
    /// The data as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).to_string()
    }
    /// The reverse-path without brackets or parameters.
    pub fn sender_addr(&self) -> String {
        path_of(&self.mail_from)
    }
    /// The accepted recipient addresses without brackets or parameters.
    pub fn rcpt_addrs(&self) -> Vec<String> {
        self.rcpts.iter().map(|r| path_of(r)).collect()
    }
    /// The final reply was 2xx.
    pub fn accepted(&self) -> bool {
        self.reply.as_deref().is_some_and(|r| r.starts_with('2'))
    }
    /// The value of the first `Subject:` header, trimmed ("" without one).
    pub fn subject(&self) -> String {
        self.text()
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or("")
            .trim()
            .to_string()
    }
    /// The `Final-Recipient` addresses of a delivery status notification.
    pub fn final_recipients(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter_map(|l| l.strip_prefix("Final-Recipient: rfc822;"))
            .map(|a| a.trim().to_string())
            .collect()
    }
}

/// One AUTH exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAttempt {
    pub mechanism: String,
    pub user: String,
    pub success: bool,
    pub connection: usize,
}

/// One `AUTH XOAUTH2` exchange (see [`SinkBuilder::xoauth2`]).
#[derive(Debug, Clone)]
pub struct XOAuth2Attempt {
    /// `user=` of the initial response.
    pub user: String,
    /// The bearer token.
    pub token: String,
    /// The response had exactly the form `user=…\x01auth=Bearer …\x01\x01`.
    pub well_formed: bool,
    /// The validator accepted it (answered 235).
    pub success: bool,
    /// After a refusal: the line the client sent in answer to the `334` error challenge (RFC 7628
    /// wants an empty one); None on success or when the client closed instead.
    pub ack: Option<String>,
    /// The session was in TLS.
    pub tls: bool,
    pub connection: usize,
    /// When the validator judged the token.
    pub at: Instant,
}

#[derive(Default)]
struct State {
    transactions: Vec<Delivered>,
    commands: Vec<(usize, String)>,
    injected: Vec<Vec<u8>>,
    tls_errors: Vec<String>,
    auth_attempts: Vec<AuthAttempt>,
    xoauth2_attempts: Vec<XOAuth2Attempt>,
    /// (connection, DER) of every client certificate presented.
    client_certs: Vec<(usize, Vec<u8>)>,
}

struct Shared {
    connections: AtomicUsize,
    active: AtomicUsize,
    /// The most connections open at once so far.
    peak: AtomicUsize,
    /// Sessions admitted under [`SinkBuilder::max_sessions`] and not yet ended.
    admitted: AtomicUsize,
    /// Connections turned away by [`SinkBuilder::max_sessions`].
    refused: AtomicUsize,
    /// Sessions open now: from accept until QUIT is read or the connection ends (see
    /// [`Sink::peak_sessions`]).
    sessions: AtomicUsize,
    /// The most sessions open at once so far.
    peak_sessions: AtomicUsize,
    /// Sessions holding a sending slot under [`SinkBuilder::max_sessions_at_mail`].
    mail_slots: AtomicUsize,
    /// MAIL commands refused by [`SinkBuilder::max_sessions_at_mail`].
    mail_refused: AtomicUsize,
    /// Messages accepted (final reply 2xx).
    accepted: AtomicU64,
    /// When the last one was accepted, in nanoseconds since `epoch`.
    last_ns: AtomicU64,
    epoch: Instant,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn counted(&self) {
        let ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // Time first, so that whoever sees the new count sees a time at least this late.
        self.last_ns.fetch_max(ns, Ordering::SeqCst);
        self.accepted.fetch_add(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct AuthConfig {
    user: String,
    pass: String,
    mechanisms: Vec<String>,
}

/// Judges an XOAUTH2 login: (user, bearer token) → accepted.
type Validator = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

struct Config {
    hostname: String,
    extensions: Vec<String>,
    no_ehlo: bool,
    starttls: Option<Arc<ServerConfig>>,
    implicit_tls: Option<Arc<ServerConfig>>,
    auth: Option<AuthConfig>,
    require_auth: bool,
    require_tls: bool,
    auth_only_after_tls: bool,
    phases: Vec<(usize, Script)>,
    default_script: Script,
    /// Keep commands and transactions (false: only count, see [`SinkBuilder::count_only`]).
    record: bool,
    /// See [`SinkBuilder::max_sessions`].
    max_sessions: Option<(usize, String)>,
    /// See [`SinkBuilder::xoauth2`].
    xoauth2: Option<Validator>,
    /// See [`SinkBuilder::max_sessions_at_mail`].
    mail_sessions: Option<(usize, String)>,
}

impl Config {
    /// The mechanisms of `AUTH` in EHLO: those of [`SinkBuilder::auth`], then XOAUTH2.
    fn auth_mechanisms(&self) -> Vec<String> {
        let mut m = self
            .auth
            .as_ref()
            .map(|a| a.mechanisms.clone())
            .unwrap_or_default();
        if self.xoauth2.is_some() && !m.iter().any(|x| x == "XOAUTH2") {
            m.push("XOAUTH2".to_string());
        }
        m
    }

    fn script_for(&self, conn: usize) -> &Script {
        let mut start = 0;
        for (n, s) in &self.phases {
            if conn < start + n {
                return s;
            }
            start += n;
        }
        &self.default_script
    }
}

/// Options of a [`Sink`]; see the module docs.
#[derive(Clone)]
pub struct SinkBuilder {
    ip: IpAddr,
    port: u16,
    hostname: String,
    extensions: Vec<String>,
    no_ehlo: bool,
    starttls: Option<TlsCert>,
    implicit_tls: Option<TlsCert>,
    tls12_only: bool,
    auth: Option<AuthConfig>,
    require_auth: bool,
    require_tls: bool,
    auth_only_after_tls: bool,
    phases: Vec<(usize, Script)>,
    script: Script,
    record: bool,
    max_sessions: Option<(usize, String)>,
    xoauth2: Option<Validator>,
    mail_sessions: Option<(usize, String)>,
    client_certs: Option<ClientCerts>,
}

impl Default for SinkBuilder {
    fn default() -> Self {
        SinkBuilder::new()
    }
}

impl SinkBuilder {
    pub fn new() -> SinkBuilder {
        SinkBuilder {
            ip: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            hostname: "sink.test".to_string(),
            extensions: [
                "PIPELINING",
                "8BITMIME",
                "SIZE 10485760",
                "ENHANCEDSTATUSCODES",
                "DSN",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            no_ehlo: false,
            starttls: None,
            implicit_tls: None,
            tls12_only: false,
            auth: None,
            require_auth: false,
            require_tls: false,
            auth_only_after_tls: false,
            phases: Vec::new(),
            script: Script::new(),
            record: true,
            max_sessions: None,
            xoauth2: None,
            mail_sessions: None,
            client_certs: None,
        }
    }

    /// The loopback address to bind (default 127.0.0.1); panics if not loopback.
    pub fn bind(mut self, ip: &str) -> SinkBuilder {
        let ip: IpAddr = ip.parse().expect("an IP address");
        assert!(ip.is_loopback(), "the sink binds loopback only, not {ip}");
        self.ip = ip;
        self
    }
    /// The port to bind (default 0 = ephemeral).
    pub fn port(mut self, port: u16) -> SinkBuilder {
        self.port = port;
        self
    }
    /// The name in the greeting and EHLO reply (default `sink.test`).
    pub fn hostname(mut self, name: &str) -> SinkBuilder {
        self.hostname = name.to_string();
        self
    }
    /// The EHLO keywords (replacing the default PIPELINING, 8BITMIME, SIZE 10485760,
    /// ENHANCEDSTATUSCODES, DSN); STARTTLS and AUTH are added when configured.
    pub fn ehlo_extensions<I, S>(mut self, extensions: I) -> SinkBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.extensions = extensions
            .into_iter()
            .map(|s| s.as_ref().to_string())
            .collect();
        self
    }
    /// EHLO is answered with 502, so the client must fall back to HELO.
    pub fn no_ehlo(mut self) -> SinkBuilder {
        self.no_ehlo = true;
        self
    }
    /// Advertise STARTTLS and do the handshake with `cert`.
    pub fn starttls(mut self, cert: TlsCert) -> SinkBuilder {
        self.starttls = Some(cert);
        self
    }
    /// TLS from the first byte (like port 465) with `cert`.
    pub fn implicit_tls(mut self, cert: TlsCert) -> SinkBuilder {
        self.implicit_tls = Some(cert);
        self
    }
    /// Offer TLS 1.2 only (default: 1.2 and 1.3).
    pub fn tls12_only(mut self) -> SinkBuilder {
        self.tls12_only = true;
        self
    }
    /// MAIL before STARTTLS gets `530 5.7.0`.
    pub fn require_tls(mut self) -> SinkBuilder {
        self.require_tls = true;
        self
    }
    /// Advertise `AUTH <mechanisms>` (LOGIN and/or PLAIN) and accept `user`/`pass`.
    pub fn auth(mut self, user: &str, pass: &str, mechanisms: &[&str]) -> SinkBuilder {
        self.auth = Some(AuthConfig {
            user: user.to_string(),
            pass: pass.to_string(),
            mechanisms: mechanisms.iter().map(|m| m.to_ascii_uppercase()).collect(),
        });
        self
    }
    /// MAIL without successful AUTH gets `530 5.7.0`.
    pub fn require_auth(mut self) -> SinkBuilder {
        self.require_auth = true;
        self
    }
    /// AUTH is advertised only inside TLS; AUTH in plaintext gets `538 5.7.11`.
    pub fn auth_only_after_tls(mut self) -> SinkBuilder {
        self.auth_only_after_tls = true;
        self
    }
    /// See [`Script::on_connect`] (applies to connections not covered by `answers_for_first`).
    pub fn on_connect(mut self, reply: &str) -> SinkBuilder {
        self.script = self.script.on_connect(reply);
        self
    }
    /// See [`Script::on_starttls`].
    pub fn on_starttls(mut self, reply: &str) -> SinkBuilder {
        self.script = self.script.on_starttls(reply);
        self
    }
    /// See [`Script::on_mail`].
    pub fn on_mail(mut self, reply: &str) -> SinkBuilder {
        self.script = self.script.on_mail(reply);
        self
    }
    /// See [`Script::on_rcpt`].
    pub fn on_rcpt(mut self, address_substring: &str, reply: &str) -> SinkBuilder {
        self.script = self.script.on_rcpt(address_substring, reply);
        self
    }
    /// See [`Script::on_data_command`].
    pub fn on_data_command(mut self, reply: &str) -> SinkBuilder {
        self.script = self.script.on_data_command(reply);
        self
    }
    /// See [`Script::on_data`].
    pub fn on_data(mut self, reply: &str) -> SinkBuilder {
        self.script = self.script.on_data(reply);
        self
    }
    /// See [`Script::drop_at`].
    pub fn drop_at(mut self, stage: Stage) -> SinkBuilder {
        self.script = self.script.drop_at(stage);
        self
    }
    /// The next `n_connections` connections (the first ones, on the first call) are answered by
    /// `script` instead of the builder's own script; calls chain, e.g.
    /// `.answers_for_first(2, busy).answers_for_first(1, drop)` = connections 0-1 busy, 2 dropped,
    /// 3.. the default.
    pub fn answers_for_first(mut self, n_connections: usize, script: Script) -> SinkBuilder {
        self.phases.push((n_connections, script));
        self
    }

    /// Record nothing but the number of accepted messages and the time of the last one (memory and
    /// time per message stay constant, for load).
    pub fn count_only(mut self) -> SinkBuilder {
        self.record = false;
        self
    }

    /// At most `n` sessions at once, like Microsoft 365's 3 per mailbox: a connection that arrives
    /// while `n` are open gets `reply` (e.g. `432 4.3.2 STOREDRV.ClientSubmit; sender thread limit
    /// exceeded`) as its greeting and is closed at once, without a session; [`Sink::refused`]
    /// counts them (they count in [`Sink::connections`] too).
    pub fn max_sessions(mut self, n: usize, reply: &str) -> SinkBuilder {
        self.max_sessions = Some((n, reply.to_string()));
        self
    }

    /// Advertise `AUTH XOAUTH2` (after the mechanisms of [`SinkBuilder::auth`], if any) and accept
    /// `AUTH XOAUTH2 <base64("user=" mailbox "\x01auth=Bearer " token "\x01\x01")>` (the initial
    /// response on the command line, which may be several KB; or after a `334 `) when
    /// `validator(mailbox, token)` says so: `235 2.7.0`. Otherwise the sink answers
    /// `334 <base64 of` [`XOAUTH2_ERROR`]`>`, reads the client's (empty) line and answers
    /// `535 5.7.3 Authentication unsuccessful`, as Microsoft 365 does. Each exchange is recorded in
    /// [`Sink::xoauth2_attempts`] and [`Sink::auth_attempts`] (mechanism `XOAUTH2`); a success counts
    /// for [`SinkBuilder::require_auth`].
    pub fn xoauth2(
        mut self,
        validator: impl Fn(&str, &str) -> bool + Send + Sync + 'static,
    ) -> SinkBuilder {
        self.xoauth2 = Some(Arc::new(validator));
        self
    }

    /// At most `n` sessions sending at once, the way Microsoft 365 counts them: a session takes a
    /// slot at its first MAIL and keeps it until it says QUIT or closes; a MAIL while `n` other
    /// sessions hold one is answered `reply` (e.g. `432 4.3.2 STOREDRV.ClientSubmit; sender thread
    /// limit exceeded`) and the session goes on. [`Sink::refused_at_mail`] counts them.
    pub fn max_sessions_at_mail(mut self, n: usize, reply: &str) -> SinkBuilder {
        self.mail_sessions = Some((n, reply.to_string()));
        self
    }

    /// In TLS (STARTTLS or implicit), ask the client for a certificate and record it
    /// ([`Delivered::client_cert`], [`Sink::client_certs`]). With `trust`, the certificate must
    /// chain to that CA and be meant for client authentication (e.g. [`TestCa::client_leaf`]) or the
    /// handshake fails; without, any certificate is taken. A client without one is accepted either way.
    pub fn request_client_cert(mut self, trust: Option<&TestCa>) -> SinkBuilder {
        self.client_certs = Some(match trust {
            None => ClientCerts::Any,
            Some(ca) => ClientCerts::TrustedBy(ca.ca_der()),
        });
        self
    }

    /// Binds and starts; panics on failure.
    pub fn start(self) -> Sink {
        self.try_start().expect("start SMTP sink")
    }

    /// Binds and starts.
    pub fn try_start(self) -> io::Result<Sink> {
        let tls12 = self.tls12_only;
        let clients = self.client_certs.as_ref().map(ClientCerts::verifier);
        let config = Arc::new(Config {
            hostname: self.hostname,
            extensions: self.extensions,
            no_ehlo: self.no_ehlo,
            starttls: self
                .starttls
                .map(|c| c.server_config_with(tls12, clients.clone())),
            implicit_tls: self
                .implicit_tls
                .map(|c| c.server_config_with(tls12, clients.clone())),
            auth: self.auth,
            require_auth: self.require_auth,
            require_tls: self.require_tls,
            auth_only_after_tls: self.auth_only_after_tls,
            phases: self.phases,
            default_script: self.script,
            record: self.record,
            max_sessions: self.max_sessions,
            xoauth2: self.xoauth2,
            mail_sessions: self.mail_sessions,
        });
        let shared = Arc::new(Shared {
            connections: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            admitted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            sessions: AtomicUsize::new(0),
            peak_sessions: AtomicUsize::new(0),
            mail_slots: AtomicUsize::new(0),
            mail_refused: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            state: Mutex::new(State::default()),
        });
        let sh = shared.clone();
        let acceptor = Acceptor::bind(SocketAddr::new(self.ip, self.port), move |n, stream| {
            session(&sh, &config, n, stream)
        })?;
        Ok(Sink {
            addr: acceptor.addr,
            shared,
            acceptor: Some(acceptor),
        })
    }
}

/// Starts every builder on one common port (each on its own IP, so give them different `bind`s;
/// their own `port` is ignored): for MX tests where mailroot uses one port for all hosts. Retries
/// with another port when the chosen one is taken on some IP.
pub fn start_same_port(builders: Vec<SinkBuilder>) -> Vec<Sink> {
    for _ in 0..50 {
        let mut sinks: Vec<Sink> = Vec::new();
        let mut complete = true;
        for b in &builders {
            let port = sinks.first().map(|s| s.addr.port()).unwrap_or(0);
            match b.clone().port(port).try_start() {
                Ok(s) => sinks.push(s),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && port != 0 => {
                    complete = false;
                    break;
                }
                Err(e) => panic!("start SMTP sink: {e}"),
            }
        }
        if complete {
            return sinks;
        }
    }
    panic!("no common free port found for {} sinks", builders.len());
}

// ---------------------------------------------------------------------------------------------
// The running sink
// ---------------------------------------------------------------------------------------------

/// A running sink; stops (listener closed, connections shut down, threads ended, bounded) on drop.
pub struct Sink {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<Acceptor>,
}

impl Sink {
    pub fn builder() -> SinkBuilder {
        SinkBuilder::new()
    }

    /// A default sink on 127.0.0.1, ephemeral port.
    pub fn start_default() -> Sink {
        SinkBuilder::new().start()
    }

    /// Accepted messages (final reply 2xx), in arrival order.
    pub fn messages(&self) -> Vec<Delivered> {
        self.transactions()
            .into_iter()
            .filter(Delivered::accepted)
            .collect()
    }

    /// Every transaction that reached the end of DATA, accepted or not (scripted non-2xx reply,
    /// or dropped at [`Stage::EndOfData`] with `reply: None`).
    pub fn transactions(&self) -> Vec<Delivered> {
        self.shared.state().transactions.clone()
    }

    /// Messages accepted so far (final reply 2xx), also in count-only mode.
    pub fn count(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// When the last message so far was accepted (the start of the sink if none was).
    pub fn last_at(&self) -> Instant {
        self.shared.epoch + Duration::from_nanos(self.shared.last_ns.load(Ordering::SeqCst))
    }

    /// How often `addr` was among the recipients of an accepted message (ASCII case-insensitive).
    pub fn delivered_to(&self, addr: &str) -> usize {
        self.messages()
            .iter()
            .filter(|m| m.rcpt_addrs().iter().any(|r| r.eq_ignore_ascii_case(addr)))
            .count()
    }

    /// How often `RCPT TO:<addr>` was sent (ASCII case-insensitive).
    pub fn rcpt_commands(&self, addr: &str) -> usize {
        let needle = format!("rcpt to:<{}>", addr.to_ascii_lowercase());
        self.commands()
            .iter()
            .filter(|c| c.to_ascii_lowercase().starts_with(&needle))
            .count()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Plaintext bytes followed a STARTTLS command (pipelined after it, or sent before the
    /// ClientHello).
    pub fn injection_detected(&self) -> bool {
        !self.shared.state().injected.is_empty()
    }

    /// The injected plaintext seen (possibly only its first bytes), one entry per STARTTLS.
    pub fn injected(&self) -> Vec<Vec<u8>> {
        self.shared.state().injected.clone()
    }

    /// Every command line received (also AUTH continuation lines, not DATA content), without
    /// CRLF, in arrival order over all connections.
    pub fn commands(&self) -> Vec<String> {
        self.shared
            .state()
            .commands
            .iter()
            .map(|c| c.1.clone())
            .collect()
    }

    /// The command lines of one connection.
    pub fn commands_of(&self, connection: usize) -> Vec<String> {
        self.shared
            .state()
            .commands
            .iter()
            .filter(|c| c.0 == connection)
            .map(|c| c.1.clone())
            .collect()
    }

    /// TLS handshakes that failed, with rustls' error text (e.g. the client's alert).
    pub fn tls_errors(&self) -> Vec<String> {
        self.shared.state().tls_errors.clone()
    }

    /// AUTH exchanges, in order.
    pub fn auth_attempts(&self) -> Vec<AuthAttempt> {
        self.shared.state().auth_attempts.clone()
    }

    /// Waits (at most [`WAIT`]) until `cond` holds; returns whether it does.
    pub fn wait_until(&self, cond: impl Fn(&Sink) -> bool) -> bool {
        let until = Instant::now() + WAIT;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() > until {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most [`WAIT`]) for `n` accepted messages; returns what is there by then.
    pub fn wait_messages(&self, n: usize) -> Vec<Delivered> {
        self.wait_until(|s| s.messages().len() >= n);
        self.messages()
    }

    /// Waits (at most [`WAIT`]) for `n` transactions; returns what is there by then.
    pub fn wait_transactions(&self, n: usize) -> Vec<Delivered> {
        self.wait_until(|s| s.transactions().len() >= n);
        self.transactions()
    }

    /// Waits (at most [`WAIT`]) for `n` connections; returns the count by then.
    pub fn wait_connections(&self, n: usize) -> usize {
        self.wait_until(|s| s.connections() >= n);
        self.connections()
    }

    /// Waits (at most [`WAIT`]) until no connection is open; returns whether that happened.
    pub fn wait_idle(&self) -> bool {
        self.wait_until(|s| s.shared.active.load(Ordering::SeqCst) == 0)
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// The most connections that were open at once so far (refused ones included).
    pub fn peak_connections(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// Connections turned away by [`SinkBuilder::max_sessions`] so far.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// MAIL commands answered by [`SinkBuilder::max_sessions_at_mail`]'s reply so far.
    pub fn refused_at_mail(&self) -> usize {
        self.shared.mail_refused.load(Ordering::SeqCst)
    }

    /// Sessions open right now: connections given a session (not turned away by
    /// [`SinkBuilder::max_sessions`]) that have neither said QUIT nor closed.
    pub fn open_sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::SeqCst)
    }

    /// The most sessions open at once so far. Unlike [`Sink::peak_connections`], a session stops
    /// counting when its QUIT is read, before the 221 goes out: a client that opens its next
    /// connection on the 221 is not counted twice.
    pub fn peak_sessions(&self) -> usize {
        self.shared.peak_sessions.load(Ordering::SeqCst)
    }

    /// `AUTH XOAUTH2` exchanges, in order.
    pub fn xoauth2_attempts(&self) -> Vec<XOAuth2Attempt> {
        self.shared.state().xoauth2_attempts.clone()
    }

    /// (connection, DER) of every client certificate presented in a TLS handshake, in order.
    pub fn client_certs(&self) -> Vec<(usize, Vec<u8>)> {
        self.shared.state().client_certs.clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // Stops accepting and shuts down the connections still open.
        drop(self.acceptor.take());
        let until = Instant::now() + STOP_WAIT;
        while self.shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Decrements the open-connection count when a connection thread ends (also on panic).
struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Ends an admitted session under [`SinkBuilder::max_sessions`] (also on panic).
struct AdmittedGuard(Arc<Shared>);

impl Drop for AdmittedGuard {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One connection, on its own thread.
fn session(shared: &Arc<Shared>, config: &Config, n: usize, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(IDLE));
    let _ = stream.set_write_timeout(Some(WAIT));
    let _ = stream.set_nodelay(true);
    shared.connections.fetch_add(1, Ordering::SeqCst);
    let open = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
    shared.peak.fetch_max(open, Ordering::SeqCst);
    let _guard = ActiveGuard(shared.clone());
    let _admitted = match &config.max_sessions {
        None => None,
        Some((max, reply)) => {
            let admitted = shared
                .admitted
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| {
                    (k < *max).then_some(k + 1)
                })
                .is_ok();
            if !admitted {
                shared.refused.fetch_add(1, Ordering::SeqCst);
                let mut stream = stream;
                let _ = stream.write_all(format!("{reply}\r\n").as_bytes());
                let _ = stream.flush();
                return;
            }
            Some(AdmittedGuard(shared.clone()))
        }
    };
    let open = shared.sessions.fetch_add(1, Ordering::SeqCst) + 1;
    shared.peak_sessions.fetch_max(open, Ordering::SeqCst);
    let mut session = Session::new(shared, config, n, stream);
    session.run();
    session.finish();
}

// ---------------------------------------------------------------------------------------------
// One SMTP session
// ---------------------------------------------------------------------------------------------

type Io = super::io::Io<ServerConnection>;

/// Whether the session goes on after a command.
#[derive(PartialEq, Eq)]
enum Flow {
    Go,
    Close,
}

use Flow::{Close, Go};

fn code_of(reply: &str) -> u16 {
    reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn is_2xx(reply: &str) -> bool {
    (200..300).contains(&code_of(reply))
}

struct Session<'a> {
    shared: &'a Shared,
    cfg: &'a Config,
    script: &'a Script,
    conn: usize,
    r: BufReader<Io>,
    helo: Option<String>,
    ehlo: bool,
    tls_version: Option<String>,
    sni: Option<String>,
    auth_user: Option<String>,
    mail_from: Option<String>,
    rcpts: Vec<String>,
    rejected_rcpts: Vec<String>,
    no_service: bool,
    /// Replies not yet written: they go out when no whole command is left to answer.
    out: Vec<u8>,
    /// The client's certificate (DER), once presented in TLS.
    client_cert: Option<Vec<u8>>,
    /// Counted in [`Shared::sessions`] (until QUIT or the end).
    in_session: bool,
    /// Holds a slot of [`SinkBuilder::max_sessions_at_mail`].
    mail_slot: bool,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

impl<'a> Session<'a> {
    fn new(shared: &'a Shared, cfg: &'a Config, conn: usize, stream: TcpStream) -> Session<'a> {
        Session {
            shared,
            cfg,
            script: cfg.script_for(conn),
            conn,
            r: BufReader::new(Io::Plain(stream)),
            helo: None,
            ehlo: false,
            tls_version: None,
            sni: None,
            auth_user: None,
            mail_from: None,
            rcpts: Vec::new(),
            rejected_rcpts: Vec::new(),
            no_service: false,
            out: Vec::new(),
            client_cert: None,
            in_session: true,
            mail_slot: false,
        }
    }

    /// The session stops counting as open (QUIT, or its end) and gives back its sending slot.
    fn leave(&mut self) {
        if std::mem::take(&mut self.in_session) {
            self.shared.sessions.fetch_sub(1, Ordering::SeqCst);
        }
        if std::mem::take(&mut self.mail_slot) {
            self.shared.mail_slots.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn tls(&self) -> bool {
        matches!(self.r.get_ref(), Io::Tls(_))
    }

    /// Sends close_notify on TLS; the socket closes when the session is dropped.
    fn finish(&mut self) {
        self.leave();
        if let Io::Tls(t) = self.r.get_mut() {
            t.conn.send_close_notify();
            let _ = t.flush();
        }
    }

    /// Queues a reply; see [`Session::flush`].
    fn send(&mut self, reply: &str) -> io::Result<()> {
        let lines: Vec<&str> = reply
            .split('\n')
            .map(|l| l.trim_end_matches('\r'))
            .collect();
        for (i, line) in lines.iter().enumerate() {
            if i + 1 < lines.len() && line.len() >= 3 {
                self.out.extend_from_slice(&line.as_bytes()[..3]);
                self.out.push(b'-');
                self.out
                    .extend_from_slice(line.get(4..).unwrap_or("").as_bytes());
            } else {
                self.out.extend_from_slice(line.as_bytes());
            }
            self.out.extend_from_slice(b"\r\n");
        }
        Ok(())
    }

    /// Writes the queued replies.
    fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let io = self.r.get_mut();
        let written = io.write_all(&self.out).and_then(|_| io.flush());
        self.out.clear();
        written
    }

    /// Sends a (possibly scripted) reply; `421` closes.
    fn answer(&mut self, reply: &str) -> io::Result<Flow> {
        self.send(reply)?;
        Ok(if code_of(reply) == 421 { Close } else { Go })
    }

    /// One line up to LF (inclusive) into `buf` (cleared first); false at EOF. The queued replies go
    /// out first when no whole line is waiting: replies to pipelined commands leave together, and
    /// nothing waits for input while a reply is held back.
    fn read_line_into(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        if !self.r.buffer().contains(&b'\n') {
            self.flush()?;
        }
        buf.clear();
        Ok(self.r.read_until(b'\n', buf)? > 0)
    }

    /// One line up to LF (inclusive), None at EOF.
    fn read_raw_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        Ok(self.read_line_into(&mut buf)?.then_some(buf))
    }

    /// A command line without its line ending (recorded), None at EOF.
    fn read_command(&mut self) -> io::Result<Option<String>> {
        let Some(raw) = self.read_raw_line()? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&raw);
        let line = text
            .trim_end_matches('\n')
            .trim_end_matches('\r')
            .to_string();
        if self.cfg.record {
            self.shared.state().commands.push((self.conn, line.clone()));
        }
        Ok(Some(line))
    }

    fn reset_transaction(&mut self) {
        self.mail_from = None;
        self.rcpts.clear();
        self.rejected_rcpts.clear();
    }

    fn handshake(&mut self, sock: TcpStream, config: Arc<ServerConfig>) -> Flow {
        let conn = match ServerConnection::new(config) {
            Ok(c) => c,
            Err(e) => {
                self.shared.state().tls_errors.push(e.to_string());
                return Close;
            }
        };
        let mut tls = StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                self.shared.state().tls_errors.push(e.to_string());
                return Close;
            }
        }
        self.tls_version = tls.conn.protocol_version().map(|v| format!("{v:?}"));
        self.sni = tls.conn.server_name().map(str::to_string);
        self.client_cert = tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        if let Some(der) = &self.client_cert {
            self.shared
                .state()
                .client_certs
                .push((self.conn, der.clone()));
        }
        self.r = BufReader::new(Io::Tls(Box::new(tls)));
        Go
    }

    fn run(&mut self) {
        let _ = self.run_inner();
        let _ = self.flush();
    }

    fn run_inner(&mut self) -> io::Result<()> {
        if self.script.drops(Stage::Connect) {
            return Ok(());
        }
        if let Some(cfg) = self.cfg.implicit_tls.clone() {
            let Io::Plain(sock) = std::mem::replace(self.r.get_mut(), Io::Gone) else {
                return Ok(());
            };
            if self.handshake(sock, cfg) == Close {
                return Ok(());
            }
        }
        let greeting = match &self.script.on_connect {
            Some(g) => g.clone(),
            None => format!("220 {} ESMTP sink ready", self.cfg.hostname),
        };
        if self.answer(&greeting)? == Close {
            return Ok(());
        }
        self.no_service = !is_2xx(&greeting);
        while let Some(line) = self.read_command()? {
            if self.command(&line)? == Close {
                break;
            }
        }
        Ok(())
    }

    fn command(&mut self, line: &str) -> io::Result<Flow> {
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
            None => (line.trim().to_ascii_uppercase(), String::new()),
        };
        if self.no_service && verb != "QUIT" {
            return self.answer("503 5.5.1 No service");
        }
        match verb.as_str() {
            "EHLO" | "HELO" => self.cmd_hello(&verb, &arg),
            "STARTTLS" => self.cmd_starttls(&arg),
            "AUTH" => self.cmd_auth(&arg),
            "MAIL" => self.cmd_mail(&arg),
            "RCPT" => self.cmd_rcpt(&arg),
            "DATA" => self.cmd_data(&arg),
            "RSET" => {
                self.reset_transaction();
                self.answer("250 2.0.0 Ok")
            }
            "NOOP" => self.answer("250 2.0.0 Ok"),
            "VRFY" => self.answer("252 2.1.5 Cannot VRFY user"),
            "HELP" => self.answer("214 2.0.0 See RFC 5321"),
            "QUIT" => {
                self.leave();
                self.send("221 2.0.0 Bye")?;
                Ok(Close)
            }
            _ => self.answer("500 5.5.2 Command not recognized"),
        }
    }

    fn cmd_hello(&mut self, verb: &str, arg: &str) -> io::Result<Flow> {
        if self.script.drops(Stage::Ehlo) {
            return Ok(Close);
        }
        if verb == "EHLO" && self.cfg.no_ehlo {
            return self.answer("502 5.5.2 Command not recognized");
        }
        if arg.is_empty() {
            return self.answer("501 5.5.4 Syntax: EHLO hostname");
        }
        self.reset_transaction();
        self.helo = Some(arg.to_string());
        self.ehlo = verb == "EHLO";
        let host = self.cfg.hostname.clone();
        if !self.ehlo {
            return self.answer(&format!("250 {host}"));
        }
        let mut lines = vec![format!("250 {host} Hello {arg}")];
        for e in &self.cfg.extensions {
            lines.push(format!("250 {e}"));
        }
        if self.cfg.starttls.is_some() && !self.tls() {
            lines.push("250 STARTTLS".to_string());
        }
        let mechanisms = self.cfg.auth_mechanisms();
        if !mechanisms.is_empty() && (self.tls() || !self.cfg.auth_only_after_tls) {
            lines.push(format!("250 AUTH {}", mechanisms.join(" ")));
        }
        self.answer(&lines.join("\n"))
    }

    fn cmd_starttls(&mut self, arg: &str) -> io::Result<Flow> {
        if self.tls() {
            return self.answer("503 5.5.1 TLS already active");
        }
        if let Some(r) = self.script.on_starttls.clone() {
            return self.answer(&r);
        }
        let Some(config) = self.cfg.starttls.clone() else {
            return self.answer("454 4.7.0 TLS not available");
        };
        if !arg.is_empty() {
            return self.answer("501 5.5.4 Syntax: STARTTLS");
        }
        // Plaintext pipelined after STARTTLS (CVE-2011-0411 class): record it, then discard it.
        if !self.r.buffer().is_empty() {
            let injected = self.r.buffer().to_vec();
            self.shared.state().injected.push(injected);
        }
        self.send("220 2.0.0 Ready to start TLS")?;
        self.flush()?;
        let Io::Plain(sock) = std::mem::replace(&mut self.r, BufReader::new(Io::Gone)).into_inner()
        else {
            return Ok(Close);
        };
        // Plaintext that arrived later (after the buffered part) shows before the ClientHello,
        // whose first byte is 0x16 (handshake record).
        let mut first = [0u8; 16];
        match sock.peek(&mut first) {
            Ok(0) | Err(_) => return Ok(Close),
            Ok(n) => {
                if first[0] != 0x16 {
                    self.shared.state().injected.push(first[..n].to_vec());
                    return Ok(Close);
                }
            }
        }
        if self.handshake(sock, config) == Close {
            return Ok(Close);
        }
        self.helo = None;
        self.ehlo = false;
        self.auth_user = None;
        self.reset_transaction();
        Ok(Go)
    }

    fn cmd_auth(&mut self, arg: &str) -> io::Result<Flow> {
        let mechanisms = self.cfg.auth_mechanisms();
        if mechanisms.is_empty() {
            return self.answer("502 5.5.1 AUTH not supported");
        }
        if self.cfg.auth_only_after_tls && !self.tls() {
            return self
                .answer("538 5.7.11 Encryption required for requested authentication mechanism");
        }
        if self.helo.is_none() || !self.ehlo {
            return self.answer("503 5.5.1 Send EHLO first");
        }
        if self.auth_user.is_some() {
            return self.answer("503 5.5.1 Already authenticated");
        }
        if self.mail_from.is_some() {
            return self.answer("503 5.5.1 AUTH not allowed during a mail transaction");
        }
        let mut parts = arg.split_whitespace();
        let mech = parts.next().unwrap_or("").to_ascii_uppercase();
        let initial = parts.next().map(str::to_string);
        if !mechanisms.contains(&mech) {
            return self.answer("504 5.5.4 Unrecognized authentication type");
        }
        if mech == "XOAUTH2"
            && let Some(validator) = self.cfg.xoauth2.clone()
        {
            return self.auth_xoauth2(initial, &validator);
        }
        let Some(auth) = self.cfg.auth.clone() else {
            return self.answer("504 5.5.4 Unrecognized authentication type");
        };
        let (user, pass) = match mech.as_str() {
            "PLAIN" => {
                let resp = match initial {
                    Some(r) if r == "=" => String::new(),
                    Some(r) => r,
                    None => {
                        self.send("334 ")?;
                        match self.read_command()? {
                            Some(l) => l,
                            None => return Ok(Close),
                        }
                    }
                };
                if resp == "*" {
                    return self.answer("501 5.7.0 Authentication cancelled");
                }
                let Some(raw) = base64_decode(&resp) else {
                    return self.answer("501 5.5.2 Invalid base64 data");
                };
                let fields: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
                if fields.len() != 3 {
                    return self.answer("501 5.5.2 Invalid PLAIN response");
                }
                (
                    String::from_utf8_lossy(fields[1]).to_string(),
                    String::from_utf8_lossy(fields[2]).to_string(),
                )
            }
            _ => {
                let user_b64 = match initial {
                    Some(r) => r,
                    None => {
                        self.send("334 VXNlcm5hbWU6")?;
                        match self.read_command()? {
                            Some(l) => l,
                            None => return Ok(Close),
                        }
                    }
                };
                if user_b64 == "*" {
                    return self.answer("501 5.7.0 Authentication cancelled");
                }
                self.send("334 UGFzc3dvcmQ6")?;
                let Some(pass_b64) = self.read_command()? else {
                    return Ok(Close);
                };
                if pass_b64 == "*" {
                    return self.answer("501 5.7.0 Authentication cancelled");
                }
                let (Some(u), Some(p)) = (base64_decode(&user_b64), base64_decode(&pass_b64))
                else {
                    return self.answer("501 5.5.2 Invalid base64 data");
                };
                (
                    String::from_utf8_lossy(&u).to_string(),
                    String::from_utf8_lossy(&p).to_string(),
                )
            }
        };
        let success = user == auth.user && pass == auth.pass;
        self.shared.state().auth_attempts.push(AuthAttempt {
            mechanism: mech,
            user: user.clone(),
            success,
            connection: self.conn,
        });
        if success {
            self.auth_user = Some(user);
            self.answer("235 2.7.0 Authentication successful")
        } else {
            self.answer("535 5.7.8 Authentication credentials invalid")
        }
    }

    /// AUTH XOAUTH2 (see [`SinkBuilder::xoauth2`]).
    fn auth_xoauth2(&mut self, initial: Option<String>, validator: &Validator) -> io::Result<Flow> {
        let resp = match initial {
            Some(r) => r,
            None => {
                self.send("334 ")?;
                match self.read_command()? {
                    Some(l) => l,
                    None => return Ok(Close),
                }
            }
        };
        if resp == "*" {
            return self.answer("501 5.7.0 Authentication cancelled");
        }
        let Some(raw) = base64_decode(&resp) else {
            return self.answer("501 5.5.2 Invalid base64 data");
        };
        let (user, token, well_formed) = parse_xoauth2(&raw);
        let success = well_formed && validator(&user, &token);
        let at = Instant::now();
        let mut ack = None;
        let mut closed = false;
        if !success {
            self.send(&format!(
                "334 {}",
                Base64::encode_string(XOAUTH2_ERROR.as_bytes())
            ))?;
            match self.read_command()? {
                Some(l) => ack = Some(l),
                None => closed = true,
            }
        }
        {
            let mut st = self.shared.state();
            st.auth_attempts.push(AuthAttempt {
                mechanism: "XOAUTH2".to_string(),
                user: user.clone(),
                success,
                connection: self.conn,
            });
            st.xoauth2_attempts.push(XOAuth2Attempt {
                user: user.clone(),
                token,
                well_formed,
                success,
                ack,
                tls: self.tls(),
                connection: self.conn,
                at,
            });
        }
        if closed {
            return Ok(Close);
        }
        if success {
            self.auth_user = Some(user);
            self.answer("235 2.7.0 Authentication successful")
        } else {
            self.answer("535 5.7.3 Authentication unsuccessful")
        }
    }

    fn cmd_mail(&mut self, arg: &str) -> io::Result<Flow> {
        if self.script.drops(Stage::Mail) {
            return Ok(Close);
        }
        if self.helo.is_none() {
            return self.answer("503 5.5.1 Send EHLO/HELO first");
        }
        if self.cfg.require_tls && !self.tls() {
            return self.answer("530 5.7.0 Must issue a STARTTLS command first");
        }
        if self.cfg.require_auth && self.auth_user.is_none() {
            return self.answer("530 5.7.0 Authentication required");
        }
        if self.mail_from.is_some() {
            return self.answer("503 5.5.1 Nested MAIL command");
        }
        let Some(rest) = strip_prefix_ci(arg, "FROM:") else {
            return self.answer("501 5.5.4 Syntax: MAIL FROM:<address>");
        };
        if let Some((max, busy)) = &self.cfg.mail_sessions
            && !self.mail_slot
        {
            let got = self
                .shared
                .mail_slots
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| {
                    (k < *max).then_some(k + 1)
                })
                .is_ok();
            if !got {
                self.shared.mail_refused.fetch_add(1, Ordering::SeqCst);
                let busy = busy.clone();
                return self.answer(&busy);
            }
            self.mail_slot = true;
        }
        let reply = self
            .script
            .on_mail
            .clone()
            .unwrap_or_else(|| "250 2.1.0 Sender OK".to_string());
        if is_2xx(&reply) {
            self.mail_from = Some(rest.trim().to_string());
        }
        self.answer(&reply)
    }

    fn cmd_rcpt(&mut self, arg: &str) -> io::Result<Flow> {
        if self.script.drops(Stage::Rcpt) {
            return Ok(Close);
        }
        if self.mail_from.is_none() {
            return self.answer("503 5.5.1 Need MAIL first");
        }
        let Some(rest) = strip_prefix_ci(arg, "TO:") else {
            return self.answer("501 5.5.4 Syntax: RCPT TO:<address>");
        };
        let rest = rest.trim().to_string();
        let reply = self
            .script
            .rcpt_reply(&rest)
            .unwrap_or("250 2.1.5 Recipient OK")
            .to_string();
        if is_2xx(&reply) {
            self.rcpts.push(rest);
        } else {
            self.rejected_rcpts.push(rest);
        }
        self.answer(&reply)
    }

    fn cmd_data(&mut self, arg: &str) -> io::Result<Flow> {
        if self.script.drops(Stage::Data) {
            return Ok(Close);
        }
        if self.mail_from.is_none() {
            return self.answer("503 5.5.1 Need MAIL first");
        }
        if self.rcpts.is_empty() {
            return self.answer("554 5.5.1 No valid recipients");
        }
        if !arg.is_empty() {
            return self.answer("501 5.5.4 Syntax: DATA");
        }
        let go_ahead = self
            .script
            .on_data_command
            .clone()
            .unwrap_or_else(|| "354 End data with <CR><LF>.<CR><LF>".to_string());
        if code_of(&go_ahead) != 354 {
            return self.answer(&go_ahead);
        }
        self.send(&go_ahead)?;
        let record = self.cfg.record;
        let mut data = Vec::new();
        let mut bare = false;
        let mut longest = 0;
        let mut line = Vec::with_capacity(128);
        loop {
            if !self.read_line_into(&mut line)? {
                // Connection lost inside DATA: nothing is recorded.
                return Ok(Close);
            }
            let content = match line.strip_suffix(b"\r\n") {
                Some(c) => c,
                None => match line.strip_suffix(b"\n") {
                    Some(c) => {
                        bare = true;
                        c
                    }
                    // EOF inside a line.
                    None => return Ok(Close),
                },
            };
            if content.contains(&b'\r') {
                bare = true;
            }
            if content == b"." {
                break;
            }
            longest = longest.max(content.len());
            if record {
                let unstuffed = if line.first() == Some(&b'.') {
                    &line[1..]
                } else {
                    &line[..]
                };
                data.extend_from_slice(unstuffed);
            }
        }
        let at = Instant::now();
        let dropped = self.script.drops(Stage::EndOfData);
        let reply = if dropped {
            None
        } else {
            let n = if record {
                self.shared.state().transactions.len() as u64
            } else {
                self.shared.accepted.load(Ordering::SeqCst)
            };
            Some(
                self.script
                    .on_data
                    .clone()
                    .unwrap_or_else(|| format!("250 2.0.0 Ok: queued as SINK{n}")),
            )
        };
        if reply.as_deref().is_some_and(is_2xx) {
            self.shared.counted();
        }
        if record {
            let delivered = Delivered {
                helo: self.helo.clone().unwrap_or_default(),
                ehlo: self.ehlo,
                tls: self.tls(),
                tls_version: self.tls_version.clone(),
                sni: self.sni.clone(),
                client_cert: self.client_cert.clone(),
                auth_user: self.auth_user.clone(),
                mail_from: self.mail_from.clone().unwrap_or_default(),
                rcpts: self.rcpts.clone(),
                rejected_rcpts: self.rejected_rcpts.clone(),
                data,
                bare_line_endings: bare,
                longest_line: longest,
                reply: reply.clone(),
                connection: self.conn,
                at,
            };
            self.shared.state().transactions.push(delivered);
        }
        self.reset_transaction();
        match reply {
            None => Ok(Close),
            Some(r) => self.answer(&r),
        }
    }
}

fn strip_prefix_ci<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}
