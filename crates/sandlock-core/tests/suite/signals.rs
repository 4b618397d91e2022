//! The sandbox cannot signal or trace anything outside itself.

use sandlock_core::{Command, Sandbox};

use super::support::*;

#[test]
fn sandbox_cannot_signal_its_host() {
    let ws = Ws::new();
    let me = std::process::id();
    let code = format!(
        "import os, errno\ntry:\n    os.kill({me}, 0); print('ok')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])"
    );
    let o = py(&policy(&ws), &code);
    ok(&o);
    assert_eq!(out(&o), "EPERM");
    // Control: an unconfined process of the same user can.
    assert_eq!(host_py(&code), "ok");
}

#[test]
fn sandbox_can_signal_its_own_children() {
    let ws = Ws::new();
    let code = "import subprocess, signal\np = subprocess.Popen(['sleep', '30'])\np.send_signal(signal.SIGTERM)\nprint(p.wait())";
    let o = py(&policy(&ws), code);
    ok(&o);
    assert_eq!(out(&o), "-15");
}

#[test]
fn sandbox_cannot_signal_a_sibling_sandbox() {
    let ws = Ws::new();
    let sb = Sandbox::new(policy(&ws)).unwrap();
    let victim = sb.spawn(Command::new(["sleep", "30"])).unwrap();
    let pid = victim.pid();
    let code = format!(
        "import os, errno\ntry:\n    os.kill({pid}, 9); print('killed')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])"
    );
    let o = py(&policy(&ws), &code);
    ok(&o);
    assert_eq!(out(&o), "EPERM");
    drop(victim);
}

#[test]
fn ptrace_of_anything_is_refused() {
    let ws = Ws::new();
    let me = std::process::id();
    let code = format!(
        r#"
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
r = libc.ptrace(16, {me}, 0, 0)
print(errno.errorcode[ctypes.get_errno()] if r < 0 else 'attached')
r = libc.ptrace(0, 0, 0, 0)
print(errno.errorcode[ctypes.get_errno()] if r < 0 else 'traceme')
"#
    );
    let o = py(&policy(&ws), &code);
    ok(&o);
    assert_eq!(out(&o), "EPERM\nEPERM");
}

#[test]
fn clone_parent_is_refused_so_the_host_gets_no_zombies() {
    let ws = Ws::new();
    let code = "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\n\
                r = libc.syscall(56, 0x8000 | 17, 0, 0, 0, 0)\n\
                if r == 0:\n    libc.syscall(60, 0)\n\
                print(errno.errorcode[ctypes.get_errno()] if r < 0 else 'cloned')";
    let o = py(&policy(&ws), code);
    ok(&o);
    assert_eq!(out(&o), "EPERM");
}

/// Every way to act on another process by pid or handle, tried on `v`; prints `name=result` for
/// each. `kill(-1)` is left out: unconfined (the control), it would signal the whole machine.
fn attack_code(v: i32) -> String {
    format!(
        r#"
import os, signal, errno, ctypes, fcntl, resource, struct, time
libc = ctypes.CDLL(None, use_errno=True)
v = {v}
res = []
def t(name, f):
    try:
        f(); res.append(name + '=ok')
    except OSError as e:
        res.append(name + '=' + errno.errorcode[e.errno])
def sc(*a):
    if libc.syscall(*a) < 0:
        e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
def setown():
    r, w = os.pipe()
    fcntl.fcntl(r, fcntl.F_SETOWN, v)
    fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
    os.write(w, b'x'); time.sleep(0.05)
info = ctypes.create_string_buffer(128)
struct.pack_into('iii', info, 0, 15, 0, -1)
struct.pack_into('ii', info, 16, os.getpid(), os.getuid())
t('prlimit', lambda: resource.prlimit(v, resource.RLIMIT_NOFILE, (5, 5)))
t('setpriority', lambda: os.setpriority(os.PRIO_PROCESS, v, 19))
t('affinity', lambda: os.sched_setaffinity(v, {{0}}))
t('ioprio', lambda: sc(251, 1, v, (3 << 13)))
t('setown', setown)
t('pidfd', lambda: signal.pidfd_send_signal(os.pidfd_open(v), 15))
t('sigqueue', lambda: sc(129, v, 15, info))
t('tgkill', lambda: sc(234, v, v, 15))
t('tkill', lambda: sc(200, v, 15))
t('killpg', lambda: os.killpg(v, 15))
t('kill', lambda: os.kill(v, 15))
print(' '.join(res))
"#
    )
}

