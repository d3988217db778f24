//! msharefs' extension: what libmshare reads to attach a region without
//! opening it, from the region file's extended attribute [`ATTACH_XATTR`].

use std::fmt;
use std::path::PathBuf;

use crate::Backing;

/// Extended attribute of a sized region file: start, size, backing kind and
/// the path of the region's memory file ([`Attach`] as text). Reading it
/// needs read permission on the region and search permission on every
/// directory above it; an unsized region answers `EINVAL`.
///
/// The memory file carries the region's owner, group and permission bits
/// (without execute), and its name changes whenever what decides access to
/// the region does (a `chmod` or `chown` of it or of a directory above it,
/// a rename, its removal), so a path read here opens the memory only while
/// a new path walk to the region would be allowed.
pub const ATTACH_XATTR: &str = "user.mshare.attach";

/// The directory under which a server run as root keeps its state, and so
/// the regions' memory files (`RUN_DIR/state/<mount point, escaped>`).
pub const RUN_DIR: &str = "/run/msharefs";

/// The value of [`ATTACH_XATTR`]:
/// `start=0x<hex> size=<decimal> backing=<kind> path=<memory file>`, the
/// path running to the end of the value and empty where the server keeps
/// no memory files (it has no state directory: not run as root, or a
/// `/dev/fd/N` mount); such a region can be mapped only through its region
/// file (FUSE passthrough, which a hugetlb region cannot use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attach {
    /// Address the region is mapped at.
    pub start: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its backing kind.
    pub backing: Backing,
    /// The memory file to open and map, if the server keeps one.
    pub path: Option<PathBuf>,
}

/// A value of [`ATTACH_XATTR`] that does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed user.mshare.attach value")]
pub struct BadAttach;

impl fmt::Display for Attach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "start={:#x} size={} backing={} path=",
            self.start, self.size, self.backing
        )?;
        match &self.path {
            Some(p) => write!(f, "{}", p.display()),
            None => Ok(()),
        }
    }
}

impl Attach {
    /// Parses a value of [`ATTACH_XATTR`] (bytes, as `getxattr` gives them:
    /// the path need not be UTF-8).
    pub fn parse(value: &[u8]) -> Result<Attach, BadAttach> {
        use std::os::unix::ffi::OsStrExt;
        let mut rest = value;
        let mut field = |key: &str| -> Result<&[u8], BadAttach> {
            let after = rest.strip_prefix(key.as_bytes()).ok_or(BadAttach)?;
            let end = after.iter().position(|&b| b == b' ').ok_or(BadAttach)?;
            rest = &after[end + 1..];
            Ok(&after[..end])
        };
        let start = u64::from_str_radix(text(field("start=0x")?)?, 16).map_err(|_| BadAttach)?;
        let size = text(field("size=")?)?.parse().map_err(|_| BadAttach)?;
        let backing = text(field("backing=")?)?.parse().map_err(|_| BadAttach)?;
        let path = rest.strip_prefix(b"path=").ok_or(BadAttach)?;
        let path = (!path.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(path)));
        Ok(Attach {
            start,
            size,
            backing,
            path,
        })
    }
}

fn text(b: &[u8]) -> Result<&str, BadAttach> {
    std::str::from_utf8(b).map_err(|_| BadAttach)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let a = Attach {
            start: 1 << 40,
            size: 1 << 30,
            backing: Backing::Hugetlb,
            path: Some("/run/msharefs/state/a b/hugetlb/r9.00ff".into()),
        };
        let text = a.to_string();
        assert_eq!(
            text,
            "start=0x10000000000 size=1073741824 backing=hugetlb \
             path=/run/msharefs/state/a b/hugetlb/r9.00ff"
        );
        assert_eq!(Attach::parse(text.as_bytes()), Ok(a.clone()));
        let none = Attach { path: None, ..a };
        assert_eq!(Attach::parse(none.to_string().as_bytes()), Ok(none));
        for bad in [
            "",
            "start=0x10 size=1 backing=thp",
            "start=16 size=1 backing=thp path=",
            "start=0x10 size=x backing=thp path=",
            "start=0x10 size=1 backing=gold path=",
        ] {
            assert_eq!(Attach::parse(bad.as_bytes()), Err(BadAttach), "{bad:?}");
        }
    }
}
