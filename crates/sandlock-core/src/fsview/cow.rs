//! Copy-on-write work directories (`workdir`): the sandbox's changes under DIR go to a private
//! upper layer, and are applied to DIR when the run ends (`commit`), or only listed (dry runs).
//!
//! The layers are two directories held open: DIR itself (the lower layer, which Landlock grants
//! the sandbox read-only) and the run's upper layer (granted read-write, created in the host's
//! temporary directory and removed after the run). The merged view is the upper layer's entries,
//! then the lower layer's, minus the names the sandbox removed (whiteouts, kept in the supervisor's
//! memory) and minus the lower contents of a directory removed and made again (opaque):
//! - looking at something finds it in the layer that holds it;
//! - changing a file (opening it for writing, `truncate`, `chmod`, `utimes`, attributes) copies
//!   it up first, with its mode and times; the directories on its way are copied up too;
//! - making something makes it in the upper layer; removing something that the lower layer holds
//!   records a whiteout;
//! - renaming a file copies it up and renames it in the upper layer; renaming a directory that the
//!   lower layer holds fails with `EXDEV`, as in overlayfs without `redirect_dir` (`mv` then
//!   copies);
//! - a directory opened for reading whose content comes from both layers is read through its
//!   upper copy, in which the supervisor first makes what the lower layer adds: its directories
//!   and symlinks copied up (empty, and as they are), its other files as empty placeholders that
//!   lookups pass through to the lower file. So a directory looked at by name and the descriptor
//!   opened on it are the same directory (`fstat` agrees with `lstat`, as `rm -r` checks).
//!
//! Every lookup in a layer goes through `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the
//! layer's descriptor, and every change runs with the sandbox's own permissions
//! ([`super::creds::AsSandbox`]), checked against the lower layer's file before it is copied up.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::creds::AsSandbox;
use super::tmp::TempTree;
use super::view::Mount;
use super::walk::{Dir, Spot};
use crate::sys;

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;
/// Temporary names inside the layers and the work directory (made and renamed in one call).
const TEMP_PREFIX: &str = ".sandlock-";

/// What a run changed in its work directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum ChangeKind {
    /// Made by the run (`A`).
    #[serde(rename = "A")]
    Added,
    /// There before, changed by the run (`M`): content, mode or link target.
    #[serde(rename = "M")]
    Modified,
    /// There before, removed by the run (`D`).
    #[serde(rename = "D")]
    Deleted,
}

impl ChangeKind {
    /// `A`, `M` or `D`.
    pub fn letter(self) -> &'static str {
        match self {
            ChangeKind::Added => "A",
            ChangeKind::Modified => "M",
            ChangeKind::Deleted => "D",
        }
    }
}

/// One change a run made in its work directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Change {
    /// Added, modified or deleted.
    pub kind: ChangeKind,
    /// The path, as the sandbox named it (beneath the work directory).
    pub path: PathBuf,
    /// Whether it is a directory.
    pub dir: bool,
}

/// What became of a run's changes when it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitReport {
    /// Whether the changes were to be applied (the `commit` mode and the run's success say so).
    pub attempted: bool,
    /// Changes applied to the work directory, in order.
    pub applied: Vec<Change>,
    /// Changes not applied (all of them when not attempted).
    pub not_applied: Vec<Change>,
    /// Why applying stopped, if it did: the path and the error.
    pub error: Option<String>,
    /// Where the run's upper layer was kept (when applying stopped midway, so that nothing the
    /// run wrote is lost).
    pub kept: Option<PathBuf>,
}

/// What a name is, in the layer that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Dir,
    Link(Vec<u8>),
    File,
    Missing,
}

/// The two layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layer {
    Upper,
    Lower,
}

/// What a call intends to do with an existing name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intent {
    /// Look at it, or open it for reading: in the layer that holds it.
    Read,
    /// Change it: copied up first. `owner`: the change needs ownership (mode, owner,
    /// attributes) rather than write permission.
    Change { owner: bool },
}

/// What the lower layer held at a path when the run first relied on it (copied it up, removed
/// it, or made something where it was not): what a commit expects to find there still, so that
/// a change the host made meanwhile is never overwritten or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    dev: u64,
    ino: u64,
    mode: u32,
    /// Size and modification time; left out (zero) for directories, whose entries are checked
    /// one by one.
    size: i64,
    mtime: (i64, i64),
}

impl Seen {
    fn of(st: &libc::stat) -> Seen {
        let dir = kind(st) == libc::S_IFDIR;
        Seen {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            size: if dir { 0 } else { st.st_size },
            mtime: if dir {
                (0, 0)
            } else {
                (st.st_mtime, st.st_mtime_nsec)
            },
        }
    }

    fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// Whether `now` is still what was seen (`then`): the same directory, or the same file
    /// unmodified, or nothing both times.
    fn same(now: Option<Seen>, then: Option<Seen>) -> bool {
        match (now, then) {
            (Some(a), Some(b)) if a.is_dir() && b.is_dir() => (a.dev, a.ino) == (b.dev, b.ino),
            (a, b) => a == b,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Names the lower layer holds that the run removed.
    whiteouts: BTreeSet<PathBuf>,
    /// Directories removed and made again: the lower layer's contents are gone from them.
    opaque: BTreeSet<PathBuf>,
    /// Directories whose own mode, owner or times the run changed (others in the upper layer are
    /// only there to hold what changed beneath them).
    touched: BTreeSet<PathBuf>,
    /// Empty files in the upper layer that stand for the lower layer's files of the same name,
    /// so that a merged directory can be read through its upper copy.
    placeholders: BTreeSet<PathBuf>,
    /// What the lower layer held where the run relied on it (`None`: nothing).
    seen: BTreeMap<PathBuf, Option<Seen>>,
    next: u64,
}

/// The copy-on-write layers of one run.
#[derive(Debug)]
pub(crate) struct Cow {
    /// The work directory as the sandbox names it.
    pub(crate) virt: PathBuf,
    /// The work directory (canonical): the lower layer.
    pub(crate) lower: PathBuf,
    lower_fd: Arc<OwnedFd>,
    /// The run's upper layer.
    pub(crate) upper: PathBuf,
    upper_fd: OwnedFd,
    state: Mutex<State>,
    tree: Mutex<Option<TempTree>>,
}

fn errno() -> i32 {
    sys::errno()
}

fn cname(p: &OsStr) -> Result<CString, i32> {
    CString::new(p.as_bytes()).map_err(|_| libc::EINVAL)
}

fn check(r: libc::c_int) -> Result<libc::c_int, i32> {
    if r < 0 { Err(errno()) } else { Ok(r) }
}

fn owned(r: libc::c_int) -> Result<OwnedFd, i32> {
    check(r)?;
    // SAFETY: the kernel just returned this new descriptor.
    Ok(unsafe { sys::owned(r) })
}

/// Opens `rel` beneath `root` without following any symlink (the last one is opened itself).
fn open_rel(root: i32, rel: &Path, flags: i32) -> Result<OwnedFd, i32> {
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let path = if rel.as_os_str().is_empty() {
        c".".to_owned()
    } else {
        cname(rel.as_os_str())?
    };
    let how = OpenHow {
        flags: (flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 reads the C string and one open_how of the size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    let fd = sys::cvt_long(r).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    // SAFETY: openat2 just returned this descriptor.
    Ok(unsafe { sys::owned(fd as i32) })
}

fn fstat(fd: i32) -> Result<libc::stat, i32> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one struct stat.
    check(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded.
    Ok(unsafe { st.assume_init() })
}

fn kind(st: &libc::stat) -> u32 {
    st.st_mode & libc::S_IFMT
}

/// The parent of `rel` and its last component.
fn split(rel: &Path) -> Result<(&Path, &OsStr), i32> {
    let name = rel.file_name().ok_or(libc::EBUSY)?;
    Ok((rel.parent().unwrap_or(Path::new("")), name))
}

/// The names in the directory `fd` (an `O_PATH` descriptor), with their types.
fn children(fd: &OwnedFd) -> Result<BTreeMap<OsString, u32>, i32> {
    let mut out = BTreeMap::new();
    let dir = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    for e in dir.flatten() {
        let t = match e.file_type() {
            Ok(t) if t.is_dir() => libc::S_IFDIR,
            Ok(t) if t.is_symlink() => libc::S_IFLNK,
            _ => libc::S_IFREG,
        };
        out.insert(e.file_name(), t);
    }
    Ok(out)
}

/// The access and modification times of `st`, as `utimensat` takes them.
fn times_of(st: &libc::stat) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ]
}

/// Copies the regular file held by `src` (an `O_PATH` descriptor) to the new name `tmp` in the
/// directory `dir`, with the mode `perm` and the times of `st`. The caller removes `tmp` on error.
fn copy_file_to(
    src: &OwnedFd,
    st: &libc::stat,
    perm: u32,
    dir: i32,
    tmp: &std::ffi::CStr,
) -> Result<(), i32> {
    let link =
        CString::new(format!("/proc/self/fd/{}", src.as_raw_fd())).map_err(|_| libc::EINVAL)?;
    // SAFETY: open through the magic link of a descriptor we hold.
    let from = owned(unsafe {
        libc::open(
            link.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    })?;
    // SAFETY: openat of a new name in a directory we hold.
    let to = owned(unsafe {
        libc::openat(
            dir,
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o600,
        )
    })?;
    copy_data(&from, &to)?;
    let times = times_of(st);
    // SAFETY: fchmod and futimens on the descriptor we made.
    unsafe {
        check(libc::fchmod(to.as_raw_fd(), perm))?;
        libc::futimens(to.as_raw_fd(), times.as_ptr());
    }
    Ok(())
}

/// Copies the content of `from` into `to` (both open).
fn copy_data(from: &OwnedFd, to: &OwnedFd) -> Result<(), i32> {
    loop {
        // SAFETY: copy_file_range between two descriptors we own, from their current offsets.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                1 << 30,
                0,
            )
        };
        match n {
            0 => return Ok(()),
            n if n > 0 => {}
            _ => {
                let e = errno();
                if e == libc::EXDEV
                    || e == libc::ENOSYS
                    || e == libc::EOPNOTSUPP
                    || e == libc::EINVAL
                {
                    return copy_by_read(from, to);
                }
                return Err(e);
            }
        }
    }
}

fn copy_by_read(from: &OwnedFd, to: &OwnedFd) -> Result<(), i32> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = sys::read(from.as_raw_fd(), &mut buf)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        if n == 0 {
            return Ok(());
        }
        let mut done = 0;
        while done < n {
            done += sys::write(to.as_raw_fd(), &buf[done..n])
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        }
    }
}

/// Lends the owner write and search permission on a directory while the supervisor makes
/// entries of its own there, which a read-only directory would refuse even to its owner: a
/// copy-up or placeholders in the upper copy of a read-only directory (`times`: its times come
/// back too, so they leave no trace), or a commit of a file the run changed in one (as the run
/// could, in place). The mode comes back when it is dropped.
struct Unlocked {
    path: CString,
    mode: u32,
    times: Option<[libc::timespec; 2]>,
}

impl Unlocked {
    fn new(dir: &OwnedFd, times: bool) -> Result<Unlocked, i32> {
        let st = fstat(dir.as_raw_fd())?;
        let path =
            CString::new(format!("/proc/self/fd/{}", dir.as_raw_fd())).map_err(|_| libc::EINVAL)?;
        let mode = st.st_mode & 0o7777;
        if mode & 0o300 != 0o300 {
            // SAFETY: chmod through the magic link of a descriptor the caller holds.
            check(unsafe { libc::chmod(path.as_ptr(), mode | 0o300) })?;
        }
        Ok(Unlocked {
            path,
            mode,
            times: times.then_some([
                libc::timespec {
                    tv_sec: st.st_atime,
                    tv_nsec: st.st_atime_nsec,
                },
                libc::timespec {
                    tv_sec: st.st_mtime,
                    tv_nsec: st.st_mtime_nsec,
                },
            ]),
        })
    }
}

impl Drop for Unlocked {
    fn drop(&mut self) {
        // SAFETY: chmod and utimensat through the magic link of a descriptor the caller still
        // holds (it outlives this guard).
        unsafe {
            libc::chmod(self.path.as_ptr(), self.mode);
            if let Some(t) = &self.times {
                libc::utimensat(libc::AT_FDCWD, self.path.as_ptr(), t.as_ptr(), 0);
            }
        }
    }
}

