//! Resolving a sandbox's path in the view, component by component, as the kernel would in a
//! mount namespace.
//!
//! The walk keeps two things: the virtual path of the directory it is in, and where that
//! directory really is, either somewhere outside every mount (then the walk is lexical and
//! touches nothing: the kernel will do the real work) or inside a mount, as a descriptor opened
//! beneath the mount's held root. Inside a mount:
//! - each directory is opened from the previous one with `O_PATH | O_NOFOLLOW | O_DIRECTORY`, so
//!   nothing the kernel resolves on its own ever leaves the directory we hold;
//! - a symlink is read with `readlinkat` and followed here, in the virtual namespace: an absolute
//!   target starts again from the virtual root (and may enter another mount, or a real path);
//! - `..` goes to the virtual parent, which is re-walked from its mount's root: from a mount's
//!   root it leaves the mount as a chroot's would not, to the directory the mount covers (the
//!   mount is a subtree of the virtual namespace), and it never reaches the HOST's own parent;
//! - a directory on the way to a deeper mount point that the outer mount (or the host) lacks is
//!   taken from the skeleton, so that `/mnt` exists for `/mnt/data`.
//!
//! Nothing here acts: the result names a directory held open and a last component, and the
//! caller carries out its call there with `*at` calls that do not follow that component.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::view::{Kind, Mount, View};
use crate::sys;

/// Symlinks followed in one resolution before `ELOOP` (the kernel's limit).
const MAX_LINKS: u32 = 40;
/// `PATH_MAX` without its NUL.
pub(crate) const PATH_MAX: usize = 4095;

const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

/// A directory the walk holds: a mount's root (shared) or one it opened.
#[derive(Debug, Clone)]
pub(crate) enum Dir {
    Root(Arc<OwnedFd>),
    Own(Arc<OwnedFd>),
}

impl Dir {
    pub(crate) fn fd(&self) -> i32 {
        match self {
            Dir::Root(f) | Dir::Own(f) => f.as_raw_fd(),
        }
    }
}

/// How the last component is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Last {
    /// A symlink there is followed (`open`, `stat`, `chdir`, ...).
    Follow,
    /// It is the object itself, symlink or not (`lstat`, `unlink`, `mkdir`, `rename`, ...).
    NoFollow,
}

/// A place inside a mount.
#[derive(Debug)]
pub(crate) struct Spot {
    pub(crate) mount: Arc<Mount>,
    /// The directory that holds the target, or the target itself when `name` is `None`.
    pub(crate) dir: Dir,
    /// The last component, never `.` or `..`; `None` when the target is `dir` itself (a mount
    /// root, or a path ending in `.` or `..`).
    pub(crate) name: Option<CString>,
    /// The target's host path (what the kernel would resolve to the same object).
    pub(crate) host: PathBuf,
    /// The target is the root of its mount (a mount point: it cannot be removed or renamed).
    pub(crate) is_root: bool,
}

impl Spot {
    /// The last component as a C string (`"."` for the directory itself).
    pub(crate) fn name_or_dot(&self) -> CString {
        self.name.clone().unwrap_or_else(|| c".".to_owned())
    }
}

/// A place in the copy-on-write work directory: which layer the call acts in depends on the call
/// (see `super::cow`).
#[derive(Debug)]
pub(crate) struct CowPlace {
    pub(crate) mount: Arc<Mount>,
    /// The path beneath the work directory (free of symlinks and `..`).
    pub(crate) rel: PathBuf,
}

impl CowPlace {
    /// The work directory's layers.
    pub(crate) fn cow(&self) -> Result<&super::cow::Cow, i32> {
        self.mount.cow.as_deref().ok_or(libc::EIO)
    }
}

/// Where a path leads.
#[derive(Debug)]
pub(crate) enum Place {
    /// Inside a mount.
    Mount(Spot),
    /// Inside the copy-on-write work directory.
    Cow(CowPlace),
    /// Outside every mount: the real path, resolved lexically (symlinks there are the kernel's).
    Real(PathBuf),
}

