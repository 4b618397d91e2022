//! The MCP tools and the per-session handler.
//!
//! rmcp calls the handler factory once per session (2025-11-25 over HTTP, or stdio) and once per
//! request for stateless requests (2026-07-28, or `--stateless`). A handler learns that it belongs
//! to a session in `on_initialized`; such a handler owns its session's workspace, which is removed
//! when the session ends and rmcp drops the handler. A handler that was never initialized serves a
//! stateless request and finds its workspace by the `workspace` argument (see [`crate::workspace`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use sandlock_core::{Outcome, Reason};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{ExecTool, PythonStart};
use crate::exec::{self, Executor};
use crate::files::Entry;
use crate::metrics::{Gauges, Metrics};
use crate::output;
use crate::workspace::{Registry, Workspace, WorkspaceError, short};

/// JSON bytes of file text `read_file` returns at once (the text is in the result twice).
const READ_BUDGET: usize = 192 * 1024;
/// Most entries `list_files` returns.
const MAX_LIST: usize = 2000;

/// State shared by every handler of the server.
pub struct App {
    /// Execution: configuration, interpreter, concurrency gate.
    pub exec: Executor,
    /// Workspaces.
    pub workspaces: Registry,
    /// Metrics.
    pub metrics: Metrics,
    /// LobeHub's sandbox provider API, when configured.
    pub provider: Option<Arc<crate::provider::Provider>>,
}

impl App {
    /// Current gauges.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            active_sandboxes: self.exec.gate.running(),
            queue_depth: self.exec.gate.queued(),
            workspaces: self.workspaces.live(),
            fork_servers: crate::warm::live_fork_servers(),
            draining: self.exec.gate.closing.is_cancelled(),
        }
    }
}

/// What a handler knows about its session.
#[derive(Default)]
struct Session {
    /// Set by `on_initialized`: this handler lives as long as a session.
    initialized: AtomicBool,
    /// The session id, for logs (`stdio` for the stdio transport).
    id: Mutex<Option<String>>,
    /// The session's workspace, created on first use.
    workspace: Mutex<Option<Arc<Workspace>>>,
}

/// Why a call has no workspace.
enum WsError {
    /// A misuse, in words.
    Words(String),
    /// The registry refused.
    Registry(WorkspaceError),
}

impl From<WorkspaceError> for WsError {
    fn from(e: WorkspaceError) -> Self {
        WsError::Registry(e)
    }
}

/// The MCP server handler: the six tools over one workspace per session.
#[derive(Clone)]
pub struct SandlockTools {
    tool_router: ToolRouter<Self>,
    app: Arc<App>,
    session: Arc<Session>,
}

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

/// Arguments of `read_file`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadArgs {
    /// A path relative to the workspace, e.g. `results/out.csv`.
    pub path: String,
    /// The first line to return (1-based; default 1).
    #[serde(default)]
    pub start_line: Option<u64>,
    /// The last line to return (inclusive; default: as many as fit in one result, about 190 KB).
    #[serde(default)]
    pub end_line: Option<u64>,
    /// Stateless requests only: see `execute_python`.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// Arguments of `delete_file`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PathArgs {
    /// A path relative to the workspace, e.g. `results/out.csv`.
    pub path: String,
    /// Stateless requests only: see `execute_python`.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// Arguments of `write_file`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct WriteArgs {
    /// A path relative to the workspace; missing parent directories are created.
    pub path: String,
    /// The text to write (replaces the file).
    pub content: String,
    /// Stateless requests only: see `execute_python`.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// Arguments of `list_files`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListArgs {
    /// A directory relative to the workspace (default: the workspace itself).
    #[serde(default)]
    pub path: Option<String>,
    /// List subdirectories too.
    #[serde(default)]
    pub recursive: Option<bool>,
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

/// The structured result of `read_file`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ReadResult {
    /// The path read.
    pub path: String,
    /// The text of lines `start_line` to `end_line` (invalid UTF-8 replaced).
    pub content: String,
    /// The file's size in bytes.
    pub bytes: u64,
    /// Lines in the whole file.
    pub total_lines: u64,
    /// The first line returned (1-based).
    pub start_line: u64,
    /// The last line returned (`start_line - 1` when none was).
    pub end_line: u64,
    /// Lines were left out to keep the result small: read on from `next_start_line`.
    pub truncated: bool,
    /// Where to continue, when there is more to read.
    pub next_start_line: Option<u64>,
    /// The workspace handle.
    pub workspace: String,
}

