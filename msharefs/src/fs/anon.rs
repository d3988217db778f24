//! The directories the preload library uses ([`ANON_DIR`], [`SHM_DIR`]) and
//! their regions, which live as long as the program that uses them
//! ([`crate::transient`]): a region of [`ANON_DIR`] until no process maps
//! it; one of [`SHM_DIR`] until its creator and the creator's parent are
//! gone, no process maps it and no descriptor of it is open.

use std::ffi::OsStr;
use std::io;
use std::sync::{Arc, Weak};

use log::{debug, info, warn};
use mshare_uapi::{ANON_DIR, SHM_DIR};

use super::MshareFs;
use crate::fail::Fail;
use crate::namespace::{Kind, Meta, Removal, ROOT};
use crate::region::{Region, Shape};
use crate::request::Ino;
use crate::transient::Watcher;

impl MshareFs {
    /// Makes [`ANON_DIR`] and [`SHM_DIR`] in the root if they are missing
    /// (owned by the root's owner, mode 1777 like `/dev/shm`), starts
    /// watching the regions of [`ANON_DIR`] and looks at once for the
    /// processes that map those a previous server left.
    pub fn start_preload_support(self: &Arc<Self>) -> io::Result<()> {
        let weak: Weak<MshareFs> = Arc::downgrade(self);
        let watcher = Watcher::start(Box::new(move |ino| {
            weak.upgrade().is_some_and(|fs| fs.remove_unmapped(ino))
        }))?;
        let _ = self.anon.set(watcher);
        for name in [ANON_DIR, SHM_DIR] {
            if let Err(f) = self.preload_dir(OsStr::new(name)) {
                warn!("cannot make the directory {name}/ for the preload library: {f}");
            }
        }
        let kept: Vec<(Ino, Arc<Region>)> = {
            let ns = self.ns.read();
            let mut found = Vec::new();
            for dir in [ANON_DIR, SHM_DIR] {
                let Ok(dir) = ns.child(ROOT, OsStr::new(dir)) else {
                    continue;
                };
                let _ = ns.list(dir, 2, &mut |e| {
                    if let Some(r) = ns.node(e.ino).ok().and_then(|n| n.region()) {
                        found.push((e.ino, r.clone()));
                    }
                    false
                });
            }
            found
        };
        if !kept.is_empty() {
            info!(
                "{ANON_DIR}/: looking for the processes that map {} kept regions",
                kept.len()
            );
        }
        for (ino, region) in kept {
            self.watch_transient(&region, None);
            debug!("watching kept region inode {}", ino.0);
        }
        Ok(())
    }

    /// Makes directory `name` in the root, if missing. It does not count
    /// against the limits: the server made it, not a user.
    fn preload_dir(&self, name: &OsStr) -> Result<(), Fail> {
        let mut ns = self.ns.write();
        if let Ok(ino) = ns.child(ROOT, name) {
            ns.uncount(ino);
            return Ok(());
        }
        let root = ns.node(ROOT)?.meta;
        let meta = Meta::new(0o1777, root.uid, root.gid);
        let ino = ns.insert(ROOT, name, Kind::Dir(Default::default()), meta)?;
        ns.uncount(ino);
        self.persist(&ns, &[ino, ROOT])
    }

    /// Tells the watcher the mount's device (mappings of region files show
    /// it in `/proc/PID/maps`).
    pub fn set_mount_dev(&self, dev: (u32, u32)) {
        if let Some(w) = self.anon.get() {
            w.set_mount_dev(dev);
        }
    }

    /// Watches `region`, if it is one of [`ANON_DIR`] or [`SHM_DIR`], as
    /// made by thread `tid` (`None`: look for its mappers now).
    pub(super) fn watch_transient(&self, region: &Region, tid: Option<u32>) {
        if region.shape == Shape::Aligned {
            return;
        }
        let (Some(w), Ok(memory)) = (self.anon.get(), super::xattr::memory_id(region)) else {
            return;
        };
        // A shm object outlives its creator while the creator's parent
        // (its program) runs; anonymous memory lives by its mappings.
        let with_parent = region.shape == Shape::File;
        w.watch(region.id, memory, tid.filter(|&t| t != 0), with_parent);
    }

    /// `MSHAREFS_UNMAPPED`: look now for the processes that map `ino`.
    pub(super) fn unmapped(&self, ino: Ino) {
        if let Some(w) = self.anon.get() {
            w.recheck(ino, true);
        }
    }

    /// The last open of `region` was closed: a region of [`SHM_DIR`] may
    /// be free to go.
    pub(super) fn closed_transient(&self, region: &Region) {
        if let (Shape::File, Some(w)) = (region.shape, self.anon.get()) {
            w.recheck(region.id, false);
        }
    }

    /// Removes region `ino`, whose creator is gone and which no process
    /// maps any more, if it is still linked and not held open; true if it
    /// is held open (watch it on).
    fn remove_unmapped(&self, ino: Ino) -> bool {
        let named = {
            let ns = self.ns.read();
            let Some(n) = ns.node(ino).ok().filter(|n| n.is_linked()) else {
                return false;
            };
            match n.region() {
                Some(r) if r.shape == Shape::File && r.opens() > 0 => return true,
                Some(r) if r.shape != Shape::Aligned => (n.parent, n.name.clone(), r.shape),
                _ => return false,
            }
        };
        let (parent, name, shape) = named;
        let dir = if shape == Shape::Anon {
            ANON_DIR
        } else {
            SHM_DIR
        };
        match self.do_remove(parent, &name, Removal::File) {
            Ok(()) => debug!(
                "{dir}/{}: removed, no process uses it",
                name.to_string_lossy()
            ),
            Err(f) => warn!("{dir}/{}: cannot remove: {f}", name.to_string_lossy()),
        }
        false
    }
}
