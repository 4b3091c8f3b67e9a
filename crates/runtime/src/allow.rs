//! Source-IP allow-lists: addresses and CIDR blocks, IPv4 and IPv6. An IPv4
//! address that arrives IPv4-mapped on an IPv6 socket (`::ffff:a.b.c.d`) is
//! matched as IPv4. Used by the callback receiver and the simulators; in
//! settings a list is written as its entries' text (`["10.0.0.0/8"]`), and an
//! entry that is neither an address nor a block is refused at load, naming
//! the key.

use std::fmt;
use std::net::IpAddr;

/// One allowed address or block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR block")]
pub struct BadCidr(pub String);

impl Cidr {
    /// Parses `10.0.0.0/8`, `192.168.1.7`, `2001:db8::/32`, `::1`.
    pub fn parse(text: &str) -> Result<Self, BadCidr> {
        let bad = || BadCidr(text.to_string());
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let network = canonical(network);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// A provider's allow-list; empty allows every source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Cidr>);

impl AllowList {
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, BadCidr> {
        entries
            .iter()
            .map(|e| Cidr::parse(e.as_ref()))
            .collect::<Result<_, _>>()
            .map(AllowList)
    }

    pub fn allows_all(&self) -> bool {
        self.0.is_empty()
    }

    /// An unknown source is allowed only by an empty list.
    pub fn allows(&self, ip: Option<IpAddr>) -> bool {
        if self.0.is_empty() {
            return true;
        }
        ip.is_some_and(|ip| self.0.iter().any(|cidr| cidr.contains(ip)))
    }
}

impl serde::Serialize for AllowList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

impl<'de> serde::Deserialize<'de> for AllowList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(deserializer)?;
        AllowList::parse(&entries).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_blocks_and_single_addresses() {
        let list = AllowList::parse(&["127.0.0.1", "10.0.0.0/8", "192.168.4.0/22"]).unwrap();
        for allowed in [
            "127.0.0.1",
            "10.0.0.0",
            "10.255.255.255",
            "10.1.2.3",
            "192.168.4.1",
            "192.168.7.254",
        ] {
            assert!(list.allows(Some(ip(allowed))), "{allowed}");
        }
        for refused in [
            "127.0.0.2",
            "11.0.0.1",
            "9.255.255.255",
            "192.168.8.1",
            "192.168.3.255",
            "::1",
        ] {
            assert!(!list.allows(Some(ip(refused))), "{refused}");
        }
        assert!(
            !list.allows(None),
            "an unknown source is refused by a non-empty list"
        );
    }

    #[test]
    fn ipv6_blocks_and_mapped_ipv4() {
        let list = AllowList::parse(&["2001:db8::/32", "::1", "203.0.113.0/24"]).unwrap();
        assert!(list.allows(Some(ip("2001:db8:ffff::1"))));
        assert!(!list.allows(Some(ip("2001:db9::1"))));
        assert!(list.allows(Some(ip("::1"))));
        assert!(
            list.allows(Some(ip("::ffff:203.0.113.9"))),
            "IPv4-mapped matches the IPv4 block"
        );
        assert!(!list.allows(Some(ip("::ffff:198.51.100.1"))));
    }

    /// In settings a list is its entries' text; a bad entry is refused at
    /// load, named.
    #[test]
    fn a_list_reads_and_writes_as_text() {
        let list: AllowList = serde_json::from_str(r#"["10.0.0.0/8", "::1"]"#).unwrap();
        assert!(list.allows(Some(ip("10.1.2.3"))) && !list.allows(Some(ip("11.0.0.1"))));
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            r#"["10.0.0.0/8","::1/128"]"#
        );
        let error = serde_json::from_str::<AllowList>(r#"["10.0.0.0/8", "10.0.0.0/33"]"#)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"10.0.0.0/33\" is not an IP address or CIDR block"),
            "{error}"
        );
    }

    #[test]
    fn edge_prefixes() {
        let everything = AllowList::parse(&["0.0.0.0/0"]).unwrap();
        assert!(everything.allows(Some(ip("8.8.8.8"))));
        assert!(
            !everything.allows(Some(ip("2001:db8::1"))),
            "an IPv4 block never matches IPv6"
        );
        let all_v6 = AllowList::parse(&["::/0"]).unwrap();
        assert!(all_v6.allows(Some(ip("2001:db8::1"))));
        let host = Cidr::parse("10.0.0.5/32").unwrap();
        assert!(host.contains(ip("10.0.0.5")) && !host.contains(ip("10.0.0.4")));
        let odd = Cidr::parse("10.0.0.77/25").unwrap();
        assert!(
            odd.contains(ip("10.0.0.1")) && !odd.contains(ip("10.0.0.128")),
            "host bits are ignored"
        );
    }

    #[test]
    fn empty_list_allows_everyone() {
        let list = AllowList::parse::<&str>(&[]).unwrap();
        assert!(list.allows_all());
        assert!(list.allows(None));
        assert!(list.allows(Some(ip("1.2.3.4"))));
    }

    #[test]
    fn malformed_entries_are_errors() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "host.example",
            "10.0.0.0/8/8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
    }
}
