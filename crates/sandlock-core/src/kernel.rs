//! What this kernel (and the runtime profile around us) lets sandlock enforce.
//!
//! Probing costs a handful of syscalls; the result is cached for the life of the process because
//! none of it can change while we run (the Landlock ABI, seccomp support and our own seccomp state
//! only ever narrow, and a narrowed state is probed again when it matters).

use std::fmt;
use std::sync::OnceLock;

use serde::Serialize;

/// A protection sandlock applies. Landlock enforces it where the kernel has the feature; see
/// [`crate::coverage`] for what stands in where it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Protection {
    /// Landlock filesystem rules (ABI 1, Linux 5.13).
    Filesystem,
    /// Renaming and linking files between directories under control (ABI 2, Linux 5.19).
    FilesystemRefer,
    /// `truncate` under control (ABI 3, Linux 6.2).
    FilesystemTruncate,
    /// TCP `bind` and `connect` by port (ABI 4, Linux 6.7).
    NetworkTcp,
    /// `ioctl` on device files under control (ABI 5, Linux 6.10).
    FilesystemIoctl,
    /// Abstract UNIX sockets scoped to the sandbox (ABI 6, Linux 6.12).
    ScopeAbstractUnix,
    /// Signals scoped to the sandbox (ABI 6, Linux 6.12).
    ScopeSignal,
    /// seccomp-bpf syscall filtering (Linux 3.5).
    Seccomp,
    /// seccomp user notification, through which the supervisor takes the decisions the kernel
    /// cannot (Linux 5.0; `ADDFD`, which it needs, 5.9).
    SeccompNotify,
}

impl Protection {
    /// Every protection, in order.
    pub const ALL: [Protection; 9] = [
        Protection::Filesystem,
        Protection::FilesystemRefer,
        Protection::FilesystemTruncate,
        Protection::NetworkTcp,
        Protection::FilesystemIoctl,
        Protection::ScopeAbstractUnix,
        Protection::ScopeSignal,
        Protection::Seccomp,
        Protection::SeccompNotify,
    ];

    /// The Landlock ABI this protection needs, if it is a Landlock feature.
    pub fn landlock_abi(self) -> Option<u32> {
        match self {
            Protection::Filesystem => Some(1),
            Protection::FilesystemRefer => Some(2),
            Protection::FilesystemTruncate => Some(3),
            Protection::NetworkTcp => Some(4),
            Protection::FilesystemIoctl => Some(5),
            Protection::ScopeAbstractUnix | Protection::ScopeSignal => Some(6),
            Protection::Seccomp | Protection::SeccompNotify => None,
        }
    }

    /// The stable name of the protection.
    pub fn as_str(self) -> &'static str {
        match self {
            Protection::Filesystem => "filesystem",
            Protection::FilesystemRefer => "filesystem_refer",
            Protection::FilesystemTruncate => "filesystem_truncate",
            Protection::NetworkTcp => "network_tcp",
            Protection::FilesystemIoctl => "filesystem_ioctl",
            Protection::ScopeAbstractUnix => "scope_abstract_unix",
            Protection::ScopeSignal => "scope_signal",
            Protection::Seccomp => "seccomp",
            Protection::SeccompNotify => "seccomp_notify",
        }
    }

    /// What the protection does, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Protection::Filesystem => "filesystem access limited to the policy's paths",
            Protection::FilesystemRefer => "rename and link between directories limited",
            Protection::FilesystemTruncate => "truncate limited to writable paths",
            Protection::NetworkTcp => "TCP connect and bind limited to the policy's ports",
            Protection::FilesystemIoctl => "ioctl on device files limited",
            Protection::ScopeAbstractUnix => {
                "abstract UNIX sockets outside the sandbox unreachable"
            }
            Protection::ScopeSignal => "processes outside the sandbox cannot be signalled",
            Protection::Seccomp => "dangerous syscalls and non-TCP sockets refused",
            Protection::SeccompNotify => {
                "supervisor decisions: connects, listen, stand-ins for Landlock"
            }
        }
    }

    /// What the kernel needs for this protection.
    pub fn requirement(self) -> String {
        match self.landlock_abi() {
            Some(abi) => format!("Landlock ABI {abi} ({})", landlock_abi_linux(abi)),
            None if self == Protection::Seccomp => "seccomp filters (CONFIG_SECCOMP_FILTER)".into(),
            None => "seccomp user notification with ADDFD (Linux 5.9)".into(),
        }
    }
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first Linux release with a Landlock ABI.
pub fn landlock_abi_linux(abi: u32) -> &'static str {
    match abi {
        1 => "Linux 5.13",
        2 => "Linux 5.19",
        3 => "Linux 6.2",
        4 => "Linux 6.7",
        5 => "Linux 6.10",
        6 => "Linux 6.12",
        7 => "Linux 6.15",
        _ => "a newer Linux",
    }
}

