//! The per-run part of the plan: the program to execute, `argv` and `envp` as C strings.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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
        view: Option<&crate::fsview::View>,
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
        // The working directory as the sandbox sees it, and where it really is.
        let (cwd, host_cwd) = match view {
            Some(v) => {
                let virt = match cwd {
                    Some(c) => Some(super::lexical(c)),
                    None => plan.cwd.clone(),
                };
                in_view(v, virt)?
            }
            None => {
                let c = match cwd {
                    Some(c) => Some(super::canonical("cwd", c, true)?),
                    None => plan.cwd.clone(),
                };
                (c.clone(), c)
            }
        };
        let search = vars
            .get("PATH")
            .map(String::as_str)
            .unwrap_or(super::DEFAULT_PATH);
        // The first program is exec'd by the child itself, before the supervisor runs: by its
        // host path when it lies in the view.
        let host = |p: &Path| -> PathBuf {
            view.and_then(|v| v.host_path(p).ok().flatten())
                .unwrap_or_else(|| p.to_path_buf())
        };
        let (path, named) = resolve_program(program, search, cwd.as_deref(), &host)?;
        // A script in the view gets its path as the sandbox names it, and an interpreter in the
        // view is exec'd by its host path (the kernel would look it up on the host).
        let mut argv: Vec<OsString> = argv.to_vec();
        let path = match view
            .filter(|_| path != named)
            .and_then(|v| script(v, &path))
        {
            Some((interp, interp_host, arg)) => {
                let mut new = vec![OsString::from_vec(interp)];
                new.extend(arg.map(OsString::from_vec));
                new.push(named.into_os_string());
                new.extend(argv.drain(..).skip(1));
                argv = new;
                interp_host
            }
            None => path,
        };

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
            cwd: host_cwd.map(|c| super::c_path("cwd", &c)).transpose()?,
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

/// The first program's `#!` line, when it is a script: the interpreter as written, where it
/// really is, and its argument.
fn script(v: &crate::fsview::View, host: &Path) -> Option<(Vec<u8>, PathBuf, Option<Vec<u8>>)> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(host)
        .ok()?
        .take(256)
        .read_to_end(&mut head)
        .ok()?;
    let (interp, arg) = crate::fsview::calls::shebang(&head)?.ok()?;
    let written = PathBuf::from(std::ffi::OsStr::from_bytes(&interp));
    let real = if written.is_absolute() {
        v.host_path(&written).ok().flatten().unwrap_or(written)
    } else {
        written
    };
    Some((interp, real, arg))
}

/// Finds the program the way `execvp` would, but in the parent, so that a typo is reported as
/// `execve("pyhton3"): ENOENT, not found in PATH (...)` and never confused with the program's own
/// exit status 127. Returns where to exec it (its host path when it lies in a view) and the path
/// the sandbox names it by.
fn resolve_program(
    program: &OsString,
    search: &str,
    cwd: Option<&Path>,
    host: &dyn Fn(&Path) -> PathBuf,
) -> Result<(PathBuf, PathBuf), Error> {
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
        let real = if full.is_absolute() {
            host(&full)
        } else {
            full.clone()
        };
        return match std::fs::metadata(&real) {
            Ok(m) if m.is_dir() => Err(SandboxError::new(
                Stage::Execve,
                Some(libc::EACCES),
                "is a directory, not a program",
            )
            .with_detail(shown)
            .into()),
            Ok(_) if real != full => Ok((real, full)),
            Ok(_) => Ok((name.to_path_buf(), name.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(
                    SandboxError::new(Stage::Execve, Some(libc::ENOENT), "no such file")
                        .with_detail(shown)
                        .into(),
                )
            }
            // Not visible to us is not proof it is missing in the sandbox; let execve decide.
            Err(_) => Ok((name.to_path_buf(), name.to_path_buf())),
        };
    }
    for dir in search.split(':').filter(|d| !d.is_empty()) {
        let named = Path::new(dir).join(name);
        let candidate = host(&named);
        if is_executable_file(&candidate) {
            return Ok((candidate, named));
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

/// Where the working directory `virt` (or, with none given, the caller's own) really is, when a
/// view covers it: `(as the sandbox sees it, where the child changes into)`. A caller's directory
/// the view hides falls back to the root of the mount that hides it.
fn in_view(
    v: &crate::fsview::View,
    virt: Option<PathBuf>,
) -> Result<(Option<PathBuf>, Option<PathBuf>), Error> {
    let shown = |p: &Path| p.display().to_string();
    let given = virt.is_some();
    let Some(virt) = virt.or_else(|| std::env::current_dir().ok()) else {
        return Ok((None, None));
    };
    let host = match v.host_path(&virt) {
        Ok(None) => {
            return Ok(if given {
                (
                    Some(virt.clone()),
                    Some(super::canonical("cwd", &virt, true)?),
                )
            } else {
                (None, None)
            });
        }
        Ok(Some(h)) if h.is_dir() => h,
        _ if given => {
            return Err(PolicyError::new(
                "cwd",
                shown(&virt),
                "not a directory in the sandbox's view (fs_mount, private_tmp)",
            )
            .into());
        }
        _ => {
            let (m, _) = v.covering(&virt).ok_or_else(|| {
                PolicyError::new("cwd", shown(&virt), "not a directory in the sandbox's view")
            })?;
            let root = v.mounts[m].virt.clone();
            return Ok((Some(root), Some(v.mounts[m].host.clone())));
        }
    };
    Ok((Some(virt), Some(host)))
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
