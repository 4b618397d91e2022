//! `edit_file`: an exact search and replace in a text file, answered with a unified diff.
//!
//! The search text must match exactly (whitespace and indentation included) and, unless every
//! occurrence is asked for, exactly once: a model that quotes a line which appears in three places
//! gets told so, instead of an edit in the wrong place.

use similar::TextDiff;

use super::{Beneath, FileError};

/// Largest file `edit_file` reads and rewrites.
pub const MAX_EDIT: u64 = 8 << 20;

/// Why an edit was not made, in words.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The search text is empty.
    #[error("search is empty; give the exact text to replace (read_file shows the file)")]
    EmptySearch,
    /// Search and replacement are the same text.
    #[error("search and replace are the same text; nothing would change")]
    NoChange,
    /// The search text is not in the file.
    #[error(
        "the search text was not found in {path:?}; it must match exactly, including whitespace, \
         indentation and line breaks (read_file shows the current text){hint}"
    )]
    NotFound {
        /// The path.
        path: String,
        /// Where a line like the first line of the search text is, if anywhere.
        hint: String,
    },
    /// The search text is in the file more than once and `all` was not set.
    #[error(
        "the search text was found {count} times in {path:?}; pass all=true to replace every \
         occurrence, or include more of the surrounding text so that it matches once"
    )]
    Ambiguous {
        /// The path.
        path: String,
        /// How many times it matched.
        count: usize,
    },
}

/// An edit that was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    /// Occurrences replaced.
    pub replacements: usize,
    /// The unified diff (`a/<path>` to `b/<path>`), cut to the budget it was asked for.
    pub diff: String,
    /// The diff was cut.
    pub diff_cut: bool,
    /// The file's size after the edit.
    pub bytes: u64,
}

/// Replaces `search` by `replace` in `text`: every occurrence when `all`, else the only one.
/// Returns the new text and the number of replacements.
pub fn replace(
    path: &str,
    text: &str,
    search: &str,
    replace: &str,
    all: bool,
) -> Result<(String, usize), EditError> {
    if search.is_empty() {
        return Err(EditError::EmptySearch);
    }
    if search == replace {
        return Err(EditError::NoChange);
    }
    let count = text.matches(search).count();
    match count {
        0 => Err(EditError::NotFound {
            path: path.into(),
            hint: near_miss(text, search),
        }),
        n if n > 1 && !all => Err(EditError::Ambiguous {
            path: path.into(),
            count: n,
        }),
        n => Ok((text.replace(search, replace), n)),
    }
}

/// Where the first line of `search`, with its whitespace ignored, does occur: the usual reason for
/// a miss is indentation or a line that changed since the model last read the file.
fn near_miss(text: &str, search: &str) -> String {
    let Some(first) = search.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return String::new();
    };
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == first)
        .map(|(i, _)| i + 1)
        .take(5)
        .collect();
    match lines.as_slice() {
        [] => String::new(),
        [one] => format!("; its first line, ignoring whitespace, is line {one}"),
        many => format!(
            "; its first line, ignoring whitespace, is on lines {}",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The unified diff from `old` to `new`, with three lines of context, cut after `budget` bytes.
pub fn diff(path: &str, old: &str, new: &str, budget: usize) -> (String, bool) {
    let mut d = TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string();
    if d.len() <= budget {
        return (d, false);
    }
    let total = d.lines().count();
    let mut cut = budget;
    while !d.is_char_boundary(cut) {
        cut -= 1;
    }
    if let Some(nl) = d[..cut].rfind('\n') {
        cut = nl + 1;
    }
    d.truncate(cut);
    d.push_str(&format!(
        "[the diff is cut here: {total} lines in all; read_file shows the result]\n"
    ));
    (d, true)
}

impl Beneath {
    /// Replaces `search` by `replace` in the text file `path` (see [`replace`]), within the
    /// workspace's `disk_cap`, and returns the diff cut to `diff_budget` bytes.
    pub fn edit(
        &self,
        path: &str,
        search: &str,
        replacement: &str,
        all: bool,
        disk_cap: u64,
        diff_budget: usize,
    ) -> Result<Edited, EditError> {
        let old = self.read_text(path, MAX_EDIT, "edit_file")?;
        let (new, replacements) = replace(path, &old, search, replacement, all)?;
        self.write(path, new.as_bytes(), disk_cap)?;
        let (diff, diff_cut) = diff(path, &old, &new, diff_budget);
        Ok(Edited {
            replacements,
            diff,
            diff_cut,
            bytes: new.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_match_is_replaced_and_the_diff_shows_it() {
        let (new, n) = replace("f.py", "a = 1\nb = 2\nc = 3\n", "b = 2", "b = 20", false).unwrap();
        assert_eq!((new.as_str(), n), ("a = 1\nb = 20\nc = 3\n", 1));
        let (d, cut) = diff("f.py", "a = 1\nb = 2\nc = 3\n", &new, 10_000);
        assert!(!cut);
        assert!(
            d.starts_with("--- a/f.py\n+++ b/f.py\n@@ -1,3 +1,3 @@\n"),
            "{d}"
        );
        assert!(d.contains("\n-b = 2\n+b = 20\n"), "{d}");
    }

    #[test]
    fn several_matches_need_all_and_say_how_many() {
        let text = "x\ny\nx\nx\n";
        let e = replace("f", text, "x", "z", false).unwrap_err();
        assert!(matches!(e, EditError::Ambiguous { count: 3, .. }), "{e}");
        assert!(e.to_string().contains("found 3 times"), "{e}");
        let (new, n) = replace("f", text, "x", "z", true).unwrap();
        assert_eq!((new.as_str(), n), ("z\ny\nz\nz\n", 3));
    }

    #[test]
    fn a_miss_is_an_error_with_a_hint_about_whitespace() {
        let text = "def f():\n    return 1\n";
        let e = replace("f.py", text, "return 2", "return 3", false).unwrap_err();
        assert!(matches!(e, EditError::NotFound { .. }), "{e}");
        let e = replace("f.py", text, "  return 1\n", "x", false);
        assert!(e.is_ok(), "a substring of a line matches exactly");
        let e = replace("f.py", text, "\treturn 1", "x", false).unwrap_err();
        assert!(
            e.to_string().contains("ignoring whitespace, is line 2"),
            "{e}"
        );
        assert!(matches!(
            replace("f", text, "", "x", false),
            Err(EditError::EmptySearch)
        ));
        assert!(matches!(
            replace("f", text, "f", "f", false),
            Err(EditError::NoChange)
        ));
    }

    #[test]
    fn a_long_diff_is_cut_at_a_line_and_says_so() {
        let old: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let new = old.replace("line", "LINE");
        let (d, cut) = diff("f", &old, &new, 500);
        assert!(cut && d.len() < 700, "{}", d.len());
        assert!(d.ends_with("read_file shows the result]\n"), "{d}");
    }
}
