//! Workspace files as MCP resources: `resources/list`, `resources/read` and one resource
//! template. This is how a client takes a produced file (a chart, a CSV, an archive) out of the
//! sandbox.
//!
//! A file's URI is `sandlock://<workspace>/<path>`: the workspace handle, then the path relative
//! to it, each segment percent-encoded. The handle in the URI lets a stateless (2026-07-28)
//! client read a file of the workspace its results named; in a session, only the session's own
//! workspace can be read, as with the tools. `resources/list` lists the session's files (a
//! stateless request has no workspace to list, so it gets an empty list and the template).
//!
//! `resources/read` returns text for a UTF-8 file and a base64 blob for anything else, at most
//! [`MAX_RESOURCE`] bytes: the official Python client refuses any message over 1 MiB and drops
//! its session, and base64 adds a third. Larger files are refused in words.

use rmcp::ErrorData;
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};

use base64::Engine;

use super::SandlockTools;
use crate::files::FileError;
use crate::images::sniff;
use crate::output::json_len;
use crate::workspace::Workspace;

/// The URI scheme of workspace files.
pub const SCHEME: &str = "sandlock://";
/// Largest file `resources/read` returns.
pub const MAX_RESOURCE: u64 = 512 * 1024;
/// Resources in one page of `resources/list`.
const PAGE: usize = 500;

/// The URI of `path` (relative to the workspace) in the workspace `handle`.
pub fn uri(handle: &str, path: &str) -> String {
    let mut u = format!("{SCHEME}{handle}");
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        u.push('/');
        for &b in seg.as_bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                u.push(b as char);
            } else {
                u.push_str(&format!("%{b:02X}"));
            }
        }
    }
    u
}

/// The workspace handle and the path of a `sandlock://` URI, or what is wrong with it.
pub fn parse_uri(u: &str) -> Result<(String, String), String> {
    let bad = |why: &str| {
        format!(
            "{u:?} is not a workspace file URI ({why}); they look like \
             sandlock://<workspace handle>/path/to/file"
        )
    };
    let rest = u.strip_prefix(SCHEME).ok_or_else(|| bad("wrong scheme"))?;
    let (handle, path) = rest.split_once('/').ok_or_else(|| bad("no path"))?;
    let mut bytes = Vec::with_capacity(path.len());
    let mut it = path.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hex = [it.next(), it.next()];
            let v = match hex {
                [Some(h), Some(l)] => std::str::from_utf8(&[h, l])
                    .ok()
                    .and_then(|s| u8::from_str_radix(s, 16).ok()),
                _ => None,
            };
            bytes.push(v.ok_or_else(|| bad("a broken %-escape"))?);
        } else {
            bytes.push(b);
        }
    }
    let path = String::from_utf8(bytes).map_err(|_| bad("a path that is not UTF-8"))?;
    if handle.is_empty() || path.is_empty() {
        return Err(bad("no workspace or no path"));
    }
    Ok((handle.to_string(), path))
}

/// The MIME type a file's name suggests, if a common one.
fn mime_by_name(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "txt" | "log" | "out" | "stdout" | "stderr" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "tsv" => "text/tab-separated-values",
        "json" => "application/json",
        "html" | "htm" => "text/html",
        "xml" => "application/xml",
        "py" => "text/x-python",
        "js" | "mjs" | "cjs" => "text/javascript",
        "ts" | "mts" => "text/x-typescript",
        "sh" => "text/x-shellscript",
        "yaml" | "yml" => "application/yaml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "parquet" => "application/vnd.apache.parquet",
        _ => return None,
    })
}

/// One page of the files of `ws`, from `offset`, as resources; and where the next page starts.
fn list_files(ws: &Workspace, offset: usize) -> Result<(Vec<Resource>, Option<usize>), String> {
    let walked = ws.files.walk("").map_err(|e| e.to_string())?;
    let files: Vec<_> = walked
        .entries
        .into_iter()
        .filter(|e| e.kind == "file")
        .collect();
    let page: Vec<Resource> = files
        .iter()
        .skip(offset)
        .take(PAGE)
        .map(|e| {
            let mut r = Resource::new(uri(&ws.handle, &e.path), e.path.clone()).with_size(e.size);
            if let Some(m) = mime_by_name(&e.path) {
                r = r.with_mime_type(m);
            }
            r
        })
        .collect();
    let next = (offset + PAGE < files.len()).then_some(offset + PAGE);
    Ok((page, next))
}

