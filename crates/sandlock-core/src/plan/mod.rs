//! The plan: everything a child needs, computed in the parent before anything is spawned.
//!
//! [`SandboxPlan`] is built once per [`crate::Sandbox`]: validated paths, the Landlock ruleset fd,
//! the compiled seccomp program, the base environment (also as the C strings `execve` takes),
//! resource limits. Every run of the sandbox shares it, from any number of threads; nothing in it
//! changes after `Sandbox::new`, so there is nothing to invalidate (a different policy is a
//! different `Sandbox`). [`RunPlan`] adds what one run needs: the resolved program, `argv` as C
//! strings (and `envp` when the command adds variables), and the file descriptor layout. After a
//! `RunPlan` exists, spawning allocates nothing.

mod bpf;
mod command;
mod landlock;
mod seccomp;
mod syscall_table;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use command::RunPlan;
pub(crate) use landlock::{Access, PathRule};
pub(crate) use seccomp::syscall_number;

use crate::coverage;
use crate::error::{Error, PolicyError, SandboxError, Stage};
use crate::kernel::{KernelSupport, Protection};
use crate::policy::{self, ByteSize, Policy, PortRange, Preset};
use crate::supervisor::SocketRules;
use crate::sys::Resource;

/// The default `PATH` of a sandboxed command.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Limits the supervisor enforces for the tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TreeLimits {
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_memory: Option<ByteSize>,
    pub(crate) max_processes: Option<u32>,
    pub(crate) max_threads: Option<u32>,
    pub(crate) max_cpu: Option<Duration>,
    pub(crate) max_output: ByteSize,
    pub(crate) max_disk: Option<ByteSize>,
    /// The writable directories `max_disk` measures.
    pub(crate) disk_roots: Vec<PathBuf>,
}

/// Tasks per process that `pids.max` allows when only `max_processes` is set (see
/// [`TreeLimits::pids_max`]): more than thread pools use (numpy and OpenBLAS start one thread per
/// CPU, Node about a dozen), so the backstop never ends a run the process cap would let live.
pub(crate) const BACKSTOP_TASKS_PER_PROCESS: u32 = 64;

impl TreeLimits {
    /// What a run's cgroup sets `pids.max` to: `max_threads`, or else a backstop for
    /// `max_processes`. The process cap is held by sampling, and a fork bomb that takes the CPU
    /// from the supervisor can outgrow a sampler for seconds (measured under qemu TCG: 8,347
    /// processes before the supervisor's first slice of CPU came round); the kernel's cap bounds
    /// that growth where a cgroup is available.
    pub(crate) fn pids_max(&self) -> Option<u32> {
        self.max_threads.or_else(|| {
            self.max_processes
                .map(|p| p.saturating_mul(BACKSTOP_TASKS_PER_PROCESS))
        })
    }
}

/// The part of a plan shared by every run of one sandbox.
pub(crate) struct SandboxPlan {
    pub(crate) policy: Policy,
    pub(crate) ruleset: Option<OwnedFd>,
    pub(crate) filter: Option<Vec<libc::sock_filter>>,
    /// The filter hands syscalls to the supervisor (it has a listener).
    pub(crate) notify: bool,
    pub(crate) not_enforced: Vec<Protection>,
    /// How each protection is enforced (see [`crate::coverage`]).
    pub(crate) enforcement: Vec<coverage::Enforcement>,
    pub(crate) drop_bounding: Option<u32>,
    pub(crate) cwd: Option<PathBuf>,
    /// Environment before per-run additions.
    pub(crate) env: BTreeMap<String, String>,
    /// `env` as `execve` takes it, for every run that adds no variable of its own.
    pub(crate) envp: Vec<CString>,
    /// `(resource, soft, hard)`.
    pub(crate) rlimits: Vec<(Resource, u64, u64)>,
    pub(crate) limits: TreeLimits,
    /// What the supervisor needs to mediate UNIX connects and TCP listen.
    pub(crate) sockets: SocketRules,
    /// Where each run gets its own cgroup v2, if it does.
    pub(crate) cgroup: Option<crate::cgroup::CgroupPlan>,
    /// The filesystem view (`fs_mount`, `private_tmp`), if the policy has one.
    pub(crate) view: Option<crate::fsview::ViewPlan>,
    /// With a view, the filter is compiled for each run (it names the first `execve`'s path).
    pub(crate) view_filter: Option<seccomp::SeccompPolicy>,
    /// With a private `/tmp`, each run's ruleset also grants its own directory.
    pub(crate) run_ruleset: Option<RunRuleset>,
    /// Which syscalls the filter hands to the stand-ins for Landlock features.
    pub(crate) standin_routes: crate::supervisor::standin::Routes,
}

