//! IIS's IPSECLIST value (RelayIpList, IPSecurity), as MetaBase.xml writes it: the binary blob in hex,
//! two digits a byte. Decoded here without I/O; the layout (iiscnfg.h's "MD_IP_SEC binary format")
//! and a real worked example are in shared/reference/iis-metabase.md §2–3:
//!
//! ```text
//! header (24 bytes): four self-references (DWORD offset | 0x80000000) to the deny-address,
//!   grant-address, deny-name and grant-name lists; dwFlags; cRefSize
//! address list: cEntries, cAddresses, then cEntries × 20-byte entries
//!   (iFamily = 2, cAddresses = 1 mask + N addresses, cFullBytes, LastByte, iFirstAddress → mask, addr…)
//! name list: cEntries, cNames, then entries (cComponents, cNames, iName[cNames] → NUL-terminated names)
//! ```
//!
//! Every DWORD is little-endian; masks and addresses are in network order. IIS grants by default when
//! the grant lists have no entry at all: its own "only the list below" with an empty list is a grant
//! entry that holds only a mask (the 80-byte template the MMC and public scripts start from).

use std::fmt;
use std::net::Ipv4Addr;

/// `iFamily` of an IPv4 entry (AF_INET), the only family IIS writes.
const AF_INET: u32 = 2;
/// The bit that marks a DWORD as a self-reference (an offset from the blob's start).
const SELF_REF: u32 = 0x8000_0000;
/// Size of the fixed header.
const HEADER: usize = 24;
/// Size of one address entry.
const ADDR_ENTRY: usize = 20;

/// One address entry: `addr` with `mask` (IIS's "group of computers"; a single computer has
/// 255.255.255.255).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrMask {
    /// The address as IIS stored it.
    pub addr: Ipv4Addr,
    /// The subnet mask.
    pub mask: Ipv4Addr,
}

impl AddrMask {
    /// The prefix length, when the mask is contiguous (IIS's UI writes only such masks).
    pub fn prefix(&self) -> Option<u8> {
        let m = u32::from(self.mask);
        (m.leading_ones() + m.trailing_zeros() == 32).then(|| m.leading_ones() as u8)
    }

    /// Whether `ip` lies in the group, as IIS compares: both under the mask.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.mask);
        u32::from(ip) & m == u32::from(self.addr) & m
    }
}

impl fmt::Display for AddrMask {
    /// `10.0.0.0/8` (the network under the mask), or `addr/mask` for a mask that is not contiguous.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let net = Ipv4Addr::from(u32::from(self.addr) & u32::from(self.mask));
        match self.prefix() {
            Some(32) => write!(f, "{net}"),
            Some(p) => write!(f, "{net}/{p}"),
            None => write!(f, "{}/{}", self.addr, self.mask),
        }
    }
}

/// A decoded IPSECLIST.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSecList {
    /// IIS's GrantByDefault: "all except the list below" (the grant lists have no entry).
    pub grant_by_default: bool,
    /// The deny-address list (used by IIS only when granting by default).
    pub deny_addrs: Vec<AddrMask>,
    /// The grant-address list (used by IIS only when not granting by default).
    pub grant_addrs: Vec<AddrMask>,
    /// The deny-name list (DNS names; IIS matches the name and its subdomains).
    pub deny_names: Vec<String>,
    /// The grant-name list.
    pub grant_names: Vec<String>,
}

impl IpSecList {
    /// The entries IIS applies: the deny lists when granting by default, else the grant lists.
    pub fn listed(&self) -> (&[AddrMask], &[String]) {
        if self.grant_by_default {
            (&self.deny_addrs, &self.deny_names)
        } else {
            (&self.grant_addrs, &self.grant_names)
        }
    }

    /// The entries IIS ignores: grant entries when granting by default, deny entries otherwise.
    pub fn ignored(&self) -> (&[AddrMask], &[String]) {
        if self.grant_by_default {
            (&self.grant_addrs, &self.grant_names)
        } else {
            (&self.deny_addrs, &self.deny_names)
        }
    }