/// A resolved path.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) place: Place,
    /// The kernel, given the sandbox's own string, would reach the same object: no symlink was
    /// followed, no `..` taken, and only real directories or mounts shown at their own path were
    /// crossed. Such a call can be left to the kernel.
    pub(crate) same_as_kernel: bool,
    /// The path ends in `/` (or `/.`, `/..`): its target must be a directory.
    pub(crate) dir_only: bool,
}

impl Resolved {
    /// The mount the path leads into, if any (the work directory counts as one).
    pub(crate) fn mount(&self) -> Option<&Arc<Mount>> {
        match &self.place {
            Place::Mount(s) => Some(&s.mount),
            Place::Cow(c) => Some(&c.mount),
            Place::Real(_) => None,
        }
    }
}

/// Where a walk is.
#[derive(Debug, Clone)]
enum Pos {
    Real,
    In(usize, Dir),
    /// In the work directory, at this path beneath it.
    Cow(usize, PathBuf),
}

/// Where a relative path starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Base {
    /// The calling thread's working directory.
    Cwd,
    /// A descriptor of the calling process.
    Fd(i32),
}

fn err(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// `openat(dir, name, O_PATH | O_NOFOLLOW | O_DIRECTORY)`.
fn open_dir(dir: i32, name: &CString) -> Result<OwnedFd, i32> {
    // SAFETY: openat reads the C string; the result is a new descriptor we own.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(sys::errno());
    }
    // SAFETY: openat just returned this descriptor.
    Ok(unsafe { sys::owned(fd) })
}

/// `readlinkat(dir, name)`: the target, `EINVAL` if it is not a symlink.
pub(crate) fn read_link(dir: i32, name: &CString) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; PATH_MAX + 1];
    // SAFETY: readlinkat writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(sys::errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Whether `name` exists in `dir` (without following it).
fn exists(dir: i32, name: &CString) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstatat writes one struct stat.
    unsafe {
        libc::fstatat(
            dir,
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        ) == 0
    }
}

fn cname(name: &OsStr) -> Result<CString, i32> {
    CString::new(name.as_bytes()).map_err(|_| libc::EINVAL)
}

/// The real path a relative path of task `tid` starts from, if it is a path at all (a descriptor
/// of a pipe or socket is not).
pub(crate) fn base_path(tid: u32, base: Base) -> Result<Option<PathBuf>, i32> {
    let link = match base {
        Base::Cwd => format!("/proc/{tid}/cwd"),
        Base::Fd(fd) => format!("/proc/{tid}/fd/{fd}"),
    };
    match std::fs::read_link(&link) {
        Ok(p) if p.is_absolute() => Ok(Some(p)),
        Ok(_) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(match base {
            Base::Cwd => libc::ENOENT,
            Base::Fd(_) => libc::EBADF,
        }),
        Err(e) => Err(err(e)),
    }
}

/// Splits `path` into components as the kernel reads them (repeated slashes collapse, `.` and
/// `..` are kept), and says whether it ends in a slash.
fn components(path: &[u8]) -> (VecDeque<OsString>, bool) {
    let parts: VecDeque<OsString> = path
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty())
        .map(|p| OsString::from_vec(p.to_vec()))
        .collect();
    let dir_only = path.ends_with(b"/")
        || parts
            .back()
            .is_some_and(|l| l.as_bytes() == b"." || l.as_bytes() == b"..");
    (parts, dir_only)
}

/// Puts the components of symlink target `link` in front of what is left of the walk (`queue`),
/// counting the link in `links` as the kernel does (ELOOP past [`MAX_LINKS`], ENOENT for an empty
/// target). True when the target is absolute: the walk goes on from "/".
fn splice(link: &[u8], queue: &mut VecDeque<OsString>, links: &mut u32) -> Result<bool, i32> {
    *links += 1;
    if *links > MAX_LINKS {
        return Err(libc::ELOOP);
    }
    if link.is_empty() {
        return Err(libc::ENOENT);
    }
    let (parts, _) = components(link);
    for p in parts.into_iter().rev() {
        queue.push_front(p);
    }
    Ok(link[0] == b'/')
}

impl View {
    /// The mount index of `m` (they are shared between views by `Arc`).
    fn index(&self, m: usize) -> &Arc<Mount> {
        &self.mounts[m]
    }

