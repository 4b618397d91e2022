//! The child between `clone` and `execve`: the one place where sandlock runs without the usual rules.
//!
//! INVARIANT (read before changing anything in this file):
//! Two kinds of child run the code here, both inside the parent's address space (`CLONE_VM`), on a
//! stack the parent mapped for them, while every other thread of the host keeps running:
//! - the direct child ([`child_main`]), created with `CLONE_VFORK`: the calling thread is
//!   suspended until it calls `execve` or exits;
//! - the waiting child ([`waiting_main`], see `super::pool`), created without `CLONE_VFORK` and
//!   with `CLONE_CHILD_CLEARTID`: it confines itself at once, then blocks in `recvmsg` until a run
//!   is handed to it; the parent keeps what it reads alive until the kernel has cleared the tid
//!   word (at `execve`, or at exit), and it closes every descriptor of the host's first thing.
//!
//! Therefore code here:
//! - is async-signal-safe: it only issues raw system calls ([`crate::sys::raw`]); it never
//!   allocates, takes a lock, touches `errno` or any thread-local, formats, reads `std::env`, or
//!   calls into the C library (whose state may be mid-update in another thread);
//! - cannot panic: no indexing, no `unwrap`, no arithmetic that can overflow; a panic here would
//!   unwind through the parent's stack frames in shared memory;
//! - only reads [`ChildArgs`] (or [`WaitArgs`] and the [`Launch`] it is handed), which the parent
//!   built completely before handing it over, and writes only to its own stack, plus one plain
//!   atomic store to `cgroup_failed` (an integer the parent reads once the child has exec'd);
//! - never waits on the supervisor: there is none for this child until it has exec'd, so a
//!   syscall that needed one (one the seccomp filter routes to user notification) would deadlock.
//!   No syscall made after the filter is installed is one that it notifies;
//! - reports failure as `(stage, errno)`, eight bytes on a close-on-exec pipe (the waiting child:
//!   on its socket), then `exit_group(127)`.
//!
//! Its cost does not depend on the size of the host: `CLONE_VM` copies no page tables.

use std::ffi::c_void;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::Stage;
use crate::sys::raw::raw_syscall;

/// Most file descriptors a run may map into the child (stdio plus passed fds).
pub(crate) const MAX_FD_MAP: usize = 64;

/// Everything the child needs, prepared by the parent. Only plain data and borrowed pointers.
pub(crate) struct ChildArgs<'a> {
    /// Write end of the error pipe (close-on-exec).
    pub(crate) err_fd: i32,
    /// `(source, target)` descriptors to install; targets are distinct.
    pub(crate) fd_map: &'a [(i32, i32)],
    /// Temporary copies go at or above this number, clear of every source, target and internal fd.
    pub(crate) temp_base: i32,
    /// NUL-terminated working directory, if any.
    pub(crate) cwd: Option<&'a [u8]>,
    /// `(resource, soft, hard)` limits to set.
    pub(crate) rlimits: &'a [(crate::sys::Resource, u64, u64)],
    /// Drop all capabilities; when `Some(last_cap)`, also empty the bounding set up to `last_cap`.
    pub(crate) drop_caps: bool,
    pub(crate) drop_bounding: Option<u32>,
    /// Landlock ruleset fd, or -1.
    pub(crate) ruleset_fd: i32,
    /// The seccomp program.
    pub(crate) filter: Option<&'a libc::sock_fprog>,
    /// Flags for `seccomp(SECCOMP_SET_MODE_FILTER)` (`NEW_LISTENER` when the supervisor listens).
    pub(crate) filter_flags: u64,
    /// Socket to send the listener fd on, or -1.
    pub(crate) listener_sock: i32,
    /// The run's `cgroup.procs` (opened for writing), or -1.
    pub(crate) cgroup_procs_fd: i32,
    /// Failing to join the cgroup fails the spawn (`cgroup = "require"`); otherwise the child
    /// records the errno in `cgroup_failed` and goes on without it.
    pub(crate) cgroup_required: bool,
    /// Where the child reports a join that failed when not required (shared memory: CLONE_VM).
    pub(crate) cgroup_failed: &'a AtomicI32,
    /// NUL-terminated program path, argv and envp (NULL-terminated pointer arrays).
    pub(crate) path: *const libc::c_char,
    pub(crate) argv: *const *const libc::c_char,
    pub(crate) envp: *const *const libc::c_char,
}

