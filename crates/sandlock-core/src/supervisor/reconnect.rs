//! A second `connect` on a TCP socket the supervisor installed.
//!
//! Programs that connect without blocking often call `connect` again once the socket turns
//! writable, to learn how the first call ended (APR, so `ab`; hiredis's blocking connect, so
//! `redis-cli`): the kernel answers 0 the first time after the handshake completed and `EISCONN`
//! after that, `EALREADY` while it is under way, or the error it ended with. An emulated connect
//! installs a new socket each time, so without this the second call would start a second
//! connection, answer `EINPROGRESS` again, and the program would wait forever (or give up).
//!
//! A socket installed connected (a blocking connect, or one that completed at once) is simply
//! remembered as such. When the supervisor installs a socket whose connect is still in progress, it keeps its own
//! reference to it until the handshake has ended (looked at every [`SWEEP_EVERY`], without a
//! wakeup of its own), then remembers how it ended, by the socket's inode. A `connect` on a
//! descriptor that holds one of these sockets (the inode is in the `fdinfo` the supervisor reads
//! anyway) is answered from that and connects nothing, whatever address it names, as the kernel
//! ignores it too. Nothing is ever continued: the answer is a number, so a descriptor swapped in
//! meanwhile gains nothing.
//!
//! The reference it keeps means that a sandbox that closes such a socket within the handshake (or
//! within a sweep of its end) sends its FIN up to [`SWEEP_EVERY`] later.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How often held sockets are looked at.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(20);
/// The longest a socket is held whose handshake has not ended (the kernel gives up on a SYN long
/// before).
const MAX_HOLD: Duration = Duration::from_secs(180);
/// Most endings remembered; past that the oldest are forgotten (a second connect on a forgotten
/// socket connects anew). Second connects come within milliseconds of the first, and even at
/// 10,000 connects a second an ending is kept for about 0.4 s.
const MAX_ENDED: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Connected; `told` once a second connect has been answered 0 (the next gets `EISCONN`).
    Connected { told: bool },
    /// The connect failed with this errno.
    Failed(i32),
}

/// Sockets installed with a connect in progress, and how the finished ones ended.
#[derive(Default)]
pub(crate) struct Reconnects {
    held: HashMap<u64, (OwnedFd, Instant)>,
    ended: HashMap<u64, Ended>,
    /// The inodes of `ended`, oldest first (some may have left `ended` already).
    order: VecDeque<u64>,
}

/// What a socket's handshake has come to, as `getsockopt` tells it.
enum Progress {
    Connecting,
    Done(Ended),
}

fn progress(sock: &OwnedFd) -> Progress {
    // Taking the error clears it, as the sandbox's own read would.
    if let Ok(err @ 1..) = crate::sys::take_socket_error(sock) {
        return Progress::Done(Ended::Failed(err));
    }
    const SYN_SENT: u8 = 2;
    const SYN_RECV: u8 = 3;
    const CLOSE: u8 = 7;
    match tcp_state(sock) {
        None => Progress::Done(Ended::Failed(libc::ECONNABORTED)),
        Some(SYN_SENT | SYN_RECV) => Progress::Connecting,
        // Closed without an error to tell: what the kernel answers for it.
        Some(CLOSE) => Progress::Done(Ended::Failed(libc::ECONNABORTED)),
        Some(_) => Progress::Done(Ended::Connected { told: false }),
    }
}

/// Whether the socket's handshake has ended and it is connected (`TCP_ESTABLISHED`): to a server on
/// this host, usually already when a non-blocking `connect` returns (the kernel runs both ends of
/// the handshake before the call returns, though it answers `EINPROGRESS`). Reading it leaves the
/// socket's pending error for the sandbox to read.
pub(crate) fn established(sock: &OwnedFd) -> bool {
    const ESTABLISHED: u8 = 1;
    tcp_state(sock) == Some(ESTABLISHED)
}

/// The socket's TCP state (`tcpi_state`, as in `include/net/tcp_states.h`); reading it changes
/// nothing, unlike `SO_ERROR`.
fn tcp_state(sock: &OwnedFd) -> Option<u8> {
    // SAFETY: tcp_info is plain data; all-zero is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: TCP_INFO writes at most `len` bytes into `info`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(info.tcpi_state)
}

impl Reconnects {
    /// Keeps `sock` (inode `ino`), just installed with its connect in progress, until its
    /// handshake ends. When it has ended already ([`established`]), it is only remembered, as the
    /// sweep would, and not held: holding it would keep the connection open after the sandbox
    /// closes it, and send its FIN only at the next sweep.
    pub(crate) fn hold(&mut self, ino: u64, sock: OwnedFd) {
        if established(&sock) {
            self.remember(ino, Ended::Connected { told: false });
            return;
        }
        self.held.insert(ino, (sock, Instant::now()));
    }

    /// Remembers that `sock`, just installed, is connected (its connect returned 0): a second
    /// connect on it gets `EISCONN`.
    pub(crate) fn connected(&mut self, sock: &OwnedFd) {
        if let Some(ino) = super::connect::own_inode(sock) {
            self.remember(ino, Ended::Connected { told: true });
        }
    }

