//! Replica identity: what lets several servers run behind one proxy with no shared state.
//!
//! Every id this server mints starts with its replica id and a dot:
//!
//! - session ids (`Mcp-Session-Id`): `<replica>.<32 hex>`;
//! - workspace handles: `<replica>.ws-<32 hex>`;
//!
//! the hex being 128 bits from `getrandom`. A proxy sends a request to the replica named before
//! the first `.` of its session id, or of the workspace handle in its body, without a table of
//! sessions to keep or to lose (`deploy/haproxy/haproxy.cfg`). A replica id is 1 to 63 ASCII
//! letters, digits, `-` or `_`: it needs no escaping in a header, a file name or an HAProxy server
//! name, and the first `.` of an id always ends it.
//!
//! This module owns [`ReplicaId`] (validation, the host-name default, minting, reading an id's
//! owner); [`sessions`] plugs the minting into rmcp's session manager; [`misroute`] answers a
//! request whose session belongs to another replica, or is unknown here, in words that say so.

pub mod misroute;
pub mod sessions;

use std::fmt;

/// Longest replica id: a DNS label's length, so a Kubernetes pod name always fits.
pub const MAX_LEN: usize = 63;

/// What a handle adds after the replica's dot, so a handle never reads as a session id.
pub const HANDLE_KIND: &str = "ws-";

/// The identity of this server among its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaId(String);

/// Why a replica id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaIdError {
    /// The id is empty.
    #[error("it is empty")]
    Empty,
    /// The id is longer than [`MAX_LEN`].
    #[error("it is {0} characters long, more than {MAX_LEN}")]
    TooLong(usize),
    /// The id holds a character outside letters, digits, `-` and `_`.
    #[error("{ch:?} (character {at}) is not allowed")]
    BadChar {
        /// The character.
        ch: char,
        /// Its position, counted from 1.
        at: usize,
    },
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

impl ReplicaId {
    /// Validates an id given by the operator.
    pub fn parse(text: &str) -> Result<ReplicaId, ReplicaIdError> {
        if text.is_empty() {
            return Err(ReplicaIdError::Empty);
        }
        if let Some((i, ch)) = text.chars().enumerate().find(|(_, c)| !allowed(*c)) {
            return Err(ReplicaIdError::BadChar { ch, at: i + 1 });
        }
        if text.len() > MAX_LEN {
            return Err(ReplicaIdError::TooLong(text.len()));
        }
        Ok(ReplicaId(text.to_string()))
    }

    /// The id made from a host name: every character that is not allowed becomes `-` (so
    /// `node1.example.com` is `node1-example-com`), cut at [`MAX_LEN`]. `None` for an empty name.
    pub fn from_host_name(name: &str) -> Option<ReplicaId> {
        let id: String = name
            .chars()
            .map(|c| if allowed(c) { c } else { '-' })
            .take(MAX_LEN)
            .collect();
        (!id.is_empty()).then_some(ReplicaId(id))
    }