/// What a Landlock ruleset is built from, kept to build one per run (see
/// [`SandboxPlan::run_ruleset`]).
pub(crate) struct RunRuleset {
    abi: u32,
    paths: Vec<PathRule>,
    connect: Option<Vec<PortRange>>,
    bind: Option<Vec<PortRange>>,
}

impl RunRuleset {
    /// The plan's ruleset plus `extra`.
    pub(crate) fn build(&self, extra: &[PathRule]) -> Result<OwnedFd, SandboxError> {
        let mut paths = self.paths.clone();
        paths.extend_from_slice(extra);
        landlock::build(&landlock::RulesetSpec {
            abi: self.abi,
            paths: &paths,
            connect: self.connect.as_deref(),
            bind: self.bind.as_deref(),
            scope: true,
        })
    }
}

impl SandboxPlan {
    /// Validates `policy` against this kernel and prepares everything that does not depend on the
    /// command.
    pub(crate) fn new(policy: Policy, kernel: KernelSupport) -> Result<SandboxPlan, Error> {
        let mut paths = resolve_paths(&policy)?;
        let http = crate::net::proxy::rules::HttpRules::parse(
            &policy.http_allow,
            &policy.http_deny,
            &policy.http_auth,
        )?;
        // Made before the view, which shows its certificate in the bundle of `http_inject_ca`.
        let authority = crate::net::proxy::authority(&policy, &http)?;
        let files = crate::net::proxy::injected_bundle(&policy, authority.as_ref())?;
        let view = crate::fsview::ViewPlan::new(&policy, &paths, files.as_slice())?;
        if let Some(v) = &view {
            paths.extend(v.rules.iter().cloned());
        }
        let allow = parse_rules(&policy.net_allow, "net_allow")?;
        let deny = parse_rules(&policy.net_deny, "net_deny")?;
        // Landlock filters connects by port only: it holds them too when every rule is a port on
        // any host (and not too many ports); rules by host are the supervisor's alone.
        let landlock_connect: Option<Vec<PortRange>> = (deny.is_empty()
            && allow
                .iter()
                .all(|r| r.host == crate::net::rules::HostPattern::Any)
            && allow.iter().map(|r| r.ports.count()).sum::<usize>() <= 4096)
            .then(|| allow.iter().map(|r| r.ports).collect());
        let net = crate::net::NetPolicy::new(allow, deny, &http);
        let bind = parse_list(
            &policy.net_allow_bind,
            "net_allow_bind",
            policy::parse_bind_rule,
        )?;
        let extra_deny = resolve_syscalls(&policy.extra_deny_syscalls)?;
        let mut env = base_env(&policy)?;
        if net.serves_dns() {
            // The C library asks its nameserver over TCP, where the supervisor answers it for the
            // allowed names (see net/dns.rs); UDP stays refused.
            env.entry("RES_OPTIONS".to_string())
                .or_insert_with(|| "use-vc".to_string());
            net.names().resolve_all();
        }
        let cwd = match &policy.cwd {
            // A working directory in the view is found for each run (a private /tmp is made then).
            Some(c) if view.as_ref().is_some_and(|v| v.covers_path(&lexical(c))) => {
                Some(lexical(c))
            }
            Some(c) => Some(canonical("cwd", c, true)?),
            None => None,
        };
        let mut limits = tree_limits(&policy)?;
        limits.disk_roots = paths
            .iter()
            .filter(|r| r.access == Access::Write && !r.optional && r.path.is_dir())
            .map(|r| r.path.clone())
            .collect();
        let rlimits = rlimits(&policy)?;
        let cgroup_parent = match &policy.cgroup_parent {
            Some(p) if policy.cgroup != crate::policy::CgroupMode::Off => {
                Some(canonical("cgroup_parent", p, true)?)
            }
            _ => None,
        };
        let cgroup = crate::cgroup::plan(policy.cgroup, cgroup_parent.as_deref(), &limits)?;

        // Connecting to a UNIX socket takes write permission on it, and the stand-ins act only
        // beneath writable paths, so these are the roots the supervisor resolves paths under.
        let writable: Vec<PathBuf> = paths
            .iter()
            .filter(|r| r.access == Access::Write && !r.optional)
            .map(|r| r.path.clone())
            .collect();
        let tcp = net.any() || http.any() || !bind.is_empty();
        let needs = coverage::Needs {
            tcp,
            // Only a kernel without Landlock's ioctl right needs to know (and pays for the look).
            risky_devices: if kernel.supports(Protection::FilesystemIoctl) {
                Vec::new()
            } else {
                read_only_devices(&paths)
            },
        };
        let enforcement = coverage::enforcement(&kernel, &needs);
        let missing: Vec<&coverage::Enforcement> = enforcement
            .iter()
            .filter(|e| !e.mechanism.enforced())
            .collect();
        if !missing.is_empty() && !policy.best_effort {
            return Err(unsupported(&missing, &kernel).into());
        }
        let missing: Vec<Protection> = missing.iter().map(|e| e.protection).collect();

        let ruleset = if kernel.supports(Protection::Filesystem) {
            Some(landlock::build(&landlock::RulesetSpec {
                abi: kernel.landlock_abi,
                paths: &paths,
                connect: landlock_connect.as_deref().filter(|_| tcp),
                bind: tcp.then_some(bind.as_slice()),
                scope: true,
            })?)
        } else {
            None
        };
        let run_ruleset =
            (ruleset.is_some() && view.as_ref().is_some_and(|v| v.per_run())).then(|| RunRuleset {
                abi: kernel.landlock_abi,
                paths: paths.clone(),
                connect: landlock_connect.clone().filter(|_| tcp),
                bind: tcp.then(|| bind.clone()),
            });
        let notify =
            kernel.supports(Protection::SeccompNotify) && kernel.supports(Protection::Seccomp);
        if view.is_some() && !notify {
            return Err(SandboxError::new(
                Stage::Unsupported,
                None,
                "fs_mount, private_tmp, workdir and http_inject_ca need seccomp user notification (Linux 5.0), which this \
                 kernel or the host's seccomp profile does not offer; run `sandlock check`",
            )
            .into());
        }
        let mut view_filter = None;
        let reach: Vec<PathBuf> = paths.iter().map(|r| r.path.clone()).collect();
        let proxy = match authority {
            Some(a) => Some(crate::net::proxy::for_policy(
                &policy, http, a, &net, &reach, notify,
            )?),
            None => None,
        };
        let filter = if kernel.supports(Protection::Seccomp) {
            let spec = seccomp::SeccompPolicy {
                tcp,
                mediate: notify,
                scope_signals: !kernel.supports(Protection::ScopeSignal),
                emulate_bind: tcp && !kernel.supports(Protection::NetworkTcp),
                guard_truncate: !kernel.supports(Protection::FilesystemTruncate),
                guard_ioctl_open: !kernel.supports(Protection::FilesystemIoctl),
                extra_deny,
                view: view.is_some(),
                exec_ptr: 0,
            };
            let compiled = spec
                .compile()
                .map_err(|e| SandboxError::new(Stage::SeccompBuild, None, e))?;
            if view.is_some() {
                view_filter = Some(spec);
            }
            Some(compiled)
        } else {
            None
        };

        Ok(SandboxPlan {
            policy,
            ruleset,
            filter,
            notify,
            not_enforced: missing,
            enforcement,
            drop_bounding: bounding_to_drop(),
            cwd,
            envp: command::envp(&env)?,
            env,
            rlimits,
            limits,
            sockets: SocketRules {
                held: std::sync::Arc::new(crate::supervisor::Roots::open(&writable)),
                roots: writable,
                net,
                tcp_listen: !bind.is_empty(),
                bind,
                proxy,
                run_log: std::sync::Arc::default(),
            },
            cgroup,
            standin_routes: crate::supervisor::standin::Routes {
                truncate: notify && !kernel.supports(Protection::FilesystemTruncate),
                bind: notify && tcp && !kernel.supports(Protection::NetworkTcp),
            },
            view,
            view_filter,
            run_ruleset,
        })
    }
}

