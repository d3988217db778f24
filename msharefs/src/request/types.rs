//! The values a request carries and a reply returns, in the server's own
//! types: no transport's types reach the handlers.

use std::time::SystemTime;

/// An inode number (`nodeid` in the kernel's FUSE protocol).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ino(pub u64);

impl Ino {
    /// The root directory, always inode 1 in FUSE.
    pub const ROOT: Ino = Ino(1);
}

/// A file handle the server gave at open (`fh` in the protocol).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fh(pub u64);

/// `open(2)` flags as the kernel passes them (`O_ACCMODE` and the rest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenFlags(pub i32);

/// `renameat2(2)` flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenameFlags(pub u32);

impl RenameFlags {
    /// `RENAME_NOREPLACE`.
    pub const NOREPLACE: u32 = libc::RENAME_NOREPLACE;

    /// Whether only the flags in `known` are set.
    pub fn only(self, known: u32) -> bool {
        self.0 & !known == 0
    }

    /// Whether `flag` is set.
    pub fn has(self, flag: u32) -> bool {
        self.0 & flag != 0
    }
}

/// What a node is, as a directory entry and `st_mode` say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Dir,
    /// A regular file (a region, or `mshare_info`).
    File,
}

impl FileKind {
    /// The `S_IFMT` bits of the kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::Dir => libc::S_IFDIR,
            FileKind::File => libc::S_IFREG,
        }
    }

    /// The `DT_*` type of a directory entry.
    pub fn dirent_type(self) -> u32 {
        self.mode_bits() >> 12
    }
}

/// The attributes of a node, as `getattr` and entry replies carry them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks of memory.
    pub blocks: u64,
    /// Last access.
    pub atime: SystemTime,
    /// Last modification.
    pub mtime: SystemTime,
    /// Last change of the attributes.
    pub ctime: SystemTime,
    /// Directory or file.
    pub kind: FileKind,
    /// Permission bits.
    pub perm: u16,
    /// Links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Preferred I/O size (the page size of the region's memory).
    pub blksize: u32,
}

/// A time that `setattr` sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    /// The server's clock at the request.
    Now,
    /// This time.
    At(SystemTime),
}

/// The attribute changes of one `setattr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttrChange {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (`ftruncate`).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
}

impl AttrChange {
    /// Whether nothing is changed.
    pub fn is_empty(&self) -> bool {
        *self == AttrChange::default()
    }
}

/// One directory entry of a `readdir` reply.
#[derive(Clone, Copy, Debug)]
pub struct DirEntry<'a> {
    /// The entry's inode.
    pub ino: Ino,
    /// Where the next `readdir` goes on from, after this entry.
    pub cookie: u64,
    /// Directory or file.
    pub kind: FileKind,
    /// The name.
    pub name: &'a std::ffi::OsStr,
}

/// What `statfs` reports: nodes used and free, against `max_regions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Statfs {
    /// Nodes that may exist (`max_regions`).
    pub files: u64,
    /// Nodes that may still be made.
    pub ffree: u64,
    /// Block and fragment size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
}
