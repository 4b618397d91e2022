//! Acting for the sandbox with the sandbox's permissions.
//!
//! The supervisor is not under Landlock, and it may hold capabilities the sandbox dropped (when
//! the host runs as root). Its calls beneath a HOST must be decided by the kernel as the
//! sandbox's own would be: same uid, gid and groups (the sandbox cannot change them: it holds no
//! capability and `no_new_privs` is set), and no capability. So around each call the calling
//! thread's effective capabilities are dropped (`capset` acts on one thread) and restored after;
//! a thread without any (a pod, a non-root host) does nothing. The kernel then applies file
//! modes, ACLs, the sticky bit, ownership rules for `chmod`, `chown` and `utimes`,
//! `protected_hardlinks`, exactly as for the sandbox. Only Landlock is left to the supervisor:
//! it never acts outside a mount's held root, and never writes in a read-only mount.

use crate::sys;

/// While alive, the calling thread holds no effective capability.
pub(crate) struct AsSandbox {
    restore: Option<(u64, u64, u64)>,
}

impl AsSandbox {
    /// Drops the calling thread's effective capabilities until the guard is dropped.
    pub(crate) fn enter() -> AsSandbox {
        let restore = match sys::capget() {
            Ok((effective, permitted, inheritable)) if effective != 0 => {
                sys::capset(0, permitted, inheritable).is_ok().then_some((
                    effective,
                    permitted,
                    inheritable,
                ))
            }
            _ => None,
        };
        AsSandbox { restore }
    }
}

impl Drop for AsSandbox {
    fn drop(&mut self) {
        if let Some((e, p, i)) = self.restore {
            // The permitted set still holds them all, so raising them again cannot fail.
            let _ = sys::capset(e, p, i);
        }
    }
}

/// The umask of task `tid` (`Umask:` in `/proc/<tid>/status`, octal).
pub(crate) fn umask_of(tid: u32) -> Option<libc::mode_t> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| libc::mode_t::from_str_radix(v.trim(), 8).ok())
}

/// The supervisor's own umask, which the kernel applies to what it creates on top of the mode
/// asked for.
pub(crate) fn own_umask() -> libc::mode_t {
    umask_of(std::process::id()).unwrap_or(0o022)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_come_back_after_acting_as_the_sandbox() {
        let before = sys::capget().unwrap();
        {
            let _g = AsSandbox::enter();
            assert_eq!(sys::capget().unwrap().0, 0);
        }
        assert_eq!(sys::capget().unwrap(), before);
    }

    #[test]
    fn a_task_umask_is_read_from_proc() {
        use std::io::Read;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "umask 027; echo ready; read x"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = [0u8; 6];
        child.stdout.take().unwrap().read_exact(&mut ready).unwrap();
        assert_eq!(umask_of(child.id()), Some(0o027));
        drop(child.stdin.take());
        child.wait().unwrap();
    }
}
