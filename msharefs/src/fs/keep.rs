//! Keeping the namespace in the state file, adopting what a previous server
//! left, and removing a region's kept memory when it is freed.

use std::collections::HashSet;
use std::sync::Arc;

use log::{error, info, warn};
use mshare_uapi::Backing;

use super::MshareFs;
use crate::backing::Owner;
use crate::fail::Fail;
use crate::namespace::{Kind, Namespace, ROOT};
use crate::region::{Region, Released, Shape};
use crate::request::Ino;
use crate::state::record::{NodeKind, Record};
use crate::state::Snapshot;

/// What adoption found.
#[derive(Debug, Default)]
pub struct Adopted {
    /// Regions adopted, by `(kind, inode)`: their files stay.
    pub regions: HashSet<(Backing, u64)>,
    /// Directories adopted.
    pub dirs: usize,
    /// Regions recorded whose memory was not there.
    pub lost: usize,
    /// Regions whose memory is there but could not be opened (not
    /// adopted, nothing recorded: the server must not serve).
    pub refused: Vec<String>,
}

impl MshareFs {
    /// Records nodes `inos` as they are in `ns` now; call it with the
    /// namespace's write lock held, so records follow the order of changes.
    /// An error means the state file does not hold the change yet (it is
    /// logged, and written with the next change that can be written).
    pub(super) fn persist(&self, ns: &Namespace, inos: &[Ino]) -> Result<(), Fail> {
        let mut res = Ok(());
        for &ino in inos {
            if let Err(e) = self.home.journal.put(ns.record(ino)) {
                res = Err(Fail::with(e, format!("cannot write the state file: {e}")));
            }
        }
        res
    }

    /// Gives every region at or below `ino` a new memory file name, with
    /// its owner and mode, after a change of what decides who may reach it
    /// (a name learned before opens nothing from now on). Call it with the
    /// namespace's write lock held, so no attach reads a name in between.
    /// A failure is logged (error level) and returned.
    pub(super) fn rekey_under(&self, ns: &Namespace, ino: Ino) -> Result<(), Fail> {
        let mut res = Ok(());
        for (region, meta) in ns.regions_under(ino) {
            if let Err(f) = region.rekey(&self.store, meta.owner()) {
                error!("{}", f.why);
                res = Err(f);
            }
        }
        res
    }

    /// Frees what `take_memory` took from `region`: removes its kept file,
    /// then closes the server's descriptor (outside the namespace lock:
    /// closing the last one of a large file frees its pages right there).
    pub(super) fn free(&self, region: &Region, memory: Option<Released>) {
        let Some(Released { file: memory, name }) = memory else {
            return;
        };
        if let Some(name) = name {
            self.store.discard(region.kind, &name);
        }
        if region.kind == Backing::Hugetlb {
            // Pages still mapped by clients become surplus and go with the
            // last mapping.
            self.home.pool.release(|| {
                let bytes = crate::backing::allocated(memory.as_ref());
                drop(memory);
                ((), crate::hugepool::pages_for(bytes))
            });
        }
    }

    /// Rebuilds the namespace from what a previous server left (`snap`):
    /// every recorded region whose memory is there is adopted with its
    /// name, owner, mode, times, layout and objects.
    pub fn adopt(&self, snap: &Snapshot) -> Adopted {
        let mut found = Adopted::default();
        let mut nodes = Vec::new();
        let mut files = self.store.kept_files();
        let root_uid = self.ns.read().node(ROOT).map_or(0, |n| n.meta.uid);
        let shape_in = |dir: u64| match snap.nodes.get(&dir) {
            Some(d) => Shape::of_dir(
                &d.name,
                d.ino != ROOT.0 && d.parent == ROOT.0,
                d.uid == root_uid,
            ),
            None => Shape::Aligned,
        };
        for rec in snap.nodes.values() {
            let kind = match rec.kind {
                NodeKind::Dir => {
                    found.dirs += 1;
                    Kind::Dir(Default::default())
                }
                NodeKind::Region(kind) => match files
                    .remove(&(kind, rec.ino))
                    .ok_or(nix::errno::Errno::ENOENT)
                    .and_then(|name| self.store.open_kept(kind, &name, owner_of(rec)))
                {
                    Ok(file) => {
                        found.regions.insert((kind, rec.ino));
                        Kind::Region(Arc::new(Region::adopt(
                            Ino(rec.ino),
                            (kind, shape_in(rec.parent)),
                            file,
                            &self.home,
                            snap.layouts.get(&rec.ino),
                        )))
                    }
                    Err(e) if e != nix::errno::Errno::ENOENT => {
                        found.regions.insert((kind, rec.ino));
                        found
                            .refused
                            .push(format!("{:?} (inode {}, {kind}): {e}", rec.name, rec.ino));
                        continue;
                    }
                    Err(e) => {
                        error!(
                            "region {:?} (inode {}, {kind}) is lost: its memory cannot be opened in the state directory ({e})",
                            rec.name, rec.ino
                        );
                        found.lost += 1;
                        let _ = self.home.journal.put(Record::Gone(rec.ino));
                        continue;
                    }
                },
            };
            nodes.push((rec.clone(), kind));
        }
        let mut ns = self.ns.write();
        for moved in ns.adopt(nodes, snap.next_ino) {
            warn!("{moved}");
        }
        if !snap.nodes.is_empty() {
            info!(
                "adopted {} regions and {} directories from the previous server{}",
                found.regions.len(),
                found.dirs,
                match found.lost {
                    0 => String::new(),
                    n => format!("; {n} lost"),
                }
            );
        }
        found
    }
}

/// Who may open the memory file of the region `rec` records.
fn owner_of(rec: &crate::state::record::NodeRec) -> Owner {
    Owner {
        perm: rec.perm,
        uid: rec.uid,
        gid: rec.gid,
    }
}
