//! The disk cap: bytes stored under the writable directories, kept current with inotify.
//!
//! At the start of a run the writable directories are walked once; afterwards only what inotify
//! reports (created, written, moved, deleted) is measured again, so a sample costs what the
//! sandbox changed, not the size of the tree. Sizes are allocated blocks (`st_blocks`), so sparse
//! files count what they really use. Each file also has `RLIMIT_FSIZE` set to the cap, which bounds
//! how far one `write` can overshoot before the supervisor reacts.
//!
//! `IN_MODIFY` fires on every `write`, and delivering it is what makes a write-heavy sandbox slower
//! (measured at 13% on a loop of small writes to ext4; `IN_CLOSE_WRITE` and the others cost
//! nothing measurable). So a directory whose files are being written is *paused*: the first
//! `IN_MODIFY` takes `IN_MODIFY` off its watch, and at the next [`DiskMeter::resume`] (the
//! supervisor calls it every few milliseconds) the watch gets it back and every file of the
//! directory is measured again. A write while paused is therefore seen within one period, as a
//! queued event would have been; only the cost changes, from one event per write to one directory
//! listing per period. Directories with many entries are never paused (their listing would cost
//! more than the events).

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::sys;

const MASK: u32 = libc::IN_CREATE
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_TO
    | libc::IN_MOVED_FROM
    | libc::IN_DELETE
    | libc::IN_ATTRIB
    | libc::IN_ONLYDIR;

/// A directory with more entries than this keeps `IN_MODIFY` on for good.
const PAUSE_MAX_ENTRIES: usize = 256;

/// Tracks the total size of a set of directory trees.
pub(crate) struct DiskMeter {
    fd: OwnedFd,
    dirs: HashMap<i32, PathBuf>,
    /// Watches whose `IN_MODIFY` is off until the next `resume`.
    paused: HashSet<i32>,
    /// Watches too large to pause.
    never_pause: HashSet<i32>,
    sizes: HashMap<PathBuf, u64>,
    roots: Vec<PathBuf>,
    total: u64,
}