const SECCOMP_SET_MODE_FILTER: usize = 1;
const LANDLOCK_RESTRICT_SELF: i64 = libc::SYS_landlock_restrict_self;
const PR_CAP_AMBIENT_CLEAR_ALL: usize = 4;
const SIG_SETMASK: usize = 2;

/// A step's failure: the stage and the (positive) errno.
type Failed = (Stage, isize);

/// A raw syscall's result as a step's: a negative return is `-errno`.
fn step(stage: Stage, r: isize) -> Result<isize, Failed> {
    if r < 0 {
        Err((stage, r.wrapping_neg()))
    } else {
        Ok(r)
    }
}

/// The child's entry point, called by `clone` on the child's stack.
///
/// # Safety
/// `arg` must point to a live [`ChildArgs`] that stays valid until the child execs or exits (the
/// parent is suspended by `CLONE_VFORK` for exactly that long).
pub(crate) unsafe extern "C" fn child_main(arg: *mut c_void) -> libc::c_int {
    // SAFETY: the parent passes a pointer to a ChildArgs that outlives the child's use of it.
    let a = unsafe { &*(arg as *const ChildArgs<'_>) };
    // SAFETY: `run` only issues syscalls with arguments derived from `a`, which the parent built.
    let (stage, errno) = unsafe { run(a) };
    // SAFETY: reporting and exiting are plain syscalls on our own descriptors.
    unsafe { fail(a.err_fd, stage, errno) }
}

/// Runs the steps in order; returns only on failure, with the stage and errno.
unsafe fn run(a: &ChildArgs<'_>) -> Failed {
    // SAFETY (whole body): every step issues raw syscalls whose pointer arguments point into `a`
    // (built by the parent and kept alive across the vfork) or into this function's stack.
    unsafe {
        reset_signals();
        // Join the run's cgroup (when there is one) before anything else, so that everything the
        // sandbox does and starts is inside it.
        if let Err(f) = join_cgroup(a.cgroup_procs_fd, a.cgroup_required, a.cgroup_failed) {
            return f;
        }
        // A new session and process group: the supervisor kills the whole tree with kill(-pgid), and
        // without a controlling terminal the sandbox cannot inject input into the host's.
        if let Err(f) = step(Stage::Setsid, raw_syscall!(libc::SYS_setsid)) {
            return f;
        }
        let pairs = a.fd_map.iter().copied();
        if let Err(f) = arrange_fds(pairs, a.temp_base) {
            return f;
        }
        if let Some(cwd) = a.cwd {
            if let Err(f) = step(Stage::Chdir, raw_syscall!(libc::SYS_chdir, cwd.as_ptr())) {
                return f;
            }
        }
        if a.drop_caps {
            if let Err(f) = drop_capabilities(a.drop_bounding) {
                return f;
            }
        }
        let confine = Confine {
            ruleset_fd: a.ruleset_fd,
            filter: a.filter,
            filter_flags: a.filter_flags,
        };
        if let Err(f) = confine.apply(a.listener_sock) {
            return f;
        }
        if let Err(f) = set_rlimits(a.rlimits) {
            return f;
        }
        exec(a.path, a.argv, a.envp)
    }
}

/// Host signal handlers must never run here: they would run on host memory. The parent blocked
/// every signal before clone; reset every disposition (ignored ones too, as a fresh process
/// expects) before [`exec`] unblocks them.
unsafe fn reset_signals() {
    let dfl = [0u64; 4];
    let mut sig: usize = 1;
    while sig <= 64 {
        if sig != libc::SIGKILL as usize && sig != libc::SIGSTOP as usize {
            // SAFETY: a raw rt_sigaction reading a default disposition on our stack.
            unsafe {
                raw_syscall!(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), 0, 8);
            }
        }
        sig = sig.wrapping_add(1);
    }
}

/// Joins the run's cgroup through its `cgroup.procs` (`fd`, or -1 for none): writing "0" moves
/// the writer. A failure fails the child only when `required`; otherwise the errno goes to
/// `failed` and the run goes on under the supervisor alone.
unsafe fn join_cgroup(fd: i32, required: bool, failed: &AtomicI32) -> Result<(), Failed> {
    if fd < 0 {
        return Ok(());
    }
    // SAFETY: a raw write of a static byte to a descriptor the parent opened.
    let r = unsafe { raw_syscall!(libc::SYS_write, fd, b"0".as_ptr(), 1) };
    if r < 0 {
        if required {
            return Err((Stage::Cgroup, r.wrapping_neg()));
        }
        // A plain store to memory the parent reads once the child has exec'd: signal-safe.
        failed.store(r.wrapping_neg() as i32, Ordering::Relaxed);
    }
    Ok(())
}

/// Installs each `(source, target)`: every source is first moved out of the way (close-on-exec
/// copies at or above `temp_base`, clear of every source and target), every descriptor from 3 up
/// is marked close-on-exec, then the targets are installed: dup3 clears the flag on exactly
/// those. Nothing else of the host's survives exec: not inherited descriptors, not ones another
/// host thread opened without O_CLOEXEC a moment ago.
unsafe fn arrange_fds(
    pairs: impl Iterator<Item = (i32, i32)> + Clone,
    temp_base: i32,
) -> Result<(), Failed> {
    let mut temps = [-1i32; MAX_FD_MAP];
    // SAFETY (whole body): raw fcntl, close_range and dup3 on descriptor numbers.
    unsafe {
        for (slot, (src, _)) in temps.iter_mut().zip(pairs.clone()) {
            *slot = step(
                Stage::Fds,
                raw_syscall!(libc::SYS_fcntl, src, libc::F_DUPFD_CLOEXEC, temp_base),
            )? as i32;
        }
        step(
            Stage::Fds,
            raw_syscall!(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC
            ),
        )?;
        for (tmp, (_, dst)) in temps.iter().zip(pairs) {
            step(Stage::Fds, raw_syscall!(libc::SYS_dup3, *tmp, dst, 0))?;
        }
    }
    Ok(())
}

/// Drops every capability, and when `bounding` is `Some(last_cap)` also empties the bounding
/// set up to `last_cap`.
unsafe fn drop_capabilities(bounding: Option<u32>) -> Result<(), Failed> {
    // SAFETY (whole body): raw prctl and capset calls on ourselves, with data on our stack.
    unsafe {
        if let Some(last) = bounding {
            let mut cap: u32 = 0;
            while cap <= last {
                step(
                    Stage::Capabilities,
                    raw_syscall!(libc::SYS_prctl, libc::PR_CAPBSET_DROP, cap, 0, 0, 0),
                )?;
                cap = cap.wrapping_add(1);
            }
        }
        step(
            Stage::Capabilities,
            raw_syscall!(
                libc::SYS_prctl,
                libc::PR_CAP_AMBIENT,
                PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0
            ),
        )?;
        let header = [crate::sys::LINUX_CAPABILITY_VERSION_3, 0u32];
        let data = [0u32; 6];
        step(
            Stage::Capabilities,
            raw_syscall!(libc::SYS_capset, header.as_ptr(), data.as_ptr()),
        )?;
    }
    Ok(())
}

/// The kernel's confinement: `no_new_privs`, the Landlock domain and the seccomp filter.
pub(crate) struct Confine<'a> {
    /// Landlock ruleset fd, or -1.
    pub(crate) ruleset_fd: i32,
    /// The seccomp program.
    pub(crate) filter: Option<&'a libc::sock_fprog>,
    /// Flags for `seccomp(SECCOMP_SET_MODE_FILTER)` (`NEW_LISTENER` when the supervisor listens).
    pub(crate) filter_flags: u64,
}

