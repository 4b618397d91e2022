//! Socket mediation: what Landlock (ABI 7 and older) cannot decide safely.
//!
//! Landlock does not look at `connect` on pathname UNIX sockets, so without help a sandbox could
//! reach any host service whose socket path it can name (`/run/docker.sock` when the host runs as
//! root, the D-Bus system bus, another sandbox's server). And letting the kernel run a `connect`
//! after the supervisor looked at it (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`) is unsafe: another thread
//! can swap the descriptor (`dup2` a UNIX socket onto it) or rewrite the address between our look
//! and the kernel's.
//!
//! So **no `connect` is ever continued**. The supervisor reads the address once, decides, connects
//! a socket of its own with its own copy of the address, and installs that socket in place of the
//! sandbox's with `SECCOMP_IOCTL_NOTIF_ADDFD` (which atomically replaces whatever the descriptor
//! number holds by then). For UNIX sockets it accepts a peer that belongs to this sandbox, or a
//! server bound beneath a writable policy path; for TCP it applies the policy's destinations
//! (`crate::net`), and a destination the HTTP rules govern gets a socket connected to the HTTP
//! proxy instead (`crate::net::proxy`). A blocking TCP connect waits in the supervisor's event
//! loop, not in a thread.
//!
//! What the sandbox had set on its own socket before `connect` (socket options, an explicit
//! `bind`) does not carry over to the installed one.
//!
//! `listen` on TCP (only mediated when the policy allows TCP) is refused unless the policy allows
//! binding; that decision is still continued, see docs/security.md for the residual race.

use std::ffi::CString;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use super::notify::{Listener, Notification, read_mem_into};
use super::reconnect::Reconnects;
use crate::policy::PortRange;
use crate::sys;

/// What the mediation needs to know about the sandbox.
#[derive(Debug, Clone, Default)]
pub(crate) struct SocketRules {
    /// Canonical writable policy paths: a server bound beneath one of these may be reached.
    pub(crate) roots: Vec<PathBuf>,
    /// The same paths, held open since the plan was made, for resolving the sandbox's paths
    /// beneath them without a race (see `standin/path.rs`).
    pub(crate) held: std::sync::Arc<super::standin::Roots>,
    /// Which TCP destinations the sandbox may connect to.
    pub(crate) net: crate::net::NetPolicy,
    /// TCP sockets may listen (the policy allows binding some port).
    pub(crate) tcp_listen: bool,
    /// TCP ports the sandbox may bind (decided here only where Landlock cannot, see
    /// `crate::standin::bind`).
    pub(crate) bind: Vec<PortRange>,
    /// The HTTP proxy, when the policy has HTTP rules: connects it governs go to it.
    pub(crate) proxy: Option<std::sync::Arc<crate::net::proxy::Proxy>>,
    /// What the proxy reports about this run's requests (each run gets its own).
    pub(crate) run_log: std::sync::Arc<crate::net::proxy::RunLog>,
}

/// A TCP connect in progress for a blocking socket: the sandbox's thread waits in its
/// notification until our socket is connected (or fails).
pub(crate) struct PendingConnect {
    pub(crate) sock: OwnedFd,
    id: u64,
    target: u32,
    cloexec: u32,
    /// For a connection to the HTTP proxy: the proxy, and the port it expects the connection
    /// from (withdrawn if the connect fails).
    proxied: Option<(std::sync::Arc<crate::net::proxy::Proxy>, u16)>,
}

/// How the kernel names the protocol of a socket (`system.sockprotoname`).
pub(crate) fn sock_proto(pid: u32, fd: u64) -> std::io::Result<String> {
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

/// What `/proc/<pid>/fdinfo/<fd>` says about a descriptor of the sandbox.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FdInfo {
    /// Its open flags (the octal `flags:` line); 0 (blocking, inherited across exec) if they
    /// cannot be read.
    pub(crate) flags: i32,
    /// The inode of what it refers to (`ino:`), 0 if unknown.
    pub(crate) ino: u64,
}