impl Cow {
    /// Makes the layers of one run over the work directory `lower` (held as `lower_fd`), which the
    /// sandbox names `virt`.
    pub(crate) fn new(
        virt: PathBuf,
        lower: PathBuf,
        lower_fd: Arc<OwnedFd>,
    ) -> std::io::Result<Cow> {
        let tree = TempTree::new("sandlock-cow-")?;
        let upper = tree.path().join("upper");
        std::fs::create_dir(&upper)?;
        let open = |p: &Path| -> std::io::Result<OwnedFd> {
            let c = CString::new(p.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            // SAFETY: `c` is a valid C string.
            let fd = sys::cvt(unsafe {
                libc::open(
                    c.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            })?;
            // SAFETY: open just returned this descriptor.
            Ok(unsafe { sys::owned(fd) })
        };
        // The upper root stands for the work directory itself: it gets its mode.
        if let Ok(m) = std::fs::metadata(&lower) {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                &upper,
                std::fs::Permissions::from_mode(m.permissions().mode() & 0o7777),
            )?;
        }
        Ok(Cow {
            virt,
            lower,
            lower_fd,
            upper_fd: open(&upper)?,
            upper,
            state: Mutex::new(State::default()),
            tree: Mutex::new(Some(tree)),
        })
    }

    /// The directory holding the layers (granted to the run).
    pub(crate) fn root(&self) -> Option<PathBuf> {
        self.tree
            .lock()
            .ok()
            .and_then(|t| t.as_ref().map(|t| t.path().to_path_buf()))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fd(&self, layer: Layer) -> i32 {
        match layer {
            Layer::Upper => self.upper_fd.as_raw_fd(),
            Layer::Lower => self.lower_fd.as_raw_fd(),
        }
    }

    fn layer_path(&self, layer: Layer) -> &Path {
        match layer {
            Layer::Upper => &self.upper,
            Layer::Lower => &self.lower,
        }
    }

    /// What `rel` is in one layer.
    fn node_in(&self, layer: Layer, rel: &Path) -> Result<Node, i32> {
        let fd = match open_rel(self.fd(layer), rel, libc::O_PATH) {
            Ok(fd) => fd,
            Err(libc::ENOENT | libc::ENOTDIR) => return Ok(Node::Missing),
            Err(e) => return Err(e),
        };
        let st = fstat(fd.as_raw_fd())?;
        Ok(match kind(&st) {
            libc::S_IFDIR => Node::Dir,
            libc::S_IFLNK => {
                Node::Link(super::walk::read_link(fd.as_raw_fd(), &CString::default())?)
            }
            _ => Node::File,
        })
    }

    /// What the lower layer holds at `rel` now (`None`: nothing).
    fn lower_now(&self, rel: &Path) -> Result<Option<Seen>, i32> {
        match open_rel(self.fd(Layer::Lower), rel, libc::O_PATH) {
            Ok(fd) => Ok(Some(Seen::of(&fstat(fd.as_raw_fd())?))),
            Err(libc::ENOENT | libc::ENOTDIR) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records what the lower layer holds at `rel`, the first time the run relies on it.
    fn saw(&self, rel: &Path) -> Result<(), i32> {
        if self.state().seen.contains_key(rel) {
            return Ok(());
        }
        let now = self.lower_now(rel)?;
        self.state().seen.entry(rel.to_path_buf()).or_insert(now);
        Ok(())
    }

    /// Whether the lower layer's `rel` is hidden (removed, or beneath a directory made again).
    fn hidden(&self, rel: &Path) -> bool {
        let s = self.state();
        rel.ancestors()
            .any(|a| s.whiteouts.contains(a) || (a != rel && s.opaque.contains(a)))
    }

    /// What `rel` is in the merged view, and which layer holds it.
    pub(crate) fn find(&self, rel: &Path) -> Result<(Node, Option<Layer>), i32> {
        match self.node_in(Layer::Upper, rel)? {
            Node::Missing => {}
            Node::File if self.state().placeholders.contains(rel) => {}
            n => return Ok((n, Some(Layer::Upper))),
        }
        if self.hidden(rel) {
            return Ok((Node::Missing, None));
        }
        match self.node_in(Layer::Lower, rel)? {
            Node::Missing => Ok((Node::Missing, None)),
            n => Ok((n, Some(Layer::Lower))),
        }
    }

    /// Whether the lower layer shows `rel` in the merged view.
    fn lower_has(&self, rel: &Path) -> Result<bool, i32> {
        Ok(!self.hidden(rel) && self.node_in(Layer::Lower, rel)? != Node::Missing)
    }

    /// A spot for `rel` in `layer`: its parent held, its name (`None` for the root).
    fn spot_in(&self, mount: &Arc<Mount>, layer: Layer, rel: &Path) -> Result<Spot, i32> {
        let host = self.layer_path(layer).join(rel);
        if rel.as_os_str().is_empty() {
            let fd = open_rel(self.fd(layer), rel, libc::O_PATH | libc::O_DIRECTORY)?;
            return Ok(Spot {
                mount: mount.clone(),
                dir: Dir::Own(Arc::new(fd)),
                name: None,
                host,
                is_root: true,
            });
        }
        let (parent, name) = split(rel)?;
        let dir = open_rel(self.fd(layer), parent, libc::O_PATH | libc::O_DIRECTORY)?;
        Ok(Spot {
            mount: mount.clone(),
            dir: Dir::Own(Arc::new(dir)),
            name: Some(cname(name)?),
            host,
            is_root: false,
        })
    }

    /// Where a call on the existing `rel` acts: the layer that holds it (`Read`), or the upper
    /// layer, after a copy-up checked against the lower file (`Change`).
    pub(crate) fn spot(&self, mount: &Arc<Mount>, rel: &Path, intent: Intent) -> Result<Spot, i32> {
        let (node, layer) = self.find(rel)?;
        let Some(layer) = layer else {
            return Err(libc::ENOENT);
        };
        if let (Intent::Change { owner }, Layer::Lower) = (intent, layer) {
            self.may_change(rel, owner, &node)?;
            self.copy_up(rel)?;
        }
        match intent {
            Intent::Read => self.spot_in(mount, layer, rel),
            Intent::Change { .. } => {
                if node == Node::Dir {
                    self.state().touched.insert(rel.to_path_buf());
                }
                self.spot_in(mount, Layer::Upper, rel)
            }
        }
    }

    /// Whether the sandbox may change the lower layer's `rel`, as it could the file itself.
    fn may_change(&self, rel: &Path, owner: bool, node: &Node) -> Result<(), i32> {
        let _as = AsSandbox::enter();
        let fd = open_rel(self.fd(Layer::Lower), rel, libc::O_PATH)?;
        if owner {
            // SAFETY: geteuid takes no arguments; the sandbox runs with the host's uid.
            let me = unsafe { libc::geteuid() };
            return if fstat(fd.as_raw_fd())?.st_uid == me {
                Ok(())
            } else {
                Err(libc::EPERM)
            };
        }
        if matches!(node, Node::Link(_)) {
            return Ok(());
        }
        // SAFETY: faccessat2 on a descriptor we hold, with an empty path.
        let r = unsafe {
            libc::syscall(
                libc::SYS_faccessat2,
                fd.as_raw_fd(),
                c"".as_ptr(),
                libc::W_OK,
                libc::AT_EMPTY_PATH | libc::AT_EACCESS,
            )
        };
        sys::cvt_long(r)
            .map(|_| ())
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EACCES))
    }

    /// Makes the directories of `rel` (a directory of the merged view) in the upper layer, with
    /// the lower layer's modes and times.
    fn ensure_dirs(&self, rel: &Path) -> Result<(), i32> {
        let mut at = PathBuf::new();
        for c in rel.components() {
            let Component::Normal(n) = c else {
                return Err(libc::EINVAL);
            };
            at.push(n);
            match self.node_in(Layer::Upper, &at)? {
                Node::Dir => continue,
                Node::Missing => {}
                _ => return Err(libc::ENOTDIR),
            }
            if self.hidden(&at) || self.node_in(Layer::Lower, &at)? != Node::Dir {
                return Err(libc::ENOENT);
            }
            self.copy_up(&at)?;
        }
        Ok(())
    }

    /// Copies the lower layer's `rel` up (its parents first): a file with its content, mode and
    /// times, a symlink with its target, a directory empty.
    fn copy_up(&self, rel: &Path) -> Result<(), i32> {
        let (parent, name) = split(rel)?;
        self.ensure_dirs(parent)?;
        self.saw(rel)?;
        let _as = AsSandbox::enter();
        let up = open_rel(
            self.fd(Layer::Upper),
            parent,
            libc::O_PATH | libc::O_DIRECTORY,
        )?;
        let _open = Unlocked::new(&up, true)?;
        let src = open_rel(self.fd(Layer::Lower), rel, libc::O_PATH)?;
        let st = fstat(src.as_raw_fd())?;
        let perm = st.st_mode & 0o7777;
        let n = cname(name)?;
        let placeholder = self.state().placeholders.contains(rel);
        if placeholder && kind(&st) != libc::S_IFREG {
            // Only a regular file is renamed over its placeholder.
            // SAFETY: unlinkat on a name in a directory we hold.
            check(unsafe { libc::unlinkat(up.as_raw_fd(), n.as_ptr(), 0) })?;
        }
        let times = times_of(&st);
        match kind(&st) {
            libc::S_IFDIR => {
                // SAFETY: mkdirat on a name in a directory we hold.
                check(unsafe { libc::mkdirat(up.as_raw_fd(), n.as_ptr(), 0o700) })?;
                let d = open_rel(
                    up.as_raw_fd(),
                    Path::new(name),
                    libc::O_PATH | libc::O_DIRECTORY,
                )?;
                let p = CString::new(format!("/proc/self/fd/{}", d.as_raw_fd()))
                    .map_err(|_| libc::EINVAL)?;
                // SAFETY: chmod and utimensat through the magic link of a descriptor we hold.
                unsafe {
                    libc::chmod(p.as_ptr(), perm);
                    libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0);
                }
            }
            libc::S_IFLNK => {
                let target = super::walk::read_link(src.as_raw_fd(), &CString::default())?;
                let t = CString::new(target).map_err(|_| libc::EINVAL)?;
                // SAFETY: symlinkat on a name in a directory we hold.
                check(unsafe { libc::symlinkat(t.as_ptr(), up.as_raw_fd(), n.as_ptr()) })?;
                // SAFETY: utimensat on a name in a directory we hold, not following it.
                unsafe {
                    libc::utimensat(
                        up.as_raw_fd(),
                        n.as_ptr(),
                        times.as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                };
            }
            libc::S_IFREG => {
                let tmp = self.temp_name();
                let done = copy_file_to(&src, &st, perm, up.as_raw_fd(), &tmp).and_then(|()| {
                    // SAFETY: renameat of our own temporary name in a directory we hold.
                    check(unsafe {
                        libc::renameat(up.as_raw_fd(), tmp.as_ptr(), up.as_raw_fd(), n.as_ptr())
                    })
                });
                if let Err(e) = done {
                    // SAFETY: unlinkat of our own temporary name.
                    unsafe { libc::unlinkat(up.as_raw_fd(), tmp.as_ptr(), 0) };
                    return Err(e);
                }
            }
            // FIFOs and sockets come up as what they are; a device needs a capability nobody has.
            k => {
                // SAFETY: mknodat on a name in a directory we hold.
                check(unsafe { libc::mknodat(up.as_raw_fd(), n.as_ptr(), k | perm, st.st_rdev) })?;
            }
        }
        self.state().placeholders.remove(rel);
        Ok(())
    }

    fn temp_name(&self) -> CString {
        let mut s = self.state();
        s.next += 1;
        CString::new(format!("{TEMP_PREFIX}{}-{}", std::process::id(), s.next)).unwrap_or_default()
    }

    /// Puts something new at `rel` in the upper layer: its directories copied up, the name no
    /// longer removed, and a new directory opaque where the lower layer had `rel`.
    fn placed(&self, rel: &Path, dir: bool, lower_had: bool) {
        let mut s = self.state();
        s.whiteouts.retain(|w| !w.starts_with(rel));
        s.opaque.retain(|o| o == rel || !o.starts_with(rel));
        s.placeholders.retain(|p| !p.starts_with(rel));
        if dir && lower_had {
            s.opaque.insert(rel.to_path_buf());
        } else if !dir {
            s.opaque.remove(rel);
        }
    }

    /// A spot in the upper layer where `rel` (which must not exist) can be made; `dir`: a
    /// directory will be made there. Call [`Cow::made`] once it is.
    pub(crate) fn create_at(&self, mount: &Arc<Mount>, rel: &Path) -> Result<Spot, i32> {
        let (node, _) = self.find(rel)?;
        if node != Node::Missing {
            return Err(libc::EEXIST);
        }
        let (parent, _) = split(rel)?;
        self.ensure_dirs(parent)?;
        self.saw(rel)?;
        self.spot_in(mount, Layer::Upper, rel)
    }

    /// Records that the run made `rel` (after [`Cow::create_at`]).
    pub(crate) fn made(&self, rel: &Path, dir: bool) {
        let lower_had = self
            .node_in(Layer::Lower, rel)
            .is_ok_and(|n| n != Node::Missing);
        self.placed(rel, dir, lower_had);
    }

    /// The names of the merged directory `rel`, with their types.
    pub(crate) fn list(&self, rel: &Path) -> Result<BTreeMap<OsString, u32>, i32> {
        let mut out = BTreeMap::new();
        if !self.hidden(rel) || self.state().opaque.contains(rel) {
            let opaque = self.state().opaque.contains(rel);
            if !opaque && !self.hidden(rel) {
                if let Ok(fd) =
                    open_rel(self.fd(Layer::Lower), rel, libc::O_PATH | libc::O_DIRECTORY)
                {
                    for (n, t) in children(&fd)? {
                        if !self.hidden(&rel.join(&n)) {
                            out.insert(n, t);
                        }
                    }
                }
            }
        }
        if let Ok(fd) = open_rel(self.fd(Layer::Upper), rel, libc::O_PATH | libc::O_DIRECTORY) {
            for (n, t) in children(&fd)? {
                if !n.as_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
                    out.insert(n, t);
                }
            }
        }
        Ok(out)
    }

    /// `unlink` (or `rmdir` with `dir`) of `rel`.
    pub(crate) fn remove(&self, rel: &Path, dir: bool, trailing_slash: bool) -> Result<(), i32> {
        if rel.as_os_str().is_empty() {
            return Err(if dir { libc::EBUSY } else { libc::EISDIR });
        }
        let (node, layer) = self.find(rel)?;
        match (&node, dir) {
            (Node::Missing, _) => return Err(libc::ENOENT),
            (Node::Dir, false) => return Err(libc::EISDIR),
            (n, true) if *n != Node::Dir => return Err(libc::ENOTDIR),
            (n, false) if trailing_slash && *n != Node::Dir => return Err(libc::ENOTDIR),
            _ => {}
        }
        if dir && !self.list(rel)?.is_empty() {
            return Err(libc::ENOTEMPTY);
        }
        self.may_remove(rel)?;
        let lower_had = self.lower_has(rel)?;
        let (parent, name) = split(rel)?;
        // The directory that loses the name is in the upper layer, so that a descriptor opened
        // on it later lists the merged view (see `open_dir`).
        self.ensure_dirs(parent)?;
        self.saw(rel)?;
        let placeholder = self.state().placeholders.contains(rel);
        if layer == Some(Layer::Upper) || placeholder {
            let _as = AsSandbox::enter();
            let up = open_rel(
                self.fd(Layer::Upper),
                parent,
                libc::O_PATH | libc::O_DIRECTORY,
            )?;
            let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
            // SAFETY: unlinkat on a name in a directory we hold.
            check(unsafe { libc::unlinkat(up.as_raw_fd(), cname(name)?.as_ptr(), flags) })?;
        }
        let mut s = self.state();
        s.whiteouts.retain(|w| !w.starts_with(rel));
        s.opaque.retain(|o| !o.starts_with(rel));
        s.placeholders.remove(rel);
        if lower_had {
            s.whiteouts.insert(rel.to_path_buf());
        }
        Ok(())
    }

    /// Whether the sandbox may remove entries from `rel`'s directory (write and search on it).
    fn may_remove(&self, rel: &Path) -> Result<(), i32> {
        let (parent, _) = split(rel)?;
        let (_, layer) = self.find(parent)?;
        let layer = layer.ok_or(libc::ENOENT)?;
        let _as = AsSandbox::enter();
        let fd = open_rel(self.fd(layer), parent, libc::O_PATH | libc::O_DIRECTORY)?;
        // SAFETY: faccessat2 on a descriptor we hold, with an empty path.
        let r = unsafe {
            libc::syscall(
                libc::SYS_faccessat2,
                fd.as_raw_fd(),
                c"".as_ptr(),
                libc::W_OK | libc::X_OK,
                libc::AT_EMPTY_PATH | libc::AT_EACCESS,
            )
        };
        sys::cvt_long(r)
            .map(|_| ())
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EACCES))
    }

    /// `renameat2(from, to, flags)` within the work directory.
    pub(crate) fn rename(&self, from: &Path, to: &Path, flags: u32) -> Result<(), i32> {
        const RENAME_NOREPLACE: u32 = 1;
        if flags & !RENAME_NOREPLACE != 0 {
            // RENAME_EXCHANGE and RENAME_WHITEOUT are not emulated across layers.
            return Err(libc::EINVAL);
        }
        if from.as_os_str().is_empty() || to.as_os_str().is_empty() {
            return Err(libc::EBUSY);
        }
        let (fnode, flayer) = self.find(from)?;
        if fnode == Node::Missing {
            return Err(libc::ENOENT);
        }
        if from == to {
            return Ok(());
        }
        if to.starts_with(from) {
            return Err(libc::EINVAL);
        }
        let (tnode, _) = self.find(to)?;
        if flags & RENAME_NOREPLACE != 0 && tnode != Node::Missing {
            return Err(libc::EEXIST);
        }
        match (&fnode, &tnode) {
            (Node::Dir, Node::Missing | Node::Dir) => {}
            (Node::Dir, _) => return Err(libc::ENOTDIR),
            (_, Node::Dir) => return Err(libc::EISDIR),
            _ => {}
        }
        if tnode == Node::Dir && !self.list(to)?.is_empty() {
            return Err(libc::ENOTEMPTY);
        }
        let from_lower = self.lower_has(from)?;
        if fnode == Node::Dir && from_lower {
            // As overlayfs without redirect_dir: the caller (mv) copies instead.
            return Err(libc::EXDEV);
        }
        self.may_remove(from)?;
        let (tparent, _) = split(to)?;
        self.ensure_dirs(tparent)?;
        if flayer == Some(Layer::Lower) {
            self.copy_up(from)?;
        }
        let to_lower = self.lower_has(to)?;
        self.saw(to)?;
        if tnode == Node::Dir && self.node_in(Layer::Upper, to)? != Node::Dir {
            // An empty directory of the lower layer is replaced: nothing of it stays.
            self.state().whiteouts.insert(to.to_path_buf());
        }
        {
            let (fp, fname) = split(from)?;
            let (tp, tname) = split(to)?;
            let _as = AsSandbox::enter();
            let a = open_rel(self.fd(Layer::Upper), fp, libc::O_PATH | libc::O_DIRECTORY)?;
            let b = open_rel(self.fd(Layer::Upper), tp, libc::O_PATH | libc::O_DIRECTORY)?;
            // SAFETY: renameat2 on names in directories we hold.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    a.as_raw_fd(),
                    cname(fname)?.as_ptr(),
                    b.as_raw_fd(),
                    cname(tname)?.as_ptr(),
                    flags,
                )
            };
            sys::cvt_long(r).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        }
        self.placed(to, fnode == Node::Dir, to_lower);
        if from_lower {
            let mut s = self.state();
            s.whiteouts.retain(|w| !w.starts_with(from));
            s.whiteouts.insert(from.to_path_buf());
        }
        Ok(())
    }

    /// `link(from, to)` within the work directory.
    pub(crate) fn link(&self, from: &Path, to: &Path) -> Result<(), i32> {
        let (fnode, flayer) = self.find(from)?;
        match fnode {
            Node::Missing => return Err(libc::ENOENT),
            Node::Dir => return Err(libc::EPERM),
            _ => {}
        }
        if self.find(to)?.0 != Node::Missing {
            return Err(libc::EEXIST);
        }
        let (tparent, _) = split(to)?;
        self.ensure_dirs(tparent)?;
        if flayer == Some(Layer::Lower) {
            self.copy_up(from)?;
        }
        let to_lower = self
            .node_in(Layer::Lower, to)
            .is_ok_and(|n| n != Node::Missing);
        self.saw(to)?;
        {
            let (fp, fname) = split(from)?;
            let (tp, tname) = split(to)?;
            let _as = AsSandbox::enter();
            let a = open_rel(self.fd(Layer::Upper), fp, libc::O_PATH | libc::O_DIRECTORY)?;
            let b = open_rel(self.fd(Layer::Upper), tp, libc::O_PATH | libc::O_DIRECTORY)?;
            // SAFETY: linkat on names in directories we hold, not following `fname`.
            check(unsafe {
                libc::linkat(
                    a.as_raw_fd(),
                    cname(fname)?.as_ptr(),
                    b.as_raw_fd(),
                    cname(tname)?.as_ptr(),
                    0,
                )
            })?;
        }
        self.placed(to, false, to_lower);
        Ok(())
    }

    /// A descriptor to read the merged directory `rel` through: the layer's own directory when
    /// only one layer has it, or else its upper copy, made to hold the merged names first
    /// ([`Cow::materialize`]).
    pub(crate) fn open_dir(&self, rel: &Path, flags: i32) -> Result<OwnedFd, i32> {
        let upper = self.node_in(Layer::Upper, rel)? == Node::Dir;
        let lower = !self.hidden(rel) && self.node_in(Layer::Lower, rel)? == Node::Dir;
        let root = match (upper, lower) {
            (false, false) => return Err(libc::ENOENT),
            (false, true) => self.fd(Layer::Lower),
            (true, _) => {
                if lower && !self.state().opaque.contains(rel) {
                    self.materialize(rel)?;
                }
                self.fd(Layer::Upper)
            }
        };
        // Through the magic link of a descriptor held: O_NOFOLLOW would stop at the link itself.
        let flags = (flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOFOLLOW))
            | libc::O_DIRECTORY
            | libc::O_CLOEXEC;
        let _as = AsSandbox::enter();
        let d = open_rel(root, rel, libc::O_PATH | libc::O_DIRECTORY)?;
        let p =
            CString::new(format!("/proc/self/fd/{}", d.as_raw_fd())).map_err(|_| libc::EINVAL)?;
        // SAFETY: open through the magic link of a descriptor we hold.
        owned(unsafe { libc::open(p.as_ptr(), flags) })
    }

    /// Makes in the upper copy of the directory `rel` what the lower layer shows there and the
    /// upper layer lacks: directories and symlinks copied up, other files as placeholders.
    fn materialize(&self, rel: &Path) -> Result<(), i32> {
        let lower = open_rel(self.fd(Layer::Lower), rel, libc::O_PATH | libc::O_DIRECTORY)?;
        let up = open_rel(self.fd(Layer::Upper), rel, libc::O_PATH | libc::O_DIRECTORY)?;
        let have = children(&up)?;
        let missing: Vec<(OsString, u32)> = children(&lower)?
            .into_iter()
            .filter(|(n, _)| !have.contains_key(n) && !self.hidden(&rel.join(n)))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        for (n, t) in missing {
            let r = rel.join(&n);
            if t == libc::S_IFDIR || t == libc::S_IFLNK {
                self.copy_up(&r)?;
                continue;
            }
            let _open = Unlocked::new(&up, true)?;
            // SAFETY: mknodat of a new name in a directory we hold.
            check(unsafe {
                libc::mknodat(
                    up.as_raw_fd(),
                    cname(&n)?.as_ptr(),
                    libc::S_IFREG | 0o600,
                    0,
                )
            })?;
            self.state().placeholders.insert(r);
        }
        Ok(())
    }

    /// The path in the work directory that a real path in the upper layer stands for.
    pub(crate) fn virtual_of(&self, real: &Path) -> Option<PathBuf> {
        real.strip_prefix(&self.upper)
            .ok()
            .map(|rest| self.virt.join(rest))
    }

    /// The run's changes, sorted by path.
    fn changes(&self) -> Vec<Change> {
        let mut out = Vec::new();
        let (whiteouts, opaque) = {
            let s = self.state();
            (s.whiteouts.clone(), s.opaque.clone())
        };
        for w in &whiteouts {
            let dir = self.node_in(Layer::Lower, w).is_ok_and(|n| n == Node::Dir);
            out.push(Change {
                kind: ChangeKind::Deleted,
                path: self.virt.join(w),
                dir,
            });
        }
        // The lower contents of a directory removed and made again are all gone (what the upper
        // layer has there again is listed as added).
        for o in &opaque {
            if self.hidden(o) {
                continue;
            }
            if let Ok(fd) = open_rel(self.fd(Layer::Lower), o, libc::O_PATH | libc::O_DIRECTORY) {
                for (n, t) in children(&fd).unwrap_or_default() {
                    out.push(Change {
                        kind: ChangeKind::Deleted,
                        path: self.virt.join(o).join(&n),
                        dir: t == libc::S_IFDIR,
                    });
                }
            }
        }
        self.walk_upper(Path::new(""), &mut out);
        // By path; at one path, what went before what came.
        out.sort_by(|a, b| {
            a.path
                .cmp(&b.path)
                .then((a.kind != ChangeKind::Deleted).cmp(&(b.kind != ChangeKind::Deleted)))
        });
        out.dedup();
        out
    }

    fn walk_upper(&self, rel: &Path, out: &mut Vec<Change>) {
        let Ok(fd) = open_rel(self.fd(Layer::Upper), rel, libc::O_PATH | libc::O_DIRECTORY) else {
            return;
        };
        for (n, t) in children(&fd).unwrap_or_default() {
            if n.as_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
                continue;
            }
            let r = rel.join(&n);
            if self.state().placeholders.contains(&r) {
                continue;
            }
            let path = self.virt.join(&r);
            let dir = t == libc::S_IFDIR;
            let lower = if self.hidden(&r) {
                Node::Missing
            } else {
                self.node_in(Layer::Lower, &r).unwrap_or(Node::Missing)
            };
            let was_dir = lower == Node::Dir;
            if lower == Node::Missing {
                out.push(Change {
                    kind: ChangeKind::Added,
                    path,
                    dir,
                });
            } else if was_dir != dir {
                // A directory replaced by a file, or the other way round.
                out.push(Change {
                    kind: ChangeKind::Deleted,
                    path: path.clone(),
                    dir: was_dir,
                });
                out.push(Change {
                    kind: ChangeKind::Added,
                    path,
                    dir,
                });
            } else if (!dir || self.state().touched.contains(&r)) && self.differs(&r) {
                out.push(Change {
                    kind: ChangeKind::Modified,
                    path,
                    dir,
                });
            }
            if dir {
                self.walk_upper(&r, out);
            }
        }
    }

    /// Whether the upper copy of `rel` differs from the lower one (content, mode, link target).
    fn differs(&self, rel: &Path) -> bool {
        let (Ok(a), Ok(b)) = (
            open_rel(self.fd(Layer::Upper), rel, libc::O_PATH),
            open_rel(self.fd(Layer::Lower), rel, libc::O_PATH),
        ) else {
            return true;
        };
        let (Ok(sa), Ok(sb)) = (fstat(a.as_raw_fd()), fstat(b.as_raw_fd())) else {
            return true;
        };
        // Owners are left out: a copy-up belongs to the sandbox's user, and a commit does not
        // change owners either.
        if sa.st_mode != sb.st_mode {
            return true;
        }
        match kind(&sa) {
            libc::S_IFLNK => {
                super::walk::read_link(a.as_raw_fd(), &CString::default()).ok()
                    != super::walk::read_link(b.as_raw_fd(), &CString::default()).ok()
            }
            libc::S_IFREG if sa.st_size != sb.st_size => true,
            libc::S_IFREG => {
                let read =
                    |fd: &OwnedFd| std::fs::read(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok();
                read(&a) != read(&b)
            }
            _ => false,
        }
    }

    /// The run's changes, and what became of them: applied when `mode` says so (`success`: the
    /// command exited 0), unless a process of the run was still alive (`quiet` false), which
    /// could still be changing the upper layer: then nothing is applied and the layer is kept.
    pub(crate) fn settle(
        &self,
        mode: crate::policy::CommitMode,
        success: bool,
        quiet: bool,
    ) -> (Vec<Change>, CommitReport) {
        use crate::policy::CommitMode;
        let changes = self.changes();
        let attempt = match mode {
            CommitMode::Never => false,
            CommitMode::OnSuccess => success,
            CommitMode::Always => true,
        };
        let report = match (attempt, quiet) {
            (true, true) => self.commit(&changes),
            (true, false) => CommitReport {
                attempted: true,
                applied: Vec::new(),
                not_applied: changes.clone(),
                error: Some(
                    "a process of the run was still alive after it was killed; nothing applied"
                        .into(),
                ),
                kept: self.keep(),
            },
            (false, _) => CommitReport {
                attempted: false,
                applied: Vec::new(),
                not_applied: changes.clone(),
                error: None,
                kept: None,
            },
        };
        (changes, report)
    }

    /// Applies `changes` to the work directory: deletions first, then what the upper layer holds,
    /// parents before what they hold. Each file is first written beside its target; once all of
    /// them are on the disk (one `syncfs`), each is renamed over its target, so that a file is
    /// always either the old one or the new one, even after a crash. Before each change, the
    /// work directory must still hold what the run saw there (see [`Seen`]): a path the host
    /// changed during the run is a conflict. Stops at the first conflict or error, and then
    /// keeps the upper layer and says where it is, what was applied and what was not.
    fn commit(&self, changes: &[Change]) -> CommitReport {
        let _as = AsSandbox::enter();
        let ordered: Vec<Change> = changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Deleted)
            .chain(changes.iter().filter(|c| c.kind != ChangeKind::Deleted))
            .cloned()
            .collect();
        let rel = |c: &Change| {
            c.path
                .strip_prefix(&self.virt)
                .unwrap_or(&c.path)
                .to_path_buf()
        };
        let replaced = |i: usize| {
            ordered[..i]
                .iter()
                .any(|d| d.kind == ChangeKind::Deleted && d.path == ordered[i].path)
        };
        let name = |e: i32| crate::error::errno_name(e).to_string();
        let mut done = vec![false; ordered.len()];
        // Deletions and directories are applied as they come; everything else is staged.
        let mut staged: Vec<(usize, Staged)> = Vec::new();
        for (i, c) in ordered.iter().enumerate() {
            let r = rel(c);
            let step = self.unchanged(&r, c, replaced(i)).and_then(|()| {
                match c.kind {
                    ChangeKind::Deleted => self.apply_delete(&r).map(|()| None),
                    _ if c.dir => self.make_dir(&r).map(|()| None),
                    _ => self.stage(&r).map(Some),
                }
                .map_err(name)
            });
            match step {
                Ok(None) => done[i] = true,
                Ok(Some(s)) => staged.push((i, s)),
                Err(why) => return self.stopped(&ordered, &done, i, why),
            }
        }
        if let Err(e) = sync_all(staged.iter().map(|(_, s)| &s.dir)) {
            let i = staged.first().map_or(0, |(i, _)| *i);
            return self.stopped(&ordered, &done, i, name(e));
        }
        for (i, s) in &staged {
            let c = &ordered[*i];
            let step = self
                .unchanged(&rel(c), c, replaced(*i))
                .and_then(|()| s.place().map_err(name));
            if let Err(why) = step {
                return self.stopped(&ordered, &done, *i, why);
            }
            done[*i] = true;
        }
        CommitReport {
            attempted: true,
            applied: ordered,
            not_applied: Vec::new(),
            error: None,
            kept: None,
        }
    }

    /// The report of a commit stopped at `ordered[at]` for `why` (the upper layer kept).
    fn stopped(&self, ordered: &[Change], done: &[bool], at: usize, why: String) -> CommitReport {
        let pick = |want: bool| -> Vec<Change> {
            ordered
                .iter()
                .zip(done)
                .filter(|(_, d)| **d == want)
                .map(|(c, _)| c.clone())
                .collect()
        };
        CommitReport {
            attempted: true,
            applied: pick(true),
            not_applied: pick(false),
            error: Some(format!("{}: {why}", ordered[at].path.display())),
            kept: self.keep(),
        }
    }

    /// Whether the work directory still holds what the run saw where `c` applies (`replaced`: a
    /// deletion at the same path went first). A deleted directory must hold only what the run
    /// saw and removed; an added directory may meet one the host made meanwhile.
    fn unchanged(&self, rel: &Path, c: &Change, replaced: bool) -> Result<(), String> {
        const CHANGED: &str = "changed in the work directory during the run (a conflict)";
        let errno = |e: i32| crate::error::errno_name(e).to_string();
        let now = self.lower_now(rel).map_err(errno)?;
        let seen = self.state().seen.get(rel).copied();
        match c.kind {
            // Gone already: nothing to lose.
            ChangeKind::Deleted if now.is_none() => Ok(()),
            ChangeKind::Deleted => {
                if !Seen::same(now, seen.flatten()) {
                    return Err(CHANGED.into());
                }
                if now.is_some_and(|n| n.is_dir()) {
                    self.only_seen_beneath(rel).map_err(|e| match e {
                        Some(p) => format!("{}: {CHANGED}", self.virt.join(p).display()),
                        None => CHANGED.into(),
                    })?;
                }
                Ok(())
            }
            _ if c.dir && now.is_some_and(|n| n.is_dir()) => Ok(()),
            _ => {
                let then = if replaced { None } else { seen.flatten() };
                if Seen::same(now, then) {
                    Ok(())
                } else {
                    Err(CHANGED.into())
                }
            }
        }
    }

    /// Whether everything beneath the lower directory `rel` is as the run saw it when it removed
    /// it; `Err(Some(path))` names the first thing that is not.
    fn only_seen_beneath(&self, rel: &Path) -> Result<(), Option<PathBuf>> {
        let fd = open_rel(self.fd(Layer::Lower), rel, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|_| None)?;
        for (n, t) in children(&fd).map_err(|_| None)? {
            let r = rel.join(&n);
            let now = self.lower_now(&r).map_err(|_| Some(r.clone()))?;
            let seen = self.state().seen.get(&r).copied().flatten();
            if !Seen::same(now, seen) {
                return Err(Some(r));
            }
            if t == libc::S_IFDIR {
                self.only_seen_beneath(&r)?;
            }
        }
        Ok(())
    }

    /// Keeps the upper layer on the host (its directory is not removed) and says where it is.
    fn keep(&self) -> Option<PathBuf> {
        let tree = self.tree.lock().ok()?.take()?;
        let path = tree.path().to_path_buf();
        tree.keep();
        Some(path.join("upper"))
    }

    fn apply_delete(&self, rel: &Path) -> Result<(), i32> {
        let (parent, name) = split(rel)?;
        let dir = match open_rel(
            self.fd(Layer::Lower),
            parent,
            libc::O_PATH | libc::O_DIRECTORY,
        ) {
            Ok(d) => d,
            // Its directory went first.
            Err(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _open = Unlocked::new(&dir, false)?;
        remove_beneath(&dir, name)
    }

    /// Makes the directory `rel` in the work directory with the upper copy's mode (or gives an
    /// existing one that mode).
    fn make_dir(&self, rel: &Path) -> Result<(), i32> {
        let (parent, name) = split(rel)?;
        let dir = open_rel(
            self.fd(Layer::Lower),
            parent,
            libc::O_PATH | libc::O_DIRECTORY,
        )?;
        let _open = Unlocked::new(&dir, false)?;
        let src = open_rel(self.fd(Layer::Upper), rel, libc::O_PATH)?;
        let perm = fstat(src.as_raw_fd())?.st_mode & 0o7777;
        let n = cname(name)?;
        // SAFETY: mkdirat on a name in a directory we hold.
        if unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), perm) } == 0 {
            return Ok(());
        }
        if errno() != libc::EEXIST {
            return Err(errno());
        }
        let cur = open_rel(
            dir.as_raw_fd(),
            Path::new(name),
            libc::O_PATH | libc::O_DIRECTORY,
        )?;
        let p =
            CString::new(format!("/proc/self/fd/{}", cur.as_raw_fd())).map_err(|_| libc::EINVAL)?;
        // SAFETY: chmod through the magic link of a descriptor we hold.
        check(unsafe { libc::chmod(p.as_ptr(), perm) }).map(|_| ())
    }

    /// Writes the upper layer's `rel` (a file, a symlink, a FIFO or socket) beside its target in
    /// the work directory, with its mode and times, under a temporary name.
    fn stage(&self, rel: &Path) -> Result<Staged, i32> {
        let (parent, name) = split(rel)?;
        let dir = open_rel(
            self.fd(Layer::Lower),
            parent,
            libc::O_PATH | libc::O_DIRECTORY,
        )?;
        let _open = Unlocked::new(&dir, false)?;
        let src = open_rel(self.fd(Layer::Upper), rel, libc::O_PATH)?;
        let st = fstat(src.as_raw_fd())?;
        let perm = st.st_mode & 0o7777;
        let staged = Staged {
            tmp: self.temp_name(),
            name: cname(name)?,
            dir,
        };
        let (dir, tmp) = (staged.dir.as_raw_fd(), staged.tmp.as_ptr());
        match kind(&st) {
            libc::S_IFLNK => {
                let target = super::walk::read_link(src.as_raw_fd(), &CString::default())?;
                let t = CString::new(target).map_err(|_| libc::EINVAL)?;
                // SAFETY: symlinkat of a new name in a directory we hold.
                check(unsafe { libc::symlinkat(t.as_ptr(), dir, tmp) })?;
            }
            libc::S_IFREG => copy_file_to(&src, &st, perm, dir, &staged.tmp)?,
            k => {
                // SAFETY: mknodat of a new name in a directory we hold.
                check(unsafe { libc::mknodat(dir, tmp, k | perm, st.st_rdev) })?;
            }
        }
        Ok(staged)
    }
}

