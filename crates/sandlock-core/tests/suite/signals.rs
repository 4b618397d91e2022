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
