//! The one error type: what podsim was doing, the errno it got, and what the reader can do about it.

use std::fmt;

/// Exit status for a failure of podsim itself, as Docker uses it: the command never ran.
pub const EXIT_SETUP_FAILED: i32 = 125;
/// Exit status when the command exists but cannot be executed (as in a shell).
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit status when the command cannot be found (as in a shell).
pub const EXIT_NOT_FOUND: i32 = 127;

/// A setup step that failed. Printed as `podsim: <step>: <ERRNO> (<hint>)`.
#[derive(Debug)]
pub struct Error {
    step: String,
    errno: Option<i32>,
    hint: Option<String>,
    exit_code: i32,
}

impl Error {
    /// `step` failed with `errno`.
    pub fn sys(step: impl Into<String>, errno: i32) -> Self {
        Self {
            step: step.into(),
            errno: Some(errno),
            hint: None,
            exit_code: EXIT_SETUP_FAILED,
        }
    }

    /// `step` failed with the errno the last libc call left behind.
    pub fn last(step: impl Into<String>) -> Self {
        Self::sys(step, crate::errno::last())
    }

    /// A failure that is not a syscall error; `message` says it all.
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            step: message.into(),
            errno: None,
            hint: None,
            exit_code: EXIT_SETUP_FAILED,
        }
    }

    /// Adds what the reader should do about it.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Sets the status podsim exits with for this error (default [`EXIT_SETUP_FAILED`]).
    #[must_use]
    pub fn exit_code(mut self, code: i32) -> Self {
        self.exit_code = code;
        self
    }

    /// The errno, if the failure came from a syscall.
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    /// The status podsim should exit with.
    pub fn status(&self) -> i32 {
        self.exit_code
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.step)?;
        match (self.errno, &self.hint) {
            (Some(errno), Some(hint)) => write!(f, ": {} ({hint})", crate::errno::name(errno)),
            (Some(errno), None) => write!(f, ": {}", crate::errno::name(errno)),
            (None, Some(hint)) => write!(f, "; {hint}"),
            (None, None) => Ok(()),
        }
    }
}

impl std::error::Error for Error {}

/// Result of a podsim step.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn syscall_errors_read_step_errno_hint() {
        let err = Error::sys("unshare(CLONE_NEWNS)", libc::EPERM).hint("podsim must start as root");
        assert_eq!(
            err.to_string(),
            "unshare(CLONE_NEWNS): EPERM (podsim must start as root)"
        );
    }

    #[test]
    fn plain_errors_read_message_then_fix() {
        let err = Error::msg("/x is not searchable by uid 1000 (mode 0700)").hint("chmod o+x /x");
        assert_eq!(
            err.to_string(),
            "/x is not searchable by uid 1000 (mode 0700); chmod o+x /x"
        );
    }
}