fn unsupported(missing: &[&coverage::Enforcement], kernel: &KernelSupport) -> SandboxError {
    let list: Vec<String> = missing
        .iter()
        .map(|e| format!("{} ({})", e.protection, e.detail))
        .collect();
    let have = if kernel.landlock_abi == 0 {
        "this kernel has no Landlock".to_string()
    } else {
        format!("this kernel offers Landlock ABI {}", kernel.landlock_abi)
    };
    SandboxError::new(
        Stage::Unsupported,
        None,
        format!(
            "cannot enforce {}; {have}. Set best_effort to run without them (the outcome will list \
             them), or run `sandlock check`",
            list.join("; ")
        ),
    )
}

/// Device files the policy's read-only paths reach, as the sandbox (our own uid) could open them.
fn read_only_devices(paths: &[PathRule]) -> Vec<PathBuf> {
    let read: Vec<PathBuf> = paths
        .iter()
        .filter(|r| r.access == Access::Read)
        .map(|r| r.path.clone())
        .collect();
    // SAFETY: getuid/getgid take no arguments.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let groups = crate::sys::groups();
    coverage::risky_devices(&read, (uid, gid, &groups))
}

fn parse_rules(
    items: &[String],
    field: &str,
) -> Result<Vec<crate::net::rules::NetRule>, PolicyError> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| crate::net::rules::parse_net_rule(&format!("{field}[{i}]"), s))
        .collect()
}