/// The structured result of `write_file` and `delete_file`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FileResult {
    /// The path written or deleted.
    pub path: String,
    /// Bytes written (0 for a deletion).
    pub bytes: u64,
    /// The workspace handle.
    pub workspace: String,
}

/// The structured result of `list_files`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListResult {
    /// Entries, sorted by path.
    pub entries: Vec<Entry>,
    /// Whether the listing stopped at its limit.
    pub truncated: bool,
    /// The workspace handle.
    pub workspace: String,
}

/// The output schema of `T`, without schemars' non-standard integer formats (`uint64`), which
/// JSON Schema validators in clients (Ajv in the TypeScript SDK) warn about.
fn output_schema<T: JsonSchema + 'static>() -> Arc<rmcp::model::JsonObject> {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                if m.get("format")
                    .and_then(|f| f.as_str())
                    .is_some_and(|f| f.starts_with("uint"))
                {
                    m.remove("format");
                }
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::Value::Object(
        (*rmcp::handler::server::common::schema_for_output::<T>()).clone(),
    );
    strip(&mut v);
    match v {
        serde_json::Value::Object(m) => Arc::new(m),
        _ => rmcp::handler::server::common::schema_for_output::<T>(),
    }
}

fn structured<T: Serialize>(text: String, value: &T, is_error: bool) -> CallToolResult {
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    r.structured_content = serde_json::to_value(value).ok();
    r.is_error = Some(is_error);
    r
}

fn failure(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text.into())])
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

impl SandlockTools {
    /// A handler for one session (or one stateless request).
    pub fn new(app: Arc<App>) -> Self {
        // Stateless requests get a handler each: build the router (six tools and their schemas)
        // once, and clone it.
        static ROUTER: OnceLock<ToolRouter<SandlockTools>> = OnceLock::new();
        SandlockTools {
            tool_router: ROUTER.get_or_init(Self::tool_router).clone(),
            app,
            session: Arc::new(Session::default()),
        }
    }

    /// Marks this handler as a whole session (stdio has no `on_initialized` with HTTP parts).
    pub fn as_session(self, id: &str) -> Self {
        self.session.initialized.store(true, Ordering::Relaxed);
        if let Ok(mut g) = self.session.id.lock() {
            *g = Some(id.to_string());
        }
        self
    }

