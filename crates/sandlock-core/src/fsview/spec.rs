//! From the policy to a mount table: validation, refusals, and what the plan must grant.
//!
//! What is refused, and why:
//! - a VIRT that is relative, contains `..`, is `/`, or lies under `/proc` (the sandbox and the
//!   supervisor both need the real `/proc`);
//! - a HOST that is missing or not a directory;
//! - a policy path (or HOST) that is the same as a VIRT or one of its ancestors: Landlock would
//!   then grant the real directory the view hides, and a thread that swaps a virtual path for a
//!   real one between the supervisor's look and the kernel's would reach it.
//!
//! One exception: a read-only file mount ([`FileMount`], the trust bundle of `http_inject_ca`) may
//! lie beneath a policy path. It holds public data, so a thread that races the supervisor to the
//! real file gains nothing but the host's own file (`docs/security.md`).
//!
//! What is added:
//! - each HOST as a Landlock rule (read-write, or read-only for `HOST:ro`);
//! - a policy path beneath a VIRT is shown at its own path (an identity mount), as is a HOST
//!   that lies beneath a VIRT (the private `/tmp` lives in the host's `/tmp`), so the real path
//!   of every directory the sandbox may use stays usable;
//! - the skeleton: a read-only directory tree with every ancestor of every VIRT, which serves
//!   the ones the host (or an enclosing mount) lacks, and holds the files of file mounts.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::cow::Cow;
use super::tmp::{self, PrivateTmp, TempTree};
use super::view::{Alias, Kind, Mount, View};
use crate::error::{PolicyError, SandboxError, Stage};
use crate::plan::{Access, PathRule};
use crate::policy::Policy;
use crate::sys;

/// What the view of one run is made of.
pub(crate) struct RunParts {
    pub(crate) view: View,
    pub(crate) private_tmp: Option<PrivateTmp>,
    /// The work directory's layers.
    pub(crate) cow: Option<Arc<Cow>>,
}

impl RunParts {
    /// The directories this run's Landlock ruleset grants besides the plan's.
    pub(crate) fn rules(&self) -> Vec<PathRule> {
        let private = self.private_tmp.as_ref().map(|t| t.root().to_path_buf());
        let cow = self.cow.as_ref().and_then(|c| c.root());
        private
            .into_iter()
            .chain(cow)
            .map(|path| PathRule {
                path,
                access: Access::Write,
                optional: false,
            })
            .collect()
    }
}

/// Where `private_tmp` mounts its directory.
pub(crate) const PRIVATE_TMP: [&str; 2] = ["/tmp", "/var/tmp"];

/// A file the sandbox sees at paths of its own, read-only, whatever the host has there (the host's
/// file stays as it is). The file is made once per sandbox in the skeleton's tree, which the
/// sandbox is not granted, and removed with it.
#[derive(Debug)]
pub(crate) struct FileMount {
    /// The policy field it comes from, for errors.
    pub(crate) field: &'static str,
    /// Where the sandbox sees it (absolute); the same file at each.
    pub(crate) virts: Vec<PathBuf>,
    pub(crate) contents: Vec<u8>,
}

/// One mount before its directory is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    virt: PathBuf,
    host: PathBuf,
    access: Access,
    kind: Kind,
}

/// The view a policy asks for, prepared once per sandbox.
#[derive(Debug)]
pub(crate) struct ViewPlan {
    /// Mounts that are the same for every run (binds, identities, skeleton), held open.
    mounts: Vec<Arc<Mount>>,
    missing: Arc<Vec<PathBuf>>,
    /// The skeleton's directory tree, removed when the last view using it is gone.
    skeleton_tree: Option<Arc<TempTree>>,
    /// Each run gets a private `/tmp` and `/var/tmp`.
    pub(crate) private_tmp: bool,
    /// Every VIRT (the private `/tmp` ones included, and the identity mounts).
    virts: Vec<PathBuf>,
    /// The mount points a user named (`fs_mount`, policy paths beneath a VIRT): made in a private
    /// `/tmp` that covers them, so that listing it shows the way there.
    shown: Vec<PathBuf>,
    /// The policy's paths and the HOSTs, held open: where a path that leaves the view is acted on.
    roots: Arc<Vec<Arc<Mount>>>,
    /// The copy-on-write work directory: as the sandbox names it, itself (canonical), held open.
    workdir: Option<(PathBuf, PathBuf, Arc<OwnedFd>)>,
    /// Landlock rules the view needs: each HOST.
    pub(crate) rules: Vec<PathRule>,
    /// The host files that file mounts are shown over.
    aliases: Arc<Vec<Alias>>,
}

