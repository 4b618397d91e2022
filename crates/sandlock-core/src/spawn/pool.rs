//! Children confined ahead of their run: a [`Pool`] per `Sandbox`.
//!
//! Every run of a sandbox starts a child that confines itself the same way: empty the bounding
//! set (as root), `no_new_privs`, the Landlock domain, the seccomp filter. That is most of what a
//! run costs beyond `subprocess.run` (docs/perf/startup-breakdown.md), and none of it depends on
//! the command. So once a sandbox has run twice, it keeps one child that has done all of it and
//! waits, blocked in `recvmsg`, for its run; a run then hands it the command and its descriptors
//! and makes the next one while the handed child execs on another CPU.
//!
//! The waiting child is made like the direct one (`clone` with `CLONE_VM`, never `clone3`, exit
//! signal 0, reaped through its pidfd) but without `CLONE_VFORK`, on a stack of its own, and with
//! `CLONE_CHILD_CLEARTID`: the kernel clears a word when the child's use of our memory ends (at
//! `execve`, or at exit) and wakes a futex on it, which is how a run knows that the [`Launch`] it
//! lent is free again. Its code is in [`super::child`], under the same rules as the direct
//! child's (async-signal-safe, raw syscalls only); while it waits it holds no descriptor of the
//! host's but its socket.
//!
//! Sharing the host's memory while it waits is why a waiting child is only kept when the
//! sandbox has a Landlock domain: Landlock lets a process trace, or open the `/proc/<pid>/mem`
//! of, only processes in its own domain or below it, and the waiting child's domain is a sibling
//! of every run's, so no sandboxed process can reach it (seccomp also refuses `ptrace` and
//! `process_vm_readv`). What a waiting child has from the host is fixed when it is made: its
//! umask and resource limits other than the policy's (the working directory is sent with each
//! run). A host that forks does not use its parent's waiting children (they share the parent's
//! memory, not the fork's); they end when the sandbox is dropped, or when the host's end of their
//! socket closes.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use super::child::{self, Confine, Launch, MAX_LAUNCH_FDS, WaitArgs};
use super::{ChildStack, Started};
use crate::error::{SandboxError, Stage};
use crate::sys;

/// How many confined children a sandbox keeps waiting.
const KEEP: usize = 1;

/// A confined child waiting for its run.
pub(crate) struct Waiting {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    /// Our end of its socket pair.
    sock: OwnedFd,
    /// Cleared by the kernel (with a futex wake) when the child execs or exits.
    ctid: Box<AtomicU32>,
    /// What the child reads while it confines itself.
    _args: Box<WaitArgs<'static>>,
    /// The filter program `args` points at (the sandbox's, copied: a `Waiting` may outlive a
    /// borrow of the plan while it moves between threads).
    _filter: Option<Box<(Vec<libc::sock_filter>, libc::sock_fprog)>>,
    stack: ChildStack,
    /// The host process that made it (a forked host must not use it).
    owner: libc::pid_t,
}

// SAFETY: the raw pointers in `args` point into the boxed program owned by the same `Waiting`,
// and into nothing else; the child reads them, the parent never writes them after the clone.
unsafe impl Send for Waiting {}

/// The confined children a sandbox keeps waiting, and spare stacks for the next ones.
pub(crate) struct Pool {
    waiting: Mutex<Vec<Waiting>>,
    /// Children being made right now (counted so that threads racing to refill make no more
    /// than [`KEEP`]).
    making: AtomicUsize,
    stacks: Mutex<Vec<ChildStack>>,
    /// Runs started so far: a sandbox run only once (the CLI) keeps no child waiting.
    runs: AtomicUsize,
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
            making: AtomicUsize::new(0),
            stacks: Mutex::new(Vec::new()),
            runs: AtomicUsize::new(0),
        }
    }

    /// How many confined children are waiting (for tests and status).
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.lock().map_or(0, |w| w.len())
    }

    /// Counts a run; true from the second on (when keeping a child waiting starts to pay).
    pub(crate) fn count_run(&self) -> bool {
        self.runs.fetch_add(1, Ordering::Relaxed) >= 1
    }

    /// A waiting child that is confined and alive, if there is one. Children found dead or
    /// failed are reaped and dropped (the run then starts directly, which reports any error).
    pub(crate) fn take(&self) -> Option<Ready> {
        loop {
            let w = self.waiting.lock().ok()?.pop()?;
            // SAFETY: getpid has no preconditions.
            if w.owner != unsafe { libc::getpid() } {
                // A forked host: the child shares the memory of the process that made it.
                std::mem::forget(w);
                continue;
            }
            match ready(&w) {
                Ok(listener) => {
                    return Some(Ready {
                        waiting: w,
                        listener,
                    });
                }
                Err(()) => self.discard(w),
            }
        }
    }

    /// Makes waiting children until [`KEEP`] are waiting or being made. Failures only leave the
    /// pool short: the next run starts directly and reports what is wrong.
    pub(crate) fn refill(&self, recipe: &Recipe<'_>) {
        loop {
            let have = self.waiting.lock().map_or(KEEP, |w| w.len());
            if have + self.making.fetch_add(1, Ordering::AcqRel) >= KEEP {
                self.making.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            let made = self.make(recipe);
            self.making.fetch_sub(1, Ordering::AcqRel);
            match made {
                Ok(w) => match self.waiting.lock() {
                    Ok(mut list) => list.push(w),
                    Err(_) => return,
                },
                Err(_) => return,
            }
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
            pidfd: unsafe { sys::owned(pidfd) },
            sock: ours,
            ctid,
            _args: args,
            _filter: filter,
            stack,
            // SAFETY: getpid has no preconditions.
            owner: unsafe { libc::getpid() },
        })
    }

    fn keep_stack(&self, stack: ChildStack) {
        if let Ok(mut s) = self.stacks.lock() {
            if s.len() < KEEP + 1 {
                s.push(stack);
            }
        }
    }

    /// Kills and reaps a waiting child, and keeps its stack.
    fn discard(&self, w: Waiting) {
        kill_and_reap(&w);
        let Waiting { stack, .. } = w;
        self.keep_stack(stack);
    }

    /// Hands `launch` and its descriptors to `w`. On failure the child is discarded and the
    /// caller starts the run directly.
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
            waiting: w,
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
        let failed = n == 8;
        if failed {
            super::reap(&w.pidfd);
            let err = super::child_error(u64::from_ne_bytes(word));
            let Waiting { stack, .. } = w;
            self.keep_stack(stack);
            return Err(err);
        }
        let Waiting {
            pid, pidfd, stack, ..
        } = w;
        self.keep_stack(stack);
        Ok(Started {
            pid,
            pidfd,
            listener,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let list = match self.waiting.get_mut() {
            Ok(l) => std::mem::take(l),
            Err(p) => std::mem::take(p.into_inner()),
        };
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        for w in list {
            if w.owner == me {
                kill_and_reap(&w);
                drop(w);
            } else {
                // A forked host: not our child; its stack and arguments are the parent's.
                std::mem::forget(w);
            }
        }
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
        Ok((1, listener)) => return Ok(listener),
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
            fd: w.pidfd.as_raw_fd(),
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
        Ok((1, listener)) => Ok(listener),
        _ => Err(()),
    }
}

fn kill_and_reap(w: &Waiting) {
    // SAFETY: signalling our own child through its pidfd.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            w.pidfd.as_raw_fd(),
            libc::SIGKILL,
            0,
            0,
        );
    }
    super::reap(&w.pidfd);
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
