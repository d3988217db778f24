//! The few raw system calls that neither `nix` nor `std` wrap.
//!
//! # Safety
//!
//! Each call passes NUL-terminated strings that outlive the call and checks
//! the result before turning a returned descriptor into an `OwnedFd`.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

fn fd_result(ret: libc::c_long) -> Result<OwnedFd, Errno> {
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) })
}

/// Creates a detached mount of a new file system instance (`fsopen`,
/// `fsconfig`, `fsmount`): never visible in any mount namespace, gone when
/// the returned descriptor and every file opened under it are closed.
pub fn detached_mount(fstype: &CStr, options: &[(&CStr, &CStr)]) -> Result<OwnedFd, Errno> {
    // SAFETY: `fstype` is a valid C string for the duration of the call.
    let fs =
        fd_result(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })?;
    for (key, value) in options {
        // SAFETY: `key` and `value` are valid C strings; aux must be 0.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        };
        if ret < 0 {
            return Err(Errno::last());
        }
    }
    // SAFETY: null key and value are what FSCONFIG_CMD_CREATE takes.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: plain integer arguments.
    fd_result(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })
}

/// `fstat` of a descriptor: (`st_size`, `st_blocks` in 512-byte units).
pub fn size_and_blocks(fd: impl AsFd) -> Result<(u64, u64), Errno> {
    let st = nix::sys::stat::fstat(fd.as_fd())?;
    Ok((st.st_size as u64, st.st_blocks as u64))
}
