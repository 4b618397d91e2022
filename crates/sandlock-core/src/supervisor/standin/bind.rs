//! `bind` without Landlock ABI 4: TCP port rules held by the supervisor.
//!
//! Before Linux 6.7, Landlock has no network rights, so the policy's bind rules
//! (`net_allow_bind`) are the supervisor's to hold. It cannot bind the sandbox's own socket (that
//! would take `pidfd_getfd`, which a restricted pod forbids), and it must not let the kernel run the
//! sandbox's `bind` after looking at it: another thread could rewrite the address (the port) or swap
//! the descriptor (`dup2` a TCP socket over a UNIX one) in between. So, as for `connect`, it binds
//! a socket of its own, to its own copy of the address, and installs it in place of the sandbox's
//! with `SECCOMP_IOCTL_NOTIF_ADDFD`. That holds for every `bind`, UNIX ones included (a UNIX
//! `bind` continued unchecked is exactly what the descriptor swap would exploit):
//! - TCP: the port must be allowed (port 0, an ephemeral port, needs a rule for 0, as in Landlock).
//!   The new socket has `SO_REUSEADDR` set, which servers almost always ask for; other options the
//!   sandbox set before `bind` do not carry over.
//! - UNIX, abstract or unnamed (autobind): bound as asked.
//! - UNIX, pathname: the directory must lie beneath a writable policy path (where Landlock would
//!   allow creating the socket file), and be writable by the sandbox's credentials; the socket file
//!   gets the sandbox's umask.
//!
//! Only policies that allow TCP on kernels without Landlock ABI 4 pay for this: without TCP, no TCP
//! socket can exist in the sandbox, and `bind` stays in the kernel.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use super::Scope;
use super::path::{Creds, absolute, fd_path, open_beneath};
use crate::fsview::creds::umask_of;
use crate::supervisor::connect::{install, mode, own_inode, sock_proto, socket_inode};
use crate::supervisor::notify::{Listener, Notification, read_mem};
use crate::sys;

/// `bind(fd, addr, len)`.
pub(crate) fn on_bind(l: &Listener, n: &Notification, scope: &Scope, bound: &mut Bound) {
    let fd = n.args[0];
    let kind = match sock_proto(n.pid, fd).as_deref() {
        Ok("TCP") => Kind::Tcp(libc::AF_INET),
        Ok("TCPv6") => Kind::Tcp(libc::AF_INET6),
        Ok("UNIX-STREAM") => Kind::Unix(libc::SOCK_STREAM),
        // The filter only lets stream and seqpacket UNIX sockets be made.
        Ok("UNIX") => Kind::Unix(libc::SOCK_SEQPACKET),
        Ok(_) => return l.deny(n.id, libc::EACCES),
        Err(e) => {
            return l.deny(
                n.id,
                match e.raw_os_error() {
                    Some(libc::ENOENT) => libc::EBADF,
                    Some(libc::EOPNOTSUPP | libc::ENODATA) => libc::ENOTSOCK,
                    _ => libc::EACCES,
                },
            );
        }
    };
    let len = n.args[2] as usize;
    if len > std::mem::size_of::<libc::sockaddr_storage>() {
        return l.deny(n.id, libc::EINVAL);
    }
    let addr = match read_mem(n.pid, n.args[1], len) {
        Ok(a) if a.len() == len => a,
        _ => return l.deny(n.id, libc::EFAULT),
    };
    // Every bind in such a sandbox comes here, so the sockets bound before are the ones we bound.
    // (Reading /proc/net/tcp instead would cost a millisecond per bind on a large machine: the
    // kernel walks its whole connection table.) A socket the sandbox connected is not known here:
    // binding it replaces it, where the kernel would say EINVAL.
    if socket_inode(n.pid, fd).is_some_and(|i| bound.contains(i)) {
        return l.deny(n.id, libc::EINVAL);
    }
    let ours = match kind {
        Kind::Tcp(family) => bind_tcp(family, &addr, scope),
        Kind::Unix(ty) => bind_unix(l, n, ty, &addr, scope),
    };
    match ours {
        Ok(sock) => {
            if let Some(i) = own_inode(&sock) {
                bound.add(i);
            }
            match mode(n.pid, fd) {
                Some((nonblocking, cloexec)) => {
                    install(l, n.id, &sock, fd as u32, cloexec, nonblocking, 0);
                }
                None => l.deny(n.id, libc::EBADF),
            }
        }
        Err(e) => l.deny(n.id, e),
    }
}