/// Reads what `fdinfo` says about the sandbox's descriptor `fd`, or `None` when it has no such
/// descriptor. It neither allocates nor reads past the lines it needs; a connect goes through
/// [`FdInfos`] instead, which keeps the file open.
pub(crate) fn fd_info(pid: u32, fd: u64) -> Option<FdInfo> {
    match open_fd_info(pid, fd) {
        Ok(file) => Some(read_fd_info(&file, pid, fd).unwrap_or(FdInfo { flags: 0, ino: 0 })),
        Err(e) => (e != libc::ENOENT).then_some(FdInfo { flags: 0, ino: 0 }),
    }
}

/// Opens `/proc/<pid>/fdinfo/<fd>`, or the errno.
fn open_fd_info(pid: u32, fd: u64) -> Result<OwnedFd, i32> {
    use std::io::Write;
    let mut path = [0u8; 64];
    let mut w = &mut path[..];
    if write!(w, "/proc/{pid}/fdinfo/{fd}\0").is_err() {
        return Err(libc::EINVAL);
    }
    // SAFETY: `path` holds a NUL-terminated string.
    let raw = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(sys::errno());
    }
    // SAFETY: open just returned this descriptor.
    Ok(unsafe { sys::owned(raw) })
}

/// Reads an open `fdinfo` file from its start. The kernel looks the descriptor up again on every
/// read from offset 0, so the file tells what the descriptor holds now, not what it held when it
/// was opened; the read fails once the descriptor is closed or the process is gone.
fn read_fd_info(file: &OwnedFd, pid: u32, fd: u64) -> Option<FdInfo> {
    // "pos:\t<offset>\nflags:\t<octal>\nmnt_id:\t<n>\nino:\t<n>\n": well within this.
    let mut buf = [0u8; 128];
    // SAFETY: pread writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::pread(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n <= 0 {
        return None;
    }
    let buf = &buf[..n as usize];
    let field = |name: &[u8], radix: u32| {
        buf.split(|b| *b == b'\n')
            .find_map(|line| line.strip_prefix(name))
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| u64::from_str_radix(v.trim(), radix).ok())
    };
    Some(FdInfo {
        flags: field(b"flags:", 8).map_or(0, |f| f as i32),
        // Older kernels do not show the inode in fdinfo; the link names it for a socket.
        ino: field(b"ino:", 10).unwrap_or_else(|| socket_inode(pid, fd).unwrap_or(0)),
    })
}

/// The `fdinfo` files of the descriptors the sandbox connects on, kept open.
///
/// Opening `/proc/<pid>/fdinfo/<fd>` costs about five times as much as reading it again (5.5 us
/// against 1.1 us here, docs/perf/net.md), and a client that connects anew for every request
/// uses the same few descriptor numbers over and over. A kept file is only a faster way to ask the
/// same question: every read looks the descriptor up afresh. A read that fails (the descriptor
/// closed, the process gone and its pid perhaps reused) drops the file, and the answer comes from
/// a fresh open, as without the cache.
#[derive(Default)]
pub(crate) struct FdInfos {
    /// `(tid, fd, file)`, most recently opened last.
    open: Vec<(u32, u64, OwnedFd)>,
}

impl FdInfos {
    /// At most this many files are kept (a supervisor runs beside others in one host process).
    const KEEP: usize = 16;

    /// What [`fd_info`] answers, from a kept file when there is one.
    pub(crate) fn get(&mut self, pid: u32, fd: u64) -> Option<FdInfo> {
        if let Some(i) = self.open.iter().position(|(p, f, _)| *p == pid && *f == fd) {
            if let Some(info) = read_fd_info(&self.open[i].2, pid, fd) {
                return Some(info);
            }
            self.open.remove(i);
        }
        let file = match open_fd_info(pid, fd) {
            Ok(file) => file,
            Err(e) => return (e != libc::ENOENT).then_some(FdInfo { flags: 0, ino: 0 }),
        };
        let info = read_fd_info(&file, pid, fd).unwrap_or(FdInfo { flags: 0, ino: 0 });
        if self.open.len() == Self::KEEP {
            self.open.remove(0);
        }
        self.open.push((pid, fd, file));
        Some(info)
    }
}

