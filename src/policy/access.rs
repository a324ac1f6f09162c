//! Connection control (IIS "Connection" dialog): grant everyone except IPDeny, or deny everyone
//! except IPGrant, by IPGrantByDefault; and who may relay by address (RelayIpList). The lists and
//! their matching are settings values ([`crate::config::HostList`], [`crate::config::IpList`]);
//! this module makes the decisions, including whether one needs the client's name.

use std::net::IpAddr;

use crate::config::VirtualServer;

/// Whether connection control needs the client's name (a list has name entries).
pub fn needs_name(vs: &VirtualServer) -> bool {
    if vs.ip_grant_by_default {
        vs.ip_deny.has_names()
    } else {
        vs.ip_grant.has_names()
    }
}

/// Whether `ip` (known by the confirmed `name`, if looked up) may open a session with `vs`.
pub fn may_connect(vs: &VirtualServer, ip: IpAddr, name: Option<&str>) -> bool {
    if vs.ip_grant_by_default {
        !vs.ip_deny.contains(ip, name)
    } else {
        vs.ip_grant.contains(ip, name)
    }
}

/// Whether `ip` may relay to non-local domains (RelayIpList).
pub fn may_relay(vs: &VirtualServer, ip: IpAddr) -> bool {
    vs.relay_ip_list.contains(ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostList;
    use crate::testutil::test_server;

    #[test]
    fn grant_and_deny() {
        let mut vs = test_server();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(may_connect(&vs, a, None));
        vs.ip_deny = HostList::parse("127.0.0.2").unwrap();
        assert!(!may_connect(&vs, a, None) && may_connect(&vs, b, None));
        vs.ip_grant_by_default = false;
        vs.ip_grant = HostList::parse("127.0.0.2/32").unwrap();
        assert!(may_connect(&vs, a, None) && !may_connect(&vs, b, None));
        assert!(may_relay(&vs, b) && !may_relay(&vs, a));
    }
}
