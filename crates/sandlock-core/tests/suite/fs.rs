//! Filesystem confinement (Landlock): every attempt beside its control.

use super::support::*;

/// A secret file outside any policy path.
fn secret() -> Ws {
    let s = Ws::new();
    std::fs::write(s.join("secret.txt"), "top secret\n").unwrap();
    s
}

#[test]
fn read_outside_policy_is_denied() {
    let (ws, sec) = (Ws::new(), secret());
    let o = sh(&policy(&ws), &format!("cat {}", sec.s("secret.txt")));
    refused(&o);
    assert!(err(&o).contains("Permission denied"), "{}", err(&o));
    assert!(!out(&o).contains("top secret"));
}

#[test]
fn read_inside_readable_path_succeeds() {
    let (ws, sec) = (Ws::new(), secret());
    let mut p = policy(&ws);
    p.fs_readable.push(sec.path().to_path_buf());
    let o = sh(&p, &format!("cat {}", sec.s("secret.txt")));
    ok(&o);
    assert_eq!(out(&o), "top secret");
}

#[test]
fn write_outside_workspace_is_denied() {
    let (ws, other) = (Ws::new(), Ws::new());
    let o = sh(&policy(&ws), &format!("echo x > {}", other.s("new.txt")));
    refused(&o);
    assert!(!other.join("new.txt").exists());
}

#[test]
fn write_inside_workspace_succeeds() {
    let ws = Ws::new();
    let o = sh(
        &policy(&ws),
        &format!("echo hello > {0} && cat {0}", ws.s("new.txt")),
    );
    ok(&o);
    assert_eq!(
        std::fs::read_to_string(ws.join("new.txt")).unwrap(),
        "hello\n"
    );
}

#[test]
fn readable_path_is_not_writable() {
    let (ws, sec) = (Ws::new(), secret());
    let mut p = policy(&ws);
    p.fs_readable.push(sec.path().to_path_buf());
    refused(&sh(&p, &format!("echo x >> {}", sec.s("secret.txt"))));
    refused(&sh(&p, &format!("rm {}", sec.s("secret.txt"))));
    refused(&sh(&p, &format!("touch {}", sec.s("other.txt"))));
    assert_eq!(
        std::fs::read_to_string(sec.join("secret.txt")).unwrap(),
        "top secret\n"
    );
}

#[test]
fn truncating_a_readable_file_is_denied() {
    let (ws, sec) = (Ws::new(), secret());
    let mut p = policy(&ws);
    p.fs_readable.push(sec.path().to_path_buf());
    let code = format!("import os; os.truncate({:?}, 0)", sec.s("secret.txt"));
    refused(&py(&p, &code));
    assert_eq!(
        std::fs::read_to_string(sec.join("secret.txt")).unwrap(),
        "top secret\n"
    );
    std::fs::write(ws.join("mine.txt"), "abc").unwrap();
    ok(&py(
        &p,
        &format!("import os; os.truncate({:?}, 0)", ws.s("mine.txt")),
    ));
    assert_eq!(std::fs::read(ws.join("mine.txt")).unwrap().len(), 0);
}

#[test]
fn symlink_in_workspace_pointing_outside_is_denied() {
    let (ws, sec) = (Ws::new(), secret());
    std::os::unix::fs::symlink(sec.join("secret.txt"), ws.join("link")).unwrap();
    let o = sh(&policy(&ws), &format!("cat {}", ws.s("link")));
    refused(&o);
    assert!(!out(&o).contains("top secret"));
    // The sandbox creating the link itself does not help either.
    let o = sh(
        &policy(&ws),
        &format!(
            "ln -s {} {} && cat {}",
            sec.s("secret.txt"),
            ws.s("mine"),
            ws.s("mine")
        ),
    );
    refused(&o);
    assert!(!out(&o).contains("top secret"));
}

#[test]
fn symlink_inside_workspace_succeeds() {
    let ws = Ws::new();
    std::fs::write(ws.join("real.txt"), "inside\n").unwrap();
    std::os::unix::fs::symlink(ws.join("real.txt"), ws.join("link")).unwrap();
    let o = sh(&policy(&ws), &format!("cat {}", ws.s("link")));
    ok(&o);
    assert_eq!(out(&o), "inside");
}

#[test]
fn hardlinking_an_outside_file_into_the_workspace_is_denied() {
    let (ws, sec) = (Ws::new(), secret());
    let o = sh(
        &policy(&ws),
        &format!(
            "ln {} {} && cat {}",
            sec.s("secret.txt"),
            ws.s("hard"),
            ws.s("hard")
        ),
    );
    refused(&o);
    assert!(!ws.join("hard").exists());
}

