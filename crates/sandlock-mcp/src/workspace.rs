//! Workspaces: one directory per MCP session (or per stateless handle), and their lifetime.
//!
//! A workspace is named by a handle, `<replica>.ws-<32 hex>`: the server's replica id, then 128
//! random bits (see [`crate::replica`]). The handle is not the session id and is not derived from
//! it. The directory is `<root>/<handle>`, mode 0700.
//!
//! - A **session** (MCP 2025-11-25, or stdio) gets a workspace on its first tool call; it is removed
//!   when the session ends (DELETE, idle TTL, shutdown).
//! - A **stateless request** (MCP 2026-07-28, or `--stateless`) names its workspace with the
//!   `workspace` tool argument. Without one, a new workspace is created and its handle is returned
//!   in the result (`structuredContent.workspace`); passing it back reaches the same files. This is
//!   the "explicit, server-minted handle passed as an ordinary tool argument" the 2026-07-28
//!   revision prescribes. A stateless workspace is removed after the TTL without use.
//!
//! - A workspace may be created ahead of time for the pool of ready workspaces (`crate::pool`),
//!   and adopted by a session or a stateless request when one needs a new workspace. Its handle
//!   is minted like any other, with this replica's prefix.
//!
//! Removal happens when the last user lets go: a run in progress keeps its directory alive, and so
//! does a background command (see [`crate::background`]), which is killed when its session ends
//! or its stateless workspace expires.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sandlock_core::Sandbox;

use crate::background::Commands;
use crate::config::ExecTool;
use crate::files::Beneath;
use crate::replica::ReplicaId;

/// One workspace directory.
pub struct Workspace {
    /// The handle (also the directory's name).
    pub handle: String,
    /// The directory.
    pub dir: PathBuf,
    /// The directory, held open for the file tools.
    pub files: Beneath,
    last_used: Mutex<Instant>,
    sandboxes: [OnceLock<Result<Arc<Sandbox>, String>>; 3],
    /// The sandbox of the Python interpreters the workspace keeps (the Python policy without a
    /// timeout).
    kept_sandbox: OnceLock<Result<Arc<Sandbox>, String>>,
    /// The Python fork server, while one runs (see `crate::warm`).
    zygote: Mutex<Option<Arc<crate::warm::Zygote>>>,
    /// The persistent Python interpreter, once started (it may have ended since).
    persistent: Mutex<Option<Arc<crate::warm::Persistent>>>,
    /// Held for the whole of a persistent cell, so that the workspace's cells run one at a time.
    pub persistent_turn: tokio::sync::Mutex<()>,
    /// Python calls that ran fresh in fork mode (the second one starts the fork server).
    pub python_calls: AtomicU32,
    /// A fork server is being started.
    pub fork_starting: AtomicBool,
    /// Background commands.
    pub commands: Commands,
    registry: Arc<Inner>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace").field("dir", &self.dir).finish()
    }
}

impl Workspace {
    /// Marks the workspace as used now (for the idle TTL).
    pub fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }

    /// The sandbox for `tool` in this workspace, built on first use by `make`.
    pub fn sandbox(
        &self,
        tool: ExecTool,
        make: impl FnOnce() -> Result<Sandbox, String>,
    ) -> Result<Arc<Sandbox>, String> {
        let slot = &self.sandboxes[tool as usize];
        slot.get_or_init(|| make().map(Arc::new)).clone()
    }

    /// The Python fork server, if one is running.
    pub fn live_zygote(&self) -> Option<Arc<crate::warm::Zygote>> {
        let z = self.zygote.lock().unwrap_or_else(|e| e.into_inner());
        z.as_ref().filter(|z| !z.ended()).cloned()
    }

    /// Installs a newly started fork server (stopping one it replaces).
    pub fn set_zygote(&self, new: Arc<crate::warm::Zygote>) {
        let mut z = self.zygote.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = z.replace(new) {
            old.stop();
        }
    }

    /// The sandbox of the interpreters the workspace keeps, built on first use by `make`.
    pub fn kept_sandbox(
        &self,
        make: impl FnOnce() -> Result<Sandbox, String>,
    ) -> Result<Arc<Sandbox>, String> {
        self.kept_sandbox
            .get_or_init(|| make().map(Arc::new))
            .clone()
    }

    /// The persistent interpreter last started (alive, or ended with its reason).
    pub fn persistent(&self) -> Option<Arc<crate::warm::Persistent>> {
        self.persistent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Installs a newly started persistent interpreter.
    pub fn set_persistent(&self, p: Arc<crate::warm::Persistent>) {
        *self.persistent.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
    }

    /// Removes the persistent interpreter (to stop it), if there is one.
    pub fn take_persistent(&self) -> Option<Arc<crate::warm::Persistent>> {
        self.persistent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Some(z) = self.zygote.get_mut().ok().and_then(|z| z.take()) {
            z.stop();
        }
        if let Some(p) = self.persistent.get_mut().ok().and_then(|p| p.take()) {
            p.stop("was stopped: its workspace ended");
        }
        self.registry.live.fetch_sub(1, Ordering::Relaxed);
        let job = (
            std::mem::take(&mut self.dir),
            std::mem::take(&mut self.handle),
        );
        let job = match self.registry.janitor.lock() {
            Ok(j) => match j.as_ref() {
                Some(j) => match j.tx.send(job) {
                    Ok(()) => return,
                    Err(std::sync::mpsc::SendError(job)) => job,
                },
                None => job,
            },
            Err(_) => job,
        };
        remove_workspace(&job.0, &job.1);
    }
}

