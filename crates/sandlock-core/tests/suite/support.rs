//! Shared helpers: workspaces, policies and one-line runs.

use std::path::{Path, PathBuf};

use sandlock_core::{Command, Outcome, Policy, Preset, Sandbox};

/// A temporary directory under the system temp dir, removed on drop.
pub struct Ws {
    dir: tempfile::TempDir,
}

impl Ws {
    pub fn new() -> Ws {
        Ws {
            dir: tempfile::Builder::new()
                .prefix("sandlock-test-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn s(&self, p: &str) -> String {
        self.join(p).display().to_string()
    }
}

/// The system preset plus one writable workspace.
pub fn policy(ws: &Ws) -> Policy {
    Policy {
        presets: vec![Preset::System],
        fs_writable: vec![ws.path().to_path_buf()],
        ..Policy::default()
    }
}

pub fn run(p: &Policy, argv: &[&str]) -> Outcome {
    Sandbox::new(p.clone())
        .expect("policy")
        .run(Command::new(argv.iter().copied()))
        .expect("run")
}

pub fn sh(p: &Policy, script: &str) -> Outcome {
    run(p, &["/bin/sh", "-c", script])
}

pub fn py(p: &Policy, code: &str) -> Outcome {
    run(p, &["python3", "-c", code])
}

pub fn out(o: &Outcome) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

pub fn err(o: &Outcome) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// Asserts the run exited 0, printing its output otherwise.
#[track_caller]
pub fn ok(o: &Outcome) {
    assert!(
        o.success(),
        "expected success, got {:?} code {:?}\nstdout: {}\nstderr: {}",
        o.reason,
        o.exit_code,
        out(o),
        err(o)
    );
}

/// Asserts the run exited non-zero (the attempt was refused), printing its output otherwise.
#[track_caller]
pub fn refused(o: &Outcome) {
    assert!(
        !o.success(),
        "expected the attempt to fail, but it succeeded\nstdout: {}\nstderr: {}",
        out(o),
        err(o)
    );
}

/// Runs `code` with the host's own python3, unconfined (for controls).
pub fn host_py(code: &str) -> String {
    let o = std::process::Command::new("python3")
        .args(["-c", code])
        .output()
        .expect("host python3");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Whether we run as root (some tests are about what root inside the sandbox cannot do).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no arguments.
    unsafe { libc::geteuid() == 0 }
}

/// The emulator the CPU is, when the kernel matrix (`tests/kernels/guest.sh`) says so: under qemu
/// TCG every instruction is translated, and a fork costs some thirty times what it costs on the
/// host, so wall-clock bounds meant for real CPUs do not hold there.
pub fn emulated_cpu() -> Option<String> {
    std::env::var("SANDLOCK_TEST_EMULATED_CPU")
        .ok()
        .filter(|v| !v.is_empty())
}

/// The rounds a race test (`standin_races.c`, `fdswap_race.c`) runs where it would run `n` on a
/// real CPU, as the program's argument. Under an emulated CPU each supervised round costs some
/// thirty times more, and the kernel matrix's core suites ran past their time limit at full counts,
/// so a fifth of the rounds run there. That keeps its proof: the full counts run on the host
/// against the same stand-ins (`SANDLOCK_MAX_LANDLOCK_ABI=2` and `=1` in `scripts/test.sh`), and
/// every race test's control, which takes the same count, must still reach the window, so a count
/// too small to race fails the test rather than passing it.
pub fn race_rounds(n: u32) -> String {
    let n = if emulated_cpu().is_some() { n / 5 } else { n };
    n.to_string()
}

/// Reports a skipped test (or part of one) so that it shows in the test output even when output
/// is captured: `cargo test` hides `eprintln!` of passing tests, but not direct writes to stderr.
pub fn skip(what: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP {what}: {reason}");
}

/// Compiles `tests/suite/NAME.c` into `dir` with gcc, or says why it cannot (the caller then
/// skips the test).
pub fn build_c(dir: &Path, name: &str) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/suite/{name}.c"));
    let exe = dir.join(name);
    match std::process::Command::new("gcc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
    {
        Ok(s) if s.success() => Some(exe),
        other => {
            skip(name, &format!("cannot compile it with gcc ({other:?})"));
            None
        }
    }
}

/// This kernel as it is and, where it has Landlock ABI `abi` or newer, the same kernel with
/// Landlock capped below `abi`, so that a rule is proven both by Landlock and by the supervisor
/// standing in for it. The name says which.
pub fn kernels(abi: u32) -> Vec<(String, sandlock_core::KernelSupport)> {
    let k = sandlock_core::KernelSupport::detect();
    let mut v = vec![(format!("Landlock ABI {}", k.landlock_abi), k)];
    if k.landlock_abi >= abi {
        v.push((
            format!("Landlock ABI {} (stand-in)", abi - 1),
            k.limit_landlock_abi(abi - 1),
        ));
    }
    v
}

/// Runs `code` with python3 in a sandbox made for kernel `k`.
pub fn py_on(k: sandlock_core::KernelSupport, p: &Policy, code: &str) -> Outcome {
    Sandbox::with_kernel_support(p.clone(), k)
        .expect("policy")
        .run(Command::new(["python3", "-c", code]))
        .expect("run")
}

/// Runs `argv` in a sandbox made for kernel `k`.
pub fn run_on(k: sandlock_core::KernelSupport, p: &Policy, argv: &[&str]) -> Outcome {
    Sandbox::with_kernel_support(p.clone(), k)
        .expect("policy")
        .run(Command::new(argv.iter().copied()))
        .expect("run")
}

/// A host process of the same user, outside every sandbox, in a process group of its own: what a
/// sandbox must not be able to touch.
pub struct Victim {
    child: std::process::Child,
}

impl Victim {
    pub fn new() -> Victim {
        use std::os::unix::process::CommandExt;
        Victim {
            child: std::process::Command::new("sleep")
                .arg("120")
                .process_group(0)
                .spawn()
                .expect("spawn sleep"),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether it is still running (a signal that killed it has been delivered).
    pub fn alive(&mut self) -> bool {
        std::thread::sleep(std::time::Duration::from_millis(20));
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A line of `/proc/<pid>/limits`, `/proc/<pid>/status` or a field of its stat, as the host
    /// sees them.
    pub fn proc_file(&self, name: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{name}", self.pid())).unwrap_or_default()
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test names of the network-rule tests, as `scripts/test.sh` puts them in `/etc/hosts`.
pub const ALLOWED: (&str, &str) = ("allowed.test", "127.0.0.2");
pub const OTHER: (&str, &str) = ("other.test", "127.0.0.3");

/// Whether the host resolves the test names (else the caller skips, saying so).
pub fn test_names_present(what: &str) -> bool {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let has = |(name, ip): (&str, &str)| {
        hosts.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.next() == Some(ip) && f.any(|n| n == name)
        })
    };
    if has(ALLOWED) && has(OTHER) {
        return true;
    }
    skip(
        what,
        "/etc/hosts lacks 127.0.0.2 allowed.test and 127.0.0.3 other.test (scripts/test.sh adds them)",
    );
    false
}

/// A port and nonblocking listeners on it at 127.0.0.2 and 127.0.0.3, held from the start, so
/// that no test running beside can take the port between the search and the bind.
pub fn listeners_on_both() -> (u16, std::net::TcpListener, std::net::TcpListener) {
    loop {
        let a = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if let Ok(b) = std::net::TcpListener::bind(("127.0.0.3", p)) {
            a.set_nonblocking(true).unwrap();
            b.set_nonblocking(true).unwrap();
            return (p, a, b);
        }
    }
}
