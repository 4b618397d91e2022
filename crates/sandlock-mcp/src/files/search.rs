//! `glob_files` and `grep_files`: finding files by name pattern and lines by regular expression.
//!
//! Both walk the workspace with the same descriptors as every other file operation (each
//! directory opened with `openat2(RESOLVE_BENEATH)`, entries examined without following
//! symlinks), so a symlink planted by code never leads the walk outside. Symlinks are listed by
//! `glob_files` but neither descended into nor searched. The server's own `.sandlock/` directory
//! is left out unless the walk starts inside it.
//!
//! Everything is bounded: the entries a walk visits, the matches returned (and their size as JSON,
//! so that a result stays far below what a client accepts), the size of a file searched and the
//! bytes searched in all. A result that stops at a bound says which.

use std::io::Read;
use std::os::fd::AsRawFd;

use globset::{GlobBuilder, GlobMatcher};
use regex::bytes::RegexBuilder;
use serde::Serialize;

use super::{Beneath, Entry, FileError, components, fstat, fstatat, read_dir};
use crate::output::json_len;

/// Most entries one walk visits.
pub const MAX_WALK: usize = 100_000;
/// Largest file `grep_files` searches (larger ones are counted as skipped).
pub const MAX_GREP_FILE: u64 = 16 << 20;
/// Most bytes one `grep_files` call reads in all.
pub const MAX_GREP_BYTES: u64 = 512 << 20;
/// Characters of a matching line that are returned.
pub const MAX_LINE_CHARS: usize = 400;
/// The server's own directory in a workspace (saved outputs), left out of walks.
const OWN_DIR: &str = ".sandlock";

/// Why a search could not run, in words.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// The starting path.
    #[error(transparent)]
    File(#[from] FileError),
    /// The glob pattern is malformed or leaves the workspace.
    #[error("the glob pattern {pattern:?} {why}")]
    Glob {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        why: String,
    },
    /// The regular expression is malformed or too large.
    #[error(
        "the pattern {pattern:?} is not a valid regular expression: {why} (the syntax is Rust's \
         regex crate, like Python's re without look-around and backreferences)"
    )]
    Regex {
        /// The pattern.
        pattern: String,
        /// The parser's message.
        why: String,
    },
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Walked {
    /// Entries beneath the start, with paths relative to the workspace, sorted.
    pub entries: Vec<Entry>,
    /// The walk stopped at [`MAX_WALK`] entries.
    pub cut: bool,
}

/// Files and directories whose paths match a glob.
#[derive(Debug)]
pub struct Globbed {
    /// The matches (paths relative to the workspace), sorted, at most the limit.
    pub matches: Vec<Entry>,
    /// Matches there were in all (more than `matches.len()` when the limit cut them).
    pub total: usize,
    /// The walk stopped at [`MAX_WALK`] entries, so there may be more.
    pub walk_cut: bool,
}

/// One matching line.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct LineMatch {
    /// The file, relative to the workspace.
    pub path: String,
    /// The line number (1-based).
    pub line: u64,
    /// The line's text (invalid UTF-8 replaced; cut after 400 characters, marked with `…`).
    pub text: String,
}

/// What `grep` found.
#[derive(Debug, Default)]
pub struct Grepped {
    /// Matching lines, in file order then line order.
    pub matches: Vec<LineMatch>,
    /// The matches stopped at the count or size bound: there are more.
    pub truncated: bool,
    /// Files searched.
    pub files_searched: u64,
    /// Files skipped as binary (a NUL byte in their first 8 KiB).
    pub binary_skipped: u64,
    /// Files skipped as larger than [`MAX_GREP_FILE`].
    pub large_skipped: u64,
    /// The walk stopped at [`MAX_WALK`] entries or [`MAX_GREP_BYTES`] read.
    pub walk_cut: bool,
}

/// A compiled glob. Without a `/` it matches file names at any depth (`*.py`), like a shell's
/// `**/*.py`; with one, paths relative to the start (`src/**/*.ts`). `*` never crosses a `/`;
/// `**` does; `{a,b}` and `[a-z]` work as in shells.
fn compile_glob(pattern: &str) -> Result<(GlobMatcher, bool), SearchError> {
    let bad = |why: &str| SearchError::Glob {
        pattern: pattern.into(),
        why: why.into(),
    };
    if pattern.is_empty() {
        return Err(bad("is empty; e.g. **/*.py"));
    }
    if pattern.starts_with('/') {
        return Err(bad(
            "is absolute; patterns are relative to the workspace (or to path)",
        ));
    }
    if pattern.split('/').any(|c| c == "..") {
        return Err(bad(
            "contains \"..\"; patterns must stay inside the workspace",
        ));
    }
    let g = GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| bad(&format!("is malformed: {}", e.kind())))?;
    Ok((g.compile_matcher(), pattern.contains('/')))
}

