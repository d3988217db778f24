//! Requests that arrive over io_uring ([`crate::uring`]): decoded here and
//! passed to the same handlers the fuser dispatch in `mod.rs` calls, with
//! their results encoded as the kernel's FUSE reply structures. Anything
//! this file system does not implement is `ENOSYS`, as fuser answers it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileHandle, FileType, FopenFlags, INodeNo, OpenFlags, RenameFlags, TimeOrNow,
};
use log::debug;
use nix::errno::Errno;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::attr::AttrChange;
use super::reply::{ATTR_TTL, ENTRY_TTL};
use super::{xattr, Caller, MshareFs, REGION_OPEN};
use crate::fail::Fail;
use crate::namespace::Removal;
use crate::region::OpenMode;
use crate::uring::abi::*;
use crate::uring::{Incoming, Serve};

/// A decoding error: the request is malformed.
fn malformed(what: &str) -> Fail {
    Fail::with(Errno::EINVAL, format!("malformed request: {what}"))
}

/// The opcode's header at the start of `op`.
fn head<T: FromBytes>(op: &[u8]) -> Result<T, Fail> {
    T::read_from_prefix(op)
        .map(|(h, _)| h)
        .map_err(|_| malformed("short header"))
}

/// The NUL-terminated strings at the start of `payload`.
fn names<const N: usize>(payload: &[u8]) -> Result<[&OsStr; N], Fail> {
    let mut rest = payload;
    let mut out = [OsStr::new(""); N];
    for o in &mut out {
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| malformed("name without its NUL"))?;
        *o = OsStr::from_bytes(&rest[..end]);
        rest = &rest[end + 1..];
    }
    Ok(out)
}

/// Seconds and nanoseconds since the epoch, as `fuse_attr` has them.
fn time(t: SystemTime) -> (u64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs(), d.subsec_nanos()),
        Err(e) => {
            // Before the epoch: negative seconds, nanoseconds forward.
            let d = e.duration();
            let (mut s, mut n) = (-(d.as_secs() as i64), d.subsec_nanos());
            if n > 0 {
                s -= 1;
                n = 1_000_000_000 - n;
            }
            (s as u64, n)
        }
    }
}

/// `S_IFMT` bits of a file type.
fn type_bits(kind: FileType) -> u32 {
    match kind {
        FileType::Directory => libc::S_IFDIR,
        FileType::RegularFile => libc::S_IFREG,
        FileType::Symlink => libc::S_IFLNK,
        FileType::NamedPipe => libc::S_IFIFO,
        FileType::CharDevice => libc::S_IFCHR,
        FileType::BlockDevice => libc::S_IFBLK,
        FileType::Socket => libc::S_IFSOCK,
    }
}

/// `struct fuse_attr` of `a`.
fn fuse_attr(a: &FileAttr) -> Attr {
    let (atime, atimensec) = time(a.atime);
    let (mtime, mtimensec) = time(a.mtime);
    let (ctime, ctimensec) = time(a.ctime);
    Attr {
        ino: a.ino.0,
        size: a.size,
        blocks: a.blocks,
        atime,
        mtime,
        ctime,
        atimensec,
        mtimensec,
        ctimensec,
        mode: type_bits(a.kind) | a.perm as u32,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: a.flags,
    }
}

/// `struct fuse_entry_out` of `a`.
fn entry_out(a: &FileAttr) -> EntryOut {
    EntryOut {
        nodeid: a.ino.0,
        generation: 0,
        entry_valid: ENTRY_TTL.as_secs(),
        attr_valid: ATTR_TTL.as_secs(),
        entry_valid_nsec: ENTRY_TTL.subsec_nanos(),
        attr_valid_nsec: ATTR_TTL.subsec_nanos(),
        attr: fuse_attr(a),
    }
}

/// `struct fuse_open_out` of an open answered as `mode` says.
fn open_out(fh: FileHandle, mode: &OpenMode) -> OpenOut {
    match mode {
        OpenMode::Passthrough(id) => OpenOut {
            fh: fh.0,
            open_flags: (REGION_OPEN | FopenFlags::FOPEN_PASSTHROUGH).bits(),
            backing_id: id.raw() as i32,
        },
        OpenMode::Direct => OpenOut {
            fh: fh.0,
            open_flags: (REGION_OPEN | FopenFlags::FOPEN_DIRECT_IO).bits(),
            backing_id: 0,
        },
    }
}

