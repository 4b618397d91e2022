//! Checks made after dropping privileges and before exec, so that a permission problem reads as a
//! sentence naming the path and the fix rather than a bare EACCES from deep inside a test suite.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{EXIT_NOT_FOUND, Error, Result};
use crate::sys;

/// execvp's search path when PATH is unset.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Finds `command` the way execvp does, with the caller's current credentials: as given if it
/// contains a slash, otherwise the first PATH entry where it exists.
pub fn resolve(command: &OsStr) -> Option<PathBuf> {
    if command.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(command));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from(DEFAULT_PATH));
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|candidate| candidate.is_file())
}

/// Returns the path to execute `command` as the current (already dropped) user, or an error that
/// names what is in the way. `as_root` is where root found it before the drop, which lets the error
/// explain a command that the new uid cannot see at all (e.g. under /root).
pub fn program(command: &OsStr, as_root: Option<&Path>, uid: libc::uid_t) -> Result<PathBuf> {
    if let Some(found) = resolve(command) {
        if accessible(&found, libc::X_OK) {
            return Ok(found);
        }
        return Err(explain(&found, uid, "executable", "o+rx"));
    }
    match as_root {
        Some(found) => Err(explain(found, uid, "executable", "o+rx")),
        None => Err(Error::msg(format!(
            "{}: command not found (PATH={})",
            command.to_string_lossy(),
            std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_owned())
        ))
        .exit_code(EXIT_NOT_FOUND)),
    }
}

/// Checks that `dir` (the working directory) is searchable by the current user.
pub fn working_directory(dir: &Path, uid: libc::uid_t) -> Result<()> {
    if accessible(dir, libc::X_OK) {
        Ok(())
    } else {
        Err(explain(dir, uid, "searchable", "o+x"))
    }
}

/// If HOME is unset or not readable and searchable by the current user, points it at /tmp, as a
/// pod's HOME is usually not the image author's. Returns the value it replaced.
pub fn home_fallback() -> Option<OsString> {
    let home = std::env::var_os("HOME");
    let usable = home
        .as_deref()
        .is_some_and(|h| accessible(Path::new(h), libc::R_OK | libc::X_OK));
    if usable {
        return None;
    }
    // SAFETY: podsim is single-threaded, so nothing reads the environment concurrently.
    unsafe { std::env::set_var("HOME", "/tmp") };
    Some(home.unwrap_or_default())
}

fn accessible(path: &Path, mode: libc::c_int) -> bool {
    let Ok(cpath) = sys::cpath(path) else {
        return false;
    };
    // SAFETY: `cpath` is NUL-terminated and outlives the call. access(2) checks with the real uid,
    // which after the drop is the pod's uid.
    unsafe { libc::access(cpath.as_ptr(), mode) == 0 }
}

/// Names the first component of `path` the user cannot get through, its mode and the fix.
fn explain(path: &Path, uid: libc::uid_t, need: &str, chmod: &str) -> Error {
    let mut prefix = PathBuf::new();
    for component in path.parent().into_iter().flat_map(Path::components) {
        prefix.push(component);
        if !accessible(&prefix, libc::X_OK) {
            return blocked(&prefix, uid, "searchable", "o+x");
        }
    }
    blocked(path, uid, need, chmod)
}

fn blocked(path: &Path, uid: libc::uid_t, need: &str, chmod: &str) -> Error {
    let (mode, owner) = std::fs::metadata(path)
        .map(|m| (m.permissions().mode() & 0o7777, m.uid()))
        .unwrap_or((0, 0));
    Error::msg(format!(
        "{} is not {need} by uid {uid} (mode {mode:04o}, owner uid {owner})",
        path.display()
    ))
    .hint(format!(
        "chmod {chmod} {} (or run podsim with --uid {owner})",
        path.display()
    ))
}
