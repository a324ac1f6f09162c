//! How mail leaves through one route (the virtual server's smart host, or a remote domain section):
//! the provider preset (`SmartHostProvider`), the AUTH mechanism and its secrets (RouteUserName with
//! a password, or an OAuth 2.0 credential for SASL XOAUTH2), the sender rewrite, and the client
//! certificate presented in outbound TLS. Everything is read and checked when the configuration is
//! loaded, so a missing key file or a service-account file that is not one stops `mailroot check`
//! with the file, line and key; secrets never reach a `Debug` or `Display`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use super::error::ConfigError;
use super::load::Reader;
use super::settings::Credentials;
use super::values::{optional, parse_bool, parse_mailbox_value, parse_path};
use crate::net::tls::{self, ClientIdentity};

/// `SmartHostProvider`: a preset for a well-known smart host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Exchange Online (`smtp.office365.com`).
    Microsoft365,
    /// Google Workspace (`smtp.gmail.com`).
    Google,
}

/// The keys a preset sets: (key, value, only at the virtual server level).
const MICROSOFT365: &[(&str, &str, bool)] = &[
    ("SmartHost", "smtp.office365.com:587", false),
    ("SmartHostType", "2", true),
    ("OutboundTls", "required", false),
    // Exchange Online allows 3 concurrent SMTP AUTH sessions and 30 messages a minute per mailbox.
    ("MaxOutConnectionsPerDomain", "3", false),
    ("MaxMessagesPerMinute", "30", false),
];

const GOOGLE: &[(&str, &str, bool)] = &[
    ("SmartHost", "smtp.gmail.com:587", false),
    ("SmartHostType", "2", true),
    ("OutboundTls", "required", false),
];

impl Provider {
    fn parse(v: &str) -> Result<Option<Provider>, String> {
        match v.to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "microsoft365" | "office365" | "exchangeonline" => Ok(Some(Provider::Microsoft365)),
            "google" | "gmail" | "googleworkspace" => Ok(Some(Provider::Google)),
            _ => Err(format!("`{v}` is not microsoft365 or google")),
        }
    }

    /// The name as written in the INI.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Microsoft365 => "microsoft365",
            Provider::Google => "google",
        }
    }

    /// The value this preset gives `key` (case-insensitive) at the virtual server level (`top`) or
    /// in a remote domain section.
    pub fn preset(self, key: &str, top: bool) -> Option<&'static str> {
        let table = match self {
            Provider::Microsoft365 => MICROSOFT365,
            Provider::Google => GOOGLE,
        };
        table
            .iter()
            .find(|(k, _, only_top)| k.eq_ignore_ascii_case(key) && (top || !only_top))
            .map(|(_, v, _)| *v)
    }

    fn default_scope(self) -> &'static str {
        match self {
            Provider::Microsoft365 => MICROSOFT_SCOPE,
            Provider::Google => GOOGLE_SCOPE,
        }
    }
}

/// The scope of app-only tokens for Exchange Online SMTP.
pub const MICROSOFT_SCOPE: &str = "https://outlook.office365.com/.default";
/// The scope of Gmail SMTP (IMAP and POP too).
pub const GOOGLE_SCOPE: &str = "https://mail.google.com/";
/// Google's token endpoint, for refresh tokens it issued.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// A secret from the INI or a file: shown as `(set)`, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one request that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A secret for unit tests elsewhere in the crate.
#[cfg(test)]
pub fn test_secret(s: &str) -> Secret {
    Secret(s.to_string())
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

/// An RSA private key for signing JWTs (RS256), as DER.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaKey {
    /// PKCS#8 or PKCS#1 DER.
    pub der: Vec<u8>,
    /// Whether `der` is PKCS#1 (`RSA PRIVATE KEY`) rather than PKCS#8.
    pub pkcs1: bool,
}

impl fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RsaKey(<hidden>)")
    }
}

impl RsaKey {
    /// Reads a PEM key and checks that ring can sign with it.
    fn from_pem(pem: &[u8]) -> Result<RsaKey, String> {
        let key =
            PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no private key ({e})"))?;
        let k = match key {
            PrivateKeyDer::Pkcs8(k) => RsaKey {
                der: k.secret_pkcs8_der().to_vec(),
                pkcs1: false,
            },
            PrivateKeyDer::Pkcs1(k) => RsaKey {
                der: k.secret_pkcs1_der().to_vec(),
                pkcs1: true,
            },
            _ => return Err("not an RSA key (RS256 needs RSA)".into()),
        };
        k.key_pair()?;
        Ok(k)
    }