fn remove_workspace(dir: &Path, handle: &str) {
    if let Err(e) = remove_tree(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a workspace");
    } else {
        tracing::debug!(workspace = %short(handle), "workspace removed");
    }
}

/// A thread that removes workspace directories, so that removing a large tree never holds up the
/// server's event loop (which is a single thread; see `crate::run`).
struct Janitor {
    tx: std::sync::mpsc::Sender<(PathBuf, String)>,
    thread: std::thread::JoinHandle<()>,
}

struct Inner {
    root: PathBuf,
    max: usize,
    replica: ReplicaId,
    live: AtomicUsize,
    /// When set, dropped workspaces are removed by this thread instead of in place.
    janitor: Mutex<Option<Janitor>>,
}

/// All workspaces of this server.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
    stateless: Arc<Mutex<HashMap<String, Arc<Workspace>>>>,
}

/// Why a workspace could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkspaceError {
    /// The handle is unknown or has expired.
    #[error(
        "workspace {0:?} is unknown or has expired (idle workspaces are removed after the TTL); \
         omit the workspace argument to get a new one"
    )]
    Unknown(String),
    /// The handle was minted by another replica: the request should have gone there.
    #[error(
        "workspace {handle:?} belongs to replica {owner:?}, but this call reached replica \
         {here:?}: its files live only on {owner:?}. The proxy in front of the replicas must \
         send each request to the replica named before the first '.' of its workspace handle \
         (see deploy/haproxy/haproxy.cfg); if it does, {owner:?} is down or was replaced and the \
         workspace is lost. Omit the workspace argument to start a new one"
    )]
    OtherReplica {
        /// The handle.
        handle: String,
        /// The replica that minted it.
        owner: String,
        /// This replica.
        here: String,
    },
    /// Too many workspaces are alive.
    #[error(
        "the server already holds {0} workspaces (max_workspaces); end idle sessions or retry later"
    )]
    Full(usize),
    /// The directory could not be created.
    #[error(
        "cannot create a workspace under {root}: {err}; check that --workspace-root is writable"
    )]
    Create {
        /// The root.
        root: String,
        /// The error.
        err: std::io::Error,
    },
}

