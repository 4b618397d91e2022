//! The execution tools: `execute_python`, `execute_shell`, `execute_code` and `reset_python`.
//!
//! A call, top to bottom ([`SandlockTools::execute`]): check the arguments and build the command,
//! wait for a slot at the concurrency gate, find the caller's workspace, note what its `outputs/`
//! holds, run (forking the workspace's Python fork server when it has one, see [`crate::warm`],
//! else a fresh run in the workspace's sandbox, driven by [`crate::drive`]), then show the
//! outcome: the headline in words, each stream inline or, when long, as its head and tail with the
//! whole saved in the workspace ([`crate::output`]), and the images the run saved in `outputs/`
//! ([`crate::images`]). `execute_shell` with `background: true` starts a background command
//! instead ([`super::commands`]).
//!
//! A persistent cell (`execute_python` with `persistent: true`, [`SandlockTools::execute_cell`])
//! finds its workspace first and waits for the workspace's turn, so that its cells run one at a
//! time without holding a run slot while they wait; then it takes a slot and runs in the
//! workspace's persistent interpreter ([`crate::warm::persistent`]), and is shown like any other
//! run. `reset_python` stops that interpreter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, tool, tool_router};
use sandlock_core::{Outcome, Reason};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{SandlockTools, failure, output_schema, resources, structured};
use crate::config::{ExecTool, PythonStart};
use crate::drive;
use crate::exec::{Gate, GateError, Slot, Source};
use crate::images::{self, ImageRef};
use crate::node::{self, Script};
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
    /// Run in this workspace's persistent interpreter, like a notebook cell: variables, imports,
    /// functions and classes stay for the next persistent call, and the value of a trailing
    /// expression is shown. Calls of one workspace run one at a time. `reset_python` starts over.
    #[serde(default)]
    pub persistent: bool,
    /// Stateless requests only: the workspace handle a previous result returned. Omit it to get a
    /// new workspace. Sessions always use their own workspace.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// Arguments of `reset_python`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ResetPythonArgs {
    /// Stateless requests only: see `execute_python`.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// The structured result of `reset_python`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ResetResult {
    /// Whether a live persistent interpreter was stopped (false: there was none).
    pub stopped: bool,
    /// The workspace handle.
    pub workspace: String,
}

/// What a persistent cell did to the workspace's interpreter (in the results of
/// `execute_python` with `persistent: true`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct PersistentCell {
    /// The number of this cell in its interpreter (1: the interpreter was new).
    pub cell: u64,
    /// Whether the interpreter and its state are still there after this cell. False when a
    /// limit, a kill or the code itself ended it: the next persistent cell starts a new one.
    pub state_kept: bool,
    /// Set when this cell started a new interpreter because the previous one had ended (by a
    /// limit, a kill or the code; not by `reset_python`): why, in words. The variables, imports
    /// and definitions of earlier cells are gone.
    pub state_lost: Option<String>,
}

/// Arguments of `execute_shell`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecuteShellArgs {
    /// A command line for `/bin/sh -c`, run in the workspace directory.
    pub command: String,
    /// Wall-clock limit in seconds (default and maximum are set by the server). A background
    /// command is killed when it runs out.
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// Start the command in the background and return its `command_id` at once; read its output
    /// with `command_output` and stop it with `kill_command`.
    #[serde(default)]
    pub background: Option<bool>,
    /// Stateless requests only: see `execute_python`.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// A language of `execute_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Python, with the server's interpreter (as `execute_python`).
    #[serde(alias = "py", alias = "python3")]
    Python,
    /// JavaScript, with Node.js.
    #[serde(alias = "js", alias = "node")]
    JavaScript,
    /// TypeScript, with tsx or Node's type stripping.
    #[serde(alias = "ts")]
    TypeScript,
}

