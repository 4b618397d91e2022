//! Installing filters, and observing which syscalls the installed filters let through.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use libc::{c_long, sock_filter, sock_fprog};

use crate::bpf::{self, Asm, To};
use crate::error::{Error, Result};
use crate::{errno, sys, syscalls};

/// Installs `program` on the calling thread. Needs no_new_privs or CAP_SYS_ADMIN. Returns what
/// `seccomp(2)` returns (a listener fd with `SECCOMP_FILTER_FLAG_NEW_LISTENER`, otherwise 0).
pub fn install(program: &[sock_filter], flags: libc::c_ulong) -> Result<c_long> {
    let len = u16::try_from(program.len())
        .map_err(|_| Error::msg(format!("seccomp: {} instructions", program.len())))?;
    let fprog = sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points to `program`, which outlives the call; the kernel copies the filter.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &raw const fprog,
        )
    };
    sys::check(ret, || "seccomp(SECCOMP_SET_MODE_FILTER)".to_owned())
}

/// Sets no_new_privs, which unprivileged processes need before installing a filter.
pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    sys::check(ret.into(), || "prctl(PR_SET_NO_NEW_PRIVS)".to_owned()).map(drop)
}

/// Marks the calls made by [`verdicts`] (sixth argument), so that only they are intercepted.
pub const COOKIE: u64 = 0x5ecc_0b5e_12fe_d1c7;

/// What the installed filters did with one syscall, observed without running it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Syscall name.
    pub name: &'static str,
    /// Native number.
    pub nr: c_long,
    /// The errno the call returned: ENOSYS when every filter let it through (see [`verdicts`]),
    /// otherwise the errno a filter answered with (EPERM for a RuntimeDefault refusal).
    pub errno: i32,
}

/// Syscalls the kernel (6.14+) runs without consulting seccomp at all, so no filter decides them and
/// [`verdicts`] cannot call them without running them (outside a uprobe trampoline they SIGILL).
pub const UNFILTERED: &[&str] = &["uretprobe", "uprobe"];

/// Calls every syscall podsim knows except [`UNFILTERED`], with zero arguments, *without running any of them*, and
/// reports what the filters answer: those of this process, plus `extra` (e.g. the RuntimeDefault
/// filter, to check it without root).
///
/// A last filter returns `SECCOMP_RET_TRACE` for calls carrying [`COOKIE`] as sixth argument. The
/// kernel takes the most restrictive action of all filters, so an earlier ERRNO wins and shows up
/// as its errno; if every earlier filter allowed the call, TRACE wins, and with no tracer attached
/// the kernel skips the syscall and returns ENOSYS. Under a tracer that asked for seccomp events
/// the calls would really run, so this refuses to run traced.
///
/// The filters are installed in a forked child that makes no other syscall until it is done:
/// unused argument registers keep stale values, and a stale cookie in the sixth one would make the
/// filter swallow an unrelated call such as a `write` of the results.
pub fn verdicts(extra: Option<&[sock_filter]>) -> Result<Vec<Verdict>> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::sys("read /proc/self/status", e.raw_os_error().unwrap_or(0)))?;
    if status
        .lines()
        .any(|line| line.starts_with("TracerPid:") && line.trim_end() != "TracerPid:\t0")
    {
        return Err(Error::msg("verdicts: refusing to run under a tracer")
            .hint("a tracer would let the probed syscalls really run"));
    }
    let cookie = cookie_filter()?;
    let table: Vec<(&'static str, c_long)> = syscalls::all()
        .filter(|(name, _)| !UNFILTERED.contains(name))
        .collect();
    let mut errnos: Vec<i32> = Vec::with_capacity(table.len());

    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    sys::check(ret.into(), || "verdicts: pipe2".to_owned())?;
    // SAFETY: both descriptors were just created and belong to nothing else.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: podsim is single-threaded, so the child owns a consistent copy of the process.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        drop(reader);
        let code = match set_no_new_privs()
            .and_then(|()| extra.map_or(Ok(0), |program| install(program, 0)))
            .and_then(|_| install(&cookie, 0))
        {
            Ok(_) => {
                for &(_, nr) in &table {
                    // SAFETY: the cookie filter makes the kernel skip this call (ENOSYS) unless an
                    // earlier filter refuses it with an errno; either way it never runs.
                    let ret = unsafe { libc::syscall(nr, 0, 0, 0, 0, 0, COOKIE) };
                    errnos.push(if ret == -1 { errno::last() } else { 0 });
                }
                let bytes = errnos.len() * size_of::<i32>();
                // SAFETY: writes the initialised `errnos` buffer; all six arguments are explicit
                // so no stale cookie reaches the filter.
                let written = unsafe {
                    libc::syscall(
                        libc::SYS_write,
                        writer.as_raw_fd(),
                        errnos.as_ptr(),
                        bytes,
                        0,
                        0,
                        0,
                    )
                };
                i32::from(written != bytes as c_long)
            }
            Err(e) => e.errno().unwrap_or(libc::EINVAL),
        };
        // SAFETY: exit_group with all arguments explicit (see above); _exit is the fallback that
        // tells the compiler this branch ends. Nothing else of this copy of the process runs.
        unsafe {
            libc::syscall(libc::SYS_exit_group, code, 0, 0, 0, 0, 0);
            libc::_exit(code)
        }
    }
    drop(writer);
    if pid < 0 {
        return Err(Error::last("verdicts: fork"));
    }
    let mut bytes = Vec::new();
    let read = File::from(reader).read_to_end(&mut bytes);
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer for our own child.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            0
        };
        return Err(
            Error::sys("verdicts: installing the filters in the child", code)
                .hint(format!("child wait status {status:#x}")),
        );
    }
    read.map_err(|e| Error::sys("verdicts: read", e.raw_os_error().unwrap_or(0)))?;
    let errnos = bytes
        .chunks_exact(size_of::<i32>())
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
    let out: Vec<Verdict> = table
        .iter()
        .zip(errnos)
        .map(|(&(name, nr), errno)| Verdict { name, nr, errno })
        .collect();
    if let Some(ran) = out.iter().find(|v| v.errno == 0) {
        return Err(Error::msg(format!(
            "verdicts: {} really ran; the cookie filter is not working",
            ran.name
        )));
    }
    if out.len() != table.len() {
        return Err(Error::msg(
            "verdicts: the child reported fewer results than syscalls",
        ));
    }
    Ok(out)
}

fn cookie_filter() -> Result<Vec<sock_filter>> {
    let (low, high) = bpf::arg_halves(5);
    let mut asm = Asm::default();
    let allow = asm.label();
    asm.load(high);
    asm.jeq((COOKIE >> 32) as u32, To::Next, To::Label(allow));
    asm.load(low);
    asm.jeq(COOKIE as u32, To::Next, To::Label(allow));
    asm.ret(libc::SECCOMP_RET_TRACE);
    asm.bind(allow);
    asm.ret(libc::SECCOMP_RET_ALLOW);
    asm.finish()
}
