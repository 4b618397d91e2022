//! Signal scoping without Landlock ABI 6, and the process-changing syscalls Landlock never scopes.
//!
//! A sandbox may signal, and change the scheduling or limits of, only its own processes: the
//! members of its process group (which none of them can leave: `setpgid` and `setsid` do nothing in
//! a sandbox). The answers are the ones Landlock's scoping gives: `EPERM` for a process outside,
//! `ESRCH` for none.
//!
//! How each call is decided, and why no race lets it reach a process outside:
//! - A signal to the caller itself (`kill(getpid())`, `tgkill(getpid(), tid)`, `raise`, `abort`)
//!   or to the sandbox's group (`kill(-pgid)`) is continued: the kernel then acts on numbers that
//!   cannot be recycled while we answer (the caller is blocked in the syscall; the group leader is
//!   not reaped before the group is killed).
//! - A signal to another process of the sandbox is sent by the supervisor through a pidfd it opened
//!   and checked (see [`super::target`]), so a recycled pid cannot redirect it. The receiver sees
//!   the supervisor as the sender (`si_pid`); a `siginfo` the sandbox passes (`sigqueue`) is copied
//!   as it is, so it keeps the sandbox's `si_pid`.
//! - `pidfd_send_signal` is never continued: the descriptor could be swapped (`dup2`) after we looked
//!   at it. The supervisor reads which process it designates once, pins that process, and signals it
//!   through its own pidfd.
//! - `pidfd_open` is carried out by the supervisor, which installs the checked pidfd in the caller
//!   (`SECCOMP_IOCTL_NOTIF_ADDFD`): the sandbox never holds a handle on an outside process.
//! - The owner of a descriptor (`F_SETOWN`, who gets `SIGIO`/`SIGURG`) may be the caller or the
//!   sandbox's group; the kernel keeps a reference to the owner, not its number.
//! - `prlimit64`, `setpriority`, `sched_set*` and `ioprio_set` on a pid other than 0 are allowed for
//!   the caller's own thread, process or group only.
//!
//! The one residue: a thread-directed signal (`tkill`, `tgkill`, `rt_tgsigqueueinfo`) to a thread of
//! another sandbox process is sent by number after its process was pinned, because pidfds for
//! threads only exist from Linux 6.9. Its process would have to be reaped and both numbers recycled
//! between two consecutive syscalls of the supervisor.

use super::Scope;
use super::target::{Caller, Member, PIDFD_THREAD, pidfd_send_signal, pidfd_target};
use crate::supervisor::notify::{Listener, Notification, read_mem};
use crate::sys;

/// `PIDFD_NONBLOCK` is `O_NONBLOCK`; the other `pidfd_open` flag is [`PIDFD_THREAD`].
const PIDFD_OPEN_FLAGS: u32 = libc::O_NONBLOCK as u32 | PIDFD_THREAD;

const PRIO_PROCESS: u64 = 0;
const PRIO_PGRP: u64 = 1;
const PRIO_USER: u64 = 2;
const IOPRIO_WHO_PROCESS: u64 = 1;
const IOPRIO_WHO_PGRP: u64 = 2;
const IOPRIO_WHO_USER: u64 = 3;

/// A pid argument: the low 32 bits of the register, as the kernel reads a `pid_t`.
fn pid_arg(v: u64) -> libc::pid_t {
    v as u32 as libc::pid_t
}

/// The 128-byte `siginfo_t` at `addr` in the caller, read once.
fn read_siginfo(n: &Notification, addr: u64) -> Result<[u8; 128], i32> {
    let bytes = read_mem(n.pid, addr, 128).map_err(|_| libc::EFAULT)?;
    bytes.try_into().map_err(|_| libc::EFAULT)
}

/// Answers `l`/`n` with the outcome of an action the supervisor took itself.
fn answer(l: &Listener, n: &Notification, r: Result<i64, i32>) {
    match r {
        Ok(v) => l.reply(n.id, v),
        Err(e) => l.deny(n.id, e),
    }
}

