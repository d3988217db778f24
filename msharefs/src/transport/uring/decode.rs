//! Requests that arrive over io_uring, decoded from the kernel's bytes
//! into the server's [`Op`]. Anything this file system does not implement
//! is `ENOSYS`, as fuser answers it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, UNIX_EPOCH};

use nix::errno::Errno;
use zerocopy::FromBytes;

use super::abi::*;
use super::Incoming;
use crate::fail::Fail;
use crate::request::{AttrChange, DirSink, Fh, Ino, Op, OpenFlags, RenameFlags, SetTime};

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

/// The inode a request is on.
pub fn ino(req: &Incoming<'_>) -> Ino {
    Ino(req.header.nodeid)
}

/// The most reply bytes a `readdir` may fill (0 for other requests).
pub fn readdir_limit(req: &Incoming<'_>) -> usize {
    match req.header.opcode {
        op::READDIR => head::<ReadIn>(req.op).map_or(0, |a| a.size as usize),
        _ => 0,
    }
}

/// The request `req` carries; a `readdir` puts its entries into `into`.
pub fn op<'a>(req: &Incoming<'a>, into: DirSink<'a>) -> Result<Op<'a>, Fail> {
    let (opb, payload) = (req.op, req.payload);
    Ok(match req.header.opcode {
        op::LOOKUP => Op::Lookup {
            name: names::<1>(payload)?[0],
        },
        op::GETATTR => Op::Getattr,
        op::SETATTR => Op::Setattr(attr_change(&head(opb)?)),
        op::MKNOD => Op::Mknod {
            mode: head::<MknodIn>(opb)?.mode,
            name: names::<1>(payload)?[0],
        },
        op::MKDIR => Op::Mkdir {
            mode: head::<MkdirIn>(opb)?.mode,
            name: names::<1>(payload)?[0],
        },
        op::UNLINK => Op::Unlink {
            name: names::<1>(payload)?[0],
        },
        op::RMDIR => Op::Rmdir {
            name: names::<1>(payload)?[0],
        },
        op::SYMLINK => Op::Symlink {
            name: names::<1>(payload)?[0],
        },
        op::LINK => Op::Link {
            // `fuse_link_in` (the old inode), then the new name.
            name: names::<1>(payload)?[0],
        },
        op::RENAME | op::RENAME2 => {
            // `fuse_rename_in` is the first word of `fuse_rename2_in`.
            let newdir = Ino(head::<u64>(opb)?);
            let flags = match req.header.opcode {
                op::RENAME2 => head::<Rename2In>(opb)?.flags,
                _ => 0,
            };
            let [name, newname] = names(payload)?;
            Op::Rename {
                name,
                newdir,
                newname,
                flags: RenameFlags(flags),
            }
        }
        op::OPEN => Op::Open {
            flags: OpenFlags(head::<OpenIn>(opb)?.flags as i32),
        },
        op::CREATE => {
            let a: CreateIn = head(opb)?;
            Op::Create {
                name: names::<1>(payload)?[0],
                mode: a.mode,
                flags: OpenFlags(a.flags as i32),
            }
        }
        op::READ => {
            let a: ReadIn = head(opb)?;
            Op::Read {
                fh: Fh(a.fh),
                offset: a.offset,
                size: a.size,
            }
        }
        op::WRITE => {
            // `fuse_write_in` has `fuse_read_in`'s layout.
            let a: ReadIn = head(opb)?;
            let data = payload
                .get(..a.size as usize)
                .ok_or_else(|| malformed("short write"))?;
            Op::Write {
                fh: Fh(a.fh),
                offset: a.offset,
                data,
            }
        }
        op::STATFS => Op::Statfs,
        op::RELEASE => Op::Release {
            fh: Fh(head::<ReleaseIn>(opb)?.fh),
        },
        op::FSYNC => Op::Fsync,
        op::DESTROY => Op::Destroy,
        op::SETXATTR => {
            let a: SetxattrIn = head(opb)?;
            let [name] = names(payload)?;
            let value = payload
                .get(name.len() + 1..)
                .and_then(|v| v.get(..a.size as usize))
                .ok_or_else(|| malformed("short xattr value"))?;
            Op::Setxattr {
                name,
                value,
                flags: a.flags as i32,
            }
        }
        op::GETXATTR => Op::Getxattr {
            size: head::<GetxattrIn>(opb)?.size,
            name: names::<1>(payload)?[0],
        },
        op::LISTXATTR => Op::Listxattr {
            size: head::<GetxattrIn>(opb)?.size,
        },
        op::REMOVEXATTR => Op::Removexattr {
            name: names::<1>(payload)?[0],
        },
        op::OPENDIR => Op::Opendir,
        op::READDIR => {
            let a: ReadIn = head(opb)?;
            Op::Readdir {
                fh: Fh(a.fh),
                offset: a.offset,
                into,
            }
        }
        op::RELEASEDIR => Op::Releasedir {
            fh: Fh(head::<ReleaseIn>(opb)?.fh),
        },
        op::IOCTL => {
            let a: IoctlIn = head(opb)?;
            if a.flags & IOCTL_UNRESTRICTED != 0 {
                return Err(Fail::new(Errno::ENOSYS, "unrestricted ioctl"));
            }
            let input = payload
                .get(..a.in_size as usize)
                .ok_or_else(|| malformed("short ioctl input"))?;
            Op::Ioctl {
                fh: Fh(a.fh),
                cmd: a.cmd,
                input,
                out_size: a.out_size,
            }
        }
        op::FALLOCATE => {
            let a: FallocateIn = head(opb)?;
            Op::Fallocate {
                fh: Fh(a.fh),
                offset: a.offset,
                length: a.length,
                mode: a.mode as i32,
            }
        }
        other => {
            return Err(Fail::with(
                Errno::ENOSYS,
                format!("opcode {other} is not implemented"),
            ))
        }
    })
}

/// The changes a `fuse_setattr_in` asks for.
fn attr_change(a: &SetattrIn) -> AttrChange {
    let has = |bit: u32| a.valid & bit != 0;
    let when = |now: u32, secs: u64, nsecs: u32| {
        if has(now) {
            SetTime::Now
        } else {
            let t = UNIX_EPOCH.checked_add(Duration::new(secs, nsecs));
            SetTime::At(t.unwrap_or(UNIX_EPOCH))
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

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
