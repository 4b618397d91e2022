//! Running commands under podsim: exit status, the filesystem view, identity checks and errors.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use super::support::{TempDir, parse_map, podsim, require_root, run, text};

#[test]
fn exit_status_mirrors_the_command() {
    require_root!();
    let output = run(&["--", "sh", "-c", "exit 7"]);
    assert_eq!(output.status.code(), Some(7), "{:?}", text(&output));
}

#[test]
fn rw_path_is_writable_and_its_sibling_stays_read_only() {
    require_root!();
    // Outside /tmp, on the read-only root; both world-writable so only the mount can refuse.
    let base = scratch_under_target("rw");
    let (inner, sibling) = (base.join("inner"), base.join("sibling"));
    for dir in [&inner, &sibling] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let script = format!(
        "touch {0}/ok && echo inner-ok; touch {1}/no 2>&1",
        inner.display(),
        sibling.display()
    );
    let output = run(&["--rw", inner.to_str().unwrap(), "--", "sh", "-c", &script]);
    let (stdout, stderr) = text(&output);
    let _ = std::fs::remove_dir_all(&base);
    assert!(
        stdout.contains("inner-ok"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("Read-only file system"), "stdout: {stdout}");
}

#[test]
fn host_tmp_stays_shared_and_writable_by_default() {
    require_root!();
    let dir = TempDir::new("shared-tmp", 0o777);
    std::fs::write(dir.0.join("from-host"), "hello").unwrap();
    let script = format!("cat {0}/from-host && echo back > {0}/from-pod", dir.str());
    let output = run(&["--", "sh", "-c", &script]);
    assert_eq!(text(&output).0, "hello");
    assert_eq!(
        std::fs::read_to_string(dir.0.join("from-pod")).unwrap(),
        "back\n"
    );
}

#[test]
fn fresh_tmp_is_an_empty_sticky_tmpfs() {
    require_root!();
    let _marker = TempDir::new("fresh-tmp-marker", 0o755);
    let output = run(&[
        "--fresh-tmp",
        "--",
        "sh",
        "-c",
        "stat -c %a /tmp; stat -f -c %T /tmp; ls -A /tmp | wc -l; touch /tmp/x && echo ok",
    ]);
    let (stdout, stderr) = text(&output);
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    assert_eq!(lines, ["1777", "tmpfs", "0", "ok"], "stderr: {stderr}");
}

#[test]
fn mounts_do_not_leak_to_the_host() {
    require_root!();
    let before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let output = run(&["--fresh-tmp", "--", "true"]);
    assert!(output.status.success(), "{:?}", text(&output));
    let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(before, after);
    let etc = std::fs::metadata("/etc").unwrap();
    assert!(!etc.permissions().readonly());
}

#[test]
fn unsearchable_working_directory_is_named_with_the_fix() {
    require_root!();
    let dir = TempDir::new("cwd-0700", 0o700);
    let output = Command::new(podsim())
        .args(["--", "true"])
        .current_dir(&dir.0)
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "podsim: {} is not searchable by uid 1000 (mode 0700",
            dir.str()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("chmod o+x {}", dir.str())),
        "{stderr}"
    );
}

#[test]
fn searchable_working_directory_is_kept() {
    require_root!();
    let dir = TempDir::new("cwd-0755", 0o755);
    let output = Command::new(podsim())
        .args(["--", "pwd"])
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert_eq!(text(&output).0.trim(), dir.str());
}

#[test]
fn program_behind_an_unsearchable_directory_is_named_with_the_fix() {
    require_root!();
    let dir = TempDir::new("prog-0700", 0o700);
    let script = dir.0.join("hello");
    std::fs::write(&script, "#!/bin/sh\necho hello\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = run(&["--", script.to_str().unwrap()]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains(&format!("{} is not searchable by uid 1000", dir.str())),
        "{stderr}"
    );
    // Control: the same program runs as the directory's owner.
    let output = run(&["--uid", "0", "--gid", "0", "--", script.to_str().unwrap()]);
    assert_eq!(text(&output).0, "hello\n");
}

#[test]
fn missing_command_exits_127() {
    require_root!();
    let output = run(&["--", "podsim-no-such-command"]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(127), "{stderr}");
    assert!(
        stderr.contains("podsim-no-such-command: command not found"),
        "{stderr}"
    );
}

#[test]
fn home_falls_back_to_tmp_when_the_new_uid_cannot_read_it() {
    require_root!();
    let private = TempDir::new("home-0700", 0o700);
    let open = TempDir::new("home-0755", 0o755);
    let home_of = |home: &str| {
        let output = Command::new(podsim())
            .args(["--", "sh", "-c", "echo $HOME"])
            .env("HOME", home)
            .current_dir("/")
            .output()
            .unwrap();
        text(&output).0.trim().to_owned()
    };
    assert_eq!(home_of(private.str()), "/tmp");
    assert_eq!(home_of(open.str()), open.str());
}

#[test]
fn starting_without_root_names_the_step_and_errno() {
    require_root!();
    let output = run(&["--", podsim(), "--", "true"]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("podsim: unshare(CLONE_NEWNS): EPERM (podsim must start as root)"),
        "{stderr}"
    );
}

#[test]
fn legacy_remount_fallback_gives_the_same_filesystem_view() {
    require_root!();
    let probe = parse_map(&run(&[
        "--legacy-remount",
        "--",
        podsim(),
        "probe",
        "--json",
    ]));
    for (name, want) in [
        ("write_etc", "EROFS"),
        ("write_tmp", "ok"),
        ("write_dev_shm", "ok"),
        ("write_dev_null", "ok"),
        ("write_proc_self", "ok"),
    ] {
        assert_eq!(probe[name], want, "{name}");
    }
}

#[test]
fn keep_root_writable_skips_only_the_read_only_root() {
    require_root!();
    let probe = parse_map(&run(&[
        "--keep-root-writable",
        "--",
        podsim(),
        "probe",
        "--json",
    ]));
    // uid 1000 still cannot write /etc, but now for lack of permission, not a read-only mount.
    assert_eq!(probe["write_etc"], "EACCES");
    assert_eq!(probe["pidfd_getfd"], "EPERM");
    assert_eq!(probe["uid"], "1000");
}

#[test]
fn verbose_reports_each_step() {
    require_root!();
    let output = run(&["-v", "--", "true"]);
    let (_, stderr) = text(&output);
    for step in [
        "mount namespace",
        "read-only: /",
        "writable: /tmp",
        "identity: uid=1000 gid=1000",
        "no_new_privs: set",
        "seccomp: RuntimeDefault",
        "exec /",
    ] {
        assert!(stderr.contains(step), "missing {step:?} in:\n{stderr}");
    }
}

/// A scratch path on the root filesystem, outside /tmp (which podsim keeps writable): /var/tmp,
/// or the cargo target dir when /var/tmp is unusable. The checkout itself may live under /tmp (a CI
/// clone made with `mktemp -d`), so the target dir alone is not enough.
fn scratch_under_target(name: &str) -> std::path::PathBuf {
    let leaf = format!("podsim-{name}-{}", std::process::id());
    let var_tmp = std::path::Path::new("/var/tmp");
    let base = if var_tmp.is_dir() && !var_tmp.starts_with("/tmp") {
        var_tmp.to_path_buf()
    } else {
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
    };
    let path = base.join(leaf);
    let _ = std::fs::remove_dir_all(&path);
    path
}
