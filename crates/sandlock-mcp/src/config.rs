//! Configuration: built-in defaults, then the TOML file (`--config`), then flags, each overriding
//! the one before.
//!
//! The policy of each execution tool is a [`sandlock_core::Policy`] with the same field names as
//! everywhere else (`fs_readable`, `net_allow`, `max_memory`, ...), so a profile written for
//! `sandlock run --profile` pastes into `[tools.execute_python]` unchanged.
//!
//! ```toml
//! [server]
//! listen = "0.0.0.0:8080"
//! allowed_hosts = ["sandlock.agents.svc.cluster.local"]
//! auth_token_file = "/var/run/secrets/sandlock/token"
//!
//! [workspaces]
//! root = "/tmp/sandlock-mcp"
//! ttl = 900
//! max_disk = "256M"
//!
//! [limits]
//! timeout = 30
//! max_memory = "512M"
//! max_concurrent = 2
//! queue_depth = 32
//!
//! [python]
//! interpreter = "/opt/venv/bin/python"
//! start = "fork"              # or "fresh" (see crate::warm)
//! fork_idle = 300
//! pool = 2                    # ready workspaces for new sessions (see crate::pool)
//!
//! [node]                      # execute_code's javascript and typescript
//! interpreter = "node"
//! tsx = "/usr/local/bin/tsx"
//!
//! [tools.execute_python]      # a sandlock Policy
//! net_allow = [":443"]
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use sandlock_core::{ByteSize, Policy, Seconds};
use serde::Deserialize;

use crate::McpArgs;
use crate::replica::ReplicaId;

/// Which transport the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Streamable HTTP (MCP 2025-11-25 sessions and stateless 2026-07-28 requests).
    Http,
    /// JSON-RPC over stdin/stdout, one session for the life of the process.
    Stdio,
}

/// How `execute_python` starts its interpreter (see `crate::warm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PythonStart {
    /// Fork a sandboxed interpreter the workspace started once (the tree limits then cover the
    /// workspace's Python processes together; the timeout and output cap stay per call).
    Fork,
    /// Start a new interpreter for every call (every limit per call).
    Fresh,
}

/// How log lines are written (always to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The `[server]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerFile {
    /// `http` or `stdio`.
    pub transport: Option<Transport>,
    /// `HOST:PORT` to listen on.
    pub listen: Option<String>,
    /// Extra `Host` header values accepted (DNS-rebinding protection).
    pub allowed_hosts: Vec<String>,
    /// Extra `Origin` values accepted (`scheme://host[:port]`, `:*` for any port).
    pub allowed_origins: Vec<String>,
    /// File holding the bearer token.
    pub auth_token_file: Option<PathBuf>,
    /// Allow a non-loopback listener without a token.
    pub insecure_no_auth: Option<bool>,
    /// Serve every request statelessly (no `Mcp-Session-Id`).
    pub stateless: Option<bool>,
    /// Seconds in-flight calls get to finish after SIGTERM.
    pub grace: Option<Seconds>,
    /// `text` or `json`.
    pub log_format: Option<LogFormat>,
    /// Include code and commands in the per-call log line.
    pub log_code: Option<bool>,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: Option<String>,
    /// This server's identity among its replicas: the prefix of every session id and workspace
    /// handle it mints (see `crate::replica`).
    pub replica_id: Option<String>,
}

/// The `[workspaces]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkspacesFile {
    /// Directory under which each session's workspace is created.
    pub root: Option<PathBuf>,
    /// Idle time after which a session ends and its workspace is removed.
    pub ttl: Option<Seconds>,
    /// Disk cap per workspace.
    pub max_disk: Option<ByteSize>,
    /// Most workspaces alive at once.
    pub max_workspaces: Option<usize>,
    /// Give every workspace's runs a private `/tmp` and `/var/tmp` (default true).
    pub private_tmp: Option<bool>,
    /// Directories of each workspace mounted inside its sandboxes: `VIRT = "SUBDIR"` (or
    /// `"SUBDIR:ro"`), e.g. `"/mnt/data" = "data"`; the subdirectory is made when first needed.
    pub mounts: std::collections::BTreeMap<PathBuf, String>,
}

