//! One background command: the task that supervises it, its output files, and what
//! `command_output` reads from them.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandlock_core::{Outcome, Running};
use tokio_util::sync::CancellationToken;

use super::Counted;
use crate::drive;
use crate::output::{INLINE_BUDGET, Shown, excerpt, json_len};

/// The output files of a command, created in its workspace before it starts.
pub struct Logs {
    /// `stdout`: its path relative to the workspace, and the file, open for reading and writing.
    pub stdout: (String, File),
    /// `stderr`, the same way.
    pub stderr: (String, File),
}

/// One stream's file: what was appended, and what `command_output` already returned.
struct Log {
    path: String,
    file: Arc<File>,
    written: u64,
    shown: u64,
    /// Bytes that could not be appended (the workspace's disk is full, say), and why.
    lost: Option<(u64, String)>,
}

impl Log {
    fn new((path, file): (String, File)) -> Log {
        Log {
            path,
            file: Arc::new(file),
            written: 0,
            shown: 0,
            lost: None,
        }
    }

    fn append(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        // A write to the page cache, a chunk at most 64 KiB, bounded by max_output in all.
        match self.file.write_all_at(data, self.written) {
            Ok(()) => self.written += data.len() as u64,
            Err(e) => {
                let lost = self.lost.get_or_insert_with(|| (0, e.to_string()));
                lost.0 += data.len() as u64;
            }
        }
    }
}

struct State {
    stdout: Log,
    stderr: Log,
    /// How it ended (output taken out), once it has.
    end: Option<Outcome>,
}

/// A background command.
pub struct Command {
    /// Its id in the workspace (`cmd-<n>`).
    pub id: String,
    /// The command line.
    pub line: String,
    /// Its wall-clock limit.
    pub timeout: Duration,
    started: Instant,
    /// Cancelled to kill it; a child of the server's shutdown token.
    stop: CancellationToken,
    /// Why it was killed, for its outcome.
    why: Mutex<Option<String>>,
    state: Mutex<State>,
    /// Woken when output arrives or the command ends.
    changed: tokio::sync::Notify,
}

/// What `command_output` returns: the output new since the previous poll, and the state.
#[derive(Debug)]
pub struct Poll {
    /// New standard output (inline, or head and tail with a marker).
    pub stdout: Shown,
    /// New standard error.
    pub stderr: Shown,
    /// Bytes of stdout and stderr written since the start.
    pub totals: (u64, u64),
    /// Output that could not be saved, in words.
    pub lost: Vec<String>,
    /// How the command ended (output taken out), or `None` while it runs.
    pub end: Option<Outcome>,
    /// Time since the start, or the run's duration once it ended.
    pub elapsed: Duration,
}