enum Kind {
    /// `AF_INET` or `AF_INET6`.
    Tcp(libc::c_int),
    /// `SOCK_STREAM` or `SOCK_SEQPACKET`.
    Unix(libc::c_int),
}

/// A new non-blocking, close-on-exec socket.
fn socket(family: libc::c_int, ty: libc::c_int) -> Result<OwnedFd, i32> {
    // SAFETY: socket takes integers and returns a new descriptor.
    let raw = unsafe { libc::socket(family, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(sys::errno());
    }
    // SAFETY: socket just returned this descriptor.
    Ok(unsafe { sys::owned(raw) })
}

fn bind_raw(sock: &OwnedFd, addr: &[u8]) -> Result<(), i32> {
    // SAFETY: `addr` holds `addr.len()` bytes of a socket address.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            addr.as_ptr().cast(),
            addr.len() as libc::socklen_t,
        )
    };
    if r < 0 { Err(sys::errno()) } else { Ok(()) }
}

fn bind_tcp(family: libc::c_int, addr: &[u8], scope: &Scope) -> Result<OwnedFd, i32> {
    let min = if family == libc::AF_INET {
        std::mem::size_of::<libc::sockaddr_in>()
    } else {
        // The kernel accepts the RFC 2133 size, without the scope id.
        24
    };
    if addr.len() < min {
        return Err(libc::EINVAL);
    }
    let sa_family = i32::from(u16::from_ne_bytes([addr[0], addr[1]]));
    // An IPv4 socket also takes AF_UNSPEC with the any address; whatever the family, the port is
    // in the same place.
    let family_ok = sa_family == family
        || (family == libc::AF_INET && sa_family == libc::AF_UNSPEC && addr[4..8] == [0; 4]);
    if !family_ok {
        return Err(libc::EAFNOSUPPORT);
    }
    let port = u16::from_be_bytes([addr[2], addr[3]]);
    // The supervisor may hold CAP_NET_BIND_SERVICE; the sandbox never does.
    if port != 0 && u32::from(port) < unprivileged_port_start() {
        return Err(libc::EACCES);
    }
    if !scope
        .sockets
        .bind
        .iter()
        .any(|r| (r.low..=r.high).contains(&port))
    {
        // What Landlock answers for a port the policy does not allow.
        return Err(libc::EACCES);
    }
    let sock = socket(family, libc::SOCK_STREAM)?;
    let one: libc::c_int = 1;
    // SAFETY: SO_REUSEADDR reads one int.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let mut copy = addr.to_vec();
    if sa_family == libc::AF_UNSPEC {
        copy[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    }
    bind_raw(&sock, &copy)?;
    Ok(sock)
}

fn bind_unix(
    l: &Listener,
    n: &Notification,
    ty: libc::c_int,
    addr: &[u8],
    scope: &Scope,
) -> Result<OwnedFd, i32> {
    if addr.len() < 2 || u16::from_ne_bytes([addr[0], addr[1]]) != libc::AF_UNIX as u16 {
        return Err(libc::EINVAL);
    }
    let name = &addr[2..];
    if name.is_empty() || name[0] == 0 {
        // Unnamed (autobind) or abstract: nothing on the filesystem.
        let sock = socket(libc::AF_UNIX, ty)?;
        bind_raw(&sock, addr)?;
        return Ok(sock);
    }
    let path: Vec<u8> = name.iter().take_while(|b| **b != 0).copied().collect();
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    let abs = absolute(n.pid, &path).map_err(errno)?;
    let (Some(parent), Some(base)) = (abs.parent(), abs.file_name()) else {
        return Err(libc::EADDRINUSE);
    };
    let creds = Creds::of(n.pid).ok_or(libc::ESRCH)?;
    let umask = umask_of(n.pid);
    if !l.id_valid(n.id) {
        return Err(libc::ESRCH);
    }
    let dir = open_beneath(parent, &scope.sockets.held, libc::O_DIRECTORY).map_err(errno)?;
    if !creds.may(&dir.fd, &dir.stat, (libc::W_OK | libc::X_OK) as u32) {
        return Err(libc::EACCES);
    }
    bind_in(ty, dir.fd.as_raw_fd(), base, umask)
}

/// Binds a new UNIX socket of type `ty` at `name` in the directory `dir` we hold, and gives the
/// socket file the mode the sandbox's `umask` would have. The path goes through the directory's
/// descriptor, so that nothing swapped into the sandbox's path since it was resolved can move
/// the socket file elsewhere.
pub(crate) fn bind_in(
    ty: libc::c_int,
    dir: RawFd,
    name: &std::ffi::OsStr,
    umask: Option<libc::mode_t>,
) -> Result<OwnedFd, i32> {
    let sock = socket(libc::AF_UNIX, ty)?;
    let full: Vec<u8> = format!("/proc/self/fd/{dir}/")
        .into_bytes()
        .into_iter()
        .chain(name.as_bytes().iter().copied())
        .collect();
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if full.len() >= sun.sun_path.len() {
        return Err(libc::ENAMETOOLONG);
    }
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in sun.sun_path.iter_mut().zip(&full) {
        *d = *s as libc::c_char;
    }
    // SAFETY: `sun` is a valid sockaddr_un; we pass its path's length plus the NUL.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sun as *const libc::sockaddr_un).cast(),
            (2 + full.len() + 1) as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(sys::errno());
    }
    if let Some(mask) = umask {
        give_mode(dir, name, 0o777 & !mask);
    }
    Ok(sock)
}

