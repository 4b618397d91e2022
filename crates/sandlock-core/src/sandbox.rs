//! The public entry point: a [`Sandbox`] (a validated policy with its prepared plan) runs
//! [`Command`]s.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{Error, PolicyError, SandboxError, Stage};
use crate::kernel::{KernelSupport, Protection};
use crate::outcome::Outcome;
use crate::plan::{RunPlan, SandboxPlan};
use crate::policy::Policy;
use crate::spawn::{self, ChildArgs, Launch, MAX_FD_MAP};
use crate::supervisor::{Capture, Feeder, Io, Running};
use crate::sys;

/// Where a standard stream of the command goes.
#[derive(Debug, Default)]
#[non_exhaustive]
pub enum Stdio {
    /// Captured into the outcome (stdout, stderr) or empty input (stdin). The default.
    #[default]
    Capture,
    /// Shared with the caller's own stream (for a CLI).
    Inherit,
    /// `/dev/null`.
    Null,
    /// For stdin only: these bytes, then end of file.
    Bytes(Vec<u8>),
    /// A descriptor the caller owns (a pipe, a file, a pty).
    Fd(OwnedFd),
}

/// One command to run in a sandbox, with its per-run options.
#[derive(Debug, Default)]
pub struct Command {
    argv: Vec<OsString>,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
    timeout: Option<Duration>,
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    pass_fds: Vec<(OwnedFd, RawFd)>,
}

impl Command {
    /// A command from its argument vector (`argv[0]` is looked up in the sandbox's `PATH`).
    pub fn new<I, S>(argv: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Command {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Command::default()
        }
    }

    /// Sets stdin (default: empty).
    pub fn stdin(mut self, s: Stdio) -> Self {
        self.stdin = s;
        self
    }

    /// Sets stdout (default: captured).
    pub fn stdout(mut self, s: Stdio) -> Self {
        self.stdout = s;
        self
    }

    /// Sets stderr (default: captured).
    pub fn stderr(mut self, s: Stdio) -> Self {
        self.stderr = s;
        self
    }

    /// Overrides the policy's timeout for this run.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Sets an environment variable for this run (on top of the policy's).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Overrides the policy's working directory for this run.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Passes `fd` to the command as descriptor number `target` (3 or above).
    pub fn pass_fd(mut self, fd: OwnedFd, target: RawFd) -> Self {
        self.pass_fds.push((fd, target));
        self
    }
}

/// A validated policy, ready to run commands. Cheap to share: `run` takes `&self` and may be called
/// from many threads at once.
pub struct Sandbox {
    /// Children confined ahead of their run (dropped, and so killed, before the plan whose
    /// ruleset and filter they were made from).
    pool: spawn::pool::Pool,
    /// Whether this sandbox may keep a child waiting (see `spawn::pool` for when it may).
    pool_ok: bool,
    plan: SandboxPlan,
}

impl Sandbox {
    /// Validates `policy` against the running kernel and prepares the Landlock ruleset and seccomp
    /// program. Fails if a path does not exist, a value is invalid, or the kernel cannot enforce a
    /// protection (unless `best_effort`).
    pub fn new(policy: Policy) -> Result<Sandbox, Error> {
        Sandbox::with_kernel_support(policy, KernelSupport::detect())
    }

    /// Like [`Sandbox::new`], against an explicit description of the kernel (for example
    /// `KernelSupport::detect().limit_landlock_abi(3)`, to see how a policy degrades).
    pub fn with_kernel_support(policy: Policy, kernel: KernelSupport) -> Result<Sandbox, Error> {
        let plan = SandboxPlan::new(policy, kernel)?;
        Ok(Sandbox {
            pool: spawn::pool::Pool::new(),
            pool_ok: plan.ruleset.is_some()
                && plan.view_filter.is_none()
                && !plan.policy.extra_deny_syscalls.iter().any(|n| {
                    spawn::pool::AFTER_FILTER.iter().any(|a| {
                        crate::plan::syscall_number(a) == crate::plan::syscall_number(n.trim())
                    })
                }),
            plan,
        })
    }

