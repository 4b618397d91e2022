//! Sessions: named by the client, owned by an account, kept alive by a lease.
//!
//! A session is a workspace of the server's [`Registry`] (so it counts against `max_workspaces`,
//! shares its root and its removal thread) holding two directories: `data`, the session's
//! `/mnt/data` and working directory, and `tmp`, its `/tmp`. The table is keyed by the account and
//! the client's name, so two accounts that use the same name get two sessions, and neither can
//! learn that the other's exists.
//!
//! Leases only grow: a call asking for less than what is left changes nothing. A session whose
//! lease has passed is reaped: its commands are killed (background ones too) and its directory is
//! removed once the last of them has let go. A foreground call in progress holds the session (its
//! caller is waiting for the answer), and the lease is extended again when the call ends.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sandlock_core::{Policy, Sandbox};
use tokio_util::sync::CancellationToken;

use super::api::ApiError;
use super::auth::{Account, now_ms};
use crate::workspace::{Registry, Workspace, WorkspaceError, short};

/// The directory, inside a session's workspace, that is its `/mnt/data` and working directory.
pub const DATA_DIR: &str = "data";
/// The directory, inside a session's workspace, that is its `/tmp`.
pub const TMP_DIR: &str = "tmp";
/// Longest session name accepted.
pub const MAX_NAME: usize = 200;
/// Whether a session's commands see its directories at `/mnt/data` and `/tmp`: they do, through
/// the sandbox's filesystem view (`fs_mount`), so two sessions that write `/mnt/data/report.csv`
/// or `/tmp/x.py` never meet.
pub const PRIVATE_PATHS: bool = true;

/// One session.
pub struct Session {
    /// The client's name for it.
    pub name: String,
    /// Its owner.
    pub account: Account,
    /// Its directory.
    pub workspace: Arc<Workspace>,
    lease_until: Mutex<Instant>,
    inflight: AtomicUsize,
    foreground: AtomicUsize,
    /// Cancelled when the session ends (lease expiry or shutdown): every command of it is killed.
    pub ended: CancellationToken,
    sandbox: OnceLock<Result<Arc<Sandbox>, String>>,
}

impl Session {
    /// Extends the lease to `ttl` from now, unless it already runs longer.
    pub fn extend(&self, ttl: Duration) {
        let until = Instant::now() + ttl;
        if let Ok(mut l) = self.lease_until.lock() {
            if until > *l {
                *l = until;
            }
        }
    }

    /// When the lease ends, in Unix milliseconds.
    pub fn lease_expires_unix_ms(&self) -> u64 {
        let left = self
            .lease_until
            .lock()
            .map(|l| l.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        now_ms().saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
    }

    fn expired(&self, now: Instant) -> bool {
        self.foreground.load(Ordering::Acquire) == 0
            && self.lease_until.lock().map(|l| *l <= now).unwrap_or(true)
    }

    /// Counts a command of this session until the returned guard is dropped; refuses past `cap`
    /// commands at once (`session_busy`).
    pub fn begin(self: &Arc<Self>, foreground: bool, cap: usize) -> Result<InFlight, ApiError> {
        if self.ended.is_cancelled() {
            return Err(ApiError::session_ended(&self.name));
        }
        if self.inflight.fetch_add(1, Ordering::AcqRel) >= cap {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::new(
                409,
                "session_busy",
                format!(
                    "session {} already runs {cap} commands (max_commands_per_session); wait for \
                     one to finish or cancel a background task",
                    self.name
                ),
            ));
        }
        if foreground {
            self.foreground.fetch_add(1, Ordering::AcqRel);
        }
        Ok(InFlight {
            session: self.clone(),
            foreground,
        })
    }

    /// The sandbox of this session's commands, built on first use by `make`.
    pub fn sandbox(
        &self,
        make: impl FnOnce() -> Result<Sandbox, String>,
    ) -> Result<Arc<Sandbox>, String> {
        self.sandbox.get_or_init(|| make().map(Arc::new)).clone()
    }
}

