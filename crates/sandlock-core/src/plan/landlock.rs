//! The Landlock ruleset: built once in the parent, applied by each child with
//! `landlock_restrict_self`.
//!
//! A ruleset is a template; many children can restrict themselves with the same ruleset fd, so a
//! [`crate::Sandbox`] builds it once and every run reuses it.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{SandboxError, Stage};
use crate::policy::PortRange;
use crate::sys;

const ACCESS_FS_EXECUTE: u64 = 1 << 0;
const ACCESS_FS_WRITE_FILE: u64 = 1 << 1;
const ACCESS_FS_READ_FILE: u64 = 1 << 2;
const ACCESS_FS_READ_DIR: u64 = 1 << 3;
const ACCESS_FS_REFER: u64 = 1 << 13;
const ACCESS_FS_TRUNCATE: u64 = 1 << 14;
const ACCESS_FS_IOCTL_DEV: u64 = 1 << 15;
/// Every right of ABI 1 (bits 0 to 12: execute, write, read, readdir, remove, make*).
const ACCESS_FS_ABI1: u64 = (1 << 13) - 1;

const ACCESS_NET_BIND_TCP: u64 = 1 << 0;
const ACCESS_NET_CONNECT_TCP: u64 = 1 << 1;

const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

const RULE_PATH_BENEATH: libc::c_int = 1;
const RULE_NET_PORT: libc::c_int = 2;

/// Rights that apply to a file (as opposed to a directory); Landlock rejects the others on files.
const ACCESS_FILE: u64 = ACCESS_FS_EXECUTE
    | ACCESS_FS_WRITE_FILE
    | ACCESS_FS_READ_FILE
    | ACCESS_FS_TRUNCATE
    | ACCESS_FS_IOCTL_DEV;

/// One path of the policy and what it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathRule {
    pub(crate) path: PathBuf,
    pub(crate) access: Access,
    /// From a preset: skipped if this machine does not have it.
    pub(crate) optional: bool,
}

/// How much a path rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Access {
    /// Read, list and execute.
    Read,
    /// Everything the ABI handles.
    Write,
}

/// Every filesystem right this ABI can handle.
fn fs_handled(abi: u32) -> u64 {
    let mut all = ACCESS_FS_ABI1;
    if abi >= 2 {
        all |= ACCESS_FS_REFER;
    }
    if abi >= 3 {
        all |= ACCESS_FS_TRUNCATE;
    }
    if abi >= 5 {
        all |= ACCESS_FS_IOCTL_DEV;
    }
    all
}

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

#[repr(C)]
struct NetPortAttr {
    allowed_access: u64,
    port: u64,
}

/// What to put in the ruleset.
pub(crate) struct RulesetSpec<'a> {
    pub(crate) abi: u32,
    pub(crate) paths: &'a [PathRule],
    /// Handle TCP `connect` (ABI 4) with these ports allowed; `None` leaves connects to the
    /// supervisor alone (rules by host, which Landlock cannot express).
    pub(crate) connect: Option<&'a [PortRange]>,
    /// Handle TCP `bind` (ABI 4) with these ports allowed; `None` when the policy has no TCP (the
    /// seccomp filter refuses TCP sockets).
    pub(crate) bind: Option<&'a [PortRange]>,
    /// Scope abstract UNIX sockets and signals (ABI 6).
    pub(crate) scope: bool,
}

