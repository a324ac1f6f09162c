//! The shortest path: start the binary, send one message to a local domain, find it in Drop.

mod common;
use common::*;

#[test]
fn one_message_to_drop() {
    let srv = Builder::new().start();
    let mut c = srv.connect();
    c.hello();
    let r = c.send_mail(
        "sender@example.test",
        &["user@local.test"],
        &message("smoke"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    assert!(r.last().starts_with("250 2.6.0 <"), "{r:?}");
    c.ok("QUIT", 221);
    let files = srv.wait_files("Drop", 1);
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.starts_with("x-sender: sender@example.test\r\nx-receiver: user@local.test\r\nReceived: from client.test ([127.0.0.1]) by mx.mailroot.test with ESMTP id "), "{text}");
    assert!(text.ends_with("\r\n\r\nHello from a test.\r\n"), "{text:?}");
}
