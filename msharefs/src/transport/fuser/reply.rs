//! Sending the server's [`Reply`] with fuser's reply types: one `ok` per
//! reply type for the answers it can carry, and the errno for a refusal.
//!
//! # Safety
//!
//! fuser's `wrap_backing` wants a passthrough id that belongs to the
//! connection and stays open while its wrapper lives: the file system's
//! [`PassthroughId`](crate::passthrough::PassthroughId) holds it open, and
//! the wrapper is given back with `into_raw` right after the reply, so
//! fuser never closes it.
#![allow(unsafe_code)]

use fuser::{
    FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr,
};
use log::error;

use crate::fail::Fail;
use crate::fs::{ATTR_TTL, ENTRY_TTL};
use crate::region::OpenMode;
use crate::request::{self, Attr, FileKind, Reply};

/// fuser's attributes of `a`.
pub fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino.0),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: a.blksize,
        flags: 0,
    }
}

/// fuser's file type of `k`.
pub fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Dir => FileType::Directory,
        FileKind::File => FileType::RegularFile,
    }
}

/// The open flags of `mode` as fuser takes them.
fn fopen(mode: &OpenMode) -> FopenFlags {
    FopenFlags::from_bits_retain(request::open_flags(mode))
}

/// A fuser reply type: the answers it carries, and the errno.
pub trait Answer: Sized {
    /// Sends `reply`; gives it back if this reply type cannot carry it.
    fn ok(self, reply: Reply) -> Result<(), (Self, Reply)>;
    /// Replies with `errno`.
    fn fail(self, errno: fuser::Errno);

    /// Sends the handler's answer: the reply, or the refusal's errno.
    fn answer(self, res: Result<Reply, Fail>) {
        match res {
            Ok(r) => {
                if let Err((me, r)) = self.ok(r) {
                    // A handler answered with what this request cannot
                    // carry: a bug, which the client sees as EIO.
                    error!(
                        "a reply that {} cannot carry: {r:?}",
                        std::any::type_name::<Self>()
                    );
                    me.fail(fuser::Errno::EIO);
                }
            }
            Err(f) => self.fail(fuser::Errno::from_i32(f.errno as i32)),
        }
    }
}

macro_rules! answer {
    ($t:ty, |$r:ident, $v:ident| $body:expr) => {
        impl Answer for $t {
            fn ok(self, $v: Reply) -> Result<(), (Self, Reply)> {
                let $r = self;
                $body;
                Ok(())
            }
            fn fail(self, errno: fuser::Errno) {
                self.error(errno)
            }
        }
    };
}

answer!(ReplyEmpty, |r, v| match v {
    Reply::Empty => r.ok(),
    v => return Err((r, v)),
});
answer!(ReplyEntry, |r, v| match v {
    Reply::Entry(a) => r.entry_with_ttls(&ATTR_TTL, &ENTRY_TTL, &file_attr(&a), Generation(0)),
    v => return Err((r, v)),
});
answer!(ReplyAttr, |r, v| match v {
    Reply::Attr(a) => r.attr(&ATTR_TTL, &file_attr(&a)),
    v => return Err((r, v)),
});
answer!(ReplyOpen, |r, v| match v {
    Reply::Opened(fh, mode) => opened(r, FileHandle(fh.0), &mode),
    Reply::OpenedDir(fh) => r.opened(FileHandle(fh.0), FopenFlags::empty()),
    v => return Err((r, v)),
});
answer!(ReplyCreate, |r, v| match v {
    Reply::Created(a, fh, mode) => created(r, &file_attr(&a), FileHandle(fh.0), &mode),
    v => return Err((r, v)),
});
answer!(ReplyData, |r, v| match v {
    Reply::Data(d) => r.data(&d),
    v => return Err((r, v)),
});
answer!(ReplyWrite, |r, v| match v {
    Reply::Written(n) => r.written(n),
    v => return Err((r, v)),
});
answer!(ReplyStatfs, |r, v| match v {
    Reply::Statfs(st) => r.statfs(0, 0, 0, st.files, st.ffree, st.bsize, st.namelen, st.bsize),
    v => return Err((r, v)),
});
answer!(ReplyIoctl, |r, v| match v {
    Reply::Ioctl(d) => r.ioctl(0, &d),
    v => return Err((r, v)),
});
answer!(ReplyXattr, |r, v| match v {
    Reply::Size(n) => r.size(n),
    Reply::Data(d) => r.data(&d),
    v => return Err((r, v)),
});
answer!(ReplyDirectory, |r, v| match v {
    Reply::Empty => r.ok(),
    v => return Err((r, v)),
});

/// Answers an open as `mode` says: passthrough to the registered backing
/// file, or through the server.
fn opened(reply: ReplyOpen, fh: FileHandle, mode: &OpenMode) {
    match mode {
        OpenMode::Passthrough(id) => {
            // SAFETY: see the module's Safety section.
            let wrapped = unsafe { reply.wrap_backing(id.raw()) };
            reply.opened_passthrough(fh, fopen(mode), &wrapped);
            wrapped.into_raw();
        }
        OpenMode::Direct => reply.opened(fh, fopen(mode)),
    }
}

/// Answers a create as `mode` says.
fn created(reply: ReplyCreate, attr: &FileAttr, fh: FileHandle, mode: &OpenMode) {
    match mode {
        OpenMode::Passthrough(id) => {
            // SAFETY: see the module's Safety section.
            let wrapped = unsafe { reply.wrap_backing(id.raw()) };
            reply.created_passthrough(&ATTR_TTL, attr, Generation(0), fh, fopen(mode), &wrapped);
            wrapped.into_raw();
        }
        OpenMode::Direct => reply.created(&ATTR_TTL, attr, Generation(0), fh, fopen(mode)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The protocol's open flags, as the io_uring encoder writes them, are
    /// fuser's.
    #[test]
    fn open_flags_are_the_protocols() {
        assert_eq!(request::FOPEN_DIRECT_IO, FopenFlags::FOPEN_DIRECT_IO.bits());
        assert_eq!(request::FOPEN_NOFLUSH, FopenFlags::FOPEN_NOFLUSH.bits());
        assert_eq!(
            request::FOPEN_PASSTHROUGH,
            FopenFlags::FOPEN_PASSTHROUGH.bits()
        );
    }

    #[test]
    fn attributes_carry_over() {
        let a = Attr {
            ino: request::Ino(9),
            size: 4096,
            blocks: 8,
            atime: std::time::UNIX_EPOCH,
            mtime: std::time::UNIX_EPOCH,
            ctime: std::time::UNIX_EPOCH,
            kind: FileKind::Dir,
            perm: 0o711,
            nlink: 2,
            uid: 3,
            gid: 4,
            blksize: 4096,
        };
        let f = file_attr(&a);
        assert_eq!(
            (f.ino, f.size, f.blocks, f.kind),
            (INodeNo(9), 4096, 8, FileType::Directory)
        );
        assert_eq!(
            (f.perm, f.nlink, f.uid, f.gid, f.blksize),
            (0o711, 2, 3, 4, 4096)
        );
    }
}
