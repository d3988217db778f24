//! Why msharectl failed, and the exit status that says so.

use std::io;

use nix::errno::Errno;

use crate::{bench, kept, ksm, pool, run, transfer};

/// Why msharectl failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A libmshare operation failed.
    #[error(transparent)]
    Mshare(#[from] libmshare::Error),
    /// Creating a hugetlb region failed for want of huge pages.
    #[error("{source}: {hint}")]
    Pages {
        /// What failed.
        source: libmshare::Error,
        /// The pool's numbers and what to do.
        hint: String,
    },
    /// Reading the mount or writing the output failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The arguments do not fit the mount.
    #[error("{0}")]
    Usage(String),
    /// The hugetlb pool could not be read or grown.
    #[error(transparent)]
    Pool(#[from] pool::PoolError),
    /// Kept regions could not be freed.
    #[error("kept: {0}")]
    Kept(#[from] kept::KeptError),
    /// A KSM operation failed.
    #[error("ksm: {0}")]
    Ksm(#[from] ksm::KsmError),
    /// `read` or `write` failed.
    #[error(transparent)]
    Transfer(#[from] transfer::TransferError),
    /// The benchmark could not run or finish.
    #[error("bench: {0}")]
    Bench(#[from] bench::BenchError),
    /// `run` could not start the command.
    #[error(transparent)]
    Run(#[from] run::RunError),
    /// A name that exists but is not a region (a directory, `mshare_info`).
    #[error("'{0}' is {1}, not a region")]
    NotRegion(String, &'static str),
    /// A region cannot be made because a directory above it is missing.
    #[error(
        "cannot create '{name}': directory '{dir}' does not exist (mkdir it in the mount first)"
    )]
    NoDirectory {
        /// The region asked for.
        name: String,
        /// The missing directory.
        dir: String,
    },
    /// Some of several operations failed; each said why on stderr.
    #[error("{failed} of {of} failed")]
    Some {
        /// How many failed.
        failed: usize,
        /// Of how many.
        of: usize,
        /// The exit status: that of the failures, 1 if they differ.
        code: u8,
    },
}

impl Error {
    /// The documented exit status.
    pub fn exit_code(&self) -> u8 {
        let region_errno = match self {
            Error::Mshare(e)
            | Error::Transfer(transfer::TransferError::Map(e))
            | Error::Pages { source: e, .. } => match e {
                libmshare::Error::Path { .. } | libmshare::Error::Region { .. } => Some(e.errno()),
                _ => None,
            },
            _ => None,
        };
        match (self, region_errno) {
            (Error::Run(e), _) => e.exit_code(),
            (Error::NotRegion(..), _) => 3,
            (Error::Some { code, .. }, _) => *code,
            (Error::Usage(_), _) | (Error::Transfer(transfer::TransferError::Range { .. }), _) => 2,
            (_, Some(Errno::ENOENT)) => 3,
            (_, Some(Errno::EEXIST)) => 4,
            _ => 1,
        }
    }

    /// Whether the reader of our output went away (not an error).
    pub fn is_broken_pipe(&self) -> bool {
        let io = match self {
            Error::Io(e) | Error::Transfer(transfer::TransferError::Io(e)) => e,
            _ => return false,
        };
        io.kind() == io::ErrorKind::BrokenPipe
    }
}
