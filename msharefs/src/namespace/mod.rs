//! The file system tree: inodes, names and lookup counts, held in memory.
//!
//! The [`Namespace`] lives under one `RwLock` in the dispatcher, held only
//! for these short, non-blocking operations; region work (ioctls, I/O)
//! happens on an `Arc<Region>` cloned out of it, under the region's own lock.
//! Lock order: namespace, then region.

mod dir;
mod node;
mod persist;
mod shape;
mod walk;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use mshare_uapi::INFO_FILE_NAME;
use nix::errno::Errno;

use crate::fail::{ensure, Fail};
use crate::region::Region;
use crate::request::{DirEntry, FileKind, Ino};
pub use dir::Dir;
pub use node::{Kind, Limits, Meta, Node, Removal};
pub use walk::{permits, MAY_READ};

/// Inode number of the root directory.
pub const ROOT: Ino = Ino::ROOT;
/// Inode number of `mshare_info`.
pub const INFO: Ino = Ino(2);
/// Longest name accepted.
pub const NAME_MAX: usize = 255;

/// The tree.
#[derive(Debug)]
pub struct Namespace {
    /// Every node that exists, by inode number.
    nodes: HashMap<Ino, Node>,
    /// The number the next node gets (never reused).
    next_ino: u64,
    /// Nodes made by clients that count against the limits (linked, or an
    /// unlinked region whose memory is not freed yet).
    made: u64,
    /// The same, by the uid charged for them.
    made_by: HashMap<u32, u64>,
    /// What may exist.
    limits: Limits,
}

fn check_name(name: &OsStr) -> Result<(), Fail> {
    ensure(name.len() <= NAME_MAX, Errno::ENAMETOOLONG, "name too long")?;
    ensure(
        !name.is_empty() && name != "." && name != ".." && !name.as_encoded_bytes().contains(&b'/'),
        Errno::EINVAL,
        "invalid name",
    )
}

impl Namespace {
    /// A tree holding the root (mode 1777, like /dev/shm) and `mshare_info`
    /// (mode 0444), both owned by `uid`/`gid`.
    pub fn new(uid: u32, gid: u32, limits: Limits) -> Self {
        let mut nodes = HashMap::new();
        let mut root = Dir::default();
        root.insert(OsStr::new(INFO_FILE_NAME), INFO);
        nodes.insert(
            ROOT,
            Node::new(
                Kind::Dir(root),
                Meta::new(0o1777, uid, gid),
                ROOT,
                OsStr::new("."),
            ),
        );
        nodes.insert(
            INFO,
            Node::new(
                Kind::Info,
                Meta::new(0o444, uid, gid),
                ROOT,
                OsStr::new(INFO_FILE_NAME),
            ),
        );
        Namespace {
            nodes,
            next_ino: INFO.0 + 1,
            made: 0,
            made_by: HashMap::new(),
            limits,
        }
    }

    /// The node `ino`.
    pub fn node(&self, ino: Ino) -> Result<&Node, Fail> {
        self.nodes
            .get(&ino)
            .ok_or(Fail::new(Errno::ENOENT, "no such inode"))
    }

    /// The node `ino`, mutable.
    pub fn node_mut(&mut self, ino: Ino) -> Result<&mut Node, Fail> {
        self.nodes
            .get_mut(&ino)
            .ok_or(Fail::new(Errno::ENOENT, "no such inode"))
    }