    fn session_label(&self, ctx: &RequestContext<RoleServer>) -> String {
        if let Ok(g) = self.session.id.lock() {
            if let Some(id) = g.as_ref() {
                return short(id).to_string();
            }
        }
        ctx.extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| "stateless".to_string(), |s| short(s).to_string())
    }

    /// This call's workspace: the session's, or the stateless one named by `requested`. The error
    /// is (outcome, words): `busy` when the server holds too many workspaces, else `invalid`.
    fn workspace(&self, requested: Option<&str>) -> Result<Arc<Workspace>, (&'static str, String)> {
        self.find_workspace(requested).map_err(|e| match e {
            WsError::Words(w) => ("invalid", w),
            WsError::Registry(e @ WorkspaceError::Full(_)) => ("busy", e.to_string()),
            WsError::Registry(e) => ("invalid", e.to_string()),
        })
    }

    fn find_workspace(&self, requested: Option<&str>) -> Result<Arc<Workspace>, WsError> {
        let requested = requested.filter(|h| !h.is_empty());
        if self.session.initialized.load(Ordering::Relaxed) {
            let mut g = self
                .session
                .workspace
                .lock()
                .map_err(|_| WsError::Words("internal error: a lock was poisoned".into()))?;
            if let Some(ws) = g.as_ref() {
                if let Some(r) = requested {
                    if r != ws.handle {
                        return Err(WsError::Words(format!(
                            "this session's workspace is {}; the workspace argument is only for \
                             stateless requests (omit it)",
                            ws.handle
                        )));
                    }
                }
                ws.touch();
                return Ok(ws.clone());
            }
            if requested.is_some() {
                return Err(WsError::Words(
                    "the workspace argument is only for stateless requests; this session has its \
                     own workspace (omit it)"
                        .into(),
                ));
            }
            let ws = self.app.workspaces.create(true)?;
            *g = Some(ws.clone());
            return Ok(ws);
        }
        Ok(match requested {
            Some(h) => self.app.workspaces.get(h)?,
            None => self.app.workspaces.create(false)?,
        })
    }

    fn log_call(
        &self,
        ctx: &RequestContext<RoleServer>,
        tool: &str,
        outcome: &str,
        took: Duration,
        extra: &str,
    ) {
        self.app.metrics.record(tool, outcome, took);
        let session = self.session_label(ctx);
        let ms = took.as_secs_f64() * 1000.0;
        if self.app.exec.config.log_code && !extra.is_empty() {
            tracing::info!(target: "sandlock_mcp::call", session, tool, reason = outcome, duration_ms = ms, code = extra, "call");
        } else {
            tracing::info!(target: "sandlock_mcp::call", session, tool, reason = outcome, duration_ms = ms, "call");
        }
    }

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
        let _call = self.app.exec.gate.call();
        let cfg = &self.app.exec.config;
        let never_ran = |reason: &str, msg: String, ws: String| {
            let r = RunResult {
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
                workspace: ws,
            };
            structured(msg, &r, true)
        };
        let default_timeout = cfg
            .policy(tool)
            .timeout
            .map_or(Duration::from_secs(30), |s| s.duration());
        let timeout = match timeout_s {
            None => default_timeout,
            Some(s)
                if s.is_finite() && s > 0.0 && Duration::from_secs_f64(s) <= cfg.max_timeout =>
            {
                Duration::from_secs_f64(s)
            }
            Some(s) => {
                let msg = format!(
                    "timeout_s={s} is not allowed: give a number of seconds above 0 and at most {} \
                     (the server's max_timeout)",
                    cfg.max_timeout.as_secs_f64()
                );
                self.log_call(&ctx, tool.name(), "invalid", t0.elapsed(), "");
                return never_ran("invalid", msg, String::new());
            }
        };
        // Python in fork mode forks the workspace's fork server; everything else is a fresh run.
        // Python in fork mode forks the workspace's fork server when it has one ready; every
        // other call is a fresh run.
        let forked = tool == ExecTool::Python && cfg.python_start == PythonStart::Fork;
        let fork_stdin = if forked { stdin.clone() } else { None };
        let cmd = match exec::command(tool, &self.app.exec.python, &code, stdin, timeout) {
            Ok(c) => c,
            Err(msg) => {
                self.log_call(&ctx, tool.name(), "invalid", t0.elapsed(), "");
                return never_ran("invalid", msg, requested.unwrap_or_default());
            }
        };
        let gate = &self.app.exec.gate;
        let slot = tokio::select! {
            s = gate.enter() => s,
            _ = ctx.ct.cancelled() => {
                self.log_call(&ctx, tool.name(), "cancelled", t0.elapsed(), "");
                return failure("the call was cancelled while it waited for a free slot");
            }
        };
        let _slot = match slot {
            Ok(s) => s,
            Err(e) => {
                let reason = match e {
                    exec::GateError::ShuttingDown => "shutting_down",
                    _ => "busy",
                };
                self.log_call(&ctx, tool.name(), reason, t0.elapsed(), "");
                return never_ran(reason, e.to_string(), requested.unwrap_or_default());
            }
        };
        // After the gate, so that a call refused as busy creates no workspace.
        let ws = match self.workspace(requested.as_deref()) {
            Ok(ws) => ws,
            Err((reason, msg)) => {
                self.log_call(&ctx, tool.name(), reason, t0.elapsed(), "");
                return never_ran(reason, msg, String::new());
            }
        };
        let sandbox = match self.app.exec.sandbox(tool, &ws) {
            Ok(s) => s,
            Err(msg) => {
                self.log_call(&ctx, tool.name(), "sandbox_error", t0.elapsed(), "");
                return never_ran("sandbox_error", msg, ws.handle.clone());
            }
        };
        // Either the client cancels the request, or the shutdown grace period ends.
        let cancel = tokio_util::sync::CancellationToken::new();
        let relay = {
            let (cancel, kill, client) = (cancel.clone(), gate.kill.clone(), ctx.ct.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = kill.cancelled() => {}
                    _ = client.cancelled() => {}
                    _ = cancel.cancelled() => {}
                }
                cancel.cancel();
            })
        };
        let kill = gate.kill.clone();
        let why = move || {
            if kill.is_cancelled() {
                "killed: the server shut down and the grace period ran out".to_string()
            } else {
                "killed: the client cancelled the call".to_string()
            }
        };
        let exec = &self.app.exec;
        let outcome = match forked {
            true => {
                exec.run_forked(&ws, &code, fork_stdin, timeout, &cancel, &why)
                    .await
            }
            false => None,
        };
        let mut outcome = match outcome {
            Some(o) => o,
            None => {
                if forked {
                    exec.prepare_fork_server(&ws);
                }
                exec::run(&sandbox, cmd, &cancel, &why)
                    .await
                    .unwrap_or_else(|e| Outcome::from_error(&e))
            }
        };
        cancel.cancel();
        let _ = relay.await;
        ws.touch();
        let truncated = outcome.stdout_truncated || outcome.stderr_truncated;
        let is_error = !outcome.success();
        let headline = describe(&outcome, timeout);
        // Long output is saved in the workspace: file work, off the event loop.
        let disk_cap = cfg.max_disk.bytes();
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
        self.log_call(
            &ctx,
            tool.name(),
            outcome.reason.as_str(),
            t0.elapsed(),
            &code,
        );
        structured(text, &r, is_error)
    }

    async fn file_op<T: Serialize + Send + 'static>(
        &self,
        ctx: &RequestContext<RoleServer>,
        tool: &str,
        requested: Option<&str>,
        op: impl FnOnce(&Workspace) -> Result<(String, T), String> + Send + 'static,
    ) -> CallToolResult {
        let t0 = Instant::now();
        let res = match self.workspace(requested) {
            Err((_, w)) => Err(w),
            // File work can take a while (a large file, a deep listing, a slow disk): it runs on
            // the blocking pool, not on the server's one event-loop thread.
            Ok(ws) => tokio::task::spawn_blocking(move || {
                let r = op(&ws);
                ws.touch();
                r
            })
            .await
            .unwrap_or_else(|e| Err(format!("internal error in {tool}: {e}"))),
        };
        match res {
            Ok((text, value)) => {
                self.log_call(ctx, tool, "ok", t0.elapsed(), "");
                structured(text, &value, false)
            }
            Err(msg) => {
                self.log_call(ctx, tool, "error", t0.elapsed(), "");
                failure(msg)
            }
        }
    }
}

