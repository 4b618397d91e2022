//! The seccomp filter: which syscalls the sandbox is refused, and which ones the supervisor decides.
//!
//! The filter allows by default and refuses the kernel surface that running code does not need
//! (DESIGN §4): namespaces and mounts, io_uring, bpf, perf, userfaultfd, keyrings, ptrace and
//! cross-process memory access, module and clock control, terminal injection, personality changes,
//! every socket family but UNIX (and TCP when the policy allows some), and foreign syscall ABIs.
//!
//! It also routes to the supervisor what Landlock cannot decide on this kernel (see
//! `crate::standin`): signals and process handles without Landlock's signal scoping (ABI 6), TCP
//! `bind` without its network rights (ABI 4), `truncate` without its truncate right (ABI 3); and,
//! on every kernel, the syscalls that change another process by pid (`prlimit64`, `setpriority`,
//! `sched_set*`, `ioprio_set`), which Landlock never covers.
//!
//! Two deliberate oddities:
//! - `clone3` answers ENOSYS, so that the C library falls back to `clone`, whose flags a classic BPF
//!   filter can inspect (`clone3` passes them in memory, out of the filter's reach).
//! - `setsid` and `setpgid` succeed without doing anything. Every process of a sandbox stays in
//!   the process group the sandbox started in, which is what lets the supervisor kill the whole tree
//!   (including daemons that double-fork) with one `kill(-pgid)`.

use std::collections::BTreeMap;

use super::bpf::{self, Action, Check, Cond, FilterSpec, SyscallRule};
use super::syscall_table::SYSCALLS;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xc000_00b7;
/// x32 syscalls carry this bit in their number on x86_64.
#[cfg(target_arch = "x86_64")]
const NR_LIMIT: Option<u32> = Some(0x4000_0000);
#[cfg(target_arch = "aarch64")]
const NR_LIMIT: Option<u32> = None;

/// Refused with EPERM, whatever the arguments. Names missing on this architecture are skipped.
const DENIED: &[&str] = &[
    // Namespaces and the mount API.
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    // Kernel attack surface that code execution does not need.
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "fanotify_init",
    "lookup_dcookie",
    "open_by_handle_at",
    "name_to_handle_at",
    "modify_ldt",
    "uselib",
    "_sysctl",
    "ustat",
    "sysfs",
    "nfsservctl",
    "vm86",
    "vm86old",
    // Other processes: tracing, their memory, their file descriptors.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "kcmp",
    "pidfd_getfd",
    // Machine control (needs capabilities the sandbox never holds, refused outright anyway).
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "syslog",
    "quotactl",
    "quotactl_fd",
    "vhangup",
    "iopl",
    "ioperm",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "sethostname",
    "setdomainname",
];

/// Namespace flags in `clone`'s flags word.
const CLONE_NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

/// `personality` values a normal program sets or queries (the same set container runtimes allow).
const PERSONALITY_ALLOWED: [u32; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541c;
const TIOCSETD: u32 = 0x5423;
const MSG_FASTOPEN: u32 = 0x2000_0000;
const SOCK_TYPE_MASK: u32 = 0xf;
const F_SETOWN: u32 = 8;
const F_SETOWN_EX: u32 = 15;
const FIOSETOWN: u32 = 0x8901;
const SIOCSPGRP: u32 = 0x8902;
const PRIO_PROCESS: u32 = 0;
const PRIO_PGRP: u32 = 1;
const IOPRIO_WHO_PROCESS: u32 = 1;
const IOPRIO_WHO_PGRP: u32 = 2;

/// What the filter must do for one sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SeccompPolicy {
    /// The policy allows some TCP, so TCP sockets may be created (Landlock filters the ports).
    pub(crate) tcp: bool,
    /// Hand `connect` (and `listen` when TCP is allowed) to the supervisor, which mediates what
    /// Landlock cannot: pathname UNIX sockets and TCP listen without bind.
    pub(crate) mediate: bool,
    /// Stand in for Landlock's signal scoping (ABI 6): every way to signal a process by pid or
    /// pidfd, to obtain a pidfd, or to make the kernel send `SIGIO`/`SIGURG` to an owner.
    pub(crate) scope_signals: bool,
    /// Stand in for Landlock's TCP bind rights (ABI 4): the supervisor carries out `bind`.
    pub(crate) emulate_bind: bool,
    /// Stand in for Landlock's truncate right (ABI 3): `truncate` goes to the supervisor,
    /// `open(O_RDONLY|O_TRUNC)` is refused and `openat2` (whose flags the filter cannot see)
    /// answers ENOSYS, so that the C library falls back to `openat`.
    pub(crate) guard_truncate: bool,
    /// Refuse opens with access mode 3, which Landlock before ABI 5 lets through unchecked (see
    /// `open_rules`).
    pub(crate) guard_ioctl_open: bool,
    /// More syscall numbers to refuse with EPERM.
    pub(crate) extra_deny: Vec<u32>,
    /// The policy has a filesystem view (`crate::fsview`): hand the path syscalls to the
    /// supervisor.
    pub(crate) view: bool,
    /// With a view, the address of the path the child passes to its own `execve` (the first
    /// program, which must not wait for the supervisor: it is suspended by `CLONE_VFORK` until
    /// then). A program that maps memory at that address and execs through it gets the kernel's
    /// answer, under Landlock.
    pub(crate) exec_ptr: u64,
}

