//! The `user.mshare.backing` extended attribute (nix does not wrap xattrs).
//!
//! # Safety
//!
//! Each call passes NUL-terminated strings and buffers with their lengths.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use nix::errno::Errno;

use crate::abi::BACKING_XATTR;

fn attr_name() -> CString {
    CString::new(BACKING_XATTR).expect("no NUL in the name")
}

/// `setxattr(path, "user.mshare.backing", kind)`.
pub(crate) fn set_backing(path: &Path, kind: &str) -> Result<(), Errno> {
    let p = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    let v = kind.as_bytes();
    // SAFETY: valid C strings and a buffer of `v.len()` bytes.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            attr_name().as_ptr(),
            v.as_ptr().cast(),
            v.len(),
            0,
        )
    };
    Errno::result(r).map(drop)
}

/// `fgetxattr(fd, "user.mshare.backing")` into `buf`; returns the length.
pub(crate) fn get_backing(fd: impl AsFd, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is writable for `buf.len()` bytes.
    let r = unsafe {
        libc::fgetxattr(
            fd.as_fd().as_raw_fd(),
            attr_name().as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    Errno::result(r).map(|n| n as usize)
}
