//! `execute_python` by forking: one started, sandboxed interpreter per workspace (a *fork server*),
//! forked once per call.
//!
//! A workspace's first two calls run fresh interpreters; the second starts the fork server in the
//! background (`crate::exec::Executor::prepare_fork_server`), and later calls fork it while it
//! lives. A call that finds no live fork server runs fresh, and starts a new one. A workspace
//! taken from the pool of ready workspaces (`crate::pool`) comes with its fork server running, so
//! its first call forks.
//!
//! Starting CPython costs about 13 ms of CPU on the reference machine; forking an initialized one,
//! running `print(1)` and reaping it costs under 1 ms. At concurrency 8 on 2 cores every
//! millisecond of CPU per call becomes about 4 ms of latency, so this is what takes
//! `execute_python` from "a new interpreter per call" to "a new process per call".
//!
//! # Confinement
//! The fork server is started through the same [`Sandbox`] as a fresh run: the same Landlock
//! domain, seccomp filter and supervisor (with its seccomp listener). A forked child inherits all
//! of them from the kernel; nothing is applied by Python code. The server never runs submitted
//! code itself: it imports what every interpreter imports at start-up plus four C modules it needs
//! (`_socket`, `_signal`, `select`, `ctypes`), then waits on its control socket. Each call is a
//! fresh copy of that clean state, not of an earlier call's.
//!
//! # How a call ends
//! A forked call does not tear the interpreter down: it does what finalization does that a program
//! can observe (joins non-daemon threads, runs `atexit` handlers, flushes stdout and stderr) and
//! then `_exit`s with the status CPython would have used. Full finalization touches every object
//! of the inherited heap, and each write is a copy-on-write fault: measured with `strace`, 7 ms of
//! system time per call, against well under 1 ms for everything else. For the same reason the
//! fork server freezes its objects (`gc.freeze()`) before it forks, so a call's garbage
//! collections do not write to them.
//!
//! # What differs from a fresh interpreter per call
//! - Limits on the tree (`max_memory`, `max_processes`, `max_threads`, `max_disk`) count the
//!   workspace's fork server and all of its calls in progress together; when one is exceeded the
//!   whole tree is killed and the calls in progress end with that reason. The timeout and the
//!   output cap stay per call. `max_cpu` would accumulate over every call, so a policy that sets
//!   it runs fresh interpreters.
//! - Calls of one workspace share the hash seed, the address-space layout and the Landlock domain
//!   of their fork server, so they may signal each other (they are one trust domain; workspaces
//!   never share a fork server).
//!
//! # Protocol (a `SOCK_SEQPACKET` pair; the fork server's end is its descriptor 3)
//! - `H 0 0`: the fork server has started and waits for calls.
//! - `R <id>` with four descriptors (code, stdin, stdout, stderr): fork a call.
//! - `P <id> <pid>` with a pidfd: the call's process started.
//! - `X <id> <pid> <wait status> <cpu µs> <max rss KiB>`: it ended and was reaped.
//! - `E <id> 0 <errno>`: the call could not be started (its descriptors did not all arrive, or
//!   `fork` failed); the fork server carries on.
//!
//! A call's process is a child subreaper, so while it runs its orphans stay beneath it; when it
//! ends they are handed to the fork server (also a subreaper), and [`Zygote::sweep`] kills every
//! child of the fork server that is not a call in progress. The seccomp filter keeps every process
//! in the fork server's process group, so nothing leaves the tree the supervisor measures.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandlock_core::{LimitMechanism, Outcome, Reason, Running, Sandbox};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::call::{CallIo, Captured, ended, failed};
use super::control::send_with_fds;
use super::supervise::{Gauge, Host, Pace, spawn_kept, supervise};
use super::tree::{kill_strays, pidfd_signal};
use crate::python::Interpreter;

