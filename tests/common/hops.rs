//! The two-hop setup of the retry and report tests: mailroot relays mail for `dest.test` to a next hop
//! on 127.0.0.1 (through the remote domain section's smart host), and its reports go back to the
//! sender's own domain `sender.test` (and `copies.test`, for SendNdrTo), whose MX in a real DNS server
//! on loopback is 127.0.0.1 on the reports port. Nothing here reads Drop: every report has to travel
//! over SMTP.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::Builder;
use super::Server;
use super::dns::DnsServer;

/// The bound for waits that span several retries (each 1 s apart).
pub const LONG: Duration = Duration::from_secs(40);
/// How long to keep watching for something that must NOT happen (several retry intervals).
pub const SETTLE: Duration = Duration::from_millis(2500);

pub const SENDER: &str = "app@sender.test";

/// The sender's domain (and `copies.test`, for SendNdrTo) point at 127.0.0.1 by MX.
pub fn dns() -> DnsServer {
    DnsServer::builder()
        .mx("sender.test", 10, "mx.sender.test")
        .mx("copies.test", 10, "mx.sender.test")
        .a("mx.sender.test", Ipv4Addr::new(127, 0, 0, 1))
        .start()
}

/// Mail for dest.test goes to 127.0.0.1:`next_hop`; DNS-routed mail (the reports) to port `reports`.
pub fn config(dns: &DnsServer, next_hop: u16, reports: u16) -> Builder {
    Builder::new()
        .retrying()
        .key("DnsServers", &dns.addr.to_string())
        .key("RemoteSmtpPort", &reports.to_string())
        .key("PickupSettleTime", "200ms")
        .route("dest.test", next_hop)
}

/// One message over SMTP; `rcpts` are (address, RCPT parameters). Asserts the 250.
pub fn submit(srv: &Server, from: &str, rcpts: &[(&str, &str)], subject: &str) {
    let args: Vec<String> = rcpts.iter().map(|(r, p)| format!("<{r}>{p}")).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let to: Vec<&str> = rcpts.iter().map(|r| r.0).collect();
    srv.submit_raw(
        &format!("<{from}>"),
        &args,
        &format!(
            "From: {from}\r\nTo: {}\r\nSubject: {subject}\r\n\r\nbody of {subject}",
            to.join(", ")
        ),
    );
}