/// The contents of `path` in `ws`: text when it is UTF-8 (and cheap enough to send as JSON),
/// else a base64 blob.
fn read_file(ws: &Workspace, u: &str, path: &str) -> Result<ResourceContents, ErrorData> {
    let data = ws
        .files
        .read_head(path, MAX_RESOURCE, true)
        .map_err(|e| match e {
            FileError::NotFound(_) => ErrorData::resource_not_found(e.to_string(), None),
            e => ErrorData::invalid_params(e.to_string(), None),
        })?;
    if data.len() as u64 > MAX_RESOURCE {
        let size = ws
            .files
            .stat(path)
            .map_or(data.len() as u64, |st| st.st_size as u64);
        return Err(ErrorData::invalid_params(
            format!(
                "{path:?} is {size} bytes; resources/read returns at most {MAX_RESOURCE} bytes (one \
                 MCP message must stay under the 1 MiB some clients accept); read it in pages with \
                 read_file, or split it with execute_shell (e.g. split -b 400k) and read the parts"
            ),
            None,
        ));
    }
    let sniffed = sniff(&data);
    let text = std::str::from_utf8(&data)
        .ok()
        .filter(|t| !t.contains('\0') && json_len(t) <= 3 * MAX_RESOURCE as usize / 2);
    Ok(match text {
        Some(t) if sniffed.is_none_or(|m| m == "image/svg+xml") => {
            let mime = sniffed.or(mime_by_name(path)).unwrap_or("text/plain");
            ResourceContents::text(t, u).with_mime_type(mime)
        }
        _ => {
            let mime = sniffed
                .or(mime_by_name(path))
                .unwrap_or("application/octet-stream");
            let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
            ResourceContents::blob(b64, u).with_mime_type(mime)
        }
    })
}

impl SandlockTools {
    /// `resources/list`: the files of this session's workspace, a page at a time.
    pub(super) async fn list_resources_page(
        &self,
        cursor: Option<String>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let offset = match cursor {
            None => 0,
            Some(c) => c.parse::<usize>().map_err(|_| {
                ErrorData::invalid_params(format!("cursor {c:?} is not one this server gave"), None)
            })?,
        };
        let Some(ws) = self.session_workspace() else {
            return Ok(ListResourcesResult::default());
        };
        let listed = tokio::task::spawn_blocking(move || list_files(&ws, offset))
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?
            .map_err(|e| ErrorData::internal_error(e, None))?;
        let (resources, next) = listed;
        let mut r = ListResourcesResult::with_all_items(resources);
        r.next_cursor = next.map(|n| n.to_string());
        Ok(r)
    }

    /// `resources/read`: one workspace file.
    pub(super) async fn read_resource_uri(
        &self,
        u: String,
    ) -> Result<ReadResourceResult, ErrorData> {
        let (handle, path) = parse_uri(&u).map_err(|e| ErrorData::invalid_params(e, None))?;
        let ws = self
            .workspace_by_handle(&handle)
            .map_err(|e| ErrorData::resource_not_found(e, None))?;
        let contents = tokio::task::spawn_blocking(move || {
            let r = read_file(&ws, &u, &path);
            ws.touch();
            r
        })
        .await
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))??;
        Ok(ReadResourceResult::new(vec![contents]))
    }
}

/// `resources/templates/list`: how to name a workspace file.
pub fn templates() -> ListResourceTemplatesResult {
    ListResourceTemplatesResult::with_all_items(vec![
        ResourceTemplate::new("sandlock://{workspace}/{+path}", "workspace-file")
            .with_title("A file in a sandlock workspace")
            .with_description(
                "A file the code or the file tools produced: `workspace` is the handle in every \
                 tool result, `path` the file's path relative to it.",
            ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_escape_what_needs_it() {
        let u = uri("sandlock-0.ws-0123", "outputs/my chart%.png");
        assert_eq!(u, "sandlock://sandlock-0.ws-0123/outputs/my%20chart%25.png");
        assert_eq!(
            parse_uri(&u).unwrap(),
            (
                "sandlock-0.ws-0123".to_string(),
                "outputs/my chart%.png".to_string()
            )
        );
        assert_eq!(
            parse_uri("sandlock://ws-1/caf%C3%A9.txt").unwrap().1,
            "café.txt"
        );
        for bad in [
            "file:///etc/passwd",
            "sandlock://ws-1",
            "sandlock:///x",
            "sandlock://ws-1/%zz",
            "sandlock://ws-1/%ff",
        ] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
        // A `..` decodes to a path that the file layer refuses.
        assert_eq!(parse_uri("sandlock://ws-1/%2E%2E/x").unwrap().1, "../x");
    }

    #[test]
    fn common_types_are_named_by_extension() {
        assert_eq!(mime_by_name("a/b.CSV"), Some("text/csv"));
        assert_eq!(mime_by_name("chart.png"), Some("image/png"));
        assert_eq!(mime_by_name("Makefile"), None);
    }
}
