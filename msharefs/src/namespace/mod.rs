//! The file system tree: inodes, names and lookup counts, held in memory.
//!
//! The [`Namespace`] lives under one `RwLock` in the dispatcher, held only
//! for these short, non-blocking operations; region work (ioctls, I/O)
//! happens on an `Arc<Region>` cloned out of it, under the region's own lock.
//! Lock order: namespace, then region.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use nix::errno::Errno;

use crate::fail::{ensure, Fail};
use crate::region::Region;

/// Inode number of the root directory.
pub const ROOT: u64 = 1;
/// Inode number of `mshare_info`.
pub const INFO: u64 = 2;
/// Longest name accepted.
pub const NAME_MAX: usize = 255;

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
    Dir(BTreeMap<OsString, u64>),
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
    links: u32,
    /// Parent directory (for `..`).
    pub parent: u64,
    /// Kernel lookup references, decremented by `forget`.
    lookups: AtomicU64,
}

impl Node {
    fn new(kind: Kind, meta: Meta, parent: u64) -> Self {
        Node {
            kind,
            meta,
            links: 1,
            parent,
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

    /// Whether a name still points at it.
    pub fn is_linked(&self) -> bool {
        self.links > 0
    }

    /// Takes one kernel lookup reference.
    pub fn add_lookup(&self) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
    }
}

/// The tree.
#[derive(Debug)]
pub struct Namespace {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    regions: u64,
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
    pub fn new(uid: u32, gid: u32) -> Self {
        let mut nodes = HashMap::new();
        let mut root = BTreeMap::new();
        root.insert(OsString::from(libmshare::abi::INFO_FILE_NAME), INFO);
        nodes.insert(
            ROOT,
            Node::new(Kind::Dir(root), Meta::new(0o1777, uid, gid), ROOT),
        );
        nodes.insert(
            INFO,
            Node::new(Kind::Info, Meta::new(0o444, uid, gid), ROOT),
        );
        Namespace {
            nodes,
            next_ino: INFO + 1,
            regions: 0,
        }
    }

    /// The node `ino`.
    pub fn node(&self, ino: u64) -> Result<&Node, Fail> {
        self.nodes
            .get(&ino)
            .ok_or(Fail::new(Errno::ENOENT, "no such inode"))
    }

    /// The node `ino`, mutable.
    pub fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Fail> {
        self.nodes
            .get_mut(&ino)
            .ok_or(Fail::new(Errno::ENOENT, "no such inode"))
    }

