//! The error of one request: the errno the client gets and, for the log,
//! why.

use std::borrow::Cow;
use std::fmt;

use nix::errno::Errno;

/// A refused request: `errno` goes to the client, `why` to the debug log.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        Fail {
            errno,
            why: Cow::Borrowed(errno.desc()),
        }
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.why, self.errno)
    }
}

/// `Err(Fail::new(EINVAL, why))` unless `ok`.
pub fn ensure(ok: bool, errno: Errno, why: &'static str) -> Result<(), Fail> {
    if ok {
        Ok(())
    } else {
        Err(Fail::new(errno, why))
    }
}
