//! The system calls that `nix` does not wrap (the new mount API, `statx`,
//! `pidfd_open`: through `rustix`, here and nowhere else in the server),
//! and taking over a descriptor named on the command line.
//!
//! # Safety
//!
//! [`fuse_device`] takes ownership of a descriptor number that the process
//! inherited, after checking through `/proc/self/fd` that it is open and is
//! `/dev/fuse`. [`presize_fd_table`] closes only the descriptor that
//! `F_DUPFD` just made.
#![allow(unsafe_code)]

use std::io::ErrorKind;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::errno::Errno;
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags,
    MountAttrFlags,
};

fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

/// Creates a detached mount of a new file system instance (`fsopen`,
/// `fsconfig`, `fsmount`): never visible in any mount namespace, gone when
/// the returned descriptor and every file opened under it are closed.
pub fn detached_mount(fstype: &str, options: &[(&str, &str)]) -> Result<OwnedFd, Errno> {
    let fs = fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC).map_err(errno)?;
    for (key, value) in options {
        fsconfig_set_string(&fs, *key, *value).map_err(errno)?;
    }
    fsconfig_create(&fs).map_err(errno)?;
    fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty()).map_err(errno)
}

/// A pidfd of process `pid` (`pidfd_open`): it polls readable once the
/// process has exited, and names that process only, even after its pid
/// is reused.
pub fn pidfd_open(pid: u32) -> Result<OwnedFd, Errno> {
    use rustix::process::{pidfd_open, Pid, PidfdFlags};
    let pid = Pid::from_raw(pid as i32).ok_or(Errno::ESRCH)?;
    pidfd_open(pid, PidfdFlags::empty()).map_err(errno)
}

/// Whether `path` is a directory, asked of its file system now (`statx`
/// with `AT_STATX_FORCE_SYNC`): a dead FUSE mount answers from the
/// attributes the kernel caches until it is asked, then `ENOTCONN`.
pub fn is_dir_now(path: &Path) -> Result<bool, Errno> {
    use rustix::fs::{statx, AtFlags, FileType, StatxFlags, CWD};
    let st = statx(CWD, path, AtFlags::STATX_FORCE_SYNC, StatxFlags::TYPE).map_err(errno)?;
    Ok(FileType::from_raw_mode(st.stx_mode.into()) == FileType::Directory)
}

/// The `/dev/fuse` descriptor `fd`, which this process inherited from a
/// privileged helper that mounted it (`/dev/fd/N` on the command line, as
/// libfuse accepts); from here on the caller owns it.
pub fn fuse_device(fd: RawFd) -> Result<OwnedFd, String> {
    let link = format!("/proc/self/fd/{fd}");
    let meta = std::fs::metadata(&link).map_err(|e| format!("/dev/fd/{fd}: {e}"))?;
    let fuse_dev = libc::makedev(10, 229);
    if !meta.file_type().is_char_device() || meta.rdev() != fuse_dev {
        return Err(format!("/dev/fd/{fd}: not a /dev/fuse descriptor"));
    }
    // SAFETY: the descriptor is open (its /proc link resolved) and was
    // handed to this process to serve; nothing else in it owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes directory `dir` with `mode` if needed and checks that it is a
/// directory owned by this process's user that nobody else can write to
/// (so nobody else can plant or replace entries in it), and gives it
/// `mode` if it has other bits.
pub fn private_dir(dir: &Path, mode: u32) -> Result<(), String> {
    let shown = dir.display();
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {shown}: {e}")),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{shown}: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{shown} is not a directory owned by uid {me} and writable only by it"
        ));
    }
    if meta.mode() & 0o7777 != mode {
        // Made by an older server with other bits.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{shown}: {e}"))?;
    }
    Ok(())
}

/// CPUs the kernel counts (`num_possible_cpus()`: one FUSE io_uring queue
/// each), from `/sys/devices/system/cpu/possible` (`0-3,8-11`).
pub fn possible_cpus() -> std::io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(&text)
        .ok_or_else(|| std::io::Error::other(format!("cannot parse CPU list {text:?}")))
}

/// The highest CPU in a kernel CPU list, plus one (the io_uring queues are
/// indexed by CPU number).
fn parse_cpu_list(text: &str) -> Option<usize> {
    let mut top = None;
    for part in text.trim().split(',') {
        let n: usize = part.rsplit('-').next()?.parse().ok()?;
        top = top.max(Some(n + 1));
    }
    top
}

/// Grows this process's descriptor table to hold `n` descriptors now,
/// before any thread shares it. Growing a table that threads share waits
/// for an RCU grace period each time it doubles (`expand_fdtable`), and
/// under load a grace period took seconds: a restart adopting 1000
/// regions (a descriptor each) stalled there past the test's 10 s.
pub fn presize_fd_table(n: u64) {
    let Some(top) = n.checked_sub(1).and_then(|t| RawFd::try_from(t).ok()) else {
        return;
    };
    let Ok(null) = std::fs::File::open("/dev/null") else {
        return;
    };
    // F_DUPFD takes the lowest free number at or above `top`: it never
    // touches a descriptor in use.
    match nix::fcntl::fcntl(&null, nix::fcntl::FcntlArg::F_DUPFD(top)) {
        // SAFETY: `fd` was just made by F_DUPFD and nothing else owns it.
        Ok(fd) => drop(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(e) => log::debug!("cannot grow the descriptor table to {n}: {e}"),
    }
}

#[cfg(test)]
mod cpu_tests {
    use super::parse_cpu_list;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(12));
        assert_eq!(parse_cpu_list("x"), None);
    }
}
