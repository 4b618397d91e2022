//! The RuntimeDefault seccomp profile of a container without capabilities, as data.
//!
//! Mirrors containerd `contrib/seccomp/seccomp_default.go` at commit 301026e5 rendered for amd64 with
//! an empty capability set (`../shared/k8s/runtime-default-containerd-amd64-nocaps.json`); Docker's
//! `moby/profiles` default.json (snapshot 2026-06-30) agrees for a no-capability container except
//! that it lacks the `lsm_*` syscalls. Entries with `includes.caps` do not apply: a restricted pod
//! holds no capability. The shape is the profile's own: a default action of EPERM, an allowlist, three
//! syscalls allowed only for some argument values, and `clone3` answered with ENOSYS.
//!
//! Deliberate difference: `clone` is also refused with `CLONE_NEWTIME` (0x80). The profile's mask
//! leaves that bit out because legacy `clone` reads it as part of the exit signal, so no time
//! namespace can be created that way; podsim refuses it anyway, so that every namespace flag reads
//! EPERM. Only a `clone` with an exit signal >= 128 sees the difference.

pub use crate::profile_allow::ALLOW_ALWAYS;

/// How an argument is compared, with libseccomp's semantics: on all 64 bits, unsigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `arg == value`
    Eq,
    /// `arg < value`
    Lt,
    /// `arg > value`
    Gt,
    /// `arg & mask == value`
    MaskedEq(u64),
}

/// One condition on one syscall argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgCmp {
    /// Argument index, 0 to 5.
    pub arg: u8,
    /// Comparison.
    pub op: Op,
    /// Right-hand side.
    pub value: u64,
}

const fn arg0(op: Op, value: u64) -> ArgCmp {
    ArgCmp { arg: 0, op, value }
}

/// The namespace flags the profile's `clone` rule masks out (`SCMP_CMP_MASKED_EQ 2114060288`).
pub const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// The flags podsim refuses in `clone`: the profile's, plus `CLONE_NEWTIME` (see the module docs).
pub const CLONE_DENIED_FLAGS: u64 = CLONE_NAMESPACE_FLAGS | libc::CLONE_NEWTIME as u64;

/// Syscalls allowed only when one of the listed comparisons holds (the entries with `args`).
pub const ALLOW_IF: &[(&str, &[ArgCmp])] = &[
    (
        "socket",
        // Every address family except AF_ALG (38) and AF_VSOCK (40).
        &[
            arg0(Op::Lt, libc::AF_ALG as u64),
            arg0(Op::Eq, libc::AF_NFC as u64),
            arg0(Op::Gt, libc::AF_VSOCK as u64),
        ],
    ),
    (
        "personality",
        // PER_LINUX, PER_LINUX32, UNAME26, PER_LINUX32|UNAME26, and 0xffffffff (query only).
        &[
            arg0(Op::Eq, 0x0),
            arg0(Op::Eq, 0x8),
            arg0(Op::Eq, libc::UNAME26 as u64),
            arg0(Op::Eq, libc::UNAME26 as u64 | 0x8),
            arg0(Op::Eq, 0xffff_ffff),
        ],
    ),
    ("clone", &[arg0(Op::MaskedEq(CLONE_DENIED_FLAGS), 0)]),
];

/// Syscalls answered with an errno other than the default: `clone3` gets ENOSYS so that glibc and
/// other runtimes fall back to `clone`, whose flags the filter can inspect.
pub const ERRNO: &[(&str, i32)] = &[("clone3", libc::ENOSYS)];

/// What the profile answers to everything it does not list.
pub const DEFAULT_ERRNO: i32 = libc::EPERM;

/// The profile's decision for one syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Allowed whatever the arguments.
    Allow,
    /// Allowed when any of the comparisons holds, otherwise the default errno.
    AllowIf(&'static [ArgCmp]),
    /// Refused with this errno.
    Errno(i32),
}

/// The profile's decision for syscall `name`.
pub fn rule(name: &str) -> Rule {
    if ALLOW_ALWAYS.contains(&name) {
        Rule::Allow
    } else if let Some((_, cmps)) = ALLOW_IF.iter().find(|(n, _)| *n == name) {
        Rule::AllowIf(cmps)
    } else if let Some((_, errno)) = ERRNO.iter().find(|(n, _)| *n == name) {
        Rule::Errno(*errno)
    } else {
        Rule::Errno(DEFAULT_ERRNO)
    }
}

#[cfg(test)]
mod tests {
    use super::{Rule, rule};

    #[test]
    fn profile_mask_is_the_seven_namespace_flags() {
        assert_eq!(super::CLONE_NAMESPACE_FLAGS, 2_114_060_288);
    }

    #[test]
    fn sandlock_dependencies_are_allowed() {
        for name in [
            "landlock_create_ruleset",
            "landlock_add_rule",
            "landlock_restrict_self",
            "seccomp",
            "prctl",
            "ioctl",
            "pidfd_open",
            "pidfd_send_signal",
            "process_vm_readv",
            "ptrace",
        ] {
            assert_eq!(rule(name), Rule::Allow, "{name}");
        }
    }

    #[test]
    fn unlisted_syscalls_get_eperm_and_clone3_enosys() {
        assert_eq!(rule("pidfd_getfd"), Rule::Errno(libc::EPERM));
        assert_eq!(rule("unshare"), Rule::Errno(libc::EPERM));
        assert_eq!(rule("clone3"), Rule::Errno(libc::ENOSYS));
    }
}
