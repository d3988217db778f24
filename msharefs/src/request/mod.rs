//! The request model: every request either transport brings, as one typed
//! [`Op`], answered by the one dispatcher,
//! [`MshareFs::handle`](crate::fs::MshareFs::handle),
//! with one typed [`Reply`]. The transports ([`crate::transport`]) only
//! translate: fuser's callbacks build an `Op` and send the `Reply` with
//! fuser's reply types; the io_uring decoder builds it from the request's
//! bytes and encodes the reply as the kernel's structures.

mod types;

use std::ffi::OsStr;

pub use self::types::{
    Attr, AttrChange, DirEntry, Fh, FileKind, Ino, OpenFlags, RenameFlags, SetTime, Statfs,
};
use crate::region::OpenMode;

/// Who sent a request: what the handlers need of it, whichever transport
/// brought it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The caller's fsuid.
    pub uid: u32,
    /// The caller's fsgid.
    pub gid: u32,
    /// The calling thread (0 for requests the kernel makes on its own).
    pub pid: u32,
}

/// Takes the entries of a `readdir` reply until it says the reply is full
/// (returns true); the transport's own buffer.
pub type DirSink<'a> = &'a mut dyn FnMut(DirEntry<'_>) -> bool;

/// One request on the inode it names. Names, data and ioctl input borrow
/// the transport's buffer.
pub enum Op<'a> {
    /// `lookup(name)` in the directory.
    Lookup {
        /// The name looked up.
        name: &'a OsStr,
    },
    /// The kernel drops `nlookup` references to the inode.
    Forget {
        /// References dropped.
        nlookup: u64,
    },
    /// `stat`.
    Getattr,
    /// chmod, chown, truncate, utimens.
    Setattr(AttrChange),
    /// `mknod(name, mode)` in the directory.
    Mknod {
        /// The new name.
        name: &'a OsStr,
        /// Type and permission bits.
        mode: u32,
    },
    /// `mkdir(name, mode)` in the directory.
    Mkdir {
        /// The new name.
        name: &'a OsStr,
        /// Permission bits.
        mode: u32,
    },
    /// `unlink(name)` in the directory.
    Unlink {
        /// The name removed.
        name: &'a OsStr,
    },
    /// `rmdir(name)` in the directory.
    Rmdir {
        /// The name removed.
        name: &'a OsStr,
    },
    /// `symlink` (refused).
    Symlink {
        /// The new name.
        name: &'a OsStr,
    },
    /// `link` (refused).
    Link {
        /// The new name.
        name: &'a OsStr,
    },
    /// `renameat2(name → newdir/newname, flags)`.
    Rename {
        /// The name in the directory.
        name: &'a OsStr,
        /// The directory it moves to.
        newdir: Ino,
        /// Its new name.
        newname: &'a OsStr,
        /// `RENAME_*`.
        flags: RenameFlags,
    },
    /// `open` of a file.
    Open {
        /// The open's flags.
        flags: OpenFlags,
    },
    /// `open(O_CREAT)` of a new name in the directory.
    Create {
        /// The new name.
        name: &'a OsStr,
        /// Permission bits.
        mode: u32,
        /// The open's flags.
        flags: OpenFlags,
    },
    /// `read` through an open file.
    Read {
        /// The open file.
        fh: Fh,
        /// Where.
        offset: u64,
        /// How much at most.
        size: u32,
    },
    /// `write` through an open file.
    Write {
        /// The open file.
        fh: Fh,
        /// Where.
        offset: u64,
        /// What.
        data: &'a [u8],
    },
    /// `fsync` (nothing to do: memory is not a disk).
    Fsync,
    /// The last close of an open file.
    Release {
        /// The open file.
        fh: Fh,
    },
    /// `opendir`.
    Opendir,
    /// `readdir`: the entries after `offset`, into `into`.
    Readdir {
        /// The open directory.
        fh: Fh,
        /// The cookie of the last entry the caller has.
        offset: u64,
        /// The transport's reply buffer.
        into: DirSink<'a>,
    },
    /// The last close of an open directory.
    Releasedir {
        /// The open directory.
        fh: Fh,
    },
    /// `statfs`.
    Statfs,
    /// An ioctl on an open file.
    Ioctl {
        /// The open file.
        fh: Fh,
        /// The command.
        cmd: u32,
        /// Its input.
        input: &'a [u8],
        /// The most output the caller takes.
        out_size: u32,
    },
    /// `getxattr(name)`; `size` 0 asks for the length.
    Getxattr {
        /// The attribute.
        name: &'a OsStr,
        /// The caller's buffer.
        size: u32,
    },
    /// `listxattr`; `size` 0 asks for the length.
    Listxattr {
        /// The caller's buffer.
        size: u32,
    },
    /// `setxattr(name, value, flags)`.
    Setxattr {
        /// The attribute.
        name: &'a OsStr,
        /// Its new value.
        value: &'a [u8],
        /// `XATTR_CREATE`/`XATTR_REPLACE`.
        flags: i32,
    },
    /// `removexattr(name)`.
    Removexattr {
        /// The attribute.
        name: &'a OsStr,
    },
    /// `fallocate` through an open file.
    Fallocate {
        /// The open file.
        fh: Fh,
        /// Where.
        offset: u64,
        /// How much.
        length: u64,
        /// `FALLOC_FL_*`.
        mode: i32,
    },
    /// The connection ends (over io_uring; fuser handles its own).
    Destroy,
}

