//! Directories the view creates on the host: the private `/tmp` of each run and the skeleton of a
//! sandbox's mount points. Both live in the host's temporary directory (`TMPDIR`, or `/tmp`: in a
//! pod with a read-only root, the writable volume) and are removed with everything in them when
//! they are no longer used.

use std::ffi::CString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::spec::PRIVATE_TMP;

/// A directory this process created, removed with its contents when dropped.
#[derive(Debug)]
pub(crate) struct TempTree {
    path: PathBuf,
}

impl TempTree {
    /// Creates `<temporary directory>/<prefix>XXXXXX`, mode 0700.
    pub(crate) fn new(prefix: &str) -> std::io::Result<TempTree> {
        let template = std::env::temp_dir().join(format!("{prefix}XXXXXX"));
        let c = CString::new(template.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut bytes = c.into_bytes_with_nul();
        // SAFETY: mkdtemp rewrites the XXXXXX of the NUL-terminated template in place.
        let r = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
        if r.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        bytes.pop();
        let mut tree = TempTree {
            path: PathBuf::from(std::ffi::OsString::from_vec(bytes)),
        };
        // Landlock rules and the mount table use canonical paths.
        tree.path = std::fs::canonicalize(&tree.path)?;
        Ok(tree)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the directory on the host instead of removing it.
    pub(crate) fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}

/// Removes `dir` and everything in it, whatever modes the sandbox left on its directories.
/// Symlinks are removed, never followed.
pub(crate) fn remove_tree(dir: &Path) {
    if std::fs::remove_dir_all(dir).is_ok() {
        return;
    }
    // A directory without write or search permission stops remove_dir_all: open them up first.
    fn open_up(dir: &Path) {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    open_up(&e.path());
                }
            }
        }
    }
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        open_up(dir);
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The skeleton: `<tmp>/sandlock-view-XXXXXX` with a read-only directory for every path in
/// `dirs` (absolute), and a read-only file with its contents for every path in `files`, at the
/// same place below it.
pub(crate) fn skeleton(dirs: &[PathBuf], files: &[(PathBuf, &[u8])]) -> std::io::Result<TempTree> {
    let tree = TempTree::new("sandlock-view-")?;
    let below = |a: &Path| tree.path().join(a.strip_prefix("/").unwrap_or(a));
    let mut made: Vec<PathBuf> = Vec::new();
    for a in dirs {
        let d = below(a);
        std::fs::create_dir_all(&d)?;
        made.push(d);
    }
    for (path, contents) in files {
        let f = below(path);
        std::fs::write(&f, contents)?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o444))?;
    }
    // Deepest first does not matter for chmod, but the tree must be complete before.
    for d in &made {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555))?;
    }
    Ok(tree)
}

/// The private `/tmp` (and `/var/tmp`) of one run.
#[derive(Debug)]
pub(crate) struct PrivateTmp {
    tree: TempTree,
}

impl PrivateTmp {
    /// `<tmp>/sandlock-tmp-XXXXXX/{tmp,var-tmp}`, mode 1777 like the real ones, with the mount
    /// points of `virts` that lie beneath them made (so that `ls /tmp` shows the way to them).
    pub(crate) fn create(virts: &[PathBuf]) -> std::io::Result<PrivateTmp> {
        let tree = TempTree::new("sandlock-tmp-")?;
        let t = PrivateTmp { tree };
        for (virt, host) in t.mounts() {
            std::fs::create_dir(&host)?;
            std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o1777))?;
            for v in virts {
                if let Ok(rest) = v.strip_prefix(&virt) {
                    if !rest.as_os_str().is_empty()
                        && !PRIVATE_TMP.iter().any(|p| v == Path::new(p))
                    {
                        std::fs::create_dir_all(host.join(rest))?;
                    }
                }
            }
        }
        Ok(t)
    }

    /// The directory that holds both (granted to the run, removed after it).
    pub(crate) fn root(&self) -> &Path {
        self.tree.path()
    }

    /// `(VIRT, HOST)` of each mount.
    pub(crate) fn mounts(&self) -> Vec<(PathBuf, PathBuf)> {
        PRIVATE_TMP
            .iter()
            .map(|v| {
                let name = v.trim_start_matches('/').replace('/', "-");
                (PathBuf::from(v), self.root().join(name))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_tmp_is_removed_with_what_the_sandbox_left() {
        let t = PrivateTmp::create(&[PathBuf::from("/tmp/a/b")]).unwrap();
        let root = t.root().to_path_buf();
        let tmp = root.join("tmp");
        assert!(tmp.join("a/b").is_dir());
        assert_eq!(
            std::fs::metadata(&tmp).unwrap().permissions().mode() & 0o7777,
            0o1777
        );
        std::fs::create_dir(tmp.join("locked")).unwrap();
        std::fs::write(tmp.join("locked/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", tmp.join("locked/out")).unwrap();
        std::fs::set_permissions(tmp.join("locked"), std::fs::Permissions::from_mode(0o0)).unwrap();
        drop(t);
        assert!(!root.exists());
        assert!(Path::new("/etc/passwd").exists());
    }

    #[test]
    fn the_skeleton_mirrors_ancestors_read_only() {
        let s = skeleton(
            &[PathBuf::from("/mnt"), PathBuf::from("/mnt/x")],
            &[(PathBuf::from("/mnt/f"), b"pem".as_slice())],
        )
        .unwrap();
        let m = std::fs::metadata(s.path().join("mnt/x")).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.permissions().mode() & 0o777, 0o555);
        let f = s.path().join("mnt/f");
        assert_eq!(std::fs::read(&f).unwrap(), b"pem");
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o444
        );
        let p = s.path().to_path_buf();
        drop(s);
        assert!(!p.exists());
    }
}
