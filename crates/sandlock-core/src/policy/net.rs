//! Network rules: which TCP ports the sandbox may connect to or bind.
//!
//! Landlock (ABI 4) filters TCP `connect` and `bind` by port only, so that is what these rules say.
//! Host, IP and CIDR rules need a different mechanism; until sandlock has one, such rules are rejected
//! with an error rather than silently widened to "any host".

use std::fmt;

use crate::error::PolicyError;

/// An inclusive range of TCP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    /// First port of the range.
    pub low: u16,
    /// Last port of the range (equal to `low` for a single port).
    pub high: u16,
}

impl PortRange {
    /// The ports of the range.
    pub fn ports(self) -> impl Iterator<Item = u16> {
        self.low..=self.high
    }

    /// Number of ports in the range (at least one).
    pub fn count(self) -> usize {
        usize::from(self.high - self.low) + 1
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

/// Most ports a single rule may name. Each port is one Landlock rule; a larger range is almost
/// certainly a mistake, and "any port" is better said by not handling TCP at all.
const MAX_RANGE: usize = 4096;

fn parse_range(s: &str) -> Result<PortRange, String> {
    let port = |p: &str| -> Result<u16, String> {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("{p:?} is not a port number (0-65535)"))
    };
    let (low, high) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(s)?;
            (p, p)
        }
    };
    if low > high {
        return Err(format!("range {low}-{high} is backwards"));
    }
    let r = PortRange { low, high };
    if r.count() > MAX_RANGE {
        return Err(format!(
            "range covers {} ports; at most {MAX_RANGE} per rule",
            r.count()
        ));
    }
    Ok(r)
}

/// Parses a `net_allow` entry: `:PORT` or `:LOW-HIGH` (TCP connect to any address on those ports).
pub(crate) fn parse_connect_rule(field: &str, s: &str) -> Result<PortRange, PolicyError> {
    let err = |reason: String| PolicyError::new(field, s, reason);
    let t = s.trim();
    match t.rsplit_once(':') {
        Some(("", ports)) | Some(("*", ports)) => {
            let r = parse_range(ports).map_err(err)?;
            if r.low == 0 {
                return Err(err("port 0 cannot be connected to".into()));
            }
            Ok(r)
        }
        Some((host, _)) => Err(err(format!(
            "host rules ({host:?}) are not supported yet: Landlock filters by port only. \
             Use \":PORT\" to allow that port on any host"
        ))),
        None if t.contains('/') || t.contains('.') => Err(err(
            "IP and CIDR rules are not supported yet; use \":PORT\" to allow a port on any host"
                .into(),
        )),
        None => Err(err(format!(
            "write \":{t}\" for TCP port {t} on any host (the colon says 'any host')"
        ))),
    }
}

/// Parses a `net_allow_bind` entry: `PORT`, `LOW-HIGH` or `:PORT`.
pub(crate) fn parse_bind_rule(field: &str, s: &str) -> Result<PortRange, PolicyError> {
    let t = s.trim();
    let t = t.strip_prefix(':').unwrap_or(t);
    if t.contains(':') || t.contains('.') || t.contains('/') {
        return Err(PolicyError::new(
            field,
            s,
            "bind rules name ports only (e.g. 8080 or 9000-9010); addresses are not supported",
        ));
    }
    parse_range(t).map_err(|reason| PolicyError::new(field, s, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_rules_are_ports_on_any_host() {
        assert_eq!(
            parse_connect_rule("net_allow[0]", ":443").unwrap(),
            PortRange {
                low: 443,
                high: 443
            }
        );
        assert_eq!(
            parse_connect_rule("net_allow[0]", "*:8000-8010").unwrap(),
            PortRange {
                low: 8000,
                high: 8010
            }
        );
    }

    #[test]
    fn host_rules_are_rejected_not_ignored() {
        for bad in ["example.com:443", "10.0.0.1:80", "[::1]:80", "10.0.0.0/8"] {
            let e = parse_connect_rule("net_allow[0]", bad).unwrap_err();
            assert_eq!(e.value, bad);
            assert!(e.reason.contains("not supported"), "{bad}: {e}");
        }
        let e = parse_connect_rule("net_allow[0]", "443").unwrap_err();
        assert!(e.reason.contains(":443"), "{e}");
        assert!(parse_connect_rule("net_allow[0]", ":0").is_err());
        assert!(parse_connect_rule("net_allow[0]", ":70000").is_err());
    }

    #[test]
    fn bind_rules_take_ports_and_ranges() {
        assert_eq!(
            parse_bind_rule("b", "8080").unwrap(),
            PortRange {
                low: 8080,
                high: 8080
            }
        );
        assert_eq!(parse_bind_rule("b", "9000-9010").unwrap().count(), 11);
        assert!(parse_bind_rule("b", "9010-9000").is_err());
        assert!(parse_bind_rule("b", "1-65535").is_err());
        assert!(parse_bind_rule("b", "127.0.0.1:80").is_err());
    }
}
