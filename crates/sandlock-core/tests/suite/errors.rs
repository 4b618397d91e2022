//! Clear errors: a typo is not an exit code, a missing path is named, bad values name their field.

use sandlock_core::{Command, Error, Policy, Reason, Sandbox, Stage};

use super::support::*;

#[test]
fn missing_program_is_an_execve_error_not_exit_127() {
    let ws = Ws::new();
    let sb = Sandbox::new(policy(&ws)).unwrap();
    let e = sb.run(Command::new(["pyhton3", "-c", "1"])).unwrap_err();
    assert_eq!(e.stage(), Some(Stage::Execve));
    assert_eq!(e.errno(), Some(libc::ENOENT));
    let msg = e.to_string();
    assert!(
        msg.starts_with(r#"execve("pyhton3"): ENOENT, not found in PATH ("#),
        "{msg}"
    );
    // Control: a program that exits 127 by itself is an outcome, not an error.
    let o = sh(&policy(&ws), "exit 127");
    assert_eq!((o.reason, o.exit_code), (Reason::Exited, Some(127)));
}

#[test]
fn program_outside_the_policy_is_an_eacces_error_naming_it() {
    let sb = Sandbox::new(Policy::default()).unwrap();
    let e = sb.run(Command::new(["/bin/true"])).unwrap_err();
    assert_eq!(
        (e.stage(), e.errno()),
        (Some(Stage::Execve), Some(libc::EACCES))
    );
    assert!(e.to_string().contains("/bin/true"), "{e}");
    assert!(e.to_string().contains("fs_readable"), "{e}");
}

#[test]
fn missing_path_names_the_field_and_path() {
    let p = Policy {
        fs_readable: vec!["/usr".into(), "/definitely/not/here".into()],
        ..Policy::default()
    };
    let Err(Error::Policy(e)) = Sandbox::new(p) else {
        panic!("expected a policy error");
    };
    assert_eq!(e.field, "fs_readable[1]");
    assert_eq!(e.value, "/definitely/not/here");
    assert!(e.reason.contains("no such file"), "{e}");
}

#[test]
fn net_rules_that_name_no_host_are_rejected_with_the_field() {
    for (allow, deny, field, says) in [
        (
            vec!["exa mple.com:443"],
            vec![],
            "net_allow[0]",
            "not a host name",
        ),
        (
            vec![":443"],
            vec!["10.0.0.0/33"],
            "net_deny[0]",
            "prefix length",
        ),
        (vec!["example.com:0"], vec![], "net_allow[0]", "port 0"),
    ] {
        let p = Policy {
            net_allow: allow.iter().map(|s| s.to_string()).collect(),
            net_deny: deny.iter().map(|s| s.to_string()).collect(),
            ..Policy::default()
        };
        let Err(Error::Policy(e)) = Sandbox::new(p) else {
            panic!("expected a policy error for {allow:?} {deny:?}");
        };
        assert_eq!(e.field, field);
        assert!(e.reason.contains(says), "{e}");
    }
}

#[test]
fn unknown_syscall_name_is_rejected() {
    let p = Policy {
        extra_deny_syscalls: vec!["frobnicate".into()],
        ..Policy::default()
    };
    let Err(Error::Policy(e)) = Sandbox::new(p) else {
        panic!("expected a policy error");
    };
    assert_eq!(e.field, "extra_deny_syscalls[0]");
}

#[test]
fn empty_command_and_nul_bytes_are_rejected() {
    let sb = Sandbox::new(Policy::default()).unwrap();
    assert!(matches!(
        sb.run(Command::new(Vec::<String>::new())),
        Err(Error::Policy(_))
    ));
    let Err(Error::Policy(e)) = sb.run(Command::new(["/bin/echo", "a\0b"])) else {
        panic!("expected a policy error");
    };
    assert_eq!(e.field, "argv[1]");
}

#[test]
fn huge_argv_is_a_clear_e2big() {
    let ws = Ws::new();
    let big = "x".repeat(200_000);
    let e = Sandbox::new(policy(&ws))
        .unwrap()
        .run(Command::new(["/bin/echo", big.as_str()]))
        .unwrap_err();
    assert_eq!(
        (e.stage(), e.errno()),
        (Some(Stage::Execve), Some(libc::E2BIG))
    );
    // Control: a large but legal argument works.
    let o = run(&policy(&ws), &["/bin/echo", &"y".repeat(100_000)]);
    ok(&o);
}

#[test]
fn invalid_utf8_output_is_kept_as_bytes() {
    let ws = Ws::new();
    let o = py(
        &policy(&ws),
        "import sys; sys.stdout.buffer.write(b'\\xff\\xfe ok')",
    );
    ok(&o);
    assert_eq!(o.stdout, b"\xff\xfe ok");
}

#[test]
fn a_kernel_without_landlock_fails_closed_unless_best_effort() {
    let ws = Ws::new();
    let none = sandlock_core::KernelSupport::detect().limit_landlock_abi(0);
    let e = match Sandbox::with_kernel_support(policy(&ws), none) {
        Err(e) => e,
        Ok(_) => panic!("a kernel without Landlock must fail closed"),
    };
    assert_eq!(e.stage(), Some(Stage::Unsupported));
    let msg = e.to_string();
    assert!(
        msg.contains("filesystem") && msg.contains("best_effort"),
        "{msg}"
    );
    let mut p = policy(&ws);
    p.best_effort = true;
    let sb = Sandbox::with_kernel_support(p, none).unwrap();
    let o = sb.run(Command::new(["/bin/true"])).unwrap();
    assert!(o.success());
    assert!(
        o.not_enforced
            .contains(&sandlock_core::Protection::Filesystem)
    );
    // Control: Landlock ABI 1 is enough for the default policy, every protection enforced.
    let old = sandlock_core::KernelSupport::detect().limit_landlock_abi(1);
    let sb = Sandbox::with_kernel_support(policy(&ws), old).unwrap();
    assert!(sb.not_enforced().is_empty());
    ok(&sb.run(Command::new(["/bin/true"])).unwrap());
}

#[test]
fn older_landlock_runs_fully_protected_with_the_supervisor_standing_in() {
    use sandlock_core::{Mechanism, Protection};
    let ws = Ws::new();
    let k = sandlock_core::KernelSupport::detect();
    let mut p = policy(&ws);
    p.net_allow.push(":443".into());
    let sb = Sandbox::with_kernel_support(p.clone(), k.limit_landlock_abi(2)).unwrap();
    assert!(sb.not_enforced().is_empty());
    let by = |sb: &Sandbox, prot: Protection| {
        sb.enforcement()
            .iter()
            .find(|e| e.protection == prot)
            .map(|e| e.mechanism)
    };
    for prot in [
        Protection::FilesystemTruncate,
        Protection::NetworkTcp,
        Protection::ScopeAbstractUnix,
        Protection::ScopeSignal,
    ] {
        assert_eq!(by(&sb, prot), Some(Mechanism::Supervisor), "{prot}");
    }
    assert_eq!(
        by(&sb, Protection::FilesystemIoctl),
        Some(Mechanism::Seccomp)
    );
    ok(&sb.run(Command::new(["/bin/true"])).unwrap());
    // Control: where the kernel has the feature, Landlock enforces it.
    if k.landlock_abi >= 6 {
        let sb = Sandbox::with_kernel_support(p, k).unwrap();
        assert_eq!(by(&sb, Protection::ScopeSignal), Some(Mechanism::Landlock));
        assert_eq!(by(&sb, Protection::NetworkTcp), Some(Mechanism::Landlock));
    }
}

#[test]
fn a_read_only_device_grant_needs_landlock_abi_5() {
    // /dev/kmsg is readable by everyone on common systems, and its ioctls are not harmless.
    let kmsg = std::path::Path::new("/dev/kmsg");
    if std::fs::File::open(kmsg).is_err() {
        skip("read-only device grant", "/dev/kmsg cannot be opened here");
        return;
    }
    let ws = Ws::new();
    let mut p = policy(&ws);
    p.fs_readable.push(kmsg.into());
    let old = sandlock_core::KernelSupport::detect().limit_landlock_abi(4);
    let msg = match Sandbox::with_kernel_support(p.clone(), old) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a risky read-only device grant must fail closed before ABI 5"),
    };
    assert!(
        msg.contains("filesystem_ioctl") && msg.contains("/dev/kmsg"),
        "{msg}"
    );
    // Control: granted writable (ioctls allowed, as Landlock would allow them), it runs.
    let mut w = policy(&ws);
    w.fs_writable.push(kmsg.into());
    assert!(Sandbox::with_kernel_support(w, old).is_ok());
}
