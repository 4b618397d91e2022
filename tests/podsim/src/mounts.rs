//! The pod's filesystem view: a private mount namespace whose whole tree is read-only
//! (`readOnlyRootFilesystem: true`) except /tmp, /dev/shm, /dev, /proc and the `--rw` paths.
//!
//! Read-only is a per-mount flag. `mount_setattr(2)` (Linux 5.12) sets it on a whole tree at once;
//! older kernels get one `MS_BIND|MS_REMOUNT` per mount listed in /proc/self/mountinfo, keeping each
//! mount's nosuid/nodev/noexec/atime flags. A bind mount copies the flags of its source, so the
//! writable places are made writable *after* the tree went read-only: bind, then clear the flag.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// What the mount namespace should look like.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Leave the tree writable (only the namespace, /dev/shm and /tmp handling apply).
    pub keep_root_writable: bool,
    /// Mount an empty tmpfs on /tmp instead of keeping the host's /tmp.
    pub fresh_tmp: bool,
    /// Extra paths that stay writable (absolute, existing).
    pub rw: Vec<PathBuf>,
    /// Use per-mount remounts even if `mount_setattr` exists (to test the fallback).
    pub legacy_remount: bool,
}

/// Enters a new mount namespace and applies `plan`; `log` receives one line per step.
///
/// The working directory is re-entered at the end: it still points into the mounts it was opened
/// on, and a bind mounted over it afterwards would otherwise not apply to relative paths.
pub fn apply(plan: &Plan, log: &mut dyn FnMut(String)) -> Result<()> {
    let cwd =
        std::env::current_dir().map_err(|e| Error::sys("getcwd", e.raw_os_error().unwrap_or(0)))?;

    // SAFETY: unshare takes a flag word only.
    let ret = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    sys::check(ret.into(), || "unshare(CLONE_NEWNS)".to_owned())
        .map_err(|e| e.hint("podsim must start as root"))?;
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(|e| e.hint("cannot make / private, refusing to touch the host's mounts"))?;
    log("mount namespace: new, / recursively private (nothing propagates to the host)".into());

    let use_setattr = !plan.legacy_remount && mount_setattr_works();
    let how = if use_setattr {
        "mount_setattr"
    } else {
        "per-mount remount"
    };
    if !plan.keep_root_writable {
        if use_setattr {
            set_readonly(Path::new("/"), true)?;
        } else {
            remount_tree(Path::new("/"), true)?;
        }
        log(format!("read-only: / and every mount below it ({how})"));
        for path in ["/proc", "/dev"] {
            make_writable(Path::new(path), use_setattr, false)?;
            log(format!("writable: {path} (and mounts below it)"));
        }
    }

    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        std::fs::create_dir_all(shm)
            .map_err(|e| Error::sys("mkdir /dev/shm", e.raw_os_error().unwrap_or(0)))?;
    }
    // 64 MiB and noexec, as kubelet/Docker give a container's /dev/shm.
    tmpfs(shm, "mode=1777,size=64m", libc::MS_NOEXEC)?;
    log("writable: /dev/shm (fresh tmpfs, mode 1777, 64 MiB, noexec)".into());

    let tmp = Path::new("/tmp");
    if plan.fresh_tmp {
        tmpfs(tmp, "mode=1777", 0)?;
        log("writable: /tmp (fresh tmpfs, mode 1777)".into());
    } else if !plan.keep_root_writable {
        make_writable(tmp, use_setattr, true)?;
        log("writable: /tmp (the host's /tmp, bound back read-write)".into());
    }

    for path in &plan.rw {
        if !plan.keep_root_writable {
            make_writable(path, use_setattr, true)
                .map_err(|e| e.hint(format!("--rw {} must be an existing path", path.display())))?;
        }
        log(format!("writable: {} (--rw)", path.display()));
    }

    std::env::set_current_dir(&cwd).map_err(|e| {
        Error::sys(
            format!("chdir({}) after setting up mounts", cwd.display()),
            e.raw_os_error().unwrap_or(0),
        )
        .hint("the working directory is hidden by a mount (--fresh-tmp?); cd elsewhere first")
    })
}

