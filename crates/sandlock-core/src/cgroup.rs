//! The cgroup v2 backend: where a cgroup v2 directory is delegated to us and writable, each run gets
//! its own child cgroup, and the kernel enforces what the supervisor otherwise samples.
//!
//! - `memory.max` (with `memory.swap.max = 0` and `memory.oom.group = 1`) for `max_memory`: the
//!   kernel refuses to let the tree grow past the cap, and its OOM killer ends the whole sandbox;
//!   `memory.events` tells the supervisor that this is what happened (reason `memory`).
//! - `pids.max` for `max_threads` (the pids controller counts tasks, that is threads), or, when
//!   only `max_processes` is set, as a backstop 64 tasks per allowed process: the supervisor
//!   holds the process cap by sampling, and the kernel's cap keeps a fork bomb from outgrowing a
//!   sampler it starves of CPU.
//! - `cgroup.kill` ends every member at once, and `cpu.stat` gives the CPU time of every process
//!   that ever ran in it, including ones that exited between samples.
//!
//! The supervisor mechanism (process group, user notification, sampling) keeps running beside it:
//! it is what holds `max_processes`, and it is the second line for memory and threads.
//!
//! Where it applies: a systemd unit with `Delegate=yes`, a container given a writable cgroup
//! namespace, a root host with controllers in the v2 hierarchy, or an operator-prepared
//! `cgroup_parent`. It does not apply in a restricted pod: the cgroup filesystem is read-only there,
//! and `cgroup = "auto"` (the default) then uses the supervisor alone.
//!
//! The child joins its cgroup itself, by writing `0` to the new cgroup's `cgroup.procs` (a
//! descriptor opened here) before it does anything else, so nothing the sandbox starts can be
//! created outside it. `CLONE_INTO_CGROUP` would do this atomically, but it needs `clone3`, which
//! the spawn path does not use (see `spawn/child.rs`).

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{SandboxError, Stage};
use crate::plan::TreeLimits;
use crate::policy::CgroupMode;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Where runs of one sandbox get their cgroups, decided once per sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupPlan {
    /// The delegated directory each run's cgroup is created in.
    pub(crate) parent: PathBuf,
    /// `memory.max` enforces `max_memory`.
    pub(crate) memory: bool,
    /// `pids.max` enforces `max_threads` (or backs `max_processes` up).
    pub(crate) pids: bool,
    /// `cgroup = "require"`: a run that cannot get its cgroup fails instead of falling back.
    pub(crate) required: bool,
}

/// What this machine offers, for `sandlock check` and for the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupProbe {
    /// The directory sandbox cgroups would be created in, if a cgroup v2 one was found.
    pub parent: Option<PathBuf>,
    /// Whether this process may create cgroups there and move processes into them.
    pub writable: bool,
    /// Controllers a child cgroup there gets (`memory`, `pids`, ...).
    pub controllers: Vec<String>,
    /// Why cgroups cannot be used, when they cannot.
    pub problem: Option<String>,
}

/// Looks at the cgroup v2 hierarchy: `parent` if given, else this process's own cgroup.
pub fn probe(parent: Option<&Path>) -> CgroupProbe {
    let dir = match parent {
        Some(p) => {
            if !is_cgroup2(p) {
                return CgroupProbe {
                    parent: Some(p.to_path_buf()),
                    writable: false,
                    controllers: Vec::new(),
                    problem: Some(format!("{} is not a cgroup v2 directory", p.display())),
                };
            }
            p.to_path_buf()
        }
        None => match own_cgroup_dir() {
            Ok(d) => d,
            Err(problem) => {
                return CgroupProbe {
                    parent: None,
                    writable: false,
                    controllers: Vec::new(),
                    problem: Some(problem),
                };
            }
        },
    };
    let writable = writable(&dir);
    // A controller reaches a child cgroup only once enabled in the parent's subtree_control. In a
    // parent the operator gave us we enable what it offers (the kernel refuses while the parent
    // holds processes, which is fine); our own cgroup we leave as it is: changing it would change
    // the host's configuration (in the root cgroup, for every service on the machine).
    let offered = read_words(&dir.join("cgroup.controllers"));
    let mut enabled = read_words(&dir.join("cgroup.subtree_control"));
    if writable && parent.is_some() {
        for c in ["memory", "pids"] {
            if offered.iter().any(|o| o == c)
                && !enabled.iter().any(|e| e == c)
                && std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}")).is_ok()
            {
                enabled.push(c.to_string());
            }
        }
    }
    let problem = if writable {
        None
    } else {
        Some(format!(
            "{} is not writable by this process (the cgroup is not delegated, or the cgroup \
             filesystem is read-only, as in a restricted pod)",
            dir.display()
        ))
    };
    CgroupProbe {
        parent: Some(dir),
        writable,
        controllers: enabled,
        problem,
    }
}

