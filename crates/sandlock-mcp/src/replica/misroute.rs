//! The answer to a request whose `Mcp-Session-Id` is not alive on this replica.
//!
//! rmcp answers such a request with a bare `404 Not Found: Session not found`, which a client
//! shows as "Session terminated". Behind a proxy there are two different stories, and the person
//! reading the client's error needs to know which one it is:
//!
//! - the id carries **another replica's prefix**: the proxy sent the request to the wrong replica
//!   (it does not route by the prefix), or the owner is down and the proxy sent it elsewhere;
//! - the id carries **this replica's prefix** (or none) but is unknown: the session ended (DELETE,
//!   the idle TTL), or this replica restarted since the session began.
//!
//! Both stay 404, which tells a client to start a new session, with a JSON-RPC error in the body
//! (the official clients show its message) that names the replica that owns the session and the
//! one that answered. A DELETE of an unknown session of this replica still reaches rmcp, which
//! treats it as done.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::sessions::ReplicaSessions;
use crate::tools::App;

/// The JSON-RPC "Invalid Request" code: the Python client uses it too for a 404 on a session.
const INVALID_REQUEST: i64 = -32600;

/// Request bodies read to find the JSON-RPC id of a misrouted request: rmcp's own limit.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// What the check needs: this replica's sessions, and the server (its metrics count misroutes).
#[derive(Clone)]
pub struct SessionCheck {
    /// The sessions of this replica.
    pub sessions: Arc<ReplicaSessions>,
    /// The server.
    pub app: Arc<App>,
    /// The idle time after which rmcp ends a session, for the words.
    pub idle: std::time::Duration,
}

/// Middleware for `/mcp` in session mode: see the module docs.
pub async fn check_session(State(c): State<SessionCheck>, req: Request, next: Next) -> Response {
    let Some(id) = req
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return next.run(req).await;
    };
    let here = c.sessions.replica().as_str().to_owned();
    let message = match c.sessions.replica().other_owner(&id) {
        Some(owner) => {
            c.app.metrics.misrouted("session");
            tracing::warn!(
                session = %crate::workspace::short(&id),
                owner,
                method = %req.method(),
                "a request for another replica's session reached this one"
            );
            format!(
                "session {id} belongs to replica {owner:?}, but this request reached replica \
                 {here:?}: the session and its workspace live only on {owner:?}. The proxy in \
                 front of the replicas must send each request to the replica named before the \
                 first '.' of its Mcp-Session-Id (see deploy/haproxy/haproxy.cfg); if it does, \
                 {owner:?} is down or was replaced and the session is lost. Start a new session."
            )
        }
        None if req.method() == Method::DELETE || c.sessions.contains(&id).await => {
            return next.run(req).await;
        }
        None => {
            tracing::info!(
                session = %crate::workspace::short(&id),
                method = %req.method(),
                "a request for a session that is not alive here"
            );
            format!(
                "session {id} is not alive on replica {here:?}: it ended (closed by the client, \
                 or idle for more than {} s), or replica {here:?} restarted since it began, which \
                 ends every session it held. Start a new session.",
                c.idle.as_secs()
            )
        }
    };
    let rpc_id = request_id(req).await;
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": rpc_id,
        "error": {"code": INVALID_REQUEST, "message": message},
    });
    let mut r = (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The JSON-RPC id of a POSTed request, so that the client can pair the error with its call;
/// `null` for anything else.
async fn request_id(req: Request) -> serde_json::Value {
    if req.method() != Method::POST {
        return serde_json::Value::Null;
    }
    let body: Body = req.into_body();
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return serde_json::Value::Null;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .filter(|m| m.get("method").is_some())
        .and_then(|m| m.get("id").cloned())
        .unwrap_or(serde_json::Value::Null)
}