impl Confine<'_> {
    /// Applies it, and sends the filter's listener (if any) on `listener_sock` (if not -1).
    /// Returns the listener's descriptor in this process, or -1.
    unsafe fn apply(&self, listener_sock: i32) -> Result<i32, Failed> {
        // SAFETY (whole body): raw prctl, landlock and seccomp calls on ourselves; the program
        // is the parent's, alive until we exec or exit.
        unsafe {
            step(
                Stage::NoNewPrivs,
                raw_syscall!(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            )?;
            if self.ruleset_fd >= 0 {
                step(
                    Stage::LandlockRestrict,
                    raw_syscall!(LANDLOCK_RESTRICT_SELF, self.ruleset_fd, 0),
                )?;
            }
            let Some(prog) = self.filter else {
                return Ok(-1);
            };
            let listener = step(
                Stage::Seccomp,
                raw_syscall!(
                    libc::SYS_seccomp,
                    SECCOMP_SET_MODE_FILTER,
                    self.filter_flags,
                    prog as *const libc::sock_fprog
                ),
            )? as i32;
            if self.filter_flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER == 0 {
                return Ok(-1);
            }
            if listener_sock >= 0 {
                step(Stage::SendListener, send_fd(listener_sock, listener))?;
            }
            Ok(listener)
        }
    }
}

