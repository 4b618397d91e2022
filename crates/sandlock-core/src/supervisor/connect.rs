//! Socket mediation: what Landlock (ABI 7 and older) cannot decide about UNIX and TCP sockets.
//!
//! Landlock does not look at `connect` on pathname UNIX sockets, so without help a sandbox could
//! reach any host service whose socket path it can name (`/run/docker.sock` when the host runs as
//! root, the D-Bus system bus, another sandbox's server). And TCP `listen` on an unbound socket binds
//! an ephemeral port without the `bind` that Landlock checks.
//!
//! `connect` on a UNIX socket is therefore *emulated*: the supervisor reads the address once, connects
//! a socket of its own, checks who answered (a process of this sandbox, or a server bound inside one
//! of the policy's paths), and only then installs its socket in place of the sandbox's with
//! `SECCOMP_IOCTL_NOTIF_ADDFD`. Because the supervisor connects with its own copy of the address,
//! rewriting the address after the check (the classic user-notification race) changes nothing.
//!
//! Residual risk, documented in docs/security.md: the socket *type* is looked up from the sandbox's
//! fd table before the kernel acts, so a multi-threaded sandbox that swaps a UNIX socket onto the fd
//! number between our lookup and the kernel's (a window of microseconds) could have a connect we
//! classified as TCP run on a UNIX socket. Landlock ABI 8 (`LANDLOCK_ACCESS_FS_RESOLVE_UNIX`) closes
//! this in the kernel.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use super::notify::{Listener, Notification};
use crate::sys;

/// What the mediation needs to know about the sandbox.
#[derive(Debug, Clone, Default)]
pub(crate) struct SocketRules {
    /// Canonical policy paths: a server bound beneath one of these may be reached.
    pub(crate) roots: Vec<PathBuf>,
    /// TCP sockets may listen (the policy allows binding some port).
    pub(crate) tcp_listen: bool,
}

/// How the kernel names the protocol of a socket (`system.sockprotoname`).
fn sock_proto(pid: u32, fd: u64) -> std::io::Result<String> {
    let path = CString::new(format!("/proc/{pid}/fd/{fd}")).map_err(std::io::Error::other)?;
    let name = c"system.sockprotoname";
    let mut buf = [0u8; 64];
    // SAFETY: getxattr writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let bytes = &buf[..n as usize];
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    Ok(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

/// The fd's open flags from `/proc/<pid>/fdinfo/<fd>` (octal `flags:` line).
fn fd_flags(pid: u32, fd: u64) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|v| i32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0)
}

