//! Extended attributes: `user.mshare.backing`, which names a region's
//! backing kind and, on a fresh region, changes it (on the root: the
//! backing of regions created without naming one); `user.mshare.attach`,
//! what libmshare needs to attach a region (its start, size, kind and
//! memory file); `user.mshare.memory`, where a region's memory lives (device
//! and inode); and on the root the hugetlb pool
//! (`user.mshare.hugetlb_pool`, and `user.mshare.hugetlb_reserve`, which root
//! sets to grow it).

use std::ffi::OsStr;
use std::sync::Arc;

use log::debug;
use mshare_uapi::{
    parse_size, Attach, Backing, MemoryId, ATTACH_XATTR, BACKING_XATTR, MEMORY_XATTR, POOL_XATTR,
    RESERVE_XATTR,
};
use nix::errno::Errno;

use super::MshareFs;
use crate::fail::{ensure, Fail};
use crate::namespace::{MAY_READ, ROOT};
use crate::region::Region;
use crate::request::{Caller, Ino};

impl MshareFs {
    /// `getxattr`.
    pub(super) fn xattr_value(&self, req: Caller, ino: Ino, name: &OsStr) -> Result<Vec<u8>, Fail> {
        if name == ATTACH_XATTR {
            return self
                .attach_value(req, ino)
                .map(|a| a.to_string().into_bytes());
        }
        if ino == ROOT && name == POOL_XATTR {
            return Ok(self.home.pool.status().to_string().into_bytes());
        }
        if ino == ROOT && name == BACKING_XATTR {
            // The backing of regions created without naming one.
            let kind = self.store.effective(self.opts.backing);
            return Ok(kind.as_str().as_bytes().to_vec());
        }
        let region = self.ns.read().node(ino)?.region().cloned();
        match region {
            Some(r) if name == BACKING_XATTR => Ok(r.kind.as_str().as_bytes().to_vec()),
            Some(r) if name == MEMORY_XATTR => Ok(memory_id(&r)?.to_string().into_bytes()),
            _ => Err(Fail::new(Errno::ENODATA, "no such attribute")),
        }
    }

    /// `listxattr`: NUL-terminated names.
    pub(super) fn xattr_names(&self, ino: Ino) -> Result<Vec<u8>, Fail> {
        let names: &[&str] = if ino == ROOT {
            &[BACKING_XATTR, POOL_XATTR]
        } else if self.ns.read().node(ino)?.region().is_some() {
            &[BACKING_XATTR, ATTACH_XATTR, MEMORY_XATTR]
        } else {
            &[]
        };
        Ok(names.iter().flat_map(|n| n.bytes().chain([0])).collect())
    }

    /// `user.mshare.attach` of region `ino`: its start, size, kind and
    /// memory file. The kernel lets only callers with read permission on
    /// the region and search permission above it read a `user.*` attribute
    /// when it checks modes (`default_permissions`); without it the server
    /// checks the same, with the caller's uid and primary gid.
    fn attach_value(&self, req: Caller, ino: Ino) -> Result<Attach, Fail> {
        // Under the namespace lock: a chmod or rename renames the memory
        // file under the write lock, so no name older than it is read.
        let ns = self.ns.read();
        let region = ns.node(ino)?.region().cloned();
        let region = region.ok_or(Fail::new(Errno::ENODATA, "not a region"))?;
        if !self.opts.default_permissions {
            ensure(
                ns.reachable(ino, req.uid, req.gid, MAY_READ),
                Errno::EACCES,
                "user.mshare.attach needs read permission on the region",
            )?;
        }
        let info = region.info()?;
        let path = region
            .memory_name()
            .and_then(|name| self.store.path(region.kind, &name));
        Ok(Attach {
            start: info.start,
            size: info.size,
            backing: region.kind,
            path,
        })
    }

    /// `setxattr`: the backing of a region, or root's pool reservation.
    pub(super) fn do_setxattr(
        &self,
        req: Caller,
        ino: Ino,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> Result<(), Fail> {
        if ino != ROOT || name != RESERVE_XATTR {
            return self.set_backing(req, ino, name, value, flags);
        }
        ensure(
            req.uid == 0,
            Errno::EPERM,
            "only root may grow the hugetlb pool",
        )?;
        let bytes = parse_size(value_text(value))
            .map_err(|_| Fail::new(Errno::EINVAL, "hugetlb_reserve takes a size, e.g. 4G"))?;
        self.home.pool.reserve(bytes)
    }

    /// `setxattr(user.mshare.backing)`: gives a fresh (unsized, unopened)
    /// region a new, empty backing file of another kind.
    fn set_backing(
        &self,
        req: Caller,
        ino: Ino,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> Result<(), Fail> {
        ensure(
            name == BACKING_XATTR,
            Errno::EOPNOTSUPP,
            "only user.mshare.backing can be set",
        )?;
        ensure(
            flags & libc::XATTR_CREATE == 0,
            Errno::EEXIST,
            "user.mshare.backing always exists",
        )?;
        let kind: Backing = value_text(value)
            .parse()
            .map_err(|_| Fail::new(Errno::EINVAL, "backing must be thp, shmem or hugetlb"))?;
        let kind = self.store.effective(kind);
        let old = self.ns.read().node(ino)?.region().cloned();
        let old = old.ok_or(Fail::new(Errno::EOPNOTSUPP, "not a region"))?;
        if old.kind == kind {
            return Ok(());
        }
        ensure(
            old.is_fresh(),
            Errno::EBUSY,
            "the backing of an open or sized region cannot change",
        )?;
        ensure(
            old.shape.backing(kind) == kind,
            Errno::EINVAL,
            "a region of shm/ cannot be hugetlb-backed",
        )?;
        let meta = self.ns.read().node(ino)?.meta;
        let memory = self.make_backing(kind, ino, &self.region_name(ino), &meta)?;
        let new = Arc::new(Region::new(ino, kind, old.shape, memory, &self.home));
        let replaced = {
            let mut ns = self.ns.write();
            let res = ns.replace_region(ino, &old, new.clone());
            if res.is_ok() {
                let _ = self.persist(&ns, &[ino]);
            }
            res
        };
        if let Err(f) = replaced {
            self.free(&new, new.take_memory());
            return Err(f);
        }
        self.free(&old, old.take_memory());
        self.watch_transient(&new, Some(req.pid));
        debug!("region inode {}: backing is now {kind}", ino.0);
        Ok(())
    }
}

/// An attribute value as text, without the NUL or newline that tools
/// add (`""` if it is not UTF-8, which no value accepts).
fn value_text(value: &[u8]) -> &str {
    std::str::from_utf8(value)
        .unwrap_or("")
        .trim_end_matches(['\0', '\n'])
}

/// Where `region`'s memory lives: its backing file's device and inode.
pub(super) fn memory_id(region: &Region) -> Result<MemoryId, Fail> {
    let st = nix::sys::stat::fstat(region.file()?.as_ref())?;
    Ok(MemoryId {
        major: libc::major(st.st_dev),
        minor: libc::minor(st.st_dev),
        ino: st.st_ino,
    })
}
