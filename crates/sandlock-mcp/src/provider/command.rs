//! Running one shell command in a session: the foreground `/api/v1/commands/terminal` call and the
//! background `terminalExec` task both come here.
//!
//! Output is bounded the way the protocol reports it: the first `keep_output` bytes of each stream
//! are kept and the rest is read and counted but dropped (`stdout_truncated`), while the command
//! goes on. A background server that logs for an hour is not stopped for talking, and its caller
//! sees what it said first. The output is taken from the sandbox as it arrives, so a background
//! task's output so far can be read while it runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sandlock_core::{Outcome, Reason, Sandbox};
use tokio_util::sync::CancellationToken;

use super::api::ApiError;
use super::session::{Session, session_policy};
use crate::drive;
use crate::exec::Source;
use crate::tools::App;

/// One output stream, bounded.
#[derive(Debug, Default, Clone)]
pub struct Stream {
    kept: Vec<u8>,
    /// Bytes the command wrote to it.
    pub total: u64,
}

impl Stream {
    fn push(&mut self, bytes: &[u8], cap: usize) {
        let room = cap.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.total += bytes.len() as u64;
    }

    /// Whether bytes were dropped.
    pub fn truncated(&self) -> bool {
        self.total > self.kept.len() as u64
    }

    /// What was kept, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept).into_owned()
    }
}

/// A command's output so far.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    /// Standard output.
    pub stdout: Stream,
    /// Standard error.
    pub stderr: Stream,
}

/// A command's output, shared between the run and whoever reads it while it runs.
#[derive(Debug, Clone)]
pub struct Live {
    progress: Arc<Mutex<Progress>>,
    cap: usize,
}

impl Live {
    /// Keeps the first `cap` bytes of each stream.
    pub fn new(cap: u64) -> Live {
        Live {
            progress: Arc::default(),
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
        }
    }

    fn push(&self, out: &[u8], err: &[u8]) {
        if out.is_empty() && err.is_empty() {
            return;
        }
        if let Ok(mut p) = self.progress.lock() {
            p.stdout.push(out, self.cap);
            p.stderr.push(err, self.cap);
        }
    }

    /// A copy of the output so far.
    pub fn snapshot(&self) -> Progress {
        self.progress.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

/// How a command ended.
#[derive(Debug)]
pub struct Ended {
    /// The sandbox's account of the run (its output fields are empty: see [`Live`]).
    pub outcome: Outcome,
    /// The exit status a shell would report: the exit code, 128+N for signal N, 137 for a run
    /// killed by a limit, 124 for a timeout, 125 when the sandbox failed.
    pub exit_code: i32,
}

/// What the sandbox says about a run that did not simply exit, for a line of stderr.
pub fn describe(outcome: &Outcome) -> Option<String> {
    let detail = outcome.detail.clone().unwrap_or_default();
    let what = match outcome.reason {
        Reason::Exited => return None,
        Reason::Signaled if detail.is_empty() => format!(
            "the command was killed by signal {}",
            outcome.signal.unwrap_or(0)
        ),
        Reason::Signaled => detail,
        Reason::Timeout => "the command ran past its timeout_ms and was killed".into(),
        Reason::Memory => format!("the command hit the memory limit ({detail})"),
        Reason::Processes => format!("the command hit the process limit ({detail})"),
        Reason::Cpu => format!("the command hit the CPU time limit ({detail})"),
        Reason::Disk => format!("the session hit its disk cap ({detail})"),
        Reason::SandboxError => format!("the sandbox failed: {detail}"),
        other => format!("the command ended: {other} {detail}"),
    };
    Some(format!("sandlock: {what}"))
}

/// The sandbox for `session`'s commands (built on its first command).
pub fn sandbox_for(app: &App, session: &Session) -> Result<Arc<Sandbox>, ApiError> {
    let cfg = app
        .exec
        .config
        .onlyboxes
        .as_ref()
        .ok_or_else(|| ApiError::internal("the provider configuration"))?;
    session
        .sandbox(|| {
            let p = session_policy(&cfg.policy, &session.workspace.dir);
            Sandbox::new(p).map_err(|e| format!("cannot set up the sandbox: {e}"))
        })
        .map_err(|e| ApiError::new(502, "execution_failed", e))
}

/// Runs `command` (`/bin/sh -c`) in `session` until it ends, `timeout` passes, or `cancel` is
/// cancelled (a task's cancel; the session's end and the server's shutdown reach it through the
/// token's parents). Output goes to `live` as it comes.
pub async fn run(
    app: &App,
    session: &Session,
    command: &str,
    timeout: Duration,
    live: &Live,
    cancel: &CancellationToken,
) -> Result<Ended, ApiError> {
    let sandbox = sandbox_for(app, session)?;
    let cmd = app
        .exec
        .command(Source::Shell(command), None, timeout)
        .map_err(ApiError::invalid)?;
    let kill = &app.exec.gate.kill;
    let why = || {
        if kill.is_cancelled() {
            "killed: the server shut down and the grace period ran out".to_string()
        } else if session.ended.is_cancelled() {
            "killed: the session's lease expired".to_string()
        } else {
            "killed: the task was canceled".to_string()
        }
    };
    let observe = |r: &mut sandlock_core::Running| live.push(&r.take_stdout(), &r.take_stderr());
    let mut outcome = drive::run_observed(&sandbox, cmd, cancel, why, observe)
        .await
        .unwrap_or_else(|e| Outcome::from_error(&e));
    live.push(&outcome.stdout, &outcome.stderr);
    outcome.stdout = Vec::new();
    outcome.stderr = Vec::new();
    if let Some(note) = describe(&outcome) {
        live.push(b"", format!("\n{note}\n").as_bytes());
    }
    let exit_code = match outcome.reason {
        Reason::Exited => outcome.exit_code.unwrap_or(0),
        Reason::Signaled => outcome.signal.map_or(137, |s| 128 + s),
        Reason::Timeout => 124,
        Reason::SandboxError => outcome.exit_status(),
        _ => 137,
    };
    Ok(Ended { outcome, exit_code })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_keeps_its_head_and_counts_the_rest() {
        let live = Live::new(4);
        live.push(b"abc", b"");
        live.push(b"defgh", b"12");
        let p = live.snapshot();
        assert_eq!(p.stdout.text(), "abcd");
        assert_eq!(p.stdout.total, 8);
        assert!(p.stdout.truncated());
        assert_eq!(p.stderr.text(), "12");
        assert!(!p.stderr.truncated());
    }

    #[test]
    fn a_plain_exit_adds_no_note_and_a_limit_does() {
        let ok = Outcome {
            exit_code: Some(3),
            ..Outcome::ended(Reason::Exited, "")
        };
        assert_eq!(describe(&ok), None);
        let mem = Outcome::ended(
            Reason::Memory,
            "used 600M of memory, over max_memory (512M)",
        );
        let note = describe(&mem).unwrap();
        assert!(
            note.starts_with("sandlock: the command hit the memory limit"),
            "{note}"
        );
    }
}
