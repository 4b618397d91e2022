//! `sandlock._sandlock.Sandbox`: a validated policy that runs commands.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString, PyTuple};
use sandlock_core::{Command, Error, PolicyError, Sandbox, Seconds, Stdio};

use crate::convert;
use crate::errors;
use crate::policy::{PyPolicy, bad_arg};
use crate::result;
use crate::running::{self, PyRunning, SLICE};

/// A policy checked against this kernel, ready to run commands from any number of threads.
#[pyclass(name = "Sandbox", module = "sandlock._sandlock", frozen)]
pub(crate) struct PySandbox {
    inner: Sandbox,
    policy: Py<PyPolicy>,
}

#[pymethods]
impl PySandbox {
    #[new]
    #[pyo3(signature = (policy=None))]
    fn new(py: Python<'_>, policy: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let policy = PyPolicy::from_any(policy)?;
        let inner = py
            .detach(|| Sandbox::new(policy.clone()))
            .map_err(|e| errors::to_pyerr(py, &e))?;
        Ok(PySandbox {
            inner,
            policy: Py::new(py, PyPolicy { inner: policy })?,
        })
    }

    /// The policy this sandbox enforces.
    #[getter]
    fn policy(&self, py: Python<'_>) -> Py<PyPolicy> {
        self.policy.clone_ref(py)
    }

    /// Protections this kernel could not apply (only ever non-empty with `best_effort`).
    #[getter]
    fn not_enforced<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.inner.not_enforced().iter().map(|p| p.as_str()))
    }

    /// Runs `cmd` to completion without holding the GIL and returns a `sandlock.Result`.
    ///
    /// Python signal handlers still run every [`SLICE`]: a `KeyboardInterrupt` (or any exception
    /// a handler raises) kills the sandbox and propagates.
    ///
    /// Bad arguments raise `PolicyError`. A failure of the sandbox itself (a program that does not
    /// exist, a kernel that refuses a protection) is returned as `Result.error`, not raised.
    #[pyo3(signature = (cmd, *, timeout=None, input=None, env=None, cwd=None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        cmd: &Bound<'py, PyAny>,
        timeout: Option<&Bound<'py, PyAny>>,
        input: Option<&Bound<'py, PyAny>>,
        env: Option<&Bound<'py, PyAny>>,
        cwd: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args = cmd.clone().unbind();
        let command =
            build_command(cmd, timeout, input, env, cwd).map_err(|e| errors::policy_err(py, &e))?;
        let sandbox = &self.inner;
        let mut running = match py.detach(move || sandbox.spawn(command)) {
            Ok(running) => running,
            Err(e @ Error::Policy(_)) => return Err(errors::to_pyerr(py, &e)),
            Err(e) => return result::error_result(py, &e, &args),
        };
        // The same loop as `Running::wait`, in slices, so that Python signal handlers (Ctrl-C)
        // run in between. An exception from one drops `running`, which kills the whole sandbox.
        loop {
            match py.detach(|| running.step(Some(SLICE))) {
                Ok(true) => break,
                Ok(false) => py.check_signals()?,
                Err(e) => return result::error_result(py, &Error::Sandbox(e), &args),
            }
        }
        let outcome = running::into_outcome(running, self.holds_residue());
        result::to_result(py, &outcome, &args)
    }

    /// Starts `cmd` and returns its supervisor (a `Running`) without waiting.
    ///
    /// The spawn itself is synchronous and takes well under a millisecond. If it fails, the
    /// returned `Running` is already finished and its result carries the error.
    #[pyo3(signature = (cmd, *, timeout=None, input=None, env=None, cwd=None))]
    fn spawn<'py>(
        &self,
        py: Python<'py>,
        cmd: &Bound<'py, PyAny>,
        timeout: Option<&Bound<'py, PyAny>>,
        input: Option<&Bound<'py, PyAny>>,
        env: Option<&Bound<'py, PyAny>>,
        cwd: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<PyRunning> {
        let args = cmd.clone().unbind();
        let command =
            build_command(cmd, timeout, input, env, cwd).map_err(|e| errors::policy_err(py, &e))?;
        match self.inner.spawn(command) {
            Ok(running) => Ok(PyRunning::live(running, args, self.holds_residue())),
            Err(e @ Error::Policy(_)) => Err(errors::to_pyerr(py, &e)),
            Err(e) => Ok(PyRunning::failed(e, args)),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("Sandbox({})", self.policy.bind(py).repr()?))
    }
}

impl PySandbox {
    /// Whether a finished run of this sandbox holds something slow to close (see `residue`).
    fn holds_residue(&self) -> bool {
        self.inner.leaves_residue()
    }
}

