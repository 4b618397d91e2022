//! The policy: plain, serializable data that says what a sandbox may do.
//!
//! One schema serves every face: the CLI builds it from flags, TOML profiles and the MCP server's
//! config deserialize into it, and the Python `Policy` class passes its keyword arguments through
//! [`Policy::from_json_value`]. Field names are the same everywhere.
//!
//! A `Policy` is only data. [`crate::Sandbox::new`] validates it (every error names the field and the
//! bad value) and turns it into a plan.

mod net;
mod preset;
mod units;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use net::PortRange;
pub(crate) use net::{parse_bind_rule, parse_span};
pub use preset::Preset;
pub(crate) use preset::system_paths;
pub use units::{ByteSize, Seconds};

use crate::error::PolicyError;

/// The default cap on captured stdout and on captured stderr, each.
pub const DEFAULT_MAX_OUTPUT: ByteSize = ByteSize::mib(16);

/// What a sandboxed command may touch, and how much it may use.
///
/// Everything not granted is denied: no filesystem access outside `fs_readable` and `fs_writable`
/// (plus `presets`), no network, no host environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Paths the sandbox may read and execute (recursively, for directories).
    pub fs_readable: Vec<PathBuf>,
    /// Paths the sandbox may read, write, create in and delete from (recursively, for directories).
    pub fs_writable: Vec<PathBuf>,
    /// Built-in path sets, e.g. `system` for what `python3`, `sh` and `node` need to start.
    pub presets: Vec<Preset>,
    /// Working directory of the command; defaults to the caller's.
    pub cwd: Option<PathBuf>,
    /// Environment variables to set. The host environment is not inherited.
    pub env: BTreeMap<String, String>,
    /// Names of host environment variables to pass through unchanged.
    pub pass_env: Vec<String>,
    /// Outgoing TCP the sandbox may open: `HOST[:PORT]`, where HOST is a name, an IP address, a
    /// CIDR block or `*` (or nothing: `:443` is port 443 on any host), and PORT a port, `LOW-HIGH`
    /// or `*` (or nothing: every port). Names resolve inside the sandbox to what the host resolves
    /// them to; other names do not resolve.
    pub net_allow: Vec<String>,
    /// Outgoing TCP the sandbox may not open, same form; it wins over `net_allow`. Alone it means
    /// every destination but these (e.g. `169.254.169.254`, `10.0.0.0/8`).
    pub net_deny: Vec<String>,
    /// TCP ports the sandbox may bind: `PORT` or `LOW-HIGH` (`0` lets it bind an ephemeral port).
    pub net_allow_bind: Vec<String>,
    /// HTTP requests the sandbox may make: `METHOD HOST[:PORT][/PATH]`, each part a glob (`*`
    /// stands for any run of characters), e.g. `GET api.example.com/v1/*`. Without a port, 80 and
    /// 443. Connections to those ports of the hosts named go through sandlock's proxy, which
    /// answers other requests with 403 before they leave; HTTPS is intercepted with a certificate
    /// authority made for the sandbox (see `http_ca_out`). The hosts resolve inside the sandbox.
    pub http_allow: Vec<String>,
    /// HTTP requests refused even if `http_allow` matches them (same form); alone, every request
    /// to the hosts they name but these is allowed.
    pub http_deny: Vec<String>,
    /// Credentials the proxy adds to the requests it lets through: `METHOD HOST[:PORT][/PATH]
    /// bearer NAME` (`Authorization: Bearer ...`) or `... header HEADER-NAME NAME`, NAME one of
    /// `credentials`. The first entry that matches applies.
    pub http_auth: Vec<String>,
    /// Secrets for `http_auth`, by name: `env:VAR` (sandlock's own environment) or `file:PATH`,
    /// read when the sandbox is made and never shown to it.
    pub credentials: BTreeMap<String, String>,
    /// Where to write the certificate of the sandbox's HTTPS authority (PEM), for programs that
    /// take extra CAs from a file (`NODE_EXTRA_CA_CERTS`, `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`).
    pub http_ca_out: Option<PathBuf>,
    /// A trust bundle the sandbox reads (e.g. `/etc/ssl/certs/ca-certificates.crt`): inside, that
    /// path shows the host's file plus the certificate of the sandbox's HTTPS authority, so that
    /// programs trust the interception without `SSL_CERT_FILE`. The host's file is not changed.
    /// Needs `http_allow` or `http_deny`.
    pub http_inject_ca: Option<PathBuf>,
    /// A PEM bundle of the CAs the proxy trusts for upstream HTTPS servers, instead of the host's
    /// trust store.
    pub http_upstream_ca: Option<PathBuf>,
    /// More syscalls to refuse with EPERM, by name.
    pub extra_deny_syscalls: Vec<String>,
    /// Run even if the kernel lacks a protection; the outcome then lists what was not enforced.
    pub best_effort: bool,
    /// Wall-clock limit for the whole run.
    pub timeout: Option<Seconds>,
    /// Memory limit for all processes of the sandbox together.
    pub max_memory: Option<ByteSize>,
    /// Limit on live processes of the sandbox (threads are counted by `max_threads`).
    pub max_processes: Option<u32>,
    /// Limit on live threads of the sandbox, all processes together (each process counts at least
    /// one): what stops a thread bomb, as `max_processes` stops a fork bomb.
    pub max_threads: Option<u32>,
    /// CPU time limit for all processes of the sandbox together.
    pub max_cpu: Option<Seconds>,
    /// Cap on captured stdout and on captured stderr, each (default 16 MiB).
    pub max_output: Option<ByteSize>,
    /// Largest file the sandbox may write (`RLIMIT_FSIZE`).
    pub max_file_size: Option<ByteSize>,
    /// Most file descriptors a sandboxed process may hold open (`RLIMIT_NOFILE`).
    pub max_open_files: Option<u32>,
    /// Cap on the bytes stored under the writable directories.
    pub max_disk: Option<ByteSize>,
    /// Whether each run gets its own cgroup v2 (kernel-enforced `max_memory` and `max_threads`):
    /// `auto` (where a delegated, writable cgroup offers the needed controllers), `require`, `off`.
    pub cgroup: CgroupMode,
    /// The delegated cgroup v2 directory runs' cgroups are created in (default: this process's own
    /// cgroup).
    pub cgroup_parent: Option<PathBuf>,
    /// Per-sandbox mounts: inside the sandbox, paths beneath each key (VIRT, absolute; it need not
    /// exist on the host) are served from the value (HOST, an existing directory, granted to the
    /// sandbox), read-write, or read-only when written `HOST:ro`. Emulated by the supervisor, no
    /// root needed (see `docs/fsview.md`).
    pub fs_mount: BTreeMap<PathBuf, String>,
    /// Mount a fresh private directory, created for each run and removed after it, on `/tmp` and
    /// `/var/tmp`, so that sandboxes never see each other's temporary files.
    pub private_tmp: bool,
    /// A copy-on-write work directory: the sandbox sees it as it is, but everything it changes
    /// beneath it goes to a private upper layer, applied to the directory when the run ends as
    /// `commit` says (the outcome lists the changes either way).
    pub workdir: Option<PathBuf>,
    /// When a work directory's changes are applied: `on-success` (the default: the command exited
    /// 0), `always`, or `never` (a dry run: the changes are only listed).
    pub commit: CommitMode,
}

