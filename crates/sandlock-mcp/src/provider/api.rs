//! The HTTP endpoints, their request bodies, and how every failure becomes a status code and an
//! `{"error": "..."}` body.
//!
//! | endpoint | does |
//! |---|---|
//! | `POST /api/v1/commands/terminal` | runs a command in a session and answers with its output |
//! | `POST /api/v1/tasks` | starts a `terminalExec` (background command) or `terminalResource` (file export) task |
//! | `GET /api/v1/tasks/{id}` | the task's status, and its output so far |
//! | `POST /api/v1/tasks/{id}/cancel` | cancels it |
//! | `GET /api/v1/sandbox/metadata` | the limits and capabilities this server offers |
//!
//! Error bodies are `{"error": "<code>: <words>", "code": "<code>"}`: LobeHub reads `error`, and
//! recognises capacity errors (which it retries with back-off) by the code in it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use sandlock_core::Reason;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, Account};
use super::command::{self, Live};
use super::export::{self, ResourceInput};
use super::session::{self, Session};
use super::task::{Status, Task, TaskError};
use super::{Provider, ProviderState};
use crate::exec::GateError;
use crate::replica::random_hex;
use crate::tools::App;

/// Default and largest `timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 120_000;
/// Largest `timeout_ms`.
pub const MAX_TIMEOUT_MS: u64 = 600_000;
/// Default `wait_ms` of a task submission.
pub const DEFAULT_WAIT_MS: u64 = 1_500;
/// Largest `wait_ms`.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Default `timeout_ms` of a task.
pub const DEFAULT_TASK_TIMEOUT_MS: u64 = 60_000;

/// A failed request: its HTTP status, a stable code and words for a person.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// A stable code (`session_not_found`, `session_busy`, ...).
    pub code: &'static str,
    /// Words for a person.
    pub message: String,
    /// More fields for the body (a timed-out command's output).
    pub extra: Option<Value>,
}

impl ApiError {
    /// An error with `status` and `code`.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }

    /// 400: the request is not what the protocol describes.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_payload", message)
    }

    /// 404: no such session for this account.
    pub fn session_not_found(name: &str) -> ApiError {
        ApiError::new(
            404,
            "session_not_found",
            format!(
                "no session {name:?} (it has expired, or was never created; send \
                 create_if_missing: true to create it)"
            ),
        )
    }

    /// 409: the session ended while the request was being served.
    pub fn session_ended(name: &str) -> ApiError {
        ApiError::new(
            409,
            "session_expired",
            format!(
                "session {name:?} has just ended (its lease expired); retry to start a new one"
            ),
        )
    }

    /// 500: a broken invariant (a poisoned lock).
    pub fn internal(what: &str) -> ApiError {
        ApiError::new(
            500,
            "internal",
            format!("internal error: {what} is unusable"),
        )
    }

    fn body(&self) -> Value {
        let mut v = self.extra.clone().unwrap_or_else(|| json!({}));
        v["error"] = json!(format!("{}: {}", self.code, self.message));
        v["code"] = json!(self.code);
        v
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut r = (status, Json(self.body())).into_response();
        if self.status == 401 {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sandlock-onlyboxes\""),
            );
        }
        r
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("the JSON body: {e}")))
}

fn timeout_of(field: &str, v: Option<u64>, default: u64, max: u64) -> Result<Duration, ApiError> {
    match v {
        None => Ok(Duration::from_millis(default)),
        Some(ms) if (1..=max).contains(&ms) => Ok(Duration::from_millis(ms)),
        Some(ms) => Err(ApiError::invalid(format!(
            "{field} {ms} is out of range: give 1 to {max} (default {default})"
        ))),
    }
}

fn lease_of(p: &Provider, v: Option<u64>) -> Result<Duration, ApiError> {
    match v {
        None => Ok(p.config.default_lease),
        Some(0) => Err(ApiError::invalid(
            "lease_ttl_sec 0: a lease must be at least 1 second",
        )),
        Some(s) => Ok(Duration::from_secs(s).min(p.config.max_lease)),
    }
}

