//! The path syscalls a view routes to the supervisor: their arguments, and their answers.
//!
//! Each handler reads the path (once), resolves it in the view ([`super::walk`]) and then:
//! - leaves the call to the kernel when the kernel, given the sandbox's own string, reaches the
//!   same object (the path never entered a mount, or only mounts shown at their own path, with
//!   no symlink or `..` on the way): Landlock decides it, as without a view;
//! - carries it out beneath the mount's held root ([`super::ops`]) and answers with the result:
//!   a descriptor installed with `SECCOMP_IOCTL_NOTIF_ADDFD`, a `struct stat` or a link's target
//!   written into the sandbox's buffer, a value;
//! - for `chdir` and `execve`, has the kernel restart the call with the host path
//!   ([`super::redirect`]).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::Arc;

use super::cow::Intent;
use super::creds::AsSandbox;
use super::ops::{self, Xattr};
use super::redirect::{self, Scratch};
use super::view::View;
use super::walk::{Base, CowPlace, Last, PATH_MAX, Place, Resolved, Spot};
use crate::supervisor::notify::{Listener, Notification, read_cstr, read_mem, write_mem};

/// `fchmodat2` (Linux 6.6), the same number on every architecture.
const SYS_FCHMODAT2: i64 = 452;
/// Largest extended attribute value and list (`XATTR_SIZE_MAX`, `XATTR_LIST_MAX`).
const XATTR_MAX: usize = 65536;
/// Longest extended attribute name (`XATTR_NAME_MAX`).
const XATTR_NAME_MAX: usize = 255;
/// `BINPRM_BUF_SIZE`: how much of a script the kernel reads for its `#!` line.
const SHEBANG_MAX: usize = 256;

/// What the view remembers across notifications of one run.
#[derive(Debug, Default)]
pub(crate) struct State {
    scratch: Scratch,
}

/// Whether the view handles syscall `nr` (the filter routes these when a policy has a view).
pub(crate) fn handles(nr: i64) -> bool {
    #[cfg(target_arch = "x86_64")]
    if matches!(
        nr,
        libc::SYS_open
            | libc::SYS_creat
            | libc::SYS_stat
            | libc::SYS_lstat
            | libc::SYS_access
            | libc::SYS_readlink
            | libc::SYS_mkdir
            | libc::SYS_rmdir
            | libc::SYS_unlink
            | libc::SYS_rename
            | libc::SYS_renameat
            | libc::SYS_link
            | libc::SYS_symlink
            | libc::SYS_chmod
            | libc::SYS_chown
            | libc::SYS_lchown
            | libc::SYS_utime
            | libc::SYS_utimes
            | libc::SYS_futimesat
            | libc::SYS_mknod
    ) {
        return true;
    }
    matches!(
        nr,
        libc::SYS_openat
            | libc::SYS_openat2
            | libc::SYS_newfstatat
            | libc::SYS_statx
            | libc::SYS_faccessat
            | libc::SYS_faccessat2
            | libc::SYS_readlinkat
            | libc::SYS_mkdirat
            | libc::SYS_mknodat
            | libc::SYS_unlinkat
            | libc::SYS_renameat2
            | libc::SYS_linkat
            | libc::SYS_symlinkat
            | libc::SYS_fchmodat
            | SYS_FCHMODAT2
            | libc::SYS_fchownat
            | libc::SYS_utimensat
            | libc::SYS_truncate
            | libc::SYS_chdir
            | libc::SYS_getcwd
            | libc::SYS_execve
            | libc::SYS_execveat
            | libc::SYS_statfs
            | libc::SYS_getxattr
            | libc::SYS_lgetxattr
            | libc::SYS_setxattr
            | libc::SYS_lsetxattr
            | libc::SYS_listxattr
            | libc::SYS_llistxattr
            | libc::SYS_removexattr
            | libc::SYS_lremovexattr
            | libc::SYS_bind
    )
}

/// What became of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Answered.
    Answered,
    /// Not the view's: the caller answers it as without a view (a stand-in, or the kernel).
    Kernel,
}

/// How a handler answers.
enum Answer {
    Kernel,
    Value(i64),
    Fd(OwnedFd, bool),
    /// Already answered (a restarted call).
    Done,
}

/// Decides and answers notification `n`, one of [`handles`].
pub(crate) fn handle(l: &Listener, n: &Notification, view: &View, state: &mut State) -> Verdict {
    let answer = dispatch(l, n, view, state);
    match answer {
        Ok(Answer::Kernel) => return Verdict::Kernel,
        Ok(Answer::Value(v)) => l.reply(n.id, v),
        Ok(Answer::Fd(fd, cloexec)) => l.answer_fd(n.id, &fd, cloexec),
        Ok(Answer::Done) => {}
        Err(e) => l.deny(n.id, e),
    }
    Verdict::Answered
}

fn base(dirfd: u64) -> Base {
    let fd = dirfd as i32;
    if fd == libc::AT_FDCWD {
        Base::Cwd
    } else {
        Base::Fd(fd)
    }
}

/// Reads a path argument (once).
fn path_arg(n: &Notification, ptr: u64) -> Result<Vec<u8>, i32> {
    if ptr == 0 {
        return Err(libc::EFAULT);
    }
    read_cstr(n.pid, ptr, PATH_MAX).map_err(|e| e.raw_os_error().unwrap_or(libc::EFAULT))
}

/// Resolves a path argument; `None` when the kernel would reach the same object.
fn locate(
    view: &View,
    n: &Notification,
    b: Base,
    ptr: u64,
    last: Last,
) -> Result<Option<Resolved>, i32> {
    let raw = path_arg(n, ptr)?;
    let r = view.resolve(n.pid, b, &raw, last)?;
    Ok((!r.same_as_kernel).then_some(r))
}

/// The spot of a resolved path; a real one is acted on beneath the policy path that grants it,
/// one in the work directory in the layer `intent` says.
fn spot(view: &View, r: Resolved, follow: bool, intent: Intent) -> Result<(Spot, bool), i32> {
    let dir_only = r.dir_only;
    let s = match r.place {
        Place::Mount(s) => s,
        Place::Cow(c) => c.cow()?.spot(&c.mount, &c.rel, intent)?,
        Place::Real(p) => view.real_spot(&p, follow)?,
    };
    Ok((s, dir_only))
}

