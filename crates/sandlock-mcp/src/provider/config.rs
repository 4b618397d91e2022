//! The `[onlyboxes]` table and its flags: the JIT signing key, the storage hosts, leases and
//! capacity, and the policy of every session's commands.
//!
//! ```toml
//! [onlyboxes]
//! jit_key_file = "/var/run/secrets/sandlock/onlyboxes-jit-key"
//! storage_hosts = ["minio.example.internal:9000"]
//! max_lease = 3600
//! [onlyboxes.policy]           # a sandlock Policy; limits default to [limits]
//! max_memory = "1G"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use sandlock_core::net::rules::{NetRule, parse_net_rule};
use sandlock_core::{ByteSize, Policy, Seconds};
use serde::Deserialize;

/// Shortest signing key accepted, in bytes: HMAC-SHA256 is only as strong as its key.
pub const MIN_KEY_BYTES: usize = 32;

const DEFAULT_LEASE: Duration = Duration::from_secs(60);
const DEFAULT_MAX_LEASE: Duration = Duration::from_secs(1800);
const DEFAULT_COMMANDS_PER_SESSION: usize = 4;
const DEFAULT_MAX_BACKGROUND: usize = 16;

/// The `[onlyboxes]` table of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnlyboxesFile {
    /// File holding the JIT signing key (LobeHub's `ONLYBOXES_JIT_SIGNING_KEY`). The API is served
    /// only when it is set.
    pub jit_key_file: Option<PathBuf>,
    /// `HOST[:PORT]` of the object store that presigned URLs point at: the sandbox may connect to
    /// them (uploaded-file sync), and exports may only be sent there.
    pub storage_hosts: Vec<String>,
    /// Lease of a call that does not give `lease_ttl_sec` (default 60 s).
    pub default_lease: Option<Seconds>,
    /// Longest lease a call may ask for; longer requests are cut to it (default 1800 s).
    pub max_lease: Option<Seconds>,
    /// Sessions alive at once, all accounts together (default: `max_workspaces`).
    pub max_sessions: Option<usize>,
    /// Commands of one session running at once, foreground, background and exports together
    /// (default 4).
    pub max_commands_per_session: Option<usize>,
    /// Background commands (`terminalExec` tasks) running at once on the server (default 16).
    pub max_background: Option<usize>,
    /// The policy of every session's commands (a sandlock Policy; default: the `system` preset).
    pub policy: Option<Policy>,
}

/// The signing key. Its `Debug` form never shows the bytes.
#[derive(Clone)]
pub struct JitKey(Vec<u8>);

impl JitKey {
    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Reads the key from `path` (surrounding whitespace, such as a final newline, is not part of
    /// it) and refuses a key shorter than [`MIN_KEY_BYTES`].
    pub fn load(path: &Path) -> anyhow::Result<JitKey> {
        let raw = std::fs::read(path).map_err(|e| {
            anyhow::anyhow!(
                "onlyboxes.jit_key_file: cannot read {}: {e}; give the file that holds LobeHub's \
                 ONLYBOXES_JIT_SIGNING_KEY (--onlyboxes-jit-key-file FILE)",
                path.display()
            )
        })?;
        JitKey::from_bytes(&raw).map_err(|why| {
            anyhow::anyhow!(
                "onlyboxes.jit_key_file: the key in {} {why}",
                path.display()
            )
        })
    }

    /// The key from the contents of a key file.
    pub fn from_bytes(raw: &[u8]) -> Result<JitKey, String> {
        let key = raw.trim_ascii();
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "is {} bytes long; use at least {MIN_KEY_BYTES} random bytes, e.g. `openssl rand \
                 -hex 32`, and give LobeHub the same value as ONLYBOXES_JIT_SIGNING_KEY",
                key.len()
            ));
        }
        Ok(JitKey(key.to_vec()))
    }
}

impl std::fmt::Debug for JitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JitKey(<{} bytes, not shown>)", self.0.len())
    }
}

