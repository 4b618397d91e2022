//! The mount table of one run, and the questions the resolver asks it.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::plan::Access;

/// What kind of entry a mount is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `fs_mount` or the private `/tmp`: VIRT is served from a different HOST.
    Bind,
    /// A real directory shown at its own path although a VIRT covers it: a policy path beneath a
    /// VIRT, or a HOST that lies beneath one.
    Identity,
    /// The directories on the way to a VIRT that exist nowhere else (read-only, `virt` is `/`).
    Skeleton,
    /// A path of the policy itself (not a mount): where a path that leaves the view through a
    /// symlink or `..` is acted on, with the access the policy grants there.
    Policy,
    /// The copy-on-write work directory (`workdir`): `virt` is the directory as named, `host` the
    /// directory itself (the lower layer), and [`Mount::cow`] its layers.
    Cow,
    /// One read-only file shown at `virt` (the trust bundle of `http_inject_ca`): `host` is the
    /// file, in the skeleton's tree, and `root` the directory that holds it. Nothing lies beneath
    /// it (`ENOTDIR`).
    File,
}

/// One entry of the mount table.
#[derive(Debug)]
pub(crate) struct Mount {
    /// Where the sandbox sees it (absolute, normalised).
    pub(crate) virt: PathBuf,
    /// The host directory (canonical), or the file of a [`Kind::File`] mount.
    pub(crate) host: PathBuf,
    /// `host` (the directory that holds it, for a [`Kind::File`] mount), held open (`O_PATH`)
    /// since the plan (or the run, for the private `/tmp`): the directory acted beneath, even if
    /// the host path is renamed or replaced meanwhile.
    pub(crate) root: Arc<OwnedFd>,
    pub(crate) access: Access,
    pub(crate) kind: Kind,
    /// The layers of a [`Kind::Cow`] mount.
    pub(crate) cow: Option<Arc<super::cow::Cow>>,
}

/// The host file a [`Kind::File`] mount is shown over, known by its identity: a path that reaches
/// that file another way (a symlink outside the view, such as OpenSSL's `cert.pem`) is given the
/// mount's file too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Alias {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    /// The mount point.
    pub(crate) virt: PathBuf,
}

/// The mount table of one run.
#[derive(Debug)]
pub(crate) struct View {
    pub(crate) mounts: Vec<Arc<Mount>>,
    /// Strict ancestors of a VIRT that are missing on the host (served from the skeleton).
    pub(crate) missing: Arc<Vec<PathBuf>>,
    /// Index of the skeleton in `mounts`, if there is one.
    pub(crate) skeleton: Option<usize>,
    /// The policy's own paths, held open (kind [`Kind::Policy`]).
    pub(crate) roots: Arc<Vec<Arc<Mount>>>,
    /// The host files that file mounts are shown over.
    pub(crate) aliases: Arc<Vec<Alias>>,
    /// Keeps the skeleton's directories until the last view that uses them is gone.
    pub(crate) _tree: Option<Arc<super::tmp::TempTree>>,
}

impl View {
    /// The mount whose VIRT is exactly `p` (a mount point).
    pub(crate) fn mount_at(&self, p: &Path) -> Option<usize> {
        self.mounts
            .iter()
            .position(|m| m.kind != Kind::Skeleton && m.virt == p)
    }

    /// The mount whose VIRT is the longest prefix of `p` (component-wise), and the rest of `p`.
    pub(crate) fn covering<'p>(&self, p: &'p Path) -> Option<(usize, &'p Path)> {
        self.mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| m.kind != Kind::Skeleton)
            .filter_map(|(i, m)| p.strip_prefix(&m.virt).ok().map(|rest| (i, rest)))
            .min_by_key(|(_, rest)| rest.components().count())
    }

    /// Whether `p` is a strict ancestor of some VIRT (so a directory must appear there).
    pub(crate) fn leads_to_mount(&self, p: &Path) -> bool {
        self.mounts
            .iter()
            .any(|m| m.kind != Kind::Skeleton && m.virt != p && m.virt.starts_with(p))
    }

    /// Whether `p` is missing on the host and served from the skeleton.
    pub(crate) fn is_missing(&self, p: &Path) -> bool {
        self.missing.iter().any(|m| m == p)
    }

    /// Where the absolute virtual path `p` really is: `None` if it is outside the view (the same
    /// path on the host).
    pub(crate) fn host_path(&self, p: &Path) -> Result<Option<PathBuf>, i32> {
        use std::os::unix::ffi::OsStrExt;
        let r = self.resolve(
            0,
            super::walk::Base::Cwd,
            p.as_os_str().as_bytes(),
            super::walk::Last::Follow,
        )?;
        Ok(match r.place {
            super::walk::Place::Mount(s) => Some(s.host),
            // The work directory itself where it has the path (its upper copy holds only changes).
            super::walk::Place::Cow(c) => {
                let cow = c.cow()?;
                let lower = cow.lower.join(&c.rel);
                match cow.find(&c.rel)? {
                    (super::cow::Node::Dir, _) if lower.is_dir() => Some(lower),
                    _ => Some(cow.spot(&c.mount, &c.rel, super::cow::Intent::Read)?.host),
                }
            }
            super::walk::Place::Real(_) if r.same_as_kernel => None,
            super::walk::Place::Real(real) => Some(real),
        })
    }

    /// The virtual path of the real path `real`: inside a HOST it is the mount's VIRT plus the
    /// rest (the longest HOST wins; a mount that moves the directory is preferred to one that
    /// shows it at its own path); elsewhere it is `real` itself.
    pub(crate) fn virtual_of(&self, real: &Path) -> PathBuf {
        if let Some(v) = self
            .mounts
            .iter()
            .filter_map(|m| m.cow.as_ref())
            .find_map(|c| c.virtual_of(real))
        {
            return v;
        }
        let best = self
            .mounts
            .iter()
            .filter_map(|m| real.strip_prefix(&m.host).ok().map(|rest| (m, rest)))
            .min_by_key(|(m, rest)| (rest.components().count(), m.kind == Kind::Identity));
        match best {
            Some((m, rest)) if rest.as_os_str().is_empty() => m.virt.clone(),
            Some((m, rest)) => m.virt.join(rest),
            None => real.to_path_buf(),
        }
    }
}