/// Arguments of `execute_code`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecuteCodeArgs {
    /// The source code. JavaScript runs as `node file.js` would run it (CommonJS, or an ES module
    /// when it uses import, export or top-level await); TypeScript runs as an ES module, with
    /// `require`, `__filename` and `__dirname` also available.
    pub code: String,
    /// `python`, `javascript` or `typescript`.
    pub language: Language,
    /// Wall-clock limit in seconds (default and maximum are set by the server).
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// Text given to the program on standard input.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Stateless requests only: see `execute_python`.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// The structured result of `execute_python`, `execute_shell` and `execute_code`.
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
    /// (read it with `read_file`, `start_line` and `end_line`); for a background command, the
    /// file its standard output goes to.
    pub stdout_file: Option<String>,
    /// Where the whole standard error was saved, when it was too long to show.
    pub stderr_file: Option<String>,
    /// Whether `stdout` or `stderr` is an excerpt (head and tail) of a longer output.
    pub excerpted: bool,
    /// The exit code, when the program exited by itself.
    pub exit_code: Option<i32>,
    /// Why the run ended: exited, signaled, timeout, memory, processes, cpu, output, disk,
    /// sandbox_error; `running` for a background command just started; or, when it never ran,
    /// busy, invalid or shutting_down.
    pub reason: String,
    /// Wall-clock milliseconds of the run (0 when it never ran).
    pub duration_ms: u64,
    /// Whether stdout or stderr was cut at the output cap.
    pub truncated: bool,
    /// The background command's id (`execute_shell` with `background: true`), for
    /// `command_output` and `kill_command`.
    pub command_id: Option<String>,
    /// Images the run saved in `outputs/` (PNG, JPEG, GIF, WebP or SVG, new or changed during the
    /// call); those with `shown` true follow the text as image content.
    pub images: Vec<ImageRef>,
    /// The workspace handle (pass it back in stateless requests).
    pub workspace: String,
    /// For a persistent cell: what became of the interpreter's state. Null otherwise.
    pub persistent: Option<PersistentCell>,
}

/// What a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Program {
    Python,
    Shell,
    Node(Script),
}

/// One call of an execution tool, as the handler hands it over.
struct Call {
    /// The tool, for the log and the metrics.
    label: &'static str,
    program: Program,
    code: String,
    stdin: Option<String>,
    timeout_s: Option<f64>,
    workspace: Option<String>,
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
    pub(super) fn never_ran(reason: &str, workspace: String) -> RunResult {
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
            command_id: None,
            images: Vec::new(),
            workspace,
            persistent: None,
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

/// What an ended run becomes: the text block (the headline in words, then `notes`, one a line,
/// then the output, then the images `found` in `outputs/`), the structured result, and the images
/// to attach as image content. Long output is saved in the workspace, which is file work: it runs
/// on the blocking pool, off the event loop.
async fn show_outcome(
    mut outcome: Outcome,
    timeout: Duration,
    ws: &Arc<Workspace>,
    disk_cap: u64,
    notes: &[String],
    found: images::Found,
) -> (String, RunResult, Vec<ContentBlock>) {
    let truncated = outcome.stdout_truncated || outcome.stderr_truncated;
    let headline = std::iter::once(describe(&outcome, timeout))
        .chain(notes.iter().cloned())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
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
    let mut text = run_text(&headline, &out.text, &err.text, truncated);
    if !found.refs.is_empty() {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&images::describe(&found.refs, |p| {
            resources::uri(&ws.handle, p)
        }));
    }
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
        command_id: None,
        images: found.refs,
        workspace: ws.handle.clone(),
        persistent: None,
    };
    let images = found
        .content
        .into_iter()
        .map(|(data, mime)| ContentBlock::image(data, mime))
        .collect();
    (text, r, images)
}

/// `result` with `images` after its text, as image content.
fn with_images(mut result: CallToolResult, images: Vec<ContentBlock>) -> CallToolResult {
    result.content.extend(images);
    result
}

/// The images in `outputs/` before a run, noted only where there is such a directory (one
/// `openat2` on the event loop; the listing, when there is one, on the blocking pool).
async fn note_outputs(ws: &Arc<Workspace>) -> images::Snapshot {
    if !images::has_outputs(&ws.files) {
        return images::Snapshot::default();
    }
    let ws = ws.clone();
    tokio::task::spawn_blocking(move || images::snapshot(&ws.files))
        .await
        .unwrap_or_default()
}

/// After a run: deletes the snippet's file (`execute_code` in Node), and collects the images the
/// run saved in `outputs/`.
async fn after_run(
    ws: &Arc<Workspace>,
    script: Option<String>,
    before: images::Snapshot,
) -> images::Found {
    let outputs = images::has_outputs(&ws.files);
    if script.is_none() && !outputs {
        return images::Found::default();
    }
    let ws = ws.clone();
    tokio::task::spawn_blocking(move || {
        if let Some(f) = script {
            let _ = ws.files.delete(&f);
        }
        if outputs {
            images::collect(&ws.files, &before)
        } else {
            images::Found::default()
        }
    })
    .await
    .unwrap_or_default()
}