/// The path syscalls a view routes to the supervisor (see `crate::fsview::calls`). Names missing on
/// this architecture (the ones without `at`, on aarch64) are skipped.
const VIEW_SYSCALLS: &[&str] = &[
    "open",
    "creat",
    "stat",
    "lstat",
    "access",
    "readlink",
    "mkdir",
    "rmdir",
    "unlink",
    "rename",
    "renameat",
    "link",
    "symlink",
    "chmod",
    "chown",
    "lchown",
    "utime",
    "utimes",
    "futimesat",
    "mknod",
    "openat",
    "openat2",
    "newfstatat",
    "statx",
    "faccessat",
    "faccessat2",
    "readlinkat",
    "mkdirat",
    "mknodat",
    "unlinkat",
    "renameat2",
    "linkat",
    "symlinkat",
    "fchmodat",
    "fchmodat2",
    "fchownat",
    "utimensat",
    "truncate",
    "chdir",
    "getcwd",
    "execve",
    "execveat",
    "statfs",
    "getxattr",
    "lgetxattr",
    "setxattr",
    "lsetxattr",
    "listxattr",
    "llistxattr",
    "removexattr",
    "lremovexattr",
    "bind",
];

/// The number of syscall `name` on this architecture.
pub(crate) fn syscall_number(name: &str) -> Option<u32> {
    lookup(name)
}

