//! The supervisor: one event loop, on the caller's thread, per running sandbox.
//!
//! Everything a run needs attention for is one epoll set: the main process's pidfd (readable when it
//! exits), the stdout/stderr pipes, the stdin pipe while there is input left, and the seccomp
//! listener. [`Running::step`] waits on it with a timeout derived from the deadlines (wall timeout,
//! next resource sample, output drain), handles what is ready and returns. The blocking face calls it
//! in a loop; an async face registers [`Running::fd`] with its own event loop and calls `step` with
//! a zero wait when the fd is readable or [`Running::next_wakeup`] has passed.
//!
//! It creates no thread, installs no signal handler, never calls `waitpid(-1)` and only reaps its
//! own child (through the pidfd). When the main process ends, the rest of its process group is
//! killed before the main process is reaped, as in a container: nothing the sandbox started
//! outlives it.

pub(crate) mod connect;
mod disk;
pub(crate) mod group;
pub(crate) mod notify;
mod output;
mod reconnect;
pub(crate) mod standin;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::error::{SandboxError, Stage};
use crate::kernel::Protection;
use crate::outcome::{LimitMechanism, Outcome, Reason};
use crate::plan::TreeLimits;
use crate::spawn::Started;
use crate::sys;

pub(crate) use connect::SocketRules;
pub(crate) use disk::DiskMeter;
pub(crate) use output::{Capture, Feeder};
pub(crate) use standin::Roots;

const TOKEN_PIDFD: u64 = 1;
const TOKEN_STDOUT: u64 = 2;
const TOKEN_STDERR: u64 = 3;
const TOKEN_STDIN: u64 = 4;
const TOKEN_LISTENER: u64 = 5;
const TOKEN_DISK: u64 = 6;
/// Tokens from here up are blocking TCP connects in progress.
const TOKEN_CONNECT_BASE: u64 = 1 << 32;

/// How often the supervisor measures the tree when a memory, CPU, process or thread limit needs it.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// How often it measures the tree only to report peak memory and CPU time.
const SAMPLE_IDLE: Duration = Duration::from_millis(25);
/// How often a resolver conversation waiting for a name (one an HTTP host pattern admits, asked
/// for the first time) looks again.
const DNS_RETRY: Duration = Duration::from_millis(5);
/// Disk events are read at most this often; in between they pile up (and merge) in the kernel.
const DISK_EVERY: Duration = Duration::from_millis(5);
/// How long to keep reading output once the tree has been killed. Everything the sandbox wrote
/// is in the pipe by then; a writer still open after this is not the sandbox's (a host process
/// that forked without exec while the pipe existed holds a copy of its write end).
const DRAIN_GRACE: Duration = Duration::from_millis(50);

/// The exit status of the main process, from `waitid`.
#[derive(Debug, Clone, Copy)]
struct Exit {
    code: Option<i32>,
    signal: Option<i32>,
    cpu: Duration,
    max_rss: u64,
}

/// A sandboxed command that is running (or has just finished), and its supervisor.
pub struct Running {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    epoll: OwnedFd,
    stdout: Option<Capture>,
    stderr: Option<Capture>,
    stdin: Option<Feeder>,
    listener: Option<notify::Listener>,
    limits: TreeLimits,
    started: Instant,
    deadline: Option<Instant>,
    next_sample: Option<Instant>,
    sample_every: Duration,
    /// When to re-enable the disk watch (it is one-shot, to batch inotify events).
    disk_rearm: Option<Instant>,
    /// The host's own peak RSS at spawn; see [`Running::into_outcome`].
    host_peak: u64,
    drain_until: Option<Instant>,
    exit: Option<Exit>,
    ended_by: Option<(Reason, String)>,
    killed: bool,
    /// Last CPU ticks seen per process, dead ones included.
    cpu_seen: HashMap<libc::pid_t, u64>,
    tree: group::Tree,
    disk: Option<disk::DiskMeter>,
    /// What the writable directories held at the start (the disk cap never ends a run below it).
    disk_floor: u64,
    peak_memory: u64,
    not_enforced: Vec<Protection>,
    sockets: SocketRules,
    connects: HashMap<u64, connect::PendingConnect>,
    /// The sandbox's conversations with its resolver (see `net/dns.rs`), by token.
    dns: HashMap<u64, crate::net::dns::Session>,
    /// When to look again at conversations waiting for a name to be resolved.
    dns_retry: Option<Instant>,
    /// Sockets installed with their connect in progress, for a second `connect` on them.
    reconnects: reconnect::Reconnects,
    /// When to look at those again.
    next_sweep: Option<Instant>,
    /// The `fdinfo` files of descriptors the sandbox connects on, kept open.
    fd_infos: connect::FdInfos,
    next_connect: u64,
    /// What the stand-ins for Landlock features remember (see `standin/`).
    standin: standin::State,
    /// The run's own cgroup v2, when it has one (see `cgroup.rs`).
    cgroup: Option<crate::cgroup::RunCgroup>,
    /// The filesystem view, and what it remembers (see `crate::fsview`).
    view: Option<std::sync::Arc<crate::fsview::View>>,
    fsview: crate::fsview::State,
    /// The run's private `/tmp`, removed when the run is over.
    private_tmp: Option<crate::fsview::tmp::PrivateTmp>,
    /// The copy-on-write work directory's layers, and when its changes are applied.
    cow: Option<(
        std::sync::Arc<crate::fsview::cow::Cow>,
        crate::policy::CommitMode,
    )>,
    /// Which syscalls the stand-ins decide (a view routes some of them for its own reasons).
    standin_routes: standin::Routes,
}

