//! The contenders: one shared region each, set up once, attached many
//! times (the timed part), torn down on drop.

use std::ffi::CString;
use std::os::fd::OwnedFd;

use libmshare::{Backing, CreateOptions, Mount};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::Serialize;

use super::sys::Map;
use super::BenchError;

/// One way to share memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `shm_open` + `mmap` (4 KiB pages): what /dev/shm gives.
    PosixShm,
    /// `shmget(SHM_HUGETLB)` attached at a 1 GiB-aligned address: what
    /// databases use today.
    SysvHugetlb,
    /// A hugetlb memfd mapped directly at a 1 GiB-aligned address: the
    /// userspace limit.
    MemfdHugetlb,
    /// msharefs through the region file: open + GET_SIZE + mmap + close
    /// (thp, FUSE passthrough).
    File,
    /// msharefs through libmshare (`Mount::attach`: the attach attribute,
    /// open of the memory file, mmap, close), thp backing.
    LibmshareThp,
    /// msharefs through libmshare, shmem backing (4 KiB pages).
    LibmshareShmem,
    /// msharefs through libmshare, hugetlb backing.
    LibmshareHugetlb,
}

impl Kind {
    /// Every contender, baselines first.
    pub const ALL: [Kind; 7] = [
        Kind::PosixShm,
        Kind::SysvHugetlb,
        Kind::MemfdHugetlb,
        Kind::File,
        Kind::LibmshareThp,
        Kind::LibmshareShmem,
        Kind::LibmshareHugetlb,
    ];

    /// The name in tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            Kind::PosixShm => "posix-shm",
            Kind::SysvHugetlb => "sysv-hugetlb",
            Kind::MemfdHugetlb => "memfd-hugetlb",
            Kind::File => "file",
            Kind::LibmshareThp => "libmshare-thp",
            Kind::LibmshareShmem => "libmshare-shmem",
            Kind::LibmshareHugetlb => "libmshare-hugetlb",
        }
    }

    /// Whether the procs phase measures it again under a concurrent load:
    /// the msharefs contenders and the baseline their ratios are taken to.
    pub fn loaded(self) -> bool {
        matches!(
            self,
            Kind::MemfdHugetlb | Kind::File | Kind::LibmshareThp | Kind::LibmshareHugetlb
        )
    }

    /// Whether its memory comes from the hugetlb pool.
    pub fn hugetlb(self) -> bool {
        matches!(
            self,
            Kind::SysvHugetlb | Kind::MemfdHugetlb | Kind::LibmshareHugetlb
        )
    }

    /// A 1 GiB-aligned address of its own, far from anything else (the
    /// regions of different contenders never overlap).
    fn address(self) -> u64 {
        let slot = Kind::ALL.iter().position(|k| *k == self).unwrap_or(0) as u64;
        0x4000_0000_0000 + slot * 0x0400_0000_0000
    }
}

enum Res {
    Shm(CString),
    Sysv(i32),
    Memfd(OwnedFd),
    Msharefs { mount: Mount, name: String },
}

/// A contender's region.
pub struct Region {
    /// Which contender.
    pub kind: Kind,
    /// Bytes.
    pub size: u64,
    res: Res,
}

fn errno(what: &str, e: Errno) -> BenchError {
    BenchError::Setup(format!("{what}: {e}"))
}

