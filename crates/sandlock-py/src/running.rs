//! `sandlock._sandlock.Running`: a started sandbox, driven step by step from Python.
//!
//! The asyncio face registers [`PyRunning::fileno`] with its event loop and schedules a timer at
//! [`PyRunning::next_wakeup`]; on either it calls `step(0)`, which never blocks. The blocking
//! faces (`Process.wait`, line iteration) call `step` with a timeout, with the GIL released.

use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use sandlock_core::{Error, Outcome, Reason, Running};

use crate::residue;
use crate::result;

/// Where a run is in its life.
enum State {
    /// Started and supervised.
    Live(Box<Running>),
    /// Finished (or failed); the outcome waits to be collected.
    Finished(Box<Outcome>),
    /// Momentarily, while the core's `Running` turns into its outcome.
    Moving,
}

/// The longest a blocking call waits without the state lock and Python's signal handlers: `kill`
/// from another thread, or Ctrl-C, is never kept waiting longer than this.
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// A sandboxed command that is running, or has just finished.
///
/// Output read with `take_stdout`/`take_stderr` (before or after the end) is not repeated in the
/// result.
#[pyclass(name = "Running", module = "sandlock._sandlock", frozen)]
pub(crate) struct PyRunning {
    state: Mutex<State>,
    args: Py<PyAny>,
    pid: Option<i32>,
    fd: Option<i32>,
    /// The policy sets `max_disk`, so the finished run holds an inotify instance.
    holds_residue: bool,
}

impl PyRunning {
    pub(crate) fn live(running: Running, args: Py<PyAny>, holds_residue: bool) -> PyRunning {
        PyRunning {
            pid: Some(running.pid()),
            fd: Some(running.fd()),
            holds_residue,
            state: Mutex::new(State::Live(Box::new(running))),
            args,
        }
    }

    pub(crate) fn failed(err: Error, args: Py<PyAny>) -> PyRunning {
        PyRunning {
            pid: None,
            fd: None,
            holds_residue: false,
            state: Mutex::new(State::Finished(Box::new(Outcome::from_error(&err)))),
            args,
        }
    }