/// The filesystem view of one run.
pub(crate) struct RunView {
    pub(crate) view: Option<std::sync::Arc<crate::fsview::View>>,
    pub(crate) private_tmp: Option<crate::fsview::tmp::PrivateTmp>,
    pub(crate) cow: Option<(
        std::sync::Arc<crate::fsview::cow::Cow>,
        crate::policy::CommitMode,
    )>,
    pub(crate) standins: standin::Routes,
}

/// Pipes, meters and the filesystem view the supervisor takes over from a freshly started child.
pub(crate) struct Io {
    pub(crate) stdout: Option<Capture>,
    pub(crate) stderr: Option<Capture>,
    pub(crate) stdin: Option<Feeder>,
    /// The `max_disk` meter, started before the child (see [`watch_disk`]).
    pub(crate) disk: Option<DiskMeter>,
    pub(crate) fs: RunView,
}

impl Running {
    pub(crate) fn new(
        started: Started,
        io: Io,
        limits: TreeLimits,
        sockets: SocketRules,
        not_enforced: Vec<Protection>,
        cgroup: Option<crate::cgroup::RunCgroup>,
        t0: Instant,
    ) -> Result<Running, SandboxError> {
        // SAFETY: epoll_create1 takes a flag.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            let err = SandboxError::last_os(Stage::Supervise, "cannot create the epoll set");
            group::kill(started.pid);
            crate::spawn::reap(&started.pidfd);
            return Err(err);
        }
        // SAFETY: epoll_create1 just returned this descriptor.
        let epoll = unsafe { sys::owned(ep) };
        let every = default_sample_every(&limits);
        let mut r = Running {
            pid: started.pid,
            pidfd: Some(started.pidfd),
            epoll,
            stdout: io.stdout,
            stderr: io.stderr,
            stdin: io.stdin,
            listener: started.listener.map(notify::Listener::new),
            deadline: limits.timeout.map(|t| t0 + t),
            next_sample: Some(t0 + every),
            sample_every: every,
            disk_rearm: None,
            host_peak: host_peak_rss(),
            limits,
            started: t0,
            drain_until: None,
            exit: None,
            ended_by: None,
            killed: false,
            cpu_seen: HashMap::new(),
            tree: group::Tree::new(started.pid, t0),
            disk: None,
            disk_floor: 0,
            peak_memory: 0,
            not_enforced,
            sockets,
            connects: HashMap::new(),
            dns: HashMap::new(),
            dns_retry: None,
            reconnects: reconnect::Reconnects::default(),
            fd_infos: connect::FdInfos::default(),
            next_sweep: None,
            next_connect: TOKEN_CONNECT_BASE,
            standin: standin::State::default(),
            cgroup,
            view: io.fs.view,
            fsview: crate::fsview::State::default(),
            private_tmp: io.fs.private_tmp,
            cow: io.fs.cow,
            standin_routes: io.fs.standins,
        };
        // One sample right away, while the command has surely just started: one that ends before
        // the first periodic sample still gets a peak memory (ru_maxrss cannot be trusted for it,
        // see into_outcome).
        r.sample();
        if let Some(m) = io.disk {
            // A workspace already over the cap (left so by an earlier run) may still be cleaned
            // up: the cap then holds what was there before the run, and only growth ends it.
            r.disk_floor = m.total();
            r.disk = Some(m);
        }
        let mut regs = vec![];
        if let Some(d) = &r.disk {
            regs.push((d.fd(), libc::EPOLLIN | libc::EPOLLONESHOT, TOKEN_DISK));
        }
        if let Some(p) = &r.pidfd {
            regs.push((p.as_raw_fd(), libc::EPOLLIN, TOKEN_PIDFD));
        }
        if let Some(c) = &r.stdout {
            regs.push((c.fd(), libc::EPOLLIN, TOKEN_STDOUT));
        }
        if let Some(c) = &r.stderr {
            regs.push((c.fd(), libc::EPOLLIN, TOKEN_STDERR));
        }
        if let Some(f) = &r.stdin {
            regs.push((f.fd(), libc::EPOLLOUT, TOKEN_STDIN));
        }
        if let Some(l) = &r.listener {
            l.prefer_same_cpu();
            regs.push((l.fd(), libc::EPOLLIN, TOKEN_LISTENER));
        }
        for (fd, events, token) in regs {
            if let Err(e) = r.watch(fd, events, token) {
                r.kill_tree();
                return Err(e);
            }
        }
        Ok(r)
    }

    /// The process id of the main process (also the sandbox's process group id).
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// A file descriptor that becomes readable whenever [`Running::step`] has work to do. Register
    /// it with an event loop (it is an epoll fd, which is itself pollable).
    pub fn fd(&self) -> i32 {
        self.epoll.as_raw_fd()
    }

    /// The seccomp listener, while the sandbox can still notify. [`Running::fd`] covers it too; a
    /// caller that blocks in `poll` can add this descriptor to its set so that a notification
    /// hands the CPU straight to it (a direct wakeup does, one through the epoll set does not),
    /// which is most of what a supervised `connect` costs.
    pub fn listener_fd(&self) -> Option<i32> {
        self.listener.as_ref().map(notify::Listener::fd)
    }

    /// The next moment `step` must run even if [`Running::fd`] stays quiet (a deadline or a sample).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let deadline = if self.killed { None } else { self.deadline };
        [
            deadline,
            self.next_sample,
            self.drain_until,
            self.disk_rearm,
            self.dns_retry,
            self.next_sweep,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Changes how often the tree is sampled for its limits (memory, CPU, processes, threads),
    /// from now on; sampled more slowly than usual, it is also rescanned whole (for processes
    /// whose parent exited unseen) only once in ten samples. A caller that knows the tree is idle
    /// (a fork server between calls) samples it rarely, and goes back to the default
    /// ([`Running::default_sample_every`]) when work arrives.
    pub fn set_sample_every(&mut self, every: Duration) {
        if every == self.sample_every {
            return;
        }
        self.sample_every = every;
        self.tree.set_sample_every(every);
        if self.exit.is_none() {
            let next = Instant::now() + every;
            self.next_sample = Some(self.next_sample.map_or(next, |n| n.min(next)));
        }
    }

    /// How often a tree with a memory or CPU limit is sampled by default.
    pub fn default_sample_every(&self) -> Duration {
        default_sample_every(&self.limits)
    }

    /// Whether the run has finished: the main process is reaped and the output is read.
    pub fn is_done(&self) -> bool {
        if self.exit.is_none() {
            return false;
        }
        let open = |c: &Option<Capture>| c.as_ref().is_some_and(|c| !c.eof);
        let draining = open(&self.stdout) || open(&self.stderr);
        !draining || self.drain_until.is_some_and(|t| Instant::now() >= t)
    }

    /// Waits up to `wait` (forever if `None`, but never past [`Running::next_wakeup`]) for
    /// something to happen, and handles it. Returns whether the run is done.
    pub fn step(&mut self, wait: Option<Duration>) -> Result<bool, SandboxError> {
        if self.is_done() {
            return Ok(true);
        }
        let now = Instant::now();
        let until_wakeup = self.next_wakeup().map(|t| t.saturating_duration_since(now));
        let timeout = match (wait, until_wakeup) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let ms = timeout.map_or(-1, |d| {
            // Round up so that we do not wake a millisecond early and spin.
            i32::try_from(d.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
        });
        let ms = match (ms, self.listener_fd()) {
            (0, _) | (_, None) => ms,
            (ms, Some(l)) => {
                // Wait on the listener itself beside the set, for the direct wakeup (see
                // `listener_fd`); the set then says what is ready.
                let mut fds = [
                    libc::pollfd {
                        fd: self.epoll.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: l,
                        events: libc::POLLIN,
                        revents: 0,
                    },
                ];
                // SAFETY: poll reads and writes the two entries of `fds`.
                unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
                0
            }
        };
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: epoll_wait writes at most `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                ms,
            )
        };
        if n < 0 {
            let e = sys::errno();
            if e != libc::EINTR {
                return Err(SandboxError::new(
                    Stage::Supervise,
                    Some(e),
                    "epoll_wait failed",
                ));
            }
        }
        for ev in events.iter().take(n.max(0) as usize) {
            let (token, flags) = (ev.u64, ev.events);
            match token {
                TOKEN_PIDFD => self.on_main_exit()?,
                TOKEN_STDOUT | TOKEN_STDERR => self.on_output(token)?,
                TOKEN_STDIN => self.on_stdin(),
                TOKEN_LISTENER => self.on_notification(flags)?,
                TOKEN_DISK => self.on_disk(),
                t if t >= TOKEN_CONNECT_BASE => self.on_connected(t),
                _ => {}
            }
        }
        self.on_timers();
        Ok(self.is_done())
    }

    /// Runs [`Running::step`] until the run is done, then returns the outcome.
    pub fn wait(mut self) -> Result<Outcome, SandboxError> {
        while !self.step(None)? {}
        Ok(self.into_outcome())
    }

    /// Stdout captured since the last call (for streaming readers). What is taken here is not in
    /// the final [`Outcome::stdout`].
    pub fn take_stdout(&mut self) -> Vec<u8> {
        self.stdout.as_mut().map(Capture::take).unwrap_or_default()
    }

    /// Stderr captured since the last call; see [`Running::take_stdout`].
    pub fn take_stderr(&mut self) -> Vec<u8> {
        self.stderr.as_mut().map(Capture::take).unwrap_or_default()
    }

    /// Sends `signal` to every process of the sandbox (for example to pass on an interrupt).
    pub fn signal(&self, signal: i32) {
        if self.exit.is_none() {
            // SAFETY: kill takes integers; the group id is our unreaped child's pid.
            unsafe {
                libc::kill(-self.pid, signal);
            }
        }
    }

    /// Kills the whole sandbox now. The outcome will say `reason` (use [`Reason::Signaled`] for a
    /// plain cancellation).
    pub fn kill(&mut self, reason: Reason, detail: impl Into<String>) {
        self.end(reason, detail.into());
    }

    /// Like [`Running::into_outcome`], but also hands back what the finished run still holds (the
    /// inotify instance behind `max_disk`). Closing an inotify instance waits for a kernel grace
    /// period (10-20 ms), so a server can drop the [`Residue`] off its request path.
    pub fn into_outcome_and_residue(mut self) -> (Outcome, Residue) {
        let outcome = self.finish();
        let residue = Residue {
            _disk: self.disk.take(),
            _cgroup: self.cgroup.take(),
            _private_tmp: self.private_tmp.take(),
            _view: (self.view.take(), self.cow.take().map(|(c, _)| c)),
        };
        (outcome, residue)
    }

    /// The outcome. Call when [`Running::is_done`]; before that, the run is killed first.
    pub fn into_outcome(mut self) -> Outcome {
        self.finish()
    }

    fn finish(&mut self) -> Outcome {
        if self.exit.is_none() {
            self.end(
                Reason::Signaled,
                "the run was abandoned before it finished".into(),
            );
            let _ = self.reap();
        }
        let exit = self.exit.unwrap_or(Exit {
            code: None,
            signal: Some(libc::SIGKILL),
            cpu: Duration::ZERO,
            max_rss: 0,
        });
        // A kernel limit hit after the last sample (a sample ends the run at once otherwise), or
        // the disk cap passed after the last batch of inotify events was read.
        let late = match self.ended_by.take() {
            Some(e) => Some(e),
            None => self.cgroup_verdict().or_else(|| self.disk_verdict()),
        };
        let (reason, detail) = match late {
            Some((r, d)) => (r, Some(d)),
            None if exit.code.is_some() => (Reason::Exited, None),
            None if exit.signal.is_none() => (
                Reason::Exited,
                Some(
                    "exit status unavailable: the host ignores SIGCHLD, so the kernel reaped the \
                     command before sandlock could (Linux 6.15 keeps it; this kernel did not)"
                        .into(),
                ),
            ),
            None if exit.signal == Some(libc::SIGXFSZ) => (
                Reason::Disk,
                Some(
                    "a file grew past max_file_size (or max_disk); the kernel sent SIGXFSZ".into(),
                ),
            ),
            None if exit.signal == Some(libc::SIGXCPU) => (
                Reason::Cpu,
                Some("the kernel's CPU limit sent SIGXCPU".into()),
            ),
            None => (Reason::Signaled, None),
        };
        let kernel_limits = self
            .cgroup
            .as_ref()
            .map(|c| c.kernel_limits())
            .unwrap_or_default();
        let cgroup_cpu = self.cgroup.as_ref().and_then(|c| c.cpu_time());
        let cgroup_peak = self.cgroup.as_ref().and_then(|c| c.peak_memory());
        let sampled_cpu = Duration::from_secs_f64(
            self.cpu_seen.values().sum::<u64>() as f64 / group::ticks_per_second() as f64,
        );
        let (stdout_truncated, stdout) = take_capture(self.stdout.take());
        let (stderr_truncated, stderr) = take_capture(self.stderr.take());
        let success = reason == Reason::Exited && exit.code == Some(0);
        // The work directory's changes are read and applied once nothing of the run is left to
        // change them.
        let (changes, commit) = match &self.cow {
            Some((cow, mode)) => {
                let quiet = group::wait_empty(self.pid, COW_SETTLE);
                let (changes, report) = cow.settle(*mode, success, quiet);
                (changes, Some(report))
            }
            None => (Vec::new(), None),
        };
        Outcome {
            reason,
            exit_code: exit.code,
            signal: exit.signal,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            wall_time: self.started.elapsed(),
            cpu_time: exit
                .cpu
                .max(sampled_cpu)
                .max(cgroup_cpu.unwrap_or_default()),
            // A child cloned with CLONE_VM inherits the host's memory high-water mark at exec, so
            // ru_maxrss only says something about the sandbox when it is above the host's own.
            peak_memory: if exit.max_rss > self.host_peak {
                exit.max_rss.max(self.peak_memory)
            } else {
                self.peak_memory
            }
            .max(cgroup_peak.unwrap_or(0)),
            not_enforced: std::mem::take(&mut self.not_enforced),
            warnings: self.sockets.run_log.take(),
            limit_mechanism: if !kernel_limits.is_empty() {
                LimitMechanism::CgroupV2
            } else if self.limits.max_memory.is_some()
                || self.limits.max_processes.is_some()
                || self.limits.max_threads.is_some()
                || self.limits.max_cpu.is_some()
            {
                LimitMechanism::Supervisor
            } else {
                LimitMechanism::None
            },
            kernel_limits,
            detail,
            error: None,
            changes,
            commit,
        }
    }

    fn watch(&self, fd: i32, events: libc::c_int, token: u64) -> Result<(), SandboxError> {
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: registers a descriptor we own with our own epoll set.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0
        {
            return Err(SandboxError::last_os(
                Stage::Supervise,
                "cannot watch a descriptor",
            ));
        }
        Ok(())
    }

    fn unwatch(&self, fd: i32) {
        // SAFETY: removes a descriptor from our own epoll set; failure only means it was not there.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            );
        }
    }

    /// Ends the run for `reason`: the first reason wins, and the whole tree is killed.
    fn end(&mut self, reason: Reason, detail: String) {
        // Output past the cap is found while draining, possibly after the main process exited;
        // the run still lost output, so it still ends with reason `output`, whatever the timing.
        if self.ended_by.is_none() && (self.exit.is_none() || reason == Reason::Output) {
            self.ended_by = Some((reason, detail));
        }
        self.kill_tree();
    }

    fn kill_tree(&mut self) {
        if self.exit.is_none() {
            group::kill(self.pid);
            if let Some(c) = &self.cgroup {
                c.kill();
            }
            self.killed = true;
        }
    }

    fn on_main_exit(&mut self) -> Result<(), SandboxError> {
        // A limit the main process died of (a failed write at the disk cap, say) may still be in
        // the event queue; account for it before the exit status decides the reason.
        self.on_disk();
        // Leftovers (background jobs, daemons) go down with the main process; the main process is
        // still a zombie here, so its group id cannot have been reused.
        group::kill(self.pid);
        if let Some(c) = &self.cgroup {
            c.kill();
        }
        self.killed = true;
        self.reap()?;
        self.drain_until = Some(Instant::now() + DRAIN_GRACE);
        Ok(())
    }

    fn reap(&mut self) -> Result<(), SandboxError> {
        let Some(pidfd) = self.pidfd.take() else {
            return Ok(());
        };
        self.unwatch(pidfd.as_raw_fd());
        let mut info = crate::spawn::unsafe_zeroed_siginfo();
        // SAFETY: rusage is plain data; all-zero is valid.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: waitid on our own child's pidfd; the kernel writes `info` and `ru`.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_waitid,
                    libc::P_PIDFD,
                    pidfd.as_raw_fd(),
                    &mut info,
                    libc::WEXITED | libc::__WALL,
                    &mut ru,
                )
            };
            if r == 0 {
                break;
            }
            let e = sys::errno();
            if e == libc::ECHILD {
                // The host ignores SIGCHLD (or set SA_NOCLDWAIT), so the kernel reaped the child
                // itself. Linux 6.15 still tells the exit status through the pidfd.
                self.exit = Some(exit_from_pidfd(&pidfd).unwrap_or(Exit {
                    code: None,
                    signal: None,
                    cpu: Duration::ZERO,
                    max_rss: 0,
                }));
                return Ok(());
            }
            if e != libc::EINTR {
                return Err(SandboxError::new(
                    Stage::Wait,
                    Some(e),
                    "cannot reap the sandbox's main process",
                ));
            }
        }
        // SAFETY: waitid filled `info` for a CLD_* event, so si_status is the status field.
        let status = unsafe { info.si_status() };
        let (code, signal) = match info.si_code {
            libc::CLD_EXITED => (Some(status), None),
            _ => (None, Some(status)),
        };
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
        self.exit = Some(Exit {
            code,
            signal,
            cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
            max_rss: (ru.ru_maxrss as u64) * 1024,
        });
        Ok(())
    }

    fn on_output(&mut self, token: u64) -> Result<(), SandboxError> {
        let (cap, name) = if token == TOKEN_STDOUT {
            (&mut self.stdout, "stdout")
        } else {
            (&mut self.stderr, "stderr")
        };
        let Some(c) = cap.as_mut() else {
            return Ok(());
        };
        let drained = c.drain().map_err(|e| {
            SandboxError::io(
                Stage::Supervise,
                &e,
                format!("cannot read the sandbox's {name}"),
            )
        })?;
        let fd = c.fd();
        match drained {
            output::Drained::More => {}
            output::Drained::Eof => self.unwatch(fd),
            output::Drained::Overflow => {
                let eof = c.eof;
                if eof {
                    self.unwatch(fd);
                }
                let cap = self.limits.max_output;
                self.end(
                    Reason::Output,
                    format!("{name} exceeded max_output ({cap}); output truncated"),
                );
            }
        }
        Ok(())
    }

    fn on_stdin(&mut self) {
        if let Some(f) = self.stdin.as_mut() {
            if f.feed() {
                let fd = f.fd();
                self.unwatch(fd);
                self.stdin = None;
            }
        }
    }

    fn on_connected(&mut self, token: u64) {
        if self.dns.contains_key(&token) {
            return self.on_dns(token);
        }
        let Some(p) = self.connects.remove(&token) else {
            return;
        };
        self.unwatch(p.sock.as_raw_fd());
        if let Some(l) = self.listener.as_ref() {
            connect::finish_connect(l, p, &mut self.reconnects);
        }
    }

    /// The sandbox asked its resolver something (or closed it): answer, and keep watching while
    /// the conversation lasts.
    fn on_dns(&mut self, token: u64) {
        let names = self.sockets.net.names().clone();
        let Some(s) = self.dns.get_mut(&token) else {
            return;
        };
        let (fd, alive, pending) = (s.fd(), s.on_ready(&names), s.pending());
        if !alive {
            self.unwatch(fd);
            self.dns.remove(&token);
            return;
        }
        if s.waiting() && self.dns_retry.is_none() {
            self.dns_retry = Some(Instant::now() + DNS_RETRY);
        }
        let events = if pending {
            libc::EPOLLIN | libc::EPOLLOUT
        } else {
            libc::EPOLLIN
        };
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: changes our own registration of a descriptor we hold.
        unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, &mut ev) };
    }

    fn on_disk(&mut self) {
        let Some(d) = self.disk.as_mut() else {
            return;
        };
        d.update();
        if self.disk_rearm.is_none() {
            self.disk_rearm = Some(Instant::now() + DISK_EVERY);
        }
        self.check_disk();
    }

    /// Directories paused during write bursts get `IN_MODIFY` back and are measured.
    fn resume_disk(&mut self) {
        if let Some(d) = self.disk.as_mut().filter(|d| d.has_paused()) {
            d.resume();
            self.check_disk();
        }
    }

    /// Whether the writable directories ended the run over `max_disk`. Events are read in
    /// batches (`DISK_EVERY`), so a command that passes the cap and exits at once can be reaped
    /// before they are: say a shell whose `head -c 2M > f` is killed by `RLIMIT_FSIZE` (which
    /// sits just above the cap) and that then exits with 153.
    fn disk_verdict(&mut self) -> Option<(Reason, String)> {
        let d = self.disk.as_mut()?;
        d.update();
        if d.has_paused() {
            d.resume();
        }
        self.over_disk()
    }

    fn check_disk(&mut self) {
        if self.exit.is_none() {
            if let Some((reason, detail)) = self.over_disk() {
                self.end(reason, detail);
            }
        }
    }

    /// `max_disk` is exceeded (beyond what the directories held at the start).
    fn over_disk(&self) -> Option<(Reason, String)> {
        let (d, cap) = (self.disk.as_ref()?, self.limits.max_disk?);
        let used = d.total();
        (used > cap.bytes().max(self.disk_floor)).then(|| {
            (
                Reason::Disk,
                format!(
                    "the writable directories hold {}, over max_disk ({cap})",
                    crate::policy::ByteSize(used)
                ),
            )
        })
    }

    fn on_notification(&mut self, flags: u32) -> Result<(), SandboxError> {
        let Some(l) = self.listener.as_ref() else {
            return Ok(());
        };
        if flags & (libc::EPOLLHUP as u32) != 0 && flags & (libc::EPOLLIN as u32) == 0 {
            // Every process under the filter is gone.
            self.unwatch(l.fd());
            self.listener = None;
            return Ok(());
        }
        let n = match l.recv() {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(SandboxError::io(
                    Stage::Notify,
                    &e,
                    "cannot receive a seccomp notification",
                ));
            }
        };
        if let Some(view) = self.view.as_deref() {
            if crate::fsview::handles(n.nr)
                && crate::fsview::handle(l, &n, view, &mut self.fsview)
                    == crate::fsview::Verdict::Answered
            {
                return Ok(());
            }
            if !self.standin_routes.routes(n.nr) {
                // Routed for the view only, and not the view's: the kernel decides, as without one.
                if crate::fsview::handles(n.nr) {
                    l.allow(n.id);
                    return Ok(());
                }
            }
        }
        match n.nr {
            libc::SYS_connect => {
                match connect::on_connect(
                    l,
                    &n,
                    &self.sockets,
                    self.pid,
                    &mut self.reconnects,
                    &mut self.fd_infos,
                    self.view.as_deref(),
                ) {
                    Some(connect::Connecting::Tcp(p)) => {
                        let token = self.next_connect;
                        self.next_connect += 1;
                        match self.watch(p.sock.as_raw_fd(), libc::EPOLLOUT, token) {
                            Ok(()) => {
                                self.connects.insert(token, p);
                            }
                            Err(_) => {
                                if let Some(l) = self.listener.as_ref() {
                                    connect::finish_connect(l, p, &mut self.reconnects);
                                }
                            }
                        }
                    }
                    Some(connect::Connecting::Dns(s)) => {
                        let token = self.next_connect;
                        self.next_connect += 1;
                        if self.watch(s.fd(), libc::EPOLLIN, token).is_ok() {
                            self.dns.insert(token, s);
                        }
                    }
                    None => {}
                }
            }
            libc::SYS_listen => connect::on_listen(l, &n, &self.sockets),
            nr if standin::handles(nr) => standin::handle(
                l,
                &n,
                &standin::Scope {
                    pgid: self.pid,
                    sockets: &self.sockets,
                },
                &mut self.standin,
            ),
            // The filter hands over nothing else.
            _ => l.deny(n.id, libc::ENOSYS),
        }
        Ok(())
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        if self.next_sweep.is_some_and(|t| now >= t) {
            self.next_sweep = None;
            self.reconnects.sweep();
        }
        if self.next_sweep.is_none() && self.reconnects.holding() {
            self.next_sweep = Some(now + reconnect::SWEEP_EVERY);
        }
        if self.dns_retry.is_some_and(|t| now >= t) {
            self.dns_retry = None;
            let waiting: Vec<u64> = self
                .dns
                .iter()
                .filter(|(_, s)| s.waiting())
                .map(|(t, _)| *t)
                .collect();
            for token in waiting {
                self.on_dns(token);
            }
        }
        if let Some(d) = self.deadline {
            if now >= d && !self.killed {
                let t = self.limits.timeout.unwrap_or_default();
                self.end(Reason::Timeout, format!("timed out after {}", fmt_secs(t)));
            }
        }
        if self.disk_rearm.is_some_and(|t| now >= t) {
            self.disk_rearm = None;
            self.resume_disk();
            if let Some(d) = &self.disk {
                let mut ev = libc::epoll_event {
                    events: (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
                    u64: TOKEN_DISK,
                };
                // SAFETY: re-enables our own one-shot registration.
                unsafe {
                    libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_MOD, d.fd(), &mut ev)
                };
            }
        }
        if let Some(s) = self.next_sample {
            if now >= s {
                if self.exit.is_none() {
                    self.sample();
                    self.next_sample = Some(now + self.sample_every);
                } else {
                    self.next_sample = None;
                }
            }
        }
    }

    /// The reason to end the run when its cgroup says the kernel enforced a limit: its OOM path ran
    /// (`memory.events`), or `pids.max` refused a task (`pids.events`). A program that handles the
    /// refusal (`EAGAIN` from `clone`, `ENOMEM`) still hit the cap, and every limit is hard.
    fn cgroup_verdict(&self) -> Option<(Reason, String)> {
        let c = self.cgroup.as_ref()?;
        let dir = c.dir().display().to_string();
        if c.oom_events() > 0 {
            let max = self.limits.max_memory.unwrap_or(crate::policy::ByteSize(0));
            Some((
                Reason::Memory,
                format!(
                    "the tree reached max_memory ({max}), enforced by the kernel (memory.max of \
                     cgroup {dir})"
                ),
            ))
        } else if c.pids_refused() > 0 {
            let cap = match (self.limits.max_threads, self.limits.max_processes) {
                (Some(t), _) => format!("max_threads={t}"),
                (None, Some(p)) => format!(
                    "pids.max={}, the backstop for max_processes={p} ({} tasks per process)",
                    self.limits.pids_max().unwrap_or(0),
                    crate::plan::BACKSTOP_TASKS_PER_PROCESS
                ),
                (None, None) => "pids.max".to_string(),
            };
            Some((
                Reason::Processes,
                format!("the kernel refused a new task at {cap} (pids.max of cgroup {dir})"),
            ))
        } else {
            None
        }
    }

    /// Why the run ends when a sample found the tree over the process or thread cap.
    ///
    /// They are sampled, not decided at each `fork`/`clone`: a syscall the supervisor must answer
    /// waits in an interruptible sleep until the supervisor has received it, and a signal caught
    /// in that time by a handler without `SA_RESTART` makes it fail with EINTR without having run.
    /// `fork` never fails that way natively, so programs do not retry it: dash's SIGCHLD handler
    /// turned a child exiting during the next `fork` into "Cannot fork" (issue 13's flake). No
    /// flag closes that window (`WAIT_KILLABLE_RECV` only covers the time after the pick-up), so
    /// process creation stays in the kernel and a run over a cap is killed at the next sample.
    ///
    /// A sample stops counting once the tree is over a cap (see [`group::Tree::sample`]), so the
    /// numbers in the detail are what it had counted by then.
    fn over_counts(&self, processes: u32, threads: u32) -> (Reason, String) {
        let detail = match (self.limits.max_processes, self.limits.max_threads) {
            (Some(m), _) if processes > m => {
                format!("{processes} processes were running, over max_processes={m}")
            }
            (_, Some(m)) => format!("{threads} threads were running, over max_threads={m}"),
            _ => format!("{processes} processes and {threads} threads were running"),
        };
        (Reason::Processes, detail)
    }

    /// Measures the tree and enforces the memory, CPU, process and thread limits.
    fn sample(&mut self) {
        if let Some((reason, detail)) = self.cgroup_verdict() {
            self.end(reason, detail);
            return;
        }
        let cap = group::Cap {
            processes: self.limits.max_processes,
            threads: self.limits.max_threads,
        };
        let members = match self.tree.sample(Instant::now(), cap) {
            group::Sample::Members(m) => m,
            group::Sample::Over { processes, threads } => {
                let (reason, detail) = self.over_counts(processes, threads);
                self.end(reason, detail);
                return;
            }
        };
        let rss: u64 = members.iter().map(|m| m.rss).sum();
        self.peak_memory = self.peak_memory.max(rss);
        for m in &members {
            let seen = self.cpu_seen.entry(m.pid).or_insert(0);
            *seen = (*seen).max(m.cpu_ticks);
        }
        if let Some(max) = self.limits.max_memory {
            if rss > max.bytes() {
                self.end(
                    Reason::Memory,
                    format!(
                        "used {} of memory, over max_memory ({max})",
                        crate::policy::ByteSize(rss)
                    ),
                );
                return;
            }
        }
        if let Some(max) = self.limits.max_cpu {
            let ticks: u64 = self.cpu_seen.values().sum();
            let used = Duration::from_secs_f64(ticks as f64 / group::ticks_per_second() as f64);
            if used > max {
                self.end(
                    Reason::Cpu,
                    format!(
                        "used {} of CPU, over max_cpu ({})",
                        fmt_secs(used),
                        fmt_secs(max)
                    ),
                );
            }
        }
    }
}

/// The meter behind `max_disk`, started before the command so that what the workspace holds at the
/// start (the floor the cap never ends a run below) is measured before the command can write.
pub(crate) fn watch_disk(limits: &TreeLimits) -> Result<Option<DiskMeter>, SandboxError> {
    if limits.max_disk.is_none() {
        return Ok(None);
    }
    DiskMeter::new(&limits.disk_roots).map(Some).map_err(|e| {
        SandboxError::io(
            Stage::Prepare,
            &e,
            "cannot watch the writable directories for max_disk (inotify)",
        )
    })
}

/// Kernel objects a finished run still holds; dropping this releases them, which may block for a
/// kernel grace period (see [`Running::into_outcome_and_residue`]).
pub struct Residue {
    _disk: Option<disk::DiskMeter>,
    /// Removing the run's cgroup waits until the kernel has let its last member go.
    _cgroup: Option<crate::cgroup::RunCgroup>,
    /// Removing a private `/tmp` takes as long as what the sandbox left in it.
    _private_tmp: Option<crate::fsview::tmp::PrivateTmp>,
    /// So does removing a work directory's upper layer.
    _view: (
        Option<std::sync::Arc<crate::fsview::View>>,
        Option<std::sync::Arc<crate::fsview::cow::Cow>>,
    ),
}

/// How long the end of a run with a work directory waits for its killed processes to be gone.
const COW_SETTLE: Duration = Duration::from_secs(5);

fn default_sample_every(limits: &TreeLimits) -> Duration {
    if limits.max_memory.is_some()
        || limits.max_cpu.is_some()
        || limits.max_processes.is_some()
        || limits.max_threads.is_some()
    {
        SAMPLE_EVERY
    } else {
        SAMPLE_IDLE
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.kill_tree();
            let _ = self.reap();
        }
    }
}

/// The exit status kept by the pidfd (`PIDFD_GET_INFO` with `PIDFD_INFO_EXIT`, Linux 6.15), for a
/// child the kernel reaped itself.
fn exit_from_pidfd(pidfd: &OwnedFd) -> Option<Exit> {
    #[repr(C)]
    #[derive(Default)]
    struct PidfdInfo {
        mask: u64,
        cgroupid: u64,
        ids: [u32; 11],
        exit_code: i32,
        coredump_mask: u32,
        spare: u32,
    }
    const PIDFD_INFO_EXIT: u64 = 1 << 3;
    // _IOWR(PIDFS_IOCTL_MAGIC 0xFF, 11, struct pidfd_info)
    let request = (3 << 30) | ((std::mem::size_of::<PidfdInfo>() as u64) << 16) | (0xFF << 8) | 11;
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_EXIT,
        ..PidfdInfo::default()
    };
    // SAFETY: PIDFD_GET_INFO reads the requested mask and writes one pidfd_info.
    let r = unsafe { libc::ioctl(pidfd.as_raw_fd(), request as libc::Ioctl, &mut info) };
    if r != 0 || info.mask & PIDFD_INFO_EXIT == 0 {
        return None;
    }
    let status = info.exit_code;
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else {
        (None, Some(libc::WTERMSIG(status)))
    };
    Some(Exit {
        code,
        signal,
        cpu: Duration::ZERO,
        max_rss: 0,
    })
}

/// This process's peak resident memory (`ru_maxrss`), in bytes.
fn host_peak_rss() -> u64 {
    // SAFETY: rusage is plain data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid for writing.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
        (ru.ru_maxrss as u64) * 1024
    } else {
        u64::MAX
    }
}

fn take_capture(c: Option<Capture>) -> (bool, Vec<u8>) {
    match c {
        Some(c) => (c.truncated, c.into_bytes()),
        None => (false, Vec::new()),
    }
}

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 && s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.2} s")
    }
}