    /// A mount's root as a walk directory.
    fn root_of(&self, m: usize) -> Dir {
        Dir::Root(self.mounts[m].root.clone())
    }

    /// The skeleton directory for the virtual directory `vpath`.
    fn skeleton_dir(&self, vpath: &Path) -> Result<(usize, Dir), i32> {
        let s = self.skeleton.ok_or(libc::ENOENT)?;
        let rel = vpath.strip_prefix("/").map_err(|_| libc::ENOENT)?;
        if rel.as_os_str().is_empty() {
            return Ok((s, self.root_of(s)));
        }
        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        let how = OpenHow {
            flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
        };
        let c = cname(rel.as_os_str())?;
        // SAFETY: openat2 reads the C string and one open_how of the size we pass.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.mounts[s].root.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        let fd = sys::cvt_long(r).map_err(err)?;
        // SAFETY: openat2 just returned this descriptor.
        Ok((s, Dir::Own(Arc::new(unsafe { sys::owned(fd as i32) }))))
    }

    /// Where the virtual directory `vpath` (already free of symlinks and `..`) really is.
    fn place(&self, vpath: &Path) -> Result<Pos, i32> {
        let Some((m, rest)) = self.covering(vpath) else {
            if self.is_missing(vpath) {
                let (s, d) = self.skeleton_dir(vpath)?;
                return Ok(Pos::In(s, d));
            }
            return Ok(Pos::Real);
        };
        if self.mounts[m].kind == Kind::File {
            return Err(libc::ENOTDIR);
        }
        if let Some(cow) = &self.mounts[m].cow {
            return match cow.find(rest)?.0 {
                super::cow::Node::Dir => Ok(Pos::Cow(m, rest.to_path_buf())),
                super::cow::Node::Missing => Err(libc::ENOENT),
                _ => Err(libc::ENOTDIR),
            };
        }
        let mut at = self.index(m).virt.clone();
        let mut pos = Pos::In(m, self.root_of(m));
        for c in rest.components() {
            let Component::Normal(name) = c else {
                return Err(libc::ENOENT);
            };
            at.push(name);
            pos = match pos {
                Pos::In(k, d) if self.mounts[k].kind != Kind::Skeleton => {
                    match open_dir(d.fd(), &cname(name)?) {
                        Ok(fd) => Pos::In(k, Dir::Own(Arc::new(fd))),
                        Err(libc::ENOENT) if self.leads_to_mount(&at) => {
                            let (s, d) = self.skeleton_dir(&at)?;
                            Pos::In(s, d)
                        }
                        Err(e) => return Err(e),
                    }
                }
                _ => {
                    let (s, d) = self.skeleton_dir(&at)?;
                    Pos::In(s, d)
                }
            };
        }
        Ok(pos)
    }

    fn spot(&self, m: usize, dir: Dir, name: Option<CString>, virt: PathBuf) -> Spot {
        let mount = self.index(m).clone();
        let rel = virt.strip_prefix(&mount.virt).unwrap_or(Path::new(""));
        let host = if rel.as_os_str().is_empty() {
            mount.host.clone()
        } else {
            mount.host.join(rel)
        };
        Spot {
            is_root: name.is_none() && mount.virt == virt && mount.kind != Kind::Skeleton,
            mount,
            dir,
            name,
            host,
        }
    }

    /// The file of the [`Kind::File`] mount `m`, as a name in the directory held for it.
    fn file_spot(&self, m: usize) -> Result<Spot, i32> {
        let mount = self.index(m).clone();
        let name = cname(mount.host.file_name().ok_or(libc::EIO)?)?;
        Ok(Spot {
            dir: Dir::Root(mount.root.clone()),
            name: Some(name),
            host: mount.host.clone(),
            is_root: true,
            mount,
        })
    }

    /// Resolves `path` of task `tid`, relative paths from `base`.
    pub(crate) fn resolve(
        &self,
        tid: u32,
        base: Base,
        path: &[u8],
        last: Last,
    ) -> Result<Resolved, i32> {
        let r = self.walk(tid, base, path, last)?;
        match &r.place {
            Place::Real(p) if last == Last::Follow && !self.aliases.is_empty() => {
                match self.alias_of(p) {
                    Some(m) => Ok(Resolved {
                        place: Place::Mount(self.file_spot(m)?),
                        same_as_kernel: false,
                        dir_only: r.dir_only,
                    }),
                    None => Ok(r),
                }
            }
            _ => Ok(r),
        }
    }

