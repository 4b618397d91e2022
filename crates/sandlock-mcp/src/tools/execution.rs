//! The execution tools: `execute_python` and `execute_shell`.
//!
//! A call, top to bottom ([`SandlockTools::execute`]): check the arguments and build the command,
//! wait for a slot at the concurrency gate, find the caller's workspace and its sandbox, run
//! (forking the workspace's Python fork server when it has one, see [`crate::warm`], else a fresh
//! run driven by [`crate::drive`]), then show the outcome: the headline in words, and each stream
//! inline or, when long, as its head and tail with the whole saved in the workspace
//! ([`crate::output`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, tool, tool_router};
use sandlock_core::{Outcome, Reason};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{SandlockTools, failure, output_schema, structured};
use crate::config::{ExecTool, PythonStart};
use crate::drive;
use crate::exec::{self, Gate, GateError, Slot};
use crate::output;
use crate::workspace::Workspace;

/// Arguments of `execute_python`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecutePythonArgs {
    /// Python source code, run as `__main__` in the workspace directory. Print what you want to see.
    pub code: String,
    /// Wall-clock limit in seconds (default and maximum are set by the server).
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// Text given to the program on standard input.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Stateless requests only: the workspace handle a previous result returned. Omit it to get a
    /// new workspace. Sessions always use their own workspace.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// Arguments of `execute_shell`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecuteShellArgs {
    /// A command line for `/bin/sh -c`, run in the workspace directory.
    pub command: String,
    /// Wall-clock limit in seconds (default and maximum are set by the server).
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// Stateless requests only: see `execute_python`.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// The structured result of `execute_python` and `execute_shell`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunResult {
    /// Captured standard output (UTF-8, invalid bytes replaced); when it is long, its head and
    /// tail with a marker between them, and the whole of it is in `stdout_file`.
    pub stdout: String,
    /// Captured standard error, shown the same way (see `stderr_file`).
    pub stderr: String,
    /// Bytes of standard output the program wrote (up to the server's output cap).
    pub stdout_bytes: u64,
    /// Bytes of standard error.
    pub stderr_bytes: u64,
    /// Where the whole standard output was saved in the workspace, when it was too long to show
    /// (read it with `read_file`, `start_line` and `end_line`).
    pub stdout_file: Option<String>,
    /// Where the whole standard error was saved, when it was too long to show.
    pub stderr_file: Option<String>,
    /// Whether `stdout` or `stderr` is an excerpt (head and tail) of a longer output.
    pub excerpted: bool,
    /// The exit code, when the program exited by itself.
    pub exit_code: Option<i32>,
    /// Why the run ended: exited, signaled, timeout, memory, processes, cpu, output, disk,
    /// sandbox_error; or, when it never ran, busy, invalid or shutting_down.
    pub reason: String,
    /// Wall-clock milliseconds of the run (0 when it never ran).
    pub duration_ms: u64,
    /// Whether stdout or stderr was cut at the output cap.
    pub truncated: bool,
    /// The workspace handle (pass it back in stateless requests).
    pub workspace: String,
}

/// The words a caller sees first: what happened, then the output.
pub fn describe(outcome: &Outcome, timeout: Duration) -> String {
    let secs = |d: Duration| {
        let s = d.as_secs_f64();
        if s.fract() == 0.0 {
            format!("{s:.0} s")
        } else {
            format!("{s:.1} s")
        }
    };
    let detail = outcome.detail.clone().unwrap_or_default();
    match outcome.reason {
        Reason::Exited => match outcome.exit_code {
            Some(0) => String::new(),
            Some(c) => format!("exit code {c}"),
            None => "exited".into(),
        },
        Reason::Signaled => match outcome.signal {
            Some(s) if detail.is_empty() => format!("killed by signal {s}"),
            _ => detail,
        },
        Reason::Timeout => format!(
            "code timed out after {}; partial output follows",
            secs(timeout)
        ),
        Reason::Memory => format!("code hit the memory limit ({detail}); partial output follows"),
        Reason::Processes => {
            format!("code hit the process limit ({detail}); partial output follows")
        }
        Reason::Cpu => format!("code hit the CPU time limit ({detail}); partial output follows"),
        Reason::Output => format!("output exceeded the cap ({detail}); the run was stopped"),
        Reason::Disk => {
            format!("the workspace hit its disk cap ({detail}); partial output follows")
        }
        Reason::SandboxError => format!("the sandbox failed: {detail}"),
        _ => format!("ended: {} {detail}", outcome.reason),
    }
}

