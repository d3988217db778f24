//! Attributes: what `getattr` reports and what `setattr` may change.

use std::time::SystemTime;

use mshare_uapi::{Backing, HUGE_PAGE_SIZE, PAGE_SIZE};
use nix::errno::Errno;

use super::MshareFs;
use crate::fail::{ensure, Fail};
use crate::namespace::{Kind, Namespace, Node, INFO};
use crate::request::{Attr, AttrChange, Caller, Ino, SetTime};

impl MshareFs {
    /// The attributes of `node`.
    pub(super) fn attr(&self, ino: Ino, node: &Node) -> Attr {
        let (size, blocks, blksize) = match &node.kind {
            Kind::Dir(_) => (0, 0, PAGE_SIZE),
            Kind::Info => (self.info_text.len() as u64, 0, PAGE_SIZE),
            Kind::Region(r) => {
                let (size, blocks) = r.size_and_blocks();
                let blksize = match r.kind {
                    Backing::Hugetlb => HUGE_PAGE_SIZE,
                    _ => PAGE_SIZE,
                };
                (size, blocks, blksize)
            }
        };
        let m = &node.meta;
        Attr {
            ino,
            size,
            blocks,
            atime: m.atime,
            mtime: m.mtime,
            ctime: m.ctime,
            kind: node.file_type(),
            perm: m.perm,
            nlink: node.nlink(),
            uid: m.uid,
            gid: m.gid,
            blksize: blksize as u32,
        }
    }

    /// `getattr`.
    pub(super) fn attr_of(&self, ino: Ino) -> Result<Attr, Fail> {
        let ns = self.ns.read();
        Ok(self.attr(ino, ns.node(ino)?))
    }

    /// Attributes for an entry reply, taking the lookup reference the
    /// kernel will later `forget`.
    pub(super) fn entry_of(&self, ino: Ino) -> Result<Attr, Fail> {
        self.entry_in(&self.ns.read(), ino)
    }

    /// [`Self::entry_of`] under a namespace lock the caller holds.
    pub(super) fn entry_in(&self, ns: &Namespace, ino: Ino) -> Result<Attr, Fail> {
        let node = ns.node(ino)?;
        node.add_lookup();
        Ok(self.attr(ino, node))
    }

    /// `setattr`: chmod, chown, truncate (sizes an unsized region), utimens.
    pub(super) fn do_setattr(&self, req: Caller, ino: Ino, ch: AttrChange) -> Result<Attr, Fail> {
        let region = {
            let ns = self.ns.read();
            let node = ns.node(ino)?;
            if ino == INFO {
                ensure(ch.is_empty(), Errno::EPERM, "mshare_info cannot be changed")?;
            }
            if !self.opts.default_permissions && req.uid != 0 {
                // Without default_permissions the kernel checks nothing.
                ensure(
                    ch.uid.is_none_or(|u| u == node.meta.uid),
                    Errno::EPERM,
                    "only root may chown",
                )?;
                ensure(
                    (ch.mode.is_none() && ch.gid.is_none()) || req.uid == node.meta.uid,
                    Errno::EPERM,
                    "only the owner may chmod or chgrp",
                )?;
            }
            node.region().cloned()
        };
        if let Some(size) = ch.size {
            match &region {
                Some(r) => r.truncate(size)?,
                None => return Err(Fail::new(Errno::EISDIR, "truncate of a directory")),
            }
        }
        let mut ns = self.ns.write();
        let node = ns.node_mut(ino)?;
        let now = SystemTime::now();
        let at = |t: SetTime| match t {
            SetTime::At(t) => t,
            SetTime::Now => now,
        };
        if let Some(m) = ch.mode {
            node.meta.perm = (m & 0o7777) as u16;
        }
        if let Some(u) = ch.uid {
            node.meta.uid = u;
        }
        if let Some(g) = ch.gid {
            node.meta.gid = g;
        }
        if let Some(t) = ch.atime {
            node.meta.atime = at(t);
        }
        if let Some(t) = ch.mtime {
            node.meta.mtime = at(t);
        }
        if ch.size.is_some() {
            node.meta.mtime = now;
        }
        node.meta.ctime = now;
        let _ = self.persist(&ns, &[ino]);
        if ch.mode.is_some() || ch.uid.is_some() || ch.gid.is_some() {
            self.rekey_under(&ns, ino)?;
        }
        Ok(self.attr(ino, ns.node(ino)?))
    }
}
