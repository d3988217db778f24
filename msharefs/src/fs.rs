//! FUSE dispatch: one method per request, each doing its work in a
//! `do_*` function that returns `Result<_, Fail>`, and one adapter
//! ([`answer`]) that sends exactly one reply and logs refusals.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt::Display;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    BackingId, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, IoctlFlags, KernelConfig, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow,
};
use libmshare::abi::{
    MshareCreate, MshareInfo, MshareToken, MshareUnmap, WireFormat, BACKING_XATTR, HUGE_PAGE_SIZE,
    MSHAREFS_CREATE_MAPPING, MSHAREFS_GET_SIZE, MSHAREFS_GET_TOKEN, MSHAREFS_SET_SIZE,
    MSHAREFS_UNMAP, PAGE_SIZE, TOKEN_HUGETLB, TOKEN_WRITABLE,
};
use log::{debug, info, warn};
use nix::errno::Errno;
use parking_lot::{Mutex, RwLock};

use crate::addrspace::AddressSpace;
use crate::backing::BackingStore;
use crate::broker::Broker;
use crate::fail::{ensure, Fail};
use crate::namespace::{Kind, Meta, Namespace, Node, INFO};
use crate::options::{BackingKind, Options};
use crate::region::{OpenMode, Region};

/// How long the kernel may cache a name.
const ENTRY_TTL: Duration = Duration::from_secs(1);
/// Attributes are never cached: a region's size changes by ioctl.
const ATTR_TTL: Duration = Duration::ZERO;

/// An open file handle.
#[derive(Debug)]
struct Handle {
    /// The inode it was opened on.
    ino: u64,
    /// The region, for region files.
    region: Option<Arc<Region>>,
    /// Opened for writing (control ioctls need it).
    writable: bool,
    /// A directory listing taken at `opendir`.
    listing: Vec<(u64, bool, std::ffi::OsString)>,
}

/// The msharefs file system.
#[derive(Debug)]
pub struct MshareFs {
    /// The tree of names and inodes.
    ns: RwLock<Namespace>,
    /// Open handles by number; numbers are never reused.
    handles: Mutex<HashMap<u64, Handle>>,
    /// Next handle number.
    next_fh: AtomicU64,
    /// Makes backing files.
    store: BackingStore,
    /// Address ranges of sized regions.
    addrs: AddressSpace,
    /// Mount options.
    opts: Options,
    /// Whether opens are answered with FUSE passthrough.
    passthrough: AtomicBool,
    /// What `mshare_info` reads as.
    info_text: String,
    /// Hands backing descriptors to holders of open region files.
    broker: Arc<Broker>,
}

impl MshareFs {
    /// A file system with these options, its root owned by `uid`/`gid`.
    pub fn new(opts: Options, passthrough: bool, uid: u32, gid: u32) -> Self {
        let store = BackingStore::new();
        if store.effective(opts.backing) != opts.backing {
            warn!(
                "backing={} is not available; new regions use {}",
                opts.backing,
                store.effective(opts.backing)
            );
        }
        MshareFs {
            ns: RwLock::new(Namespace::new(uid, gid)),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            store,
            addrs: AddressSpace::default(),
            info_text: format!("{}\n", opts.align),
            opts,
            passthrough: AtomicBool::new(passthrough),
            broker: Broker::start(),
        }
    }

    fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        let (kind, size, blocks, blksize) = match &node.kind {
            Kind::Dir(_) => (FileType::Directory, 0, 0, PAGE_SIZE),
            Kind::Info => (
                FileType::RegularFile,
                self.info_text.len() as u64,
                0,
                PAGE_SIZE,
            ),
            Kind::Region(r) => {
                let (size, blocks) = r.size_and_blocks();
                let blksize = if r.kind == BackingKind::Hugetlb {
                    HUGE_PAGE_SIZE
                } else {
                    PAGE_SIZE
                };
                (FileType::RegularFile, size, blocks, blksize)
            }
        };
        let m = &node.meta;
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks,
            atime: m.atime,
            mtime: m.mtime,
            ctime: m.ctime,
            crtime: m.crtime,
            kind,
            perm: m.perm,
            nlink: node.nlink(),
            uid: m.uid,
            gid: m.gid,
            rdev: 0,
            blksize: blksize as u32,
            flags: 0,
        }
    }

    fn attr_of(&self, ino: u64) -> Result<FileAttr, Fail> {
        let ns = self.ns.read();
        Ok(self.attr(ino, ns.node(ino)?))
    }

    /// Attributes for an entry reply, taking the lookup reference the
    /// kernel will later `forget`.
    fn entry_of(&self, ino: u64) -> Result<FileAttr, Fail> {
        self.entry_in(&self.ns.read(), ino)
    }

    /// [`Self::entry_of`] under a namespace lock the caller holds.
    fn entry_in(&self, ns: &Namespace, ino: u64) -> Result<FileAttr, Fail> {
        let node = ns.node(ino)?;
        node.add_lookup();
        Ok(self.attr(ino, node))
    }

    fn do_lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Fail> {
        let ns = self.ns.read();
        self.entry_in(&ns, ns.child(parent, name)?)
    }

    /// Creates a region named `name` in `parent` (no open, no lookup
    /// reference: the caller takes one when it replies with the entry).
    fn new_region(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
    ) -> Result<(u64, Arc<Region>), Fail> {
        let kind = self.store.effective(self.opts.backing);
        let file = self
            .store
            .create(kind, &name.to_string_lossy())
            .map_err(|e| Fail::with(e, format!("cannot create {kind} backing memory: {e}")))?;
        let mut ns = self.ns.write();
        ensure(
            ns.region_count() < self.opts.max_regions,
            Errno::ENOSPC,
            "max_regions reached",
        )?;
        let region = Arc::new(Region::new(ns.next_ino(), kind, file));
        let meta = Meta::new(mode as u16, req.uid(), req.gid());
        let ino = ns.insert(parent, name, Kind::Region(region.clone()), meta)?;
        debug!(
            "created region {name:?} (inode {ino}, {kind}) for uid {}",
            req.uid()
        );
        Ok((ino, region))
    }

    /// Counts an open of `region` and registers its handle.
    fn open_region(
        &self,
        ino: u64,
        region: &Arc<Region>,
        flags: i32,
        register: impl FnOnce(&OwnedFd) -> io::Result<BackingId>,
    ) -> Result<(FileHandle, OpenMode), Fail> {
        let want = self.passthrough.load(Ordering::Relaxed);
        let mode = match region.open(want, register) {
            Ok(mode) => mode,
            Err(e) if want && e.raw_os_error() == Some(libc::EPERM) => {
                if self.passthrough.swap(false, Ordering::Relaxed) {
                    warn!(
                        "FUSE passthrough refused (EPERM; the server needs CAP_SYS_ADMIN): \
                         region files cannot be mmapped (ENODEV), read/write go through the server"
                    );
                }
                region
                    .open(false, |_| Err(io::Error::from(Errno::EPERM)))
                    .map_err(io_fail)?
            }
            Err(e) => return Err(io_fail(e)),
        };
        Ok((
            self.add_handle(ino, Some(region.clone()), flags, Vec::new()),
            mode,
        ))
    }

    fn add_handle(
        &self,
        ino: u64,
        region: Option<Arc<Region>>,
        flags: i32,
        listing: Vec<(u64, bool, std::ffi::OsString)>,
    ) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        self.handles.lock().insert(
            fh,
            Handle {
                ino,
                region,
                writable,
                listing,
            },
        );
        FileHandle(fh)
    }

    /// Undoes an open that raced with a change of the region's backing
    /// (`setxattr`), which can happen only before the region is sized.
    fn still_current(
        &self,
        ino: u64,
        region: &Arc<Region>,
        opened: (FileHandle, OpenMode),
    ) -> Result<(FileHandle, OpenMode), Fail> {
        let current = self
            .ns
            .read()
            .node(ino)
            .ok()
            .and_then(|n| n.region().cloned());
        if current.is_some_and(|c| Arc::ptr_eq(&c, region)) {
            return Ok(opened);
        }
        self.handles.lock().remove(&opened.0 .0);
        region.release();
        Err(Fail::new(
            Errno::EAGAIN,
            "the region's backing changed during open",
        ))
    }

    fn handle_region(&self, fh: FileHandle, ino: u64) -> Result<(Arc<Region>, bool), Fail> {
        let handles = self.handles.lock();
        let h = handles
            .get(&fh.0)
            .ok_or(Fail::new(Errno::EBADF, "unknown file handle"))?;
        ensure(
            h.ino == ino,
            Errno::EBADF,
            "file handle belongs to another inode",
        )?;
        let r = h
            .region
            .clone()
            .ok_or(Fail::new(Errno::ENOTTY, "not a region"))?;
        Ok((r, h.writable))
    }

    /// Frees a region's memory once no name and no open handle remain, and
    /// drops the inode once the kernel has forgotten it too.
    fn reap(&self, ino: u64) {
        let mut ns = self.ns.write();
        if let Ok(node) = ns.node(ino) {
            if let Some(r) = node.region() {
                if !node.is_linked() && r.opens() == 0 {
                    r.release_memory(&self.addrs);
                    debug!("region inode {ino}: memory released");
                }
            }
        }
        ns.remove_if_unused(ino);
    }

    /// The region's name for a log line, looked up only if the line is
    /// written (it scans the parent directory).
    fn name_of(&self, ino: u64) -> Lazy<impl Fn() -> String + '_> {
        Lazy(move || self.region_name(ino))
    }

    fn region_name(&self, ino: u64) -> String {
        let ns = self.ns.read();
        let Ok(node) = ns.node(ino) else {
            return format!("inode {ino}");
        };
        let parent = ns.node(node.parent).ok();
        let name = parent.and_then(|p| match &p.kind {
            Kind::Dir(e) => e
                .iter()
                .find(|(_, &i)| i == ino)
                .map(|(n, _)| n.to_string_lossy().into_owned()),
            _ => None,
        });
        match name {
            Some(n) => format!("region '{n}'"),
            None => format!("region inode {ino} (unlinked)"),
        }
    }

    fn do_ioctl(
        &self,
        req: &Request,
        ino: u64,
        fh: FileHandle,
        cmd: u32,
        input: &[u8],
        out_size: u32,
    ) -> Result<Vec<u8>, Fail> {
        let (region, writable) = match self.handle_region(fh, ino) {
            Ok(r) => r,
            Err(f) if f.errno == Errno::ENOTTY => {
                return Err(Fail::new(
                    Errno::ENOTTY,
                    "ioctl on a file that is not a region",
                ))
            }
            Err(f) => return Err(f),
        };
        let need_write = || {
            ensure(
                writable,
                Errno::EBADF,
                "control ioctl on a file not opened for writing",
            )
        };
        match cmd {
            MSHAREFS_GET_SIZE => {
                ensure(
                    out_size as usize >= MshareInfo::SIZE,
                    Errno::EINVAL,
                    "output buffer too small",
                )?;
                Ok(region.info()?.to_bytes())
            }
            MSHAREFS_SET_SIZE => {
                need_write()?;
                let info: MshareInfo = decode(input)?;
                ensure(info.start != 0, Errno::EINVAL, "start is zero")?;
                let set = region.set_size(info, self.opts.align, &self.addrs)?;
                debug!(
                    "{}: size set to {:#x}+{:#x}",
                    self.region_name(ino),
                    set.start,
                    set.size
                );
                Ok(Vec::new())
            }
            MSHAREFS_CREATE_MAPPING => {
                need_write()?;
                let c: MshareCreate = decode(input)?;
                region.create_mapping(&c)?;
                Ok(Vec::new())
            }
            MSHAREFS_UNMAP => {
                need_write()?;
                let u: MshareUnmap = decode(input)?;
                region.unmap(&u)?;
                Ok(Vec::new())
            }
            MSHAREFS_GET_TOKEN => {
                ensure(
                    out_size as usize >= MshareToken::SIZE,
                    Errno::EINVAL,
                    "output buffer too small",
                )?;
                let file = region.file()?;
                let token = self.broker.issue(fh.0, req.pid(), file, writable)?;
                let mut flags = if writable { TOKEN_WRITABLE } else { 0 };
                if region.kind == BackingKind::Hugetlb {
                    flags |= TOKEN_HUGETLB;
                }
                debug!(
                    "{}: token issued to pid {}",
                    self.region_name(ino),
                    req.pid()
                );
                Ok(MshareToken {
                    token,
                    server_pid: std::process::id(),
                    flags,
                }
                .to_bytes())
            }
            _ => Err(Fail::with(Errno::ENOTTY, format!("unknown ioctl {cmd:#x}"))),
        }
    }

    fn do_setattr(&self, req: &Request, ino: u64, ch: AttrChange) -> Result<FileAttr, Fail> {
        let AttrChange {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        } = ch;
        let region = {
            let ns = self.ns.read();
            let node = ns.node(ino)?;
            if ino == INFO {
                ensure(
                    mode.is_none() && uid.is_none() && gid.is_none() && size.is_none(),
                    Errno::EPERM,
                    "mshare_info cannot be changed",
                )?;
            }
            if !self.opts.default_permissions && req.uid() != 0 {
                // Without default_permissions the kernel checks nothing.
                ensure(
                    uid.is_none_or(|u| u == node.meta.uid),
                    Errno::EPERM,
                    "only root may chown",
                )?;
                ensure(
                    (mode.is_none() && gid.is_none()) || req.uid() == node.meta.uid,
                    Errno::EPERM,
                    "only the owner may chmod or chgrp",
                )?;
            }
            node.region().cloned()
        };
        if let Some(size) = size {
            match &region {
                Some(r) => r.truncate(size, self.opts.align, &self.addrs)?,
                None => return Err(Fail::new(Errno::EISDIR, "truncate of a directory")),
            }
        }
        let mut ns = self.ns.write();
        let node = ns.node_mut(ino)?;
        let now = SystemTime::now();
        let at = |t: TimeOrNow| match t {
            TimeOrNow::SpecificTime(t) => t,
            TimeOrNow::Now => now,
        };
        if let Some(m) = mode {
            node.meta.perm = (m & 0o7777) as u16;
        }
        if let Some(u) = uid {
            node.meta.uid = u;
        }
        if let Some(g) = gid {
            node.meta.gid = g;
        }
        if let Some(t) = atime {
            node.meta.atime = at(t);
        }
        if let Some(t) = mtime {
            node.meta.mtime = at(t);
        }
        if size.is_some() {
            node.meta.mtime = now;
        }
        node.meta.ctime = now;
        let node = ns.node(ino)?;
        Ok(self.attr(ino, node))
    }

    fn do_unlink_like(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Fail> {
        let ino = {
            let mut ns = self.ns.write();
            if dir {
                ns.rmdir(parent, name)?
            } else {
                ns.unlink(parent, name)?
            }
        };
        self.reap(ino);
        Ok(())
    }
}

