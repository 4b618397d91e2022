//! Starting the child: `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)` with everything prepared.
//!
//! `CLONE_VM` makes the cost independent of the host's size (no page tables are copied, unlike
//! `fork`), and `CLONE_VFORK` keeps the calling thread parked until the child has exec'd, so the
//! stack and arguments we lend it stay valid. The child code lives in [`child`]; this side only
//! blocks signals around the clone, and turns the child's `(stage, errno)` report into an error.
//!
//! Never `clone3`: container runtimes answer it with ENOSYS. The child is created with exit signal
//! 0 and reaped through its pidfd. That keeps a host's `waitpid(-1)` away from it only until it
//! execs: measured on 6.18, an exec'd child's exit is signalled to the host with `SIGCHLD` and a
//! plain `waitpid(-1)` reaps it. The supervisor survives that (ECHILD: the status is read from the
//! pidfd where the kernel has `PIDFD_GET_INFO`, 6.15).
//!
//! A sandbox that runs more than once also keeps a child confined ahead of its next run
//! ([`pool`]); its code is in [`child`] too, under the same rules.

pub(crate) mod child;
pub(crate) mod pool;

use std::cell::Cell;
use std::ffi::c_void;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::error::{SandboxError, Stage, errno_name};
use crate::sys;

pub(crate) use child::{ChildArgs, Launch, MAX_FD_MAP};

/// Size of the stack lent to the child; it only runs [`child::run`].
const STACK_SIZE: usize = 128 * 1024;
const GUARD: usize = 4096;

/// A stack for the child, with a guard page below it.
pub(crate) struct ChildStack {
    base: *mut c_void,
    len: usize,
}

// SAFETY: a ChildStack owns its mapping outright (the pointer is only its address), so moving it
// to another thread moves nothing shared; the pool hands stacks between threads.
unsafe impl Send for ChildStack {}

impl ChildStack {
    pub(crate) fn new() -> Result<ChildStack, SandboxError> {
        let len = STACK_SIZE + GUARD;
        // SAFETY: an anonymous private mapping; no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(SandboxError::last_os(
                Stage::Prepare,
                "cannot map a stack for the child",
            ));
        }
        let stack = ChildStack { base, len };
        // SAFETY: the first page of our own fresh mapping.
        if unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) } != 0 {
            return Err(SandboxError::last_os(
                Stage::Prepare,
                "cannot protect the child's stack guard",
            ));
        }
        Ok(stack)
    }

    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of our own mapping; stacks grow down from there.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping we created; no child uses it once the clone that
        // lent it has returned (it exec'd into a new address space, or exited).
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

thread_local! {
    /// The calling thread's child stack, kept from one spawn to the next: mapping a fresh one,
    /// guarding it, faulting its pages in and unmapping it cost more per run than the child's
    /// own setup. Reusing it is safe because a spawn returns only once its child has exec'd or
    /// exited (`CLONE_VFORK`), and a thread runs one spawn at a time. A thread that ends unmaps
    /// its stack.
    static STACK: Cell<Option<ChildStack>> = const { Cell::new(None) };
}

/// This thread's kept stack, or a new one.
fn take_stack() -> Result<ChildStack, SandboxError> {
    match STACK.try_with(Cell::take) {
        Ok(Some(stack)) => Ok(stack),
        _ => ChildStack::new(),
    }
}

/// Keeps `stack` for this thread's next spawn (unmaps it if the thread is being torn down).
fn keep_stack(stack: ChildStack) {
    let _ = STACK.try_with(move |s| s.set(Some(stack)));
}

/// A started child.
pub(crate) struct Started {
    pub(crate) pid: libc::pid_t,
    pub(crate) pidfd: OwnedFd,
    /// The seccomp listener, when the filter routes syscalls to the supervisor.
    pub(crate) listener: Option<OwnedFd>,
}

/// Blocks every signal, the C library's internal ones included, so that no host handler runs in
/// a child before it has reset the dispositions; returns the mask to restore. Raw syscall:
/// pthread_sigmask would refuse to block the internal ones.
fn block_all_signals() -> u64 {
    let all: u64 = !0;
    let mut old: u64 = 0;
    // SAFETY: rt_sigprocmask reads `all` and writes `old`, both 8-byte sigsets on our stack.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &all,
            &mut old,
            8usize,
        );
    }
    old
}

