//! FUSE dispatch: one method per request, each calling a handler that
//! returns `Result<_, Fail>` and the one adapter ([`reply::answer`]) that
//! sends exactly one reply. The handlers live by concern:
//! [`entries`] (names), [`open`] (open files and their I/O), [`attr`],
//! [`ioctl`], [`xattr`]; [`handles`] is the handle table.

mod anon;
mod attr;
mod entries;
mod handles;
mod ioctl;
mod keep;
mod open;
mod reply;
mod ring;
mod xattr;

use std::ffi::OsStr;
use std::io;
use std::ops::Deref;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use fuser::{
    FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig,
    Notifier, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow,
};
use log::{debug, error, info, warn};
use mshare_uapi::{BACKING_XATTR, PAGE_SIZE};
use nix::errno::Errno;
use parking_lot::RwLock;

use self::attr::AttrChange;
use self::handles::{Handles, Opened};
use self::reply::{answer, empty, entry, Lazy, ATTR_TTL};
use self::xattr::xattr_reply;
use crate::backing::BackingStore;
use crate::fail::Fail;
use crate::hugepool::HugePool;
use crate::namespace::{Limits, Namespace, Removal, NAME_MAX};
use crate::options::{Options, Passthrough, Uring};
use crate::passthrough::{self, Device, PassthroughId};
use crate::placement::Placement;
use crate::region::{Home, OpenMode};
use crate::state::Journal;

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
    notifier: Arc<OnceLock<Notifier>>,
    /// The connection's `/dev/fuse` descriptor, for passthrough
    /// registrations (set once the session exists).
    device: OnceLock<Device>,
    /// The mounter: without `allow_other`, the only user served.
    owner: u32,
    /// The io_uring queues, made at `INIT`, until the connection's
    /// descriptor is known.
    uring: parking_lot::Mutex<Option<crate::uring::Starter>>,
    /// Watches the regions of `anon/` ([`Self::start_preload_support`]).
    anon: OnceLock<Arc<crate::transient::Watcher>>,
}

/// Who sent a request: what the handlers need of it, whichever transport
/// brought it.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// The caller's fsuid.
    pub uid: u32,
    /// The caller's fsgid.
    pub gid: u32,
    /// The calling thread (0 for requests the kernel makes on its own).
    pub pid: u32,
}

impl From<&Request> for Caller {
    fn from(req: &Request) -> Self {
        Caller {
            uid: req.uid(),
            gid: req.gid(),
            pid: req.pid(),
        }
    }
}

/// The file system as the fuser session holds it: a shared [`MshareFs`],
/// so that the io_uring queues ([`crate::uring`]) serve the same one.
#[derive(Debug)]
pub struct Mounted(pub Arc<MshareFs>);

impl Deref for Mounted {
    type Target = MshareFs;

    fn deref(&self) -> &MshareFs {
        &self.0
    }
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
            notifier: Arc::new(OnceLock::new()),
            device: OnceLock::new(),
            owner: uid,
            uring: parking_lot::Mutex::new(None),
            anon: OnceLock::new(),
        }
    }

    /// Gives the file system the connection's `/dev/fuse` descriptor (a
    /// duplicate of the session's), which passthrough registrations and
    /// the io_uring queues need. An error means the connection took
    /// FUSE over io_uring and its queues cannot register: it would never
    /// serve a request.
    pub fn set_device(&self, dev: OwnedFd) -> io::Result<()> {
        let dev = self.device.get_or_init(|| Arc::new(dev));
        // After the device is known: the queues serve opens at once.
        let starter = self.uring.lock().take();
        starter.map_or(Ok(()), |s| s.go(dev))
    }

    /// Registers `file` for passthrough on the connection.
    fn register(&self, file: &OwnedFd) -> io::Result<PassthroughId> {
        let dev = self.device.get().ok_or_else(|| {
            io::Error::other("the session's /dev/fuse descriptor is not known yet")
        })?;
        PassthroughId::register(dev, file)
    }

    /// Where main puts the session's notifier.
    pub fn notifier_slot(&self) -> Arc<OnceLock<Notifier>> {
        self.notifier.clone()
    }

    /// Drops the kernel's cached attributes of `ino` after a change the
    /// kernel did not make (an ioctl that sized the region or made or freed
    /// its memory), so that the next `stat` asks.
    fn attrs_changed(&self, ino: INodeNo) {
        if let Some(n) = self.notifier.get() {
            if let Err(e) = n.inval_inode(ino, -1, 0) {
                debug!("invalidating the attributes of inode {}: {e}", ino.0);
            }
        }
    }

    /// The region's name for a log line, looked up only if the line is
    /// written.
    fn name_of(&self, ino: INodeNo) -> Lazy<impl Fn() -> String + '_> {
        Lazy(move || self.region_name(ino))
    }
}

