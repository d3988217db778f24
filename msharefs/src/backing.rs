//! Backing memory: the file that holds a region's pages.
//!
//! Where the server keeps state (see [`crate::state`]), a region's memory is
//! the file `r<inode>.<secret>` on the kind's private instance in the state
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
//! A kept file is what libmshare opens to attach a region
//! (`Documentation/security.md`), so it carries the region's owner, group
//! and permission bits without execute ([`Owner`]), and its name has a part
//! of 128 random bits that changes ([`BackingStore::rename`]) whenever what
//! decides access to the region changes: the instance directories are 0711,
//! so a name works only while it is the current one. Volatile memory is
//! mode 0600 and owned by the server: nothing outside the server opens it
//! (a memfd is made mode 0777, and anyone holding a read-only descriptor of
//! one could reopen it read-write through `/proc/<pid>/fd`).

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use log::{info, warn};
use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, OFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

use mshare_uapi::Backing;

use crate::sys;

/// A region's memory: its file, and the file's name in the kind's
/// instance when it is kept.
#[derive(Debug)]
pub struct Memory {
    /// The server's descriptor (read-write).
    pub file: OwnedFd,
    /// `r<inode>.<secret>`; `None` for volatile memory.
    pub name: Option<String>,
}

/// Who may open a kept memory file: the region's owner, group and
/// permission bits (execute, set-id and sticky bits are never given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Permission bits of the region.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// An instance directory of a kept kind: its descriptor and path.
#[derive(Debug)]
pub struct KindDir {
    /// The kind it holds.
    pub kind: Backing,
    /// The directory, open.
    pub dir: OwnedFd,
    /// Its path, as clients reach it.
    pub path: PathBuf,
}

/// Creates, finds and removes backing files of every kind.
#[derive(Debug)]
pub struct BackingStore {
    /// The instance directory of each kind whose memory is kept.
    kept: Vec<KindDir>,
    /// Root of a detached `huge=always` tmpfs for volatile `thp`, if
    /// `thp` is not kept and it could be made.
    thp_root: Option<OwnedFd>,
}

/// A new file name for region `ino`'s memory in its kind's instance:
/// `r<inode>.` and 32 hex digits from `getrandom` (128 bits).
pub fn file_name(ino: u64) -> Result<String, Errno> {
    let mut secret = [0u8; 16];
    getrandom::fill(&mut secret).map_err(|_| Errno::EAGAIN)?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("r{ino}.{hex}"))
}

/// The inode a memory file's name is for: `r<inode>.<secret>`, or
/// `r<inode>` as servers before secret names wrote it.
pub fn ino_of(name: &str) -> Option<u64> {
    let rest = name.strip_prefix('r')?;
    let digits = rest.split_once('.').map_or(rest, |(ino, _)| ino);
    digits.parse().ok()
}

impl BackingStore {
    /// A store keeping the kinds in `kept` (their instance directories).
    /// Where `thp` is not kept, a detached `huge=always` tmpfs is made for
    /// it; where that is not possible (no `CAP_SYS_ADMIN`), `thp` regions
    /// fall back to `shmem` and the log says so once.
    pub fn new(kept: Vec<KindDir>) -> Self {
        if kept.iter().any(|k| k.kind == Backing::Thp) {
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
        self.kept.iter().find(|k| k.kind == kind).map(|k| &k.dir)
    }

    /// Whether regions of `kind` have memory files that clients open.
    pub fn keeps(&self, kind: Backing) -> bool {
        self.kept_dir(self.effective(kind)).is_some()
    }

    /// The path of kept memory file `name` of `kind`.
    pub fn path(&self, kind: Backing, name: &str) -> Option<PathBuf> {
        let k = self.kept.iter().find(|k| k.kind == kind)?;
        Some(k.path.join(name))
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
    /// for region `ino`, with `owner`'s access if it is kept; `label`
    /// names memfds in `/proc/PID/maps`.
    pub fn create(
        &self,
        kind: Backing,
        ino: u64,
        label: &str,
        owner: Owner,
    ) -> Result<Memory, Errno> {
        let kind = self.effective(kind);
        if let Some(dir) = self.kept_dir(kind) {
            let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC;
            let name = file_name(ino)?;
            let file = nix::fcntl::openat(dir, name.as_str(), flags, Mode::empty())?;
            if let Err(e) = mirror(&file, owner) {
                let _ = nix::unistd::unlinkat(dir, name.as_str(), UnlinkatFlags::NoRemoveDir);
                return Err(e);
            }
            return Ok(Memory {
                file,
                name: Some(name),
            });
        }
        let file = match (kind, &self.thp_root) {
            (Backing::Thp, Some(root)) => nix::fcntl::openat(
                root,
                ".",
                OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )?,
            (kind, _) => {
                let mut flags = MFdFlags::MFD_CLOEXEC;
                if kind == Backing::Hugetlb {
                    flags |= MFdFlags::MFD_HUGETLB;
                } else {
                    flags |= MFdFlags::MFD_ALLOW_SEALING;
                }
                let label = CString::new(format!("msharefs:{}", label.replace('\0', "")))
                    .map_err(|_| Errno::EINVAL)?;
                let fd = memfd_create(label.as_c_str(), flags)?;
                nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o600))?;
                fd
            }
        };
        Ok(Memory { file, name: None })
    }