    /// The key, ready to sign.
    pub fn key_pair(&self) -> Result<ring::rsa::KeyPair, String> {
        let r = if self.pkcs1 {
            ring::rsa::KeyPair::from_der(&self.der)
        } else {
            ring::rsa::KeyPair::from_pkcs8(&self.der)
        };
        r.map_err(|e| format!("not a usable RSA key ({e})"))
    }
}

/// How a token is obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Client credentials with a client secret (Microsoft Entra ID, app-only).
    ClientSecret {
        /// OAuthClientId.
        client_id: String,
        /// OAuthClientSecret or the first line of OAuthClientSecretFile.
        secret: Secret,
    },
    /// Client credentials with a signed client assertion (a certificate registered with the app).
    ClientAssertion {
        /// OAuthClientId.
        client_id: String,
        /// The certificate's DER, for the `x5t#S256` thumbprint.
        cert_der: Vec<u8>,
        /// OAuthKeyFile.
        key: RsaKey,
    },
    /// A Google service account with domain-wide delegation (RFC 7523 JWT bearer grant).
    ServiceAccount {
        /// The account's `client_email`.
        client_email: String,
        /// The key's `private_key_id`.
        key_id: String,
        /// The account's `private_key`.
        key: RsaKey,
    },
    /// A delegated refresh token, kept in a file that is rewritten when the provider rotates it.
    RefreshToken {
        /// OAuthClientId.
        client_id: String,
        /// OAuthClientSecret / OAuthClientSecretFile, when the client has one.
        secret: Option<Secret>,
        /// OAuthRefreshTokenFile.
        file: PathBuf,
    },
}

impl Grant {
    /// How `mailroot check` and the logs name it.
    pub fn describe(&self) -> &'static str {
        match self {
            Grant::ClientSecret { .. } => "client credentials (secret)",
            Grant::ClientAssertion { .. } => "client credentials (certificate)",
            Grant::ServiceAccount { .. } => "service account (JWT bearer)",
            Grant::RefreshToken { .. } => "refresh token",
        }
    }
}

/// An OAuth 2.0 credential: where tokens come from and for which mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth {
    /// OAuthTenant, as written (empty when not set).
    pub tenant: String,
    /// RouteUserName: the mailbox (XOAUTH2 `user=`, the Google JWT's `sub`).
    pub user: String,
    /// The token endpoint.
    pub token_url: String,
    /// The scope requested (`None`: the refresh grant keeps the token's own scopes).
    pub scope: Option<String>,
    /// How tokens are obtained.
    pub grant: Grant,
}

impl OAuth {
    /// Two routes with the same credential share one token cache.
    pub fn cache_key(&self) -> String {
        let who = match &self.grant {
            Grant::ClientSecret { client_id, .. }
            | Grant::ClientAssertion { client_id, .. }
            | Grant::RefreshToken { client_id, .. } => client_id,
            Grant::ServiceAccount { client_email, .. } => client_email,
        };
        format!(
            "{}|{who}|{}|{}",
            self.token_url,
            self.user,
            self.scope.as_deref().unwrap_or("")
        )
    }
}

/// PLAIN or LOGIN, when the mechanism is pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordMechanism {
    /// AUTH PLAIN.
    Plain,
    /// AUTH LOGIN.
    Login,
}

/// How mailroot authenticates to the route's next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundAuth {
    /// RouteUserName / RoutePassword; `only` pins the mechanism (else PLAIN, or LOGIN when only it
    /// is offered).
    Password {
        /// The credentials.
        credentials: Credentials,
        /// OutboundAuthMechanism = plain / login, or the microsoft365 preset (LOGIN).
        only: Option<PasswordMechanism>,
    },
    /// SASL XOAUTH2 with a token of this credential.
    XOAuth2(Arc<OAuth>),
}

/// Everything about one route besides where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outbound {
    /// SmartHostProvider.
    pub provider: Option<Provider>,
    /// The AUTH to do, if any.
    pub auth: Option<OutboundAuth>,
    /// RewriteSender.
    pub rewrite_sender: Option<String>,
    /// RewriteFromHeader.
    pub rewrite_from_header: bool,
    /// OutboundTlsCertificateFile / OutboundTlsKeyFile.
    pub identity: Option<Arc<ClientIdentity>>,
    /// The files named by the section's keys, by key (secrets among them: see `secret_files`).
    pub files: Vec<(&'static str, PathBuf)>,
    /// The keys whose value came from the preset (for `mailroot check`).
    pub from_preset: Vec<&'static str>,
}

impl Outbound {
    /// `432 4.3.2` at any stage means "too many sessions or messages now" (Exchange Online's
    /// STOREDRV.ClientSubmit limits), not a failure.
    pub fn throttles_with_432(&self) -> bool {
        self.provider == Some(Provider::Microsoft365)
    }

