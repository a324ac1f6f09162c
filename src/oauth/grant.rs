//! One token request, without I/O: the form each grant posts to the token endpoint, and what its
//! JSON answer means. The HTTP exchange itself is `http`; the cache that decides when to ask is
//! `cache`.

use std::time::Duration;

use serde_json::Value;

use super::jwt;
use crate::config::{Grant, OAuth};

/// A token endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The access token.
    pub access_token: String,
    /// How long it lives (`expires_in`; an hour when the endpoint does not say).
    pub lifetime: Duration,
    /// A new refresh token, when the endpoint rotated it.
    pub refresh_token: Option<String>,
}

/// The form fields of a token request for `oauth`; `refresh_token` is the file's current content
/// for the refresh grant. `now` (Unix seconds) and `jti` go into client assertions.
pub fn form(
    oauth: &OAuth,
    refresh_token: Option<&str>,
    now: u64,
    jti: &str,
) -> Result<Vec<(&'static str, String)>, String> {
    let scope = oauth.scope.clone();
    let mut f: Vec<(&'static str, String)> = Vec::new();
    match &oauth.grant {
        Grant::ClientSecret { client_id, secret } => {
            f.push(("grant_type", "client_credentials".into()));
            f.push(("client_id", client_id.clone()));
            f.push(("client_secret", secret.expose().to_string()));
            f.extend(scope.map(|s| ("scope", s)));
        }
        Grant::ClientAssertion {
            client_id,
            cert_der,
            key,
        } => {
            let assertion =
                jwt::client_assertion(client_id, &oauth.token_url, cert_der, key, now, jti)?;
            f.push(("grant_type", "client_credentials".into()));
            f.push(("client_id", client_id.clone()));
            f.extend(scope.map(|s| ("scope", s)));
            f.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ));
            f.push(("client_assertion", assertion));
        }
        Grant::ServiceAccount {
            client_email,
            key_id,
            key,
        } => {
            let assertion = jwt::service_account_assertion(
                client_email,
                key_id,
                &oauth.user,
                scope
                    .as_deref()
                    .unwrap_or(crate::config::outbound::GOOGLE_SCOPE),
                &oauth.token_url,
                key,
                now,
            )?;
            f.push((
                "grant_type",
                "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
            ));
            f.push(("assertion", assertion));
        }
        Grant::RefreshToken {
            client_id, secret, ..
        } => {
            let rt = refresh_token.ok_or("the refresh token file is empty")?;
            f.push(("grant_type", "refresh_token".into()));
            f.push(("refresh_token", rt.to_string()));
            f.push(("client_id", client_id.clone()));
            if let Some(s) = secret {
                f.push(("client_secret", s.expose().to_string()));
            }
            f.extend(scope.map(|s| ("scope", s)));
        }
    }
    Ok(f)
}

/// Reads the endpoint's answer: a token on 2xx, else the endpoint's own `error` and
/// `error_description` (which name the problem, never the secret), cut to a log line.
pub fn parse_response(status: u16, body: &str) -> Result<Issued, String> {
    let v: Option<Value> = serde_json::from_str(body).ok();
    if !(200..300).contains(&status) {
        let why = v
            .as_ref()
            .map(|v| {
                let e = v.get("error").and_then(Value::as_str).unwrap_or("");
                let d = v
                    .get("error_description")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                // Entra's descriptions run to several lines (trace and correlation ids).
                let d = d.lines().next().unwrap_or("");
                format!("{e} {d}").trim().to_string()
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "no error description".into());
        return Err(format!("HTTP {status}: {}", cut(&why, 300)));
    }
    let v = v.ok_or("the answer is not JSON")?;
    let access_token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("the answer has no access_token")?
        .to_string();
    if access_token
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ')
    {
        return Err("the access_token has spaces or control characters".into());
    }
    let secs = match v.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .unwrap_or(3600);
    Ok(Issued {
        access_token,
        lifetime: Duration::from_secs(secs.max(1)),
        refresh_token: v
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string),
    })
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oauth(grant: Grant) -> OAuth {
        OAuth {
            tenant: "t".into(),
            user: "relay@contoso.test".into(),
            token_url: "https://login.test/t/oauth2/v2.0/token".into(),
            scope: Some("https://outlook.office365.com/.default".into()),
            grant,
        }
    }

    #[test]
    fn client_secret_form() {
        let secret = crate::config::outbound::test_secret("s3cr3t");
        let f = form(
            &oauth(Grant::ClientSecret {
                client_id: "cid".into(),
                secret,
            }),
            None,
            0,
            "j",
        )
        .unwrap();
        assert_eq!(
            f,
            vec![
                ("grant_type", "client_credentials".to_string()),
                ("client_id", "cid".into()),
                ("client_secret", "s3cr3t".into()),
                ("scope", "https://outlook.office365.com/.default".into()),
            ]
        );
    }

    #[test]
    fn refresh_form_needs_the_token() {
        let o = oauth(Grant::RefreshToken {
            client_id: "cid".into(),
            secret: None,
            file: "rt".into(),
        });
        assert!(form(&o, None, 0, "j").is_err());
        let f = form(&o, Some("rt-1"), 0, "j").unwrap();
        assert!(f.contains(&("refresh_token", "rt-1".into())));
        assert!(f.contains(&("grant_type", "refresh_token".into())));
    }

    #[test]
    fn responses() {
        let ok = parse_response(
            200,
            r#"{"token_type":"Bearer","expires_in":3599,"access_token":"eyJ0eX"}"#,
        )
        .unwrap();
        assert_eq!(ok.access_token, "eyJ0eX");
        assert_eq!(ok.lifetime, Duration::from_secs(3599));
        assert_eq!(ok.refresh_token, None);
        let s = parse_response(
            200,
            r#"{"expires_in":"60","access_token":"a","refresh_token":"r2"}"#,
        )
        .unwrap();
        assert_eq!(s.lifetime, Duration::from_secs(60));
        assert_eq!(s.refresh_token.as_deref(), Some("r2"));
        let e = parse_response(
            401,
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "HTTP 401: invalid_client AADSTS7000215: Invalid client secret provided."
        );
        assert_eq!(
            parse_response(503, "busy").unwrap_err(),
            "HTTP 503: no error description"
        );
        assert!(parse_response(200, "{}").is_err());
        assert!(parse_response(200, r#"{"access_token":"a b"}"#).is_err());
    }
}
