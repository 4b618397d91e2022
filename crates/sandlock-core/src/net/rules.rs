//! TCP destinations by host: a name, an IP address, a CIDR block or any host, and ports.
//!
//! `net_allow` and `net_deny` entries are written `HOST[:PORT]`:
//! - HOST is a host name (`api.example.com`), an IPv4 or IPv6 address (`10.1.2.3`, `[::1]`, or
//!   `::1` when no port follows), a CIDR block (`10.0.0.0/8`, `[fd00::/8]`), or `*` / nothing for
//!   any host;
//! - PORT is a port, a range `LOW-HIGH`, or `*`; without it, every port.
//!
//! So `:443` is port 443 on any host (the form sandlock always took), `api.example.com:443` that
//! port of that name's addresses, `169.254.169.254` every port of one address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::PolicyError;
use crate::policy::PortRange;

/// Which hosts a rule names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Any address.
    Any,
    /// One address.
    Addr(IpAddr),
    /// A CIDR block: the network address (host bits cleared) and the prefix length.
    Net(IpAddr, u8),
    /// The addresses a host name resolves to (lowercase, no trailing dot).
    Name(String),
}

/// One `net_allow` or `net_deny` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRule {
    /// Which hosts.
    pub host: HostPattern,
    /// Which ports.
    pub ports: PortRange,
}

impl fmt::Display for NetRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Any => {}
            HostPattern::Addr(IpAddr::V6(a)) => write!(f, "[{a}]")?,
            HostPattern::Addr(a) => write!(f, "{a}")?,
            HostPattern::Net(IpAddr::V6(a), p) => write!(f, "[{a}/{p}]")?,
            HostPattern::Net(a, p) => write!(f, "{a}/{p}")?,
            HostPattern::Name(n) => write!(f, "{n}")?,
        }
        if self.ports == ALL_PORTS {
            Ok(())
        } else {
            write!(f, ":{}", self.ports)
        }
    }
}

/// Every port a connection can go to.
const ALL_PORTS: PortRange = PortRange {
    low: 1,
    high: 65535,
};

/// The address with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) turned into IPv4, so that one
/// rule holds whichever form a program connects with.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl HostPattern {
    /// Whether `ip` (canonical) is one of these hosts; `resolves_to(name, ip)` says whether a name
    /// currently has that address.
    pub(crate) fn matches(&self, ip: IpAddr, resolves_to: &dyn Fn(&str, IpAddr) -> bool) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Addr(a) => *a == ip,
            HostPattern::Net(net, prefix) => in_net(ip, *net, *prefix),
            HostPattern::Name(n) => resolves_to(n, ip),
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => u32::from(a) & mask32(prefix) == u32::from(n),
        (IpAddr::V6(a), IpAddr::V6(n)) => u128::from(a) & mask128(prefix) == u128::from(n),
        _ => false,
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

impl NetRule {
    /// Whether this rule covers a connection to `ip` (canonical) on `port`.
    pub(crate) fn matches(
        &self,
        ip: IpAddr,
        port: u16,
        resolves_to: &dyn Fn(&str, IpAddr) -> bool,
    ) -> bool {
        (self.ports.low..=self.ports.high).contains(&port) && self.host.matches(ip, resolves_to)
    }
}

fn parse_ports(s: &str) -> Result<PortRange, String> {
    let s = s.trim();
    if s.is_empty() || s == "*" {
        return Ok(ALL_PORTS);
    }
    let PortRange { low, high } = crate::policy::parse_span(s)?;
    if low == 0 {
        return Err("port 0 cannot be connected to".into());
    }
    Ok(PortRange { low, high })
}

fn parse_host(h: &str) -> Result<HostPattern, String> {
    let h = h.trim();
    if h.is_empty() || h == "*" {
        return Ok(HostPattern::Any);
    }
    if let Some((addr, prefix)) = h.split_once('/') {
        let parsed: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} in a CIDR block is not an IP address"))?;
        let max = if parsed.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{prefix:?} is not a prefix length (0-{max})"))?;
        // An IPv4-mapped block (::ffff:10.0.0.0/104) is the IPv4 block it maps.
        let (addr, prefix) = match parsed {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (parsed, prefix),
            },
            a => (a, prefix),
        };
        let net = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(prefix))),
        };
        return Ok(HostPattern::Net(net, prefix));
    }
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Ok(HostPattern::Addr(canonical(ip)));
    }
    parse_name(h, "a host name, an IP address, a CIDR block or *").map(HostPattern::Name)
}

/// A host name as rules hold it (lowercase, no trailing dot), or why `h` is not one (`expected`
/// says what the field takes).
pub(crate) fn parse_name(h: &str, expected: &str) -> Result<String, String> {
    let name = h.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("{h:?} is not {expected}"));
    }
    if name
        .split('.')
        .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("{h:?} is not a valid IPv4 address"));
    }
    Ok(name)
}