/// The part of `path` (relative to the workspace) below `base` (also relative to it).
fn below<'a>(path: &'a str, base: &str) -> &'a str {
    if base.is_empty() {
        return path;
    }
    path.strip_prefix(base)
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or(path)
}

fn matches_glob(g: &GlobMatcher, by_path: bool, path: &str, base: &str) -> bool {
    let rel = below(path, base);
    if by_path {
        g.is_match(rel)
    } else {
        g.is_match(rel.rsplit('/').next().unwrap_or(rel))
    }
}

impl Beneath {
    /// Every entry beneath the directory `base` (relative to the workspace), depth first, at most
    /// [`MAX_WALK`]. Symlinks are listed, not followed.
    pub fn walk(&self, base: &str) -> Result<Walked, FileError> {
        let start = components(base)?.join("/");
        let skip_own = !(start == OWN_DIR || start.starts_with(".sandlock/"));
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        let shown = if start.is_empty() { "." } else { base };
        let mut first = Some(self.open_at(&start, flags, 0, shown)?);
        let mut out = Walked::default();
        let mut todo = vec![start];
        while let Some(dir) = todo.pop() {
            // A directory that vanished or was swapped for a symlink during the walk is skipped.
            let Some(fd) = first
                .take()
                .or_else(|| self.open_at(&dir, flags, 0, &dir).ok())
            else {
                continue;
            };
            let Ok(mut names) = read_dir(fd.as_raw_fd()) else {
                continue;
            };
            names.sort();
            for name in names.into_iter().rev() {
                if out.entries.len() >= MAX_WALK {
                    out.cut = true;
                    break;
                }
                if skip_own && dir.is_empty() && name == OWN_DIR {
                    continue;
                }
                let Ok(c) = std::ffi::CString::new(name.as_bytes()) else {
                    continue;
                };
                let Some(st) = fstatat(fd.as_raw_fd(), &c) else {
                    continue;
                };
                let path = if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                };
                let kind = match st.st_mode & libc::S_IFMT {
                    libc::S_IFREG => "file",
                    libc::S_IFDIR => "dir",
                    libc::S_IFLNK => "symlink",
                    _ => "other",
                };
                if kind == "dir" {
                    todo.push(path.clone());
                }
                out.entries.push(Entry {
                    path,
                    kind,
                    size: if kind == "dir" { 0 } else { st.st_size as u64 },
                });
            }
            if out.cut {
                break;
            }
        }
        out.entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Entries beneath `base` whose path matches `pattern` (see [`compile_glob`]), at most
    /// `limit` of them.
    pub fn glob(&self, pattern: &str, base: &str, limit: usize) -> Result<Globbed, SearchError> {
        let (g, by_path) = compile_glob(pattern)?;
        let base_rel = components(base)?.join("/");
        let walked = self.walk(&base_rel)?;
        let mut matches: Vec<Entry> = walked
            .entries
            .into_iter()
            .filter(|e| matches_glob(&g, by_path, &e.path, &base_rel))
            .collect();
        let total = matches.len();
        matches.truncate(limit);
        Ok(Globbed {
            matches,
            total,
            walk_cut: walked.cut,
        })
    }

