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

/// Reports a skipped test (or part of one) so that it shows in the test output even when output
/// is captured: `cargo test` hides `eprintln!` of passing tests, but not direct writes to stderr.
pub fn skip(what: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP {what}: {reason}");
}
