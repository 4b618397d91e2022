//! The Python interpreter `execute_python` runs: where it lives and what it must read, and how
//! submitted code reaches it (a memfd on descriptor 3, read by a small bootstrap).
//!
//! Both ways of starting Python use this: a fresh interpreter per call (`crate::exec`) and the
//! workspace's fork server (`crate::warm`).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Reads the code from descriptor 3 (so that its size is not bound by the argument limit), runs it
/// as `__main__`, and prints an uncaught exception the way `python -c` would (`File "<string>"`),
/// with the lines of the submitted code and without this bootstrap's frame.
///
/// Start-up cost matters here (it is on every call's path), so the bootstrap avoids two costly
/// things: `linecache` and `traceback` are imported only when an exception is printed (importing
/// them costs more than the rest of the bootstrap), and the code is given to `exec` as a string,
/// not through the `compile()` builtin, whose first call builds CPython's AST types (measured at
/// 1.2 ms, more than everything else the bootstrap does).
pub(crate) const PYTHON_BOOTSTRAP: &str = "import sys\n\
with open(3,encoding='utf-8',closefd=True) as _f: _c=_f.read()\n\
sys.argv=['-c']\n\
del _f\n\
try: exec(_c,{'__name__':'__main__','__builtins__':__builtins__})\n\
except SystemExit: raise\n\
except BaseException as _e: import linecache as _l,traceback as _t; \
_l.cache['<string>']=(len(_c),None,_c.splitlines(True),'<string>'); \
_t.print_exception(type(_e),_e,_e.__traceback__.tb_next); sys.exit(1)\n";

/// The Python interpreter and the paths it needs to read.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// The executable (absolute).
    pub path: PathBuf,
    /// Its version, as `sys.version` says.
    pub version: String,
    /// Prefixes, site-packages and `sys.path` directories that become readable.
    pub readable: Vec<PathBuf>,
}

impl Interpreter {
    /// Asks `python` (a path or a name in `PATH`) where it lives. This runs the operator's
    /// interpreter, unsandboxed, once at start-up, with a fixed script.
    pub fn discover(python: &Path, workspace_root: &Path) -> anyhow::Result<Interpreter> {
        let script = "import sys, site, json, os\n\
            paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]\n\
            try: paths += site.getsitepackages()\n\
            except Exception: pass\n\
            paths += [p for p in sys.path if p]\n\
            print(json.dumps({'exe': sys.executable, 'real': os.path.realpath(sys.executable), 'version': sys.version.split()[0], 'paths': paths}))\n";
        let out = std::process::Command::new(python)
            .args(["-I", "-c", script])
            .env_remove("PYTHONPATH")
            .current_dir("/")
            .output()
            .with_context(|| {
                format!(
                    "cannot run the Python interpreter {:?}; set [python] interpreter or --python \
                     to an installed python3",
                    python.display().to_string()
                )
            })?;
        if !out.status.success() {
            bail!(
                "the Python interpreter {:?} failed to report its paths ({}): {}",
                python.display().to_string(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        #[derive(serde::Deserialize)]
        struct Report {
            exe: PathBuf,
            real: PathBuf,
            version: String,
            paths: Vec<PathBuf>,
        }
        let r: Report = serde_json::from_slice(&out.stdout)
            .context("the Python interpreter printed something unexpected")?;
        // Run `sys.executable`, not the real file behind it: a venv's bin/python is a symlink, and
        // Python finds its venv from the path it was started by. A pyenv shim (a shell script)
        // is replaced by the interpreter it picks.
        let exe = if r.exe.is_absolute() {
            r.exe.clone()
        } else {
            which(python).unwrap_or_else(|| r.real.clone())
        };
        let mut readable: Vec<PathBuf> = Vec::new();
        let candidates = r.paths.iter().cloned().chain([exe.clone(), r.real.clone()]);
        for p in candidates {
            let Ok(real) = p.canonicalize() else { continue };
            // "/" or an ancestor of the workspace root would expose every workspace.
            if real == Path::new("/") || workspace_root.starts_with(&real) {
                tracing::warn!(
                    path = %real.display(),
                    "not granting this Python path: it contains the workspace root"
                );
                continue;
            }
            if !readable.iter().any(|q| real.starts_with(q)) {
                readable.retain(|q| !q.starts_with(&real));
                readable.push(real);
            }
        }
        Ok(Interpreter {
            path: exe,
            version: r.version,
            readable,
        })
    }
}

/// `p` as an absolute path: as given when it has a directory part, else found in `PATH`.
pub(crate) fn which(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return std::path::absolute(p).ok();
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
}

/// A memfd holding `data`, rewound, to hand to a sandboxed process as a descriptor (code of any
/// size, where an argument is bound by the kernel's 128 KiB limit).
pub(crate) fn memfd_with(data: &[u8]) -> std::io::Result<OwnedFd> {
    use std::io::{Seek, Write};
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create takes a C string literal and flags.
    let fd = unsafe { libc::memfd_create(c"sandlock-code".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor we own.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    f.write_all(data)?;
    f.rewind()?;
    Ok(OwnedFd::from(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreter_paths_never_include_the_workspace_root() {
        let Ok(py) = Interpreter::discover(Path::new("python3"), Path::new("/tmp/sandlock-mcp"))
        else {
            eprintln!("skipped: no python3 in PATH");
            return;
        };
        assert!(py.path.is_absolute());
        assert!(!py.readable.is_empty());
        for p in &py.readable {
            assert!(
                !Path::new("/tmp/sandlock-mcp").starts_with(p),
                "{}",
                p.display()
            );
        }
    }
}
