//! The supervisor's stand-ins for Landlock features, tried where Landlock enforces the rule and
//! where the supervisor does (the kernel with Landlock capped below the feature's ABI), and the
//! races that defeat a naive stand-in: a second thread rewriting an argument or swapping a
//! descriptor, and a recycled pid.

use std::net::TcpListener;

use sandlock_core::{Command, Sandbox};

use super::support::*;

/// A host directory granted read-only, with a file the sandbox's user may write by its mode.
fn read_only_file() -> Ws {
    let d = Ws::new();
    std::fs::write(d.join("data"), "keep me\n").unwrap();
    d
}

fn errno_code(call: &str) -> String {
    format!(
        "import os, errno, ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
         def t(f):\n    try:\n        f(); return 'ok'\n    except OSError as e:\n        return errno.errorcode[e.errno]\n\
         {call}"
    )
}

#[test]
fn truncate_reaches_writable_files_only() {
    for (name, k) in kernels(3) {
        let (ws, ro) = (Ws::new(), read_only_file());
        std::fs::write(ws.join("mine"), "abcdef").unwrap();
        std::fs::create_dir(ws.join("sub")).unwrap();
        std::os::unix::fs::symlink(ro.join("data"), ws.join("link")).unwrap();
        let mut p = policy(&ws);
        p.fs_readable.push(ro.path().to_path_buf());
        p.cwd = Some(ws.path().to_path_buf());
        let code = errno_code(&format!(
            "print(t(lambda: os.truncate({ro:?}, 0)))\n\
             print(t(lambda: os.close(os.open({ro:?}, os.O_RDONLY | os.O_TRUNC))))\n\
             print(t(lambda: os.truncate('link', 0)))\n\
             print(t(lambda: os.truncate('sub', 0)))\n\
             print(t(lambda: os.truncate('missing', 0)))\n\
             print(t(lambda: os.truncate('mine', 3)))\n\
             print(t(lambda: os.truncate({mine:?}, 2)))",
            ro = ro.s("data"),
            mine = ws.s("mine"),
        ));
        let o = py_on(k, &p, &code);
        ok(&o);
        assert_eq!(
            out(&o),
            "EACCES\nEACCES\nEACCES\nEISDIR\nENOENT\nok\nok",
            "{name}: {}",
            err(&o)
        );
        assert_eq!(
            std::fs::read_to_string(ro.join("data")).unwrap(),
            "keep me\n"
        );
        // Control: the writable file was truncated, by a relative path and an absolute one.
        assert_eq!(std::fs::read_to_string(ws.join("mine")).unwrap(), "ab");
    }
}

#[test]
fn openat2_answers_enosys_so_that_callers_fall_back_without_landlock_truncate() {
    let ws = Ws::new();
    let k = sandlock_core::KernelSupport::detect().limit_landlock_abi(2);
    let code = errno_code(
        "how = (ctypes.c_uint64 * 3)(os.O_RDONLY, 0, 0)\n\
         r = libc.syscall(437, -100, b'/usr', how, 24)\n\
         print('ok' if r >= 0 else errno.errorcode[ctypes.get_errno()])\n\
         print(t(lambda: os.close(os.open('/usr/bin/env', os.O_RDONLY))))",
    );
    let o = py_on(k, &policy(&ws), &code);
    ok(&o);
    // Control in the same run: plain open still works.
    assert_eq!(out(&o), "ENOSYS\nok");
}