/// The `[limits]` table: defaults for every execution tool, and the server's own capacity.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsFile {
    /// Default wall-clock limit per call.
    pub timeout: Option<Seconds>,
    /// Largest `timeout_s` a caller may ask for.
    pub max_timeout: Option<Seconds>,
    /// Memory cap per call (all its processes together).
    pub max_memory: Option<ByteSize>,
    /// Process cap per call.
    pub max_processes: Option<u32>,
    /// Cap on captured stdout and on captured stderr, each.
    pub max_output: Option<ByteSize>,
    /// Runs at once.
    pub max_concurrent: Option<usize>,
    /// Calls that may wait for a free slot; past this a call is refused as busy.
    pub queue_depth: Option<usize>,
    /// Background commands a workspace may run at once.
    pub max_background: Option<usize>,
}

/// The `[python]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PythonFile {
    /// Interpreter for `execute_python` (a path, or a name looked up in `PATH`).
    pub interpreter: Option<PathBuf>,
    /// `fork` or `fresh`.
    pub start: Option<PythonStart>,
    /// Seconds a workspace's idle fork server is kept (default 300).
    pub fork_idle: Option<Seconds>,
    /// Workspaces kept ready for new sessions, each with its fork server started (0: none).
    pub pool: Option<usize>,
}

/// The `[node]` table: the runtime of `execute_code`'s `javascript` and `typescript`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeFile {
    /// Node.js (a path, or a name looked up in `PATH`).
    pub interpreter: Option<PathBuf>,
    /// The `tsx` TypeScript runner (its `bin/tsx`, or its package directory).
    pub tsx: Option<PathBuf>,
}

/// The `[tools]` table: a policy per execution tool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsFile {
    /// Policy for `execute_python`.
    pub execute_python: Option<Policy>,
    /// Policy for `execute_shell`.
    pub execute_shell: Option<Policy>,
    /// Policy for `execute_code`'s `javascript` and `typescript` (its `python` runs with
    /// `execute_python`'s).
    pub execute_code: Option<Policy>,
}

/// The whole TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// `[server]`.
    pub server: ServerFile,
    /// `[workspaces]`.
    pub workspaces: WorkspacesFile,
    /// `[limits]`.
    pub limits: LimitsFile,
    /// `[python]`.
    pub python: PythonFile,
    /// `[node]`.
    pub node: NodeFile,
    /// `[tools.*]`.
    pub tools: ToolsFile,
    /// `[onlyboxes]`: LobeHub's sandbox provider API (see `crate::provider`).
    pub onlyboxes: crate::provider::config::OnlyboxesFile,
}

impl ConfigFile {
    /// Reads and parses `path`; errors name the file and the offending key.
    pub fn load(path: &Path) -> anyhow::Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        ConfigFile::parse(&text).with_context(|| format!("in the config file {}", path.display()))
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> anyhow::Result<ConfigFile> {
        toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "{}",
                e.to_string().trim_end().replace('\n', "\n  ")
                    + "\n  hint: the tables are [server], [workspaces], [limits], [python], \
                       [node], [tools.execute_python], [tools.execute_shell], \
                       [tools.execute_code] and [onlyboxes]; tool tables and [onlyboxes.policy] \
                       take sandlock policy fields"
            )
        })
    }
}

/// The policies code runs under: one per execution tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecTool {
    /// `execute_python` (and `execute_code` in Python).
    Python,
    /// `execute_shell`.
    Shell,
    /// `execute_code` in JavaScript or TypeScript (Node.js).
    Node,
}

impl ExecTool {
    /// Every one of them.
    pub const ALL: [ExecTool; 3] = [ExecTool::Python, ExecTool::Shell, ExecTool::Node];

