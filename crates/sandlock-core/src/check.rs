//! The doctor: what this machine lets sandlock enforce, and why.
//!
//! `sandlock check`, Python's `sandlock.check()` and the MCP server's readiness probe all print this
//! report. It probes the kernel, detects a restrictive runtime seccomp profile (as in a Kubernetes
//! pod with `RuntimeDefault`) with harmless syscalls, reads our own credentials, and can prove the
//! whole path works by running `/bin/true` in a sandbox.

use std::fmt;
use std::time::Instant;

use serde::Serialize;

use crate::coverage::{Mechanism, Needs};
use crate::kernel::{KernelSupport, Protection, landlock_abi_linux};
use crate::policy::{Policy, Preset};
use crate::sandbox::{Command, Sandbox};

/// One line of the protection table.
#[derive(Debug, Clone, Serialize)]
pub struct ProtectionStatus {
    /// The protection.
    pub protection: Protection,
    /// Whether sandlock enforces it on this kernel (by any mechanism).
    pub available: bool,
    /// What enforces it here: Landlock, seccomp, the supervisor standing in for a Landlock
    /// feature the kernel lacks, or nothing (see [`crate::coverage`]).
    pub mechanism: Mechanism,
    /// How, or why not.
    pub detail: String,
    /// What the kernel needs for Landlock to enforce it natively.
    pub requires: String,
    /// What it does.
    pub description: &'static str,
}

/// What a seccomp profile around us does to the syscalls that tell container runtimes apart.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeProfile {
    /// `Seccomp:` from `/proc/self/status`: 0 none, 1 strict, 2 filter.
    pub seccomp_mode: u32,
    /// Number of seccomp filters already applied to us.
    pub seccomp_filters: u32,
    /// `clone3` answers ENOSYS (container runtimes do this so glibc falls back to `clone`).
    pub clone3_enosys: bool,
    /// `pidfd_getfd` is refused (RuntimeDefault refuses it; sandlock never needs it).
    pub pidfd_getfd_refused: bool,
    /// `unshare` is refused (no namespaces: the case sandlock is built for).
    pub unshare_refused: bool,
    /// Our summary: a container runtime's default profile appears to be in force.
    pub restrictive: bool,
}

/// Our own credentials.
#[derive(Debug, Clone, Serialize)]
pub struct Credentials {
    /// Real user id.
    pub uid: u32,
    /// Effective user id.
    pub euid: u32,
    /// Effective capability set (hex, as in `/proc/self/status`).
    pub cap_effective: String,
    /// Bounding capability set (hex).
    pub cap_bounding: String,
    /// `no_new_privs` is already set (it is in a pod with `allowPrivilegeEscalation: false`).
    pub no_new_privs: bool,
}

/// Result of actually running `/bin/true` in a default sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct LiveTest {
    /// It ran and exited 0.
    pub ok: bool,
    /// Milliseconds from spawn to outcome.
    pub millis: f64,
    /// The error, if it did not work.
    pub error: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `uname -r`.
    pub kernel: String,
    /// CPU architecture.
    pub arch: &'static str,
    /// Landlock ABI (0 if unavailable).
    pub landlock_abi: u32,
    /// Why Landlock is unavailable, if it is.
    pub landlock_status: String,
    /// seccomp filters available.
    pub seccomp: bool,
    /// seccomp user notification available.
    pub seccomp_notify: bool,
    /// Every protection and whether it is available.
    pub protections: Vec<ProtectionStatus>,
    /// The seccomp profile around us.
    pub runtime_profile: RuntimeProfile,
    /// Who we are.
    pub credentials: Credentials,
    /// How tree-wide memory and process limits will be enforced (by default, `cgroup = "auto"`).
    pub limit_mechanism: String,
    /// A default sandbox actually ran, if asked.
    pub live_test: Option<LiveTest>,
    /// One-line conclusion.
    pub verdict: String,
    /// Every protection sandlock will enforce with a default policy.
    pub enforced: Vec<Protection>,
    /// Every protection it cannot (a default policy fails unless `best_effort`).
    pub not_enforced: Vec<Protection>,
}