    /// Runs `f` on the state. Uncontended (the usual case) it runs with the GIL held; if another
    /// thread is inside a blocking `step`, it waits for the lock without the GIL.
    fn with_state<R: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut State) -> R + Send) -> R {
        match self.state.try_lock() {
            Ok(mut g) => f(&mut g),
            Err(TryLockError::Poisoned(p)) => f(&mut p.into_inner()),
            Err(TryLockError::WouldBlock) => py.detach(|| f(&mut lock(&self.state))),
        }
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Advances `state` by one step of at most `wait`; a supervision failure finishes the run with
/// that error (the tree is killed when the core's `Running` is dropped).
fn step(state: &mut State, wait: Option<Duration>, holds_residue: bool) -> bool {
    let State::Live(running) = state else {
        return true;
    };
    match running.step(wait) {
        Ok(false) => false,
        Ok(true) => {
            finish(state, holds_residue);
            true
        }
        Err(e) => {
            *state = State::Finished(Box::new(Outcome::from_error(&Error::Sandbox(e))));
            true
        }
    }
}

fn finish(state: &mut State, holds_residue: bool) {
    if let State::Live(running) = std::mem::replace(state, State::Moving) {
        *state = State::Finished(Box::new(into_outcome(*running, holds_residue)));
    }
}

/// The outcome of a finished run. With `max_disk` (`holds_residue`), what the run still holds is
/// disposed of off this thread.
pub(crate) fn into_outcome(running: Running, holds_residue: bool) -> Outcome {
    if holds_residue {
        let (outcome, residue) = running.into_outcome_and_residue();
        residue::dispose(residue);
        outcome
    } else {
        running.into_outcome()
    }
}

fn seconds(v: Option<f64>, field: &str) -> PyResult<Option<Duration>> {
    match v {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(PyValueError::new_err(format!(
            "{field} must be a non-negative number of seconds, not {s}"
        ))),
    }
}

#[pymethods]
impl PyRunning {
    /// The main process id (also the sandbox's process group id); `None` if it never started.
    #[getter]
    fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// The command as it was given.
    #[getter]
    fn args(&self, py: Python<'_>) -> Py<PyAny> {
        self.args.clone_ref(py)
    }

    /// A descriptor that becomes readable when `step` has work (`-1` if the run never started).
    /// It stays open until the result is collected.
    fn fileno(&self) -> i32 {
        self.fd.unwrap_or(-1)
    }

    /// Seconds until `step` must run even if `fileno()` stays quiet; `None` if only the
    /// descriptor matters.
    fn next_wakeup(&self, py: Python<'_>) -> Option<f64> {
        self.with_state(py, |s| match s {
            State::Live(r) => r
                .next_wakeup()
                .map(|t| t.saturating_duration_since(Instant::now()).as_secs_f64()),
            State::Finished(_) | State::Moving => Some(0.0),
        })
    }

    /// Handles whatever is ready, waiting at most `timeout` seconds for something to happen
    /// (`None`: up to a short slice). Returns whether the run is finished. Only `step(0)` keeps
    /// the GIL.
    #[pyo3(signature = (timeout=None))]
    fn step(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let wait = seconds(timeout, "timeout")?.unwrap_or(SLICE);
        if wait.is_zero() {
            return Ok(self.with_state(py, |s| step(s, Some(wait), self.holds_residue)));
        }
        Ok(py.detach(|| {
            step(
                &mut lock(&self.state),
                Some(wait.min(SLICE)),
                self.holds_residue,
            )
        }))
    }

    /// Whether the run is finished (the result can be collected without waiting).
    fn done(&self, py: Python<'_>) -> bool {
        self.with_state(py, |s| match s {
            State::Live(r) => r.is_done(),
            State::Finished(_) | State::Moving => true,
        })
    }

    /// Stdout captured since the last call.
    fn take_stdout<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let data = self.with_state(py, |s| match s {
            State::Live(r) => r.take_stdout(),
            State::Finished(o) => std::mem::take(&mut o.stdout),
            State::Moving => Vec::new(),
        });
        PyBytes::new(py, &data)
    }

    /// Stderr captured since the last call.
    fn take_stderr<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let data = self.with_state(py, |s| match s {
            State::Live(r) => r.take_stderr(),
            State::Finished(o) => std::mem::take(&mut o.stderr),
            State::Moving => Vec::new(),
        });
        PyBytes::new(py, &data)
    }

    /// Sends `signal` to every process of the sandbox.
    fn send_signal(&self, py: Python<'_>, signal: i32) {
        self.with_state(py, |s| {
            if let State::Live(r) = s {
                r.signal(signal);
            }
        });
    }

    /// Kills the whole sandbox now; the result will say `signaled` with `detail`.
    #[pyo3(signature = (detail="killed by the caller"))]
    fn kill(&self, py: Python<'_>, detail: &str) {
        let detail = detail.to_owned();
        self.with_state(py, move |s| {
            if let State::Live(r) = s {
                r.kill(Reason::Signaled, detail);
            }
        });
    }

    /// Waits (without the GIL) until the run is finished, at most `timeout` seconds. Returns
    /// whether it finished. Python signal handlers run in between; an exception from one
    /// propagates and leaves the run going.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = seconds(timeout, "timeout")?.map(|w| Instant::now() + w);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let slice = left.map_or(SLICE, |l| l.min(SLICE));
            if py.detach(|| step(&mut lock(&self.state), Some(slice), self.holds_residue)) {
                return Ok(true);
            }
            if left.is_some_and(|l| l <= slice) {
                return Ok(false);
            }
            py.check_signals()?;
        }
    }

    /// The `sandlock.Result`. If the run is still going it is killed first, so call it once
    /// `step`, `wait` or `done` says the run is finished.
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let outcome = py.detach(|| {
            let mut state = lock(&self.state);
            if matches!(*state, State::Live(_)) {
                finish(&mut state, self.holds_residue);
            }
            match &*state {
                State::Finished(o) => Ok(o.clone()),
                State::Live(_) | State::Moving => Err(()),
            }
        });
        match outcome {
            Ok(o) => result::to_result(py, &o, &self.args),
            Err(()) => Err(PyRuntimeError::new_err("the run could not be finished")),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let done = self.done(py);
        format!(
            "<sandlock Running pid={} {}>",
            self.pid.map_or("-".into(), |p| p.to_string()),
            if done { "done" } else { "running" }
        )
    }
}