/// The attribute changes of one `setattr`.
struct AttrChange {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
}

impl MshareFs {
    fn xattr_value(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>, Fail> {
        let ns = self.ns.read();
        let node = ns.node(ino)?;
        match node.region() {
            Some(r) if name == BACKING_XATTR => Ok(r.kind.as_str().as_bytes().to_vec()),
            _ => Err(Fail::new(Errno::ENODATA, "no such attribute")),
        }
    }

    fn xattr_names(&self, ino: u64) -> Result<Vec<u8>, Fail> {
        let ns = self.ns.read();
        let mut names = Vec::new();
        if ns.node(ino)?.region().is_some() {
            names.extend_from_slice(BACKING_XATTR.as_bytes());
            names.push(0);
        }
        Ok(names)
    }

    /// `setxattr(user.mshare.backing)`: gives an unsized, unopened region a
    /// new, empty backing file of another kind.
    fn set_backing(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> Result<(), Fail> {
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
        let text = std::str::from_utf8(value)
            .unwrap_or("")
            .trim_end_matches(['\0', '\n']);
        let kind = BackingKind::parse(text).ok_or(Fail::new(
            Errno::EINVAL,
            "backing must be thp, shmem or hugetlb",
        ))?;
        let kind = self.store.effective(kind);
        let old = self.ns.read().node(ino)?.region().cloned();
        let old = old.ok_or(Fail::new(Errno::EOPNOTSUPP, "not a region"))?;
        if old.kind == kind {
            return Ok(());
        }
        let busy = |r: &Region| r.opens() > 0 || r.info().is_ok();
        ensure(
            !busy(&old),
            Errno::EBUSY,
            "the backing of an open or sized region cannot change",
        )?;
        let file = self
            .store
            .create(kind, &self.region_name(ino))
            .map_err(|e| Fail::with(e, format!("cannot create {kind} backing memory: {e}")))?;
        let mut ns = self.ns.write();
        let current = ns.node(ino)?.region().cloned();
        ensure(
            current.is_some_and(|c| Arc::ptr_eq(&c, &old)) && !busy(&old),
            Errno::EBUSY,
            "region changed meanwhile",
        )?;
        ns.set_region(ino, Arc::new(Region::new(ino, kind, file)))?;
        old.release_memory(&self.addrs);
        debug!("region inode {ino}: backing is now {kind}");
        Ok(())
    }
}

/// Answers a getxattr/listxattr: the size when asked for 0 bytes, the data
/// when it fits, `ERANGE` when it does not.
fn xattr_reply(reply: ReplyXattr, op: &str, ino: u64, size: u32, res: Result<Vec<u8>, Fail>) {
    let res = res.and_then(|data| {
        ensure(
            size == 0 || data.len() <= size as usize,
            Errno::ERANGE,
            "buffer too small",
        )?;
        Ok(data)
    });
    answer(reply, op, ino, res, |r, data| {
        if size == 0 {
            r.size(data.len() as u32)
        } else {
            r.data(&data)
        }
    });
}

/// Decodes an ioctl argument (the kernel copied `_IOC_SIZE` bytes).
fn decode<T: WireFormat>(input: &[u8]) -> Result<T, Fail> {
    T::from_bytes(input).ok_or(Fail::new(Errno::EINVAL, "ioctl argument too short"))
}

fn io_fail(e: io::Error) -> Fail {
    let errno = libmshare::errno_of(&e);
    Fail::with(errno, e.to_string())
}

/// Formats by calling the closure, so that the work is done only when a
/// log line is written.
struct Lazy<F>(F);

impl<F: Fn() -> String> Display for Lazy<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&(self.0)())
    }
}

