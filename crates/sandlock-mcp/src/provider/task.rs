//! Tasks: background commands (`terminalExec`) and file exports (`terminalResource`), each with an
//! id the client polls and may cancel.
//!
//! A task belongs to the account that submitted it; any other account gets 404 for its id, as for
//! an id that never existed. Finished tasks are kept for [`KEEP_FINISHED`] so that a client can
//! read the result, at most [`MAX_FINISHED`] of them holding at most [`MAX_FINISHED_BYTES`] of
//! output together (the oldest are dropped first).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::auth::{Account, now_ms};
use super::command::Live;

/// How long a finished task stays readable.
pub const KEEP_FINISHED: Duration = Duration::from_secs(3600);
/// Most finished tasks kept.
pub const MAX_FINISHED: usize = 4096;
/// Most output (stdout and stderr) that the finished tasks kept hold together.
pub const MAX_FINISHED_BYTES: usize = 64 << 20;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Running.
    Running,
    /// Done; for a command, whatever its exit code.
    Succeeded,
    /// Could not be done (a missing file, a refused upload, a sandbox failure, a session that
    /// expired under it).
    Failed,
    /// Ran past its `timeout_ms` and was stopped.
    Timeout,
    /// Canceled by its owner.
    Canceled,
}

impl Status {
    /// The protocol's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Timeout => "timeout",
            Status::Canceled => "canceled",
        }
    }

    /// Whether the task is over.
    pub fn is_terminal(self) -> bool {
        self != Status::Running
    }

    /// The HTTP status that reports a task in this state.
    pub fn http(self) -> u16 {
        match self {
            Status::Running => 202,
            Status::Succeeded => 200,
            Status::Canceled => 409,
            Status::Timeout => 504,
            Status::Failed => 502,
        }
    }
}

/// An error inside a task: `error: {code, message}` in its snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// A stable code (`file_not_found`, `upload_failed`, `timeout`, ...).
    pub code: &'static str,
    /// Words for a person.
    pub message: String,
}

impl TaskError {
    /// An error with `code`.
    pub fn new(code: &'static str, message: impl Into<String>) -> TaskError {
        TaskError {
            code,
            message: message.into(),
        }
    }
}

struct State {
    status: Status,
    result: Option<Value>,
    error: Option<TaskError>,
    updated_ms: u64,
    completed_ms: Option<u64>,
    finished_at: Option<Instant>,
    /// The output of a command so far, while it runs.
    live: Option<Live>,
    /// Bytes of output the result holds.
    size: usize,
}

/// One task.
pub struct Task {
    /// Its id (`task_<32 hex>`).
    pub id: String,
    /// Its owner.
    pub account: Account,
    /// `terminalExec` or `terminalResource`.
    pub capability: &'static str,
    /// The session it works in.
    pub session: String,
    created_ms: u64,
    deadline_ms: u64,
    /// Cancelled to cancel the task (a child of its session's token).
    pub cancel: CancellationToken,
    state: Mutex<State>,
    done: watch::Sender<bool>,
}

impl Task {
    /// A running task.
    pub fn new(
        id: String,
        account: Account,
        capability: &'static str,
        session: String,
        timeout: Duration,
        cancel: CancellationToken,
        live: Option<Live>,
    ) -> Task {
        let now = now_ms();
        Task {
            id,
            account,
            capability,
            session,
            created_ms: now,
            deadline_ms: now.saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(0)),
            cancel,
            state: Mutex::new(State {
                status: Status::Running,
                result: None,
                error: None,
                updated_ms: now,
                completed_ms: None,
                finished_at: None,
                live,
                size: 0,
            }),
            done: watch::channel(false).0,
        }
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.state
            .lock()
            .map(|s| s.status)
            .unwrap_or(Status::Failed)
    }

    /// Records the end of the task (once; later calls change nothing) and wakes its waiters.
    pub fn finish(&self, status: Status, result: Option<Value>, error: Option<TaskError>) {
        if let Ok(mut s) = self.state.lock() {
            if s.status.is_terminal() {
                return;
            }
            let now = now_ms();
            s.status = status;
            s.result = result;
            s.error = error;
            s.updated_ms = now;
            s.completed_ms = Some(now);
            s.finished_at = Some(Instant::now());
            s.live = None;
            s.size = ["stdout", "stderr"]
                .iter()
                .filter_map(|k| s.result.as_ref()?.get(k)?.as_str().map(str::len))
                .sum();
        }
        self.done.send_replace(true);
    }

    /// Waits until the task is over, or `limit` passes; true if it is over.
    pub async fn wait(&self, limit: Duration) -> bool {
        let mut rx = self.done.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|d| *d))
            .await
            .is_ok()
    }

    /// The task as the protocol shows it. A running command's result holds its output so far.
    pub fn snapshot(&self) -> Value {
        let Ok(s) = self.state.lock() else {
            return json!({"task_id": self.id, "status": "failed"});
        };
        let mut v = json!({
            "task_id": self.id,
            "capability": self.capability,
            "session_id": self.session,
            "status": s.status.as_str(),
            "created_unix_ms": self.created_ms,
            "updated_unix_ms": s.updated_ms,
            "deadline_unix_ms": self.deadline_ms,
        });
        let result = match (&s.result, &s.live) {
            (Some(r), _) => Some(r.clone()),
            (None, Some(live)) if s.status == Status::Running => {
                let p = live.snapshot();
                Some(json!({
                    "session_id": self.session,
                    "stdout": p.stdout.text(),
                    "stderr": p.stderr.text(),
                    "stdout_truncated": p.stdout.truncated(),
                    "stderr_truncated": p.stderr.truncated(),
                    "exit_code": null,
                }))
            }
            _ => None,
        };
        if let Some(r) = result {
            v["result"] = r;
        }
        if let Some(e) = &s.error {
            v["error"] = json!({"code": e.code, "message": e.message});
        }
        if let Some(c) = s.completed_ms {
            v["completed_unix_ms"] = json!(c);
        }
        if s.status == Status::Running {
            v["status_url"] = json!(format!("/api/v1/tasks/{}", self.id));
        }
        v
    }
}

