//! The transports: how requests reach [`MshareFs::handle`] and how its
//! replies go back. Each is a thin adapter between the kernel's bytes and
//! the server's [`Op`] and [`Reply`], and nothing else knows them:
//!
//! - [`fuser`]: the `/dev/fuse` transport, through the `fuser` crate. It
//!   also makes the connection (mount, `INIT`), which the other needs.
//! - [`uring`]: FUSE over io_uring (Linux 6.14 and later), with its own
//!   decoder and encoder of the kernel's structures.
//!
//! A third transport (or fuser's own io_uring support once it lands)
//! replaces one adapter: it builds an `Op` and sends the `Reply`.
//!
//! [`MshareFs::handle`]: crate::fs::MshareFs::handle
//! [`Op`]: crate::request::Op
//! [`Reply`]: crate::request::Reply

pub mod fuser;
pub mod uring;