/// The fork server, then the call. `_serve` returns only in a forked child, after it has put the
/// call's descriptors on 0-3; what follows it reads the code from descriptor 3 and runs it as
/// `__main__` (as `crate::python::PYTHON_BOOTSTRAP` does for a fresh interpreter: same
/// traceback, same exit status), then ends the call as described in the module documentation.
const ZYGOTE: &str = r#"def _retry(f, *a):
    # A syscall the supervisor decides (pidfd_open, where it stands in for Landlock's signal
    # scoping) fails with EINTR when SIGCHLD arrives while it waits for the decision: before
    # Linux 6.0 at any time, since then until the supervisor has picked it up.
    while True:
        try:
            return f(*a)
        except InterruptedError:
            pass
def _serve():
    import os, sys, _signal, _socket, select, ctypes, gc
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl(36, 1, 0, 0, 0)
    ctl = _socket.socket(fileno=3)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _signal.set_wakeup_fd(wake_w)
    _signal.signal(_signal.SIGCHLD, lambda *_: None)
    leaders = {}
    gc.collect()
    gc.freeze()
    p = select.poll()
    p.register(3, select.POLLIN)
    p.register(wake_r, select.POLLIN)
    space = _socket.CMSG_SPACE(4 * 4)
    ctl.send(b"H 0 0")
    while True:
        for fd, _ in p.poll():
            if fd == wake_r:
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
                while True:
                    try:
                        pid, status, ru = os.wait4(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    cid = leaders.pop(pid, None)
                    if cid is not None:
                        cpu = int((ru.ru_utime + ru.ru_stime) * 1e6)
                        ctl.send(b"X %d %d %d %d %d" % (cid, pid, status, cpu, ru.ru_maxrss))
                continue
            msg, anc, _, _ = ctl.recvmsg(64, space)
            if not msg:
                os._exit(0)
            fds = []
            for level, kind, data in anc:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                    n = len(data) - len(data) % 4
                    fds += [int.from_bytes(data[i:i + 4], sys.byteorder) for i in range(0, n, 4)]
            cid = int(msg.split()[1])
            try:
                if len(fds) != 4:
                    raise OSError(24, "the call's descriptors did not all arrive")
                pid = _retry(os.fork)
            except OSError as e:
                for f in fds:
                    os.close(f)
                ctl.send(b"E %d 0 %d" % (cid, e.errno or 0))
                continue
            if pid == 0:
                _signal.set_wakeup_fd(-1)
                _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
                os.close(wake_r)
                os.close(wake_w)
                ctl.detach()
                for f, target in zip(fds, (3, 0, 1, 2)):
                    os.dup2(f, target)
                for f in fds:
                    os.close(f)
                prctl(36, 1, 0, 0, 0)
                return
            pidfd = _retry(os.pidfd_open, pid)
            leaders[pid] = cid
            anc = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, pidfd.to_bytes(4, sys.byteorder))]
            ctl.sendmsg([b"P %d %d" % (cid, pid)], anc)
            os.close(pidfd)
            for f in fds:
                os.close(f)
_serve()
del _serve, _retry
import sys, os
def _run():
    with open(3, encoding="utf-8", closefd=True) as f:
        c = f.read()
    sys.argv = ["-c"]
    try:
        exec(c, {"__name__": "__main__", "__builtins__": __builtins__})
        return 0
    except SystemExit as e:
        if e.code is None:
            return 0
        if isinstance(e.code, int):
            return e.code & 255
        try:
            print(e.code, file=sys.stderr)
        except BaseException:
            pass
        return 1
    except BaseException as e:
        import linecache, traceback
        linecache.cache["<string>"] = (len(c), None, c.splitlines(True), "<string>")
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        return 1
_code = _run()
if "threading" in sys.modules:
    sys.modules["threading"]._shutdown()
import atexit
atexit._run_exitfuncs()
for _f in (sys.stdout, sys.stderr):
    try:
        _f.flush()
    except BaseException:
        pass
os._exit(_code)
"#;

/// Fork servers alive in this process (the `sandlock_mcp_fork_servers` gauge).
static LIVE: Gauge = Gauge::new();

/// How many fork servers are alive (started and not yet reaped).
pub fn live_fork_servers() -> usize {
    LIVE.get()
}

/// Why a call could not be handed to the fork server (it had ended; nothing ran): run it fresh.
#[derive(Debug)]
pub struct Gone;

enum Event {
    Started {
        pidfd: OwnedFd,
    },
    Exited {
        status: i32,
        cpu: Duration,
        max_rss: u64,
    },
    Ended {
        reason: Reason,
        detail: String,
    },
}

