//! Attaching a region without the server on the data path: read the
//! region's `user.mshare.attach` attribute (one FUSE round trip, which the
//! kernel lets only callers with read permission on the region make), open
//! the memory file it names with the access asked for (the kernel checks
//! the region's mode, which the file carries), map it at the region's
//! start, close it. See `Documentation/libmshare.md`.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use mshare_uapi::{Attach, Backing, ATTACH_XATTR};
use nix::errno::Errno;

use crate::error::{errno_of, Error, Result};
use crate::mapping::Mapping;

/// Where the attribute is read: the region's path, or its open file.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source<'a> {
    /// The region file's path (no open).
    Path(&'a Path),
    /// An open region file.
    File(&'a File),
}

/// How often a memory file that vanished between reading its name and
/// opening it is looked up again: the server renames it on every change
/// of the region's mode, owner or place, which need not refuse this caller.
const TRIES: u32 = 3;

fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

/// The region's attach attribute.
pub(crate) fn read(from: Source<'_>) -> Result<Attach, Errno> {
    // A path under /run/msharefs/state fits; a longer one is asked again.
    let mut buf = vec![0u8; 512];
    loop {
        let res = match from {
            Source::Path(p) => rustix::fs::getxattr(p, ATTACH_XATTR, &mut buf),
            Source::File(f) => rustix::fs::fgetxattr(f, ATTACH_XATTR, &mut buf),
        };
        match res {
            Ok(n) => return Attach::parse(&buf[..n]).map_err(|_| Errno::EPROTO),
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 16 => {
                buf.resize(buf.len() * 4, 0);
            }
            Err(e) => return Err(errno(e)),
        }
    }
}

/// Opens the memory file `a` names, read-write or read-only.
fn open(a: &Attach, writable: bool) -> Result<Option<OwnedFd>, Errno> {
    let Some(path) = &a.path else {
        return Ok(None);
    };
    File::options()
        .read(true)
        .write(writable)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map(|f| Some(f.into()))
        .map_err(|e| errno_of(&e))
}

/// The region's attribute and its memory file opened with the access
/// asked for (`None`: the server keeps no memory files), read again if
/// the file was renamed in between.
pub(crate) fn memory(
    from: Source<'_>,
    writable: bool,
) -> Result<(Attach, Option<OwnedFd>), (&'static str, Errno)> {
    let mut tries = 0;
    loop {
        let a = read(from).map_err(|e| ("getxattr user.mshare.attach", e))?;
        match open(&a, writable) {
            Err(Errno::ENOENT) if tries + 1 < TRIES => tries += 1,
            Err(e) => return Err(("opening the memory file", e)),
            Ok(fd) => return Ok((a, fd)),
        }
    }
}

/// Maps `fd` over the region `a` describes.
pub(crate) fn map(name: &str, fd: impl AsFd, a: &Attach, writable: bool) -> Result<Mapping> {
    Mapping::fixed(fd, a.start, a.size, writable).map_err(|e| match e {
        Errno::EEXIST => Error::AddressInUse {
            region: name.to_string(),
            start: a.start,
        },
        e => Error::Region {
            op: "mmap",
            region: name.to_string(),
            errno: e,
        },
    })
}

/// The error for a region the server keeps no memory file of, whose
/// region file cannot be mapped either (`errno` from that mmap).
pub(crate) fn unattachable(name: &str, kind: Backing, errno: Errno) -> Error {
    Error::NoMemoryFile {
        region: name.to_string(),
        why: if kind == Backing::Hugetlb {
            "a hugetlb region can be mapped only through its memory file"
        } else {
            "its region file cannot be mapped (no FUSE passthrough: the server lacks CAP_SYS_ADMIN or runs with passthrough=off)"
        },
        errno,
    }
}
