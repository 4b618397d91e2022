//! Core outcomes as `sandlock.Result` objects.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyTuple, PyType};
use sandlock_core::{Change, Error, Outcome};

use crate::errors::{self, TYPES_MODULE};

static RESULT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CHANGE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static COMMIT: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Builds a `sandlock.Result` from an outcome; `args` is the command as the caller gave it.
pub(crate) fn to_result<'py>(
    py: Python<'py>,
    outcome: &Outcome,
    args: &Py<PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let cls = RESULT.import(py, TYPES_MODULE, "Result")?;
    let kw = PyDict::new(py);
    kw.set_item("args", args.bind(py))?;
    kw.set_item("success", outcome.success())?;
    kw.set_item("reason", outcome.reason.as_str())?;
    kw.set_item("exit_code", outcome.exit_code)?;
    kw.set_item("signal", outcome.signal)?;
    kw.set_item("stdout", PyBytes::new(py, &outcome.stdout))?;
    kw.set_item("stderr", PyBytes::new(py, &outcome.stderr))?;
    kw.set_item("stdout_truncated", outcome.stdout_truncated)?;
    kw.set_item("stderr_truncated", outcome.stderr_truncated)?;
    kw.set_item("duration", outcome.wall_time.as_secs_f64())?;
    kw.set_item("cpu_time", outcome.cpu_time.as_secs_f64())?;
    kw.set_item("max_rss", outcome.peak_memory)?;
    kw.set_item("detail", outcome.detail.as_deref())?;
    let not_enforced: Vec<&str> = outcome.not_enforced.iter().map(|p| p.as_str()).collect();
    kw.set_item("not_enforced", PyTuple::new(py, not_enforced)?)?;
    kw.set_item("warnings", PyTuple::new(py, &outcome.warnings)?)?;
    let mechanism = serde_json::to_value(outcome.limit_mechanism)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    kw.set_item("limit_mechanism", mechanism)?;
    kw.set_item("kernel_limits", PyTuple::new(py, &outcome.kernel_limits)?)?;
    let error = match &outcome.error {
        Some(e) => Some(errors::sandbox_error(py, e)?),
        None => None,
    };
    kw.set_item("error", error)?;
    kw.set_item("changes", changes(py, &outcome.changes)?)?;
    let commit = match &outcome.commit {
        Some(c) => {
            let ckw = PyDict::new(py);
            ckw.set_item("attempted", c.attempted)?;
            ckw.set_item("applied", changes(py, &c.applied)?)?;
            ckw.set_item("not_applied", changes(py, &c.not_applied)?)?;
            ckw.set_item("error", c.error.as_deref())?;
            ckw.set_item("kept", c.kept.as_ref().map(|p| p.display().to_string()))?;
            let cls = COMMIT.import(py, TYPES_MODULE, "CommitReport")?;
            Some(cls.call((), Some(&ckw))?)
        }
        None => None,
    };
    kw.set_item("commit", commit)?;
    cls.call((), Some(&kw))
}

/// `sandlock.Change` objects for a run's changes.
fn changes<'py>(py: Python<'py>, list: &[Change]) -> PyResult<Bound<'py, PyTuple>> {
    let cls = CHANGE.import(py, TYPES_MODULE, "Change")?;
    let items = list
        .iter()
        .map(|c| cls.call1((c.kind.letter(), c.path.display().to_string(), c.dir)))
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(py, items)
}

/// The result of a run that sandlock could not start or supervise.
pub(crate) fn error_result<'py>(
    py: Python<'py>,
    err: &Error,
    args: &Py<PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    to_result(py, &Outcome::from_error(err), args)
}
