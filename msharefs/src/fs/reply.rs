//! Sending replies: one adapter ([`answer`]) that sends exactly one reply
//! for a handler's result and logs refusals with their reason.

use std::fmt::Display;
use std::time::Duration;

use fuser::{
    FileAttr, Generation, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyOpen, ReplyWrite, ReplyXattr,
};
use log::debug;

use crate::fail::Fail;

/// How long the kernel may cache a name.
pub const ENTRY_TTL: Duration = Duration::from_secs(1);
/// How long the kernel may cache attributes, so that an `open` needs no
/// `getattr` for its permission check. Changes the kernel does not see
/// (a size set by ioctl, objects made or freed) invalidate the cache at
/// once ([`super::MshareFs::attrs_changed`]); only `st_blocks` of memory
/// faulted in through mappings may lag by up to this long
/// (`AT_STATX_FORCE_SYNC` reads it fresh).
pub const ATTR_TTL: Duration = Duration::from_secs(1);

/// The error half of every fuser reply type.
pub trait ErrorReply {
    /// Replies with `errno`.
    fn send_error(self, errno: fuser::Errno);
}

macro_rules! error_reply {
    ($($t:ty),*) => {$(
        impl ErrorReply for $t {
            fn send_error(self, errno: fuser::Errno) {
                self.error(errno)
            }
        }
    )*};
}
error_reply!(
    ReplyAttr,
    ReplyXattr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyEmpty,
    ReplyEntry,
    ReplyIoctl,
    ReplyOpen,
    ReplyWrite
);

/// Sends `ok`'s reply for a success, or the errno for a refusal (logged at
/// debug level with the operation and what it was about).
pub fn answer<R: ErrorReply, T>(
    reply: R,
    op: &str,
    subject: impl Display,
    res: Result<T, Fail>,
    ok: impl FnOnce(R, T),
) {
    match res {
        Ok(v) => ok(reply, v),
        Err(f) => {
            debug!("{op} {subject}: {f}");
            reply.send_error(fuser::Errno::from_i32(f.errno as i32));
        }
    }
}

/// The success reply of a request that returns nothing.
pub fn empty(reply: ReplyEmpty, (): ()) {
    reply.ok()
}

/// The success reply of a request that returns an entry.
pub fn entry(reply: ReplyEntry, attr: FileAttr) {
    reply.entry_with_ttls(&ATTR_TTL, &ENTRY_TTL, &attr, Generation(0));
}

/// The success reply of a request that returns attributes.
pub fn attr(reply: ReplyAttr, attr: FileAttr) {
    reply.attr(&ATTR_TTL, &attr)
}

/// Formats by calling the closure, so that the work is done only when a
/// log line is written.
pub struct Lazy<F>(pub F);

impl<F: Fn() -> String> Display for Lazy<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&(self.0)())
    }
}