/// Decides how the runs of a sandbox use cgroups.
pub(crate) fn plan(
    mode: CgroupMode,
    parent: Option<&Path>,
    limits: &TreeLimits,
) -> Result<Option<CgroupPlan>, SandboxError> {
    if mode == CgroupMode::Off {
        return Ok(None);
    }
    let required = mode == CgroupMode::Require;
    let want_memory = limits.max_memory.is_some();
    let want_pids = limits.pids_max().is_some();
    // Automatically, a cgroup is worth its cost (a mkdir, a migration, an rmdir per run) only when
    // it enforces a limit the kernel would otherwise leave to sampling: without one, do not even
    // look.
    if !required && !want_memory && !want_pids {
        return Ok(None);
    }
    let p = probe(parent);
    let fail = |what: String| {
        SandboxError::new(
            Stage::Cgroup,
            None,
            format!(
                "{what}; set cgroup = \"auto\" to let the supervisor enforce the limits instead, \
                 or give a delegated cgroup_parent"
            ),
        )
    };
    let Some(dir) = p.parent.clone().filter(|_| p.writable) else {
        return if required {
            Err(fail(format!(
                "cgroup = \"require\", but no usable cgroup v2 directory: {}",
                p.problem.unwrap_or_default()
            )))
        } else {
            Ok(None)
        };
    };
    let has = |c: &str| p.controllers.iter().any(|x| x == c);
    // Moving the child into a cpuset cgroup rebinds the memory policy of its mm, and until execve
    // that mm is the host's (CLONE_VM): never do that to the host.
    if has("cpuset") {
        let why = format!(
            "the cpuset controller is enabled for child cgroups of {}: moving a process there \
             would rebind the host's memory policy (the child shares the host's memory until it \
             execs)",
            dir.display()
        );
        return if required { Err(fail(why)) } else { Ok(None) };
    }
    if required {
        for (want, c, field) in [
            (want_memory, "memory", "max_memory"),
            (
                want_pids,
                "pids",
                if limits.max_threads.is_some() {
                    "max_threads"
                } else {
                    "max_processes"
                },
            ),
        ] {
            if want && !has(c) {
                return Err(fail(format!(
                    "cgroup = \"require\" and {field} is set, but the {c} controller is not \
                     enabled for child cgroups of {} (cgroup.subtree_control: {:?})",
                    dir.display(),
                    p.controllers.join(" ")
                )));
            }
        }
    }
    let memory = want_memory && has("memory");
    let pids = want_pids && has("pids");
    if !required && !memory && !pids {
        return Ok(None);
    }
    remove_stale(&dir);
    Ok(Some(CgroupPlan {
        parent: dir,
        memory,
        pids,
        required,
    }))
}

/// One run's cgroup. Dropping it kills what is left in it and removes it.
#[derive(Debug)]
pub(crate) struct RunCgroup {
    dir: PathBuf,
    procs: OwnedFd,
    /// The directory itself, held with `flock(LOCK_EX)` for as long as the run's cgroup is ours:
    /// another host cleaning up (`remove_stale`) knows a cgroup is abandoned only when it can take
    /// the lock, whatever pid namespace either of us is in.
    _lock: OwnedFd,
    memory: bool,
    pids: bool,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A random word per host process, so that names never collide across pid namespaces or with a
/// previous host that had the same pid.
fn nonce() -> u64 {
    static NONCE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NONCE.get_or_init(|| {
        let mut b = [0u8; 8];
        // SAFETY: getrandom fills the buffer we own.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        if n == 8 {
            u64::from_ne_bytes(b)
        } else {
            // getrandom cannot fail for 8 bytes once the pool is ready; the time still differs
            // between hosts.
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        }
    })
}

