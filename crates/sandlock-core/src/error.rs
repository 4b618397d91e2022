//! Errors: every failure names the stage it happened in, the errno the kernel gave, and a hint a person
//! can act on.
//!
//! Two families: [`PolicyError`] for bad input (it names the field and the bad value and changes nothing),
//! and [`SandboxError`] for a failure to set up, confine, start or supervise the child. A failure to
//! confine is always an error: sandlock never falls back to running a command unconfined unless the
//! policy opted into `best_effort`.

use std::fmt;

use serde::{Serialize, Serializer};

/// Anything `sandlock-core` can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The policy or the command is invalid; nothing was started.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Setting up, confining, starting or supervising the sandbox failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

impl Error {
    /// The stage a sandbox failure happened in (`None` for policy errors).
    pub fn stage(&self) -> Option<Stage> {
        match self {
            Error::Policy(_) => None,
            Error::Sandbox(e) => Some(e.stage),
        }
    }

    /// The errno of a sandbox failure, if the kernel gave one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Policy(_) => None,
            Error::Sandbox(e) => e.errno,
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A policy field (or command argument) holds a value sandlock cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {value:?}: {reason}")]
pub struct PolicyError {
    /// The field, as written in the schema (`fs_readable[2]`, `max_memory`, `argv`).
    pub field: String,
    /// The offending value, as given.
    pub value: String,
    /// What is wrong with it and, where possible, what would be right.
    pub reason: String,
}

impl PolicyError {
    /// Builds an error for `field` holding `value`.
    pub fn new(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        PolicyError {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// Where in the life of a sandbox something failed.
///
/// The names are the system call or step that failed, so that an error reads
/// `landlock_restrict_self: EPERM, ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u32)]
pub enum Stage {
    /// Probing what the kernel supports.
    Probe = 1,
    /// Creating the Landlock ruleset in the parent.
    LandlockRuleset,
    /// Adding a Landlock rule in the parent.
    LandlockRule,
    /// Building the seccomp program.
    SeccompBuild,
    /// Creating pipes, socket pairs or the child's stack in the parent.
    Prepare,
    /// `clone(CLONE_VM|CLONE_VFORK|CLONE_PIDFD)`.
    Clone,
    /// Child: resetting signal dispositions and mask.
    Signals,
    /// Child: `setsid`.
    Setsid,
    /// Child: arranging file descriptors (`dup2`, `close_range`).
    Fds,
    /// Child: `chdir` into the policy's `cwd`.
    Chdir,
    /// Child: setting resource limits.
    Rlimit,
    /// Child: dropping capabilities (bounding, ambient, permitted, effective, inheritable).
    Capabilities,
    /// Child: `prctl(PR_SET_NO_NEW_PRIVS)`.
    NoNewPrivs,
    /// Child: `landlock_restrict_self`.
    LandlockRestrict,
    /// Child: installing the seccomp filter.
    Seccomp,
    /// Child: sending the seccomp listener to the supervisor over `SCM_RIGHTS`.
    SendListener,
    /// Child: `execve` of the program.
    Execve,
    /// Supervisor: receiving the seccomp listener.
    RecvListener,
    /// Supervisor: the event loop (`epoll`, pipes, pidfd).
    Supervise,
    /// Supervisor: answering a seccomp notification.
    Notify,
    /// Supervisor: reaping the child.
    Wait,
    /// The kernel lacks a protection the policy requires.
    Unsupported,
    /// The policy or command was rejected before anything started.
    Policy,
    /// Creating, configuring or joining the run's cgroup v2.
    Cgroup,
    /// Starting the HTTP proxy (its listener, thread and certificate authority).
    Proxy,
}

impl Stage {
    /// The stable, human-readable name of the stage.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Probe => "probe",
            Stage::LandlockRuleset => "landlock_create_ruleset",
            Stage::LandlockRule => "landlock_add_rule",
            Stage::SeccompBuild => "seccomp_build",
            Stage::Prepare => "prepare",
            Stage::Clone => "clone",
            Stage::Signals => "signals",
            Stage::Setsid => "setsid",
            Stage::Fds => "fds",
            Stage::Chdir => "chdir",
            Stage::Rlimit => "setrlimit",
            Stage::Capabilities => "capabilities",
            Stage::NoNewPrivs => "no_new_privs",
            Stage::LandlockRestrict => "landlock_restrict_self",
            Stage::Seccomp => "seccomp",
            Stage::SendListener => "send_listener",
            Stage::Execve => "execve",
            Stage::RecvListener => "recv_listener",
            Stage::Supervise => "supervise",
            Stage::Notify => "notify",
            Stage::Wait => "wait",
            Stage::Unsupported => "unsupported",
            Stage::Policy => "policy",
            Stage::Cgroup => "cgroup",
            Stage::Proxy => "proxy",
        }
    }

    /// Decodes a stage number sent by the child over the error pipe.
    pub(crate) fn from_u32(v: u32) -> Option<Stage> {
        const ALL: [Stage; 25] = [
            Stage::Probe,
            Stage::LandlockRuleset,
            Stage::LandlockRule,
            Stage::SeccompBuild,
            Stage::Prepare,
            Stage::Clone,
            Stage::Signals,
            Stage::Setsid,
            Stage::Fds,
            Stage::Chdir,
            Stage::Rlimit,
            Stage::Capabilities,
            Stage::NoNewPrivs,
            Stage::LandlockRestrict,
            Stage::Seccomp,
            Stage::SendListener,
            Stage::Execve,
            Stage::RecvListener,
            Stage::Supervise,
            Stage::Notify,
            Stage::Wait,
            Stage::Unsupported,
            Stage::Policy,
            Stage::Cgroup,
            Stage::Proxy,
        ];
        ALL.into_iter().find(|s| *s as u32 == v)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Stage {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A failure to set up, confine, start or supervise a sandbox.
///
/// Displays as `stage(detail): ERRNO, hint`, for example
/// `execve("pyhton3"): ENOENT, not found in PATH (/usr/local/bin:/usr/bin:/bin)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub struct SandboxError {
    /// Where it failed.
    pub stage: Stage,
    /// The errno the kernel returned, if any.
    pub errno: Option<i32>,
    /// The object involved (a path, a program name, a syscall), if any.
    pub detail: Option<String>,
    /// What a person can do about it.
    pub hint: String,
}

impl SandboxError {
    /// A failure at `stage` with `errno`.
    pub fn new(stage: Stage, errno: Option<i32>, hint: impl Into<String>) -> Self {
        SandboxError {
            stage,
            errno,
            detail: None,
            hint: hint.into(),
        }
    }

    /// A failure at `stage` from the current `errno`.
    pub fn last_os(stage: Stage, hint: impl Into<String>) -> Self {
        Self::new(stage, std::io::Error::last_os_error().raw_os_error(), hint)
    }

    /// A failure at `stage` from an [`std::io::Error`].
    pub fn io(stage: Stage, err: &std::io::Error, hint: impl Into<String>) -> Self {
        Self::new(stage, err.raw_os_error(), hint)
    }

    /// Names the object involved.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The errno's symbolic name (`ENOENT`), if there is an errno.
    pub fn errno_name(&self) -> Option<&'static str> {
        self.errno.map(errno_name)
    }
}

impl fmt::Display for SandboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.stage.as_str())?;
        if let Some(d) = &self.detail {
            write!(f, "({d:?})")?;
        }
        f.write_str(": ")?;
        if let Some(e) = self.errno {
            write!(f, "{}, ", errno_name(e))?;
        }
        f.write_str(&self.hint)
    }
}

