//! Carrying out a call at a resolved spot, with the sandbox's permissions.
//!
//! Every function here acts on a directory the walk holds and a last component, with calls that
//! do not follow that component (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `unlinkat`, `renameat2`,
//! ...), or on the target's own `O_PATH` descriptor (through `/proc/self/fd/N` where a call has
//! no descriptor form). So a symlink swapped in after the walk is acted on as a symlink, inside
//! the directory held, never followed out of it. Each call runs under [`AsSandbox`]. A mount
//! given read-only refuses writes with `EROFS`, as a read-only bind mount would; a policy path
//! granted read-only refuses them with `EACCES`, as Landlock would.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use super::creds::{AsSandbox, own_umask, umask_of};
use super::view::{Kind, View};
use super::walk::{Dir, Spot};
use crate::plan::Access;
use crate::sys;

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_BENEATH: u64 = 0x08;

fn errno() -> i32 {
    sys::errno()
}

fn check(r: libc::c_int) -> Result<libc::c_int, i32> {
    if r < 0 { Err(errno()) } else { Ok(r) }
}

fn owned(r: libc::c_int) -> Result<OwnedFd, i32> {
    check(r)?;
    // SAFETY: the kernel just returned this new descriptor.
    Ok(unsafe { sys::owned(r) })
}

/// The magic link through which a descriptor we hold is named.
fn fd_path(fd: i32) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default()
}

/// `EROFS` in a read-only mount, `EACCES` under a read-only policy path.
pub(crate) fn writable(s: &Spot) -> Result<(), i32> {
    if s.mount.access == Access::Write {
        Ok(())
    } else if s.mount.kind == Kind::Policy {
        Err(libc::EACCES)
    } else {
        Err(libc::EROFS)
    }
}