/// The inode of the socket at descriptor `fd` of process `pid` (`socket:[N]` in `/proc`).
pub(crate) fn socket_inode(pid: u32, fd: u64) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The inode of a socket we hold.
pub(crate) fn own_inode(sock: &OwnedFd) -> Option<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` has room for one struct stat.
    if unsafe { libc::fstat(sock.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded.
    Some(unsafe { st.assume_init() }.st_ino)
}

/// What a `connect` left for the event loop to watch.
pub(crate) enum Connecting {
    /// A blocking TCP connect still in progress: watch the socket, then [`finish_connect`].
    Tcp(PendingConnect),
    /// The sandbox asking its nameserver: the supervisor answers on this session.
    Dns(crate::net::dns::Session),
}

/// The largest address `connect` takes (`sizeof(struct sockaddr_storage)`); the kernel refuses
/// longer ones with `EINVAL` whatever the socket.
const SOCKADDR_MAX: usize = 128;

/// Decides a `connect` notification. Answers it, and returns what the event loop must watch, if
/// anything.
///
/// The address is read once, into our own buffer. An IPv4 or IPv6 address goes straight to the TCP
/// emulation without asking `/proc` what the descriptor is (that lookup is most of the cost of a
/// connect): whatever the descriptor holds, it ends up replaced by a TCP socket of ours, connected
/// to a destination the policy allows, which the sandbox could have made itself (see
/// docs/security.md, "Emulated connects"). Only other families need the socket's kind.
pub(crate) fn on_connect(
    l: &Listener,
    n: &Notification,
    rules: &SocketRules,
    pgid: libc::pid_t,
    reconnects: &mut Reconnects,
    infos: &mut FdInfos,
    view: Option<&crate::fsview::View>,
) -> Option<Connecting> {
    let len = n.args[2] as usize;
    if !(2..=SOCKADDR_MAX).contains(&len) {
        l.deny(n.id, libc::EINVAL);
        return None;
    }
    let mut buf = [0u8; SOCKADDR_MAX];
    match read_mem_into(n.pid, n.args[1], &mut buf[..len]) {
        Ok(got) if got == len => {}
        _ => {
            l.deny(n.id, libc::EFAULT);
            return None;
        }
    }
    let addr = &buf[..len];
    let family = i32::from(u16::from_ne_bytes([addr[0], addr[1]]));
    if family == libc::AF_INET || family == libc::AF_INET6 {
        return on_tcp_connect(l, n, rules, (reconnects, infos), family, addr);
    }
    match sock_proto(n.pid, n.args[0]).as_deref() {
        Ok("UNIX-STREAM") => on_unix_connect(l, n, rules, pgid, libc::SOCK_STREAM, addr, view),
        // The filter only lets stream and seqpacket UNIX sockets be made, so "UNIX" is seqpacket.
        Ok("UNIX") => on_unix_connect(l, n, rules, pgid, libc::SOCK_SEQPACKET, addr, view),
        // A TCP socket given another family: AF_UNSPEC (which would disconnect it) or nonsense.
        Ok("TCP" | "TCPv6") => l.deny(n.id, libc::EAFNOSUPPORT),
        // No other kind of socket can exist in a sandbox.
        Ok(_) => l.deny(n.id, libc::EACCES),
        Err(e) => l.deny(
            n.id,
            match e.raw_os_error() {
                Some(libc::ENOENT) => libc::EBADF,
                Some(libc::EOPNOTSUPP | libc::ENODATA) => libc::ENOTSOCK,
                // We cannot see the fd (the process vanished, or /proc is denied to us).
                _ => libc::EACCES,
            },
        ),
    }
    None
}

/// The fd's blocking mode and close-on-exec flag, to give our socket the same; `None` when the
/// sandbox has no such descriptor.
pub(crate) fn mode(pid: u32, fd: u64) -> Option<(bool, u32)> {
    fd_info(pid, fd).map(|i| i.mode())
}

impl FdInfo {
    /// Whether it is non-blocking, and its close-on-exec flag as `ADDFD` takes it.
    pub(crate) fn mode(self) -> (bool, u32) {
        let cloexec = if self.flags & libc::O_CLOEXEC != 0 {
            libc::O_CLOEXEC as u32
        } else {
            0
        };
        (self.flags & libc::O_NONBLOCK != 0, cloexec)
    }
}

/// Installs `sock` as the sandbox's descriptor and completes the syscall with `result`; whether
/// it was installed.
pub(crate) fn install(
    l: &Listener,
    id: u64,
    sock: &OwnedFd,
    target: u32,
    cloexec: u32,
    nonblocking: bool,
    result: i64,
) -> bool {
    if !nonblocking && sys::set_nonblocking(sock.as_raw_fd(), false).is_err() {
        l.deny(id, libc::EIO);
        return false;
    }
    match l.replace_fd(id, sock, target, cloexec) {
        Ok(()) => {
            l.reply(id, result);
            true
        }
        Err(e) => {
            l.deny(id, e.raw_os_error().unwrap_or(libc::EIO));
            false
        }
    }
}

fn on_tcp_connect(
    l: &Listener,
    n: &Notification,
    rules: &SocketRules,
    (reconnects, infos): (&mut Reconnects, &mut FdInfos),
    family: libc::c_int,
    addr: &[u8],
) -> Option<Connecting> {
    let fd = n.args[0];
    let Some(info) = infos.get(n.pid, fd) else {
        l.deny(n.id, libc::EBADF);
        return None;
    };
    // A second connect on a socket we installed: answered, nothing connected (see reconnect.rs).
    if let Some(answer) = reconnects.answer(info.ino) {
        l.reply(n.id, answer);
        return None;
    }
    let (nonblocking, cloexec) = info.mode();
    let min = match family {
        libc::AF_INET => std::mem::size_of::<libc::sockaddr_in>(),
        // The kernel accepts the RFC 2133 size, without the scope id.
        _ => 24,
    };
    if addr.len() < min {
        l.deny(n.id, libc::EINVAL);
        return None;
    }
    let port = u16::from_be_bytes([addr[2], addr[3]]);
    let ip = match family {
        libc::AF_INET => IpAddr::from([addr[4], addr[5], addr[6], addr[7]]),
        _ => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&addr[8..24]);
            IpAddr::from(a)
        }
    };
    if rules.net.is_dns(ip, port) {
        return dns_session(l, n, info);
    }
    let proxy = rules
        .proxy
        .as_ref()
        .filter(|p| !rules.net.denies(ip, port) && p.routes(ip, port, &rules.net));
    if proxy.is_none() && !rules.net.permits(ip, port) {
        // What Landlock answers for a destination the policy does not allow.
        l.deny(n.id, libc::EACCES);
        return None;
    }
    let connected = match proxy {
        Some(p) => p.connect(family, SocketAddr::new(ip, port), &rules.run_log),
        None => connect_direct(family, addr),
    };
    let (sock, in_progress) = match connected {
        Ok(c) => c,
        Err(e) => {
            l.deny(n.id, e);
            return None;
        }
    };
    match (in_progress, nonblocking) {
        (false, _) => {
            if install(l, n.id, &sock, fd as u32, cloexec, nonblocking, 0) {
                reconnects.connected(&sock);
            }
        }
        (true, true) => {
            let installed = install(
                l,
                n.id,
                &sock,
                fd as u32,
                cloexec,
                true,
                -i64::from(libc::EINPROGRESS),
            );
            if let Some(ino) = own_inode(&sock).filter(|_| installed) {
                reconnects.hold(ino, sock);
            }
        }
        // A blocking connect whose handshake already ended (to this host's loopback): answered
        // now, as the kernel would, without a round through the event loop.
        (true, false) if super::reconnect::established(&sock) => {
            if install(l, n.id, &sock, fd as u32, cloexec, false, 0) {
                reconnects.connected(&sock);
            }
        }
        (true, false) => {
            let proxied = proxy.and_then(|p| {
                sys::local_port(&sock)
                    .ok()
                    .map(|port| (std::sync::Arc::clone(p), port))
            });
            return Some(Connecting::Tcp(PendingConnect {
                sock,
                id: n.id,
                target: fd as u32,
                cloexec,
                proxied,
            }));
        }
    }
    None
}

/// A new socket of ours connected (or connecting) to the sandbox's address, non-blocking:
/// `(socket, still in progress)`, or the errno to answer.
fn connect_direct(family: libc::c_int, addr: &[u8]) -> Result<(OwnedFd, bool), i32> {
    // SAFETY: socket takes integers and returns a new descriptor.
    let raw = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(sys::errno());
    }
    // SAFETY: socket just returned this descriptor.
    let sock = unsafe { sys::owned(raw) };
    // SAFETY: `addr` is our own copy of the sandbox's address, as long as its family needs.
    let r = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            addr.as_ptr().cast(),
            addr.len() as libc::socklen_t,
        )
    };
    match if r < 0 { sys::errno() } else { 0 } {
        0 => Ok((sock, false)),
        libc::EINPROGRESS => Ok((sock, true)),
        e => Err(e),
    }
}

/// Connects the sandbox's socket to the supervisor's resolver: one end of a socket pair goes in
/// place of its descriptor, the other is the session the supervisor answers on.
fn dns_session(l: &Listener, n: &Notification, info: FdInfo) -> Option<Connecting> {
    let fd = n.args[0];
    let (ours, theirs) = match sys::socketpair(libc::SOCK_STREAM) {
        Ok(p) => p,
        Err(e) => {
            l.deny(n.id, e.raw_os_error().unwrap_or(libc::EIO));
            return None;
        }
    };
    if sys::set_nonblocking(ours.as_raw_fd(), true).is_err() {
        l.deny(n.id, libc::EIO);
        return None;
    }
    let (nonblocking, cloexec) = info.mode();
    if nonblocking && sys::set_nonblocking(theirs.as_raw_fd(), true).is_err() {
        l.deny(n.id, libc::EIO);
        return None;
    }
    install(l, n.id, &theirs, fd as u32, cloexec, nonblocking, 0);
    Some(Connecting::Dns(crate::net::dns::Session::new(ours)))
}

/// Completes a blocking TCP connect once our socket is writable (connected, or failed).
pub(crate) fn finish_connect(l: &Listener, p: PendingConnect, reconnects: &mut Reconnects) {
    let failed = match sys::take_socket_error(&p.sock) {
        Ok(0) => {
            if install(l, p.id, &p.sock, p.target, p.cloexec, false, 0) {
                reconnects.connected(&p.sock);
            }
            return;
        }
        Ok(e) => e,
        Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
    };
    if let Some((proxy, port)) = &p.proxied {
        proxy.forget(*port);
    }
    l.deny(p.id, failed);
}

fn on_unix_connect(
    l: &Listener,
    n: &Notification,
    rules: &SocketRules,
    pgid: libc::pid_t,
    ty: libc::c_int,
    bytes: &[u8],
    view: Option<&crate::fsview::View>,
) {
    let fd = n.args[0];
    let size = std::mem::size_of::<libc::sockaddr_un>();
    if !(3..=size).contains(&bytes.len()) {
        return l.deny(n.id, libc::EINVAL);
    }
    if u16::from_ne_bytes([bytes[0], bytes[1]]) != libc::AF_UNIX as u16 {
        return l.deny(n.id, libc::EINVAL);
    }
    let name = &bytes[2..];
    let abstract_name = name[0] == 0;
    // For a pathname socket: the socket file, opened beneath a writable root (see
    // `standin/path.rs`), and connected to through that descriptor.
    let mut _held = None;
    let target = if abstract_name {
        if !sandbox_listens_on(name, n.pid, pgid) {
            // Only this sandbox's own abstract servers are reachable (as Landlock's scoping has
            // it); refused before we touch the name, so no host service sees a connection.
            return l.deny(n.id, libc::EPERM);
        }
        name.to_vec()
    } else {
        // Refuse a path outside the policy before touching it (connecting alone can start a
        // socket-activated host service), and connect to the very file we checked, through a
        // descriptor of it: the sandbox may re-point its string, or swap a directory of the
        // path for a symlink, meanwhile.
        let path: Vec<u8> = name.iter().take_while(|b| **b != 0).copied().collect();
        // A path in the filesystem view is the view's socket file, found beneath its mount.
        let file = match view.and_then(|v| crate::fsview::socket_file(v, n.pid, &path)) {
            Some(Ok(fd)) => super::standin::path::stat_fd(&fd)
                .map(|stat| super::standin::path::Beneath { fd, stat })
                .map_err(|e| e.raw_os_error().unwrap_or(libc::ENOENT)),
            Some(Err(e)) => Err(e),
            None => super::standin::path::absolute(n.pid, &path)
                .and_then(|abs| super::standin::path::open_beneath(&abs, &rules.held, 0))
                .map_err(|e| e.raw_os_error().unwrap_or(libc::ENOENT)),
        };
        let file = match file {
            Ok(f) => f,
            Err(e) => return l.deny(n.id, e),
        };
        if file.stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return l.deny(n.id, libc::ECONNREFUSED);
        }
        let via = super::standin::path::fd_path(&file.fd).into_bytes();
        _held = Some(file);
        via
    };
    let Some((nonblocking, cloexec)) = mode(n.pid, fd) else {
        return l.deny(n.id, libc::EBADF);
    };
    let ours = match connect_own(ty, &target) {
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
    install(l, n.id, &ours, fd as u32, cloexec, nonblocking, 0);
}

/// Whether a process of this sandbox holds a listening UNIX socket bound to the abstract `name`
/// (the bytes after the leading NUL of the address, NULs included).
fn sandbox_listens_on(name: &[u8], pid: u32, pgid: libc::pid_t) -> bool {
    // /proc/net/unix shows an abstract name as '@' followed by the name, NULs shown as '@'.
    let shown: String = std::iter::once('@')
        .chain(
            name.iter()
                .skip(1)
                .map(|b| if *b == 0 { '@' } else { *b as char }),
        )
        .collect();
    let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/unix")) else {
        return false;
    };
    const ACCEPTING: u32 = 0x0001_0000;
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            let path = f.get(7..)?.join(" ");
            let inode = f.get(6)?;
            (flags & ACCEPTING != 0 && path == shown).then(|| format!("socket:[{inode}]"))
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    super::group::member_pids(pgid).into_iter().any(|m| {
        std::fs::read_dir(format!("/proc/{m}/fd")).is_ok_and(|dir| {
            dir.flatten().any(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
            })
        })
    })
}

/// Connects a socket of our own to `name`: a path, or an abstract name (leading NUL, kept as is).
fn connect_own(ty: libc::c_int, name: &[u8]) -> std::io::Result<OwnedFd> {
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if name.is_empty() || name.len() >= sun.sun_path.len() {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in sun.sun_path.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    // A path is NUL-terminated; an abstract name is exactly its bytes.
    let len = 2 + name.len() + usize::from(name[0] != 0);
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
    // SAFETY: `sun` is a valid sockaddr_un of at least `len` bytes.
    let r = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&sun as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sock)
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
    Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

/// Whether `p` (absolute, no `..`) lies beneath one of `roots`.
pub(crate) fn beneath(p: &Path, roots: &[PathBuf]) -> bool {
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

    /// A descriptor of this process, as a number.
    fn raw(fd: &OwnedFd) -> u64 {
        fd.as_raw_fd() as u64
    }

    #[test]
    fn a_kept_fdinfo_file_tells_what_the_descriptor_holds_now() {
        let pid = std::process::id();
        let mut infos = FdInfos::default();
        let (a, _b) = sys::socketpair(libc::SOCK_STREAM).unwrap();
        let fd = raw(&a);
        let first = infos.get(pid, fd).expect("an open descriptor");
        assert_eq!(first.ino, own_inode(&a).unwrap());
        assert!(!first.mode().0, "blocking");
        assert_eq!(infos.open.len(), 1, "kept");
        // A change of mode shows through the kept file.
        sys::set_nonblocking(a.as_raw_fd(), true).unwrap();
        assert!(infos.get(pid, fd).unwrap().mode().0);
        assert_eq!(infos.open.len(), 1, "read again, not opened again");
        // Closed: no such descriptor, as a fresh open would say.
        drop(a);
        assert!(infos.get(pid, fd).is_none());
        assert!(infos.open.is_empty(), "a failed read drops the file");
        // The number taken again by another socket: that socket, not the old one.
        let (c, _d) = sys::socketpair(libc::SOCK_STREAM).unwrap();
        assert_eq!(raw(&c), fd, "the lowest free number again");
        assert_eq!(infos.get(pid, fd).unwrap().ino, own_inode(&c).unwrap());
        assert_eq!(infos.get(pid, fd).unwrap().ino, own_inode(&c).unwrap());
        // The same answers as a fresh open, and no more than KEEP files kept.
        let many: Vec<_> = (0..FdInfos::KEEP + 4)
            .map(|_| sys::socketpair(libc::SOCK_STREAM).unwrap())
            .collect();
        for (x, _) in &many {
            let kept = infos.get(pid, raw(x)).unwrap();
            let fresh = fd_info(pid, raw(x)).unwrap();
            assert_eq!((kept.ino, kept.flags), (fresh.ino, fresh.flags));
        }
        assert_eq!(infos.open.len(), FdInfos::KEEP);
    }
}
