//! Open file and directory handles: numbers from a counter that never
//! reuses one, each checked against its inode on every use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use parking_lot::Mutex;

use crate::fail::{ensure, Fail};
use crate::region::{Access, Region};
use crate::request::{Fh, Ino};

/// What a handle was opened on.
#[derive(Debug)]
pub enum Opened {
    /// A region file, with the access its open allowed.
    Region {
        /// The region.
        region: Arc<Region>,
        /// What the open allowed.
        access: Access,
    },
    /// `mshare_info`.
    Info,
    /// A directory (`readdir` reads the namespace at the kernel's cookie:
    /// a handle holds no copy of the listing).
    Dir,
}

#[derive(Debug)]
struct Handle {
    /// The inode it was opened on.
    ino: Ino,
    /// What it is.
    opened: Opened,
}

/// The handle table.
#[derive(Debug)]
pub struct Handles {
    /// Open handles by number.
    table: Mutex<HashMap<Fh, Handle>>,
    /// The next number.
    next: AtomicU64,
}

impl Handles {
    /// An empty table.
    pub fn new() -> Self {
        Handles {
            table: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// Registers a handle on `ino`.
    pub fn add(&self, ino: Ino, opened: Opened) -> Fh {
        let fh = Fh(self.next.fetch_add(1, Ordering::Relaxed));
        self.table.lock().insert(fh, Handle { ino, opened });
        fh
    }

    /// Forgets a handle; what it was opened on.
    pub fn remove(&self, fh: Fh) -> Option<Opened> {
        self.table.lock().remove(&fh).map(|h| h.opened)
    }

    /// The region and access of region handle `fh` on `ino`: `EBADF` for
    /// an unknown handle or one of another inode, `ENOTTY` for a handle
    /// that is not a region's.
    pub fn region(&self, fh: Fh, ino: Ino) -> Result<(Arc<Region>, Access), Fail> {
        let table = self.table.lock();
        let h = Self::checked(&table, fh, ino)?;
        match &h.opened {
            Opened::Region { region, access } => Ok((region.clone(), *access)),
            _ => Err(Fail::new(Errno::ENOTTY, "not a region")),
        }
    }

    /// Checks that `fh` is a directory handle on `ino`.
    pub fn check_dir(&self, fh: Fh, ino: Ino) -> Result<(), Fail> {
        let table = self.table.lock();
        match Self::checked(&table, fh, ino)?.opened {
            Opened::Dir => Ok(()),
            _ => Err(Fail::new(Errno::ENOTDIR, "not a directory handle")),
        }
    }

    fn checked(table: &HashMap<Fh, Handle>, fh: Fh, ino: Ino) -> Result<&Handle, Fail> {
        let h = table
            .get(&fh)
            .ok_or(Fail::new(Errno::EBADF, "unknown file handle"))?;
        ensure(
            h.ino == ino,
            Errno::EBADF,
            "file handle belongs to another inode",
        )?;
        Ok(h)
    }
}