/// What `statfs` reports: nodes used and free, against `max_regions`.
#[derive(Clone, Copy, Debug)]
pub struct Statfs {
    /// Nodes that may exist (`max_regions`).
    pub files: u64,
    /// Nodes that may still be made.
    pub ffree: u64,
    /// Block and fragment size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
}

impl MshareFs {
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
    fn do_opendir(&self, ino: INodeNo) -> Result<FileHandle, Fail> {
        self.ns.read().check_dir(ino)?;
        Ok(self.handles.add(ino, Opened::Dir))
    }

    /// `readdir`: entries of `ino` after `cookie`, given to `add` until it
    /// says the reply is full.
    fn do_readdir(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        cookie: u64,
        add: impl FnMut(INodeNo, u64, fuser::FileType, &OsStr) -> bool,
    ) -> Result<(), Fail> {
        self.handles.check_dir(fh, ino)?;
        self.ns.read().list(ino, cookie, add)
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

/// Region opens ask for no `flush` at `close(2)`: a close then costs no
/// round trip. Tokens are revoked at `release` instead.
const REGION_OPEN: FopenFlags = FopenFlags::FOPEN_NOFLUSH;

/// Replies to an open of a region file as [`OpenMode`] says.
fn opened(reply: ReplyOpen, (fh, mode): (FileHandle, OpenMode)) {
    match mode {
        OpenMode::Passthrough(id) => passthrough::reply_open(reply, fh, REGION_OPEN, &id),
        OpenMode::Direct => reply.opened(fh, REGION_OPEN | FopenFlags::FOPEN_DIRECT_IO),
    }
}

impl Mounted {
    /// Makes the io_uring queues for the connection ([`crate::uring`]):
    /// whether they exist. They start when [`MshareFs::set_device`] gives
    /// them the connection.
    fn start_uring(&self) -> bool {
        let fs = Arc::downgrade(&self.0);
        let serve: std::sync::Weak<dyn crate::uring::Serve> = fs;
        match crate::uring::start(serve, self.opts.io_uring_q_depth) {
            Ok(starter) => {
                *self.uring.lock() = Some(starter);
                true
            }
            Err(_) => false,
        }
    }
}

impl Filesystem for Mounted {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        if self.passthrough.load(Ordering::Relaxed) {
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if ok {
                info!("FUSE passthrough enabled: region files can be mmapped");
            } else {
                self.passthrough.store(false, Ordering::Relaxed);
                warn!("the kernel offers no FUSE passthrough: region files cannot be mmapped (ENODEV); use libmshare");
            }
        } else {
            info!("passthrough=off: region files cannot be mmapped (ENODEV)");
        }
        let offered = config
            .capabilities()
            .contains(InitFlags::FUSE_OVER_IO_URING);
        let uring = self.opts.io_uring != Uring::Off
            && offered
            && config
                .set_max_write(crate::uring::MAX_PAYLOAD as u32)
                .is_ok()
            && self.start_uring()
            && config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok();
        if !uring && self.opts.io_uring == Uring::On {
            error!("io_uring=on: FUSE over io_uring is not available; requests are read from /dev/fuse");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let res = self.do_lookup(parent, name);
        answer(reply, "lookup", format_args!("{name:?}"), res, entry);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.do_forget(ino, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        answer(reply, "getattr", ino.0, self.attr_of(ino), reply::attr);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = AttrChange {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        };
        let res = self.do_setattr(req.into(), ino, change);
        answer(reply, "setattr", self.name_of(ino), res, reply::attr);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let res = self.do_mknod(req.into(), parent, name, mode);
        answer(reply, "mknod", format_args!("{name:?}"), res, entry);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let res = self.do_mkdir(req.into(), parent, name, mode);
        answer(reply, "mkdir", format_args!("{name:?}"), res, entry);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = self.do_remove(parent, name, Removal::File);
        answer(reply, "unlink", format_args!("{name:?}"), res, empty);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = self.do_remove(parent, name, Removal::Dir);
        answer(reply, "rmdir", format_args!("{name:?}"), res, empty);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let res = Err(Fail::new(Errno::EPERM, "symbolic links are not supported"));
        answer(reply, "symlink", format_args!("{name:?}"), res, entry);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let res = Err(Fail::new(Errno::EPERM, "hard links are not supported"));
        answer(reply, "link", format_args!("{newname:?}"), res, entry);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let res = self.do_rename(parent, name, newparent, newname, flags);
        let subject = format_args!("{name:?} -> {newname:?}");
        answer(reply, "rename", subject, res, empty);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let res = self.do_open(ino, flags, |fd| self.register(fd));
        answer(reply, "open", self.name_of(ino), res, opened);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let res = self.do_create(req.into(), parent, name, mode, OpenFlags(flags), |fd| {
            self.register(fd)
        });
        answer(
            reply,
            "create",
            format_args!("{name:?}"),
            res,
            |r, (attr, fh, mode)| match mode {
                OpenMode::Passthrough(id) => {
                    passthrough::reply_create(r, (&ATTR_TTL, &attr), fh, REGION_OPEN, &id)
                }
                OpenMode::Direct => r.created(
                    &ATTR_TTL,
                    &attr,
                    Generation(0),
                    fh,
                    REGION_OPEN | FopenFlags::FOPEN_DIRECT_IO,
                ),
            },
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let res = self.do_read(ino, fh, offset, size);
        answer(reply, "read", self.name_of(ino), res, |r, d| r.data(&d));
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let res = self.do_write(ino, fh, offset, data);
        answer(reply, "write", self.name_of(ino), res, |r, n| r.written(n));
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.do_release(ino, fh);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let res = self.do_opendir(ino);
        answer(reply, "opendir", ino.0, res, |r, fh| {
            r.opened(fh, FopenFlags::empty())
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let res = self.do_readdir(ino, fh, offset, |child, cookie, kind, name| {
            reply.add(child, cookie, kind, name)
        });
        answer(reply, "readdir", ino.0, res, |r, ()| r.ok());
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.remove(fh);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = self.usage();
        reply.statfs(0, 0, 0, st.files, st.ffree, st.bsize, st.namelen, st.bsize);
    }

    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        let res = self.do_ioctl(ino, fh, cmd, in_data, out_size);
        let subject = Lazy(|| format!("{cmd:#x} on {}", self.region_name(ino)));
        answer(reply, "ioctl", subject, res, |r, out| r.ioctl(0, &out));
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let res = self.xattr_value(req.into(), ino, name);
        xattr_reply(reply, "getxattr", ino, size, res);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr_reply(reply, "listxattr", ino, size, self.xattr_names(ino));
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let res = self.do_setxattr(req.into(), ino, name, value, flags);
        answer(reply, "setxattr", self.name_of(ino), res, empty);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = self.do_removexattr(name);
        answer(reply, "removexattr", self.name_of(ino), res, empty);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let res = self.do_fallocate(ino, fh, offset, length, mode);
        answer(reply, "fallocate", self.name_of(ino), res, empty);
    }
}
