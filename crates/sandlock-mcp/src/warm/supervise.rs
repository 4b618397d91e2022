//! Supervising an interpreter the server keeps, for its whole life: its sandbox's [`Running`] is
//! driven on the event loop like every run (see `crate::drive`), and its control socket is read
//! beside it, until the interpreter ends; then the interpreter's owner ([`Host`]) is told how.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sandlock_core::{Command, Outcome, Reason, Running, Sandbox, SandboxError, Stage, Stdio};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

use super::control::{recv_with_fds, seqpacket_pair};
use crate::drive::{EpollFd, still_readable};
use crate::python::Interpreter;

/// How often an idle interpreter's tree is sampled. Between calls nothing in a fork server runs (a
/// finished call's leftovers are swept), so its memory cannot grow; sampling it at the normal rate
/// would cost every idle workspace 100 reads of `/proc` a second.
const IDLE_SAMPLE: Duration = Duration::from_secs(1);

/// How often a fork server that has never had a call (one waiting in the pool) is sampled: no
/// code has reached it, so nothing in it can grow, and a sample (which also rescans `/proc` for
/// the sandbox's process group) costs a few milliseconds on a busy host.
const PARKED_SAMPLE: Duration = Duration::from_secs(60);

/// What may run in a kept interpreter now, which decides how often its tree is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pace {
    /// A call, or threads a call left: the normal rate.
    Busy,
    /// Between calls: [`IDLE_SAMPLE`].
    Idle,
    /// No code has ever reached it: [`PARKED_SAMPLE`].
    Parked,
}

/// Starts `python -c script` in `sandbox` with the interpreter's end of a new control socket on
/// descriptor 3 (stdin empty, stdout and stderr captured by the sandbox); returns its sandbox and
/// the server's end of the socket, registered with the event loop. `what` names the interpreter
/// in errors.
pub(super) fn spawn_kept(
    sandbox: &Sandbox,
    python: &Interpreter,
    script: &str,
    what: &str,
) -> Result<(Running, AsyncFd<OwnedFd>), sandlock_core::Error> {
    let (ours, theirs) = seqpacket_pair().map_err(|e| {
        SandboxError::io(
            Stage::Prepare,
            &e,
            format!("cannot create the control socket of {what}"),
        )
    })?;
    let cmd = Command::new([python.path.as_os_str(), "-c".as_ref(), script.as_ref()])
        .stdin(Stdio::Null)
        .pass_fd(theirs, 3);
    let running = sandbox.spawn(cmd)?;
    // SAFETY: `ours` is owned by the AsyncFd from here on and is never closed or replaced while
    // registered.
    let ctl =
        unsafe { AsyncFd::register_with_interest(ours, Interest::READABLE | Interest::WRITABLE) }
            .map_err(|e| {
            SandboxError::io(
                Stage::Supervise,
                &e.into(),
                format!("cannot register the control socket of {what}"),
            )
        })?;
    Ok((running, ctl))
}

/// The owner of a kept interpreter, as its supervision sees it.
pub(super) trait Host: Send + Sync + 'static {
    /// The server's end of the control socket.
    fn ctl(&self) -> &AsyncFd<OwnedFd>;
    /// Notified when work arrives, so that the tree is sampled at the normal rate at once.
    fn woken(&self) -> &tokio::sync::Notify;
    /// What may run in the tree now, and when the interpreter is to be stopped for having been
    /// idle.
    fn activity(&self) -> (Pace, Option<Instant>);
    /// The idle deadline passed. If the interpreter is still idle, marks it ended under its
    /// owner's lock (so that no call reaches it any more) and returns true: it is stopped.
    fn end_if_idle(&self) -> bool;
    /// A message from the interpreter, with the descriptors that came with it.
    fn message(self: Arc<Self>, msg: &[u8], fds: Vec<OwnedFd>);
    /// Called after each step of the sandbox (for output written outside any call).
    fn stepped(&self, running: &mut Running);
    /// The interpreter ended, as `outcome` says; `stopped`: because the server stopped it.
    fn ended(&self, outcome: &Outcome, stopped: bool);
}

/// How many interpreters of one kind are alive, for a metrics gauge: a [`Live`] from
/// [`Gauge::hold`] counts one until it is dropped (`supervise` drops it after the reap).
pub(super) struct Gauge(AtomicUsize);

