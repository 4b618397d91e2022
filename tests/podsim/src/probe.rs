//! `podsim probe`: tries each thing a restricted pod forbids or must allow, and reports what the
//! kernel answered, so the same binary shows the difference with and without podsim.
//!
//! Results are `ok` (sometimes `ok:<detail>`), an errno name, or `killed:<signal>`. Calls that would
//! succeed with harmless arguments get arguments the kernel rejects with a distinctive errno
//! (EBADF, EINVAL, EFAULT, ENOENT) once it is reached, so EPERM means "refused by the filter" and
//! anything else means "reached the kernel". Every syscall check runs in a forked child, so that a
//! call that does succeed outside podsim (unshare, personality, a clone) changes nothing for the
//! next check; a clone that succeeds exits at once in its child.

use std::ffi::CStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::ptr;

use libc::{c_int, c_long};

use crate::errno;

/// One observation: what was tried and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Stable name, used as the JSON key.
    pub name: String,
    /// `ok`, `ok:<detail>`, an errno name, `killed:<signal>`, or a value (uid, capability mask).
    pub result: String,
}

fn check(name: &str, result: impl Into<String>) -> Check {
    Check {
        name: name.to_owned(),
        result: result.into(),
    }
}

/// Runs every check.
pub fn run() -> Vec<Check> {
    let mut checks = identity();
    checks.extend(filesystem());
    checks.extend(denied());
    checks.extend(allowed());
    checks
}

/// Formats checks as one JSON object, `{"name": "result", ...}`, in check order.
pub fn to_json(checks: &[Check]) -> String {
    let fields: Vec<String> = checks
        .iter()
        .map(|c| format!("\"{}\":\"{}\"", escape(&c.name), escape(&c.result)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// Formats checks as aligned `name result` lines.
pub fn to_text(checks: &[Check]) -> String {
    checks
        .iter()
        .map(|c| format!("{:<26} {}\n", c.name, c.result))
        .collect()
}

fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c if u32::from(c) < 0x20 => format!("\\u{:04x}", u32::from(c)).chars().collect(),
            c => vec![c],
        })
        .collect()
}

fn identity() -> Vec<Check> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .map(str::trim)
            .unwrap_or("?")
            .to_owned()
    };
    let first = |key: &str| {
        field(key)
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_owned()
    };
    vec![
        check("uid", first("Uid")),
        check("gid", first("Gid")),
        check("groups", field("Groups")),
        check("CapInh", field("CapInh")),
        check("CapPrm", field("CapPrm")),
        check("CapEff", field("CapEff")),
        check("CapBnd", field("CapBnd")),
        check("CapAmb", field("CapAmb")),
        check("NoNewPrivs", field("NoNewPrivs")),
        check("Seccomp", field("Seccomp")),
    ]
}

/// `ok` for a non-negative return, otherwise the errno name. Call right after the syscall.
fn outcome(ret: c_long) -> String {
    if ret < 0 {
        errno::name(errno::last())
    } else {
        "ok".to_owned()
    }
}

fn io_outcome<T>(result: std::io::Result<T>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => errno::name(e.raw_os_error().unwrap_or(0)),
    }
}

fn filesystem() -> Vec<Check> {
    let pid = std::process::id();
    // O_TMPFILE on /etc: EROFS on a read-only mount, and leaves no file behind when it works.
    let etc = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open("/etc");
    let named = |dir: &str| {
        let path = format!("{dir}/.podsim-probe-{pid}");
        let result = std::fs::write(&path, b"probe");
        if result.is_ok() {
            let _ = std::fs::remove_file(&path);
        }
        io_outcome(result)
    };
    let mut checks = vec![
        check("write_etc", io_outcome(etc)),
        check("write_tmp", named("/tmp")),
        check("write_dev_shm", named("/dev/shm")),
        check(
            "write_dev_null",
            io_outcome(std::fs::write("/dev/null", b"probe")),
        ),
    ];
    checks.extend(isolated("write_proc_self", |out| {
        out.push(check(
            "write_proc_self",
            io_outcome(std::fs::write("/proc/self/comm", b"podsim-probe")),
        ));
    }));
    checks
}