fn parse_list(
    items: &[String],
    field: &str,
    parse: fn(&str, &str) -> Result<PortRange, PolicyError>,
) -> Result<Vec<PortRange>, PolicyError> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| parse(&format!("{field}[{i}]"), s))
        .collect()
}

/// `path` made absolute against the current directory, with `.` and `..` taken lexically (for a
/// path that exists in the view only, where symlinks are the view's to resolve).
pub(crate) fn lexical(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Canonicalises `path`, naming `field` if it does not exist (or is not a directory when one is needed).
fn canonical(field: &str, path: &Path, want_dir: bool) -> Result<PathBuf, PolicyError> {
    let shown = path.display().to_string();
    let p = std::fs::canonicalize(path).map_err(|e| {
        let reason = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
            std::io::ErrorKind::PermissionDenied => {
                "permission denied while resolving it".to_string()
            }
            _ => e.to_string(),
        };
        PolicyError::new(field, shown.clone(), reason)
    })?;
    if want_dir && !p.is_dir() {
        return Err(PolicyError::new(field, shown, "not a directory"));
    }
    Ok(p)
}

fn resolve_paths(policy: &Policy) -> Result<Vec<PathRule>, PolicyError> {
    let mut map: BTreeMap<PathBuf, (Access, bool)> = BTreeMap::new();
    let mut add = |p: PathBuf, a: Access, optional: bool| {
        let e = map.entry(p).or_insert((a, optional));
        *e = (e.0.max(a), e.1 && optional);
    };
    for (i, p) in policy.fs_readable.iter().enumerate() {
        add(
            canonical(&format!("fs_readable[{i}]"), p, false)?,
            Access::Read,
            false,
        );
    }
    for (i, p) in policy.fs_writable.iter().enumerate() {
        add(
            canonical(&format!("fs_writable[{i}]"), p, false)?,
            Access::Write,
            false,
        );
    }
    // Preset paths are fixed system locations: they are opened as they are (the rule lands on the
    // inode a symlink like /bin points to), and the ones this machine lacks are skipped. Not
    // canonicalising them saves a hundred syscalls per sandbox.
    for preset in &policy.presets {
        match preset {
            Preset::System => {
                let (read, write) = policy::system_paths();
                for (list, access) in [(read, Access::Read), (write, Access::Write)] {
                    for p in list {
                        add(PathBuf::from(p), access, true);
                    }
                }
            }
        }
    }
    Ok(map
        .into_iter()
        .map(|(path, (access, optional))| PathRule {
            path,
            access,
            optional,
        })
        .collect())
}

fn resolve_syscalls(names: &[String]) -> Result<Vec<u32>, PolicyError> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            syscall_number(n.trim()).ok_or_else(|| {
                PolicyError::new(
                    format!("extra_deny_syscalls[{i}]"),
                    n,
                    format!("no such syscall on {}", std::env::consts::ARCH),
                )
            })
        })
        .collect()
}

/// The environment every run starts from: a minimal `PATH`, `LANG` and `HOME`, then the host
/// variables named in `pass_env`, then the policy's `env`.
fn base_env(policy: &Policy) -> Result<BTreeMap<String, String>, PolicyError> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), DEFAULT_PATH.to_string());
    env.insert("LANG".to_string(), "C.UTF-8".to_string());
    // HOME and TMPDIR point at the first writable directory, so that tools which write caches
    // and temporary files there work without extra configuration.
    let home = policy
        .fs_writable
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .find(|p| p.is_dir())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/".to_string());
    env.insert("HOME".to_string(), home.clone());
    if policy.private_tmp {
        env.insert("TMPDIR".to_string(), "/tmp".to_string());
    } else if home != "/" {
        env.insert("TMPDIR".to_string(), home);
    }
    for (i, name) in policy.pass_env.iter().enumerate() {
        check_env_name(&format!("pass_env[{i}]"), name)?;
        if let Some(v) = std::env::var_os(name) {
            let v = v.into_string().map_err(|_| {
                PolicyError::new(
                    format!("pass_env[{i}]"),
                    name,
                    "the host's value is not UTF-8",
                )
            })?;
            env.insert(name.clone(), v);
        }
    }
    for (k, v) in &policy.env {
        check_env_name(&format!("env.{k}"), k)?;
        if v.contains('\0') {
            return Err(PolicyError::new(
                format!("env.{k}"),
                v,
                "values cannot contain NUL",
            ));
        }
        env.insert(k.clone(), v.clone());
    }
    Ok(env)
}