#[derive(Default)]
struct State {
    calls: HashMap<u64, mpsc::UnboundedSender<Event>>,
    /// Calls' processes the fork server has forked and not yet reaped.
    leaders: HashSet<libc::pid_t>,
    ended: bool,
    /// The fork server said it has started (`H`).
    ready: bool,
    last_used: Option<Instant>,
    /// Stopped after this long without calls (never while it waits in the pool).
    idle: Option<Duration>,
}

/// A workspace's fork server.
pub struct Zygote {
    pid: libc::pid_t,
    ctl: AsyncFd<OwnedFd>,
    /// Held from sending `R` until its `P` is in, and by [`Zygote::sweep`]: a sweep never sees a
    /// freshly forked call it has not heard of yet.
    fork_lock: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    next_id: AtomicU64,
    stop: CancellationToken,
    /// Wakes the supervising task when a call arrives (to sample the tree at the normal rate) or
    /// the idle time changes.
    busy: tokio::sync::Notify,
    /// Notified when the fork server has started, or ended.
    came_up: tokio::sync::Notify,
    not_enforced: Vec<sandlock_core::Protection>,
}

impl Drop for Zygote {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Zygote {
    /// Starts a fork server in `sandbox` (a sandbox without a timeout: the server lives as long as
    /// the workspace uses it). It stops after `idle` without calls (never, for `None`), or when
    /// [`Zygote::stop`] is called.
    pub fn start(
        sandbox: &Sandbox,
        python: &Interpreter,
        idle: Option<Duration>,
    ) -> Result<Arc<Zygote>, sandlock_core::Error> {
        let (running, ctl) = spawn_kept(sandbox, python, ZYGOTE, "the fork server")?;
        // Counted until `supervise` has reaped it, or until this function fails (dropping
        // `running` kills and reaps it).
        let counted = LIVE.hold();
        let z = Arc::new(Zygote {
            pid: running.pid(),
            ctl,
            fork_lock: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                last_used: Some(Instant::now()),
                idle,
                ..State::default()
            }),
            next_id: AtomicU64::new(1),
            stop: CancellationToken::new(),
            busy: tokio::sync::Notify::new(),
            came_up: tokio::sync::Notify::new(),
            not_enforced: sandbox.not_enforced().to_vec(),
        });
        tokio::spawn(supervise(
            Arc::downgrade(&z),
            z.stop.clone(),
            running,
            counted,
        ));
        Ok(z)
    }

    /// Whether the fork server has ended (a new one is needed).
    pub fn ended(&self) -> bool {
        self.state.lock().map(|s| s.ended).unwrap_or(true)
    }

    /// Waits until the fork server has started and waits for calls (true), or has ended (false).
    pub async fn started(&self) -> bool {
        loop {
            let up = self.came_up.notified();
            tokio::pin!(up);
            up.as_mut().enable();
            {
                let st = self.state();
                if st.ended {
                    return false;
                }
                if st.ready {
                    return true;
                }
            }
            up.await;
        }
    }

    /// From now on, stops after `idle` without calls (counted from now).
    pub fn set_idle(&self, idle: Duration) {
        {
            let mut st = self.state();
            st.idle = Some(idle);
            if st.calls.is_empty() {
                st.last_used = Some(Instant::now());
            }
        }
        self.busy.notify_one();
    }

    /// Kills the fork server and every call in progress.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a message of the fork server to its call. True when an abandoned call's process
    /// ended: what it left behind is to be swept now, since no call will.
    fn dispatch(&self, msg: &[u8], mut fds: Vec<OwnedFd>) -> bool {
        let text = String::from_utf8_lossy(msg);
        let f: Vec<&str> = text.split_ascii_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok());
        let mut st = self.state();
        if f.first() == Some(&"H") {
            st.ready = true;
            drop(st);
            self.came_up.notify_waiters();
            return false;
        }
        let (Some(id), Some(pid)) = (num(1), num(2)) else {
            tracing::warn!(message = %text, "the fork server sent a malformed message");
            return false;
        };
        let (id, pid) = (id as u64, pid as libc::pid_t);
        let ev = match (f.first().copied(), fds.pop()) {
            (Some("P"), Some(pidfd)) => {
                st.leaders.insert(pid);
                Event::Started { pidfd }
            }
            (Some("E"), _) => {
                let errno = num(3).unwrap_or(0) as i32;
                Event::Ended {
                    reason: Reason::SandboxError,
                    detail: format!(
                        "the workspace's Python could not start the call: {} (errno {errno}); \
                         hint: the process limit or the open-file limit of the workspace may be \
                         reached",
                        std::io::Error::from_raw_os_error(errno)
                    ),
                }
            }
            (Some("X"), _) => {
                st.leaders.remove(&pid);
                Event::Exited {
                    status: num(3).unwrap_or(0) as i32,
                    cpu: Duration::from_micros(num(4).unwrap_or(0).max(0) as u64),
                    max_rss: num(5).unwrap_or(0).max(0) as u64 * 1024,
                }
            }
            _ => {
                tracing::warn!(message = %text, "the fork server sent an unexpected message");
                return false;
            }
        };
        match st.calls.get(&id) {
            Some(tx) => {
                let _ = tx.send(ev);
                false
            }
            None => matches!(ev, Event::Exited { .. }),
        }
    }

    fn end(&self, reason: Reason, detail: String) {
        let mut st = self.state();
        st.ended = true;
        st.leaders.clear();
        for (_, tx) in st.calls.drain() {
            let _ = tx.send(Event::Ended {
                reason,
                detail: detail.clone(),
            });
        }
        drop(st);
        self.came_up.notify_waiters();
    }

    /// Sends `R <id>` with the call's descriptors.
    async fn send_request(&self, id: u64, fds: &[RawFd]) -> std::io::Result<()> {
        let msg = format!("R {id}");
        loop {
            let mut guard = self.ctl.writable().await?;
            match guard.try_io(|s| send_with_fds(s.as_raw_fd(), msg.as_bytes(), fds)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Kills every child of the fork server that is not a call in progress, with everything
    /// beneath it: what a finished call left behind (its orphans were handed to the server).
    async fn sweep(&self) {
        let _l = self.fork_lock.lock().await;
        for _ in 0..50 {
            let leaders = self.state().leaders.clone();
            if kill_strays(self.pid, &leaders) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tracing::warn!(
            pid = self.pid,
            "processes left by a call survived 50 sweeps; they stay confined and count toward the \
             workspace's limits until it ends"
        );
    }

    /// Runs `code` in a forked interpreter. `Err(Gone)` means the fork server had ended before the
    /// call reached it (nothing ran): run the call fresh.
    pub async fn run(
        &self,
        code: &[u8],
        stdin: Option<Vec<u8>>,
        timeout: Duration,
        cap: u64,
        cancel: &CancellationToken,
        cancel_why: impl Fn() -> String,
    ) -> Result<Outcome, Gone> {
        let t0 = Instant::now();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        {
            let mut st = self.state();
            if st.ended {
                return Err(Gone);
            }
            st.calls.insert(id, tx);
            st.last_used = None;
        }
        self.busy.notify_one();
        let _registered = Registered(self, id);
        let io = match CallIo::new(code) {
            Ok(io) => io,
            Err(e) => return Ok(failed(t0, format!("cannot prepare the call's pipes: {e}"))),
        };
        let CallIo {
            code,
            stdin_r,
            stdin_w,
            stdout_w,
            stderr_w,
            mut stdout,
            mut stderr,
        } = io;
        let deadline = tokio::time::Instant::from_std(t0 + timeout);

        // Start: the fork server forks, and answers with the process's pidfd.
        let leader = {
            let _l = self.fork_lock.lock().await;
            let fds = [
                code.as_raw_fd(),
                stdin_r.as_raw_fd(),
                stdout_w.as_raw_fd(),
                stderr_w.as_raw_fd(),
            ];
            if self.send_request(id, &fds).await.is_err() {
                return Err(Gone);
            }
            drop((code, stdin_r, stdout_w, stderr_w));
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(Event::Started { pidfd }) => Leader { pidfd, ended: AtomicBool::new(false) },
                    // The request was delivered, so the code may have started: report, never
                    // retry (a retry could run it twice).
                    Some(Event::Ended { reason, detail }) => return Ok(ended(t0, reason, detail)),
                    None => return Ok(failed(t0, "the fork server's channel closed".into())),
                    Some(Event::Exited { .. }) => return Ok(failed(t0, "the fork server reported an exit before a start".into())),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    // A fork server that does not fork in time is stuck (or stopped): replace it.
                    self.stop();
                    return Ok(ended(t0, Reason::Timeout, "the workspace's Python did not start the call in time".into()));
                }
            }
        };
        let feeder = match stdin {
            Some(data) => Some(tokio::spawn(async move {
                let mut w = stdin_w;
                let _ = w.write_all(&data).await;
            })),
            None => {
                drop(stdin_w);
                None
            }
        };

        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        let (mut out, mut err) = (Captured::new("stdout"), Captured::new("stderr"));
        let mut exit: Option<(i32, Duration, u64)> = None;
        let mut ended_by: Option<(Reason, String)> = None;
        let mut server_gone = false;
        let mut killed_at: Option<tokio::time::Instant> = None;
        let mut drain_until: Option<tokio::time::Instant> = None;
        let (mut obuf, mut ebuf) = (vec![0u8; 16384], vec![0u8; 16384]);
        let kill = |why: &mut Option<tokio::time::Instant>| {
            pidfd_signal(&leader.pidfd, libc::SIGKILL);
            why.get_or_insert_with(tokio::time::Instant::now);
        };
        loop {
            if (exit.is_some() || server_gone) && !out.open && !err.open {
                break;
            }
            tokio::select! {
                r = stdout.read(&mut obuf), if out.open => if let Some(over) = out.took(r, &obuf, cap) {
                    ended_by.get_or_insert(over);
                    kill(&mut killed_at);
                },
                r = stderr.read(&mut ebuf), if err.open => if let Some(over) = err.took(r, &ebuf, cap) {
                    ended_by.get_or_insert(over);
                    kill(&mut killed_at);
                },
                ev = rx.recv(), if exit.is_none() && !server_gone => match ev {
                    Some(Event::Exited { status, cpu, max_rss }) => {
                        leader.ended.store(true, Ordering::Relaxed);
                        exit = Some((status, cpu, max_rss));
                        self.sweep().await;
                        drain_until = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                    }
                    Some(Event::Ended { reason, detail }) => {
                        leader.ended.store(true, Ordering::Relaxed);
                        server_gone = true;
                        ended_by.get_or_insert((reason, detail));
                        drain_until = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                    }
                    Some(Event::Started { .. }) => {}
                    None => {
                        server_gone = true;
                        ended_by.get_or_insert((Reason::SandboxError, "the fork server's channel closed".into()));
                        drain_until = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                    }
                },
                _ = tokio::time::sleep_until(deadline), if ended_by.is_none() && exit.is_none() => {
                    ended_by = Some((Reason::Timeout, format!("timed out after {:.1} s", timeout.as_secs_f64())));
                    kill(&mut killed_at);
                }
                _ = cancel.cancelled(), if ended_by.is_none() && exit.is_none() => {
                    ended_by = Some((Reason::Signaled, cancel_why()));
                    kill(&mut killed_at);
                }
                _ = async { tokio::time::sleep_until(drain_until.unwrap_or(deadline)).await }, if drain_until.is_some() => break,
                _ = async { tokio::time::sleep_until(killed_at.unwrap_or(deadline) + Duration::from_secs(2)).await }, if killed_at.is_some() && exit.is_none() && !server_gone => {
                    // Killed, yet never reported as reaped: the fork server is stuck. Replace it.
                    self.stop();
                }
            }
        }
        if let Some(f) = feeder {
            f.abort();
        }
        let (exit_code, signal) = match exit {
            Some((s, _, _)) if libc::WIFEXITED(s) => (Some(libc::WEXITSTATUS(s)), None),
            Some((s, _, _)) if libc::WIFSIGNALED(s) => (None, Some(libc::WTERMSIG(s))),
            _ => (None, None),
        };
        let (reason, detail) = match ended_by {
            Some((r, d)) => (r, Some(d)),
            None if signal.is_some() => (Reason::Signaled, None),
            None => (Reason::Exited, None),
        };
        Ok(Outcome {
            reason,
            exit_code,
            signal,
            stdout_truncated: out.cut,
            stderr_truncated: err.cut,
            stdout: out.data,
            stderr: err.data,
            wall_time: t0.elapsed(),
            cpu_time: exit.map_or(Duration::ZERO, |e| e.1),
            peak_memory: exit.map_or(0, |e| e.2),
            not_enforced: self.not_enforced.clone(),
            // The fork server's proxy reports to the fork server's run, not to one call.
            warnings: Vec::new(),
            limit_mechanism: LimitMechanism::Supervisor,
            kernel_limits: Vec::new(),
            detail,
            error: None,
            changes: Vec::new(),
            commit: None,
        })
    }
}

/// A call's process. If the call is abandoned before the process ended (its future dropped, say
/// because the connection went away), the process is killed: no call outlives its supervision.
/// What it leaves behind is swept when its exit is reported (`Zygote::dispatch`).
struct Leader {
    pidfd: OwnedFd,
    ended: AtomicBool,
}

impl Drop for Leader {
    fn drop(&mut self) {
        if !self.ended.load(Ordering::Relaxed) {
            pidfd_signal(&self.pidfd, libc::SIGKILL);
        }
    }
}

/// Removes a call from the fork server's table when the call ends, however it ends.
struct Registered<'a>(&'a Zygote, u64);
impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state();
        st.calls.remove(&self.1);
        if st.calls.is_empty() {
            st.last_used = Some(Instant::now());
        }
    }
}

