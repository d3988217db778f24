//! The msharefs server: a FUSE file system of shared memory regions with
//! the kernel msharefs ioctl ABI. The binary (`main.rs`) parses the command
//! line and puts these parts together; everything else is here.
//!
//! Reads top-down: [`options`] → [`target`] and [`startup`] (the mount
//! point, the state directory, adoption) → [`transport`] (how requests
//! arrive: [`transport::fuser`] and [`transport::uring`], thin adapters)
//! → [`request`] (the one typed [`request::Op`] and its
//! [`request::Reply`]) → [`fs`] (the one dispatcher,
//! [`fs::MshareFs::handle`], and the handlers) → [`namespace`] (names,
//! inodes) → [`region`] (a region's rules and memory, placed by
//! [`placement`]) → [`backing`] and [`sys`] (the few raw system calls).
//! [`state`] keeps regions so that they outlive the server, their memory
//! in files that libmshare opens itself ([`backing`] names them). Only
//! [`transport`] knows fuser or the kernel's FUSE bytes.
//!
//! `unsafe` is denied here and allowed only in [`sys`], [`daemon`],
//! [`hugetlb_io`], [`passthrough`], `transport::fuser::reply` and
//! `transport::uring::queue`, each with a `# Safety` header.
#![deny(unsafe_code)]
// The docs are for the people who build the server, and link its private
// modules: `cargo doc --document-private-items` renders them all.
#![allow(rustdoc::private_intra_doc_links)]

pub mod backing;
pub mod daemon;
pub mod fail;
pub mod fs;
pub mod hugepool;
pub mod hugetlb_io;
pub mod limits;
pub mod mount;
pub mod namespace;
pub mod notify;
pub mod options;
pub mod passthrough;
pub mod placement;
pub mod region;
pub mod request;
pub mod startup;
pub mod state;
pub mod stop;
pub mod sys;
pub mod target;
pub mod transient;
pub mod transport;
