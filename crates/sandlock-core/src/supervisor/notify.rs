//! seccomp user notification: the syscalls the filter hands to the supervisor.
//!
//! The filter hands over `connect` (UNIX sockets are emulated, see [`super::connect`]), `listen`
//! on TCP when the policy allows TCP, and process creation when there is a process cap. No decision
//! lets the kernel act on memory the sandbox can still change after we looked (the classic
//! time-of-check/time-of-use race of user notification).

use std::os::fd::{AsRawFd, OwnedFd};

/// A pending notification.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Notification {
    pub(crate) id: u64,
    pub(crate) pid: u32,
    pub(crate) nr: i64,
    pub(crate) args: [u64; 6],
}

/// The listener fd from `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
pub(crate) struct Listener {
    fd: OwnedFd,
}

impl Listener {
    pub(crate) fn new(fd: OwnedFd) -> Listener {
        Listener { fd }
    }

    pub(crate) fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Receives one notification. `Ok(None)` if the notifying task died before we got to it.
    pub(crate) fn recv(&self) -> std::io::Result<Option<Notification>> {
        // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed on input.
        let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: NOTIF_RECV writes one seccomp_notif into `n`.
            let r =
                unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) };
            if r == 0 {
                return Ok(Some(Notification {
                    id: n.id,
                    pid: n.pid,
                    nr: i64::from(n.data.nr),
                    args: n.data.args,
                }));
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOENT) => return Ok(None),
                _ => return Err(e),
            }
        }
    }

    /// Lets the syscall run as if it had not been intercepted.
    pub(crate) fn allow(&self, id: u64) {
        self.send(id, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32);
    }

    /// Fails the syscall with `errno`.
    pub(crate) fn deny(&self, id: u64, errno: i32) {
        self.send(id, -errno, 0);
    }

    /// Completes the syscall without running it, returning `val`.
    pub(crate) fn reply(&self, id: u64, val: i64) {
        self.respond(id, val, 0, 0);
    }

    /// Installs `fd` in the notifying process as descriptor `target`, replacing what was there.
    pub(crate) fn replace_fd(
        &self,
        id: u64,
        fd: &OwnedFd,
        target: u32,
        flags: u32,
    ) -> std::io::Result<()> {
        let add = libc::seccomp_notif_addfd {
            id,
            flags: libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
            srcfd: fd.as_raw_fd() as u32,
            newfd: target,
            newfd_flags: flags,
        };
        // SAFETY: NOTIF_ADDFD reads one seccomp_notif_addfd.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ADDFD, &add) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn send(&self, id: u64, error: i32, flags: u32) {
        self.respond(id, 0, error, flags);
    }

    fn respond(&self, id: u64, val: i64, error: i32, flags: u32) {
        let resp = libc::seccomp_notif_resp {
            id,
            val,
            error,
            flags,
        };
        // SAFETY: NOTIF_SEND reads one seccomp_notif_resp. ENOENT (the task died meanwhile) needs no
        // handling: there is nobody left to answer.
        unsafe {
            libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp);
        }
    }
}