/// Finds or creates the session a command names (a missing name creates a new one).
fn session_for(
    app: &App,
    p: &Provider,
    account: &Account,
    name: Option<String>,
    create: bool,
    lease: Duration,
) -> Result<(Arc<Session>, bool), ApiError> {
    let (name, create) = match name.filter(|n| !n.is_empty()) {
        Some(n) => (n, create),
        None => (
            random_hex()
                .map(|h| format!("sess_{h}"))
                .map_err(|e| ApiError::new(502, "execution_failed", e.to_string()))?,
            true,
        ),
    };
    session::check_name(&name)?;
    p.sessions.acquire(
        account,
        &name,
        create,
        lease,
        &app.workspaces,
        p.config.max_sessions,
        &app.exec.gate.kill,
    )
}

/// Bytes of output a result shows, and the command's own account of how it ended.
fn command_result(session: &Session, live: &Live, ended: &command::Ended) -> Value {
    let p = live.snapshot();
    json!({
        "session_id": session.name,
        "stdout": p.stdout.text(),
        "stderr": p.stderr.text(),
        "exit_code": ended.exit_code,
        "stdout_truncated": p.stdout.truncated(),
        "stderr_truncated": p.stderr.truncated(),
        "stdout_bytes": p.stdout.total,
        "stderr_bytes": p.stderr.total,
        "reason": ended.outcome.reason.as_str(),
        "duration_ms": u64::try_from(ended.outcome.wall_time.as_millis()).unwrap_or(u64::MAX),
    })
}

