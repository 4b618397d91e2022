//! What the child inherits: a minimal environment, stdio only, no capabilities.

use std::os::fd::AsRawFd;

use super::support::*;

fn child_env(p: &sandlock_core::Policy) -> Vec<(String, String)> {
    let o = py(
        p,
        "import os\nfor k, v in sorted(os.environ.items()): print(f'{k}={v}')",
    );
    ok(&o);
    out(&o)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn host_environment_is_not_inherited() {
    let ws = Ws::new();
    let names: Vec<String> = child_env(&policy(&ws))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    // Python itself may add LC_CTYPE when coercing the locale.
    let extra: Vec<&String> = names
        .iter()
        .filter(|k| !["PATH", "LANG", "HOME", "TMPDIR", "LC_CTYPE"].contains(&k.as_str()))
        .collect();
    assert!(extra.is_empty(), "unexpected variables leaked: {extra:?}");
    let host_path = std::env::var("PATH").unwrap_or_default();
    let env = child_env(&policy(&ws));
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone());
    assert_eq!(path.as_deref(), Some(sandlock_core::DEFAULT_PATH));
    assert!(
        host_path.is_empty()
            || path.as_deref() != Some(host_path.as_str())
            || host_path == sandlock_core::DEFAULT_PATH
    );
}

#[test]
fn pass_env_and_env_reach_the_child() {
    let ws = Ws::new();
    let Some((name, value)) = std::env::vars().find(|(k, v)| {
        !["PATH", "LANG", "HOME", "TMPDIR"].contains(&k.as_str())
            && !v.is_empty()
            && !v.contains('\n')
    }) else {
        skip(
            "pass_env_and_env_reach_the_child",
            "the host environment has no variable to pass through",
        );
        return;
    };
    let mut p = policy(&ws);
    p.pass_env.push(name.clone());
    p.env.insert("SANDLOCK_EXPLICIT".into(), "yes".into());
    let env = child_env(&p);
    assert!(env.contains(&(name, value)));
    assert!(env.contains(&("SANDLOCK_EXPLICIT".to_string(), "yes".to_string())));
}

#[test]
fn inherited_host_fd_is_invisible() {
    let ws = Ws::new();
    let secret = ws.join("host-secret");
    std::fs::write(&secret, "host secret\n").unwrap();
    let c = std::ffi::CString::new(secret.to_str().unwrap()).unwrap();
    // Deliberately NOT close-on-exec, as a careless host might open it.
    // SAFETY: plain open of a path we own.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 3);
    let code = format!(
        "import os, errno\ntry:\n    print(os.read({fd}, 100))\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\nprint(sorted(int(x) for x in os.listdir('/proc/self/fd')))"
    );
    let mut p = policy(&ws);
    p.fs_readable.push("/proc".into());
    let o = py(&p, &code);
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    ok(&o);
    let s = out(&o);
    let lines: Vec<&str> = s.lines().map(str::trim).collect();
    assert_eq!(lines.first().copied(), Some("EBADF"), "{s}");
    // Only stdio (plus the directory handle listdir itself holds) is open.
    assert!(
        lines.get(1).is_some_and(|l| l.starts_with("[0, 1, 2")),
        "{s}"
    );
    // Control: the fd is valid in the host.
    let f = std::fs::File::open(&secret).unwrap();
    assert!(f.as_raw_fd() >= 0);
}

#[test]
fn root_in_the_sandbox_holds_no_capabilities() {
    let ws = Ws::new();
    let mut p = policy(&ws);
    p.fs_readable.push("/proc".into());
    let o = sh(&p, "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status");
    ok(&o);
    for line in out(&o).lines() {
        assert!(
            line.ends_with("0000000000000000"),
            "capability left: {line}"
        );
    }
    let o = sh(&p, "grep -E '^NoNewPrivs' /proc/self/status");
    assert_eq!(out(&o).split_whitespace().last(), Some("1"));
}

#[test]
fn root_in_the_sandbox_cannot_mknod_sethostname_or_open_raw_sockets() {
    if !is_root() {
        skip(
            "root_in_the_sandbox_cannot_mknod...",
            "only meaningful when the host runs as root",
        );
        return;
    }
    let ws = Ws::new();
    let code = format!(
        r#"
import os, socket, errno
r = []
for f in [lambda: os.mknod({:?}, 0o600 | 0o020000, os.makedev(1, 3)),
          lambda: socket.sethostname('pwned'),
          lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
          lambda: os.chown({:?}, 1, 1)]:
    try:
        f()
        r.append('ok')
    except OSError as e:
        r.append(errno.errorcode[e.errno])
print(' '.join(r))
"#,
        ws.s("dev"),
        ws.s("f")
    );
    std::fs::write(ws.join("f"), "").unwrap();
    let o = py(&policy(&ws), &code);
    ok(&o);
    let r: Vec<String> = out(&o).split(' ').map(String::from).collect();
    assert_eq!(r[0], "EPERM", "mknod of a device: {r:?}");
    assert_eq!(r[1], "EPERM", "sethostname: {r:?}");
    assert_eq!(r[2], "EACCES", "raw socket: {r:?}");
    assert_eq!(r[3], "EPERM", "chown to another user: {r:?}");
    // Control: root outside the sandbox can chown.
    assert_eq!(
        host_py(&format!(
            "import os; os.chown({:?}, 1, 1); print('ok')",
            ws.s("f")
        )),
        "ok"
    );
}

