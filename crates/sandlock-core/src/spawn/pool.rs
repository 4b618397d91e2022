//! Children confined ahead of their run: a [`Pool`] per `Sandbox`.
//!
//! Every run of a sandbox starts a child that confines itself the same way: empty the bounding
//! set (as root), `no_new_privs`, the Landlock domain, the seccomp filter. That is most of what a
//! run costs beyond `subprocess.run` (docs/perf/startup-breakdown.md), and none of it depends on
//! the command. So once a sandbox has run twice, each thread that runs it keeps one child that
//! has done all of it and waits, blocked in `recvmsg`, for its run (up to [`MAX_WAITING`] per
//! sandbox and [`MAX_WAITING_PER_PROCESS`] in the host); a run then hands it the command and its
//! descriptors and makes the next one while the handed child execs on another CPU.
//!
//! The waiting child is made like the direct one (`clone` with `CLONE_VM`, never `clone3`, exit
//! signal 0, reaped through its pidfd) but without `CLONE_VFORK`, on a stack of its own, and with
//! `CLONE_CHILD_CLEARTID`: the kernel clears a word when the child's use of our memory ends (at
//! `execve`, or at exit) and wakes a futex on it, which is how a run knows that the [`Launch`] it
//! lent is free again. Its code is in [`super::child`], under the same rules as the direct
//! child's (async-signal-safe, raw syscalls only); while it waits it holds no descriptor of the
//! host's but its socket, and it reports a failed run on a copy of that socket placed above every
//! descriptor the run installs.
//!
//! What a waiting child has is fixed when it is made, so it is handed only to a run on the
//! thread that made it, under the same user and group ids (a thread may carry a Landlock domain
//! or seccomp filter of the host's own, an affinity, a nice value); its umask and the resource
//! limits the policy does not set are the host's at that moment; the working directory goes with
//! each run. Signals sent to it while it waits (it shows the host's command line, so `pkill -f`
//! reaches it) are blocked, and discarded when its run arrives. A policy that denies a syscall
//! the hand-over makes after the filter ([`AFTER_FILTER`]) keeps no child waiting.
//!
//! Sharing the host's memory while it waits is why a waiting child is only kept when the
//! sandbox has a Landlock domain: Landlock lets a process trace, or open the `/proc/<pid>/mem` or
//! `environ` of, only processes in its own domain or below it, and the waiting child's domain is
//! a sibling of every run's, so no process confined by Landlock reaches it (seccomp also refuses
//! `ptrace` and `process_vm_readv`). A process with no Landlock domain, of the same user, that
//! could reach the waiting child could reach the host process itself, whose memory it is. A host
//! that forks does not use its parent's pool at all (its waiting children share the parent's
//! memory, not the fork's, and a lock may have been held at the fork); they end when the sandbox
//! is dropped, or when the host's end of their socket closes.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use super::child::{self, Confine, Launch, MAX_LAUNCH_FDS, WaitArgs};
use super::{ChildStack, Started};
use crate::error::{SandboxError, Stage};
use crate::sys;

/// Most confined children a sandbox keeps waiting: one per thread that runs it, up to this many.
const MAX_WAITING: usize = 8;
/// Most confined children waiting in this process, over every sandbox: each is a process, and a
/// server with many sandboxes must not fill a pids limit with them.
const MAX_WAITING_PER_PROCESS: usize = 32;

/// Confined children waiting (or being made) in this process.
static WAITING_IN_PROCESS: AtomicUsize = AtomicUsize::new(0);

/// The syscalls a waiting child makes after its seccomp filter is in place that a direct child
/// makes before (the hand-over, the descriptors, the working directory, the cgroup, the pending
/// signals): a policy that denies one of them (`extra_deny_syscalls`) gets no waiting child.
pub(crate) const AFTER_FILTER: &[&str] = &[
    "recvmsg",
    "rt_sigtimedwait",
    "write",
    "chdir",
    "fchdir",
    "fcntl",
    "close_range",
    "dup3",
];

