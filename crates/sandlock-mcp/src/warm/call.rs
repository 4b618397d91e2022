//! One call to an interpreter the server keeps: the descriptors it is handed (the code in a memfd,
//! stdin, stdout and stderr pipes) and the capture of its output under the output cap.

use std::os::fd::OwnedFd;
use std::time::Instant;

use sandlock_core::{LimitMechanism, Outcome, Reason};
use tokio::net::unix::pipe;

use crate::python::memfd_with;

/// One captured stream of a call.
pub(super) struct Captured {
    /// `stdout` or `stderr`, for messages.
    pub(super) name: &'static str,
    /// What was kept.
    pub(super) data: Vec<u8>,
    /// The pipe may still deliver.
    pub(super) open: bool,
    /// Bytes were dropped at the cap.
    pub(super) cut: bool,
}

impl Captured {
    pub(super) fn new(name: &'static str) -> Captured {
        Captured {
            name,
            data: Vec::new(),
            open: true,
            cut: false,
        }
    }

    /// Starts the capture with `data` (written before the call began), up to `cap` bytes.
    pub(super) fn prefill(&mut self, data: &[u8], cap: usize) {
        self.cut |= keep(&mut self.data, data, cap);
    }

    /// Takes the result of one read into `buf`: keeps up to `cap` bytes in all, notes the end of
    /// the stream, and returns why the call must end when output was dropped.
    pub(super) fn took(
        &mut self,
        r: std::io::Result<usize>,
        buf: &[u8],
        cap: usize,
    ) -> Option<(Reason, String)> {
        match r {
            Ok(0) | Err(_) => {
                self.open = false;
                None
            }
            Ok(n) => keep(&mut self.data, &buf[..n], cap).then(|| {
                self.cut = true;
                let name = self.name;
                (
                    Reason::Output,
                    format!("{name} exceeded max_output ({cap} bytes); output truncated"),
                )
            }),
        }
    }
}

/// Appends to a capture up to `cap` bytes; true when bytes were dropped.
fn keep(buf: &mut Vec<u8>, data: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
    data.len() > room
}

/// The outcome of a call that ended without an exit status of its own.
pub(super) fn ended(t0: Instant, reason: Reason, detail: String) -> Outcome {
    Outcome {
        wall_time: t0.elapsed(),
        limit_mechanism: LimitMechanism::Supervisor,
        ..Outcome::ended(reason, detail)
    }
}

/// The outcome of a call the server could not carry out.
pub(super) fn failed(t0: Instant, detail: String) -> Outcome {
    ended(t0, Reason::SandboxError, detail)
}

/// The descriptors of one call: ours (async) and the ones handed to the interpreter.
pub(super) struct CallIo {
    /// The code (a memfd), handed over.
    pub(super) code: OwnedFd,
    /// Handed over as stdin.
    pub(super) stdin_r: OwnedFd,
    /// Ours: what the caller gave as stdin is written here.
    pub(super) stdin_w: pipe::Sender,
    /// Handed over as stdout.
    pub(super) stdout_w: OwnedFd,
    /// Handed over as stderr.
    pub(super) stderr_w: OwnedFd,
    /// Ours: the call's stdout.
    pub(super) stdout: pipe::Receiver,
    /// Ours: the call's stderr.
    pub(super) stderr: pipe::Receiver,
}

impl CallIo {
    /// The memfd holding `code`, and three new pipes.
    pub(super) fn new(code: &[u8]) -> std::io::Result<CallIo> {
        let code = memfd_with(code)?;
        let (stdin_w, stdin_r) = pipe::pipe()?;
        let (stdout_w, stdout) = pipe::pipe()?;
        let (stderr_w, stderr) = pipe::pipe()?;
        Ok(CallIo {
            code,
            stdin_r: stdin_r.into_blocking_fd()?,
            stdin_w,
            stdout_w: stdout_w.into_blocking_fd()?,
            stderr_w: stderr_w.into_blocking_fd()?,
            stdout,
            stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_stops_at_the_cap_and_says_what_it_dropped() {
        let mut b = Vec::new();
        assert!(!keep(&mut b, b"abc", 5));
        assert!(keep(&mut b, b"defg", 5));
        assert_eq!(b, b"abcde");
        assert!(keep(&mut b, b"h", 5));
        assert_eq!(b, b"abcde");
    }
}
