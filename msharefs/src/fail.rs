//! The error of one request: the errno the client gets and, for the log,
//! why.

use std::borrow::Cow;

use nix::errno::Errno;

/// A refused request: `errno` goes to the client, `why` to the debug log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why} ({errno})")]
pub struct Fail {
    /// The errno replied to the client.
    pub errno: Errno,
    /// A short reason for the log.
    pub why: Cow<'static, str>,
}

impl Fail {
    /// A refusal with a fixed reason.
    pub const fn new(errno: Errno, why: &'static str) -> Self {
        Fail {
            errno,
            why: Cow::Borrowed(why),
        }
    }

    /// A refusal with a formatted reason.
    pub fn with(errno: Errno, why: String) -> Self {
        Fail {
            errno,
            why: Cow::Owned(why),
        }
    }
}

impl From<Errno> for Fail {
    fn from(errno: Errno) -> Self {
        Fail::new(errno, errno.desc())
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        Fail::with(errno_of(&e), e.to_string())
    }
}

/// The errno of an I/O error (`EIO` if it carries none).
pub fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// `Err(Fail::new(errno, why))` unless `ok`.
pub fn ensure(ok: bool, errno: Errno, why: &'static str) -> Result<(), Fail> {
    if ok {
        Ok(())
    } else {
        Err(Fail::new(errno, why))
    }
}