/// Gives the socket file `name` in directory `dir` the mode the sandbox's umask would have given
/// it. The name is opened without following a symlink and checked to be a socket first, and the
/// mode is set through that descriptor: a symlink renamed over the name in between gets nothing.
fn give_mode(dir: RawFd, name: &std::ffi::OsStr, mode: libc::mode_t) {
    let Ok(c) = CString::new(name.as_bytes()) else {
        return;
    };
    // SAFETY: openat on a name in a directory we hold.
    let fd = unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return;
    }
    // SAFETY: openat just returned this descriptor.
    let fd = unsafe { sys::owned(fd) };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` has room for one struct stat.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return;
    }
    // SAFETY: fstat succeeded.
    if unsafe { st.assume_init() }.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return;
    }
    if let Ok(p) = CString::new(fd_path(&fd)) {
        // SAFETY: chmod through the magic link of a descriptor we hold (the socket file itself).
        unsafe {
            libc::chmod(p.as_ptr(), mode);
        }
    }
}

/// The lowest port a process without `CAP_NET_BIND_SERVICE` may bind
/// (`net.ipv4.ip_unprivileged_port_start`, 1024 unless changed; 0 in many pods).
fn unprivileged_port_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// The sockets this stand-in bound, so that binding one again fails with `EINVAL` as it would in
/// the kernel. Bounded: a sandbox that binds and closes sockets in a loop cannot grow it without end
/// (the oldest are forgotten; binding one of those again replaces it instead of failing).
#[derive(Debug, Default)]
pub(crate) struct Bound {
    inodes: std::collections::VecDeque<u64>,
}

impl Bound {
    const KEEP: usize = 1024;

    fn contains(&self, inode: u64) -> bool {
        self.inodes.contains(&inode)
    }

    fn add(&mut self, inode: u64) {
        if self.inodes.len() == Self::KEEP {
            self.inodes.pop_front();
        }
        self.inodes.push_back(inode);
    }
}
