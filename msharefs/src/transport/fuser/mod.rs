//! The `/dev/fuse` transport, through fuser: each callback builds the
//! server's [`Op`], runs [`MshareFs::handle`] and sends the
//! [`Reply`](crate::request::Reply) with
//! fuser's reply type ([`reply`]). `INIT` is answered here: it says what
//! the connection offers (passthrough, FUSE over io_uring, whose queues
//! [`crate::transport::uring`] starts). [`session`] mounts and makes the
//! session. fuser's types are used in this folder and nowhere else.

pub mod reply;
pub mod session;

use std::ffi::OsStr;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    FileHandle, Filesystem, INodeNo, InitFlags, IoctlFlags, KernelConfig, Notifier, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
};
use log::{error, info, warn};
use parking_lot::Mutex;

use self::reply::{file_type, Answer};
use super::uring;
use crate::fs::{Invalidate, MshareFs};
use crate::options::Uring;
use crate::request::{self, AttrChange, Caller, DirEntry, Fh, Ino, Op, SetTime};

/// The file system as the fuser session holds it: the shared [`MshareFs`]
/// (the io_uring queues serve the same one) and the queues made at `INIT`
/// until the connection's descriptor is known.
#[derive(Debug)]
pub struct FuserFs {
    fs: Arc<MshareFs>,
    uring: Queues,
}

/// Where `INIT` puts the io_uring queues it made, until the connection's
/// descriptor lets them start.
pub type Queues = Arc<Mutex<Option<uring::Starter>>>;

impl FuserFs {
    /// The adapter for `fs`, and where its queues will be.
    pub fn new(fs: Arc<MshareFs>) -> (Self, Queues) {
        let uring = Queues::default();
        (
            FuserFs {
                fs,
                uring: uring.clone(),
            },
            uring,
        )
    }

    /// Runs `op` on `ino` for the caller of `req` and sends the answer.
    fn serve<R: Answer>(&self, req: &Request, ino: INodeNo, op: Op<'_>, reply: R) {
        reply.answer(self.fs.handle(caller(req), Ino(ino.0), op));
    }

    /// Makes the io_uring queues for the connection: whether they exist.
    /// They start when [`session::Served`] gives them the connection.
    fn start_uring(&self) -> bool {
        let fs = Arc::downgrade(&self.fs);
        let serve: std::sync::Weak<dyn uring::Serve> = fs;
        match uring::start(serve, self.fs.options().io_uring_q_depth) {
            Ok(starter) => {
                *self.uring.lock() = Some(starter);
                true
            }
            Err(_) => false,
        }
    }
}

/// Who sent `req`.
fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

/// fuser's notifier tells the kernel about changes it did not make.
impl Invalidate for Notifier {
    fn inval_inode(&self, ino: Ino) -> io::Result<()> {
        Notifier::inval_inode(self, INodeNo(ino.0), -1, 0)
    }
}

/// The server's time of a fuser `setattr` time.
fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(t),
    }
}

impl Filesystem for FuserFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let opts = self.fs.options();
        if self.fs.passthrough() {
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if ok {
                info!("FUSE passthrough enabled: region files can be mmapped");
            } else {
                self.fs.no_passthrough();
                warn!("the kernel offers no FUSE passthrough: region files cannot be mmapped (ENODEV); use libmshare");
            }
        } else {
            info!("passthrough=off: region files cannot be mmapped (ENODEV)");
        }
        let offered = config
            .capabilities()
            .contains(InitFlags::FUSE_OVER_IO_URING);
        let uring = opts.io_uring != Uring::Off
            && offered
            && config.set_max_write(uring::MAX_PAYLOAD as u32).is_ok()
            && self.start_uring()
            && config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok();
        if !uring && opts.io_uring == Uring::On {
            error!("io_uring=on: FUSE over io_uring is not available; requests are read from /dev/fuse");
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.serve(req, parent, Op::Lookup { name }, reply);
    }

    fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64) {
        let _ = self
            .fs
            .handle(caller(req), Ino(ino.0), Op::Forget { nlookup });
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.serve(req, ino, Op::Getattr, reply);
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
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
        };
        self.serve(req, ino, Op::Setattr(change), reply);
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
        self.serve(req, parent, Op::Mknod { name, mode }, reply);
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
        self.serve(req, parent, Op::Mkdir { name, mode }, reply);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.serve(req, parent, Op::Unlink { name }, reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.serve(req, parent, Op::Rmdir { name }, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        self.serve(req, parent, Op::Symlink { name }, reply);
    }

    fn link(
        &self,
        req: &Request,
        _ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.serve(req, newparent, Op::Link { name: newname }, reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let op = Op::Rename {
            name,
            newdir: Ino(newparent.0),
            newname,
            flags: request::RenameFlags(flags.bits()),
        };
        self.serve(req, parent, op, reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let flags = request::OpenFlags(flags.0);
        self.serve(req, ino, Op::Open { flags }, reply);
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
        let flags = request::OpenFlags(flags);
        self.serve(req, parent, Op::Create { name, mode, flags }, reply);
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let fh = Fh(fh.0);
        self.serve(req, ino, Op::Read { fh, offset, size }, reply);
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let fh = Fh(fh.0);
        self.serve(req, ino, Op::Write { fh, offset, data }, reply);
    }

    fn fsync(&self, req: &Request, ino: INodeNo, _fh: FileHandle, _data: bool, reply: ReplyEmpty) {
        self.serve(req, ino, Op::Fsync, reply);
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.serve(req, ino, Op::Release { fh: Fh(fh.0) }, reply);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.serve(req, ino, Op::Opendir, reply);
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let res = {
            let mut add =
                |e: DirEntry<'_>| reply.add(INodeNo(e.ino.0), e.cookie, file_type(e.kind), e.name);
            let op = Op::Readdir {
                fh: Fh(fh.0),
                offset,
                into: &mut add,
            };
            self.fs.handle(caller(req), Ino(ino.0), op)
        };
        reply.answer(res);
    }

    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.serve(req, ino, Op::Releasedir { fh: Fh(fh.0) }, reply);
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        self.serve(req, ino, Op::Statfs, reply);
    }

    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        input: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        let op = Op::Ioctl {
            fh: Fh(fh.0),
            cmd,
            input,
            out_size,
        };
        self.serve(req, ino, op, reply);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.serve(req, ino, Op::Getxattr { name, size }, reply);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.serve(req, ino, Op::Listxattr { size }, reply);
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
        self.serve(req, ino, Op::Setxattr { name, value, flags }, reply);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.serve(req, ino, Op::Removexattr { name }, reply);
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let op = Op::Fallocate {
            fh: Fh(fh.0),
            offset,
            length,
            mode,
        };
        self.serve(req, ino, op, reply);
    }
}