fn openat2(dir: i32, path: &Path, flags: i32) -> Result<OwnedFd, i32> {
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 reads the C string and one open_how of the size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    match sys::cvt_long(r) {
        // SAFETY: openat2 just returned this descriptor.
        Ok(fd) => Ok(unsafe { sys::owned(fd as i32) }),
        // Leading out of the policy path: what Landlock answers for what it does not grant.
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Err(libc::EACCES),
        Err(e) => Err(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

impl View {
    /// A real path the walk reached through the view (a symlink in a mount that points out of it,
    /// `..` from a mount's root), as a spot beneath the policy path that grants it; `EACCES` if
    /// none does (what Landlock would answer). With `follow`, an existing target is resolved by
    /// the kernel beneath that policy path (symlinks included) and held itself.
    pub(crate) fn real_spot(&self, p: &Path, follow: bool) -> Result<Spot, i32> {
        let _as = AsSandbox::enter();
        let (root, rest) = self
            .roots
            .iter()
            .filter_map(|r| p.strip_prefix(&r.host).ok().map(|rest| (r, rest)))
            .min_by_key(|(_, rest)| rest.components().count())
            .ok_or(libc::EACCES)?;
        let spot = |dir: Dir, name: Option<CString>| Spot {
            mount: Arc::clone(root),
            dir,
            name,
            host: p.to_path_buf(),
            is_root: false,
        };
        if rest.as_os_str().is_empty() {
            return Ok(spot(Dir::Root(root.root.clone()), None));
        }
        if follow {
            match openat2(root.root.as_raw_fd(), rest, libc::O_PATH) {
                Ok(fd) => return Ok(spot(Dir::Own(Arc::new(fd)), None)),
                Err(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        let name = rest.file_name().ok_or(libc::EINVAL)?;
        let name = CString::new(name.as_bytes()).map_err(|_| libc::EINVAL)?;
        let dir = match rest.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(parent) => Dir::Own(Arc::new(openat2(
                root.root.as_raw_fd(),
                parent,
                libc::O_PATH | libc::O_DIRECTORY,
            )?)),
            None => Dir::Root(root.root.clone()),
        };
        Ok(spot(dir, Some(name)))
    }
}

/// The target's own `O_PATH` descriptor (not following a last symlink).
pub(crate) fn object(s: &Spot) -> Result<OwnedFd, i32> {
    let _as = AsSandbox::enter();
    let name = s.name_or_dot();
    // SAFETY: openat on a name in a directory we hold.
    owned(unsafe {
        libc::openat(
            s.dir.fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// `fstatat` of the target (never following it: the walk did).
pub(crate) fn stat(s: &Spot) -> Result<libc::stat, i32> {
    let _as = AsSandbox::enter();
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    let (name, flags) = match &s.name {
        Some(n) => (n.clone(), libc::AT_SYMLINK_NOFOLLOW),
        None => (CString::default(), libc::AT_EMPTY_PATH),
    };
    // SAFETY: fstatat writes one struct stat.
    check(unsafe { libc::fstatat(s.dir.fd(), name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat succeeded and filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// `statx` of the target: the raw 256-byte `struct statx`.
pub(crate) fn statx(s: &Spot, sync: i32, mask: u32) -> Result<[u8; 256], i32> {
    let _as = AsSandbox::enter();
    let mut buf = [0u8; 256];
    let (name, flags) = match &s.name {
        Some(n) => (n.clone(), libc::AT_SYMLINK_NOFOLLOW),
        None => (CString::default(), libc::AT_EMPTY_PATH),
    };
    // SAFETY: statx writes one struct statx (256 bytes) into `buf`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_statx,
            s.dir.fd(),
            name.as_ptr(),
            flags | (sync & libc::AT_STATX_SYNC_TYPE),
            mask,
            buf.as_mut_ptr(),
        )
    };
    sys::cvt_long(r).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    Ok(buf)
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// What a path ending in `/` requires: a directory (`ENOTDIR` otherwise), when it exists.
pub(crate) fn dir_only(s: &Spot) -> Result<(), i32> {
    match stat(s) {
        Ok(st) if !is_dir(&st) => Err(libc::ENOTDIR),
        _ => Ok(()),
    }
}

/// The mode a call creating something with `mode` gives it in the sandbox.
fn created_mode(tid: u32, mode: u32) -> libc::mode_t {
    (mode & 0o7777) & !umask_of(tid).unwrap_or(0o022)
}

/// Whether the supervisor's own umask would take bits away from `mode` (then the mode is set again
/// on what was created).
fn needs_fixing(mode: libc::mode_t) -> bool {
    mode & own_umask() != 0
}

/// Sets the mode of `name` in `dir` through an `O_NOFOLLOW` descriptor of it.
fn fix_mode(dir: i32, name: &CString, mode: libc::mode_t) {
    // SAFETY: openat on a name in a directory we hold.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if let Ok(fd) = owned(fd) {
        // SAFETY: chmod through the magic link of a descriptor we hold.
        unsafe { libc::chmod(fd_path(fd.as_raw_fd()).as_ptr(), mode) };
    }
}

/// `open(path, flags, mode)` at `s`: the descriptor to install in the sandbox.
pub(crate) fn open(
    s: &Spot,
    flags: i32,
    mode: u32,
    tid: u32,
    trailing_slash: bool,
) -> Result<OwnedFd, i32> {
    // The kernel installs no O_PATH descriptor in another process (SECCOMP_IOCTL_NOTIF_ADDFD
    // answers EBADF): such an open gets a read-only descriptor of the same object instead, which
    // serves the same uses (fstat, *at calls, fchdir) but needs read access and cannot hold a
    // symlink itself.
    let flags = if flags & libc::O_PATH != 0 {
        libc::O_RDONLY
            | libc::O_NONBLOCK
            | libc::O_NOCTTY
            | (flags & (libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW))
    } else {
        flags
    };
    let creat = flags & libc::O_CREAT != 0;
    let tmpfile = flags & libc::O_TMPFILE == libc::O_TMPFILE;
    let write = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 || tmpfile;
    if trailing_slash && creat && !tmpfile {
        return Err(libc::EISDIR);
    }
    let mut flags = flags | libc::O_CLOEXEC;
    if trailing_slash {
        flags |= libc::O_DIRECTORY;
    }
    if write {
        writable(s)?;
    }
    let read_only = writable(s).is_err();
    let mode = created_mode(tid, mode);
    let _as = AsSandbox::enter();
    let Some(name) = &s.name else {
        if creat && flags & libc::O_EXCL != 0 && !tmpfile {
            return Err(libc::EEXIST);
        }
        let flags = flags & !(libc::O_CREAT | libc::O_EXCL);
        // The target is the held directory (a mount root, `.`), or a policy file held itself.
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes one struct stat.
        check(unsafe { libc::fstat(s.dir.fd(), st.as_mut_ptr()) })?;
        // SAFETY: fstat succeeded.
        let st = unsafe { st.assume_init() };
        let fd = if is_dir(&st) {
            // SAFETY: openat of "." in a directory we hold.
            unsafe { libc::openat(s.dir.fd(), c".".as_ptr(), flags, mode) }
        } else {
            // SAFETY: open through the magic link of a descriptor we hold (which O_NOFOLLOW would
            // stop at).
            unsafe {
                libc::open(
                    fd_path(s.dir.fd()).as_ptr(),
                    flags & !libc::O_NOFOLLOW,
                    mode,
                )
            }
        };
        return owned(fd);
    };
    let at = |f: i32| -> Result<OwnedFd, i32> {
        // SAFETY: openat on a name in a directory we hold; never following it.
        owned(unsafe { libc::openat(s.dir.fd(), name.as_ptr(), f | libc::O_NOFOLLOW, mode) })
    };
    if creat && read_only {
        // Opening what exists is fine in a read-only mount; creating is not.
        return at(flags & !(libc::O_CREAT | libc::O_EXCL))
            .map_err(|e| if e == libc::ENOENT { libc::EROFS } else { e });
    }
    if !creat || tmpfile || !needs_fixing(mode) {
        return at(flags);
    }
    // Our umask would strip bits the sandbox's keeps: find out whether we create the file, and if
    // so set its mode again through the new descriptor.
    for _ in 0..8 {
        match at(flags | libc::O_EXCL) {
            Ok(fd) => {
                // SAFETY: fchmod on the descriptor we just created.
                unsafe { libc::fchmod(fd.as_raw_fd(), mode) };
                return Ok(fd);
            }
            Err(libc::EEXIST) if flags & libc::O_EXCL == 0 => match at(flags & !libc::O_CREAT) {
                Err(libc::ENOENT) => continue,
                other => return other,
            },
            Err(e) => return Err(e),
        }
    }
    at(flags)
}

/// `faccessat2(path, mode, AT_EACCESS)`: the sandbox's real and effective ids are the same.
pub(crate) fn access(s: &Spot, mode: i32) -> Result<(), i32> {
    if mode & libc::W_OK != 0 && writable(s).is_err() {
        let st = stat(s)?;
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFREG || kind == libc::S_IFDIR || kind == libc::S_IFLNK {
            return Err(if s.mount.kind == Kind::Policy {
                libc::EACCES
            } else {
                libc::EROFS
            });
        }
    }
    let _as = AsSandbox::enter();
    let (name, flags) = match &s.name {
        Some(n) => (n.clone(), libc::AT_SYMLINK_NOFOLLOW),
        None => (CString::default(), libc::AT_EMPTY_PATH),
    };
    // SAFETY: faccessat2 reads the C string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            s.dir.fd(),
            name.as_ptr(),
            mode,
            flags | libc::AT_EACCESS,
        )
    };
    sys::cvt_long(r)
        .map(|_| ())
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// `readlink` of the target.
pub(crate) fn readlink(s: &Spot) -> Result<Vec<u8>, i32> {
    let name = s.name.as_ref().ok_or(libc::EINVAL)?;
    let _as = AsSandbox::enter();
    super::walk::read_link(s.dir.fd(), name)
}

/// `mkdir` and `mknod` at `s`.
pub(crate) fn make(s: &Spot, tid: u32, mode: u32, node: Option<libc::dev_t>) -> Result<(), i32> {
    let Some(name) = &s.name else {
        return Err(libc::EEXIST);
    };
    writable(s)?;
    let perm = created_mode(tid, mode);
    let _as = AsSandbox::enter();
    // SAFETY: mkdirat/mknodat on a name in a directory we hold.
    check(unsafe {
        match node {
            None => libc::mkdirat(s.dir.fd(), name.as_ptr(), perm),
            Some(dev) => {
                libc::mknodat(s.dir.fd(), name.as_ptr(), (mode & libc::S_IFMT) | perm, dev)
            }
        }
    })?;
    if needs_fixing(perm) {
        fix_mode(s.dir.fd(), name, perm);
    }
    Ok(())
}

/// `unlink`, or `rmdir` with `AT_REMOVEDIR`.
pub(crate) fn unlink(s: &Spot, flags: i32, trailing_slash: bool) -> Result<(), i32> {
    let rmdir = flags & libc::AT_REMOVEDIR != 0;
    let Some(name) = &s.name else {
        return Err(match (rmdir, s.is_root) {
            (false, _) => libc::EISDIR,
            (true, true) => libc::EBUSY,
            (true, false) => libc::EINVAL,
        });
    };
    writable(s)?;
    if trailing_slash && !rmdir {
        dir_only(s)?;
    }
    let _as = AsSandbox::enter();
    // SAFETY: unlinkat on a name in a directory we hold.
    check(unsafe { libc::unlinkat(s.dir.fd(), name.as_ptr(), flags & libc::AT_REMOVEDIR) })
        .map(|_| ())
}

/// Whether two spots are in the same mount (rename and link cannot cross one: `EXDEV`).
fn same_mount(a: &Spot, b: &Spot) -> bool {
    Arc::ptr_eq(&a.mount, &b.mount)
}

/// `renameat2(from, to, flags)`.
pub(crate) fn rename(from: &Spot, to: &Spot, flags: u32) -> Result<(), i32> {
    if !same_mount(from, to) {
        return Err(libc::EXDEV);
    }
    let (Some(a), Some(b)) = (&from.name, &to.name) else {
        return Err(libc::EBUSY);
    };
    writable(from)?;
    let _as = AsSandbox::enter();
    // SAFETY: renameat2 on names in directories we hold.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            from.dir.fd(),
            a.as_ptr(),
            to.dir.fd(),
            b.as_ptr(),
            flags,
        )
    };
    sys::cvt_long(r)
        .map(|_| ())
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// `linkat(from, to)` (the walk has followed `from` already if asked to).
pub(crate) fn link(from: &Spot, to: &Spot) -> Result<(), i32> {
    if !same_mount(from, to) {
        return Err(libc::EXDEV);
    }
    let Some(b) = &to.name else {
        return Err(libc::EEXIST);
    };
    let Some(a) = &from.name else {
        return Err(libc::EPERM);
    };
    writable(to)?;
    let _as = AsSandbox::enter();
    // SAFETY: linkat on names in directories we hold, not following `a`.
    check(unsafe { libc::linkat(from.dir.fd(), a.as_ptr(), to.dir.fd(), b.as_ptr(), 0) })
        .map(|_| ())
}

/// `symlinkat(target, s)`.
pub(crate) fn symlink(target: &[u8], s: &Spot) -> Result<(), i32> {
    let Some(name) = &s.name else {
        return Err(libc::EEXIST);
    };
    writable(s)?;
    let t = CString::new(target).map_err(|_| libc::EINVAL)?;
    let _as = AsSandbox::enter();
    // SAFETY: symlinkat on a name in a directory we hold.
    check(unsafe { libc::symlinkat(t.as_ptr(), s.dir.fd(), name.as_ptr()) }).map(|_| ())
}

/// The target's `O_PATH` descriptor, refusing a symlink where one was to be followed (only a
/// swap after the walk puts one there).
fn object_not_link(s: &Spot, follow: bool) -> Result<(OwnedFd, libc::stat), i32> {
    let fd = object(s)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one struct stat.
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded.
    let st = unsafe { st.assume_init() };
    if follow && st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(libc::ELOOP);
    }
    Ok((fd, st))
}

/// `chmod` (`follow` false: `fchmodat2(AT_SYMLINK_NOFOLLOW)`, which Linux refuses on a symlink).
pub(crate) fn chmod(s: &Spot, mode: u32, follow: bool) -> Result<(), i32> {
    writable(s)?;
    let (fd, st) = object_not_link(s, follow)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(libc::EOPNOTSUPP);
    }
    let _as = AsSandbox::enter();
    // SAFETY: chmod through the magic link of a descriptor we hold.
    check(unsafe { libc::chmod(fd_path(fd.as_raw_fd()).as_ptr(), mode & 0o7777) }).map(|_| ())
}

/// `chown` (`follow` false: `lchown`, the symlink itself).
pub(crate) fn chown(s: &Spot, uid: u32, gid: u32, follow: bool) -> Result<(), i32> {
    writable(s)?;
    let (fd, _) = object_not_link(s, follow)?;
    let _as = AsSandbox::enter();
    // SAFETY: fchownat on a descriptor we hold, with an empty path.
    check(unsafe { libc::fchownat(fd.as_raw_fd(), c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH) })
        .map(|_| ())
}

/// `utimensat(s, times)`; `None` is now.
pub(crate) fn utimes(s: &Spot, times: Option<[libc::timespec; 2]>) -> Result<(), i32> {
    writable(s)?;
    let ts = times.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
    let _as = AsSandbox::enter();
    // SAFETY: utimensat reads the C string and at most two timespecs.
    check(unsafe {
        match &s.name {
            Some(n) => libc::utimensat(s.dir.fd(), n.as_ptr(), ts, libc::AT_SYMLINK_NOFOLLOW),
            None => libc::utimensat(libc::AT_FDCWD, fd_path(s.dir.fd()).as_ptr(), ts, 0),
        }
    })
    .map(|_| ())
}

/// `truncate(s, length)`, within the sandbox's own `RLIMIT_FSIZE` (`limit`).
pub(crate) fn truncate(s: &Spot, length: i64, limit: u64) -> Result<(), i32> {
    if length < 0 {
        return Err(libc::EINVAL);
    }
    writable(s)?;
    let st = stat(s)?;
    if is_dir(&st) {
        return Err(libc::EISDIR);
    }
    if length > st.st_size && length as u64 > limit {
        return Err(libc::EFBIG);
    }
    let flags = libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    let _as = AsSandbox::enter();
    let fd = match &s.name {
        // SAFETY: openat on a name in a directory we hold.
        Some(n) => owned(unsafe { libc::openat(s.dir.fd(), n.as_ptr(), flags) })?,
        // SAFETY: open through the magic link of a descriptor we hold.
        None => {
            owned(unsafe { libc::open(fd_path(s.dir.fd()).as_ptr(), flags & !libc::O_NOFOLLOW) })?
        }
    };
    // SAFETY: ftruncate on a descriptor we own.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), length) }).map(|_| ())
}

/// `statfs` of the filesystem the target is on.
pub(crate) fn statfs(s: &Spot) -> Result<libc::statfs, i32> {
    let fd = object(s)?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs writes one struct statfs.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatfs succeeded.
    Ok(unsafe { st.assume_init() })
}

/// Whether the target lies on a filesystem mounted `noexec`.
pub(crate) fn noexec(s: &Spot) -> Result<bool, i32> {
    let fd = object(s)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: fstatvfs writes one struct statvfs.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded.
    Ok(unsafe { st.assume_init() }.f_flag & libc::ST_NOEXEC != 0)
}

/// What an extended-attribute call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Xattr {
    Get,
    Set,
    List,
    Remove,
}

/// An extended-attribute call on the target: the kernel's return value (for `Get` and `List`, the
/// size, or the size needed when `size` is 0), and what it wrote for the sandbox.
pub(crate) fn xattr(
    s: &Spot,
    op: Xattr,
    name: &[u8],
    value: &[u8],
    size: usize,
    flags: i32,
    follow: bool,
) -> Result<(i64, Vec<u8>), i32> {
    if matches!(op, Xattr::Set | Xattr::Remove) {
        writable(s)?;
    }
    let (fd, st) = object_not_link(s, follow)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        // Only trusted and security attributes go on a symlink, which the sandbox cannot set.
        return match op {
            Xattr::Get => Err(libc::ENODATA),
            Xattr::List => Ok((0, Vec::new())),
            Xattr::Set | Xattr::Remove => Err(libc::EPERM),
        };
    }
    let path = fd_path(fd.as_raw_fd());
    let n = CString::new(name).map_err(|_| libc::EINVAL)?;
    let mut out = vec![0u8; size];
    let _as = AsSandbox::enter();
    // SAFETY: each call reads the C strings and at most `size` (or `value.len()`) bytes.
    let r = unsafe {
        match op {
            Xattr::Get => libc::getxattr(path.as_ptr(), n.as_ptr(), out.as_mut_ptr().cast(), size),
            Xattr::List => libc::listxattr(path.as_ptr(), out.as_mut_ptr().cast(), size),
            Xattr::Set => libc::setxattr(
                path.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            ) as isize,
            Xattr::Remove => libc::removexattr(path.as_ptr(), n.as_ptr()) as isize,
        }
    };
    if r < 0 {
        return Err(errno());
    }
    out.truncate(if size == 0 { 0 } else { r as usize });
    Ok((r as i64, out))
}

/// Binds a new UNIX socket of type `ty` at `s`: the socket to install.
pub(crate) fn bind(s: &Spot, ty: i32, tid: u32) -> Result<OwnedFd, i32> {
    let Some(name) = &s.name else {
        return Err(libc::EADDRINUSE);
    };
    writable(s)?;
    let umask = umask_of(tid);
    let _as = AsSandbox::enter();
    crate::supervisor::standin::bind::bind_in(
        ty,
        s.dir.fd(),
        OsStr::from_bytes(name.as_bytes()),
        umask,
    )
}
