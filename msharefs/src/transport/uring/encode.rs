//! Replies to requests that arrived over io_uring: the server's [`Reply`]
//! written as the kernel's FUSE reply structures into the entry's payload
//! buffer.

use std::os::unix::ffi::OsStrExt;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use zerocopy::{Immutable, IntoBytes};

use super::abi::*;
use crate::fail::Fail;
use crate::fs::{ATTR_TTL, ENTRY_TTL};
use crate::region::OpenMode;
use crate::request::{self, DirEntry, Fh, Reply};

/// A reply being written into the entry's payload buffer.
pub struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Out<'a> {
    /// An empty reply in `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Out { buf, len: 0 }
    }

    /// The bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

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
    pub fn dirent(&mut self, limit: usize, e: DirEntry<'_>) -> bool {
        let name = e.name.as_bytes();
        let size = (size_of::<Dirent>() + name.len()).next_multiple_of(8);
        if self.len + size > limit.min(self.buf.len()) {
            return false;
        }
        let head = Dirent {
            ino: e.ino.0,
            off: e.cookie,
            namelen: name.len() as u32,
            kind: e.kind.dirent_type(),
        };
        let start = self.len;
        self.buf[start..start + size].fill(0);
        self.buf[start..start + size_of::<Dirent>()].copy_from_slice(head.as_bytes());
        self.buf[start + size_of::<Dirent>()..][..name.len()].copy_from_slice(name);
        self.len += size;
        true
    }

    /// Writes `reply`.
    pub fn reply(&mut self, reply: Reply) -> Result<(), Fail> {
        match reply {
            // A readdir's entries are already in.
            Reply::Empty | Reply::None => Ok(()),
            Reply::Entry(a) => self.put_struct(&entry_out(&a)),
            Reply::Attr(a) => self.put_struct(&attr_out(&a)),
            Reply::Opened(fh, mode) => self.put_struct(&open_out(fh, &mode)),
            Reply::OpenedDir(fh) => self.put_struct(&OpenOut {
                fh: fh.0,
                ..Default::default()
            }),
            Reply::Created(a, fh, mode) => {
                self.put_struct(&entry_out(&a))?;
                self.put_struct(&open_out(fh, &mode))
            }
            Reply::Data(d) => self.put(&d),
            // `fuse_getxattr_out` has `fuse_getxattr_in`'s layout.
            Reply::Size(n) => self.put_struct(&GetxattrIn {
                size: n,
                padding: 0,
            }),
            Reply::Written(n) => self.put_struct(&WriteOut {
                size: n,
                padding: 0,
            }),
            Reply::Statfs(st) => self.put_struct(&StatfsOut {
                files: st.files,
                ffree: st.ffree,
                bsize: st.bsize,
                namelen: st.namelen,
                frsize: st.bsize,
                ..Default::default()
            }),
            Reply::Ioctl(d) => {
                self.put_struct(&IoctlOut::default())?;
                self.put(&d)
            }
        }
    }
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

/// `struct fuse_attr` of `a`.
fn fuse_attr(a: &request::Attr) -> Attr {
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
        mode: a.kind.mode_bits() | a.perm as u32,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: a.blksize,
        flags: 0,
    }
}