/// Who made a waiting child: its process, thread and credentials. A child is handed only to a
/// run on the same thread with the same credentials, because it carries the state of the thread
/// that made it (its own Landlock domain and seccomp filters, if the host confined that thread,
/// its credentials, CPU affinity and nice value).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Maker {
    pid: libc::pid_t,
    tid: libc::pid_t,
    uids: [libc::uid_t; 3],
    gids: [libc::gid_t; 3],
}

impl Maker {
    fn now() -> Maker {
        let mut uids = [0; 3];
        let mut gids = [0; 3];
        // SAFETY: getresuid/getresgid write three ids each into arrays on our stack; getpid and
        // gettid have no preconditions.
        unsafe {
            libc::getresuid(&mut uids[0], &mut uids[1], &mut uids[2]);
            libc::getresgid(&mut gids[0], &mut gids[1], &mut gids[2]);
            Maker {
                pid: libc::getpid(),
                tid: libc::gettid(),
                uids,
                gids,
            }
        }
    }
}

/// A confined child waiting for its run. Dropping it kills and reaps the child (from the process
/// that made it; a forked host only closes its copies of the descriptors), before the stack and
/// arguments the child uses are freed.
pub(crate) struct Waiting {
    pid: libc::pid_t,
    /// `None` once the child is handed over and has exec'd (it is then the run's).
    pidfd: Option<OwnedFd>,
    /// Our end of its socket pair.
    sock: OwnedFd,
    /// Cleared by the kernel (with a futex wake) when the child execs or exits.
    ctid: Box<AtomicU32>,
    /// What the child reads while it confines itself.
    _args: Box<WaitArgs<'static>>,
    /// The filter program `args` points at (the sandbox's, copied: a `Waiting` may outlive a
    /// borrow of the plan while it moves between threads).
    _filter: Option<Box<(Vec<libc::sock_filter>, libc::sock_fprog)>>,
    /// `None` once given back to the pool.
    stack: Option<ChildStack>,
    /// Whether the child sends a seccomp listener with its "confined" message.
    wants_listener: bool,
    maker: Maker,
}

// SAFETY: the raw pointers in `args` point into the boxed program owned by the same `Waiting`,
// and into nothing else; the child reads them, the parent never writes them after the clone.
unsafe impl Send for Waiting {}

impl Drop for Waiting {
    fn drop(&mut self) {
        // SAFETY: getpid has no preconditions.
        if self.maker.pid == unsafe { libc::getpid() } {
            WAITING_IN_PROCESS.fetch_sub(1, Ordering::AcqRel);
        }
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        // SAFETY: getpid has no preconditions.
        if self.maker.pid == unsafe { libc::getpid() } {
            super::reap_kill(&pidfd);
        }
        // The fields (the stack, the arguments) are freed after this: the child is gone, or is
        // not ours (a forked host's copies of that memory are its own).
    }
}

/// The confined children a sandbox keeps waiting, and spare stacks for the next ones.
pub(crate) struct Pool {
    waiting: Mutex<Vec<Waiting>>,
    stacks: Mutex<Vec<ChildStack>>,
    /// Runs started so far: a sandbox run only once (the CLI) keeps no child waiting.
    runs: AtomicUsize,
    /// The process the pool belongs to: a forked host uses none of it (not even its locks,
    /// which another thread may have held at the fork).
    owner: libc::pid_t,
}

/// What a waiting child is made with: the sandbox's confinement.
pub(crate) struct Recipe<'a> {
    pub(crate) drop_bounding: Option<u32>,
    pub(crate) ruleset_fd: RawFd,
    pub(crate) filter: Option<&'a [libc::sock_filter]>,
    pub(crate) filter_flags: u64,
}

/// A waiting child that has confined itself, with its seccomp listener.
pub(crate) struct Ready {
    waiting: Waiting,
    listener: Option<OwnedFd>,
}

/// A run handed to a waiting child, whose exec has not been confirmed yet.
pub(crate) struct Handed {
    waiting: Waiting,
    listener: Option<OwnedFd>,
}