    /// The policy this sandbox enforces.
    pub fn policy(&self) -> &Policy {
        &self.plan.policy
    }

    /// Protections the kernel could not apply (only ever non-empty with `best_effort`).
    pub fn not_enforced(&self) -> &[Protection] {
        &self.plan.not_enforced
    }

    /// How each protection is enforced for this policy on this kernel: by Landlock, by seccomp,
    /// or by the supervisor standing in for a Landlock feature the kernel lacks.
    pub fn enforcement(&self) -> &[crate::coverage::Enforcement] {
        &self.plan.enforcement
    }

    /// How many children this sandbox keeps confined and waiting for a run: from its second run
    /// on, one for each thread that runs it (up to 8, and 32 in the whole process), when it has a
    /// Landlock domain and no view
    /// (see `docs/security.md`). A run handed to one skips the confinement work at its start.
    pub fn waiting_children(&self) -> usize {
        self.pool.waiting()
    }

    /// Runs `cmd` to completion on the calling thread and returns its outcome.
    ///
    /// A limit that ends the run is an [`Outcome`] (with its reason), not an error; an error means
    /// sandlock could not confine or start the command, or lost track of it.
    pub fn run(&self, cmd: Command) -> Result<Outcome, Error> {
        Ok(self.spawn(cmd)?.wait()?)
    }

    /// Whether a finished run of this sandbox still holds kernel objects whose release may wait
    /// (an inotify instance for `max_disk`, a cgroup to remove, a private `/tmp` to delete):
    /// callers on an event loop hand [`Running::into_outcome_and_residue`]'s residue to another
    /// thread.
    pub fn leaves_residue(&self) -> bool {
        self.plan.limits.max_disk.is_some()
            || self.plan.cgroup.is_some()
            || self.plan.view.as_ref().is_some_and(|v| v.per_run())
    }

