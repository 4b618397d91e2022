//! Small wrappers shared by the modules that talk to the kernel.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};

/// `path` as a C string, for the syscalls that take one.
pub(crate) fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::sys(format!("path {}", path.display()), libc::EINVAL))
}

/// Turns a libc-style return value (-1 and errno on failure) into a `Result` for `step`.
pub(crate) fn check(ret: libc::c_long, step: impl FnOnce() -> String) -> Result<libc::c_long> {
    if ret == -1 {
        Err(Error::last(step()))
    } else {
        Ok(ret)
    }
}