impl Pool {
    /// An empty pool.
    pub(crate) fn new() -> Pool {
        Pool {
            waiting: Mutex::new(Vec::new()),
            stacks: Mutex::new(Vec::new()),
            runs: AtomicUsize::new(0),
            // SAFETY: getpid has no preconditions.
            owner: unsafe { libc::getpid() },
        }
    }

    /// Whether this process may use the pool (it is not a fork of the one that made it).
    fn usable(&self) -> bool {
        // SAFETY: getpid has no preconditions.
        self.owner == unsafe { libc::getpid() }
    }

    /// How many confined children are waiting (for tests and status).
    pub(crate) fn waiting(&self) -> usize {
        if !self.usable() {
            return 0;
        }
        self.waiting.lock().map_or(0, |w| w.len())
    }

    /// Counts a run; true from the second on (when keeping a child waiting starts to pay).
    pub(crate) fn count_run(&self) -> bool {
        self.runs.fetch_add(1, Ordering::Relaxed) >= 1
    }

    /// This thread's waiting child, confined and alive, if there is one. A child found dead,
    /// failed, or made under other credentials is killed and dropped (the run then starts
    /// directly, which reports any error).
    pub(crate) fn take(&self) -> Option<Ready> {
        if !self.usable() {
            return None;
        }
        let me = Maker::now();
        let w = {
            let mut list = self.waiting.lock().ok()?;
            let i = list.iter().position(|w| w.maker.tid == me.tid)?;
            list.swap_remove(i)
        };
        if w.maker != me {
            self.discard(w);
            return None;
        }
        match ready(&w) {
            Ok(listener) => Some(Ready {
                waiting: w,
                listener,
            }),
            Err(()) => {
                self.discard(w);
                None
            }
        }
    }