    /// Starts `cmd` and returns its supervisor without waiting; drive it with [`Running::step`]
    /// (or [`Running::wait`]).
    pub fn spawn(&self, cmd: Command) -> Result<Running, Error> {
        let t0 = Instant::now();
        let plan = &self.plan;
        // The run's view: the plan's mounts, and a private /tmp made for this run.
        let parts = plan.view.as_ref().map(|v| v.for_run()).transpose()?;
        let run_rules = parts.as_ref().map(|p| p.rules()).unwrap_or_default();
        let (view, private_tmp, cow) = match parts {
            Some(p) => (Some(std::sync::Arc::new(p.view)), p.private_tmp, p.cow),
            None => (None, None, None),
        };
        let run = RunPlan::new(
            plan,
            &cmd.argv,
            &cmd.env,
            cmd.cwd.as_deref(),
            view.as_deref(),
        )?;
        let mut limits = plan.limits.clone();
        if cmd.timeout.is_some() {
            limits.timeout = cmd.timeout;
        }
        limits
            .disk_roots
            .extend(run_rules.iter().map(|r| r.path.clone()));

        let prep =
            |e: std::io::Error, what: &str| SandboxError::io(Stage::Prepare, &e, what.to_string());
        // Internal descriptors must not sit on 0-2 (the host may have closed its stdio) nor on a
        // passed fd's target number.
        let floor = cmd
            .pass_fds
            .iter()
            .map(|(_, t)| *t + 1)
            .max()
            .unwrap_or(3)
            .max(3);
        let above = |fd: OwnedFd| {
            sys::keep_above(fd, floor).map_err(|e| prep(e, "cannot arrange descriptors"))
        };

        let mut fd_map: Vec<(RawFd, RawFd)> = Vec::with_capacity(3 + cmd.pass_fds.len());
        // Descriptors the child gets that we must close once it has them.
        let mut keep_until_spawned: Vec<OwnedFd> = Vec::new();
        let null = || -> Result<OwnedFd, SandboxError> {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(|e| prep(e, "cannot open /dev/null"))?;
            above(OwnedFd::from(f))
        };

        let mut stdin_feed = None;
        match cmd.stdin {
            Stdio::Capture | Stdio::Null => {
                let n = null()?;
                fd_map.push((n.as_raw_fd(), 0));
                keep_until_spawned.push(n);
            }
            Stdio::Inherit => fd_map.push((0, 0)),
            Stdio::Bytes(data) => {
                let (r, w) = sys::pipe(0).map_err(|e| prep(e, "cannot create the stdin pipe"))?;
                let (r, w) = (above(r)?, above(w)?);
                fd_map.push((r.as_raw_fd(), 0));
                keep_until_spawned.push(r);
                stdin_feed =
                    Some(Feeder::new(w, data).map_err(|e| prep(e, "cannot set up stdin"))?);
            }
            Stdio::Fd(fd) => {
                let fd = above(fd)?;
                fd_map.push((fd.as_raw_fd(), 0));
                keep_until_spawned.push(fd);
            }
        }
        let cap = limits.max_output.bytes();
        let mut captures: [Option<Capture>; 2] = [None, None];
        for (i, (stdio, target)) in [(cmd.stdout, 1), (cmd.stderr, 2)].into_iter().enumerate() {
            match stdio {
                Stdio::Capture => {
                    let (r, w) =
                        sys::pipe(0).map_err(|e| prep(e, "cannot create an output pipe"))?;
                    let (r, w) = (above(r)?, above(w)?);
                    fd_map.push((w.as_raw_fd(), target));
                    keep_until_spawned.push(w);
                    captures[i] = Some(
                        Capture::new(r, cap)
                            .map_err(|e| prep(e, "cannot set up output capture"))?,
                    );
                }
                Stdio::Inherit => fd_map.push((target, target)),
                Stdio::Null | Stdio::Bytes(_) => {
                    let n = null()?;
                    fd_map.push((n.as_raw_fd(), target));
                    keep_until_spawned.push(n);
                }
                Stdio::Fd(fd) => {
                    let fd = above(fd)?;
                    fd_map.push((fd.as_raw_fd(), target));
                    keep_until_spawned.push(fd);
                }
            }
        }
        for (i, (fd, target)) in cmd.pass_fds.into_iter().enumerate() {
            if target < 3 || fd_map.iter().any(|(_, t)| *t == target) {
                return Err(PolicyError::new(
                    format!("pass_fds[{i}]"),
                    target.to_string(),
                    "target descriptors must be 3 or above and distinct",
                )
                .into());
            }
            let fd = above(fd)?;
            fd_map.push((fd.as_raw_fd(), target));
            keep_until_spawned.push(fd);
        }
        if fd_map.len() > MAX_FD_MAP {
            return Err(PolicyError::new(
                "pass_fds",
                fd_map.len().to_string(),
                format!("at most {} descriptors can be passed", MAX_FD_MAP - 3),
            )
            .into());
        }
        // The run's own cgroup, where the plan has one. Automatically chosen cgroups fall back to
        // the supervisor alone if this run cannot get one; required ones fail the run.
        let cgroup = match &plan.cgroup {
            Some(cp) => match crate::cgroup::RunCgroup::create(cp, &limits) {
                Ok(c) => Some(c),
                Err(e) if cp.required => return Err(e.into()),
                Err(_) => None,
            },
            None => None,
        };
        let disk = crate::supervisor::watch_disk(&limits)?;
        let cgroup_failed = std::sync::atomic::AtomicI32::new(0);
        let again = self.pool_ok && self.pool.count_run();
        let recipe = || spawn::pool::Recipe {
            drop_bounding: plan.drop_bounding,
            ruleset_fd: plan.ruleset.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            filter: plan.filter.as_deref(),
            filter_flags: filter_flags(plan.notify),
        };
        let cwd_bytes = run.cwd.as_ref().map(|c| c.as_bytes_with_nul());

        // A child confined ahead of this run (see `spawn::pool`), when the sandbox keeps one and
        // the run needs nothing per run in its confinement (a view's filter names the run's
        // program; a private /tmp adds Landlock rules).
        let ready = if self.pool_ok && run_rules.is_empty() {
            self.pool.take()
        } else {
            None
        };
        let mut started = None;
        if let Some(ready) = ready {
            let mut fds: Vec<RawFd> = fd_map.iter().map(|(s, _)| *s).collect();
            let targets: Vec<RawFd> = fd_map.iter().map(|(_, t)| *t).collect();
            if let Some(c) = &cgroup {
                fds.push(c.procs_fd());
            }
            // Without a cwd the run starts where the host is now (the waiting child's working
            // directory is the host's when it was made).
            let here = match cwd_bytes {
                Some(_) => None,
                None => Some(
                    sys::open_dir_path(c".")
                        .map_err(|e| prep(e, "cannot open the current directory for the run"))?,
                ),
            };
            fds.extend(here.as_ref().map(AsRawFd::as_raw_fd));
            let launch = Launch {
                targets: &targets,
                cgroup: cgroup.is_some(),
                cgroup_required: plan.cgroup.as_ref().is_some_and(|c| c.required),
                cgroup_failed: &cgroup_failed,
                cwd: cwd_bytes,
                rlimits: &plan.rlimits,
                path: run.path.as_ptr(),
                argv: run.argv(),
                envp: run.envp(),
            };
            if let Some(handed) = self.pool.hand(ready, &launch, &fds) {
                // The child has its own copies (in flight, or received).
                drop(here);
                keep_until_spawned.clear();
                // The next child confines itself while this one execs.
                self.pool.refill(&recipe());
                started = Some(self.pool.finish(handed).map_err(|e| exec_detail(e, &run))?);
            }
        }
        let started = match started {
            Some(s) => s,
            None => {
                let s =
                    self.spawn_direct(&run, &fd_map, &run_rules, floor, &cgroup, &cgroup_failed)?;
                keep_until_spawned.clear();
                if again {
                    self.pool.refill(&recipe());
                }
                s
            }
        };
        drop(keep_until_spawned);
        // The child could not join the cgroup chosen automatically (the kernel's delegation rules
        // said no): it runs under the supervisor alone, and the outcome reports no kernel limits.
        let cgroup =
            cgroup.filter(|_| cgroup_failed.load(std::sync::atomic::Ordering::Relaxed) == 0);

        let [stdout, stderr] = captures;
        let io = Io {
            stdout,
            stderr,
            stdin: stdin_feed,
            disk,
            fs: crate::supervisor::RunView {
                view,
                private_tmp,
                cow: cow.map(|c| (c, plan.policy.commit)),
                standins: plan.standin_routes,
            },
        };
        Ok(Running::new(
            started,
            io,
            limits,
            plan.sockets.clone(),
            plan.not_enforced.clone(),
            cgroup,
            t0,
        )?)
    }