/// Where something new is made at `r`, and, in the work directory, the place to record it at
/// once it is made ([`super::cow::Cow::made`]).
fn new_spot(view: &View, r: Resolved) -> Result<(Spot, Option<CowPlace>), i32> {
    match r.place {
        Place::Cow(c) => {
            let s = c.cow()?.create_at(&c.mount, &c.rel)?;
            Ok((s, Some(c)))
        }
        place => {
            let r = Resolved { place, ..r };
            spot(view, r, false, Intent::Read).map(|(s, _)| (s, None))
        }
    }
}

/// Records something new made in the work directory.
fn made(c: Option<CowPlace>, dir: bool) {
    if let Some(c) = c {
        if let Ok(cow) = c.cow() {
            cow.made(&c.rel, dir);
        }
    }
}

/// Whether two paths are in the same mount, or both outside every mount (rename and link do not
/// cross a mount).
fn same_mount(a: &Resolved, b: &Resolved) -> bool {
    match (a.mount(), b.mount()) {
        (Some(x), Some(y)) => {
            Arc::ptr_eq(x, y) || (x.kind == y.kind && x.kind == super::view::Kind::Policy)
        }
        (None, None) => true,
        _ => false,
    }
}

/// The spot to look at a place of the work directory in.
fn read_spot(c: &CowPlace) -> Result<Spot, i32> {
    c.cow()?.spot(&c.mount, &c.rel, Intent::Read)
}

fn follow_if(nofollow: bool) -> Last {
    if nofollow {
        Last::NoFollow
    } else {
        Last::Follow
    }
}

fn dispatch(l: &Listener, n: &Notification, view: &View, state: &mut State) -> Result<Answer, i32> {
    let a = n.args;
    let at_nofollow = |flags: u64| flags as i32 & libc::AT_SYMLINK_NOFOLLOW != 0;
    let empty_path = |flags: u64, ptr: u64| -> bool {
        flags as i32 & libc::AT_EMPTY_PATH != 0
            && read_mem(n.pid, ptr, 1).is_ok_and(|b| b.first() == Some(&0))
    };
    #[cfg(target_arch = "x86_64")]
    match n.nr {
        libc::SYS_open => return open(view, n, Base::Cwd, a[0], a[1] as i32, a[2] as u32),
        libc::SYS_creat => {
            let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
            return open(view, n, Base::Cwd, a[0], flags, a[1] as u32);
        }
        libc::SYS_stat => return stat(view, n, Base::Cwd, a[0], a[1], false),
        libc::SYS_lstat => return stat(view, n, Base::Cwd, a[0], a[1], true),
        libc::SYS_access => return access(view, n, Base::Cwd, a[0], a[1] as i32),
        libc::SYS_readlink => return readlink(view, n, Base::Cwd, a[0], a[1], a[2]),
        libc::SYS_mkdir => return make(view, n, Base::Cwd, a[0], a[1] as u32, None),
        libc::SYS_mknod => return make(view, n, Base::Cwd, a[0], a[1] as u32, Some(a[2])),
        libc::SYS_rmdir => return unlink(view, n, Base::Cwd, a[0], libc::AT_REMOVEDIR),
        libc::SYS_unlink => return unlink(view, n, Base::Cwd, a[0], 0),
        libc::SYS_rename => return rename(view, n, (Base::Cwd, a[0]), (Base::Cwd, a[1]), 0),
        libc::SYS_renameat => return rename(view, n, (base(a[0]), a[1]), (base(a[2]), a[3]), 0),
        libc::SYS_link => return link(view, n, (Base::Cwd, a[0]), (Base::Cwd, a[1]), false),
        libc::SYS_symlink => return symlink(view, n, a[0], Base::Cwd, a[1]),
        libc::SYS_chmod => return chmod(view, n, Base::Cwd, a[0], a[1] as u32, false),
        libc::SYS_chown => return chown(view, n, Base::Cwd, a[0], a[1], a[2], false),
        libc::SYS_lchown => return chown(view, n, Base::Cwd, a[0], a[1], a[2], true),
        libc::SYS_utime => return utimes(view, n, Base::Cwd, a[0], Times::Utimbuf(a[1]), 0),
        libc::SYS_utimes => return utimes(view, n, Base::Cwd, a[0], Times::Timeval(a[1]), 0),
        libc::SYS_futimesat => {
            return utimes(view, n, base(a[0]), a[1], Times::Timeval(a[2]), 0);
        }
        _ => {}
    }
    match n.nr {
        libc::SYS_openat => open(view, n, base(a[0]), a[1], a[2] as i32, a[3] as u32),
        libc::SYS_openat2 => openat2(view, n, base(a[0]), a[1], a[2], a[3]),
        libc::SYS_newfstatat if empty_path(a[3], a[1]) => Ok(Answer::Kernel),
        libc::SYS_newfstatat => stat(view, n, base(a[0]), a[1], a[2], at_nofollow(a[3])),
        libc::SYS_statx if empty_path(a[2], a[1]) => Ok(Answer::Kernel),
        libc::SYS_statx => statx(view, n, base(a[0]), a[1], a[2] as i32, a[3] as u32, a[4]),
        libc::SYS_faccessat => access(view, n, base(a[0]), a[1], a[2] as i32),
        libc::SYS_faccessat2 if empty_path(a[3], a[1]) => Ok(Answer::Kernel),
        libc::SYS_faccessat2 if at_nofollow(a[3]) => {
            let Some(r) = locate(view, n, base(a[0]), a[1], Last::NoFollow)? else {
                return Ok(Answer::Kernel);
            };
            access_at(r, a[2] as i32, false)
        }
        libc::SYS_faccessat2 => access(view, n, base(a[0]), a[1], a[2] as i32),
        libc::SYS_readlinkat => readlink(view, n, base(a[0]), a[1], a[2], a[3]),
        libc::SYS_mkdirat => make(view, n, base(a[0]), a[1], a[2] as u32, None),
        libc::SYS_mknodat => make(view, n, base(a[0]), a[1], a[2] as u32, Some(a[3])),
        libc::SYS_unlinkat => unlink(view, n, base(a[0]), a[1], a[2] as i32),
        libc::SYS_renameat2 => rename(view, n, (base(a[0]), a[1]), (base(a[2]), a[3]), a[4] as u32),
        libc::SYS_linkat if empty_path(a[4], a[1]) => {
            // The old side is a descriptor: fine when the new one is outside the view.
            match locate(view, n, base(a[2]), a[3], Last::NoFollow)? {
                None => Ok(Answer::Kernel),
                Some(_) => Err(libc::EXDEV),
            }
        }
        libc::SYS_linkat => {
            let follow = a[4] as i32 & libc::AT_SYMLINK_FOLLOW != 0;
            link(view, n, (base(a[0]), a[1]), (base(a[2]), a[3]), follow)
        }
        libc::SYS_symlinkat => symlink(view, n, a[0], base(a[1]), a[2]),
        libc::SYS_fchmodat => chmod(view, n, base(a[0]), a[1], a[2] as u32, false),
        SYS_FCHMODAT2 if empty_path(a[3], a[1]) => Ok(Answer::Kernel),
        SYS_FCHMODAT2 => chmod(view, n, base(a[0]), a[1], a[2] as u32, at_nofollow(a[3])),
        libc::SYS_fchownat if empty_path(a[4], a[1]) => Ok(Answer::Kernel),
        libc::SYS_fchownat => chown(view, n, base(a[0]), a[1], a[2], a[3], at_nofollow(a[4])),
        // A NULL path: `futimens` on the descriptor.
        libc::SYS_utimensat if a[1] == 0 => Ok(Answer::Kernel),
        libc::SYS_utimensat => utimes(
            view,
            n,
            base(a[0]),
            a[1],
            Times::Timespec(a[2]),
            a[3] as i32,
        ),
        libc::SYS_truncate => truncate(view, n, a[0], a[1] as i64),
        libc::SYS_statfs => statfs(view, n, a[0], a[1]),
        libc::SYS_chdir => chdir(l, view, n, state, a[0]),
        libc::SYS_getcwd => getcwd(view, n, a[0], a[1]),
        libc::SYS_execve => exec(l, view, n, state, Base::Cwd, (0, 1), 0),
        libc::SYS_execveat if empty_path(a[4], a[1]) => Ok(Answer::Kernel),
        libc::SYS_execveat => exec(l, view, n, state, base(a[0]), (1, 2), a[4] as i32),
        libc::SYS_getxattr => xattr(view, n, Xattr::Get, true),
        libc::SYS_lgetxattr => xattr(view, n, Xattr::Get, false),
        libc::SYS_setxattr => xattr(view, n, Xattr::Set, true),
        libc::SYS_lsetxattr => xattr(view, n, Xattr::Set, false),
        libc::SYS_listxattr => xattr(view, n, Xattr::List, true),
        libc::SYS_llistxattr => xattr(view, n, Xattr::List, false),
        libc::SYS_removexattr => xattr(view, n, Xattr::Remove, true),
        libc::SYS_lremovexattr => xattr(view, n, Xattr::Remove, false),
        libc::SYS_bind => bind(l, view, n),
        _ => Ok(Answer::Kernel),
    }
}

