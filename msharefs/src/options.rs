//! Mount options (`-o OPT[,OPT...]`), defined once in [`OPTIONS`]: the
//! parser, `msharefs --help` and the defaults that a test checks against
//! `Documentation/msharefs.md` all come from that table.
//!
//! Pure logic: no I/O, unit-tested below. Names follow libfuse and mount(8).

use std::fmt::Write as _;

use mshare_uapi::{parse_size, Backing, PoolPolicy, DEFAULT_ALIGNMENT, FS_SUBTYPE, PAGE_SIZE};

/// Whether opens are answered with FUSE passthrough (`passthrough=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Passthrough {
    /// Where the kernel and the server's privileges allow it.
    Auto,
    /// Never: region files cannot be mmapped, read/write go through the
    /// server.
    Off,
}

/// Whether requests are served over io_uring (`io_uring=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uring {
    /// Where the kernel offers it (the server turns `fuse.enable_uring` on
    /// if it may).
    Auto,
    /// Always: the server turns `fuse.enable_uring` on, and the mount fails
    /// if the kernel cannot serve it.
    On,
    /// Never: requests are read from `/dev/fuse`.
    Off,
}

/// The most the server grows the hugetlb pool to (`hugetlb_max=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolCeiling {
    /// A share of the machine's memory (`MemTotal`), in percent.
    Percent(u8),
    /// A size in bytes.
    Bytes(u64),
}

impl PoolCeiling {
    /// The ceiling in bytes on a machine with `mem_total` bytes of memory.
    pub fn bytes(self, mem_total: u64) -> u64 {
        match self {
            PoolCeiling::Percent(p) => mem_total / 100 * p as u64,
            PoolCeiling::Bytes(b) => b,
        }
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

/// The generic mount flags by name.
pub const MOUNT_FLAGS: &[(&str, MountFlag)] = &[
    ("ro", MountFlag::ReadOnly),
    ("rw", MountFlag::ReadWrite),
    ("dev", MountFlag::Dev),
    ("nodev", MountFlag::NoDev),
    ("suid", MountFlag::Suid),
    ("nosuid", MountFlag::NoSuid),
    ("exec", MountFlag::Exec),
    ("noexec", MountFlag::NoExec),
    ("atime", MountFlag::Atime),
    ("noatime", MountFlag::NoAtime),
    ("sync", MountFlag::Sync),
    ("async", MountFlag::Async),
    ("dirsync", MountFlag::DirSync),
];

/// Options that mount(8) and fstab use and that mean nothing to a FUSE file
/// system of memory: accepted and ignored so that fstab lines work (so are
/// `x-*` and `comment=`).
pub const IGNORED: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "user",
    "users",
    "nouser",
    "relatime",
    "norelatime",
    "strictatime",
    "lazytime",
    "nolazytime",
    "diratime",
    "nodiratime",
    "nosymfollow",
    "symfollow",
];

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
    pub backing: Backing,
    /// `max_regions=N`: how many nodes (regions and directories) may exist
    /// at once.
    pub max_regions: u64,
    /// `max_regions_per_user=N`: how many of them one uid other than root
    /// may have made; `None`: a quarter of `max_regions`.
    pub max_regions_per_user: Option<u64>,
    /// `debug`: log every request (implies `-f`).
    pub debug: bool,
    /// `passthrough=auto|off`.
    pub passthrough: Passthrough,
    /// `io_uring=auto|on|off`.
    pub io_uring: Uring,
    /// `io_uring_q_depth=N`: threads each CPU's io_uring queue starts with.
    pub io_uring_q_depth: u32,
    /// `fsname=NAME`: the mount's source as shown in mountinfo.
    pub fsname: Option<String>,
    /// `state_dir=DIR`: where regions are kept so that they outlive the
    /// server; `None`: under /run/msharefs/state, named for the mount point.
    pub state_dir: Option<std::path::PathBuf>,
    /// `fresh`: discard the regions a previous server left.
    pub fresh: bool,
    /// `hugetlb_pool=auto|manual`: whether the server sizes the hugetlb
    /// pool for its regions.
    pub hugetlb_pool: PoolPolicy,
    /// `hugetlb_max=SIZE|N%`: the most it grows the pool to.
    pub hugetlb_max: PoolCeiling,
    /// Generic mount flags, in the order given.
    pub flags: Vec<MountFlag>,
}

/// Default for `max_regions`.
pub const DEFAULT_MAX_REGIONS: u64 = 65536;

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
    apply: fn(&mut Options, Option<&str>) -> Result<(), String>,
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
               /dev/fuse where that fails, on (or a bare io_uring) fails the mount \
               instead, off reads /dev/fuse",
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

impl Options {
    /// The defaults; `as_root` turns on `allow_other` and
    /// `default_permissions` (a root-run server serves every user, and the
    /// kernel checks mode bits).
    pub fn defaults(as_root: bool) -> Self {
        Options {
            allow_other: as_root,
            default_permissions: as_root,
            align: DEFAULT_ALIGNMENT,
            backing: Backing::Thp,
            max_regions: DEFAULT_MAX_REGIONS,
            max_regions_per_user: None,
            debug: false,
            passthrough: Passthrough::Auto,
            io_uring: Uring::Auto,
            io_uring_q_depth: crate::uring::DEFAULT_DEPTH,
            fsname: None,
            state_dir: None,
            fresh: false,
            hugetlb_pool: PoolPolicy::Auto,
            hugetlb_max: PoolCeiling::Percent(50),
            flags: Vec::new(),
        }
    }

