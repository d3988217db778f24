//! FUSE passthrough registrations of backing files.
//!
//! A registration is made on the server's own duplicate of the session's
//! `/dev/fuse` descriptor, not through a reply, so that both transports
//! (the `/dev/fuse` reads fuser serves and the io_uring queues of
//! [`crate::uring`]) answer opens with the same registration. The kernel
//! keeps registrations per connection, whichever descriptor made them.
//!
//! # Safety
//!
//! The `FUSE_DEV_IOC_BACKING_CLOSE` ioctl reads one `u32` that lives across
//! the call. fuser's `wrap_backing` wants an id that belongs to the
//! connection and stays open while its wrapper lives: [`PassthroughId`]
//! holds it open, and the wrapper is given back with `into_raw` right
//! after the reply, so fuser never closes it.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use fuser::{BackingId, FileAttr, FileHandle, FopenFlags, Generation, ReplyCreate, ReplyOpen};
use log::warn;

/// `FUSE_DEV_IOC_BACKING_CLOSE`, `_IOW(229, 2, uint32_t)` in
/// `<linux/fuse.h>`.
mod ioctl {
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
        let id = BackingId::create_raw(dev.as_ref(), file)?;
        Ok(PassthroughId {
            dev: dev.clone(),
            id,
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

/// Answers an open with passthrough to `id`.
pub fn reply_open(reply: ReplyOpen, fh: FileHandle, flags: FopenFlags, id: &PassthroughId) {
    // SAFETY: see the module's Safety section.
    let wrapped = unsafe { reply.wrap_backing(id.raw()) };
    reply.opened_passthrough(fh, flags, &wrapped);
    wrapped.into_raw();
}

/// Answers a create with passthrough to `id`.
pub fn reply_create(
    reply: ReplyCreate,
    (ttl, attr): (&Duration, &FileAttr),
    fh: FileHandle,
    flags: FopenFlags,
    id: &PassthroughId,
) {
    // SAFETY: see the module's Safety section.
    let wrapped = unsafe { reply.wrap_backing(id.raw()) };
    reply.created_passthrough(ttl, attr, Generation(0), fh, flags, &wrapped);
    wrapped.into_raw();
}
