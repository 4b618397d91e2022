//! Naming processes without being fooled by recycled pids.
//!
//! A pid is only a number: once its process is reaped, the kernel may hand it to a new process,
//! possibly a host one. So the supervisor never decides about a number and then acts on the number.
//! It opens a pidfd first (which names one process for good), checks that *that* process belongs to
//! the sandbox, checks that it was still alive after the check (so the `/proc` entry it read was
//! its own), and then acts through the pidfd.
//!
//! The caller of a notified syscall is different: it is blocked in the syscall, so its thread and
//! thread group cannot be reaped until we answer. Its identity is read from `/proc` and confirmed
//! with `SECCOMP_IOCTL_NOTIF_ID_VALID` (a caller killed meanwhile would make the notification
//! invalid, and its tid free to be reused).

use std::os::fd::{AsRawFd, OwnedFd};

use crate::supervisor::notify::{Listener, Notification};
use crate::sys;

/// `PIDFD_THREAD` (Linux 6.9): a pidfd for one thread. The same bit as `O_EXCL`.
pub(crate) const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

/// The task that made a notified syscall.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    /// Its thread id.
    pub(crate) tid: libc::pid_t,
    /// Its thread group id (the process id).
    pub(crate) tgid: libc::pid_t,
}

impl Caller {
    /// Who made notification `n`, or `None` if it died meanwhile (then there is nobody to answer).
    pub(crate) fn of(l: &Listener, n: &Notification) -> Option<Caller> {
        let tid = n.pid as libc::pid_t;
        let tgid = status_field(tid, "Tgid")?;
        l.id_valid(n.id).then_some(Caller { tid, tgid })
    }

    /// Whether `pid` names the caller's own thread or process.
    pub(crate) fn is_self(&self, pid: libc::pid_t) -> bool {
        pid == self.tid || pid == self.tgid
    }
}

/// An integer field of `/proc/<pid>/status` (`Tgid`, `Umask` in octal is read elsewhere).
pub(crate) fn status_field(pid: libc::pid_t, name: &str) -> Option<libc::pid_t> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// The process group of `pid`, from `/proc/<pid>/stat` (field 5, counted after the name, which may
/// contain spaces and parentheses).
fn process_group(pid: libc::pid_t) -> Option<libc::pid_t> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(text.get(close + 2..)?).ok()?;
    rest.split_ascii_whitespace().nth(2)?.parse().ok()
}

/// `pidfd_open(pid, flags)`.
pub(crate) fn pidfd_open(pid: libc::pid_t, flags: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers and returns a new descriptor.
    let fd = sys::cvt_long(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) })?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { sys::owned(fd as libc::c_int) })
}

/// `pidfd_send_signal(pidfd, sig, info, flags)`; `info` is a raw `siginfo_t` (128 bytes).
pub(crate) fn pidfd_send_signal(
    pidfd: &OwnedFd,
    sig: i32,
    info: Option<&[u8; 128]>,
    flags: u32,
) -> std::io::Result<i64> {
    let info_ptr = info.map_or(std::ptr::null(), |i| i.as_ptr());
    // SAFETY: pidfd_send_signal reads at most one siginfo_t (128 bytes) from `info_ptr`.
    sys::cvt_long(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            info_ptr,
            flags,
        )
    })
    .map(|_| 0)
}

/// A process (or, with `PIDFD_THREAD`, a thread) of the sandbox, held by a pidfd.
pub(crate) struct Member {
    pub(crate) pidfd: OwnedFd,
}

