//! Syscall numbers of the native architecture, looked up by name.
//!
//! The numbers come from the `libc` crate (generated into `x86_64.rs` / `aarch64.rs` by
//! `tools/gen_tables.py`), plus the few syscalls that are newer than the pinned `libc`: the profile
//! allows some of them (`cachestat`, `futex_wait`, `listmount`, ...), and without their numbers a
//! filter built by name would deny what a real pod allows.

#[cfg(target_arch = "aarch64")]
#[path = "aarch64.rs"]
mod arch;
#[cfg(target_arch = "x86_64")]
#[path = "x86_64.rs"]
mod arch;

use libc::c_long;

/// `AUDIT_ARCH_*` of the native architecture, as the kernel reports it in `seccomp_data.arch`
/// (`EM_*` machine | 64-bit | little-endian; `libc` has no `AUDIT_ARCH_*` constants).
#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = libc::EM_X86_64 as u32 | AUDIT_ARCH_64BIT | AUDIT_ARCH_LE;
/// `AUDIT_ARCH_*` of the native architecture, as the kernel reports it in `seccomp_data.arch`
/// (`EM_*` machine | 64-bit | little-endian; `libc` has no `AUDIT_ARCH_*` constants).
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = libc::EM_AARCH64 as u32 | AUDIT_ARCH_64BIT | AUDIT_ARCH_LE;

const AUDIT_ARCH_64BIT: u32 = 0x8000_0000;
const AUDIT_ARCH_LE: u32 = 0x4000_0000;

/// The x32 ABI shares `AUDIT_ARCH_X86_64` and marks its syscall numbers with this bit.
#[cfg(target_arch = "x86_64")]
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Syscalls the pinned libc does not name yet. Numbers from the kernel's
// arch/x86/entry/syscalls/syscall_64.tbl (x86_64) and scripts/syscall.tbl (aarch64); the test
// `newer_syscalls_do_not_collide_with_libc` checks that none reuses a number libc already assigns.
#[cfg(target_arch = "x86_64")]
const NEWER_THAN_LIBC: &[(&str, c_long)] = &[
    ("io_pgetevents", 333),
    ("uretprobe", 335),
    ("uprobe", 336),
    ("cachestat", 451),
    ("map_shadow_stack", 453),
    ("futex_wake", 454),
    ("futex_wait", 455),
    ("futex_requeue", 456),
    ("statmount", 457),
    ("listmount", 458),
    ("lsm_get_self_attr", 459),
    ("lsm_set_self_attr", 460),
    ("lsm_list_modules", 461),
    ("setxattrat", 463),
    ("getxattrat", 464),
    ("listxattrat", 465),
    ("removexattrat", 466),
    ("open_tree_attr", 467),
    ("file_getattr", 468),
    ("file_setattr", 469),
];
#[cfg(target_arch = "aarch64")]
const NEWER_THAN_LIBC: &[(&str, c_long)] = &[
    ("io_pgetevents", 292),
    ("cachestat", 451),
    ("fchmodat2", 452),
    ("map_shadow_stack", 453),
    ("futex_wake", 454),
    ("futex_wait", 455),
    ("futex_requeue", 456),
    ("statmount", 457),
    ("listmount", 458),
    ("lsm_get_self_attr", 459),
    ("lsm_set_self_attr", 460),
    ("lsm_list_modules", 461),
    ("setxattrat", 463),
    ("getxattrat", 464),
    ("listxattrat", 465),
    ("removexattrat", 466),
    ("open_tree_attr", 467),
    ("file_getattr", 468),
    ("file_setattr", 469),
];

/// Every native syscall podsim knows, as `(name, number)`: libc's table first, then the newer ones
/// libc does not name yet (skipping any a later libc has caught up with).
pub fn all() -> impl Iterator<Item = (&'static str, c_long)> {
    arch::LIBC.iter().copied().chain(
        NEWER_THAN_LIBC
            .iter()
            .copied()
            .filter(|(name, _)| !arch::LIBC.iter().any(|(known, _)| known == name)),
    )
}

/// The native number of syscall `name`, if this architecture has it.
pub fn number(name: &str) -> Option<c_long> {
    all().find(|(known, _)| *known == name).map(|(_, nr)| nr)
}

#[cfg(test)]
mod tests {
    #[test]
    fn newer_syscalls_do_not_collide_with_libc() {
        for (name, nr) in super::NEWER_THAN_LIBC {
            if let Some((other, _)) = super::arch::LIBC.iter().find(|(_, n)| n == nr) {
                assert_eq!(other, name, "{name} = {nr} is already libc's {other}");
            }
        }
    }

    #[test]
    fn lookups_use_libc_numbers() {
        assert_eq!(super::number("clone3"), Some(libc::SYS_clone3));
        assert_eq!(super::number("no_such_syscall"), None);
    }
}
