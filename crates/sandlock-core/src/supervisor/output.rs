//! Captured output and fed input: non-blocking pipe ends the supervisor services from its loop.

use std::os::fd::{AsRawFd, OwnedFd};

use crate::sys;

/// Result of draining a pipe.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Read what was there; the writer is still open.
    More,
    /// The cap was crossed by this read (reported once).
    Overflow,
    /// The writer side is closed and the pipe is empty.
    Eof,
}

/// The read end of a stdout or stderr pipe, captured up to a cap.
pub(crate) struct Capture {
    fd: OwnedFd,
    buf: Vec<u8>,
    /// Bytes handed out by [`Capture::take`] already (they count toward the cap).
    taken: usize,
    cap: usize,
    pub(crate) truncated: bool,
    pub(crate) eof: bool,
}

impl Capture {
    pub(crate) fn new(fd: OwnedFd, cap: u64) -> std::io::Result<Capture> {
        sys::set_nonblocking(fd.as_raw_fd(), true)?;
        Ok(Capture {
            fd,
            buf: Vec::new(),
            taken: 0,
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            truncated: false,
            eof: false,
        })
    }

    pub(crate) fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Reads everything available. Bytes past the cap are read and dropped, so the writer never
    /// blocks on a full pipe and our memory stays bounded by the cap.
    pub(crate) fn drain(&mut self) -> std::io::Result<Drained> {
        let mut chunk = [0u8; 64 * 1024];
        let mut overflow = false;
        loop {
            match sys::read(self.fd.as_raw_fd(), &mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(if overflow {
                        Drained::Overflow
                    } else {
                        Drained::Eof
                    });
                }
                Ok(n) => {
                    let seen = self.taken + self.buf.len();
                    let room = self.cap.saturating_sub(seen);
                    let keep = n.min(room);
                    self.buf.extend_from_slice(&chunk[..keep]);
                    if keep < n && !self.truncated {
                        self.truncated = true;
                        overflow = true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Ok(if overflow {
                        Drained::Overflow
                    } else {
                        Drained::More
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Hands out what was captured since the last call (for streaming readers).
    pub(crate) fn take(&mut self) -> Vec<u8> {
        self.taken += self.buf.len();
        std::mem::take(&mut self.buf)
    }

    /// Everything captured and not yet taken.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// The write end of the stdin pipe, fed from a buffer without blocking.
pub(crate) struct Feeder {
    fd: OwnedFd,
    data: Vec<u8>,
    pos: usize,
}

impl Feeder {
    pub(crate) fn new(fd: OwnedFd, data: Vec<u8>) -> std::io::Result<Feeder> {
        sys::set_nonblocking(fd.as_raw_fd(), true)?;
        Ok(Feeder { fd, data, pos: 0 })
    }

    pub(crate) fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Writes as much as the pipe takes; returns true when finished (all written, or the reader
    /// went away), at which point the caller drops the feeder to close the pipe.
    pub(crate) fn feed(&mut self) -> bool {
        let _guard = SigpipeGuard::new();
        while self.pos < self.data.len() {
            match sys::write(self.fd.as_raw_fd(), &self.data[self.pos..]) {
                Ok(n) => self.pos += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                // EPIPE: the program closed stdin or exited; the rest of the input is not wanted.
                Err(_) => return true,
            }
        }
        true
    }
}

/// Keeps a write to a closed pipe from raising SIGPIPE in the host: the signal is blocked for this
/// thread while we write, and a SIGPIPE our write caused is consumed before unblocking. No handler
/// is installed and other threads are unaffected.
struct SigpipeGuard {
    old: libc::sigset_t,
    was_pending: bool,
}

impl SigpipeGuard {
    fn new() -> SigpipeGuard {
        // SAFETY: sigset manipulation on local values; pthread_sigmask affects this thread only.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            let mut pending: libc::sigset_t = std::mem::zeroed();
            libc::sigpending(&mut pending);
            let was_pending = libc::sigismember(&pending, libc::SIGPIPE) == 1;
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            SigpipeGuard { old, was_pending }
        }
    }
}

impl Drop for SigpipeGuard {
    fn drop(&mut self) {
        // SAFETY: as in `new`; sigtimedwait with a zero timeout only dequeues a pending SIGPIPE.
        unsafe {
            if !self.was_pending {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGPIPE);
                let zero = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == libc::SIGPIPE {}
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}
