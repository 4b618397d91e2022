//! Paths the supervisor acts on for the sandbox: resolved as the sandbox names them, and opened
//! only beneath a writable policy path.
//!
//! The supervisor is not under Landlock, so when it carries out a syscall for the sandbox
//! (`truncate`, a UNIX `bind`) it must apply the policy itself, and no race may move its action
//! outside the policy:
//! - the path is read from the sandbox's memory once;
//! - a relative path is taken from the calling thread's working directory, and `/proc/self` means
//!   the caller, not us;
//! - it is resolved (symlinks followed) to a canonical path, which must lie beneath a writable
//!   root; then the root is opened and the rest is opened from it with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS)`, so a symlink or `..` swapped in after the check fails the call instead
//!   of leading outside the root;
//! - file permissions are checked with the sandbox's credentials (the supervisor may run as root
//!   with capabilities the sandbox dropped).

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::sys;

/// The credentials that file permissions are checked against.
#[derive(Debug, Clone)]
pub(crate) struct Creds {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl Creds {
    /// The filesystem uid and gid and the supplementary groups of task `tid`.
    pub(crate) fn of(tid: u32) -> Option<Creds> {
        let text = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
        let field = |name: &str| -> Vec<u32> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| {
                    v.split_ascii_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        // Uid: real effective saved filesystem.
        let (uids, gids) = (field("Uid"), field("Gid"));
        Some(Creds {
            uid: *uids.get(3)?,
            gid: *gids.get(3)?,
            groups: field("Groups"),
        })
    }

    /// Whether these credentials, without any capability (a sandbox holds none), may access a
    /// file with `st` for `want` (`libc::W_OK`, `R_OK`, `X_OK`, or-ed). ACLs are not consulted, so
    /// this may refuse what an ACL would allow, never the reverse.
    pub(crate) fn may(&self, st: &libc::stat, want: u32) -> bool {
        let mode = st.st_mode;
        let bits = if st.st_uid == self.uid {
            (mode >> 6) & 7
        } else if st.st_gid == self.gid || self.groups.contains(&st.st_gid) {
            (mode >> 3) & 7
        } else {
            mode & 7
        };
        bits & want == want
    }
}

/// The absolute path a path argument of task `tid` names, before symlinks are resolved.
pub(crate) fn absolute(tid: u32, raw: &[u8]) -> std::io::Result<PathBuf> {
    if raw.is_empty() {
        return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
    }
    let p = Path::new(OsStr::from_bytes(raw));
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::fs::read_link(format!("/proc/{tid}/cwd"))?.join(p)
    };
    // /proc/self and /proc/thread-self would name the supervisor when it resolves the path.
    let parts: Vec<Component<'_>> = abs.components().collect();
    if let [Component::RootDir, proc, who, rest @ ..] = parts.as_slice() {
        let caller = match who.as_os_str().to_str() {
            Some("self") => Some(tid.to_string()),
            Some("thread-self") => Some(format!("{tid}/task/{tid}")),
            _ => None,
        };
        if let (true, Some(c)) = (proc.as_os_str() == "proc", caller) {
            let mut out = PathBuf::from("/proc").join(c);
            out.extend(rest);
            return Ok(out);
        }
    }
    Ok(abs)
}

/// A file or directory opened with `O_PATH` beneath a writable root, with its status.
pub(crate) struct Beneath {
    pub(crate) fd: OwnedFd,
    pub(crate) stat: libc::stat,
}

fn stat_fd(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` has room for one struct stat.
    sys::cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded and filled `st`.
    Ok(unsafe { st.assume_init() })
}

fn open_path(dir: Option<&OwnedFd>, path: &Path, resolve: u64) -> std::io::Result<OwnedFd> {
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    let dirfd = dir.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
    // SAFETY: openat2 reads the C string and one open_how of the size we pass.
    let fd = sys::cvt_long(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    // SAFETY: openat2 just returned this descriptor.
    Ok(unsafe { sys::owned(fd as libc::c_int) })
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

/// Opens `abs` (an absolute path from [`absolute`]) with `O_PATH`, if it lies beneath one of
/// `roots` once resolved. `EACCES` if it does not (what Landlock answers), the resolution's own
/// error (`ENOENT`, `ENOTDIR`, `ELOOP`) otherwise.
pub(crate) fn open_beneath(abs: &Path, roots: &[PathBuf]) -> std::io::Result<Beneath> {
    let canonical = std::fs::canonicalize(abs)?;
    let root = roots
        .iter()
        .filter(|r| canonical.starts_with(r))
        .max_by_key(|r| r.as_os_str().len())
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EACCES))?;
    let root_fd = open_path(None, root, RESOLVE_NO_MAGICLINKS)?;
    let rest = canonical.strip_prefix(root).unwrap_or(Path::new(""));
    let fd = if rest.as_os_str().is_empty() {
        root_fd
    } else {
        open_path(
            Some(&root_fd),
            rest,
            RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        )?
    };
    let stat = stat_fd(&fd)?;
    Ok(Beneath { fd, stat })
}

/// Reopens an `O_PATH` descriptor for real (through `/proc/self/fd`), with `flags`.
pub(crate) fn reopen(fd: &OwnedFd, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let p = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `p` is a valid C string.
    let new =
        sys::cvt(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOCTTY) })?;
    // SAFETY: open just returned this descriptor.
    Ok(unsafe { sys::owned(new) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_self_names_the_caller_not_the_supervisor() {
        assert_eq!(
            absolute(42, b"/proc/self/fd/3").unwrap(),
            PathBuf::from("/proc/42/fd/3")
        );
        assert_eq!(
            absolute(42, b"/proc/thread-self/fd/3").unwrap(),
            PathBuf::from("/proc/42/task/42/fd/3")
        );
        assert_eq!(absolute(42, b"/tmp/x").unwrap(), PathBuf::from("/tmp/x"));
        assert_eq!(absolute(42, b"/proc").unwrap(), PathBuf::from("/proc"));
        assert!(absolute(42, b"").is_err());
    }

    #[test]
    fn only_paths_beneath_a_root_open() {
        let ws = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(ws.path()).unwrap();
        std::fs::write(root.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("out")).unwrap();
        std::os::unix::fs::symlink("f", root.join("in")).unwrap();
        let roots = vec![root.clone()];
        assert!(open_beneath(&root.join("f"), &roots).is_ok());
        assert!(open_beneath(&root.join("in"), &roots).is_ok());
        let e = open_beneath(&root.join("out"), &roots).err().unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
        let e = open_beneath(&root.join("../../etc/passwd"), &roots)
            .err()
            .unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    }

    #[test]
    fn permission_bits_are_read_for_the_sandbox_not_for_root() {
        // SAFETY: stat is plain data.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_uid = 0;
        st.st_gid = 0;
        st.st_mode = libc::S_IFREG | 0o444;
        let root = Creds {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        assert!(!root.may(&st, libc::W_OK as u32));
        assert!(root.may(&st, libc::R_OK as u32));
        st.st_mode = libc::S_IFREG | 0o664;
        st.st_uid = 5;
        let other = Creds {
            uid: 1000,
            gid: 1000,
            groups: vec![0],
        };
        assert!(other.may(&st, libc::W_OK as u32));
    }
}
