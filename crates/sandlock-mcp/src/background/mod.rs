//! Background commands: `execute_shell` with `background: true`, read with `command_output` and
//! stopped with `kill_command`.
//!
//! This module owns a workspace's table of commands ([`Commands`]) and the life of each one
//! ([`command`]). A background command is an ordinary sandboxed run (the workspace's
//! `execute_shell` sandbox, its limits, a timeout) supervised on the event loop by a task of its
//! own instead of by the call that started it. The task takes the output as it arrives and appends
//! it to two files in the workspace, `.sandlock/outputs/commands/<id>.stdout` and `.stderr` (beside
//! the saved outputs of other calls, in a directory of their own that their pruning leaves alone),
//! so that the server holds none of it in memory however long the command runs; `max_output` still
//! ends a command that writes too much, as it ends any run. `command_output` returns what arrived
//! since its previous call, from those files.
//!
//! A command ends by itself, at a limit, by `kill_command`, or when its workspace's session ends
//! (or a stateless workspace expires, or the server shuts down): in every case its whole process
//! tree is killed (the sandbox keeps every descendant in its process group, double forks
//! included). A running command keeps its workspace's directory alive, as a call in progress does.
//!
//! Bounds: at most `max_background` running commands per workspace (a start past it is refused in
//! words); ended ones are remembered, newest [`KEEP_ENDED`], and forgetting one deletes its files.

pub mod command;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub use command::{Command, Logs, Poll};

/// Ended commands a workspace remembers (with their output files).
pub const KEEP_ENDED: usize = 16;

/// Where background commands' output files go, relative to the workspace.
pub const COMMAND_DIR: &str = ".sandlock/outputs/commands";

/// Running background commands in this process (the `sandlock_mcp_background_commands` gauge).
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// How many background commands run now, over every workspace.
pub fn running_commands() -> usize {
    RUNNING.load(Ordering::Relaxed)
}

/// Why a command was not started or found, in words.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The workspace runs as many as it may.
    #[error(
        "this workspace already runs {0} background commands (max_background); stop one with \
         kill_command, or wait for one to end (command_output says when)"
    )]
    TooMany(usize),
    /// It could not start (its output files, or the sandbox).
    #[error("{0}")]
    Failed(String),
    /// No such command in this workspace.
    #[error("there is no command {id:?} in this workspace{known}")]
    Unknown {
        /// The id asked for.
        id: String,
        /// The ids there are, in words.
        known: String,
    },
}

/// A workspace's background commands.
#[derive(Default)]
pub struct Commands {
    next: AtomicU64,
    table: Mutex<Vec<Arc<Command>>>,
}

impl Commands {
    fn table(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Command>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a command unless `max` already run: `start` is given the new command's id and
    /// returns it started (see [`Command::start`]), or why it could not start. The oldest ended
    /// commands beyond [`KEEP_ENDED`] are forgotten, and `forget` deletes their files.
    pub fn start(
        &self,
        max: usize,
        start: impl FnOnce(String) -> Result<Arc<Command>, String>,
        forget: impl Fn(&Command),
    ) -> Result<Arc<Command>, CommandError> {
        let mut t = self.table();
        if t.iter().filter(|c| c.running()).count() >= max {
            return Err(CommandError::TooMany(max));
        }
        let id = format!("cmd-{}", self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let c = start(id).map_err(CommandError::Failed)?;
        t.push(c.clone());
        let ended: Vec<usize> = (0..t.len()).filter(|&i| !t[i].running()).collect();
        let excess = ended.len().saturating_sub(KEEP_ENDED);
        for &i in ended[..excess].iter().rev() {
            forget(&t.remove(i));
        }
        Ok(c)
    }

    /// The command named `id`.
    pub fn get(&self, id: &str) -> Result<Arc<Command>, CommandError> {
        let t = self.table();
        if let Some(c) = t.iter().find(|c| c.id == id) {
            return Ok(c.clone());
        }
        let known = match t.len() {
            0 => "; it has none (start one with execute_shell and background=true)".to_string(),
            _ => format!(
                "; it has {}",
                t.iter()
                    .map(|c| c.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        Err(CommandError::Unknown {
            id: id.into(),
            known,
        })
    }

    /// Kills every running command, saying `why` in its outcome.
    pub fn stop_all(&self, why: &str) {
        for c in self.table().iter() {
            c.kill(why);
        }
    }
}

/// One running command in [`running_commands`] while this lives.
struct Counted;

impl Counted {
    fn new() -> Counted {
        RUNNING.fetch_add(1, Ordering::Relaxed);
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::Relaxed);
    }
}
