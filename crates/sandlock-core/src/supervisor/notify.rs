//! seccomp user notification: the syscalls the filter hands to the supervisor.
//!
//! The filter hands over `connect` (UNIX sockets are emulated, see [`super::connect`]), `listen`
//! on TCP when the policy allows TCP, and the syscalls that the stand-ins for missing Landlock
//! features decide (see `crate::standin`). No
//! decision lets the kernel act on memory the sandbox can still change after we looked (the
//! classic time-of-check/time-of-use race of user notification).

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

    /// Asks the kernel to hand the CPU over directly between the sandbox's notifying thread and
    /// the supervisor (`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`, Linux 6.6): a notification is a
    /// synchronous exchange, so the wakee runs on the waker's CPU instead of waiting for another
    /// one. A hint only: older kernels refuse the ioctl and nothing changes.
    pub(crate) fn prefer_same_cpu(&self) {
        const SYNC_WAKE_UP: u64 = 1;
        // SAFETY: NOTIF_SET_FLAGS takes its flags by value.
        unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                SYNC_WAKE_UP,
            )
        };
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

    /// Whether the notification is still pending: its task has not died (and so its id, and
    /// what `/proc/<pid>` showed about it since it was received, still belong to it).
    pub(crate) fn id_valid(&self, id: u64) -> bool {
        // SAFETY: NOTIF_ID_VALID reads one u64.
        unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0 }
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

    /// Installs `fd` in the notifying process at its lowest free descriptor number, with
    /// `flags` (`O_CLOEXEC`), and returns that number.
    pub(crate) fn add_fd(&self, id: u64, fd: &OwnedFd, flags: u32) -> std::io::Result<i32> {
        let add = libc::seccomp_notif_addfd {
            id,
            flags: 0,
            srcfd: fd.as_raw_fd() as u32,
            newfd: 0,
            newfd_flags: flags,
        };
        // SAFETY: NOTIF_ADDFD reads one seccomp_notif_addfd.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ADDFD, &add) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(r)
    }

    /// Installs `fd` in the notifying process at its lowest free descriptor number and completes
    /// the syscall with that number, in one step where the kernel can (`SECCOMP_ADDFD_FLAG_SEND`,
    /// Linux 5.14): then a process killed meanwhile cannot leave the descriptor installed but the
    /// syscall unanswered. Errors (`EMFILE` at the process's descriptor limit) are answered too.
    pub(crate) fn answer_fd(&self, id: u64, fd: &OwnedFd, cloexec: bool) {
        const SECCOMP_ADDFD_FLAG_SEND: u32 = 1 << 1;
        static SEND_KNOWN: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
        let flags = if cloexec { libc::O_CLOEXEC as u32 } else { 0 };
        if SEND_KNOWN.load(std::sync::atomic::Ordering::Relaxed) != 2 {
            let add = libc::seccomp_notif_addfd {
                id,
                flags: SECCOMP_ADDFD_FLAG_SEND,
                srcfd: fd.as_raw_fd() as u32,
                newfd: 0,
                newfd_flags: flags,
            };
            // SAFETY: NOTIF_ADDFD reads one seccomp_notif_addfd.
            let r =
                unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ADDFD, &add) };
            if r >= 0 {
                SEND_KNOWN.store(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            let e = crate::sys::errno();
            if e != libc::EINVAL {
                return self.deny(id, e);
            }
            // EINVAL: a kernel before 5.14 (the flag is unknown).
            SEND_KNOWN.store(2, std::sync::atomic::Ordering::Relaxed);
        }
        match self.add_fd(id, fd, flags) {
            Ok(n) => self.reply(id, i64::from(n)),
            Err(e) => self.deny(id, e.raw_os_error().unwrap_or(libc::EIO)),
        }
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

/// Reads `len` bytes at `addr` in process `pid` (fewer if the range ends in unmapped memory).
pub(crate) fn read_mem(pid: u32, addr: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = read_mem_into(pid, addr, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Reads `buf.len()` bytes at `addr` in process `pid` into `buf`, without allocating; returns how
/// many it got (fewer if the range ends in unmapped memory).
pub(crate) fn read_mem_into(pid: u32, addr: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` covers our own buffer; the kernel checks the remote range.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Writes `data` at `addr` in process `pid`: `EFAULT` unless all of it could be written (as the
/// kernel answers a syscall whose output buffer is not writable).
pub(crate) fn write_mem(pid: u32, addr: u64, data: &[u8]) -> Result<(), i32> {
    if data.is_empty() {
        return Ok(());
    }
    let local = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: `local` covers our own buffer; the kernel checks the remote range.
    let n = unsafe { libc::process_vm_writev(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n < 0 || n as usize != data.len() {
        return Err(libc::EFAULT);
    }
    Ok(())
}

/// Reads the NUL-terminated string at `addr` in process `pid`, at most `max` bytes before the
/// NUL: `EFAULT` if it is unreadable, `ENAMETOOLONG` if it is longer. Read once: the caller acts
/// on this copy, never on the sandbox's memory again.
pub(crate) fn read_cstr(pid: u32, addr: u64, max: usize) -> std::io::Result<Vec<u8>> {
    const PAGE: u64 = 4096;
    let mut out = Vec::new();
    let mut at = addr;
    loop {
        // Never read across a page boundary in one go: the next page may be unmapped although
        // the string ends before it.
        let chunk = (PAGE - at % PAGE) as usize;
        let bytes = read_mem(pid, at, chunk)?;
        if bytes.is_empty() {
            return Err(std::io::Error::from_raw_os_error(libc::EFAULT));
        }
        if let Some(end) = bytes.iter().position(|b| *b == 0) {
            out.extend_from_slice(&bytes[..end]);
            break;
        }
        out.extend_from_slice(&bytes);
        at += bytes.len() as u64;
        if out.len() > max {
            return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
    }
    if out.len() > max {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    Ok(out)
}
