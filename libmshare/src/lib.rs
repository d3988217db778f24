//! libmshare: the msharefs client library.
//!
//! msharefs is a FUSE file system in which every regular file is a shared
//! memory region (see `Documentation/msharefs.md`). This crate holds:
//!
//! - [`abi`]: the one definition of the kernel-style ABI (structs, ioctl
//!   numbers, constants), used by the server too;
//! - [`ioctl`]: safe wrappers of the four ioctls on an open region file.
//!
//! ```no_run
//! use std::fs::OpenOptions;
//! use libmshare::{abi::MshareInfo, ioctl};
//!
//! let file = OpenOptions::new().read(true).write(true)
//!     .open("/run/mshare/shareme")?;
//! let info: MshareInfo = ioctl::get_size(&file)?;
//! println!("region at {:#x}, {} bytes", info.start, info.size);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod abi;
pub mod ioctl;
