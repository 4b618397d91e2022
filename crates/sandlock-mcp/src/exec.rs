//! Running code for the execution tools: the per-workspace policy, the command of a call, the
//! concurrency gate, and the [`Executor`] that holds them with the configuration and the Python
//! interpreter. Driving a run is [`crate::drive`]'s; the interpreters a workspace keeps (the fork
//! server, the persistent interpreter) are [`crate::warm`]'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use sandlock_core::{Command, Outcome, Policy, Sandbox, Stdio};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ExecTool, Mounts};
use crate::node::{Node, Script};
use crate::python::{Interpreter, PYTHON_BOOTSTRAP, memfd_with};
use crate::warm::{Cell, Gone, Persistent, Zygote};
use crate::workspace::{Workspace, short};

/// The largest `execute_shell` command (the kernel's limit on one argument is 128 KiB).
pub const MAX_COMMAND: usize = 128 * 1024 - 1;

/// The policy for one tool in one workspace: the configured policy, plus the workspace (readable,
/// writable, the working directory and `HOME`), the runtime's own paths (`readable`: the Python
/// interpreter's, or Node's and its TypeScript runner's) and the workspace's `mounts` (VIRT ->
/// `SUBDIR[:ro]`, whose subdirectories are made here if missing).
pub fn workspace_policy(
    base: &Policy,
    tool: ExecTool,
    ws: &Path,
    readable: &[PathBuf],
    mounts: &Mounts,
) -> Policy {
    let mut p = base.clone();
    p.fs_writable.push(ws.to_path_buf());
    p.fs_readable.extend(readable.iter().cloned());
    for (virt, sub) in mounts {
        let (dir, ro) = match sub.strip_suffix(":ro") {
            Some(d) => (d, ":ro"),
            None => (sub.as_str(), ""),
        };
        let host = ws.join(dir);
        // A failure shows when the sandbox is made: the mount's host directory is missing.
        let _ = std::fs::create_dir_all(&host);
        p.fs_mount
            .insert(virt.clone(), format!("{}{ro}", host.display()));
    }
    p.cwd = Some(ws.to_path_buf());
    let ws_s = ws.display().to_string();
    p.env.entry("HOME".into()).or_insert_with(|| ws_s.clone());
    p.env.entry("TMPDIR".into()).or_insert(ws_s);
    if tool == ExecTool::Python {
        p.env
            .entry("PYTHONDONTWRITEBYTECODE".into())
            .or_insert_with(|| "1".into());
        p.env
            .entry("PYTHONUNBUFFERED".into())
            .or_insert_with(|| "1".into());
    }
    p
}

/// The sandbox of the interpreters `ws` keeps: the Python policy in that workspace, without a
/// timeout (they live across calls, and each call has its own deadline). Otherwise it is the
/// policy of a fresh run in `ws`, its `mounts` and private `/tmp` included, so that a forked call
/// or a persistent cell sees the same files as a fresh run.
fn kept_sandbox(
    policy: &Policy,
    mounts: &Mounts,
    python: &Interpreter,
    ws: &Workspace,
) -> Result<Arc<Sandbox>, String> {
    ws.kept_sandbox(|| {
        let mut p = workspace_policy(policy, ExecTool::Python, &ws.dir, &python.readable, mounts);
        p.timeout = None;
        Sandbox::new(p).map_err(|e| format!("cannot set up the sandbox: {e}"))
    })
}

/// Starts `ws`'s fork server and installs it (it stops after `idle` without calls; never, for
/// `None`).
fn start_fork_server(
    policy: &Policy,
    mounts: &Mounts,
    python: &Interpreter,
    ws: &Workspace,
    idle: Option<Duration>,
) -> Result<Arc<Zygote>, String> {
    let sandbox = kept_sandbox(policy, mounts, python, ws)?;
    let z = Zygote::start(&sandbox, python, idle)
        .map_err(|e| format!("cannot start the workspace's Python: {e}"))?;
    ws.set_zygote(z.clone());
    Ok(z)
}

/// A persistent cell's result.
pub struct PersistentRun {
    /// The cell.
    pub cell: Cell,
    /// Why the state of earlier cells is gone, when the interpreter that held it ended by itself
    /// (a limit, a crash) and this cell started a new one.
    pub lost: Option<String>,
}

