//! Images that code saves in the workspace's `outputs/` directory during a call come back in that
//! call's result as MCP image content, so that a chart appears in the chat.
//!
//! Before a run the server notes what `outputs/` holds (each file's inode, size and modification
//! time); after it, a file that is new or changed is an image when its content says so (PNG, JPEG,
//! GIF and WebP by their magic bytes, SVG by an `<svg` element at the start of the text), whatever
//! its name. Images are size-capped and few per call, so that a result stays well under the
//! 1 MiB a client accepts in one message (base64 adds a third); the others are named in the text
//! with the resource URI to fetch them by. Only `outputs/` is looked at, never the rest of the
//! workspace.

use std::collections::HashMap;

use base64::Engine;
use serde::Serialize;

use crate::files::Beneath;

/// The directory, relative to the workspace, whose new images are returned.
pub const OUTPUTS_DIR: &str = "outputs";
/// Largest image returned in a result.
pub const MAX_IMAGE: u64 = 256 * 1024;
/// Most images returned by one call.
pub const MAX_IMAGES: usize = 4;
/// Most image bytes returned by one call, all images together.
pub const MAX_TOTAL: u64 = 384 * 1024;
/// Files of `outputs/` looked at, at most.
const MAX_SCAN: usize = 1000;

/// What `outputs/` held before a run: each file's identity, size and modification time.
#[derive(Debug, Default)]
pub struct Snapshot(HashMap<String, (u64, u64, i64, i64)>);

/// An image found after a run.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ImageRef {
    /// Its path, relative to the workspace.
    pub path: String,
    /// `image/png`, `image/jpeg`, `image/gif`, `image/webp` or `image/svg+xml`.
    pub mime_type: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Whether it is in this result as image content; when not, `why` says why.
    pub shown: bool,
    /// Why it is not in the result (too large, too many).
    pub why: Option<String>,
}

/// The images of a run: the content to return (base64 data and type) and what was found.
#[derive(Debug, Default)]
pub struct Found {
    /// `(base64 data, mime type)` of each image returned, in the order of `refs`.
    pub content: Vec<(String, &'static str)>,
    /// Every image found, returned or not.
    pub refs: Vec<ImageRef>,
}

/// The image type `head` (the start of a file) is, if any.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some("image/png");
    }
    if head.starts_with(b"\xff\xd8\xff") {
        return Some("image/jpeg");
    }
    if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        return Some("image/gif");
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return Some("image/webp");
    }
    // SVG is text: an XML declaration, comments or a doctype may come first, then <svg.
    let text = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    let start = text.iter().position(|b| !b.is_ascii_whitespace())?;
    let window = &text[start..text.len().min(start + 4096)];
    let is_svg = window.first() == Some(&b'<')
        && window.windows(4).any(|w| w == b"<svg")
        && !window.contains(&0);
    is_svg.then_some("image/svg+xml")
}

fn key(st: &libc::stat) -> (u64, u64, i64, i64) {
    (st.st_ino, st.st_size as u64, st.st_mtime, st.st_mtime_nsec)
}

