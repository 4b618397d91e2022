//! The Streamable HTTP face: `/mcp` (rmcp's service behind bearer authentication), `/healthz`,
//! `/readyz` and `/metrics`, and graceful shutdown.
//!
//! Checks on `/mcp`, in order: the bearer token (401); in session mode, that an `Mcp-Session-Id`
//! names a session alive on this replica (404 in words otherwise, see
//! [`crate::replica::misroute`]); then, inside rmcp, the `Host` header against `allowed_hosts` and
//! the `Origin` header against `allowed_origins` (403; a request without `Origin`, as non-browser
//! clients send, passes). Origin validation is always on.
//!
//! Shutdown (SIGTERM or SIGINT): stop accepting new runs (new and queued calls get a "shutting down"
//! result, `/readyz` turns 503 so that Kubernetes stops routing here), let runs in progress finish
//! for the grace period, kill what is left (their callers still get a result saying so), then close
//! the listener and end every session, which removes the workspaces. The listener stays open during
//! the grace period so that in-flight responses and clients' reconnects still work. A second
//! signal skips the grace period.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::SessionConfig;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::provider::{Provider, ProviderState};
use crate::replica::misroute::{SessionCheck, check_session};
use crate::replica::sessions::ReplicaSessions;
use crate::tools::{App, SandlockTools};

/// Compares a presented token with the expected one in time that depends only on the expected
/// token's length.
pub fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(p ^ e);
    }
    std::hint::black_box(diff) == 0
}

fn unauthorized(why: &str, invalid: bool) -> Response {
    let challenge = if invalid {
        "Bearer realm=\"sandlock-mcp\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"sandlock-mcp\""
    };
    let body = serde_json::json!({
        "error": why,
        "hint": "send the server's token as `Authorization: Bearer <token>` (set with --auth-token-file or SANDLOCK_MCP_TOKEN)",
    });
    let mut r = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

async fn require_token(State(token): State<Arc<String>>, req: Request, next: Next) -> Response {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        tracing::warn!(path = %req.uri().path(), "rejected a request without a bearer token");
        return unauthorized("missing bearer token", false);
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        Some(t) if token_matches(t.as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => {
            tracing::warn!(path = %req.uri().path(), "rejected a request with a wrong bearer token");
            unauthorized("invalid bearer token", true)
        }
    }
}

/// The readiness verdict, cached briefly so that probes do not each start a sandbox.
#[derive(Default)]
struct Ready {
    last: Mutex<Option<(Instant, bool, String)>>,
}

async fn readyz(State(s): State<Shared>) -> Response {
    if s.app.exec.gate.closing.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: the server is shutting down\n",
        )
            .into_response();
    }
    let cached = s
        .ready
        .last
        .lock()
        .ok()
        .and_then(|g| g.clone())
        .filter(|(t, _, _)| t.elapsed() < Duration::from_secs(5));
    let (ok, text) = match cached {
        Some((_, ok, text)) => (ok, text),
        None => {
            let report = tokio::task::spawn_blocking(|| sandlock_core::check::report(true)).await;
            let (ok, text) = match report {
                Ok(r) => {
                    let ok = r.live_test.as_ref().is_some_and(|t| t.ok);
                    (ok, r.verdict)
                }
                Err(e) => (false, format!("the readiness check failed: {e}")),
            };
            if let Ok(mut g) = s.ready.last.lock() {
                *g = Some((Instant::now(), ok, text.clone()));
            }
            (ok, text)
        }
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        format!("{}: {text}\n", if ok { "ready" } else { "not ready" }),
    )
        .into_response()
}