#[test]
fn tcp_bind_holds_the_port_rules_and_the_server_works() {
    for (name, k) in kernels(4) {
        let ws = Ws::new();
        let (allowed, other) = {
            let a = TcpListener::bind("127.0.0.1:0").unwrap();
            let b = TcpListener::bind("127.0.0.1:0").unwrap();
            (
                a.local_addr().unwrap().port(),
                b.local_addr().unwrap().port(),
            )
        };
        let mut p = policy(&ws);
        p.net_allow_bind.push(allowed.to_string());
        let code = format!(
            r#"
import socket, errno, os
def t(f):
    try:
        f(); return 'ok'
    except OSError as e:
        return errno.errorcode[e.errno]
s = socket.socket()
print(t(lambda: s.bind(('127.0.0.1', {other}))))
print(t(lambda: socket.socket().bind(('127.0.0.1', 0))))
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', {allowed})); srv.listen()
print(srv.getsockname()[1] == {allowed}, t(lambda: srv.bind(('127.0.0.1', {allowed}))))
os.write(1, b'listening\n')
c, _ = srv.accept(); c.sendall(b'served'); c.close()
u = socket.socket(socket.AF_UNIX); u.bind({sock:?}); u.listen()
a = socket.socket(socket.AF_UNIX); print(t(lambda: a.bind('\0sandlock-abstract-%d' % os.getpid())))
# Outside the writable paths: refused (EROFS first where /usr is a read-only mount, as in a pod).
print(t(lambda: socket.socket(socket.AF_UNIX).bind('/usr/sandlock.sock')).replace('EROFS', 'EACCES'))
"#,
            sock = ws.s("srv.sock"),
        );
        let sb = Sandbox::with_kernel_support(p, k).unwrap();
        let mut run = sb
            .spawn(Command::new(["python3", "-u", "-c", &code]))
            .unwrap();
        // Drive the supervisor until the server listens, then be its client from the host.
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("listening") {
            assert!(
                !run.step(Some(std::time::Duration::from_millis(50)))
                    .unwrap(),
                "{name}: ended early: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend(run.take_stdout());
        }
        let client = std::thread::spawn(move || {
            use std::io::Read;
            let mut s = std::net::TcpStream::connect(("127.0.0.1", allowed)).unwrap();
            let mut got = String::new();
            s.read_to_string(&mut got).unwrap();
            got
        });
        let o = run.wait().unwrap();
        ok(&o);
        seen.extend(&o.stdout);
        assert_eq!(client.join().unwrap(), "served", "{name}");
        assert_eq!(
            String::from_utf8_lossy(&seen).trim(),
            "EACCES\nEACCES\nTrue EINVAL\nlistening\nok\nEACCES",
            "{name}: {}",
            err(&o)
        );
        assert!(
            ws.join("srv.sock").exists(),
            "{name}: the UNIX server's socket file"
        );
    }
}

#[test]
fn truncate_race_never_reaches_a_read_only_file() {
    let (ws, ro) = (Ws::new(), read_only_file());
    let Some(exe) = build_c(ws.path(), "standin_races") else {
        return;
    };
    std::fs::write(ws.join("rw"), "x").unwrap();
    let (ro_s, rw_s) = (ro.s("data"), ws.s("rw"));
    for (name, k) in kernels(3) {
        let mut p = policy(&ws);
        p.fs_readable.push(ro.path().to_path_buf());
        let o = run_on(
            k,
            &p,
            &[
                exe.to_str().unwrap(),
                "truncate",
                &ro_s,
                &rw_s,
                &race_rounds(20000),
            ],
        );
        assert!(
            out(&o).starts_with("held"),
            "{name}: {} {}",
            out(&o),
            err(&o)
        );
        assert_eq!(
            std::fs::read_to_string(ro.join("data")).unwrap(),
            "keep me\n"
        );
    }
    // Control: unconfined, the flipping buffer empties the file at once.
    let c = std::process::Command::new(&exe)
        .args(["truncate", &ro_s, &rw_s, &race_rounds(20000)])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&c.stdout).starts_with("escaped"));
}

#[test]
fn bind_race_never_binds_a_forbidden_port() {
    let ws = Ws::new();
    let Some(exe) = build_c(ws.path(), "standin_races") else {
        return;
    };
    let (allowed, forbidden) = {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        )
    };
    let (a, f) = (allowed.to_string(), forbidden.to_string());
    for (name, k) in kernels(4) {
        let mut p = policy(&ws);
        p.net_allow_bind.push(a.clone());
        let o = run_on(
            k,
            &p,
            &[exe.to_str().unwrap(), "bind", &a, &f, &race_rounds(3000)],
        );
        assert!(
            out(&o).starts_with("held"),
            "{name}: {} {}",
            out(&o),
            err(&o)
        );
        assert!(
            !out(&o).contains("(0 binds"),
            "{name}: the allowed port never bound: {}",
            out(&o)
        );
    }
    // Control: unconfined, a flipped port gets bound within a few tries.
    let c = std::process::Command::new(&exe)
        .args(["bind", &a, &f, &race_rounds(3000)])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&c.stdout).starts_with("escaped"));
}