fn open(
    view: &View,
    n: &Notification,
    b: Base,
    ptr: u64,
    flags: i32,
    mode: u32,
) -> Result<Answer, i32> {
    // O_CREAT | O_EXCL never follows a last symlink; O_NOFOLLOW does not either.
    let excl = flags & (libc::O_CREAT | libc::O_EXCL) == libc::O_CREAT | libc::O_EXCL;
    let last = follow_if(excl || flags & libc::O_NOFOLLOW != 0);
    let Some(r) = locate(view, n, b, ptr, last)? else {
        return Ok(Answer::Kernel);
    };
    let fd = open_at(view, r, flags, mode, n.pid, last)?;
    Ok(Answer::Fd(fd, flags & libc::O_CLOEXEC != 0))
}

fn open_at(
    view: &View,
    r: Resolved,
    flags: i32,
    mode: u32,
    tid: u32,
    last: Last,
) -> Result<OwnedFd, i32> {
    if let Place::Cow(c) = &r.place {
        return cow_open(c, flags, mode, tid, r.dir_only);
    }
    let (s, trailing) = spot(view, r, last == Last::Follow, Intent::Read)?;
    ops::open(&s, flags, mode, tid, trailing)
}

/// `open` in the work directory: a new file is made in the upper layer, one opened for writing is
/// copied up first, a directory opened for reading lists the merged view.
fn cow_open(c: &CowPlace, flags: i32, mode: u32, tid: u32, trailing: bool) -> Result<OwnedFd, i32> {
    use super::cow::Node;
    let cow = c.cow()?;
    let (node, _) = cow.find(&c.rel)?;
    let creat = flags & libc::O_CREAT != 0;
    let tmpfile = flags & libc::O_TMPFILE == libc::O_TMPFILE;
    let path_only = flags & libc::O_PATH != 0;
    let write = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 || tmpfile;
    match node {
        Node::Missing if creat && !trailing && !tmpfile => {
            let s = cow.create_at(&c.mount, &c.rel)?;
            let fd = ops::open(&s, flags, mode, tid, false)?;
            cow.made(&c.rel, false);
            Ok(fd)
        }
        Node::Missing if creat && trailing => Err(libc::EISDIR),
        Node::Missing => Err(libc::ENOENT),
        _ if creat && flags & libc::O_EXCL != 0 => Err(libc::EEXIST),
        Node::Dir if tmpfile => {
            // An unnamed file in a directory of the work directory: made in its upper copy.
            let s = cow.spot(&c.mount, &c.rel, Intent::Change { owner: false })?;
            ops::open(&s, flags, mode, tid, false)
        }
        Node::Dir if write && !path_only => Err(libc::EISDIR),
        Node::Dir if !path_only => cow.open_dir(&c.rel, flags),
        Node::Dir => ops::open(&read_spot(c)?, flags, mode, tid, false),
        _ if trailing => Err(libc::ENOTDIR),
        _ => {
            let intent = if write && !path_only {
                Intent::Change { owner: false }
            } else {
                Intent::Read
            };
            let s = cow.spot(&c.mount, &c.rel, intent)?;
            ops::open(&s, flags & !libc::O_CREAT, mode, tid, false)
        }
    }
}

