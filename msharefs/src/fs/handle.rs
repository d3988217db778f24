//! The one dispatcher: the access check every request passes, then the
//! handler of its [`Op`], whose refusal is logged here with its reason.

use log::debug;
use nix::errno::Errno;

use super::MshareFs;
use crate::fail::Fail;
use crate::namespace::Removal;
use crate::request::{Caller, Ino, Op, Reply};

impl MshareFs {
    /// Runs one request on inode `ino` for `who`: the reply, or the refusal
    /// (logged at debug level with the request and what it was about).
    pub fn handle(&self, who: Caller, ino: Ino, op: Op<'_>) -> Result<Reply, Fail> {
        let name = op.name();
        let subject = op.subject_name();
        let res = self.admit(who, &op).and_then(|()| self.run(who, ino, op));
        if let Err(f) = &res {
            match subject {
                Some(n) => debug!("{name} {n:?}: {f}"),
                None => debug!("{name} {}: {f}", self.region_name(ino)),
            }
        }
        res
    }

    /// The mounter-only rule of a mount without `allow_other`: anyone but
    /// the mounter is refused, except for requests the kernel makes on
    /// behalf of an open file or the connection. The kernel enforces the
    /// same rule first; this is the server's own check, the same over
    /// either transport.
    fn admit(&self, who: Caller, op: &Op<'_>) -> Result<(), Fail> {
        if self.opts.allow_other || who.uid == self.owner || op.callerless() {
            Ok(())
        } else {
            Err(Fail::new(
                Errno::EACCES,
                "only the mounter may use this mount",
            ))
        }
    }

    /// The handler of `op`.
    fn run(&self, who: Caller, ino: Ino, op: Op<'_>) -> Result<Reply, Fail> {
        Ok(match op {
            Op::Lookup { name } => Reply::Entry(self.do_lookup(ino, name)?),
            Op::Forget { nlookup } => {
                self.do_forget(ino, nlookup);
                Reply::None
            }
            Op::Getattr => Reply::Attr(self.attr_of(ino)?),
            Op::Setattr(change) => Reply::Attr(self.do_setattr(who, ino, change)?),
            Op::Mknod { name, mode } => Reply::Entry(self.do_mknod(who, ino, name, mode)?),
            Op::Mkdir { name, mode } => Reply::Entry(self.do_mkdir(who, ino, name, mode)?),
            Op::Unlink { name } => {
                self.do_remove(ino, name, Removal::File)?;
                Reply::Empty
            }
            Op::Rmdir { name } => {
                self.do_remove(ino, name, Removal::Dir)?;
                Reply::Empty
            }
            Op::Symlink { .. } => {
                return Err(Fail::new(Errno::EPERM, "symbolic links are not supported"))
            }
            Op::Link { .. } => return Err(Fail::new(Errno::EPERM, "hard links are not supported")),
            Op::Rename {
                name,
                newdir,
                newname,
                flags,
            } => {
                self.do_rename(ino, name, newdir, newname, flags)?;
                Reply::Empty
            }
            Op::Open { flags } => {
                let (fh, mode) = self.do_open(ino, flags)?;
                Reply::Opened(fh, mode)
            }
            Op::Create { name, mode, flags } => {
                let (attr, fh, mode) = self.do_create(who, ino, name, mode, flags)?;
                Reply::Created(attr, fh, mode)
            }
            Op::Read { fh, offset, size } => Reply::Data(self.do_read(ino, fh, offset, size)?),
            Op::Write { fh, offset, data } => Reply::Written(self.do_write(ino, fh, offset, data)?),
            Op::Fsync | Op::Destroy => Reply::Empty,
            Op::Release { fh } => {
                self.do_release(ino, fh);
                Reply::Empty
            }
            Op::Opendir => Reply::OpenedDir(self.do_opendir(ino)?),
            Op::Readdir { fh, offset, into } => {
                self.do_readdir(ino, fh, offset, into)?;
                Reply::Empty
            }
            Op::Releasedir { fh } => {
                self.do_releasedir(fh);
                Reply::Empty
            }
            Op::Statfs => Reply::Statfs(self.usage()),
            Op::Ioctl {
                fh,
                cmd,
                input,
                out_size,
            } => Reply::Ioctl(self.do_ioctl(ino, fh, cmd, input, out_size)?),
            Op::Getxattr { name, size } => sized(size, self.xattr_value(who, ino, name)?)?,
            Op::Listxattr { size } => sized(size, self.xattr_names(ino)?)?,
            Op::Setxattr { name, value, flags } => {
                self.do_setxattr(who, ino, name, value, flags)?;
                Reply::Empty
            }
            Op::Removexattr { name } => {
                self.do_removexattr(name)?;
                Reply::Empty
            }
            Op::Fallocate {
                fh,
                offset,
                length,
                mode,
            } => {
                self.do_fallocate(ino, fh, offset, length, mode)?;
                Reply::Empty
            }
        })
    }
}

/// A getxattr/listxattr answer for the caller's buffer of `size` bytes:
/// the length when asked for 0, the data when it fits, `ERANGE` when not.
fn sized(size: u32, data: Vec<u8>) -> Result<Reply, Fail> {
    match size {
        0 => Ok(Reply::Size(data.len() as u32)),
        n if data.len() <= n as usize => Ok(Reply::Data(data)),
        _ => Err(Fail::new(Errno::ERANGE, "buffer too small")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_answers_fit_the_buffer() {
        assert!(matches!(sized(0, b"abc".to_vec()), Ok(Reply::Size(3))));
        assert!(matches!(sized(3, b"abc".to_vec()), Ok(Reply::Data(d)) if d == b"abc"));
        assert_eq!(sized(2, b"abc".to_vec()).unwrap_err().errno, Errno::ERANGE);
    }
}