impl Command {
    /// Supervises `running` (started from `line`, with wall-clock limit `timeout`) on the event
    /// loop until it ends, writing its output to `logs`. `shutdown` kills it when the server's
    /// grace period ends; `keep` is held until then (the workspace, whose directory it uses).
    pub fn start(
        id: String,
        line: String,
        timeout: Duration,
        running: Running,
        logs: Logs,
        shutdown: &CancellationToken,
        keep: Arc<dyn std::any::Any + Send + Sync>,
    ) -> Arc<Command> {
        let c = Arc::new(Command {
            id,
            line,
            timeout,
            started: Instant::now(),
            stop: shutdown.child_token(),
            why: Mutex::new(None),
            state: Mutex::new(State {
                stdout: Log::new(logs.stdout),
                stderr: Log::new(logs.stderr),
                end: None,
            }),
            changed: tokio::sync::Notify::new(),
        });
        tokio::spawn(supervise(c.clone(), running, keep, Counted::new()));
        c
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether it still runs.
    pub fn running(&self) -> bool {
        self.state().end.is_none()
    }

    /// Kills its whole process tree (if it still runs); its outcome will say `why`.
    pub fn kill(&self, why: &str) {
        if let Ok(mut w) = self.why.lock() {
            w.get_or_insert_with(|| why.to_string());
        }
        self.stop.cancel();
    }

    /// The paths of its output files, relative to the workspace.
    pub fn files(&self) -> (String, String) {
        let st = self.state();
        (st.stdout.path.clone(), st.stderr.path.clone())
    }

    fn append(&self, out: &[u8], err: &[u8]) {
        if out.is_empty() && err.is_empty() {
            return;
        }
        let mut st = self.state();
        st.stdout.append(out);
        st.stderr.append(err);
        drop(st);
        self.changed.notify_waiters();
    }

    /// Waits until there is output not yet returned, or the command has ended, or `deadline`.
    pub async fn wait_for_news(&self, deadline: tokio::time::Instant) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.state();
                let news =
                    st.stdout.written > st.stdout.shown || st.stderr.written > st.stderr.shown;
                if news || st.end.is_some() {
                    return;
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Returns the output that arrived since the previous poll, and the state. When it says the
    /// command ended, all of its output is in this poll or an earlier one.
    pub async fn poll(&self) -> Poll {
        let (ranges, lost, end, totals) = {
            let mut st = self.state();
            // Taken together: output appended after this point belongs to the next poll.
            let take = |l: &mut Log| {
                let r = (l.path.clone(), l.file.clone(), l.shown, l.written);
                l.shown = l.written;
                r
            };
            let ranges = [take(&mut st.stdout), take(&mut st.stderr)];
            let lost: Vec<String> = [("stdout", &st.stdout), ("stderr", &st.stderr)]
                .into_iter()
                .filter_map(|(name, l)| {
                    let (n, why) = l.lost.as_ref()?;
                    Some(format!("{n} bytes of {name} could not be saved ({why})"))
                })
                .collect();
            let totals = (st.stdout.written, st.stderr.written);
            (ranges, lost, st.end.clone(), totals)
        };
        let elapsed = end
            .as_ref()
            .map_or_else(|| self.started.elapsed(), |o| o.wall_time);
        let shown = tokio::task::spawn_blocking(move || {
            let [(p1, f1, a1, b1), (p2, f2, a2, b2)] = ranges;
            (
                show_range("stdout", &p1, &f1, a1, b1),
                show_range("stderr", &p2, &f2, a2, b2),
            )
        })
        .await;
        let (stdout, stderr) = shown.unwrap_or_else(|e| {
            let lost = Shown {
                text: format!("[the output could not be read: {e}]"),
                bytes: 0,
                file: None,
                excerpted: true,
            };
            (lost.clone(), lost)
        });
        Poll {
            stdout,
            stderr,
            totals,
            lost,
            end,
            elapsed,
        }
    }

    /// Waits for the end of a command that was told to stop, at most `limit`.
    pub async fn wait_for_end(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.running() {
                return;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

/// Bytes `from..to` of a log, as a poll shows them: whole when they fit inline, else their head
/// and tail with a marker that points at the file.
fn show_range(name: &str, path: &str, file: &File, from: u64, to: u64) -> Shown {
    let read = |at: u64, len: u64| {
        let mut buf = vec![0u8; len as usize];
        let n = file.read_at(&mut buf, at).unwrap_or(0);
        buf.truncate(n);
        buf
    };
    let len = to.saturating_sub(from);
    let budget = INLINE_BUDGET as u64;
    if len <= budget {
        let text = String::from_utf8_lossy(&read(from, len)).into_owned();
        if json_len(&text) <= INLINE_BUDGET {
            return Shown {
                text,
                bytes: len,
                file: Some(path.to_string()),
                excerpted: false,
            };
        }
    }
    let head = String::from_utf8_lossy(&read(from, len.min(budget))).into_owned();
    let tail_len = len.min(budget);
    let tail = String::from_utf8_lossy(&read(to - tail_len, tail_len)).into_owned();
    let mut shown = excerpt(
        name,
        (&head, &tail),
        len,
        &format!("{len} new since the last command_output, {to} in all"),
        Ok(format!("the whole {name} so far is in {path}")),
    );
    shown.file = Some(path.to_string());
    shown
}

/// The task that supervises a background command until it ends.
async fn supervise(
    c: Arc<Command>,
    running: Running,
    keep: Arc<dyn std::any::Any + Send + Sync>,
    _counted: Counted,
) {
    let why = || {
        c.why
            .lock()
            .ok()
            .and_then(|w| w.clone())
            .unwrap_or_else(|| {
                "killed: the server shut down and the grace period ran out".to_string()
            })
    };
    let result = drive::supervise(running, &c.stop, why, |r| {
        c.append(&r.take_stdout(), &r.take_stderr());
    })
    .await;
    let mut outcome = result.unwrap_or_else(|e| Outcome::from_error(&e.into()));
    c.append(&outcome.stdout, &outcome.stderr);
    outcome.stdout = Vec::new();
    outcome.stderr = Vec::new();
    c.state().end = Some(outcome);
    c.changed.notify_waiters();
    drop(keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_file(data: &[u8]) -> File {
        let mut f = tempfile();
        std::io::Write::write_all(&mut f, data).unwrap();
        f
    }

    fn tempfile() -> File {
        let p = std::env::temp_dir().join(format!(
            "sandlock-mcp-log-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        std::fs::remove_file(&p).unwrap();
        f
    }

    #[test]
    fn a_short_range_is_shown_whole_and_a_long_one_as_head_and_tail() {
        let f = log_file(b"one\ntwo\nthree\n");
        let s = show_range("stdout", "x.stdout", &f, 4, 8);
        assert_eq!((s.text.as_str(), s.bytes, s.excerpted), ("two\n", 4, false));
        let big: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
        let f = log_file(big.as_bytes());
        let s = show_range("stdout", "x.stdout", &f, 0, big.len() as u64);
        assert!(s.excerpted && json_len(&s.text) <= INLINE_BUDGET + 512);
        assert!(s.text.starts_with("line 0\n") && s.text.ends_with("line 99999\n"));
        assert!(
            s.text.contains("new since the last command_output")
                && s.text.contains("the whole stdout so far is in x.stdout"),
            "{}",
            &s.text[..200]
        );
    }

    #[test]
    fn appends_land_at_the_end_and_failures_are_counted() {
        let mut l = Log::new(("x".into(), tempfile()));
        l.append(b"abc");
        l.append(b"de");
        assert_eq!(l.written, 5);
        let mut buf = [0u8; 5];
        l.file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"abcde");
        // A read-only descriptor: appends fail and are counted, not lost silently.
        let ro = std::fs::File::open("/dev/null").unwrap();
        let mut l = Log::new(("y".into(), ro));
        l.append(b"xyz");
        assert_eq!(l.written, 0);
        assert_eq!(l.lost.as_ref().map(|l| l.0), Some(3));
    }
}
