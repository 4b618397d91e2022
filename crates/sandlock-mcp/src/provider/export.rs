//! `terminalResource`: a session's file, checked (`validate`) or sent to a presigned URL
//! (`export`) by the server itself.
//!
//! The path is the one the session's commands see: under `/mnt/data` (or relative to it, the
//! working directory) or under `/tmp`. It is opened beneath the session's directory with
//! `openat2(RESOLVE_BENEATH)`, so a symlink a command planted cannot make the server read anything
//! else. The upload is a `PUT` of the file's bytes with a `Content-Length` (object stores refuse
//! chunked uploads to presigned URLs), carrying only the `x-amz-*`, `Content-Type` and
//! `Content-MD5` headers the client gave, to a host named in `storage_hosts` only: the signing key
//! lets LobeHub run code, but not make this server send files elsewhere.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use sandlock_core::net::rules::{HostPattern, NetRule, canonical};
use serde_json::{Value, json};

use super::session::{DATA_DIR, Session, TMP_DIR};
use super::task::TaskError;
use crate::files::FileError;

/// The session's `/mnt/data`, as its commands see it.
pub const VIRTUAL_DATA: &str = "/mnt/data";
/// The session's `/tmp`, as its commands see it.
pub const VIRTUAL_TMP: &str = "/tmp";

/// The input of a `terminalResource` task.
#[derive(Debug, serde::Deserialize)]
pub struct ResourceInput {
    /// `export` or `validate`.
    #[serde(default)]
    pub action: Option<String>,
    /// The file, as the session's commands name it.
    pub file_path: String,
    /// The session.
    pub session_id: String,
    /// Where to `PUT` the file (`export`).
    #[serde(default)]
    pub signed_url: Option<String>,
    /// Headers for the upload; only `x-amz-*`, `Content-Type` and `Content-MD5` are sent.
    #[serde(default)]
    pub headers: BTreeMap<String, Value>,
}

/// The path of `file_path` inside the session's workspace, or why it is not a session file.
pub fn workspace_path(file_path: &str) -> Result<String, TaskError> {
    let beneath = |prefix: &str, dir: &str| {
        file_path
            .strip_prefix(prefix)
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            .map(|rest| format!("{dir}{rest}"))
    };
    if let Some(p) = beneath(VIRTUAL_DATA, DATA_DIR).or_else(|| beneath(VIRTUAL_TMP, TMP_DIR)) {
        return Ok(p);
    }
    if file_path.starts_with('/') {
        return Err(TaskError::new(
            "file_not_found",
            format!(
                "{file_path:?} is not a session file: sessions keep their files under \
                 {VIRTUAL_DATA} and {VIRTUAL_TMP}"
            ),
        ));
    }
    Ok(format!("{DATA_DIR}/{file_path}"))
}

fn file_error(file_path: &str, e: FileError) -> TaskError {
    match e {
        FileError::NotFound(_) | FileError::Escapes(_) | FileError::NotDir(_) => TaskError::new(
            "file_not_found",
            format!("{file_path:?} does not exist in the session"),
        ),
        FileError::NotRegular(_, "a directory") => TaskError::new(
            "path_is_directory",
            format!("{file_path:?} is a directory, not a file"),
        ),
        FileError::NotRegular(_, kind) => TaskError::new(
            "file_not_found",
            format!("{file_path:?} is {kind}, not a regular file"),
        ),
        FileError::DotDot(_) | FileError::Invalid(_) | FileError::Absolute(_) => TaskError::new(
            "invalid_payload",
            format!("file_path {file_path:?} is not a usable path (no '..', no NUL)"),
        ),
        other => TaskError::new("execution_failed", other.to_string()),
    }
}

/// The MIME type of a file, by its extension (`application/octet-stream` when unknown).
pub fn mime_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "tsv" => "text/tab-separated-values",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "ts" => "text/x-typescript",
        "py" => "text/x-python",
        "json" => "application/json",
        "xml" => "application/xml",
        "yaml" | "yml" => "application/yaml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        _ => "application/octet-stream",
    }
}

/// Whether `header` may be forwarded to the object store.
pub fn forwarded(header: &str) -> bool {
    let h = header.to_ascii_lowercase();
    h.starts_with("x-amz-") || h == "content-type" || h == "content-md5"
}

/// Whether `url`'s host and port are among the storage hosts. Names are compared as written (no
/// lookup: the object store's name is what the operator configured).
pub fn destination_allowed(url: &reqwest::Url, rules: &[NetRule]) -> bool {
    let Some(port) = url.port_or_known_default() else {
        return false;
    };
    let Some(text) = url.host_str() else {
        return false;
    };
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    let host = match bare.parse::<IpAddr>() {
        Ok(ip) => HostKey::Ip(canonical(ip)),
        Err(_) => HostKey::Name(bare.trim_end_matches('.').to_ascii_lowercase()),
    };
    rules.iter().any(|r| {
        let host_ok = match (&r.host, &host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Name(n), HostKey::Name(h)) => n == h,
            (HostPattern::Addr(a), HostKey::Ip(ip)) => canonical(*a) == *ip,
            (HostPattern::Net(net, prefix), HostKey::Ip(ip)) => in_block(*ip, *net, *prefix),
            _ => false,
        };
        host_ok && (r.ports.low..=r.ports.high).contains(&port)
    })
}

enum HostKey {
    Name(String),
    Ip(IpAddr),
}

