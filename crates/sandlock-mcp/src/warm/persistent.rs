//! `execute_python(code, persistent: true)`: one sandboxed interpreter per workspace whose globals
//! live from one call (a *cell*) to the next, as in a notebook.
//!
//! # Confinement
//! The interpreter is started through the workspace's [`Sandbox`] (the Python policy without a
//! timeout), like the fork server: the same Landlock domain, seccomp filter and supervisor as a
//! fresh run, applied by the kernel before the interpreter starts; nothing is applied by Python
//! code. Cells reach it over a socket pair whose other end is only the server (see
//! [`super::control`]); the server sends a cell's code and descriptors, and reads nothing back but
//! a short report, which it parses as untrusted (any descriptor sent back is closed unread).
//!
//! # A cell
//! The server hands over the code (a memfd) and the cell's stdin, stdout and stderr pipes. The
//! interpreter puts the pipes on descriptors 0-2, parses the code, runs it in the globals of a
//! `__main__` module it keeps, and, when the last statement is an expression (not ended by `;`),
//! shows its value as the interactive interpreter does (`sys.displayhook`: `repr`, nothing for
//! `None`). An uncaught exception prints its traceback (with the cell's lines, named
//! `<cell N>`) and gives exit code 1; `sys.exit(n)` ends the cell with exit code `n`, and the
//! interpreter stays. Then it flushes, puts its own descriptors back on 0-2, and reports.
//!
//! # What ends a cell early
//! - **The timeout, the output cap, a cancelled call**: the interpreter is sent `SIGINT`, which
//!   raises `KeyboardInterrupt` in the cell (as a notebook's interrupt does); a cell that stops
//!   keeps the interpreter and its state. A cell still running [`INTERRUPT_GRACE`] later (it
//!   caught the exception, or is stuck in C code) is killed with the whole interpreter.
//! - **The tree limits** (`max_memory`, `max_processes`, `max_threads`, `max_disk`) cover the
//!   interpreter and everything it started; past one, the supervisor kills them all.
//!
//! When the interpreter is gone, its state is gone: the next cell starts a new interpreter and its
//! result says why the state was lost (unless `reset_python` asked for it).
//!
//! # What a cell leaves behind
//! - Processes: killed when the cell ends, as with every call (the interpreter is a child
//!   subreaper, so a cell's orphans stay beneath it, where the server finds them). The next cell
//!   first reaps them: a `subprocess.Popen` that owns one records its real status (`-9`), the
//!   others are reaped by the interpreter, so none is left a zombie.
//! - Threads: they keep running in the interpreter, like its variables. What they print while a
//!   cell runs is in that cell's output; what they print between cells is in the next cell's
//!   (first), and counts toward `max_output` over the interpreter's life.
//!
//! # Protocol (a `SOCK_SEQPACKET` pair; the interpreter's end is its descriptor 3)
//! - `C <id> <pid>...` with four descriptors (code, stdin, stdout, stderr): run a cell, after
//!   reaping the listed children (the zombies of what the server killed after earlier cells).
//! - `D <id> <exit code> <cpu µs> <threads>`: the cell ended; `threads` is the number of Python
//!   threads still running.
//! - `E <id> 0 <errno>`: the cell could not be run (its descriptors did not all arrive).

use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandlock_core::{LimitMechanism, Outcome, Reason, Running, Sandbox};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::call::{CallIo, Captured, failed};
use super::control::send_with_fds;
use super::supervise::{Gauge, Host, Pace, spawn_kept, supervise};
use super::tree::{kill_strays, pidfd_open, pidfd_signal, zombie_children};
use super::zygote::Gone;
use crate::python::Interpreter;

/// How long an interrupted cell has to stop before the interpreter is killed.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

/// The most zombies one cell's message asks the interpreter to reap (the rest wait for the next
/// cell); it keeps the message within the 4096 bytes the interpreter reads.
const MAX_REAPED: usize = 256;