/// The error half of every fuser reply type.
trait ErrorReply {
    fn send_error(self, errno: fuser::Errno);
}

macro_rules! error_reply {
    ($($t:ty),*) => {$(
        impl ErrorReply for $t {
            fn send_error(self, errno: fuser::Errno) {
                self.error(errno)
            }
        }
    )*};
}
error_reply!(
    ReplyAttr,
    ReplyXattr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyEmpty,
    ReplyEntry,
    ReplyIoctl,
    ReplyOpen,
    ReplyWrite
);

/// Sends `ok`'s reply for a success, or the errno for a refusal (logged at
/// debug level with the operation and what it was about).
fn answer<R: ErrorReply, T>(
    reply: R,
    op: &str,
    subject: impl Display,
    res: Result<T, Fail>,
    ok: impl FnOnce(R, T),
) {
    match res {
        Ok(v) => ok(reply, v),
        Err(f) => {
            debug!("{op} {subject}: {f}");
            reply.send_error(fuser::Errno::from_i32(f.errno as i32));
        }
    }
}

fn entry(reply: ReplyEntry, attr: FileAttr) {
    reply.entry_with_ttls(&ATTR_TTL, &ENTRY_TTL, &attr, Generation(0));
}

impl Filesystem for MshareFs {
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
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        answer(
            reply,
            "lookup",
            format_args!("{name:?}"),
            self.do_lookup(parent.0, name),
            entry,
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let gone = self.ns.write().forget(ino.0, nlookup);
        if let Some(r) = gone.as_ref().and_then(Node::region) {
            r.release_memory(&self.addrs);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        answer(reply, "getattr", ino.0, self.attr_of(ino.0), |r, a| {
            r.attr(&ATTR_TTL, &a)
        });
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
        let res = self.do_setattr(req, ino.0, change);
        answer(reply, "setattr", self.name_of(ino.0), res, |r, a| {
            r.attr(&ATTR_TTL, &a)
        });
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
        let res = if mode & libc::S_IFMT == libc::S_IFREG {
            self.new_region(req, parent.0, name, mode)
                .and_then(|(ino, _)| self.entry_of(ino))
        } else {
            Err(Fail::new(
                Errno::EPERM,
                "only regular files (regions) can be created",
            ))
        };
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
        let meta = Meta::new(mode as u16, req.uid(), req.gid());
        let created = self
            .ns
            .write()
            .insert(parent.0, name, Kind::Dir(Default::default()), meta);
        let res = created.and_then(|ino| self.entry_of(ino));
        answer(reply, "mkdir", format_args!("{name:?}"), res, entry);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = self.do_unlink_like(parent.0, name, false);
        answer(reply, "unlink", format_args!("{name:?}"), res, |r, ()| {
            r.ok()
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = self.do_unlink_like(parent.0, name, true);
        answer(reply, "rmdir", format_args!("{name:?}"), res, |r, ()| {
            r.ok()
        });
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
        let res = (|| {
            ensure(
                (flags & !RenameFlags::RENAME_NOREPLACE).is_empty(),
                Errno::EINVAL,
                "only RENAME_NOREPLACE is supported",
            )?;
            let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
            let replaced =
                self.ns
                    .write()
                    .rename(parent.0, name, newparent.0, newname, noreplace)?;
            if let Some(t) = replaced {
                self.reap(t);
            }
            Ok(())
        })();
        answer(
            reply,
            "rename",
            format_args!("{name:?} -> {newname:?}"),
            res,
            |r, ()| r.ok(),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let node_kind = {
            let ns = self.ns.read();
            ns.node(ino.0).map(|n| n.region().cloned())
        };
        let res = match node_kind {
            Err(f) => Err(f),
            Ok(None) if ino.0 == INFO => {
                let writes =
                    flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
                ensure(!writes, Errno::EPERM, "mshare_info is read-only").map(|()| {
                    (
                        self.add_handle(ino.0, None, flags.0, Vec::new()),
                        OpenMode::Direct,
                    )
                })
            }
            Ok(None) => Err(Fail::new(Errno::EISDIR, "is a directory")),
            Ok(Some(region)) => self
                .open_region(ino.0, &region, flags.0, |fd| reply.open_backing(fd))
                .and_then(|opened| self.still_current(ino.0, &region, opened)),
        };
        answer(
            reply,
            "open",
            self.name_of(ino.0),
            res,
            |r, (fh, mode)| match mode {
                OpenMode::Passthrough(id) => r.opened_passthrough(fh, FopenFlags::empty(), &id),
                OpenMode::Direct => r.opened(fh, FopenFlags::FOPEN_DIRECT_IO),
            },
        );
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
        let res = (|| {
            ensure(
                mode & libc::S_IFMT == libc::S_IFREG || mode & libc::S_IFMT == 0,
                Errno::EPERM,
                "only regions",
            )?;
            let (ino, region) = self.new_region(req, parent.0, name, mode)?;
            let opened = self.open_region(ino, &region, flags, |fd| reply.open_backing(fd));
            let (fh, mode) = match opened {
                Ok(o) => o,
                Err(f) => {
                    let _ = self.ns.write().unlink(parent.0, name);
                    self.reap(ino);
                    return Err(f);
                }
            };
            Ok((self.entry_of(ino)?, fh, mode))
        })();
        answer(
            reply,
            "create",
            format_args!("{name:?}"),
            res,
            |r, (attr, fh, mode)| match mode {
                OpenMode::Passthrough(id) => r.created_passthrough(
                    &ATTR_TTL,
                    &attr,
                    Generation(0),
                    fh,
                    FopenFlags::empty(),
                    &id,
                ),
                OpenMode::Direct => r.created(
                    &ATTR_TTL,
                    &attr,
                    Generation(0),
                    fh,
                    FopenFlags::FOPEN_DIRECT_IO,
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
        let res = if ino.0 == INFO {
            let text = self.info_text.as_bytes();
            let start = (offset as usize).min(text.len());
            let end = start.saturating_add(size as usize).min(text.len());
            Ok(text[start..end].to_vec())
        } else {
            self.handle_region(fh, ino.0)
                .and_then(|(r, _)| r.read(offset, size))
        };
        answer(reply, "read", self.name_of(ino.0), res, |r, d| r.data(&d));
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
        let res = match self.handle_region(fh, ino.0) {
            Ok((r, true)) => r.write(offset, data),
            Ok((_, false)) => Err(Fail::new(Errno::EBADF, "not opened for writing")),
            Err(f) if f.errno == Errno::ENOTTY => {
                Err(Fail::new(Errno::EPERM, "mshare_info is read-only"))
            }
            Err(f) => Err(f),
        };
        answer(reply, "write", self.name_of(ino.0), res, |r, n| {
            r.written(n)
        });
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        self.broker.revoke_for_closer(fh.0, req.pid());
        reply.ok();
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
        let handle = self.handles.lock().remove(&fh.0);
        self.broker.revoke_handle(fh.0);
        if let Some(region) = handle.and_then(|h| h.region) {
            if region.release() == 0 {
                self.reap(ino.0);
            }
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let res = self.ns.read().entries(ino.0);
        answer(reply, "opendir", ino.0, res, |r, listing| {
            r.opened(
                self.add_handle(ino.0, None, flags.0, listing),
                FopenFlags::empty(),
            )
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
        let handles = self.handles.lock();
        let Some(h) = handles.get(&fh.0).filter(|h| h.ino == ino.0) else {
            drop(handles);
            return answer(
                reply,
                "readdir",
                ino.0,
                Err::<(), _>(Fail::new(Errno::EBADF, "unknown handle")),
                |_, ()| {},
            );
        };
        for (i, (child, is_dir, name)) in h.listing.iter().enumerate().skip(offset as usize) {
            let kind = if *is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(INodeNo(*child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.lock().remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let used = self.ns.read().region_count();
        let max = self.opts.max_regions;
        reply.statfs(
            0,
            0,
            0,
            max,
            max.saturating_sub(used),
            PAGE_SIZE as u32,
            crate::namespace::NAME_MAX as u32,
            PAGE_SIZE as u32,
        );
    }

    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        let res = self.do_ioctl(req, ino.0, fh, cmd, in_data, out_size);
        let subject = Lazy(|| format!("{cmd:#x} on {}", self.region_name(ino.0)));
        answer(reply, "ioctl", subject, res, |r, out| r.ioctl(0, &out));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        xattr_reply(
            reply,
            "getxattr",
            ino.0,
            size,
            self.xattr_value(ino.0, name),
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr_reply(reply, "listxattr", ino.0, size, self.xattr_names(ino.0));
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let res = self.set_backing(ino.0, name, value, flags);
        answer(reply, "setxattr", self.name_of(ino.0), res, |r, ()| r.ok());
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = Err(if name == BACKING_XATTR {
            Fail::new(Errno::EPERM, "user.mshare.backing cannot be removed")
        } else {
            Fail::new(Errno::ENODATA, "no such attribute")
        });
        answer(reply, "removexattr", self.name_of(ino.0), res, |r, ()| {
            r.ok()
        });
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
        let res = (|| {
            let (region, writable) = self.handle_region(fh, ino.0)?;
            ensure(writable, Errno::EBADF, "not opened for writing")?;
            ensure(
                mode == 0,
                Errno::EOPNOTSUPP,
                "only plain fallocate is supported (use MSHAREFS_UNMAP to free)",
            )?;
            match region.info() {
                // Like the 2025 series: fallocate from 0 sizes an unsized region.
                Err(_) if offset == 0 => region.truncate(length, self.opts.align, &self.addrs),
                Err(f) => Err(f),
                Ok(info) => {
                    ensure(
                        offset.checked_add(length).is_some_and(|e| e <= info.size),
                        Errno::EFBIG,
                        "fallocate past the end of the region",
                    )?;
                    crate::backing::allocate(region.file()?.as_ref(), offset, length)
                        .map_err(Fail::from)
                }
            }
        })();
        answer(reply, "fallocate", self.name_of(ino.0), res, |r, ()| r.ok());
    }
}
