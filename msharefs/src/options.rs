//! Mount options (`-o OPT[,OPT...]`), parsed into a [`Options`] value.
//!
//! Pure logic: no I/O, unit-tested below. Names follow libfuse and mount(8).

use std::fmt;

use libmshare::abi::{DEFAULT_ALIGNMENT, PAGE_SIZE};
use libmshare::parse_size;

/// How a region's memory is provided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackingKind {
    /// A file on a private tmpfs instance mounted `huge=always`: 2 MiB
    /// transparent huge pages, attachable through FUSE passthrough.
    Thp,
    /// A plain memfd: 4 KiB pages, attachable through FUSE passthrough.
    Shmem,
    /// A `MFD_HUGETLB` memfd: 2 MiB hugetlb pages whose page tables the
    /// kernel shares; attachable only by mapping the backing file directly.
    Hugetlb,
}

impl BackingKind {
    /// Parses `thp`, `shmem` or `hugetlb`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "thp" => Some(Self::Thp),
            "shmem" => Some(Self::Shmem),
            "hugetlb" => Some(Self::Hugetlb),
            _ => None,
        }
    }

    /// The option-value spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Thp => "thp",
            Self::Shmem => "shmem",
            Self::Hugetlb => "hugetlb",
        }
    }
}

impl fmt::Display for BackingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A generic mount flag passed on to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountFlag {
    /// `ro`
    ReadOnly,
    /// `rw`
    ReadWrite,
    /// `dev`
    Dev,
    /// `nodev`
    NoDev,
    /// `suid`
    Suid,
    /// `nosuid`
    NoSuid,
    /// `exec`
    Exec,
    /// `noexec`
    NoExec,
    /// `atime`
    Atime,
    /// `noatime`
    NoAtime,
    /// `sync`
    Sync,
    /// `async`
    Async,
    /// `dirsync`
    DirSync,
}

/// Everything the mount options say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// `allow_other`: users other than the mounter may use the mount.
    pub allow_other: bool,
    /// `default_permissions`: the kernel checks mode bits for every access.
    pub default_permissions: bool,
    /// `align=SIZE`: what `mshare_info` reports; region start and size must
    /// be multiples of it.
    pub align: u64,
    /// `backing=KIND`: the backing of new regions.
    pub backing: BackingKind,
    /// `max_regions=N`: how many regions may exist at once.
    pub max_regions: u64,
    /// `debug`: log every request (implies `-f`).
    pub debug: bool,
    /// `passthrough=auto|off`: answer opens with FUSE passthrough when the
    /// kernel allows it (`auto`), or never (`off`: no mmap of region files).
    pub passthrough: bool,
    /// `fsname=NAME`: the mount's source as shown in mountinfo.
    pub fsname: Option<String>,
    /// Generic mount flags, in the order given.
    pub flags: Vec<MountFlag>,
}

/// Default for `max_regions`.
pub const DEFAULT_MAX_REGIONS: u64 = 65536;

impl Options {
    /// The defaults; `as_root` turns on `allow_other` and
    /// `default_permissions` (a root-run server serves every user, and the
    /// kernel checks mode bits).
    pub fn defaults(as_root: bool) -> Self {
        Options {
            allow_other: as_root,
            default_permissions: as_root,
            align: DEFAULT_ALIGNMENT,
            backing: BackingKind::Thp,
            max_regions: DEFAULT_MAX_REGIONS,
            debug: false,
            passthrough: true,
            fsname: None,
            flags: Vec::new(),
        }
    }

    /// Applies one comma-separated `-o` argument.
    pub fn apply(&mut self, list: &str) -> Result<(), OptionError> {
        for opt in list.split(',').filter(|o| !o.is_empty()) {
            self.apply_one(opt)?;
        }
        Ok(())
    }

