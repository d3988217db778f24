//! The one definition of the msharefs ABI, shared by the server
//! (`msharefs`), the client library (`libmshare`), `msharectl` and the C
//! header `mshare.h` (which a test checks item by item against this crate).
//!
//! - The kernel's RFC v3 uapi: [`MshareInfo`], [`MshareCreate`],
//!   [`MshareUnmap`] and the ioctl numbers `MSHAREFS_*`. The later 2025
//!   series renumbered the ioctls in a way that collides, so the RFC v3
//!   numbers are the ABI.
//! - msharefs' extensions: [`MSHAREFS_SETUP`] and [`MshareSetup`] (size a new
//!   region and map its object in one round trip); [`ATTACH_XATTR`] and
//!   [`Attach`], what libmshare reads to attach a region by opening its
//!   memory file itself; the [`Backing`] kinds and their extended
//!   attribute [`BACKING_XATTR`].
//! - What operators read through extended attributes: the hugetlb pool the
//!   server manages ([`POOL_XATTR`], [`PoolStatus`], [`RESERVE_XATTR`]) and
//!   where a region's memory lives ([`MEMORY_XATTR`], [`MemoryId`]).
//! - The C library's option struct [`MshareOptions`] and flags.
//! - [`mountinfo`]: the kernel's list of mounts, parsed and unescaped.
//!
//! Layouts are asserted at compile time; the wire conversion is `zerocopy`'s.
//! This crate does no I/O.
//!
//! ```
//! use mshare_uapi::{Backing, MshareInfo, MSHAREFS_GET_SIZE};
//! use zerocopy::IntoBytes;
//!
//! assert_eq!(MSHAREFS_GET_SIZE, 0x8010_7800);
//! let info = MshareInfo { start: 1 << 40, size: 1 << 30 };
//! assert_eq!(info.as_bytes().len(), 16);
//! assert_eq!("hugetlb".parse::<Backing>(), Ok(Backing::Hugetlb));
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod admin;
mod attach;
mod backing;
mod ioctl;
pub mod mountinfo;
mod size;
mod structs;

pub use admin::{
    MemoryId, PoolPolicy, PoolStatus, Shortfall, MEMORY_XATTR, POOL_XATTR, RESERVE_XATTR,
};
pub use attach::{Attach, BadAttach, ATTACH_XATTR, RUN_DIR};
pub use backing::{Backing, UnknownBacking, BACKING_XATTR};
pub use ioctl::{
    MSHAREFS_CREATE_MAPPING, MSHAREFS_GET_SIZE, MSHAREFS_IOCTL_TYPE, MSHAREFS_SETUP,
    MSHAREFS_SET_SIZE, MSHAREFS_UNMAP, MSHAREFS_UNMAPPED,
};
pub use size::{format_size, parse_size};
pub use structs::{
    MshareCreate, MshareInfo, MshareOptions, MshareSetup, MshareUnmap, MSHARE_BACKING_DEFAULT,
    MSHARE_EXCL, MSHARE_NO_OBJECT, MSHARE_SETUP_OBJECT,
};

/// Name of the read-only file in the root of every msharefs mount that holds
/// the alignment, in decimal followed by a newline.
pub const INFO_FILE_NAME: &str = "mshare_info";

/// The `fuse` subtype the server mounts with; `/proc/self/mountinfo` shows
/// the file system type as `fuse.msharefs`.
pub const FS_SUBTYPE: &str = "msharefs";

/// The directory in the root of every mount (owned by the mount's owner,
/// mode 1777) whose regions stand for anonymous shared memory
/// (`mmap(MAP_SHARED|MAP_ANONYMOUS)` taken over by the preload library):
/// their start is aligned but their size need only be a multiple of the
/// page size, and the server removes each one once no process maps it.
pub const ANON_DIR: &str = "anon";

/// The directory in the root of every mount (owned by the mount's owner,
/// mode 1777) whose regions are POSIX shared memory objects (`shm_open`
/// taken over by the preload library): any size, resized by `ftruncate`,
/// never hugetlb-backed, mapped at any address through the region file.
pub const SHM_DIR: &str = "shm";

/// Default region alignment: 1 GiB, the size at which the kernel shares
/// hugetlb PMD page tables between processes.
pub const DEFAULT_ALIGNMENT: u64 = 1 << 30;

/// Size of a base page on the platforms msharefs supports.
pub const PAGE_SIZE: u64 = 4096;

/// Size of a hugetlb page (x86_64 PMD size).
pub const HUGE_PAGE_SIZE: u64 = 2 << 20;

/// Where the kernel counts hugetlb pages of [`HUGE_PAGE_SIZE`]
/// (`nr_hugepages`, `free_hugepages`, `resv_hugepages`,
/// `surplus_hugepages`), which the server sizes and `msharectl pool` shows.
pub const HUGE_PAGES_SYSFS: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

/// One past the highest user address usable without asking for 5-level
/// paging (x86_64 `DEFAULT_MAP_WINDOW`, minus the guard page).
pub const USER_ADDR_END: u64 = (1 << 47) - PAGE_SIZE;