/// A mount point: absolute, without `..`, not `/`, not under `/proc`.
fn virt_path(field: &str, p: &Path) -> Result<PathBuf, PolicyError> {
    let shown = p.display().to_string();
    let bad = |why: &str| PolicyError::new(field, shown.clone(), why);
    if !p.is_absolute() {
        return Err(bad("a mount point must be an absolute path"));
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(bad("a mount point cannot contain `..`"));
            }
        }
    }
    if out == Path::new("/") {
        return Err(bad(
            "cannot mount over / (grant paths with fs_readable and fs_writable)",
        ));
    }
    if out.starts_with("/proc") {
        return Err(bad(
            "cannot mount over /proc: the sandbox and sandlock need the real one",
        ));
    }
    Ok(out)
}

/// `HOST` or `HOST:ro` (`HOST:rw` is accepted too).
fn host_spec(field: &str, spec: &str) -> Result<(PathBuf, Access), PolicyError> {
    let (path, access) = if let Some(p) = spec.strip_suffix(":ro") {
        (p, Access::Read)
    } else if let Some(p) = spec.strip_suffix(":rw") {
        (p, Access::Write)
    } else {
        (spec, Access::Write)
    };
    if path.is_empty() {
        return Err(PolicyError::new(
            field,
            spec,
            "no host directory; write HOST or HOST:ro",
        ));
    }
    let canonical = std::fs::canonicalize(path).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::NotFound {
            "the host directory does not exist".to_string()
        } else {
            format!("cannot resolve the host directory: {e}")
        };
        PolicyError::new(field, spec, why)
    })?;
    if !canonical.is_dir() {
        return Err(PolicyError::new(
            field,
            spec,
            "the host path is not a directory (a mount needs one)",
        ));
    }
    Ok((canonical, access))
}

/// `p` made absolute against the current directory and freed of `.` (not of `..` or symlinks).
fn absolute(p: &Path) -> PathBuf {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    p.components().collect()
}

/// Whether `ancestor` is `p` or one of its ancestors.
fn covers(ancestor: &Path, p: &Path) -> bool {
    p.starts_with(ancestor)
}

/// Adds an identity mount of `virt` (merging the access of one already there).
fn add_identity(list: &mut Vec<Entry>, virt: PathBuf, host: PathBuf, access: Access) {
    if let Some(e) = list.iter_mut().find(|e| e.virt == virt) {
        e.access = e.access.max(access);
    } else {
        list.push(Entry {
            virt,
            host,
            access,
            kind: Kind::Identity,
        });
    }
}

/// The host directories of `entries`.
fn entries_hosts(entries: &[Entry]) -> impl Iterator<Item = &Path> {
    entries.iter().map(|e| e.host.as_path())
}

