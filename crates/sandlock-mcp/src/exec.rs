//! Running code: the per-workspace policy, the Python interpreter's paths, the concurrency gate, and
//! driving a sandbox from tokio without a thread per run.
//!
//! A run is driven on the server's own event loop: [`sandlock_core::Running::fd`] (an epoll fd) is
//! registered with tokio through [`AsyncFd`], and [`sandlock_core::Running::next_wakeup`] becomes a
//! timer. Each wake-up calls `step` with a zero wait, so no worker thread ever blocks on a sandbox.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use sandlock_core::{Command, Outcome, Policy, Reason, Sandbox, SandboxError, Stdio};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ExecTool};
use crate::workspace::Workspace;

/// Reads the code from descriptor 3 (so that its size is not bound by the argument limit), runs it
/// as `__main__`, and prints an uncaught exception the way `python -c` would (`File "<string>"`),
/// with the lines of the submitted code and without this bootstrap's frame.
///
/// Start-up cost matters here (it is on every call's path), so the bootstrap avoids two costly
/// things: `linecache` and `traceback` are imported only when an exception is printed (importing
/// them costs more than the rest of the bootstrap), and the code is given to `exec` as a string,
/// not through the `compile()` builtin, whose first call builds CPython's AST types (measured at
/// 1.2 ms, more than everything else the bootstrap does).
pub(crate) const PYTHON_BOOTSTRAP: &str = "import sys\n\
with open(3,encoding='utf-8',closefd=True) as _f: _c=_f.read()\n\
sys.argv=['-c']\n\
del _f\n\
try: exec(_c,{'__name__':'__main__','__builtins__':__builtins__})\n\
except SystemExit: raise\n\
except BaseException as _e: import linecache as _l,traceback as _t; \
_l.cache['<string>']=(len(_c),None,_c.splitlines(True),'<string>'); \
_t.print_exception(type(_e),_e,_e.__traceback__.tb_next); sys.exit(1)\n";

/// The largest `execute_shell` command (the kernel's limit on one argument is 128 KiB).
pub const MAX_COMMAND: usize = 128 * 1024 - 1;

/// The Python interpreter and the paths it needs to read.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// The executable (absolute).
    pub path: PathBuf,
    /// Its version, as `sys.version` says.
    pub version: String,
    /// Prefixes, site-packages and `sys.path` directories that become readable.
    pub readable: Vec<PathBuf>,
}