/// What the running kernel offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KernelSupport {
    /// Landlock ABI version; 0 when Landlock is missing or disabled.
    pub landlock_abi: u32,
    /// Why Landlock is missing, if it is (`ENOSYS`: not built; `EOPNOTSUPP`: disabled at boot).
    pub landlock_errno: Option<i32>,
    /// seccomp filters can be installed.
    pub seccomp: bool,
    /// seccomp user notification (with `SECCOMP_USER_NOTIF_FLAG_CONTINUE`) is available.
    pub seccomp_notify: bool,
}

/// The newest Landlock ABI sandlock knows how to use.
pub const LANDLOCK_ABI_MAX: u32 = 7;

/// The environment variable that caps the Landlock ABI sandlock uses (for example `2`), so that a
/// fleet of mixed kernels is enforced the same way everywhere (the supervisor stands in for what
/// the cap removes), and so that the stand-ins can be tested on a kernel that has every feature.
pub const LANDLOCK_ABI_ENV: &str = "SANDLOCK_MAX_LANDLOCK_ABI";

/// The cap set by [`LANDLOCK_ABI_ENV`], if it is set to a number.
pub fn landlock_abi_cap() -> Option<u32> {
    std::env::var(LANDLOCK_ABI_ENV).ok()?.trim().parse().ok()
}

impl KernelSupport {
    /// Probes the running kernel (cached after the first call), capped by
    /// [`LANDLOCK_ABI_ENV`] if it is set.
    pub fn detect() -> KernelSupport {
        static CACHE: OnceLock<KernelSupport> = OnceLock::new();
        *CACHE.get_or_init(probe)
    }

    /// The same support, but pretending the kernel offers at most Landlock ABI `abi`.
    ///
    /// Useful to test how a policy degrades on an older kernel, and to pin behaviour across a fleet.
    pub fn limit_landlock_abi(mut self, abi: u32) -> KernelSupport {
        self.landlock_abi = self.landlock_abi.min(abi);
        self
    }

    /// Whether this kernel offers `p` itself (Landlock, seccomp); see [`crate::coverage`] for
    /// what the supervisor enforces where it does not.
    pub fn supports(&self, p: Protection) -> bool {
        match p.landlock_abi() {
            Some(abi) => self.landlock_abi >= abi,
            None if p == Protection::Seccomp => self.seccomp,
            None => self.seccomp_notify,
        }
    }
}

fn probe() -> KernelSupport {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attribute and the VERSION flag, landlock_create_ruleset only returns the ABI.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    let (landlock_abi, landlock_errno) = if abi < 0 {
        (0, Some(crate::sys::errno()))
    } else {
        let cap = landlock_abi_cap().unwrap_or(LANDLOCK_ABI_MAX);
        (abi.min(i64::from(LANDLOCK_ABI_MAX.min(cap))) as u32, None)
    };

    // SAFETY: PR_GET_SECCOMP takes no pointer arguments.
    let seccomp = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } >= 0;
    let seccomp_notify = seccomp && action_available(SECCOMP_RET_USER_NOTIF);
    KernelSupport {
        landlock_abi,
        landlock_errno,
        seccomp,
        seccomp_notify,
    }
}

/// Whether seccomp accepts `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (Linux 6.0): once the
/// supervisor has received a notification, only a fatal signal interrupts the waiting syscall.
/// Without it, any signal with a handler interrupts the wait, and a syscall that never fails with
/// `EINTR` natively (`fork`, `kill`, `bind`) can then fail with it, as a blocking one would.
pub fn seccomp_wait_killable() -> bool {
    static CACHE: OnceLock<bool> = OnceLock::new();
    *CACHE.get_or_init(|| {
        // Flags are checked before the program is read: EINVAL means unknown flags, EFAULT (the
        // NULL program) means they are known. Nothing is installed either way.
        let flags =
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
        // SAFETY: with a NULL program the call fails before it changes anything.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                std::ptr::null::<libc::sock_fprog>(),
            )
        };
        r < 0 && crate::sys::errno() == libc::EFAULT
    })
}

const SECCOMP_GET_ACTION_AVAIL: libc::c_uint = 2;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;

fn action_available(action: u32) -> bool {
    // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32 from the pointer we pass.
    unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        ) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiting_the_abi_drops_newer_protections_only() {
        let k = KernelSupport {
            landlock_abi: 7,
            landlock_errno: None,
            seccomp: true,
            seccomp_notify: true,
        }
        .limit_landlock_abi(3);
        assert!(k.supports(Protection::Filesystem));
        assert!(k.supports(Protection::FilesystemTruncate));
        assert!(!k.supports(Protection::NetworkTcp));
        assert!(!k.supports(Protection::ScopeSignal));
        assert!(k.supports(Protection::Seccomp));
    }
}
