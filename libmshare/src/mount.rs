//! Finding an msharefs mount and reading its alignment.

use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::error::{errno_of, Error, Result};
use crate::mapping::Mapping;
use crate::region::{CreateOptions, Region};
use crate::xattr;
use mshare_uapi::{mountinfo, Backing, INFO_FILE_NAME};

/// Environment variable naming the mount to use.
pub const MSHARE_DIR_ENV: &str = "MSHARE_DIR";
/// The mount point used when nothing else names one.
pub const DEFAULT_DIR: &str = "/run/mshare";

/// An msharefs mount.
#[derive(Debug, Clone)]
pub struct Mount {
    dir: PathBuf,
    align: u64,
    /// The backing of regions created without naming one (the root's
    /// `user.mshare.backing`); `None` from a server that does not say.
    default_backing: Option<Backing>,
}

/// The first `fuse.msharefs` mount point in /proc/self/mountinfo.
fn from_mountinfo() -> Option<PathBuf> {
    let info = std::fs::read_to_string(mountinfo::PATH).ok()?;
    let found = mountinfo::parse(&info).find(|m| m.is_msharefs());
    found.map(|m| m.point)
}

/// The path of region `name` in the mount at `dir`: a relative name that
/// stays inside it.
fn region_path(dir: &Path, name: &str) -> Result<PathBuf> {
    if name.is_empty()
        || name.starts_with('/')
        || name.split('/').any(|c| c == ".." || c.is_empty())
    {
        return Err(Error::BadName {
            name: name.to_string(),
        });
    }
    Ok(dir.join(name))
}

/// The directory [`Mount::find`] tries, and what it tried before it.
fn candidate(dir: Option<&Path>) -> (PathBuf, Vec<String>) {
    if let Some(d) = dir {
        (d.to_path_buf(), Vec::new())
    } else if let Some(d) = std::env::var_os(MSHARE_DIR_ENV).filter(|d| !d.is_empty()) {
        (PathBuf::from(d), Vec::new())
    } else if let Some(d) = from_mountinfo() {
        (d, Vec::new())
    } else {
        (
            PathBuf::from(DEFAULT_DIR),
            vec!["$MSHARE_DIR, /proc/self/mountinfo".to_string()],
        )
    }
}

impl Mount {
    /// Finds the mount: `dir` if given, else `$MSHARE_DIR`, else the first
    /// `fuse.msharefs` mount in /proc/self/mountinfo, else `/run/mshare`.
    ///
    /// ```no_run
    /// let mount = libmshare::Mount::find(None)?;
    /// println!("{} aligns regions to {} bytes", mount.dir().display(), mount.alignment());
    /// # Ok::<(), libmshare::Error>(())
    /// ```
    pub fn find(dir: Option<&Path>) -> Result<Mount> {
        let (candidate, mut tried) = candidate(dir);
        Self::at(&candidate).map_err(|e| match e {
            Error::Path {
                errno: Errno::ENOENT,
                ..
            } => {
                tried.push(candidate.join(INFO_FILE_NAME).display().to_string());
                Error::NoMount {
                    tried: tried.join(", "),
                }
            }
            other => other,
        })
    }

    /// Opens region `name` of the mount [`Mount::find`] would find, without
    /// reading `mshare_info` first: the attach of a region costs the open
    /// of one file, not two. A missing mount is still told apart from a
    /// missing region.
    ///
    /// ```no_run
    /// let region = libmshare::Mount::open_in(None, "sga", true)?;
    /// let map = region.map()?;
    /// # Ok::<(), libmshare::Error>(())
    /// ```
    pub fn open_in(dir: Option<&Path>, name: &str, read_only: bool) -> Result<Region> {
        let (candidate, _) = candidate(dir);
        match Region::open(region_path(&candidate, name)?, name, read_only) {
            // No such region, or no mount there at all: find says which.
            Err(
                e @ Error::Path {
                    errno: Errno::ENOENT,
                    ..
                },
            ) => Err(Self::find(dir).err().unwrap_or(e)),
            other => other,
        }
    }

    /// The mount at `dir` (which must hold `mshare_info`).
    pub fn at(dir: &Path) -> Result<Mount> {
        let path = dir.join(INFO_FILE_NAME);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Path {
            op: "reading",
            path: path.clone(),
            errno: errno_of(&e),
        })?;
        let align = text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|a| a.is_power_of_two())
            .ok_or_else(|| Error::BadInfo {
                path,
                text: text.clone(),
            })?;
        Ok(Mount {
            dir: dir.to_path_buf(),
            align,
            default_backing: xattr::get_backing_at(dir).ok(),
        })
    }

    /// The backing of regions created without naming one (`backing=`),
    /// if the server says.
    pub fn default_backing(&self) -> Option<Backing> {
        self.default_backing
    }

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The alignment (`mshare_info`): region start and size are multiples.
    pub fn alignment(&self) -> u64 {
        self.align
    }

    /// The path of region `name` (which may contain `/` for directories).
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        region_path(&self.dir, name)
    }

    /// Creates region `name` (see [`CreateOptions`]); `start == 0` lets the
    /// server choose a free aligned start.
    ///
    /// ```no_run
    /// use libmshare::{Backing, CreateOptions, Mount};
    ///
    /// let mount = Mount::find(None)?;
    /// let opts = CreateOptions { backing: Some(Backing::Hugetlb), mode: 0o640, ..Default::default() };
    /// let region = mount.create("db/sga", 4 << 30, 1 << 30, &opts)?;
    /// assert_eq!(region.info()?.start, 4 << 30);
    /// # Ok::<(), libmshare::Error>(())
    /// ```
    pub fn create(
        &self,
        name: &str,
        start: u64,
        size: u64,
        options: &CreateOptions,
    ) -> Result<Region> {
        Region::create(self, name, start, size, options)
    }

    /// Opens region `name`, read-only or read-write.
    pub fn open(&self, name: &str, read_only: bool) -> Result<Region> {
        Region::open(self.path(name)?, name, read_only)
    }

    /// Maps region `name` at its start, read-only or read-write, without
    /// opening the region file: its `user.mshare.attach` attribute, `open`
    /// of the memory file it names (the kernel checks the region's mode),
    /// `mmap`, `close`. Where the server keeps no memory files, the region
    /// file is opened and mapped instead (see [`Region::map`]).
    ///
    /// ```no_run
    /// let mount = libmshare::Mount::find(None)?;
    /// let map = mount.attach("sga", true)?;
    /// # Ok::<(), libmshare::Error>(())
    /// ```
    pub fn attach(&self, name: &str, read_only: bool) -> Result<Mapping> {
        let path = self.path(name)?;
        match crate::attach::memory(crate::attach::Source::Path(&path), !read_only) {
            Ok((a, Some(fd))) => crate::attach::map(name, fd, &a, !read_only),
            Ok((_, None)) => self.open(name, read_only)?.map(),
            Err((op, errno)) => Err(Error::Path { op, path, errno }),
        }
    }

    /// Removes region `name`; its memory goes when the last mapping does.
    pub fn remove(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        std::fs::remove_file(&path).map_err(|e| Error::Path {
            op: "removing",
            path,
            errno: errno_of(&e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_mount() {
        let m = Mount {
            dir: PathBuf::from("/run/mshare"),
            align: 1 << 30,
            default_backing: None,
        };
        assert_eq!(m.path("a/b").unwrap(), PathBuf::from("/run/mshare/a/b"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b"] {
            assert!(m.path(bad).is_err(), "{bad}");
        }
    }
}