#[test]
fn descriptor_swap_race_cannot_signal_a_host_process_through_pidfd_send_signal() {
    let ws = Ws::new();
    let Some(exe) = build_c(ws.path(), "standin_races") else {
        return;
    };
    for (name, k) in kernels(6) {
        let mut v = Victim::new();
        let mut p = policy(&ws);
        p.fs_readable.push("/proc".into());
        let pid = v.pid().to_string();
        let o = run_on(
            k,
            &p,
            &[exe.to_str().unwrap(), "pidfd", &pid, &race_rounds(20000)],
        );
        assert!(
            out(&o).starts_with("sent"),
            "{name}: {} {}",
            out(&o),
            err(&o)
        );
        assert!(
            !out(&o).starts_with("sent 0 "),
            "{name}: the own child was never reached: {} {}",
            out(&o),
            err(&o)
        );
        assert!(
            v.alive(),
            "{name}: the host process was signalled ({})",
            out(&o)
        );
    }
    // Control: unconfined, the swapped descriptor delivers SIGTERM to the host process.
    let mut v = Victim::new();
    let pid = v.pid().to_string();
    std::process::Command::new(&exe)
        .args(["pidfd", &pid, &race_rounds(20000)])
        .output()
        .unwrap();
    assert!(!v.alive(), "the control did not reach the host process");
}

/// Makes the next process created get pid `pid` (needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE).
fn steer_next_pid(pid: i32) -> bool {
    std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).is_ok()
}

