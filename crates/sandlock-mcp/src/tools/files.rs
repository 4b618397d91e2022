//! The file tools: `read_file`, `write_file`, `list_files` and `delete_file`.
//!
//! Each works on the caller's workspace through [`crate::files::Beneath`], which resolves every
//! path beneath it with `openat2(RESOLVE_BENEATH)`, on tokio's blocking pool (a large file or a
//! deep listing never holds up the event loop). File tools do not queue at the concurrency gate.

use std::time::Instant;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SandlockTools, failure, output_schema, structured};
use crate::files::Entry;
use crate::workspace::Workspace;

/// JSON bytes of file text `read_file` returns at once (the text is in the result twice).
const READ_BUDGET: usize = 192 * 1024;
/// Most entries `list_files` returns.
const MAX_LIST: usize = 2000;

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
}