/// Translates the per-run arguments into a core [`Command`]; values the core parses (the
/// timeout) go through its parser.
fn build_command(
    cmd: &Bound<'_, PyAny>,
    timeout: Option<&Bound<'_, PyAny>>,
    input: Option<&Bound<'_, PyAny>>,
    env: Option<&Bound<'_, PyAny>>,
    cwd: Option<&Bound<'_, PyAny>>,
) -> Result<Command, PolicyError> {
    let mut command = Command::new(argv(cmd)?);
    if let Some(t) = timeout.filter(|t| !t.is_none()) {
        let value = convert::to_json(t, "timeout")?;
        let shown = convert::repr(t);
        let secs: Seconds = serde_json::from_value(value).map_err(|e| {
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
            PolicyError::new("timeout", shown, msg)
        })?;
        command = command.timeout(secs.duration());
    }
    if let Some(data) = input.filter(|d| !d.is_none()) {
        command = command.stdin(Stdio::Bytes(input_bytes(data)?));
    }
    if let Some(env) = env.filter(|e| !e.is_none()) {
        let map = env
            .cast::<PyDict>()
            .map_err(|_| bad_arg("env", env, "expected a dict of str to str"))?;
        for (k, v) in map.iter() {
            let key: String = k
                .extract()
                .map_err(|_| bad_arg("env", &k, "environment names must be str"))?;
            let value: String = v.extract().map_err(|_| {
                bad_arg(
                    &format!("env[{key:?}]"),
                    &v,
                    "environment values must be str",
                )
            })?;
            command = command.env(key, value);
        }
    }
    if let Some(dir) = cwd.filter(|c| !c.is_none()) {
        command = command.cwd(path_arg("cwd", dir)?);
    }
    Ok(command)
}

fn argv(cmd: &Bound<'_, PyAny>) -> Result<Vec<OsString>, PolicyError> {
    if cmd.is_instance_of::<PyString>() || cmd.is_instance_of::<PyBytes>() {
        return Err(bad_arg(
            "argv",
            cmd,
            "pass a list of arguments, e.g. [\"sh\", \"-c\", \"echo hi\"]",
        ));
    }
    if !(cmd.is_instance_of::<PyList>() || cmd.is_instance_of::<PyTuple>()) {
        return Err(bad_arg(
            "argv",
            cmd,
            "expected a list of str, bytes or paths",
        ));
    }
    let mut out = Vec::new();
    let iter = cmd
        .try_iter()
        .map_err(|_| bad_arg("argv", cmd, "not iterable"))?;
    for (i, item) in iter.enumerate() {
        let item = item.map_err(|_| bad_arg("argv", cmd, "iteration failed"))?;
        out.push(os_arg(&format!("argv[{i}]"), &item)?);
    }
    Ok(out)
}

/// One argument or path: `str`, `bytes` or `os.PathLike`.
fn os_arg(field: &str, v: &Bound<'_, PyAny>) -> Result<OsString, PolicyError> {
    if let Ok(s) = v.cast::<PyString>() {
        return s
            .to_cow()
            .map(|s| OsString::from(s.into_owned()))
            .map_err(|_| bad_arg(field, v, "not valid Unicode"));
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(OsString::from_vec(b.as_bytes().to_vec()));
    }
    if v.hasattr("__fspath__").unwrap_or(false) {
        let p = v
            .call_method0("__fspath__")
            .map_err(|_| bad_arg(field, v, "os.fspath() failed"))?;
        if !p.hasattr("__fspath__").unwrap_or(true) {
            return os_arg(field, &p);
        }
    }
    Err(bad_arg(field, v, "expected str, bytes or a path"))
}

fn path_arg(field: &str, v: &Bound<'_, PyAny>) -> Result<PathBuf, PolicyError> {
    os_arg(field, v).map(PathBuf::from)
}

/// stdin data: `bytes`-like, or `str` (sent as UTF-8).
fn input_bytes(v: &Bound<'_, PyAny>) -> Result<Vec<u8>, PolicyError> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(s) = v.cast::<PyString>() {
        return s
            .to_cow()
            .map(|s| s.as_bytes().to_vec())
            .map_err(|_| bad_arg("input", v, "not valid Unicode"));
    }
    if v.is_instance_of::<PyByteArray>() || v.hasattr("__buffer__").unwrap_or(false) {
        if let Ok(b) = v.extract::<Vec<u8>>() {
            return Ok(b);
        }
    }
    if let Ok(mv) = v.call_method0("tobytes") {
        if let Ok(b) = mv.cast::<PyBytes>() {
            return Ok(b.as_bytes().to_vec());
        }
    }
    Err(bad_arg("input", v, "expected bytes or str"))
}