#[test]
fn a_recycled_pid_is_judged_by_the_process_that_holds_it_now() {
    if !steer_next_pid(1000) || !is_root() {
        skip(
            "recycled pid",
            "steering the next pid (/proc/sys/kernel/ns_last_pid) needs CAP_SYS_ADMIN",
        );
        return;
    }
    // The sandbox forks a child, reaps it, and tells its pid; the host then starts a process
    // with that very pid; the sandbox signals the number it still holds.
    let code = |dir: &str| {
        format!(
            r#"
import os, time, errno
r = os.fork()
if r == 0:
    os._exit(0)
os.waitpid(r, 0)
open({dir:?} + '/pid', 'w').write(str(r))
while not os.path.exists({dir:?} + '/go'):
    time.sleep(0.005)
try:
    os.kill(r, 15); print('killed')
except OSError as e:
    print(errno.errorcode[e.errno])
"#
        )
    };
    let mut runs = kernels(6)
        .into_iter()
        .map(|(n, k)| (n, Some(k)))
        .collect::<Vec<_>>();
    // The control: the same program unconfined.
    runs.push(("unconfined".into(), None));
    for (name, k) in runs {
        let ws = Ws::new();
        let script = code(&ws.s(""));
        let mut sandbox = None;
        let mut host = None;
        match k {
            Some(k) => {
                let sb = Sandbox::with_kernel_support(policy(&ws), k).unwrap();
                sandbox = Some(sb.spawn(Command::new(["python3", "-c", &script])).unwrap());
            }
            None => {
                host = Some(
                    std::process::Command::new("python3")
                        .args(["-c", &script])
                        .stdout(std::process::Stdio::piped())
                        .spawn()
                        .unwrap(),
                )
            }
        }
        let pid_file = ws.join("pid");
        let t0 = std::time::Instant::now();
        while !pid_file.exists() || std::fs::read_to_string(&pid_file).unwrap().is_empty() {
            if let Some(r) = sandbox.as_mut() {
                r.step(Some(std::time::Duration::from_millis(5))).unwrap();
            } else {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert!(t0.elapsed().as_secs() < 30, "{name}: no pid reported");
        }
        let target: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut victim = None;
        for _ in 0..200 {
            if steer_next_pid(target) {
                let v = Victim::new();
                if v.pid() == target {
                    victim = Some(v);
                    break;
                }
            }
        }
        let Some(mut v) = victim else {
            skip(
                "recycled pid",
                "another process kept taking the steered pid",
            );
            return;
        };
        std::fs::write(ws.join("go"), "").unwrap();
        let said = match (sandbox, host) {
            (Some(r), _) => out(&r.wait().unwrap()),
            (_, Some(h)) => String::from_utf8_lossy(&h.wait_with_output().unwrap().stdout)
                .trim()
                .to_string(),
            _ => unreachable!(),
        };
        if name == "unconfined" {
            assert_eq!(said, "killed", "the control must reach the recycled pid");
            assert!(!v.alive());
        } else {
            assert_eq!(said, "EPERM", "{name}");
            assert!(
                v.alive(),
                "{name}: the process that now holds the pid was signalled"
            );
        }
    }
}

#[test]
fn ioctl_only_opens_are_refused_without_landlock_abi_5() {
    // Access mode 3 asks for neither read nor write, so Landlock before ABI 5 checks nothing at
    // open: a read-only file could be truncated (with O_TRUNC) and a device opened for its ioctls.
    for (name, k) in kernels(5) {
        let (ws, ro) = (Ws::new(), read_only_file());
        std::fs::write(ws.join("mine"), "abc").unwrap();
        let mut p = policy(&ws);
        p.fs_readable.push(ro.path().to_path_buf());
        let code = errno_code(&format!(
            "print(t(lambda: os.close(os.open({ro:?}, 3 | os.O_TRUNC))))\n\
             import fcntl\n\
             def uffd():\n    fd = os.open('/dev/userfaultfd', 3)\n    fcntl.ioctl(fd, 0xaa00, 0)\n\
             print(t(uffd))\n\
             print(t(lambda: os.close(os.open({mine:?}, 3))))\n\
             print(t(lambda: os.close(os.open({mine:?}, os.O_RDWR))))",
            ro = ro.s("data"),
            mine = ws.s("mine"),
        ));
        let o = py_on(k, &p, &code);
        ok(&o);
        let lines: Vec<String> = out(&o).lines().map(str::to_string).collect();
        assert_eq!(lines[0], "EACCES", "{name}: 3|O_TRUNC on a read-only file");
        assert_ne!(
            lines[1], "ok",
            "{name}: a userfaultfd through /dev/userfaultfd"
        );
        if k.landlock_abi < 5 {
            assert_eq!(lines[2], "EACCES", "{name}: ioctl-only open");
        }
        // Control: an ordinary open of the same writable file.
        assert_eq!(lines[3], "ok", "{name}");
        assert_eq!(
            std::fs::read_to_string(ro.join("data")).unwrap(),
            "keep me\n"
        );
    }
}

#[test]
fn truncate_outside_the_writable_paths_says_eacces_whether_or_not_the_file_exists() {
    let ws = Ws::new();
    let k = sandlock_core::KernelSupport::detect().limit_landlock_abi(2);
    let code = errno_code(
        "print(t(lambda: os.truncate('/etc/hostname', 0)))\n\
         print(t(lambda: os.truncate('/no/such/dir/x', 0)))\n\
         print(t(lambda: os.truncate('/proc/self/fd/0', 0)))",
    );
    let o = py_on(k, &policy(&ws), &code);
    ok(&o);
    assert_eq!(out(&o), "EACCES\nEACCES\nEACCES");
}

#[test]
fn a_writable_path_nested_in_another_cannot_be_swapped_for_a_way_out() {
    let (ws, outside) = (Ws::new(), Ws::new());
    let Some(exe) = build_c(ws.path(), "standin_races") else {
        return;
    };
    let dir = Ws::new();
    std::fs::create_dir(dir.join("inner")).unwrap();
    std::fs::write(dir.join("inner/f"), "x").unwrap();
    std::fs::write(outside.join("f"), "keep me\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.join("link")).unwrap();
    let (d, o) = (dir.s(""), outside.s(""));
    for (name, k) in kernels(3) {
        let mut p = policy(&ws);
        p.fs_writable.extend([dir.path().into(), dir.join("inner")]);
        let r = run_on(
            k,
            &p,
            &[exe.to_str().unwrap(), "nested", &d, &o, &race_rounds(20000)],
        );
        assert!(
            out(&r).starts_with("held"),
            "{name}: {} {}",
            out(&r),
            err(&r)
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("f")).unwrap(),
            "keep me\n"
        );
    }
    // Control: unconfined, the exchange lets the truncation through the symlink.
    let c = std::process::Command::new(&exe)
        .args(["nested", &d, &o, &race_rounds(20000)])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&c.stdout).starts_with("escaped"));
}