/// The symbolic name of an errno value (`2` is `ENOENT`); unknown values read `errno 123`.
pub fn errno_name(errno: i32) -> &'static str {
    use libc::*;
    match errno {
        EPERM => "EPERM",
        ENOENT => "ENOENT",
        ESRCH => "ESRCH",
        EINTR => "EINTR",
        EIO => "EIO",
        ENXIO => "ENXIO",
        E2BIG => "E2BIG",
        ENOEXEC => "ENOEXEC",
        EBADF => "EBADF",
        ECHILD => "ECHILD",
        EAGAIN => "EAGAIN",
        ENOMEM => "ENOMEM",
        EACCES => "EACCES",
        EFAULT => "EFAULT",
        EBUSY => "EBUSY",
        EEXIST => "EEXIST",
        EXDEV => "EXDEV",
        ENODEV => "ENODEV",
        ENOTDIR => "ENOTDIR",
        EISDIR => "EISDIR",
        EINVAL => "EINVAL",
        ENFILE => "ENFILE",
        EMFILE => "EMFILE",
        ENOTTY => "ENOTTY",
        ETXTBSY => "ETXTBSY",
        EFBIG => "EFBIG",
        ENOSPC => "ENOSPC",
        EROFS => "EROFS",
        EMLINK => "EMLINK",
        EPIPE => "EPIPE",
        ERANGE => "ERANGE",
        ENAMETOOLONG => "ENAMETOOLONG",
        ENOSYS => "ENOSYS",
        ELOOP => "ELOOP",
        ENOMSG => "ENOMSG",
        EOPNOTSUPP => "EOPNOTSUPP",
        EAFNOSUPPORT => "EAFNOSUPPORT",
        EADDRINUSE => "EADDRINUSE",
        ECONNREFUSED => "ECONNREFUSED",
        ENETUNREACH => "ENETUNREACH",
        ETIMEDOUT => "ETIMEDOUT",
        EDQUOT => "EDQUOT",
        EBADFD => "EBADFD",
        ENOTSOCK => "ENOTSOCK",
        EPROTONOSUPPORT => "EPROTONOSUPPORT",
        _ => "errno (unknown)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_error_reads_stage_detail_errno_hint() {
        let e = SandboxError::new(
            Stage::Execve,
            Some(libc::ENOENT),
            "not found in PATH (/usr/bin:/bin)",
        )
        .with_detail("pyhton3");
        assert_eq!(
            e.to_string(),
            r#"execve("pyhton3"): ENOENT, not found in PATH (/usr/bin:/bin)"#
        );
    }

    #[test]
    fn every_stage_round_trips_through_the_error_pipe_encoding() {
        for v in 1..=23 {
            let s = Stage::from_u32(v).unwrap_or(Stage::Probe);
            assert_eq!(s as u32, v, "stage {v} does not round-trip");
        }
        assert_eq!(Stage::from_u32(0), None);
        assert_eq!(Stage::from_u32(999), None);
    }

    #[test]
    fn policy_error_names_field_and_value() {
        let e = PolicyError::new("max_memory", "12Q", "not a size; use e.g. 512M or 2G");
        assert_eq!(
            e.to_string(),
            r#"max_memory: "12Q": not a size; use e.g. 512M or 2G"#
        );
    }
}