    /// The MCP tool whose policy this is (`[tools.<name>]`).
    pub fn name(self) -> &'static str {
        match self {
            ExecTool::Python => "execute_python",
            ExecTool::Shell => "execute_shell",
            ExecTool::Node => "execute_code",
        }
    }
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Transport.
    pub transport: Transport,
    /// Listen address (HTTP).
    pub listen: SocketAddr,
    /// Accepted `Host` values.
    pub allowed_hosts: Vec<String>,
    /// Accepted `Origin` values.
    pub allowed_origins: Vec<String>,
    /// The bearer token, if any.
    pub token: Option<String>,
    /// Serve statelessly.
    pub stateless: bool,
    /// Shutdown grace period.
    pub grace: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Log code and commands.
    pub log_code: bool,
    /// Log level.
    pub log_level: tracing_subscriber::filter::LevelFilter,
    /// This replica's identity, the prefix of the ids it mints.
    pub replica: ReplicaId,
    /// Workspace root (absolute).
    pub workspace_root: PathBuf,
    /// Idle TTL of sessions and stateless workspaces.
    pub ttl: Duration,
    /// Disk cap per workspace.
    pub max_disk: ByteSize,
    /// Most workspaces at once.
    pub max_workspaces: usize,
    /// Workspace directories mounted in the workspace's sandboxes (VIRT -> `SUBDIR[:ro]`).
    pub mounts: Mounts,
    /// Largest per-call timeout.
    pub max_timeout: Duration,
    /// Runs at once.
    pub max_concurrent: usize,
    /// Waiting calls allowed.
    pub queue_depth: usize,
    /// Background commands per workspace at once.
    pub max_background: usize,
    /// Python interpreter as configured (resolved later).
    pub python: PathBuf,
    /// Base policy of `execute_python` (before the workspace and interpreter are added).
    pub python_policy: Policy,
    /// How `execute_python` starts its interpreter.
    pub python_start: PythonStart,
    /// How long an idle workspace keeps its fork server.
    pub fork_idle: Duration,
    /// Ready workspaces kept for new sessions (`crate::pool`).
    pub python_pool: usize,
    /// Base policy of `execute_shell`.
    pub shell_policy: Policy,
    /// Node.js as configured (resolved later; `None`: `node` in `PATH`, if there is one).
    pub node: Option<PathBuf>,
    /// The tsx runner as configured, if it was (else it is looked up in `PATH`).
    pub tsx: Option<PathBuf>,
    /// Base policy of `execute_code` in JavaScript and TypeScript.
    pub node_policy: Policy,
    /// LobeHub's sandbox provider API, when a JIT signing key is configured.
    pub onlyboxes: Option<crate::provider::config::ProviderConfig>,
}

/// Directories of each workspace mounted in its sandboxes: mount point -> `SUBDIR[:ro]`.
pub type Mounts = std::collections::BTreeMap<PathBuf, String>;

/// Environment variable that may hold the bearer token.
pub const TOKEN_ENV: &str = "SANDLOCK_MCP_TOKEN";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_MAX_MEMORY: ByteSize = ByteSize::mib(512);
const DEFAULT_MAX_PROCESSES: u32 = 64;
/// Thread cap per call (all processes together), unless a tool's policy sets `max_threads`.
const DEFAULT_MAX_THREADS: u32 = 1024;
const DEFAULT_MAX_OUTPUT: ByteSize = ByteSize::mib(1);
const DEFAULT_MAX_DISK: ByteSize = ByteSize::mib(256);
const DEFAULT_TTL: Duration = Duration::from_secs(900);
const DEFAULT_FORK_IDLE: Duration = Duration::from_secs(300);
const DEFAULT_GRACE: Duration = Duration::from_secs(20);
const DEFAULT_MAX_BACKGROUND: usize = 4;

