//! What the tree holds: nodes with their kind, ownership and times, and
//! the limits on how many may exist.

use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use super::Dir;
use crate::region::Region;
use crate::request::{FileKind, Ino};

/// Ownership, permissions and times of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (`0o7777`).
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last access.
    pub atime: SystemTime,
    /// Last modification.
    pub mtime: SystemTime,
    /// Last status change.
    pub ctime: SystemTime,
    /// Creation.
    pub crtime: SystemTime,
}

impl Meta {
    /// New metadata with all times set to now.
    pub fn new(perm: u16, uid: u32, gid: u32) -> Self {
        let now = SystemTime::now();
        Meta {
            perm: perm & 0o7777,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
        }
    }
}

/// What a node is.
#[derive(Debug)]
pub enum Kind {
    /// A directory: names to inode numbers.
    Dir(Dir),
    /// A region file.
    Region(Arc<Region>),
    /// The read-only `mshare_info` file.
    Info,
}

/// One inode.
#[derive(Debug)]
pub struct Node {
    /// What it is.
    pub kind: Kind,
    /// Ownership, permissions, times.
    pub meta: Meta,
    /// Names pointing at it (0 once unlinked; directories compute theirs).
    pub(super) links: u32,
    /// Parent directory (for `..`).
    pub parent: Ino,
    /// Its name there (the last one, once unlinked).
    pub name: OsString,
    /// Kernel lookup references, decremented by `forget`.
    pub(super) lookups: AtomicU64,
    /// The uid whose quota the node counts against (its creator).
    pub(super) charged: u32,
    /// Whether it still counts against the limits: until it holds nothing
    /// of the server's (an empty directory once removed, a region once its
    /// memory is freed), not until the kernel forgets it.
    pub(super) counted: bool,
}

impl Node {
    pub(super) fn new(kind: Kind, meta: Meta, parent: Ino, name: &OsStr) -> Self {
        Node {
            kind,
            charged: meta.uid,
            counted: true,
            meta,
            links: 1,
            parent,
            name: name.to_os_string(),
            lookups: AtomicU64::new(0),
        }
    }

    /// The region, if this is one.
    pub fn region(&self) -> Option<&Arc<Region>> {
        match &self.kind {
            Kind::Region(r) => Some(r),
            _ => None,
        }
    }

    /// `st_nlink`.
    pub fn nlink(&self) -> u32 {
        match &self.kind {
            Kind::Dir(entries) if self.links > 0 => 2 + entries.len() as u32,
            _ => self.links,
        }
    }

    /// Its file type.
    pub fn file_type(&self) -> FileKind {
        match self.kind {
            Kind::Dir(_) => FileKind::Dir,
            _ => FileKind::File,
        }
    }

    /// Whether a name still points at it.
    pub fn is_linked(&self) -> bool {
        self.links > 0
    }

    /// Takes one kernel lookup reference.
    pub fn add_lookup(&self) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
    }
}

/// Which kind of name a removal takes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// `unlink`: a region (never a directory).
    File,
    /// `rmdir`: an empty directory.
    Dir,
}

/// How many nodes (regions and directories) may exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// All users together (`max_regions`): `ENOSPC` beyond.
    pub nodes: u64,
    /// One uid other than root (`max_regions_per_user`): `EDQUOT` beyond.
    pub per_user: u64,
}
