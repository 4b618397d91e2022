//! The processes beneath an interpreter the server keeps, seen from the host through `/proc`: what
//! a finished call left behind is found here and killed, so that no call's processes outlive it.
//!
//! Every process of a sandbox stays in its main process's process group (the seccomp filter makes
//! `setsid` and `setpgid` no-ops), and the interpreters are child subreapers, so a call's orphans
//! stay beneath them.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The children of every thread of `pid`.
fn children(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(
                s.split_ascii_whitespace()
                    .filter_map(|p| p.parse::<libc::pid_t>().ok()),
            );
        }
    }
    out
}

/// `(state, pgid)` from `/proc/<pid>/stat`.
fn stat(pid: libc::pid_t) -> Option<(u8, libc::pid_t)> {
    let s = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = s.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&s[close + 2..]).ok()?;
    let mut f = rest.split_ascii_whitespace();
    let state = f.next()?.bytes().next()?;
    let _ppid = f.next()?;
    let pgid = f.next()?.parse().ok()?;
    Some((state, pgid))
}

fn alive(pid: libc::pid_t) -> bool {
    stat(pid).is_some_and(|(s, _)| s != b'Z' && s != b'X')
}

/// The children of `root` that are zombies (ended, not yet reaped), at most `max`.
pub(super) fn zombie_children(root: libc::pid_t, max: usize) -> Vec<libc::pid_t> {
    children(root)
        .into_iter()
        .filter(|p| stat(*p).is_some_and(|(s, _)| s == b'Z'))
        .take(max)
        .collect()
}

/// Kills every live child of `root` (the main process of a sandbox, so also its process group)
/// that is not in `keep`, with everything beneath it. True when there was nothing to kill.
pub(super) fn kill_strays(root: libc::pid_t, keep: &HashSet<libc::pid_t>) -> bool {
    let strays: Vec<libc::pid_t> = children(root)
        .into_iter()
        .filter(|p| !keep.contains(p) && alive(*p))
        .collect();
    if strays.is_empty() {
        return true;
    }
    for s in strays {
        let mut all = vec![s];
        let mut i = 0;
        while i < all.len() {
            all.extend(children(all[i]));
            i += 1;
        }
        for p in all {
            kill_in_group(p, root);
        }
    }
    false
}

/// Kills `pid` if it is (still) in process group `pgid`: the pidfd pins the process, so the check
/// and the signal are about the same one even if the pid is being reused.
fn kill_in_group(pid: libc::pid_t, pgid: libc::pid_t) {
    let Ok(fd) = pidfd_open(pid) else { return };
    if stat(pid).is_some_and(|(_, g)| g == pgid) {
        pidfd_signal(&fd, libc::SIGKILL);
    }
}

/// A pidfd for `pid`.
pub(super) fn pidfd_open(pid: libc::pid_t) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pidfd_open returned a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `signal` to the process behind `pidfd` (nothing if it has ended).
pub(super) fn pidfd_signal(pidfd: &OwnedFd, signal: i32) {
    // SAFETY: pidfd_send_signal on a pidfd we hold, no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_reads_state_and_group_of_a_live_process() {
        // SAFETY: getpid and getpgrp take no arguments.
        let (me, group) = unsafe { (libc::getpid(), libc::getpgrp()) };
        let (state, pgid) = stat(me).unwrap();
        assert!(alive(me), "state {}", state as char);
        assert_eq!(pgid, group);
        assert!(stat(-1).is_none());
    }
}
