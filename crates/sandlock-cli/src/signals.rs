//! Signals for the CLI: delivered through a signalfd, so they are handled in the supervision loop
//! instead of in a handler.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A signalfd for a set of signals, which are blocked for the (single-threaded) CLI.
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Blocks `signals` and opens a signalfd for them; `None` if that fails (then the default
    /// dispositions apply, which still end the CLI).
    pub fn new(signals: &[libc::c_int]) -> Option<SignalFd> {
        // SAFETY: sigset manipulation on a local; sigprocmask and signalfd take valid pointers.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in signals {
                libc::sigaddset(&mut set, *s);
            }
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return None;
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return None;
            }
            Some(SignalFd {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// The next pending signal, if any.
    pub fn read(&self) -> Option<libc::c_int> {
        // SAFETY: signalfd_siginfo is plain data; read fills at most its size.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: `info` is valid for `size` bytes.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        (n == size as isize).then_some(info.ssi_signo as libc::c_int)
    }
}
