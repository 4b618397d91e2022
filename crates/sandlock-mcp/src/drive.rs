//! Driving a sandbox from tokio without a thread per run.
//!
//! [`sandlock_core::Running::fd`] (an epoll fd) is registered with tokio through [`AsyncFd`], and
//! [`sandlock_core::Running::next_wakeup`] becomes a timer. Each wake-up calls `step` with a zero
//! wait, so no worker thread ever blocks on a sandbox. The workspace's fork server
//! (`crate::warm`) is supervised the same way.

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use sandlock_core::{Command, Outcome, Reason, Running, Sandbox, SandboxError};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

/// A raw epoll descriptor, for registering a `Running` with tokio.
pub(crate) struct EpollFd(pub(crate) RawFd);
impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Whether `fd` has something to read right now (without waiting).
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
    observe: impl FnMut(&mut Running),
) -> Result<Outcome, sandlock_core::Error> {
    let running = sandbox.spawn(cmd)?;
    Ok(supervise(running, cancel, cancel_why, observe).await?)
}

/// Drives a run already started to completion, as [`run_observed`] does (a background command
/// is started by the call that asks for it, and supervised by a task of its own).
pub async fn supervise(
    mut running: Running,
    cancel: &CancellationToken,
    cancel_why: impl Fn() -> String,
    mut observe: impl FnMut(&mut Running),
) -> Result<Outcome, SandboxError> {
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
