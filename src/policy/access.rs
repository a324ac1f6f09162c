//! Connection control (IIS "Connection" dialog): grant everyone except IPDeny, or deny everyone
//! except IPGrant, by IPGrantByDefault.

use std::net::IpAddr;

use crate::config::VirtualServer;

/// Whether `ip` may open a session with `vs`.
pub fn may_connect(vs: &VirtualServer, ip: IpAddr) -> bool {
    if vs.ip_grant_by_default {
        !vs.ip_deny.contains(ip)
    } else {
        vs.ip_grant.contains(ip)
    }
}

/// Whether `ip` may relay to non-local domains (RelayIpList).
pub fn may_relay(vs: &VirtualServer, ip: IpAddr) -> bool {
    vs.relay_ip_list.contains(ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ipnet::IpList;
    use crate::testutil::test_server;

    #[test]
    fn grant_and_deny() {
        let mut vs = test_server();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(may_connect(&vs, a));
        vs.ip_deny = IpList::parse("127.0.0.2").unwrap();
        assert!(!may_connect(&vs, a) && may_connect(&vs, b));
        vs.ip_grant_by_default = false;
        vs.ip_grant = IpList::parse("127.0.0.2/32").unwrap();
        assert!(may_connect(&vs, a) && !may_connect(&vs, b));
        assert!(may_relay(&vs, b) && !may_relay(&vs, a));
    }
}