/// Parses a `net_allow` or `net_deny` entry (see the module documentation).
pub fn parse_net_rule(field: &str, s: &str) -> Result<NetRule, PolicyError> {
    let err = |reason: String| PolicyError::new(field, s, reason);
    let t = s.trim();
    if t.is_empty() {
        return Err(err(
            "empty: write HOST[:PORT], e.g. api.example.com:443 or :443".into(),
        ));
    }
    let (host, ports) = if let Some(rest) = t.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| err("a '[' without its ']'".into()))?;
        match after {
            "" => (inside, ""),
            a => match a.strip_prefix(':') {
                Some(p) => (inside, p),
                None => return Err(err(format!("{a:?} after ']' is not :PORT"))),
            },
        }
    } else if t.matches(':').count() > 1 {
        // A bare IPv6 address or block, which cannot carry a port without brackets.
        (t, "")
    } else {
        match t.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (t, ""),
        }
    };
    Ok(NetRule {
        host: parse_host(host).map_err(&err)?,
        ports: parse_ports(ports).map_err(&err)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> NetRule {
        parse_net_rule("net_allow[0]", s).unwrap()
    }

    fn none(_: &str, _: IpAddr) -> bool {
        false
    }

    #[test]
    fn every_form_parses() {
        assert_eq!(rule(":443").host, HostPattern::Any);
        assert_eq!(
            rule(":443").ports,
            PortRange {
                low: 443,
                high: 443
            }
        );
        assert_eq!(
            rule("*:8000-8010").ports,
            PortRange {
                low: 8000,
                high: 8010
            }
        );
        assert_eq!(rule("*").ports, ALL_PORTS);
        assert_eq!(
            rule("API.Example.com.:443").host,
            HostPattern::Name("api.example.com".into())
        );
        assert_eq!(
            rule("10.1.2.3").host,
            HostPattern::Addr("10.1.2.3".parse().unwrap())
        );
        assert_eq!(rule("10.1.2.3:22").ports, PortRange { low: 22, high: 22 });
        assert_eq!(rule("::1").host, HostPattern::Addr("::1".parse().unwrap()));
        assert_eq!(rule("[::1]:80").ports, PortRange { low: 80, high: 80 });
        assert_eq!(
            rule("10.9.8.7/8").host,
            HostPattern::Net("10.0.0.0".parse().unwrap(), 8)
        );
        assert_eq!(
            rule("[fd00::1/8]:*").host,
            HostPattern::Net("fd00::".parse().unwrap(), 8)
        );
        assert_eq!(
            rule("[::ffff:10.0.0.1]").host,
            HostPattern::Addr("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            rule("api.example.com:443").to_string(),
            "api.example.com:443"
        );
        assert_eq!(rule("[::1]").to_string(), "[::1]");
    }

    #[test]
    fn bad_entries_name_what_is_wrong() {
        for (bad, says) in [
            ("", "empty"),
            ("exa mple.com", "not a host name"),
            ("10.0.0.0/33", "prefix length"),
            ("host:0", "port 0"),
            ("host:80-70", "backwards"),
            ("host:http", "not a port number"),
            ("[::1", "without its ']'"),
            ("300.1.1.1", "not a valid IPv4"),
            ("-bad-.com", "not a host name"),
        ] {
            let e = parse_net_rule("net_allow[3]", bad).unwrap_err();
            assert_eq!(e.field, "net_allow[3]");
            assert!(e.reason.contains(says), "{bad:?}: {}", e.reason);
        }
    }

    #[test]
    fn matching_covers_addresses_blocks_names_and_mapped_forms() {
        let ip = |s: &str| canonical(s.parse::<IpAddr>().unwrap());
        assert!(rule("10.0.0.0/8:443").matches(ip("10.200.1.1"), 443, &none));
        assert!(!rule("10.0.0.0/8:443").matches(ip("11.0.0.1"), 443, &none));
        assert!(!rule("10.0.0.0/8:443").matches(ip("10.0.0.1"), 80, &none));
        assert!(rule("10.0.0.0/8").matches(ip("::ffff:10.1.1.1"), 80, &none));
        assert!(rule("169.254.169.254").matches(ip("169.254.169.254"), 80, &none));
        assert!(rule("[fd00::/8]").matches(ip("fd12::5"), 1, &none));
        assert!(!rule("[fd00::/8]").matches(ip("fe80::5"), 1, &none));
        let resolved = |n: &str, a: IpAddr| -> bool {
            n == "allowed.test"
                && ["127.0.0.2", "::ffff:127.0.0.9"]
                    .iter()
                    .any(|s| canonical(s.parse().unwrap()) == a)
        };
        assert!(rule("allowed.test:80").matches(ip("127.0.0.2"), 80, &resolved));
        assert!(rule("allowed.test:80").matches(ip("127.0.0.9"), 80, &resolved));
        assert!(!rule("allowed.test:80").matches(ip("127.0.0.3"), 80, &resolved));
        assert!(!rule("other.test").matches(ip("127.0.0.2"), 80, &resolved));
        assert!(rule(":80").matches(ip("8.8.8.8"), 80, &none));
    }
}