/// Runs `f` in a forked child and returns the checks it reported; a child that dies reports
/// `killed:<signal>` under `label`. The probe is single-threaded, so the child may allocate.
fn isolated(label: &str, f: impl FnOnce(&mut Vec<Check>)) -> Vec<Check> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return vec![check(
            label,
            format!("probe:pipe2:{}", errno::name(errno::last())),
        )];
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (mut reader, writer) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: the probe runs no other threads, so the child owns a consistent copy of the heap.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        drop(reader);
        let mut out = Vec::new();
        f(&mut out);
        let text: String = out
            .iter()
            .map(|c| format!("{}\t{}\n", c.name, c.result))
            .collect();
        let mut writer = writer;
        let code = i32::from(writer.write_all(text.as_bytes()).is_err());
        // SAFETY: _exit skips the parent's atexit handlers and stdio buffers, which are not ours.
        unsafe { libc::_exit(code) };
    }
    drop(writer);
    if pid < 0 {
        return vec![check(
            label,
            format!("probe:fork:{}", errno::name(errno::last())),
        )];
    }
    let mut text = String::new();
    let _ = reader.read_to_string(&mut text);
    let status = reap(pid);
    let checks: Vec<Check> = text
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(name, result)| check(name, result))
        .collect();
    if checks.is_empty() {
        let how = if libc::WIFSIGNALED(status) {
            format!("killed:{}", signal_name(libc::WTERMSIG(status)))
        } else {
            format!("exited:{}", libc::WEXITSTATUS(status))
        };
        return vec![check(label, how)];
    }
    checks
}

fn signal_name(signal: c_int) -> String {
    match signal {
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGSYS => "SIGSYS".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGBUS => "SIGBUS".into(),
        other => format!("signal {other}"),
    }
}

/// Waits for `pid` whatever its exit signal, and returns its wait status.
fn reap(pid: libc::pid_t) -> c_int {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer; __WALL also reaps children with odd exit signals.
    unsafe { libc::waitpid(pid, &raw mut status, libc::__WALL) };
    status
}

/// Runs one syscall in a forked child and records its outcome under `name`.
fn one(name: &str, call: impl FnOnce() -> c_long) -> Vec<Check> {
    isolated(name, |out| {
        let ret = call();
        out.push(check(name, outcome(ret)));
    })
}

/// Runs a clone-like call in a forked child. If the call creates a process, that process exits at
/// once and is reaped, so a call that is not filtered never leaves a second probe running.
fn forking(name: &str, call: impl FnOnce() -> c_long) -> Vec<Check> {
    isolated(name, |out| {
        let ret = call();
        if ret == 0 {
            // SAFETY: in the new process; leave without running anything else.
            unsafe { libc::_exit(0) };
        }
        let result = outcome(ret);
        if ret > 0 {
            reap(ret as libc::pid_t);
        }
        out.push(check(name, result));
    })
}

/// An argument of a table-driven syscall check.
#[derive(Clone, Copy)]
enum Arg {
    /// An integer (0 doubles as NULL).
    Int(i64),
    /// The address of [`MISSING`].
    Missing,
    /// The address of "tmpfs".
    Tmpfs,
    /// The address of "/".
    Root,
    /// The probe's own pid.
    Pid,
}

use Arg::{Int, Missing, Pid, Root, Tmpfs};

/// A path that exists nowhere, so path-taking calls that reach the kernel fail with ENOENT.
const MISSING: &CStr = c"/nonexistent-podsim-probe";

