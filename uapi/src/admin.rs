//! What the server tells operators through extended attributes: the
//! hugetlb pool it manages (on the mount's root) and where a region's
//! memory lives (on each region file), so that `msharectl` can find who
//! maps it in `/proc/PID/smaps`.

use std::fmt;
use std::str::FromStr;

/// Extended attribute of the mount's root: the hugetlb pool as the server
/// manages it, as [`PoolStatus`] text. Read-only.
pub const POOL_XATTR: &str = "user.mshare.hugetlb_pool";

/// Extended attribute of the mount's root that root sets to a size
/// (`parse_size` text, e.g. `1G`) to have the server grow the hugetlb pool
/// now, so that at least that much is free for hugetlb regions.
pub const RESERVE_XATTR: &str = "user.mshare.hugetlb_reserve";

/// Extended attribute of a region file: where its memory lives, as
/// [`MemoryId`] text (`MAJ:MIN INO` of the backing file, as
/// `/proc/PID/maps` writes them). Mappings of the region file itself show
/// the region file's own device and inode instead.
pub const MEMORY_XATTR: &str = "user.mshare.memory";

/// How the server treats the hugetlb pool (`hugetlb_pool=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolPolicy {
    /// Grows `vm.nr_hugepages` by what a hugetlb region needs (up to the
    /// ceiling) and gives the pages back when the region goes.
    Auto,
    /// Leaves the pool to the administrator: a region that does not fit in
    /// the free pages fails with `ENOMEM`.
    Manual,
}

impl PoolPolicy {
    /// The spelling in options and output.
    pub const fn as_str(self) -> &'static str {
        match self {
            PoolPolicy::Auto => "auto",
            PoolPolicy::Manual => "manual",
        }
    }
}

impl fmt::Display for PoolPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PoolPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(PoolPolicy::Auto),
            "manual" => Ok(PoolPolicy::Manual),
            _ => Err(format!("'{s}' is not a pool policy (auto or manual)")),
        }
    }
}

/// The value of [`POOL_XATTR`]: `policy=auto max_pages=N ours=N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStatus {
    /// `hugetlb_pool=`.
    pub policy: PoolPolicy,
    /// The most huge pages the server grows `vm.nr_hugepages` to
    /// (`hugetlb_max=`, in 2 MiB pages).
    pub max_pages: u64,
    /// Huge pages the server added to the pool and has not given back.
    pub ours: u64,
}

impl fmt::Display for PoolStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "policy={} max_pages={} ours={}",
            self.policy, self.max_pages, self.ours
        )
    }
}

impl FromStr for PoolStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (mut policy, mut max_pages, mut ours) = (None, None, None);
        for field in s.split_whitespace() {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| format!("'{field}' is not key=value"))?;
            let num = || {
                v.parse::<u64>()
                    .map_err(|_| format!("{k}={v}: not a number"))
            };
            match k {
                "policy" => policy = Some(v.parse()?),
                "max_pages" => max_pages = Some(num()?),
                "ours" => ours = Some(num()?),
                _ => {} // a later server may say more
            }
        }
        match (policy, max_pages, ours) {
            (Some(policy), Some(max_pages), Some(ours)) => Ok(PoolStatus {
                policy,
                max_pages,
                ours,
            }),
            _ => Err(format!("'{s}' lacks policy, max_pages or ours")),
        }
    }
}

/// Why the hugetlb pool cannot give `need` pages: what the server logs and
/// answers with `ENOMEM`, and what `msharectl` prints, in one wording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// Pages the allocation needs.
    pub need: u64,
    /// Pages free for it now.
    pub available: u64,
    /// The most the pool may hold (`hugetlb_max`), or what it holds under
    /// `manual`.
    pub limit: u64,
    /// The policy in force.
    pub policy: PoolPolicy,
}

impl fmt::Display for Shortfall {
    /// The numbers and what to do.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Shortfall {
            need,
            available,
            limit,
            ..
        } = *self;
        match self.policy {
            PoolPolicy::Auto => write!(
                f,
                "needs {need} huge pages, {available} are free and the pool can grow to \
                 {limit} (hugetlb_max): raise hugetlb_max or free memory"
            ),
            PoolPolicy::Manual => write!(
                f,
                "needs {need} huge pages, {available} of the pool's {limit} are free \
                 (hugetlb_pool=manual): raise vm.nr_hugepages or mount with hugetlb_pool=auto"
            ),
        }
    }
}

/// The value of [`MEMORY_XATTR`]: the device and inode of a region's
/// backing file, written as `/proc/PID/maps` writes them (`00:27 2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemoryId {
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Inode number.
    pub ino: u64,
}

impl fmt::Display for MemoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x} {}", self.major, self.minor, self.ino)
    }
}

impl FromStr for MemoryId {
    type Err = String;

    /// Reads `MAJ:MIN INO` (hexadecimal device numbers, decimal inode), the
    /// columns of a `/proc/PID/maps` line.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not 'MAJ:MIN INO'");
        let (dev, ino) = s.trim().split_once(' ').ok_or_else(bad)?;
        let (major, minor) = dev.split_once(':').ok_or_else(bad)?;
        Ok(MemoryId {
            major: u32::from_str_radix(major, 16).map_err(|_| bad())?,
            minor: u32::from_str_radix(minor, 16).map_err(|_| bad())?,
            ino: ino.trim().parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_status_round_trips() {
        let s = PoolStatus {
            policy: PoolPolicy::Auto,
            max_pages: 6144,
            ours: 32,
        };
        assert_eq!(s.to_string(), "policy=auto max_pages=6144 ours=32");
        assert_eq!(s.to_string().parse(), Ok(s));
        assert!("policy=auto ours=1".parse::<PoolStatus>().is_err());
        assert!("policy=maybe max_pages=1 ours=1"
            .parse::<PoolStatus>()
            .is_err());
        let later = "policy=manual max_pages=1 ours=0 colour=blue".parse::<PoolStatus>();
        assert_eq!(later.unwrap().policy, PoolPolicy::Manual);
    }

    #[test]
    fn memory_id_is_written_as_maps_writes_it() {
        let id = MemoryId {
            major: 0,
            minor: 0x2a,
            ino: 3,
        };
        assert_eq!(id.to_string(), "00:2a 3");
        assert_eq!("00:2a 3".parse(), Ok(id));
        assert_eq!("103:05 77".parse::<MemoryId>().unwrap().major, 0x103);
        for bad in ["", "00:2a", "2a 3", "00:zz 3", "00:2a x"] {
            assert!(bad.parse::<MemoryId>().is_err(), "{bad}");
        }
    }
}