/// What a call runs.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// Python code (passed on descriptor 3).
    Python(&'a str),
    /// A command line for `/bin/sh -c`.
    Shell(&'a str),
    /// A JavaScript or TypeScript snippet, saved in the workspace at this relative path.
    Node(Script, &'a str),
}

impl Source<'_> {
    /// Whose policy it runs under.
    pub fn tool(&self) -> ExecTool {
        match self {
            Source::Python(_) => ExecTool::Python,
            Source::Shell(_) => ExecTool::Shell,
            Source::Node(..) => ExecTool::Node,
        }
    }
}

/// Builds the command for a call.
fn command(
    source: Source<'_>,
    python: &Interpreter,
    node: Option<&Node>,
    stdin: Option<String>,
    timeout: Duration,
) -> Result<Command, String> {
    let cmd = match source {
        Source::Python(code) => {
            let fd = memfd_with(code.as_bytes())
                .map_err(|e| format!("cannot pass the code to the interpreter: {e}"))?;
            Command::new([
                python.path.as_os_str(),
                "-c".as_ref(),
                PYTHON_BOOTSTRAP.as_ref(),
            ])
            .pass_fd(fd, 3)
        }
        Source::Shell(code) => {
            if code.len() > MAX_COMMAND {
                return Err(format!(
                    "the command is {} bytes; the limit is {MAX_COMMAND} (write a script with \
                     write_file and run `sh script.sh`)",
                    code.len()
                ));
            }
            if code.contains('\0') {
                return Err("the command contains a NUL byte".into());
            }
            Command::new(["/bin/sh", "-c", code])
        }
        Source::Node(script, file) => match node {
            Some(n) => n.command(script, file)?,
            None => return Err(NO_NODE.into()),
        },
    };
    let cmd = match stdin {
        Some(s) => cmd.stdin(Stdio::Bytes(s.into_bytes())),
        None => cmd.stdin(Stdio::Null),
    };
    Ok(cmd.timeout(timeout))
}

/// The answer to JavaScript or TypeScript on a server without Node.js.
const NO_NODE: &str = "Node.js is not installed on this server, so javascript and typescript \
                       cannot run; ask the operator to install it (e.g. apt-get install nodejs, or \
                       --node PATH). language=python works meanwhile";

/// Why a call did not get to run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GateError {
    /// Every slot is busy and the queue is full.
    #[error(
        "server busy: {running} runs in progress and {queued} waiting (max_concurrent={running}, \
         queue_depth={queued}); retry in a few seconds"
    )]
    Busy {
        /// Runs in progress.
        running: usize,
        /// Calls waiting.
        queued: usize,
    },
    /// The server is shutting down.
    #[error("the server is shutting down and takes no new runs; retry against another replica")]
    ShuttingDown,
}

/// A concurrency limit with a bounded queue.
pub struct Gate {
    slots: Semaphore,
    max: usize,
    depth: usize,
    waiting: AtomicUsize,
    running: AtomicUsize,
    calls: AtomicUsize,
    /// When the gate was made, and when a run last entered (µs after that).
    born: std::time::Instant,
    last_entry: AtomicU64,
    /// Cancelled when the server starts shutting down: no new runs enter.
    pub closing: CancellationToken,
    /// Cancelled when the grace period is over: runs in progress are killed.
    pub kill: CancellationToken,
}

/// A held slot; releases it when dropped.
pub struct Slot<'a> {
    _permit: SemaphorePermit<'a>,
    gate: &'a Gate,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.gate.running.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Waiting<'a>(&'a AtomicUsize);
impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gate {
    /// `max` runs at once, `depth` more may wait.
    pub fn new(max: usize, depth: usize) -> Gate {
        Gate {
            slots: Semaphore::new(max),
            max,
            depth,
            waiting: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            born: std::time::Instant::now(),
            last_entry: AtomicU64::new(0),
            closing: CancellationToken::new(),
            kill: CancellationToken::new(),
        }
    }

    /// Runs in progress.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Calls waiting for a slot.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Whether no run is in progress or waiting, and none has entered for `quiet`.
    pub fn quiet_for(&self, quiet: Duration) -> bool {
        let last = Duration::from_micros(self.last_entry.load(Ordering::Relaxed));
        self.running() == 0
            && self.queued() == 0
            && self.born.elapsed().saturating_sub(last) >= quiet
    }

    /// Execution calls in progress, from their arrival until their result is built (a run ends a
    /// little before its result is ready; shutdown waits for the result).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Counts a call in progress until the returned guard is dropped.
    pub fn call(&self) -> impl Drop + '_ {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Waiting(&self.calls)
    }

    /// Waits for a slot, or refuses at once if the queue is full or the server is closing.
    pub async fn enter(&self) -> Result<Slot<'_>, GateError> {
        if self.closing.is_cancelled() {
            return Err(GateError::ShuttingDown);
        }
        let permit = match self.slots.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.depth {
                    self.waiting.fetch_sub(1, Ordering::Relaxed);
                    return Err(GateError::Busy {
                        running: self.max,
                        queued: self.depth,
                    });
                }
                let _w = Waiting(&self.waiting);
                tokio::select! {
                    p = self.slots.acquire() => p.map_err(|_| GateError::ShuttingDown)?,
                    _ = self.closing.cancelled() => return Err(GateError::ShuttingDown),
                }
            }
        };
        self.running.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.born.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_entry.store(now, Ordering::Relaxed);
        Ok(Slot {
            _permit: permit,
            gate: self,
        })
    }
}