/// Restores the mask [`block_all_signals`] returned.
fn restore_signals(old: u64) {
    // SAFETY: rt_sigprocmask reads `old`, an 8-byte sigset on our stack.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &old,
            std::ptr::null_mut::<u64>(),
            8usize,
        );
    }
}

extern "C" fn child_entry(arg: *mut c_void) -> libc::c_int {
    // SAFETY: only `clone` below calls this, with a pointer to a ChildArgs that the parent keeps
    // alive until the child has exec'd or exited (CLONE_VFORK).
    unsafe { child::child_main(arg) }
}

/// Clones the child, waits (by `CLONE_VFORK`) until it has exec'd or failed, and reports which.
///
/// `err_read`/`err_write` are the two ends of the close-on-exec error pipe whose write end `args`
/// names; `listener_recv` is our end of the socket pair the child sends the seccomp listener on.
pub(crate) fn spawn(
    args: &ChildArgs<'_>,
    err_read: OwnedFd,
    err_write: OwnedFd,
    listener_recv: Option<&OwnedFd>,
) -> Result<Started, SandboxError> {
    let stack = take_stack()?;
    let mut pidfd: libc::c_int = -1;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD;

    let old = block_all_signals();
    // SAFETY: `stack` is a fresh mapping of STACK_SIZE bytes above a guard page; `args` outlives the
    // child's use of it because CLONE_VFORK suspends us until it has exec'd or exited; `pidfd` is
    // where CLONE_PIDFD stores the new descriptor.
    let pid = unsafe {
        libc::clone(
            child_entry,
            stack.top(),
            flags,
            (args as *const ChildArgs<'_>).cast_mut().cast(),
            &mut pidfd as *mut libc::c_int,
        )
    };
    let clone_errno = sys::errno();
    restore_signals(old);
    keep_stack(stack);
    if pid < 0 {
        return Err(SandboxError::new(
            Stage::Clone,
            Some(clone_errno),
            clone_hint(clone_errno),
        ));
    }
    // SAFETY: CLONE_PIDFD stored a new descriptor that nothing else owns.
    let pidfd = unsafe { sys::owned(pidfd) };

    drop(err_write);
    let mut word = [0u8; 8];
    // The pipe is non-blocking and the child is done with it: eight bytes, or nothing (exec'd).
    if matches!(sys::read(err_read.as_raw_fd(), &mut word), Ok(8)) {
        reap(&pidfd);
        return Err(child_error(u64::from_ne_bytes(word)));
    }

    let listener = match listener_recv {
        Some(sock) => Some(
            recv_fd(sock)
                .and_then(|(_, fd)| {
                    fd.ok_or_else(|| std::io::Error::from_raw_os_error(libc::EBADMSG))
                })
                .map_err(|e| {
                    reap_kill(&pidfd);
                    SandboxError::io(
                        Stage::RecvListener,
                        &e,
                        "the child installed its seccomp filter but its listener did not arrive",
                    )
                })?,
        ),
        None => None,
    };
    Ok(Started {
        pid,
        pidfd,
        listener,
    })
}

/// The error for the `(stage, errno)` word a child reported.
fn child_error(word: u64) -> SandboxError {
    let (stage, errno) = child::decode_failure(word);
    let stage = stage.unwrap_or(Stage::Execve);
    SandboxError::new(stage, Some(errno), child_hint(stage, errno))
}

/// Reaps a child that has exited or been killed.
pub(crate) fn reap(pidfd: &OwnedFd) {
    let mut info: libc::siginfo_t = unsafe_zeroed_siginfo();
    // SAFETY: waitid on our own child's pidfd, writing into `info`.
    unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::__WALL,
        );
    }
}

fn reap_kill(pidfd: &OwnedFd) {
    // SAFETY: signalling and reaping our own child through its pidfd.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            0,
            0,
        );
    }
    reap(pidfd);
}