    /// The file mount whose host file the real path `p` leads to (through symlinks the kernel
    /// would follow), if any.
    fn alias_of(&self, p: &Path) -> Option<usize> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p).ok()?;
        let a = self
            .aliases
            .iter()
            .find(|a| a.dev == m.dev() && a.ino == m.ino())?;
        self.mount_at(&a.virt)
    }

    /// [`View::resolve`] without the aliases of file mounts.
    fn walk(&self, tid: u32, base: Base, path: &[u8], last: Last) -> Result<Resolved, i32> {
        if path.is_empty() {
            return Err(libc::ENOENT);
        }
        let (mut vpath, mut same) = if path[0] == b'/' {
            (PathBuf::from("/"), true)
        } else {
            match base_path(tid, base)? {
                Some(real) => {
                    let v = self.virtual_of(&real);
                    let same = v == real;
                    (v, same)
                }
                // Not a directory at all: the kernel gives the error.
                None => {
                    return Ok(Resolved {
                        place: Place::Real(PathBuf::from(OsStr::from_bytes(path))),
                        same_as_kernel: true,
                        dir_only: false,
                    });
                }
            }
        };
        // The string so far reads the same to the kernel (no symlink followed, no `..`), so a
        // mount shown at its own path is where the kernel's walk would be too.
        let mut clean = same;
        let mut pos = self.place(&vpath)?;
        match &pos {
            Pos::In(m, _) => same &= self.mounts[*m].kind == Kind::Identity,
            // The kernel would see the lower layer only.
            Pos::Cow(..) => same = false,
            Pos::Real => {}
        }
        let (mut queue, dir_only) = components(path);
        let mut links = 0u32;
        let here = |view: &View, pos: &Pos, vpath: &Path, same: bool| -> Resolved {
            let place = match pos {
                Pos::Real => Place::Real(vpath.to_path_buf()),
                Pos::In(m, d) => Place::Mount(view.spot(*m, d.clone(), None, vpath.to_path_buf())),
                Pos::Cow(m, rel) => Place::Cow(CowPlace {
                    mount: view.mounts[*m].clone(),
                    rel: rel.clone(),
                }),
            };
            Resolved {
                place,
                same_as_kernel: same,
                dir_only,
            }
        };
        while let Some(c) = queue.pop_front() {
            let is_last = queue.is_empty();
            match c.as_bytes() {
                b"." => {
                    if is_last {
                        return Ok(here(self, &pos, &vpath, same));
                    }
                    continue;
                }
                b".." => {
                    same = false;
                    clean = false;
                    vpath.pop();
                    pos = self.place(&vpath)?;
                    if is_last {
                        return Ok(here(self, &pos, &vpath, same));
                    }
                    continue;
                }
                _ => {}
            }
            let next = vpath.join(&c);
            if let Some(m) = self.mount_at(&next) {
                if self.mounts[m].kind == Kind::File {
                    // A file: nothing beneath it, not even `.` or `..`.
                    if !is_last || dir_only {
                        return Err(libc::ENOTDIR);
                    }
                    return Ok(Resolved {
                        place: Place::Mount(self.file_spot(m)?),
                        same_as_kernel: false,
                        dir_only,
                    });
                }
                same = clean && self.mounts[m].kind == Kind::Identity;
                vpath = next;
                pos = if self.mounts[m].cow.is_some() {
                    Pos::Cow(m, PathBuf::new())
                } else {
                    Pos::In(m, self.root_of(m))
                };
                if is_last {
                    return Ok(here(self, &pos, &vpath, same));
                }
                continue;
            }
            let name = cname(&c)?;
            let dir = match &pos {
                Pos::Real => {
                    if self.is_missing(&next) {
                        same = false;
                        if is_last {
                            let (s, d) = self.skeleton_dir(&vpath)?;
                            return Ok(Resolved {
                                place: Place::Mount(self.spot(s, d, Some(name), next)),
                                same_as_kernel: false,
                                dir_only,
                            });
                        }
                        let (s, d) = self.skeleton_dir(&next)?;
                        pos = Pos::In(s, d);
                    }
                    vpath = next;
                    if is_last {
                        return Ok(here(self, &pos, &vpath, same));
                    }
                    continue;
                }
                Pos::In(_, d) => d.clone(),
                Pos::Cow(m, rel) => {
                    let (m, next_rel) = (*m, rel.join(&c));
                    let follow = !is_last || last == Last::Follow;
                    let cow = self.mounts[m].cow.as_deref().ok_or(libc::EIO)?;
                    let node = if follow {
                        cow.find(&next_rel)?.0
                    } else {
                        super::cow::Node::Missing
                    };
                    let link = match node {
                        super::cow::Node::Link(t) => t,
                        super::cow::Node::Dir if !is_last => {
                            vpath = next;
                            pos = Pos::Cow(m, next_rel);
                            continue;
                        }
                        super::cow::Node::File if !is_last => return Err(libc::ENOTDIR),
                        super::cow::Node::Missing if !is_last => return Err(libc::ENOENT),
                        _ => {
                            return Ok(Resolved {
                                place: Place::Cow(CowPlace {
                                    mount: self.mounts[m].clone(),
                                    rel: next_rel,
                                }),
                                same_as_kernel: false,
                                dir_only,
                            });
                        }
                    };
                    same = false;
                    clean = false;
                    if splice(&link, &mut queue, &mut links)? {
                        vpath = PathBuf::from("/");
                        pos = self.place(&vpath)?;
                    }
                    if queue.is_empty() {
                        return Ok(here(self, &pos, &vpath, same));
                    }
                    continue;
                }
            };
            let Pos::In(m, _) = pos.clone() else {
                continue;
            };
            let follow = !is_last || last == Last::Follow;
            let link = if !is_last {
                match open_dir(dir.fd(), &name) {
                    Ok(fd) => {
                        vpath = next;
                        pos = Pos::In(m, Dir::Own(Arc::new(fd)));
                        continue;
                    }
                    Err(libc::ENOTDIR) => match read_link(dir.fd(), &name) {
                        Ok(t) => t,
                        Err(libc::EINVAL) => return Err(libc::ENOTDIR),
                        Err(e) => return Err(e),
                    },
                    Err(libc::ENOENT) if self.leads_to_mount(&next) => {
                        same = false;
                        let (s, d) = self.skeleton_dir(&next)?;
                        vpath = next;
                        pos = Pos::In(s, d);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            } else {
                let target = if follow {
                    match read_link(dir.fd(), &name) {
                        Ok(t) => Some(t),
                        Err(libc::EINVAL) | Err(libc::ENOENT) => None,
                        Err(e) => return Err(e),
                    }
                } else {
                    None
                };
                match target {
                    Some(t) => t,
                    None => {
                        if self.leads_to_mount(&next) && !exists(dir.fd(), &name) {
                            let (s, d) = self.skeleton_dir(&vpath)?;
                            return Ok(Resolved {
                                place: Place::Mount(self.spot(s, d, Some(name), next)),
                                same_as_kernel: false,
                                dir_only,
                            });
                        }
                        return Ok(Resolved {
                            place: Place::Mount(self.spot(m, dir, Some(name), next)),
                            same_as_kernel: same,
                            dir_only,
                        });
                    }
                }
            };
            // A symlink: splice its target in front of what is left.
            same = false;
            clean = false;
            if splice(&link, &mut queue, &mut links)? {
                vpath = PathBuf::from("/");
                pos = self.place(&vpath)?;
            }
            if queue.is_empty() {
                // The target was "/" (or only slashes).
                return Ok(here(self, &pos, &vpath, same));
            }
        }
        Ok(here(self, &pos, &vpath, same))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_collapse_slashes_and_note_a_trailing_one() {
        let (c, d) = components(b"//a///b/./../c/");
        assert_eq!(
            c.iter().map(|s| s.to_str().unwrap()).collect::<Vec<_>>(),
            ["a", "b", ".", "..", "c"]
        );
        assert!(d);
        assert!(!components(b"a/b").1);
        assert!(components(b"a/..").1);
    }
}