fn openat2(
    view: &View,
    n: &Notification,
    b: Base,
    ptr: u64,
    how: u64,
    size: u64,
) -> Result<Answer, i32> {
    if !(24..=4096).contains(&size) {
        return Err(if size < 24 { libc::EINVAL } else { libc::E2BIG });
    }
    let raw = read_mem(n.pid, how, 24).map_err(|_| libc::EFAULT)?;
    if raw.len() < 24 {
        return Err(libc::EFAULT);
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&raw[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(w)
    };
    let (flags, mode, resolve) = (word(0), word(1), word(2));
    let Some(r) = locate(
        view,
        n,
        b,
        ptr,
        follow_if(flags as i32 & libc::O_NOFOLLOW != 0),
    )?
    else {
        return Ok(Answer::Kernel);
    };
    if resolve != 0 || flags > u64::from(u32::MAX) {
        // RESOLVE_* restrictions are not emulated inside the view: the caller falls back to
        // openat, as it would on a kernel without openat2.
        return Err(libc::ENOSYS);
    }
    let flags = flags as i32;
    let last = follow_if(flags & libc::O_NOFOLLOW != 0);
    let fd = open_at(view, r, flags, mode as u32, n.pid, last)?;
    Ok(Answer::Fd(fd, flags & libc::O_CLOEXEC != 0))
}

/// Runs a metadata call on a real path the kernel would not have reached by the sandbox's string
/// (Landlock does not govern `stat`, `access`, `readlink`, `statfs` or reading attributes, so the
/// sandbox could ask the same of the real path itself).
fn on_real<T>(p: &Path, f: impl FnOnce(&CString) -> Result<T, i32>) -> Result<T, i32> {
    let c = CString::new(p.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    let _as = AsSandbox::enter();
    f(&c)
}

fn stat(
    view: &View,
    n: &Notification,
    b: Base,
    ptr: u64,
    buf: u64,
    nofollow: bool,
) -> Result<Answer, i32> {
    let Some(r) = locate(view, n, b, ptr, follow_if(nofollow))? else {
        return Ok(Answer::Kernel);
    };
    let st = match &r.place {
        Place::Mount(s) => ops::stat(s)?,
        Place::Cow(c) => ops::stat(&read_spot(c)?)?,
        Place::Real(p) => on_real(p, |c| {
            let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
            let flags = if nofollow {
                libc::AT_SYMLINK_NOFOLLOW
            } else {
                0
            };
            // SAFETY: fstatat writes one struct stat.
            if unsafe { libc::fstatat(libc::AT_FDCWD, c.as_ptr(), st.as_mut_ptr(), flags) } < 0 {
                return Err(crate::sys::errno());
            }
            // SAFETY: fstatat succeeded.
            Ok(unsafe { st.assume_init() })
        })?,
    };
    if r.dir_only && st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(libc::ENOTDIR);
    }
    // SAFETY: struct stat is plain data; its bytes are what the kernel would copy out.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&st as *const libc::stat).cast::<u8>(),
            std::mem::size_of::<libc::stat>(),
        )
    };
    write_mem(n.pid, buf, bytes)?;
    Ok(Answer::Value(0))
}

fn statx(
    view: &View,
    n: &Notification,
    b: Base,
    ptr: u64,
    flags: i32,
    mask: u32,
    buf: u64,
) -> Result<Answer, i32> {
    let nofollow = flags & libc::AT_SYMLINK_NOFOLLOW != 0;
    let Some(r) = locate(view, n, b, ptr, follow_if(nofollow))? else {
        return Ok(Answer::Kernel);
    };
    let out = match &r.place {
        Place::Mount(s) => ops::statx(s, flags, mask)?,
        Place::Cow(c) => ops::statx(&read_spot(c)?, flags, mask)?,
        Place::Real(p) => on_real(p, |c| {
            let mut out = [0u8; 256];
            let f = (flags & libc::AT_STATX_SYNC_TYPE)
                | if nofollow {
                    libc::AT_SYMLINK_NOFOLLOW
                } else {
                    0
                };
            // SAFETY: statx writes one struct statx (256 bytes).
            let r = unsafe {
                libc::syscall(
                    libc::SYS_statx,
                    libc::AT_FDCWD,
                    c.as_ptr(),
                    f,
                    mask,
                    out.as_mut_ptr(),
                )
            };
            if r < 0 {
                return Err(crate::sys::errno());
            }
            Ok(out)
        })?,
    };
    // stx_mode is the u16 at offset 28.
    let mode = u32::from(u16::from_ne_bytes([out[28], out[29]]));
    if r.dir_only && mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(libc::ENOTDIR);
    }
    write_mem(n.pid, buf, &out)?;
    Ok(Answer::Value(0))
}

fn access(view: &View, n: &Notification, b: Base, ptr: u64, mode: i32) -> Result<Answer, i32> {
    let Some(r) = locate(view, n, b, ptr, Last::Follow)? else {
        return Ok(Answer::Kernel);
    };
    access_at(r, mode, true)
}

fn access_at(r: Resolved, mode: i32, follow: bool) -> Result<Answer, i32> {
    if mode & !(libc::R_OK | libc::W_OK | libc::X_OK) != 0 {
        return Err(libc::EINVAL);
    }
    match &r.place {
        Place::Mount(s) => {
            if r.dir_only {
                ops::dir_only(s)?;
            }
            ops::access(s, mode)?;
        }
        Place::Cow(c) => {
            let s = read_spot(c)?;
            if r.dir_only {
                ops::dir_only(&s)?;
            }
            ops::access(&s, mode)?;
        }
        Place::Real(p) => on_real(p, |c| {
            let flags = libc::AT_EACCESS | if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
            // SAFETY: faccessat2 reads the C string.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_faccessat2,
                    libc::AT_FDCWD,
                    c.as_ptr(),
                    mode,
                    flags,
                )
            };
            if r < 0 {
                Err(crate::sys::errno())
            } else {
                Ok(())
            }
        })?,
    }
    Ok(Answer::Value(0))
}

/// `/proc/self/cwd` and the like: the working directory of the caller, which lies in a HOST when
/// it changed into a mount.
fn own_cwd_link(n: &Notification, raw: &[u8]) -> Option<()> {
    let rest = raw.strip_prefix(b"/proc/")?;
    let rest = rest.strip_suffix(b"/cwd")?;
    let text = std::str::from_utf8(rest).ok()?;
    let tgid = crate::supervisor::standin::target::status_field(n.pid as i32, "Tgid")?;
    let me = |s: &str| {
        s == "self"
            || s == "thread-self"
            || s.parse::<i32>()
                .ok()
                .is_some_and(|p| p == tgid || p == n.pid as i32)
    };
    let mut parts = text.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(p), None, None, None) if me(p) => Some(()),
        (Some(p), Some("task"), Some(t), None)
            if me(p) && t.parse::<i32>().ok() == Some(n.pid as i32) =>
        {
            Some(())
        }
        _ => None,
    }
}