    fn dir(&self, ino: u64) -> Result<&BTreeMap<OsString, u64>, Fail> {
        match &self.node(ino)?.kind {
            Kind::Dir(e) => Ok(e),
            _ => Err(Fail::new(Errno::ENOTDIR, "not a directory")),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Fail> {
        match &mut self.node_mut(ino)?.kind {
            Kind::Dir(e) => Ok(e),
            _ => Err(Fail::new(Errno::ENOTDIR, "not a directory")),
        }
    }

    /// The inode `name` in `parent` names.
    pub fn child(&self, parent: u64, name: &OsStr) -> Result<u64, Fail> {
        self.dir(parent)?
            .get(name)
            .copied()
            .ok_or(Fail::new(Errno::ENOENT, "no such name"))
    }

    /// Number of regions that exist (linked or still open).
    pub fn region_count(&self) -> u64 {
        self.regions
    }

    /// The inode number the next [`Self::insert`] will use.
    pub fn next_ino(&self) -> u64 {
        self.next_ino
    }

    /// Adds `name` in `parent`; returns its inode number.
    pub fn insert(
        &mut self,
        parent: u64,
        name: &OsStr,
        kind: Kind,
        meta: Meta,
    ) -> Result<u64, Fail> {
        check_name(name)?;
        ensure(
            self.node(parent)?.is_linked(),
            Errno::ENOENT,
            "directory was removed",
        )?;
        let ino = self.next_ino;
        let entries = self.dir_mut(parent)?;
        ensure(!entries.contains_key(name), Errno::EEXIST, "name exists")?;
        entries.insert(name.to_owned(), ino);
        if matches!(kind, Kind::Region(_)) {
            self.regions += 1;
        }
        self.nodes.insert(ino, Node::new(kind, meta, parent));
        self.next_ino += 1;
        let p = self.node_mut(parent)?;
        p.meta.mtime = SystemTime::now();
        p.meta.ctime = p.meta.mtime;
        Ok(ino)
    }

    /// Removes the name of a non-directory. Returns the inode it named.
    pub fn unlink(&mut self, parent: u64, name: &OsStr) -> Result<u64, Fail> {
        let ino = self.child(parent, name)?;
        ensure(ino != INFO, Errno::EPERM, "mshare_info cannot be removed")?;
        ensure(
            !matches!(self.node(ino)?.kind, Kind::Dir(_)),
            Errno::EISDIR,
            "is a directory",
        )?;
        self.dir_mut(parent)?.remove(name);
        self.touch_dir(parent);
        self.drop_link(ino);
        Ok(ino)
    }

    /// Removes an empty directory.
    pub fn rmdir(&mut self, parent: u64, name: &OsStr) -> Result<u64, Fail> {
        let ino = self.child(parent, name)?;
        ensure(
            self.dir(ino)?.is_empty(),
            Errno::ENOTEMPTY,
            "directory not empty",
        )?;
        self.dir_mut(parent)?.remove(name);
        self.touch_dir(parent);
        self.drop_link(ino);
        Ok(ino)
    }

    /// Moves `name` in `parent` to `newname` in `newparent`, replacing a
    /// compatible target unless `noreplace`. Returns the replaced inode.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        noreplace: bool,
    ) -> Result<Option<u64>, Fail> {
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
        let target = self.dir(newparent)?.get(newname).copied();
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
        self.dir_mut(newparent)?.insert(newname.to_owned(), ino);
        self.touch_dir(parent);
        self.touch_dir(newparent);
        let node = self.node_mut(ino)?;
        node.parent = newparent;
        node.meta.ctime = SystemTime::now();
        if let Some(t) = target {
            self.drop_link(t);
        }
        Ok(target)
    }

    /// Replaces the region of a region node (a new backing kind).
    pub fn set_region(&mut self, ino: u64, region: Arc<Region>) -> Result<(), Fail> {
        let node = self.node_mut(ino)?;
        ensure(node.region().is_some(), Errno::EINVAL, "not a region")?;
        node.kind = Kind::Region(region);
        node.meta.ctime = SystemTime::now();
        Ok(())
    }

    /// A directory's entries, `.` and `..` first, as (inode, is_dir, name).
    pub fn entries(&self, ino: u64) -> Result<Vec<(u64, bool, OsString)>, Fail> {
        let entries = self.dir(ino)?;
        let mut out = vec![
            (ino, true, OsString::from(".")),
            (self.node(ino)?.parent, true, OsString::from("..")),
        ];
        for (name, &child) in entries {
            let is_dir = matches!(self.node(child)?.kind, Kind::Dir(_));
            out.push((child, is_dir, name.clone()));
        }
        Ok(out)
    }

    /// Drops `n` kernel lookup references. Returns the node if it is now
    /// gone for good (no name, no lookup, no open handle).
    pub fn forget(&mut self, ino: u64, n: u64) -> Option<Node> {
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
    pub fn remove_if_unused(&mut self, ino: u64) -> Option<Node> {
        let node = self.nodes.get(&ino)?;
        let open = node.region().is_some_and(|r| r.opens() > 0);
        if ino <= INFO || node.is_linked() || node.lookups.load(Ordering::Relaxed) > 0 || open {
            return None;
        }
        let node = self.nodes.remove(&ino)?;
        if node.region().is_some() {
            self.regions -= 1;
        }
        Some(node)
    }

    fn drop_link(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.links = node.links.saturating_sub(1);
            node.meta.ctime = SystemTime::now();
        }
    }

    fn touch_dir(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.meta.mtime = SystemTime::now();
            node.meta.ctime = node.meta.mtime;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> Namespace {
        Namespace::new(0, 0)
    }
    fn dir() -> Kind {
        Kind::Dir(BTreeMap::new())
    }
    fn meta() -> Meta {
        Meta::new(0o755, 1000, 1000)
    }
    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn info_file_is_fixed() {
        let mut n = ns();
        assert_eq!(n.child(ROOT, os("mshare_info")), Ok(INFO));
        assert_eq!(
            n.unlink(ROOT, os("mshare_info")).unwrap_err().errno,
            Errno::EPERM
        );
        assert_eq!(
            n.rename(ROOT, os("mshare_info"), ROOT, os("x"), false)
                .unwrap_err()
                .errno,
            Errno::EPERM
        );
        n.insert(ROOT, os("a"), dir(), meta()).unwrap();
        assert_eq!(
            n.rename(ROOT, os("a"), ROOT, os("mshare_info"), false)
                .unwrap_err()
                .errno,
            Errno::EPERM
        );
    }

    #[test]
    fn directories() {
        let mut n = ns();
        let d = n.insert(ROOT, os("d"), dir(), meta()).unwrap();
        let e = n.insert(d, os("e"), dir(), meta()).unwrap();
        assert_eq!(
            n.insert(ROOT, os("d"), dir(), meta()).unwrap_err().errno,
            Errno::EEXIST
        );
        assert_eq!(n.node(d).unwrap().nlink(), 3);
        assert_eq!(n.rmdir(ROOT, os("d")).unwrap_err().errno, Errno::ENOTEMPTY);
        assert_eq!(
            n.rename(ROOT, os("d"), e, os("x"), false)
                .unwrap_err()
                .errno,
            Errno::EINVAL
        );
        assert_eq!(n.unlink(ROOT, os("d")).unwrap_err().errno, Errno::EISDIR);
        assert_eq!(n.rmdir(d, os("e")), Ok(e));
        assert!(n.remove_if_unused(e).is_some());
        assert_eq!(n.rmdir(ROOT, os("d")), Ok(d));
        assert_eq!(n.child(ROOT, os("d")).unwrap_err().errno, Errno::ENOENT);
        let long = "x".repeat(256);
        assert_eq!(
            n.insert(ROOT, os(&long), dir(), meta()).unwrap_err().errno,
            Errno::ENAMETOOLONG
        );
    }

    #[test]
    fn rename_rules() {
        let mut n = ns();
        let a = n.insert(ROOT, os("a"), dir(), meta()).unwrap();
        let b = n.insert(ROOT, os("b"), dir(), meta()).unwrap();
        let c = n.insert(b, os("c"), dir(), meta()).unwrap();
        assert_eq!(
            n.rename(ROOT, os("a"), ROOT, os("b"), false)
                .unwrap_err()
                .errno,
            Errno::ENOTEMPTY
        );
        assert_eq!(
            n.rename(ROOT, os("a"), ROOT, os("b"), true)
                .unwrap_err()
                .errno,
            Errno::EEXIST
        );
        assert_eq!(n.rename(ROOT, os("a"), b, os("a2"), false), Ok(None));
        assert_eq!(n.child(b, os("a2")), Ok(a));
        assert_eq!(n.node(a).unwrap().parent, b);
        assert_eq!(
            n.rename(b, os("a2"), b, os("c"), false),
            Ok(Some(c)),
            "an empty directory is replaced"
        );
        assert_eq!(n.child(b, os("c")), Ok(a));
        assert!(!n.node(c).unwrap().is_linked());
    }

    #[test]
    fn forget_removes_only_unused_nodes() {
        let mut n = ns();
        let d = n.insert(ROOT, os("d"), dir(), meta()).unwrap();
        n.node(d).unwrap().add_lookup();
        n.node(d).unwrap().add_lookup();
        n.rmdir(ROOT, os("d")).unwrap();
        assert!(n.forget(d, 1).is_none(), "still looked up");
        assert!(n.forget(d, 1).is_some());
        assert!(n.node(d).is_err());
    }
}
