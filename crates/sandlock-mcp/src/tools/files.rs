//! The file tools: `read_file`, `write_file`, `edit_file`, `list_files`, `glob_files`,
//! `grep_files`, `move_file` and `delete_file`.
//!
//! Each works on the caller's workspace through [`crate::files::Beneath`], which resolves every
//! path beneath it with `openat2(RESOLVE_BENEATH)`, on tokio's blocking pool (a large file or a
//! deep listing never holds up the event loop). File tools do not queue at the concurrency gate.
//! Results that list things are bounded in count and in size, and say when they were cut.

use std::time::Instant;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SandlockTools, failure, output_schema, structured};
use crate::files::Entry;
use crate::files::search::{LineMatch, MAX_WALK};
use crate::workspace::Workspace;

/// JSON bytes of file text `read_file` returns at once (the text is in the result twice).
const READ_BUDGET: usize = 192 * 1024;
/// Most entries `list_files` returns.
const MAX_LIST: usize = 2000;
/// Most paths `glob_files` returns.
const MAX_GLOB: usize = 1000;
/// Most lines `grep_files` returns, and their JSON bytes.
const MAX_GREP: usize = 500;
const GREP_BUDGET: usize = 96 * 1024;
/// JSON bytes of the diff `edit_file` returns.
const DIFF_BUDGET: usize = 64 * 1024;

/// Arguments of `read_file`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadArgs {
    /// A path relative to the workspace, e.g. `results/out.csv`.
    pub path: String,
    /// The first line to return (1-based; default 1).
    #[serde(default)]
    pub start_line: Option<u64>,
    /// The last line to return (inclusive; default: as many as fit in one result, about 190 KB).
    #[serde(default)]
    pub end_line: Option<u64>,
    /// Stateless requests only: see `execute_python`.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// Arguments of `delete_file`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PathArgs {
    /// A path relative to the workspace, e.g. `results/out.csv`.
    pub path: String,
    /// Stateless requests only: see `execute_python`.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// Arguments of `write_file`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct WriteArgs {
    /// A path relative to the workspace; missing parent directories are created.
    pub path: String,
    /// The text to write (replaces the file).
    pub content: String,
    /// Stateless requests only: see `execute_python`.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// Arguments of `list_files`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListArgs {
    /// A directory relative to the workspace (default: the workspace itself).
    #[serde(default)]
    pub path: Option<String>,
    /// List subdirectories too.
    #[serde(default)]
    pub recursive: Option<bool>,
    /// Stateless requests only: see `execute_python`.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// The structured result of `read_file`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ReadResult {
    /// The path read.
    pub path: String,
    /// The text of lines `start_line` to `end_line` (invalid UTF-8 replaced).
    pub content: String,
    /// The file's size in bytes.
    pub bytes: u64,
    /// Lines in the whole file.
    pub total_lines: u64,
    /// The first line returned (1-based).
    pub start_line: u64,
    /// The last line returned (`start_line - 1` when none was).
    pub end_line: u64,
    /// Lines were left out to keep the result small: read on from `next_start_line`.
    pub truncated: bool,
    /// Where to continue, when there is more to read.
    pub next_start_line: Option<u64>,
    /// The workspace handle.
    pub workspace: String,
}

/// The structured result of `write_file` and `delete_file`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FileResult {
    /// The path written or deleted.
    pub path: String,
    /// Bytes written (0 for a deletion).
    pub bytes: u64,
    /// The workspace handle.
    pub workspace: String,
}

/// The structured result of `list_files`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListResult {
    /// Entries, sorted by path.
    pub entries: Vec<Entry>,
    /// Whether the listing stopped at its limit.
    pub truncated: bool,
    /// The workspace handle.
    pub workspace: String,
}

