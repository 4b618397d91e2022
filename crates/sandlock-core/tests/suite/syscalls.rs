#![cfg(target_arch = "x86_64")]

//! Each denied syscall family: inside the sandbox the call is refused by the filter, and the same
//! call outside reaches the kernel (the control).

use std::collections::BTreeMap;

use super::support::*;

const PROBE: &str = include_str!("sysprobe.py");

fn probe_in_sandbox(names: &[&str]) -> BTreeMap<String, String> {
    let ws = Ws::new();
    let mut argv = vec!["python3", "-c", PROBE];
    argv.extend_from_slice(names);
    let o = run(&policy(&ws), &argv);
    parse(&out(&o), &err(&o))
}

fn probe_on_host(names: &[&str]) -> BTreeMap<String, String> {
    let o = std::process::Command::new("python3")
        .args(["-c", PROBE])
        .args(names)
        .output()
        .expect("host python3");
    parse(
        &String::from_utf8_lossy(&o.stdout),
        &String::from_utf8_lossy(&o.stderr),
    )
}

fn parse(stdout: &str, stderr: &str) -> BTreeMap<String, String> {
    let m: BTreeMap<String, String> = stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert!(!m.is_empty(), "probe printed nothing; stderr: {stderr}");
    m
}

/// Checks every probe gives `expected` inside, and that outside the same call got further.
fn assert_family(names: &[&str], expected: &str) {
    let inside = probe_in_sandbox(names);
    let outside = probe_on_host(names);
    for n in names {
        assert_eq!(
            inside.get(*n).map(String::as_str),
            Some(expected),
            "{n} inside the sandbox"
        );
        match outside.get(*n).map(String::as_str) {
            Some(o) if o != expected => {}
            other => skip(
                &format!("control for {n}"),
                &format!(
                    "inconclusive here (outside: {other:?}): an outer seccomp profile or missing privilege refuses it too"
                ),
            ),
        }
    }
}

#[test]
fn namespace_syscalls_are_refused() {
    assert_family(
        &[
            "unshare",
            "unshare_user",
            "clone_newuser",
            "clone_newnet",
            "setns",
        ],
        "EPERM",
    );
}

#[test]
fn mount_syscalls_are_refused() {
    assert_family(
        &["mount", "umount2", "pivot_root", "fsopen", "open_tree"],
        "EPERM",
    );
}

#[test]
fn kernel_attack_surface_is_refused() {
    assert_family(
        &[
            "io_uring_setup",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "keyctl",
            "add_key",
            "request_key",
            "open_by_handle_at",
        ],
        "EPERM",
    );
}

#[test]
fn cross_process_syscalls_are_refused() {
    assert_family(
        &["process_vm_readv", "kcmp", "pidfd_getfd", "process_madvise"],
        "EPERM",
    );
}

#[test]
fn machine_control_syscalls_are_refused() {
    assert_family(&["init_module", "kexec_load", "iopl"], "EPERM");
}

#[test]
fn personality_change_and_terminal_injection_are_refused() {
    assert_family(&["personality", "tiocsti"], "EPERM");
}

#[test]
fn clone3_answers_enosys() {
    assert_family(&["clone3"], "ENOSYS");
}

#[test]
fn x32_and_i386_syscall_abis_are_refused() {
    let inside = probe_in_sandbox(&["x32", "int80"]);
    assert_eq!(inside.get("x32").map(String::as_str), Some("ENOSYS"));
    assert_eq!(inside.get("int80").map(String::as_str), Some("ENOSYS"));
    // Controls run one at a time: int 0x80 kills the process on kernels without IA32 emulation.
    for n in ["x32", "int80"] {
        match probe_on_host(&[n]).get(n).map(String::as_str) {
            Some("ok") => {}
            other => skip(
                &format!("control for {n}"),
                &format!("this kernel refuses it too ({other:?})"),
            ),
        }
    }
}

#[test]
fn ordinary_syscalls_still_work() {
    let ws = Ws::new();
    let o = py(
        &policy(&ws),
        r#"
import os, threading, subprocess, tempfile
t = threading.Thread(target=lambda: None); t.start(); t.join()
print(subprocess.run(['echo', 'child'], capture_output=True, text=True).stdout.strip())
with tempfile.NamedTemporaryFile() as f:
    f.write(b'x')
print(os.getpid() > 0)
"#,
    );
    ok(&o);
    assert_eq!(out(&o), "child\nTrue");
}

#[test]
fn extra_deny_syscalls_are_refused() {
    let ws = Ws::new();
    let mut p = policy(&ws);
    p.extra_deny_syscalls.push("getpid".into());
    let code = "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\nr = libc.syscall(39)\nprint(errno.errorcode[ctypes.get_errno()] if r < 0 else 'ok')";
    let o = py(&p, code);
    ok(&o);
    assert_eq!(out(&o), "EPERM");
    ok(&py(&policy(&ws), "import os; assert os.getpid() > 0"));
}
