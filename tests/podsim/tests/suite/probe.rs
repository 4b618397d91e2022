//! `podsim -- podsim probe`: what a restricted pod forbids is forbidden, what it allows works; and
//! the same probe without podsim shows each refused call reaching the kernel.

use super::support::{expect, probe_bare, probe_under_podsim, require_root};

const NO_CAPS: &str = "0000000000000000";

/// Probe checks refused by RuntimeDefault, each with the errno podsim must give.
const REFUSED: &[(&str, &str)] = &[
    ("clone3", "ENOSYS"),
    ("unshare_0", "EPERM"),
    ("unshare_newuser", "EPERM"),
    ("clone_newns", "EPERM"),
    ("clone_newuser", "EPERM"),
    ("clone_newpid", "EPERM"),
    ("clone_newnet", "EPERM"),
    ("clone_newtime", "EPERM"),
    ("setns", "EPERM"),
    ("mount", "EPERM"),
    ("umount2", "EPERM"),
    ("pivot_root", "EPERM"),
    ("chroot", "EPERM"),
    ("fsopen", "EPERM"),
    ("fsconfig", "EPERM"),
    ("fsmount", "EPERM"),
    ("fspick", "EPERM"),
    ("move_mount", "EPERM"),
    ("open_tree", "EPERM"),
    ("mount_setattr", "EPERM"),
    ("pidfd_getfd", "EPERM"),
    ("kcmp", "EPERM"),
    ("process_madvise", "EPERM"),
    ("bpf", "EPERM"),
    ("keyctl", "EPERM"),
    ("add_key", "EPERM"),
    ("request_key", "EPERM"),
    ("perf_event_open", "EPERM"),
    ("userfaultfd", "EPERM"),
    ("io_uring_setup", "EPERM"),
    ("io_uring_enter", "EPERM"),
    ("io_uring_register", "EPERM"),
    ("personality_0x400000", "EPERM"),
    ("reboot", "EPERM"),
    ("finit_module", "EPERM"),
    ("syslog", "EPERM"),
    ("open_by_handle_at", "EPERM"),
    ("socket_af_vsock", "EPERM"),
];

#[test]
fn identity_is_uid_1000_without_any_capability_under_podsim() {
    require_root!();
    expect(
        probe_under_podsim(),
        &[
            ("uid", "1000"),
            ("gid", "1000"),
            ("groups", ""),
            ("CapInh", NO_CAPS),
            ("CapPrm", NO_CAPS),
            ("CapEff", NO_CAPS),
            ("CapBnd", NO_CAPS),
            ("CapAmb", NO_CAPS),
        ],
    );
}

#[test]
fn identity_is_root_with_capabilities_without_podsim() {
    require_root!();
    let bare = probe_bare();
    expect(bare, &[("uid", "0")]);
    assert_ne!(bare.get("CapEff").map(String::as_str), Some(NO_CAPS));
}

#[test]
fn no_new_privs_and_a_seccomp_filter_are_set_under_podsim() {
    require_root!();
    expect(
        probe_under_podsim(),
        &[("NoNewPrivs", "1"), ("Seccomp", "2")],
    );
}

#[test]
fn root_filesystem_is_read_only_under_podsim() {
    require_root!();
    expect(probe_under_podsim(), &[("write_etc", "EROFS")]);
}

#[test]
fn etc_is_writable_without_podsim() {
    require_root!();
    expect(probe_bare(), &[("write_etc", "ok")]);
}

#[test]
fn tmp_dev_shm_dev_null_and_proc_stay_writable_under_podsim() {
    require_root!();
    expect(
        probe_under_podsim(),
        &[
            ("write_tmp", "ok"),
            ("write_dev_shm", "ok"),
            ("write_dev_null", "ok"),
            ("write_proc_self", "ok"),
        ],
    );
}

#[test]
fn clone3_is_enosys_under_podsim() {
    require_root!();
    expect(probe_under_podsim(), &[("clone3", "ENOSYS")]);
}

#[test]
fn clone3_reaches_kernel_without_podsim() {
    require_root!();
    // The probe's invalid exit signal makes a reached clone3 fail with EINVAL.
    expect(probe_bare(), &[("clone3", "EINVAL")]);
}