impl<'a> Op<'a> {
    /// The request's name, for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Lookup { .. } => "lookup",
            Op::Forget { .. } => "forget",
            Op::Getattr => "getattr",
            Op::Setattr(_) => "setattr",
            Op::Mknod { .. } => "mknod",
            Op::Mkdir { .. } => "mkdir",
            Op::Unlink { .. } => "unlink",
            Op::Rmdir { .. } => "rmdir",
            Op::Symlink { .. } => "symlink",
            Op::Link { .. } => "link",
            Op::Rename { .. } => "rename",
            Op::Open { .. } => "open",
            Op::Create { .. } => "create",
            Op::Read { .. } => "read",
            Op::Write { .. } => "write",
            Op::Fsync => "fsync",
            Op::Release { .. } => "release",
            Op::Opendir => "opendir",
            Op::Readdir { .. } => "readdir",
            Op::Releasedir { .. } => "releasedir",
            Op::Statfs => "statfs",
            Op::Ioctl { .. } => "ioctl",
            Op::Getxattr { .. } => "getxattr",
            Op::Listxattr { .. } => "listxattr",
            Op::Setxattr { .. } => "setxattr",
            Op::Removexattr { .. } => "removexattr",
            Op::Fallocate { .. } => "fallocate",
            Op::Destroy => "destroy",
        }
    }

    /// Whether the kernel may send the request without a caller it checked
    /// (on behalf of an open file, or of the connection): such requests
    /// pass the mounter-only check of a mount without `allow_other`, as
    /// fuser and libfuse let them.
    pub fn callerless(&self) -> bool {
        matches!(
            self,
            Op::Forget { .. }
                | Op::Read { .. }
                | Op::Write { .. }
                | Op::Readdir { .. }
                | Op::Fsync
                | Op::Release { .. }
                | Op::Releasedir { .. }
                | Op::Destroy
        )
    }

    /// The name the request is about, if it names one (borrowed from the
    /// request's buffer, so it outlives the `Op`).
    pub fn subject_name(&self) -> Option<&'a OsStr> {
        match *self {
            Op::Lookup { name }
            | Op::Mknod { name, .. }
            | Op::Mkdir { name, .. }
            | Op::Unlink { name }
            | Op::Rmdir { name }
            | Op::Symlink { name }
            | Op::Link { name }
            | Op::Rename { name, .. }
            | Op::Create { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// What a request answers, before a transport encodes it.
#[derive(Debug)]
pub enum Reply {
    /// Nothing but success.
    Empty,
    /// No reply at all (`forget`).
    None,
    /// A node and its attributes, with a lookup reference the kernel will
    /// `forget`.
    Entry(Attr),
    /// Attributes.
    Attr(Attr),
    /// An open region or `mshare_info`, answered as the mode says.
    Opened(Fh, OpenMode),
    /// An open directory.
    OpenedDir(Fh),
    /// A new region, open.
    Created(Attr, Fh, OpenMode),
    /// Bytes read, an attribute's value or a list of names.
    Data(Vec<u8>),
    /// An attribute's or list's length (asked with size 0).
    Size(u32),
    /// Bytes written.
    Written(u32),
    /// File system usage.
    Statfs(Statfs),
    /// An ioctl's output.
    Ioctl(Vec<u8>),
}

/// Region opens ask for no `flush` at `close(2)`: a close then costs no
/// round trip.
pub const FOPEN_NOFLUSH: u32 = 1 << 5;
/// Reads and writes go to the server (no page cache, no mmap).
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
/// Reads, writes and mmap go to the registered backing file.
pub const FOPEN_PASSTHROUGH: u32 = 1 << 7;

/// The `fuse_open_out.open_flags` of an open answered as `mode` says.
pub fn open_flags(mode: &OpenMode) -> u32 {
    match mode {
        OpenMode::Passthrough(_) => FOPEN_NOFLUSH | FOPEN_PASSTHROUGH,
        OpenMode::Direct => FOPEN_NOFLUSH | FOPEN_DIRECT_IO,
    }
}
