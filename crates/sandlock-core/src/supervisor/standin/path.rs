//! Paths the supervisor acts on for the sandbox, opened only beneath a writable policy path.
//!
//! The supervisor is not under Landlock, so when it carries out a syscall for the sandbox
//! (`truncate`, a UNIX `bind` or `connect`) it must apply the policy itself, and no race may move
//! its action outside the policy:
//! - the path is read from the sandbox's memory once; a relative one is taken from the calling
//!   thread's working directory;
//! - the writable roots were opened when the plan was made ([`Roots`]); the path must name one of
//!   them lexically (so nothing outside is even looked at, and an error before a root is found is
//!   always `EACCES`), and the rest is opened from the root's descriptor with `openat2(RESOLVE_BENEATH
//!   | RESOLVE_NO_MAGICLINKS)`: a symlink or `..` that leads out, even one swapped in meanwhile, fails
//!   the call, and a root that was renamed or replaced by a symlink since is still the directory the
//!   policy granted;
//! - the supervisor acts through the descriptor it got, never through the path again;
//! - file permissions are those of the sandbox: when the supervisor holds capabilities the sandbox
//!   dropped (it runs as root), the mode bits are checked for the sandbox's credentials and a file
//!   with an ACL is refused; otherwise the kernel checks the supervisor's own open, with the same
//!   credentials as the sandbox.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::sys;

/// The writable policy paths, each held open (`O_PATH`) since the plan was made.
#[derive(Debug, Default)]
pub(crate) struct Roots {
    roots: Vec<(PathBuf, OwnedFd)>,
}

impl Roots {
    /// Opens each canonical path; ones that cannot be opened are left out (nothing is then
    /// writable through them here, which only refuses).
    pub(crate) fn open(paths: &[PathBuf]) -> Roots {
        let roots = paths
            .iter()
            .filter_map(|p| {
                let c = CString::new(p.as_os_str().as_bytes()).ok()?;
                // SAFETY: `c` is a valid C string.
                let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
                // SAFETY: open just returned this descriptor.
                (fd >= 0).then(|| (p.clone(), unsafe { sys::owned(fd) }))
            })
            .collect();
        Roots { roots }
    }
}

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

    /// Whether these credentials, without any capability (a sandbox holds none), may access the
    /// file at `fd` (with status `st`) for `want` (`libc::W_OK`, `X_OK`, or-ed).
    ///
    /// Only needed when the supervisor could do more than the sandbox: then the mode bits are
    /// checked here, and a file with an ACL (whose entries may deny what the bits allow) is
    /// refused. Otherwise the supervisor has the sandbox's own credentials and the kernel checks
    /// them when it opens or creates.
    pub(crate) fn may(&self, fd: &OwnedFd, st: &libc::stat, want: u32) -> bool {
        if !supervisor_is_privileged() {
            return true;
        }
        if has_acl(fd) {
            return false;
        }
        self.mode_allows(st, want)
    }

    fn mode_allows(&self, st: &libc::stat, want: u32) -> bool {
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

/// Whether this process holds a capability that bypasses file permissions.
fn supervisor_is_privileged() -> bool {
    const CAP_DAC_OVERRIDE: u32 = 1;
    const CAP_FOWNER: u32 = 3;
    crate::sys::capget().map_or(true, |(effective, _, _)| {
        effective & ((1 << CAP_DAC_OVERRIDE) | (1 << CAP_FOWNER)) != 0
    })
}

/// Whether the file at `fd` carries a POSIX access ACL.
fn has_acl(fd: &OwnedFd) -> bool {
    let Ok(p) = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())) else {
        return true;
    };
    // SAFETY: with a zero size, getxattr only returns the value's size.
    let r = unsafe {
        libc::getxattr(
            p.as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    r >= 0 || sys::errno() != libc::ENODATA
}

/// The absolute path a path argument of task `tid` names, before symlinks are resolved.
pub(crate) fn absolute(tid: u32, raw: &[u8]) -> std::io::Result<PathBuf> {
    if raw.is_empty() {
        return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
    }
    let p = Path::new(OsStr::from_bytes(raw));
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::fs::read_link(format!("/proc/{tid}/cwd"))?.join(p))
}

/// A file or directory opened with `O_PATH` beneath a writable root, with its status.
pub(crate) struct Beneath {
    pub(crate) fd: OwnedFd,
    pub(crate) stat: libc::stat,
}