/// Syscalls a restricted pod refuses, with arguments that a kernel reached rejects (or, for
/// unshare/personality, harmlessly accepts inside the forked child).
const DENIED: &[(&str, c_long, &[Arg])] = &[
    ("unshare_0", libc::SYS_unshare, &[Int(0)]),
    (
        "unshare_newuser",
        libc::SYS_unshare,
        &[Int(libc::CLONE_NEWUSER as i64)],
    ),
    ("setns", libc::SYS_setns, &[Int(-1), Int(0)]),
    (
        "mount",
        libc::SYS_mount,
        &[Tmpfs, Missing, Tmpfs, Int(0), Int(0)],
    ),
    ("umount2", libc::SYS_umount2, &[Missing, Int(-1)]),
    ("pivot_root", libc::SYS_pivot_root, &[Missing, Missing]),
    ("chroot", libc::SYS_chroot, &[Missing]),
    ("fsopen", libc::SYS_fsopen, &[Int(0), Int(0)]),
    (
        "fsconfig",
        libc::SYS_fsconfig,
        &[Int(-1), Int(0), Int(0), Int(0), Int(0)],
    ),
    ("fsmount", libc::SYS_fsmount, &[Int(-1), Int(0), Int(0)]),
    ("fspick", libc::SYS_fspick, &[Int(-1), Int(0), Int(0)]),
    (
        "move_mount",
        libc::SYS_move_mount,
        &[Int(-1), Missing, Int(-1), Missing, Int(0xffff_ffff)],
    ),
    (
        "open_tree",
        libc::SYS_open_tree,
        &[Int(-1), Missing, Int(0xffff_ffff)],
    ),
    (
        "mount_setattr",
        libc::SYS_mount_setattr,
        &[Int(-1), Missing, Int(0xffff_ffff), Int(0), Int(0)],
    ),
    (
        "pidfd_getfd",
        libc::SYS_pidfd_getfd,
        &[Int(-1), Int(0), Int(0)],
    ),
    ("kcmp", libc::SYS_kcmp, &[Pid, Pid, Int(99), Int(0), Int(0)]),
    (
        "process_madvise",
        libc::SYS_process_madvise,
        &[Int(-1), Int(0), Int(0), Int(0), Int(0)],
    ),
    ("bpf", libc::SYS_bpf, &[Int(0xffff), Int(0), Int(0)]),
    (
        "keyctl",
        libc::SYS_keyctl,
        &[Int(0xffff), Int(0), Int(0), Int(0), Int(0)],
    ),
    (
        "add_key",
        libc::SYS_add_key,
        &[Int(0), Int(0), Int(0), Int(0), Int(0)],
    ),
    (
        "request_key",
        libc::SYS_request_key,
        &[Int(0), Int(0), Int(0), Int(0)],
    ),
    (
        "perf_event_open",
        libc::SYS_perf_event_open,
        &[Int(0), Int(0), Int(-1), Int(-1), Int(0)],
    ),
    ("userfaultfd", libc::SYS_userfaultfd, &[Int(-1)]),
    (
        "io_uring_setup",
        libc::SYS_io_uring_setup,
        &[Int(1), Int(0)],
    ),
    (
        "io_uring_enter",
        libc::SYS_io_uring_enter,
        &[Int(-1), Int(0), Int(0), Int(0), Int(0), Int(0)],
    ),
    (
        "io_uring_register",
        libc::SYS_io_uring_register,
        &[Int(-1), Int(0), Int(0), Int(0)],
    ),
    // READ_IMPLIES_EXEC: not one of the personalities the profile allows.
    (
        "personality_0x400000",
        libc::SYS_personality,
        &[Int(0x0040_0000)],
    ),
    (
        "reboot",
        libc::SYS_reboot,
        &[Int(0), Int(0), Int(0), Int(0)],
    ),
    (
        "finit_module",
        libc::SYS_finit_module,
        &[Int(-1), Int(0), Int(0)],
    ),
    ("syslog", libc::SYS_syslog, &[Int(999), Int(0), Int(0)]),
    (
        "open_by_handle_at",
        libc::SYS_open_by_handle_at,
        &[Int(-1), Int(0), Int(0)],
    ),
    (
        "socket_af_vsock",
        libc::SYS_socket,
        &[
            Int(libc::AF_VSOCK as i64),
            Int(libc::SOCK_STREAM as i64),
            Int(0),
        ],
    ),
];

