//! `sandlock mcp`: sandboxed code execution served over the Model Context Protocol.
//!
//! A self-hosted "execute code" tool for agent platforms. It speaks Streamable HTTP (the
//! 2025-11-25 revision with `Mcp-Session-Id` sessions, and stateless 2026-07-28 requests) or stdio,
//! and offers the tools an agent needs to run code and work with files in a private workspace
//! (`execute_python`, also as persistent cells that keep their variables, `execute_shell`,
//! `execute_code`, background commands, and file tools from `read_file` to `grep_files`), with
//! the workspace's files as MCP resources.
//!
//! The flow of one call: [`tools`] (the rmcp handler, one module per family of tools) finds the
//! caller's [`workspace`] (a new one from the [`pool`] of ready workspaces), waits for a slot at
//! the concurrency gate and runs the code through [`exec`] (the policy and command of a call),
//! which forks the workspace's Python fork server or hands a cell to its persistent interpreter
//! ([`warm`]), or starts a fresh run that [`drive`] supervises on the tokio event loop; [`python`]
//! knows the interpreter and how code reaches it, and [`output`] turns long output into an excerpt
//! and a saved file. File tools go through [`files`], which resolves every path beneath the
//! workspace with `openat2(RESOLVE_BENEATH)`. [`http`] adds authentication, health, readiness,
//! [`metrics`] and graceful shutdown. [`config`] merges the TOML file and flags. [`provider`]
//! serves LobeHub's Cloud Sandbox (the Onlyboxes provider API) beside `/mcp`, on the same
//! workspaces, gate and metrics.
//!
//! Background commands live in [`background`], per workspace; [`node`] finds Node.js and a
//! TypeScript runner for `execute_code`, and [`images`] returns the charts code saves.
//!
//! Modules depend downwards only: `http -> provider -> tools -> pool -> exec -> workspace ->
//! {warm, background} -> {drive, python, files}`.
//!
//! # Isolation
//!
//! Each session has its own directory under the workspace root. A run's policy grants its own
//! workspace (read and write) and nothing else under the root: the configured policies are refused
//! at start-up if a readable or writable path contains the root. So code in session A cannot read
//! session B's files, and neither can A's file tools (paths are relative and resolved beneath A's
//! directory by the kernel).
//!
//! # Test strategy
//!
//! Unit tests here cover path resolution (with symlink and `..` attacks beside controls), the
//! configuration, the gate and the metrics. `tests/` starts the real binary and talks HTTP to it.
//! The real third-party clients (Python `mcp`, the TypeScript SDK, the Inspector CLI) are driven
//! from `tests/mcp/` in the repository, also under the restricted-pod harness.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod background;
pub mod config;
pub mod drive;
pub mod exec;
pub mod files;
pub mod http;
pub mod images;
pub mod metrics;
pub mod node;
pub mod output;
pub mod pool;
pub mod provider;
pub mod python;
pub mod replica;
pub mod tools;
pub mod warm;
pub mod workspace;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rmcp::ServiceExt;
use sandlock_core::{ByteSize, Sandbox, Seconds};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, ExecTool, LogFormat, PythonStart, Transport};
use crate::exec::{Executor, Gate};
use crate::node::Node;
use crate::python::Interpreter;
use crate::tools::{App, SandlockTools};
use crate::workspace::Registry;