/// The status of a descriptor we hold.
pub(crate) fn stat_fd(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` has room for one struct stat.
    sys::cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded and filled `st`.
    Ok(unsafe { st.assume_init() })
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_BENEATH: u64 = 0x08;

fn eacces() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::EACCES)
}

/// Opens `abs` (from [`absolute`]) with `O_PATH` (and `extra` flags, such as `O_NOFOLLOW`) from the
/// root it names. `EACCES` when it names none or leads out of it (what Landlock answers); the
/// resolution's own error (`ENOENT`, `ENOTDIR`, `ELOOP`) otherwise.
pub(crate) fn open_beneath(abs: &Path, roots: &Roots, extra: i32) -> std::io::Result<Beneath> {
    let (root, rest) = roots
        .roots
        .iter()
        .filter_map(|(p, fd)| abs.strip_prefix(p).ok().map(|rest| (fd, rest)))
        .min_by_key(|(_, rest)| rest.components().count())
        .ok_or_else(eacces)?;
    let fd = if rest.as_os_str().is_empty() {
        sys::dup_above(root.as_raw_fd(), 3)?
    } else {
        if rest
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::ParentDir))
        {
            return Err(eacces());
        }
        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        let c = CString::new(rest.as_os_str().as_bytes()).map_err(|_| eacces())?;
        let how = OpenHow {
            flags: (libc::O_PATH | libc::O_CLOEXEC | extra) as u64,
            mode: 0,
            resolve: RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: openat2 reads the C string and one open_how of the size we pass.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        match sys::cvt_long(r) {
            // SAFETY: openat2 just returned this descriptor.
            Ok(fd) => unsafe { sys::owned(fd as libc::c_int) },
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => return Err(eacces()),
            Err(e) => return Err(e),
        }
    };
    let stat = stat_fd(&fd)?;
    Ok(Beneath { fd, stat })
}

/// The path through which a descriptor we hold can be named (`/proc/self/fd/N`).
pub(crate) fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Reopens an `O_PATH` descriptor for real (through `/proc/self/fd`), with `flags`.
pub(crate) fn reopen(fd: &OwnedFd, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let p = CString::new(fd_path(fd)).map_err(|_| eacces())?;
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
    fn relative_paths_start_from_the_callers_directory() {
        assert_eq!(absolute(1, b"/tmp/x").unwrap(), PathBuf::from("/tmp/x"));
        assert!(absolute(1, b"").is_err());
        let me = std::process::id();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(absolute(me, b"a/b").unwrap(), cwd.join("a/b"));
    }

    #[test]
    fn only_paths_beneath_a_held_root_open() {
        let ws = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(ws.path()).unwrap();
        std::fs::write(root.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("out")).unwrap();
        std::os::unix::fs::symlink("f", root.join("in")).unwrap();
        let roots = Roots::open(std::slice::from_ref(&root));
        let err = |p: &Path| open_beneath(p, &roots, 0).err().unwrap().raw_os_error();
        assert!(open_beneath(&root.join("f"), &roots, 0).is_ok());
        assert!(open_beneath(&root.join("in"), &roots, 0).is_ok());
        assert!(open_beneath(&root, &roots, 0).is_ok());
        assert_eq!(err(&root.join("out")), Some(libc::EACCES));
        assert_eq!(err(&root.join("../../etc/passwd")), Some(libc::EACCES));
        assert_eq!(err(Path::new("/etc/passwd")), Some(libc::EACCES));
        assert_eq!(err(&root.join("missing")), Some(libc::ENOENT));
        // A root replaced by a symlink after the plan: the held directory is still the one used.
        let moved = root.with_extension("moved");
        std::fs::rename(&root, &moved).unwrap();
        std::os::unix::fs::symlink("/etc", &root).unwrap();
        let b = open_beneath(&root.join("f"), &roots, 0).unwrap();
        assert_eq!(b.stat.st_size, 1);
        assert_eq!(err(&root.join("passwd")), Some(libc::ENOENT));
        std::fs::remove_file(&root).unwrap();
        std::fs::rename(&moved, &root).unwrap();
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
        assert!(!root.mode_allows(&st, libc::W_OK as u32));
        assert!(root.mode_allows(&st, libc::R_OK as u32));
        st.st_mode = libc::S_IFREG | 0o664;
        st.st_uid = 5;
        let other = Creds {
            uid: 1000,
            gid: 1000,
            groups: vec![0],
        };
        assert!(other.mode_allows(&st, libc::W_OK as u32));
    }
}