    fn apply_one(&mut self, opt: &str) -> Result<(), OptionError> {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (opt, None),
        };
        let bad = |why: &str| OptionError {
            option: opt.to_string(),
            why: why.to_string(),
        };
        let no_value = || match value {
            None => Ok(()),
            Some(_) => Err(bad("takes no value")),
        };
        let flag = |f: MountFlag| no_value().map(|()| Some(f));
        let new_flag = match name {
            "allow_other" => {
                no_value()?;
                self.allow_other = true;
                None
            }
            "default_permissions" => {
                no_value()?;
                self.default_permissions = true;
                None
            }
            "debug" => {
                no_value()?;
                self.debug = true;
                None
            }
            "align" => {
                let v = value.ok_or_else(|| bad("needs a size, e.g. align=1G"))?;
                let align = parse_size(v).map_err(|e| bad(&e))?;
                if align < PAGE_SIZE || !align.is_power_of_two() {
                    return Err(bad("must be a power of two of at least 4K"));
                }
                self.align = align;
                None
            }
            "backing" => {
                let v = value.ok_or_else(|| bad("needs thp, shmem or hugetlb"))?;
                self.backing =
                    BackingKind::parse(v).ok_or_else(|| bad("must be thp, shmem or hugetlb"))?;
                None
            }
            "passthrough" => {
                self.passthrough = match value {
                    Some("auto") => true,
                    Some("off") => false,
                    _ => return Err(bad("must be auto or off")),
                };
                None
            }
            "max_regions" => {
                let v = value.ok_or_else(|| bad("needs a number"))?;
                let n: u64 = v.parse().map_err(|_| bad("must be a whole number"))?;
                if n == 0 {
                    return Err(bad("must be at least 1"));
                }
                self.max_regions = n;
                None
            }
            "fsname" => {
                let v = value.ok_or_else(|| bad("needs a name"))?;
                if v.is_empty() || v.contains(char::is_whitespace) {
                    return Err(bad("must be a non-empty name without spaces"));
                }
                self.fsname = Some(v.to_string());
                None
            }
            "subtype" => {
                // mount.fuse3 passes the subtype it derived from the type;
                // ours is fixed.
                match value {
                    Some(libmshare::abi::FS_SUBTYPE) => None,
                    _ => return Err(bad("the subtype is always msharefs")),
                }
            }
            "ro" => flag(MountFlag::ReadOnly)?,
            "rw" => flag(MountFlag::ReadWrite)?,
            "dev" => flag(MountFlag::Dev)?,
            "nodev" => flag(MountFlag::NoDev)?,
            "suid" => flag(MountFlag::Suid)?,
            "nosuid" => flag(MountFlag::NoSuid)?,
            "exec" => flag(MountFlag::Exec)?,
            "noexec" => flag(MountFlag::NoExec)?,
            "atime" => flag(MountFlag::Atime)?,
            "noatime" => flag(MountFlag::NoAtime)?,
            "sync" => flag(MountFlag::Sync)?,
            "async" => flag(MountFlag::Async)?,
            "dirsync" => flag(MountFlag::DirSync)?,
            // Options mount(8) and fstab use that mean nothing to a FUSE
            // file system of memory: accepted so fstab lines work.
            "defaults" | "auto" | "noauto" | "nofail" | "_netdev" | "user" | "users" | "nouser"
            | "relatime" | "norelatime" | "strictatime" | "lazytime" | "nolazytime"
            | "diratime" | "nodiratime" | "nosymfollow" | "symfollow" => None,
            n if n.starts_with("x-") || n == "comment" => None,
            _ => return Err(bad("unknown option (see msharefs --help)")),
        };
        if let Some(f) = new_flag {
            self.flags.push(f);
        }
        Ok(())
    }
}

/// A mount option that could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    /// The option as given.
    pub option: String,
    /// Why it was refused.
    pub why: String,
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad mount option '{}': {}", self.option, self.why)
    }
}

impl std::error::Error for OptionError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_depend_on_root() {
        let root = Options::defaults(true);
        assert!(root.allow_other && root.default_permissions);
        let user = Options::defaults(false);
        assert!(!user.allow_other && !user.default_permissions);
        assert_eq!(root.align, 1 << 30);
        assert_eq!(root.backing, BackingKind::Thp);
    }

    #[test]
    fn applies_a_list() {
        let mut o = Options::defaults(false);
        o.apply("align=2M,backing=hugetlb,max_regions=7,allow_other,nosuid,rw,defaults,x-systemd.automount")
            .unwrap();
        assert_eq!(o.align, 2 << 20);
        assert_eq!(o.backing, BackingKind::Hugetlb);
        assert_eq!(o.max_regions, 7);
        assert!(o.allow_other);
        assert_eq!(o.flags, vec![MountFlag::NoSuid, MountFlag::ReadWrite]);
    }

    #[test]
    fn refuses_bad_values() {
        let mut o = Options::defaults(false);
        for bad in [
            "align=3M",
            "align=1K",
            "align",
            "backing=zram",
            "max_regions=0",
            "max_regions=x",
            "bogus",
            "passthrough",
            "passthrough=yes",
            "nosuid=1",
            "subtype=other",
            "fsname=",
        ] {
            let err = o.apply(bad).unwrap_err();
            assert_eq!(err.option, bad, "{bad}");
        }
        assert_eq!(
            o,
            Options::defaults(false),
            "a refused option changes nothing"
        );
    }
}
