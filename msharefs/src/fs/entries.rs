//! Names: lookup, creating regions and directories, removing and renaming
//! them, and freeing what nothing refers to any more.

use std::ffi::OsStr;
use std::sync::Arc;

use log::debug;
use mshare_uapi::Backing;
use nix::errno::Errno;
use parking_lot::RwLockWriteGuard;

use super::MshareFs;
use crate::backing::Memory;
use crate::fail::{ensure, Fail};
use crate::namespace::{Kind, Meta, Namespace, Removal};
use crate::region::Region;
use crate::request::{Attr, Caller, Ino, RenameFlags};

impl MshareFs {
    /// `lookup`.
    pub(super) fn do_lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr, Fail> {
        let ns = self.ns.read();
        self.entry_in(&ns, ns.child(parent, name)?)
    }

    /// A new, empty backing file of `kind` for inode `ino`, labelled `name`,
    /// that `meta`'s owner and mode decide access to.
    pub(super) fn make_backing(
        &self,
        kind: Backing,
        ino: Ino,
        name: &str,
        meta: &Meta,
    ) -> Result<Memory, Fail> {
        self.store
            .create(kind, ino.0, name, meta.owner())
            .map_err(|e| Fail::with(e, format!("cannot create {kind} backing memory: {e}")))
    }

    /// Creates a region named `name` in `parent` (no open, no lookup
    /// reference: the caller takes one when it replies with the entry).
    pub(super) fn new_region(
        &self,
        req: Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
    ) -> Result<(Ino, Arc<Region>), Fail> {
        // Refuse before making memory; insert checks again under the lock.
        self.ns.read().check_room(req.uid)?;
        let mut ns = self.ns.write();
        let shape = ns.shape_in(parent);
        let kind = self.store.effective(shape.backing(self.opts.backing));
        let ino = ns.next_ino();
        let meta = Meta::new(mode as u16, req.uid, req.gid);
        let memory = self.make_backing(kind, ino, &name.to_string_lossy(), &meta)?;
        let region = Arc::new(Region::new(ino, kind, shape, memory, &self.home));
        if let Err(f) = ns.insert(parent, name, Kind::Region(region.clone()), meta) {
            let memory = region.take_memory();
            drop(ns);
            self.free(&region, memory);
            return Err(f);
        }
        self.made(ns, parent, name, ino, Removal::File)?;
        self.watch_transient(&region, Some(req.pid));
        debug!(
            "created region {name:?} (inode {}, {kind}) for uid {}",
            ino.0, req.uid
        );
        Ok((ino, region))
    }

    /// `mknod`: regular files only.
    pub(super) fn do_mknod(
        &self,
        req: Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
    ) -> Result<Attr, Fail> {
        ensure(
            mode & libc::S_IFMT == libc::S_IFREG,
            Errno::EPERM,
            "only regular files (regions) can be created",
        )?;
        let (ino, _) = self.new_region(req, parent, name, mode)?;
        self.entry_of(ino)
    }

    /// `mkdir`.
    pub(super) fn do_mkdir(
        &self,
        req: Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
    ) -> Result<Attr, Fail> {
        let meta = Meta::new(mode as u16, req.uid, req.gid);
        let mut ns = self.ns.write();
        let ino = ns.insert(parent, name, Kind::Dir(Default::default()), meta)?;
        self.made(ns, parent, name, ino, Removal::Dir)?;
        self.entry_of(ino)
    }

    /// Records a node just made as `name` in `parent`, under the lock that
    /// made it; where the state file cannot hold it, takes it back and
    /// fails, so that no region exists that a restart would lose.
    fn made(
        &self,
        ns: RwLockWriteGuard<'_, Namespace>,
        parent: Ino,
        name: &OsStr,
        ino: Ino,
        removal: Removal,
    ) -> Result<(), Fail> {
        let res = self.persist(&ns, &[ino, parent]);
        drop(ns);
        if let Err(f) = res {
            let _ = self.do_remove(parent, name, removal);
            return Err(f);
        }
        Ok(())
    }

    /// `unlink` or `rmdir`.
    pub(super) fn do_remove(
        &self,
        parent: Ino,
        name: &OsStr,
        removal: Removal,
    ) -> Result<(), Fail> {
        let ino = {
            let mut ns = self.ns.write();
            let ino = ns.child(parent, name)?;
            if ns.node(ino)?.region().is_some() {
                // Whoever learned its memory file's name must not open it.
                self.rekey_under(&ns, ino)?;
            }
            let ino = ns.remove(parent, name, removal)?;
            let _ = self.persist(&ns, &[ino, parent]);
            ino
        };
        self.reap(ino);
        Ok(())
    }

    /// `rename` (`RENAME_NOREPLACE` is the only flag).
    pub(super) fn do_rename(
        &self,
        parent: Ino,
        name: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Fail> {
        ensure(
            flags.only(RenameFlags::NOREPLACE),
            Errno::EINVAL,
            "only RENAME_NOREPLACE is supported",
        )?;
        let noreplace = flags.has(RenameFlags::NOREPLACE);
        let replaced = {
            let mut ns = self.ns.write();
            ensure(
                ns.shape_in(parent) == ns.shape_in(newparent),
                Errno::EXDEV,
                "regions cannot move into or out of anon/ and shm/",
            )?;
            let replaced = ns.rename(parent, name, newparent, newname, noreplace)?;
            let moved = ns.child(newparent, newname)?;
            // New directories above decide who reaches what moved, and a
            // region replaced is removed: no old name opens them.
            let mut res = self.rekey_under(&ns, moved);
            if let Some(t) = replaced.filter(|_| res.is_ok()) {
                res = self.rekey_under(&ns, t);
            }
            let mut changed = vec![moved, parent, newparent];
            changed.extend(replaced);
            let _ = self.persist(&ns, &changed);
            res?;
            replaced
        };
        if let Some(t) = replaced {
            self.reap(t);
        }
        Ok(())
    }

    /// `forget`: drops kernel lookup references; frees a region nothing
    /// refers to any more.
    pub(super) fn do_forget(&self, ino: Ino, nlookup: u64) {
        let gone = self.ns.write().forget(ino, nlookup);
        if let Some(r) = gone.as_ref().and_then(|n| n.region()) {
            self.free(r, r.take_memory());
        }
    }

    /// Frees a region's memory once no name and no open handle remain, and
    /// drops the inode once the kernel has forgotten it too.
    pub(super) fn reap(&self, ino: Ino) {
        let mut freed = None;
        {
            let mut ns = self.ns.write();
            if let Ok(node) = ns.node(ino) {
                if let Some(r) = node.region() {
                    if !node.is_linked() && r.opens() == 0 {
                        freed = Some((r.clone(), r.take_memory()));
                    }
                }
            }
            if freed.is_some() {
                // Its memory goes now: it no longer counts against the
                // limits, though the kernel may still refer to it.
                ns.uncount(ino);
            }
            ns.remove_if_unused(ino);
        }
        if let Some((r, memory)) = freed {
            if memory.is_some() {
                debug!("region inode {}: memory released", ino.0);
            }
            self.free(&r, memory);
        }
    }

    /// The region's name for a log line (scans the parent directory).
    pub(super) fn region_name(&self, ino: Ino) -> String {
        let ns = self.ns.read();
        match ns.node(ino) {
            Ok(n) if n.is_linked() => format!("region '{}'", n.name.to_string_lossy()),
            Ok(_) => format!("region inode {} (unlinked)", ino.0),
            Err(_) => format!("inode {}", ino.0),
        }
    }
}