/// Limits go last: a low RLIMIT_NOFILE must not stop the seccomp listener from getting a
/// descriptor while the host's (close-on-exec) descriptors still fill the table.
unsafe fn set_rlimits(rlimits: &[(crate::sys::Resource, u64, u64)]) -> Result<(), Failed> {
    for (res, soft, hard) in rlimits {
        let lim = [*soft, *hard];
        // SAFETY: a raw prlimit64 on ourselves (pid 0) with the limits on our stack.
        step(Stage::Rlimit, unsafe {
            raw_syscall!(libc::SYS_prlimit64, 0, *res, lim.as_ptr(), 0)
        })?;
    }
    Ok(())
}

/// Unblocks every signal and execs; returns only on failure.
unsafe fn exec(
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> Failed {
    let empty: u64 = 0;
    // SAFETY: raw syscalls; the strings and arrays are the parent's, alive until we exec.
    unsafe {
        raw_syscall!(
            libc::SYS_rt_sigprocmask,
            SIG_SETMASK,
            &empty as *const u64,
            0,
            8
        );
        let r = raw_syscall!(libc::SYS_execve, path, argv, envp);
        (Stage::Execve, r.wrapping_neg())
    }
}

/// What a waiting child needs to confine itself ahead of its run (see `super::pool`). Lives in
/// its pool entry until the child has exec'd or exited.
pub(crate) struct WaitArgs<'a> {
    /// Its end of the socket pair to the pool (`SOCK_SEQPACKET`, close-on-exec, 3 or above):
    /// it sends one byte when confined (with the seccomp listener, when there is one), receives
    /// its run on it, and reports a failure on it (eight bytes, as [`fail`] writes them).
    pub(crate) sock: i32,
    /// When `Some(last_cap)`, empty the bounding set up to `last_cap`.
    pub(crate) drop_bounding: Option<u32>,
    /// The sandbox's Landlock domain and seccomp filter.
    pub(crate) confine: Confine<'a>,
}

/// A run handed to a waiting child: sent by address (the child shares the parent's memory), with
/// the descriptors it needs, which its own descriptor table (a copy from clone time) lacks. It
/// lives on the parent's stack until the child has exec'd or exited.
pub(crate) struct Launch<'a> {
    /// The target number of each received descriptor, in order.
    pub(crate) targets: &'a [i32],
    /// The descriptor after those is the run's `cgroup.procs`.
    pub(crate) cgroup: bool,
    /// Failing to join the cgroup fails the run (otherwise noted in `cgroup_failed`).
    pub(crate) cgroup_required: bool,
    /// Where the child reports a join that failed when not required.
    pub(crate) cgroup_failed: &'a AtomicI32,
    /// NUL-terminated working directory; when `None`, the last received descriptor is the
    /// parent's working directory at the time of the run, to enter with `fchdir`.
    pub(crate) cwd: Option<&'a [u8]>,
    /// `(resource, soft, hard)` limits to set.
    pub(crate) rlimits: &'a [(crate::sys::Resource, u64, u64)],
    /// NUL-terminated program path, argv and envp (NULL-terminated pointer arrays).
    pub(crate) path: *const libc::c_char,
    pub(crate) argv: *const *const libc::c_char,
    pub(crate) envp: *const *const libc::c_char,
}

/// Most descriptors a [`Launch`] brings: the run's, its cgroup and its working directory.
pub(crate) const MAX_LAUNCH_FDS: usize = MAX_FD_MAP + 2;