fn readlink(
    view: &View,
    n: &Notification,
    b: Base,
    ptr: u64,
    buf: u64,
    size: u64,
) -> Result<Answer, i32> {
    if (size as i64) <= 0 {
        return Err(libc::EINVAL);
    }
    let raw = path_arg(n, ptr)?;
    let target = if own_cwd_link(n, &raw).is_some() {
        let real = std::fs::read_link(format!("/proc/{}/cwd", n.pid)).map_err(|_| libc::ENOENT)?;
        let v = view.virtual_of(&real);
        if v == real {
            return Ok(Answer::Kernel);
        }
        v.into_os_string().into_vec()
    } else {
        let r = view.resolve(n.pid, b, &raw, Last::NoFollow)?;
        if r.same_as_kernel {
            return Ok(Answer::Kernel);
        }
        match &r.place {
            Place::Mount(s) => ops::readlink(s)?,
            Place::Cow(c) => ops::readlink(&read_spot(c)?)?,
            Place::Real(p) => on_real(p, |c| {
                let mut out = vec![0u8; PATH_MAX + 1];
                // SAFETY: readlink writes at most `out.len()` bytes.
                let k = unsafe { libc::readlink(c.as_ptr(), out.as_mut_ptr().cast(), out.len()) };
                if k < 0 {
                    return Err(crate::sys::errno());
                }
                out.truncate(k as usize);
                Ok(out)
            })?,
        }
    };
    let len = target.len().min(size as usize);
    write_mem(n.pid, buf, &target[..len])?;
    Ok(Answer::Value(len as i64))
}

fn make(
    view: &View,
    n: &Notification,
    b: Base,
    ptr: u64,
    mode: u32,
    dev: Option<u64>,
) -> Result<Answer, i32> {
    let Some(r) = locate(view, n, b, ptr, Last::NoFollow)? else {
        return Ok(Answer::Kernel);
    };
    if dev.is_some() && r.dir_only {
        return Err(libc::ENOENT);
    }
    let (s, cow) = new_spot(view, r)?;
    ops::make(&s, n.pid, mode, dev.map(|d| d as libc::dev_t))?;
    made(cow, dev.is_none());
    Ok(Answer::Value(0))
}

fn unlink(view: &View, n: &Notification, b: Base, ptr: u64, flags: i32) -> Result<Answer, i32> {
    if flags & !libc::AT_REMOVEDIR != 0 {
        return Err(libc::EINVAL);
    }
    let Some(r) = locate(view, n, b, ptr, Last::NoFollow)? else {
        return Ok(Answer::Kernel);
    };
    if let Place::Cow(c) = &r.place {
        let rmdir = flags & libc::AT_REMOVEDIR != 0;
        c.cow()?.remove(&c.rel, rmdir, r.dir_only)?;
        return Ok(Answer::Value(0));
    }
    let (s, trailing) = spot(view, r, false, Intent::Read)?;
    ops::unlink(&s, flags, trailing)?;
    Ok(Answer::Value(0))
}

/// Resolves both paths of a two-path call; `None` when both are the kernel's.
fn two(
    view: &View,
    n: &Notification,
    old: (Base, u64),
    new: (Base, u64),
    old_last: Last,
) -> Result<Option<(Resolved, Resolved)>, i32> {
    let a = view.resolve(n.pid, old.0, &path_arg(n, old.1)?, old_last)?;
    let b = view.resolve(n.pid, new.0, &path_arg(n, new.1)?, Last::NoFollow)?;
    if a.same_as_kernel && b.same_as_kernel {
        return Ok(None);
    }
    Ok(Some((a, b)))
}

fn rename(
    view: &View,
    n: &Notification,
    old: (Base, u64),
    new: (Base, u64),
    flags: u32,
) -> Result<Answer, i32> {
    let Some((a, b)) = two(view, n, old, new, Last::NoFollow)? else {
        return Ok(Answer::Kernel);
    };
    if !same_mount(&a, &b) {
        // Between a mount and a path outside it, as between two mounts.
        return Err(libc::EXDEV);
    }
    if let (Place::Cow(x), Place::Cow(y)) = (&a.place, &b.place) {
        x.cow()?.rename(&x.rel, &y.rel, flags)?;
        return Ok(Answer::Value(0));
    }
    let (from, from_dir) = spot(view, a, false, Intent::Read)?;
    let (to, _) = spot(view, b, false, Intent::Read)?;
    if from_dir {
        ops::dir_only(&from)?;
    }
    ops::rename(&from, &to, flags)?;
    Ok(Answer::Value(0))
}

fn link(
    view: &View,
    n: &Notification,
    old: (Base, u64),
    new: (Base, u64),
    follow: bool,
) -> Result<Answer, i32> {
    let Some((a, b)) = two(view, n, old, new, follow_if(!follow))? else {
        return Ok(Answer::Kernel);
    };
    if !same_mount(&a, &b) {
        return Err(libc::EXDEV);
    }
    if let (Place::Cow(x), Place::Cow(y)) = (&a.place, &b.place) {
        x.cow()?.link(&x.rel, &y.rel)?;
        return Ok(Answer::Value(0));
    }
    let (from, _) = spot(view, a, false, Intent::Read)?;
    let (to, _) = spot(view, b, false, Intent::Read)?;
    ops::link(&from, &to)?;
    Ok(Answer::Value(0))
}

fn symlink(view: &View, n: &Notification, target: u64, b: Base, ptr: u64) -> Result<Answer, i32> {
    let Some(r) = locate(view, n, b, ptr, Last::NoFollow)? else {
        return Ok(Answer::Kernel);
    };
    let t = path_arg(n, target)?;
    if t.is_empty() {
        return Err(libc::ENOENT);
    }
    let (s, cow) = new_spot(view, r)?;
    ops::symlink(&t, &s)?;
    made(cow, false);
    Ok(Answer::Value(0))
}

fn chmod(
    view: &View,
    n: &Notification,
    b: Base,
    ptr: u64,
    mode: u32,
    nofollow: bool,
) -> Result<Answer, i32> {
    let Some(r) = locate(view, n, b, ptr, follow_if(nofollow))? else {
        return Ok(Answer::Kernel);
    };
    let (s, _) = spot(view, r, !nofollow, Intent::Change { owner: true })?;
    ops::chmod(&s, mode, !nofollow)?;
    Ok(Answer::Value(0))
}

fn chown(
    view: &View,
    n: &Notification,
    b: Base,
    ptr: u64,
    uid: u64,
    gid: u64,
    nofollow: bool,
) -> Result<Answer, i32> {
    let Some(r) = locate(view, n, b, ptr, follow_if(nofollow))? else {
        return Ok(Answer::Kernel);
    };
    let (s, _) = spot(view, r, !nofollow, Intent::Change { owner: true })?;
    ops::chown(&s, uid as u32, gid as u32, !nofollow)?;
    Ok(Answer::Value(0))
}

