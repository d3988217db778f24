//! The `user.mshare.backing` extended attribute of a region file.

use std::os::fd::AsFd;
use std::path::Path;

use mshare_uapi::{Backing, BACKING_XATTR};
use nix::errno::Errno;
use rustix::fs::XattrFlags;

fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

/// Sets the backing kind of the (unsized, unopened) region at `path`.
pub(crate) fn set_backing(path: &Path, kind: Backing) -> Result<(), Errno> {
    rustix::fs::setxattr(
        path,
        BACKING_XATTR,
        kind.as_str().as_bytes(),
        XattrFlags::empty(),
    )
    .map_err(errno)
}

/// The backing kind of an open region file (`EPROTO` for a value that
/// names none).
pub(crate) fn get_backing(fd: impl AsFd) -> Result<Backing, Errno> {
    let mut buf = [0u8; 16];
    let n = rustix::fs::fgetxattr(fd, BACKING_XATTR, &mut buf).map_err(errno)?;
    parse(&buf[..n])
}

/// The backing kind `path` names: a region's, or on the mount's root the
/// kind of regions created without naming one.
pub(crate) fn get_backing_at(path: &Path) -> Result<Backing, Errno> {
    let mut buf = [0u8; 16];
    let n = rustix::fs::getxattr(path, BACKING_XATTR, &mut buf).map_err(errno)?;
    parse(&buf[..n])
}

fn parse(value: &[u8]) -> Result<Backing, Errno> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Errno::EPROTO)
}