/// Flags of `sandlock mcp`. Every flag can also be set in the `--config` TOML file; flags win.
#[derive(Debug, Clone, clap::Args)]
pub struct McpArgs {
    /// TOML configuration file (tables `[server]`, `[workspaces]`, `[limits]`, `[python]`,
    /// `[tools.*]`, `[onlyboxes]`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Transport: Streamable HTTP, or stdio for a client that starts the server itself.
    #[arg(long, value_enum)]
    pub transport: Option<Transport>,
    /// Address to listen on (HTTP) [default: 127.0.0.1:8080]. The endpoint is /mcp.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Also accept this Host header (e.g. a Kubernetes Service name); repeatable. `*` turns the
    /// Host check off (for a gateway that checks it).
    #[arg(long, value_name = "HOST")]
    pub allowed_host: Vec<String>,
    /// Also accept this browser Origin (e.g. `https://chat.example.com`); repeatable. Origin
    /// validation is always on; localhost origins are accepted by default.
    #[arg(long, value_name = "ORIGIN")]
    pub allowed_origin: Vec<String>,
    /// File holding the bearer token clients must send (or set SANDLOCK_MCP_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Allow listening on a non-loopback address without a token.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Serve every request statelessly (no sessions; workspaces by handle).
    #[arg(long)]
    pub stateless: bool,
    /// This server's name among replicas behind one proxy: every session id and workspace handle
    /// it mints starts with `ID.`, so the proxy can route each request to the replica that holds
    /// its session (deploy/haproxy/haproxy.cfg). 1 to 63 letters, digits, `-` and `_`; unique per
    /// replica [default: the host name, other characters turned into `-`].
    #[arg(long, value_name = "ID")]
    pub replica_id: Option<String>,
    /// Directory for the per-session workspaces [default: $TMPDIR/sandlock-mcp].
    #[arg(long, value_name = "DIR")]
    pub workspace_root: Option<PathBuf>,
    /// Idle time after which a session ends and its workspace is removed [default: 900].
    #[arg(long, value_name = "SECS")]
    pub ttl: Option<Seconds>,
    /// Disk cap per workspace [default: 256M].
    #[arg(long, value_name = "SIZE")]
    pub max_disk: Option<ByteSize>,
    /// Most workspaces alive at once [default: 256].
    #[arg(long, value_name = "N")]
    pub max_workspaces: Option<usize>,
    /// Let every workspace's runs share the host's /tmp instead of giving each run a private /tmp
    /// and /var/tmp (created when it starts, removed when it ends).
    #[arg(long)]
    pub no_private_tmp: bool,
    /// Mount a subdirectory of each workspace inside its sandboxes, e.g. /mnt/data:data (made when
    /// first needed; `:ro` for read-only). Repeatable.
    #[arg(long, value_name = "VIRT:SUBDIR[:ro]")]
    pub workspace_mount: Vec<String>,
    /// Default wall-clock limit per call [default: 30].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<Seconds>,
    /// Largest timeout_s a caller may ask for [default: 300].
    #[arg(long, value_name = "SECS")]
    pub max_timeout: Option<Seconds>,
    /// Memory cap per call, all processes together [default: 512M].
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<ByteSize>,
    /// Process cap per call [default: 64].
    #[arg(long, value_name = "N")]
    pub max_processes: Option<u32>,
    /// Cap on captured stdout and on stderr, each [default: 1M].
    #[arg(long, value_name = "SIZE")]
    pub max_output: Option<ByteSize>,
    /// Runs at once [default: number of CPUs].
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<usize>,
    /// Calls that may wait for a slot; past this, calls are refused as busy [default: 32].
    #[arg(long, value_name = "N")]
    pub queue_depth: Option<usize>,
    /// Background commands (execute_shell with background=true) a workspace may run at once
    /// [default: 4]. They do not take a run slot; each has the tool's limits.
    #[arg(long, value_name = "N")]
    pub max_background: Option<usize>,
    /// Python interpreter for execute_python; its prefix and site-packages become readable
    /// [default: python3].
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// How execute_python starts its interpreter: `fork` (each call forks a sandboxed interpreter
    /// the workspace started once; about 1 ms of interpreter CPU per call instead of about 13) or `fresh` (a new interpreter
    /// per call, with every limit per call) [default: fork, or fresh when the policy sets max_cpu].
    #[arg(long, value_enum, value_name = "MODE")]
    pub python_start: Option<PythonStart>,
    /// Workspaces kept ready for new sessions, each with its own sandboxed Python fork server
    /// started, so that a new session's first execute_python forks instead of starting an
    /// interpreter; refilled in the background; 0 turns the pool off. Fork mode only
    /// [default: max_concurrent over HTTP (at most half of max_workspaces), 0 with stdio].
    #[arg(long, value_name = "N")]
    pub python_pool: Option<usize>,
    /// Node.js for execute_code's javascript and typescript [default: node]. Without it, those
    /// languages answer with an error that says what to install.
    #[arg(long, value_name = "PATH")]
    pub node: Option<PathBuf>,
    /// The tsx TypeScript runner (its bin/tsx or its package directory) [default: tsx in PATH,
    /// else Node's own type stripping where Node is 22.6 or newer].
    #[arg(long, value_name = "PATH")]
    pub tsx: Option<PathBuf>,
    /// Seconds runs in progress get to finish after SIGTERM [default: 20].
    #[arg(long, value_name = "SECS")]
    pub grace: Option<Seconds>,
    /// Log format (logs go to stderr).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Include code and commands in the per-call log line (off: code may hold secrets).
    #[arg(long)]
    pub log_code: bool,
    /// Log level: error, warn, info, debug or trace [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<LevelFilter>,
    /// Serve LobeHub's Cloud Sandbox (the Onlyboxes provider API, /api/v1/...) on the same
    /// listener, authenticating its JIT tokens with the key in FILE: the value LobeHub has as
    /// ONLYBOXES_JIT_SIGNING_KEY, at least 32 bytes. See docs/lobehub.md.
    #[arg(long, value_name = "FILE")]
    pub onlyboxes_jit_key_file: Option<PathBuf>,
    /// HOST[:PORT] of the object store LobeHub's presigned URLs point at (repeatable): session
    /// commands may connect there (uploaded-file sync), and file exports may only go there.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub onlyboxes_storage_host: Vec<String>,
}

