//! TLS for old Windows clients: an RSA certificate (TlsCertificateFile) and a second, ECDSA one
//! (TlsEcdsaCertificateFile), each client getting the one its hello can use. Windows 7 / Server
//! 2008 R2's Schannel offers AEAD (GCM) suites only with ECDHE_ECDSA, so against an RSA certificate
//! alone it finds nothing rustls has; the clients below offer exactly such suite lists.

mod common;
use common::sink::TestCa;
use common::*;

use std::fs;
use std::sync::Arc;

use rustls::crypto::ring::{cipher_suite, default_provider};
use rustls::{ClientConfig, RootCertStore, SupportedCipherSuite};

const HOST: &str = "mx.mailroot.test";

/// A client trusting `ca`, limited to `suites` (and to TLS 1.2 when they are all TLS 1.2 suites).
fn client(ca: &TestCa, suites: &[SupportedCipherSuite]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.ca_der()).unwrap();
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites.to_vec(),
        ..default_provider()
    };
    let tls12 = suites
        .iter()
        .all(|s| matches!(s, SupportedCipherSuite::Tls12(_)));
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    Arc::new(
        ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Windows 7's Schannel as far as rustls is concerned: GCM only with ECDSA.
fn windows7(ca: &TestCa) -> Arc<ClientConfig> {
    client(
        ca,
        &[
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ],
    )
}

/// An RSA-only TLS 1.2 client.
fn rsa_only(ca: &TestCa) -> Arc<ClientConfig> {
    client(ca, &[cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256])
}

/// A server with the RSA certificate and, when `ecdsa`, the ECDSA one; returns the two DERs.
fn start(ca: &TestCa, ecdsa: bool) -> (Server, Vec<u8>, Vec<u8>) {
    let dir = TempDir::new("ecdsa");
    let rsa = ca.rsa_leaf_for(&[HOST]);
    let ec = ca.leaf_for(&[HOST]);
    fs::write(dir.path().join("rsa.pem"), &rsa.cert_pem).unwrap();
    fs::write(dir.path().join("rsa.key"), &rsa.key_pem).unwrap();
    fs::write(dir.path().join("ec.pem"), &ec.cert_pem).unwrap();
    fs::write(dir.path().join("ec.key"), &ec.key_pem).unwrap();
    let mut b = Builder::new()
        .key("TlsCertificateFile", "rsa.pem")
        .key("TlsKeyFile", "rsa.key");
    if ecdsa {
        b = b
            .key("TlsEcdsaCertificateFile", "ec.pem")
            .key("TlsEcdsaKeyFile", "ec.key");
    }
    let ini = b.ini();
    (
        Server::start_in(dir, &ini),
        rsa.der().to_vec(),
        ec.der().to_vec(),
    )
}

fn handshake(srv: &Server, cfg: &Arc<ClientConfig>) -> Result<Client, String> {
    let mut c = srv.connect();
    c.greeting();
    c.ehlo();
    c.starttls(cfg, HOST).map(|_| c)
}

#[test]
fn each_client_gets_the_certificate_it_can_use() {
    let ca = TestCa::new();
    let (srv, rsa, ec) = start(&ca, true);

    let c = handshake(&srv, &windows7(&ca)).expect("Windows 7's suites work with the ECDSA one");
    assert_eq!(c.peer_certificate(), ec);
    assert_eq!(c.tls_info().0, "TLSv1_2");

    let mut c = handshake(&srv, &rsa_only(&ca)).expect("an RSA-only client still works");
    assert_eq!(c.peer_certificate(), rsa);
    c.ehlo();
    let r = c.send_mail(
        "a@b.test",
        &["u@local.test"],
        "Subject: over rsa\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    c.quit();

    // A modern client can use either: it gets the ECDSA one (smaller, faster to sign).
    let c = handshake(&srv, &ca.client_config()).expect("TLS 1.3");
    assert_eq!(c.peer_certificate(), ec);
    assert_eq!(c.tls_info().0, "TLSv1_3");
}

#[test]
fn an_rsa_certificate_alone_leaves_windows_7_without_a_cipher() {
    let ca = TestCa::new();
    let (srv, rsa, _) = start(&ca, false);
    assert!(handshake(&srv, &windows7(&ca)).is_err(), "no common suite");
    let c = handshake(&srv, &rsa_only(&ca)).expect("RSA suites");
    assert_eq!(c.peer_certificate(), rsa);
}

#[test]
fn the_servers_cipher_order_wins() {
    let ca = TestCa::new();
    let (srv, _, _) = start(&ca, true);
    // The client prefers ChaCha20; the server's order puts AES-256-GCM first.
    let cfg = client(
        &ca,
        &[
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
        ],
    );
    let c = handshake(&srv, &cfg).expect("TLS 1.3");
    assert_eq!(c.tls_info().1, "TLS13_AES_256_GCM_SHA384");
}

#[test]
fn a_second_certificate_that_is_not_ecdsa_or_alone_is_a_config_error() {
    let ca = TestCa::new();
    let dir = TempDir::new("ecdsa-bad");
    let rsa = ca.rsa_leaf_for(&[HOST]);
    let ec = ca.leaf_for(&[HOST]);
    fs::write(dir.path().join("rsa.pem"), &rsa.cert_pem).unwrap();
    fs::write(dir.path().join("rsa.key"), &rsa.key_pem).unwrap();
    fs::write(dir.path().join("ec.pem"), &ec.cert_pem).unwrap();
    fs::write(dir.path().join("ec.key"), &ec.key_pem).unwrap();
    let ini = dir.path().join("smtpsvc.ini");
    let check = |text: &str| {
        fs::write(&ini, text).unwrap();
        run_bin(&["check", "--config", &ini.to_string_lossy()], None, None)
    };
    // The RSA pair given as the ECDSA one.
    let r = check(
        "[SmtpSvc/1]\nTlsCertificateFile = ec.pem\nTlsKeyFile = ec.key\nTlsEcdsaCertificateFile = rsa.pem\nTlsEcdsaKeyFile = rsa.key\n",
    );
    assert!(!r.ok());
    assert!(
        r.both().contains(":4: TlsEcdsaCertificateFile") && r.both().contains("not an ECDSA key"),
        "{}",
        r.both()
    );
    // The second without the first.
    let r = check("[SmtpSvc/1]\nTlsEcdsaCertificateFile = ec.pem\nTlsEcdsaKeyFile = ec.key\n");
    assert!(
        !r.ok() && r.both().contains("needs the first"),
        "{}",
        r.both()
    );
    // A key that belongs to another certificate.
    let r = check(
        "[SmtpSvc/1]\nTlsCertificateFile = rsa.pem\nTlsKeyFile = rsa.key\nTlsEcdsaCertificateFile = ec.pem\nTlsEcdsaKeyFile = rsa.key\n",
    );
    assert!(
        !r.ok() && r.both().contains("TlsEcdsaCertificateFile"),
        "{}",
        r.both()
    );
    // Both right: valid, and check prints them.
    let r = check(
        "[SmtpSvc/1]\nTlsCertificateFile = rsa.pem\nTlsKeyFile = rsa.key\nTlsEcdsaCertificateFile = ec.pem\nTlsEcdsaKeyFile = ec.key\n",
    );
    assert!(r.ok(), "{}", r.both());
    assert!(
        r.stdout.contains("TlsEcdsaCertificateFile = "),
        "{}",
        r.stdout
    );
}
