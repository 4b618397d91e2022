//! LobeHub's Cloud Sandbox served by sandlock: the Onlyboxes provider API (`/api/v1/...`) on the
//! same listener as `/mcp`, when a JIT signing key is configured.
//!
//! LobeHub (`SANDBOX_PROVIDER=onlyboxes`) runs every sandbox tool as a shell command in a session
//! named after the user and the topic, polls background commands as tasks, and asks for files to
//! be sent to presigned object-store URLs. This module owns that protocol and nothing else; the
//! sandboxes, workspaces, concurrency gate, metrics and logs are the MCP server's own.
//!
//! - [`auth`]: the `obx_jit_v1` tokens and the account `(iss, sub)` they name;
//! - [`session`]: sessions per account, their directories (`/mnt/data`, `/tmp`), leases, reaping;
//! - [`command`]: one shell command in a session, with bounded output readable while it runs;
//! - [`task`]: background commands and exports as pollable, cancelable tasks;
//! - [`export`]: `terminalResource`, the file sent to a presigned URL;
//! - [`api`]: the endpoints, request bodies, status codes and error bodies;
//! - [`config`]: the `[onlyboxes]` table and its flags.

pub mod api;
pub mod auth;
pub mod command;
pub mod config;
pub mod export;
pub mod session;
pub mod task;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use sandlock_core::Sandbox;
use tokio_util::sync::CancellationToken;

use self::config::ProviderConfig;
use crate::tools::App;
use crate::workspace::Registry;

/// The provider's state: its configuration, sessions, tasks and HTTP client.
pub struct Provider {
    /// The configuration.
    pub config: ProviderConfig,
    /// Sessions of every account.
    pub sessions: session::Sessions,
    /// Tasks of every account.
    pub tasks: task::Tasks,
    client: reqwest::Client,
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

/// What the provider's handlers share.
#[derive(Clone)]
pub struct ProviderState {
    /// The server.
    pub app: Arc<App>,
    /// The provider.
    pub provider: Arc<Provider>,
}

impl Provider {
    /// Builds the provider and proves, before serving, that a session's sandbox can be built on
    /// this machine with the configured policy.
    pub fn new(config: ProviderConfig, workspaces: &Registry) -> anyhow::Result<Provider> {
        crate::config::check_isolation_in("onlyboxes.policy", &config.policy, workspaces.root())?;
        let probe = workspaces
            .create(true)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for sub in [session::DATA_DIR, session::TMP_DIR] {
            std::fs::create_dir(probe.dir.join(sub))
                .with_context(|| format!("cannot create {sub} in a probe workspace"))?;
        }
        Sandbox::new(session::session_policy(&config.policy, &probe.dir)).map_err(|e| {
            anyhow::anyhow!(
                "cannot build the sandbox for Onlyboxes sessions: {e}\n  hint: `sandlock check` \
                 shows what this machine supports; set best_effort = true in [onlyboxes.policy] \
                 to run with what it has"
            )
        })?;
        drop(probe);
        // One process-wide choice of TLS primitives for the export client. rustls now prefers
        // aws-lc-rs (for post-quantum key exchange); ring needs no cmake and builds in a fraction
        // of the time on CI's two cores, and an upload to the operator's own object store does
        // not need post-quantum secrecy.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the HTTP client for file exports")?;
        Ok(Provider {
            config,
            sessions: session::Sessions::default(),
            tasks: task::Tasks::default(),
            client,
            requests: Mutex::new(BTreeMap::new()),
        })
    }

    /// Counts one request to `route` answered with `status`.
    pub fn count(&self, route: &'static str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route, status)).or_insert(0) += 1;
        }
    }

    /// Records one finished command or task in the server's call metrics and log.
    pub fn record(
        &self,
        app: &App,
        tool: &str,
        outcome: &str,
        took: Duration,
        account: &self::auth::Account,
        session: &str,
    ) {
        app.metrics.record(tool, outcome, took);
        let ms = took.as_secs_f64() * 1000.0;
        tracing::info!(target: "sandlock_mcp::call", session, account = %account.sub, tool, reason = outcome, duration_ms = ms, "call");
    }

    /// The provider's series in the Prometheus text format (appended to `/metrics`).
    pub fn render_metrics(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP sandlock_mcp_provider_requests_total Onlyboxes API requests by route and HTTP \
             status.\n# TYPE sandlock_mcp_provider_requests_total counter"
        );
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(
                    o,
                    "sandlock_mcp_provider_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let gauges = [
            (
                "sandlock_mcp_provider_sessions",
                "Onlyboxes sessions alive (every account).",
                self.sessions.len(),
            ),
            (
                "sandlock_mcp_provider_background_commands",
                "Background commands (terminalExec tasks) running.",
                self.tasks.background_running(),
            ),
            (
                "sandlock_mcp_provider_tasks",
                "Tasks kept, running and finished.",
                self.tasks.len(),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        o
    }

    /// Ends every session: their commands are killed and their files removed (at shutdown).
    pub fn shutdown(&self) {
        self.sessions.end_all();
    }
}

/// Reaps sessions whose lease has passed, about every second, until `stop`.
pub async fn reap(provider: Arc<Provider>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled() => return,
        }
        provider.sessions.reap();
    }
}