impl Registry {
    /// A registry under `root` (created 0700 if missing) holding at most `max` workspaces, whose
    /// handles carry `replica`'s prefix.
    pub fn new(root: &Path, max: usize, replica: ReplicaId) -> anyhow::Result<Registry> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot create the workspace root {}: {e}; pick a writable directory with \
                     --workspace-root (in a pod, an emptyDir mounted at /tmp)",
                    root.display()
                )
            })?;
        let root = root.canonicalize()?;
        Ok(Registry {
            inner: Arc::new(Inner {
                root,
                max,
                replica,
                live: AtomicUsize::new(0),
                janitor: Mutex::new(None),
            }),
            stateless: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// From now on, removes dropped workspaces on a thread of its own instead of wherever the last
    /// reference went (which, in the server, is its event loop). [`Registry::finish`] waits for
    /// the removals still queued. Without this, removal is synchronous.
    pub fn remove_in_background(&self) -> std::io::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel::<(PathBuf, String)>();
        let thread = std::thread::Builder::new()
            .name("sandlock-janitor".into())
            .spawn(move || {
                for (dir, handle) in rx {
                    remove_workspace(&dir, &handle);
                }
            })?;
        if let Ok(mut j) = self.inner.janitor.lock() {
            *j = Some(Janitor { tx, thread });
        }
        Ok(())
    }

    /// Waits until every workspace dropped so far is removed, and goes back to removing them in
    /// place.
    pub fn finish(&self) {
        let j = self.inner.janitor.lock().ok().and_then(|mut j| j.take());
        if let Some(Janitor { tx, thread }) = j {
            drop(tx);
            let _ = thread.join();
        }
    }

    /// The (canonical) root.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Workspaces alive now.
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Creates a fresh workspace. A session's is owned by the session; a stateless one is kept in
    /// the registry until its TTL runs out.
    ///
    /// At `max_workspaces`, the least recently used stateless workspace that no run is using is
    /// removed to make room (stateless clients that never pass a handle back would otherwise fill
    /// the server until their workspaces expire); sessions' workspaces are never evicted.
    pub fn create(&self, session: bool) -> Result<Arc<Workspace>, WorkspaceError> {
        let ws = self.make(true)?;
        self.adopt(&ws, session);
        Ok(ws)
    }

    /// Creates a workspace for the pool of ready workspaces: nobody's yet (see
    /// [`Registry::adopt`]). At `max_workspaces` it fails rather than evict anything.
    pub fn create_unowned(&self) -> Result<Arc<Workspace>, WorkspaceError> {
        self.make(false)
    }

    /// Hands a workspace made by [`Registry::create_unowned`] to a session, or to stateless
    /// requests (it is then kept until its TTL runs out).
    pub fn adopt(&self, ws: &Arc<Workspace>, session: bool) {
        ws.touch();
        if !session {
            if let Ok(mut m) = self.stateless.lock() {
                m.insert(ws.handle.clone(), ws.clone());
            }
        }
    }

    fn make(&self, evict: bool) -> Result<Arc<Workspace>, WorkspaceError> {
        use std::os::unix::fs::DirBuilderExt;
        let live = self.inner.live.fetch_add(1, Ordering::Relaxed);
        if live >= self.inner.max {
            self.inner.live.fetch_sub(1, Ordering::Relaxed);
            if !evict || !self.evict_one() {
                return Err(WorkspaceError::Full(self.inner.max));
            }
            return self.make(evict);
        }
        let fail = |err| {
            self.inner.live.fetch_sub(1, Ordering::Relaxed);
            WorkspaceError::Create {
                root: self.inner.root.display().to_string(),
                err,
            }
        };
        let handle = self.inner.replica.new_handle().map_err(fail)?;
        let dir = self.inner.root.join(&handle);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(fail)?;
        let files = match Beneath::open(&dir) {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(fail(e));
            }
        };
        Ok(Arc::new(Workspace {
            handle,
            dir,
            files,
            last_used: Mutex::new(Instant::now()),
            sandboxes: [OnceLock::new(), OnceLock::new(), OnceLock::new()],
            kept_sandbox: OnceLock::new(),
            zygote: Mutex::new(None),
            persistent: Mutex::new(None),
            persistent_turn: tokio::sync::Mutex::new(()),
            python_calls: AtomicU32::new(0),
            fork_starting: AtomicBool::new(false),
            commands: Commands::default(),
            registry: self.inner.clone(),
        }))
    }

    /// The stateless workspace named `handle`.
    pub fn get(&self, handle: &str) -> Result<Arc<Workspace>, WorkspaceError> {
        if let Some(owner) = self.inner.replica.other_owner(handle) {
            return Err(WorkspaceError::OtherReplica {
                handle: handle.into(),
                owner: owner.into(),
                here: self.inner.replica.to_string(),
            });
        }
        let m = self
            .stateless
            .lock()
            .map_err(|_| WorkspaceError::Unknown(handle.into()))?;
        let ws = m
            .get(handle)
            .cloned()
            .ok_or_else(|| WorkspaceError::Unknown(handle.into()))?;
        ws.touch();
        Ok(ws)
    }

    /// Forgets stateless workspaces idle for longer than `ttl` (their directories go when the last
    /// run using them ends). Returns how many expired.
    pub fn expire(&self, ttl: Duration) -> usize {
        let now = Instant::now();
        let Ok(mut m) = self.stateless.lock() else {
            return 0;
        };
        let before = m.len();
        m.retain(|_, ws| {
            let keep = ws
                .last_used
                .lock()
                .map(|t| now.duration_since(*t) < ttl)
                .unwrap_or(false);
            if !keep {
                ws.commands
                    .stop_all("killed: its stateless workspace expired (unused for the TTL)");
            }
            keep
        });
        before - m.len()
    }

    /// Removes the least recently used idle stateless workspace; false if there is none.
    fn evict_one(&self) -> bool {
        let Ok(mut m) = self.stateless.lock() else {
            return false;
        };
        let victim = m
            .iter()
            .filter(|(_, ws)| Arc::strong_count(ws) == 1)
            .min_by_key(|(_, ws)| {
                ws.last_used
                    .lock()
                    .map(|t| *t)
                    .unwrap_or_else(|_| Instant::now())
            })
            .map(|(h, _)| h.clone());
        match victim {
            Some(h) => {
                tracing::info!(workspace = %short(&h), "max_workspaces reached: removed the least recently used stateless workspace");
                // Dropping the last reference removes the directory and frees the slot.
                m.remove(&h).is_some()
            }
            None => false,
        }
    }

    /// Forgets every stateless workspace (at shutdown), killing their background commands.
    pub fn clear(&self) {
        if let Ok(mut m) = self.stateless.lock() {
            for ws in m.values() {
                ws.commands.stop_all("killed: the server shut down");
            }
            m.clear();
        }
    }
}

