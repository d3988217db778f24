//! The file system: the one dispatcher ([`MshareFs::handle`], in
//! [`handle`]) and the handlers it runs for each request, whichever
//! transport brought it. Each returns `Result<_, Fail>`;
//! no transport's types reach them. They live by concern: [`entries`]
//! (names), [`open`] (open files and their I/O), [`attr`], [`ioctl`],
//! [`xattr`]; [`handles`] is the handle table, [`keep`] what outlives the
//! server, [`anon`] the regions of `anon/`.

mod anon;
mod attr;
mod entries;
mod handle;
mod handles;
mod ioctl;
mod keep;
mod open;
mod xattr;

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use log::{debug, warn};
use mshare_uapi::{BACKING_XATTR, PAGE_SIZE};
use nix::errno::Errno;
use parking_lot::RwLock;

use self::handles::{Handles, Opened};
use crate::backing::BackingStore;
use crate::fail::Fail;
use crate::hugepool::HugePool;
use crate::namespace::{Limits, Namespace, NAME_MAX};
use crate::options::{Options, Passthrough};
use crate::passthrough::{Device, PassthroughId};
use crate::placement::Placement;
use crate::region::Home;
use crate::request::{DirSink, Fh, Ino, Statfs};
use crate::state::Journal;

/// How long the kernel may cache a name.
pub const ENTRY_TTL: Duration = Duration::from_secs(1);
/// How long the kernel may cache attributes, so that an `open` needs no
/// `getattr` for its permission check. Changes the kernel does not see
/// (a size set by ioctl, objects made or freed) invalidate the cache at
/// once ([`MshareFs::attrs_changed`]); only `st_blocks` of memory faulted
/// in through mappings may lag by up to this long (`AT_STATX_FORCE_SYNC`
/// reads it fresh).
pub const ATTR_TTL: Duration = Duration::from_secs(1);

/// Tells the kernel about a change it did not make: the transport's
/// notification channel (fuser's `Notifier`).
pub trait Invalidate: Send + Sync + std::fmt::Debug {
    /// Drops the kernel's cached attributes of `ino`.
    fn inval_inode(&self, ino: Ino) -> io::Result<()>;
}

/// The msharefs file system.
#[derive(Debug)]
pub struct MshareFs {
    /// The tree of names and inodes.
    ns: RwLock<Namespace>,
    /// Open file and directory handles.
    handles: Handles,
    /// Makes backing files.
    store: BackingStore,
    /// What every region shares: the alignment and the address ranges of
    /// sized regions, the journal that records the namespace so that it
    /// outlives the server, and the hugetlb pool.
    home: Home,
    /// Mount options.
    opts: Options,
    /// Whether opens are answered with FUSE passthrough (until the kernel
    /// refuses it).
    passthrough: AtomicBool,
    /// What `mshare_info` reads as.
    info_text: String,
    /// Tells the kernel about changes it did not make (set once the
    /// session exists).
    invalidate: OnceLock<Box<dyn Invalidate>>,
    /// The connection's `/dev/fuse` descriptor, for passthrough
    /// registrations (set once the session exists).
    device: OnceLock<Device>,
    /// The mounter (the real uid, as the mount's `user_id=`): without
    /// `allow_other`, the only user served.
    owner: u32,
    /// Watches the regions of `anon/` ([`Self::start_preload_support`]).
    anon: OnceLock<Arc<crate::transient::Watcher>>,
}

impl MshareFs {
    /// A file system with these options and limits, its root owned by
    /// `uid`/`gid`.
    /// `store` makes the memory, `journal` records the namespace
    /// ([`Self::adopt`] takes over what a previous server left) and `pool`
    /// gives hugetlb pages.
    pub fn new(
        opts: Options,
        limits: Limits,
        (uid, gid): (u32, u32),
        store: BackingStore,
        (journal, pool): (Journal, Arc<HugePool>),
    ) -> Self {
        if store.effective(opts.backing) != opts.backing {
            warn!(
                "backing={} is not available; new regions use {}",
                opts.backing,
                store.effective(opts.backing)
            );
        }
        MshareFs {
            ns: RwLock::new(Namespace::new(uid, gid, limits)),
            handles: Handles::new(),
            store,
            home: Home {
                placement: Arc::new(Placement::new(opts.align)),
                journal: Arc::new(journal),
                pool,
            },
            info_text: format!("{}\n", opts.align),
            passthrough: AtomicBool::new(opts.passthrough == Passthrough::Auto),
            opts,
            invalidate: OnceLock::new(),
            device: OnceLock::new(),
            owner: uid,
            anon: OnceLock::new(),
        }
    }

    /// The mount options.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Whether opens may be answered with FUSE passthrough.
    pub fn passthrough(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }

    /// The kernel offers no passthrough: opens go through the server.
    pub fn no_passthrough(&self) {
        self.passthrough.store(false, Ordering::Relaxed);
    }

    /// Gives the file system the connection's `/dev/fuse` descriptor (a
    /// duplicate of the session's), which passthrough registrations need,
    /// and the transport's channel for invalidations.
    pub fn connect(&self, dev: Device, invalidate: Box<dyn Invalidate>) {
        let _ = self.device.set(dev);
        let _ = self.invalidate.set(invalidate);
    }

    /// Registers `file` for passthrough on the connection.
    fn register(&self, file: &OwnedFd) -> io::Result<PassthroughId> {
        let dev = self.device.get().ok_or_else(|| {
            io::Error::other("the session's /dev/fuse descriptor is not known yet")
        })?;
        PassthroughId::register(dev, file)
    }

    /// Drops the kernel's cached attributes of `ino` after a change the
    /// kernel did not make (an ioctl that sized the region or made or freed
    /// its memory), so that the next `stat` asks.
    fn attrs_changed(&self, ino: Ino) {
        if let Some(n) = self.invalidate.get() {
            if let Err(e) = n.inval_inode(ino) {
                debug!("invalidating the attributes of inode {}: {e}", ino.0);
            }
        }
    }

    /// `statfs`: no blocks (memory is not a disk), nodes against the limit.
    fn usage(&self) -> Statfs {
        let (used, max) = {
            let ns = self.ns.read();
            (ns.node_count(), ns.limits().nodes)
        };
        Statfs {
            files: max,
            ffree: max.saturating_sub(used),
            bsize: PAGE_SIZE as u32,
            namelen: NAME_MAX as u32,
        }
    }

    /// `opendir`: a handle for listing `ino`.
    fn do_opendir(&self, ino: Ino) -> Result<Fh, Fail> {
        self.ns.read().check_dir(ino)?;
        Ok(self.handles.add(ino, Opened::Dir))
    }

    /// `readdir`: entries of `ino` after `cookie`, given to `add` until it
    /// says the reply is full.
    fn do_readdir(&self, ino: Ino, fh: Fh, cookie: u64, add: DirSink<'_>) -> Result<(), Fail> {
        self.handles.check_dir(fh, ino)?;
        self.ns.read().list(ino, cookie, add)
    }

    /// `releasedir`.
    fn do_releasedir(&self, fh: Fh) {
        self.handles.remove(fh);
    }

    /// `removexattr`: nothing can be removed.
    fn do_removexattr(&self, name: &OsStr) -> Result<(), Fail> {
        Err(if name == BACKING_XATTR {
            Fail::new(Errno::EPERM, "user.mshare.backing cannot be removed")
        } else {
            Fail::new(Errno::ENODATA, "no such attribute")
        })
    }
}