fn run_text(headline: &str, stdout: &str, stderr: &str, truncated: bool) -> String {
    let mut t = String::new();
    if !headline.is_empty() {
        t.push_str(headline);
        t.push('\n');
    }
    t.push_str(stdout);
    if !stderr.is_empty() {
        if !t.is_empty() && !t.ends_with('\n') {
            t.push('\n');
        }
        t.push_str("[stderr]\n");
        t.push_str(stderr);
    }
    if truncated {
        t.push_str("\n[output truncated at the server's cap]");
    }
    if t.is_empty() {
        t.push_str("(no output)");
    }
    t
}

impl RunResult {
    /// The result of a call that never ran: `reason` says why (`invalid`, `busy`,
    /// `shutting_down`, `sandbox_error`).
    fn never_ran(reason: &str, workspace: String) -> RunResult {
        RunResult {
            stdout: String::new(),
            stderr: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_file: None,
            stderr_file: None,
            excerpted: false,
            exit_code: None,
            reason: reason.into(),
            duration_ms: 0,
            truncated: false,
            workspace,
        }
    }
}

/// Ends a run when its client cancels the request or the shutdown grace period runs out.
struct CallCancel {
    token: CancellationToken,
    kill: CancellationToken,
    relay: tokio::task::JoinHandle<()>,
}

impl CallCancel {
    fn new(gate: &Gate, ctx: &RequestContext<RoleServer>) -> CallCancel {
        let token = CancellationToken::new();
        let relay = {
            let (token, kill, client) = (token.clone(), gate.kill.clone(), ctx.ct.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = kill.cancelled() => {}
                    _ = client.cancelled() => {}
                    _ = token.cancelled() => {}
                }
                token.cancel();
            })
        };
        CallCancel {
            token,
            kill: gate.kill.clone(),
            relay,
        }
    }

    /// Why the run was killed, for its outcome.
    fn why(&self) -> impl Fn() -> String + use<> {
        let kill = self.kill.clone();
        move || {
            if kill.is_cancelled() {
                "killed: the server shut down and the grace period ran out".to_string()
            } else {
                "killed: the client cancelled the call".to_string()
            }
        }
    }

    /// Stops relaying (the run is over).
    async fn finish(self) {
        self.token.cancel();
        let _ = self.relay.await;
    }
}

/// Waits for a slot at the gate. `Err(None)`: the client cancelled while it waited.
async fn wait_for_slot<'g>(
    gate: &'g Gate,
    ctx: &RequestContext<RoleServer>,
) -> Result<Slot<'g>, Option<GateError>> {
    tokio::select! {
        s = gate.enter() => s.map_err(Some),
        _ = ctx.ct.cancelled() => Err(None),
    }
}

/// What an ended run becomes: the text block (the headline in words, then the output) and the
/// structured result. Long output is saved in the workspace, which is file work: it runs on the
/// blocking pool, off the event loop.
pub(super) async fn show_outcome(
    mut outcome: Outcome,
    timeout: Duration,
    ws: &Arc<Workspace>,
    disk_cap: u64,
) -> (String, RunResult) {
    let truncated = outcome.stdout_truncated || outcome.stderr_truncated;
    let headline = describe(&outcome, timeout);
    let (stdout, stderr) = (
        std::mem::take(&mut outcome.stdout),
        std::mem::take(&mut outcome.stderr),
    );
    let shown = {
        let ws = ws.clone();
        tokio::task::spawn_blocking(move || {
            let call = output::call_name();
            (
                output::show("stdout", &stdout, &ws, &call, disk_cap),
                output::show("stderr", &stderr, &ws, &call, disk_cap),
            )
        })
        .await
    };
    let (out, err) = shown.unwrap_or_else(|e| {
        let lost = output::Shown {
            text: format!("[the output could not be shown: {e}]"),
            bytes: 0,
            file: None,
            excerpted: true,
        };
        (lost.clone(), lost)
    });
    let text = run_text(&headline, &out.text, &err.text, truncated);
    let r = RunResult {
        stdout: out.text,
        stderr: err.text,
        stdout_bytes: out.bytes,
        stderr_bytes: err.bytes,
        stdout_file: out.file,
        stderr_file: err.file,
        excerpted: out.excerpted || err.excerpted,
        exit_code: outcome.exit_code,
        reason: outcome.reason.as_str().into(),
        duration_ms: outcome.wall_time.as_millis() as u64,
        truncated,
        workspace: ws.handle.clone(),
    };
    (text, r)
}

