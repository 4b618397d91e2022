//! Helpers: where the binary is, running it, parsing the probe's JSON, skipping without root.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The podsim binary under test.
pub fn podsim() -> &'static str {
    env!("CARGO_BIN_EXE_podsim")
}

/// Whether the tests run as root, which podsim itself needs.
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Returns early from a test, with the reason on stderr, unless running as root.
macro_rules! require_root {
    () => {
        if !$crate::suite::support::is_root() {
            eprintln!("skipped: podsim must start as root; run the tests as root");
            return;
        }
    };
}
pub(crate) use require_root;

/// Runs podsim with `args` from `/` and returns its output.
pub fn run(args: &[&str]) -> Output {
    Command::new(podsim())
        .args(args)
        .current_dir("/")
        .output()
        .expect("podsim starts")
}

/// stdout and stderr as text, for assertions and failure messages.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Parses a `{"name": "result"}` JSON object printed by podsim.
pub fn parse_map(output: &Output) -> BTreeMap<String, String> {
    let (stdout, stderr) = text(output);
    assert!(output.status.success(), "podsim failed: {stderr}");
    let value: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    value
        .as_object()
        .expect("a JSON object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string values").to_owned()))
        .collect()
}

/// `podsim -- podsim probe --json`, run once per test binary.
pub fn probe_under_podsim() -> &'static BTreeMap<String, String> {
    static PROBE: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    PROBE.get_or_init(|| parse_map(&run(&["--", podsim(), "probe", "--json"])))
}

/// `podsim probe --json` without podsim: the control.
pub fn probe_bare() -> &'static BTreeMap<String, String> {
    static PROBE: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    PROBE.get_or_init(|| parse_map(&run(&["probe", "--json"])))
}

/// Asserts that each named check has the expected result.
pub fn expect(probe: &BTreeMap<String, String>, expected: &[(&str, &str)]) {
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(name, want)| probe.get(*name).map(String::as_str) != Some(*want))
        .map(|(name, want)| format!("{name}: want {want}, got {:?}", probe.get(*name)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A fresh directory under /tmp for one test, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `/tmp/podsim-test-<name>-<pid>` with `mode`.
    pub fn new(name: &str, mode: u32) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let path = PathBuf::from(format!("/tmp/podsim-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        Self(path)
    }

    /// The path as text, for command lines.
    pub fn str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