/// A handle or session id cut after the replica's prefix and 8 characters of its random part:
/// enough to follow it through the logs without writing the whole capability down.
pub fn short(id: &str) -> &str {
    let mut start = id.find('.').map_or(0, |i| i + 1);
    if id[start..].starts_with(crate::replica::HANDLE_KIND) {
        start += crate::replica::HANDLE_KIND.len();
    }
    let n = id.len().min(start + 8);
    id.get(..n).unwrap_or(id)
}

/// Removes a directory tree the sandbox may have made awkward (directories without write or
/// search permission). Symlinks are removed, never followed.
pub fn remove_tree(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            open_up(dir);
            std::fs::remove_dir_all(dir)
        }
    }
}

fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                open_up(&e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("sandlock-mcp-reg-{name}-{}", std::process::id()))
    }

    fn here() -> ReplicaId {
        ReplicaId::parse("here").unwrap()
    }

    #[test]
    fn a_session_workspace_is_removed_when_dropped() {
        let r = Registry::new(&root("drop"), 10, here()).unwrap();
        let ws = r.create(true).unwrap();
        let dir = ws.dir.clone();
        assert!(dir.is_dir());
        assert!(ws.handle.starts_with("here.ws-") && ws.handle.len() == 40);
        assert_eq!(dir.file_name().unwrap().to_str(), Some(ws.handle.as_str()));
        assert_eq!(r.live(), 1);
        drop(ws);
        assert!(!dir.exists());
        assert_eq!(r.live(), 0);
        let _ = std::fs::remove_dir_all(r.root());
    }

    #[test]
    fn background_removal_is_complete_after_finish() {
        let r = Registry::new(&root("bg"), 10, here()).unwrap();
        r.remove_in_background().unwrap();
        let ws = r.create(true).unwrap();
        std::fs::create_dir_all(ws.dir.join("a/b")).unwrap();
        std::fs::write(ws.dir.join("a/b/f"), "x").unwrap();
        let dir = ws.dir.clone();
        drop(ws);
        assert_eq!(r.live(), 0);
        r.finish();
        assert!(!dir.exists());
        // After finish, removal is in place again.
        let ws = r.create(true).unwrap();
        let dir = ws.dir.clone();
        drop(ws);
        assert!(!dir.exists());
        let _ = std::fs::remove_dir_all(r.root());
    }

    #[test]
    fn stateless_workspaces_expire_after_the_ttl_and_a_fresh_one_does_not() {
        let r = Registry::new(&root("ttl"), 10, here()).unwrap();
        let old = r.create(false).unwrap();
        let (old_handle, old_dir) = (old.handle.clone(), old.dir.clone());
        drop(old);
        std::thread::sleep(Duration::from_millis(50));
        let fresh = r.create(false).unwrap();
        assert_eq!(r.expire(Duration::from_millis(30)), 1);
        assert!(!old_dir.exists());
        assert!(matches!(
            r.get(&old_handle),
            Err(WorkspaceError::Unknown(_))
        ));
        assert!(r.get(&fresh.handle).is_ok());
        let _ = std::fs::remove_dir_all(r.root());
    }

    #[test]
    fn a_handle_of_another_replica_is_refused_naming_its_owner() {
        let r = Registry::new(&root("other"), 10, here()).unwrap();
        let theirs = ReplicaId::parse("there").unwrap().new_handle().unwrap();
        match r.get(&theirs) {
            Err(e @ WorkspaceError::OtherReplica { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("belongs to replica \"there\"")
                        && text.contains("reached replica \"here\""),
                    "{text}"
                );
            }
            other => panic!("expected OtherReplica, got {other:?}"),
        }
        // Controls: an unknown handle of this replica, and one without a prefix, are unknown; a
        // handle this replica minted is found.
        let ours = here().new_handle().unwrap();
        assert!(matches!(r.get(&ours), Err(WorkspaceError::Unknown(_))));
        assert!(matches!(
            r.get("ws-00000000000000000000000000000000"),
            Err(WorkspaceError::Unknown(_))
        ));
        let ws = r.create(false).unwrap();
        assert!(r.get(&ws.handle).is_ok());
        let _ = std::fs::remove_dir_all(r.root());
    }

    #[test]
    fn max_workspaces_is_enforced() {
        let r = Registry::new(&root("max"), 2, here()).unwrap();
        let _a = r.create(true).unwrap();
        let _b = r.create(true).unwrap();
        assert!(matches!(r.create(true), Err(WorkspaceError::Full(2))));
        drop(_a);
        assert!(r.create(true).is_ok());
        let _ = std::fs::remove_dir_all(r.root());
    }

    #[test]
    fn a_full_registry_evicts_the_oldest_idle_stateless_workspace_but_no_session() {
        let r = Registry::new(&root("evict"), 2, here()).unwrap();
        let session = r.create(true).unwrap();
        let old = r.create(false).unwrap().handle.clone();
        std::thread::sleep(Duration::from_millis(5));
        let newer = r.create(false).unwrap();
        assert!(
            r.get(&old).is_err(),
            "the oldest stateless workspace should have gone"
        );
        assert!(r.get(&newer.handle).is_ok());
        // Nothing idle to evict: the session and a stateless workspace in use.
        assert!(matches!(r.create(false), Err(WorkspaceError::Full(2))));
        assert!(session.dir.is_dir());
        let _ = std::fs::remove_dir_all(r.root());
    }

    #[test]
    fn an_unowned_workspace_evicts_nothing_and_is_adopted_by_whoever_takes_it() {
        let r = Registry::new(&root("unowned"), 2, here()).unwrap();
        let idle = r.create(false).unwrap().handle.clone();
        let pooled = r.create_unowned().unwrap();
        // Minted like any other: the proxy routes a pooled workspace's calls by this prefix.
        assert!(pooled.handle.starts_with("here.ws-") && pooled.handle.len() == 40);
        // Full: a pooled workspace never evicts a stateless one to make room; a call does.
        assert!(matches!(r.create_unowned(), Err(WorkspaceError::Full(2))));
        assert!(r.get(&idle).is_ok());
        // Not reachable by its handle until a stateless request adopts it.
        assert!(r.get(&pooled.handle).is_err());
        r.adopt(&pooled, false);
        assert!(r.get(&pooled.handle).is_ok());
        let _ = std::fs::remove_dir_all(r.root());
    }

    #[test]
    fn logs_show_the_replica_and_eight_random_characters() {
        let h = "sandlock-0.ws-0123456789abcdef0123456789abcdef";
        assert_eq!(short(h), "sandlock-0.ws-01234567");
        assert_eq!(short("r1.0123456789abcdef0123456789abcdef"), "r1.01234567");
        assert_eq!(short("c94b661c-a6f0-4f63"), "c94b661c");
        assert_eq!(short("stdio"), "stdio");
    }

    #[test]
    fn remove_tree_copes_with_unwritable_directories() {
        use std::os::unix::fs::PermissionsExt;
        let d = root("perm");
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::fs::write(d.join("a/b/f"), "x").unwrap();
        std::fs::set_permissions(d.join("a"), std::fs::Permissions::from_mode(0o000)).unwrap();
        remove_tree(&d).unwrap();
        assert!(!d.exists());
    }
}
