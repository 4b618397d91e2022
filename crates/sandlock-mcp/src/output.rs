//! What a call's output becomes in its result: inline text small enough for every MCP client, and
//! the whole output saved in the workspace when it is not.
//!
//! A tool result travels as one JSON-RPC message, and on Streamable HTTP as one server-sent event.
//! The official Python client (`mcp` 2.3) refuses an event over 1 MiB and drops the session; and the
//! output is in the result twice (the text content and `structuredContent`). So each stream is
//! shown inline only up to [`INLINE_BUDGET`] bytes *as JSON* (escapes counted: a control byte takes
//! six), and a longer one keeps its head and its tail with a marker between them, while the bytes
//! themselves go to `.sandlock/outputs/<call>.stdout` (or `.stderr`) in the workspace, where the
//! model can read them in pages (`read_file` with `start_line`). The newest [`KEEP_FILES`] output
//! files of a workspace are kept.

use std::fmt::Write as _;

use crate::workspace::Workspace;

/// JSON bytes one stream may take inline (it appears twice in a result: about 4 × this for
/// stdout and stderr together, a quarter of the 1 MiB a client accepts).
pub const INLINE_BUDGET: usize = 48 * 1024;

/// Where saved outputs go, relative to the workspace.
pub const OUTPUT_DIR: &str = ".sandlock/outputs";

/// Saved output files kept per workspace (older ones are deleted).
pub const KEEP_FILES: usize = 16;

/// One stream as the result shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// The text shown inline: the whole output, or its head and tail with a marker.
    pub text: String,
    /// Bytes the stream produced (as captured, up to the server's output cap).
    pub bytes: u64,
    /// Where the whole output was saved, relative to the workspace, when it did not fit inline.
    pub file: Option<String>,
    /// The inline text is the head and tail of a longer output.
    pub excerpted: bool,
}

/// How many bytes `s` takes once escaped in a JSON string.
pub fn json_len(s: &str) -> usize {
    s.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum()
}

/// The longest prefix of `s` whose JSON form fits `budget`, cut after a newline when one is near.
fn head(s: &str, budget: usize) -> &str {
    let mut used = 0;
    let mut end = 0;
    for (i, c) in s.char_indices() {
        used += json_len(c.encode_utf8(&mut [0; 4]));
        if used > budget {
            break;
        }
        end = i + c.len_utf8();
    }
    let cut = &s[..end];
    match cut.rfind('\n') {
        Some(nl) if nl + 1 >= end.saturating_sub(budget / 8) => &s[..nl + 1],
        _ => cut,
    }
}

/// The longest suffix of `s` whose JSON form fits `budget`, starting after a newline when one is
/// near.
fn tail(s: &str, budget: usize) -> &str {
    let mut used = 0;
    let mut start = s.len();
    for (i, c) in s.char_indices().rev() {
        used += json_len(c.encode_utf8(&mut [0; 4]));
        if used > budget {
            break;
        }
        start = i;
    }
    let cut = &s[start..];
    match cut.find('\n') {
        Some(nl) if nl < budget / 8 && nl + 1 < cut.len() => &cut[nl + 1..],
        _ => cut,
    }
}

/// Shows `data` (stream `name`, `stdout` or `stderr`) of call `call` in workspace `ws`; saves the
/// whole of it there when it does not fit inline (within `disk_cap` bytes for the workspace).
pub fn show(name: &str, data: &[u8], ws: &Workspace, call: &str, disk_cap: u64) -> Shown {
    let text = String::from_utf8_lossy(data);
    let bytes = data.len() as u64;
    if json_len(&text) <= INLINE_BUDGET {
        return Shown {
            text: text.into_owned(),
            bytes,
            file: None,
            excerpted: false,
        };
    }
    let path = format!("{OUTPUT_DIR}/{call}.{name}");
    let saved = ws.files.write(&path, data, disk_cap);
    if saved.is_ok() {
        prune(ws);
    }
    let whole = match &saved {
        Ok(()) => Ok(format!("the whole {name} is in {path}")),
        Err(e) => Err(e.to_string()),
    };
    let mut shown = excerpt(
        name,
        (&text, &text),
        text.len() as u64,
        &format!("{bytes} in all"),
        whole,
    );
    shown.bytes = bytes;
    shown.file = saved.ok().map(|()| path);
    shown
}