    /// IIS's decision for a client at `ip` whose confirmed DNS name is `name`.
    pub fn permits(&self, ip: Ipv4Addr, name: Option<&str>) -> bool {
        let (addrs, names) = self.listed();
        let listed = addrs.iter().any(|a| a.contains(ip))
            || name.is_some_and(|n| names.iter().any(|e| name_matches(e, n)));
        listed != self.grant_by_default
    }
}

/// IIS's name rule: an entry matches the name itself and every name below it, label by label.
pub fn name_matches(entry: &str, name: &str) -> bool {
    let (e, n) = (entry.to_ascii_lowercase(), name.to_ascii_lowercase());
    let n = n.trim_end_matches('.');
    n == e || n.ends_with(&format!(".{e}"))
}

/// Why a blob is not an IPSECLIST; offsets are bytes from the blob's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpsecError {
    /// An odd number of hex digits.
    OddLength(usize),
    /// A character that is not a hex digit, at this position of the text.
    NotHex(usize, char),
    /// Shorter than the 24-byte header.
    TooShort(usize),
    /// A field that must be a self-reference inside the blob is not.
    BadReference {
        /// The field.
        field: &'static str,
        /// Where it is.
        at: usize,
        /// Its value.
        value: u32,
    },
    /// A list or entry runs past the end.
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        at: usize,
        /// Bytes it needs.
        need: usize,
        /// Bytes the blob has.
        len: usize,
    },
    /// An address entry of a family other than IPv4.
    Family {
        /// The entry.
        at: usize,
        /// Its iFamily.
        family: u32,
    },
    /// An address entry without even its mask.
    NoMask(usize),
    /// A mask that disagrees with the entry's cFullBytes and LastByte.
    MaskMismatch {
        /// The entry.
        at: usize,
        /// The mask stored.
        mask: Ipv4Addr,
        /// cFullBytes.
        full: u32,
        /// LastByte.
        last: u32,
    },
    /// A list header's total disagrees with its entries.
    CountMismatch {
        /// The list.
        what: &'static str,
        /// Where its header is.
        at: usize,
        /// The header's total.
        header: u32,
        /// The entries' sum.
        found: u64,
    },
    /// A name that is not NUL-terminated ASCII, or whose label count disagrees with its entry.
    BadName {
        /// Where the name starts.
        at: usize,
        /// What is wrong.
        what: String,
    },
}

impl fmt::Display for IpsecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpsecError::OddLength(n) => write!(f, "{n} hex digits: two digits a byte expected"),
            IpsecError::NotHex(i, c) => write!(f, "`{c}` at digit {i} is not a hex digit"),
            IpsecError::TooShort(n) => {
                write!(
                    f,
                    "{n} bytes: shorter than the {HEADER}-byte IPSECLIST header"
                )
            }
            IpsecError::BadReference { field, at, value } => write!(
                f,
                "byte {at:#x}: {field} = {value:#010x} is not a reference inside the blob"
            ),
            IpsecError::Truncated {
                what,
                at,
                need,
                len,
            } => write!(
                f,
                "byte {at:#x}: the {what} needs {need} bytes, the blob ends at {len:#x}"
            ),
            IpsecError::Family { at, family } => write!(
                f,
                "byte {at:#x}: address family {family} (only 2, IPv4, is an IIS address entry)"
            ),
            IpsecError::NoMask(at) => write!(f, "byte {at:#x}: an address entry without a mask"),
            IpsecError::MaskMismatch {
                at,
                mask,
                full,
                last,
            } => write!(
                f,
                "byte {at:#x}: mask {mask} disagrees with cFullBytes = {full}, LastByte = {last}"
            ),
            IpsecError::CountMismatch {
                what,
                at,
                header,
                found,
            } => write!(
                f,
                "byte {at:#x}: the {what} header counts {header}, its entries hold {found}"
            ),
            IpsecError::BadName { at, what } => write!(f, "byte {at:#x}: {what}"),
        }
    }
}

impl std::error::Error for IpsecError {}