#[test]
fn hardlinking_inside_the_workspace_succeeds() {
    let ws = Ws::new();
    std::fs::create_dir(ws.join("sub")).unwrap();
    std::fs::write(ws.join("a.txt"), "a\n").unwrap();
    let o = sh(
        &policy(&ws),
        &format!(
            "ln {} {} && cat {}",
            ws.s("a.txt"),
            ws.s("sub/b.txt"),
            ws.s("sub/b.txt")
        ),
    );
    if sandlock_core::KernelSupport::detect().landlock_abi == 1 {
        // Landlock ABI 1 refuses every link into another directory (EXDEV), even inside the
        // workspace; a link within one directory still works.
        refused(&o);
        assert!(err(&o).contains("cross-device"), "{}", err(&o));
        let o = sh(
            &policy(&ws),
            &format!(
                "ln {} {} && cat {}",
                ws.s("a.txt"),
                ws.s("c.txt"),
                ws.s("c.txt")
            ),
        );
        ok(&o);
        assert_eq!(out(&o), "a");
        return;
    }
    ok(&o);
    assert_eq!(out(&o), "a");
}

#[test]
fn dotdot_out_of_the_workspace_is_denied() {
    let ws = Ws::new();
    let parent_secret = ws.path().parent().unwrap().join(format!(
        "{}-sibling-secret",
        ws.path().file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&parent_secret, "sibling\n").unwrap();
    let name = parent_secret
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let o = sh(
        &policy(&ws),
        &format!("cat {}/../{name}", ws.path().display()),
    );
    let _ = std::fs::remove_file(&parent_secret);
    refused(&o);
    assert!(!out(&o).contains("sibling"));
}

#[test]
fn dotdot_within_the_workspace_succeeds() {
    let ws = Ws::new();
    std::fs::create_dir(ws.join("sub")).unwrap();
    std::fs::write(ws.join("f.txt"), "f\n").unwrap();
    let o = sh(
        &policy(&ws),
        &format!("cat {}/sub/../f.txt", ws.path().display()),
    );
    ok(&o);
    assert_eq!(out(&o), "f");
}

#[test]
fn proc_self_root_does_not_bypass_the_policy() {
    let (ws, sec) = (Ws::new(), secret());
    let mut p = policy(&ws);
    p.fs_readable.push("/proc".into());
    let o = sh(&p, &format!("cat /proc/self/root{}", sec.s("secret.txt")));
    refused(&o);
    assert!(!out(&o).contains("top secret"));
    // Control: the same route to a readable file works.
    let o = sh(
        &p,
        "cat /proc/self/root/etc/hosts > /dev/null && echo readable",
    );
    ok(&o);
}

#[test]
fn host_process_environment_via_proc_is_denied() {
    let ws = Ws::new();
    let mut p = policy(&ws);
    p.fs_readable.push("/proc".into());
    let me = std::process::id();
    let o = sh(&p, &format!("cat /proc/{me}/environ"));
    refused(&o);
    let o = sh(&p, &format!("cat /proc/{me}/mem"));
    refused(&o);
    // Control: the sandbox can read its own.
    ok(&sh(&p, "cat /proc/self/environ > /dev/null"));
}

#[test]
fn system_preset_does_not_expose_home_root_or_etc_shadow() {
    let ws = Ws::new();
    let p = policy(&ws);
    for file in ["/etc/shadow", "/etc/sudoers", "/etc/hostname"] {
        refused(&sh(&p, &format!("cat {file}")));
    }
    for dir in ["/root", "/home", "/var/log", "/etc"] {
        refused(&sh(&p, &format!("ls {dir}")));
    }
    // Control: what the preset is for works.
    ok(&sh(
        &p,
        "ls /usr/bin > /dev/null && cat /etc/passwd > /dev/null",
    ));
}

#[test]
fn system_preset_runs_python_sh_and_node() {
    let ws = Ws::new();
    let p = policy(&ws);
    let o = py(
        &p,
        "import json, ssl, sqlite3; print(json.dumps({'ok': 6*7}))",
    );
    ok(&o);
    assert_eq!(out(&o), r#"{"ok": 42}"#);
    ok(&sh(&p, "echo $((6*7)) | grep -q 42"));
    if which("node") {
        let o = run(&p, &["node", "-e", "console.log(6*7)"]);
        ok(&o);
        assert_eq!(out(&o), "42");
    } else {
        skip(
            "system_preset_runs_python_sh_and_node (node part)",
            "node is not installed",
        );
    }
}

/// Whether `cmd` is on the sandbox's default PATH.
fn which(cmd: &str) -> bool {
    sandlock_core::DEFAULT_PATH
        .split(':')
        .any(|d| std::path::Path::new(d).join(cmd).exists())
}
