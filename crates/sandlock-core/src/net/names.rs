//! The host names a policy allows, resolved on the host by the supervisor.
//!
//! A name rule (`api.example.com:443`) allows connections to the addresses the name resolves to,
//! and only that name is answered when the sandbox asks (see [`super::dns`]). Host patterns of the
//! HTTP rules (`*.example.com`) admit the names they match the same way, each resolved the first
//! time the sandbox asks for it (at most [`MAX_ADMITTED`] of them are kept). The supervisor
//! resolves it itself, the way the host's C library would: the hosts file (`/etc/hosts`) first,
//! then the nameservers of `/etc/resolv.conf` (parsed by `resolv-conf`; messages built and read by
//! `hickory-proto`), over UDP and, when an answer is truncated, TCP. An answer is kept for its TTL
//! (at least [`MIN_TTL`], at most [`MAX_TTL`]); a name that does not resolve is asked again after
//! [`NEGATIVE_TTL`]. Hosts-file entries are read again every [`HOSTS_TTL`].
//!
//! Every name is resolved once when the sandbox is made (`Sandbox::new` waits, at most
//! [`QUERY_TIMEOUT`] per nameserver and record type). After that, nothing that decides a connect or
//! answers the sandbox's resolver waits for the network: an expired entry is still served while a
//! short-lived thread asks again, and replaced when the answer comes (a name keeps pointing where it
//! pointed for at most one query's time past its TTL). The table is shared by every run of a
//! sandbox and is safe to use from many threads.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::proxy::rules::Glob;

/// The shortest time an answer is kept, whatever its TTL.
pub const MIN_TTL: Duration = Duration::from_secs(5);
/// The longest.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// How long a name that did not resolve stays unresolved before it is asked again.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// How long hosts-file answers are kept.
pub const HOSTS_TTL: Duration = Duration::from_secs(30);
/// How long one query waits for an answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Most names admitted by a pattern that the table keeps answers for.
pub const MAX_ADMITTED: usize = 1024;
/// Most names being resolved in the background at once.
pub const MAX_REFRESHING: usize = 8;

/// Addresses of one name and until when they hold.
#[derive(Debug, Clone)]
struct Entry {
    addrs: Vec<IpAddr>,
    expires: Instant,
}

/// What a name resolved to, for the sandbox's resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// Its addresses (empty: the name does not exist).
    pub(crate) addrs: Vec<IpAddr>,
    /// Seconds the answer still holds.
    pub(crate) ttl: u32,
}

/// The allowed names and their current addresses.
#[derive(Debug)]
pub(crate) struct Names {
    names: Vec<String>,
    /// Patterns that admit more names (the HTTP rules' hosts).
    patterns: Vec<Glob>,
    table: Mutex<HashMap<String, Entry>>,
    /// Names being asked again in the background.
    refreshing: Mutex<HashSet<String>>,
    hosts_path: &'static str,
    resolv_path: &'static str,
}

impl Names {
    /// A table for `names` (lowercase, no trailing dot) and the names `patterns` admit; nothing
    /// is resolved until asked.
    pub(crate) fn new(names: Vec<String>, patterns: Vec<Glob>) -> Names {
        Names {
            names,
            patterns,
            table: Mutex::new(HashMap::new()),
            refreshing: Mutex::new(HashSet::new()),
            hosts_path: "/etc/hosts",
            resolv_path: "/etc/resolv.conf",
        }
    }