fn mount(
    source: Option<&OsStr>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let c = |s: Option<&[u8]>| s.map(CString::new).transpose();
    let (source, fstype, data) = match (
        c(source.map(OsStrExt::as_bytes)),
        c(fstype.map(str::as_bytes)),
        c(data.map(str::as_bytes)),
    ) {
        (Ok(s), Ok(f), Ok(d)) => (s, f, d),
        _ => return Err(Error::sys("mount: argument with a NUL byte", libc::EINVAL)),
    };
    let ctarget = sys::cpath(target)?;
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::mount(
            ptr(&source),
            ctarget.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    sys::check(ret.into(), || {
        format!(
            "mount({}, {}, {}, {flags:#x}, {})",
            source
                .as_ref()
                .map_or("NULL".into(), |s| s.to_string_lossy()),
            target.display(),
            fstype
                .as_ref()
                .map_or("NULL".into(), |s| s.to_string_lossy()),
            data.as_ref().map_or("NULL".into(), |s| s.to_string_lossy()),
        )
    })
    .map(drop)
}

fn tmpfs(target: &Path, options: &str, extra: libc::c_ulong) -> Result<()> {
    mount(
        Some(OsStr::new("tmpfs")),
        target,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | extra,
        Some(options),
    )
}

fn mount_setattr(path: &Path, set: u64, clear: u64) -> Result<()> {
    let cpath = sys::cpath(path)?;
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `cpath` and `attr` outlive the call; the size matches the struct.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            cpath.as_ptr(),
            libc::AT_RECURSIVE,
            &raw const attr,
            size_of::<libc::mount_attr>(),
        )
    };
    let verb = if set != 0 { "set" } else { "clear" };
    sys::check(ret, || {
        format!(
            "mount_setattr({}, AT_RECURSIVE, {verb} MOUNT_ATTR_RDONLY)",
            path.display()
        )
    })
    .map(drop)
}

fn mount_setattr_works() -> bool {
    // An empty change on the root is harmless and tells whether the syscall exists.
    mount_setattr(Path::new("/"), 0, 0).is_ok()
}

fn set_readonly(path: &Path, readonly: bool) -> Result<()> {
    if readonly {
        mount_setattr(path, libc::MOUNT_ATTR_RDONLY, 0)
    } else {
        mount_setattr(path, 0, libc::MOUNT_ATTR_RDONLY)
    }
}

/// Makes `path` and every mount below it writable. With `bind`, `path` is first bound onto itself,
/// so that it becomes a mount of its own even if it is just a directory of a read-only mount.
fn make_writable(path: &Path, use_setattr: bool, bind: bool) -> Result<()> {
    if bind {
        mount(
            Some(path.as_os_str()),
            path,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )?;
    }
    if use_setattr {
        set_readonly(path, false)
    } else {
        remount_tree(path, false)
    }
}

/// One mount from /proc/self/mountinfo: where it is and the per-mount flags to keep.
struct MountEntry {
    point: PathBuf,
    flags: libc::c_ulong,
}

fn mountinfo() -> Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::sys("read /proc/self/mountinfo", e.raw_os_error().unwrap_or(0)))?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

/// Parses `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let point = unescape(fields.nth(4)?);
    let flags = fields
        .next()?
        .split(',')
        .map(|option| match option {
            "ro" => libc::MS_RDONLY,
            "nosuid" => libc::MS_NOSUID,
            "nodev" => libc::MS_NODEV,
            "noexec" => libc::MS_NOEXEC,
            "noatime" => libc::MS_NOATIME,
            "nodiratime" => libc::MS_NODIRATIME,
            "relatime" => libc::MS_RELATIME,
            _ => 0,
        })
        .fold(0, |acc, flag| acc | flag);
    Some(MountEntry {
        point: PathBuf::from(point),
        flags,
    })
}

/// Mount points escape space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The fallback for kernels without `mount_setattr`: remounts every mount at or below `top`.
fn remount_tree(top: &Path, readonly: bool) -> Result<()> {
    for entry in mountinfo()?
        .into_iter()
        .filter(|entry| entry.point.starts_with(top))
    {
        let keep = entry.flags & !libc::MS_RDONLY;
        let atime = if keep & (libc::MS_NOATIME | libc::MS_RELATIME) == 0 {
            libc::MS_STRICTATIME
        } else {
            0
        };
        let ro = if readonly { libc::MS_RDONLY } else { 0 };
        mount(
            None,
            &entry.point,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | keep | atime | ro,
            None,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_lines_give_point_and_flags() {
        let line = "28 27 0:25 / /mnt/a\\040b ro,nosuid,nodev,relatime - tmpfs x ro,size=4k";
        let entry = super::parse_mountinfo_line(line);
        assert_eq!(
            entry
                .as_ref()
                .map(|e| e.point.to_string_lossy().into_owned()),
            Some("/mnt/a b".to_owned())
        );
        assert_eq!(
            entry.map(|e| e.flags),
            Some(libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RELATIME)
        );
    }
}