/// The waiting child's entry point, called by `clone` (without `CLONE_VFORK`) on a stack of
/// its own.
///
/// # Safety
/// `arg` must point to a live [`WaitArgs`] that stays valid until the child execs or exits, and
/// every [`Launch`] sent to it must stay valid for as long.
pub(crate) unsafe extern "C" fn waiting_main(arg: *mut c_void) -> libc::c_int {
    // SAFETY: the pool keeps the WaitArgs alive until the child has exec'd or been reaped.
    let a = unsafe { &*(arg as *const WaitArgs<'_>) };
    // Where a failure is reported: the socket, moved above every target once the run is known.
    let mut report = a.sock;
    // SAFETY: as `child_main`: raw syscalls with arguments from `a` and the launch it receives.
    let (stage, errno) = unsafe { wait_and_run(a, &mut report) };
    // SAFETY: reporting and exiting are plain syscalls on our own descriptor.
    unsafe { fail(report, stage, errno) }
}

/// Confines this child, tells the pool, waits for a run, and runs it; returns only on failure.
unsafe fn wait_and_run(a: &WaitArgs<'_>, report: &mut i32) -> Failed {
    // SAFETY (whole body): raw syscalls on our own stack, on `a`, and on the `Launch` whose
    // address the parent sends (it stays alive until we exec or exit).
    unsafe {
        // Hold nothing of the host's, first thing: this child outlives the moment it was made
        // in, and a pipe's write end held here would keep its reader from seeing end of file.
        // Only the socket and the ruleset (until it is applied) stay.
        close_all_but(a.sock, a.confine.ruleset_fd);
        reset_signals();
        if let Err(f) = step(Stage::Setsid, raw_syscall!(libc::SYS_setsid)) {
            return f;
        }
        if let Err(f) = drop_capabilities(a.drop_bounding) {
            return f;
        }
        let listener = match a.confine.apply(-1) {
            Ok(l) => l,
            Err(f) => return f,
        };
        let sent = if listener >= 0 {
            send_fd(a.sock, listener)
        } else {
            raw_syscall!(libc::SYS_write, a.sock, b"r".as_ptr(), 1)
        };
        if let Err(f) = step(Stage::SendListener, sent) {
            return f;
        }
        // The ruleset is applied: only the socket stays.
        close_all_but(a.sock, -1);

        // Wait for the run: the address of a Launch, and its descriptors.
        let mut word: usize = 0;
        let mut iov = libc::iovec {
            iov_base: (&mut word as *mut usize).cast(),
            iov_len: std::mem::size_of::<usize>(),
        };
        #[repr(C, align(8))]
        struct Control([u8; 16 + 4 * MAX_LAUNCH_FDS]);
        let mut control = Control([0; 16 + 4 * MAX_LAUNCH_FDS]);
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control.0.len() as _;
        let n = loop {
            let n = raw_syscall!(
                libc::SYS_recvmsg,
                a.sock,
                &mut msg as *mut libc::msghdr,
                libc::MSG_CMSG_CLOEXEC
            );
            if n != -(libc::EINTR as isize) {
                break n;
            }
        };
        if n == 0 {
            // The pool is gone (the host closed its end): nothing to run.
            raw_syscall!(libc::SYS_exit_group, 0);
        }
        if let Err(f) = step(Stage::Fds, n) {
            return f;
        }
        if n as usize != std::mem::size_of::<usize>() || msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return (Stage::Fds, libc::EBADMSG as isize);
        }
        let mut fds = [-1i32; MAX_LAUNCH_FDS];
        let mut count = 0usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        if !c.is_null() && (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS
        {
            let data = libc::CMSG_DATA(c).cast::<i32>();
            let len = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize) / 4;
            for (i, slot) in fds.iter_mut().enumerate().take(len) {
                *slot = std::ptr::read_unaligned(data.add(i));
                count = i.wrapping_add(1);
            }
        }
        // Signals sent to this process while it waited (it shows the host's command line, so a
        // `pkill -f` aimed at the host reaches it) are still pending, blocked: they were not
        // meant for the run, which must not get them when exec unblocks them.
        let all: u64 = !0;
        let now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut drained = 0u32;
        while drained < 1024
            && raw_syscall!(
                libc::SYS_rt_sigtimedwait,
                &all as *const u64,
                0,
                &now as *const libc::timespec,
                8
            ) > 0
        {
            drained = drained.wrapping_add(1);
        }
        let l = &*(word as *const Launch<'_>);
        let extra = usize::from(l.cgroup).wrapping_add(usize::from(l.cwd.is_none()));
        if count != l.targets.len().wrapping_add(extra) || l.targets.len() > MAX_FD_MAP {
            return (Stage::Fds, libc::EBADMSG as isize);
        }
        let Some((sources, rest)) = fds.split_at_checked(l.targets.len()) else {
            return (Stage::Fds, libc::EBADMSG as isize);
        };
        let mut rest = rest.iter().copied();

        // The cgroup and the working directory come first: installing the targets may put one
        // over the number they were received on.
        let cgroup_fd = if l.cgroup {
            rest.next().unwrap_or(-1)
        } else {
            -1
        };
        if let Err(f) = join_cgroup(cgroup_fd, l.cgroup_required, l.cgroup_failed) {
            return f;
        }
        let entered = match l.cwd {
            Some(cwd) => raw_syscall!(libc::SYS_chdir, cwd.as_ptr()),
            None => raw_syscall!(libc::SYS_fchdir, rest.next().unwrap_or(-1)),
        };
        if let Err(f) = step(Stage::Chdir, entered) {
            return f;
        }

        let highest = fds
            .iter()
            .chain(l.targets.iter())
            .copied()
            .chain([a.sock])
            .max()
            .unwrap_or(a.sock);
        // A target may take the socket's number: report on a copy above every target (the
        // direct child's error pipe sits above them too).
        *report = match step(
            Stage::Fds,
            raw_syscall!(
                libc::SYS_fcntl,
                a.sock,
                libc::F_DUPFD_CLOEXEC,
                highest.saturating_add(1)
            ),
        ) {
            Ok(fd) => fd as i32,
            Err(f) => return f,
        };
        let pairs = sources.iter().copied().zip(l.targets.iter().copied());
        if let Err(f) = arrange_fds(pairs, report.saturating_add(1)) {
            return f;
        }
        if let Err(f) = set_rlimits(l.rlimits) {
            return f;
        }
        exec(l.path, l.argv, l.envp)
    }
}

/// Closes every descriptor but `a` and `b` (either may be -1).
unsafe fn close_all_but(a: i32, b: i32) {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut from: u32 = 0;
    for keep in [lo, hi] {
        if keep < 0 {
            continue;
        }
        let keep = keep as u32;
        if keep > from {
            // SAFETY: closing descriptor numbers in our own table.
            unsafe {
                raw_syscall!(libc::SYS_close_range, from, keep.wrapping_sub(1), 0);
            }
        }
        from = keep.saturating_add(1);
    }
    // SAFETY: as above.
    unsafe {
        raw_syscall!(libc::SYS_close_range, from, u32::MAX, 0);
    }
}

/// Sends `fd` over the UNIX socket `sock` as `SCM_RIGHTS`, with a one-byte payload.
unsafe fn send_fd(sock: i32, fd: i32) -> isize {
    // struct cmsghdr { size_t len; int level; int type; } followed by the int, padded to 8 bytes.
    #[repr(C, align(8))]
    struct Cmsg {
        len: usize,
        level: i32,
        ty: i32,
        fd: i32,
        pad: i32,
    }
    let mut cmsg = Cmsg {
        len: std::mem::size_of::<usize>()
            + 2 * std::mem::size_of::<i32>()
            + std::mem::size_of::<i32>(),
        level: libc::SOL_SOCKET,
        ty: libc::SCM_RIGHTS,
        fd,
        pad: 0,
    };
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain data; an all-zero value is valid and we fill the fields we use.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&mut cmsg as *mut Cmsg).cast();
    msg.msg_controllen = std::mem::size_of::<Cmsg>() as _;
    // SAFETY: `msg` points at live stack memory for the duration of the call.
    unsafe { raw_syscall!(libc::SYS_sendmsg, sock, &msg as *const libc::msghdr, 0) }
}

/// Reports `(stage, errno)` on the error pipe and exits.
unsafe fn fail(err_fd: i32, stage: Stage, errno: isize) -> ! {
    let word = (stage as u64) | ((errno as u64) << 32);
    // SAFETY: plain syscalls on our own descriptor and our own process.
    unsafe {
        raw_syscall!(libc::SYS_write, err_fd, &word as *const u64, 8);
        raw_syscall!(libc::SYS_exit_group, 127);
    }
    #[allow(clippy::empty_loop)]
    loop {}
}

/// Decodes the eight bytes [`fail`] writes.
pub(crate) fn decode_failure(word: u64) -> (Option<Stage>, i32) {
    (Stage::from_u32(word as u32), (word >> 32) as i32)
}