/// A reply being written into the entry's payload buffer.
struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Out<'_> {
    /// Appends `bytes`; EIO if the buffer (at least `max_write`) cannot
    /// hold them, which no reply of this file system reaches.
    fn put(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        let end = self.len + bytes.len();
        let dst = self
            .buf
            .get_mut(self.len..end)
            .ok_or_else(|| Fail::new(Errno::EIO, "reply larger than the ring buffer"))?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    fn put_struct<T: IntoBytes + Immutable>(&mut self, v: &T) -> Result<(), Fail> {
        self.put(v.as_bytes())
    }

    /// Appends one `fuse_dirent`; false if it does not fit in `limit`
    /// bytes of reply.
    fn dirent(
        &mut self,
        limit: usize,
        ino: INodeNo,
        cookie: u64,
        kind: FileType,
        name: &OsStr,
    ) -> bool {
        let name = name.as_bytes();
        let size = (size_of::<Dirent>() + name.len()).next_multiple_of(8);
        if self.len + size > limit.min(self.buf.len()) {
            return false;
        }
        let head = Dirent {
            ino: ino.0,
            off: cookie,
            namelen: name.len() as u32,
            kind: type_bits(kind) >> 12,
        };
        let start = self.len;
        self.buf[start..start + size].fill(0);
        self.buf[start..start + size_of::<Dirent>()].copy_from_slice(head.as_bytes());
        self.buf[start + size_of::<Dirent>()..][..name.len()].copy_from_slice(name);
        self.len += size;
        true
    }
}

impl Serve for MshareFs {
    fn serve(&self, req: &Incoming<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
        let mut out = Out { buf, len: 0 };
        let h = &req.header;
        match self.dispatch(req, &mut out) {
            Ok(()) => Ok(out.len),
            Err(f) => {
                debug!("request {} on inode {}: {f}", h.opcode, h.nodeid);
                Err(f.errno)
            }
        }
    }
}