    /// The password credentials, if AUTH uses them.
    pub fn credentials(&self) -> Option<&Credentials> {
        match &self.auth {
            Some(OutboundAuth::Password { credentials, .. }) => Some(credentials),
            _ => None,
        }
    }

    /// RouteUserName: the AUTH user or the OAuth mailbox (empty when neither).
    pub fn user(&self) -> &str {
        match &self.auth {
            Some(OutboundAuth::Password { credentials, .. }) => &credentials.user,
            Some(OutboundAuth::XOAuth2(o)) => &o.user,
            None => "",
        }
    }

    /// The OAuth credential, if AUTH uses one.
    pub fn oauth(&self) -> Option<&Arc<OAuth>> {
        match &self.auth {
            Some(OutboundAuth::XOAuth2(o)) => Some(o),
            _ => None,
        }
    }

    /// The files holding secrets, by key: the start-up check warns when others may read them.
    pub fn secret_files(&self) -> impl Iterator<Item = &(&'static str, PathBuf)> {
        self.files
            .iter()
            .filter(|(k, _)| !k.ends_with("CertificateFile"))
    }

    /// RoutePasswordFile, when the password comes from one (for the effective settings).
    pub fn password_file(&self) -> Option<&Path> {
        self.files
            .iter()
            .find(|(k, _)| *k == "RoutePasswordFile")
            .map(|(_, f)| f.as_path())
    }

    /// Whether the INI itself holds a secret of this route (RoutePassword, OAuthClientSecret), rather
    /// than a file it names.
    pub fn inline_secret(&self) -> bool {
        let from_file = self
            .files
            .iter()
            .any(|(k, _)| *k == "OAuthClientSecretFile");
        match &self.auth {
            Some(OutboundAuth::Password { credentials, .. }) => {
                !credentials.password.is_empty() && self.password_file().is_none()
            }
            Some(OutboundAuth::XOAuth2(o)) => {
                !from_file
                    && matches!(
                        o.grant,
                        Grant::ClientSecret { .. }
                            | Grant::RefreshToken {
                                secret: Some(_),
                                ..
                            }
                    )
            }
            None => false,
        }
    }

    /// Whether anything at all is set (a domain section without any of it inherits nothing).
    pub fn is_empty(&self) -> bool {
        *self == Outbound::default()
    }

    /// The resolved OutboundAuthMechanism, as `mailroot check` prints it.
    pub fn mechanism(&self) -> &'static str {
        match &self.auth {
            None => "",
            Some(OutboundAuth::XOAuth2(_)) => "xoauth2",
            // PLAIN, or LOGIN when only LOGIN is offered.
            Some(OutboundAuth::Password { only: None, .. }) => "auto",
            Some(OutboundAuth::Password {
                only: Some(PasswordMechanism::Plain),
                ..
            }) => "plain",
            Some(OutboundAuth::Password {
                only: Some(PasswordMechanism::Login),
                ..
            }) => "login",
        }
    }

    /// The route keys' effective values, in table order, for `mailroot check` (secrets masked).
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        let p = |p: &Path| p.display().to_string();
        let oauth = self.oauth();
        let grant = oauth.map(|o| &o.grant);
        let client_id = match grant {
            Some(Grant::ClientSecret { client_id, .. })
            | Some(Grant::ClientAssertion { client_id, .. })
            | Some(Grant::RefreshToken { client_id, .. }) => client_id.clone(),
            _ => String::new(),
        };
        let file_of = |key: &str| {
            self.files
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, f)| p(f))
                .unwrap_or_default()
        };
        let secret_file = file_of("OAuthClientSecretFile");
        let secret_set = matches!(grant, Some(Grant::ClientSecret { .. }))
            || matches!(
                grant,
                Some(Grant::RefreshToken {
                    secret: Some(_),
                    ..
                })
            );
        vec![
            (
                "SmartHostProvider",
                self.provider.map(Provider::as_str).unwrap_or("").into(),
            ),
            ("OutboundAuthMechanism", self.mechanism().into()),
            (
                "OAuthTenant",
                oauth.map(|o| o.tenant.clone()).unwrap_or_default(),
            ),
            (
                "OAuthClientId",
                match grant {
                    Some(Grant::ServiceAccount { client_email, .. }) => client_email.clone(),
                    _ => client_id,
                },
            ),
            (
                "OAuthClientSecret",
                if secret_set && secret_file.is_empty() {
                    "(set)".into()
                } else {
                    String::new()
                },
            ),
            ("OAuthClientSecretFile", secret_file),
            ("OAuthCertificateFile", file_of("OAuthCertificateFile")),
            ("OAuthKeyFile", file_of("OAuthKeyFile")),
            (
                "OAuthServiceAccountFile",
                file_of("OAuthServiceAccountFile"),
            ),
            ("OAuthRefreshTokenFile", file_of("OAuthRefreshTokenFile")),
            (
                "OAuthTokenUrl",
                oauth.map(|o| o.token_url.clone()).unwrap_or_default(),
            ),
            (
                "OAuthScope",
                oauth.and_then(|o| o.scope.clone()).unwrap_or_default(),
            ),
            (
                "RewriteSender",
                self.rewrite_sender.clone().unwrap_or_default(),
            ),
            (
                "RewriteFromHeader",
                u8::from(self.rewrite_from_header).to_string(),
            ),
            (
                "OutboundTlsCertificateFile",
                self.identity
                    .as_ref()
                    .map(|i| p(&i.cert_file))
                    .unwrap_or_default(),
            ),
            (
                "OutboundTlsKeyFile",
                self.identity
                    .as_ref()
                    .map(|i| p(&i.key_file))
                    .unwrap_or_default(),
            ),
        ]
    }
}