/// Arguments of `edit_file`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct EditArgs {
    /// A text file, relative to the workspace.
    pub path: String,
    /// The exact text to find (whitespace and line breaks included). Unless `all` is set it must
    /// occur exactly once; include surrounding lines to make it unique.
    pub search: String,
    /// The text to put in its place.
    pub replace: String,
    /// Replace every occurrence (default: false, and more than one is an error).
    #[serde(default)]
    pub all: Option<bool>,
    /// Stateless requests only: see `execute_python`.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// The structured result of `edit_file`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EditResult {
    /// The file edited.
    pub path: String,
    /// Occurrences replaced.
    pub replacements: u64,
    /// The change as a unified diff (cut when long; `diff_truncated` says so).
    pub diff: String,
    /// Whether the diff was cut.
    pub diff_truncated: bool,
    /// The file's size after the edit.
    pub bytes: u64,
    /// The workspace handle.
    pub workspace: String,
}

/// Arguments of `glob_files`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct GlobArgs {
    /// A glob: `*.py` matches file names at any depth; a pattern with a `/` matches paths from
    /// `path`, e.g. `src/**/*.ts`. `*` stays within a directory, `**` crosses them, `{a,b}` and
    /// `[a-z]` work.
    pub pattern: String,
    /// The directory to search, relative to the workspace (default: the workspace).
    #[serde(default)]
    pub path: Option<String>,
    /// Stateless requests only: see `execute_python`.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// The structured result of `glob_files`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GlobResult {
    /// Matching files and directories, sorted by path (relative to the workspace).
    pub matches: Vec<Entry>,
    /// Matches in all (more than returned when `truncated`).
    pub total: u64,
    /// Whether the list was cut (at 1000 matches, or because the search visited 100000 entries).
    pub truncated: bool,
    /// The workspace handle.
    pub workspace: String,
}

/// Arguments of `grep_files`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct GrepArgs {
    /// A regular expression, matched against each line (Rust regex syntax, like Python's re
    /// without look-around and backreferences).
    pub pattern: String,
    /// A directory or a file, relative to the workspace (default: the workspace).
    #[serde(default)]
    pub path: Option<String>,
    /// Only files whose name (or, with a `/`, path) matches this glob, e.g. `*.py`.
    #[serde(default)]
    pub glob: Option<String>,
    /// Match without regard to case.
    #[serde(default)]
    pub ignore_case: Option<bool>,
    /// Stateless requests only: see `execute_python`.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// The structured result of `grep_files`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GrepResult {
    /// Matching lines: file, line number and text.
    pub matches: Vec<LineMatch>,
    /// Whether there were more matches than returned (at most 500, and about 96 KB).
    pub truncated: bool,
    /// Files searched.
    pub files_searched: u64,
    /// Files skipped as binary.
    pub binary_skipped: u64,
    /// Files skipped as larger than 16 MiB.
    pub large_skipped: u64,
    /// The workspace handle.
    pub workspace: String,
}

/// Arguments of `move_file`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct MoveArgs {
    /// The file or directory to move, relative to the workspace.
    pub source: String,
    /// Its new path, relative to the workspace (missing directories are created).
    pub destination: String,
    /// Replace an existing destination (default: false, and an existing one is an error).
    #[serde(default)]
    pub overwrite: Option<bool>,
    /// Stateless requests only: see `execute_python`.
    #[serde(default)]
    pub workspace: Option<String>,
}

/// The structured result of `move_file`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MoveResult {
    /// Where it was.
    pub source: String,
    /// Where it is now.
    pub destination: String,
    /// Whether an existing destination was replaced.
    pub replaced: bool,
    /// The workspace handle.
    pub workspace: String,
}

