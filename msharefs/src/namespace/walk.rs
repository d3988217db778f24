//! Questions about a node and what lies above or below it: the regions
//! under a directory, and whether a caller may reach and use a node.

use std::sync::Arc;

use super::{Kind, Meta, Namespace, ROOT};
use crate::backing::Owner;
use crate::region::Region;
use crate::request::Ino;

/// Read permission (`R_OK`).
pub const MAY_READ: u16 = 4;
/// Search (execute) permission (`X_OK`).
const MAY_EXEC: u16 = 1;

/// Whether `meta` gives `uid`/`gid` the `mask` bits (of `R_OK`, `W_OK`,
/// `X_OK`), as the kernel's `generic_permission` decides for a caller
/// whose only group is `gid` (a FUSE request carries no supplementary
/// groups). Root may do anything but execute a file no one may execute.
pub fn permits(meta: &Meta, uid: u32, gid: u32, mask: u16) -> bool {
    if uid == 0 {
        return true;
    }
    let bits = if uid == meta.uid {
        meta.perm >> 6
    } else if gid == meta.gid {
        meta.perm >> 3
    } else {
        meta.perm
    } & 7;
    bits & mask == mask
}

impl Meta {
    /// Who may open the memory file of a region with this metadata.
    pub fn owner(&self) -> Owner {
        Owner {
            perm: self.perm,
            uid: self.uid,
            gid: self.gid,
        }
    }
}

impl Namespace {
    /// Every region at or below `ino` (which is linked), with its metadata.
    pub fn regions_under(&self, ino: Ino) -> Vec<(Arc<Region>, Meta)> {
        let mut found = Vec::new();
        let mut todo = vec![ino];
        while let Some(i) = todo.pop() {
            let Ok(node) = self.node(i) else { continue };
            match &node.kind {
                Kind::Region(r) => found.push((r.clone(), node.meta)),
                Kind::Dir(d) => todo.extend(d.after(0).map(|(_, _, child)| child)),
                Kind::Info => {}
            }
        }
        found
    }

    /// Whether `uid`/`gid` may search every directory from the root down
    /// to `ino`'s parent and has `mask` on `ino` itself: what a path walk
    /// and the kernel's check of the node would allow (for mounts without
    /// `default_permissions`, where the kernel checks nothing).
    pub fn reachable(&self, ino: Ino, uid: u32, gid: u32, mask: u16) -> bool {
        let Ok(node) = self.node(ino) else {
            return false;
        };
        if !node.is_linked() || !permits(&node.meta, uid, gid, mask) {
            return false;
        }
        let mut dir = node.parent;
        let mut at = ino;
        while at != ROOT {
            let Ok(d) = self.node(dir) else { return false };
            if !permits(&d.meta, uid, gid, MAY_EXEC) {
                return false;
            }
            at = dir;
            dir = d.parent;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_like_generic_permission() {
        let m = Meta::new(0o640, 1000, 100);
        assert!(permits(&m, 1000, 5, MAY_READ | 2));
        assert!(permits(&m, 7, 100, MAY_READ));
        assert!(!permits(&m, 7, 100, 2), "group may not write");
        assert!(!permits(&m, 7, 5, MAY_READ), "others nothing");
        assert!(permits(&m, 0, 0, MAY_READ | 2), "root");
        let w = Meta::new(0o200, 1000, 100);
        assert!(!permits(&w, 1000, 100, MAY_READ), "write-only");
    }
}
