//! libmshare: the msharefs client library.
//!
//! msharefs is a FUSE file system in which every regular file is a shared
//! memory region (see `Documentation/msharefs.md`). This crate holds:
//!
//! - [`abi`]: the ABI, re-exported from the `mshare-uapi` crate that is its
//!   one definition (the server and `mshare.h` take it from there too);
//! - [`ioctl`]: safe wrappers of the ioctls on an open region file;
//! - [`Mount`], [`Region`], [`Mapping`]: create, open, size and map regions,
//!   including hugetlb regions whose page tables the kernel shares between
//!   processes (the direct path, `Documentation/libmshare.md`);
//! - the C API (`include/mshare.h`, `libmshare.so`, `libmshare.a`,
//!   `mshare.pc`), in the `capi` module.
//!
//! ```no_run
//! use libmshare::{CreateOptions, Mount};
//!
//! let mount = Mount::find(None)?; // $MSHARE_DIR, mountinfo, /run/mshare
//! let size = mount.alignment();
//! // Creator: a region at a start the server chooses, one object over it.
//! let region = mount.create("sga", 0, size, &CreateOptions::default())?;
//! let map = region.map()?; // at the region's start
//! map.write(0, b"hello");
//!
//! // Any other process:
//! let region = mount.open("sga", true)?;
//! let map = region.map()?;
//! let mut buf = [0u8; 5];
//! map.read(0, &mut buf);
//! # Ok::<(), libmshare::Error>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod attach;
pub mod capi;
mod error;
pub mod ioctl;
mod mapping;
mod mount;
mod region;
mod xattr;

pub use mshare_uapi as abi;

pub use error::{errno_of, Error, Result};
pub use mapping::Mapping;
pub use mount::{Mount, DEFAULT_DIR, MSHARE_DIR_ENV};
pub use mshare_uapi::{parse_size, Backing};
pub use region::{CreateOptions, Region};