fn io_errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Sends `sig` (with the sandbox's `siginfo`, if any) to another process of the sandbox.
fn signal_member(
    pid: libc::pid_t,
    sig: i32,
    info: Option<&[u8; 128]>,
    scope: &Scope,
) -> Result<i64, i32> {
    let m = Member::pin_process(pid, scope.pgid)?;
    pidfd_send_signal(&m.pidfd, sig, info, 0).map_err(io_errno)
}

/// `kill(pid, sig)`.
pub(crate) fn on_kill(l: &Listener, n: &Notification, scope: &Scope) {
    let (pid, sig) = (pid_arg(n.args[0]), n.args[1] as i32);
    if !(0..=64).contains(&sig) {
        return l.deny(n.id, libc::EINVAL);
    }
    match pid {
        0 => l.allow(n.id),
        i32::MIN => l.deny(n.id, libc::ESRCH),
        -1 => kill_all_but_caller(l, n, sig, scope),
        p if p < 0 => {
            if -p == scope.pgid {
                l.allow(n.id)
            } else {
                l.deny(n.id, group_errno(-p))
            }
        }
        p => {
            let Some(c) = Caller::of(l, n) else { return };
            if p == c.tgid {
                l.allow(n.id)
            } else {
                answer(l, n, signal_member(p, sig, None, scope))
            }
        }
    }
}

/// What the kernel says to a sandbox that signals process group `g`, not its own: `ESRCH` when the
/// group is empty, `EPERM` (Landlock's answer) when it has members. Signal 0 only probes.
fn group_errno(g: libc::pid_t) -> i32 {
    // SAFETY: kill with signal 0 sends nothing; it reports whether the group exists.
    let r = unsafe { libc::kill(-g, 0) };
    if r < 0 && sys::errno() == libc::ESRCH {
        libc::ESRCH
    } else {
        libc::EPERM
    }
}

/// `kill(-1, sig)`: every process the caller may signal but itself, which inside a sandbox means
/// every other member. Success if one was signalled, `ESRCH` if there was none, as the kernel says.
fn kill_all_but_caller(l: &Listener, n: &Notification, sig: i32, scope: &Scope) {
    let Some(c) = Caller::of(l, n) else { return };
    let mut sent = 0;
    for pid in crate::supervisor::group::member_pids(scope.pgid) {
        if pid != c.tgid && signal_member(pid, sig, None, scope).is_ok() {
            sent += 1;
        }
    }
    if sent > 0 {
        l.reply(n.id, 0)
    } else {
        l.deny(n.id, libc::ESRCH)
    }
}

/// `tgkill(tgid, tid, sig)` (with `info`: `rt_tgsigqueueinfo`) to a thread of another sandbox
/// process, carried out by the supervisor. From Linux 6.9 through a pidfd for the thread; before,
/// by number once its process is pinned (the residue described above).
fn thread_signal(
    tgid: libc::pid_t,
    tid: libc::pid_t,
    sig: i32,
    info: Option<[u8; 128]>,
    scope: &Scope,
) -> Result<i64, i32> {
    let process = Member::pin(tgid, 0, scope.pgid)?;
    match Member::pin(tid, PIDFD_THREAD, scope.pgid) {
        Ok(thread) if super::target::status_field(tid, "Tgid") == Some(tgid) && process.alive() => {
            return pidfd_send_signal(&thread.pidfd, sig, info.as_ref(), 0).map_err(io_errno);
        }
        Ok(_) => return Err(libc::ESRCH),
        // No thread pidfds on this kernel.
        Err(libc::EINVAL) => {}
        Err(e) => return Err(e),
    }
    // SAFETY: tgkill takes integers; rt_tgsigqueueinfo reads one siginfo_t from `info`.
    let r = unsafe {
        match &info {
            None => libc::syscall(libc::SYS_tgkill, tgid, tid, sig),
            Some(i) => libc::syscall(libc::SYS_rt_tgsigqueueinfo, tgid, tid, sig, i.as_ptr()),
        }
    };
    sys::cvt_long(r).map(|_| 0).map_err(io_errno)
}

/// `tkill(tid, sig)`: a thread of the caller's process or of another sandbox process.
pub(crate) fn on_tkill(l: &Listener, n: &Notification, scope: &Scope) {
    let (tid, sig) = (pid_arg(n.args[0]), n.args[1] as i32);
    if tid <= 0 {
        return l.deny(n.id, libc::EINVAL);
    }
    let Some(c) = Caller::of(l, n) else { return };
    if tid == c.tid {
        return l.allow(n.id);
    }
    match super::target::status_field(tid, "Tgid") {
        Some(tgid) if tid > 0 => answer(l, n, thread_signal(tgid, tid, sig, None, scope)),
        _ => l.deny(n.id, libc::ESRCH),
    }
}

/// `tgkill(tgid, tid, sig)`.
pub(crate) fn on_tgkill(l: &Listener, n: &Notification, scope: &Scope) {
    let (tgid, tid, sig) = (pid_arg(n.args[0]), pid_arg(n.args[1]), n.args[2] as i32);
    if tgid <= 0 || tid <= 0 {
        return l.deny(n.id, libc::EINVAL);
    }
    let Some(c) = Caller::of(l, n) else { return };
    if tgid == c.tgid {
        // The kernel checks that `tid` is in the caller's own (pinned) thread group.
        return l.allow(n.id);
    }
    answer(l, n, thread_signal(tgid, tid, sig, None, scope))
}

/// `rt_sigqueueinfo(tgid, sig, info)`.
pub(crate) fn on_sigqueueinfo(l: &Listener, n: &Notification, scope: &Scope) {
    let (pid, sig) = (pid_arg(n.args[0]), n.args[1] as i32);
    let Some(c) = Caller::of(l, n) else { return };
    if pid == c.tgid {
        return l.allow(n.id);
    }
    let r = read_siginfo(n, n.args[2]).and_then(|info| signal_member(pid, sig, Some(&info), scope));
    answer(l, n, r)
}

/// `rt_tgsigqueueinfo(tgid, tid, sig, info)`.
pub(crate) fn on_tgsigqueueinfo(l: &Listener, n: &Notification, scope: &Scope) {
    let (tgid, tid, sig) = (pid_arg(n.args[0]), pid_arg(n.args[1]), n.args[2] as i32);
    let Some(c) = Caller::of(l, n) else { return };
    if tgid == c.tgid {
        return l.allow(n.id);
    }
    let r = read_siginfo(n, n.args[3])
        .and_then(|info| thread_signal(tgid, tid, sig, Some(info), scope));
    answer(l, n, r)
}

/// `pidfd_send_signal(pidfd, sig, info, flags)`.
pub(crate) fn on_pidfd_send_signal(l: &Listener, n: &Notification, scope: &Scope) {
    let (sig, info_addr, flags) = (n.args[1] as i32, n.args[2], n.args[3] as u32);
    let r = pidfd_target(n.pid, n.args[0]).and_then(|(pid, thread)| {
        if !l.id_valid(n.id) {
            return Err(libc::ESRCH);
        }
        let m = Member::pin(pid, thread, scope.pgid)?;
        let info = if info_addr == 0 {
            None
        } else {
            Some(read_siginfo(n, info_addr)?)
        };
        pidfd_send_signal(&m.pidfd, sig, info.as_ref(), flags).map_err(io_errno)
    });
    answer(l, n, r)
}

/// `pidfd_open(pid, flags)`: a pidfd on a process of the sandbox, opened and checked here, then
/// installed in the caller.
pub(crate) fn on_pidfd_open(l: &Listener, n: &Notification, scope: &Scope) {
    let (pid, flags) = (pid_arg(n.args[0]), n.args[1] as u32);
    if flags & !PIDFD_OPEN_FLAGS != 0 || pid <= 0 {
        return l.deny(n.id, libc::EINVAL);
    }
    let r = Member::pin(pid, flags, scope.pgid).and_then(|m| {
        l.add_fd(n.id, &m.pidfd, libc::O_CLOEXEC as u32)
            .map(i64::from)
            .map_err(io_errno)
    });
    answer(l, n, r)
}

/// `fcntl(fd, F_SETOWN, owner)`: the owner may be nobody, the caller, or the sandbox's group.
pub(crate) fn on_setown(l: &Listener, n: &Notification, scope: &Scope) {
    match pid_arg(n.args[2]) {
        0 => l.allow(n.id),
        i32::MIN => l.deny(n.id, libc::EINVAL),
        g if g < 0 => {
            if -g == scope.pgid {
                l.allow(n.id)
            } else {
                l.deny(n.id, libc::EPERM)
            }
        }
        p => {
            let Some(c) = Caller::of(l, n) else { return };
            if c.is_self(p) {
                l.allow(n.id)
            } else {
                l.deny(n.id, libc::EPERM)
            }
        }
    }
}

/// `prlimit64`, `sched_setaffinity`, `sched_setparam`, `sched_setscheduler`, `sched_setattr`: the
/// first argument is a pid (the filter already let pid 0 through).
pub(crate) fn on_pid_first(l: &Listener, n: &Notification) {
    let pid = pid_arg(n.args[0]);
    let Some(c) = Caller::of(l, n) else { return };
    if c.is_self(pid) || own_thread(&c, pid) {
        l.allow(n.id)
    } else {
        l.deny(n.id, libc::EPERM)
    }
}

/// Whether `tid` is another thread of the caller's process (`pthread_setaffinity_np`,
/// `pthread_setschedparam`). The call is then continued: the number would have to be recycled
/// between this look and the kernel's (the thread exiting and a new task taking its tid), the same
/// residue as for thread-directed signals.
fn own_thread(c: &Caller, tid: libc::pid_t) -> bool {
    tid > 0 && super::target::status_field(tid, "Tgid") == Some(c.tgid)
}

/// `setpriority(which, who, prio)` and `ioprio_set(which, who, ioprio)`: a thread or process of
/// the caller's own, or the sandbox's group; never every process of the user.
pub(crate) fn on_priority(l: &Listener, n: &Notification, scope: &Scope, io: bool) {
    let (which, who) = (n.args[0] as u32 as u64, pid_arg(n.args[1]));
    let (process, group, user) = if io {
        (IOPRIO_WHO_PROCESS, IOPRIO_WHO_PGRP, IOPRIO_WHO_USER)
    } else {
        (PRIO_PROCESS, PRIO_PGRP, PRIO_USER)
    };
    let ok = match which {
        w if w == process => {
            let Some(c) = Caller::of(l, n) else { return };
            who == 0 || c.is_self(who) || own_thread(&c, who)
        }
        w if w == group => who == 0 || who == scope.pgid,
        w if w == user => false,
        // Not a valid `which`: the kernel answers EINVAL.
        _ => true,
    };
    if ok {
        l.allow(n.id)
    } else {
        l.deny(n.id, libc::EPERM)
    }
}
