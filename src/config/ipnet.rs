//! IP addresses and CIDR ranges as the IIS lists write them: `10.0.0.5`, `10.0.0.0/8`,
//! `10.0.0.0/255.0.0.0` (IIS's "group of computers" with a subnet mask), `::1`, `fd00::/8`.

use std::fmt;
use std::net::IpAddr;

/// One address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses one entry; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a.trim(), Some(p.trim())),
            None => (s, None),
        };
        let a = a.trim_start_matches('[').trim_end_matches(']');
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR range"))?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) if p.contains('.') => {
                let mask: std::net::Ipv4Addr = p
                    .parse()
                    .map_err(|_| format!("`{p}` is not a subnet mask"))?;
                let m = u32::from(mask);
                if m.leading_ones() + m.trailing_zeros() != 32 || !addr.is_ipv4() {
                    return Err(format!("`{p}` is not a contiguous IPv4 subnet mask"));
                }
                m.leading_ones() as u8
            }
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`/{p}` is not a prefix length from 0 to {max}")),
            },
        };
        Ok(IpNet { addr, prefix })
    }

    /// Whether `ip` lies inside the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == max {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// IPv4-mapped IPv6 addresses (what a dual-stack socket reports for IPv4 clients) as plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_canonical(),
        v4 => v4,
    }
}

/// A comma-separated list of ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpList(Vec<IpNet>);

impl IpList {
    /// Parses `a, b/n, c/mask`; an empty string is an empty list.
    pub fn parse(s: &str) -> Result<IpList, String> {
        let mut v = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            v.push(IpNet::parse(part)?);
        }
        Ok(IpList(v))
    }

    /// Whether any range contains `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for IpList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_and_masks() {
        let l =
            IpList::parse("127.0.0.1, 10.0.0.0/8, 192.168.1.0/255.255.255.0, fd00::/8").unwrap();
        assert!(l.contains(ip("127.0.0.1")));
        assert!(!l.contains(ip("127.0.0.2")));
        assert!(l.contains(ip("10.200.3.4")));
        assert!(l.contains(ip("192.168.1.77")));
        assert!(!l.contains(ip("192.168.2.1")));
        assert!(l.contains(ip("fd12::1")));
        assert!(l.contains(ip("::ffff:127.0.0.1")), "mapped IPv4 is IPv4");
        assert_eq!(
            l.to_string(),
            "127.0.0.1, 10.0.0.0/8, 192.168.1.0/24, fd00::/8"
        );
        assert!(IpList::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(IpList::parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_entries() {
        assert!(IpNet::parse("10.0.0.0/33").is_err());
        assert!(IpNet::parse("10.0.0.0/255.0.255.0").is_err());
        assert!(IpNet::parse("example.com").is_err());
    }
}