/// `struct fuse_entry_out` of `a`.
fn entry_out(a: &request::Attr) -> EntryOut {
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

/// `struct fuse_attr_out` of `a`.
fn attr_out(a: &request::Attr) -> AttrOut {
    AttrOut {
        attr_valid: ATTR_TTL.as_secs(),
        attr_valid_nsec: ATTR_TTL.subsec_nanos(),
        dummy: 0,
        attr: fuse_attr(a),
    }
}

/// `struct fuse_open_out` of an open answered as `mode` says.
fn open_out(fh: Fh, mode: &OpenMode) -> OpenOut {
    OpenOut {
        fh: fh.0,
        open_flags: request::open_flags(mode),
        backing_id: match mode {
            OpenMode::Passthrough(id) => id.raw() as i32,
            OpenMode::Direct => 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use zerocopy::FromBytes;

    use super::*;
    use crate::request::{FileKind, Ino, Statfs};

    #[test]
    fn times_before_the_epoch_count_back() {
        let t = UNIX_EPOCH - std::time::Duration::new(1, 250_000_000);
        let (s, n) = time(t);
        assert_eq!((s as i64, n), (-2, 750_000_000));
        assert_eq!(time(UNIX_EPOCH + std::time::Duration::new(5, 7)), (5, 7));
    }

    fn entry(ino: u64, cookie: u64, kind: FileKind, name: &str) -> DirEntry<'_> {
        DirEntry {
            ino: Ino(ino),
            cookie,
            kind,
            name: OsStr::new(name),
        }
    }

    #[test]
    fn dirents_are_padded_and_stop_at_the_limit() {
        let mut buf = vec![0xffu8; 4096];
        let mut out = Out::new(&mut buf);
        assert!(out.dirent(64, entry(5, 3, FileKind::File, "abc")));
        assert_eq!(out.len(), 32);
        // 24 + 9 rounds up to 40: 32 + 40 > 64.
        assert!(!out.dirent(64, entry(6, 4, FileKind::Dir, "123456789")));
        let d = Dirent::read_from_prefix(&buf[..]).unwrap().0;
        assert_eq!(
            (d.ino, d.off, d.namelen, d.kind),
            (5, 3, 3, libc::DT_REG as u32)
        );
        assert_eq!(&buf[24..32], b"abc\0\0\0\0\0");
    }

    fn attr() -> request::Attr {
        request::Attr {
            ino: Ino(7),
            size: 2 << 20,
            blocks: 4096,
            atime: UNIX_EPOCH + std::time::Duration::new(10, 1),
            mtime: UNIX_EPOCH + std::time::Duration::new(20, 2),
            ctime: UNIX_EPOCH + std::time::Duration::new(30, 3),
            kind: FileKind::File,
            perm: 0o640,
            nlink: 1,
            uid: 1000,
            gid: 100,
            blksize: 2 << 20,
        }
    }

    /// The bytes of an entry reply, field by field as `<linux/fuse.h>`
    /// lays them out.
    #[test]
    fn an_entry_reply_has_the_kernel_layout() {
        let mut buf = vec![0u8; 4096];
        let mut out = Out::new(&mut buf);
        out.reply(Reply::Entry(attr())).unwrap();
        assert_eq!(out.len(), 128);
        let u64_at = |o: usize| u64::from_ne_bytes(buf[o..o + 8].try_into().unwrap());
        let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap());
        assert_eq!(u64_at(0), 7, "nodeid");
        assert_eq!(u64_at(8), 0, "generation");
        assert_eq!(u64_at(16), ENTRY_TTL.as_secs(), "entry_valid");
        // fuse_attr starts at 40.
        assert_eq!(u64_at(40), 7, "attr.ino");
        assert_eq!(u64_at(48), 2 << 20, "attr.size");
        assert_eq!(u64_at(56), 4096, "attr.blocks");
        assert_eq!((u64_at(64), u64_at(72), u64_at(80)), (10, 20, 30));
        assert_eq!((u32_at(88), u32_at(92), u32_at(96)), (1, 2, 3));
        assert_eq!(u32_at(100), libc::S_IFREG | 0o640, "attr.mode");
        assert_eq!((u32_at(104), u32_at(108), u32_at(112)), (1, 1000, 100));
        assert_eq!(u32_at(120), 2 << 20, "attr.blksize");
    }

    #[test]
    fn other_replies_have_the_kernel_layout() {
        let mut buf = vec![0u8; 4096];
        let mut out = Out::new(&mut buf);
        out.reply(Reply::Written(4096)).unwrap();
        assert_eq!(out.len(), 8);
        let mut out = Out::new(&mut buf);
        out.reply(Reply::Size(17)).unwrap();
        assert_eq!(out.len(), 8);
        assert_eq!(&buf[..8], &[17, 0, 0, 0, 0, 0, 0, 0]);
        let mut out = Out::new(&mut buf);
        out.reply(Reply::Opened(Fh(9), OpenMode::Direct)).unwrap();
        assert_eq!(out.len(), 16);
        assert_eq!(u64::from_ne_bytes(buf[..8].try_into().unwrap()), 9);
        let flags = u32::from_ne_bytes(buf[8..12].try_into().unwrap());
        assert_eq!(flags, request::FOPEN_NOFLUSH | request::FOPEN_DIRECT_IO);
        let mut out = Out::new(&mut buf);
        let st = Statfs {
            files: 100,
            ffree: 90,
            bsize: 4096,
            namelen: 255,
        };
        out.reply(Reply::Statfs(st)).unwrap();
        assert_eq!(out.len(), 80);
        let s = StatfsOut::read_from_prefix(&buf[..]).unwrap().0;
        assert_eq!(
            (s.files, s.ffree, s.bsize, s.namelen, s.frsize),
            (100, 90, 4096, 255, 4096)
        );
        let mut out = Out::new(&mut buf);
        out.reply(Reply::Ioctl(vec![1, 2, 3])).unwrap();
        assert_eq!(out.len(), 19);
        assert_eq!(&buf[16..19], &[1, 2, 3]);
    }

    #[test]
    fn a_reply_larger_than_the_buffer_is_eio() {
        let mut buf = vec![0u8; 8];
        let mut out = Out::new(&mut buf);
        let f = out.reply(Reply::Data(vec![0; 9])).unwrap_err();
        assert_eq!(f.errno, Errno::EIO);
    }
}
