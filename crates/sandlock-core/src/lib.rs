//! sandlock-core: confine an untrusted command with the kernel's unprivileged mechanisms (Landlock,
//! seccomp-bpf and seccomp user notification), without root, namespaces or containers.
//!
//! ```no_run
//! use sandlock_core::{Command, Policy, Preset, Sandbox};
//!
//! let policy = Policy {
//!     presets: vec![Preset::System],
//!     fs_writable: vec!["/tmp/ws".into()],
//!     ..Policy::default()
//! };
//! let outcome = Sandbox::new(policy)?.run(Command::new(["python3", "-c", "print(6 * 7)"]))?;
//! assert_eq!(outcome.stdout, b"42\n");
//! # Ok::<(), sandlock_core::Error>(())
//! ```
//!
//! The flow, one module each: [`policy`] (plain data) → `plan` (everything computed before the
//! child exists) → `spawn` (the child between `clone` and `execve`) → `supervisor` (the event
//! loop) → [`outcome`].
//!
//! # Compatibility
//!
//! Every protection is enforced by Landlock where the kernel offers it, and otherwise by the
//! seccomp filter and the supervisor standing in for it (see [`coverage`]): from Linux 5.13
//! (Landlock ABI 1) on, with seccomp user notification, a policy runs fully protected. sandlock
//! fails closed: if nothing can enforce a protection the policy needs (no Landlock at all, or a
//! device `ioctl` rule before Linux 6.10), [`Sandbox::new`] returns an error naming it, unless the
//! policy sets `best_effort`, in which case the outcome lists what was not enforced.
//!
//! # Multithreaded processes
//!
//! `run` may be called from any number of threads at once, and from hosts of any size. The child is
//! created with `clone(CLONE_VM | CLONE_VFORK)`, so its cost does not grow with the host's memory,
//! and between `clone` and `execve` it only issues raw system calls (no allocation, no locks), so
//! the state of other threads cannot deadlock it. The supervisor runs on the calling thread: no
//! threads, no signal handlers, no `waitpid(-1)`. A policy with HTTP rules also has a proxy thread,
//! started by [`Sandbox::new`] and ended with the sandbox's last run (see `net/proxy`); `run` starts
//! none.
//!
//! # Test strategy
//!
//! Confinement is tested against the real kernel: every rule has an attempt that must fail beside
//! a control that must succeed (`tests/`), and the suites also run under a harness that reproduces a
//! restricted Kubernetes pod (`tests/podsim`).

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod cgroup;
pub mod check;
pub mod coverage;
pub mod error;
mod fsview;
pub mod kernel;
pub mod net;
pub mod outcome;
mod plan;
pub mod policy;
mod sandbox;
mod spawn;
mod supervisor;
mod sys;

pub use coverage::{Enforcement, Mechanism};
pub use error::{Error, PolicyError, Result, SandboxError, Stage};
pub use fsview::cow::{Change, ChangeKind, CommitReport};
pub use kernel::{KernelSupport, Protection};
pub use outcome::{LimitMechanism, Outcome, Reason};
pub use plan::DEFAULT_PATH;
pub use policy::{ByteSize, CgroupMode, CommitMode, Policy, Preset, Seconds};
pub use sandbox::{Command, Sandbox, Stdio};
pub use supervisor::{Residue, Running};