impl DiskMeter {
    /// Starts watching `roots` (directories; anything else is skipped).
    pub(crate) fn new(roots: &[PathBuf]) -> std::io::Result<DiskMeter> {
        // SAFETY: inotify_init1 takes flags.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut m = DiskMeter {
            // SAFETY: inotify_init1 just returned this descriptor.
            fd: unsafe { sys::owned(fd) },
            dirs: HashMap::new(),
            paused: HashSet::new(),
            never_pause: HashSet::new(),
            sizes: HashMap::new(),
            roots: roots.iter().filter(|r| r.is_dir()).cloned().collect(),
            total: 0,
        };
        m.rescan();
        Ok(m)
    }

    pub(crate) fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Bytes stored now.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Applies pending inotify events. Each changed file is measured once per batch, however
    /// many events it produced.
    pub(crate) fn update(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        let mut changed: HashSet<PathBuf> = HashSet::new();
        loop {
            let n = match sys::read(self.fd.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut off = 0;
            let header = std::mem::size_of::<libc::inotify_event>();
            while off + header <= n {
                // SAFETY: the kernel wrote whole events; read_unaligned copes with the byte buffer.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                let name_len = ev.len as usize;
                let name = &buf[off + header..(off + header + name_len).min(n)];
                let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
                off += header + name_len;
                if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                    self.rescan();
                    return;
                }
                let Some(dir) = self.dirs.get(&ev.wd) else {
                    continue;
                };
                let path = dir.join(std::ffi::OsStr::from_bytes(name));
                if ev.mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0 {
                    changed.remove(&path);
                    self.forget(&path);
                } else if ev.mask & libc::IN_ISDIR != 0 {
                    if ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                        self.walk(&path);
                    }
                } else {
                    if ev.mask & libc::IN_MODIFY != 0
                        && !self.never_pause.contains(&ev.wd)
                        && self.paused.insert(ev.wd)
                    {
                        let dir = dir.clone();
                        self.set_mask(&dir, MASK & !libc::IN_MODIFY);
                    }
                    changed.insert(path);
                }
            }
        }
        for p in changed {
            self.measure(&p);
        }
    }

    /// Whether some directory is paused (and `resume` is due).
    pub(crate) fn has_paused(&self) -> bool {
        !self.paused.is_empty()
    }

    /// Gives paused directories their `IN_MODIFY` back, then measures every file in them: what was
    /// written while they were paused is counted now, and later writes raise events again.
    pub(crate) fn resume(&mut self) {
        for wd in std::mem::take(&mut self.paused) {
            let Some(dir) = self.dirs.get(&wd).cloned() else {
                continue;
            };
            self.set_mask(&dir, MASK);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut n = 0;
            for e in entries.flatten() {
                n += 1;
                if e.file_type().is_ok_and(|t| !t.is_dir()) {
                    self.measure(&e.path());
                }
            }
            if n > PAUSE_MAX_ENTRIES {
                self.never_pause.insert(wd);
            }
        }
    }

    fn set_mask(&self, dir: &Path, mask: u32) {
        let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return;
        };
        // SAFETY: `c` is a valid C string; this replaces the mask of our existing watch.
        unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) };
    }

    fn rescan(&mut self) {
        for wd in self.dirs.keys() {
            // SAFETY: removing our own watch.
            unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), *wd) };
        }
        self.dirs.clear();
        self.paused.clear();
        self.never_pause.clear();
        self.sizes.clear();
        self.total = 0;
        for r in self.roots.clone() {
            self.walk(&r);
        }
    }

    /// Watches `dir` and everything below it, measuring every file.
    fn walk(&mut self, dir: &Path) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(c) = std::ffi::CString::new(d.as_os_str().as_bytes()) else {
                continue;
            };
            // SAFETY: `c` is a valid C string.
            let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), MASK) };
            if wd >= 0 {
                self.dirs.insert(wd, d.clone());
            }
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push(p),
                    Ok(_) => self.measure(&p),
                    Err(_) => {}
                }
            }
        }
    }

    fn measure(&mut self, p: &Path) {
        let size = std::fs::symlink_metadata(p)
            .map(|m| m.blocks() * 512)
            .unwrap_or(0);
        let old = self.sizes.insert(p.to_path_buf(), size).unwrap_or(0);
        self.total = self.total.saturating_sub(old) + size;
    }

    fn forget(&mut self, p: &Path) {
        let gone: Vec<PathBuf> = self
            .sizes
            .keys()
            .filter(|k| k.starts_with(p))
            .cloned()
            .collect();
        for k in gone {
            let size = self.sizes.remove(&k).unwrap_or(0);
            self.total = self.total.saturating_sub(size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_follows_writes_moves_and_deletes() {
        let dir = std::env::temp_dir().join(format!("sandlock-disk-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a"), vec![1u8; 64 * 1024]).unwrap();
        let mut m = DiskMeter::new(std::slice::from_ref(&dir)).unwrap();
        assert!(m.total() >= 64 * 1024, "initial scan: {}", m.total());
        std::fs::write(dir.join("sub/b"), vec![1u8; 256 * 1024]).unwrap();
        std::fs::create_dir(dir.join("new")).unwrap();
        m.update();
        std::fs::write(dir.join("new/c"), vec![1u8; 128 * 1024]).unwrap();
        m.update();
        assert!(m.total() >= 448 * 1024, "after writes: {}", m.total());
        std::fs::remove_file(dir.join("sub/b")).unwrap();
        std::fs::remove_dir_all(dir.join("new")).unwrap();
        m.update();
        assert!(m.total() < 128 * 1024, "after deletes: {}", m.total());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writes_while_a_directory_is_paused_are_counted_at_resume() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("sandlock-pause-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut m = DiskMeter::new(std::slice::from_ref(&dir)).unwrap();
        // A file held open (no IN_CLOSE_WRITE will come) and another being written.
        let mut held = std::fs::File::create(dir.join("held")).unwrap();
        std::fs::write(dir.join("busy"), b"x").unwrap();
        m.update();
        assert!(m.has_paused(), "the first IN_MODIFY pauses the directory");
        // While paused, the held file grows without an event.
        held.write_all(&vec![1u8; 512 * 1024]).unwrap();
        held.sync_all().unwrap();
        m.update();
        assert!(
            m.total() < 512 * 1024,
            "no event while paused: {}",
            m.total()
        );
        m.resume();
        assert!(!m.has_paused());
        assert!(m.total() >= 512 * 1024, "counted at resume: {}", m.total());
        // And IN_MODIFY is back: the next write is an event again.
        held.write_all(&vec![1u8; 512 * 1024]).unwrap();
        held.sync_all().unwrap();
        m.update();
        assert!(
            m.total() >= 1024 * 1024,
            "event after resume: {}",
            m.total()
        );
        drop(held);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