/// Opens a mount's host directory (or, with `any`, a policy path of any kind) with `O_PATH`.
fn open_root(host: &Path, any: bool) -> std::io::Result<OwnedFd> {
    let c = CString::new(host.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let dir = if any { 0 } else { libc::O_DIRECTORY };
    // SAFETY: `c` is a valid C string.
    let fd = sys::cvt(unsafe { libc::open(c.as_ptr(), libc::O_PATH | dir | libc::O_CLOEXEC) })?;
    // SAFETY: open just returned this descriptor.
    Ok(unsafe { sys::owned(fd) })
}

fn held(e: &Entry) -> Result<Arc<Mount>, SandboxError> {
    let root = open_root(&e.host, false).map_err(|err| {
        SandboxError::io(
            Stage::Prepare,
            &err,
            "cannot open a mount's host directory; does it still exist?",
        )
        .with_detail(e.host.display().to_string())
    })?;
    Ok(Arc::new(Mount {
        virt: e.virt.clone(),
        host: e.host.clone(),
        root: Arc::new(root),
        access: e.access,
        kind: e.kind,
        cow: None,
    }))
}

/// The mount of the file the skeleton holds for `virt`.
fn file_mount(tree: &TempTree, virt: &Path) -> Result<Arc<Mount>, SandboxError> {
    let host = tree.path().join(virt.strip_prefix("/").unwrap_or(virt));
    let dir = host.parent().unwrap_or(tree.path());
    let root = open_root(dir, false).map_err(|err| {
        SandboxError::io(
            Stage::Prepare,
            &err,
            "cannot open the directory of a file the view shows (in the temporary directory)",
        )
        .with_detail(dir.display().to_string())
    })?;
    Ok(Arc::new(Mount {
        virt: virt.to_path_buf(),
        host,
        root: Arc::new(root),
        access: Access::Read,
        kind: Kind::File,
        cow: None,
    }))
}

impl ViewPlan {
    /// The view `policy` asks for, or `None`. `paths` are the policy's resolved path rules;
    /// `files` are shown besides the policy's own mounts.
    pub(crate) fn new(
        policy: &Policy,
        paths: &[PathRule],
        files: &[FileMount],
    ) -> Result<Option<ViewPlan>, crate::Error> {
        if policy.fs_mount.is_empty()
            && !policy.private_tmp
            && policy.workdir.is_none()
            && files.is_empty()
        {
            return Ok(None);
        }
        let mut file_virts: Vec<(PathBuf, &[u8])> = Vec::new();
        for f in files {
            for v in &f.virts {
                let v = virt_path(f.field, v)?;
                if !file_virts.iter().any(|(w, _)| *w == v) {
                    file_virts.push((v, f.contents.as_slice()));
                }
            }
        }
        let mut binds: Vec<Entry> = Vec::new();
        for (virt, spec) in &policy.fs_mount {
            let field = format!("fs_mount.{}", virt.display());
            let v = virt_path(&field, virt)?;
            if policy.private_tmp && PRIVATE_TMP.iter().any(|t| v == Path::new(t)) {
                return Err(PolicyError::new(
                    field,
                    spec.as_str(),
                    "private_tmp already mounts a fresh directory there",
                )
                .into());
            }
            let (host, access) = host_spec(&field, spec)?;
            binds.push(Entry {
                virt: v,
                host,
                access,
                kind: Kind::Bind,
            });
        }
        let mut virts: Vec<PathBuf> = binds.iter().map(|b| b.virt.clone()).collect();
        if policy.private_tmp {
            virts.extend(PRIVATE_TMP.iter().map(PathBuf::from));
        }
        let workdir = match &policy.workdir {
            Some(w) => {
                let shown = w.display().to_string();
                let canonical = std::fs::canonicalize(w)
                    .ok()
                    .filter(|c| c.is_dir())
                    .ok_or_else(|| {
                        PolicyError::new("workdir", shown.clone(), "not an existing directory")
                    })?;
                let virt = absolute(w);
                if virts
                    .iter()
                    .chain(file_virts.iter().map(|(v, _)| v))
                    .any(|v| v.starts_with(&virt) || virt == *v)
                {
                    return Err(PolicyError::new(
                        "workdir",
                        shown,
                        "a mount point (fs_mount, private_tmp) lies at or inside it; a work \
                         directory holds none",
                    )
                    .into());
                }
                virts.push(virt.clone());
                Some((virt, canonical))
            }
            None => None,
        };

        // What would grant a real VIRT: a policy path, a preset path or a HOST that covers it.
        let hides = |p: &Path| virts.iter().find(|v| covers(p, v)).cloned();
        let work = workdir.as_ref().map(|(v, _)| v.clone());
        let refuse = |field: String, value: String, virt: &Path, what: &str| -> crate::Error {
            let why = if work.as_deref() == Some(virt) {
                format!(
                    "{what} {}, the work directory: the sandbox could change it behind its \
                     copy-on-write layer. Leave it out of the grants (the work directory is \
                     readable, and its changes are applied when the run ends)",
                    virt.display()
                )
            } else {
                format!(
                    "{what} {}, which the view hides (a mount covers it): the sandbox could reach \
                     the real one. Grant paths beside or beneath the mount point instead",
                    virt.display()
                )
            };
            PolicyError::new(field, value, why).into()
        };
        for (list, name) in [
            (&policy.fs_readable, "fs_readable"),
            (&policy.fs_writable, "fs_writable"),
        ] {
            for (i, p) in list.iter().enumerate() {
                let canonical = std::fs::canonicalize(p).unwrap_or_else(|_| absolute(p));
                for q in [absolute(p), canonical] {
                    if let Some(v) = hides(&q) {
                        return Err(refuse(
                            format!("{name}[{i}]"),
                            p.display().to_string(),
                            &v,
                            "grants the real",
                        ));
                    }
                }
            }
        }
        for r in paths.iter().filter(|r| r.optional) {
            if let Some(v) = hides(&r.path) {
                return Err(refuse(
                    "presets".into(),
                    r.path.display().to_string(),
                    &v,
                    "the system preset grants this path, which contains",
                ));
            }
        }
        for b in &binds {
            if let Some(v) = hides(&b.host) {
                return Err(refuse(
                    format!("fs_mount.{}", b.virt.display()),
                    b.host.display().to_string(),
                    &v,
                    "the host directory contains",
                ));
            }
        }

        // Identity mounts: policy paths beneath a VIRT, as written and as resolved, and HOSTs
        // beneath one.
        let outer = virts.clone();
        let under_virt = |p: &Path| outer.iter().any(|v| p != v.as_path() && p.starts_with(v));
        let mut identities: Vec<Entry> = Vec::new();
        for (list, access) in [
            (&policy.fs_readable, Access::Read),
            (&policy.fs_writable, Access::Write),
        ] {
            for p in list {
                let Ok(canonical) = std::fs::canonicalize(p) else {
                    continue;
                };
                let given = absolute(p);
                if under_virt(&given) {
                    add_identity(&mut identities, given, canonical.clone(), access);
                }
                if under_virt(&canonical) {
                    add_identity(&mut identities, canonical.clone(), canonical, access);
                }
            }
        }
        let mut shown: Vec<PathBuf> = binds.iter().map(|b| b.virt.clone()).collect();
        shown.extend(identities.iter().map(|e| e.virt.clone()));
        shown.extend(workdir.iter().map(|(v, _)| v.clone()));
        for b in &binds {
            if under_virt(&b.host) {
                add_identity(&mut identities, b.host.clone(), b.host.clone(), b.access);
            }
        }
        virts.extend(identities.iter().map(|e| e.virt.clone()));

        // The skeleton: every strict ancestor of every VIRT, so that missing ones can be served.
        let mut ancestors: Vec<PathBuf> = Vec::new();
        for v in virts.iter().chain(file_virts.iter().map(|(v, _)| v)) {
            for a in v.ancestors().skip(1) {
                if a != Path::new("/") && !ancestors.iter().any(|x| x == a) {
                    ancestors.push(a.to_path_buf());
                }
            }
        }
        let outside_mounts = |a: &Path| !virts.iter().any(|v| a.starts_with(v));
        // An ancestor the host lacks, or one the policy grants nothing beneath (the sandbox could
        // not list or enter anything real there): shown from the skeleton, which lists the way to
        // the mount points.
        // Each run's own directories (a private /tmp, a work directory's upper layer) are made in
        // the temporary directory.
        let per_run = (policy.private_tmp || workdir.is_some()).then(std::env::temp_dir);
        let granted_beneath = |a: &Path| {
            paths
                .iter()
                .map(|r| r.path.as_path())
                .chain(entries_hosts(&binds))
                .chain(per_run.as_deref())
                .any(|p| p.starts_with(a))
        };
        // Only a file mount's ancestors can lie beneath a policy path (any other VIRT there was
        // refused above): those are the real directories, as granted.
        let granted_at = |a: &Path| paths.iter().any(|r| a.starts_with(&r.path));
        let missing: Vec<PathBuf> = ancestors
            .iter()
            .filter(|a| {
                outside_mounts(a)
                    && (std::fs::symlink_metadata(a).is_err()
                        || !(granted_beneath(a) || granted_at(a)))
            })
            .cloned()
            .collect();
        // Needed where the host lacks an ancestor, or where one mount point lies inside another
        // mount (whose directory may lack the way to it).
        let nested = ancestors.iter().any(|a| !outside_mounts(a));
        let mut entries: Vec<Entry> = binds.clone();
        entries.extend(identities);
        let mut skeleton_tree = None;
        if !missing.is_empty() || nested || !file_virts.is_empty() {
            // The mount points themselves too, so that listing their parent shows them.
            let dirs: Vec<PathBuf> = ancestors.iter().chain(&virts).cloned().collect();
            let tree = tmp::skeleton(&dirs, &file_virts).map_err(|e| {
                SandboxError::io(
                    Stage::Prepare,
                    &e,
                    "cannot create the directory tree that shows a mount point's missing \
                     ancestors (in the temporary directory)",
                )
            })?;
            if under_virt(tree.path()) || virts.iter().any(|v| v == tree.path()) {
                entries.push(Entry {
                    virt: tree.path().to_path_buf(),
                    host: tree.path().to_path_buf(),
                    access: Access::Read,
                    kind: Kind::Identity,
                });
            }
            entries.push(Entry {
                virt: PathBuf::from("/"),
                host: tree.path().to_path_buf(),
                access: Access::Read,
                kind: Kind::Skeleton,
            });
            skeleton_tree = Some(Arc::new(tree));
        }
        let aliases: Vec<Alias> = file_virts
            .iter()
            .filter_map(|(virt, _)| {
                use std::os::unix::fs::MetadataExt;
                let m = std::fs::metadata(virt).ok()?;
                Some(Alias {
                    dev: m.dev(),
                    ino: m.ino(),
                    virt: virt.clone(),
                })
            })
            .collect();
        let mut mounts = entries.iter().map(held).collect::<Result<Vec<_>, _>>()?;
        if let Some(tree) = &skeleton_tree {
            for (virt, _) in &file_virts {
                mounts.push(file_mount(tree, virt)?);
            }
        }
        let mut rules: Vec<PathRule> = entries
            .iter()
            .filter(|e| e.kind == Kind::Bind)
            .map(|e| PathRule {
                path: e.host.clone(),
                access: e.access,
                optional: false,
            })
            .collect();
        // The work directory is the lower layer: read-only to the sandbox, whatever the race.
        rules.extend(workdir.iter().map(|(_, host)| PathRule {
            path: host.clone(),
            access: Access::Read,
            optional: false,
        }));
        let workdir = match workdir {
            Some((virt, host)) => {
                let fd = open_root(&host, false).map_err(|e| {
                    SandboxError::io(Stage::Prepare, &e, "cannot open the work directory")
                        .with_detail(host.display().to_string())
                })?;
                Some((virt, host, Arc::new(fd)))
            }
            None => None,
        };
        // A preset path this machine lacks is simply not there.
        let roots = paths
            .iter()
            .chain(&rules)
            .filter_map(|r| {
                let fd = open_root(&r.path, true).ok()?;
                Some(Arc::new(Mount {
                    virt: r.path.clone(),
                    host: r.path.clone(),
                    root: Arc::new(fd),
                    access: r.access,
                    kind: Kind::Policy,
                    cow: None,
                }))
            })
            .collect();
        Ok(Some(ViewPlan {
            mounts,
            missing: Arc::new(missing),
            skeleton_tree,
            private_tmp: policy.private_tmp,
            virts,
            shown,
            roots: Arc::new(roots),
            workdir,
            rules,
            aliases: Arc::new(aliases),
        }))
    }

    /// The view of one run: the plan's mounts, plus a fresh private `/tmp` and the layers of the
    /// work directory if the policy asks.
    pub(crate) fn for_run(&self) -> Result<RunParts, SandboxError> {
        let mut mounts = self.mounts.clone();
        let private = if self.private_tmp {
            let t = PrivateTmp::create(&self.shown).map_err(|e| {
                SandboxError::io(
                    Stage::Prepare,
                    &e,
                    "cannot create the private /tmp in the temporary directory (TMPDIR or /tmp)",
                )
            })?;
            let mut entries: Vec<Entry> = t
                .mounts()
                .into_iter()
                .map(|(virt, host)| Entry {
                    virt,
                    host,
                    access: Access::Write,
                    kind: Kind::Bind,
                })
                .collect();
            let root = t.root().to_path_buf();
            if PRIVATE_TMP.iter().any(|v| root.starts_with(v))
                || self.virts.iter().any(|v| root.starts_with(v))
            {
                entries.push(Entry {
                    virt: root.clone(),
                    host: root,
                    access: Access::Write,
                    kind: Kind::Identity,
                });
            }
            for e in &entries {
                mounts.push(held(e)?);
            }
            Some(t)
        } else {
            None
        };
        let cow = match &self.workdir {
            Some((virt, host, fd)) => {
                let cow = Cow::new(virt.clone(), host.clone(), fd.clone()).map_err(|e| {
                    SandboxError::io(
                        Stage::Prepare,
                        &e,
                        "cannot create the work directory's upper layer in the temporary \
                         directory (TMPDIR or /tmp)",
                    )
                })?;
                let cow = Arc::new(cow);
                mounts.push(Arc::new(Mount {
                    virt: virt.clone(),
                    host: host.clone(),
                    root: fd.clone(),
                    access: Access::Write,
                    kind: Kind::Cow,
                    cow: Some(cow.clone()),
                }));
                // Its layers keep their own paths (a restarted chdir names them).
                if let Some(root) = cow.root() {
                    mounts.push(held(&Entry {
                        virt: root.clone(),
                        host: root,
                        access: Access::Write,
                        kind: Kind::Identity,
                    })?);
                }
                Some(cow)
            }
            None => None,
        };
        let skeleton = mounts.iter().position(|m| m.kind == Kind::Skeleton);
        Ok(RunParts {
            view: View {
                mounts,
                missing: self.missing.clone(),
                skeleton,
                roots: self.roots.clone(),
                aliases: self.aliases.clone(),
                _tree: self.skeleton_tree.clone(),
            },
            private_tmp: private,
            cow,
        })
    }

    /// Whether each run needs a Landlock ruleset of its own (a private `/tmp`, a work directory's
    /// upper layer).
    pub(crate) fn per_run(&self) -> bool {
        self.private_tmp || self.workdir.is_some()
    }

    /// Whether `p` lies in the view (a mount, or the private `/tmp`).
    pub(crate) fn covers_path(&self, p: &Path) -> bool {
        self.virts.iter().any(|v| p.starts_with(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_absolute_normal_and_not_root_or_proc() {
        assert_eq!(
            virt_path("f", Path::new("/mnt//data/./")).unwrap(),
            PathBuf::from("/mnt/data")
        );
        for bad in ["mnt/data", "/mnt/../etc", "/", "/proc/self"] {
            let e = virt_path("f", Path::new(bad)).unwrap_err();
            assert_eq!((e.field.as_str(), e.value.as_str()), ("f", bad));
        }
    }

    #[test]
    fn host_specs_take_a_read_only_suffix() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path().display().to_string();
        let c = std::fs::canonicalize(d.path()).unwrap();
        assert_eq!(host_spec("f", &s).unwrap(), (c.clone(), Access::Write));
        assert_eq!(
            host_spec("f", &format!("{s}:ro")).unwrap(),
            (c, Access::Read)
        );
        let e = host_spec("f", "/no/such/dir").unwrap_err();
        assert!(e.reason.contains("does not exist"), "{e}");
        let e = host_spec("f", "/etc/passwd").unwrap_err();
        assert!(e.reason.contains("not a directory"), "{e}");
    }
}