impl RunCgroup {
    /// Creates the cgroup and writes the limits into it.
    pub(crate) fn create(
        plan: &CgroupPlan,
        limits: &TreeLimits,
    ) -> Result<RunCgroup, SandboxError> {
        let err = |e: std::io::Error, what: &str, dir: &Path| {
            SandboxError::io(Stage::Cgroup, &e, what.to_string())
                .with_detail(dir.display().to_string())
        };
        // Between our mkdir and our lock, another host's `remove_stale` may see the new cgroup
        // unlocked and remove it: then the path no longer leads to what we locked, and we retry.
        let mut attempts = 0;
        let (dir, lock, procs) = loop {
            attempts += 1;
            let dir = plan.parent.join(format!(
                "sandlock-{}-{:016x}-{}",
                std::process::id(),
                nonce(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(err(e, "cannot create the run's cgroup", &dir)),
            }
            let opened = open_dir_locked(&dir).and_then(|lock| {
                if !same_file(&lock, &dir) {
                    return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
                }
                open_write(&dir.join("cgroup.procs")).map(|procs| (lock, procs))
            });
            match opened {
                Ok((lock, procs)) => break (dir, lock, procs),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && attempts < 5 => continue,
                Err(e) => {
                    let _ = std::fs::remove_dir(&dir);
                    return Err(err(e, "cannot open the run's cgroup", &dir));
                }
            }
        };
        let cg = RunCgroup {
            dir,
            procs,
            _lock: lock,
            memory: plan.memory,
            pids: plan.pids,
        };
        if let (true, Some(m)) = (plan.memory, limits.max_memory) {
            cg.set("memory.max", &m.bytes().to_string())?;
            // Swap would let the tree hold more than the cap; a group OOM kill takes every
            // process, as the supervisor's memory limit does.
            cg.set_optional("memory.swap.max", "0")?;
            cg.set("memory.oom.group", "1")?;
        }
        if let (true, Some(n)) = (plan.pids, limits.pids_max()) {
            cg.set("pids.max", &n.to_string())?;
        }
        Ok(cg)
    }

    fn set(&self, file: &str, value: &str) -> Result<(), SandboxError> {
        std::fs::write(self.dir.join(file), value).map_err(|e| {
            SandboxError::io(Stage::Cgroup, &e, format!("cannot write {value} to {file}"))
                .with_detail(self.dir.display().to_string())
        })
    }

    fn set_optional(&self, file: &str, value: &str) -> Result<(), SandboxError> {
        if self.dir.join(file).exists() {
            self.set(file, value)
        } else {
            Ok(())
        }
    }

    /// The descriptor the child writes `0` to, to join.
    pub(crate) fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// The cgroup files that enforced limits, for the outcome.
    pub(crate) fn kernel_limits(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.memory {
            v.push("memory.max".to_string());
        }
        if self.pids {
            v.push("pids.max".to_string());
        }
        v
    }

    /// Kills every process in the cgroup: `cgroup.kill` (Linux 5.14+), else each listed pid.
    pub(crate) fn kill(&self) {
        if std::fs::write(self.dir.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        let pids = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill takes integers; a pid listed in our run's cgroup is one of ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// CPU time of every process that ran in the cgroup (`cpu.stat`, always present in v2).
    pub(crate) fn cpu_time(&self) -> Option<Duration> {
        let usec = key_value(&self.dir.join("cpu.stat"), "usage_usec")?;
        Some(Duration::from_micros(usec))
    }

    /// The peak memory of the tree (`memory.peak`, Linux 5.19+), when the memory controller is on.
    pub(crate) fn peak_memory(&self) -> Option<u64> {
        if !self.memory {
            return None;
        }
        std::fs::read_to_string(self.dir.join("memory.peak"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// How often the cgroup ran out of memory (`oom`: the OOM path ran, whether it killed or an
    /// allocation failed) plus how many processes its OOM killer ended (`oom_kill`).
    pub(crate) fn oom_events(&self) -> u64 {
        if !self.memory {
            return 0;
        }
        let f = self.dir.join("memory.events");
        key_value(&f, "oom").unwrap_or(0) + key_value(&f, "oom_kill").unwrap_or(0)
    }

    /// How many times `pids.max` refused a new task.
    pub(crate) fn pids_refused(&self) -> u64 {
        if !self.pids {
            return 0;
        }
        key_value(&self.dir.join("pids.events"), "max").unwrap_or(0)
    }

    /// The cgroup's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        // Whatever is left goes; then the directory can be removed once the kernel has let the
        // last member go (exit is asynchronous, so allow it a moment).
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return,
            }
        }
    }
}

/// Removes run cgroups that no host holds any more (their host crashed or was killed). A live run's
/// cgroup is locked by its host, so only cgroups whose lock is free are touched, and only with
/// `rmdir`, which the kernel refuses while processes are in it: nothing is ever killed here.
fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_name().as_bytes().starts_with(b"sandlock-") {
            continue;
        }
        let p = e.path();
        let Ok(fd) = open_dir(&p) else { continue };
        // SAFETY: flock on a descriptor we own; non-blocking.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            let _ = std::fs::remove_dir(&p);
        }
    }
}

fn open_dir(p: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open on a NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: open just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `path` still names the directory `fd` is open on.
fn same_file(fd: &OwnedFd, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(by_path) = std::fs::metadata(path) else {
        return false;
    };
    // SAFETY: fstat fills a struct we own, on a descriptor we hold.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }) == 0
        && st.st_ino == by_path.ino()
        && st.st_dev == by_path.dev()
}

/// Opens `p` and takes the ownership lock on it (see [`RunCgroup`]).
fn open_dir_locked(p: &Path) -> std::io::Result<OwnedFd> {
    let fd = open_dir(p)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn is_cgroup2(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills a struct we own, from a NUL-terminated path.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type as i64 == CGROUP2_SUPER_MAGIC
    }
}

/// The directory of this process's cgroup in the v2 hierarchy (on a writable cgroup2 mount).
fn own_cgroup_dir() -> Result<PathBuf, String> {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2 hierarchy")?
        .to_string();
    if path.split('/').any(|c| c == "..") {
        return Err(format!(
            "this process's cgroup ({path}) is outside its cgroup namespace"
        ));
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let f: Vec<&str> = left.split_whitespace().collect();
        let (Some(root), Some(mnt), Some(opts)) = (f.get(3), f.get(4), f.get(5)) else {
            continue;
        };
        if opts.split(',').any(|o| o == "ro") {
            continue;
        }
        // Path components, not string prefixes: a mount of /a must not match a cgroup /ab.
        let root = PathBuf::from(unescape(root));
        let Ok(rel) = Path::new(&path).strip_prefix(&root) else {
            continue;
        };
        let mnt = PathBuf::from(unescape(mnt));
        let dir = if rel.as_os_str().is_empty() {
            mnt
        } else {
            mnt.join(rel)
        };
        if dir.is_dir() && is_cgroup2(&dir) {
            return Ok(dir);
        }
    }
    Err(
        "no writable cgroup v2 filesystem is mounted where this process can see its own cgroup"
            .into(),
    )
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn writable(dir: &Path) -> bool {
    let ok = |p: &Path| {
        let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: faccessat on a NUL-terminated path.
        unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::W_OK, libc::AT_EACCESS) == 0 }
    };
    // Creating a child needs the directory. Moving a process from our cgroup into it needs
    // cgroup.procs of the nearest common ancestor of the two (cgroup v2 delegation rules).
    let Some(ancestor) = common_ancestor(dir) else {
        return false;
    };
    ok(dir)
        && ok(&dir.join("cgroup.procs"))
        && ok(&ancestor.join("cgroup.procs"))
        && !read_only_mount(dir)
}

/// The nearest common ancestor of our own cgroup's directory and `dir`, when both are in the
/// hierarchy this process sees.
fn common_ancestor(dir: &Path) -> Option<PathBuf> {
    let own = own_cgroup_dir().ok()?.canonicalize().ok()?;
    let dir = dir.canonicalize().ok()?;
    let mut a = own.as_path();
    while !dir.starts_with(a) {
        a = a.parent()?;
    }
    is_cgroup2(a).then(|| a.to_path_buf())
}

fn read_only_mount(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return true;
    };
    // SAFETY: statvfs fills a struct we own, from a NUL-terminated path.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        libc::statvfs(c.as_ptr(), &mut s) != 0 || s.f_flag & libc::ST_RDONLY != 0
    }
}

fn open_write(p: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open on a NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: open just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn read_words(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The value of `key` in a flat-keyed cgroup file (`key value` per line).
fn key_value(p: &Path, key: &str) -> Option<u64> {
    let mut f = std::fs::File::open(p).ok()?;
    let mut s = String::new();
    f.read_to_string(&mut s).ok()?;
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_octal_escapes_are_decoded() {
        assert_eq!(unescape(r"/sys/fs/my\040cgroup"), "/sys/fs/my cgroup");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn flat_keyed_files_are_read_by_key() {
        let d = std::env::temp_dir().join(format!("sandlock-kv-{}", std::process::id()));
        std::fs::write(
            &d,
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 1\n",
        )
        .unwrap();
        assert_eq!(key_value(&d, "oom_kill"), Some(2));
        assert_eq!(key_value(&d, "max"), Some(3));
        assert_eq!(key_value(&d, "absent"), None);
        std::fs::remove_file(&d).unwrap();
    }

    #[test]
    fn a_directory_that_is_not_cgroup2_is_refused_by_name() {
        let p = probe(Some(Path::new("/tmp")));
        assert!(!p.writable);
        assert!(p.problem.unwrap().contains("not a cgroup v2 directory"));
    }
}
