//! Backing memory: the file that holds a region's pages.
//!
//! Where the server keeps state (see [`crate::state`]), a region's memory is
//! the file `r<inode>` on the kind's private instance in the state
//! directory, so that it outlives the server:
//!
//! - `thp`: tmpfs mounted `huge=always`, so 2 MiB pages back it;
//! - `shmem`: tmpfs mounted `huge=never` (4 KiB pages);
//! - `hugetlb`: hugetlbfs (2 MiB hugetlb pages).
//!
//! Without a state directory (no `CAP_SYS_ADMIN`, a `/dev/fd/N` mount) the
//! memory is volatile, as anonymous files that go with the server: `thp` an
//! `O_TMPFILE` on a detached `huge=always` tmpfs, `shmem` a sealed memfd,
//! `hugetlb` an `MFD_HUGETLB` memfd.
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
use nix::unistd::UnlinkatFlags;

use mshare_uapi::Backing;

use crate::sys;

/// Creates, finds and removes backing files of every kind.
#[derive(Debug)]
pub struct BackingStore {
    /// The instance directory of each kind whose memory is kept.
    kept: Vec<(Backing, OwnedFd)>,
    /// Root of a detached `huge=always` tmpfs for volatile `thp`, if
    /// `thp` is not kept and it could be made.
    thp_root: Option<OwnedFd>,
}

/// The file name of region `ino`'s memory in its kind's instance.
pub fn file_name(ino: u64) -> String {
    format!("r{ino}")
}

impl BackingStore {
    /// A store keeping the kinds in `kept` (their instance directories).
    /// Where `thp` is not kept, a detached `huge=always` tmpfs is made for
    /// it; where that is not possible (no `CAP_SYS_ADMIN`), `thp` regions
    /// fall back to `shmem` and the log says so once.
    pub fn new(kept: Vec<(Backing, OwnedFd)>) -> Self {
        if kept.iter().any(|(k, _)| *k == Backing::Thp) {
            return BackingStore {
                kept,
                thp_root: None,
            };
        }
        let thp_root = sys::detached_mount(
            "tmpfs",
            &[("huge", "always"), ("size", "100%"), ("mode", "0700")],
        );
        let thp_root = match thp_root {
            Ok(fd) => {
                info!("thp backing: private tmpfs instance mounted huge=always");
                Some(fd)
            }
            Err(e) => {
                warn!("cannot mount a private huge=always tmpfs ({e}); thp regions will use shmem (4 KiB pages)");
                None
            }
        };
        BackingStore { kept, thp_root }
    }

    fn kept_dir(&self, kind: Backing) -> Option<&OwnedFd> {
        self.kept.iter().find(|(k, _)| *k == kind).map(|(_, d)| d)
    }

    /// The kind actually used for a request of `kind`.
    pub fn effective(&self, kind: Backing) -> Backing {
        match kind {
            Backing::Thp if self.thp_root.is_none() && self.kept_dir(kind).is_none() => {
                Backing::Shmem
            }
            k => k,
        }
    }

    /// Creates an empty backing file of `kind` (see [`Self::effective`])
    /// for region `ino`; `name` labels memfds in `/proc/PID/maps`.
    pub fn create(&self, kind: Backing, ino: u64, name: &str) -> Result<OwnedFd, Errno> {
        let kind = self.effective(kind);
        if let Some(dir) = self.kept_dir(kind) {
            let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC;
            let mode = Mode::from_bits_truncate(0o600);
            return match nix::fcntl::openat(dir, file_name(ino).as_str(), flags, mode) {
                Err(Errno::EEXIST) => {
                    // Left by a region that was never recorded: not in use.
                    self.discard(kind, ino);
                    nix::fcntl::openat(dir, file_name(ino).as_str(), flags, mode)
                }
                other => other,
            };
        }
        match (kind, &self.thp_root) {
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

    /// Opens the kept memory of region `ino` (adoption after a restart).
    pub fn open_kept(&self, kind: Backing, ino: u64) -> Result<OwnedFd, Errno> {
        let dir = self.kept_dir(kind).ok_or(Errno::ENOENT)?;
        nix::fcntl::openat(
            dir,
            file_name(ino).as_str(),
            OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    }

    /// Removes the kept file of region `ino`: its memory goes when the
    /// last descriptor and mapping of it do. Nothing for volatile memory.
    pub fn discard(&self, kind: Backing, ino: u64) {
        if let Some(dir) = self.kept_dir(kind) {
            match nix::unistd::unlinkat(dir, file_name(ino).as_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => warn!("cannot remove the memory file of inode {ino}: {e}"),
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

/// Bytes of memory `fd` holds now (its allocated blocks).
pub fn allocated(fd: impl AsFd) -> u64 {
    nix::sys::stat::fstat(fd.as_fd()).map_or(0, |s| s.st_blocks as u64 * 512)
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