    /// Whether `name` is one of the allowed names, or a pattern admits it.
    pub(crate) fn allowed(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name) || self.patterns.iter().any(|p| p.matches(name))
    }

    /// Whether any name is allowed (then the sandbox's resolver is answered).
    pub(crate) fn any(&self) -> bool {
        !self.names.is_empty() || !self.patterns.is_empty()
    }

    /// The current addresses of allowed name `name` without waiting: `None` when it was never
    /// resolved (it is being resolved in the background; ask again shortly).
    pub(crate) fn lookup_nowait(self: &Arc<Self>, name: &str) -> Option<Answer> {
        if !self.allowed(name) {
            return Some(Answer {
                addrs: Vec::new(),
                ttl: 0,
            });
        }
        match self.cached(name, Instant::now()) {
            Some((answer, fresh)) => {
                if !fresh {
                    self.refresh_in_background(name);
                }
                Some(answer)
            }
            None => {
                self.refresh_in_background(name);
                None
            }
        }
    }

    /// Whether `ip` (canonical) is currently an address of a name a pattern admitted.
    pub(crate) fn admitted_resolves_to(&self, ip: IpAddr) -> bool {
        let Ok(t) = self.table.lock() else {
            return false;
        };
        t.iter().any(|(name, e)| {
            !self.names.contains(name) && e.addrs.iter().any(|a| super::rules::canonical(*a) == ip)
        })
    }

    /// The current addresses of allowed name `name`. Only a name never resolved before waits for
    /// the answer; an expired entry is served as it is (with a TTL of one second, so that the
    /// sandbox asks again soon) while it is refreshed in the background.
    pub(crate) fn lookup(self: &Arc<Self>, name: &str) -> Answer {
        if !self.allowed(name) {
            return Answer {
                addrs: Vec::new(),
                ttl: 0,
            };
        }
        let now = Instant::now();
        match self.cached(name, now) {
            Some((answer, true)) => answer,
            Some((answer, false)) => {
                self.refresh_in_background(name);
                answer
            }
            None => self.refresh(name),
        }
    }

    /// Whether allowed name `name` currently resolves to `ip` (compared in canonical form), as
    /// [`Names::lookup`] would answer, without copying the addresses: every connect asks this.
    pub(crate) fn resolves_to(self: &Arc<Self>, name: &str, ip: IpAddr) -> bool {
        if !self.allowed(name) {
            return false;
        }
        let held = {
            let Ok(t) = self.table.lock() else {
                return false;
            };
            t.get(name).map(|e| {
                let found = e.addrs.iter().any(|a| super::rules::canonical(*a) == ip);
                (found, e.expires <= Instant::now())
            })
        };
        match held {
            Some((found, stale)) => {
                if stale {
                    self.refresh_in_background(name);
                }
                found
            }
            None => self
                .lookup(name)
                .addrs
                .iter()
                .any(|a| super::rules::canonical(*a) == ip),
        }
    }

    /// Resolves `name` now and stores the answer.
    fn refresh(&self, name: &str) -> Answer {
        let (addrs, ttl) = self.resolve(name);
        let entry = Entry {
            addrs: addrs.clone(),
            expires: Instant::now() + ttl,
        };
        if let Ok(mut t) = self.table.lock() {
            if t.len() >= self.names.len() + MAX_ADMITTED {
                // Forget what patterns admitted (expired entries first, all if that is not enough).
                let now = Instant::now();
                t.retain(|n, e| self.names.contains(n) || e.expires > now);
                if t.len() >= self.names.len() + MAX_ADMITTED {
                    t.retain(|n, _| self.names.contains(n));
                }
            }
            t.insert(name.to_string(), entry);
        }
        Answer {
            addrs,
            ttl: ttl.as_secs() as u32,
        }
    }

    fn refresh_in_background(self: &Arc<Self>, name: &str) {
        let Ok(mut busy) = self.refreshing.lock() else {
            return;
        };
        // A sandbox asking for many names a pattern admits gets them a few at a time (its resolver
        // conversation waits), not a thread each.
        if busy.len() >= MAX_REFRESHING || !busy.insert(name.to_string()) {
            return;
        }
        drop(busy);
        let (me, owned) = (Arc::clone(self), name.to_string());
        let spawned = std::thread::Builder::new()
            .name("sandlock-dns".into())
            .spawn(move || {
                me.refresh(&owned);
                if let Ok(mut busy) = me.refreshing.lock() {
                    busy.remove(&owned);
                }
            });
        if spawned.is_err() {
            // No thread to spare: the stale answer stands until the next lookup tries again.
            if let Ok(mut busy) = self.refreshing.lock() {
                busy.remove(name);
            }
        }
    }

    /// The stored answer for `name` and whether it still holds.
    fn cached(&self, name: &str, now: Instant) -> Option<(Answer, bool)> {
        let t = self.table.lock().ok()?;
        let e = t.get(name)?;
        let fresh = e.expires > now;
        let ttl = if fresh {
            e.expires.duration_since(now).as_secs().max(1) as u32
        } else {
            1
        };
        Some((
            Answer {
                addrs: e.addrs.clone(),
                ttl,
            },
            fresh,
        ))
    }

    /// Resolves every allowed name now (for `Sandbox::new`, so that the first connections do not
    /// wait). Names that do not resolve are listed, for a warning; they are asked again later.
    pub(crate) fn resolve_all(&self) -> Vec<String> {
        self.names
            .clone()
            .into_iter()
            .filter(|n| self.refresh(n).addrs.is_empty())
            .collect()
    }

    /// The addresses of `name` and how long to keep them.
    fn resolve(&self, name: &str) -> (Vec<IpAddr>, Duration) {
        let hosts = hosts_lookup(
            &std::fs::read_to_string(self.hosts_path).unwrap_or_default(),
            name,
        );
        if !hosts.is_empty() {
            return (hosts, HOSTS_TTL);
        }
        let servers = nameservers(self.resolv_path);
        let mut addrs = Vec::new();
        let mut ttl: Option<u32> = None;
        for rtype in [RecordType::A, RecordType::AAAA] {
            for server in &servers {
                if let Some((found, t)) = query(*server, name, rtype) {
                    ttl = Some(ttl.map_or(t, |old| old.min(t)));
                    addrs.extend(found);
                    break;
                }
            }
        }
        if addrs.is_empty() {
            return (addrs, NEGATIVE_TTL);
        }
        let ttl = Duration::from_secs(u64::from(ttl.unwrap_or(0))).clamp(MIN_TTL, MAX_TTL);
        (addrs, ttl)
    }
}

