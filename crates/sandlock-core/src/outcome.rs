//! What a run produced, and why it ended.

use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::error::{Error, SandboxError};
use crate::kernel::Protection;

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// The command exited on its own (`exit_code` says how).
    Exited,
    /// The command was killed by a signal it did not get from sandlock (`signal` says which).
    Signaled,
    /// The wall-clock `timeout` expired; the whole tree was killed.
    Timeout,
    /// The sandbox used more than `max_memory`; the whole tree was killed.
    Memory,
    /// The sandbox tried to exceed `max_processes`; the whole tree was killed.
    Processes,
    /// The sandbox used more than `max_cpu`; the whole tree was killed.
    Cpu,
    /// stdout or stderr exceeded `max_output`; the whole tree was killed, output truncated.
    Output,
    /// The writable directories grew past `max_disk` (or a file past `max_file_size`).
    Disk,
    /// sandlock itself failed; `error` says where and why.
    SandboxError,
}

impl Reason {
    /// The stable name (`timeout`, `memory`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Exited => "exited",
            Reason::Signaled => "signaled",
            Reason::Timeout => "timeout",
            Reason::Memory => "memory",
            Reason::Processes => "processes",
            Reason::Cpu => "cpu",
            Reason::Output => "output",
            Reason::Disk => "disk",
            Reason::SandboxError => "sandbox_error",
        }
    }

    /// Whether a limit ended the run.
    pub fn is_limit(self) -> bool {
        matches!(
            self,
            Reason::Timeout
                | Reason::Memory
                | Reason::Processes
                | Reason::Cpu
                | Reason::Output
                | Reason::Disk
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the memory and process limits were enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LimitMechanism {
    /// No tree-wide limit was requested.
    None,
    /// The supervisor: sampling of the sandbox's process group (works without cgroups, inside
    /// restricted pods).
    Supervisor,
    /// The run had its own cgroup v2, whose controllers enforced the limits listed in
    /// [`Outcome::kernel_limits`]; the supervisor enforced the rest (and stayed on as a second
    /// line for those).
    CgroupV2,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Why the run ended.
    pub reason: Reason,
    /// The exit code, if the main process exited.
    pub exit_code: Option<i32>,
    /// The signal that killed the main process, if one did.
    pub signal: Option<i32>,
    /// Captured standard output (empty unless captured).
    #[serde(serialize_with = "lossy")]
    pub stdout: Vec<u8>,
    /// Captured standard error (empty unless captured).
    #[serde(serialize_with = "lossy")]
    pub stderr: Vec<u8>,
    /// stdout exceeded the cap and was cut.
    pub stdout_truncated: bool,
    /// stderr exceeded the cap and was cut.
    pub stderr_truncated: bool,
    /// Wall-clock time from spawn to the end.
    #[serde(serialize_with = "secs")]
    pub wall_time: Duration,
    /// User plus system CPU time of the sandbox's processes.
    #[serde(serialize_with = "secs")]
    pub cpu_time: Duration,
    /// Peak resident memory observed, in bytes.
    pub peak_memory: u64,
    /// Protections the kernel could not apply, when the policy allowed `best_effort`.
    pub not_enforced: Vec<Protection>,
    /// Things the run did that the caller should know about though they were allowed (a
    /// credential the HTTP proxy sent in cleartext), each once.
    pub warnings: Vec<String>,
    /// How tree-wide limits were enforced.
    pub limit_mechanism: LimitMechanism,
    /// The cgroup v2 files that enforced limits in the kernel (`memory.max`, `pids.max`); empty
    /// when the supervisor alone did.
    pub kernel_limits: Vec<String>,
    /// A human-readable account of what ended the run, when a limit did.
    pub detail: Option<String>,
    /// The failure, when `reason` is `sandbox_error`.
    pub error: Option<SandboxError>,
    /// What the run changed in its copy-on-write work directory (`workdir`), sorted by path.
    pub changes: Vec<crate::Change>,
    /// What became of those changes (applied, or not, and why), when there is a work directory.
    pub commit: Option<crate::CommitReport>,
}

impl Outcome {
    /// Whether the command ran and exited with status 0.
    pub fn success(&self) -> bool {
        self.reason == Reason::Exited && self.exit_code == Some(0)
    }

    /// An outcome describing a sandbox failure, for faces that report errors as results.
    pub fn from_error(err: &Error) -> Outcome {
        let error = match err {
            Error::Sandbox(e) => e.clone(),
            Error::Policy(p) => SandboxError::new(crate::error::Stage::Policy, None, p.to_string()),
        };
        Outcome {
            error: Some(error),
            ..Outcome::ended(Reason::SandboxError, err.to_string())
        }
    }

    /// An outcome that is only a reason and its account: no exit, no output, no measurements.
    /// Faces that supervise runs by other means fill in the rest with struct update syntax.
    pub fn ended(reason: Reason, detail: impl Into<String>) -> Outcome {
        Outcome {
            reason,
            exit_code: None,
            signal: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            wall_time: Duration::ZERO,
            cpu_time: Duration::ZERO,
            peak_memory: 0,
            not_enforced: Vec::new(),
            warnings: Vec::new(),
            limit_mechanism: LimitMechanism::None,
            kernel_limits: Vec::new(),
            detail: Some(detail.into()),
            error: None,
            changes: Vec::new(),
            commit: None,
        }
    }

    /// The conventional shell status for this outcome: the exit code, 128+N for signal N, and for
    /// sandlock's own failures 125 (setup), 126 (cannot execute) or 127 (not found).
    pub fn exit_status(&self) -> i32 {
        match self.reason {
            Reason::SandboxError => match self.error.as_ref() {
                Some(e) if e.stage == crate::error::Stage::Execve => {
                    if e.errno == Some(libc::ENOENT) {
                        127
                    } else {
                        126
                    }
                }
                _ => 125,
            },
            _ => match (self.exit_code, self.signal) {
                (Some(c), _) => c,
                (None, Some(s)) => 128 + s,
                (None, None) => 125,
            },
        }
    }
}

fn lossy<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
