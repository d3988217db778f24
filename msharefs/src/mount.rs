//! The server's own mount: made with `mount(2)` on a `/dev/fuse` descriptor
//! that the server opened, so that the server alone decides when it is
//! unmounted, and known afterwards by its device number, so that the
//! server can tell whether it is still attached (a `umount` by someone
//! else detaches it) without asking the file system it serves.
//!
//! fuser's own mount unmounts the path again when its session ends, after
//! someone else's `umount` too (fuser 0.18 takes a dead connection for a
//! live one): a warning at every clean `umount`, and the unmount of
//! whatever was mounted on the path in the meantime. A server that may not
//! call `mount(2)` (not root) still mounts through fuser, which runs
//! `fusermount3`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use log::info;
use mshare_uapi::{mountinfo, FS_SUBTYPE};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;

use crate::options::{MountFlag, Options};

/// A mount this server made (or fuser made for it), as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OurMount {
    /// Where it is mounted.
    pub dir: PathBuf,
    /// The device number of its file system: unique while the connection
    /// lives, which the server's own descriptor guarantees.
    pub dev: (u32, u32),
}

/// The flags and data string of `mount(2)` for `opts`: `nosuid` and
/// `nodev` unless asked otherwise, as fusermount does; of two opposite
/// flags, the later wins, as in mount(8).
pub fn mount_args(opts: &Options, fd: i32, rootmode: u32, owner: (u32, u32)) -> (MsFlags, String) {
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    for f in &opts.flags {
        let (set, bit) = match f {
            MountFlag::ReadOnly => (true, MsFlags::MS_RDONLY),
            MountFlag::ReadWrite => (false, MsFlags::MS_RDONLY),
            MountFlag::Dev => (false, MsFlags::MS_NODEV),
            MountFlag::NoDev => (true, MsFlags::MS_NODEV),
            MountFlag::Suid => (false, MsFlags::MS_NOSUID),
            MountFlag::NoSuid => (true, MsFlags::MS_NOSUID),
            MountFlag::Exec => (false, MsFlags::MS_NOEXEC),
            MountFlag::NoExec => (true, MsFlags::MS_NOEXEC),
            MountFlag::Atime => (false, MsFlags::MS_NOATIME),
            MountFlag::NoAtime => (true, MsFlags::MS_NOATIME),
            MountFlag::Sync => (true, MsFlags::MS_SYNCHRONOUS),
            MountFlag::Async => (false, MsFlags::MS_SYNCHRONOUS),
            MountFlag::DirSync => (true, MsFlags::MS_DIRSYNC),
        };
        flags.set(bit, set);
    }
    let mut data = format!(
        "fd={fd},rootmode={rootmode:o},user_id={},group_id={}",
        owner.0, owner.1
    );
    if opts.default_permissions {
        data.push_str(",default_permissions");
    }
    if opts.allow_other {
        data.push_str(",allow_other");
    }
    (flags, data)
}

/// The source shown in mountinfo: `fsname=`, else SOURCE, else `msharefs`.
pub fn source_name(opts: &Options, source: Option<&std::ffi::OsStr>) -> String {
    opts.fsname
        .clone()
        .or_else(|| source.map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| FS_SUBTYPE.to_string())
}

/// Mounts msharefs on `dir` with a new `/dev/fuse` connection; its
/// descriptor, which the session serves. `Err(EPERM)`: this process may
/// not mount (the caller lets fuser run `fusermount3`).
pub fn mount(dir: &Path, opts: &Options, source: &str) -> Result<OwnedFd, Errno> {
    let rootmode = std::fs::metadata(dir)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?
        .permissions()
        .mode();
    let dev = nix::fcntl::open("/dev/fuse", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
    let owner = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let (flags, data) = mount_args(opts, dev.as_raw_fd(), rootmode, owner);
    let fstype = format!("fuse.{FS_SUBTYPE}");
    nix::mount::mount(
        Some(source),
        dir,
        Some(fstype.as_str()),
        flags,
        Some(data.as_str()),
    )?;
    Ok(dev)
}

/// What mountinfo lists now.
fn mounts() -> Vec<mountinfo::MountEntry> {
    let text = std::fs::read_to_string(mountinfo::PATH).unwrap_or_default();
    mountinfo::parse(&text).collect()
}

/// Whether the topmost mount on `dir` is an msharefs mount (live, or dead
/// after its server was killed or its connection aborted).
pub fn msharefs_on(dir: &Path) -> bool {
    mountinfo::topmost(mounts().into_iter(), dir).is_some_and(|m| m.is_msharefs())
}

impl OurMount {
    /// The mount just made on `dir` (the topmost msharefs mount there).
    pub fn find(dir: &Path) -> Option<OurMount> {
        let top = mountinfo::topmost(mounts().into_iter(), dir)?;
        top.is_msharefs().then(|| OurMount {
            dir: dir.to_path_buf(),
            dev: top.dev,
        })
    }

    /// Whether it is still attached on its directory (not unmounted, and
    /// not detached by `umount -l`).
    pub fn attached(&self) -> bool {
        mounts()
            .iter()
            .any(|m| m.dev == self.dev && m.point == self.dir && m.is_msharefs())
    }

    /// Unmounts it; a busy mount (files open in it) is detached, so that
    /// it goes once they are closed. Refuses when another mount covers it:
    /// an unmount by path would take that one.
    pub fn unmount(&self) -> Result<(), String> {
        let shown = self.dir.display();
        let top = mountinfo::topmost(mounts().into_iter(), &self.dir);
        if top.as_ref().map(|m| m.dev) != Some(self.dev) {
            return Err(format!(
                "cannot unmount {shown}: another mount covers it ({})",
                top.map_or("none".into(), |m| m.fstype)
            ));
        }
        match nix::mount::umount2(&self.dir, MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => Ok(()),
            Err(Errno::EBUSY) => {
                info!("{shown} is busy: detaching it; it goes when its files are closed");
                nix::mount::umount2(&self.dir, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
                    .map_err(|e| format!("cannot unmount {shown}: {e}"))
            }
            Err(e) => Err(format!("cannot unmount {shown}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(list: &str) -> Options {
        let mut o = Options::defaults(true);
        o.apply(list).unwrap();
        o
    }

    #[test]
    fn nosuid_and_nodev_unless_asked_and_the_later_flag_wins() {
        let (f, data) = mount_args(&Options::defaults(true), 7, 0o40755, (0, 0));
        assert_eq!(f, MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
        assert_eq!(
            data,
            "fd=7,rootmode=40755,user_id=0,group_id=0,default_permissions,allow_other"
        );
        let (f, _) = mount_args(&with("suid,dev,ro,noexec,exec"), 7, 0o40755, (0, 0));
        assert_eq!(f, MsFlags::MS_RDONLY);
        let (f, _) = mount_args(
            &with("ro,rw,noatime,sync,async,dirsync"),
            7,
            0o40755,
            (0, 0),
        );
        assert_eq!(
            f,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME | MsFlags::MS_DIRSYNC
        );
    }

    #[test]
    fn a_user_mount_leaves_permissions_to_the_owner() {
        let (_, data) = mount_args(&Options::defaults(false), 9, 0o40700, (1000, 100));
        assert_eq!(data, "fd=9,rootmode=40700,user_id=1000,group_id=100");
    }
}