/// The effective provider configuration.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The JIT signing key.
    pub key: JitKey,
    /// The storage hosts, as written (they are also in `policy.net_allow`).
    pub storage_hosts: Vec<String>,
    /// The storage hosts, parsed, for checking export destinations.
    pub storage_rules: Vec<NetRule>,
    /// Lease when a call gives none.
    pub default_lease: Duration,
    /// Longest lease.
    pub max_lease: Duration,
    /// Sessions at once.
    pub max_sessions: usize,
    /// Commands of one session at once.
    pub max_commands_per_session: usize,
    /// Background commands at once.
    pub max_background: usize,
    /// Bytes of each output stream kept per command (the rest is counted, not kept).
    pub keep_output: u64,
    /// The policy of every session's commands, limits filled in, before the session's own
    /// directories are added.
    pub policy: Policy,
}

/// Builds the provider configuration from the flags (`key_flag`, `host_flags`) and the
/// `[onlyboxes]` table; `None` when no signing key is configured. `limits` fills in the
/// server-wide limits, as for the MCP tools. The caller checks the policy's isolation from the
/// workspace root, as for the tools' policies.
pub fn resolve(
    key_flag: Option<PathBuf>,
    host_flags: &[String],
    file: OnlyboxesFile,
    limits: &dyn Fn(Policy) -> Policy,
    max_workspaces: usize,
) -> anyhow::Result<Option<ProviderConfig>> {
    let Some(key_file) = key_flag.or(file.jit_key_file) else {
        if !host_flags.is_empty() {
            bail!(
                "--onlyboxes-storage-host is set but the Onlyboxes API is off: give the signing \
                 key with --onlyboxes-jit-key-file FILE (or [onlyboxes] jit_key_file)"
            );
        }
        return Ok(None);
    };
    let key = JitKey::load(&key_file)?;

    let mut storage_hosts = file.storage_hosts;
    storage_hosts.extend(host_flags.iter().cloned());
    storage_hosts.dedup();
    let storage_rules = storage_hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            parse_net_rule(&format!("onlyboxes.storage_hosts[{i}]"), h)
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let default_lease = file.default_lease.map_or(DEFAULT_LEASE, Seconds::duration);
    let max_lease = file.max_lease.map_or(DEFAULT_MAX_LEASE, Seconds::duration);
    if default_lease > max_lease {
        bail!(
            "onlyboxes.default_lease ({} s) is longer than onlyboxes.max_lease ({} s)",
            default_lease.as_secs_f64(),
            max_lease.as_secs_f64()
        );
    }
    let positive = |name: &str, v: Option<usize>, default: usize| -> anyhow::Result<usize> {
        match v {
            Some(0) => bail!("onlyboxes.{name}: 0: at least 1 is needed"),
            Some(n) => Ok(n),
            None => Ok(default),
        }
    };
    let max_sessions = positive("max_sessions", file.max_sessions, max_workspaces)?;
    let max_commands_per_session = positive(
        "max_commands_per_session",
        file.max_commands_per_session,
        DEFAULT_COMMANDS_PER_SESSION,
    )?;
    let max_background = positive(
        "max_background",
        file.max_background,
        DEFAULT_MAX_BACKGROUND,
    )?;

    let base = file.policy.unwrap_or_else(|| Policy {
        presets: vec![sandlock_core::Preset::System],
        ..Policy::default()
    });
    if base.timeout.is_some() {
        bail!(
            "onlyboxes.policy.timeout: each call sets its own (timeout_ms, default 120 s, at most \
             600 s); remove timeout from the policy"
        );
    }
    let mut policy = limits(base);
    policy.timeout = None;
    policy.net_allow.extend(storage_hosts.iter().cloned());
    // The policy's max_output is what a command keeps of each stream; the sandbox itself must not
    // stop a command for talking (a background server's log), so its own cap is set out of reach.
    let keep_output = policy.output_cap().bytes();
    policy.max_output = Some(ByteSize(u64::MAX / 2));

    Ok(Some(ProviderConfig {
        key,
        storage_hosts,
        storage_rules,
        default_lease,
        max_lease,
        max_sessions,
        max_commands_per_session,
        max_background,
        keep_output,
        policy,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_key_is_refused_and_whitespace_is_not_part_of_a_key() {
        let e = JitKey::from_bytes(b"short-key\n").unwrap_err();
        assert!(e.contains("9 bytes"), "{e}");
        let k = JitKey::from_bytes(b"  0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(k.bytes(), b"0123456789abcdef0123456789abcdef");
    }

    mod merged {
        use std::time::Duration;

        use sandlock_core::ByteSize;

        use crate::McpArgs;
        use crate::config::{Config, ConfigFile};
        use clap::Parser;

        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: McpArgs,
        }

        fn key_file(name: &str, key: &str) -> String {
            let p =
                std::env::temp_dir().join(format!("sandlock-obx-{name}-{}", std::process::id()));
            std::fs::write(&p, key).unwrap();
            p.display().to_string()
        }

        fn merge(argv: &[&str], toml: &str) -> anyhow::Result<Config> {
            let args = T::parse_from(std::iter::once("t").chain(argv.iter().copied())).a;
            Config::merge(&args, ConfigFile::parse(toml)?, None)
        }

        const KEY: &str = "0123456789abcdef0123456789abcdef\n";

        #[test]
        fn the_table_and_flags_configure_the_api() {
            let k = key_file("table", KEY);
            let c = merge(
                &[
                    "--onlyboxes-storage-host",
                    "minio:9000",
                    "--max-memory",
                    "300M",
                ],
                &format!(
                    "[onlyboxes]\njit_key_file = {k:?}\nstorage_hosts = [\"s3.example.com:443\"]\n\
                     max_lease = 600\n[onlyboxes.policy]\nnet_allow = [\"pypi.org:443\"]\n"
                ),
            )
            .unwrap();
            let o = c.onlyboxes.unwrap();
            assert_eq!(o.storage_hosts, ["s3.example.com:443", "minio:9000"]);
            assert_eq!(o.max_lease, Duration::from_secs(600));
            assert_eq!(
                o.policy.net_allow,
                ["pypi.org:443", "s3.example.com:443", "minio:9000"]
            );
            assert_eq!(o.policy.max_memory, Some(ByteSize::mib(300)));
            assert_eq!(o.keep_output, ByteSize::mib(1).bytes());
            assert!(o.policy.timeout.is_none());
            assert!(merge(&[], "").unwrap().onlyboxes.is_none());
        }

        #[test]
        fn misconfigurations_are_refused_with_the_key_named() {
            let k = key_file("bad", KEY);
            let cases: [(&[&str], String, &str); 6] = [
                (
                    &["--onlyboxes-storage-host", "s3:443"],
                    String::new(),
                    "API is off",
                ),
                (
                    &["--onlyboxes-jit-key-file", &k, "--transport", "stdio"],
                    String::new(),
                    "served over HTTP",
                ),
                (
                    &[
                        "--onlyboxes-jit-key-file",
                        &k,
                        "--onlyboxes-storage-host",
                        "a:b:c:d",
                    ],
                    String::new(),
                    "onlyboxes.storage_hosts[0]",
                ),
                (
                    &["--onlyboxes-jit-key-file", &k],
                    "[onlyboxes.policy]\ntimeout = 5\n".into(),
                    "onlyboxes.policy.timeout",
                ),
                (
                    &[
                        "--onlyboxes-jit-key-file",
                        &k,
                        "--workspace-root",
                        "/tmp/obx-root",
                    ],
                    "[onlyboxes.policy]\nfs_readable = [\"/tmp\"]\n".into(),
                    "onlyboxes.policy.fs_readable[0]",
                ),
                (
                    &["--onlyboxes-jit-key-file", &k],
                    "[onlyboxes]\nmax_commands_per_session = 0\n".into(),
                    "onlyboxes.max_commands_per_session",
                ),
            ];
            for (argv, toml, words) in cases {
                let e = merge(argv, &toml).err().map(|e| format!("{e:#}"));
                assert!(
                    e.as_deref().is_some_and(|e| e.contains(words)),
                    "{argv:?} {toml:?}: {e:?}"
                );
            }
        }
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let k = JitKey::from_bytes(b"0123456789abcdef0123456789abcdef-secret").unwrap();
        let shown = format!("{k:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("0123"),
            "{shown}"
        );
    }
}
