//! The library's error: what was being done, to which region, and the errno.

use std::path::PathBuf;

use nix::errno::Errno;

/// Everything libmshare can fail with. Every variant keeps the errno
/// ([`Error::errno`]) that the C API sets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No msharefs mount was found.
    #[error("no msharefs mount found (tried {tried})")]
    NoMount {
        /// The places looked at.
        tried: String,
    },
    /// A system call on a path in the mount failed.
    #[error("{op} {path}: {errno}", path = path.display(), errno = errno.desc())]
    Path {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The errno.
        errno: Errno,
    },
    /// An operation on an open region failed.
    #[error("{op} on region '{region}': {errno}", errno = errno.desc())]
    Region {
        /// What was being done (`MSHAREFS_SET_SIZE`, `mmap`, …).
        op: &'static str,
        /// The region's name.
        region: String,
        /// The errno.
        errno: Errno,
    },
    /// The region's address range is already in use in this process.
    #[error("region '{region}' cannot be mapped at {start:#x}: the address range is in use")]
    AddressInUse {
        /// The region's name.
        region: String,
        /// Its start address.
        start: u64,
    },
    /// The server keeps no memory file of the region (it has no state
    /// directory: it does not run as root, or serves a `/dev/fd/N` mount)
    /// and the region file cannot be mapped either.
    #[error(
        "region '{region}' cannot be attached: the server keeps no memory files \
         (no state directory: not run as root, or a /dev/fd mount) and {why}"
    )]
    NoMemoryFile {
        /// The region's name.
        region: String,
        /// Why the region file does not do instead.
        why: &'static str,
        /// The errno (`ENODEV` from the region file's mmap, or `ENODEV`
        /// for a hugetlb region).
        errno: Errno,
    },
    /// `mshare_info` did not hold a number.
    #[error("{path}: not an alignment: {text:?}", path = path.display())]
    BadInfo {
        /// The mshare_info path.
        path: PathBuf,
        /// What it held.
        text: String,
    },
    /// A name that cannot be a region name.
    #[error("invalid region name {name:?}")]
    BadName {
        /// The name.
        name: String,
    },
}

impl Error {
    /// The errno this error carries.
    pub fn errno(&self) -> Errno {
        match self {
            Error::NoMount { .. } => Errno::ENOENT,
            Error::Path { errno, .. }
            | Error::Region { errno, .. }
            | Error::NoMemoryFile { errno, .. } => *errno,
            Error::AddressInUse { .. } => Errno::EEXIST,
            Error::BadInfo { .. } => Errno::EIO,
            Error::BadName { .. } => Errno::EINVAL,
        }
    }
}

/// The errno of an I/O error (`EIO` if it carries none).
pub fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