/// When the changes made in a copy-on-write work directory are applied to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommitMode {
    /// Never: the run is a dry run, its changes are listed and discarded.
    Never,
    /// When the command exited with status 0.
    #[default]
    OnSuccess,
    /// Whatever the command did.
    Always,
}

/// How a sandbox uses cgroup v2 (see `docs/limits.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Use a cgroup when one can be created and has a controller for a requested limit; otherwise
    /// the supervisor alone enforces the limits.
    #[default]
    Auto,
    /// Every run must get its own cgroup with every controller the limits need, or fail.
    Require,
    /// Never use cgroups.
    Off,
}

macro_rules! policy_fields {
    ($m:ident) => {
        $m! {
            fs_readable, fs_writable, presets, cwd, env, pass_env, net_allow, net_deny, net_allow_bind,
            http_allow, http_deny, http_auth, credentials, http_ca_out, http_inject_ca,
            http_upstream_ca, extra_deny_syscalls, best_effort, timeout, max_memory, max_processes,
            max_threads, max_cpu, max_output, max_file_size, max_open_files, max_disk, cgroup,
            cgroup_parent, fs_mount, private_tmp, workdir, commit
        }
    };
}

macro_rules! field_names {
    ($($f:ident),*) => { &[$(stringify!($f)),*] };
}

/// Every field name of the schema, in declaration order.
pub const FIELDS: &[&str] = policy_fields!(field_names);

impl Policy {
    /// Builds a policy from a JSON object, naming the field and value of the first problem.
    ///
    /// This is the path every face that receives loosely typed input takes (Python keyword
    /// arguments, MCP configuration), so that `max_memory="12Q"` reads
    /// `max_memory: "12Q": not a size; ...` whichever face it came through.
    pub fn from_json_value(value: serde_json::Value) -> Result<Policy, PolicyError> {
        let serde_json::Value::Object(map) = value else {
            return Err(PolicyError::new(
                "policy",
                value.to_string(),
                "expected a table of fields",
            ));
        };
        let mut policy = Policy::default();
        for (key, v) in map {
            policy.set_field(&key, v)?;
        }
        Ok(policy)
    }