impl SandlockTools {
    /// Runs `op` on the caller's workspace on the blocking pool, and makes its result: the text
    /// and the structured value, or an error in words.
    async fn file_op<T: Serialize + Send + 'static>(
        &self,
        ctx: &RequestContext<RoleServer>,
        tool: &str,
        requested: Option<&str>,
        op: impl FnOnce(&Workspace) -> Result<(String, T), String> + Send + 'static,
    ) -> CallToolResult {
        let t0 = Instant::now();
        let res = match self.workspace(requested) {
            Err((_, w)) => Err(w),
            // File work can take a while (a large file, a deep listing, a slow disk): it runs on
            // the blocking pool, not on the server's one event-loop thread.
            Ok(ws) => tokio::task::spawn_blocking(move || {
                let r = op(&ws);
                ws.touch();
                r
            })
            .await
            .unwrap_or_else(|e| Err(format!("internal error in {tool}: {e}"))),
        };
        match res {
            Ok((text, value)) => {
                self.log_call(ctx, tool, "ok", t0.elapsed(), "");
                structured(text, &value, false)
            }
            Err(msg) => {
                self.log_call(ctx, tool, "error", t0.elapsed(), "");
                failure(msg)
            }
        }
    }
}

#[tool_router(router = file_router, vis = "pub(super)")]
impl SandlockTools {
    /// Reads a text file from the workspace.
    #[tool(
        description = "Read a text file from the workspace, in pages of lines: start_line and \
                       end_line (1-based, inclusive) choose them; the result gives total_lines \
                       and, when more is left, next_start_line. Long outputs of execute_python \
                       and execute_shell are saved under .sandlock/outputs/ and read this way. \
                       Paths are relative to the workspace; absolute paths, '..' and symlinks \
                       leading outside are refused.",
        output_schema = output_schema::<ReadResult>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn read_file(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ReadArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let requested = a.workspace.clone();
        Ok(self
            .file_op(&ctx, "read_file", requested.as_deref(), move |ws| {
                if a.end_line.is_some_and(|e| e < a.start_line.unwrap_or(1)) {
                    return Err(format!(
                        "end_line {} is before start_line {}",
                        a.end_line.unwrap_or(0),
                        a.start_line.unwrap_or(1)
                    ));
                }
                let l = ws
                    .files
                    .read_lines(&a.path, a.start_line.unwrap_or(1), a.end_line, READ_BUDGET)
                    .map_err(|e| e.to_string())?;
                let wanted_end = a.end_line.unwrap_or(l.total_lines).min(l.total_lines);
                let more = l.cut || l.last < wanted_end;
                let next = more.then_some(l.last + 1);
                let mut text = l.content.clone();
                if more {
                    if !text.is_empty() && !text.ends_with('\n') {
                        text.push('\n');
                    }
                    text.push_str(&format!(
                        "[lines {}-{} of {}; read on with start_line={}]",
                        l.first,
                        l.last,
                        l.total_lines,
                        next.unwrap_or(l.last)
                    ));
                }
                let r = ReadResult {
                    path: a.path.clone(),
                    content: l.content,
                    bytes: l.bytes,
                    total_lines: l.total_lines,
                    start_line: l.first,
                    end_line: l.last,
                    truncated: more,
                    next_start_line: next,
                    workspace: ws.handle.clone(),
                };
                Ok((text, r))
            })
            .await)
    }

