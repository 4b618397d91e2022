//! Which mechanism enforces each protection, for a policy, on the running kernel.
//!
//! Landlock is the boundary wherever the kernel offers the feature. Where it does not (Landlock
//! grew over Linux 5.13 to 6.12), the seccomp filter and the supervisor stand in for it (see
//! `supervisor/standin/`), or the policy is shown not to need more. A protection is missing only when
//! none of these holds, and only then does a policy fail closed (or, with `best_effort`, run and
//! list it in the outcome's `not_enforced`).
//!
//! | protection | Landlock | without it |
//! |---|---|---|
//! | filesystem | ABI 1 (5.13) | nothing can stand in: cannot run |
//! | filesystem_refer | ABI 2 (5.19) | ABI 1 refuses every rename or link into another directory (`EXDEV`): stricter, nothing to add |
//! | filesystem_truncate | ABI 3 (6.2) | the supervisor carries out `truncate(2)` beneath writable paths; seccomp refuses `open(O_RDONLY\|O_TRUNC)` and answers `openat2` with ENOSYS |
//! | network_tcp | ABI 4 (6.7) | the supervisor carries out `connect` and `bind` (and decides `listen`) |
//! | filesystem_ioctl | ABI 5 (6.10) | seccomp refuses ioctl-only opens (access mode 3), which Landlock lets through unchecked; nothing more is needed unless the policy grants read-only access to a device whose `ioctl`s matter, and such a policy cannot run |
//! | scope_abstract_unix | ABI 6 (6.12) | the supervisor mediates every `connect`; seccomp refuses datagram UNIX sockets |
//! | scope_signal | ABI 6 (6.12) | the supervisor decides every signal to another process, `pidfd_open` and `F_SETOWN` |

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::kernel::{KernelSupport, Protection, landlock_abi_linux};

/// What enforces a protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Mechanism {
    /// The kernel, through Landlock.
    Landlock,
    /// The seccomp filter alone.
    Seccomp,
    /// The supervisor, to which the seccomp filter hands the syscalls concerned.
    Supervisor,
    /// Nothing on this kernel: a policy fails closed unless `best_effort`.
    Unavailable,
}

impl Mechanism {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Landlock => "landlock",
            Mechanism::Seccomp => "seccomp",
            Mechanism::Supervisor => "supervisor",
            Mechanism::Unavailable => "unavailable",
        }
    }

    /// Whether the protection holds.
    pub fn enforced(self) -> bool {
        self != Mechanism::Unavailable
    }
}

/// How one protection is enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enforcement {
    /// The protection.
    pub protection: Protection,
    /// What enforces it.
    pub mechanism: Mechanism,
    /// How, or why not, in a sentence.
    pub detail: String,
}

/// What about a policy decides how it is enforced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Needs {
    /// The policy allows some TCP (`net_allow`, `net_allow_bind`).
    pub(crate) tcp: bool,
    /// Device files the policy grants read-only whose `ioctl`s matter (see [`risky_devices`]).
    pub(crate) risky_devices: Vec<PathBuf>,
}

/// How each protection is enforced on kernel `k` for a policy with `needs`.
pub(crate) fn enforcement(k: &KernelSupport, needs: &Needs) -> Vec<Enforcement> {
    Protection::ALL
        .iter()
        .map(|p| {
            let (mechanism, detail) = decide(*p, k, needs);
            Enforcement {
                protection: *p,
                mechanism,
                detail,
            }
        })
        .collect()
}

