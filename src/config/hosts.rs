//! Host lists as IPGrant and IPDeny write them: addresses and ranges (see [`super::ipnet`]) and names
//! (`host.example.com`, `*.example.com`) that match the client's forward-confirmed reverse DNS name.

use std::fmt;
use std::net::IpAddr;

use super::ipnet::{IpList, IpNet};

/// A list of addresses, ranges and names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostList {
    nets: IpList,
    names: Vec<String>,
}

impl HostList {
    /// Parses `10.0.0.0/8, host.example.com, *.example.org`; an empty string is an empty list.
    pub fn parse(s: &str) -> Result<HostList, String> {
        let mut nets = Vec::new();
        let mut names = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match IpNet::parse(part) {
                Ok(n) => nets.push(n.to_string()),
                Err(ip_err) => {
                    let lower = part.trim_end_matches('.').to_ascii_lowercase();
                    let bare = lower.strip_prefix("*.").unwrap_or(&lower);
                    let looks_numeric = bare
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'/' || b == b':');
                    if looks_numeric || !crate::smtp::address::is_valid_domain(bare.as_bytes()) {
                        return Err(format!("{ip_err}, nor a host name or *.domain"));
                    }
                    names.push(lower);
                }
            }
        }
        Ok(HostList {
            nets: IpList::parse(&nets.join(","))?,
            names,
        })
    }

    /// Whether the list has name entries (then the client's name must be looked up).
    pub fn has_names(&self) -> bool {
        !self.names.is_empty()
    }

    /// Whether `ip` (or its confirmed `name`) is in the list.
    pub fn contains(&self, ip: IpAddr, name: Option<&str>) -> bool {
        if self.nets.contains(ip) {
            return true;
        }
        let Some(name) = name.map(str::to_ascii_lowercase) else {
            return false;
        };
        self.names
            .iter()
            .any(|entry| match entry.strip_prefix("*.") {
                Some(base) => {
                    name.len() > base.len() + 1
                        && name.ends_with(base)
                        && name.as_bytes()[name.len() - base.len() - 1] == b'.'
                }
                None => *entry == name,
            })
    }
}

impl fmt::Display for HostList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        let nets = self.nets.to_string();
        if !nets.is_empty() {
            parts.push(nets);
        }
        parts.extend(self.names.iter().cloned());
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_entries() {
        let l = HostList::parse("10.0.0.0/8, scanner.corp.test, *.branch.test").unwrap();
        assert!(l.has_names());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(l.contains("10.1.2.3".parse().unwrap(), None));
        assert!(l.contains(ip, Some("Scanner.Corp.Test")));
        assert!(l.contains(ip, Some("pc1.branch.test")));
        assert!(
            !l.contains(ip, Some("branch.test")),
            "*.x is the subdomains only"
        );
        assert!(!l.contains(ip, Some("evilbranch.test")));
        assert!(!l.contains(ip, None));
        assert_eq!(
            l.to_string(),
            "10.0.0.0/8, scanner.corp.test, *.branch.test"
        );
        assert!(HostList::parse("10.0.0.0/33").is_err());
        assert!(HostList::parse("not a host").is_err());
        assert!(HostList::parse("").unwrap().to_string().is_empty());
    }
}