/// The OAuth keys: any of them set means the route uses OAuth.
const OAUTH_KEYS: &[&str] = &[
    "OAuthTenant",
    "OAuthClientId",
    "OAuthClientSecret",
    "OAuthClientSecretFile",
    "OAuthCertificateFile",
    "OAuthKeyFile",
    "OAuthServiceAccountFile",
    "OAuthRefreshTokenFile",
    "OAuthTokenUrl",
    "OAuthScope",
];

/// Reads SmartHostProvider (before anything else of the section: the preset supplies defaults).
pub(super) fn provider(r: &Reader<'_>) -> Result<Option<Provider>, ConfigError> {
    r.parse("SmartHostProvider", Provider::parse)
}

/// Reads the route keys of one section (`base` resolves relative paths).
pub(super) fn read(
    r: &Reader<'_>,
    base: &Path,
    provider: Option<Provider>,
) -> Result<Outbound, ConfigError> {
    let mut files = Vec::new();
    let path_key = |key: &'static str| -> Result<Option<PathBuf>, ConfigError> {
        r.parse(key, |v| optional(v, |v| parse_path(base, v)))
    };
    let credentials = credentials(r, base, &mut files)?;
    let oauth = oauth(r, base, provider, &mut files)?;
    let mechanism = r.parse("OutboundAuthMechanism", |v| {
        match v.to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(None),
            "plain" => Ok(Some(Some(PasswordMechanism::Plain))),
            "login" => Ok(Some(Some(PasswordMechanism::Login))),
            "xoauth2" => Ok(Some(None)),
            _ => Err(format!("`{v}` is not auto, plain, login or xoauth2")),
        }
    })?;
    let mline = r.raw("OutboundAuthMechanism").1;
    let auth = match (mechanism, oauth, credentials) {
        // xoauth2, or auto with OAuth keys.
        (Some(None) | None, Some(o), _) => Some(OutboundAuth::XOAuth2(Arc::new(o))),
        (Some(None), None, _) => {
            return Err(r.error(
                mline,
                "OutboundAuthMechanism",
                "xoauth2 needs OAuth keys (OAuthClientId with a secret or certificate, OAuthServiceAccountFile or OAuthRefreshTokenFile)",
            ));
        }
        (Some(Some(m)), _, Some(c)) => Some(OutboundAuth::Password {
            credentials: c,
            only: Some(m),
        }),
        (Some(Some(_)), _, None) => {
            return Err(r.error(
                mline,
                "OutboundAuthMechanism",
                "plain and login need RouteUserName and RoutePassword",
            ));
        }
        (None, None, Some(c)) => Some(OutboundAuth::Password {
            credentials: c,
            // Exchange Online documents AUTH LOGIN for SMTP client submission.
            only: (provider == Some(Provider::Microsoft365)).then_some(PasswordMechanism::Login),
        }),
        (None, None, None) => None,
    };
    let identity = match (
        path_key("OutboundTlsCertificateFile")?,
        path_key("OutboundTlsKeyFile")?,
    ) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            files.push(("OutboundTlsCertificateFile", c.clone()));
            files.push(("OutboundTlsKeyFile", k.clone()));
            let id = ClientIdentity::load(&c, &k).map_err(|e| {
                r.error(
                    r.raw("OutboundTlsCertificateFile").1,
                    "OutboundTlsCertificateFile",
                    e.to_string(),
                )
            })?;
            Some(Arc::new(id))
        }
        (Some(_), None) => {
            return Err(r.error(
                r.raw("OutboundTlsCertificateFile").1,
                "OutboundTlsKeyFile",
                "OutboundTlsCertificateFile needs OutboundTlsKeyFile",
            ));
        }
        (None, Some(_)) => {
            return Err(r.error(
                r.raw("OutboundTlsKeyFile").1,
                "OutboundTlsCertificateFile",
                "OutboundTlsKeyFile needs OutboundTlsCertificateFile",
            ));
        }
    };
    let rewrite_sender = r.parse("RewriteSender", parse_mailbox_value)?;
    let rewrite_from_header = r.parse("RewriteFromHeader", parse_bool)?;
    if rewrite_from_header && rewrite_sender.is_none() {
        return Err(r.error(
            r.raw("RewriteFromHeader").1,
            "RewriteFromHeader",
            "RewriteFromHeader needs RewriteSender",
        ));
    }
    let from_preset = match provider {
        Some(_) => r.preset_keys(),
        None => Vec::new(),
    };
    Ok(Outbound {
        provider,
        auth,
        rewrite_sender,
        rewrite_from_header,
        identity,
        files,
        from_preset,
    })
}