fn decide(p: Protection, k: &KernelSupport, needs: &Needs) -> (Mechanism, String) {
    use Mechanism::*;
    let abi = k.landlock_abi;
    let native = |p: Protection| -> String {
        let need = p.landlock_abi().unwrap_or(1);
        format!(
            "Landlock ABI {need} ({} and newer)",
            landlock_abi_linux(need)
        )
    };
    // Every stand-in needs the filter and the supervisor.
    let standin = k.seccomp && k.seccomp_notify;
    let no_standin = || {
        (
            Unavailable,
            "this kernel lacks it and seccomp user notification, which the stand-in needs".into(),
        )
    };
    match p {
        Protection::Filesystem | Protection::FilesystemRefer if abi == 0 => (
            Unavailable,
            "Landlock is not available (it needs Linux 5.13 or newer with landlock in lsm=)".into(),
        ),
        Protection::FilesystemRefer if abi == 1 => (
            Landlock,
            "Landlock ABI 1 refuses every rename or link into another directory (EXDEV); \
             programs such as mv fall back to copying"
                .into(),
        ),
        Protection::Seccomp if k.seccomp => (Seccomp, "seccomp-bpf filter".into()),
        Protection::Seccomp => (Unavailable, "this kernel has no seccomp filters".into()),
        Protection::SeccompNotify if standin => (
            Supervisor,
            "seccomp user notification, answered by the supervisor".into(),
        ),
        Protection::SeccompNotify => (
            Unavailable,
            "this kernel has no seccomp user notification (Linux 5.5)".into(),
        ),
        Protection::NetworkTcp if !needs.tcp => (
            Seccomp,
            "the policy allows no TCP: seccomp refuses TCP sockets".into(),
        ),
        p if k.supports(p) => (Landlock, native(p)),
        Protection::FilesystemIoctl if needs.risky_devices.is_empty() && standin => (
            Seccomp,
            "seccomp refuses ioctl-only opens (access mode 3), which Landlock before ABI 5 lets \
             through; beyond that not needed while no device file whose ioctls matter is granted \
             read-only (the system preset grants only null, zero, full, random and urandom); a \
             policy that grants one needs Landlock ABI 5 (Linux 6.10)"
                .into(),
        ),
        Protection::FilesystemIoctl => {
            let list: Vec<String> = needs
                .risky_devices
                .iter()
                .take(5)
                .map(|d| d.display().to_string())
                .collect();
            let more = needs.risky_devices.len().saturating_sub(list.len());
            (
                Unavailable,
                format!(
                    "the policy grants read-only access to device files whose ioctls only \
                     Landlock ABI 5 (Linux 6.10) can control: {}{}; grant them writable if the \
                     sandbox may use them, or narrow the read-only paths",
                    list.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                ),
            )
        }
        _ if !standin => no_standin(),
        Protection::FilesystemTruncate => (
            Supervisor,
            "the supervisor carries out truncate(2) beneath writable paths; seccomp refuses \
             open(O_RDONLY|O_TRUNC) and answers openat2 with ENOSYS"
                .into(),
        ),
        Protection::NetworkTcp => (
            Supervisor,
            "the supervisor carries out connect and bind with the policy's ports, and decides \
             listen"
                .into(),
        ),
        Protection::ScopeAbstractUnix => (
            Supervisor,
            "the supervisor mediates every connect (only this sandbox's abstract servers); \
             seccomp refuses datagram UNIX sockets"
                .into(),
        ),
        Protection::ScopeSignal => (
            Supervisor,
            "the supervisor decides every signal to another process, pidfd_open and F_SETOWN \
             (only this sandbox's processes)"
                .into(),
        ),
        _ => (Unavailable, "this kernel cannot enforce it".into()),
    }
}

/// Device numbers whose `ioctl`s need no control: they have none, or only ones that need a
/// capability the sandbox never holds (`/dev/null`, `zero`, `full`, `random`, `urandom`), or they
/// only ever reach the sandbox's own terminal (`/dev/tty` without a controlling terminal fails;
/// `/dev/ptmx` makes a new pseudo-terminal).
const HARMLESS_DEVICES: [(u32, u32); 7] = [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)];

/// At most this many entries are examined under one directory grant.
const DEVICE_SCAN_LIMIT: usize = 20_000;

/// Device files beneath the read-only grants `paths` that credentials `(uid, gid, groups)` could
/// open for reading and whose `ioctl`s Landlock ABI 5 would control (everything but
/// [`HARMLESS_DEVICES`]).
///
/// A directory grant is searched where devices live: `/dev`, and any devtmpfs or devpts mount,
/// when they lie beneath it. Elsewhere, creating a device file takes `CAP_MKNOD`. A directory too
/// large to search is itself reported (failing closed).
pub(crate) fn risky_devices(paths: &[PathBuf], creds: (u32, u32, &[u32])) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dev_dirs: Vec<PathBuf> = device_mounts();
    dev_dirs.push(PathBuf::from("/dev"));
    for p in paths {
        let Ok(meta) = std::fs::metadata(p) else {
            continue;
        };
        if meta.is_dir() {
            for d in dev_dirs.iter().filter(|d| d.starts_with(p)) {
                let mut seen = 0;
                scan(d, creds, &mut found, &mut seen);
                if seen > DEVICE_SCAN_LIMIT {
                    found.push(d.clone());
                }
            }
        } else if is_risky(p, &meta, creds) {
            found.push(p.clone());
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Whether the sandbox could open `p` for reading. Without privileges the kernel answers for the
/// sandbox's own credentials (ACLs included: logind grants the user's devices that way); with them
/// (root), the mode bits are read for an unprivileged uid 0.
fn readable(p: &Path, meta: &std::fs::Metadata, (uid, gid, groups): (u32, u32, &[u32])) -> bool {
    if uid != 0 {
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
            return true;
        };
        // SAFETY: faccessat reads the C string.
        return unsafe {
            libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::R_OK, libc::AT_EACCESS)
        } == 0;
    }
    let mode = meta.mode();
    let bits = if meta.uid() == uid {
        (mode >> 6) & 7
    } else if meta.gid() == gid || groups.contains(&meta.gid()) {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    bits & 4 != 0
}

fn is_risky(p: &Path, meta: &std::fs::Metadata, creds: (u32, u32, &[u32])) -> bool {
    let ft = meta.file_type();
    if !(ft.is_char_device() || ft.is_block_device()) {
        return false;
    }
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    !HARMLESS_DEVICES.contains(&(major, minor)) && readable(p, meta, creds)
}

fn scan(dir: &Path, creds: (u32, u32, &[u32]), found: &mut Vec<PathBuf>, seen: &mut usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        *seen += 1;
        if *seen > DEVICE_SCAN_LIMIT {
            return;
        }
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            scan(&path, creds, found, seen);
        } else if is_risky(&path, &meta, creds) {
            found.push(path);
        }
    }
}