/// The head of `parts.0` and the tail of `parts.1` (the same text, or the two ends of a longer
/// one), within [`INLINE_BUDGET`], with a marker between them that says how many of `total` bytes
/// are left out, `counted` (e.g. `"10485760 in all"`), and where the whole is (`whole`: a
/// sentence such as "the whole stdout is in <path>") or why it could not be saved.
pub fn excerpt(
    name: &str,
    parts: (&str, &str),
    total: u64,
    counted: &str,
    whole: Result<String, String>,
) -> Shown {
    // Room for the marker out of the budget, then half each for head and tail.
    let half = (INLINE_BUDGET - 512) / 2;
    let (h, t) = (head(parts.0, half), tail(parts.1, half));
    let omitted = total.saturating_sub((h.len() + t.len()) as u64);
    let mut shown = String::with_capacity(h.len() + t.len() + 512);
    shown.push_str(h);
    if !shown.ends_with('\n') {
        shown.push('\n');
    }
    let _ = write!(
        shown,
        "[... {omitted} bytes of {name} omitted here ({counted}); "
    );
    match &whole {
        Ok(sentence) => {
            let _ = writeln!(
                shown,
                "{sentence}: read it in pages with read_file (start_line, end_line) ...]"
            );
        }
        Err(e) => {
            let _ = writeln!(shown, "it could not be saved in the workspace: {e} ...]");
        }
    }
    shown.push_str(t);
    Shown {
        text: shown,
        bytes: total,
        file: None,
        excerpted: true,
    }
}

/// Deletes all but the newest [`KEEP_FILES`] saved outputs of a workspace.
fn prune(ws: &Workspace) {
    let Ok((entries, _)) = ws.files.list(OUTPUT_DIR, false, 10_000) else {
        return;
    };
    // Names start with the call's time in milliseconds, zero-padded: they sort by age.
    let mut files: Vec<_> = entries.into_iter().filter(|e| e.kind == "file").collect();
    files.sort_by(|a, b| b.path.cmp(&a.path));
    for old in files.iter().skip(KEEP_FILES) {
        let _ = ws.files.delete(&old.path);
    }
}

/// A name for a call's saved outputs: its start time in milliseconds, zero-padded so that names
/// sort by age, and a counter that keeps calls of the same millisecond apart.
pub fn call_name() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10_000;
    format!("{ms:015}-{n:04}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_length_counts_escapes() {
        assert_eq!(json_len("abc"), 3);
        assert_eq!(json_len("a\"b\\"), 6);
        assert_eq!(json_len("\n\t"), 4);
        assert_eq!(json_len("\u{1}"), 6);
        assert_eq!(json_len("é"), 2);
        assert_eq!(
            serde_json::to_string("a\u{1}\n\"é").unwrap().len() - 2,
            json_len("a\u{1}\n\"é")
        );
    }

    #[test]
    fn head_and_tail_fit_their_budget_and_cut_at_lines() {
        let s: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        let h = head(&s, 1000);
        assert!(json_len(h) <= 1000 && h.ends_with('\n') && h.starts_with("line 0\n"));
        let t = tail(&s, 1000);
        assert!(json_len(t) <= 1000 && t.ends_with("line 9999\n"));
        assert!(t.starts_with("line "));
        // Control characters count six each: fewer of them fit.
        let ctl = "\u{1}".repeat(1000);
        assert_eq!(head(&ctl, 600).len(), 100);
        // Multi-byte characters are never split.
        let wide = "é".repeat(1000);
        assert_eq!(head(&wide, 101).len(), 100);
    }

    #[test]
    fn call_names_sort_by_age() {
        let (a, b) = (call_name(), call_name());
        assert!(a < b, "{a} {b}");
        assert_eq!(a.len(), 20);
    }
}