    /// Applies one comma-separated `-o` argument; a refused option changes
    /// nothing.
    pub fn apply(&mut self, list: &str) -> Result<(), OptionError> {
        let mut next = self.clone();
        for opt in list.split(',').filter(|o| !o.is_empty()) {
            next.apply_one(opt).map_err(|why| OptionError {
                option: opt.to_string(),
                why,
            })?;
        }
        *self = next;
        Ok(())
    }

    fn apply_one(&mut self, opt: &str) -> Result<(), String> {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (opt, None),
        };
        if let Some(spec) = OPTIONS.iter().find(|s| s.name == name) {
            if spec.value.is_none() && value.is_some() {
                return Err("takes no value".into());
            }
            return (spec.apply)(self, value);
        }
        if let Some((_, flag)) = MOUNT_FLAGS.iter().find(|(n, _)| *n == name) {
            if value.is_some() {
                return Err("takes no value".into());
            }
            self.flags.push(*flag);
            return Ok(());
        }
        if IGNORED.contains(&name) || name.starts_with("x-") || name == "comment" {
            return Ok(());
        }
        Err("unknown option (see msharefs --help)".into())
    }
}

/// The mount options part of `msharefs --help`.
pub fn help() -> String {
    let mut out = String::from("Mount options (-o OPT[,OPT...], may be repeated):\n");
    for spec in OPTIONS {
        let text = format!("{} [default: {}]", spec.help, spec.default);
        let _ = writeln!(out, "  {:<22} {}", spec.synopsis(), wrap(&text, 25, 80));
    }
    let flags: Vec<_> = MOUNT_FLAGS.iter().map(|(n, _)| *n).collect();
    let _ = writeln!(
        out,
        "  {}\n  {:<22} the generic mount flags",
        wrap(&flags.join(", "), 2, 80),
        ""
    );
    let _ = writeln!(
        out,
        "  {}, x-*, comment=\n  {:<22} accepted and ignored, so that fstab lines work",
        wrap(&IGNORED.join(", "), 2, 80),
        ""
    );
    out
}

/// Wraps `text` at `width` columns, indenting continuation lines by `indent`.
fn wrap(text: &str, indent: usize, width: usize) -> String {
    let mut out = String::new();
    let mut col = indent;
    for word in text.split(' ') {
        if col > indent && col + 1 + word.len() > width {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            col = indent;
        } else if col > indent {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.len();
    }
    out
}

/// A mount option that could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad mount option '{option}': {why}")]
pub struct OptionError {
    /// The option as given.
    pub option: String,
    /// Why it was refused.
    pub why: String,
}

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
        assert_eq!(root.backing, Backing::Thp);
    }

    #[test]
    fn shown_defaults_are_the_code_defaults() {
        for spec in OPTIONS.iter().filter(|s| s.value.is_some()) {
            if ["fsname", "max_regions_per_user", "state_dir"].contains(&spec.name) {
                continue; // derived from SOURCE, max_regions, the mount point
            }
            let mut o = Options::defaults(false);
            o.apply(&format!("{}={}", spec.name, spec.default)).unwrap();
            assert_eq!(o, Options::defaults(false), "{}", spec.name);
        }
    }

    #[test]
    fn documented_defaults_are_the_code_defaults() {
        let doc = include_str!("../../Documentation/msharefs.md");
        let strip = |s: &str| s.replace('`', "").replace("\\|", "|").trim().to_string();
        let rows: Vec<Vec<String>> = doc
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| l.split(" | ").map(strip).collect())
            .collect();
        for spec in OPTIONS {
            let row = rows
                .iter()
                .find(|r| r[0].trim_start_matches("| ") == spec.synopsis())
                .unwrap_or_else(|| {
                    panic!(
                        "Documentation/msharefs.md has no row for {}",
                        spec.synopsis()
                    )
                });
            let default = row
                .last()
                .unwrap()
                .trim_end_matches(" |")
                .trim_end_matches('|');
            assert_eq!(
                default.trim(),
                spec.default,
                "documented default of {}",
                spec.name
            );
        }
    }

    #[test]
    fn help_lists_every_option_with_its_default() {
        let h = help();
        for spec in OPTIONS {
            assert!(h.contains(&spec.synopsis()), "{}", spec.name);
        }
        assert!(h.contains("[default: 1G]") && h.contains("nosuid"), "{h}");
    }

    #[test]
    fn applies_a_list() {
        let mut o = Options::defaults(false);
        o.apply("align=2M,backing=hugetlb,max_regions=7,allow_other,nosuid,rw,defaults,x-systemd.automount")
            .unwrap();
        assert_eq!(o.align, 2 << 20);
        assert_eq!(o.backing, Backing::Hugetlb);
        assert_eq!(o.max_regions, 7);
        assert!(o.allow_other);
        assert_eq!(o.flags, vec![MountFlag::NoSuid, MountFlag::ReadWrite]);
        o.apply("passthrough=off").unwrap();
        assert_eq!(o.passthrough, Passthrough::Off);
        o.apply("hugetlb_pool=manual,hugetlb_max=16G").unwrap();
        assert_eq!(o.hugetlb_pool, PoolPolicy::Manual);
        assert_eq!(o.hugetlb_max, PoolCeiling::Bytes(16 << 30));
        o.apply("hugetlb_max=75%").unwrap();
        assert_eq!(o.hugetlb_max.bytes(1000), 750);
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
            "debug=1",
            "subtype=other",
            "fsname=",
            "hugetlb_pool=maybe",
            "hugetlb_max=101%",
            "hugetlb_max=lots",
            "hugetlb_max",
        ] {
            let err = o.apply(bad).unwrap_err();
            assert_eq!(err.option, bad, "{bad}");
        }
        o.apply("align=2M,bogus").unwrap_err();
        assert_eq!(
            o,
            Options::defaults(false),
            "a refused option changes nothing"
        );
    }
}
