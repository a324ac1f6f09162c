//! JSON Web Tokens signed RS256 (RFC 7515/7519), the client assertions of the token requests: the
//! Microsoft client assertion with its `x5t#S256` certificate thumbprint, and the Google service
//! account's JWT bearer grant (RFC 7523). Signing uses ring, which the TLS stack already brings.

use base64ct::{Base64UrlUnpadded, Encoding};
use ring::rand::SystemRandom;
use ring::signature::RSA_PKCS1_SHA256;
use serde_json::{Value, json};

use crate::config::outbound::RsaKey;

/// base64url without padding, as JWTs write every part.
pub fn b64url(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

/// `header.claims.signature`, signed RS256 with `key`.
pub fn sign(header: &Value, claims: &Value, key: &RsaKey) -> Result<String, String> {
    let pair = key.key_pair()?;
    let mut input = b64url(header.to_string().as_bytes());
    input.push('.');
    input.push_str(&b64url(claims.to_string().as_bytes()));
    let mut sig = vec![0u8; pair.public().modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| "RSA signing failed".to_string())?;
    input.push('.');
    input.push_str(&b64url(&sig));
    Ok(input)
}

/// The SHA-256 thumbprint of a certificate, as Entra ID's `x5t#S256` header wants it.
pub fn thumbprint_s256(cert_der: &[u8]) -> String {
    b64url(ring::digest::digest(&ring::digest::SHA256, cert_der).as_ref())
}

/// The client assertion of Microsoft Entra ID's client-credentials grant with a certificate: valid
/// ten minutes, addressed to the token endpoint, naming the client as issuer and subject.
pub fn client_assertion(
    client_id: &str,
    token_url: &str,
    cert_der: &[u8],
    key: &RsaKey,
    now: u64,
    jti: &str,
) -> Result<String, String> {
    let header = json!({"alg": "RS256", "typ": "JWT", "x5t#S256": thumbprint_s256(cert_der)});
    let claims = json!({
        "aud": token_url,
        "iss": client_id,
        "sub": client_id,
        "jti": jti,
        "nbf": now,
        "iat": now,
        "exp": now + 600,
    });
    sign(&header, &claims, key)
}

/// The assertion of Google's JWT bearer grant for a service account acting as `mailbox`
/// (domain-wide delegation), valid one hour.
pub fn service_account_assertion(
    client_email: &str,
    key_id: &str,
    mailbox: &str,
    scope: &str,
    token_url: &str,
    key: &RsaKey,
    now: u64,
) -> Result<String, String> {
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if !key_id.is_empty() {
        header["kid"] = Value::from(key_id);
    }
    let claims = json!({
        "iss": client_email,
        "sub": mailbox,
        "scope": scope,
        "aud": token_url,
        "iat": now,
        "exp": now + 3600,
    });
    sign(&header, &claims, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{KeyPair, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    /// A 2048-bit test key (PKCS#8), also used by tests/oauth.rs.
    fn key() -> RsaKey {
        let pem = std::fs::read("tests/data/oauth/test-key.pem").expect("test key");
        let der = rustls::pki_types::PrivateKeyDer::from_pem_slice(&pem).expect("pem");
        RsaKey {
            der: der.secret_der().to_vec(),
            pkcs1: false,
        }
    }

    use rustls::pki_types::pem::PemObject;

    #[test]
    fn signature_verifies_and_parts_decode() {
        let k = key();
        let jwt = client_assertion("cid", "https://t/token", b"cert", &k, 1000, "j1").unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&Base64UrlUnpadded::decode_vec(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["x5t#S256"], thumbprint_s256(b"cert"));
        let claims: Value =
            serde_json::from_slice(&Base64UrlUnpadded::decode_vec(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://t/token");
        assert_eq!(claims["iss"], "cid");
        assert_eq!(claims["sub"], "cid");
        assert_eq!(claims["exp"], 1600);
        let pair = k.key_pair().unwrap();
        let public =
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, pair.public_key().as_ref());
        let sig = Base64UrlUnpadded::decode_vec(parts[2]).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        assert!(public.verify(signed.as_bytes(), &sig).is_ok());
        assert!(public.verify(b"other", &sig).is_err());
    }

    #[test]
    fn service_account_claims() {
        let jwt = service_account_assertion(
            "sa@p.iam.gserviceaccount.com",
            "kid1",
            "relay@example.com",
            "https://mail.google.com/",
            "https://oauth2.googleapis.com/token",
            &key(),
            50,
        )
        .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        let header: Value =
            serde_json::from_slice(&Base64UrlUnpadded::decode_vec(parts[0]).unwrap()).unwrap();
        assert_eq!(header["kid"], "kid1");
        let claims: Value =
            serde_json::from_slice(&Base64UrlUnpadded::decode_vec(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "relay@example.com");
        assert_eq!(claims["iss"], "sa@p.iam.gserviceaccount.com");
        assert_eq!(claims["scope"], "https://mail.google.com/");
        assert_eq!(claims["exp"], 3650);
    }
}
