//! The control socket between the server and an interpreter it keeps: a `SOCK_SEQPACKET` pair
//! (message boundaries kept, descriptors passed with `SCM_RIGHTS`). The interpreter's end is its
//! descriptor 3; the other end is only ever the server's, so the socket reaches nothing but the
//! server, which reads every message from it as untrusted (the code in the sandbox can write to
//! it).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A new pair: ours (non-blocking, for the event loop) and the interpreter's (blocking).
pub(super) fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into the array.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded; both descriptors are new and ours.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Our end is non-blocking (it is on the event loop); the fork server's stays blocking.
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(a.as_raw_fd(), libc::F_GETFL);
        if fl < 0 || libc::fcntl(a.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((a, b))
}

/// Sends one message with descriptors.
pub(super) fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE(bytes) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the sendmsg call, and the
    // control buffer is CMSG_SPACE bytes, aligned for cmsghdr.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(bytes) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast::<RawFd>(), fds.len());
        if libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives one message and the descriptors that came with it (close-on-exec, ours).
pub(super) fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 16];
    // SAFETY: as in send_with_fds; the kernel fills at most msg_controllen bytes, and every
    // descriptor it passes is new and ours (MSG_CMSG_CLOEXEC).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut fds = Vec::new();
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok((n as usize, fds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_cross_the_control_socket_with_their_message() {
        let (a, b) = seqpacket_pair().unwrap();
        let (r, w) = {
            let mut p = [0; 2];
            // SAFETY: pipe writes two new descriptors.
            assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
            // SAFETY: both are new and ours.
            unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) }
        };
        send_with_fds(b.as_raw_fd(), b"P 7 42", &[w.as_raw_fd()]).unwrap();
        drop(w);
        let mut buf = [0u8; 64];
        let (n, mut fds) = recv_with_fds(a.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"P 7 42");
        assert_eq!(fds.len(), 1);
        // The received descriptor is the pipe's write end: what is written arrives at `r`.
        let got = fds.pop().unwrap();
        // SAFETY: write from a valid buffer to a descriptor we own.
        assert_eq!(
            unsafe { libc::write(got.as_raw_fd(), b"x".as_ptr().cast(), 1) },
            1
        );
        let mut one = [0u8; 1];
        // SAFETY: read into a valid buffer from a descriptor we own.
        assert_eq!(
            unsafe { libc::read(r.as_raw_fd(), one.as_mut_ptr().cast(), 1) },
            1
        );
        assert_eq!(&one, b"x");
        // Our end is non-blocking: nothing more to read is WouldBlock, not a hang.
        let e = recv_with_fds(a.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    }
}