/// Where a call's times are, in which layout.
#[derive(Debug, Clone, Copy)]
enum Times {
    /// `struct utimbuf` (`utime`): access and modification time in seconds.
    #[cfg(target_arch = "x86_64")]
    Utimbuf(u64),
    /// Two `struct timeval` (`utimes`, `futimesat`).
    #[cfg(target_arch = "x86_64")]
    Timeval(u64),
    /// Two `struct timespec` (`utimensat`).
    Timespec(u64),
}

fn read_words(n: &Notification, addr: u64, count: usize) -> Result<Vec<i64>, i32> {
    let bytes = read_mem(n.pid, addr, count * 8).map_err(|_| libc::EFAULT)?;
    if bytes.len() < count * 8 {
        return Err(libc::EFAULT);
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| i64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

fn timespecs(n: &Notification, t: Times) -> Result<Option<[libc::timespec; 2]>, i32> {
    let ts = |sec: i64, nsec: i64| libc::timespec {
        // `time_t` (64 bits on x86_64 and aarch64 with glibc and musl alike), by inference:
        // musl's libc crate marks the alias deprecated.
        tv_sec: sec as _,
        tv_nsec: nsec as libc::c_long,
    };
    Ok(match t {
        #[cfg(target_arch = "x86_64")]
        Times::Utimbuf(0) | Times::Timeval(0) => None,
        Times::Timespec(0) => None,
        #[cfg(target_arch = "x86_64")]
        Times::Utimbuf(p) => {
            let w = read_words(n, p, 2)?;
            Some([ts(w[0], 0), ts(w[1], 0)])
        }
        #[cfg(target_arch = "x86_64")]
        Times::Timeval(p) => {
            let w = read_words(n, p, 4)?;
            if [w[1], w[3]].iter().any(|u| !(0..1_000_000).contains(u)) {
                return Err(libc::EINVAL);
            }
            Some([ts(w[0], w[1] * 1000), ts(w[2], w[3] * 1000)])
        }
        Times::Timespec(p) => {
            let w = read_words(n, p, 4)?;
            Some([ts(w[0], w[1]), ts(w[2], w[3])])
        }
    })
}

fn utimes(
    view: &View,
    n: &Notification,
    b: Base,
    ptr: u64,
    t: Times,
    flags: i32,
) -> Result<Answer, i32> {
    if flags & !(libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH) != 0 {
        return Err(libc::EINVAL);
    }
    let nofollow = flags & libc::AT_SYMLINK_NOFOLLOW != 0;
    let Some(r) = locate(view, n, b, ptr, follow_if(nofollow))? else {
        return Ok(Answer::Kernel);
    };
    let times = timespecs(n, t)?;
    // Given times take ownership of the file; the time now, write permission.
    let owner = times.is_some();
    let (s, _) = spot(view, r, !nofollow, Intent::Change { owner })?;
    ops::utimes(&s, times)?;
    Ok(Answer::Value(0))
}

fn truncate(view: &View, n: &Notification, ptr: u64, length: i64) -> Result<Answer, i32> {
    let Some(r) = locate(view, n, Base::Cwd, ptr, Last::Follow)? else {
        return Ok(Answer::Kernel);
    };
    let (s, _) = spot(view, r, true, Intent::Change { owner: false })?;
    ops::truncate(
        &s,
        length,
        crate::supervisor::standin::truncate::fsize_limit(n.pid),
    )?;
    Ok(Answer::Value(0))
}

fn statfs(view: &View, n: &Notification, ptr: u64, buf: u64) -> Result<Answer, i32> {
    let Some(r) = locate(view, n, Base::Cwd, ptr, Last::Follow)? else {
        return Ok(Answer::Kernel);
    };
    let st = match &r.place {
        Place::Mount(s) => ops::statfs(s)?,
        Place::Cow(c) => ops::statfs(&read_spot(c)?)?,
        Place::Real(p) => on_real(p, |c| {
            let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
            // SAFETY: statfs writes one struct statfs.
            if unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) } < 0 {
                return Err(crate::sys::errno());
            }
            // SAFETY: statfs succeeded.
            Ok(unsafe { st.assume_init() })
        })?,
    };
    // SAFETY: struct statfs is plain data.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&st as *const libc::statfs).cast::<u8>(),
            std::mem::size_of::<libc::statfs>(),
        )
    };
    write_mem(n.pid, buf, bytes)?;
    Ok(Answer::Value(0))
}

fn xattr(view: &View, n: &Notification, op: Xattr, follow: bool) -> Result<Answer, i32> {
    let a = n.args;
    let last = follow_if(!follow);
    let Some(r) = locate(view, n, Base::Cwd, a[0], last)? else {
        return Ok(Answer::Kernel);
    };
    let name = if op == Xattr::List {
        Vec::new()
    } else {
        let nm = read_cstr(n.pid, a[1], XATTR_NAME_MAX).map_err(|e| match e.raw_os_error() {
            Some(libc::ENAMETOOLONG) => libc::ERANGE,
            Some(e) => e,
            None => libc::EFAULT,
        })?;
        if nm.is_empty() {
            return Err(libc::ERANGE);
        }
        nm
    };
    // (buffer, size) of the value or list; the flags of a set.
    let (buf, size, flags) = match op {
        Xattr::Get | Xattr::Set => (a[2], a[3] as usize, a[4] as i32),
        Xattr::List => (a[1], a[2] as usize, 0),
        Xattr::Remove => (0, 0, 0),
    };
    let value = if op == Xattr::Set {
        if size > XATTR_MAX {
            return Err(libc::E2BIG);
        }
        let v = read_mem(n.pid, buf, size).map_err(|_| libc::EFAULT)?;
        if v.len() != size {
            return Err(libc::EFAULT);
        }
        v
    } else {
        Vec::new()
    };
    let size = if matches!(op, Xattr::Get | Xattr::List) {
        size.min(XATTR_MAX)
    } else {
        0
    };
    let (ret, out) = match &r.place {
        Place::Mount(s) => ops::xattr(s, op, &name, &value, size, flags, follow)?,
        Place::Cow(c) => {
            let intent = match op {
                Xattr::Get | Xattr::List => Intent::Read,
                Xattr::Set | Xattr::Remove => Intent::Change { owner: true },
            };
            let s = c.cow()?.spot(&c.mount, &c.rel, intent)?;
            ops::xattr(&s, op, &name, &value, size, flags, follow)?
        }
        Place::Real(p) if matches!(op, Xattr::Get | Xattr::List) => on_real(p, |c| {
            let nm = CString::new(name.clone()).map_err(|_| libc::EINVAL)?;
            let mut out = vec![0u8; size];
            // SAFETY: each call writes at most `size` bytes into `out`.
            let k = unsafe {
                match (op, follow) {
                    (Xattr::Get, true) => {
                        libc::getxattr(c.as_ptr(), nm.as_ptr(), out.as_mut_ptr().cast(), size)
                    }
                    (Xattr::Get, false) => {
                        libc::lgetxattr(c.as_ptr(), nm.as_ptr(), out.as_mut_ptr().cast(), size)
                    }
                    (_, true) => libc::listxattr(c.as_ptr(), out.as_mut_ptr().cast(), size),
                    (_, false) => libc::llistxattr(c.as_ptr(), out.as_mut_ptr().cast(), size),
                }
            };
            if k < 0 {
                return Err(crate::sys::errno());
            }
            out.truncate(if size == 0 { 0 } else { k as usize });
            Ok((k as i64, out))
        })?,
        Place::Real(p) => {
            let s = view.real_spot(p, follow)?;
            ops::xattr(&s, op, &name, &value, size, flags, follow)?
        }
    };
    write_mem(n.pid, buf, &out)?;
    Ok(Answer::Value(ret))
}