impl Config {
    /// Merges defaults, the config file named by `args.config` (if any) and the flags.
    pub fn from_args(args: &McpArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(p) => ConfigFile::load(p)?,
            None => ConfigFile::default(),
        };
        Config::merge(args, file, std::env::var(TOKEN_ENV).ok())
    }

    /// Merges `file` and the flags in `args`; `env_token` is the value of [`TOKEN_ENV`].
    pub fn merge(
        args: &McpArgs,
        file: ConfigFile,
        env_token: Option<String>,
    ) -> anyhow::Result<Config> {
        let s = file.server;
        let transport = args.transport.or(s.transport).unwrap_or(Transport::Http);
        let listen_text = args
            .listen
            .clone()
            .or(s.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            anyhow::anyhow!(
                "listen: {listen_text:?} is not HOST:PORT with an IP address \
                 (e.g. 127.0.0.1:8080, 0.0.0.0:8080 or [::]:8080)"
            )
        })?;

        let token_file = args.auth_token_file.clone().or(s.auth_token_file);
        let token = match token_file {
            Some(p) => {
                let t = std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read the auth token file {}", p.display()))?;
                Some(t.trim().to_string())
            }
            None => env_token.map(|t| t.trim().to_string()),
        };
        if let Some(t) = &token {
            if t.len() < 16 {
                bail!(
                    "the auth token is {} characters long; use at least 16 random characters \
                     (e.g. `head -c 32 /dev/urandom | base64`)",
                    t.len()
                );
            }
            if !t.bytes().all(|b| (0x21..0x7f).contains(&b)) {
                bail!("the auth token must be printable ASCII without spaces");
            }
        }
        let insecure_no_auth = args.insecure_no_auth || s.insecure_no_auth.unwrap_or(false);
        if transport == Transport::Http
            && token.is_none()
            && !listen.ip().is_loopback()
            && !insecure_no_auth
        {
            bail!(
                "refusing to listen on {listen} without authentication: anyone who can reach it \
                 could run code. Give a bearer token with --auth-token-file FILE or the \
                 {TOKEN_ENV} environment variable, or pass --insecure-no-auth if something in \
                 front of the server authenticates"
            );
        }

        let mut allowed_hosts: Vec<String> =
            vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if !listen.ip().is_unspecified() {
            allowed_hosts.push(listen.ip().to_string());
        }
        allowed_hosts.extend(s.allowed_hosts);
        allowed_hosts.extend(args.allowed_host.iter().cloned());
        allowed_hosts.dedup();

        let mut allowed_origins: Vec<String> = vec![
            "http://localhost:*".into(),
            "http://127.0.0.1:*".into(),
            "http://[::1]:*".into(),
        ];
        allowed_origins.extend(s.allowed_origins);
        allowed_origins.extend(args.allowed_origin.iter().cloned());
        for o in &allowed_origins {
            if !(o.starts_with("http://") || o.starts_with("https://")) {
                bail!(
                    "allowed origin {o:?} has no scheme; write it as a browser sends it, e.g. \
                     https://chat.example.com or http://localhost:*"
                );
            }
        }

        let w = file.workspaces;
        let workspace_root = args
            .workspace_root
            .clone()
            .or(w.root)
            .unwrap_or_else(|| std::env::temp_dir().join("sandlock-mcp"));
        let workspace_root = if workspace_root.is_absolute() {
            workspace_root
        } else {
            std::env::current_dir()
                .context("cannot read the current directory")?
                .join(workspace_root)
        };
        let l = file.limits;
        let max_concurrent = args
            .max_concurrent
            .or(l.max_concurrent)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        if max_concurrent == 0 {
            bail!("max_concurrent: 0: at least one run must be allowed");
        }

        let timeout = args
            .timeout
            .or(l.timeout)
            .map_or(DEFAULT_TIMEOUT, Seconds::duration);
        let max_timeout = args
            .max_timeout
            .or(l.max_timeout)
            .map_or(DEFAULT_MAX_TIMEOUT, Seconds::duration)
            .max(timeout);
        let max_memory = args
            .max_memory
            .or(l.max_memory)
            .unwrap_or(DEFAULT_MAX_MEMORY);
        let max_processes = args
            .max_processes
            .or(l.max_processes)
            .unwrap_or(DEFAULT_MAX_PROCESSES);
        let max_output = args
            .max_output
            .or(l.max_output)
            .unwrap_or(DEFAULT_MAX_OUTPUT);
        let max_disk = args.max_disk.or(w.max_disk).unwrap_or(DEFAULT_MAX_DISK);
        let limits = |mut p: Policy| {
            p.timeout.get_or_insert(Seconds(timeout));
            p.max_memory.get_or_insert(max_memory);
            p.max_processes.get_or_insert(max_processes);
            p.max_threads.get_or_insert(DEFAULT_MAX_THREADS);
            p.max_output.get_or_insert(max_output);
            p.max_disk.get_or_insert(max_disk);
            p
        };
        let default_policy = || Policy {
            presets: vec![sandlock_core::Preset::System],
            ..Policy::default()
        };
        // A private /tmp per run, unless turned off: code that writes to fixed paths in /tmp
        // (LobeHub's /tmp/lobe-code-<ts>.py) never meets another workspace's files.
        let private_tmp = !args.no_private_tmp && w.private_tmp.unwrap_or(true);
        let view = |mut p: Policy| {
            p.private_tmp |= private_tmp;
            p
        };
        let python_policy = view(limits(
            file.tools.execute_python.unwrap_or_else(default_policy),
        ));
        let shell_policy = view(limits(
            file.tools.execute_shell.unwrap_or_else(default_policy),
        ));
        let node_policy = view(limits(
            file.tools.execute_code.unwrap_or_else(default_policy),
        ));
        let mut mounts = w.mounts;
        for m in &args.workspace_mount {
            let (virt, sub) = m.split_once(':').filter(|(v, s)| !v.is_empty() && !s.is_empty()).with_context(|| {
                format!("--workspace-mount {m:?}: write VIRT:SUBDIR or VIRT:SUBDIR:ro (e.g. /mnt/data:data)")
            })?;
            mounts.insert(PathBuf::from(virt), sub.to_string());
        }
        for (virt, sub) in &mounts {
            check_mount(virt, sub)?;
        }
        for (tool, p) in [
            ("execute_python", &python_policy),
            ("execute_shell", &shell_policy),
            ("execute_code", &node_policy),
        ] {
            check_isolation(tool, p, &workspace_root)?;
        }

        let max_workspaces = args.max_workspaces.or(w.max_workspaces).unwrap_or(256);
        let onlyboxes = crate::provider::config::resolve(
            args.onlyboxes_jit_key_file.clone(),
            &args.onlyboxes_storage_host,
            file.onlyboxes,
            &limits,
            max_workspaces,
        )?;
        if let Some(o) = &onlyboxes {
            if transport != Transport::Http {
                bail!(
                    "the Onlyboxes API is served over HTTP: drop --transport stdio, or the \
                     signing key (--onlyboxes-jit-key-file / [onlyboxes] jit_key_file)"
                );
            }
            check_isolation_in("onlyboxes.policy", &o.policy, &workspace_root)?;
        }

        // max_cpu counts the CPU of every process of the tree, dead ones included: with a fork
        // server that would be the sum over every call of the workspace.
        let python_start = match (
            args.python_start.or(file.python.start),
            python_policy.max_cpu,
        ) {
            (Some(PythonStart::Fork), Some(cpu)) => bail!(
                "python.start = \"fork\" cannot hold max_cpu ({cpu}) per call: a fork server's \
                 CPU time adds up over every call of its workspace; use start = \"fresh\" or \
                 drop max_cpu (the timeout still bounds each call)"
            ),
            (Some(s), _) => s,
            (None, Some(_)) => PythonStart::Fresh,
            (None, None) => PythonStart::Fork,
        };

        let python_pool = match (args.python_pool.or(file.python.pool), python_start) {
            (Some(n), PythonStart::Fresh) if n > 0 => bail!(
                "python.pool = {n} needs start = \"fork\": the pool holds workspaces whose Python \
                 fork server is started, and fresh mode has none; set pool = 0 or start = \"fork\""
            ),
            (Some(n), _) if n >= max_workspaces => bail!(
                "python.pool = {n} must be below max_workspaces ({max_workspaces}): the ready \
                 workspaces count toward it, and sessions need the rest"
            ),
            (Some(n), _) => n,
            (None, PythonStart::Fresh) => 0,
            (None, PythonStart::Fork) if transport == Transport::Stdio => 0,
            (None, PythonStart::Fork) => max_concurrent.min(max_workspaces / 2),
        };
        let max_background = args
            .max_background
            .or(l.max_background)
            .unwrap_or(DEFAULT_MAX_BACKGROUND);

        let log_level = match (args.log_level, s.log_level) {
            (Some(l), _) => l,
            (None, Some(text)) => text.parse().map_err(|_| {
                anyhow::anyhow!(
                    "server.log_level: {text:?} is not a level; use error, warn, info, debug or trace"
                )
            })?,
            (None, None) => tracing_subscriber::filter::LevelFilter::INFO,
        };

        let replica = match args.replica_id.as_deref().or(s.replica_id.as_deref()) {
            Some(text) => ReplicaId::parse(text).map_err(|e| {
                anyhow::anyhow!(
                    "replica_id: {text:?} is not a replica id: {e}. Use 1 to {} letters, digits, \
                     '-' and '_' (e.g. the pod name sandlock-0): the id starts every session id \
                     and workspace handle, up to the first '.', and is the proxy's name for this \
                     replica",
                    crate::replica::MAX_LEN
                )
            })?,
            None => ReplicaId::default_for_host(),
        };

        Ok(Config {
            transport,
            listen,
            allowed_hosts,
            allowed_origins,
            token,
            stateless: args.stateless || s.stateless.unwrap_or(false),
            grace: args
                .grace
                .or(s.grace)
                .map_or(DEFAULT_GRACE, Seconds::duration),
            log_format: args.log_format.or(s.log_format).unwrap_or(LogFormat::Text),
            log_code: args.log_code || s.log_code.unwrap_or(false),
            log_level,
            replica,
            workspace_root,
            ttl: args.ttl.or(w.ttl).map_or(DEFAULT_TTL, Seconds::duration),
            max_disk,
            max_workspaces,
            mounts,
            max_timeout,
            max_concurrent,
            queue_depth: args.queue_depth.or(l.queue_depth).unwrap_or(32),
            max_background,
            python: args
                .python
                .clone()
                .or(file.python.interpreter)
                .unwrap_or_else(|| "python3".into()),
            python_policy,
            python_start,
            fork_idle: file
                .python
                .fork_idle
                .map_or(DEFAULT_FORK_IDLE, Seconds::duration),
            python_pool,
            shell_policy,
            node: args.node.clone().or(file.node.interpreter),
            tsx: args.tsx.clone().or(file.node.tsx),
            node_policy,
            onlyboxes,
        })
    }

    /// The base policy of an execution tool.
    pub fn policy(&self, tool: ExecTool) -> &Policy {
        match tool {
            ExecTool::Python => &self.python_policy,
            ExecTool::Shell => &self.shell_policy,
            ExecTool::Node => &self.node_policy,
        }
    }
}