    /// Starts a run's child directly: `clone(CLONE_VM | CLONE_VFORK)`, confinement, `execve`.
    fn spawn_direct(
        &self,
        run: &RunPlan,
        fd_map: &[(RawFd, RawFd)],
        run_rules: &[crate::plan::PathRule],
        floor: RawFd,
        cgroup: &Option<crate::cgroup::RunCgroup>,
        cgroup_failed: &std::sync::atomic::AtomicI32,
    ) -> Result<spawn::Started, Error> {
        let plan = &self.plan;
        let prep =
            |e: std::io::Error, what: &str| SandboxError::io(Stage::Prepare, &e, what.to_string());
        let above = |fd: OwnedFd| {
            sys::keep_above(fd, floor).map_err(|e| prep(e, "cannot arrange descriptors"))
        };
        // Non-blocking: when clone returns, the child has exec'd or exited (CLONE_VFORK), so its
        // report is either already in the pipe or will never come. Waiting for end-of-file
        // instead would also wait for any host process that forked (without exec) meanwhile and
        // so holds a copy of the write end.
        let (err_r, err_w) =
            sys::pipe(libc::O_NONBLOCK).map_err(|e| prep(e, "cannot create the error pipe"))?;
        let (err_r, err_w) = (above(err_r)?, above(err_w)?);
        // The child applies the ruleset before it installs the targets, so the ruleset must not
        // sit on a target's number. The shared one usually sits above them all and is used as it
        // is; one made while the host had 0-2 closed (or below a passed fd's target) is copied for
        // this run, and a run with rules of its own (a private /tmp, a work directory's upper
        // layer) gets a ruleset of its own, made clear of every target.
        let ruleset_copy = match (&plan.run_ruleset, &plan.ruleset) {
            (Some(rr), _) if !run_rules.is_empty() => Some(above(rr.build(run_rules)?)?),
            (_, Some(r)) if r.as_raw_fd() < floor => Some(
                sys::dup_above(r.as_raw_fd(), floor)
                    .map_err(|e| prep(e, "cannot copy the Landlock ruleset descriptor"))?,
            ),
            _ => None,
        };
        let ruleset_fd = ruleset_copy
            .as_ref()
            .or(plan.ruleset.as_ref())
            .map_or(-1, AsRawFd::as_raw_fd);
        let (listener_ours, listener_theirs) = if plan.notify {
            let (a, b) = sys::socketpair(libc::SOCK_SEQPACKET)
                .map_err(|e| prep(e, "cannot create the listener socket pair"))?;
            (Some(above(a)?), Some(above(b)?))
        } else {
            (None, None)
        };

        let highest = fd_map
            .iter()
            .flat_map(|(s, t)| [*s, *t])
            .chain([err_r.as_raw_fd(), err_w.as_raw_fd()])
            .chain(listener_theirs.iter().map(AsRawFd::as_raw_fd))
            .chain(listener_ours.iter().map(AsRawFd::as_raw_fd))
            .chain([ruleset_fd])
            .max()
            .unwrap_or(2);

        // With a view the filter names this run's first execve (see `SeccompPolicy::exec_ptr`).
        let run_filter = match &plan.view_filter {
            Some(spec) => {
                let mut spec = spec.clone();
                spec.exec_ptr = run.path.as_ptr() as u64;
                Some(
                    spec.compile()
                        .map_err(|e| SandboxError::new(Stage::SeccompBuild, None, e))?,
                )
            }
            None => None,
        };
        let fprog = run_filter
            .as_ref()
            .or(plan.filter.as_ref())
            .map(|f| libc::sock_fprog {
                len: f.len() as u16,
                filter: f.as_ptr().cast_mut(),
            });
        let cwd_bytes = run.cwd.as_ref().map(|c| c.as_bytes_with_nul());
        let args = ChildArgs {
            err_fd: err_w.as_raw_fd(),
            fd_map,
            temp_base: highest + 1,
            cwd: cwd_bytes,
            rlimits: &plan.rlimits,
            drop_caps: true,
            drop_bounding: plan.drop_bounding,
            ruleset_fd,
            filter: fprog.as_ref(),
            filter_flags: filter_flags(plan.notify),
            listener_sock: listener_theirs.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            cgroup_procs_fd: cgroup.as_ref().map_or(-1, |c| c.procs_fd()),
            cgroup_required: plan.cgroup.as_ref().is_some_and(|c| c.required),
            cgroup_failed,
            path: run.path.as_ptr(),
            argv: run.argv(),
            envp: run.envp(),
        };
        let started = spawn::spawn(&args, err_r, err_w, listener_ours.as_ref())
            .map_err(|e| exec_detail(e, run))?;
        drop(listener_theirs);
        Ok(started)
    }
}

/// The flags for `seccomp(SECCOMP_SET_MODE_FILTER)`: a listener when the supervisor decides
/// some syscalls, and killable waits for its answers where the kernel has them.
fn filter_flags(notify: bool) -> u64 {
    match (notify, crate::kernel::seccomp_wait_killable()) {
        (false, _) => 0,
        (true, false) => libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
        (true, true) => {
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
        }
    }
}

/// Names the program in an exec failure.
fn exec_detail(e: SandboxError, run: &RunPlan) -> SandboxError {
    if e.stage == Stage::Execve && e.detail.is_none() {
        e.with_detail(run.path.to_string_lossy())
    } else {
        e
    }
}
