//! Core errors as Python exceptions.
//!
//! The exception classes live in Python (`sandlock/_types.py`), because `PolicyError` must also be
//! a `ValueError` and Python's multiple inheritance is the honest way to say that. This module
//! imports them once and builds instances from the core's error values.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};
use sandlock_core::{Error, PolicyError, SandboxError};

/// The Python module that defines `PolicyError`, `SandboxError` and `Result`.
pub(crate) const TYPES_MODULE: &str = "sandlock._types";

static POLICY_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static SANDBOX_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// A `sandlock.SandboxError` instance (not raised) describing `e`.
pub(crate) fn sandbox_error<'py>(py: Python<'py>, e: &SandboxError) -> PyResult<Bound<'py, PyAny>> {
    let cls = SANDBOX_ERROR.import(py, TYPES_MODULE, "SandboxError")?;
    let kw = PyDict::new(py);
    kw.set_item("stage", e.stage.as_str())?;
    kw.set_item("errno", e.errno)?;
    kw.set_item("detail", e.detail.as_deref())?;
    kw.set_item("hint", &e.hint)?;
    cls.call((e.to_string(),), Some(&kw))
}

/// A `sandlock.PolicyError` instance (not raised) describing `e`.
pub(crate) fn policy_error<'py>(py: Python<'py>, e: &PolicyError) -> PyResult<Bound<'py, PyAny>> {
    let cls = POLICY_ERROR.import(py, TYPES_MODULE, "PolicyError")?;
    let kw = PyDict::new(py);
    kw.set_item("field", &e.field)?;
    kw.set_item("value", &e.value)?;
    kw.set_item("reason", &e.reason)?;
    cls.call((e.to_string(),), Some(&kw))
}

/// The exception to raise for a core error.
pub(crate) fn to_pyerr(py: Python<'_>, e: &Error) -> PyErr {
    let made = match e {
        Error::Policy(p) => policy_error(py, p),
        Error::Sandbox(s) => sandbox_error(py, s),
        other => policy_error(py, &PolicyError::new("sandbox", "", other.to_string())),
    };
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(import_failed) => import_failed,
    }
}

/// The exception to raise for a policy error.
pub(crate) fn policy_err(py: Python<'_>, e: &PolicyError) -> PyErr {
    match policy_error(py, e) {
        Ok(exc) => PyErr::from_value(exc),
        Err(import_failed) => import_failed,
    }
}