/// A workspace mount: an absolute mount point, and a subdirectory of the workspace that stays in
/// it (relative, without `..`), optionally `:ro`.
fn check_mount(virt: &Path, sub: &str) -> anyhow::Result<()> {
    let key = format!("workspaces.mounts.{:?}", virt.display().to_string());
    if !virt.is_absolute() {
        bail!("{key}: the mount point must be an absolute path (e.g. \"/mnt/data\")");
    }
    let dir = Path::new(sub.strip_suffix(":ro").unwrap_or(sub));
    let inside = dir.components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    });
    if dir.as_os_str().is_empty() || !inside {
        bail!(
            "{key}: {sub:?}: name a subdirectory of the workspace (relative, without ..), e.g. \
             \"data\" or \"data:ro\""
        );
    }
    Ok(())
}

/// A readable or writable path that contains the workspace root would let one session's code see
/// every other session's files, so such a policy is refused at start-up.
pub fn check_isolation(tool: &str, p: &Policy, root: &Path) -> anyhow::Result<()> {
    check_isolation_in(&format!("tools.{tool}"), p, root)
}

/// [`check_isolation`] for the policy of the configuration table `table` (named in the errors).
pub fn check_isolation_in(table: &str, p: &Policy, root: &Path) -> anyhow::Result<()> {
    let fields = [
        ("fs_readable", &p.fs_readable),
        ("fs_writable", &p.fs_writable),
    ];
    for (field, paths) in fields {
        for (i, path) in paths.iter().enumerate() {
            let shown = path.canonicalize().unwrap_or_else(|_| path.clone());
            if root.starts_with(&shown) || root.starts_with(path) {
                bail!(
                    "{table}.{field}[{i}]: {:?} contains the workspace root {}; every \
                     session could read the others' files. Grant a narrower path, or move the \
                     workspace root (--workspace-root) outside it",
                    path.display().to_string(),
                    root.display()
                );
            }
        }
    }
    if p.cwd.is_some() {
        bail!("{table}.cwd: the server runs every call in its session's workspace; remove cwd");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: McpArgs,
    }

    fn args(v: &[&str]) -> McpArgs {
        T::parse_from(std::iter::once("t").chain(v.iter().copied())).a
    }

    #[test]
    fn defaults_listen_on_loopback_without_a_token() {
        let c = Config::merge(&args(&[]), ConfigFile::default(), None).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(c.token.is_none());
        assert!(c.allowed_origins.iter().any(|o| o == "http://localhost:*"));
        assert_eq!(c.python_policy.max_memory, Some(DEFAULT_MAX_MEMORY));
    }

    #[test]
    fn non_loopback_without_a_token_is_refused_and_the_opt_out_works() {
        let e = Config::merge(
            &args(&["--listen", "0.0.0.0:8080"]),
            ConfigFile::default(),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("--auth-token-file"), "{e}");
        let ok = Config::merge(
            &args(&["--listen", "0.0.0.0:8080", "--insecure-no-auth"]),
            ConfigFile::default(),
            None,
        );
        assert!(ok.is_ok());
        let ok = Config::merge(
            &args(&["--listen", "0.0.0.0:8080"]),
            ConfigFile::default(),
            Some("0123456789abcdef0123".into()),
        );
        assert_eq!(ok.unwrap().token.as_deref(), Some("0123456789abcdef0123"));
    }

    #[test]
    fn short_token_is_refused() {
        let e = Config::merge(&args(&[]), ConfigFile::default(), Some("short".into())).unwrap_err();
        assert!(e.to_string().contains("at least 16"), "{e}");
    }

    #[test]
    fn file_sets_everything_and_flags_win() {
        let f = ConfigFile::parse(
            r#"
            [server]
            listen = "127.0.0.1:9000"
            allowed_hosts = ["mcp.internal"]
            stateless = true
            log_format = "json"
            log_level = "debug"
            [workspaces]
            root = "/tmp/x-ws"
            ttl = 60
            max_disk = "10M"
            [limits]
            timeout = 5
            max_memory = "128M"
            max_concurrent = 3
            queue_depth = 7
            [python]
            interpreter = "/usr/bin/python3"
            start = "fresh"
            fork_idle = 45
            [tools.execute_shell]
            presets = ["system"]
            max_memory = "64M"
            net_allow = [":443"]
            http_allow = ["GET pypi.org/simple/*"]
            http_inject_ca = "/etc/ssl/certs/ca-certificates.crt"
            "#,
        )
        .unwrap();
        let c = Config::merge(&args(&["--queue-depth", "9"]), f, None).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert!(c.allowed_hosts.iter().any(|h| h == "mcp.internal"));
        assert!(c.stateless);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.log_level, tracing_subscriber::filter::LevelFilter::DEBUG);
        assert_eq!(c.workspace_root, PathBuf::from("/tmp/x-ws"));
        assert_eq!(c.ttl, Duration::from_secs(60));
        assert_eq!(c.max_concurrent, 3);
        assert_eq!(c.queue_depth, 9);
        assert_eq!(c.python, PathBuf::from("/usr/bin/python3"));
        assert_eq!(c.shell_policy.max_memory, Some(ByteSize::mib(64)));
        assert_eq!(c.python_policy.max_memory, Some(ByteSize::mib(128)));
        assert_eq!(c.shell_policy.net_allow, vec![":443".to_string()]);
        assert_eq!(
            c.shell_policy.http_inject_ca,
            Some(PathBuf::from("/etc/ssl/certs/ca-certificates.crt"))
        );
        assert_eq!(c.python_policy.max_disk, Some(ByteSize::mib(10)));
        assert_eq!(c.python_start, PythonStart::Fresh);
        assert_eq!(c.fork_idle, Duration::from_secs(45));
    }

    #[test]
    fn python_start_defaults_to_fork_and_max_cpu_selects_fresh_or_is_refused() {
        let c = Config::merge(&args(&[]), ConfigFile::default(), None).unwrap();
        assert_eq!(c.python_start, PythonStart::Fork);
        let cpu = || ConfigFile::parse("[tools.execute_python]\nmax_cpu = 5\n").unwrap();
        let c = Config::merge(&args(&[]), cpu(), None).unwrap();
        assert_eq!(c.python_start, PythonStart::Fresh);
        let e = Config::merge(&args(&["--python-start", "fork"]), cpu(), None).unwrap_err();
        assert!(e.to_string().contains("max_cpu"), "{e}");
    }

    #[test]
    fn the_pool_follows_max_concurrent_over_http_and_is_off_for_stdio_and_fresh_mode() {
        let merge = |a: &[&str]| Config::merge(&args(a), ConfigFile::default(), None);
        assert_eq!(merge(&["--max-concurrent", "3"]).unwrap().python_pool, 3);
        let few = merge(&["--max-concurrent", "8", "--max-workspaces", "6"]).unwrap();
        assert_eq!(few.python_pool, 3);
        assert_eq!(merge(&["--transport", "stdio"]).unwrap().python_pool, 0);
        assert_eq!(merge(&["--python-start", "fresh"]).unwrap().python_pool, 0);
        let file = ConfigFile::parse("[python]\npool = 5\n").unwrap();
        assert_eq!(
            Config::merge(&args(&[]), file, None).unwrap().python_pool,
            5
        );
        let e = merge(&["--python-start", "fresh", "--python-pool", "2"]).unwrap_err();
        assert!(e.to_string().contains("python.pool = 2 needs start"), "{e}");
        let e = merge(&["--python-pool", "4", "--max-workspaces", "4"]).unwrap_err();
        assert!(e.to_string().contains("below max_workspaces (4)"), "{e}");
        assert_eq!(merge(&["--python-pool", "0"]).unwrap().python_pool, 0);
    }

    #[test]
    fn node_background_and_execute_code_settings_are_read() {
        let c = Config::merge(&args(&[]), ConfigFile::default(), None).unwrap();
        assert_eq!((c.node.as_deref(), c.tsx.as_deref()), (None, None));
        assert_eq!(c.max_background, DEFAULT_MAX_BACKGROUND);
        assert_eq!(c.node_policy.max_memory, Some(DEFAULT_MAX_MEMORY));
        let f = ConfigFile::parse(
            "[limits]\nmax_background = 1\n[node]\ninterpreter = \"/opt/node/bin/node\"\n\
             tsx = \"/opt/tsx\"\n[tools.execute_code]\nmax_memory = \"1G\"\n",
        )
        .unwrap();
        let c = Config::merge(&args(&["--max-background", "3"]), f, None).unwrap();
        assert_eq!(c.max_background, 3, "the flag wins");
        assert_eq!(c.node.as_deref(), Some(Path::new("/opt/node/bin/node")));
        assert_eq!(c.tsx.as_deref(), Some(Path::new("/opt/tsx")));
        assert_eq!(
            c.policy(ExecTool::Node).max_memory,
            Some(ByteSize::mib(1024))
        );
        let e = ConfigFile::parse("[node]\ntxs = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("txs"), "{e}");
    }

    #[test]
    fn replica_id_comes_from_the_flag_the_file_or_the_host_name() {
        let c = Config::merge(&args(&[]), ConfigFile::default(), None).unwrap();
        assert_eq!(c.replica, ReplicaId::default_for_host());
        let f = || ConfigFile::parse("[server]\nreplica_id = \"from-file\"\n").unwrap();
        let c = Config::merge(&args(&[]), f(), None).unwrap();
        assert_eq!(c.replica.as_str(), "from-file");
        let c = Config::merge(&args(&["--replica-id", "sandlock-2"]), f(), None).unwrap();
        assert_eq!(c.replica.as_str(), "sandlock-2");
    }

    #[test]
    fn a_bad_replica_id_is_refused_naming_the_field_the_value_and_the_rule() {
        let e = Config::merge(
            &args(&["--replica-id", "web.1"]),
            ConfigFile::default(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("replica_id: \"web.1\""), "{e}");
        assert!(e.contains("'.' (character 4) is not allowed"), "{e}");
        assert!(e.contains("letters, digits, '-' and '_'"), "{e}");
        let f = ConfigFile::parse("[server]\nreplica_id = \"\"\n").unwrap();
        let e = Config::merge(&args(&[]), f, None).unwrap_err().to_string();
        assert!(e.contains("it is empty"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = ConfigFile::parse("[limits]\nmax_memroy = \"1G\"\n").unwrap_err();
        assert!(e.to_string().contains("max_memroy"), "{e}");
        let e = ConfigFile::parse("[tools.execute_python]\nfs_readabel = []\n").unwrap_err();
        assert!(e.to_string().contains("fs_readabel"), "{e}");
    }

    #[test]
    fn a_policy_that_exposes_the_workspace_root_is_refused() {
        let f = ConfigFile::parse("[tools.execute_python]\nfs_readable = [\"/tmp\"]\n").unwrap();
        let e = Config::merge(&args(&["--workspace-root", "/tmp/ws-root"]), f, None).unwrap_err();
        assert!(e.to_string().contains("contains the workspace root"), "{e}");
        let f = ConfigFile::parse("[tools.execute_python]\nfs_readable = [\"/usr\"]\n").unwrap();
        assert!(Config::merge(&args(&["--workspace-root", "/tmp/ws-root"]), f, None).is_ok());
    }
}