/// Builds the report; with `live`, also runs `/bin/true` in a sandbox with the `system` preset.
pub fn report(live: bool) -> Report {
    let k = KernelSupport::detect();
    // The default policy (the system preset) as it would be enforced, with TCP rules, so that the
    // table also says who holds port rules.
    let needs = Needs {
        tcp: true,
        risky_devices: Vec::new(),
    };
    let protections: Vec<ProtectionStatus> = crate::coverage::enforcement(&k, &needs)
        .into_iter()
        .map(|e| ProtectionStatus {
            protection: e.protection,
            available: e.mechanism.enforced(),
            mechanism: e.mechanism,
            detail: e.detail,
            requires: e.protection.requirement(),
            description: e.protection.describe(),
        })
        .collect();
    let (enforced, not_enforced): (Vec<_>, Vec<_>) = protections
        .iter()
        .map(|s| (s.protection, s.available))
        .partition(|(_, a)| *a);
    let enforced: Vec<Protection> = enforced.into_iter().map(|(p, _)| p).collect();
    let not_enforced: Vec<Protection> = not_enforced.into_iter().map(|(p, _)| p).collect();

    let landlock_status = match (k.landlock_abi, k.landlock_errno) {
        (0, Some(libc::ENOSYS)) => "not built into this kernel (CONFIG_SECURITY_LANDLOCK)".into(),
        (0, Some(libc::EOPNOTSUPP)) => {
            "built but disabled at boot (add landlock to the lsm= kernel parameter)".into()
        }
        (0, Some(e)) => format!("unavailable ({})", crate::error::errno_name(e)),
        (abi, _) => {
            let cap = crate::kernel::landlock_abi_cap()
                .map(|c| format!(", capped at {c} by {}", crate::kernel::LANDLOCK_ABI_ENV))
                .unwrap_or_default();
            if abi == 0 {
                format!("not used{cap}")
            } else {
                format!("ABI {abi} (as in {}){cap}", landlock_abi_linux(abi))
            }
        }
    };

    let live_test = live.then(run_live_test);
    let verdict = match (&live_test, not_enforced.is_empty()) {
        (Some(t), _) if !t.ok => format!(
            "sandlock cannot run here: {}",
            t.error.as_deref().unwrap_or("the test run failed")
        ),
        (_, true) => {
            let standins: Vec<&str> = protections
                .iter()
                .filter(|p| {
                    p.mechanism == Mechanism::Supervisor && p.protection.landlock_abi().is_some()
                })
                .map(|p| p.protection.as_str())
                .collect();
            if standins.is_empty() {
                "every protection is enforced".to_string()
            } else {
                format!(
                    "every protection is enforced ({} by the supervisor, standing in for Landlock \
                     features this kernel lacks)",
                    standins.join(", ")
                )
            }
        }
        (_, false) => format!(
            "partial: {} unavailable; a policy that needs them fails closed unless best_effort \
             is set",
            not_enforced
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };

    Report {
        kernel: kernel_release(),
        arch: std::env::consts::ARCH,
        landlock_abi: k.landlock_abi,
        landlock_status,
        seccomp: k.seccomp,
        seccomp_notify: k.seccomp_notify,
        protections,
        runtime_profile: runtime_profile(),
        credentials: credentials(),
        limit_mechanism: limit_mechanism(&crate::cgroup::probe(None)),
        live_test,
        verdict,
        enforced,
        not_enforced,
    }
}

fn limit_mechanism(p: &crate::cgroup::CgroupProbe) -> String {
    const SUPERVISOR: &str = "supervisor (process-group sampling; no cgroups needed)";
    let dir = p
        .parent
        .as_ref()
        .map_or(String::new(), |d| d.display().to_string());
    let kernel: Vec<&str> = [("memory", "memory.max"), ("pids", "pids.max")]
        .iter()
        .filter(|(c, _)| p.controllers.iter().any(|x| x == c))
        .map(|(_, f)| *f)
        .collect();
    match (&p.problem, kernel.is_empty()) {
        (Some(problem), _) => format!("{SUPERVISOR}; cgroup v2 not used: {problem}"),
        (None, true) => format!(
            "{SUPERVISOR}; cgroup v2 at {dir} is writable but offers neither the memory nor the \
             pids controller to child cgroups, so cgroup = \"auto\" does not use it"
        ),
        (None, false) => format!(
            "cgroup v2 at {dir} ({}) where max_memory / max_threads / max_processes are set, plus the supervisor",
            kernel.join(", ")
        ),
    }
}

fn run_live_test() -> LiveTest {
    let t0 = Instant::now();
    let policy = Policy {
        presets: vec![Preset::System],
        best_effort: true,
        ..Policy::default()
    };
    let result = Sandbox::new(policy).and_then(|s| s.run(Command::new(["/bin/true"])));
    let millis = t0.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(o) if o.success() => LiveTest {
            ok: true,
            millis,
            error: None,
        },
        Ok(o) => LiveTest {
            ok: false,
            millis,
            error: Some(format!(
                "/bin/true ended with {} (code {:?})",
                o.reason, o.exit_code
            )),
        },
        Err(e) => LiveTest {
            ok: false,
            millis,
            error: Some(e.to_string()),
        },
    }
}