/// The bytes of a hex string (either case; blanks between digits are skipped).
pub fn from_hex(text: &str) -> Result<Vec<u8>, IpsecError> {
    let mut digits = Vec::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        if c.is_ascii_whitespace() {
            continue;
        }
        let d = c.to_digit(16).ok_or(IpsecError::NotHex(i, c))?;
        digits.push(d as u8);
    }
    if !digits.len().is_multiple_of(2) {
        return Err(IpsecError::OddLength(digits.len()));
    }
    Ok(digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect())
}

/// Decodes a MetaBase.xml IPSECLIST value (hex text).
pub fn parse_hex(text: &str) -> Result<IpSecList, IpsecError> {
    decode(&from_hex(text)?)
}

/// Decodes the blob.
pub fn decode(b: &[u8]) -> Result<IpSecList, IpsecError> {
    if b.len() < HEADER {
        return Err(IpsecError::TooShort(b.len()));
    }
    let deny_addr = reference(b, 0, "iDenyAddr")?;
    let grant_addr = reference(b, 4, "iGrantAddr")?;
    let deny_name = reference(b, 8, "iDenyName")?;
    let grant_name = reference(b, 12, "iGrantName")?;
    // dwFlags (+16) and cRefSize (+20) are not needed to read the lists.
    // Only the grant lists' entry counts matter: they decide GrantByDefault.
    let (_, deny_addrs) = addresses(b, deny_addr, "deny-address list")?;
    let (grant_addr_entries, grant_addrs) = addresses(b, grant_addr, "grant-address list")?;
    let (_, deny_names) = names(b, deny_name, "deny-name list")?;
    let (grant_name_entries, grant_names) = names(b, grant_name, "grant-name list")?;
    Ok(IpSecList {
        grant_by_default: grant_addr_entries == 0 && grant_name_entries == 0,
        deny_addrs,
        grant_addrs,
        deny_names,
        grant_names,
    })
}

/// The little-endian DWORD at `at`.
fn dword(b: &[u8], at: usize, what: &'static str) -> Result<u32, IpsecError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(IpsecError::Truncated {
            what,
            at,
            need: 4,
            len: b.len(),
        })
}

/// The offset a self-reference at `at` points to (inside the blob).
fn reference(b: &[u8], at: usize, field: &'static str) -> Result<usize, IpsecError> {
    let value = dword(b, at, field)?;
    let off = (value & !SELF_REF) as usize;
    if value & SELF_REF == 0 || off >= b.len() {
        return Err(IpsecError::BadReference { field, at, value });
    }
    Ok(off)
}

/// Checks that `need` bytes from `at` lie inside the blob.
fn fits(b: &[u8], at: usize, need: usize, what: &'static str) -> Result<(), IpsecError> {
    match at.checked_add(need) {
        Some(end) if end <= b.len() => Ok(()),
        _ => Err(IpsecError::Truncated {
            what,
            at,
            need,
            len: b.len(),
        }),
    }
}

/// An address list at `at`: its entry count and its addresses with their masks.
fn addresses(b: &[u8], at: usize, what: &'static str) -> Result<(u32, Vec<AddrMask>), IpsecError> {
    fits(b, at, 8, what)?;
    let entries = dword(b, at, what)?;
    let total = dword(b, at + 4, what)?;
    // Bounded by the blob before anything is allocated or looped over.
    fits(b, at + 8, entries as usize * ADDR_ENTRY, what)?;
    let mut out = Vec::new();
    for i in 0..entries as usize {
        let e = at + 8 + i * ADDR_ENTRY;
        let family = dword(b, e, "address entry")?;
        if family != AF_INET {
            return Err(IpsecError::Family { at: e, family });
        }
        let slots = dword(b, e + 4, "address entry")? as usize;
        let full = dword(b, e + 8, "address entry")?;
        let last = dword(b, e + 12, "address entry")?;
        let first = reference(b, e + 16, "iFirstAddress")?;
        if slots == 0 {
            return Err(IpsecError::NoMask(e));
        }
        fits(b, first, slots * 4, "address array")?;
        let ip = |k: usize| {
            let s = first + k * 4;
            Ipv4Addr::new(b[s], b[s + 1], b[s + 2], b[s + 3])
        };
        let mask = ip(0);
        if full > 4 || last > 0xff || (full == 4 && last != 0) || expected_mask(full, last) != mask
        {
            return Err(IpsecError::MaskMismatch {
                at: e,
                mask,
                full,
                last,
            });
        }
        out.extend((1..slots).map(|k| AddrMask { addr: ip(k), mask }));
    }
    if u64::from(total) != out.len() as u64 {
        return Err(IpsecError::CountMismatch {
            what,
            at,
            header: total,
            found: out.len() as u64,
        });
    }
    Ok((entries, out))
}