/// Everything the execution tools share.
pub struct Executor {
    /// The effective configuration.
    pub config: Config,
    /// The Python interpreter.
    pub python: Interpreter,
    /// Node.js, when the host has it.
    pub node: Option<Node>,
    /// The concurrency gate.
    pub gate: Gate,
}

impl Executor {
    /// The wall-clock limit of a call of `tool`: the one the caller asked for (`timeout_s`), or
    /// the tool's default. The error, in words, is for a value that is not a number of seconds
    /// above 0 and at most `max_timeout`.
    pub fn timeout(&self, tool: ExecTool, timeout_s: Option<f64>) -> Result<Duration, String> {
        let cfg = &self.config;
        match timeout_s {
            None => Ok(cfg
                .policy(tool)
                .timeout
                .map_or(Duration::from_secs(30), |s| s.duration())),
            Some(s)
                if s.is_finite() && s > 0.0 && Duration::from_secs_f64(s) <= cfg.max_timeout =>
            {
                Ok(Duration::from_secs_f64(s))
            }
            Some(s) => Err(format!(
                "timeout_s={s} is not allowed: give a number of seconds above 0 and at most {} \
                 (the server's max_timeout)",
                cfg.max_timeout.as_secs_f64()
            )),
        }
    }

    /// The command for a call (`invalid` in words when it cannot be one).
    pub fn command(
        &self,
        source: Source<'_>,
        stdin: Option<String>,
        timeout: Duration,
    ) -> Result<Command, String> {
        command(source, &self.python, self.node.as_ref(), stdin, timeout)
    }

    /// The policy of `tool` in the workspace directory `ws`.
    pub fn policy(&self, tool: ExecTool, ws: &Path) -> Policy {
        let readable = match tool {
            ExecTool::Python => self.python.readable.as_slice(),
            ExecTool::Shell => &[],
            ExecTool::Node => self.node.as_ref().map_or(&[][..], |n| &n.readable),
        };
        workspace_policy(
            self.config.policy(tool),
            tool,
            ws,
            readable,
            &self.config.mounts,
        )
    }

    /// The sandbox for `tool` in `ws` (built once per workspace and tool).
    pub fn sandbox(&self, tool: ExecTool, ws: &Workspace) -> Result<Arc<Sandbox>, String> {
        ws.sandbox(tool, || {
            Sandbox::new(self.policy(tool, &ws.dir))
                .map_err(|e| format!("cannot set up the sandbox: {e}"))
        })
    }

    /// Runs Python `code` in `ws` by forking the workspace's fork server (see `crate::warm`), if
    /// it has one ready. `None`: it has none (yet, or any more), and the call is to run fresh.
    pub async fn run_forked(
        &self,
        ws: &Workspace,
        code: &str,
        stdin: Option<String>,
        timeout: Duration,
        cancel: &CancellationToken,
        cancel_why: impl Fn() -> String,
    ) -> Option<Outcome> {
        let z = ws.live_zygote()?;
        let cap = self.config.python_policy.output_cap().0;
        let stdin = stdin.map(String::into_bytes);
        z.run(code.as_bytes(), stdin, timeout, cap, cancel, cancel_why)
            .await
            .ok()
    }

    /// Runs a cell in `ws`'s persistent interpreter, starting one if it has none alive. The caller
    /// holds `ws.persistent_turn`. `Err`: no interpreter could be started (words).
    pub async fn run_persistent(
        &self,
        ws: &Workspace,
        code: &str,
        stdin: Option<String>,
        timeout: Duration,
        cancel: &CancellationToken,
        cancel_why: impl Fn() -> String,
    ) -> Result<PersistentRun, String> {
        let cap = self.config.python_policy.output_cap().0;
        let stdin = stdin.map(String::into_bytes);
        let mut lost = None;
        let mut replace = false;
        // An interpreter that ends just as a cell is sent gets one replacement.
        for _ in 0..2 {
            let p = match ws.persistent() {
                Some(p) if p.ended().is_none() && !replace => p,
                previous => {
                    if let Some(why) = previous.and_then(|p| p.ended()) {
                        lost.get_or_insert(why);
                    }
                    let sandbox = kept_sandbox(
                        &self.config.python_policy,
                        &self.config.mounts,
                        &self.python,
                        ws,
                    )?;
                    let p = Persistent::start(&sandbox, &self.python)
                        .map_err(|e| format!("cannot start the persistent interpreter: {e}"))?;
                    ws.set_persistent(p.clone());
                    p
                }
            };
            match p
                .run(
                    code.as_bytes(),
                    stdin.clone(),
                    timeout,
                    cap,
                    cancel,
                    &cancel_why,
                )
                .await
            {
                Ok(cell) => return Ok(PersistentRun { cell, lost }),
                Err(Gone) => {
                    // Ended, or its control socket failed before its end was reported: either
                    // way its state is out of reach.
                    lost = Some(p.ended().unwrap_or_else(|| {
                        p.stop("stopped taking cells");
                        "stopped taking cells".into()
                    }));
                    replace = true;
                }
            }
        }
        Err("the persistent interpreter ended twice before the cell reached it".into())
    }