fn init_logging(format: LogFormat, level: LevelFilter) {
    let filter = Targets::new()
        .with_default(LevelFilter::WARN.min(level))
        .with_target("sandlock_mcp", level);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(fmt.json().flatten_event(true).with_current_span(false))
            .try_init(),
        LogFormat::Text => registry.with(fmt).try_init(),
    };
}

/// Builds the shared state and proves, before serving anything, that a sandbox can be built for
/// each tool with the configured policy on this machine.
pub fn build_app(config: Config) -> anyhow::Result<Arc<App>> {
    let workspaces = Registry::new(
        &config.workspace_root,
        config.max_workspaces,
        config.replica.clone(),
    )?;
    // Again with the root resolved (it may sit behind a symlink, e.g. /var/tmp -> /tmp).
    for tool in ExecTool::ALL {
        config::check_isolation(tool.name(), config.policy(tool), workspaces.root())?;
    }
    let python = Interpreter::discover(&config.python, workspaces.root())?;
    let python_start = match config.python_start {
        PythonStart::Fork => "fork",
        PythonStart::Fresh => "fresh",
    };
    tracing::info!(python = %python.path.display(), version = %python.version, python_start, python_pool = config.python_pool, readable = ?python.readable, "python interpreter");
    let node = Node::discover(
        config.node.as_deref(),
        config.tsx.as_deref(),
        workspaces.root(),
    )?;
    if let Some(n) = &node {
        tracing::info!(node = %n.path.display(), runtime = %n.describe(), readable = ?n.readable, "node for execute_code");
    }
    let gate = Gate::new(config.max_concurrent, config.queue_depth);
    let exec = Executor {
        config,
        python,
        node,
        gate,
    };
    let probe = workspaces
        .create(true)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for tool in ExecTool::ALL {
        if tool == ExecTool::Node && exec.node.is_none() {
            continue;
        }
        Sandbox::new(exec.policy(tool, &probe.dir)).map_err(|e| {
            anyhow::anyhow!(
                "cannot build the sandbox for {}: {e}\n  hint: `sandlock check` shows what this \
                 machine supports; set best_effort = true in [tools.{}] to run with what it has",
                tool.name(),
                tool.name()
            )
        })?;
    }
    drop(probe);
    let pool = pool::Pool::new(exec.config.python_pool);
    Ok(Arc::new(App {
        exec,
        workspaces,
        pool,
        metrics: metrics::Metrics::default(),
    }))
}

