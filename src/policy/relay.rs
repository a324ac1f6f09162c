//! The relay decision for one recipient. It is made on the domain the mail would really be routed to:
//! source routes were already dropped by the parser (mail goes to the final mailbox), and local parts
//! that carry their own routing (`a%b@`, `a!b@`, a quoted `@`) are refused from clients that may not
//! relay even when the domain is ours, as Postfix does, because a mail system behind us might follow
//! that routing to another domain. Address literals are never local.

use crate::config::VirtualServer;
use crate::smtp::address::Mailbox;

/// Where a recipient's mail will go, or that it may not be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A local domain: the Drop folder.
    Local,
    /// A remote domain, and the client may relay: the Queue folder.
    Relay,
    /// A remote domain (or sender-routed address) and the client may not relay.
    Denied,
}

/// Decides for `to`. `client_may_relay` is true for clients in RelayIpList, and for clients that
/// authenticated when RelayForAuth is on.
/// A bare `postmaster` (empty domain) is local.
pub fn decide(vs: &VirtualServer, client_may_relay: bool, to: &Mailbox<'_>) -> Decision {
    if to.domain.is_empty() {
        return Decision::Local;
    }
    let local = !to.is_literal() && vs.is_local_domain(to.domain);
    // IIS "Allow incoming mail to be relayed to this domain": anyone may send to it.
    let client_may_relay = client_may_relay
        || (!local
            && !to.is_literal()
            && vs.domain_route(to.domain).is_some_and(|r| r.relay_allowed));
    match (local, client_may_relay) {
        (_, true) if !local => Decision::Relay,
        (true, true) => Decision::Local,
        (true, false) if to.has_routing() => Decision::Denied,
        (true, false) => Decision::Local,
        (false, _) => Decision::Denied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::address::parse_mailbox;
    use crate::testutil::test_server;

    fn d(client_may_relay: bool, addr: &str) -> Decision {
        let vs = test_server();
        decide(
            &vs,
            client_may_relay,
            &parse_mailbox(addr.as_bytes()).unwrap(),
        )
    }

    #[test]
    fn local_and_remote() {
        assert_eq!(d(false, "u@local.test"), Decision::Local);
        assert_eq!(d(false, "u@LOCAL.Test"), Decision::Local);
        assert_eq!(d(false, "u@local.test."), Decision::Local);
        assert_eq!(d(false, "u@alias.test"), Decision::Local);
        assert_eq!(d(false, "Postmaster"), Decision::Local);
        assert_eq!(d(false, "u@remote.test"), Decision::Denied);
        assert_eq!(d(true, "u@remote.test"), Decision::Relay);
        assert_eq!(d(true, "u@local.test"), Decision::Local);
    }

    #[test]
    fn relay_allowed_domains_take_mail_from_anyone() {
        let mut vs = test_server();
        vs.domains.push(crate::config::DomainRoute {
            pattern: "*.partner.test".into(),
            relay_allowed: true,
            smart_host: Vec::new(),
            out: Default::default(),
            tls: None,
            max_out: None,
            max_per_minute: None,
        });
        let m = |a: &'static str| parse_mailbox(a.as_bytes()).unwrap();
        assert_eq!(decide(&vs, false, &m("u@mx.partner.test")), Decision::Relay);
        assert_eq!(decide(&vs, false, &m("u@partner.test")), Decision::Denied);
        assert_eq!(
            decide(&vs, false, &m("u@evilpartner.test")),
            Decision::Denied
        );
    }

    #[test]
    fn relay_tricks_are_denied() {
        for a in [
            "u%remote.test@local.test",
            "remote.test!u@local.test",
            "\"u@remote.test\"@local.test",
            "\"u%remote.test\"@local.test",
            "u@[127.0.0.1]",
            "u@local.test.remote.test",
            "u@remote-local.test",
            "u@xlocal.test",
            "u@local.testx",
        ] {
            assert_eq!(d(false, a), Decision::Denied, "{a}");
        }
    }
}