impl SandlockTools {
    /// One call of an execution tool, from its arguments to its result.
    async fn execute(&self, ctx: RequestContext<RoleServer>, call: Call) -> CallToolResult {
        let t0 = Instant::now();
        let exec = &self.app.exec;
        let _in_progress = exec.gate.call();
        let refuse = |reason: &str, words: String, workspace: String| {
            self.log_call(&ctx, call.label, reason, t0.elapsed(), "");
            structured(words, &RunResult::never_ran(reason, workspace), true)
        };
        let requested = call.workspace.clone();
        // A snippet for Node is saved in the workspace (see crate::node) under a name of its own.
        let script = match call.program {
            Program::Node(s) => Some(format!(
                ".sandlock-code-{}.{}",
                output::call_name(),
                node::extension(s)
            )),
            _ => None,
        };
        let source = match call.program {
            Program::Python => Source::Python(&call.code),
            Program::Shell => Source::Shell(&call.code),
            Program::Node(s) => Source::Node(s, script.as_deref().unwrap_or_default()),
        };
        let tool = source.tool();
        let timeout = match exec.timeout(tool, call.timeout_s) {
            Ok(t) => t,
            Err(words) => return refuse("invalid", words, String::new()),
        };
        // Python in fork mode forks the workspace's fork server when it has one ready; every
        // other call is a fresh run.
        let forked = tool == ExecTool::Python && exec.config.python_start == PythonStart::Fork;
        let fork_stdin = if forked { call.stdin.clone() } else { None };
        let cmd = match exec.command(source, call.stdin, timeout) {
            Ok(c) => c,
            Err(words) => return refuse("invalid", words, requested.unwrap_or_default()),
        };
        let _slot = match self.slot(&ctx, call.label, t0).await {
            Ok(s) => s,
            Err(Ok((reason, words))) => {
                return refuse(reason, words, requested.unwrap_or_default());
            }
            Err(Err(cancelled)) => return cancelled,
        };
        // After the gate, so that a call refused as busy creates no workspace.
        let ws = match self.workspace(requested.as_deref()) {
            Ok(ws) => ws,
            Err((reason, words)) => return refuse(reason, words, String::new()),
        };
        // A call that forks builds the fresh-run sandbox only if it falls back to a fresh run: a
        // workspace whose calls all fork never needs it. Only Python forks, so a Node snippet's
        // file is saved once its sandbox exists.
        let sandbox = match forked {
            true => None,
            false => match exec.sandbox(tool, &ws) {
                Ok(s) => Some(s),
                Err(words) => return refuse("sandbox_error", words, ws.handle.clone()),
            },
        };
        if let Some(file) = &script {
            let (w, f, code) = (ws.clone(), file.clone(), call.code.clone());
            let cap = exec.config.max_disk.bytes();
            let saved =
                tokio::task::spawn_blocking(move || w.files.write(&f, code.as_bytes(), cap))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
            if let Err(e) = saved {
                let words = format!("cannot save the code in the workspace to run it: {e}");
                return refuse("sandbox_error", words, ws.handle.clone());
            }
        }
        let before = note_outputs(&ws).await;
        let cancel = CallCancel::new(&exec.gate, &ctx);
        let why = cancel.why();
        let outcome = match forked {
            true => {
                exec.run_forked(&ws, &call.code, fork_stdin, timeout, &cancel.token, &why)
                    .await
            }
            false => None,
        };
        let outcome = match outcome {
            Some(o) => o,
            None => {
                let sandbox = match sandbox.map_or_else(|| exec.sandbox(tool, &ws), Ok) {
                    Ok(s) => s,
                    Err(words) => {
                        cancel.finish().await;
                        return refuse("sandbox_error", words, ws.handle.clone());
                    }
                };
                if forked {
                    exec.prepare_fork_server(&ws);
                }
                drive::run(&sandbox, cmd, &cancel.token, &why)
                    .await
                    .unwrap_or_else(|e| Outcome::from_error(&e))
            }
        };
        cancel.finish().await;
        let found = after_run(&ws, script, before).await;
        ws.touch();
        let is_error = !outcome.success();
        let (text, r, images) = show_outcome(
            outcome,
            timeout,
            &ws,
            exec.config.max_disk.bytes(),
            &[],
            found,
        )
        .await;
        self.log_call(&ctx, call.label, &r.reason, t0.elapsed(), &call.code);
        with_images(structured(text, &r, is_error), images)
    }