/// [`syscall_number`], usable in constants: the filter's own names are looked up while compiling
/// ([`nr!`]), because every `Sandbox::new` builds a filter (and every CLI run makes a sandbox),
/// and searching the table for each of its eighty-odd names took longer than laying the program
/// out.
const fn lookup(name: &str) -> Option<u32> {
    let mut i = 0;
    while i < SYSCALLS.len() {
        if same(SYSCALLS[i].0.as_bytes(), name.as_bytes()) {
            return Some(SYSCALLS[i].1);
        }
        i += 1;
    }
    None
}

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The number of a syscall named by a literal, found at compile time (`None` where this
/// architecture lacks it).
macro_rules! nr {
    ($name:literal) => {{
        const NR: Option<u32> = lookup($name);
        NR
    }};
}

/// [`DENIED`] as numbers, found at compile time.
const DENIED_NRS: [Option<u32>; DENIED.len()] = {
    let mut out = [None; DENIED.len()];
    let mut i = 0;
    while i < DENIED.len() {
        out[i] = lookup(DENIED[i]);
        i += 1;
    }
    out
};

/// [`VIEW_SYSCALLS`] as numbers, found at compile time.
const VIEW_NRS: [Option<u32>; VIEW_SYSCALLS.len()] = {
    let mut out = [None; VIEW_SYSCALLS.len()];
    let mut i = 0;
    while i < VIEW_SYSCALLS.len() {
        out[i] = lookup(VIEW_SYSCALLS[i]);
        i += 1;
    }
    out
};

impl SeccompPolicy {
    /// The rules, keyed by syscall number.
    pub(crate) fn rules(&self) -> BTreeMap<u32, SyscallRule> {
        let mut rules = BTreeMap::new();
        let eperm = Action::Errno(libc::EPERM as u16);
        for n in DENIED_NRS.into_iter().flatten() {
            rules.insert(n, SyscallRule::always(eperm));
        }
        if let Some(n) = nr!("clone3") {
            rules.insert(n, SyscallRule::always(Action::Errno(libc::ENOSYS as u16)));
        }
        for n in [nr!("setsid"), nr!("setpgid")].into_iter().flatten() {
            rules.insert(n, SyscallRule::always(Action::Errno(0)));
        }

        // CLONE_PARENT would make the new process a child of the host (the sandbox's parent),
        // which never reaps it: a zombie per call, forever. Process creation itself stays in the
        // kernel: the caps are sampled (see `Running::over_counts` for why).
        if let Some(n) = nr!("clone") {
            rules.insert(
                n,
                SyscallRule {
                    checks: vec![Check {
                        all: vec![Cond::AnySet {
                            arg: 0,
                            mask: CLONE_NS_FLAGS | libc::CLONE_PARENT as u32,
                        }],
                        action: eperm,
                    }],
                    default: Action::Allow,
                },
            );
        }

        if let Some(n) = nr!("ioctl") {
            rules.insert(
                n,
                SyscallRule {
                    checks: [TIOCSTI, TIOCLINUX, TIOCSETD]
                        .iter()
                        .map(|cmd| Check {
                            all: vec![Cond::eq(1, *cmd)],
                            action: eperm,
                        })
                        .collect(),
                    default: Action::Allow,
                },
            );
        }
        if let Some(n) = nr!("personality") {
            rules.insert(
                n,
                SyscallRule {
                    checks: PERSONALITY_ALLOWED
                        .iter()
                        .map(|p| Check {
                            all: vec![Cond::eq(0, *p)],
                            action: Action::Allow,
                        })
                        .collect(),
                    default: eperm,
                },
            );
        }

        let eacces = Action::Errno(libc::EACCES as u16);
        // UNIX sockets only of the connection-oriented kinds, whose `connect` the supervisor
        // mediates. A datagram socket (SOCK_DGRAM, or SOCK_RAW, which the kernel quietly turns
        // into one) could `sendto` a host service's path, an address the filter cannot see.
        let unix_kind = |kind: libc::c_int| Check {
            all: vec![
                Cond::eq(0, libc::AF_UNIX as u32),
                Cond::Eq {
                    arg: 1,
                    mask: SOCK_TYPE_MASK,
                    value: kind as u32,
                },
            ],
            action: Action::Allow,
        };
        let unix_only = [
            unix_kind(libc::SOCK_STREAM),
            unix_kind(libc::SOCK_SEQPACKET),
        ];
        let mut socket_checks = unix_only.to_vec();
        if self.tcp {
            for family in [libc::AF_INET, libc::AF_INET6] {
                for proto in [0, libc::IPPROTO_TCP] {
                    socket_checks.push(Check {
                        all: vec![
                            Cond::eq(0, family as u32),
                            Cond::Eq {
                                arg: 1,
                                mask: SOCK_TYPE_MASK,
                                value: libc::SOCK_STREAM as u32,
                            },
                            Cond::eq(2, proto as u32),
                        ],
                        action: Action::Allow,
                    });
                }
            }
        }
        if let Some(n) = nr!("socket") {
            rules.insert(
                n,
                SyscallRule {
                    checks: socket_checks,
                    default: eacces,
                },
            );
        }
        if let Some(n) = nr!("socketpair") {
            rules.insert(
                n,
                SyscallRule {
                    checks: unix_only.to_vec(),
                    default: eacces,
                },
            );
        }
        if self.tcp {
            // TCP Fast Open connects from sendto/sendmsg without a connect() for Landlock to see.
            for (n, flags_arg) in [
                (nr!("sendto"), 3),
                (nr!("sendmsg"), 2),
                (nr!("sendmmsg"), 3),
            ] {
                if let Some(n) = n {
                    rules.insert(
                        n,
                        SyscallRule {
                            checks: vec![Check {
                                all: vec![Cond::AnySet {
                                    arg: flags_arg,
                                    mask: MSG_FASTOPEN,
                                }],
                                action: Action::Errno(libc::EOPNOTSUPP as u16),
                            }],
                            default: Action::Allow,
                        },
                    );
                }
            }
        }

        if self.mediate {
            if let Some(n) = nr!("connect") {
                rules.insert(n, SyscallRule::always(Action::Notify));
            }
            if self.tcp {
                if let Some(n) = nr!("listen") {
                    rules.insert(n, SyscallRule::always(Action::Notify));
                }
            }
        }

        self.process_rules(&mut rules);
        if self.scope_signals {
            self.signal_rules(&mut rules);
        }
        let notify = if self.mediate { Action::Notify } else { eperm };
        if self.emulate_bind {
            if let Some(n) = nr!("bind") {
                rules.insert(n, SyscallRule::always(notify));
            }
        }
        if self.guard_truncate {
            if let Some(n) = nr!("truncate") {
                rules.insert(n, SyscallRule::always(notify));
            }
        }
        self.open_rules(&mut rules);
        if self.view && self.mediate {
            self.view_rules(&mut rules);
        }

        for n in &self.extra_deny {
            rules.insert(*n, SyscallRule::always(eperm));
        }
        rules
    }

    /// What Landlock does not check at `open` on older kernels. It asks for read or write rights
    /// according to the access mode, so an open that asks for neither needs no right at all: access
    /// mode 3 (an "ioctl only" open, which needs read and write permission by file mode) before ABI
    /// 5, whose device `ioctl` right is what covers it; and `O_TRUNC` with `O_RDONLY` or access mode
    /// 3, which truncates, before ABI 3. Those opens are refused, and `openat2` (whose flags sit in
    /// memory the filter cannot read) answers ENOSYS, so that the C library falls back to `openat`.
    fn open_rules(&self, rules: &mut BTreeMap<u32, SyscallRule>) {
        if !(self.guard_truncate || self.guard_ioctl_open) {
            return;
        }
        let eacces = Action::Errno(libc::EACCES as u16);
        let mode = |arg: u8, value: libc::c_int| Cond::Eq {
            arg,
            mask: libc::O_ACCMODE as u32,
            value: value as u32,
        };
        let trunc = |arg: u8| Cond::AnySet {
            arg,
            mask: libc::O_TRUNC as u32,
        };
        for (n, arg) in [(nr!("open"), 1), (nr!("openat"), 2)] {
            let Some(n) = n else { continue };
            let mut checks = Vec::new();
            if self.guard_ioctl_open {
                checks.push(Check {
                    all: vec![mode(arg, libc::O_ACCMODE)],
                    action: eacces,
                });
            }
            if self.guard_truncate {
                for m in [libc::O_RDONLY, libc::O_ACCMODE] {
                    checks.push(Check {
                        all: vec![mode(arg, m), trunc(arg)],
                        action: eacces,
                    });
                }
            }
            rules.insert(
                n,
                SyscallRule {
                    checks,
                    default: Action::Allow,
                },
            );
        }
        if let Some(n) = nr!("openat2") {
            rules.insert(n, SyscallRule::always(Action::Errno(libc::ENOSYS as u16)));
        }
    }

    /// A filesystem view: every path syscall goes to the supervisor, after the refusals above
    /// (which stay in the filter). Calls on a descriptor alone stay in the kernel: `AT_EMPTY_PATH`
    /// (glibc's `fstat` is `newfstatat(fd, "", AT_EMPTY_PATH)`) and `utimensat` with a NULL path. A
    /// non-empty path passed with `AT_EMPTY_PATH` is then resolved by the kernel, on the real
    /// filesystem, under Landlock.
    fn view_rules(&self, rules: &mut BTreeMap<u32, SyscallRule>) {
        const AT_EMPTY_PATH: u32 = 0x1000;
        let allow_empty = |arg: u8| Check {
            all: vec![Cond::AnySet {
                arg,
                mask: AT_EMPTY_PATH,
            }],
            action: Action::Allow,
        };
        for (name, n) in VIEW_SYSCALLS.iter().zip(VIEW_NRS) {
            let Some(n) = n else { continue };
            let extra = match *name {
                "newfstatat" | "faccessat2" | "fchmodat2" => vec![allow_empty(3)],
                "statx" => vec![allow_empty(2)],
                "fchownat" | "execveat" => vec![allow_empty(4)],
                "utimensat" => vec![Check {
                    all: Cond::null(1).to_vec(),
                    action: Action::Allow,
                }],
                "execve" => vec![Check {
                    all: vec![
                        Cond::eq(0, self.exec_ptr as u32),
                        Cond::High {
                            arg: 0,
                            value: (self.exec_ptr >> 32) as u32,
                        },
                    ],
                    action: Action::Allow,
                }],
                _ => Vec::new(),
            };
            let rule = rules
                .entry(n)
                .or_insert_with(|| SyscallRule::always(Action::Allow));
            if rule.default != Action::Allow && rule.default != Action::Notify {
                // Refused outright (openat2 without Landlock's truncate right): keep it so.
                continue;
            }
            rule.checks.extend(extra);
            rule.default = Action::Notify;
        }
    }

    /// Syscalls that change another process by pid, which Landlock does not scope at any ABI: a
    /// sandbox must not lower a host process's limits (`RLIMIT_CPU` ends it with `SIGXCPU`), nor
    /// renice it or pin it to a CPU. Calls on the caller itself (pid 0) stay in the kernel; the
    /// supervisor answers the rest (allowed for the caller's own pid or group only).
    fn process_rules(&self, rules: &mut BTreeMap<u32, SyscallRule>) {
        let notify = if self.mediate {
            Action::Notify
        } else {
            Action::Errno(libc::EPERM as u16)
        };
        let allow_when = |conds: Vec<Vec<Cond>>| SyscallRule {
            checks: conds
                .into_iter()
                .map(|all| Check {
                    all,
                    action: Action::Allow,
                })
                .collect(),
            default: notify,
        };
        if let Some(n) = nr!("prlimit64") {
            // pid 0, or no new limit (reading limits changes nothing).
            rules.insert(
                n,
                allow_when(vec![vec![Cond::eq(0, 0)], Cond::null(2).to_vec()]),
            );
        }
        if let Some(n) = nr!("setpriority") {
            rules.insert(
                n,
                allow_when(vec![
                    vec![Cond::eq(0, PRIO_PROCESS), Cond::eq(1, 0)],
                    vec![Cond::eq(0, PRIO_PGRP), Cond::eq(1, 0)],
                ]),
            );
        }
        if let Some(n) = nr!("ioprio_set") {
            rules.insert(
                n,
                allow_when(vec![
                    vec![Cond::eq(0, IOPRIO_WHO_PROCESS), Cond::eq(1, 0)],
                    vec![Cond::eq(0, IOPRIO_WHO_PGRP), Cond::eq(1, 0)],
                ]),
            );
        }
        for n in [
            nr!("sched_setaffinity"),
            nr!("sched_setparam"),
            nr!("sched_setscheduler"),
            nr!("sched_setattr"),
        ]
        .into_iter()
        .flatten()
        {
            rules.insert(n, allow_when(vec![vec![Cond::eq(0, 0)]]));
        }
    }

    /// Signal scoping without Landlock ABI 6. `kill(0, sig)` (the caller's own process group,
    /// which is the sandbox's: `setpgid`/`setsid` do nothing) stays in the kernel.
    fn signal_rules(&self, rules: &mut BTreeMap<u32, SyscallRule>) {
        let eperm = Action::Errno(libc::EPERM as u16);
        let notify = if self.mediate { Action::Notify } else { eperm };
        if let Some(n) = nr!("kill") {
            rules.insert(
                n,
                SyscallRule {
                    checks: vec![Check {
                        all: vec![Cond::eq(0, 0)],
                        action: Action::Allow,
                    }],
                    default: notify,
                },
            );
        }
        for n in [
            nr!("tkill"),
            nr!("tgkill"),
            nr!("rt_sigqueueinfo"),
            nr!("rt_tgsigqueueinfo"),
            nr!("pidfd_send_signal"),
            nr!("pidfd_open"),
        ]
        .into_iter()
        .flatten()
        {
            rules.insert(n, SyscallRule::always(notify));
        }
        // The owner of a descriptor receives SIGIO and SIGURG (or the F_SETSIG signal). F_SETOWN
        // passes the owner in a register, which the supervisor can check; F_SETOWN_EX,
        // FIOSETOWN and SIOCSPGRP pass it in memory that another thread could rewrite after the
        // check, so they are refused.
        if let Some(n) = nr!("fcntl") {
            rules.insert(
                n,
                SyscallRule {
                    checks: vec![
                        Check {
                            all: vec![Cond::eq(1, F_SETOWN)],
                            action: notify,
                        },
                        Check {
                            all: vec![Cond::eq(1, F_SETOWN_EX)],
                            action: eperm,
                        },
                    ],
                    default: Action::Allow,
                },
            );
        }
        if let Some(n) = nr!("ioctl") {
            if let Some(rule) = rules.get_mut(&n) {
                for cmd in [FIOSETOWN, SIOCSPGRP] {
                    rule.checks.push(Check {
                        all: vec![Cond::eq(1, cmd)],
                        action: eperm,
                    });
                }
            }
        }
    }

    /// Compiles the filter to BPF.
    pub(crate) fn compile(&self) -> Result<Vec<libc::sock_filter>, String> {
        bpf::compile(&self.spec())
    }

    fn spec(&self) -> FilterSpec {
        FilterSpec {
            arch: AUDIT_ARCH_NATIVE,
            nr_limit: NR_LIMIT,
            foreign_abi: Action::Errno(libc::ENOSYS as u16),
            rules: self.rules(),
            otherwise: Action::Allow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nr(name: &str) -> Option<u32> {
        syscall_number(name)
    }

    fn run(p: &SeccompPolicy, name: &str, args: [u64; 6]) -> u32 {
        let prog = p.compile().unwrap();
        bpf::interpret(&prog, AUDIT_ARCH_NATIVE, nr(name).unwrap(), args)
    }

    const ALLOW: u32 = 0x7fff_0000;
    const NOTIFY: u32 = 0x7fc0_0000;
    fn errno(e: i32) -> u32 {
        0x0005_0000 | e as u32
    }

    #[test]
    fn every_syscall_of_the_table_is_found_by_its_name() {
        for (name, number) in SYSCALLS {
            assert_eq!(syscall_number(name), Some(*number), "{name}");
        }
        assert_eq!(syscall_number("no_such_syscall"), None);
        assert_eq!(nr!("openat2"), syscall_number("openat2"));
    }

    #[test]
    fn every_denied_name_that_exists_is_refused() {
        let p = SeccompPolicy::default();
        for name in DENIED.iter().filter(|n| nr(n).is_some()) {
            assert_eq!(run(&p, name, [0; 6]), errno(libc::EPERM), "{name}");
        }
        assert_eq!(run(&p, "clone3", [0; 6]), errno(libc::ENOSYS));
        assert_eq!(run(&p, "read", [0; 6]), ALLOW);
    }

    #[test]
    fn clone_with_namespace_flags_or_clone_parent_is_refused_and_the_rest_stays_in_the_kernel() {
        let p = SeccompPolicy::default();
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(run(&p, "clone", [thread, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            run(&p, "clone", [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(run(&p, "fork", [0; 6]), ALLOW);
        let ns = (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64;
        assert_eq!(run(&p, "clone", [ns, 0, 0, 0, 0, 0]), errno(libc::EPERM));
        let parent = (libc::CLONE_PARENT | libc::SIGCHLD) as u64;
        assert_eq!(
            run(&p, "clone", [parent, 0, 0, 0, 0, 0]),
            errno(libc::EPERM)
        );
    }

    #[test]
    fn sockets_are_unix_only_unless_tcp_is_allowed() {
        let closed = SeccompPolicy::default();
        let tcp = SeccompPolicy {
            tcp: true,
            ..Default::default()
        };
        let stream = (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64;
        let dgram = libc::SOCK_DGRAM as u64;
        let inet = libc::AF_INET as u64;
        let inet6 = libc::AF_INET6 as u64;
        let unix = libc::AF_UNIX as u64;
        assert_eq!(run(&closed, "socket", [unix, stream, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            run(&closed, "socket", [unix, dgram, 0, 0, 0, 0]),
            errno(libc::EACCES)
        );
        assert_eq!(
            run(&closed, "socketpair", [unix, dgram, 0, 0, 0, 0]),
            errno(libc::EACCES)
        );
        assert_eq!(
            run(&closed, "socket", [inet, stream, 0, 0, 0, 0]),
            errno(libc::EACCES)
        );
        assert_eq!(run(&tcp, "socket", [inet, stream, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(&tcp, "socket", [inet6, stream, 6, 0, 0, 0]), ALLOW);
        assert_eq!(
            run(&tcp, "socket", [inet, dgram, 0, 0, 0, 0]),
            errno(libc::EACCES)
        );
        assert_eq!(
            run(&tcp, "socket", [inet, stream, 262, 0, 0, 0]),
            errno(libc::EACCES)
        );
        let raw = libc::SOCK_RAW as u64;
        assert_eq!(
            run(&tcp, "socket", [inet, raw, 0, 0, 0, 0]),
            errno(libc::EACCES)
        );
        assert_eq!(
            run(&tcp, "socket", [libc::AF_PACKET as u64, raw, 0, 0, 0, 0]),
            errno(libc::EACCES)
        );
        assert_eq!(
            run(&tcp, "sendto", [3, 0, 0, MSG_FASTOPEN as u64, 0, 0]),
            errno(libc::EOPNOTSUPP)
        );
    }

    #[test]
    fn personality_and_terminal_injection_are_refused() {
        let p = SeccompPolicy::default();
        assert_eq!(run(&p, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            run(&p, "personality", [0x0040000, 0, 0, 0, 0, 0]),
            errno(libc::EPERM)
        );
        assert_eq!(
            run(&p, "ioctl", [0, TIOCSTI as u64, 0, 0, 0, 0]),
            errno(libc::EPERM)
        );
        assert_eq!(run(&p, "ioctl", [0, 0x5401, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(&p, "setsid", [0; 6]), errno(0));
    }

    #[test]
    fn stand_ins_route_what_landlock_would_decide_and_nothing_else() {
        let old = SeccompPolicy {
            mediate: true,
            tcp: true,
            scope_signals: true,
            emulate_bind: true,
            guard_truncate: true,
            guard_ioctl_open: true,
            ..Default::default()
        };
        let me = 1234u64;
        assert_eq!(run(&old, "kill", [0, 15, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(&old, "kill", [me, 15, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(
            run(&old, "kill", [u64::from(u32::MAX), 9, 0, 0, 0, 0]),
            NOTIFY
        );
        for name in [
            "tkill",
            "tgkill",
            "rt_sigqueueinfo",
            "pidfd_send_signal",
            "pidfd_open",
        ] {
            assert_eq!(run(&old, name, [me, 0, 0, 0, 0, 0]), NOTIFY, "{name}");
        }
        assert_eq!(
            run(&old, "fcntl", [3, u64::from(F_SETOWN), me, 0, 0, 0]),
            NOTIFY
        );
        assert_eq!(
            run(&old, "fcntl", [3, u64::from(F_SETOWN_EX), 0, 0, 0, 0]),
            errno(libc::EPERM)
        );
        assert_eq!(
            run(&old, "fcntl", [3, libc::F_GETFL as u64, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            run(&old, "ioctl", [3, u64::from(FIOSETOWN), 0, 0, 0, 0]),
            errno(libc::EPERM)
        );
        assert_eq!(run(&old, "bind", [3, 0, 16, 0, 0, 0]), NOTIFY);
        assert_eq!(run(&old, "truncate", [0, 0, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(run(&old, "openat2", [0; 6]), errno(libc::ENOSYS));
        let trunc = (libc::O_RDONLY | libc::O_TRUNC) as u64;
        let write_trunc = (libc::O_WRONLY | libc::O_TRUNC) as u64;
        assert_eq!(
            run(&old, "openat", [0, 0, trunc, 0, 0, 0]),
            errno(libc::EACCES)
        );
        assert_eq!(run(&old, "openat", [0, 0, write_trunc, 0, 0, 0]), ALLOW);
        let ioctl_only = libc::O_ACCMODE as u64;
        assert_eq!(
            run(&old, "openat", [0, 0, ioctl_only, 0, 0, 0]),
            errno(libc::EACCES)
        );
        assert_eq!(
            run(&old, "open", [0, ioctl_only | trunc, 0, 0, 0, 0]),
            errno(libc::EACCES)
        );
        assert_eq!(
            run(&old, "openat", [0, 0, libc::O_RDWR as u64, 0, 0, 0]),
            ALLOW
        );
        // Control: where Landlock has these features, they stay in the kernel.
        let new = SeccompPolicy {
            mediate: true,
            tcp: true,
            ..Default::default()
        };
        assert_eq!(run(&new, "kill", [me, 15, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(&new, "bind", [3, 0, 16, 0, 0, 0]), ALLOW);
        assert_eq!(run(&new, "openat", [0, 0, trunc, 0, 0, 0]), ALLOW);
        assert_eq!(
            run(&new, "fcntl", [3, u64::from(F_SETOWN), me, 0, 0, 0]),
            ALLOW
        );
    }

    #[test]
    fn changing_another_process_goes_to_the_supervisor_on_every_kernel() {
        let p = SeccompPolicy {
            mediate: true,
            ..Default::default()
        };
        let (me, lim) = (1234u64, 0x7fff_0000_1000u64);
        assert_eq!(run(&p, "prlimit64", [0, 7, lim, 0, 0, 0]), ALLOW);
        assert_eq!(run(&p, "prlimit64", [me, 7, 0, lim, 0, 0]), ALLOW);
        assert_eq!(run(&p, "prlimit64", [me, 7, lim, 0, 0, 0]), NOTIFY);
        assert_eq!(run(&p, "setpriority", [0, 0, 5, 0, 0, 0]), ALLOW);
        assert_eq!(run(&p, "setpriority", [2, 0, 5, 0, 0, 0]), NOTIFY);
        assert_eq!(run(&p, "setpriority", [0, me, 5, 0, 0, 0]), NOTIFY);
        assert_eq!(run(&p, "sched_setaffinity", [0, 8, lim, 0, 0, 0]), ALLOW);
        assert_eq!(run(&p, "sched_setaffinity", [me, 8, lim, 0, 0, 0]), NOTIFY);
        assert_eq!(run(&p, "ioprio_set", [3, 0, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(run(&p, "ioprio_set", [1, 0, 0, 0, 0, 0]), ALLOW);
    }

    /// The policies a sandbox gets on this kernel generation and on the oldest one (every
    /// stand-in on), with and without TCP.
    fn variants() -> Vec<SeccompPolicy> {
        let new = SeccompPolicy {
            mediate: true,
            ..Default::default()
        };
        let old = SeccompPolicy {
            mediate: true,
            scope_signals: true,
            emulate_bind: true,
            guard_truncate: true,
            guard_ioctl_open: true,
            ..Default::default()
        };
        vec![
            new.clone(),
            SeccompPolicy { tcp: true, ..new },
            old.clone(),
            SeccompPolicy { tcp: true, ..old },
        ]
    }

    #[test]
    fn the_program_answers_every_syscall_number_as_the_rules_say() {
        for p in variants() {
            let spec = p.spec();
            let prog = bpf::compile(&spec).unwrap();
            for args in bpf::probe_args(&spec) {
                for nr in 0..1100u32 {
                    assert_eq!(
                        bpf::interpret(&prog, AUDIT_ARCH_NATIVE, nr, args),
                        bpf::evaluate(&spec, AUDIT_ARCH_NATIVE, nr, args),
                        "{p:?}: nr {nr} args {args:x?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_program_stays_short() {
        // The kernel JIT-compiles the program on every run, at about 0.13 µs per instruction on
        // the benchmark machine (docs/perf/startup.md). Before neighbouring syscalls shared
        // their leaves, these were 539, 604, 664 and 729 instructions; now 252, 307, 341, 392.
        for (p, bound) in variants().into_iter().zip([270, 330, 365, 420]) {
            let len = p.compile().unwrap().len();
            assert!(len <= bound, "{p:?}: {len} instructions, over {bound}");
        }
    }

    #[test]
    fn a_view_routes_path_syscalls_but_not_descriptor_calls_nor_the_first_exec() {
        let exec_ptr = 0x7f12_3456_7890u64;
        let view = SeccompPolicy {
            mediate: true,
            view: true,
            exec_ptr,
            ..Default::default()
        };
        let empty = 0x1000u64;
        for name in [
            "openat",
            "newfstatat",
            "statx",
            "chdir",
            "getcwd",
            "unlinkat",
            "bind",
        ] {
            assert_eq!(run(&view, name, [0; 6]), NOTIFY, "{name}");
        }
        assert_eq!(run(&view, "newfstatat", [3, 0, 0, empty, 0, 0]), ALLOW);
        assert_eq!(run(&view, "statx", [3, 0, empty, 0, 0, 0]), ALLOW);
        assert_eq!(run(&view, "utimensat", [3, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(&view, "utimensat", [3, 8, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(run(&view, "execve", [exec_ptr, 0, 0, 0, 0, 0]), ALLOW);
        // Same low half, another high half: not the child's own exec.
        let other = (exec_ptr & 0xffff_ffff) | (1 << 40);
        assert_eq!(run(&view, "execve", [other, 0, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(run(&view, "read", [0; 6]), ALLOW);
        assert_eq!(run(&view, "fchdir", [0; 6]), ALLOW);
        // The refusals of older kernels stay in the filter.
        let guarded = SeccompPolicy {
            guard_truncate: true,
            ..view.clone()
        };
        let trunc = (libc::O_RDONLY | libc::O_TRUNC) as u64;
        assert_eq!(
            run(&guarded, "openat", [0, 0, trunc, 0, 0, 0]),
            errno(libc::EACCES)
        );
        assert_eq!(run(&guarded, "openat", [0, 0, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(run(&guarded, "openat2", [0; 6]), errno(libc::ENOSYS));
        // Control: without a view none of these reach the supervisor.
        let plain = SeccompPolicy {
            mediate: true,
            ..Default::default()
        };
        for name in ["openat", "newfstatat", "chdir", "getcwd", "execve", "bind"] {
            assert_eq!(run(&plain, name, [0; 6]), ALLOW, "{name}");
        }
    }

    #[test]
    fn extra_deny_overrides_everything() {
        let p = SeccompPolicy {
            extra_deny: vec![nr("clone").unwrap(), nr("getpid").unwrap()],
            ..Default::default()
        };
        assert_eq!(run(&p, "getpid", [0; 6]), errno(libc::EPERM));
        assert_eq!(run(&p, "clone", [0; 6]), errno(libc::EPERM));
    }
}