    /// The kept memory files of every kind, by `(kind, inode)`.
    pub fn kept_files(&self) -> HashMap<(Backing, u64), String> {
        let mut files = HashMap::new();
        for k in &self.kept {
            let Ok(entries) = std::fs::read_dir(&k.path) else {
                continue;
            };
            for name in entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
            {
                if let Some(ino) = ino_of(&name) {
                    files.insert((k.kind, ino), name);
                }
            }
        }
        files
    }

    /// Gives kept memory file `name` of `kind` (region `ino`'s) a new
    /// secret name, so that a name given out before opens nothing: the new
    /// name, or the old one if the memory is not kept.
    pub fn rename(&self, kind: Backing, ino: u64, name: &str) -> Result<String, Errno> {
        let Some(dir) = self.kept_dir(kind) else {
            return Ok(name.to_string());
        };
        let new = file_name(ino)?;
        nix::fcntl::renameat2(
            dir,
            name,
            dir,
            new.as_str(),
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )?;
        Ok(new)
    }

    /// Opens kept memory file `name` of `kind` (adoption after a restart)
    /// and gives it `owner`'s access; a name without a secret part (kept
    /// by an older server) is replaced by one with it.
    pub fn open_kept(&self, kind: Backing, name: &str, owner: Owner) -> Result<Memory, Errno> {
        let dir = self.kept_dir(kind).ok_or(Errno::ENOENT)?;
        let file = nix::fcntl::openat(
            dir,
            name,
            OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )?;
        mirror(&file, owner)?;
        let name = match ino_of(name) {
            Some(ino) if !name.contains('.') => self.rename(kind, ino, name)?,
            _ => name.to_string(),
        };
        Ok(Memory {
            file,
            name: Some(name),
        })
    }

    /// Removes kept memory file `name` of `kind`: its memory goes when the
    /// last descriptor and mapping of it do.
    pub fn discard(&self, kind: Backing, name: &str) {
        if let Some(dir) = self.kept_dir(kind) {
            match nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => warn!("cannot remove memory file {name}: {e}"),
            }
        }
    }
}

/// Gives a kept memory file `owner`'s owner, group and permission bits
/// (read and write only).
pub fn mirror(file: &OwnedFd, owner: Owner) -> Result<(), Errno> {
    nix::unistd::fchown(
        file,
        Some(nix::unistd::Uid::from_raw(owner.uid)),
        Some(nix::unistd::Gid::from_raw(owner.gid)),
    )?;
    let perm = owner.perm as libc::mode_t & 0o666;
    nix::sys::stat::fchmod(file, Mode::from_bits_truncate(perm))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_file_names_are_secret_and_name_their_inode() {
        let a = file_name(42).unwrap();
        let b = file_name(42).unwrap();
        assert_ne!(a, b, "a new name each time");
        let (ino, secret) = a.split_once('.').unwrap();
        assert_eq!(ino, "r42");
        assert_eq!(secret.len(), 32, "128 bits in hex");
        assert!(secret.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(ino_of(&a), Some(42));
        assert_eq!(ino_of("r7"), Some(7), "names of older servers");
        assert_eq!(ino_of("lost+found"), None);
        assert_eq!(ino_of("rx.1"), None);
    }
}