/// Whether the workspace has an `outputs/` directory (one `openat2`: cheap enough for the event
/// loop, so that a call in a workspace without one costs no trip to the blocking pool).
pub fn has_outputs(files: &Beneath) -> bool {
    files
        .stat(OUTPUTS_DIR)
        .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// Notes what `outputs/` holds now.
pub fn snapshot(files: &Beneath) -> Snapshot {
    let mut s = Snapshot::default();
    let Ok(w) = files.walk(OUTPUTS_DIR) else {
        return s;
    };
    for e in w.entries.iter().filter(|e| e.kind == "file").take(MAX_SCAN) {
        if let Some(st) = files.stat(&e.path) {
            s.0.insert(e.path.clone(), key(&st));
        }
    }
    s
}

/// The images in `outputs/` that are new or changed since `before`, within the caps.
pub fn collect(files: &Beneath, before: &Snapshot) -> Found {
    let mut found = Found::default();
    let Ok(w) = files.walk(OUTPUTS_DIR) else {
        return found;
    };
    let mut total = 0u64;
    for e in w.entries.iter().filter(|e| e.kind == "file").take(MAX_SCAN) {
        let Some(st) = files.stat(&e.path) else {
            continue;
        };
        if before.0.get(&e.path) == Some(&key(&st)) {
            continue;
        }
        let Ok(data) = files.read_head(&e.path, MAX_IMAGE, false) else {
            continue;
        };
        let Some(mime) = sniff(&data) else {
            continue;
        };
        let bytes = st.st_size as u64;
        let why = if data.len() as u64 > MAX_IMAGE {
            Some(format!(
                "it is {bytes} bytes, over the {MAX_IMAGE}-byte cap for an image in a result"
            ))
        } else if found.content.len() >= MAX_IMAGES {
            Some(format!("a result holds at most {MAX_IMAGES} images"))
        } else if total + bytes > MAX_TOTAL {
            Some(format!(
                "the images of one result hold at most {MAX_TOTAL} bytes together"
            ))
        } else {
            None
        };
        if why.is_none() {
            total += bytes;
            let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
            found.content.push((b64, mime));
        }
        found.refs.push(ImageRef {
            path: e.path.clone(),
            mime_type: mime.to_string(),
            bytes,
            shown: why.is_none(),
            why,
        });
    }
    found
}

/// What the text block says about the images of a run (empty when there were none); `uri`
/// makes the resource URI of a workspace path.
pub fn describe(refs: &[ImageRef], uri: impl Fn(&str) -> String) -> String {
    let mut t = String::new();
    for r in refs {
        match &r.why {
            None => t.push_str(&format!("[image {} ({} bytes) follows]\n", r.path, r.bytes)),
            Some(why) => t.push_str(&format!(
                "[image {} not shown: {why}; read it as the resource {}]\n",
                r.path,
                uri(&r.path)
            )),
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn types_are_told_by_content_not_name() {
        assert_eq!(sniff(PNG), Some("image/png"));
        assert_eq!(sniff(b"\xff\xd8\xff\xe0\0\x10JFIF"), Some("image/jpeg"));
        assert_eq!(sniff(b"GIF89a\x01\0"), Some("image/gif"));
        assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 "), Some("image/webp"));
        let svg = b"\xef\xbb\xbf<?xml version=\"1.0\"?>\n<!-- chart -->\n<svg xmlns=\"http://www.w3.org/2000/svg\"/>";
        assert_eq!(sniff(svg), Some("image/svg+xml"));
        assert_eq!(sniff(b"  <svg width=\"1\"></svg>"), Some("image/svg+xml"));
        // Not images: text that mentions svg, HTML, a PNG signature that is not at the start.
        assert_eq!(sniff(b"this file talks about <svg> tags"), None);
        assert_eq!(sniff(b"<html><body></body></html>"), None);
        assert_eq!(sniff(b"x\x89PNG\r\n\x1a\n"), None);
        assert_eq!(sniff(b""), None);
    }

    fn ws(name: &str) -> (std::path::PathBuf, Beneath) {
        let p =
            std::env::temp_dir().join(format!("sandlock-mcp-img-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        let b = Beneath::open(&p).unwrap();
        (p, b)
    }

    #[test]
    fn only_new_or_changed_images_in_outputs_are_returned_within_the_caps() {
        let (dir, b) = ws("collect");
        b.write("outputs/old.png", PNG, 1 << 30).unwrap();
        b.write("outputs/same-size.png", PNG, 1 << 30).unwrap();
        let before = snapshot(&b);
        assert!(has_outputs(&b));
        b.write("outputs/new.svg", b"<svg/>", 1 << 30).unwrap();
        b.write("outputs/data.csv", b"a,b\n1,2\n", 1 << 30).unwrap();
        b.write("outputs/chart.dat", PNG, 1 << 30).unwrap();
        b.write("elsewhere.png", PNG, 1 << 30).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        b.write("outputs/same-size.png", PNG, 1 << 30).unwrap();
        let mut big = PNG.to_vec();
        big.resize(MAX_IMAGE as usize + 1, 0);
        b.write("outputs/big.png", &big, 1 << 30).unwrap();
        let f = collect(&b, &before);
        let shown: Vec<_> = f.refs.iter().map(|r| (r.path.as_str(), r.shown)).collect();
        assert_eq!(
            shown,
            [
                ("outputs/big.png", false),
                ("outputs/chart.dat", true),
                ("outputs/new.svg", true),
                ("outputs/same-size.png", true),
            ]
        );
        assert_eq!(f.content.len(), 3);
        assert_eq!(f.content[1].1, "image/svg+xml");
        let text = describe(&f.refs, |p| format!("sandlock://ws/{p}"));
        assert!(
            text.contains("outputs/big.png not shown: it is 262145 bytes"),
            "{text}"
        );
        assert!(text.contains("sandlock://ws/outputs/big.png"), "{text}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_count_and_total_caps_name_what_they_leave_out() {
        let (dir, b) = ws("caps");
        let before = snapshot(&b);
        assert!(!has_outputs(&b));
        let mut img = PNG.to_vec();
        img.resize(100 * 1024, 0);
        for i in 0..6 {
            b.write(&format!("outputs/{i}.png"), &img, 1 << 30).unwrap();
        }
        let f = collect(&b, &before);
        assert_eq!(f.content.len(), 3, "384 KiB hold three of 100 KiB");
        assert!(
            f.refs[3]
                .why
                .as_deref()
                .unwrap()
                .contains("at most 393216 bytes")
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
