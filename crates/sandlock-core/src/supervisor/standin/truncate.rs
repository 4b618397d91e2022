//! `truncate(2)` without Landlock ABI 3: only files beneath a writable policy path.
//!
//! Before Linux 6.2, Landlock does not look at truncation at all: a file the policy grants
//! read-only (a program under `/usr`, owned by the same uid, or any file when the sandbox runs as
//! root) could be emptied by `truncate(path, 0)`, or by `open(path, O_RDONLY | O_TRUNC)`, which
//! truncates without asking for write access. The filter refuses the second and hands the first
//! to the supervisor, which carries it out on a descriptor it opened beneath a writable root (see
//! [`super::path`]). `ftruncate` needs a descriptor opened for writing, which Landlock already
//! checked at `open`.

use std::os::fd::AsRawFd;

use super::Scope;
use super::path::{Creds, absolute, open_beneath, reopen};
use crate::supervisor::notify::{Listener, Notification, read_cstr};
use crate::sys;

/// `PATH_MAX` without its NUL.
const PATH_MAX: usize = 4095;

/// `truncate(path, length)`.
pub(crate) fn on_truncate(l: &Listener, n: &Notification, scope: &Scope) {
    let r = truncate(l, n, scope);
    match r {
        Ok(()) => l.reply(n.id, 0),
        Err(e) => l.deny(n.id, e),
    }
}

fn truncate(l: &Listener, n: &Notification, scope: &Scope) -> Result<(), i32> {
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    let raw = read_cstr(n.pid, n.args[0], PATH_MAX).map_err(errno)?;
    let length = n.args[1] as i64;
    if length < 0 {
        return Err(libc::EINVAL);
    }
    let abs = absolute(n.pid, &raw).map_err(errno)?;
    let creds = Creds::of(n.pid).ok_or(libc::ESRCH)?;
    if !l.id_valid(n.id) {
        return Err(libc::ESRCH);
    }
    let file = open_beneath(&abs, &scope.sockets.held, 0).map_err(errno)?;
    let kind = file.stat.st_mode & libc::S_IFMT;
    if kind == libc::S_IFDIR {
        return Err(libc::EISDIR);
    }
    if kind != libc::S_IFREG {
        return Err(libc::EINVAL);
    }
    if !creds.may(&file.fd, &file.stat, libc::W_OK as u32) {
        return Err(libc::EACCES);
    }
    // The sandbox's own RLIMIT_FSIZE (max_file_size, max_disk) still applies to growing a file.
    if length > file.stat.st_size && length as u64 > fsize_limit(n.pid) {
        return Err(libc::EFBIG);
    }
    let w = reopen(&file.fd, libc::O_WRONLY | libc::O_NONBLOCK).map_err(errno)?;
    // SAFETY: ftruncate on a descriptor we own.
    sys::cvt(unsafe { libc::ftruncate(w.as_raw_fd(), length) }).map_err(errno)?;
    Ok(())
}

/// The soft `RLIMIT_FSIZE` of process `pid` (reading another process's limits changes nothing).
pub(crate) fn fsize_limit(pid: u32) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit with a NULL new limit only writes the old one into `lim`.
    let r = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            std::ptr::null(),
            &mut lim,
        )
    };
    if r == 0 { lim.rlim_cur } else { 0 }
}
