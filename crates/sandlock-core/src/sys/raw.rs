//! System calls as single machine instructions, for the child between `clone` and `execve`.
//!
//! The C library's wrappers write `errno`, a thread-local of the *parent's* thread when the child
//! shares its memory (`CLONE_VM`), and some of them take locks. These do neither: they return the
//! kernel's raw result, a negative errno on failure.

/// Issues system call `nr` with up to six arguments; returns the raw kernel result (`-errno` on error).
///
/// # Safety
/// The caller must pass arguments that are valid for `nr` (pointers to live memory of the right size).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn syscall6(nr: i64, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 Linux syscall convention: number in rax, arguments in rdi, rsi, rdx, r10,
    // r8, r9; the kernel clobbers rcx and r11 and returns in rax. The caller vouches for the arguments.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Issues system call `nr` with up to six arguments; returns the raw kernel result (`-errno` on error).
///
/// # Safety
/// The caller must pass arguments that are valid for `nr` (pointers to live memory of the right size).
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub(crate) unsafe fn syscall6(nr: i64, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the aarch64 Linux syscall convention: number in x8, arguments in x0-x5, result in x0.
    unsafe {
        core::arch::asm!(
            "svc 0",
            in("x8") nr,
            inlateout("x0") a[0] as isize => ret,
            in("x1") a[1],
            in("x2") a[2],
            in("x3") a[3],
            in("x4") a[4],
            in("x5") a[5],
            options(nostack),
        );
    }
    ret
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("sandlock supports x86_64 and aarch64 Linux");

/// Shorthand: a system call with fewer than six arguments (the rest are zero). One arm per
/// arity, so that no indexing (and no bounds-check panic path) ends up in the child.
macro_rules! raw_syscall {
    ($nr:expr) => {
        $crate::sys::raw::syscall6($nr as i64, [0, 0, 0, 0, 0, 0])
    };
    ($nr:expr, $a:expr) => {
        $crate::sys::raw::syscall6($nr as i64, [$a as usize, 0, 0, 0, 0, 0])
    };
    ($nr:expr, $a:expr, $b:expr) => {
        $crate::sys::raw::syscall6($nr as i64, [$a as usize, $b as usize, 0, 0, 0, 0])
    };
    ($nr:expr, $a:expr, $b:expr, $c:expr) => {
        $crate::sys::raw::syscall6($nr as i64, [$a as usize, $b as usize, $c as usize, 0, 0, 0])
    };
    ($nr:expr, $a:expr, $b:expr, $c:expr, $d:expr) => {
        $crate::sys::raw::syscall6(
            $nr as i64,
            [$a as usize, $b as usize, $c as usize, $d as usize, 0, 0],
        )
    };
    ($nr:expr, $a:expr, $b:expr, $c:expr, $d:expr, $e:expr) => {
        $crate::sys::raw::syscall6(
            $nr as i64,
            [$a as usize, $b as usize, $c as usize, $d as usize, $e as usize, 0],
        )
    };
}
pub(crate) use raw_syscall;
