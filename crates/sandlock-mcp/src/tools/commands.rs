//! The command tools: `execute_shell` with `background: true` (started here), `command_output`
//! and `kill_command`. The commands themselves live in [`crate::background`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::execution::{RunResult, describe};
use super::{SandlockTools, failure, output_schema, structured};
use crate::background::{COMMAND_DIR, Command, CommandError, Logs, Poll};
use crate::config::ExecTool;
use crate::exec::Source;
use crate::workspace::Workspace;

/// The longest `wait_s` of `command_output`.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// How long `kill_command` waits for the tree to be gone before it answers.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Arguments of `command_output`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CommandOutputArgs {
    /// The id `execute_shell` returned for the background command (e.g. `cmd-1`).
    pub command_id: String,
    /// Wait up to this many seconds (at most 30) for new output or the end, instead of
    /// answering at once.
    #[serde(default)]
    pub wait_s: Option<f64>,
    /// Stateless requests only: see `execute_python`.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// Arguments of `kill_command`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct KillCommandArgs {
    /// The id `execute_shell` returned for the background command (e.g. `cmd-1`).
    pub command_id: String,
    /// Stateless requests only: see `execute_python`.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// The structured result of `command_output` and `kill_command`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CommandResult {
    /// The command's id.
    pub command_id: String,
    /// The command line.
    pub command: String,
    /// Whether it still runs.
    pub running: bool,
    /// The exit code, once it exited by itself.
    pub exit_code: Option<i32>,
    /// `running`, or why it ended: exited, signaled (killed), timeout, memory, processes, cpu,
    /// output, disk, sandbox_error.
    pub reason: String,
    /// Standard output written since the previous `command_output` (head and tail with a marker
    /// when long; the whole is in `stdout_file`).
    pub stdout: String,
    /// Standard error written since the previous `command_output`, shown the same way.
    pub stderr: String,
    /// Bytes of new standard output in this result.
    pub stdout_bytes: u64,
    /// Bytes of new standard error in this result.
    pub stderr_bytes: u64,
    /// Bytes of standard output since the command started.
    pub stdout_total: u64,
    /// Bytes of standard error since the command started.
    pub stderr_total: u64,
    /// The file in the workspace that holds all of its standard output (read it with
    /// `read_file`).
    pub stdout_file: String,
    /// The file that holds all of its standard error.
    pub stderr_file: String,
    /// Whether `stdout` or `stderr` is an excerpt of a longer output.
    pub excerpted: bool,
    /// Whether output was cut at the server's output cap (which ends the command).
    pub truncated: bool,
    /// Milliseconds since it started, or how long it ran.
    pub duration_ms: u64,
    /// The workspace handle.
    pub workspace: String,
}

/// `s` seconds, for words.
fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The result of a poll: the state in words, then the new output.
fn poll_result(c: &Command, p: Poll, ws: &Workspace, ended_before: bool) -> CallToolResult {
    let (stdout_file, stderr_file) = c.files();
    let mut text = match &p.end {
        None => format!("{} is running ({} so far)", c.id, secs(p.elapsed)),
        Some(o) => {
            let how = describe(o, c.timeout);
            let how = if how.is_empty() {
                "exit code 0".to_string()
            } else {
                how
            };
            let when = if ended_before { "had ended" } else { "ended" };
            format!("{} {when} after {}: {how}", c.id, secs(p.elapsed))
        }
    };
    text.push('\n');
    let (out, err) = (&p.stdout.text, &p.stderr.text);
    if out.is_empty() && err.is_empty() {
        text.push_str("(no new output)\n");
    }
    text.push_str(out);
    if !err.is_empty() {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("[stderr]\n");
        text.push_str(err);
    }
    for l in &p.lost {
        text.push_str(&format!("\n[{l}]"));
    }
    let truncated = p
        .end
        .as_ref()
        .is_some_and(|o| o.stdout_truncated || o.stderr_truncated);
    let r = CommandResult {
        command_id: c.id.clone(),
        command: c.line.clone(),
        running: p.end.is_none(),
        exit_code: p.end.as_ref().and_then(|o| o.exit_code),
        reason: p
            .end
            .as_ref()
            .map_or("running", |o| o.reason.as_str())
            .into(),
        stdout_bytes: p.stdout.bytes,
        stderr_bytes: p.stderr.bytes,
        excerpted: p.stdout.excerpted || p.stderr.excerpted,
        stdout: p.stdout.text,
        stderr: p.stderr.text,
        stdout_total: p.totals.0,
        stderr_total: p.totals.1,
        stdout_file,
        stderr_file,
        truncated,
        duration_ms: p.elapsed.as_millis() as u64,
        workspace: ws.handle.clone(),
    };
    structured(text, &r, false)
}

