//! `sandlock.Policy`: the core schema, built from keyword arguments.

use pyo3::exceptions::{PyAttributeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use sandlock_core::policy::FIELDS;
use sandlock_core::{Policy, PolicyError};

use crate::convert;
use crate::errors;

/// What a sandbox may touch and how much it may use.
///
/// Keyword arguments are the core schema's fields (`fs_readable`, `fs_writable`, `presets`, `cwd`,
/// `env`, `pass_env`, `net_allow`, `net_deny`, `net_allow_bind`, `http_allow`, `http_deny`,
/// `http_auth`, `credentials`, `http_ca_out`, `http_inject_ca`, `http_upstream_ca`,
/// `extra_deny_syscalls`, `best_effort`, `timeout`, `max_memory`, `max_processes`, `max_threads`,
/// `max_cpu`, `max_output`, `max_file_size`, `max_open_files`, `max_disk`, `cgroup`,
/// `cgroup_parent`, `fs_mount`, `private_tmp`). An unknown
/// field or a bad value raises `PolicyError` naming both. Everything not granted is denied: a policy with no paths can run nothing, so most
/// policies start with `presets=["system"]` (what `python3`, `sh` and `node` need to start).
#[pyclass(name = "Policy", module = "sandlock", frozen, eq)]
#[derive(Clone, PartialEq)]
pub(crate) struct PyPolicy {
    pub(crate) inner: Policy,
}

impl PyPolicy {
    /// Applies keyword arguments on top of `base`, one field at a time so that every error names
    /// its field.
    fn with_kwargs(
        py: Python<'_>,
        mut base: Policy,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyPolicy> {
        if let Some(kwargs) = kwargs {
            for (k, v) in kwargs.iter() {
                let key: String = k.extract()?;
                let value = convert::to_json(&v, &key).map_err(|e| errors::policy_err(py, &e))?;
                base.set_field(&key, value)
                    .map_err(|e| errors::policy_err(py, &e))?;
            }
        }
        Ok(PyPolicy { inner: base })
    }

    /// A policy from a `Policy` instance, a mapping of fields, or `None` (the default policy).
    pub(crate) fn from_any(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Policy> {
        let Some(obj) = obj.filter(|o| !o.is_none()) else {
            return Ok(Policy::default());
        };
        if let Ok(p) = obj.cast::<PyPolicy>() {
            return Ok(p.get().inner.clone());
        }
        if let Ok(d) = obj.cast::<PyDict>() {
            return Ok(PyPolicy::with_kwargs(obj.py(), Policy::default(), Some(d))?.inner);
        }
        Err(PyTypeError::new_err(format!(
            "policy must be a sandlock.Policy or a dict of its fields, not {}",
            obj.get_type().name()?
        )))
    }
}

#[pymethods]
impl PyPolicy {
    #[new]
    #[pyo3(signature = (**kwargs))]
    fn new(py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        PyPolicy::with_kwargs(py, Policy::default(), kwargs)
    }

    /// A policy read from a TOML profile (the same field names as the keyword arguments).
    #[staticmethod]
    fn from_toml(py: Python<'_>, text: &str) -> PyResult<Self> {
        Policy::from_toml_str(text)
            .map(|inner| PyPolicy { inner })
            .map_err(|e| errors::policy_err(py, &e))
    }

    /// A copy with some fields replaced (`None` resets a field to its default).
    #[pyo3(signature = (**kwargs))]
    fn replace(&self, py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        PyPolicy::with_kwargs(py, self.inner.clone(), kwargs)
    }

    /// Every field and its value, as plain Python data (sizes in bytes, durations in seconds).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::serialize_to_py(py, &self.inner)
    }

    /// The names of the fields, in schema order.
    #[classattr]
    fn fields(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
        PyTuple::new(py, FIELDS)
    }

    fn __getattr__<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        if !FIELDS.contains(&name) {
            return Err(PyAttributeError::new_err(format!(
                "'Policy' object has no attribute {name:?}"
            )));
        }
        let all = serde_json::to_value(&self.inner)
            .map_err(|e| PyTypeError::new_err(format!("cannot serialize the policy: {e}")))?;
        convert::to_py(py, &all[name])
    }

    /// Pickle support: a policy is rebuilt from its fields.
    fn __getnewargs_ex__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyAny>)> {
        Ok((PyTuple::empty(py), self.to_dict(py)?))
    }

    fn __repr__(&self) -> PyResult<String> {
        let defaults = serde_json::to_value(Policy::default()).unwrap_or_default();
        let all = serde_json::to_value(&self.inner)
            .map_err(|e| PyTypeError::new_err(format!("cannot serialize the policy: {e}")))?;
        let shown: Vec<String> = FIELDS
            .iter()
            .filter(|f| all[**f] != defaults[**f])
            .map(|f| format!("{f}={}", all[*f]))
            .collect();
        Ok(format!("Policy({})", shown.join(", ")))
    }
}

/// A policy error for a value the binding itself could not accept.
pub(crate) fn bad_arg(field: &str, value: &Bound<'_, PyAny>, reason: &str) -> PolicyError {
    PolicyError::new(field, convert::repr(value), reason)
}