/// The interpreter: a loop that runs cells, as the module documentation describes.
const PERSISTENT: &str = r#"def _cells():
    import os, sys, gc, _signal, _socket, _thread, ctypes, types, builtins, ast, linecache, traceback
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
    os.set_inheritable(3, False)
    ctl = _socket.socket(fileno=3)
    own = (os.dup(0), os.dup(1), os.dup(2))
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    ns = main.__dict__
    flags = {"cell": False}

    def interrupt(signum, frame):
        # Between cells there is nothing to interrupt.
        if flags["cell"]:
            raise KeyboardInterrupt

    _signal.signal(_signal.SIGINT, interrupt)

    def reap(pids):
        if not pids:
            return
        sp = sys.modules.get("subprocess")
        if sp is not None:
            kinds = [sp.Popen]
            for k in kinds:
                kinds.extend(k.__subclasses__())
            for o in gc.get_referrers(*kinds):
                if isinstance(o, sp.Popen) and o.returncode is None and o.pid in pids:
                    o.poll()
        for pid in pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass

    def quiet(source, node):
        lines = source.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        rest = lines[node.end_lineno - 1].encode()[node.end_col_offset:]
        return rest.decode(errors="replace").lstrip().startswith(";")

    def run(source, name):
        linecache.cache[name] = (len(source), None, source.splitlines(True), name)
        try:
            flags["cell"] = True
            try:
                tree = ast.parse(source, name)
                last = None
                if tree.body and isinstance(tree.body[-1], ast.Expr) and not quiet(source, tree.body[-1]):
                    last = ast.Expression(tree.body.pop().value)
                exec(compile(tree, name, "exec", dont_inherit=True), ns)
                if last is not None:
                    value = eval(compile(last, name, "eval", dont_inherit=True), ns)
                    if value is not None:
                        sys.displayhook(value)
            finally:
                flags["cell"] = False
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
            flags["cell"] = False
            try:
                # Without this loop's frames (the program given to -c is "<string>"): the ones
                # that called the cell, and the signal handler that raised KeyboardInterrupt.
                shown = traceback.TracebackException(type(e), e, e.__traceback__)
                stack = shown.stack
                while stack and stack[0].filename == "<string>":
                    del stack[0]
                if stack and stack[-1].filename == "<string>" and stack[-1].name == "interrupt":
                    del stack[-1]
                sys.stderr.write("".join(shown.format()))
            except BaseException:
                pass
            return 1

    space = _socket.CMSG_SPACE(4 * 4)
    number = 0
    while True:
        msg, anc, _, _ = ctl.recvmsg(4096, space)
        if not msg:
            os._exit(0)
        fds = []
        for level, kind, data in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                n = len(data) - len(data) % 4
                fds += [int.from_bytes(data[i:i + 4], sys.byteorder) for i in range(0, n, 4)]
        words = msg.split()
        numbers = all(w.isdigit() for w in words[1:])
        cid = int(words[1]) if len(words) > 1 and numbers else 0
        if words[:1] != [b"C"] or len(words) < 2 or not numbers or len(fds) != 4:
            for f in fds:
                os.close(f)
            ctl.send(b"E %d 0 %d" % (cid, 74))
            continue
        reap({int(w) for w in words[2:]})
        code, stdin, stdout, stderr = fds
        with open(code, encoding="utf-8", closefd=True) as f:
            source = f.read()
        for f, target in zip((stdin, stdout, stderr), (0, 1, 2)):
            os.dup2(f, target)
            os.close(f)
        sys.stdin = open(0, closefd=False)
        number += 1
        before = os.times()
        status = run(source, "<cell %d>" % number)
        after = os.times()
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except BaseException:
                pass
        for f, target in zip(own, (0, 1, 2)):
            os.dup2(f, target)
        cpu = int(sum(after[i] - before[i] for i in range(4)) * 1e6)
        ctl.send(b"D %d %d %d %d" % (cid, status, cpu, _thread._count()))
_cells()
"#;

/// Persistent interpreters alive in this process (the `sandlock_mcp_python_persistent` gauge).
static LIVE: Gauge = Gauge::new();

/// How many persistent interpreters are alive (started and not yet reaped).
pub fn live_persistent() -> usize {
    LIVE.get()
}

enum Event {
    Done { status: i32, cpu: Duration },
    Refused { errno: i32 },
    Ended(Ending),
}

/// How the interpreter ended.
#[derive(Clone)]
struct Ending {
    reason: Reason,
    /// For the outcome of the cell in progress.
    detail: String,
    /// For the cells after it: "the persistent interpreter <why>".
    why: String,
    exit_code: Option<i32>,
    signal: Option<i32>,
}

#[derive(Default)]
struct State {
    /// The cell in progress.
    cell: Option<(u64, mpsc::UnboundedSender<Event>)>,
    /// Set when the interpreter has ended.
    ended: Option<Ending>,
    /// Why the server stopped it, when it did.
    stopped_because: Option<String>,
    /// Python threads left running by the last cell.
    threads: bool,
    /// Cells started so far.
    cells: u64,
    /// What the interpreter printed between cells (shown at the start of the next cell).
    between_out: Vec<u8>,
    between_err: Vec<u8>,
}