    /// Lines matching the regular expression `pattern` in the files beneath `base` (a directory,
    /// or a single file) whose names or paths match `glob`; at most `limit` lines, and no more
    /// than `budget` bytes of them as JSON.
    pub fn grep(
        &self,
        pattern: &str,
        base: &str,
        glob: Option<&str>,
        ignore_case: bool,
        limit: usize,
        budget: usize,
    ) -> Result<Grepped, SearchError> {
        let re = RegexBuilder::new(pattern)
            .case_insensitive(ignore_case)
            .size_limit(1 << 20)
            .dfa_size_limit(4 << 20)
            .build()
            .map_err(|e| SearchError::Regex {
                pattern: pattern.into(),
                why: e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .into(),
            })?;
        let filter = glob
            .filter(|g| !g.is_empty())
            .map(compile_glob)
            .transpose()?;
        let base_rel = components(base)?.join("/");
        let start = self.open_at(&base_rel, libc::O_PATH, 0, base)?;
        let is_file = fstat(&start).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG);
        let (files, walk_cut) = if is_file {
            (vec![base_rel.clone()], false)
        } else {
            let w = self.walk(&base_rel)?;
            let files = w
                .entries
                .into_iter()
                .filter(|e| e.kind == "file")
                .map(|e| e.path)
                .filter(|p| {
                    filter
                        .as_ref()
                        .is_none_or(|(g, by_path)| matches_glob(g, *by_path, p, &base_rel))
                })
                .collect();
            (files, w.cut)
        };
        let mut out = Grepped {
            walk_cut,
            ..Grepped::default()
        };
        let mut used = 0usize;
        let mut read_total = 0u64;
        'files: for path in files {
            let Some(data) = self.grep_read(&path, &mut out) else {
                continue;
            };
            read_total += data.len() as u64;
            if read_total > MAX_GREP_BYTES {
                out.walk_cut = true;
                break;
            }
            out.files_searched += 1;
            for (i, line) in data.split(|b| *b == b'\n').enumerate() {
                if !re.is_match(line) {
                    continue;
                }
                let text = line_text(line);
                let cost = json_len(&text) + json_len(&path) + 40;
                if out.matches.len() >= limit || used + cost > budget {
                    out.truncated = true;
                    break 'files;
                }
                used += cost;
                out.matches.push(LineMatch {
                    path: path.clone(),
                    line: i as u64 + 1,
                    text,
                });
            }
        }
        Ok(out)
    }

    /// The contents of a file to search, or `None` (counted in `out`) when it is binary, too
    /// large, or gone.
    fn grep_read(&self, path: &str, out: &mut Grepped) -> Option<Vec<u8>> {
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW;
        let fd = self.open_at(path, flags, 0, path).ok()?;
        let st = fstat(&fd).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return None;
        }
        if st.st_size as u64 > MAX_GREP_FILE {
            out.large_skipped += 1;
            return None;
        }
        let mut data = Vec::with_capacity(st.st_size as usize);
        std::fs::File::from(fd)
            .take(MAX_GREP_FILE)
            .read_to_end(&mut data)
            .ok()?;
        if data.iter().take(8192).any(|b| *b == 0) {
            out.binary_skipped += 1;
            return None;
        }
        Some(data)
    }
}