impl Region {
    /// Makes `kind`'s region of `size` bytes (named with `tag`) and
    /// allocates all of its memory, so that attaches measure mapping and
    /// faulting, not zeroing.
    pub fn new(
        kind: Kind,
        size: u64,
        dir: &std::path::Path,
        tag: &str,
    ) -> Result<Region, BenchError> {
        let name = format!(
            "msharectl-bench.{}.{tag}.{}",
            std::process::id(),
            kind.label()
        );
        let res = match kind {
            Kind::PosixShm => {
                let n = CString::new(format!("/{name}")).expect("no NUL");
                let fd = nix::sys::mman::shm_open(
                    n.as_c_str(),
                    OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| errno("shm_open", e))?;
                let r = Region {
                    kind,
                    size,
                    res: Res::Shm(n),
                };
                nix::unistd::ftruncate(&fd, size as i64).map_err(|e| errno("ftruncate", e))?;
                r
            }
            Kind::SysvHugetlb => {
                let id = super::sys::shmget_hugetlb(size)
                    .map_err(|e| errno("shmget(SHM_HUGETLB) (pool too small?)", e))?;
                Region {
                    kind,
                    size,
                    res: Res::Sysv(id),
                }
            }
            Kind::MemfdHugetlb => {
                let fd = nix::sys::memfd::memfd_create(
                    c"msharectl-bench",
                    nix::sys::memfd::MFdFlags::MFD_HUGETLB | nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
                )
                .map_err(|e| errno("memfd_create(MFD_HUGETLB)", e))?;
                nix::fcntl::fallocate(&fd, nix::fcntl::FallocateFlags::empty(), 0, size as i64)
                    .map_err(|e| errno("fallocate of the hugetlb memfd (pool too small?)", e))?;
                Region {
                    kind,
                    size,
                    res: Res::Memfd(fd),
                }
            }
            Kind::File | Kind::LibmshareThp | Kind::LibmshareShmem | Kind::LibmshareHugetlb => {
                let backing = match kind {
                    Kind::LibmshareHugetlb => Backing::Hugetlb,
                    Kind::LibmshareShmem => Backing::Shmem,
                    _ => Backing::Thp,
                };
                let opts = CreateOptions {
                    backing: Some(backing),
                    ..CreateOptions::default()
                };
                let mount = Mount::at(dir)?;
                mount.create(&name, kind.address(), size, &opts)?;
                Region {
                    kind,
                    size,
                    res: Res::Msharefs { mount, name },
                }
            }
        };
        res.attach_fill()?;
        Ok(res)
    }

    fn attach_fill(&self) -> Result<(), BenchError> {
        let map = self
            .attach()
            .map_err(|e| BenchError::Setup(format!("attaching {}: {e}", self.kind.label())))?;
        map.fill(4096);
        Ok(())
    }

    /// One attach, the way a user of this contender does it: open (or look
    /// up), learn the size where needed, map, close.
    pub fn attach(&self) -> Result<Map, String> {
        let e = |what: &str, e: Errno| format!("{what}: {e}");
        match &self.res {
            Res::Shm(n) => {
                let fd = nix::sys::mman::shm_open(n.as_c_str(), OFlag::O_RDWR, Mode::empty())
                    .map_err(|x| e("shm_open", x))?;
                Map::shared(&fd, 0, self.size).map_err(|x| e("mmap", x))
            }
            Res::Sysv(id) => {
                Map::sysv(*id, self.kind.address(), self.size).map_err(|x| e("shmat", x))
            }
            Res::Memfd(fd) => {
                Map::shared(fd, self.kind.address(), self.size).map_err(|x| e("mmap", x))
            }
            Res::Msharefs { mount, name } if self.kind == Kind::File => {
                let fd = nix::fcntl::open(
                    &mount.dir().join(name),
                    OFlag::O_RDWR | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|x| e("open", x))?;
                let info =
                    libmshare::ioctl::get_size(&fd).map_err(|x| e("MSHAREFS_GET_SIZE", x))?;
                Map::shared(&fd, info.start, info.size).map_err(|x| e("mmap", x))
            }
            Res::Msharefs { mount, name } => mount
                .attach(name, false)
                .map(Map::from)
                .map_err(|x| x.to_string()),
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        match &self.res {
            Res::Shm(n) => drop(nix::sys::mman::shm_unlink(n.as_c_str())),
            Res::Sysv(id) => super::sys::shm_remove(*id),
            Res::Memfd(_) => {}
            Res::Msharefs { mount, name } => drop(std::fs::remove_file(mount.dir().join(name))),
        }
    }
}
