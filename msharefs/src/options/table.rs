//! The table of msharefs options: each option's name, value, help,
//! default and how it is applied.

use mshare_uapi::{parse_size, FS_SUBTYPE, PAGE_SIZE};

use super::{Options, Passthrough, PoolCeiling, Uring};

/// One msharefs option: its name, how its value is written, what it means,
/// its default as help and docs show it, and how it is applied.
pub struct Spec {
    /// The name in `-o`.
    pub name: &'static str,
    /// How the value is written (`SIZE`, `KIND`, …); `None` for a flag.
    pub value: Option<&'static str>,
    /// What it means, for `--help`.
    pub help: &'static str,
    /// The default, as `--help` and the docs show it.
    pub default: &'static str,
    /// Applies the value (`None` for a flag).
    pub(super) apply: fn(&mut Options, Option<&str>) -> Result<(), String>,
}

impl Spec {
    /// How it is written in help: `name` or `name=VALUE`.
    pub fn synopsis(&self) -> String {
        match self.value {
            Some(v) => format!("{}={v}", self.name),
            None => self.name.to_string(),
        }
    }
}

fn value<'a>(v: Option<&'a str>, what: &str) -> Result<&'a str, String> {
    v.ok_or_else(|| format!("needs {what}"))
}

fn count(v: Option<&str>) -> Result<u64, String> {
    let n: u64 = value(v, "a number")?
        .parse()
        .map_err(|_| "must be a whole number".to_string())?;
    if n == 0 {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

/// The msharefs options.
pub const OPTIONS: &[Spec] = &[
    Spec {
        name: "align",
        value: Some("SIZE"),
        help: "region alignment reported by mshare_info; start and size of every region \
               must be multiples of it; a power of two >= 4K, with K/M/G/T suffixes \
               (1G is the size at which hugetlb page tables are shared between processes)",
        default: "1G",
        apply: |o, v| {
            let align = parse_size(value(v, "a size, e.g. align=1G")?)?;
            if align < PAGE_SIZE || !align.is_power_of_two() {
                return Err("must be a power of two of at least 4K".into());
            }
            o.align = align;
            Ok(())
        },
    },
    Spec {
        name: "backing",
        value: Some("KIND"),
        help: "memory of new regions: thp (tmpfs huge=always, 2 MiB pages), shmem \
               (4 KiB pages) or hugetlb (2 MiB pages from the hugetlb pool, see \
               hugetlb_pool; files cannot be mmapped, attach with libmshare)",
        default: "thp",
        apply: |o, v| {
            o.backing = value(v, "thp, shmem or hugetlb")?
                .parse()
                .map_err(|_| "must be thp, shmem or hugetlb".to_string())?;
            Ok(())
        },
    },
    Spec {
        name: "hugetlb_pool",
        value: Some("auto|manual"),
        help: "auto grows vm.nr_hugepages by what a hugetlb region needs (compacting memory \
               first if needed, never past hugetlb_max) and gives the pages back when the \
               region goes; manual leaves the pool to the administrator",
        default: "auto",
        apply: |o, v| {
            o.hugetlb_pool = value(v, "auto or manual")?.parse()?;
            Ok(())
        },
    },
    Spec {
        name: "hugetlb_max",
        value: Some("SIZE|N%"),
        help: "the most hugetlb_pool=auto grows the whole pool to: a size (K/M/G/T) or a \
               share of the machine's memory",
        default: "50%",
        apply: |o, v| {
            let v = value(v, "a size or a percentage, e.g. hugetlb_max=16G")?;
            o.hugetlb_max = match v.strip_suffix('%') {
                Some(p) => match p.parse::<u8>() {
                    Ok(p) if p <= 100 => PoolCeiling::Percent(p),
                    _ => return Err("must be a percentage from 0% to 100%".into()),
                },
                None => PoolCeiling::Bytes(parse_size(v)?),
            };
            Ok(())
        },
    },
    Spec {
        name: "max_regions",
        value: Some("N"),
        help: "most regions and directories that may exist at once; one more is ENOSPC \
               (lowered at start to what RLIMIT_NOFILE allows)",
        default: "65536",
        apply: |o, v| {
            o.max_regions = count(v)?;
            Ok(())
        },
    },
    Spec {
        name: "max_regions_per_user",
        value: Some("N"),
        help: "most regions and directories that one user other than root may have \
               made; one more is EDQUOT for that user only",
        default: "max_regions/4",
        apply: |o, v| {
            o.max_regions_per_user = Some(count(v)?);
            Ok(())
        },
    },
    Spec {
        name: "passthrough",
        value: Some("auto|off"),
        help: "answer opens with FUSE passthrough so region files can be mmapped; off \
               serves read/write only and mmap fails with ENODEV",
        default: "auto",
        apply: |o, v| {
            o.passthrough = match v {
                Some("auto") => Passthrough::Auto,
                Some("off") => Passthrough::Off,
                _ => return Err("must be auto or off".into()),
            };
            Ok(())
        },
    },
    Spec {
        name: "io_uring",
        value: Some("auto|on|off"),
        help: "serve requests over FUSE io_uring queues, one per CPU, so that an open or \
               ioctl is answered on the CPU that made it (half the time of /dev/fuse); \
               auto turns the kernel's fuse.enable_uring on (root) and falls back to \
               /dev/fuse where that fails; on (or a bare io_uring) fails the mount \
               when fuse.enable_uring cannot be turned on, and logs an error and reads \
               /dev/fuse when the queues cannot be made; off reads /dev/fuse",
        default: "auto",
        apply: |o, v| {
            o.io_uring = match v {
                Some("auto") => Uring::Auto,
                Some("on") | None => Uring::On,
                Some("off") => Uring::Off,
                _ => return Err("must be auto, on or off".into()),
            };
            Ok(())
        },
    },
    Spec {
        name: "io_uring_q_depth",
        value: Some("N"),
        help: "threads each CPU's io_uring queue starts with, pinned to the CPU, one ring \
               entry each (1 to 128); a queue grows by a thread when a request that may \
               take long comes while all are busy, up to 16",
        default: "4",
        apply: |o, v| {
            let n = count(v)?;
            if n > 128 {
                return Err("must be at most 128".into());
            }
            o.io_uring_q_depth = n as u32;
            Ok(())
        },
    },
    Spec {
        name: "allow_other",
        value: None,
        help: "let every user use the mount",
        default: "on when run as root",
        apply: |o, _| {
            o.allow_other = true;
            Ok(())
        },
    },
    Spec {
        name: "default_permissions",
        value: None,
        help: "let the kernel check mode bits",
        default: "on when run as root",
        apply: |o, _| {
            o.default_permissions = true;
            Ok(())
        },
    },
    Spec {
        name: "fsname",
        value: Some("NAME"),
        help: "source shown in /proc/mounts",
        default: "SOURCE, else msharefs",
        apply: |o, v| {
            let v = value(v, "a name")?;
            if v.is_empty() || v.contains(char::is_whitespace) {
                return Err("must be a non-empty name without spaces".into());
            }
            o.fsname = Some(v.to_string());
            Ok(())
        },
    },
    Spec {
        name: "state_dir",
        value: Some("DIR"),
        help: "where regions are kept so that they outlive the server (memory on private \
               tmpfs/hugetlbfs instances mounted there, and the namespace in DIR/state); \
               a server started on the same mount point after a crash or a stop adopts \
               them; a clean umount frees them",
        default: "/run/msharefs/state/MOUNTPOINT-ESCAPED",
        apply: |o, v| {
            let dir = std::path::PathBuf::from(value(v, "a directory")?);
            if !dir.is_absolute() {
                return Err("must be an absolute path".into());
            }
            o.state_dir = Some(dir);
            Ok(())
        },
    },
    Spec {
        name: "fresh",
        value: None,
        help: "start empty: free the regions that a previous server on this mount point left",
        default: "off",
        apply: |o, _| {
            o.fresh = true;
            Ok(())
        },
    },
    Spec {
        name: "subtype",
        value: Some("msharefs"),
        help: "passed by mount.fuse3; always msharefs",
        default: "msharefs",
        apply: |_, v| match v {
            Some(FS_SUBTYPE) => Ok(()),
            _ => Err("the subtype is always msharefs".into()),
        },
    },
    Spec {
        name: "debug",
        value: None,
        help: "log every request; implies -f",
        default: "off",
        apply: |o, _| {
            o.debug = true;
            Ok(())
        },
    },
];