impl Host for Zygote {
    fn ctl(&self) -> &AsyncFd<OwnedFd> {
        &self.ctl
    }

    fn woken(&self) -> &tokio::sync::Notify {
        &self.busy
    }

    fn activity(&self) -> (Pace, Option<Instant>) {
        let st = self.state();
        let pace = if !st.calls.is_empty() {
            Pace::Busy
        } else if self.next_id.load(Ordering::Relaxed) == 1 {
            Pace::Parked
        } else {
            Pace::Idle
        };
        (pace, st.last_used.zip(st.idle).map(|(t, idle)| t + idle))
    }

    fn end_if_idle(&self) -> bool {
        // Ended first, under the lock: a call arriving now gets `Gone` and starts a new fork
        // server, instead of reaching one that is being killed.
        let mut st = self.state();
        if !st.calls.is_empty() {
            return false;
        }
        st.ended = true;
        tracing::debug!(pid = self.pid, "stopping an idle fork server");
        true
    }

    fn message(self: Arc<Self>, msg: &[u8], fds: Vec<OwnedFd>) {
        if self.dispatch(msg, fds) {
            tokio::spawn(async move { self.sweep().await });
        }
    }

    fn stepped(&self, _running: &mut Running) {}

    fn ended(&self, outcome: &Outcome, stopped: bool) {
        let detail = outcome.detail.clone().unwrap_or_default();
        let (reason, detail) = if outcome.reason.is_limit() {
            (
                outcome.reason,
                format!(
                    "{detail}; in fork mode this limit covers the workspace's Python processes \
                     together"
                ),
            )
        } else if stopped {
            (
                Reason::Signaled,
                "killed: the workspace's Python was stopped (the workspace ended)".to_string(),
            )
        } else {
            let stderr = String::from_utf8_lossy(&outcome.stderr);
            let tail: String = stderr
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            let tail = match (tail.is_empty(), &outcome.detail) {
                (false, _) => format!(": {tail}"),
                (true, Some(d)) => format!(": {d}"),
                (true, None) => String::new(),
            };
            (
                Reason::SandboxError,
                format!(
                    "the workspace's Python fork server ended ({}, exit code {:?}, signal {:?}){tail}",
                    outcome.reason, outcome.exit_code, outcome.signal,
                ),
            )
        };
        if !stopped {
            tracing::warn!(pid = self.pid, reason = %reason, detail = %detail, "a fork server ended");
        }
        self.end(reason, detail);
    }
}