    fn dir(&self, ino: Ino) -> Result<&Dir, Fail> {
        match &self.node(ino)?.kind {
            Kind::Dir(e) => Ok(e),
            _ => Err(Fail::new(Errno::ENOTDIR, "not a directory")),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> Result<&mut Dir, Fail> {
        match &mut self.node_mut(ino)?.kind {
            Kind::Dir(e) => Ok(e),
            _ => Err(Fail::new(Errno::ENOTDIR, "not a directory")),
        }
    }

    /// The inode `name` in `parent` names.
    pub fn child(&self, parent: Ino, name: &OsStr) -> Result<Ino, Fail> {
        self.dir(parent)?
            .get(name)
            .ok_or(Fail::new(Errno::ENOENT, "no such name"))
    }

    /// Nodes made by clients that exist (linked or still in use).
    pub fn node_count(&self) -> u64 {
        self.made
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether `uid` may make one more node: `ENOSPC` when the mount is
    /// full, `EDQUOT` when `uid` (not root) has its share.
    pub fn check_room(&self, uid: u32) -> Result<(), Fail> {
        ensure(
            self.made < self.limits.nodes,
            Errno::ENOSPC,
            "max_regions reached (regions and directories)",
        )?;
        let mine = self.made_by.get(&uid).copied().unwrap_or(0);
        ensure(
            uid == 0 || mine < self.limits.per_user,
            Errno::EDQUOT,
            "max_regions_per_user reached for this uid",
        )
    }

    /// The inode number the next [`Self::insert`] will use.
    pub fn next_ino(&self) -> Ino {
        Ino(self.next_ino)
    }

    /// Adds `name` in `parent`; returns its inode number.
    pub fn insert(
        &mut self,
        parent: Ino,
        name: &OsStr,
        kind: Kind,
        meta: Meta,
    ) -> Result<Ino, Fail> {
        check_name(name)?;
        ensure(
            self.node(parent)?.is_linked(),
            Errno::ENOENT,
            "directory was removed",
        )?;
        ensure(
            self.dir(parent)?.get(name).is_none(),
            Errno::EEXIST,
            "name exists",
        )?;
        self.check_room(meta.uid)?;
        let ino = self.next_ino();
        self.dir_mut(parent)?.insert(name, ino);
        self.made += 1;
        *self.made_by.entry(meta.uid).or_default() += 1;
        self.nodes.insert(ino, Node::new(kind, meta, parent, name));
        self.next_ino += 1;
        let p = self.node_mut(parent)?;
        p.meta.mtime = SystemTime::now();
        p.meta.ctime = p.meta.mtime;
        Ok(ino)
    }

    /// Removes a name: a region's (`unlink`) or an empty directory's
    /// (`rmdir`). Returns the inode it named.
    pub fn remove(&mut self, parent: Ino, name: &OsStr, removal: Removal) -> Result<Ino, Fail> {
        let ino = self.child(parent, name)?;
        match removal {
            Removal::File => {
                ensure(ino != INFO, Errno::EPERM, "mshare_info cannot be removed")?;
                ensure(
                    !matches!(self.node(ino)?.kind, Kind::Dir(_)),
                    Errno::EISDIR,
                    "is a directory",
                )?;
            }
            Removal::Dir => ensure(
                self.dir(ino)?.is_empty(),
                Errno::ENOTEMPTY,
                "directory not empty",
            )?,
        }
        self.dir_mut(parent)?.remove(name);
        self.touch_dir(parent);
        self.drop_link(ino);
        if removal == Removal::Dir {
            // An empty directory holds nothing once its name is gone.
            self.uncount(ino);
        }
        Ok(ino)
    }

    /// Moves `name` in `parent` to `newname` in `newparent`, replacing a
    /// compatible target unless `noreplace`. Returns the replaced inode.
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        noreplace: bool,
    ) -> Result<Option<Ino>, Fail> {
        check_name(newname)?;
        let ino = self.child(parent, name)?;
        ensure(ino != INFO, Errno::EPERM, "mshare_info cannot be renamed")?;
        self.dir(newparent)?;
        let is_dir = matches!(self.node(ino)?.kind, Kind::Dir(_));
        if is_dir {
            // Refuse to move a directory below itself.
            let mut p = newparent;
            loop {
                ensure(
                    p != ino,
                    Errno::EINVAL,
                    "cannot move a directory into itself",
                )?;
                if p == ROOT {
                    break;
                }
                p = self.node(p)?.parent;
            }
        }
        let target = self.dir(newparent)?.get(newname);
        if let Some(t) = target {
            if t == ino {
                return Ok(None);
            }
            ensure(!noreplace, Errno::EEXIST, "target exists")?;
            ensure(t != INFO, Errno::EPERM, "mshare_info cannot be replaced")?;
            match (&self.node(t)?.kind, is_dir) {
                (Kind::Dir(e), true) => {
                    ensure(e.is_empty(), Errno::ENOTEMPTY, "target directory not empty")?
                }
                (Kind::Dir(_), false) => {
                    return Err(Fail::new(Errno::EISDIR, "target is a directory"))
                }
                (_, true) => return Err(Fail::new(Errno::ENOTDIR, "target is not a directory")),
                _ => {}
            }
        }
        self.dir_mut(parent)?.remove(name);
        self.dir_mut(newparent)?.remove(newname);
        self.dir_mut(newparent)?.insert(newname, ino);
        self.touch_dir(parent);
        self.touch_dir(newparent);
        let node = self.node_mut(ino)?;
        node.parent = newparent;
        node.name = newname.to_os_string();
        node.meta.ctime = SystemTime::now();
        if let Some(t) = target {
            self.drop_link(t);
        }
        Ok(target)
    }

    /// Gives region node `ino` a new region (a new backing kind) in place
    /// of `old`, which must still be its region and still be fresh (not
    /// open, not sized); `EBUSY` otherwise. The caller releases `old`'s
    /// memory.
    pub fn replace_region(
        &mut self,
        ino: Ino,
        old: &Arc<Region>,
        new: Arc<Region>,
    ) -> Result<(), Fail> {
        let node = self.node_mut(ino)?;
        let current = node
            .region()
            .ok_or(Fail::new(Errno::EINVAL, "not a region"))?;
        ensure(
            Arc::ptr_eq(current, old) && old.is_fresh(),
            Errno::EBUSY,
            "the backing of an open or sized region cannot change",
        )?;
        node.kind = Kind::Region(new);
        node.meta.ctime = SystemTime::now();
        Ok(())
    }

    /// Lists directory `ino` from just after `cookie` (0: from the start,
    /// `.` and `..` first): gives `add` each entry until it returns `true`
    /// (the reply is full).
    pub fn list(
        &self,
        ino: Ino,
        cookie: u64,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> Result<(), Fail> {
        let dir = self.dir(ino)?;
        let dots = [(ino, 1, "."), (self.node(ino)?.parent, 2, "..")];
        for (i, c, name) in dots {
            let dot = DirEntry {
                ino: i,
                cookie: c,
                kind: FileKind::Dir,
                name: OsStr::new(name),
            };
            if c > cookie && add(dot) {
                return Ok(());
            }
        }
        for (c, name, child) in dir.after(cookie) {
            let entry = DirEntry {
                ino: child,
                cookie: c,
                kind: self.node(child)?.file_type(),
                name,
            };
            if add(entry) {
                break;
            }
        }
        Ok(())
    }

    /// Checks that `ino` is a directory (for `opendir`).
    pub fn check_dir(&self, ino: Ino) -> Result<(), Fail> {
        self.dir(ino).map(drop)
    }

    /// Drops `n` kernel lookup references. Returns the node if it is now
    /// gone for good (no name, no lookup, no open handle).
    pub fn forget(&mut self, ino: Ino, n: u64) -> Option<Node> {
        let node = self.nodes.get(&ino)?;
        let left = node
            .lookups
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                Some(l.saturating_sub(n))
            })
            .map(|prev| prev.saturating_sub(n))
            .unwrap_or(0);
        if left == 0 {
            self.remove_if_unused(ino)
        } else {
            None
        }
    }

    /// Removes `ino` from the table if nothing refers to it any more.
    pub fn remove_if_unused(&mut self, ino: Ino) -> Option<Node> {
        let node = self.nodes.get(&ino)?;
        let open = node.region().is_some_and(|r| r.opens() > 0);
        if ino.0 <= INFO.0 || node.is_linked() || node.lookups.load(Ordering::Relaxed) > 0 || open {
            return None;
        }
        self.uncount(ino);
        self.nodes.remove(&ino)
    }

    /// Stops counting `ino` against the limits: it holds nothing of the
    /// server's any more (a removed directory, a region whose memory was
    /// freed), though the kernel may still refer to it until it forgets.
    pub fn uncount(&mut self, ino: Ino) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        if !std::mem::replace(&mut node.counted, false) {
            return;
        }
        let uid = node.charged;
        self.made = self.made.saturating_sub(1);
        if let Some(n) = self.made_by.get_mut(&uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.made_by.remove(&uid);
            }
        }
    }

    fn drop_link(&mut self, ino: Ino) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.links = node.links.saturating_sub(1);
            node.meta.ctime = SystemTime::now();
        }
    }

    fn touch_dir(&mut self, ino: Ino) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.meta.mtime = SystemTime::now();
            node.meta.ctime = node.meta.mtime;
        }
    }
}

#[cfg(test)]
mod tests;