pub(crate) fn check_env_name(field: &str, name: &str) -> Result<(), PolicyError> {
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        return Err(PolicyError::new(
            field,
            name,
            "not a valid environment variable name (empty, or contains '=' or NUL)",
        ));
    }
    Ok(())
}

fn tree_limits(policy: &Policy) -> Result<TreeLimits, PolicyError> {
    for (field, v) in [
        ("max_processes", policy.max_processes),
        ("max_threads", policy.max_threads),
    ] {
        if v == Some(0) {
            return Err(PolicyError::new(field, "0", "must be at least 1"));
        }
    }
    if let Some(m) = policy.max_memory {
        if m.bytes() < 1 << 20 {
            return Err(PolicyError::new(
                "max_memory",
                m.to_string(),
                "must be at least 1M",
            ));
        }
    }
    Ok(TreeLimits {
        timeout: policy.timeout.map(|t| t.duration()),
        max_memory: policy.max_memory,
        max_processes: policy.max_processes,
        max_threads: policy.max_threads,
        max_cpu: policy.max_cpu.map(|t| t.duration()),
        max_output: policy.output_cap(),
        max_disk: policy.max_disk,
        disk_roots: Vec::new(),
    })
}

/// Per-process kernel limits. `RLIMIT_CORE` is always 0: a crashing sandbox must not write a core
/// file into a writable directory.
fn rlimits(policy: &Policy) -> Result<Vec<(Resource, u64, u64)>, PolicyError> {
    let mut out = vec![(libc::RLIMIT_CORE, 0, 0)];
    let mut want = |field: &str, res: Resource, value: u64| -> Result<(), PolicyError> {
        let hard = host_hard_limit(res);
        if value > hard {
            return Err(PolicyError::new(
                field,
                value.to_string(),
                format!("above the host's hard limit ({hard}); lower it or raise the host's limit"),
            ));
        }
        out.push((res, value, value));
        Ok(())
    };
    if let Some(n) = policy.max_open_files {
        if n < 4 {
            return Err(PolicyError::new(
                "max_open_files",
                n.to_string(),
                "must be at least 4",
            ));
        }
        want("max_open_files", libc::RLIMIT_NOFILE, u64::from(n))?;
    }
    // One write() can overshoot max_disk by no more than a file can grow.
    let fsize = match (policy.max_file_size, policy.max_disk) {
        // max_disk + 1 byte: a single file that fills the cap is still seen to exceed it.
        (Some(f), Some(d)) if f.bytes() <= d.bytes() => Some(("max_file_size", f)),
        (_, Some(d)) => Some(("max_disk", ByteSize(d.bytes().saturating_add(1)))),
        (Some(f), None) => Some(("max_file_size", f)),
        (None, None) => None,
    };
    if let Some((field, s)) = fsize {
        want(field, libc::RLIMIT_FSIZE, s.bytes())?;
    }
    Ok(out)
}

fn host_hard_limit(res: Resource) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct rlimit.
    if unsafe { libc::getrlimit(res, &mut lim) } == 0 {
        lim.rlim_max
    } else {
        u64::MAX
    }
}

/// Whether the child can (and so must) empty its capability bounding set: only with CAP_SETPCAP.
fn bounding_to_drop() -> Option<u32> {
    const CAP_SETPCAP: u32 = 8;
    let (effective, _, _) = crate::sys::capget().ok()?;
    if effective & (1 << CAP_SETPCAP) == 0 {
        return None;
    }
    let last = crate::sys::cap_last_cap();
    (0..=last).any(crate::sys::in_bounding_set).then_some(last)
}

/// Converts a path to a NUL-terminated C string.
pub(crate) fn c_path(field: &str, p: &Path) -> Result<CString, PolicyError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| PolicyError::new(field, p.display().to_string(), "contains a NUL byte"))
}
