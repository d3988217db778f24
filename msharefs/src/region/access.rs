//! What an open of a region allows and how it is answered.

use std::sync::Arc;

use crate::passthrough::PassthroughId;
use crate::request::OpenFlags;

/// What an open of a region file allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `O_RDONLY`.
    ReadOnly,
    /// `O_WRONLY`.
    WriteOnly,
    /// `O_RDWR`.
    ReadWrite,
}

impl Access {
    /// The access of an open with `flags`.
    pub fn of(flags: OpenFlags) -> Access {
        match flags.0 & libc::O_ACCMODE {
            libc::O_RDONLY => Access::ReadOnly,
            libc::O_WRONLY => Access::WriteOnly,
            _ => Access::ReadWrite,
        }
    }

    /// Whether the open allows writing (and so the control ioctls).
    pub fn writes(self) -> bool {
        self != Access::ReadOnly
    }

    /// Whether the open allows reading (and so a backing descriptor).
    pub fn reads(self) -> bool {
        self != Access::WriteOnly
    }
}

/// How an open of a region is answered.
#[derive(Debug)]
pub enum OpenMode {
    /// FUSE passthrough to the backing file (the kernel's data path).
    Passthrough(Arc<PassthroughId>),
    /// Through the server with `FOPEN_DIRECT_IO` (no mmap).
    Direct,
}

/// Whether an open should try FUSE passthrough.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// Register the backing file for passthrough (if the kind allows it).
    Passthrough,
    /// Serve the open through the server.
    Direct,
}