fn in_block(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Checks, or exports, the file of `input` in `session`. The result is the protocol's
/// `{session_id, file_path, mime_type, size_bytes}`.
pub async fn run(
    client: &reqwest::Client,
    rules: &[NetRule],
    session: &Session,
    input: ResourceInput,
    timeout: Duration,
) -> Result<Value, TaskError> {
    let action = input.action.as_deref().unwrap_or("validate");
    if !matches!(action, "validate" | "export") {
        return Err(TaskError::new(
            "invalid_payload",
            format!("action {action:?} is not supported; this server does export and validate"),
        ));
    }
    let rel = workspace_path(&input.file_path)?;
    let files = &session.workspace.files;
    let (file, size) = files
        .open_file(&rel)
        .map_err(|e| file_error(&input.file_path, e))?;
    let mut mime = mime_type(&input.file_path).to_string();
    let result = |mime: &str| {
        json!({
            "session_id": session.name,
            "file_path": input.file_path,
            "mime_type": mime,
            "size_bytes": size,
        })
    };
    if action == "validate" {
        return Ok(result(&mime));
    }

    let url_text = input.signed_url.as_deref().unwrap_or_default();
    let url = reqwest::Url::parse(url_text).map_err(|e| {
        TaskError::new(
            "invalid_payload",
            format!("signed_url is not a URL ({e}); export needs the presigned PUT URL"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TaskError::new(
            "invalid_payload",
            format!("signed_url must be http or https, not {}", url.scheme()),
        ));
    }
    if !destination_allowed(&url, rules) {
        return Err(TaskError::new(
            "destination_not_allowed",
            format!(
                "exports may only go to the configured storage hosts (onlyboxes.storage_hosts, \
                 --onlyboxes-storage-host), and {}:{} is not one",
                url.host_str().unwrap_or(""),
                url.port_or_known_default().unwrap_or(0)
            ),
        ));
    }
    let mut request = client
        .put(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_LENGTH, size);
    for (name, value) in &input.headers {
        if !forwarded(name) {
            continue;
        }
        let Some(value) = value.as_str() else {
            return Err(TaskError::new(
                "invalid_payload",
                format!("headers.{name} must be a string"),
            ));
        };
        let header = reqwest::header::HeaderName::from_bytes(name.as_bytes());
        let val = reqwest::header::HeaderValue::from_str(value);
        let (Ok(header), Ok(val)) = (header, val) else {
            return Err(TaskError::new(
                "invalid_payload",
                format!("headers.{name} is not a valid HTTP header"),
            ));
        };
        if header == reqwest::header::CONTENT_TYPE {
            mime = value.to_string();
        }
        request = request.header(header, val);
    }
    let body = reqwest::Body::from(tokio::fs::File::from_std(file));
    let response = request.body(body).send().await.map_err(|e| {
        let code = if e.is_timeout() {
            "timeout"
        } else {
            "upload_failed"
        };
        TaskError::new(code, format!("the upload failed: {}", error_chain(&e)))
    })?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        let excerpt: String = text.chars().take(300).collect();
        return Err(TaskError::new(
            "upload_failed",
            format!("the object store answered {status}: {excerpt}"),
        ));
    }
    Ok(result(&mime))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandlock_core::net::rules::parse_net_rule;

    #[test]
    fn session_paths_map_to_the_workspace_and_others_are_refused() {
        assert_eq!(workspace_path("/mnt/data/a/b.csv").unwrap(), "data/a/b.csv");
        assert_eq!(workspace_path("/tmp/x.py").unwrap(), "tmp/x.py");
        assert_eq!(workspace_path("out.png").unwrap(), "data/out.png");
        assert_eq!(workspace_path("/mnt/data").unwrap(), "data");
        assert_eq!(
            workspace_path("/mnt/database").unwrap_err().code,
            "file_not_found"
        );
        assert_eq!(
            workspace_path("/etc/passwd").unwrap_err().code,
            "file_not_found"
        );
    }

    #[test]
    fn only_the_upload_headers_are_forwarded() {
        for h in ["x-amz-meta-a", "X-Amz-Acl", "Content-Type", "content-md5"] {
            assert!(forwarded(h), "{h}");
        }
        for h in [
            "Authorization",
            "Cookie",
            "Host",
            "x-other",
            "Content-Length",
        ] {
            assert!(!forwarded(h), "{h}");
        }
    }

    #[test]
    fn exports_go_to_storage_hosts_only() {
        let rules: Vec<NetRule> = ["minio.internal:9000", "127.0.0.1", "10.0.0.0/8:443"]
            .iter()
            .map(|r| parse_net_rule("storage_hosts", r).unwrap())
            .collect();
        let ok = |u: &str| destination_allowed(&reqwest::Url::parse(u).unwrap(), &rules);
        assert!(ok(
            "http://minio.internal:9000/bucket/key?X-Amz-Signature=1"
        ));
        assert!(ok("http://MINIO.internal.:9000/b"));
        assert!(!ok("https://minio.internal/b"));
        assert!(!ok("http://evil.example:9000/b"));
        assert!(ok("http://127.0.0.1:41234/put"));
        assert!(ok("https://10.1.2.3/b"));
        assert!(!ok("http://10.1.2.3/b"));
        assert!(!ok("https://11.1.2.3/b"));
        assert!(!destination_allowed(
            &reqwest::Url::parse("http://127.0.0.1/").unwrap(),
            &[]
        ));
    }

    #[test]
    fn mime_types_follow_the_extension() {
        assert_eq!(mime_type("/mnt/data/report.CSV"), "text/csv");
        assert_eq!(mime_type("a.tar.gz"), "application/gzip");
        assert_eq!(mime_type("noext"), "application/octet-stream");
    }
}