#[derive(Deserialize)]
struct TerminalRequest {
    command: String,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    create_if_missing: bool,
    #[serde(default)]
    lease_ttl_sec: Option<u64>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

fn check_command(command: &str) -> Result<(), ApiError> {
    if command.trim().is_empty() {
        return Err(ApiError::invalid("command is empty"));
    }
    Ok(())
}

async fn terminal(
    State(state): State<ProviderState>,
    Extension(account): Extension<Account>,
    body: Bytes,
) -> Response {
    let t0 = Instant::now();
    let app = &state.app;
    let (session, outcome, r) = match run_terminal(app, &state.provider, &account, &body).await {
        Ok((session, reason, v)) => (session, reason, Ok(v)),
        Err((session, e)) => (session, e.code.to_string(), Err(e)),
    };
    state.provider.record(
        app,
        "onlyboxes.terminal",
        &outcome,
        t0.elapsed(),
        &account,
        session.as_deref().unwrap_or("-"),
    );
    match r {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

type Failed = (Option<String>, ApiError);

async fn run_terminal(
    app: &Arc<App>,
    p: &Provider,
    account: &Account,
    body: &Bytes,
) -> Result<(Option<String>, String, Value), Failed> {
    let req: TerminalRequest = parse(body).map_err(|e| (None, e))?;
    let named = req.session_id.clone();
    let fail = |e: ApiError| (named.clone(), e);
    check_command(&req.command).map_err(fail)?;
    let timeout = timeout_of(
        "timeout_ms",
        req.timeout_ms,
        DEFAULT_TIMEOUT_MS,
        MAX_TIMEOUT_MS,
    )
    .map_err(fail)?;
    let lease = lease_of(p, req.lease_ttl_sec).map_err(fail)?;
    let (session, created) = session_for(
        app,
        p,
        account,
        req.session_id,
        req.create_if_missing,
        lease,
    )
    .map_err(fail)?;
    let name = Some(session.name.clone());
    let fail = |e: ApiError| (name.clone(), e);
    let _busy = session
        .begin(true, p.config.max_commands_per_session)
        .map_err(fail)?;
    let gate = &app.exec.gate;
    let _call = gate.call();
    let _slot = gate.enter().await.map_err(|e| fail(gate_error(e)))?;
    let live = Live::new(p.config.keep_output);
    let cancel = session.ended.child_token();
    let ended = command::run(app, &session, &req.command, timeout, &live, &cancel)
        .await
        .map_err(fail)?;
    session.extend(lease);
    let mut v = command_result(&session, &live, &ended);
    v["created"] = json!(created);
    v["lease_expires_unix_ms"] = json!(session.lease_expires_unix_ms());
    let reason = ended.outcome.reason;
    let failure = match reason {
        Reason::Timeout => Some(ApiError::new(
            504,
            "timeout",
            format!(
                "the command ran longer than timeout_ms={} and was killed; its output so far is \
                 in stdout and stderr",
                timeout.as_millis()
            ),
        )),
        Reason::SandboxError => Some(ApiError::new(
            502,
            "execution_failed",
            ended.outcome.detail.clone().unwrap_or_default(),
        )),
        Reason::Signaled if gate.kill.is_cancelled() => Some(ApiError::new(
            503,
            "shutting_down",
            "the server shut down while the command ran",
        )),
        Reason::Signaled if session.ended.is_cancelled() => {
            Some(ApiError::session_ended(&session.name))
        }
        _ => None,
    };
    match failure {
        Some(mut e) => {
            e.extra = Some(v);
            Err((name, e))
        }
        None => Ok((name, reason.as_str().to_string(), v)),
    }
}

fn gate_error(e: GateError) -> ApiError {
    match e {
        GateError::ShuttingDown => ApiError::new(503, "shutting_down", e.to_string()),
        e => ApiError::new(429, "capacity_exhausted", e.to_string()),
    }
}

#[derive(Deserialize)]
struct TaskRequest {
    capability: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    wait_ms: Option<u64>,
}

#[derive(Deserialize)]
struct ExecInput {
    command: String,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    create_if_missing: bool,
    #[serde(default)]
    lease_ttl_sec: Option<u64>,
}

fn input<T: serde::de::DeserializeOwned>(capability: &str, v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::invalid(format!("the input of {capability}: {e}")))
}

async fn submit(
    State(state): State<ProviderState>,
    Extension(account): Extension<Account>,
    body: Bytes,
) -> Response {
    match submit_task(&state, &account, &body).await {
        Ok(task) => {
            let status = task.status();
            let code = StatusCode::from_u16(status.http()).unwrap_or(StatusCode::BAD_GATEWAY);
            (code, Json(task.snapshot())).into_response()
        }
        Err(e) => {
            tracing::info!(target: "sandlock_mcp::call", tool = "onlyboxes.task", reason = e.code, account = %account.sub, "task refused");
            e.into_response()
        }
    }
}

async fn submit_task(
    state: &ProviderState,
    account: &Account,
    body: &Bytes,
) -> Result<Arc<Task>, ApiError> {
    let (app, p) = (&state.app, &state.provider);
    if app.exec.gate.closing.is_cancelled() {
        return Err(gate_error(GateError::ShuttingDown));
    }
    let req: TaskRequest = parse(body)?;
    let wait = match req.mode.as_deref().unwrap_or("auto") {
        "async" => None,
        "sync" | "auto" => Some(timeout_of(
            "wait_ms",
            req.wait_ms,
            DEFAULT_WAIT_MS,
            MAX_WAIT_MS,
        )?),
        other => {
            return Err(ApiError::invalid(format!(
                "mode {other:?} is not sync, async or auto"
            )));
        }
    };
    let timeout = timeout_of(
        "timeout_ms",
        req.timeout_ms,
        DEFAULT_TASK_TIMEOUT_MS,
        MAX_TIMEOUT_MS,
    )?;
    let task = match req.capability.as_str() {
        "terminalExec" => start_exec(state, account, input("terminalExec", req.input)?, timeout)?,
        "terminalResource" => start_resource(
            state,
            account,
            input("terminalResource", req.input)?,
            timeout,
        )?,
        other => {
            return Err(ApiError::invalid(format!(
                "capability {other:?} is not offered here; this server runs terminalExec and \
                 terminalResource"
            )));
        }
    };
    p.tasks.insert(task.clone());
    if app.exec.config.log_code {
        tracing::debug!(target: "sandlock_mcp::provider", task = %task.id, capability = task.capability, "task started");
    }
    if let Some(w) = wait {
        task.wait(w).await;
    }
    Ok(task)
}

fn start_exec(
    state: &ProviderState,
    account: &Account,
    input: ExecInput,
    timeout: Duration,
) -> Result<Arc<Task>, ApiError> {
    let (app, p) = (&state.app, &state.provider);
    check_command(&input.command)?;
    let lease = lease_of(p, input.lease_ttl_sec)?;
    let (session, _) = session_for(
        app,
        p,
        account,
        input.session_id,
        input.create_if_missing,
        lease,
    )?;
    let busy = session.begin(false, p.config.max_commands_per_session)?;
    let slot = p.tasks.background(p.config.max_background).ok_or_else(|| {
        ApiError::new(
            429,
            "capacity_exhausted",
            format!(
                "{} background commands already run on this server (onlyboxes.max_background); \
                 retry later",
                p.config.max_background
            ),
        )
    })?;
    let id = random_hex()
        .map(|h| format!("task_{h}"))
        .map_err(|e| ApiError::new(502, "execution_failed", e.to_string()))?;
    let live = Live::new(p.config.keep_output);
    let task = Arc::new(Task::new(
        id,
        account.clone(),
        "terminalExec",
        session.name.clone(),
        timeout,
        session.ended.child_token(),
        Some(live.clone()),
    ));
    let (app, provider, t, command) = (
        state.app.clone(),
        state.provider.clone(),
        task.clone(),
        input.command,
    );
    tokio::spawn(async move {
        let _busy = busy;
        let _slot = slot;
        let t0 = Instant::now();
        let session = &_busy.session;
        let r = command::run(&app, session, &command, timeout, &live, &t.cancel).await;
        let (status, result, error) = match r {
            Err(e) => (
                Status::Failed,
                None,
                Some(TaskError::new(e.code, e.message)),
            ),
            Ok(ended) => {
                let result = command_result(session, &live, &ended);
                let (status, error) = match ended.outcome.reason {
                    Reason::Timeout => (
                        Status::Timeout,
                        Some(TaskError::new(
                            "timeout",
                            format!(
                                "the command ran longer than timeout_ms={} and was killed",
                                timeout.as_millis()
                            ),
                        )),
                    ),
                    Reason::SandboxError => (
                        Status::Failed,
                        Some(TaskError::new(
                            "execution_failed",
                            ended.outcome.detail.clone().unwrap_or_default(),
                        )),
                    ),
                    Reason::Signaled if app.exec.gate.kill.is_cancelled() => (
                        Status::Failed,
                        Some(TaskError::new(
                            "shutting_down",
                            "the server shut down while the command ran",
                        )),
                    ),
                    Reason::Signaled if session.ended.is_cancelled() => (
                        Status::Failed,
                        Some(TaskError::new(
                            "session_expired",
                            "the session's lease expired; its commands were killed and its \
                             files removed",
                        )),
                    ),
                    Reason::Signaled if t.cancel.is_cancelled() => (Status::Canceled, None),
                    _ => (Status::Succeeded, None),
                };
                (status, Some(result), error)
            }
        };
        t.finish(status, result, error);
        provider.record(
            &app,
            "onlyboxes.terminalExec",
            status.as_str(),
            t0.elapsed(),
            &t.account,
            &t.session,
        );
    });
    Ok(task)
}

fn start_resource(
    state: &ProviderState,
    account: &Account,
    input: ResourceInput,
    timeout: Duration,
) -> Result<Arc<Task>, ApiError> {
    let p = &state.provider;
    session::check_name(&input.session_id)?;
    let session = p
        .sessions
        .find(account, &input.session_id)
        .ok_or_else(|| ApiError::session_not_found(&input.session_id))?;
    let busy = session.begin(false, p.config.max_commands_per_session)?;
    let id = random_hex()
        .map(|h| format!("task_{h}"))
        .map_err(|e| ApiError::new(502, "execution_failed", e.to_string()))?;
    let task = Arc::new(Task::new(
        id,
        account.clone(),
        "terminalResource",
        session.name.clone(),
        timeout,
        session.ended.child_token(),
        None,
    ));
    let (app, provider, t) = (state.app.clone(), state.provider.clone(), task.clone());
    tokio::spawn(async move {
        let t0 = Instant::now();
        let session = &busy.session;
        let work = export::run(
            &provider.client,
            &provider.config.storage_rules,
            session,
            input,
            timeout,
        );
        let (status, result, error) = tokio::select! {
            r = tokio::time::timeout(timeout, work) => match r {
                Ok(Ok(v)) => (Status::Succeeded, Some(v), None),
                Ok(Err(e)) if e.code == "timeout" => (Status::Timeout, None, Some(e)),
                Ok(Err(e)) => (Status::Failed, None, Some(e)),
                Err(_) => (Status::Timeout, None, Some(TaskError::new(
                    "timeout",
                    format!("the export took longer than timeout_ms={}", timeout.as_millis()),
                ))),
            },
            _ = t.cancel.cancelled() => match session.ended.is_cancelled() {
                true => (Status::Failed, None, Some(TaskError::new(
                    "session_expired",
                    "the session ended (its lease expired, or the server shut down) during the \
                     export",
                ))),
                false => (Status::Canceled, None, None),
            },
        };
        drop(busy);
        t.finish(status, result, error);
        provider.record(
            &app,
            "onlyboxes.terminalResource",
            status.as_str(),
            t0.elapsed(),
            &t.account,
            &t.session,
        );
    });
    Ok(task)
}

async fn get_task(
    State(state): State<ProviderState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Response {
    match state.provider.tasks.get(&account, &id) {
        Some(t) => (StatusCode::OK, Json(t.snapshot())).into_response(),
        None => task_not_found(&id),
    }
}

fn task_not_found(id: &str) -> Response {
    ApiError::new(
        404,
        "task_not_found",
        format!("no task {id:?} (finished tasks are kept for an hour)"),
    )
    .into_response()
}

async fn cancel_task(
    State(state): State<ProviderState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Response {
    let Some(task) = state.provider.tasks.get(&account, &id) else {
        return task_not_found(&id);
    };
    let status = task.status();
    if status.is_terminal() {
        let mut v = task.snapshot();
        v["error"] = json!({
            "code": "task_already_terminal",
            "message": format!("the task has already ended ({})", status.as_str()),
        });
        return (StatusCode::CONFLICT, Json(v)).into_response();
    }
    task.cancel.cancel();
    // The kill is immediate; wait for the task to record it so that the answer says "canceled".
    task.wait(Duration::from_secs(5)).await;
    (StatusCode::OK, Json(task.snapshot())).into_response()
}

async fn metadata(State(state): State<ProviderState>) -> Response {
    let c = &state.provider.config;
    Json(json!({
        "provider": "sandlock",
        "version": env!("CARGO_PKG_VERSION"),
        "limits": {
            "max_task_timeout_ms": MAX_TIMEOUT_MS,
            "max_task_wait_ms": MAX_WAIT_MS,
            "max_terminal_timeout_ms": MAX_TIMEOUT_MS,
            "default_terminal_lease_sec": c.default_lease.as_secs(),
            "max_terminal_lease_sec": c.max_lease.as_secs(),
            "max_sessions": c.max_sessions,
            "max_commands_per_session": c.max_commands_per_session,
            "output_limit_bytes": c.keep_output,
        },
        "session_paths": {
            "data": export::VIRTUAL_DATA,
            "tmp": export::VIRTUAL_TMP,
            "private": session::PRIVATE_PATHS,
        },
        "capabilities": [
            {"name": "terminalExec", "available": true, "max_inflight": c.max_background},
            {"name": "terminalResource", "available": true, "actions": ["export", "validate"]},
        ],
    }))
    .into_response()
}

async fn authenticate(
    State(state): State<ProviderState>,
    mut req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth::verify(&state.provider.config.key, header, auth::now_ms()) {
        Ok(account) => {
            req.extensions_mut().insert(account);
            let route = route_name(req.uri().path());
            let r = next.run(req).await;
            state.provider.count(route, r.status().as_u16());
            r
        }
        Err(e) => {
            tracing::warn!(target: "sandlock_mcp::provider", path = %req.uri().path(), error = %e, "rejected a provider request");
            state.provider.count(route_name(req.uri().path()), 401);
            ApiError::new(401, "unauthorized", e.to_string()).into_response()
        }
    }
}

/// The route a path belongs to, for metrics (ids left out).
fn route_name(path: &str) -> &'static str {
    match path {
        "/api/v1/commands/terminal" => "terminal",
        "/api/v1/tasks" => "tasks",
        "/api/v1/sandbox/metadata" => "metadata",
        p if p.ends_with("/cancel") => "task_cancel",
        p if p.starts_with("/api/v1/tasks/") => "task",
        _ => "other",
    }
}

/// The provider's routes, behind JIT authentication.
pub fn routes(state: ProviderState) -> Router {
    Router::new()
        .route("/api/v1/commands/terminal", post(terminal))
        .route("/api/v1/tasks", post(submit))
        .route("/api/v1/tasks/{id}", get(get_task))
        .route("/api/v1/tasks/{id}/cancel", post(cancel_task))
        .route("/api/v1/sandbox/metadata", get(metadata))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}
