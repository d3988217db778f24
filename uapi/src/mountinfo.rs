//! `/proc/self/mountinfo`, parsed: the one reader that the server,
//! libmshare, `msharectl` and the tests share.
//!
//! Each line (proc(5)) is `ID PARENT MAJOR:MINOR ROOT POINT OPTIONS
//! [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`. The kernel writes space,
//! tab, newline and backslash in paths as octal escapes (`\040`, `\011`,
//! `\012`, `\134`), so a path must be unescaped before it is compared with
//! one: `/tmp/db shm` stands there as `/tmp/db\040shm`. The text is the
//! caller's to read (this crate does no I/O):
//!
//! ```
//! use mshare_uapi::mountinfo;
//! let text = "36 25 0:52 / /tmp/db\\040shm rw,nosuid - fuse.msharefs msharefs rw,allow_other\n";
//! let m = mountinfo::parse(text).next().unwrap();
//! assert_eq!(m.point, std::path::Path::new("/tmp/db shm"));
//! assert!(m.is_msharefs());
//! ```

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::FS_SUBTYPE;

/// Where the kernel lists the mounts of the calling process's namespace.
pub const PATH: &str = "/proc/self/mountinfo";

/// One mount, as a line of mountinfo describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount's ID (reused once the mount is gone).
    pub id: u64,
    /// The device number of the mounted file system (`st_dev` of its
    /// files), as `(major, minor)`.
    pub dev: (u32, u32),
    /// Where the mount is, unescaped.
    pub point: PathBuf,
    /// The per-mount options (`rw,nosuid,...`).
    pub options: String,
    /// The file system type, `fuse.msharefs` for ours.
    pub fstype: String,
    /// The source (`fsname=`), unescaped.
    pub source: String,
    /// The per-superblock options (`rw,user_id=0,allow_other,...`).
    pub super_options: String,
}

impl MountEntry {
    /// Whether this is an msharefs mount (live, or dead after its server
    /// was killed).
    pub fn is_msharefs(&self) -> bool {
        self.fstype
            .strip_prefix("fuse.")
            .is_some_and(|t| t == FS_SUBTYPE)
    }

    /// Whether the per-mount or per-superblock options include `opt`.
    pub fn has_option(&self, opt: &str) -> bool {
        self.options
            .split(',')
            .chain(self.super_options.split(','))
            .any(|o| o == opt)
    }
}

/// The mounts that `text` (the contents of [`PATH`]) lists, in its order:
/// a mount stacked on another comes after it. Lines that do not parse are
/// skipped.
pub fn parse(text: &str) -> impl Iterator<Item = MountEntry> + '_ {
    text.lines().filter_map(parse_line)
}

/// The topmost mount on `point` among `mounts` (what a path walk to
/// `point` reaches).
pub fn topmost(mut mounts: impl Iterator<Item = MountEntry>, point: &Path) -> Option<MountEntry> {
    mounts.by_ref().filter(|m| m.point == point).last()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let id = l.next()?.parse().ok()?;
    let _parent = l.next()?;
    let (major, minor) = l.next()?.split_once(':')?;
    let dev = (major.parse().ok()?, minor.parse().ok()?);
    let _root = l.next()?;
    let point = PathBuf::from(OsString::from_vec(unescape(l.next()?)));
    let options = l.next()?.to_string();
    let mut r = right.split(' ');
    let fstype = String::from_utf8_lossy(&unescape(r.next()?)).into_owned();
    let source = String::from_utf8_lossy(&unescape(r.next()?)).into_owned();
    let super_options = r.next().unwrap_or("").to_string();
    Some(MountEntry {
        id,
        dev,
        point,
        options,
        fstype,
        source,
        super_options,
    })
}

/// A mountinfo field with its octal escapes (`\040` and the like) undone;
/// a backslash not followed by three octal digits stays as it is.
pub fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |c: u8| (b'0'..=b'7').contains(&c);
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(|&c| octal(c)) {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |v, &c| v * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(point: &str, fstype: &str) -> String {
        format!("41 30 0:61 / {point} rw,nosuid,nodev,relatime shared:1 master:2 - {fstype} msharefs rw,user_id=0,group_id=0,default_permissions,allow_other\n")
    }

    #[test]
    fn paths_with_space_tab_newline_and_backslash_are_unescaped() {
        for (raw, path) in [
            ("/tmp/x/db\\040shm", "/tmp/x/db shm"),
            ("/a\\011tab", "/a\ttab"),
            ("/a\\012newline", "/a\nnewline"),
            ("/back\\134slash", "/back\\slash"),
            ("/plain", "/plain"),
            ("/end\\04", "/end\\04"),
            ("/not\\09octal", "/not\\09octal"),
        ] {
            let m = parse(&line(raw, "fuse.msharefs")).next().unwrap();
            assert_eq!(m.point, Path::new(path), "{raw}");
        }
    }

    #[test]
    fn fields_are_where_proc5_puts_them() {
        let m = parse(&line("/run/mshare", "fuse.msharefs")).next().unwrap();
        assert_eq!(m.id, 41);
        assert_eq!(m.dev, (0, 61));
        assert_eq!(m.options, "rw,nosuid,nodev,relatime");
        assert_eq!(m.source, "msharefs");
        assert!(m.is_msharefs());
        assert!(m.has_option("allow_other") && m.has_option("nosuid"));
        assert!(!m.has_option("allow"));
        let other = parse(&line("/run/mshare", "fuse.sshfs")).next().unwrap();
        assert!(!other.is_msharefs());
    }

    #[test]
    fn the_topmost_mount_on_a_path_is_the_last_listed() {
        let text = line("/mnt", "tmpfs") + &line("/mnt", "fuse.msharefs") + "garbage\n";
        assert_eq!(parse(&text).count(), 2, "the bad line is skipped");
        let top = topmost(parse(&text), Path::new("/mnt")).unwrap();
        assert!(top.is_msharefs());
        assert!(topmost(parse(&text), Path::new("/mn")).is_none());
    }
}