/// Every task of the server.
#[derive(Default)]
pub struct Tasks {
    map: Mutex<HashMap<String, Arc<Task>>>,
    background: Arc<AtomicUsize>,
}

/// A background command counted against `max_background` until dropped.
pub struct BackgroundSlot(Arc<AtomicUsize>);

impl Drop for BackgroundSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Tasks {
    /// Keeps `task`, dropping finished tasks past their time (or past [`MAX_FINISHED`]).
    pub fn insert(&self, task: Arc<Task>) {
        let Ok(mut map) = self.map.lock() else {
            return;
        };
        let finished = |t: &Task| {
            t.state
                .lock()
                .ok()
                .and_then(|s| s.finished_at.map(|at| (at, s.size)))
        };
        map.retain(|_, t| finished(t).is_none_or(|(at, _)| at.elapsed() < KEEP_FINISHED));
        let mut done: Vec<(Instant, usize, String)> = map
            .iter()
            .filter_map(|(id, t)| finished(t).map(|(at, size)| (at, size, id.clone())))
            .collect();
        done.sort();
        let mut count = done.len();
        let mut bytes: usize = done.iter().map(|d| d.1).sum();
        for (_, size, id) in done {
            if count < MAX_FINISHED && bytes <= MAX_FINISHED_BYTES {
                break;
            }
            map.remove(&id);
            count -= 1;
            bytes -= size;
        }
        map.insert(task.id.clone(), task);
    }

    /// The task `id` if `account` owns it.
    pub fn get(&self, account: &Account, id: &str) -> Option<Arc<Task>> {
        let map = self.map.lock().ok()?;
        map.get(id).filter(|t| t.account == *account).cloned()
    }

    /// Counts a background command, or refuses past `max` of them at once.
    pub fn background(&self, max: usize) -> Option<BackgroundSlot> {
        if self.background.fetch_add(1, Ordering::AcqRel) >= max {
            self.background.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(BackgroundSlot(self.background.clone()))
    }

    /// Background commands running now.
    pub fn background_running(&self) -> usize {
        self.background.load(Ordering::Acquire)
    }

    /// Tasks kept (running and finished).
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(sub: &str) -> Account {
        Account {
            iss: "i".into(),
            sub: sub.into(),
        }
    }

    fn task(id: &str, owner: &str) -> Arc<Task> {
        Arc::new(Task::new(
            id.into(),
            account(owner),
            "terminalExec",
            "s".into(),
            Duration::from_secs(1),
            CancellationToken::new(),
            Some(Live::new(16)),
        ))
    }

    #[test]
    fn a_task_is_invisible_to_other_accounts() {
        let t = Tasks::default();
        t.insert(task("task_1", "alice"));
        assert!(t.get(&account("alice"), "task_1").is_some());
        assert!(t.get(&account("bob"), "task_1").is_none());
        assert!(t.get(&account("alice"), "task_2").is_none());
    }

    #[test]
    fn a_task_finishes_once_and_its_snapshot_says_how() {
        let t = task("task_1", "a");
        assert_eq!(t.snapshot()["status"], "running");
        assert_eq!(t.snapshot()["status_url"], "/api/v1/tasks/task_1");
        assert_eq!(t.snapshot()["result"]["stdout"], "");
        t.finish(Status::Canceled, None, None);
        t.finish(
            Status::Succeeded,
            Some(json!({"exit_code": 0})),
            Some(TaskError::new("x", "y")),
        );
        let s = t.snapshot();
        assert_eq!(s["status"], "canceled");
        assert!(s.get("error").is_none() && s.get("status_url").is_none());
        assert_eq!(Status::Canceled.http(), 409);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn waiting_ends_when_the_task_does() {
        let t = task("task_1", "a");
        assert!(!t.wait(Duration::from_millis(10)).await);
        let t2 = t.clone();
        tokio::spawn(async move { t2.finish(Status::Succeeded, None, None) });
        assert!(t.wait(Duration::from_secs(5)).await);
    }

    #[test]
    fn the_background_cap_is_kept() {
        let t = Tasks::default();
        let a = t.background(1).unwrap();
        assert!(t.background(1).is_none());
        drop(a);
        assert!(t.background(1).is_some());
    }
}
