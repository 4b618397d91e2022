//! The `sandlock` command as a user meets it: exit statuses, error messages, JSON.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::{Command, Output};

fn sandlock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sandlock"))
        .args(args)
        .output()
        .expect("run sandlock")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn exit_status_mirrors_the_command() {
    assert_eq!(
        sandlock(&["run", "-p", "system", "--", "true"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        sandlock(&["run", "-p", "system", "--", "sh", "-c", "exit 3"])
            .status
            .code(),
        Some(3)
    );
    let o = sandlock(&["run", "-p", "system", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.status.code(), Some(128 + 15), "{}", stderr(&o));
}

#[test]
fn output_passes_through() {
    let o = sandlock(&[
        "run",
        "-p",
        "system",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");
}

#[test]
fn missing_program_exits_127_with_a_clear_message() {
    let o = sandlock(&["run", "-p", "system", "--", "pyhton3", "-c", "1"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(
        stderr(&o).contains(r#"execve("pyhton3"): ENOENT, not found in PATH ("#),
        "{}",
        stderr(&o)
    );
}

#[test]
fn program_outside_the_policy_exits_126() {
    let o = sandlock(&["run", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(126));
    assert!(
        stderr(&o).contains("EACCES") && stderr(&o).contains("fs_readable"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn missing_path_exits_125_naming_flag_and_path() {
    let o = sandlock(&["run", "-p", "system", "-r", "/no/such/dir", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(
        e.contains("--fs-read") && e.contains("/no/such/dir") && e.contains("no such file"),
        "{e}"
    );
}

#[test]
fn bad_flag_and_bad_value_exit_125() {
    let o = sandlock(&["run", "--frobnicate", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("--frobnicate"), "{}", stderr(&o));
    let o = sandlock(&["run", "-m", "12Q", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("max_memory") && stderr(&o).contains("12Q"),
        "{}",
        stderr(&o)
    );
    let o = sandlock(&["run", "--net-allow", "exa mple.com:443", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("--net-allow") && stderr(&o).contains("not a host name"),
        "{}",
        stderr(&o)
    );
    let o = sandlock(&["run", "--net-deny", "10.0.0.0/40", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("prefix length"), "{}", stderr(&o));
}

#[test]
fn net_rules_by_host_from_the_command_line() {
    let servers: Vec<_> = ["127.0.0.2", "127.0.0.3"]
        .iter()
        .map(|ip| std::net::TcpListener::bind((*ip, 0)).unwrap())
        .collect();
    let code = |ports: [u16; 2]| {
        format!(
            "import socket\nfor h, p in (('127.0.0.2', {}), ('127.0.0.3', {})):\n    try:\n        socket.create_connection((h, p), timeout=3).close(); print('ok')\n    except OSError as e:\n        print(e.errno)",
            ports[0], ports[1]
        )
    };
    let ports = [
        servers[0].local_addr().unwrap().port(),
        servers[1].local_addr().unwrap().port(),
    ];
    let o = sandlock(&[
        "run",
        "-p",
        "system",
        "--net-deny",
        "127.0.0.3",
        "--",
        "python3",
        "-c",
        &code(ports),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // 13 is EACCES, what a refused destination answers.
    assert_eq!(stdout(&o), "ok\n13\n");
    let o = sandlock(&[
        "run",
        "--net-allow",
        "10.0.0.0/8:443",
        "--net-deny",
        "10.9.0.0/16",
        "--print-policy",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["net_allow"][0], "10.0.0.0/8:443");
    assert_eq!(v["net_deny"][0], "10.9.0.0/16");
}

/// An HTTP server on 127.0.0.2 that answers `200 hi` and hands back the head of each request.
fn recording_upstream() -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut r = BufReader::new(c);
            let mut head = String::new();
            while r.read_line(&mut head).unwrap_or(0) > 0 && !head.ends_with("\r\n\r\n") {}
            let _ = tx.send(head);
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi");
        }
    });
    (port, rx)
}

#[test]
fn http_rules_and_credentials_from_the_command_line() {
    let (port, heads) = recording_upstream();
    let ws = tempfile::tempdir().unwrap();
    let secret = format!(
        "sl-secret-{:032x}",
        std::process::id() as u128 * 0x9e37_79b9_7f4a_7c15
    );
    let digest = {
        let o = Command::new("python3")
            .args([
                "-c",
                "import hashlib, sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())",
            ])
            .arg(&secret)
            .output()
            .unwrap();
        stdout(&o).trim().to_string()
    };
    let code = format!(
        "import urllib.request\nfor p in ('ok', 'no'):\n    try:\n        print(urllib.request.urlopen('http://127.0.0.2:{port}/' + p, timeout=10).read().decode())\n    except Exception as e:\n        print(e)\n{}",
        include_str!("../../sandlock-core/tests/suite/hunt_secret.py")
    );
    let ws_path = ws.path().to_str().unwrap();
    // The secret sits in sandlock's own environment: the sandbox must not find it there
    // (/proc/<sandlock>/environ) or anywhere else, even with /proc readable.
    let o = Command::new(env!("CARGO_BIN_EXE_sandlock"))
        .env("SL_TEST_TOKEN", &secret)
        .args([
            "run",
            "-p",
            "system",
            "-r",
            "/proc",
            "-w",
            ws_path,
            "--http-allow",
            &format!("GET 127.0.0.2:{port}/ok"),
            "--credential",
            "tok=env:SL_TEST_TOKEN",
            "--http-auth",
            &format!("GET 127.0.0.2:{port}/* bearer tok"),
            "--",
            "python3",
            "-c",
            &code,
            &digest,
            "/nonexistent",
            ws_path,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "hi");
    assert!(lines[1].contains("403"), "{out}");
    assert_eq!(lines[2], "nowhere", "{out}");
    let head = heads
        .recv_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    assert!(head.starts_with("GET /ok HTTP/1.1"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("authorization: bearer {secret}")),
        "{head}"
    );
    assert!(
        heads.try_recv().is_err(),
        "the refused request reached the upstream"
    );
    assert!(
        stderr(&o).contains("sandlock: warning: http_auth[0] sent credential tok to 127.0.0.2")
            && stderr(&o).contains("plain HTTP")
            && !stderr(&o).contains(&secret),
        "{}",
        stderr(&o)
    );
    // The policy keeps where the secret comes from, never the secret.
    let o = sandlock(&[
        "run",
        "--http-allow",
        "GET api.example.com/v1/*",
        "--credential",
        "tok=env:SL_TEST_TOKEN",
        "--http-auth",
        "* api.example.com bearer tok",
        "--print-policy",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["credentials"]["tok"], "env:SL_TEST_TOKEN");
    assert_eq!(v["http_allow"][0], "GET api.example.com/v1/*");
    // Bad input names the flag.
    for (args, says) in [
        (vec!["--http-allow", "FETCH"], "--http-allow"),
        (vec!["--credential", "tok"], "--credential"),
        (
            vec![
                "--http-allow",
                "GET h.test",
                "--credential",
                "t=env:SL_SURELY_UNSET_VAR",
            ],
            "--credential",
        ),
        (vec!["--http-ca-out", "/tmp/x.pem"], "--http-ca-out"),
        (
            vec!["--http-inject-ca", "/etc/ssl/certs/ca-certificates.crt"],
            "--http-inject-ca",
        ),
        (
            vec![
                "--http-allow",
                "GET h.test",
                "--http-inject-ca",
                "/nonexistent/bundle.pem",
            ],
            "--http-inject-ca (http_inject_ca: \"/nonexistent/bundle.pem\": no such file",
        ),
    ] {
        let mut a = vec!["run", "-p", "system"];
        a.extend(args);
        a.extend(["--", "true"]);
        let o = sandlock(&a);
        assert_eq!(o.status.code(), Some(125), "{a:?}");
        assert!(stderr(&o).contains(says), "{a:?}: {}", stderr(&o));
    }
}

#[test]
fn timeout_exits_124_and_says_so() {
    let o = sandlock(&["run", "-p", "system", "-t", "300ms", "--", "sleep", "10"]);
    assert_eq!(o.status.code(), Some(124));
    assert!(stderr(&o).contains("timed out after"), "{}", stderr(&o));
}

/// The `--status-json` file a run wrote.
fn status_of(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn status_json_describes_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.json");
    let o = sandlock(&[
        "run",
        "-p",
        "system",
        "-P",
        "4",
        "--status-json",
        path.to_str().unwrap(),
        "--",
        "python3",
        "-c",
        "import os\nwhile True: os.fork()",
    ]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    let v = status_of(&path);
    assert_eq!(v["reason"], "processes");
    // The process cap is the supervisor's; where the run got a cgroup with the pids controller
    // (root on the kernel-matrix VM), the kernel's pids.max backs it up.
    match v["limit_mechanism"].as_str() {
        Some("supervisor") => assert_eq!(v["kernel_limits"], serde_json::json!([])),
        Some("cgroup_v2") => assert_eq!(v["kernel_limits"], serde_json::json!(["pids.max"])),
        other => panic!("limit_mechanism {other:?} in {v}"),
    }
    assert!(v["wall_time"].as_f64().unwrap() > 0.0);
}

#[test]
fn profile_and_flags_combine() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.toml");
    std::fs::write(
        &profile,
        "presets = [\"system\"]\n[env]\nGREETING = \"from profile\"\n",
    )
    .unwrap();
    let o = sandlock(&[
        "run",
        "--profile",
        profile.to_str().unwrap(),
        "-e",
        "EXTRA=flag",
        "--",
        "sh",
        "-c",
        "echo $GREETING $EXTRA",
    ]);
    assert_eq!(stdout(&o), "from profile flag\n", "{}", stderr(&o));
    std::fs::write(&profile, "presets = [\"system\"]\nmax_memroy = \"1G\"\n").unwrap();
    let o = sandlock(&["run", "--profile", profile.to_str().unwrap(), "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("max_memroy") && stderr(&o).contains("unknown field"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn print_policy_shows_the_resolved_policy() {
    let o = sandlock(&["run", "-p", "system", "-m", "256M", "--print-policy"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["max_memory"], 256 << 20);
    assert_eq!(v["presets"][0], "system");
}

#[test]
fn check_json_reports_protections_and_a_verdict() {
    let o = sandlock(&["check", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["landlock_abi"].as_u64().is_some());
    assert!(v["protections"].as_array().unwrap().len() >= 9);
    assert!(v["verdict"].as_str().unwrap().len() > 5);
    assert_eq!(v["live_test"]["ok"], true, "{v}");
    let code = o.status.code().unwrap();
    let all = v["not_enforced"].as_array().unwrap().is_empty();
    assert_eq!(code, if all { 0 } else { 1 });
}

#[test]
fn check_names_what_enforces_each_protection() {
    let mechanism = |v: &serde_json::Value, name: &str| {
        v["protections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["protection"] == name)
            .map(|p| p["mechanism"].as_str().unwrap().to_string())
            .unwrap()
    };
    // As on Debian 12's Linux 6.1 (Landlock ABI 2): the supervisor stands in, nothing is missing.
    let o = Command::new(env!("CARGO_BIN_EXE_sandlock"))
        .args(["check", "--json"])
        .env("SANDLOCK_MAX_LANDLOCK_ABI", "2")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(0), "{v}");
    assert_eq!(mechanism(&v, "scope_signal"), "supervisor");
    assert_eq!(mechanism(&v, "filesystem_truncate"), "supervisor");
    assert_eq!(mechanism(&v, "network_tcp"), "supervisor");
    assert_eq!(mechanism(&v, "filesystem_ioctl"), "seccomp");
    assert_eq!(mechanism(&v, "filesystem"), "landlock");
    assert!(
        v["verdict"]
            .as_str()
            .unwrap()
            .starts_with("every protection is enforced"),
        "{v}"
    );
    assert!(
        v["landlock_status"]
            .as_str()
            .unwrap()
            .contains("capped at 2")
    );
    // Control: without the cap, a kernel with Landlock ABI 6 enforces the same with Landlock.
    let v: serde_json::Value =
        serde_json::from_slice(&sandlock(&["check", "--json", "--no-live"]).stdout).unwrap();
    if v["landlock_abi"].as_u64().unwrap() >= 6 {
        assert_eq!(mechanism(&v, "scope_signal"), "landlock");
    }
    // No Landlock at all: the filesystem cannot be confined, and check says so.
    let o = Command::new(env!("CARGO_BIN_EXE_sandlock"))
        .args(["check", "--json", "--no-live"])
        .env("SANDLOCK_MAX_LANDLOCK_ABI", "0")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(1), "{v}");
    assert_eq!(mechanism(&v, "filesystem"), "unavailable");
}

#[test]
fn help_teaches_with_examples() {
    let o = sandlock(&["run", "--help"]);
    let h = stdout(&o);
    assert!(h.contains("Examples:") && h.contains("Exit status"), "{h}");
    assert!(h.contains("--net-allow") && h.contains("--max-memory"));
    assert!(
        h.contains("--http-allow") && h.contains("--credential") && h.contains("--http-ca-out")
    );
    assert!(
        h.contains("--http-inject-ca <BUNDLE>")
            && h.contains("--http-inject-ca /etc/ssl/certs/ca-certificates.crt"),
        "{h}"
    );
    assert!(
        h.contains("--fs-mount <VIRT:HOST[:ro]>") && h.contains("--private-tmp"),
        "{h}"
    );
    assert!(
        h.contains("--workdir <DIR>") && h.contains("--commit <WHEN>") && h.contains("--dry-run"),
        "{h}"
    );
}

#[test]
fn fs_mount_and_private_tmp_from_the_command_line() {
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from the host").unwrap();
    let mount = format!("/mnt/data:{}", host.path().display());
    let o = sandlock(&[
        "run",
        "-p",
        "system",
        "--fs-mount",
        &mount,
        "--private-tmp",
        "--",
        "sh",
        "-c",
        "cat /mnt/data/in; echo tmp > /tmp/t; cat /tmp/t; echo out > /mnt/data/out",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "from the hosttmp\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "out\n"
    );
    // A read-only mount, and the flags as the resolved policy shows them.
    let ro = format!("{mount}:ro");
    let o = sandlock(&[
        "run",
        "-p",
        "system",
        "--fs-mount",
        &ro,
        "--",
        "touch",
        "/mnt/data/x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    let o = sandlock(&["run", "--fs-mount", &ro, "--private-tmp", "--print-policy"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["fs_mount"]["/mnt/data"],
        format!("{}:ro", host.path().display())
    );
    assert_eq!(v["private_tmp"], true);
}

#[test]
fn bad_mounts_exit_125_naming_the_flag() {
    let o = sandlock(&["run", "--fs-mount", "/mnt/data", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("write VIRT:HOST"), "{}", stderr(&o));
    let o = sandlock(&["run", "--fs-mount", "/mnt/data:/no/such/dir", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("--fs-mount") && stderr(&o).contains("does not exist"),
        "{}",
        stderr(&o)
    );
    let o = sandlock(&["run", "-w", "/tmp", "--private-tmp", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("--fs-write") && stderr(&o).contains("hides"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn dry_run_lists_the_changes_and_discards_them() {
    let w = tempfile::tempdir().unwrap();
    std::fs::write(w.path().join("edit"), "one\n").unwrap();
    std::fs::write(w.path().join("gone"), "bye\n").unwrap();
    let dir = w.path().to_str().unwrap();
    let script = "echo two >> edit; rm gone; mkdir new; echo n > new/f; echo ran";
    let o = sandlock(&[
        "run",
        "-p",
        "system",
        "--cwd",
        dir,
        "--dry-run",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("ran\nM {dir}/edit\nD {dir}/gone\nA {dir}/new/\nA {dir}/new/f\n")
    );
    // Control: nothing changed on the host.
    assert_eq!(
        std::fs::read_to_string(w.path().join("edit")).unwrap(),
        "one\n"
    );
    assert!(w.path().join("gone").exists() && !w.path().join("new").exists());
    // As JSON: the outcome, with the command's output and the changes.
    let o = sandlock(&[
        "run",
        "-p",
        "system",
        "--cwd",
        dir,
        "--dry-run",
        "--json",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["stdout"], "ran\n");
    let changes: Vec<String> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {} {}",
                c["kind"].as_str().unwrap(),
                c["path"].as_str().unwrap(),
                c["dir"]
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            format!("M {dir}/edit false"),
            format!("D {dir}/gone false"),
            format!("A {dir}/new true"),
            format!("A {dir}/new/f false"),
        ]
    );
    assert_eq!(v["commit"]["attempted"], false);
    // --json without --dry-run is a usage error.
    let o = sandlock(&["run", "--json", "--", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
}

#[test]
fn workdir_commits_as_commit_says() {
    let w = tempfile::tempdir().unwrap();
    let dir = w.path().to_str().unwrap();
    let run = |commit: &str, script: &str| {
        sandlock(&[
            "run",
            "-p",
            "system",
            "--workdir",
            dir,
            "--cwd",
            dir,
            "--commit",
            commit,
            "--",
            "sh",
            "-c",
            script,
        ])
    };
    // A failed command's changes are discarded by default (on-success) and by never.
    let o = run("on-success", "echo a > a; exit 4");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(!w.path().join("a").exists());
    let o = run("never", "echo a > a");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!w.path().join("a").exists());
    // Control: applied on success, and by always whatever the status.
    let o = run("on-success", "echo a > a");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(w.path().join("a")).unwrap(), "a\n");
    let o = run("always", "rm a; exit 5");
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(!w.path().join("a").exists());
    // Bad values name the flag; a work directory also granted writable is refused.
    let o = run("sometimes", "true");
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("--commit"), "{}", stderr(&o));
    let o = sandlock(&["run", "-w", dir, "--workdir", dir, "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("--fs-write"), "{}", stderr(&o));
    let o = sandlock(&["run", "--workdir", "/no/such/dir", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("--workdir"), "{}", stderr(&o));
}

#[test]
fn max_output_caps_passed_through_output() {
    let o = sandlock(&[
        "run",
        "-p",
        "system",
        "--max-output",
        "1K",
        "--",
        "python3",
        "-c",
        "print('x' * 100000)",
    ]);
    assert_eq!(o.status.code(), Some(137));
    assert_eq!(o.stdout.len(), 1024);
    assert!(stderr(&o).contains("exceeded max_output"), "{}", stderr(&o));
    // Control: under the cap, everything arrives.
    let o = sandlock(&[
        "run",
        "-p",
        "system",
        "--max-output",
        "1K",
        "--",
        "echo",
        "fine",
    ]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), "fine\n".to_string())
    );
}

#[test]
fn cgroup_require_fails_closed_naming_the_stage_or_enforces_in_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.json");
    let o = sandlock(&[
        "run",
        "-p",
        "system",
        "--cgroup",
        "require",
        "-m",
        "64M",
        "--status-json",
        path.to_str().unwrap(),
        "--",
        "true",
    ]);
    match o.status.code() {
        // No delegated cgroup with the memory controller here: nothing ran, and the message says
        // which stage failed and what to do.
        Some(125) => {
            let e = stderr(&o);
            assert!(e.starts_with("sandlock: cgroup"), "{e}");
            assert!(e.contains("cgroup = \"auto\""), "{e}");
        }
        Some(0) => {
            let v = status_of(&path);
            assert_eq!(v["limit_mechanism"], "cgroup_v2");
            assert_eq!(v["kernel_limits"][0], "memory.max");
        }
        other => panic!("unexpected status {other:?}: {}", stderr(&o)),
    }
    // Control: auto always runs.
    let o = sandlock(&[
        "run", "-p", "system", "--cgroup", "auto", "-m", "64M", "--", "true",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A mode that does not exist is refused with the choices.
    let o = sandlock(&["run", "-p", "system", "--cgroup", "sometimes", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("require"), "{}", stderr(&o));
}

#[test]
fn an_injected_ca_is_in_the_bundle_the_sandbox_reads_and_not_in_the_hosts() {
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    let Ok(host) = std::fs::read_to_string(bundle) else {
        println!("SKIP --http-inject-ca: {bundle} is missing");
        return;
    };
    let count = |t: &str| t.matches("-----BEGIN CERTIFICATE-----").count();
    let o = sandlock(&[
        "run",
        "-p",
        "system",
        "--http-allow",
        "GET allowed.test",
        "--http-inject-ca",
        bundle,
        "--",
        "python3",
        "-c",
        "import sys; print(open(sys.argv[1]).read().count('-----BEGIN CERTIFICATE-----'))",
        bundle,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), (count(&host) + 1).to_string());
    assert_eq!(std::fs::read_to_string(bundle).unwrap(), host);
    // Control: without the flag, the sandbox reads the host's bundle as it is.
    let o = sandlock(&[
        "run",
        "-p",
        "system",
        "--http-allow",
        "GET allowed.test",
        "--",
        "python3",
        "-c",
        "import sys; print(open(sys.argv[1]).read().count('-----BEGIN CERTIFICATE-----'))",
        bundle,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), count(&host).to_string());
}