impl MshareFs {
    /// Runs one request, writing its reply into `out`.
    fn dispatch(&self, req: &Incoming<'_>, out: &mut Out<'_>) -> Result<(), Fail> {
        let h = &req.header;
        let ino = INodeNo(h.nodeid);
        let who = Caller {
            uid: h.uid,
            gid: h.gid,
            pid: h.pid,
        };
        let (op, payload) = (req.op, req.payload);
        // What fuser refuses without allow_other: anyone but the mounter,
        // except for requests the kernel makes without a caller.
        let callerless = matches!(
            h.opcode,
            op::READ
                | op::WRITE
                | op::READDIR
                | op::FSYNC
                | op::RELEASE
                | op::RELEASEDIR
                | op::DESTROY
        );
        if !self.opts.allow_other && h.uid != self.owner && !callerless {
            return Err(Fail::new(
                Errno::EACCES,
                "only the mounter may use this mount",
            ));
        }
        match h.opcode {
            op::LOOKUP => {
                let [name] = names(payload)?;
                out.put_struct(&entry_out(&self.do_lookup(ino, name)?))
            }
            op::GETATTR => out.put_struct(&attr_out(&self.attr_of(ino)?)),
            op::SETATTR => {
                let a: SetattrIn = head(op)?;
                let change = attr_change(&a);
                out.put_struct(&attr_out(&self.do_setattr(who, ino, change)?))
            }
            op::MKNOD => {
                let a: MknodIn = head(op)?;
                let [name] = names(payload)?;
                out.put_struct(&entry_out(&self.do_mknod(who, ino, name, a.mode)?))
            }
            op::MKDIR => {
                let a: MkdirIn = head(op)?;
                let [name] = names(payload)?;
                out.put_struct(&entry_out(&self.do_mkdir(who, ino, name, a.mode)?))
            }
            op::UNLINK | op::RMDIR => {
                let [name] = names(payload)?;
                let how = if h.opcode == op::UNLINK {
                    Removal::File
                } else {
                    Removal::Dir
                };
                self.do_remove(ino, name, how)
            }
            op::SYMLINK => Err(Fail::new(Errno::EPERM, "symbolic links are not supported")),
            op::LINK => Err(Fail::new(Errno::EPERM, "hard links are not supported")),
            op::RENAME | op::RENAME2 => {
                // `fuse_rename_in` is the first word of `fuse_rename2_in`.
                let newdir = INodeNo(head::<u64>(op)?);
                let flags = if h.opcode == op::RENAME2 {
                    head::<Rename2In>(op)?.flags
                } else {
                    0
                };
                let [from, to] = names(payload)?;
                let flags = RenameFlags::from_bits_retain(flags);
                self.do_rename(ino, from, newdir, to, flags)
            }
            op::OPEN => {
                let a: OpenIn = head(op)?;
                let (fh, mode) =
                    self.do_open(ino, OpenFlags(a.flags as i32), |fd| self.register(fd))?;
                out.put_struct(&open_out(fh, &mode))
            }
            op::CREATE => {
                let a: CreateIn = head(op)?;
                let [name] = names(payload)?;
                let flags = OpenFlags(a.flags as i32);
                let (attr, fh, mode) =
                    self.do_create(who, ino, name, a.mode, flags, |fd| self.register(fd))?;
                out.put_struct(&entry_out(&attr))?;
                out.put_struct(&open_out(fh, &mode))
            }
            op::READ => {
                let a: ReadIn = head(op)?;
                out.put(&self.do_read(ino, FileHandle(a.fh), a.offset, a.size)?)
            }
            op::WRITE => {
                // `fuse_write_in` has `fuse_read_in`'s layout.
                let a: ReadIn = head(op)?;
                let data = payload
                    .get(..a.size as usize)
                    .ok_or_else(|| malformed("short write"))?;
                let n = self.do_write(ino, FileHandle(a.fh), a.offset, data)?;
                out.put_struct(&WriteOut {
                    size: n,
                    padding: 0,
                })
            }
            op::STATFS => {
                let st = self.usage();
                out.put_struct(&StatfsOut {
                    files: st.files,
                    ffree: st.ffree,
                    bsize: st.bsize,
                    namelen: st.namelen,
                    frsize: st.bsize,
                    ..Default::default()
                })
            }
            op::RELEASE => {
                let a: ReleaseIn = head(op)?;
                self.do_release(ino, FileHandle(a.fh));
                Ok(())
            }
            op::FSYNC | op::DESTROY => Ok(()),
            op::SETXATTR => {
                let a: SetxattrIn = head(op)?;
                let [name] = names(payload)?;
                let value = payload
                    .get(name.len() + 1..)
                    .and_then(|v| v.get(..a.size as usize))
                    .ok_or_else(|| malformed("short xattr value"))?;
                self.do_setxattr(who, ino, name, value, a.flags as i32)
            }
            op::GETXATTR => {
                let a: GetxattrIn = head(op)?;
                let [name] = names(payload)?;
                xattr_out(out, a.size, self.xattr_value(who, ino, name))
            }
            op::LISTXATTR => {
                let a: GetxattrIn = head(op)?;
                xattr_out(out, a.size, self.xattr_names(ino))
            }
            op::REMOVEXATTR => {
                let [name] = names(payload)?;
                self.do_removexattr(name)
            }
            op::OPENDIR => {
                let fh = self.do_opendir(ino)?;
                out.put_struct(&OpenOut {
                    fh: fh.0,
                    ..Default::default()
                })
            }
            op::READDIR => {
                let a: ReadIn = head(op)?;
                let limit = a.size as usize;
                self.do_readdir(
                    ino,
                    FileHandle(a.fh),
                    a.offset,
                    |child, cookie, kind, name| !out.dirent(limit, child, cookie, kind, name),
                )
            }
            op::RELEASEDIR => {
                let a: ReleaseIn = head(op)?;
                self.handles.remove(FileHandle(a.fh));
                Ok(())
            }
            op::IOCTL => {
                let a: IoctlIn = head(op)?;
                if a.flags & IOCTL_UNRESTRICTED != 0 {
                    return Err(Fail::new(Errno::ENOSYS, "unrestricted ioctl"));
                }
                let input = payload
                    .get(..a.in_size as usize)
                    .ok_or_else(|| malformed("short ioctl input"))?;
                let data = self.do_ioctl(ino, FileHandle(a.fh), a.cmd, input, a.out_size)?;
                out.put_struct(&IoctlOut::default())?;
                out.put(&data)
            }
            op::FALLOCATE => {
                let a: FallocateIn = head(op)?;
                self.do_fallocate(ino, FileHandle(a.fh), a.offset, a.length, a.mode as i32)
            }
            other => Err(Fail::with(
                Errno::ENOSYS,
                format!("opcode {other} is not implemented"),
            )),
        }
    }
}