impl Gauge {
    pub(super) const fn new() -> Gauge {
        Gauge(AtomicUsize::new(0))
    }

    /// The number of [`Live`]s of this gauge in existence.
    pub(super) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one interpreter until the returned value is dropped.
    pub(super) fn hold(&'static self) -> Live {
        self.0.fetch_add(1, Ordering::Relaxed);
        Live(self)
    }
}

/// One interpreter counted in its [`Gauge`] while this lives.
pub(super) struct Live(&'static Gauge);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Drives `running` (the interpreter's sandbox) and reads `host`'s control socket until the
/// interpreter ends. `stop` kills it; so does the end of `host`. `guard` is dropped at the very end
/// (after the interpreter was reaped).
pub(super) async fn supervise<H: Host, G: Send>(
    host: Weak<H>,
    stop: CancellationToken,
    mut running: Running,
    guard: G,
) {
    // SAFETY: the epoll descriptor belongs to `running`, which outlives `afd` (dropped below).
    let afd =
        match unsafe { AsyncFd::register_with_interest(EpollFd(running.fd()), Interest::READABLE) }
        {
            Ok(a) => a,
            Err(e) => {
                let detail = format!("cannot watch the interpreter's sandbox: {e}");
                running.kill(Reason::SandboxError, detail.clone());
                if let Some(h) = host.upgrade() {
                    h.ended(&Outcome::ended(Reason::SandboxError, detail), false);
                }
                return;
            }
        };
    let mut killed = false;
    let mut stopped_by_us = false;
    let mut ctl_closed = false;
    let mut buf = vec![0u8; 256];
    loop {
        let step = running.step(Some(Duration::ZERO));
        let Some(h) = host.upgrade() else {
            running.kill(Reason::Signaled, "the workspace ended");
            killed = true;
            stopped_by_us = true;
            if matches!(step, Ok(true) | Err(_)) {
                break;
            }
            continue;
        };
        h.stepped(&mut running);
        match step {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "supervising a kept interpreter failed; killing it");
                running.kill(Reason::SandboxError, e.to_string());
                break;
            }
        }
        let (pace, idle_at) = h.activity();
        let every = match pace {
            Pace::Busy => running.default_sample_every(),
            Pace::Idle => IDLE_SAMPLE,
            Pace::Parked => PARKED_SAMPLE,
        };
        running.set_sample_every(every);
        let wake = running.next_wakeup().map(tokio::time::Instant::from_std);
        let idle_at = idle_at.map(tokio::time::Instant::from_std);
        tokio::select! {
            r = afd.readable() => {
                if let Ok(mut g) = r && !still_readable(running.fd()) {
                    g.clear_ready();
                }
            }
            _ = async { if let Some(w) = wake { tokio::time::sleep_until(w).await } }, if wake.is_some() => {}
            r = h.ctl().readable(), if !ctl_closed => {
                let Ok(mut g) = r else { continue };
                loop {
                    match g.try_io(|s| recv_with_fds(s.as_raw_fd(), &mut buf)) {
                        Ok(Ok((0, _))) | Ok(Err(_)) => {
                            // The interpreter closed its end: it is exiting, and the supervisor
                            // reports how.
                            ctl_closed = true;
                            break;
                        }
                        Ok(Ok((n, fds))) => h.clone().message(&buf[..n], fds),
                        Err(_would_block) => break,
                    }
                }
            }
            _ = h.woken().notified() => {}
            _ = stop.cancelled(), if !killed => {
                running.kill(Reason::Signaled, "the interpreter was stopped");
                killed = true;
                stopped_by_us = true;
            }
            _ = async { if let Some(t) = idle_at { tokio::time::sleep_until(t).await } }, if idle_at.is_some() && !killed => {
                if h.end_if_idle() {
                    running.kill(Reason::Signaled, "idle");
                    killed = true;
                    stopped_by_us = true;
                }
            }
        }
    }
    drop(afd);
    let (outcome, residue) = running.into_outcome_and_residue();
    tokio::task::spawn_blocking(move || drop(residue));
    if let Some(h) = host.upgrade() {
        h.ended(&outcome, stopped_by_us);
    }
    drop(guard);
}