/// A command of a session in progress (see [`Session::begin`]).
pub struct InFlight {
    /// The session.
    pub session: Arc<Session>,
    foreground: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.session.inflight.fetch_sub(1, Ordering::AcqRel);
        if self.foreground {
            self.session.foreground.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The policy of a session's commands: the configured one plus the session's directories,
/// mounted at `/mnt/data` (the working directory) and `/tmp` (also `HOME` and `TMPDIR`).
pub fn session_policy(base: &Policy, ws: &Path) -> Policy {
    let mut p = base.clone();
    // The session's own /tmp lives as long as the session, across its commands.
    p.private_tmp = false;
    for (virt, sub) in [
        (super::export::VIRTUAL_DATA, DATA_DIR),
        (super::export::VIRTUAL_TMP, TMP_DIR),
    ] {
        p.fs_mount
            .insert(virt.into(), ws.join(sub).display().to_string());
    }
    p.cwd = Some(super::export::VIRTUAL_DATA.into());
    let tmp = super::export::VIRTUAL_TMP.to_string();
    p.env.entry("HOME".into()).or_insert_with(|| tmp.clone());
    p.env.entry("TMPDIR".into()).or_insert(tmp);
    p
}

/// Every session of the server.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<(Account, String), Arc<Session>>>,
}

/// A session name is what LobeHub makes of a user and topic id (`lobe-<user>-<topic>`, anything
/// outside `[A-Za-z0-9_.-]` replaced): the same characters, at most [`MAX_NAME`] of them.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "session_id {name:?} is not a session name: use 1 to {MAX_NAME} of A-Z a-z 0-9 _ . -"
        )))
    }
}

impl Sessions {
    /// The account's session `name`, created when missing if `create` says so. Returns it and
    /// whether this call created it; either way its lease is extended by `lease`. A new
    /// session's commands are also killed when `parent` is cancelled (the server's shutdown).
    #[allow(clippy::too_many_arguments)]
    pub fn acquire(
        &self,
        account: &Account,
        name: &str,
        create: bool,
        lease: Duration,
        registry: &Registry,
        max_sessions: usize,
        parent: &CancellationToken,
    ) -> Result<(Arc<Session>, bool), ApiError> {
        let mut map = self.map.lock().map_err(|_| ApiError::internal("a lock"))?;
        let key = (account.clone(), name.to_string());
        if let Some(s) = map.get(&key) {
            s.extend(lease);
            return Ok((s.clone(), false));
        }
        if !create {
            return Err(ApiError::session_not_found(name));
        }
        if map.len() >= max_sessions {
            return Err(ApiError::new(
                429,
                "session_capacity_exceeded",
                format!(
                    "the server holds {max_sessions} sessions (max_sessions); retry when one has \
                     expired"
                ),
            ));
        }
        let workspace = registry.create(true).map_err(|e| match e {
            WorkspaceError::Full(n) => ApiError::new(
                429,
                "session_capacity_exceeded",
                format!("the server holds {n} workspaces (max_workspaces); retry later"),
            ),
            e => ApiError::new(502, "execution_failed", e.to_string()),
        })?;
        for sub in [DATA_DIR, TMP_DIR] {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(workspace.dir.join(sub))
                .map_err(|e| {
                    ApiError::new(
                        502,
                        "execution_failed",
                        format!("cannot create the session's {sub} directory: {e}"),
                    )
                })?;
        }
        let session = Arc::new(Session {
            name: name.to_string(),
            account: account.clone(),
            workspace,
            lease_until: Mutex::new(Instant::now() + lease),
            inflight: AtomicUsize::new(0),
            foreground: AtomicUsize::new(0),
            ended: parent.child_token(),
            sandbox: OnceLock::new(),
        });
        tracing::info!(
            target: "sandlock_mcp::provider",
            session = %name,
            workspace = %short(&session.workspace.handle),
            lease_s = lease.as_secs_f64(),
            "session created"
        );
        map.insert(key, session.clone());
        Ok((session, true))
    }

    /// The account's session `name`, if it exists.
    pub fn find(&self, account: &Account, name: &str) -> Option<Arc<Session>> {
        let map = self.map.lock().ok()?;
        map.get(&(account.clone(), name.to_string())).cloned()
    }

    /// Ends the sessions whose lease has passed (and that no foreground call holds): their
    /// commands are killed and their directories go when the last command lets go.
    pub fn reap(&self) -> usize {
        let now = Instant::now();
        let ended: Vec<Arc<Session>> = match self.map.lock() {
            Ok(mut map) => {
                let keys: Vec<_> = map
                    .iter()
                    .filter(|(_, s)| s.expired(now))
                    .map(|(k, _)| k.clone())
                    .collect();
                keys.iter().filter_map(|k| map.remove(k)).collect()
            }
            Err(_) => Vec::new(),
        };
        for s in &ended {
            tracing::info!(target: "sandlock_mcp::provider", session = %s.name, "session lease expired: its commands are killed and its files removed");
            s.ended.cancel();
        }
        ended.len()
    }