/// Syscalls a restricted pod allows (and sandlock or ordinary programs use), called harmlessly.
const ALLOWED: &[(&str, c_long, &[Arg])] = &[
    (
        "personality_query",
        libc::SYS_personality,
        &[Int(0xffff_ffff)],
    ),
    (
        "socket_af_unix",
        libc::SYS_socket,
        &[
            Int(libc::AF_UNIX as i64),
            Int(libc::SOCK_STREAM as i64),
            Int(0),
        ],
    ),
    (
        "close_range",
        libc::SYS_close_range,
        &[Int(1 << 20), Int(0xffff_ffff), Int(0)],
    ),
    (
        "memfd_create",
        libc::SYS_memfd_create,
        &[Missing, Int(libc::MFD_CLOEXEC as i64)],
    ),
    (
        "faccessat2",
        libc::SYS_faccessat2,
        &[
            Int(libc::AT_FDCWD as i64),
            Root,
            Int(libc::R_OK as i64),
            Int(libc::AT_EACCESS as i64),
        ],
    ),
    (
        "inotify_init1",
        libc::SYS_inotify_init1,
        &[Int(libc::IN_CLOEXEC as i64)],
    ),
    (
        "epoll_create1",
        libc::SYS_epoll_create1,
        &[Int(libc::EPOLL_CLOEXEC as i64)],
    ),
];

/// Runs each table entry in a forked child.
fn table(entries: &[(&'static str, c_long, &[Arg])]) -> Vec<Check> {
    let mut checks = Vec::new();
    for &(name, nr, args) in entries {
        checks.extend(isolated(name, |out| {
            let mut raw = [0 as c_long; 6];
            for (slot, arg) in raw.iter_mut().zip(args) {
                *slot = match *arg {
                    Int(value) => value as c_long,
                    Missing => MISSING.as_ptr() as c_long,
                    Tmpfs => c"tmpfs".as_ptr() as c_long,
                    Root => c"/".as_ptr() as c_long,
                    // SAFETY: getpid has no preconditions.
                    Pid => unsafe { libc::getpid() }.into(),
                };
            }
            // SAFETY: the tables pass integers the kernel does not dereference (0 is NULL, which
            // it rejects with EFAULT) and pointers to static NUL-terminated strings; the call runs
            // in a forked child that exits right after, so an unfiltered call changes nothing here.
            let ret = unsafe { libc::syscall(nr, raw[0], raw[1], raw[2], raw[3], raw[4], raw[5]) };
            out.push(check(name, outcome(ret)));
        }));
    }
    checks
}

fn denied() -> Vec<Check> {
    let mut checks = forking("clone3", || {
        // An exit signal above _NSIG makes the kernel refuse this with EINVAL once reached.
        let mut args = [0u64; 8];
        args[4] = u64::MAX;
        // SAFETY: `args` is a 64-byte struct clone_args (flags, pidfd, child_tid, parent_tid,
        // exit_signal, stack, stack_size, tls) with no pointers set.
        unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), size_of_val(&args)) }
    });
    for (name, flag) in [
        ("clone_newns", libc::CLONE_NEWNS),
        ("clone_newuser", libc::CLONE_NEWUSER),
        ("clone_newpid", libc::CLONE_NEWPID),
        ("clone_newnet", libc::CLONE_NEWNET),
        ("clone_newtime", libc::CLONE_NEWTIME),
    ] {
        checks.extend(forking(name, || {
            // SAFETY: a fork-like clone (no CLONE_VM, no new stack); `forking` makes the new
            // process exit at once.
            unsafe { libc::syscall(libc::SYS_clone, flag | libc::SIGCHLD, 0, 0, 0, 0) }
        }));
    }
    checks.extend(table(DENIED));
    checks.extend(foreign_abis());
    checks
}

#[cfg(target_arch = "x86_64")]
fn foreign_abis() -> Vec<Check> {
    let mut checks = isolated("i386_getpid", |out| {
        let ret: i32;
        // SAFETY: i386 getpid (20) through int 0x80 reads and writes no memory; the compat entry
        // may clobber r8-r11, which are declared clobbered.
        unsafe {
            std::arch::asm!(
                "int 0x80",
                inlateout("eax") 20i32 => ret,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                options(nostack),
            );
        }
        let result = if ret < 0 {
            errno::name(-ret)
        } else {
            "ok".to_owned()
        };
        out.push(check("i386_getpid", result));
    });
    checks.extend(one("x32_getpid", || {
        // SAFETY: getpid takes no arguments.
        unsafe { libc::syscall(crate::syscalls::X32_SYSCALL_BIT as c_long | libc::SYS_getpid) }
    }));
    checks
}