    /// Makes `ws` a ready workspace for the pool (`crate::pool`): builds its sandbox and starts its
    /// fork server, which does not stop for being idle until the workspace is claimed. Returns once
    /// the fork server waits for calls.
    pub async fn ready_workspace(&self, ws: &Arc<Workspace>) -> Result<(), String> {
        // Building a sandbox (the Landlock ruleset, the seccomp program) is CPU work: on the
        // blocking pool, so that the event loop keeps serving calls meanwhile.
        let (policy, mounts, python, w) = (
            self.config.python_policy.clone(),
            self.config.mounts.clone(),
            self.python.clone(),
            ws.clone(),
        );
        tokio::task::spawn_blocking(move || kept_sandbox(&policy, &mounts, &python, &w).map(drop))
            .await
            .map_err(|e| format!("building the workspace's sandbox failed: {e}"))??;
        let z = start_fork_server(
            &self.config.python_policy,
            &self.config.mounts,
            &self.python,
            ws,
            None,
        )?;
        match tokio::time::timeout(READY_WITHIN, z.started()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err("the workspace's Python fork server ended as it started".into()),
            Err(_) => Err(format!(
                "the workspace's Python fork server did not start within {} s",
                READY_WITHIN.as_secs()
            )),
        }
    }

    /// Stops `ws`'s persistent interpreter (`reset_python`); its state is gone, and the next
    /// persistent cell starts a new one. True when a live one was stopped.
    pub fn reset_python(&self, ws: &Workspace) -> bool {
        ws.take_persistent().is_some_and(|p| {
            let alive = p.ended().is_none();
            p.stop("was stopped by reset_python");
            alive
        })
    }

    /// Called for a Python call that runs fresh in fork mode: from a workspace's second such call
    /// on, starts its fork server in the background (once at a time), so that the calls after it
    /// fork. A workspace that makes a single call never pays for a fork server.
    pub fn prepare_fork_server(&self, ws: &Arc<Workspace>) {
        if ws.python_calls.fetch_add(1, Ordering::Relaxed) == 0
            || ws.fork_starting.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let weak = Arc::downgrade(ws);
        let policy = self.config.python_policy.clone();
        let mounts = self.config.mounts.clone();
        let python = self.python.clone();
        let idle = self.config.fork_idle;
        tokio::spawn(async move {
            // After this call's answer is on its way: starting an interpreter is 10-20 ms of CPU.
            tokio::time::sleep(FORK_START_DELAY).await;
            let Some(ws) = weak.upgrade() else { return };
            if let Err(e) = start_fork_server(&policy, &mounts, &python, &ws, Some(idle)) {
                tracing::warn!(
                    workspace = %short(&ws.handle),
                    error = %e,
                    "no fork server for this workspace; its calls run fresh interpreters"
                );
            }
            ws.fork_starting.store(false, Ordering::Release);
        });
    }
}

/// How long after a call a workspace's fork server is started.
const FORK_START_DELAY: Duration = Duration::from_millis(10);

/// How long a pooled workspace's fork server may take to start.
const READY_WITHIN: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn gate_queues_up_to_its_depth_then_refuses() {
        let g = Arc::new(Gate::new(1, 1));
        let first = g.enter().await.unwrap();
        let g2 = g.clone();
        let queued = tokio::spawn(async move { g2.enter().await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert_eq!(g.queued(), 1);
        let e = g.enter().await.err().unwrap();
        assert!(e.to_string().starts_with("server busy"), "{e}");
        drop(first);
        queued.await.unwrap().unwrap();
        assert_eq!((g.running(), g.queued()), (0, 0));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_gate_is_quiet_once_no_run_has_entered_for_a_while() {
        let g = Gate::new(2, 2);
        assert!(g.quiet_for(Duration::ZERO));
        let slot = g.enter().await.unwrap();
        assert!(!g.quiet_for(Duration::ZERO), "a run is in progress");
        drop(slot);
        assert!(
            !g.quiet_for(Duration::from_secs(60)),
            "a run entered just now"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(g.quiet_for(Duration::from_millis(20)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn closing_gate_refuses_new_runs() {
        let g = Gate::new(1, 1);
        g.closing.cancel();
        assert!(matches!(g.enter().await, Err(GateError::ShuttingDown)));
    }
}