/// `struct fuse_attr_out` of `a`.
fn attr_out(a: &FileAttr) -> AttrOut {
    AttrOut {
        attr_valid: ATTR_TTL.as_secs(),
        attr_valid_nsec: ATTR_TTL.subsec_nanos(),
        dummy: 0,
        attr: fuse_attr(a),
    }
}

/// The changes a `fuse_setattr_in` asks for.
fn attr_change(a: &SetattrIn) -> AttrChange {
    let has = |bit: u32| a.valid & bit != 0;
    let when = |now: u32, secs: u64, nsecs: u32| {
        if has(now) {
            TimeOrNow::Now
        } else {
            let t = UNIX_EPOCH.checked_add(std::time::Duration::new(secs, nsecs));
            TimeOrNow::SpecificTime(t.unwrap_or(UNIX_EPOCH))
        }
    };
    AttrChange {
        mode: has(fattr::MODE).then_some(a.mode),
        uid: has(fattr::UID).then_some(a.uid),
        gid: has(fattr::GID).then_some(a.gid),
        size: has(fattr::SIZE).then_some(a.size),
        atime: has(fattr::ATIME).then(|| when(fattr::ATIME_NOW, a.atime, a.atimensec)),
        mtime: has(fattr::MTIME).then(|| when(fattr::MTIME_NOW, a.mtime, a.mtimensec)),
    }
}

/// A getxattr/listxattr reply: `fuse_getxattr_out` with the length when
/// asked for 0 bytes, the data otherwise.
fn xattr_out(out: &mut Out<'_>, size: u32, res: Result<Vec<u8>, Fail>) -> Result<(), Fail> {
    let data = xattr::fit(size, res)?;
    if size == 0 {
        out.put_struct(&GetxattrIn {
            size: data.len() as u32,
            padding: 0,
        })
    } else {
        out.put(&data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_nul() {
        let [a, b] = names::<2>(b"old\0new\0").unwrap();
        assert_eq!((a, b), (OsStr::new("old"), OsStr::new("new")));
        assert!(names::<2>(b"only\0").is_err());
        assert!(names::<1>(b"unterminated").is_err());
    }

    #[test]
    fn times_before_the_epoch_count_back() {
        let t = UNIX_EPOCH - std::time::Duration::new(1, 250_000_000);
        let (s, n) = time(t);
        assert_eq!((s as i64, n), (-2, 750_000_000));
        assert_eq!(time(UNIX_EPOCH + std::time::Duration::new(5, 7)), (5, 7));
    }

    #[test]
    fn dirents_are_padded_and_stop_at_the_limit() {
        let mut buf = vec![0u8; 4096];
        let mut out = Out {
            buf: &mut buf,
            len: 0,
        };
        assert!(out.dirent(64, INodeNo(5), 3, FileType::RegularFile, OsStr::new("abc")));
        assert_eq!(out.len, 32);
        // 24 + 9 rounds up to 40: 32 + 40 > 64.
        assert!(!out.dirent(
            64,
            INodeNo(6),
            4,
            FileType::Directory,
            OsStr::new("123456789")
        ));
        let d = Dirent::read_from_prefix(&buf[..]).unwrap().0;
        assert_eq!(
            (d.ino, d.off, d.namelen, d.kind),
            (5, 3, 3, libc::DT_REG as u32)
        );
        assert_eq!(&buf[24..27], b"abc");
    }
}