#[test]
fn host_fds_below_a_passed_fd_target_do_not_leak() {
    let ws = Ws::new();
    let secret = ws.join("host-secret");
    std::fs::write(&secret, "host secret\n").unwrap();
    let c = std::ffi::CString::new(secret.to_str().unwrap()).unwrap();
    // SAFETY: plain open of a path we own, deliberately without O_CLOEXEC.
    let leaky = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
    let (r, w) = std::io::pipe().unwrap();
    let target = leaky + 5;
    let code = format!(
        "import os, errno\ntry:\n    print(os.read({leaky}, 100))\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\nos.write({target}, b'ok')"
    );
    let o = sandlock_core::Sandbox::new(policy(&ws))
        .unwrap()
        .run(
            sandlock_core::Command::new(["python3", "-c", code.as_str()])
                .pass_fd(std::os::fd::OwnedFd::from(w), target),
        )
        .unwrap();
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(leaky) };
    ok(&o);
    assert_eq!(
        out(&o),
        "EBADF",
        "host fd {leaky} below the passed target {target} leaked"
    );
    let mut got = String::new();
    std::io::Read::read_to_string(&mut { r }, &mut got).unwrap();
    assert_eq!(got, "ok", "the passed fd {target} did not arrive");
}

#[test]
fn passing_an_fd_as_descriptor_3_works() {
    let ws = Ws::new();
    let (r, w) = std::io::pipe().unwrap();
    let o = sandlock_core::Sandbox::new(policy(&ws))
        .unwrap()
        .run(
            sandlock_core::Command::new(["/bin/sh", "-c", "echo through-3 >&3"])
                .pass_fd(std::os::fd::OwnedFd::from(w), 3),
        )
        .unwrap();
    ok(&o);
    let mut got = String::new();
    std::io::Read::read_to_string(&mut { r }, &mut got).unwrap();
    assert_eq!(got, "through-3\n");
}

/// Descriptors of this process that are Landlock rulesets.
fn landlock_rulesets() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|l| l.to_string_lossy().contains("landlock-ruleset"))
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

#[test]
fn a_passed_fd_on_the_ruleset_descriptor_number_still_gets_a_confined_child() {
    // Every run of a sandbox applies its one Landlock ruleset descriptor, used as it is when it
    // sits above every target. A passed fd whose target is that very number must not take its
    // place before the child applies it.
    let ws = Ws::new();
    let outside = Ws::new();
    std::fs::write(outside.join("secret"), "host secret\n").unwrap();
    std::fs::write(ws.join("inside"), "workspace file\n").unwrap();
    let before = landlock_rulesets();
    let sandbox = sandlock_core::Sandbox::new(policy(&ws)).unwrap();
    let Some(target) = landlock_rulesets()
        .into_iter()
        .find(|fd| !before.contains(fd))
    else {
        skip(
            "a_passed_fd_on_the_ruleset_descriptor_number...",
            "no Landlock ruleset descriptor (a kernel without Landlock)",
        );
        return;
    };
    let run = |path: String| {
        let (r, w) = std::io::pipe().unwrap();
        let code = format!(
            "import os; print(open(os.environ['F']).read()); os.write({target}, b'via-{target}')"
        );
        let o = sandbox
            .run(
                sandlock_core::Command::new(["python3", "-c", code.as_str()])
                    .pass_fd(std::os::fd::OwnedFd::from(w), target)
                    .env("F", path),
            )
            .unwrap();
        let mut got = String::new();
        std::io::Read::read_to_string(&mut { r }, &mut got).unwrap();
        (o, got)
    };
    let (o, got) = run(ws.s("inside"));
    ok(&o);
    assert_eq!(
        got,
        format!("via-{target}"),
        "the passed fd {target} did not arrive"
    );
    let (o, got) = run(outside.s("secret"));
    refused(&o);
    assert!(!out(&o).contains("host secret"), "{}", out(&o));
    assert_eq!(got, "", "the command went on after the refused read");
}
