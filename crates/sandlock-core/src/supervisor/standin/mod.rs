//! The supervisor's stand-ins for Landlock features the running kernel lacks.
//!
//! Landlock gained its protections over several kernels (see [`crate::coverage`]): truncation in
//! ABI 3 (Linux 6.2), TCP ports in ABI 4 (6.7), signal and abstract-socket scoping in ABI 6 (6.12).
//! On an older kernel the seccomp filter routes the syscalls concerned to the supervisor, and the
//! modules here decide them, with the answers Landlock would give:
//! - [`signal`]: signal scoping (every way to signal a process, obtain a pidfd or become a
//!   descriptor's `SIGIO` owner), and, on every kernel, the calls that change another process by
//!   pid, which Landlock never scopes (`prlimit64`, `setpriority`, `sched_set*`, `ioprio_set`);
//! - [`bind`]: TCP port rules for `bind`;
//! - [`truncate`]: `truncate(2)` beneath writable paths only.
//!
//! Abstract UNIX sockets need no stand-in: `connect` is mediated on every kernel (see
//! `supervisor/connect.rs`) and datagram UNIX sockets cannot be created. Device `ioctl` (ABI 5)
//! is decided when the plan is made: see `crate::coverage`.
//!
//! The rule that makes these as strong as the kernel: a syscall whose decision depends on memory or
//! a descriptor the sandbox could change after we looked is never continued. The supervisor carries
//! it out on objects it holds (a pidfd it checked, a socket it bound, a file it opened beneath a
//! writable root) and answers with the result. Only decisions that rest on registers and on the
//! caller's own identity (a signal to itself) let the kernel run the call.
//!
//! The event loop only dispatches here (see [`handle`]); what each decision rests on is written
//! beside it.

pub(crate) mod bind;
pub(crate) mod path;
mod signal;
pub(crate) mod target;
pub(crate) mod truncate;

pub(crate) use path::Roots;

use crate::supervisor::SocketRules;
use crate::supervisor::notify::{Listener, Notification};

/// What the stand-ins remember across notifications of one run.
#[derive(Debug, Default)]
pub(crate) struct State {
    bound: bind::Bound,
}

/// Which of the syscalls a view also routes the stand-ins decide, on this kernel.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Routes {
    /// `truncate` (no Landlock truncate right).
    pub(crate) truncate: bool,
    /// `bind` (no Landlock TCP rights, with TCP in the policy).
    pub(crate) bind: bool,
}

impl Routes {
    /// Whether the stand-ins decide syscall `nr` (otherwise, once the view has passed on it, the
    /// kernel does).
    pub(crate) fn routes(&self, nr: i64) -> bool {
        match nr {
            libc::SYS_truncate => self.truncate,
            libc::SYS_bind => self.bind,
            nr => !crate::fsview::handles(nr),
        }
    }
}

/// What the stand-ins need to know about the sandbox.
pub(crate) struct Scope<'a> {
    /// The sandbox's process group (the pid of its main process, which is not reaped before the
    /// group is killed).
    pub(crate) pgid: libc::pid_t,
    /// Writable roots and port rules.
    pub(crate) sockets: &'a SocketRules,
}

/// Whether syscall `nr` is one the stand-ins decide.
pub(crate) fn handles(nr: i64) -> bool {
    matches!(
        nr,
        libc::SYS_kill
            | libc::SYS_tkill
            | libc::SYS_tgkill
            | libc::SYS_rt_sigqueueinfo
            | libc::SYS_rt_tgsigqueueinfo
            | libc::SYS_pidfd_send_signal
            | libc::SYS_pidfd_open
            | libc::SYS_fcntl
            | libc::SYS_prlimit64
            | libc::SYS_setpriority
            | libc::SYS_ioprio_set
            | libc::SYS_sched_setaffinity
            | libc::SYS_sched_setparam
            | libc::SYS_sched_setscheduler
            | libc::SYS_sched_setattr
            | libc::SYS_bind
            | libc::SYS_truncate
    )
}

/// Decides and answers notification `n` (one of [`handles`]).
pub(crate) fn handle(l: &Listener, n: &Notification, scope: &Scope<'_>, state: &mut State) {
    match n.nr {
        libc::SYS_kill => signal::on_kill(l, n, scope),
        libc::SYS_tkill => signal::on_tkill(l, n, scope),
        libc::SYS_tgkill => signal::on_tgkill(l, n, scope),
        libc::SYS_rt_sigqueueinfo => signal::on_sigqueueinfo(l, n, scope),
        libc::SYS_rt_tgsigqueueinfo => signal::on_tgsigqueueinfo(l, n, scope),
        libc::SYS_pidfd_send_signal => signal::on_pidfd_send_signal(l, n, scope),
        libc::SYS_pidfd_open => signal::on_pidfd_open(l, n, scope),
        // The filter only hands over F_SETOWN.
        libc::SYS_fcntl => signal::on_setown(l, n, scope),
        libc::SYS_prlimit64
        | libc::SYS_sched_setaffinity
        | libc::SYS_sched_setparam
        | libc::SYS_sched_setscheduler
        | libc::SYS_sched_setattr => signal::on_pid_first(l, n),
        libc::SYS_setpriority => signal::on_priority(l, n, scope, false),
        libc::SYS_ioprio_set => signal::on_priority(l, n, scope, true),
        libc::SYS_bind => bind::on_bind(l, n, scope, &mut state.bound),
        libc::SYS_truncate => truncate::on_truncate(l, n, scope),
        _ => l.deny(n.id, libc::ENOSYS),
    }
}
