//! Connection control (IIS "Connection" dialog): IPGrantByDefault with IPDeny / IPGrant, single
//! addresses and ranges (CIDR and subnet-mask forms). Clients connect from other loopback addresses
//! (127.0.0.2, …) by binding their socket before connecting.

mod common;
use common::*;

const DENIED: &str = "554 5.7.1 Access denied";

/// Asserts that a client from `source` is refused with 554 and then disconnected.
fn assert_denied(srv: &Server, source: &str) {
    let mut c = Client::connect_from(source, srv.addr());
    let r = c
        .try_reply()
        .unwrap_or_else(|| panic!("{source}: closed without a reply"));
    assert_eq!(r.last(), DENIED, "{source}: {r:?}");
    assert_eq!(
        c.read_to_end(),
        "",
        "{source}: the server must close after refusing"
    );
}

/// Asserts that a client from `source` gets the banner and a working session.
fn assert_admitted(srv: &Server, source: &str) {
    let mut c = Client::connect_from(source, srv.addr());
    let r = c
        .try_reply()
        .unwrap_or_else(|| panic!("{source}: closed without a banner"));
    assert_eq!(r.code, 220, "{source}: {r:?}");
    assert!(
        r.last().starts_with("220 mx.mailroot.test "),
        "{source}: {r:?}"
    );
    c.ok("EHLO client.test", 250);
    c.ok("NOOP", 250);
    c.ok("QUIT", 221);
    assert_eq!(c.read_to_end(), "");
}

#[test]
fn ip_deny_refuses_one_address() {
    let srv = Builder::new().key("IPDeny", "127.0.0.2").start();
    assert_denied(&srv, "127.0.0.2");
    assert_admitted(&srv, "127.0.0.1");
    assert_admitted(&srv, "127.0.0.3");
    // Refused again on a later attempt; the server keeps serving others.
    assert_denied(&srv, "127.0.0.2");
    assert_admitted(&srv, "127.0.0.1");
    let logged = |srv: &Server| {
        srv.log_text()
            .lines()
            .any(|l| l.contains("127.0.0.2") && l.contains("refused"))
    };
    let until = std::time::Instant::now() + WAIT;
    while !logged(&srv) && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        logged(&srv),
        "the refusal is not in the log:\n{}",
        srv.log_text()
    );
}

#[test]
fn grant_by_default_off_admits_only_ip_grant() {
    let srv = Builder::new()
        .key("IPGrantByDefault", "0")
        .key("IPGrant", "127.0.0.2")
        .start();
    assert_admitted(&srv, "127.0.0.2");
    assert_denied(&srv, "127.0.0.1");
    assert_denied(&srv, "127.0.0.3");
    assert_admitted(&srv, "127.0.0.2");
}

#[test]
fn admitted_client_keeps_its_own_relay_rights() {
    // 127.0.0.2 may connect but is not in RelayIpList (127.0.0.1): local mail only.
    let srv = Builder::new()
        .key("IPGrantByDefault", "0")
        .key("IPGrant", "127.0.0.2")
        .start();
    let mut c = Client::connect_from("127.0.0.2", srv.addr());
    c.hello();
    c.ok("MAIL FROM:<a@example.test>", 250);
    let r = c.cmd("RCPT TO:<x@remote.test>");
    assert_eq!(r.last(), "550 5.7.1 Unable to relay for x@remote.test");
    c.ok("RCPT TO:<u@local.test>", 250);
    c.ok("DATA", 354);
    c.send(message("from .2").as_bytes());
    c.send(b"\r\n.\r\n");
    let r = c.reply();
    assert!(r.last().starts_with("250 2.6.0 <"), "{r:?}");
    c.ok("QUIT", 221);
    let files = srv.wait_files("Drop", 1);
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        text.contains("Received: from client.test ([127.0.0.2]) by mx.mailroot.test"),
        "{text}"
    );
    assert!(srv.files("Queue").is_empty());
}

#[test]
fn ip_deny_cidr_range() {
    // 127.0.0.0/30 is 127.0.0.0 - 127.0.0.3.
    let srv = Builder::new().key("IPDeny", "127.0.0.0/30").start();
    assert_denied(&srv, "127.0.0.1");
    assert_denied(&srv, "127.0.0.2");
    assert_denied(&srv, "127.0.0.3");
    assert_admitted(&srv, "127.0.0.4");
    assert_admitted(&srv, "127.0.0.5");
}

#[test]
fn ip_deny_subnet_mask_forms() {
    let srv = Builder::new()
        .key("IPDeny", "127.0.0.2/255.255.255.255")
        .start();
    assert_denied(&srv, "127.0.0.2");
    assert_admitted(&srv, "127.0.0.1");
    assert_admitted(&srv, "127.0.0.3");
    drop(srv);

    // 127.0.0.6/255.255.255.254 is 127.0.0.6 and 127.0.0.7; lists mix forms.
    let srv = Builder::new()
        .key(
            "IPDeny",
            "10.0.0.0/8, 127.0.0.6/255.255.255.254, 127.0.0.9/32",
        )
        .start();
    assert_admitted(&srv, "127.0.0.5");
    assert_denied(&srv, "127.0.0.6");
    assert_denied(&srv, "127.0.0.7");
    assert_admitted(&srv, "127.0.0.8");
    assert_denied(&srv, "127.0.0.9");
    assert_admitted(&srv, "127.0.0.1");
}

#[test]
fn ip_grant_ranges() {
    let srv = Builder::new()
        .key("IPGrantByDefault", "0")
        .key("IPGrant", "127.0.0.0/30")
        .start();
    assert_admitted(&srv, "127.0.0.1");
    assert_admitted(&srv, "127.0.0.2");
    assert_admitted(&srv, "127.0.0.3");
    assert_denied(&srv, "127.0.0.4");
    drop(srv);

    let srv = Builder::new()
        .key("IPGrantByDefault", "0")
        .key("IPGrant", "127.0.0.2/255.255.255.254")
        .start();
    assert_admitted(&srv, "127.0.0.2");
    assert_admitted(&srv, "127.0.0.3");
    assert_denied(&srv, "127.0.0.1");
    assert_denied(&srv, "127.0.0.4");
}

#[test]
fn grant_by_default_off_with_empty_grant_admits_nobody() {
    let srv = Builder::new()
        .key("IPGrantByDefault", "0")
        .key("IPDeny", "127.0.0.9")
        .start();
    assert_denied(&srv, "127.0.0.1");
    assert_denied(&srv, "127.0.0.2");
}

#[test]
fn refused_clients_do_not_use_up_max_connections() {
    let srv = Builder::new()
        .key("IPDeny", "127.0.0.2")
        .key("MaxConnections", "1")
        .start();
    for _ in 0..5 {
        assert_denied(&srv, "127.0.0.2");
    }
    // The one session slot is still free, and it is the only one.
    let mut first = Client::connect_from("127.0.0.1", srv.addr());
    assert_eq!(first.reply().code, 220);
    let mut second = Client::connect_from("127.0.0.3", srv.addr());
    let r = second.reply();
    assert_eq!(r.code, 421, "{r:?}");
    // A denied client still gets its own answer, not the MaxConnections one.
    assert_denied(&srv, "127.0.0.2");
    first.ok("QUIT", 221);
}