#[tool_router]
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

    /// Reads a text file from the workspace.
    #[tool(
        description = "Read a text file from the workspace, in pages of lines: start_line and \
                       end_line (1-based, inclusive) choose them; the result gives total_lines \
                       and, when more is left, next_start_line. Long outputs of execute_python \
                       and execute_shell are saved under .sandlock/outputs/ and read this way. \
                       Paths are relative to the workspace; absolute paths, '..' and symlinks \
                       leading outside are refused.",
        output_schema = output_schema::<ReadResult>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn read_file(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ReadArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let requested = a.workspace.clone();
        Ok(self
            .file_op(&ctx, "read_file", requested.as_deref(), move |ws| {
                if a.end_line.is_some_and(|e| e < a.start_line.unwrap_or(1)) {
                    return Err(format!(
                        "end_line {} is before start_line {}",
                        a.end_line.unwrap_or(0),
                        a.start_line.unwrap_or(1)
                    ));
                }
                let l = ws
                    .files
                    .read_lines(&a.path, a.start_line.unwrap_or(1), a.end_line, READ_BUDGET)
                    .map_err(|e| e.to_string())?;
                let wanted_end = a.end_line.unwrap_or(l.total_lines).min(l.total_lines);
                let more = l.cut || l.last < wanted_end;
                let next = more.then_some(l.last + 1);
                let mut text = l.content.clone();
                if more {
                    if !text.is_empty() && !text.ends_with('\n') {
                        text.push('\n');
                    }
                    text.push_str(&format!(
                        "[lines {}-{} of {}; read on with start_line={}]",
                        l.first,
                        l.last,
                        l.total_lines,
                        next.unwrap_or(l.last)
                    ));
                }
                let r = ReadResult {
                    path: a.path.clone(),
                    content: l.content,
                    bytes: l.bytes,
                    total_lines: l.total_lines,
                    start_line: l.first,
                    end_line: l.last,
                    truncated: more,
                    next_start_line: next,
                    workspace: ws.handle.clone(),
                };
                Ok((text, r))
            })
            .await)
    }

    /// Writes a text file into the workspace.
    #[tool(
        description = "Write a UTF-8 text file into the workspace (replacing it; parent \
                       directories are created). Paths are relative to the workspace. The \
                       workspace has a disk cap.",
        output_schema = output_schema::<FileResult>(),
        annotations(destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn write_file(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<WriteArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let cap = self.app.exec.config.max_disk.bytes();
        let requested = a.workspace.clone();
        Ok(self
            .file_op(&ctx, "write_file", requested.as_deref(), move |ws| {
                ws.files
                    .write(&a.path, a.content.as_bytes(), cap)
                    .map_err(|e| e.to_string())?;
                let n = a.content.len() as u64;
                let r = FileResult {
                    path: a.path.clone(),
                    bytes: n,
                    workspace: ws.handle.clone(),
                };
                Ok((format!("wrote {n} bytes to {}", a.path), r))
            })
            .await)
    }

    /// Lists files in the workspace.
    #[tool(
        description = "List the files of the workspace (or of a directory in it), with type and \
                       size.",
        output_schema = output_schema::<ListResult>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_files(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ListArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let requested = a.workspace.clone();
        Ok(self
            .file_op(&ctx, "list_files", requested.as_deref(), move |ws| {
                let path = a.path.clone().unwrap_or_default();
                let (entries, truncated) = ws
                    .files
                    .list(&path, a.recursive.unwrap_or(false), MAX_LIST)
                    .map_err(|e| e.to_string())?;
                let mut text = String::new();
                for e in &entries {
                    let mark = if e.kind == "dir" { "/" } else { "" };
                    text.push_str(&format!("{}{mark}\t{}\n", e.path, e.size));
                }
                if entries.is_empty() {
                    text.push_str("(empty)");
                }
                if truncated {
                    text.push_str(&format!("[listing stopped at {MAX_LIST} entries]"));
                }
                let r = ListResult {
                    entries,
                    truncated,
                    workspace: ws.handle.clone(),
                };
                Ok((text, r))
            })
            .await)
    }

    /// Deletes a file from the workspace.
    #[tool(
        description = "Delete a file, a symlink (not its target) or an empty directory from the \
                       workspace.",
        output_schema = output_schema::<FileResult>(),
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn delete_file(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<PathArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let requested = a.workspace.clone();
        Ok(self
            .file_op(&ctx, "delete_file", requested.as_deref(), move |ws| {
                ws.files.delete(&a.path).map_err(|e| e.to_string())?;
                let r = FileResult {
                    path: a.path.clone(),
                    bytes: 0,
                    workspace: ws.handle.clone(),
                };
                Ok((format!("deleted {}", a.path), r))
            })
            .await)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for SandlockTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("sandlock", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Sandboxed code execution. execute_python and execute_shell run in a private \
                 workspace directory that persists for this session; read_file, write_file, \
                 list_files and delete_file work on the same directory with relative paths. \
                 Stateless (2026-07-28) clients: pass back the `workspace` handle from a result \
                 to reach the same files.",
            )
    }

    async fn on_initialized(&self, ctx: NotificationContext<RoleServer>) {
        let id = ctx
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.session.initialized.store(true, Ordering::Relaxed);
        if let Ok(mut g) = self.session.id.lock() {
            if g.is_none() {
                *g = id.clone();
            }
        }
        tracing::info!(session = %id.as_deref().map_or("stdio", short), "session started");
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.initialized.load(Ordering::Relaxed) {
            let id = self
                .id
                .get_mut()
                .ok()
                .and_then(|g| g.clone())
                .unwrap_or_default();
            tracing::info!(session = %short(&id), "session ended");
        }
    }
}