/// A workspace's persistent Python interpreter.
pub struct Persistent {
    pid: libc::pid_t,
    /// Taken while the process was an unreaped child, so it is this process for good.
    pidfd: OwnedFd,
    ctl: AsyncFd<OwnedFd>,
    state: Mutex<State>,
    next_id: AtomicU64,
    stop: CancellationToken,
    woken: tokio::sync::Notify,
    not_enforced: Vec<sandlock_core::Protection>,
}

/// A cell that ran (or was cut short).
pub struct Cell {
    /// What the cell did, as for any run.
    pub outcome: Outcome,
    /// Its number in this interpreter (1 for the first).
    pub number: u64,
    /// Set when the interpreter ended during the cell (its state is gone): "the persistent
    /// interpreter <this>". `None`: it is still there, with its state.
    pub ended: Option<String>,
}

impl Drop for Persistent {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Persistent {
    /// Starts a persistent interpreter in `sandbox` (a sandbox without a timeout: it lives until
    /// it is stopped, its workspace ends, or a limit kills it).
    pub fn start(
        sandbox: &Sandbox,
        python: &Interpreter,
    ) -> Result<Arc<Persistent>, sandlock_core::Error> {
        let (running, ctl) = spawn_kept(sandbox, python, PERSISTENT, "the persistent interpreter")?;
        let counted = LIVE.hold();
        let pidfd = pidfd_open(running.pid()).map_err(|e| {
            sandlock_core::SandboxError::io(
                sandlock_core::Stage::Supervise,
                &e,
                "cannot open a pidfd for the persistent interpreter",
            )
        })?;
        let p = Arc::new(Persistent {
            pid: running.pid(),
            pidfd,
            ctl,
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            stop: CancellationToken::new(),
            woken: tokio::sync::Notify::new(),
            not_enforced: sandbox.not_enforced().to_vec(),
        });
        tokio::spawn(supervise(
            Arc::downgrade(&p),
            p.stop.clone(),
            running,
            counted,
        ));
        Ok(p)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the interpreter ended (its state is gone), once it has: "the persistent interpreter
    /// <this>".
    pub fn ended(&self) -> Option<String> {
        self.state().ended.as_ref().map(|e| e.why.clone())
    }

    /// Kills the interpreter; the cell in progress ends, and later cells say that the interpreter
    /// `why` ("was stopped by ...").
    pub fn stop(&self, why: &str) {
        self.state()
            .stopped_because
            .get_or_insert_with(|| why.to_string());
        self.stop.cancel();
    }

    /// Runs a cell. `Err(Gone)`: the interpreter had ended before the cell reached it (nothing
    /// ran); start a new one.
    pub async fn run(
        &self,
        code: &[u8],
        stdin: Option<Vec<u8>>,
        timeout: Duration,
        cap: u64,
        cancel: &CancellationToken,
        cancel_why: impl Fn() -> String,
    ) -> Result<Cell, Gone> {
        let t0 = Instant::now();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (mut out, mut err) = (Captured::new("stdout"), Captured::new("stderr"));
        let number = {
            let mut st = self.state();
            if st.ended.is_some() {
                return Err(Gone);
            }
            st.cell = Some((id, tx));
            st.cells += 1;
            out.prefill(&std::mem::take(&mut st.between_out), cap);
            err.prefill(&std::mem::take(&mut st.between_err), cap);
            st.cells
        };
        self.woken.notify_one();
        let _registered = Registered(self);
        let io = match CallIo::new(code) {
            Ok(io) => io,
            Err(e) => {
                return Ok(Cell {
                    outcome: failed(t0, format!("cannot prepare the cell's pipes: {e}")),
                    number,
                    ended: None,
                });
            }
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
        let fds = [
            code.as_raw_fd(),
            stdin_r.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
        ];
        let zombies = zombie_children(self.pid, MAX_REAPED);
        if self.send_cell(id, &zombies, &fds).await.is_err() {
            return Err(Gone);
        }
        drop((code, stdin_r, stdout_w, stderr_w));
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

        let deadline = tokio::time::Instant::from_std(t0 + timeout);
        let mut done: Option<(i32, Duration)> = None;
        let mut gone: Option<Ending> = None;
        let mut ended_by: Option<(Reason, String)> = None;
        let mut interrupted_at: Option<tokio::time::Instant> = None;
        let mut killed = false;
        let mut drain_until: Option<tokio::time::Instant> = None;
        let (mut obuf, mut ebuf) = (vec![0u8; 16384], vec![0u8; 16384]);
        let interrupt = |at: &mut Option<tokio::time::Instant>| {
            if at.is_none() {
                pidfd_signal(&self.pidfd, libc::SIGINT);
                *at = Some(tokio::time::Instant::now());
            }
        };
        loop {
            let over = done.is_some() || gone.is_some();
            if over && !out.open && !err.open {
                break;
            }
            tokio::select! {
                r = stdout.read(&mut obuf), if out.open => if let Some(o) = out.took(r, &obuf, cap) {
                    ended_by.get_or_insert(o);
                    interrupt(&mut interrupted_at);
                },
                r = stderr.read(&mut ebuf), if err.open => if let Some(o) = err.took(r, &ebuf, cap) {
                    ended_by.get_or_insert(o);
                    interrupt(&mut interrupted_at);
                },
                ev = rx.recv(), if !over => {
                    match ev {
                        Some(Event::Done { status, cpu }) => {
                            done = Some((status, cpu));
                            self.sweep().await;
                        }
                        Some(Event::Refused { errno }) => {
                            done = Some((0, Duration::ZERO));
                            ended_by.get_or_insert((
                                Reason::SandboxError,
                                format!(
                                    "the persistent interpreter refused the cell: {}",
                                    std::io::Error::from_raw_os_error(errno)
                                ),
                            ));
                        }
                        Some(Event::Ended(e)) => gone = Some(e),
                        None => gone = Some(Ending {
                            reason: Reason::SandboxError,
                            detail: "the persistent interpreter's channel closed".into(),
                            why: "lost its channel to the server".into(),
                            exit_code: None,
                            signal: None,
                        }),
                    }
                    drain_until = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                }
                _ = tokio::time::sleep_until(deadline), if ended_by.is_none() && !over => {
                    ended_by = Some((Reason::Timeout, format!("timed out after {:.1} s", timeout.as_secs_f64())));
                    interrupt(&mut interrupted_at);
                }
                _ = cancel.cancelled(), if ended_by.is_none() && !over => {
                    ended_by = Some((Reason::Signaled, cancel_why()));
                    interrupt(&mut interrupted_at);
                }
                _ = async { tokio::time::sleep_until(interrupted_at.unwrap_or(deadline) + INTERRUPT_GRACE).await }, if interrupted_at.is_some() && !killed && !over => {
                    killed = true;
                    self.stop(&format!(
                        "was killed: a cell did not stop within {} s of KeyboardInterrupt",
                        INTERRUPT_GRACE.as_secs()
                    ));
                }
                _ = async { tokio::time::sleep_until(drain_until.unwrap_or(deadline)).await }, if drain_until.is_some() => break,
            }
        }
        if let Some(f) = feeder {
            f.abort();
        }
        let mut outcome = Outcome {
            stdout_truncated: out.cut,
            stderr_truncated: err.cut,
            stdout: out.data,
            stderr: err.data,
            wall_time: t0.elapsed(),
            not_enforced: self.not_enforced.clone(),
            limit_mechanism: LimitMechanism::Supervisor,
            ..Outcome::ended(Reason::Exited, String::new())
        };
        outcome.detail = None;
        // A cell we had the interpreter killed for ends the interpreter, even if its report came
        // in first.
        let ended = match (&gone, killed) {
            (Some(e), _) => Some(e.why.clone()),
            (None, true) => Some(self.ended().unwrap_or_else(|| "was killed".into())),
            (None, false) => None,
        };
        match (gone, done, ended_by) {
            (Some(e), _, Some((reason, detail))) if !e.reason.is_limit() => {
                (outcome.exit_code, outcome.signal) = (e.exit_code, e.signal);
                outcome.reason = reason;
                outcome.detail = Some(format!("{detail}; the persistent interpreter {}", e.why));
            }
            (Some(e), _, _) => {
                (outcome.exit_code, outcome.signal) = (e.exit_code, e.signal);
                outcome.reason = e.reason;
                outcome.detail = Some(e.detail);
            }
            (None, Some(_), Some((reason, detail))) if killed => {
                outcome.reason = reason;
                outcome.detail = Some(format!("{detail}; {}", self.ended().unwrap_or_default()));
            }
            (None, Some((_, cpu)), Some((reason, detail))) => {
                outcome.cpu_time = cpu;
                outcome.reason = reason;
                outcome.detail = Some(detail);
            }
            (None, Some((status, cpu)), None) => {
                outcome.cpu_time = cpu;
                outcome.exit_code = Some(status);
            }
            (None, None, _) => {
                outcome.reason = Reason::SandboxError;
                outcome.detail = Some("the cell ended without a report".into());
            }
        }
        Ok(Cell {
            outcome,
            number,
            ended,
        })
    }

    /// Sends `C <id> <zombie>...` with the cell's descriptors.
    async fn send_cell(
        &self,
        id: u64,
        zombies: &[libc::pid_t],
        fds: &[RawFd],
    ) -> std::io::Result<()> {
        let mut msg = format!("C {id}");
        for z in zombies {
            msg.push_str(&format!(" {z}"));
        }
        loop {
            let mut guard = self.ctl.writable().await?;
            match guard.try_io(|s| send_with_fds(s.as_raw_fd(), msg.as_bytes(), fds)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Kills every process beneath the interpreter: what the cell that just ended left behind.
    async fn sweep(&self) {
        let none = HashSet::new();
        for _ in 0..50 {
            if kill_strays(self.pid, &none) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tracing::warn!(
            pid = self.pid,
            "processes left by a cell survived 50 sweeps; they stay confined and count toward the \
             persistent interpreter's limits"
        );
    }
}

/// Clears the cell in progress when the call ends, however it ends.
struct Registered<'a>(&'a Persistent);
impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.state().cell = None;
    }
}

impl Host for Persistent {
    fn ctl(&self) -> &AsyncFd<OwnedFd> {
        &self.ctl
    }

    fn woken(&self) -> &tokio::sync::Notify {
        &self.woken
    }

    fn activity(&self) -> (Pace, Option<Instant>) {
        let st = self.state();
        let pace = if st.cell.is_some() || st.threads {
            Pace::Busy
        } else {
            Pace::Idle
        };
        (pace, None)
    }

    fn end_if_idle(&self) -> bool {
        false
    }

    fn message(self: Arc<Self>, msg: &[u8], fds: Vec<OwnedFd>) {
        // The interpreter never sends descriptors; any that came are closed unread.
        drop(fds);
        let text = String::from_utf8_lossy(msg);
        let f: Vec<&str> = text.split_ascii_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok());
        let ev = match (f.first().copied(), num(1)) {
            (Some("D"), Some(id)) => {
                self.state().threads = num(4).unwrap_or(0) > 0;
                (
                    id,
                    Event::Done {
                        status: num(2).unwrap_or(1) as i32,
                        cpu: Duration::from_micros(num(3).unwrap_or(0).max(0) as u64),
                    },
                )
            }
            (Some("E"), Some(id)) => (
                id,
                Event::Refused {
                    errno: num(3).unwrap_or(0) as i32,
                },
            ),
            _ => {
                tracing::warn!(message = %text, "the persistent interpreter sent an unexpected message");
                return;
            }
        };
        let st = self.state();
        if let Some((cid, tx)) = &st.cell
            && *cid == ev.0 as u64
        {
            let _ = tx.send(ev.1);
        }
    }

    fn stepped(&self, running: &mut Running) {
        let (o, e) = (running.take_stdout(), running.take_stderr());
        if o.is_empty() && e.is_empty() {
            return;
        }
        let mut st = self.state();
        st.between_out.extend_from_slice(&o);
        st.between_err.extend_from_slice(&e);
    }

    fn ended(&self, outcome: &Outcome, stopped: bool) {
        let mut st = self.state();
        let detail = outcome.detail.clone().unwrap_or_default();
        let ending = if outcome.reason.is_limit() {
            Ending {
                reason: outcome.reason,
                detail: format!(
                    "{detail}; the limits cover the persistent interpreter and its processes \
                     together"
                ),
                why: format!("was killed by the {} limit ({detail})", outcome.reason),
                exit_code: outcome.exit_code,
                signal: outcome.signal,
            }
        } else {
            let why = match (&st.stopped_because, outcome.exit_code, outcome.signal) {
                (Some(why), _, _) if stopped => why.clone(),
                (None, _, _) if stopped => "was stopped".to_string(),
                (_, Some(c), _) => format!("exited (exit code {c})"),
                (_, None, Some(s)) => format!("was killed by signal {s}"),
                _ => format!("ended ({}: {detail})", outcome.reason),
            };
            Ending {
                reason: if stopped {
                    Reason::Signaled
                } else {
                    outcome.reason
                },
                detail: format!("the persistent interpreter {why}"),
                why,
                exit_code: outcome.exit_code,
                signal: outcome.signal,
            }
        };
        if !stopped {
            tracing::info!(pid = self.pid, reason = %ending.reason, why = %ending.why, "a persistent interpreter ended");
        }
        if let Some((_, tx)) = &st.cell {
            let _ = tx.send(Event::Ended(ending.clone()));
        }
        st.ended = Some(ending);
    }
}