impl SandlockTools {
    /// One call of an execution tool, from its arguments to its result.
    async fn execute(
        &self,
        ctx: RequestContext<RoleServer>,
        tool: ExecTool,
        code: String,
        stdin: Option<String>,
        timeout_s: Option<f64>,
        requested: Option<String>,
    ) -> CallToolResult {
        let t0 = Instant::now();
        let exec = &self.app.exec;
        let _call = exec.gate.call();
        let refuse = |reason: &str, words: String, workspace: String| {
            self.log_call(&ctx, tool.name(), reason, t0.elapsed(), "");
            structured(words, &RunResult::never_ran(reason, workspace), true)
        };
        let timeout = match exec.timeout(tool, timeout_s) {
            Ok(t) => t,
            Err(words) => return refuse("invalid", words, String::new()),
        };
        // Python in fork mode forks the workspace's fork server when it has one ready; every
        // other call is a fresh run.
        let forked = tool == ExecTool::Python && exec.config.python_start == PythonStart::Fork;
        let fork_stdin = if forked { stdin.clone() } else { None };
        let cmd = match exec::command(tool, &exec.python, &code, stdin, timeout) {
            Ok(c) => c,
            Err(words) => return refuse("invalid", words, requested.unwrap_or_default()),
        };
        let _slot = match wait_for_slot(&exec.gate, &ctx).await {
            Ok(s) => s,
            Err(Some(e)) => {
                let reason = match e {
                    GateError::ShuttingDown => "shutting_down",
                    _ => "busy",
                };
                return refuse(reason, e.to_string(), requested.unwrap_or_default());
            }
            Err(None) => {
                self.log_call(&ctx, tool.name(), "cancelled", t0.elapsed(), "");
                return failure("the call was cancelled while it waited for a free slot");
            }
        };
        // After the gate, so that a call refused as busy creates no workspace.
        let ws = match self.workspace(requested.as_deref()) {
            Ok(ws) => ws,
            Err((reason, words)) => return refuse(reason, words, String::new()),
        };
        let sandbox = match exec.sandbox(tool, &ws) {
            Ok(s) => s,
            Err(words) => return refuse("sandbox_error", words, ws.handle.clone()),
        };
        let cancel = CallCancel::new(&exec.gate, &ctx);
        let why = cancel.why();
        let outcome = match forked {
            true => {
                exec.run_forked(&ws, &code, fork_stdin, timeout, &cancel.token, &why)
                    .await
            }
            false => None,
        };
        let outcome = match outcome {
            Some(o) => o,
            None => {
                if forked {
                    exec.prepare_fork_server(&ws);
                }
                drive::run(&sandbox, cmd, &cancel.token, &why)
                    .await
                    .unwrap_or_else(|e| Outcome::from_error(&e))
            }
        };
        cancel.finish().await;
        ws.touch();
        let is_error = !outcome.success();
        let (text, r) = show_outcome(outcome, timeout, &ws, exec.config.max_disk.bytes()).await;
        self.log_call(&ctx, tool.name(), &r.reason, t0.elapsed(), &code);
        structured(text, &r, is_error)
    }
}

#[tool_router(router = execution_router, vis = "pub(super)")]
impl SandlockTools {
    /// Runs Python code in the session's sandboxed workspace.
    #[tool(
        description = "Run Python code in a sandbox. The working directory is this session's \
                       private workspace (files persist between calls and are shared with the \
                       file tools); nothing outside it is writable, there is no network unless the \
                       server allows it, and the run is limited in time, memory, processes and \
                       output. Installed packages of the server's interpreter can be imported. \
                       Returns stdout, stderr, exit_code and why the run ended.",
        output_schema = output_schema::<RunResult>(),
        annotations(open_world_hint = false)
    )]
    async fn execute_python(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ExecutePythonArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(self
            .execute(
                ctx,
                ExecTool::Python,
                a.code,
                a.stdin,
                a.timeout_s,
                a.workspace,
            )
            .await)
    }

    /// Runs a shell command in the session's sandboxed workspace.
    #[tool(
        description = "Run a shell command (/bin/sh -c) in a sandbox, in this session's private \
                       workspace, with the same confinement and limits as execute_python. Returns \
                       stdout, stderr, exit_code and why the run ended.",
        output_schema = output_schema::<RunResult>(),
        annotations(open_world_hint = false)
    )]
    async fn execute_shell(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ExecuteShellArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(self
            .execute(
                ctx,
                ExecTool::Shell,
                a.command,
                None,
                a.timeout_s,
                a.workspace,
            )
            .await)
    }
}