#[cfg(not(target_arch = "x86_64"))]
fn foreign_abis() -> Vec<Check> {
    Vec::new()
}

/// `LANDLOCK_CREATE_RULESET_VERSION`: ask for the ABI version instead of creating a ruleset.
const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;

fn allowed() -> Vec<Check> {
    let root = c"/".as_ptr();
    let mut checks = table(ALLOWED);

    checks.extend(isolated("landlock_create_ruleset", |out| {
        // SAFETY: with the VERSION flag, the attribute pointer must be null and size 0.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                ptr::null::<u8>(),
                0,
                LANDLOCK_CREATE_RULESET_VERSION,
            )
        };
        let result = if ret > 0 {
            format!("ok:abi={ret}")
        } else {
            outcome(ret)
        };
        out.push(check("landlock_create_ruleset", result));
    }));
    checks.extend(one("seccomp_get_action_avail", || {
        let action: u32 = libc::SECCOMP_RET_LOG;
        // SAFETY: `action` is a live u32, as SECCOMP_GET_ACTION_AVAIL expects.
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_GET_ACTION_AVAIL,
                0,
                &raw const action,
            )
        }
    }));
    checks.extend(isolated("seccomp_new_listener", user_notification));
    checks.extend(isolated("pidfd_open", |out| {
        // SAFETY: integer arguments only.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        out.push(check("pidfd_open", outcome(fd)));
        if fd >= 0 {
            // SAFETY: signal 0 only checks that the process can be signalled.
            let ret =
                unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, 0, ptr::null::<u8>(), 0) };
            out.push(check("pidfd_send_signal", outcome(ret)));
        }
    }));
    checks.extend(isolated("clone_pidfd", |out| {
        let mut pidfd: c_int = -1;
        // SAFETY: a fork-like clone; the kernel stores the pidfd in `pidfd` (parent_tid slot).
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::CLONE_PIDFD | libc::SIGCHLD,
                0,
                &raw mut pidfd,
                0,
                0,
            )
        };
        if ret == 0 {
            // SAFETY: in the new process; leave at once.
            unsafe { libc::_exit(0) };
        }
        let result = outcome(ret);
        if ret > 0 {
            reap(ret as libc::pid_t);
        }
        let result = if ret > 0 && pidfd < 0 {
            "no pidfd".to_owned()
        } else {
            result
        };
        out.push(check("clone_pidfd", result));
    }));
    checks.extend(one("clone_vm_vfork", || {
        // SAFETY: CLONE_THREAD without CLONE_SIGHAND is always EINVAL once the kernel sees it, so
        // no process sharing this stack is ever created; EPERM would mean the filter refused it.
        unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_THREAD,
                0,
                0,
                0,
                0,
            )
        }
    }));
    checks.extend(forking("fork", || {
        // SAFETY: single-threaded; `forking` makes the child exit at once.
        unsafe { libc::fork() }.into()
    }));
    checks.extend(isolated("ptrace_child", trace_child));
    checks.extend(one("openat2", || {
        // SAFETY: all-zero is a valid open_how (libc marks it non-exhaustive).
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
        // SAFETY: `how` and `root` outlive the call; the size matches the struct.
        unsafe {
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                root,
                &raw const how,
                size_of::<libc::open_how>(),
            )
        }
    }));
    checks.extend(one("statx", || {
        // SAFETY: all-zero is a valid statx buffer.
        let mut buf: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: `root` and `buf` outlive the call.
        unsafe {
            libc::syscall(
                libc::SYS_statx,
                libc::AT_FDCWD,
                root,
                0,
                libc::STATX_BASIC_STATS,
                &raw mut buf,
            )
        }
    }));
    checks.extend(one("prlimit64", || {
        let mut old = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: only reads the limit into `old`.
        unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                libc::RLIMIT_NOFILE,
                ptr::null::<u8>(),
                &raw mut old,
            )
        }
    }));
    checks
}