async fn metrics(State(s): State<Shared>) -> Response {
    let mut body = s.app.metrics.render(&s.app.gauges());
    if let Some(p) = &s.provider {
        body.push_str(&p.render_metrics());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[derive(Clone)]
struct Shared {
    app: Arc<App>,
    ready: Arc<Ready>,
    provider: Option<Arc<Provider>>,
}

/// Builds the router: `/mcp`, health, metrics, and LobeHub's provider API when `provider` is given.
/// `sessions_end` ends every MCP session when cancelled.
pub fn router(
    app: Arc<App>,
    provider: Option<Arc<Provider>>,
    sessions_end: CancellationToken,
) -> Router {
    let cfg = &app.exec.config;
    let mut http_cfg = StreamableHttpServerConfig::default()
        .with_cancellation_token(sessions_end)
        .with_allowed_hosts(cfg.allowed_hosts.clone())
        .with_allowed_origins(cfg.allowed_origins.clone())
        .enforce_origin_validation()
        .with_legacy_session_mode(!cfg.stateless);
    if cfg.allowed_hosts.iter().any(|h| h == "*") {
        // Behind a gateway that already checks Host; Origin is still validated.
        http_cfg = http_cfg.disable_allowed_hosts();
    }
    if cfg.stateless {
        http_cfg = http_cfg.with_json_response(true);
    }
    // A session must outlive its longest call: rmcp's idle timer does not see a call in progress.
    let keep_alive = cfg.ttl.max(cfg.max_timeout + Duration::from_secs(5));
    let mut session_cfg = SessionConfig::default();
    session_cfg.keep_alive = Some(keep_alive);
    let sessions = Arc::new(ReplicaSessions::new(cfg.replica.clone(), session_cfg));
    let factory_app = app.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(SandlockTools::new(factory_app.clone())),
        sessions.clone(),
        http_cfg,
    );
    let mut mcp_routes = Router::new().route_service("/mcp", mcp);
    if !cfg.stateless {
        let check = SessionCheck {
            sessions,
            app: app.clone(),
            idle: keep_alive,
        };
        mcp_routes = mcp_routes.layer(middleware::from_fn_with_state(check, check_session));
    }
    // Added last, so it runs first: nothing is said about sessions to a caller without the token.
    if let Some(token) = &cfg.token {
        mcp_routes = mcp_routes.layer(middleware::from_fn_with_state(
            Arc::new(token.clone()),
            require_token,
        ));
    }
    let provider_routes = provider.clone().map(|provider| {
        crate::provider::api::routes(ProviderState {
            app: app.clone(),
            provider,
        })
    });
    let shared = Shared {
        app,
        ready: Arc::new(Ready::default()),
        provider,
    };
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
        .merge(mcp_routes);
    match provider_routes {
        Some(p) => router.merge(p),
        None => router,
    }
}

/// Serves until a signal, then shuts down gracefully.
pub async fn serve(app: Arc<App>, provider: Option<Arc<Provider>>) -> anyhow::Result<()> {
    let cfg = &app.exec.config;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {e}; pick another address with --listen HOST:PORT",
                cfg.listen
            )
        })?;
    let local: SocketAddr = listener.local_addr()?;
    let sessions_end = CancellationToken::new();
    let stop_accepting = CancellationToken::new();
    let router = router(app.clone(), provider.clone(), sessions_end.clone());
    tracing::info!(
        listen = %local,
        path = "/mcp",
        replica = %cfg.replica,
        auth = cfg.token.is_some(),
        onlyboxes = provider.is_some(),
        stateless = cfg.stateless,
        workspace_root = %app.workspaces.root().display(),
        max_concurrent = cfg.max_concurrent,
        queue_depth = cfg.queue_depth,
        python = %app.exec.python.path.display(),
        "sandlock mcp listening"
    );
    let drained = tokio::spawn(drain_on_signal(
        app.clone(),
        stop_accepting.clone(),
        sessions_end.clone(),
    ));
    // Responses are small and written in parts (SSE events): do not let Nagle hold them back.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
    let server = tokio::spawn(async move { server.await });
    drained.await??;
    // Connections still open after the sessions ended get a moment, then the process exits.
    match tokio::time::timeout(Duration::from_secs(3), server).await {
        Ok(r) => r??,
        Err(_) => tracing::warn!("closing connections that were still open after shutdown"),
    }
    if let Some(p) = &provider {
        p.shutdown();
    }
    app.pool.clear();
    app.workspaces.clear();
    tracing::info!("sandlock mcp stopped");
    Ok(())
}

/// How long the listener stays open after the last call finished during shutdown.
const LINGER: Duration = Duration::from_millis(300);

/// Waits for SIGTERM or SIGINT, then drains: see the module docs.
pub async fn drain_on_signal(
    app: Arc<App>,
    stop_accepting: CancellationToken,
    sessions_end: CancellationToken,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    let gate = &app.exec.gate;
    let grace = app.exec.config.grace;
    tracing::info!(
        signal = which,
        running = gate.running(),
        grace_s = grace.as_secs_f64(),
        "shutting down: no new runs; waiting for runs in progress"
    );
    gate.closing.cancel();
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        if gate.calls() == 0 {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = tokio::time::sleep_until(deadline) => break,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    if gate.running() > 0 {
        tracing::warn!(
            running = gate.running(),
            "grace period over: killing the runs still in progress"
        );
        gate.kill.cancel();
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while gate.calls() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Let the last results reach their callers, and clients hang up, before the sessions close.
    tokio::time::sleep(LINGER).await;
    stop_accepting.cancel();
    sessions_end.cancel();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn token_comparison_needs_the_exact_token() {
        let t = b"0123456789abcdef-secret";
        assert!(token_matches(t, t));
        assert!(!token_matches(b"0123456789abcdef-secreT", t));
        assert!(!token_matches(b"0123456789abcdef-secret-and-more", t));
        assert!(!token_matches(b"0123456789abcdef", t));
        assert!(!token_matches(b"", t));
    }
}
