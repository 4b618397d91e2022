//! Sandboxed Python interpreters that the server keeps from one call to the next, at most one of
//! each kind per workspace:
//! - [`zygote`]: the *fork server*, which `execute_python` forks once per call (fork mode);
//! - [`persistent`]: the *persistent interpreter*, whose globals live from one call to the next
//!   (`execute_python` with `persistent: true`).
//!
//! Each is started through its workspace's [`sandlock_core::Sandbox`] (the Python policy without
//! a timeout), so it has the same Landlock domain, seccomp filter and supervisor as a fresh run,
//! and takes its work over a socket pair that reaches only the server ([`control`]). What they
//! share: [`supervise`] drives an interpreter's sandbox on the event loop for its whole life,
//! [`call`] holds one call's descriptors and captured output, and [`tree`] finds and kills what a
//! call left behind.

mod call;
mod control;
pub mod persistent;
mod supervise;
mod tree;
pub mod zygote;

pub use persistent::{Cell, Persistent, live_persistent};
pub use zygote::{Gone, Zygote, live_fork_servers};