/// What sandlock's supervisor needs: a filter with a listener fd, the notification ioctls, and
/// passing the listener to another process with SCM_RIGHTS.
fn user_notification(out: &mut Vec<Check>) {
    // Outside podsim an unprivileged run needs this first; inside it is already set.
    let _ = crate::seccomp::set_no_new_privs();
    let allow_all = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let fd = match crate::seccomp::install(&allow_all, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER) {
        Ok(fd) => fd as c_int,
        Err(e) => {
            let name = e.errno().map_or_else(|| e.to_string(), errno::name);
            out.push(check("seccomp_new_listener", name));
            return;
        }
    };
    out.push(check("seccomp_new_listener", "ok"));
    let mut id: u64 = 0;
    // SAFETY: `id` is the u64 SECCOMP_IOCTL_NOTIF_ID_VALID reads; no notification has that id, so
    // a reached ioctl answers ENOENT.
    let ret = unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &raw mut id) };
    out.push(check("ioctl_notif_id_valid", outcome(ret.into())));
    out.push(check("scm_rights", pass_fd(fd)));
}

/// Sends `fd` over a socketpair with SCM_RIGHTS and receives it back.
fn pass_fd(fd: c_int) -> String {
    let mut pair = [0 as c_int; 2];
    // SAFETY: `pair` has room for two descriptors.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    };
    if ret == -1 {
        return format!("socketpair:{}", errno::name(errno::last()));
    }
    // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(size_of::<c_int>() as u32) as usize,
            libc::CMSG_LEN(size_of::<c_int>() as u32) as usize,
        )
    };
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` describes `control`, which has room for one cmsghdr carrying one int.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = len as _;
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>(), fd);
        libc::sendmsg(pair[0], &raw const msg, 0)
    };
    if sent == -1 {
        return format!("sendmsg:{}", errno::name(errno::last()));
    }
    control.fill(0);
    msg.msg_controllen = space as _;
    // SAFETY: `msg` still describes live buffers `iov`/`byte` and `control`.
    let received = unsafe { libc::recvmsg(pair[1], &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
    if received == -1 {
        return format!("recvmsg:{}", errno::name(errno::last()));
    }
    // SAFETY: after recvmsg, `msg` describes what the kernel wrote into `control`.
    let got = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            -1
        } else {
            ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>())
        }
    };
    if got >= 0 {
        "ok".to_owned()
    } else {
        "no fd received".to_owned()
    }
}

/// Stops a child, attaches to it with ptrace, and reads its memory both ways sandlock does.
fn trace_child(out: &mut Vec<Check>) {
    let secret: u64 = 0x5ec2_e7c0_ffee_0001;
    // SAFETY: single-threaded; the child only stops itself and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: raise and _exit are async-signal-safe.
        unsafe {
            libc::raise(libc::SIGSTOP);
            libc::_exit(0);
        }
    }
    if pid < 0 {
        out.push(check(
            "ptrace_child",
            format!("fork:{}", errno::name(errno::last())),
        ));
        return;
    }
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &raw mut status, libc::WUNTRACED) };

    // SAFETY: PTRACE_SEIZE takes no pointers here.
    let seized = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) };
    out.push(check("ptrace_child", outcome(seized)));

    // The child is a copy of this process, so `secret` sits at the same address there.
    let mut copy: u64 = 0;
    let local = libc::iovec {
        iov_base: (&raw mut copy).cast(),
        iov_len: 8,
    };
    let remote = libc::iovec {
        iov_base: (&raw const secret).cast_mut().cast(),
        iov_len: 8,
    };
    // SAFETY: `local` points to `copy`, 8 writable bytes; `remote` is only read by the kernel.
    let read = unsafe { libc::process_vm_readv(pid, &raw const local, 1, &raw const remote, 1, 0) };
    let result = match read {
        8 if copy == secret => "ok".to_owned(),
        8 => "wrong bytes".to_owned(),
        n => outcome(n as c_long),
    };
    out.push(check("process_vm_readv_child", result));

    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).and_then(|file| {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 8];
        file.read_exact_at(&mut buf, (&raw const secret) as u64)?;
        Ok(u64::from_ne_bytes(buf))
    });
    let result = match mem {
        Ok(value) if value == secret => "ok".to_owned(),
        Ok(_) => "wrong bytes".to_owned(),
        Err(e) => io_outcome::<()>(Err(e)),
    };
    out.push(check("proc_pid_mem_child", result));

    // SAFETY: `pid` is our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reap(pid);
}