    /// Makes a waiting child for this thread, unless it has one. At [`MAX_WAITING`], only the
    /// child of a thread that has ended makes room (more threads than that take turns starting
    /// directly, rather than kill each other's children). Failures only leave the pool short: the
    /// next run starts directly and reports what is wrong.
    pub(crate) fn refill(&self, recipe: &Recipe<'_>) {
        if !self.usable() {
            return;
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        match self.waiting.lock() {
            Ok(list)
                if !list.iter().any(|w| w.maker.tid == tid)
                    && (list.len() < MAX_WAITING || list.iter().any(maker_ended)) => {}
            _ => return,
        }
        if WAITING_IN_PROCESS.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING_PER_PROCESS {
            WAITING_IN_PROCESS.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let Ok(w) = self.make(recipe) else {
            WAITING_IN_PROCESS.fetch_sub(1, Ordering::AcqRel);
            return;
        };
        let surplus = match self.waiting.lock() {
            Ok(mut list) => {
                if list.len() < MAX_WAITING {
                    list.push(w);
                    None
                } else if let Some(i) = list.iter().position(maker_ended) {
                    let old = list.swap_remove(i);
                    list.push(w);
                    Some(old)
                } else {
                    Some(w)
                }
            }
            Err(_) => Some(w),
        };
        if let Some(w) = surplus {
            self.discard(w);
        }
    }

    fn make(&self, recipe: &Recipe<'_>) -> Result<Waiting, SandboxError> {
        let prep =
            |e: std::io::Error, what: &str| SandboxError::io(Stage::Prepare, &e, what.to_string());
        let (ours, theirs) = sys::socketpair(libc::SOCK_SEQPACKET)
            .map_err(|e| prep(e, "cannot create a waiting child's socket pair"))?;
        let theirs = sys::keep_above(theirs, 3)
            .map_err(|e| prep(e, "cannot arrange a waiting child's socket"))?;
        let filter = recipe.filter.map(|f| {
            let mut b = Box::new((
                f.to_vec(),
                libc::sock_fprog {
                    len: 0,
                    filter: std::ptr::null_mut(),
                },
            ));
            b.1 = libc::sock_fprog {
                len: b.0.len() as u16,
                filter: b.0.as_mut_ptr(),
            };
            b
        });
        // SAFETY: the program lives in `filter`'s box, which the returned Waiting owns, and a
        // box's contents do not move when the box does.
        let prog: Option<&'static libc::sock_fprog> = filter
            .as_ref()
            .map(|b| unsafe { &*(&b.1 as *const libc::sock_fprog) });
        let args = Box::new(WaitArgs {
            sock: theirs.as_raw_fd(),
            drop_bounding: recipe.drop_bounding,
            confine: Confine {
                ruleset_fd: recipe.ruleset_fd,
                filter: prog,
                filter_flags: recipe.filter_flags,
            },
        });
        let stack = match self.stacks.lock().ok().and_then(|mut s| s.pop()) {
            Some(s) => s,
            None => ChildStack::new()?,
        };
        let ctid = Box::new(AtomicU32::new(1));
        let maker = Maker::now();
        let mut pidfd: libc::c_int = -1;
        let flags = libc::CLONE_VM | libc::CLONE_PIDFD | libc::CLONE_CHILD_CLEARTID;
        // As in `super::spawn`: every signal blocked across the clone, so that no host handler
        // runs in the child before it has reset the dispositions.
        let old = super::block_all_signals();
        // SAFETY: `stack` is a mapping of our own that nothing else uses; `args` and `ctid` are
        // boxes the returned Waiting owns, freed only once the child has exec'd or been reaped
        // (and so no longer uses this memory); `pidfd` is where CLONE_PIDFD stores the new
        // descriptor.
        let pid = unsafe {
            libc::clone(
                waiting_entry,
                stack.top(),
                flags,
                (&*args as *const WaitArgs<'_>).cast_mut().cast(),
                &mut pidfd as *mut libc::c_int,
                std::ptr::null_mut::<libc::c_void>(),
                ctid.as_ptr(),
            )
        };
        let clone_errno = sys::errno();
        super::restore_signals(old);
        if pid < 0 {
            self.keep_stack(stack);
            return Err(SandboxError::new(
                Stage::Clone,
                Some(clone_errno),
                super::clone_hint(clone_errno),
            ));
        }
        drop(theirs);
        Ok(Waiting {
            pid,
            // SAFETY: CLONE_PIDFD stored a new descriptor that nothing else owns.
            pidfd: Some(unsafe { sys::owned(pidfd) }),
            sock: ours,
            ctid,
            _args: args,
            _filter: filter,
            stack: Some(stack),
            wants_listener: recipe.filter.is_some()
                && recipe.filter_flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER != 0,
            maker,
        })
    }

    fn keep_stack(&self, stack: ChildStack) {
        if let Ok(mut s) = self.stacks.lock() {
            if s.len() < 2 {
                s.push(stack);
            }
        }
    }

    /// Kills and reaps a waiting child, and keeps its stack.
    fn discard(&self, mut w: Waiting) {
        if let Some(pidfd) = w.pidfd.take() {
            super::reap_kill(&pidfd);
        }
        if let Some(stack) = w.stack.take() {
            self.keep_stack(stack);
        }
    }

    /// Hands `launch` and its descriptors to the child. On failure the child is discarded and
    /// the caller starts the run directly.
    pub(crate) fn hand(&self, r: Ready, launch: &Launch<'_>, fds: &[RawFd]) -> Option<Handed> {
        if fds.len() > MAX_LAUNCH_FDS || send_launch(&r.waiting.sock, launch, fds).is_err() {
            self.discard(r.waiting);
            return None;
        }
        Some(Handed {
            waiting: r.waiting,
            listener: r.listener,
        })
    }

    /// Waits until a handed child has exec'd or failed (its `Launch` is then free), and turns it
    /// into a started child, or an error with the stage and errno the child reported.
    pub(crate) fn finish(&self, h: Handed) -> Result<Started, SandboxError> {
        let Handed {
            waiting: mut w,
            listener,
        } = h;
        wait_cleared(&w.ctid);
        let mut word = [0u8; 8];
        // The child execs (the socket closes: nothing to read) or writes its failure and exits.
        // SAFETY: a non-blocking recv into `word`.
        let n = unsafe {
            libc::recv(
                w.sock.as_raw_fd(),
                word.as_mut_ptr().cast(),
                word.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if let Some(stack) = w.stack.take() {
            self.keep_stack(stack);
        }
        let Some(pidfd) = w.pidfd.take() else {
            return Err(SandboxError::new(
                Stage::Wait,
                None,
                "a handed child lost its pidfd",
            ));
        };
        if n == 8 {
            super::reap(&pidfd);
            return Err(super::child_error(u64::from_ne_bytes(word)));
        }
        Ok(Started {
            pid: w.pid,
            pidfd,
            listener,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Each Waiting kills and reaps its child (when this process made it) as it drops.
        let list = match self.waiting.get_mut() {
            Ok(l) => std::mem::take(l),
            Err(p) => std::mem::take(p.into_inner()),
        };
        drop(list);
    }
}

extern "C" fn waiting_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: only `Pool::make` calls this, through `clone`, with a pointer to a WaitArgs that the
    // Waiting keeps alive until the child has exec'd or been reaped.
    unsafe { child::waiting_main(arg) }
}

/// Waits for the child's "confined" message: `Ok` with its listener (when the filter has one),
/// `Err` if it failed or died.
fn ready(w: &Waiting) -> Result<Option<OwnedFd>, ()> {
    // Normally it confined itself long ago and its message is there.
    match super::recv_fd(&w.sock) {
        Ok((1, listener)) => return confined(w, listener),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
        _ => return Err(()),
    }
    let mut fds = [
        libc::pollfd {
            fd: w.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: w.pidfd.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // The child confines itself in well under a millisecond; a child that has not after 5 s is
    // stuck (or starved) and the run goes direct rather than wait on it.
    // SAFETY: poll on two pollfds on our stack.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 5000) };
    if n <= 0 || fds[0].revents & libc::POLLIN == 0 {
        return Err(());
    }
    match super::recv_fd(&w.sock) {
        Ok((1, listener)) => confined(w, listener),
        _ => Err(()),
    }
}

/// A "confined" message is good when it brought the listener exactly when one was asked for
/// (the kernel drops a descriptor it cannot install, when this process is at its limit).
fn confined(w: &Waiting, listener: Option<OwnedFd>) -> Result<Option<OwnedFd>, ()> {
    if listener.is_some() == w.wants_listener {
        Ok(listener)
    } else {
        Err(())
    }
}

/// Whether the thread that made `w` has ended (its child can then serve nobody).
fn maker_ended(w: &Waiting) -> bool {
    // SAFETY: signal 0 only checks that the thread exists.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, w.maker.pid, w.maker.tid, 0) };
    r != 0 && sys::errno() == libc::ESRCH
}

/// Blocks until the kernel has cleared `word` (the child exec'd or exited).
fn wait_cleared(word: &AtomicU32) {
    loop {
        let v = word.load(Ordering::Acquire);
        if v == 0 {
            return;
        }
        // SAFETY: FUTEX_WAIT on a live word of ours; it returns at once if the word changed.
        // Not FUTEX_PRIVATE_FLAG: the kernel's wake at exec or exit is not private either.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                v,
                std::ptr::null::<libc::timespec>(),
            );
        }
    }
}

/// Sends the address of `launch` and `fds` as `SCM_RIGHTS` in one message.
fn send_launch(sock: &OwnedFd, launch: &Launch<'_>, fds: &[RawFd]) -> std::io::Result<()> {
    let word = (launch as *const Launch<'_>) as usize;
    let mut iov = libc::iovec {
        iov_base: (&word as *const usize).cast_mut().cast(),
        iov_len: std::mem::size_of::<usize>(),
    };
    #[repr(C, align(8))]
    struct Control([u8; 16 + 4 * MAX_LAUNCH_FDS]);
    let mut control = Control([0; 16 + 4 * MAX_LAUNCH_FDS]);
    // SAFETY: msghdr is plain data; all-zero is valid and we set what we use.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds);
        // SAFETY: CMSG_* compute within `control`, which holds CMSG_SPACE(bytes) for at most
        // MAX_LAUNCH_FDS descriptors (checked by the caller).
        unsafe {
            msg.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(bytes as u32) as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: `msg` points at live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
