//! The network policy: which TCP destinations a sandbox may reach, by host name, address, CIDR
//! block and port, and how names resolve inside it.
//!
//! Landlock filters TCP by port only, so destinations are the supervisor's to decide. It can: every
//! `connect` is carried out by the supervisor on a socket of its own (see `supervisor/connect.rs`),
//! which reads the address once and applies [`NetPolicy::permits`]. This module owns:
//! - [`rules`]: parsing and matching `net_allow` / `net_deny` entries (`HOST[:PORT]`);
//! - [`names`]: the allowed host names, resolved on the host with their TTLs;
//! - [`dns`]: answering the sandbox's own name lookups, for allowed names only (DNS over TCP; UDP
//!   stays refused, so no query leaves);
//! - [`proxy`]: the HTTP proxy that enforces `http_allow` / `http_deny`, intercepts HTTPS and adds
//!   credentials (`http_auth`), for the connections the HTTP rules govern.

pub(crate) mod dns;
pub(crate) mod names;
pub(crate) mod proxy;
pub mod rules;

use std::net::IpAddr;
use std::sync::Arc;

use proxy::rules::{Glob, HttpHost, HttpRules};
use rules::{HostPattern, NetRule, canonical};

/// What the supervisor needs to decide a connection.
#[derive(Debug, Clone)]
pub(crate) struct NetPolicy {
    allow: Vec<NetRule>,
    deny: Vec<NetRule>,
    names: Arc<names::Names>,
}

impl Default for NetPolicy {
    /// No TCP at all.
    fn default() -> NetPolicy {
        NetPolicy::new(Vec::new(), Vec::new(), &HttpRules::default())
    }
}

impl NetPolicy {
    /// A policy from parsed `net_allow` and `net_deny` entries, and the HTTP rules (whose hosts
    /// resolve inside the sandbox too).
    pub(crate) fn new(allow: Vec<NetRule>, deny: Vec<NetRule>, http: &HttpRules) -> NetPolicy {
        let mut named: Vec<String> = allow
            .iter()
            .filter_map(|r| match &r.host {
                HostPattern::Name(n) => Some(n.clone()),
                _ => None,
            })
            .chain(http.routing().filter_map(|r| match &r.host {
                HttpHost::Name(n) => Some(n.clone()),
                _ => None,
            }))
            .collect();
        named.sort();
        named.dedup();
        let patterns: Vec<Glob> = http
            .routing()
            .filter_map(|r| match &r.host {
                HttpHost::Glob(g) => Some(g.clone()),
                _ => None,
            })
            .collect();
        NetPolicy {
            allow,
            deny,
            names: Arc::new(names::Names::new(named, patterns)),
        }
    }

    /// Whether the policy allows any TCP at all (otherwise TCP sockets cannot be created).
    pub(crate) fn any(&self) -> bool {
        !self.allow.is_empty() || !self.deny.is_empty()
    }

    /// The allowed names and their addresses.
    pub(crate) fn names(&self) -> &Arc<names::Names> {
        &self.names
    }

    /// Whether the sandbox's name lookups are answered by the supervisor (the policy names hosts).
    pub(crate) fn serves_dns(&self) -> bool {
        self.names.any()
    }

    /// Whether a `net_deny` rule covers `ip` (any form) on `port`.
    pub(crate) fn denies(&self, ip: IpAddr, port: u16) -> bool {
        let ip = canonical(ip);
        let resolves_to = |n: &str, a: IpAddr| self.names.resolves_to(n, a);
        self.deny.iter().any(|r| r.matches(ip, port, &resolves_to))
    }

    /// Whether a connection to `ip` (any form) on `port` is allowed: no `net_deny` rule covers it,
    /// and a `net_allow` rule does (or there are only deny rules: "everything but").
    pub(crate) fn permits(&self, ip: IpAddr, port: u16) -> bool {
        if self.denies(ip, port) {
            return false;
        }
        let ip = canonical(ip);
        let resolves_to = |n: &str, a: IpAddr| self.names.resolves_to(n, a);
        if self.allow.is_empty() {
            return !self.deny.is_empty();
        }
        self.allow.iter().any(|r| r.matches(ip, port, &resolves_to))
    }

    /// Whether a TCP connect to `ip:port` is the sandbox asking its nameserver: port 53, while the
    /// policy names hosts, unless a rule other than a bare port allows that address and port for
    /// real (a deliberate DNS server).
    pub(crate) fn is_dns(&self, ip: IpAddr, port: u16) -> bool {
        if port != 53 || !self.serves_dns() {
            return false;
        }
        let ip = canonical(ip);
        let none = |_: &str, _: IpAddr| false;
        !self
            .allow
            .iter()
            .any(|r| r.host != HostPattern::Any && r.matches(ip, port, &none))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str]) -> NetPolicy {
        let p = |v: &[&str]| {
            v.iter()
                .map(|s| rules::parse_net_rule("f", s).unwrap())
                .collect::<Vec<_>>()
        };
        NetPolicy::new(p(allow), p(deny), &HttpRules::default())
    }

    #[test]
    fn deny_wins_and_deny_alone_means_everything_else() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let p = policy(&[":443", "10.0.0.0/8"], &["10.9.0.0/16", "169.254.169.254"]);
        assert!(p.permits(ip("1.1.1.1"), 443));
        assert!(!p.permits(ip("1.1.1.1"), 80));
        assert!(p.permits(ip("10.1.1.1"), 80));
        assert!(!p.permits(ip("10.9.1.1"), 80));
        assert!(!p.permits(ip("169.254.169.254"), 443));
        let only_deny = policy(&[], &["169.254.169.254", "10.0.0.0/8"]);
        assert!(only_deny.permits(ip("93.184.216.34"), 443));
        assert!(!only_deny.permits(ip("::ffff:10.0.0.1"), 443));
        assert!(!policy(&[], &[]).permits(ip("1.1.1.1"), 443));
    }

    #[test]
    fn dns_is_intercepted_only_when_names_are_in_play() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(!policy(&[":443"], &[]).is_dns(ip("127.0.0.53"), 53));
        let named = policy(&["localhost:80", ":53", "10.0.0.2:53"], &[]);
        assert!(named.is_dns(ip("127.0.0.53"), 53));
        assert!(!named.is_dns(ip("10.0.0.2"), 53));
        assert!(!named.is_dns(ip("127.0.0.53"), 80));
    }
}