/// Builds LobeHub's sandbox provider when a signing key is configured, proving first that a
/// session's sandbox can be built here.
pub fn build_provider(app: &App) -> anyhow::Result<Option<Arc<provider::Provider>>> {
    let Some(c) = app.exec.config.onlyboxes.clone() else {
        return Ok(None);
    };
    Ok(Some(Arc::new(provider::Provider::new(c, &app.workspaces)?)))
}

async fn reap_idle(app: Arc<App>, stop: CancellationToken) {
    let ttl = app.exec.config.ttl;
    let every = (ttl / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let n = app.workspaces.expire(ttl);
        if n > 0 {
            tracing::info!(expired = n, "removed idle stateless workspaces");
        }
    }
}

async fn serve_stdio(app: Arc<App>) -> anyhow::Result<()> {
    tracing::info!(
        workspace_root = %app.workspaces.root().display(),
        python = %app.exec.python.path.display(),
        "sandlock mcp serving on stdio"
    );
    let handler = SandlockTools::new(app.clone()).as_session("stdio");
    let service = handler
        .serve(rmcp::transport::stdio())
        .await
        .context("the MCP handshake on stdio failed")?;
    let ct = service.cancellation_token();
    let stop = CancellationToken::new();
    let drain = tokio::spawn(http::drain_on_signal(
        app.clone(),
        CancellationToken::new(),
        stop.clone(),
    ));
    tokio::select! {
        r = service.waiting() => { r.context("the stdio session failed")?; }
        _ = stop.cancelled() => { ct.cancel(); }
    }
    drain.abort();
    app.pool.clear();
    app.workspaces.clear();
    Ok(())
}

/// Runs the server until it is told to stop (SIGTERM/SIGINT, or end of input for stdio). Builds its
/// own tokio runtime.
pub fn run(args: McpArgs) -> anyhow::Result<()> {
    let config = Config::from_args(&args)?;
    init_logging(config.log_format, config.log_level);
    let transport = config.transport;
    let app = build_app(config)?;
    let provider = build_provider(&app)?;
    let workspaces = app.workspaces.clone();
    workspaces
        .remove_in_background()
        .context("cannot start the workspace removal thread")?;
    // One thread runs the whole event loop: HTTP, MCP, and supervising every sandbox (each run is
    // an epoll fd and a timer, never a blocked thread). The per-call work is short, and on a
    // multi-threaded runtime a call hops between worker threads several times (connection task,
    // session worker, tool handler), each hop a futex wake and a context switch that also
    // preempts a running sandbox. Measured with `tests/mcp/bench_mcp.py`-style alternating rounds
    // at concurrency 8 on 2 cores: 1.0-1.2 ms of server CPU per call against 1.4-1.6 ms
    // multi-threaded. Work that can take long runs elsewhere: file tools on tokio's blocking
    // pool, workspace removal on its own thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("sandlock-mcp")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let stop = CancellationToken::new();
        let reaper = tokio::spawn(reap_idle(app.clone(), stop.clone()));
        let filler = {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move { app.pool.fill(&app.exec, &app.workspaces, stop).await })
        };
        let leases = provider
            .clone()
            .map(|p| tokio::spawn(provider::reap(p, stop.clone())));
        let r = match transport {
            Transport::Http => http::serve(app.clone(), provider).await,
            Transport::Stdio => serve_stdio(app.clone()).await,
        };
        stop.cancel();
        let _ = reaper.await;
        if let Some(l) = leases {
            let _ = l.await;
        }
        let _ = filler.await;
        app.pool.clear();
        r
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    workspaces.finish();
    Ok(())
}
