//! FUSE passthrough registrations of backing files.
//!
//! A registration is made on the server's own duplicate of the session's
//! `/dev/fuse` descriptor, not through a reply, so that both transports
//! (the `/dev/fuse` reads fuser serves and the io_uring queues of
//! [`crate::transport::uring`]) answer opens with the same registration. The kernel
//! keeps registrations per connection, whichever descriptor made them.
//!
//! # Safety
//!
//! The `FUSE_DEV_IOC_BACKING_OPEN` and `FUSE_DEV_IOC_BACKING_CLOSE` ioctls
//! read one structure (a `fuse_backing_map`, a `u32`) that lives across
//! the call, on a `/dev/fuse` descriptor the caller holds open.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use log::warn;

/// `struct fuse_backing_map` in `<linux/fuse.h>`.
#[repr(C)]
pub struct BackingMap {
    fd: i32,
    flags: u32,
    padding: u64,
}

const _: () = assert!(size_of::<BackingMap>() == 16);

/// `FUSE_DEV_IOC_BACKING_OPEN`, `_IOW(229, 1, struct fuse_backing_map)`,
/// and `FUSE_DEV_IOC_BACKING_CLOSE`, `_IOW(229, 2, uint32_t)`, in
/// `<linux/fuse.h>`.
mod ioctl {
    nix::ioctl_write_ptr!(backing_open, 229, 1, super::BackingMap);
    nix::ioctl_write_ptr!(backing_close, 229, 2, u32);
}

/// The connection's `/dev/fuse` descriptor (a duplicate the server keeps).
pub type Device = Arc<OwnedFd>;

/// A backing file registered for passthrough; closed on drop. Opens that
/// reply with it keep the kernel's reference to the backing file, so
/// dropping it does not affect files already open.
#[derive(Debug)]
pub struct PassthroughId {
    dev: Device,
    id: u32,
}

impl PassthroughId {
    /// Registers `file` with the connection behind `dev`. EPERM means the
    /// server lacks `CAP_SYS_ADMIN`; ELOOP that the file cannot be passed
    /// through (hugetlbfs).
    pub fn register(dev: &Device, file: &OwnedFd) -> io::Result<Self> {
        let map = BackingMap {
            fd: file.as_raw_fd(),
            flags: 0,
            padding: 0,
        };
        // SAFETY: the ioctl reads `map`, which lives across the call, on a
        // descriptor `dev` keeps open.
        let id = unsafe { ioctl::backing_open(dev.as_raw_fd(), &map) }?;
        Ok(PassthroughId {
            dev: dev.clone(),
            id: id as u32,
        })
    }

    /// The id that `fuse_open_out.backing_id` carries.
    pub fn raw(&self) -> u32 {
        self.id
    }
}

impl Drop for PassthroughId {
    fn drop(&mut self) {
        // SAFETY: the ioctl reads one u32 that lives across the call, on a
        // descriptor this value keeps open.
        let res = unsafe { ioctl::backing_close(self.dev.as_raw_fd(), &self.id) };
        if let Err(e) = res {
            warn!("closing passthrough registration {}: {e}", self.id);
        }
    }
}