impl SandlockTools {
    /// Starts `command` in the background: its id comes back at once.
    pub(super) async fn start_background(
        &self,
        ctx: RequestContext<RoleServer>,
        command: String,
        timeout_s: Option<f64>,
        requested: Option<String>,
    ) -> CallToolResult {
        let t0 = Instant::now();
        let exec = &self.app.exec;
        let refuse = |reason: &str, words: String, workspace: String| {
            self.log_call(&ctx, "execute_shell", reason, t0.elapsed(), "");
            structured(words, &RunResult::never_ran(reason, workspace), true)
        };
        let timeout = match exec.timeout(ExecTool::Shell, timeout_s) {
            Ok(t) => t,
            Err(words) => return refuse("invalid", words, String::new()),
        };
        if exec.gate.closing.is_cancelled() {
            let words = crate::exec::GateError::ShuttingDown.to_string();
            return refuse("shutting_down", words, requested.unwrap_or_default());
        }
        let cmd = match exec.command(Source::Shell(&command), None, timeout) {
            Ok(c) => c,
            Err(words) => return refuse("invalid", words, requested.unwrap_or_default()),
        };
        let ws = match self.workspace(requested.as_deref()) {
            Ok(ws) => ws,
            Err((reason, words)) => return refuse(reason, words, String::new()),
        };
        let sandbox = match exec.sandbox(ExecTool::Shell, &ws) {
            Ok(s) => s,
            Err(words) => return refuse("sandbox_error", words, ws.handle.clone()),
        };
        let started = ws.commands.start(
            exec.config.max_background,
            |id| {
                let log = |stream: &str| {
                    let path = format!("{COMMAND_DIR}/{id}.{stream}");
                    ws.files
                        .create(&path)
                        .map(|f| (path, f))
                        .map_err(|e| format!("cannot create the command's output file: {e}"))
                };
                let logs = Logs {
                    stdout: log("stdout")?,
                    stderr: log("stderr")?,
                };
                let running = sandbox
                    .spawn(cmd)
                    .map_err(|e| format!("the command could not start: {e}"))?;
                let keep: Arc<dyn std::any::Any + Send + Sync> = ws.clone();
                Ok(Command::start(
                    id,
                    command.clone(),
                    timeout,
                    running,
                    logs,
                    &exec.gate.kill,
                    keep,
                ))
            },
            |old| {
                let (out, err) = old.files();
                let _ = ws.files.delete(&out);
                let _ = ws.files.delete(&err);
            },
        );
        let c = match started {
            Ok(c) => c,
            Err(e @ CommandError::TooMany(_)) => {
                return refuse("busy", e.to_string(), ws.handle.clone());
            }
            Err(e) => return refuse("sandbox_error", e.to_string(), ws.handle.clone()),
        };
        ws.touch();
        self.log_call(&ctx, "execute_shell", "background", t0.elapsed(), &command);
        let (stdout_file, stderr_file) = c.files();
        let text = format!(
            "started {id} in the background (it is killed after {}, like any run); read its new \
             output with command_output(command_id=\"{id}\") and stop it with \
             kill_command(command_id=\"{id}\"); all of its output also goes to {stdout_file} and \
             {stderr_file}",
            secs(timeout),
            id = c.id
        );
        let r = RunResult {
            reason: "running".into(),
            command_id: Some(c.id.clone()),
            stdout_file: Some(stdout_file),
            stderr_file: Some(stderr_file),
            ..RunResult::never_ran("running", ws.handle.clone())
        };
        structured(text, &r, false)
    }

    /// The command `id` of the caller's workspace, or the error result that says why not.
    fn find_command(
        &self,
        requested: Option<&str>,
        id: &str,
    ) -> Result<(Arc<Workspace>, Arc<Command>), CallToolResult> {
        let ws = self.workspace(requested).map_err(|(_, w)| failure(w))?;
        let c = ws.commands.get(id).map_err(|e| failure(e.to_string()))?;
        ws.touch();
        Ok((ws, c))
    }
}

#[tool_router(router = command_router, vis = "pub(super)")]
impl SandlockTools {
    /// New output of a background command since the last call, and whether it still runs.
    #[tool(
        description = "Read a background command's output (started by execute_shell with \
                       background=true): stdout and stderr written since the previous \
                       command_output, whether it still runs, and its exit_code and reason once \
                       it ended. wait_s waits up to that many seconds for new output or the end.",
        output_schema = output_schema::<CommandResult>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn command_output(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<CommandOutputArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let t0 = Instant::now();
        let wait = match a.wait_s {
            None => Duration::ZERO,
            Some(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s).min(MAX_WAIT),
            Some(s) => {
                let words = format!("wait_s={s} is not a number of seconds (0 to 30)");
                self.log_call(&ctx, "command_output", "invalid", t0.elapsed(), "");
                return Ok(failure(words));
            }
        };
        let (ws, c) = match self.find_command(a.workspace.as_deref(), &a.command_id) {
            Ok(found) => found,
            Err(r) => {
                self.log_call(&ctx, "command_output", "error", t0.elapsed(), "");
                return Ok(r);
            }
        };
        if !wait.is_zero() {
            let deadline = tokio::time::Instant::now() + wait;
            tokio::select! {
                _ = c.wait_for_news(deadline) => {}
                _ = ctx.ct.cancelled() => {}
            }
        }
        let p = c.poll().await;
        self.log_call(&ctx, "command_output", "ok", t0.elapsed(), "");
        Ok(poll_result(&c, p, &ws, false))
    }

    /// Kills a background command's whole process tree.
    #[tool(
        description = "Stop a background command: kills it and every process it started. Returns \
                       its final state and the output not yet read.",
        output_schema = output_schema::<CommandResult>(),
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn kill_command(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<KillCommandArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let t0 = Instant::now();
        let (ws, c) = match self.find_command(a.workspace.as_deref(), &a.command_id) {
            Ok(found) => found,
            Err(r) => {
                self.log_call(&ctx, "kill_command", "error", t0.elapsed(), "");
                return Ok(r);
            }
        };
        let was_running = c.running();
        c.kill("killed by kill_command");
        c.wait_for_end(KILL_WAIT).await;
        let p = c.poll().await;
        self.log_call(&ctx, "kill_command", "ok", t0.elapsed(), "");
        Ok(poll_result(&c, p, &ws, !was_running))
    }
}