fn bind(l: &Listener, view: &View, n: &Notification) -> Result<Answer, i32> {
    let (fd, addr, len) = (n.args[0], n.args[1], n.args[2] as usize);
    let ty = match crate::supervisor::connect::sock_proto(n.pid, fd).as_deref() {
        Ok("UNIX-STREAM") => libc::SOCK_STREAM,
        Ok("UNIX") => libc::SOCK_SEQPACKET,
        // Not a UNIX socket (or not a socket): not a path.
        _ => return Ok(Answer::Kernel),
    };
    if len <= 2 || len > std::mem::size_of::<libc::sockaddr_un>() {
        return Ok(Answer::Kernel);
    }
    let bytes = read_mem(n.pid, addr, len).map_err(|_| libc::EFAULT)?;
    if bytes.len() != len
        || u16::from_ne_bytes([bytes[0], bytes[1]]) != libc::AF_UNIX as u16
        || bytes[2] == 0
    {
        // Abstract or malformed: not a path.
        return Ok(Answer::Kernel);
    }
    let path: Vec<u8> = bytes[2..]
        .iter()
        .take_while(|b| **b != 0)
        .copied()
        .collect();
    let r = view.resolve(n.pid, Base::Cwd, &path, Last::NoFollow)?;
    if r.same_as_kernel {
        return Ok(Answer::Kernel);
    }
    // Read before the socket file is made, so that a descriptor gone meanwhile leaves none behind.
    let (nonblocking, cloexec) = crate::supervisor::connect::mode(n.pid, fd).ok_or(libc::EBADF)?;
    let (s, cow) = new_spot(view, r)?;
    let sock = ops::bind(&s, ty, n.pid)?;
    made(cow, false);
    crate::supervisor::connect::install(l, n.id, &sock, fd as u32, cloexec, nonblocking, 0);
    Ok(Answer::Done)
}

/// The socket file a UNIX `connect` names, when its path lies in the view: `None` when the kernel
/// would reach it by the sandbox's own path.
pub(crate) fn socket_file(view: &View, tid: u32, path: &[u8]) -> Option<Result<OwnedFd, i32>> {
    let r = match view.resolve(tid, Base::Cwd, path, Last::Follow) {
        Ok(r) => r,
        Err(e) => return Some(Err(e)),
    };
    if r.same_as_kernel {
        return None;
    }
    Some(spot(view, r, true, Intent::Read).and_then(|(s, _)| ops::object(&s)))
}

fn chdir(
    l: &Listener,
    view: &View,
    n: &Notification,
    state: &mut State,
    ptr: u64,
) -> Result<Answer, i32> {
    let raw = path_arg(n, ptr)?;
    let r = view.resolve(n.pid, Base::Cwd, &raw, Last::Follow)?;
    if r.same_as_kernel {
        return Ok(Answer::Kernel);
    }
    let host = match &r.place {
        Place::Mount(s) => {
            let st = ops::stat(s)?;
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                return Err(libc::ENOTDIR);
            }
            s.host.clone()
        }
        Place::Cow(c) => {
            let s = read_spot(c)?;
            if ops::stat(&s)?.st_mode & libc::S_IFMT != libc::S_IFDIR {
                return Err(libc::ENOTDIR);
            }
            s.host
        }
        Place::Real(p) => p.clone(),
    };
    let bytes = host.into_os_string().into_vec();
    if bytes.len() > PATH_MAX {
        return Err(libc::ENAMETOOLONG);
    }
    if bytes == raw {
        // The call names the host directory itself (a work directory's original, or the call
        // restarted with the host path): the kernel goes there, under Landlock.
        return Ok(Answer::Kernel);
    }
    redirect::restart(l, n, &mut state.scratch, &|at| {
        let mut b = bytes.clone();
        b.push(0);
        Ok((b, vec![(0, at)]))
    })?;
    Ok(Answer::Done)
}

fn getcwd(view: &View, n: &Notification, buf: u64, size: u64) -> Result<Answer, i32> {
    let real = match std::fs::read_link(format!("/proc/{}/cwd", n.pid)) {
        Ok(p) => p,
        Err(_) => return Ok(Answer::Kernel),
    };
    let v = view.virtual_of(&real);
    if v == real {
        return Ok(Answer::Kernel);
    }
    let mut bytes = v.into_os_string().into_vec();
    bytes.push(0);
    if (size as usize) < bytes.len() {
        return Err(libc::ERANGE);
    }
    write_mem(n.pid, buf, &bytes)?;
    Ok(Answer::Value(bytes.len() as i64))
}

/// A script's `#!` line: the interpreter as written, and its one optional argument.
pub(crate) type Interpreter = (Vec<u8>, Option<Vec<u8>>);