#[test]
fn no_syscall_reaches_a_host_process_of_the_same_user() {
    for (name, k) in kernels(6) {
        let ws = Ws::new();
        let mut v = Victim::new();
        let (limits, stat, cpus) = (
            v.proc_file("limits"),
            v.proc_file("stat"),
            v.proc_file("status"),
        );
        let mut p = policy(&ws);
        // Landlock's own scoping leaves F_SETOWN and pidfd_open to a host process allowed (the
        // signal is what it stops); the stand-in refuses them.
        let landlock = k.landlock_abi >= 6;
        p.max_processes = Some(8);
        let o = py_on(k, &p, &attack_code(v.pid()));
        ok(&o);
        for r in out(&o).split(' ') {
            let allowed_here = landlock && r == "setown=ok";
            assert!(
                allowed_here || r.ends_with("=EPERM") || r.ends_with("=ESRCH"),
                "{name}: {r} ({})",
                out(&o)
            );
        }
        assert!(
            v.alive(),
            "{name}: the host process was killed: {}",
            out(&o)
        );
        assert_eq!(v.proc_file("limits"), limits, "{name}: limits changed");
        let nice = |s: &str| {
            s.rsplit(')')
                .next()
                .map(|r| r.split(' ').nth(17).map(str::to_string))
        };
        assert_eq!(nice(&v.proc_file("stat")), nice(&stat), "{name}: reniced");
        let allowed = |s: &str| {
            s.lines()
                .find(|l| l.starts_with("Cpus_allowed_list"))
                .map(str::to_string)
        };
        assert_eq!(allowed(&v.proc_file("status")), allowed(&cpus), "{name}");
    }
    // Control: the same code, unconfined, reaches the process (its limit drops to 5, then a
    // signal kills it).
    let mut v = Victim::new();
    let out = host_py(&attack_code(v.pid()));
    assert!(out.contains("prlimit=ok"), "{out}");
    assert!(
        !v.alive(),
        "the control did not kill the host process: {out}"
    );
}

#[test]
fn signals_and_process_calls_inside_the_sandbox_still_work() {
    let code = r#"
import os, signal, subprocess, fcntl, threading, resource, ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
got = set()
for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGIO):
    signal.signal(s, lambda n, f: got.add(signal.Signals(n).name))
os.kill(os.getpid(), signal.SIGUSR1)
signal.pthread_kill(threading.get_ident(), signal.SIGUSR2)
main = threading.get_ident()
t = threading.Thread(target=lambda: signal.pthread_kill(main, signal.SIGUSR1)); t.start(); t.join()
os.killpg(os.getpgrp(), signal.SIGUSR1)
os.kill(0, signal.SIGUSR2)
r, w = os.pipe()
fcntl.fcntl(r, fcntl.F_SETOWN, os.getpid())
fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
os.write(w, b'x'); time.sleep(0.05)
fcntl.fcntl(r, fcntl.F_SETOWN, -os.getpgrp())
resource.prlimit(os.getpid(), resource.RLIMIT_NOFILE, (256, 256))
os.setpriority(os.PRIO_PROCESS, os.getpid(), 5)
os.sched_setaffinity(os.getpid(), os.sched_getaffinity(0))
p = subprocess.Popen(['sleep', '30'])
os.kill(p.pid, 0)
os.kill(p.pid, signal.SIGSTOP); os.kill(p.pid, signal.SIGCONT)
signal.pidfd_send_signal(os.pidfd_open(p.pid), signal.SIGTERM)
print(p.wait())
q = subprocess.Popen(['sleep', '30'])
assert libc.sigqueue(q.pid, signal.SIGTERM, ctypes.c_long(0)) == 0
print(q.wait())
r = subprocess.Popen(['sleep', '30'])
os.kill(-1, signal.SIGKILL)
print(r.wait())
print(sorted(got))
"#;
    for (name, k) in kernels(6) {
        let ws = Ws::new();
        let o = py_on(k, &policy(&ws), code);
        ok(&o);
        assert_eq!(
            out(&o),
            "-15\n-15\n-9\n['SIGIO', 'SIGUSR1', 'SIGUSR2']",
            "{name}: {}",
            err(&o)
        );
    }
}

#[test]
fn a_host_process_named_through_proc_cannot_be_signalled() {
    let code = |target: String| {
        format!(
            r#"
import os, signal, errno, subprocess
own = subprocess.Popen(['sleep', '30'])
target = {target}
fd = os.open('/proc/%d' % target, os.O_DIRECTORY)
try:
    signal.pidfd_send_signal(fd, signal.SIGTERM); print('sent')
except OSError as e:
    print(errno.errorcode[e.errno])
fd = os.open('/proc/%d' % own.pid, os.O_DIRECTORY)
signal.pidfd_send_signal(fd, signal.SIGTERM)
print(own.wait())
"#
        )
    };
    for (name, k) in kernels(6) {
        let ws = Ws::new();
        let mut v = Victim::new();
        let mut p = policy(&ws);
        p.fs_readable.push("/proc".into());
        let o = py_on(k, &p, &code(v.pid().to_string()));
        ok(&o);
        // The control in the same run: a process of the sandbox, named the same way, is reached.
        assert_eq!(out(&o), "EPERM\n-15", "{name}: {}", err(&o));
        assert!(v.alive(), "{name}");
    }
}