impl Member {
    /// Opens `pid` and checks that it belongs to the sandbox (process group `pgid`).
    ///
    /// Errors are what the kernel would answer the sandbox: `ESRCH` for no such process, `EPERM`
    /// for a process outside the sandbox (as Landlock's scoping says), `EINVAL` for bad flags or a
    /// thread id where a process id is needed.
    pub(crate) fn pin(pid: libc::pid_t, flags: u32, pgid: libc::pid_t) -> Result<Member, i32> {
        if pid <= 0 {
            return Err(libc::ESRCH);
        }
        let pidfd = pidfd_open(pid, flags).map_err(|e| e.raw_os_error().unwrap_or(libc::ESRCH))?;
        // The number names the pidfd's process for as long as that process is not reaped; the
        // liveness check below tells whether that was still so after we read its group.
        let group = process_group(pid);
        if pidfd_send_signal(&pidfd, 0, None, 0).is_err() {
            return Err(libc::ESRCH);
        }
        match group {
            Some(g) if g == pgid => Ok(Member { pidfd }),
            Some(_) => Err(libc::EPERM),
            None => Err(libc::ESRCH),
        }
    }

    /// Like [`Member::pin`], but a thread id that is not a process id (which `pidfd_open` refuses
    /// before Linux 6.9) is taken as its whole thread group, as `kill` does.
    pub(crate) fn pin_process(pid: libc::pid_t, pgid: libc::pid_t) -> Result<Member, i32> {
        match Member::pin(pid, 0, pgid) {
            Err(libc::EINVAL) => match status_field(pid, "Tgid") {
                Some(tgid) if tgid != pid => Member::pin(tgid, 0, pgid),
                _ => Err(libc::ESRCH),
            },
            other => other,
        }
    }

    /// Whether the process is still there (not reaped).
    pub(crate) fn alive(&self) -> bool {
        pidfd_send_signal(&self.pidfd, 0, None, 0).is_ok()
    }
}

/// The pid a descriptor of process `pid` designates, if it is a pidfd (its `fdinfo` has a
/// `Pid:` line; a thread pidfd has `O_EXCL` in its flags) or a `/proc/<pid>` directory (which
/// `pidfd_send_signal` also accepts). `EBADF` otherwise, as the kernel says.
pub(crate) fn pidfd_target(pid: u32, fd: u64) -> Result<(libc::pid_t, u32), i32> {
    if let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        if let Some(p) = field("Pid:") {
            let target: libc::pid_t = p.parse().map_err(|_| libc::EBADF)?;
            if target <= 0 {
                // The process is gone (the kernel shows -1, older ones 0).
                return Err(libc::ESRCH);
            }
            let flags = field("flags:")
                .and_then(|f| u32::from_str_radix(&f, 8).ok())
                .unwrap_or(0);
            return Ok((target, flags & PIDFD_THREAD));
        }
    } else {
        return Err(libc::EBADF);
    }
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).map_err(|_| libc::EBADF)?;
    link.strip_prefix("/proc")
        .ok()
        .and_then(|rest| rest.to_str())
        .and_then(|rest| rest.parse::<libc::pid_t>().ok())
        .map(|p| (p, 0))
        .ok_or(libc::EBADF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_names_its_process_and_a_proc_directory_too() {
        // SAFETY: getpid takes no arguments.
        let me = unsafe { libc::getpid() };
        let fd = pidfd_open(me, 0).unwrap();
        let own = std::process::id();
        assert_eq!(pidfd_target(own, fd.as_raw_fd() as u64), Ok((me, 0)));
        let dir = std::fs::File::open(format!("/proc/{me}")).unwrap();
        assert_eq!(pidfd_target(own, dir.as_raw_fd() as u64), Ok((me, 0)));
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(pidfd_target(own, file.as_raw_fd() as u64), Err(libc::EBADF));
        assert_eq!(pidfd_target(own, 999_999), Err(libc::EBADF));
    }

    #[test]
    fn pinning_checks_the_process_group() {
        // SAFETY: getpid/getpgrp take no arguments.
        let (me, group) = unsafe { (libc::getpid(), libc::getpgrp()) };
        assert!(Member::pin(me, 0, group).is_ok());
        assert_eq!(Member::pin(me, 0, group + 1).err(), Some(libc::EPERM));
        assert_eq!(Member::pin(0, 0, group).err(), Some(libc::ESRCH));
        assert_eq!(Member::pin(i32::MAX, 0, group).err(), Some(libc::ESRCH));
    }
}
