//! The child between `clone` and `execve`: the one place where sandlock runs without the usual rules.
//!
//! INVARIANT (read before changing anything in this file):
//! The child is created with `CLONE_VM | CLONE_VFORK`. It runs on a stack the parent mapped for it,
//! inside the parent's address space, while every other thread of the host keeps running and the
//! calling thread is suspended until the child calls `execve` or exits. Therefore code here:
//! - is async-signal-safe: it only issues raw system calls ([`crate::sys::raw`]); it never
//!   allocates, takes a lock, touches `errno` or any thread-local, formats, reads `std::env`, or
//!   calls into the C library (whose state may be mid-update in another thread);
//! - cannot panic: no indexing, no `unwrap`, no arithmetic that can overflow; a panic here would
//!   unwind through the parent's stack frames in shared memory;
//! - only reads [`ChildArgs`], which the parent built completely before `clone` (the plan), and
//!   writes only to its own stack, plus one plain atomic store to `ChildArgs::cgroup_failed` (an
//!   integer the parent reads once `clone` has returned);
//! - never waits on the supervisor: the supervisor is the suspended parent, so a syscall that needed
//!   it (one the seccomp filter routes to user notification) would deadlock. The filter is installed
//!   last and no syscall made after it is one that it notifies;
//! - reports failure as `(stage, errno)`, eight bytes on a close-on-exec pipe, then `exit_group(127)`.
//!
//! Its cost does not depend on the size of the host: `CLONE_VM` copies no page tables.

use std::ffi::c_void;

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
    pub(crate) cgroup_failed: &'a std::sync::atomic::AtomicI32,
    /// NUL-terminated program path, argv and envp (NULL-terminated pointer arrays).
    pub(crate) path: *const libc::c_char,
    pub(crate) argv: *const *const libc::c_char,
    pub(crate) envp: *const *const libc::c_char,
}

const SECCOMP_SET_MODE_FILTER: usize = 1;
const LANDLOCK_RESTRICT_SELF: i64 = libc::SYS_landlock_restrict_self;
const PR_CAP_AMBIENT_CLEAR_ALL: usize = 4;
const SIG_SETMASK: usize = 2;

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
unsafe fn run(a: &ChildArgs<'_>) -> (Stage, isize) {
    macro_rules! check {
        ($stage:expr, $call:expr) => {{
            let r = $call;
            if r < 0 {
                return ($stage, -r);
            }
            r
        }};
    }

    // SAFETY (whole body): every call below is a raw syscall whose pointer arguments point into
    // `a` (built by the parent and kept alive across the vfork) or into this function's stack.
    unsafe {
        // Host signal handlers must never run here: they would run on host memory. The parent blocked
        // every signal before clone; reset every disposition (ignored ones too, as a fresh process
        // expects) before unblocking, right before execve.
        let dfl = [0u64; 4];
        let mut sig: usize = 1;
        while sig <= 64 {
            if sig != libc::SIGKILL as usize && sig != libc::SIGSTOP as usize {
                raw_syscall!(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), 0, 8);
            }
            sig = sig.wrapping_add(1);
        }

        // Join the run's cgroup (when there is one) before anything else, so that everything the
        // sandbox does and starts is inside it: writing "0" to cgroup.procs moves the writer.
        if a.cgroup_procs_fd >= 0 {
            let r = raw_syscall!(libc::SYS_write, a.cgroup_procs_fd, b"0".as_ptr(), 1);
            if r < 0 {
                if a.cgroup_required {
                    return (Stage::Cgroup, r.wrapping_neg());
                }
                // A plain store to memory the parent reads after clone returns: signal-safe.
                a.cgroup_failed.store(
                    r.wrapping_neg() as i32,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }

        // A new session and process group: the supervisor kills the whole tree with kill(-pgid), and
        // without a controlling terminal the sandbox cannot inject input into the host's.
        check!(Stage::Setsid, raw_syscall!(libc::SYS_setsid));

        // Move every source out of the way first (close-on-exec copies above everything), mark
        // every descriptor from 3 up close-on-exec, then install the targets: dup3 clears the flag
        // on exactly those. Nothing else of the host's survives exec: not inherited descriptors,
        // not ones another host thread opened without O_CLOEXEC a moment ago.
        let mut temps = [-1i32; MAX_FD_MAP];
        for (slot, (src, _)) in temps.iter_mut().zip(a.fd_map.iter()) {
            *slot = check!(
                Stage::Fds,
                raw_syscall!(libc::SYS_fcntl, *src, libc::F_DUPFD_CLOEXEC, a.temp_base)
            ) as i32;
        }
        check!(
            Stage::Fds,
            raw_syscall!(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC
            )
        );
        for (tmp, (_, dst)) in temps.iter().zip(a.fd_map.iter()) {
            check!(Stage::Fds, raw_syscall!(libc::SYS_dup3, *tmp, *dst, 0));
        }

        if let Some(cwd) = a.cwd {
            check!(Stage::Chdir, raw_syscall!(libc::SYS_chdir, cwd.as_ptr()));
        }

        if a.drop_caps {
            if let Some(last) = a.drop_bounding {
                let mut cap: u32 = 0;
                while cap <= last {
                    check!(
                        Stage::Capabilities,
                        raw_syscall!(libc::SYS_prctl, libc::PR_CAPBSET_DROP, cap, 0, 0, 0)
                    );
                    cap = cap.wrapping_add(1);
                }
            }
            check!(
                Stage::Capabilities,
                raw_syscall!(
                    libc::SYS_prctl,
                    libc::PR_CAP_AMBIENT,
                    PR_CAP_AMBIENT_CLEAR_ALL,
                    0,
                    0,
                    0
                )
            );
            let header = [crate::sys::LINUX_CAPABILITY_VERSION_3, 0u32];
            let data = [0u32; 6];
            check!(
                Stage::Capabilities,
                raw_syscall!(libc::SYS_capset, header.as_ptr(), data.as_ptr())
            );
        }

        check!(
            Stage::NoNewPrivs,
            raw_syscall!(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        );

        if a.ruleset_fd >= 0 {
            check!(
                Stage::LandlockRestrict,
                raw_syscall!(LANDLOCK_RESTRICT_SELF, a.ruleset_fd, 0)
            );
        }

        if let Some(prog) = a.filter {
            let listener = check!(
                Stage::Seccomp,
                raw_syscall!(
                    libc::SYS_seccomp,
                    SECCOMP_SET_MODE_FILTER,
                    a.filter_flags,
                    prog as *const libc::sock_fprog
                )
            );
            if a.listener_sock >= 0 {
                check!(
                    Stage::SendListener,
                    send_fd(a.listener_sock, listener as i32)
                );
            }
        }

        // Limits go last: a low RLIMIT_NOFILE must not stop the seccomp listener from getting a
        // descriptor while the host's (close-on-exec) descriptors still fill the table.
        for (res, soft, hard) in a.rlimits {
            let lim = [*soft, *hard];
            check!(
                Stage::Rlimit,
                raw_syscall!(libc::SYS_prlimit64, 0, *res, lim.as_ptr(), 0)
            );
        }

        let empty: u64 = 0;
        raw_syscall!(
            libc::SYS_rt_sigprocmask,
            SIG_SETMASK,
            &empty as *const u64,
            0,
            8
        );

        let r = raw_syscall!(libc::SYS_execve, a.path, a.argv, a.envp);
        (Stage::Execve, -r)
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