    /// One persistent cell of `execute_python`, from its arguments to its result.
    async fn execute_cell(
        &self,
        ctx: RequestContext<RoleServer>,
        code: String,
        stdin: Option<String>,
        timeout_s: Option<f64>,
        requested: Option<String>,
    ) -> CallToolResult {
        let t0 = Instant::now();
        let exec = &self.app.exec;
        let tool = ExecTool::Python;
        let _call = exec.gate.call();
        let refuse = |reason: &str, words: String, workspace: String| {
            self.log_call(&ctx, tool.name(), reason, t0.elapsed(), "");
            structured(words, &RunResult::never_ran(reason, workspace), true)
        };
        let timeout = match exec.timeout(tool, timeout_s) {
            Ok(t) => t,
            Err(words) => return refuse("invalid", words, String::new()),
        };
        if let Some(cpu) = exec.config.python_policy.max_cpu {
            return refuse(
                "invalid",
                format!(
                    "persistent: true is not available on this server: its Python policy sets \
                     max_cpu ({cpu}), which would add up over every cell of an interpreter; run \
                     the code without persistent"
                ),
                requested.unwrap_or_default(),
            );
        }
        let ws = match self.workspace(requested.as_deref()) {
            Ok(ws) => ws,
            Err((reason, words)) => return refuse(reason, words, String::new()),
        };
        let _turn = tokio::select! {
            t = ws.persistent_turn.lock() => t,
            _ = ctx.ct.cancelled() => {
                self.log_call(&ctx, tool.name(), "cancelled", t0.elapsed(), "");
                return failure("the call was cancelled while it waited for the workspace's previous persistent cell");
            }
        };
        let _slot = match self.slot(&ctx, tool.name(), t0).await {
            Ok(s) => s,
            Err(Ok((reason, words))) => return refuse(reason, words, ws.handle.clone()),
            Err(Err(cancelled)) => return cancelled,
        };
        let before = note_outputs(&ws).await;
        let cancel = CallCancel::new(&exec.gate, &ctx);
        let why = cancel.why();
        let run = exec
            .run_persistent(&ws, &code, stdin, timeout, &cancel.token, &why)
            .await;
        cancel.finish().await;
        let found = after_run(&ws, None, before).await;
        ws.touch();
        let run = match run {
            Ok(r) => r,
            Err(words) => return refuse("sandbox_error", words, ws.handle.clone()),
        };
        let (cell, ended) = (run.cell.number, run.cell.ended);
        let outcome = run.cell.outcome;
        let mut notes = Vec::new();
        if let Some(why) = &run.lost {
            notes.push(format!(
                "[state lost: the previous persistent interpreter {why}; this cell ran in a new \
                 one, without the variables, imports and definitions of earlier cells]"
            ));
        }
        let stopped = matches!(
            outcome.reason,
            Reason::Timeout | Reason::Output | Reason::Signaled
        );
        if let Some(why) = &ended {
            notes.push(format!(
                "[the persistent interpreter {why}: it is gone, with its state; the next \
                 persistent cell starts a new one]"
            ));
        } else if stopped {
            notes.push(
                "[the cell was interrupted with KeyboardInterrupt; the interpreter keeps its \
                 state]"
                    .into(),
            );
        }
        let is_error = !outcome.success();
        let (text, mut r, images) = show_outcome(
            outcome,
            timeout,
            &ws,
            exec.config.max_disk.bytes(),
            &notes,
            found,
        )
        .await;
        r.persistent = Some(PersistentCell {
            cell,
            state_kept: ended.is_none(),
            state_lost: run.lost,
        });
        self.log_call(&ctx, tool.name(), &r.reason, t0.elapsed(), &code);
        with_images(structured(text, &r, is_error), images)
    }