impl Interpreter {
    /// Asks `python` (a path or a name in `PATH`) where it lives. This runs the operator's
    /// interpreter, unsandboxed, once at start-up, with a fixed script.
    pub fn discover(python: &Path, workspace_root: &Path) -> anyhow::Result<Interpreter> {
        let script = "import sys, site, json, os\n\
            paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]\n\
            try: paths += site.getsitepackages()\n\
            except Exception: pass\n\
            paths += [p for p in sys.path if p]\n\
            print(json.dumps({'exe': sys.executable, 'real': os.path.realpath(sys.executable), 'version': sys.version.split()[0], 'paths': paths}))\n";
        let out = std::process::Command::new(python)
            .args(["-I", "-c", script])
            .env_remove("PYTHONPATH")
            .current_dir("/")
            .output()
            .with_context(|| {
                format!(
                    "cannot run the Python interpreter {:?}; set [python] interpreter or --python \
                     to an installed python3",
                    python.display().to_string()
                )
            })?;
        if !out.status.success() {
            bail!(
                "the Python interpreter {:?} failed to report its paths ({}): {}",
                python.display().to_string(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        #[derive(serde::Deserialize)]
        struct Report {
            exe: PathBuf,
            real: PathBuf,
            version: String,
            paths: Vec<PathBuf>,
        }
        let r: Report = serde_json::from_slice(&out.stdout)
            .context("the Python interpreter printed something unexpected")?;
        // Run `sys.executable`, not the real file behind it: a venv's bin/python is a symlink, and
        // Python finds its venv from the path it was started by. A pyenv shim (a shell script)
        // is replaced by the interpreter it picks.
        let exe = if r.exe.is_absolute() {
            r.exe.clone()
        } else {
            which(python).unwrap_or_else(|| r.real.clone())
        };
        let mut readable: Vec<PathBuf> = Vec::new();
        let candidates = r.paths.iter().cloned().chain([exe.clone(), r.real.clone()]);
        for p in candidates {
            let Ok(real) = p.canonicalize() else { continue };
            // "/" or an ancestor of the workspace root would expose every workspace.
            if real == Path::new("/") || workspace_root.starts_with(&real) {
                tracing::warn!(
                    path = %real.display(),
                    "not granting this Python path: it contains the workspace root"
                );
                continue;
            }
            if !readable.iter().any(|q| real.starts_with(q)) {
                readable.retain(|q| !q.starts_with(&real));
                readable.push(real);
            }
        }
        Ok(Interpreter {
            path: exe,
            version: r.version,
            readable,
        })
    }
}

fn which(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return std::path::absolute(p).ok();
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
}

/// The policy for one tool in one workspace: the configured policy, plus the workspace (readable,
/// writable, the working directory and `HOME`) and, for Python, the interpreter's paths.
pub fn workspace_policy(
    base: &Policy,
    tool: ExecTool,
    ws: &Path,
    python: Option<&Interpreter>,
) -> Policy {
    let mut p = base.clone();
    p.fs_writable.push(ws.to_path_buf());
    p.cwd = Some(ws.to_path_buf());
    let ws_s = ws.display().to_string();
    p.env.entry("HOME".into()).or_insert_with(|| ws_s.clone());
    p.env.entry("TMPDIR".into()).or_insert(ws_s);
    if tool == ExecTool::Python {
        if let Some(py) = python {
            p.fs_readable.extend(py.readable.iter().cloned());
        }
        p.env
            .entry("PYTHONDONTWRITEBYTECODE".into())
            .or_insert_with(|| "1".into());
        p.env
            .entry("PYTHONUNBUFFERED".into())
            .or_insert_with(|| "1".into());
    }
    p
}

/// Builds the command for a call.
pub fn command(
    tool: ExecTool,
    python: &Interpreter,
    code: &str,
    stdin: Option<String>,
    timeout: Duration,
) -> Result<Command, String> {
    let cmd = match tool {
        ExecTool::Python => {
            let fd = memfd_with(code.as_bytes())
                .map_err(|e| format!("cannot pass the code to the interpreter: {e}"))?;
            Command::new([
                python.path.as_os_str(),
                "-c".as_ref(),
                PYTHON_BOOTSTRAP.as_ref(),
            ])
            .pass_fd(fd, 3)
        }
        ExecTool::Shell => {
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
    };
    let cmd = match stdin {
        Some(s) => cmd.stdin(Stdio::Bytes(s.into_bytes())),
        None => cmd.stdin(Stdio::Null),
    };
    Ok(cmd.timeout(timeout))
}

pub(crate) fn memfd_with(data: &[u8]) -> std::io::Result<OwnedFd> {
    use std::io::{Seek, Write};
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create takes a C string literal and flags.
    let fd = unsafe { libc::memfd_create(c"sandlock-code".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor we own.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    f.write_all(data)?;
    f.rewind()?;
    Ok(OwnedFd::from(f))
}

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
        Ok(Slot {
            _permit: permit,
            gate: self,
        })
    }
}

/// A raw epoll descriptor, for registering a `Running` with tokio.
pub(crate) struct EpollFd(pub(crate) RawFd);
impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

pub(crate) fn still_readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one descriptor we hold, without waiting.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

/// Starts `cmd` in `sandbox` and drives it to completion on the tokio event loop. `cancel` (the
/// client cancelled, or the grace period ended) kills the run; its outcome is still returned.
pub async fn run(
    sandbox: &Sandbox,
    cmd: Command,
    cancel: &CancellationToken,
    cancel_why: impl Fn() -> String,
) -> Result<Outcome, sandlock_core::Error> {
    run_observed(sandbox, cmd, cancel, cancel_why, |_| {}).await
}

/// [`run`], calling `observe` after every step of the run (for example to take the output
/// captured so far with [`sandlock_core::Running::take_stdout`]).
pub async fn run_observed(
    sandbox: &Sandbox,
    cmd: Command,
    cancel: &CancellationToken,
    cancel_why: impl Fn() -> String,
    mut observe: impl FnMut(&mut sandlock_core::Running),
) -> Result<Outcome, sandlock_core::Error> {
    let mut running = sandbox.spawn(cmd)?;
    let io_err = |e: std::io::Error| {
        SandboxError::io(
            sandlock_core::Stage::Supervise,
            &e,
            "cannot register the sandbox with the server's event loop",
        )
    };
    // SAFETY: the epoll descriptor belongs to `running`, which outlives `afd` (dropped below,
    // before `into_outcome` consumes `running`), and it is never replaced while registered.
    let afd = unsafe { AsyncFd::register_with_interest(EpollFd(running.fd()), Interest::READABLE) }
        .map_err(|e| io_err(e.into()))?;
    let mut killed = false;
    loop {
        let done = running.step(Some(Duration::ZERO))?;
        observe(&mut running);
        if done {
            break;
        }
        let wake = running.next_wakeup().map(tokio::time::Instant::from_std);
        tokio::select! {
            r = afd.readable() => {
                let mut guard = r.map_err(io_err)?;
                // The inner epoll set may hold more events than one step handles; only wait for a
                // new edge once it is empty.
                if !still_readable(running.fd()) {
                    guard.clear_ready();
                }
            }
            _ = async { if let Some(w) = wake { tokio::time::sleep_until(w).await } }, if wake.is_some() => {}
            _ = cancel.cancelled(), if !killed => {
                running.kill(Reason::Signaled, cancel_why());
                killed = true;
            }
        }
    }
    drop(afd);
    let (outcome, residue) = running.into_outcome_and_residue();
    // Releasing the max_disk watch waits for a kernel grace period: not on the request path.
    tokio::task::spawn_blocking(move || drop(residue));
    Ok(outcome)
}

/// Everything the execution tools share.
pub struct Executor {
    /// The effective configuration.
    pub config: Config,
    /// The Python interpreter.
    pub python: Interpreter,
    /// The concurrency gate.
    pub gate: Gate,
}

impl Executor {
    /// The sandbox for `tool` in `ws` (built once per workspace and tool).
    pub fn sandbox(&self, tool: ExecTool, ws: &Workspace) -> Result<Arc<Sandbox>, String> {
        ws.sandbox(tool, || {
            let p = workspace_policy(self.config.policy(tool), tool, &ws.dir, Some(&self.python));
            Sandbox::new(p).map_err(|e| format!("cannot set up the sandbox: {e}"))
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
        let python = self.python.clone();
        let idle = self.config.fork_idle;
        tokio::spawn(async move {
            // After this call's answer is on its way: starting an interpreter is 10-20 ms of CPU.
            tokio::time::sleep(FORK_START_DELAY).await;
            let Some(ws) = weak.upgrade() else { return };
            let started = ws
                .fork_sandbox(|| {
                    let mut p = workspace_policy(&policy, ExecTool::Python, &ws.dir, Some(&python));
                    p.timeout = None;
                    Sandbox::new(p).map_err(|e| format!("cannot set up the sandbox: {e}"))
                })
                .and_then(|sandbox| {
                    crate::warm::Zygote::start(&sandbox, &python, idle)
                        .map_err(|e| format!("cannot start the workspace's Python: {e}"))
                });
            match started {
                Ok(z) => ws.set_zygote(z),
                Err(e) => tracing::warn!(
                    workspace = %crate::workspace::short(&ws.handle),
                    error = %e,
                    "no fork server for this workspace; its calls run fresh interpreters"
                ),
            }
            ws.fork_starting.store(false, Ordering::Release);
        });
    }
}

/// How long after a call a workspace's fork server is started.
const FORK_START_DELAY: Duration = Duration::from_millis(10);

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
    async fn closing_gate_refuses_new_runs() {
        let g = Gate::new(1, 1);
        g.closing.cancel();
        assert!(matches!(g.enter().await, Err(GateError::ShuttingDown)));
    }

    #[test]
    fn interpreter_paths_never_include_the_workspace_root() {
        let Ok(py) = Interpreter::discover(Path::new("python3"), Path::new("/tmp/sandlock-mcp"))
        else {
            eprintln!("skipped: no python3 in PATH");
            return;
        };
        assert!(py.path.is_absolute());
        assert!(!py.readable.is_empty());
        for p in &py.readable {
            assert!(
                !Path::new("/tmp/sandlock-mcp").starts_with(p),
                "{}",
                p.display()
            );
        }
    }
}
