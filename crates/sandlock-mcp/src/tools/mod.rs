//! The MCP tools and the per-session handler.
//!
//! The tools come in families, one module each; this module owns what they share (the handler,
//! its session and workspace, the call log, the shape of a result) and the dispatch, which is
//! rmcp's router made of each family's routes:
//! - [`execution`]: `execute_python` (also as persistent cells), `execute_shell`,
//!   `execute_code`, `reset_python`;
//! - [`commands`]: background commands (`execute_shell` with `background`), `command_output`,
//!   `kill_command`;
//! - [`files`]: `read_file`, `write_file`, `edit_file`, `list_files`, `glob_files`,
//!   `grep_files`, `move_file`, `delete_file`;
//! - [`resources`]: the workspace's files as MCP resources (`sandlock://<workspace>/<path>`).
//!
//! rmcp calls the handler factory once per session (2025-11-25 over HTTP, or stdio) and once per
//! request for stateless requests (2026-07-28, or `--stateless`). A handler learns that it belongs
//! to a session in `on_initialized`; such a handler owns its session's workspace, which is removed
//! when the session ends and rmcp drops the handler. A handler that was never initialized serves a
//! stateless request and finds its workspace by the `workspace` argument (see [`crate::workspace`]).

mod commands;
mod execution;
mod files;
mod resources;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ListResourceTemplatesResult, ListResourcesResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, RoleServer, ServerHandler, tool_handler};
use schemars::JsonSchema;
use serde::Serialize;

use crate::exec::Executor;
use crate::metrics::{Gauges, Metrics};
use crate::pool::Pool;
use crate::workspace::{Registry, Workspace, WorkspaceError, short};

/// State shared by every handler of the server.
pub struct App {
    /// Execution: configuration, interpreter, concurrency gate.
    pub exec: Executor,
    /// Workspaces.
    pub workspaces: Registry,
    /// Ready workspaces, for new sessions.
    pub pool: Pool,
    /// Metrics.
    pub metrics: Metrics,
}

impl App {
    /// Current gauges.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            active_sandboxes: self.exec.gate.running(),
            queue_depth: self.exec.gate.queued(),
            workspaces: self.workspaces.live(),
            fork_servers: crate::warm::live_fork_servers(),
            background_commands: crate::background::running_commands(),
            python_persistent: crate::warm::live_persistent(),
            pool: self.pool.stats(),
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

/// The MCP server handler: every tool, over one workspace per session.
#[derive(Clone)]
pub struct SandlockTools {
    tool_router: ToolRouter<Self>,
    app: Arc<App>,
    session: Arc<Session>,
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

/// A result with a text block for the model and `value` as `structuredContent`.
fn structured<T: Serialize>(text: String, value: &T, is_error: bool) -> CallToolResult {
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    r.structured_content = serde_json::to_value(value).ok();
    r.is_error = Some(is_error);
    r
}

/// An error result in words, without structured content.
fn failure(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text.into())])
}

impl SandlockTools {
    /// A handler for one session (or one stateless request).
    pub fn new(app: Arc<App>) -> Self {
        // Stateless requests get a handler each: build the router (every tool and its schemas)
        // once, and clone it.
        static ROUTER: OnceLock<ToolRouter<SandlockTools>> = OnceLock::new();
        SandlockTools {
            tool_router: ROUTER
                .get_or_init(|| {
                    Self::execution_router() + Self::command_router() + Self::file_router()
                })
                .clone(),
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
            WsError::Registry(e @ WorkspaceError::OtherReplica { .. }) => {
                self.app.metrics.misrouted("workspace");
                ("invalid", e.to_string())
            }
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
            let ws = self.new_workspace(true)?;
            *g = Some(ws.clone());
            return Ok(ws);
        }
        Ok(match requested {
            Some(h) => self.app.workspaces.get(h)?,
            None => self.new_workspace(false)?,
        })
    }

    /// A new workspace, from the pool of ready ones when it has one.
    fn new_workspace(&self, session: bool) -> Result<Arc<Workspace>, WorkspaceError> {
        let app = &self.app;
        app.pool
            .new_workspace(&app.workspaces, session, app.exec.config.fork_idle)
    }

    /// The session's workspace if it has one already (none is created).
    fn session_workspace(&self) -> Option<Arc<Workspace>> {
        if !self.session.initialized.load(Ordering::Relaxed) {
            return None;
        }
        self.session.workspace.lock().ok()?.clone()
    }

    /// The workspace named `handle` (in a resource URI): in a session, only the session's own.
    fn workspace_by_handle(&self, handle: &str) -> Result<Arc<Workspace>, String> {
        if self.session.initialized.load(Ordering::Relaxed) {
            return match self.session_workspace() {
                Some(ws) if ws.handle == handle => Ok(ws),
                Some(ws) => Err(format!(
                    "workspace {handle:?} is not this session's (which is {}); a session reads \
                     only its own files",
                    ws.handle
                )),
                None => Err(format!(
                    "workspace {handle:?} is not this session's; this session has no files yet"
                )),
            };
        }
        self.app.workspaces.get(handle).map_err(|e| e.to_string())
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
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for SandlockTools {
    fn get_info(&self) -> ServerConfig {
        let caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .build();
        ServerConfig::new(caps)
            .with_server_info(Implementation::new("sandlock", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Sandboxed code execution. execute_python, execute_shell and execute_code \
                 (python, javascript, typescript) run in a private workspace directory that \
                 persists for this session; execute_python with persistent: true keeps \
                 variables between calls, like notebook cells, and reset_python starts over; \
                 execute_shell with background=true starts a command that command_output reads \
                 and kill_command stops. read_file, write_file, edit_file, list_files, \
                 glob_files, grep_files, move_file and delete_file work on the same directory \
                 with relative paths. Images code saves in outputs/ come back in the result. The \
                 workspace's files are also resources (sandlock://<workspace>/<path>), which is \
                 how to download one. Stateless (2026-07-28) clients: pass back the `workspace` \
                 handle from a result to reach the same files.",
            )
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.list_resources_page(request.and_then(|r| r.cursor))
            .await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.read_resource_uri(request.uri).await.map(Into::into)
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
        // Its background commands end with it (and then let go of the workspace).
        if let Some(ws) = self.workspace.get_mut().ok().and_then(|w| w.take()) {
            ws.commands.stop_all("killed: its session ended");
        }
    }
}