    /// Waits for a run slot at the gate. The error is the call's result when it gets none:
    /// `Ok((reason, words))` to refuse it (busy, shutting down), or `Err(result)` when the client
    /// cancelled while it waited (logged here).
    async fn slot(
        &self,
        ctx: &RequestContext<RoleServer>,
        tool: &str,
        t0: Instant,
    ) -> Result<Slot<'_>, Result<(&'static str, String), CallToolResult>> {
        match wait_for_slot(&self.app.exec.gate, ctx).await {
            Ok(s) => Ok(s),
            Err(Some(e)) => Err(Ok((
                match e {
                    GateError::ShuttingDown => "shutting_down",
                    _ => "busy",
                },
                e.to_string(),
            ))),
            Err(None) => {
                self.log_call(ctx, tool, "cancelled", t0.elapsed(), "");
                Err(Err(failure(
                    "the call was cancelled while it waited for a free slot",
                )))
            }
        }
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
                       Each call starts from a clean interpreter, unless persistent is true: then \
                       the call runs like a notebook cell in this workspace's persistent \
                       interpreter, where variables, imports and definitions of earlier \
                       persistent calls are kept and a trailing expression's value is shown. \
                       Images saved in outputs/ (e.g. plt.savefig('outputs/chart.png')) come back \
                       as images. Returns stdout, stderr, exit_code and why the run ended.",
        output_schema = output_schema::<RunResult>(),
        annotations(open_world_hint = false)
    )]
    async fn execute_python(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ExecutePythonArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        if a.persistent {
            return Ok(self
                .execute_cell(ctx, a.code, a.stdin, a.timeout_s, a.workspace)
                .await);
        }
        let call = Call {
            label: "execute_python",
            program: Program::Python,
            code: a.code,
            stdin: a.stdin,
            timeout_s: a.timeout_s,
            workspace: a.workspace,
        };
        Ok(self.execute(ctx, call).await)
    }

    /// Stops the workspace's persistent Python interpreter.
    #[tool(
        description = "Forget the state of persistent execute_python calls: stops this \
                       workspace's persistent interpreter (a cell still running is killed); the \
                       next call with persistent: true starts a new, empty one. Files in the \
                       workspace are kept.",
        output_schema = output_schema::<ResetResult>(),
        annotations(open_world_hint = false, idempotent_hint = true)
    )]
    async fn reset_python(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ResetPythonArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let t0 = Instant::now();
        let ws = match self.workspace(a.workspace.as_deref()) {
            Ok(ws) => ws,
            Err((reason, words)) => {
                self.log_call(&ctx, "reset_python", reason, t0.elapsed(), "");
                return Ok(failure(words));
            }
        };
        let stopped = self.app.exec.reset_python(&ws);
        let text = if stopped {
            "stopped the persistent Python interpreter: its variables, imports and definitions \
             are gone; the next persistent call starts a new one"
        } else {
            "there was no persistent Python interpreter running in this workspace"
        };
        self.log_call(&ctx, "reset_python", "ok", t0.elapsed(), "");
        let r = ResetResult {
            stopped,
            workspace: ws.handle.clone(),
        };
        Ok(structured(text.into(), &r, false))
    }

    /// Runs a shell command in the session's sandboxed workspace, or starts it in the background.
    #[tool(
        description = "Run a shell command (/bin/sh -c) in a sandbox, in this session's private \
                       workspace, with the same confinement and limits as execute_python. Returns \
                       stdout, stderr, exit_code and why the run ended. With background=true it \
                       returns a command_id at once instead (for servers, watchers, long builds): \
                       read its new output with command_output, stop it with kill_command; it \
                       still has the timeout (timeout_s) and the other limits.",
        output_schema = output_schema::<RunResult>(),
        annotations(open_world_hint = false)
    )]
    async fn execute_shell(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ExecuteShellArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        if a.background == Some(true) {
            return Ok(self
                .start_background(ctx, a.command, a.timeout_s, a.workspace)
                .await);
        }
        let call = Call {
            label: "execute_shell",
            program: Program::Shell,
            code: a.command,
            stdin: None,
            timeout_s: a.timeout_s,
            workspace: a.workspace,
        };
        Ok(self.execute(ctx, call).await)
    }

    /// Runs Python, JavaScript or TypeScript in the session's sandboxed workspace.
    #[tool(
        description = "Run code in python, javascript (Node.js) or typescript in a sandbox, in \
                       this session's private workspace, with the same confinement and limits as \
                       execute_python (python runs exactly as there). Returns stdout, stderr, \
                       exit_code and why the run ended; images saved in outputs/ come back as \
                       images.",
        output_schema = output_schema::<RunResult>(),
        annotations(open_world_hint = false)
    )]
    async fn execute_code(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ExecuteCodeArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let program = match a.language {
            Language::Python => Program::Python,
            Language::JavaScript => Program::Node(Script::JavaScript),
            Language::TypeScript => Program::Node(Script::TypeScript),
        };
        let call = Call {
            label: "execute_code",
            program,
            code: a.code,
            stdin: a.stdin,
            timeout_s: a.timeout_s,
            workspace: a.workspace,
        };
        Ok(self.execute(ctx, call).await)
    }
}
