//! The directories the preload library uses ([`ANON_DIR`], [`SHM_DIR`]) and
//! the regions of [`ANON_DIR`], removed once no process maps them
//! ([`crate::transient`]).

use std::ffi::OsStr;
use std::io;
use std::sync::{Arc, Weak};

use fuser::INodeNo;
use log::{debug, info, warn};
use mshare_uapi::{ANON_DIR, SHM_DIR};

use super::MshareFs;
use crate::fail::Fail;
use crate::namespace::{Kind, Meta, Removal, ROOT};
use crate::region::{Region, Shape};
use crate::transient::Watcher;

impl MshareFs {
    /// Makes [`ANON_DIR`] and [`SHM_DIR`] in the root if they are missing
    /// (owned by the root's owner, mode 1777 like `/dev/shm`), starts
    /// watching the regions of [`ANON_DIR`] and looks at once for the
    /// processes that map those a previous server left.
    pub fn start_preload_support(self: &Arc<Self>) -> io::Result<()> {
        let weak: Weak<MshareFs> = Arc::downgrade(self);
        let watcher = Watcher::start(Box::new(move |ino| {
            if let Some(fs) = weak.upgrade() {
                fs.remove_unmapped(ino);
            }
        }))?;
        let _ = self.anon.set(watcher);
        for name in [ANON_DIR, SHM_DIR] {
            if let Err(f) = self.preload_dir(OsStr::new(name)) {
                warn!("cannot make the directory {name}/ for the preload library: {f}");
            }
        }
        let kept: Vec<(INodeNo, Arc<Region>)> = {
            let ns = self.ns.read();
            let mut found = Vec::new();
            if let Ok(dir) = ns.child(ROOT, OsStr::new(ANON_DIR)) {
                let _ = ns.list(dir, 2, |ino, _, _, _| {
                    if let Some(r) = ns.node(ino).ok().and_then(|n| n.region()) {
                        found.push((ino, r.clone()));
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
            self.watch_anon(&region, None);
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

    /// Watches `region`, if it is one of [`ANON_DIR`], as made by thread
    /// `tid` (`None`: look for its mappers now).
    pub(super) fn watch_anon(&self, region: &Region, tid: Option<u32>) {
        if region.shape != Shape::Anon {
            return;
        }
        let (Some(w), Ok(memory)) = (self.anon.get(), super::xattr::memory_id(region)) else {
            return;
        };
        w.watch(region.id, memory, tid.filter(|&t| t != 0));
    }

    /// `MSHAREFS_UNMAPPED`: look now for the processes that map `ino`.
    pub(super) fn unmapped(&self, ino: INodeNo) {
        if let Some(w) = self.anon.get() {
            w.recheck(ino);
        }
    }

    /// Removes region `ino`, which no process maps any more, if it is still
    /// linked in [`ANON_DIR`].
    fn remove_unmapped(&self, ino: INodeNo) {
        let named = {
            let ns = self.ns.read();
            ns.node(ino)
                .ok()
                .filter(|n| n.is_linked() && n.region().is_some_and(|r| r.shape == Shape::Anon))
                .map(|n| (n.parent, n.name.clone()))
        };
        let Some((parent, name)) = named else { return };
        match self.do_remove(parent, &name, Removal::File) {
            Ok(()) => debug!(
                "{ANON_DIR}/{}: removed, no process maps it",
                name.to_string_lossy()
            ),
            Err(f) => warn!("{ANON_DIR}/{}: cannot remove: {f}", name.to_string_lossy()),
        }
    }
}