/// The mask that `full` 0xFF bytes followed by `last` describe.
fn expected_mask(full: u32, last: u32) -> Ipv4Addr {
    let mut m = [0u8; 4];
    for (i, byte) in m.iter_mut().enumerate() {
        let i = i as u32;
        if i < full {
            *byte = 0xff;
        } else if i == full {
            *byte = last as u8;
        }
    }
    Ipv4Addr::from(m)
}

/// A name list at `at`: its entry count and its names.
fn names(b: &[u8], at: usize, what: &'static str) -> Result<(u32, Vec<String>), IpsecError> {
    fits(b, at, 8, what)?;
    let entries = dword(b, at, what)?;
    let total = dword(b, at + 4, what)?;
    // Every entry takes at least 8 bytes: a count larger than the blob allows is malformed.
    fits(b, at + 8, entries as usize * 8, what)?;
    let mut out = Vec::new();
    let mut e = at + 8;
    for _ in 0..entries {
        let components = dword(b, e, "name entry")?;
        let count = dword(b, e + 4, "name entry")? as usize;
        fits(b, e + 8, count * 4, "name entry")?;
        for k in 0..count {
            let start = reference(b, e + 8 + k * 4, "iName")?;
            let name = c_string(b, start)?;
            let labels = name.split('.').count();
            if labels as u64 != u64::from(components) {
                return Err(IpsecError::BadName {
                    at: start,
                    what: format!(
                        "`{name}` has {labels} labels, its entry says {components} (cComponents)"
                    ),
                });
            }
            out.push(name);
        }
        e += 8 + count * 4;
    }
    if u64::from(total) != out.len() as u64 {
        return Err(IpsecError::CountMismatch {
            what,
            at,
            header: total,
            found: out.len() as u64,
        });
    }
    Ok((entries, out))
}

