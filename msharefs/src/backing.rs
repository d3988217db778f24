//! Backing memory: the file that holds a region's pages.
//!
//! - `thp`: an unnamed (`O_TMPFILE`) file on a private tmpfs instance mounted
//!   `huge=always` as a detached mount, so 2 MiB pages back it;
//! - `shmem`: a plain memfd (4 KiB pages);
//! - `hugetlb`: an `MFD_HUGETLB` memfd (2 MiB hugetlb pages).
//!
//! Every backing file is anonymous: its memory is freed when the server's
//! descriptor, every passthrough open and every mapping of it are gone.
//!
//! Every backing file is mode 0600 and owned by the server, so that a
//! descriptor the broker hands out cannot be reopened through
//! `/proc/<pid>/fd` with more access than it carries: a memfd is made mode
//! 0777, and anyone holding a read-only descriptor of one could reopen it
//! read-write.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};

use log::{info, warn};
use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, OFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::stat::Mode;

use mshare_uapi::Backing;

use crate::sys;

/// Creates backing files of every kind.
#[derive(Debug)]
pub struct BackingStore {
    /// Root of the private `huge=always` tmpfs, if it could be made.
    thp_root: Option<OwnedFd>,
}

impl BackingStore {
    /// Makes the private tmpfs instance for `thp` backing. Where that is not
    /// possible (no `CAP_SYS_ADMIN`), `thp` regions fall back to `shmem`
    /// and the log says so once.
    pub fn new() -> Self {
        let thp_root = sys::detached_mount(
            "tmpfs",
            &[("huge", "always"), ("size", "100%"), ("mode", "0700")],
        );
        match thp_root {
            Ok(fd) => {
                info!("thp backing: private tmpfs instance mounted huge=always");
                BackingStore { thp_root: Some(fd) }
            }
            Err(e) => {
                warn!("cannot mount a private huge=always tmpfs ({e}); thp regions will use shmem (4 KiB pages)");
                BackingStore { thp_root: None }
            }
        }
    }

    /// The kind actually used for a request of `kind`.
    pub fn effective(&self, kind: Backing) -> Backing {
        match kind {
            Backing::Thp if self.thp_root.is_none() => Backing::Shmem,
            k => k,
        }
    }

    /// Creates an empty backing file of `kind` (see [`Self::effective`]);
    /// `name` labels memfds in `/proc/PID/maps`.
    pub fn create(&self, kind: Backing, name: &str) -> Result<OwnedFd, Errno> {
        match (self.effective(kind), &self.thp_root) {
            (Backing::Thp, Some(root)) => nix::fcntl::openat(
                root,
                ".",
                OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            ),
            (kind, _) => {
                let mut flags = MFdFlags::MFD_CLOEXEC;
                if kind == Backing::Hugetlb {
                    flags |= MFdFlags::MFD_HUGETLB;
                } else {
                    flags |= MFdFlags::MFD_ALLOW_SEALING;
                }
                let label = CString::new(format!("msharefs:{}", name.replace('\0', "")))
                    .map_err(|_| Errno::EINVAL)?;
                let fd = memfd_create(label.as_c_str(), flags)?;
                nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o600))?;
                Ok(fd)
            }
        }
    }
}

/// Sets the size of a backing file. For a sealable memfd it then forbids
/// growing and shrinking, so a `write(2)` past the end through passthrough
/// cannot change the region's size behind the server's back.
pub fn set_len(fd: impl AsFd, len: u64) -> Result<(), Errno> {
    let fd = fd.as_fd();
    nix::unistd::ftruncate(fd, len as libc::off_t)?;
    let seals = nix::fcntl::SealFlag::F_SEAL_GROW | nix::fcntl::SealFlag::F_SEAL_SHRINK;
    match nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_ADD_SEALS(seals)) {
        Ok(_) | Err(Errno::EPERM) | Err(Errno::EINVAL) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Allocates `[offset, offset + len)` up front. For hugetlb this reserves
/// pages from the pool; a pool that is too small is `ENOMEM` (the kernel
/// says `ENOSPC`), and nothing of the range stays allocated.
pub fn allocate(fd: impl AsFd, offset: u64, len: u64) -> Result<(), Errno> {
    let fd = fd.as_fd();
    match nix::fcntl::fallocate(fd, FallocateFlags::empty(), offset as i64, len as i64) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = punch_hole(fd, offset, len);
            Err(if e == Errno::ENOSPC { Errno::ENOMEM } else { e })
        }
    }
}

/// Frees the memory of `[offset, offset + len)`; later reads see zeros.
pub fn punch_hole(fd: impl AsFd, offset: u64, len: u64) -> Result<(), Errno> {
    nix::fcntl::fallocate(
        fd,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        offset as i64,
        len as i64,
    )
}