/// A matching line as returned: without its line break, cut after [`MAX_LINE_CHARS`] characters.
fn line_text(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let s = String::from_utf8_lossy(line);
    match s.char_indices().nth(MAX_LINE_CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Tmp(std::path::PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tmp(name: &str) -> (Tmp, Beneath) {
        let p =
            std::env::temp_dir().join(format!("sandlock-mcp-search-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("ws")).unwrap();
        std::fs::write(p.join("secret.py"), "password = 1\n").unwrap();
        let b = Beneath::open(&p.join("ws")).unwrap();
        for (f, text) in [
            ("a.py", "import os\nprint('hello')\n"),
            ("src/b.py", "def hello():\n    return 2\n"),
            ("src/deep/c.ts", "export const hello = 3;\n"),
            ("notes.txt", "Hello there\n"),
            (".sandlock/outputs/1.stdout", "hello from a saved output\n"),
        ] {
            b.write(f, text.as_bytes(), 1 << 20).unwrap();
        }
        (Tmp(p), b)
    }

    fn paths(es: &[Entry]) -> Vec<&str> {
        es.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn glob_matches_names_at_any_depth_or_paths_with_double_star() {
        let (_t, b) = tmp("glob");
        let g = b.glob("*.py", "", 100).unwrap();
        assert_eq!(paths(&g.matches), ["a.py", "src/b.py"]);
        let g = b.glob("src/**/*.{py,ts}", "", 100).unwrap();
        assert_eq!(paths(&g.matches), ["src/b.py", "src/deep/c.ts"]);
        let g = b.glob("*/*.py", "", 100).unwrap();
        assert_eq!(paths(&g.matches), ["src/b.py"], "* does not cross a /");
        // Relative to a starting directory; the paths returned stay workspace-relative.
        let g = b.glob("deep/*", "src", 100).unwrap();
        assert_eq!(paths(&g.matches), ["src/deep/c.ts"]);
        // The limit cuts and says how many there were.
        let g = b.glob("**", "", 2).unwrap();
        assert_eq!((g.matches.len(), g.total), (2, 6));
        // The server's own directory is left out, unless the walk starts in it.
        assert!(b.glob("*.stdout", "", 100).unwrap().matches.is_empty());
        assert_eq!(b.glob("*.stdout", ".sandlock", 100).unwrap().total, 1);
    }

    #[test]
    fn glob_refuses_patterns_and_paths_that_leave_the_workspace() {
        let (t, b) = tmp("glob-escape");
        for p in ["../*.py", "/etc/*", "src/../../*"] {
            let e = b.glob(p, "", 10).unwrap_err();
            assert!(matches!(e, SearchError::Glob { .. }), "{p}: {e}");
        }
        assert!(matches!(
            b.glob("*", "..", 10),
            Err(SearchError::File(FileError::DotDot(_)))
        ));
        // A symlink to outside is listed as a symlink and never walked into.
        symlink(&t.0, t.0.join("ws/out")).unwrap();
        let g = b.glob("**/*.py", "", 100).unwrap();
        assert_eq!(paths(&g.matches), ["a.py", "src/b.py"]);
        assert!(matches!(
            b.glob("*", "out", 10),
            Err(SearchError::File(FileError::Escapes(_)))
        ));
    }

    #[test]
    fn grep_finds_lines_with_numbers_and_skips_binary_files() {
        let (_t, b) = tmp("grep");
        b.write("bin.dat", b"hello\0\x01\x02", 1 << 20).unwrap();
        let g = b.grep("hello", "", None, false, 100, 1 << 20).unwrap();
        let found: Vec<_> = g
            .matches
            .iter()
            .map(|m| (m.path.as_str(), m.line, m.text.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("a.py", 2, "print('hello')"),
                ("src/b.py", 1, "def hello():"),
                ("src/deep/c.ts", 1, "export const hello = 3;"),
            ]
        );
        assert_eq!((g.binary_skipped, g.files_searched), (1, 4));
        let g = b.grep("^hello", "", None, true, 100, 1 << 20).unwrap();
        assert_eq!(g.matches.len(), 1, "case-insensitive: notes.txt");
        let g = b
            .grep("hello", "src", Some("*.ts"), false, 100, 1 << 20)
            .unwrap();
        assert_eq!(g.matches.len(), 1);
        // A single file as the start.
        let g = b.grep("os", "a.py", None, false, 100, 1 << 20).unwrap();
        assert_eq!(g.matches.len(), 1);
        // Bounds: a count, then a JSON size.
        let g = b.grep("hello", "", None, false, 2, 1 << 20).unwrap();
        assert!(g.truncated && g.matches.len() == 2);
        let g = b.grep("hello", "", None, false, 100, 60).unwrap();
        assert!(g.truncated && g.matches.len() == 1);
        let e = b.grep("(unclosed", "", None, false, 10, 1000).unwrap_err();
        assert!(matches!(e, SearchError::Regex { .. }), "{e}");
    }

    #[test]
    fn grep_does_not_follow_a_symlink_out_of_the_workspace() {
        let (t, b) = tmp("grep-escape");
        symlink(t.0.join("secret.py"), t.0.join("ws/link.py")).unwrap();
        symlink(&t.0, t.0.join("ws/outdir")).unwrap();
        let g = b.grep("password", "", None, false, 100, 1 << 20).unwrap();
        assert!(g.matches.is_empty(), "{:?}", g.matches);
        assert!(matches!(
            b.grep("password", "link.py", None, false, 10, 1000),
            Err(SearchError::File(FileError::Escapes(_)))
        ));
        // Control: the same search finds the word once it is inside.
        b.write("inside.py", b"password = 2\n", 1 << 20).unwrap();
        let g = b.grep("password", "", None, false, 100, 1 << 20).unwrap();
        assert_eq!(g.matches.len(), 1);
    }

    #[test]
    fn long_lines_are_cut_and_marked() {
        let t = line_text("é".repeat(1000).as_bytes());
        assert_eq!(t.chars().count(), MAX_LINE_CHARS + 1);
        assert!(t.ends_with('…'));
        assert_eq!(line_text(b"abc\r"), "abc");
    }
}