/// The NUL-terminated printable ASCII name at `at`.
fn c_string(b: &[u8], at: usize) -> Result<String, IpsecError> {
    let rest = &b[at..];
    let end = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or(IpsecError::BadName {
            at,
            what: "a name without its terminating NUL".into(),
        })?;
    let bytes = &rest[..end];
    if bytes.is_empty() || !bytes.iter().all(|c| c.is_ascii_graphic()) {
        return Err(IpsecError::BadName {
            at,
            what: "a name that is empty or not printable ASCII".into(),
        });
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// Encodes a list the way IIS lays it out: header, the four list headers with their entries, then
/// the address arrays and names. Addresses sharing a mask share an entry, names sharing a label
/// count share one; "only the list below" with nothing listed keeps IIS's mask-only grant entry.
/// The inverse of [`decode`], for tests and tools that write metabase values.
pub fn encode(list: &IpSecList) -> Vec<u8> {
    fn group_addrs(v: &[AddrMask]) -> Vec<(Ipv4Addr, Vec<Ipv4Addr>)> {
        let mut g: Vec<(Ipv4Addr, Vec<Ipv4Addr>)> = Vec::new();
        for a in v {
            match g.iter_mut().find(|(m, _)| *m == a.mask) {
                Some((_, addrs)) => addrs.push(a.addr),
                None => g.push((a.mask, vec![a.addr])),
            }
        }
        g
    }
    fn group_names(v: &[String]) -> Vec<(u32, Vec<&str>)> {
        let mut g: Vec<(u32, Vec<&str>)> = Vec::new();
        for n in v {
            let c = n.split('.').count() as u32;
            match g.iter_mut().find(|(k, _)| *k == c) {
                Some((_, names)) => names.push(n),
                None => g.push((c, vec![n])),
            }
        }
        g
    }
    let deny_a = group_addrs(&list.deny_addrs);
    let mut grant_a = group_addrs(&list.grant_addrs);
    let deny_n = group_names(&list.deny_names);
    let grant_n = group_names(&list.grant_names);
    if !list.grant_by_default && grant_a.is_empty() && grant_n.is_empty() {
        grant_a.push((Ipv4Addr::BROADCAST, Vec::new()));
    }
    let addr_len = |g: &[(Ipv4Addr, Vec<Ipv4Addr>)]| 8 + g.len() * ADDR_ENTRY;
    let name_len =
        |g: &[(u32, Vec<&str>)]| 8 + g.iter().map(|(_, n)| 8 + 4 * n.len()).sum::<usize>();
    let offs = [
        HEADER,
        HEADER + addr_len(&deny_a),
        HEADER + addr_len(&deny_a) + addr_len(&grant_a),
        HEADER + addr_len(&deny_a) + addr_len(&grant_a) + name_len(&deny_n),
    ];
    let data = offs[3] + name_len(&grant_n);
    let mut out = Vec::new();
    let put = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
    for o in offs {
        put(&mut out, o as u32 | SELF_REF);
    }
    put(&mut out, 1);
    put(&mut out, data as u32);
    let mut tail: Vec<u8> = Vec::new();
    for g in [&deny_a, &grant_a] {
        put(&mut out, g.len() as u32);
        put(&mut out, g.iter().map(|(_, a)| a.len() as u32).sum());
        for (mask, addrs) in g.iter() {
            let m = u32::from(*mask);
            let full = m.leading_ones() / 8;
            let last = mask.octets().get(full as usize).copied().unwrap_or(0);
            put(&mut out, AF_INET);
            put(&mut out, addrs.len() as u32 + 1);
            put(&mut out, full);
            put(&mut out, u32::from(last));
            put(&mut out, (data + tail.len()) as u32 | SELF_REF);
            tail.extend_from_slice(&mask.octets());
            for a in addrs {
                tail.extend_from_slice(&a.octets());
            }
        }
    }
    for g in [&deny_n, &grant_n] {
        put(&mut out, g.len() as u32);
        put(&mut out, g.iter().map(|(_, n)| n.len() as u32).sum());
        for (components, names) in g.iter() {
            put(&mut out, *components);
            put(&mut out, names.len() as u32);
            for n in names {
                put(&mut out, (data + tail.len()) as u32 | SELF_REF);
                tail.extend_from_slice(n.as_bytes());
                tail.push(0);
            }
        }
    }
    out.extend_from_slice(&tail);
    out
}

/// The blob as MetaBase.xml writes it: lower-case hex, no separators.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// iis-metabase.md §3: the MMC's "only the list below: 127.0.0.1" (84 bytes).
    const WORKED: &str = "18000080 20000080 3c000080 44000080 01000000 4c000000 00000000 00000000 \
        01000000 01000000 02000000 02000000 04000000 00000000 4c000080 00000000 00000000 \
        00000000 00000000 ffffffff 7f000001";

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn am(a: &str, m: &str) -> AddrMask {
        AddrMask {
            addr: ip(a),
            mask: ip(m),
        }
    }

    #[test]
    fn worked_example_byte_by_byte() {
        // As MetaBase.xml writes it: no blanks.
        let b = from_hex(&WORKED.replace(' ', "")).unwrap();
        assert_eq!(b.len(), 84);
        assert_eq!(
            from_hex(WORKED).unwrap(),
            b,
            "blanks between digits are skipped"
        );
        assert_eq!(dword(&b, 0x00, "x"), Ok(0x8000_0018), "iDenyAddr -> 0x18");
        assert_eq!(reference(&b, 0x04, "x"), Ok(0x20), "iGrantAddr");
        assert_eq!(reference(&b, 0x08, "x"), Ok(0x3c), "iDenyName");
        assert_eq!(reference(&b, 0x0c, "x"), Ok(0x44), "iGrantName");
        assert_eq!(dword(&b, 0x10, "x"), Ok(1), "dwFlags");
        assert_eq!(dword(&b, 0x14, "x"), Ok(0x4c), "cRefSize");
        assert_eq!((dword(&b, 0x18, "x"), dword(&b, 0x1c, "x")), (Ok(0), Ok(0)));
        assert_eq!((dword(&b, 0x20, "x"), dword(&b, 0x24, "x")), (Ok(1), Ok(1)));
        assert_eq!(dword(&b, 0x28, "x"), Ok(AF_INET));
        assert_eq!(dword(&b, 0x2c, "x"), Ok(2), "mask + 1 address");
        assert_eq!((dword(&b, 0x30, "x"), dword(&b, 0x34, "x")), (Ok(4), Ok(0)));
        assert_eq!(reference(&b, 0x38, "x"), Ok(0x4c));
        assert_eq!(&b[0x4c..0x50], &[0xff; 4]);
        assert_eq!(&b[0x50..0x54], &[127, 0, 0, 1]);
        let l = decode(&b).unwrap();
        assert_eq!(
            l,
            IpSecList {
                grant_by_default: false,
                grant_addrs: vec![am("127.0.0.1", "255.255.255.255")],
                ..IpSecList::default()
            }
        );
        assert!(l.permits(ip("127.0.0.1"), None));
        assert!(!l.permits(ip("127.0.0.2"), None));
        assert_eq!(l.grant_addrs[0].to_string(), "127.0.0.1");
        assert_eq!(encode(&l), b, "IIS's own layout comes back byte for byte");
    }

    #[test]
    fn iis_template_is_only_the_list_below_with_nothing_listed() {
        // The 80-byte template scripts start from: a grant entry holding only its mask.
        let t = "18000080 20000080 3c000080 44000080 01000000 4c000000 00000000 00000000 \
            01000000 00000000 02000000 01000000 04000000 00000000 4c000080 00000000 00000000 \
            00000000 00000000 ffffffff";
        let l = parse_hex(t).unwrap();
        assert!(!l.grant_by_default);
        assert!(l.grant_addrs.is_empty() && l.deny_addrs.is_empty());
        assert!(!l.permits(ip("127.0.0.1"), None), "nobody");
        assert_eq!(to_hex(&encode(&l)), t.replace(' ', ""));
        assert_eq!(encode(&l).len(), 80);
    }

    #[test]
    fn grant_and_deny_with_masks_and_names() {
        let deny = IpSecList {
            grant_by_default: true,
            deny_addrs: vec![
                am("192.0.2.7", "255.255.255.255"),
                am("198.51.100.0", "255.255.255.0"),
                am("192.0.2.9", "255.255.255.255"),
                am("10.0.0.0", "255.255.254.0"),
            ],
            deny_names: vec!["spam.example".into(), "bad.host.test".into()],
            ..IpSecList::default()
        };
        let b = encode(&deny);
        let back = decode(&b).unwrap();
        // Entries come back grouped by mask (as IIS groups them), each address with its mask.
        assert_eq!(back.deny_addrs.len(), 4);
        for a in &deny.deny_addrs {
            assert!(back.deny_addrs.contains(a), "{a}");
        }
        assert_eq!(back.deny_names, deny.deny_names);
        assert!(back.grant_by_default);
        assert!(!back.permits(ip("198.51.100.200"), None));
        assert!(!back.permits(ip("10.0.1.5"), None), "/23");
        assert!(back.permits(ip("10.0.2.5"), None));
        assert!(!back.permits(ip("203.0.113.1"), Some("mx.spam.example")));
        assert!(back.permits(ip("203.0.113.1"), Some("notspam.example")));
        assert!(back.permits(ip("203.0.113.1"), None));
        assert_eq!(back.deny_addrs[1].to_string(), "192.0.2.9");
        assert_eq!(am("10.0.0.0", "255.255.254.0").to_string(), "10.0.0.0/23");
        // Two entries by mask: 255.255.255.255 (two addresses), /24, /23.
        assert_eq!(dword(&b, 0x18, "x"), Ok(3));
        assert_eq!(dword(&b, 0x1c, "x"), Ok(4));

        let grant = IpSecList {
            grant_by_default: false,
            grant_addrs: vec![
                am("10.1.0.0", "255.255.0.0"),
                am("127.0.0.1", "255.255.255.255"),
            ],
            grant_names: vec!["relay.corp.test".into()],
            ..IpSecList::default()
        };
        let back = decode(&encode(&grant)).unwrap();
        assert_eq!(back, grant);
        assert!(back.permits(ip("10.1.200.3"), None));
        assert!(!back.permits(ip("10.2.0.1"), None));
        assert!(back.permits(ip("192.0.2.1"), Some("Relay.Corp.Test")));
        assert!(back.permits(ip("192.0.2.1"), Some("a.relay.corp.test.")));
    }

    #[test]
    fn non_contiguous_mask_is_kept_as_iis_wrote_it() {
        let a = am("10.0.0.1", "255.0.255.0");
        assert_eq!(a.prefix(), None);
        assert_eq!(a.to_string(), "10.0.0.1/255.0.255.0");
        assert!(a.contains(ip("10.9.0.7")));
    }

    #[test]
    fn malformed_blobs() {
        let good = from_hex(WORKED).unwrap();
        assert_eq!(from_hex("abc"), Err(IpsecError::OddLength(3)));
        assert_eq!(from_hex("zz"), Err(IpsecError::NotHex(0, 'z')));
        assert_eq!(decode(&good[..20]), Err(IpsecError::TooShort(20)));
        // A reference without its high bit.
        let mut b = good.clone();
        b[3] = 0;
        assert!(matches!(
            decode(&b),
            Err(IpsecError::BadReference {
                field: "iDenyAddr",
                at: 0,
                ..
            })
        ));
        // A reference past the end.
        let mut b = good.clone();
        b[4] = 0xf0;
        assert!(matches!(decode(&b), Err(IpsecError::BadReference { .. })));
        // The address array cut off.
        assert!(matches!(
            decode(&good[..0x52]),
            Err(IpsecError::Truncated { .. })
        ));
        // An entry count the blob cannot hold.
        let mut b = good.clone();
        b[0x20] = 0xff;
        b[0x23] = 0x7f;
        assert!(matches!(decode(&b), Err(IpsecError::Truncated { .. })));
        // IPv6 family.
        let mut b = good.clone();
        b[0x28] = 23;
        assert_eq!(
            decode(&b),
            Err(IpsecError::Family {
                at: 0x28,
                family: 23
            })
        );
        // cFullBytes says /24, the mask says /32.
        let mut b = good.clone();
        b[0x30] = 3;
        assert!(matches!(decode(&b), Err(IpsecError::MaskMismatch { .. })));
        // The header counts two addresses, the entry holds one.
        let mut b = good.clone();
        b[0x24] = 2;
        assert!(matches!(decode(&b), Err(IpsecError::CountMismatch { .. })));
        // An entry without its mask.
        let mut b = good.clone();
        b[0x2c] = 0;
        assert_eq!(decode(&b), Err(IpsecError::NoMask(0x28)));
        // A name without its NUL, and one whose label count is wrong.
        let names = IpSecList {
            grant_by_default: true,
            deny_names: vec!["a.example".into()],
            ..IpSecList::default()
        };
        let b = encode(&names);
        assert!(matches!(
            decode(&b[..b.len() - 1]),
            Err(IpsecError::BadName { .. })
        ));
        let mut b2 = b.clone();
        let entry = reference(&b2, 8, "x").unwrap() + 8;
        b2[entry] = 3;
        let e = decode(&b2).unwrap_err();
        assert!(e.to_string().contains("`a.example` has 2 labels"), "{e}");
        assert!(
            IpsecError::MaskMismatch {
                at: 0x28,
                mask: ip("255.255.255.255"),
                full: 3,
                last: 0
            }
            .to_string()
            .starts_with("byte 0x28: mask 255.255.255.255 disagrees")
        );
    }
}
