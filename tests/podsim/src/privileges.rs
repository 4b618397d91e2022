//! Becoming the pod's process: an ordinary uid with no capabilities in any set, and no_new_privs.
//!
//! Order matters: the bounding set can only be cleared while CAP_SETPCAP is still held, and the
//! uid change from 0 clears the permitted/effective sets but not the inheritable one, which
//! `capset` then clears explicitly.

use crate::error::{Error, Result};
use crate::sys;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets as two 32-bit words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops to `uid`/`gid` with no supplementary groups and empty capability sets (bounding and
/// ambient included); `log` receives a summary.
pub fn drop_to(uid: libc::uid_t, gid: libc::gid_t, log: &mut dyn FnMut(String)) -> Result<()> {
    let last_cap = last_cap()?;
    for cap in 0..=last_cap {
        // SAFETY: PR_CAPBSET_DROP takes integer arguments only.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        sys::check(ret.into(), || format!("prctl(PR_CAPBSET_DROP, {cap})"))
            .map_err(|e| e.hint("podsim must start as root (CAP_SETPCAP)"))?;
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes integer arguments only.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    sys::check(ret.into(), || {
        "prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)".to_owned()
    })?;
    // SAFETY: a zero-length group list is never read.
    let ret = unsafe { libc::setgroups(0, std::ptr::null()) };
    sys::check(ret.into(), || "setgroups(0, NULL)".to_owned())?;
    // SAFETY: integer arguments only.
    let ret = unsafe { libc::setresgid(gid, gid, gid) };
    sys::check(ret.into(), || format!("setresgid({gid}, {gid}, {gid})"))?;
    // SAFETY: integer arguments only.
    let ret = unsafe { libc::setresuid(uid, uid, uid) };
    sys::check(ret.into(), || format!("setresuid({uid}, {uid}, {uid})"))?;

    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: `header` and the two-element `data` array are the layout capset(2) expects for
    // version 3, and outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) };
    sys::check(ret, || "capset(all sets empty)".to_owned())?;

    log(format!(
        "identity: uid={uid} gid={gid}, no supplementary groups, bounding set 0..={last_cap} \
         dropped, no inheritable/permitted/effective/ambient capabilities"
    ));
    Ok(())
}

/// The highest capability number this kernel knows.
fn last_cap() -> Result<libc::c_int> {
    let path = "/proc/sys/kernel/cap_last_cap";
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::sys(format!("read {path}"), e.raw_os_error().unwrap_or(0)))?;
    text.trim()
        .parse()
        .map_err(|_| Error::msg(format!("{path}: unexpected content {text:?}")))
}
