//! The backing kinds of a region: one type for the server's `backing=`,
//! the library, msharectl and the C API's `MSHARE_BACKING_*`.

use std::fmt;
use std::str::FromStr;

/// Extended attribute of a region file naming its backing kind (`thp`,
/// `shmem` or `hugetlb`); settable while the region is unsized and not open.
pub const BACKING_XATTR: &str = "user.mshare.backing";

/// How a region's memory is provided. The discriminants are the C API's
/// `MSHARE_BACKING_*` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[repr(u32)]
pub enum Backing {
    /// 2 MiB transparent huge pages: a file on a private tmpfs mounted
    /// `huge=always`; attachable through FUSE passthrough.
    Thp = 1,
    /// 4 KiB pages: a memfd; attachable through FUSE passthrough.
    Shmem = 2,
    /// 2 MiB hugetlb pages, whose page tables the kernel shares between
    /// processes mapping whole 1 GiB-aligned ranges; attachable only by
    /// mapping the backing file directly (libmshare). Needs the hugetlb pool.
    Hugetlb = 3,
}

impl Backing {
    /// Every kind, in the order of their C values.
    pub const ALL: [Backing; 3] = [Backing::Thp, Backing::Shmem, Backing::Hugetlb];

    /// The spelling in options, the extended attribute and output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Backing::Thp => "thp",
            Backing::Shmem => "shmem",
            Backing::Hugetlb => "hugetlb",
        }
    }

    /// The kind of a C `MSHARE_BACKING_*` value (not `DEFAULT`).
    pub fn from_c(value: u32) -> Option<Backing> {
        Self::ALL.into_iter().find(|b| *b as u32 == value)
    }
}

impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that names no backing kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a backing (thp, shmem or hugetlb)")]
pub struct UnknownBacking(pub String);

impl FromStr for Backing {
    type Err = UnknownBacking;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| UnknownBacking(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_and_c_values_round_trip() {
        for b in Backing::ALL {
            assert_eq!(b.as_str().parse(), Ok(b));
            assert_eq!(Backing::from_c(b as u32), Some(b));
        }
        assert_eq!((Backing::Thp as u32, Backing::Hugetlb as u32), (1, 3));
        assert!("zram".parse::<Backing>().is_err());
        assert_eq!(Backing::from_c(0), None);
    }
}