/// Something written beside its target in the work directory under a temporary name, removed
/// when dropped unless it was put in place.
struct Staged {
    dir: OwnedFd,
    tmp: CString,
    name: CString,
}

impl Staged {
    /// Renames it over its target (a directory there was listed as deleted and removed first).
    fn place(&self) -> Result<(), i32> {
        let _open = Unlocked::new(&self.dir, false)?;
        let d = self.dir.as_raw_fd();
        // SAFETY: renameat of our own temporary name over the target, in a directory we hold.
        check(unsafe { libc::renameat(d, self.tmp.as_ptr(), d, self.name.as_ptr()) }).map(|_| ())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // SAFETY: unlinkat of our own temporary name (gone already once it was put in place).
        unsafe { libc::unlinkat(self.dir.as_raw_fd(), self.tmp.as_ptr(), 0) };
    }
}

/// Flushes the filesystems that hold `dirs` (once each).
fn sync_all<'a>(dirs: impl Iterator<Item = &'a OwnedFd>) -> Result<(), i32> {
    let mut synced = BTreeSet::new();
    for d in dirs {
        if synced.insert(fstat(d.as_raw_fd())?.st_dev) {
            // syncfs refuses an O_PATH descriptor: open the directory itself.
            let p = CString::new(format!("/proc/self/fd/{}", d.as_raw_fd()))
                .map_err(|_| libc::EINVAL)?;
            // SAFETY: open through the magic link of a descriptor we hold.
            let fd = owned(unsafe {
                libc::open(
                    p.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            })?;
            // SAFETY: syncfs on a descriptor we own.
            check(unsafe { libc::syncfs(fd.as_raw_fd()) })?;
        }
    }
    Ok(())
}

/// Removes `name` in `dir`, a directory with everything in it; never follows a symlink.
fn remove_beneath(dir: &OwnedFd, name: &OsStr) -> Result<(), i32> {
    let n = cname(name)?;
    // SAFETY: unlinkat on a name in a directory we hold.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    match errno() {
        libc::ENOENT => return Ok(()),
        libc::EISDIR | libc::EPERM => {}
        e => return Err(e),
    }
    let sub = open_rel(
        dir.as_raw_fd(),
        Path::new(name),
        libc::O_PATH | libc::O_DIRECTORY,
    )?;
    for (child, _) in children(&sub)? {
        remove_beneath(&sub, &child)?;
    }
    // SAFETY: unlinkat on a name in a directory we hold.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), libc::AT_REMOVEDIR) }).map(|_| ())
}
