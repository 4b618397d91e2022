//! Port ranges, and the `net_allow_bind` rules (ports only: what Landlock, and the supervisor's
//! stand-in for it, filter `bind` by). Connect rules name hosts too: see `crate::net::rules`.

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

/// Parses `PORT` or `LOW-HIGH` (ports 0 to 65535, low not above high), with no cap on the span.
pub(crate) fn parse_span(s: &str) -> Result<PortRange, String> {
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
    Ok(PortRange { low, high })
}

fn parse_range(s: &str) -> Result<PortRange, String> {
    let r = parse_span(s)?;
    if r.count() > MAX_RANGE {
        return Err(format!(
            "range covers {} ports; at most {MAX_RANGE} per rule",
            r.count()
        ));
    }
    Ok(r)
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