    /// The answer to a `connect` on a descriptor whose socket has inode `ino`, if it is one the
    /// supervisor installed: the syscall's return value.
    pub(crate) fn answer(&mut self, ino: u64) -> Option<i64> {
        if let Some((sock, _)) = self.held.get(&ino) {
            match progress(sock) {
                Progress::Connecting => return Some(-i64::from(libc::EALREADY)),
                Progress::Done(e) => {
                    self.held.remove(&ino);
                    self.remember(ino, e);
                }
            }
        }
        let e = self.ended.get_mut(&ino)?;
        Some(match *e {
            Ended::Connected { told: false } => {
                *e = Ended::Connected { told: true };
                0
            }
            Ended::Connected { told: true } => -i64::from(libc::EISCONN),
            Ended::Failed(err) => {
                // The socket is unconnected again: the next connect on it is a new one.
                self.ended.remove(&ino);
                -i64::from(err)
            }
        })
    }

    fn remember(&mut self, ino: u64, e: Ended) {
        while self.ended.len() >= MAX_ENDED {
            match self.order.pop_front() {
                Some(old) => {
                    self.ended.remove(&old);
                }
                None => break,
            }
        }
        if self.ended.insert(ino, e).is_none() {
            self.order.push_back(ino);
        }
        // Entries that left `ended` early (failed connects) are dropped from the queue as it
        // grows, so it stays within a small multiple of `ended`.
        if self.order.len() > 2 * MAX_ENDED {
            let ended = &self.ended;
            self.order.retain(|i| ended.contains_key(i));
        }
    }

    /// Whether sockets are held (then [`Reconnects::sweep`] is due every [`SWEEP_EVERY`]).
    pub(crate) fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Lets go of the sockets whose handshake has ended, remembering how.
    pub(crate) fn sweep(&mut self) {
        let now = Instant::now();
        let done: Vec<(u64, Ended)> = self
            .held
            .iter()
            .filter_map(|(ino, (sock, since))| match progress(sock) {
                Progress::Done(e) => Some((*ino, e)),
                Progress::Connecting if now.duration_since(*since) > MAX_HOLD => {
                    Some((*ino, Ended::Failed(libc::ETIMEDOUT)))
                }
                Progress::Connecting => None,
            })
            .collect();
        for (ino, e) in done {
            self.held.remove(&ino);
            self.remember(ino, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn connecting_to(addr: std::net::SocketAddr) -> OwnedFd {
        // SAFETY: socket takes integers and returns a new descriptor.
        let raw = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        // SAFETY: socket just returned this descriptor.
        let sock = unsafe { crate::sys::owned(raw) };
        let _ = crate::sys::connect_inet(&sock, addr);
        sock
    }

    #[test]
    fn a_second_connect_is_answered_as_the_kernel_would() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut r = Reconnects::default();
        let sock = connecting_to(l.local_addr().unwrap());
        let ino = crate::supervisor::connect::own_inode(&sock).unwrap();
        r.hold(ino, sock);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(r.answer(ino), Some(0), "the first one after the handshake");
        assert_eq!(r.answer(ino), Some(-i64::from(libc::EISCONN)));
        assert!(!r.holding());
        assert_eq!(r.answer(ino + 1_000_000), None, "not a socket of ours");
        // Refused (nothing listens there any more): the error, once.
        let port = l.local_addr().unwrap();
        drop(l);
        let sock = connecting_to(port);
        let ino = crate::supervisor::connect::own_inode(&sock).unwrap();
        r.hold(ino, sock);
        std::thread::sleep(Duration::from_millis(20));
        r.sweep();
        assert!(!r.holding(), "the sweep lets go of what has ended");
        assert_eq!(r.answer(ino), Some(-i64::from(libc::ECONNREFUSED)));
        assert_eq!(r.answer(ino), None);
    }

    #[test]
    fn the_oldest_endings_are_forgotten_first() {
        let mut r = Reconnects::default();
        for ino in 0..(MAX_ENDED as u64 + 10) {
            r.remember(ino, Ended::Connected { told: false });
        }
        assert_eq!(r.ended.len(), MAX_ENDED);
        assert_eq!(r.answer(5), None, "among the oldest");
        assert_eq!(r.answer(MAX_ENDED as u64 + 9), Some(0), "the newest");
    }

    /// Waits (up to 5 s) until the socket's handshake has ended, either way.
    fn ended(sock: &OwnedFd) {
        let mut p = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: poll reads and writes one entry.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 5000) }, 1);
    }

    #[test]
    fn a_handshake_that_has_ended_is_remembered_not_held() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut r = Reconnects::default();
        let sock = connecting_to(l.local_addr().unwrap());
        let ino = crate::supervisor::connect::own_inode(&sock).unwrap();
        // To loopback it has usually ended within connect already; wait in case it has not.
        ended(&sock);
        assert!(established(&sock));
        r.hold(ino, sock);
        assert!(!r.holding(), "nothing to wait for");
        assert_eq!(r.answer(ino), Some(0));
        assert_eq!(r.answer(ino), Some(-i64::from(libc::EISCONN)));

        // Refused: held, and the error is still there for the sandbox to read.
        let port = l.local_addr().unwrap();
        drop(l);
        let sock = connecting_to(port);
        let sandboxs = sock.try_clone().unwrap();
        let ino = crate::supervisor::connect::own_inode(&sock).unwrap();
        ended(&sock);
        assert!(!established(&sock));
        r.hold(ino, sock);
        assert!(r.holding(), "not established: the sweep decides");
        assert_eq!(
            crate::sys::take_socket_error(&sandboxs).unwrap(),
            libc::ECONNREFUSED,
            "not taken by the look"
        );
    }
}