fn kernel_release() -> String {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid utsname to fill.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    // SAFETY: uname NUL-terminates the release field.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn status_field(name: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

fn runtime_profile() -> RuntimeProfile {
    // Harmless probes: each either reaches the kernel and fails on its arguments, or is refused by a
    // filter before it runs. clone3 with a NULL struct fails with EFAULT/EINVAL when reached.
    let probe = |nr: libc::c_long, a: [usize; 3]| -> i32 {
        // SAFETY: every probe below passes arguments the kernel rejects before doing anything.
        let r = unsafe { libc::syscall(nr, a[0], a[1], a[2]) };
        if r < 0 { crate::sys::errno() } else { 0 }
    };
    let clone3 = probe(libc::SYS_clone3, [0, 0, 0]);
    let getfd = probe(
        libc::SYS_pidfd_getfd,
        [usize::MAX >> 33, usize::MAX >> 33, 0],
    );
    // unshare with an invalid flag (CLONE_VM) fails EINVAL when reached, EPERM when filtered.
    let unshare = probe(libc::SYS_unshare, [libc::CLONE_VM as usize, 0, 0]);
    let num = |f: &str| status_field(f).and_then(|v| v.parse().ok()).unwrap_or(0);
    let clone3_enosys = clone3 == libc::ENOSYS;
    let pidfd_getfd_refused = getfd == libc::EPERM;
    let unshare_refused = unshare == libc::EPERM;
    RuntimeProfile {
        seccomp_mode: num("Seccomp"),
        seccomp_filters: num("Seccomp_filters"),
        clone3_enosys,
        pidfd_getfd_refused,
        unshare_refused,
        restrictive: clone3_enosys && (pidfd_getfd_refused || unshare_refused),
    }
}

fn credentials() -> Credentials {
    // SAFETY: getuid/geteuid/prctl(PR_GET_NO_NEW_PRIVS) take no pointers.
    let (uid, euid, nnp) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1,
        )
    };
    Credentials {
        uid,
        euid,
        cap_effective: status_field("CapEff").unwrap_or_default(),
        cap_bounding: status_field("CapBnd").unwrap_or_default(),
        no_new_privs: nnp,
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        writeln!(f, "kernel        {} ({})", self.kernel, self.arch)?;
        writeln!(f, "landlock      {}", self.landlock_status)?;
        writeln!(
            f,
            "seccomp       filters: {}, user notification: {}",
            yes(self.seccomp),
            yes(self.seccomp_notify)
        )?;
        let rp = &self.runtime_profile;
        writeln!(
            f,
            "runtime       {} (seccomp mode {}, {} filter(s); clone3 ENOSYS: {}, pidfd_getfd refused: {}, unshare refused: {})",
            if rp.restrictive {
                "restrictive container profile detected"
            } else {
                "no restrictive profile detected"
            },
            rp.seccomp_mode,
            rp.seccomp_filters,
            yes(rp.clone3_enosys),
            yes(rp.pidfd_getfd_refused),
            yes(rp.unshare_refused),
        )?;
        let c = &self.credentials;
        writeln!(
            f,
            "credentials   uid {} (euid {}), CapEff {}, CapBnd {}, no_new_privs {}",
            c.uid,
            c.euid,
            c.cap_effective,
            c.cap_bounding,
            yes(c.no_new_privs)
        )?;
        writeln!(f, "limits        {}", self.limit_mechanism)?;
        writeln!(f)?;
        writeln!(f, "protections")?;
        for p in &self.protections {
            writeln!(
                f,
                "  {} {:<20} {:<11} {}",
                if p.available { "[x]" } else { "[ ]" },
                p.protection.as_str(),
                p.mechanism.as_str(),
                p.description,
            )?;
            let standin =
                p.protection.landlock_abi().is_some() && p.mechanism != Mechanism::Landlock;
            if standin || !p.available {
                writeln!(f, "      {:<31} {}", "", p.detail)?;
            }
        }
        if let Some(t) = &self.live_test {
            writeln!(f)?;
            match &t.error {
                None => writeln!(
                    f,
                    "live test     /bin/true ran confined in {:.1} ms",
                    t.millis
                )?,
                Some(e) => writeln!(f, "live test     FAILED: {e}")?,
            }
        }
        writeln!(f)?;
        write!(f, "verdict       {}", self.verdict)
    }
}
