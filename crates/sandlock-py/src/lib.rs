//! `sandlock._sandlock`: the native half of the Python package `sandlock`.
//!
//! A thin adapter over `sandlock-core`. Keyword arguments become JSON values and go through the
//! core's own policy parser, runs go through `Sandbox::run`/`Sandbox::spawn`, and outcomes come
//! back as `sandlock.Result` objects. Nothing here parses policies, enforces limits or captures
//! output on its own.
//!
//! # Threads and the GIL
//!
//! `Sandbox.run` releases the GIL for the whole run (spawn included), so many Python threads can
//! share one `Sandbox` and run at once. `Running.step(0)` never blocks and keeps the GIL; every
//! call that may wait releases it.
//!
//! # Python-side classes
//!
//! `Result`, `PolicyError` and `SandboxError` are defined in Python (`sandlock/_types.py`), where
//! `PolicyError` can also be a `ValueError`. This crate imports them on first use.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod convert;
mod errors;
mod policy;
mod residue;
mod result;
mod running;
mod sandbox;

use pyo3::prelude::*;

/// The doctor report of `sandlock check`, as a dict: kernel, Landlock ABI, each protection's
/// availability, the runtime's seccomp profile, our credentials and a verdict. With `live`, it
/// also runs `/bin/true` in a sandbox (without the GIL) to prove the whole path works.
#[pyfunction]
#[pyo3(signature = (live=true))]
fn check(py: Python<'_>, live: bool) -> PyResult<Bound<'_, PyAny>> {
    let report = py.detach(|| sandlock_core::check::report(live));
    convert::serialize_to_py(py, &report)
}

#[pymodule]
#[pyo3(name = "_sandlock")]
fn sandlock_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<policy::PyPolicy>()?;
    m.add_class::<sandbox::PySandbox>()?;
    m.add_class::<running::PyRunning>()?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_PATH", sandlock_core::DEFAULT_PATH)?;
    Ok(())
}