/// RouteUserName / RoutePassword, or the first line of RoutePasswordFile (then the INI holds no
/// secret).
fn credentials(
    r: &Reader<'_>,
    base: &Path,
    files: &mut Vec<(&'static str, PathBuf)>,
) -> Result<Option<Credentials>, ConfigError> {
    let user = r.raw("RouteUserName").0.trim().to_string();
    let (inline, pline) = r.raw("RoutePassword");
    let file = r.parse("RoutePasswordFile", |v| {
        optional(v, |v| parse_path(base, v))
    })?;
    let (password, key, line) = match (inline.is_empty(), file) {
        (false, Some(_)) => {
            return Err(r.error(
                r.raw("RoutePasswordFile").1,
                "RoutePasswordFile",
                "set RoutePassword or RoutePasswordFile, not both",
            ));
        }
        (true, Some(f)) => {
            let line = r.raw("RoutePasswordFile").1;
            let password = first_line(r, "RoutePasswordFile", &f)?;
            files.push(("RoutePasswordFile", f));
            (password, "RoutePasswordFile", line)
        }
        (_, None) => (inline, "RoutePassword", pline),
    };
    match (user.is_empty(), password.is_empty()) {
        (true, true) => Ok(None),
        (false, _) => Ok(Some(Credentials { user, password })),
        (true, false) => Err(r.error(line, key, format!("{key} without RouteUserName"))),
    }
}

/// The first line of a secret file, trimmed; an error naming `key` when it cannot be read or is
/// empty.
fn first_line(r: &Reader<'_>, key: &'static str, path: &Path) -> Result<String, ConfigError> {
    let line = r.raw(key).1;
    let bytes =
        std::fs::read(path).map_err(|e| r.error(line, key, format!("{}: {e}", path.display())))?;
    let s = String::from_utf8_lossy(&bytes)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if s.is_empty() {
        return Err(r.error(line, key, format!("{}: the file is empty", path.display())));
    }
    Ok(s)
}

/// The OAuth credential of a section, if any OAuth key is set.
fn oauth(
    r: &Reader<'_>,
    base: &Path,
    provider: Option<Provider>,
    files: &mut Vec<(&'static str, PathBuf)>,
) -> Result<Option<OAuth>, ConfigError> {
    // Errors about the whole credential point at the first OAuth line written.
    let Some(first) = OAUTH_KEYS
        .iter()
        .filter(|k| r.set(k))
        .min_by_key(|k| r.raw(k).1)
    else {
        return Ok(None);
    };
    let text = |key: &'static str| r.raw(key).0.trim().to_string();
    let line = |key: &'static str| r.raw(key).1;
    let file = |key: &'static str| -> Result<Option<PathBuf>, ConfigError> {
        r.parse(key, |v| optional(v, |v| parse_path(base, v)))
    };
    let read_file = |key: &'static str, p: &Path| -> Result<Vec<u8>, ConfigError> {
        std::fs::read(p).map_err(|e| r.error(line(key), key, format!("{}: {e}", p.display())))
    };
    let user = text("RouteUserName");
    if user.is_empty() {
        return Err(r.error(
            line(first),
            first,
            "OAuth needs RouteUserName: the mailbox mail is sent as",
        ));
    }
    let tenant = text("OAuthTenant");
    let client_id = text("OAuthClientId");
    let secret_text = text("OAuthClientSecret");
    let secret_file = file("OAuthClientSecretFile")?;
    let cert_file = file("OAuthCertificateFile")?;
    let key_file = file("OAuthKeyFile")?;
    let sa_file = file("OAuthServiceAccountFile")?;
    let rt_file = file("OAuthRefreshTokenFile")?;
    let url_set = text("OAuthTokenUrl");
    let scope_set = text("OAuthScope");

    let secret = match (secret_text.is_empty(), &secret_file) {
        (false, Some(_)) => {
            return Err(r.error(
                line("OAuthClientSecretFile"),
                "OAuthClientSecretFile",
                "set OAuthClientSecret or OAuthClientSecretFile, not both",
            ));
        }
        (false, None) => Some(Secret(secret_text)),
        (true, Some(f)) => {
            files.push(("OAuthClientSecretFile", f.clone()));
            Some(Secret(first_line(r, "OAuthClientSecretFile", f)?))
        }
        (true, None) => None,
    };
    let need_client_id = |why: &'static str| -> Result<String, ConfigError> {
        if client_id.is_empty() {
            Err(r.error(line(first), "OAuthClientId", why))
        } else {
            Ok(client_id.clone())
        }
    };
    let microsoft_url = |key: &'static str| -> Result<String, ConfigError> {
        if !url_set.is_empty() {
            return Ok(url_set.clone());
        }
        if tenant.is_empty() {
            return Err(r.error(
                line(key),
                "OAuthTenant",
                "the token endpoint is unknown: set OAuthTenant (Microsoft Entra ID) or OAuthTokenUrl",
            ));
        }
        Ok(format!(
            "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
        ))
    };

    let sources = [
        sa_file.is_some(),
        rt_file.is_some(),
        cert_file.is_some() || key_file.is_some(),
        secret.is_some() && rt_file.is_none(),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        return Err(r.error(
            line(first),
            first,
            "more than one token source: use one of OAuthServiceAccountFile, OAuthRefreshTokenFile, OAuthCertificateFile with OAuthKeyFile, or a client secret",
        ));
    }

    let (grant, token_url, scope) = if let Some(f) = sa_file {
        files.push(("OAuthServiceAccountFile", f.clone()));
        let sa = service_account(&read_file("OAuthServiceAccountFile", &f)?).map_err(|m| {
            r.error(
                line("OAuthServiceAccountFile"),
                "OAuthServiceAccountFile",
                format!("{}: {m}", f.display()),
            )
        })?;
        let url = if url_set.is_empty() {
            sa.token_uri
        } else {
            url_set.clone()
        };
        let scope = if scope_set.is_empty() {
            GOOGLE_SCOPE.to_string()
        } else {
            scope_set.clone()
        };
        (sa.grant, url, Some(scope))
    } else if let Some(f) = rt_file {
        files.push(("OAuthRefreshTokenFile", f.clone()));
        let content = read_file("OAuthRefreshTokenFile", &f)?;
        if String::from_utf8_lossy(&content).trim().is_empty() {
            return Err(r.error(
                line("OAuthRefreshTokenFile"),
                "OAuthRefreshTokenFile",
                format!("{}: the file holds no refresh token", f.display()),
            ));
        }
        let client_id = need_client_id("the refresh-token grant needs OAuthClientId")?;
        let url = if url_set.is_empty() && tenant.is_empty() && provider == Some(Provider::Google) {
            GOOGLE_TOKEN_URL.to_string()
        } else {
            microsoft_url("OAuthRefreshTokenFile")?
        };
        (
            Grant::RefreshToken {
                client_id,
                secret,
                file: f,
            },
            url,
            (!scope_set.is_empty()).then(|| scope_set.clone()),
        )
    } else if cert_file.is_some() || key_file.is_some() {
        let (Some(c), Some(k)) = (cert_file, key_file) else {
            return Err(r.error(
                line(first),
                "OAuthKeyFile",
                "a client assertion needs both OAuthCertificateFile and OAuthKeyFile",
            ));
        };
        files.push(("OAuthCertificateFile", c.clone()));
        files.push(("OAuthKeyFile", k.clone()));
        let client_id = need_client_id("a client assertion needs OAuthClientId")?;
        let cert_der = tls::read_certificates(&c, Some("OAuthCertificateFile"))
            .map_err(|e| {
                r.error(
                    line("OAuthCertificateFile"),
                    "OAuthCertificateFile",
                    e.to_string(),
                )
            })?
            .remove(0)
            .to_vec();
        let key = RsaKey::from_pem(&read_file("OAuthKeyFile", &k)?).map_err(|m| {
            r.error(
                line("OAuthKeyFile"),
                "OAuthKeyFile",
                format!("{}: {m}", k.display()),
            )
        })?;
        let url = microsoft_url("OAuthCertificateFile")?;
        (
            Grant::ClientAssertion {
                client_id,
                cert_der,
                key,
            },
            url,
            Some(scope_or(&scope_set, provider)),
        )
    } else if let Some(secret) = secret {
        let client_id = need_client_id("client credentials need OAuthClientId")?;
        let url = microsoft_url(first)?;
        (
            Grant::ClientSecret { client_id, secret },
            url,
            Some(scope_or(&scope_set, provider)),
        )
    } else {
        return Err(r.error(
            line(first),
            first,
            "no token source: set OAuthClientSecret, OAuthClientSecretFile, OAuthCertificateFile with OAuthKeyFile, OAuthServiceAccountFile or OAuthRefreshTokenFile",
        ));
    };
    let url_key = if url_set.is_empty() {
        first
    } else {
        "OAuthTokenUrl"
    };
    if !token_url.starts_with("https://") {
        return Err(r.error(
            line(url_key),
            url_key,
            format!("the token endpoint `{token_url}` must be an https:// URL"),
        ));
    }
    Ok(Some(OAuth {
        tenant,
        user,
        token_url,
        scope,
        grant,
    }))
}