/// Creates the ruleset fd.
pub(crate) fn build(spec: &RulesetSpec<'_>) -> Result<OwnedFd, SandboxError> {
    let handled_fs = fs_handled(spec.abi);
    let attr = RulesetAttr {
        handled_access_fs: handled_fs,
        handled_access_net: if spec.abi >= 4 {
            (if spec.connect.is_some() {
                ACCESS_NET_CONNECT_TCP
            } else {
                0
            }) | (if spec.bind.is_some() {
                ACCESS_NET_BIND_TCP
            } else {
                0
            })
        } else {
            0
        },
        scoped: if spec.scope && spec.abi >= 6 {
            SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        } else {
            0
        },
    };
    // Older kernels reject a larger struct, so pass only the fields this ABI knows.
    let size = match spec.abi {
        0..=3 => 8,
        4 | 5 => 16,
        _ => std::mem::size_of::<RulesetAttr>(),
    };
    // SAFETY: `attr` is a valid landlock_ruleset_attr prefix of `size` bytes.
    let fd = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr, size, 0u32) };
    if fd < 0 {
        return Err(SandboxError::last_os(
            Stage::LandlockRuleset,
            "the kernel refused the Landlock ruleset; run `sandlock check` to see what it supports",
        ));
    }
    // SAFETY: the kernel just returned a new descriptor that nothing else owns.
    let ruleset = unsafe { sys::owned(fd as libc::c_int) };

    // Several paths can name one inode (/bin and /usr/bin on merged-/usr systems); one rule each.
    let mut seen: HashMap<(u64, u64), u64> = HashMap::new();
    for rule in spec.paths {
        add_path_rule(&ruleset, rule, handled_fs, &mut seen)?;
    }
    if attr.handled_access_net != 0 {
        for (ranges, right) in [
            (spec.connect.unwrap_or(&[]), ACCESS_NET_CONNECT_TCP),
            (spec.bind.unwrap_or(&[]), ACCESS_NET_BIND_TCP),
        ] {
            for port in ranges.iter().flat_map(|r| r.ports()) {
                let rule = NetPortAttr {
                    allowed_access: right,
                    port: u64::from(port),
                };
                // SAFETY: `rule` is a valid landlock_net_port_attr for the duration of the call.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_landlock_add_rule,
                        ruleset.as_raw_fd(),
                        RULE_NET_PORT,
                        &rule,
                        0u32,
                    )
                };
                if r < 0 {
                    return Err(SandboxError::last_os(
                        Stage::LandlockRule,
                        "the kernel refused a TCP port rule",
                    )
                    .with_detail(format!("port {port}")));
                }
            }
        }
    }
    Ok(ruleset)
}

fn add_path_rule(
    ruleset: &OwnedFd,
    rule: &PathRule,
    handled: u64,
    seen: &mut HashMap<(u64, u64), u64>,
) -> Result<(), SandboxError> {
    let path: &Path = &rule.path;
    let shown = path.display().to_string();
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        SandboxError::new(Stage::LandlockRule, None, "path contains a NUL byte").with_detail(&shown)
    })?;
    // The raw syscall, not the C library's open: musl (the static CLI) follows an O_CLOEXEC open
    // with an fcntl(F_SETFD) for kernels older than 2.6.23, one more syscall for each of the
    // fifty-odd paths of the system preset.
    // SAFETY: `c` is a valid C string; O_PATH opens without reading.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    } as libc::c_int;
    if fd < 0 {
        if rule.optional {
            return Ok(());
        }
        return Err(SandboxError::last_os(
            Stage::LandlockRule,
            "cannot open the path to build its rule; does it still exist?",
        )
        .with_detail(shown));
    }
    // SAFETY: open just returned this descriptor.
    let fd = unsafe { sys::owned(fd) };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` has room for a struct stat.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } < 0 {
        return Err(
            SandboxError::last_os(Stage::LandlockRule, "cannot stat the path").with_detail(shown),
        );
    }
    // SAFETY: fstat succeeded and filled `st`.
    let st = unsafe { st.assume_init() };
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let mut allowed = match rule.access {
        Access::Read => ACCESS_FS_EXECUTE | ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR,
        Access::Write => handled,
    } & handled;
    if !is_dir {
        allowed &= ACCESS_FILE;
    }
    let granted = seen.entry((st.st_dev, st.st_ino)).or_insert(0);
    if *granted & allowed == allowed {
        return Ok(());
    }
    *granted |= allowed;
    let rule = PathBeneathAttr {
        allowed_access: allowed,
        parent_fd: fd.as_raw_fd(),
    };
    // SAFETY: `rule` is a valid landlock_path_beneath_attr for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            RULE_PATH_BENEATH,
            &rule,
            0u32,
        )
    };
    if r < 0 {
        return Err(
            SandboxError::last_os(Stage::LandlockRule, "the kernel refused the path rule")
                .with_detail(shown),
        );
    }
    Ok(())
}
