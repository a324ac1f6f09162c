//! `mailroot import-iis`: MetaBase.xml files in IIS's own form (tests/data/iis: three virtual servers
//! with service-level inheritance, domains of every kind, IPSECLIST blobs that grant and deny by
//! address, mask and name, `<Custom>` properties; a UTF-16 file; bad inputs) through the real binary.
//! The INI it writes passes `mailroot check`, and, loaded by the crate's own loader, means what the
//! metabase meant: the round trip compares the typed settings with the metabase read independently.

mod common;
use common::*;

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mailroot::config::{Config, SmartHostType, TlsPolicy, VirtualServer};
use mailroot::import_iis::ipseclist::{self, IpSecList};
use mailroot::import_iis::metabase::{Metabase, Server};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/iis")
        .join(name)
}

fn import(args: &[&str]) -> Run {
    let mut all = vec!["import-iis"];
    all.extend_from_slice(args);
    run_bin(&all, None, None)
}

/// Imports `source` into `<dir>/smtpsvc.ini`, expecting success; returns the path and the run.
fn import_to(dir: &TempDir, source: &Path) -> (PathBuf, Run) {
    let out = dir.path().join("smtpsvc.ini");
    let r = import(&[source.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(r.ok(), "import failed:\n{}", r.both());
    (out, r)
}

fn check(ini: &Path) -> Run {
    run_bin(&["check", "--config", ini.to_str().unwrap()], None, None)
}

/// The metabase read by the library, independently of the INI.
fn metabase(name: &str) -> Metabase {
    Metabase::from_bytes(&fs::read(fixture(name)).unwrap()).unwrap()
}

fn prop<'a>(s: &'a Server, name: &str) -> Option<&'a str> {
    s.node.get(name).map(|p| p.value.trim())
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Probe clients: addresses around every entry of the fixtures' lists, and names.
const PROBES: &[(&str, Option<&str>)] = &[
    ("127.0.0.1", None),
    ("127.0.0.2", None),
    ("10.0.0.10", None),
    ("10.0.0.11", None),
    ("10.1.200.3", None),
    ("10.2.0.1", None),
    ("192.168.10.77", None),
    ("192.168.11.1", None),
    ("192.168.3.4", None),
    ("203.0.113.9", None),
    ("203.0.114.9", None),
    ("198.51.100.7", None),
    ("198.51.100.8", None),
    ("198.51.100.9", None),
    ("192.0.2.66", None),
    ("192.0.2.67", None),
    ("8.8.8.8", None),
    ("8.8.8.8", Some("spam.example")),
    ("8.8.8.8", Some("mx1.spam.example")),
    ("8.8.8.8", Some("notspam.example")),
    ("8.8.8.8", Some("bad.host.example")),
    ("8.8.8.8", Some("host.example")),
    ("8.8.4.4", Some("trusted.example")),
    ("8.8.4.4", Some("a.trusted.example")),
    ("8.8.4.4", Some("untrusted.example")),
];

/// RelayIpList as IIS decides it (addresses only: IIS's relay check has the client's address),
/// against mailroot's list.
fn same_relay(vs: &VirtualServer, value: Option<&str>) {
    let iis = |a: Ipv4Addr| -> bool {
        match value {
            None => false,    // absent: only the list below, nothing listed
            Some("") => true, // empty: all except the list below, nothing listed
            Some(hex) => {
                let l = ipseclist::parse_hex(hex).unwrap();
                // Relay names cannot be matched by address: mailroot leaves granted names out.
                let addrs_only = IpSecList {
                    grant_names: Vec::new(),
                    ..l
                };
                addrs_only.permits(a, None)
            }
        }
    };
    for (addr, _) in PROBES {
        let a = ip(addr);
        assert_eq!(
            vs.relay_ip_list.contains(a.into()),
            iis(a),
            "SmtpSvc/{} RelayIpList disagrees for {addr}",
            vs.instance
        );
    }
}

/// IPSecurity (connection control) as IIS decides it, against IPGrantByDefault/IPGrant/IPDeny.
fn same_access(vs: &VirtualServer, value: Option<&str>) {
    let list = match value {
        Some(hex) if !hex.is_empty() => ipseclist::parse_hex(hex).unwrap(),
        _ => IpSecList {
            grant_by_default: true,
            ..IpSecList::default()
        },
    };
    for (addr, name) in PROBES {
        let a = ip(addr);
        let mailroot = if vs.ip_grant_by_default {
            !vs.ip_deny.contains(a.into(), *name)
        } else {
            vs.ip_grant.contains(a.into(), *name)
        };
        assert_eq!(
            mailroot,
            list.permits(a, *name),
            "SmtpSvc/{} connection control disagrees for {addr} {name:?}",
            vs.instance
        );
    }
}

#[test]
fn imports_three_servers_and_check_accepts_it() {
    let dir = TempDir::new("iis-full");
    let (out, r) = import_to(&dir, &fixture("MetaBase.xml"));
    // The summary goes to standard output with --out.
    assert!(
        r.stdout
            .contains("import-iis: 3 virtual server(s), 3 remote domain section(s)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("  converted: "), "{}", r.stdout);
    assert!(r.stdout.contains("Exchange-only"), "{}", r.stdout);
    assert!(r.stdout.contains("Windows-only"), "{}", r.stdout);
    assert!(r.stdout.contains("  refused: 0"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("warning: SmtpSvc/2: RelayIpList=\"\" lets every client relay"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("ServerAutoStart = FALSE"), "{}", r.stdout);
    let text = fs::read_to_string(&out).unwrap();
    for line in [
        "[SmtpSvc/1]",
        "ServerBindings = 10.0.0.5:25, 127.0.0.1:25",
        "FullyQualifiedDomainName = mail.contoso.com",
        "DefaultDomain = contoso.com",
        "LocalDomains = contoso.net",
        "ConnectionTimeout = 900",
        "MaxSessionSize = 0",
        "MaxSmtpErrors = 20",
        "HopCount = 15",
        "RelayIpList = 127.0.0.1, 10.0.0.10, 10.1.0.0/16, 192.168.10.0/24",
        "IPGrantByDefault = 1",
        "IPDeny = 203.0.113.0/24, 198.51.100.7, 198.51.100.9, spam.example, *.spam.example, bad.host.example, *.bad.host.example",
        "AuthFlags = 3",
        "RelayForAuth = 1",
        "EnableReverseDnsLookup = 1",
        "SmartHost = [10.0.0.25]",
        "SmartHostType = 1",
        "SmtpRemoteProgressiveRetry = 15,30,60,240",
        "SmtpRemoteDelayExpireMinutes = 240",
        "[SmtpSvc/1/Domain/fabrikam.com]",
        "RelayAllowed = 1",
        "SmartHost = [10.20.0.5]",
        "[SmtpSvc/1/Domain/*.partner.example]",
        "OutboundTls = required",
        "[SmtpSvc/2]",
        "RelayIpList = 0.0.0.0/0, ::/0",
        "IPGrantByDefault = 0",
        "IPGrant = 192.168.0.0/16, 127.0.0.1, trusted.example, *.trusted.example",
        "AuthFlags = 2",
        "SmtpRemoteProgressiveRetry = 10,10,10,15",
        "[SmtpSvc/3]",
        "RelayIpList =",
        "MaxMessageSize = 0",
        "MaxBatchedMessages = 4294967295",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing line `{line}`:\n{text}"
        );
    }
    // What is not converted is there as a comment with its reason, never dropped.
    for comment in [
        "; AdminACL = ",
        "Windows-only",
        "; SmtpInboundCommandSupportOptions = \"7697601\" (from /LM/SmtpSvc): not converted, Exchange-only",
        "; UnknownName_61537 = \"1\": not converted, not supported",
        "; RoutePassword = (secret, not shown)",
        "; RouteUserName = relay-user@isp.example",
        "AuthNTLM (Integrated Windows authentication) is Windows-only",
        "SMTP_ETRN_CMD: not converted",
        "; /LM/SmtpSvc/1/Root (IIsSmtpVirtualDir",
        "RelayIpList is absent in the metabase: IIS's default, \"Only the list below\" with nothing listed:",
        "RelayIpList = \"\" (empty, not absent): IIS's \"All except the list below\" with nothing listed:",
        "the names app.contoso.com are left out",
        "; MaxConnections = \"2000000000\": not converted, notes:",
        "; SmtpLocalNDRExpireMinutes = \"2880\": not converted, not supported",
    ] {
        assert!(text.contains(comment), "missing `{comment}`:\n{text}");
    }
    assert!(
        !text.contains("4963446270000000240000002000000041b3"),
        "the encrypted password is not echoed"
    );
    // On this system the old server's C:\ paths are comments; on Windows they are keys.
    if cfg!(windows) {
        assert!(
            text.contains("MailRoot = C:\\Inetpub\\mailroot\n"),
            "{text}"
        );
    } else {
        assert!(
            text.contains("; QueueDirectory = C:\\Inetpub\\mailroot\\Queue\n"),
            "{text}"
        );
        assert!(!text.lines().any(|l| l.starts_with("MailRoot")), "{text}");
    }
    let c = check(&out);
    assert!(c.ok(), "mailroot check refuses the import:\n{}", c.both());
}

#[test]
fn round_trip_means_what_the_metabase_meant() {
    let dir = TempDir::new("iis-roundtrip");
    let (out, _) = import_to(&dir, &fixture("MetaBase.xml"));
    let cfg = Config::load(&out).expect("the crate's loader takes the import");
    let mb = metabase("MetaBase.xml");
    assert_eq!(cfg.servers.len(), mb.servers.len());
    for (vs, s) in cfg.servers.iter().zip(&mb.servers) {
        assert_eq!(vs.instance, s.instance);
        // Bindings: IIS's IP:port:host, as mailroot's typed bindings.
        let want: Vec<String> = prop(s, "ServerBindings")
            .unwrap()
            .split_whitespace()
            .map(|b| {
                let mut parts = b.splitn(3, ':');
                let (ip, port) = (parts.next().unwrap(), parts.next().unwrap());
                format!("{ip}:{port}")
            })
            .collect();
        let got: Vec<String> = vs.bindings.iter().map(|b| b.to_string()).collect();
        assert_eq!(got, want, "SmtpSvc/{} bindings", s.instance);
        same_relay(vs, prop(s, "RelayIpList"));
        same_access(vs, prop(s, "IPSecurity"));
        // Sizes in bytes; 4294967295 is unlimited (mailroot's 0).
        let bytes = |name: &str, default: u64| match prop(s, name) {
            Some("4294967295") => 0,
            Some(v) => v.parse().unwrap(),
            None => default,
        };
        assert_eq!(vs.max_message_size, bytes("MaxMessageSize", 2_097_152));
        assert_eq!(vs.max_session_size, bytes("MaxSessionSize", 10_485_760));
        assert_eq!(
            u64::from(vs.max_recipients),
            bytes("MaxRecipients", 100),
            "SmtpSvc/{}",
            s.instance
        );
        assert_eq!(u64::from(vs.hop_count), bytes("HopCount", 15));
        // Seconds and minutes, as the metabase counts them.
        assert_eq!(
            vs.connection_timeout,
            Duration::from_secs(prop(s, "ConnectionTimeout").unwrap().parse().unwrap())
        );
        if let Some(v) = prop(s, "RemoteTimeout") {
            assert_eq!(
                vs.delivery.remote_timeout,
                Duration::from_secs(v.parse().unwrap())
            );
        }
        let retry: Vec<Duration> = prop(s, "SmtpRemoteProgressiveRetry")
            .unwrap()
            .split(',')
            .map(|m| Duration::from_secs(m.trim().parse::<u64>().unwrap() * 60))
            .collect();
        assert_eq!(vs.delivery.retry, retry);
        if let Some(v) = prop(s, "SmtpRemoteNDRExpireMinutes") {
            assert_eq!(
                vs.delivery.ndr_expire,
                Duration::from_secs(v.parse::<u64>().unwrap() * 60)
            );
        }
        assert!(vs.security.relay_for_auth, "RelayForAuth 4294967295 = yes");
    }
    let (one, two, three) = (&cfg.servers[0], &cfg.servers[1], &cfg.servers[2]);
    // Smart hosts and their types.
    assert_eq!(one.delivery.smart_host[0].to_string(), "[10.0.0.25]");
    assert_eq!(
        one.delivery.smart_host_type,
        SmartHostType::DnsThenSmartHost
    );
    assert_eq!(two.delivery.smart_host[0].to_string(), "relay.isp.example");
    assert_eq!(two.delivery.smart_host_type, SmartHostType::Always);
    assert_eq!(
        two.delivery.tls,
        TlsPolicy::Required,
        "RouteAction SMTP_SSL"
    );
    assert!(three.delivery.smart_host.is_empty());
    // AuthFlags: Basic + anonymous (NTLM dropped); NTLM alone becomes Basic required.
    assert!(one.security.anonymous && one.security.basic);
    assert!(!two.security.anonymous && two.security.basic);
    assert!(three.security.anonymous && !three.security.basic);
    assert_eq!(
        one.max_smtp_errors, 20,
        "from <Custom Name=\"UnknownName_36887\">"
    );
    assert_eq!(three.delivery.max_batched, u32::MAX, "0: no limit");
    assert!(!two.log.enabled && one.log.enabled);
    // Domains: default and alias are local, remote ones route.
    assert_eq!(one.default_domain, "contoso.com");
    assert!(one.is_local_domain("contoso.net"));
    let fab = one.domain_route("fabrikam.com").unwrap();
    assert!(fab.relay_allowed);
    assert_eq!(fab.smart_host[0].to_string(), "[10.20.0.5]");
    let partner = one.domain_route("mx.partner.example").unwrap();
    assert!(!partner.relay_allowed);
    assert_eq!(partner.tls, Some(TlsPolicy::Required));
    assert_eq!(partner.smart_host[0].to_string(), "smtp.partner.example");
    assert!(one.domain_route("partner.example").is_none());
    let legacy = one.domain_route("legacy.example").unwrap();
    assert_eq!(legacy.smart_host[0].to_string(), "etrn.legacy.example");
    assert!(
        one.domain_route("contoso.net").is_none(),
        "local, not remote"
    );
    assert!(two.domains.is_empty() && three.domains.is_empty());
}

#[test]
fn utf16_and_bom_files_and_a_grant_by_default_relay_list() {
    let dir = TempDir::new("iis-utf16");
    let (out, _) = import_to(&dir, &fixture("MetaBase-utf16.xml"));
    let text = fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("; ServerComment = \"Relais für Anwendungen\""),
        "{text}"
    );
    assert!(
        text.contains("LogFilePeriod = 3\n"),
        "symbolic, inherited: {text}"
    );
    let cfg = Config::load(&out).unwrap();
    let mb = metabase("MetaBase-utf16.xml");
    same_relay(&cfg.servers[0], prop(&mb.servers[0], "RelayIpList"));
    assert!(
        cfg.servers[0]
            .relay_ip_list
            .contains("2001:db8::5".parse().unwrap()),
        "IIS never listed IPv6 clients: all except the list includes them"
    );
    assert_eq!(cfg.servers[0].max_message_size, 5_242_880);
    assert!(check(&out).ok());

    // The UTF-8 fixture with a BOM in front imports the same.
    let bom = dir.path().join("bom.xml");
    let mut bytes = vec![0xef, 0xbb, 0xbf];
    bytes.extend(fs::read(fixture("MetaBase.xml")).unwrap());
    fs::write(&bom, bytes).unwrap();
    let r = import(&[bom.to_str().unwrap()]);
    assert!(r.ok(), "{}", r.both());
    assert!(r.stdout.contains("[SmtpSvc/3]"));
}

#[test]
fn stdout_instance_and_force() {
    let dir = TempDir::new("iis-cli");
    let source = fixture("MetaBase.xml");
    // Without --out: the INI on standard output, the summary on standard error.
    let r = import(&[source.to_str().unwrap(), "--instance", "2"]);
    assert!(r.ok(), "{}", r.both());
    assert!(r.stdout.contains("[SmtpSvc/2]"), "{}", r.stdout);
    assert!(!r.stdout.contains("[SmtpSvc/1]"), "{}", r.stdout);
    assert!(!r.stdout.contains("[SmtpSvc/3]"), "{}", r.stdout);
    assert!(r.stdout.contains("; only /LM/SmtpSvc/2 (--instance 2)"));
    assert!(
        r.stderr.contains("import-iis: 1 virtual server(s)"),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("import-iis: "), "no summary in the INI");

    let r = import(&[source.to_str().unwrap(), "--instance", "9"]);
    assert!(!r.ok());
    assert!(
        r.stderr
            .contains("--instance 9: the metabase has no /LM/SmtpSvc/9 (it has 1, 2, 3)"),
        "{}",
        r.stderr
    );

    // An existing file is never overwritten without --force.
    let out = dir.path().join("smtpsvc.ini");
    fs::write(&out, "[SmtpSvc/1]\n; mine\n").unwrap();
    let r = import(&[source.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1), "{}", r.both());
    assert!(
        r.stderr.contains("exists: not overwritten (give --force"),
        "{}",
        r.stderr
    );
    assert_eq!(fs::read_to_string(&out).unwrap(), "[SmtpSvc/1]\n; mine\n");
    let r = import(&[
        source.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--force",
        "--instance",
        "3",
    ]);
    assert!(r.ok(), "{}", r.both());
    let text = fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("[SmtpSvc/3]") && !text.contains("; mine"),
        "{text}"
    );
    assert!(check(&out).ok());

    // The metabase itself is never the output, --force or not.
    let copy = dir.path().join("MetaBase.xml");
    fs::copy(&source, &copy).unwrap();
    let r = import(&[
        copy.to_str().unwrap(),
        "--out",
        copy.to_str().unwrap(),
        "--force",
    ]);
    assert!(!r.ok());
    assert!(
        r.stderr.contains("would replace the metabase itself"),
        "{}",
        r.stderr
    );
}

#[test]
fn bad_inputs_are_errors_that_say_where() {
    let cases: &[(&str, &str)] = &[
        ("not-xml.txt", "not-xml.txt:1:1: not well-formed XML"),
        (
            "not-a-metabase.xml",
            "not-a-metabase.xml: not an IIS metabase: <configuration> has no <MBProperty> element",
        ),
        (
            "bad-blob.xml",
            "bad-blob.xml:6: <IIsSmtpServer Location=\"/LM/SmtpSvc/1\">: RelayIpList: byte 0x4c: the address array needs 8 bytes",
        ),
        ("no-such-file.xml", "no-such-file.xml: cannot read"),
    ];
    for (name, want) in cases {
        let r = import(&[fixture(name).to_str().unwrap()]);
        assert_eq!(r.status.code(), Some(1), "{name}: {}", r.both());
        assert!(
            r.stderr.contains(want),
            "{name}: want `{want}` in:\n{}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{name}: nothing on standard output");
    }
    // A flag IIS does not have, named with its element and line.
    let dir = TempDir::new("iis-bad");
    let bad = dir.path().join("flags.xml");
    fs::write(
        &bad,
        "<configuration><MBProperty>\n<IIsSmtpServer\tLocation =\"/LM/SmtpSvc/1\"\n\t\tAuthFlags=\"AuthBasic | AuthKerberos\"\n\t>\n</IIsSmtpServer>\n</MBProperty></configuration>\n",
    )
    .unwrap();
    let r = import(&[bad.to_str().unwrap()]);
    assert!(!r.ok());
    assert!(
        r.stderr.contains("flags.xml:3: <IIsSmtpServer Location=\"/LM/SmtpSvc/1\">: AuthFlags: `AuthKerberos` is neither a number nor a flag of AuthFlags"),
        "{}",
        r.stderr
    );
    // Usage errors exit 2.
    let r = import(&[]);
    assert_eq!(r.status.code(), Some(2), "{}", r.both());
}
