//! The per-run part of the plan: the program to execute, `argv` and `envp` as C strings.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{SandboxPlan, check_env_name};
use crate::error::{Error, PolicyError, SandboxError, Stage};

/// What one run executes, ready for `execve`.
pub(crate) struct RunPlan<'a> {
    pub(crate) path: CString,
    _argv: Vec<CString>,
    /// The sandbox's own environment (built once, in the plan) unless this command adds to it.
    _envp: Cow<'a, [CString]>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    pub(crate) cwd: Option<CString>,
}

impl<'a> RunPlan<'a> {
    /// Resolves the program and builds `argv` and `envp`.
    pub(crate) fn new(
        plan: &'a SandboxPlan,
        argv: &[OsString],
        env: &BTreeMap<String, String>,
        cwd: Option<&Path>,
    ) -> Result<RunPlan<'a>, Error> {
        let Some(program) = argv.first() else {
            return Err(PolicyError::new("argv", "", "the command is empty").into());
        };
        let (vars, envp) = if env.is_empty() {
            (
                Cow::Borrowed(&plan.env),
                Cow::Borrowed(plan.envp.as_slice()),
            )
        } else {
            let mut vars = plan.env.clone();
            for (k, v) in env {
                check_env_name(&format!("env.{k}"), k)?;
                vars.insert(k.clone(), v.clone());
            }
            let envp = envp(&vars)?;
            (Cow::Owned(vars), Cow::Owned(envp))
        };
        let cwd = match cwd {
            Some(c) => Some(super::canonical("cwd", c, true)?),
            None => plan.cwd.clone(),
        };
        let search = vars
            .get("PATH")
            .map(String::as_str)
            .unwrap_or(super::DEFAULT_PATH);
        let path = resolve_program(program, search, cwd.as_deref())?;

        let argv: Vec<CString> = argv
            .iter()
            .enumerate()
            .map(|(i, a)| cstr(format!("argv[{i}]"), a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        Ok(RunPlan {
            path: super::c_path("argv[0]", &path)?,
            argv_ptrs: ptrs(&argv),
            envp_ptrs: ptrs(&envp),
            _argv: argv,
            _envp: envp,
            cwd: cwd.map(|c| super::c_path("cwd", &c)).transpose()?,
        })
    }

    /// NULL-terminated `argv` for `execve`.
    pub(crate) fn argv(&self) -> *const *const libc::c_char {
        self.argv_ptrs.as_ptr()
    }

    /// NULL-terminated `envp` for `execve`.
    pub(crate) fn envp(&self) -> *const *const libc::c_char {
        self.envp_ptrs.as_ptr()
    }
}

fn cstr(field: String, bytes: &[u8]) -> Result<CString, PolicyError> {
    CString::new(bytes)
        .map_err(|_| PolicyError::new(field, String::from_utf8_lossy(bytes), "contains a NUL byte"))
}

/// `KEY=VALUE` C strings for `execve`, in the order of `vars`.
pub(crate) fn envp(vars: &BTreeMap<String, String>) -> Result<Vec<CString>, PolicyError> {
    vars.iter()
        .map(|(k, v)| cstr(format!("env.{k}"), format!("{k}={v}").as_bytes()))
        .collect()
}

/// Finds the program the way `execvp` would, but in the parent, so that a typo is reported as
/// `execve("pyhton3"): ENOENT, not found in PATH (...)` and never confused with the program's own
/// exit status 127.
fn resolve_program(program: &OsString, search: &str, cwd: Option<&Path>) -> Result<PathBuf, Error> {
    let name = Path::new(program);
    let shown = name.display().to_string();
    if program.is_empty() {
        return Err(PolicyError::new("argv[0]", "", "the program name is empty").into());
    }
    if program.as_bytes().contains(&b'/') {
        // Relative paths are relative to the sandbox's working directory, as execve sees them.
        let full = match (name.is_relative(), cwd) {
            (true, Some(c)) => c.join(name),
            _ => name.to_path_buf(),
        };
        return match std::fs::metadata(&full) {
            Ok(m) if m.is_dir() => Err(SandboxError::new(
                Stage::Execve,
                Some(libc::EACCES),
                "is a directory, not a program",
            )
            .with_detail(shown)
            .into()),
            Ok(_) => Ok(name.to_path_buf()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(
                    SandboxError::new(Stage::Execve, Some(libc::ENOENT), "no such file")
                        .with_detail(shown)
                        .into(),
                )
            }
            // Not visible to us is not proof it is missing in the sandbox; let execve decide.
            Err(_) => Ok(name.to_path_buf()),
        };
    }
    for dir in search.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
    }
    Err(SandboxError::new(
        Stage::Execve,
        Some(libc::ENOENT),
        format!("not found in PATH ({search})"),
    )
    .with_detail(shown)
    .into())
}

fn is_executable_file(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid C string; faccessat only reads it.
    let exec =
        unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) } == 0;
    exec && std::fs::metadata(p).map(|m| m.is_file()).unwrap_or(false)
}
