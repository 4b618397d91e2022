//! File tools, resolved strictly beneath a workspace directory.
//!
//! Every path a caller gives is relative to the workspace. It is checked twice: lexically (no
//! absolute path, no `..`, no NUL), and then by the kernel, because every open goes through
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` relative to a descriptor of the workspace. A
//! symlink that the sandboxed code planted, pointing at `/etc` or at another session's workspace,
//! therefore fails with `EXDEV` at the moment of the open, with no window between a check and a use.
//! Final components are opened with `O_NOFOLLOW` when writing, editing, moving or deleting, so a
//! symlink is never written through or mistaken for its target.
//!
//! [`edit`] (search and replace, with a unified diff) and [`search`] (glob and grep over a
//! walk of the workspace) build on the operations here.

use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::Serialize;

pub mod edit;
pub mod search;

/// Why a file operation failed, in words a caller (often a language model) can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The path is absolute.
    #[error(
        "{0:?} is an absolute path; paths are relative to the workspace, e.g. \"data/input.csv\""
    )]
    Absolute(String),
    /// The path has a `..` component.
    #[error("{0:?} contains \"..\"; paths must stay inside the workspace")]
    DotDot(String),
    /// The path is empty where a file is needed, or holds a NUL byte.
    #[error("{0:?} is not a usable file path")]
    Invalid(String),
    /// The kernel refused to resolve the path beneath the workspace.
    #[error("{0:?} leads outside the workspace (through a symlink); access refused")]
    Escapes(String),
    /// The final component is a symlink.
    #[error(
        "{0:?} is a symlink; read_file follows symlinks that stay inside the workspace, but the \
         tools that change files do not act through them"
    )]
    Symlink(String),
    /// The destination of a move exists and replacing it was not asked for.
    #[error(
        "{0:?} already exists; pass overwrite=true to replace it, or choose another destination"
    )]
    Exists(String),
    /// A directory cannot move beneath itself.
    #[error("cannot move {0:?} into itself ({1:?} is beneath it)")]
    IntoItself(String, String),
    /// No such file or directory.
    #[error("{0:?} does not exist in the workspace (list_files shows what does)")]
    NotFound(String),
    /// Not a regular file (a directory, FIFO or device).
    #[error("{0:?} is {1}, not a regular file")]
    NotRegular(String, &'static str),
    /// Not a directory.
    #[error("{0:?} is not a directory")]
    NotDir(String),
    /// A directory that still has entries.
    #[error("{0:?} is a directory that is not empty; delete its files first")]
    NotEmpty(String),
    /// The file is larger than the operation accepts.
    #[error(
        "{path:?} is {size} bytes; {op} works on files of at most {cap} bytes (process it with \
         execute_python or execute_shell instead)"
    )]
    TooLarge {
        /// The path.
        path: String,
        /// What was being done.
        op: &'static str,
        /// Its size.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// The content is not UTF-8.
    #[error("{0:?} is not UTF-8 text; read binary files with execute_python (e.g. base64)")]
    NotText(String),
    /// The write would take the workspace over its disk cap.
    #[error(
        "writing {bytes} bytes to {path:?} would take the workspace to {after} bytes, over its disk cap of {cap} bytes; delete files first"
    )]
    DiskCap {
        /// The path.
        path: String,
        /// Bytes to write.
        bytes: u64,
        /// Usage after the write.
        after: u64,
        /// The cap.
        cap: u64,
    },
    /// Any other system error.
    #[error("{op} {path:?}: {err}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: String,
        /// The error.
        err: std::io::Error,
    },
}

/// One entry of a directory listing.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Entry {
    /// Path relative to the workspace.
    pub path: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Size in bytes (0 for directories).
    pub size: u64,
}

/// Largest file `read_lines` scans (it counts every line).
pub const MAX_SCAN: u64 = 1 << 30;

/// Lines of a file, as `read_lines` returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lines {
    /// The text of lines `first..=last`.
    pub content: String,
    /// Lines in the whole file (a last line without a newline counts).
    pub total_lines: u64,
    /// The first line returned (1-based).
    pub first: u64,
    /// The last line returned (`first - 1` when none was).
    pub last: u64,
    /// Bytes in the file.
    pub bytes: u64,
    /// The range did not fit the budget: lines after `last` were left out (or line `last` itself
    /// was cut, when it alone is longer than the budget).
    pub cut: bool,
}

/// Splits a caller's path into checked components (`.` and empty ones dropped).
pub fn components(path: &str) -> Result<Vec<&str>, FileError> {
    if path.contains('\0') {
        return Err(FileError::Invalid(path.into()));
    }
    if path.starts_with('/') {
        return Err(FileError::Absolute(path.into()));
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(FileError::DotDot(path.into()));
    }
    Ok(parts)
}

/// A workspace directory, held open so that every path resolves beneath it.
#[derive(Debug)]
pub struct Beneath {
    root: OwnedFd,
}

fn cstr(s: &str) -> Result<CString, FileError> {
    CString::new(s).map_err(|_| FileError::Invalid(s.into()))
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

impl Beneath {
    /// Opens `dir` (which must be a real directory, not a symlink).
    pub fn open(dir: &Path) -> std::io::Result<Beneath> {
        let c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `c` is a valid C string; the result is checked.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: open just returned this descriptor and nothing else owns it.
        Ok(Beneath {
            root: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// `openat2` beneath the workspace. `rel` must come from [`components`] joined with `/`.
    fn open_at(&self, rel: &str, flags: i32, mode: u32, shown: &str) -> Result<OwnedFd, FileError> {
        let rel = if rel.is_empty() { "." } else { rel };
        let c = cstr(rel)?;
        let how = open_how(
            flags,
            if flags & libc::O_CREAT != 0 { mode } else { 0 },
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
        );
        loop {
            // SAFETY: openat2 reads `how` (of the size we pass) and the C string.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.root.as_raw_fd(),
                    c.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            if fd >= 0 {
                // SAFETY: openat2 returned a new descriptor we now own.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
            }
            match errno() {
                libc::EAGAIN | libc::EINTR => continue,
                libc::EXDEV => return Err(FileError::Escapes(shown.into())),
                libc::ELOOP if flags & libc::O_NOFOLLOW != 0 => {
                    return Err(FileError::Symlink(shown.into()));
                }
                libc::ENOENT => return Err(FileError::NotFound(shown.into())),
                libc::ENOTDIR => return Err(FileError::NotDir(shown.into())),
                e => {
                    return Err(FileError::Io {
                        op: "open",
                        path: shown.into(),
                        err: std::io::Error::from_raw_os_error(e),
                    });
                }
            }
        }
    }

    /// Reads lines `start..=end` (1-based; `end` defaults to the last) of a text file, as many as
    /// fit `budget` bytes of JSON, and counts all of its lines. Invalid UTF-8 is replaced; a file
    /// with NUL bytes in its first 8 KiB is refused as binary.
    pub fn read_lines(
        &self,
        path: &str,
        start: u64,
        end: Option<u64>,
        budget: usize,
    ) -> Result<Lines, FileError> {
        use std::io::BufRead;
        let (file, size) = self.open_file(path)?;
        if size > MAX_SCAN {
            return Err(FileError::TooLarge {
                path: path.into(),
                op: "read_file",
                size,
                cap: MAX_SCAN,
            });
        }
        let io = |err| FileError::Io {
            op: "read",
            path: path.into(),
            err,
        };
        let mut r = std::io::BufReader::with_capacity(64 << 10, file);
        let start = start.max(1);
        let mut out = Lines {
            content: String::new(),
            total_lines: 0,
            first: start,
            last: start - 1,
            bytes: size,
            cut: false,
        };
        let mut used = 0usize;
        let mut line = Vec::new();
        let mut head_checked = false;
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line).map_err(io)? == 0 {
                break;
            }
            out.total_lines += 1;
            if !head_checked {
                let probe = r.buffer();
                if line.contains(&0) || probe.iter().take(8192).any(|b| *b == 0) {
                    return Err(FileError::NotText(path.into()));
                }
                head_checked = true;
            }
            let n = out.total_lines;
            if n < start || end.is_some_and(|e| n > e) || out.cut {
                continue;
            }
            let text = String::from_utf8_lossy(&line);
            let cost = crate::output::json_len(&text);
            if used + cost > budget {
                if out.content.is_empty() {
                    // One line longer than the whole budget: its beginning, said to be cut.
                    let mut end = 0;
                    let mut spent = 0;
                    for (i, c) in text.char_indices() {
                        spent += crate::output::json_len(c.encode_utf8(&mut [0; 4]));
                        if spent > budget {
                            break;
                        }
                        end = i + c.len_utf8();
                    }
                    out.content.push_str(&text[..end]);
                    out.last = n;
                }
                out.cut = true;
                continue;
            }
            used += cost;
            out.content.push_str(&text);
            out.last = n;
        }
        Ok(out)
    }

    /// Opens the regular file `path` for reading (symlinks are followed only while they stay
    /// beneath the workspace) and returns it with its size.
    pub fn open_file(&self, path: &str) -> Result<(std::fs::File, u64), FileError> {
        let parts = components(path)?;
        if parts.is_empty() {
            return Err(FileError::Invalid(path.into()));
        }
        let fd = self.open_at(&parts.join("/"), libc::O_RDONLY | libc::O_NONBLOCK, 0, path)?;
        let st = fstat(&fd).map_err(|err| FileError::Io {
            op: "stat",
            path: path.into(),
            err,
        })?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(FileError::NotRegular(path.into(), kind_of(st.st_mode)));
        }
        Ok((std::fs::File::from(fd), st.st_size as u64))
    }

    /// Writes `content` to `path`, creating missing parent directories, refusing to exceed
    /// `disk_cap` bytes for the whole workspace.
    pub fn write(&self, path: &str, content: &[u8], disk_cap: u64) -> Result<(), FileError> {
        let parts = components(path)?;
        if parts.is_empty() {
            return Err(FileError::Invalid(path.into()));
        }
        let usage = self.usage();
        let existing = self
            .open_at(&parts.join("/"), libc::O_PATH | libc::O_NOFOLLOW, 0, path)
            .ok()
            .and_then(|fd| fstat(&fd).ok())
            .filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
            .map_or(0, |st| st.st_size as u64);
        let after = usage.saturating_sub(existing) + content.len() as u64;
        if after > disk_cap {
            return Err(FileError::DiskCap {
                path: path.into(),
                bytes: content.len() as u64,
                after,
                cap: disk_cap,
            });
        }
        self.create(path)?
            .write_all(content)
            .map_err(|err| FileError::Io {
                op: "write",
                path: path.into(),
                err,
            })
    }

    /// Creates (or truncates) the regular file `path`, open for reading and writing, creating
    /// missing parent directories. A symlink in its place is refused, never written through.
    pub fn create(&self, path: &str) -> Result<std::fs::File, FileError> {
        let parts = components(path)?;
        let Some((name, dirs)) = parts.split_last() else {
            return Err(FileError::Invalid(path.into()));
        };
        let dir = self.make_dirs(dirs, path)?;
        let c = cstr(name)?;
        let how = open_how(
            libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0o644,
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
        );
        // SAFETY: as in open_at.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(match errno() {
                libc::ELOOP | libc::EXDEV => FileError::Symlink(path.into()),
                libc::EISDIR => FileError::NotRegular(path.into(), "a directory"),
                e => FileError::Io {
                    op: "create",
                    path: path.into(),
                    err: std::io::Error::from_raw_os_error(e),
                },
            });
        }
        // SAFETY: openat2 returned a new descriptor we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let st = fstat(&fd).map_err(|err| FileError::Io {
            op: "stat",
            path: path.into(),
            err,
        })?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(FileError::NotRegular(path.into(), kind_of(st.st_mode)));
        }
        Ok(std::fs::File::from(fd))
    }

    /// Opens (creating as needed) the directory `dirs` beneath the workspace.
    fn make_dirs(&self, dirs: &[&str], shown: &str) -> Result<OwnedFd, FileError> {
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        let mut done = String::new();
        let mut fd = self.open_at("", flags, 0, shown)?;
        for d in dirs {
            if !done.is_empty() {
                done.push('/');
            }
            done.push_str(d);
            match self.open_at(&done, flags, 0, shown) {
                Ok(next) => fd = next,
                Err(FileError::NotFound(_)) => {
                    let c = cstr(d)?;
                    // SAFETY: mkdirat on a directory descriptor we own, with a valid C string.
                    if unsafe { libc::mkdirat(fd.as_raw_fd(), c.as_ptr(), 0o755) } < 0
                        && errno() != libc::EEXIST
                    {
                        return Err(FileError::Io {
                            op: "mkdir",
                            path: done,
                            err: std::io::Error::last_os_error(),
                        });
                    }
                    fd = self.open_at(&done, flags, 0, shown)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(fd)
    }

    /// Lists `path` (the workspace itself when empty), recursively if asked, up to `limit` entries.
    pub fn list(
        &self,
        path: &str,
        recursive: bool,
        limit: usize,
    ) -> Result<(Vec<Entry>, bool), FileError> {
        let parts = components(path)?;
        let base = parts.join("/");
        let mut out = Vec::new();
        let mut todo = vec![base.clone()];
        let mut truncated = false;
        while let Some(dir) = todo.pop() {
            let shown = if dir.is_empty() { "." } else { dir.as_str() };
            let fd = self.open_at(&dir, libc::O_RDONLY | libc::O_DIRECTORY, 0, shown)?;
            let mut names = read_dir(fd.as_raw_fd()).map_err(|err| FileError::Io {
                op: "list",
                path: shown.into(),
                err,
            })?;
            names.sort();
            for name in names {
                if out.len() >= limit {
                    truncated = true;
                    break;
                }
                let Ok(c) = CString::new(name.as_bytes()) else {
                    continue;
                };
                let Some(st) = fstatat(fd.as_raw_fd(), &c) else {
                    continue;
                };
                let rel = if dir.is_empty() {
                    name.clone()
                } else {
                    format!("{dir}/{name}")
                };
                let kind = match st.st_mode & libc::S_IFMT {
                    libc::S_IFREG => "file",
                    libc::S_IFDIR => "dir",
                    libc::S_IFLNK => "symlink",
                    _ => "other",
                };
                if kind == "dir" && recursive {
                    todo.push(rel.clone());
                }
                out.push(Entry {
                    path: rel,
                    kind,
                    size: if kind == "dir" { 0 } else { st.st_size as u64 },
                });
            }
            if truncated {
                break;
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((out, truncated))
    }

    /// The status of `path` itself (a symlink is not followed), or `None` when there is nothing
    /// there (or it cannot be reached beneath the workspace).
    pub fn stat(&self, path: &str) -> Option<libc::stat> {
        let rel = components(path).ok()?.join("/");
        let fd = self
            .open_at(&rel, libc::O_PATH | libc::O_NOFOLLOW, 0, path)
            .ok()?;
        fstat(&fd).ok()
    }

    /// Reads at most `cap + 1` bytes of the regular file `path`, so that a caller can tell a file
    /// over its cap. A symlink that stays inside the workspace is followed when `follow` is set
    /// (as `read_file` does), else refused.
    pub fn read_head(&self, path: &str, cap: u64, follow: bool) -> Result<Vec<u8>, FileError> {
        use std::io::Read;
        let rel = components(path)?.join("/");
        if rel.is_empty() {
            return Err(FileError::Invalid(path.into()));
        }
        let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | nofollow;
        let fd = self.open_at(&rel, flags, 0, path)?;
        let st = fstat(&fd).map_err(|err| FileError::Io {
            op: "stat",
            path: path.into(),
            err,
        })?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(FileError::NotRegular(path.into(), kind_of(st.st_mode)));
        }
        let mut data = Vec::new();
        std::fs::File::from(fd)
            .take(cap + 1)
            .read_to_end(&mut data)
            .map_err(|err| FileError::Io {
                op: "read",
                path: path.into(),
                err,
            })?;
        Ok(data)
    }

    /// Reads the whole of a UTF-8 text file of at most `cap` bytes, for `op` (named in errors).
    /// A symlink is refused, as for writing: the text read is the text that will be replaced.
    pub fn read_text(&self, path: &str, cap: u64, op: &'static str) -> Result<String, FileError> {
        let data = self.read_head(path, cap, false)?;
        if data.len() as u64 > cap {
            let size = self
                .stat(path)
                .map_or(data.len() as u64, |st| st.st_size as u64);
            return Err(FileError::TooLarge {
                path: path.into(),
                op,
                size,
                cap,
            });
        }
        String::from_utf8(data).map_err(|_| FileError::NotText(path.into()))
    }

    /// Moves (renames) `from` to `to` within the workspace, creating the missing parents of `to`.
    /// An existing `to` is replaced only when `overwrite` is set; returns whether one was. The
    /// final components are never followed: a symlink moves as a link.
    pub fn rename(&self, from: &str, to: &str, overwrite: bool) -> Result<bool, FileError> {
        let src = components(from)?;
        let dst = components(to)?;
        let (Some((src_name, src_dirs)), Some((dst_name, dst_dirs))) =
            (src.split_last(), dst.split_last())
        else {
            return Err(FileError::Invalid(
                if src.is_empty() { from } else { to }.into(),
            ));
        };
        if dst.len() > src.len() && dst[..src.len()] == src[..] {
            return Err(FileError::IntoItself(from.into(), to.into()));
        }
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        let src_dir = self.open_at(&src_dirs.join("/"), flags, 0, from)?;
        let (src_c, dst_c) = (cstr(src_name)?, cstr(dst_name)?);
        if fstatat(src_dir.as_raw_fd(), &src_c).is_none() {
            return Err(FileError::NotFound(from.into()));
        }
        let dst_dir = self.make_dirs(dst_dirs, to)?;
        let replaced = fstatat(dst_dir.as_raw_fd(), &dst_c).is_some();
        if replaced && !overwrite {
            return Err(FileError::Exists(to.into()));
        }
        let flags = if overwrite { 0 } else { libc::RENAME_NOREPLACE };
        // SAFETY: renameat2 on two directory descriptors we own, with valid C strings. A raw
        // system call: the musl that Rust's static target links has no renameat2 wrapper.
        let r = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                src_dir.as_raw_fd(),
                src_c.as_ptr(),
                dst_dir.as_raw_fd(),
                dst_c.as_ptr(),
                flags,
            )
        };
        if r == 0 {
            return Ok(replaced);
        }
        Err(match errno() {
            libc::EEXIST if !overwrite => FileError::Exists(to.into()),
            libc::ENOENT => FileError::NotFound(from.into()),
            libc::EINVAL if dst.starts_with(&src) => FileError::IntoItself(from.into(), to.into()),
            libc::EISDIR => FileError::NotRegular(to.into(), "a directory"),
            libc::ENOTEMPTY | libc::EEXIST => FileError::NotEmpty(to.into()),
            e => FileError::Io {
                op: "move",
                path: from.into(),
                err: std::io::Error::from_raw_os_error(e),
            },
        })
    }

    /// Deletes a file, a symlink (not its target) or an empty directory.
    pub fn delete(&self, path: &str) -> Result<(), FileError> {
        let parts = components(path)?;
        let Some((name, dirs)) = parts.split_last() else {
            return Err(FileError::Invalid(path.into()));
        };
        let dir = self.open_at(&dirs.join("/"), libc::O_PATH | libc::O_DIRECTORY, 0, path)?;
        let c = cstr(name)?;
        // SAFETY: unlinkat relative to a directory descriptor we own, with a valid C string.
        if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } == 0 {
            return Ok(());
        }
        let e = errno();
        if e == libc::EISDIR {
            // SAFETY: as above.
            if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) } == 0 {
                return Ok(());
            }
            return Err(match errno() {
                libc::ENOTEMPTY | libc::EEXIST => FileError::NotEmpty(path.into()),
                e => FileError::Io {
                    op: "delete",
                    path: path.into(),
                    err: std::io::Error::from_raw_os_error(e),
                },
            });
        }
        Err(match e {
            libc::ENOENT => FileError::NotFound(path.into()),
            e => FileError::Io {
                op: "delete",
                path: path.into(),
                err: std::io::Error::from_raw_os_error(e),
            },
        })
    }

    /// Bytes stored in the workspace (regular files, counted by allocated blocks or size,
    /// whichever is larger). Symlinks are not followed.
    pub fn usage(&self) -> u64 {
        let mut total = 0u64;
        let mut todo = vec![String::new()];
        while let Some(dir) = todo.pop() {
            let Ok(fd) = self.open_at(&dir, libc::O_RDONLY | libc::O_DIRECTORY, 0, &dir) else {
                continue;
            };
            let Ok(names) = read_dir(fd.as_raw_fd()) else {
                continue;
            };
            for name in names {
                let Ok(c) = CString::new(name.as_bytes()) else {
                    continue;
                };
                let Some(st) = fstatat(fd.as_raw_fd(), &c) else {
                    continue;
                };
                match st.st_mode & libc::S_IFMT {
                    libc::S_IFDIR => todo.push(if dir.is_empty() {
                        name
                    } else {
                        format!("{dir}/{name}")
                    }),
                    libc::S_IFREG => {
                        total += (st.st_size as u64).max(st.st_blocks as u64 * 512);
                    }
                    _ => {}
                }
            }
        }
        total
    }
}

fn open_how(flags: i32, mode: u32, resolve: u64) -> libc::open_how {
    // SAFETY: open_how is plain data (it is non-exhaustive, so it cannot be built literally).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = mode as u64;
    how.resolve = resolve;
    how
}

fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR | libc::S_IFBLK => "a device",
        libc::S_IFLNK => "a symlink",
        _ => "not a regular file",
    }
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: stat is plain data; fstat fills it for a descriptor we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

fn fstatat(dir: RawFd, name: &CStr) -> Option<libc::stat> {
    // SAFETY: stat is plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat relative to a directory we hold open; it does not follow a final symlink.
    let r = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    (r == 0).then_some(st)
}

/// The names in the directory open as `fd` (without `.` and `..`).
fn read_dir(fd: RawFd) -> std::io::Result<Vec<String>> {
    // fdopendir takes ownership of the descriptor it is given, so give it a duplicate.
    // SAFETY: fcntl duplicates a descriptor we hold open.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `dup` is a directory descriptor we own; on success the DIR owns it.
    let dirp = unsafe { libc::fdopendir(dup) };
    if dirp.is_null() {
        let err = std::io::Error::last_os_error();
        // SAFETY: fdopendir failed, so we still own `dup`.
        unsafe { libc::close(dup) };
        return Err(err);
    }
    // SAFETY: rewind so that a second listing of the same descriptor sees every entry.
    unsafe { libc::rewinddir(dirp) };
    let mut names = Vec::new();
    loop {
        // SAFETY: readdir on the DIR we opened; the entry is valid until the next call.
        let ent = unsafe { libc::readdir(dirp) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated array inside the entry.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        let b = name.to_bytes();
        if b == b"." || b == b".." {
            continue;
        }
        names.push(String::from_utf8_lossy(b).into_owned());
    }
    // SAFETY: closes the DIR (and `dup`) exactly once.
    unsafe { libc::closedir(dirp) };
    Ok(names)
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
    fn tmp(name: &str) -> Tmp {
        let p =
            std::env::temp_dir().join(format!("sandlock-mcp-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("ws")).unwrap();
        std::fs::write(p.join("secret.txt"), "outside").unwrap();
        Tmp(p)
    }

    fn read_all(b: &Beneath, path: &str) -> Result<String, FileError> {
        b.read_lines(path, 1, None, 1 << 20).map(|l| l.content)
    }

    #[test]
    fn lines_are_read_in_pages_within_the_budget() {
        let t = tmp("lines");
        let b = Beneath::open(&t.0.join("ws")).unwrap();
        let text: String = (1..=1000).map(|i| format!("line {i}\n")).collect();
        b.write("f.txt", text.as_bytes(), 1 << 20).unwrap();
        let l = b.read_lines("f.txt", 10, Some(12), 1 << 20).unwrap();
        assert_eq!(l.content, "line 10\nline 11\nline 12\n");
        assert_eq!(
            (l.total_lines, l.first, l.last, l.cut),
            (1000, 10, 12, false)
        );
        // A budget of 100 JSON bytes holds 10 of these lines ("line 990\n" escapes to 10).
        let l = b.read_lines("f.txt", 990, None, 100).unwrap();
        assert_eq!((l.first, l.last, l.cut), (990, 999, true));
        let l = b.read_lines("f.txt", 100, None, 50).unwrap();
        assert!(l.cut && l.last < 1000 && l.content.starts_with("line 100\n"));
        // Past the end: nothing, and the count.
        let l = b.read_lines("f.txt", 2000, None, 100).unwrap();
        assert_eq!(
            (l.content.as_str(), l.total_lines, l.last),
            ("", 1000, 1999)
        );
        // A line longer than the budget comes cut.
        b.write("long.txt", "x".repeat(1000).as_bytes(), 1 << 20)
            .unwrap();
        let l = b.read_lines("long.txt", 1, None, 100).unwrap();
        assert_eq!((l.content.len(), l.cut, l.total_lines), (100, true, 1));
        // Binary files are refused.
        b.write("bin", b"\x7fELF\0\0\0", 1 << 20).unwrap();
        assert!(matches!(
            b.read_lines("bin", 1, None, 100),
            Err(FileError::NotText(_))
        ));
    }

    #[test]
    fn write_then_read_inside_the_workspace_works() {
        let t = tmp("rw");
        let b = Beneath::open(&t.0.join("ws")).unwrap();
        b.write("a/b/c.txt", b"hello", 1 << 20).unwrap();
        assert_eq!(read_all(&b, "a/b/c.txt").unwrap(), "hello");
        assert_eq!(read_all(&b, "./a//b/c.txt").unwrap(), "hello");
        let (entries, truncated) = b.list("", true, 100).unwrap();
        assert!(!truncated);
        let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "a/b", "a/b/c.txt"]);
        b.delete("a/b/c.txt").unwrap();
        assert!(matches!(
            read_all(&b, "a/b/c.txt"),
            Err(FileError::NotFound(_))
        ));
    }

    #[test]
    fn absolute_and_dotdot_paths_are_refused() {
        let t = tmp("lex");
        let b = Beneath::open(&t.0.join("ws")).unwrap();
        let outside = t.0.join("secret.txt");
        assert!(matches!(
            read_all(&b, outside.to_str().unwrap()),
            Err(FileError::Absolute(_))
        ));
        assert!(matches!(
            read_all(&b, "../secret.txt"),
            Err(FileError::DotDot(_))
        ));
        assert!(matches!(
            b.write("x/../../secret.txt", b"x", 100),
            Err(FileError::DotDot(_))
        ));
        assert!(matches!(
            b.delete("../secret.txt"),
            Err(FileError::DotDot(_))
        ));
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "outside");
    }

    #[test]
    fn symlink_out_of_the_workspace_is_refused_and_one_inside_is_followed() {
        let t = tmp("link");
        let ws = t.0.join("ws");
        let b = Beneath::open(&ws).unwrap();
        symlink(t.0.join("secret.txt"), ws.join("abs")).unwrap();
        symlink("../secret.txt", ws.join("rel")).unwrap();
        symlink("/", ws.join("rootdir")).unwrap();
        symlink("/proc/self/root/etc/passwd", ws.join("magic")).unwrap();
        for p in ["abs", "rel", "rootdir/etc/passwd", "magic"] {
            let e = read_all(&b, p).unwrap_err();
            assert!(matches!(e, FileError::Escapes(_)), "{p}: {e}");
        }
        assert!(matches!(
            b.write("abs", b"pwned", 100),
            Err(FileError::Symlink(_))
        ));
        assert!(matches!(
            b.write("rootdir/tmp/x", b"pwned", 100),
            Err(FileError::Escapes(_))
        ));
        assert!(matches!(
            b.list("rootdir", false, 10),
            Err(FileError::Escapes(_))
        ));
        assert_eq!(
            std::fs::read_to_string(t.0.join("secret.txt")).unwrap(),
            "outside"
        );
        // Control: a symlink that stays inside is followed for reading.
        b.write("real.txt", b"inside", 100).unwrap();
        symlink("real.txt", ws.join("inner")).unwrap();
        assert_eq!(read_all(&b, "inner").unwrap(), "inside");
        // Deleting a symlink removes the link, never its target.
        b.delete("abs").unwrap();
        assert!(t.0.join("secret.txt").exists());
    }

    #[test]
    fn disk_cap_counts_the_whole_workspace() {
        let t = tmp("cap");
        let b = Beneath::open(&t.0.join("ws")).unwrap();
        b.write("one", &[b'x'; 6000], 10_000).unwrap();
        let e = b.write("two", &[b'x'; 6000], 10_000).unwrap_err();
        assert!(matches!(e, FileError::DiskCap { .. }), "{e}");
        // Control: overwriting the same file counts its old size once.
        b.write("one", &[b'y'; 7000], 10_000).unwrap();
    }

    #[test]
    fn move_creates_parents_and_refuses_to_overwrite_unless_asked() {
        let t = tmp("mv");
        let b = Beneath::open(&t.0.join("ws")).unwrap();
        b.write("a.txt", b"A", 1 << 20).unwrap();
        b.write("b.txt", b"B", 1 << 20).unwrap();
        assert!(!b.rename("a.txt", "x/y/a.txt", false).unwrap());
        assert_eq!(read_all(&b, "x/y/a.txt").unwrap(), "A");
        assert!(matches!(read_all(&b, "a.txt"), Err(FileError::NotFound(_))));
        let e = b.rename("x/y/a.txt", "b.txt", false).unwrap_err();
        assert!(matches!(e, FileError::Exists(_)), "{e}");
        assert_eq!(read_all(&b, "b.txt").unwrap(), "B", "nothing replaced");
        assert!(b.rename("x/y/a.txt", "b.txt", true).unwrap());
        assert_eq!(read_all(&b, "b.txt").unwrap(), "A");
        // A directory moves with its contents, but not beneath itself.
        assert!(matches!(
            b.rename("x", "x/z", false),
            Err(FileError::IntoItself(..))
        ));
        b.rename("x", "w", false).unwrap();
        assert!(matches!(
            b.rename("nothing", "n2", false),
            Err(FileError::NotFound(_))
        ));
    }

    #[test]
    fn move_never_leaves_the_workspace_or_follows_a_symlink() {
        let t = tmp("mv-escape");
        let ws = t.0.join("ws");
        let b = Beneath::open(&ws).unwrap();
        b.write("f.txt", b"x", 1 << 20).unwrap();
        for (from, to) in [("f.txt", "../f.txt"), ("../secret.txt", "s.txt")] {
            assert!(matches!(
                b.rename(from, to, false),
                Err(FileError::DotDot(_))
            ));
        }
        assert!(matches!(
            b.rename("f.txt", "/tmp/f.txt", false),
            Err(FileError::Absolute(_))
        ));
        symlink(&t.0, ws.join("out")).unwrap();
        assert!(matches!(
            b.rename("f.txt", "out/f.txt", false),
            Err(FileError::Escapes(_))
        ));
        assert!(matches!(
            b.rename("out/secret.txt", "s.txt", false),
            Err(FileError::Escapes(_))
        ));
        assert!(t.0.join("secret.txt").exists() && !t.0.join("f.txt").exists());
        // The link itself moves (as a link), its target stays where it is.
        b.rename("out", "moved-link", false).unwrap();
        assert!(
            std::fs::symlink_metadata(ws.join("moved-link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_to_string(t.0.join("secret.txt")).unwrap(),
            "outside"
        );
    }

    #[test]
    fn edit_replaces_in_place_and_refuses_a_symlink() {
        let t = tmp("edit");
        let ws = t.0.join("ws");
        let b = Beneath::open(&ws).unwrap();
        b.write("f.py", b"x = 1\ny = 2\n", 1 << 20).unwrap();
        let e = b
            .edit("f.py", "y = 2", "y = 3", false, 1 << 20, 1000)
            .unwrap();
        assert_eq!((e.replacements, e.bytes), (1, 12));
        assert_eq!(read_all(&b, "f.py").unwrap(), "x = 1\ny = 3\n");
        symlink(t.0.join("secret.txt"), ws.join("link")).unwrap();
        let e = b
            .edit("link", "outside", "pwned", false, 1 << 20, 1000)
            .unwrap_err();
        assert!(
            matches!(e, edit::EditError::File(FileError::Symlink(_))),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(t.0.join("secret.txt")).unwrap(),
            "outside"
        );
        b.write("bin", b"\xff\xfe", 1 << 20).unwrap();
        assert!(matches!(
            b.edit("bin", "a", "b", false, 1 << 20, 1000),
            Err(edit::EditError::File(FileError::NotText(_)))
        ));
    }

    #[test]
    fn a_fifo_does_not_hang_read() {
        let t = tmp("fifo");
        let ws = t.0.join("ws");
        let c = CString::new(ws.join("pipe").as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let b = Beneath::open(&ws).unwrap();
        assert!(matches!(
            read_all(&b, "pipe"),
            Err(FileError::NotRegular(_, "a FIFO"))
        ));
    }
}
