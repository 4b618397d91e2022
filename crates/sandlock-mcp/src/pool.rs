//! The pool of ready workspaces: a new session's (or a new stateless workspace's) first
//! `execute_python` at the cost of a fork, not of an interpreter start.
//!
//! A new workspace's first call would start an interpreter, which costs about 13 ms of CPU, and its
//! fork server only comes after its second call (`crate::exec::Executor::prepare_fork_server`). So
//! the server keeps a few workspaces *made ahead of time*, each complete: its own directory, its
//! own sandbox built with its own path in the policy, and its own fork server started in that
//! sandbox and waiting. A session that needs a workspace takes one, and its first call forks.
//!
//! Nothing is shared between pooled workspaces, or with the workspace that takes one: the Landlock
//! domain of a fork server can only be narrowed from inside, never widened to a path it was not
//! started with, so a pooled fork server cannot be "bound" to a workspace later. It is started for
//! its workspace from the beginning, and the workspace is what the pool holds.
//!
//! - **Bounded**: at most `python.pool` ready workspaces (`--python-pool`; they count toward
//!   `max_workspaces`, and a refill never evicts another workspace).
//! - **Refilled in the background**, one workspace at a time (at most one interpreter start in
//!   progress, so at most one CPU), never while calls wait for a run slot, and, for up to
//!   [`REFILL_DEFER`], only once no run is in progress and none has entered for [`QUIET`]: a
//!   burst of new sessions takes ready workspaces without sharing the CPU with their refill.
//!   Under sustained load the pool empties, and new workspaces are made on the spot (their first
//!   call starts an interpreter, as without a pool). The sandbox is built on the blocking pool,
//!   off the event loop.
//! - **Cheap while idle**: a ready fork server sleeps on its control socket; its tree is sampled
//!   once a second. It does not stop for being idle while it waits in the pool; once taken, the
//!   workspace's `fork_idle` applies.
//! - **Dies with the server**: cleared at shutdown; and a fork server exits when the server's end
//!   of its control socket closes, which the kernel does if the server is killed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::exec::Executor;
use crate::workspace::{Registry, Workspace, WorkspaceError};

/// The ready workspaces.
pub struct Pool {
    target: usize,
    ready: Mutex<VecDeque<Arc<Workspace>>>,
    /// Notified when a workspace is taken (the filler refills).
    taken: tokio::sync::Notify,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What the pool reports to `/metrics`.
pub struct PoolStats {
    /// Ready workspaces now.
    pub ready: usize,
    /// How many it holds when full.
    pub target: usize,
    /// New workspaces that came from the pool.
    pub hits: u64,
    /// New workspaces made on the spot because the pool was empty (or off).
    pub misses: u64,
}

impl Pool {
    /// A pool that holds up to `target` ready workspaces (0: none).
    pub fn new(target: usize) -> Pool {
        Pool {
            target,
            ready: Mutex::new(VecDeque::new()),
            taken: tokio::sync::Notify::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Workspace>>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new workspace for a session (or a stateless request): a ready one from the pool when
    /// there is one, else one made now.
    pub fn new_workspace(
        &self,
        registry: &Registry,
        session: bool,
        fork_idle: Duration,
    ) -> Result<Arc<Workspace>, WorkspaceError> {
        if let Some(ws) = self.take() {
            // From now on it is an ordinary workspace, whose fork server stops when idle.
            if let Some(z) = ws.live_zygote() {
                z.set_idle(fork_idle);
            }
            registry.adopt(&ws, session);
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(ws);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        registry.create(session)
    }

    /// The oldest ready workspace whose fork server still runs (one that died is dropped).
    fn take(&self) -> Option<Arc<Workspace>> {
        let mut ready = self.ready();
        while let Some(ws) = ready.pop_front() {
            self.taken.notify_one();
            if ws.live_zygote().is_some() {
                return Some(ws);
            }
        }
        None
    }

    /// Counts and gauges for `/metrics`.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            ready: self.ready().len(),
            target: self.target,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Drops every ready workspace (at shutdown): their fork servers are stopped and their
    /// directories removed.
    pub fn clear(&self) {
        self.ready().clear();
    }

    /// Keeps the pool full until `stop` (or the server starts draining): one workspace at a time,
    /// and not while calls wait for a run slot.
    pub async fn fill(&self, exec: &Executor, registry: &Registry, stop: CancellationToken) {
        let closing = exec.gate.closing.clone();
        let mut failures: u32 = 0;
        loop {
            if stop.is_cancelled() || closing.is_cancelled() {
                return;
            }
            let missing = self.target.saturating_sub(self.ready().len());
            if missing == 0 {
                tokio::select! {
                    _ = self.taken.notified() => {}
                    _ = stop.cancelled() => return,
                    _ = closing.cancelled() => return,
                }
                continue;
            }
            // A pooled workspace is a full interpreter start, so it waits for a quiet moment:
            // always while calls wait for a slot; and while runs are in progress or have just
            // entered (a burst of new sessions), for up to REFILL_DEFER, so that a burst the pool
            // can hold is not slowed by its refill.
            let deferred_until = tokio::time::Instant::now() + REFILL_DEFER;
            while exec.gate.queued() > 0
                || (!exec.gate.quiet_for(QUIET) && tokio::time::Instant::now() < deferred_until)
            {
                tokio::select! {
                    _ = tokio::time::sleep(QUEUE_POLL) => {}
                    _ = stop.cancelled() => return,
                    _ = closing.cancelled() => return,
                }
            }
            let made = match registry.create_unowned() {
                Ok(ws) => tokio::select! {
                    r = exec.ready_workspace(&ws) => r.map(|()| ws).map_err(Some),
                    _ = stop.cancelled() => return,
                    _ = closing.cancelled() => return,
                },
                // At max_workspaces: wait for one to go, without a word (it is not a fault).
                Err(WorkspaceError::Full(_)) => Err(None),
                Err(e) => Err(Some(e.to_string())),
            };
            match made {
                Ok(ws) => {
                    failures = 0;
                    self.ready().push_back(ws);
                }
                Err(why) => {
                    failures = failures.saturating_add(1);
                    if let Some(why) = why
                        && failures == 1
                    {
                        tracing::warn!(error = %why, "cannot make a ready workspace for the pool; retrying with a back-off");
                    }
                    let wait = RETRY_FIRST
                        .saturating_mul(1 << failures.min(8))
                        .min(RETRY_MAX);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
        }
    }
}

/// How often the filler looks again while it waits for a quiet moment.
const QUEUE_POLL: Duration = Duration::from_millis(5);
/// How long after the last run entered the server counts as quiet.
const QUIET: Duration = Duration::from_millis(250);
/// How long a refill waits at most for a quiet moment (unless calls wait for a slot).
const REFILL_DEFER: Duration = Duration::from_secs(2);
/// The first wait after a failed refill, doubled after each failure in a row up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(30);