#[test]
fn a_unix_bind_never_changes_the_mode_of_a_file_outside() {
    use std::os::unix::fs::PermissionsExt;
    let (ws, outside) = (Ws::new(), Ws::new());
    let Some(exe) = build_c(ws.path(), "standin_races") else {
        return;
    };
    let victim = outside.join("victim");
    std::fs::write(&victim, "x").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let v = victim.display().to_string();
    for (name, k) in kernels(4) {
        let mut p = policy(&ws);
        // TCP in the policy puts bind (UNIX binds too) in the supervisor's hands before ABI 4.
        p.net_allow_bind.push("65000".into());
        let r = run_on(
            k,
            &p,
            &[
                exe.to_str().unwrap(),
                "chmod",
                &ws.s(""),
                &v,
                &race_rounds(3000),
            ],
        );
        assert!(
            out(&r).starts_with("held"),
            "{name}: {} {}",
            out(&r),
            err(&r)
        );
        assert!(
            !out(&r).contains("(0 binds)"),
            "{name}: never bound: {}",
            out(&r)
        );
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{name}");
    }
    // Control: a socket file the sandbox binds gets its umask (0 here: every permission).
    for (name, k) in kernels(4) {
        let mut p = policy(&ws);
        p.net_allow_bind.push("65000".into());
        let code = format!(
            "import os, socket\nos.umask(0)\ns = socket.socket(socket.AF_UNIX)\n\
             s.bind({:?})\nprint(oct(os.stat({:?}).st_mode & 0o777))",
            ws.s("u.sock"),
            ws.s("u.sock")
        );
        let o = py_on(k, &p, &code);
        ok(&o);
        assert_eq!(out(&o), "0o777", "{name}");
        std::fs::remove_file(ws.join("u.sock")).unwrap();
    }
}

#[test]
fn privileged_ports_stay_closed_even_when_the_supervisor_could_bind_them() {
    let start: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    if start <= 1000 {
        skip(
            "privileged ports",
            "ip_unprivileged_port_start is at or below 1000 here: every port is unprivileged",
        );
        return;
    }
    for (name, k) in kernels(4) {
        let ws = Ws::new();
        let mut p = policy(&ws);
        p.net_allow_bind
            .extend(["1000".to_string(), "0".to_string()]);
        let code = "import socket, errno\n\
                    def t(port):\n    try:\n        socket.socket().bind(('127.0.0.1', port)); return 'ok'\n    except OSError as e:\n        return errno.errorcode[e.errno]\n\
                    print(t(1000), t(0))";
        let o = py_on(k, &p, code);
        ok(&o);
        // Control in the same run: an ephemeral port binds.
        assert_eq!(out(&o), "EACCES ok", "{name}");
    }
}

#[test]
fn truncate_respects_an_acl_that_denies_the_sandbox() {
    if !is_root() {
        skip(
            "truncate and ACLs",
            "only a privileged supervisor checks ACLs itself",
        );
        return;
    }
    let ws = Ws::new();
    let (denied, plain) = (ws.join("denied"), ws.join("plain"));
    for f in [&denied, &plain] {
        std::fs::write(f, "abc").unwrap();
        std::os::unix::fs::chown(f, Some(1000), Some(1000)).unwrap();
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    }
    // system.posix_acl_access: version 2, then (tag, perm, id): owner rw, user 0 nothing, group
    // rw, mask rw, other rw.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 0, 0),
        (4, 6, u32::MAX),
        (0x10, 6, u32::MAX),
        (0x20, 6, u32::MAX),
    ] {
        acl.extend(tag.to_le_bytes());
        acl.extend(perm.to_le_bytes());
        acl.extend(id.to_le_bytes());
    }
    let c = std::ffi::CString::new(denied.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: setxattr reads the C strings and `acl.len()` bytes of `acl`.
    let r = unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            acl.as_ptr().cast(),
            acl.len(),
            0,
        )
    };
    if r != 0 {
        skip(
            "truncate and ACLs",
            "this filesystem does not take POSIX ACLs",
        );
        return;
    }
    for (name, k) in kernels(3) {
        let code = errno_code(&format!(
            "print(t(lambda: os.truncate({:?}, 0)))\nprint(t(lambda: os.truncate({:?}, 1)))",
            denied.display().to_string(),
            plain.display().to_string()
        ));
        let o = py_on(k, &policy(&ws), &code);
        ok(&o);
        // Control in the same run: the file without the ACL.
        assert_eq!(out(&o), "EACCES\nok", "{name}");
        assert_eq!(std::fs::read_to_string(&denied).unwrap(), "abc");
    }
}
