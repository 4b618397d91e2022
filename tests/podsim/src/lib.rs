//! podsim runs a command the way a Kubernetes pod under Pod Security Standard "restricted", with
//! `seccompProfile: RuntimeDefault` and `readOnlyRootFilesystem: true`, would run it, so that the
//! project's test suites can run under those conditions on a CI machine without Docker.
//!
//! Started as root, the `podsim` binary:
//! 1. enters a private mount namespace ([`mounts`]);
//! 2. makes the whole mount tree read-only except /tmp, /dev/shm, /dev, /proc and `--rw` paths;
//! 3. becomes uid/gid 1000 with no capabilities in any set ([`privileges`]);
//! 4. sets no_new_privs;
//! 5. installs a seccomp filter compiled from containerd's RuntimeDefault profile for a container
//!    without capabilities ([`profile`], [`bpf`], [`seccomp`]);
//! 6. checks the command and working directory are reachable by the new uid ([`preflight`]), and
//!    execs the command.
//!
//! `podsim probe` ([`probe`]) reports what a process can and cannot do, with or without podsim.
//!
//! # Compatibility
//!
//! Linux on x86_64 or aarch64. `mount_setattr` (5.12) is used when present, per-mount remounts
//! otherwise. The filter refuses foreign ABIs (i386 `int 0x80`, x32) outright.
//!
//! # Test strategy
//!
//! Everything is checked against the running kernel: `tests/` runs `podsim -- podsim probe --json`
//! and the same probe without podsim as the control, and compares what the installed filter does
//! for every syscall in the table with the profile JSON (see [`seccomp::verdicts`]).

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("podsim supports x86_64 and aarch64 only");

pub mod bpf;
pub mod errno;
pub mod error;
pub mod mounts;
pub mod preflight;
pub mod privileges;
pub mod probe;
pub mod profile;
mod profile_allow;
pub mod seccomp;
mod sys;
pub mod syscalls;