/// The addresses `name` has in a hosts file's text.
fn hosts_lookup(text: &str, name: &str) -> Vec<IpAddr> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            let ip: IpAddr = f.next()?.parse().ok()?;
            f.any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(name))
                .then_some(ip)
        })
        .collect()
}

/// The nameservers of a resolv.conf (port 53), or 127.0.0.53 and 127.0.0.1 when it names none.
fn nameservers(path: &str) -> Vec<SocketAddr> {
    let parsed = std::fs::read(path)
        .ok()
        .and_then(|b| resolv_conf::Config::parse(&b).ok());
    let mut out: Vec<SocketAddr> = parsed
        .map(|c| {
            c.nameservers
                .iter()
                .map(|ns| SocketAddr::new(IpAddr::from(ns.clone()), 53))
                .collect()
        })
        .unwrap_or_default();
    if out.is_empty() {
        out.push(SocketAddr::from(([127, 0, 0, 1], 53)));
    }
    out
}

/// Asks `server` for the `rtype` records of `name`: the addresses and the smallest TTL on the way
/// to them (CNAMEs included), or `None` when the server did not answer usefully (then the next one
/// is asked). A name that does not exist is an answer: no addresses.
fn query(server: SocketAddr, name: &str, rtype: RecordType) -> Option<(Vec<IpAddr>, u32)> {
    let fqdn = Name::from_ascii(format!("{name}.")).ok()?;
    let mut msg = Message::new();
    msg.set_id(rand_id())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(fqdn, rtype));
    let wire = msg.to_vec().ok()?;
    let reply = udp_exchange(server, &wire)?;
    let mut reply = Message::from_vec(&reply).ok()?;
    if reply.id() != msg.id() {
        return None;
    }
    if reply.truncated() {
        reply = Message::from_vec(&tcp_exchange(server, &wire)?).ok()?;
    }
    match reply.response_code() {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        _ => return None,
    }
    let mut addrs = Vec::new();
    let mut ttl = u32::MAX;
    for r in reply.answers() {
        ttl = ttl.min(r.ttl());
        match r.data() {
            RData::A(a) if rtype == RecordType::A => addrs.push(IpAddr::V4(a.0)),
            RData::AAAA(a) if rtype == RecordType::AAAA => addrs.push(IpAddr::V6(a.0)),
            _ => {}
        }
    }
    Some((addrs, if ttl == u32::MAX { 0 } else { ttl }))
}

fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    // SAFETY: getrandom writes at most two bytes into `b`.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 2, 0) };
    u16::from_ne_bytes(b)
}

fn udp_exchange(server: SocketAddr, wire: &[u8]) -> Option<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(server).ok()?;
    s.set_read_timeout(Some(QUERY_TIMEOUT)).ok()?;
    s.send(wire).ok()?;
    let mut buf = vec![0u8; 4096];
    let n = s.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn tcp_exchange(server: SocketAddr, wire: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&server, QUERY_TIMEOUT).ok()?;
    s.set_read_timeout(Some(QUERY_TIMEOUT)).ok()?;
    let len = u16::try_from(wire.len()).ok()?.to_be_bytes();
    s.write_all(&len).ok()?;
    s.write_all(wire).ok()?;
    let mut l = [0u8; 2];
    s.read_exact(&mut l).ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(l))];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_file_is_read_like_the_c_library_does() {
        let text = "127.0.0.1 localhost\n# 10.0.0.1 commented.test\n127.0.0.2 allowed.test alias.test # x\n::1 six.test\n";
        assert_eq!(
            hosts_lookup(text, "allowed.test"),
            vec!["127.0.0.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            hosts_lookup(text, "ALIAS.test"),
            vec!["127.0.0.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            hosts_lookup(text, "six.test"),
            vec!["::1".parse::<IpAddr>().unwrap()]
        );
        assert!(hosts_lookup(text, "commented.test").is_empty());
    }

    #[test]
    fn only_allowed_names_are_looked_up() {
        let n = Arc::new(Names::new(vec!["localhost".into()], Vec::new()));
        assert!(n.lookup("example.org").addrs.is_empty());
        assert!(n.lookup("localhost").addrs.iter().any(|a| a.is_loopback()));
        assert!(n.allowed("localhost") && !n.allowed("localhost.localdomain"));
    }

    #[test]
    fn an_expired_entry_is_served_while_it_is_asked_again() {
        let n = Arc::new(Names::new(vec!["localhost".into()], Vec::new()));
        let first = n.lookup("localhost");
        assert!(!first.addrs.is_empty());
        n.table
            .lock()
            .unwrap()
            .get_mut("localhost")
            .unwrap()
            .expires = Instant::now();
        let stale = n.lookup("localhost");
        assert_eq!((stale.addrs.clone(), stale.ttl), (first.addrs.clone(), 1));
        let deadline = Instant::now() + Duration::from_secs(10);
        while n.lookup("localhost").ttl == 1 {
            assert!(Instant::now() < deadline, "the entry was never refreshed");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(n.refreshing.lock().unwrap().is_empty());
    }
}