/// Mount points of device filesystems (devtmpfs, devpts), from `/proc/self/mountinfo`.
fn device_mounts() -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let point = left.split_whitespace().nth(4)?;
            matches!(fstype, "devtmpfs" | "devpts").then(|| PathBuf::from(unescape(point)))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(abi: u32) -> KernelSupport {
        KernelSupport {
            landlock_abi: abi,
            landlock_errno: None,
            seccomp: true,
            seccomp_notify: true,
        }
    }

    fn mechanism(abi: u32, needs: &Needs, p: Protection) -> Mechanism {
        enforcement(&kernel(abi), needs)
            .into_iter()
            .find(|e| e.protection == p)
            .unwrap()
            .mechanism
    }

    #[test]
    fn every_protection_holds_from_abi_1_up_for_the_default_policy() {
        let needs = Needs::default();
        for abi in 1..=7 {
            for e in enforcement(&kernel(abi), &needs) {
                assert!(e.mechanism.enforced(), "ABI {abi}: {e:?}");
            }
        }
        assert_eq!(
            mechanism(2, &needs, Protection::ScopeSignal),
            Mechanism::Supervisor
        );
        assert_eq!(
            mechanism(6, &needs, Protection::ScopeSignal),
            Mechanism::Landlock
        );
        assert_eq!(
            mechanism(2, &needs, Protection::FilesystemIoctl),
            Mechanism::Seccomp
        );
        assert_eq!(
            mechanism(7, &needs, Protection::NetworkTcp),
            Mechanism::Seccomp
        );
    }

    #[test]
    fn tcp_rules_are_held_by_the_supervisor_before_abi_4() {
        let tcp = Needs {
            tcp: true,
            ..Needs::default()
        };
        assert_eq!(
            mechanism(3, &tcp, Protection::NetworkTcp),
            Mechanism::Supervisor
        );
        assert_eq!(
            mechanism(4, &tcp, Protection::NetworkTcp),
            Mechanism::Landlock
        );
    }

    #[test]
    fn what_cannot_be_stood_in_for_is_unavailable() {
        let risky = Needs {
            risky_devices: vec![PathBuf::from("/dev/sda")],
            ..Needs::default()
        };
        assert_eq!(
            mechanism(4, &risky, Protection::FilesystemIoctl),
            Mechanism::Unavailable
        );
        assert_eq!(
            mechanism(5, &risky, Protection::FilesystemIoctl),
            Mechanism::Landlock
        );
        assert_eq!(
            mechanism(0, &Needs::default(), Protection::Filesystem),
            Mechanism::Unavailable
        );
        let no_notify = KernelSupport {
            seccomp_notify: false,
            ..kernel(2)
        };
        let e = enforcement(&no_notify, &Needs::default());
        assert!(
            e.iter().any(|e| e.protection == Protection::ScopeSignal
                && e.mechanism == Mechanism::Unavailable)
        );
    }

    #[test]
    fn harmless_devices_are_not_risky_and_a_terminal_is() {
        // SAFETY: getuid/getgid take no arguments.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let creds = (uid, gid, &[][..]);
        let harmless: Vec<PathBuf> = ["/dev/null", "/dev/zero", "/dev/urandom"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert!(risky_devices(&harmless, creds).is_empty());
        assert!(risky_devices(&[PathBuf::from("/usr")], creds).is_empty());
        assert_eq!(unescape(r"/a\040b"), "/a b");
    }
}