#[test]
fn namespace_creation_is_eperm_under_podsim() {
    require_root!();
    let names = [
        "unshare_0",
        "unshare_newuser",
        "clone_newns",
        "clone_newuser",
        "clone_newpid",
        "clone_newnet",
        "clone_newtime",
        "setns",
    ];
    let expected: Vec<_> = names.iter().map(|n| (*n, "EPERM")).collect();
    expect(probe_under_podsim(), &expected);
}

#[test]
fn mount_syscalls_and_the_new_mount_api_are_eperm_under_podsim() {
    require_root!();
    let names = [
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
    ];
    let expected: Vec<_> = names.iter().map(|n| (*n, "EPERM")).collect();
    expect(probe_under_podsim(), &expected);
}

#[test]
fn cross_process_and_kernel_surface_syscalls_are_eperm_under_podsim() {
    require_root!();
    let names = [
        "pidfd_getfd",
        "kcmp",
        "process_madvise",
        "bpf",
        "keyctl",
        "add_key",
        "request_key",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "reboot",
        "finit_module",
        "syslog",
        "open_by_handle_at",
        "socket_af_vsock",
    ];
    let expected: Vec<_> = names.iter().map(|n| (*n, "EPERM")).collect();
    expect(probe_under_podsim(), &expected);
}

#[test]
fn personality_change_is_eperm_but_query_works_under_podsim() {
    require_root!();
    expect(
        probe_under_podsim(),
        &[
            ("personality_0x400000", "EPERM"),
            ("personality_query", "ok"),
        ],
    );
}

#[test]
#[cfg(target_arch = "x86_64")]
fn foreign_syscall_abis_are_eperm_under_podsim() {
    require_root!();
    expect(
        probe_under_podsim(),
        &[("i386_getpid", "EPERM"), ("x32_getpid", "EPERM")],
    );
}

#[test]
fn sandlock_dependencies_work_under_podsim() {
    require_root!();
    let probe = probe_under_podsim();
    let landlock = probe
        .get("landlock_create_ruleset")
        .cloned()
        .unwrap_or_default();
    assert!(landlock.starts_with("ok:abi="), "landlock: {landlock}");
    expect(
        probe,
        &[
            ("seccomp_get_action_avail", "ok"),
            ("seccomp_new_listener", "ok"),
            // No notification has id 0: ENOENT proves the ioctl reached the kernel.
            ("ioctl_notif_id_valid", "ENOENT"),
            ("scm_rights", "ok"),
            ("pidfd_open", "ok"),
            ("pidfd_send_signal", "ok"),
            ("clone_pidfd", "ok"),
            // CLONE_THREAD without CLONE_SIGHAND: EINVAL from the kernel, not EPERM from the filter.
            ("clone_vm_vfork", "EINVAL"),
            ("fork", "ok"),
            ("ptrace_child", "ok"),
            ("process_vm_readv_child", "ok"),
            ("proc_pid_mem_child", "ok"),
            ("socket_af_unix", "ok"),
            ("memfd_create", "ok"),
            ("openat2", "ok"),
            ("statx", "ok"),
            ("faccessat2", "ok"),
            ("close_range", "ok"),
            ("prlimit64", "ok"),
            ("inotify_init1", "ok"),
            ("epoll_create1", "ok"),
        ],
    );
}

#[test]
fn pidfd_getfd_reaches_kernel_without_podsim() {
    require_root!();
    expect(probe_bare(), &[("pidfd_getfd", "EBADF")]);
}

#[test]
fn every_refused_syscall_reaches_kernel_without_podsim() {
    require_root!();
    let bare = probe_bare();
    let filtered: Vec<String> = REFUSED
        .iter()
        .filter(|(name, want)| bare.get(*name).map(String::as_str) == Some(*want))
        .map(|(name, want)| format!("{name}: {want} even without podsim"))
        .collect();
    assert!(filtered.is_empty(), "{}", filtered.join("\n"));
    let missing: Vec<&str> = REFUSED
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !bare.contains_key(*name))
        .collect();
    assert!(missing.is_empty(), "not probed: {missing:?}");
}

#[test]
fn every_refused_syscall_is_refused_under_podsim() {
    require_root!();
    expect(probe_under_podsim(), REFUSED);
}
