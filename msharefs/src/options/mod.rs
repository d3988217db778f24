//! Mount options (`-o OPT[,OPT...]`), defined once in [`OPTIONS`]: the
//! parser, `msharefs --help` and the defaults that a test checks against
//! `Documentation/msharefs.md` all come from that table.
//!
//! Pure logic: no I/O, unit-tested below. Names follow libfuse and mount(8).

use std::fmt::Write as _;

use mshare_uapi::{Backing, PoolPolicy, DEFAULT_ALIGNMENT};

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

impl MountFlag {
    /// The flag that undoes this one (`ro` and `rw`, `dev` and `nodev`,
    /// …); `dirsync` has none.
    pub fn opposite(self) -> Option<MountFlag> {
        use MountFlag::*;
        Some(match self {
            ReadOnly => ReadWrite,
            ReadWrite => ReadOnly,
            Dev => NoDev,
            NoDev => Dev,
            Suid => NoSuid,
            NoSuid => Suid,
            Exec => NoExec,
            NoExec => Exec,
            Atime => NoAtime,
            NoAtime => Atime,
            Sync => Async,
            Async => Sync,
            DirSync => return None,
        })
    }
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

mod table;

pub use self::table::{Spec, OPTIONS};

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
            backing: Backing::Thp,
            max_regions: DEFAULT_MAX_REGIONS,
            max_regions_per_user: None,
            debug: false,
            passthrough: Passthrough::Auto,
            io_uring: Uring::Auto,
            io_uring_q_depth: crate::transport::uring::DEFAULT_DEPTH,
            fsname: None,
            state_dir: None,
            fresh: false,
            hugetlb_pool: PoolPolicy::Auto,
            hugetlb_max: PoolCeiling::Percent(50),
            flags: Vec::new(),
        }
    }

    /// The generic mount flags as a mount helper takes them: each once,
    /// and of two opposite flags only the later, as in mount(8); in the
    /// order of their last mention.
    pub fn effective_flags(&self) -> Vec<MountFlag> {
        let mut kept: Vec<MountFlag> = Vec::new();
        for &f in self.flags.iter().rev() {
            if !kept.iter().any(|&k| k == f || Some(k) == f.opposite()) {
                kept.push(f);
            }
        }
        kept.reverse();
        kept
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
mod tests;