fn scope_or(set: &str, provider: Option<Provider>) -> String {
    if set.is_empty() {
        provider
            .unwrap_or(Provider::Microsoft365)
            .default_scope()
            .into()
    } else {
        set.to_string()
    }
}

struct ServiceAccount {
    grant: Grant,
    token_uri: String,
}

/// A Google service-account key file (the JSON downloaded from the Cloud console).
fn service_account(bytes: &[u8]) -> Result<ServiceAccount, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON key file ({e})"))?;
    let field = |name: &str| -> Result<String, String> {
        v.get(name)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("the key file has no `{name}`"))
    };
    if let Some(t) = v.get("type").and_then(|t| t.as_str())
        && t != "service_account"
    {
        return Err(format!(
            "the key file is of type `{t}`, not service_account"
        ));
    }
    let key = RsaKey::from_pem(field("private_key")?.as_bytes())
        .map_err(|m| format!("private_key: {m}"))?;
    Ok(ServiceAccount {
        grant: Grant::ServiceAccount {
            client_email: field("client_email")?,
            key_id: field("private_key_id").unwrap_or_default(),
            key,
        },
        token_uri: field("token_uri").unwrap_or_else(|_| GOOGLE_TOKEN_URL.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ini::IniFile;
    use crate::config::{Config, Source, TlsPolicy};

    fn load(text: &str) -> Result<Config, ConfigError> {
        let ini = IniFile::parse(Path::new("t.ini"), text)?;
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/oauth");
        Config::from_ini(&ini, &base, Source::File("t.ini".into()))
    }

    const M365: &str = "[SmtpSvc/1]\nSmartHostProvider = microsoft365\nRouteUserName = relay@contoso.test\nOAuthTenant = contoso.test\nOAuthClientId = cid\nOAuthClientSecret = s3cret\n";

    #[test]
    fn microsoft365_preset_and_overrides() {
        let c = load(M365).unwrap();
        let vs = &c.servers[0];
        let d = &vs.delivery;
        assert_eq!(d.smart_host[0].to_string(), "smtp.office365.com:587");
        assert_eq!(d.smart_host_type, crate::config::SmartHostType::Always);
        assert_eq!(d.tls, TlsPolicy::Required);
        assert_eq!((d.max_out_per_domain, d.max_per_minute), (3, 30));
        assert!(d.out.throttles_with_432());
        let o = d.out.oauth().expect("XOAUTH2 with OAuth keys");
        assert_eq!(
            o.token_url,
            "https://login.microsoftonline.com/contoso.test/oauth2/v2.0/token"
        );
        assert_eq!(o.scope.as_deref(), Some(MICROSOFT_SCOPE));
        assert!(d.out.from_preset.contains(&"SmartHost"));
        assert!(
            !format!("{:?}", d.out).contains("s3cret"),
            "Debug hides secrets"
        );
        // Any key written wins over the preset.
        let c = load(&format!(
            "{M365}MaxMessagesPerMinute = 10\nOutboundTls = implicit\n"
        ))
        .unwrap();
        let d = &c.servers[0].delivery;
        assert_eq!((d.max_per_minute, d.tls), (10, TlsPolicy::Implicit));
        assert!(!d.out.from_preset.contains(&"MaxMessagesPerMinute"));
        // Without OAuth keys the preset logs in with AUTH LOGIN.
        let c = load("[SmtpSvc/1]\nSmartHostProvider = microsoft365\nRouteUserName = u@c.test\nRoutePassword = p\n").unwrap();
        assert_eq!(c.servers[0].delivery.out.mechanism(), "login");
        // In a domain section the preset leaves SmartHostType alone (it has none).
        let c =
            load("[SmtpSvc/1]\n[SmtpSvc/1/Domain/g.test]\nSmartHostProvider = google\n").unwrap();
        let r = c.servers[0].domain_route("g.test").unwrap();
        assert_eq!(r.smart_host[0].to_string(), "smtp.gmail.com:587");
        assert_eq!(r.tls, Some(TlsPolicy::Required));
        assert_eq!(
            c.servers[0].delivery.smart_host_type,
            crate::config::SmartHostType::DnsOnly
        );
    }

    #[test]
    fn grants_from_files() {
        let c = load(
            "[SmtpSvc/1]\nRouteUserName = r@c.test\nOAuthTenant = t\nOAuthClientId = cid\nOAuthKeyFile = test-key-pkcs1.pem\nOAuthCertificateFile = test-cert.pem\n",
        );
        // The certificate is made by the tests at run time; a missing file names its key.
        if let Err(e) = &c {
            assert!(
                e.to_string().starts_with("t.ini:6: OAuthCertificateFile: "),
                "{e}"
            );
        }
        let dir = std::env::temp_dir().join(format!("mr-oauth-{:x}", crate::os::random_u64()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/oauth/test-key.pem"),
        )
        .unwrap();
        let sa = serde_json::json!({
            "type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com",
            "private_key_id": "k1", "private_key": key, "token_uri": "https://127.0.0.1:1/token"
        });
        std::fs::write(dir.join("sa.json"), sa.to_string()).unwrap();
        std::fs::write(dir.join("rt"), "rt-1\n").unwrap();
        let text = format!(
            "[SmtpSvc/1]\n[SmtpSvc/1/Domain/g.test]\nSmartHostProvider = google\nRouteUserName = me@g.test\nOAuthServiceAccountFile = {}\n[SmtpSvc/1/Domain/r.test]\nRouteUserName = me@r.test\nOAuthClientId = cid\nOAuthRefreshTokenFile = {}\nOAuthTokenUrl = https://127.0.0.1:2/token\n",
            dir.join("sa.json").display(),
            dir.join("rt").display()
        );
        let c = load(&text).unwrap();
        let g = c.servers[0].domain_route("g.test").unwrap();
        let o = g.out.oauth().unwrap();
        assert!(matches!(&o.grant, Grant::ServiceAccount { key_id, .. } if key_id == "k1"));
        assert_eq!(o.token_url, "https://127.0.0.1:1/token");
        assert_eq!(o.scope.as_deref(), Some(GOOGLE_SCOPE));
        let r = c.servers[0].domain_route("r.test").unwrap();
        assert!(matches!(
            r.out.oauth().unwrap().grant,
            Grant::RefreshToken { .. }
        ));
        assert_eq!(
            c.servers[0].secret_files().len(),
            2,
            "the service account and the refresh token are secrets"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_name_the_key() {
        let e = |t: &str| load(t).unwrap_err().to_string();
        assert_eq!(
            e("[SmtpSvc/1]\nSmartHostProvider = yahoo\n"),
            "t.ini:2: SmartHostProvider: `yahoo` is not microsoft365 or google"
        );
        assert!(
            e("[SmtpSvc/1]\nOAuthClientId = c\nOAuthClientSecret = s\nOAuthTenant = t\n")
                .starts_with("t.ini:2: OAuthClientId: OAuth needs RouteUserName")
        );
        assert!(
            e("[SmtpSvc/1]\nRouteUserName = a@b.test\nOAuthClientSecret = s\nOAuthTenant = t\n")
                .contains("OAuthClientId: client credentials need OAuthClientId")
        );
        assert!(
            e("[SmtpSvc/1]\nRouteUserName = a@b.test\nOAuthClientId = c\nOAuthClientSecret = s\n")
                .contains("OAuthTenant: the token endpoint is unknown")
        );
        assert!(
            e("[SmtpSvc/1]\nRouteUserName = a@b.test\nOAuthClientId = c\nOAuthClientSecret = s\nOAuthTokenUrl = http://x/token\n")
                .starts_with("t.ini:5: OAuthTokenUrl: ")
        );
        assert!(
            e("[SmtpSvc/1]\nRouteUserName = a@b.test\nOAuthClientId = c\nOAuthTenant = t\nOAuthKeyFile = missing.pem\nOAuthCertificateFile = missing.crt\n")
                .contains("OAuthCertificateFile: ")
        );
        assert!(
            e("[SmtpSvc/1]\nOutboundAuthMechanism = xoauth2\n")
                .starts_with("t.ini:2: OutboundAuthMechanism: xoauth2 needs OAuth keys")
        );
        assert!(
            e("[SmtpSvc/1]\nRewriteFromHeader = 1\n")
                .starts_with("t.ini:2: RewriteFromHeader: RewriteFromHeader needs RewriteSender")
        );
        assert!(
            e("[SmtpSvc/1]\nOutboundTlsKeyFile = k.pem\n")
                .starts_with("t.ini:2: OutboundTlsCertificateFile: ")
        );
    }
}
