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
fn host_rules_in_net_allow_are_rejected() {
    let p = Policy {
        net_allow: vec!["example.com:443".into()],
        ..Policy::default()
    };
    let Err(Error::Policy(e)) = Sandbox::new(p) else {
        panic!("expected a policy error");
    };
    assert_eq!(e.field, "net_allow[0]");
    assert!(e.reason.contains("not supported"), "{e}");
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
fn unsupported_protection_fails_closed_unless_best_effort() {
    let ws = Ws::new();
    let old = sandlock_core::KernelSupport::detect().limit_landlock_abi(3);
    let e = match Sandbox::with_kernel_support(policy(&ws), old) {
        Err(e) => e,
        Ok(_) => panic!("a kernel without signal scoping must fail closed"),
    };
    assert_eq!(e.stage(), Some(Stage::Unsupported));
    let msg = e.to_string();
    assert!(
        msg.contains("scope_signal") && msg.contains("best_effort"),
        "{msg}"
    );
    let mut p = policy(&ws);
    p.best_effort = true;
    let sb = Sandbox::with_kernel_support(p, old).unwrap();
    let o = sb.run(Command::new(["/bin/true"])).unwrap();
    assert!(o.success());
    assert!(
        o.not_enforced
            .contains(&sandlock_core::Protection::ScopeSignal)
    );
    assert!(
        o.not_enforced
            .contains(&sandlock_core::Protection::FilesystemIoctl)
    );
}