/// The interpreter line of a script, as the kernel's `binfmt_script` reads it. `None` if `head`
/// is not a script.
pub(crate) fn shebang(head: &[u8]) -> Option<Result<Interpreter, i32>> {
    let rest = head.strip_prefix(b"#!")?;
    let end = rest.iter().position(|b| *b == b'\n');
    if end.is_none() && head.len() >= SHEBANG_MAX {
        // The line does not fit: the kernel refuses it rather than run a truncated interpreter.
        return Some(Err(libc::ENOEXEC));
    }
    let line = &rest[..end.unwrap_or(rest.len())];
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = line.iter().position(|b| !blank(b)).unwrap_or(line.len());
    let line = &line[start..];
    let stop = line
        .iter()
        .position(|b| blank(b) || *b == 0)
        .unwrap_or(line.len());
    let interp = line[..stop].to_vec();
    if interp.is_empty() {
        return Some(Err(libc::ENOEXEC));
    }
    let arg = &line[stop..];
    let a = arg.iter().position(|b| !blank(b)).unwrap_or(arg.len());
    let z = arg.iter().rposition(|b| !blank(b)).map_or(a, |i| i + 1);
    let arg = &arg[a..z.max(a)];
    let arg = arg.split(|b| *b == 0).next().unwrap_or_default();
    Some(Ok((interp, (!arg.is_empty()).then(|| arg.to_vec()))))
}

/// `execve(path, argv, envp)` and `execveat(dirfd, path, argv, envp, flags)`: `args` are the
/// indexes of the path and `argv` arguments.
fn exec(
    l: &Listener,
    view: &View,
    n: &Notification,
    state: &mut State,
    b: Base,
    args: (usize, usize),
    flags: i32,
) -> Result<Answer, i32> {
    let raw = path_arg(n, n.args[args.0])?;
    let r = view.resolve(
        n.pid,
        b,
        &raw,
        follow_if(flags & libc::AT_SYMLINK_NOFOLLOW != 0),
    )?;
    if r.same_as_kernel {
        return Ok(Answer::Kernel);
    }
    let in_cow;
    let in_mount = match &r.place {
        Place::Mount(s) => Some(s),
        Place::Cow(c) => {
            in_cow = read_spot(c)?;
            Some(&in_cow)
        }
        Place::Real(_) => None,
    };
    let (host, script) = match (in_mount, &r.place) {
        (Some(s), _) => {
            let st = ops::stat(s)?;
            match st.st_mode & libc::S_IFMT {
                libc::S_IFREG => {}
                libc::S_IFLNK => return Err(libc::ELOOP),
                _ => return Err(libc::EACCES),
            }
            (s.host.clone(), script_line(s)?)
        }
        (None, Place::Real(p)) => (p.clone(), None),
        (None, _) => return Err(libc::EIO),
    };
    let host = host.into_os_string().into_vec();
    if script.is_none() && host == raw {
        // The call names the host file itself (a work directory's original, or the call
        // restarted with the host path): the kernel runs it, under Landlock.
        return Ok(Answer::Kernel);
    }
    let argv_old = n.args[args.1];
    // A script in the view: the supervisor does what `binfmt_script` does, so that the
    // interpreter (which may lie in the view too, where the kernel could not look it up) gets the
    // script's path as the sandbox named it.
    if let Some((interp, arg)) = script {
        let ir = view.resolve(n.pid, Base::Cwd, &interp, Last::Follow)?;
        let interp_path = match ir.place {
            _ if ir.same_as_kernel => interp.clone(),
            Place::Mount(s) => s.host.into_os_string().into_vec(),
            Place::Cow(c) => read_spot(&c)?.host.into_os_string().into_vec(),
            Place::Real(p) => p.into_os_string().into_vec(),
        };
        let rest: Vec<u64> = redirect::read_ptrs(n.pid, argv_old)?
            .into_iter()
            .skip(1)
            .collect();
        redirect::restart(l, n, &mut state.scratch, &|at| {
            let mut blob = Vec::new();
            let mut put = |s: &[u8]| {
                let addr = at + blob.len() as u64;
                blob.extend_from_slice(s);
                blob.push(0);
                addr
            };
            let path = put(&interp_path);
            let mut argv = vec![put(&interp)];
            if let Some(a) = &arg {
                argv.push(put(a));
            }
            argv.push(put(&raw));
            argv.extend(&rest);
            argv.push(0);
            while blob.len() % 8 != 0 {
                blob.push(0);
            }
            let array = at + blob.len() as u64;
            for p in argv {
                blob.extend_from_slice(&p.to_ne_bytes());
            }
            Ok((blob, vec![(args.0, path), (args.1, array)]))
        })?;
        return Ok(Answer::Done);
    }
    if host.len() > PATH_MAX {
        return Err(libc::ENAMETOOLONG);
    }
    redirect::restart(l, n, &mut state.scratch, &|at| {
        let mut b = host.clone();
        b.push(0);
        Ok((b, vec![(args.0, at)]))
    })?;
    Ok(Answer::Done)
}

/// The `#!` line of the executable at `s`, if it is a script the sandbox may run: executable by
/// it and not on a `noexec` filesystem, as the kernel checks before reading the line.
fn script_line(s: &Spot) -> Result<Option<Interpreter>, i32> {
    let fd = match ops::open(s, libc::O_RDONLY | libc::O_NOCTTY, 0, 0, false) {
        Ok(fd) => fd,
        // Not readable: not a script the sandbox could run; the kernel decides on the host path.
        Err(_) => return Ok(None),
    };
    let mut head = vec![0u8; SHEBANG_MAX];
    // SAFETY: pread writes at most `head.len()` bytes.
    let k = unsafe { libc::pread(fd.as_raw_fd(), head.as_mut_ptr().cast(), head.len(), 0) };
    head.truncate(k.max(0) as usize);
    let Some(line) = shebang(&head) else {
        return Ok(None);
    };
    ops::access(s, libc::X_OK)?;
    if ops::noexec(s)? {
        return Err(libc::EACCES);
    }
    line.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_lines_are_read_as_the_kernel_reads_them() {
        let ok = |h: &[u8]| shebang(h).unwrap().unwrap();
        assert_eq!(ok(b"#!/bin/sh\necho"), (b"/bin/sh".to_vec(), None));
        assert_eq!(
            ok(b"#! /usr/bin/env  python3 -u \nx"),
            (b"/usr/bin/env".to_vec(), Some(b"python3 -u".to_vec()))
        );
        assert_eq!(ok(b"#!/x"), (b"/x".to_vec(), None));
        assert!(shebang(b"\x7fELF").is_none());
        assert_eq!(shebang(b"#!\n").unwrap().unwrap_err(), libc::ENOEXEC);
        let long = [b"#!/".as_slice(), &[b'a'; 300]].concat();
        assert_eq!(shebang(&long[..256]).unwrap().unwrap_err(), libc::ENOEXEC);
    }
}
