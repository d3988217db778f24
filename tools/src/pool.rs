//! `msharectl pool`: the hugetlb pool, as the kernel counts it and as the
//! server manages it.

use std::path::Path;

use mshare_uapi::{
    PoolPolicy, PoolStatus, Shortfall, HUGE_PAGES_SYSFS as SYSFS, HUGE_PAGE_SIZE, POOL_XATTR,
    RESERVE_XATTR,
};
use rustix::fs::XattrFlags;
use serde::Serialize;

use crate::procfs;

/// The pool, in 2 MiB pages.
#[derive(Debug, Serialize)]
pub struct Pool {
    /// Bytes per huge page.
    pub page_size: u64,
    /// `nr_hugepages`.
    pub total: u64,
    /// `free_hugepages`.
    pub free: u64,
    /// `resv_hugepages`: free pages promised to mappings already made.
    pub reserved: u64,
    /// `surplus_hugepages`: pages beyond the persistent pool, which go when
    /// they are freed.
    pub surplus: u64,
    /// `auto` or `manual` (the mount's `hugetlb_pool=`).
    #[serde(serialize_with = "policy_name")]
    pub policy: PoolPolicy,
    /// The most the server grows the pool to (`hugetlb_max=`).
    pub max: u64,
    /// Pages the server added and will give back.
    pub ours: u64,
    /// Pages that regions kept with no server hold (`msharectl kept`).
    pub kept: u64,
}

/// Why the pool cannot be read or reserved.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A kernel counter could not be read.
    #[error("reading {SYSFS}: {0}")]
    Sysfs(std::io::Error),
    /// The server did not say how it manages the pool.
    #[error("{path}: reading {POOL_XATTR}: {why}")]
    Status {
        /// The mount.
        path: String,
        /// Why.
        why: String,
    },
    /// The server refused to grow the pool.
    #[error("reserving {size} bytes of huge pages: {why}")]
    Reserve {
        /// What was asked.
        size: u64,
        /// Why it was refused.
        why: String,
    },
}

/// The server's [`PoolStatus`] (the root's `user.mshare.hugetlb_pool`).
pub fn status(mount: &Path) -> Result<PoolStatus, PoolError> {
    let err = |why: String| PoolError::Status {
        path: mount.display().to_string(),
        why,
    };
    let mut buf = [0u8; 256];
    let n = rustix::fs::getxattr(mount, POOL_XATTR, &mut buf).map_err(|e| err(e.to_string()))?;
    std::str::from_utf8(&buf[..n])
        .map_err(|e| err(e.to_string()))?
        .parse()
        .map_err(err)
}

/// The pool now.
pub fn read(mount: &Path) -> Result<Pool, PoolError> {
    let count = |name: &str| procfs::number(Path::new(SYSFS).join(name)).map_err(PoolError::Sysfs);
    let status = status(mount)?;
    Ok(Pool {
        page_size: HUGE_PAGE_SIZE,
        total: count("nr_hugepages")?,
        free: count("free_hugepages")?,
        reserved: count("resv_hugepages")?,
        surplus: count("surplus_hugepages")?,
        policy: status.policy,
        max: status.max_pages,
        ours: status.ours,
        kept: crate::kept::orphans().iter().map(|k| k.huge_pages).sum(),
    })
}

/// Has the server grow the pool so that `size` bytes are free (root).
pub fn reserve(mount: &Path, size: u64) -> Result<(), PoolError> {
    rustix::fs::setxattr(
        mount,
        RESERVE_XATTR,
        size.to_string().as_bytes(),
        XattrFlags::empty(),
    )
    .map_err(|e| PoolError::Reserve {
        size,
        why: match e {
            rustix::io::Errno::PERM => {
                "only root may, and only under hugetlb_pool=auto (mount option)".into()
            }
            rustix::io::Errno::NOMEM => match read(mount) {
                Ok(p) => shortfall(&p, size.div_ceil(HUGE_PAGE_SIZE)),
                Err(_) => e.to_string(),
            },
            e => e.to_string(),
        },
    })
}

/// What to tell a user whose hugetlb allocation of `need` pages failed,
/// given the pool as it is now: the server's own wording where the policy
/// or the ceiling refused, else that the kernel could not grow the pool.
pub fn shortfall(p: &Pool, need: u64) -> String {
    let available = p.free.saturating_sub(p.reserved);
    let refused = match p.policy {
        PoolPolicy::Manual => Some(p.total),
        PoolPolicy::Auto if p.total + need.saturating_sub(available) > p.max => {
            Some(p.max.max(p.total))
        }
        PoolPolicy::Auto => None,
    };
    match refused {
        Some(limit) => Shortfall {
            need,
            available,
            limit,
            policy: p.policy,
        }
        .to_string(),
        None => format!(
            "needs {need} huge pages, {available} are free and the kernel could not grow the \
             pool (memory in use or fragmented): free memory, or reserve ahead with \
             `msharectl pool --reserve`"
        ),
    }
}

fn policy_name<S: serde::Serializer>(p: &PoolPolicy, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_str())
}

impl Pool {
    /// Tab-separated `key value` lines.
    pub fn table(&self) -> String {
        format!(
            "page_size\t{}\ntotal\t{}\nfree\t{}\nreserved\t{}\nsurplus\t{}\npolicy\t{}\nmax\t{}\nours\t{}\nkept\t{}\n",
            self.page_size,
            self.total,
            self.free,
            self.reserved,
            self.surplus,
            self.policy,
            self.max,
            self.ours,
            self.kept
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(policy: PoolPolicy, total: u64, free: u64, max: u64) -> Pool {
        Pool {
            page_size: HUGE_PAGE_SIZE,
            total,
            free,
            reserved: 0,
            surplus: 0,
            policy,
            max,
            ours: 0,
            kept: 0,
        }
    }

    #[test]
    fn shortfalls_name_the_numbers_and_the_way_out() {
        let ceiling = shortfall(&pool(PoolPolicy::Auto, 100, 10, 300), 512);
        assert!(
            ceiling.starts_with("needs 512 huge pages, 10 are free and the pool can grow to 300")
                && ceiling.contains("raise hugetlb_max"),
            "{ceiling}"
        );
        let kernel = shortfall(&pool(PoolPolicy::Auto, 0, 0, 6000), 512);
        assert!(kernel.contains("could not grow"), "{kernel}");
        let manual = shortfall(&pool(PoolPolicy::Manual, 8, 8, 6000), 512);
        assert!(manual.contains("8 of the pool's 8 are free"), "{manual}");
    }
}