    /// Ends every session (at shutdown).
    pub fn end_all(&self) {
        let all: Vec<Arc<Session>> = match self.map.lock() {
            Ok(mut map) => map.drain().map(|(_, s)| s).collect(),
            Err(_) => Vec::new(),
        };
        for s in all {
            s.ended.cancel();
        }
    }

    /// Sessions alive.
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(sub: &str) -> Account {
        Account {
            iss: "lobehub".into(),
            sub: sub.into(),
        }
    }

    /// `s.acquire` of `sub`'s session `name` (account issuer "lobehub"), at most `cap` sessions,
    /// under a parent token that is never cancelled.
    fn acquire(
        s: &Sessions,
        r: &Registry,
        sub: &str,
        name: &str,
        create: bool,
        lease: Duration,
        cap: usize,
    ) -> Result<(Arc<Session>, bool), ApiError> {
        s.acquire(
            &account(sub),
            name,
            create,
            lease,
            r,
            cap,
            &CancellationToken::new(),
        )
    }

    fn registry(name: &str) -> Registry {
        let root = std::env::temp_dir().join(format!(
            "sandlock-provider-sessions-{name}-{}",
            std::process::id()
        ));
        Registry::new(&root, 8, crate::replica::ReplicaId::parse("here").unwrap()).unwrap()
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("lobe-user_1-topic.2").is_ok());
        for bad in ["", "a/b", "a b", "..\u{0}", &"x".repeat(MAX_NAME + 1)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn another_account_does_not_find_a_session_and_gets_its_own() {
        let r = registry("accounts");
        let s = Sessions::default();
        let lease = Duration::from_secs(60);
        let (a, created) = acquire(&s, &r, "alice", "lobe-x", true, lease, 8).unwrap();
        assert!(created);
        assert!(s.find(&account("bob"), "lobe-x").is_none());
        let e = acquire(&s, &r, "bob", "lobe-x", false, lease, 8)
            .err()
            .unwrap();
        assert_eq!(e.status, 404);
        let (b, created) = acquire(&s, &r, "bob", "lobe-x", true, lease, 8).unwrap();
        assert!(created);
        assert_ne!(a.workspace.dir, b.workspace.dir);
        let (again, created) = acquire(&s, &r, "alice", "lobe-x", false, lease, 8).unwrap();
        assert!(!created);
        assert!(Arc::ptr_eq(&a, &again));
        s.end_all();
        let _ = std::fs::remove_dir_all(r.root());
    }

    #[test]
    fn leases_only_grow_and_an_expired_session_is_reaped_with_its_files() {
        let r = registry("lease");
        let s = Sessions::default();
        let (a, _) = acquire(&s, &r, "a", "long", true, Duration::from_secs(60), 8).unwrap();
        let before = a.lease_expires_unix_ms();
        a.extend(Duration::from_millis(1));
        assert!(a.lease_expires_unix_ms() >= before);
        let (b, _) = acquire(&s, &r, "a", "short", true, Duration::from_millis(20), 8).unwrap();
        let dir = b.workspace.dir.clone();
        assert!(dir.join(DATA_DIR).is_dir() && dir.join(TMP_DIR).is_dir());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(s.reap(), 1);
        assert!(b.ended.is_cancelled());
        assert!(!a.ended.is_cancelled());
        drop(b);
        assert!(!dir.exists());
        assert!(s.find(&account("a"), "short").is_none());
        s.end_all();
        let _ = std::fs::remove_dir_all(r.root());
    }

    #[test]
    fn a_foreground_call_holds_an_expired_session_and_the_cap_is_kept() {
        let r = registry("hold");
        let s = Sessions::default();
        let (a, _) = acquire(&s, &r, "a", "x", true, Duration::from_millis(10), 8).unwrap();
        let held = a.begin(true, 2).unwrap();
        let background = a.begin(false, 2).unwrap();
        assert_eq!(a.begin(false, 2).err().unwrap().status, 409);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(s.reap(), 0);
        drop(held);
        assert_eq!(s.reap(), 1);
        drop(background);
        let _ = std::fs::remove_dir_all(r.root());
    }

    #[test]
    fn the_session_cap_is_a_capacity_error() {
        let r = registry("cap");
        let s = Sessions::default();
        let lease = Duration::from_secs(60);
        acquire(&s, &r, "a", "one", true, lease, 1).unwrap();
        let e = acquire(&s, &r, "a", "two", true, lease, 1).err().unwrap();
        assert_eq!((e.status, e.code), (429, "session_capacity_exceeded"));
        s.end_all();
        let _ = std::fs::remove_dir_all(r.root());
    }
}