/// Reads `len` bytes at `addr` in process `pid`.
fn read_mem(pid: u32, addr: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` covers our own buffer of `len` bytes; the kernel checks the remote range.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Decides a `connect` notification. Answers it (with `listener`) in every case.
pub(crate) fn on_connect(l: &Listener, n: &Notification, rules: &SocketRules, pgid: libc::pid_t) {
    let (fd, addr, len) = (n.args[0], n.args[1], n.args[2] as usize);
    let ty = match sock_proto(n.pid, fd).as_deref() {
        Ok("UNIX-STREAM") => libc::SOCK_STREAM,
        // The filter refuses UNIX datagram sockets, so plain "UNIX" is a SOCK_SEQPACKET socket.
        Ok("UNIX") => libc::SOCK_SEQPACKET,
        // TCP: Landlock decides. Not a socket or not open: the kernel reports the error.
        Ok(_) => return l.allow(n.id),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::ENOENT | libc::ENODATA)
            ) =>
        {
            return l.allow(n.id);
        }
        // We cannot see the fd (the process vanished, or /proc is denied to us): fail closed.
        Err(_) => return l.deny(n.id, libc::EACCES),
    };
    let size = std::mem::size_of::<libc::sockaddr_un>();
    if !(3..=size).contains(&len) {
        return l.deny(n.id, libc::EINVAL);
    }
    let Ok(bytes) = read_mem(n.pid, addr, len) else {
        return l.deny(n.id, libc::EFAULT);
    };
    if bytes.len() != len || u16::from_ne_bytes([bytes[0], bytes[1]]) != libc::AF_UNIX as u16 {
        return l.deny(n.id, libc::EINVAL);
    }
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in sun.sun_path.iter_mut().zip(&bytes[2..]) {
        *dst = *src as libc::c_char;
    }
    let abstract_name = bytes[2] == 0;
    if !abstract_name {
        // Refuse a path outside the policy before touching it: connecting alone can start a
        // socket-activated host service.
        match canonical_target(&sun, n.pid) {
            Ok(p) if beneath(&p, &rules.roots) => {}
            Ok(_) => return l.deny(n.id, libc::EACCES),
            Err(e) => return l.deny(n.id, e.raw_os_error().unwrap_or(libc::ENOENT)),
        }
    }
    let flags = fd_flags(n.pid, fd);

    let ours = match connect_own(ty, &sun, len, n.pid, abstract_name) {
        Ok(s) => s,
        Err(e) => return l.deny(n.id, e.raw_os_error().unwrap_or(libc::ECONNREFUSED)),
    };
    let from_sandbox = peer_pgid(&ours) == Some(pgid);
    let inside_policy =
        !abstract_name && peer_bound_path(&ours).is_some_and(|p| beneath(&p, &rules.roots));
    if !(from_sandbox || inside_policy) {
        // Landlock answers EPERM for scoped abstract sockets; a pathname socket outside the policy
        // reads like a file outside it.
        return l.deny(
            n.id,
            if abstract_name {
                libc::EPERM
            } else {
                libc::EACCES
            },
        );
    }
    if flags & libc::O_NONBLOCK == 0 && sys::set_nonblocking(ours.as_raw_fd(), false).is_err() {
        return l.deny(n.id, libc::EIO);
    }
    let cloexec = if flags & libc::O_CLOEXEC != 0 {
        libc::O_CLOEXEC
    } else {
        0
    };
    match l.replace_fd(n.id, &ours, fd as u32, cloexec as u32) {
        Ok(()) => l.reply(n.id, 0),
        Err(e) => l.deny(n.id, e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// Connects a socket of our own to the address the sandbox asked for. A relative pathname is
/// resolved from the sandbox process's working directory.
fn connect_own(
    ty: libc::c_int,
    sun: &libc::sockaddr_un,
    len: usize,
    pid: u32,
    abstract_name: bool,
) -> std::io::Result<OwnedFd> {
    // SAFETY: socket takes integers and returns a new descriptor.
    let raw = unsafe {
        libc::socket(
            libc::AF_UNIX,
            ty | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: socket just returned this descriptor.
    let sock = unsafe { sys::owned(raw) };
    let mut target = *sun;
    let mut target_len = len;
    if !abstract_name && sun.sun_path[0] as u8 != b'/' {
        let rel: Vec<u8> = sun
            .sun_path
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        let full = format!("/proc/{pid}/cwd/{}", String::from_utf8_lossy(&rel));
        if full.len() >= target.sun_path.len() {
            return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        // SAFETY: sockaddr_un is plain data.
        target = unsafe { std::mem::zeroed() };
        target.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (dst, src) in target.sun_path.iter_mut().zip(full.bytes()) {
            *dst = src as libc::c_char;
        }
        target_len = 2 + full.len() + 1;
    }
    // SAFETY: `target` is a valid sockaddr_un of at least `target_len` bytes.
    let r = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&target as *const libc::sockaddr_un).cast(),
            target_len as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sock)
}

/// The canonical path a pathname address names, resolved as the sandbox process would.
fn canonical_target(sun: &libc::sockaddr_un, pid: u32) -> std::io::Result<PathBuf> {
    let bytes: Vec<u8> = sun
        .sun_path
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let p = if text.starts_with('/') {
        PathBuf::from(text)
    } else {
        PathBuf::from(format!("/proc/{pid}/cwd")).join(text)
    };
    std::fs::canonicalize(p)
}

/// The process group of the process that listens on the other end.
fn peer_pgid(sock: &OwnedFd) -> Option<libc::pid_t> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes one ucred.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r < 0 || cred.pid <= 0 {
        return None;
    }
    // SAFETY: getpgid takes an integer.
    let g = unsafe { libc::getpgid(cred.pid) };
    (g > 0).then_some(g)
}

/// The pathname the server bound, as the kernel recorded it.
fn peer_bound_path(sock: &OwnedFd) -> Option<PathBuf> {
    // SAFETY: sockaddr_un is plain data.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: getpeername writes at most `len` bytes into `sun`.
    let r = unsafe {
        libc::getpeername(
            sock.as_raw_fd(),
            (&mut sun as *mut libc::sockaddr_un).cast(),
            &mut len,
        )
    };
    if r < 0 || (len as usize) <= 2 || sun.sun_path[0] == 0 {
        return None;
    }
    let bytes: Vec<u8> = sun
        .sun_path
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    Some(PathBuf::from(String::from_utf8(bytes).ok()?))
}

/// Whether `p` (absolute, no `..`) lies beneath one of `roots`.
fn beneath(p: &Path, roots: &[PathBuf]) -> bool {
    p.is_absolute()
        && !p.components().any(|c| c == Component::ParentDir)
        && roots.iter().any(|r| p.starts_with(r))
}

/// Decides a `listen` notification: a TCP socket may only listen if the policy allows binding.
/// (An unbound TCP socket that listens binds an ephemeral port, which Landlock never sees.)
pub(crate) fn on_listen(l: &Listener, n: &Notification, rules: &SocketRules) {
    match sock_proto(n.pid, n.args[0]).as_deref() {
        Ok("TCP" | "TCPv6") if !rules.tcp_listen => l.deny(n.id, libc::EACCES),
        _ => l.allow(n.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beneath_is_lexical_and_refuses_dotdot() {
        let roots = vec![PathBuf::from("/tmp/ws")];
        assert!(beneath(Path::new("/tmp/ws/sock"), &roots));
        assert!(beneath(Path::new("/tmp/ws/a/b.sock"), &roots));
        assert!(!beneath(Path::new("/tmp/ws/../x.sock"), &roots));
        assert!(!beneath(Path::new("/tmp/wsx/sock"), &roots));
        assert!(!beneath(Path::new("/run/docker.sock"), &roots));
        assert!(!beneath(Path::new("relative.sock"), &roots));
    }
}