    /// The default: this machine's host name (in Kubernetes, the pod's name), sanitised by
    /// [`ReplicaId::from_host_name`]; `sandlock` if the host has no name.
    pub fn default_for_host() -> ReplicaId {
        host_name()
            .as_deref()
            .and_then(ReplicaId::from_host_name)
            .unwrap_or_else(|| ReplicaId("sandlock".into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A new session id: `<replica>.<32 hex>`.
    pub fn new_session_id(&self) -> std::io::Result<String> {
        Ok(format!("{}.{}", self.0, random_hex()?))
    }

    /// A new workspace handle: `<replica>.ws-<32 hex>`.
    pub fn new_handle(&self) -> std::io::Result<String> {
        Ok(format!("{}.{HANDLE_KIND}{}", self.0, random_hex()?))
    }

    /// Whether `id` was minted by a replica other than this one: `Some(owner)` when it carries
    /// another valid replica prefix. An id without a prefix (or with one no replica could have) is
    /// nobody's: `None`, and it is simply unknown.
    pub fn other_owner<'a>(&self, id: &'a str) -> Option<&'a str> {
        owner(id).filter(|o| *o != self.0)
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The replica that minted `id`: the text before its first `.`, if that is a valid replica id.
pub fn owner(id: &str) -> Option<&str> {
    let (head, _) = id.split_once('.')?;
    ReplicaId::parse(head).is_ok().then_some(head)
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// 128 random bits as 32 lowercase hex digits: the part of an id nobody can guess.
pub fn random_hex() -> std::io::Result<String> {
    use std::fmt::Write;
    let mut b = [0u8; 16];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: getrandom writes at most the given length into our buffer.
        let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        got += n as usize;
    }
    let mut s = String::with_capacity(32);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_replica_before_the_first_dot_and_128_random_bits() {
        let r = ReplicaId::parse("sandlock-0").unwrap();
        let s = r.new_session_id().unwrap();
        let (head, rest) = s.split_once('.').unwrap();
        assert_eq!(head, "sandlock-0");
        assert_eq!(rest.len(), 32);
        assert!(
            rest.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let h = r.new_handle().unwrap();
        let (head, rest) = h.split_once('.').unwrap();
        assert_eq!(head, "sandlock-0");
        let hex = rest.strip_prefix("ws-").unwrap();
        assert_eq!(hex.len(), 32);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
        // Random, not counted: two ids differ.
        assert_ne!(r.new_session_id().unwrap(), s);
        assert_ne!(r.new_handle().unwrap(), h);
        // Every byte is a visible ASCII character, as Mcp-Session-Id requires.
        assert!(
            s.bytes()
                .chain(h.bytes())
                .all(|b| (0x21..0x7f).contains(&b))
        );
    }

    #[test]
    fn the_owner_is_read_back_from_any_id() {
        let a = ReplicaId::parse("a_1").unwrap();
        let b = ReplicaId::parse("B-2").unwrap();
        for id in [a.new_session_id().unwrap(), a.new_handle().unwrap()] {
            assert_eq!(owner(&id), Some("a_1"));
            assert_eq!(b.other_owner(&id), Some("a_1"));
            assert_eq!(a.other_owner(&id), None, "its own id is not another's");
        }
    }

    #[test]
    fn ids_without_a_valid_prefix_belong_to_nobody() {
        let r = ReplicaId::parse("r1").unwrap();
        for id in [
            "ws-00000000000000000000000000000000",
            "c94b661c-a6f0-4f63-9c3e-6b1f7a3d2e10",
            ".ws-00",
            "bad/prefix.ws-00",
            "",
        ] {
            assert_eq!(owner(id), None, "{id}");
            assert_eq!(r.other_owner(id), None, "{id}");
        }
    }

    #[test]
    fn bad_replica_ids_are_refused_with_the_reason() {
        assert_eq!(ReplicaId::parse(""), Err(ReplicaIdError::Empty));
        assert_eq!(
            ReplicaId::parse("web.1"),
            Err(ReplicaIdError::BadChar { ch: '.', at: 4 })
        );
        assert_eq!(
            ReplicaId::parse("a b"),
            Err(ReplicaIdError::BadChar { ch: ' ', at: 2 })
        );
        assert_eq!(
            ReplicaId::parse("é"),
            Err(ReplicaIdError::BadChar { ch: 'é', at: 1 })
        );
        let long = "x".repeat(MAX_LEN + 1);
        assert_eq!(
            ReplicaId::parse(&long),
            Err(ReplicaIdError::TooLong(MAX_LEN + 1))
        );
        // Controls: the longest id, and every allowed kind of character.
        assert!(ReplicaId::parse(&"x".repeat(MAX_LEN)).is_ok());
        assert_eq!(ReplicaId::parse("Az09-_").unwrap().as_str(), "Az09-_");
    }

    #[test]
    fn host_names_are_sanitised_into_ids() {
        let id = |n: &str| ReplicaId::from_host_name(n).map(|r| r.0);
        assert_eq!(id("sandlock-0").as_deref(), Some("sandlock-0"));
        assert_eq!(
            id("node1.example.com").as_deref(),
            Some("node1-example-com")
        );
        assert_eq!(id("höst:1").as_deref(), Some("h-st-1"));
        assert_eq!(id(&"a".repeat(100)).map(|s| s.len()), Some(MAX_LEN));
        assert_eq!(id(""), None);
        // Whatever the host is called, the default is a valid id.
        let d = ReplicaId::default_for_host();
        assert!(ReplicaId::parse(d.as_str()).is_ok(), "{d}");
    }
}