pub(crate) fn unsafe_zeroed_siginfo() -> libc::siginfo_t {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Receives one message without waiting: its length, and the descriptor it carried with
/// `SCM_RIGHTS`, if any.
fn recv_fd(sock: &OwnedFd) -> std::io::Result<(usize, Option<OwnedFd>)> {
    let mut buf = [0u8; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    #[repr(C, align(8))]
    struct Buf([u8; 64]);
    let mut cbuf = Buf([0; 64]);
    // SAFETY: msghdr is plain data; all-zero is valid and we set what we use.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.0.len() as _;
    // SAFETY: `msg` points at live buffers for the duration of the call.
    let n = unsafe {
        libc::recvmsg(
            sock.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: CMSG_FIRSTHDR/CMSG_DATA walk the control buffer the kernel just filled.
    let fd = unsafe {
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            // A descriptor was sent but could not be installed (this process is at its limit);
            // the kernel closed it. Whatever came with it, close it too.
            let c = libc::CMSG_FIRSTHDR(&msg);
            if !c.is_null()
                && (*c).cmsg_type == libc::SCM_RIGHTS
                && (*c).cmsg_len as usize >= libc::CMSG_LEN(4) as usize
            {
                drop(sys::owned(std::ptr::read_unaligned(
                    libc::CMSG_DATA(c).cast::<libc::c_int>(),
                )));
            }
            return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
        }
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_level != libc::SOL_SOCKET || (*c).cmsg_type != libc::SCM_RIGHTS
        {
            None
        } else {
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
            Some(sys::owned(fd))
        }
    };
    Ok((n as usize, fd))
}

fn clone_hint(errno: i32) -> String {
    match errno {
        libc::EAGAIN => "the host cannot create another process (RLIMIT_NPROC or a pids cgroup limit \
                         reached); wait for other processes to finish or raise the limit"
            .into(),
        libc::ENOMEM => "the host is out of memory".into(),
        libc::EPERM | libc::ENOSYS => "the host's seccomp profile refused clone(); sandlock needs \
                                       plain clone with CLONE_VM|CLONE_VFORK|CLONE_PIDFD (Linux 5.2)"
            .into(),
        libc::EINVAL => "this kernel does not support CLONE_PIDFD (needs Linux 5.2)".into(),
        e => format!("clone failed ({})", errno_name(e)),
    }
}

/// What a person can do about a failure the child reported.
fn child_hint(stage: Stage, errno: i32) -> String {
    match (stage, errno) {
        (Stage::Execve, libc::ENOENT) => {
            "no such program (or its interpreter or dynamic loader is missing)".into()
        }
        (Stage::Execve, libc::EACCES) => {
            "permission denied: the program (or a directory on its path) \
                                          is not in fs_readable, or lacks the execute bit"
                .into()
        }
        (Stage::Execve, libc::ENOEXEC) => {
            "not an executable format; a script needs a #! line".into()
        }
        (Stage::Execve, libc::E2BIG) => "argv and environment are too large for execve".into(),
        (Stage::Execve, libc::ETXTBSY) => "the program file is open for writing".into(),
        (Stage::Chdir, _) => "cannot enter the working directory (cwd)".into(),
        (Stage::Fds, libc::EBADF) => "a file descriptor to pass is not open".into(),
        (Stage::Fds, libc::EMFILE) => "too many open files while arranging descriptors".into(),
        (Stage::Rlimit, libc::EPERM) => {
            "a limit is above the host's hard limit; lower it or raise \
                                         the host's limit"
                .into()
        }
        (Stage::Capabilities, _) => "cannot drop capabilities".into(),
        (Stage::NoNewPrivs, _) => "cannot set no_new_privs".into(),
        (Stage::LandlockRestrict, libc::E2BIG) => {
            "too many nested Landlock domains (the host is already sandboxed 16 deep)".into()
        }
        (Stage::LandlockRestrict, _) => "the kernel refused to apply the Landlock ruleset; run \
                                         `sandlock check`"
            .into(),
        (Stage::Seccomp, libc::EBUSY) => "another seccomp listener is already installed for this \
                                          process tree (nested sandlock with limits)"
            .into(),
        (Stage::Seccomp, _) => "the kernel or the host's seccomp profile refused the filter; run \
                                `sandlock check`"
            .into(),
        (Stage::SendListener, _) => "cannot hand the seccomp listener to the supervisor".into(),
        (Stage::Cgroup, libc::EACCES | libc::EPERM) => {
            "cannot move the process into its cgroup: cgroup.procs of the common ancestor of this \
             process's cgroup and cgroup_parent must be writable (delegated) to this user"
                .into()
        }
        (Stage::Cgroup, libc::ENOENT | libc::ENODEV) => {
            "the run's cgroup disappeared before the process joined it".into()
        }
        (Stage::Cgroup, libc::EBUSY | libc::EOPNOTSUPP) => {
            "the kernel refused the move: cgroup_parent has controllers that forbid processes in \
             its children (threaded or domain-invalid); give a plain delegated directory"
                .into()
        }
        (s, e) => format!("{s} failed ({})", errno_name(e)),
    }
}