    /// Writes a text file into the workspace.
    #[tool(
        description = "Write a UTF-8 text file into the workspace (replacing it; parent \
                       directories are created). Paths are relative to the workspace. The \
                       workspace has a disk cap.",
        output_schema = output_schema::<FileResult>(),
        annotations(destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn write_file(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<WriteArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let cap = self.app.exec.config.max_disk.bytes();
        let requested = a.workspace.clone();
        Ok(self
            .file_op(&ctx, "write_file", requested.as_deref(), move |ws| {
                ws.files
                    .write(&a.path, a.content.as_bytes(), cap)
                    .map_err(|e| e.to_string())?;
                let n = a.content.len() as u64;
                let r = FileResult {
                    path: a.path.clone(),
                    bytes: n,
                    workspace: ws.handle.clone(),
                };
                Ok((format!("wrote {n} bytes to {}", a.path), r))
            })
            .await)
    }

    /// Lists files in the workspace.
    #[tool(
        description = "List the files of the workspace (or of a directory in it), with type and \
                       size.",
        output_schema = output_schema::<ListResult>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_files(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ListArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let requested = a.workspace.clone();
        Ok(self
            .file_op(&ctx, "list_files", requested.as_deref(), move |ws| {
                let path = a.path.clone().unwrap_or_default();
                let (entries, truncated) = ws
                    .files
                    .list(&path, a.recursive.unwrap_or(false), MAX_LIST)
                    .map_err(|e| e.to_string())?;
                let mut text = String::new();
                for e in &entries {
                    let mark = if e.kind == "dir" { "/" } else { "" };
                    text.push_str(&format!("{}{mark}\t{}\n", e.path, e.size));
                }
                if entries.is_empty() {
                    text.push_str("(empty)");
                }
                if truncated {
                    text.push_str(&format!("[listing stopped at {MAX_LIST} entries]"));
                }
                let r = ListResult {
                    entries,
                    truncated,
                    workspace: ws.handle.clone(),
                };
                Ok((text, r))
            })
            .await)
    }

    /// Deletes a file from the workspace.
    #[tool(
        description = "Delete a file, a symlink (not its target) or an empty directory from the \
                       workspace.",
        output_schema = output_schema::<FileResult>(),
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn delete_file(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<PathArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let requested = a.workspace.clone();
        Ok(self
            .file_op(&ctx, "delete_file", requested.as_deref(), move |ws| {
                ws.files.delete(&a.path).map_err(|e| e.to_string())?;
                let r = FileResult {
                    path: a.path.clone(),
                    bytes: 0,
                    workspace: ws.handle.clone(),
                };
                Ok((format!("deleted {}", a.path), r))
            })
            .await)
    }

    /// Replaces exact text in a file and shows the change.
    #[tool(
        description = "Edit a text file by exact search and replace: `search` must match once \
                       (whitespace included) unless all=true replaces every occurrence. Returns \
                       the number of replacements and a unified diff. A search that matches \
                       nothing, or several times without all, changes nothing and says so.",
        output_schema = output_schema::<EditResult>(),
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn edit_file(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<EditArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let cap = self.app.exec.config.max_disk.bytes();
        let requested = a.workspace.clone();
        Ok(self
            .file_op(&ctx, "edit_file", requested.as_deref(), move |ws| {
                let all = a.all.unwrap_or(false);
                let e = ws
                    .files
                    .edit(&a.path, &a.search, &a.replace, all, cap, DIFF_BUDGET)
                    .map_err(|e| e.to_string())?;
                let n = e.replacements;
                let text = format!(
                    "replaced {n} occurrence{} in {}\n{}",
                    if n == 1 { "" } else { "s" },
                    a.path,
                    e.diff
                );
                let r = EditResult {
                    path: a.path.clone(),
                    replacements: n as u64,
                    diff: e.diff,
                    diff_truncated: e.diff_cut,
                    bytes: e.bytes,
                    workspace: ws.handle.clone(),
                };
                Ok((text, r))
            })
            .await)
    }

    /// Finds files by glob pattern.
    #[tool(
        description = "Find files and directories in the workspace by glob: `*.py` matches names \
                       at any depth, `src/**/*.ts` matches paths; `path` starts the search in a \
                       directory. Returns at most 1000 paths, sorted, and says when there are \
                       more. Symlinks are listed, not followed.",
        output_schema = output_schema::<GlobResult>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn glob_files(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<GlobArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let requested = a.workspace.clone();
        Ok(self
            .file_op(&ctx, "glob_files", requested.as_deref(), move |ws| {
                let base = a.path.clone().unwrap_or_default();
                let g = ws
                    .files
                    .glob(&a.pattern, &base, MAX_GLOB)
                    .map_err(|e| e.to_string())?;
                let mut text = String::new();
                for e in &g.matches {
                    let mark = if e.kind == "dir" { "/" } else { "" };
                    text.push_str(&format!("{}{mark}\n", e.path));
                }
                if g.total == 0 {
                    text.push_str(&format!("no match for {:?}\n", a.pattern));
                }
                if g.matches.len() < g.total {
                    text.push_str(&format!(
                        "[{} of {} matches shown; narrow the pattern or the path]\n",
                        g.matches.len(),
                        g.total
                    ));
                }
                if g.walk_cut {
                    text.push_str(&format!(
                        "[the search stopped after {MAX_WALK} entries; there may be more matches]\n"
                    ));
                }
                let r = GlobResult {
                    total: g.total as u64,
                    truncated: g.matches.len() < g.total || g.walk_cut,
                    matches: g.matches,
                    workspace: ws.handle.clone(),
                };
                Ok((text, r))
            })
            .await)
    }

    /// Finds lines matching a regular expression.
    #[tool(
        description = "Search the workspace's files for lines matching a regular expression; \
                       `path` narrows it to a directory or a file, `glob` to file names (e.g. \
                       *.py). Returns file, line number and text for at most 500 lines; binary \
                       files are skipped.",
        output_schema = output_schema::<GrepResult>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn grep_files(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<GrepArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let requested = a.workspace.clone();
        Ok(self
            .file_op(&ctx, "grep_files", requested.as_deref(), move |ws| {
                let base = a.path.clone().unwrap_or_default();
                let g = ws
                    .files
                    .grep(
                        &a.pattern,
                        &base,
                        a.glob.as_deref(),
                        a.ignore_case.unwrap_or(false),
                        MAX_GREP,
                        GREP_BUDGET,
                    )
                    .map_err(|e| e.to_string())?;
                let mut text = String::new();
                for m in &g.matches {
                    text.push_str(&format!("{}:{}: {}\n", m.path, m.line, m.text));
                }
                if g.matches.is_empty() {
                    text.push_str(&format!(
                        "no line matches {:?} in {} files searched\n",
                        a.pattern, g.files_searched
                    ));
                }
                if g.truncated {
                    text.push_str(&format!(
                        "[stopped at {} matching lines; narrow the pattern, the path or the glob]\n",
                        g.matches.len()
                    ));
                }
                if g.walk_cut {
                    text.push_str("[the search stopped early (it visits at most 100000 entries and reads at most 512 MiB)]\n");
                }
                let skipped = g.binary_skipped + g.large_skipped;
                if skipped > 0 {
                    text.push_str(&format!(
                        "[{} binary and {} large files skipped]\n",
                        g.binary_skipped, g.large_skipped
                    ));
                }
                let r = GrepResult {
                    truncated: g.truncated || g.walk_cut,
                    matches: g.matches,
                    files_searched: g.files_searched,
                    binary_skipped: g.binary_skipped,
                    large_skipped: g.large_skipped,
                    workspace: ws.handle.clone(),
                };
                Ok((text, r))
            })
            .await)
    }

    /// Moves or renames a file or directory.
    #[tool(
        description = "Move or rename a file or directory within the workspace, creating the \
                       destination's directories. An existing destination is not replaced unless \
                       overwrite=true. A symlink moves as a link.",
        output_schema = output_schema::<MoveResult>(),
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn move_file(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<MoveArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let requested = a.workspace.clone();
        Ok(self
            .file_op(&ctx, "move_file", requested.as_deref(), move |ws| {
                let overwrite = a.overwrite.unwrap_or(false);
                let replaced = ws
                    .files
                    .rename(&a.source, &a.destination, overwrite)
                    .map_err(|e| e.to_string())?;
                let text = format!(
                    "moved {} to {}{}",
                    a.source,
                    a.destination,
                    if replaced {
                        " (replacing what was there, as overwrite=true asked)"
                    } else {
                        ""
                    }
                );
                let r = MoveResult {
                    source: a.source.clone(),
                    destination: a.destination.clone(),
                    replaced,
                    workspace: ws.handle.clone(),
                };
                Ok((text, r))
            })
            .await)
    }
}