    /// Parses a TOML profile (the same field names, e.g. `fs_readable = ["/data"]`).
    pub fn from_toml_str(text: &str) -> Result<Policy, PolicyError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            PolicyError::new("profile", first_line(text), format!("not valid TOML: {e}"))
        })?;
        let value = serde_json::to_value(table)
            .map_err(|e| PolicyError::new("profile", "", format!("cannot convert: {e}")))?;
        Policy::from_json_value(value)
    }

    /// Sets one field from a loosely typed value (`null` resets it to the default).
    pub fn set_field(&mut self, key: &str, v: serde_json::Value) -> Result<(), PolicyError> {
        fn parse<T: serde::de::DeserializeOwned>(
            key: &str,
            v: serde_json::Value,
        ) -> Result<T, PolicyError> {
            let shown = match &v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            serde_json::from_value(v).map_err(|e| PolicyError::new(key, shown, strip_serde(&e)))
        }
        macro_rules! set {
            ($($f:ident),*) => {
                match key {
                    $(stringify!($f) => {
                        self.$f = if v.is_null() { Default::default() } else { parse(key, v)? };
                    })*
                    _ => {
                        return Err(PolicyError::new(
                            key,
                            v.to_string(),
                            format!("unknown field; the fields are: {}", FIELDS.join(", ")),
                        ))
                    }
                }
            };
        }
        policy_fields!(set);
        Ok(())
    }

    /// The effective cap on captured stdout (and, separately, stderr).
    pub fn output_cap(&self) -> ByteSize {
        self.max_output.unwrap_or(DEFAULT_MAX_OUTPUT)
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").chars().take(60).collect()
}

/// serde_json appends " at line 1 column 9" to messages about in-memory values; that noise does not help.
fn strip_serde(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn from_json_value_accepts_the_python_shape() {
        let p = Policy::from_json_value(json!({
            "fs_readable": ["/usr", "/lib"],
            "fs_writable": ["/tmp/ws"],
            "max_memory": "256M",
            "timeout": 30,
            "net_allow": [":443"],
        }))
        .unwrap();
        assert_eq!(
            p.fs_readable,
            vec![PathBuf::from("/usr"), PathBuf::from("/lib")]
        );
        assert_eq!(p.max_memory, Some(ByteSize(256 << 20)));
        assert_eq!(p.timeout.map(|t| t.duration().as_secs()), Some(30));
    }

    #[test]
    fn unknown_field_is_named() {
        let e = Policy::from_json_value(json!({"fs_readabel": ["/usr"]})).unwrap_err();
        assert_eq!(e.field, "fs_readabel");
        assert!(e.reason.contains("unknown field"), "{e}");
        assert!(e.reason.contains("fs_readable"), "{e}");
    }

    #[test]
    fn bad_value_names_field_and_value() {
        let e = Policy::from_json_value(json!({"max_memory": "12Q"})).unwrap_err();
        assert_eq!((e.field.as_str(), e.value.as_str()), ("max_memory", "12Q"));
        let e = Policy::from_json_value(json!({"max_processes": -3})).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("max_processes", "-3")
        );
        let e = Policy::from_json_value(json!({"fs_readable": "/usr"})).unwrap_err();
        assert_eq!(e.field, "fs_readable");
    }

    #[test]
    fn toml_profile_uses_the_same_names() {
        let p = Policy::from_toml_str(
            "presets = [\"system\"]\nfs_writable = [\"/tmp\"]\nmax_output = \"1M\"\n[env]\nFOO = \"bar\"\n",
        )
        .unwrap();
        assert_eq!(p.presets, vec![Preset::System]);
        assert_eq!(p.env.get("FOO").map(String::as_str), Some("bar"));
        assert_eq!(p.output_cap(), ByteSize(1 << 20));
        let e = Policy::from_toml_str("max_disk = \"lots\"").unwrap_err();
        assert_eq!(e.field, "max_disk");
        let e = Policy::from_toml_str("fs_readable = [").unwrap_err();
        assert_eq!(e.field, "profile");
    }

    #[test]
    fn policy_round_trips_through_json() {
        let p = Policy {
            fs_readable: vec!["/usr".into()],
            max_memory: Some(ByteSize(1 << 30)),
            timeout: Some(Seconds(std::time::Duration::from_millis(1500))),
            ..Policy::default()
        };
        let back = Policy::from_json_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
